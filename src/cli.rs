//! The `gantry` command line: `serve` and `proxy` (long-running), `stack:build`,
//! the pre-receive hook, and every management command. On the host, a
//! management command goes to the running server through the control socket
//! when there is one (so it acts on live routes and locks), and runs
//! in-process otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::access::Caller;
use crate::commands::{execute, execute_streaming, ManageCommand};
use crate::config::{Config, Overrides};
use crate::runtime::Streams;

/// gantry: git push to your own server, and your app is live.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, propagate_version = true)]
pub struct Cli {
    /// Where gantry keeps its state [default: ~/.local/share/gantry, or /var/lib/gantry as root]
    #[arg(long, global = true, env = "GANTRY_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run gantry: the SSH git endpoint, builds, deploys and the HTTP proxy
    Serve(ServeArgs),
    /// Run the reverse proxy on its own (serve starts it when it is not running)
    Proxy(ProxyArgs),
    /// Build a stack from Debian packages, security updates applied (needs root)
    #[command(name = "stack:build")]
    StackBuild {
        /// bookworm, trixie or forky (default: trixie, the default for new apps)
        suite: Option<String>,
    },
    /// Add a toolchain to the host's runtime store (a release tarball or a wheel), checked by sha256
    #[command(name = "runtimes:add")]
    RuntimesAdd {
        /// python, node or go
        lang: String,
        /// The version it must be (22, 1.24.3); its binary is asked
        #[arg(value_name = "VERSION")]
        wanted: String,
        /// A file, or an http(s) URL to download
        source: String,
        /// Refuse it unless the file has this sha256
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List the runtimes builds can use: the host's store and each stack's own
    Runtimes,
    /// Remove a toolchain from the host's runtime store
    #[command(name = "runtimes:remove")]
    RuntimesRemove {
        lang: String,
        #[arg(value_name = "VERSION")]
        stored: String,
    },
    /// Move a running gantry to this binary (install it over the old one
    /// first): the new proxy takes the listening sockets without dropping a
    /// request, then serve restarts once pushes in flight finish
    Upgrade,
    /// Run gantry as systemd services (needs root): the proxy on sockets
    /// systemd holds, as an unprivileged user; serve beside it; both on boot
    Install(InstallArgs),
    /// Write a backup of everything to FILE while gantry runs: the database,
    /// secret key, certificates, job definitions and every app's repository
    Backup {
        file: PathBuf,
        /// Include the live releases' images (else a restore rebuilds them)
        #[arg(long)]
        images: bool,
    },
    /// Restore a backup into an empty home: every app comes back when serve starts
    Restore {
        file: PathBuf,
        /// Where a Postgres backup goes [default: the home's database_url]
        #[arg(long, env = "GANTRY_DATABASE_URL", value_name = "URL")]
        database_url: Option<String>,
    },
    /// Stop and remove the systemd services; gantry's home and data stay
    Uninstall {
        /// Where the units are
        #[arg(long, value_name = "DIR", default_value = crate::service::UNIT_DIR)]
        unit_dir: PathBuf,
    },
    /// Run a pull-through mirror of the swarm's registry on this node's
    /// loopback, until stopped: the node's engine pulls releases through it
    #[command(name = "registry:mirror")]
    RegistryMirror {
        /// The cluster's registry as this node reaches it: http://MANAGER:5000
        #[arg(long, value_name = "URL")]
        upstream: String,
        /// Where the node's engine pulls from ([swarm] pull_from)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5001")]
        listen: SocketAddr,
    },
    /// Join this machine's engine to a gantry swarm (`gantry node:token` prints
    /// this command), then run its image mirror until stopped (keep it running)
    #[command(name = "node:join")]
    NodeJoin(NodeJoinArgs),
    /// Run this node's edge proxy: the routes serve publishes in the shared
    /// database, served on this node's ports, until stopped
    Edge(EdgeArgs),
    #[command(flatten)]
    Manage(ManageCommand),
    /// Run by git during a push; not for people
    #[command(hide = true)]
    Hook {
        #[arg(value_parser = ["pre-receive"])]
        name: String,
    },
}

/// `node:join`'s flags.
#[derive(Debug, Args)]
pub struct NodeJoinArgs {
    /// The swarm's worker join token
    #[arg(long)]
    pub token: String,
    /// A manager's HOST:2377
    #[arg(long, value_name = "ADDR")]
    pub manager: String,
    /// The cluster's registry: http://MANAGER:5000
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// This machine's address the others reach it at [default: Docker's choice]
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<String>,
    /// Where this node's engine pulls from ([swarm] pull_from)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5001")]
    pub mirror_listen: SocketAddr,
    /// Where this node's engine pushes what it builds: a loopback relay
    /// to the cluster's registry
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5002")]
    pub push_relay: SocketAddr,
    /// Run the node's part here until stopped, instead of installing it
    /// as the systemd service gantry-node (what happens where systemd runs)
    #[arg(long)]
    pub foreground: bool,
    /// Where the systemd unit goes
    #[arg(long, value_name = "DIR", default_value = crate::service::UNIT_DIR)]
    pub unit_dir: PathBuf,
    /// Write the systemd unit and nothing else: no join, no systemctl
    #[arg(long)]
    pub units_only: bool,
    #[command(flatten)]
    pub edge: EdgeArgs,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The swarm's shared database (postgres://…), where serve publishes the routes
    #[arg(long, env = "GANTRY_DATABASE_URL", value_name = "URL")]
    pub database_url: String,
    /// Address of the node's HTTP listener
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// Address of the node's HTTPS listener
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    pub https_listen: SocketAddr,
    /// Seconds without reading the routes after which the node serves none
    /// (503) instead of routes it cannot verify
    #[arg(long, value_name = "SECS", default_value = "30")]
    pub stale_after: u64,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address of the HTTP listener [default: 0.0.0.0:8080]
    #[arg(long, env = "GANTRY_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Address of the HTTPS listener [default: 0.0.0.0:8443]
    #[arg(long, env = "GANTRY_HTTPS_LISTEN", value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// Take over from the running proxy (`gantry upgrade` passes this)
    #[arg(long, hide = true)]
    pub takeover: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The gantry binary the services run [default: this one]
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Where the units go
    #[arg(long, value_name = "DIR", default_value = crate::service::UNIT_DIR)]
    pub unit_dir: PathBuf,
    /// Write the unit files and nothing else: no user, no permissions, no systemctl
    #[arg(long)]
    pub units_only: bool,
    /// Apps are served at APP.DOMAIN
    #[arg(long)]
    pub domain: Option<String>,
    /// Address of the SSH git endpoint [default: 0.0.0.0:2222]
    #[arg(long, value_name = "ADDR")]
    pub ssh_listen: Option<SocketAddr>,
    /// Address of the HTTP listener
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// Address of the HTTPS listener
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    pub https_listen: SocketAddr,
    /// sqlite://PATH or postgres://… [default: sqlite in gantry's home]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Apps are served at APP.DOMAIN [default: localhost]
    #[arg(long, env = "GANTRY_DOMAIN")]
    pub domain: Option<String>,
    /// Address of the SSH git endpoint [default: 0.0.0.0:2222]
    #[arg(long, env = "GANTRY_SSH_LISTEN", value_name = "ADDR")]
    pub ssh_listen: Option<SocketAddr>,
    /// Address of the HTTP proxy [default: 0.0.0.0:8080]
    #[arg(long, env = "GANTRY_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Address of the HTTPS proxy [default: 0.0.0.0:8443]
    #[arg(long, env = "GANTRY_HTTPS_LISTEN", value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// sqlite://PATH or postgres://… [default: sqlite://$GANTRY_HOME/gantry.db]
    #[arg(long, env = "GANTRY_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// The proxy is a service of its own (systemd's gantry-proxy.service,
    /// which `gantry install` writes): do not start or restart it
    #[arg(long)]
    pub proxy_service: bool,
    /// Where apps run: docker (this machine's engine) or swarm (a Docker
    /// Swarm's services; needs a postgres:// database) [default: docker]
    #[arg(long, env = "GANTRY_RUNTIME", value_name = "RUNTIME")]
    pub runtime: Option<crate::config::RuntimeKind>,
}

/// `gantry proxy`: the proxy alone, until SIGINT or SIGTERM.
async fn run_proxy(home: Option<PathBuf>, args: ProxyArgs) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides {
        home,
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        ..Overrides::default()
    })?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("proxy shutting down; requests in flight finish first");
            shutdown.cancel();
        });
    }
    // Listening sockets passed by whoever started it (serve, or systemd's
    // socket unit); without them it binds its own.
    let passed = gantry_proxy::listeners::Listeners::from_env()?;
    let mut daemon = config.proxy_daemon();
    daemon.takeover = args.takeover;
    gantry_proxy::daemon::run(daemon, passed, shutdown).await?;
    Ok(0)
}

