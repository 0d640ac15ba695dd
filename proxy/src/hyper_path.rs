//! The hyper path: HTTP/2 (by ALPN or the h2c preface) and HTTP/1.0
//! connections, served by hyper's server; each request is rewritten by
//! [`forward`] and sent over the hyper backend pool (`hyper_pool`), with upgrades
//! (WebSocket) tunnelled.
//!
//! It knows nothing of accepting connections, TLS or the HTTP/1.1 path: it
//! is handed a stream, and asks the [`Proxy`] what to do with each request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::{Body, Incoming};
use hyper::header;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;

use crate::context::{Decision, Proxy};
use crate::routes::InFlight;
use crate::tracked::Tracked;
use crate::traffic::{Meter, Moved};
use crate::upstream::Upstream;
use crate::{forward, pages};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Serves HTTP/2 or HTTP/1.0 (with upgrades) on one connection, plain or TLS.
pub(crate) async fn serve<I>(
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

/// Answers one request, and writes its access-log line when asked to.
async fn handle(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    proto: &'static str,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let head_in = request_head_len(&req);
    let id = forward::request_id(&mut req);
    let log = proxy.settings().access_log.then(|| {
        (
            req.method().clone(),
            forward::request_host(&req).unwrap_or_default(),
            req.uri().path().to_owned(),
        )
    });
    let mut forwarded = None;
    let (mut resp, backend) = route(proxy, req, peer, proto, &mut forwarded).await;
    resp.headers_mut().insert("x-request-id", id.clone());
    // Counted for the app when it went to one of its backends; the body's
    // bytes when it has gone out.
    if let Some(route) = forwarded.filter(|_| backend.is_some()) {
        let moved = Moved {
            received: head_in,
            sent: response_head_len(&resp),
        };
        let status = resp.status().as_u16();
        proxy
            .traffic()
            .record(&route.name, status, started.elapsed(), moved);
        let meter = proxy.meter(&route.name);
        resp = resp.map(|body| Tracked::metered(body, meter).boxed());
    }
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

/// Route by host, forward, or say why not; also returns the backend used,
/// and sets `forwarded` to the route it went along.
async fn route(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    proto: &'static str,
    forwarded: &mut Option<std::sync::Arc<crate::routes::Route>>,
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
    *forwarded = Some(route.clone());
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
    // A body's bytes are counted as it streams (most requests have none).
    let meter = (!body.is_end_stream()).then(|| proxy.meter(&route.name));
    let mut req = Request::from_parts(parts, Upstream::new(body, proxy.settings().max_body, meter));
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
                        let meter = proxy.meter(&route.name);
                        tokio::spawn(tunnel(client_upgrade, backend_upgrade, in_flight, meter));
                        forward::prepare_response(&mut resp);
                        return (resp.map(|b| b.boxed()), Some(addr));
                    }
                }
                forward::prepare_response(&mut resp);
                return (
                    resp.map(|b| Tracked::in_flight(b, in_flight).boxed()),
                    Some(addr),
                );
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
/// backend's, counting the tunnel as a request in flight until it closes,
/// and its bytes once it has.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
    mut meter: Meter,
) {
    let _in_flight = in_flight;
    match tokio::try_join!(client, backend) {
        Ok((client, backend)) => {
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                Ok((up, down)) => {
                    meter.received(up);
                    meter.sent(down);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "upgraded connection ended with an error")
                }
            }
        }
        Err(err) => tracing::debug!(error = %err, "upgrade failed"),
    }
}

/// A request head's size as HTTP/1.1 carries it (an HTTP/2 head before
/// header compression).
fn request_head_len<B>(req: &Request<B>) -> u64 {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD TARGET HTTP/1.1\r\n"
    let line = req.method().as_str().len() + 1 + target + 11;
    (line + headers_len(req.headers())) as u64
}

/// A response head's size as HTTP/1.1 carries it.
fn response_head_len<B>(resp: &Response<B>) -> u64 {
    let reason = resp.status().canonical_reason().map_or(0, str::len);
    // "HTTP/1.1 200 REASON\r\n"
    let line = 13 + reason + 2;
    (line + headers_len(resp.headers())) as u64
}

/// "Name: value\r\n" for each header, and the blank line after them.
fn headers_len(headers: &header::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum::<usize>()
        + 2
}

fn full(page: pages::Page) -> Response<ProxyBody> {
    page.into_response()
        .map(|b| b.map_err(|never| match never {}).boxed())
}
