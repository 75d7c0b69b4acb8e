//! The access-log writer: a bounded channel and one writer thread, so a request
//! never waits on the disk. Records are serialized by the writer in batches (one
//! wake-up per [`BATCH_INTERVAL`] under load), flushed when the channel runs dry,
//! and [`AccessLog::flush`] waits for everything sent before it.

use super::AccessRecord;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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

enum Msg {
    Record(Box<AccessRecord>),
    Flush(oneshot::Sender<()>),
}

/// Capacity of the channel, in records. When full, records are counted in
/// [`AccessLog::dropped`] instead of blocking the request.
const CHANNEL_CAPACITY: usize = 65_536;

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread.
    /// Errors: the file or its folder cannot be created.
    pub fn start(target: &AccessLogTarget) -> io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    tx: None,
                    dropped: Arc::default(),
                })
            }
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(OpenOptions::new().create(true).append(true).open(p)?)
            }
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, BufWriter::with_capacity(64 * 1024, out)))?;
        if let Ok(mut w) = WRITERS.lock() {
            w.push(handle);
        }
        Ok(AccessLog {
            tx: Some(tx),
            dropped: Arc::default(),
        })
    }

    /// Queues one record; never blocks.
    pub fn log(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Msg::Record(Box::new(record))).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every record queued before this call is written and flushed.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Records lost because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

/// How long the writer lets records gather after a batch before it looks again.
/// Under load this turns one thread wake-up per request into one per interval
/// (a wake-up per record costed a context switch on the request path's core);
/// when the log is idle the writer blocks and the first record wakes it.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

fn write_loop(mut rx: mpsc::Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>) {
    let mut line: Vec<u8> = Vec::with_capacity(2048);
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        loop {
            let mut wrote = 0usize;
            while let Some(m) = next.take() {
                match m {
                    Msg::Record(r) => {
                        // Serialized into a plain buffer (inlined writes), then
                        // copied out in one piece.
                        line.clear();
                        if serde_json::to_writer(&mut line, &r).is_ok() {
                            line.push(b'\n');
                            let _ = out.write_all(&line);
                        }
                        wrote += 1;
                    }
                    Msg::Flush(done) => {
                        let _ = out.flush();
                        let _ = done.send(());
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = out.flush() {
                tracing::warn!("access log write failed: {e}");
            }
            if wrote == 0 {
                break;
            }
            // Let the next records gather without waking this thread for each.
            std::thread::sleep(BATCH_INTERVAL);
            next = rx.try_recv().ok();
            if next.is_none() {
                break;
            }
        }
    }
    let _ = out.flush();
}
