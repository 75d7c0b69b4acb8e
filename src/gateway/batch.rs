//! Small writes made together: a request head to a backend, or a whole small
//! response to a client, is handed to one writer task that makes the writes of
//! every connection that had its turn, back to back.
//!
//! Why: on one core, a task per connection takes each request from its read to
//! its write before the next, a few microseconds apart, and the peers on the
//! other core (the backend, the client) answer and fall asleep again in
//! between; each write then wakes a sleeping peer, which on a VM is an
//! inter-processor interrupt paid by the writer. HAProxy's event loop reads
//! every ready connection first and then writes, so the first write wakes the
//! peer and the others find it running. Here the writer task is woken by the
//! first hand-over and, being queued behind the connections already ready,
//! runs after them: the same order, without a second turn of each
//! connection's task (docs/benchmarks.md §2 has the measurements).
//!
//! Scope: only on the single-threaded runtime (the gateway confined to one
//! core, [`start`]), where every task runs on the thread that owns the queue;
//! elsewhere [`Socket::lend`] gives the bytes back and the caller writes them
//! itself. The socket is plain TCP; a TLS layer above it has its records
//! gathered ([`Socket::defer`]) and lent as one hand-over.
//!
//! When it pays: only when many connections are busy at once. With a few, it
//! puts them in step (all read, then all written, then all waiting) where
//! they would otherwise overlap with their peers' work, so the writer
//! watches its batches and, while they hold fewer than [`MIN_AVERAGE`]
//! writes on average, refuses hand-overs for a spell ([`WINDOW`]).
//!
//! A [`Socket`] holds at most one hand-over. Its own later writes and its
//! shutdown wait for that hand-over first ([`Socket::poll_settled`]) and
//! write what the writer could not (the socket's buffer was full), so bytes
//! leave in the order they were written; its flush does not wait
//! (write-behind). A backend socket dropped with a hand-over still queued
//! cancels that write (a request given up before its head went out is not
//! sent); a client socket's is written all the same ([`Socket::for_client`]:
//! an answer flushed is an answer sent, as with a plain socket, whatever
//! path drops the connection after it).

use bytes::{Buf, Bytes};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What became of lent bytes.
#[derive(Debug)]
enum Outcome {
    /// All written.
    Sent,
    /// Not all written (the socket would block): the rest, to be written by
    /// the caller before anything else.
    Left(Bytes),
    /// The write failed (the peer reset or closed the connection).
    Failed(io::Error),
}

/// Where a hand-over stands; shared by the connection and the writer.
#[derive(Default)]
struct State {
    /// None while queued.
    outcome: Option<Outcome>,
    /// The connection's task, when it waits for the outcome.
    waker: Option<Waker>,
    /// Wake the waiting task when all was written too, not only when
    /// something is left.
    wake_on_sent: bool,
    /// The connection let go of the hand-over before it was written (it
    /// ended, or the request was abandoned): the writer skips it, as a write
    /// the connection had not made yet would not have been made.
    cancelled: bool,
    /// Written even if the connection lets go of it first (a client
    /// socket's hand-over: [`Socket::for_client`]).
    outlives_socket: bool,
}

impl State {
    /// Keeps `waker` to be woken at the outcome (a clone only when it is not
    /// the one kept already).
    fn register(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }
}

/// The hand-over states of this thread, which is the writer's: a table of
/// slots that [`Lent`] and [`Pending`] name by [`Key`], where each used to
/// hold an `Arc<Mutex<State>>`. Every access is on this thread (batching
/// runs only on a single-threaded runtime), so a `RefCell` does what the
/// mutex did without its locked instructions: the `Arc` made, cloned and
/// dropped and the mutex taken four or five times per hand-over cost about
/// 16 locked (atomic) instructions each, about 4.3 ns apiece on the benchmark
/// VM (docs/benchmarks.md section 2, `bench/instructions.py --atomics`).
#[derive(Default)]
struct Slots {
    /// This table's identity among the threads' tables.
    id: u32,
    entries: Vec<Slot>,
    /// Indexes of unused entries.
    free: Vec<u32>,
}

struct Slot {
    /// Bumped each time the slot is freed, so a stale key finds nothing.
    generation: u32,
    /// How many of the hand-over's two ends ([`Lent`], [`Pending`]) still
    /// hold it; freed at zero.
    holders: u8,
    state: State,
}

/// Names a slot of one thread's [`Slots`]; `Send`, unlike the slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    table: u32,
    index: u32,
    generation: u32,
}

/// Identities of the threads' tables.
static NEXT_TABLE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

thread_local! {
    static SLOTS: RefCell<Slots> = RefCell::new(Slots {
        id: NEXT_TABLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..Slots::default()
    });
}

