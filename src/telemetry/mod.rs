//! Monitoring: Prometheus metrics, in-process time series and alert rules.
//!
//! Everything is recorded from ONE place, [`Telemetry::observe`], called with the
//! finished access-log record of each request — so the log, the counters and
//! the series cannot disagree about what happened.

pub mod alerts;
pub mod metrics;
pub mod series;

use crate::accesslog::AccessRecord;
use metrics::{
    status_class, AppCodeL, AppL, AppStatusL, BackendL, ErrorL, ListenerL, Metrics, ReasonL,
    ServerL, ServerStatusL, StatusL,
};
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
#[derive(Default)]
pub struct Telemetry {
    /// Prometheus families.
    pub metrics: Metrics,
    /// Time series.
    pub series: SeriesStore,
}

fn failed(status: u16, error_info: &str) -> bool {
    status >= 500
        || (error_info != "ERRORINFO_NO_ERROR" && error_info != "ERRORINFO_CLIENT_CLOSED_REQUEST")
}

impl Telemetry {
    /// Records one finished request.
    pub fn observe(&self, r: &AccessRecord, o: &Observation) {
        let m = &self.metrics;
        let p = &r.properties;
        let class = status_class(p.http_status);
        let is_failed = failed(p.http_status, &p.error_info);
        let listener = ListenerL {
            listener: r.listener_name.clone(),
        };
        m.requests
            .get_or_create(&StatusL {
                listener: r.listener_name.clone(),
                status_class: class.into(),
            })
            .inc();
        if is_failed {
            m.failed.get_or_create(&listener).inc();
        }
        m.errors
            .get_or_create(&ErrorL {
                listener: r.listener_name.clone(),
                error_info: p.error_info.clone(),
            })
            .inc();
        m.received.get_or_create(&listener).inc_by(p.received_bytes);
        m.sent.get_or_create(&listener).inc_by(p.sent_bytes);
        if !r.backend_pool_name.is_empty() {
            m.total_time
                .get_or_create(&BackendL {
                    listener: r.listener_name.clone(),
                    pool: r.backend_pool_name.clone(),
                    settings: r.backend_setting_name.clone(),
                })
                .observe(o.total.as_secs_f64());
        }
        if p.server_routed != "-" {
            if let Ok(code) = p.server_status.parse::<u16>() {
                m.backend_status
                    .get_or_create(&ServerStatusL {
                        pool: r.backend_pool_name.clone(),
                        server: p.server_routed.clone(),
                        status_class: status_class(code).into(),
                    })
                    .inc();
            }
            let server = ServerL {
                listener: r.listener_name.clone(),
                pool: r.backend_pool_name.clone(),
                settings: r.backend_setting_name.clone(),
                server: p.server_routed.clone(),
            };
            if let Some(c) = o.connect {
                m.connect_time
                    .get_or_create(&server)
                    .observe(c.as_secs_f64());
            }
            if let Some(f) = o.first_byte {
                m.first_byte.get_or_create(&server).observe(f.as_secs_f64());
                m.last_byte
                    .get_or_create(&server)
                    .observe(o.total.as_secs_f64());
            }
        }
        if let Some(attempts) = &p.attempts {
            if attempts.len() > 1 {
                for a in &attempts[..attempts.len() - 1] {
                    m.retries
                        .get_or_create(&ReasonL {
                            reason: a.error_info.clone(),
                        })
                        .inc();
                }
            }
        }
        if let Some(app) = &o.app {
            m.app_requests
                .get_or_create(&AppStatusL {
                    app: app.to_string(),
                    status_class: class.into(),
                })
                .inc();
            m.app_codes
                .get_or_create(&AppCodeL {
                    app: app.to_string(),
                    code: p.http_status.to_string(),
                })
                .inc();
            m.app_response_time
                .get_or_create(&AppL {
                    app: app.to_string(),
                })
                .observe(o.total.as_secs_f64());
        }
        // Series per scope.
        let class_series = match p.http_status / 100 {
            2 => Some("http_2xx"),
            3 => Some("http_3xx"),
            4 => Some("http_4xx"),
            5 => Some("http_5xx"),
            _ => None,
        };
        let mut scopes: Vec<(&'static str, &str)> = Vec::with_capacity(3);
        if !r.listener_name.is_empty() {
            scopes.push(("listener", &r.listener_name));
        }
        if !r.backend_pool_name.is_empty() {
            scopes.push(("pool", &r.backend_pool_name));
        }
        if let Some(app) = &o.app {
            scopes.push(("app", app));
        }
        for (kind, name) in scopes {
            self.series.series("requests", kind, name).record(1.0);
            self.series
                .series("response_time", kind, name)
                .record(o.total.as_secs_f64());
            if is_failed {
                self.series
                    .series("failed_requests", kind, name)
                    .record(1.0);
            }
            if let Some(c) = class_series {
                self.series.series(c, kind, name).record(1.0);
            }
        }
    }
}
