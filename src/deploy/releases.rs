//! Releases made without a push: a rollback to an older release, and a
//! config change. Both record a new release that reuses an image that was
//! built, and put it live like a deploy. The CLI and the dashboard call these
//! same operations.

use super::progress::TextProgress;
use super::rollout::roll_out;
use crate::build::stack::Suite;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::names::AppName;
use crate::store::{AppRecord, Release, ReleaseKind, ReleaseStatus};

async fn find(gantry: &Gantry, app: &AppName, version: i64) -> anyhow::Result<Release> {
    gantry.store.release(app, version).await?.ok_or_else(|| {
        anyhow::anyhow!("release v{version} of {app} does not exist (see: releases {app})")
    })
}

/// Puts release `version` (default: the one before the current that went
/// live) of `app` live again, as a new release made `by` someone; returns
/// what happened, for people.
pub async fn rollback(
    gantry: &Gantry,
    app: &AppRecord,
    version: Option<i64>,
    by: &str,
) -> anyhow::Result<String> {
    let record = app;
    let app = record.name.clone();
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
    if !crate::artifacts::exists(&gantry.docker, &target.image).await {
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
        by,
        ReleaseKind::Rollback,
        description,
        &record.formation,
    );
    release_and_roll_out(gantry, release, &record.config, false).await
}

/// Applies `edit` to `app`'s config vars under its lock and releases the
/// result (made `by` someone, described as `description`), or only records
/// it with `no_restart`.
pub async fn change_config(
    gantry: &Gantry,
    app: &AppName,
    by: &str,
    description: String,
    no_restart: bool,
    edit: impl FnOnce(&mut ConfigVars),
) -> anyhow::Result<String> {
    let _lock = gantry.locks.get(app).lock_owned().await;
    let record = gantry
        .store
        .get_app(app)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {app}")))?;
    let old = ConfigVars::open(&record.config, &gantry.secrets)?;
    let mut new = old.clone();
    edit(&mut new);
    if new == old {
        return Ok(format!("{description}: nothing changed\n"));
    }
    let sealed = new.seal(&gantry.secrets)?;
    let Some(current) = gantry.store.current_release(app).await? else {
        gantry.store.set_app_config(app, &sealed).await?;
        return Ok(format!(
            "{description}: saved; {app} has no release yet, the first deploy uses it\n"
        ));
    };
    let mut release = successor(
        current,
        by,
        ReleaseKind::Config,
        description,
        &record.formation,
    );
    release.config = sealed;
    release_and_roll_out(gantry, release, &record.config, no_restart).await
}

/// Whether `image` sits on `stack`'s current layers (all of them, in order,
/// below its own runtime and slug layers).
pub async fn on_current_stack(gantry: &Gantry, image: &str, stack: &str) -> anyhow::Result<bool> {
    let layers =
        |i: bollard::models::ImageInspect| i.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let image = gantry.docker.inspect_image(image).await?;
    let top = crate::build::slug::slug_layer_count(&image);
    let image = layers(image);
    let stack = layers(gantry.docker.inspect_image(stack).await?);
    Ok(image.len() == stack.len() + top && image[..stack.len()] == stack[..])
}

/// What an app's image goes on when it is rebased: its suite's run image,
/// or, for an app on Debian's Node, the run image with that Node made for
/// the current stack (so Debian's updates of Node reach it too).
pub async fn rebase_target(gantry: &Gantry, image: &str, suite: Suite) -> anyhow::Result<String> {
    let labels = gantry
        .docker
        .inspect_image(image)
        .await?
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    let Some(runtime) = crate::build::debian::runtime_of(&labels) else {
        return Ok(suite.run_image());
    };
    let scratch = gantry
        .config
        .run_dir()
        .join(format!("debian-{}-{}", suite.name(), runtime.lang));
    let provided = crate::build::debian::provide(
        &gantry.docker,
        &suite.images(),
        runtime,
        &scratch,
        &mut |line| tracing::info!("{line}"),
    )
    .await?;
    Ok(provided.run_image)
}

/// The stack an app's live image was built on, from its label.
pub async fn built_on(gantry: &Gantry, image: &str) -> Option<Suite> {
    let labels = gantry
        .docker
        .inspect_image(image)
        .await
        .ok()?
        .config?
        .labels?;
    Suite::parse(labels.get(crate::build::stack::LABEL_SUITE)?).ok()
}

