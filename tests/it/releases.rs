//! Releases and config: numbering, config vars reaching the app, rollback, and
//! values encrypted at rest.

use crate::support::{http_get, stderr, stdout, Repo, Server};

fn greeting(server: &Server, app: &str) -> String {
    let (status, body) = http_get(
        server.http_port,
        &format!("{app}.localhost"),
        "/cgi-bin/config",
    );
    assert_eq!(status, 200, "{body}");
    body.trim().to_owned()
}

#[test]
fn config_changes_release_and_rollback() {
    let server = Server::start();
    let app = crate::support::unique("echo");
    let repo = Repo::from_example(&server, "config-echo");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(greeting(&server, &app), "GREETING=unset");

    // config:set makes v2 and the running app sees the value.
    let secret = "hola-secret-value";
    let out = server.ssh(
        &server.admin,
        &format!("config:set {app} GREETING={secret}"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Set GREETING: v2 is live"),
        "{}",
        stdout(&out)
    );
    assert_eq!(greeting(&server, &app), format!("GREETING={secret}"));
    assert_eq!(
        stdout(&server.cli(&["config:get", &app, "GREETING"])).trim(),
        secret
    );
    assert!(stdout(&server.cli(&["config", &app])).contains(&format!("GREETING={secret}")));

    // A push keeps the config.
    repo.write("www/index.html", "config-echo second\n");
    repo.commit(&server, "second");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Release: v3"), "{}", stderr(&out));
    assert_eq!(greeting(&server, &app), format!("GREETING={secret}"));

    // History, newest first; release info names changed vars, never their values.
    let listed = stdout(&server.cli(&["releases", &app]));
    let versions: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(versions, ["v3", "v2", "v1"], "{listed}");
    assert!(
        listed.contains("current")
            && listed.contains("Set GREETING")
            && listed.contains("\"second\""),
        "{listed}"
    );
    let info = stdout(&server.ssh(&server.admin, &format!("releases:info {app} v2")));
    assert!(
        info.contains("changed:") && info.contains("GREETING"),
        "{info}"
    );
    assert!(
        !info.contains(secret),
        "release info printed a value:\n{info}"
    );
    assert!(
        info.contains(&format!("gantry/{app}:v1 (sha256:")),
        "{info}"
    );

    // Unset, then roll back to v3: its config and image come back as v5.
    let out = server.cli(&["config:unset", &app, "GREETING"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(greeting(&server, &app), "GREETING=unset");
    let out = server.cli(&["releases:rollback", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Rollback to v3: v5 is live"),
        "{}",
        stdout(&out)
    );
    assert_eq!(greeting(&server, &app), format!("GREETING={secret}"));

    // Roll back to v1: the first body and no greeting.
    let out = server.ssh(&server.admin, &format!("releases:rollback {app} v1"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app).1, "config-echo first\n");
    assert_eq!(greeting(&server, &app), "GREETING=unset");

    // --no-restart records a release but leaves the running app alone.
    let out = server.cli(&["config:set", &app, "GREETING=later", "--no-restart"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("v7 recorded"), "{}", stdout(&out));
    assert_eq!(greeting(&server, &app), "GREETING=unset");

    // Values are encrypted at rest: no database file holds the secret.
    for entry in std::fs::read_dir(server.home.path()).expect("home") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("gantry.db"))
        {
            let bytes = std::fs::read(&path).expect("read db");
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds the plain value", path.display());
        }
    }
}

#[test]
fn bad_release_and_config_input_is_refused_clearly() {
    let server = Server::start();
    let cases: [(&str, &str); 8] = [
        ("config:set nope A=1", "app nope does not exist"),
        ("config:set web NOEQUALS", "is not KEY=VALUE"),
        (
            "config:set web 1BAD=x A-B=y",
            "invalid config var name \"1BAD\"",
        ),
        ("config:set web PORT=80", "PORT is set by gantry"),
        ("releases:info web v99", "release v99 of web does not exist"),
        ("releases:info web vx", "invalid release \"vx\""),
        ("releases:rollback web", "no live release to roll back from"),
        ("config:get web MISSING", "MISSING is not set on web"),
    ];
    assert!(server
        .ssh(&server.admin, "apps:create web")
        .status
        .success());
    for (command, expected) in cases {
        let out = server.ssh(&server.admin, command);
        assert!(!out.status.success(), "{command} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{command}: {}",
            stderr(&out)
        );
    }
    // Both bad names in one command are reported.
    let out = server.ssh(&server.admin, "config:set web 1BAD=x A-B=y");
    assert!(stderr(&out).contains("\"A-B\""), "{}", stderr(&out));
    // Config set before the first deploy is kept for it.
    let out = server.cli(&["config:set", "web", "A=1"]);
    assert!(
        stdout(&out).contains("the first deploy uses it"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stdout(&server.cli(&["config:get", "web", "A"])).trim(), "1");
}

#[test]
fn requests_in_flight_finish_on_the_old_release() {
    let server = Server::start();
    let app = crate::support::unique("drain");
    let repo = Repo::from_example(&server, "config-echo");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    // A 3-second request is in flight on v1 when v2 goes live.
    let (port, host) = (server.http_port, format!("{app}.localhost"));
    let slow = std::thread::spawn(move || http_get(port, &host, "/cgi-bin/slow"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = server.cli(&["config:set", &app, "GREETING=new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(greeting(&server, &app), "GREETING=new");
    let (status, body) = slow.join().expect("join");
    assert_eq!(status, 200, "the in-flight request was cut: {body}");
    assert_eq!(
        body.trim(),
        "slow done GREETING=unset",
        "it was not served by v1"
    );
}

#[test]
fn retention_keeps_the_last_releases_images_and_prunes_the_rest() {
    let server = Server::start();
    let app = crate::support::unique("keep");
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.ssh(&server.admin, &format!("artifacts:set {app} keep 2"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.ssh(&server.admin, &format!("artifacts:set {app} keep 0"));
    assert!(stderr(&out).contains("from 1 to 1000"), "{}", stderr(&out));

    for n in 2..=3 {
        repo.write("public/index.html", &format!("version {n}\n"));
        repo.commit(&server, &format!("v{n}"));
        let out = repo.push(&server, &server.admin, &app);
        assert!(out.status.success(), "{}", stderr(&out));
        if n == 3 {
            assert!(
                stderr(&out).contains("pruned 1 old image(s), freed"),
                "{}",
                stderr(&out)
            );
        }
    }
    // After v3, the last 2 releases are v3 and v2: v1's image is gone.
    let listed = stdout(&server.cli(&["artifacts", &app]));
    assert!(listed.contains(&format!("gantry/{app}:v2")), "{listed}");
    assert!(!listed.contains(&format!("gantry/{app}:v1")), "{listed}");
    let gone = std::process::Command::new("docker")
        .args(["image", "inspect", &format!("gantry/{app}:v1")])
        .output()
        .expect("docker");
    assert!(!gone.status.success(), "v1's image is still on disk");

    // A config change reuses v3's image: the last 2 releases (v4, v3) need only it.
    let out = server.cli(&["config:set", &app, "A=1"]);
    assert!(
        stdout(&out).contains("pruned 1 old image(s)"),
        "{}",
        stdout(&out)
    );
    let listed = stdout(&server.cli(&["artifacts", &app]));
    assert!(
        listed.contains(&format!("gantry/{app}:v3")) && listed.contains("v4, v3"),
        "{listed}"
    );
    assert!(!listed.contains(&format!("gantry/{app}:v2")), "{listed}");

    // Rolling back within the kept releases works; beyond them it says why not.
    let out = server.cli(&["releases:rollback", &app, "v2"]);
    assert!(
        stderr(&out).contains("no longer on this host (pruned)"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["releases:rollback", &app, "v3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get(&app).1, "version 3\n");

    let out = server.cli(&["apps:destroy", &app, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("image(s) (") && stdout(&out).contains("freed)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn destroying_an_app_says_how_much_disk_its_images_gave_back() {
    let server = Server::start();
    let app = crate::support::unique("sizes");
    let repo = Repo::from_example(&server, "hello-docker");
    // A 3 MB layer no other image has.
    std::fs::write(
        repo.path().join("Dockerfile"),
        "FROM gantry-examples/busybox:latest\nRUN head -c 3000000 /dev/urandom > /blob\nCOPY public/ /www/\nCMD [\"sh\", \"-c\", \"exec httpd -f -v -p \\\"$PORT\\\" -h /www\"]\n",
    )
    .expect("Dockerfile");
    repo.commit(&server, "a big layer");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["apps:destroy", &app, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    // "... 1 image(s) (3.0 MB freed) ...": at least the layer it alone had.
    let freed = said
        .split("image(s) (")
        .nth(1)
        .and_then(|rest| rest.split(" freed)").next())
        .unwrap_or_default()
        .to_owned();
    let megabytes: f64 = freed
        .strip_suffix(" MB")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a size in MB: {said}"));
    assert!(megabytes >= 2.9, "{said}");
}
