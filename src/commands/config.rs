//! `config`, `config:get`, `config:set`, `config:unset`: an app's config vars.
//! A change makes a release with the current image and restarts the app with no
//! downtime (or, with `--no-restart`, only records it).

use crate::access::Caller;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::names::AppName;

pub async fn show(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let vars = ConfigVars::open(&record.config, &gantry.secrets)?;
    if vars.is_empty() {
        return Ok(format!("{} has no config vars\n", record.name));
    }
    Ok(vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect())
}

pub async fn get(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    key: &str,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let vars = ConfigVars::open(&record.config, &gantry.secrets)?;
    match vars.get(key) {
        Some(value) => Ok(format!("{value}\n")),
        None => anyhow::bail!("{key} is not set on {}", record.name),
    }
}

pub async fn set(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    assignments: &[String],
    no_restart: bool,
) -> anyhow::Result<String> {
    // Every bad assignment is reported, not just the first.
    let (pairs, errors): (Vec<_>, Vec<_>) = assignments
        .iter()
        .map(|a| ConfigVars::parse_assignment(a))
        .partition(Result::is_ok);
    if !errors.is_empty() {
        let messages: Vec<String> = errors
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        anyhow::bail!("{}", messages.join("; "));
    }
    let pairs: Vec<(String, String)> = pairs.into_iter().filter_map(Result::ok).collect();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let description = format!("Set {}", names.join(", "));
    change(gantry, caller, name, description, no_restart, |vars| {
        for (k, v) in pairs {
            vars.set(k, v);
        }
    })
    .await
}

pub async fn unset(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    keys: &[String],
    no_restart: bool,
) -> anyhow::Result<String> {
    for key in keys {
        ConfigVars::check_name(key)?;
    }
    let description = format!("Unset {}", keys.join(", "));
    change(gantry, caller, name, description, no_restart, |vars| {
        for key in keys {
            vars.unset(key);
        }
    })
    .await
}

/// Applies `edit` to the app's config and releases the result.
async fn change(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    description: String,
    no_restart: bool,
    edit: impl FnOnce(&mut ConfigVars),
) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    crate::deploy::releases::change_config(
        gantry,
        &app,
        &caller.name(),
        description,
        no_restart,
        edit,
    )
    .await
}
