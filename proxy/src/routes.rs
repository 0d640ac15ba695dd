//! The route table: which backends serve which host.
//!
//! Reads happen on every request and writes on every deploy, so the table is a
//! `RwLock` around a map of `Arc<Route>`: a lookup clones one `Arc` and lets go of
//! the lock at once, and a deploy swaps a whole route in one write (atomic switch:
//! a request sees either the old backends or the new ones, never a mix).
//!
//! The table is made from, and reported as, the plain specs of `state`
//! (`RouteSpec::to_route`, `snapshot`, `replace` live here, so `state` needs
//! nothing of the table). It knows hosts and addresses, never apps' releases
//! or gantry's store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::state::{RouteSpec, State};

/// How long a backend that refused a connection is left out before it is
/// tried again.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// What the proxy knows of one backend address, shared by every route that
/// uses it: requests in flight (for drains and least-connections) and whether
/// it refused a connection lately.
#[derive(Debug, Default)]
struct Stats {
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch before which the backend is left
    /// out; 0: healthy.
    down_until: AtomicU64,
}

/// One address that can serve a route's requests (an app container's `IP:PORT`),
/// with the count of requests in flight to it. The count belongs to the address:
/// when a route is replaced by one with the same address, the count carries
/// over, so a drain sees every request on it, whichever route object sent it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    stats: Arc<Stats>,
}

impl Backend {
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            stats: Arc::default(),
        }
    }

    /// Counts a request as in flight to this backend until the guard drops.
    pub fn begin(&self) -> InFlight {
        self.stats.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            stats: self.stats.clone(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::Acquire)
    }

    fn is_up(&self, now: u64) -> bool {
        self.stats.down_until.load(Ordering::Relaxed) <= now
    }
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Backend {}

/// How a route with several backends picks one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight (ties: round-robin).
    LeastConnections,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(Balance::RoundRobin),
            "least-connections" | "least-conn" => Ok(Balance::LeastConnections),
            other => Err(format!(
                "unknown balance {other:?}: use round-robin or least-connections"
            )),
        }
    }
}

/// The backends of one host.
#[derive(Debug)]
pub struct Route {
    /// Name shown in logs and error pages (the app's name).
    pub name: String,
    backends: Vec<Backend>,
    next: AtomicUsize,
    /// Plain-HTTP requests are redirected to HTTPS once the host has a
    /// certificate of its own.
    pub https_redirect: bool,
}

/// Counts one request as in flight on a backend until dropped (when its
/// response body has been sent, or it failed).
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Route {
    pub fn new(name: impl Into<String>, backends: Vec<Backend>) -> Self {
        Route {
            name: name.into(),
            backends,
            next: AtomicUsize::new(0),
            https_redirect: false,
        }
    }

    /// The same route, redirecting plain HTTP to HTTPS when `on`.
    pub fn with_https_redirect(mut self, on: bool) -> Self {
        self.https_redirect = on;
        self
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// A backend to send the next request to, among those that have not
    /// refused a connection lately, skipping `not` (one that just failed);
    /// `None` when none is left.
    pub fn choose(&self, balance: Balance, now: u64, not: Option<SocketAddr>) -> Option<&Backend> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|k| &self.backends[(start + k) % n])
            .filter(|b| b.is_up(now) && Some(b.addr) != not);
        match balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastConnections => candidates.min_by_key(|b| b.in_flight()),
        }
    }
}

/// A spec from the state file made live: the table is made from specs, so
/// the conversion lives here and `state` stays plain data.
impl RouteSpec {
    pub fn to_route(&self) -> Route {
        Route::new(
            self.name.clone(),
            self.backends.iter().copied().map(Backend::new).collect(),
        )
        .with_https_redirect(self.https_redirect)
    }
}

