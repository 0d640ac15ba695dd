//! Starting a release's web replicas and switching traffic to them.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::health;
use super::route::{address, route};
use super::spec::{app_data, release_env, web_spec, AppData, DeployError, WebSpec};
use crate::context::Gantry;
use crate::manifest::formation::Formation;
use crate::manifest::Manifest;
use crate::names::AppName;
use crate::runtime::{Instance, ProcessSpec};
use crate::store::Release;

/// A started container of one process type.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub process: String,
    /// Where a web replica answers; workers have none.
    pub addr: Option<SocketAddr>,
}

/// Containers of a release that are up (web: answering), not yet routed.
#[derive(Debug, Clone, Default)]
pub struct Started(pub Vec<Replica>);

impl Started {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The web replicas' addresses, for the route.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().filter_map(|r| r.addr).collect()
    }
}

/// Starts the release's whole formation: every process type of its manifest,
/// as many as the app is scaled to (else app.json's formation, else one).
pub async fn start_formation(
    gantry: &Gantry,
    release: &Release,
    formation: &Formation,
) -> Result<Started, DeployError> {
    let manifest = Manifest::from_stored(&release.manifest);
    let mut started = Started::default();
    for process in manifest.process_types() {
        let count = formation.count(&process, manifest.default_count(&process));
        if count == 0 {
            continue;
        }
        match start(gantry, release, &process, 1..=count).await {
            Ok(more) => started.0.extend(more.0),
            Err(err) => {
                discard(gantry, &started).await;
                return Err(err);
            }
        }
    }
    Ok(started)
}

/// The formation as text: `web=2 worker=1`.
pub fn describe_formation(release: &Release, formation: &Formation) -> String {
    let manifest = Manifest::from_stored(&release.manifest);
    let parts: Vec<String> = manifest
        .process_types()
        .iter()
        .map(|p| format!("{p}={}", formation.count(p, manifest.default_count(p))))
        .collect();
    parts.join(" ")
}

