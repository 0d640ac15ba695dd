//! Runs whose work gantry does itself rather than through the runner: a
//! push's deploy (`APP/deploy`) and a release phase (`APP/release`). They are
//! recorded as they go, with the log written line by line, so `jobs:log -f`
//! and the run page follow a build live, like any other run.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use super::error::JobError;
use crate::context::Gantry;
use crate::store::RunStatus;

/// A run in the store plus its open log file; `jobs:cancel` cancels the
/// token it was queued with. Finish it with [`LiveRun::finish`];
/// one dropped unfinished stays `queued`/`running` until the next start marks it.
pub struct LiveRun {
    pub job: String,
    pub number: i64,
    log: std::fs::File,
}

impl LiveRun {
    /// Records a queued run of `job` and opens its log, headed as the runner's are.
    pub async fn queue(
        gantry: &Gantry,
        job: &str,
        trigger: &str,
        cause: &str,
        parent: &str,
        cancel: CancellationToken,
    ) -> Result<LiveRun, JobError> {
        let run = gantry
            .store
            .queue_run(job, trigger, cause, "", parent, None)
            .await?;
        let path = super::files::log_path(gantry, job, run.number);
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            });
        let log = match opened {
            Ok(file) => file,
            Err(source) => {
                let reason = format!("cannot write the log {}: {source}", path.display());
                let _ = gantry
                    .store
                    .finish_run(job, run.number, RunStatus::Failed, None, &reason)
                    .await;
                return Err(JobError::Log { path, source });
            }
        };
        gantry.executors.track(job, run.number, cancel);
        let mut live = LiveRun {
            job: job.to_owned(),
            number: run.number,
            log,
        };
        live.write(&format!(
            "\x1b[1m-----> {job} #{} ({trigger} by {})\x1b[0m\n",
            run.number,
            if cause.is_empty() { "-" } else { cause }
        ));
        Ok(live)
    }

    /// Marks it running.
    pub async fn start(&self, gantry: &Gantry) {
        if let Err(err) = gantry.store.start_run(&self.job, self.number).await {
            tracing::warn!(job = %self.job, run = self.number, error = %err, "cannot record the run's start");
        }
    }

    /// `JOB#N`, as children name their parent.
    pub fn reference(&self) -> String {
        format!("{}#{}", self.job, self.number)
    }

    /// Another handle on the log file, for output written elsewhere (a
    /// one-off's), if the system has one to give.
    pub fn log_file(&self) -> Option<std::fs::File> {
        self.log.try_clone().ok()
    }

    /// Appends to the log; a failed write only loses log text, never the work.
    pub fn write(&mut self, text: &str) {
        if let Err(err) = self.log.write_all(text.as_bytes()) {
            tracing::debug!(job = %self.job, run = self.number, error = %err, "cannot write the run's log");
        }
    }

    /// Records how it ended and forgets its cancel handle; a failure (or the
    /// first success after one) alerts the `notify` targets of gantry.toml,
    /// as any job's does.
    pub async fn finish(self, gantry: &Gantry, status: RunStatus, code: Option<i64>, reason: &str) {
        gantry.executors.untrack(&self.job, self.number);
        if let Err(err) = gantry
            .store
            .finish_run(&self.job, self.number, status, code, reason)
            .await
        {
            tracing::error!(job = %self.job, run = self.number, error = %err, "cannot record the run's end");
        }
        tracing::info!(job = %self.job, run = self.number, status = status.as_str(), "run finished");
        super::runner::alert_if_needed(gantry, &[], &self.job, self.number, status, reason).await;
    }
}

/// Records a release phase as a run of `APP/release` beside the pusher's
/// output: the child of the deploy run `parent` (`APP/deploy#N`) when a push
/// runs it, else its own (a config change or rollback that makes a release).
pub async fn release_phase(
    gantry: &Gantry,
    app: &crate::names::AppName,
    version: i64,
    parent: Option<&str>,
) -> Option<LiveRun> {
    let job = format!("{app}/release");
    let (trigger, parent) = match parent {
        Some(parent) => ("push", parent),
        None => ("release", ""),
    };
    let cause = format!("v{version}");
    // Not cancellable on its own: the deploy it belongs to is.
    let cancel = CancellationToken::new();
    match LiveRun::queue(gantry, &job, trigger, &cause, parent, cancel).await {
        Ok(run) => {
            run.start(gantry).await;
            Some(run)
        }
        Err(err) => {
            tracing::warn!(%app, error = %err, "cannot record the release phase in the job log");
            None
        }
    }
}

/// The job whose runs record an app's processes killed for memory.
pub fn oom_job(app: &crate::names::AppName) -> String {
    format!("{app}/oom")
}

/// Records that the kernel killed `dyno` (`web.1`) of `app` for memory, as a
/// failed run of `APP/oom` (caused by the dyno): it shows in the job log, in
/// `ps` and `logs`, and alerts as any failed run does.
pub async fn out_of_memory(
    gantry: &Gantry,
    app: &crate::names::AppName,
    dyno: &str,
    container: &str,
    limit: Option<&str>,
) {
    let job = oom_job(app);
    let limit_text = limit.map_or_else(|| "no limit set".to_owned(), |l| format!("limit {l}"));
    let reason = format!("{dyno} was killed: out of memory ({limit_text})");
    match LiveRun::queue(gantry, &job, "runtime", dyno, "", CancellationToken::new()).await {
        Ok(mut run) => {
            run.start(gantry).await;
            run.write(&format!(
                "{dyno} (container {container}) used more memory than it may ({limit_text}), and the kernel killed it.\n\
                 The runtime starts it again; if it keeps happening, raise the limit (resources:set {app} {} memory=SIZE) or make it use less.\n",
                dyno.split('.').next().unwrap_or(dyno)
            ));
            run.finish(gantry, RunStatus::Failed, None, &reason).await;
        }
        Err(err) => {
            tracing::error!(%app, %dyno, error = %err, "cannot record an out-of-memory kill")
        }
    }
}
