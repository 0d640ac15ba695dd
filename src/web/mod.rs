//! The dashboard at `gantry.DOMAIN`, server-rendered, on axum.
//!
//! It is served on a loopback port of its own and routed by the proxy like any
//! app, so the proxy knows nothing of it. It only reads, except for its
//! actions, Rollback and Run again (POSTs with the session's CSRF token),
//! which call the same operations as `releases:rollback` and `jobs:run`.
//! Login is by one-time link (`web:login`).

mod apps;
mod code;
mod graphs;
mod jobs;
mod logs;
mod metrics;
pub mod pages;
mod respond;
mod router;
mod session;
mod system;

pub use router::serve;