/// `node:join`: joins the swarm, then runs the node's part (mirror, edge
/// proxy, worker) as the systemd service gantry-node where systemd runs,
/// else here in the foreground.
async fn node_join(home: Option<PathBuf>, args: NodeJoinArgs) -> anyhow::Result<i32> {
    let NodeJoinArgs {
        token,
        manager,
        registry,
        advertise_addr,
        mirror_listen,
        push_relay,
        foreground,
        unit_dir,
        units_only,
        edge,
    } = args;
    // The unit runs this very command in the foreground, every default pinned.
    let mut unit_args = vec![
        "--token".to_owned(),
        token.clone(),
        "--manager".into(),
        manager.clone(),
        "--registry".into(),
        registry.clone(),
        "--mirror-listen".into(),
        mirror_listen.to_string(),
        "--push-relay".into(),
        push_relay.to_string(),
        "--database-url".into(),
        edge.database_url.clone(),
        "--http-listen".into(),
        edge.http_listen.to_string(),
        "--https-listen".into(),
        edge.https_listen.to_string(),
        "--stale-after".into(),
        edge.stale_after.to_string(),
    ];
    if let Some(ip) = &advertise_addr {
        unit_args.extend(["--advertise-addr".to_owned(), ip.clone()]);
    }
    let home = Config::resolve(Overrides::from_env(home)?)?.home;
    let bin = std::env::current_exe().context("cannot tell where this gantry binary is")?;
    let unit = crate::service::node_unit(&bin, &home, &unit_args);
    if units_only {
        print!("{}", crate::service::install_node(&unit, &unit_dir, true)?);
        return Ok(0);
    }
    let docker = crate::context::connect_docker().await?;
    let now = crate::runtime::swarm::join(&docker, &token, &manager, advertise_addr.as_deref())
        .await
        .with_context(|| format!("cannot join the swarm at {manager}"))?;
    println!(
        "{} the swarm at {manager}",
        if now { "joined" } else { "already in" }
    );
    if !foreground && crate::service::systemd_here() {
        print!("{}", crate::service::install_node(&unit, &unit_dir, false)?);
        return Ok(0);
    }
    if !foreground {
        println!(
            "no systemd here: the node's part runs in the foreground; keep it running under your supervisor"
        );
    }
    let node = NodeParts {
        registry,
        mirror_listen,
        push_relay,
    };
    run_node(Some(home), Some(node), edge).await
}

