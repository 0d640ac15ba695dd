//! Follows the runtime's restarts of app processes, so that a live container
//! Docker restarted (its restart policy after a crash, or the engine itself
//! restarting) is routed at its new address. A restarted container may get a
//! new IP, and its old IP may go to another app's container.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::context::Gantry;
use crate::names::AppName;
use crate::runtime::Restarted;

/// Runs until `shutdown`, reconnecting to the event stream when it breaks.
pub async fn follow_restarts(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let runtime = gantry.runtime.clone();
    follow(
        move || runtime.restarts(),
        |Restarted { app, release, id }| {
            // Wait for any deploy, scale or restart of the app to finish: it
            // routes its own containers, and re-routing in the middle of it
            // could keep a container it is about to stop.
            let gantry = gantry.clone();
            tokio::spawn(async move {
                let _lock = gantry.locks.get(&app).lock_owned().await;
                reroute(&gantry, &app, release, &id).await;
            });
        },
        shutdown,
    )
    .await;
}

/// Hands each event of `events()` to `handle` until `shutdown`, opening
/// the stream again a second after it breaks.
async fn follow<T>(
    events: impl Fn() -> futures_util::stream::BoxStream<'static, crate::runtime::Result<T>>,
    mut handle: impl FnMut(T),
    shutdown: CancellationToken,
) {
    loop {
        let mut stream = events();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(event)) => handle(event),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "docker event stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Re-routes `app` when a container of its live release (re)started. The
/// caller holds the app's lock.
async fn reroute(gantry: &Gantry, app: &AppName, release: i64, id: &str) {
    match gantry.store.current_release(app).await {
        Ok(Some(current)) if current.version == release => {}
        _ => return,
    }
    tracing::info!(%app, release, container = %id, "live container (re)started; re-routing");
    if let Err(err) = super::route::reroute(gantry, app).await {
        tracing::warn!(%app, error = %err, "cannot re-route");
    }
}

/// Runs until `shutdown`: each process the kernel kills for memory is
/// recorded (`jobs::live::out_of_memory`), which alerts.
pub async fn follow_out_of_memory(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let runtime = gantry.runtime.clone();
    follow(
        move || runtime.out_of_memory(),
        |killed: crate::runtime::Killed| {
            let gantry = gantry.clone();
            tokio::spawn(async move { record_out_of_memory(&gantry, killed).await });
        },
        shutdown,
    )
    .await;
}

async fn record_out_of_memory(gantry: &Gantry, killed: crate::runtime::Killed) {
    let dyno = format!("{}.{}", killed.process, killed.replica);
    tracing::warn!(app = %killed.app, %dyno, container = %killed.id, "killed for memory");
    let limit = match gantry.store.get_app(&killed.app).await {
        Ok(Some(record)) => crate::resources::parse_stored(&record.resources)
            .get(&killed.process)
            .and_then(|l| l.memory)
            .map(crate::resources::human_memory),
        _ => None,
    };
    let short: String = killed.id.chars().take(12).collect();
    crate::jobs::live::out_of_memory(gantry, &killed.app, &dyno, &short, limit.as_deref()).await;
}
