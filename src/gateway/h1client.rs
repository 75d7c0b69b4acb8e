//! HTTP/1.1 to a backend (RFC 9112), on the client connection's own task: write
//! the request head and body, read and parse the response head, then hand the
//! connection to a [`BackendBody`] that decodes the response body as the client
//! side reads it and returns the connection to the pool when the body ended.
//!
//! Why our own: hyper's client runs every backend connection as a task of its
//! own and passes each request, response and body chunk over channels, so one
//! proxied request took two tasks and four wake-ups. Forwarding is what the
//! gateway exists for (docs/benchmarks.md §2 has the measurements). Parsing is
//! httparse's, the crate hyper itself uses.
//!
//! Framing of the response body (RFC 9112 §6.3): none for HEAD and for 1xx, 204
//! and 304; `Transfer-Encoding` whose last coding is `chunked` → chunked; another
//! `Transfer-Encoding` → to the end of the connection; a valid `Content-Length` →
//! that many bytes (several different values → the answer is invalid); else to the
//! end of the connection. A connection is reused only after an HTTP/1.1 answer
//! without `Connection: close`, framed by length or chunks, read to its end, with
//! the whole request body sent.

use super::chunked::{scan_chunked, Chunk};
use super::fields::ClientFields;
use super::upstream::{Conn, ReqBody, Upstream};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use tokio_util::either::Either;

/// Most bytes of a response head (status line and fields) accepted.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most fields in a response head.
pub const MAX_RESPONSE_FIELDS: usize = 128;
/// A read buffer with less free space than this gets a new one of
/// [`READ_BUFFER`] bytes before the next read; one buffer serves many small
/// answers (the pieces handed out share it), a large body is read in big reads.
const READ_MIN_FREE: usize = 4 * 1024;
const READ_BUFFER: usize = 32 * 1024;

/// Most spare read buffers kept per thread ([`recycle`]): one for each of 64
/// exchanges in flight at once. With 16, three in four exchanges of a
/// 64-connection load found none and allocated (about 160 instructions a
/// request more, callgrind).
const MAX_SPARE_BUFFERS: usize = 64;
/// The largest buffer kept as a spare: twice [`READ_BUFFER`]. One that grew
/// to read a large head goes back to the allocator.
const MAX_SPARE_CAPACITY: usize = 2 * READ_BUFFER;

/// Takes from the spare list between two decays ([`Spares`]): about 27 s at
/// the soak's 300 requests a second, a fraction of a second under load.
const DECAY_TAKES: u32 = 8192;

/// One thread's spare read buffers, and what lets the unused ones go.
///
/// A burst (a frozen backend's requests piling up on new connections) fills
/// the list to [`MAX_SPARE_BUFFERS`]; kept for good, those 2 MiB were the RSS
/// growth the soak's check measures (docs/benchmarks.md section 5). So every
/// [`DECAY_TAKES`] takes, the buffers that sat in the list the whole time
/// (`low`, the fewest it held) are dropped, the least recently used first:
/// what the load needs stays, a burst's surplus goes, as an allocator's
/// decay returns pages. A gateway with no traffic keeps what it had.
struct Spares {
    /// Buffers with room left, the most recently kept last.
    list: Vec<BytesMut>,
    /// The fewest buffers `list` held since the last decay.
    low: usize,
    /// Takes since the last decay.
    takes: u32,
}

impl Spares {
    /// A spare buffer, if any; every [`DECAY_TAKES`]-th call first drops
    /// those unused since the last decay (so a buffer goes after one to two
    /// periods unused).
    fn take(&mut self) -> Option<BytesMut> {
        self.takes += 1;
        if self.takes > DECAY_TAKES {
            let unused = self.low.min(self.list.len());
            self.list.drain(..unused);
            self.low = self.list.len();
            self.takes = 1;
        }
        let buf = self.list.pop();
        self.low = self.low.min(self.list.len());
        buf
    }
}

thread_local! {
    /// Read buffers of connections that went back to the pool, with room left.
    static SPARE_BUFFERS: std::cell::RefCell<Spares> = const {
        std::cell::RefCell::new(Spares {
            list: Vec::new(),
            low: 0,
            takes: 0,
        })
    };
}

/// Keeps the emptied read buffer of a connection going back to the pool for
/// the next exchange on this thread (on any connection), if it has
/// [`READ_MIN_FREE`] bytes of room, is at most [`MAX_SPARE_CAPACITY`] and
/// fewer than [`MAX_SPARE_BUFFERS`] are kept; else it is dropped.
///
/// A fresh 32 KiB buffer per exchange cost about 450 instructions: mimalloc
/// serves a block over 1 KiB on its generic path. Kept on the idle
/// connection, the buffers of a burst's connections pinned the allocator's
/// pages (docs/benchmarks.md section 5); kept here, at most 64 per thread
/// are, of 32 KiB (64 KiB at most): 2 MiB per thread after a burst of 64
/// concurrent exchanges, 4 MiB at worst, like the buffer pools HAProxy keeps,
/// and those the load then leaves unused are dropped ([`Spares`]).
/// One buffer serves about 150 small answers before a `reserve` finds the
/// pieces handed out gone and reuses it in place.
pub fn recycle(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() < READ_MIN_FREE || buf.capacity() > MAX_SPARE_CAPACITY {
        return;
    }
    // `try_with`: a connection may go back to the pool as its thread ends.
    let _ = SPARE_BUFFERS.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.list.len() < MAX_SPARE_BUFFERS {
                spare.list.push(buf);
            }
        }
    });
}

/// Room for the next read: an empty buffer without room takes a spare one
/// ([`recycle`]); a buffer with less than [`READ_MIN_FREE`] bytes of room
/// gets [`READ_BUFFER`] more.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_MIN_FREE {
        if buf.is_empty() {
            let spare = SPARE_BUFFERS.try_with(|s| s.try_borrow_mut().ok()?.take());
            if let Ok(Some(spare)) = spare {
                *buf = spare;
                return;
            }
        }
        buf.reserve(READ_BUFFER);
    }
}

/// The error a [`BackendBody`] ends with when the client's request body
/// failed after the answer's head had come (the client left mid-upload, or
/// its chunked framing broke): the exchange is the client's to blame, not
/// the server's (`body.rs` logs it so).
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyFailed(pub super::reqbody::ClientBodyError);

