//! One-off processes (`run APP -- CMD`): a container of the live release's
//! image with its config, attached to the caller's stdin, stdout and stderr,
//! whose exit code becomes the command's. One-off containers carry their own
//! label (`gantry.oneoff`), so deploys and scaling never touch them.

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::release_env;
use crate::context::Gantry;
use crate::names::AppName;

pub const LABEL_ONEOFF: &str = "gantry.oneoff";

/// Force-removes a container when dropped, unless [`disarm`](Self::disarm)ed:
/// a one-off whose caller timed out, was cancelled or went away never
/// leaves its container running.
pub struct RemoveOnDrop {
    docker: bollard::Docker,
    id: Option<String>,
}

impl RemoveOnDrop {
    pub fn new(docker: &bollard::Docker, id: &str) -> Self {
        RemoveOnDrop {
            docker: docker.clone(),
            id: Some(id.to_owned()),
        }
    }

    /// Removes it now, and waits for that.
    pub async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.docker, &id).await;
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { remove(&docker, &id).await });
            }
        }
    }
}

async fn remove(docker: &bollard::Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(err) = docker.remove_container(id, Some(options)).await {
        tracing::debug!(container = id, error = %err, "cannot remove a one-off container");
    }
}

/// Where a one-off process reads and writes.
pub struct Streams {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    /// A terminal: the container gets a TTY, and stderr arrives on stdout.
    pub tty: bool,
}

/// Runs `command` in a one-off container of `app`'s live release; returns its
/// exit code. It is a run of the job `APP/run` (its output kept as the run's
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
        Ok(0) => (crate::store::RunStatus::Succeeded, Some(0), String::new()),
        Ok(code) => (
            crate::store::RunStatus::Failed,
            Some(i64::from(*code)),
            format!("exit code {code}"),
        ),
        Err(err) if cancel.is_cancelled() => {
            (crate::store::RunStatus::Cancelled, None, format!("{err:#}"))
        }
        Err(err) => (crate::store::RunStatus::Failed, None, format!("{err:#}")),
    };
    live.finish(gantry, status, code, &reason).await;
    result
}

async fn run_in(
    gantry: &Gantry,
    release: &crate::store::Release,
    command: Vec<String>,
    streams: &mut Streams,
    log: Option<std::fs::File>,
) -> anyhow::Result<i32> {
    let app = &release.app;
    let env = release_env(gantry, release)?;
    let docker = &gantry.docker;
    let tty = streams.tty;
    let stdin = streams.stdin.take();
    let body = ContainerCreateBody {
        image: Some(release.image.clone()),
        env: Some(env),
        cmd: Some(command),
        labels: Some(HashMap::from([
            (LABEL_ONEOFF.to_owned(), app.to_string()),
            (
                super::container::LABEL_RELEASE.to_owned(),
                release.version.to_string(),
            ),
        ])),
        tty: Some(tty),
        open_stdin: Some(stdin.is_some()),
        stdin_once: Some(true),
        attach_stdin: Some(stdin.is_some()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some(gantry.config.docker_network.clone()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = {
        use rand::RngExt;
        format!(
            "gantry-{app}-run-{:06x}",
            rand::rng().random::<u32>() & 0xff_ffff
        )
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await?;
    let container = RemoveOnDrop::new(docker, &created.id);
    let mut stdout = Tee::new(
        &mut streams.stdout,
        log.as_ref().and_then(|f| f.try_clone().ok()),
    );
    let mut stderr = Tee::new(&mut streams.stderr, log);
    let result = attach_and_wait(gantry, &created.id, stdin, tty, &mut stdout, &mut stderr).await;
    container.remove().await;
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    result
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

async fn attach_and_wait(
    gantry: &Gantry,
    id: &str,
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    tty: bool,
    stdout: &mut (dyn AsyncWrite + Send + Unpin),
    stderr: &mut (dyn AsyncWrite + Send + Unpin),
) -> anyhow::Result<i32> {
    let docker = &gantry.docker;
    let options = AttachContainerOptionsBuilder::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let attached = docker.attach_container(id, Some(options)).await?;
    docker.start_container(id, None).await?;

    let mut input = attached.input;
    let feed = stdin.map(|mut stdin| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            // Without a terminal, half-close: with stdin_once the process sees end
            // of input. On a terminal, end of input is ^D (sent as data), and
            // closing would hang the terminal up under the process.
            if !tty {
                let _ = input.shutdown().await;
            }
        })
    });
    let mut output = attached.output;
    while let Some(chunk) = output.next().await {
        let written = match chunk {
            Ok(LogOutput::StdErr { message }) => stderr.write_all(&message).await,
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                stdout.write_all(&message).await
            }
            Ok(LogOutput::StdIn { .. }) => Ok(()),
            Err(err) => {
                tracing::debug!(error = %err, "one-off output ended");
                break;
            }
        };
        if written.is_err() {
            // The caller went away: stop the process rather than leave it running.
            let _ = docker
                .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
                .await;
            break;
        }
        let _ = stdout.flush().await;
    }
    if let Some(feed) = feed {
        feed.abort();
    }
    let code = super::container::exit_code(docker, id).await?.unwrap_or(1);
    Ok(i32::try_from(code).unwrap_or(1))
}

/// Runs `command` through the shell, to completion, in a container of
/// `release`'s image with its config plus `extra_env` (`K=V`: a cron run's
/// `GANTRY_*` and parameters) for the release phase, deploy scripts and
/// cron jobs. Each output line goes to `on_line`; returns the exit code.
/// Dropping the future (a timeout, a cancel) removes the container.
pub async fn run_task(
    gantry: &Gantry,
    release: &crate::store::Release,
    command: &str,
    extra_env: &[String],
    mut on_line: impl FnMut(&str) + Send,
) -> anyhow::Result<i64> {
    let docker = &gantry.docker;
    let mut env = release_env(gantry, release)?;
    env.extend(extra_env.iter().cloned());
    let body = ContainerCreateBody {
        image: Some(release.image.clone()),
        env: Some(env),
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
        labels: Some(HashMap::from([
            (LABEL_ONEOFF.to_owned(), release.app.to_string()),
            (
                super::container::LABEL_RELEASE.to_owned(),
                release.version.to_string(),
            ),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(gantry.config.docker_network.clone()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?;
    let id = created.id;
    let container = RemoveOnDrop::new(docker, &id);
    let outcome = async {
        docker.start_container(&id, None).await?;
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let mut logs = docker.logs(&id, Some(options));
        let mut pending = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            pending.push_str(&chunk.to_string());
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                on_line(line.trim_end());
            }
        }
        if !pending.trim().is_empty() {
            on_line(pending.trim_end());
        }
        Ok::<i64, anyhow::Error>(super::container::exit_code(docker, &id).await?.unwrap_or(1))
    }
    .await;
    container.remove().await;
    outcome
}
