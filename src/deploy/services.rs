//! Deploying where the runtime keeps services itself (Swarm): each process
//! type becomes (or is updated to) a service of the release (the runtime
//! gets its image to every node), and the runtime rolls it out task
//! by task, start-first, rolling back by itself when the new tasks fail. The
//! route follows the running web tasks on every node ([`follow_tasks`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::route::route;
use super::spec::{app_data, formation, release_env, web_spec, ProcessInfo};
use crate::context::Gantry;
use crate::manifest::Manifest;
use crate::names::AppName;
use crate::runtime::{Rolled, ServiceSpec, ServiceTask, Services};
use crate::store::Release;

/// Puts `release` live as services: every process type of its manifest at
/// the app's formation (a type no longer in it is removed). `force` replaces
/// tasks whose spec did not change (a restart). `Err` is a one-line reason.
pub async fn roll_out(
    gantry: &Gantry,
    services: &dyn Services,
    release: &Release,
    progress: &mut (dyn Progress + Send),
    force: bool,
) -> Result<(), String> {
    let t = Instant::now();
    let app = &release.app;
    let manifest = Manifest::from_stored(&release.manifest);
    let (formation, _) = formation(gantry, app).await.map_err(|e| e.to_string())?;
    let env = release_env(gantry, release).map_err(|e| e.to_string())?;
    let web = web_spec(gantry, release);
    let data = app_data(gantry, app).await.map_err(|e| e.to_string())?;
    let mut types = manifest.process_types();
    // Web first: a worker of the new release never runs beside an old web.
    types.sort_by_key(|p| p != "web");
    for process in &types {
        let replicas = formation.count(process, manifest.default_count(process));
        let mut env = env.clone();
        env.push(format!("DYNO={process}"));
        let command = if process == "web" {
            web.command.clone()
        } else {
            manifest.command(process).map(str::to_owned)
        };
        let spec = ServiceSpec {
            app,
            release: release.version,
            image: &release.image,
            process,
            replicas,
            env,
            command: command.as_deref(),
            port: (process == "web").then_some(release.port),
            health_path: &web.path,
            health_timeout: web.timeout,
            stop_grace: gantry.config.stop_grace,
            limits: data.limits(process),
            mounts: data.mounts.clone(),
            force,
        };
        progress.line(&format!(
            "{process}: {replicas} task(s) of v{} on the swarm, each new one healthy before an old one stops",
            release.version
        ));
        let rolled = services
            .roll_out(spec, &mut |line: &str| progress.line(&format!("  {line}")))
            .await
            .map_err(|e| format!("cannot roll {process} out on the swarm: {e}"))?;
        match rolled {
            Rolled::Done => {}
            Rolled::RolledBack(why) => {
                progress.error(&format!("{process} of v{} failed: {why}", release.version));
                return Err(format!(
                    "the new release failed on the swarm, and Swarm rolled {process} back to what ran before"
                ));
            }
            Rolled::Failed(why) => {
                progress.error(&format!("{process} of v{} failed: {why}", release.version));
                return Err(format!(
                    "the new release never became healthy on the swarm: {why}"
                ));
            }
        }
    }
    // Services of process types the release no longer has.
    if let Ok(running) = services.process_types(app).await {
        for process in running.iter().filter(|p| !types.contains(p)) {
            match services.remove(app, Some(process)).await {
                Ok(_) => progress.line(&format!("removed the {process} service")),
                Err(err) => progress.error(&format!("cannot remove the {process} service: {err}")),
            }
        }
    }
    let recorded = async {
        gantry
            .store
            .set_current_release(app, release.version)
            .await?;
        gantry.store.set_stopped(app, false).await
    };
    recorded
        .await
        .map_err(|e| format!("cannot record the live release: {e}"))?;
    let routed = route_tasks(gantry, services, app)
        .await
        .map_err(|e| format!("cannot route {app}: {e}"))?;
    progress.line(&format!(
        "routing {} to v{} ({routed} web task(s))",
        gantry.config.app_host(app),
        release.version
    ));
    progress.line(&format!("deployed in {:.1}s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Takes the lock that lets one deploy of `app` run at a time across every
/// manager of the swarm (held until the lease is dropped); `Err` says why
/// this one cannot run.
pub async fn lock_deploy(
    gantry: &Gantry,
    app: &AppName,
) -> Result<crate::store::DeployLease, String> {
    match gantry.store.try_lock_deploy(app.as_str()).await {
        Ok(Some(lease)) => Ok(lease),
        Ok(None) => Err(format!(
            "another manager is deploying {app} right now; this deploy did not run"
        )),
        Err(err) => Err(format!("cannot take {app}'s deploy lock: {err}")),
    }
}

/// The running web tasks' endpoints, on every node.
async fn web_endpoints(services: &dyn Services, app: &AppName) -> anyhow::Result<Vec<SocketAddr>> {
    let tasks = services.tasks(Some(app)).await?;
    Ok(endpoints(&tasks, app))
}

/// The endpoints of `app`'s running web tasks among `tasks`, in order.
fn endpoints(tasks: &[ServiceTask], app: &AppName) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = tasks
        .iter()
        .filter(|t| t.running && t.process == "web" && &t.app == app)
        .filter_map(|t| t.endpoint)
        .collect();
    addrs.sort();
    addrs
}

/// Routes the app to its running web tasks; returns how many.
pub async fn route_tasks(
    gantry: &Gantry,
    services: &dyn Services,
    app: &AppName,
) -> anyhow::Result<usize> {
    let addrs = web_endpoints(services, app).await?;
    let n = addrs.len();
    route(gantry, app, addrs).await;
    Ok(n)
}

/// Every second until `shutdown`: routes each live app to the web tasks
/// that run now, wherever Swarm put them (a task restarted, moved off a
/// drained or dead node, or added by a roll-out). Swarm has no task events.
pub async fn follow_tasks(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let Some(services) = gantry.runtime.services() else {
        return;
    };
    let mut routed: HashMap<AppName, Vec<SocketAddr>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(apps) = gantry.store.list_apps().await else {
            continue;
        };
        // Every app's tasks in one listing, not one per app each second.
        let tasks = match services.tasks(None).await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the apps' tasks");
                continue;
            }
        };
        for app in apps {
            if app.stopped || app.current_release.is_none() {
                continue;
            }
            let addrs = endpoints(&tasks, &app.name);
            if routed.get(&app.name) != Some(&addrs) {
                tracing::info!(app = %app.name, tasks = addrs.len(), "routing to the running web tasks");
                route(&gantry, &app.name, addrs.clone()).await;
                routed.insert(app.name.clone(), addrs);
            }
        }
    }
}

