//! Each app's traffic as the proxy answered it: requests by status class,
//! a histogram of how long they took, and the bytes that came in and went
//! out, counted since the proxy started (Prometheus counters: a restart
//! starts them again from zero), and read by `serve` over the control socket.
//!
//! Bytes are HTTP's: heads and bodies as the client's connection carried
//! them after TLS (an HTTP/2 head counts as its HTTP/1.1 form, before header
//! compression), tunnels (WebSocket) included.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The histogram's upper bounds, in seconds (Prometheus' defaults).
pub const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One app's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppTraffic {
    /// The route's name: the app.
    pub app: String,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    /// Requests that took at most each of [`BOUNDS`] (not cumulative).
    pub buckets: [u64; 11],
    /// All requests, and their seconds in all.
    pub count: u64,
    pub seconds: f64,
    /// Bytes received from clients, and sent to them.
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub sent: u64,
}

impl AppTraffic {
    fn record(&mut self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class] += 1;
        let secs = took.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|bound| secs <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.seconds += secs;
    }
}

/// The counts of every app, behind one short lock.
#[derive(Debug, Default)]
pub struct Traffic {
    apps: Mutex<HashMap<String, AppTraffic>>,
}

impl Traffic {
    /// Counts one answered request of `app` (status 0: none was sent) and
    /// the bytes it moved so far.
    pub fn record(&self, app: &str, status: u16, took: Duration, moved: Moved) {
        self.with(app, |counts| {
            if status != 0 {
                counts.record(status, took);
            }
            counts.received += moved.received;
            counts.sent += moved.sent;
        });
    }

    /// Counts bytes of `app`'s requests that moved after they were counted
    /// (bodies streamed after the response's head).
    pub fn add_bytes(&self, app: &str, moved: Moved) {
        if moved != Moved::default() {
            self.with(app, |counts| {
                counts.received += moved.received;
                counts.sent += moved.sent;
            });
        }
    }

    fn with(&self, app: &str, change: impl FnOnce(&mut AppTraffic)) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        match apps.get_mut(app) {
            Some(counts) => change(counts),
            None => {
                let mut counts = AppTraffic {
                    app: app.to_owned(),
                    ..AppTraffic::default()
                };
                change(&mut counts);
                apps.insert(app.to_owned(), counts);
            }
        }
    }

    /// The counts of several workers', added up per app, by name.
    pub fn sum(all: &[std::sync::Arc<Traffic>]) -> Vec<AppTraffic> {
        let mut apps: std::collections::BTreeMap<String, AppTraffic> = Default::default();
        for traffic in all {
            for counts in traffic.snapshot() {
                let total = apps
                    .entry(counts.app.clone())
                    .or_insert_with(|| AppTraffic {
                        app: counts.app.clone(),
                        ..AppTraffic::default()
                    });
                for (t, c) in total.by_class.iter_mut().zip(counts.by_class) {
                    *t += c;
                }
                for (t, c) in total.buckets.iter_mut().zip(counts.buckets) {
                    *t += c;
                }
                total.count += counts.count;
                total.seconds += counts.seconds;
                total.received += counts.received;
                total.sent += counts.sent;
            }
        }
        apps.into_values().collect()
    }

    /// Every app's counts, by name.
    pub fn snapshot(&self) -> Vec<AppTraffic> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<AppTraffic> = apps.values().cloned().collect();
        out.sort_by(|a, b| a.app.cmp(&b.app));
        out
    }
}

/// Bytes one request moved: in from the client, out to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub received: u64,
    pub sent: u64,
}

/// Counts the bytes of a body that streams after its request was counted,
/// and adds them to the app's counts when it is dropped (the body ended or
/// was abandoned).
pub struct Meter {
    traffic: std::sync::Arc<Traffic>,
    app: String,
    moved: Moved,
}

impl Meter {
    pub fn new(traffic: std::sync::Arc<Traffic>, app: &str) -> Self {
        Meter {
            traffic,
            app: app.to_owned(),
            moved: Moved::default(),
        }
    }

    pub fn received(&mut self, bytes: u64) {
        self.moved.received += bytes;
    }

    pub fn sent(&mut self, bytes: u64) {
        self.moved.sent += bytes;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.traffic.add_bytes(&self.app, self.moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_class_and_by_how_long_they_took() {
        let traffic = Traffic::default();
        let none = Moved::default();
        traffic.record("shop", 200, Duration::from_millis(3), none);
        traffic.record("shop", 204, Duration::from_millis(40), none);
        traffic.record("shop", 503, Duration::from_secs(30), none);
        traffic.record("shop", 0, Duration::from_millis(1), none);
        traffic.record("blog", 301, Duration::from_millis(7), none);
        let counts = traffic.snapshot();
        assert_eq!(counts.len(), 2);
        let shop = &counts[1];
        assert_eq!(shop.app, "shop");
        assert_eq!(shop.by_class, [0, 2, 0, 0, 1]);
        assert_eq!(shop.count, 3);
        // 3 ms in the first bucket, 40 ms in the 0.05 s one, 30 s in none.
        assert_eq!(shop.buckets[0], 1);
        assert_eq!(shop.buckets[3], 1);
        assert_eq!(shop.buckets.iter().sum::<u64>(), 2);
        assert!((shop.seconds - 30.043).abs() < 1e-9);
        assert_eq!(counts[0].by_class, [0, 0, 1, 0, 0]);
        // Two workers' counts add up.
        let other = std::sync::Arc::new(Traffic::default());
        other.record("shop", 200, Duration::from_millis(3), none);
        let summed = Traffic::sum(&[std::sync::Arc::new(traffic), other]);
        assert_eq!(summed[1].by_class, [0, 3, 0, 0, 1]);
        assert_eq!(summed[1].buckets[0], 2);
        assert_eq!(summed[1].count, 4);
    }

    #[test]
    fn bytes_add_up_from_the_head_and_from_bodies_that_end_later() {
        let traffic = std::sync::Arc::new(Traffic::default());
        let head = Moved {
            received: 100,
            sent: 80,
        };
        traffic.record("shop", 200, Duration::from_millis(1), head);
        {
            let mut body = Meter::new(traffic.clone(), "shop");
            body.sent(4000);
            body.sent(96);
            body.received(20);
            // Not counted until the body is done.
            assert_eq!(traffic.snapshot()[0].sent, 80);
        }
        let shop = &traffic.snapshot()[0];
        assert_eq!((shop.received, shop.sent, shop.count), (120, 4176, 1));
        // A request the proxy sent nothing for still counts what it read.
        traffic.record(
            "shop",
            0,
            Duration::ZERO,
            Moved {
                received: 7,
                sent: 0,
            },
        );
        let shop = &traffic.snapshot()[0];
        assert_eq!((shop.received, shop.count), (127, 1));
        let summed = Traffic::sum(&[traffic.clone(), traffic]);
        assert_eq!((summed[0].received, summed[0].sent), (254, 8352));
    }
}
