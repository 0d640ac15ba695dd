//! The cluster's work queue, seen from the manager that queued an item: it
//! follows the item while a node runs it, passing on its log and saying
//! who runs it (and who took it over when a worker's lease ran out), until
//! it ends. Dropping the follower asks the item to stop, so a push whose
//! pusher went away does not leave a build running on some node.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Requires;
use crate::store::{Store, StoreError, WorkState};

/// How often the follower looks.
const POLL: Duration = Duration::from_millis(300);
/// How long an item may wait before the follower says for what.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(2);

/// Asks the item to stop unless it ended: the follower was dropped or
/// cancelled.
struct StopOnDrop {
    store: Store,
    id: i64,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, id) = (self.store.clone(), self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store
                    .cancel_work(id, "cancelled: nobody waits for it")
                    .await;
            });
        }
    }
}

/// Queues work of `kind` for a node labelled with all of `requires`, then
/// follows it to its end (see the module's comment). `cancel` asks the
/// running worker to stop; the state it ended in is returned.
pub async fn run(
    store: &Store,
    kind: &str,
    title: &str,
    requires: &Requires,
    (spec, input): (&str, &[u8]),
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<WorkState, StoreError> {
    let id = store
        .enqueue_work(kind, title, &requires.0, spec, input)
        .await?;
    tracing::info!(id, kind, %requires, "queued work for a node");
    let mut guard = StopOnDrop {
        store: store.clone(),
        id,
        armed: true,
    };
    let queued = Instant::now();
    let mut said_waiting = false;
    let mut seen = (String::new(), 0);
    let mut after = 0;
    let mut cancelled = false;
    loop {
        let state = store.work_state(id).await?;
        if state.fence != seen.1 && !state.worker.is_empty() {
            if seen.1 == 0 {
                on_line(&format!("-----> {title}: on {}", state.worker));
            } else {
                on_line(&format!(
                    "-----> {title}: {} took it over (the lease of {} ran out)",
                    state.worker, seen.0
                ));
            }
            seen = (state.worker.clone(), state.fence);
        }
        for (seq, text) in store.work_log_since(id, after).await? {
            after = seq;
            for line in text.lines() {
                on_line(line);
            }
        }
        if state.is_finished() {
            guard.armed = false;
            return Ok(state);
        }
        if state.state == "queued" && !said_waiting && queued.elapsed() >= SAY_WAITING_AFTER {
            said_waiting = true;
            let nodes = store.nodes_with(&requires.0).await?;
            on_line(&if nodes.is_empty() {
                format!(
                    "-----> {title}: waiting for a node labelled {requires} (no node has these labels yet: `gantry nodes:label NODE K=V`)"
                )
            } else {
                format!(
                    "-----> {title}: waiting for a worker on {} (labelled {requires})",
                    nodes.join(" or ")
                )
            });
        }
        if cancelled {
            // A worker that died after it was asked to stop never finishes
            // it, and nobody claims an item asked to stop: end it here.
            store
                .abandon_work(id, "cancelled; its worker stopped answering")
                .await?;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                store.cancel_work(id, "cancelled").await?;
            }
        }
    }
}

/// A host job's run, for a node: the script travels as the item's input.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobSpec {
    pub job: String,
    pub run: i64,
    /// The run's parameters, then the job's `env`: the script's environment
    /// besides the `GANTRY_*` variables.
    pub env: Vec<(String, String)>,
    pub timeout_secs: u64,
}

/// A Dockerfile build, for a node: the context (a tar) travels as the
/// item's input; the node pushes `image` to the cluster's registry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildSpec {
    pub app: String,
    /// `gantry/APP:vN`.
    pub image: String,
}

/// What a node's build made: the image in the cluster's registry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildResult {
    pub digest: String,
    pub size: i64,
    pub exposed_port: Option<u16>,
}

/// The reason a worker gives when it stops a run at its timeout; the
/// manager reads it back as a time-out.
pub const TIMED_OUT: &str = "timed out";