impl Slots {
    /// A new slot holding `state`, held by both ends.
    fn insert(&mut self, state: State) -> Key {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Slot {
                    generation: 0,
                    holders: 0,
                    state: State::default(),
                });
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.entries[index as usize];
        slot.holders = 2;
        slot.state = state;
        Key {
            table: self.id,
            index,
            generation: slot.generation,
        }
    }

    /// The slot `key` names, while one of its ends still holds it.
    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        if key.table != self.id {
            return None;
        }
        self.entries
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation && s.holders > 0)
    }

    /// One end lets go; the slot is freed (its waker and outcome dropped)
    /// when both have.
    fn release(&mut self, key: Key) {
        let Some(slot) = self.slot(key) else {
            return;
        };
        slot.holders -= 1;
        if slot.holders == 0 {
            slot.generation = slot.generation.wrapping_add(1);
            slot.state = State::default();
            self.free.push(key.index);
        }
    }
}

/// Runs `f` on the state `key` names, if this thread holds it (None on
/// another thread, after the thread's table is gone, or when called while
/// the table is in use).
fn with_state<R>(key: Key, f: impl FnOnce(&mut State) -> R) -> Option<R> {
    with_slots(|t| t.slot(key).map(|s| f(&mut s.state))).flatten()
}

/// Runs `f` on this thread's table; None after the table is gone or while it
/// is in use.
fn with_slots<R>(f: impl FnOnce(&mut Slots) -> R) -> Option<R> {
    SLOTS
        .try_with(|t| t.try_borrow_mut().ok().map(|mut t| f(&mut t)))
        .ok()
        .flatten()
}

fn release(key: Key) {
    with_slots(|t| t.release(key));
}

/// Bytes lent to the writer task, until they are settled. Dropping it before
/// then cancels the write, unless it outlives its socket.
struct Lent(Key);

impl Drop for Lent {
    fn drop(&mut self) {
        with_state(self.0, |st| {
            if st.outcome.is_none() && !st.outlives_socket {
                st.cancelled = true;
            }
        });
        release(self.0);
    }
}

impl Lent {
    /// Ready with the outcome once the writer has made the write; Pending
    /// while it is queued. `wake_on_sent`: whether the task wants to be woken
    /// when all was written (a task that waits for an answer on the same
    /// socket is woken by the answer and asks only to hear of a rest).
    fn poll_settled(&self, cx: &mut Context<'_>, wake_on_sent: bool) -> Poll<Outcome> {
        with_state(self.0, |st| {
            if let Some(done) = st.outcome.take() {
                return Poll::Ready(done);
            }
            st.wake_on_sent = wake_on_sent;
            st.register(cx.waker());
            Poll::Pending
        })
        .unwrap_or_else(|| {
            Poll::Ready(Outcome::Failed(io::Error::other(
                "write hand-over lost (another thread)",
            )))
        })
    }

    /// Like [`Lent::poll_settled`], for a task that does not wait for the
    /// hand-over (it reads, or flushes): Ready(None) when it was written
    /// whole, Ready(Some(rest)) when the socket was full. Pending while it is
    /// queued, with the task registered to be woken if bytes are left or the
    /// write fails, and Pending after a failure too, which stays for
    /// [`Lent::poll_settled`] (a read may still find the peer's last words).
    fn poll_written(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        with_state(self.0, |st| {
            match st.outcome.take() {
                Some(Outcome::Sent) => return Poll::Ready(None),
                Some(Outcome::Left(rest)) => return Poll::Ready(Some(rest)),
                Some(failed) => {
                    st.outcome = Some(failed);
                    return Poll::Pending;
                }
                None => {}
            }
            st.register(cx.waker());
            Poll::Pending
        })
        .unwrap_or(Poll::Pending)
    }

    /// Whether the writer wrote it whole.
    fn is_sent(&self) -> bool {
        with_state(self.0, |st| matches!(st.outcome, Some(Outcome::Sent))).unwrap_or(false)
    }
}

/// What the writer holds of a hand-over.
struct Pending(Key);

impl Drop for Pending {
    fn drop(&mut self) {
        release(self.0);
    }
}

impl Pending {
    fn cancelled(&self) -> bool {
        with_state(self.0, |st| st.cancelled).unwrap_or(true)
    }

    fn settle(&self, outcome: Outcome) {
        let waker = with_state(self.0, |st| {
            let wake = st.wake_on_sent || !matches!(outcome, Outcome::Sent);
            st.outcome = Some(outcome);
            if wake {
                st.waker.take()
            } else {
                None
            }
        })
        .flatten();
        // Woken with the table no longer in use.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct Item {
    socket: Arc<TcpStream>,
    bytes: Bytes,
    pending: Pending,
}

/// The queue of this thread's runtime.
#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    /// The writer task, while it waits for work.
    writer: Option<Waker>,
    /// Writes and batches since the last look ([`Queue::took`]).
    recent_writes: u32,
    recent_batches: u32,
    /// While above zero, hand-overs are refused (the caller writes itself),
    /// one fewer at each refusal.
    direct_left: u32,
}

