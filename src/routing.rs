//! `serve`'s side of the proxy: it keeps its own copy of the routes (the
//! mirror), sends every change to the proxy process, and keeps that process
//! running.
//!
//! The proxy is a process of its own (`gantry proxy`) so that restarting or
//! crashing `serve` never drops a request. The mirror is what `serve`
//! believes; once `serve` has restored every app after its start, it is the
//! whole truth, and a proxy that restarted is handed all of it at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gantry_proxy::control::{self, Request};
use gantry_proxy::state::RouteSpec;
use gantry_proxy::{Route, RouteTable};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How long a route change may take the proxy (it saves its table to disk).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes as `serve` knows them, and the link to the proxy.
pub struct Routing {
    mirror: RouteTable,
    socket: PathBuf,
    /// Every app has been restored: the mirror may replace the proxy's table.
    authoritative: AtomicBool,
    /// The last send failed (logged once, not on every change).
    unreachable: AtomicBool,
    /// A change did not reach the proxy: the supervisor sends the whole
    /// mirror once it answers again. A proxy that missed one change keeps
    /// a stale route, whose addresses Docker may give to another app.
    dirty: AtomicBool,
    /// Held from a change to the mirror until the proxy has it, so the
    /// proxy sees changes in the mirror's order (a snapshot sent for a
    /// resync never overtakes a later change).
    wire: tokio::sync::Mutex<()>,
}

impl Routing {
    pub fn new(socket: PathBuf) -> Routing {
        Routing {
            mirror: RouteTable::new(),
            socket,
            authoritative: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            wire: tokio::sync::Mutex::new(()),
        }
    }

    /// Routes `host` to `addrs` (none: the proxy answers 503); returns the
    /// addresses the replaced route had that the new one does not, the ones
    /// to drain before their containers stop.
    pub async fn set(
        &self,
        host: &str,
        name: &str,
        addrs: Vec<SocketAddr>,
        https_redirect: bool,
    ) -> Vec<SocketAddr> {
        let route = RouteSpec {
            host: host.to_owned(),
            name: name.to_owned(),
            backends: addrs,
            https_redirect,
        };
        let _wire = self.wire.lock().await;
        let replaced = self.mirror.set(host, route.to_route());
        let gone = gone(replaced, &route.backends);
        self.change(Request::Route { route }).await;
        gone
    }

    /// Stops routing `host`; returns the addresses it had.
    pub async fn remove(&self, host: &str) -> Vec<SocketAddr> {
        let _wire = self.wire.lock().await;
        let replaced = self.mirror.remove(host);
        self.change(Request::Unroute {
            host: host.to_owned(),
        })
        .await;
        gone(replaced, &[])
    }

    pub async fn alias(&self, alias: &str, host: &str) {
        let _wire = self.wire.lock().await;
        self.mirror.alias(alias, host);
        self.change(Request::Alias {
            alias: alias.to_owned(),
            host: host.to_owned(),
        })
        .await;
    }

    pub async fn unalias(&self, alias: &str) {
        let _wire = self.wire.lock().await;
        self.mirror.unalias(alias);
        self.change(Request::Unalias {
            alias: alias.to_owned(),
        })
        .await;
    }

    /// The route `serve` set for a host.
    pub fn lookup(&self, host: &str) -> Option<Arc<Route>> {
        self.mirror.lookup(host)
    }

