//! App containers in the Docker engine: created from a release's image, labelled
//! so that gantry can find them again after a restart, on gantry's network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::names::AppName;
use crate::store::Release;

pub const LABEL_APP: &str = "gantry.app";
pub const LABEL_RELEASE: &str = "gantry.release";
pub const LABEL_PROCESS: &str = "gantry.process";
pub const LABEL_REPLICA: &str = "gantry.replica";

/// A container gantry runs for an app.
#[derive(Debug, Clone)]
pub struct AppContainer {
    pub id: String,
    pub name: String,
    pub release: Option<i64>,
    pub process: String,
    pub replica: u32,
    pub running: bool,
}

/// How a container is doing, as far as a deploy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Running and not in a restart loop.
    pub running: bool,
    /// How often Docker has restarted it (its restart policy after a crash).
    pub restarts: i64,
    pub exit_code: Option<i64>,
}

/// Creates the bridge network app containers join, if missing.
pub async fn ensure_network(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    if docker.inspect_network(name, None).await.is_ok() {
        return Ok(());
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(()),
        // Another gantry process created it meanwhile.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// `gantry-APP-TYPE.R-vN-XXXX`: process type, replica and release, plus a random
/// suffix so a restart of the same release can run beside the old container.
pub fn container_name(release: &Release, process: &str, replica: u32) -> String {
    use rand::RngExt;
    let suffix: u16 = rand::rng().random();
    format!(
        "gantry-{}-{process}.{replica}-v{}-{suffix:04x}",
        release.app, release.version
    )
}

/// Creates and starts replica `replica` of `release`'s `process` with `env` (its
/// config vars and `PORT`) and `command` (`None`: the image's own). Returns the
/// container's id.
pub async fn start_process(
    docker: &Docker,
    network: &str,
    release: &Release,
    process: &str,
    replica: u32,
    env: Vec<String>,
    command: Option<&str>,
) -> Result<String, bollard::errors::Error> {
    let name = container_name(release, process, replica);
    let labels = HashMap::from([
        (LABEL_APP.to_owned(), release.app.to_string()),
        (LABEL_RELEASE.to_owned(), release.version.to_string()),
        (LABEL_PROCESS.to_owned(), process.to_owned()),
        (LABEL_REPLICA.to_owned(), replica.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(release.image.clone()),
        env: Some(env),
        // A Procfile command runs through the shell, as on Heroku.
        cmd: command.map(|c| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.to_owned()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            init: Some(true),
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
        return Err(err);
    }
    Ok(created.id)
}

/// Starts a stopped container again.
pub async fn start(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    docker.start_container(id, None).await
}

/// The container's address on `network`.
pub async fn address(docker: &Docker, id: &str, network: &str) -> Option<IpAddr> {
    let info = docker.inspect_container(id, None).await.ok()?;
    let networks = info.network_settings?.networks?;
    networks.get(network)?.ip_address.as_deref()?.parse().ok()
}

pub async fn status(docker: &Docker, id: &str) -> Result<Status, bollard::errors::Error> {
    let info = docker.inspect_container(id, None).await?;
    let state = info.state.unwrap_or_default();
    Ok(Status {
        running: state.running.unwrap_or(false) && !state.restarting.unwrap_or(false),
        restarts: info.restart_count.unwrap_or(0),
        exit_code: state.exit_code,
    })
}

/// What `ps` shows of a container.
#[derive(Debug, Clone)]
pub struct Details {
    /// Docker's state: running, restarting, exited, …
    pub state: String,
    pub restarts: i64,
    /// RFC 3339, as Docker reports it.
    pub started_at: String,
}

pub async fn details(docker: &Docker, id: &str) -> Result<Details, bollard::errors::Error> {
    let info = docker.inspect_container(id, None).await?;
    let state = info.state.unwrap_or_default();
    Ok(Details {
        state: state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        restarts: info.restart_count.unwrap_or(0),
        started_at: state.started_at.unwrap_or_default(),
    })
}

/// The container's last `lines` lines of output (stdout and stderr).
pub async fn tail_logs(docker: &Docker, id: &str, lines: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text.lines().map(str::to_owned).collect()
}

/// Stops with SIGTERM, SIGKILL after `grace`, then removes the container.
pub async fn stop_and_remove(docker: &Docker, id: &str, grace: Duration) {
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

/// Every container gantry made for `app`, running or not.
pub async fn list_for_app(
    docker: &Docker,
    app: &AppName,
) -> Result<Vec<AppContainer>, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let release = labels.get(LABEL_RELEASE).and_then(|v| v.parse().ok());
            let running = c.state.map(|s| s.to_string()) == Some("running".to_owned());
            Some(AppContainer {
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

/// Waits for a container to stop and returns its exit code (`None`: it
/// vanished). bollard reports a non-zero exit as an error; here it is a code.
pub async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>, bollard::errors::Error> {
    use futures_util::StreamExt;
    let mut wait =
        docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Ok(Some(response.status_code)),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
        Some(Err(err)) => Err(err),
        None => Ok(None),
    }
}