/// Every [`WINDOW`] batches the writer looks at how many writes they held.
/// Fewer than [`MIN_AVERAGE`] per batch on average means few connections are
/// busy at once: making their writes together then puts them in step (all
/// read, then all written, then all waiting for their peers) where they
/// would otherwise overlap with the peers' work, and that costs more than
/// the wake-ups it saves (on the benchmark VM: 40 % fewer requests per
/// second with 4 connections, 6 % with 8, and 5 % more with 16, 12 % more
/// with 64; docs/benchmarks.md §2). Hand-overs are then refused for the next
/// [`DIRECT_SPELL`] writes, and tried again after.
const WINDOW: u32 = 16;
/// See [`WINDOW`].
const MIN_AVERAGE: u32 = 12;
/// See [`WINDOW`]: about a tenth of a second at the rates where it applies.
const DIRECT_SPELL: u32 = 8192;

impl Queue {
    /// Whether a hand-over is taken now; counts a refusal.
    fn takes(&mut self) -> bool {
        if self.direct_left > 0 {
            self.direct_left -= 1;
            return false;
        }
        true
    }

    /// Notes the size of a batch the writer took.
    fn took(&mut self, writes: usize) {
        self.recent_writes = self
            .recent_writes
            .saturating_add(u32::try_from(writes).unwrap_or(u32::MAX));
        self.recent_batches += 1;
        if self.recent_batches < WINDOW {
            return;
        }
        if self.recent_writes < MIN_AVERAGE * WINDOW {
            self.direct_left = DIRECT_SPELL;
        }
        self.recent_writes = 0;
        self.recent_batches = 0;
    }
}

thread_local! {
    /// Set on the thread of a single-threaded runtime by [`start`].
    static QUEUE: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// Turns batching on for the current thread and starts its writer task. Call
/// from inside a single-threaded (current-thread) runtime, whose tasks all run
/// on this thread; on a multi-threaded one it does nothing.
pub fn start() {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    if flavor.ok() != Some(tokio::runtime::RuntimeFlavor::CurrentThread) {
        return;
    }
    let fresh = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let fresh = q.is_none();
        q.get_or_insert_with(Queue::default);
        fresh
    });
    if fresh {
        tracing::debug!("batched writes on (single-threaded runtime)");
        tokio::spawn(writer());
    }
}

/// The writer task: waits for hand-overs, then writes each in the order given.
async fn writer() {
    let mut batch: Vec<Item> = Vec::new();
    loop {
        poll_fn(|cx| {
            QUEUE.with(|q| {
                let mut q = q.borrow_mut();
                let Some(q) = q.as_mut() else {
                    return Poll::Ready(());
                };
                if q.items.is_empty() {
                    q.writer = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    std::mem::swap(&mut q.items, &mut batch);
                    q.took(batch.len());
                    Poll::Ready(())
                }
            })
        })
        .await;
        for item in batch.drain(..) {
            if item.pending.cancelled() {
                continue;
            }
            let outcome = write_all_now(&item.socket, item.bytes);
            if let Outcome::Left(rest) = &outcome {
                tracing::debug!(
                    left = rest.len(),
                    "batched write: the socket is full, the rest goes back to its connection"
                );
            }
            item.pending.settle(outcome);
        }
    }
}

/// Writes what the socket takes without waiting.
fn write_all_now(socket: &TcpStream, mut bytes: Bytes) -> Outcome {
    while !bytes.is_empty() {
        match try_send(socket, &[IoSlice::new(&bytes)], false) {
            Ok(0) => return Outcome::Failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Left(bytes),
            Err(e) => return Outcome::Failed(e),
        }
    }
    Outcome::Sent
}

/// A plain TCP stream whose writes can be lent to the writer task (directly,
/// [`Socket::lend`], or by gathering the writes of a layer above, TLS:
/// [`Socket::defer`]). Reads and other writes go straight to the socket, as
/// with a `TcpStream`, after anything lent ([`Socket::poll_settled`]).
/// Dropping it with a hand-over still queued cancels that write, except for
/// a client socket ([`Socket::for_client`]).
pub struct Socket {
    stream: Arc<TcpStream>,
    /// A hand-over not yet settled.
    lent: Option<Lent>,
    /// What a full socket did not take of a hand-over: written first.
    /// (Boxed, as the gathering below: rare, and the socket is part of every
    /// connection's task, idle ones too.)
    left: Option<Box<Bytes>>,
    /// While set, writes are gathered here instead of made.
    #[allow(clippy::box_collection)] // 8 bytes in the socket instead of 24
    deferred: Option<Box<Vec<u8>>>,
    /// Every write is gathered and lent at the flush ([`Socket::write_behind`]).
    write_behind: bool,
    /// Hand-overs are written even if the socket is dropped first.
    for_client: bool,
    /// Direct writes are made with `MSG_MORE` ([`Socket::last_writes`]).
    more: bool,
}

