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
    loop {
        let mut events = gantry.runtime.restarts();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(Restarted { app, release, id })) => {
                    // Wait for any deploy, scale or restart of the app to finish:
                    // it routes its own containers, and re-routing in the middle
                    // of it could keep a container it is about to stop.
                    let gantry = gantry.clone();
                    tokio::spawn(async move {
                        let _lock = gantry.locks.get(&app).lock_owned().await;
                        reroute(&gantry, &app, release, &id).await;
                    });
                }
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