/// What `node:join` runs on a node besides its edge proxy.
struct NodeParts {
    /// The cluster's registry: http://MANAGER:5000
    registry: String,
    mirror_listen: SocketAddr,
    push_relay: SocketAddr,
}

/// What a node of a swarm runs, until SIGINT or SIGTERM: its image mirror
/// and worker (when it joined) and its edge proxy.
async fn run_node(
    home: Option<PathBuf>,
    node: Option<NodeParts>,
    edge: EdgeArgs,
) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides {
        home,
        http_listen: Some(edge.http_listen),
        https_listen: Some(edge.https_listen),
        ..Overrides::default()
    })?;
    let _mirror = match &node {
        Some(node) => Some(start_mirror(&config, &node.registry, node.mirror_listen).await?),
        None => None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            shutdown.cancel();
        });
    }
    if let Some(node) = &node {
        start_worker(&config, node, &edge.database_url, shutdown.child_token()).await?;
    }
    let settings = crate::edge::EdgeSettings {
        database_url: edge.database_url,
        stale_after: std::time::Duration::from_secs(edge.stale_after.max(1)),
    };
    crate::edge::run(&config, settings, shutdown).await?;
    Ok(0)
}

/// Starts the node's worker on the cluster's work queue, and the relay its
/// engine pushes built images through.
async fn start_worker(
    config: &Config,
    node: &NodeParts,
    database_url: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let upstream = crate::artifacts::registry::url_address(&node.registry)
        .with_context(|| format!("{:?}: expected http://HOST:PORT", node.registry))?;
    let listener = tokio::net::TcpListener::bind(node.push_relay)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the registry relay",
                node.push_relay
            )
        })?;
    tokio::spawn(crate::artifacts::registry::relay(
        listener,
        upstream,
        shutdown.clone(),
    ));
    let docker = crate::context::connect_docker().await?;
    let (node_id, name) = crate::worker::identify(&docker).await?;
    let store = crate::store::Store::connect(database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crate::store::redact(database_url)
            )
        })?;
    let settings = crate::worker::WorkerSettings {
        node_id,
        name,
        push_to: node.push_relay.to_string(),
        dir: config.home.join("work"),
        slots: 2,
    };
    tokio::spawn(crate::worker::run_forever(
        store, docker, settings, shutdown,
    ));
    Ok(())
}

