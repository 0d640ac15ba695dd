//! The context both paths serve requests in: the settings, the route
//! table, the backend connection pools, the ACME challenge answers, and the
//! decision made about a request before any backend is involved
//! ([`Proxy::decide`]), so that the HTTP/1.1 path and the hyper path answer
//! alike.
//!
//! It knows neither path's way of reading or writing a request: each path
//! asks it what to do and acts on the [`Decision`] itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::h1::backend::Backends;
use crate::hyper_pool::Pool;
use crate::pages;
use crate::routes::{Balance, Route, RouteTable};
use crate::tls::CertStore;
use crate::traffic::Traffic;

/// How the proxy treats clients and backends; every field has a safe default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a backend may take to send its response headers (the body may
    /// stream for longer: server-sent events, downloads).
    pub response_timeout: Duration,
    /// How long a client has to send a request's headers; on HTTP/1.1 it is
    /// also how long an idle keep-alive connection stays open (no slowloris).
    pub header_timeout: Duration,
    /// How long a connection may sit with no bytes moving: a body or a
    /// WebSocket in transit (a quiet server-sent-events stream too, so send
    /// a comment now and then), and an HTTP/2 connection between requests.
    pub idle_timeout: Duration,
    /// The largest request body accepted, in bytes (`None`: no limit).
    pub max_body: Option<u64>,
    pub balance: Balance,
    /// Log one structured line per request (target `gantry_proxy::access`).
    pub access_log: bool,
    /// The port HTTPS redirects point at (443 leaves it out of the URL).
    pub https_port: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            response_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_body: None,
            balance: Balance::RoundRobin,
            access_log: false,
            https_port: 443,
        }
    }
}

/// The proxy's shared state: the route table and pooled backend
/// connections (one pool for the HTTP/1.1 path, one for hyper's HTTP/2).
pub struct Proxy {
    routes: Arc<RouteTable>,
    pool: Arc<Pool>,
    backends: Backends,
    challenges: Challenges,
    certs: Option<Arc<CertStore>>,
    settings: Settings,
    /// Set once shutdown starts: responses say `Connection: close`.
    stopping: AtomicBool,
    /// The same, for connections waiting idle for their next request.
    stopped: tokio::sync::watch::Sender<bool>,
    /// Requests being answered on the HTTP/1.1 path (shutdown waits for them).
    active: Arc<AtomicUsize>,
    /// Client connections open (shutdown waits for them to close).
    open: Arc<AtomicUsize>,
    /// Each app's requests, by status class and duration (this worker's).
    traffic: Arc<Traffic>,
}

/// Counts a client connection as open until dropped.
pub(crate) struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request as being answered until dropped.
pub(crate) struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// ACME HTTP-01 answers by token, shared with whoever runs the ACME client.
pub type Challenges = Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

impl Proxy {
    /// A proxy with its settings; `challenges` holds the ACME HTTP-01
    /// answers to serve (token → answer), and `certs` (the HTTPS certificates) decides
    /// which hosts plain HTTP may redirect to HTTPS.
    pub fn with_settings(
        routes: Arc<RouteTable>,
        challenges: Challenges,
        certs: Option<Arc<CertStore>>,
        settings: Settings,
    ) -> Self {
        Proxy {
            routes,
            pool: Pool::new(),
            backends: Backends::default(),
            challenges,
            certs,
            settings,
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::watch::Sender::new(false),
            active: Arc::default(),
            open: Arc::default(),
            traffic: Arc::default(),
        }
    }

    /// Counts traffic into `traffic` (which the daemon reads).
    pub fn counting_into(mut self, traffic: Arc<Traffic>) -> Self {
        self.traffic = traffic;
        self
    }

    /// Each app's traffic since the proxy started.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Counts the bytes of one of `app`'s bodies that streams on after its
    /// request was counted.
    pub(crate) fn meter(&self, app: &str) -> crate::traffic::Meter {
        crate::traffic::Meter::new(self.traffic.clone(), app)
    }

    pub(crate) fn backends(&self) -> &Backends {
        &self.backends
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Shutdown has started: responses from now on say `Connection: close`,
    /// and idle connections get a last moment for one more request.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stopped.send_replace(true);
    }

    /// Resolves once shutdown has started.
    pub(crate) async fn stopped(&self) {
        let mut watch = self.stopped.subscribe();
        let _ = watch.wait_for(|stopped| *stopped).await;
    }

    /// Client connections open.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn begin_connection(&self) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.open.clone())
    }

    /// Requests being answered on the HTTP/1.1 path.
    pub(crate) fn active_requests(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn begin_request(&self) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.active.clone())
    }

    /// What to do with a request before any backend is involved: answer an
    /// ACME challenge, a host nobody serves, a redirect to HTTPS, a body over
    /// the limit, an app with no backend; or forward it along `route`.
    pub(crate) fn decide(
        &self,
        host: &str,
        target: &str,
        scheme: &str,
        content_length: Option<u64>,
        is_connect: bool,
    ) -> Decision {
        if let Some(token) = target.strip_prefix("/.well-known/acme-challenge/") {
            let answers = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            if let Some(answer) = answers.get(token) {
                return Decision::Answer(pages::Page::text(answer.clone()), false);
            }
        }
        if is_connect {
            return Decision::Answer(pages::refused(405, "CONNECT is not supported here."), true);
        }
        let Some(route) = self.routes.lookup(host) else {
            return Decision::Answer(pages::not_found(host), false);
        };
        if scheme == "http" && route.https_redirect {
            if let Some(page) = self.https_redirect(host, target) {
                return Decision::Answer(page, false);
            }
        }
        if let Some(limit) = self.settings.max_body {
            if content_length.is_some_and(|n| n > limit) {
                return Decision::Answer(pages::too_large(limit), true);
            }
        }
        if route.backends().is_empty() {
            return Decision::Answer(pages::unavailable(&route.name), false);
        }
        Decision::Forward(route)
    }

    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The HTTP-01 challenge answers an ACME client has asked the proxy to
    /// serve at `/.well-known/acme-challenge/TOKEN`, for any host.
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// A `308` to the same URL over HTTPS, once the host has a certificate of
    /// its own (a development certificate does not count).
    fn https_redirect(&self, host: &str, target: &str) -> Option<pages::Page> {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !self.certs.as_ref()?.has_own(name) {
            return None;
        }
        let port = match self.settings.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let location = HeaderValue::from_str(&format!("https://{name}{port}{target}")).ok()?;
        Some(pages::Page::redirect(location))
    }
}

/// What the proxy does with a request before any backend is involved.
pub enum Decision {
    /// Answer with this page; `true` if the request's body is left unread.
    Answer(pages::Page, bool),
    Forward(Arc<Route>),
}
