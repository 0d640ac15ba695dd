//! The hop-by-hop header list both paths strip (RFC 9110 §7.6.1): the
//! HTTP/1.1 path while it rewrites a head's bytes, the hyper path from a
//! header map.
//!
//! It is only the list: each path strips headers its own way.

/// Headers that describe one connection, not the message; never forwarded
/// as they are (`Upgrade` is too, and both paths write it back for a
/// protocol switch).
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];
