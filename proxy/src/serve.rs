//! Accepting connections and answering each request from the route table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::tracked::Tracked;
use crate::{forward, pages, RouteTable};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long a backend may take to send its response headers (the body may
/// stream for longer: server-sent events, downloads).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy's shared state: the route table and a pooled upstream client.
pub struct Proxy {
    routes: Arc<RouteTable>,
    client: Client<HttpConnector, Incoming>,
    challenges: Challenges,
}

/// ACME HTTP-01 answers by token, shared with whoever runs the ACME client.
pub type Challenges = Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

impl Proxy {
    /// `challenges` holds the ACME HTTP-01 answers to serve (token → answer).
    pub fn new(routes: Arc<RouteTable>, challenges: Challenges) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(connector);
        Proxy {
            routes,
            client,
            challenges,
        }
    }

    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// The HTTP-01 challenge answers an ACME client has asked the proxy to
    /// serve at `/.well-known/acme-challenge/TOKEN`, for any host.
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    fn acme_answer(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        let token = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")?;
        let answers = self.challenges.read().unwrap_or_else(|e| e.into_inner());
        let answer = answers.get(token)?.clone();
        Some(full(Response::new(http_body_util::Full::new(Bytes::from(
            answer,
        )))))
    }

    /// Answers one request: route by host, forward, or say why not.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        proto: &'static str,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(answer) = self.acme_answer(&req) {
            return Ok(answer);
        }
        let Some(host) = forward::request_host(&req) else {
            return Ok(full(pages::bad_request("The request has no Host header.")));
        };
        let Some(route) = self.routes.lookup(&host) else {
            return Ok(full(pages::not_found(&host)));
        };
        let Some(backend) = route.pick() else {
            return Ok(full(pages::unavailable(&route.name)));
        };
        let in_flight = backend.begin();
        if let Err(err) = forward::prepare_request(&mut req, backend.addr, peer.ip(), proto) {
            tracing::debug!(%err, "cannot forward");
            return Ok(full(pages::bad_request(&err.to_string())));
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(mut resp)) => {
                forward::prepare_response(&mut resp);
                Ok(resp.map(|b| Tracked::new(b, in_flight).boxed()))
            }
            Ok(Err(err)) => {
                tracing::warn!(app = %route.name, backend = %backend.addr, error = %err, "backend failed");
                Ok(full(pages::bad_gateway(&route.name)))
            }
            Err(_) => {
                tracing::warn!(app = %route.name, backend = %backend.addr, "backend sent no response headers in time");
                Ok(full(pages::gateway_timeout(&route.name)))
            }
        }
    }
}

fn full(resp: Response<http_body_util::Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown` is cancelled, then
/// lets in-flight requests finish (up to 30 s) before returning.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, shutdown, move |stream, peer, builder, watcher| {
        let proxy = proxy.clone();
        async move {
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { proxy.handle(req, peer, "http").await }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
    })
    .await
}

/// Serves HTTPS on `listener`: TLS 1.2 and 1.3 with rustls, the certificate
/// picked by SNI from `certs`, HTTP/2 or HTTP/1.1 by ALPN; then the same
/// routing as plain HTTP. Stops like [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    certs: Arc<crate::tls::CertStore>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = crate::tls::server_config(certs).map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    accept_loop(listener, shutdown, move |stream, peer, builder, watcher| {
        let (acceptor, proxy) = (acceptor.clone(), proxy.clone());
        async move {
            // A client that never finishes its handshake is dropped.
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { proxy.handle(req, peer, "https").await }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %err, "TLS connection ended with an error");
            }
        }
    })
    .await
}

/// Accepts connections until `shutdown`, handing each to `serve_one` in a
/// task of its own with the HTTP settings and a graceful-shutdown watcher;
/// then waits (up to 30 s) for the connections to finish.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    serve_one: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, auto::Builder<TokioExecutor>, Watcher) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
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
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_one(stream, peer, builder.clone(), graceful.watcher()));
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("in-flight requests still running after 30 s; closing them");
        }
    }
    Ok(())
}
