//! A run's life: queued in the store (which numbers it), spawned onto an
//! executor slot, cancelled, started again after `serve` restarts; jobs that
//! run `after` it start when it succeeds.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::definition::JobDef;
use super::error::JobError;
use crate::context::leader::Fence;
use crate::context::Gantry;
use crate::store::{Run, RunStatus};

/// How a run came about.
pub struct Trigger<'a> {
    /// `manual`, `schedule`, `missed schedule`, `upstream`, `push`.
    pub kind: &'a str,
    pub cause: &'a str,
    pub params: Vec<(String, String)>,
    pub parent: &'a str,
    /// The scheduler's lead, which the store checks as it queues the run
    /// (a manager that lost the lead queues nothing); `None` for runs a
    /// person or another run asked for.
    pub fence: Option<Fence>,
}

/// Finds a job by name among the current definitions.
pub async fn find(gantry: &Gantry, name: &str) -> Result<JobDef, JobError> {
    super::definition::all(gantry)
        .await
        .into_iter()
        .find(|job| job.name == name)
        .ok_or_else(|| JobError::Unknown(name.to_owned()))
}

/// Queues a run of `job` and starts it when an executor slot is free.
pub async fn trigger(gantry: &Gantry, job: JobDef, trigger: Trigger<'_>) -> Result<Run, JobError> {
    let Some(gantry) = gantry.serving() else {
        return Err(JobError::NotServing);
    };
    let params = trigger
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let fenced = match &trigger.fence {
        Some(Fence::Elected { holder, term }) => Some(crate::store::Fenced {
            election: crate::context::leader::ELECTION,
            holder,
            term: *term,
        }),
        Some(Fence::Sole) | None => None,
    };
    let run = gantry
        .store
        .queue_run(
            &job.name,
            trigger.kind,
            trigger.cause,
            &params,
            trigger.parent,
            fenced,
        )
        .await?;
    tracing::info!(job = %job.name, run = run.number, trigger = trigger.kind, "run queued");
    spawn(gantry.clone(), job, run.clone());
    Ok(run)
}

fn spawn(gantry: Arc<Gantry>, job: JobDef, run: Run) {
    let cancel = CancellationToken::new();
    gantry.executors.track(&run.job, run.number, cancel.clone());
    tokio::spawn(async move {
        let key = (run.job.clone(), run.number);
        // A panic in a run must not leave it `running` forever.
        let task = {
            let (gantry, job, run) = (gantry.clone(), job.clone(), run.clone());
            tokio::spawn(async move { super::runner::execute(&gantry, &job, &run, cancel).await })
        };
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(job = %run.job, run = run.number, error = %err, "a run crashed");
                let reason = format!("gantry crashed running it: {err}");
                let _ = gantry
                    .store
                    .finish_run(&run.job, run.number, RunStatus::Failed, None, &reason)
                    .await;
                RunStatus::Failed
            }
        };
        gantry.executors.untrack(&key.0, key.1);
        if outcome == RunStatus::Succeeded {
            start_downstream(&gantry, &job.name, run.number).await;
        }
    });
}

/// Starts the jobs that run `after` this one, now that it succeeded.
async fn start_downstream(gantry: &Gantry, job: &str, number: i64) {
    let cause = format!("{job}#{number}");
    for next in super::definition::all(gantry).await {
        if next.after.iter().any(|a| a == job) {
            let trigger = Trigger {
                kind: "upstream",
                cause: &cause,
                params: Vec::new(),
                parent: "",
                fence: None,
            };
            if let Err(err) = self::trigger(gantry, next, trigger).await {
                tracing::warn!(job = %job, error = %err, "cannot start a downstream job");
            }
        }
    }
}

/// Cancels a queued or running run.
pub async fn cancel(gantry: &Gantry, job: &str, number: i64) -> Result<Run, JobError> {
    let run = gantry
        .store
        .run(job, number)
        .await?
        .ok_or_else(|| JobError::NoRun(job.to_owned(), number))?;
    if run.status.is_finished() {
        return Ok(run);
    }
    let token = gantry.executors.cancel_token(job, number);
    if token.is_none() && !run.runner.is_empty() && run.runner != gantry.store.runner() {
        return Err(JobError::Elsewhere(
            format!("{job}#{number}"),
            run.runner.clone(),
        ));
    }
    match token {
        Some(token) => token.cancel(),
        // Queued by a gantry that stopped, and not picked up: nothing runs it.
        None => {
            gantry
                .store
                .finish_run(job, number, RunStatus::Cancelled, None, "cancelled")
                .await?
        }
    }
    Ok(run)
}

/// Picks up after a restart: runs left running are interrupted; queued runs
/// of jobs that still exist go on.
pub async fn resume(gantry: &Arc<Gantry>) {
    let interrupted = match gantry.store.interrupt_running_runs().await {
        Ok(runs) => runs,
        Err(err) => {
            tracing::warn!(error = %err, "cannot mark interrupted runs");
            Vec::new()
        }
    };
    // Read before the retries below queue runs of their own.
    let queued = gantry.store.queued_runs().await.unwrap_or_default();
    let defs = super::definition::all(gantry).await;
    for run in &interrupted {
        tracing::warn!(job = %run.job, run = run.number, "run interrupted by gantry stopping");
        let Some(def) = defs
            .iter()
            .find(|d| d.name == run.job && d.retry_interrupted)
        else {
            continue;
        };
        let cause = format!("{}#{}", run.job, run.number);
        let retry = Trigger {
            kind: "retry",
            cause: &cause,
            params: run.param_pairs(),
            parent: &run.parent,
            fence: None,
        };
        if let Err(err) = trigger(gantry, def.clone(), retry).await {
            tracing::warn!(job = %run.job, error = %err, "cannot retry an interrupted run");
        }
    }

    for run in queued {
        // A push queued since this start is waiting in its own hook.
        if gantry.executors.is_tracked(&run.job, run.number) {
            continue;
        }
        match defs.iter().find(|d| d.name == run.job) {
            Some(def) => spawn(gantry.clone(), def.clone(), run),
            None if run.trigger == "push" => {
                let _ = gantry
                    .store
                    .finish_run(
                        &run.job,
                        run.number,
                        RunStatus::Interrupted,
                        None,
                        "interrupted: gantry stopped while this push waited; push again",
                    )
                    .await;
            }
            None => {
                let _ = gantry
                    .store
                    .finish_run(
                        &run.job,
                        run.number,
                        RunStatus::Cancelled,
                        None,
                        "the job no longer exists",
                    )
                    .await;
            }
        }
    }
}
