//! Deploy: runs a release's containers, waits until they are healthy, switches
//! the app's route to them, then drains and stops what they replace.
//!
//! A roll-out ([`rollout::roll_out`]) reads top-down: start the formation's web replicas
//! and wait until each answers HTTP ([`replicas::start`]), record the release as
//! current, swap the route atomically, let requests in flight on the old route
//! finish, stop the old containers ([`replicas::switch`]). Any failure before the
//! switch leaves the old release serving, untouched. [`restore`](restore::restore) rebuilds routes
//! when `serve` starts; [`processes`] scales, stops and restarts; [`watch`]
//! follows containers Docker restarts.
//!
//! deploy never builds: it runs images `build` made.

pub mod health;
pub mod logs;
pub mod oneoff;
pub mod processes;
pub mod progress;
pub mod releases;
pub mod replicas;
pub mod restore;
pub mod rollout;
pub mod route;
pub mod services;
pub mod spec;
pub mod watch;

pub use progress::{Progress, TextProgress};
pub use restore::restore;
pub use rollout::roll_out;
pub use route::reroute;
