//! The proxy as its own process's core (`daemon::run`): driven over its
//! control socket, persisting routes, and coming back from disk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gantry_proxy::control::{self, Request};
use gantry_proxy::daemon::{self, DaemonConfig};
use gantry_proxy::state::RouteSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn config(dir: &Path) -> DaemonConfig {
    DaemonConfig {
        http_listen: free_addr(),
        https_listen: free_addr(),
        socket: dir.join("run/proxy.sock"),
        pid_file: dir.join("run/proxy.pid"),
        state_file: dir.join("proxy/state.json"),
        certs_dir: dir.join("certs"),
        settings: gantry_proxy::Settings::default(),
        takeover: false,
    }
}

/// A backend that answers every request with `body` after `delay`.
async fn backend(body: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn get(proxy: SocketAddr, host: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out))
        .await
        .expect("in time")
        .expect("read");
    out
}

async fn wait_ready(socket: &Path) {
    for _ in 0..200 {
        if control::call(socket, &Request::Status).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_set_over_the_socket_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let app = backend("from the app", Duration::ZERO).await;

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon::run(config.clone(), None, shutdown.clone()));
    wait_ready(&config.socket).await;
    // A second proxy on the same socket refuses to start.
    let second = daemon::run(config.clone(), None, CancellationToken::new()).await;
    assert!(second.is_err(), "two proxies on one home");

    control::call(
        &config.socket,
        &Request::Route {
            route: RouteSpec {
                host: "app.test".into(),
                name: "app".into(),
                backends: vec![app],
                https_redirect: false,
            },
        },
    )
    .await
    .expect("route");
    control::call(
        &config.socket,
        &Request::Alias {
            alias: "shop.example.com".into(),
            host: "app.test".into(),
        },
    )
    .await
    .expect("alias");
    assert!(get(config.http_listen, "app.test")
        .await
        .ends_with("from the app"));
    assert!(get(config.http_listen, "shop.example.com")
        .await
        .ends_with("from the app"));
    let status = control::call(&config.socket, &Request::Status)
        .await
        .expect("status");
    assert_eq!(status.pid, Some(std::process::id()));

    shutdown.cancel();
    running.await.expect("join").expect("clean stop");
    assert!(!config.socket.exists(), "the socket goes with the proxy");

    // Started again, it serves the same routes before anyone tells it anything.
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon::run(config.clone(), None, shutdown.clone()));
    wait_ready(&config.socket).await;
    assert!(get(config.http_listen, "app.test")
        .await
        .ends_with("from the app"));
    assert!(get(config.http_listen, "shop.example.com")
        .await
        .ends_with("from the app"));

    // Replace makes the table exactly what it is given.
    control::call(
        &config.socket,
        &Request::Replace {
            state: Default::default(),
        },
    )
    .await
    .expect("replace");
    assert!(get(config.http_listen, "app.test")
        .await
        .starts_with("HTTP/1.1 404"));
    shutdown.cancel();
    running.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_requests_in_flight_to_a_removed_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let slow = backend("slow", Duration::from_millis(800)).await;
    let fast = backend("fast", Duration::ZERO).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon::run(config.clone(), None, shutdown.clone()));
    wait_ready(&config.socket).await;
    let route = |addr| Request::Route {
        route: RouteSpec {
            host: "app.test".into(),
            name: "app".into(),
            backends: vec![addr],
            https_redirect: false,
        },
    };
    control::call(&config.socket, &route(slow))
        .await
        .expect("route");
    let in_flight = tokio::spawn(get(config.http_listen, "app.test"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    control::call(&config.socket, &route(fast))
        .await
        .expect("switch");
    assert!(get(config.http_listen, "app.test").await.ends_with("fast"));
    let started = std::time::Instant::now();
    let drained = control::call(
        &config.socket,
        &Request::Drain {
            backends: vec![slow],
            timeout_ms: 5000,
        },
    )
    .await
    .expect("drain");
    assert_eq!(drained.left, Some(0));
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    assert!(
        in_flight.await.expect("join").ends_with("slow"),
        "the old request finished"
    );
    shutdown.cancel();
    running.await.expect("join").expect("clean stop");
}

/// One keep-alive client: request after request on one connection (a new one
/// when the proxy says `Connection: close`), until `stop`. Returns (answered,
/// failed).
async fn keep_alive_client(
    proxy: SocketAddr,
    host: &'static str,
    stop: CancellationToken,
) -> (usize, usize) {
    let (mut answered, mut failed) = (0, 0);
    let mut conn: Option<TcpStream> = None;
    while !stop.is_cancelled() {
        if conn.is_none() {
            match TcpStream::connect(proxy).await {
                Ok(stream) => conn = Some(stream),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            }
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut response = Vec::new();
        let outcome: std::io::Result<bool> = async {
            stream.write_all(request.as_bytes()).await?;
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                response.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if response.len() >= end + 4 + length {
                        return Ok(text[..end].contains("connection: close"));
                    }
                }
            }
        }
        .await;
        match outcome {
            Ok(close) => {
                answered += 1;
                if close {
                    conn = None;
                }
            }
            Err(_) => {
                failed += 1;
                conn = None;
            }
        }
    }
    (answered, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_on_the_same_sockets_loses_no_request_and_retires_the_old_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let app = backend("from the app", Duration::ZERO).await;
    let listeners =
        gantry_proxy::listeners::Listeners::bind(config.http_listen, config.https_listen, 2)
            .expect("bind");
    let old_stop = CancellationToken::new();
    let old = tokio::spawn(daemon::run(
        config.clone(),
        Some(listeners),
        old_stop.clone(),
    ));
    wait_ready(&config.socket).await;
    control::call(
        &config.socket,
        &Request::Route {
            route: RouteSpec {
                host: "app.test".into(),
                name: "app".into(),
                backends: vec![app],
                https_redirect: false,
            },
        },
    )
    .await
    .expect("route");

    let stop_load = CancellationToken::new();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(keep_alive_client(
                config.http_listen,
                "app.test",
                stop_load.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new proxy gets copies of the old one's sockets, serves, and retires it.
    let taken = control::take_listeners(&config.socket)
        .await
        .expect("listeners");
    assert_eq!(taken.names(), "http:http:https:https");
    let mut next = config.clone();
    next.takeover = true;
    let new_stop = CancellationToken::new();
    let new = tokio::spawn(daemon::run(next, Some(taken), new_stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), old)
        .await
        .expect("the old proxy exits once its connections are done")
        .expect("join")
        .expect("clean stop");
    assert!(
        config.socket.exists(),
        "the new proxy answers on the socket"
    );
    control::call(&config.socket, &Request::Status)
        .await
        .expect("the new proxy answers");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.cancel();
    let (mut answered, mut failed) = (0, 0);
    for client in clients {
        let (a, f) = client.await.expect("join");
        answered += a;
        failed += f;
    }
    assert!(answered > 100, "{answered} answered");
    assert_eq!(failed, 0, "{failed} of {} failed", answered + failed);
    // It kept the routes the old one saved.
    assert!(get(config.http_listen, "app.test")
        .await
        .ends_with("from the app"));
    new_stop.cancel();
    new.await.expect("join").expect("clean stop");
}
