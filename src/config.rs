//! Where gantry's settings come from: command-line flags, then `GANTRY_*`
//! environment variables (clap merges those two), then `$GANTRY_HOME/gantry.toml`,
//! then defaults. Everything else receives a finished [`Config`] and never looks
//! at the environment itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid gantry configuration: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name}: {message}")]
    Env { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot tell where gantry's home is: $HOME is not set; pass --home DIR or set GANTRY_HOME"
    )]
    NoHome,
}

/// Settings given on the command line or in the environment; `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub home: Option<PathBuf>,
    pub domain: Option<String>,
    pub ssh_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub https_listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    /// The proxy is a service of its own (`serve --proxy-service`).
    pub proxy_service: bool,
    /// Where apps' processes run (`serve --runtime`).
    pub runtime: Option<RuntimeKind>,
}

/// Where apps' processes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Containers on this machine's Docker engine.
    #[default]
    Docker,
    /// Services of a Docker Swarm, across its machines.
    Swarm,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker" => Ok(RuntimeKind::Docker),
            "swarm" => Ok(RuntimeKind::Swarm),
            other => Err(format!("{other:?} is not a runtime: docker or swarm")),
        }
    }
}

/// `[swarm]` in `gantry.toml`: how gantry reaches the swarm and its images.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSettings {
    /// A manager's Docker engine (`unix:///…`, `tcp://…`); default: the
    /// local engine, as DOCKER_HOST names it.
    pub engine: Option<String>,
    /// Where gantry's registry for the cluster listens: every node's mirror
    /// pulls from it.
    #[serde(default = "registry_listen")]
    pub registry_listen: SocketAddr,
    /// Where this machine's engine pushes built images (on loopback, where
    /// Docker needs no TLS for a registry).
    #[serde(default = "registry_push")]
    pub registry_push: String,
    /// Where every node's engine pulls: its own pull-through mirror on its
    /// loopback (`gantry registry:mirror`), so no credentials sit in a
    /// service spec and each image crosses the network once per node.
    #[serde(default = "pull_from")]
    pub pull_from: String,
    /// How the other nodes reach the registry (`node:token` tells them);
    /// default: `http://` the manager's address and `registry_listen`'s port.
    pub registry_url: Option<String>,
}

fn registry_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5000))
}

fn registry_push() -> String {
    "127.0.0.1:5000".into()
}

fn pull_from() -> String {
    "127.0.0.1:5001".into()
}

impl Default for SwarmSettings {
    fn default() -> Self {
        SwarmSettings {
            engine: None,
            registry_listen: registry_listen(),
            registry_push: registry_push(),
            pull_from: pull_from(),
            registry_url: None,
        }
    }
}

impl Overrides {
    /// Settings from `GANTRY_*` variables, for commands that take no flags for them
    /// (management commands must open the same database `serve` uses).
    pub fn from_env(home: Option<PathBuf>) -> Result<Overrides, ConfigError> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        fn addr(name: &str) -> Result<Option<SocketAddr>, ConfigError> {
            var(name)
                .map(|v| {
                    v.parse().map_err(|_| ConfigError::Env {
                        name: name.to_owned(),
                        message: format!("{v:?} is not an address like 0.0.0.0:2222"),
                    })
                })
                .transpose()
        }
        Ok(Overrides {
            home,
            domain: var("GANTRY_DOMAIN"),
            ssh_listen: addr("GANTRY_SSH_LISTEN")?,
            http_listen: addr("GANTRY_HTTP_LISTEN")?,
            https_listen: addr("GANTRY_HTTPS_LISTEN")?,
            database_url: var("GANTRY_DATABASE_URL"),
            proxy_service: false,
            runtime: var("GANTRY_RUNTIME")
                .map(|v| {
                    v.parse().map_err(|message| ConfigError::Env {
                        name: "GANTRY_RUNTIME".into(),
                        message,
                    })
                })
                .transpose()?,
        })
    }
}