/// Starts a node's pull-through mirror of `upstream` on `listen`.
async fn start_mirror(
    config: &Config,
    upstream: &str,
    listen: SocketAddr,
) -> anyhow::Result<crate::artifacts::registry::Supervised> {
    if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
        anyhow::bail!("{upstream:?}: expected http://HOST:PORT or https://HOST:PORT");
    }
    let spec = crate::artifacts::registry::RegistrySpec {
        dir: config.home.join("mirror"),
        listen,
        upstream: Some(upstream.to_owned()),
    };
    let probe = match listen.ip().is_unspecified() {
        true => format!("127.0.0.1:{}", listen.port()),
        false => listen.to_string(),
    };
    let mirror = crate::artifacts::registry::supervise(spec)?;
    // A mirror whose upstream is not up yet exits; it is started again
    // until the upstream answers.
    if crate::artifacts::registry::wait_ready(&probe, std::time::Duration::from_secs(10)).await {
        println!("mirroring {upstream} at {listen}");
    } else {
        eprintln!("the mirror at {listen} does not answer yet (is {upstream} up?); retrying");
    }
    Ok(mirror)
}

/// `gantry registry:mirror`: the mirror, until SIGINT or SIGTERM.
async fn registry_mirror(
    home: Option<PathBuf>,
    upstream: String,
    listen: SocketAddr,
) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides {
        home,
        ..Overrides::default()
    })?;
    let _mirror = start_mirror(&config, &upstream, listen).await?;
    crate::signal::shutdown_signal().await;
    Ok(0)
}

/// `gantry backup FILE`.
async fn backup(
    home: Option<PathBuf>,
    file: &std::path::Path,
    images: bool,
) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    let gantry = crate::setup::open(config).await?;
    let written =
        crate::backup::create(&gantry, file, images, &mut |line| println!("{line}")).await;
    gantry.store.close().await;
    written?;
    Ok(0)
}

