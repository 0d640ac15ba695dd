//! The apps' pages: the overview, an app, its releases, one release (with
//! its build log and Rollback), and logging in and out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::pages;
use super::respond::{html, not_found, problem, redirect, Page};
use super::session::{self, visible_app, CsrfForm, CsrfRefused, LoggedIn};
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::deploy::processes;
use crate::names::{parse_version, AppName};
use crate::store::{Release, ReleaseStatus};

/// `GET /login/SECRET`: a one-time link becomes a session cookie.
pub async fn login(State(gantry): State<Arc<Gantry>>, Path(secret): Path<String>) -> Page {
    Ok(match crate::access::login::redeem(&gantry, &secret).await? {
        Some(session) => redirect("/", Some(&session::cookie(&session))),
        None => problem(
            StatusCode::FORBIDDEN,
            "Login link expired or used",
            "Each link works once, for 10 minutes. Run `gantry web:login` (or `ssh -p PORT git@HOST web:login`) for a new one.",
            None,
        ),
    })
}

/// `POST /logout`.
pub async fn logout(
    State(gantry): State<Arc<Gantry>>,
    LoggedIn(session): LoggedIn,
    form: Result<CsrfForm, CsrfRefused>,
) -> Page {
    if form.is_err() {
        return Ok(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form's CSRF token is missing or wrong.",
            None,
        ));
    }
    session.end(&gantry).await?;
    Ok(redirect("/", Some(&session::expired_cookie())))
}

/// Anything else behind the session check.
pub async fn unknown(visitor: LoggedIn) -> impl IntoResponse {
    not_found(visitor.csrf())
}

/// The app's live version, its releases (newest first) and their statuses.
async fn history(
    gantry: &Gantry,
    app: &AppName,
) -> anyhow::Result<(Option<i64>, Vec<Release>, Vec<String>)> {
    let current = gantry
        .store
        .get_app(app)
        .await?
        .and_then(|r| r.current_release);
    let releases = gantry.store.list_releases(app).await?;
    let statuses = pages::statuses(&releases, current);
    Ok((current, releases, statuses))
}

/// `GET /`: every app the visitor may see.
pub async fn overview(State(gantry): State<Arc<Gantry>>, visitor: LoggedIn) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    let mut rows = Vec::new();
    for app in gantry.store.list_apps().await? {
        if !caller.may_manage(&app.name) {
            continue;
        }
        let releases = gantry.store.list_releases(&app.name).await?;
        let last_deploy = releases
            .iter()
            .find(|r| r.status == ReleaseStatus::Succeeded)
            .map(|r| r.created_at);
        let running = processes::list(&gantry, &app.name)
            .await
            .unwrap_or_default();
        let up = running
            .iter()
            .filter(|p| p.state.starts_with("running"))
            .count();
        let state = match (app.current_release, app.stopped) {
            (None, _) => "not deployed".to_string(),
            (_, true) => "stopped".to_string(),
            _ => format!(
                "running {up}/{}",
                crate::manifest::formation::Formation::from_stored(&app.formation).web()
            ),
        };
        rows.push(pages::AppRow {
            url: gantry.config.app_url(&app.name),
            name: app.name.to_string(),
            release: app.current_release,
            state,
            last_deploy,
        });
    }
    Ok(html(
        StatusCode::OK,
        pages::layout("Apps", Some(csrf), pages::overview(&rows)),
    ))
}