impl ClientBodyFailed {
    /// The `ClientBodyFailed` inside a body's error, if it is one.
    pub fn of<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyFailed> {
        let inner = match e.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref()?,
            None => e,
        };
        inner.downcast_ref::<ClientBodyFailed>()
    }
}

/// Why an exchange ended without a response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection ended (end of stream, reset, broken pipe) before a
    /// complete response head. `response_bytes` arrived before that.
    #[error("connection closed before a complete response head ({response_bytes} bytes of it arrived){}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Closed {
        /// Bytes of a response that had arrived.
        response_bytes: usize,
        /// The socket error, if it was one.
        source: Option<io::Error>,
    },
    /// The answer is not valid HTTP/1.x, or its framing is contradictory.
    #[error("invalid response: {0}")]
    Malformed(String),
    /// The client's request body failed: the client went away mid-upload.
    #[error("client request body: {0}")]
    ClientBody(super::reqbody::ClientBodyError),
    /// The server was removed from its pool and its connections cut.
    #[error("server removed from its pool")]
    Cut,
}

impl SendError {
    /// True when the connection was reset by the backend (TCP RST).
    pub fn is_reset(&self) -> bool {
        matches!(self, SendError::Closed { source: Some(e), .. }
            if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe))
    }

    /// True when not one byte of a response arrived before the connection ended:
    /// on a reused connection, the keep-alive race.
    pub fn nothing_received(&self) -> bool {
        matches!(
            self,
            SendError::Closed {
                response_bytes: 0,
                ..
            }
        )
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    /// No body.
    None,
    /// `Content-Length` (taken from the client's request).
    Length,
    /// `Transfer-Encoding: chunked` (the client's length is unknown).
    Chunked,
}

/// Serializes a request head: `METHOD target HTTP/1.1`, the fields, and the
/// framing of the body (RFC 9112 §6). `fields` must be free of hop-by-hop fields.
fn write_head(out: &mut BytesMut, req: &RequestHead<'_>, has_body: bool) -> ReqFraming {
    let RequestHead {
        method,
        target,
        fields,
        host,
        added,
        size_hint: _,
        fields_as_list: _,
    } = *req;
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(h) = host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut has_length = false;
    fields.write_lines(out, |name| {
        if *name == http::header::HOST {
            host.is_some()
        } else {
            has_length |= *name == http::header::CONTENT_LENGTH;
            false
        }
    });
    for (name, value) in added {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match (has_body, has_length) {
        (true, true) => ReqFraming::Length,
        (true, false) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ReqFraming::Chunked
        }
        (false, _) => {
            // A POST, PUT or PATCH without a body says so, as hyper and curl do.
            if !has_length && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            ReqFraming::None
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// The request as it goes to a backend.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request target in origin form (`/path?query`).
    pub target: &'a str,
    /// Fields to send, in order, hop-by-hop ones already removed (`headers.rs`
    /// `strip_request_fields`).
    pub fields: &'a ClientFields,
    /// The `Host` to send in place of any in `fields` (the settings' host rule).
    pub host: Option<&'a HeaderValue>,
    /// Fields written after `fields`: the gateway's own (`headers.rs`
    /// `forwarding_fields`), whose names `fields` no longer holds.
    pub added: &'a [(&'static HeaderName, std::borrow::Cow<'a, HeaderValue>)],
    /// Bytes to set aside for the head as it goes out: the client's head and
    /// what the gateway adds, so a large head is not copied as it grows.
    pub size_hint: usize,
    /// Keep the answer's fields as a list ([`Answer::fields`]) instead of in
    /// `head.headers`: for a client our HTTP/1.1 server answers, which writes
    /// them out as they are (`h1server.rs` `encode_head`); a field map built
    /// to be read back once cost about 1,700 instructions an answer.
    pub fields_as_list: bool,
}

/// A response head and the connection its body is to be read from.
pub struct Answer {
    /// Status, version and the end-to-end fields as the backend sent them
    /// (no hop-by-hop field, none that `Connection` named); with
    /// [`RequestHead::fields_as_list`], no fields: they are in `fields`.
    pub head: http::response::Parts,
    /// The end-to-end fields in the order they came, when asked for as a list.
    pub fields: Vec<(HeaderName, HeaderValue)>,
    /// The answer's `Upgrade` field, if it had one (for a 101).
    pub upgrade: Option<HeaderValue>,
    /// The connection; `conn.buf` holds body bytes already read.
    pub conn: Box<Conn>,
    framing: Framing,
    reusable: bool,
    /// The rest of the request body, when the answer came before all of it went out.
    upload: Option<Box<Upload>>,
}

impl Answer {
    /// The head and the response body; the body returns the connection to
    /// `pool` when it was read to the end and the connection may carry another
    /// request.
    pub fn into_parts(self, pool: Arc<Upstream>) -> (http::response::Parts, BackendBody) {
        let body = BackendBody {
            fields: self.fields,
            conn: Some(self.conn),
            framing: self.framing,
            reusable: self.reusable,
            outcome: None,
            upload: self.upload,
            pool,
            ended: None,
        };
        (self.head, body)
    }
}

/// Sends one request on `conn` and reads the response head.
///
/// `req` is sent as it is, plus the body's framing. The request body is sent while the response is
/// watched for: when the head of an answer arrives first (an echo streaming
/// back, or an early 413), the rest of the body keeps going out as the response
/// body is read ([`BackendBody`]), and the connection is reused only if it all
/// went out.
/// Errors: [`SendError`]; the connection is dropped (closed) with it.
pub async fn send(
    mut conn: Box<Conn>,
    req: RequestHead<'_>,
    body: ReqBody,
) -> Result<Answer, SendError> {
    let has_body = !Body::is_end_stream(&body);
    let mut head = BytesMut::with_capacity(req.size_hint);
    let framing = write_head(&mut head, &req, has_body);
    // A request without a body goes out with the other connections' writes
    // (batch.rs); its answer, when it comes, tells that it went out.
    let mut lent = match (&mut conn.io, has_body) {
        (Either::Left(socket), false) => match socket.lend(head.split().freeze()) {
            Ok(()) => true,
            Err(back) => {
                head.extend_from_slice(&back);
                false
            }
        },
        _ => false,
    };
    let mut upload = Some(Upload {
        out: head,
        body,
        chunked: framing == ReqFraming::Chunked,
        needs_flush: true,
        finished: false,
    });
    // A write that fails (the backend closed or reset) may still leave an
    // answer to read, say a 413 sent before closing: the head is still looked
    // for, and if there is none, its error (with what arrived) is the one given.
    let mut write_failed = false;
    let (raw, head_len) = poll_fn(|cx| {
        if conn.poll_cut(cx) {
            return Poll::Ready(Err(SendError::Cut));
        }
        if lent {
            if let Either::Left(socket) = &mut conn.io {
                // Not woken when it went out whole: the answer tells that.
                match socket.poll_settled(cx, false) {
                    Poll::Pending => return poll_head(&mut conn, cx),
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "request could not be written whole");
                        upload = None;
                        write_failed = true;
                    }
                }
            }
            lent = false;
        }
        if let Some(u) = upload.as_mut() {
            match u.poll(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => upload = None,
                Poll::Ready(Err(SendError::ClientBody(e))) => {
                    return Poll::Ready(Err(SendError::ClientBody(e)))
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "request could not be written whole");
                    upload = None;
                    write_failed = true;
                }
                Poll::Pending => {}
            }
        }
        poll_head(&mut conn, cx)
    })
    .await?;
    let head_bytes = take_head(&mut conn.buf, head_len, req.fields_as_list);
    let built = build_head(
        &raw,
        &head_bytes,
        req.method == Method::HEAD,
        req.fields_as_list,
    )?;
    // RFC 9110 §7.8: a server switches only to a protocol the request's
    // `Upgrade` named. A 101 to a request without one (the gateway forwards
    // no `h2c` upgrade, `headers.rs` `upgrade_without_h2c`), or to another
    // protocol, or to h2c, is not an answer the gateway can pass on or tunnel.
    if raw.code == 101
        && !super::headers::switches_as_asked(
            req.fields.get(&http::header::UPGRADE),
            built.upgrade.as_ref().map(HeaderValue::as_bytes),
        )
    {
        return Err(SendError::Malformed(
            "101 Switching Protocols to a protocol the request did not ask for".into(),
        ));
    }
    Ok(Answer {
        head: built.parts,
        fields: built.fields,
        upgrade: built.upgrade,
        conn,
        framing: built.framing,
        reusable: built.reusable && !write_failed,
        upload: upload.map(Box::new),
    })
}

