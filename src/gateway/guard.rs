//! The HTTP/1 request guard: validates every request head and the body framing
//! of a client connection *before* hyper parses it.
//!
//! Why: hyper quietly repairs some ambiguous requests (it drops `Content-Length`
//! when `Transfer-Encoding` is present) and answers others with its own bare 400,
//! which carries no transaction id and leaves no access-log record. A gateway must
//! refuse ambiguous framing outright (RFC 9112 §6.3, request smuggling) and explain
//! every refusal. So [`GuardedIo`] sits between the socket and hyper:
//!
//! - it holds back each request head until it is complete, then checks it
//!   (request line, version, target, Host, Content-Length, Transfer-Encoding,
//!   bare LF, size limits);
//! - a valid head is passed on and its body is tracked (Content-Length or chunked,
//!   chunk sizes checked) so the next head is found exactly where hyper will look;
//! - an invalid head is replaced by a *synthetic* request to a path holding this
//!   connection's random nonce, and the reason is left in [`ConnShared`]. The
//!   gateway's handler recognises it, answers 4xx with the right `error_info`
//!   and closes the connection. Nothing of the invalid request reaches a backend.
//!
//! HTTP/2 (prior-knowledge preface) and upgraded connections pass through untouched.

use super::chunked::{scan_chunked, Chunk};
use super::failure::ErrorInfo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Largest request head accepted (request line and headers), in bytes. Past it: 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest request target accepted, in bytes. Past it: 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header fields in one request (hyper's default). Past it: 431.
pub const MAX_HEADERS: usize = 100;
/// Time allowed from the first byte of a request head to its end (Azure: 60 s, then 408).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Path prefix of synthetic requests; followed by the connection nonce in hex.
pub const REJECT_PATH_PREFIX: &str = "/.portcullis/rejected/";

/// What the guard learned about a refused request, for the handler and the log.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Why.
    pub info: ErrorInfo,
    /// Method as sent (sanitized, may be empty).
    pub method: String,
    /// Request target as sent (sanitized, truncated to 1 KiB).
    pub target: String,
    /// Version as sent (`HTTP/1.1`, or what the client wrote).
    pub version: String,
    /// Host header if one could be read.
    pub host: String,
    /// User-Agent if one could be read.
    pub user_agent: String,
    /// Bytes of the refused head.
    pub received_bytes: u64,
}

/// State shared by a connection's guard and its request handler.
#[derive(Debug)]
pub struct ConnShared {
    /// Random per connection: a synthetic request must carry it to be believed.
    pub nonce: u64,
    /// Set by the handler when it answered 101: the guard steps aside.
    pub upgraded: AtomicBool,
    /// Set by the guard when it refused a request.
    pub rejection: Mutex<Option<Rejection>>,
    /// Requests of this connection whose response has not ended yet.
    pub active: AtomicUsize,
    /// When `active` last fell to 0, or when the connection was accepted.
    pub idle_since: Mutex<tokio::time::Instant>,
    /// Keep-alive idle timeout: a connection with no request in progress and no
    /// byte of a new one for this long is closed (no answer). `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The connection's reader, parked while a request was in progress: woken
    /// when the last one ends, so that it arms the idle timer.
    pub idle_waker: Mutex<Option<std::task::Waker>>,
}

impl ConnShared {
    /// New shared state with a random nonce and no idle timeout.
    pub fn new() -> Arc<ConnShared> {
        Self::with_idle_timeout(None)
    }

    /// New shared state whose connection is closed after `idle_timeout` without
    /// a request (`[gateway].client_idle_timeout`).
    pub fn with_idle_timeout(idle_timeout: Option<Duration>) -> Arc<ConnShared> {
        Arc::new(ConnShared {
            nonce: fastrand::u64(..),
            upgraded: AtomicBool::new(false),
            rejection: Mutex::new(None),
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(tokio::time::Instant::now()),
            idle_timeout,
            idle_waker: Mutex::new(None),
        })
    }

    /// The synthetic path for this connection.
    pub fn reject_path(&self) -> String {
        format!("{REJECT_PATH_PREFIX}{:016x}", self.nonce)
    }

