//! Backups of gantry itself, restored into a new home as on a new machine:
//! every app comes back serving, with its config, domains, certificate and
//! release history, from a SQLite and from a Postgres gantry; images are
//! built again from the repositories when the archive has none. A damaged
//! archive, one of another format, and a home that is not empty are refused
//! with nothing changed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::support::{
    fresh_postgres_database, path_str, self_signed_cert, stderr, stdout, unique, Repo, Server,
};

/// An app on `server` with a config var, a domain with its own certificate
/// and two releases; returns its name and its repository.
fn app_with_history(server: &Server, cert_dir: &Path) -> (String, Repo) {
    let app = unique("bak");
    let repo = Repo::from_example(server, "hello-docker");
    let out = repo.push(server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["config:set", &app, "GREETING=kept across machines"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let domain = format!("{app}.example.test");
    let out = server.cli(&["domains:add", &app, &domain]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (cert, key) = self_signed_cert(cert_dir, &domain);
    let out = server.cli(&["certs:add", &app, path_str(&cert), path_str(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    (app, repo)
}

/// The releases' numbers and descriptions, without their ages.
fn history(server: &Server, app: &str) -> Vec<String> {
    stdout(&server.cli(&["releases", app]))
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Removes the app from the engine (its containers and images), as a new
/// machine would not have them.
fn gone_from_the_engine(server: &Server, app: &str) {
    let out = server.cli(&["apps:destroy", app, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn restore(server: &Server, archive: &Path) -> std::process::Output {
    server
        .command()
        .arg("restore")
        .arg(archive)
        .output()
        .expect("gantry restore")
}

fn scenario(database: Option<String>, target: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut old = Server::start_with(database);
    let (app, repo) = app_with_history(&old, dir.path());
    let jobs = old.home.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("mkdir");
    std::fs::write(jobs.join("nightly.run"), "#!/bin/sh\necho nightly\n").expect("job");

    // Written while serve runs.
    let archive = dir.path().join("gantry.tar.gz");
    let out = old.cli(&["backup", path_str(&archive)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 app(s), 0 image(s)"),
        "{}",
        stdout(&out)
    );
    let releases_before = history(&old, &app);
    assert_eq!(releases_before.len(), 2, "{releases_before:?}");
    gone_from_the_engine(&old, &app);
    old.stop();

    // A new home; the image is built again from the repository.
    let mut new = Server::unlaunched(target);
    let out = restore(&new, &archive);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for needle in [
        "database restored",
        &format!("building {app} v2 again from its repository"),
        &format!("rebuilt gantry/{app}:v1"),
        "restored 1 app(s)",
        "kept this home's gantry.toml",
    ] {
        assert!(text.contains(needle), "restore said:\n{text}");
    }
    // Restoring twice is refused: the home is no longer empty.
    let again = restore(&new, &archive);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("is not empty"),
        "{}",
        stderr(&again)
    );

    let out = new.cli(&[
        "keys:add",
        "new-admin",
        path_str(&new.admin.public),
        "--admin",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    new.launch();
    new.wait_for_body(&app, "", std::time::Duration::from_secs(30));
    assert_eq!(
        stdout(&new.cli(&["config:get", &app, "GREETING"])),
        "kept across machines\n"
    );
    assert!(stdout(&new.cli(&["domains", &app])).contains(&format!("{app}.example.test")));
    assert!(
        stdout(&new.cli(&["certs", &app])).contains(&format!("{app}.example.test")),
        "{}",
        stdout(&new.cli(&["certs", &app]))
    );
    assert_eq!(history(&new, &app), releases_before);
    assert!(stdout(&new.cli(&["jobs"])).contains("nightly"));
    // It is a working gantry: the next push is v3.
    repo.write("README", "after the restore\n");
    repo.commit(&new, "after the restore");
    let out = repo.push(&new, &new.admin, &app);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{app} v3 is live")), "{err}");
}

#[test]
fn a_sqlite_gantry_comes_back_from_its_backup_in_a_new_home() {
    scenario(None, None);
}

#[test]
fn a_postgres_gantry_comes_back_from_its_backup_in_a_new_database() {
    let (Some(from), Some(to)) = (fresh_postgres_database(), fresh_postgres_database()) else {
        panic!("GANTRY_TEST_POSTGRES_URL is not set: scripts/test starts PostgreSQL and sets it");
    };
    scenario(Some(from), Some(to));
}

/// Rewrites the archive's manifest with `edit`.
fn with_manifest(archive: &Path, to: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(archive).expect("open"),
    ));
    let output = flate2::write::GzEncoder::new(
        std::fs::File::create(to).expect("create"),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(output);
    for entry in input.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let path: PathBuf = entry.path().expect("path").into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        if path == Path::new("gantry-backup.json") {
            let mut manifest: serde_json::Value = serde_json::from_slice(&data).expect("json");
            edit(&mut manifest);
            data = serde_json::to_vec(&manifest).expect("json");
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        builder
            .append_data(&mut header, &path, data.as_slice())
            .expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip");
}

#[test]
fn a_damaged_or_foreign_backup_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Server::start();
    let app = unique("bak-bad");
    let out = Repo::from_example(&old, "hello-docker").push(&old, &old.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = dir.path().join("good.tar.gz");
    let out = old.cli(&["backup", path_str(&archive), "--images"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 app(s), 1 image(s)"),
        "{}",
        stdout(&out)
    );

    let truncated = dir.path().join("truncated.tar.gz");
    let bytes = std::fs::read(&archive).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let other_format = dir.path().join("format.tar.gz");
    with_manifest(&archive, &other_format, |m| m["format"] = 99.into());
    let newer = dir.path().join("newer.tar.gz");
    with_manifest(&archive, &newer, |m| {
        m["schema"] = 99_999_999.into();
        m["gantry"] = "9.0.0".into();
    });
    for (file, says) in [
        (&truncated, "damaged (truncated?)"),
        (&other_format, "of format 99; this gantry reads format 1"),
        (&newer, "written by gantry 9.0.0, whose database is newer"),
        (&dir.path().join("missing.tar.gz"), "missing.tar.gz"),
    ] {
        let target = Server::unlaunched(None);
        let out = restore(&target, file);
        assert!(!out.status.success(), "{} was restored", file.display());
        assert!(
            stderr(&out).contains(says),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        let left: Vec<String> = std::fs::read_dir(target.home.path())
            .expect("home")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "gantry.toml" && !n.starts_with("admin-key"))
            .collect();
        assert!(left.is_empty(), "a refused restore left {left:?}");
    }

    // The good one, with its image: nothing to rebuild.
    let target = Server::unlaunched(None);
    let out = restore(&target, &archive);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("1 image(s) loaded") && !text.contains("building"),
        "{text}"
    );
}

#[test]
fn the_daily_backup_job_keeps_its_newest_archives_as_run_artifacts() {
    let server = Server::start_configured(None, "[backup]\nkeep = 1\n");
    let jobs = stdout(&server.cli(&["jobs"]));
    assert!(jobs.contains("gantry.backup"), "{jobs}");
    for number in 1..=2 {
        let out = server.cli(&["jobs:run", "gantry.backup"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let runs = stdout(&server.cli(&["jobs:runs", "gantry.backup"]));
            let line = runs
                .lines()
                .find(|l| {
                    l.trim_start().starts_with(&format!("#{number} "))
                        || l.split_whitespace().next() == Some(&number.to_string())
                })
                .unwrap_or_default()
                .to_owned();
            if line.contains("succeeded") {
                break;
            }
            assert!(
                !line.contains("failed"),
                "{runs}\n{}",
                stdout(&server.cli(&["jobs:log", "gantry.backup"]))
            );
            assert!(std::time::Instant::now() < deadline, "{runs}");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    let archives = |n: i64| -> Vec<String> {
        let dir = server
            .home
            .path()
            .join(format!("runs/gantry.backup/{n}.artifacts"));
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".tar.gz"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(archives(1).is_empty(), "keep = 1 removed the older archive");
    assert_eq!(archives(2).len(), 1);
    let log = stdout(&server.cli(&["jobs:log", "gantry.backup", "2"]));
    assert!(
        log.contains("a run artifact") && log.contains("(keeping 1)"),
        "{log}"
    );
}
