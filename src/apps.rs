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
pub async fn destroy(gantry: &Gantry, app: &AppName) -> anyhow::Result<(usize, PruneReport)> {
    let _lock = gantry.locks.get(app).lock_owned().await;
    let containers = crate::deploy::processes::remove_processes(gantry, app).await?;
    let images = crate::artifacts::remove_all(&gantry.docker, app).await?;
    crate::build::buildpack::remove_cache(&gantry.docker, app).await;
    let repo = repos::repo_path(&gantry.config, app);
    if repo.exists() {
        tokio::fs::remove_dir_all(&repo)
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", repo.display()))?;
    }
    gantry.store.delete_app(app).await?;
    Ok((containers, images))
}
