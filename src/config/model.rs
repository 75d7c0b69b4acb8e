//! The configuration model: one struct per TOML table, named after the Azure
//! resource it mirrors (snake_case), with the defaults of section 3 of the product
//! contract as named functions. Every struct refuses unknown keys.
//!
//! These structs are what serde fills; [`super::validate`] checks ranges and
//! references and only a config that passed it is ever run.

use super::duration::ConfDuration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file. Built by [`super::load_str`] table by table so that every
/// malformed item is reported, not only the first.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[gateway]`: process-wide settings.
    pub gateway: GatewayConfig,
    /// `[console]`: the management API listener.
    pub console: ConsoleConfig,
    /// `[[listeners]]`.
    pub listeners: Vec<ListenerConfig>,
    /// `[[backend_pools]]`.
    pub backend_pools: Vec<BackendPoolConfig>,
    /// `[[backend_http_settings]]`.
    pub backend_http_settings: Vec<BackendHttpSettingsConfig>,
    /// `[[probes]]`.
    pub probes: Vec<ProbeConfig>,
    /// `[[request_routing_rules]]`.
    pub request_routing_rules: Vec<RoutingRuleConfig>,
    /// `[[url_path_maps]]`.
    pub url_path_maps: Vec<UrlPathMapConfig>,
    /// `[[apps]]`: hosted web apps.
    pub apps: Vec<AppConfig>,
    /// `[[alerts]]`: alert rules over the time series.
    pub alerts: Vec<AlertConfig>,
    /// Folder relative paths in the file are resolved against (the file's folder).
    pub base_dir: PathBuf,
    /// `(section, name)` of entries that failed to parse: validation treats the
    /// names as existing, so a reference to them is not reported a second time.
    pub unparsed: Vec<(String, String)>,
    /// Per section, the position in the file of each parsed entry (entries that
    /// failed to parse are missing), so errors name the entry the user wrote.
    pub positions: std::collections::HashMap<String, Vec<usize>>,
}

/// `[gateway]` (section 3.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// State folder: token file, logs, instance logs. Default `.portcullis`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Access log file; `"-"` = stdout, `"off"` = none. Default `<state_dir>/logs/access.log`.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Goes into `properties.instanceId`. Default: the host name.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long SIGTERM waits for in-flight requests before closing. Default 30 s.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfDuration,
    /// Time a client has to send a complete request head, 1 s..1 h; then 408.
    /// Default 60 s (Azure: a client that sends nothing for 60 s gets 408).
    #[serde(default = "default_header_timeout")]
    pub request_header_timeout: ConfDuration,
    /// Keep-alive idle timeout of client connections, 1 s..1 h: a connection with
    /// no request in progress and no byte of a new one for this long is closed.
    /// Default 75 s (Application Gateway v2's keep-alive timeout).
    #[serde(default = "default_client_idle_timeout")]
    pub client_idle_timeout: ConfDuration,
    /// Send timeout of client connections, 1 s..1 h: an answer the client takes
    /// no byte of for this long (it does not read, or leaves its HTTP/2
    /// flow-control window shut) is given up and its connection (HTTP/1) or
    /// stream (HTTP/2) closed. Default 60 s (nginx's `send_timeout`).
    #[serde(default = "default_client_send_timeout")]
    pub client_send_timeout: ConfDuration,
    /// Idle timeout of upgraded connections (a 101 answer: WebSocket), 1 s..24 h:
    /// a tunnel through which no byte moves either way for this long is closed,
    /// both sides. Default 240 s (the 4-minute TCP idle timeout an idle
    /// WebSocket meets behind Azure; HAProxy's `timeout tunnel`).
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: ConfDuration,
    /// How often alert rules are evaluated, 1 s..1 h. Default 5 s.
    #[serde(default = "default_alert_interval")]
    pub alert_evaluation_interval: ConfDuration,
}

fn default_header_timeout() -> ConfDuration {
    ConfDuration::secs(60)
}

fn default_client_idle_timeout() -> ConfDuration {
    ConfDuration::secs(75)
}

fn default_client_send_timeout() -> ConfDuration {
    ConfDuration::secs(60)
}