/// The keys `gantry.toml` may hold. Unknown keys are an error, so a typo is not
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    domain: Option<String>,
    ssh_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    https_listen: Option<SocketAddr>,
    database_url: Option<String>,
    /// Seconds a new container has to answer HTTP before its deploy fails.
    health_timeout: Option<u64>,
    /// Seconds an old container gets between SIGTERM and SIGKILL.
    stop_grace: Option<u64>,
    /// Seconds requests in flight on a replaced release get to finish before
    /// its containers are stopped.
    drain_timeout: Option<u64>,
    /// Docker network the app containers join.
    docker_network: Option<String>,
    /// Host name of the dashboard (default `gantry.DOMAIN`).
    dashboard_host: Option<String>,
    /// An image to build and run buildpack apps on instead of the default
    /// stack gantry makes (`gantry stack:build`); never pulled.
    stack_image: Option<String>,
    /// The Debian mirror `stack:build` installs from.
    stack_mirror: Option<String>,
    /// Runs at once across all jobs (default: the number of cores).
    executors: Option<usize>,
    /// Where every job's failure, recovery and missed-run alerts go.
    #[serde(default)]
    notify: Vec<NotifyTarget>,
    /// A bearer token that lets a Prometheus scraper read `/metrics`.
    metrics_token: Option<String>,
    /// Runs kept per job however old (default 200).
    runs_keep: Option<i64>,
    /// Days runs are kept however many (default 90).
    runs_keep_days: Option<i64>,
    /// Certificates from an ACME CA: `email`, `directory`, `ca_root`.
    acme: Option<AcmeConfig>,
    /// Per-app settings: `[apps.NAME]`.
    #[serde(default)]
    apps: std::collections::BTreeMap<String, AppSettings>,
    /// The reverse proxy's limits and timeouts.
    #[serde(default)]
    proxy: ProxyFileConfig,
    /// `[stack]`: what the weekly `gantry.stack-refresh` does.
    #[serde(default)]
    stack: StackSettings,
    /// `[runtimes]`: whether and where runtimes missing from the stacks and
    /// the store are fetched.
    #[serde(default)]
    runtimes: RuntimesSettings,
    /// `[backup]`: the daily `gantry.backup` job.
    #[serde(default)]
    backup: BackupSettings,
    /// `docker` (default) or `swarm`.
    runtime: Option<RuntimeKind>,
    /// `[swarm]`: the manager's engine and the cluster's registry.
    #[serde(default)]
    swarm: SwarmSettings,
}

/// `[backup]` in `gantry.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Run the daily backup (a critical job: a missed or failed one alerts).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also copy each archive here (another disk, a mount of another host).
    pub dir: Option<PathBuf>,
    /// Archives kept, as the job's run artifacts and in `dir`.
    #[serde(default = "seven")]
    pub keep: usize,
    /// Include the live releases' images (bigger; a restore then needs no
    /// rebuild).
    #[serde(default)]
    pub images: bool,
}

fn seven() -> usize {
    7
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: true,
            dir: None,
            keep: 7,
            images: false,
        }
    }
}

/// `[runtimes]` in `gantry.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimesSettings {
    /// Fetch a runtime an app asks for that no stack and nothing in the
    /// host's store has, from its upstream releases (checked against their
    /// published sha256). Off on a host that must never reach the internet.
    #[serde(default = "yes")]
    pub upstream: bool,
    /// nodejs.org's `dist` (or a mirror of its layout).
    pub node_dist: Option<String>,
    /// go.dev's download page (or a mirror of its JSON listing).
    pub go_dist: Option<String>,
    /// The python-build-standalone release to take CPython from, as
    /// GitHub's releases API answers it.
    pub python_release: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for RuntimesSettings {
    fn default() -> Self {
        RuntimesSettings {
            upstream: true,
            node_dist: None,
            go_dist: None,
            python_release: None,
        }
    }
}

/// `[stack]` in `gantry.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSettings {
    /// After rebuilding the stacks, rebase every app on an outdated one
    /// (`stack:rebase`) instead of only listing them.
    #[serde(default)]
    pub auto_rebase: bool,
}

/// `[proxy]` in `gantry.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyFileConfig {
    /// Seconds a client has to send request headers (and, on HTTP/1.1, that
    /// an idle keep-alive connection stays open).
    header_timeout: Option<u64>,
    /// Seconds a connection may sit with no bytes moving.
    idle_timeout: Option<u64>,
    /// Seconds a backend has to send response headers.
    response_timeout: Option<u64>,
    /// The largest request body, in bytes (default: no limit).
    max_body: Option<u64>,
    /// `round-robin` (default) or `least-connections`.
    balance: Option<String>,
    /// One structured log line per request.
    access_log: Option<bool>,
}

