//! The meeting point of the app host and the gateway, which never call each other
//! (ARCHITECTURE.md): the host *publishes* each app's state and ready instance
//! addresses here; the gateway's app pools *read* the latest snapshot per request.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// Whether an app is meant to run (section 6: `Running`, `Stopped`, `Starting`, `Degraded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AppState {
    /// All wanted instances are ready.
    Running,
    /// Stopped by the user: the gateway answers 503 `ERRORINFO_APP_STOPPED`.
    Stopped,
    /// Instances are starting; none ready yet, or fewer than wanted.
    Starting,
    /// Instances keep failing (crash loop, backoff).
    Degraded,
}

/// What the gateway needs to route to an app: its state and ready instances.
#[derive(Debug, Clone)]
pub struct AppView {
    /// The app's state.
    pub state: AppState,
    /// Addresses of instances that passed their readiness check, in instance order.
    pub ready: Vec<SocketAddr>,
}

/// A published, atomically replaced view of one app.
pub type AppSlot = Arc<ArcSwap<AppView>>;

/// All published apps, by name. Created once per process; the host adds slots,
/// the gateway looks them up when it builds its tables.
#[derive(Default)]
pub struct AppRegistry {
    slots: RwLock<HashMap<String, AppSlot>>,
}

impl AppRegistry {
    /// The slot of `name`, created (state Starting, no instance) if new.
    pub fn slot(&self, name: &str) -> AppSlot {
        if let Ok(r) = self.slots.read() {
            if let Some(s) = r.get(name) {
                return s.clone();
            }
        }
        let mut w = match self.slots.write() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        w.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ArcSwap::from_pointee(AppView {
                    state: AppState::Starting,
                    ready: Vec::new(),
                }))
            })
            .clone()
    }

    /// Replaces the published view of `name`.
    pub fn publish(&self, name: &str, view: AppView) {
        self.slot(name).store(Arc::new(view));
    }
}
