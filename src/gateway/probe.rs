//! Active health probes (product contract 3.6; Azure's default and custom probes).
//!
//! One loop per (pool, settings, server), on its own connections (never a pooled
//! user connection). A new server is probed within [`RECONCILE_EVERY`] plus a
//! random offset below 250 ms, then every `interval` with ±5% jitter so the probes
//! of many servers do not fire together. The [`Prober`] reconciles the loops
//! with the servers the current tables name (reloads, DNS answers, app
//! instances) and drains or cuts servers that left.

use super::health::{BackendHealth, HealthRegistry, ServerHealth, Transition};
use super::pool::{Backend, Settings};
use super::Snapshot;
use crate::events::EventLog;
use arc_swap::ArcSwap;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How often the prober compares running loops with the wanted servers.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(250);
/// Most body bytes a probe reads (for `match.body`).
pub const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// The Host header a probe sends.
#[derive(Debug, Clone)]
pub enum ProbeHost {
    /// A fixed name (`host`, default `127.0.0.1`).
    Fixed(String),
    /// `pick_host_name_from_backend_http_settings`: the settings' host name, or
    /// the server's name when the settings pick it from the backend address.
    FromSettings,
}

/// A compiled probe for one (pool, settings) pair.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Custom probe name, or `default`.
    pub name: String,
    /// TLS (https probe) client config.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Host header.
    pub host: ProbeHost,
    /// Port override (address pools only).
    pub port: Option<u16>,
    /// Path.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time allowed for one probe.
    pub timeout: Duration,
    /// Consecutive failures that make a Healthy server Unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an Unhealthy server Healthy.
    pub healthy_threshold: u32,
    /// Servers kept in rotation even when Unhealthy.
    pub min_servers: u32,
    /// Accepted status ranges.
    pub status_ranges: Vec<(u16, u16)>,
    /// Substring the body must contain.
    pub body: Option<String>,
}

impl ProbeSpec {
    fn ranges_text(&self) -> String {
        self.status_ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one probe saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeOutcome {
    /// Address probed.
    pub address: String,
    /// Passed.
    pub ok: bool,
    /// Status received, if any.
    pub status: Option<u16>,
    /// Time to the end of the answer, ms.
    pub latency_ms: Option<u64>,
    /// In words: what passed or failed.
    pub details: String,
    /// First 200 characters of the body.
    pub body_excerpt: String,
}

fn host_header(spec: &ProbeSpec, settings: &Settings, server_name: &str) -> String {
    match &spec.host {
        ProbeHost::Fixed(h) => h.clone(),
        ProbeHost::FromSettings => match &settings.host {
            super::pool::HostRewrite::Fixed(v) => v.to_str().unwrap_or("127.0.0.1").to_string(),
            _ => server_name.to_string(),
        },
    }
}

/// Probes `addr` once. `server_name` is the configured FQDN or IP.
pub async fn probe_once(
    spec: &ProbeSpec,
    settings: &Settings,
    addr: SocketAddr,
    server_name: &str,
) -> ProbeOutcome {
    let host = host_header(spec, settings, server_name);
    let started = Instant::now();
    let mut out = ProbeOutcome {
        address: addr.to_string(),
        ok: false,
        status: None,
        latency_ms: None,
        details: String::new(),
        body_excerpt: String::new(),
    };
    let secs = spec.timeout.as_secs_f64();
    let attempt = async {
        let tcp = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(format!("TCP connect to {addr} refused"))
            }
            Err(e) => return Err(format!("TCP connect to {addr} failed: {e}")),
        };
        let _ = tcp.set_nodelay(true);
        match &spec.tls {
            None => exchange(tcp, spec, &host).await,
            Some(cfg) => {
                // The certificate is checked against a name, not the probe's Host
                // (Azure's default probe sends Host 127.0.0.1): a custom probe host,
                // else the settings' host name, else the server's configured name.
                let sni = match (&spec.host, &settings.host) {
                    (ProbeHost::Fixed(h), _) if h.parse::<std::net::IpAddr>().is_err() => h.clone(),
                    (_, super::pool::HostRewrite::Fixed(v)) => {
                        v.to_str().unwrap_or(server_name).to_string()
                    }
                    _ => server_name.to_string(),
                };
                let sni = sni.split(':').next().unwrap_or(&sni).to_string();
                let name = ServerName::try_from(sni.clone())
                    .map_err(|_| format!("TLS problem: `{sni}` is not a valid server name"))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS problem with the backend certificate: {e}"))?;
                exchange(tls, spec, &host).await
            }
        }
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Err(_) => {
            out.details = format!(
                "probe timed out after {secs} s waiting for an answer to GET {} on {addr}",
                spec.path
            );
        }
        Ok(Err(e)) => out.details = e,
        Ok(Ok((status, body))) => {
            let ms = started.elapsed().as_millis() as u64;
            out.status = Some(status);
            out.latency_ms = Some(ms);
            out.body_excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            let status_ok = spec
                .status_ranges
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&status));
            let text = String::from_utf8_lossy(&body);
            if !status_ok {
                out.details = format!(
                    "status mismatch: expected {}, received {status}",
                    spec.ranges_text()
                );
            } else if let Some(want) = spec.body.as_deref().filter(|w| !text.contains(*w)) {
                out.details = format!("body does not contain \"{want}\" (status {status})");
            } else {
                out.ok = true;
                out.details = format!("{status} in {ms} ms");
            }
        }
    }
    out
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    spec: &ProbeSpec,
    host: &str,
) -> Result<(u16, Vec<u8>), String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        spec.path
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("connection failed while sending the probe: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let (status, body_start, length) = loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("connection reset before an answer: {e}"))?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    });
                break (status, end, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return Err("the answer is not valid HTTP".into()),
        }
    };
    let mut body = buf.split_off(body_start);
    // A body with a Content-Length is always read (its first 64 KiB): an answer
    // whose body is cut short is a failed probe, not a healthy server. Other
    // bodies are read only when `match.body` needs them.
    if spec.body.is_some() || length.is_some() {
        let want = length.unwrap_or(PROBE_BODY_LIMIT).min(PROBE_BODY_LIMIT);
        while body.len() < want {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if let Some(total) = length {
                        return Err(format!(
                            "the answer body was cut short after {} of {total} bytes (status {status})",
                            body.len()
                        ));
                    }
                    break;
                }
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    }
    Ok((status, body))
}

