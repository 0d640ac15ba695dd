//! The proxy as a process of its own: `serve` starts it, killing `serve`
//! (even with SIGKILL) under load drops no request, and a proxy that
//! restarts with nobody to tell it anything serves its routes and
//! certificates from disk. Also the HTTPS redirect and a TLS scan.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    alive, http_get, http_get_with_headers, path_str, stderr, stdout, Repo, Server,
};

#[test]
fn killing_serve_under_load_drops_no_request() {
    let mut server = Server::start();
    let app = crate::support::unique("load");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = server.get(&app).1;
    let proxy = server.proxy_pid().expect("serve started a proxy");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let (port, host, body) = (server.http_port, format!("{app}.localhost"), body.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, text) = http_get(port, &host, "/");
                    if status == 200 && text == body {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{status} {text}"));
                    }
                }
                failures
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let during = ok.load(Ordering::Relaxed);
    server.launch();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > during && during > 0,
        "requests went on while serve was dead and after it came back"
    );
    assert_eq!(
        server.proxy_pid(),
        Some(proxy),
        "the new serve uses the proxy that kept running"
    );
    assert!(
        server.banner.contains(&format!("proxy:     pid {proxy}")),
        "{}",
        server.banner
    );
}

#[test]
fn a_restarted_proxy_serves_its_routes_and_certificates_from_disk() {
    let mut server = Server::start();
    let app = crate::support::unique("disk");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = server.get(&app).1;
    let domain = format!("{app}.example.test");
    let out = server.cli(&["domains:add", &app, &domain]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Nobody is left to tell the proxy anything: serve and proxy both die.
    server.kill9();
    let proxy = server.proxy_pid().expect("proxy pid");
    let _ = Command::new("kill")
        .args(["-9", &proxy.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(proxy) {
        assert!(Instant::now() < deadline, "the proxy did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alone = server
        .command()
        .arg("proxy")
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", server.http_port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry proxy");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(server.http_port, &format!("{app}.localhost"), "/").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the proxy did not come back with its routes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.get(&app).1, body);
    assert_eq!(
        http_get(server.http_port, &domain, "/").1,
        body,
        "aliases too"
    );
    let local_ca = server.home.path().join("certs/_localhost-ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert", path_str(&local_ca)])
        .arg(format!("https://{app}.localhost:{}/", server.https_port))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), body);

    // serve comes back and takes the proxy that is running.
    server.launch();
    let pid = alone.id();
    assert_eq!(server.proxy_pid(), Some(pid));
    server.wait_for_body(&app, body.trim_end(), Duration::from_secs(30));
    server.stop();
    server.stop_proxy();
    let _ = alone.wait();
}

#[test]
fn http_redirects_to_https_once_a_host_has_a_certificate() {
    let server = Server::start();
    let app = crate::support::unique("redir");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let domain = format!("{app}.example.test");
    assert!(server.cli(&["domains:add", &app, &domain]).status.success());
    let out = server.cli(&["certs:redirect", &app, "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // No certificate of its own yet: HTTP keeps serving.
    assert_eq!(http_get(server.http_port, &domain, "/").0, 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = crate::support::self_signed_cert(dir.path(), &domain);
    let out = server.cli(&["certs:add", &app, path_str(&cert), path_str(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, headers, _) = http_get_with_headers(server.http_port, &domain, "/a?b=1");
    assert_eq!(status, 308);
    assert_eq!(
        headers.get("location").map(String::as_str),
        Some(format!("https://{domain}:{}/a?b=1", server.https_port).as_str())
    );
    // The development certificate of APP.localhost is no reason to redirect.
    assert_eq!(server.get(&app).0, 200);
    let shown = stdout(&server.cli(&["certs", &app]));
    assert!(shown.contains("HTTP to HTTPS redirect: on"), "{shown}");
    assert!(server
        .cli(&["certs:redirect", &app, "off"])
        .status
        .success());
    assert_eq!(http_get(server.http_port, &domain, "/").0, 200);
    let out = server.cli(&["certs:redirect", &app, "maybe"]);
    assert!(!out.status.success());
}

#[test]
fn a_tls_scan_finds_no_weak_protocol_or_cipher() {
    let server = Server::start();
    let out = Command::new("sslscan")
        .args([
            "--no-colour",
            "--no-fallback",
            "--no-renegotiation",
            "--no-heartbleed",
        ])
        .arg("--sni-name=scan.localhost")
        .arg(format!("127.0.0.1:{}", server.https_port))
        .output()
        .expect("sslscan (apt-get install sslscan)");
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(old))
            .unwrap_or_else(|| panic!("sslscan reported nothing on {old}:\n{report}"));
        assert!(line.contains("disabled"), "{line}\n{report}");
    }
    let accepted: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Preferred") || l.starts_with("Accepted"))
        .collect();
    assert!(!accepted.is_empty(), "{report}");
    for line in accepted {
        assert!(
            line.contains("TLSv1.2") || line.contains("TLSv1.3"),
            "{line}"
        );
        assert!(
            line.contains("GCM") || line.contains("CHACHA20"),
            "not an AEAD cipher: {line}"
        );
    }
}
