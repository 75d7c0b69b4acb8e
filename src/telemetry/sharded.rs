//! Counters and histograms a thread updates without a locked instruction.
//!
//! Every request added to about a dozen shared metrics: each counter `inc` a
//! `lock xadd`, each histogram `observe` a mutex taken and released
//! (prometheus-client's `Histogram`), each series record two atomic adds. A
//! locked instruction costs about 4.3 ns on the benchmark VM
//! (docs/benchmarks.md section 2), and these were 25 of the 144 a request
//! made in ka64.
//!
//! Here each value has a few slots. Slot 0 is shared and updated with atomic
//! read-modify-writes; each other slot belongs to one thread, the first to
//! record into any value with that slot number ([`Slot::current`]), which updates it
//! with a plain load and store (no `lock` prefix: only it writes there). A
//! thread that finds no slot left uses slot 0. A reader adds the slots up;
//! each only grows, so a counter read twice never goes back. The shape of
//! HAProxy's per-thread counters and Envoy's thread-local histograms, without
//! their periodic merge: a read adds the slots itself.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A prometheus-client counter on [`Slots`].
pub type Counter = prometheus_client::metrics::counter::Counter<u64, Slots>;

/// The next slot number to give a thread (1, 2, ...).
static NEXT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's slot, once it has one ([`Slot::current`]).
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Slots a value has: the shared one, and one each for as many threads as
/// the process may run at once twice over (the runtime's workers and the
/// few others that record), at most 16.
fn slot_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        1 + (2 * cores).min(16)
    })
}

/// A thread's slot number: its own (1..[`slot_count`]) if one was left when
/// it first asked, else 0 (shared). Taken once for the dozen updates of a
/// request ([`Slot::current`]); only the thread it was taken on may use it.
#[derive(Clone, Copy, Debug)]
pub struct Slot(usize);

impl Slot {
    /// This thread's slot.
    pub fn current() -> Slot {
        Slot(SLOT.with(|s| match s.get() {
            Some(i) => i,
            None => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let i = if n < slot_count() { n } else { 0 };
                s.set(Some(i));
                i
            }
        }))
    }
}

/// Adds `v` to `cell`, which is in slot `slot`: a plain load and store in a
/// thread's own slot, an atomic add in the shared one.
fn add(cell: &AtomicU64, slot: usize, v: u64) {
    if slot == 0 {
        cell.fetch_add(v, Ordering::Relaxed);
    } else {
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(v),
            Ordering::Relaxed,
        );
    }
}

