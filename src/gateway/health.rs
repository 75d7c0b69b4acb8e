//! Backend health: the state of every (pool, settings, server), its details in
//! the user's words, and which servers a request may use.
//!
//! States (Azure's portal names): `Unknown` (not probed yet), `Healthy`,
//! `Unhealthy`, `Draining` (removed from rotation, finishing in-flight
//! requests). Transitions, see [`next_state`]: the first probe decides Unknown →
//! Healthy/Unhealthy; a Healthy server becomes Unhealthy on exactly the
//! `unhealthy_threshold`-th consecutive failure and Healthy again on the
//! `healthy_threshold`-th consecutive success. Passive health ejects at once.
//!
//! The request path reads one atomic per server; details sit behind a mutex that
//! only probes and the API touch. State lives in a [`HealthRegistry`] keyed by
//! (pool, settings) names, so a reload keeps what was learned.

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Health of one server for one (pool, settings) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    /// Not probed yet (or its name never resolved).
    Unknown,
    /// Passing probes.
    Healthy,
    /// Failing probes, or ejected by passive health.
    Unhealthy,
    /// Out of rotation, finishing in-flight requests.
    Draining,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            3 => Health::Draining,
            _ => Health::Unknown,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
            Health::Draining => 3,
        }
    }
    /// `Healthy`, `Unhealthy`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "Unknown",
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
            Health::Draining => "Draining",
        }
    }
}

/// The state after one probe result. `failures`/`successes` are the
/// consecutive counts *including* this result.
pub fn next_state(
    current: Health,
    ok: bool,
    failures: u32,
    successes: u32,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
) -> Health {
    match (current, ok) {
        (Health::Draining, _) => Health::Draining,
        (Health::Unknown, true) => Health::Healthy,
        (Health::Unknown, false) => Health::Unhealthy,
        (Health::Healthy, false) if failures >= unhealthy_threshold => Health::Unhealthy,
        (Health::Unhealthy, true) if successes >= healthy_threshold => Health::Healthy,
        (s, _) => s,
    }
}

#[derive(Debug, Clone, Default)]
struct Detail {
    details: String,
    last_probe: Option<SystemTime>,
    latency_ms: Option<u64>,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

/// What the API shows for one server (section 6).
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// `IP:port` (or the FQDN when it never resolved).
    pub address: String,
    /// `Healthy`, `Unhealthy`, `Unknown`, `Draining`.
    pub health: Health,
    /// Why, in one sentence.
    pub details: String,
    /// RFC 3339 time of the last probe.
    pub last_probe: Option<String>,
    /// Latency of the last probe, ms.
    pub latency_ms: Option<u64>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
}

/// One server's health for one (pool, settings) pair.
#[derive(Debug)]
pub struct ServerHealth {
    /// The server.
    pub addr: SocketAddr,
    /// `addr` as text (`IP:port`), for the records, made once.
    pub addr_text: crate::accesslog::Text,
    state: AtomicU8,
    /// Requests on their way to or from this server now (for app instances, the
    /// same counter the app host reads before it stops a drained instance).
    pub in_flight: Arc<AtomicUsize>,
    consecutive_errors: AtomicU32,
    detail: Mutex<Detail>,
    /// Set when the server left its pool: nothing new may be sent to it.
    retired: std::sync::atomic::AtomicBool,
}

/// A change of state, for the activity log.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Before.
    pub from: Health,
    /// After.
    pub to: Health,
    /// The details at the time.
    pub details: String,
}

impl ServerHealth {
    /// A server not probed yet.
    pub fn new(addr: SocketAddr) -> ServerHealth {
        Self::with_counter(addr, Arc::default())
    }

    /// A server not probed yet, counting in-flight requests in `in_flight`.
    pub fn with_counter(addr: SocketAddr, in_flight: Arc<AtomicUsize>) -> ServerHealth {
        ServerHealth {
            addr,
            addr_text: compact_str::ToCompactString::to_compact_string(&addr),
            state: AtomicU8::new(Health::Unknown.as_u8()),
            in_flight,
            consecutive_errors: AtomicU32::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            detail: Mutex::new(Detail {
                details: "not probed yet".into(),
                ..Default::default()
            }),
        }
    }

    /// Current state (one atomic load).
    pub fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set(&self, to: Health, details: String, d: &mut Detail) -> Option<Transition> {
        d.details = details;
        let from = Health::from_u8(self.state.swap(to.as_u8(), Ordering::Relaxed));
        (from != to).then(|| Transition {
            from,
            to,
            details: d.details.clone(),
        })
    }

