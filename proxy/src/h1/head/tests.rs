use super::*;

fn peer() -> Peer {
    Peer {
        ip: "10.1.2.3".into(),
        scheme: "http",
    }
}

/// The upstream head for `raw` (request ids replaced by `ID`), or the error.
fn upstream(raw: &str) -> Result<String, HeadError> {
    let mut out = Vec::new();
    let head = parse_request(raw.as_bytes(), &peer(), &mut out)?.expect("complete head");
    let id = String::from_utf8_lossy(head.request_id.as_bytes()).into_owned();
    Ok(String::from_utf8_lossy(&out).replace(&id, "ID"))
}

fn request(raw: &str) -> RequestHead {
    let mut out = Vec::new();
    parse_request(raw.as_bytes(), &peer(), &mut out)
        .expect("valid")
        .expect("complete")
}

#[test]
fn strips_hop_by_hop_and_sets_forwarded_headers() {
    let got = upstream(
        "GET /path?q=1 HTTP/1.1\r\nHost: App.localhost:8080\r\nConnection: keep-alive, x-secret\r\n\
         X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
         TE: trailers\r\nProxy-Authorization: x\r\nAccept: */*\r\n\r\n",
    )
    .expect("valid");
    assert_eq!(
        got,
        "GET /path?q=1 HTTP/1.1\r\nhost: App.localhost:8080\r\nAccept: */*\r\n\
         x-forwarded-for: 10.1.2.3\r\nx-real-ip: 10.1.2.3\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: App.localhost:8080\r\nx-forwarded-port: 8080\r\nx-request-id: ID\r\n\r\n"
    );
}

#[test]
fn absolute_form_becomes_origin_form_and_names_the_host() {
    let got = upstream("GET http://app.test HTTP/1.1\r\nHost: other.test\r\n\r\n").expect("valid");
    assert!(
        got.starts_with("GET / HTTP/1.1\r\nhost: app.test\r\n"),
        "{got}"
    );
    let got = upstream("GET https://u@app.test:444/x?y HTTP/1.1\r\n\r\n").expect("valid");
    assert!(
        got.starts_with("GET /x?y HTTP/1.1\r\nhost: app.test:444\r\n"),
        "{got}"
    );
    assert!(got.contains("x-forwarded-port: 444\r\n"), "{got}");
}

#[test]
fn framing_keep_alive_and_upgrades() {
    let r = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(
        (r.framing, r.keep_alive, r.idempotent),
        (Framing::Length(5), true, false)
    );
    assert_eq!(
        r.len,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n".len()
    );
    let r = request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.framing, r.keep_alive, r.idempotent),
        (Framing::Chunked, false, true)
    );
    let r =
        request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(r.upgrade);
    let got = upstream(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .expect("valid");
    assert!(
        got.contains("upgrade: websocket\r\nconnection: upgrade\r\n"),
        "{got}"
    );
    let plain = upstream("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").expect("valid");
    assert!(
        !plain.contains("upgrade"),
        "an Upgrade not named in Connection is dropped: {plain}"
    );
    let chunked = upstream(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("valid");
    assert!(
        chunked.contains("transfer-encoding: chunked\r\n"),
        "{chunked}"
    );
    assert!(!chunked.to_lowercase().contains("expect"), "{chunked}");
    let r =
        request("HEAD / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nX-Request-Id: abc\r\n\r\n");
    assert!(r.is_head && r.expect_continue);
    assert_eq!(r.request_id.as_bytes(), b"abc");
}

#[test]
fn smuggling_shapes_and_bad_heads_are_refused() {
    for (raw, why) in [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "conflicting"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", "invalid Content-Length"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "does not end in chunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "more than one"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
        ("GET / HTTP/1.1\r\n\r\n", "no Host"),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "invalid Host"),
        ("GET / HTTP/1.1\r\nBad Header: 1\r\nHost: a\r\n\r\n", "invalid request line"),
    ] {
        match upstream(raw) {
            Err(HeadError::Malformed(reason)) => assert!(reason.contains(why), "{raw:?}: {reason}"),
            other => panic!("{raw:?} gave {other:?}"),
        }
    }
    assert_eq!(
        upstream("GET / HTTP/1.0\r\n\r\n"),
        Err(HeadError::OtherVersion)
    );
    assert_eq!(
        upstream("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Err(HeadError::OtherVersion)
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
        "y".repeat(MAX_HEAD)
    );
    let mut out = Vec::new();
    assert!(matches!(
        parse_request(huge.as_bytes(), &peer(), &mut out),
        Err(HeadError::TooLarge)
    ));
    assert!(matches!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &peer(), &mut out),
        Ok(None)
    ));
}

/// The client's head for a backend response, or the error.
fn downstream(raw: &str, asked: Asked) -> Result<(String, ResponseHead), HeadError> {
    let mut out = Vec::new();
    let head = parse_response(raw.as_bytes(), asked, b"ID", &mut out)?.expect("complete");
    Ok((String::from_utf8_lossy(&out).into_owned(), head))
}

const GET: Asked = Asked {
    is_head: false,
    upgrade: false,
    close: false,
};

#[test]
fn responses_keep_their_framing_and_lose_hop_by_hop_headers() {
    let (head, r) = downstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nContent-Type: text/plain\r\n\r\nhello world",
        GET,
    )
    .expect("valid");
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\nx-request-id: ID\r\n\r\n"
    );
    assert_eq!(
        (r.framing, r.backend_keep_alive, r.close_client),
        (Framing::Length(11), true, false)
    );

    let (head, r) =
        downstream("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", GET).expect("valid");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(r.framing, Framing::Chunked);

    let (head, r) = downstream("HTTP/1.0 200 OK\r\n\r\n", GET).expect("valid");
    assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    assert_eq!(
        (r.framing, r.backend_keep_alive, r.close_client),
        (Framing::UntilClose, false, true)
    );

    let head_request = Asked {
        is_head: true,
        ..GET
    };
    let (_, r) = downstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        head_request,
    )
    .expect("valid");
    assert_eq!(r.framing, Framing::Empty);
    let (_, r) = downstream(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        GET,
    )
    .expect("valid");
    assert_eq!(r.framing, Framing::Empty);

    let (_, r) = downstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        GET,
    )
    .expect("valid");
    assert_eq!((r.framing, r.backend_keep_alive), (Framing::Chunked, false));

    let (_, r) = downstream("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", GET).expect("valid");
    assert!(r.interim);

    let upgrade = Asked {
        upgrade: true,
        ..GET
    };
    let (head, r) = downstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        upgrade,
    )
    .expect("valid");
    assert!(
        head.contains("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
        "{head}"
    );
    assert!(!r.close_client);
    assert!(matches!(
        downstream("HTTP/1.1 101 Switching Protocols\r\n\r\n", GET),
        Err(HeadError::BadResponse(_))
    ));
    assert!(matches!(
        downstream(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            GET
        ),
        Err(HeadError::BadResponse(_))
    ));
    let (head, _) = downstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Asked { close: true, ..GET },
    )
    .expect("valid");
    assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
}
