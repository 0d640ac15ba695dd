//! The HTTP/1.1 path: every HTTP/1.1 client connection, plain or TLS, is
//! served here; hyper serves HTTP/2 and HTTP/1.0 (see `hyper_path`).
//!
//! One task per client connection reads a request head, forwards it to a
//! backend over a pooled keep-alive connection, and streams the response
//! back, with no header map and no task per request: a request's head is
//! parsed and rewritten in one pass ([`head`]), and bodies pass through byte
//! for byte, their ends found by [`framing`]. Idle connections hold no
//! buffers. It knows nothing of TLS, of the hyper path or of how routes are
//! made: it reads and writes a stream and asks [`Proxy`] where a host goes.

pub(crate) mod backend;
mod deadline;
mod framing;
mod head;

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use backend::BackendConn;
use deadline::Deadline;
use framing::{BodyScan, Framing};
use head::{Asked, HeadError, Peer, RequestHead, RequestId, ResponseHead};

use crate::context::{Decision, Proxy};
use crate::counted::CountedIo;
use crate::pages::{self, Page};
use crate::request_id::new_request_id;
use crate::routes::InFlight;

/// How long an idle keep-alive connection may still send a request once the
/// proxy is stopping (it is answered with `Connection: close`): a client that
/// had one on the way is not cut off, and a quiet one is closed soon.
const LAST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// How a client connection left the HTTP/1.1 path.
pub enum Ended<I> {
    Closed,
    /// Not HTTP/1.1 (the HTTP/2 preface, an HTTP/1.0 request): the stream
    /// and the bytes already read from it, for hyper to serve.
    Handoff(I, BytesMut),
}

/// What happens to the client connection after one request.
enum Next {
    KeepAlive,
    Close,
    Handoff,
}

/// Serves HTTP/1.1 requests on `client` until it closes, times out, or
/// turns out not to speak HTTP/1.1.
pub async fn serve<I>(proxy: &Proxy, client: I, peer: SocketAddr, scheme: &'static str) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        proxy,
        client: CountedIo::new(client),
        buf: BytesMut::new(),
        peer: Peer {
            ip: peer.ip().to_string(),
            scheme,
        },
        addr: peer,
        head_wait: Deadline::default(),
        wait: Deadline::default(),
        forwarded: None,
    };
    loop {
        match conn.one_request().await {
            Next::KeepAlive => {
                if conn.buf.is_empty() {
                    // An idle connection holds no buffer.
                    conn.buf = BytesMut::new();
                }
            }
            Next::Close => {
                let _ = conn.client.shutdown().await;
                return Ended::Closed;
            }
            Next::Handoff => return Ended::Handoff(conn.client.into_inner(), conn.buf),
        }
    }
}

struct Conn<'p, I> {
    proxy: &'p Proxy,
    /// Counting the bytes each request moves, for its app's traffic.
    client: CountedIo<I>,
    /// Bytes read from the client and not yet used.
    buf: BytesMut,
    peer: Peer,
    addr: SocketAddr,
    /// For the next request head (`header_timeout`).
    head_wait: Deadline,
    /// For the backend's answer and bodies in transit.
    wait: Deadline,
    /// The route the request being answered went along, for its app's
    /// traffic counts.
    forwarded: Option<std::sync::Arc<crate::routes::Route>>,
}

/// Why a forwarded request got no response to pass on.
enum Failure {
    /// A reused connection turned out closed before any answer: the request
    /// may go again on a new one (if `written`, only an idempotent request:
    /// the backend may have acted on it before closing).
    Stale { written: bool },
    /// No response head within `response_timeout`.
    Timeout,
    /// The backend broke the protocol or the connection.
    Backend(String),
    /// The client went away or sent a body that cannot be framed: nothing
    /// more to say to it.
    Client(String),
    /// The request body passed `max_body`.
    TooLarge,
}

