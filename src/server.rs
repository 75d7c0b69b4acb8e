//! `portcullis run`: wires config, access log, app host, gateway and console;
//! prints `ready`; reloads on SIGHUP and `POST /api/reload`; drains and exits 0
//! on SIGTERM/SIGINT.
//!
//! Reload path: load + validate the file → build new tables (resolving DNS,
//! loading certificates) → bind new listener addresses → swap the tables
//! atomically → stop accepting on removed addresses → start new apps. Any error
//! before the swap leaves the running config untouched.

use crate::accesslog::{AccessLog, AccessLogTarget};
use crate::config::{self, Config, Source};
use crate::console::{self, ApiFailure, AppAction, Control, MetricQuery};
use crate::events::EventLog;
use crate::gateway::health::{Health, HealthRegistry, ServerHealth, ServerReport};
use crate::gateway::listener::Listeners;
use crate::gateway::probe::{probe_now, Prober};
use crate::gateway::proxy::Gateway;
use crate::gateway::upstream::Upstream;
use crate::gateway::{build_snapshot, Snapshot};
use crate::host::AppHost;
use crate::registry::AppRegistry;
use crate::telemetry::alerts::AlertEngine;
use crate::telemetry::metrics::{AppL, InstanceL, PairL};
use crate::telemetry::Telemetry;
use arc_swap::ArcSwap;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// How `run` ended, as a process exit code (section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: clean shutdown.
    Ok = 0,
    /// 1: runtime failure (cannot bind, cannot write state).
    Runtime = 1,
    /// 2: invalid config.
    Invalid = 2,
}

struct Process {
    telemetry: Arc<Telemetry>,
    alerts: Arc<AlertEngine>,
    public_metrics: bool,
    source: Source,
    /// The config now running (what `reload` last swapped in).
    config: ArcSwap<Config>,
    health: Arc<HealthRegistry>,
    events: Arc<EventLog>,
    gateway: Arc<Gateway>,
    listeners: Arc<Listeners>,
    host: Arc<AppHost>,
    registry: Arc<AppRegistry>,
    instance_id: String,
    reload_lock: tokio::sync::Mutex<()>,
    /// Instance label sets on the instance gauges at the last scrape.
    instance_labels: std::sync::Mutex<std::collections::HashSet<InstanceL>>,
}

fn listen_addrs(c: &Config) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = c
        .listeners
        .iter()
        .filter_map(|l| l.listen.parse().ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "portcullis".into())
}

