//! Store tests. They run on SQLite, and also on Postgres when
//! `GANTRY_TEST_POSTGRES_URL` names a database (CI starts one).

use super::*;
use crate::names::{AppName, KeyName};
use crate::time::now_ms;

/// Every database these tests should run against, each new and empty.
async fn stores() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let mut out = vec![(
        "sqlite".to_string(),
        Store::connect(&url).await.expect("sqlite"),
        Some(dir),
    )];
    if let Some(url) = fresh_postgres_database().await {
        out.push((
            "postgres".to_string(),
            Store::connect(&url).await.expect("postgres"),
            None,
        ));
    }
    out
}

/// A new database on the server named by `GANTRY_TEST_POSTGRES_URL`, so tests
/// running at the same time never see each other's rows.
pub async fn fresh_postgres_database() -> Option<String> {
    let base = std::env::var("GANTRY_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to GANTRY_TEST_POSTGRES_URL");
    let name = format!("gantry_test_{}_{}", std::process::id(), rand_suffix());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    Some(format!("{prefix}/{name}"))
}

fn rand_suffix() -> u32 {
    use rand::RngExt;
    rand::rng().random::<u32>()
}

fn app(name: &str) -> AppName {
    AppName::parse(name).expect("app name")
}

fn key(name: &str, public_key: &str, role: Role, apps: &[&str]) -> KeyRecord {
    KeyRecord {
        name: KeyName::parse(name).expect("key name"),
        public_key: public_key.into(),
        fingerprint: format!("SHA256:{name}"),
        role,
        apps: apps.iter().map(|a| app(a)).collect(),
    }
}

fn release(app_name: &str, sha: &str) -> Release {
    Release {
        app: app(app_name),
        version: 0,
        status: ReleaseStatus::Building,
        image: String::new(),
        commit_sha: sha.into(),
        commit_message: "msg".into(),
        commit_author: "A <a@example.com>".into(),
        port: 5000,
        created_by: "alice".into(),
        created_at: 0,
        build_ms: 0,
        build_log: String::new(),
        error: String::new(),
        config: "v1:sealed".into(),
        kind: ReleaseKind::Deploy,
        description: format!("Deploy {sha}"),
        image_id: String::new(),
        image_size: 0,
        formation: String::new(),
        manifest: String::new(),
    }
}

