//! The access-log writer: requests append their serialized record (one JSON line)
//! to a shared in-memory buffer, and one writer thread moves that buffer to the
//! file, so a request never waits on the disk.
//!
//! Why this shape: serializing where the record is made keeps its allocations on
//! the thread that made them (freeing them on another thread was measurably
//! slower), and the writer is woken once per batch — when the buffer goes from
//! empty to non-empty — then lets records gather for [`BATCH_INTERVAL`], instead
//! of once per record. The buffer is bounded ([`MAX_BUFFERED`] bytes): past it,
//! records are counted in [`AccessLog::dropped`] (the metric
//! `portcullis_access_log_dropped_records_total`) rather than queued.
//!
//! A log file is written once and seldom read, so the writer does not let it
//! fill the page cache: every [`DROP_BEHIND`] bytes it asks the kernel to write
//! the file back and to drop the pages already written back (`posix_fadvise`
//! `POSIX_FADV_DONTNEED`; see [`FileSink`]). The hosted apps keep their cache, and
//! the log is written into recycled pages instead of ever new ones.
//!
//! The writer thread shares the CPU with the request threads, so while their
//! core has idle moments it makes no long system call: it writes at most
//! [`WRITE_STEP`] bytes (whole lines) and advises [`ADVISE_STEP`] bytes a call,
//! and yields the CPU between calls. On a busy core ([`LONG_YIELD`]), or once
//! the batch's [`STEP_FOR`] is over, it writes and advises the rest in one call.

use super::AccessRecord;
use prometheus_client::metrics::counter::Counter;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Append to this file (folders are created).
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// Nowhere.
    Off,
}

/// Most bytes waiting for the writer (about 16,000 records of 1 KiB).
pub const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// How long the writer lets records gather after it was woken.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes written to a log file between two drop-behinds (1 MiB): the page
/// cache holds at most about twice this much of the log, and a drop-behind
/// advises about that much. Small, because advice holds the CPU for as long as
/// it takes to start write-back of what it covers (on the benchmark VM 8 MiB
/// took 0.8-5 ms, the requests on the same core waiting meanwhile); the
/// advice is given in calls of at most [`ADVISE_STEP`] bytes.
pub const DROP_BEHIND: u64 = 1024 * 1024;

/// Most bytes the writer hands to one `write` (64 KiB, the buffer nginx writes
/// its log with) while it steps, ending at a line's end when one lies in
/// them; [`ADVISE_STEP`] is the most one `posix_fadvise` covers.
///
/// A system call holds its CPU until it returns, and the writer shares the
/// request threads' cores. With a 10 ms batch of about 500 KiB in one `write`
/// (0.16-0.19 ms on the benchmark VM) and a drop-behind over 1.4-2.9 MiB in one
/// call (0.2-0.96 ms), requests on that core waited that long every 10 to 20
/// ms: the p99 of a lightly loaded gateway (`perf sched timehist`;
/// docs/benchmarks.md section 2). In steps, with the CPU yielded between two
/// of them ([`let_others_run`]), a request waits for one step at most.
/// Smaller steps cost more than they save: 16 KiB writes and 64 KiB advice
/// doubled the writer's CPU time, and 256 KiB advice added a fifth to it, for
/// no better p99. Lowering the writer's priority (nice 10) instead of yielding
/// did not help: the scheduler switches threads at a system call's end, not in
/// it.
pub const WRITE_STEP: usize = 64 * 1024;

/// Most bytes one drop-behind `posix_fadvise` call covers while the writer
/// steps (1 MiB, 0.1-0.3 ms); see [`WRITE_STEP`].
pub const ADVISE_STEP: u64 = 1024 * 1024;

/// How long into a batch the writer keeps stepping and yielding at most (one
/// [`BATCH_INTERVAL`]); what is left of the batch's write or advice then goes
/// in one call. The writer also stops stepping when a yield takes longer than
/// [`LONG_YIELD`].
///
/// Yielding needs limits: on a core the request thread keeps busy (a
/// saturated gateway), each yield hands it a whole time slice, one step per
/// slice is slower than records come, and the batches grow without end (side
/// by side at 64 connections, 5 % fewer requests per second and a p99 of
/// 2.4 ms against 1.7). Half an interval was too short for a lightly loaded
/// gateway's batches (p99 0.43 ms against 0.26 with no limit), and one
/// interval alone still cost the saturated one (p99 2.0-2.9 ms).
pub const STEP_FOR: Duration = BATCH_INTERVAL;

