//! Certificates from a real ACME server: Debian's Pebble, with
//! pebble-challtestsrv answering its DNS queries with 127.0.0.1, validating
//! HTTP-01 against gantry's own proxy. One certificate issued and served over
//! HTTPS (curl trusting Pebble's root), a refused one as a failed run of
//! the `gantry.certs` job with the CA's error, TLS-ALPN-01, renewal of a
//! short-lived certificate at two thirds of its life, and a certificate the
//! user brought left alone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{path_str, stderr, stdout, Repo, Server};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn runs(server: &Server) -> Vec<String> {
    let out = server.cli(&["jobs:runs", "gantry.certs"]);
    stdout(&out).lines().skip(1).map(str::to_owned).collect()
}

fn wait_run(server: &Server, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if let Some(line) = runs(server).into_iter().find(|l| pred(l)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no such gantry.certs run: {:?}",
            runs(server)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn certificates_come_from_an_acme_server_over_http_01_and_tls_alpn_01() {
    let mut server = Server::start();
    let app = crate::support::unique("acme");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = server.get(&app).1;

    let pebble = Pebble::start(
        server.http_port,
        server.https_port,
        "127.0.0.1",
        VALIDITY_SECS,
    );
    let (dir, ca, acme_port) = (&pebble.dir, &pebble.ca, pebble.acme_port);

    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str(&format!(
        "\n[acme]\nemail = \"ops@example.test\"\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\nca_root = \"{}\"\n",
        path_str(ca)
    ));
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();

    // Adding a domain orders its certificate; the run says so.
    let domain = format!("{app}.example.test");
    let out = server.cli(&["domains:add", &app, &domain]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, |l| {
        l.starts_with("#1 ") && !l.contains("queued") && !l.contains("running")
    });
    assert!(
        line.contains("succeeded"),
        "{line}\n{}",
        stdout(&server.cli(&["jobs:log", "gantry.certs", "1"]))
    );
    let first_issued = Instant::now();
    let first_serial = serial(&server, &domain);

    // Served over HTTPS, verified against Pebble's root.
    let root = pebble.root();
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert"])
        .arg(&root)
        .args([
            "--resolve",
            &format!("{domain}:{}:127.0.0.1", server.https_port),
        ])
        .arg(format!("https://{domain}:{}/", server.https_port))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), body);
    let shown = stdout(&server.cli(&["certs", &app]));
    assert!(
        shown.contains(&format!("{domain}: issuer CN=Pebble Intermediate")),
        "{shown}"
    );

    // A name the CA refuses: the run fails with the CA's error.
    let out = server.cli(&["domains:add", &app, "blocked.example.test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, |l| {
        l.starts_with("#2 ") && !l.contains("queued") && !l.contains("running")
    });
    assert!(
        line.contains("failed") && line.contains("blocked.example.test"),
        "{line}"
    );
    assert!(
        line.contains("rejectedIdentifier") || line.contains("blocked"),
        "{line}"
    );
    let shown = stdout(&server.cli(&["certs", &app]));
    assert!(
        shown.contains("blocked.example.test: no certificate")
            && shown.contains("failed (1 in a row; next try after"),
        "{shown}"
    );

    // TLS-ALPN-01: the proxy answers the CA's acme-tls/1 handshake itself.
    // The blocked host waits out its backoff instead of asking the CA again.
    server.stop();
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str("challenge = \"tls-alpn-01\"\n");
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();
    let alpn = format!("alpn-{app}.example.test");
    let out = server.cli(&["domains:add", &app, &alpn]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, |l| {
        l.starts_with("#3 ") && !l.contains("queued") && !l.contains("running")
    });
    let log = stdout(&server.cli(&["jobs:log", "gantry.certs", "3"]));
    assert!(line.contains("succeeded"), "{line}\n{log}");
    assert!(
        log.contains(&format!("{alpn}: ordering")) && log.contains("TLS-ALPN-01"),
        "{log}"
    );
    assert!(log.contains("blocked.example.test: backing off"), "{log}");
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert"])
        .arg(&root)
        .args([
            "--resolve",
            &format!("{alpn}:{}:127.0.0.1", server.https_port),
        ])
        .arg(format!("https://{alpn}:{}/", server.https_port))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), body);

    // A certificate the user brings is theirs: ACME never replaces it.
    let mine = format!("mine-{app}.example.test");
    let out = server.cli(&["domains:add", &app, &mine]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, |l| {
        l.starts_with("#4 ") && !l.contains("queued") && !l.contains("running")
    });
    let (own_cert, own_key) = crate::support::self_signed_cert(dir.path(), &mine);
    let out = server.cli(&["certs:add", &app, path_str(&own_cert), path_str(&own_key)]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Past two thirds of its lifetime, the first certificate is renewed.
    let due = Duration::from_secs(VALIDITY_SECS * 2 / 3 + 2);
    std::thread::sleep(due.saturating_sub(first_issued.elapsed()));
    let out = server.cli(&["jobs:run", "gantry.certs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, |l| {
        l.starts_with("#5 ") && !l.contains("queued") && !l.contains("running")
    });
    let log = stdout(&server.cli(&["jobs:log", "gantry.certs", "5"]));
    assert!(line.contains("succeeded"), "{line}\n{log}");
    assert!(log.contains(&format!("{domain}: ordering")), "{log}");
    assert!(!log.contains(&format!("{mine}: ordering")), "{log}");
    assert_ne!(serial(&server, &domain), first_serial, "not renewed");
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert", path_str(&own_cert)])
        .args([
            "--resolve",
            &format!("{mine}:{}:127.0.0.1", server.https_port),
        ])
        .arg(format!("https://{mine}:{}/", server.https_port))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "still the user's certificate: {}",
        stderr(&out)
    );
}