fn default_tunnel_idle_timeout() -> ConfDuration {
    ConfDuration::secs(240)
}

fn default_alert_interval() -> ConfDuration {
    ConfDuration::secs(5)
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            state_dir: default_state_dir(),
            access_log: None,
            instance_id: None,
            shutdown_timeout: default_shutdown_timeout(),
            alert_evaluation_interval: default_alert_interval(),
            request_header_timeout: default_header_timeout(),
            client_idle_timeout: default_client_idle_timeout(),
            client_send_timeout: default_client_send_timeout(),
            tunnel_idle_timeout: default_tunnel_idle_timeout(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".portcullis")
}
fn default_shutdown_timeout() -> ConfDuration {
    ConfDuration::secs(30)
}

/// `[console]` (section 3.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `IP:port` of the management API. Default `127.0.0.1:9090`.
    #[serde(default = "default_console_listen")]
    pub listen: String,
    /// Bearer token; else env `PORTCULLIS_TOKEN`, else generated into the state dir.
    #[serde(default)]
    pub token: Option<String>,
    /// Serve `/metrics` without the token. Default false.
    #[serde(default)]
    pub public_metrics: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: default_console_listen(),
            token: None,
            public_metrics: false,
        }
    }
}

fn default_console_listen() -> String {
    "127.0.0.1:9090".to_string()
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge from clients).
    #[default]
    Http,
    /// TLS (rustls), ALPN `h2` and `http/1.1`.
    Https,
}

impl Protocol {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// `[[listeners]]` (section 3.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name; goes into `listenerName` of the access log.
    pub name: String,
    /// `IP:port` to bind.
    pub listen: String,
    /// `http` (default) or `https`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Host names this listener serves; empty = basic listener. `*.example.com` wildcards.
    #[serde(default)]
    pub host_names: Vec<String>,
    /// Certificate and key for `https`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Status code (as a string key, e.g. `"502"`) → HTML file served instead of the built-in page.
    #[serde(default)]
    pub custom_error_pages: BTreeMap<String, PathBuf>,
}

/// PEM files of an https listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[[backend_pools]]` (section 3.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPoolConfig {
    /// Unique name; `backendPoolName` in the access log.
    pub name: String,
    /// `IP`, `IP:port`, `FQDN`, `FQDN:port`; the port defaults to the settings' port.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// Name of a hosted app whose ready instances are the servers.
    #[serde(default)]
    pub app: Option<String>,
}

/// `connection_draining` of backend HTTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainingConfig {
    /// Drain servers removed from rotation instead of cutting them off.
    #[serde(default)]
    pub enabled: bool,
    /// How long in-flight requests may run on a draining server, 1–3600 s. Default 30 s.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: ConfDuration,
}

fn default_drain_timeout() -> ConfDuration {
    ConfDuration::secs(30)
}

/// `[[backend_http_settings]]` (section 3.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendHttpSettingsConfig {
    /// Unique name; `backendSettingName` in the access log.
    pub name: String,
    /// Backend port, 1–65535. Default 80. Ignored for app pools.
    #[serde(default = "default_port")]
    pub port: u32,
    /// `http` (default) or `https` to the backend.
    #[serde(default)]
    pub protocol: Protocol,
    /// PEM files of roots trusted for an https backend; system roots when empty.
    #[serde(default)]
    pub trusted_root_certificates: Vec<PathBuf>,
    /// Time allowed for the backend's response headers, 1–86400 s. Default 30 s
    /// (the seed documents; the REST spec says 20 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfDuration,
    /// Sticky sessions by cookie. Default false.
    #[serde(default)]
    pub cookie_based_affinity: bool,
    /// Affinity cookie name. Default `ApplicationGatewayAffinity`.
    #[serde(default = "default_affinity_cookie")]
    pub affinity_cookie_name: String,
    /// Host header sent to the backend; else the client's Host.
    #[serde(default)]
    pub host_name: Option<String>,
    /// Host = the server's FQDN or IP. Default false.
    #[serde(default)]
    pub pick_host_name_from_backend_address: bool,
    /// Prefix that replaces the matched path prefix.
    #[serde(default)]
    pub path: Option<String>,
    /// Name of a custom probe; else the default probe.
    #[serde(default)]
    pub probe: Option<String>,
    /// Connection draining; off by default.
    #[serde(default)]
    pub connection_draining: Option<DrainingConfig>,
    /// Passive health (portcullis addition, like Envoy's outlier detection):
    /// eject a server after this many 5xx answers or timeouts in a row, until a
    /// probe passes again. 0 (the default) = off.
    #[serde(default)]
    pub outlier_consecutive_errors: u32,
    /// Retry an idempotent request without a body once on another server when
    /// its connection was closed or reset before any response byte (Envoy's
    /// `retry_on: reset`). Default: true for app pools (a crashed instance must not
    /// cost a request), false for address pools (only the cases of section 4).
    #[serde(default)]
    pub retry_idempotent_on_reset: Option<bool>,
    /// Retry an idempotent request without a body once on another server when
    /// the first gave no response headers within `request_timeout` (nginx's
    /// `proxy_next_upstream timeout`, HAProxy's `retry-on response-timeout`).
    /// The retry gets its own `request_timeout`. Default false (section 4:
    /// a timeout is not retried unless configured).
    #[serde(default)]
    pub retry_idempotent_on_timeout: bool,
}

