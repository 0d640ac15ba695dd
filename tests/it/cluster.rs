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

/// The harness with `n` nodes, for this test alone: its turn (held until
/// the test ends), the teardown however it ends, and what `up` printed.
fn harness(n: u32) -> (std::sync::MutexGuard<'static, ()>, Down, Output) {
    let turn = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    crate::support::ensure_base_image();
    let _ = cluster(&["down"]);
    let out = cluster(&["up", &n.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    (turn, Down, out)
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
    let (_turn, _down, out) = harness(3);
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

/// GETs the app through the proxy from a thread until stopped; counts
/// answers by status (0: no answer at all).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::collections::BTreeMap<u16, usize>>>,
}

impl Load {
    fn start(port: u16, app: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let host = format!("{app}.localhost");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = crate::support::http_get(port, &host, "/");
                *seen.entry(status).or_insert(0) += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> std::collections::BTreeMap<u16, usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("load thread"))
            .unwrap_or_default()
    }
}

/// Only 200s, and enough of them to mean something.
fn all_answered(seen: &std::collections::BTreeMap<u16, usize>, what: &str) {
    let ok = seen.get(&200).copied().unwrap_or(0);
    let total: usize = seen.values().sum();
    assert!(ok == total && ok > 20, "{what}: {seen:?}");
}

/// The `gantry node:join` command `node:token` prints, as words.
fn join_command(server: &Server) -> Vec<String> {
    let out = server.cli(&["node:token"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).split_whitespace().map(str::to_owned).collect()
}

/// Runs the join command in node `i`'s namespace, against its engine, in
/// the foreground (as the systemd unit it writes elsewhere does): it joins
/// (unless in the swarm already), then runs the node's mirror, worker and
/// edge proxy on port 80, which stops serving after 3 s without the routes.
fn start_node_agent(homes: &std::path::Path, i: u32, join: &[String]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &format!("gantry-node{i}"), "env"])
        .arg(format!(
            "DOCKER_HOST=unix:///tmp/gantry-cluster/n{i}/d.sock"
        ))
        .arg(BIN)
        .arg("--home")
        .arg(homes.join(format!("node{i}")))
        .args(&join[1..])
        .arg("--foreground")
        .args(["--advertise-addr", &format!("192.168.231.1{i}")])
        .args(["--stale-after", "3"])
        .env("GANTRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(homes.join(format!("node{i}.log"))).expect("log"))
        .spawn()
        .expect("gantry node:join")
}

/// Every node `1..=n` runs the join command `server` prints, as
/// [`start_node_agent`] does; the agents stop when the second is dropped.
fn start_agents(server: &Server, n: u32) -> (tempfile::TempDir, Mirrors) {
    let join = join_command(server);
    let homes = tempfile::tempdir().expect("tempdir");
    let agents = (1..=n)
        .map(|i| start_node_agent(homes.path(), i, &join))
        .collect();
    (homes, Mirrors(agents))
}

/// GET / of `app` from inside node `from`'s namespace, through node `at`'s
/// edge proxy (port 80): (status, body). 0: no answer.
fn edge_get(from: u32, at: u32, app: &str) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("gantry-node{from}")])
        .args(["curl", "-s", "-m", "3", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {app}.localhost"))
        .arg(format!("http://192.168.231.1{at}/"))
        .output()
        .expect("curl");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls node `at`'s edge until it answers `status` (and `body`, if given).
fn wait_edge(at: u32, app: &str, status: u16, body: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, text) = edge_get(at, at, app);
        if got == status && body.is_none_or(|b| text == b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node{at}'s edge answered {got} {text:?}, not {status} {body:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A gantry on the harness's swarm: node1's engine, the harness's
/// PostgreSQL, its registry on `registry`.
fn swarm_server(registry: u16) -> Server {
    swarm_server_with(registry, "")
}

/// [`swarm_server`] with `extra` lines in its gantry.toml.
fn swarm_server_with(registry: u16, extra: &str) -> Server {
    Server::start_configured(
        Some("postgres://gantry:gantry@192.168.231.1:5433/gantry".to_owned()),
        &format!(
            "runtime = \"swarm\"\n[swarm]\nengine = \"unix:///tmp/gantry-cluster/n1/d.sock\"\n\
             registry_listen = \"0.0.0.0:{registry}\"\nregistry_push = \"127.0.0.1:{registry}\"\n\
             registry_url = \"http://192.168.231.1:{registry}\"\n{extra}"
        ),
    )
}

/// Another manager of the same swarm and database as [`swarm_server`]'s,
/// with a registry of its own; not launched.
fn second_manager() -> Server {
    let second = Server::unlaunched(Some(
        "postgres://gantry:gantry@192.168.231.1:5433/gantry".to_owned(),
    ));
    let other = free_port();
    let toml = second.home.path().join("gantry.toml");
    let mut text = std::fs::read_to_string(&toml).expect("gantry.toml");
    text.push_str(&format!(
        "runtime = \"swarm\"\n[swarm]\nengine = \"unix:///tmp/gantry-cluster/n1/d.sock\"\n\
         registry_listen = \"0.0.0.0:{other}\"\nregistry_push = \"127.0.0.1:{other}\"\n"
    ));
    std::fs::write(&toml, text).expect("write gantry.toml");
    second
}

/// Waits until `ps` shows one running task on each of `nodes`, and routes
/// to them all.
fn wait_spread(server: &Server, app: &str, nodes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = running_tasks(server, app);
        let mut on: Vec<&str> = tasks.iter().map(|(_, n)| n.as_str()).collect();
        on.sort();
        if on == nodes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not on {nodes:?}: {}",
            stdout(&server.cli(&["ps", app]))
        );
        std::thread::sleep(Duration::from_millis(500));
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
    let (_turn, _down, _) = harness(3);

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

    // Every node runs what node:join starts: a mirror on its own loopback
    // that its engine pulls through, and an edge proxy.
    let registry = free_port();
    let server = swarm_server(registry);
    let join = join_command(&server);
    let agent_homes = tempfile::tempdir().expect("tempdir");
    let mut mirrors = Mirrors(Vec::new());
    for i in 1..=3 {
        mirrors
            .0
            .push(start_node_agent(agent_homes.path(), i, &join));
    }
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
    wait_spread(&server, "spread", &["node1", "node2", "node3"]);
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
    // Every node's edge proxy serves it too, to a client on another node.
    for at in 1..=3 {
        wait_edge(at, "spread", 200, Some("swarm v1\n"));
        assert_eq!(edge_get(1 + at % 3, at, "spread").1, "swarm v1\n");
    }
    // node3 cut off from the database: its edge cannot verify its routes
    // and stops serving them; the others go on; healed, it serves again.
    let cut = |op: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", "gantry-node3", "iptables", op, "OUTPUT"])
            .args(["-p", "tcp", "-d", "192.168.231.1", "--dport", "5433"])
            .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
            .output()
            .expect("iptables");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    cut("-A");
    wait_edge(3, "spread", 503, None);
    assert_eq!(edge_get(1, 1, "spread").0, 200);
    cut("-D");
    wait_edge(3, "spread", 200, Some("swarm v1\n"));

    // The edges count their traffic into the shared store, and report the
    // memory of the tasks on their engines: the metrics page shows the
    // requests that went only through node2's edge, and every replica's
    // memory (the manager sees only its own node's).
    let requests = |page: &str| -> u64 {
        page.split("<p class=\"summary\">")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let metrics = |server: &Server| {
        let (status, page) = crate::support::dashboard_get(server, "/apps/spread/metrics");
        assert_eq!(status, 200, "{page}");
        page
    };
    let before = requests(&metrics(&server));
    for _ in 0..25 {
        assert_eq!(edge_get(1, 2, "spread").0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let page = metrics(&server);
        let counted = requests(&page) >= before + 25;
        let memory = ["web.1", "web.2", "web.3"]
            .iter()
            .all(|p| page.contains(&format!("{p}\n</text>")));
        if counted && memory {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge traffic or the nodes' memory not shown ({} requests before): {page}",
            before
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // A new release rolls out task by task; every request is answered.
    // Its release phase runs first, as a Swarm job, and is removed after.
    repo.write("public/index.html", "swarm v2\n");
    repo.write(
        "Procfile",
        "web: exec httpd -f -v -p \"$PORT\" -h /www\nrelease: echo \"release phase of v$((1 + 1)) on $(hostname)\"\n",
    );
    repo.commit(&server, "v2");
    let load = Load::start(server.http_port, "spread");
    let out = repo.push(&server, &server.admin, "spread");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("release phase of v2 on"),
        "{}",
        stderr(&out)
    );
    let services = stdout(&node(1, &["service", "ls", "--format", "{{.Name}}"]));
    assert!(!services.contains("gantry-oneoff-"), "{services}");
    server.wait_for_body("spread", "swarm v2", Duration::from_secs(30));
    all_answered(&load.finish(), "during the rolling deploy");
    let tasks = running_tasks(&server, "spread");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.iter().all(|(v, _)| v == "v2"), "{tasks:?}");

    // A second manager on the same database and swarm: the two race to
    // restart the app, and one deploy runs while the other is refused.
    let mut second = second_manager();
    second.launch();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| server.cli(&["ps:restart", "spread"]));
        let b = scope.spawn(|| second.cli(&["ps:restart", "spread"]));
        (a.join().expect("first"), b.join().expect("second"))
    });
    let said = format!("{}{}{}{}", stdout(&a), stderr(&a), stdout(&b), stderr(&b));
    assert!(
        a.status.success() != b.status.success(),
        "both or neither ran: {said}"
    );
    assert!(
        said.contains("another manager is deploying spread"),
        "{said}"
    );
    second.stop();
    server.wait_for_body("spread", "swarm v2", Duration::from_secs(10));

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

#[test]
fn a_node_joins_is_labelled_drained_activated_and_lost_while_the_app_answers() {
    let (_turn, _down, _) = harness(4);
    // node4 starts outside the swarm: it joins as a user would.
    let left = node(4, &["swarm", "leave", "--force"]);
    assert!(left.status.success(), "{}", stderr(&left));
    let gone = stdout(&node(
        1,
        &[
            "node",
            "ls",
            "--filter",
            "name=node4",
            "--format",
            "{{.ID}}",
        ],
    ));
    for id in gone.split_whitespace() {
        let _ = node(1, &["node", "rm", "--force", id]);
    }

    let registry = free_port();
    let server = swarm_server(registry);

    // node:token prints the one command; node4 runs it (and so gets its
    // mirror and its edge proxy); the others, in the swarm already, run it too.
    let join = join_command(&server);
    let line = join.join(" ");
    assert_eq!(join[..2], ["gantry", "node:join"], "{line}");
    assert!(
        line.contains("--manager 192.168.231.11:2377")
            && line.contains(&format!("--registry http://192.168.231.1:{registry}"))
            && line.contains("--database-url postgres://"),
        "{line}"
    );
    let agent_homes = tempfile::tempdir().expect("tempdir");
    let mut mirrors = Mirrors(Vec::new());
    for i in 1..=4 {
        mirrors
            .0
            .push(start_node_agent(agent_homes.path(), i, &join));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = stdout(&server.cli(&["nodes"]));
        let node4 = nodes.lines().find(|l| l.contains(" node4 "));
        if node4.is_some_and(|l| l.contains("192.168.231.14") && l.contains("ready")) {
            break;
        }
        assert!(Instant::now() < deadline, "node4 never joined:\n{nodes}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/index.html", "four nodes\n");
    repo.commit(&server, "v1");
    let out = repo.push(&server, &server.admin, "spread");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["ps:scale", "spread", "web=4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Swarm spreads them (a task whose node fails it once lands elsewhere
    // and stays: the re-spread below puts one on each node for certain).
    let deadline = Instant::now() + Duration::from_secs(120);
    while running_tasks(&server, "spread").len() < 4 {
        assert!(
            Instant::now() < deadline,
            "not scaled: {}",
            stdout(&server.cli(&["ps", "spread"]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    server.wait_for_body("spread", "four nodes", Duration::from_secs(10));
    wait_edge(4, "spread", 200, Some("four nodes\n"));

    // Labels: set, shown, removed; a bad one is refused with nothing changed.
    let out = server.cli(&["nodes:label", "node4", "gpu=1", "zone=b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("gpu=1,zone=b"), "{}", stdout(&out));
    let out = server.cli(&["nodes:label", "node4", "zone="]);
    assert!(stdout(&out).contains("gpu=1") && !stdout(&out).contains("zone"));
    let out = server.cli(&["nodes:label", "node4", "no label"]);
    assert!(!out.status.success());
    let out = server.cli(&["nodes:label", "node9", "gpu=1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no node \"node9\""),
        "{}",
        stderr(&out)
    );

    // Drain node2: its task moves, every request is answered meanwhile.
    let load = Load::start(server.http_port, "spread");
    let out = server.cli(&["nodes:drain", "node2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("node2 drained"), "{}", stdout(&out));
    let tasks = running_tasks(&server, "spread");
    assert!(
        tasks.len() == 4 && tasks.iter().all(|(_, n)| n != "node2"),
        "{tasks:?}"
    );
    let nodes = stdout(&server.cli(&["nodes"]));
    assert!(
        nodes
            .lines()
            .any(|l| l.contains(" node2 ") && l.contains("drain")),
        "{nodes}"
    );
    // Back: Swarm alone would leave node2 empty; activate spreads again,
    // one task on each node (node4's image through the mirror node:join runs).
    let out = server.cli(&["nodes:activate", "node2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-spread 1 service"),
        "{}",
        stdout(&out)
    );
    wait_spread(&server, "spread", &["node1", "node2", "node3", "node4"]);
    all_answered(&load.finish(), "during the drain and the re-spread");

    // node3 dies (its engine and everything on it): the app keeps
    // answering, and its task runs elsewhere once Swarm sees the node down.
    let load = Load::start(server.http_port, "spread");
    let pids = stdout(
        &Command::new("ip")
            .args(["netns", "pids", "gantry-node3"])
            .output()
            .expect("ip netns pids"),
    );
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = running_tasks(&server, "spread");
        if tasks.len() == 4 && tasks.iter().all(|(_, n)| n != "node3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node3's task never moved: {}",
            stdout(&server.cli(&["ps", "spread"]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    all_answered(&load.finish(), "while node3 was lost");
    drop(server);
    drop(mirrors);
}

/// Writes the host job `$GANTRY_HOME/jobs/NAME.run` with its `NAME.toml`.
fn host_job(server: &Server, name: &str, script: &str, toml: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.home.path().join("jobs");
    std::fs::create_dir_all(&dir).expect("mkdir jobs");
    let path = dir.join(format!("{name}.run"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write job");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join(format!("{name}.toml")), toml).expect("write toml");
}

/// Polls `jobs:runs JOB` until run #1 shows `status`; returns its log.
fn wait_job(server: &Server, job: &str, status: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let runs = stdout(&server.cli(&["jobs:runs", job]));
        if runs
            .lines()
            .any(|l| l.starts_with("#1") && l.contains(status))
        {
            return stdout(&server.cli(&["jobs:log", job, "1"]));
        }
        assert!(
            Instant::now() < deadline,
            "{job} #1 is not {status}:\n{runs}\n{}",
            stdout(&server.cli(&["jobs:log", job, "1"]))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Blocks (or, with `-D`, lets again) node `i`'s connections to the
/// harness's PostgreSQL.
fn cut_from_database(i: u32, op: &str) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("gantry-node{i}"),
            "iptables",
            op,
            "OUTPUT",
        ])
        .args(["-p", "tcp", "-d", "192.168.231.1", "--dport", "5433"])
        .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
        .output()
        .expect("iptables");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn work_that_requires_a_label_runs_on_a_node_that_has_it_and_is_taken_over_once() {
    let (_turn, _down, _) = harness(3);
    // node2 alone can build the app: it has the base image and the label.
    let load = Command::new("sh")
        .arg("-c")
        .arg("docker save gantry-examples/busybox:latest | docker -H unix:///tmp/gantry-cluster/n2/d.sock load -q")
        .output()
        .expect("load");
    assert!(load.status.success(), "{}", stderr(&load));
    let registry = free_port();
    let server = swarm_server_with(
        registry,
        "[apps.spread]\nbuild.requires = [\"builder=yes\"]\n",
    );
    host_job(
        &server,
        "hello",
        "echo \"hello from $GANTRY_NODE as $GANTRY_JOB#$GANTRY_RUN, WHO=$WHO\"",
        "requires = { builder = \"yes\" }\n",
    );
    host_job(&server, "gpu", "echo never", "requires = [\"gpu=1\"]\n");
    host_job(
        &server,
        "long",
        "echo \"start on $GANTRY_NODE\"; sleep 12; echo \"done on $GANTRY_NODE\"",
        "requires = [\"long=yes\"]\n",
    );
    let (_agent_homes, agents) = start_agents(&server, 3);
    let out = server.cli(&["nodes:label", "node2", "builder=yes", "long=yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["nodes:label", "node3", "long=yes"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The push is built on node2, pushed to the registry, and deployed.
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/index.html", "built on node2\n");
    repo.commit(&server, "v1");
    let out = repo.push(&server, &server.admin, "spread");
    let said = stderr(&out);
    assert!(out.status.success(), "{said}\n{}", server.log());
    assert!(
        said.contains("Build: Dockerfile, on a node labelled builder=yes")
            && said.contains("build of gantry/spread:v1: on node2")
            && said.contains("pushed gantry/spread:v1 to the cluster's registry"),
        "{said}"
    );
    server.wait_for_body("spread", "built on node2", Duration::from_secs(30));

    // A host job that requires the label runs there, with its parameters.
    let out = server.cli(&["jobs:run", "hello", "WHO=world"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = wait_job(&server, "hello", "succeeded", Duration::from_secs(30));
    assert!(
        log.contains("hello from node2 as hello#1, WHO=world"),
        "{log}"
    );

    // No node has gpu=1: the run waits, says why, and can be cancelled.
    let out = server.cli(&["jobs:run", "gpu"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = stdout(&server.cli(&["jobs:log", "gpu", "1"]));
        if log.contains("waiting for a node labelled gpu=1 (no node has these labels yet") {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = server.cli(&["jobs:cancel", "gpu", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = wait_job(&server, "gpu", "cancelled", Duration::from_secs(20));
    assert!(!log.contains("never"), "{log}");

    // A long run, and the node running it cut off from the database: it
    // stops the work once it cannot renew its lease, and the other node
    // with the label takes it over, once.
    let out = server.cli(&["jobs:run", "long"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let log = stdout(&server.cli(&["jobs:log", "long", "1"]));
        if let Some(node) = ["node2", "node3"]
            .into_iter()
            .find(|n| log.contains(&format!("start on {n}")))
        {
            break node;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (cut, other) = if first == "node2" {
        (2, "node3")
    } else {
        (3, "node2")
    };
    cut_from_database(cut, "-A");
    let log = wait_job(&server, "long", "succeeded", Duration::from_secs(60));
    cut_from_database(cut, "-D");
    assert!(
        log.contains(&format!(
            "{other} took it over (the lease of {first} ran out)"
        )) && log.contains(&format!("start on {other}"))
            && log.contains(&format!("done on {other}")),
        "{log}"
    );
    assert!(!log.contains(&format!("done on {first}")), "{log}");
    assert_eq!(log.matches("took it over").count(), 1, "{log}");
    drop(server);
    drop(agents);
}

/// The `run queued` lines of `job` in a serve's log.
fn queued_in(log: &str, job: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("run queued") && l.contains(&format!("job={job}")))
        .count()
}

#[test]
fn two_managers_elect_one_scheduler_and_the_other_takes_over_when_it_dies() {
    let (_turn, _down, _) = harness(1);
    let mut first = swarm_server(free_port());
    let mut second = second_manager();
    // The same job on both managers, due every second.
    for server in [&first, &second] {
        host_job(server, "tick", "echo tick", "schedule = \"* * * * * *\"\n");
    }
    // A run going on the first when the second starts is the first's: the
    // second's start does not mark it interrupted, nor can it cancel it.
    host_job(&first, "slow", "sleep 60", "");
    let out = first.cli(&["jobs:run", "slow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_job(&first, "slow", "running", Duration::from_secs(20));
    second.launch();
    std::thread::sleep(Duration::from_secs(5));
    let runs = stdout(&second.cli(&["jobs:runs", "slow"]));
    assert!(runs.contains("running"), "{runs}");
    let out = second.cli(&["jobs:cancel", "slow", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is another manager's"),
        "{}",
        stderr(&out)
    );
    let out = first.cli(&["jobs:cancel", "slow", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_job(&first, "slow", "cancelled", Duration::from_secs(20));

    // One leads and schedules; the other queues nothing.
    assert!(
        first.log().contains("this manager leads"),
        "{}",
        first.log()
    );
    assert!(!second.log().contains("this manager leads"));
    assert!(queued_in(&first.log(), "tick") >= 3, "{}", first.log());
    assert_eq!(queued_in(&second.log(), "tick"), 0, "{}", second.log());
    // One run per second between them, not two.
    let runs = stdout(&first.cli(&["jobs:runs", "tick"]));
    let mut seconds = std::collections::BTreeSet::new();
    let mut total = 0;
    for line in runs.lines().skip(1) {
        total += 1;
        // `#N  status  TRIGGER  queued YYYY-MM-DD HH:MM:SS ...`: the time.
        if let Some(time) = line
            .split_whitespace()
            .find(|w| w.len() == 8 && w.matches(':').count() == 2)
        {
            seconds.insert(time.to_owned());
        }
    }
    assert!(total >= 3 && seconds.len() == total, "{runs}");

    // The leader dies outright (it cannot resign): once its lease runs
    // out, the other takes over and schedules.
    first.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(second.log().contains("this manager leads") && queued_in(&second.log(), "tick") >= 2) {
        assert!(Instant::now() < deadline, "{}", second.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Stopped properly, a leader resigns, and the lead moves at once.
    let mut third = second_manager();
    host_job(&third, "tick", "echo tick", "schedule = \"* * * * * *\"\n");
    third.launch();
    second.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !third.log().contains("this manager leads") {
        assert!(Instant::now() < deadline, "{}", third.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cmd` run by `sh -c` inside node `i`'s namespace: its stdout.
fn in_node(i: u32, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("gantry-node{i}"), "sh", "-c", cmd])
        .output()
        .expect("ip netns exec");
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn a_certificate_is_ordered_once_and_every_node_serves_it() {
    let (_turn, _down, _) = harness(3);
    // Pebble asks node2's edge for the HTTP-01 answer: the name resolves
    // there, and the manager's own proxy is not on that address at all.
    let pebble = crate::acme::Pebble::start(80, 443, "192.168.231.12", 3600);
    let registry = free_port();
    let server = swarm_server_with(
        registry,
        &format!(
            "[acme]\nemail = \"ops@example.test\"\ndirectory = \"https://127.0.0.1:{}/dir\"\nca_root = \"{}\"\n",
            pebble.acme_port,
            pebble.ca.display()
        ),
    );
    let (_agent_homes, agents) = start_agents(&server, 3);
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/index.html", "over https\n");
    repo.commit(&server, "v1");
    let out = repo.push(&server, &server.admin, "spread");
    assert!(out.status.success(), "{}", stderr(&out));
    for at in 1..=3 {
        wait_edge(at, "spread", 200, Some("over https\n"));
    }

    let domain = "spread.example.test";
    let out = server.cli(&["domains:add", "spread", domain]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = wait_job(
        &server,
        "gantry.certs",
        "succeeded",
        Duration::from_secs(60),
    );
    assert_eq!(log.matches("ordering a certificate").count(), 1, "{log}");
    let runs = stdout(&server.cli(&["jobs:runs", "gantry.certs"]));
    assert_eq!(runs.lines().skip(1).count(), 1, "ordered once: {runs}");

    // Every node's edge serves it, verified against Pebble's root: the
    // very certificate the manager keeps.
    let root = pebble.root();
    let kept = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(server.home.path().join(format!("certs/{domain}.pem")))
        .output()
        .expect("openssl");
    let kept = stdout(&kept);
    assert!(kept.starts_with("serial="), "{kept}");
    for i in 1..=3 {
        let address = format!("192.168.231.1{i}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &format!("gantry-node{i}")])
                .args(["curl", "-sS", "-m", "5", "--cacert"])
                .arg(&root)
                .args(["--resolve", &format!("{domain}:443:{address}")])
                .arg(format!("https://{domain}/"))
                .output()
                .expect("curl");
            if out.status.success() {
                break stdout(&out);
            }
            assert!(
                Instant::now() < deadline,
                "node{i}'s edge: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(body, "over https\n");
        let served = in_node(
            i,
            &format!(
                "openssl s_client -connect {address}:443 -servername {domain} </dev/null 2>/dev/null | openssl x509 -noout -serial"
            ),
        );
        assert_eq!(served, kept, "node{i}");
    }
    drop(server);
    drop(agents);
}

#[test]
fn an_app_with_storage_runs_where_its_volume_is_keeps_its_data_and_runs_one_offs() {
    let (_turn, _down, _) = harness(3);
    let server = swarm_server(free_port());
    let (_agent_homes, agents) = start_agents(&server, 3);
    let repo = Repo::from_example(&server, "hello-docker");
    repo.write("public/version", "v1\n");
    repo.commit(&server, "v1");
    let out = repo.push(&server, &server.admin, "keep");
    assert!(out.status.success(), "{}", stderr(&out));

    // A volume lives on one machine: the app goes where it is (the
    // manager's node), all its tasks with it.
    let out = server.cli(&["storage:mount", "keep", "data:/www/data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let volumes = stdout(&node(1, &["volume", "ls", "--format", "{{.Name}}"]));
    assert!(volumes.contains("gantry-vol-keep-data"), "{volumes}");
    let out = server.cli(&["ps:scale", "keep", "web=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_spread(&server, "keep", &["node1", "node1"]);

    // Each release's phase appends to the volume; the data outlives deploys.
    repo.write(
        "Procfile",
        "web: exec httpd -f -v -p \"$PORT\" -h /www\nrelease: cat /www/version >> /www/data/log\n",
    );
    for version in ["v2", "v3"] {
        repo.write("public/version", &format!("{version}\n"));
        repo.commit(&server, version);
        let out = repo.push(&server, &server.admin, "keep");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            crate::support::http_get(server.http_port, "keep.localhost", "/data/log");
        if status == 200 && body == "v2\nv3\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let tasks = running_tasks(&server, "keep");
    assert!(
        tasks.len() == 2 && tasks.iter().all(|(v, n)| v == "v3" && n == "node1"),
        "{tasks:?}"
    );
    // `run` works on a swarm: attached, on the machine that has the image.
    let out = server.cli(&["run", "keep", "--", "sh", "-c", "cat /www/version; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v3\n");
    // Destroyed with its volumes, the data goes too, once its tasks are
    // gone (a task stopping still holds it).
    let out = server.cli(&["apps:destroy", "keep", "--force", "--volumes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let volumes = stdout(&node(1, &["volume", "ls", "--format", "{{.Name}}"]));
    assert!(!volumes.contains("gantry-vol-keep-data"), "{volumes}");
    drop(server);
    drop(agents);
}