/// `[apps.NAME]` in `gantry.toml`: settings of one app that are the host
/// operator's to choose, not the pusher's (so not in the pushed tree).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default)]
    pub deploy: DeploySettings,
    #[serde(default)]
    pub build: BuildSettings,
}

/// `build.*` of an app.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// On a swarm, build on a node with these labels (the cluster's work
    /// queue) instead of on the manager.
    #[serde(default)]
    pub requires: Requires,
}

/// Node labels a piece of work needs: `["gpu=1", "zone=b"]` or
/// `{ gpu = "1", zone = "b" }` in TOML; kept as sorted `K=V`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requires(pub Vec<String>);

impl Requires {
    /// Checks and sorts `K=V` items.
    pub fn parse(items: impl IntoIterator<Item = String>) -> Result<Requires, String> {
        let mut out = Vec::new();
        for item in items {
            let valid = item.split_once('=').is_some_and(|(key, value)| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
                    && !value.contains(['\n', '\r'])
            });
            if !valid {
                return Err(format!("requires: {item:?} is not a node label KEY=VALUE"));
            }
            out.push(item);
        }
        out.sort();
        out.dedup();
        Ok(Requires(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Requires {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl<'de> Deserialize<'de> for Requires {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Table(std::collections::BTreeMap<String, String>),
        }
        let items = match Form::deserialize(d)? {
            Form::List(items) => items,
            Form::Table(table) => table.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        Requires::parse(items).map_err(serde::de::Error::custom)
    }
}

/// `deploy.*` of an app.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Pushes wait in the job queue (executors, one deploy at a time, in
    /// order) instead of building as soon as they arrive.
    #[serde(default)]
    pub queue: bool,
}

/// One place to send job alerts to (`[[notify]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// POST the alert here as JSON (or as `template` renders it).
    pub webhook: Option<String>,
    /// A minijinja template for the webhook body, for services that want their
    /// own shape: `{"content": {{ text|tojson }}}` for Discord, say.
    pub template: Option<String>,
    /// Run this through `sh -c` with the alert as JSON on stdin and as
    /// `GANTRY_EVENT`, `GANTRY_JOB`, `GANTRY_RUN`, `GANTRY_STATUS`, `GANTRY_REASON`.
    pub command: Option<String>,
}

/// `[acme]` in gantry.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The account's contact address.
    pub email: String,
    /// The CA's directory URL.
    #[serde(default = "lets_encrypt")]
    pub directory: String,
    /// A PEM root to trust for the CA's own HTTPS (a test CA such as Pebble).
    pub ca_root: Option<std::path::PathBuf>,
    /// `http-01` (default) or `tls-alpn-01`.
    #[serde(default)]
    pub challenge: AcmeChallenge,
}

/// How the CA checks that this server answers for a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// A token at `http://HOST/.well-known/acme-challenge/` (port 80).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate in a TLS handshake on port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

fn lets_encrypt() -> String {
    instant_acme::LetsEncrypt::Production.url().to_owned()
}

/// gantry's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub domain: String,
    pub ssh_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub database_url: String,
    pub health_timeout: Duration,
    pub stop_grace: Duration,
    pub drain_timeout: Duration,
    pub docker_network: String,
    pub dashboard_host: String,
    /// `None`: the default stack, built here on first need.
    pub stack_image: Option<String>,
    pub stack_mirror: String,
    pub executors: usize,
    pub notify: Vec<NotifyTarget>,
    pub metrics_token: Option<String>,
    pub runs_keep: i64,
    pub runs_keep_days: i64,
    pub acme: Option<AcmeConfig>,
    pub proxy: gantry_proxy::Settings,
    /// `[apps.NAME]` tables, by app name.
    pub apps: std::collections::BTreeMap<String, AppSettings>,
    pub stack: StackSettings,
    pub runtimes: RuntimesSettings,
    pub backup: BackupSettings,
    pub runtime: RuntimeKind,
    pub swarm: SwarmSettings,
    /// The proxy runs as a service of its own (systemd's
    /// `gantry-proxy.service`, on sockets systemd keeps): serve neither
    /// starts nor restarts it.
    pub proxy_service: bool,
}

