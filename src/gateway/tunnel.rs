//! Upgraded connections: after a backend's 101 (WebSocket, RFC 6455 §4), the
//! bytes both ways between the client and the backend, and when the gateway
//! ends such a tunnel.
//!
//! A tunnel ends when either side closes it, and the gateway ends it when:
//! - no byte has moved in either direction for `[gateway].tunnel_idle_timeout`
//!   (default 240 s: the 4-minute TCP idle timeout an idle WebSocket meets
//!   behind Azure; HAProxy's `timeout tunnel`);
//! - a write to the client has waited `[gateway].client_send_timeout` without
//!   the client taking a byte (it stopped reading while the backend sends; the
//!   same rule as for answers, `stall.rs`), even if the client still sends;
//! - its backend server leaves the pool and its connections are cut
//!   (`upstream.rs` `Upstream::close_server`: removed, drained, or ejected).
//!
//! Ending it closes both connections. Then the request's access-log record is
//! written (`body.rs` `TunnelRecord`), with the tunnel's life and the bytes
//! that crossed it, as Azure writes a WebSocket's record when it closes.

use super::body::TunnelRecord;
use super::h1server::{OnUpgrade, Rewound};
use super::upstream::Conn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The two limits a tunnel is held to, from the snapshot it was opened under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `[gateway].tunnel_idle_timeout`: no byte either way for this long ends it.
    pub idle: Duration,
    /// `[gateway].client_send_timeout`: a write to the client that waits this
    /// long without progress ends it.
    pub send: Duration,
}

/// Why the gateway ended a tunnel (or that a side did).
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A side closed, or an I/O error.
    Closed,
    /// `Limits::idle` passed with no byte moved.
    Idle,
    /// `Limits::send` passed with a write to the client waiting.
    ClientNotReading,
    /// The backend server was cut from its pool.
    ServerCut,
}

/// Joins an upgraded client connection to its backend connection (bytes the
/// backend sent after its 101 head go first) until a side closes or the gateway
/// ends it (module docs), then writes `record`.
pub async fn tunnel(client: OnUpgrade, backend: Box<Conn>, limits: Limits, record: TunnelRecord) {
    let Some(client) = client.connection().await else {
        // The client's connection ended before its 101 was written.
        record.finish(0, 0, true);
        return;
    };
    let Conn { io, buf, cut, .. } = *backend;
    let activity = Activity::new();
    // Writes the record however the tunnel's task ends, dropped at shutdown too.
    let _record = Ending {
        record: Some(record),
        activity: &activity,
    };
    let mut client = Watched {
        io: client,
        activity: &activity,
        client: true,
    };
    let mut backend = Watched {
        io: Rewound::new(buf.freeze(), io),
        activity: &activity,
        client: false,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    let mut cut = cut.into_notified();
    let end = loop {
        // A write that starts waiting later wakes no one: look again within
        // the send limit at the latest.
        let deadline = (activity.opened + Duration::from_millis(activity.deadline(limits)))
            .min(Instant::now() + limits.send);
        tokio::select! {
            _ = &mut copy => break End::Closed,
            _ = cut.as_mut() => break End::ServerCut,
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(end) = activity.expired(activity.now(), limits) {
                    break end;
                }
            }
        }
    };
    tracing::debug!(?end, "tunnel ended");
}

/// Writes a tunnel's record, with the bytes its [`Activity`] counted, when
/// dropped.
struct Ending<'a> {
    record: Option<TunnelRecord>,
    activity: &'a Activity,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            let a = self.activity;
            r.finish(
                a.to_client.load(Ordering::Relaxed),
                a.from_client.load(Ordering::Relaxed),
                false,
            );
        }
    }
}

