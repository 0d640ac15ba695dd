//! Runs one run: waits for an executor slot, applies the job's concurrency
//! rule, runs the script (in its own process group, so a timeout or cancel
//! kills the whole tree) or the app's one-off container, and writes the log.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::definition::{Concurrency, JobDef, JobKind};
use crate::context::Gantry;
use crate::runtime::{Mount, OneOff, Owner, Task};
use crate::store::{Run, RunStatus};

/// How a run ended, before it is recorded.
struct Ending {
    status: RunStatus,
    code: Option<i64>,
    reason: String,
}

impl Ending {
    fn failed(reason: String) -> Ending {
        Ending {
            status: RunStatus::Failed,
            code: None,
            reason,
        }
    }

    fn cancelled(reason: &str) -> Ending {
        Ending {
            status: RunStatus::Cancelled,
            code: None,
            reason: reason.to_owned(),
        }
    }

    fn timed_out(reason: String) -> Ending {
        Ending {
            status: RunStatus::TimedOut,
            code: None,
            reason,
        }
    }

    /// Succeeded on 0, failed with the code otherwise.
    fn exited(code: i64) -> Ending {
        Ending {
            status: if code == 0 {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            code: Some(code),
            reason: if code == 0 {
                String::new()
            } else {
                format!("exit code {code}")
            },
        }
    }
}

pub async fn execute(
    gantry: &Arc<Gantry>,
    job: &JobDef,
    run: &Run,
    cancel: CancellationToken,
) -> RunStatus {
    let ending = execute_inner(gantry, job, run, cancel).await;
    if let Err(err) = gantry
        .store
        .finish_run(
            &run.job,
            run.number,
            ending.status,
            ending.code,
            &ending.reason,
        )
        .await
    {
        tracing::error!(job = %run.job, run = run.number, error = %err, "cannot record the run's end");
    }
    tracing::info!(job = %run.job, run = run.number, status = ending.status.as_str(), "run finished");
    alert_if_needed(
        gantry,
        &job.notify,
        &run.job,
        run.number,
        ending.status,
        &ending.reason,
    )
    .await;
    ending.status
}

/// Sends `failure` for a failed or timed-out run, and `recovery` for a
/// success whose previous finished run had failed, to gantry.toml's
/// `notify` targets and the job's own.
pub async fn alert_if_needed(
    gantry: &Gantry,
    job_targets: &[crate::config::NotifyTarget],
    job: &str,
    number: i64,
    status: RunStatus,
    reason: &str,
) {
    let failed = |status: RunStatus| matches!(status, RunStatus::Failed | RunStatus::TimedOut);
    let event = if failed(status) {
        "failure"
    } else if status == RunStatus::Succeeded {
        let previous = gantry
            .store
            .list_runs(job, 20)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|r| {
                r.number < number && r.status.is_finished() && r.status != RunStatus::Cancelled
            });
        match previous {
            Some(previous) if failed(previous.status) => "recovery",
            _ => return,
        }
    } else {
        return;
    };
    let mut targets = gantry.config.notify.clone();
    targets.extend(job_targets.iter().cloned());
    let path = super::files::log_path(gantry, job, number);
    let text = match event {
        "recovery" => format!("{job} #{number} succeeded again"),
        _ => format!("{job} #{number} {}: {reason}", status.as_str()),
    };
    super::notify::send(
        gantry,
        targets,
        super::notify::Alert {
            event: event.into(),
            job: job.to_owned(),
            run: number,
            status: status.as_str().into(),
            reason: reason.to_owned(),
            log_tail: super::notify::tail(&path, 20),
            link: format!("{}/jobs/{job}/{number}", gantry.config.dashboard_url()),
            text,
        },
    );
}

