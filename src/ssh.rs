//! The SSH endpoint: public-key authentication against registered keys, then one
//! `exec` per channel: `git-receive-pack 'APP'` (push), `git-upload-pack 'APP'`
//! (clone, fetch), or a management command such as `apps:list`.
//!
//! Each exec runs in its own task that owns the channel: reading the channel is
//! what gives a large push backpressure (see stack notes: a channel that is
//! never read stalls a 20 MB push).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Caller;
use crate::commands;
use crate::context::sessions::PushSession;
use crate::context::Gantry;
use crate::git::repos;
use crate::names::AppName;
use crate::store::{KeyRecord, Role};

/// What an SSH `exec` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Exec {
    ReceivePack(AppName),
    UploadPack(AppName),
    Manage(Vec<String>),
}

/// Parses an exec command line. Git paths may be `APP`, `APP.git`, `/APP.git`
/// or `~/APP`; the name must then be a valid app name.
pub fn parse_exec(command: &str) -> Result<Exec, String> {
    let words = shlex::split(command).ok_or_else(|| format!("cannot parse command {command:?}"))?;
    let Some((first, rest)) = words.split_first() else {
        return Err("empty command".into());
    };
    let git = match first.as_str() {
        "git-receive-pack" | "git receive-pack" => Some(true),
        "git-upload-pack" | "git upload-pack" => Some(false),
        _ => None,
    };
    let Some(is_push) = git else {
        return Ok(Exec::Manage(words));
    };
    let [path] = rest else {
        return Err(format!("{first} takes one repository path"));
    };
    let name = path.trim_start_matches("~/").trim_start_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    let app = AppName::parse(name).map_err(|e| e.to_string())?;
    Ok(if is_push {
        Exec::ReceivePack(app)
    } else {
        Exec::UploadPack(app)
    })
}

/// Loads the server's host key, making one on first start.
pub fn load_or_create_host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return russh::keys::load_secret_key(path, None)
            .map_err(|e| anyhow::anyhow!("cannot load the SSH host key {}: {e}", path.display()));
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
    key.write_openssh_file(path, LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot write the SSH host key {}: {e}", path.display()))?;
    Ok(key)
}

/// Serves SSH on `listener` until `shutdown`.
/// Serves SSH on `listener` until `stop_accepting`; then sessions already
/// open (pushes in flight) go on until `shutdown`, which disconnects them.
pub async fn serve(
    listener: TcpListener,
    gantry: Arc<Gantry>,
    host_key: PrivateKey,
    stop_accepting: CancellationToken,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = russh::server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    };
    let mut server = SshServer { gantry };
    let running = server.run_on_socket(Arc::new(config), &listener);
    // The handle keeps open sessions alive after the accept loop is dropped.
    let handle = running.handle();
    let result = tokio::select! {
        result = running => result,
        _ = stop_accepting.cancelled() => Ok(()),
        _ = shutdown.cancelled() => Ok(()),
    };
    // No new connections: the port refuses them while sessions finish.
    drop(listener);
    if result.is_ok() {
        shutdown.cancelled().await;
    }
    handle.shutdown("gantry is shutting down".into());
    result
}

struct SshServer {
    gantry: Arc<Gantry>,
}

impl russh::server::Server for SshServer {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<std::net::SocketAddr>) -> Connection {
        Connection {
            gantry: self.gantry.clone(),
            peer,
            key: None,
            channels: HashMap::new(),
            ptys: HashSet::new(),
        }
    }
}

