//! Our HTTP/1.1 server for client connections (RFC 9112), plain or TLS.
//!
//! One task per connection runs [`serve`]: it reads request heads with the guard
//! ([`guard::take_head`]: checked and parsed once), calls the handler
//! (`proxy::handle`) on the same task, decodes the request body into the
//! handler's [`H1Body`] as the backend takes it, and writes the response head
//! and body (Content-Length, chunked, or close-delimited for HTTP/1.0 clients).
//!
//! What it does, in the terms of other servers:
//! - **Keep-alive** (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`;
//!   HTTP/1.0 with `Connection: keep-alive` (answered with the same header, as
//!   nginx does). Pipelined requests are answered in order.
//! - **Timeouts**: `[gateway].client_idle_timeout` between requests (close, no
//!   answer; Application Gateway v2's 75 s by default), and
//!   `[gateway].request_header_timeout` from the first byte of a head to its end
//!   (408 `ERRORINFO_REQUEST_HEADER_TIMEOUT`), and `[gateway].client_send_timeout`
//!   while the client takes no byte of its answer (the socket stays full): the
//!   connection is closed, as nginx's `send_timeout` closes it, and a request
//!   whose body was still coming from the backend is logged with the status
//!   sent and `CLIENT_CLOSED_REQUEST` (one read whole was logged then). The
//!   write-behind of a last answer and a close wait for the client that long
//!   at most too.
//! - **Refusals** (`guard.rs`): 4xx with its `error_info` and record, then a
//!   lingering close (up to [`guard::LINGER`] / [`guard::LINGER_BYTES`]) so the
//!   kernel does not reset the answer away.
//! - **`Expect: 100-continue`** (RFC 9110 §10.1.1): `100 Continue` is sent when
//!   the handler first reads the body, as hyper does; a handler that answers
//!   without reading it closes the connection after the answer.
//! - **A client that goes away** (end of stream, reset) before its response has
//!   been written: the handler's future and body are dropped, which records 499
//!   `CLIENT_CLOSED_REQUEST` (as with hyper's half-close off).
//! - **Upgrades**: a 101 answer hands the connection (and any bytes read past the
//!   head) to the request's [`OnUpgrade`].
//! - **HTTP/2 prior knowledge**: the connection preface ends this server and
//!   gives the connection, with what was read, back to the caller for hyper's
//!   HTTP/2 server.
//! - **Graceful shutdown**: when the `shutdown` flag turns true, a connection
//!   waiting between requests closes at once; one in the middle of a request
//!   finishes it with `Connection: close`.
//!
//! Memory: a connection waiting for its next request holds no buffer. Reads go
//! through a per-thread scratch buffer and only what is left over is kept.

use super::batch;
use super::failure::ErrorInfo;
use super::guard::{self, BodyFraming, Head, Rejection, Step};
use super::h1client::{decode_body, Framing};
use super::headers::connection_options;
use super::proxy::{self, ConnInfo};
use super::reqbody::{BodySlot, ClientBody, H1Body};
use super::stall::Stall;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::body::ResponseBody;

/// Bytes read past the current request (pipelined requests) kept at most while
/// its response is produced; beyond, the connection is not read until then.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// Response bytes gathered while the body has more ready, and queued at most
/// before it is polled again (backpressure). Gathering makes writes large:
/// 16 KiB and 64 KiB were measured and lowered 1 MiB-response throughput
/// (docs/benchmarks.md section 2).
const MAX_QUEUED: usize = 256 * 1024;
/// Body pieces up to this size are copied next to the head or chunk framing so
/// that a small response leaves in one write.
const COPY_BELOW: usize = 8 * 1024;
/// Size of the per-thread read buffer.
const SCRATCH_BYTES: usize = 16 * 1024;

/// Timeouts of a client connection, from the running snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (`request_header_timeout`).
    pub header: Duration,
    /// Between requests (`client_idle_timeout`).
    pub idle: Duration,
    /// An answer (or a close) the client takes no byte of for this long is
    /// given up (`client_send_timeout`).
    pub send: Duration,
}

/// How a connection left this server.
pub enum Outcome<I> {
    /// Closed (or handed to an upgrade).
    Closed,
    /// The client sent the HTTP/2 preface: serve it with HTTP/2, the bytes
    /// already read first.
    Http2(Rewound<I>),
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewound<I> {
    pre: Bytes,
    io: I,
}

impl<I> Rewound<I> {
    /// `io`, with `pre` to be read before anything more from it.
    pub fn new(pre: Bytes, io: I) -> Self {
        Rewound { pre, io }
    }

    /// The stream beneath.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewound<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A client stream whose small answers can be lent to the batch writer
/// (`batch.rs`): plain TCP directly, TLS by lending the records it writes.
pub trait Lend {
    /// Whether the bytes written go through a layer that encrypts them.
    const ENCRYPTS: bool = false;

