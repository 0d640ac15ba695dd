//! The control socket: how processes on this machine reach a running `gantry serve`.
//!
//! Two kinds of caller use it: the pre-receive hook that `git receive-pack` runs
//! (it hands the push to the server and relays the server's output back to the
//! pusher), and the local CLI (so `gantry apps:destroy` on the host acts through
//! the server that owns the routes and locks). The socket lives in
//! `$GANTRY_HOME/run` with owner-only permissions: whoever can open it is the
//! server's own user, so local CLI calls act as admin.
//!
//! Protocol: the client sends one JSON line (`protocol::Request`); the server answers
//! with frames (one tag byte, a big-endian u32 length, the payload; see [`protocol`]): stdout
//! bytes, stderr bytes, and finally the exit code.

pub mod client;
pub mod protocol;
