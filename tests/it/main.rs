//! gantry's integration tests: one binary, a module per flow (see `support` for
//! the harness). They need git, OpenSSH's ssh client and a Docker engine; `.ci/run`
//! installs them on a fresh machine.

mod access;
mod acme;
mod addons;
mod backup;
mod browser;
mod buildpacks;
mod cluster;
mod https;
mod jobs;
mod languages;
mod layers;
mod manifest;
mod processes;
mod production;
mod proxy;
mod push;
mod releases;
mod runlogs;
mod serve;
mod storage;
mod support;