impl Config {
    /// Resolves settings: `overrides` win over `gantry.toml`, which wins over defaults.
    pub fn resolve(overrides: Overrides) -> Result<Config, ConfigError> {
        let home = match overrides.home {
            Some(home) => home,
            None => default_home()?,
        };
        let path = home.join("gantry.toml");
        let file = read_file(&path)?;
        let proxy = proxy_settings(&file.proxy).map_err(|message| ConfigError::Parse {
            path: path.clone(),
            message,
        })?;
        let domain = overrides
            .domain
            .or(file.domain)
            .unwrap_or_else(|| "localhost".into())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let database_url = overrides
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", home.join("gantry.db").display()));
        let runtime = overrides.runtime.or(file.runtime).unwrap_or_default();
        Ok(Config {
            runtime,
            swarm: file.swarm,
            dashboard_host: file
                .dashboard_host
                .unwrap_or_else(|| format!("gantry.{domain}"))
                .to_ascii_lowercase(),
            domain,
            ssh_listen: overrides
                .ssh_listen
                .or(file.ssh_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 2222))),
            http_listen: overrides
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            https_listen: overrides
                .https_listen
                .or(file.https_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            database_url,
            health_timeout: Duration::from_secs(file.health_timeout.unwrap_or(60)),
            stop_grace: Duration::from_secs(file.stop_grace.unwrap_or(10)),
            drain_timeout: Duration::from_secs(file.drain_timeout.unwrap_or(30)),
            docker_network: file.docker_network.unwrap_or_else(|| "gantry".into()),
            stack_image: file.stack_image.filter(|s| !s.trim().is_empty()),
            executors: file
                .executors
                .filter(|n| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            notify: file.notify,
            metrics_token: file.metrics_token.filter(|t| !t.is_empty()),
            runs_keep: file.runs_keep.filter(|n| *n >= 1).unwrap_or(200),
            runs_keep_days: file.runs_keep_days.filter(|n| *n >= 0).unwrap_or(90),
            acme: file.acme,
            proxy,
            apps: file.apps,
            stack: file.stack,
            runtimes: file.runtimes,
            backup: file.backup,
            proxy_service: overrides.proxy_service,
            stack_mirror: file
                .stack_mirror
                .unwrap_or_else(|| "http://deb.debian.org/debian".into()),
            home,
        })
    }