    /// Waits until the proxy has no request in flight to `addrs`, up to
    /// `timeout`; returns how many were left (0 when the proxy is not
    /// reachable: nothing can be in flight through it).
    pub async fn drain(&self, addrs: &[SocketAddr], timeout: Duration) -> usize {
        if addrs.is_empty() {
            return 0;
        }
        let request = Request::Drain {
            backends: addrs.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.send(request).await.and_then(|r| r.left).unwrap_or(0)
    }

    /// Tells the proxy to read the certificate directory again.
    pub async fn reload_certs(&self) {
        self.send(Request::ReloadCerts).await;
    }

    /// Has the proxy answer an HTTP-01 challenge; an error if it cannot,
    /// since the CA would then fail the order.
    pub async fn challenge(&self, token: &str, answer: &str) -> anyhow::Result<()> {
        self.call(Request::Challenge {
            token: token.to_owned(),
            answer: answer.to_owned(),
        })
        .await
    }

    pub async fn unchallenge(&self, token: &str) {
        self.send(Request::Unchallenge {
            token: token.to_owned(),
        })
        .await;
    }

    /// Has the proxy answer a TLS-ALPN-01 challenge for `host`.
    pub async fn alpn_challenge(&self, host: &str, digest: &[u8]) -> anyhow::Result<()> {
        self.call(Request::AlpnChallenge {
            host: host.to_owned(),
            digest: digest.to_vec(),
        })
        .await
    }

    pub async fn alpn_unchallenge(&self, host: &str) {
        self.send(Request::AlpnUnchallenge {
            host: host.to_owned(),
        })
        .await;
    }

    /// Marks the mirror complete (every app restored) and hands all of it to
    /// the proxy, which drops any route `serve` no longer has.
    pub async fn take_over(&self) {
        self.authoritative.store(true, Ordering::Release);
        self.resync().await;
    }

    /// Sends the whole mirror, if it is complete (a proxy reads the
    /// certificates itself when it starts).
    async fn resync(&self) {
        if self.authoritative.load(Ordering::Acquire) {
            let _wire = self.wire.lock().await;
            // Cleared first: a change that fails from here on sets it again.
            self.dirty.store(false, Ordering::Release);
            let state = self.mirror.snapshot();
            self.change(Request::Replace { state }).await;
        }
    }

    /// Checks that the proxy serves exactly the mirror (a change lost on the
    /// way would leave it a stale address, which Docker may have given to
    /// another app's container since); sends the whole table if not.
    /// Returns whether they differed.
    pub async fn verify(&self) -> bool {
        if !self.authoritative.load(Ordering::Acquire) {
            return false;
        }
        let differs = {
            let _wire = self.wire.lock().await;
            let Some(table) = self.send(Request::Table).await.and_then(|r| r.table) else {
                return false;
            };
            normalized(table) != normalized(self.mirror.snapshot())
        };
        if differs {
            tracing::warn!("the proxy's routes differ from serve's; sending it every route");
            self.resync().await;
        }
        differs
    }

    /// Hands a proxy that missed a change the whole table.
    pub async fn catch_up(&self) {
        if self.dirty.load(Ordering::Acquire) {
            tracing::info!("the proxy missed a route change; sending it every route");
            self.resync().await;
        }
    }

    /// Sends a change of the routes; one the proxy did not take is made good
    /// by the next resync (see `dirty`).
    async fn change(&self, request: Request) {
        // A proxy that hangs must not hold every later change behind this one.
        let sent = tokio::time::timeout(CHANGE_TIMEOUT, self.send(request)).await;
        if !matches!(sent, Ok(Some(_))) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    async fn call(&self, request: Request) -> anyhow::Result<()> {
        control::call(&self.socket, &request)
            .await
            .map(|_| ())
            .context("the proxy did not take the change")
    }

    /// Sends a change; a proxy that is down gets it with the next resync.
    async fn send(&self, request: Request) -> Option<control::Reply> {
        match control::call(&self.socket, &request).await {
            Ok(reply) => {
                self.unreachable.store(false, Ordering::Relaxed);
                Some(reply)
            }
            Err(err) => {
                if !self.unreachable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "cannot reach the proxy; it gets the routes when it is back");
                }
                None
            }
        }
    }
}

/// A table with each route's backends in one order, to compare two.
fn normalized(mut state: gantry_proxy::state::State) -> gantry_proxy::state::State {
    for route in &mut state.routes {
        route.backends.sort();
    }
    state.routes.sort_by(|a, b| a.host.cmp(&b.host));
    state
}

