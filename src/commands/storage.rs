//! `storage`, `storage:mount`, `storage:unmount`, `resources`,
//! `resources:set`: what an app's processes get beside their release. A
//! change takes effect at once: the live release is rolled out again with
//! it, with no downtime (a stopped or undeployed app gets it on its start).

use crate::access::Caller;
use crate::context::Gantry;
use crate::deploy::{processes, TextProgress};
use crate::names::AppName;
use crate::resources::Limits;
use crate::storage::{Mount, Source};

async fn managed(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
) -> anyhow::Result<crate::store::AppRecord> {
    crate::access::managed_app(gantry, caller, name).await
}

/// Rolls the live release out again so its processes get the change; says so.
async fn apply(gantry: &Gantry, record: &crate::store::AppRecord) -> anyhow::Result<String> {
    let app = &record.name;
    if record.current_release.is_none() {
        return Ok(format!(
            "{app} is not deployed yet: its first deploy gets it\n"
        ));
    }
    if record.stopped {
        return Ok(format!("{app} is stopped: ps:start gets it\n"));
    }
    let mut progress = TextProgress::default();
    match processes::restart(gantry, app, &mut progress).await {
        Ok(()) => Ok(format!("restarted {app} with it, no downtime\n")),
        Err(err) => Err(anyhow::anyhow!(
            "recorded, but restarting {app} failed (the old processes keep running): {err}\n{}",
            progress.0
        )),
    }
}

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = managed(gantry, caller, name).await?;
    let mounts = crate::storage::parse_stored(&record.storage);
    if mounts.is_empty() {
        return Ok(format!(
            "{} has no storage: storage:mount {} NAME:/path\n",
            record.name, record.name
        ));
    }
    let mut out = format!("{:<40} {:<8} SOURCE\n", "PATH", "KIND");
    for mount in mounts {
        let (kind, source) = match &mount.source {
            Source::Volume(_) => ("volume", mount.engine_source(record.name.as_str())),
            Source::Host(dir) => ("host", dir.clone()),
        };
        out.push_str(&format!("{:<40} {kind:<8} {source}\n", mount.path));
    }
    Ok(out)
}

pub async fn mount(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    spec: &str,
) -> anyhow::Result<String> {
    let record = managed(gantry, caller, name).await?;
    let new = Mount::parse(spec)?;
    if let Source::Host(dir) = &new.source {
        if !std::path::Path::new(dir).is_dir() {
            anyhow::bail!(
                "the host directory {dir} does not exist: make it first (mkdir -p {dir})"
            );
        }
    }
    let _lock = gantry.locks.get(&record.name).lock_owned().await;
    let record = managed(gantry, caller, name).await?;
    let mounts = crate::storage::with(&crate::storage::parse_stored(&record.storage), new.clone())?;
    if let Source::Volume(_) = new.source {
        gantry
            .runtime
            .ensure_volume(&record.name, &new.engine_source(record.name.as_str()))
            .await?;
    }
    gantry
        .store
        .set_storage(&record.name, &crate::storage::to_stored(&mounts))
        .await?;
    let mut out = format!("Mounted {} in {}\n", new.spec(), record.name);
    let record = managed(gantry, caller, name).await?;
    out.push_str(&apply(gantry, &record).await?);
    Ok(out)
}

pub async fn unmount(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    which: &str,
) -> anyhow::Result<String> {
    let app: AppName = managed(gantry, caller, name).await?.name;
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let record = managed(gantry, caller, name).await?;
    let mounts = crate::storage::parse_stored(&record.storage);
    let which = which.trim();
    let matches = |m: &Mount| {
        m.spec() == which
            || m.path == which
            || matches!(&m.source, Source::Volume(n) | Source::Host(n) if n == which)
    };
    let Some(gone) = mounts.iter().find(|m| matches(m)).cloned() else {
        let known: Vec<String> = mounts.iter().map(Mount::spec).collect();
        anyhow::bail!(
            "{app} has no mount {which:?}; its mounts: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    };
    let left: Vec<Mount> = mounts.into_iter().filter(|m| *m != gone).collect();
    gantry
        .store
        .set_storage(&app, &crate::storage::to_stored(&left))
        .await?;
    let mut out = format!("Unmounted {} from {app}", gone.spec());
    if let Source::Volume(_) = gone.source {
        out.push_str(&format!(
            "; the volume {} keeps its data (apps:destroy --volumes removes it)",
            gone.engine_source(app.as_str())
        ));
    }
    out.push('\n');
    let record = managed(gantry, caller, name).await?;
    out.push_str(&apply(gantry, &record).await?);
    Ok(out)
}

pub async fn resources(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = managed(gantry, caller, name).await?;
    let limits = crate::resources::parse_stored(&record.resources);
    let types = match gantry.store.current_release(&record.name).await? {
        Some(release) => crate::manifest::Manifest::from_stored(&release.manifest).process_types(),
        None => vec!["web".to_owned()],
    };
    let mut out = format!("{:<12} LIMITS\n", "PROCESS");
    let mut shown = std::collections::BTreeSet::new();
    for process in types.iter().chain(limits.keys()) {
        if shown.insert(process.clone()) {
            let l = limits.get(process).copied().unwrap_or_default();
            out.push_str(&format!("{process:<12} {}\n", l.describe()));
        }
    }
    Ok(out)
}

pub async fn set_resources(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    process: &str,
    settings: &[String],
) -> anyhow::Result<String> {
    let app = managed(gantry, caller, name).await?.name;
    if !crate::manifest::procfile::is_process_name(process) {
        anyhow::bail!("{process:?} is not a process type name (web, worker, ...)");
    }
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let record = managed(gantry, caller, name).await?;
    let mut all = crate::resources::parse_stored(&record.resources);
    let mut limits: Limits = all.get(process).copied().unwrap_or_default();
    limits.set(settings)?;
    all.insert(process.to_owned(), limits);
    gantry
        .store
        .set_resources(&app, &crate::resources::to_stored(&all))
        .await?;
    let mut out = format!("{app} {process}: {}\n", limits.describe());
    out.push_str(&apply(gantry, &record).await?);
    Ok(out)
}
