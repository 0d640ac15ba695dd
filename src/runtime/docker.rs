//! The local Docker engine as gantry's runtime: app processes are containers
//! created from a release's image, labelled so that gantry finds them again
//! after a restart, on gantry's bridge network, restarted by Docker's
//! `unless-stopped` policy. One-offs carry labels of their own
//! (`gantry.oneoff`, `gantry.job`), so deploys and scaling never touch them.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{
    logs_options, Attached, Inspection, Instance, Killed, LogsFrom, Mount, Owner, ProcessSpec,
    Restarted, Result, Runtime, RuntimeError, Task,
};
use crate::names::AppName;

pub const LABEL_APP: &str = "gantry.app";
pub const LABEL_RELEASE: &str = "gantry.release";
pub const LABEL_PROCESS: &str = "gantry.process";
pub const LABEL_REPLICA: &str = "gantry.replica";
pub const LABEL_ONEOFF: &str = "gantry.oneoff";
pub const LABEL_JOB: &str = "gantry.job";

impl From<bollard::errors::Error> for RuntimeError {
    fn from(err: bollard::errors::Error) -> Self {
        RuntimeError::Engine(Box::new(err))
    }
}

/// The Docker engine, with the network app containers join.
pub struct DockerRuntime {
    docker: Docker,
    network: String,
}

impl DockerRuntime {
    pub fn new(docker: Docker, network: &str) -> Self {
        DockerRuntime {
            docker,
            network: network.to_owned(),
        }
    }
}

/// `gantry-APP-TYPE.R-vN-XXXX`: process type, replica and release, plus a random
/// suffix so a restart of the same release can run beside the old container.
fn container_name(app: &AppName, release: i64, process: &str, replica: u32) -> String {
    use rand::RngExt;
    let suffix: u16 = rand::rng().random();
    format!("gantry-{app}-{process}.{replica}-v{release}-{suffix:04x}")
}

/// A container event of one of an app's processes, from its labels.
struct AppEvent {
    app: AppName,
    release: i64,
    process: String,
    replica: u32,
    id: String,
}

/// The engine's container events named `kind` (`start`, `oom`) of apps'
/// processes, each made into what `make` says.
fn app_events<T: Send + 'static>(
    docker: &Docker,
    kind: &str,
    make: fn(AppEvent) -> T,
) -> BoxStream<'static, Result<T>> {
    let filters = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("event", vec![kind.to_string()]),
        ("label", vec![LABEL_APP.to_string()]),
    ]);
    let options = EventsOptionsBuilder::default().filters(&filters).build();
    docker
        .events(Some(options))
        .filter_map(move |event| async move {
            let event = match event {
                Ok(event) => event,
                Err(err) => return Some(Err(RuntimeError::from(err))),
            };
            let actor = event.actor?;
            let (id, attributes) = (actor.id?, actor.attributes?);
            Some(Ok(make(AppEvent {
                app: attributes
                    .get(LABEL_APP)
                    .and_then(|a| AppName::parse(a).ok())?,
                release: attributes.get(LABEL_RELEASE)?.parse().ok()?,
                process: attributes
                    .get(LABEL_PROCESS)
                    .cloned()
                    .unwrap_or_else(|| "web".into()),
                replica: attributes
                    .get(LABEL_REPLICA)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1),
                id,
            })))
        })
        .boxed()
}

