//! Deploy: runs a release's containers, waits until they are healthy, switches
//! the app's route to them, then drains and stops what they replace.
//!
//! A roll-out ([`roll_out`]) reads top-down: start the formation's web replicas
//! and wait until each answers HTTP ([`replicas::start`]), record the release as
//! current, swap the route atomically, let requests in flight on the old route
//! finish, stop the old containers ([`replicas::switch`]). Any failure before the
//! switch leaves the old release serving, untouched. [`restore`] rebuilds routes
//! when `serve` starts; [`processes`] scales, stops and restarts; [`watch`]
//! follows containers Docker restarts.
//!
//! deploy never builds: it runs images `build` made.

pub mod health;
pub mod logs;
pub mod oneoff;
pub mod processes;
pub mod replicas;
pub mod restore;
pub mod watch;

use std::net::SocketAddr;
use std::time::Instant;

use crate::context::Gantry;
use crate::manifest::formation::Formation;
use crate::names::AppName;
use crate::runtime::Task;
use crate::store::Release;

pub use restore::restore;

/// Where a roll-out reports progress: a pusher's `remote:` lines, or a command's output.
pub trait Progress {
    fn line(&mut self, text: &str);
    fn error(&mut self, text: &str);
    /// Asked just before the switch; `false` abandons the roll-out (the pusher left).
    fn proceed(&self) -> bool {
        true
    }
    /// The job run (`APP/deploy#N`) this roll-out belongs to, if any, so the
    /// release phase records itself as its child.
    fn run(&self) -> Option<String> {
        None
    }
}

/// Progress collected as text, for commands that answer when done.
#[derive(Debug, Default)]
pub struct TextProgress(pub String);

