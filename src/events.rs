//! The activity log: what happened to the system (probe transitions, ejections,
//! instance exits, restarts, reloads…), newest last. Kept in memory (the last
//! [`MEMORY_EVENTS`]) and appended as JSON lines to `<state_dir>/events.jsonl`
//! so it survives a restart. The file is rotated at [`MAX_FILE_BYTES`]: it
//! becomes `events.jsonl.1` (replacing the previous one) and a new file starts,
//! so the disk holds at most about twice that. Served by `GET /api/events` and
//! `portcullis events`.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Events kept in memory.
pub const MEMORY_EVENTS: usize = 10_000;

/// Size at which `events.jsonl` is rotated to `events.jsonl.1` (bytes).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

fn rotated(f: &Path) -> PathBuf {
    let mut name = f.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// One activity-log entry (section 6: `{"time","kind","subject","message"}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// RFC 3339 time.
    pub time: String,
    /// `health`, `instance`, `app`, `reload`, …
    pub kind: String,
    /// What it is about, e.g. `pool/settings/127.0.0.1:8080`.
    pub subject: String,
    /// What happened, in one sentence.
    pub message: String,
    /// Seconds since the Unix epoch (for `since` filtering).
    #[serde(default, skip_serializing)]
    pub at: f64,
}

/// The process's activity log.
pub struct EventLog {
    ring: Mutex<VecDeque<Event>>,
    file: Option<PathBuf>,
}

impl EventLog {
    /// A log that also appends to `file` (folders created), loading its tail.
    pub fn new(file: Option<&Path>) -> EventLog {
        let mut ring = VecDeque::new();
        if let Some(f) = file {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let old = std::fs::read_to_string(rotated(f)).unwrap_or_default();
            let current = std::fs::read_to_string(f).unwrap_or_default();
            {
                for line in old.lines().chain(current.lines()) {
                    if let Ok(mut e) = serde_json::from_str::<Event>(line) {
                        e.at = humantime::parse_rfc3339(&e.time)
                            .ok()
                            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0);
                        ring.push_back(e);
                        if ring.len() > MEMORY_EVENTS {
                            ring.pop_front();
                        }
                    }
                }
            }
        }
        EventLog {
            ring: Mutex::new(ring),
            file: file.map(Path::to_path_buf),
        }
    }

    /// Records an event (also to the tracing log).
    pub fn record(&self, kind: &str, subject: &str, message: impl Into<String>) {
        let now = SystemTime::now();
        let e = Event {
            time: humantime::format_rfc3339_millis(now).to_string(),
            kind: kind.to_string(),
            subject: subject.to_string(),
            message: message.into(),
            at: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        };
        tracing::info!(kind = %e.kind, subject = %e.subject, "{}", e.message);
        if let Some(f) = &self.file {
            if let Ok(line) = serde_json::to_string(&e) {
                if let Ok(mut file) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                {
                    let _ = writeln!(file, "{line}");
                    if file.metadata().is_ok_and(|m| m.len() >= MAX_FILE_BYTES) {
                        drop(file);
                        let _ = std::fs::rename(f, rotated(f));
                    }
                }
            }
        }
        if let Ok(mut r) = self.ring.lock() {
            r.push_back(e);
            if r.len() > MEMORY_EVENTS {
                r.pop_front();
            }
        }
    }

    /// Events newer than `since` ago (all when None), oldest first.
    pub fn since(&self, since: Option<Duration>) -> Vec<Event> {
        let cutoff = since
            .and_then(|d| SystemTime::now().checked_sub(d))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.ring
            .lock()
            .map(|r| r.iter().filter(|e| e.at >= cutoff).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_filters_by_age() {
        let dir = std::env::temp_dir().join(format!("pc-events-{}", std::process::id()));
        let file = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&file);
        let log = EventLog::new(Some(&file));
        log.record("health", "p/s/1.2.3.4:80", "Healthy → Unhealthy");
        let again = EventLog::new(Some(&file));
        let all = again.since(None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, "health");
        assert_eq!(again.since(Some(Duration::from_secs(3600))).len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_file_is_rotated_and_both_halves_are_read_back() {
        let dir = std::env::temp_dir().join(format!("pc-events-rot-{}", std::process::id()));
        let file = dir.join("events.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let log = EventLog::new(Some(&file));
        let big = "x".repeat(4096);
        let n = (MAX_FILE_BYTES / 4096) as usize + 10;
        for i in 0..n {
            log.record("test", &format!("s{i}"), big.clone());
        }
        let cur = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let old = std::fs::metadata(rotated(&file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(old >= MAX_FILE_BYTES, "{old}");
        assert!(cur < MAX_FILE_BYTES, "{cur}");
        let again = EventLog::new(Some(&file));
        let all = again.since(None);
        assert_eq!(all.len(), n.min(MEMORY_EVENTS));
        assert_eq!(
            all.last().map(|e| e.subject.clone()),
            Some(format!("s{}", n - 1))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