/// One SSH connection.
struct Connection {
    gantry: Arc<Gantry>,
    peer: Option<std::net::SocketAddr>,
    key: Option<KeyRecord>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels whose client asked for a terminal (`ssh -t`).
    ptys: HashSet<ChannelId>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let found = match crate::access::keys::canonical(key.public_key) {
            Ok(canonical) => self.gantry.store.find_key(&canonical).await,
            Err(err) => {
                tracing::debug!(error = %err, "cannot encode offered key");
                return Ok(Auth::reject());
            }
        };
        match found {
            Ok(Some(record)) => {
                tracing::info!(key = %record.name, peer = ?self.peer, "ssh login");
                self.key = Some(record);
                Ok(Auth::Accept)
            }
            Ok(None) => {
                tracing::info!(peer = ?self.peer, "ssh login refused: unknown key");
                Ok(Auth::reject())
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot look up ssh key");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(channel), Some(key)) = (self.channels.remove(&id), self.key.clone()) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let command = String::from_utf8_lossy(data).into_owned();
        let gantry = self.gantry.clone();
        let tty = self.ptys.contains(&id);
        tokio::spawn(async move {
            run_exec(gantry, key, command, channel, tty).await;
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(id);
        session.channel_success(id)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let name = self
            .key
            .as_ref()
            .map_or("?".to_string(), |k| k.name.to_string());
        tokio::spawn(async move {
            let text = format!(
                "Hi {name}! You are talking to gantry; there is no shell here.\r\n\
                 Push with git (remote ssh://git@HOST:PORT/APP), or run a command: ssh -p PORT git@HOST help\r\n"
            );
            let _ = channel.data(text.as_bytes()).await;
            let _ = channel.exit_status(0).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
        });
        Ok(())
    }
}

/// Runs one exec to completion, then sends its exit status and closes the channel.
async fn run_exec(
    gantry: Arc<Gantry>,
    key: KeyRecord,
    command: String,
    mut channel: Channel<Msg>,
    tty: bool,
) {
    // A connection can outlive its key's removal or change: decide on the key as
    // it is now, not as it was at login.
    let key = match gantry.store.find_key(&key.public_key).await {
        Ok(Some(current)) => current,
        Ok(None) => {
            write_stderr(
                &channel,
                "gantry: permission denied: this key has been removed\n",
            )
            .await;
            finish(&channel, 1).await;
            return;
        }
        Err(err) => {
            write_stderr(&channel, &format!("gantry: cannot check this key: {err}\n")).await;
            finish(&channel, 1).await;
            return;
        }
    };
    let code = match parse_exec(&command) {
        Err(message) => {
            write_stderr(&channel, &format!("gantry: {message}\n")).await;
            1
        }
        Ok(Exec::Manage(words)) => match commands::parse_remote(&words) {
            Ok(command) if command.is_streaming() => {
                run_streaming(&gantry, key, command, channel, tty).await;
                return;
            }
            _ => run_manage(&gantry, key, &words, &mut channel).await,
        },
        Ok(Exec::ReceivePack(app)) => match authorize_git(&gantry, &key, &app, true).await {
            Ok(repo) => {
                let session = gantry.pushes.register(PushSession {
                    app: app.clone(),
                    key: key.name.clone(),
                });
                let cmd = repos::receive_pack(&gantry.config, &repo, &session.token);
                tracing::info!(%app, key = %key.name, "push started");
                let code = pipe_process(cmd, &mut channel).await;
                tracing::info!(%app, key = %key.name, code, "push ended");
                code
            }
            Err(message) => {
                write_stderr(&channel, &format!("gantry: {message}\n")).await;
                1
            }
        },
        Ok(Exec::UploadPack(app)) => match authorize_git(&gantry, &key, &app, false).await {
            Ok(repo) => pipe_process(repos::upload_pack(&repo), &mut channel).await,
            Err(message) => {
                write_stderr(&channel, &format!("gantry: {message}\n")).await;
                1
            }
        },
    };
    finish(&channel, code).await;
}

/// Sends the exit status and closes the channel.
async fn finish(channel: &Channel<Msg>, code: i32) {
    let _ = channel.exit_status(u32::try_from(code).unwrap_or(1)).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// Checks that `key` may use `app`'s repository, creating the app for an admin's
/// first push. Returns the repository path or a message for the user.
async fn authorize_git(
    gantry: &Gantry,
    key: &KeyRecord,
    app: &AppName,
    push: bool,
) -> Result<std::path::PathBuf, String> {
    if !key.may_manage(app) {
        return Err(format!(
            "permission denied: key {} may not {} app {app}",
            key.name,
            if push { "push to" } else { "read" }
        ));
    }
    let exists = gantry
        .store
        .get_app(app)
        .await
        .map_err(|e| format!("cannot read app {app}: {e}"))?
        .is_some();
    if !exists {
        if !(push && key.role == Role::Admin) {
            return Err(format!(
                "app {app} does not exist; an admin can create it with apps:create {app}"
            ));
        }
        match crate::apps::create(gantry, app).await {
            Ok(()) => tracing::info!(%app, key = %key.name, "app created by push"),
            // A concurrent first push created it: fine.
            Err(err)
                if err
                    .downcast_ref::<crate::store::StoreError>()
                    .is_some_and(|e| matches!(e, crate::store::StoreError::Duplicate(_))) => {}
            Err(err) => return Err(format!("cannot create app {app}: {err:#}")),
        }
    }
    repos::ensure_repo(&gantry.config, app)
        .await
        .map_err(|e| format!("cannot prepare the repository of {app}: {e}"))
}

async fn run_manage(
    gantry: &Gantry,
    key: KeyRecord,
    words: &[String],
    channel: &mut Channel<Msg>,
) -> i32 {
    let outcome = match commands::parse_remote(words) {
        Err(outcome) => outcome,
        Ok(command) => {
            let stdin = if command.reads_stdin() {
                read_stdin(channel, 64 * 1024).await
            } else {
                None
            };
            commands::execute(gantry, &Caller::Key(key), command, stdin).await
        }
    };
    if !outcome.stdout.is_empty() {
        let _ = channel.data(outcome.stdout.as_bytes()).await;
    }
    write_stderr(channel, &outcome.stderr).await;
    outcome.code
}

/// Runs `run` or `logs` with the channel as its terminal, then closes it.
async fn run_streaming(
    gantry: &Gantry,
    key: KeyRecord,
    command: commands::ManageCommand,
    channel: Channel<Msg>,
    tty: bool,
) {
    let (mut read_half, write_half) = channel.split();
    let stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = if matches!(
        command,
        commands::ManageCommand::Run { .. } | commands::ManageCommand::AddonsPsql { .. }
    ) {
        // The channel's input, owned by a task so the command gets a plain reader.
        let (mut pipe_in, pipe_out) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut reader = read_half.make_reader();
            let _ = tokio::io::copy(&mut reader, &mut pipe_in).await;
        });
        Some(Box::new(pipe_out))
    } else {
        None
    };
    let streams = crate::runtime::Streams {
        stdin,
        stdout: Box::new(write_half.make_writer()),
        stderr: Box::new(write_half.make_writer_ext(Some(1))),
        tty,
    };
    let code = commands::execute_streaming(gantry, &Caller::Key(key), command, streams).await;
    let _ = write_half
        .exit_status(u32::try_from(code).unwrap_or(1))
        .await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
}

/// Reads the channel until EOF (at most `limit` bytes, 30 s).
async fn read_stdin(channel: &mut Channel<Msg>, limit: usize) -> Option<String> {
    let mut buf = Vec::new();
    let mut reader = channel.make_reader().take(limit as u64);
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) => String::from_utf8(buf).ok(),
        _ => None,
    }
}

