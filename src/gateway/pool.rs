//! Backend pools and backend HTTP settings at run time.
//!
//! A [`Pool`] knows its servers: IP/FQDN addresses (FQDNs resolved at build time
//! and every [`DNS_REFRESH`], keeping the last good answer when DNS fails) or the
//! ready instances of a hosted app, read from the [`crate::registry`]. A
//! [`Backend`] is one (pool, settings) pair, the unit a rule routes to and, later,
//! the unit a probe checks.

use crate::config::{BackendAddress, BackendHost};
use crate::registry::{AppRegistry, AppSlot, AppState, AppView};

/// Concurrency limits of an app pool (section 3.8).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppLimits {
    /// Requests per instance at once; 0 = unlimited.
    pub max_concurrent_requests: u32,
    /// Requests that may wait beyond that.
    pub queue_length: u32,
    /// Longest wait.
    pub queue_timeout: Duration,
}
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::failure::ErrorInfo;
use super::health::{self, BackendHealth, Health, ServerHealth};
use super::probe::ProbeSpec;

/// How often FQDN addresses are resolved again.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);
/// Longest wait for one DNS answer.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// The Host header sent to the backend (section 3.5).
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// The client's Host, unchanged.
    Client,
    /// `host_name`.
    Fixed(HeaderValue),
    /// `pick_host_name_from_backend_address`: the server's FQDN or IP.
    FromBackend,
}

/// Backend HTTP settings, compiled.
#[derive(Debug)]
pub struct Settings {
    /// `backendSettingName`.
    pub name: Arc<str>,
    /// Port for addresses without one.
    pub port: u16,
    /// TLS to the backend when `protocol = "https"`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Time allowed for response headers.
    pub request_timeout: Duration,
    /// Time allowed for a TCP (and TLS) connect: min(request_timeout, 10 s).
    pub connect_timeout: Duration,
    /// Affinity cookie name when cookie-based affinity is on.
    pub affinity_cookie: Option<Arc<str>>,
    /// Host sent to the backend.
    pub host: HostRewrite,
    /// Path override prefix.
    pub path_override: Option<Arc<str>>,
    /// `connection_draining.drain_timeout` when draining is enabled.
    pub drain_timeout: Option<Duration>,
    /// Eject a server after this many 5xx answers or timeouts in a row (0 = off).
    pub outlier_consecutive_errors: u32,
    /// Retry idempotent bodiless requests once elsewhere after a reset
    /// (None: yes for app pools, no for address pools).
    pub retry_idempotent_on_reset: Option<bool>,
    /// Retry idempotent bodiless requests once elsewhere after a timeout.
    pub retry_idempotent_on_timeout: bool,
}

/// One server address of a pool, before the settings give it a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Resolved IP.
    pub ip: IpAddr,
    /// Explicit port (address `:port`, or an app instance's port).
    pub port: Option<u16>,
    /// The name as configured (FQDN or IP), for Host picking and display.
    pub name: Arc<str>,
}

impl ServerAddr {
    /// The socket address under `settings`.
    pub fn socket(&self, settings: &Settings) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(settings.port))
    }
}

/// Where a pool's servers come from.
#[derive(Debug)]
pub enum PoolSource {
    /// `addresses = [...]`.
    Static {
        /// As configured.
        addresses: Vec<BackendAddress>,
        /// The current answer.
        resolved: ArcSwap<Vec<ServerAddr>>,
    },
    /// `app = "NAME"`.
    App {
        /// App name.
        app: String,
        /// Its published view.
        slot: AppSlot,
        /// Where in-flight counters and the admission queue live.
        registry: Arc<AppRegistry>,
        /// `max_concurrent_requests` (per instance, 0 = unlimited), `queue_length`, `queue_timeout`.
        limits: AppLimits,
        /// The servers made from the last published view, and that view: the
        /// instances' addresses are turned into [`ServerAddr`]s (their IP as
        /// text) once per view, not once per request.
        servers: arc_swap::ArcSwapOption<(Arc<AppView>, Arc<Vec<ServerAddr>>)>,
    },
}

/// A backend pool at run time.
#[derive(Debug)]
pub struct Pool {
    /// `backendPoolName`.
    pub name: Arc<str>,
    /// Servers.
    pub source: PoolSource,
    /// Round-robin cursor.
    rr: AtomicUsize,
}

impl Pool {
    /// A pool over static addresses, resolved with [`resolve`].
    pub fn new_static(
        name: &str,
        addresses: Vec<BackendAddress>,
        resolved: Vec<ServerAddr>,
    ) -> Pool {
        Pool {
            name: name.into(),
            source: PoolSource::Static {
                addresses,
                resolved: ArcSwap::from_pointee(resolved),
            },
            rr: AtomicUsize::new(0),
        }
    }

