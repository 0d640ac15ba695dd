//! `gantry serve`: opens the state, checks Docker, binds the SSH, HTTP and control
//! listeners, restores running apps' routes, and runs until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;

mod control;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context::{check_docker, Gantry};
use crate::git;
use crate::names::{AppName, KeyName};
use crate::store::{Role, Store};

/// Runs the server until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if crate::control::client::connect(&config.socket_path())
        .await
        .is_some()
    {
        anyhow::bail!(
            "another gantry serve is already running with home {} (its socket {} answers)",
            config.home.display(),
            config.socket_path().display()
        );
    }
    let gantry = crate::setup::open(config).await?;
    check_docker(&gantry.docker).await?;
    let swarm = gantry.config.runtime == crate::config::RuntimeKind::Swarm;
    gantry
        .runtime
        .prepare()
        .await
        .with_context(|| match swarm {
            true => "cannot run apps on the swarm".to_owned(),
            false => format!(
                "cannot create the Docker network {}",
                gantry.config.docker_network
            ),
        })?;
    // The cluster's registry: every release's image goes there before it
    // runs on the swarm. It lives as long as serve does.
    let _registry = match swarm {
        true => Some(start_registry(&gantry.config).await?),
        false => None,
    };

    let config = &gantry.config;
    for dir in [config.repos_dir(), config.run_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    restrict(&config.run_dir(), 0o700)?;
    sweep_scratch(&config.run_dir());
    git::repos::install_hooks(config).context("cannot write the git hooks")?;
    let host_key = crate::ssh::load_or_create_host_key(&config.home.join("ssh_host_ed25519_key"))?;
    let first_key = register_first_key(&gantry.store).await?;

    let ssh_listener = TcpListener::bind(config.ssh_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for SSH on {} (pass --ssh-listen ADDR)",
                config.ssh_listen
            )
        })?;
    // The dashboard listens on loopback; the proxy routes gantry.DOMAIN to it.
    let web_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the dashboard on 127.0.0.1")?;
    let web_addr = web_listener.local_addr()?;
    let socket_path = config.socket_path();
    let _ = std::fs::remove_file(&socket_path);
    let control_listener = UnixListener::bind(&socket_path)
        .with_context(|| format!("cannot create the control socket {}", socket_path.display()))?;
    restrict(&socket_path, 0o600)?;
    // Which serve answers on the socket: `gantry upgrade` waits for a new one.
    let boot = format!("{} {}\n", std::process::id(), crate::time::now_ms());
    std::fs::write(config.boot_path(), boot)
        .with_context(|| format!("cannot write {}", config.boot_path().display()))?;

    // No push can be building yet: the SSH endpoint is not serving.
    if let Ok(apps) = gantry.store.list_apps().await {
        let names: Vec<AppName> = apps.into_iter().map(|a| a.name).collect();
        crate::build::buildpack::remove_stale_builders(&gantry.docker, &names).await;
    }

    crate::certs::prepare(&gantry);
    // The proxy is a process of its own: it keeps serving while `serve`
    // restarts. Start it if it is not running, with the routes it saved.
    let proxy_pid = if gantry.config.proxy_service {
        crate::routing::wait_for_service(&gantry.config).await
    } else {
        crate::routing::ensure_running(&gantry.routing, &gantry.config).await
    }
    .with_context(|| {
        format!(
            "cannot run the proxy on {} and {} (pass --http-listen ADDR / --https-listen ADDR)",
            gantry.config.http_listen, gantry.config.https_listen
        )
    })?;
    crate::certs::load_all(&gantry).await;
    let gantry = Arc::new(gantry);
    // Runs a crash left `running` are marked interrupted before serve says
    // it is up, so nobody reads a stale state.
    gantry.set_serving();
    crate::jobs::resume(&gantry).await;
    print_banner(&gantry, &ssh_listener, first_key.as_deref(), proxy_pid);

    let shutdown = CancellationToken::new();
    // SSH stops accepting first; pushes in flight finish before the rest stops.
    let ssh_stop = CancellationToken::new();
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::channel::<std::path::PathBuf>(1);
    let mut tasks = tokio::task::JoinSet::new();
    gantry
        .routing
        .set(
            &gantry.config.dashboard_host,
            "gantry dashboard",
            vec![web_addr],
            false,
        )
        .await;
    tasks.spawn(crate::web::serve(
        web_listener,
        gantry.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(crate::ssh::serve(
        ssh_listener,
        gantry.clone(),
        host_key,
        ssh_stop.clone(),
        shutdown.child_token(),
    ));
    {
        let (gantry, token) = (gantry.clone(), shutdown.child_token());
        tasks.spawn(async move {
            control::serve(control_listener, gantry, restart_tx, token).await;
            Ok(())
        });
    }
    {
        let gantry = gantry.clone();
        tokio::spawn(async move {
            // Until every app is restored, the proxy keeps the routes it
            // saved; then the mirror is the truth, and replaces them.
            while !crate::deploy::restore(&gantry).await {
                tracing::warn!(
                    "restore incomplete; the proxy keeps its saved routes; retrying in 10 s"
                );
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
            gantry.routing.take_over().await;
            // Add-ons Docker did not restart (a new machine after a restore).
            crate::addons::ensure_all(&gantry).await;
        });
    }
    let leader = {
        let (gantry, token) = (gantry.clone(), shutdown.child_token());
        tokio::spawn(async move { gantry.leader.keep(&gantry.store, token).await })
    };
    tokio::spawn(crate::jobs::scheduler::run_forever(
        gantry.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(prune_daily(gantry.clone(), shutdown.child_token()));
    {
        let (gantry, token) = (gantry.clone(), shutdown.child_token());
        tokio::spawn(async move {
            let processes = crate::traffic::RuntimeProcesses(gantry.runtime.clone());
            let source = gantry.config.manager_id();
            crate::traffic::sample_forever(
                &gantry.store,
                &gantry.routing,
                &source,
                &processes,
                token,
            )
            .await;
        });
    }
    {
        let (gantry, token) = (gantry.clone(), shutdown.child_token());
        tokio::spawn(async move {
            crate::routing::supervise(&gantry.routing, &gantry.config, token).await;
        });
    }
    tokio::spawn(crate::deploy::restore::reconcile_forever(
        gantry.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(crate::deploy::watch::follow_restarts(
        gantry.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(crate::deploy::services::follow_tasks(
        gantry.clone(),
        shutdown.child_token(),
    ));
    if swarm {
        tokio::spawn(crate::edge::publish_forever(
            gantry.clone(),
            shutdown.child_token(),
        ));
        tokio::spawn(crate::worker::publish_nodes_forever(
            gantry.clone(),
            shutdown.child_token(),
        ));
        start_worker(&gantry, shutdown.child_token()).await;
        tokio::spawn(crate::certs::follow_shared_forever(
            gantry.clone(),
            shutdown.child_token(),
        ));
    }
    tokio::spawn(crate::deploy::watch::follow_out_of_memory(
        gantry.clone(),
        shutdown.child_token(),
    ));

    let mut restart_on = None;
    let outcome = tokio::select! {
        _ = crate::signal::shutdown_signal() => Ok(()),
        Some(exe) = restart_rx.recv() => {
            restart_on = Some(exe);
            Ok(())
        }
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped unexpectedly")),
            Ok(Err(err)) => Err(anyhow::Error::from(err).context("a listener failed")),
            Err(err) => Err(anyhow::Error::from(err).context("a listener panicked")),
        },
    };
    tracing::info!("shutting down; app containers and the proxy keep running");
    // New pushes are refused from here; those in flight finish (their hooks
    // still reach the control socket) before anything else stops.
    ssh_stop.cancel();
    wait_for_pushes(&gantry).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // Resigned, so another manager takes the lead at once.
    let _ = leader.await;
    let _ = std::fs::remove_file(&socket_path);
    gantry.store.close().await;
    if let Some(exe) = restart_on {
        outcome?;
        return Err(restart(&exe));
    }
    outcome
}

/// How long a shutdown or upgrade waits for pushes in flight.
const PUSH_DRAIN: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until no push is in flight (up to [`PUSH_DRAIN`]).
async fn wait_for_pushes(gantry: &Gantry) {
    let started = std::time::Instant::now();
    let mut told = None;
    loop {
        let live = gantry.pushes.live();
        if live == 0 {
            return;
        }
        if started.elapsed() > PUSH_DRAIN {
            tracing::warn!(
                live,
                "pushes still in flight after 10 minutes; stopping anyway"
            );
            return;
        }
        if told != Some(live) {
            tracing::info!(live, "waiting for the pushes in flight to finish");
            told = Some(live);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Replaces this process with serve on `exe`, with the same arguments and
/// environment (the pid stays: a service manager sees no exit). Returns only
/// if that failed.
fn restart(exe: &Path) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    tracing::info!(exe = %exe.display(), "restarting serve on the new binary");
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::Error::from(err).context(format!("cannot restart serve on {}", exe.display()))
}

/// Prunes every app's old images once a day (deploys prune their own app too).
async fn prune_daily(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)) => {}
        }
        match crate::artifacts::prune_dangling(&gantry.docker).await {
            Ok(0) => {}
            Ok(freed) => tracing::info!(
                "pruned dangling build layers, freed {}",
                crate::artifacts::human_bytes(freed)
            ),
            Err(err) => tracing::warn!(error = %err, "cannot prune dangling images"),
        }
        match crate::artifacts::prune_build_cache(&gantry.docker).await {
            Ok(0) => {}
            Ok(freed) => tracing::info!(
                "pruned BuildKit cache unused for a week, freed {}",
                crate::artifacts::human_bytes(freed)
            ),
            Err(err) => tracing::warn!(error = %err, "cannot prune the build cache"),
        }
        let Ok(apps) = gantry.store.list_apps().await else {
            continue;
        };
        for app in apps {
            let _lock = gantry.locks.get(&app.name).lock_owned().await;
            match crate::artifacts::prune(&gantry, &app.name).await {
                Ok(report) => {
                    if let Some(summary) = report.summary() {
                        tracing::info!(app = %app.name, "{summary}");
                    }
                }
                Err(err) => tracing::warn!(app = %app.name, error = %err, "daily prune failed"),
            }
        }
    }
}

/// On the very first start, registers the user's own SSH key as admin.
async fn register_first_key(store: &Store) -> anyhow::Result<Option<String>> {
    if store.key_count().await? > 0 {
        return Ok(None);
    }
    let Some(home) = std::env::var_os("HOME") else {
        return Ok(None);
    };
    let ssh_dir = Path::new(&home).join(".ssh");
    for name in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
        let path = ssh_dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(key) = crate::access::keys::parse_public_key(&text) else {
            continue;
        };
        let record =
            crate::access::keys::record(KeyName::parse("admin")?, &key, Role::Admin, Vec::new())?;
        store.add_key(&record).await?;
        return Ok(Some(path.display().to_string()));
    }
    Ok(None)
}

fn print_banner(gantry: &Gantry, ssh: &TcpListener, first_key: Option<&str>, proxy_pid: u32) {
    let config = &gantry.config;
    let ssh_addr = ssh.local_addr().map_or(config.ssh_listen, |a| a);
    let http_addr = config.http_listen;
    let example = crate::names::AppName::parse("myapp").ok();
    let (remote, url) = example
        .map(|app| {
            (
                config.git_remote(&app).replace("myapp", "APP"),
                config.app_url(&app).replace("myapp", "APP"),
            )
        })
        .unwrap_or_default();
    println!("gantry {} is running", env!("CARGO_PKG_VERSION"));
    println!("  home:      {}", config.home.display());
    println!(
        "  database:  {}",
        crate::store::redact(&config.database_url)
    );
    println!("  git (ssh): {ssh_addr}");
    println!("  apps:      http://{http_addr}, as {url}");
    println!(
        "  https:     https://{}{}",
        config.https_listen,
        if config.domain == "localhost" {
            " (certificates from a local development CA for *.localhost; gantry certs:add for your own)"
        } else {
            " (gantry certs:add APP CERT KEY gives an app its certificate)"
        }
    );
    println!(
        "  proxy:     pid {proxy_pid}, a process of its own: it keeps serving while serve restarts"
    );
    if let Some(path) = first_key {
        println!("  registered your key {path} as admin \"admin\" (gantry keys:list)");
    }
    println!("Deploy an app (a repository with a Dockerfile):");
    println!("  git remote add gantry {remote}");
    println!("  git push gantry main");
    println!(
        "Dashboard: {} (log in: gantry web:login)",
        config.dashboard_url()
    );
    println!(
        "Manage: gantry apps:list, or ssh -p {} git@HOST help",
        ssh_addr.port()
    );
}

/// Removes scratch repositories that a crashed server left behind.
fn sweep_scratch(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("push-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions on {}", path.display()))
}

/// Starts the swarm's registry (Debian's `docker-registry`) under the home.
async fn start_registry(config: &Config) -> anyhow::Result<crate::artifacts::registry::Supervised> {
    let spec = crate::artifacts::registry::RegistrySpec {
        dir: config.home.join("registry"),
        listen: config.swarm.registry_listen,
        upstream: None,
    };
    let registry = crate::artifacts::registry::start(spec, &config.swarm.registry_push).await?;
    tracing::info!(
        listen = %config.swarm.registry_listen,
        "the cluster's registry runs; nodes pull through their mirrors at {}",
        config.swarm.pull_from
    );
    Ok(registry)
}

/// serve's own node takes work from the cluster's queue too: builds run on
/// this machine's engine and push to the registry on its loopback.
async fn start_worker(gantry: &Arc<Gantry>, shutdown: CancellationToken) {
    let manager = match &gantry.config.swarm.engine {
        Some(engine) => crate::context::connect_engine(engine),
        None => Ok(gantry.docker.clone()),
    };
    let identity = match manager {
        Ok(manager) => crate::worker::identify(&manager).await,
        Err(err) => Err(err),
    };
    let (node_id, name) = match identity {
        Ok(identity) => identity,
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "this node takes no work from the queue");
            return;
        }
    };
    let settings = crate::worker::WorkerSettings {
        node_id,
        name,
        push_to: gantry.config.swarm.registry_push.clone(),
        dir: gantry.config.home.join("work"),
        slots: 2,
    };
    tokio::spawn(crate::worker::run_forever(
        gantry.store.clone(),
        gantry.docker.clone(),
        settings,
        shutdown,
    ));
}
