//! The cluster harness (`scripts/cluster`): three Docker engines in network
//! namespaces of their own, joined into one swarm, a service spread across
//! them and reached on each node's own address from inside the namespaces,
//! the harness's PostgreSQL reachable from a node, and a teardown that
//! leaves no namespace, bridge or firewall rule behind. The host's own
//! engine is never a node.

use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{free_port, root, stderr, stdout, Repo, Server, BIN};

/// There is one harness on the machine: its tests take turns.
static HARNESS: Mutex<()> = Mutex::new(());

fn cluster(args: &[&str]) -> Output {
    Command::new(root().join("scripts/cluster"))
        .args(args)
        .output()
        .expect("scripts/cluster")
}

/// Takes the cluster down however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&["down"]);
    }
}

fn node(i: u32, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(format!("unix:///tmp/gantry-cluster/n{i}/d.sock"))
        .args(args)
        .output()
        .expect("docker")
}

#[test]
fn the_harness_runs_a_three_node_swarm_and_leaves_nothing_behind() {
    let _turn = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    crate::support::ensure_base_image();
    let _ = cluster(&["down"]);
    let _down = Down;
    let out = cluster(&["up", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = stdout(&out);
    assert!(
        env.contains("NODE3_ADDR=192.168.231.13")
            && env.contains(
                "CLUSTER_DATABASE_URL=postgres://gantry:gantry@192.168.231.1:5433/gantry"
            ),
        "{env}"
    );
    let nodes = stdout(&node(
        1,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
    ));
    for n in ["node1 Ready", "node2 Ready", "node3 Ready"] {
        assert!(nodes.contains(n), "{nodes}");
    }
    // The host's engine is not among them.
    let host = stdout(
        &Command::new("docker")
            .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .output()
            .expect("docker info"),
    );
    assert_eq!(host.trim(), "inactive");

    // A service across the nodes, reached on each node's address.
    for i in 1..=3 {
        let save = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save gantry-examples/busybox:latest | docker -H unix:///tmp/gantry-cluster/n{i}/d.sock load -q"
            ))
            .output()
            .expect("load");
        assert!(save.status.success(), "{}", stderr(&save));
    }
    let out = node(
        1,
        &[
            "service",
            "create",
            "-q",
            "--name",
            "spread",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--publish",
            "mode=host,target=8000,published=8000",
            "gantry-examples/busybox:latest",
            "sh",
            "-c",
            "hostname > /tmp/name; exec httpd -f -p 8000 -h /tmp",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "answered: {seen:?}");
        for i in 1..=3 {
            let got = Command::new("ip")
                .args(["netns", "exec", "gantry-node1", "curl", "-s", "-m", "2"])
                .arg(format!("http://192.168.231.1{i}:8000/name"))
                .output()
                .expect("curl");
            if got.status.success() {
                seen.insert(stdout(&got).trim().to_owned());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The harness's PostgreSQL, from inside a node's namespace.
    let pg = Command::new("ip")
        .args([
            "netns",
            "exec",
            "gantry-node2",
            "env",
            "PGPASSWORD=gantry",
            "psql",
        ])
        .args([
            "-h",
            "192.168.231.1",
            "-p",
            "5433",
            "-U",
            "gantry",
            "-d",
            "gantry",
            "-tAc",
            "select 40 + 2",
        ])
        .output()
        .expect("psql");
    assert_eq!(stdout(&pg).trim(), "42", "{}", stderr(&pg));

    let out = cluster(&["down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let namespaces = stdout(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip"),
    );
    assert!(!namespaces.contains("gantry-node"), "{namespaces}");
    let rules = stdout(
        &Command::new("iptables")
            .args(["-S", "FORWARD"])
            .output()
            .expect("iptables"),
    );
    assert!(!rules.contains("gantrytest0"), "{rules}");
    let bridge = Command::new("ip")
        .args(["link", "show", "gantrytest0"])
        .output()
        .expect("ip");
    assert!(!bridge.status.success(), "the bridge is gone");
}

/// The pull-through mirrors `gantry registry:mirror` runs in each node's
/// namespace, stopped (SIGTERM, so each stops its registry) at the end.
struct Mirrors(Vec<Child>);

impl Drop for Mirrors {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// The tasks `ps` lists as running: (release, node) of each.
fn running_tasks(server: &Server, app: &str) -> Vec<(String, String)> {
    let out = server.cli(&["ps", app]);
    stdout(&out)
        .lines()
        .filter(|l| l.contains(" on node") && l.contains("running"))
        .map(|l| {
            let node = l
                .split(" on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            let release = l
                .split_whitespace()
                .find(|w| w.starts_with('v') && w[1..].chars().all(|c| c.is_ascii_digit()))
                .unwrap_or_default()
                .to_owned();
            (release, node)
        })
        .collect()
}

#[test]
fn an_app_pushed_to_the_swarm_runs_on_every_node_and_a_failed_release_rolls_back() {
    let _turn = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    crate::support::ensure_base_image();
    let _ = cluster(&["down"]);
    let _down = Down;
    let out = cluster(&["up", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let database = "postgres://gantry:gantry@192.168.231.1:5433/gantry".to_owned();

    // SQLite is refused for a swarm, with the reason.
    let refused = Command::new(BIN)
        .args([
            "--home",
            "/nonexistent-gantry-home",
            "serve",
            "--runtime",
            "swarm",
        ])
        .env("GANTRY_DATABASE_URL", "sqlite:///tmp/nope.db")
        .output()
        .expect("gantry serve");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("needs a PostgreSQL database"),
        "{}",
        stderr(&refused)
    );

    // Every node pulls through a mirror on its own loopback.
    let registry = free_port();
    let mirror_homes = tempfile::tempdir().expect("tempdir");
    let mut mirrors = Mirrors(Vec::new());
    for i in 1..=3 {
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("gantry-node{i}"), BIN])
            .arg("--home")
            .arg(mirror_homes.path().join(format!("node{i}")))
            .args(["registry:mirror", "--upstream"])
            .arg(format!("http://192.168.231.1:{registry}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gantry registry:mirror");
        mirrors.0.push(child);
    }

    let server = Server::start_configured(
        Some(database),
        &format!(
            "runtime = \"swarm\"\n[swarm]\nengine = \"unix:///tmp/gantry-cluster/n1/d.sock\"\n\
             registry_listen = \"0.0.0.0:{registry}\"\nregistry_push = \"127.0.0.1:{registry}\"\n"
        ),
    );
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/index.html", "swarm v1\n");
    repo.commit(&server, "v1");
    let out = repo.push(&server, &server.admin, "spread");
    let said = stderr(&out);
    assert!(out.status.success(), "{said}\n{}", server.log());
    assert!(said.contains("to the cluster's registry"), "{said}");
    assert!(said.contains("@sha256:"), "deploys by digest: {said}");
    server.wait_for_body("spread", "swarm v1", Duration::from_secs(30));

    // Three replicas, one on each node, all behind the proxy.
    let out = server.cli(&["ps:scale", "spread", "web=3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tasks = running_tasks(&server, "spread");
        let mut nodes: Vec<&str> = tasks.iter().map(|(_, n)| n.as_str()).collect();
        nodes.sort();
        if nodes == ["node1", "node2", "node3"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not spread over three nodes: {}",
            stdout(&server.cli(&["ps", "spread"]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .log()
        .matches("routing to the running web tasks")
        .count()
        < 2
        || !server.log().contains("tasks=3")
    {
        assert!(Instant::now() < deadline, "not routed: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..30 {
        let (status, body) = server.get("spread");
        assert_eq!((status, body.as_str()), (200, "swarm v1\n"));
    }

    // A new release rolls out task by task; traffic keeps being answered.
    repo.write("public/index.html", "swarm v2\n");
    repo.commit(&server, "v2");
    let out = repo.push(&server, &server.admin, "spread");
    assert!(out.status.success(), "{}", stderr(&out));
    server.wait_for_body("spread", "swarm v2", Duration::from_secs(30));
    let tasks = running_tasks(&server, "spread");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.iter().all(|(v, _)| v == "v2"), "{tasks:?}");

    // A release that never answers: Swarm rolls it back, the push is
    // rejected, and v2 keeps serving on all three nodes.
    std::fs::write(
        repo.path().join("Dockerfile"),
        "FROM gantry-examples/busybox:latest\nCMD [\"sleep\", \"100000\"]\n",
    )
    .expect("write");
    repo.commit(&server, "never listens");
    let out = repo.push(&server, &server.admin, "spread");
    let said = stderr(&out);
    assert!(!out.status.success(), "a broken release went live: {said}");
    assert!(said.contains("rolled web back"), "{said}");
    let (status, body) = server.get("spread");
    assert_eq!((status, body.as_str()), (200, "swarm v2\n"));
    let tasks = running_tasks(&server, "spread");
    assert!(
        tasks.len() == 3 && tasks.iter().all(|(v, _)| v == "v2"),
        "{tasks:?}"
    );
    let releases = stdout(&server.cli(&["releases", "spread"]));
    assert!(releases.contains("failed"), "{releases}");
    drop(server);
    drop(mirrors);
}
