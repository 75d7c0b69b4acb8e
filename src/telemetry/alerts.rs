//! Alert rules (`[[alerts]]`): every `alert_evaluation_interval` each rule
//! aggregates its series over its window (the interval in progress included)
//! and compares with its threshold. A change (Fired / Resolved) goes to the
//! activity log and to the rule's actions: webhook POSTs with a JSON body,
//! retried with backoff (1, 2, 4, 8 s) in their own task so nothing waits on
//! them, and/or a command run with the alert in its environment.

use super::series::now_secs;
use super::Telemetry;
use crate::config::{Aggregation, AlertConfig};
use crate::events::EventLog;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// State of one rule, as `GET /api/alerts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    /// Rule name.
    pub name: String,
    /// Metric watched.
    pub metric: String,
    /// `app:NAME`, `pool:NAME` or `listener:NAME`.
    pub scope: String,
    /// `Fired` or `Resolved` (`Unknown` before the first evaluation).
    pub state: String,
    /// Last aggregated value.
    pub value: Option<f64>,
    /// `> 3` etc.
    pub condition: String,
    /// 0..4.
    pub severity: u8,
    /// RFC 3339 time of the last change.
    pub since: Option<String>,
}

/// Evaluates the rules of the current config.
pub struct AlertEngine {
    rules: ArcSwap<Vec<AlertConfig>>,
    state: Mutex<HashMap<String, AlertStatus>>,
    telemetry: Arc<Telemetry>,
    events: Arc<EventLog>,
}

fn scope_of(r: &AlertConfig) -> (&'static str, String) {
    if let Some(a) = &r.scope.app {
        ("app", a.clone())
    } else if let Some(p) = &r.scope.pool {
        ("pool", p.clone())
    } else {
        ("listener", r.scope.listener.clone().unwrap_or_default())
    }
}

impl AlertEngine {
    /// An engine over `telemetry`'s series.
    pub fn new(
        rules: Vec<AlertConfig>,
        telemetry: Arc<Telemetry>,
        events: Arc<EventLog>,
    ) -> Arc<AlertEngine> {
        Arc::new(AlertEngine {
            rules: ArcSwap::from_pointee(rules),
            state: Mutex::new(HashMap::new()),
            telemetry,
            events,
        })
    }

    /// Replaces the rules (reload); rules that stay keep their state.
    pub fn set_rules(&self, rules: Vec<AlertConfig>) {
        if let Ok(mut st) = self.state.lock() {
            st.retain(|k, _| rules.iter().any(|r| &r.name == k));
        }
        self.rules.store(Arc::new(rules));
    }