/// Docker's `binds` for `mounts` (a relative source is a named volume).
fn binds(mounts: &[Mount]) -> Option<Vec<String>> {
    let binds: Vec<String> = mounts
        .iter()
        .map(|m| {
            format!(
                "{}:{}{}",
                m.host.display(),
                m.path,
                if m.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    (!binds.is_empty()).then_some(binds)
}

/// Waits for a container to stop and returns its exit code (`None`: it
/// vanished). bollard reports a non-zero exit as an error; here it is a code.
async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>, bollard::errors::Error> {
    let mut wait =
        docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Ok(Some(response.status_code)),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
        Some(Err(err)) => Err(err),
        None => Ok(None),
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    /// Creates the bridge network app containers join, if missing.
    async fn prepare(&self) -> Result<()> {
        let docker = &self.docker;
        if docker.inspect_network(&self.network, None).await.is_ok() {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".into()),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Another gantry process created it meanwhile.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn start_process(&self, spec: ProcessSpec<'_>) -> Result<String> {
        let docker = &self.docker;
        let name = container_name(spec.app, spec.release, spec.process, spec.replica);
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), spec.app.to_string()),
            (LABEL_RELEASE.to_owned(), spec.release.to_string()),
            (LABEL_PROCESS.to_owned(), spec.process.to_owned()),
            (LABEL_REPLICA.to_owned(), spec.replica.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.to_owned()),
            env: Some(spec.env),
            // A Procfile command runs through the shell, as on Heroku.
            cmd: spec
                .command
                .map(|c| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.to_owned()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                init: Some(true),
                binds: binds(&spec.mounts),
                memory: spec.limits.memory,
                // No swap beyond the limit: a process over it is killed, and says so.
                memory_swap: spec.limits.memory,
                nano_cpus: spec.limits.nano_cpus(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await?;
        if let Err(err) = docker.start_container(&created.id, None).await {
            let remove = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&created.id, Some(remove)).await;
            return Err(err.into());
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        Ok(self.docker.start_container(id, None).await?)
    }

    async fn inspect(&self, id: &str) -> Result<Inspection> {
        let info = self.docker.inspect_container(id, None).await?;
        let address = info
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|networks| networks.get(&self.network).cloned())
            .and_then(|network| network.ip_address)
            .and_then(|ip| ip.parse().ok());
        let state = info.state.unwrap_or_default();
        let created_at = info.created.map_or(0, |t| t.unix_timestamp());
        Ok(Inspection {
            created_at,
            running: state.running.unwrap_or(false) && !state.restarting.unwrap_or(false),
            state: state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            restarts: info.restart_count.unwrap_or(0),
            exit_code: state.exit_code,
            started_at: state.started_at.unwrap_or_default(),
            address,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    async fn list(&self, app: &AppName) -> Result<Vec<Instance>> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let release = labels.get(LABEL_RELEASE).and_then(|v| v.parse().ok());
                let running = c.state.map(|s| s.to_string()) == Some("running".to_owned());
                Some(Instance {
                    id: c.id?,
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    release,
                    process: labels
                        .get(LABEL_PROCESS)
                        .cloned()
                        .unwrap_or_else(|| "web".into()),
                    replica: labels
                        .get(LABEL_REPLICA)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    running,
                })
            })
            .collect())
    }

    fn logs(
        &self,
        id: &str,
        from: LogsFrom,
        timestamps: bool,
    ) -> BoxStream<'static, Result<String>> {
        let options = logs_options(from, timestamps);
        self.docker
            .logs(id, Some(options))
            .map(|chunk| chunk.map(|c| c.to_string()).map_err(RuntimeError::from))
            .boxed()
    }

    async fn stop_and_remove(&self, id: &str, grace: Duration) {
        let docker = &self.docker;
        let grace = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let stop = StopContainerOptionsBuilder::default().t(grace).build();
        if let Err(err) = docker.stop_container(id, Some(stop)).await {
            tracing::debug!(container = id, error = %err, "stop failed");
        }
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(err) = docker.remove_container(id, Some(remove)).await {
            tracing::warn!(container = id, error = %err, "remove failed");
        }
    }

    /// The engine's container `start` events of apps' containers: a restart
    /// policy after a crash, or the engine itself restarting.
    fn restarts(&self) -> BoxStream<'static, Result<Restarted>> {
        app_events(&self.docker, "start", |event| Restarted {
            app: event.app,
            release: event.release,
            id: event.id,
        })
    }

    /// The engine's container `oom` events of apps' processes.
    fn out_of_memory(&self) -> BoxStream<'static, Result<Killed>> {
        app_events(&self.docker, "oom", |event| Killed {
            app: event.app,
            release: event.release,
            process: event.process,
            replica: event.replica,
            id: event.id,
        })
    }

    async fn ensure_volume(&self, app: &AppName, name: &str) -> Result<()> {
        create_volume(&self.docker, app, name).await
    }

    async fn volumes(&self, app: &AppName) -> Result<Vec<String>> {
        app_volumes(&self.docker, app).await
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await?;
        Ok(())
    }

    async fn memory(&self, id: &str) -> Result<Option<u64>> {
        container_memory(&self.docker, id).await
    }

    async fn create_oneoff(&self, task: &Task) -> Result<String> {
        let (labels, network, name) = match &task.owner {
            Owner::App { app, release } => {
                let labels = HashMap::from([
                    (LABEL_ONEOFF.to_owned(), app.to_string()),
                    (LABEL_RELEASE.to_owned(), release.to_string()),
                ]);
                // `run APP`'s attached one-offs are named, to tell them apart in `docker ps`.
                let name = task.interactive.map(|_| {
                    use rand::RngExt;
                    format!(
                        "gantry-{app}-run-{:06x}",
                        rand::rng().random::<u32>() & 0xff_ffff
                    )
                });
                (labels, Some(self.network.clone()), name)
            }
            Owner::Job(run) => (
                HashMap::from([(LABEL_JOB.to_owned(), run.clone())]),
                None,
                None,
            ),
        };
        let binds = binds(&task.mounts);
        let interactive = task.interactive;
        let stdin = interactive.is_some_and(|i| i.stdin);
        let body = ContainerCreateBody {
            image: Some(task.image.clone()),
            entrypoint: task.entrypoint.clone(),
            cmd: Some(task.command.clone()),
            env: Some(task.env.clone()),
            working_dir: task.working_dir.clone(),
            labels: Some(labels),
            tty: interactive.map(|i| i.tty),
            open_stdin: interactive.map(|_| stdin),
            stdin_once: interactive.map(|_| true),
            attach_stdin: interactive.map(|_| stdin),
            attach_stdout: interactive.map(|_| true),
            attach_stderr: interactive.map(|_| true),
            host_config: Some(HostConfig {
                network_mode: network,
                binds,
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = name.map(|name| CreateContainerOptionsBuilder::default().name(&name).build());
        Ok(self.docker.create_container(options, body).await?.id)
    }

    async fn run_oneoff(
        &self,
        id: &str,
        output: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<i64> {
        let docker = &self.docker;
        docker.start_container(id, None).await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let mut logs = docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            output(&chunk.into_bytes());
        }
        Ok(exit_code(docker, id).await?.unwrap_or(1))
    }

    async fn attach_oneoff(&self, id: &str, streams: Attached<'_>) -> Result<i32> {
        let docker = &self.docker;
        let Attached {
            stdin,
            tty,
            stdout,
            stderr,
        } = streams;
        let options = AttachContainerOptionsBuilder::default()
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = docker.attach_container(id, Some(options)).await?;
        docker.start_container(id, None).await?;

        let mut input = attached.input;
        let feed = stdin.map(|mut stdin| {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut input).await;
                // Without a terminal, half-close: with stdin_once the process sees end
                // of input. On a terminal, end of input is ^D (sent as data), and
                // closing would hang the terminal up under the process.
                if !tty {
                    let _ = input.shutdown().await;
                }
            })
        });
        let mut output = attached.output;
        while let Some(chunk) = output.next().await {
            let written = match chunk {
                Ok(LogOutput::StdErr { message }) => stderr.write_all(&message).await,
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    stdout.write_all(&message).await
                }
                Ok(LogOutput::StdIn { .. }) => Ok(()),
                Err(err) => {
                    tracing::debug!(error = %err, "one-off output ended");
                    break;
                }
            };
            if written.is_err() {
                // The caller went away: stop the process rather than leave it running.
                let _ = docker
                    .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
                    .await;
                break;
            }
            let _ = stdout.flush().await;
        }
        if let Some(feed) = feed {
            feed.abort();
        }
        let code = exit_code(docker, id).await?.unwrap_or(1);
        Ok(i32::try_from(code).unwrap_or(1))
    }
}

