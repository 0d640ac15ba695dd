//! Procfile and app.json in a push: web command, release phase, deploy scripts,
//! health check path, and malformed files rejecting the push.

use crate::support::{stderr, stdout, Repo, Server};

#[test]
fn release_phase_and_deploy_scripts_run_and_guard_the_switch() {
    let server = Server::start();
    let app = crate::support::unique("phases");
    let repo = Repo::from_example(&server, "release-phase");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "web: exec httpd",
        "cron-report: */15 * * * * echo report (scheduled)",
        "running release: echo",
        "migrating database",
        "running postdeploy: echo postdeploy ran",
        "postdeploy ran",
    ] {
        assert!(err.contains(needle), "push output lacks {needle:?}:\n{err}");
    }
    assert_eq!(server.get(&app), (200, "release-phase app\n".to_string()));

    // A failing release phase (here made so by config) switches nothing.
    let out = server.cli(&["config:set", &app, "FAIL_RELEASE=1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the release command failed (exit 1)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&server.cli(&["config", &app])).contains("no config vars"),
        "config was not restored"
    );
    assert_eq!(server.get(&app).1, "release-phase app\n");

    // The same in a push: rejected, old body served.
    repo.write(
        "Procfile",
        "web: exec httpd -f -p \"$PORT\" -h /www\nrelease: echo no; exit 7\n",
    );
    repo.write("www/index.html", "never served\n");
    repo.commit(&server, "broken release phase");
    let out = repo.push(&server, &server.admin, &app);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the release command failed (exit 7)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.get(&app).1, "release-phase app\n");
}

#[test]
fn malformed_procfile_and_app_json_reject_the_push_with_where() {
    let server = Server::start();
    let app = crate::support::unique("badfiles");
    let repo = Repo::from_example(&server, "release-phase");
    repo.write("Procfile", "web: exec httpd -f -p \"$PORT\" -h /www\nthis is not a process line\ncron1: 99 * * * * x\n");
    repo.write(
        "app.json",
        "{\n  \"healthchecks\": {\"web\": [ {\"path\": \"/\"} ]\n",
    );
    repo.commit(&server, "bad files");
    let out = repo.push(&server, &server.admin, &app);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Procfile line 2: expected `name: command`"),
        "{err}"
    );
    assert!(
        err.contains("Procfile line 3: invalid schedule \"99 * * * *\""),
        "{err}"
    );
    assert!(err.contains("app.json line 3 column"), "{err}");
    assert_eq!(server.get(&app).0, 404, "nothing was deployed");
}