    /// A pool over a hosted app's instances.
    pub fn new_app(name: &str, app: &str, registry: Arc<AppRegistry>, limits: AppLimits) -> Pool {
        Pool {
            name: name.into(),
            source: PoolSource::App {
                app: app.to_string(),
                slot: registry.slot(app),
                registry,
                limits,
                servers: arc_swap::ArcSwapOption::empty(),
            },
            rr: AtomicUsize::new(0),
        }
    }

    /// The in-flight counter for `addr`: shared with the app host for app pools.
    pub fn in_flight_counter(&self, addr: SocketAddr) -> Arc<std::sync::atomic::AtomicUsize> {
        match &self.source {
            PoolSource::App { registry, .. } => registry.in_flight(addr),
            PoolSource::Static { .. } => Arc::default(),
        }
    }

    /// True when some address is an FQDN (needs periodic resolution).
    pub fn has_fqdn(&self) -> bool {
        matches!(&self.source, PoolSource::Static { addresses, .. }
            if addresses.iter().any(|a| matches!(a.host, BackendHost::Fqdn(_))))
    }

    /// The current servers (no rotation), shared: the static pool's last
    /// resolution, or the list made from the app's last published view.
    pub fn servers(&self) -> Arc<Vec<ServerAddr>> {
        match &self.source {
            PoolSource::Static { resolved, .. } => resolved.load_full(),
            PoolSource::App { slot, servers, .. } => {
                let view = slot.load_full();
                if let Some(made) = servers.load().as_ref() {
                    if Arc::ptr_eq(&made.0, &view) {
                        return made.1.clone();
                    }
                }
                let list: Arc<Vec<ServerAddr>> = Arc::new(
                    view.ready
                        .iter()
                        .map(|a| ServerAddr {
                            ip: a.ip(),
                            port: Some(a.port()),
                            name: a.ip().to_string().into(),
                        })
                        .collect(),
                );
                servers.store(Some(Arc::new((view, list.clone()))));
                list
            }
        }
    }

    /// True for an app pool.
    pub fn is_app(&self) -> bool {
        matches!(self.source, PoolSource::App { .. })
    }

    /// FQDNs of the pool without any resolved address.
    pub fn unresolved(&self) -> Vec<String> {
        match &self.source {
            PoolSource::Static {
                addresses,
                resolved,
            } => {
                let r = resolved.load();
                addresses
                    .iter()
                    .filter_map(|a| match &a.host {
                        BackendHost::Fqdn(n) if !r.iter().any(|s| &*s.name == n.as_str()) => {
                            Some(n.clone())
                        }
                        _ => None,
                    })
                    .collect()
            }
            PoolSource::App { .. } => Vec::new(),
        }
    }

    /// Why a pool without usable servers cannot serve: app stopped/unavailable,
    /// else `UPSTREAM_NO_LIVE`.
    fn none_reason(&self, had_servers: bool) -> ErrorInfo {
        match &self.source {
            PoolSource::App { slot, .. } if !had_servers => match slot.load().state {
                AppState::Stopped => ErrorInfo::AppStopped,
                _ => ErrorInfo::AppUnavailable,
            },
            _ => ErrorInfo::UpstreamNoLive,
        }
    }
}

/// The affinity cookie value of a server: 16 hex characters derived from its
/// address (FNV-1a), stable across restarts of the gateway.
pub fn affinity_key(addr: SocketAddr) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A (pool, settings) pair: what a rule routes to and what a probe checks.
#[derive(Debug)]
pub struct Backend {
    /// The pool.
    pub pool: Arc<Pool>,
    /// The settings.
    pub settings: Arc<Settings>,
    /// Its probe (custom or default).
    pub probe: Arc<ProbeSpec>,
    /// Health of its servers (survives reloads).
    pub health: Arc<BackendHealth>,
}

/// One server a request may try.
pub struct Candidate {
    /// The server.
    pub server: ServerAddr,
    /// Its socket address under the settings.
    pub addr: SocketAddr,
    /// Its health entry (None until the prober registered it).
    pub health: Option<Arc<ServerHealth>>,
    /// Its health state when the candidates were chosen (read once).
    pub state: Health,
}

