//! The proxy as a process of its own: `serve` starts it, killing `serve`
//! (even with SIGKILL) under load drops no request, and a proxy that
//! restarts with nobody to tell it anything serves its routes and
//! certificates from disk. Also the HTTPS redirect, a TLS scan, and a 1 GB
//! upload that the proxy process streams without holding it.

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
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = crate::support::self_signed_cert(dir.path(), &domain);
    let out = server.cli(&["certs:add", &app, path_str(&cert), path_str(&key)]);
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
    // The certificate the user brought, read back from disk.
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert", path_str(&cert)])
        .arg("--resolve")
        .arg(format!("{domain}:{}:127.0.0.1", server.https_port))
        .arg(format!("https://{domain}:{}/", server.https_port))
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

/// A backend that reads a request body of `Content-Length` bytes, counting
/// them without keeping them, and answers with the count.
fn counting_backend() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0u64;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut seen = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            while seen < length {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n as u64,
                }
            }
            let body = seen.to_string();
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn vm_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_one_gigabyte_upload_streams_through_the_proxy_process_in_flat_memory() {
    use std::io::{Read, Write};
    let backend = counting_backend();
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join("proxy")).expect("mkdir");
    std::fs::write(
        home.path().join("proxy/state.json"),
        format!(
            r#"{{"routes":[{{"host":"upload.test","name":"upload","backends":["{backend}"]}}],"aliases":{{}}}}"#
        ),
    )
    .expect("state");
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    };
    let (http, https) = (port(0), port(1));
    let mut proxy = Command::new(crate::support::BIN)
        .arg("--home")
        .arg(home.path())
        .arg("proxy")
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--https-listen")
        .arg(format!("127.0.0.1:{https}"))
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry proxy");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    const SIZE: u64 = 1 << 30;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).expect("connect");
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: upload.test\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let chunk = vec![b'x'; 1 << 16];
    for _ in 0..SIZE / chunk.len() as u64 {
        stream.write_all(&chunk).expect("body");
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&SIZE.to_string()), "{response}");
    // The peak resident memory of the proxy process stayed far below the body.
    let peak_mb = vm_kb(proxy.id(), "VmHWM:") / 1024;
    assert!(peak_mb < 64, "the proxy's peak RSS was {peak_mb} MB");
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// One sample of `/metrics` (the dashboard host, with the token): the
/// value of the series `name`, 0 if absent.
fn sample(server: &Server, name: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Host: gantry.localhost",
            "-H",
            "Authorization: Bearer scrape",
        ])
        .arg(format!("http://127.0.0.1:{}/metrics", server.http_port))
        .output()
        .expect("curl");
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// curl's GET / of `host` through the server's proxy with an `X-Pad`
/// header of `pad`, the body dropped, with `args` (the protocol, `-w`).
fn padded_get(server: &Server, host: &str, pad: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H"])
        .arg(format!("X-Pad: {pad}"))
        .args(args)
        .arg(format!("http://{host}:{}/", server.http_port))
        .args([
            "--resolve",
            &format!("{host}:{}:127.0.0.1", server.http_port),
        ])
        .output()
        .expect("curl")
}

#[test]
fn the_proxy_counts_each_apps_requests_by_status_and_time_for_prometheus() {
    let server = Server::start_configured(None, "metrics_token = \"scrape\"\n");
    let app = crate::support::unique("traffic");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let ok = format!("gantry_http_requests_total{{app=\"{app}\",code=\"2xx\"}}");
    let missing = format!("gantry_http_requests_total{{app=\"{app}\",code=\"4xx\"}}");
    let count = format!("gantry_http_request_duration_seconds_count{{app=\"{app}\"}}");
    let inf = format!("gantry_http_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}}");
    let fast = format!("gantry_http_request_duration_seconds_bucket{{app=\"{app}\",le=\"10\"}}");
    let before = (
        sample(&server, &ok),
        sample(&server, &missing),
        sample(&server, &count),
    );
    let host = format!("{app}.localhost");
    for _ in 0..5 {
        assert_eq!(
            crate::support::http_get(server.http_port, &host, "/").0,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            crate::support::http_get(server.http_port, &host, "/nope.html").0,
            404
        );
    }
    assert_eq!(sample(&server, &ok) - before.0, 5.0);
    assert_eq!(sample(&server, &missing) - before.1, 2.0);
    assert_eq!(sample(&server, &count) - before.2, 7.0);
    // Buckets are cumulative: every one of them took under 10 s.
    assert_eq!(sample(&server, &inf), sample(&server, &count));
    assert_eq!(sample(&server, &fast), sample(&server, &count));
    assert!(
        sample(
            &server,
            &format!("gantry_http_request_duration_seconds_sum{{app=\"{app}\"}}")
        ) > 0.0
    );

    // Bytes, both ways. HTTP/1.1 (gantry's own path) counts exactly what
    // the connection carried: what curl says it sent and received.
    let received = format!("gantry_http_received_bytes_total{{app=\"{app}\"}}");
    let sent = format!("gantry_http_sent_bytes_total{{app=\"{app}\"}}");
    let before = (sample(&server, &received), sample(&server, &sent));
    let pad = "x".repeat(10_000);
    let (mut up, mut down) = (0.0, 0.0);
    for _ in 0..3 {
        let out = padded_get(
            &server,
            &host,
            &pad,
            &[
                "--http1.1",
                "-w",
                "%{http_code} %{size_request} %{size_header} %{size_download}",
            ],
        );
        let said: Vec<f64> = stdout(&out)
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(said.len(), 4, "{}", stdout(&out));
        assert_eq!(said[0], 200.0);
        up += said[1];
        down += said[2] + said[3];
    }
    assert!(up > 30_000.0, "{up}");
    assert_eq!(sample(&server, &received) - before.0, up);
    assert_eq!(sample(&server, &sent) - before.1, down);
    // HTTP/2 (hyper's path) counts heads as HTTP/1.1 would carry them.
    let before = (sample(&server, &received), sample(&server, &sent));
    let out = padded_get(
        &server,
        &host,
        &pad,
        &[
            "--http2-prior-knowledge",
            "-w",
            "%{http_version} %{size_download}",
        ],
    );
    let said = stdout(&out);
    assert!(said.starts_with("2 "), "not HTTP/2: {said}");
    let body: f64 = said[2..].trim().parse().expect("size");
    let up = sample(&server, &received) - before.0;
    let down = sample(&server, &sent) - before.1;
    assert!((10_000.0..11_000.0).contains(&up), "{up}");
    assert!(
        down > body && down < body + 1_000.0,
        "{down} for a body of {body}"
    );
}
