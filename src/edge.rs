//! Edge proxies: on a swarm, every node runs the same proxy, so any node
//! answers for any app and DNS may point at all of them. serve publishes
//! its whole route table to the shared Postgres whenever it changes
//! ([`publish_forever`]); each node's `gantry edge` ([`run`]) keeps a proxy
//! of its own and gives it that table: after each notice on the routes
//! channel, after a lost connection (sqlx drops notices sent while it
//! reconnects, so a reconnect means a full read), and every third of
//! `stale_after` (at most 30 s). An edge that cannot read the table for
//! `stale_after` stops serving the routes it can no longer verify (503, as
//! for a stopped app) rather than send traffic to tasks that may be gone:
//! a node cut off from the cluster must not serve stale routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context::Gantry;
use crate::routing::Routing;
use crate::store::{Store, ROUTES_CHANNEL};

/// serve's side: publishes the route table whenever it differs from the
/// last one published (checked four times a second), while this manager
/// leads.
pub async fn publish_forever(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let mut published: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // One manager publishes: the leading one.
        if gantry.leader.leading().is_none() {
            published = None;
            continue;
        }
        let Some(state) = gantry.routing.snapshot() else {
            continue;
        };
        let Ok(json) = serde_json::to_string(&state) else {
            continue;
        };
        if published.as_ref() == Some(&json) {
            continue;
        }
        match gantry.store.publish_routes(&json).await {
            Ok(version) => {
                tracing::debug!(version, "published the routes for the edge proxies");
                published = Some(json);
            }
            Err(err) => tracing::warn!(error = %err, "cannot publish the routes"),
        }
    }
}

/// How an edge runs.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The shared Postgres.
    pub database_url: String,
    /// How long the table may go unread before the edge stops serving it.
    pub stale_after: Duration,
}

/// A node's side (`gantry edge`): runs the node's proxy on `config`'s
/// listeners and keeps it on the published table, until `shutdown`.
pub async fn run(
    config: &Config,
    settings: EdgeSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crate::store::redact(&settings.database_url)
            )
        })?;
    let routing = Arc::new(Routing::new(config.proxy_socket()));
    let pid = crate::routing::ensure_running(&routing, config).await?;
    tracing::info!(pid, http = %config.http_listen, "the edge proxy runs");
    {
        let (routing, config, token) = (routing.clone(), config.clone(), shutdown.child_token());
        tokio::spawn(async move { crate::routing::supervise(&routing, &config, token).await });
    }
    {
        // This node's traffic, and the memory of the tasks on its engine.
        let (store, routing, token) = (store.clone(), routing.clone(), shutdown.child_token());
        let source = config.manager_id();
        let engine = crate::context::connect_docker().await.ok();
        tokio::spawn(async move {
            let processes = crate::traffic::NodeProcesses(engine);
            crate::traffic::sample_forever(&store, &routing, &source, &processes, token).await;
        });
    }
    // Read the table often enough to notice, within `stale_after`, that it
    // cannot be read: a cut-off listener hears nothing, not even its loss.
    let period = (settings.stale_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut version = None;
    let mut last_read = Instant::now();
    let mut cleared = false;
    let mut listener = None;
    let mut tls = SharedTls::default();
    loop {
        shared_tls(&store, config, &routing, &mut tls).await;
        // A database that does not answer is as bad as one that refuses
        // (the pool would keep trying to connect for half a minute).
        let read = tokio::time::timeout(Duration::from_secs(2), store.published_routes())
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::Conflict(
                    "the database did not answer within 2s".into(),
                ))
            });
        match read {
            Ok(Some((v, json))) => {
                last_read = Instant::now();
                if version != Some(v) || cleared {
                    match serde_json::from_str::<gantry_proxy::state::State>(&json) {
                        Ok(state) => {
                            routing.replace_all(&state).await;
                            tracing::info!(
                                version = v,
                                routes = state.routes.len(),
                                "routes from serve"
                            );
                            version = Some(v);
                            cleared = false;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "the published routes do not read")
                        }
                    }
                }
            }
            Ok(None) => last_read = Instant::now(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the routes");
                if !cleared && last_read.elapsed() > settings.stale_after {
                    tracing::warn!(
                        secs = settings.stale_after.as_secs(),
                        "the routes could not be verified for too long; serving none until they can"
                    );
                    // The hosts stay, with no backend: 503, as for a stopped app.
                    let mut unverified = routing.snapshot().unwrap_or_default();
                    for route in &mut unverified.routes {
                        route.backends.clear();
                    }
                    routing.replace_all(&unverified).await;
                    cleared = true;
                }
            }
        }
        if listener.is_none() {
            listener = listen(&settings.database_url).await;
        }
        let wait = async {
            match listener.as_mut() {
                // A notice, or a lost connection (None): read the table again.
                Some(l) => match l.try_recv().await {
                    Ok(Some(_)) => true,
                    Ok(None) | Err(_) => false,
                },
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    true
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            alive = wait => {
                if !alive {
                    listener = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// What an edge has taken up of the swarm's TLS state.
#[derive(Default)]
struct SharedTls {
    /// The certificates' stamp when last written here.
    certs: Option<(i64, i64)>,
    /// The HTTP-01 challenges this node's proxy answers now: token → answer.
    answered: std::collections::BTreeMap<String, String>,
}

/// Takes up the swarm's certificates (written to this node's certs
/// directory, the proxy told when one changed) and its open HTTP-01
/// challenges.
async fn shared_tls(store: &Store, config: &Config, routing: &Routing, tls: &mut SharedTls) {
    const WITHIN: Duration = Duration::from_secs(2);
    let dir = config.certs_dir();
    let taken = crate::certs::take_up_shared(store, &dir, routing, &mut tls.certs);
    match tokio::time::timeout(WITHIN, taken).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "cannot take up the swarm's certificates")
        }
        Err(_) => tracing::warn!("the swarm's certificates did not come within 2s"),
    }
    let open: std::collections::BTreeMap<String, String> =
        match tokio::time::timeout(WITHIN, store.open_challenges()).await {
            Ok(Ok(open)) => open.into_iter().collect(),
            _ => return,
        };
    let answered = &mut tls.answered;
    for (token, answer) in &open {
        if answered.get(token) != Some(answer) {
            match routing.challenge(token, answer).await {
                Ok(()) => {
                    answered.insert(token.clone(), answer.clone());
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot answer a challenge")
                }
            }
        }
    }
    let closed: Vec<String> = answered
        .keys()
        .filter(|t| !open.contains_key(*t))
        .cloned()
        .collect();
    for token in closed {
        routing.unchallenge(&token).await;
        answered.remove(&token);
    }
}

/// A listener on the routes and certificates channels (Postgres only;
/// `None` elsewhere or when it cannot connect: the edge then reads the
/// tables every second).
async fn listen(url: &str) -> Option<sqlx::postgres::PgListener> {
    if !url.starts_with("postgres") {
        return None;
    }
    let mut listener = match sqlx::postgres::PgListener::connect(url).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for route changes");
            return None;
        }
    };
    match listener
        .listen_all([ROUTES_CHANNEL, crate::store::CERTS_CHANNEL])
        .await
    {
        Ok(()) => Some(listener),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for route changes");
            None
        }
    }
}
