//! The handles every part shares: settings, the store, the secrets, the
//! Docker engine, the link to the proxy, the per-app locks, the push sessions
//! and the executors. Defined on the ground floor so that every part can take
//! a `&Gantry` without knowing the parts beside it.

pub mod executors;
pub mod image_gate;
pub mod leader;
pub mod locks;
pub mod sessions;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;

use crate::config::Config;
use crate::routing::Routing;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::swarm::SwarmRuntime;
use crate::runtime::Runtime;
use crate::secrets::Secrets;
use crate::store::Store;
use executors::Executors;
use locks::AppLocks;
use sessions::PushSessions;

/// What every part of a running gantry shares.
pub struct Gantry {
    pub config: Config,
    pub store: Store,
    pub secrets: Secrets,
    /// The local engine, for the build server and the artifact system.
    pub docker: Docker,
    /// Where apps' processes run.
    pub runtime: Arc<dyn Runtime>,
    /// The routes, and the link to the proxy process that serves them.
    pub routing: Routing,
    pub locks: AppLocks,
    pub pushes: PushSessions,
    /// Executor slots and the runs going, for the job system.
    pub executors: Executors,
    /// gantry's own jobs that parts above the job system do (see [`Upkeep`]).
    pub upkeep: Vec<Arc<dyn Upkeep>>,
    /// Jobs of apps that parts above the job system do (see [`AppUpkeep`]).
    pub app_upkeep: Vec<Arc<dyn AppUpkeep>>,
    /// Whether this manager runs the singletons (see [`leader`]).
    pub leader: leader::Leader,
    /// The serving gantry, set by `serve`: runs outlive the command that
    /// started them, so they hold it. Unset in a CLI process without `serve`.
    serving: OnceLock<Weak<Gantry>>,
}

impl Gantry {
    /// Opens the database and a Docker client (which connects lazily).
    pub async fn open(config: Config) -> anyhow::Result<Gantry> {
        config.check_runtime()?;
        std::fs::create_dir_all(&config.home)
            .with_context(|| format!("cannot create gantry's home {}", config.home.display()))?;
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    crate::store::redact(&config.database_url)
                )
            })?
            .for_runner(&config.manager_id());
        let docker = Docker::connect_with_defaults().map_err(|e| docker_unreachable(&e))?;
        let secrets = Secrets::load_or_create(&config.home.join("secret.key"))?;
        let executors = Executors::new(config.executors);
        let runtime: Arc<dyn Runtime> = match config.runtime {
            crate::config::RuntimeKind::Docker => {
                Arc::new(DockerRuntime::new(docker.clone(), &config.docker_network))
            }
            crate::config::RuntimeKind::Swarm => {
                let (manager, engine) = match &config.swarm.engine {
                    Some(engine) => (connect_engine(engine)?, engine.clone()),
                    None => (docker.clone(), "this machine".to_owned()),
                };
                let images = crate::runtime::swarm::Images {
                    local: docker.clone(),
                    push_to: config.swarm.registry_push.clone(),
                    pull_from: config.swarm.pull_from.clone(),
                };
                Arc::new(SwarmRuntime::new(
                    manager,
                    &engine,
                    images,
                    &config.docker_network,
                ))
            }
        };
        let routing = Routing::new(config.proxy_socket());
        // Several managers share a swarm's database; one machine has one.
        let leader = match config.runtime {
            crate::config::RuntimeKind::Swarm => leader::Leader::elected(&config.manager_id()),
            crate::config::RuntimeKind::Docker => leader::Leader::sole(),
        };
        Ok(Gantry {
            config,
            routing,
            store,
            secrets,
            docker,
            runtime,
            locks: AppLocks::default(),
            executors,
            upkeep: Vec::new(),
            app_upkeep: Vec::new(),
            leader,
            serving: OnceLock::new(),
            pushes: PushSessions::default(),
        })
    }

    /// Marks this gantry as the one `serve` runs, so runs started through a
    /// `&Gantry` can be spawned with a handle of their own.
    pub fn set_serving(self: &Arc<Self>) {
        let _ = self.serving.set(Arc::downgrade(self));
    }

    /// The serving gantry, when this process is `serve`.
    pub fn serving(&self) -> Option<Arc<Gantry>> {
        self.serving.get().and_then(Weak::upgrade)
    }
}

