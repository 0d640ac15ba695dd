//! The dashboard's routes. Public: the one script, badges, `/metrics` (which
//! checks its own token) and login links; everything else is behind the
//! session check (`session::require`), and every form behind its CSRF token.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{apps, code, graphs, jobs, logs, metrics, session, system};
use crate::context::Gantry;

/// Serves the dashboard on `listener` until `shutdown`. Connections open
/// then (a log followed live) end with the process, as before a restart.
pub async fn serve(
    listener: TcpListener,
    gantry: Arc<Gantry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tokio::select! {
        served = axum::serve(listener, router(gantry)) => served,
        _ = shutdown.cancelled() => Ok(()),
    }
}

fn router(gantry: Arc<Gantry>) -> Router {
    let pages = Router::new()
        .route("/", get(apps::overview))
        .route("/apps/{name}", get(apps::app))
        .route("/apps/{name}/code", get(code::tree))
        .route("/apps/{name}/code/{*path}", get(code::tree))
        .route("/apps/{name}/commits", get(code::commits))
        .route("/apps/{name}/logs", get(logs::logs))
        .route("/apps/{name}/metrics", get(graphs::metrics))
        .route("/apps/{name}/logs/events", get(logs::events))
        .route("/apps/{name}/commits/{sha}", get(code::commit))
        .route("/apps/{name}/releases", get(apps::releases))
        .route("/apps/{name}/releases/{version}", get(apps::release))
        .route(
            "/apps/{name}/releases/{version}/rollback",
            post(apps::rollback),
        )
        .route("/jobs", get(jobs::list))
        .route("/system", get(system::system))
        .route("/jobs/{*rest}", get(jobs::show).post(jobs::run))
        .route("/logout", post(apps::logout))
        .fallback(apps::unknown)
        .method_not_allowed_fallback(apps::unknown)
        .layer(middleware::from_fn_with_state(
            gantry.clone(),
            session::require,
        ));
    Router::new()
        .route("/assets/follow.js", get(follow_js))
        .route("/badge/{*file}", get(jobs::badge))
        .route("/metrics", get(metrics::metrics))
        .route("/login/{secret}", get(apps::login))
        .merge(pages)
        .with_state(gantry)
}

/// The one script: it follows a running job's log.
async fn follow_js() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("assets/follow.js"),
    )
}