type LoopKey = (String, String, SocketAddr);

/// Runs and reconciles the probe loops.
pub struct Prober {
    snapshot: Arc<ArcSwap<Snapshot>>,
    health: Arc<HealthRegistry>,
    events: Arc<EventLog>,
    upstream: Arc<super::upstream::Upstream>,
}

impl Prober {
    /// A prober over the gateway's tables.
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        health: Arc<HealthRegistry>,
        events: Arc<EventLog>,
        upstream: Arc<super::upstream::Upstream>,
    ) -> Arc<Prober> {
        Arc::new(Prober {
            snapshot,
            health,
            events,
            upstream,
        })
    }

    /// Starts the reconcile loop (runs until the process ends).
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut loops: HashMap<LoopKey, JoinHandle<()>> = HashMap::new();
            loop {
                me.reconcile(&mut loops);
                tokio::time::sleep(RECONCILE_EVERY).await;
            }
        });
    }

    /// Records a health transition in the activity log.
    pub fn log_transition(events: &EventLog, b: &BackendHealth, addr: SocketAddr, t: &Transition) {
        events.record(
            "health",
            &format!("{}/{}/{addr}", b.pool, b.settings),
            format!("{} → {}: {}", t.from.as_str(), t.to.as_str(), t.details),
        );
    }

    fn reconcile(self: &Arc<Self>, loops: &mut HashMap<LoopKey, JoinHandle<()>>) {
        let snap = self.snapshot.load_full();
        let mut wanted: HashMap<LoopKey, (Arc<Backend>, Arc<str>)> = HashMap::new();
        let mut pairs = Vec::new();
        for b in &snap.backends {
            pairs.push((b.pool.name.to_string(), b.settings.name.to_string()));
            b.health.unresolved.store(Arc::new(b.pool.unresolved()));
            for s in b.pool.servers().iter() {
                let addr = s.socket(&b.settings);
                wanted.insert(
                    (b.pool.name.to_string(), b.settings.name.to_string(), addr),
                    (b.clone(), s.name.clone()),
                );
            }
        }
        // Start loops for new servers.
        for (key, (backend, name)) in &wanted {
            if !loops.contains_key(key) {
                let server = backend
                    .health
                    .get_or_add(key.2, backend.pool.in_flight_counter(key.2));
                let me = self.clone();
                let backend = backend.clone();
                let name = name.clone();
                let key2 = key.clone();
                loops.insert(
                    key.clone(),
                    tokio::spawn(async move { me.probe_loop(key2, backend, server, name).await }),
                );
            }
        }
        // Stop loops of servers that left; drain or cut them.
        let gone: Vec<LoopKey> = loops
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        let still_used: Vec<SocketAddr> = wanted.keys().map(|k| k.2).collect();
        for key in gone {
            if let Some(h) = loops.remove(&key) {
                h.abort();
            }
            let table = self.health.backend(&key.0, &key.1);
            let Some(server) = table.get(&key.2) else {
                continue;
            };
            let drain = snap
                .backends
                .iter()
                .find(|b| *b.pool.name == *key.0 && *b.settings.name == *key.1)
                .and_then(|b| b.settings.drain_timeout);
            let me = self.clone();
            // App instances are drained and stopped by the app host: never cut them here.
            let app_pool = snap.pools.get(&key.0).is_some_and(|p| p.is_app());
            let cut = !still_used.contains(&key.2) && !app_pool;
            let drain = if app_pool { None } else { drain };
            tokio::spawn(async move { me.retire(table, server, drain, cut).await });
        }
        self.health.retain(&pairs);
    }

    async fn retire(
        &self,
        table: Arc<BackendHealth>,
        server: Arc<ServerHealth>,
        drain: Option<Duration>,
        cut: bool,
    ) {
        let addr = server.addr;
        server.retire();
        let subject = format!("{}/{}/{addr}", table.pool, table.settings);
        if let Some(limit) = drain {
            let in_flight = server.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = server.drain(format!(
                "removed from the pool; draining {in_flight} in-flight request(s) for up to {} s",
                limit.as_secs()
            )) {
                Self::log_transition(&self.events, &table, addr, &t);
            }
            let deadline = Instant::now() + limit;
            while server.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let left = server.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            self.events.record(
                "health",
                &subject,
                if left == 0 {
                    "drained: every in-flight request finished".to_string()
                } else {
                    format!("drain timeout reached with {left} request(s) in flight; cutting them")
                },
            );
        } else {
            self.events
                .record("health", &subject, "removed from the pool");
        }
        if cut {
            self.upstream.close_server(addr);
        }
        table.remove(&addr);
    }

    async fn probe_loop(
        self: Arc<Self>,
        key: LoopKey,
        backend: Arc<Backend>,
        server: Arc<ServerHealth>,
        name: Arc<str>,
    ) {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..250))).await;
        let mut backend = backend;
        loop {
            // Follow reloads: use this pair's current settings and probe.
            if let Some(b) = self
                .snapshot
                .load()
                .backends
                .iter()
                .find(|b| *b.pool.name == *key.0 && *b.settings.name == *key.1)
            {
                backend = b.clone();
            }
            let spec = backend.probe.clone();
            let addr = match spec.port {
                Some(p) if !backend.pool.is_app() => SocketAddr::new(key.2.ip(), p),
                _ => key.2,
            };
            let outcome = probe_once(&spec, &backend.settings, addr, &name).await;
            if let Some(t) = server.on_probe(
                outcome.ok,
                outcome.details.clone(),
                outcome.latency_ms,
                spec.unhealthy_threshold,
                spec.healthy_threshold,
            ) {
                Self::log_transition(&self.events, &backend.health, key.2, &t);
            }
            let jitter = spec.interval.as_secs_f64() * (fastrand::f64() * 0.1 - 0.05);
            let wait = Duration::from_secs_f64((spec.interval.as_secs_f64() + jitter).max(0.05));
            tokio::time::sleep(wait).await;
        }
    }
}

/// Runs the probe of `backend` now against every server, without changing state.
pub async fn probe_now(backend: &Backend) -> Vec<ProbeOutcome> {
    let mut out = Vec::new();
    for s in backend.pool.servers().iter() {
        let addr = match backend.probe.port {
            Some(p) if !backend.pool.is_app() => SocketAddr::new(s.ip, p),
            _ => s.socket(&backend.settings),
        };
        out.push(probe_once(&backend.probe, &backend.settings, addr, &s.name).await);
    }
    for name in backend.pool.unresolved() {
        out.push(ProbeOutcome {
            address: name.clone(),
            ok: false,
            status: None,
            latency_ms: None,
            details: format!("DNS could not resolve {name}"),
            body_excerpt: String::new(),
        });
    }
    out
}