/// Host name → route. Host names are matched lowercased and without a port.
#[derive(Debug)]
pub struct RouteTable {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    /// Extra host names (custom domains) → the host whose route serves them.
    aliases: RwLock<HashMap<String, String>>,
    /// Every address's stats, while a route or a request still holds them.
    stats: RwLock<HashMap<SocketAddr, Weak<Stats>>>,
    epoch: Instant,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            routes: RwLock::default(),
            aliases: RwLock::default(),
            stats: RwLock::default(),
            epoch: Instant::now(),
        }
    }
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Milliseconds since the table was made: the clock of [`Route::choose`].
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Leaves `addr` out of every route for a while: it refused a connection.
    pub fn mark_down(&self, addr: SocketAddr) {
        let stats = self.stats.read().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = stats.get(&addr).and_then(Weak::upgrade) {
            let until = self.now() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(2000);
            stats.down_until.store(until, Ordering::Relaxed);
        }
    }

    /// Routes `host` to `route`, replacing whatever served it before; returns
    /// the replaced route, so its in-flight requests can be drained.
    pub fn set(&self, host: &str, mut route: Route) -> Option<Arc<Route>> {
        let host = normalize_host(host);
        {
            // Same address, same stats: requests already in flight stay
            // visible, whichever route sends them.
            let mut stats = self.stats.write().unwrap_or_else(|e| e.into_inner());
            stats.retain(|_, s| s.strong_count() > 0);
            for backend in &mut route.backends {
                match stats.get(&backend.addr).and_then(Weak::upgrade) {
                    Some(shared) => {
                        // serve routes a backend only after checking it, and
                        // Docker reuses the addresses of stopped containers:
                        // a refusal by the address's earlier holder is stale.
                        shared.down_until.store(0, Ordering::Relaxed);
                        backend.stats = shared;
                    }
                    None => {
                        stats.insert(backend.addr, Arc::downgrade(&backend.stats));
                    }
                }
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.insert(host, Arc::new(route))
    }

    /// Stops routing `host`; returns the route it had.
    pub fn remove(&self, host: &str) -> Option<Arc<Route>> {
        let host = normalize_host(host);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.remove(&host)
    }

    /// Requests in flight to any of `addrs`, through any route, old or new.
    pub fn in_flight_to(&self, addrs: &[SocketAddr]) -> usize {
        let stats = self.stats.read().unwrap_or_else(|e| e.into_inner());
        addrs
            .iter()
            .filter_map(|a| stats.get(a).and_then(Weak::upgrade))
            .map(|s| s.in_flight.load(Ordering::Acquire))
            .sum()
    }

    /// Waits until no request is in flight to `addrs`, or `timeout` passes;
    /// returns how many were still in flight then (0: drained).
    pub async fn drain(&self, addrs: &[SocketAddr], timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.in_flight_to(addrs);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The route for a `Host` header value (`Example.com:8080` finds `example.com`),
    /// following an alias to the host that serves it.
    pub fn lookup(&self, host_header: &str) -> Option<Arc<Route>> {
        let mut host = normalize_host(host_header);
        if let Some(target) = self
            .aliases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host)
        {
            host = target.clone();
        }
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(&host).cloned()
    }

    /// Serves `alias` (a custom domain) with whatever route `host` has, now
    /// and after every change to it.
    pub fn alias(&self, alias: &str, host: &str) {
        self.aliases
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(normalize_host(alias), normalize_host(host));
    }

    pub fn unalias(&self, alias: &str) {
        self.aliases
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&normalize_host(alias));
    }

    /// Every routed host, sorted; for status output and tests.
    pub fn hosts(&self) -> Vec<String> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut hosts: Vec<String> = routes.keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// Every route and alias, as the proxy persists and reports them.
    pub fn snapshot(&self) -> State {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(host, route)| RouteSpec {
                host: host.clone(),
                name: route.name.clone(),
                backends: route.backends.iter().map(|b| b.addr).collect(),
                https_redirect: route.https_redirect,
            })
            .collect();
        specs.sort_by(|a, b| a.host.cmp(&b.host));
        let aliases = self
            .aliases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, h)| (a.clone(), h.clone()))
            .collect();
        State {
            routes: specs,
            aliases,
        }
    }

    /// Makes the table exactly `state`: hosts not in it stop being routed.
    pub fn replace(&self, state: &State) {
        let keep: std::collections::HashSet<String> = state
            .routes
            .iter()
            .map(|r| normalize_host(&r.host))
            .collect();
        for spec in &state.routes {
            self.set(&spec.host, spec.to_route());
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|host, _| keep.contains(host));
        let mut aliases = self.aliases.write().unwrap_or_else(|e| e.into_inner());
        aliases.clear();
        for (alias, host) in &state.aliases {
            aliases.insert(normalize_host(alias), normalize_host(host));
        }
    }
}

