//! The body of every response the gateway sends, and the access-log record that
//! rides along with it: the record is written when the body ends (or is dropped;
//! an HTTP/1 answer's when it is dropped after its bytes were written or lent
//! to the batch writer, an HTTP/2 answer's after the connection's next write
//! attempt, [`ResponseBody::finish_when_dropped`], [`HandedOver`]), so `sentBytes`, `timeTaken` and
//! `clientResponseTime` are true figures; a backend connection whose response
//! was read to the end goes back to the pool.
//!
//! [`PendingRecord`] covers the time before there is a response: if the client
//! goes away while the gateway waits for the backend, the server (ours for
//! HTTP/1, `h2server.rs` for HTTP/2) drops the handler future and the pending record is
//! written as 499 `CLIENT_CLOSED_REQUEST`, or as 400 `INVALID_REQUEST` when
//! the HTTP/2 stream was reset for a protocol error ([`drop_malformed`]).

use super::failure::ErrorInfo;
use super::h1client::{BackendBody, ClientBodyFailed};
use super::proxy::{Gateway, InFlight};
use crate::accesslog::{secs_number, AccessRecord};
use crate::telemetry::Observation;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What a response body carries.
#[allow(clippy::large_enum_variant)] // the large variant is the common one: no box
pub enum Inner {
    /// A backend's streaming body.
    Upstream(BackendBody),
    /// A body the gateway made (error page), sent once.
    Full(Option<Bytes>),
}

/// Everything needed to finish the access-log record of one request. Made once,
/// boxed, when the request arrives ([`PendingRecord::new`]) and handed on as
/// that box to the response body, so the ~1 KiB record is not copied on the way.
pub struct Completion {
    /// Where the record goes (its access log and telemetry): one reference
    /// count taken per request where the two were two.
    gateway: Arc<Gateway>,
    /// Typed facts for the metrics (app, connect and first-byte times).
    pub obs: Observation,
    /// The record so far; the handler fills it as it learns.
    pub record: AccessRecord,
    start: Instant,
    head_bytes: u64,
    body_bytes: u64,
    first_poll: Option<Instant>,
    /// Bytes of the request head.
    pub received_head: u64,
    /// Counter of request body bytes, when the request has a body.
    pub received_body: Option<Arc<AtomicU64>>,
    /// Keeps the request counted on its server until the body ends.
    pub in_flight: Option<InFlight>,
    /// Holds the request's place in its app's concurrency limit until the body ends.
    pub admission: Option<crate::registry::Permit>,
}

impl Completion {
    /// Records the finished request in the metrics, `response_time` as its
    /// time (arrival to last byte sent), and hands its record to the log.
    fn emit(&mut self, response_time: std::time::Duration) {
        self.obs.total = response_time;
        self.gateway.telemetry.observe(&self.record, &self.obs);
        self.gateway.log.log(&self.record);
    }

    /// `received_bytes` of the record: the head and the body bytes read so far.
    fn received_bytes(&self) -> u64 {
        self.received_head
            + self
                .received_body
                .as_ref()
                .map(|n| n.load(Ordering::Relaxed))
                .unwrap_or(0)
    }
}

/// The response body type of the gateway.
pub struct ResponseBody {
    inner: Inner,
    completion: Option<Box<Completion>>,
    /// The record is written when the body is dropped, not at its end
    /// ([`ResponseBody::finish_when_dropped`]).
    at_drop: bool,
}

impl ResponseBody {
    /// Fields of the response that are not in its field map: a backend's
    /// answer for an HTTP/1.1 client ([`h1client::RequestHead::fields_as_list`]),
    /// written before the map's. Empty for any other body.
    ///
    /// [`h1client::RequestHead::fields_as_list`]: super::h1client::RequestHead::fields_as_list
    pub fn listed_fields(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        match &self.inner {
            Inner::Upstream(b) => b.fields(),
            Inner::Full(_) => &[],
        }
    }

    /// A body with no record attached (console, tests).
    pub fn plain(inner: Inner) -> Self {
        ResponseBody {
            inner,
            completion: None,
            at_drop: false,
        }
    }

