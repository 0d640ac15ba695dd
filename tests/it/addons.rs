//! The postgres add-on, for real: a PostgreSQL server made from Debian's
//! packages, an app of our own (psycopg from PyPI) that connects with
//! `sslmode=require` through `DATABASE_URL`, its rows kept across a
//! redeploy and a restart of serve, a backup run restored, psql, and the
//! refusals (an unknown add-on, a second one, a destroy without --force).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{ensure_stack, stderr, stdout, unique, Repo, Server};

fn notes(server: &Server, app: &str) -> String {
    let (status, body) = server.get(app);
    assert_eq!(status, 200, "{body}\n{}", server.log());
    body.trim().to_owned()
}

fn add(server: &Server, app: &str, text: &str) {
    let (status, body) = crate::support::http_get(
        server.http_port,
        &format!("{app}.localhost"),
        &format!("/add?text={text}"),
    );
    assert_eq!(status, 200, "{body}");
}

/// Waits for `job`'s run `number` to end; its status.
fn wait_run(server: &Server, job: &str, number: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = stdout(&server.cli(&["jobs:runs", job]));
        if let Some(line) = runs.lines().find(|l| {
            l.split_whitespace().next() == Some(&format!("#{number}"))
                || l.split_whitespace().next() == Some(&number.to_string())
        }) {
            for status in ["succeeded", "failed"] {
                if line.contains(status) {
                    return status.to_owned();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{job} #{number} did not end:\n{runs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_postgres_add_on_serves_an_app_over_tls_and_keeps_and_restores_its_data() {
    ensure_stack();
    let mut server = Server::start();
    let app = unique("pg");
    let out = server.cli(&["apps:create", &app]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.cli(&["addons:create", &app, "mysql"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown add-on \"mysql\""),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&server.cli(&["addons", &app])).contains("has no add-ons"));

    let out = server.cli(&["addons:create", &app, "postgres"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Created postgres for {app}: postgres://app:***@gantry-addon-{app}-postgres:5432/app?sslmode=require")),
        "{text}"
    );
    let url = stdout(&server.cli(&["config:get", &app, "DATABASE_URL"]));
    assert!(
        url.contains("sslmode=require") && !url.contains("***"),
        "{url}"
    );
    let out = server.cli(&["addons:create", &app, "postgres"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already has a postgres add-on"),
        "{}",
        stderr(&out)
    );

    // The app: psycopg from PyPI, the URL from the add-on.
    let repo = Repo::from_example(&server, "postgres-notes");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    add(&server, &app, "first");
    add(&server, &app, "second");
    assert_eq!(notes(&server, &app), "notes: 2; ssl: True");

    // A redeploy and a restart of serve keep the data.
    repo.write("README.md", "a change\n");
    repo.commit(&server, "redeploy");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(notes(&server, &app), "notes: 2; ssl: True");
    server.stop();
    server.launch();
    assert_eq!(notes(&server, &app), "notes: 2; ssl: True");

    // A backup run, then a change, then the backup restored.
    let job = format!("{app}/backup-postgres");
    assert!(stdout(&server.cli(&["jobs"])).contains(&job));
    let out = server.cli(&["addons:backup", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        wait_run(&server, &job, 1),
        "succeeded",
        "{}",
        stdout(&server.cli(&["jobs:log", &job, "1"]))
    );
    add(&server, &app, "third");
    assert_eq!(notes(&server, &app), "notes: 3; ssl: True");
    let out = server.cli(&["addons:restore", &app, "1"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(notes(&server, &app), "notes: 2; ssl: True");
    let out = server.cli(&["addons:restore", &app, "9"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no run #9"), "{}", stderr(&out));

    let info = stdout(&server.cli(&["addons:info", &app]));
    assert!(
        info.contains("State:     running")
            && info.contains("PostgreSQL 1")
            && info.contains("last #1 succeeded"),
        "{info}"
    );
    // psql, fed on stdin.
    let mut psql = server
        .command()
        .args(["addons:psql", &app])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("addons:psql");
    psql.stdin
        .take()
        .expect("stdin")
        .write_all(b"SELECT count(*) * 21 AS answer FROM notes;\n")
        .expect("write");
    let out = psql.wait_with_output().expect("psql");
    assert!(
        stdout(&out).contains("42"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Destroying it asks first, then takes the server, data and URL.
    let out = server.cli(&["addons:destroy", &app, "postgres"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(notes(&server, &app), "notes: 2; ssl: True");
    let out = server.cli(&["addons:destroy", &app, "postgres", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // This app cannot start without its database, and says so.
    assert!(
        stdout(&out).contains(&format!("Destroyed {app}'s postgres"))
            && stdout(&out).contains("did not start without DATABASE_URL"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stdout(&server.cli(&["config:get", &app, "DATABASE_URL"])),
        ""
    );
    let gone = std::process::Command::new("docker")
        .args(["inspect", &format!("gantry-addon-{app}-postgres")])
        .output()
        .expect("docker inspect");
    assert!(!gone.status.success(), "the server container is gone");
}

#[test]
fn an_add_on_and_its_data_come_back_with_a_gantry_restore() {
    ensure_stack();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut old = Server::start();
    let app = unique("pg-restore");
    assert!(old.cli(&["apps:create", &app]).status.success());
    let out = old.cli(&["addons:create", &app, "postgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Repo::from_example(&old, "postgres-notes").push(&old, &old.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    add(&old, &app, "kept");
    add(&old, &app, "also-kept");
    assert_eq!(notes(&old, &app), "notes: 2; ssl: True");

    let archive = dir.path().join("gantry.tar.gz");
    let out = old.cli(&["backup", crate::support::path_str(&archive)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{app}/backup-postgres: its data dumped")),
        "{}",
        stdout(&out)
    );
    // The old machine goes away, the add-on's server and volume with it.
    let out = old.cli(&["apps:destroy", &app, "--force", "--volumes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    old.stop();

    let mut new = Server::unlaunched(None);
    let out = new
        .command()
        .arg("restore")
        .arg(&archive)
        .output()
        .expect("gantry restore");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!("{app}'s postgres: its data loaded")),
        "{text}"
    );
    let out = new.cli(&[
        "keys:add",
        "new-admin",
        crate::support::path_str(&new.admin.public),
        "--admin",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    new.launch();
    new.wait_for_body(&app, "notes", Duration::from_secs(60));
    assert_eq!(notes(&new, &app), "notes: 2; ssl: True");
    assert!(stdout(&new.cli(&["addons", &app])).contains("postgres"));
    let out = new.cli(&["apps:destroy", &app, "--force", "--volumes"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
