//! The git server: an SSH endpoint (russh) that authenticates keys, runs the real
//! `git receive-pack` / `git upload-pack` on bare repositories, and answers
//! management commands; plus reading what was pushed with gix.
//!
//! It does not build or deploy: a push reaches `push` through the pre-receive
//! hook and the control socket, identified by a `context::sessions::PushSession` token.

pub mod hook;
pub mod repos;
pub mod source;
