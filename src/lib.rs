//! gantry: `git push` to a server you own, and your app is live.
//!
//! # Layout
//! Floors, each importing only from the floors below it (the picture and
//! the rule are in `docs/architecture.md`; `tests/it/layers.rs` checks them):
//! - top: [`server`] (`gantry serve`, which wires everything; nothing imports it);
//! - transports: [`cli`] (the command line), [`ssh`] (the SSH endpoint),
//!   [`commands`] (the one command grammar), [`web`] (the dashboard), [`setup`]
//!   (opening gantry with its own jobs), [`service`] (gantry as systemd
//!   services);
//! - operations: [`push`] (a push's stages), [`apps`], [`domains`],
//!   [`stack_refresh`], [`backup`], [`addons`] (services beside apps);
//! - parts: [`deploy`] and [`acme`] over [`git`], [`jobs`], [`build`],
//!   [`artifacts`] and [`certs`];
//! - the ground floor: [`access`] (who may do what), [`context`] (the handles
//!   every part shares), [`runtime`] (where apps' processes run), [`routing`]
//!   (the link to the proxy), [`config_vars`], [`config`], [`store`],
//!   [`control`] (the control socket's wire), [`manifest`], [`storage`] and
//!   [`resources`] (an app's volumes and limits), [`names`],
//!   [`time`], [`secrets`], [`signal`].

pub mod access;
pub mod acme;
pub mod addons;
pub mod apps;
pub mod artifacts;
pub mod backup;
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
pub mod edge;
pub mod git;
pub mod jobs;
pub mod manifest;
pub mod names;
pub mod push;
pub mod resources;
pub mod routing;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod service;
pub mod setup;
pub mod signal;
pub mod ssh;
pub mod stack_refresh;
pub mod storage;
pub mod store;
pub mod time;
pub mod traffic;
pub mod web;
pub mod work;
pub mod worker;
