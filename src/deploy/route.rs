//! An app's route on the proxy: its host pointed at the web replicas of its
//! live release.

use std::net::{IpAddr, SocketAddr};

use crate::context::Gantry;
use crate::names::AppName;

/// Routes the app's host to `addrs` (none: the proxy answers 503); returns the
/// addresses the replaced route had and the new one does not, so requests in
/// flight to them can be drained.
pub async fn route(gantry: &Gantry, app: &AppName, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let redirect = match gantry.store.get_app(app).await {
        Ok(Some(record)) => record.https_redirect,
        _ => false,
    };
    gantry
        .routing
        .set(&gantry.config.app_host(app), app.as_str(), addrs, redirect)
        .await
}

/// Routes the app to the running containers of its live release, as Docker
/// has them now (after Docker restarted one, its address may have changed).
pub async fn reroute(gantry: &Gantry, app: &AppName) -> anyhow::Result<()> {
    let Some(release) = gantry.store.current_release(app).await? else {
        return Ok(());
    };
    let mut addrs = Vec::new();
    for c in gantry.runtime.list(app).await? {
        if c.running && c.release == Some(release.version) && c.process == "web" {
            if let Some(ip) = address(gantry, &c.id).await {
                addrs.push(SocketAddr::new(ip, release.port));
            }
        }
    }
    addrs.sort();
    route(gantry, app, addrs).await;
    Ok(())
}

/// Where a process answers, if the runtime knows.
pub async fn address(gantry: &Gantry, id: &str) -> Option<IpAddr> {
    gantry.runtime.inspect(id).await.ok()?.address
}