#[tokio::test]
async fn keys_round_trip_and_refuse_duplicates() {
    for (db, store, _dir) in stores().await {
        let alice = key("alice", "ssh-ed25519 AAAA1", Role::Admin, &[]);
        let bob = key(
            "bob",
            "ssh-ed25519 AAAA2",
            Role::Deployer,
            &["web1", "web2"],
        );
        store.add_key(&alice).await.expect("add");
        store.add_key(&bob).await.expect("add");
        assert_eq!(store.key_count().await.expect("count"), 2, "{db}");
        let dup_name = key("alice", "ssh-ed25519 AAAA3", Role::Admin, &[]);
        assert!(
            matches!(
                store.add_key(&dup_name).await,
                Err(StoreError::Duplicate(_))
            ),
            "{db}"
        );
        let dup_key = key("carol", "ssh-ed25519 AAAA1", Role::Admin, &[]);
        assert!(
            matches!(store.add_key(&dup_key).await, Err(StoreError::Duplicate(_))),
            "{db}"
        );

        let found = store
            .find_key("ssh-ed25519 AAAA2")
            .await
            .expect("find")
            .expect("bob");
        assert_eq!(found, bob, "{db}");
        assert!(found.may_manage(&app("web2")) && !found.may_manage(&app("other")));
        assert!(store
            .find_key("ssh-ed25519 nope")
            .await
            .expect("find")
            .is_none());

        let names: Vec<String> = store
            .list_keys()
            .await
            .expect("list")
            .iter()
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(names, ["alice", "bob"], "{db}");
        store.remove_key(&bob.name).await.expect("remove");
        assert!(
            matches!(
                store.remove_key(&bob.name).await,
                Err(StoreError::NotFound(_))
            ),
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_releases() {
    for (db, store, _dir) in stores().await {
        let web = app("web");
        store.create_app(&web).await.expect("create");
        assert!(
            matches!(store.create_app(&web).await, Err(StoreError::Duplicate(_))),
            "{db}"
        );
        let record = store.get_app(&web).await.expect("get").expect("web");
        assert!(record.deploys("refs/heads/main") && record.deploys("refs/heads/master"));
        assert!(!record.deploys("refs/heads/feature") && !record.deploys("refs/tags/main"));
        assert!(
            store
                .current_release(&web)
                .await
                .expect("current")
                .is_none(),
            "{db}"
        );

        let v1 = store
            .begin_release(&release("web", "aaa"))
            .await
            .expect("v1");
        let v2 = store
            .begin_release(&release("web", "bbb"))
            .await
            .expect("v2");
        assert_eq!((v1, v2), (1, 2), "{db}");

        let mut done = store.release(&web, v1).await.expect("get").expect("v1");
        done.status = ReleaseStatus::Succeeded;
        done.image = "gantry/web:v1".into();
        done.port = 8000;
        done.build_log = "built".into();
        done.image_id = "sha256:abc".into();
        done.image_size = 4_100_000;
        store.finish_release(&done).await.expect("finish");
        store.set_current_release(&web, v1).await.expect("current");
        let current = store
            .current_release(&web)
            .await
            .expect("current")
            .expect("v1");
        assert_eq!(
            (current.version, current.port, current.image.as_str()),
            (1, 8000, "gantry/web:v1"),
            "{db}"
        );

        // v2 was left building, as after a crash mid-deploy.
        assert_eq!(
            store.fail_interrupted_releases().await.expect("fail"),
            1,
            "{db}"
        );
        let v2 = store.release(&web, 2).await.expect("get").expect("v2");
        assert_eq!(v2.status, ReleaseStatus::Failed, "{db}");
        assert!(v2.error.contains("interrupted"), "{db}");

        let versions: Vec<i64> = store
            .list_releases(&web)
            .await
            .expect("list")
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, [2, 1], "{db}");

        store.delete_app(&web).await.expect("delete");
        assert!(store.get_app(&web).await.expect("get").is_none(), "{db}");
        assert!(
            store.list_releases(&web).await.expect("list").is_empty(),
            "{db}"
        );
        assert!(
            matches!(store.delete_app(&web).await, Err(StoreError::NotFound(_))),
            "{db}"
        );

        // A new app of the same name starts again at v1, and releases made
        // at the same moment (a push racing a config:set) get distinct numbers.
        store.create_app(&web).await.expect("create again");
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.begin_release(&release("web", &format!("{i}"))).await },
                )
            })
            .collect();
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(
                task.await
                    .expect("join")
                    .unwrap_or_else(|e| panic!("{db}: {e}")),
            );
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<i64>>(), "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_numbered_per_job_even_when_queued_at_once() {
    for (db, store, _dir) in stores().await {
        let store = std::sync::Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..30 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let job = if i % 3 == 0 { "other" } else { "busy" };
                store
                    .queue_run(job, "manual", "test", "", "", None)
                    .await
                    .map(|run| (run.job, run.number))
            }));
        }
        let mut busy = Vec::new();
        for task in tasks {
            let (job, number) = task
                .await
                .expect("join")
                .unwrap_or_else(|e| panic!("{db}: {e}"));
            if job == "busy" {
                busy.push(number);
            }
        }
        busy.sort_unstable();
        assert_eq!(busy, (1..=20).collect::<Vec<i64>>(), "{db}");

        // Start, finish, interrupt, prune.
        store.start_run("busy", 1).await.expect("start");
        store
            .finish_run("busy", 1, RunStatus::Failed, Some(2), "exit code 2")
            .await
            .expect("finish");
        store.start_run("busy", 2).await.expect("start");
        // Another manager's running run is its own: not interrupted here.
        let other = Store::clone(&store).for_runner("host2:/var/lib/gantry");
        let theirs = other
            .queue_run("elsewhere", "manual", "test", "", "", None)
            .await
            .expect("queue");
        other
            .start_run("elsewhere", theirs.number)
            .await
            .expect("start");
        let interrupted = store.interrupt_running_runs().await.expect("interrupt");
        assert_eq!(interrupted.len(), 1, "{db}");
        let run = store
            .run("elsewhere", theirs.number)
            .await
            .expect("run")
            .expect("exists");
        assert_eq!(run.status, RunStatus::Running, "{db}");
        assert_eq!(
            other
                .interrupt_running_runs()
                .await
                .expect("interrupt")
                .len(),
            1,
            "{db}"
        );
        let run = store.run("busy", 2).await.expect("run").expect("exists");
        assert_eq!(run.status, RunStatus::Interrupted, "{db}");
        let run = store.run("busy", 1).await.expect("run").expect("exists");
        assert_eq!(
            (run.status, run.exit_code),
            (RunStatus::Failed, Some(2)),
            "{db}"
        );
        // Young runs are kept whatever the count (whichever keeps more).
        let cutoff = now_ms() - 24 * 3600 * 1000;
        assert!(
            store.prune_runs(1, cutoff).await.expect("prune").is_empty(),
            "{db}"
        );
        let pruned = store.prune_runs(18, now_ms() + 1).await.expect("prune");
        assert_eq!(
            pruned,
            [("busy".to_string(), 1), ("busy".to_string(), 2)],
            "{db}"
        );
        assert_eq!(
            store.list_runs("busy", 100).await.expect("list").len(),
            18,
            "{db}"
        );
        let stats = store.run_stats().await.expect("stats");
        assert!(
            stats.iter().any(|s| s.job == "other" && s.count == 10),
            "{db}: {stats:?}"
        );
        // Pruned runs still count in the totals (a Prometheus counter).
        let count = |status: &str| {
            stats
                .iter()
                .find(|s| s.job == "busy" && s.status == status)
                .map_or(0, |s| s.count)
        };
        assert_eq!(
            (count("failed"), count("interrupted")),
            (1, 1),
            "{db}: {stats:?}"
        );
    }
}

