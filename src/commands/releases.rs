//! `releases`, `releases:info`, `releases:rollback`: the numbered history of
//! what ran, and putting an older release live again.

use crate::access::Caller;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::deploy;
use crate::names::{parse_version, AppName};
use crate::store::{Release, ReleaseKind};
use crate::time::format_time;

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let app = record.name.clone();
    let releases = gantry.store.list_releases(&app).await?;
    if releases.is_empty() {
        return Ok(format!("{app} has no releases yet: push to deploy it\n"));
    }
    let mut out = format!(
        "{:<8} {:<10} {:<19} {:<12} DESCRIPTION\n",
        "VERSION", "STATUS", "WHEN", "BY"
    );
    for r in releases {
        let status = if record.current_release == Some(r.version) {
            "current"
        } else {
            r.status.as_str()
        };
        out.push_str(&format!(
            "{:<8} {:<10} {:<19} {:<12} {}\n",
            format!("v{}", r.version),
            status,
            format_time(r.created_at),
            r.created_by,
            describe(&r)
        ));
    }
    Ok(out)
}

fn describe(r: &Release) -> String {
    match r.kind {
        ReleaseKind::Deploy if !r.commit_message.is_empty() => {
            format!("{} \"{}\"", r.description, r.commit_message)
        }
        _ => r.description.clone(),
    }
}

pub async fn info(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    version: &str,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let app = record.name.clone();
    let version = parse_version(version)?;
    let release = find(gantry, &app, version).await?;
    let vars = ConfigVars::open(&release.config, &gantry.secrets)?;
    let previous = match version {
        1 => None,
        v => gantry.store.release(&app, v - 1).await?,
    };
    let changed = match &previous {
        Some(prev) => vars.changed_names(&ConfigVars::open(&prev.config, &gantry.secrets)?),
        None => vars.iter().map(|(k, _)| k.to_owned()).collect(),
    };
    let names: Vec<&str> = vars.iter().map(|(k, _)| k).collect();
    let current = if record.current_release == Some(version) {
        " (current)"
    } else {
        ""
    };
    let mut out = format!("Release v{version} of {app}{current}\n");
    let mut field = |label: &str, value: &str| out.push_str(&format!("  {label:<12} {value}\n"));
    field("status:", release.status.as_str());
    field("what:", &describe(&release));
    field(
        "commit:",
        &format!("{} by {}", release.commit_sha, release.commit_author),
    );
    let image = match (release.image.is_empty(), release.image_id.is_empty()) {
        (true, _) => "-".to_string(),
        (false, true) => release.image.clone(),
        (false, false) => format!(
            "{} ({}, {})",
            release.image,
            release.image_id,
            crate::artifacts::human_bytes(u64::try_from(release.image_size).unwrap_or(0))
        ),
    };
    field("image:", &image);
    field("port:", &release.port.to_string());
    field("by:", &release.created_by);
    field("when:", &format_time(release.created_at));
    field(
        "build:",
        &format!("{:.1}s", release.build_ms as f64 / 1000.0),
    );
    field(
        "config vars:",
        &if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        },
    );
    field(
        "changed:",
        &if changed.is_empty() {
            "-".into()
        } else {
            changed.join(", ")
        },
    );
    if !release.error.is_empty() {
        field("error:", &release.error);
    }
    if !release.build_log.is_empty() {
        out.push_str("Build log:\n");
        out.push_str(&release.build_log);
    }
    Ok(out)
}

async fn find(gantry: &Gantry, app: &AppName, version: i64) -> anyhow::Result<Release> {
    gantry.store.release(app, version).await?.ok_or_else(|| {
        anyhow::anyhow!("release v{version} of {app} does not exist (see: releases {app})")
    })
}

pub async fn rollback(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    version: Option<&str>,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let version = version.map(parse_version).transpose()?;
    deploy::releases::rollback(gantry, &record, version, &caller.name()).await
}
