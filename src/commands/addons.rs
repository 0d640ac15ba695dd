//! `addons`, `addons:create`, `addons:info`, `addons:backup`,
//! `addons:restore`, `addons:destroy`: services gantry runs beside an app
//! (`addons:psql` streams, see `execute_streaming`).

use crate::access::Caller;
use crate::context::Gantry;
use crate::jobs::Trigger;
use crate::names::AppName;

async fn app(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<AppName> {
    Ok(crate::access::managed_app(gantry, caller, name).await?.name)
}

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::addons::list(gantry, &app).await
}

pub async fn create(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    kind: &str,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    let mut progress = String::new();
    let made = crate::addons::create(gantry, &app, kind, &caller.name(), &mut |line| {
        progress.push_str(line);
        progress.push('\n');
    })
    .await;
    match made {
        Ok(text) => Ok(progress + &text),
        Err(err) => Err(anyhow::anyhow!("{progress}{err:#}")),
    }
}

pub async fn info(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::addons::info(gantry, &app).await
}

pub async fn backup(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    let job_name = crate::addons::backup_job(&app);
    let job = crate::jobs::find(gantry, &job_name).await.map_err(|_| {
        anyhow::anyhow!("{app} has no postgres add-on: addons:create {app} postgres")
    })?;
    let who = caller.name();
    let run = crate::jobs::trigger(
        gantry,
        job,
        Trigger {
            kind: "manual",
            cause: &who,
            params: Vec::new(),
            parent: "",
            fence: None,
        },
    )
    .await?;
    Ok(format!(
        "Backing up {app}'s postgres: {job_name} #{} (jobs:log {job_name} {} -f follows it)\n",
        run.number, run.number
    ))
}

pub async fn restore(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    run: i64,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    let _lock = gantry.locks.get(&app).lock_owned().await;
    crate::addons::restore(gantry, &app, run).await
}

pub async fn destroy(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    kind: &str,
    force: bool,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    if !force {
        anyhow::bail!(
            "this removes {app}'s {kind} add-on, its volume and all its data; run again with --force to do it"
        );
    }
    crate::addons::destroy(gantry, &app, kind, &caller.name()).await
}