    /// Applies one probe result.
    pub fn on_probe(
        &self,
        ok: bool,
        details: String,
        latency_ms: Option<u64>,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> Option<Transition> {
        let mut d = self.detail.lock().ok()?;
        d.last_probe = Some(SystemTime::now());
        d.latency_ms = latency_ms;
        if ok {
            d.consecutive_successes += 1;
            d.consecutive_failures = 0;
            self.consecutive_errors.store(0, Ordering::Relaxed);
        } else {
            d.consecutive_failures += 1;
            d.consecutive_successes = 0;
        }
        let to = next_state(
            self.health(),
            ok,
            d.consecutive_failures,
            d.consecutive_successes,
            unhealthy_threshold,
            healthy_threshold,
        );
        // While ejected, keep the ejection reason until the server recovers.
        let keep_reason = !ok || to == Health::Healthy || self.health() != Health::Unhealthy;
        let details = if keep_reason || d.details.starts_with("not probed") {
            details
        } else {
            format!(
                "{} (last probe: {details})",
                d.details.split(" (last probe:").next().unwrap_or("")
            )
        };
        self.set(to, details, &mut d)
    }

    /// Passive health: marks the server Unhealthy now (unless draining).
    pub fn eject(&self, details: String) -> Option<Transition> {
        if self.health() == Health::Draining {
            return None;
        }
        let mut d = self.detail.lock().ok()?;
        d.consecutive_successes = 0;
        self.set(Health::Unhealthy, details, &mut d)
    }

    /// Marks the server Draining.
    pub fn drain(&self, details: String) -> Option<Transition> {
        let mut d = self.detail.lock().ok()?;
        self.set(Health::Draining, details, &mut d)
    }

    /// Marks the server as gone from its pool (no replays to it).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// True once the server left its pool.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Counts a 5xx answer or a timeout; true when `limit` in a row were reached.
    pub fn count_error(&self, limit: u32) -> bool {
        limit > 0 && self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1 >= limit
    }

    /// Resets the error count after a good answer.
    pub fn count_success(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// The API view.
    pub fn report(&self) -> ServerReport {
        let d = self.detail.lock().map(|d| d.clone()).unwrap_or_default();
        ServerReport {
            address: self.addr.to_string(),
            health: self.health(),
            details: d.details,
            last_probe: d
                .last_probe
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            latency_ms: d.latency_ms,
            consecutive_failures: d.consecutive_failures,
        }
    }
}

/// Health of the servers of one (pool, settings) pair.
#[derive(Debug)]
pub struct BackendHealth {
    /// Pool name.
    pub pool: String,
    /// Settings name.
    pub settings: String,
    servers: ArcSwap<FxHashMap<SocketAddr, Arc<ServerHealth>>>,
    /// FQDNs of the pool that have no answer (reported as Unknown).
    pub unresolved: ArcSwap<Vec<String>>,
    edit: Mutex<()>,
}

impl BackendHealth {
    fn new(pool: &str, settings: &str) -> BackendHealth {
        BackendHealth {
            pool: pool.into(),
            settings: settings.into(),
            servers: ArcSwap::from_pointee(FxHashMap::default()),
            unresolved: ArcSwap::from_pointee(Vec::new()),
            edit: Mutex::new(()),
        }
    }

    /// The server's health, if it is known (lock-free).
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<ServerHealth>> {
        self.servers.load().get(addr).cloned()
    }

    /// The server's health, created Unknown (counting in `counter`) if new.
    pub fn get_or_add(&self, addr: SocketAddr, counter: Arc<AtomicUsize>) -> Arc<ServerHealth> {
        if let Some(s) = self.get(&addr) {
            return s;
        }
        let _g = self.edit.lock();
        let mut map = self.servers.load().as_ref().clone();
        let s = map
            .entry(addr)
            .or_insert_with(|| Arc::new(ServerHealth::with_counter(addr, counter)))
            .clone();
        self.servers.store(Arc::new(map));
        s
    }

    /// Forgets a server.
    pub fn remove(&self, addr: &SocketAddr) {
        let _g = self.edit.lock();
        let mut map = self.servers.load().as_ref().clone();
        map.remove(addr);
        self.servers.store(Arc::new(map));
    }

    /// Every known server, sorted by address.
    pub fn all(&self) -> Vec<Arc<ServerHealth>> {
        let mut v: Vec<_> = self.servers.load().values().cloned().collect();
        v.sort_by_key(|s| s.addr);
        v
    }

    /// Counts of (healthy, unhealthy) servers.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.servers.load();
        let h = map
            .values()
            .filter(|s| s.health() == Health::Healthy)
            .count();
        let u = map
            .values()
            .filter(|s| s.health() == Health::Unhealthy)
            .count();
        (h, u)
    }
}

/// All backend health of the process, across reloads.
#[derive(Default)]
pub struct HealthRegistry {
    map: Mutex<HashMap<(String, String), Arc<BackendHealth>>>,
}

impl HealthRegistry {
    /// The health table of (pool, settings), created if new.
    pub fn backend(&self, pool: &str, settings: &str) -> Arc<BackendHealth> {
        let mut m = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry((pool.to_string(), settings.to_string()))
            .or_insert_with(|| Arc::new(BackendHealth::new(pool, settings)))
            .clone()
    }