fn closed(response_bytes: usize, e: io::Error) -> SendError {
    SendError::Closed {
        response_bytes,
        source: Some(e),
    }
}

/// The request going out: bytes queued for the socket (the head, then each
/// body chunk with its framing), and the client's body still to come.
struct Upload {
    out: BytesMut,
    body: ReqBody,
    chunked: bool,
    needs_flush: bool,
    finished: bool,
}

impl Upload {
    /// Moves the request forward: Ready(Ok) once all of it was written and
    /// flushed; Pending while waiting on the socket or the client's body.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut super::upstream::BackendIo,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while !self.out.is_empty() {
                let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.out))
                    .map_err(|e| closed(0, e))?;
                if n == 0 {
                    return Poll::Ready(Err(closed(0, io::ErrorKind::WriteZero.into())));
                }
                self.out.advance(n);
            }
            if self.needs_flush {
                std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(|e| closed(0, e))?;
                self.needs_flush = false;
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    if self.chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.finished = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(SendError::ClientBody(e))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not forwarded
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if self.chunked {
                        self.out
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        self.out.extend_from_slice(&data);
                        self.out.extend_from_slice(b"\r\n");
                    } else {
                        self.out.extend_from_slice(&data);
                    }
                }
            }
            self.needs_flush = true;
        }
    }
}

/// The final response head at the front of `buf`, once it is all there: 1xx
/// answers other than 101 before it are taken off (100 Continue, 102, 103 Early
/// Hints: not forwarded). `Ok(None)`: more bytes are needed.
/// Errors: an invalid head, or none complete within [`MAX_RESPONSE_HEAD`] bytes.
fn final_head(buf: &mut BytesMut) -> Result<Option<(RawHead, usize)>, SendError> {
    loop {
        match parse_head(buf)? {
            Some((h, len)) if (100..200).contains(&h.code) && h.code != 101 => buf.advance(len),
            Some(done) => return Ok(Some(done)),
            None if buf.len() >= MAX_RESPONSE_HEAD => {
                return Err(SendError::Malformed(format!(
                    "response head larger than {MAX_RESPONSE_HEAD} bytes"
                )))
            }
            None => return Ok(None),
        }
    }
}

/// Before a read into a buffer that is empty and has no room: Ready once the
/// plain socket is readable (bytes, its end or a reset;
/// `batch::Socket::poll_read_ready`), so that an exchange waiting for a slow
/// or stopped backend holds no [`READ_BUFFER`] (32 KiB) while it waits, as
/// nginx and HAProxy take a buffer for an upstream's answer only when its
/// bytes come. Rarely the readiness is stale, and the buffer is taken before
/// the wait, as before. A buffer with room (a head or body partly read), or a
/// TLS connection (whose reads rustls drives), reads as before.
fn poll_bytes_came(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match &mut conn.io {
        Either::Left(socket) if conn.buf.is_empty() && conn.buf.capacity() < READ_MIN_FREE => {
            socket.poll_read_ready(cx)
        }
        _ => Poll::Ready(Ok(())),
    }
}

/// Reads until a final response head is in `conn.buf` ([`final_head`]). Ready
/// with the head and its length in bytes.
fn poll_head(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(RawHead, usize), SendError>> {
    loop {
        if !conn.buf.is_empty() {
            if let Some(done) = final_head(&mut conn.buf)? {
                return Poll::Ready(Ok(done));
            }
        }
        let seen = conn.buf.len();
        std::task::ready!(poll_bytes_came(conn, cx)).map_err(|e| closed(seen, e))?;
        make_room(&mut conn.buf);
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.buf
        ))
        .map_err(|e| closed(seen, e))?;
        if n == 0 {
            return Poll::Ready(Err(SendError::Closed {
                response_bytes: seen,
                source: None,
            }));
        }
    }
}