/// A yield that took longer than this (200 µs) handed the CPU to a thread
/// with that much work waiting: the core is busy, requests already queue
/// behind one another, and the rest of the batch goes at once ([`STEP_FOR`]).
/// Side by side with the build before steps (six rounds each): at 64
/// connections, the saturated gateway, req/s 1.008 × and p99 1.59 → 1.57 ms;
/// at 4 connections p99 0.437 → 0.366 ms.
pub const LONG_YIELD: Duration = Duration::from_micros(200);

thread_local! {
    /// Until when the writer thread steps and yields in the batch it writes
    /// (`None`: it writes and advises in one call each; threads other than the
    /// writer).
    static STEP_UNTIL: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Between two of the writer's system calls: gives the CPU to any thread
/// waiting for it (`sched_yield`), so a request thread woken meanwhile runs
/// first instead of at the end of the writer's time slice (the scheduler lets
/// a running thread finish its slice before a woken one of the same
/// priority). Costs under a microsecond when nothing waits. Returns whether
/// the writer should go on in steps: false once the batch's [`STEP_FOR`] is
/// over (it does not yield then) or after a yield longer than [`LONG_YIELD`]
/// (then for the rest of the batch).
fn let_others_run() -> bool {
    if !may_step() {
        return false;
    }
    let asked = Instant::now();
    std::thread::yield_now();
    if asked.elapsed() > LONG_YIELD {
        STEP_UNTIL.with(|u| u.set(None));
        return false;
    }
    true
}

/// Whether the writer thread's batch starts in steps (its [`STEP_FOR`] is not
/// over): the first step of a write or an advice, before any yield.
fn may_step() -> bool {
    STEP_UNTIL
        .with(std::cell::Cell::get)
        .is_some_and(|until| Instant::now() < until)
}

/// State shared by the handles and the writer thread.
struct Shared {
    /// Serialized lines not yet written.
    buf: Mutex<Vec<u8>>,
    /// Signals the writer: the buffer became non-empty, a flush was asked, or
    /// the last handle is gone.
    wake: Condvar,
    /// Number of completed flushes (the writer bumps it after each write).
    written: Mutex<u64>,
    /// Signals [`AccessLog::flush`] callers that `written` moved.
    written_cv: Condvar,
    /// Set when the last [`AccessLog`] handle is dropped.
    closed: AtomicBool,
    /// Records lost because the buffer was full (shared with `/metrics`).
    dropped: Counter,
}

impl Shared {
    /// Serializes `record` into `line` (cleared first) and appends it to the
    /// buffer, waking the writer when the buffer was empty; counts it in
    /// `dropped` instead when the buffer holds [`MAX_BUFFERED`] bytes.
    fn queue(&self, line: &mut Vec<u8>, record: &AccessRecord) {
        line.clear();
        super::json::write_record(line, record);
        line.push(b'\n');
        let Ok(mut buf) = self.buf.lock() else { return };
        if buf.len() + line.len() > MAX_BUFFERED {
            self.dropped.inc();
            return;
        }
        let was_empty = buf.is_empty();
        buf.extend_from_slice(line);
        if was_empty {
            self.wake.notify_one();
        }
    }
}

/// Ends the writer when the last handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        let _guard = self.0.buf.lock();
        self.0.wake.notify_all();
    }
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    inner: Option<Arc<Owner>>,
}

thread_local! {
    /// Per-thread scratch buffer for serializing one record.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(2048));
}

impl AccessLog {
    /// Opens `target` and starts the writer thread. Records lost because the
    /// buffer was full are counted in `dropped` (the caller registers it).
    /// Errors: the file or its folder cannot be created.
    pub fn start(target: &AccessLogTarget, dropped: Counter) -> io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(AccessLog { inner: None }),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(FileSink::new(
                    OpenOptions::new().create(true).append(true).open(p)?,
                )?)
            }
        };
        AccessLog::spawn(out, dropped)
    }

    /// Starts the writer thread on `out`.
    fn spawn(out: Box<dyn Write + Send>, dropped: Counter) -> io::Result<AccessLog> {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            wake: Condvar::new(),
            written: Mutex::new(0),
            written_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            dropped,
        });
        let for_writer = shared.clone();
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&for_writer, out))?;
        if let Ok(mut w) = WRITERS.lock() {
            w.push(handle);
        }
        Ok(AccessLog {
            inner: Some(Arc::new(Owner(shared))),
        })
    }

    /// Serializes one record and queues it; never blocks on I/O.
    pub fn log(&self, record: &AccessRecord) {
        let Some(owner) = &self.inner else { return };
        let s = &owner.0;
        // `try_with`: a record may be written as its thread ends, when the
        // thread's line is gone; it is serialized into a line of its own then.
        let queued = LINE.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return false;
            };
            s.queue(&mut line, record);
            true
        });
        if queued != Ok(true) {
            s.queue(&mut Vec::with_capacity(2048), record);
        }
    }

    /// Waits until every record queued before this call is written and flushed.
    pub async fn flush(&self) {
        let Some(owner) = &self.inner else { return };
        let s = owner.0.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let target = s.written.lock().map(|w| *w + 2).unwrap_or(0);
            {
                let _guard = s.buf.lock();
                s.wake.notify_one();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut w = match s.written.lock() {
                Ok(w) => w,
                Err(_) => return,
            };
            // Two completed rounds: the one in progress may have started before
            // our records were queued.
            while *w < target && std::time::Instant::now() < deadline {
                w = match s.written_cv.wait_timeout(w, BATCH_INTERVAL * 5) {
                    Ok((w, _)) => w,
                    Err(_) => return,
                };
                // Keep the writer going while we wait.
                if let Ok(_guard) = s.buf.lock() {
                    s.wake.notify_one();
                }
            }
        })
        .await;
    }

    /// Records lost because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |o| o.0.dropped.get())
    }
}

static WRITERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (at most `limit`) for every writer thread to write its last records and
/// end. A writer ends when every [`AccessLog`] handle is gone, so call this
/// after the runtime (and with it every request task) was dropped: requests cut
/// at shutdown write their records as they are dropped.
pub fn wait_for_writers(limit: std::time::Duration) {
    let handles: Vec<_> = WRITERS
        .lock()
        .map(|mut w| w.drain(..).collect())
        .unwrap_or_default();
    let deadline = std::time::Instant::now() + limit;
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}

/// An append-only log file that keeps little of itself in the page cache.
///
/// Every [`DROP_BEHIND`] bytes, [`FileSink::drop_behind`] advises
/// `posix_fadvise(POSIX_FADV_DONTNEED)` from the end of the drop-behind before
/// the previous one to the end of the file. For dirty pages that advice only
/// starts their write-back (`WB_SYNC_NONE`: it does not wait); clean pages are
/// dropped. So each drop-behind drops what the one before it sent to disk, and
/// the writer never waits for the disk. The same idea as PostgreSQL's
/// `*_flush_after` settings. Advice the kernel refuses is ignored: it changes
/// memory use, never what is written.
pub struct FileSink {
    file: std::fs::File,
    /// Bytes in the file: its length when opened plus what we appended.
    end: u64,
    /// `end` at the last drop-behind call.
    last_call: u64,
    /// `end` at the call before that: pages below it were sent to disk at
    /// least one call ago.
    settled: u64,
}

impl FileSink {
    /// Wraps a file opened for appending.
    /// Errors: its length cannot be read.
    pub fn new(file: std::fs::File) -> io::Result<FileSink> {
        let end = file.metadata()?.len();
        Ok(FileSink {
            file,
            end,
            last_call: end,
            settled: 0,
        })
    }

    /// Starts write-back of the pages written since the last call and drops
    /// those written back since the one before; a no-op until [`DROP_BEHIND`]
    /// bytes were appended since the last call. Returns the byte range advised,
    /// in calls of at most [`ADVISE_STEP`] bytes with the CPU yielded between
    /// while the batch may step ([`let_others_run`]), the rest in one call.
    fn drop_behind(&mut self) -> Option<std::ops::Range<u64>> {
        self.drop_behind_in_steps(may_step(), &mut let_others_run)
    }