/// `stack:rebase`: a new release of the live release's slug, byte for byte,
/// on the freshly built run image of its stack; zero downtime and
/// rollback-able like any release. Dockerfile images are refused: they are
/// rebuilt by pushing.
pub async fn rebase(gantry: &Gantry, app: &AppRecord, by: &str) -> anyhow::Result<String> {
    if let Some(image) = &gantry.config.stack_image {
        anyhow::bail!(
            "gantry.toml sets stack_image = {image:?}: apps are on that image, which gantry does not build; rebuild it and push"
        );
    }
    let record = app;
    let app = record.name.clone();
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let current = gantry
        .store
        .current_release(&app)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{app} has no live release to rebase"))?;
    let suite = match built_on(gantry, &current.image).await {
        Some(suite) => suite,
        None => anyhow::bail!(
            "v{} of {app} is not a buildpack build on one of gantry's stacks (a Dockerfile image is rebuilt by pushing)",
            current.version
        ),
    };
    let stack = suite.run_image();
    if !crate::artifacts::exists(&gantry.docker, &stack).await {
        anyhow::bail!("the stack {stack} is not built: sudo gantry stack:build {suite}");
    }
    let stack = rebase_target(gantry, &current.image, suite).await?;
    if on_current_stack(gantry, &current.image, &stack).await? {
        return Ok(format!(
            "{app} v{} is already on the current {stack}: nothing to rebase\n",
            current.version
        ));
    }
    let description = format!("Rebase v{} onto the current {stack}", current.version);
    let mut release = successor(
        current.clone(),
        by,
        ReleaseKind::Rebase,
        description,
        &record.formation,
    );
    release.version = gantry.store.begin_release(&release).await?;
    let tag = crate::artifacts::image_tag(&app, release.version);
    let mut labels = crate::artifacts::image_labels(&app);
    labels.insert(
        crate::build::stack::LABEL_SUITE.to_owned(),
        suite.name().to_owned(),
    );
    let scratch = gantry
        .config
        .run_dir()
        .join(format!("rebase-{app}-v{}", release.version));
    let built = {
        let _gate = crate::context::image_gate::IMAGE_GATE.read().await;
        crate::build::slug::rebase(
            &gantry.docker,
            &current.image,
            &stack,
            &tag,
            &labels,
            &scratch,
        )
        .await
    };
    if let Err(err) = std::fs::remove_dir_all(&scratch) {
        tracing::debug!(path = %scratch.display(), error = %err, "no rebase scratch to remove");
    }
    let built = match built {
        Ok(built) => built,
        Err(err) => {
            release.status = ReleaseStatus::Failed;
            release.error = err.to_string();
            gantry.store.finish_release(&release).await?;
            anyhow::bail!("cannot rebase {app}: {err}");
        }
    };
    release.image = tag;
    release.image_id = built.id;
    release.image_size = built.size;
    put_live(gantry, release, &record.config, false).await
}

/// Makes `from` (a release of another app, whose image was tagged `image`
/// for `app`) `app`'s first release and puts it live: `apps:rename`.
pub async fn adopt(
    gantry: &Gantry,
    app: &AppRecord,
    from: Release,
    image: String,
    by: &str,
    description: String,
) -> anyhow::Result<String> {
    let _lock = gantry.locks.get(&app.name).lock_owned().await;
    let mut release = successor(from, by, ReleaseKind::Deploy, description, &app.formation);
    release.app = app.name.clone();
    release.image = image;
    release.config = app.config.clone();
    gantry
        .store
        .set_app_config(&app.name, &release.config)
        .await?;
    release.version = gantry.store.begin_release(&release).await?;
    put_live(gantry, release, &app.config, false).await
}

/// A new release that runs `base`'s image, commit and config (a config change
/// replaces the config afterwards), made `by` someone, with the app's formation.
fn successor(
    base: Release,
    by: &str,
    kind: ReleaseKind,
    description: String,
    formation: &str,
) -> Release {
    Release {
        version: 0,
        status: ReleaseStatus::Building,
        created_by: by.to_owned(),
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
async fn release_and_roll_out(
    gantry: &Gantry,
    mut release: Release,
    previous_config: &str,
    no_restart: bool,
) -> anyhow::Result<String> {
    gantry
        .store
        .set_app_config(&release.app, &release.config)
        .await?;
    release.version = gantry.store.begin_release(&release).await?;
    put_live(gantry, release, previous_config, no_restart).await
}

/// Puts a begun release live (see [`release_and_roll_out`]).
async fn put_live(
    gantry: &Gantry,
    mut release: Release,
    previous_config: &str,
    no_restart: bool,
) -> anyhow::Result<String> {
    let app = release.app.clone();
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
    let outcome = roll_out(gantry, &release, &mut progress, true).await;
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
