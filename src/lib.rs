//! gantry: `git push` to a server you own, and your app is live.
//!
//! # Layout
//! A push travels through these modules in order (see `docs/architecture.md`):
//! - [`git`]: the SSH endpoint; authenticates keys, runs `git receive-pack`, and
//!   reads pushed trees.
//! - [`control`]: the local socket through which the pre-receive hook and the
//!   local CLI reach the running server.
//! - [`push`]: a push's stages (receive, build, release, deploy), streamed to the pusher.
//! - [`build`]: turns a source tree into an image; never runs it.
//! - [`deploy`]: runs a release's containers, health-checks them and switches routes.
//! - the `gantry-proxy` crate: routes HTTP by host to app containers.
//! - [`store`]: keys, apps and releases in SQLite or Postgres.
//! - [`cli`]: the one command grammar, shared by the local CLI and SSH.
//! - [`config`], [`names`]: settings and validated names; [`secrets`]: config
//!   vars encrypted at rest.
//! - [`web`]: the dashboard (deploy history pages), routed like an app.
//! - [`server`]: `gantry serve`, which wires all of the above together.

pub mod access;
pub mod acme;
pub mod apps;
pub mod artifacts;
pub mod build;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_vars;
pub mod context;
pub mod control;
pub mod deploy;
pub mod domains;
pub mod git;
pub mod jobs;
pub mod manifest;
pub mod names;
pub mod push;
pub mod routing;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod setup;
pub mod signal;
pub mod ssh;
pub mod store;
pub mod time;
pub mod web;
