//! The app host (the App Service half): runs each `[[apps]]` entry as N
//! supervised child processes and publishes their ready addresses in the
//! [`crate::registry`], where the gateway's app pools read them. It never calls
//! the gateway.
//!
//! - An instance gets a free loopback port in `PORT` (plus `PORTCULLIS_APP`,
//!   `PORTCULLIS_INSTANCE_ID`), runs in its own process group (under
//!   `setpriv --pdeathsig KILL` when available, so it dies with a killed
//!   gateway), and joins the pool once `GET health_check_path` answers 200–399
//!   within `startup_timeout`.
//! - An instance that exits is restarted after 1 s doubling to 60 s
//!   ([`BACKOFF_START`], [`BACKOFF_MAX`]), reset once it ran [`STABLE_AFTER`];
//!   [`DEGRADED_AFTER`] failures in a row make the app `Degraded`.
//! - `restart` and scale-in are zero-downtime: the replacement starts and gets
//!   ready first, then the old instance leaves rotation, its in-flight requests
//!   finish (up to `stop_timeout`), then it gets SIGTERM (SIGKILL after
//!   `stop_timeout`).
//! - `stop` publishes `Stopped` (the gateway answers 503 `ERRORINFO_APP_STOPPED`)
//!   and stops every instance the same way.

mod instance;
mod logs;
mod stats;

use crate::config::AppConfig;
use crate::events::EventLog;
use crate::registry::{AppRegistry, AppState, AppView};
use arc_swap::ArcSwap;
use instance::{Instance, InstanceState};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use instance::InstanceStatus;
pub use logs::LogRing;

/// Run time an instance needs before its restart backoff resets.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Consecutive failed starts or crashes after which the app is `Degraded`.
pub const DEGRADED_AFTER: u32 = 3;

/// Why a lifecycle operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No app by that name.
    #[error("no app is named `{0}`")]
    UnknownApp(String),
    /// Instance count outside 0..=64.
    #[error("instances must be within 0..64, got {0}")]
    BadCount(u32),
    /// The app is stopped.
    #[error("app `{0}` is stopped; start it first")]
    Stopped(String),
}

/// One hosted app.
pub struct App {
    pub(crate) config: ArcSwap<AppConfig>,
    pub(crate) base_dir: PathBuf,
    pub(crate) registry: Arc<AppRegistry>,
    pub(crate) events: Arc<EventLog>,
    pub(crate) log_dir: PathBuf,
    /// Instances wanted while running.
    wanted: AtomicUsize,
    stopped: AtomicBool,
    instances: Mutex<BTreeMap<u64, Arc<Instance>>>,
    next_id: AtomicU64,
    /// Recent output lines of every instance, and the live stream.
    pub logs: Arc<LogRing>,
    op: tokio::sync::Mutex<()>,
    /// Held from reading the instances' states to storing the view they make
    /// ([`App::publish`]), so that of two instances getting ready at once the
    /// later store cannot carry the view made before the other's change.
    publishing: Mutex<()>,
}

impl App {
    /// A stopped app with no instance yet; `wanted` is the config's `instances`.
    /// `log_dir` holds its instances' output files.
    fn new(
        cfg: AppConfig,
        base_dir: PathBuf,
        registry: Arc<AppRegistry>,
        events: Arc<EventLog>,
        log_dir: PathBuf,
    ) -> App {
        App {
            wanted: AtomicUsize::new(cfg.instances as usize),
            config: ArcSwap::from_pointee(cfg),
            base_dir,
            registry,
            events,
            log_dir,
            stopped: AtomicBool::new(true),
            instances: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            logs: Arc::new(LogRing::new(1000)),
            op: tokio::sync::Mutex::new(()),
            publishing: Mutex::new(()),
        }
    }

    /// Its name.
    pub fn name(&self) -> String {
        self.config.load().name.clone()
    }