    /// Refuses a runtime the database cannot serve: a swarm's state must be
    /// shared by its managers. (The proxy, which has no database, never asks.)
    pub fn check_runtime(&self) -> Result<(), ConfigError> {
        if self.runtime == RuntimeKind::Swarm && !self.database_url.starts_with("postgres") {
            return Err(ConfigError::Invalid(
                "runtime = swarm needs a PostgreSQL database (--database-url postgres://…): \
                 the managers of a swarm share gantry's state, and SQLite is a file on one \
                 machine"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether the app's pushes go through the job queue (`deploy.queue = true`).
    pub fn deploy_queued(&self, app: &crate::names::AppName) -> bool {
        self.apps
            .get(app.as_str())
            .is_some_and(|settings| settings.deploy.queue)
    }

    /// The node labels the app's builds need (`build.requires`); empty:
    /// built on the manager.
    pub fn build_requires(&self, app: &crate::names::AppName) -> Requires {
        self.apps
            .get(app.as_str())
            .map(|settings| settings.build.requires.clone())
            .unwrap_or_default()
    }

    /// The public host name of an app.
    pub fn app_host(&self, app: &crate::names::AppName) -> String {
        format!("{app}.{}", self.domain)
    }

    /// The URL users open for an app (includes the port unless it is 80).
    pub fn app_url(&self, app: &crate::names::AppName) -> String {
        match self.http_listen.port() {
            80 => format!("http://{}", self.app_host(app)),
            port => format!("http://{}:{port}", self.app_host(app)),
        }
    }

    /// The dashboard's URL (includes the port unless it is 80).
    pub fn dashboard_url(&self) -> String {
        match self.http_listen.port() {
            80 => format!("http://{}", self.dashboard_host),
            port => format!("http://{}:{port}", self.dashboard_host),
        }
    }

    /// The git remote URL for an app, as users should add it.
    pub fn git_remote(&self, app: &crate::names::AppName) -> String {
        let host = if self.ssh_listen.ip().is_unspecified() || self.ssh_listen.ip().is_loopback() {
            if self.domain == "localhost" {
                "localhost".to_string()
            } else {
                self.domain.clone()
            }
        } else {
            self.ssh_listen.ip().to_string()
        };
        format!("ssh://git@{host}:{}/{app}", self.ssh_listen.port())
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.home.join("repos")
    }

    /// Host job definitions: `NAME.run` and optional `NAME.toml`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.home.join("jobs")
    }

    /// Run logs and artifacts, by job.
    pub fn runs_dir(&self) -> PathBuf {
        self.home.join("runs")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// This installation among the managers sharing a database: its host
    /// and home, the same across restarts.
    pub fn manager_id(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!("{host}:{}", self.home.display())
    }

    /// Certificates: `HOST.pem` (chain) and `HOST.key`.
    pub fn certs_dir(&self) -> PathBuf {
        self.home.join("certs")
    }

    /// The proxy's own directory: its control socket, pid file and saved
    /// routes. The proxy may run as a user of its own (`gantry install`),
    /// which owns this directory and nothing else of gantry's.
    pub fn proxy_dir(&self) -> PathBuf {
        self.home.join("proxy")
    }

    /// The proxy's control socket (`serve` drives the proxy through it).
    pub fn proxy_socket(&self) -> PathBuf {
        self.proxy_dir().join("proxy.sock")
    }

    /// What `gantry proxy` needs: listeners, files, settings.
    pub fn proxy_daemon(&self) -> gantry_proxy::daemon::DaemonConfig {
        gantry_proxy::daemon::DaemonConfig {
            http_listen: self.http_listen,
            https_listen: self.https_listen,
            socket: self.proxy_socket(),
            pid_file: self.proxy_dir().join("proxy.pid"),
            state_file: self.proxy_dir().join("state.json"),
            certs_dir: self.certs_dir(),
            settings: self.proxy.clone(),
            takeover: false,
        }
    }

    /// The control socket that hooks and the local CLI use to reach `serve`.
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir().join("gantry.sock")
    }

    /// Written by each `serve` as it starts (its pid and start time).
    pub fn boot_path(&self) -> PathBuf {
        self.run_dir().join("serve.boot")
    }
}

fn proxy_settings(file: &ProxyFileConfig) -> Result<gantry_proxy::Settings, String> {
    let mut settings = gantry_proxy::Settings::default();
    let secs = |v: Option<u64>, default: Duration| {
        v.filter(|s| *s > 0).map_or(default, Duration::from_secs)
    };
    settings.header_timeout = secs(file.header_timeout, settings.header_timeout);
    settings.idle_timeout = secs(file.idle_timeout, settings.idle_timeout);
    settings.response_timeout = secs(file.response_timeout, settings.response_timeout);
    settings.max_body = file.max_body.filter(|n| *n > 0);
    if let Some(balance) = &file.balance {
        settings.balance = balance
            .parse()
            .map_err(|e: String| format!("proxy.balance: {e}"))?;
    }
    settings.access_log = file.access_log.unwrap_or(false);
    Ok(settings)
}

/// `/var/lib/gantry` for root, `~/.local/share/gantry` for everyone else.
fn default_home() -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if is_root {
        return Ok(PathBuf::from("/var/lib/gantry"));
    }
    let home = std::env::var_os("HOME").ok_or(ConfigError::NoHome)?;
    Ok(PathBuf::from(home).join(".local/share/gantry"))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(toml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gantry.toml"), toml).expect("write");
        dir
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect("config");
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.ssh_listen.to_string(), "0.0.0.0:2222");
        assert_eq!(config.http_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(
            config.database_url,
            format!("sqlite://{}/gantry.db", dir.path().display())
        );
        assert_eq!(config.health_timeout, Duration::from_secs(60));
    }

    #[test]
    fn file_fills_in_and_flags_win() {
        let dir = home_with(
            "domain = \"apps.example.com\"\nhttp_listen = \"127.0.0.1:9000\"\nhealth_timeout = 5\n",
        );
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            http_listen: Some("127.0.0.1:9001".parse().expect("addr")),
            ..Default::default()
        })
        .expect("config");
        assert_eq!(config.domain, "apps.example.com");
        assert_eq!(config.http_listen.port(), 9001);
        assert_eq!(config.health_timeout, Duration::from_secs(5));
        let app = crate::names::AppName::parse("web").expect("name");
        assert_eq!(config.app_url(&app), "http://web.apps.example.com:9001");
    }

