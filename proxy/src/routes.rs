//! The route table: which backends serve which host.
//!
//! Reads happen on every request and writes on every deploy, so the table is a
//! `RwLock` around a map of `Arc<Route>`: a lookup clones one `Arc` and lets go of
//! the lock at once, and a deploy swaps a whole route in one write (atomic switch:
//! a request sees either the old backends or the new ones, never a mix).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One address that can serve a route's requests (an app container's `IP:PORT`),
/// with the count of requests in flight to it. The count belongs to the address:
/// when a route is replaced by one with the same address, the count carries
/// over, so a drain sees every request on it, whichever route object sent it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
}

impl Backend {
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts a request as in flight to this backend until the guard drops.
    pub fn begin(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            count: self.in_flight.clone(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Backend {}

/// The backends of one host, picked round-robin.
#[derive(Debug)]
pub struct Route {
    /// Name shown in logs and error pages (the app's name).
    pub name: String,
    backends: Vec<Backend>,
    next: AtomicUsize,
}

/// Counts one request as in flight on a backend until dropped (when its
/// response body has been sent, or it failed).
#[derive(Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Route {
    pub fn new(name: impl Into<String>, backends: Vec<Backend>) -> Self {
        Route {
            name: name.into(),
            backends,
            next: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Next backend in round-robin order; `None` when the route has no backend.
    pub fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        self.backends.get(i)
    }

    /// Requests in flight to this route's backends.
    pub fn in_flight(&self) -> usize {
        self.backends.iter().map(Backend::in_flight).sum()
    }

    /// Waits until no request is in flight to this route's backends, or
    /// `timeout` passes; returns how many were still in flight then (0: drained).
    pub async fn drain(&self, timeout: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.in_flight();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Host name → route. Host names are matched lowercased and without a port.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    /// Extra host names (custom domains) → the host whose route serves them.
    aliases: RwLock<HashMap<String, String>>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `host` to `route`, replacing whatever served it before; returns
    /// the replaced route, so its in-flight requests can be drained.
    pub fn set(&self, host: &str, mut route: Route) -> Option<Arc<Route>> {
        let host = normalize_host(host);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = routes.get(&host) {
            // Same address, same count: requests already in flight stay visible.
            for backend in &mut route.backends {
                if let Some(same) = old.backends.iter().find(|b| b.addr == backend.addr) {
                    backend.in_flight = same.in_flight.clone();
                }
            }
        }
        routes.insert(host, Arc::new(route))
    }

    /// Stops routing `host`; returns the route it had.
    pub fn remove(&self, host: &str) -> Option<Arc<Route>> {
        let host = normalize_host(host);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.remove(&host)
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
        let request = old.pick().expect("backend").begin();
        // Re-routing to the same address keeps the request counted...
        let same = table
            .set("a.test", Route::new("a", vec![backend(1)]))
            .expect("replaced");
        assert!(Arc::ptr_eq(&old, &same));
        assert_eq!(table.lookup("a.test").expect("route").in_flight(), 1);
        // ...so the route that replaces it with another address can drain it.
        let replaced = table
            .set("a.test", Route::new("a", vec![backend(2)]))
            .expect("replaced");
        assert_eq!(replaced.in_flight(), 1);
        assert_eq!(table.lookup("a.test").expect("route").in_flight(), 0);
        let waiter = {
            let replaced = replaced.clone();
            tokio::spawn(async move { replaced.drain(std::time::Duration::from_secs(5)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(request);
        assert_eq!(waiter.await.expect("join"), 0);
        let stuck = replaced.pick().expect("backend").begin();
        assert_eq!(
            replaced.drain(std::time::Duration::from_millis(30)).await,
            1,
            "timeout reports what is left"
        );
        drop(stuck);
    }

    #[test]
    fn pick_round_robins_and_handles_empty() {
        let route = Route::new("a", vec![backend(1), backend(2)]);
        let picks: Vec<u16> = (0..4)
            .map(|_| route.pick().expect("backend").addr.port())
            .collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
        assert!(Route::new("a", vec![]).pick().is_none());
    }
}
