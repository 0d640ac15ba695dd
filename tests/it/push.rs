//! The push-to-deploy flow: push, change, broken build, unhealthy app, other
//! branches, clone, and a restart that serves the app again without a push.

use std::time::Duration;

use crate::support::{stderr, Repo, Server};

#[test]
fn push_change_failures_and_restart() {
    let mut server = Server::start();
    let app = crate::support::unique("hello");
    let repo = Repo::from_example(&server, "hello-docker");

    // First push: the app is created (admin key), built, started and routed.
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "first push failed:\n{err}\n{}",
        server.log()
    );
    for stage in [
        "-----> Receive",
        "-----> Build",
        "-----> Release: v1",
        "-----> Deploy: v1",
        "-----> Done",
    ] {
        assert!(
            err.contains(&format!("remote: {stage}")),
            "no {stage:?} in:\n{err}"
        );
    }
    assert_eq!(server.get(&app), (200, "Hello from gantry\n".to_string()));

    // A change is served after the next push.
    repo.write("public/index.html", "Second version\n");
    repo.commit(&server, "second");
    let out = repo.push(&server, &server.admin, &app);
    assert!(
        out.status.success(),
        "second push failed:\n{}",
        stderr(&out)
    );
    assert_eq!(server.get(&app).1, "Second version\n");

    // A broken Dockerfile rejects the push; the old body is still served and the
    // server's branch does not move.
    repo.write(
        "Dockerfile",
        "FROM gantry-examples/busybox:latest\nRUN exit 3\n",
    );
    repo.commit(&server, "broken build");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "broken build was accepted:\n{err}");
    assert!(err.contains("pre-receive hook declined"), "{err}");
    assert!(err.contains("the build failed"), "{err}");
    assert_eq!(server.get(&app).1, "Second version\n");

    // An app that never listens: rejected with its own log lines; old body served.
    std::fs::copy(
        crate::support::root().join("examples/never-listens/Dockerfile"),
        repo.path().join("Dockerfile"),
    )
    .expect("copy");
    repo.commit(&server, "never listens");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "unhealthy app was accepted:\n{err}");
    assert!(err.contains("did not answer HTTP on port 5000"), "{err}");
    assert!(
        err.contains("starting up, but I will never listen"),
        "app stdout missing:\n{err}"
    );
    assert!(
        err.contains("something is wrong"),
        "app stderr missing:\n{err}"
    );
    assert_eq!(server.get(&app).1, "Second version\n");

    // Other branches are stored, not deployed.
    let out = repo.push_ref(&server, &server.admin, &app, "HEAD:refs/heads/feature");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("feature: stored, not deployed"), "{err}");
    assert_eq!(server.get(&app).1, "Second version\n");

    // A clone gets the deployed main (not the rejected commits) and the feature branch.
    let clone_parent = tempfile::tempdir().expect("tempdir");
    let out = server.git(
        &server.admin,
        clone_parent.path(),
        &["clone", "-q", &server.remote(&format!("{app}.git")), "c"],
    );
    assert!(out.status.success(), "clone failed: {}", stderr(&out));
    let cloned = clone_parent.path().join("c");
    let index = std::fs::read_to_string(cloned.join("public/index.html")).expect("index");
    assert_eq!(index, "Second version\n");
    let log = server.git(
        &server.admin,
        &cloned,
        &["log", "--format=%s", "origin/main"],
    );
    assert_eq!(crate::support::stdout(&log), "second\nfirst\n");
    let branches = server.git(&server.admin, &cloned, &["branch", "-r"]);
    assert!(crate::support::stdout(&branches).contains("origin/feature"));

    // Releases: v1 and v2 succeeded, the failed attempts are recorded as failed.
    let listed = server.cli(&["apps:list"]);
    let listed = crate::support::stdout(&listed);
    assert!(listed.contains(&app) && listed.contains("v2"), "{listed}");

    // Restart: the proxy is a process of its own, so the app keeps
    // answering while serve is down, and after it is back.
    server.stop();
    assert_eq!(
        server.get(&app).0,
        200,
        "the proxy kept serving without serve"
    );
    server.launch();
    server.wait_for_body(&app, "Second version", Duration::from_secs(30));
}

#[test]
fn pushes_to_one_app_wait_for_each_other() {
    let server = Server::start();
    let app = crate::support::unique("queue");
    let a = Repo::from_example(&server, "hello-docker");
    let out = a.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    // Two pushes at once: the second waits for the first, then finds the branch
    // moved and is rejected, never half-deployed.
    let b = Repo::from_example(&server, "hello-docker");
    b.write("public/index.html", "from b\n");
    b.commit(&server, "b");
    a.write("public/index.html", "from a\n");
    a.commit(&server, "a");
    let push_b = {
        let server_remote = server.remote(&app);
        let ssh = server.ssh_base(&server.admin);
        let dir = b.path().to_owned();
        std::thread::spawn(move || {
            std::process::Command::new("git")
                .args(["push", "--force", &server_remote, "main"])
                .current_dir(dir)
                .env("GIT_SSH_COMMAND", ssh)
                .output()
                .expect("git push")
        })
    };
    let out_a = server.git(
        &server.admin,
        a.path(),
        &["push", "--force", &server.remote(&app), "main"],
    );
    let out_b = push_b.join().expect("join");
    let (err_a, err_b) = (stderr(&out_a), stderr(&out_b));
    let (winner, loser) = match (out_a.status.success(), out_b.status.success()) {
        (true, false) => ("from a\n", &err_b),
        (false, true) => ("from b\n", &err_a),
        _ => panic!("expected exactly one push to land:\n{err_a}\n----\n{err_b}"),
    };
    assert!(
        loser.contains("another deploy of"),
        "the loser did not wait:\n{loser}"
    );
    assert!(loser.contains("moved while this push waited"), "{loser}");
    assert_eq!(server.get(&app).1, winner);
    // The server's branch and the live release agree.
    let listed = crate::support::stdout(&server.cli(&["apps:list"]));
    assert!(listed.contains("v2"), "{listed}");
}