    /// The answer's head was written: `bytes`, its size as written (the
    /// HTTP/1 server's count, its own `Date` and `Connection` fields
    /// included), replaces the estimate the handler made ([`PendingRecord::into_body`])
    /// in `sentBytes`. Until 2026-12-06 the record kept the estimate, which
    /// left out the fields the server adds (`Date`, and `Connection` when it
    /// closes: a gateway page was counted 17 bytes short, 36 with
    /// `connection: close`).
    pub fn head_written(&mut self, bytes: u64) {
        if let Some(c) = self.completion.as_mut() {
            c.head_bytes = bytes;
        }
    }

    /// An answer that has no content (RFC 9110 §9.3.2: HEAD; §15: 1xx, 204,
    /// 304): a body the gateway made (an error page) is not sent, so the
    /// answer ends with its head, and the record counts the head only (until
    /// 2026-12-06 an HTTP/1 HEAD answer's record counted the page's bytes
    /// too). A backend's answer to HEAD has no body already (`h1client.rs`).
    /// Both servers call it (`h1server.rs`, `h2server.rs`); over HTTP/2,
    /// `h2` would otherwise send what the body holds, and a DATA frame on a
    /// HEAD response is malformed (RFC 9113 §8.1.1): clients reset the
    /// stream or end the whole connection.
    pub fn without_content(&mut self) {
        if let Inner::Full(b) = &mut self.inner {
            *b = None;
        }
    }

    /// Writes the record when this body is dropped rather than when its last
    /// frame is taken; the HTTP/1 server (`h1server.rs`) asks for it and keeps
    /// an ended body until the answer's last bytes are written to the socket
    /// (or, on one core, lent to the batch writer, `batch.rs`, which writes
    /// them when the connections that are ready have had their turn); the
    /// HTTP/2 server (`h2server.rs`) asks for it too, and keeps the record of
    /// an answer handed over whole ([`ResponseBody::hand_over`]) until the
    /// connection's next attempt to write what its streams queued. So the
    /// record's work, the metrics and the log line (about 2.5-3 µs at one
    /// connection, docs/benchmarks.md section 2), comes after the answer's
    /// write instead of before it, and `timeTaken` runs to the last byte
    /// written to the client's socket, as Azure defines it ("last byte sent
    /// in the response to the client") and as nginx's `$request_time` does.
    /// What the end of the body frees is still freed at the end: the backend
    /// connection goes back to its pool, the request leaves its server's
    /// in-flight count and its app's concurrency limit
    /// ([`ResponseBody::release`]). A body that ends in a backend error is
    /// written at once, as before.
    pub fn finish_when_dropped(&mut self) {
        self.at_drop = true;
    }

    /// The answer was not written whole: the client left, or the send
    /// timeout cut it, during the body or while its last bytes were queued
    /// (a body whose record waits for the drop,
    /// [`ResponseBody::finish_when_dropped`]). Writes the record now, as for a
    /// client that leaves during the body: the status sent and
    /// `ERRORINFO_CLIENT_CLOSED_REQUEST`. Does nothing when the record was
    /// written already (a backend body's error writes its own).
    pub fn client_left(&mut self) {
        self.finish(false, false, None);
    }

    /// At the end of a body whose record waits for the drop (its last poll,
    /// the one that returns no frame: the backend body's own last poll may
    /// still finish sending the request body, which lets its connection be
    /// pooled): gives back what the request held (its backend connection, to
    /// the pool; its place in the server's in-flight count and the app's
    /// concurrency limit), as [`ResponseBody::finish`] does, without writing
    /// the record. `now`, a clock reading, starts the backend connection's
    /// idle time when given.
    fn release(&mut self, now: Option<Instant>) {
        if let Inner::Upstream(b) = &mut self.inner {
            if let Some(now) = now {
                b.ended_at(now);
            }
            // Dropped here: read to its end, its connection is checked in.
            self.inner = Inner::Full(None);
        }
        if let Some(c) = self.completion.as_mut() {
            c.in_flight = None;
            c.admission = None;
        }
    }

    /// Completes and writes the record; `now` is a clock reading just taken, if
    /// the caller has one.
    fn finish(&mut self, complete: bool, upstream_error: bool, now: Option<Instant>) {
        let Some(c) = self.completion.take() else {
            return;
        };
        let now = write_record(c, complete, upstream_error, now);
        if let Inner::Upstream(b) = &mut self.inner {
            // The backend connection's idle time starts here too.
            b.ended_at(now);
        }
    }

