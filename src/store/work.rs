//! The cluster's work queue, its nodes' labels and its singletons' leases,
//! in Postgres (a swarm's store). Times are the database's clock, so the
//! machines never compare their own.
//!
//! Every write a worker makes names the fence it was given when it claimed
//! the item; a claim after a lease ran out raises the fence, so a worker
//! that was cut off (or only slow) can no longer log, renew or finish what
//! another took over.

use std::time::Duration;

use sqlx::Row;

use super::db::{Result, Store, StoreError};

/// The database's clock, in unix milliseconds.
pub(super) const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A leader's term, for a write the store makes only while it holds.
#[derive(Debug, Clone, Copy)]
pub struct Fenced<'a> {
    pub election: &'a str,
    pub holder: &'a str,
    pub term: i64,
}

/// An item a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: i64,
    /// Names this claim in every write the worker makes.
    pub fence: i64,
    pub kind: String,
    pub title: String,
    pub spec: String,
    pub input: Vec<u8>,
    /// The worker that held it before (its lease ran out); empty on a
    /// first claim.
    pub taken_from: String,
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkState {
    /// `queued`, `running`, `done` or `cancelled`.
    pub state: String,
    pub worker: String,
    pub fence: i64,
    pub code: Option<i64>,
    /// The worker's result (done) or the reason it failed or stopped.
    pub result: String,
    pub cancel_asked: bool,
}

impl WorkState {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "done" | "cancelled")
    }
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours.
    Held,
    /// Still ours, and someone asked to stop.
    CancelAsked,
    /// Another worker has it (or it ended): stop, write nothing more.
    Lost,
}

/// A node as serve last read it from Swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLabels {
    pub id: String,
    pub hostname: String,
    /// `K=V`, sorted.
    pub labels: Vec<String>,
}