/// In write-behind mode, gathered bytes are lent once there are this many,
/// without waiting for the flush (32 KiB): a large body is not gathered whole.
const WRITE_BEHIND_MAX: usize = 32 * 1024;

impl Socket {
    /// Wraps a connected stream (a backend connection: a hand-over still
    /// queued when the socket is dropped is not written).
    pub fn new(stream: TcpStream) -> Socket {
        Socket {
            stream: Arc::new(stream),
            lent: None,
            left: None,
            deferred: None,
            write_behind: false,
            for_client: false,
            more: false,
        }
    }

    /// Wraps a client connection: what it lent is written even if it is
    /// dropped before the writer ran (the writer holds the stream until
    /// then), as bytes a plain socket had taken would still go out. Bytes
    /// the kernel does not take at once are lost with the socket, as a
    /// dropped connection's unflushed buffer is.
    pub fn for_client(stream: TcpStream) -> Socket {
        Socket {
            for_client: true,
            ..Socket::new(stream)
        }
    }

    /// The writes from now on are the connection's last, and its shutdown
    /// follows them at once: they are made with `MSG_MORE` (Linux), so the
    /// kernel holds their last partial segment until the shutdown and sends
    /// the FIN in it instead of in a segment of its own (one segment fewer
    /// for every connection closed after an answer: docs/behaviour.md §4).
    /// Full segments still leave at once; the shutdown, or the close of the
    /// socket on any other path, sends what is held. Not for writes that
    /// wait for the peer before the shutdown (a partial answer), which would
    /// wait for the kernel's cork timer (200 ms) as well.
    pub fn last_writes(&mut self) {
        self.more = cfg!(target_os = "linux");
    }

    /// From now on, every write is gathered, and what gathered is lent at
    /// each flush (and every [`WRITE_BEHIND_MAX`] bytes): for a connection
    /// whose protocol layer writes its frames and then flushes, HTTP/2. Does
    /// nothing when batching is off.
    pub fn write_behind(&mut self) {
        if QUEUE.with(|q| q.try_borrow().is_ok_and(|q| q.is_some())) {
            self.write_behind = true;
        }
    }

