//! Waiting for a new container to answer HTTP before it gets traffic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::{Runtime, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("the app did not answer HTTP on port {port} within {timeout:?}")]
    Timeout { port: u16, timeout: Duration },
    #[error("the app exited before answering HTTP (exit code {})", .0.map_or("unknown".to_string(), |c| c.to_string()))]
    Crashed(Option<i64>),
    #[error("the container has no address on the gantry network")]
    NoAddress,
    #[error("cannot inspect the container: {0}")]
    Runtime(#[from] RuntimeError),
}

/// Polls until `GET path` on the container answers with a status below 500.
/// Returns the container's address, or why it never became healthy.
///
/// A restart beyond `baseline_restarts` counts as a crash; `None` takes the
/// count found at the first look (for a container that was already running).
pub async fn wait_until_healthy(
    runtime: &dyn Runtime,
    container_id: &str,
    port: u16,
    timeout: Duration,
    baseline_restarts: Option<i64>,
    path: &str,
) -> Result<SocketAddr, HealthError> {
    let deadline = Instant::now() + timeout;
    let mut addr = None;
    let mut baseline = baseline_restarts;
    loop {
        let status = runtime.inspect(container_id).await?;
        let baseline = *baseline.get_or_insert(status.restarts);
        if !status.running || status.restarts > baseline {
            return Err(HealthError::Crashed(status.exit_code));
        }
        if addr.is_none() {
            addr = status.address.map(|ip| SocketAddr::new(ip, port));
        }
        if let Some(addr) = addr {
            if let Some(status) = probe(addr, path).await {
                if status < 500 {
                    return Ok(addr);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(if addr.is_some() {
                HealthError::Timeout { port, timeout }
            } else {
                HealthError::NoAddress
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `GET path`; the response status, or `None` when nothing answered.
pub async fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gantry-health\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut head[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        parse_status(&head[..len])
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test]
    async fn probe_reads_a_real_server_and_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        assert_eq!(probe(addr, "/health").await, Some(302));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        assert_eq!(probe(closed_addr, "/").await, None);
    }
}
