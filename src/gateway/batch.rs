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
//! itself. Only plain TCP: TLS writes go through the TLS layer.
//!
//! Contract for callers: bytes lent are written before anything written
//! later, so a connection settles ([`Lent::poll_settled`]) before it writes
//! again or shuts down. What the writer could not write (the socket's buffer
//! was full) comes back in [`Outcome::Left`], to be written by the caller.

use bytes::{Buf, BufMut, Bytes};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What became of lent bytes.
#[derive(Debug)]
pub enum Outcome {
    /// All written.
    Sent,
    /// Not all written (the socket would block): the rest, to be written by
    /// the caller before anything else.
    Left(Bytes),
    /// The write failed (the peer reset or closed the connection).
    Failed(io::Error),
}

/// Where a hand-over stands; shared by the connection and the writer.
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
}

/// Bytes lent to the writer task, until they are settled. Dropping it before
/// then cancels the write.
pub struct Lent(Arc<Mutex<State>>);

impl Drop for Lent {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.lock() {
            if st.outcome.is_none() {
                st.cancelled = true;
            }
        }
    }
}

impl Lent {
    /// Ready with the outcome once the writer has made the write; Pending
    /// while it is queued. `wake_on_sent`: whether the task wants to be woken
    /// when all was written (a task that waits for an answer on the same
    /// socket is woken by the answer and asks only to hear of a rest).
    pub fn poll_settled(&self, cx: &mut Context<'_>, wake_on_sent: bool) -> Poll<Outcome> {
        let Ok(mut st) = self.0.lock() else {
            return Poll::Ready(Outcome::Failed(io::Error::other(
                "write hand-over poisoned",
            )));
        };
        if let Some(done) = st.outcome.take() {
            return Poll::Ready(done);
        }
        st.wake_on_sent = wake_on_sent;
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// What the writer holds of a hand-over.
struct Pending(Arc<Mutex<State>>);

impl Pending {
    fn cancelled(&self) -> bool {
        self.0.lock().map_or(true, |st| st.cancelled)
    }

    fn settle(&self, outcome: Outcome) {
        let waker = match self.0.lock() {
            Ok(mut st) => {
                let wake = st.wake_on_sent || !matches!(outcome, Outcome::Sent);
                st.outcome = Some(outcome);
                if wake {
                    st.waker.take()
                } else {
                    None
                }
            }
            Err(_) => None,
        };
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
        match socket.try_write(&bytes) {
            Ok(0) => return Outcome::Failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Left(bytes),
            Err(e) => return Outcome::Failed(e),
        }
    }
    Outcome::Sent
}

/// A plain TCP stream whose writes can be lent to the writer task. Reads and
/// writes of its own go straight to the socket, as with a `TcpStream`.
#[derive(Debug)]
pub struct Socket(Arc<TcpStream>);

impl Socket {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Socket {
        Socket(Arc::new(stream))
    }

    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.0
    }

    /// Hands `bytes` to the writer task of this thread; gives them back when
    /// there is none (batching is off, or another thread). The caller must
    /// settle the hand-over before it writes to or shuts down the socket.
    pub fn lend(&self, bytes: Bytes) -> Result<Lent, Bytes> {
        QUEUE.with(|q| {
            let Ok(mut q) = q.try_borrow_mut() else {
                return Err(bytes);
            };
            let Some(q) = q.as_mut() else {
                return Err(bytes);
            };
            let state = Arc::new(Mutex::new(State {
                outcome: None,
                waker: None,
                wake_on_sent: false,
                cancelled: false,
            }));
            q.items.push(Item {
                socket: self.0.clone(),
                bytes,
                pending: Pending(state.clone()),
            });
            if let Some(w) = q.writer.take() {
                w.wake();
            }
            Ok(Lent(state))
        })
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            if !buf.has_remaining_mut() {
                return Poll::Ready(Ok(()));
            }
            match self.0.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side. The stream is shared only while a hand-over is
    /// queued, and callers settle before they shut down; if it is still
    /// shared, the write side closes when the last holder drops it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Arc::get_mut(&mut self.0) {
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

    async fn settled(lent: &Lent) -> Outcome {
        poll_fn(|cx| lent.poll_settled(cx, true)).await
    }

    #[tokio::test]
    async fn lent_writes_arrive_in_order_and_a_full_socket_gives_back_the_rest() {
        start();
        let (mut a, mut b) = pair().await;
        // Two hand-overs from one connection are written in order.
        let one = a
            .lend(Bytes::from_static(b"first "))
            .expect("batching is on");
        let two = a
            .lend(Bytes::from_static(b"second"))
            .expect("batching is on");
        assert!(matches!(settled(&one).await, Outcome::Sent));
        assert!(matches!(settled(&two).await, Outcome::Sent));
        let mut got = [0u8; 12];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"first second");

        // A peer that does not read: the socket fills, the writer gives back
        // what it could not write, and the caller's own write finishes it.
        let big = Bytes::from(vec![7u8; 16 * 1024 * 1024]);
        let lent = a.lend(big.clone()).expect("batching is on");
        let Outcome::Left(rest) = settled(&lent).await else {
            panic!("16 MiB fit into an unread socket");
        };
        assert!(!rest.is_empty() && rest.len() < big.len());
        let sent = big.len() - rest.len();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.expect("read");
            all
        });
        a.write_all(&rest).await.expect("write the rest");
        a.shutdown().await.expect("shutdown");
        let all = reader.await.expect("reader");
        assert_eq!(all.len(), big.len());
        assert!(all.iter().all(|&x| x == 7));
        assert!(sent > 0);
    }

    #[tokio::test]
    async fn a_hand_over_let_go_before_the_writer_ran_is_not_written() {
        start();
        let (a, mut b) = pair().await;
        drop(
            a.lend(Bytes::from_static(b"abandoned "))
                .expect("batching is on"),
        );
        let kept = a.lend(Bytes::from_static(b"kept")).expect("batching is on");
        assert!(matches!(settled(&kept).await, Outcome::Sent));
        drop(kept);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"kept");
    }

    #[tokio::test]
    async fn a_write_to_a_reset_connection_fails() {
        start();
        let (a, b) = pair().await;
        b.set_zero_linger().expect("linger");
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut failed = false;
        // The first write may still be accepted; the one after the reset fails.
        for _ in 0..3 {
            let lent = a
                .lend(Bytes::from_static(b"hello"))
                .expect("batching is on");
            if let Outcome::Failed(_) = settled(&lent).await {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(failed, "writes to a reset connection kept succeeding");
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
            let (a, _b) = pair().await;
            assert!(a.lend(Bytes::from_static(b"x")).is_err());
        });
    }
}
