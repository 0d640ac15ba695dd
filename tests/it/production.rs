//! gantry in production: the proxy's listening sockets outlive it, so a
//! `kill -9` of the proxy refuses no connection, and `gantry upgrade` moves
//! to a new binary without a failed request. Measured with keep-alive
//! clients against a real app behind the real proxy process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{alive, stderr, stdout, unique, Repo, Server};

/// What the clients saw.
#[derive(Debug, Default)]
struct Report {
    answered: usize,
    /// Connections the kernel refused: nobody held the port.
    refused: usize,
    /// Requests that got no complete answer (reset, closed, timed out) or a
    /// 5xx.
    failed: usize,
}

/// Keep-alive HTTP/1.1 clients hammering one host through the proxy.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Report>>,
    answered: Arc<AtomicUsize>,
}

impl Load {
    fn start(port: u16, host: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, answered, host) = (stop.clone(), answered.clone(), host.to_owned());
                std::thread::spawn(move || client(port, &host, &stop, &answered))
            })
            .collect();
        Load {
            stop,
            threads,
            answered,
        }
    }

    /// Waits until `n` more requests were answered (the load is flowing).
    fn wait_for_answers(&self, n: usize) {
        let start = self.answered.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the load got no answers");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for thread in self.threads {
            let report = thread.join().expect("client thread");
            total.answered += report.answered;
            total.refused += report.refused;
            total.failed += report.failed;
        }
        total
    }
}

fn client(port: u16, host: &str, stop: &AtomicBool, answered: &AtomicUsize) -> Report {
    let mut report = Report::default();
    let mut conn: Option<TcpStream> = None;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let stream = match conn.as_mut() {
            Some(stream) => stream,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    conn.insert(stream)
                }
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    report.refused += 1;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(_) => {
                    report.failed += 1;
                    continue;
                }
            },
        };
        match exchange(stream, &request) {
            Ok((status, close)) if status < 500 => {
                report.answered += 1;
                answered.fetch_add(1, Ordering::Relaxed);
                if close {
                    conn = None;
                }
            }
            Ok(_) | Err(_) => {
                report.failed += 1;
                conn = None;
            }
        }
    }
    report
}

/// One request on a keep-alive connection: (status, whether it closes).
fn exchange(stream: &mut TcpStream, request: &str) -> std::io::Result<(u16, bool)> {
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if response.len() >= end + 4 + length {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok((status, head.contains("connection: close")));
        }
    }
}

fn live_app(server: &Server) -> String {
    let app = unique("prod");
    let out = Repo::from_example(server, "hello-docker").push(server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app).0, 200);
    app
}

