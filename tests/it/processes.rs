//! Processes: scaling web replicas behind the proxy, stop/start, restart, and
//! bad input.

use std::collections::HashSet;

use crate::support::{containers_of, http_get, stderr, stdout, Repo, Server};

#[test]
fn scale_spreads_requests_and_stop_start_restart() {
    let server = Server::start();
    let app = crate::support::unique("scaled");
    let repo = Repo::from_example(&server, "config-echo");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.ssh(&server.admin, &format!("ps:scale {app} web=3"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("web=3 (started 2, stopped 0"),
        "{}",
        stdout(&out)
    );
    let ps = stdout(&server.cli(&["ps", &app]));
    for replica in ["web.1", "web.2", "web.3"] {
        assert!(ps.contains(replica), "{replica} missing:\n{ps}");
    }
    let host = format!("{app}.localhost");
    let answered: HashSet<String> = (0..30)
        .map(|_| {
            http_get(server.http_port, &host, "/cgi-bin/whoami")
                .1
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        answered.len(),
        3,
        "requests did not reach all three replicas: {answered:?}"
    );

    // A push keeps the formation.
    repo.write("www/index.html", "scaled second\n");
    repo.commit(&server, "second");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 web replica(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(containers_of(&app).len(), 3);

    let out = server.cli(&["ps:scale", &app, "web=1"]);
    assert!(
        stdout(&out).contains("stopped 2 container(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(containers_of(&app).len(), 1);
    assert_eq!(server.get(&app).1, "scaled second\n");

    // Stop: nothing runs and the proxy says so; start brings it back.
    let out = server.cli(&["ps:stop", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(containers_of(&app).is_empty());
    let (status, body) = server.get(&app);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no running web process"), "{body}");
    let out = server.ssh(&server.admin, &format!("ps:start {app}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app), (200, "scaled second\n".to_string()));

    // Restart: fresh containers of the same release.
    let before = containers_of(&app);
    let out = server.cli(&["ps:restart", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = containers_of(&app);
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "ps:restart kept the old container");
    assert_eq!(server.get(&app).1, "scaled second\n");
}

#[test]
fn bad_process_input_is_refused_clearly() {
    let server = Server::start();
    assert!(server
        .ssh(&server.admin, "apps:create web")
        .status
        .success());
    let cases = [
        ("ps:scale web web=-1", "invalid count \"-1\" for web"),
        ("ps:scale web web=21", "from 0 to 20"),
        ("ps:scale web worker=1", "unknown process type \"worker\""),
        ("ps:scale web web", "is not TYPE=COUNT"),
        ("ps:scale nope web=1", "app nope does not exist"),
        ("ps:restart web worker", "unknown process type \"worker\""),
        ("ps:start web", "no live release yet"),
    ];
    for (command, expected) in cases {
        let out = server.ssh(&server.admin, command);
        assert!(!out.status.success(), "{command} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{command}: {}",
            stderr(&out)
        );
    }
    // Scaling before the first deploy is kept for it.
    let out = server.cli(&["ps:scale", "web", "web=2"]);
    assert!(
        stdout(&out).contains("takes effect at the first deploy"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_crash_looping_process_shows_as_such() {
    let server = Server::start();
    let app = crate::support::unique("looper");
    let repo = Repo::from_example(&server, "hello-docker");
    // Answers for 3 seconds, then exits 1: healthy at deploy, then a crash loop.
    repo.write(
        "Dockerfile",
        "FROM gantry-examples/busybox:latest\nCOPY public/ /www/\nCMD [\"sh\", \"-c\", \"timeout 3 httpd -f -p $PORT -h /www; echo crashing >&2; exit 1\"]\n",
    );
    repo.commit(&server, "crash loop");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let ps = stdout(&server.cli(&["ps", &app]));
        let line = ps
            .lines()
            .find(|l| l.starts_with("web.1"))
            .unwrap_or_default()
            .to_owned();
        let restarts: i64 = line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if restarts >= 2 && line.contains("crashed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never shown as crashing:\n{ps}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let logs = stdout(&server.cli(&["logs", &app, "-n", "20"]));
    assert!(logs.contains("crashing"), "{logs}");
}

#[test]
fn procfile_workers_run_beside_web_and_scale() {
    let server = Server::start();
    let app = crate::support::unique("workers");
    let repo = Repo::from_example(&server, "worker-and-cron");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("starting web=1 worker=1"), "{err}");
    assert!(
        err.contains("cron-cleanup: @hourly echo cleaning up (scheduled)"),
        "{err}"
    );
    assert_eq!(server.get(&app).1, "worker-and-cron web\n");
    let ps = stdout(&server.cli(&["ps", &app]));
    assert!(ps.contains("web.1") && ps.contains("worker.1"), "{ps}");

    std::thread::sleep(std::time::Duration::from_secs(2));
    let logs = stdout(&server.cli(&["logs", &app, "--ps", "worker", "-n", "5"]));
    assert!(
        logs.contains(&format!("{app}[worker.1]: worker tick")),
        "{logs}"
    );
    assert!(
        !logs.contains("[web."),
        "--ps worker showed web output:\n{logs}"
    );

    let out = server.ssh(&server.admin, &format!("ps:scale {app} worker=2"));
    assert!(
        stdout(&out).contains("web=1 worker=2 (started 1, stopped 0"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(containers_of(&app).len(), 3);
    let out = server.cli(&["ps:scale", &app, "worker=0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(containers_of(&app).len(), 1);
    assert_eq!(server.get(&app).1, "worker-and-cron web\n");
    let out = server.cli(&["ps:scale", &app, "cron-cleanup=1"]);
    assert!(
        stderr(&out).contains("process types are web, worker"),
        "{}",
        stderr(&out)
    );

    // A worker that dies at once rejects the push; the old release keeps serving.
    repo.write(
        "Procfile",
        "web: exec httpd -f -p \"$PORT\" -h /www\nworker: echo cannot start >&2; exit 2\n",
    );
    repo.write("www/index.html", "never\n");
    repo.commit(&server, "broken worker");
    let out = server.cli(&["ps:scale", &app, "worker=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot start"),
        "the worker's output is missing:\n{err}"
    );
    assert_eq!(server.get(&app).1, "worker-and-cron web\n");
}
