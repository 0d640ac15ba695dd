//! Reading an HTTP/1.1 message head and writing the one the other side
//! gets: hop-by-hop headers stripped (RFC 9110 §7.6.1), `X-Forwarded-*` and
//! `X-Request-Id` set, the body's framing decided (RFC 9112 §6.3).
//!
//! Parsing and rewriting happen in one pass over the bytes, with no map of
//! headers: this is the proxy's hot path. Anything odd is refused here, in
//! one place, before a byte goes to a backend: two `Host`s, a
//! `Content-Length` beside a `Transfer-Encoding`, lengths that disagree, a
//! transfer coding that does not end in `chunked` (the request smuggling
//! cases).

use std::ops::Range;

use super::framing::Framing;
use crate::hop_by_hop::HOP_BY_HOP;
use crate::request_id::new_request_id;

/// The largest request or response head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head.
const MAX_HEADERS: usize = 100;

/// Hop-by-hop headers (`Transfer-Encoding` and `Upgrade` are written back
/// when the message needs them).
fn hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("upgrade") || HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Headers about earlier hops that the proxy sets itself: gantry is the
/// edge, so whatever a client claims there is dropped.
const SET_BY_PROXY: [&str; 8] = [
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
];

/// Why a head was refused; each maps to the status the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request header section too large")]
    TooLarge,
    #[error("the backend sent a malformed response: {0}")]
    BadResponse(&'static str),
    /// Not HTTP/1.1 (HTTP/1.0, or the HTTP/2 preface): for the general path.
    #[error("not an HTTP/1.1 request")]
    OtherVersion,
}

impl HeadError {
    /// The status code for the client.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::BadResponse(_) => 502,
            HeadError::OtherVersion => 505,
        }
    }
}

/// What the connection knows when it reads a request: who sent it and how.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address, as written in `X-Forwarded-For`.
    pub ip: String,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// The `X-Request-Id` of one request: the client's (when sane) or a new one.
#[derive(Debug, Clone)]
pub enum RequestId {
    Made([u8; 32]),
    Given(Box<[u8]>),
}

impl RequestId {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Made(id) => id,
            RequestId::Given(id) => id,
        }
    }
}

/// A parsed request head; ranges point into the buffer it was read from.
#[derive(Debug)]
pub struct RequestHead {
    /// Length of the head, blank line included.
    pub len: usize,
    pub method: Range<usize>,
    /// Origin form (`/path?query`), also for an absolute-form request.
    pub target: Range<usize>,
    /// As the client sent it, port included.
    pub host: Range<usize>,
    pub framing: Framing,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// A protocol switch (WebSocket) is asked for.
    pub upgrade: bool,
    /// `Expect: 100-continue` was sent (the proxy answers it itself).
    pub expect_continue: bool,
    pub is_head: bool,
    pub is_connect: bool,
    /// Safe to send again if a reused backend connection closed under it.
    pub idempotent: bool,
    pub content_length: Option<u64>,
    pub request_id: RequestId,
}

/// Parses the request head at the front of `buf`; on success, also writes
/// the head to send upstream into `out` (cleared first). `Ok(None)`: the head
/// is not complete yet.
pub fn parse_request(
    buf: &[u8],
    peer: &Peer,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::OtherVersion),
        Err(_) => return Err(HeadError::Malformed("invalid request line or header")),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if version != 1 {
        return Err(HeadError::OtherVersion);
    }
    let range = |s: &[u8]| offset(buf, s);
    let method_range = range(method.as_bytes());

    // The absolute form names the host itself, and wins over `Host`.
    let (mut target, mut host) = (range(path.as_bytes()), None);
    if let Some((authority, rest)) = split_absolute(path) {
        host = Some(range(authority.as_bytes()));
        target = if rest.is_empty() {
            // "http://host" means "/"; keep a range that reads as "/".
            let slash = method_range.end; // never read: see origin_target
            slash..slash
        } else {
            range(rest.as_bytes())
        };
    }

    let mut keep_alive = true;
    let (mut upgrade_token, mut upgrade_value) = (false, None);
    let mut named: Vec<&str> = Vec::new();
    let (mut length, mut chunked, mut coding) = (None::<u64>, false, None::<&[u8]>);
    let (mut host_header, mut expect_continue, mut request_id) = (None, false, None);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    upgrade_token = true;
                } else {
                    named.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(HeadError::Malformed("more than one Host header"));
            }
            host_header = Some(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err(HeadError::Malformed(
                    "more than one Transfer-Encoding header",
                ));
            }
            coding = Some(h.value);
            chunked = last_token_is(h.value, "chunked");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("x-request-id")
            && !h.value.is_empty()
            && h.value.len() <= 200
        {
            request_id = Some(h.value);
        }
    }
    let host = match (host, host_header) {
        (Some(h), _) => h,
        (None, Some(value)) => range(value),
        (None, None) => return Err(HeadError::Malformed("no Host header")),
    };
    if !valid_host(&buf[host.clone()]) {
        return Err(HeadError::Malformed("invalid Host"));
    }
    let framing = match (coding, length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (Some(_), None) if !chunked => {
            return Err(HeadError::Malformed(
                "a transfer coding that does not end in chunked",
            ))
        }
        (Some(_), None) => Framing::Chunked,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Empty,
    };
    let upgrade = upgrade_token && upgrade_value.is_some();
    let request_id = match request_id {
        Some(given) => RequestId::Given(given.into()),
        None => RequestId::Made(new_request_id()),
    };

    // The head the backend gets.
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin_target(buf, &target));
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(&buf[host.clone()]);
    out.extend_from_slice(b"\r\n");
    for h in req.headers.iter() {
        let name = h.name;
        if hop_by_hop(name)
            || SET_BY_PROXY.iter().any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case("expect")
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        header(out, name.as_bytes(), h.value);
    }
    if let Some(coding) = coding {
        header(out, b"transfer-encoding", coding);
    }
    if let (true, Some(protocol)) = (upgrade, upgrade_value) {
        header(out, b"upgrade", protocol);
        header(out, b"connection", b"upgrade");
    }
    let host_value = &buf[host.clone()];
    header(out, b"x-forwarded-for", peer.ip.as_bytes());
    header(out, b"x-real-ip", peer.ip.as_bytes());
    header(out, b"x-forwarded-proto", peer.scheme.as_bytes());
    header(out, b"x-forwarded-host", host_value);
    header(out, b"x-forwarded-port", port_of(host_value, peer.scheme));
    header(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"\r\n");

    let is_head = method == "HEAD";
    Ok(Some(RequestHead {
        len,
        method: method_range,
        target,
        host,
        framing,
        keep_alive,
        upgrade,
        expect_continue,
        is_head,
        is_connect: method == "CONNECT",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        content_length: length,
        request_id,
    }))
}