fn lines(items: &[String]) -> String {
    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
    items.sort_unstable();
    items.dedup();
    items.join("\n")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    fn needs_postgres(&self, what: &str) -> Result<()> {
        if self.postgres {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{what} needs the cluster's PostgreSQL store"
            )))
        }
    }

    /// Queues work for a node whose labels include all of `requires`.
    pub async fn enqueue_work(
        &self,
        kind: &str,
        title: &str,
        requires: &[String],
        spec: &str,
        input: &[u8],
    ) -> Result<i64> {
        self.needs_postgres("the work queue")?;
        let row = sqlx::query(
            "INSERT INTO work (kind, title, requires, spec, input, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
        )
        .bind(kind)
        .bind(title)
        .bind(lines(requires))
        .bind(spec)
        .bind(input.to_vec())
        .bind(crate::time::now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Claims the oldest item this worker may run: queued, or running on a
    /// lease that ran out, and asking only for labels in `labels`. Two
    /// workers never claim the same item at once (`SKIP LOCKED`).
    pub async fn claim_work(
        &self,
        worker: &str,
        labels: &[String],
        lease: Duration,
    ) -> Result<Option<Claim>> {
        self.needs_postgres("the work queue")?;
        let sql = format!(
            "WITH pick AS ( \
               SELECT id, worker AS was FROM work \
               WHERE (state = 'queued' OR (state = 'running' AND lease_until < {NOW_MS})) \
                 AND NOT cancel_asked \
                 AND string_to_array(requires, E'\\n') <@ string_to_array($2, E'\\n') \
               ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE work w SET state = 'running', worker = $1, fence = w.fence + 1, \
               lease_until = {NOW_MS} + $3 \
             FROM pick WHERE w.id = pick.id \
             RETURNING w.id, w.fence, w.kind, w.title, w.spec, w.input, pick.was"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(lines(labels))
            .bind(millis(lease))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Claim {
                id: row.try_get("id")?,
                fence: row.try_get("fence")?,
                kind: row.try_get("kind")?,
                title: row.try_get("title")?,
                spec: row.try_get("spec")?,
                input: row.try_get("input")?,
                taken_from: row.try_get("was")?,
            })
        })
        .transpose()
    }

    /// Renews a claim's lease, if it is still the claim's.
    pub async fn renew_work(&self, id: i64, fence: i64, lease: Duration) -> Result<Renewal> {
        let sql = format!(
            "UPDATE work SET lease_until = {NOW_MS} + $3 \
             WHERE id = $1 AND fence = $2 AND state = 'running' RETURNING cancel_asked"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(fence)
            .bind(millis(lease))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => Renewal::Lost,
            Some(row) if row.try_get::<bool, _>("cancel_asked")? => Renewal::CancelAsked,
            Some(_) => Renewal::Held,
        })
    }

    /// Appends to an item's log, if the claim still holds it; returns
    /// whether it did.
    pub async fn log_work(&self, id: i64, fence: i64, text: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO work_log (work_id, text) SELECT $1, $3 \
             WHERE EXISTS (SELECT 1 FROM work WHERE id = $1 AND fence = $2 AND state = 'running')",
        )
        .bind(id)
        .bind(fence)
        .bind(text)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a claim (`done`, or `cancelled` when asked to stop): the exit
    /// code and result, if the claim still holds it; the input is dropped.
    pub async fn finish_work(
        &self,
        id: i64,
        fence: i64,
        state: &str,
        code: Option<i64>,
        result: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE work SET state = $3, code = $4, result = $5, finished_at = $6, input = $7 \
             WHERE id = $1 AND fence = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(fence)
        .bind(state)
        .bind(code)
        .bind(result)
        .bind(crate::time::now_ms())
        .bind(Vec::<u8>::new())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks an item to stop: a queued one is cancelled at once; a running
    /// one's worker sees the request when it next renews.
    pub async fn cancel_work(&self, id: i64, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE work SET cancel_asked = TRUE, \
               result = CASE WHEN state = 'queued' THEN $2 ELSE result END, \
               finished_at = CASE WHEN state = 'queued' THEN $3 ELSE finished_at END, \
               state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(reason)
        .bind(crate::time::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a running item whose worker is gone after it was asked to
    /// stop: nobody else will claim it, and nobody is left to finish it.
    pub async fn abandon_work(&self, id: i64, reason: &str) -> Result<bool> {
        let sql = format!(
            "UPDATE work SET state = 'cancelled', result = $2, finished_at = $3, input = $4 \
             WHERE id = $1 AND state = 'running' AND lease_until < {NOW_MS}"
        );
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(reason)
            .bind(crate::time::now_ms())
            .bind(Vec::<u8>::new())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn work_state(&self, id: i64) -> Result<WorkState> {
        let row = sqlx::query(
            "SELECT state, worker, fence, code, result, cancel_asked FROM work WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("work item {id}")))?;
        Ok(WorkState {
            state: row.try_get("state")?,
            worker: row.try_get("worker")?,
            fence: row.try_get("fence")?,
            code: row.try_get("code")?,
            result: row.try_get("result")?,
            cancel_asked: row.try_get("cancel_asked")?,
        })
    }

    /// The item's log after `after` (a sequence number; 0 for all): each
    /// piece with its sequence number, in order.
    pub async fn work_log_since(&self, id: i64, after: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT seq, text FROM work_log WHERE work_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, row.try_get("text")?)))
            .collect()
    }

    /// Drops finished items that ended before `cutoff_ms`, with their logs
    /// (their runs keep logs of their own); returns how many went.
    pub async fn prune_work(&self, cutoff_ms: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM work WHERE state IN ('done', 'cancelled') AND finished_at < $1",
        )
        .bind(cutoff_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Replaces the published nodes with `nodes`.
    pub async fn publish_nodes(&self, nodes: &[NodeLabels]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = crate::time::now_ms();
        for node in nodes {
            sqlx::query(
                "INSERT INTO cluster_nodes (id, hostname, labels, seen_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
                 labels = excluded.labels, seen_at = excluded.seen_at",
            )
            .bind(&node.id)
            .bind(&node.hostname)
            .bind(lines(&node.labels))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM cluster_nodes WHERE seen_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A node as last published, if it was.
    pub async fn node_labels(&self, id: &str) -> Result<Option<NodeLabels>> {
        let row = sqlx::query("SELECT id, hostname, labels FROM cluster_nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let labels: String = row.try_get("labels")?;
            Ok(NodeLabels {
                id: row.try_get("id")?,
                hostname: row.try_get("hostname")?,
                labels: labels
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .transpose()
    }

    /// The hostnames of the published nodes whose labels include all of
    /// `requires`.
    pub async fn nodes_with(&self, requires: &[String]) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT hostname FROM cluster_nodes \
             WHERE string_to_array($1, E'\\n') <@ string_to_array(labels, E'\\n') ORDER BY hostname",
        )
        .bind(lines(requires))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("hostname")?))
            .collect()
    }

    /// Takes or keeps the lease of singleton `name` for `holder`: the term
    /// it holds (a new, higher one when it takes over), or `None` while
    /// another holder's lease runs.
    pub async fn lead(&self, name: &str, holder: &str, lease: Duration) -> Result<Option<i64>> {
        self.needs_postgres("leader election")?;
        let sql = format!(
            "INSERT INTO leaders (name, holder, term, lease_until) VALUES ($1, $2, 1, {NOW_MS} + $3) \
             ON CONFLICT (name) DO UPDATE SET \
               term = CASE WHEN leaders.holder = excluded.holder THEN leaders.term ELSE leaders.term + 1 END, \
               holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE leaders.holder = excluded.holder OR leaders.lease_until < {NOW_MS} \
             RETURNING term"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(millis(lease))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get("term")?)).transpose()
    }

    /// Whether `holder` still leads `name` in `term` (its lease unexpired).
    pub async fn leads(&self, name: &str, holder: &str, term: i64) -> Result<bool> {
        let sql = format!(
            "SELECT 1 AS yes FROM leaders \
             WHERE name = $1 AND holder = $2 AND term = $3 AND lease_until > {NOW_MS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(term)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Gives up the lease of `name`, so another manager takes over at once.
    pub async fn resign(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leaders SET lease_until = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
