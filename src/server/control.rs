//! The server side of the control socket: a hook's push goes to the push
//! pipeline, a local command to the command grammar, as the local admin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access::Caller;
use crate::commands::{self, ManageCommand};
use crate::context::Gantry;
use crate::control::protocol::{Frame, Request};
use crate::push;

/// Accepts control connections until `shutdown`. `restart` takes the binary
/// serve is to restart on (`gantry upgrade`).
pub async fn serve(
    listener: UnixListener,
    gantry: Arc<Gantry>,
    restart: mpsc::Sender<PathBuf>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (gantry, restart) = (gantry.clone(), restart.clone());
        tokio::spawn(async move {
            if let Err(err) = handle(stream, gantry, restart).await {
                tracing::debug!(error = %err, "control connection failed");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    gantry: Arc<Gantry>,
    restart: mpsc::Sender<PathBuf>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request: Request = serde_json::from_str(&line)?;

    // The client sends nothing more; its end of the stream closing means it is
    // gone (a pusher who hung up takes its hook with it).
    let gone = CancellationToken::new();
    {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            gone.cancel();
        });
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if frame.write_to(&mut write).await.is_err() {
                // The client went away; dropping `rx` tells the work so.
                break;
            }
        }
    });
    let code = match request {
        Request::Hook(hook) => push::handle_hook(&gantry, hook, tx.clone(), gone).await,
        Request::Cli { command, stdin } => {
            let outcome = match serde_json::from_value::<ManageCommand>(command) {
                Ok(command) => commands::execute(&gantry, &Caller::Local, command, stdin).await,
                Err(err) => commands::Outcome::failure(
                    format!(
                        "gantry: serve cannot read this command ({err}); is it the same version?\n"
                    ),
                    2,
                ),
            };
            if !outcome.stdout.is_empty() {
                let _ = tx.send(Frame::Stdout(outcome.stdout.into_bytes()));
            }
            if !outcome.stderr.is_empty() {
                let _ = tx.send(Frame::Stderr(outcome.stderr.into_bytes()));
            }
            outcome.code
        }
        Request::Upgrade { exe } => upgrade(&gantry, &exe, &tx, &restart).await,
    };
    let _ = tx.send(Frame::Exit(code));
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// `gantry upgrade`: the new binary's proxy takes over the listening sockets
/// (the old one finishes its requests), then serve restarts on the new
/// binary once the pushes in flight are done. A new binary that cannot run
/// changes nothing.
async fn upgrade(
    gantry: &Gantry,
    exe: &Path,
    out: &mpsc::UnboundedSender<Frame>,
    restart: &mpsc::Sender<PathBuf>,
) -> i32 {
    let say = |text: String| {
        let _ = out.send(Frame::Stdout(format!("{text}\n").into_bytes()));
    };
    let version = tokio::process::Command::new(exe)
        .arg("--version")
        .output()
        .await;
    match version {
        Ok(o) if o.status.success() => say(format!(
            "new binary: {} ({})",
            exe.display(),
            String::from_utf8_lossy(&o.stdout).trim()
        )),
        Ok(o) => {
            let _ = out.send(Frame::Stderr(
                format!(
                    "gantry: {} does not run ({}): nothing changed\n",
                    exe.display(),
                    o.status
                )
                .into_bytes(),
            ));
            return 1;
        }
        Err(err) => {
            let _ = out.send(Frame::Stderr(
                format!(
                    "gantry: cannot run {}: {err}; nothing changed\n",
                    exe.display()
                )
                .into_bytes(),
            ));
            return 1;
        }
    }
    match crate::routing::upgrade(&gantry.routing, &gantry.config, exe).await {
        Ok((old, new)) => say(format!(
            "proxy: {} -> pid {new}, on the same listening sockets (the old one finishes its requests and exits)",
            old.map_or_else(|| "none running".to_owned(), |p| format!("pid {p}"))
        )),
        Err(err) => {
            let _ = out.send(Frame::Stderr(
                format!("gantry: the new proxy did not start: {err:#}; the old one keeps serving, nothing changed\n")
                    .into_bytes(),
            ));
            return 1;
        }
    }
    let pushes = gantry.pushes.live();
    say(format!(
        "serve: restarting on the new binary{}",
        if pushes > 0 {
            format!(" once the {pushes} push(es) in flight finish (new pushes wait for it)")
        } else {
            String::new()
        }
    ));
    if restart.send(exe.to_path_buf()).await.is_err() {
        let _ = out.send(Frame::Stderr(
            b"gantry: serve is already shutting down\n".to_vec(),
        ));
        return 1;
    }
    0
}