/// `gantry restore FILE`: the archive into an empty home, then the images
/// it did not carry built again from the repositories.
async fn restore(
    home: Option<PathBuf>,
    file: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<i32> {
    let mut overrides = Overrides::from_env(home)?;
    if let Some(url) = database_url {
        overrides.database_url = Some(url.to_owned());
    }
    let config = Config::resolve(overrides)?;
    let restored =
        crate::backup::restore(&config, file, database_url, &mut |line| println!("{line}")).await?;
    for note in &restored.notes {
        println!("{note}");
    }
    if !restored.to_rebuild.is_empty() || !restored.addon_dumps.is_empty() {
        // The restored gantry.toml may name the database: read settings again.
        let config = Config::resolve(Overrides::from_env(Some(config.home.clone()))?)?;
        let config = match database_url {
            Some(url) => Config {
                database_url: url.to_owned(),
                ..config
            },
            None => config,
        };
        let gantry = crate::setup::open(config).await?;
        let mut failed = Vec::new();
        for app in &restored.to_rebuild {
            let Some(release) = gantry.store.current_release(app).await? else {
                continue;
            };
            println!(
                "building {app} v{} again from its repository ({})",
                release.version,
                &release.commit_sha[..release.commit_sha.len().min(7)]
            );
            let mut lines = Vec::new();
            match crate::push::rebuild(&gantry, &release, &mut |l| lines.push(l.to_owned())).await {
                Ok(()) => println!("rebuilt {}", release.image),
                Err(err) => {
                    for line in lines.iter().rev().take(10).rev() {
                        println!("  {line}");
                    }
                    println!("cannot rebuild {app}: {err}");
                    failed.push(app.to_string());
                }
            }
        }
        // The add-ons' servers, started with their data as the backup had it.
        if !restored.addon_dumps.is_empty() {
            crate::addons::ensure_all(&gantry).await;
            for (app, dir) in &restored.addon_dumps {
                match crate::addons::restore_dir(&gantry, app, dir).await {
                    Ok(()) => {
                        println!("{app}'s postgres: its data loaded");
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    Err(err) => {
                        println!(
                            "cannot load {app}'s postgres data ({err:#}); the dump stays in {}",
                            dir.display()
                        );
                        failed.push(format!("{app}'s postgres"));
                    }
                }
            }
        }
        gantry.store.close().await;
        if !failed.is_empty() {
            anyhow::bail!(
                "restored, but not all of it: {} (see above)",
                failed.join(", ")
            );
        }
    }
    println!(
        "restored {} app(s) into {}: start gantry serve and they come back, with their config, domains, certificates and releases",
        restored.manifest.apps.len(),
        config.home.display()
    );
    Ok(0)
}

/// `gantry uninstall`.
fn uninstall(home: Option<PathBuf>, unit_dir: &std::path::Path) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    print!("{}", crate::service::uninstall(&config, unit_dir)?);
    Ok(0)
}

/// `gantry install`: the units for serve's settings as given here.
async fn install(home: Option<PathBuf>, args: InstallArgs) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides {
        home,
        http_listen: Some(args.http_listen),
        https_listen: Some(args.https_listen),
        ..Overrides::default()
    })?;
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe().context("cannot tell where this gantry binary is")?,
    };
    let mut serve_args = Vec::new();
    if let Some(domain) = args.domain {
        serve_args.extend(["--domain".to_owned(), domain]);
    }
    if let Some(addr) = args.ssh_listen {
        serve_args.extend(["--ssh-listen".to_owned(), addr.to_string()]);
    }
    if let Some(url) = args.database_url {
        serve_args.extend(["--database-url".to_owned(), url]);
    }
    let plan = crate::service::Plan::new(&config, bin, serve_args);
    let text = crate::service::install(&config, &plan, &args.unit_dir, args.units_only).await?;
    print!("{text}");
    Ok(0)
}