    /// Evaluates every `interval` for as long as the process runs.
    pub fn spawn(self: &Arc<Self>, interval: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                me.evaluate();
            }
        });
    }

    /// Evaluates every rule once.
    pub fn evaluate(&self) {
        let rules = self.rules.load_full();
        let now = now_secs();
        for r in rules.iter() {
            let (kind, name) = scope_of(r);
            let point = self
                .telemetry
                .series
                .get(&r.metric, kind, &name)
                .map(|s| s.aggregate(r.window.get(), now));
            let counting = matches!(r.aggregation, Aggregation::Total | Aggregation::Count);
            let value = match (point, r.aggregation) {
                (Some(p), Aggregation::Average) if p.count > 0 => Some(p.average()),
                (Some(p), Aggregation::Minimum) if p.count > 0 => Some(p.min),
                (Some(p), Aggregation::Maximum) if p.count > 0 => Some(p.max),
                (Some(p), Aggregation::Total) => Some(p.sum),
                (Some(p), Aggregation::Count) => Some(p.count as f64),
                // No data: counts are zero; averages are unknown (no change).
                (None, _) if counting => Some(0.0),
                _ => None,
            };
            let Some(value) = value else { continue };
            let fired = match r.operator.as_str() {
                ">" => value > r.threshold,
                ">=" => value >= r.threshold,
                "<" => value < r.threshold,
                _ => value <= r.threshold,
            };
            let new_state = if fired { "Fired" } else { "Resolved" };
            let changed = {
                let Ok(mut st) = self.state.lock() else {
                    continue;
                };
                let entry = st.entry(r.name.clone()).or_insert_with(|| AlertStatus {
                    name: r.name.clone(),
                    metric: r.metric.clone(),
                    scope: format!("{kind}:{name}"),
                    state: "Unknown".into(),
                    value: None,
                    condition: format!("{} {}", r.operator, r.threshold),
                    severity: r.severity,
                    since: None,
                });
                entry.value = Some(value);
                let was = entry.state.clone();
                // The first evaluation only reports a firing rule.
                let changed = was != new_state && (was != "Unknown" || fired);
                if changed || was == "Unknown" {
                    entry.state = new_state.into();
                }
                if changed {
                    entry.since = Some(
                        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                    );
                }
                changed
            };
            if changed {
                self.act(r, kind, &name, new_state, value);
            }
        }
    }

    fn act(&self, r: &AlertConfig, kind: &str, name: &str, state: &str, value: f64) {
        let agg = format!("{:?}", r.aggregation).to_lowercase();
        let message = format!(
            "{state}: {agg} of {} for {kind} {name} over {} = {value} (condition {} {}, severity {})",
            r.metric, r.window, r.operator, r.threshold, r.severity
        );
        self.events.record("alert", &r.name, message);
        let body = json!({
            "alert": r.name,
            "state": state,
            "metric": r.metric,
            "scope": {"kind": kind, "name": name},
            "aggregation": agg,
            "window_seconds": r.window.get().as_secs(),
            "operator": r.operator,
            "threshold": r.threshold,
            "value": value,
            "severity": r.severity,
            "time": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        for url in &r.webhooks {
            let url = url.clone();
            let body = body.to_string();
            let events = self.events.clone();
            let alert = r.name.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_secs(1);
                for attempt in 1..=5 {
                    match post_json(&url, &body).await {
                        Ok(s) if (200..300).contains(&s) => return,
                        Ok(s) => tracing::warn!(%url, status = s, attempt, "alert webhook refused"),
                        Err(e) => tracing::warn!(%url, attempt, "alert webhook failed: {e}"),
                    }
                    if attempt < 5 {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
                events.record(
                    "alert",
                    &alert,
                    format!("webhook {url} failed 5 times; giving up"),
                );
            });
        }
        if let Some(cmd) = &r.command {
            let mut c = tokio::process::Command::new(&cmd[0]);
            c.args(&cmd[1..])
                .env("PORTCULLIS_ALERT", &r.name)
                .env("PORTCULLIS_ALERT_STATE", state)
                .env("PORTCULLIS_ALERT_VALUE", value.to_string())
                .env("PORTCULLIS_ALERT_JSON", body.to_string())
                .stdin(std::process::Stdio::null());
            match c.spawn() {
                Ok(mut child) => {
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                }
                Err(e) => self.events.record(
                    "alert",
                    &r.name,
                    format!("command {:?} failed to start: {e}", cmd[0]),
                ),
            }
        }
    }

    /// Every rule and its state.
    pub fn status(&self) -> Vec<AlertStatus> {
        let rules = self.rules.load_full();
        let st = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        rules
            .iter()
            .map(|r| {
                st.get(&r.name).cloned().unwrap_or_else(|| {
                    let (kind, name) = scope_of(r);
                    AlertStatus {
                        name: r.name.clone(),
                        metric: r.metric.clone(),
                        scope: format!("{kind}:{name}"),
                        state: "Unknown".into(),
                        value: None,
                        condition: format!("{} {}", r.operator, r.threshold),
                        severity: r.severity,
                        since: None,
                    }
                })
            })
            .collect()
    }
}

/// Where a webhook is sent: parsed from an `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// `host:port` to connect to; IPv6 literals keep their brackets (`[::1]:80`).
    pub connect: String,
    /// The URL's authority as written, sent as `Host` (RFC 9110 §7.2).
    pub authority: String,
    /// Path and query, `/` when the URL has none.
    pub path: String,
}

impl WebhookTarget {
    /// Parses a webhook URL. The port defaults to 80 (also for IPv6 literals, which
    /// need brackets: `http://[::1]/hook`). Errors: not `http://`, no host, or not
    /// a valid URI (RFC 3986); the message names what is wrong.
    pub fn parse(url: &str) -> Result<WebhookTarget, String> {
        if !url.starts_with("http://") {
            return Err(format!("`{url}` is not an http:// URL"));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(format!("`{url}` has no host"));
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(WebhookTarget {
            connect: format!("{host}:{port}"),
            authority: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// POSTs `body` as JSON to an `http://host[:port][/path]` URL; returns the status.
async fn post_json(url: &str, body: &str) -> Result<u16, String> {
    let WebhookTarget {
        connect: addr,
        authority,
        path,
    } = WebhookTarget::parse(url)?;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "portcullis-alerts")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::WebhookTarget;

    #[test]
    fn webhook_urls_default_to_port_80_and_keep_ipv6_brackets() {
        let t = WebhookTarget::parse("http://[::1]/hook?x=1").expect("ipv6 without port");
        assert_eq!(t.connect, "[::1]:80");
        assert_eq!(t.authority, "[::1]");
        assert_eq!(t.path, "/hook?x=1");
        let t = WebhookTarget::parse("http://[::1]:9000").expect("ipv6 with port");
        assert_eq!((t.connect.as_str(), t.path.as_str()), ("[::1]:9000", "/"));
        let t = WebhookTarget::parse("http://alerts.example:8080/p").expect("name");
        assert_eq!(t.connect, "alerts.example:8080");
        let t = WebhookTarget::parse("http://127.0.0.1/p").expect("ipv4 without port");
        assert_eq!(t.connect, "127.0.0.1:80");
        for bad in [
            "https://x/",
            "http://",
            "http://[::1/x",
            "http://a b/",
            "ftp://x",
        ] {
            assert!(
                WebhookTarget::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
