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

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::context::{Challenges, Proxy, Settings};
use crate::control::{self, Handler, Reply, Request};
use crate::listeners::Listeners;
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
    /// Start beside a running proxy and take over from it (`gantry
    /// upgrade`): serve on the listening sockets passed, then tell the old
    /// one to retire, then take its control socket.
    pub takeover: bool,
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
    /// The listening sockets, for whoever asks (`Listeners`).
    listeners: Listeners,
    /// Cancelled to stop the proxy (`Retire`).
    shutdown: CancellationToken,
    /// Another proxy took over: its control socket and pid file stay.
    retired: AtomicBool,
    /// Each worker's traffic counts.
    traffic: Vec<Arc<crate::traffic::Traffic>>,
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
    fn listeners(&self) -> Option<&Listeners> {
        Some(&self.listeners)
    }

    async fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Retire => {
                tracing::info!(
                    "another proxy took the listening sockets; finishing the requests in flight"
                );
                self.retired.store(true, Ordering::SeqCst);
                self.shutdown.cancel();
                control::ok()
            }
            // Answered by the control socket itself, with the descriptors.
            Request::Listeners => control::refused("Listeners is answered with descriptors"),
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
            Request::Traffic => Reply {
                traffic: Some(crate::traffic::Traffic::sum(&self.traffic)),
                ..control::ok()
            },
        }
    }
}

/// Runs the proxy until `shutdown`: loads the saved routes and the
/// certificates, serves on `passed` listening sockets (else binds its own),
/// binds the control socket, writes the pid file.
pub async fn run(
    config: DaemonConfig,
    passed: Option<Listeners>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let running = control::call(&config.socket, &Request::Status)
        .await
        .is_ok();
    if running && !config.takeover {
        return Err(DaemonError::AlreadyRunning(
            config.socket.display().to_string(),
        ));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sockets = if passed.is_some() { "passed" } else { "bound" };
    let listeners =
        match passed {
            Some(listeners) => listeners,
            None if config.takeover => {
                return Err(DaemonError::Serve(std::io::Error::other(
                    "a takeover needs the running proxy's listening sockets passed to it",
                )))
            }
            None => Listeners::bind(config.http_listen, config.https_listen, workers).map_err(
                |source| DaemonError::Listen {
                    what: "HTTP and HTTPS",
                    addr: config.http_listen,
                    source,
                },
            )?,
        };
    let routes = Arc::new(RouteTable::new());
    routes.replace(&State::load(&config.state_file)?);
    let certs = Arc::new(CertStore::new());
    let challenges = Challenges::default();
    let listen = |what: &'static str, name: &str, addr: SocketAddr| {
        listeners
            .for_workers(name, workers)
            .map_err(|source| DaemonError::Listen { what, addr, source })
    };
    let http = listen("HTTP", crate::listeners::HTTP, config.http_listen)?;
    let https = listen("HTTPS", crate::listeners::HTTPS, config.https_listen)?;
    let https_port = listeners
        .local_addr(crate::listeners::HTTPS)
        .map_or(443, |a| a.port());
    let traffic: Vec<Arc<crate::traffic::Traffic>> =
        (0..http.len()).map(|_| Arc::default()).collect();
    let daemon = Arc::new(Daemon {
        routes: routes.clone(),
        certs: certs.clone(),
        challenges: challenges.clone(),
        config: config.clone(),
        save: tokio::sync::Mutex::new(()),
        listeners,
        shutdown: shutdown.clone(),
        retired: AtomicBool::new(false),
        traffic: traffic.clone(),
    });
    daemon.reload_certs();

    let socket_err = |source| DaemonError::Socket {
        path: config.socket.display().to_string(),
        source,
    };
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    // A takeover answers on a socket of its own until the old proxy retired.
    let control_path = if config.takeover {
        config.socket.with_extension("sock.new")
    } else {
        config.socket.clone()
    };
    let _ = std::fs::remove_file(&control_path);
    let control_listener = UnixListener::bind(&control_path).map_err(socket_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_err)?;
    }
    if !config.takeover {
        let _ = std::fs::write(&config.pid_file, format!("{}\n", std::process::id()));
    }

    let mut settings = config.settings.clone();
    settings.https_port = https_port;
    let tls = Arc::new(
        crate::tls::server_config(certs.clone())
            .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?,
    );
    tracing::info!(
        http = %config.http_listen,
        https = %config.https_listen,
        workers,
        sockets,
        routes = routes.hosts().len(),
        "gantry proxy is serving"
    );
    let control_task = tokio::spawn(control::serve(
        control_listener,
        daemon.clone(),
        shutdown.child_token(),
    ));
    // One single-threaded runtime per core, each with its own listeners
    // (SO_REUSEPORT: the kernel spreads connections) and its own pool of
    // backend connections: no work-stealing, no cross-thread wake-ups on the
    // request path.
    let mut threads = Vec::new();
    for (i, (http, https)) in http.into_iter().zip(https).enumerate() {
        let proxy = Arc::new(
            Proxy::with_settings(
                routes.clone(),
                challenges.clone(),
                Some(certs.clone()),
                settings.clone(),
            )
            .counting_into(traffic[i].clone()),
        );
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
    if config.takeover {
        take_over(&config, &control_path).await;
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
    if !daemon.retired.load(Ordering::SeqCst) {
        let _ = std::fs::remove_file(&config.socket);
        let _ = std::fs::remove_file(&config.pid_file);
    }
    outcome.map_err(DaemonError::Serve)
}

/// The new proxy serves: the old one may stop accepting and finish what it
/// has, and its control socket and pid file become this one's.
async fn take_over(config: &DaemonConfig, control_path: &std::path::Path) {
    match control::call(&config.socket, &Request::Retire).await {
        Ok(_) => tracing::info!("took over from the running proxy"),
        Err(err) => tracing::warn!(error = %err, "no running proxy to take over from"),
    }
    if let Err(err) = std::fs::rename(control_path, &config.socket) {
        tracing::error!(error = %err, "cannot take the control socket");
    }
    let _ = std::fs::write(&config.pid_file, format!("{}\n", std::process::id()));
}