impl Backend {
    /// The servers to try for one request, first choice first: the usable ones
    /// ([`health::usable`]) rotated round-robin, the `prefer`red one (an
    /// affinity key) first when usable. Err: why there is none (app stopped or
    /// unavailable; else `UPSTREAM_NO_LIVE`: empty pool or every server Unhealthy).
    pub fn candidates(&self, prefer: Option<&str>) -> Result<Vec<Candidate>, ErrorInfo> {
        let servers = self.pool.servers();
        // Each server's candidate with its health state, read once (the
        // passes of `usable` see one consistent picture).
        let mut all: Vec<Candidate> = servers
            .iter()
            .map(|server| {
                let addr = server.socket(&self.settings);
                let health = self.health.get(&addr);
                let state = health
                    .as_ref()
                    .map(|h| h.health())
                    .unwrap_or(Health::Unknown);
                Candidate {
                    health,
                    server: server.clone(),
                    addr,
                    state,
                }
            })
            .collect();
        let mut order =
            health::usable(all.iter().map(|c| c.state), self.probe.min_servers as usize);
        if order.is_empty() {
            return Err(self.pool.none_reason(!all.is_empty()));
        }
        let n = order.len();
        let mut start = self.pool.rr.fetch_add(1, Ordering::Relaxed) % n;
        if let Some(key) = prefer {
            if let Some(k) = order.iter().position(|&i| affinity_key(all[i].addr) == key) {
                start = k;
            }
        }
        let least_busy_first = match &self.pool.source {
            PoolSource::App { limits, .. } => {
                limits.max_concurrent_requests > 0 && prefer.is_none()
            }
            _ => false,
        };
        if !least_busy_first && n == all.len() && order.iter().enumerate().all(|(k, &i)| k == i) {
            // Every server usable, in pool order (all Healthy, or all Unknown):
            // the candidates are the list itself, rotated; no second list.
            all.rotate_left(start);
            return Ok(all);
        }
        order.rotate_left(start);
        if least_busy_first {
            // With a per-instance limit, the least busy instance goes first.
            let load = |i: &usize| {
                all[*i]
                    .health
                    .as_ref()
                    .map(|h| h.in_flight.load(Ordering::Relaxed))
                    .unwrap_or(0)
            };
            order.sort_by_key(load);
        }
        let mut slots: Vec<Option<Candidate>> = all.into_iter().map(Some).collect();
        Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
    }
}

/// Resolves `addresses`: IPs as they are, FQDNs through the system resolver.
/// A name that fails to resolve keeps its entries from `previous`.
pub async fn resolve(addresses: &[BackendAddress], previous: &[ServerAddr]) -> Vec<ServerAddr> {
    let mut out = Vec::new();
    for a in addresses {
        match &a.host {
            BackendHost::Ip(ip) => out.push(ServerAddr {
                ip: *ip,
                port: a.port,
                name: ip.to_string().into(),
            }),
            BackendHost::Fqdn(name) => {
                let answer = tokio::time::timeout(
                    DNS_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), a.port.unwrap_or(0))),
                )
                .await;
                let mut ips: Vec<IpAddr> = match answer {
                    Ok(Ok(it)) => it.map(|sa| sa.ip()).collect(),
                    _ => Vec::new(),
                };
                ips.sort();
                ips.dedup();
                if ips.is_empty() {
                    tracing::warn!(name = %name, "DNS resolution failed; keeping the last answer");
                    out.extend(
                        previous
                            .iter()
                            .filter(|s| &*s.name == name.as_str() && s.port == a.port)
                            .cloned(),
                    );
                } else {
                    let label: Arc<str> = name.as_str().into();
                    out.extend(ips.into_iter().map(|ip| ServerAddr {
                        ip,
                        port: a.port,
                        name: label.clone(),
                    }));
                }
            }
        }
    }
    out
}

/// Re-resolves the FQDNs of `pool` every [`DNS_REFRESH`] until the pool is dropped.
pub fn spawn_dns_refresh(pool: &Arc<Pool>) {
    if !pool.has_fqdn() {
        return;
    }
    let weak: Weak<Pool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(DNS_REFRESH).await;
            let Some(pool) = weak.upgrade() else { return };
            if let PoolSource::Static {
                addresses,
                resolved,
            } = &pool.source
            {
                let prev = resolved.load_full();
                let next = resolve(addresses, &prev).await;
                if *prev != next {
                    tracing::info!(pool = %pool.name, servers = next.len(), "DNS answer changed");
                    resolved.store(Arc::new(next));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_servers_are_made_once_per_published_view() {
        let registry = Arc::new(AppRegistry::default());
        let pool = Pool::new_app("p", "web", registry.clone(), AppLimits::default());
        assert!(pool.servers().is_empty());
        let a: SocketAddr = "127.0.0.1:4001".parse().expect("addr");
        let b: SocketAddr = "127.0.0.2:4002".parse().expect("addr");
        registry.publish(
            "web",
            AppView {
                state: AppState::Running,
                ready: vec![a, b],
            },
        );
        let first = pool.servers();
        assert_eq!(first.len(), 2);
        assert_eq!((&*first[0].name, first[0].port), ("127.0.0.1", Some(4001)));
        assert_eq!((&*first[1].name, first[1].port), ("127.0.0.2", Some(4002)));
        // The same view again: the same names, not made anew.
        let again = pool.servers();
        assert!(Arc::ptr_eq(&first[1].name, &again[1].name));
        // A new view is seen at once.
        registry.publish(
            "web",
            AppView {
                state: AppState::Running,
                ready: vec![b],
            },
        );
        let after = pool.servers();
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].ip, after[0].port), (b.ip(), Some(b.port())));
    }
}
