//! `ps`, `ps:scale`, `ps:restart`, `ps:stop`, `ps:start`: an app's processes.

use crate::access::Caller;
use crate::context::Gantry;
use crate::deploy::{processes, TextProgress};
use crate::manifest::formation::Formation;
use crate::names::AppName;
use crate::time::{format_age, parse_rfc3339};

/// The process types of the app's live release: `web` and its Procfile's workers.
async fn process_types(gantry: &Gantry, app: &AppName) -> anyhow::Result<Vec<String>> {
    Ok(match gantry.store.current_release(app).await? {
        Some(release) => crate::manifest::Manifest::from_stored(&release.manifest).process_types(),
        None => vec!["web".to_string()],
    })
}

async fn existing_app(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<AppName> {
    Ok(crate::access::managed_app(gantry, caller, name).await?.name)
}

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = existing_app(gantry, caller, name).await?;
    let processes = processes::list(gantry, &app).await?;
    if processes.is_empty() {
        return Ok(format!("{app} runs no processes\n"));
    }
    let now = crate::time::now_ms() / 1000;
    let mut out = format!(
        "{:<8} {:<34} {:<8} {:<34} {:<8} RESTARTS\n",
        "PROCESS", "CONTAINER", "RELEASE", "STATE", "UPTIME"
    );
    for p in processes {
        let uptime = match (p.state.starts_with("running"), parse_rfc3339(&p.started_at)) {
            (true, Some(started)) => format_age(started, now),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<8} {:<34} {:<8} {:<34} {:<8} {}\n",
            format!("{}.{}", p.process, p.replica),
            p.name,
            p.release.map_or("-".into(), |v| format!("v{v}")),
            p.state,
            uptime,
            p.restarts
        ));
    }
    Ok(out)
}

pub async fn scale(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    counts: &[String],
) -> anyhow::Result<String> {
    let app = existing_app(gantry, caller, name).await?;
    let types = process_types(gantry, &app).await?;
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for raw in counts {
        match Formation::parse_assignment(raw, &types) {
            Ok(change) => changes.push(change),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    let _lock = gantry.locks.get(&app).lock_owned().await;
    processes::scale(gantry, &app, &changes).await
}

pub async fn restart(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    process: Option<&str>,
) -> anyhow::Result<String> {
    let app = existing_app(gantry, caller, name).await?;
    if let Some(process) = process {
        let types = process_types(gantry, &app).await?;
        if !types.iter().any(|t| t == process) {
            anyhow::bail!(
                "unknown process type {process:?}: {app}'s process types are {}",
                types.join(", ")
            );
        }
    }
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let mut progress = TextProgress::default();
    match processes::restart(gantry, &app, &mut progress).await {
        Ok(()) => Ok(progress.0),
        Err(err) => Err(anyhow::anyhow!("{err}\n{}", progress.0)),
    }
}

pub async fn stop(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = existing_app(gantry, caller, name).await?;
    let _lock = gantry.locks.get(&app).lock_owned().await;
    processes::stop(gantry, &app).await
}
