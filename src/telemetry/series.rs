//! In-process time series: for each (metric, scope) a current 10-second bucket
//! of atomics (recording never takes a lock, and on a thread with a slot of
//! its own no locked instruction: `sharded.rs`) and two bounded rings of finished
//! buckets — 60 × 10 s (the last 10 minutes) and 1440 × 1 min (the last 24 h).
//! Memory is bounded by the number of series, which the config bounds; the
//! day ring's room grows as it fills.

use super::sharded::{Slot, Slots};
use prometheus_client::metrics::counter::Atomic;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Fine grain.
pub const FINE: Duration = Duration::from_secs(10);
/// Coarse grain.
pub const COARSE: Duration = Duration::from_secs(60);
/// Fine points kept (10 minutes).
pub const FINE_POINTS: usize = 60;
/// Coarse points kept (24 hours).
pub const COARSE_POINTS: usize = 1440;

/// Values are stored as fixed-point millionths so buckets can be atomics.
const SCALE: f64 = 1_000_000.0;

/// One aggregated interval (Azure's statistics: Average, Minimum, Maximum, Total, Count).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// Start of the interval, seconds since the Unix epoch.
    pub time: u64,
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Point {
    /// sum / count (0 when empty).
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    fn merge(&mut self, o: &Point) {
        // A take can fall between a record's count and its sum: that sum then
        // comes with the next take, in a point whose count may be 0. It still
        // adds up; only the extremes of an empty point mean nothing.
        self.sum += o.sum;
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = o.min;
            self.max = o.max;
        } else {
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.count += o.count;
    }
}

