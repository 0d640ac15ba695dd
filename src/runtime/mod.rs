//! The runtime seam: everything that starts, stops, lists, inspects, follows
//! the output of, or runs a one-off in an app's process goes through
//! [`Runtime`]. `deploy` and `jobs` hold an `Arc<dyn Runtime>` and never name
//! an engine; [`docker`] is the first implementation (the local Docker
//! engine), and a cluster runtime (Docker Swarm services) is a second one
//! beside it, without a change to `deploy`'s logic.
//!
//! The runtime knows processes, images and environments, never releases'
//! rules: what to run, how many and when is `deploy`'s to decide.
//!
//! Not through here: the build server's builder containers and the artifact
//! system's images, which are the local engine's own business (`build` and
//! `artifacts` use the engine directly, as `docker build` would).

pub mod docker;
pub mod swarm;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::names::AppName;

/// What the runtime could not do, in the engine's own words.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// One process of a release to start and keep running: replica `replica` of
/// process type `process`, restarted by the runtime if it crashes.
#[derive(Debug, Clone)]
pub struct ProcessSpec<'a> {
    pub app: &'a AppName,
    pub release: i64,
    pub image: &'a str,
    pub process: &'a str,
    pub replica: u32,
    /// `K=V`: the release's config vars and `PORT`.
    pub env: Vec<String>,
    /// A Procfile command, run through the shell; `None` runs the image's own.
    pub command: Option<&'a str>,
    /// The app's volumes and host directories (`storage:mount`).
    pub mounts: Vec<Mount>,
    /// Its process type's limits (`resources:set`).
    pub limits: crate::resources::Limits,
}

/// A process the runtime runs for an app.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub release: Option<i64>,
    pub process: String,
    pub replica: u32,
    pub running: bool,
}

/// How a process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The runtime's word for its state: running, restarting, exited, …
    pub state: String,
    /// Running and not in a restart loop.
    pub running: bool,
    /// How often the runtime has restarted it (after crashes).
    pub restarts: i64,
    pub exit_code: Option<i64>,
    /// RFC 3339, as the runtime reports it.
    pub started_at: String,
    /// When the process was made (unix seconds; 0: unknown): restarts keep it.
    pub created_at: i64,
    /// Where other processes (the proxy) reach it, if it has an address.
    pub address: Option<IpAddr>,
    /// Its last exit was the kernel killing it for memory (its limit).
    pub oom_killed: bool,
}

/// Where to start reading a process's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsFrom {
    /// The last `n` lines, then stop.
    Tail(usize),
    /// Everything from the start, then follow.
    Start,
    /// From unix second `since`, then follow.
    Since(i32),
}

/// A process of an app's release that the runtime (re)started on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarted {
    pub app: AppName,
    pub release: i64,
    pub id: String,
}

/// Whose one-off it is: found again by this, never taken for an app process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A one-off of an app's release (`run`, a release phase, a cron run):
    /// it joins the apps' network.
    App { app: AppName, release: i64 },
    /// A host job's run (`JOB#N`) in an image of its own.
    Job(String),
}

/// A host path or a named volume, mounted into a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// An absolute host path, or the name of a volume (see
    /// [`Runtime::ensure_volume`]).
    pub host: std::path::PathBuf,
    pub path: String,
    pub read_only: bool,
}

impl Mount {
    /// The app's `storage:mount`s, as the runtime mounts them.
    pub fn of_app(app: &AppName, mounts: &[crate::storage::Mount]) -> Vec<Mount> {
        mounts
            .iter()
            .map(|m| Mount {
                host: m.engine_source(app.as_str()).into(),
                path: m.path.clone(),
                read_only: false,
            })
            .collect()
    }
}

/// The app's stored mounts (`storage::to_stored`) as processes get them,
/// its named volumes made first if missing.
pub async fn mounts_of_app(
    runtime: &dyn Runtime,
    app: &AppName,
    stored: &str,
) -> Result<Vec<Mount>> {
    let mounts = crate::storage::parse_stored(stored);
    for mount in &mounts {
        if let crate::storage::Source::Volume(_) = mount.source {
            runtime
                .ensure_volume(app, &mount.engine_source(app.as_str()))
                .await?;
        }
    }
    Ok(Mount::of_app(app, &mounts))
}

