//! The app host (the App Service half): runs each `[[apps]]` entry as N
//! supervised child processes and publishes their ready addresses in the
//! [`crate::registry`], where the gateway's app pools read them.
//!
//! An instance gets a free loopback port in `PORT` (plus `PORTCULLIS_APP`,
//! `PORTCULLIS_INSTANCE_ID`), runs in its own process group, and joins its pool
//! only once `GET health_check_path` answers 200–399 within `startup_timeout`.
//! An instance that exits is restarted after a backoff of 1 s doubling to 60 s,
//! reset once it ran for [`STABLE_AFTER`]. Stopping sends SIGTERM to the group,
//! then SIGKILL after `stop_timeout`.
//!
//! It never calls the gateway.

mod instance;

use crate::config::AppConfig;
use crate::registry::{AppRegistry, AppState, AppView};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use instance::InstanceStatus;

/// Run time an instance needs before its restart backoff resets.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Consecutive failed starts after which the app is reported `Degraded`.
pub const DEGRADED_AFTER: u32 = 3;

/// What one app's instances share: config, published statuses.
pub(crate) struct AppShared {
    pub(crate) config: AppConfig,
    pub(crate) registry: Arc<AppRegistry>,
    pub(crate) statuses: Mutex<Vec<InstanceStatus>>,
    pub(crate) log_dir: PathBuf,
    pub(crate) base_dir: PathBuf,
}

impl AppShared {
    /// Recomputes and publishes the app view from the instance statuses.
    pub(crate) fn publish(&self) {
        let Ok(st) = self.statuses.lock() else { return };
        let ready: Vec<SocketAddr> = st.iter().filter_map(|s| s.ready_addr()).collect();
        let failing = st.iter().any(|s| s.consecutive_failures >= DEGRADED_AFTER);
        let state = if failing {
            AppState::Degraded
        } else if ready.len() >= st.len() {
            AppState::Running
        } else {
            AppState::Starting
        };
        self.registry
            .publish(&self.config.name, AppView { state, ready });
    }
}

struct RunningApp {
    shared: Arc<AppShared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// All hosted apps of the process.
pub struct AppHost {
    registry: Arc<AppRegistry>,
    state_dir: PathBuf,
    apps: Mutex<HashMap<String, RunningApp>>,
}

impl AppHost {
    /// A host that publishes into `registry` and keeps instance logs under `state_dir/logs/apps`.
    pub fn new(registry: Arc<AppRegistry>, state_dir: &Path) -> Arc<AppHost> {
        Arc::new(AppHost {
            registry,
            state_dir: state_dir.to_path_buf(),
            apps: Mutex::new(HashMap::new()),
        })
    }

    /// Starts every app of `apps` that is not running yet, with `base_dir` as
    /// the default working directory. Apps already running are left as they are.
    pub fn start_apps(&self, apps: &[AppConfig], base_dir: &Path) {
        for app in apps {
            let running = self
                .apps
                .lock()
                .map(|a| a.contains_key(&app.name))
                .unwrap_or(true);
            if !running {
                self.start_app(app.clone(), base_dir);
            }
        }
    }

    fn start_app(&self, config: AppConfig, base_dir: &Path) {
        let n = config.instances as usize;
        let shared = Arc::new(AppShared {
            log_dir: self.state_dir.join("logs").join("apps").join(&config.name),
            base_dir: base_dir.to_path_buf(),
            registry: self.registry.clone(),
            statuses: Mutex::new(vec![InstanceStatus::default(); n]),
            config,
        });
        shared.publish();
        let (stop, stop_rx) = watch::channel(false);
        let tasks = (0..n)
            .map(|i| tokio::spawn(instance::supervise(shared.clone(), i, stop_rx.clone())))
            .collect();
        let name = shared.config.name.clone();
        if let Ok(mut a) = self.apps.lock() {
            a.insert(
                name,
                RunningApp {
                    shared,
                    stop,
                    tasks,
                },
            );
        }
    }

    /// Instance statuses of `app`, if it exists.
    pub fn statuses(&self, app: &str) -> Option<Vec<InstanceStatus>> {
        let apps = self.apps.lock().ok()?;
        let a = apps.get(app)?;
        let st = a.shared.statuses.lock().ok()?;
        Some(st.clone())
    }

    /// Stops every instance of every app (SIGTERM, then SIGKILL after each app's
    /// `stop_timeout`) and waits for them.
    pub async fn stop_all(&self) {
        let apps: Vec<RunningApp> = self
            .apps
            .lock()
            .map(|mut a| a.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for a in &apps {
            let _ = a.stop.send(true);
        }
        for a in apps {
            for t in a.tasks {
                let _ = t.await;
            }
            a.shared.registry.publish(
                &a.shared.config.name,
                AppView {
                    state: AppState::Stopped,
                    ready: Vec::new(),
                },
            );
        }
    }
}