/// Takes the response head, its first `len` bytes, off the read buffer `buf`;
/// the field values [`build_head`] makes are slices of what this returns.
///
/// For our HTTP/1.1 server (`fields_as_list`), a slice of `buf` itself: it
/// writes the fields out and drops them with the answer. For an HTTP/2 client,
/// a copy of the head alone (a few hundred bytes): the fields go into a map
/// that `h2` encodes, and its HPACK encoder keeps the values it indexes in the
/// connection's dynamic table (RFC 7541 §2.3.2; as large as the client's
/// SETTINGS_HEADER_TABLE_SIZE, 4,096 bytes unless it says otherwise, RFC 9113
/// §6.5.2) until newer ones push them out. A slice would keep the whole
/// [`READ_BUFFER`] it lies in alive for that long: about 42 buffers, 1.3 MiB,
/// per HTTP/2 connection in the soak (docs/benchmarks.md section 5). The copy
/// also leaves `buf` unshared, so its room is reused in place once the body's
/// pieces are gone.
fn take_head(buf: &mut BytesMut, len: usize, fields_as_list: bool) -> Bytes {
    if fields_as_list {
        return buf.split_to(len).freeze();
    }
    let head = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    head
}

/// A parsed head, owned: (status, minor version, fields as byte ranges of the head).
struct RawHead {
    code: u16,
    minor: u8,
    fields: Vec<(HeaderName, std::ops::Range<usize>)>,
}

fn parse_head(buf: &[u8]) -> Result<Option<(RawHead, usize)>, SendError> {
    // Left uninitialised: the parser writes only the slots it fills (an
    // `EMPTY_HEADER` array would be 4 KiB of stores per response).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let base = buf.as_ptr() as usize;
            let mut out = Vec::with_capacity(resp.headers.len());
            for f in resp.headers.iter() {
                let name = super::fieldname::field_name(f.name.as_bytes()).map_err(|_| {
                    SendError::Malformed(format!("invalid field name {:?}", f.name))
                })?;
                let start = f.value.as_ptr() as usize - base;
                out.push((name, start..start + f.value.len()));
            }
            Ok(Some((
                RawHead {
                    code: resp.code.unwrap_or(0),
                    minor: resp.version.unwrap_or(1),
                    fields: out,
                },
                len,
            )))
        }
        Err(e) => Err(SendError::Malformed(e.to_string())),
    }
}

/// A backend's response head as the gateway passes it on.
struct BuiltHead {
    /// Status, version and the end-to-end fields: hop-by-hop fields
    /// (`headers.rs` `hop_by_hop`) and the fields `Connection` names are not
    /// in them (RFC 9110 §7.6.1).
    parts: http::response::Parts,
    framing: Framing,
    reusable: bool,
    /// The `Upgrade` field of the answer (the first), for a 101.
    upgrade: Option<HeaderValue>,
    /// The end-to-end fields as a list, when asked for (`parts` then has none).
    fields: Vec<(HeaderName, HeaderValue)>,
}