fn default_port() -> u32 {
    80
}
fn default_request_timeout() -> ConfDuration {
    ConfDuration::secs(30)
}
/// Azure's affinity cookie name.
pub const DEFAULT_AFFINITY_COOKIE: &str = "ApplicationGatewayAffinity";
fn default_affinity_cookie() -> String {
    DEFAULT_AFFINITY_COOKIE.to_string()
}

/// `match` of a probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeMatchConfig {
    /// Codes and ranges, e.g. `["200-399"]` (the default) or `["200", "204"]`.
    #[serde(default = "default_status_codes")]
    pub status_codes: Vec<String>,
    /// Plain substring the body must contain, at most 4090 characters.
    #[serde(default)]
    pub body: Option<String>,
}

impl Default for ProbeMatchConfig {
    fn default() -> Self {
        ProbeMatchConfig {
            status_codes: default_status_codes(),
            body: None,
        }
    }
}

fn default_status_codes() -> Vec<String> {
    vec!["200-399".to_string()]
}

/// `[[probes]]` (section 3.6). Parsed and validated now; probing itself is the
/// subject of the health-probe issue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique name.
    pub name: String,
    /// `http` or `https`; default: the settings' protocol.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Host header the probe sends. Default `127.0.0.1`.
    #[serde(default)]
    pub host: Option<String>,
    /// Take the Host from the backend HTTP settings. Default false.
    #[serde(default)]
    pub pick_host_name_from_backend_http_settings: bool,
    /// Port, 1–65535; default the settings' port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Path, starting with `/`. Default `/`.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// 1–86400 s, default 30 s.
    #[serde(default = "default_probe_interval")]
    pub interval: ConfDuration,
    /// 1–86400 s, default 30 s.
    #[serde(default = "default_probe_interval")]
    pub timeout: ConfDuration,
    /// 1–20 consecutive failures mark a server Unhealthy. Default 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Consecutive successes to mark it Healthy again. Default 1.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Servers kept in rotation even when all are Unhealthy. Default 0.
    #[serde(default)]
    pub min_servers: u32,
    /// What a healthy answer looks like.
    #[serde(default, rename = "match")]
    pub match_: ProbeMatchConfig,
}

fn default_probe_path() -> String {
    "/".to_string()
}
fn default_probe_interval() -> ConfDuration {
    ConfDuration::secs(30)
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_healthy_threshold() -> u32 {
    1
}

/// `basic` or `path_based`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Listener → one pool + settings.
    Basic,
    /// Listener → URL path map.
    PathBased,
}

/// `[[request_routing_rules]]` (section 3.7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRuleConfig {
    /// Unique name; `ruleName` in the access log.
    pub name: String,
    /// `basic` (default) or `path_based`.
    #[serde(default = "default_rule_type")]
    pub rule_type: RuleType,
    /// Listener name.
    pub listener: String,
    /// 1–20000, lower is evaluated first. Optional: rules without one come after
    /// all rules with one, multi-site listeners before basic ones, then file order.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Pool (basic rules).
    #[serde(default)]
    pub backend_pool: Option<String>,
    /// Settings (basic rules).
    #[serde(default)]
    pub backend_http_settings: Option<String>,
    /// Path map (path-based rules).
    #[serde(default)]
    pub url_path_map: Option<String>,
}