#[test]
fn push_and_restart_on_postgres() {
    let Some(url) = crate::support::fresh_postgres_database() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the tests through scripts/test, which sets GANTRY_TEST_POSTGRES_URL"
        );
        eprintln!("skipped: GANTRY_TEST_POSTGRES_URL is not set (scripts/test sets it)");
        return;
    };
    let mut server = Server::start_with(Some(url));
    assert!(
        server
            .banner
            .contains("database:  postgres://gantry_test:***@"),
        "{}",
        server.banner
    );
    let app = crate::support::unique("pg");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app).1, "Hello from gantry\n");
    server.stop();
    server.launch();
    server.wait_for_body(&app, "Hello from gantry", Duration::from_secs(30));
    let listed = crate::support::stdout(&server.cli(&["apps:list"]));
    assert!(listed.contains(&app) && listed.contains("v1"), "{listed}");
}

#[test]
fn a_crashed_container_is_restarted_routed_and_restored() {
    let mut server = Server::start();
    let app = crate::support::unique("crashy");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    // The app's process dies; Docker's restart policy brings it back and gantry
    // routes to it again (at whatever address it now has).
    let container = crate::support::containers_of(&app)
        .pop()
        .expect("a container");
    let out = std::process::Command::new("docker")
        .args(["exec", &container, "kill", "1"])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "{}", stderr(&out));
    server.wait_for_body(&app, "Hello from gantry", Duration::from_secs(30));
    let restarts = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.RestartCount}}", &container])
        .output()
        .expect("docker inspect");
    assert_eq!(crate::support::stdout(&restarts).trim(), "1");
    let ps = crate::support::stdout(&server.cli(&["ps", &app]));
    assert!(ps.contains("running (crashed 1x, restarted)"), "{ps}");

    // A restarted container is still the live release after gantry restarts.
    server.stop();
    server.launch();
    server.wait_for_body(&app, "Hello from gantry", Duration::from_secs(30));
    assert!(
        !server.log().contains("cannot restore app"),
        "{}",
        server.log()
    );
}

#[test]
fn one_push_may_update_only_one_deploying_branch() {
    let server = Server::start();
    let app = crate::support::unique("twobranch");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = server.git(
        &server.admin,
        repo.path(),
        &["push", &server.remote(&app), "main", "main:master"],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("push one of them at a time"), "{err}");
    // And the app is not wedged: a normal push right after goes through.
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app).1, "Hello from gantry\n");
}

#[test]
fn kill_9_mid_deploy_leaves_one_release_serving() {
    let mut server = Server::start();
    let app = crate::support::unique("crashdeploy");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    // v2 takes 4 s to listen; gantry is killed while it waits for it.
    repo.write(
        "Dockerfile",
        "FROM gantry-examples/busybox:latest\nCOPY public/ /www/\nCMD [\"sh\", \"-c\", \"sleep 4; exec httpd -f -p $PORT -h /www\"]\n",
    );
    repo.write("public/index.html", "slow v2\n");
    repo.commit(&server, "slow v2");
    let push = {
        let (remote, ssh, dir) = (
            server.remote(&app),
            server.ssh_base(&server.admin),
            repo.path().to_owned(),
        );
        std::thread::spawn(move || {
            std::process::Command::new("git")
                .args(["push", &remote, "main"])
                .current_dir(dir)
                .env("GIT_SSH_COMMAND", ssh)
                .output()
                .expect("git push")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while crate::support::containers_of(&app).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "v2 never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill9();
    let out = push.join().expect("join");
    assert!(!out.status.success(), "the push survived a killed server");

    server.launch();
    server.wait_for_body(&app, "Hello from gantry", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crate::support::containers_of(&app).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "v2's container was not removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let releases = crate::support::stdout(&server.cli(&["releases", &app]));
    let v2 = releases
        .lines()
        .find(|l| l.starts_with("v2"))
        .expect("v2 listed");
    assert!(v2.contains("failed"), "{releases}");
    let info = crate::support::stdout(&server.cli(&["releases:info", &app, "v2"]));
    assert!(info.contains("interrupted"), "{info}");
    assert!(
        releases
            .lines()
            .any(|l| l.starts_with("v1") && l.contains("current")),
        "{releases}"
    );
    // The branch was not moved to the commit that never went live.
    let clone = tempfile::tempdir().expect("tempdir");
    let out = server.git(
        &server.admin,
        clone.path(),
        &["clone", "-q", &server.remote(&app), "c"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let body = std::fs::read_to_string(clone.path().join("c/public/index.html")).expect("index");
    assert_eq!(body, "Hello from gantry\n");
}
