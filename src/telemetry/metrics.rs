//! The Prometheus metrics (prometheus-client), named by Prometheus conventions;
//! docs/metrics.md gives the Azure metric each one mirrors. Recording is atomic
//! counters and histograms behind prometheus-client's families; gauges that
//! describe state (healthy hosts, instance CPU and memory) are set at scrape time.

use super::sharded::Counter;
use super::sharded::Histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `listener`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerL {
    /// Listener name (`""` when none matched).
    pub listener: String,
}

/// `listener`, `status_class` (`2xx`…`5xx`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusL {
    /// Listener name.
    pub listener: String,
    /// `1xx`…`5xx`.
    pub status_class: String,
}

/// `listener`, `error_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorL {
    /// Listener name.
    pub listener: String,
    /// `ERRORINFO_…`.
    pub error_info: String,
}

/// `pool`, `server`, `status_class`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerStatusL {
    /// Backend pool.
    pub pool: String,
    /// `IP:port`.
    pub server: String,
    /// `1xx`…`5xx`.
    pub status_class: String,
}

/// `listener`, `pool`, `settings`, `server`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerL {
    /// Listener.
    pub listener: String,
    /// Backend pool.
    pub pool: String,
    /// Backend HTTP settings.
    pub settings: String,
    /// `IP:port`.
    pub server: String,
}

/// `listener`, `pool`, `settings`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendL {
    /// Listener.
    pub listener: String,
    /// Backend pool.
    pub pool: String,
    /// Backend HTTP settings.
    pub settings: String,
}

/// `pool`, `settings`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairL {
    /// Backend pool.
    pub pool: String,
    /// Backend HTTP settings.
    pub settings: String,
}

/// `reason` (the error_info of the failed attempt).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonL {
    /// `ERRORINFO_…` of the attempt that was retried.
    pub reason: String,
}

/// `app`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppL {
    /// App name.
    pub app: String,
}

/// `app`, `status_class`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStatusL {
    /// App name.
    pub app: String,
    /// `1xx`…`5xx`.
    pub status_class: String,
}

/// `app`, `code` (status code as counted at the gateway).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppCodeL {
    /// App name.
    pub app: String,
    /// Status code.
    pub code: String,
}

/// `app`, `instance`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceL {
    /// App name.
    pub app: String,
    /// Instance id.
    pub instance: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// 1 ms .. ~65 s (`sharded.rs` `bounds`).
fn seconds_histogram() -> Histogram {
    Histogram::default()
}

