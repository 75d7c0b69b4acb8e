//! Connections to backends: connect (TCP, optional TLS), a keep-alive pool of idle
//! HTTP/1.1 connections per (address, TLS name), and the request body type.
//!
//! A connection is a plain socket (or TLS stream) owned by whoever uses it: the
//! request that sends on it, then the response body that reads from it, then the
//! pool. No task runs per backend connection; the HTTP/1.1 exchange itself is in
//! `h1client.rs`, polled on the client connection's own task.
//!
//! Idle connections are closed by the gateway after [`UPSTREAM_IDLE_TIMEOUT`],
//! below the keep-alive timeouts common backends use (Node.js and Apache 5 s,
//! nginx 75 s), so the gateway, not the backend, closes idle connections in the
//! common case. A pooled connection the backend closed meanwhile is noticed when
//! it is taken from the pool ([`Liveness`]); one that closes in the instant after
//! is the keep-alive race, retried on a fresh connection (see `proxy.rs`).

use super::batch;
use super::reqbody::{ClientBody, ClientBodyError};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use rustc_hash::FxHashMap;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio_util::either::Either;

/// Idle time after which the gateway closes a pooled backend connection.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Most idle connections kept per backend address.
pub const MAX_IDLE_PER_SERVER: usize = 256;

/// The body of a request sent to a backend: the client's body, its bytes
/// added up for `receivedBytes`, and the time spent waiting for them
/// ([`ClientWait`]).
pub struct ReqBody {
    body: ClientBody,
    /// Its bytes and its waits (`None`: no body).
    wait: Option<Arc<ClientWait>>,
}

impl ReqBody {
    /// No body.
    pub fn empty() -> ReqBody {
        ReqBody {
            body: ClientBody::Empty,
            wait: None,
        }
    }

    /// The client's streaming body; `wait` adds up its bytes and the time
    /// it was asked for and had nothing ready.
    pub fn counted(body: ClientBody, wait: Arc<ClientWait>) -> ReqBody {
        ReqBody {
            body,
            wait: Some(wait),
        }
    }
}

/// Slowest request body accepted, bytes per second of waiting for it, once
/// [`MIN_BODY_RATE_GRACE`] of waiting has passed: ASP.NET Core Kestrel's
/// `MinRequestBodyDataRate` default (240 bytes/s, 5 s grace), which, like
/// this, counts only the time the server is ready to read.
pub const MIN_BODY_RATE: u64 = 240;

/// Waiting for a body that [`MIN_BODY_RATE`] does not hold against it (5 s).
pub const MIN_BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// How long a request's upload has waited for the client's body: the time
/// between a poll of the body that found nothing ready (the backend had
/// taken everything so far) and the poll that got the next piece, and how
/// many bytes came. The request's `request_timeout` (time allowed for the
/// backend's response headers) does not count the waiting: a client that
/// uploads slowly is not the backend's delay (Envoy starts its route timeout
/// when the request is complete; nginx buffers the body first). A wait longer
/// than `request_header_timeout` (nginx's `client_body_timeout`, the time
/// between two reads of a body), or an HTTP/1 body slower than
/// [`MIN_BODY_RATE`] over the waiting, ends the request with 408 before
/// the backend answers (`proxy.rs` `wait_for_answer`). Shared between the
/// upload, which measures, and the request's deadline.
#[derive(Debug)]
pub struct ClientWait {
    /// The clock reading the offsets below count from.
    base: Instant,
    /// Nanoseconds in waits that have ended.
    ended: AtomicU64,
    /// Offset + 1 of the start of the wait in progress, in nanoseconds; 0
    /// while not waiting.
    since: AtomicU64,
    /// Body bytes that came: the record's count (`receivedBytes`), shared
    /// with it.
    received: Arc<AtomicU64>,
    /// The body ended (or failed): nothing more to wait for.
    done: AtomicBool,
}

impl ClientWait {
    /// No wait yet; offsets count from `base`; the body's bytes are added
    /// to `received`.
    pub fn new(base: Instant, received: Arc<AtomicU64>) -> ClientWait {
        ClientWait {
            base,
            ended: AtomicU64::new(0),
            since: AtomicU64::new(0),
            received,
            done: AtomicBool::new(false),
        }
    }

