//! What a release's processes get: their environment, the web process's
//! command and health check, the app's formation; and what goes wrong.

use super::health;
use crate::context::Gantry;
use crate::manifest::formation::Formation;
use crate::names::AppName;
use crate::store::Release;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot start the container: {0}")]
    Start(#[from] crate::runtime::RuntimeError),
    #[error("cannot read the release's config vars: {0}")]
    Config(crate::secrets::SecretsError),
    #[error("{reason}")]
    Unhealthy {
        reason: health::HealthError,
        /// The container's last lines of output, to show the pusher.
        logs: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One process (a container, or a swarm task), as `ps` shows it.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub process: String,
    pub replica: u32,
    pub name: String,
    pub release: Option<i64>,
    pub state: String,
    pub restarts: i64,
    pub started_at: String,
}

/// The app's formation and whether it is stopped, from the store.
pub async fn formation(gantry: &Gantry, app: &AppName) -> Result<(Formation, bool), DeployError> {
    let record = gantry
        .store
        .get_app(app)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {app}")))?;
    Ok((Formation::from_stored(&record.formation), record.stopped))
}

/// What every process of an app gets besides its release: its mounts
/// (volumes made if missing) and each process type's limits.
#[derive(Debug, Clone, Default)]
pub struct AppData {
    pub mounts: Vec<crate::runtime::Mount>,
    pub limits: std::collections::BTreeMap<String, crate::resources::Limits>,
}

impl AppData {
    pub fn limits(&self, process: &str) -> crate::resources::Limits {
        self.limits.get(process).copied().unwrap_or_default()
    }
}

/// The app's mounts and limits, from the store; its named volumes exist
/// once this returns.
pub async fn app_data(gantry: &Gantry, app: &AppName) -> Result<AppData, DeployError> {
    let record = gantry
        .store
        .get_app(app)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {app}")))?;
    Ok(AppData {
        mounts: crate::runtime::mounts_of_app(&*gantry.runtime, app, &record.storage).await?,
        limits: crate::resources::parse_stored(&record.resources),
    })
}

/// How to run and check a release's web process, from its manifest.
pub struct WebSpec {
    /// The Procfile's `web` command; `None` runs the image's own.
    pub command: Option<String>,
    /// The health check path (app.json `healthchecks.web`, else `/`).
    pub path: String,
    pub timeout: std::time::Duration,
}

pub fn web_spec(gantry: &Gantry, release: &Release) -> WebSpec {
    let manifest = crate::manifest::Manifest::from_stored(&release.manifest);
    let (path, timeout) = manifest.app_json.web_check().unwrap_or(("/".into(), None));
    WebSpec {
        command: manifest.command("web").map(str::to_owned),
        path,
        timeout: timeout.map_or(gantry.config.health_timeout, std::time::Duration::from_secs),
    }
}

/// The container environment of `release`: its config vars and `PORT`.
pub fn release_env(gantry: &Gantry, release: &Release) -> Result<Vec<String>, DeployError> {
    crate::config_vars::release_env(release, &gantry.secrets).map_err(DeployError::Config)
}
