//! The clock of `[gateway].client_send_timeout`: how long an answer has waited
//! for the client without progress, for both client servers (`h1server.rs`: no
//! byte of the queued answer taken by the socket; `h2server.rs`: no piece of
//! the answer handed to `h2` for want of window).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// One answer's wait for the client: since when it has made no progress, and
/// the timer for that wait, made at its first wait (a connection or stream
/// that never waits for its client allocates none).
#[derive(Default)]
pub struct Stall {
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    /// Progress (bytes or a piece left), or a wait that is not the client's
    /// (for the backend): the next wait for the client starts its clock anew.
    pub fn clear(&mut self) {
        self.since = None;
    }

    /// Called while the answer waits for the client: Ready once it has waited
    /// `limit` since the first call after the last [`Stall::clear`] (nginx's
    /// `send_timeout`: the time between two writes that move bytes, not for
    /// the whole answer); Pending with the task's waker registered until then.
    pub fn poll(&mut self, cx: &mut Context<'_>, limit: Duration) -> Poll<()> {
        let until = *self.since.get_or_insert_with(Instant::now) + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if timer.deadline() != until {
            timer.as_mut().reset(until);
        }
        timer.as_mut().poll(cx)
    }
}
