//! An app's life: created (a record and a bare repository) and destroyed
//! (everything gantry made for it), across the parts that hold its pieces.

use crate::artifacts::PruneReport;
use crate::context::Gantry;
use crate::git::repos;
use crate::names::AppName;

/// Records the app and makes its repository; shared by `apps:create` and first pushes.
pub async fn create(gantry: &Gantry, app: &AppName) -> anyhow::Result<()> {
    if gantry.config.app_host(app) == gantry.config.dashboard_host {
        anyhow::bail!(
            "the name {app} is taken: {} is gantry's dashboard",
            gantry.config.dashboard_host
        );
    }
    gantry.store.create_app(app).await?;
    repos::ensure_repo(&gantry.config, app).await.map_err(|e| {
        anyhow::anyhow!("app {app} recorded, but its repository could not be created: {e}")
    })?;
    Ok(())
}

/// Removes an app: its processes, images, build cache, repository and
/// records. Returns how many processes there were and what the images freed.
/// What `destroy` did with the app's volumes.
#[derive(Debug, Default)]
pub struct Volumes {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// Removes the app: its processes, images, build cache, repository and
/// records; its volumes only when `volumes` (data outlives a mistake).
pub async fn destroy(
    gantry: &Gantry,
    app: &AppName,
    volumes: bool,
) -> anyhow::Result<(usize, PruneReport, Volumes)> {
    let _lock = gantry.locks.get(app).lock_owned().await;
    let containers = crate::deploy::processes::remove_processes(gantry, app).await?;
    let images = crate::artifacts::remove_all(&gantry.docker, app).await?;
    crate::build::buildpack::remove_cache(&gantry.docker, app).await;
    let mut outcome = Volumes::default();
    for volume in gantry.runtime.volumes(app).await? {
        if volumes {
            gantry.runtime.remove_volume(&volume).await?;
            outcome.removed.push(volume);
        } else {
            outcome.kept.push(volume);
        }
    }
    let repo = repos::repo_path(&gantry.config, app);
    if repo.exists() {
        tokio::fs::remove_dir_all(&repo)
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", repo.display()))?;
    }
    gantry.store.delete_app(app).await?;
    Ok((containers, images, outcome))
}

/// `apps:rename OLD NEW`, as Dokku does it: a new app with the old one's
/// config, formation, stack, settings, domains, repository and deployer keys,
/// its live release put live again under the new name (the same image, so
/// nothing is rebuilt), then the old app removed. The release history starts
/// again at v1, which says what it was.
pub async fn rename(
    gantry: &Gantry,
    old: &AppName,
    new: &AppName,
    by: &str,
) -> anyhow::Result<String> {
    if old == new {
        anyhow::bail!("{old} is already called {new}");
    }
    let record = gantry
        .store
        .get_app(old)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {old}")))?;
    if gantry.store.get_app(new).await?.is_some() {
        anyhow::bail!("an app named {new} exists already: destroy it first or pick another name");
    }
    let volumes = crate::storage::parse_stored(&record.storage)
        .into_iter()
        .filter(|m| matches!(m.source, crate::storage::Source::Volume(_)))
        .map(|m| m.spec())
        .collect::<Vec<_>>();
    if !gantry.store.list_addons(Some(old)).await?.is_empty() {
        anyhow::bail!(
            "{old} has add-ons, named after it (addons {old}): back up their data, addons:destroy them, rename, then create them again"
        );
    }
    if !volumes.is_empty() {
        anyhow::bail!(
            "{old} has volumes ({}), named after it: a rename would leave their data behind. Copy the data out, storage:unmount them, rename, then mount again",
            volumes.join(", ")
        );
    }
    if gantry.config.app_host(new) == gantry.config.dashboard_host {
        anyhow::bail!(
            "the name {new} is taken: {} is gantry's dashboard",
            gantry.config.dashboard_host
        );
    }
    let mut out = String::new();
    {
        // No push or deploy of the old app while it moves.
        let _old_lock = gantry.locks.get(old).lock_owned().await;
        gantry.store.create_app(new).await?;
        let store = &gantry.store;
        store.set_app_config(new, &record.config).await?;
        store.set_formation(new, &record.formation).await?;
        if let Some(stack) = &record.stack {
            store.set_stack(new, stack).await?;
        }
        store.set_keep_releases(new, record.keep_releases).await?;
        store
            .set_deploy_branch(new, record.deploy_branch.as_deref())
            .await?;
        store.set_https_redirect(new, record.https_redirect).await?;
        store.set_storage(new, &record.storage).await?;
        store.set_resources(new, &record.resources).await?;
        for (owner, host) in store.list_domains().await? {
            if owner == old.as_str() {
                store.remove_domain(old, &host).await?;
                store.add_domain(new, &host).await?;
                out.push_str(&format!("domain {host} moved to {new}\n"));
            }
        }
        for key in store.list_keys().await? {
            if key.apps.contains(old) {
                let apps: Vec<AppName> = key
                    .apps
                    .iter()
                    .map(|a| if a == old { new.clone() } else { a.clone() })
                    .collect();
                store.set_key_apps(&key.name, &apps).await?;
            }
        }
        let (from, to) = (
            repos::repo_path(&gantry.config, old),
            repos::repo_path(&gantry.config, new),
        );
        if from.exists() {
            tokio::fs::rename(&from, &to).await.map_err(|e| {
                anyhow::anyhow!("cannot move {} to {}: {e}", from.display(), to.display())
            })?;
        }
        repos::ensure_repo(&gantry.config, new)
            .await
            .map_err(|e| anyhow::anyhow!("the repository of {new}: {e}"))?;
    }
    let renamed = gantry
        .store
        .get_app(new)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {new}")))?;
    if let Some(current) = gantry.store.current_release(old).await? {
        if !record.stopped && crate::artifacts::exists(&gantry.docker, &current.image).await {
            let tag = crate::artifacts::image_tag(new, 1);
            let (repo, version) = tag.split_once(':').unwrap_or((&tag, "latest"));
            let options = bollard::query_parameters::TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(version)
                .build();
            gantry
                .docker
                .tag_image(&current.image, Some(options))
                .await?;
            let description = format!("Renamed from {old} (was its v{})", current.version);
            out.push_str(
                &crate::deploy::releases::adopt(gantry, &renamed, current, tag, by, description)
                    .await?,
            );
        } else {
            out.push_str(&format!(
                "{old} was not running: push to {new} to deploy it\n"
            ));
        }
    }
    let (containers, _, _) = destroy(gantry, old, false).await?;
    out.push_str(&format!(
        "Renamed {old} to {new} (stopped {containers} process(es) of {old}); its git remote is now {}\n",
        gantry.config.git_remote(new)
    ));
    Ok(out)
}
