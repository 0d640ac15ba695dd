//! The job system's shared state: executor slots (at most `executors` runs at
//! once) and the cancel handles of the runs going in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Run state shared by the scheduler, the executors and the commands.
pub struct Executors {
    /// Executor slots: at most this many runs at once (default: the cores).
    slots: Arc<Semaphore>,
    total: usize,
    /// Cancel handles of the runs going now, by `(job, number)`.
    running: Mutex<HashMap<(String, i64), CancellationToken>>,
    /// Alert sends that failed (each attempt), for the metrics.
    pub notify_failures: Arc<std::sync::atomic::AtomicU64>,
}

impl Executors {
    pub fn new(executors: usize) -> Self {
        Executors {
            notify_failures: Arc::default(),
            slots: Arc::new(Semaphore::new(executors)),
            total: executors,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// (busy, total) executor slots.
    pub fn executors(&self) -> (usize, usize) {
        (self.total - self.slots.available_permits(), self.total)
    }

    /// Waits for an executor slot; holding it counts as a run going.
    pub async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Makes a run cancellable (`jobs:cancel` cancels `cancel`) and counts it as going.
    pub fn track(&self, job: &str, number: i64, cancel: CancellationToken) {
        if let Ok(mut running) = self.running.lock() {
            running.insert((job.to_owned(), number), cancel);
        }
    }

    /// Forgets a run that ended.
    pub fn untrack(&self, job: &str, number: i64) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&(job.to_owned(), number));
        }
    }

    pub fn is_tracked(&self, job: &str, number: i64) -> bool {
        self.running
            .lock()
            .is_ok_and(|m| m.contains_key(&(job.to_owned(), number)))
    }

    /// The numbers of the runs of `job` going (or queued) in this process.
    pub fn going(&self, job: &str) -> Vec<i64> {
        let mut numbers: Vec<i64> = self.running_of(job).into_iter().map(|(n, _)| n).collect();
        numbers.sort_unstable();
        numbers
    }

    pub fn running_of(&self, job: &str) -> Vec<(i64, CancellationToken)> {
        self.running
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((j, _), _)| j == job)
                    .map(|((_, n), t)| (*n, t.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cancel handle of a run going in this process.
    pub fn cancel_token(&self, job: &str, number: i64) -> Option<CancellationToken> {
        self.running
            .lock()
            .ok()
            .and_then(|m| m.get(&(job.to_owned(), number)).cloned())
    }
}