#[test]
fn redacts_database_passwords() {
    assert_eq!(
        redact("postgres://gantry:s3cret@db/gantry"),
        "postgres://gantry:***@db/gantry"
    );
    assert_eq!(
        redact("sqlite:///var/lib/gantry/gantry.db"),
        "sqlite:///var/lib/gantry/gantry.db"
    );
    assert_eq!(redact("postgres://gantry@db/x"), "postgres://gantry@db/x");
}

#[tokio::test]
async fn published_routes_grow_a_version_and_read_back() {
    for (kind, store, _dir) in stores().await {
        assert_eq!(store.published_routes().await.expect(&kind), None, "{kind}");
        assert_eq!(
            store.publish_routes("{\"routes\":[]}").await.expect(&kind),
            1
        );
        assert_eq!(
            store.publish_routes("{\"routes\":[1]}").await.expect(&kind),
            2
        );
        assert_eq!(
            store.published_routes().await.expect(&kind),
            Some((2, "{\"routes\":[1]}".to_owned())),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn one_deploy_of_an_app_at_a_time_across_managers() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    // Two managers: two stores on one database.
    let first = Store::connect(&url).await.expect("first");
    let second = Store::connect(&url).await.expect("second");
    let lease = first
        .try_lock_deploy("shop")
        .await
        .expect("lock")
        .expect("free");
    assert!(second
        .try_lock_deploy("shop")
        .await
        .expect("lock")
        .is_none());
    assert!(second
        .try_lock_deploy("blog")
        .await
        .expect("lock")
        .is_some());
    drop(lease);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if second
            .try_lock_deploy("shop")
            .await
            .expect("lock")
            .is_some()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn work_goes_to_a_node_with_the_labels_and_a_lapsed_claim_is_taken_over_once() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let store = Store::connect(&url).await.expect("store");
    let labels = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let short = std::time::Duration::from_millis(300);
    let long = std::time::Duration::from_secs(30);
    let id = store
        .enqueue_work(
            "job",
            "nightly#1",
            &labels(&["gpu=1"]),
            "{}",
            b"#!/bin/sh\n",
        )
        .await
        .expect("enqueue");

    // A node without the label gets nothing; one with it (and more) does.
    assert!(store
        .claim_work("node1", &labels(&["zone=b"]), long)
        .await
        .expect("claim")
        .is_none());
    let first = store
        .claim_work("node2", &labels(&["gpu=1", "zone=b"]), short)
        .await
        .expect("claim")
        .expect("node2 may run it");
    assert_eq!(
        (first.id, first.fence, first.taken_from.as_str()),
        (id, 1, "")
    );
    assert_eq!(first.input, b"#!/bin/sh\n");
    assert!(store.log_work(id, 1, "one").await.expect("log"));
    // Held while renewed: nobody else claims it.
    assert_eq!(
        store.renew_work(id, 1, short).await.expect("renew"),
        Renewal::Held
    );
    assert!(store
        .claim_work("node3", &labels(&["gpu=1"]), long)
        .await
        .expect("claim")
        .is_none());

    // node2 goes quiet past its lease: two nodes race for it; one wins.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let gpu = labels(&["gpu=1"]);
    let (a, b) = tokio::join!(
        store.claim_work("node3", &gpu, long),
        store.claim_work("node4", &gpu, long),
    );
    let won: Vec<_> = [a.expect("a"), b.expect("b")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let second = &won[0];
    assert_eq!((second.fence, second.taken_from.as_str()), (2, "node2"));

    // node2, back, is fenced out: no renewal, no log, no finish.
    assert_eq!(
        store.renew_work(id, 1, short).await.expect("renew"),
        Renewal::Lost
    );
    assert!(!store.log_work(id, 1, "late").await.expect("log"));
    assert!(!store
        .finish_work(id, 1, "done", Some(0), "")
        .await
        .expect("finish"));
    assert!(store.log_work(id, 2, "two").await.expect("log"));
    assert!(store
        .finish_work(id, 2, "done", Some(3), "exit code 3")
        .await
        .expect("finish"));
    let state = store.work_state(id).await.expect("state");
    assert_eq!((state.state.as_str(), state.code), ("done", Some(3)));
    assert!(
        ["node3", "node4"].contains(&state.worker.as_str()),
        "{state:?}"
    );
    let log: Vec<String> = store
        .work_log_since(id, 0)
        .await
        .expect("log")
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(log, ["one", "two"]);
    // Finished is finished: nothing claims it again.
    assert!(store
        .claim_work("node5", &labels(&["gpu=1"]), long)
        .await
        .expect("claim")
        .is_none());

    // Cancelling: a queued item ends at once; a running one is told on renewal.
    let queued = store
        .enqueue_work("build", "build", &labels(&["arch=arm64"]), "{}", b"")
        .await
        .expect("enqueue");
    store
        .cancel_work(queued, "cancelled")
        .await
        .expect("cancel");
    let state = store.work_state(queued).await.expect("state");
    assert!(
        state.is_finished() && state.state == "cancelled",
        "{state:?}"
    );
    let running = store
        .enqueue_work("build", "build", &[], "{}", b"")
        .await
        .expect("enqueue");
    let claim = store
        .claim_work("node1", &[], long)
        .await
        .expect("claim")
        .expect("no labels needed");
    assert_eq!(claim.id, running);
    store
        .cancel_work(running, "cancelled")
        .await
        .expect("cancel");
    assert_eq!(
        store.renew_work(running, 1, long).await.expect("renew"),
        Renewal::CancelAsked
    );
}

#[tokio::test]
async fn a_singleton_has_one_leader_and_a_new_term_fences_the_old_one() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let store = Store::connect(&url).await.expect("store");
    let short = std::time::Duration::from_millis(300);
    let term = store.lead("scheduler", "a", short).await.expect("lead");
    assert_eq!(term, Some(1));
    assert_eq!(
        store.lead("scheduler", "b", short).await.expect("lead"),
        None
    );
    // Renewing keeps the term.
    assert_eq!(
        store.lead("scheduler", "a", short).await.expect("lead"),
        Some(1)
    );
    assert!(store.leads("scheduler", "a", 1).await.expect("leads"));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        !store.leads("scheduler", "a", 1).await.expect("leads"),
        "lapsed"
    );
    assert_eq!(
        store.lead("scheduler", "b", short).await.expect("lead"),
        Some(2)
    );
    assert!(!store.leads("scheduler", "a", 1).await.expect("leads"));
    assert!(store.leads("scheduler", "b", 2).await.expect("leads"));
    // A write fenced by a's old term is refused; b's goes in.
    let fenced = |holder, term| {
        Some(Fenced {
            election: "scheduler",
            holder,
            term,
        })
    };
    let refused = store
        .queue_run("tick", "schedule", "* * * * *", "", "", fenced("a", 1))
        .await
        .expect_err("a former leader queued a run");
    assert!(refused.to_string().contains("no longer leads"), "{refused}");
    let run = store
        .queue_run("tick", "schedule", "* * * * *", "", "", fenced("b", 2))
        .await
        .expect("the leader queues");
    assert_eq!(run.number, 1, "the refused one took no number");
    // a, back, cannot take it while b's lease runs; b resigns, a takes a new term.
    assert_eq!(
        store.lead("scheduler", "a", short).await.expect("lead"),
        None
    );
    store.resign("scheduler", "b").await.expect("resign");
    assert_eq!(
        store.lead("scheduler", "a", short).await.expect("lead"),
        Some(3)
    );
    // On SQLite there is no election.
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .expect("sqlite");
    assert!(sqlite.lead("scheduler", "a", short).await.is_err());
}

#[tokio::test]
async fn each_source_keeps_its_own_traffic_rows_and_a_minute_adds_them_up() {
    for (kind, store, _dir) in stores().await {
        let sample = |requests: i64, memory: &[(&str, i64)]| TrafficMinute {
            minute: 1000,
            requests,
            errors: 1,
            buckets: vec![requests, 0, 0],
            replicas: 3,
            memory: memory.iter().map(|(p, b)| (p.to_string(), *b)).collect(),
            received: requests * 10,
            sent: requests * 100,
        };
        // serve samples twice in the minute, an edge once.
        store
            .add_traffic("shop", "m:/srv", &sample(5, &[("web.1", 7)]))
            .await
            .expect(&kind);
        store
            .add_traffic("shop", "m:/srv", &sample(2, &[("web.1", 8)]))
            .await
            .expect(&kind);
        let mut edge = sample(4, &[("web.2", 9)]);
        edge.replicas = 0;
        store
            .add_traffic("shop", "n2:/srv", &edge)
            .await
            .expect(&kind);
        let minutes = store.traffic_since("shop", 999).await.expect(&kind);
        assert_eq!(minutes.len(), 1, "{kind}");
        let m = &minutes[0];
        assert_eq!((m.requests, m.errors), (11, 3), "{kind}");
        assert_eq!((m.received, m.sent), (110, 1100), "{kind}");
        assert_eq!(m.buckets, vec![11, 0, 0], "{kind}");
        assert_eq!(m.replicas, 3, "{kind}");
        // serve's latest reading of web.1, the edge's of web.2.
        assert_eq!(m.memory.get("web.1"), Some(&8), "{kind}");
        assert_eq!(m.memory.get("web.2"), Some(&9), "{kind}");
        assert_eq!(store.requests_in(1000).await.expect(&kind), 11, "{kind}");
        assert!(store
            .traffic_since("shop", 1001)
            .await
            .expect(&kind)
            .is_empty());
    }
}
