//! The proxy's HTTP behaviour, end to end over real sockets: a real hyper
//! backend, the proxy serving on loopback, and clients speaking raw HTTP/1.1
//! (so what goes over the wire is exactly what the test says).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use gantry_proxy::{Backend, Balance, Proxy, Route, RouteTable, Settings};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the test backend saw and can be told.
#[derive(Default)]
struct Backstage {
    uploaded: AtomicU64,
    /// The second SSE event goes out only once the test saw the first.
    sse_go: Notify,
    /// `/hold` requests wait here until notified.
    release: Notify,
    served: AtomicU64,
    /// Connections the backend accepted (pooled ones are reused).
    connections: AtomicU64,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp
}

async fn backend_handle(stage: Arc<Backstage>, mut req: Request<Incoming>) -> Response<Body> {
    stage.served.fetch_add(1, Ordering::Relaxed);
    match req.uri().path() {
        "/headers" => {
            let mut out = String::new();
            for (name, value) in req.headers() {
                out.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            text(StatusCode::OK, out)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            n += data.len() as u64;
                        }
                    }
                    Err(_) => return text(StatusCode::BAD_REQUEST, "broken body"),
                }
            }
            stage.uploaded.store(n, Ordering::Relaxed);
            text(StatusCode::OK, n.to_string())
        }
        "/sse" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("data: one\n\n")))).await;
                stage.sse_go.notified().await;
                let _ = tx.send(Ok(Frame::data(Bytes::from("data: two\n\n")))).await;
            });
            let stream = tokio_stream_from(rx);
            let mut resp = Response::new(StreamBody::new(stream).boxed());
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("value"));
            resp
        }
        "/hold" => {
            stage.release.notified().await;
            text(StatusCode::OK, "held")
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
            resp.headers_mut()
                .insert("upgrade", "websocket".parse().expect("value"));
            resp.headers_mut()
                .insert("connection", "upgrade".parse().expect("value"));
            resp
        }
        _ => text(StatusCode::OK, "hello"),
    }
}

/// A stream over an mpsc receiver.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

