//! Data and limits for apps: a volume whose file survives deploys, restarts
//! and rollbacks; mounts that cannot be made are refused with nothing
//! changed; a memory limit that kills a hungry process, which shows in
//! `ps`, `logs` and the job log.

use std::time::{Duration, Instant};

use crate::support::{stderr, stdout, unique, Repo, Server};

/// A busybox app whose web process counts its boots in /data/boots and
/// serves the count; `hungry` eats memory after a moment, but only under a
/// memory limit (never the host's).
fn counting_app(server: &Server) -> Repo {
    Repo::with_files(
        server,
        &[
            (
                "Dockerfile",
                "FROM gantry-examples/busybox:latest\nRUN mkdir -p /www /data\n",
            ),
            (
                "Procfile",
                "web: sh -c 'echo boot >> /data/boots; echo \"boots: $(wc -l < /data/boots)\" > /www/index.html; exec httpd -f -p \"$PORT\" -h /www'\n\
                 hungry: sh -c 'sleep 3; limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null | head -n1); if [ \"$limit\" -lt 1000000000 ] 2>/dev/null; then x=0123456789abcdef; while true; do x=\"$x$x\"; done; fi; exec sleep 100000'\n",
            ),
        ],
    )
}

fn boots(server: &Server, app: &str) -> usize {
    let (status, body) = server.get(app);
    assert_eq!(status, 200, "{body}");
    body.trim()
        .strip_prefix("boots: ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {body:?}"))
}

#[test]
fn a_volume_keeps_its_data_across_deploys_restarts_and_rollbacks() {
    let server = Server::start();
    let app = unique("vol");
    let repo = counting_app(&server);
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["ps:scale", &app, "hungry=0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Mounting restarts the app onto the volume: the count starts there.
    let out = server.cli(&["storage:mount", &app, "data:/data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Mounted data:/data") && stdout(&out).contains("restarted"),
        "{}",
        stdout(&out)
    );
    assert_eq!(boots(&server, &app), 1);
    let listed = stdout(&server.cli(&["storage", &app]));
    assert!(
        listed.contains("/data") && listed.contains(&format!("gantry-vol-{app}-data")),
        "{listed}"
    );

    // A deploy, a restart and a rollback each boot it once more, on the same data.
    repo.write("README", "a change\n");
    repo.commit(&server, "deploy again");
    let out = repo.push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(boots(&server, &app), 2);
    let out = server.cli(&["ps:restart", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(boots(&server, &app), 3);
    let out = server.cli(&["releases:rollback", &app]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(boots(&server, &app), 4);
    // One-offs see it too.
    let out = server.cli(&["run", &app, "--", "cat", "/data/boots"]);
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stderr(&out));

    // What cannot be mounted is refused, and nothing changes.
    for (bad, says) in [
        ("data:relative/path", "is relative"),
        ("etc:/etc", "is reserved"),
        ("app:/app", "is reserved"),
        ("other:/data", "already mounted"),
        ("Bad_Name:/x", "is not a volume name"),
        ("/no/such/dir:/x", "does not exist"),
        ("nothing", "expected NAME:/path"),
    ] {
        let out = server.cli(&["storage:mount", &app, bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(stderr(&out).contains(says), "{bad}: {}", stderr(&out));
    }
    assert_eq!(stdout(&server.cli(&["storage", &app])), listed);
    assert_eq!(boots(&server, &app), 4, "no restart for a refused mount");

    // Destroyed, the app's volume stays unless asked.
    let out = server.cli(&["apps:destroy", &app, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let volume = format!("gantry-vol-{app}-data");
    assert!(
        stdout(&out).contains(&format!("Kept its volumes, with their data: {volume}")),
        "{}",
        stdout(&out)
    );
    let inspect = std::process::Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .expect("docker volume inspect");
    assert!(inspect.status.success(), "the volume was kept");
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &volume])
        .output();
}

#[test]
fn a_memory_limit_kills_a_hungry_process_and_says_so() {
    let server = Server::start();
    let app = unique("hungry");
    let out = counting_app(&server).push(&server, &server.admin, &app);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.cli(&["resources:set", &app, "hungry", "memory=lots"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a memory size"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["resources:set", &app, "hungry", "memory=24m", "cpus=0.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("hungry: memory=24m cpus=0.5"),
        "{}",
        stdout(&out)
    );
    let limits = stdout(&server.cli(&["resources", &app]));
    assert!(
        limits.contains("hungry       memory=24m cpus=0.5")
            && limits.contains("web          unlimited"),
        "{limits}"
    );

    // It grows past 24 MB, the kernel kills it, and gantry says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ps = loop {
        let ps = stdout(&server.cli(&["ps", &app]));
        if ps.contains("killed for memory") || ps.contains("out of memory") {
            break ps;
        }
        assert!(Instant::now() < deadline, "never killed for memory:\n{ps}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ps.contains("hungry.1"), "{ps}");
    let logs = stdout(&server.cli(&["logs", &app]));
    assert!(
        logs.contains(&format!(
            "{app}[hungry.1]: gantry: hungry.1 was killed: out of memory (limit 24m)"
        )),
        "{logs}"
    );
    let runs = stdout(&server.cli(&["jobs:runs", &format!("{app}/oom")]));
    assert!(runs.contains("failed"), "{runs}");
    // The web process, unlimited, serves on.
    assert_eq!(server.get(&app).0, 200);
}
