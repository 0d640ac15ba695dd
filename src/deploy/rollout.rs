//! Putting a release live: its deploy scripts and release phase, then its
//! formation started, checked, switched to, and the old one drained.

use std::time::Instant;

use super::progress::Progress;
use super::replicas;
use super::spec::{formation, release_env, web_spec, DeployError};
use crate::context::Gantry;
use crate::runtime::Task;
use crate::store::Release;

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
    // On a swarm, one deploy of an app at a time across every manager, its
    // release phase included.
    let _lease = match gantry.runtime.services() {
        Some(_) => Some(super::services::lock_deploy(gantry, app).await?),
        None => None,
    };
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
    if let Some(services) = gantry.runtime.services() {
        return super::services::roll_out(gantry, services, release, progress, !new_release).await;
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
        let mut env = release_env(gantry, release)?;
        env.push("DYNO=release.1".to_owned());
        let mut task = Task::shell(&release.app, release.version, &release.image, command, env);
        // The release phase sees the app's volumes, as Dokku's does.
        task.mounts = super::spec::app_data(gantry, &release.app).await?.mounts;
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
