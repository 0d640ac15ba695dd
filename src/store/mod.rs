//! gantry's state: keys, apps and releases, in SQLite (the embedded default) or
//! Postgres, through one code path (sqlx's `Any` driver, `$N` placeholders).
//!
//! The store holds no business rules: it records and answers. Who may do what
//! is decided in `access`; what a release means in `push` and `deploy`.

mod cluster;
mod db;
mod models;
mod records;
mod runs;
mod traffic;
mod work;

pub use cluster::{SharedCert, CERTS_CHANNEL};
pub use db::{redact, DeployLease, Result, Store, StoreError, ROUTES_CHANNEL};
pub use models::{
    AddonRecord, AppRecord, KeyRecord, Release, ReleaseKind, ReleaseStatus, Role, WebToken,
};
pub use runs::{Run, RunStats, RunStatus};
pub use traffic::TrafficMinute;
pub use work::{Claim, Fenced, NodeLabels, Renewal, WorkState};

#[cfg(test)]
mod tests;
