//! The activity log: what happened to the system (probe transitions, ejections,
//! instance exits, restarts, reloads…), newest last. Kept in memory (the last
//! [`MEMORY_EVENTS`]) and appended as JSON lines to `<state_dir>/events.jsonl`
//! so it survives a restart. Served by `GET /api/events` and `portcullis events`.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Events kept in memory.
pub const MEMORY_EVENTS: usize = 10_000;

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
            if let Ok(text) = std::fs::read_to_string(f) {
                for line in text.lines() {
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
}