async fn start_backend() -> (SocketAddr, Arc<Backstage>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stage = Arc::new(Backstage::default());
    let shared = stage.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let stage = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let stage = stage.clone();
                    async move { Ok::<_, Infallible>(backend_handle(stage, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, stage)
}

struct Running {
    addr: SocketAddr,
    routes: Arc<RouteTable>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start_proxy(settings: Settings) -> Running {
    start_proxy_with(settings, None).await
}

async fn start_proxy_with(
    settings: Settings,
    certs: Option<Arc<gantry_proxy::CertStore>>,
) -> Running {
    let routes = Arc::new(RouteTable::new());
    let proxy = Arc::new(Proxy::with_settings(
        routes.clone(),
        Default::default(),
        certs,
        settings,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(gantry_proxy::serve(listener, proxy, shutdown.clone()));
    Running {
        addr,
        routes,
        _shutdown: shutdown.drop_guard(),
    }
}

fn route(routes: &RouteTable, host: &str, backends: &[SocketAddr]) {
    routes.set(
        host,
        Route::new("app", backends.iter().copied().map(Backend::new).collect()),
    );
}

/// Sends `head` (and nothing else) and reads the whole response until the
/// server closes (the requests say `Connection: close`).
async fn exchange(proxy: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_and_request_ids() {
    let (backend, _) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let response = exchange(
        proxy.addr,
        b"GET /headers HTTP/1.1\r\nHost: app.test:8080\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: given-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let lower = response.to_ascii_lowercase();
    for want in [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: app.test:8080",
        "x-forwarded-port: 8080",
        "x-request-id: given-1",
    ] {
        assert!(
            lower.contains(want),
            "backend did not get {want}:\n{response}"
        );
    }
    assert!(
        !lower.contains("6.6.6.6"),
        "a client's own X-Forwarded-For is dropped"
    );
    let response = exchange(proxy.addr, &get("app.test", "/")).await;
    let id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("the response names its request");
    assert_eq!(id.trim().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_get_404_a_dead_backend_502_and_then_503() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = start_proxy(Settings::default()).await;
    assert_eq!(
        status_of(&exchange(proxy.addr, &get("nobody.test", "/")).await),
        404
    );
    route(&proxy.routes, "app.test", &[dead]);
    let first = exchange(proxy.addr, &get("app.test", "/")).await;
    assert_eq!(status_of(&first), 502, "{first}");
    // Refused once, it is left out for a while: no replica is healthy.
    let second = exchange(proxy.addr, &get("app.test", "/")).await;
    assert_eq!(status_of(&second), 503, "{second}");
    assert!(
        second.to_ascii_lowercase().contains("retry-after: 2"),
        "{second}"
    );
    route(&proxy.routes, "stopped.test", &[]);
    assert_eq!(
        status_of(&exchange(proxy.addr, &get("stopped.test", "/")).await),
        503
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_replica_is_skipped_without_failing_requests() {
    let (alive, stage) = start_backend().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[dead, alive]);
    for _ in 0..10 {
        let response = exchange(proxy.addr, &get("app.test", "/")).await;
        assert_eq!(status_of(&response), 200, "{response}");
    }
    assert_eq!(stage.served.load(Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    let (backend, _) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("handshake in time")
            .expect("read");
        assert!(
            n == 1,
            "closed during the handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"ping"[..], b"a second frame"] {
        stream.write_all(message).await.expect("write");
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(echo, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_unbuffered() {
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(&get("app.test", "/sse"))
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // The backend sends the second event only after the first came through
    // the proxy: a proxy that buffered would deadlock here and time out.
    while !String::from_utf8_lossy(&seen).contains("data: one") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the first event arrives on its own")
            .expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
    stage.sse_go.notify_one();
    while !String::from_utf8_lossy(&seen).contains("data: two") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the second event arrives")
            .expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_stream_through_in_flat_memory() {
    const SIZE: u64 = 512 * 1024 * 1024;
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let before = rss_kb();
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    let chunk = vec![b'x'; 1 << 20];
    let peak = Arc::new(Mutex::new(0u64));
    for i in 0..SIZE / chunk.len() as u64 {
        stream.write_all(&chunk).await.expect("write body");
        if i % 64 == 0 {
            let mut p = peak.lock().expect("lock");
            *p = (*p).max(rss_kb());
        }
    }
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    assert_eq!(status_of(&out), 200, "{out}");
    assert_eq!(stage.uploaded.load(Ordering::Relaxed), SIZE);
    let grew_mb = peak.lock().expect("lock").saturating_sub(before) / 1024;
    assert!(
        grew_mb < 64,
        "memory grew by {grew_mb} MB while 512 MB went through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_refuse_large_requests() {
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings {
        max_body: Some(1000),
        ..Settings::default()
    })
    .await;
    route(&proxy.routes, "app.test", &[backend]);
    let declared = exchange(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&declared), 413, "{declared}");
    assert_eq!(
        stage.served.load(Ordering::Relaxed),
        0,
        "never reached the app"
    );
    // A chunked body declares no length: it is cut off once over the limit.
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"1f4\r\n");
        raw.extend_from_slice(&[b'y'; 500]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let chunked = exchange(proxy.addr, &raw).await;
    assert_ne!(status_of(&chunked), 200, "{chunked}");
    assert!(stage.uploaded.load(Ordering::Relaxed) <= 1000);
    let small = exchange(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(status_of(&small), 200, "{small}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_timed_out() {
    let proxy = start_proxy(Settings {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..Settings::default()
    })
    .await;
    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a slow client kept its connection");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A connection that never sends a byte.
    let mut idle = TcpStream::connect(proxy.addr).await.expect("connect");
    let read = tokio::time::timeout(Duration::from_secs(6), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_replica() {
    let (busy, busy_stage) = start_backend().await;
    let (free, free_stage) = start_backend().await;
    let proxy = start_proxy(Settings {
        balance: Balance::LeastConnections,
        ..Settings::default()
    })
    .await;
    route(&proxy.routes, "app.test", &[busy]);
    // One long request on the first replica...
    let held = tokio::spawn(exchange(proxy.addr, get("app.test", "/hold").leak()));
    while busy_stage.served.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    route(&proxy.routes, "app.test", &[busy, free]);
    // ...so every new one goes to the other.
    for _ in 0..6 {
        assert_eq!(
            status_of(&exchange(proxy.addr, &get("app.test", "/")).await),
            200
        );
    }
    assert_eq!(free_stage.served.load(Ordering::Relaxed), 6);
    assert_eq!(busy_stage.served.load(Ordering::Relaxed), 1);
    busy_stage.release.notify_one();
    assert_eq!(status_of(&held.await.expect("join")), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_to_https_only_for_hosts_with_their_own_certificate() {
    let (backend, _) = start_backend().await;
    let certs = Arc::new(gantry_proxy::CertStore::new());
    let (chain, key) = gantry_proxy::tls::self_signed(&["shop.example.com".into()]).expect("cert");
    certs.set(
        "shop.example.com",
        Arc::new(gantry_proxy::tls::certified_key(chain.as_bytes(), key.as_bytes()).expect("key")),
    );
    let proxy = start_proxy_with(
        Settings {
            https_port: 8443,
            ..Settings::default()
        },
        Some(certs),
    )
    .await;
    for host in ["shop.example.com", "plain.example.com"] {
        proxy.routes.set(
            host,
            Route::new("app", vec![Backend::new(backend)]).with_https_redirect(true),
        );
    }
    let redirected = exchange(proxy.addr, &get("shop.example.com", "/cart?x=1")).await;
    assert_eq!(status_of(&redirected), 308, "{redirected}");
    assert!(
        redirected
            .to_ascii_lowercase()
            .contains("location: https://shop.example.com:8443/cart?x=1"),
        "{redirected}"
    );
    let served = exchange(proxy.addr, &get("plain.example.com", "/")).await;
    assert_eq!(
        status_of(&served),
        200,
        "no certificate yet: served over HTTP"
    );
}

/// Reads from `stream` until `pattern` has arrived (or the stream ends).
async fn read_until(stream: &mut TcpStream, pattern: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(pattern) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_share_one_pooled_backend_connection() {
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    // Three requests in one write: a GET, a chunked upload, and a last one
    // that closes; the answers come back in order on the one connection.
    let raw = "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n\
               POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
               3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n\
               GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let all = exchange(proxy.addr, raw.as_bytes()).await;
    let answers: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{all}");
    assert!(
        answers[0].starts_with("200") && answers[0].ends_with("hello"),
        "{all}"
    );
    assert!(
        answers[1].starts_with("200") && answers[1].ends_with("5"),
        "{all}"
    );
    assert!(answers[2].contains("x-forwarded-host: app.test"), "{all}");
    assert!(
        answers[2]
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{all}"
    );
    assert_eq!(stage.uploaded.load(Ordering::Relaxed), 5);
    // Later requests on new client connections reuse the parked backend one.
    for _ in 0..3 {
        let response = exchange(proxy.addr, &get("app.test", "/")).await;
        assert_eq!(status_of(&response), 200, "{response}");
    }
    assert_eq!(stage.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_before_the_body_is_sent() {
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(b"hello").await.expect("write body");
    let mut rest = String::new();
    stream.read_to_string(&mut rest).await.expect("read");
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with('5'),
        "{rest}"
    );
    assert_eq!(stage.uploaded.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_refused_before_reaching_the_app() {
    let (backend, stage) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    for raw in [
        // The request smuggling shapes: two framings, two lengths, two hosts.
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let response = exchange(proxy.addr, raw.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{raw:?}: {response}");
        assert!(response.contains("gantry"), "{response}");
    }
    assert_eq!(stage.served.load(Ordering::Relaxed), 0);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    assert_eq!(status_of(&exchange(proxy.addr, huge.as_bytes()).await), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_and_h2c_clients_are_served_too() {
    let (backend, _) = start_backend().await;
    let proxy = start_proxy(Settings::default()).await;
    route(&proxy.routes, "app.test", &[backend]);
    let old = exchange(proxy.addr, b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.0 200") && old.ends_with("hello"),
        "{old}"
    );

    // HTTP/2 with prior knowledge over plain TCP (h2c).
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("http://app.test/headers")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2c response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("x-forwarded-host: app.test"), "{body}");
}

/// Collects what a `tracing` subscriber writes, for the access-log test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_log_has_one_line_per_request() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (backend, _) = start_backend().await;
    let proxy = start_proxy(Settings {
        access_log: true,
        ..Settings::default()
    })
    .await;
    route(&proxy.routes, "app.test", &[backend]);
    assert_eq!(
        status_of(&exchange(proxy.addr, &get("app.test", "/logged?x=1")).await),
        200
    );
    assert_eq!(
        status_of(&exchange(proxy.addr, &get("nobody.test", "/")).await),
        404
    );
    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("gantry_proxy::access"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("method=GET") && lines[0].contains("host=app.test"),
        "{log}"
    );
    assert!(
        lines[0].contains("path=/logged?x=1") && lines[0].contains("status=200"),
        "{log}"
    );
    assert!(lines[0].contains(&format!("backend={backend}")), "{log}");
    assert!(
        lines[1].contains("status=404") && lines[1].contains("backend=-"),
        "{log}"
    );
}