/// [`add`] for an `f64` kept as its bits (a histogram's sum): a
/// compare-and-swap loop in the shared slot.
fn add_float(cell: &AtomicU64, slot: usize, v: f64) {
    let plus = |bits: u64| (f64::from_bits(bits) + v).to_bits();
    if slot == 0 {
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(plus(s)));
    } else {
        cell.store(plus(cell.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

/// A `u64` counted in slots, for prometheus-client's `Counter` (its `Atomic`
/// trait).
#[derive(Debug)]
pub struct Slots {
    cells: Box<[AtomicU64]>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            cells: (0..slot_count()).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Slots {
    /// Adds `v` in `slot` (this thread's).
    pub fn add(&self, slot: Slot, v: u64) {
        // Every value has `slot_count` slots; the shared one otherwise.
        match self.cells.get(slot.0) {
            Some(c) => add(c, slot.0, v),
            None => add(&self.cells[0], 0, v),
        }
    }
}

impl prometheus_client::metrics::counter::Atomic<u64> for Slots {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns the total before the add (read before it: not exact while
    /// other threads add).
    fn inc_by(&self, v: u64) -> u64 {
        let before = self.get();
        self.add(Slot::current(), v);
        before
    }

    fn get(&self) -> u64 {
        self.cells
            .iter()
            .fold(0u64, |t, c| t.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// The upper bounds of every seconds histogram: 1 ms doubling to about 65 s
/// (prometheus-client's `exponential_buckets(0.001, 2.0, 17)`, so the `le`
/// labels are written as before), then +Inf.
fn bounds() -> &'static [f64] {
    static BOUNDS: OnceLock<Vec<f64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
            .chain(std::iter::once(f64::INFINITY))
            .collect()
    })
}

/// A histogram of seconds in slots (the buckets of [`bounds`]), encoded as
/// prometheus-client's `Histogram` encodes one. Per slot: a count per bucket,
/// then the sum (`f64` bits). The total count is the buckets' sum, so a read
/// while a thread records never shows a count its buckets do not add up to.
#[derive(Debug, Clone)]
pub struct Histogram {
    cells: Arc<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        let width = bounds().len() + 1;
        Histogram {
            cells: (0..slot_count() * width)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl Histogram {
    /// Records `v` seconds: in the first bucket whose bound is at least `v`
    /// (NaN in +Inf), and in the sum.
    pub fn observe(&self, v: f64) {
        self.observe_in(Slot::current(), v);
    }

    /// [`Histogram::observe`] in `slot` (this thread's).
    pub fn observe_in(&self, slot: Slot, v: f64) {
        let b = bounds();
        let width = b.len() + 1;
        // Every value has `slot_count` slots; the shared one otherwise.
        let i = slot.0;
        let (i, cells) = match self.cells.get(i * width..(i + 1) * width) {
            Some(c) => (i, c),
            None => (0, &self.cells[..width]),
        };
        let bucket = b.iter().position(|u| *u >= v).unwrap_or(b.len() - 1);
        add(&cells[bucket], i, 1);
        add_float(&cells[width - 1], i, v);
    }

    /// The sum, the count and each bucket's own count (not cumulative), over
    /// every slot.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let b = bounds();
        let width = b.len() + 1;
        let mut buckets: Vec<(f64, u64)> = b.iter().map(|u| (*u, 0)).collect();
        let mut sum = 0.0;
        for slot in self.cells.chunks(width) {
            for (acc, c) in buckets.iter_mut().zip(slot) {
                acc.1 += c.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(slot[width - 1].load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    /// The text prometheus-client's own `Histogram` and `Counter` give for the
    /// same observations, from threads with slots of their own and the shared
    /// slot alike.
    #[test]
    fn encoded_as_prometheus_client_encodes_its_own() {
        // Binary fractions: their sums come out the same in any order.
        let values = [0.0, 0.0009765625, 0.001953125, 0.25, 2.0, 3.0, 70.0];
        let ours = Histogram::default();
        let theirs = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
        );
        let (our_counter, their_counter) = (
            Counter::default(),
            prometheus_client::metrics::counter::Counter::<u64>::default(),
        );
        std::thread::scope(|s| {
            for t in 0..40 {
                let (ours, theirs) = (&ours, &theirs);
                let (our_counter, their_counter) = (&our_counter, &their_counter);
                s.spawn(move || {
                    for v in values {
                        ours.observe(v);
                        theirs.observe(v);
                    }
                    our_counter.inc_by(t);
                    their_counter.inc_by(t);
                });
            }
        });
        let text = |h: &dyn Fn(&mut Registry)| {
            let mut r = Registry::default();
            h(&mut r);
            let mut out = String::new();
            encode(&mut out, &r).expect("encodes");
            out
        };
        let a = text(&|r| {
            r.register("t", "h", ours.clone());
            r.register("c", "c", our_counter.clone());
        });
        let b = text(&|r| {
            r.register("t", "h", theirs.clone());
            r.register("c", "c", their_counter.clone());
        });
        assert_eq!(a, b);
        assert!(a.contains("t_count 280"), "{a}");
        // On the bounds, past the last, and NaN (in +Inf), in one order.
        let (ours, theirs) = (
            Histogram::default(),
            prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
            ),
        );
        for v in [0.001, 0.0011, 0.002, 65.536, 100.0, -1.0, f64::NAN] {
            ours.observe(v);
            theirs.observe(v);
        }
        let a = text(&|r| r.register("t", "h", ours.clone()));
        let b = text(&|r| r.register("t", "h", theirs.clone()));
        assert_eq!(a, b);
        let (_, count, buckets) = ours.snapshot();
        assert_eq!(count, 7);
        assert_eq!(buckets.last().map(|b| b.1), Some(2));
    }

    #[test]
    fn threads_past_the_slots_share_slot_zero() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..(3 * slot_count()) {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.inc();
                    }
                });
            }
        });
        assert_eq!(c.get(), 3000 * slot_count() as u64);
    }
}
