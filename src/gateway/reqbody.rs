//! The body of a client's request, as the request handler sees it.
//!
//! HTTP/2 request bodies are the `h2` crate's streams ([`H2Body`]), whose
//! flow-control window is opened again as the handler takes each piece. HTTP/1
//! request bodies are read
//! by our own server (`h1server.rs`) on the connection's task: the handler's
//! [`H1Body`] and the connection share a one-piece [`BodySlot`]. When the body is
//! polled and the slot is empty, it says so (`want`) and waits; the connection,
//! polled on the same task, then decodes the next piece from its input (reading
//! the socket if needed) and puts it in the slot. So a body is read only as fast
//! as the backend takes it, and there is no channel and no extra task.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The error of a request body: the client went away or sent invalid framing.
pub type ClientBodyError = Box<dyn std::error::Error + Send + Sync>;

/// True when a request body failed because its chunked framing is invalid
/// (answered 400 `ERRORINFO_INVALID_REQUEST`, not 499).
pub fn is_invalid_framing(e: &ClientBodyError) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
}

/// A client's request body.
pub enum ClientBody {
    /// No body.
    Empty,
    /// An HTTP/2 stream's body.
    H2(H2Body),
    /// An HTTP/1 body, read by the connection's server.
    H1(H1Body),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H2(b) => b.poll_frame(cx),
            ClientBody::H1(b) => b.poll_data(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H2(b) => b.recv.is_end_stream(),
            ClientBody::H1(b) => b.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H2(H2Body { length, .. }) | ClientBody::H1(H1Body { length, .. }) => {
                length.map_or_else(SizeHint::default, SizeHint::with_exact)
            }
        }
    }
}

/// An HTTP/2 request body: the stream's DATA frames, then its trailers.
pub struct H2Body {
    recv: h2::RecvStream,
    /// The request's `Content-Length`, when it has a valid one (`h2` refuses a
    /// stream whose DATA frames do not add up to it, RFC 9113 §8.1.1).
    length: Option<u64>,
    /// All DATA frames were taken; trailers may follow.
    data_done: bool,
}

impl H2Body {
    /// The body of a request whose fields are `headers`.
    pub fn new(headers: &http::HeaderMap, recv: h2::RecvStream) -> H2Body {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        H2Body {
            recv,
            length,
            data_done: false,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken: the client may send as much again (WINDOW_UPDATE).
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(h2_body_error(e)))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(h2_body_error(e)))),
        }
    }
}

/// The error of an HTTP/2 body as the handler sees it. A stream the `h2`
/// crate itself reset with `PROTOCOL_ERROR` was malformed: its DATA frames did
/// not add up to its `Content-Length`, or its trailers were invalid (RFC 9113
/// §8.1.1, §8.1). That is the client's framing, as a broken chunked body is in
/// HTTP/1, so it is given as `InvalidData` ([`is_invalid_framing`]: logged
/// `ERRORINFO_INVALID_REQUEST`). Any other error (the client reset the stream,
/// the connection went, for a protocol error on it too) stays as it is: the
/// client left.
fn h2_body_error(e: h2::Error) -> ClientBodyError {
    if e.is_library() && e.is_reset() && e.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
        Box::new(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    } else {
        e.into()
    }
}

#[derive(Default)]
struct SlotState {
    /// The next piece, not yet taken by the body.
    piece: Option<Bytes>,
    /// The body ended (after `piece`).
    end: bool,
    /// The body failed (after `piece`): why.
    failed: Option<std::io::Error>,
    /// The body was polled and found the slot empty.
    want: bool,
    /// Who to wake when a piece arrives.
    waker: Option<Waker>,
}

/// The hand-over point between an HTTP/1 connection and its request's body.
#[derive(Default)]
pub struct BodySlot {
    state: Mutex<SlotState>,
}

impl BodySlot {
    /// True when the body waits for a piece: the connection should decode one.
    pub fn wants(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.want && s.piece.is_none() && !s.end && s.failed.is_none())
            .unwrap_or(false)
    }

    fn update(&self, f: impl FnOnce(&mut SlotState)) {
        let waker = self.state.lock().ok().and_then(|mut s| {
            f(&mut s);
            s.want = false;
            s.waker.take()
        });
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Hands the body its next piece.
    pub fn put(&self, piece: Bytes) {
        self.update(|s| s.piece = Some(piece));
    }

    /// The body ended.
    pub fn finish(&self) {
        self.update(|s| s.end = true);
    }

    /// The body cannot be completed: the client closed the connection
    /// (`UnexpectedEof`), or its chunked framing is invalid (`InvalidData`,
    /// see [`is_invalid_framing`]).
    pub fn fail(&self, why: std::io::Error) {
        self.update(|s| s.failed = Some(why));
    }
}

/// An HTTP/1 request body (see the module doc).
pub struct H1Body {
    slot: Arc<BodySlot>,
    /// `Content-Length`, when the request had one.
    length: Option<u64>,
    /// The end was delivered.
    ended: bool,
}

impl H1Body {
    /// A body of `length` bytes (None: chunked) fed through `slot`.
    pub fn new(slot: Arc<BodySlot>, length: Option<u64>) -> H1Body {
        H1Body {
            slot,
            length,
            ended: false,
        }
    }

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Ok(mut s) = self.slot.state.lock() else {
            return Poll::Ready(Some(Err("request body state poisoned".into())));
        };
        if let Some(piece) = s.piece.take() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if let Some(why) = s.failed.take() {
            self.ended = true;
            return Poll::Ready(Some(Err(Box::new(why))));
        }
        if s.end {
            self.ended = true;
            return Poll::Ready(None);
        }
        s.want = true;
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}