impl RequestHead {
    /// The origin-form target (`/` for an absolute form without a path).
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        origin_target(buf, &self.target)
    }
}

fn origin_target<'a>(buf: &'a [u8], target: &Range<usize>) -> &'a [u8] {
    if target.is_empty() {
        b"/"
    } else {
        &buf[target.clone()]
    }
}

/// What the client gets back, and how its body is framed.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Length of the head, blank line included.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// A `1xx` other than `101`: dropped, the real response follows.
    pub interim: bool,
    /// The backend connection can carry another request after this one.
    pub backend_keep_alive: bool,
    /// The client connection ends after this response.
    pub close_client: bool,
}

/// What the response depends on from its request.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub is_head: bool,
    pub upgrade: bool,
    /// The proxy closes the client connection after the response anyway.
    pub close: bool,
}

/// Parses the response head at the front of `buf` and writes the client's
/// head into `out` (cleared first); `Ok(None)`: not complete yet.
pub fn parse_response(
    buf: &[u8],
    asked: Asked,
    request_id: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HeadError::BadResponse("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::BadResponse("invalid status line or header")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HeadError::BadResponse("incomplete status line"));
    };
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(ResponseHead {
            len,
            status,
            framing: Framing::Empty,
            interim: true,
            backend_keep_alive: true,
            close_client: false,
        }));
    }
    let switching = status == 101;
    if switching && !asked.upgrade {
        return Err(HeadError::BadResponse(
            "101 Switching Protocols without an upgrade",
        ));
    }

    let mut keep_alive = version == 1;
    let mut named: Vec<&str> = Vec::new();
    let (mut length, mut coding) = (None::<u64>, None::<&[u8]>);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case("keep-alive")
                    && !token.eq_ignore_ascii_case("upgrade")
                {
                    named.push(token);
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n =
                parse_length(h.value).ok_or(HeadError::BadResponse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadResponse("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err(HeadError::BadResponse(
                    "more than one Transfer-Encoding header",
                ));
            }
            coding = Some(h.value);
        }
    }
    let framing = if switching {
        Framing::UntilClose
    } else if asked.is_head || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(coding) = coding {
        // A length beside a coding is ignored (and not forwarded); the
        // connection is not reused after such a message.
        keep_alive &= length.is_none();
        if last_token_is(coding, "chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let close_client = !switching && (asked.close || framing == Framing::UntilClose);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse only takes three-digit codes.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        let keep = if switching {
            // The client needs Upgrade and Connection to finish its handshake.
            !name.eq_ignore_ascii_case("x-request-id")
        } else {
            !(hop_by_hop(name)
                || name.eq_ignore_ascii_case("x-request-id")
                || named.iter().any(|n| name.eq_ignore_ascii_case(n))
                || (coding.is_some() && name.eq_ignore_ascii_case("content-length")))
        };
        if keep {
            header(out, name.as_bytes(), h.value);
        }
    }
    if let (false, Some(coding), false) = (switching, coding, framing == Framing::Empty) {
        header(out, b"transfer-encoding", coding);
    }
    header(out, b"x-request-id", request_id);
    if close_client {
        header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        interim: false,
        backend_keep_alive: keep_alive,
        close_client,
    }))
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where `part` (a sub-slice of `buf`) sits in `buf`.
fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// `http://authority/rest` → `(authority, "/rest")`.
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    Some((authority, &rest[end..]))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn last_token_is(value: &[u8], token: &str) -> bool {
    tokens(value)
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A host name or address with an optional port: nothing that could split
/// a header or a URL.
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

fn port_of<'a>(host: &'a [u8], scheme: &str) -> &'a [u8] {
    let port = host
        .iter()
        .rposition(|b| *b == b':')
        .map(|i| &host[i + 1..])
        .filter(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    port.unwrap_or(if scheme == "https" { b"443" } else { b"80" })
}

#[cfg(test)]
mod tests;