    /// The body ended or failed: no more waiting for it.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Whether the body came slower than [`MIN_BODY_RATE`] over the time
    /// waited for it, once that is past [`MIN_BODY_RATE_GRACE`]; never after
    /// its end.
    pub fn too_slow(&self, now: Instant) -> bool {
        let waited = self.total(now);
        !self.done()
            && waited > MIN_BODY_RATE_GRACE
            && u128::from(self.received.load(Ordering::Relaxed)) * 1000
                < u128::from(MIN_BODY_RATE) * waited.as_millis()
    }

    fn offset(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A poll of the body found nothing: a wait starts now, unless one is on.
    fn begin(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let at = self.offset(Instant::now()).saturating_add(1);
            self.since.store(at, Ordering::Relaxed);
        }
    }

    /// A poll of the body got something (or its end): the wait on, if any, ends.
    fn end(&self) {
        let since = self.since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let waited = self.offset(Instant::now()).saturating_sub(since - 1);
            self.ended.fetch_add(waited, Ordering::Relaxed);
        }
    }

    /// How long the wait in progress has lasted at `now`; `None` when none is on.
    pub fn current(&self, now: Instant) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_nanos(
                self.offset(now).saturating_sub(since - 1),
            )),
        }
    }

    /// All the waiting up to `now`, the wait in progress included.
    pub fn total(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.ended.load(Ordering::Relaxed))
            + self.current(now).unwrap_or(Duration::ZERO)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(w) = &this.wait {
            match &r {
                Poll::Pending => w.begin(),
                Poll::Ready(Some(Ok(f))) => {
                    w.end();
                    if let Some(d) = f.data_ref() {
                        w.received.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(_) => {
                    w.end();
                    w.done.store(true, Ordering::Relaxed);
                }
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How [`Upstream::checkout`] makes sure an idle connection is still open.
///
/// nginx takes a kept connection on its event loop's word: its keepalive
/// module closes the connection when a read event comes (a FIN or stray
/// bytes) and otherwise hands it out without a syscall, and a request that
/// fails on it goes to the next server (`proxy_next_upstream error`, only
/// idempotent ones). HAProxy makes no syscall for it either (`perf stat`,
/// docs/benchmarks.md section 2). [`Liveness::Readiness`] does the same: it
/// costs no syscall while the runtime has seen no event on the socket, and
/// the proxy replays the request on a fresh connection if the connection
/// closed in the instant before (the keep-alive race). A request that could
/// not be replayed ([`Liveness::Ask`]) pays one `recvfrom` (`MSG_PEEK`),
/// which also finds a FIN that arrived since the runtime last looked at epoll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A read that does not wait, always a syscall on plain TCP: for requests
    /// that are not replayed when their connection turns out closed (a body,
    /// or a method that is not idempotent: RFC 9110 section 9.2.2).
    Ask,
    /// The runtime's readiness first: when it has seen no event since the
    /// connection's last read, the connection is taken without a syscall;
    /// otherwise the read that does not wait decides (and clears a stale
    /// readiness). For idempotent requests without a body, which the proxy
    /// replays on a fresh connection if the connection closed in between.
    Readiness,
}

/// Which pooled connections are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Backend address.
    pub addr: SocketAddr,
    /// TLS server name, None for plain HTTP.
    pub tls_name: Option<Arc<str>>,
}

/// The byte stream of a backend connection: TCP (`Left`, whose request heads
/// can go out in a batch: [`batch::Socket`]), or TLS over TCP (`Right`, boxed:
/// the TLS state is large). tokio-util's `Either` passes reads and writes
/// (vectored ones too) to the side in use.
pub type BackendIo = Either<batch::Socket, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// A connection ready to carry one request.
///
/// Handed around boxed (`Box<Conn>`: made once when the connection opens, kept
/// while it waits in the pool): a request moves its connection from the pool
/// to the exchange, the answer, the response body and back about six times,
/// and a box moves as one pointer where the connection's own fields are 176
/// bytes (docs/benchmarks.md section 2). A tunnel takes the fields out of the
/// box once (`tunnel.rs`).
pub struct Conn {
    /// The byte stream.
    pub io: BackendIo,
    /// Bytes read from the backend and not yet used (empty between exchanges).
    pub buf: BytesMut,
    /// Fires when the server is removed from its pool and its connections are
    /// cut ([`Upstream::close_server`]).
    pub cut: Cut,
    /// Pool key.
    pub key: ConnKey,
    /// Local port (`upstreamSourcePort`).
    pub local_port: u16,
    /// Came from the idle pool.
    pub reused: bool,
}

/// One backend address's cut signal: the notification that connections wait
/// on, and the flag set before it is sent ([`Cut`]).
type CutSignal = (Arc<Notify>, Arc<AtomicBool>);

/// A connection's cut signal ([`Upstream::close_server`]): a flag read without
/// a lock, and the notification that wakes a task waiting on the connection.
///
/// Each poll of a tokio `Notified` takes its `Notify`'s lock to store the
/// waker (two locked instructions), and an exchange polled it about four
/// times. The notification is now polled only when the task polling the
/// connection is another one than the one it registered last (each request
/// on a pooled connection comes from another client connection's task);
/// between those, the flag tells. The registered waker is a clone, which
/// keeps its task alive, so a pointer match cannot be a new task at the same
/// address.
pub struct Cut {
    flag: Arc<AtomicBool>,
    notified: Pin<Box<OwnedNotified>>,
    /// The data and vtable addresses of the waker last registered.
    registered: Option<(usize, usize)>,
}

impl Cut {
    fn new(flag: Arc<AtomicBool>, notified: OwnedNotified) -> Cut {
        Cut {
            flag,
            notified: Box::pin(notified),
            registered: None,
        }
    }

    /// The notification alone, to wait on (a tunnel's `select!`); it fires
    /// for a cut that came before this too (it was made before the cut).
    pub fn into_notified(self) -> Pin<Box<OwnedNotified>> {
        self.notified
    }

    /// Whether the cut came, not registering for it.
    fn is_cut(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Whether the cut came; if not, the task of `cx` is woken when it does.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if self.is_cut() {
            return true;
        }
        let id = waker_id(cx.waker());
        if self.registered == Some(id) {
            return false;
        }
        self.registered = Some(id);
        std::future::Future::poll(self.notified.as_mut(), cx).is_ready()
    }
}

/// A waker's data and vtable addresses: equal for the wakers of one task.
fn waker_id(w: &Waker) -> (usize, usize) {
    (w.data().addr(), std::ptr::from_ref(w.vtable()).addr())
}

impl Conn {
    /// True when the server has cut this connection ([`Upstream::close_server`]);
    /// if not, the task of `cx` is woken when it is.
    pub fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.poll(cx)
    }

    /// Whether an idle connection is still usable: a read that does not wait
    /// finds neither an end of stream, an error, nor unasked-for bytes, asked
    /// as `liveness` says.
    fn still_open(&mut self, liveness: Liveness) -> bool {
        // An idle connection waits for no cut: a cut takes it out of the
        // pool too. The flag tells of one that came while it was taken.
        if self.cut.is_cut() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match &mut self.io {
            // tokio's `poll_peek` returns Pending at once while the socket is
            // not marked readable (no epoll event since its last short read,
            // `batch::Socket::poll_read`), and otherwise peeks, clearing the
            // mark if the peek finds nothing.
            Either::Left(socket) if liveness == Liveness::Readiness => {
                let mut probe = [0u8; 1];
                let mut rb = ReadBuf::new(&mut probe);
                socket.stream().poll_peek(&mut cx, &mut rb).is_pending()
            }
            // A syscall whatever the runtime last saw: a FIN that arrived
            // since its last look at epoll is found too.
            Either::Left(socket) => {
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                matches!(
                    socket2::SockRef::from(socket.stream()).peek(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock
                )
            }
            Either::Right(_) => {
                let mut probe = [0u8; 8];
                let mut rb = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
                    Poll::Pending
                )
            }
        }
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Why a connection could not be made. Nothing was sent in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused (RST): nothing listens there.
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout.
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
    /// TLS handshake with the backend failed (certificate, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Another socket error.
    #[error("{0}")]
    Io(io::Error),
}

/// The pool of backend connections; one per process, shared by all snapshots.
#[derive(Default)]
pub struct Upstream {
    /// Idle connections by key (FxHash: keys come from the configuration).
    idle: Mutex<FxHashMap<ConnKey, Vec<Idle>>>,
    /// Per backend address, the signal that cuts every connection to it: a
    /// notification and a flag ([`Cut`]).
    cuts: Mutex<HashMap<SocketAddr, CutSignal>>,
}

impl Upstream {
    /// A pooled connection to `key`, if one is idle, fresh (idle for less than
    /// [`UPSTREAM_IDLE_TIMEOUT`] at `now`, the caller's clock reading) and still
    /// open (checked as `liveness` says).
    pub fn checkout(&self, key: &ConnKey, liveness: Liveness, now: Instant) -> Option<Box<Conn>> {
        loop {
            let idle = {
                let mut map = self.idle.lock().ok()?;
                let list = map.get_mut(key)?;
                list.pop()?
            };
            let mut conn = idle.conn;
            if now.saturating_duration_since(idle.since) >= UPSTREAM_IDLE_TIMEOUT
                || !conn.still_open(liveness)
            {
                continue;
            }
            conn.reused = true;
            return Some(conn);
        }
    }

    /// Returns a connection whose last response was read to the end. Its read
    /// buffer goes to the thread's few spare ones (`h1client::recycle`), not
    /// with it: an idle connection holds no buffer, so the allocator's pages
    /// are not pinned by buffers of connections that wait in the pool (see
    /// docs/benchmarks.md §5). `idle_since` is when its response ended (a
    /// clock reading the caller made then), where its idle time starts.
    pub fn checkin(&self, mut conn: Box<Conn>, idle_since: Instant) {
        if !conn.buf.is_empty() {
            // The backend sent more than its response: not reusable.
            return;
        }
        if let Either::Left(socket) = &mut conn.io {
            if !socket.settle_now() {
                // Its request head is still with the batch writer (the answer
                // came before it went out: a backend that spoke unasked), or
                // part of it is: the connection is dropped, which cancels it.
                return;
            }
        }
        super::h1client::recycle(std::mem::take(&mut conn.buf));
        if let Ok(mut map) = self.idle.lock() {
            let list = map.entry(conn.key.clone()).or_default();
            if list.len() < MAX_IDLE_PER_SERVER {
                list.push(Idle {
                    conn,
                    since: idle_since,
                });
            }
        }
    }

    /// Opens a new connection to `key` within `timeout` (TCP and TLS together).
    pub async fn connect(
        &self,
        key: &ConnKey,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Box<Conn>, ConnectError> {
        let cut = self.cut_signal(key.addr);
        let fut = async {
            let tcp = TcpStream::connect(key.addr).await.map_err(|e| {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Io(e)
                }
            })?;
            let _ = tcp.set_nodelay(true);
            let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
            let io = match (tls, &key.tls_name) {
                (Some(cfg), Some(name)) => {
                    let server_name = ServerName::try_from(name.to_string())
                        .map_err(|e| ConnectError::Tls(format!("bad server name {name}: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(server_name, tcp)
                        .await
                        .map_err(|e| ConnectError::Tls(e.to_string()))?;
                    Either::Right(Box::new(tls))
                }
                _ => Either::Left(batch::Socket::new(tcp)),
            };
            tracing::debug!(server = %key.addr, local_port, "backend connection opened");
            Ok(Box::new(Conn {
                io,
                buf: BytesMut::new(),
                cut,
                key: key.clone(),
                local_port,
                reused: false,
            }))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::TimedOut(timeout)),
        }
    }

    /// A signal registered now: it fires at the next [`Upstream::close_server`]
    /// of `addr`.
    fn cut_signal(&self, addr: SocketAddr) -> Cut {
        let (notify, flag) = match self.cuts.lock() {
            Ok(mut m) => m.entry(addr).or_default().clone(),
            Err(_) => Default::default(),
        };
        Cut::new(flag, notify.notified_owned())
    }

    /// Closes idle connections older than [`UPSTREAM_IDLE_TIMEOUT`] or found
    /// closed, and forgets the cut signals of addresses without connections,
    /// every 500 ms, for as long as the pool lives.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                up.reap();
            }
        });
    }

    /// One round of the reaper: drops idle connections that are too old or
    /// found closed, and the cut signals no connection holds any more (app
    /// instances come and go on new ports).
    fn reap(&self) {
        if let Ok(mut map) = self.idle.lock() {
            map.retain(|_, list| {
                list.retain_mut(|i| {
                    i.since.elapsed() < UPSTREAM_IDLE_TIMEOUT && i.conn.still_open(Liveness::Ask)
                });
                !list.is_empty()
            });
        }
        if let Ok(mut cuts) = self.cuts.lock() {
            cuts.retain(|_, (n, _)| Arc::strong_count(n) > 1);
        }
    }

    /// Idle connections held now (all servers).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Closes every connection to `addr`, idle or busy (a server left the pool).
    /// Requests still on them fail.
    pub fn close_server(&self, addr: SocketAddr) {
        let idle = self
            .idle
            .lock()
            .map(|mut m| {
                let before: usize = m.values().map(Vec::len).sum();
                m.retain(|k, _| k.addr != addr);
                before - m.values().map(Vec::len).sum::<usize>()
            })
            .unwrap_or(0);
        let cut = self.cuts.lock().ok().and_then(|mut m| m.remove(&addr));
        tracing::debug!(server = %addr, idle, "closing every connection");
        if let Some((n, flag)) = cut {
            flag.store(true, Ordering::Release);
            n.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits add up, the one in progress counts until `now`, and the
    /// minimum rate holds only after the grace, against the waiting alone,
    /// and never once the body ended.
    #[test]
    fn client_waits_add_up_and_the_minimum_rate_counts_only_waiting() {
        let base = Instant::now();
        let w = ClientWait::new(base, Arc::new(AtomicU64::new(0)));
        assert_eq!(w.current(base), None);
        assert_eq!(w.total(base), Duration::ZERO);
        w.begin();
        std::thread::sleep(Duration::from_millis(20));
        w.begin(); // already waiting: the start stays
        let later = Instant::now();
        assert!(w.current(later).expect("waiting") >= Duration::from_millis(20));
        w.end();
        let first = w.total(Instant::now());
        assert!(first >= Duration::from_millis(20));
        assert_eq!(w.current(Instant::now()), None);
        w.end(); // not waiting: nothing changes
        assert_eq!(w.total(Instant::now()), first);
        // An hour later, not waiting: the total stays what was waited.
        assert_eq!(w.total(base + Duration::from_secs(3600)), first);
        assert!(!w.too_slow(base + Duration::from_secs(3600)));
        // Waiting since now, looked at 10 s on: 240 B/s of 10 s is 2,400 bytes.
        w.begin();
        let at = Instant::now() + Duration::from_secs(10);
        assert!(w.total(at) >= Duration::from_secs(10));
        w.received.store(1_000, Ordering::Relaxed);
        assert!(w.too_slow(at));
        w.received.store(3_000, Ordering::Relaxed);
        assert!(!w.too_slow(at));
        // Within the grace, nothing is too slow: looked at when 4.5 s of
        // waiting are done in all.
        w.received.store(0, Ordering::Relaxed);
        let now = Instant::now();
        let within = now + Duration::from_millis(4_500).saturating_sub(w.total(now));
        assert!(!w.too_slow(within));
        w.done.store(true, Ordering::Relaxed);
        assert!(!w.too_slow(at));
    }

    /// A waker that counts its wakes.
    struct Count(AtomicU64);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The notification registers the task that polls last, once per task
    /// in a row; the cut wakes it, and every poll after sees the flag.
    #[test]
    fn a_cut_wakes_the_task_that_polled_last() {
        let (notify, flag) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let mut cut = Cut::new(flag.clone(), notify.clone().notified_owned());
        let (a, b) = (
            Arc::new(Count(AtomicU64::new(0))),
            Arc::new(Count(AtomicU64::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert!(!cut.poll(&mut Context::from_waker(&wa)));
        assert!(!cut.poll(&mut Context::from_waker(&wa)));
        assert_eq!(cut.registered, Some(waker_id(&wa)));
        assert!(!cut.poll(&mut Context::from_waker(&wb)));
        assert_eq!(cut.registered, Some(waker_id(&wb)));
        assert!(!cut.is_cut());
        flag.store(true, Ordering::Release);
        notify.notify_waiters();
        assert_eq!(b.0.load(Ordering::Relaxed), 1, "the last task is woken");
        assert_eq!(a.0.load(Ordering::Relaxed), 0, "its waker was replaced");
        assert!(cut.is_cut());
        assert!(cut.poll(&mut Context::from_waker(&wa)));
        assert!(cut.poll(&mut Context::from_waker(&wb)));
    }

    /// A tunnel's notification fires for a cut that came before it was taken.
    #[tokio::test]
    async fn the_notification_alone_fires_for_an_earlier_cut() {
        let up = Upstream::default();
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let cut = up.cut_signal(addr);
        up.close_server(addr);
        tokio::time::timeout(Duration::from_secs(5), cut.into_notified())
            .await
            .expect("fired");
    }

    /// A connection whose request head is still with the batch writer (its
    /// answer came first) is not pooled: the head would go out after the
    /// answer and meet the next request's.
    #[tokio::test]
    async fn a_connection_with_a_head_still_lent_is_not_pooled() {
        batch::start();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Upstream::default();
        let key = ConnKey {
            addr,
            tls_name: None,
        };
        let mut conn = up
            .connect(&key, None, Duration::from_secs(5))
            .await
            .expect("connect");
        let (_server_side, _) = listener.accept().expect("accept");
        let Either::Left(socket) = &mut conn.io else {
            panic!("plain TCP");
        };
        socket
            .lend(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"))
            .expect("batching is on");
        up.checkin(conn, Instant::now());
        assert_eq!(up.idle_count(), 0);
    }

    #[tokio::test]
    async fn pool_reuses_open_connections_cuts_a_removed_server_and_forgets_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Upstream::default();
        let key = ConnKey {
            addr,
            tls_name: None,
        };
        let timeout = Duration::from_secs(5);
        let mut conn = up.connect(&key, None, timeout).await.expect("connect");
        let (_server_side, _) = listener.accept().expect("accept");
        conn.buf.reserve(32 * 1024);
        up.checkin(conn, Instant::now());
        assert_eq!(up.idle_count(), 1);
        let mut conn = up
            .checkout(&key, Liveness::Ask, Instant::now())
            .expect("still open");
        assert!(conn.reused);
        assert_eq!(conn.buf.capacity(), 0, "an idle connection holds no buffer");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!conn.poll_cut(&mut cx));
        up.close_server(addr);
        assert!(
            conn.poll_cut(&mut cx),
            "a removed server's busy connections are cut"
        );
        drop(conn);
        up.reap();
        assert!(up.cuts.lock().expect("lock").is_empty());
        // A pooled connection the server closed is not handed out.
        let conn = up.connect(&key, None, timeout).await.expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        up.checkin(conn, Instant::now());
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(up.checkout(&key, Liveness::Ask, Instant::now()).is_none());
    }

    /// `Liveness::Readiness` takes an open connection, and turns away one the
    /// server closed or wrote to once the runtime has seen the event.
    #[tokio::test]
    async fn readiness_takes_open_connections_and_turns_away_closed_or_written_ones() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let key = ConnKey {
            addr: listener.local_addr().expect("addr"),
            tls_name: None,
        };
        let up = Upstream::default();
        let timeout = Duration::from_secs(5);
        let conn = up.connect(&key, None, timeout).await.expect("connect");
        let (_open, _) = listener.accept().expect("accept");
        up.checkin(conn, Instant::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let conn = up
            .checkout(&key, Liveness::Readiness, Instant::now())
            .expect("still open");
        assert!(conn.reused);
        drop(conn);
        for stray in [None, Some(&b"HTTP/1.1 408 Request Timeout\r\n\r\n"[..])] {
            let conn = up.connect(&key, None, timeout).await.expect("connect");
            let (mut server_side, _) = listener.accept().expect("accept");
            up.checkin(conn, Instant::now());
            match stray {
                Some(bytes) => server_side.write_all(bytes).expect("write"),
                None => drop(server_side),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                up.checkout(&key, Liveness::Readiness, Instant::now())
                    .is_none(),
                "closed or written to: {stray:?}"
            );
        }
    }
}