/// A process the runtime stopped on its own: out of memory, say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    pub app: AppName,
    pub release: i64,
    pub process: String,
    pub replica: u32,
    pub id: String,
}

/// A process that runs once, to its end.
#[derive(Debug, Clone)]
pub struct Task {
    pub owner: Owner,
    pub image: String,
    pub command: Vec<String>,
    /// Instead of the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub mounts: Vec<Mount>,
    pub working_dir: Option<String>,
    /// It will be attached to a caller's streams ([`Runtime::attach_oneoff`]).
    pub interactive: Option<Interactive>,
}

impl Task {
    /// `command` through the shell in a one-off of an app's release (a
    /// release phase, a deploy script, a cron run), with `env`.
    pub fn shell(
        app: &AppName,
        release: i64,
        image: &str,
        command: &str,
        env: Vec<String>,
    ) -> Task {
        Task {
            owner: Owner::App {
                app: app.clone(),
                release,
            },
            image: image.to_owned(),
            command: vec!["/bin/sh".into(), "-c".into(), command.into()],
            entrypoint: None,
            env,
            mounts: Vec::new(),
            working_dir: None,
            interactive: None,
        }
    }
}

/// How an attached one-off's streams are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interactive {
    /// A terminal: stderr arrives on stdout.
    pub tty: bool,
    pub stdin: bool,
}

/// Where an attached one-off reads and writes.
pub struct Streams {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    /// A terminal: the process gets a TTY, and stderr arrives on stdout.
    pub tty: bool,
}

/// The streams one attach writes to (a caller's, teed into a run's log).
pub struct Attached<'a> {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub tty: bool,
    pub stdout: &'a mut (dyn AsyncWrite + Send + Unpin),
    pub stderr: &'a mut (dyn AsyncWrite + Send + Unpin),
}

