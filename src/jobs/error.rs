//! What can go wrong queueing, finding or recording a run.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job named {0} (see `gantry jobs`)")]
    Unknown(String),
    #[error("{0} has no run #{1}")]
    NoRun(String, i64),
    #[error("jobs run inside `gantry serve`, which is not running")]
    NotServing,
    #[error("{0} is another manager's ({1}): cancel it there")]
    Elsewhere(String, String),
    #[error("cannot write the log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
