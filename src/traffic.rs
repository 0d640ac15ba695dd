//! Each app's traffic over time: every [`SAMPLE`], serve reads the proxy's
//! counters (which only grow, from the proxy's start) and each app's
//! running replicas, and adds what changed to the app's minute in the
//! store, where the metrics page reads the last hour and day. Minutes older
//! than [`KEEP_MINUTES`] go. On a swarm every node's edge samples its own
//! proxy (and the memory of the tasks on its engine) the same way, into
//! rows of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use gantry_proxy::traffic::AppTraffic;
use tokio_util::sync::CancellationToken;

use crate::names::AppName;
use crate::routing::Routing;
use crate::runtime::Runtime;
use crate::store::{Store, TrafficMinute};

/// How often serve samples.
pub const SAMPLE: Duration = Duration::from_secs(10);
/// Two days of minutes.
pub const KEEP_MINUTES: i64 = 2 * 24 * 60;

/// What changed between two readings of one app's counters; a counter that
/// went down means the proxy restarted, and the new reading is all new.
pub fn delta(before: Option<&AppTraffic>, now: &AppTraffic) -> AppTraffic {
    let Some(before) = before.filter(|b| b.count <= now.count) else {
        return now.clone();
    };
    let mut out = AppTraffic {
        app: now.app.clone(),
        count: now.count - before.count,
        seconds: (now.seconds - before.seconds).max(0.0),
        ..AppTraffic::default()
    };
    for (i, slot) in out.by_class.iter_mut().enumerate() {
        *slot = now.by_class[i].saturating_sub(before.by_class[i]);
    }
    for (i, slot) in out.buckets.iter_mut().enumerate() {
        *slot = now.buckets[i].saturating_sub(before.buckets[i]);
    }
    out.received = now.received.saturating_sub(before.received);
    out.sent = now.sent.saturating_sub(before.sent);
    out
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sample as the store keeps it.
pub fn minute_of(
    delta: &AppTraffic,
    minute: i64,
    replicas: usize,
    memory: BTreeMap<String, i64>,
) -> TrafficMinute {
    let mut buckets: Vec<i64> = delta.buckets.iter().map(|n| signed(*n)).collect();
    let within: u64 = delta.buckets.iter().sum();
    buckets.push(signed(delta.count.saturating_sub(within)));
    TrafficMinute {
        minute,
        requests: signed(delta.count),
        errors: signed(delta.by_class[4]),
        buckets,
        replicas: i64::try_from(replicas).unwrap_or(i64::MAX),
        memory,
        received: signed(delta.received),
        sent: signed(delta.sent),
    }
}

/// The `q` quantile (0..1) of a minute's durations, in milliseconds, by
/// linear interpolation inside the histogram bucket it falls in; `None`
/// without requests. Past the last bound it is that bound.
pub fn quantile_ms(buckets: &[i64], q: f64) -> Option<f64> {
    let bounds = gantry_proxy::traffic::BOUNDS;
    let total: i64 = buckets.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (i, count) in buckets.iter().enumerate() {
        let count = *count as f64;
        if count > 0.0 && seen + count >= rank {
            let Some(upper) = bounds.get(i) else {
                return Some(bounds[bounds.len() - 1] * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = ((rank - seen) / count).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        seen += count;
    }
    Some(bounds[bounds.len() - 1] * 1000.0)
}

/// Where a sampler learns how an app's processes run.
#[async_trait::async_trait]
pub trait Processes: Send + Sync {
    /// The app's replicas running, and each process's memory (`web.1` →
    /// bytes) that this sampler can read.
    async fn of(&self, app: &AppName) -> (usize, BTreeMap<String, i64>);
}

/// serve's view: the runtime's (every replica, and the memory of those
/// the runtime can read).
pub struct RuntimeProcesses(pub Arc<dyn Runtime>);

#[async_trait::async_trait]
impl Processes for RuntimeProcesses {
    async fn of(&self, app: &AppName) -> (usize, BTreeMap<String, i64>) {
        let running: Vec<_> = self
            .0
            .list(app)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.running)
            .collect();
        let mut memory = BTreeMap::new();
        for instance in &running {
            if let Ok(Some(bytes)) = self.0.memory(&instance.id).await {
                memory.insert(
                    format!("{}.{}", instance.process, instance.replica),
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                );
            }
        }
        (running.len(), memory)
    }
}

/// A swarm node's edge: no replicas of its own to count (serve counts the
/// swarm's), the memory of the tasks on its engine, if it has one.
pub struct NodeProcesses(pub Option<bollard::Docker>);

#[async_trait::async_trait]
impl Processes for NodeProcesses {
    async fn of(&self, app: &AppName) -> (usize, BTreeMap<String, i64>) {
        let Some(docker) = &self.0 else {
            return (0, BTreeMap::new());
        };
        let memory = crate::runtime::swarm::local_tasks_memory(docker, app)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(process, bytes)| (process, i64::try_from(bytes).unwrap_or(i64::MAX)))
            .collect();
        (0, memory)
    }
}

/// Samples `routing`'s proxy into the store as `source` (an installation's
/// [`crate::config::Config::manager_id`]: only it writes those rows), until
/// `shutdown`.
pub async fn sample_forever(
    store: &Store,
    routing: &Routing,
    source: &str,
    processes: &dyn Processes,
    shutdown: CancellationToken,
) {
    let mut last: HashMap<String, AppTraffic> = HashMap::new();
    let mut first = true;
    let mut pruned_hour = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(if first { Duration::ZERO } else { SAMPLE }) => {}
        }
        let Some(counts) = routing.traffic().await else {
            continue;
        };
        let minute = crate::time::now_ms() / 60_000;
        let apps = store.list_apps().await.unwrap_or_default();
        for app in apps {
            let now = counts
                .iter()
                .find(|c| c.app == app.name.as_str())
                .cloned()
                .unwrap_or_else(|| AppTraffic {
                    app: app.name.to_string(),
                    ..AppTraffic::default()
                });
            // The first reading is where counting starts here.
            let change = if first {
                AppTraffic {
                    app: now.app.clone(),
                    ..AppTraffic::default()
                }
            } else {
                delta(last.get(&now.app), &now)
            };
            let (replicas, memory) = processes.of(&app.name).await;
            let sample = minute_of(&change, minute, replicas, memory);
            if let Err(err) = store.add_traffic(app.name.as_str(), source, &sample).await {
                tracing::warn!(app = %app.name, error = %err, "cannot record the app's traffic");
            }
            last.insert(now.app.clone(), now);
        }
        first = false;
        // Old minutes go once an hour, not at every sample.
        if pruned_hour != Some(minute / 60) {
            pruned_hour = Some(minute / 60);
            if let Err(err) = store.prune_traffic(minute - KEEP_MINUTES).await {
                tracing::warn!(error = %err, "cannot prune old traffic");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(count: u64, five: u64, fast: u64) -> AppTraffic {
        let mut buckets = [0; 11];
        buckets[0] = fast;
        AppTraffic {
            app: "shop".into(),
            by_class: [0, count - five, 0, 0, five],
            buckets,
            count,
            seconds: count as f64 * 0.001,
            received: count * 100,
            sent: count * 1000,
        }
    }

    #[test]
    fn a_delta_is_what_grew_and_a_restart_starts_again() {
        let d = delta(Some(&reading(10, 1, 10)), &reading(25, 3, 24));
        assert_eq!((d.count, d.by_class[4], d.buckets[0]), (15, 2, 14));
        assert_eq!((d.received, d.sent), (1500, 15000));
        let restarted = delta(Some(&reading(25, 3, 24)), &reading(4, 0, 4));
        assert_eq!(restarted.count, 4);
        let m = minute_of(&d, 7, 2, Default::default());
        assert_eq!((m.requests, m.errors, m.replicas), (15, 2, 2));
        assert_eq!((m.received, m.sent), (1500, 15000));
        assert_eq!(m.buckets.len(), 12);
        assert_eq!(m.buckets[11], 1, "one took longer than the last bound");
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        // 90 requests under 5 ms, 10 between 0.25 s and 0.5 s.
        let mut buckets = vec![0i64; 12];
        buckets[0] = 90;
        buckets[6] = 10;
        let p50 = quantile_ms(&buckets, 0.5).expect("p50");
        assert!(p50 > 0.0 && p50 <= 5.0, "{p50}");
        let p95 = quantile_ms(&buckets, 0.95).expect("p95");
        assert!((250.0..=500.0).contains(&p95), "{p95}");
        assert_eq!(quantile_ms(&[0; 12], 0.5), None);
        let mut slow = vec![0i64; 12];
        slow[11] = 3;
        assert_eq!(quantile_ms(&slow, 0.5), Some(10_000.0));
    }
}
