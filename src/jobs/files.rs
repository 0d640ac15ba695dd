//! Where a run's log and artifacts live: `$GANTRY_HOME/runs/JOB/N.log` and
//! `N.artifacts` beside it (app jobs nest a level).

use std::path::PathBuf;

use crate::context::Gantry;

/// The log file of a run: `$GANTRY_HOME/runs/JOB/N.log` (app jobs nest a level).
pub fn log_path(gantry: &Gantry, job: &str, number: i64) -> PathBuf {
    gantry
        .config
        .runs_dir()
        .join(job)
        .join(format!("{number}.log"))
}

/// The directory whose files are kept as a run's artifacts.
pub fn artifacts_dir(gantry: &Gantry, job: &str, number: i64) -> PathBuf {
    gantry
        .config
        .runs_dir()
        .join(job)
        .join(format!("{number}.artifacts"))
}
