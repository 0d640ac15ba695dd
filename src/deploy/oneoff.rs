//! One-off processes (`run APP -- CMD`): a one-off of the live release's
//! image with its config, attached to the caller's stdin, stdout and stderr,
//! whose exit code becomes the command's. It is a run of the job `APP/run`,
//! its output the run's log.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::spec::release_env;
use crate::context::Gantry;
use crate::names::AppName;
use crate::runtime::{Attached, Interactive, OneOff, Owner, Streams, Task};
use crate::store::{Release, RunStatus};

/// Runs `command` in a one-off of `app`'s live release; returns its exit
/// code. It is a run of the job `APP/run` (its output kept as the run's
/// log), so `jobs:runs APP/run` lists one-offs and `jobs:cancel` stops one.
pub async fn run(
    gantry: &Gantry,
    app: &AppName,
    command: Vec<String>,
    streams: &mut Streams,
    caller: &str,
) -> anyhow::Result<i32> {
    let release = gantry
        .store
        .current_release(app)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{app} has no live release yet: push to deploy it"))?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut live = crate::jobs::live::LiveRun::queue(
        gantry,
        &format!("{app}/run"),
        "manual",
        caller,
        "",
        cancel.clone(),
    )
    .await?;
    live.write(&format!(
        "$ {} (release v{})\n",
        shlex::try_join(command.iter().map(String::as_str)).unwrap_or_else(|_| command.join(" ")),
        release.version
    ));
    live.start(gantry).await;
    let log = live.log_file();
    let result = tokio::select! {
        result = run_in(gantry, &release, command, streams, log) => result,
        _ = cancel.cancelled() => Err(anyhow::anyhow!("cancelled (jobs:cancel)")),
    };
    let (status, code, reason) = match &result {
        Ok(0) => (RunStatus::Succeeded, Some(0), String::new()),
        Ok(code) => (
            RunStatus::Failed,
            Some(i64::from(*code)),
            format!("exit code {code}"),
        ),
        Err(err) if cancel.is_cancelled() => (RunStatus::Cancelled, None, format!("{err:#}")),
        Err(err) => (RunStatus::Failed, None, format!("{err:#}")),
    };
    live.finish(gantry, status, code, &reason).await;
    result
}

async fn run_in(
    gantry: &Gantry,
    release: &Release,
    command: Vec<String>,
    streams: &mut Streams,
    log: Option<std::fs::File>,
) -> anyhow::Result<i32> {
    let mut env = release_env(gantry, release)?;
    env.push("DYNO=run.1".to_owned());
    let tty = streams.tty;
    let stdin = streams.stdin.take();
    let task = Task {
        owner: Owner::App {
            app: release.app.clone(),
            release: release.version,
        },
        image: release.image.clone(),
        command,
        entrypoint: None,
        env,
        mounts: super::spec::app_data(gantry, &release.app).await?.mounts,
        working_dir: None,
        interactive: Some(Interactive {
            tty,
            stdin: stdin.is_some(),
        }),
    };
    let oneoff = OneOff::create(&gantry.runtime, &task).await?;
    let mut stdout = Tee::new(
        &mut streams.stdout,
        log.as_ref().and_then(|f| f.try_clone().ok()),
    );
    let mut stderr = Tee::new(&mut streams.stderr, log);
    let result = oneoff
        .attach(Attached {
            stdin,
            tty,
            stdout: &mut stdout,
            stderr: &mut stderr,
        })
        .await;
    oneoff.remove().await;
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    Ok(result?)
}

/// Writes to the caller and, as far as it can, to the run's log.
struct Tee<'a> {
    out: &'a mut (dyn AsyncWrite + Send + Unpin),
    log: Option<std::fs::File>,
}

impl<'a> Tee<'a> {
    fn new(out: &'a mut (dyn AsyncWrite + Send + Unpin), log: Option<std::fs::File>) -> Self {
        Tee { out, log }
    }
}

impl AsyncWrite for Tee<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut *this.out).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            if let Some(log) = this.log.as_mut() {
                use std::io::Write;
                // Losing log text never fails the process's output.
                let _ = log.write_all(&buf[..*n]);
            }
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.out).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.out).poll_shutdown(cx)
    }
}
