//! `/apps/APP/logs`: the app's log, followed live over Server-Sent Events
//! as `gantry logs -f` follows it (the last lines of every process, then
//! what they print), through the same `deploy::logs::stream`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::html;
use tokio::io::AsyncBufReadExt;

use super::pages::{app_nav, layout};
use super::respond::{html as page, not_found, Page};
use super::session::{visible_app, LoggedIn};
use crate::context::Gantry;
use crate::deploy::logs::LogsRequest;

/// Past lines the page starts with.
const PAST_LINES: usize = 200;

/// `?process=web`: one process type only.
fn process_of(query: &std::collections::HashMap<String, String>) -> Option<String> {
    query
        .get("process")
        .filter(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .cloned()
}

/// `GET /apps/APP/logs`.
pub async fn logs(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Page {
    let csrf = visitor.csrf();
    let Some(app) = visible_app(&gantry, visitor.caller(), &name)
        .await?
        .map(|r| r.name)
    else {
        return Ok(not_found(csrf));
    };
    let events = match process_of(&query) {
        Some(process) => format!("/apps/{app}/logs/events?process={process}"),
        None => format!("/apps/{app}/logs/events"),
    };
    let body = html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · logs" }
        (app_nav(app.as_str()))
        p { "The last " (PAST_LINES) " lines of every process, then what they print, as it comes (like " code { "gantry logs -f " (app) } ")." }
        pre.log #log data-events=(events) {}
        script src="/assets/follow.js" {}
    };
    Ok(page(
        StatusCode::OK,
        layout(&format!("{app} logs"), Some(csrf), body),
    ))
}

/// `GET /apps/APP/logs/events`: each line a `log` event (HTML, escaped,
/// colours kept), until the visitor leaves.
pub async fn events(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let csrf = visitor.csrf();
    let Ok(Some(app)) = visible_app(&gantry, visitor.caller(), &name)
        .await
        .map(|r| r.map(|r| r.name))
    else {
        return not_found(csrf);
    };
    let request = LogsRequest {
        follow: true,
        process: process_of(&query),
        lines: PAST_LINES,
    };
    // The log streams into one end of a pipe; the events come from the
    // other. When the visitor leaves, the reader goes, the writer fails,
    // and the stream ends.
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut writer = writer;
        if let Err(err) = crate::deploy::logs::stream(&gantry, &app, &request, &mut writer).await {
            tracing::debug!(error = %format!("{err:#}"), "a log page's stream ended");
        }
    });
    let lines = tokio::io::BufReader::new(reader).lines();
    let stream = futures_util::stream::unfold(lines, |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let html =
                    ansi_to_html::convert(&line).unwrap_or_else(|_| html! { (line) }.into_string());
                Some((
                    Ok::<_, Infallible>(Event::default().event("log").data(html)),
                    lines,
                ))
            }
            _ => None,
        }
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
        .into_response()
}
