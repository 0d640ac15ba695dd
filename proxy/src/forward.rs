//! Turning a client's request into a backend's request, and the backend's
//! response into the client's: hop-by-hop headers stripped (RFC 9110 §7.6.1),
//! `X-Forwarded-*` set (overwritten, since gantry is the edge), the version set
//! to HTTP/1.1 (backends speak HTTP/1.1; an h2 request forwarded as h2 would
//! fail) with `:authority` copied to `Host`.
//!
//! This is the hyper path's rewriting, on hyper's request and response
//! types; the HTTP/1.1 path rewrites a head's bytes itself (`h1::head`), and
//! the two share the hop-by-hop list and the request-id generator.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri, Version};

use crate::hop_by_hop::HOP_BY_HOP;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the request has no Host header")]
    NoHost,
}

/// The `Host` a request is for: the `Host` header, else the URI's authority (h2).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .filter(|h| !h.is_empty())
}

/// Whether `req` asks to switch protocols (a WebSocket handshake): an HTTP/1.1
/// request with `Upgrade` named in `Connection`.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Rewrites `req` in place to go to a backend.
///
/// `client` is the peer's address and `scheme` what the client spoke to us
/// (`http` or `https`), both for the `X-Forwarded-*` headers.
pub fn prepare_request<B>(
    req: &mut Request<B>,
    client: IpAddr,
    scheme: &str,
) -> Result<(), ForwardError> {
    let upgrade = is_upgrade(req);
    let host = request_host(req).ok_or(ForwardError::NoHost)?;
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    // Origin form (`/path?q`): the connection already goes to `backend`,
    // and not every app server takes the absolute form.
    let uri = Uri::from(path_and_query);
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;

    let headers = req.headers_mut();
    let protocol = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    if let (true, Some(protocol)) = (upgrade, protocol) {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Ok(value) = HeaderValue::from_str(&host) {
        headers.insert(header::HOST, value);
    }

    // gantry is the edge: what a client claims about earlier hops is not kept,
    // so apps can trust the first X-Forwarded-For address.
    headers.remove("forwarded");
    set(headers, "x-forwarded-for", &client.to_string());
    set(headers, "x-real-ip", &client.to_string());
    set(headers, "x-forwarded-proto", scheme);
    set(headers, "x-forwarded-host", &host);
    let port = host
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty());
    let port = port.unwrap_or(if scheme == "https" { "443" } else { "80" });
    set(headers, "x-forwarded-port", port);
    Ok(())
}

/// Strips hop-by-hop headers from a backend's response before it goes back
/// (a `101 Switching Protocols` keeps `Upgrade` and `Connection`: the client
/// needs them to finish its handshake).
pub fn prepare_response<B>(resp: &mut Response<B>) {
    if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().remove(header::UPGRADE);
}

/// The request's `X-Request-Id`, set to a new one if the client sent none,
/// so the app, the access log and the client all name the request the same.
pub fn request_id<B>(req: &mut Request<B>) -> HeaderValue {
    if let Some(id) = req.headers().get("x-request-id") {
        if !id.is_empty() && id.len() <= 200 {
            return id.clone();
        }
    }
    let id = new_request_id();
    req.headers_mut().insert("x-request-id", id.clone());
    id
}

/// A new request id (see [`crate::request_id::new_request_id`]).
fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&crate::request_id::new_request_id())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop for this message too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str) -> Request<()> {
        Request::builder()
            .uri("/path?q=1")
            .header("host", host)
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .expect("request")
    }

    #[test]
    fn rewrites_uri_and_sets_forwarded_headers() {
        let mut req = request("app.localhost:8080");
        let client: IpAddr = "127.0.0.1".parse().expect("ip");
        prepare_request(&mut req, client, "http").expect("prepare");
        assert_eq!(req.uri().to_string(), "/path?q=1");
        let h = req.headers();
        assert_eq!(h["host"], "app.localhost:8080");
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "a client's own claim is dropped"
        );
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.localhost:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        for gone in ["connection", "keep-alive", "x-secret"] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
    }

    #[test]
    fn h2_authority_becomes_host() {
        let mut req = Request::builder()
            .uri("https://app.example.com/x")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        prepare_request(&mut req, "::1".parse().expect("ip"), "https").expect("prepare");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "app.example.com");
        assert_eq!(req.headers()["x-forwarded-port"], "443");
    }

    #[test]
    fn websocket_upgrades_keep_their_upgrade_header() {
        let mut req = Request::builder()
            .uri("/ws")
            .header("host", "app.localhost")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .expect("request");
        assert!(is_upgrade(&req));
        prepare_request(&mut req, "::1".parse().expect("ip"), "http").expect("prepare");
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers()["connection"], "upgrade");
        assert!(req.headers().contains_key("sec-websocket-key"));
        let mut plain = request("app.localhost");
        prepare_request(&mut plain, "::1".parse().expect("ip"), "http").expect("prepare");
        assert!(!plain.headers().contains_key("upgrade"));
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut req = request("a.test");
        let made = request_id(&mut req);
        assert_eq!(made.len(), 32);
        assert_eq!(req.headers()["x-request-id"], made);
        let mut other = request("a.test");
        assert_ne!(request_id(&mut other), made, "ids are unique");
        let mut given = Request::builder()
            .header("x-request-id", "abc-123")
            .body(())
            .expect("request");
        assert_eq!(request_id(&mut given), "abc-123");
    }

    #[test]
    fn missing_host_is_an_error() {
        let mut req = Request::builder().uri("/").body(()).expect("request");
        let err = prepare_request(&mut req, "::1".parse().expect("ip"), "http");
        assert!(matches!(err, Err(ForwardError::NoHost)));
    }
}
