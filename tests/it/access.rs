//! Keys and names: who may push and manage what, and what names are refused.

use crate::support::{make_key, path_str, stderr, stdout, Repo, Server};

#[test]
fn unknown_keys_are_refused() {
    let server = Server::start();
    let stranger = make_key(server.home.path(), "stranger");
    let out = server.ssh(&stranger, "apps:list");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &stranger, "sneaky");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&server.cli(&["apps:list"])).contains("sneaky"));
}

#[test]
fn deployers_reach_only_their_apps() {
    let server = Server::start();
    let deployer = make_key(server.home.path(), "deployer");
    let out = server.cli(&[
        "keys:add",
        "dev",
        path_str(&deployer.public),
        "--apps",
        "granted",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&server.cli(&["keys:list"]));
    assert!(
        listed.contains("dev") && listed.contains("deployer: granted"),
        "{listed}"
    );

    // An admin made both apps; the deployer may push to one only.
    for app in ["granted", "other"] {
        assert!(server
            .ssh(&server.admin, &format!("apps:create {app}"))
            .status
            .success());
    }
    crate::support::ensure_stack();
    let repo = Repo::from_example(&server, "static-site");
    let out = repo.push(&server, &deployer, "other");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("permission denied: key dev may not push to app other"),
        "{err}"
    );
    let out = repo.push(&server, &deployer, "granted");
    let err = stderr(&out);
    assert!(
        out.status.success() && err.contains("-----> Receive: granted"),
        "deployer did not reach its app:\n{err}"
    );

    // Management over SSH follows the same rules.
    let apps = stdout(&server.ssh(&deployer, "apps:list"));
    assert!(
        apps.contains("granted") && !apps.contains("other"),
        "{apps}"
    );
    let out = server.ssh(&deployer, "apps:destroy other --force");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not manage app other"),
        "{}",
        stderr(&out)
    );
    let out = server.ssh(&deployer, "keys:list");
    assert!(stderr(&out).contains("only admin keys"), "{}", stderr(&out));
    let out = server.ssh(&deployer, "apps:create newapp");
    assert!(
        !out.status.success(),
        "deployer created an app it was not granted"
    );

    // An admin adds a key over SSH by sending it on stdin.
    let third = make_key(server.home.path(), "third");
    let line = format!(
        "{} git@127.0.0.1 keys:add third - --apps granted < {}",
        server.ssh_base(&server.admin),
        third.public.display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .output()
        .expect("ssh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&server.ssh(&third, "apps:list")).contains("granted"));
    assert!(server
        .ssh(&server.admin, "keys:remove third")
        .status
        .success());
    assert!(
        !server.ssh(&third, "apps:list").status.success(),
        "removed key still works"
    );
}

#[test]
fn bad_app_names_are_refused_everywhere() {
    let server = Server::start();
    let long = "a".repeat(40);
    for name in ["../x", "A", long.as_str(), "x;rm"] {
        let quoted = format!("'{name}'");
        let out = server.ssh(&server.admin, &format!("apps:create {quoted}"));
        assert!(!out.status.success(), "ssh accepted {name}");
        assert!(
            stderr(&out).contains("^[a-z][a-z0-9-]{0,29}$"),
            "ssh {name}: {}",
            stderr(&out)
        );
        let out = server.cli(&["apps:create", name]);
        assert!(!out.status.success(), "cli accepted {name}");
        assert!(
            stderr(&out).contains("^[a-z][a-z0-9-]{0,29}$"),
            "cli {name}: {}",
            stderr(&out)
        );
    }
    // And as a git path.
    let repo = Repo::from_example(&server, "hello-docker");
    let out = repo.push(&server, &server.admin, "Bad_Name");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid app name"),
        "{}",
        stderr(&out)
    );
    let listed = stdout(&server.cli(&["apps:list"]));
    assert!(listed.contains("No apps"), "{listed}");
}

#[test]
fn management_commands_over_ssh_and_cli() {
    let server = Server::start();
    let out = server.ssh(&server.admin, "help");
    assert!(out.status.success());
    assert!(stdout(&out).contains("apps:create"), "{}", stdout(&out));
    let out = server.ssh(&server.admin, "frobnicate");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = server.ssh(&server.admin, "apps:create web1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!(
        "git remote add gantry ssh://git@localhost:{}/web1",
        server.ssh_port
    )));
    let out = server.cli(&["apps:create", "web1"]);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = server.ssh(&server.admin, "git:set web1 deploy-branch production");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pushes to production deploy"),
        "{}",
        stdout(&out)
    );
    let out = server.ssh(&server.admin, "git:set web1 deploy-branch ../x");
    assert!(
        stderr(&out).contains("invalid branch name"),
        "{}",
        stderr(&out)
    );

    let out = server.cli(&["apps:destroy", "web1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = server.cli(&["apps:destroy", "web1", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!server.home.path().join("repos/web1.git").exists());
    let out = server.ssh(&server.admin, "apps:destroy web1 --force");
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}
