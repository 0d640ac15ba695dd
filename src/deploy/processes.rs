//! Processes of the live release: listing them (`ps`), scaling (`ps:scale`),
//! stopping, starting and restarting. Scaling adds or removes replicas beside
//! the running ones; restarting rolls the live release out again, so neither
//! drops a request.

use super::progress::Progress;
use super::replicas;
use super::rollout::roll_out;
use super::route::route;
use super::spec::formation;
pub use super::spec::ProcessInfo;
use crate::context::Gantry;
use crate::manifest::formation::Formation;
use crate::manifest::Manifest;
use crate::names::AppName;
use crate::runtime::Instance;
use crate::store::StoreError;

pub async fn list(gantry: &Gantry, app: &AppName) -> anyhow::Result<Vec<ProcessInfo>> {
    if let Some(services) = gantry.runtime.services() {
        return super::services::list(services, app).await;
    }
    let mut out = Vec::new();
    // Kills for memory, by dyno, since each container started.
    let ooms = gantry
        .store
        .list_runs(&crate::jobs::live::oom_job(app), 200)
        .await
        .unwrap_or_default();
    for c in gantry.runtime.list(app).await? {
        let details = gantry.runtime.inspect(&c.id).await?;
        let dyno = format!("{}.{}", c.process, c.replica);
        let created = details.created_at;
        let killed = ooms
            .iter()
            .filter(|r| r.cause == dyno && r.queued_at / 1000 >= created)
            .count();
        let state = match (details.state.as_str(), details.restarts) {
            _ if details.oom_killed => "killed: out of memory".to_string(),
            ("restarting", _) if killed > 0 => "out of memory, restarting".to_string(),
            ("restarting", _) => "crashed, restarting".to_string(),
            ("running", n) if n > 0 && killed > 0 => {
                format!("running (killed for memory {killed}x, restarted)")
            }
            ("running", n) if n > 0 => format!("running (crashed {n}x, restarted)"),
            (state, _) => state.to_string(),
        };
        out.push(ProcessInfo {
            process: c.process,
            replica: c.replica,
            name: c.name,
            release: c.release,
            state,
            restarts: details.restarts,
            started_at: details.started_at,
        });
    }
    out.sort_by(|a, b| (&a.process, a.replica).cmp(&(&b.process, b.replica)));
    Ok(out)
}

/// Applies `changes` (`web=3`) to the formation and to what runs. The caller
/// holds the app's lock.
pub async fn scale(
    gantry: &Gantry,
    app: &AppName,
    changes: &[(String, u32)],
) -> anyhow::Result<String> {
    let record = gantry
        .store
        .get_app(app)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("app {app}")))?;
    let mut formation = Formation::from_stored(&record.formation);
    for (process, count) in changes {
        formation.set(process.clone(), *count);
    }
    gantry
        .store
        .set_formation(app, &formation.to_stored())
        .await?;
    let scaled = format!("{app}: scaled to {}", formation.describe());
    if record.stopped {
        return Ok(format!("{scaled}; the app is stopped, ps:start runs it\n"));
    }
    let Some(release) = gantry.store.current_release(app).await? else {
        return Ok(format!("{scaled}; takes effect at the first deploy\n"));
    };
    if let Some(services) = gantry.runtime.services() {
        super::services::converge(gantry, services, &release).await?;
        return Ok(format!(
            "{app}: {} on the swarm\n",
            replicas::describe_formation(&release, &formation)
        ));
    }
    let manifest = Manifest::from_stored(&release.manifest);
    let containers = gantry.runtime.list(app).await?;
    let mut web_addrs = Vec::new();
    let mut extra = Vec::new();
    let mut started = 0;
    for process in manifest.process_types() {
        let want = formation.count(&process, manifest.default_count(&process));
        let running: Vec<Instance> = containers
            .iter()
            .filter(|c| c.release == Some(release.version) && c.process == process && c.running)
            .cloned()
            .collect();
        let before = running.len();
        let (addrs, more_extra) =
            replicas::converge(gantry, &release, &process, want, running).await?;
        started += usize::try_from(want).unwrap_or(0).saturating_sub(before);
        if process == "web" {
            web_addrs = addrs;
        }
        extra.extend(more_extra);
    }
    let replaced = route(gantry, app, web_addrs).await;
    replicas::drain(gantry, app, replaced).await;
    replicas::stop_all(gantry, &extra).await;
    Ok(format!(
        "{app}: {} (started {started}, stopped {} container(s))\n",
        replicas::describe_formation(&release, &formation),
        extra.len()
    ))
}

/// Stops every process; the proxy answers 503 until `start` or a deploy.
pub async fn stop(gantry: &Gantry, app: &AppName) -> anyhow::Result<String> {
    gantry.store.set_stopped(app, true).await?;
    if let Some(services) = gantry.runtime.services() {
        let n = super::services::stop(gantry, services, app).await?;
        return Ok(format!("{app}: scaled {n} service(s) to 0\n"));
    }
    let replaced = route(gantry, app, Vec::new()).await;
    replicas::drain(gantry, app, replaced).await;
    let ids: Vec<String> = gantry
        .runtime
        .list(app)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    replicas::stop_all(gantry, &ids).await;
    Ok(format!("{app}: stopped {} container(s)\n", ids.len()))
}

/// Rolls the live release out again: fresh containers, no downtime. Used by
/// `ps:start` (after `ps:stop`) and `ps:restart`.
pub async fn restart(
    gantry: &Gantry,
    app: &AppName,
    progress: &mut (dyn Progress + Send),
) -> anyhow::Result<()> {
    let release = gantry
        .store
        .current_release(app)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{app} has no live release yet: push to deploy it"))?;
    let (formation, _) = formation(gantry, app).await?;
    progress.line(&format!(
        "{app}: v{} with {}",
        release.version,
        formation.describe()
    ));
    roll_out(gantry, &release, progress, false)
        .await
        .map_err(anyhow::Error::msg)
}

/// Takes an app off the proxy and removes all its processes (the app is
/// being destroyed); returns how many there were.
pub async fn remove_processes(gantry: &Gantry, app: &AppName) -> anyhow::Result<usize> {
    gantry.routing.remove(&gantry.config.app_host(app)).await;
    if let Some(services) = gantry.runtime.services() {
        return Ok(services.remove(app, None).await?);
    }
    let processes = gantry.runtime.list(app).await?;
    for c in &processes {
        gantry
            .runtime
            .stop_and_remove(&c.id, std::time::Duration::ZERO)
            .await;
    }
    Ok(processes.len())
}
