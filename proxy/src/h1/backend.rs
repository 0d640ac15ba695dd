//! Keep-alive connections to backends for the HTTP/1.1 path: plain TCP
//! streams, parked between requests in a map of address to idle streams.
//!
//! A parked stream is not polled, but the reactor still records that it
//! became readable: a backend that closed an idle connection is noticed when
//! the stream is taken, without a system call in the common case.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// One connection to a backend, with what was read from it and not yet used.
pub struct BackendConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Taken from the pool: it may have been closed by the backend just as
    /// the request went out, so a request that got no answer may be sent again.
    pub reused: bool,
}

/// Why no connection to a backend could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the backend: {0}")]
    Refused(std::io::Error),
    #[error("connecting to the backend timed out")]
    TimedOut,
}

pub struct Backends {
    idle: Mutex<Idle>,
    max_idle_per_backend: usize,
    connect_timeout: Duration,
}

#[derive(Default)]
struct Idle {
    by_addr: HashMap<SocketAddr, Vec<TcpStream>>,
    last_sweep: Option<Instant>,
}

/// How often parked connections are checked for ones their backend closed
/// (a replaced release's containers stop, and nothing takes their
/// connections again).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Default for Backends {
    fn default() -> Self {
        Backends {
            idle: Mutex::default(),
            max_idle_per_backend: 256,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Backends {
    /// An idle connection to `addr` that still looks open, if there is one.
    pub fn take(&self, addr: SocketAddr) -> Option<BackendConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.by_addr.get_mut(&addr)?;
        while let Some(stream) = list.pop() {
            if still_open(&stream) {
                return Some(BackendConn {
                    stream,
                    buf: BytesMut::new(),
                    reused: true,
                });
            }
        }
        None
    }

    /// A new connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<BackendConn, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::TimedOut)?
            .map_err(ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        Ok(BackendConn {
            stream,
            buf: BytesMut::new(),
            reused: false,
        })
    }

    /// Parks a connection whose last response was read to its end.
    pub fn put(&self, addr: SocketAddr, conn: BackendConn) {
        if !conn.buf.is_empty() {
            // The backend sent more than its response: not to be trusted.
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.by_addr.entry(addr).or_default();
        if list.len() < self.max_idle_per_backend {
            list.push(conn.stream);
        }
        let now = Instant::now();
        if idle
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            idle.last_sweep = Some(now);
            idle.by_addr.retain(|_, list| {
                list.retain(still_open);
                !list.is_empty()
            });
        }
    }
}

/// Whether a parked stream is still open: not readable (nothing arrived,
/// no FIN), or readable with nothing to read after all.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // Readiness may be left over from the last response's read: look.
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn closed_idle_connections_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backends = Backends::default();
        let kept = backends.connect(addr).await.expect("connect");
        let (mut server_kept, _) = listener.accept().await.expect("accept");
        let closed = backends.connect(addr).await.expect("connect");
        let (server_closed, _) = listener.accept().await.expect("accept");
        backends.put(addr, kept);
        backends.put(addr, closed);
        drop(server_closed);
        server_kept.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let conn = backends.take(addr).expect("the open one");
        assert!(conn.reused);
        assert!(backends.take(addr).is_none(), "the closed one is dropped");
    }
}