/// Runs apps' processes. Every method names processes by the id the runtime gave.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Makes what app processes need before any starts (Docker: its network).
    async fn prepare(&self) -> Result<()>;

    /// Starts one process of a release; returns its id.
    async fn start_process(&self, spec: ProcessSpec<'_>) -> Result<String>;

    /// Starts a stopped process again.
    async fn start(&self, id: &str) -> Result<()>;

    async fn inspect(&self, id: &str) -> Result<Inspection>;

    /// Every process of `app`, running or not (one-offs are not among them).
    async fn list(&self, app: &AppName) -> Result<Vec<Instance>>;

    /// The process's output (stdout and stderr) as text, each line prefixed
    /// with its RFC 3339 time and a space when `timestamps`.
    fn logs(
        &self,
        id: &str,
        from: LogsFrom,
        timestamps: bool,
    ) -> BoxStream<'static, Result<String>>;

    /// Stops it (SIGTERM, SIGKILL after `grace`) and removes it.
    async fn stop_and_remove(&self, id: &str, grace: Duration);

    /// Processes of apps' releases as the runtime (re)starts them.
    fn restarts(&self) -> BoxStream<'static, Result<Restarted>>;

    /// Processes of apps' releases the kernel killed for memory.
    fn out_of_memory(&self) -> BoxStream<'static, Result<Killed>>;

    /// Makes the named volume of `app` if it does not exist; it outlives
    /// every process that mounts it.
    async fn ensure_volume(&self, app: &AppName, name: &str) -> Result<()>;

    /// The volumes made for `app`, by name.
    async fn volumes(&self, app: &AppName) -> Result<Vec<String>>;

    /// Removes a volume and its data.
    async fn remove_volume(&self, name: &str) -> Result<()>;

    /// Creates a one-off, not yet started; hold it in a [`OneOff`].
    async fn create_oneoff(&self, task: &Task) -> Result<String>;

    /// Starts a created one-off and passes its output to `output` until it
    /// ends; returns its exit code.
    async fn run_oneoff(
        &self,
        id: &str,
        output: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<i64>;

    /// Starts a created (interactive) one-off attached to `streams`; returns
    /// its exit code. A caller that stops reading has it killed.
    async fn attach_oneoff(&self, id: &str, streams: Attached<'_>) -> Result<i32>;

    /// A runtime that keeps each process type running itself, as a service
    /// rolled out task by task (Swarm), says so here; deploy then hands it
    /// whole process types instead of starting processes one by one.
    fn services(&self) -> Option<&dyn Services> {
        None
    }

    /// The memory a running process uses now (less the page cache, as
    /// `docker stats` counts it), if the runtime can say.
    async fn memory(&self, _id: &str) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// A process type of a release as a service: the runtime keeps `replicas`
/// tasks of it running across its machines, restarts them, and rolls a new
/// release out one task at a time, each new task healthy before an old one
/// stops, rolling back by itself when the new ones fail.
#[derive(Debug, Clone)]
pub struct ServiceSpec<'a> {
    pub app: &'a AppName,
    pub release: i64,
    /// The image as the local engine has it; the runtime gets it to every
    /// machine (Swarm: through the cluster's registry, by digest).
    pub image: &'a str,
    pub process: &'a str,
    pub replicas: u32,
    /// `K=V`: the release's config vars, `PORT` and `DYNO`'s type.
    pub env: Vec<String>,
    /// A Procfile command, run through the shell; `None` runs the image's own.
    pub command: Option<&'a str>,
    /// A web process's port: published on its machine, and health-checked
    /// over HTTP at `health_path`.
    pub port: Option<u16>,
    pub health_path: &'a str,
    /// How long a new task has to become healthy.
    pub health_timeout: Duration,
    /// SIGTERM to SIGKILL for an old task.
    pub stop_grace: Duration,
    pub limits: crate::resources::Limits,
    /// The app's storage: its tasks run where the volumes are.
    pub mounts: Vec<Mount>,
    /// Replace the tasks even if nothing changed (a restart).
    pub force: bool,
}

/// How a service's roll-out ended, read from the runtime's own record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rolled {
    /// Every task runs the new spec.
    Done,
    /// The new tasks failed; the runtime put the old ones back.
    RolledBack(String),
    /// The new tasks failed and there was nothing to go back to.
    Failed(String),
}

/// One task of an app's service.
#[derive(Debug, Clone)]
pub struct ServiceTask {
    pub id: String,
    pub app: AppName,
    pub process: String,
    pub release: Option<i64>,
    pub slot: u32,
    /// The machine's host name.
    pub node: String,
    /// The runtime's word for its state: running, starting, failed, …
    pub state: String,
    /// Running (and healthy, where it is checked), and meant to run.
    pub running: bool,
    /// Where a web task answers: its machine's address and published port.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Why it is in its state, when the runtime says.
    pub message: String,
    /// RFC 3339.
    pub since: String,
}

/// A machine the services run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub address: String,
    /// leader, manager or worker.
    pub role: String,
    /// active, drain or pause.
    pub availability: String,
    /// ready, down, …
    pub state: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Apps' tasks running on it.
    pub tasks: usize,
}

/// Whether a node takes tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Takes new tasks.
    Active,
    /// Takes none, and its tasks move to other nodes.
    Drain,
}

/// What a new machine needs to join the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    pub token: String,
    /// A manager's `HOST:PORT`.
    pub manager: String,
}

