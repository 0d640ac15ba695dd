//! The proxy's local control socket: `gantry serve` tells a running proxy
//! about route, certificate and challenge changes, and asks it to drain.
//!
//! One JSON request line, one JSON reply line, per connection. A connection
//! per request keeps a 30-second drain from holding up another app's route
//! change.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::listeners::Listeners;
use crate::state::{RouteSpec, State};

/// What `serve` can ask of the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Route a host to backends (replacing its route).
    Route {
        route: RouteSpec,
    },
    Unroute {
        host: String,
    },
    Alias {
        alias: String,
        host: String,
    },
    Unalias {
        alias: String,
    },
    /// Make the whole table this state (what `serve` knows after it restored).
    Replace {
        state: State,
    },
    /// Read the certificate directory again.
    ReloadCerts,
    /// Serve an ACME HTTP-01 answer at `/.well-known/acme-challenge/TOKEN`.
    Challenge {
        token: String,
        answer: String,
    },
    Unchallenge {
        token: String,
    },
    /// Answer TLS-ALPN-01 for `host`: `digest` is the SHA-256 of the key
    /// authorization.
    AlpnChallenge {
        host: String,
        digest: Vec<u8>,
    },
    AlpnUnchallenge {
        host: String,
    },
    /// Wait until no request is in flight to `backends` (or the timeout).
    Drain {
        backends: Vec<SocketAddr>,
        timeout_ms: u64,
    },
    Status,
    /// Every route and alias the proxy serves now, for `serve` to check
    /// against its own copy.
    Table,
    /// Copies of the proxy's listening sockets, passed with the reply
    /// (`SCM_RIGHTS`); the reply's `listeners` names them in order.
    Listeners,
    /// Another proxy has taken the listening sockets: stop accepting, let
    /// the connections in flight finish, exit, and leave the control socket
    /// and pid file to the new one.
    Retire,
    /// Each app's traffic since the proxy started.
    Traffic,
}

/// The proxy's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After a drain: requests still in flight when it gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// For `Table`: what the proxy serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<crate::state::State>,
    /// For `Listeners`: the names of the descriptors passed with the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<String>>,
    /// For `Traffic`: each app's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<crate::traffic::AppTraffic>>,
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(message.into()),
            ..Reply::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the proxy is not running (no answer on {path}: {source})")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("the proxy's control socket failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the proxy sent a reply gantry cannot read: {0}")]
    Protocol(String),
    #[error("the proxy refused: {0}")]
    Refused(String),
}

/// Sends one request to the proxy listening on `socket` and waits for its reply.
pub async fn call(socket: &Path, request: &Request) -> Result<Reply, ControlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Unreachable {
            path: socket.display().to_string(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    let reply: Reply =
        serde_json::from_str(&reply).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(ControlError::Refused(reply.error.unwrap_or_default()))
    }
}

/// Asks the proxy at `socket` for copies of its listening sockets.
pub async fn take_listeners(socket: &Path) -> Result<Listeners, ControlError> {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let stream = std::os::unix::net::UnixStream::connect(&socket).map_err(|source| {
            ControlError::Unreachable {
                path: socket.display().to_string(),
                source,
            }
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut line = serde_json::to_vec(&Request::Listeners)
            .map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        std::io::Write::write_all(&mut &stream, &line)?;
        let (data, fds) = crate::listeners::recv_with_fds(&stream)?;
        let reply: Reply =
            serde_json::from_slice(&data).map_err(|e| ControlError::Protocol(e.to_string()))?;
        if !reply.ok {
            return Err(ControlError::Refused(reply.error.unwrap_or_default()));
        }
        let names = reply.listeners.unwrap_or_default();
        if names.len() != fds.len() || fds.is_empty() {
            return Err(ControlError::Protocol(format!(
                "{} listener name(s) came with {} descriptor(s)",
                names.len(),
                fds.len()
            )));
        }
        Ok(Listeners {
            sockets: names.into_iter().zip(fds).collect(),
        })
    })
    .await
    .map_err(|e| ControlError::Protocol(e.to_string()))?
}

/// What carries out requests: the running proxy.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Reply> + Send;

    /// The listening sockets to hand out on `Listeners` (none: refused).
    fn listeners(&self) -> Option<&Listeners> {
        None
    }
}

/// Answers requests on `listener` until `shutdown`.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut line = String::new();
            let read = BufReader::new(&mut stream).read_line(&mut line).await;
            let reply = match read {
                Ok(0) => return,
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Listeners) => {
                        hand_out_listeners(stream, &*handler).await;
                        return;
                    }
                    Ok(request) => handler.handle(request).await,
                    Err(err) => Reply::error(format!("bad request: {err}")),
                },
                Err(err) => Reply::error(format!("cannot read the request: {err}")),
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
            out.push(b'\n');
            let _ = stream.write_all(&out).await;
        });
    }
}

/// Answers `Listeners`: the names in the reply, copies of the sockets with it.
async fn hand_out_listeners<H: Handler>(stream: tokio::net::UnixStream, handler: &H) {
    let (reply, copies) = match handler.listeners().map(Listeners::try_clone) {
        Some(Ok(copies)) => (
            Reply {
                listeners: Some(copies.sockets.iter().map(|(n, _)| n.clone()).collect()),
                ..Reply::ok()
            },
            copies,
        ),
        Some(Err(err)) => (
            Reply::error(format!("cannot copy the listening sockets: {err}")),
            Listeners::default(),
        ),
        None => (
            Reply::error("this proxy does not hand out its listening sockets"),
            Listeners::default(),
        ),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let _ = tokio::task::spawn_blocking(move || {
        stream.set_nonblocking(false)?;
        let fds: Vec<std::os::fd::BorrowedFd<'_>> = copies
            .sockets
            .iter()
            .map(|(_, fd)| std::os::fd::AsFd::as_fd(fd))
            .collect();
        crate::listeners::send_with_fds(&stream, &out, &fds)
    })
    .await;
}

pub(crate) fn ok() -> Reply {
    Reply::ok()
}

pub(crate) fn refused(message: impl Into<String>) -> Reply {
    Reply::error(message)
}
