//! HTTP/2 client connections (ALPN `h2`, or h2c with the prior-knowledge
//! preface), served with the `h2` crate directly.
//!
//! The `h2` crate does the protocol: frames, HPACK, flow control, stream states,
//! SETTINGS, PING and GOAWAY. What hyper's HTTP/2 server added on top of it is
//! here, in the connection's own task: each stream's request goes to
//! [`proxy::handle`], and its answer is sent back (head, then body frames as the
//! client's flow-control window allows). hyper spawned a task for every stream
//! and moved its future into it; here the streams of a connection are futures in
//! one [`FuturesUnordered`] polled by the connection's task, as HAProxy and
//! nginx keep a connection and its streams on one thread. The answer's fields
//! are checked in one pass ([`prepare_head`]) where hyper looked each
//! connection-specific name up in the map.
//!
//! Settings are hyper's server defaults, which portcullis used until this
//! module: 1 MiB connection and stream receive windows, 16 KiB frames, a 16 KiB
//! header list, a 400 KiB send buffer per stream, 1,024 locally reset streams
//! before GOAWAY, and [`H2_MAX_CONCURRENT_STREAMS`].

use super::body::{HandedOver, ResponseBody};
use super::fields::ClientFields;
use super::h1server::Timeouts;
use super::proxy::{self, ConnInfo};
use super::reqbody::{ClientBody, H2Body};
use super::stall::Stall;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Most concurrent streams on one HTTP/2 client connection (SETTINGS_MAX_CONCURRENT_STREAMS,
/// RFC 9113 §6.5.2; nginx's `http2_max_concurrent_streams` is 128, HAProxy's
/// `tune.h2.max-concurrent-streams` 100).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 250;

/// Receive window of the connection and of each stream, bytes (hyper's default).
const RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Largest frame payload we accept, bytes (RFC 9113 §6.5.2 default, 16 KiB).
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// SETTINGS_MAX_HEADER_LIST_SIZE, bytes (hyper's default).
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Bytes of answer body the `h2` crate buffers per stream before `send_data`
/// waits for capacity (hyper's default).
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Bytes that must reach the socket in each `client_send_timeout` while all
/// that is left of a connection is what `h2` has queued ([`serve`]): one
/// frame's worth of DATA, so that the small control frames a client can
/// provoke (a PING ACK is 17 bytes) do not keep a shut window's queue for ever.
const MIN_QUEUE_PROGRESS: u64 = MAX_FRAME_SIZE as u64;
/// Streams this side may reset for errors before the connection is closed
/// with GOAWAY (hyper's default; a guard against a client that provokes reset
/// after reset).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The `h2` server settings portcullis sends.
fn builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(RECEIVE_WINDOW)
        .initial_connection_window_size(RECEIVE_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    b
}

/// Serves an HTTP/2 connection until it ends: its preface and SETTINGS, then
/// every stream it opens. When `shutdown` turns true, sends GOAWAY and lets the
/// streams in progress finish. A stream still open when the connection ends
/// (the client went away) is dropped, and its request is logged as 499.
///
/// `timeouts.idle` is `[gateway].client_idle_timeout`: a connection whose
/// preface has not come within it is closed, and one with no open stream (none
/// with answer data still queued in `h2` for the client's window) for that long
/// gets GOAWAY (NO_ERROR) and is closed, as nginx's `keepalive_timeout` and
/// HAProxy's `timeout http-keep-alive` close an idle HTTP/2 connection.
///
/// `timeouts.send` is `[gateway].client_send_timeout`: a stream whose answer
/// waits that long for the client's flow-control window without a piece
/// leaving is reset (CANCEL, [`stream`]); and when all that is left is what
/// `h2` has queued (answer data after the last piece, a GOAWAY) and fewer than
/// [`MIN_QUEUE_PROGRESS`] bytes reach the socket in one such interval
/// (counted from when that state began, checked at each interval's end), the
/// connection is dropped without more ado: a client that reads nothing would
/// not read a GOAWAY either.
pub async fn serve<I>(
    io: I,
    info: Arc<ConnInfo>,
    mut shutdown: watch::Receiver<bool>,
    timeouts: Timeouts,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Timeouts { idle, send, .. } = timeouts;
    let written = Arc::new(AtomicU64::new(0));
    let io = Counted {
        io,
        written: written.clone(),
    };
    let mut conn = match tokio::time::timeout(idle, builder().handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!("HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("no HTTP/2 preface within the idle timeout");
            return;
        }
    };
    let mut streams = FuturesUnordered::new();
    // The records of answers handed to `h2` whole, waiting for the
    // connection's next write ([`stream`]).
    let mut handed_over: Vec<HandedOver> = Vec::new();
    let mut stop = pin!(shutdown.wait_for(|s| *s));
    let mut stopping = false;
    let mut timer = pin!(tokio::time::sleep(idle));
    // What the timer runs for: the current stretch without streams, or the
    // current check that the socket takes some of what `h2` has queued.
    let mut armed = Armed::Idle;
    poll_fn(|cx| {
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            // A closed sender means the gateway is gone: shut down too.
            stopping = true;
            conn.graceful_shutdown();
        }
        loop {
            // The streams first: what they send, the connection's poll below
            // writes. An answer handed over whole keeps its record until then.
            while let Poll::Ready(Some(done)) = streams.poll_next_unpin(cx) {
                if let Some(record) = done {
                    handed_over.push(record);
                }
            }
            let accepted = conn.poll_accept(cx);
            if let Poll::Ready(Some(Err(_))) = &accepted {
                // The connection broke: what it had queued was not written.
                handed_over.drain(..).for_each(HandedOver::client_left);
            }
            // The answers' last frames were written, as far as the client's
            // windows and the socket let them (on one core, lent to the batch
            // writer): their records now.
            handed_over.clear();
            match accepted {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    streams.push(stream(info.clone(), req, respond, send));
                    armed = Armed::No;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("HTTP/2 client connection ended with an error: {e}");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if !streams.is_empty() {
                // Each stream's future watches its own sending.
                armed = Armed::No;
                return Poll::Pending;
            }
            // `has_streams`: a stream whose future has ended may still have
            // answer data queued in `h2`, waiting for the client's window; the
            // connection is not idle until that is sent. Nor is a connection
            // that is ending (its GOAWAY queued).
            if conn.has_streams() || stopping {
                let since = match armed {
                    Armed::Queue(since) => since,
                    _ => {
                        let now = written.load(Ordering::Relaxed);
                        timer.as_mut().reset(tokio::time::Instant::now() + send);
                        armed = Armed::Queue(now);
                        now
                    }
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = written.load(Ordering::Relaxed);
                if now.saturating_sub(since) >= MIN_QUEUE_PROGRESS {
                    // The queue moves: check again one interval on.
                    armed = Armed::No;
                    continue;
                }
                tracing::debug!("HTTP/2 client took too little for client_send_timeout: closed");
                return Poll::Ready(());
            }
            if armed != Armed::Idle {
                timer.as_mut().reset(tokio::time::Instant::now() + idle);
                armed = Armed::Idle;
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Idle for `idle`: GOAWAY naming the last stream served, which the
            // next poll_accept sends before it ends the connection (no stream
            // is open). Not the graceful two-step GOAWAY, which waits for the
            // client's PING answer: a dead client never sends it. A request
            // the client sent meanwhile is past that id, so it knows it was
            // not served and may send it again (RFC 9113 §6.8).
            tracing::debug!("HTTP/2 client connection idle: GOAWAY");
            stopping = true;
            conn.abrupt_shutdown(Reason::NO_ERROR);
        }
    })
    .await;
}

/// What the connection's one timer runs for, in [`serve`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// Nothing (streams are open).
    No,
    /// The idle timeout of a connection without streams.
    Idle,
    /// The send timeout of what `h2` has queued, with the count of bytes
    /// written when the current interval started.
    Queue(u64),
}

/// The client's stream, counting the bytes written to it: how [`serve`] sees
/// that `h2`'s queue moves (the `h2` connection owns the stream).
struct Counted<I> {
    io: I,
    written: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One stream: the request to the handler, its answer back to the client. A
/// reset from the client while the handler works drops the handler (499); a
/// reset for a protocol error before the answer (`PROTOCOL_ERROR`: the `h2`
/// crate found the request's body malformed, RFC 9113 §8.1.1, or the client
/// broke the protocol on the stream or the connection; there is no answer of
/// ours yet for a client to object to) drops it as a malformed request (400
/// `INVALID_REQUEST`, [`super::body::drop_malformed`]); during the answer's
/// body, the upload tells (`poll_send_body`). An
/// answer that waits `send` (`client_send_timeout`) for the client's window
/// without a piece leaving is given up: the stream is reset (CANCEL) and the
/// request logged with the status sent and `CLIENT_CLOSED_REQUEST`.
///
/// An answer handed to `h2` whole returns its record still to write
/// ([`ResponseBody::hand_over`]; what the request held is given back then):
/// [`serve`] drops it after the connection's next poll, which tries to write
/// the frames the streams queued (on one core it lends them to the batch
/// writer, as HTTP/1 does its answers), so the record's work comes after that
/// write, and `timeTaken` runs to it. What the client's window or a full
/// socket holds back is written later; the record does not wait for that
/// (`h2` says when a frame is queued, not when it reaches the socket). An
/// answer whose head could not be sent is logged 499, or 400 when the stream
/// was reset with `PROTOCOL_ERROR` ([`ResponseBody::head_not_sent`]).
async fn stream(
    info: Arc<ConnInfo>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    send_timeout: Duration,
) -> Option<HandedOver> {
    let (mut parts, recv) = req.into_parts();
    let head_request = parts.method == http::Method::HEAD;
    let body = ClientBody::H2(H2Body::new(&parts.headers, recv));
    let fields = ClientFields::from_map(std::mem::take(&mut parts.headers));
    let req = Request::from_parts(parts, body);
    let mut handler = proxy::handle(info, req, fields, None);
    let answer = poll_fn(|cx| {
        if let Poll::Ready(r) = handler.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(reason) => Poll::Ready(Err(reason.ok())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let (mut parts, mut body) = match answer {
        Ok(answer) => {
            drop(handler);
            answer.into_parts()
        }
        Err(Some(Reason::PROTOCOL_ERROR)) => {
            super::body::drop_malformed(handler);
            return None;
        }
        Err(_) => return None,
    };
    body.finish_when_dropped();
    if head_request {
        body.without_content();
    }
    let end = body.is_end_stream();
    prepare_head(&mut parts.headers, &body, end);
    let mut send = match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("HTTP/2 answer head not sent: {e}");
            let malformed = reset_reason(&mut respond) == Some(Reason::PROTOCOL_ERROR);
            respond.send_reset(Reason::INTERNAL_ERROR);
            body.head_not_sent(malformed);
            return None;
        }
    };
    if !end {
        let mut held = None;
        let mut stall = Stall::default();
        let sent = poll_fn(|cx| {
            let r = poll_send_body(cx, &mut body, &mut send, &mut held, &mut stall);
            if r.is_ready() || held.is_none() {
                // Done, or waiting for the backend.
                stall.clear();
                return r;
            }
            // A piece waits for the client's window.
            if stall.poll(cx, send_timeout).is_ready() {
                send.send_reset(Reason::CANCEL);
                return Poll::Ready(Err(h2::Error::from(Reason::CANCEL)));
            }
            Poll::Pending
        })
        .await;
        if let Err(e) = sent {
            tracing::debug!("HTTP/2 answer body not sent whole: {e}");
            // A backend's failure wrote its record already; anything else
            // is the client's side: logged with the status sent.
            body.client_left();
            return None;
        }
    }
    Some(body.hand_over())
}

/// Why the stream of `respond` was reset, if it was: looked at once, without
/// waiting (an answer whose head could not be sent).
fn reset_reason(respond: &mut SendResponse<Bytes>) -> Option<Reason> {
    match respond.poll_reset(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(Ok(reason)) => Some(reason),
        _ => None,
    }
}

/// Makes an answer's fields fit for HTTP/2, in one pass over them: removes the
/// connection-specific ones, which RFC 9113 §8.2.2 forbids (`Connection`,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE`,
/// which only a request may carry); adds `Date` when there is none (RFC 9110
/// §6.6.1: a proxy forwarding an answer without one adds it), and
/// `Content-Length` when the answer has a body (`end` false) whose length is
/// known and the field is missing, as hyper did. An answer without a body (HEAD,
/// 204, 304) gets no length made up for it.
fn prepare_head(headers: &mut HeaderMap, body: &ResponseBody, end: bool) {
    let mut forbidden = false;
    let mut has_date = false;
    let mut has_length = false;
    for name in headers.keys() {
        if name == header::DATE {
            has_date = true;
        } else if name == header::CONTENT_LENGTH {
            has_length = true;
        } else {
            forbidden |= is_connection_specific(name);
        }
    }
    if forbidden {
        for name in &CONNECTION_SPECIFIC {
            headers.remove(name);
        }
    }
    if !has_date {
        headers.insert(header::DATE, super::h1server::date_value());
    }
    if !has_length && !end {
        if let Some(n) = body.size_hint().exact() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
}

/// The fields RFC 9113 §8.2.2 forbids in an HTTP/2 answer (`TE` is allowed
/// only in a request).
static CONNECTION_SPECIFIC: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is one of [`CONNECTION_SPECIFIC`]: one `match` on its text
/// (names are lower case), where `contains` compared it with each entry in
/// turn (150 instructions a request more in h2; a unit test holds the two to
/// the same names).
fn is_connection_specific(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "transfer-encoding" | "upgrade" | "te" | "keep-alive" | "proxy-connection"
    )
}

/// Sends `body` on `send` as DATA frames (and trailers, if it has them), each
/// when the client's flow-control window has room for some of it; `held` keeps
/// a piece taken from the body while it waits for that room. A failing body
/// resets the stream (INTERNAL_ERROR); a reset from the client ends it, whether
/// it comes while the body is awaited or while a piece waits for room.
///
/// The order is hyper's (`PipeToSendStream`, hyper 1.12): the next piece is
/// taken from the body *before* any window is reserved for it, so a stream whose
/// backend is slow holds no part of the connection's window (reserving even one
/// byte ahead can stall the other streams of a client that sends WINDOW_UPDATE
/// only when its window is used up; hyper issue 4003). Errors: the stream was
/// reset or the connection closed.
///
/// `stall` is cleared each time a piece is handed to `h2`. Pending with `held`
/// set means waiting for the client's window; with `held` empty, for the
/// backend.
fn poll_send_body(
    cx: &mut Context<'_>,
    body: &mut ResponseBody,
    send: &mut SendStream<Bytes>,
    held: &mut Option<(Bytes, bool)>,
    stall: &mut Stall,
) -> Poll<Result<(), h2::Error>> {
    loop {
        // Registered on every pass, so a reset wakes the stream whatever it waits for.
        if let Poll::Ready(reason) = send.poll_reset(cx) {
            let e = reason.map_or_else(|e| e, h2::Error::from);
            if e.reason() == Some(Reason::PROTOCOL_ERROR) {
                // The request's own body may be what broke (its DATA frames did
                // not add up to its `content-length`, RFC 9113 §8.1.1): one more
                // poll of the answer lets the upload it drives see the error,
                // which `h2` gives there with its origin (`reqbody.rs`
                // `h2_body_error`), and the record say `INVALID_REQUEST`
                // (`body.rs`). A client's own reset, which `poll_reset` does not
                // tell apart, stays a client that left. A piece the poll takes
                // is counted as handed over, though it is not sent: a rare case.
                let _ = Pin::new(&mut *body).poll_frame(cx);
            }
            return Poll::Ready(Err(e));
        }
        if held.is_some() {
            while send.capacity() == 0 {
                match ready!(send.poll_capacity(cx)) {
                    Some(Ok(0)) => {}
                    Some(Ok(_)) => break,
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Err(h2::Error::from(Reason::CANCEL))),
                }
            }
            if let Some((data, end)) = held.take() {
                // `h2` sends what the window takes and queues the rest.
                send.send_data(data, end)?;
                stall.clear();
                if end {
                    return Poll::Ready(Ok(()));
                }
            }
            continue;
        }
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    // The last piece goes at once: nothing more is taken from
                    // the backend after it, so waiting for window first holds
                    // back nothing, and `h2` sends what the window takes and
                    // queues the rest, as it does for a held piece. The stream
                    // ends here; `h2` counts it until the queue is sent, which
                    // the idle check in `serve` waits for (`has_streams`).
                    if end || data.is_empty() {
                        send.send_data(data, end)?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    send.reserve_capacity(1);
                    *held = Some((data, end));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.reserve_capacity(0);
                        send.send_trailers(trailers)?;
                        return Poll::Ready(Ok(()));
                    }
                }
            },
            Some(Err(e)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                tracing::debug!("answer body failed: {e}");
                return Poll::Ready(Err(h2::Error::from(Reason::INTERNAL_ERROR)));
            }
            None => {
                send.send_data(Bytes::new(), true)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::body::Inner;

    fn full(text: &'static str) -> ResponseBody {
        ResponseBody::plain(Inner::Full(Some(Bytes::from_static(text.as_bytes()))))
    }

    #[test]
    fn an_answer_head_loses_its_connection_specific_fields_and_gains_date_and_length() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "close"),
            ("te", "gzip"),
            ("server", "nginx"),
        ] {
            h.insert(
                header::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            );
        }
        prepare_head(&mut h, &full("hello"), false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "date", "server"]);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn an_answer_head_keeps_its_own_date_and_length_and_loses_te() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::DATE,
            HeaderValue::from_static("Fri, 04 Dec 2026 18:00:00 GMT"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        prepare_head(&mut h, &full("hello"), false);
        assert_eq!(h.len(), 2);
        assert_eq!(h[header::DATE], "Fri, 04 Dec 2026 18:00:00 GMT");
        assert_eq!(h[header::CONTENT_LENGTH], "7");
    }

    #[test]
    fn an_answer_without_a_body_gets_no_length_made_up() {
        // HEAD, 204 and 304: the body ends at once and says it is 0 bytes long.
        let mut h = HeaderMap::new();
        prepare_head(&mut h, &ResponseBody::plain(Inner::Full(None)), true);
        assert!(!h.contains_key(header::CONTENT_LENGTH), "{h:?}");
        assert!(h.contains_key(header::DATE));
    }

    #[test]
    fn connection_specific_names_are_found_and_others_are_not() {
        for n in &CONNECTION_SPECIFIC {
            assert!(is_connection_specific(n), "{n}");
        }
        for n in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(
                is_connection_specific(&header::HeaderName::from_static(n)),
                "{n}"
            );
        }
        for n in [
            "content-length",
            "date",
            "x-keep-alive",
            "server",
            "trailer",
        ] {
            assert!(
                !is_connection_specific(&header::HeaderName::from_static(n)),
                "{n}"
            );
        }
    }
}