    /// Recomputes and publishes the app view: ready instances in rotation, and state.
    /// Calls are serialized: each reads the states after the change that caused
    /// it and stores the view before the next call reads, so the view stored
    /// last reflects every change made before it.
    pub(crate) fn publish(&self) {
        let _serial = match self.publishing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let name = self.name();
        if self.stopped.load(Ordering::Relaxed) {
            self.registry.publish(
                &name,
                AppView {
                    state: AppState::Stopped,
                    ready: Vec::new(),
                },
            );
            return;
        }
        let list: Vec<Arc<Instance>> = self
            .instances
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let statuses: Vec<InstanceStatus> = list.iter().map(|i| i.status()).collect();
        let ready: Vec<SocketAddr> = list
            .iter()
            .zip(&statuses)
            .filter(|(i, s)| i.in_rotation() && s.state == InstanceState::Ready)
            .filter_map(|(_, s)| s.port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
        let failing = statuses
            .iter()
            .any(|s| s.consecutive_failures >= DEGRADED_AFTER && s.state != InstanceState::Ready);
        let state = if failing {
            AppState::Degraded
        } else if ready.len() >= self.wanted.load(Ordering::Relaxed) {
            AppState::Running
        } else {
            AppState::Starting
        };
        self.registry.publish(&name, AppView { state, ready });
    }

    fn spawn_instance(self: &Arc<Self>) -> Arc<Instance> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inst = Instance::spawn(self.clone(), format!("{}-{n}", self.name()));
        if let Ok(mut m) = self.instances.lock() {
            m.insert(n, inst.clone());
        }
        inst
    }

    /// Takes `inst` out of rotation, waits for its in-flight requests (at most
    /// `stop_timeout`), stops it and forgets it.
    async fn retire(self: &Arc<Self>, key: u64, inst: Arc<Instance>) {
        inst.leave_rotation();
        self.publish();
        let cfg = self.config.load_full();
        if let Some(addr) = inst.addr() {
            let counter = self.registry.in_flight(addr);
            // A request that picked the instance just before it left rotation
            // gets a moment to register.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = tokio::time::Instant::now() + cfg.stop_timeout.get();
            while counter.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let left = counter.load(Ordering::Relaxed);
            self.events.record(
                "instance",
                &inst.id,
                if left == 0 {
                    "drained: out of rotation, no request in flight".to_string()
                } else {
                    format!(
                        "drain time ({} s) over with {left} request(s) in flight",
                        cfg.stop_timeout.get().as_secs()
                    )
                },
            );
        }
        inst.stop().await;
        if let Ok(mut m) = self.instances.lock() {
            m.remove(&key);
        }
        if let Some(addr) = inst.addr() {
            self.registry.forget(addr);
        }
        self.publish();
    }

    /// Status of every instance, with process figures.
    pub fn report(&self) -> serde_json::Value {
        let view = self.registry.slot(&self.name()).load_full();
        let list: Vec<Arc<Instance>> = self
            .instances
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let instances: Vec<serde_json::Value> = list.iter().map(|i| i.report()).collect();
        serde_json::json!({
            "name": self.name(),
            "state": view.state.as_str(),
            "wanted_instances": if self.stopped.load(Ordering::Relaxed) { 0 } else { self.wanted.load(Ordering::Relaxed) },
            "ready_instances": view.ready.len(),
            "instances": instances,
        })
    }
}

/// All hosted apps of the process.
pub struct AppHost {
    registry: Arc<AppRegistry>,
    events: Arc<EventLog>,
    state_dir: PathBuf,
    apps: Mutex<HashMap<String, Arc<App>>>,
}

