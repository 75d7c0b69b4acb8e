//! Monitoring: Prometheus metrics, in-process time series and alert rules.
//!
//! Everything is recorded from ONE place, [`Telemetry::observe`], called with the
//! finished access-log record of each request — so the log, the counters and
//! the series cannot disagree about what happened.

pub mod alerts;
pub mod handles;
pub mod metrics;
pub mod series;
pub mod sharded;

use crate::accesslog::AccessRecord;
use handles::{HandleCache, Shape};
use metrics::{Metrics, ReasonL};
use series::SeriesStore;
use std::sync::Arc;
use std::time::Duration;

/// The series kept per scope: name → what one request adds.
pub const SERIES: &[&str] = &[
    "requests",
    "failed_requests",
    "http_2xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "response_time",
    "cpu_seconds",
    "memory_working_set",
    "healthy_hosts",
    "unhealthy_hosts",
    "queue_length",
];

/// Typed facts of a request that the record holds only as text.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The hosted app behind the pool, if any.
    pub app: Option<Arc<str>>,
    /// Connect time of the answering attempt.
    pub connect: Option<Duration>,
    /// Arrival to backend response headers.
    pub first_byte: Option<Duration>,
    /// Arrival to last byte sent.
    pub total: Duration,
}

/// Metrics and series of the process.
pub struct Telemetry {
    /// Prometheus families.
    pub metrics: Metrics,
    /// Time series.
    pub series: SeriesStore,
    /// Handles per request shape (the recording fast path).
    pub handles: HandleCache,
    /// When false, [`Telemetry::observe`] records nothing. Set only by
    /// [`Telemetry::from_env`] for the benchmark's A/B measurement of what
    /// recording costs (docs/benchmarks.md).
    pub recording: bool,
}

/// Environment variable that turns request recording off (benchmark A/B only).
pub const NO_RECORDING_ENV: &str = "PORTCULLIS_BENCH_NO_METRICS";

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            metrics: Metrics::default(),
            series: SeriesStore::default(),
            handles: HandleCache::default(),
            recording: true,
        }
    }
}

fn failed(status: u16, error_info: &str) -> bool {
    status >= 500
        || (error_info != "ERRORINFO_NO_ERROR" && error_info != "ERRORINFO_CLIENT_CLOSED_REQUEST")
}

impl Telemetry {
    /// The process's telemetry; recording is on unless
    /// `PORTCULLIS_BENCH_NO_METRICS=1` is set (used only by `bench/run.py` to
    /// measure the cost of recording side by side; never set it in production:
    /// `/metrics`, `/api/metrics` and alerts would see no requests).
    pub fn from_env() -> Self {
        let off = std::env::var(NO_RECORDING_ENV).is_ok_and(|v| v == "1");
        if off {
            tracing::warn!("{NO_RECORDING_ENV}=1: requests are not recorded in metrics");
        }
        Telemetry {
            recording: !off,
            ..Telemetry::default()
        }
    }

    /// Records one finished request: a lookup of its shape's handles in
    /// [`handles::HandleCache`], then adds to this thread's slots
    /// (`sharded.rs`: plain loads and stores, no locked instruction).
    pub fn observe(&self, r: &AccessRecord, o: &Observation) {
        if !self.recording {
            return;
        }
        let p = &r.properties;
        let shape = Shape {
            listener: &r.listener_name,
            pool: &r.backend_pool_name,
            settings: &r.backend_setting_name,
            server: &p.server_routed,
            status: p.http_status,
            server_status: if p.server_routed == "-" {
                None
            } else {
                p.server_status.parse::<u16>().ok()
            },
            error_info: &p.error_info,
            app: o.app.as_deref(),
            failed: failed(p.http_status, &p.error_info),
            connected: o.connect.is_some(),
            first_byte: o.first_byte.is_some(),
        };
        self.handles.with(&shape, &self.metrics, &self.series, |h| {
            self.record(h, p, o)
        });
    }

    /// Adds one request to the handles of its shape, in this thread's slot
    /// (`sharded.rs`: no locked instruction).
    fn record(&self, h: &handles::Handles, p: &crate::accesslog::Properties, o: &Observation) {
        let s = sharded::Slot::current();
        let total = o.total.as_secs_f64();
        h.requests.inner().add(s, 1);
        if let Some(c) = &h.failed {
            c.inner().add(s, 1);
        }
        h.errors.inner().add(s, 1);
        h.received.inner().add(s, p.received_bytes);
        h.sent.inner().add(s, p.sent_bytes);
        if let Some(t) = &h.total_time {
            t.observe_in(s, total);
        }
        if let Some(srv) = &h.server {
            if let Some(c) = &srv.status {
                c.inner().add(s, 1);
            }
            if let (Some(hist), Some(c)) = (&srv.connect, o.connect) {
                hist.observe_in(s, c.as_secs_f64());
            }
            if let (Some((first, last)), Some(f)) = (&srv.first_last_byte, o.first_byte) {
                first.observe_in(s, f.as_secs_f64());
                last.observe_in(s, total);
            }
        }
        if let Some(attempts) = &p.attempts {
            if attempts.len() > 1 {
                for a in &attempts[..attempts.len() - 1] {
                    self.metrics
                        .retries
                        .get_or_create(&ReasonL {
                            reason: a.error_info.to_string(),
                        })
                        .inc();
                }
            }
        }
        if let Some(a) = &h.app {
            a.requests.inner().add(s, 1);
            a.code.inner().add(s, 1);
            a.response_time.observe_in(s, total);
        }
        for sc in &h.scopes {
            sc.requests.record_in(s, 1.0);
            sc.response_time.record_in(s, total);
            if let Some(f) = &sc.failed {
                f.record_in(s, 1.0);
            }
            if let Some(c) = &sc.class {
                c.record_in(s, 1.0);
            }
        }
    }
}