/// `gantry upgrade`: asks the running serve to move to this binary, then
/// waits until serve answers again from it. An installed gantry (systemd
/// units) is restarted by systemd, which holds the proxy's sockets.
async fn upgrade(home: Option<PathBuf>) -> anyhow::Result<i32> {
    if crate::service::installed(std::path::Path::new(crate::service::UNIT_DIR)) {
        print!("{}", crate::service::upgrade_units()?);
        return Ok(0);
    }
    let config = Config::resolve(Overrides::from_env(home)?)?;
    let socket = config.socket_path();
    let Some(stream) = crate::control::client::connect(&socket).await else {
        anyhow::bail!(
            "no gantry serve answers on {}: start it (gantry serve, or systemctl start gantry) on the new binary instead",
            socket.display()
        );
    };
    let exe = std::env::current_exe().context("cannot tell where this gantry binary is")?;
    // The restarted serve writes its start anew.
    let boot = || std::fs::read_to_string(config.boot_path()).ok();
    let before = boot();
    let request = crate::control::protocol::Request::Upgrade { exe };
    let code = crate::control::client::call(stream, &request).await?;
    if code != 0 {
        return Ok(code);
    }
    // serve finishes the pushes in flight, then restarts in place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(660);
    while std::time::Instant::now() < deadline {
        if boot() != before && crate::control::client::connect(&socket).await.is_some() {
            println!("serve is back, on the new binary");
            return Ok(0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("serve did not come back within 11 minutes; see its log")
}

/// Runs `gantry serve`; the binary passes it in, so that nothing in the
/// library imports the start-up code that wires every part.
pub type Serve = fn(Config) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>>;

/// The binary's entry: runs what `cli` says and returns the exit code.
pub async fn run(cli: Cli, serve: Serve) -> i32 {
    let result = match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                home: cli.home,
                domain: args.domain,
                ssh_listen: args.ssh_listen,
                http_listen: args.http_listen,
                https_listen: args.https_listen,
                database_url: args.database_url,
                proxy_service: args.proxy_service,
                runtime: args.runtime,
            };
            match Config::resolve(overrides) {
                Ok(config) => serve(config).await.map(|()| 0),
                Err(err) => Err(err.into()),
            }
        }
        Command::Proxy(args) => run_proxy(cli.home, args).await,
        Command::Upgrade => upgrade(cli.home).await,
        Command::Install(args) => install(cli.home, args).await,
        Command::Backup { file, images } => backup(cli.home, &file, images).await,
        Command::Restore { file, database_url } => {
            restore(cli.home, &file, database_url.as_deref()).await
        }
        Command::Uninstall { unit_dir } => uninstall(cli.home, &unit_dir),
        Command::RegistryMirror { upstream, listen } => {
            registry_mirror(cli.home, upstream, listen).await
        }
        Command::NodeJoin(args) => node_join(cli.home, args).await,
        Command::Edge(edge) => run_node(cli.home, None, edge).await,
        Command::StackBuild { suite } => stack_build(cli.home, suite.as_deref()).await,
        Command::RuntimesAdd {
            lang,
            wanted,
            source,
            sha256,
        } => runtimes_add(cli.home, &lang, &wanted, &source, sha256.as_deref()).await,
        Command::Runtimes => runtimes_list(cli.home).await,
        Command::RuntimesRemove { lang, stored } => runtimes_remove(cli.home, &lang, &stored),
        Command::Manage(command) => run_local(cli.home, command).await,
        Command::Hook { .. } => crate::git::hook::pre_receive().await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gantry: {err:#}");
            1
        }
    }
}

/// `stack:build`: on the host only, since it runs debootstrap as root here.
async fn stack_build(home: Option<PathBuf>, suite: Option<&str>) -> anyhow::Result<i32> {
    use crate::build::stack;
    let suite = match suite {
        Some(name) => stack::Suite::parse(name)?,
        None => stack::DEFAULT_SUITE,
    };
    let config = Config::resolve(Overrides::from_env(home)?)?;
    if let Some(image) = &config.stack_image {
        println!("note: gantry.toml sets stack_image = {image:?}, so builds use that, not the stack built now");
    }
    let docker = crate::context::connect_docker().await?;
    let started = std::time::Instant::now();
    let built = stack::build(
        &docker,
        suite,
        &config.home,
        &config.stack_mirror,
        &mut |line| println!("{line}"),
    )
    .await?;
    let runtimes: Vec<String> = built
        .runtimes
        .iter()
        .map(|(lang, version)| format!("{lang} {version}"))
        .collect();
    println!(
        "built {} and {} in {:.0}s ({}; {})",
        suite.run_image(),
        suite.build_image(),
        started.elapsed().as_secs_f64(),
        runtimes.join(", "),
        match built.upgraded {
            Some(n) => format!("{n} package(s) from {suite}-security and {suite}-updates"),
            None => format!("{suite} has no -security or -updates"),
        }
    );
    Ok(0)
}

