//! The job log and scheduler: every build, deploy, cron run, host job and
//! manual run is a numbered run of a job, with a log file written as it goes.
//!
//! Jobs come from `definition` (host scripts in `$GANTRY_HOME/jobs`, app cron
//! entries). A run is queued in the store first (that assigns its number), then
//! an executor slot runs it (`runner`). `scheduler` queues scheduled runs, at
//! most one for a schedule missed while gantry was down. Runs left running by a
//! gantry that stopped are marked interrupted on the next start.

pub mod definition;
pub mod error;
pub mod files;
pub mod live;
pub mod notify;
pub mod overview;
pub mod queue;
pub mod runner;
pub mod schedule;
pub mod scheduler;

pub use error::JobError;
pub use files::{artifacts_dir, log_path};
pub use overview::{overview, Summary};
pub use queue::{cancel, find, resume, trigger, Trigger};
