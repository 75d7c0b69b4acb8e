//! Instance output: every stdout/stderr line, stamped with time, instance id and
//! stream, goes to `<state_dir>/logs/apps/<app>/<instance>.log` (rotated at
//! [`ROTATE_BYTES`], one old file kept as `.log.1`) and to the app's in-memory
//! ring, which `GET /api/apps/{name}/logs` reads and `?follow=true` streams —
//! App Service's log stream.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// Size at which an instance log file is rotated.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// Recent lines of one app and a live feed of new ones.
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    cap: usize,
    tx: broadcast::Sender<String>,
}

impl LogRing {
    /// Keeps the last `cap` lines.
    pub fn new(cap: usize) -> LogRing {
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
            tx: broadcast::channel(1024).0,
        }
    }

    /// Adds one line (without its newline).
    pub fn push(&self, line: String) {
        let _ = self.tx.send(line.clone());
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == self.cap {
                l.pop_front();
            }
            l.push_back(line);
        }
    }

    /// The lines kept now, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver of lines pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

/// Appends lines to an instance log file, rotating it at [`ROTATE_BYTES`].
pub struct LogFile {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    size: u64,
}

impl LogFile {
    /// The log file at `path` (created on first write).
    pub fn new(path: &Path) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            file: None,
            size: 0,
        }
    }

    /// Writes one line.
    pub async fn write(&mut self, line: &str) {
        if self.file.is_none() || self.size >= ROTATE_BYTES {
            if self.size >= ROTATE_BYTES {
                self.file = None;
                let _ = tokio::fs::rename(&self.path, self.path.with_extension("log.1")).await;
            }
            if let Some(dir) = self.path.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            self.file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .ok();
            self.size = tokio::fs::metadata(&self.path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(line.as_bytes()).await.is_ok() && f.write_all(b"\n").await.is_ok() {
                self.size += line.len() as u64 + 1;
            }
        }
    }
}