/// `runtimes:add`: on the host only, as it reads a file there.
async fn runtimes_add(
    home: Option<PathBuf>,
    lang: &str,
    version: &str,
    source: &str,
    sha256: Option<&str>,
) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    let stored = crate::build::runtimes::add(&config.home, lang, version, source, sha256).await?;
    println!(
        "added {} {} (sha256 {}) to {}\nbuilds that ask for {lang} {version} can use it from their next push",
        stored.lang,
        stored.version,
        stored.sha256,
        stored.dir.display()
    );
    Ok(0)
}

fn runtimes_remove(home: Option<PathBuf>, lang: &str, version: &str) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    crate::build::runtimes::remove(&config.home, lang, version)?;
    println!("removed {lang} {version} from the runtime store");
    Ok(0)
}

/// `runtimes`: what builds can choose from.
async fn runtimes_list(home: Option<PathBuf>) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    let stored = crate::build::runtimes::list(&config.home)?;
    println!("{:<7} {:<10} {:<18} SHA256", "LANG", "VERSION", "FROM");
    for runtime in &stored {
        println!(
            "{:<7} {:<10} {:<18} {}",
            runtime.lang,
            runtime.version,
            "store",
            &runtime.sha256[..runtime.sha256.len().min(16)]
        );
    }
    if let Ok(docker) = crate::context::connect_docker().await {
        for stack in crate::build::stack::list(&docker).await {
            for (lang, version) in &stack.runtimes {
                println!(
                    "{:<7} {:<10} {:<18} -",
                    lang,
                    version,
                    format!("stack {}", stack.suite)
                );
            }
        }
    }
    println!(
        "also on first need, from each stack's Debian suite: {}",
        crate::build::stack::SUITE_RUNTIMES
    );
    Ok(0)
}

/// A management command typed on the host: through the running server if any.
async fn run_local(home: Option<PathBuf>, mut command: ManageCommand) -> anyhow::Result<i32> {
    let config = Config::resolve(Overrides::from_env(home)?)?;
    // run and logs only read state: they run here, attached to this terminal.
    if command.is_streaming() {
        let stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = match command {
            ManageCommand::Run { .. } | ManageCommand::AddonsPsql { .. } => {
                Some(Box::new(tokio::io::stdin()))
            }
            _ => None,
        };
        let streams = Streams {
            stdin,
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
            tty: false,
        };
        let gantry = crate::setup::open(config).await?;
        return Ok(execute_streaming(&gantry, &Caller::Local, command, streams).await);
    }
    // A key file is read here, by the user who named it, and sent as text.
    let mut stdin = None;
    if let ManageCommand::KeysAdd { pubkey_file, .. } = &mut command {
        let text = if pubkey_file == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(&*pubkey_file)
                .map_err(|e| anyhow::anyhow!("cannot read {pubkey_file}: {e}"))?
        };
        *pubkey_file = "-".into();
        stdin = Some(text);
    }
    // Certificate and key files too: sent as one PEM text.
    if let ManageCommand::CertsAdd {
        cert_file,
        key_file,
        ..
    } = &mut command
    {
        let text = if cert_file == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            let read = |path: &str| {
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
            };
            format!("{}\n{}", read(cert_file)?, read(key_file)?)
        };
        *cert_file = "-".into();
        *key_file = "-".into();
        stdin = Some(text);
    }
    if let Some(stream) = crate::control::client::connect(&config.socket_path()).await {
        let request = crate::control::protocol::Request::Cli {
            command: serde_json::to_value(&command)?,
            stdin,
        };
        return crate::control::client::call(stream, &request).await;
    }
    let gantry = crate::setup::open(config).await?;
    let outcome = execute(&gantry, &Caller::Local, command, stdin).await;
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    gantry.store.close().await;
    Ok(outcome.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_grammar_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn local_grammar_has_global_home_and_serve_flags() {
        let cli = Cli::try_parse_from([
            "gantry",
            "serve",
            "--home",
            "/tmp/x",
            "--domain",
            "example.com",
        ])
        .expect("parse");
        assert_eq!(cli.home, Some(PathBuf::from("/tmp/x")));
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.domain.as_deref(), Some("example.com"));
        let cli =
            Cli::try_parse_from(["gantry", "--home", "/h", "apps:create", "web"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Manage(ManageCommand::AppsCreate { .. })
        ));
    }
}