/// `GET /apps/APP`.
pub async fn app(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    let Some(app) = visible_app(&gantry, caller, &name).await?.map(|r| r.name) else {
        return Ok(not_found(csrf));
    };
    let (current_version, releases, statuses) = history(&gantry, &app).await?;
    let current = releases.iter().find(|r| Some(r.version) == current_version);
    let processes = processes::list(&gantry, &app).await.unwrap_or_default();
    let recent = releases.len().min(5);
    let domains = crate::certs::hosts(&gantry, &app).await?;
    let prefix = format!("{app}/");
    let jobs: Vec<crate::jobs::Summary> = crate::jobs::overview(&gantry, caller)
        .await?
        .into_iter()
        .filter(|job| job.name.starts_with(&prefix))
        .collect();
    let page = pages::AppPage {
        name: app.as_str(),
        url: &gantry.config.app_url(&app),
        domains: &domains,
        current,
        processes: &processes,
        recent: &releases[..recent],
        statuses: &statuses[..recent],
        jobs: &jobs,
        clone_url: &format!("git clone {}", gantry.config.git_remote(&app)),
    };
    Ok(html(
        StatusCode::OK,
        pages::layout(app.as_str(), Some(csrf), pages::app(&page)),
    ))
}

/// `GET /apps/APP/releases`.
pub async fn releases(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    let Some(app) = visible_app(&gantry, caller, &name).await?.map(|r| r.name) else {
        return Ok(not_found(csrf));
    };
    let (_, releases, statuses) = history(&gantry, &app).await?;
    let body = pages::releases(app.as_str(), &releases, &statuses);
    Ok(html(
        StatusCode::OK,
        pages::layout(&format!("{app} releases"), Some(csrf), body),
    ))
}

/// `GET /apps/APP/releases/vN`.
pub async fn release(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path((name, version)): Path<(String, String)>,
) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    let Some(app) = visible_app(&gantry, caller, &name).await?.map(|r| r.name) else {
        return Ok(not_found(csrf));
    };
    let Ok(version) = parse_version(&version) else {
        return Ok(not_found(csrf));
    };
    let (current, releases, statuses) = history(&gantry, &app).await?;
    let Some(index) = releases.iter().position(|r| r.version == version) else {
        return Ok(not_found(csrf));
    };
    let release = &releases[index];
    // Config names that changed from the release before (never values).
    let vars = ConfigVars::open(&release.config, &gantry.secrets)?;
    let changed = match releases.get(index + 1) {
        Some(previous) => vars.changed_names(&ConfigVars::open(&previous.config, &gantry.secrets)?),
        None => vars.iter().map(|(k, _)| k.to_owned()).collect(),
    };
    let log_html = ansi_to_html::convert(&release.build_log)
        .unwrap_or_else(|_| maud::html! { (release.build_log) }.into_string());
    // What changed since the release before it that had a commit.
    let previous = releases[index + 1..]
        .iter()
        .find(|r| !r.commit_sha.is_empty() && r.status == ReleaseStatus::Succeeded);
    let changes = super::code::since_previous(&gantry, &app, release, previous);
    let page = pages::ReleasePage {
        app: app.as_str(),
        release,
        changes,
        status: &statuses[index],
        changed: &changed,
        log_html,
        can_roll_back: release.status == ReleaseStatus::Succeeded && current != Some(version),
        csrf,
    };
    Ok(html(
        StatusCode::OK,
        pages::layout(
            &format!("{app} v{version}"),
            Some(csrf),
            pages::release(&page),
        ),
    ))
}

/// `POST /apps/APP/releases/vN/rollback`: the same operation as
/// `releases:rollback`.
pub async fn rollback(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path((name, version)): Path<(String, String)>,
    form: Result<CsrfForm, CsrfRefused>,
) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    if let Err(refused) = form {
        return Ok(refused.into_response());
    }
    let rolled = async {
        let record = crate::access::managed_app(&gantry, caller, &name).await?;
        let version = parse_version(&version)?;
        crate::deploy::releases::rollback(&gantry, &record, Some(version), &caller.name()).await
    };
    Ok(match rolled.await {
        Ok(_) => redirect(&format!("/apps/{name}/releases"), None),
        Err(err) => problem(
            StatusCode::CONFLICT,
            "Rollback failed",
            &format!("{err:#}"),
            Some(csrf),
        ),
    })
}