    /// An answer handed to the HTTP/2 connection whole (`h2server.rs`): gives
    /// back at once what the request held (its backend connection, to the pool
    /// if the body was read to its end; its place in the server's in-flight
    /// count and its app's concurrency limit), as the end of a body does, and
    /// keeps only the record, which [`HandedOver`] writes when it is dropped.
    pub fn hand_over(mut self) -> HandedOver {
        let complete = self.is_end_stream();
        self.release(None);
        HandedOver {
            completion: self.completion.take(),
            complete,
        }
    }

    /// The answer's head could not be sent (the HTTP/2 stream was reset or
    /// its connection closed first): the record is written by the
    /// [`PendingRecord`] it came from, as for a client that left before the
    /// head: 499 `ERRORINFO_CLIENT_CLOSED_REQUEST`, no byte sent; or, when
    /// `malformed` (the stream was reset with `PROTOCOL_ERROR`), as a
    /// malformed request ([`drop_malformed`]).
    pub fn head_not_sent(mut self, malformed: bool) {
        let pending = PendingRecord(self.completion.take());
        if malformed {
            drop_malformed(pending);
        }
    }
}

/// Fills the figures of a finished request's record (`sentBytes`,
/// `receivedBytes`, `timeTaken`, `clientResponseTime`, and `error_info` when
/// it says no error yet: `upstream_error`, the backend's body broke; not
/// `complete`, the client left during the body) and writes it (metrics and
/// log line). Returns the clock reading it used (`now`, or one it took).
fn write_record(
    mut c: Box<Completion>,
    complete: bool,
    upstream_error: bool,
    now: Option<Instant>,
) -> Instant {
    let received = c.received_bytes();
    let p = &mut c.record.properties;
    if p.error_info == ErrorInfo::NoError.as_str() {
        if upstream_error {
            p.error_info = ErrorInfo::UpstreamClosedConnection.text();
        } else if !complete {
            // Headers went out, the client left before the body ended:
            // the status stays what was sent, the reason says who stopped.
            p.error_info = ErrorInfo::ClientClosedRequest.text();
        }
    }
    p.sent_bytes = c.head_bytes + c.body_bytes;
    p.received_bytes = received;
    let now = now.unwrap_or_else(Instant::now);
    let total = now.saturating_duration_since(c.start);
    p.time_taken = secs_number(total);
    p.client_response_time = c
        .first_poll
        .map(|t| secs_number(now.saturating_duration_since(t)))
        .unwrap_or(0.0);
    c.emit(total);
    now
}

/// The record of an answer handed to the HTTP/2 connection whole
/// ([`ResponseBody::hand_over`]), without the body: the connection's task
/// keeps it until its next write of what the streams queued, and drops it
/// then, which writes the record (8 bytes and a flag where the body was a
/// few hundred).
pub struct HandedOver {
    completion: Option<Box<Completion>>,
    /// The body had ended when it was handed over.
    complete: bool,
}

impl HandedOver {
    /// The connection failed before it wrote the answer: writes the record
    /// now, as for a client that left during the body (the status sent,
    /// `ERRORINFO_CLIENT_CLOSED_REQUEST`).
    pub fn client_left(mut self) {
        self.complete = false;
    }
}

impl Drop for HandedOver {
    fn drop(&mut self) {
        if let Some(c) = self.completion.take() {
            write_record(c, self.complete, false, None);
        }
    }
}

/// Why a response body stopped early (the backend's connection broke).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        // The clock read of the first poll also serves a body that ends in it.
        let mut now = None;
        if let Some(c) = this.completion.as_mut() {
            if c.first_poll.is_none() {
                let t = Instant::now();
                c.first_poll = Some(t);
                now = Some(t);
            }
        }
        let r = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::from),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(c)) = (f.data_ref(), this.completion.as_mut()) {
                    c.body_bytes += d.len() as u64;
                }
                if !this.at_drop && this.is_end_stream() {
                    this.finish(true, false, now);
                }
            }
            Poll::Ready(Some(Err(e))) => match ClientBodyFailed::of(e.as_ref()) {
                // The client's body failed after the answer's head came: the
                // client stopped it, not the backend (the status stays
                // what was sent).
                Some(ClientBodyFailed(client)) => {
                    if let Some(c) = this.completion.as_mut() {
                        if super::reqbody::is_invalid_framing(client) {
                            c.record.properties.error_info = ErrorInfo::InvalidRequest.text();
                        }
                    }
                    this.finish(false, false, now)
                }
                None => this.finish(false, true, now),
            },
            Poll::Ready(None) if this.at_drop => this.release(now),
            Poll::Ready(None) => this.finish(true, false, now),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(b) => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.completion.is_some() {
            let done = self.is_end_stream();
            self.finish(done, false, None);
        }
    }
}

