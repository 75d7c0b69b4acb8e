//! Process figures of an instance from /proc (procfs): the App Service metrics
//! CpuTime, MemoryWorkingSet, Private Bytes, Threads, Handles.

use serde::Serialize;

/// Figures of one process.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size (working set), bytes.
    pub memory_bytes: u64,
    /// Private (anonymous) resident memory, bytes.
    pub private_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors (handles).
    pub handles: u64,
}

/// Reads the figures of `pid`; None when the process is gone.
pub fn figures(pid: u32) -> Option<Figures> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let status = p.status().ok();
    Some(Figures {
        cpu_seconds: ((stat.utime + stat.stime) as f64 / tps * 100.0).round() / 100.0,
        memory_bytes: stat.rss * page,
        private_bytes: status
            .and_then(|s| s.rssanon)
            .map(|kb| kb * 1024)
            .unwrap_or(0),
        threads: stat.num_threads.max(0) as u64,
        handles: p.fd_count().map(|n| n as u64).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let f = super::figures(std::process::id()).expect("own figures");
        assert!(f.memory_bytes > 0 && f.threads >= 1 && f.handles >= 3);
    }
}