impl AppHost {
    /// A host that publishes into `registry`, records into `events`, and keeps
    /// instance logs under `state_dir/logs/apps`.
    pub fn new(
        registry: Arc<AppRegistry>,
        events: Arc<EventLog>,
        state_dir: &Path,
    ) -> Arc<AppHost> {
        Arc::new(AppHost {
            registry,
            events,
            state_dir: state_dir.to_path_buf(),
            apps: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the hosted apps match `apps` (start and reload): new apps start;
    /// apps no longer configured are stopped and forgotten; a changed app keeps
    /// running and uses its new config from its next instance start or restart.
    pub fn apply(self: &Arc<Self>, apps: &[AppConfig], base_dir: &Path) {
        for cfg in apps {
            let existing = self
                .apps
                .lock()
                .ok()
                .and_then(|a| a.get(&cfg.name).cloned());
            match existing {
                Some(app) => {
                    let before = app.config.load().instances;
                    app.config.store(Arc::new(cfg.clone()));
                    if before != cfg.instances {
                        // A changed instance count applies on reload, like `app scale`.
                        let host = self.clone();
                        let (name, n) = (cfg.name.clone(), cfg.instances);
                        tokio::spawn(async move {
                            let _ = host.scale(&name, n).await;
                        });
                    }
                }
                None => {
                    let app = Arc::new(App::new(
                        cfg.clone(),
                        base_dir.to_path_buf(),
                        self.registry.clone(),
                        self.events.clone(),
                        self.state_dir.join("logs").join("apps").join(&cfg.name),
                    ));
                    if let Ok(mut a) = self.apps.lock() {
                        a.insert(cfg.name.clone(), app.clone());
                    }
                    let host = self.clone();
                    let name = cfg.name.clone();
                    tokio::spawn(async move {
                        let _ = host.start(&name).await;
                    });
                }
            }
        }
        let gone: Vec<String> = self
            .apps
            .lock()
            .map(|a| {
                a.keys()
                    .filter(|n| !apps.iter().any(|c| &c.name == *n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in gone {
            let host = self.clone();
            tokio::spawn(async move {
                let _ = host.stop(&name).await;
                if let Ok(mut a) = host.apps.lock() {
                    a.remove(&name);
                }
            });
        }
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Result<Arc<App>, HostError> {
        self.apps
            .lock()
            .ok()
            .and_then(|a| a.get(name).cloned())
            .ok_or_else(|| HostError::UnknownApp(name.to_string()))
    }

    /// Every app, sorted by name.
    pub fn apps(&self) -> Vec<Arc<App>> {
        let mut v: Vec<_> = self
            .apps
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|a| a.name());
        v
    }

    /// Starts a stopped app with its wanted instance count.
    pub async fn start(&self, name: &str) -> Result<(), HostError> {
        let app = self.app(name)?;
        let _op = app.op.lock().await;
        if !app.stopped.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let n = app.wanted.load(Ordering::Relaxed);
        for _ in 0..n {
            app.spawn_instance();
        }
        app.publish();
        self.events
            .record("app", name, format!("started with {n} instance(s)"));
        Ok(())
    }

    /// Stops every instance (drained first); the gateway answers 503 APP_STOPPED.
    pub async fn stop(&self, name: &str) -> Result<(), HostError> {
        let app = self.app(name)?;
        let _op = app.op.lock().await;
        if app.stopped.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let list: Vec<(u64, Arc<Instance>)> = app
            .instances
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        app.publish();
        let mut tasks = Vec::new();
        for (k, inst) in list {
            let app = app.clone();
            tasks.push(tokio::spawn(async move { app.retire(k, inst).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
        app.publish();
        self.events.record("app", name, "stopped");
        Ok(())
    }

    /// Rolling, zero-downtime restart: one instance at a time, the replacement
    /// is ready before the old one leaves rotation.
    pub async fn restart(&self, name: &str) -> Result<(), HostError> {
        let app = self.app(name)?;
        let _op = app.op.lock().await;
        if app.stopped.load(Ordering::Relaxed) {
            return Err(HostError::Stopped(name.to_string()));
        }
        self.events
            .record("app", name, "restart requested (rolling)");
        let old: Vec<(u64, Arc<Instance>)> = app
            .instances
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        for (k, inst) in old {
            let fresh = app.spawn_instance();
            let timeout = app.config.load().startup_timeout.get() + Duration::from_secs(1);
            if !fresh.wait_ready(timeout).await {
                self.events.record(
                    "app",
                    name,
                    format!(
                        "restart stopped: {} did not get ready; {} keeps serving",
                        fresh.id, inst.id
                    ),
                );
                let key = app.instances.lock().ok().and_then(|m| {
                    m.iter()
                        .find(|(_, v)| Arc::ptr_eq(v, &fresh))
                        .map(|(k, _)| *k)
                });
                if let Some(key) = key {
                    app.retire(key, fresh).await;
                }
                return Ok(());
            }
            app.retire(k, inst).await;
        }
        self.events.record("app", name, "restarted");
        Ok(())
    }

    /// Sets the instance count; scale-in drains before it stops.
    pub async fn scale(&self, name: &str, n: u32) -> Result<(), HostError> {
        if n > 64 {
            return Err(HostError::BadCount(n));
        }
        let app = self.app(name)?;
        let _op = app.op.lock().await;
        let before = app.wanted.swap(n as usize, Ordering::Relaxed);
        if !app.stopped.load(Ordering::Relaxed) {
            let current: Vec<(u64, Arc<Instance>)> = app
                .instances
                .lock()
                .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
                .unwrap_or_default();
            if current.len() < n as usize {
                for _ in current.len()..n as usize {
                    app.spawn_instance();
                }
            } else {
                let extra = current.len() - n as usize;
                let mut tasks = Vec::new();
                for (k, inst) in current.into_iter().rev().take(extra) {
                    let app = app.clone();
                    tasks.push(tokio::spawn(async move { app.retire(k, inst).await }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            }
        }
        app.publish();
        self.events.record(
            "app",
            name,
            format!("scaled from {before} to {n} instance(s)"),
        );
        Ok(())
    }

    /// Stops every app (on shutdown) and waits for their instances.
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.apps().iter().map(|a| a.name()).collect();
        let mut tasks = Vec::new();
        for n in names {
            let app = self.app(&n);
            if let Ok(app) = app {
                tasks.push(tokio::spawn(async move {
                    app.stopped.store(true, Ordering::Relaxed);
                    app.publish();
                    let list: Vec<Arc<Instance>> = app
                        .instances
                        .lock()
                        .map(|m| m.values().cloned().collect())
                        .unwrap_or_default();
                    let stops: Vec<_> = list
                        .into_iter()
                        .map(|i| tokio::spawn(async move { i.stop().await }))
                        .collect();
                    for s in stops {
                        let _ = s.await;
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(instances: &[Arc<Instance>]) -> Arc<App> {
        let cfg = crate::config::load_str(
            "[[apps]]\nname = \"web\"\ncommand = [\"true\"]\ninstances = 2\n",
        )
        .expect("config")
        .apps
        .remove(0);
        let app = App::new(
            cfg,
            PathBuf::from("."),
            Arc::new(AppRegistry::default()),
            Arc::new(EventLog::new(None)),
            PathBuf::from("."),
        );
        app.wanted.store(instances.len(), Ordering::Relaxed);
        app.stopped.store(false, Ordering::Relaxed);
        if let Ok(mut m) = app.instances.lock() {
            m.extend(
                instances
                    .iter()
                    .enumerate()
                    .map(|(n, i)| (n as u64, i.clone())),
            );
        }
        Arc::new(app)
    }

    /// Two instances getting ready at the same moment on two threads, each
    /// publishing after its change: the view stored last must hold both (it
    /// once kept the view made before the other's change, and the app stayed
    /// Starting with one instance out of rotation until the next change).
    #[test]
    fn instances_ready_at_once_are_both_published() {
        let a = Instance::detached("web-0", 40001);
        let b = Instance::detached("web-1", 40002);
        let app = app_with(&[a.clone(), b.clone()]);
        let slot = app.registry.slot("web");
        for _ in 0..2000 {
            a.set_state(InstanceState::Starting);
            b.set_state(InstanceState::Starting);
            app.publish();
            let start = Arc::new(std::sync::Barrier::new(2));
            let threads: Vec<_> = [a.clone(), b.clone()]
                .into_iter()
                .map(|inst| {
                    let (app, start) = (app.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        inst.set_state(InstanceState::Ready);
                        app.publish();
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
            let view = slot.load();
            assert_eq!(view.ready.len(), 2, "{view:?}");
            assert_eq!(view.state, AppState::Running);
        }
    }
}
