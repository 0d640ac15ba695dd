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

    // With `image`, the script runs inside a container of it.
    job(
        &server,
        "boxed",
        "echo inside $GANTRY_JOB with $MODE\nhostname >\"$GANTRY_ARTIFACTS/host.txt\"",
        Some("image = \"gantry-examples/busybox:latest\"\nenv = { MODE = \"containers\" }\n"),
    );
    let out = server.cli(&["jobs:run", "boxed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "boxed", Duration::from_secs(30), |l| {
        l.contains("succeeded")
    });
    let (_, text) = log(&server, "boxed", "1");
    assert!(text.contains("inside boxed with containers"), "{text}");
    let inside =
        std::fs::read_to_string(server.home.path().join("runs/boxed/1.artifacts/host.txt"))
            .expect("artifact from the container");
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_ne!(inside.trim(), host.trim(), "it ran on the host");

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

    // replace: a new run cancels the one still going.
    job(
        &server,
        "latest",
        "sleep 3",
        Some("concurrency = \"replace\"\n"),
    );
    let out = server.cli(&["jobs:run", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "latest", Duration::from_secs(20), |l| {
        l.starts_with("#1") && l.contains("running")
    });
    let out = server.cli(&["jobs:run", "latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "latest", Duration::from_secs(20), |l| {
        l.starts_with("#1") && l.contains("cancelled")
    });
    wait_run(&server, "latest", Duration::from_secs(20), |l| {
        l.starts_with("#2") && l.contains("succeeded")
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
    // Two executors, whatever the machine: busy and resumable fill them, so
    // a third run stays queued across the restart.
    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str("executors = 2\n");
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();
    let marker = format!("sleep 96{}", std::process::id() % 1000);
    job(&server, "busy", &marker, None);
    job(
        &server,
        "resumable",
        &format!("{marker}; true"),
        Some("retry_interrupted = true\n"),
    );
    job(
        &server,
        "every2s",
        "echo beat",
        Some("schedule = \"*/2 * * * * *\"\n"),
    );
    job(
        &server,
        "skipper",
        "echo beat",
        Some("schedule = \"*/2 * * * * *\"\nmissed = \"skip\"\n"),
    );
    for name in ["every2s", "skipper"] {
        wait_run(&server, name, Duration::from_secs(20), |l| {
            l.contains("succeeded")
        });
    }
    for name in ["busy", "resumable"] {
        let out = server.cli(&["jobs:run", name]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_run(&server, name, Duration::from_secs(20), |l| {
            l.contains("running")
        });
    }
    job(&server, "patient", "echo went on", None);
    let out = server.cli(&["jobs:run", "patient"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "patient", Duration::from_secs(5), |l| {
        l.starts_with("#1") && l.contains("queued")
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
    assert_eq!(runs(&server, "busy").len(), 1, "busy is not retried");
    // The run that was queued goes on after the restart.
    wait_run(&server, "patient", Duration::from_secs(20), |l| {
        l.starts_with("#1") && l.contains("succeeded")
    });
    let line = wait_run(&server, "resumable", Duration::from_secs(20), |l| {
        l.starts_with("#2")
    });
    assert!(
        line.contains("retry") && line.contains("by resumable#1"),
        "{line}"
    );
    let _ = server.cli(&["jobs:cancel", "resumable", "2"]);
    let _ = std::process::Command::new("pkill")
        .args(["-f", &marker])
        .status();

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
    assert!(
        !runs(&server, "skipper")
            .iter()
            .any(|l| l.contains("missed schedule")),
        "{:?}",
        runs(&server, "skipper")
    );
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

    // A cron run gets its parameters and GANTRY_RUN; cancelling it removes
    // its container.
    let report = format!("{app}/cron-report");
    let out = server.cli(&["jobs:run", &report, "WHO=ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = log(&server, &report, "1");
        if text.contains("report #1 for ops") {
            break;
        }
        assert!(Instant::now() < deadline, "no report output:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(crate::support::oneoff_containers_of(&app).len(), 1);
    let out = server.cli(&["jobs:cancel", &report, "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, &report, Duration::from_secs(20), |l| {
        l.contains("cancelled")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !crate::support::oneoff_containers_of(&app).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled cron's container is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A one-off process is a run of APP/run, its output the run's log.
    let out = server.cli(&[
        "run",
        &app,
        "--",
        "sh",
        "-c",
        "echo one-off says hi; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = wait_run(
        &server,
        &format!("{app}/run"),
        Duration::from_secs(10),
        |l| l.starts_with("#1"),
    );
    assert!(
        line.contains("failed") && line.contains("exit code 3"),
        "{line}"
    );
    let (_, text) = log(&server, &format!("{app}/run"), "1");
    assert!(text.contains("one-off says hi"), "{text}");

    // Over SSH, a deployer sees and runs its app's jobs only.
    job(&server, "host-only", "echo secret", None);
    let dev = crate::support::make_key(server.home.path(), "dev-key");
    let out = server.cli(&[
        "keys:add",
        "dev",
        crate::support::path_str(&dev.public),
        "--apps",
        &app,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&server.ssh(&dev, "jobs"));
    assert!(
        list.contains(&cron) && !list.contains("host-only"),
        "{list}"
    );
    let out = server.ssh(&dev, "jobs:run host-only");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no job named host-only"),
        "{}",
        stderr(&out)
    );
    let out = server.ssh(&dev, &format!("jobs:run {cron}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.ssh(&dev, &format!("jobs:log {cron} 2 -f"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("cleaning up") && text.contains("succeeded"),
        "{text}"
    );
}

/// A local HTTP receiver: records (path, body) of each request; `/broken`
/// answers 500, everything else 200.
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let status = if path == "/broken" {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                sink.lock()
                    .expect("lock")
                    .push((path, String::from_utf8_lossy(&body).into_owned()));
            }
        });
        Receiver { port, got }
    }

    /// Waits for a request to `path` whose body contains `needle`; returns the body.
    fn wait(&self, path: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, body)) = self
                .got
                .lock()
                .expect("lock")
                .iter()
                .find(|(p, b)| p == path && b.contains(needle))
            {
                return body.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {path} request with {needle:?}: {:?}",
                self.got.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn failures_recoveries_and_missed_critical_runs_are_sent() {
    let receiver = Receiver::start();
    let mut server = Server::start();
    // gantry.toml's targets apply to every job: a plain webhook and a templated one.
    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str(&format!(
        "\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/chat\"\ntemplate = '{{\"content\": {{{{ text|tojson }}}}}}'\n",
        port = receiver.port
    ));
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();

    let fail_flag = server.home.path().join("fail");
    std::fs::write(&fail_flag, "").expect("flag");
    job(
        &server,
        "flaky",
        &format!(
            "echo flaky output\n[ -f {} ] && exit 4\necho fine",
            fail_flag.display()
        ),
        Some(&format!(
            "[[notify]]\nwebhook = \"http://127.0.0.1:{}/broken\"\n",
            receiver.port
        )),
    );
    let out = server.cli(&["jobs:run", "flaky"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = receiver.wait("/hook", "\"failure\"", Duration::from_secs(20));
    let alert: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(alert["job"], "flaky");
    assert_eq!(alert["run"], 1);
    assert_eq!(alert["status"], "failed");
    assert_eq!(alert["reason"], "exit code 4");
    assert!(
        alert["log_tail"].to_string().contains("flaky output"),
        "{body}"
    );
    assert!(
        alert["link"]
            .as_str()
            .unwrap_or("")
            .ends_with("/jobs/flaky/1"),
        "{body}"
    );
    let chat = receiver.wait("/chat", "content", Duration::from_secs(20));
    assert_eq!(chat, "{\"content\": \"flaky #1 failed: exit code 4\"}");
    // The job's own target answers 500: retried, and the failures are in the run's log.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = log(&server, "flaky", "1");
        if text.contains("failed: HTTP 500") && text.contains("retrying in 1s") {
            break;
        }
        assert!(Instant::now() < deadline, "no retry logged:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A timeout is a failure too; a command hook gets the alert on stdin.
    let hooked = server.home.path().join("hooked.json");
    job(
        &server,
        "stuck",
        "sleep 30",
        Some(&format!(
            "timeout = 1\n[[notify]]\ncommand = \"cat > {}\"\n",
            hooked.display()
        )),
    );
    let out = server.cli(&["jobs:run", "stuck"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = receiver.wait("/hook", "\"job\":\"stuck\"", Duration::from_secs(20));
    assert!(
        body.contains("\"failure\"") && body.contains("\"status\":\"timed out\""),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let hook = loop {
        let text = std::fs::read_to_string(&hooked).unwrap_or_default();
        if text.contains("timed out") {
            break text;
        }
        assert!(Instant::now() < deadline, "the command hook did not run");
        std::thread::sleep(Duration::from_millis(100));
    };
    let alert: serde_json::Value = serde_json::from_str(&hook).expect("json on stdin");
    assert_eq!(alert["job"], "stuck");

    // A push that fails is a failed APP/deploy run, and alerts like one.
    let app = crate::support::unique("broken");
    let repo = Repo::from_example(&server, "never-listens");
    let out = repo.push(&server, &server.admin, &app);
    assert!(!out.status.success(), "the push should be rejected");
    let body = receiver.wait(
        "/hook",
        &format!("\"job\":\"{app}/deploy\""),
        Duration::from_secs(20),
    );
    assert!(body.contains("\"failure\""), "{body}");

    std::fs::remove_file(&fail_flag).expect("rm flag");
    let out = server.cli(&["jobs:run", "flaky"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = receiver.wait("/hook", "\"recovery\"", Duration::from_secs(20));
    assert!(body.contains("\"run\":2"), "{body}");

    // A critical job whose runs never succeed (the first hangs, the rest are
    // skipped) raises a missed-run alert.
    job(
        &server,
        "backup",
        "sleep 30",
        Some("schedule = \"* * * * * *\"\ncritical = true\ngrace = 1\nconcurrency = \"forbid\"\n"),
    );
    let body = receiver.wait("/hook", "\"missed\"", Duration::from_secs(20));
    assert!(
        body.contains("\"job\":\"backup\"") && body.contains("no successful run since"),
        "{body}"
    );
    wait_run(&server, "backup", Duration::from_secs(20), |l| {
        l.starts_with("#1")
    });
    let out = server.cli(&["jobs:cancel", "backup", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn retention_prunes_old_runs_logs_and_artifacts_in_a_visible_job() {
    let mut server = Server::start();
    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str("runs_keep = 2\nruns_keep_days = 0\nmetrics_token = \"s3cret\"\n");
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();
    job(
        &server,
        "often",
        "echo run $GANTRY_RUN; echo a >\"$GANTRY_ARTIFACTS/a.txt\"",
        None,
    );
    for n in 1..=4 {
        let out = server.cli(&["jobs:run", "often"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_run(&server, "often", Duration::from_secs(20), |l| {
            l.starts_with(&format!("#{n} ")) && l.contains("succeeded")
        });
    }
    let out = server.cli(&["jobs:run", "gantry.prune-runs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_run(&server, "gantry.prune-runs", Duration::from_secs(20), |l| {
        l.contains("succeeded")
    });
    let left: Vec<String> = runs(&server, "often")
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(left, ["#4", "#3"]);
    let runs_dir = server.home.path().join("runs/often");
    assert!(!runs_dir.join("1.log").exists() && !runs_dir.join("2.artifacts").exists());
    assert!(runs_dir.join("4.log").exists() && runs_dir.join("4.artifacts/a.txt").exists());
    let (_, text) = log(&server, "gantry.prune-runs", "1");
    assert!(
        text.contains("pruned often#1") && text.contains("pruned often#2"),
        "{text}"
    );

    // The metrics count what ran, for a scraper with the token only.
    let metrics = |auth: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-H", "Host: gantry.localhost"]);
        if let Some(token) = auth {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        cmd.arg(format!("http://127.0.0.1:{}/metrics", server.http_port));
        stdout(&cmd.output().expect("curl"))
    };
    let text = metrics(Some("s3cret"));
    // A counter: the two pruned runs still count.
    assert!(
        text.contains("gantry_job_runs_total{job=\"often\",status=\"succeeded\"} 4"),
        "{text}"
    );
    assert!(text.contains("gantry_executors "), "{text}");
    assert!(metrics(Some("wrong")).contains("metrics need an admin session"));
}

/// `git push REMOTE REFSPEC` from `dir` in a thread, so the test can watch
/// the job log while the push goes.
fn push_in_background(
    server: &Server,
    dir: &std::path::Path,
    app: &str,
    refspec: &str,
) -> std::thread::JoinHandle<std::process::Output> {
    let (remote, ssh, dir, refspec) = (
        server.remote(app),
        server.ssh_base(&server.admin),
        dir.to_owned(),
        refspec.to_owned(),
    );
    std::thread::spawn(move || {
        std::process::Command::new("git")
            .args(["push", &remote, &refspec])
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", ssh)
            .output()
            .expect("git push")
    })
}

/// A Dockerfile app whose build takes `seconds` (the `echo` keeps Docker's
/// cache from skipping the sleep) and that serves `body`.
fn slow_app(server: &Server, app: &str, seconds: u32, body: &str) -> Repo {
    Repo::with_files(
        server,
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM gantry-examples/busybox:latest\nRUN sleep {seconds}; echo {app} {body}\nCOPY public/ /www/\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"
                ),
            ),
            ("public/index.html", &format!("{body}\n")),
        ],
    )
}

#[test]
fn a_push_is_a_running_deploy_run_with_a_live_log() {
    let server = Server::start();
    let app = crate::support::unique("liverun");
    let deploy = format!("{app}/deploy");
    let repo = slow_app(&server, &app, 4, "slow build");
    let push = push_in_background(&server, repo.path(), &app, "main");

    // While the build sleeps, the run is running and its log has the build so far.
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let lines = if server.cli(&["jobs:runs", &deploy]).status.success() {
            runs(&server, &deploy)
        } else {
            Vec::new()
        };
        if lines
            .first()
            .is_some_and(|l| l.starts_with("#1") && l.contains("running"))
        {
            let (_, text) = log(&server, &deploy, "1");
            if text.contains("-----> Build: Dockerfile") {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no running deploy run with a build log: {lines:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        partial.contains("-----> Receive:") && !partial.contains("-----> Done"),
        "{partial}"
    );
    // `jobs:log -f` over SSH follows it to the end.
    let follow = {
        let (base, deploy) = (server.ssh_base(&server.admin), deploy.clone());
        std::thread::spawn(move || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{base} git@127.0.0.1 'jobs:log {deploy} 1 -f'"))
                .stdin(std::process::Stdio::null())
                .output()
                .expect("ssh")
        })
    };
    let out = push.join().expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let followed = follow.join().expect("join");
    assert!(followed.status.success(), "{}", stderr(&followed));
    let text = stdout(&followed);
    assert!(
        text.contains("-----> Build: Dockerfile")
            && text.contains(&format!("-----> Done: {app} v1 is live"))
            && text.contains(&format!("-----> {deploy}#1 succeeded")),
        "{text}"
    );
    let line = runs(&server, &deploy).remove(0);
    assert!(
        line.contains("succeeded") && line.contains("push") && line.contains("by tester"),
        "{line}"
    );

    // A failing build is a failed run that says why.
    repo.write(
        "Dockerfile",
        "FROM gantry-examples/busybox:latest\nRUN echo broken build; exit 7\n",
    );
    repo.commit(&server, "broken");
    let out = repo.push(&server, &server.admin, &app);
    assert!(!out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, &deploy, Duration::from_secs(10), |l| {
        l.starts_with("#2")
    });
    assert!(
        line.contains("failed") && line.contains("the build failed"),
        "{line}"
    );
    let (code, text) = log(&server, &deploy, "2");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("push rejected: the build failed")
            && text.contains("failed: the build failed"),
        "{text}"
    );
    assert_eq!(server.get(&app).1, "slow build\n");
}

#[test]
fn the_release_phase_is_a_child_run_of_the_deploy() {
    let server = Server::start();
    let app = crate::support::unique("relrun");
    let (deploy, release) = (format!("{app}/deploy"), format!("{app}/release"));
    let repo = Repo::from_example(&server, "release-phase");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("recorded as {release}#1")),
        "{}",
        stderr(&out)
    );
    let line = wait_run(&server, &release, Duration::from_secs(5), |l| {
        l.starts_with("#1")
    });
    assert!(
        line.contains("succeeded")
            && line.contains("push")
            && line.contains("by v1")
            && line.contains(&format!("from {deploy}#1")),
        "{line}"
    );
    let (code, text) = log(&server, &release, "1");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("migrating database for v-next") && !text.contains("-----> Build"),
        "the release run has its own log: {text}"
    );
    let (_, text) = log(&server, &deploy, "1");
    assert!(text.contains("migrating database for v-next"), "{text}");

    // A config change's release phase is a run too, with no deploy above it.
    let out = server.cli(&["config:set", &app, "FAIL_RELEASE=1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let line = wait_run(&server, &release, Duration::from_secs(5), |l| {
        l.starts_with("#2")
    });
    assert!(
        line.contains("failed") && line.contains("release") && line.contains("exit code 1"),
        "{line}"
    );
    assert!(!line.contains("from "), "{line}");

    // A push whose release phase fails: both runs failed, the reason on each.
    repo.write(
        "Procfile",
        "web: exec httpd -f -p \"$PORT\" -h /www\nrelease: echo cannot migrate; exit 3\n",
    );
    repo.commit(&server, "broken release phase");
    let out = repo.push(&server, &server.admin, &app);
    assert!(!out.status.success(), "{}", stderr(&out));
    let line = wait_run(&server, &release, Duration::from_secs(5), |l| {
        l.starts_with("#3")
    });
    assert!(
        line.contains("failed")
            && line.contains("exit code 3")
            && line.contains(&format!("from {deploy}#2")),
        "{line}"
    );
    let line = wait_run(&server, &deploy, Duration::from_secs(5), |l| {
        l.starts_with("#2")
    });
    assert!(
        line.contains("failed") && line.contains("the release command failed (exit 3)"),
        "{line}"
    );
    let (_, text) = log(&server, &release, "3");
    assert!(text.contains("cannot migrate"), "{text}");

    // The app's dashboard page links to its jobs; the deploy run lists its child.
    let link = stdout(&server.cli(&["web:login"]));
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a login link");
    let jar = server.home.path().join("cookies");
    let resolve = format!("gantry.localhost:{}:127.0.0.1", server.http_port);
    let curl = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-L", "--resolve", &resolve, "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .arg(url)
            .output()
            .expect("curl");
        stdout(&out)
    };
    curl(link);
    let dashboard = format!("http://gantry.localhost:{}", server.http_port);
    let page = curl(&format!("{dashboard}/apps/{app}"));
    for href in [
        format!("href=\"/jobs/{deploy}\""),
        format!("href=\"/jobs/{release}\""),
        format!("href=\"/jobs/{deploy}/2\""),
    ] {
        assert!(page.contains(&href), "the app page lacks {href}:\n{page}");
    }
    let page = curl(&format!("{dashboard}/jobs/{deploy}/2"));
    assert!(
        page.contains(&format!("href=\"/jobs/{release}/3\"")),
        "the deploy run does not link its release phase:\n{page}"
    );
}

#[test]
fn queued_deploys_wait_their_turn_and_all_go_live_in_order() {
    let mut server = Server::start();
    let app = crate::support::unique("queued");
    let deploy = format!("{app}/deploy");
    server.stop();
    let toml = server.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read gantry.toml");
    text.push_str(&format!("\n[apps.{app}]\ndeploy.queue = true\n"));
    std::fs::write(&toml, text).expect("write gantry.toml");
    server.launch();

    // main and master both deploy by default: two pushes that can both land.
    let first = slow_app(&server, &app, 3, "first");
    let second = slow_app(&server, &app, 1, "second");
    let third = slow_app(&server, &app, 1, "third");
    let push_first = push_in_background(&server, first.path(), &app, "main");
    wait_run(&server, &deploy, Duration::from_secs(30), |l| {
        l.starts_with("#1") && l.contains("running")
    });
    let push_second = push_in_background(&server, second.path(), &app, "main:master");
    wait_run(&server, &deploy, Duration::from_secs(10), |l| {
        l.starts_with("#2") && l.contains("queued")
    });
    // A third waits behind both; cancelled while queued, its push is refused.
    let push_third = push_in_background(&server, third.path(), &app, "main");
    wait_run(&server, &deploy, Duration::from_secs(10), |l| {
        l.starts_with("#3") && l.contains("queued")
    });
    let line = runs(&server, &deploy)
        .into_iter()
        .find(|l| l.starts_with("#1"))
        .expect("#1");
    assert!(
        line.contains("running"),
        "#1 finished before #2 and #3 queued: {line}"
    );
    let out = server.cli(&["jobs:cancel", &deploy, "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = push_third.join().expect("join");
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cancelled with jobs:cancel while this push waited"),
        "{}",
        stderr(&out)
    );

    let out = push_first.join().expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("Queued: {deploy} #1")),
        "{}",
        stderr(&out)
    );
    let out = push_second.join().expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Queued: {deploy} #2"))
            && err.contains(&format!("{deploy} #1 ahead"))
            && err.contains(&format!("Start: {deploy} #2"))
            && err.contains(&format!("-----> Done: {app} v2 is live")),
        "{err}"
    );
    assert_eq!(server.get(&app).1, "second\n");

    let lines = runs(&server, &deploy);
    let status = |n: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{n} ")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(status("#1").contains("succeeded"), "{lines:?}");
    assert!(status("#2").contains("succeeded"), "{lines:?}");
    assert!(
        status("#3").contains("cancelled") && status("#3").contains("jobs:cancel"),
        "{lines:?}"
    );
    // In order: #2 started only after #1 finished.
    let (_, text) = log(&server, &deploy, "2");
    assert!(text.contains("waited"), "{text}");
    let releases = stdout(&server.cli(&["releases", &app]));
    assert!(
        releases
            .lines()
            .any(|l| l.starts_with("v2") && l.contains("current"))
            && releases
                .lines()
                .any(|l| l.starts_with("v1") && l.contains("succeeded")),
        "{releases}"
    );
}

#[test]
fn a_job_definition_that_cannot_be_read_shows_as_broken_and_is_logged_once() {
    let server = Server::start();
    job(
        &server,
        "nightly",
        "echo nightly",
        Some("schedul = \"@daily\"\n"),
    );
    job(
        &server,
        "fine",
        "echo fine",
        Some("schedule = \"@daily\"\n"),
    );
    let out = server.cli(&["jobs"]);
    let list = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let nightly = list
        .lines()
        .find(|l| l.starts_with("nightly "))
        .unwrap_or_else(|| panic!("no nightly row:\n{list}"));
    assert!(
        nightly.contains("BROKEN, not run")
            && nightly.contains("nightly.toml")
            && nightly.contains("schedul"),
        "{nightly}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("fine ") && l.contains("schedule @daily")),
        "{list}"
    );
    // It cannot be run by hand either, and says why.
    let out = server.cli(&["jobs:run", "nightly"]);
    assert!(!out.status.success());
    // The scheduler looks at the jobs several times a second: the warning
    // is logged once, not each time.
    std::thread::sleep(Duration::from_secs(3));
    let warned = server.log().matches("job definition skipped: ").count();
    assert_eq!(warned, 1, "{}", server.log());
}
