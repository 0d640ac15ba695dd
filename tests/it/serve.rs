//! `gantry serve` on start: what it prints, first-run key registration, and a
//! plain message when Docker is unreachable.

use std::process::Stdio;

use crate::support::{make_key, stdout, Server, BIN};

#[test]
fn banner_tells_a_newcomer_what_to_do() {
    let server = Server::start();
    let banner = &server.banner;
    for needle in [
        "home:",
        "database:  sqlite://",
        &format!("git (ssh): 127.0.0.1:{}", server.ssh_port),
        &format!(
            "git remote add gantry ssh://git@localhost:{}/APP",
            server.ssh_port
        ),
        &format!("http://APP.localhost:{}", server.http_port),
    ] {
        assert!(
            banner.contains(needle),
            "banner lacks {needle:?}:\n{banner}"
        );
    }
}

#[test]
fn first_serve_registers_the_users_key_as_admin() {
    let home = tempfile::tempdir().expect("tempdir");
    let user_home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(user_home.path().join(".ssh")).expect("mkdir");
    make_key(&user_home.path().join(".ssh"), "id_ed25519");
    let ports: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
        })
        .collect();
    let mut child = std::process::Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args([
            "serve",
            "--ssh-listen",
            &ports[0],
            "--http-listen",
            &ports[1],
            "--https-listen",
            "127.0.0.1:0",
        ])
        .env("HOME", user_home.path())
        .env("GANTRY_DOMAIN", "apps.test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut banner = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout");
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Manage:") {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    crate::support::stop_proxy_in(home.path());
    assert!(banner.contains("registered your key"), "{banner}");
    assert!(
        banner.contains("as http://APP.apps.test:"),
        "GANTRY_DOMAIN ignored:\n{banner}"
    );
    let keys = std::process::Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .arg("keys:list")
        .output()
        .expect("keys:list");
    let keys = stdout(&keys);
    assert!(keys.contains("admin") && keys.contains("SHA256:"), "{keys}");
}

#[test]
fn unreachable_docker_is_explained_not_a_stack_trace() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("HOME", home.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.contains("start it"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_second_serve_on_the_same_home_is_refused() {
    let server = Server::start();
    let out = server
        .command()
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
}
