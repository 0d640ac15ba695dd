//! Which manager runs the singletons (the scheduler, and with it the ACME
//! renewer and every upkeep job; the publishing of routes and of nodes'
//! labels). On a swarm several managers may share one Postgres; they elect
//! one through a lease in the store ([`Store::lead`]), renewed every third
//! of [`LEASE`]. Anywhere else there is one manager, and it leads.
//!
//! Fencing, twice over: a manager counts itself leader only until the lease
//! it last won would end as measured from before it asked (so it stops
//! before anyone else can win), and the writes that matter (a scheduled run
//! queued) name the term they were made in, which the store checks in the
//! same transaction.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long a won lease lasts.
pub const LEASE: Duration = Duration::from_secs(10);
/// The singletons' election's name in the store.
pub const ELECTION: &str = "managers";

/// A leader's proof, for writes the store checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The only manager there is: nothing to check.
    Sole,
    /// Elected: this holder, in this term.
    Elected { holder: String, term: i64 },
}

/// This manager's standing in the election.
pub struct Leader {
    /// `None`: the only manager (it always leads).
    holder: Option<String>,
    held: Mutex<Option<(i64, Instant)>>,
}

impl Leader {
    /// The only manager: it leads, always.
    pub fn sole() -> Leader {
        Leader {
            holder: None,
            held: Mutex::new(None),
        }
    }

    /// One of several managers (`manager`: its host and home), which leads
    /// only once [`Leader::keep`] wins; each process campaigns anew.
    pub fn elected(manager: &str) -> Leader {
        Leader {
            holder: Some(format!(
                "{manager}/{}/{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )),
            held: Mutex::new(None),
        }
    }

    /// The fence to write with, while this manager leads.
    pub fn leading(&self) -> Option<Fence> {
        let Some(holder) = &self.holder else {
            return Some(Fence::Sole);
        };
        let held = self.held.lock().ok()?;
        let (term, until) = (*held)?;
        (Instant::now() < until).then(|| Fence::Elected {
            holder: holder.clone(),
            term,
        })
    }

    /// Campaigns and renews until `shutdown`, then resigns, so another
    /// manager takes over at once. Does nothing for the sole manager.
    pub async fn keep(&self, store: &Store, shutdown: CancellationToken) {
        let Some(holder) = &self.holder else {
            return;
        };
        let mut was: Option<i64> = None;
        loop {
            let asked = Instant::now();
            match store.lead(ELECTION, holder, LEASE).await {
                Ok(Some(term)) => {
                    if let Ok(mut held) = self.held.lock() {
                        *held = Some((term, asked + LEASE - LEASE / 5));
                    }
                    if was != Some(term) {
                        tracing::info!(term, %holder, "this manager leads: it runs the scheduler and publishes routes");
                    }
                    was = Some(term);
                }
                Ok(None) => {
                    if let Ok(mut held) = self.held.lock() {
                        *held = None;
                    }
                    if was.is_some() {
                        tracing::warn!("another manager leads now");
                    } else {
                        tracing::debug!("another manager leads");
                    }
                    was = None;
                }
                // Leading until the lease we hold runs out, as it stands.
                Err(err) => tracing::warn!(error = %err, "cannot renew the lead"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(LEASE / 3) => {}
            }
        }
        if let Ok(mut held) = self.held.lock() {
            *held = None;
        }
        if let Err(err) = store.resign(ELECTION, holder).await {
            tracing::warn!(error = %err, "cannot resign the lead");
        }
    }
}
