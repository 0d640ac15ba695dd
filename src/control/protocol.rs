//! The control socket's wire format: one JSON request line, then frames.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a client asks of the server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Run a management command, as the local admin.
    Cli {
        /// A `commands::ManageCommand`, as JSON: the protocol carries it
        /// without knowing the grammar.
        command: serde_json::Value,
        /// Standard input for commands that read it (`keys:add NAME -`).
        stdin: Option<String>,
    },
    /// A pre-receive hook handing over a push.
    Hook(HookRequest),
    /// `gantry upgrade`: move to the binary at `exe` (already in place): a
    /// new proxy takes the listening sockets from the old one, then serve
    /// restarts on it once the pushes in flight are done.
    Upgrade { exe: PathBuf },
}

/// What the pre-receive hook knows about a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRequest {
    /// The token the server gave this `receive-pack` run; ties the hook to the
    /// authenticated SSH session (and so to the app and the pusher's key).
    pub token: String,
    pub updates: Vec<RefUpdate>,
    /// Where the pushed objects are: git's quarantine directory first, then
    /// the repository's own object store.
    pub object_dirs: Vec<PathBuf>,
}

/// One line of pre-receive input: `OLD NEW REFNAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    /// Parses `OLD NEW REFNAME`; `None` for a malformed line.
    pub fn parse(line: &str) -> Option<RefUpdate> {
        let mut parts = line.split_whitespace();
        let (old, new, refname) = (parts.next()?, parts.next()?, parts.next()?);
        let is_sha = |s: &str| s.len() >= 40 && s.chars().all(|c| c.is_ascii_hexdigit());
        if !is_sha(old) || !is_sha(new) || parts.next().is_some() {
            return None;
        }
        Some(RefUpdate {
            old: old.into(),
            new: new.into(),
            refname: refname.into(),
        })
    }

    /// A push that deletes the ref.
    pub fn is_delete(&self) -> bool {
        self.new.chars().all(|c| c == '0')
    }
}

/// One piece of the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
}

impl Frame {
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let (tag, payload): (u8, &[u8]) = match self {
            Frame::Stdout(b) => (b'o', b),
            Frame::Stderr(b) => (b'e', b),
            Frame::Exit(code) => {
                let mut buf = [b'x', 0, 0, 0, 4, 0, 0, 0, 0];
                buf[5..].copy_from_slice(&code.to_be_bytes());
                return w.write_all(&buf).await;
            }
        };
        let len =
            u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?;
        let mut header = [tag, 0, 0, 0, 0];
        header[1..].copy_from_slice(&len.to_be_bytes());
        w.write_all(&header).await?;
        w.write_all(payload).await
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub async fn read_from<R: tokio::io::AsyncRead + Unpin>(
        r: &mut R,
    ) -> std::io::Result<Option<Frame>> {
        let mut header = [0u8; 5];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > 16 << 20 {
            return Err(std::io::Error::other("frame too large"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        match header[0] {
            b'o' => Ok(Some(Frame::Stdout(payload))),
            b'e' => Ok(Some(Frame::Stderr(payload))),
            b'x' if len == 4 => Ok(Some(Frame::Exit(i32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ])))),
            tag => Err(std::io::Error::other(format!("unknown frame tag {tag}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = vec![
            Frame::Stdout(b"hello\n".to_vec()),
            Frame::Stderr(vec![]),
            Frame::Exit(-3),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.write_to(&mut buf).await.expect("write");
        }
        let mut reader = &buf[..];
        let mut back = Vec::new();
        while let Some(f) = Frame::read_from(&mut reader).await.expect("read") {
            back.push(f);
        }
        assert_eq!(back, frames);
    }

    #[test]
    fn ref_update_lines() {
        let zero = "0".repeat(40);
        let sha = "a".repeat(40);
        let line = format!("{zero} {sha} refs/heads/main");
        let update = RefUpdate::parse(&line).expect("parse");
        assert_eq!(update.refname, "refs/heads/main");
        assert!(!update.is_delete());
        let delete = RefUpdate::parse(&format!("{sha} {zero} refs/heads/x")).expect("parse");
        assert!(delete.is_delete());
        assert!(RefUpdate::parse("garbage").is_none());
        assert!(RefUpdate::parse(&format!("{sha} {sha}")).is_none());
    }
}
