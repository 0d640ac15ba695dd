//! The git server's repositories: one bare repository per app (`repos`),
//! reading what was pushed with gix (`source`), browsing a repository's
//! trees, history and diffs for the pages (`browse`), and the pre-receive hook's
//! side of the control socket (`hook`). The SSH endpoint that runs git on
//! them is `ssh`, a transport above.
//!
//! It does not build or deploy: a push reaches `push` through the pre-receive
//! hook and the control socket, identified by a `context::sessions` token.

pub mod browse;
pub mod hook;
pub mod repos;
pub mod source;
