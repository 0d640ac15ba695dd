//! The cluster harness (`scripts/cluster`): three Docker engines in network
//! namespaces of their own, joined into one swarm, a service spread across
//! them and reached on each node's own address from inside the namespaces,
//! the harness's PostgreSQL reachable from a node, and a teardown that
//! leaves no namespace, bridge or firewall rule behind. The host's own
//! engine is never a node.

use std::process::{Command, Output};

use crate::support::{root, stderr, stdout};

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
