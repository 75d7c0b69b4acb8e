//! What a locked (atomic read-modify-write) instruction costs on this machine,
//! against plain loads and stores doing the same arithmetic (docs/benchmarks.md
//! section 2). Not part of the build:
//!
//!     rustc -O bench/atomic_cost.rs -o /tmp/atomic_cost && taskset -c 1 /tmp/atomic_cost
//!
//! Each call updates four counters the way `telemetry/series.rs` records a
//! value (count, sum, minimum, maximum): "locked" with four atomic
//! read-modify-writes (`fetch_add` twice, `fetch_min`, `fetch_max`: the last
//! two are compare-and-swap loops), "checked" with the minimum and maximum
//! changed only when a plain load says the value is a new one, and "plain"
//! with loads and stores only.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

type Counters = [AtomicU64; 4];

#[inline(never)]
fn locked(c: &Counters, x: u64) {
    c[0].fetch_add(1, Relaxed);
    c[1].fetch_add(x, Relaxed);
    c[2].fetch_min(x, Relaxed);
    c[3].fetch_max(x, Relaxed);
}

#[inline(never)]
fn checked(c: &Counters, x: u64) {
    c[0].fetch_add(1, Relaxed);
    c[1].fetch_add(x, Relaxed);
    if x < c[2].load(Relaxed) {
        c[2].fetch_min(x, Relaxed);
    }
    if x > c[3].load(Relaxed) {
        c[3].fetch_max(x, Relaxed);
    }
}

#[inline(never)]
fn plain(c: &Counters, x: u64) {
    c[0].store(c[0].load(Relaxed) + 1, Relaxed);
    c[1].store(c[1].load(Relaxed) + x, Relaxed);
    if x < c[2].load(Relaxed) {
        c[2].store(x, Relaxed);
    }
    if x > c[3].load(Relaxed) {
        c[3].store(x, Relaxed);
    }
}

fn main() {
    let c: Counters = [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(u64::MAX),
        AtomicU64::new(0),
    ];
    let n = 20_000_000u64;
    let ways: [(&str, fn(&Counters, u64)); 3] =
        [("locked", locked), ("checked", checked), ("plain", plain)];
    for round in 1..=3 {
        for (name, f) in ways {
            let (c, f) = (black_box(&c), black_box(f));
            let t = Instant::now();
            for i in 0..n {
                f(c, black_box(1000 + (i * 7919) % 1000));
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            println!("round {round}: {name:8} {ns:6.2} ns a call");
        }
    }
}