    #[test]
    fn per_app_tables_set_the_deploy_queue() {
        let dir = home_with("[apps.shop]\ndeploy.queue = true\n\n[apps.blog]\n");
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect("config");
        let name = |n| crate::names::AppName::parse(n).expect("name");
        assert!(config.deploy_queued(&name("shop")));
        assert!(!config.deploy_queued(&name("blog")));
        assert!(!config.deploy_queued(&name("other")));
        let dir = home_with("[apps.shop]\ndeploy.queued = true\n");
        let err = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect_err("typo accepted");
        assert!(err.to_string().contains("queued"), "{err}");
    }

    #[test]
    fn build_requires_takes_a_list_or_a_table_and_refuses_a_bare_word() {
        let dir = home_with(
            "[apps.shop]\nbuild.requires = [\"zone=b\", \"gpu=1\"]\n\n[apps.blog.build]\nrequires = { arch = \"arm64\" }\n",
        );
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect("config");
        let name = |n| crate::names::AppName::parse(n).expect("name");
        assert_eq!(config.build_requires(&name("shop")).0, ["gpu=1", "zone=b"]);
        assert_eq!(
            config.build_requires(&name("blog")).to_string(),
            "arch=arm64"
        );
        assert!(config.build_requires(&name("other")).is_empty());
        let dir = home_with("[apps.shop]\nbuild.requires = [\"gpu\"]\n");
        let err = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect_err("a bare word accepted");
        assert!(
            err.to_string()
                .contains("\"gpu\" is not a node label KEY=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn swarm_needs_postgres_and_says_why() {
        let dir = home_with("runtime = \"swarm\"\n");
        let err = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect("config")
        .check_runtime()
        .expect_err("swarm on SQLite accepted");
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
        let err = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            database_url: Some("sqlite:///tmp/x.db".into()),
            runtime: Some(RuntimeKind::Swarm),
            ..Default::default()
        })
        .expect("config")
        .check_runtime()
        .expect_err("--runtime swarm on SQLite accepted");
        assert!(err.to_string().contains("SQLite is a file"), "{err}");
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            database_url: Some("postgres://gantry@db/gantry".into()),
            ..Default::default()
        })
        .expect("swarm on postgres");
        config.check_runtime().expect("swarm on postgres");
        assert_eq!(config.runtime, RuntimeKind::Swarm);
        assert_eq!(config.swarm, SwarmSettings::default());
        // The flag wins over the file, and the default is Docker.
        let config = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            runtime: Some(RuntimeKind::Docker),
            ..Default::default()
        })
        .expect("docker");
        assert_eq!(config.runtime, RuntimeKind::Docker);
        assert!("kubernetes".parse::<RuntimeKind>().is_err());
    }

    #[test]
    fn unknown_key_is_a_clear_error() {
        let dir = home_with("domian = \"x\"\n");
        let err = Config::resolve(Overrides {
            home: Some(dir.path().into()),
            ..Default::default()
        })
        .expect_err("typo accepted");
        let message = err.to_string();
        assert!(
            message.contains("gantry.toml") && message.contains("domian"),
            "{message}"
        );
    }

    #[test]
    fn the_challenge_kind_reads_from_toml() {
        let config: AcmeConfig =
            toml::from_str("email = \"a@b.c\"\nchallenge = \"tls-alpn-01\"\n").expect("parse");
        assert_eq!(config.challenge, AcmeChallenge::TlsAlpn01);
        let config: AcmeConfig = toml::from_str("email = \"a@b.c\"\n").expect("parse");
        assert_eq!(config.challenge, AcmeChallenge::Http01);
        assert!(toml::from_str::<AcmeConfig>("email = \"a\"\nchallenge = \"dns\"\n").is_err());
    }
}