/// The app's tasks, as `ps` shows them.
pub async fn list(services: &dyn Services, app: &AppName) -> anyhow::Result<Vec<ProcessInfo>> {
    Ok(services
        .tasks(Some(app))
        .await?
        .into_iter()
        .map(|t| ProcessInfo {
            name: format!("{}.{} on {}", t.process, t.slot, t.node),
            process: t.process,
            replica: t.slot,
            release: t.release,
            state: if t.message.is_empty() || t.running {
                t.state
            } else {
                format!("{} ({})", t.state, t.message)
            },
            restarts: 0,
            started_at: t.since,
        })
        .collect())
}

/// Brings the live release's services to the app's formation and waits
/// until the tasks run.
pub async fn converge(
    gantry: &Gantry,
    services: &dyn Services,
    release: &Release,
) -> anyhow::Result<()> {
    let mut progress = super::progress::TextProgress::default();
    roll_out(gantry, services, release, &mut progress, false)
        .await
        .map_err(anyhow::Error::msg)
}

/// Scales every service of the app to none; the route goes empty.
pub async fn stop(
    gantry: &Gantry,
    services: &dyn Services,
    app: &AppName,
) -> anyhow::Result<usize> {
    route(gantry, app, Vec::new()).await;
    let types = services.process_types(app).await?;
    for process in &types {
        services.scale(app, process, 0).await?;
    }
    Ok(types.len())
}