    /// The socket to lend writes to, if any.
    fn batch_socket(&mut self) -> Option<&mut batch::Socket> {
        None
    }
}

impl Lend for batch::Socket {
    fn batch_socket(&mut self) -> Option<&mut batch::Socket> {
        Some(self)
    }
}

impl Lend for tokio_rustls::server::TlsStream<batch::Socket> {
    const ENCRYPTS: bool = true;

    fn batch_socket(&mut self) -> Option<&mut batch::Socket> {
        Some(self.get_mut().0)
    }
}

/// Any client connection, boxed for an upgrade.
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientIo for T {}

/// A client connection after a 101 answer.
pub type Upgraded = Rewound<Box<dyn ClientIo>>;

/// Request extension of an HTTP/1 request that asks to switch protocols: the
/// connection arrives here once a 101 answer has been written. (Clone because
/// request extensions must be; only one clone can take the connection.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The connection after the 101 answer; None when the exchange ended
    /// another way (or another clone took it).
    pub async fn connection(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok().and_then(|mut r| r.take())?;
        rx.await.ok()
    }
}

thread_local! {
    /// Scratch space for socket reads: zeroed once per thread, not per read,
    /// and not held per connection.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; SCRATCH_BYTES]);
}

/// The gateway's shutdown flag as one connection reads it, twice a request:
/// `watch::Receiver::borrow` takes the channel's lock (two locked
/// instructions, about 9 ns on the benchmark VM, docs/benchmarks.md §2),
/// where `has_changed` is one plain load of the channel's version. A change
/// since the connection subscribed can only be the flag turning true; the
/// value it had when the connection subscribed is read once, at the start.
struct Shutdown {
    rx: watch::Receiver<bool>,
    /// The flag was already true when the connection started.
    at_start: bool,
}

impl Shutdown {
    fn new(rx: watch::Receiver<bool>) -> Shutdown {
        let at_start = *rx.borrow();
        Shutdown { rx, at_start }
    }