async fn execute_inner(
    gantry: &Arc<Gantry>,
    job: &JobDef,
    run: &Run,
    cancel: CancellationToken,
) -> Ending {
    let slot = tokio::select! {
        slot = gantry.executors.slot() => slot,
        _ = cancel.cancelled() => return Ending::cancelled("cancelled while queued"),
    };
    let Some(_slot) = slot else {
        return Ending::failed("the executor pool is closed".into());
    };
    let others: Vec<_> = gantry
        .executors
        .running_of(&job.name)
        .into_iter()
        .filter(|(n, _)| *n != run.number && *n < run.number)
        .collect();
    match job.concurrency {
        Concurrency::Allow => {}
        Concurrency::Forbid if !others.is_empty() => {
            return Ending::cancelled(&format!(
                "skipped: run #{} is still going (concurrency = forbid)",
                others[0].0
            ))
        }
        Concurrency::Forbid => {}
        Concurrency::Replace => {
            for (_, token) in &others {
                token.cancel();
            }
        }
    }

    let path = super::files::log_path(gantry, &run.job, run.number);
    let artifacts = super::files::artifacts_dir(gantry, &run.job, run.number);
    let opened = std::fs::create_dir_all(&artifacts).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
    });
    let mut log = match opened {
        Ok(file) => file,
        Err(err) => {
            return Ending::failed(format!("cannot write the log {}: {err}", path.display()))
        }
    };
    if let Err(err) = gantry.store.start_run(&run.job, run.number).await {
        return Ending::failed(format!("cannot record the start: {err}"));
    }
    let _ = writeln!(
        log,
        "\x1b[1m-----> {} #{} ({} by {})\x1b[0m",
        run.job,
        run.number,
        run.trigger,
        if run.cause.is_empty() {
            "-"
        } else {
            &run.cause
        }
    );
    let timeout = job
        .timeout
        .unwrap_or(std::time::Duration::from_secs(24 * 3600));
    match &job.kind {
        JobKind::PruneRuns => prune_runs(gantry, &mut log).await,
        JobKind::Upkeep(name) => {
            let Some(work) = gantry.upkeep.iter().find(|u| u.name() == *name) else {
                return Ending::failed(format!("{name} is not a job this gantry does"));
            };
            match work.run(gantry, &mut log, &artifacts).await {
                Ok(()) => Ending::exited(0),
                Err(err) => Ending::failed(format!("{err:#}")),
            }
        }
        JobKind::AppUpkeep { doer, app } => {
            let Some(work) = gantry.app_upkeep.iter().find(|u| u.name() == *doer) else {
                return Ending::failed(format!("{doer} is not a job this gantry does"));
            };
            let work = work.run(gantry, app, &run.job, &mut log, &artifacts);
            match tokio::time::timeout(timeout, work).await {
                Ok(Ok(())) => Ending::exited(0),
                Ok(Err(err)) => Ending::failed(format!("{err:#}")),
                Err(_) => Ending::failed(format!("timed out after {}s", timeout.as_secs())),
            }
        }
        JobKind::Host {
            script, requires, ..
        } if !requires.is_empty() => {
            run_on_node(gantry, job, run, script, requires, log, timeout, cancel).await
        }
        JobKind::Host {
            script,
            image: Some(image),
            ..
        } => {
            run_in_container(
                gantry, job, run, script, image, log, &artifacts, timeout, cancel,
            )
            .await
        }
        JobKind::Host {
            script,
            image: None,
            ..
        } => run_script(gantry, job, run, script, log, &artifacts, timeout, cancel).await,
        JobKind::AppCron { app, command } => {
            let release = match gantry.store.current_release(app).await {
                Ok(Some(release)) => release,
                Ok(None) => {
                    return Ending::failed(format!("{app} has no live release to run it in"))
                }
                Err(err) => return Ending::failed(err.to_string()),
            };
            let env = match crate::config_vars::release_env(&release, &gantry.secrets) {
                Ok(mut env) => {
                    env.extend(container_env(run, []));
                    env.push(format!("DYNO=scheduler.{}", run.number));
                    env
                }
                Err(err) => return Ending::failed(format!("cannot run it: {err}")),
            };
            let mut task = Task::shell(app, release.version, &release.image, command, env);
            // Cron runs see the app's volumes, as its processes do.
            let stored = match gantry.store.get_app(app).await {
                Ok(Some(record)) => record.storage,
                Ok(None) => String::new(),
                Err(err) => return Ending::failed(err.to_string()),
            };
            task.mounts = match crate::runtime::mounts_of_app(&*gantry.runtime, app, &stored).await
            {
                Ok(mounts) => mounts,
                Err(err) => return Ending::failed(format!("cannot mount its storage: {err}")),
            };
            // A timeout or cancel drops the task, which removes its container.
            let runtime = gantry.runtime.clone();
            let task = async move {
                crate::runtime::run_to_end(&runtime, &task, &mut |line: &str| {
                    let _ = writeln!(log, "{line}");
                })
                .await
            };
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(timeout, task) => outcome,
                _ = cancel.cancelled() => return Ending::cancelled("cancelled"),
            };
            match outcome {
                Err(_) => Ending::timed_out(format!("timed out after {}s", timeout.as_secs())),
                Ok(Err(err)) => Ending::failed(format!("cannot run it: {err}")),
                Ok(Ok(code)) => Ending::exited(code),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_script(
    gantry: &Gantry,
    job: &JobDef,
    run: &Run,
    script: &std::path::Path,
    log: std::fs::File,
    artifacts: &std::path::Path,
    timeout: std::time::Duration,
    cancel: CancellationToken,
) -> Ending {
    let stderr = match log.try_clone() {
        Ok(file) => file,
        Err(err) => return Ending::failed(format!("cannot share the log: {err}")),
    };
    let mut command = tokio::process::Command::new(script);
    command
        .current_dir(artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .env("GANTRY_JOB", &run.job)
        .env("GANTRY_RUN", run.number.to_string())
        .env("GANTRY_PARENT_RUN", format!("{}#{}", run.job, run.number))
        .env("GANTRY_ARTIFACTS", artifacts)
        .env("GANTRY_HOME", &gantry.config.home)
        .env("PATH", path_with_gantry())
        .envs(&job.env)
        .process_group(0)
        .kill_on_drop(true);
    for line in run.params.lines() {
        if let Some((k, v)) = line.split_once('=') {
            command.env(k, v);
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Ending::failed(format!("cannot start {}: {err}", script.display())),
    };
    let pid = child.id();
    let kill_tree = || crate::signal::kill_group(pid);
    tokio::select! {
        status = child.wait() => match status {
            Ok(status) => match status.code() {
                Some(code) => Ending::exited(i64::from(code)),
                None => Ending::failed("killed by a signal".into()),
            },
            Err(err) => Ending::failed(format!("cannot wait for it: {err}")),
        },
        _ = tokio::time::sleep(timeout) => {
            kill_tree();
            let _ = child.wait().await;
            Ending::timed_out(format!("timed out after {}s; its process tree was killed", timeout.as_secs()))
        }
        _ = cancel.cancelled() => {
            kill_tree();
            let _ = child.wait().await;
            Ending::cancelled("cancelled")
        }
    }
}

/// Runs the script on a node labelled with all of `requires`, through the
/// cluster's work queue; the node's output is the run's log. Only a swarm
/// has nodes to ask.
#[allow(clippy::too_many_arguments)]
async fn run_on_node(
    gantry: &Gantry,
    job: &JobDef,
    run: &Run,
    script: &std::path::Path,
    requires: &crate::config::Requires,
    mut log: std::fs::File,
    timeout: std::time::Duration,
    cancel: CancellationToken,
) -> Ending {
    if gantry.runtime.services().is_none() {
        return Ending::failed(format!(
            "requires = [{requires}]: only a swarm (runtime = \"swarm\") has nodes to run it on"
        ));
    }
    let input = match std::fs::read(script) {
        Ok(bytes) => bytes,
        Err(err) => return Ending::failed(format!("cannot read {}: {err}", script.display())),
    };
    // The run's parameters win over the job's env, as on the manager.
    let mut env: Vec<(String, String)> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(run.param_pairs());
    let spec = crate::work::JobSpec {
        job: run.job.clone(),
        run: run.number,
        env,
        timeout_secs: timeout.as_secs(),
    };
    let spec = match serde_json::to_string(&spec) {
        Ok(spec) => spec,
        Err(err) => return Ending::failed(err.to_string()),
    };
    let title = format!("{}#{}", run.job, run.number);
    let mut on_line = |line: &str| {
        let _ = writeln!(log, "{line}");
    };
    let ended = crate::work::run(
        &gantry.store,
        "job",
        &title,
        requires,
        (&spec, &input),
        &cancel,
        &mut on_line,
    )
    .await;
    match ended {
        Err(err) => Ending::failed(format!("the work queue failed: {err}")),
        Ok(state) if state.state == "cancelled" => Ending::cancelled(&state.result),
        Ok(state) => match state.code {
            Some(code) => Ending::exited(code),
            None if state.result.starts_with(crate::work::TIMED_OUT) => {
                Ending::timed_out(state.result)
            }
            None => Ending::failed(state.result),
        },
    }
}

/// A container run's environment (`K=V`): the `GANTRY_*` variables, then
/// `settings`, then the run's parameters, which win.
fn container_env(run: &Run, settings: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut env = vec![
        format!("GANTRY_JOB={}", run.job),
        format!("GANTRY_RUN={}", run.number),
        format!("GANTRY_PARENT_RUN={}#{}", run.job, run.number),
    ];
    env.extend(settings);
    env.extend(
        run.params
            .lines()
            .filter(|l| l.contains('='))
            .map(str::to_owned),
    );
    env
}

/// `PATH` with gantry's own directory first, so a job can call `gantry jobs:run`.
fn path_with_gantry() -> std::ffi::OsString {
    let mut dirs: Vec<std::path::PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Applies run retention: keeps each job's newest `runs_keep` runs and every
/// run younger than `runs_keep_days`; the rest go, with logs and artifacts.
async fn prune_runs(gantry: &Gantry, log: &mut std::fs::File) -> Ending {
    let config = &gantry.config;
    let cutoff = crate::time::now_ms() - config.runs_keep_days * 24 * 3600 * 1000;
    let _ = writeln!(
        log,
        "keeping the newest {} runs of each job and every run younger than {} days",
        config.runs_keep, config.runs_keep_days
    );
    let doomed = match gantry.store.prune_runs(config.runs_keep, cutoff).await {
        Ok(doomed) => doomed,
        Err(err) => return Ending::failed(format!("cannot prune runs: {err}")),
    };
    for (job, number) in &doomed {
        let _ = std::fs::remove_file(super::files::log_path(gantry, job, *number));
        let _ = std::fs::remove_dir_all(super::files::artifacts_dir(gantry, job, *number));
        let _ = writeln!(log, "pruned {job}#{number}");
    }
    let _ = writeln!(log, "pruned {} run(s)", doomed.len());
    // The cluster's finished work items: their runs keep the logs.
    match gantry.store.prune_work(cutoff).await {
        Ok(0) => {}
        Ok(n) => {
            let _ = writeln!(
                log,
                "pruned {n} finished work item(s) of the cluster's queue"
            );
        }
        Err(err) => return Ending::failed(format!("cannot prune the work queue: {err}")),
    }
    Ending::exited(0)
}

/// Runs the script inside a container of `image`: the script mounted at
/// `/gantry/job`, the artifacts directory at `/artifacts`. A timeout or cancel
/// kills the container, and so everything in it.
#[allow(clippy::too_many_arguments)]
async fn run_in_container(
    gantry: &Gantry,
    job: &JobDef,
    run: &Run,
    script: &std::path::Path,
    image: &str,
    mut log: std::fs::File,
    artifacts: &std::path::Path,
    timeout: std::time::Duration,
    cancel: CancellationToken,
) -> Ending {
    let mut settings = vec!["GANTRY_ARTIFACTS=/artifacts".to_owned()];
    settings.extend(job.env.iter().map(|(k, v)| format!("{k}={v}")));
    let task = Task {
        owner: Owner::Job(format!("{}#{}", run.job, run.number)),
        image: image.to_owned(),
        command: Vec::new(),
        entrypoint: Some(vec!["/gantry/job".to_owned()]),
        env: container_env(run, settings),
        mounts: vec![
            Mount {
                host: script.to_path_buf(),
                path: "/gantry/job".into(),
                read_only: true,
            },
            Mount {
                host: artifacts.to_path_buf(),
                path: "/artifacts".into(),
                read_only: false,
            },
        ],
        working_dir: Some("/artifacts".to_owned()),
        interactive: None,
    };
    let container = match OneOff::create(&gantry.runtime, &task).await {
        Ok(container) => container,
        Err(err) => return Ending::failed(format!("cannot create a container of {image}: {err}")),
    };
    let mut write = |chunk: &[u8]| {
        let _ = log.write_all(chunk);
    };
    let outcome = container.run(&mut write);
    let ending = tokio::select! {
        outcome = tokio::time::timeout(timeout, outcome) => match outcome {
            Err(_) => Ending::timed_out(format!("timed out after {}s; its container was killed", timeout.as_secs())),
            Ok(Err(err)) => Ending::failed(format!("the container failed: {err}")),
            Ok(Ok(code)) => Ending::exited(code),
        },
        _ = cancel.cancelled() => Ending::cancelled("cancelled"),
    };
    container.remove().await;
    ending
}