fn summary(c: &Config, warnings: &[config::ConfigError]) -> Value {
    json!({
        "listeners": c.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
        "backend_pools": c.backend_pools.iter().map(|p| &p.name).collect::<Vec<_>>(),
        "request_routing_rules": c.request_routing_rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
        "apps": c.apps.iter().map(|a| &a.name).collect::<Vec<_>>(),
        "warnings": warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
}

impl Process {
    /// Sets the state gauges (healthy hosts, instance figures, queues) from now.
    fn refresh_gauges(&self) {
        let m = &self.telemetry.metrics;
        let snapshot = self.gateway.snapshot.load();
        // Servers that left every pool leave the server-level families too.
        // A pool's servers count from the moment routing can pick them, before
        // the prober's next reconcile puts them in the health table (a new app
        // instance is served at once).
        let mut live = std::collections::HashSet::new();
        for b in snapshot.backends.iter() {
            live.extend(b.health.all().iter().map(|s| s.addr.to_string()));
            live.extend(
                b.pool
                    .servers()
                    .iter()
                    .map(|s| s.socket(&b.settings).to_string()),
            );
        }
        self.telemetry.handles.prune_servers(&live, m);
        let mut instances_now = std::collections::HashSet::new();
        for b in snapshot.backends.iter() {
            let (h, u) = b.health.counts();
            let l = PairL {
                pool: b.pool.name.to_string(),
                settings: b.settings.name.to_string(),
            };
            m.healthy_hosts.get_or_create(&l).set(h as i64);
            m.unhealthy_hosts.get_or_create(&l).set(u as i64);
        }
        for app in self.host.apps() {
            let r = app.report();
            let name = app.name();
            m.app_queue
                .get_or_create(&AppL { app: name.clone() })
                .set(self.registry.admission(&name).waiting() as i64);
            for i in r["instances"].as_array().into_iter().flatten() {
                let l = InstanceL {
                    app: name.clone(),
                    instance: i["id"].as_str().unwrap_or("").to_string(),
                };
                let n = |k: &str| i[k].as_u64().unwrap_or(0) as i64;
                m.app_cpu
                    .get_or_create(&l)
                    .set(i["cpu_seconds"].as_f64().unwrap_or(0.0));
                m.app_memory.get_or_create(&l).set(n("memory_bytes"));
                m.app_private.get_or_create(&l).set(n("private_bytes"));
                m.app_threads.get_or_create(&l).set(n("threads"));
                m.app_handles.get_or_create(&l).set(n("handles"));
                m.app_restarts.get_or_create(&l).set(n("restarts"));
                instances_now.insert(l);
            }
        }
        // Instances that are gone leave the instance gauges (their last values
        // would otherwise stay on /metrics for ever).
        if let Ok(mut seen) = self.instance_labels.lock() {
            for old in seen.difference(&instances_now) {
                m.app_cpu.remove(old);
                m.app_memory.remove(old);
                m.app_private.remove(old);
                m.app_threads.remove(old);
                m.app_handles.remove(old);
                m.app_restarts.remove(old);
            }
            *seen = instances_now;
        }
    }

    /// Records the sampled series (CPU, memory, hosts, queues), then closes the
    /// current 10-second bucket of every series.
    fn sample_and_roll(&self) {
        let series = &self.telemetry.series;
        for b in self.gateway.snapshot.load().backends.iter() {
            let (h, u) = b.health.counts();
            series
                .series("healthy_hosts", "pool", &b.pool.name)
                .record(h as f64);
            series
                .series("unhealthy_hosts", "pool", &b.pool.name)
                .record(u as f64);
        }
        for app in self.host.apps() {
            let r = app.report();
            let name = app.name();
            let sum = |k: &str| -> f64 {
                r["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i[k].as_f64().unwrap_or(0.0))
                    .sum()
            };
            series
                .series("cpu_seconds", "app", &name)
                .record(sum("cpu_seconds"));
            series
                .series("memory_working_set", "app", &name)
                .record(sum("memory_bytes"));
            series
                .series("queue_length", "app", &name)
                .record(self.registry.admission(&name).waiting() as f64);
        }
        series.roll();
    }

    async fn reload(&self) -> Result<Value, Vec<String>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let subject = self.source.to_string();
        let result = async {
            let v = config::load(&self.source)
                .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
            let prev = self.gateway.snapshot.load_full();
            let snap = build_snapshot(
                &v.config,
                &self.registry,
                &self.health,
                Some(&prev),
                &self.instance_id,
            )
            .await?;
            let addrs = listen_addrs(&v.config);
            self.listeners.bind_new(&addrs).await?;
            self.gateway.snapshot.store(Arc::new(snap));
            self.listeners.retain(&addrs);
            self.host.apply(&v.config.apps, &v.config.base_dir);
            let out = summary(&v.config, &v.warnings);
            self.alerts.set_rules(v.config.alerts.clone());
            self.config.store(Arc::new(v.config));
            Ok::<Value, Vec<String>>(out)
        }
        .await;
        match &result {
            Ok(_) => self.events.record("reload", &subject, "config reloaded"),
            Err(e) => self.events.record(
                "reload",
                &subject,
                format!(
                    "reload refused; the old config keeps serving: {}",
                    e.join("; ")
                ),
            ),
        }
        result
    }
}

impl Control for Process {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Value, Vec<String>>> + Send + '_>> {
        Box::pin(Process::reload(self))
    }

    fn backend_health(&self) -> Value {
        let snap = self.gateway.snapshot.load_full();
        let mut pools: Vec<Value> = Vec::new();
        let mut names: Vec<&str> = snap.backends.iter().map(|b| &*b.pool.name).collect();
        names.dedup();
        for pool in names {
            let settings: Vec<Value> = snap
                .backends
                .iter()
                .filter(|b| &*b.pool.name == pool)
                .map(|b| {
                    let mut servers: Vec<ServerReport> = Vec::new();
                    let current: Vec<SocketAddr> = b
                        .pool
                        .servers()
                        .iter()
                        .map(|s| s.socket(&b.settings))
                        .collect();
                    for addr in &current {
                        servers.push(match b.health.get(addr) {
                            Some(h) => h.report(),
                            None => ServerHealth::new(*addr).report(),
                        });
                    }
                    for h in b.health.all() {
                        if !current.contains(&h.addr) {
                            servers.push(h.report());
                        }
                    }
                    for name in b.pool.unresolved() {
                        servers.push(ServerReport {
                            address: name.clone(),
                            health: Health::Unknown,
                            details: format!("DNS could not resolve {name}"),
                            last_probe: None,
                            latency_ms: None,
                            consecutive_failures: 0,
                        });
                    }
                    json!({"name": &*b.settings.name, "probe": b.probe.name, "servers": servers})
                })
                .collect();
            pools.push(json!({"name": pool, "settings": settings}));
        }
        json!({ "pools": pools })
    }

    fn probe(
        &self,
        pool: String,
        settings: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + '_>> {
        Box::pin(async move {
            let snap = self.gateway.snapshot.load_full();
            let chosen: Vec<_> = snap
                .backends
                .iter()
                .filter(|b| {
                    *b.pool.name == *pool
                        && settings.as_deref().is_none_or(|s| *b.settings.name == *s)
                })
                .cloned()
                .collect();
            if chosen.is_empty() {
                return None;
            }
            let mut out = Vec::new();
            for b in chosen {
                let servers = probe_now(&b).await;
                out.push(
                    json!({"name": &*b.settings.name, "probe": b.probe.name, "servers": servers}),
                );
            }
            Some(json!({"name": pool, "settings": out}))
        })
    }

    fn events(&self, since: Option<std::time::Duration>) -> Value {
        serde_json::to_value(self.events.since(since)).unwrap_or(Value::Null)
    }

    fn apps(&self) -> Vec<Value> {
        self.host.apps().iter().map(|a| a.report()).collect()
    }

    fn app_action(
        &self,
        name: String,
        action: AppAction,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ApiFailure>> + Send + '_>> {
        Box::pin(async move {
            let app = self
                .host
                .app(&name)
                .map_err(|e| ApiFailure::not_found(e.to_string()))?;
            if let AppAction::Scale(n) = action {
                if n > 64 {
                    return Err(ApiFailure::bad_request(format!(
                        "instances must be within 0..64, got {n}"
                    )));
                }
            }
            let host = self.host.clone();
            let op = tokio::spawn(async move {
                match action {
                    AppAction::Start => host.start(&name).await,
                    AppAction::Stop => host.stop(&name).await,
                    AppAction::Restart => host.restart(&name).await,
                    AppAction::Scale(n) => host.scale(&name, n).await,
                }
            });
            // Short operations finish before the answer; long ones (drains, a
            // rolling restart) go on in the background: the answer is 202 either way.
            if let Ok(Ok(Err(e))) =
                tokio::time::timeout(std::time::Duration::from_secs(5), op).await
            {
                return Err(ApiFailure::conflict(e.to_string()));
            }
            Ok(app.report())
        })
    }

    fn metrics_text(&self) -> String {
        self.refresh_gauges();
        self.telemetry.metrics.encode()
    }

    fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    fn metric_series(&self, q: MetricQuery) -> Result<Value, ApiFailure> {
        if !crate::telemetry::SERIES.contains(&q.name.as_str()) {
            return Err(ApiFailure::bad_request(format!(
                "unknown metric `{}`; one of {}",
                q.name,
                crate::telemetry::SERIES.join(", ")
            )));
        }
        let now = crate::telemetry::series::now_secs();
        let points: Vec<Value> = self
            .telemetry
            .series
            .get(&q.name, q.kind, &q.scope)
            .map(|s| s.points(q.window, q.grain, now))
            .unwrap_or_default()
            .iter()
            .map(|p| {
                json!({
                    "time": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.time)).to_string(),
                    "average": p.average(),
                    "min": p.min,
                    "max": p.max,
                    "sum": p.sum,
                    "count": p.count,
                })
            })
            .collect();
        Ok(json!({
            "name": q.name,
            "scope": {"kind": q.kind, "name": q.scope},
            "window_seconds": q.window.as_secs(),
            "grain_seconds": q.grain.as_secs(),
            "points": points,
        }))
    }

    fn alert_status(&self) -> Value {
        serde_json::to_value(self.alerts.status()).unwrap_or(Value::Null)
    }

    fn app_logs(&self, name: &str) -> Option<Arc<crate::host::LogRing>> {
        self.host.app(name).ok().map(|a| a.logs.clone())
    }
}

fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Waits until every app that wants instances has one ready, each for at most
/// its `startup_timeout`, so that `ready` means "answers now".
async fn wait_for_first_instances(cfg: &Config, registry: &AppRegistry) {
    for app in cfg.apps.iter().filter(|a| a.instances > 0) {
        let slot = registry.slot(&app.name);
        let deadline = tokio::time::Instant::now() + app.startup_timeout.get();
        while slot.load().ready.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Runs the gateway until SIGTERM/SIGINT. Errors are printed to stderr.
pub async fn run(source: Source) -> Exit {
    // On one core (the single-threaded runtime), small writes go out together.
    crate::gateway::batch::start();
    let v = match config::load(&source) {
        Ok(v) => v,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{source}: {} error(s); not starting", errors.len());
            return Exit::Invalid;
        }
    };
    for w in &v.warnings {
        tracing::warn!("{w}");
    }
    let cfg = &v.config;
    let state_dir = resolve_path(&cfg.base_dir, &cfg.gateway.state_dir);
    let target = match cfg.gateway.access_log.as_deref() {
        Some("-") => AccessLogTarget::Stdout,
        Some("off") => AccessLogTarget::Off,
        Some(p) => AccessLogTarget::File(resolve_path(&cfg.base_dir, Path::new(p))),
        None => AccessLogTarget::File(state_dir.join("logs").join("access.log")),
    };
    let telemetry = Arc::new(Telemetry::from_env());
    let log = match AccessLog::start(&target, telemetry.metrics.access_log_dropped.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot open the access log {target:?}: {e}");
            return Exit::Runtime;
        }
    };
    let token = match console::resolve_token(cfg.console.token.as_deref(), &state_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "cannot create the console token in {}: {e}",
                state_dir.display()
            );
            return Exit::Runtime;
        }
    };
    let instance_id = cfg.gateway.instance_id.clone().unwrap_or_else(host_name);
    let registry = Arc::new(AppRegistry::default());
    let events = Arc::new(EventLog::new(Some(&state_dir.join("events.jsonl"))));
    let host = AppHost::new(registry.clone(), events.clone(), &state_dir);
    let upstream = Arc::new(Upstream::default());
    upstream.spawn_reaper();
    let health = Arc::new(HealthRegistry::default());
    let alerts = AlertEngine::new(cfg.alerts.clone(), telemetry.clone(), events.clone());
    alerts.spawn(cfg.gateway.alert_evaluation_interval.get());
    let gateway = Arc::new(Gateway {
        telemetry: telemetry.clone(),
        snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::empty(&instance_id))),
        events: events.clone(),
        upstream: upstream.clone(),
        log: log.clone(),
    });
    let snap = match build_snapshot(cfg, &registry, &health, None, &instance_id).await {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Exit::Invalid;
        }
    };
    gateway.snapshot.store(Arc::new(snap));
    Prober::new(
        gateway.snapshot.clone(),
        health.clone(),
        events.clone(),
        upstream,
    )
    .spawn();
    let listeners = Listeners::new(gateway.clone());
    let bound = match listeners.bind_new(&listen_addrs(cfg)).await {
        Ok(b) => b,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Exit::Runtime;
        }
    };
    let console_addr: SocketAddr = match cfg.console.listen.parse() {
        Ok(a) => a,
        Err(_) => return Exit::Invalid,
    };
    let console_listener = match tokio::net::TcpListener::bind(console_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {console_addr} (console): {e}");
            return Exit::Runtime;
        }
    };
    let console_local = console_listener.local_addr().unwrap_or(console_addr);
    host.apply(&cfg.apps, &cfg.base_dir);
    wait_for_first_instances(cfg, &registry).await;

    let process = Arc::new(Process {
        telemetry,
        alerts,
        public_metrics: cfg.console.public_metrics,
        source: source.clone(),
        config: ArcSwap::from_pointee(cfg.clone()),
        health,
        events,
        gateway: gateway.clone(),
        listeners: listeners.clone(),
        host: host.clone(),
        registry,
        instance_id,
        reload_lock: tokio::sync::Mutex::new(()),
        instance_labels: std::sync::Mutex::default(),
    });
    {
        let p = process.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::telemetry::series::FINE);
            tick.tick().await;
            loop {
                tick.tick().await;
                p.sample_and_roll();
            }
        });
    }
    let (console_stop, console_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = console::router(&token, process.clone());
    let console_task = tokio::spawn(async move {
        let _ = axum::serve(console_listener, app)
            .with_graceful_shutdown(async {
                let _ = console_stop_rx.await;
            })
            .await;
    });

    let gateway_addrs: Vec<String> = bound
        .iter()
        .map(|(_, local)| {
            let names: Vec<&str> = cfg
                .listeners
                .iter()
                .filter(|l| {
                    l.listen.parse::<SocketAddr>().ok()
                        == bound.iter().find(|(_, lo)| lo == local).map(|(k, _)| *k)
                })
                .map(|l| l.name.as_str())
                .collect();
            format!("{}={local}", names.join(","))
        })
        .collect();
    tracing::info!(
        config = %source,
        listeners = %gateway_addrs.join(" "),
        console = %console_local,
        access_log = ?target,
        "ready"
    );

    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("cannot install signal handlers");
        return Exit::Runtime;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match process.reload().await {
                    Ok(_) => {}
                    Err(errors) => {
                        for e in &errors {
                            tracing::error!("reload refused: {e}");
                        }
                    }
                }
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    listeners.shutdown(cfg.gateway.shutdown_timeout.get()).await;
    let _ = console_stop.send(());
    let _ = console_task.await;
    host.stop_all().await;
    log.flush().await;
    tracing::info!("stopped");
    Exit::Ok
}