    /// Whether the gateway is shutting down (the sender gone counts as the
    /// value it last sent).
    fn asked(&self) -> bool {
        self.at_start || (!matches!(self.rx.has_changed(), Ok(false)) && *self.rx.borrow())
    }
}

/// Serves HTTP/1.x requests on `io` until the connection ends, is upgraded, or
/// turns out to be HTTP/2.
///
/// Not an `async fn`: the connection's state is made here and the async block
/// uses it in place, where an `async fn` keeps its arguments (`io` among them)
/// beside the locals made from them for the whole connection. The future is
/// most of an idle connection's memory (docs/benchmarks.md section 4).
pub fn serve<I>(
    io: I,
    info: Arc<ConnInfo>,
    timeouts: Timeouts,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = Outcome<I>> + Send
where
    I: AsyncRead + AsyncWrite + Lend + Send + Unpin + 'static,
{
    let mut conn = Conn {
        io,
        input: BytesMut::new(),
        out: Out::default(),
        read_eof: false,
        first: true,
        timer: None,
        stop: None,
        timeouts,
        stall: Stall::default(),
    };
    let shutdown = Shutdown::new(shutdown);
    async move {
        loop {
            let next = conn.next_head(&shutdown).await;
            // The exchange is boxed, one allocation a request: in place it
            // made this future (and so every idle connection's task) 256
            // bytes larger, the room of the largest state (docs/benchmarks.md
            // section 4). It lives in this block only.
            let after = {
                let exchange = match next {
                    Next::Close => {
                        let send = conn.timeouts.send;
                        let _ = tokio::time::timeout(send, conn.io.shutdown()).await;
                        return Outcome::Closed;
                    }
                    Next::Http2 => {
                        return Outcome::Http2(Rewound::new(conn.input.freeze(), conn.io))
                    }
                    Next::Refused(rej) => Exchange::refused(&info, *rej),
                    Next::Head(head) => match early_framing_error(&head, &conn.input) {
                        Some(rej) => Exchange::refused(&info, rej),
                        None => Exchange::new(&info, *head),
                    },
                };
                let mut exchange = Box::new(exchange);
                conn.stall.clear();
                poll_fn(|cx| exchange.poll(&mut conn, &shutdown, cx)).await
            };
            match after {
                Ok(After::KeepAlive) => continue,
                Ok(After::Close { linger }) => {
                    // Boxed, once a connection: in place its state would
                    // be the largest of this future's.
                    Box::pin(conn.close(linger)).await;
                    return Outcome::Closed;
                }
                Ok(After::Upgrade(to)) => {
                    let pre = conn.input.split().freeze();
                    let _ = to.send(Rewound::new(pre, Box::new(conn.io)));
                    return Outcome::Closed;
                }
                Err(e) => {
                    tracing::debug!(client = %info.peer, "client connection ended: {e}");
                    // An earlier answer still lent to the batch writer goes out
                    // (dropping it would cancel it), if the client takes it; not
                    // after the send timeout, which that answer may be what waited.
                    if e.kind() != io::ErrorKind::TimedOut {
                        let _ = tokio::time::timeout(
                            conn.timeouts.send,
                            poll_fn(|cx| conn.poll_settled(cx)),
                        )
                        .await;
                    }
                    return Outcome::Closed;
                }
            }
        }
    }
}

/// A chunked body whose framing is already invalid in the bytes read with its
/// head: the request is refused whole, before anything goes to a backend.
fn early_framing_error(head: &Head, input: &[u8]) -> Option<Rejection> {
    if head.body != BodyFraming::Chunked {
        return None;
    }
    let bad = super::chunked::scan_chunked(super::chunked::Chunk::START, input, false).is_err();
    bad.then(|| Rejection::of_head(head, ErrorInfo::InvalidRequest))
}

/// What ended a wait for input.
enum Woke {
    /// A read: true when it went through (bytes or the end of the stream).
    Read(bool),
    Timer,
    /// The shutdown flag turned true.
    Shutdown,
}

enum Next {
    Head(Box<Head>),
    Refused(Box<Rejection>),
    Http2,
    Close,
}

enum After {
    KeepAlive,
    Close { linger: bool },
    Upgrade(oneshot::Sender<Upgraded>),
}

struct Conn<I> {
    io: I,
    /// Bytes read and not yet used.
    input: BytesMut,
    out: Out,
    /// The client ended its side (or the read failed).
    read_eof: bool,
    /// The input may still start with the HTTP/2 preface: true until the
    /// connection's first bytes show otherwise (`guard::take_head`'s `first`).
    first: bool,
    /// The idle / head timer (see `next_head`).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Ready when the shutdown flag turns true (or its sender is gone). Made
    /// the first time the connection waits between requests and kept: a
    /// wait registered once per connection, not once per request.
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The connection's timeouts (`client_send_timeout` for every answer;
    /// the header and idle ones for [`Conn::next_head`]). Kept here, not
    /// passed to `next_head`: an `async fn`'s argument is held twice in its
    /// future, as argument and as local (48 bytes each).
    timeouts: Timeouts,
    /// The answer in progress's wait for the client to take bytes (its socket
    /// full); cleared when bytes leave or the answer waits for its backend.
    stall: Stall,
}

impl<I: AsyncRead + AsyncWrite + Lend + Unpin> Conn<I> {
    /// Lends the queued answer (gathered bytes only) to the batch writer: as
    /// it is on a plain connection, as TLS records on an encrypted one.
    /// Errors: the TLS layer's.
    fn lend_answer(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(socket) = self.io.batch_socket() else {
            return Ok(());
        };
        if !I::ENCRYPTS {
            self.out.lend_to(socket);
            return Ok(());
        }
        if !socket.defer() {
            return Ok(());
        }
        // The TLS layer writes its records into the socket's gathering.
        let written = self.out.poll_write(&mut self.io, cx);
        if let Some(socket) = self.io.batch_socket() {
            socket.lend_deferred();
        }
        match written {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Ready when nothing lent to the batch writer is outstanding.
    fn poll_settled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.batch_socket() {
            Some(socket) => socket.poll_settled(cx, true),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Called when the answer waits for the client to take bytes. Ready with
    /// the error that ends the connection once it has waited `client_send_timeout`
    /// without a byte leaving ([`Stall`]).
    fn wait_for_client(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.stall.poll(cx, self.timeouts.send).map(|()| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no byte of its answer for client_send_timeout",
            )
        })
    }

    /// Reads once (through the scratch buffer) and appends to `input`.
    /// Returns the bytes read; 0 at the end of the stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let io = &mut self.io;
        let input = &mut self.input;
        let mut read_into = |space: &mut [u8]| {
            let mut rb = ReadBuf::new(space);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
            input.extend_from_slice(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        };
        let r = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut space) => read_into(&mut space[..]),
            Err(_) => read_into(&mut vec![0u8; SCRATCH_BYTES]),
        });
        if let Poll::Ready(Ok(0) | Err(_)) = r {
            self.read_eof = true;
        }
        r
    }