/// The bucket being filled. Count and sum grow for the series' life, in a
/// slot per recording thread (`sharded.rs`: no locked instruction a record);
/// the bucket is what they gained since the last [`Current::take`].
struct Current {
    count: Slots,
    sum: Slots,
    /// `count` and `sum` as the last take found them.
    count_taken: AtomicU64,
    sum_taken: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

/// What a total that only grows gained since `taken` last recorded one:
/// `fetch_max`, so of two takes at once the later total counts once.
fn gained(total: u64, taken: &AtomicU64) -> u64 {
    total.saturating_sub(taken.fetch_max(total, Ordering::Relaxed))
}

impl Current {
    fn new() -> Current {
        Current {
            count: Slots::default(),
            sum: Slots::default(),
            count_taken: AtomicU64::new(0),
            sum_taken: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    fn take(&self, time: u64) -> Point {
        let count = gained(self.count.get(), &self.count_taken);
        let sum = gained(self.sum.get(), &self.sum_taken) as f64 / SCALE;
        let min = self.min.swap(u64::MAX, Ordering::Relaxed);
        let max = self.max.swap(0, Ordering::Relaxed) as f64 / SCALE;
        Point {
            time,
            count,
            sum,
            min: if count == 0 { 0.0 } else { min as f64 / SCALE },
            max,
        }
    }

    fn peek(&self, time: u64) -> Point {
        let since =
            |total: u64, taken: &AtomicU64| total.saturating_sub(taken.load(Ordering::Relaxed));
        let count = since(self.count.get(), &self.count_taken);
        let min = self.min.load(Ordering::Relaxed);
        Point {
            time,
            count,
            sum: since(self.sum.get(), &self.sum_taken) as f64 / SCALE,
            min: if count == 0 { 0.0 } else { min as f64 / SCALE },
            max: self.max.load(Ordering::Relaxed) as f64 / SCALE,
        }
    }
}

struct Rings {
    fine: VecDeque<Point>,
    coarse: VecDeque<Point>,
    minute: Option<Point>,
}

/// One series.
pub struct Series {
    current: Current,
    current_start: AtomicU64,
    rings: Mutex<Rings>,
}

/// Appends a finished minute to `coarse`, dropping the oldest past
/// [`COARSE_POINTS`]; the ring's room doubles as it fills, up to exactly
/// `COARSE_POINTS` (40 bytes each, 56 KiB), never beyond.
fn push_coarse(coarse: &mut VecDeque<Point>, p: Point) {
    if coarse.len() == COARSE_POINTS {
        coarse.pop_front();
    } else if coarse.len() == coarse.capacity() {
        let more = coarse.len().max(8).min(COARSE_POINTS - coarse.len());
        coarse.reserve_exact(more);
    }
    coarse.push_back(p);
}

impl Series {
    fn new(now: u64) -> Series {
        Series {
            current: Current::new(),
            current_start: AtomicU64::new(now - now % FINE.as_secs()),
            rings: Mutex::new(Rings {
                fine: VecDeque::with_capacity(FINE_POINTS),
                // Grown as minutes pass (`push_coarse`), not 56 KiB at once: a
                // series a fault creates (the first 5xx of a scope) would
                // otherwise take a block that stays empty for hours, in the
                // middle of the request path's memory (docs/benchmarks.md §5).
                coarse: VecDeque::new(),
                minute: None,
            }),
        }
    }

    /// Records one value (negative values count as 0).
    ///
    /// The minimum and maximum are updated only when `v` is a new one, which a
    /// plain load tells: an atomic `fetch_min`/`fetch_max` is a locked
    /// compare-and-swap (about 4.3 ns on the benchmark VM, docs/benchmarks.md
    /// section 2) and most values are neither, while a series of ones
    /// (`requests`, `http_2xx`) never is after its first.
    pub fn record(&self, v: f64) {
        self.record_in(Slot::current(), v);
    }

    /// [`Series::record`] in `slot` (this thread's, `sharded.rs`).
    pub fn record_in(&self, slot: Slot, v: f64) {
        let x = (v.max(0.0) * SCALE) as u64;
        let c = &self.current;
        c.count.add(slot, 1);
        c.sum.add(slot, x);
        if x < c.min.load(Ordering::Relaxed) {
            c.min.fetch_min(x, Ordering::Relaxed);
        }
        if x > c.max.load(Ordering::Relaxed) {
            c.max.fetch_max(x, Ordering::Relaxed);
        }
    }

    fn roll(&self, now: u64) {
        let start = self
            .current_start
            .swap(now - now % FINE.as_secs(), Ordering::Relaxed);
        let p = self.current.take(start);
        let Ok(mut r) = self.rings.lock() else { return };
        if r.fine.len() == FINE_POINTS {
            r.fine.pop_front();
        }
        r.fine.push_back(p);
        let minute_start = start - start % COARSE.as_secs();
        match r.minute.as_mut() {
            Some(m) if m.time == minute_start => m.merge(&p),
            _ => {
                if let Some(done) = r.minute.take() {
                    push_coarse(&mut r.coarse, done);
                }
                let mut m = Point {
                    time: minute_start,
                    count: 0,
                    sum: 0.0,
                    min: 0.0,
                    max: 0.0,
                };
                m.merge(&p);
                r.minute = Some(m);
            }
        }
    }

    /// Points of the last `window` at `grain` (10 s or 1 min), oldest first,
    /// including the interval in progress.
    pub fn points(&self, window: Duration, grain: Duration, now: u64) -> Vec<Point> {
        let since = now.saturating_sub(window.as_secs());
        let live = self
            .current
            .peek(self.current_start.load(Ordering::Relaxed));
        let Ok(r) = self.rings.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Point> = if grain < COARSE {
            let mut v: Vec<Point> = r.fine.iter().copied().collect();
            v.push(live);
            v
        } else {
            let mut v: Vec<Point> = r.coarse.iter().copied().collect();
            let mut m = r.minute.unwrap_or(Point {
                time: live.time - live.time % COARSE.as_secs(),
                count: 0,
                sum: 0.0,
                min: 0.0,
                max: 0.0,
            });
            m.merge(&live);
            v.push(m);
            v
        };
        out.retain(|p| p.time + grain.as_secs() > since);
        out
    }

    /// All values of the last `window` as one point (for alerts).
    pub fn aggregate(&self, window: Duration, now: u64) -> Point {
        let mut total = Point {
            time: now,
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
        };
        let grain = if window <= FINE * FINE_POINTS as u32 {
            FINE
        } else {
            COARSE
        };
        for p in self.points(window, grain, now) {
            total.merge(&p);
        }
        total
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Series of one (metric, scope kind), by scope name.
type ByName = HashMap<String, Arc<Series>>;

/// Every series of the process, by (metric, scope kind) then scope name.
#[derive(Default)]
pub struct SeriesStore {
    map: RwLock<HashMap<(&'static str, &'static str), ByName>>,
}

impl SeriesStore {
    /// The series of `metric` in scope `kind` = `name`, created if new.
    pub fn series(&self, metric: &'static str, kind: &'static str, name: &str) -> Arc<Series> {
        if let Some(s) = self.get(metric, kind, name) {
            return s;
        }
        let mut m = match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry((metric, kind))
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Series::new(now_secs())))
            .clone()
    }

    /// The series if it exists.
    pub fn get(&self, metric: &str, kind: &str, name: &str) -> Option<Arc<Series>> {
        let m = self.map.read().ok()?;
        m.iter()
            .find(|((me, k), _)| *me == metric && *k == kind)
            .and_then(|(_, inner)| inner.get(name).cloned())
    }

    /// Closes the current bucket of every series.
    pub fn roll(&self) {
        let now = now_secs();
        let all: Vec<Arc<Series>> = self
            .map
            .read()
            .map(|m| m.values().flat_map(|i| i.values().cloned()).collect())
            .unwrap_or_default();
        for s in all {
            s.roll(now);
        }
    }

    /// Number of series (memory is bounded by this times the ring sizes).
    pub fn len(&self) -> usize {
        self.map
            .read()
            .map(|m| m.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// True when there is no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_into_bounded_rings() {
        let s = Series::new(1000);
        s.record(1.0);
        s.record(3.0);
        let live = s.points(Duration::from_secs(600), FINE, 1005);
        assert_eq!(live.len(), 1);
        assert_eq!(
            (live[0].count, live[0].sum, live[0].min, live[0].max),
            (2, 4.0, 1.0, 3.0)
        );
        for i in 0..200u64 {
            s.record(i as f64);
            s.roll(1010 + i * 10);
        }
        let r = s.rings.lock().expect("lock");
        assert_eq!(r.fine.len(), FINE_POINTS);
        assert!(r.coarse.len() <= COARSE_POINTS);
        drop(r);
        // A day and more of minutes: the coarse ring grows to its bound, not past it.
        let t = Series::new(0);
        assert_eq!(t.rings.lock().expect("lock").coarse.capacity(), 0);
        for m in 0..(COARSE_POINTS as u64 + 100) {
            t.roll(m * 60);
            let r = t.rings.lock().expect("lock");
            assert!(
                r.coarse.capacity() <= COARSE_POINTS,
                "{}",
                r.coarse.capacity()
            );
            // A minute is pushed once the next one has begun.
            assert_eq!(
                r.coarse.len(),
                (m as usize).saturating_sub(1).min(COARSE_POINTS)
            );
        }
        let agg = s.aggregate(Duration::from_secs(600), 1010 + 200 * 10);
        assert!(agg.count >= 59 && agg.max >= 199.0);
    }

    /// Values recorded from many threads (own slots and the shared one) land
    /// in the bucket being filled, each once, while buckets are taken.
    #[test]
    fn a_bucket_holds_what_every_thread_recorded_since_the_last_take() {
        let s = Series::new(1000);
        let mut taken = Point {
            time: 0,
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
        };
        std::thread::scope(|sc| {
            for _ in 0..24 {
                sc.spawn(|| {
                    for _ in 0..1000 {
                        s.record(0.5);
                    }
                });
            }
            for _ in 0..50 {
                taken.merge(&s.current.take(1000));
            }
        });
        taken.merge(&s.current.take(1000));
        assert_eq!((taken.count, taken.sum), (24_000, 12_000.0));
        let after = s.current.take(1010);
        assert_eq!((after.count, after.sum), (0, 0.0));
        s.record(2.0);
        assert_eq!(s.current.peek(1010).count, 1);
    }
}
