//! `releases`, `releases:info`, `releases:rollback`: the numbered history of
//! what ran, and putting an older release live again.

use crate::access::Caller;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::deploy::{self, TextProgress};
use crate::names::{parse_version, AppName};
use crate::store::{Release, ReleaseKind, ReleaseStatus};
use crate::time::format_time;

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = super::app_record(gantry, caller, name).await?;
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
    let record = super::app_record(gantry, caller, name).await?;
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
    let record = super::app_record(gantry, caller, name).await?;
    let app = record.name.clone();
    let version = version.map(parse_version).transpose()?;
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let current = gantry
        .store
        .current_release(&app)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{app} has no live release to roll back from"))?;
    let target = match version {
        Some(v) => find(gantry, &app, v).await?,
        None => gantry
            .store
            .list_releases(&app)
            .await?
            .into_iter()
            .find(|r| r.version < current.version && r.status == ReleaseStatus::Succeeded)
            .ok_or_else(|| anyhow::anyhow!("{app} has no earlier release that went live"))?,
    };
    if target.status != ReleaseStatus::Succeeded || target.image.is_empty() {
        anyhow::bail!(
            "v{} of {app} {}; only releases that went live can be rolled back to",
            target.version,
            if target.status == ReleaseStatus::Failed {
                "failed"
            } else {
                "never went live"
            }
        );
    }
    if gantry.docker.inspect_image(&target.image).await.is_err() {
        anyhow::bail!(
            "the image of v{} ({}) is no longer on this host (pruned); push that commit again instead",
            target.version,
            target.image
        );
    }
    let description = format!("Rollback to v{}", target.version);
    // Like Heroku: a rollback restores code and config, not the formation.
    let release = successor(
        target,
        caller,
        ReleaseKind::Rollback,
        description,
        &record.formation,
    );
    release_and_roll_out(gantry, release, &record.config, false).await
}

/// A new release that runs `base`'s image, commit and config (a config change
/// replaces the config afterwards), made by `caller`, with the app's formation.
pub fn successor(
    base: Release,
    caller: &Caller,
    kind: ReleaseKind,
    description: String,
    formation: &str,
) -> Release {
    Release {
        version: 0,
        status: ReleaseStatus::Building,
        created_by: caller.name(),
        created_at: 0,
        build_ms: 0,
        build_log: String::new(),
        error: String::new(),
        kind,
        description,
        formation: formation.to_owned(),
        ..base
    }
}

/// Records `release` (the app's config becomes its config) and puts it live, or
/// only records it with `no_restart`. On failure the app's config goes back to
/// `previous_config` and the release is marked failed.
pub async fn release_and_roll_out(
    gantry: &Gantry,
    mut release: Release,
    previous_config: &str,
    no_restart: bool,
) -> anyhow::Result<String> {
    let app = release.app.clone();
    gantry.store.set_app_config(&app, &release.config).await?;
    release.version = gantry.store.begin_release(&release).await?;
    if no_restart {
        release.status = ReleaseStatus::Succeeded;
        gantry.store.finish_release(&release).await?;
        gantry
            .store
            .set_current_release(&app, release.version)
            .await?;
        return Ok(format!(
            "{}: v{} recorded; running containers keep their environment until the next deploy or restart\n",
            release.description, release.version
        ));
    }
    let mut progress = TextProgress::default();
    let outcome = deploy::roll_out(gantry, &release, &mut progress, true).await;
    release.status = match outcome {
        Ok(()) => ReleaseStatus::Succeeded,
        Err(_) => ReleaseStatus::Failed,
    };
    release.build_log = progress.0.clone();
    if let Err(reason) = &outcome {
        release.error = reason.clone();
        gantry.store.set_app_config(&app, previous_config).await?;
    }
    gantry.store.finish_release(&release).await?;
    if outcome.is_ok() {
        match crate::artifacts::prune(gantry, &app).await {
            Ok(report) => {
                if let Some(summary) = report.summary() {
                    progress.0.push_str(&summary);
                    progress.0.push('\n');
                }
            }
            Err(err) => progress
                .0
                .push_str(&format!("could not prune old images: {err}\n")),
        }
    }
    match outcome {
        Ok(()) => Ok(format!(
            "{}: v{} is live at {}\n{}",
            release.description,
            release.version,
            gantry.config.app_url(&app),
            progress.0
        )),
        Err(reason) => Err(anyhow::anyhow!(
            "{}: v{} failed: {reason}; the previous release is still serving\n{}",
            release.description,
            release.version,
            progress.0
        )),
    }
}