/// Services of apps (see [`Runtime::services`]).
#[async_trait::async_trait]
pub trait Services: Send + Sync {
    /// Creates the service or updates it to `spec`, and waits until the
    /// roll-out ends; `progress` gets a line when something changes.
    async fn roll_out(
        &self,
        spec: ServiceSpec<'_>,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Rolled>;

    /// Sets how many tasks of `process` run.
    async fn scale(&self, app: &AppName, process: &str, replicas: u32) -> Result<()>;

    /// The tasks of `app` (of every app: `None`) that are meant to run, on
    /// every machine.
    async fn tasks(&self, app: Option<&AppName>) -> Result<Vec<ServiceTask>>;

    /// The process types `app` has services for.
    async fn process_types(&self, app: &AppName) -> Result<Vec<String>>;

    /// Removes `app`'s service of `process`, or all of them; returns how many.
    async fn remove(&self, app: &AppName, process: Option<&str>) -> Result<usize>;

    /// The machines, with how many apps' tasks each runs.
    async fn nodes(&self) -> Result<Vec<Node>>;

    /// Sets labels (`None`: removes one) and availability of the node named
    /// `node` (its host name, or its id or a prefix of it).
    async fn update_node(
        &self,
        node: &str,
        labels: &[(String, Option<String>)],
        availability: Option<Availability>,
    ) -> Result<Node>;

    /// Replaces every app service's tasks one at a time, start-first, so
    /// the scheduler spreads them over the nodes again (it does not after a
    /// node comes back); returns the services, once done.
    async fn respread(
        &self,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Vec<String>>;

    /// How a worker joins.
    async fn join_info(&self) -> Result<JoinInfo>;
}

/// A created one-off: removed with [`OneOff::remove`], or in the background
/// when dropped, so one whose caller timed out, was cancelled or went away
/// never stays behind.
pub struct OneOff {
    runtime: Arc<dyn Runtime>,
    id: Option<String>,
}

impl OneOff {
    pub async fn create(runtime: &Arc<dyn Runtime>, task: &Task) -> Result<OneOff> {
        let id = runtime.create_oneoff(task).await?;
        Ok(OneOff {
            runtime: runtime.clone(),
            id: Some(id),
        })
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Runs it to its end; see [`Runtime::run_oneoff`].
    pub async fn run(&self, output: &mut (dyn for<'b> FnMut(&'b [u8]) + Send)) -> Result<i64> {
        self.runtime.run_oneoff(self.id(), output).await
    }

    /// Runs it attached; see [`Runtime::attach_oneoff`].
    pub async fn attach(&self, streams: Attached<'_>) -> Result<i32> {
        self.runtime.attach_oneoff(self.id(), streams).await
    }

    /// Removes it now, and waits for that.
    pub async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            self.runtime.stop_and_remove(&id, Duration::ZERO).await;
        }
    }
}

impl Drop for OneOff {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let runtime = self.runtime.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { runtime.stop_and_remove(&id, Duration::ZERO).await });
            }
        }
    }
}

/// Runs `task` to its end, passing each line of output (without its line
/// ending) to `on_line`; returns its exit code. Dropping the future (a
/// timeout, a cancel) removes the one-off.
pub async fn run_to_end(
    runtime: &Arc<dyn Runtime>,
    task: &Task,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<i64> {
    let oneoff = OneOff::create(runtime, task).await?;
    let mut lines = Lines::default();
    let outcome = oneoff
        .run(&mut |chunk: &[u8]| lines.push(chunk, &mut *on_line))
        .await;
    lines.finish(on_line);
    oneoff.remove().await;
    outcome
}

/// The engine's options for reading output from `from` (Docker's
/// container logs and Swarm's task logs take the same).
fn logs_options(from: LogsFrom, timestamps: bool) -> bollard::query_parameters::LogsOptions {
    let builder = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(timestamps);
    match from {
        LogsFrom::Tail(n) => builder.tail(&n.to_string()),
        LogsFrom::Start => builder.follow(true).tail("all"),
        LogsFrom::Since(since) => builder.follow(true).tail("all").since(since),
    }
    .build()
}

/// The last `lines` lines of a process's output.
pub async fn tail(runtime: &dyn Runtime, id: &str, lines: usize) -> Vec<String> {
    let mut stream = runtime.logs(id, LogsFrom::Tail(lines), false);
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk);
    }
    text.lines().map(str::to_owned).collect()
}

/// Splits output chunks into lines.
#[derive(Default)]
struct Lines {
    pending: String,
}

impl Lines {
    fn push(&mut self, chunk: &[u8], on_line: &mut (dyn FnMut(&str) + Send)) {
        self.pending.push_str(&String::from_utf8_lossy(chunk));
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            on_line(line.trim_end());
        }
    }

    fn finish(self, on_line: &mut (dyn FnMut(&str) + Send)) {
        if !self.pending.trim().is_empty() {
            on_line(self.pending.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_splits_into_lines_across_chunks() {
        let mut got = Vec::new();
        let mut lines = Lines::default();
        let mut push = |l: &str| got.push(l.to_owned());
        lines.push(b"one\ntw", &mut push);
        lines.push(b"o  \r\nthr", &mut push);
        lines.push(b"ee", &mut push);
        lines.finish(&mut push);
        assert_eq!(got, ["one", "two", "three"]);
    }
}