async fn write_stderr(channel: &Channel<Msg>, text: &str) {
    if !text.is_empty() {
        let _ = channel.extended_data(1, text.as_bytes()).await;
    }
}

/// Runs a git process with the channel as its stdin/stdout/stderr; returns its exit code.
async fn pipe_process(mut cmd: tokio::process::Command, channel: &mut Channel<Msg>) -> i32 {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            write_stderr(channel, &format!("gantry: cannot run git: {err}\n")).await;
            return 1;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return 1;
    };
    let mut out_writer = channel.make_writer();
    let mut err_writer = channel.make_writer_ext(Some(1));
    let copy_out = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut out_writer).await;
        let _ = out_writer.flush().await;
    });
    let copy_err = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stderr, &mut err_writer).await;
        let _ = err_writer.flush().await;
    });
    let status = {
        let mut reader = channel.make_reader();
        let copy_in = async {
            let _ = tokio::io::copy(&mut reader, &mut stdin).await;
            drop(stdin);
            // Input is done; keep waiting for the process.
            std::future::pending::<()>().await
        };
        tokio::select! {
            status = child.wait() => status,
            _ = copy_in => unreachable!("copy_in never completes"),
        }
    };
    let _ = copy_out.await;
    let _ = copy_err.await;
    match status {
        Ok(status) => status.code().unwrap_or(1),
        Err(err) => {
            tracing::warn!(error = %err, "waiting for git failed");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("name")
    }

    #[test]
    fn git_commands_and_paths() {
        for cmd in [
            "git-receive-pack 'web1'",
            "git-receive-pack '/web1.git'",
            "git-receive-pack 'web1.git'",
            "git-receive-pack '~/web1'",
        ] {
            assert_eq!(parse_exec(cmd), Ok(Exec::ReceivePack(app("web1"))), "{cmd}");
        }
        assert_eq!(
            parse_exec("git-upload-pack '/web1'"),
            Ok(Exec::UploadPack(app("web1")))
        );
    }

    #[test]
    fn bad_repository_paths_are_refused_with_the_rule() {
        for cmd in [
            "git-receive-pack '../x'",
            "git-receive-pack 'A'",
            "git-upload-pack 'x;rm'",
            "git-receive-pack 'a/b'",
        ] {
            let err = parse_exec(cmd).expect_err(cmd);
            assert!(err.contains("^[a-z][a-z0-9-]{0,29}$"), "{cmd}: {err}");
        }
        assert!(parse_exec("git-receive-pack").is_err());
        assert!(parse_exec("git-receive-pack 'a' 'b'").is_err());
        assert!(parse_exec("").is_err());
    }

    #[test]
    fn everything_else_is_a_management_command() {
        assert_eq!(
            parse_exec("apps:create web1"),
            Ok(Exec::Manage(vec!["apps:create".into(), "web1".into()]))
        );
    }
}
