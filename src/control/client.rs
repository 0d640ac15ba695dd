//! The client side of the control socket: used by the local CLI and the hook.

use std::io::Write;
use std::path::Path;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Frame, Request};

/// Connects to a running server, or `None` when none listens on `socket`.
pub async fn connect(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).await.ok()
}

/// Sends `request` and copies the answer to this process's stdout and stderr as it
/// arrives; returns the exit code the server sent.
pub async fn call(mut stream: UnixStream, request: &Request) -> anyhow::Result<i32> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reader = BufReader::new(stream);
    loop {
        match Frame::read_from(&mut reader).await? {
            Some(Frame::Stdout(bytes)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Some(Frame::Stderr(bytes)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&bytes)?;
                err.flush()?;
            }
            Some(Frame::Exit(code)) => return Ok(code),
            None => anyhow::bail!("gantry serve closed the connection before finishing"),
        }
    }
}