/// Starts replicas `numbers` of `release`'s `process` side by side: web replicas
/// must answer HTTP, workers must still be running a moment after they start. If
/// any fails, all of them are removed, and the error carries its last log lines.
pub async fn start(
    gantry: &Gantry,
    release: &Release,
    process: &str,
    numbers: RangeInclusive<u32>,
) -> Result<Started, DeployError> {
    let env = release_env(gantry, release)?;
    let spec = web_spec(gantry, release);
    let data = app_data(gantry, &release.app).await?;
    let manifest = Manifest::from_stored(&release.manifest);
    let command = if process == "web" {
        spec.command.clone()
    } else {
        manifest.command(process).map(str::to_owned)
    };
    let attempts = numbers.map(|n| {
        // Heroku's DYNO: `web.1`, `worker.2`.
        let mut env = env.clone();
        env.push(format!("DYNO={process}.{n}"));
        start_one(
            gantry,
            release,
            process,
            n,
            env,
            command.as_deref(),
            &spec,
            &data,
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut started = Started::default();
    let mut failure = None;
    for result in results {
        match result {
            Ok(replica) => started.0.push(replica),
            Err(err) => {
                failure.get_or_insert(err);
            }
        }
    }
    match failure {
        None => Ok(started),
        Some(err) => {
            discard(gantry, &started).await;
            Err(err)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_one(
    gantry: &Gantry,
    release: &Release,
    process: &str,
    number: u32,
    env: Vec<String>,
    command: Option<&str>,
    spec: &WebSpec,
    data: &AppData,
) -> Result<Replica, DeployError> {
    let runtime = &*gantry.runtime;
    let id = runtime
        .start_process(ProcessSpec {
            app: &release.app,
            release: release.version,
            image: &release.image,
            process,
            replica: number,
            env,
            command,
            mounts: data.mounts.clone(),
            limits: data.limits(process),
        })
        .await?;
    let checked = if process == "web" {
        health::wait_until_healthy(
            runtime,
            &id,
            release.port,
            spec.timeout,
            Some(0),
            &spec.path,
        )
        .await
        .map(Some)
    } else {
        // Workers are not health-checked; one that exits at once is broken.
        tokio::time::sleep(Duration::from_millis(500)).await;
        match runtime.inspect(&id).await {
            Ok(status) if status.running && status.restarts == 0 => Ok(None),
            Ok(status) => Err(health::HealthError::Crashed(status.exit_code)),
            Err(err) => Err(err.into()),
        }
    };
    match checked {
        Ok(addr) => Ok(Replica {
            id,
            process: process.to_owned(),
            addr,
        }),
        Err(reason) => {
            let logs = crate::runtime::tail(runtime, &id, 20).await;
            runtime.stop_and_remove(&id, Duration::ZERO).await;
            Err(DeployError::Unhealthy { reason, logs })
        }
    }
}

/// Throws away started replicas that will not be routed after all.
pub async fn discard(gantry: &Gantry, started: &Started) {
    futures_util::future::join_all(
        started
            .0
            .iter()
            .map(|r| gantry.runtime.stop_and_remove(&r.id, Duration::ZERO)),
    )
    .await;
}

/// Points the app's host at `started`, lets requests already on the old route
/// finish (up to `drain_timeout`), then stops every other container of the app.
/// Returns how many old containers were stopped.
pub async fn switch(gantry: &Gantry, app: &AppName, started: &Started) -> usize {
    let replaced = route(gantry, app, started.addrs()).await;
    let keep: Vec<&str> = started.0.iter().map(|r| r.id.as_str()).collect();
    let old: Vec<String> = match gantry.runtime.list(app).await {
        Ok(list) => list
            .into_iter()
            .filter(|c| !keep.contains(&c.id.as_str()))
            .map(|c| c.id)
            .collect(),
        Err(err) => {
            tracing::warn!(%app, error = %err, "cannot list old containers; they keep running");
            Vec::new()
        }
    };
    drain(gantry, app, replaced).await;
    stop_all(gantry, &old).await;
    old.len()
}

/// Waits for requests in flight on a replaced route, up to `drain_timeout`.
pub async fn drain(gantry: &Gantry, app: &AppName, replaced: Vec<SocketAddr>) {
    let left = gantry
        .routing
        .drain(&replaced, gantry.config.drain_timeout)
        .await;
    if left > 0 {
        tracing::warn!(%app, left, "drain timeout: stopping old containers with requests in flight");
    }
}

/// Stops (SIGTERM, then SIGKILL after `stop_grace`) and removes containers.
pub async fn stop_all(gantry: &Gantry, ids: &[String]) {
    let grace = gantry.config.stop_grace;
    futures_util::future::join_all(
        ids.iter()
            .map(|id| gantry.runtime.stop_and_remove(id, grace)),
    )
    .await;
}

/// Brings `process` of the live `release` to `want` containers, given the ones
/// already `running`: keeps the lowest-numbered, starts the missing (lowest free
/// numbers). Returns the web addresses to route (kept and new) and the ids of
/// the extra containers, to stop once the route no longer uses them.
pub async fn converge(
    gantry: &Gantry,
    release: &Release,
    process: &str,
    want: u32,
    mut running: Vec<Instance>,
) -> Result<(Vec<SocketAddr>, Vec<String>), DeployError> {
    running.sort_by_key(|c| c.replica);
    let want_n = usize::try_from(want).unwrap_or(usize::MAX);
    let extra: Vec<String> = running
        .split_off(want_n.min(running.len()))
        .into_iter()
        .map(|c| c.id)
        .collect();
    let kept = running;
    let mut addrs = Vec::new();
    if process == "web" {
        for c in &kept {
            if let Some(ip) = address(gantry, &c.id).await {
                addrs.push(SocketAddr::new(ip, release.port));
            }
        }
    }
    let taken: Vec<u32> = kept.iter().map(|c| c.replica).collect();
    let missing = (1..)
        .filter(|n| !taken.contains(n))
        .take(want_n.saturating_sub(kept.len()));
    for number in missing {
        let started = start(gantry, release, process, number..=number).await?;
        addrs.extend(started.addrs());
    }
    addrs.sort();
    Ok((addrs, extra))
}