    /// Waits for the next request head (see the module doc for the timeouts).
    ///
    /// Its future is the largest part of an idle connection's task, so it
    /// keeps few locals across its wait: `first` lives in the connection,
    /// and the deadline in force is worked out again after the wait, not
    /// kept (docs/benchmarks.md section 4).
    async fn next_head(&mut self, shutdown: &Shutdown) -> Next {
        let idle_until = Instant::now() + self.timeouts.idle;
        let mut head_until: Option<Instant> = None;
        // Whether a read was made, and whether the deadline in force for it
        // was the idle one: checked when what was read did not complete a head.
        let mut read_between: Option<bool> = None;
        loop {
            match guard::take_head(&mut self.input, &mut self.first) {
                Step::Request(head) => return Next::Head(head),
                Step::Http2 => return Next::Http2,
                Step::Refused(rej) => return Next::Refused(rej),
                Step::NeedMore => {}
            }
            // A partial head at the end of the stream never became a request.
            if self.read_eof {
                return Next::Close;
            }
            // Reads that never complete a head (a stream of empty lines, a
            // trickle) do not outlive the deadline. Checked only here: a read
            // that completes a head (nearly every one) costs no clock reading.
            if let Some(idle) = read_between.take() {
                if Instant::now() >= Self::in_force(idle_until, head_until, idle) {
                    return self.deadline_passed(idle);
                }
            }
            let between = self.input.is_empty();
            if between {
                if shutdown.asked() {
                    return Next::Close;
                }
                // Hold no buffer while idle, nor the state of an answer
                // the batch writer has sent.
                self.input = BytesMut::new();
                if let Some(socket) = self.io.batch_socket() {
                    socket.settle_now();
                }
                if self.out.is_empty() {
                    self.out.gather = Vec::new();
                }
                head_until = None;
            } else if head_until.is_none() {
                head_until = Some(Instant::now() + self.timeouts.header);
            }
            // One timer per connection, moved only when it would fire too late:
            // the idle deadline moves forward with every request, and the
            // timer is re-armed when it fires early instead of on every request.
            let mut timer = {
                let until = Self::in_force(idle_until, head_until, between);
                let mut timer = self
                    .timer
                    .take()
                    .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(until)));
                if timer.deadline() > until {
                    timer.as_mut().reset(until);
                }
                timer
            };
            if between && self.stop.is_none() {
                let mut rx = shutdown.rx.clone();
                // `changed` in a loop, not `wait_for`: the same wait in a
                // smaller box (144 bytes against 168, `-Zprint-type-sizes`),
                // held by every idle connection. Ends when the flag is true
                // or its sender is gone.
                self.stop = Some(Box::pin(async move {
                    while !*rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }));
            }
            let mut stop = self.stop.take();
            let woke = tokio::select! {
                biased;
                r = poll_fn(|cx| self.poll_read_more(cx)) => Woke::Read(r.is_ok()),
                _ = timer.as_mut() => Woke::Timer,
                _ = async { if let Some(s) = stop.as_mut() { s.await } }, if between => Woke::Shutdown,
            };
            self.stop = stop;
            self.timer = Some(timer);
            let until = Self::in_force(idle_until, head_until, between);
            match woke {
                Woke::Read(true) => read_between = Some(between),
                Woke::Read(false) | Woke::Shutdown => return Next::Close,
                Woke::Timer if Instant::now() < until => {
                    if let Some(t) = self.timer.as_mut() {
                        t.as_mut().reset(until);
                    }
                }
                Woke::Timer => return self.deadline_passed(between),
            }
        }
    }

    /// The deadline in force for a wait: the idle one `between` requests,
    /// else the head's (set whenever part of a head was read).
    fn in_force(idle_until: Instant, head_until: Option<Instant>, between: bool) -> Instant {
        match head_until {
            Some(head) if !between => head,
            _ => idle_until,
        }
    }

    /// What a passed deadline ends in: the idle one (`idle`: no byte of a head
    /// yet) closes the connection without an answer; the header one refuses
    /// the partial head with 408 (`ErrorInfo::RequestHeaderTimeout`, logged as
    /// `ERRORINFO_INVALID_REQUEST`).
    fn deadline_passed(&self, idle: bool) -> Next {
        if idle {
            return Next::Close;
        }
        let rej = guard::describe(&self.input, ErrorInfo::RequestHeaderTimeout);
        Next::Refused(Box::new(rej))
    }

    /// Ends the connection: shut the write side, then (after a refusal or an
    /// unread body) read and discard for a while so that the kernel does not
    /// reset the connection before the client has read the answer.
    async fn close(&mut self, linger: bool) {
        let _ = tokio::time::timeout(self.timeouts.send, self.io.shutdown()).await;
        if !linger || self.read_eof {
            return;
        }
        let mut drained = 0;
        let _ = tokio::time::timeout(guard::LINGER, async {
            while drained <= guard::LINGER_BYTES {
                self.input.clear();
                match poll_fn(|cx| self.poll_read_more(cx)).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

/// Response bytes waiting to be written, in order.
#[derive(Default)]
struct Out {
    /// Small pieces gathered into one buffer.
    gather: Vec<u8>,
    /// Ready segments, written before `gather`.
    ready: VecDeque<Bytes>,
    /// Total bytes queued.
    len: usize,
}

impl Out {
    fn push_small(&mut self, b: &[u8]) {
        self.gather.extend_from_slice(b);
        self.len += b.len();
    }

    /// The size line of a chunk (RFC 9112 §7.1): hex digits, CRLF.
    fn push_chunk_size(&mut self, n: usize) {
        let before = self.gather.len();
        // Writing to a Vec cannot fail.
        let _ = write!(self.gather, "{n:x}\r\n");
        self.len += self.gather.len() - before;
    }

    fn push(&mut self, b: Bytes) {
        if b.len() < COPY_BELOW {
            self.push_small(&b);
            return;
        }
        self.seal();
        self.len += b.len();
        self.ready.push_back(b);
    }

    /// Moves the gathered bytes to the ready segments.
    fn seal(&mut self) {
        if !self.gather.is_empty() {
            self.ready
                .push_back(Bytes::from(std::mem::take(&mut self.gather)));
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lends a whole small answer (gathered bytes only) to the batch writer
    /// of `socket`; keeps it when that cannot be done.
    fn lend_to(&mut self, socket: &mut batch::Socket) {
        if !self.ready.is_empty() || self.gather.is_empty() {
            return;
        }
        match socket.lend(Bytes::from(std::mem::take(&mut self.gather))) {
            Ok(()) => self.len = 0,
            Err(back) => self.gather = back.into(),
        }
    }

    /// Writes as much as the socket takes. Ready(Ok) when all is written.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.len > 0 {
            if self.ready.is_empty() {
                // Only gathered bytes (a small answer): written from the
                // gather buffer itself, not turned into a shared segment.
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.gather))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.len -= n;
                if n == self.gather.len() {
                    self.gather.clear();
                } else {
                    // A partial write: the rest becomes a segment, so a slow
                    // reader does not make every later write move it again.
                    self.gather.drain(..n);
                    self.seal();
                }
                continue;
            }
            self.seal();
            let n = {
                let mut slices = [IoSlice::new(&[]); 8];
                let mut k = 0;
                for seg in self.ready.iter().take(slices.len()) {
                    slices[k] = IoSlice::new(seg);
                    k += 1;
                }
                if k == 1 || !w.is_write_vectored() {
                    ready!(Pin::new(&mut *w).poll_write(cx, &slices[0]))?
                } else {
                    ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k]))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.len -= n;
            let mut left = n;
            while left > 0 {
                let Some(front) = self.ready.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.ready.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

type Handler = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

// Sending is the common case, so it is not boxed (a box would be an
// allocation per response); the enum lives once per exchange, on its task.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// The handler is working on the response.
    Waiting(Handler),
    /// The head is queued; the body is being written, or, once
    /// `Exchange::ended`, is queued whole: the ended body is kept (not moved
    /// into a stage of its own, a copy of it) until the exchange is dropped
    /// after the answer's bytes are written, when its record is written
    /// (`ResponseBody::finish_when_dropped`).
    Sending(ResponseBody),
}

impl Drop for Exchange {
    /// An answer queued whole but not written whole (the client left, the send
    /// timeout cut it, a write failed, the connection was dropped at shutdown):
    /// its record is written now and says so (`ResponseBody::client_left`).
    fn drop(&mut self) {
        if let (true, false, Stage::Sending(body)) = (self.ended, self.written, &mut self.stage) {
            body.client_left();
        }
    }
}

/// How the response body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutFraming {
    /// No body bytes are written (HEAD, 1xx, 204, 304, 2xx to CONNECT).
    None,
    /// `Content-Length`: this many bytes may still be written.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, unknown length).
    Close,
}

/// One request and its response on a connection.
struct Exchange {
    stage: Stage,
    /// The response body has ended: the answer is queued whole.
    ended: bool,
    /// The answer is written whole (`poll` returned `Ok`).
    written: bool,
    /// The request body's hand-over point, while the body is not read whole.
    slot: Option<Arc<BodySlot>>,
    /// Where the request body stands.
    request_body: Framing,
    expect_continue: bool,
    method: Method,
    version: Version,
    keep_alive: bool,
    /// Close with a lingering close (a refusal).
    linger: bool,
    upgrade: Option<oneshot::Sender<Upgraded>>,
    /// The answer is 101 and the connection goes to the upgrade.
    upgrading: bool,
    framing: OutFraming,
}

impl Exchange {
    fn new(info: &Arc<ConnInfo>, head: Head) -> Exchange {
        let Head {
            mut parts,
            fields,
            body,
            upgrade,
            keep_alive,
            expect_continue,
            bytes,
        } = head;
        let (request_body, length) = match body {
            BodyFraming::None => (Framing::Done, None),
            BodyFraming::Length(n) => (Framing::Length(n), Some(n)),
            BodyFraming::Chunked => (Framing::Chunked(super::chunked::Chunk::START), None),
        };
        let slot = (body != BodyFraming::None).then(|| Arc::new(BodySlot::default()));
        let client_body = match &slot {
            Some(slot) => ClientBody::H1(H1Body::new(slot.clone(), length)),
            None => ClientBody::Empty,
        };
        let upgrade = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            parts
                .extensions
                .insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx)))));
            tx
        });
        let method = parts.method.clone();
        let version = parts.version;
        let req = http::Request::from_parts(parts, client_body);
        Exchange {
            stage: Stage::Waiting(proxy::handle(info.clone(), req, fields, Some(bytes as u64))),
            ended: false,
            written: false,
            slot,
            request_body,
            expect_continue,
            method,
            version,
            keep_alive,
            linger: false,
            upgrade,
            upgrading: false,
            framing: OutFraming::None,
        }
    }

    fn refused(info: &Arc<ConnInfo>, rej: Rejection) -> Exchange {
        let version = if rej.version == "HTTP/1.0" {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let resp = proxy::refused(info, rej);
        Exchange {
            stage: Stage::Waiting(Box::pin(std::future::ready(resp))),
            ended: false,
            written: false,
            slot: None,
            request_body: Framing::Done,
            expect_continue: false,
            method: Method::GET,
            version,
            keep_alive: false,
            linger: true,
            upgrade: None,
            upgrading: false,
            framing: OutFraming::None,
        }
    }

    fn poll<I: AsyncRead + AsyncWrite + Lend + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        shutdown: &Shutdown,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<After>> {
        loop {
            let mut produced = false;
            match &mut self.stage {
                Stage::Waiting(handler) => {
                    if let Poll::Ready(resp) = handler.as_mut().poll(cx) {
                        if shutdown.asked() {
                            self.keep_alive = false;
                        }
                        self.start_response(resp, &mut conn.out, &mut conn.input);
                        produced = true;
                    }
                }
                Stage::Sending(body) => {
                    if !self.ended && conn.out.len < MAX_QUEUED {
                        match Pin::new(body).poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Ok(data) = frame.into_data() {
                                    self.put_data(data, &mut conn.out)?;
                                }
                                produced = true;
                            }
                            Poll::Ready(Some(Err(e))) => {
                                return Poll::Ready(Err(io::Error::other(format!(
                                    "response body failed: {e}"
                                ))));
                            }
                            Poll::Ready(None) => {
                                if self.framing == OutFraming::Chunked {
                                    conn.out.push_small(b"0\r\n\r\n");
                                }
                                if let OutFraming::Length(n) = self.framing {
                                    if n > 0 {
                                        // Shorter than announced: the client must not
                                        // wait for the rest on this connection.
                                        return Poll::Ready(Err(io::Error::other(
                                            "response body shorter than its Content-Length",
                                        )));
                                    }
                                }
                                self.ended = true;
                                produced = true;
                            }
                            Poll::Pending => {}
                        }
                    }
                }
            }
            let fed = self.feed_body(conn, cx);
            if self.expect_continue && matches!(self.stage, Stage::Waiting(_)) {
                if let Some(slot) = &self.slot {
                    if slot.wants() {
                        conn.out.push_small(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.expect_continue = false;
                    }
                }
            }
            if (produced || fed) && conn.out.len < MAX_QUEUED && !self.ended {
                // Gather more before writing: a small response leaves in one write.
                continue;
            }
            let mut progress = produced || fed;
            if self.ended && !self.upgrading && !conn.out.is_empty() {
                if !self.keep_alive {
                    // The last answer: the FIN of the shutdown that follows
                    // leaves in its last segment.
                    if let Some(socket) = conn.io.batch_socket() {
                        socket.last_writes();
                    }
                } else if conn.out.ready.is_empty() {
                    // A whole small answer on a connection that stays open goes
                    // out with the other connections' writes (batch.rs).
                    conn.lend_answer(cx)?;
                }
            }
            if !conn.out.is_empty() {
                let before = conn.out.len;
                match conn.out.poll_write(&mut conn.io, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                if conn.out.len != before {
                    progress = true;
                    conn.stall.clear();
                }
            }
            if conn.out.is_empty() {
                if let Poll::Ready(Err(e)) = Pin::new(&mut conn.io).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
                if self.ended {
                    if let Poll::Ready(r) = Pin::new(&mut conn.io).poll_flush(cx) {
                        r?;
                        self.written = true;
                        return Poll::Ready(Ok(self.after(&mut conn.input)));
                    }
                    // The flush of a finished answer waits for the client.
                    // (A TLS flush that moves some bytes is not seen as
                    // progress: the last records, at most the TLS layer's
                    // buffer, must leave within the timeout.)
                    return conn.wait_for_client(cx).map(Err);
                }
            }
            if !progress
                && self.slot.is_none()
                && !conn.read_eof
                && conn.input.len() < MAX_READ_AHEAD
            {
                // Watch the client while it waits: the end of its stream means it
                // left (the response is dropped, 499); bytes are its next request.
                match conn.poll_read_more(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the client closed the connection before the response ended",
                        )));
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => {}
                }
            }
            if progress {
                continue;
            }
            if conn.out.is_empty() {
                // Waiting for the handler or the backend, not the client.
                conn.stall.clear();
                return Poll::Pending;
            }
            // Bytes are queued and the socket took none.
            return conn.wait_for_client(cx).map(Err);
        }
    }

    /// What happens to the connection after a fully written response.
    fn after(&mut self, input: &mut BytesMut) -> After {
        if self.upgrading {
            if let Some(to) = self.upgrade.take() {
                return After::Upgrade(to);
            }
        }
        if !self.skip_unread_body(input) {
            // The request body was not read to its end: its rest cannot be told
            // from a next request.
            return After::Close { linger: true };
        }
        if self.keep_alive && !self.upgrading {
            After::KeepAlive
        } else {
            After::Close {
                linger: self.linger,
            }
        }
    }

    /// When the handler has dropped the request body unread, skips what of it is
    /// already buffered. True when nothing of the body is left to read.
    fn skip_unread_body(&mut self, input: &mut BytesMut) -> bool {
        let Some(slot) = &self.slot else {
            return true;
        };
        if Arc::strong_count(slot) > 1 {
            // Still held (a backend may be reading it as it answers).
            return false;
        }
        loop {
            let buffered = input.len();
            let state = self.request_body;
            match decode_body(input, state) {
                Err(_) => return false,
                Ok((next, _)) => {
                    self.request_body = next;
                    if next.is_done() {
                        self.slot = None;
                        return true;
                    }
                    if next == state && input.len() == buffered {
                        return false;
                    }
                }
            }
        }
    }

    /// Decodes request body bytes for the handler while it wants them. Returns
    /// true when something changed.
    fn feed_body<I: AsyncRead + AsyncWrite + Lend + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
    ) -> bool {
        let Some(slot) = self.slot.clone() else {
            return false;
        };
        if !slot.wants() {
            return false;
        }
        loop {
            let buffered = conn.input.len();
            match decode_body(&mut conn.input, self.request_body) {
                Err(e) => {
                    slot.fail(e);
                    self.slot = None;
                    self.keep_alive = false;
                    self.linger = true;
                    self.request_body = Framing::Done;
                    return true;
                }
                Ok((next, piece)) => {
                    let moved = next != self.request_body || conn.input.len() != buffered;
                    self.request_body = next;
                    let got = piece.is_some();
                    if let Some(piece) = piece {
                        slot.put(piece);
                    }
                    if next.is_done() {
                        slot.finish();
                        self.slot = None;
                        return true;
                    }
                    if got {
                        return true;
                    }
                    if moved {
                        // Framing bytes (a chunk-size line) were used: the data
                        // may already be buffered behind them.
                        continue;
                    }
                }
            }
            if conn.read_eof {
                slot.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection in the middle of the request body",
                ));
                self.slot = None;
                self.keep_alive = false;
                return true;
            }
            match conn.poll_read_more(cx) {
                Poll::Ready(_) => continue,
                Poll::Pending => return false,
            }
        }
    }

    /// Queues the response head and decides the body's framing.
    fn start_response(
        &mut self,
        resp: Response<ResponseBody>,
        out: &mut Out,
        input: &mut BytesMut,
    ) {
        let (parts, mut body) = resp.into_parts();
        // Its record is written after the answer's bytes (`Exchange::ended`).
        body.finish_when_dropped();
        let status = parts.status;
        let mut headers = parts.headers;
        // One pass over the fields for the four this needs (the map's, then a
        // backend's listed apart, which are never hop-by-hop ones), where
        // looking each up by name cost about 400 instructions a response.
        let mut says_close = false;
        let mut has_te = false;
        let mut has_date = false;
        let mut length: Option<&HeaderValue> = None;
        let listed = body.listed_fields().iter().map(|(k, v)| (k, v));
        for (name, value) in headers.iter().chain(listed) {
            if name == header::CONNECTION {
                says_close |= connection_options(value.as_bytes()).close;
            } else if name == header::TRANSFER_ENCODING {
                has_te = true;
            } else if name == header::CONTENT_LENGTH {
                length = length.or(Some(value));
            } else if name == header::DATE {
                has_date = true;
            }
        }
        let length = length
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if says_close {
            self.keep_alive = false;
        }
        if self
            .slot
            .as_ref()
            .is_some_and(|s| Arc::strong_count(s) == 1)
            && !self.skip_unread_body(input)
        {
            // Answered without reading the body, whose rest has not arrived: it
            // cannot be told from a next request, so say the connection ends.
            self.keep_alive = false;
        }
        self.upgrading = status == StatusCode::SWITCHING_PROTOCOLS && self.upgrade.is_some();
        if status == StatusCode::SWITCHING_PROTOCOLS && !self.upgrading {
            // Switched without being asked: nothing HTTP can follow.
            self.keep_alive = false;
        }
        // No body, and its length headers passed on as they are: HEAD (RFC 9110
        // §9.3.2), 1xx, 204, 304, 2xx to CONNECT.
        let bodiless = self.method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || (self.method == Method::CONNECT && status.is_success());
        if bodiless {
            // A page the gateway made is not counted as sent either.
            body.without_content();
        }
        self.framing = if bodiless {
            OutFraming::None
        } else if has_te {
            // Never passed by the proxy (hop-by-hop); kept safe anyway.
            headers.remove(header::CONTENT_LENGTH);
            if self.version == Version::HTTP_10 {
                headers.remove(header::TRANSFER_ENCODING);
                self.keep_alive = false;
                OutFraming::Close
            } else {
                OutFraming::Chunked
            }
        } else if let Some(n) = length {
            OutFraming::Length(n)
        } else if let Some(n) = body.size_hint().exact() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            OutFraming::Length(n)
        } else if self.version == Version::HTTP_11 {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            OutFraming::Chunked
        } else {
            self.keep_alive = false;
            OutFraming::Close
        };
        // `Connection: close` written after the fields, where appending it to a
        // map that has no `Connection` would allocate the map (about 550
        // instructions a connection in the close scenario: an answer from a
        // backend comes with its fields in a list and an empty map).
        let mut close_line = false;
        if !self.upgrading {
            if !self.keep_alive {
                if !says_close {
                    if headers.contains_key(header::CONNECTION) {
                        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
                    } else {
                        close_line = true;
                    }
                }
            } else if self.version == Version::HTTP_10 {
                headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
        }
        if !has_date {
            headers.insert(header::DATE, date_value());
        }
        let before = out.len;
        encode_head(
            self.version,
            status,
            body.listed_fields(),
            &headers,
            close_line,
            out,
        );
        body.head_written((out.len - before) as u64);
        self.stage = Stage::Sending(body);
    }

    /// Queues one piece of the response body in the response's framing.
    fn put_data(&mut self, data: Bytes, out: &mut Out) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            OutFraming::None => {}
            OutFraming::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(io::Error::other(
                        "response body longer than its Content-Length",
                    ));
                }
                *left -= n;
                out.push(data);
            }
            OutFraming::Chunked => {
                out.push_chunk_size(data.len());
                out.push(data);
                out.push_small(b"\r\n");
            }
            OutFraming::Close => out.push(data),
        }
        Ok(())
    }
}