/// Makes the app's named volume on `docker`'s machine (one that exists is
/// left as it is).
pub(super) async fn create_volume(docker: &Docker, app: &AppName, name: &str) -> Result<()> {
    let request = bollard::models::VolumeCreateRequest {
        name: Some(name.to_owned()),
        labels: Some(HashMap::from([(
            crate::storage::LABEL_APP.to_owned(),
            app.to_string(),
        )])),
        ..Default::default()
    };
    docker.create_volume(request).await?;
    Ok(())
}

/// The app's named volumes on `docker`'s machine, by name.
pub(super) async fn app_volumes(docker: &Docker, app: &AppName) -> Result<Vec<String>> {
    let filters = HashMap::from([(
        "label",
        vec![format!("{}={app}", crate::storage::LABEL_APP)],
    )]);
    let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let listed = docker.list_volumes(Some(options)).await?;
    let mut names: Vec<String> = listed
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The memory a container uses now, as `docker stats` tells it (without the
/// page cache); `None` when the engine does not say.
pub async fn container_memory(docker: &Docker, id: &str) -> Result<Option<u64>> {
    let options = bollard::query_parameters::StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let mut stats = docker.stats(id, Some(options));
    let Some(sample) = stats.next().await.transpose()? else {
        return Ok(None);
    };
    let Some(memory) = sample.memory_stats else {
        return Ok(None);
    };
    let Some(usage) = memory.usage else {
        return Ok(None);
    };
    // What `docker stats` leaves out: the page cache (cgroup v2 names
    // it inactive_file, v1 total_inactive_file or cache).
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
                .or_else(|| s.get("cache"))
        })
        .copied()
        .unwrap_or(0);
    Ok(Some(usage.saturating_sub(cache)))
}
