//! The hyper path's keep-alive connections to backends, one pool per worker
//! thread, on hyper's low-level client connections.
//!
//! hyper-util's general-purpose client does more per request than a proxy
//! to a handful of known addresses needs (URI-keyed pool, connector layers,
//! a task per checkout); this pool is a map of address to idle connections.
//! A request not yet written to a connection that turned out closed is taken
//! back and sent on another, so a backend's keep-alive timeout never fails
//! a request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::upstream::Upstream;

/// Why a request got no response from its backend.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect to the backend: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the backend timed out")]
    ConnectTimeout,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PoolError {
    /// The request never reached the backend: safe to mark it down and to
    /// send the request elsewhere.
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_) | PoolError::ConnectTimeout)
    }
}

pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<SendRequest<Upstream>>>>,
    max_idle_per_backend: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new() -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::default(),
            max_idle_per_backend: 256,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Sends `req` to `addr` on an idle connection, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Upstream>,
    ) -> Result<Response<Incoming>, PoolError> {
        while let Some(mut sender) = self.take(addr) {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.recycle(addr, sender);
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    // Never written: the connection closed under us.
                    Some(back) => req = back,
                    None => return Err(err.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        let resp = sender.send_request(req).await?;
        self.recycle(addr, sender);
        Ok(resp)
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Upstream>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Puts the connection back once its response is done (a connection
    /// that upgraded or closed never comes back).
    fn recycle(self: &Arc<Self>, addr: SocketAddr, mut sender: SendRequest<Upstream>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(addr).or_default();
            list.retain(|s| !s.is_closed());
            if list.len() < pool.max_idle_per_backend {
                list.push(sender);
            }
        });
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Upstream>, PoolError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| PoolError::ConnectTimeout)?
                .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %err, "backend connection ended");
            }
        });
        Ok(sender)
    }
}
