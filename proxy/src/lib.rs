//! gantry's reverse proxy: sends each request to the app that owns its `Host`.
//!
//! One job: host-based routing of HTTP traffic to app backends. It knows nothing of
//! apps, releases, git or Docker: gantry tells it "host H is served by these
//! addresses", and it answers from that table alone. Unknown hosts get a
//! small 404 page; a backend that fails gets a 502 page.
//!
//! Layout, in layers; a module imports only from layers below its own:
//!
//! - plumbing: `hop_by_hop` (the header list both paths strip),
//!   `request_id`, [`pages`] (the proxy's own answers), `idle` (idle
//!   timeouts on a stream), [`state`] (routes as data, on disk), [`tls`]
//!   (certificates picked by SNI), [`listeners`] (the listening sockets,
//!   handed from process to process);
//! - [`routes`]: the swappable route table, made from [`state`]'s specs;
//!   `tracked` and `upstream`, the hyper path's body wrappers;
//! - backend pools: `hyper_pool` for the hyper path, `h1::backend` for the
//!   HTTP/1.1 path;
//! - `context`: [`Proxy`], [`Settings`] and the decision both paths act on;
//! - the two paths, side by side and unaware of each other: `h1` serves
//!   HTTP/1.1 itself (the hot path); `hyper_path` serves HTTP/2 and
//!   HTTP/1.0 with hyper, [`forward`] rewriting each request;
//! - `serve`: accepts connections, shakes hands for TLS, picks the path;
//! - [`control`] and [`daemon`]: the proxy as a process of its own
//!   (`gantry proxy`), driven over a socket and persisted by [`state`].
//!
//! This file only declares modules and re-exports the public API; inside
//! the crate, code imports from the module that defines an item.

mod context;
pub mod control;
mod counted;
pub mod daemon;
pub mod forward;
mod h1;
mod hop_by_hop;
mod hyper_path;
mod hyper_pool;
mod idle;
pub mod listeners;
pub mod pages;
mod request_id;
pub mod routes;
mod serve;
pub mod state;
pub mod tls;
mod tracked;
pub mod traffic;
mod upstream;

pub use context::{Challenges, Proxy, Settings};
pub use routes::{Backend, Balance, InFlight, Route, RouteTable};
pub use serve::{serve, serve_tls};
pub use tls::{CertStore, LocalCa};
