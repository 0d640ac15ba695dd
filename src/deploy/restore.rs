//! Bringing apps back when `serve` starts, and keeping them as the store says
//! (reconcile, every 30 s): each app's live release runs its formation, reusing
//! the containers that survived (Docker keeps them running across a gantry
//! restart), and its route is rebuilt. Containers of other releases, left by a
//! deploy that was interrupted, are removed.

use std::time::Duration;

use super::health;
use super::replicas;
use super::route::route;
use super::spec::{formation, web_spec};
use crate::context::Gantry;
use crate::manifest::Manifest;
use crate::names::AppName;
use crate::runtime::Instance;

pub async fn restore(gantry: &Gantry) -> bool {
    match gantry.store.fail_interrupted_releases().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("marked {n} interrupted deploy(s) as failed"),
        Err(err) => tracing::error!(error = %err, "cannot mark interrupted deploys"),
    }
    let apps = match gantry.store.list_apps().await {
        Ok(apps) => apps,
        Err(err) => {
            tracing::error!(error = %err, "cannot list apps to restore");
            return false;
        }
    };
    let restores = apps.into_iter().map(|app| async move {
        let _lock = gantry.locks.get(&app.name).lock_owned().await;
        match restore_app(gantry, &app.name).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(app = %app.name, error = %err, "cannot restore app");
                false
            }
        }
    });
    futures_util::future::join_all(restores)
        .await
        .into_iter()
        .all(|ok| ok)
}

/// Every 30 s: restores apps whose containers or route differ from what the
/// store says. Apps busy with a deploy are skipped, and a container Docker is
/// restarting (its backoff after a crash) counts as present.
pub async fn reconcile_forever(
    gantry: std::sync::Arc<Gantry>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(apps) = gantry.store.list_apps().await else {
            continue;
        };
        // The proxy serves what serve routed, nothing stale.
        gantry.routing.verify().await;
        for app in apps {
            let Ok(_lock) = gantry.locks.get(&app.name).try_lock_owned() else {
                continue;
            };
            match drifted(&gantry, &app.name).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(app = %app.name, "reconciling: containers or route differ from the store");
                    if let Err(err) = restore_app(&gantry, &app.name).await {
                        tracing::warn!(app = %app.name, error = %err, "reconcile failed");
                    }
                }
                Err(err) => tracing::warn!(app = %app.name, error = %err, "cannot check app"),
            }
        }
    }
}

/// Whether what runs differs from the live release's formation.
async fn drifted(gantry: &Gantry, app: &AppName) -> anyhow::Result<bool> {
    // Swarm keeps its services at their counts; the task follower routes them.
    if gantry.runtime.services().is_some() {
        return Ok(false);
    }
    let containers = gantry.runtime.list(app).await?;
    let (formation, stopped) = formation(gantry, app).await?;
    let current = gantry.store.current_release(app).await?;
    let (Some(release), false) = (current, stopped) else {
        return Ok(!containers.is_empty());
    };
    let manifest = Manifest::from_stored(&release.manifest);
    let mut expected = 0;
    for process in manifest.process_types() {
        let want = usize::try_from(formation.count(&process, manifest.default_count(&process)))
            .unwrap_or(0);
        let mine = containers
            .iter()
            .filter(|c| c.release == Some(release.version) && c.process == process)
            .count();
        if mine != want {
            return Ok(true);
        }
        if process == "web" {
            let routed = gantry
                .routing
                .lookup(&gantry.config.app_host(app))
                .map_or(0, |r| r.backends().len());
            if routed != want {
                return Ok(true);
            }
        }
        expected += want;
    }
    Ok(containers.len() != expected)
}

async fn restore_app(gantry: &Gantry, app: &AppName) -> anyhow::Result<()> {
    if let Some(services) = gantry.runtime.services() {
        // The swarm kept the services running while serve was away.
        let (_, stopped) = formation(gantry, app).await?;
        if !stopped {
            super::services::route_tasks(gantry, services, app).await?;
        }
        return Ok(());
    }
    let runtime = &*gantry.runtime;
    let containers = runtime.list(app).await?;
    let (formation, stopped) = formation(gantry, app).await?;
    let release = match gantry.store.current_release(app).await? {
        Some(release) if !stopped => release,
        current => {
            // Never deployed (leftovers of an interrupted first deploy), or stopped.
            let ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
            replicas::stop_all(gantry, &ids).await;
            if current.is_some() {
                route(gantry, app, Vec::new()).await;
            }
            return Ok(());
        }
    };
    let manifest = Manifest::from_stored(&release.manifest);
    let types = manifest.process_types();
    let mut web_addrs = Vec::new();
    let mut survivors: Vec<Instance> = Vec::new();
    for c in containers {
        if c.release != Some(release.version) || !types.contains(&c.process) {
            tracing::info!(%app, container = %c.name, "removing a container the live release does not use");
            runtime
                .stop_and_remove(&c.id, gantry.config.stop_grace)
                .await;
            continue;
        }
        if !c.running {
            runtime.start(&c.id).await?;
        }
        if c.process == "web" {
            // A web replica must still answer; one that does not is replaced.
            let spec = web_spec(gantry, &release);
            let check = health::wait_until_healthy(
                runtime,
                &c.id,
                release.port,
                spec.timeout,
                None,
                &spec.path,
            );
            if let Err(err) = check.await {
                tracing::warn!(%app, container = %c.name, error = %err, "replacing an unhealthy replica");
                runtime.stop_and_remove(&c.id, Duration::ZERO).await;
                continue;
            }
        }
        survivors.push(c);
    }
    let mut extra = Vec::new();
    for process in &types {
        let want = formation.count(process, manifest.default_count(process));
        let mine: Vec<Instance> = survivors
            .iter()
            .filter(|c| &c.process == process)
            .cloned()
            .collect();
        let (addrs, more_extra) = replicas::converge(gantry, &release, process, want, mine).await?;
        if process == "web" {
            web_addrs = addrs;
        }
        extra.extend(more_extra);
    }
    route(gantry, app, web_addrs).await;
    replicas::stop_all(gantry, &extra).await;
    tracing::info!(%app, release = release.version, formation = %replicas::describe_formation(&release, &formation), "restored");
    Ok(())
}