    /// Drops tables whose (pool, settings) pair is no longer used.
    pub fn retain(&self, keep: &[(String, String)]) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|k, _| keep.contains(k));
        }
    }

    /// Every table, sorted by (pool, settings).
    pub fn all(&self) -> Vec<Arc<BackendHealth>> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (&a.pool, &a.settings).cmp(&(&b.pool, &b.settings)));
        v
    }
}

/// Picks the servers a request may use from `states` (each server's health, in
/// pool order): the Healthy ones; when there are none, the Unknown ones (not
/// probed yet); and Unhealthy ones in pool order to reach `min_servers`.
/// Draining servers never take new requests. Returns indices into the pool.
/// `states` is walked up to three times, so it must give the same states each
/// time (an iterator over values read beforehand).
pub fn usable(states: impl Iterator<Item = Health> + Clone, min_servers: usize) -> Vec<usize> {
    let with = |wanted: Health| {
        states
            .clone()
            .enumerate()
            .filter(move |(_, s)| *s == wanted)
            .map(|(i, _)| i)
    };
    let mut out: Vec<usize> = with(Health::Healthy).collect();
    if out.is_empty() {
        out = with(Health::Unknown).collect();
    }
    if out.len() < min_servers {
        let missing = min_servers - out.len();
        out.extend(with(Health::Unhealthy).take(missing));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    #[test]
    fn unhealthy_exactly_on_the_nth_failure_and_back_on_the_mth_success() {
        let s = ServerHealth::new("127.0.0.1:1".parse().expect("addr"));
        assert_eq!(s.health(), Unknown);
        assert!(s.on_probe(true, "200".into(), Some(1), 3, 2).is_some());
        assert_eq!(s.health(), Healthy);
        assert!(s.on_probe(false, "503".into(), None, 3, 2).is_none());
        assert!(s.on_probe(false, "503".into(), None, 3, 2).is_none());
        assert_eq!(s.health(), Healthy);
        let t = s
            .on_probe(false, "503".into(), None, 3, 2)
            .expect("transition");
        assert_eq!((t.from, t.to), (Healthy, Unhealthy));
        assert!(s.on_probe(true, "200".into(), None, 3, 2).is_none());
        assert_eq!(s.health(), Unhealthy);
        assert!(s.on_probe(true, "200".into(), None, 3, 2).is_some());
        assert_eq!(s.health(), Healthy);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let s = ServerHealth::new("127.0.0.1:1".parse().expect("addr"));
        s.on_probe(true, "".into(), None, 2, 1);
        s.on_probe(false, "".into(), None, 2, 1);
        s.on_probe(true, "".into(), None, 2, 1);
        s.on_probe(false, "".into(), None, 2, 1);
        assert_eq!(s.health(), Healthy);
        assert_eq!(s.report().consecutive_failures, 1);
    }

    #[test]
    fn ejection_is_immediate_and_draining_sticks() {
        let s = ServerHealth::new("127.0.0.1:1".parse().expect("addr"));
        s.on_probe(true, "".into(), None, 3, 1);
        let t = s.eject("refused".into()).expect("transition");
        assert_eq!(t.to, Unhealthy);
        s.drain("removed".into());
        assert!(s.eject("x".into()).is_none());
        assert_eq!(s.health(), Draining);
    }

    #[test]
    fn selection_prefers_healthy_then_unknown_then_min_servers() {
        assert_eq!(
            usable([Healthy, Unhealthy, Healthy].into_iter(), 0),
            vec![0, 2]
        );
        assert_eq!(
            usable([Unknown, Unhealthy, Unknown].into_iter(), 0),
            vec![0, 2]
        );
        assert_eq!(usable([Healthy, Unknown].into_iter(), 0), vec![0]);
        assert!(usable([Unhealthy, Unhealthy].into_iter(), 0).is_empty());
        assert_eq!(
            usable([Unhealthy, Unhealthy, Unhealthy].into_iter(), 2),
            vec![0, 1]
        );
        assert_eq!(usable([Unhealthy, Healthy].into_iter(), 2), vec![1, 0]);
        assert!(usable([Draining].into_iter(), 1).is_empty());
    }

    #[test]
    fn counters_of_consecutive_errors() {
        let s = ServerHealth::new("127.0.0.1:1".parse().expect("addr"));
        assert!(!s.count_error(0));
        assert!(!s.count_error(3));
        assert!(!s.count_error(3));
        s.count_success();
        assert!(!s.count_error(3));
        assert!(!s.count_error(3));
        assert!(s.count_error(3));
    }
}
