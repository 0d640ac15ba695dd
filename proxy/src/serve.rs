//! Accepting connections and answering each request from the route table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::h1::Decision;
use crate::idle::IdleIo;
use crate::routes::{Balance, InFlight, RouteTable};
use crate::tls::CertStore;
use crate::tracked::Tracked;
use crate::{forward, pages};

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type BodyError = Box<dyn std::error::Error + Send + Sync>;

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
    pool: Arc<crate::pool::Pool>,
    backends: crate::h1::Backends,
    challenges: Challenges,
    certs: Option<Arc<CertStore>>,
    settings: Settings,
    /// Set once shutdown starts: responses say `Connection: close`.
    stopping: AtomicBool,
    /// Requests being answered on the HTTP/1.1 path (shutdown waits for them).
    active: Arc<AtomicUsize>,
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
            pool: crate::pool::Pool::new(),
            backends: crate::h1::Backends::default(),
            challenges,
            certs,
            settings,
            stopping: AtomicBool::new(false),
            active: Arc::default(),
        }
    }

    pub(crate) fn backends(&self) -> &crate::h1::Backends {
        &self.backends
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
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

    /// Answers one request, and writes its access-log line when asked to.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        proto: &'static str,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let id = forward::request_id(&mut req);
        let log = self.settings.access_log.then(|| {
            (
                req.method().clone(),
                forward::request_host(&req).unwrap_or_default(),
                req.uri().path().to_owned(),
            )
        });
        let (mut resp, backend) = self.route(req, peer, proto).await;
        resp.headers_mut().insert("x-request-id", id.clone());
        if let Some((method, host, path)) = log {
            tracing::info!(
                target: "gantry_proxy::access",
                %peer, %method, %host, %path, proto,
                status = resp.status().as_u16(),
                backend = %backend.map_or_else(|| "-".to_owned(), |b| b.to_string()),
                ms = started.elapsed().as_millis() as u64,
                request_id = id.to_str().unwrap_or("-"),
            );
        }
        Ok(resp)
    }

    /// Route by host, forward, or say why not; also returns the backend used.
    async fn route(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        proto: &'static str,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let Some(host) = forward::request_host(&req) else {
            return (
                full(pages::bad_request("The request has no Host header.")),
                None,
            );
        };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let is_connect = req.method() == hyper::Method::CONNECT;
        let route = match self.decide(&host, target, proto, declared, is_connect) {
            Decision::Answer(page, _) => return (full(page), None),
            Decision::Forward(route) => route,
        };
        let upgrade = forward::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // A request without a body can go to another replica if the first
        // refuses the connection: nothing of it was sent.
        let mut retry = (route.backends().len() > 1 && req.body().is_end_stream() && !upgrade)
            .then(|| {
                let mut copy = Request::new(());
                *copy.method_mut() = req.method().clone();
                *copy.uri_mut() = req.uri().clone();
                *copy.version_mut() = req.version();
                *copy.headers_mut() = req.headers().clone();
                copy
            });
        let (parts, body) = req.into_parts();
        let mut req = Request::from_parts(parts, Upstream::new(body, self.settings.max_body));
        let mut failed = None;
        loop {
            let now = self.routes.now();
            let Some(backend) = route.choose(self.settings.balance, now, failed) else {
                return (full(pages::no_healthy_backend(&route.name)), failed);
            };
            let addr = backend.addr;
            let in_flight = backend.begin();
            if let Err(err) = forward::prepare_request(&mut req, peer.ip(), proto) {
                tracing::debug!(%err, "cannot forward");
                return (full(pages::bad_request(&err.to_string())), None);
            }
            let result =
                tokio::time::timeout(self.settings.response_timeout, self.pool.send(addr, req))
                    .await;
            match result {
                Ok(Ok(mut resp)) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_upgrade) = client_upgrade {
                            let backend_upgrade = hyper::upgrade::on(&mut resp);
                            tokio::spawn(tunnel(client_upgrade, backend_upgrade, in_flight));
                            forward::prepare_response(&mut resp);
                            return (resp.map(|b| b.boxed()), Some(addr));
                        }
                    }
                    forward::prepare_response(&mut resp);
                    return (resp.map(|b| Tracked::new(b, in_flight).boxed()), Some(addr));
                }
                Ok(Err(err)) if err.is_connect() => {
                    tracing::warn!(app = %route.name, backend = %addr, error = %err, "backend refused the connection; leaving it out for a while");
                    self.routes.mark_down(addr);
                    failed = Some(addr);
                    match retry.take() {
                        Some(copy) => {
                            let (parts, ()) = copy.into_parts();
                            req = Request::from_parts(parts, Upstream::empty());
                        }
                        None => return (full(pages::bad_gateway(&route.name)), Some(addr)),
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(app = %route.name, backend = %addr, error = %err, "backend failed");
                    return (full(pages::bad_gateway(&route.name)), Some(addr));
                }
                Err(_) => {
                    tracing::warn!(app = %route.name, backend = %addr, "backend sent no response headers in time");
                    return (full(pages::gateway_timeout(&route.name)), Some(addr));
                }
            }
        }
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