impl Progress for TextProgress {
    fn line(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }
    fn error(&mut self, text: &str) {
        self.0.push_str(" !     ");
        self.0.push_str(text);
        self.0.push('\n');
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot start the container: {0}")]
    Start(#[from] crate::runtime::RuntimeError),
    #[error("cannot read the release's config vars: {0}")]
    Config(crate::secrets::SecretsError),
    #[error("{reason}")]
    Unhealthy {
        reason: health::HealthError,
        /// The container's last lines of output, to show the pusher.
        logs: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The app's formation and whether it is stopped, from the store.
pub async fn formation(gantry: &Gantry, app: &AppName) -> Result<(Formation, bool), DeployError> {
    let record = gantry
        .store
        .get_app(app)
        .await?
        .ok_or_else(|| crate::store::StoreError::NotFound(format!("app {app}")))?;
    Ok((Formation::from_stored(&record.formation), record.stopped))
}

/// Puts `release` live with the app's formation: start its web replicas with
/// its config, wait until each is healthy, record it as current, switch the
/// route, drain and stop the old containers. A stopped app starts again. Any
/// failure before the switch leaves the old release serving; `Err` is a
/// one-line reason, and the details went to `progress`.
pub async fn roll_out(
    gantry: &Gantry,
    release: &Release,
    progress: &mut (dyn Progress + Send),
    new_release: bool,
) -> Result<(), String> {
    let t = Instant::now();
    let app = &release.app;
    // A new release runs its deploy scripts; a restart of the same one does not.
    let manifest = crate::manifest::Manifest::from_stored(&release.manifest);
    if new_release {
        if let Some(command) = &manifest.app_json.scripts.dokku.predeploy {
            run_phase(gantry, release, "predeploy", command, progress).await?;
        }
        if let Some(command) = &manifest.procfile.release {
            run_phase(gantry, release, "release", command, progress).await?;
        }
    }
    let (formation, _) = formation(gantry, app).await.map_err(|e| e.to_string())?;
    progress.line(&format!(
        "starting {} of v{} (web waits for HTTP on port {}, timeout {}s)",
        replicas::describe_formation(release, &formation),
        release.version,
        release.port,
        web_spec(gantry, release).timeout.as_secs()
    ));
    let started = match replicas::start_formation(gantry, release, &formation).await {
        Ok(started) => started,
        Err(DeployError::Unhealthy { reason, logs }) => {
            progress.error(&reason.to_string());
            if logs.is_empty() {
                progress.error("the app printed nothing");
            } else {
                progress.error("its last log lines:");
                for line in logs {
                    progress.error(&format!("  {line}"));
                }
            }
            return Err("the new release never became healthy".into());
        }
        Err(err) => return Err(err.to_string()),
    };
    progress.line(&format!("healthy in {:.1}s", t.elapsed().as_secs_f64()));
    if !progress.proceed() {
        replicas::discard(gantry, &started).await;
        return Err("the pusher disconnected before the switch; nothing changed".into());
    }
    let recorded = async {
        gantry
            .store
            .set_current_release(app, release.version)
            .await?;
        gantry.store.set_stopped(app, false).await
    };
    if let Err(err) = recorded.await {
        replicas::discard(gantry, &started).await;
        return Err(format!("cannot record the live release: {err}"));
    }
    let stopped = replicas::switch(gantry, app, &started).await;
    progress.line(&format!(
        "routing {} to v{} ({} web replica(s))",
        gantry.config.app_host(app),
        release.version,
        started.addrs().len()
    ));
    if stopped > 0 {
        progress.line(&format!("stopped {stopped} old container(s)"));
    }
    progress.line(&format!("deployed in {:.1}s", t.elapsed().as_secs_f64()));
    if let (true, Some(command)) = (new_release, &manifest.app_json.scripts.dokku.postdeploy) {
        // After the switch there is nothing to undo: a failure is reported only.
        if let Err(reason) = run_phase(gantry, release, "postdeploy", command, progress).await {
            progress.error(&format!("{reason}; v{} stays live", release.version));
        }
    }
    Ok(())
}

/// Runs a deploy script (`release`, `predeploy`, `postdeploy`) in a one-off
/// container of the new release, streaming its output; non-zero exit is an error.
async fn run_phase(
    gantry: &Gantry,
    release: &Release,
    label: &str,
    command: &str,
    progress: &mut (dyn Progress + Send),
) -> Result<(), String> {
    let t = Instant::now();
    progress.line(&format!("running {label}: {command}"));
    // The release phase is a run of its own in the job log (`APP/release`).
    let mut record = match label {
        "release" => {
            crate::jobs::live::release_phase(
                gantry,
                &release.app,
                release.version,
                progress.run().as_deref(),
            )
            .await
        }
        _ => None,
    };
    if let Some(run) = &mut record {
        progress.line(&format!("recorded as {}", run.reference()));
        run.write(&format!("$ {command}\n"));
    }
    let outcome = async {
        let env = release_env(gantry, release)?;
        let task = Task::shell(&release.app, release.version, &release.image, command, env);
        let code = crate::runtime::run_to_end(&gantry.runtime, &task, &mut |line: &str| {
            progress.line(&format!("  {line}"));
            if let Some(run) = &mut record {
                run.write(&format!("{line}\n"));
            }
        })
        .await?;
        Ok::<i64, anyhow::Error>(code)
    }
    .await
    .map_err(|e| format!("cannot run the {label} command: {e:#}"));
    if let Some(run) = record {
        let (status, code, reason) = match &outcome {
            Ok(0) => (crate::store::RunStatus::Succeeded, Some(0), String::new()),
            Ok(code) => (
                crate::store::RunStatus::Failed,
                Some(*code),
                format!("exit code {code}"),
            ),
            Err(reason) => (crate::store::RunStatus::Failed, None, reason.clone()),
        };
        run.finish(gantry, status, code, &reason).await;
    }
    let code = outcome?;
    if code != 0 {
        progress.error(&format!("the {label} command exited with {code}"));
        return Err(format!(
            "the {label} command failed (exit {code}); nothing was switched"
        ));
    }
    progress.line(&format!(
        "{label} done in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// How to run and check a release's web process, from its manifest.
pub struct WebSpec {
    /// The Procfile's `web` command; `None` runs the image's own.
    pub command: Option<String>,
    /// The health check path (app.json `healthchecks.web`, else `/`).
    pub path: String,
    pub timeout: std::time::Duration,
}

pub fn web_spec(gantry: &Gantry, release: &Release) -> WebSpec {
    let manifest = crate::manifest::Manifest::from_stored(&release.manifest);
    let (path, timeout) = manifest.app_json.web_check().unwrap_or(("/".into(), None));
    WebSpec {
        command: manifest.command("web").map(str::to_owned),
        path,
        timeout: timeout.map_or(gantry.config.health_timeout, std::time::Duration::from_secs),
    }
}

/// The container environment of `release`: its config vars and `PORT`.
pub fn release_env(gantry: &Gantry, release: &Release) -> Result<Vec<String>, DeployError> {
    crate::config_vars::release_env(release, &gantry.secrets).map_err(DeployError::Config)
}

/// Routes the app's host to `addrs` (none: the proxy answers 503); returns the
/// addresses the replaced route had and the new one does not, so requests in
/// flight to them can be drained.
pub(crate) async fn route(
    gantry: &Gantry,
    app: &AppName,
    addrs: Vec<SocketAddr>,
) -> Vec<SocketAddr> {
    let redirect = match gantry.store.get_app(app).await {
        Ok(Some(record)) => record.https_redirect,
        _ => false,
    };
    gantry
        .routing
        .set(&gantry.config.app_host(app), app.as_str(), addrs, redirect)
        .await
}

/// Routes the app to the running containers of its live release, as Docker
/// has them now (after Docker restarted one, its address may have changed).
pub async fn reroute(gantry: &Gantry, app: &AppName) -> anyhow::Result<()> {
    let Some(release) = gantry.store.current_release(app).await? else {
        return Ok(());
    };
    let mut addrs = Vec::new();
    for c in gantry.runtime.list(app).await? {
        if c.running && c.release == Some(release.version) && c.process == "web" {
            if let Some(ip) = replicas::address(gantry, &c.id).await {
                addrs.push(SocketAddr::new(ip, release.port));
            }
        }
    }
    addrs.sort();
    route(gantry, app, addrs).await;
    Ok(())
}

/// Takes an app off the proxy and removes all its processes (the app is
/// being destroyed); returns how many there were.
pub async fn remove_processes(gantry: &Gantry, app: &AppName) -> anyhow::Result<usize> {
    gantry.routing.remove(&gantry.config.app_host(app)).await;
    let processes = gantry.runtime.list(app).await?;
    for c in &processes {
        gantry
            .runtime
            .stop_and_remove(&c.id, std::time::Duration::ZERO)
            .await;
    }
    Ok(processes.len())
}