/// What one request's access-log line needs.
struct LogLine {
    method: String,
    host: String,
    path: String,
    started: Instant,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<'_, I> {
    async fn one_request(&mut self) -> Next {
        let proxy = self.proxy;
        let settings = proxy.settings();
        let mut up = Vec::with_capacity(512);
        let mut deadline = tokio::time::Instant::now() + settings.header_timeout;
        if proxy.is_stopping() {
            deadline = deadline.min(tokio::time::Instant::now() + LAST_REQUEST_GRACE);
        }
        let head = loop {
            if !self.buf.is_empty() {
                match head::parse_request(&self.buf, &self.peer, &mut up) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(HeadError::OtherVersion) => return Next::Handoff,
                    Err(err) => {
                        tracing::debug!(peer = %self.addr, error = %err, "refused a request");
                        let page = pages::refused(err.status(), &err.to_string());
                        self.answer(page, false, &RequestId::Made(new_request_id()), true)
                            .await;
                        return Next::Close;
                    }
                }
            }
            let waiting_idle = self.buf.is_empty() && !proxy.is_stopping();
            let read = read_more(&mut self.client, &mut self.buf);
            let got = if waiting_idle {
                tokio::select! {
                    got = self.head_wait.run(deadline, read) => got,
                    () = proxy.stopped() => {
                        // Shutdown: one more request may come, briefly.
                        deadline = deadline.min(tokio::time::Instant::now() + LAST_REQUEST_GRACE);
                        continue;
                    }
                }
            } else {
                self.head_wait.run(deadline, read).await
            };
            match got {
                Some(Ok(0)) | Some(Err(_)) => return Next::Close,
                Some(Ok(_)) => {}
                None if self.buf.is_empty() => return Next::Close,
                None => {
                    let page = pages::refused(408, "The request headers took too long to arrive.");
                    self.answer(page, false, &RequestId::Made(new_request_id()), true)
                        .await;
                    return Next::Close;
                }
            }
        };
        let log = settings.access_log.then(|| LogLine {
            method: String::from_utf8_lossy(&self.buf[head.method.clone()]).into_owned(),
            host: String::from_utf8_lossy(&self.buf[head.host.clone()]).into_owned(),
            path: String::from_utf8_lossy(head.target(&self.buf)).into_owned(),
            started: Instant::now(),
        });
        let started = Instant::now();
        let (status, backend, next) = self.handle(head, up).await;
        let (received, sent) = self.client.moved();
        let moved = crate::traffic::Moved { received, sent };
        if let Some(route) = self.forwarded.take() {
            proxy
                .traffic()
                .record(&route.name, status, started.elapsed(), moved);
        }
        if let Some(log) = log {
            tracing::info!(
                target: "gantry_proxy::access",
                peer = %self.addr, method = %log.method, host = %log.host, path = %log.path,
                proto = self.peer.scheme, status,
                backend = %backend.map_or_else(|| "-".to_owned(), |b| b.to_string()),
                ms = log.started.elapsed().as_millis() as u64,
            );
        }
        next
    }

    /// Answers one request whose head is at the front of `buf`; `up` holds
    /// the head to send upstream. Returns the status sent (0: none) and the
    /// backend used.
    async fn handle(
        &mut self,
        head: RequestHead,
        mut up: Vec<u8>,
    ) -> (u16, Option<SocketAddr>, Next) {
        let proxy = self.proxy;
        let _active = proxy.begin_request();
        let settings = proxy.settings();
        let close = !head.keep_alive || proxy.is_stopping();
        let id = head.request_id.clone();
        let is_head = head.is_head;

        // Answers the proxy gives itself.
        let local = {
            let host = std::str::from_utf8(&self.buf[head.host.clone()]).unwrap_or("");
            let target = std::str::from_utf8(head.target(&self.buf)).unwrap_or("/");
            proxy.decide(
                host,
                target,
                self.peer.scheme,
                head.content_length,
                head.is_connect,
            )
        };
        let route = match local {
            Decision::Answer(page, body_unread) => {
                let unread = body_unread || head.framing != Framing::Empty;
                return self.refuse(page, is_head, &id, close || unread, None).await;
            }
            Decision::Forward(route) => route,
        };
        self.forwarded = Some(route.clone());
        self.buf.advance(head.len);

        // The part of the body already read goes out with the head.
        let mut body = BodyScan::new(head.framing);
        let mut sent_body: u64 = 0;
        match body.scan(&self.buf) {
            Ok(used) => {
                up.extend_from_slice(&self.buf[..used]);
                self.buf.advance(used);
                sent_body += used as u64;
            }
            Err(err) => {
                let page = pages::refused(400, &err.to_string());
                return self.refuse(page, is_head, &id, true, None).await;
            }
        }
        if let Some(limit) = settings.max_body.filter(|limit| sent_body > *limit) {
            return self
                .refuse(pages::too_large(limit), is_head, &id, true, None)
                .await;
        }
        let replayable = body.is_done();
        if head.expect_continue && !replayable {
            // Answered here, as nginx does: the backend never sees Expect.
            if self
                .client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return (0, None, Next::Close);
            }
            let _ = self.client.flush().await;
        }

        let asked = Asked {
            is_head,
            upgrade: head.upgrade,
            close,
        };
        let mut failed = None;
        let mut fresh = false;
        // Another replica for a refused connection; one more try on a new
        // connection for a pooled one that turned out closed.
        let mut other_replicas = route.backends().len().saturating_sub(1);
        let mut stale_retry = true;
        loop {
            let Some(backend) = route.choose(settings.balance, proxy.routes().now(), failed) else {
                let page = pages::no_healthy_backend(&route.name);
                return self
                    .refuse(page, is_head, &id, close || !replayable, failed)
                    .await;
            };
            let addr = backend.addr;
            let in_flight = backend.begin();
            let pooled = if fresh {
                None
            } else {
                proxy.backends().take(addr)
            };
            let mut conn = match pooled {
                Some(conn) => conn,
                None => match proxy.backends().connect(addr).await {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::warn!(app = %route.name, backend = %addr, error = %err, "backend refused the connection; leaving it out for a while");
                        proxy.routes().mark_down(addr);
                        failed = Some(addr);
                        if replayable && other_replicas > 0 {
                            other_replicas -= 1;
                            continue;
                        }
                        let page = pages::bad_gateway(&route.name);
                        return self
                            .refuse(page, is_head, &id, close || !replayable, Some(addr))
                            .await;
                    }
                },
            };
            let exchanged = self
                .exchange(&mut conn, &up, &mut body, &mut sent_body, asked, &id)
                .await;
            let (resp, down, upload_done) = match exchanged {
                Ok(ok) => ok,
                Err(Failure::Stale { written })
                    if replayable && stale_retry && (!written || head.idempotent) =>
                {
                    stale_retry = false;
                    tracing::debug!(backend = %addr, "a pooled connection closed under a request; sending it again");
                    fresh = true;
                    continue;
                }
                Err(failure) => {
                    let page = match failure {
                        Failure::Timeout => {
                            tracing::warn!(app = %route.name, backend = %addr, "backend sent no response headers in time");
                            pages::gateway_timeout(&route.name)
                        }
                        Failure::Client(why) => {
                            tracing::debug!(peer = %self.addr, reason = %why, "request abandoned");
                            return (0, Some(addr), Next::Close);
                        }
                        Failure::TooLarge => pages::too_large(settings.max_body.unwrap_or(0)),
                        Failure::Stale { .. } => {
                            tracing::warn!(app = %route.name, backend = %addr, "backend closed the connection before a response");
                            pages::bad_gateway(&route.name)
                        }
                        Failure::Backend(why) => {
                            tracing::warn!(app = %route.name, backend = %addr, error = %why, "backend failed");
                            pages::bad_gateway(&route.name)
                        }
                    };
                    let close = close || !body.is_done();
                    return self.refuse(page, is_head, &id, close, Some(addr)).await;
                }
            };
            let status = resp.status;
            let next = self
                .respond(conn, addr, resp, down, upload_done, in_flight)
                .await;
            return (status, Some(addr), next);
        }
    }

    /// Sends the request (the rest of its body streamed from the client) and
    /// reads the response head; returns it, the head for the client, and
    /// whether the whole request body went out.
    async fn exchange(
        &mut self,
        conn: &mut BackendConn,
        up: &[u8],
        body: &mut BodyScan,
        sent_body: &mut u64,
        asked: Asked,
        id: &RequestId,
    ) -> Result<(ResponseHead, Vec<u8>, bool), Failure> {
        let settings = self.proxy.settings();
        if let Err(err) = conn.stream.write_all(up).await {
            return Err(if conn.reused {
                Failure::Stale { written: false }
            } else {
                Failure::Backend(err.to_string())
            });
        }
        let mut down = Vec::with_capacity(512);
        if body.is_done() {
            let read = read_response(
                &mut conn.stream,
                &mut conn.buf,
                conn.reused,
                asked,
                id,
                &mut down,
            );
            let resp = within(&mut self.wait, settings.response_timeout, read).await?;
            return Ok((resp, down, true));
        }
        // The body streams up while the response is awaited: a backend may
        // answer early (a 413, a redirect) without reading it all.
        let (mut rd, mut wr) = conn.stream.split();
        let pump = pump_body(
            &mut self.client,
            &mut self.buf,
            body,
            &mut wr,
            sent_body,
            settings.max_body,
            settings.idle_timeout,
        );
        let (resp, upload_done) = {
            let read = read_response(&mut rd, &mut conn.buf, false, asked, id, &mut down);
            tokio::pin!(pump, read);
            let early = tokio::select! {
                pumped = &mut pump => {
                    pumped?;
                    None
                }
                resp = &mut read => Some(resp?),
            };
            match early {
                Some(resp) => (resp, false),
                None => (
                    within(&mut self.wait, settings.response_timeout, read).await?,
                    true,
                ),
            }
        };
        Ok((resp, down, upload_done))
    }

    /// Passes the response on: its head, then its body as it arrives (or the
    /// tunnel, after a `101`); parks the backend connection when it can carry
    /// another request.
    async fn respond(
        &mut self,
        mut conn: BackendConn,
        addr: SocketAddr,
        resp: ResponseHead,
        mut down: Vec<u8>,
        upload_done: bool,
        in_flight: InFlight,
    ) -> Next {
        let settings = self.proxy.settings();
        conn.buf.advance(resp.len);
        if resp.status == 101 {
            down.extend_from_slice(&conn.buf);
            conn.buf.clear();
            if self.client.write_all(&down).await.is_err() || self.client.flush().await.is_err() {
                return Next::Close;
            }
            if !self.buf.is_empty() {
                if conn.stream.write_all(&self.buf).await.is_err() {
                    return Next::Close;
                }
                self.buf.clear();
            }
            let mut client = crate::idle::IdleIo::new(&mut self.client, settings.idle_timeout);
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut conn.stream).await {
                tracing::debug!(error = %err, "upgraded connection ended with an error");
            }
            drop(in_flight);
            return Next::Close;
        }
        let mut body = BodyScan::new(resp.framing);
        let used = match body.scan(&conn.buf) {
            Ok(used) => used,
            Err(err) => {
                tracing::warn!(backend = %addr, error = %err, "backend sent a malformed body");
                return Next::Close;
            }
        };
        down.extend_from_slice(&conn.buf[..used]);
        conn.buf.advance(used);
        if self.client.write_all(&down).await.is_err() {
            return Next::Close;
        }
        drop(down);
        while !body.is_done() {
            let deadline = tokio::time::Instant::now() + settings.idle_timeout;
            let read = read_more(&mut conn.stream, &mut conn.buf);
            match self.wait.run(deadline, read).await {
                Some(Ok(0)) if resp.framing == Framing::UntilClose => break,
                Some(Ok(0)) | Some(Err(_)) | None => {
                    // Cut short: the client must not take it for complete.
                    tracing::warn!(backend = %addr, "backend connection ended in the middle of a response");
                    return Next::Close;
                }
                Some(Ok(_)) => {}
            }
            let used = match body.scan(&conn.buf) {
                Ok(used) => used,
                Err(err) => {
                    tracing::warn!(backend = %addr, error = %err, "backend sent a malformed body");
                    return Next::Close;
                }
            };
            if self.client.write_all(&conn.buf[..used]).await.is_err()
                || self.client.flush().await.is_err()
            {
                return Next::Close;
            }
            conn.buf.advance(used);
        }
        if self.client.flush().await.is_err() {
            return Next::Close;
        }
        drop(in_flight);
        if resp.backend_keep_alive && upload_done && body.is_done() {
            self.proxy.backends().put(addr, conn);
        }
        if resp.close_client || !upload_done {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Answers with one of the proxy's pages instead of a backend's response;
    /// returns what `handle` reports.
    async fn refuse(
        &mut self,
        page: Page,
        is_head: bool,
        id: &RequestId,
        close: bool,
        backend: Option<SocketAddr>,
    ) -> (u16, Option<SocketAddr>, Next) {
        let status = page.status.as_u16();
        self.answer(page, is_head, id, close).await;
        let next = if close { Next::Close } else { Next::KeepAlive };
        (status, backend, next)
    }

    /// Writes one of the proxy's own answers.
    async fn answer(&mut self, page: Page, is_head: bool, id: &RequestId, close: bool) {
        let mut out = Vec::with_capacity(256 + page.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(page.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(page.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &page.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n", page.body.len()).as_bytes());
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !is_head {
            out.extend_from_slice(&page.body);
        }
        let _ = self.client.write_all(&out).await;
        let _ = self.client.flush().await;
    }
}

/// A response head read within `timeout`, or [`Failure::Timeout`].
async fn within<F>(
    wait: &mut Deadline,
    timeout: std::time::Duration,
    read: F,
) -> Result<ResponseHead, Failure>
where
    F: std::future::Future<Output = Result<ResponseHead, Failure>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    wait.run(deadline, read).await.ok_or(Failure::Timeout)?
}

/// Copies the rest of a request body from the client to the backend.
async fn pump_body<C, B>(
    client: &mut C,
    buf: &mut BytesMut,
    body: &mut BodyScan,
    backend: &mut B,
    sent: &mut u64,
    limit: Option<u64>,
    idle: std::time::Duration,
) -> Result<(), Failure>
where
    C: AsyncRead + Unpin,
    B: AsyncWrite + Unpin,
{
    while !body.is_done() {
        match tokio::time::timeout(idle, read_more(client, buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(Failure::Client(
                    "client closed in the middle of a request body".into(),
                ))
            }
            Err(_) => return Err(Failure::Client("request body stalled".into())),
            Ok(Ok(_)) => {}
        }
        let used = body.scan(buf).map_err(|e| Failure::Client(e.to_string()))?;
        *sent += used as u64;
        if limit.is_some_and(|limit| *sent > limit) {
            return Err(Failure::TooLarge);
        }
        backend
            .write_all(&buf[..used])
            .await
            .map_err(|e| Failure::Backend(e.to_string()))?;
        buf.advance(used);
    }
    Ok(())
}

/// Reads a response head (skipping `1xx` interim responses) from a backend.
async fn read_response<R: AsyncRead + Unpin>(
    backend: &mut R,
    buf: &mut BytesMut,
    reused: bool,
    asked: Asked,
    id: &RequestId,
    down: &mut Vec<u8>,
) -> Result<ResponseHead, Failure> {
    let mut got_any = false;
    loop {
        if !buf.is_empty() {
            got_any = true;
            match head::parse_response(buf, asked, id.as_bytes(), down) {
                Ok(Some(resp)) if resp.interim => {
                    buf.advance(resp.len);
                    continue;
                }
                Ok(Some(resp)) => return Ok(resp),
                Ok(None) => {}
                Err(err) => return Err(Failure::Backend(err.to_string())),
            }
        }
        match read_more(backend, buf).await {
            Ok(0) | Err(_) if reused && !got_any => return Err(Failure::Stale { written: true }),
            Ok(0) => {
                return Err(Failure::Backend(
                    "connection closed before a complete response".into(),
                ))
            }
            Err(err) => return Err(Failure::Backend(err.to_string())),
            Ok(_) => {}
        }
    }
}

/// Reads what is available into `buf`. An empty buffer is not allocated
/// until bytes arrive (a stack buffer takes them), so a connection waiting
/// for its next request holds no memory for it.
async fn read_more<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() > 0 {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        return io.read_buf(buf).await;
    }
    poll_fn(|cx| {
        let mut stack = [MaybeUninit::<u8>::uninit(); 8192];
        let mut read = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
