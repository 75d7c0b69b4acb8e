//! Request deadlines on reused timers.
//!
//! `tokio::time::timeout_at` makes a new timer for every request: it is put in
//! the runtime's timer wheel when the request first waits and taken out again
//! when the answer comes, about 550 instructions a proxied request (callgrind,
//! docs/benchmarks.md section 2), where the answer nearly always comes long
//! before the deadline. [`timeout_at`] takes a timer that an earlier request
//! on the same thread used. Requests on one thread nearly always have the
//! same timeout, so the timer's deadline (the earlier request's) comes before
//! this one's: it is left as it is, and if it fires first, the wait moves it
//! to its own deadline then and goes on (the connection's idle timer in
//! `h1server.rs` works the same way). A timer armed for a later deadline is
//! moved at once. Behaviour is `timeout_at`'s: the future is polled first, so
//! an answer that is ready wins over a deadline that passed at the same time,
//! and the wait ends at its deadline, never before.
//!
//! A spare timer keeps the waker of the request that used it last: if its
//! deadline passes while it is spare (no request took it since), that task is
//! woken once, for nothing (a poll that finds nothing to do). Spares are kept
//! per thread, at most [`MAX_SPARE`], and only for the runtime that made them.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Most spare timers a thread keeps: as many as
/// the requests that wait on one thread at once, beyond which a request
/// makes its own.
pub const MAX_SPARE: usize = 1024;

/// A thread's spare timers and the runtime they belong to.
struct Spares {
    runtime: Option<Id>,
    timers: Vec<Pin<Box<Sleep>>>,
}

thread_local! {
    static SPARE: RefCell<Spares> = const {
        RefCell::new(Spares {
            runtime: None,
            timers: Vec::new(),
        })
    };
}

/// A timer taken for one wait, given back when dropped.
struct TimerLoan {
    sleep: Option<Pin<Box<Sleep>>>,
    runtime: Option<Id>,
}

impl TimerLoan {
    /// A spare timer of this runtime set to `deadline`, or a new one.
    fn take(deadline: Instant) -> TimerLoan {
        let runtime = Handle::try_current().ok().map(|h| h.id());
        let spare = SPARE
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                if s.runtime != runtime {
                    // Another runtime's timers (a test's, gone): never reuse them.
                    s.timers.clear();
                    s.runtime = runtime;
                }
                s.timers.pop()
            })
            .ok()
            .flatten();
        let sleep = match spare {
            // Armed for a later deadline than this one: it would fire too late.
            Some(mut sleep) if sleep.deadline() > deadline => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            // Armed for this deadline or an earlier one (requests on one
            // thread nearly always have the same timeout, so each deadline
            // is later than the last): if it fires before this deadline,
            // it is moved then, once, rather than on every request.
            Some(sleep) => sleep,
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        TimerLoan {
            sleep: Some(sleep),
            runtime,
        }
    }
}

impl Drop for TimerLoan {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.runtime == self.runtime && s.timers.len() < MAX_SPARE {
                    s.timers.push(sleep);
                }
            }
        });
    }
}

/// Runs `fut` until it finishes or `deadline` passes, whichever comes first
/// (`tokio::time::timeout_at`'s behaviour, on a reused timer).
/// Errors: [`Elapsed`] when the deadline passed first; `fut` is dropped.
///
/// A future of its own ([`Timeout`]) rather than an `async fn`: an `async fn`
/// keeps its argument and, once pinned, a second copy of it in its state, and
/// moves the future from one to the other at the first poll (about 100
/// instructions a proxied request for the backend exchange it wraps).
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        deadline,
        lent: None,
    }
}

pin_project_lite::pin_project! {
    /// The future [`timeout_at`] returns: `Ok` with `fut`'s output, or
    /// `Err(Elapsed)` once the deadline passed first.
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        deadline: Instant,
        // The timer is taken only when the future has to wait.
        lent: Option<TimerLoan>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let deadline = *this.deadline;
        let lent = this.lent.get_or_insert_with(|| TimerLoan::take(deadline));
        let Some(sleep) = lent.sleep.as_mut() else {
            return Poll::Ready(Err(Elapsed));
        };
        loop {
            // `Sleep::poll` spends the task's cooperative budget before it
            // looks at (or first arms) its timer: when the future above used
            // the budget up (an upload whose client and backend are always
            // ready), it would say Pending without looking, poll after poll,
            // and the deadline would wait for the future. So, as tokio's own
            // `timeout_at` does, the timer is polled outside the budget then.
            let fired = if tokio::task::coop::has_budget_remaining() {
                sleep.as_mut().poll(cx)
            } else {
                Pin::new(&mut tokio::task::coop::unconstrained(sleep.as_mut())).poll(cx)
            };
            if fired.is_pending() {
                return Poll::Pending;
            }
            // Fired: at this deadline, or at an earlier one it was armed for.
            if sleep.deadline() >= deadline || Instant::now() >= deadline {
                return Poll::Ready(Err(Elapsed));
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spares() -> usize {
        SPARE.with(|s| s.borrow().timers.len())
    }

    #[tokio::test]
    async fn an_answer_before_the_deadline_is_returned() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = timeout_at(deadline, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        })
        .await;
        assert_eq!(got, Ok(7));
    }

    /// A reused timer whose deadline moved later (the common case: the wheel
    /// keeps the old one) is not cut at the old deadline, and one moved
    /// earlier fires at the earlier one, never before.
    #[tokio::test]
    async fn reused_timers_keep_their_new_deadlines() {
        // Armed 150 ms ahead, then given back.
        let ok = timeout_at(Instant::now() + Duration::from_millis(150), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
        })
        .await;
        assert_eq!(ok, Ok(()));
        assert_eq!(spares(), 1);
        // Reused with a later deadline: a wait past the old one finishes.
        let ok = timeout_at(Instant::now() + Duration::from_secs(30), async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "late but in time"
        })
        .await;
        assert_eq!(ok, Ok("late but in time"));
        // Reused with an earlier deadline than its last: cut there.
        for ms in [300u64, 100] {
            let start = Instant::now();
            let got = timeout_at(
                start + Duration::from_millis(ms),
                std::future::pending::<()>(),
            )
            .await;
            assert_eq!(got, Err(Elapsed));
            assert!(start.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
        assert_eq!(spares(), 1, "one timer served every wait");
    }

    /// A future that spends the task's whole cooperative budget on every poll
    /// (and would finish long after the deadline) is still cut at the deadline.
    #[tokio::test]
    async fn a_future_that_spends_the_budget_is_still_cut_at_its_deadline() {
        let start = Instant::now();
        let busy = async {
            for _ in 0..20_000_000u64 {
                tokio::task::consume_budget().await;
            }
        };
        let got = timeout_at(start + Duration::from_millis(50), busy).await;
        assert_eq!(got, Err(Elapsed));
    }

    #[tokio::test]
    async fn a_ready_future_takes_no_timer() {
        let got = timeout_at(Instant::now(), async { 3 }).await;
        assert_eq!(got, Ok(3));
        assert_eq!(spares(), 0);
    }
}