/// Builds the response parts (field values share `bytes`, no copies) and decides
/// the body's framing and whether the connection may be reused. Hop-by-hop
/// fields are read here (framing, `close`) and left out of the map: inserted
/// and then removed by name they cost about 1,000 instructions an answer
/// (nginx sends `Connection: keep-alive` with every one).
fn build_head(
    h: &RawHead,
    bytes: &Bytes,
    head_request: bool,
    as_list: bool,
) -> Result<BuiltHead, SendError> {
    let status = StatusCode::from_u16(h.code)
        .map_err(|_| SendError::Malformed(format!("invalid status code {}", h.code)))?;
    // Room for `x-transaction-id`, `Date` and an affinity cookie: a map that
    // grows allocates twice. As a list, the map holds only what the gateway adds.
    let (mut headers, mut list) = if as_list {
        // And room for `x-transaction-id` at its end.
        (HeaderMap::new(), Vec::with_capacity(h.fields.len() + 1))
    } else {
        (HeaderMap::with_capacity(h.fields.len() + 3), Vec::new())
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    // `close` anywhere wins; HTTP/1.0 needs `keep-alive` to stay open.
    let mut saw_close = false;
    let mut saw_keep_alive = false;
    let mut upgrade = None;
    // `Connection` values that name fields to remove (rare).
    let mut naming: Vec<HeaderValue> = Vec::new();
    for (name, range) in &h.fields {
        let raw = &bytes[range.clone()];
        if *name == http::header::CONTENT_LENGTH {
            for part in raw.split(|b| *b == b',') {
                let v = std::str::from_utf8(part)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| SendError::Malformed("invalid Content-Length".into()))?;
                if length.is_some_and(|l| l != v) {
                    return Err(SendError::Malformed(
                        "several different Content-Length values".into(),
                    ));
                }
                length = Some(v);
            }
        } else if *name == http::header::TRANSFER_ENCODING {
            has_te = true;
            chunked = raw
                .split(|b| *b == b',')
                .rfind(|c| !c.iter().all(u8::is_ascii_whitespace))
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        // A value kept is a slice of the head (a reference count, no copy);
        // a hop-by-hop one that is only read is checked where it lies.
        let hop = super::headers::hop_by_hop(name);
        if hop.is_none_or(|h| *h == http::header::UPGRADE) {
            let Ok(value) = HeaderValue::from_maybe_shared(bytes.slice(range.clone())) else {
                return Err(invalid_value(name));
            };
            match hop {
                Some(_) => {
                    upgrade.get_or_insert(value);
                }
                None if as_list => list.push((name.clone(), value)),
                None => {
                    headers.append(name.clone(), value);
                }
            }
            continue;
        }
        if !super::headers::valid_value(raw) {
            return Err(invalid_value(name));
        }
        if name == http::header::CONNECTION {
            let o = super::headers::connection_options(raw);
            saw_close |= o.close;
            saw_keep_alive |= o.keep_alive;
            if o.names {
                let Ok(value) = HeaderValue::from_maybe_shared(bytes.slice(range.clone())) else {
                    return Err(invalid_value(name));
                };
                naming.push(value);
            }
        }
    }
    if !naming.is_empty() {
        super::headers::remove_named(&mut headers, &naming);
        list.retain(|(name, _)| !super::headers::named_in(&naming, name));
    }
    let close = saw_close || (h.minor == 0 && !saw_keep_alive);
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if has_te && !no_body {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an
        // intermediary removes the Content-Length before forwarding (the
        // client must not frame the body by it).
        headers.remove(http::header::CONTENT_LENGTH);
        list.retain(|(name, _)| name != http::header::CONTENT_LENGTH);
    } else if let Some(n) = length.filter(|_| as_list) {
        // Several equal Content-Length fields, or one as a list (`3, 3`),
        // were accepted above: the client gets one plain value (RFC 9110
        // §8.6 lets a recipient collapse them; strict clients refuse the
        // list, and our server would add a second field beside it).
        let mut cl = list
            .iter()
            .filter(|(name, _)| name == http::header::CONTENT_LENGTH);
        let single = cl
            .next()
            .is_some_and(|(_, v)| v.as_bytes().iter().all(u8::is_ascii_digit))
            && cl.next().is_none();
        if !single {
            super::headers::insert_listed(
                &mut list,
                http::header::CONTENT_LENGTH,
                HeaderValue::from(n),
            );
        }
    }
    // An HTTP/1.0 answer with Transfer-Encoding: framing faulty (RFC 9112
    // §6.1), read to the end of the connection.
    let te_on_1_0 = has_te && h.minor == 0;
    let framing = if no_body {
        Framing::Length(0)
    } else if has_te {
        if chunked && !te_on_1_0 {
            Framing::Chunked(Chunk::START)
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    // TE with CL: TE wins, and the connection is not reused (RFC 9112 §6.3).
    let reusable = !(close || matches!(framing, Framing::Close) || has_te && length.is_some());
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = if h.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    Ok(BuiltHead {
        parts,
        framing,
        reusable,
        upgrade,
        fields: list,
    })
}

/// A backend's field value that `HeaderValue` refuses.
#[cold]
fn invalid_value(name: &HeaderName) -> SendError {
    SendError::Malformed(format!("invalid value of {name}"))
}

/// Where a message body ends: a backend's response, or (in `h1server.rs`) a
/// client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Close,
    /// Read to its end.
    Done,
}

impl Framing {
    /// The body has ended (or never had bytes to come).
    pub fn is_done(self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }
}

/// A response body read from a backend connection on the reader's own task.
///
/// Errors: the connection ended or broke before the body's end, the chunked
/// coding is invalid, or the server was cut; the connection is then closed.
pub struct BackendBody {
    /// The answer's fields, when kept as a list ([`Answer::fields`]).
    fields: Vec<(HeaderName, HeaderValue)>,
    conn: Option<Box<Conn>>,
    framing: Framing,
    reusable: bool,
    /// Told once how the body went: `true` when the backend broke it.
    outcome: Option<Box<dyn FnOnce(bool) + Send>>,
    /// The rest of the request body, sent as the response is read.
    upload: Option<Box<Upload>>,
    pool: Arc<Upstream>,
    /// When the response ended, if the record's clock reading told it
    /// ([`BackendBody::ended_at`]): the connection's idle time starts there.
    ended: Option<Instant>,
}

impl BackendBody {
    /// `at` is a clock reading made when the response ended (`body.rs`
    /// `finish`, or `release` for an answer whose record waits for its
    /// drop): the pool takes it as the start of the connection's idle time,
    /// where it would read the clock again.
    pub fn ended_at(&mut self, at: Instant) {
        self.ended = Some(at);
    }

    /// The answer's end-to-end fields, when they were kept as a list
    /// ([`RequestHead::fields_as_list`]); else empty.
    pub fn fields(&self) -> &[(HeaderName, HeaderValue)] {
        &self.fields
    }

    /// Sets a field of the list ([`BackendBody::fields`]) as a map's `insert`
    /// would (`headers.rs` `insert_listed`): in place of any the backend sent
    /// of that name, else at the end. Only for an answer whose fields were
    /// asked for as a list.
    pub fn set_field(&mut self, name: HeaderName, value: HeaderValue) {
        super::headers::insert_listed(&mut self.fields, name, value);
    }

    /// Takes the list of fields ([`BackendBody::fields`]) out.
    pub fn take_fields(&mut self) -> Vec<(HeaderName, HeaderValue)> {
        std::mem::take(&mut self.fields)
    }

    /// The connection is closed after this body, never pooled (a refused
    /// upgrade: the guard stopped checking the client connection).
    pub fn no_reuse(&mut self) {
        self.reusable = false;
    }

    /// `f` learns how the body went, once: `true` when the backend broke it
    /// (closed early, invalid framing), `false` when it ended. Not called when
    /// the client left first or the server was cut (outlier detection).
    pub fn on_outcome(&mut self, f: Box<dyn FnOnce(bool) + Send>) {
        self.outcome = Some(f);
    }

    fn settle(&mut self, broken: bool) {
        if let Some(f) = self.outcome.take() {
            f(broken);
        }
    }

    /// Takes the connection out (after a 101 answer, for the tunnel).
    pub fn into_conn(mut self) -> Option<Box<Conn>> {
        self.conn.take()
    }

    /// Reads more bytes into the buffer: Ready(Ok(0)) at the end of the stream.
    fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if conn.poll_cut(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server removed from its pool",
            )));
        }
        std::task::ready!(poll_bytes_came(conn, cx))?;
        make_room(&mut conn.buf);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
    }

    /// Decodes the next piece of the body from the buffer, reading as needed.
    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(u) = self.upload.as_mut() {
            match u.poll(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(SendError::ClientBody(e))) if !self.framing.is_done() => {
                    // The client left in the middle of its body, or its
                    // chunked framing broke: the backend waits for the rest
                    // of a request that will never come, so its answer may
                    // never end, and the client connection ends anyway. The
                    // exchange ends here (the backend connection is closed);
                    // waiting for the answer held both connections until the
                    // backend gave up, for ever with one that waits.
                    self.upload = None;
                    self.reusable = false;
                    return Poll::Ready(Some(Err(io::Error::other(ClientBodyFailed(e)))));
                }
                Poll::Ready(Err(e)) => {
                    // The backend stopped reading (an early 413, say), or the
                    // client's body failed once the answer was whole: no more
                    // of the request goes out; the answer is still read (or
                    // ends, whole).
                    tracing::debug!(error = %e, "request body stopped after the answer");
                    self.upload = None;
                    self.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            if self.framing.is_done() {
                self.framing = Framing::Done;
                return Poll::Ready(None);
            }
            match decode_body(&mut conn.buf, self.framing) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok((next, Some(data))) => {
                    self.framing = next;
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok((next, None)) if next != self.framing => {
                    self.framing = next;
                    continue;
                }
                Ok((_, None)) => {} // needs more bytes
            }
            match std::task::ready!(Self::poll_fill(conn, cx)) {
                Ok(0) => match end_of_stream(self.framing) {
                    Ok(f) => self.framing = f,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// One step of the body decoder on the bytes already read: the next framing
/// state and, when the buffer held some, a piece of the body. `(same state,
/// None)` means more bytes are needed. Used on sockets by [`BackendBody`] and
/// the server's request bodies (`h1server.rs`), and in memory by
/// [`decode_answer`]. Errors: invalid chunked framing.
pub fn decode_body(buf: &mut BytesMut, framing: Framing) -> io::Result<(Framing, Option<Bytes>)> {
    match framing {
        Framing::Length(n) if n > 0 && !buf.is_empty() => {
            let k = (buf.len() as u64).min(n) as usize;
            Ok((
                Framing::Length(n - k as u64),
                Some(buf.split_to(k).freeze()),
            ))
        }
        Framing::Close if !buf.is_empty() => Ok((Framing::Close, Some(buf.split().freeze()))),
        Framing::Chunked(state) => decode_chunk(buf, state),
        other => Ok((other, None)),
    }
}

/// What the end of the connection means for a body in state `framing`: the
/// end of a close-delimited body, else a body cut short.
pub fn end_of_stream(framing: Framing) -> io::Result<Framing> {
    match framing {
        Framing::Close | Framing::Done | Framing::Length(0) => Ok(Framing::Done),
        Framing::Length(n) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body cut short with {n} bytes missing"),
        )),
        Framing::Chunked(_) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "chunked body cut short",
        )),
    }
}