fn gone(replaced: Option<Arc<Route>>, kept: &[SocketAddr]) -> Vec<SocketAddr> {
    replaced
        .map(|r| {
            r.backends()
                .iter()
                .map(|b| b.addr)
                .filter(|a| !kept.contains(a))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a proxy answers on `config`'s socket; its pid if so.
pub async fn running(config: &Config) -> Option<u32> {
    control::call(&config.proxy_socket(), &Request::Status)
        .await
        .ok()
        .and_then(|r| r.pid)
}

/// Starts `gantry proxy` for `config` unless one is running, detached in a
/// session of its own (a signal to `serve`'s process group, or `serve`'s
/// death, does not reach it); waits until it answers. Returns its pid.
pub async fn ensure_running(config: &Config) -> anyhow::Result<u32> {
    if let Some(pid) = running(config).await {
        return Ok(pid);
    }
    let exe =
        std::env::current_exe().context("cannot find the gantry binary to start the proxy")?;
    let log_path = config.home.join("proxy.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_err = log.try_clone()?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--home")
        .arg(&config.home)
        .arg("proxy")
        .arg("--http-listen")
        .arg(config.http_listen.to_string())
        .arg("--https-listen")
        .arg(config.https_listen.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start gantry proxy")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(pid) = running(config).await {
            tracing::info!(pid, "started the proxy");
            // Reap it whenever it exits, so it never lingers as a zombie.
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await {
                    tracing::warn!(%status, "the proxy exited");
                }
            });
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            anyhow::bail!(
                "the proxy exited ({status}) before it was ready:\n{}",
                lines[lines.len().saturating_sub(5)..].join("\n")
            );
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the proxy did not answer on {} within 15 s (see {})",
                config.proxy_socket().display(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the proxy every second; starts it again if it died, and hands it
/// the routes.
pub async fn supervise(routing: &Routing, config: &Config, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if running(config).await.is_some() {
            routing.catch_up().await;
            continue;
        }
        tracing::warn!("the proxy is not answering; starting it again");
        match ensure_running(config).await {
            Ok(_) => routing.resync().await,
            Err(err) => tracing::error!(error = %format!("{err:#}"), "cannot start the proxy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proxy::control::{Handler, Reply};
    use std::sync::Mutex;

    /// A proxy's control socket that records what it was sent.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Request>>);

    impl Handler for Recorder {
        async fn handle(&self, request: Request) -> Reply {
            let table = matches!(request, Request::Table).then(|| {
                // A proxy that kept a stale address for `a.test`.
                let mut state = gantry_proxy::state::State::default();
                state.routes.push(RouteSpec {
                    host: "a.test".into(),
                    name: "a".into(),
                    backends: vec!["10.9.9.9:5000".parse().expect("addr")],
                    https_redirect: false,
                });
                state
            });
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request);
            Reply {
                ok: true,
                table,
                ..Reply::default()
            }
        }
    }

    #[tokio::test]
    async fn a_change_the_proxy_missed_reaches_it_when_it_answers_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("proxy.sock");
        let routing = Routing::new(socket.clone());
        routing.take_over().await;
        let addr: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        // Nothing listens: the change is lost on the way.
        routing.set("a.test", "a", vec![addr], false).await;
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let recorder = Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(control::serve(listener, recorder.clone(), shutdown.clone()));
        routing.catch_up().await;
        let sent = std::mem::take(&mut *recorder.0.lock().expect("lock"));
        match sent.as_slice() {
            [Request::Replace { state }] => {
                assert_eq!(state.routes.len(), 1);
                assert_eq!(state.routes[0].backends, vec![addr]);
            }
            other => panic!("expected the whole table, got {other:?}"),
        }
        // Caught up: nothing more is sent until another change is missed.
        routing.catch_up().await;
        assert!(recorder.0.lock().expect("lock").is_empty());
        // A proxy whose table differs from serve's is found and corrected.
        assert!(routing.verify().await);
        let sent = std::mem::take(&mut *recorder.0.lock().expect("lock"));
        assert!(
            matches!(sent.as_slice(), [Request::Table, Request::Replace { .. }]),
            "{sent:?}"
        );
        shutdown.cancel();
    }
}
