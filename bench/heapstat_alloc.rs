// Inserted into a copy of src/main.rs by bench/heapstat.py; never part of the
// product (it needs `unsafe`, which the crate forbids). A global allocator
// over `System` (mimalloc, linked with its `override` feature) that counts the
// live bytes and blocks by size class (powers of two), and remembers where each
// live block of 16 KiB or more was allocated. A thread writes the counts every
// second to $HEAPSTAT_FILE (JSON lines) and, every 30 s, the live big blocks
// grouped by their allocation's stack to $HEAPSTAT_FILE.sites. What the
// profiler itself allocates (stacks, their symbols) is not counted.
#[allow(unsafe_code)]
mod heapstat {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::backtrace::Backtrace;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    pub struct Counting;
    const CLASSES: usize = 28;
    const BIG: usize = 16 * 1024;
    static LIVE: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
    static COUNT: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
    #[allow(clippy::type_complexity)]
    static BIG_BLOCKS: Mutex<Option<HashMap<usize, (usize, Arc<Backtrace>)>>> = Mutex::new(None);
    thread_local! { static INSIDE: Cell<bool> = const { Cell::new(false) }; }

    /// Class i holds sizes in [2^(i-1), 2^i).
    fn class(n: usize) -> usize {
        ((usize::BITS - n.max(1).leading_zeros()) as usize).min(CLASSES - 1)
    }

    fn added(p: *mut u8, n: usize) {
        if INSIDE.with(|c| c.replace(true)) {
            return;
        }
        LIVE[class(n)].fetch_add(n as i64, Relaxed);
        COUNT[class(n)].fetch_add(1, Relaxed);
        if n >= BIG {
            let bt = Arc::new(Backtrace::force_capture());
            if let Ok(mut m) = BIG_BLOCKS.lock() {
                m.get_or_insert_with(HashMap::new).insert(p as usize, (n, bt));
            }
        }
        INSIDE.with(|c| c.set(false));
    }

    fn removed(p: *mut u8, n: usize) {
        if INSIDE.with(|c| c.replace(true)) {
            return;
        }
        LIVE[class(n)].fetch_sub(n as i64, Relaxed);
        COUNT[class(n)].fetch_sub(1, Relaxed);
        if n >= BIG {
            let gone = BIG_BLOCKS.lock().ok().and_then(|mut m| m.as_mut()?.remove(&(p as usize)));
            drop(gone);
        }
        INSIDE.with(|c| c.set(false));
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                added(p, l.size());
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            removed(p, l.size());
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(l) };
            if !p.is_null() {
                added(p, l.size());
            }
            p
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            // Forgotten before the allocator may hand `p` to another thread.
            removed(p, l.size());
            let q = unsafe { System.realloc(p, l, n) };
            if q.is_null() {
                added(p, l.size());
            } else {
                added(q, n);
            }
            q
        }
    }

    pub fn start() {
        let Ok(path) = std::env::var("HEAPSTAT_FILE") else { return };
        std::thread::spawn(move || {
            use std::io::Write;
            INSIDE.with(|c| c.set(true));
            let (Ok(mut f), Ok(mut g)) = (std::fs::File::create(&path), std::fs::File::create(format!("{path}.sites"))) else {
                return;
            };
            let t0 = std::time::Instant::now();
            for n in 1u64.. {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let live: Vec<i64> = LIVE.iter().map(|a| a.load(Relaxed)).collect();
                let count: Vec<i64> = COUNT.iter().map(|a| a.load(Relaxed)).collect();
                let t = t0.elapsed().as_secs_f64();
                let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                let _ = writeln!(f, "{{\"t\":{t:.1},\"unix\":{unix:.1},\"live\":{live:?},\"count\":{count:?}}}");
                if n % 30 != 0 {
                    continue;
                }
                // Symbolized after the lock is let go: the gateway's threads wait for it.
                let held: Vec<(usize, Arc<Backtrace>)> = match BIG_BLOCKS.lock() {
                    Ok(m) => m.as_ref().map(|m| m.values().cloned().collect()).unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                let stacks: Vec<(usize, String)> = held.iter().map(|(s, bt)| (*s, format!("{bt}"))).collect();
                let mut groups: HashMap<&str, (usize, usize)> = HashMap::new();
                for (size, stack) in &stacks {
                    let e = groups.entry(stack.as_str()).or_default();
                    e.0 += size;
                    e.1 += 1;
                }
                let mut groups: Vec<_> = groups.into_iter().collect();
                groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0));
                let total: usize = stacks.iter().map(|s| s.0).sum();
                let _ = writeln!(g, "=== t={t:.0} unix={unix:.1} blocks={} bytes={total}", stacks.len());
                for (stack, (bytes, blocks)) in groups.iter().take(25) {
                    let _ = writeln!(g, "--- bytes={bytes} blocks={blocks}\n{stack}");
                }
                let (rest, rest_blocks) = groups.iter().skip(25).fold((0, 0), |(b, n), g| (b + g.1 .0, n + g.1 .1));
                if rest_blocks > 0 {
                    let _ = writeln!(g, "--- bytes={rest} blocks={rest_blocks}\n(other stacks)");
                }
            }
        });
    }
}
#[global_allocator]
static HEAPSTAT: heapstat::Counting = heapstat::Counting;