/// One step of the chunked decoder on `buf` (RFC 9112 §7.1, the scanner in
/// `chunked.rs`). Returns the next state and, when the buffer held some, a
/// piece of chunk data. `(same state, None)` means more bytes are needed.
fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> io::Result<(Framing, Option<Bytes>)> {
    if let Chunk::Data(n) = state {
        if buf.is_empty() {
            return Ok((Framing::Chunked(state), None));
        }
        let k = (buf.len() as u64).min(n) as usize;
        let data = buf.split_to(k).freeze();
        let next = if n == k as u64 {
            Chunk::DataCr
        } else {
            Chunk::Data(n - k as u64)
        };
        return Ok((Framing::Chunked(next), Some(data)));
    }
    let (used, next) = scan_chunked(state, buf, true)?;
    buf.advance(used);
    Ok((next.map_or(Framing::Done, Framing::Chunked), None))
}

/// A whole answer held in memory, read the way [`send`] and [`BackendBody`]
/// read one from a socket: the final head (1xx skipped), the body decoded by its
/// framing, and whether the connection could carry another request.
#[derive(Debug)]
pub struct DecodedAnswer {
    /// Status, version and fields.
    pub head: http::response::Parts,
    /// The body bytes, decoded; only as many as `bytes` held.
    pub body: Vec<u8>,
    /// The body's framing ended within `bytes` (a close-delimited body ends with them).
    pub complete: bool,
    /// The connection may be reused after it.
    pub reusable: bool,
}