/// The access-log record of a request being handled. Written as 499 if dropped
/// before [`PendingRecord::into_body`] hands it to the response body. Derefs to
/// the boxed [`Completion`] whose record and figures the handler fills.
pub struct PendingRecord(Option<Box<Completion>>);

impl std::ops::Deref for PendingRecord {
    type Target = Completion;
    fn deref(&self) -> &Completion {
        // Only `into_body` (which consumes `self`) and `drop` take the box.
        self.0
            .as_deref()
            .expect("a pending record holds its completion")
    }
}

impl std::ops::DerefMut for PendingRecord {
    fn deref_mut(&mut self) -> &mut Completion {
        self.0
            .as_deref_mut()
            .expect("a pending record holds its completion")
    }
}

impl PendingRecord {
    /// Starts the record of a request that arrived at `start`.
    pub fn new(gateway: Arc<Gateway>, record: AccessRecord, start: Instant) -> Self {
        PendingRecord(Some(Box::new(Completion {
            gateway,
            obs: Observation::default(),
            record,
            start,
            head_bytes: 0,
            body_bytes: 0,
            first_poll: None,
            received_head: 0,
            received_body: None,
            in_flight: None,
            admission: None,
        })))
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// Time from the request's arrival to `now`.
    pub fn elapsed_at(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.start)
    }

    /// Attaches the record to the response body, which writes it when it ends.
    /// `head_bytes`: size of the response head. (A backend body returns its
    /// connection to the pool itself: `h1client.rs` `BackendBody`.)
    pub fn into_body(mut self, inner: Inner, head_bytes: u64) -> ResponseBody {
        let completion = self.0.take().map(|mut c| {
            c.head_bytes = head_bytes;
            c
        });
        ResponseBody {
            inner,
            completion,
            at_drop: false,
        }
    }

    /// Splits the record of a 101 answer off its (empty) body, for the tunnel
    /// the connection becomes (`tunnel.rs`), which writes it when it ends.
    /// `head_bytes`: size of the 101's head. The request's place in its app's
    /// concurrency limit is given back here, as when a 101's body ended: an open
    /// WebSocket does not hold one of the app's request slots.
    pub fn into_tunnel(mut self, head_bytes: u64) -> (ResponseBody, TunnelRecord) {
        let completion = self.0.take().map(|mut c| {
            c.head_bytes = head_bytes;
            c.admission = None;
            c
        });
        let body = ResponseBody {
            inner: Inner::Full(None),
            completion: None,
            at_drop: false,
        };
        (
            body,
            TunnelRecord {
                completion,
                switched: Instant::now(),
            },
        )
    }
}

/// The record of a request whose backend answered 101 (Switching Protocols,
/// RFC 9110 §15.2.2) and whose connection became a tunnel. It is written when
/// the tunnel ends, as Azure Application Gateway writes a WebSocket's record:
/// `timeTaken` is the time from the request's arrival to the tunnel's end (the
/// connection's life), `clientResponseTime` the time from the 101 to that
/// end, and `sentBytes` and `receivedBytes` count the bytes that crossed the
/// tunnel to and from the client after the heads. The metrics are recorded
/// then too, with the 101's own time as the response time (Azure's metrics
/// take the WebSocket's life, a known source of false latency alerts). A tunnel
/// whose client was gone before it opened is written with
/// `ERRORINFO_CLIENT_CLOSED_REQUEST`.
/// Dropped without [`TunnelRecord::finish`] (the tunnel's task dropped at
/// shutdown), it is written with no tunnel bytes.
pub struct TunnelRecord {
    completion: Option<Box<Completion>>,
    /// When the 101 arrived from the backend.
    switched: Instant,
}

impl TunnelRecord {
    /// Writes the record: `to_client` and `from_client` bytes crossed the
    /// tunnel; `client_gone`: the client went away before the tunnel opened.
    pub fn finish(mut self, to_client: u64, from_client: u64, client_gone: bool) {
        self.write(to_client, from_client, client_gone);
    }