/// What both directions of one tunnel have done, in milliseconds since it
/// opened, and the bytes that crossed it (atomics: the copy and the timer run
/// in one task, but the task must be `Send`).
struct Activity {
    opened: Instant,
    /// Bytes written to the client.
    to_client: AtomicU64,
    /// Bytes read from the client.
    from_client: AtomicU64,
    /// When a byte last moved, either way.
    moved: AtomicU64,
    /// When the pending write to the client started waiting, plus one; 0 while
    /// none waits.
    client_waits: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            to_client: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            client_waits: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the tunnel opened.
    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn moved(&self, now: u64) {
        self.moved.store(now, Ordering::Relaxed);
    }

    /// A write to the client took bytes (`progressed`), or must wait.
    fn client_write(&self, now: u64, progressed: bool) {
        if progressed {
            self.client_waits.store(0, Ordering::Relaxed);
        } else if self.client_waits.load(Ordering::Relaxed) == 0 {
            self.client_waits.store(now + 1, Ordering::Relaxed);
        }
    }

    /// The earliest time (ms since opening) a limit can pass, as things stand.
    fn deadline(&self, limits: Limits) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let idle = self
            .moved
            .load(Ordering::Relaxed)
            .saturating_add(ms(limits.idle));
        match self.client_waits.load(Ordering::Relaxed) {
            0 => idle,
            since => idle.min((since - 1).saturating_add(ms(limits.send))),
        }
    }

    /// The limit that has passed at `now` (ms since opening), if one has.
    fn expired(&self, now: u64, limits: Limits) -> Option<End> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let waits = self.client_waits.load(Ordering::Relaxed);
        if waits != 0 && (waits - 1).saturating_add(ms(limits.send)) <= now {
            return Some(End::ClientNotReading);
        }
        let idle_until = self
            .moved
            .load(Ordering::Relaxed)
            .saturating_add(ms(limits.idle));
        (idle_until <= now).then_some(End::Idle)
    }
}

/// One side of a tunnel, noting in its [`Activity`] every byte that moves and,
/// for the client side, every write that has to wait.
struct Watched<'a, I> {
    io: I,
    activity: &'a Activity,
    client: bool,
}

impl<I> Watched<'_, I> {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let now = self.activity.now();
                self.activity.moved(now);
                if self.client {
                    self.activity.client_write(now, true);
                    self.activity
                        .to_client
                        .fetch_add(*n as u64, Ordering::Relaxed);
                }
            }
            Poll::Pending if self.client => self.activity.client_write(self.activity.now(), false),
            _ => {}
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && read > 0 {
            self.activity.moved(self.activity.now());
            if self.client {
                self.activity
                    .from_client
                    .fetch_add(read as u64, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if self.client {
            match r {
                // What was written waits in a buffer (TLS) for the client.
                Poll::Pending => self.activity.client_write(self.activity.now(), false),
                // It left: a flush that waited must not leave the clock running
                // while the backend then sends nothing.
                Poll::Ready(Ok(())) => self.activity.client_write(self.activity.now(), true),
                Poll::Ready(Err(_)) => {}
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(240),
        send: Duration::from_secs(60),
    };

    #[test]
    fn idle_and_send_limits_pass_as_activity_says() {
        let a = Activity::new();
        assert_eq!(a.deadline(LIMITS), 240_000);
        a.moved(100_000);
        assert_eq!(a.expired(100_000, LIMITS), None);
        assert_eq!(a.deadline(LIMITS), 340_000);
        // A write to the client waits: the send limit comes first.
        a.client_write(100_000, false);
        // Waiting again does not restart its clock.
        a.client_write(130_000, false);
        assert_eq!(a.deadline(LIMITS), 160_000);
        assert_eq!(a.expired(159_999, LIMITS), None);
        assert_eq!(a.expired(160_000, LIMITS), Some(End::ClientNotReading));
        // The client took bytes: only the idle limit is left.
        a.client_write(160_000, true);
        assert_eq!(a.deadline(LIMITS), 340_000);
        assert_eq!(a.expired(339_999, LIMITS), None);
        assert_eq!(a.expired(340_000, LIMITS), Some(End::Idle));
    }
}
