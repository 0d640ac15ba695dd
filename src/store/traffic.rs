//! Each app's traffic, rolled up per minute (see `traffic` for who writes it).

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
}

impl Store {
    /// Adds a sample to the app's minute (counts add up; replicas are the
    /// latest).
    pub async fn add_traffic(&self, app: &str, sample: &TrafficMinute) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT requests, errors, buckets FROM traffic_minutes WHERE app = $1 AND minute = $2",
        )
        .bind(app)
        .bind(sample.minute)
        .fetch_optional(&mut *tx)
        .await?;
        let (mut requests, mut errors, mut buckets) =
            (sample.requests, sample.errors, sample.buckets.clone());
        if let Some(row) = row {
            requests += row.try_get::<i64, _>("requests")?;
            errors += row.try_get::<i64, _>("errors")?;
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
            "INSERT INTO traffic_minutes (app, minute, requests, errors, buckets, replicas, memory) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (app, minute) DO UPDATE SET requests = excluded.requests, \
             errors = excluded.errors, buckets = excluded.buckets, replicas = excluded.replicas, \
             memory = excluded.memory",
        )
        .bind(app)
        .bind(sample.minute)
        .bind(requests)
        .bind(errors)
        .bind(json)
        .bind(sample.replicas)
        .bind(memory)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The app's minutes from `since` (unix minutes) on, oldest first.
    pub async fn traffic_since(&self, app: &str, since: i64) -> Result<Vec<TrafficMinute>> {
        let rows = sqlx::query(
            "SELECT minute, requests, errors, buckets, replicas, memory FROM traffic_minutes \
             WHERE app = $1 AND minute >= $2 ORDER BY minute",
        )
        .bind(app)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TrafficMinute {
                    minute: row.try_get("minute")?,
                    requests: row.try_get("requests")?,
                    errors: row.try_get("errors")?,
                    buckets: serde_json::from_str(&row.try_get::<String, _>("buckets")?)
                        .unwrap_or_default(),
                    replicas: row.try_get("replicas")?,
                    memory: serde_json::from_str(&row.try_get::<String, _>("memory")?)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Requests of every app in `minute` (unix minutes).
    pub async fn requests_in(&self, minute: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(requests), 0) AS n FROM traffic_minutes WHERE minute = $1",
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
