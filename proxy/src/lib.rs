//! gantry's reverse proxy: sends each request to the app that owns its `Host`.
//!
//! One job: host-based routing of HTTP traffic to app backends. It knows nothing of
//! apps, releases, git or Docker: gantry tells it "host H is served by these
//! addresses", and it answers from that table alone. Unknown hosts get a
//! small 404 page; a backend that fails gets a 502 page.
//!
//! Layout: [`routes`] holds the swappable route table; `h1` serves HTTP/1.1
//! connections itself (the hot path), while hyper serves HTTP/2 and HTTP/1.0
//! with [`forward`] rewriting each request; [`pages`] renders the proxy's own
//! error pages; `serve` accepts connections and picks the path; [`tls`] holds the
//! certificates HTTPS picks by SNI. [`daemon`] runs it all as a process of
//! its own (`gantry proxy`), driven over [`control`] and persisted by [`state`].

mod context;
pub mod control;
pub mod daemon;
pub mod forward;
mod h1;
mod hop_by_hop;
mod hyper_path;
mod idle;
pub mod pages;
mod pool;
mod request_id;
pub mod routes;
mod serve;
pub mod state;
pub mod tls;
mod tracked;
mod upstream;

pub use context::{Challenges, Proxy, Settings};
pub use routes::{Backend, Balance, InFlight, Route, RouteTable};
pub use serve::{serve, serve_tls};
pub use tls::{CertStore, LocalCa};