    /// The rejection, when `path` is this connection's synthetic request.
    pub fn take_rejection(&self, path: &str) -> Option<Rejection> {
        if path.starts_with(REJECT_PATH_PREFIX) && path == self.reject_path() {
            self.rejection.lock().ok().and_then(|mut r| r.take())
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connection start: may be the HTTP/2 preface.
    Start,
    /// Collecting a request head.
    Head,
    /// Content-Length body bytes left.
    Body(u64),
    /// Chunked body.
    Chunked(Chunk),
    /// Pass everything (HTTP/2, upgrades).
    Transparent,
    /// Refused; deliver what is queued, then EOF.
    Closed,
}

/// Marks a request of a connection as in progress until dropped (held by the
/// request's record, so until its response body has ended); the last one to go
/// starts the connection's idle time.
pub struct ActiveRequest(Arc<ConnShared>);

impl ActiveRequest {
    /// Counts one more request in progress on `conn`.
    pub fn new(conn: &Arc<ConnShared>) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(conn.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = tokio::time::Instant::now();
            }
            if let Some(w) = self.0.idle_waker.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        }
    }
}

thread_local! {
    /// Scratch space for socket reads (see `poll_read`).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 16 * 1024]);
}

/// The guarded client connection; see the module doc.
pub struct GuardedIo<T> {
    inner: T,
    shared: Arc<ConnShared>,
    state: State,
    /// Bytes read from the socket, not yet processed.
    input: Vec<u8>,
    /// Processed bytes waiting for hyper.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    head_deadline: Option<Pin<Box<Sleep>>>,
    /// Idle deadline armed while the connection waits between requests: the
    /// instant it was armed for, and its timer.
    idle_deadline: Option<(tokio::time::Instant, Pin<Box<Sleep>>)>,
    /// Set when the last head delivered asked for an upgrade (or CONNECT).
    upgrade_pending: bool,
    /// Request-head timeout.
    head_timeout: Duration,
    /// Offset in `out` of the head of the message being scanned, while hyper has
    /// not read it yet: a framing error in its body can still replace it.
    undelivered_head: Option<usize>,
    /// Lingering close after a refusal: deadline and bytes discarded.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<T> GuardedIo<T> {
    /// Wraps a freshly accepted plain-text client connection.
    pub fn new(inner: T, shared: Arc<ConnShared>) -> Self {
        Self::with_timeout(inner, shared, HEAD_TIMEOUT)
    }

