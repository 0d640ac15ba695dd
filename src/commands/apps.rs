//! `apps:create`, `apps:list`, `apps:destroy`.

use crate::access::Caller;
use crate::context::Gantry;
use crate::names::AppName;
use crate::store::StoreError;

pub async fn create(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    crate::apps::create(gantry, &app).await?;
    Ok(format!(
        "Created app {app}\nDeploy it:\n  git remote add gantry {}\n  git push gantry main\nIt will be served at {}\n",
        gantry.config.git_remote(&app),
        gantry.config.app_url(&app)
    ))
}

pub async fn rename(
    gantry: &Gantry,
    caller: &Caller,
    old: &str,
    new: &str,
) -> anyhow::Result<String> {
    let old = AppName::parse(old)?;
    let new = AppName::parse(new)?;
    // Renaming creates an app: the caller must be allowed both names.
    caller.require_app(&old)?;
    caller.require_app(&new)?;
    crate::apps::rename(gantry, &old, &new, &caller.name()).await
}

pub async fn list(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    let apps: Vec<_> = gantry
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| caller.may_manage(&a.name))
        .collect();
    if apps.is_empty() {
        return Ok("No apps yet. Push one, or: apps:create NAME\n".into());
    }
    let width = apps
        .iter()
        .map(|a| a.name.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  {:8}  URL\n", "NAME", "RELEASE");
    for app in apps {
        let release = app
            .current_release
            .map_or("-".to_string(), |v| format!("v{v}"));
        out.push_str(&format!(
            "{:width$}  {:8}  {}\n",
            app.name.as_str(),
            release,
            gantry.config.app_url(&app.name)
        ));
    }
    Ok(out)
}

pub async fn destroy(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    force: bool,
    volumes: bool,
) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    if gantry.store.get_app(&app).await?.is_none() {
        return Err(StoreError::NotFound(format!("app {app}")).into());
    }
    if !force {
        anyhow::bail!(
            "this removes {app}'s containers, images, git repository and release history{}; run again with --force to do it",
            if volumes { ", and its volumes with their data" } else { " (its volumes stay unless --volumes)" }
        );
    }
    crate::addons::remove_for_app(gantry, &app).await;
    let (containers, images, kept) = crate::apps::destroy(gantry, &app, volumes).await?;
    let mut out = format!(
        "Destroyed {app}: {containers} container(s), {} image(s) ({} freed), its repository and records\n",
        images.removed.len(),
        images.freed_text()
    );
    if !kept.removed.is_empty() {
        out.push_str(&format!(
            "Removed its volumes: {}\n",
            kept.removed.join(", ")
        ));
    }
    if !kept.kept.is_empty() {
        out.push_str(&format!(
            "Kept its volumes, with their data: {} (docker volume rm to remove them, or destroy with --volumes)\n",
            kept.kept.join(", ")
        ));
    }
    Ok(out)
}

pub async fn set_deploy_branch(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    branch: Option<&str>,
) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    if let Some(branch) = branch {
        let valid = !branch.is_empty()
            && branch.len() <= 200
            && !branch.starts_with(['-', '/', '.'])
            && !branch.ends_with(['/', '.'])
            && !branch.contains("..")
            && !branch.contains("//")
            && !branch.ends_with(".lock")
            && branch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !valid {
            anyhow::bail!(
                "invalid branch name {branch:?}: use letters, digits, '-', '_', '.' and '/'"
            );
        }
    }
    gantry.store.set_deploy_branch(&app, branch).await?;
    Ok(match branch {
        Some(branch) => format!("{app}: pushes to {branch} deploy; other branches are stored\n"),
        None => format!("{app}: pushes to main or master deploy\n"),
    })
}
