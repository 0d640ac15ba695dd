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
use gantry_proxy::listeners::Listeners;
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
    /// Copies of the proxy's listening sockets: a proxy that dies is started
    /// again on them, so clients wait in the backlog instead of being refused.
    listeners: std::sync::Mutex<Option<Listeners>>,
    /// A proxy this serve started has exited: start it again now.
    exited: Arc<tokio::sync::Notify>,
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
            listeners: std::sync::Mutex::new(None),
            exited: Arc::new(tokio::sync::Notify::new()),
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

    /// Every route, in one order (to compare two tables); `None` until the
    /// mirror is the whole truth (every app restored).
    pub fn snapshot(&self) -> Option<gantry_proxy::state::State> {
        self.authoritative
            .load(Ordering::Acquire)
            .then(|| normalized(self.mirror.snapshot()))
    }

    /// Makes `state` the whole table, here and on the proxy (an edge
    /// proxy's table comes from the one serve publishes).
    pub async fn replace_all(&self, state: &gantry_proxy::state::State) {
        {
            let _wire = self.wire.lock().await;
            self.mirror.replace(state);
        }
        self.authoritative.store(true, Ordering::Release);
        self.resync().await;
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

    /// Keeps copies of the proxy's listening sockets.
    fn keep_listeners(&self, listeners: Listeners) {
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Some(listeners);
    }

    /// Copies of the kept listening sockets, to pass to a proxy.
    fn listener_copies(&self) -> Option<Listeners> {
        let kept = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref().and_then(|l| match l.try_clone() {
            Ok(copies) => Some(copies),
            Err(err) => {
                tracing::warn!(error = %err, "cannot copy the listening sockets");
                None
            }
        })
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

    /// Each app's traffic as the proxy counted it since it started; `None`
    /// when the proxy does not answer.
    pub async fn traffic(&self) -> Option<Vec<gantry_proxy::traffic::AppTraffic>> {
        control::call(&self.socket, &Request::Traffic)
            .await
            .ok()
            .and_then(|reply| reply.traffic)
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
/// death, does not reach it), on listening sockets that `serve` keeps
/// copies of; waits until it answers. Of a proxy already running, `serve`
/// takes copies of its sockets. Returns the proxy's pid.
pub async fn ensure_running(routing: &Routing, config: &Config) -> anyhow::Result<u32> {
    if let Some(pid) = running(config).await {
        if routing.listener_copies().is_none() {
            match control::take_listeners(&config.proxy_socket()).await {
                Ok(listeners) => routing.keep_listeners(listeners),
                Err(err) => tracing::warn!(
                    error = %err,
                    "the running proxy did not hand over its listening sockets; if it dies, its replacement binds new ones"
                ),
            }
        }
        return Ok(pid);
    }
    let listeners = match routing.listener_copies() {
        Some(copies) => copies,
        None => {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            let bound = Listeners::bind(config.http_listen, config.https_listen, workers)
                .with_context(|| {
                    format!(
                        "cannot listen on {} and {}",
                        config.http_listen, config.https_listen
                    )
                })?;
            let copies = bound.try_clone()?;
            routing.keep_listeners(bound);
            copies
        }
    };
    let exe =
        std::env::current_exe().context("cannot find the gantry binary to start the proxy")?;
    let child = spawn_proxy(config, &exe, &listeners, false)?;
    let pid = wait_until_answering(routing, config, child, None).await?;
    retire_legacy_proxy(config).await;
    Ok(pid)
}

/// A proxy of a gantry from before the proxy's files moved to its own
/// directory answers on `run/proxy.sock` and knows no handover: with both
/// on the same ports (SO_REUSEPORT), it would keep serving its old routes
/// to some clients. Once the new one serves, the old one is asked to stop
/// (SIGTERM: it finishes its requests first).
async fn retire_legacy_proxy(config: &Config) {
    let legacy = config.run_dir().join("proxy.sock");
    let Ok(reply) = control::call(&legacy, &Request::Status).await else {
        return;
    };
    let Some(pid) = reply.pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill has no memory effects; the pid is the proxy's own answer.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        tracing::info!(
            pid,
            "stopped the proxy of an earlier gantry (it finishes its requests)"
        );
    }
}

/// Waits for a proxy that runs as a service of its own (systemd's
/// `gantry-proxy.service`) to answer; its pid.
pub async fn wait_for_service(config: &Config) -> anyhow::Result<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = running(config).await {
            return Ok(pid);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the proxy service does not answer on {} (systemctl status gantry-proxy.service)",
                config.proxy_socket().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `gantry upgrade`: starts the proxy of the binary at `exe` beside the
/// running one, on the same listening sockets; it serves, then tells the old
/// one to finish its requests and exit, and takes its control socket.
/// Returns (old pid, new pid).
pub async fn upgrade(
    routing: &Routing,
    config: &Config,
    exe: &std::path::Path,
) -> anyhow::Result<(Option<u32>, u32)> {
    if config.proxy_service {
        anyhow::bail!(
            "the proxy is systemd's gantry-proxy.service here: gantry upgrade restarts it with systemctl"
        );
    }
    let old = running(config).await;
    let listeners = match routing.listener_copies() {
        Some(copies) => copies,
        None => {
            let taken = control::take_listeners(&config.proxy_socket())
                .await
                .context("the running proxy did not hand over its listening sockets")?;
            routing.keep_listeners(taken.try_clone()?);
            taken
        }
    };
    let child = spawn_proxy(config, exe, &listeners, old.is_some())?;
    let new = wait_until_answering(routing, config, child, old).await?;
    // It read the routes the old one saved; any change since is made good.
    routing.dirty.store(true, Ordering::Release);
    routing.catch_up().await;
    Ok((old, new))
}

/// Starts `exe proxy` for `config` with `listeners` passed as descriptors
/// 3, 4, ... (named in `GANTRY_LISTEN_FDNAMES`), in a session of its own.
fn spawn_proxy(
    config: &Config,
    exe: &std::path::Path,
    listeners: &Listeners,
    takeover: bool,
) -> anyhow::Result<tokio::process::Child> {
    use std::os::fd::AsRawFd;
    let log_path = config.home.join("proxy.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_err = log.try_clone()?;
    // Copies above the range they go to, so no move overwrites another.
    let high: Vec<std::os::fd::OwnedFd> = listeners
        .sockets
        .iter()
        .map(|(_, fd)| {
            // SAFETY: fcntl duplicates a descriptor we own into a new one.
            let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
            if dup < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `dup` was just made, and nothing else owns it.
            Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) })
        })
        .collect::<std::io::Result<_>>()?;
    let raw: Vec<i32> = high.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--home")
        .arg(&config.home)
        .arg("proxy")
        .arg("--http-listen")
        .arg(config.http_listen.to_string())
        .arg("--https-listen")
        .arg(config.https_listen.to_string())
        .env(gantry_proxy::listeners::ENV_FDS, raw.len().to_string())
        .env(gantry_proxy::listeners::ENV_NAMES, listeners.names())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(false);
    if takeover {
        command.arg("--takeover");
    }
    // SAFETY: setsid and dup2 are async-signal-safe and touch no memory of
    // ours; `raw` is read, not allocated, in the child.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            for (i, fd) in raw.iter().enumerate() {
                let target = 3 + i32::try_from(i).unwrap_or(i32::MAX - 3);
                if libc::dup2(*fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().context("cannot start gantry proxy")?;
    drop(high);
    Ok(child)
}

/// Waits until `child` answers on the control socket (as a pid other than
/// `replacing`); then reaps it in the background, telling the supervisor
/// when it exits.
async fn wait_until_answering(
    routing: &Routing,
    config: &Config,
    mut child: tokio::process::Child,
    replacing: Option<u32>,
) -> anyhow::Result<u32> {
    let log_path = config.home.join("proxy.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(pid) = running(config).await.filter(|pid| Some(*pid) != replacing) {
            tracing::info!(pid, "started the proxy");
            let exited = routing.exited.clone();
            // Reap it whenever it exits, so it never lingers as a zombie,
            // and have the supervisor start the next one at once.
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await {
                    tracing::warn!(%status, "the proxy exited");
                }
                exited.notify_one();
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the proxy every second; starts it again if it died, and hands it
/// the routes.
pub async fn supervise(routing: &Routing, config: &Config, shutdown: CancellationToken) {
    let mut last_pid = running(config).await;
    // Proxies gone from the control socket but maybe not yet reaped.
    let mut unreaped: Vec<i32> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = routing.exited.notified() => {}
        }
        // A proxy started by this process before it exec'd itself (`gantry
        // upgrade`) is still its child, with nobody waiting for it: reap it,
        // asking again each tick until it has exited (a killed process
        // takes a moment to become a zombie).
        unreaped.retain(|pid| {
            // SAFETY: waits for that one pid only, without blocking; a pid
            // that is not our child just fails (ECHILD, -1).
            unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) == 0 }
        });
        if let Some(pid) = running(config).await {
            last_pid = Some(pid);
            routing.catch_up().await;
            continue;
        }
        if let Some(pid) = last_pid.take().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: as above.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0 {
                unreaped.push(pid);
            }
        }
        if config.proxy_service {
            // systemd restarts it, on the sockets it keeps; it gets the
            // routes once it answers.
            routing.dirty.store(true, Ordering::Release);
            continue;
        }
        tracing::warn!("the proxy is not answering; starting it again");
        match ensure_running(routing, config).await {
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

    /// Answers `Status` with a pid, as a proxy of an earlier gantry does.
    struct Legacy(u32);

    impl Handler for Legacy {
        async fn handle(&self, _request: Request) -> Reply {
            Reply {
                ok: true,
                pid: Some(self.0),
                ..Reply::default()
            }
        }
    }

    #[tokio::test]
    async fn a_proxy_of_an_earlier_gantry_is_asked_to_stop() {
        let home = tempfile::tempdir().expect("tempdir");
        let config = Config::resolve(crate::config::Overrides {
            home: Some(home.path().to_path_buf()),
            ..Default::default()
        })
        .expect("config");
        std::fs::create_dir_all(config.run_dir()).expect("run dir");
        let mut old = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = old.id().expect("pid");
        let listener =
            tokio::net::UnixListener::bind(config.run_dir().join("proxy.sock")).expect("bind");
        let shutdown = CancellationToken::new();
        tokio::spawn(control::serve(
            listener,
            Arc::new(Legacy(pid)),
            shutdown.clone(),
        ));
        retire_legacy_proxy(&config).await;
        let status = tokio::time::timeout(Duration::from_secs(5), old.wait())
            .await
            .expect("it stopped")
            .expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        shutdown.cancel();
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