    /// Like [`GuardedIo::new`] with another request-head timeout.
    pub fn with_timeout(inner: T, shared: Arc<ConnShared>, head_timeout: Duration) -> Self {
        GuardedIo {
            inner,
            shared,
            state: State::Start,
            input: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            head_deadline: None,
            idle_deadline: None,
            upgrade_pending: false,
            head_timeout,
            undelivered_head: None,
            linger: None,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn reject(&mut self, rej: Rejection) {
        let path = self.shared.reject_path();
        if let Ok(mut slot) = self.shared.rejection.lock() {
            *slot = Some(rej);
        }
        self.out.extend_from_slice(
            format!("GET {path} HTTP/1.1\r\nhost: rejected.invalid\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
        self.input.clear();
        self.state = State::Closed;
        self.head_deadline = None;
    }

    /// Processes `input` into `out` as far as possible. Returns Err on a body
    /// framing error found after the head was already delivered.
    fn process(&mut self) -> io::Result<()> {
        loop {
            if self.shared.upgraded.load(Ordering::Relaxed) {
                self.state = State::Transparent;
            }
            match self.state {
                State::Start => {
                    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.state = State::Head;
                    } else if n == PREFACE.len() {
                        self.state = State::Transparent;
                    } else {
                        return Ok(()); // need more to decide
                    }
                }
                State::Transparent => {
                    self.out.append(&mut self.input);
                    return Ok(());
                }
                State::Closed => {
                    self.input.clear();
                    return Ok(());
                }
                State::Body(left) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let k = (left.min(self.input.len() as u64)) as usize;
                    self.out.extend(self.input.drain(..k));
                    let left = left - k as u64;
                    self.state = if left == 0 {
                        self.after_message()
                    } else {
                        State::Body(left)
                    };
                    if left != 0 {
                        return Ok(());
                    }
                }
                State::Chunked(c) => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let (used, next) = match scan_chunked(c, &self.input, false) {
                        Ok(r) => r,
                        Err(e) => match self.undelivered_head.take() {
                            Some(at) if at >= self.out_pos => {
                                // The head is still ours: refuse the request whole.
                                let head = self.out.split_off(at);
                                let mut rej = describe(&head, ErrorInfo::InvalidRequest);
                                rej.received_bytes = (head.len() + self.input.len()) as u64;
                                self.reject(rej);
                                return Ok(());
                            }
                            _ => return Err(e),
                        },
                    };
                    self.out.extend(self.input.drain(..used));
                    match next {
                        Some(c) => {
                            self.state = State::Chunked(c);
                            return Ok(());
                        }
                        None => self.state = self.after_message(),
                    }
                }
                State::Head => {
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    let skip = self
                        .input
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    if skip > 0 {
                        self.input.drain(..skip);
                    }
                    if self.input.is_empty() {
                        self.head_deadline = None;
                        return Ok(());
                    }
                    match find_head_end(&self.input) {
                        HeadEnd::Complete(end) => {
                            self.head_deadline = None;
                            let head: Vec<u8> = self.input.drain(..end).collect();
                            let verdict = if head.len() > MAX_HEAD_BYTES {
                                Err(Box::new(describe(&head, ErrorInfo::HeadersTooLarge)))
                            } else {
                                check_head(&head)
                            };
                            match verdict {
                                Ok(framing) => {
                                    self.undelivered_head = Some(self.out.len());
                                    self.out.extend_from_slice(&head);
                                    self.upgrade_pending = framing.upgrade;
                                    self.state = match framing.body {
                                        BodyFraming::None => self.after_message(),
                                        BodyFraming::Length(n) => State::Body(n),
                                        BodyFraming::Chunked => State::Chunked(Chunk::START),
                                    };
                                }
                                Err(rej) => {
                                    self.reject(*rej);
                                    return Ok(());
                                }
                            }
                        }
                        HeadEnd::BareLf => {
                            let mut rej = describe(&self.input, ErrorInfo::InvalidRequest);
                            rej.received_bytes = self.input.len() as u64;
                            self.reject(rej);
                            return Ok(());
                        }
                        HeadEnd::Partial => {
                            let first_line = self
                                .input
                                .iter()
                                .position(|b| *b == b'\n')
                                .unwrap_or(self.input.len());
                            if first_line > MAX_URI_BYTES + 64 {
                                let rej = describe(&self.input, ErrorInfo::UriTooLong);
                                self.reject(rej);
                            } else if self.input.len() > MAX_HEAD_BYTES {
                                let rej = describe(&self.input, ErrorInfo::HeadersTooLarge);
                                self.reject(rej);
                            } else if self.head_deadline.is_none() {
                                self.head_deadline =
                                    Some(Box::pin(tokio::time::sleep(self.head_timeout)));
                            }
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn after_message(&mut self) -> State {
        if self.upgrade_pending {
            // Whatever follows an upgrade request is either the upgraded protocol
            // (after a 101) or nothing: the handler closes a refused upgrade.
            State::Transparent
        } else {
            State::Head
        }
    }
}

enum HeadEnd {
    Complete(usize),
    BareLf,
    Partial,
}

/// Finds the end of a head (index after CRLF CRLF); refuses a bare LF (RFC 9112 §2.2
/// lets a server accept it, a gateway must not: parsers disagree on it).
fn find_head_end(buf: &[u8]) -> HeadEnd {
    let mut i = 0;
    while let Some(off) = memchr_lf(&buf[i..]) {
        let lf = i + off;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return HeadEnd::BareLf;
        }
        if lf >= 3 && &buf[lf - 3..=lf] == b"\r\n\r\n" {
            return HeadEnd::Complete(lf + 1);
        }
        i = lf + 1;
    }
    HeadEnd::Partial
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

#[derive(Debug, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
struct Framing {
    body: BodyFraming,
    upgrade: bool,
}

fn sanitize(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Best-effort description of an unparseable head, for the access log.
fn describe(head: &[u8], info: ErrorInfo) -> Rejection {
    let line_end = head
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = sanitize(parts.next().unwrap_or_default(), 32);
    let target = sanitize(parts.next().unwrap_or_default(), 1024);
    let version = sanitize(parts.next().unwrap_or_default(), 16);
    let find = |name: &str| -> String {
        head.split(|b| *b == b'\n')
            .skip(1)
            .find_map(|l| {
                let colon = l.iter().position(|b| *b == b':')?;
                if l[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                    Some(sanitize(l[colon + 1..].trim_ascii(), 256))
                } else {
                    None
                }
            })
            .unwrap_or_default()
    };
    Rejection {
        info,
        method,
        target,
        version,
        host: find("host"),
        user_agent: find("user-agent"),
        received_bytes: head.len() as u64,
    }
}

/// Checks one complete head. Ok: how its body is framed. Err: why it is refused.
fn check_head(head: &[u8]) -> Result<Framing, Box<Rejection>> {
    let fail = |info| Err(Box::new(describe(head, info)));
    let line_end = head.iter().position(|b| *b == b'\r').unwrap_or(head.len());
    let words: Vec<&[u8]> = head[..line_end]
        .split(|b| *b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() == 2 && words[1].starts_with(b"/") {
        // `GET /path` with no version: an HTTP/0.9 request line.
        return fail(ErrorInfo::Invalid09Method);
    }
    if words.len() == 3
        && words[2].starts_with(b"HTTP/")
        && words[2] != b"HTTP/1.1"
        && words[2] != b"HTTP/1.0"
    {
        return fail(ErrorInfo::InvalidVersion);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return fail(ErrorInfo::InvalidRequest),
        Err(httparse::Error::TooManyHeaders) => return fail(ErrorInfo::HeadersTooLarge),
        Err(httparse::Error::Version) => return fail(ErrorInfo::InvalidVersion),
        Err(_) => return fail(ErrorInfo::InvalidRequest),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return fail(ErrorInfo::InvalidRequest);
    };
    if target.len() > MAX_URI_BYTES {
        return fail(ErrorInfo::UriTooLong);
    }
    // Request target forms (RFC 9112 §3.2).
    let target_ok = if method == "CONNECT" {
        !target.starts_with('/') && target.contains(':')
    } else if target == "*" {
        method == "OPTIONS"
    } else if target.starts_with('/') {
        !target.starts_with("//") || target.len() == 1
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    };
    if !target_ok || http::Uri::try_from(target).is_err() {
        return fail(ErrorInfo::RequestUriInvalid);
    }

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te_count = 0;
    let mut chunked = false;
    let mut upgrade = method == "CONNECT";
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if value.iter().any(|b| *b == 0 || *b == b'\r' || *b == b'\n') {
            return fail(ErrorInfo::InvalidRequest);
        }
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if http::uri::Authority::try_from(value).is_err() && !value.is_empty() {
                return fail(ErrorInfo::InvalidRequest);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            cl_count += 1;
            // Digits only: no sign, no list, no spaces (RFC 9110 §8.6).
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return fail(ErrorInfo::InvalidRequest);
            }
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            content_length = n;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            // Exactly `chunked`: anything else is either unsupported or an
            // obfuscation attempt (`chunked, identity`, ` chunked`, `xchunked`).
            if !value.eq_ignore_ascii_case(b"chunked") {
                return fail(ErrorInfo::InvalidRequest);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if cl_count > 1 || te_count > 1 || (cl_count > 0 && te_count > 0) {
        return fail(ErrorInfo::InvalidRequest);
    }
    if hosts > 1 {
        return fail(ErrorInfo::InvalidRequest);
    }
    if version == 1 && hosts == 0 {
        return fail(ErrorInfo::HttpNoHostHeader);
    }
    if version == 0 && chunked {
        return fail(ErrorInfo::InvalidRequest);
    }
    let body = if chunked {
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    Ok(Framing { body, upgrade })
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                    this.undelivered_head = None;
                }
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Closed {
                // After a refusal hyper must still write our answer: an EOF here
                // would make it drop the response. It closes the connection itself
                // (the synthetic request says `connection: close`).
                return Poll::Pending;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Transparent && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if let Some(d) = this.head_deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    let rej = describe(&this.input, ErrorInfo::RequestHeaderTimeout);
                    this.reject(rej);
                    continue;
                }
            }
            // Keep-alive idle timeout: nothing in progress and no byte of a new
            // request → end the connection (EOF to hyper, which closes it).
            if let Some(limit) = this.shared.idle_timeout {
                let between =
                    matches!(this.state, State::Start | State::Head) && this.input.is_empty();
                let busy = this.shared.active.load(Ordering::Acquire) > 0;
                if between && busy {
                    // Be polled again when the response ends.
                    if let Ok(mut w) = this.shared.idle_waker.lock() {
                        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *w = Some(cx.waker().clone());
                        }
                    }
                    // The request may have ended in between.
                    if this.shared.active.load(Ordering::Acquire) == 0 {
                        cx.waker().wake_by_ref();
                    }
                }
                if between && !busy {
                    let since = this
                        .shared
                        .idle_since
                        .lock()
                        .map(|g| *g)
                        .unwrap_or_else(|_| tokio::time::Instant::now());
                    let at = since + limit;
                    if this.idle_deadline.as_ref().map(|(a, _)| *a) != Some(at) {
                        this.idle_deadline = Some((at, Box::pin(tokio::time::sleep_until(at))));
                    }
                    if let Some((_, d)) = this.idle_deadline.as_mut() {
                        if d.as_mut().poll(cx).is_ready() {
                            this.eof = true;
                            return Poll::Ready(Ok(()));
                        }
                    }
                } else {
                    this.idle_deadline = None;
                }
            }
            // Read more input, through the thread's scratch buffer (zeroed once
            // per thread, not once per read, and not held per connection).
            let inner = &mut this.inner;
            let input = &mut this.input;
            let mut read_into = |space: &mut [u8]| {
                let mut rb = ReadBuf::new(space);
                Pin::new(&mut *inner).poll_read(cx, &mut rb).map_ok(|()| {
                    input.extend_from_slice(rb.filled());
                    rb.filled().len()
                })
            };
            let got = ready!(SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut space) => read_into(&mut space[..]),
                Err(_) => read_into(&mut vec![0u8; 16 * 1024]),
            }))?;
            if got == 0 {
                this.eof = true;
                // A partial head at EOF is dropped: it never became a request.
                if matches!(
                    this.state,
                    State::Body(_) | State::Chunked(_) | State::Transparent
                ) {
                    this.out.append(&mut this.input);
                }
                continue;
            }
            if let Err(e) = this.process() {
                this.state = State::Closed;
                this.input.clear();
                return Poll::Ready(Err(e));
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// After a refusal the client may still be sending (a huge head, a body):
    /// closing a socket with unread input makes the kernel send RST, which can
    /// destroy our 4xx answer before the client reads it. So, like nginx's
    /// lingering close, shut the write side, then read and discard what still
    /// arrives for up to [`LINGER`] (or [`LINGER_BYTES`]) before closing.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state != State::Closed {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER)), 0));
        }
        let Some((deadline, drained)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0u8; 8192];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    *drained += rb.filled().len();
                    if *drained > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Longest lingering close after a refusal.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded during a lingering close.
pub const LINGER_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &str) -> Result<BodyFraming, ErrorInfo> {
        check_head(head.as_bytes())
            .map(|f| f.body)
            .map_err(|r| r.info)
    }

    #[test]
    fn accepts_plain_requests() {
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            verdict("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            verdict("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(verdict("GET / HTTP/1.0\r\n\r\n"), Ok(BodyFraming::None));
        assert_eq!(
            verdict("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            verdict("GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
    }

    #[test]
    fn refuses_ambiguous_framing() {
        use ErrorInfo::*;
        for (head, want) in [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\n\r\n", HttpNoHostHeader),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", InvalidRequest),
            ("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", RequestUriInvalid),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", InvalidVersion),
            ("GET /\r\n\r\n", Invalid09Method),
            ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", InvalidRequest),
        ] {
            assert_eq!(verdict(head), Err(want), "{head:?}");
        }
    }

    #[test]
    fn head_end_refuses_bare_lf() {
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\nHost: a\n\n"),
            HeadEnd::BareLf
        ));
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"),
            HeadEnd::Complete(27)
        ));
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\r\nHo"),
            HeadEnd::Partial
        ));
    }

