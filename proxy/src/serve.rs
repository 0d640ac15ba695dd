//! Accepting connections and answering each request from the route table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::{Body, Incoming};
use hyper::header;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::context::{Decision, Proxy};
use crate::idle::IdleIo;
use crate::routes::InFlight;
use crate::tracked::Tracked;
use crate::upstream::Upstream;
use crate::{forward, pages};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Answers one request, and writes its access-log line when asked to.
async fn handle(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    proto: &'static str,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let id = forward::request_id(&mut req);
    let log = proxy.settings().access_log.then(|| {
        (
            req.method().clone(),
            forward::request_host(&req).unwrap_or_default(),
            req.uri().path().to_owned(),
        )
    });
    let (mut resp, backend) = route(proxy, req, peer, proto).await;
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
    proxy: &Proxy,
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
    let route = match proxy.decide(&host, target, proto, declared, is_connect) {
        Decision::Answer(page, _) => return (full(page), None),
        Decision::Forward(route) => route,
    };
    let upgrade = forward::is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // A request without a body can go to another replica if the first
    // refuses the connection: nothing of it was sent.
    let mut retry =
        (route.backends().len() > 1 && req.body().is_end_stream() && !upgrade).then(|| {
            let mut copy = Request::new(());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
    let (parts, body) = req.into_parts();
    let mut req = Request::from_parts(parts, Upstream::new(body, proxy.settings().max_body));
    let mut failed = None;
    loop {
        let now = proxy.routes().now();
        let Some(backend) = route.choose(proxy.settings().balance, now, failed) else {
            return (full(pages::no_healthy_backend(&route.name)), failed);
        };
        let addr = backend.addr;
        let in_flight = backend.begin();
        if let Err(err) = forward::prepare_request(&mut req, peer.ip(), proto) {
            tracing::debug!(%err, "cannot forward");
            return (full(pages::bad_request(&err.to_string())), None);
        }
        let result = tokio::time::timeout(
            proxy.settings().response_timeout,
            proxy.pool().send(addr, req),
        )
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
                proxy.routes().mark_down(addr);
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
    let idle = proxy.settings().idle_timeout;
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
        async move { handle(&proxy, req, peer, proto).await }
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
        .header_read_timeout(proxy.settings().header_timeout);
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
    proxy.stop();
    let h1_done = async {
        while proxy.active_requests() > 0 {
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
