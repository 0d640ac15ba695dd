//! Accepting connections and handing each to a path: plain TCP or a TLS
//! handshake first, then the HTTP/1.1 path (`h1`) for HTTP/1.1 and the
//! hyper path (`hyper_path`) for HTTP/2 (by ALPN or the h2c preface) and
//! HTTP/1.0; and a graceful stop that lets requests in flight finish.
//!
//! It reads no request itself: which path serves a connection is decided by
//! its ALPN protocol, or by the HTTP/1.1 path handing it over.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::context::Proxy;
use crate::idle::IdleIo;
use crate::{h1, hyper_path};

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
    let _open = proxy.begin_connection();
    let _ = stream.set_nodelay(true);
    let idle = proxy.settings().idle_timeout;
    let Some(acceptor) = tls else {
        if let h1::Ended::Handoff(stream, read) = h1::serve(&proxy, stream, peer, "http").await {
            let io = Rewind::new(read, IdleIo::new(stream, idle));
            hyper_path::serve(proxy, io, peer, "http", builder, watcher).await;
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
            hyper_path::serve(proxy, io, peer, "https", builder, watcher).await;
        }
        _ => {
            if let h1::Ended::Handoff(tls, read) = h1::serve(&proxy, tls, peer, "https").await {
                let io = Rewind::new(read, IdleIo::new(tls, idle));
                hyper_path::serve(proxy, io, peer, "https", builder, watcher).await;
            }
        }
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
    // Requests in flight finish; idle keep-alive connections get a moment
    // for one more request (answered with `Connection: close`), so a client
    // that was about to send one is not cut off.
    let h1_done = async {
        while proxy.active_requests() > 0 || proxy.open_connections() > 0 {
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
