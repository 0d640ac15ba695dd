//! The job log's rows: runs of jobs, numbered per job.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::db::{next_number, Result, Store, StoreError};
use super::work::Fenced;
use crate::time::now_ms;

/// Where a run stands. `Queued` and `Running` are the live states; a run left
/// in either by a gantry that stopped becomes `Interrupted` on the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed out",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> RunStatus {
        match text {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "cancelled" => RunStatus::Cancelled,
            "timed out" => RunStatus::TimedOut,
            "interrupted" => RunStatus::Interrupted,
            _ => RunStatus::Failed,
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job: String,
    pub number: i64,
    /// `manual`, `push`, `schedule`, `upstream`, `missed schedule`.
    pub trigger: String,
    /// Who or what caused it: a key name, `JOB#N` of the upstream run, a schedule.
    pub cause: String,
    /// `K=V` parameters, one per line.
    pub params: String,
    pub status: RunStatus,
    pub queued_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: Option<i64>,
    /// Why it failed, in one line; empty otherwise.
    pub reason: String,
    /// `JOB#N` of the run that started this one with `jobs:run`, if any.
    pub parent: String,
    /// The manager that runs it (`HOST:HOME`); empty on one machine.
    pub runner: String,
}

impl Run {
    /// The parameters as `(K, V)` pairs, to start another run with them.
    pub fn param_pairs(&self) -> Vec<(String, String)> {
        self.params
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Aggregates of one job's runs in one status.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub job: String,
    pub status: String,
    pub count: i64,
    /// Of those, how many have both a start and an end.
    pub finished: i64,
    pub duration_ms: i64,
}

const RUN_COLUMNS: &str = "SELECT job, number, trigger_kind, cause, params, status, queued_at, \
     started_at, finished_at, exit_code, reason, parent, runner FROM runs";

fn run_from_row(row: &AnyRow) -> Result<Run> {
    Ok(Run {
        job: row.try_get("job")?,
        number: row.try_get("number")?,
        trigger: row.try_get("trigger_kind")?,
        cause: row.try_get("cause")?,
        params: row.try_get("params")?,
        status: RunStatus::parse(&row.try_get::<String, _>("status")?),
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        exit_code: row.try_get("exit_code")?,
        reason: row.try_get("reason")?,
        parent: row.try_get("parent")?,
        runner: row.try_get("runner")?,
    })
}

impl Store {
    /// Records a new queued run of `job`, numbered after its last; returns it.
    pub async fn queue_run(
        &self,
        job: &str,
        trigger: &str,
        cause: &str,
        params: &str,
        parent: &str,
        fence: Option<Fenced<'_>>,
    ) -> Result<Run> {
        let queued_at = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = fence {
            // Held (FOR SHARE) until the run is in: a new leader's election
            // waits for it, and a former leader's run is never queued.
            let sql = format!(
                "SELECT 1 AS yes FROM leaders WHERE name = $1 AND holder = $2 AND term = $3 \
                 AND lease_until > {} FOR SHARE",
                super::work::NOW_MS
            );
            let held = sqlx::query(&sql)
                .bind(fence.election)
                .bind(fence.holder)
                .bind(fence.term)
                .fetch_optional(&mut *tx)
                .await?;
            if held.is_none() {
                return Err(StoreError::Conflict(format!(
                    "not queued: this manager no longer leads ({} term {})",
                    fence.election, fence.term
                )));
            }
        }
        let number = next_number(&mut tx, &format!("run:{job}")).await?;
        sqlx::query(
            "INSERT INTO runs (job, number, trigger_kind, cause, params, status, queued_at, parent, runner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job)
        .bind(number)
        .bind(trigger)
        .bind(cause)
        .bind(params)
        .bind(RunStatus::Queued.as_str())
        .bind(queued_at)
        .bind(parent)
        .bind(&*self.runner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Run {
            job: job.to_owned(),
            number,
            trigger: trigger.to_owned(),
            cause: cause.to_owned(),
            params: params.to_owned(),
            status: RunStatus::Queued,
            queued_at,
            started_at: 0,
            finished_at: 0,
            exit_code: None,
            reason: String::new(),
            parent: parent.to_owned(),
            runner: self.runner.to_string(),
        })
    }

    pub async fn start_run(&self, job: &str, number: i64) -> Result<i64> {
        let at = now_ms();
        sqlx::query("UPDATE runs SET status = $1, started_at = $2 WHERE job = $3 AND number = $4")
            .bind(RunStatus::Running.as_str())
            .bind(at)
            .bind(job)
            .bind(number)
            .execute(&self.pool)
            .await?;
        Ok(at)
    }

    pub async fn finish_run(
        &self,
        job: &str,
        number: i64,
        status: RunStatus,
        exit_code: Option<i64>,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET status = $1, finished_at = $2, exit_code = $3, reason = $4 \
             WHERE job = $5 AND number = $6",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(exit_code)
        .bind(reason)
        .bind(job)
        .bind(number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn run(&self, job: &str, number: i64) -> Result<Option<Run>> {
        let row = sqlx::query(&format!("{RUN_COLUMNS} WHERE job = $1 AND number = $2"))
            .bind(job)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The job's runs, newest first, at most `limit`.
    pub async fn list_runs(&self, job: &str, limit: i64) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE job = $1 ORDER BY number DESC LIMIT $2"
        ))
        .bind(job)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Every job's latest run (for `jobs`).
    pub async fn latest_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} r WHERE number = (SELECT MAX(number) FROM runs WHERE job = r.job) ORDER BY job"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// This manager's runs still queued (oldest first): after a restart
    /// they go on.
    pub async fn queued_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE status = $1 AND runner IN ($2, '') ORDER BY queued_at, number"
        ))
        .bind(RunStatus::Queued.as_str())
        .bind(&*self.runner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Marks runs this manager left running when it stopped as interrupted,
    /// and returns them (another manager's runs are its own).
    pub async fn interrupt_running_runs(&self) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE status = $1 AND runner IN ($2, '')"
        ))
        .bind(RunStatus::Running.as_str())
        .bind(&*self.runner)
        .fetch_all(&self.pool)
        .await?;
        let runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        self.mark_interrupted().await?;
        Ok(runs)
    }

    async fn mark_interrupted(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = $1, finished_at = $2, reason = $3 \
             WHERE status = $4 AND runner IN ($5, '')",
        )
        .bind(RunStatus::Interrupted.as_str())
        .bind(now_ms())
        .bind("interrupted: gantry stopped during this run")
        .bind(RunStatus::Running.as_str())
        .bind(&*self.runner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Runs started by `parent` (`JOB#N`) with `jobs:run` from inside it.
    pub async fn child_runs(&self, parent: &str) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE parent = $1 ORDER BY queued_at"
        ))
        .bind(parent)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Counts and total run time by job and status, for the metrics: the
    /// runs on record plus those retention pruned.
    pub async fn run_stats(&self) -> Result<Vec<RunStats>> {
        let live = sqlx::query(
            "SELECT job, status, COUNT(*) AS n, CAST(SUM(CASE WHEN started_at > 0 AND finished_at > 0 THEN 1 ELSE 0 END) AS BIGINT) AS finished, CAST(SUM(CASE WHEN started_at > 0 AND finished_at > 0 THEN finished_at - started_at ELSE 0 END) AS BIGINT) AS ms FROM runs GROUP BY job, status",
        )
        .fetch_all(&self.pool)
        .await?;
        let pruned =
            sqlx::query("SELECT job, status, count AS n, finished, ms FROM pruned_run_totals")
                .fetch_all(&self.pool)
                .await?;
        let mut totals: std::collections::BTreeMap<(String, String), RunStats> = Default::default();
        for row in live.iter().chain(&pruned) {
            let job: String = row.try_get("job")?;
            let status: String = row.try_get("status")?;
            let entry = totals
                .entry((job.clone(), status.clone()))
                .or_insert_with(|| RunStats {
                    job,
                    status,
                    count: 0,
                    finished: 0,
                    duration_ms: 0,
                });
            entry.count += row.try_get::<i64, _>("n")?;
            entry.finished += row.try_get::<Option<i64>, _>("finished")?.unwrap_or(0);
            entry.duration_ms += row.try_get::<Option<i64>, _>("ms")?.unwrap_or(0);
        }
        Ok(totals.into_values().collect())
    }

    /// Releases by kind and status, for the metrics.
    pub async fn release_stats(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n FROM releases GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("kind")?,
                    row.try_get("status")?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Deletes finished runs beyond the newest `keep` of their job that were
    /// queued before `older_than` (ms); returns `(job, number)` of each.
    pub async fn prune_runs(&self, keep: i64, older_than: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT job, number FROM runs r WHERE status NOT IN ('queued', 'running') AND queued_at < $1 AND number <= (SELECT MAX(number) FROM runs WHERE job = r.job) - $2 ORDER BY job, number",
        )
        .bind(older_than)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?;
        let doomed: Vec<(String, i64)> = rows
            .iter()
            .map(|row| Ok((row.try_get("job")?, row.try_get("number")?)))
            .collect::<Result<_>>()?;
        let mut tx = self.pool.begin().await?;
        for (job, number) in &doomed {
            // The metrics' totals keep what the deleted run counted for.
            sqlx::query(
                "INSERT INTO pruned_run_totals (job, status, count, finished, ms) \
                 SELECT job, status, 1, \
                   CASE WHEN started_at > 0 AND finished_at > 0 THEN 1 ELSE 0 END, \
                   CASE WHEN started_at > 0 AND finished_at > 0 THEN finished_at - started_at ELSE 0 END \
                 FROM runs WHERE job = $1 AND number = $2 \
                 ON CONFLICT (job, status) DO UPDATE SET count = pruned_run_totals.count + excluded.count, \
                   finished = pruned_run_totals.finished + excluded.finished, ms = pruned_run_totals.ms + excluded.ms",
            )
            .bind(job)
            .bind(number)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM runs WHERE job = $1 AND number = $2")
                .bind(job)
                .bind(number)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(doomed)
    }

    /// When the job's last successful run finished (for overdue critical jobs).
    pub async fn last_success_at(&self, job: &str) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT MAX(finished_at) AS at FROM runs WHERE job = $1 AND status = $2")
                .bind(job)
                .bind(RunStatus::Succeeded.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get::<Option<i64>, _>("at")?)
    }

    /// When the job's last scheduled run was queued (for missed schedules).
    pub async fn last_scheduled_at(&self, job: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(queued_at) AS at FROM runs WHERE job = $1 \
             AND trigger_kind IN ('schedule', 'missed schedule')",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("at")?)
    }
}