/// Waits until the proxy answering is not `old` (the supervisor started a new one).
fn wait_for_new_proxy(server: &Server, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = server.proxy_pid().filter(|p| *p != old && alive(*p)) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no new proxy within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_proxy_killed_with_sigkill_refuses_no_connection() {
    let server = Server::start();
    let app = live_app(&server);
    let clients = 8;
    let load = Load::start(server.http_port, &format!("{app}.localhost"), clients);
    load.wait_for_answers(200);
    let old = server.proxy_pid().expect("proxy pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &old.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let new = wait_for_new_proxy(&server, old);
    load.wait_for_answers(200);
    let report = load.finish();
    eprintln!("kill -9 of the proxy (pid {old} -> {new}) under load: {report:?}");
    assert_eq!(report.refused, 0, "{report:?}");
    // Only requests in flight on the killed process fail: at most one per client.
    assert!(report.failed <= clients, "{report:?}");
}

#[test]
fn upgrade_moves_to_a_new_binary_without_a_failed_request() {
    let mut server = Server::start();
    let app = live_app(&server);
    // The new binary, installed beside the running one.
    let dir = tempfile::tempdir().expect("tempdir");
    let new_bin = dir.path().join("gantry");
    std::fs::copy(crate::support::BIN, &new_bin).expect("copy the binary");
    let old_proxy = server.proxy_pid().expect("proxy pid");
    let serve_pid = server.serve_pid();

    let load = Load::start(server.http_port, &format!("{app}.localhost"), 8);
    load.wait_for_answers(200);
    let mut upgrade = std::process::Command::new(&new_bin);
    upgrade
        .arg("--home")
        .arg(server.home.path())
        .arg("upgrade")
        .env("HOME", server.home.path());
    let out = upgrade.output().expect("gantry upgrade");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for needle in [
        &format!("new binary: {}", new_bin.display()),
        &format!("proxy: pid {old_proxy} -> pid"),
        "serve: restarting on the new binary",
        "serve is back, on the new binary",
    ] {
        assert!(text.contains(needle), "upgrade said:\n{text}");
    }
    load.wait_for_answers(200);
    let report = load.finish();
    eprintln!("gantry upgrade under load: {report:?}");
    assert_eq!(report.refused, 0, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    // The proxy and serve run the new binary; serve kept its pid.
    let new_proxy = server.proxy_pid().expect("proxy pid");
    assert_ne!(new_proxy, old_proxy);
    assert!(!alive(old_proxy), "the old proxy exited");
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    assert_eq!(exe(new_proxy), new_bin);
    assert_eq!(server.serve_pid(), serve_pid);
    assert_eq!(exe(serve_pid), new_bin);
    // The restarted serve looks after the proxy its predecessor started: one
    // killed is replaced, and reaped rather than left a zombie.
    let killed = std::process::Command::new("kill")
        .args(["-9", &new_proxy.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for_new_proxy(&server, new_proxy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{new_proxy}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the killed proxy stays a zombie: {} (serve is {})\n{}",
            std::fs::read_to_string(format!("/proc/{new_proxy}/stat")).unwrap_or_default(),
            server.serve_pid(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And it works as before: a push deploys, the app answers.
    let repo = Repo::from_example(&server, "hello-docker");
    let other = unique("after-upgrade");
    let out = repo.push(&server, &server.admin, &other);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&other).0, 200);
    assert_eq!(server.get(&app).0, 200);
    server.stop();
}

#[test]
fn install_writes_units_systemd_accepts_and_serve_runs_beside_a_socket_activated_proxy() {
    // The units gantry install writes, checked by systemd itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let units = dir.path().join("units");
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--home")
        .arg(dir.path().join("home"))
        .args(["install", "--units-only", "--domain", "apps.example.test"])
        .arg("--unit-dir")
        .arg(&units)
        .arg("--bin")
        .arg(crate::support::BIN)
        .output()
        .expect("gantry install");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(&units)
        .expect("units")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "gantry-proxy-http.socket",
            "gantry-proxy-https.socket",
            "gantry-proxy.service",
            "gantry.service"
        ]
    );
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(&units)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&verify),
        stderr(&verify)
    );
    // A unit with a mistake is caught by the same check.
    std::fs::write(
        units.join("gantry.service"),
        std::fs::read_to_string(units.join("gantry.service"))
            .expect("read")
            .replace("Restart=on-failure", "Restart=sometimes"),
    )
    .expect("write");
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no", "gantry.service"])
        .current_dir(&units)
        .output()
        .expect("systemd-analyze");
    assert!(!verify.stderr.is_empty(), "a bad Restart= went unnoticed");

    // What the units run: the proxy on sockets it was passed (as systemd's
    // socket units pass them), and serve --proxy-service beside it.
    let server = Server::start_configured(None, "# proxy service\n");
    let app = live_app(&server);
    assert_eq!(server.get(&app).0, 200);
    let proxy_log =
        std::fs::read_to_string(server.home.path().join("proxy.log")).expect("proxy.log");
    assert!(
        proxy_log.contains("gantry proxy is serving") && proxy_log.contains("sockets=\"passed\""),
        "{proxy_log}"
    );
}

#[test]
fn node_join_writes_a_unit_systemd_accepts_that_runs_the_same_join_in_the_foreground() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let units = dir.path().join("units");
    let home = dir.path().join("home");
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--home")
        .arg(&home)
        .args([
            "node:join",
            "--token",
            "SWMTKN-1-abc",
            "--manager",
            "10.0.0.1:2377",
            "--registry",
            "http://10.0.0.1:5000",
            "--database-url",
            "postgres://gantry:s3cret@10.0.0.1/gantry",
            "--advertise-addr",
            "10.0.0.7",
            "--units-only",
        ])
        .arg("--unit-dir")
        .arg(&units)
        .output()
        .expect("gantry node:join");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing enabled or started"),
        "{}",
        stdout(&out)
    );
    let path = units.join("gantry-node.service");
    let text = std::fs::read_to_string(&path).expect("the unit");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    for part in [
        "node:join --foreground --token SWMTKN-1-abc --manager 10.0.0.1:2377",
        "--registry http://10.0.0.1:5000 --mirror-listen 127.0.0.1:5001 --push-relay 127.0.0.1:5002",
        "--database-url postgres://gantry:s3cret@10.0.0.1/gantry",
        "--http-listen 0.0.0.0:80 --https-listen 0.0.0.0:443 --stale-after 30",
        "--advertise-addr 10.0.0.7",
    ] {
        assert!(exec.contains(part), "{part:?} not in {exec}");
    }
    assert!(
        exec.contains(&format!("--home {}", home.display())),
        "{exec}"
    );
    assert!(text.contains("Restart=always"), "{text}");
    // It holds the join token and the database password: root's alone.
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no", "gantry-node.service"])
        .current_dir(&units)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&verify),
        stderr(&verify)
    );
}
