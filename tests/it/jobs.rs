//! The job log and scheduler with real processes and real Docker: manual,
//! scheduled, upstream and nested triggers, failures, timeouts that kill the
//! process tree, concurrency, cancel, restart (interrupted runs, a missed
//! schedule run once), and an app's Procfile cron run in its release.

use std::time::{Duration, Instant};

use crate::support::{stderr, stdout, Repo, Server};

/// Writes `$GANTRY_HOME/jobs/NAME.run` (and `NAME.toml` if given).
fn job(server: &Server, name: &str, script: &str, toml: Option<&str>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.home.path().join("jobs");
    std::fs::create_dir_all(&dir).expect("mkdir jobs");
    let path = dir.join(format!("{name}.run"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write job");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if let Some(toml) = toml {
        std::fs::write(dir.join(format!("{name}.toml")), toml).expect("write toml");
    }
}

/// The `jobs:runs` lines of `job` (newest first), without the header.
fn runs(server: &Server, job: &str) -> Vec<String> {
    let out = server.cli(&["jobs:runs", job]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().skip(1).map(str::to_owned).collect()
}

/// Polls `jobs:runs` until a line matches `pred`, or panics after `timeout`.
fn wait_run(server: &Server, job: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = runs(server, job);
        if let Some(line) = lines.iter().find(|l| pred(l)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{job}: no matching run in time:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log(server: &Server, job: &str, run: &str) -> (i32, String) {
    let out = server.cli(&["jobs:log", job, run]);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

fn processes_matching(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep");
    stdout(&out).lines().count()
}

#[test]
fn host_jobs_run_by_hand_on_schedule_and_after_each_other() {
    let server = Server::start();
    job(
        &server,
        "hello",
        "echo \"hello $WHO, run $GANTRY_RUN of $GANTRY_JOB\"\nprintf '\\033[32mgreen\\033[0m\\n'\necho kept >\"$GANTRY_ARTIFACTS/out.txt\"",
        None,
    );
    job(
        &server,
        "report",
        "echo report after hello",
        Some("after = [\"hello\"]\n"),
    );
    job(&server, "parent", "gantry jobs:run child", None);
    job(&server, "child", "echo child ran", None);
    job(
        &server,
        "tick",
        "echo tick",
        Some("schedule = \"* * * * * *\"\n"),
    );
    job(&server, "broken", "echo about to fail; exit 3", None);

    let out = server.cli(&["jobs:run", "hello", "WHO=world"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("queued hello#1"),
        "{}",
        stdout(&out)
    );
    let line = wait_run(&server, "hello", Duration::from_secs(20), |l| {
        l.contains("succeeded")
    });
    assert!(
        line.starts_with("#1") && line.contains("manual") && line.contains("by local"),
        "{line}"
    );
    let (code, text) = log(&server, "hello", "1");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("hello world, run 1 of hello"), "{text}");
    assert!(
        text.contains("\u{1b}[32mgreen\u{1b}[0m"),
        "colors are kept: {text:?}"
    );
    assert!(text.contains("-----> hello#1 succeeded"), "{text}");
    let artifact = server.home.path().join("runs/hello/1.artifacts/out.txt");
    assert_eq!(
        std::fs::read_to_string(&artifact).expect("artifact"),
        "kept\n"
    );

    // Upstream: report runs because hello succeeded.
    let line = wait_run(&server, "report", Duration::from_secs(20), |l| {
        l.contains("succeeded")
    });
    assert!(
        line.contains("upstream") && line.contains("by hello#1"),
        "{line}"
    );

    // A job starting another from inside records itself as the parent.
    let out = server.cli(&["jobs:run", "parent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, "child", Duration::from_secs(20), |l| {
        l.contains("succeeded")
    });
    assert!(line.contains("from parent#1"), "{line}");

    // A schedule with seconds fires every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&server, "tick")
        .iter()
        .filter(|l| l.contains("schedule"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "tick never ran twice: {:?}",
            runs(&server, "tick")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A failure says why, and jobs:log exits non-zero.
    let out = server.cli(&["jobs:run", "broken"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, "broken", Duration::from_secs(20), |l| {
        l.contains("failed")
    });
    assert!(line.contains("exit code 3"), "{line}");
    let (code, text) = log(&server, "broken", "1");
    assert_eq!(code, 1);
    assert!(
        text.contains("about to fail") && text.contains("failed: exit code 3"),
        "{text}"
    );

    // `jobs` lists them all with their triggers and last runs.
    let out = server.cli(&["jobs"]);
    let list = stdout(&out);
    for needle in [
        "hello",
        "#1 succeeded",
        "after hello",
        "schedule * * * * * *",
        "broken",
    ] {
        assert!(list.contains(needle), "jobs lacks {needle:?}:\n{list}");
    }

    // Bad input is refused clearly.
    let out = server.cli(&["jobs:run", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no job named nope"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["jobs:run", "hello", "not-a-param"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("parameters are KEY=VALUE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn timeouts_kill_the_tree_and_concurrency_and_cancel_hold() {
    let server = Server::start();
    let marker = format!("sleep 97{}", std::process::id() % 1000);
    job(
        &server,
        "slow",
        &format!("{marker} & {marker}"),
        Some("timeout = 1\n"),
    );
    let out = server.cli(&["jobs:run", "slow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, "slow", Duration::from_secs(20), |l| {
        l.contains("timed out")
    });
    assert!(line.contains("process tree was killed"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        processes_matching(&marker),
        0,
        "the job's children survived its timeout"
    );

    job(
        &server,
        "single",
        "sleep 3",
        Some("concurrency = \"forbid\"\n"),
    );
    for _ in 0..2 {
        let out = server.cli(&["jobs:run", "single"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let line = wait_run(&server, "single", Duration::from_secs(20), |l| {
        l.starts_with("#2")
    });
    assert!(
        line.contains("cancelled") && line.contains("concurrency = forbid"),
        "{line}"
    );
    wait_run(&server, "single", Duration::from_secs(20), |l| {
        l.starts_with("#1") && l.contains("succeeded")
    });

    job(&server, "long", "sleep 60", None);
    let out = server.cli(&["jobs:run", "long"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "long", Duration::from_secs(20), |l| {
        l.contains("running")
    });
    let out = server.cli(&["jobs:cancel", "long", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "long", Duration::from_secs(20), |l| {
        l.contains("cancelled")
    });
}

#[test]
fn a_restart_interrupts_running_runs_and_runs_a_missed_schedule_once() {
    let mut server = Server::start();
    let marker = format!("sleep 96{}", std::process::id() % 1000);
    job(&server, "busy", &marker, None);
    job(
        &server,
        "every2s",
        "echo beat",
        Some("schedule = \"*/2 * * * * *\"\n"),
    );
    wait_run(&server, "every2s", Duration::from_secs(20), |l| {
        l.contains("succeeded")
    });
    let out = server.cli(&["jobs:run", "busy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "busy", Duration::from_secs(20), |l| {
        l.contains("running")
    });

    server.kill9();
    let _ = std::process::Command::new("pkill")
        .args(["-f", &marker])
        .status();
    std::thread::sleep(Duration::from_secs(5));
    server.launch();

    let line = wait_run(&server, "busy", Duration::from_secs(20), |l| {
        l.starts_with("#1")
    });
    assert!(line.contains("interrupted"), "{line}");
    let line = wait_run(&server, "every2s", Duration::from_secs(20), |l| {
        l.contains("missed schedule")
    });
    assert!(
        line.contains("succeeded") || line.contains("running") || line.contains("queued"),
        "{line}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let missed = runs(&server, "every2s")
        .iter()
        .filter(|l| l.contains("missed schedule"))
        .count();
    assert_eq!(missed, 1, "{:?}", runs(&server, "every2s"));
}

#[test]
fn app_cron_jobs_run_in_the_release_and_pushes_are_runs() {
    let server = Server::start();
    let app = crate::support::unique("crons");
    let repo = Repo::from_example(&server, "worker-and-cron");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.cli(&["jobs"]);
    let list = stdout(&out);
    let cron = format!("{app}/cron-cleanup");
    assert!(
        list.contains(&cron) && list.contains("schedule @hourly"),
        "{list}"
    );
    assert!(list.contains(&format!("{app}/deploy")), "{list}");
    let line = wait_run(
        &server,
        &format!("{app}/deploy"),
        Duration::from_secs(5),
        |l| l.starts_with("#1"),
    );
    assert!(
        line.contains("succeeded") && line.contains("push") && line.contains("by tester"),
        "{line}"
    );
    let (_, text) = log(&server, &format!("{app}/deploy"), "1");
    assert!(text.contains("-----> Build: Dockerfile"), "{text}");

    let out = server.cli(&["jobs:run", &cron]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, &cron, Duration::from_secs(30), |l| {
        l.contains("succeeded")
    });
    let (code, text) = log(&server, &cron, "1");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cleaning up"), "{text}");
}
