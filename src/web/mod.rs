//! The dashboard: deploy history pages at `gantry.DOMAIN`, server-rendered.
//!
//! It is served on a loopback port of its own and routed by the proxy like any
//! app, so the proxy knows nothing of it. It only reads, except for one action:
//! Rollback (a POST with the session's CSRF token), which goes through the same
//! code as `releases:rollback`. Login is by one-time link (`web:login`).

pub mod auth;
pub mod jobs;
pub mod pages;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use maud::Markup;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Caller;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::deploy::processes;
use crate::names::{parse_version, AppName};

/// Serves the dashboard on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    gantry: Arc<Gantry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gantry = gantry.clone();
        let service = service_fn(move |req| {
            let gantry = gantry.clone();
            async move { Ok::<_, Infallible>(handle(gantry, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "dashboard connection ended with an error");
            }
        });
    }
}

fn respond(status: StatusCode, markup: Markup) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(markup.into_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'",
        ),
    );
    response
}

fn redirect(to: &str, cookie: Option<&str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn problem(
    status: StatusCode,
    title: &str,
    text: &str,
    csrf: Option<&str>,
) -> Response<Full<Bytes>> {
    respond(
        status,
        pages::layout(title, csrf, pages::message(title, text)),
    )
}

/// Routes that are not whole HTML pages (assets, badges, metrics, live
/// events), then the pages.
async fn handle(gantry: Arc<Gantry>, req: Request<Incoming>) -> Response<jobs::Body> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET {
        if path == "/assets/follow.js" {
            let script = Bytes::from_static(include_bytes!("assets/follow.js"));
            let mut response = Response::new(Full::new(script).boxed_unsync());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            return response;
        }
        if let Some(job) = path
            .strip_prefix("/badge/")
            .and_then(|p| p.strip_suffix(".svg"))
        {
            let last = gantry
                .store
                .list_runs(job, 1)
                .await
                .ok()
                .and_then(|r| r.into_iter().next());
            return jobs::badge(job, last.as_ref());
        }
        if path == "/metrics" {
            return metrics(&gantry, &req).await;
        }
        if path.starts_with("/jobs/") && path.ends_with("/events") {
            if let Some(response) = live_events(gantry.clone(), &req).await {
                return response;
            }
        }
    }
    page(&gantry, req).await.map(|body| body.boxed_unsync())
}

/// The caller of a request with a valid session cookie.
async fn caller_of(gantry: &Gantry, req: &Request<Incoming>) -> Option<Caller> {
    let cookies = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    auth::session(gantry, cookies)
        .await
        .ok()
        .flatten()
        .map(|s| s.caller)
}

fn plain(status: StatusCode, text: String) -> Response<jobs::Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Prometheus metrics, for a logged-in admin or a scraper sending
/// `Authorization: Bearer TOKEN` (`metrics_token` in gantry.toml).
async fn metrics(gantry: &Gantry, req: &Request<Incoming>) -> Response<jobs::Body> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = matches!(
        (&gantry.config.metrics_token, bearer),
        (Some(want), Some(got)) if want == got
    );
    let admin = caller_of(gantry, req).await.is_some_and(|c| c.is_admin());
    if !token_ok && !admin {
        return plain(
            StatusCode::UNAUTHORIZED,
            "metrics need an admin session, or Authorization: Bearer TOKEN with metrics_token from gantry.toml\n".into(),
        );
    }
    match jobs::metrics(gantry).await {
        Ok(text) => plain(StatusCode::OK, text),
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")),
    }
}

/// `GET /jobs/NAME/RUN/events?from=BYTES`, for a caller who may see the job.
async fn live_events(gantry: Arc<Gantry>, req: &Request<Incoming>) -> Option<Response<jobs::Body>> {
    let segments: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (job, tail) = jobs::split_path(segments.get(1..)?)?;
    let [number, events] = tail.as_slice() else {
        return None;
    };
    if events != "events" {
        return None;
    }
    let number: i64 = number.parse().ok()?;
    let caller = caller_of(&gantry, req).await?;
    if !caller.may_use_job(&job) {
        return None;
    }
    let run = gantry.store.run(&job, number).await.ok().flatten()?;
    let from = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("from=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(jobs::events(gantry, run, from))
}

async fn page(gantry: &Gantry, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match route(gantry, req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "dashboard request failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                &format!("{err:#}"),
                None,
            )
        }
    }
}

