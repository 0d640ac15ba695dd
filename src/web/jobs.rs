//! The job log's pages: `/jobs`, `/jobs/NAME`, `/jobs/NAME/RUN` (the log,
//! followed live over Server-Sent Events while the run goes), Run again,
//! artifacts, and `/badge/NAME.svg`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};

use super::pages;
use super::respond::{html, not_found, problem, redirect, Page};
use super::session::{CsrfForm, CsrfRefused, LoggedIn};
use crate::access::Caller;
use crate::context::Gantry;
use crate::jobs::{self, Trigger};
use crate::store::{Run, RunStatus};

/// `GET /jobs`.
pub async fn list(State(gantry): State<Arc<Gantry>>, visitor: LoggedIn) -> Page {
    Ok(html(
        StatusCode::OK,
        list_page(&gantry, visitor.caller(), visitor.csrf()).await?,
    ))
}

/// `GET /jobs/NAME[/RUN[/events | /artifacts/FILE]]`.
pub async fn show(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Page {
    let csrf = visitor.csrf();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((job, tail)) = split_path(&segments) else {
        return Ok(not_found(csrf));
    };
    if !visitor.caller().may_use_job(&job) {
        return Ok(not_found(csrf));
    }
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let run = |number: &str| {
        let (gantry, job, number) = (gantry.clone(), job.clone(), number.parse::<i64>());
        async move {
            match number {
                Ok(n) => gantry.store.run(&job, n).await,
                Err(_) => Ok(None),
            }
        }
    };
    Ok(match tail.as_slice() {
        [] => html(StatusCode::OK, runs_page(&gantry, &job, csrf).await?),
        [number] => match run(number).await? {
            Some(run) => html(StatusCode::OK, run_page(&gantry, &run, csrf).await?),
            None => not_found(csrf),
        },
        [number, "events"] => match run(number).await? {
            Some(run) => {
                // `?from=BYTES`: where the page's log stopped.
                let from = query
                    .as_deref()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("from=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                events(gantry.clone(), run, from)
            }
            None => not_found(csrf),
        },
        [number, "artifacts", file] => {
            artifact(&gantry, &job, number, file).unwrap_or_else(|| not_found(csrf))
        }
        _ => not_found(csrf),
    })
}

/// `POST /jobs/NAME/run`: Run (or Run again, with the `again` run's
/// parameters), the same operation as `jobs:run`.
pub async fn run(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(rest): Path<String>,
    form: Result<CsrfForm, CsrfRefused>,
) -> Page {
    let (caller, csrf) = (visitor.caller(), visitor.csrf());
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((job, tail)) = split_path(&segments) else {
        return Ok(not_found(csrf));
    };
    if tail != ["run"] || !caller.may_use_job(&job) {
        return Ok(not_found(csrf));
    }
    let form = match form {
        Ok(form) => form,
        Err(refused) => return Ok(refused.into_response()),
    };
    // "Run again" names the run whose parameters to reuse.
    let again = form.field("again").and_then(|v| v.parse::<i64>().ok());
    Ok(match run_now(&gantry, caller, &job, again).await {
        Ok(run) => redirect(&format!("/jobs/{}/{}", run.job, run.number), None),
        Err(err) => problem(
            StatusCode::CONFLICT,
            "Cannot run it",
            &format!("{err:#}"),
            Some(csrf),
        ),
    })
}

/// `GET /badge/NAME.svg`: public, for READMEs.
pub async fn badge(State(gantry): State<Arc<Gantry>>, Path(file): Path<String>) -> Response {
    let Some(job) = file.strip_suffix(".svg") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let last = gantry
        .store
        .list_runs(job, 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next());
    badge_svg(job, last.as_ref())
}

/// A file a run left in its artifacts directory, as a download.
fn artifact(gantry: &Gantry, job: &str, number: &str, file: &str) -> Option<Response> {
    let number: i64 = number.parse().ok()?;
    if file.is_empty() || file.starts_with('.') || file.contains(['/', '\\']) {
        return None;
    }
    let bytes = std::fs::read(jobs::artifacts_dir(gantry, job, number).join(file)).ok()?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Some(response)
}

/// `["jobs", ...rest]` split into the job name and what follows it: job names
/// may hold one `/` (`APP/cron-x`), so a numeric segment marks the run.
fn split_path(rest: &[&str]) -> Option<(String, Vec<String>)> {
    let run_at = rest
        .iter()
        .position(|s| s.parse::<i64>().is_ok() || *s == "run");
    let (name, tail) = match run_at {
        Some(i) => rest.split_at(i),
        None => (rest, &[][..]),
    };
    if name.is_empty() || name.len() > 2 {
        return None;
    }
    Some((name.join("/"), tail.iter().map(|s| s.to_string()).collect()))
}

async fn list_page(gantry: &Gantry, caller: &Caller, csrf: &str) -> anyhow::Result<maud::Markup> {
    let mut rows = Vec::new();
    for job in jobs::overview(gantry, caller).await? {
        let mut durations: Vec<f64> = gantry
            .store
            .list_runs(&job.name, 20)
            .await?
            .iter()
            .filter(|r| r.started_at > 0 && r.finished_at > 0)
            .map(|r| (r.finished_at - r.started_at) as f64 / 1000.0)
            .collect();
        durations.reverse();
        rows.push(pages::JobRow {
            name: job.name,
            last: job.last,
            next: job.next,
            triggers: job.triggers,
            durations,
        });
    }
    Ok(pages::layout("Jobs", Some(csrf), pages::jobs(&rows)))
}

async fn runs_page(gantry: &Gantry, job: &str, csrf: &str) -> anyhow::Result<maud::Markup> {
    let runs = gantry.store.list_runs(job, 200).await?;
    Ok(pages::layout(
        job,
        Some(csrf),
        pages::job_runs(job, &runs, csrf),
    ))
}

async fn run_page(gantry: &Gantry, run: &Run, csrf: &str) -> anyhow::Result<maud::Markup> {
    let text = std::fs::read(jobs::log_path(gantry, &run.job, run.number)).unwrap_or_default();
    // Show whole lines; a live run's events start after the last one shown.
    let shown = if run.status.is_finished() {
        text.len()
    } else {
        text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
    };
    let log_html = to_html(&String::from_utf8_lossy(&text[..shown]));
    let mut artifacts: Vec<String> =
        std::fs::read_dir(jobs::artifacts_dir(gantry, &run.job, run.number))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    artifacts.sort();
    let children = gantry
        .store
        .child_runs(&format!("{}#{}", run.job, run.number))
        .await?;
    let page = pages::RunPage {
        run,
        log_html,
        log_bytes: shown,
        artifacts: &artifacts,
        children: &children,
        csrf,
    };
    Ok(pages::layout(
        &format!("{} #{}", run.job, run.number),
        Some(csrf),
        pages::run(&page),
    ))
}

/// ANSI-coloured text to HTML (escaped), as the release build log is.
fn to_html(text: &str) -> String {
    ansi_to_html::convert(text).unwrap_or_else(|_| maud::html! { (text) }.into_string())
}

/// Queues a manual run from the dashboard; `again` names a run whose
/// parameters it takes (the run page's "Run again").
async fn run_now(
    gantry: &Gantry,
    caller: &Caller,
    job: &str,
    again: Option<i64>,
) -> anyhow::Result<Run> {
    let def = jobs::find(gantry, job).await?;
    let who = format!("{} (dashboard)", caller.name());
    let params = match again {
        Some(number) => gantry
            .store
            .run(job, number)
            .await?
            .map(|run| run.param_pairs())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(jobs::trigger(
        gantry,
        def,
        Trigger {
            kind: "manual",
            cause: &who,
            params,
            parent: "",
            fence: None,
        },
    )
    .await?)
}

/// The run's log from byte `from` on, as Server-Sent Events: `log` events of
/// rendered HTML lines while it grows, then one `end` event with the status.
fn events(gantry: Arc<Gantry>, run: Run, from: u64) -> Response {
    struct Follow {
        gantry: Arc<Gantry>,
        run: Run,
        offset: u64,
        done: bool,
    }
    let follow = Follow {
        gantry,
        run,
        offset: from,
        done: false,
    };
    let stream = futures_util::stream::unfold(follow, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let status = state
                .gantry
                .store
                .run(&state.run.job, state.run.number)
                .await
                .ok()
                .flatten()
                .map_or(RunStatus::Failed, |r| r.status);
            let path = jobs::log_path(&state.gantry, &state.run.job, state.run.number);
            let bytes = std::fs::read(&path).unwrap_or_default();
            let start = usize::try_from(state.offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let fresh = &bytes[start..];
            // Whole lines only, unless the run is over.
            let take = if status.is_finished() {
                fresh.len()
            } else {
                fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
            };
            if take > 0 {
                state.offset += take as u64;
                let html = to_html(String::from_utf8_lossy(&fresh[..take]).trim_end_matches('\n'));
                let event = Event::default().event("log").data(html);
                return Some((Ok::<_, Infallible>(event), state));
            }
            if status.is_finished() {
                state.done = true;
                let event = Event::default().event("end").data(status.as_str());
                return Some((Ok(event), state));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Sse::new(stream),
    )
        .into_response()
}

/// A shields-style status badge for READMEs.
fn badge_svg(job: &str, last: Option<&Run>) -> Response {
    let (text, color) = match last.map(|r| r.status) {
        Some(RunStatus::Succeeded) => ("passing", "#2e7d32"),
        Some(RunStatus::Failed | RunStatus::TimedOut) => ("failing", "#c62828"),
        Some(RunStatus::Running | RunStatus::Queued) => ("running", "#1565c0"),
        Some(_) => ("stopped", "#8a6100"),
        None => ("no runs", "#757575"),
    };
    let label = job;
    let lw = 6 * label.len() + 10;
    let tw = 6 * text.len() + 10;
    let svg = maud::html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(lw + tw) height="20" role="img" aria-label={ (label) ": " (text) } {
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(tw) height="20" fill=(color) {}
            g fill="#fff" font-family="Verdana,sans-serif" font-size="11" {
                text x="5" y="14" { (label) }
                text x=(lw + 5) y="14" { (text) }
            }
        }
    }
    .into_string();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        svg,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_split_at_the_run_number() {
        assert_eq!(split_path(&["backup"]), Some(("backup".into(), vec![])));
        assert_eq!(
            split_path(&["shop", "cron-1", "12", "events"]),
            Some(("shop/cron-1".into(), vec!["12".into(), "events".into()]))
        );
        assert_eq!(
            split_path(&["backup", "run"]),
            Some(("backup".into(), vec!["run".into()]))
        );
        assert_eq!(split_path(&["a", "b", "c"]), None);
        assert_eq!(split_path(&[]), None);
    }
}