    /// [`FileSink::drop_behind`], the first call of at most [`ADVISE_STEP`]
    /// bytes when `stepping`, `next` asked after each call whether the next
    /// is a step too (else it covers the rest).
    fn drop_behind_in_steps(
        &mut self,
        mut stepping: bool,
        next: &mut dyn FnMut() -> bool,
    ) -> Option<std::ops::Range<u64>> {
        if self.end - self.last_call < DROP_BEHIND {
            return None;
        }
        // The range starts at `settled`, not at `last_call`: pages the last
        // call found still under write-back are dropped by this one.
        let from = self.settled;
        let mut at = from;
        while at < self.end {
            let left = self.end - at;
            let step = if stepping {
                ADVISE_STEP.min(left)
            } else {
                left
            };
            if let (Ok(off), Ok(len)) = (i64::try_from(at), i64::try_from(step)) {
                let _ = nix::fcntl::posix_fadvise(
                    &self.file,
                    off,
                    len,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
            }
            at += step;
            if at < self.end {
                stepping = next();
            }
        }
        self.settled = self.last_call;
        self.last_call = self.end;
        Some(from..self.end)
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.end += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.drop_behind();
        self.file.flush()
    }
}

/// Writes `batch` to `out`: when `stepping`, at most [`WRITE_STEP`] bytes a
/// write, each step ending at the last line end within them (a reader of the
/// file sees whole records between two steps) or cut at [`WRITE_STEP`] when
/// there is none; `next` is asked after each write whether the next is a step
/// too (else it writes the rest). Errors: the first write error; what follows
/// it is not written.
fn write_in_steps(
    out: &mut dyn Write,
    batch: &[u8],
    mut stepping: bool,
    next: &mut dyn FnMut() -> bool,
) -> io::Result<()> {
    let mut rest = batch;
    while !rest.is_empty() {
        let n = if stepping && rest.len() > WRITE_STEP {
            memchr::memrchr(b'\n', &rest[..WRITE_STEP]).map_or(WRITE_STEP, |i| i + 1)
        } else {
            rest.len()
        };
        out.write_all(&rest[..n])?;
        rest = &rest[n..];
        if !rest.is_empty() {
            stepping = next();
        }
    }
    Ok(())
}

fn write_loop(s: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        {
            let Ok(mut buf) = s.buf.lock() else { return };
            // Sleep until there is something to write (or we are told to end).
            // A flush wakes us with an empty buffer: we still complete a round.
            if buf.is_empty() && !s.closed.load(Ordering::Acquire) {
                buf = match s.wake.wait_timeout(buf, Duration::from_secs(1)) {
                    Ok((b, _)) => b,
                    Err(_) => return,
                };
            }
            let had = !buf.is_empty();
            drop(buf);
            if had && !s.closed.load(Ordering::Acquire) {
                // Let the next records gather without a wake-up for each.
                std::thread::sleep(BATCH_INTERVAL);
            }
        }
        {
            let Ok(mut buf) = s.buf.lock() else { return };
            std::mem::swap(&mut *buf, &mut batch);
        }
        if !batch.is_empty() {
            STEP_UNTIL.with(|u| u.set(Some(Instant::now() + STEP_FOR)));
            if let Err(e) = write_in_steps(&mut *out, &batch, may_step(), &mut let_others_run)
                .and_then(|()| out.flush())
            {
                tracing::warn!("access log write failed: {e}");
            }
            batch.clear();
            if batch.capacity() > 4 * 1024 * 1024 {
                batch = Vec::with_capacity(64 * 1024);
            }
        }
        if let Ok(mut w) = s.written.lock() {
            *w += 1;
            s.written_cv.notify_all();
        }
        if s.closed.load(Ordering::Acquire) && s.buf.lock().map_or(true, |b| b.is_empty()) {
            let _ = out.flush();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::proxy::test_record as record;

    #[tokio::test]
    async fn records_are_written_in_order_and_flush_waits_for_them() {
        let dir = std::env::temp_dir().join(format!("pc-log-{}", std::process::id()));
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::start(&AccessLogTarget::File(path.clone()), Counter::default())
            .expect("start");
        for i in 0..1000 {
            log.log(&record(&format!("tx-{i}")));
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).expect("read");
        let ids: Vec<crate::accesslog::Text> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<AccessRecord>(l)
                    .expect("record")
                    .properties
                    .transaction_id
            })
            .collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(ids[0], "tx-0");
        assert_eq!(ids[999], "tx-999");
        assert_eq!(log.dropped(), 0);
        // The writer ends when the last handle goes, after writing what is left.
        log.log(&record("last"));
        drop(log);
        wait_for_writers(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.lines().last().is_some_and(|l| l.contains("\"last\"")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A target that takes nothing until it is opened: the disk that does not
    /// keep up.
    struct Stuck {
        open: Arc<(Mutex<bool>, Condvar)>,
        lines: Arc<Mutex<usize>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (m, cv) = &*self.open;
            let mut open = m.lock().map_err(|_| io::Error::other("poisoned"))?;
            while !*open {
                open = cv.wait(open).map_err(|_| io::Error::other("poisoned"))?;
            }
            if let Ok(mut l) = self.lines.lock() {
                *l += buf.iter().filter(|b| **b == b'\n').count();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn records_past_a_full_buffer_are_counted_in_the_metric() {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let lines = Arc::new(Mutex::new(0));
        let counter = Counter::default();
        let out = Stuck {
            open: open.clone(),
            lines: lines.clone(),
        };
        let log = AccessLog::spawn(Box::new(out), counter.clone()).expect("spawn");
        // Long enough that the 16 MiB buffer cannot hold them all.
        let mut r = record("x");
        r.properties.request_uri = "/".repeat(4000).into();
        let total = 6000;
        for _ in 0..total {
            log.log(&r);
        }
        assert!(counter.get() > 0, "nothing was counted");
        assert_eq!(counter.get(), log.dropped());
        {
            let (m, cv) = &*open;
            *m.lock().expect("lock") = true;
            cv.notify_all();
        }
        log.flush().await;
        let written = *lines.lock().expect("lock") as u64;
        // Every record was either written or counted, never both.
        assert_eq!(written + counter.get(), total);
    }

    /// Records the size of every `write` it is given.
    struct Sizes(Vec<usize>, Vec<u8>);

    impl Write for Sizes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.len());
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_is_written_in_steps_of_whole_lines_while_it_may() {
        // Lines of 1,000 bytes: 65 fit in a step.
        let line: Vec<u8> = (0..999)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([b'\n'])
            .collect();
        let batch: Vec<u8> = line.repeat(160);
        let mut out = Sizes(Vec::new(), Vec::new());
        let mut asked = 0;
        write_in_steps(&mut out, &batch, true, &mut || {
            asked += 1;
            true
        })
        .expect("write");
        assert_eq!(out.0, vec![65_000, 65_000, 30_000]);
        assert_eq!(asked, 2);
        assert_eq!(out.1, batch);
        // Told to stop stepping after the first: the rest at once.
        let mut out = Sizes(Vec::new(), Vec::new());
        write_in_steps(&mut out, &batch, true, &mut || false).expect("write");
        assert_eq!(out.0, vec![65_000, 95_000]);
        assert_eq!(out.1, batch);
        // Not stepping: one write.
        let mut out = Sizes(Vec::new(), Vec::new());
        write_in_steps(&mut out, &batch, false, &mut || true).expect("write");
        assert_eq!(out.0, vec![160_000]);
        // A line longer than a step is cut at the step's size.
        let long = vec![b'x'; WRITE_STEP * 3 / 2];
        let mut out = Sizes(Vec::new(), Vec::new());
        write_in_steps(&mut out, &long, true, &mut || true).expect("write");
        assert_eq!(out.0, vec![WRITE_STEP, WRITE_STEP / 2]);
        assert_eq!(out.1, long);
        let mut out = Sizes(Vec::new(), Vec::new());
        write_in_steps(&mut out, &[], true, &mut || true).expect("write");
        assert!(out.0.is_empty());
    }

    /// Outside the writer's batch (no [`STEP_UNTIL`]) nothing steps or yields.
    #[test]
    fn only_the_writers_batch_steps() {
        assert!(!may_step());
        assert!(!let_others_run());
        STEP_UNTIL.with(|u| u.set(Some(Instant::now())));
        assert!(!may_step());
        assert!(!let_others_run());
        STEP_UNTIL.with(|u| u.set(None));
    }

    #[test]
    fn drop_behind_advises_every_byte_twice_and_keeps_the_content() {
        let dir = std::env::temp_dir().join(format!("pc-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("access.log");
        std::fs::write(&path, b"old\n").expect("seed");
        let file = OpenOptions::new().append(true).open(&path).expect("open");
        let mut sink = FileSink::new(file).expect("sink");
        let chunk = vec![b'x'; 1024 * 1024];
        let mut ranges = Vec::new();
        for _ in 0..40 {
            sink.write_all(&chunk).expect("write");
            if let Some(r) = sink.drop_behind() {
                ranges.push(r);
            }
        }
        // In steps: one call per ADVISE_STEP bytes of the range, `next` asked
        // between two calls.
        sink.write_all(&chunk).expect("write");
        let mut asked = 0;
        let r = sink
            .drop_behind_in_steps(true, &mut || {
                asked += 1;
                true
            })
            .expect("due");
        assert_eq!(asked, (r.end - r.start).div_ceil(ADVISE_STEP) - 1);
        assert!(asked >= 1);
        ranges.push(r);
        let total = 4 + 41 * 1024 * 1024;
        assert_eq!(sink.end, total);
        // One call per DROP_BEHIND bytes; the first covers the old content too.
        assert_eq!(ranges.len() as u64, 41 * 1024 * 1024 / DROP_BEHIND);
        assert_eq!(ranges[0].start, 0);
        // Each call reaches back to where the call before the last one ended, so
        // a page still being written back at one call is dropped by the next.
        for w in ranges.windows(3) {
            assert_eq!(w[2].start, w[0].end);
        }
        // The second reaches back to the length the file had when opened.
        assert_eq!(ranges[1].start, 4);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), total);
        let head = std::fs::read(&path).expect("read");
        assert_eq!(&head[..5], b"old\nx");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