async fn route(gantry: &Gantry, req: Request<Incoming>) -> anyhow::Result<Response<Full<Bytes>>> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();

    if let (&Method::GET, ["login", secret]) = (&method, segments.as_slice()) {
        return Ok(match crate::access::login::redeem(gantry, secret).await? {
            Some(session) => redirect("/", Some(&auth::cookie(&session))),
            None => problem(
                StatusCode::FORBIDDEN,
                "Login link expired or used",
                "Each link works once, for 10 minutes. Run `gantry web:login` (or `ssh -p PORT git@HOST web:login`) for a new one.",
                None,
            ),
        });
    }
    let cookies = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(session) = auth::session(gantry, cookies.as_deref()).await? else {
        return Ok(problem(
            StatusCode::UNAUTHORIZED,
            "Log in",
            "Run `gantry web:login` on the host (or `ssh -p PORT git@HOST web:login`) and open the link it prints.",
            None,
        ));
    };
    let csrf = session.csrf.as_str();
    let caller = &session.caller;

    match (&method, segments.as_slice()) {
        (&Method::GET, []) => overview(gantry, caller, csrf).await,
        (&Method::GET, ["apps", name]) => app_page(gantry, caller, csrf, name).await,
        (&Method::GET, ["apps", name, "releases"]) => {
            releases_page(gantry, caller, csrf, name).await
        }
        (&Method::GET, ["apps", name, "releases", version]) => {
            release_page(gantry, caller, csrf, name, version).await
        }
        (&Method::POST, ["apps", name, "releases", version, "rollback"]) => {
            let (name, version) = (name.to_string(), version.to_string());
            if !form_csrf_matches(req, csrf).await {
                return Ok(csrf_refused(csrf));
            }
            let rolled = async {
                let record = crate::access::managed_app(gantry, caller, &name).await?;
                let version = parse_version(&version)?;
                crate::deploy::releases::rollback(gantry, &record, Some(version), &caller.name())
                    .await
            };
            match rolled.await {
                Ok(_) => Ok(redirect(&format!("/apps/{name}/releases"), None)),
                Err(err) => Ok(problem(
                    StatusCode::CONFLICT,
                    "Rollback failed",
                    &format!("{err:#}"),
                    Some(csrf),
                )),
            }
        }
        (&Method::GET, ["jobs"]) => Ok(respond(
            StatusCode::OK,
            jobs::list_page(gantry, caller, csrf).await?,
        )),
        (&Method::GET, ["jobs", rest @ ..]) => {
            let Some((job, tail)) = jobs::split_path(rest) else {
                return Ok(not_found(csrf));
            };
            if !caller.may_use_job(&job) {
                return Ok(not_found(csrf));
            }
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            match tail.as_slice() {
                [] => Ok(respond(
                    StatusCode::OK,
                    jobs::runs_page(gantry, &job, csrf).await?,
                )),
                [number] => {
                    let run = match number.parse::<i64>() {
                        Ok(n) => gantry.store.run(&job, n).await?,
                        Err(_) => None,
                    };
                    match run {
                        Some(run) => Ok(respond(
                            StatusCode::OK,
                            jobs::run_page(gantry, &run, csrf).await?,
                        )),
                        None => Ok(not_found(csrf)),
                    }
                }
                [number, "artifacts", file] => {
                    Ok(artifact(gantry, &job, number, file).unwrap_or_else(|| not_found(csrf)))
                }
                _ => Ok(not_found(csrf)),
            }
        }
        (&Method::POST, ["jobs", rest @ ..]) => {
            let Some((job, tail)) = jobs::split_path(rest) else {
                return Ok(not_found(csrf));
            };
            if tail != ["run"] || !caller.may_use_job(&job) {
                return Ok(not_found(csrf));
            }
            let Some(form) = read_form(req, csrf).await else {
                return Ok(csrf_refused(csrf));
            };
            // "Run again" names the run whose parameters to reuse.
            let again = form
                .iter()
                .find(|(n, _)| n == "again")
                .and_then(|(_, v)| v.parse::<i64>().ok());
            match jobs::run_now(gantry, caller, &job, again).await {
                Ok(run) => Ok(redirect(&format!("/jobs/{}/{}", run.job, run.number), None)),
                Err(err) => Ok(problem(
                    StatusCode::CONFLICT,
                    "Cannot run it",
                    &format!("{err:#}"),
                    Some(csrf),
                )),
            }
        }
        (&Method::POST, ["logout"]) => {
            if !form_csrf_matches(req, csrf).await {
                return Ok(problem(
                    StatusCode::FORBIDDEN,
                    "Refused",
                    "The form's CSRF token is missing or wrong.",
                    None,
                ));
            }
            session.end(gantry).await?;
            Ok(redirect(
                "/",
                Some(&format!(
                    "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    auth::COOKIE
                )),
            ))
        }
        _ => Ok(not_found(csrf)),
    }
}

fn csrf_refused(csrf: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token is missing or wrong; reload the page.",
        Some(csrf),
    )
}

fn not_found(csrf: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page, or no such app you may see.",
        Some(csrf),
    )
}