/// Lowercases and strips the port (`[::1]:80` keeps its brackets' content).
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16) -> Backend {
        Backend::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn lookup_ignores_case_port_and_trailing_dot() {
        let table = RouteTable::new();
        table.set("App.Localhost", Route::new("app", vec![backend(1)]));
        for host in ["app.localhost", "APP.localhost:8080", "app.localhost."] {
            assert_eq!(
                table.lookup(host).map(|r| r.name.clone()),
                Some("app".into()),
                "{host}"
            );
        }
        assert!(table.lookup("other.localhost").is_none());
        assert!(table.lookup("[::1]:8080").is_none());
    }

    #[test]
    fn set_replaces_and_remove_forgets() {
        let table = RouteTable::new();
        table.set("a.test", Route::new("a", vec![backend(1)]));
        table.set("a.test", Route::new("a", vec![backend(2)]));
        let route = table.lookup("a.test").expect("route");
        assert_eq!(route.backends(), &[backend(2)]);
        assert!(table.remove("a.test").is_some());
        assert!(table.remove("a.test").is_none());
        assert!(table.hosts().is_empty());
    }

    #[tokio::test]
    async fn replaced_routes_drain_their_in_flight_requests() {
        let table = RouteTable::new();
        assert!(table
            .set("a.test", Route::new("a", vec![backend(1)]))
            .is_none());
        let old = table.lookup("a.test").expect("route");
        let pick = |route: &Route| {
            route
                .choose(Balance::RoundRobin, 0, None)
                .expect("backend")
                .begin()
        };
        let (one, two) = (backend(1).addr, backend(2).addr);
        let request = pick(&old);
        // Re-routing to the same address keeps the request counted...
        let same = table
            .set("a.test", Route::new("a", vec![backend(1)]))
            .expect("replaced");
        assert!(Arc::ptr_eq(&old, &same));
        assert_eq!(table.in_flight_to(&[one]), 1);
        // ...so the route that replaces it with another address can drain it.
        let replaced = table
            .set("a.test", Route::new("a", vec![backend(2)]))
            .expect("replaced");
        assert_eq!(replaced.backends()[0].in_flight(), 1);
        assert_eq!(table.in_flight_to(&[two]), 0);
        let table = Arc::new(table);
        let waiter = {
            let table = table.clone();
            tokio::spawn(
                async move { table.drain(&[one], std::time::Duration::from_secs(5)).await },
            )
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(request);
        assert_eq!(waiter.await.expect("join"), 0);
        let stuck = pick(&replaced);
        assert_eq!(
            table
                .drain(&[one], std::time::Duration::from_millis(30))
                .await,
            1,
            "timeout reports what is left"
        );
        drop(stuck);
    }

    #[test]
    fn choose_round_robins_and_handles_empty() {
        let route = Route::new("a", vec![backend(1), backend(2)]);
        let choose = |r: &Route| {
            r.choose(Balance::RoundRobin, 0, None)
                .map(|b| b.addr.port())
        };
        let picks: Vec<u16> = (0..4).map(|_| choose(&route).expect("backend")).collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
        assert!(choose(&Route::new("a", vec![])).is_none());
    }

    #[test]
    fn a_table_round_trips_through_its_snapshot() {
        let table = RouteTable::new();
        let mut state = State::default();
        state.routes.push(RouteSpec {
            host: "a.test".into(),
            name: "a".into(),
            backends: vec!["127.0.0.1:9000".parse().expect("addr")],
            https_redirect: false,
        });
        table.set("stale.test", Route::new("stale", vec![]));
        table.replace(&state);
        assert_eq!(table.snapshot(), state);
        assert_eq!(table.hosts(), vec!["a.test".to_string()]);
    }
}
