//! HTTPS through the proxy with real clients: the self-signed development
//! certificate for *.localhost, custom domains, a certificate the user brings
//! (made with openssl), TLS versions and HTTP/2 by ALPN.

use std::process::Command;

use crate::support::{path_str, stderr, stdout, Repo, Server};

/// `curl` with `args`, returning (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10"])
        .args(args)
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn https_serves_apps_with_development_and_own_certificates() {
    let server = Server::start();
    let app = crate::support::unique("tls");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, body) = server.get(&app);
    let port = server.https_port.to_string();

    // *.localhost is served with a certificate from gantry's development CA,
    // which curl verifies when told to trust that CA.
    let local_ca = server.home.path().join("certs/_localhost-ca.pem");
    let url = format!("https://{app}.localhost:{port}/");
    let (code, text, err) = curl(&["--cacert", path_str(&local_ca), &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, body);
    let (code, _, _) = curl(&[&url]);
    assert_ne!(
        code, 0,
        "an unknown self-signed certificate must not verify"
    );
    // HTTP/2 by ALPN; nothing older than TLS 1.2.
    let (code, version, err) = curl(&[
        "--cacert",
        path_str(&local_ca),
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ]);
    assert_eq!((code, version.as_str()), (0, "2"), "{err}");
    let (code, _, _) = curl(&["-k", "--tlsv1.1", "--tls-max", "1.1", &url]);
    assert_ne!(code, 0, "TLS 1.1 was accepted");
    let (code, _, err) = curl(&["-k", "--tlsv1.2", "--tls-max", "1.2", &url]);
    assert_eq!(code, 0, "TLS 1.2: {err}");

    // A custom domain routes to the app over HTTP...
    let domain = format!("{app}.example.test");
    let out = server.cli(&["domains:add", &app, &domain]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, text) = crate::support::http_get(server.http_port, &domain, "/");
    assert_eq!((status, text), (200, body.clone()));
    let listed = stdout(&server.cli(&["domains", &app]));
    assert!(listed.contains(&domain), "{listed}");
    // ...and over HTTPS with a certificate the user brings.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = crate::support::self_signed_cert(dir.path(), &domain);
    let out = server.cli(&["certs:add", &app, path_str(&cert), path_str(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("installed for {domain}")),
        "{}",
        stdout(&out)
    );
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let (code, text, err) = curl(&[
        "--cacert",
        path_str(&cert),
        "--resolve",
        &resolve,
        &format!("https://{domain}:{port}/"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, body);
    let shown = stdout(&server.cli(&["certs", &app]));
    assert!(
        shown.contains(&format!(
            "{domain}: issuer CN={domain}; names {domain}; expires"
        )),
        "{shown}"
    );
    assert!(
        shown.contains("signed by the local development CA"),
        "{shown}"
    );

    // The certificate comes back after a restart, from disk.
    let mut server = server;
    server.stop();
    server.launch();
    // Routes come back in the background after a start.
    server.wait_for_body(&app, body.trim_end(), std::time::Duration::from_secs(30));
    let (code, text, err) = curl(&[
        "--cacert",
        path_str(&cert),
        "--resolve",
        &resolve,
        &format!("https://{domain}:{port}/"),
    ]);
    assert_eq!((code, text), (0, body), "{err}");

    // Bad input is refused clearly.
    let other = crate::support::unique("other");
    assert!(server.cli(&["apps:create", &other]).status.success());
    let out = server.cli(&["domains:add", &other, &domain]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{domain} already belongs to app {app}")),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["domains:add", &other, "not a domain"]);
    assert!(
        stderr(&out).contains("is not a domain name"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["certs:add", &other, path_str(&cert), path_str(&key)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("add the domain first"),
        "{}",
        stderr(&out)
    );
    let (_, wrong_key) = (0, dir.path().join("other.key"));
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&wrong_key)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let out = server.cli(&["certs:add", &app, path_str(&cert), path_str(&wrong_key)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not belong to the certificate"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["domains:remove", &app, &domain]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = crate::support::http_get(server.http_port, &domain, "/");
    assert_eq!(status, 404);
}
