//! `run` (one-off processes over SSH and on the host) and `logs` (history and
//! following across restarts).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{containers_of, http_get, stderr, stdout, Repo, Server};

fn deployed(server: &Server, prefix: &str) -> String {
    let app = crate::support::unique(prefix);
    let repo = Repo::from_example(server, "config-echo");
    let out = repo.push(server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server
        .cli(&["config:set", &app, "GREETING=from-config"])
        .status
        .success());
    app
}

#[test]
fn run_streams_stdio_and_returns_the_exit_code() {
    let server = Server::start();
    let app = deployed(&server, "runner");

    let out = server.ssh(
        &server.admin,
        &format!("run {app} -- sh -c 'echo \"G=$GREETING\"; echo oops >&2; exit 3'"),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "G=from-config\n");
    assert_eq!(stderr(&out), "oops\n");

    // Standard input reaches the process.
    let line = format!(
        "echo hello-stdin | {} git@127.0.0.1 run {app} -- cat",
        server.ssh_base(&server.admin)
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .output()
        .expect("ssh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello-stdin\n");

    // ssh -t gives the process a terminal.
    let line = format!(
        "{} -tt git@127.0.0.1 run {app} -- tty",
        server.ssh_base(&server.admin)
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(
        stdout(&out).contains("/dev/pts/"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );

    // On the host too, and one-off containers are removed afterwards.
    let out = server.cli(&["run", &app, "--", "sh", "-c", "echo local $GREETING"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "local from-config\n");
    assert_eq!(
        containers_of(&app).len(),
        1,
        "only the web container remains"
    );
    let oneoffs = crate::support::oneoff_containers_of(&app);
    assert!(oneoffs.is_empty(), "one-off containers left: {oneoffs:?}");

    let out = server.ssh(&server.admin, "run nope -- true");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no live release"), "{}", stderr(&out));
}

#[test]
fn logs_show_history_and_follow_across_restarts() {
    let server = Server::start();
    let app = deployed(&server, "logged");
    let host = format!("{app}.localhost");
    assert_eq!(
        http_get(server.http_port, &host, "/cgi-bin/whoami?first-call").0,
        200
    );

    let out = server.ssh(&server.admin, &format!("logs {app} -n 50"));
    assert!(out.status.success(), "{}", stderr(&out));
    let history = stdout(&out);
    assert!(history.contains(&format!("{app}[web.1]:")), "{history}");
    assert!(
        history.contains("whoami called: first-call"),
        "the app's stderr is missing:\n{history}"
    );

    // Follow, make the container crash and come back, and keep seeing output.
    let line = format!(
        "{} git@127.0.0.1 logs {app} -f -n 0",
        server.ssh_base(&server.admin)
    );
    let mut follower = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh logs -f");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        http_get(server.http_port, &host, "/cgi-bin/whoami?before-restart").0,
        200
    );
    let container = containers_of(&app).pop().expect("container");
    assert!(Command::new("docker")
        .args(["exec", &container, "kill", "1"])
        .status()
        .expect("kill")
        .success());
    server.wait_for_body(&app, "config-echo", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    // The follower rescans every second; give it a few calls after the restart.
    for _ in 0..6 {
        http_get(server.http_port, &host, "/cgi-bin/whoami?after-restart");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = follower.kill();
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut followed)
        .expect("read");
    let _ = follower.wait();
    assert!(followed.contains("before-restart"), "{followed}");
    assert!(
        followed.contains("after-restart"),
        "lost the log after the restart:\n{followed}"
    );
}
