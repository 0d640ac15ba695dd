//! Each app's traffic, rolled up per minute (see `traffic` for who writes
//! it): a row per app, minute and source (each proxy that counts writes only
//! its own rows), added up when read.

use sqlx::Row;

use super::db::{Result, Store};

/// One app's minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficMinute {
    /// Unix minutes.
    pub minute: i64,
    pub requests: i64,
    /// Responses with a 5xx status.
    pub errors: i64,
    /// Requests per histogram bound, then over the last one.
    pub buckets: Vec<i64>,
    /// Replicas running when it was last sampled.
    pub replicas: i64,
    /// Bytes each running process (`web.1`) used when last sampled.
    pub memory: std::collections::BTreeMap<String, i64>,
    /// Bytes received from clients, and sent to them.
    pub received: i64,
    pub sent: i64,
}

impl TrafficMinute {
    /// Adds another source's row of the same minute: counts add up, the
    /// replicas are the most any source saw, the processes' memory is
    /// every source's.
    fn merge(&mut self, other: TrafficMinute) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.received += other.received;
        self.sent += other.sent;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (b, o) in self.buckets.iter_mut().zip(other.buckets) {
            *b += o;
        }
        self.replicas = self.replicas.max(other.replicas);
        self.memory.extend(other.memory);
    }
}

impl Store {
    /// Adds a sample from `source` to the app's minute (counts add up;
    /// replicas and memory are the latest). Only `source` writes its rows.
    pub async fn add_traffic(&self, app: &str, source: &str, sample: &TrafficMinute) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT requests, errors, buckets, received, sent FROM traffic_minutes \
             WHERE app = $1 AND minute = $2 AND source = $3",
        )
        .bind(app)
        .bind(sample.minute)
        .bind(source)
        .fetch_optional(&mut *tx)
        .await?;
        let (mut requests, mut errors, mut buckets) =
            (sample.requests, sample.errors, sample.buckets.clone());
        let (mut received, mut sent) = (sample.received, sample.sent);
        if let Some(row) = row {
            requests += row.try_get::<i64, _>("requests")?;
            errors += row.try_get::<i64, _>("errors")?;
            received += row.try_get::<i64, _>("received")?;
            sent += row.try_get::<i64, _>("sent")?;
            let stored: Vec<i64> =
                serde_json::from_str(&row.try_get::<String, _>("buckets")?).unwrap_or_default();
            if buckets.len() < stored.len() {
                buckets.resize(stored.len(), 0);
            }
            for (b, s) in buckets.iter_mut().zip(stored) {
                *b += s;
            }
        }
        let json = serde_json::to_string(&buckets).unwrap_or_else(|_| "[]".into());
        let memory = serde_json::to_string(&sample.memory).unwrap_or_else(|_| "{}".into());
        sqlx::query(
            "INSERT INTO traffic_minutes \
             (app, minute, source, requests, errors, buckets, replicas, memory, received, sent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (app, minute, source) DO UPDATE SET requests = excluded.requests, \
             errors = excluded.errors, buckets = excluded.buckets, replicas = excluded.replicas, \
             memory = excluded.memory, received = excluded.received, sent = excluded.sent",
        )
        .bind(app)
        .bind(sample.minute)
        .bind(source)
        .bind(requests)
        .bind(errors)
        .bind(json)
        .bind(sample.replicas)
        .bind(memory)
        .bind(received)
        .bind(sent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The app's minutes from `since` (unix minutes) on, oldest first,
    /// every source's rows added up.
    pub async fn traffic_since(&self, app: &str, since: i64) -> Result<Vec<TrafficMinute>> {
        let rows = sqlx::query(
            "SELECT minute, requests, errors, buckets, replicas, memory, received, sent \
             FROM traffic_minutes WHERE app = $1 AND minute >= $2 ORDER BY minute, source",
        )
        .bind(app)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut minutes: Vec<TrafficMinute> = Vec::new();
        for row in &rows {
            let minute = TrafficMinute {
                minute: row.try_get("minute")?,
                requests: row.try_get("requests")?,
                errors: row.try_get("errors")?,
                buckets: serde_json::from_str(&row.try_get::<String, _>("buckets")?)
                    .unwrap_or_default(),
                replicas: row.try_get("replicas")?,
                memory: serde_json::from_str(&row.try_get::<String, _>("memory")?)
                    .unwrap_or_default(),
                received: row.try_get("received")?,
                sent: row.try_get("sent")?,
            };
            match minutes.last_mut() {
                Some(last) if last.minute == minute.minute => last.merge(minute),
                _ => minutes.push(minute),
            }
        }
        Ok(minutes)
    }

    /// Requests of every app in `minute` (unix minutes).
    pub async fn requests_in(&self, minute: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM traffic_minutes \
             WHERE minute = $1",
        )
        .bind(minute)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Drops every app's minutes before `before` (unix minutes).
    pub async fn prune_traffic(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM traffic_minutes WHERE minute < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
