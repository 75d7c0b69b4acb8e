//! Clock readings a request can share.
//!
//! A proxied request read the clock seven times (`clock_gettime` through the
//! vDSO, about 22 ns each on the benchmark VM: 1.1 % of the proxy's CPU in
//! ka64, `perf record`). Two of them told nothing a neighbouring reading did
//! not: the record's wall-clock timestamp, read a moment after the request's
//! monotonic start (it now comes from [`wall_at`]), and the time a backend
//! connection went back to the pool, read just after the response body's end
//! (it now takes the record's reading: `h1client.rs` `BackendBody::ended_at`).

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

thread_local! {
    /// A monotonic reading and the wall clock read just after it.
    static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// How long a wall-clock anchor serves ([`wall_at`]).
const ANCHOR_LIFE: Duration = Duration::from_secs(1);

/// The wall-clock time at `at`, a monotonic reading just made: the wall clock
/// is read once a second per thread, and the monotonic time since that
/// reading is added to it. The two clocks run at the same rate (NTP slews
/// both), so the sum is the wall clock to the nanosecond, unless the wall
/// clock was set (stepped) within the last second: then the old time shows
/// for up to a second. nginx's and HAProxy's logs take their time from a
/// reading cached per turn of their event loops in the same way.
pub fn wall_at(at: Instant) -> SystemTime {
    if let Some((i, s)) = ANCHOR.get() {
        if let Some(d) = at.checked_duration_since(i).filter(|d| *d < ANCHOR_LIFE) {
            return s + d;
        }
    }
    let s = SystemTime::now();
    ANCHOR.set(Some((at, s)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_from_a_monotonic_reading_is_the_wall_clock() {
        for _ in 0..1000 {
            let before = SystemTime::now();
            let got = wall_at(Instant::now());
            let after = SystemTime::now();
            // Within a millisecond of the readings either side (a stepped clock
            // aside, which a test machine's is not).
            let slack = Duration::from_millis(1);
            assert!(got + slack >= before && got <= after + slack);
        }
    }

    #[test]
    fn an_old_anchor_is_replaced() {
        let t = Instant::now();
        let past = SystemTime::UNIX_EPOCH;
        ANCHOR.set(Some((t, past)));
        assert_eq!(
            wall_at(t + Duration::from_millis(5)),
            past + Duration::from_millis(5)
        );
        let later = t + ANCHOR_LIFE;
        assert!(
            wall_at(later) > past + Duration::from_secs(3600),
            "read anew"
        );
        // An instant before the anchor reads the clock too.
        ANCHOR.set(Some((later, past)));
        assert!(wall_at(t) > past + Duration::from_secs(3600));
    }
}