fn default_rule_type() -> RuleType {
    RuleType::Basic
}

/// One entry of `path_rules`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRuleConfig {
    /// Name, unique within the map.
    pub name: String,
    /// `/prefix/*` (prefix match) or `/exact` paths.
    pub paths: Vec<String>,
    /// Pool name.
    pub backend_pool: String,
    /// Settings name.
    pub backend_http_settings: String,
}

/// `[[url_path_maps]]` (section 3.7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlPathMapConfig {
    /// Unique name.
    pub name: String,
    /// Pool when no path rule matches.
    pub default_backend_pool: String,
    /// Settings when no path rule matches.
    pub default_backend_http_settings: String,
    /// The path rules.
    #[serde(default)]
    pub path_rules: Vec<PathRuleConfig>,
}

/// `[[apps]]` (section 3.8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Unique name.
    pub name: String,
    /// argv, run without a shell. `"portcullis"` as first word means this binary.
    pub command: Vec<String>,
    /// Working directory; default the config's folder.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Instance count, 0–64. Default 1.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Readiness / health path. Default `/`.
    #[serde(default = "default_probe_path")]
    pub health_check_path: String,
    /// Time to become ready, default 60 s.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: ConfDuration,
    /// SIGTERM → wait → SIGKILL, default 30 s.
    #[serde(default = "default_shutdown_timeout")]
    pub stop_timeout: ConfDuration,
    /// Per instance; 0 = unlimited.
    #[serde(default)]
    pub max_concurrent_requests: u32,
    /// Waiting requests beyond the concurrency limit. Default 100.
    #[serde(default = "default_queue_length")]
    pub queue_length: u32,
    /// Longest wait in the queue. Default 30 s.
    #[serde(default = "default_shutdown_timeout")]
    pub queue_timeout: ConfDuration,
}

fn default_instances() -> u32 {
    1
}
fn default_startup_timeout() -> ConfDuration {
    ConfDuration::secs(60)
}
fn default_queue_length() -> u32 {
    100
}

/// What an alert rule watches: exactly one of app, pool, listener.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertScope {
    /// A hosted app.
    #[serde(default)]
    pub app: Option<String>,
    /// A backend pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// A listener.
    #[serde(default)]
    pub listener: Option<String>,
}

/// How the window's values become one number (Azure's time aggregations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Mean of the values.
    #[default]
    Average,
    /// Smallest value.
    Minimum,
    /// Largest value.
    Maximum,
    /// Sum of the values (for counts: how many).
    Total,
    /// Number of values recorded.
    Count,
}

/// `[[alerts]]`: fires when the aggregated metric crosses the threshold,
/// resolves when it no longer does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Unique name.
    pub name: String,
    /// A series name: requests, failed_requests, http_2xx..http_5xx,
    /// response_time, cpu_seconds, memory_working_set, healthy_hosts,
    /// unhealthy_hosts, queue_length.
    pub metric: String,
    /// What it watches.
    pub scope: AlertScope,
    /// Default `average`.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// 10 s..24 h. Default 5 m.
    #[serde(default = "default_alert_window")]
    pub window: ConfDuration,
    /// `>`, `>=`, `<`, `<=`.
    pub operator: String,
    /// The limit.
    pub threshold: f64,
    /// 0 (critical) .. 4 (verbose), Azure's Sev0–Sev4. Default 2.
    #[serde(default = "default_severity")]
    pub severity: u8,
    /// `http://` URLs that get a JSON POST on every transition.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// argv run on every transition (env `PORTCULLIS_ALERT`, `PORTCULLIS_ALERT_STATE`, `PORTCULLIS_ALERT_VALUE`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

fn default_alert_window() -> ConfDuration {
    ConfDuration::secs(300)
}
fn default_severity() -> u8 {
    2
}