/// Copies bytes both ways between an upgraded client connection and the
/// backend's, counting the tunnel as a request in flight until it closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
) {
    let _in_flight = in_flight;
    match tokio::try_join!(client, backend) {
        Ok((client, backend)) => {
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(error = %err, "upgraded connection ended with an error");
            }
        }
        Err(err) => tracing::debug!(error = %err, "upgrade failed"),
    }
}

/// The request body sent to a backend: the client's, cut off with an error
/// once it passes the size limit (a chunked upload declares no length).
pub struct Upstream {
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
}

impl Upstream {
    fn new(inner: Incoming, limit: Option<u64>) -> Self {
        Upstream {
            inner: Some(inner),
            limit,
            seen: 0,
        }
    }

    fn empty() -> Self {
        Upstream {
            inner: None,
            limit: None,
            seen: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is over the limit of {0} bytes")]
struct TooLarge(u64);

impl Body for Upstream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(limit)) = (frame.data_ref(), this.limit) {
                    this.seen += data.len() as u64;
                    if this.seen > limit {
                        return Poll::Ready(Some(Err(Box::new(TooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

fn full(page: pages::Page) -> Response<ProxyBody> {
    page.into_response()
        .map(|b| b.map_err(|never| match never {}).boxed())
}

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown` is cancelled, then
/// lets in-flight requests finish (up to 30 s) before returning.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, proxy, None, shutdown).await
}

/// Serves HTTPS on `listener` with `config` (see [`crate::tls::server_config`]:
/// TLS 1.2 and 1.3, the certificate picked by SNI, HTTP/2 or HTTP/1.1 by
/// ALPN); then the same routing as plain HTTP. Stops like [`serve`]. The
/// settings are shared so that listeners on several worker threads share one
/// session cache.
pub async fn serve_tls(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept_loop(listener, proxy, Some(acceptor), shutdown).await
}

/// Serves one client connection: HTTP/1.1 on the proxy's own path, HTTP/2
/// (by ALPN or the h2c preface) and HTTP/1.0 with hyper.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) {
    let _ = stream.set_nodelay(true);
    let idle = proxy.settings.idle_timeout;
    let Some(acceptor) = tls else {
        if let crate::h1::Ended::Handoff(stream, read) =
            crate::h1::serve(&proxy, stream, peer, "http").await
        {
            let io = Rewind::new(read, IdleIo::new(stream, idle));
            serve_with_hyper(proxy, io, peer, "http", builder, watcher).await;
        }
        return;
    };
    // A client that never finishes its handshake is dropped.
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    match tls.get_ref().1.alpn_protocol() {
        // A TLS-ALPN-01 validation: the handshake was the answer.
        Some(crate::tls::ACME_TLS_ALPN) => {}
        Some(b"h2") => {
            let io = IdleIo::new(tls, idle);
            serve_with_hyper(proxy, io, peer, "https", builder, watcher).await;
        }
        _ => {
            if let crate::h1::Ended::Handoff(tls, read) =
                crate::h1::serve(&proxy, tls, peer, "https").await
            {
                let io = Rewind::new(read, IdleIo::new(tls, idle));
                serve_with_hyper(proxy, io, peer, "https", builder, watcher).await;
            }
        }
    }
}

/// Serves HTTP/2 or HTTP/1.0 (with upgrades) on one connection, plain or TLS.
async fn serve_with_hyper<I>(
    proxy: Arc<Proxy>,
    io: I,
    peer: SocketAddr,
    proto: &'static str,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { proxy.handle(req, peer, proto).await }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, proto, error = %err, "connection ended with an error");
    }
}

/// Accepts connections until `shutdown`, each served in a task of its own;
/// then waits (up to 30 s) for the requests in flight to finish.
async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.settings.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(
            proxy.clone(),
            stream,
            peer,
            tls.clone(),
            builder.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    proxy.stopping.store(true, Ordering::Relaxed);
    let h1_done = async {
        while proxy.active.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(graceful.shutdown(), h1_done) } => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("in-flight requests still running after 30 s; closing them");
        }
    }
    Ok(())
}

/// A stream with bytes already read from it put back in front, so that
/// hyper sees a connection from its first byte.
struct Rewind<T> {
    read: bytes::BytesMut,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(read: bytes::BytesMut, inner: T) -> Self {
        Rewind { read, inner }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