/// A client of the engine at `url` (`unix:///…` or `tcp://…`, as DOCKER_HOST
/// names one); it connects lazily.
pub fn connect_engine(url: &str) -> anyhow::Result<Docker> {
    let timeout = 120;
    let docker = match url.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION),
        None if url.starts_with("tcp://") || url.starts_with("http://") => {
            Docker::connect_with_http(url, timeout, bollard::API_DEFAULT_VERSION)
        }
        None => anyhow::bail!("[swarm] engine = {url:?}: expected unix:///PATH or tcp://HOST:PORT"),
    };
    docker.with_context(|| format!("cannot reach the swarm's engine at {url}"))
}

/// A Docker client that has answered a ping, or the friendly explanation.
pub async fn connect_docker() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_defaults().map_err(|e| docker_unreachable(&e))?;
    check_docker(&docker).await?;
    Ok(docker)
}

pub async fn check_docker(docker: &Docker) -> anyhow::Result<()> {
    docker.ping().await.map_err(|e| docker_unreachable(&e))?;
    Ok(())
}

/// What to tell a user whose Docker engine cannot be reached.
fn docker_unreachable(err: &bollard::errors::Error) -> anyhow::Error {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    anyhow::anyhow!(
        "cannot reach the Docker engine at {host}: {err}\n\
             gantry builds and runs apps with Docker, so it needs a running engine:\n  \
             - start it: `sudo systemctl start docker` (or run `dockerd` yourself),\n  \
             - or point DOCKER_HOST at one that runs,\n  \
             - and check that this user may use it (`docker info` should work).\n\
         Then run gantry serve again."
    )
}

/// One of gantry's own jobs whose work a part above the job system knows
/// how to do (`gantry.certs` is ACME's). The job runner schedules and runs it
/// as numbered runs without knowing what it does; the part registers it
/// when gantry is opened (`setup`).
#[async_trait::async_trait]
pub trait Upkeep: Send + Sync {
    /// The job's name (`gantry.certs`); a host job of that name is ignored.
    fn name(&self) -> &'static str;

    /// When it runs (cron's 5 fields, or `@daily`...).
    fn schedule(&self) -> &'static str;

    /// How long a run may take before it is killed.
    fn timeout(&self) -> Duration;

    /// Whether the job exists with these settings (`gantry.certs` needs `[acme]`).
    fn enabled(&self, config: &Config) -> bool;

    /// A missed or failed run alerts (`critical` in a job's toml).
    fn critical(&self, _config: &Config) -> bool {
        false
    }

    /// Does the work, writing what it did to `log` and keeping what it made
    /// in `artifacts` (the run's artifacts directory); `Err` fails the run
    /// with its reason.
    async fn run(
        &self,
        gantry: &Gantry,
        log: &mut std::fs::File,
        artifacts: &std::path::Path,
    ) -> anyhow::Result<()>;
}

/// One job an [`AppUpkeep`] does for an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUpkeepJob {
    pub app: crate::names::AppName,
    /// The job's name, `APP/...`.
    pub name: String,
    pub schedule: String,
    /// A missed or failed run alerts.
    pub critical: bool,
}

/// Per-app jobs that a part above the job system does (an add-on's daily
/// backup): the job system lists, schedules and records them, and calls
/// back for the work.
#[async_trait::async_trait]
pub trait AppUpkeep: Send + Sync {
    /// Its name, for the job system to find it again.
    fn name(&self) -> &'static str;

    /// The jobs it has now.
    async fn jobs(&self, gantry: &Gantry) -> Vec<AppUpkeepJob>;

    /// Does `job` for `app`, writing to `log`, keeping what it made in
    /// `artifacts`; `Err` fails the run with its reason.
    async fn run(
        &self,
        gantry: &Gantry,
        app: &crate::names::AppName,
        job: &str,
        log: &mut std::fs::File,
        artifacts: &std::path::Path,
    ) -> anyhow::Result<()>;
}