    /// Lends what gathered in write-behind mode, after the previous hand-over
    /// settled. Errors: as [`Socket::poll_settled`].
    fn poll_lend_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.deferred.as_ref().is_none_or(|g| g.is_empty()) {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_settled(cx, true))?;
        let gathered = self.deferred.take().unwrap_or_default();
        if let Err(back) = self.lend(Bytes::from(*gathered)) {
            // No writer (cannot happen on the thread that turned the mode
            // on): written here instead.
            self.left = Some(Box::new(back));
            return self.poll_settled(cx, true);
        }
        Poll::Ready(Ok(()))
    }

    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Ready once the runtime has seen the socket readable (bytes, or its end
    /// or a reset) since a read last found it empty: what
    /// [`AsyncRead::poll_read`] waits for before it reads, with a hand-over
    /// moved on first as there, but without a buffer. Lets a reader take its
    /// buffer only once bytes have come (`h1client.rs` `poll_bytes_came`).
    /// The readiness can be stale (a read that filled its buffer exactly
    /// leaves it set): then the read that follows finds nothing and waits.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lent.is_some() || self.left.is_some() {
            self.progress(cx);
        }
        self.stream.poll_read_ready(cx)
    }

    /// Hands `bytes` to the writer task of this thread, which writes them
    /// after the connections already ready had their turn. Gives them back
    /// when there is no writer (batching is off, or another thread) or a
    /// hand-over is still outstanding.
    pub fn lend(&mut self, bytes: Bytes) -> Result<(), Bytes> {
        if !self.settle_now() {
            return Err(bytes);
        }
        let stream = self.stream.clone();
        let outlives_socket = self.for_client;
        let lent = QUEUE.with(|q| {
            let Ok(mut q) = q.try_borrow_mut() else {
                return Err(bytes);
            };
            let Some(q) = q.as_mut() else {
                return Err(bytes);
            };
            if !q.takes() {
                return Err(bytes);
            }
            let state = State {
                outlives_socket,
                ..State::default()
            };
            let Some(key) = with_slots(|t| t.insert(state)) else {
                return Err(bytes);
            };
            q.items.push(Item {
                socket: stream,
                bytes,
                pending: Pending(key),
            });
            if let Some(w) = q.writer.take() {
                w.wake();
            }
            Ok(Lent(key))
        })?;
        self.lent = Some(lent);
        Ok(())
    }

    /// From now until [`Socket::lend_deferred`], writes are gathered instead
    /// of made. False (and nothing changes) when a hand-over could not be made:
    /// batching is off or one is outstanding.
    pub fn defer(&mut self) -> bool {
        if !self.settle_now() {
            return false;
        }
        // A refusal counts here as at `lend`: a connection that only ever
        // defers (TLS) must see the refusals run out too.
        let on = QUEUE.with(|q| {
            q.try_borrow_mut()
                .is_ok_and(|mut q| q.as_mut().is_some_and(Queue::takes))
        });
        if !on {
            return false;
        }
        self.deferred = Some(Box::default());
        true
    }

    /// Lends what was gathered since [`Socket::defer`], and makes writes
    /// again.
    pub fn lend_deferred(&mut self) {
        let Some(gathered) = self.deferred.take() else {
            return;
        };
        if gathered.is_empty() {
            return;
        }
        if let Err(back) = self.lend(Bytes::from(*gathered)) {
            // Not expected after a successful `defer` in the same turn; if it
            // happens, the bytes are written first, at the latest at the flush.
            self.left = Some(Box::new(back));
        }
    }

    /// Whether nothing lent is outstanding, taking note of a hand-over that
    /// was written whole (and letting go of its state: a connection calls it
    /// when it goes idle); one still queued, or one that left bytes or
    /// failed, is left for [`Socket::poll_settled`].
    pub fn settle_now(&mut self) -> bool {
        if let Some(lent) = &self.lent {
            if !lent.is_sent() {
                return false;
            }
            self.lent = None;
        }
        self.left.is_none()
    }

    /// Moves a hand-over on without waiting for it: notes one written whole,
    /// writes what one left as far as the socket takes it now (registering
    /// for write readiness otherwise), and registers the task to be woken if
    /// the writer leaves bytes or fails. Write errors are left for
    /// [`Socket::poll_settled`]. Reads and flushes call it, so a connection
    /// that only reads after its last write (an HTTP/1 connection waiting
    /// for its next request, HTTP/2 waiting for frames) still finishes a
    /// hand-over that met a full socket.
    fn progress(&mut self, cx: &mut Context<'_>) {
        if let Some(lent) = &self.lent {
            let Poll::Ready(rest) = lent.poll_written(cx) else {
                return;
            };
            self.lent = None;
            if let Some(rest) = rest {
                self.left = Some(Box::new(rest));
            }
        }
        // Pending leaves the task registered for write readiness; an error
        // leaves the bytes, and the next settle meets it again.
        let _ = self.poll_write_left(cx);
    }

    /// Writes what a hand-over left: Ready(Ok) when none is left.
    fn poll_write_left(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(left) = self.left.as_mut() {
            if left.is_empty() {
                self.left = None;
                break;
            }
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            match try_send(&self.stream, &[IoSlice::new(left)], false) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => left.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Ready when nothing lent is outstanding: the hand-over was written, and
    /// what it left, if anything, has been written here. `wake_on_sent`: be
    /// woken when the writer wrote all of it too (a backend request waits for
    /// its answer instead, which tells the same).
    /// Errors: the writer's write failed, or writing the rest did.
    pub fn poll_settled(
        &mut self,
        cx: &mut Context<'_>,
        wake_on_sent: bool,
    ) -> Poll<io::Result<()>> {
        if let Some(lent) = &self.lent {
            let outcome = std::task::ready!(lent.poll_settled(cx, wake_on_sent));
            self.lent = None;
            match outcome {
                Outcome::Sent => {}
                Outcome::Left(rest) => self.left = Some(Box::new(rest)),
                Outcome::Failed(e) => return Poll::Ready(Err(e)),
            }
        }
        self.poll_write_left(cx)
    }
}

impl AsyncRead for Socket {
    /// Reads as a `TcpStream` does, after moving a hand-over on
    /// ([`Socket::progress`]), with one difference: a read that got fewer
    /// bytes than it had room for found the socket's receive queue empty, so
    /// the socket is marked not readable, and the next read waits for the
    /// next readiness event instead of trying a `recvfrom` that would return
    /// EAGAIN (nginx's rule: `ngx_unix_recv` clears `rev->ready` after a short
    /// read). Data arriving after the read raises a new edge-triggered epoll
    /// event, which the runtime sees at its next poll: nothing is missed.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.lent.is_some() || self.left.is_some() {
            self.progress(cx);
        }
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            let room = buf.remaining();
            if room == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut got = 0;
            // `try_io` clears the readiness when its closure says WouldBlock:
            // it says so after a short read, with the bytes already in `buf`.
            let read = self.stream.try_io(tokio::io::Interest::READABLE, || {
                got = self.stream.try_read_buf(buf)?;
                if got > 0 && got < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Writes what the socket takes without waiting, as `TcpStream::try_write`
/// and `try_write_vectored` do: WouldBlock clears the stream's write
/// readiness. `more`: with `MSG_MORE` (send(2)), what does not fill a segment
/// waits for the next write without it, or the shutdown.
///
/// On Linux the system call is made directly (rustix's `linux_raw` backend:
/// `sendto` for one slice, `sendmsg` for several, both with `MSG_NOSIGNAL`)
/// instead of through glibc's `send` and `writev`. In a process with more
/// than one thread, glibc brackets each of those with its thread-cancellation
/// bookkeeping (`__pthread_enable_asynccancel` and `..._disable_...`): two
/// locked instructions and about 40 others a call, for a cancellation this
/// program never asks for. nginx's worker, single-threaded, pays none of it.
/// Reads still go through the runtime (`TcpStream::try_read_buf`): a direct
/// `recv` would need the read buffer's spare room marked initialised, which
/// takes `unsafe`.
fn try_send(stream: &TcpStream, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use rustix::net::{SendAncillaryBuffer, SendFlags};
        let flags = if more {
            SendFlags::NOSIGNAL | SendFlags::MORE
        } else {
            SendFlags::NOSIGNAL
        };
        stream.try_io(tokio::io::Interest::WRITABLE, || {
            match bufs {
                [one] => rustix::net::send(stream, one, flags),
                // At most `IOV_MAX` (1024 on Linux) slices a call, as std's
                // `writev` takes: more would fail with EMSGSIZE.
                _ => rustix::net::sendmsg(
                    stream,
                    &bufs[..bufs.len().min(1024)],
                    &mut SendAncillaryBuffer::default(),
                    flags,
                ),
            }
            .map_err(io::Error::from)
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = more;
        match bufs {
            [one] => stream.try_write(one),
            _ => stream.try_write_vectored(bufs),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write_behind {
            if this
                .deferred
                .as_ref()
                .is_some_and(|g| g.len() >= WRITE_BEHIND_MAX)
            {
                std::task::ready!(this.poll_lend_gathered(cx))?;
            }
            let gathered = this.deferred.get_or_insert_with(Box::default);
            let mut n = 0;
            for b in bufs {
                gathered.extend_from_slice(b);
                n += b.len();
            }
            return Poll::Ready(Ok(n));
        }
        std::task::ready!(this.poll_settled(cx, true))?;
        if let Some(gathered) = this.deferred.as_mut() {
            let mut n = 0;
            for b in bufs {
                gathered.extend_from_slice(b);
                n += b.len();
            }
            return Poll::Ready(Ok(n));
        }
        loop {
            std::task::ready!(this.stream.poll_write_ready(cx))?;
            match try_send(&this.stream, bufs, this.more) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Write-behind: does not wait for a hand-over, which the writer task
    /// makes within the same turn of the scheduler; a later write or the
    /// shutdown waits for it. In write-behind mode, lends what gathered;
    /// bytes a refused hand-over left here are written.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_behind {
            std::task::ready!(self.poll_lend_gathered(cx))?;
        }
        if self.lent.is_some() || self.left.is_some() {
            self.progress(cx);
        }
        if !self.write_behind && self.lent.is_none() && self.left.is_some() {
            return self.poll_settled(cx, true);
        }
        Poll::Ready(Ok(()))
    }

    /// Settles, then shuts the write side. (The stream is shared only while
    /// a hand-over is queued; if it still were, the write side would close
    /// when the last holder drops it.)
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_lend_gathered(cx))?;
        std::task::ready!(this.poll_settled(cx, true))?;
        match Arc::get_mut(&mut this.stream) {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Socket, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (Socket::new(a.expect("connect")), b.expect("accept").0)
    }

    async fn settled(s: &mut Socket) -> io::Result<()> {
        poll_fn(|cx| s.poll_settled(cx, true)).await
    }

    /// A vectored write of more slices than `IOV_MAX` writes a part, as
    /// `writev` does, instead of failing; a single slice and none work too.
    #[tokio::test]
    async fn direct_writes_take_any_number_of_slices() {
        let (a, mut b) = pair().await;
        let s = &a.stream;
        let data = vec![b'x'; 3000];
        let slices: Vec<IoSlice<'_>> = data.chunks(1).map(IoSlice::new).collect();
        poll_fn(|cx| s.poll_write_ready(cx)).await.expect("ready");
        let n = try_send(s, &slices, false).expect("a part is written");
        assert!(n > 0 && n <= 1024, "{n}");
        assert_eq!(try_send(s, &[], false).expect("nothing"), 0);
        let m = try_send(s, &[IoSlice::new(b"end")], true).expect("one");
        assert_eq!(m, 3);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), n + 3);
        assert!(got.ends_with(b"end"));
    }

    #[tokio::test]
    async fn lent_and_deferred_writes_arrive_in_order_before_later_writes() {
        start();
        let (mut a, mut b) = pair().await;
        a.lend(Bytes::from_static(b"first "))
            .expect("batching is on");
        // One hand-over at a time: a second is refused while one is out.
        assert!(a.lend(Bytes::from_static(b"x")).is_err());
        assert!(!a.defer());
        // A write of its own waits for the hand-over, then follows it.
        a.write_all(b"second ").await.expect("write");
        // Deferred writes (what a TLS layer would write) are lent together.
        assert!(a.defer());
        a.write_all(b"third ").await.expect("write");
        a.write_all(b"fourth").await.expect("write");
        a.lend_deferred();
        settled(&mut a).await.expect("settled");
        let mut got = [0u8; 25];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"first second third fourth");
    }

    #[tokio::test]
    async fn write_behind_lends_at_each_flush_and_keeps_large_writes_bounded() {
        start();
        let (mut a, mut b) = pair().await;
        a.write_behind();
        a.write_all(b"frame one, ").await.expect("write");
        a.write_all(b"frame two").await.expect("write");
        assert!(a.lent.is_none(), "nothing lent before the flush");
        a.flush().await.expect("flush");
        assert!(a.lent.is_some(), "lent at the flush");
        // 1 MiB in one write call sequence: never more than the cap gathered.
        let chunk = vec![5u8; 16 * 1024];
        for _ in 0..64 {
            a.write_all(&chunk).await.expect("write");
            assert!(a.deferred.as_ref().map_or(0, |g| g.len()) <= WRITE_BEHIND_MAX + chunk.len());
        }
        a.shutdown().await.expect("shutdown");
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.expect("read");
        assert_eq!(&all[..20], b"frame one, frame two");
        assert_eq!(all.len(), 20 + 64 * chunk.len());
        assert!(all[20..].iter().all(|&x| x == 5));
    }

    #[tokio::test]
    async fn a_hand_over_that_meets_a_full_socket_is_finished_by_its_connection() {
        start();
        let (mut a, mut b) = pair().await;
        // 16 MiB cannot fit an unread socket: the writer writes part and
        // gives back the rest, which the connection writes when it settles.
        let big = Bytes::from(vec![7u8; 16 * 1024 * 1024]);
        a.lend(big.clone()).expect("batching is on");
        let reader = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.expect("read");
            all
        });
        settled(&mut a).await.expect("settled");
        a.write_all(b"end").await.expect("write");
        a.shutdown().await.expect("shutdown");
        let all = reader.await.expect("reader");
        assert_eq!(all.len(), big.len() + 3);
        assert!(all[..big.len()].iter().all(|&x| x == 7));
        assert_eq!(&all[big.len()..], b"end");
    }

    #[tokio::test]
    async fn last_writes_arrive_whole_and_are_followed_by_the_fin() {
        start();
        let (mut a, mut b) = pair().await;
        a.last_writes();
        // A partial segment, a write larger than many segments, and a
        // gathering write: all made with `MSG_MORE`, all sent by the shutdown.
        let big = vec![9u8; 100 * 1024];
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(10), b.read_to_end(&mut all))
                    .await;
            read.expect("the held bytes and the FIN came")
                .expect("read");
            all
        });
        a.write_all(b"head ").await.expect("write");
        a.write_all(&big).await.expect("write");
        let n = a
            .write_vectored(&[IoSlice::new(b" tail"), IoSlice::new(b"!")])
            .await
            .expect("write");
        assert_eq!(n, 6);
        a.shutdown().await.expect("shutdown");
        let all = reader.await.expect("reader");
        assert_eq!(&all[..5], b"head ");
        assert!(all[5..5 + big.len()].iter().all(|&x| x == 9));
        assert_eq!(&all[5 + big.len()..], b" tail!");
    }

    #[tokio::test]
    async fn a_hand_over_dropped_before_the_writer_ran_is_not_written() {
        start();
        let (mut a, mut b) = pair().await;
        a.lend(Bytes::from_static(b"abandoned"))
            .expect("batching is on");
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert!(got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn a_client_socket_dropped_with_a_queued_answer_still_sends_it() {
        start();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        let mut a = Socket::for_client(a.expect("connect"));
        let mut b = b.expect("accept").0;
        a.lend(Bytes::from_static(b"the last answer"))
            .expect("batching is on");
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"the last answer");
    }

    #[tokio::test]
    async fn a_write_to_a_reset_connection_fails() {
        start();
        let (mut a, b) = pair().await;
        b.set_zero_linger().expect("linger");
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut failed = false;
        // The first write may still be accepted; the one after the reset fails.
        for _ in 0..3 {
            a.lend(Bytes::from_static(b"hello"))
                .expect("batching is on");
            if settled(&mut a).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(failed, "writes to a reset connection kept succeeding");
    }

    #[tokio::test]
    async fn a_lone_writer_writes_itself_for_a_while() {
        start();
        let (mut a, mut b) = pair().await;
        // One connection, each write alone in its batch.
        for _ in 0..WINDOW {
            a.lend(Bytes::from_static(b"x")).expect("taken");
            settled(&mut a).await.expect("settled");
        }
        // Nothing to make together: refused for a spell (a refused `defer`
        // counts as one), then taken again.
        assert!(!a.defer(), "no gathering while refused");
        for _ in 1..DIRECT_SPELL {
            assert!(a.lend(Bytes::from_static(b"y")).is_err());
        }
        a.lend(Bytes::from_static(b"z")).expect("taken again");
        settled(&mut a).await.expect("settled");
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), WINDOW as usize + 1);
    }

    /// A connection that only reads after its last hand-over (HTTP/1 waiting
    /// for the next request, HTTP/2 waiting for frames) still writes what the
    /// writer left when the socket was full: its reads move the hand-over on.
    async fn rest_goes_out_while_the_connection_reads(mut a: Socket, mut b: TcpStream, len: usize) {
        let reader = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut all = vec![0u8; len];
            let got =
                tokio::time::timeout(std::time::Duration::from_secs(10), b.read_exact(&mut all))
                    .await;
            assert!(got.is_ok(), "the rest of the hand-over never came");
            got.expect("in time").expect("read");
            b.write_all(b"next").await.expect("write");
            all
        });
        // Only reads from here on, as a connection waiting for its peer.
        let mut next = [0u8; 4];
        a.read_exact(&mut next).await.expect("read");
        assert_eq!(&next, b"next");
        let all = reader.await.expect("reader");
        assert!(all.iter().all(|&x| x == 7));
    }

    /// A connected pair whose buffers hold a few KiB only: a hand-over of
    /// 24 KiB meets a full socket.
    async fn small_pair() -> (Socket, TcpStream) {
        let ls = tokio::net::TcpSocket::new_v4().expect("socket");
        ls.set_recv_buffer_size(4096).expect("rcvbuf");
        ls.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let l = ls.listen(1).expect("listen");
        let addr = l.local_addr().expect("addr");
        let cs = tokio::net::TcpSocket::new_v4().expect("socket");
        cs.set_send_buffer_size(4096).expect("sndbuf");
        let (a, b) = tokio::join!(cs.connect(addr), l.accept());
        (Socket::new(a.expect("connect")), b.expect("accept").0)
    }

    const SMALL_PAIR_OVERFLOW: usize = 24 * 1024;

    #[tokio::test]
    async fn a_lent_answer_meeting_a_full_socket_is_finished_while_reading() {
        start();
        let (mut a, b) = small_pair().await;
        a.lend(Bytes::from(vec![7u8; SMALL_PAIR_OVERFLOW]))
            .expect("batching is on");
        a.flush().await.expect("flush");
        rest_goes_out_while_the_connection_reads(a, b, SMALL_PAIR_OVERFLOW).await;
    }

    #[tokio::test]
    async fn write_behind_frames_meeting_a_full_socket_are_finished_while_reading() {
        start();
        let (mut a, b) = small_pair().await;
        a.write_behind();
        // Frames under the gathering cap: all lent at the flush, at once.
        for _ in 0..SMALL_PAIR_OVERFLOW / 1024 {
            a.write_all(&[7u8; 1024]).await.expect("write");
        }
        a.flush().await.expect("flush");
        assert!(a.lent.is_some() || a.left.is_some(), "lent at the flush");
        rest_goes_out_while_the_connection_reads(a, b, SMALL_PAIR_OVERFLOW).await;
    }

    /// Reads after a short read wait for the next readiness event, and miss
    /// nothing: bytes that come later are read, and a read that filled its
    /// buffer leaves the rest readable at once (no new event will come for
    /// bytes already queued).
    #[tokio::test]
    async fn reads_miss_nothing_after_short_and_full_reads() {
        let (mut a, mut b) = pair().await;
        fn in_time<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
            tokio::time::timeout(std::time::Duration::from_secs(10), f)
        }
        b.write_all(b"abc").await.expect("write");
        let mut buf = [0u8; 64];
        let n = in_time(a.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&buf[..n], b"abc");
        // Short read: the socket is marked not readable; new bytes wake it.
        b.write_all(b"def").await.expect("write");
        let n = in_time(a.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&buf[..n], b"def");
        // A full read keeps it readable: the second half comes without a
        // new event.
        b.write_all(b"12345678").await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut half = [0u8; 4];
        in_time(a.read_exact(&mut half))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&half, b"1234");
        in_time(a.read_exact(&mut half))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&half, b"5678");
        // The end of the stream is seen after a short read too.
        b.write_all(b"x").await.expect("write");
        drop(b);
        let mut rest = Vec::new();
        in_time(a.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(rest, b"x");
    }

    #[test]
    fn without_a_writer_the_bytes_come_back() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            start(); // multi-threaded: does nothing
            let (mut a, _b) = pair().await;
            assert!(a.lend(Bytes::from_static(b"x")).is_err());
            assert!(!a.defer());
        });
    }
}