    fn write(&mut self, to_client: u64, from_client: u64, client_gone: bool) {
        let Some(mut c) = self.completion.take() else {
            return;
        };
        let received = c.received_bytes() + from_client;
        let p = &mut c.record.properties;
        if client_gone && p.error_info == ErrorInfo::NoError.as_str() {
            p.error_info = ErrorInfo::ClientClosedRequest.text();
        }
        p.sent_bytes = c.head_bytes + to_client;
        p.received_bytes = received;
        let now = Instant::now();
        let total = now.saturating_duration_since(c.start);
        p.time_taken = secs_number(total);
        p.client_response_time = secs_number(now.saturating_duration_since(self.switched));
        // The metrics time the 101 itself: a WebSocket's life is not a response
        // time, and would swamp the series that alerts and autoscale read.
        c.emit(self.switched.saturating_duration_since(c.start));
    }
}

impl Drop for TunnelRecord {
    fn drop(&mut self) {
        self.write(0, 0, false);
    }
}

thread_local! {
    /// Set while [`drop_malformed`] drops a request's handler: the pending
    /// records dropped meanwhile are written as malformed requests.
    static MALFORMED: Cell<bool> = const { Cell::new(false) };
}

/// Drops `handler`, a request's handler future (which holds its
/// [`PendingRecord`]), for a request whose HTTP/2 stream was reset with
/// `PROTOCOL_ERROR` before its answer: the `h2` crate found the stream
/// malformed (its DATA frames did not add up to its `content-length`, RFC 9113
/// §8.1.1), or the client reset it for a protocol error. The record says
/// 400 `ERRORINFO_INVALID_REQUEST` (no byte sent), as for a broken chunked
/// body in HTTP/1, where a plain drop says 499 `CLIENT_CLOSED_REQUEST`. The
/// handler owns the record, so the drop is told through a thread-local flag,
/// set only for this call.
pub fn drop_malformed<T>(handler: T) {
    /// Clears the flag however the drop ends (an unwinding panic too).
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            MALFORMED.set(false);
        }
    }
    MALFORMED.set(true);
    let _clear = Clear;
    drop(handler);
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let Some(c) = self.0.as_deref_mut() else {
            return;
        };
        let received = c.received_bytes();
        let p = &mut c.record.properties;
        let info = if MALFORMED.get() {
            ErrorInfo::InvalidRequest
        } else {
            ErrorInfo::ClientClosedRequest
        };
        p.http_status = info.status().as_u16();
        p.error_info = info.text();
        let total = c.start.elapsed();
        p.time_taken = secs_number(total);
        p.received_bytes = received;
        c.emit(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accesslog::{AccessLog, AccessLogTarget};
    use std::time::Duration;

    /// A gateway whose access log is the file `path`, and nothing else.
    fn gateway(path: &std::path::Path) -> Arc<Gateway> {
        let log = AccessLog::start(
            &AccessLogTarget::File(path.to_path_buf()),
            prometheus_client::metrics::counter::Counter::default(),
        )
        .expect("log");
        Arc::new(Gateway {
            snapshot: Arc::new(arc_swap::ArcSwap::from_pointee(
                super::super::Snapshot::empty("t"),
            )),
            events: Arc::new(crate::events::EventLog::new(None)),
            upstream: Arc::new(super::super::upstream::Upstream::default()),
            log,
            telemetry: Arc::new(crate::telemetry::Telemetry::from_env()),
        })
    }

    /// The body of a 200 answer "hello\n" (a 20-byte head) to request `txid`,
    /// its record kept for the drop, not polled yet.
    fn answer_body(
        gateway: &Arc<Gateway>,
        txid: &str,
        slot: Option<crate::registry::Permit>,
    ) -> ResponseBody {
        let record = super::super::proxy::test_record(txid);
        let mut pending = PendingRecord::new(gateway.clone(), record, Instant::now());
        pending.admission = slot;
        let answer = Bytes::from_static(b"hello\n");
        let mut body = pending.into_body(Inner::Full(Some(answer)), 20);
        body.finish_when_dropped();
        body
    }

    /// [`answer_body`] with its last frame taken, as the HTTP/2 server takes
    /// it (no poll after it).
    fn last_frame_taken(
        gateway: &Arc<Gateway>,
        txid: &str,
        slot: Option<crate::registry::Permit>,
    ) -> ResponseBody {
        let mut body = answer_body(gateway, txid, slot);
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(body.is_end_stream());
        body
    }

    /// One poll of `body` for its next frame, with a waker that does nothing.
    fn poll_once(body: &mut ResponseBody) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    /// [`last_frame_taken`], then polled to its end (no more frames), as the
    /// HTTP/1 server polls it.
    fn ended_body(
        gateway: &Arc<Gateway>,
        txid: &str,
        slot: Option<crate::registry::Permit>,
    ) -> ResponseBody {
        let mut body = last_frame_taken(gateway, txid, slot);
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
        body
    }

    /// The log's records, by transaction id.
    fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect()
    }

    /// The log at `path` holds exactly these records, in order: transaction
    /// id, `error_info` without its `ERRORINFO_` prefix, status and, when
    /// given, `sentBytes`.
    fn assert_records(path: &std::path::Path, want: &[(&str, &str, u16, Option<u64>)]) {
        let got = records(path);
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (r, (txid, info, status, sent)) in got.iter().zip(want) {
            let p = &r["properties"];
            assert_eq!(p["transactionId"], *txid, "{r}");
            assert_eq!(p["error_info"], format!("ERRORINFO_{info}"), "{r}");
            assert_eq!(p["httpStatus"], *status, "{r}");
            if let Some(sent) = sent {
                assert_eq!(p["sentBytes"], *sent, "{r}");
            }
        }
    }

    /// A body whose record waits for its drop, as the HTTP/1 server's do: its
    /// end gives back the request's place in its app's concurrency limit at
    /// once, and its record is written when it is dropped, whole; one whose
    /// answer was not written whole (`client_left`) is written as a client
    /// that left during the body: the status sent, `CLIENT_CLOSED_REQUEST`.
    #[tokio::test]
    async fn a_record_kept_for_the_drop_is_written_then_and_the_slot_freed_at_the_end() {
        let dir = std::env::temp_dir().join(format!("pc-body-{}", std::process::id()));
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let gateway = gateway(&path);
        let admission = Arc::new(crate::registry::Admission::default());
        let slot = || admission.acquire(1, 0, Duration::from_millis(10));
        let held = slot().await.expect("a free slot");
        assert!(slot().await.is_err(), "the request holds the only slot");

        let body = ended_body(&gateway, "whole", Some(held));
        drop(slot().await.expect("the body's end gave the slot back"));
        gateway.log.flush().await;
        assert!(records(&path).is_empty(), "written before the drop");
        drop(body);

        let mut cut = ended_body(&gateway, "cut", None);
        cut.client_left();
        drop(cut);
        gateway.log.flush().await;
        assert_records(
            &path,
            &[
                ("whole", "NO_ERROR", 200, Some(26)),
                ("cut", "CLIENT_CLOSED_REQUEST", 200, None),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An HTTP/2 answer handed over whole (`hand_over`): the request's place
    /// in its app's concurrency limit is given back at once, and the record
    /// is written when the connection's task drops what it keeps; one whose
    /// connection broke first (`client_left`) is written as a client that
    /// left, with the status sent; one whose head was never sent
    /// (`head_not_sent`) as 499 with nothing sent, or as 400
    /// `INVALID_REQUEST` when its stream was reset as malformed.
    #[tokio::test]
    async fn an_answer_handed_over_frees_its_slot_at_once_and_writes_its_record_when_dropped() {
        let dir = std::env::temp_dir().join(format!("pc-body-h2-{}", std::process::id()));
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let gateway = gateway(&path);
        let admission = Arc::new(crate::registry::Admission::default());
        let slot = || admission.acquire(1, 0, Duration::from_millis(10));
        let held = slot().await.expect("a free slot");

        let body = last_frame_taken(&gateway, "whole", Some(held));
        assert!(
            slot().await.is_err(),
            "the request holds its slot until then"
        );
        let kept = body.hand_over();
        drop(slot().await.expect("handing over gave the slot back"));
        gateway.log.flush().await;
        assert!(records(&path).is_empty(), "written before the drop");
        drop(kept);

        last_frame_taken(&gateway, "broken", None)
            .hand_over()
            .client_left();
        answer_body(&gateway, "malformed-head", None).head_not_sent(true);
        answer_body(&gateway, "no-head", None).head_not_sent(false);
        gateway.log.flush().await;
        assert_records(
            &path,
            &[
                ("whole", "NO_ERROR", 200, Some(26)),
                ("broken", "CLIENT_CLOSED_REQUEST", 200, None),
                ("malformed-head", "INVALID_REQUEST", 400, Some(0)),
                // The flag is cleared after the malformed drop.
                ("no-head", "CLIENT_CLOSED_REQUEST", 499, Some(0)),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
