//! The proxy as a process of its own (`gantry proxy`): its listeners, its
//! control socket, and its state on disk.
//!
//! It outlives `gantry serve`: a `serve` that restarts or crashes leaves the
//! proxy serving the last routes and certificates it was given, and a proxy
//! that restarts reads them back from disk before it accepts a connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::context::{Challenges, Proxy, Settings};
use crate::control::{self, Handler, Reply, Request};
use crate::routes::RouteTable;
use crate::state::State;
use crate::tls::CertStore;

/// Where the proxy listens and keeps its files.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    /// The control socket `serve` talks to.
    pub socket: PathBuf,
    /// Holds the proxy's pid while it runs.
    pub pid_file: PathBuf,
    /// The routes, rewritten on every change.
    pub state_file: PathBuf,
    /// `HOST.pem` + `HOST.key` files, and the development CA.
    pub certs_dir: PathBuf,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another gantry proxy is already running (its socket {0} answers)")]
    AlreadyRunning(String),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the control socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("a listener failed: {0}")]
    Serve(std::io::Error),
}

struct Daemon {
    routes: Arc<RouteTable>,
    certs: Arc<CertStore>,
    challenges: Challenges,
    config: DaemonConfig,
    /// One writer of the state file at a time, in the order changes happened.
    save: tokio::sync::Mutex<()>,
}

impl Daemon {
    async fn persist(&self) -> Reply {
        let _guard = self.save.lock().await;
        let state = self.routes.snapshot();
        let path = self.config.state_file.clone();
        match tokio::task::spawn_blocking(move || state.save(&path)).await {
            Ok(Ok(())) => control::ok(),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "cannot persist the routes");
                control::refused(err.to_string())
            }
            Err(err) => control::refused(err.to_string()),
        }
    }

    fn reload_certs(&self) {
        for (path, err) in self.certs.load_dir(&self.config.certs_dir) {
            tracing::warn!(cert = %path.display(), error = %err, "certificate not loaded");
        }
    }
}

impl Handler for Daemon {
    async fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Route { route } => {
                self.routes.set(&route.host, route.to_route());
                self.persist().await
            }
            Request::Unroute { host } => {
                self.routes.remove(&host);
                self.persist().await
            }
            Request::Alias { alias, host } => {
                self.routes.alias(&alias, &host);
                self.persist().await
            }
            Request::Unalias { alias } => {
                self.routes.unalias(&alias);
                self.persist().await
            }
            Request::Replace { state } => {
                self.routes.replace(&state);
                self.persist().await
            }
            Request::ReloadCerts => {
                self.reload_certs();
                control::ok()
            }
            Request::Challenge { token, answer } => {
                self.challenges
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token, answer);
                control::ok()
            }
            Request::Unchallenge { token } => {
                self.challenges
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&token);
                control::ok()
            }
            Request::AlpnChallenge { host, digest } => {
                match self.certs.set_alpn_challenge(&host, &digest) {
                    Ok(()) => control::ok(),
                    Err(err) => control::refused(err.to_string()),
                }
            }
            Request::AlpnUnchallenge { host } => {
                self.certs.remove_alpn_challenge(&host);
                control::ok()
            }
            Request::Drain {
                backends,
                timeout_ms,
            } => {
                let left = self
                    .routes
                    .drain(&backends, Duration::from_millis(timeout_ms))
                    .await;
                Reply {
                    left: Some(left),
                    ..control::ok()
                }
            }
            Request::Status => Reply {
                pid: Some(std::process::id()),
                ..control::ok()
            },
            Request::Table => Reply {
                table: Some(self.routes.snapshot()),
                ..control::ok()
            },
        }
    }
}

/// Runs the proxy until `shutdown`: loads the saved routes and the
/// certificates, binds HTTP, HTTPS and the control socket, writes the pid file.
pub async fn run(config: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    if control::call(&config.socket, &Request::Status)
        .await
        .is_ok()
    {
        return Err(DaemonError::AlreadyRunning(
            config.socket.display().to_string(),
        ));
    }
    let routes = Arc::new(RouteTable::new());
    routes.replace(&State::load(&config.state_file)?);
    let certs = Arc::new(CertStore::new());
    let challenges = Challenges::default();
    let daemon = Arc::new(Daemon {
        routes: routes.clone(),
        certs: certs.clone(),
        challenges: challenges.clone(),
        config: config.clone(),
        save: tokio::sync::Mutex::new(()),
    });
    daemon.reload_certs();

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let http = bind_all("HTTP", config.http_listen, workers)?;
    let https = bind_all("HTTPS", config.https_listen, workers)?;
    let socket_err = |source| DaemonError::Socket {
        path: config.socket.display().to_string(),
        source,
    };
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    let _ = std::fs::remove_file(&config.socket);
    let control_listener = UnixListener::bind(&config.socket).map_err(socket_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_err)?;
    }
    let _ = std::fs::write(&config.pid_file, format!("{}\n", std::process::id()));

    let mut settings = config.settings.clone();
    settings.https_port = https
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(443, |a| a.port());
    let tls = Arc::new(
        crate::tls::server_config(certs.clone())
            .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?,
    );
    tracing::info!(
        http = %config.http_listen,
        https = %config.https_listen,
        workers,
        routes = routes.hosts().len(),
        "gantry proxy is serving"
    );
    let control_task = tokio::spawn(control::serve(
        control_listener,
        daemon,
        shutdown.child_token(),
    ));
    // One single-threaded runtime per core, each with its own listeners
    // (SO_REUSEPORT: the kernel spreads connections) and its own pool of
    // backend connections: no work-stealing, no cross-thread wake-ups on the
    // request path.
    let mut threads = Vec::new();
    for (i, (http, https)) in http.into_iter().zip(https).enumerate() {
        let proxy = Arc::new(Proxy::with_settings(
            routes.clone(),
            challenges.clone(),
            Some(certs.clone()),
            settings.clone(),
        ));
        let (tls, token) = (tls.clone(), shutdown.child_token());
        let thread = std::thread::Builder::new()
            .name(format!("gantry-proxy-{i}"))
            .spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let http = TcpListener::from_std(http)?;
                    let https = TcpListener::from_std(https)?;
                    tokio::try_join!(
                        crate::serve::serve(http, proxy.clone(), token.clone()),
                        crate::serve::serve_tls(https, proxy, tls, token),
                    )
                    .map(|_| ())
                })
            })
            .map_err(DaemonError::Serve)?;
        threads.push(thread);
    }
    let outcome = tokio::task::spawn_blocking(move || {
        let mut outcome = Ok(());
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => outcome = Err(err),
                Err(_) => outcome = Err(std::io::Error::other("a proxy worker panicked")),
            }
        }
        outcome
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    shutdown.cancel();
    let _ = control_task.await;
    let _ = std::fs::remove_file(&config.socket);
    let _ = std::fs::remove_file(&config.pid_file);
    outcome.map_err(DaemonError::Serve)
}

/// `n` listeners on `addr` with SO_REUSEPORT, one per worker thread (port 0
/// picks one port for all of them).
fn bind_all(
    what: &'static str,
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, DaemonError> {
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let listener = (|| {
            let socket = if bound.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(bound)?;
            let listener = socket.listen(1024)?;
            bound = listener.local_addr()?;
            listener.into_std()
        })()
        .map_err(|source| DaemonError::Listen { what, addr, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}