    /// Randomized robustness with a fixed seed, so every `cargo test` repeats it
    /// (the coverage-guided search is the `request_guard` target in `fuzz/`):
    /// mutated requests never panic the guard, and whatever it passes on is a
    /// head hyper can parse with the same framing.
    #[test]
    fn mutated_requests_never_panic_and_passed_heads_parse() {
        let seeds: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let alphabet =
            b"\r\n :;,-+0123456789abcdefGHIJ\t\x00\x7f/?chunkedContent-LengthTransfer-Encoding";
        for _ in 0..20_000 {
            let mut m = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(..=m.len());
                match rng.u8(..3) {
                    0 if i < m.len() => {
                        m.remove(i);
                    }
                    1 => m.insert(i, alphabet[rng.usize(..alphabet.len())]),
                    _ if i < m.len() => m[i] = alphabet[rng.usize(..alphabet.len())],
                    _ => {}
                }
            }
            if let HeadEnd::Complete(end) = find_head_end(&m) {
                if let Ok(framing) = check_head(&m[..end]) {
                    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut r = httparse::Request::new(&mut h);
                    assert!(
                        matches!(r.parse(&m[..end]), Ok(httparse::Status::Complete(_))),
                        "{m:?}"
                    );
                    let _ = framing;
                }
            }
            let _ = scan_chunked(Chunk::START, &m, false);
        }
    }
}