/// Reads an answer from `bytes` as the client would from a connection that ends
/// after them (for the fuzz target `backend_response` and tests).
/// Errors: what the client reports, as text: an invalid or incomplete head, a
/// framing fault in the body.
pub fn decode_answer(bytes: &[u8], head_request: bool) -> Result<DecodedAnswer, String> {
    let mut buf = BytesMut::from(bytes);
    let Some((raw, len)) = final_head(&mut buf).map_err(|e| e.to_string())? else {
        return Err("incomplete head".into());
    };
    let head_bytes = buf.split_to(len).freeze();
    let built = build_head(&raw, &head_bytes, head_request, false).map_err(|e| e.to_string())?;
    let (head, mut framing, reusable) = (built.parts, built.framing, built.reusable);
    let mut body = Vec::new();
    while !framing.is_done() {
        let (next, data) = decode_body(&mut buf, framing).map_err(|e| e.to_string())?;
        match data {
            Some(d) => body.extend_from_slice(&d),
            None if next == framing => {
                // The input ends here, as a connection would.
                if let Ok(f) = end_of_stream(framing) {
                    framing = f;
                }
                break;
            }
            None => {}
        }
        framing = next;
    }
    Ok(DecodedAnswer {
        head,
        body,
        complete: framing.is_done(),
        reusable,
    })
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match this.next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                if e.kind() == io::ErrorKind::ConnectionAborted
                    || ClientBodyFailed::of(&e).is_some()
                {
                    // Cut by us, or the client's fault: not the server's.
                    this.outcome = None;
                } else {
                    this.settle(true);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.settle(false);
        }
        if self.reusable && self.upload.is_none() && self.is_end_stream() {
            if let Some(conn) = self.conn.take() {
                let since = self.ended.unwrap_or_else(Instant::now);
                self.pool.checkin(conn, since);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooled connection's emptied read buffer serves the next exchange on
    /// the thread; one without room, one not empty, one over
    /// `MAX_SPARE_CAPACITY`, and more than
    /// `MAX_SPARE_BUFFERS` are not kept.
    #[test]
    fn an_emptied_read_buffer_serves_the_next_exchange() {
        let mut used = BytesMut::with_capacity(READ_BUFFER);
        used.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let answer = used.split().freeze();
        let at = used.as_ptr();
        recycle(used);
        let mut next = BytesMut::new();
        make_room(&mut next);
        assert_eq!(next.as_ptr(), at, "the spare buffer, not a new one");
        assert!(next.capacity() >= READ_MIN_FREE);
        drop(answer);

        let mut full = BytesMut::with_capacity(READ_MIN_FREE);
        full.extend_from_slice(b"x");
        let _ = full.split();
        recycle(full);
        let mut not_empty = BytesMut::with_capacity(READ_BUFFER);
        not_empty.extend_from_slice(b"x");
        recycle(not_empty);
        recycle(BytesMut::with_capacity(MAX_SPARE_CAPACITY + 1));
        assert_eq!(SPARE_BUFFERS.with(|s| s.borrow().list.len()), 0);

        for _ in 0..MAX_SPARE_BUFFERS + 4 {
            recycle(BytesMut::with_capacity(READ_BUFFER));
        }
        assert_eq!(
            SPARE_BUFFERS.with(|s| s.borrow().list.len()),
            MAX_SPARE_BUFFERS
        );
    }

    /// An exchange waiting for its answer holds no read buffer until the
    /// backend's first bytes come (a slow or stopped backend costs no 32 KiB
    /// per waiting request); then the head is read as before.
    #[tokio::test]
    async fn an_exchange_takes_its_read_buffer_when_the_answer_comes() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let key = crate::gateway::upstream::ConnKey {
            addr: listener.local_addr().expect("addr"),
            tls_name: None,
        };
        let up = Upstream::default();
        let mut conn = up
            .connect(&key, None, std::time::Duration::from_secs(5))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(poll_head(&mut conn, &mut cx).is_pending());
        assert_eq!(
            conn.buf.capacity(),
            0,
            "no buffer while the backend is silent"
        );
        server
            .write_all(b"HTTP/1.1 204 No Content\r\nserver: demo\r\n\r\n")
            .expect("write");
        let (raw, len) = poll_fn(|cx| poll_head(&mut conn, cx))
            .await
            .expect("a head");
        assert_eq!((raw.code, raw.fields.len()), (204, 1));
        assert_eq!(len, conn.buf.len());
        assert!(conn.buf.capacity() >= READ_MIN_FREE);
    }

    /// The head an HTTP/2 client's answer is built from is a copy: a value
    /// the HPACK encoder keeps indexed does not keep the read buffer alive,
    /// and the buffer, emptied, is reused in place. For our HTTP/1.1 server,
    /// whose list of fields is written out and dropped, a slice of it.
    #[test]
    fn an_http2_answers_field_values_do_not_share_the_read_buffer() {
        let text = b"HTTP/1.1 200 OK\r\nserver: demo\r\ncontent-length: 2\r\n\r\nok";
        // A fresh buffer, and one that served an earlier answer (shared once, its
        // pieces gone), as a connection's buffer usually has.
        for (as_list, served) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut buf = BytesMut::with_capacity(READ_BUFFER);
            if served {
                buf.extend_from_slice(b"earlier");
                drop(buf.split_to(7).freeze());
                assert!(buf.try_reclaim(READ_BUFFER), "its pieces gone");
            }
            buf.extend_from_slice(text);
            let start = buf.as_ptr() as usize;
            let (raw, len) = parse_head(&buf).expect("valid").expect("complete");
            let head = take_head(&mut buf, len, as_list);
            let built = build_head(&raw, &head, false, as_list).expect("valid");
            let server = if as_list {
                built
                    .fields
                    .iter()
                    .find(|(n, _)| n == "server")
                    .map(|f| &f.1)
            } else {
                built.parts.headers.get("server")
            };
            let server = server.expect("kept");
            assert_eq!(server.as_bytes(), b"demo");
            let at = server.as_bytes().as_ptr() as usize;
            assert_eq!((start..start + READ_BUFFER).contains(&at), as_list);
            assert_eq!(&buf[..], b"ok");
            buf.clear();
            // All of its room back without allocating: only when no piece shares it.
            assert_eq!(
                buf.try_reclaim(READ_BUFFER),
                !as_list,
                "as a list: {as_list}"
            );
        }
    }

    /// Spares that no exchange took for a whole period of [`DECAY_TAKES`]
    /// takes go back to the allocator; the ones the load keeps using stay.
    #[test]
    fn spares_unused_between_two_decays_are_dropped() {
        let spares = || SPARE_BUFFERS.with(|s| s.borrow().list.len());
        for _ in 0..10 {
            recycle(BytesMut::with_capacity(READ_BUFFER));
        }
        // One exchange at a time: one buffer in use, nine never taken.
        let one_exchange = || {
            let mut buf = BytesMut::new();
            make_room(&mut buf);
            recycle(buf);
        };
        for _ in 0..=DECAY_TAKES {
            one_exchange();
        }
        // The first decay keeps all ten: they came during its period.
        assert_eq!(spares(), 10);
        for _ in 0..DECAY_TAKES {
            one_exchange();
        }
        assert_eq!(spares(), 1, "the nine unused went, the one in use stayed");
        // Two exchanges overlapping: the second buffer, allocated anew, is kept.
        for _ in 0..DECAY_TAKES {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            make_room(&mut a);
            make_room(&mut b);
            recycle(a);
            recycle(b);
        }
        assert_eq!(spares(), 2);
    }

    fn decode_all(input: &[u8]) -> io::Result<(Vec<u8>, bool)> {
        let mut buf = BytesMut::from(input);
        let mut state = Framing::Chunked(Chunk::START);
        let mut out = Vec::new();
        loop {
            let Framing::Chunked(c) = state else {
                return Ok((out, state == Framing::Done));
            };
            let (next, data) = decode_chunk(&mut buf, c)?;
            if let Some(d) = data {
                out.extend_from_slice(&d);
            }
            if next == state && buf.is_empty() {
                return Ok((out, false));
            }
            state = next;
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, done) =
            decode_all(b"5;ext=1\r\nhello\r\n1\r\n \r\n0\r\nx-t: 1\r\n\r\n").expect("valid");
        assert_eq!(body, b"hello ");
        assert!(done);
        let (body, done) = decode_all(b"5\r\nhel").expect("partial");
        assert_eq!(body, b"hel");
        assert!(!done);
        // The scanner's refusals (chunked.rs) hold here too.
        assert!(decode_all(b"5\r\nhelloXX").is_err());
        assert!(decode_all(b"5 \r\nhello\r\n").is_err());
    }

    #[test]
    fn whole_answers_decode_in_memory() {
        let a = decode_answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        )
        .expect("valid");
        assert_eq!(a.head.status, StatusCode::OK);
        assert_eq!(a.body, b"abc");
        assert!(a.complete && a.reusable);
        let cut = decode_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false)
            .expect("valid head");
        assert_eq!(cut.body, b"abc");
        assert!(!cut.complete);
        assert!(decode_answer(b"HTTP/1.1 200 OK\r\n", false).is_err());
    }

    fn framing_of(head: &[u8], head_request: bool) -> Result<(Framing, bool), SendError> {
        let (raw, len) = parse_head(head)?.expect("complete");
        let bytes = Bytes::copy_from_slice(&head[..len]);
        let built = build_head(&raw, &bytes, head_request, false)?;
        let (f, reuse) = (built.framing, built.reusable);
        Ok((f, reuse))
    }

    #[test]
    fn response_framing_follows_rfc_9112_section_6_3() {
        let f = |h: &str| framing_of(h.as_bytes(), false);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n").expect("ok"),
            (Framing::Length(6), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 6, 6\r\n\r\n").expect("ok"),
            (Framing::Length(6), true)
        );
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: 6\r\ncontent-length: 7\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: +6\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").expect("ok"),
            (Framing::Chunked(Chunk::START), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n")
                .expect("ok"),
            (Framing::Chunked(Chunk::START), false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").expect("ok"),
            (Framing::Close, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\n\r\n").expect("ok"),
            (Framing::Close, false)
        );
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n").expect("ok"),
            (Framing::Length(0), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\n").expect("ok"),
            (Framing::Length(6), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\n").expect("ok"),
            (Framing::Length(6), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 6\r\nconnection: keep-alive\r\n\r\n")
                .expect("ok"),
            (Framing::Length(6), true)
        );
        assert_eq!(
            framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n", true).expect("ok"),
            (Framing::Length(0), true)
        );
        // `close` wins over a later `keep-alive`.
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 2\r\n\r\n")
                .expect("ok"),
            (Framing::Length(2), false)
        );
        // HTTP/1.0 with Transfer-Encoding: read to the end, never reused.
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")
                .expect("ok"),
            (Framing::Close, false)
        );
        // With Transfer-Encoding, the Content-Length is not passed on.
        let a = decode_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n7\r\n1234567\r\n0\r\n\r\n",
            false,
        )
        .expect("valid");
        assert_eq!(a.body, b"1234567");
        assert!(!a.head.headers.contains_key(http::header::CONTENT_LENGTH));
    }

    #[test]
    fn answers_lose_hop_by_hop_fields_and_those_connection_names() {
        let a = decode_answer(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\n\
              Transfer-Encoding: chunked\r\nX-Keep: 1\r\nContent-Type: text/plain\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
            false,
        )
        .expect("valid");
        let mut left: Vec<_> = a.head.headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-keep"]);
        assert_eq!(a.body, b"abc");
        assert!(a.reusable);
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut buf = BytesMut::from(&raw[..]);
        let (head, len) = final_head(&mut buf).expect("valid").expect("whole");
        let built = build_head(&head, &buf.split_to(len).freeze(), false, false).expect("valid");
        assert_eq!(built.upgrade, Some(HeaderValue::from_static("websocket")));
        assert!(built.parts.headers.is_empty());
    }

    /// The same answer's fields as a list and in a map: the same fields, the
    /// list in the order they came.
    #[test]
    fn answer_fields_as_a_list_are_the_maps_in_their_order() {
        let build = |raw: &[u8], as_list| {
            let mut buf = BytesMut::from(raw);
            let (head, len) = final_head(&mut buf).expect("valid").expect("whole");
            build_head(&head, &buf.split_to(len).freeze(), false, as_list).expect("valid")
        };
        for raw in [
            &b"HTTP/1.1 200 OK\r\nServer: nginx\r\nSet-Cookie: a=1\r\nConnection: keep-alive, \
               X-Secret\r\nX-Secret: 1\r\nContent-Length: 3\r\nSet-Cookie: b=2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
            b"HTTP/1.0 204 No Content\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n",
        ] {
            let (map, list) = (build(raw, false), build(raw, true));
            assert!(map.fields.is_empty());
            assert!(list.parts.headers.is_empty());
            assert_eq!((map.framing, map.reusable), (list.framing, list.reusable));
            let mut from_map: Vec<_> = map.parts.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            let mut from_list = list.fields.clone();
            from_map.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            from_list.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            assert_eq!(from_map, from_list, "{}", String::from_utf8_lossy(raw));
        }
        let names: Vec<_> = build(
            b"HTTP/1.1 200 OK\r\nB: 1\r\nA: 2\r\nB: 3\r\nContent-Length: 0\r\n\r\n",
            true,
        )
        .fields
        .iter()
        .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("")))
        .collect();
        assert_eq!(names, ["b=1", "a=2", "b=3", "content-length=0"]);
    }

    #[test]
    fn a_listed_content_length_reaches_the_client_as_one_plain_value() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nServer: x\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: x\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            let mut buf = BytesMut::from(raw);
            let (head, len) = final_head(&mut buf).expect("valid").expect("whole");
            let built = build_head(&head, &buf.split_to(len).freeze(), false, true).expect("valid");
            let fields: Vec<_> = built
                .fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("")))
                .collect();
            assert_eq!(fields, ["content-length: 3", "server: x"], "{raw:?}");
            assert_eq!(built.framing, Framing::Length(3));
        }
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut h = ClientFields::default();
        h.push(http::header::HOST, HeaderValue::from_static("a"));
        let head = |method: &'static Method, fields| RequestHead {
            method,
            target: "/x?y",
            fields,
            host: None,
            added: &[],
            size_hint: 0,
            fields_as_list: false,
        };
        let mut out = BytesMut::new();
        assert_eq!(
            write_head(&mut out, &head(&Method::GET, &h), false),
            ReqFraming::None
        );
        assert_eq!(&out[..], b"GET /x?y HTTP/1.1\r\nhost: a\r\n\r\n");
        out.clear();
        let b = HeaderValue::from_static("b");
        let with_host = RequestHead {
            host: Some(&b),
            ..head(&Method::GET, &h)
        };
        write_head(&mut out, &with_host, false);
        assert_eq!(&out[..], b"GET /x?y HTTP/1.1\r\nhost: b\r\n\r\n");
        out.clear();
        write_head(&mut out, &head(&Method::POST, &h), false);
        assert_eq!(
            &out[..],
            b"POST /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        assert_eq!(
            write_head(&mut out, &head(&Method::POST, &h), true),
            ReqFraming::Chunked
        );
        let mut with_length = h.clone();
        with_length.push(http::header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        out.clear();
        assert_eq!(
            write_head(&mut out, &head(&Method::POST, &with_length), true),
            ReqFraming::Length
        );
    }
}