/// Every metric of the process.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// TotalRequests / ResponseStatus.
    pub requests: Family<StatusL, Counter>,
    /// FailedRequests: error_info other than NO_ERROR, or status ≥ 500.
    pub failed: Family<ListenerL, Counter>,
    /// Responses by error_info.
    pub errors: Family<ErrorL, Counter>,
    /// BackendResponseStatus.
    pub backend_status: Family<ServerStatusL, Counter>,
    /// BackendConnectTime.
    pub connect_time: Family<ServerL, Histogram>,
    /// BackendFirstByteResponseTime.
    pub first_byte: Family<ServerL, Histogram>,
    /// BackendLastByteResponseTime.
    pub last_byte: Family<ServerL, Histogram>,
    /// ApplicationGatewayTotalTime.
    pub total_time: Family<BackendL, Histogram>,
    /// BytesReceived.
    pub received: Family<ListenerL, Counter>,
    /// BytesSent.
    pub sent: Family<ListenerL, Counter>,
    /// CurrentConnections.
    pub current_connections: Gauge,
    /// NewConnectionsPerSecond (as a counter).
    pub new_connections: Counter,
    /// Retries by reason.
    pub retries: Family<ReasonL, Counter>,
    /// HealthyHostCount.
    pub healthy_hosts: Family<PairL, Gauge>,
    /// UnhealthyHostCount.
    pub unhealthy_hosts: Family<PairL, Gauge>,
    /// App Service Requests / Http2xx…Http5xx.
    pub app_requests: Family<AppStatusL, Counter>,
    /// Http502 / Http503 and every other code, as counted at the gateway.
    pub app_codes: Family<AppCodeL, Counter>,
    /// HttpResponseTime (histogram; the average is sum/count).
    pub app_response_time: Family<AppL, Histogram>,
    /// RequestsInApplicationQueue.
    pub app_queue: Family<AppL, Gauge>,
    /// CpuTime per instance, seconds.
    pub app_cpu: Family<InstanceL, FGauge>,
    /// MemoryWorkingSet per instance, bytes.
    pub app_memory: Family<InstanceL, Gauge>,
    /// Private bytes per instance.
    pub app_private: Family<InstanceL, Gauge>,
    /// Threads per instance.
    pub app_threads: Family<InstanceL, Gauge>,
    /// Handles per instance.
    pub app_handles: Family<InstanceL, Gauge>,
    /// Restarts per instance.
    pub app_restarts: Family<InstanceL, Gauge>,
    /// Access-log records lost because the writer's 16 MiB buffer was full
    /// (the disk did not keep up); shared with [`crate::accesslog::AccessLog`].
    pub access_log_dropped: prometheus_client::metrics::counter::Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            failed: Family::default(),
            errors: Family::default(),
            backend_status: Family::default(),
            connect_time: Family::new_with_constructor(seconds_histogram),
            first_byte: Family::new_with_constructor(seconds_histogram),
            last_byte: Family::new_with_constructor(seconds_histogram),
            total_time: Family::new_with_constructor(seconds_histogram),
            received: Family::default(),
            sent: Family::default(),
            current_connections: Gauge::default(),
            new_connections: Counter::default(),
            retries: Family::default(),
            healthy_hosts: Family::default(),
            unhealthy_hosts: Family::default(),
            app_requests: Family::default(),
            app_codes: Family::default(),
            app_response_time: Family::new_with_constructor(seconds_histogram),
            app_queue: Family::default(),
            app_cpu: Family::default(),
            app_memory: Family::default(),
            app_private: Family::default(),
            app_threads: Family::default(),
            app_handles: Family::default(),
            app_restarts: Family::default(),
            access_log_dropped: Default::default(),
            registry: Registry::default(),
        };
        r.register(
            "portcullis_requests",
            "Requests served (Azure TotalRequests, ResponseStatus)",
            m.requests.clone(),
        );
        r.register(
            "portcullis_failed_requests",
            "Requests that failed: gateway error or 5xx (Azure FailedRequests)",
            m.failed.clone(),
        );
        r.register(
            "portcullis_responses_by_error_info",
            "Responses by error_info",
            m.errors.clone(),
        );
        r.register(
            "portcullis_backend_responses",
            "Backend answers by server and status class (Azure BackendResponseStatus)",
            m.backend_status.clone(),
        );
        r.register(
            "portcullis_backend_connect_seconds",
            "Time to connect to the backend (Azure BackendConnectTime)",
            m.connect_time.clone(),
        );
        r.register(
            "portcullis_backend_first_byte_seconds",
            "Arrival to backend response headers (Azure BackendFirstByteResponseTime)",
            m.first_byte.clone(),
        );
        r.register(
            "portcullis_backend_last_byte_seconds",
            "Arrival to last backend byte (Azure BackendLastByteResponseTime)",
            m.last_byte.clone(),
        );
        r.register(
            "portcullis_total_time_seconds",
            "Arrival to last byte sent (Azure ApplicationGatewayTotalTime)",
            m.total_time.clone(),
        );
        r.register(
            "portcullis_received_bytes",
            "Request bytes received (Azure BytesReceived)",
            m.received.clone(),
        );
        r.register(
            "portcullis_sent_bytes",
            "Response bytes sent (Azure BytesSent)",
            m.sent.clone(),
        );
        r.register(
            "portcullis_current_connections",
            "Open client connections (Azure CurrentConnections)",
            m.current_connections.clone(),
        );
        r.register(
            "portcullis_new_connections",
            "Client connections accepted (Azure NewConnectionsPerSecond)",
            m.new_connections.clone(),
        );
        r.register(
            "portcullis_retries",
            "Backend attempts retried, by the reason of the failed attempt",
            m.retries.clone(),
        );
        r.register(
            "portcullis_healthy_hosts",
            "Healthy servers per pool and settings (Azure HealthyHostCount)",
            m.healthy_hosts.clone(),
        );
        r.register(
            "portcullis_unhealthy_hosts",
            "Unhealthy servers per pool and settings (Azure UnhealthyHostCount)",
            m.unhealthy_hosts.clone(),
        );
        r.register(
            "portcullis_app_requests",
            "Requests to a hosted app by status class (App Service Requests, Http2xx..Http5xx)",
            m.app_requests.clone(),
        );
        r.register("portcullis_app_responses_by_code", "Responses of a hosted app by status code, as counted at the gateway (Http502, Http503...)", m.app_codes.clone());
        r.register(
            "portcullis_app_response_seconds",
            "Response time of a hosted app (App Service HttpResponseTime)",
            m.app_response_time.clone(),
        );
        r.register(
            "portcullis_app_queue_length",
            "Requests waiting in the app's queue (App Service RequestsInApplicationQueue)",
            m.app_queue.clone(),
        );
        r.register(
            "portcullis_app_cpu_seconds",
            "CPU time of an instance (App Service CpuTime)",
            m.app_cpu.clone(),
        );
        r.register(
            "portcullis_app_memory_working_set_bytes",
            "Resident memory of an instance (App Service MemoryWorkingSet)",
            m.app_memory.clone(),
        );
        r.register(
            "portcullis_app_private_bytes",
            "Private memory of an instance (App Service Private Bytes)",
            m.app_private.clone(),
        );
        r.register(
            "portcullis_app_threads",
            "Threads of an instance (App Service Threads)",
            m.app_threads.clone(),
        );
        r.register(
            "portcullis_app_handles",
            "Open file descriptors of an instance (App Service Handles)",
            m.app_handles.clone(),
        );
        r.register(
            "portcullis_app_restarts",
            "Restarts of an instance",
            m.app_restarts.clone(),
        );
        r.register(
            "portcullis_access_log_dropped_records",
            "Access-log records lost because the writer's buffer was full (the disk did not keep up)",
            m.access_log_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `2xx` for 204, …
pub fn status_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