/// Whether an urlencoded form body carries `csrf=TOKEN`.
async fn form_csrf_matches(req: Request<Incoming>, csrf: &str) -> bool {
    read_form(req, csrf).await.is_some()
}

/// The posted form's fields, if its CSRF token is the session's.
async fn read_form(req: Request<Incoming>, csrf: &str) -> Option<Vec<(String, String)>> {
    let body = Limited::new(req.into_body(), 16 * 1024)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let matches = !csrf.is_empty() && fields.iter().any(|(n, v)| n == "csrf" && v == csrf);
    matches.then_some(fields)
}

/// The app's live version, its releases (newest first) and their statuses.
async fn history(
    gantry: &Gantry,
    app: &AppName,
) -> anyhow::Result<(Option<i64>, Vec<crate::store::Release>, Vec<String>)> {
    let current = gantry
        .store
        .get_app(app)
        .await?
        .and_then(|r| r.current_release);
    let releases = gantry.store.list_releases(app).await?;
    let statuses = pages::statuses(&releases, current);
    Ok((current, releases, statuses))
}

/// The app a caller may see, or `None` (shown as 404 either way).
async fn visible_app(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
) -> anyhow::Result<Option<AppName>> {
    let Ok(app) = AppName::parse(name) else {
        return Ok(None);
    };
    if !caller.may_manage(&app) || gantry.store.get_app(&app).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(app))
}

async fn overview(
    gantry: &Gantry,
    caller: &Caller,
    csrf: &str,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let mut rows = Vec::new();
    for app in gantry.store.list_apps().await? {
        if !caller.may_manage(&app.name) {
            continue;
        }
        let releases = gantry.store.list_releases(&app.name).await?;
        let last_deploy = releases
            .iter()
            .find(|r| r.status == crate::store::ReleaseStatus::Succeeded)
            .map(|r| r.created_at);
        let running = processes::list(gantry, &app.name).await.unwrap_or_default();
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
    Ok(respond(
        StatusCode::OK,
        pages::layout("Apps", Some(csrf), pages::overview(&rows)),
    ))
}

async fn app_page(
    gantry: &Gantry,
    caller: &Caller,
    csrf: &str,
    name: &str,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let Some(app) = visible_app(gantry, caller, name).await? else {
        return Ok(not_found(csrf));
    };
    let (current_version, releases, statuses) = history(gantry, &app).await?;
    let current = releases.iter().find(|r| Some(r.version) == current_version);
    let processes = processes::list(gantry, &app).await.unwrap_or_default();
    let recent = releases.len().min(5);
    let domains = crate::certs::hosts(gantry, &app).await?;
    let prefix = format!("{app}/");
    let jobs: Vec<crate::jobs::Summary> = crate::jobs::overview(gantry, caller)
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
    };
    Ok(respond(
        StatusCode::OK,
        pages::layout(app.as_str(), Some(csrf), pages::app(&page)),
    ))
}

async fn releases_page(
    gantry: &Gantry,
    caller: &Caller,
    csrf: &str,
    name: &str,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let Some(app) = visible_app(gantry, caller, name).await? else {
        return Ok(not_found(csrf));
    };
    let (_, releases, statuses) = history(gantry, &app).await?;
    let body = pages::releases(app.as_str(), &releases, &statuses);
    Ok(respond(
        StatusCode::OK,
        pages::layout(&format!("{app} releases"), Some(csrf), body),
    ))
}

async fn release_page(
    gantry: &Gantry,
    caller: &Caller,
    csrf: &str,
    name: &str,
    version: &str,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let Some(app) = visible_app(gantry, caller, name).await? else {
        return Ok(not_found(csrf));
    };
    let Ok(version) = parse_version(version) else {
        return Ok(not_found(csrf));
    };
    let (current, releases, statuses) = history(gantry, &app).await?;
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
    let page = pages::ReleasePage {
        app: app.as_str(),
        release,
        status: &statuses[index],
        changed: &changed,
        log_html,
        can_roll_back: release.status == crate::store::ReleaseStatus::Succeeded
            && current != Some(version),
        csrf,
    };
    Ok(respond(
        StatusCode::OK,
        pages::layout(
            &format!("{app} v{version}"),
            Some(csrf),
            pages::release(&page),
        ),
    ))
}

/// A file a run left in its artifacts directory, as a download.
fn artifact(gantry: &Gantry, job: &str, number: &str, file: &str) -> Option<Response<Full<Bytes>>> {
    let number: i64 = number.parse().ok()?;
    if file.is_empty() || file.starts_with('.') || file.contains(['/', '\\']) {
        return None;
    }
    let bytes = std::fs::read(crate::jobs::artifacts_dir(gantry, job, number).join(file)).ok()?;
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Some(response)
}