/// Writes the status line and header fields (RFC 9112 §4): `listed` (a
/// backend's, in the order they came), then `headers`, then, with
/// `close_line`, `connection: close`. HTTP/1.0 clients get an
/// `HTTP/1.0` status line, as hyper and HAProxy answer them.
fn encode_head(
    version: Version,
    status: StatusCode,
    listed: &[(HeaderName, HeaderValue)],
    headers: &HeaderMap,
    close_line: bool,
    out: &mut Out,
) {
    const CLOSE: &[u8] = b"connection: close\r\n";
    let fields = || listed.iter().map(|(k, v)| (k, v)).chain(headers);
    out.gather
        .reserve(32 + CLOSE.len() + super::headers::wire_size(fields()) as usize);
    let line: &[u8] = if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    out.push_small(line);
    out.push_small(status.as_str().as_bytes());
    out.push_small(b" ");
    out.push_small(status.canonical_reason().unwrap_or("").as_bytes());
    out.push_small(b"\r\n");
    for (k, v) in fields() {
        out.push_small(k.as_str().as_bytes());
        out.push_small(b": ");
        out.push_small(v.as_bytes());
        out.push_small(b"\r\n");
    }
    if close_line {
        out.push_small(CLOSE);
    }
    out.push_small(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second.
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
}

/// Today's `Date` header value (RFC 9110 §6.6.1), made once a second per thread.
pub fn date_value() -> HeaderValue {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *d = (secs, v);
            }
        }
        d.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Small pieces (gathered) and large ones (segments), written through a
    /// pipe that takes at most 16 bytes at a time: every write is partial, and
    /// the bytes arrive whole and in order.
    #[tokio::test]
    async fn queued_output_arrives_in_order_through_partial_writes() {
        let (mut w, mut r) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = r.read_to_end(&mut got).await;
            got
        });
        let mut out = Out::default();
        let mut want = Vec::new();
        let big = Bytes::from(vec![b'B'; COPY_BELOW + 5]);
        for round in 0..3u8 {
            let small = [b'a' + round; 37];
            out.push_small(&small);
            want.extend_from_slice(&small);
            out.push(big.clone());
            want.extend_from_slice(&big);
            out.push_chunk_size(300 + round as usize);
            want.extend_from_slice(format!("{:x}\r\n", 300 + round as usize).as_bytes());
            // Written after each round, and once with a round still queued.
            if round != 1 {
                poll_fn(|cx| out.poll_write(&mut w, cx))
                    .await
                    .expect("write");
                assert!(out.is_empty());
            }
        }
        // Only small pieces: written from the gather buffer itself, partly.
        for round in 0..2u8 {
            let small = [b'x' + round; 100];
            out.push_small(&small);
            want.extend_from_slice(&small);
        }
        poll_fn(|cx| out.poll_write(&mut w, cx))
            .await
            .expect("write");
        assert!(out.is_empty());
        drop(w);
        assert_eq!(reader.await.expect("reader"), want);
    }

    /// A lent answer that meets a full socket: what the batch writer could not
    /// write is written before what was queued after it (`batch.rs`).
    #[tokio::test]
    async fn a_lent_answer_meeting_a_full_socket_still_goes_first() {
        super::batch::start();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let mut sock = super::batch::Socket::new(a.expect("connect"));
        let mut peer = b.expect("accept").0;
        let mut out = Out::default();
        // 16 MiB cannot fit an unread socket.
        let first = vec![b'1'; 16 * 1024 * 1024];
        out.push_small(&first);
        out.lend_to(&mut sock);
        assert!(out.is_empty(), "lent");
        out.push_small(b"second");
        let reader = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.expect("read");
            got
        });
        poll_fn(|cx| out.poll_write(&mut sock, cx))
            .await
            .expect("write");
        assert!(out.is_empty());
        sock.shutdown().await.expect("shutdown");
        let got = reader.await.expect("reader");
        assert_eq!(got.len(), first.len() + 6);
        assert!(got[..first.len()].iter().all(|&x| x == b'1'));
        assert_eq!(&got[first.len()..], b"second");
    }
}