/// Debian's Pebble and pebble-challtestsrv, running until dropped: its DNS
/// answers every name with `default_ipv4`, and it validates HTTP-01 on
/// `http_port` and TLS-ALPN-01 on `tls_port` there.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// The CA that signed Pebble's own HTTPS certificate (`[acme] ca_root`).
    pub ca: std::path::PathBuf,
    pub acme_port: u16,
    /// Pebble's management API (its roots).
    pub mgmt: u16,
    _dns: Kill,
    _pebble: Kill,
}

impl Pebble {
    pub fn start(http_port: u16, tls_port: u16, default_ipv4: &str, validity_secs: u64) -> Pebble {
        if Command::new("pebble").arg("-h").output().is_err() {
            panic!("pebble is not installed (apt-get install pebble)");
        }
        // Pebble's own HTTPS certificate, made here (Debian ships none): a CA
        // and a server certificate it signs, which gantry's ACME client trusts.
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let (cert, key) = (dir.path().join("pebble.pem"), dir.path().join("pebble.key"));
        let csr = dir.path().join("pebble.csr");
        let ext = dir.path().join("ext.cnf");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let steps: Vec<Vec<std::ffi::OsString>> = vec![
            ["req", "-x509"]
                .iter()
                .map(Into::into)
                .chain(ec.iter().map(Into::into))
                .chain(
                    ["-days", "2", "-subj", "/CN=gantry test ACME CA", "-keyout"]
                        .iter()
                        .map(Into::into),
                )
                .chain([
                    ca_key.clone().into_os_string(),
                    "-out".into(),
                    ca.clone().into_os_string(),
                ])
                .collect(),
            ["req"]
                .iter()
                .map(Into::into)
                .chain(ec.iter().map(Into::into))
                .chain(["-subj", "/CN=localhost", "-keyout"].iter().map(Into::into))
                .chain([
                    key.clone().into_os_string(),
                    "-out".into(),
                    csr.clone().into_os_string(),
                ])
                .collect(),
            ["x509", "-req", "-days", "2", "-in"]
                .iter()
                .map(Into::into)
                .chain([
                    csr.clone().into_os_string(),
                    "-CA".into(),
                    ca.clone().into_os_string(),
                    "-CAkey".into(),
                    ca_key.clone().into_os_string(),
                ])
                .chain([
                    "-CAcreateserial".into(),
                    "-extfile".into(),
                    ext.clone().into_os_string(),
                    "-out".into(),
                    cert.clone().into_os_string(),
                ])
                .collect(),
        ];
        for args in steps {
            let made = Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl");
            assert!(made.status.success(), "openssl {args:?}: {}", stderr(&made));
        }
        let (dns, acme_port, mgmt, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let dns_server = Kill(
            Command::new("pebble-challtestsrv")
                .args([
                    "-dns01",
                    &format!("127.0.0.1:{dns}"),
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ])
                .args([
                    "-management",
                    &format!("127.0.0.1:{chall_mgmt}"),
                    "-defaultIPv4",
                    default_ipv4,
                    "-defaultIPv6",
                    "",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv"),
        );
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt}"),
                "certificate": path_str(&cert),
                "privateKey": path_str(&key),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "domainBlocklist": ["blocked.example.test"],
                // Short-lived certificates, so the test sees a renewal.
                "certificateValidityPeriod": validity_secs,
            }})
            .to_string(),
        )
        .expect("write pebble config");
        let pebble = Kill(
            Command::new("pebble")
                .arg("-config")
                .arg(&config)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Pebble {
            dir,
            ca,
            acme_port,
            mgmt,
            _dns: dns_server,
            _pebble: pebble,
        }
    }

    /// Pebble's root, which signs what it issues, written to a file.
    pub fn root(&self) -> std::path::PathBuf {
        let root = self.dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-sSk", "-o"])
            .arg(&root)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", stderr(&out));
        root
    }
}

/// Pebble's certificates live this long, so that renewal comes during the test.
const VALIDITY_SECS: u64 = 45;

/// The serial number of the certificate gantry keeps for `host`.
fn serial(server: &Server, host: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(server.home.path().join(format!("certs/{host}.pem")))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}
