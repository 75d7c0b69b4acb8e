//! The data plane: listeners, the HTTP/1 request guard, routing, forwarding,
//! backend pools and the failure vocabulary (product contract sections 3–5).
//!
//! It owns sockets and the request path; it does not start processes (that is
//! `host`) and never calls the host: app pools read what the host publishes in
//! [`crate::registry`]. Tables are an immutable [`Snapshot`] swapped whole on
//! reload, so a request reads one consistent view and takes no lock.

pub mod batch;
pub mod body;
pub mod chunked;
pub mod clock;
pub mod deadline;
pub mod failure;
pub mod fieldname;
pub mod fields;
pub mod guard;
pub mod h1client;
pub mod h1server;
pub mod h2server;
pub mod headers;
pub mod health;
pub mod listener;
pub mod pool;
pub mod probe;
pub mod proxy;
pub mod reqbody;
pub mod routing;
pub mod stall;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use crate::config::{parse_backend_address, parse_status_range, Config, Protocol, RuleType};
use crate::registry::AppRegistry;
use health::HealthRegistry;
use http::HeaderValue;
use pool::{Backend, HostRewrite, Pool, PoolSource, Settings};
use probe::{ProbeHost, ProbeSpec};
use routing::{ListenerInfo, ListenerRoute, PathMap, RuleTarget};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The routes of one bound address.
pub struct PortRoutes {
    /// TLS config when the listeners on this address are https.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Listener routes in evaluation order.
    pub routes: Vec<ListenerRoute>,
}

/// Everything the request path reads, built from one validated config.
pub struct Snapshot {
    /// Bound address → its routes (FxHash: looked up per request, keys from the
    /// configuration).
    pub ports: FxHashMap<SocketAddr, PortRoutes>,
    /// Pools by name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Every (pool, settings) pair a rule uses: what probes check.
    pub backends: Vec<Arc<Backend>>,
    /// `properties.instanceId`.
    pub instance_id: Arc<str>,
    /// `[gateway].request_header_timeout`.
    pub header_timeout: Duration,
    /// `[gateway].client_idle_timeout`.
    pub idle_timeout: Duration,
    /// `[gateway].client_send_timeout`.
    pub send_timeout: Duration,
    /// `[gateway].tunnel_idle_timeout`.
    pub tunnel_idle_timeout: Duration,
}

impl Snapshot {
    /// An empty table (nothing routes).
    pub fn empty(instance_id: &str) -> Snapshot {
        Snapshot {
            ports: FxHashMap::default(),
            pools: HashMap::new(),
            backends: Vec::new(),
            instance_id: instance_id.into(),
            header_timeout: guard::HEAD_TIMEOUT,
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(240),
        }
    }
}

/// Builds the tables for `config`. FQDNs are resolved now; a name that fails keeps
/// the answer it had in `previous`. Errors: files that cannot be loaded
/// (certificates, error pages), each as `path: message`.
pub async fn build_snapshot(
    config: &Config,
    registry: &Arc<AppRegistry>,
    health: &HealthRegistry,
    previous: Option<&Snapshot>,
    instance_id: &str,
) -> Result<Snapshot, Vec<String>> {
    let mut errors = Vec::new();
    let base = &config.base_dir;

    let mut settings: HashMap<&str, Arc<Settings>> = HashMap::new();
    for (i, s) in config.backend_http_settings.iter().enumerate() {
        let tls = if s.protocol == Protocol::Https {
            let roots: Vec<_> = s
                .trusted_root_certificates
                .iter()
                .map(|p| base.join(p))
                .collect();
            match tls::client_config(&roots) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!(
                        "backend_http_settings[{i}].trusted_root_certificates: {e}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let host = if let Some(h) = &s.host_name {
            match HeaderValue::from_str(h) {
                Ok(v) => HostRewrite::Fixed(v),
                Err(_) => {
                    errors.push(format!(
                        "backend_http_settings[{i}].host_name: not a valid header value"
                    ));
                    HostRewrite::Client
                }
            }
        } else if s.pick_host_name_from_backend_address {
            HostRewrite::FromBackend
        } else {
            HostRewrite::Client
        };
        let request_timeout = s.request_timeout.get();
        settings.insert(
            s.name.as_str(),
            Arc::new(Settings {
                name: s.name.as_str().into(),
                port: u16::try_from(s.port).unwrap_or(80),
                tls,
                request_timeout,
                connect_timeout: request_timeout.min(Duration::from_secs(10)),
                affinity_cookie: s
                    .cookie_based_affinity
                    .then(|| s.affinity_cookie_name.as_str().into()),
                host,
                path_override: s.path.as_deref().map(Into::into),
                drain_timeout: s
                    .connection_draining
                    .as_ref()
                    .filter(|d| d.enabled)
                    .map(|d| d.drain_timeout.get()),
                outlier_consecutive_errors: s.outlier_consecutive_errors,
                retry_idempotent_on_reset: s.retry_idempotent_on_reset,
                retry_idempotent_on_timeout: s.retry_idempotent_on_timeout,
            }),
        );
    }
    let settings_cfg: HashMap<&str, &crate::config::BackendHttpSettingsConfig> = config
        .backend_http_settings
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();

    let mut pools: HashMap<String, Arc<Pool>> = HashMap::new();
    for p in &config.backend_pools {
        let pool = if let Some(app) = &p.app {
            let limits = config
                .apps
                .iter()
                .find(|a| &a.name == app)
                .map(|a| pool::AppLimits {
                    max_concurrent_requests: a.max_concurrent_requests,
                    queue_length: a.queue_length,
                    queue_timeout: a.queue_timeout.get(),
                })
                .unwrap_or_default();
            Pool::new_app(&p.name, app, registry.clone(), limits)
        } else {
            let addrs: Vec<_> = p
                .addresses
                .iter()
                .flatten()
                .filter_map(|a| parse_backend_address(a).ok())
                .collect();
            let prev: Vec<_> = previous
                .and_then(|s| s.pools.get(&p.name))
                .map(|old| match &old.source {
                    PoolSource::Static { resolved, .. } => resolved.load().as_ref().clone(),
                    PoolSource::App { .. } => Vec::new(),
                })
                .unwrap_or_default();
            let resolved = pool::resolve(&addrs, &prev).await;
            Pool::new_static(&p.name, addrs, resolved)
        };
        let pool = Arc::new(pool);
        pool::spawn_dns_refresh(&pool);
        pools.insert(p.name.clone(), pool);
    }

    // One Backend per (pool, settings) pair, with its probe.
    let mut backends: HashMap<(String, String), Arc<Backend>> = HashMap::new();
    let mut probe_errors = Vec::new();
    let mut backend = |pool: &str, set: &str| -> Option<Arc<Backend>> {
        let key = (pool.to_string(), set.to_string());
        if let Some(b) = backends.get(&key) {
            return Some(b.clone());
        }
        let p = pools.get(pool)?.clone();
        let st = settings.get(set)?.clone();
        let cfg = settings_cfg.get(set)?;
        let app_path = config
            .backend_pools
            .iter()
            .find(|bp| bp.name == pool)
            .and_then(|bp| bp.app.as_ref())
            .and_then(|a| config.apps.iter().find(|x| &x.name == a))
            .map(|a| a.health_check_path.clone());
        let spec = probe_spec(config, cfg, &st, app_path, &mut probe_errors);
        let b = Arc::new(Backend {
            pool: p,
            settings: st,
            probe: Arc::new(spec),
            health: health.backend(pool, set),
        });
        backends.insert(key, b.clone());
        Some(b)
    };

    // Listeners and their rules, grouped by bound address.
    let mut by_addr: HashMap<SocketAddr, (Vec<ListenerRoute>, Vec<usize>)> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Ok(addr) = l.listen.parse::<SocketAddr>() else {
            continue;
        };
        let mut error_pages = HashMap::new();
        for (code, file) in &l.custom_error_pages {
            let Ok(code) = code.parse::<u16>() else {
                continue;
            };
            match std::fs::read_to_string(base.join(file)) {
                Ok(t) => {
                    error_pages.insert(code, Arc::<str>::from(t));
                }
                Err(e) => errors.push(format!("listeners[{i}].custom_error_pages.{code}: {e}")),
            }
        }
        let info = Arc::new(ListenerInfo {
            name: l.name.as_str().into(),
            host_names: l
                .host_names
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            port: addr.port(),
            port_value: http::HeaderValue::from(addr.port()),
            https: l.protocol == Protocol::Https,
            error_pages,
        });
        let entry = by_addr.entry(addr).or_default();
        entry.1.push(i);
        let Some((ri, rule)) = config
            .request_routing_rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.listener == l.name)
        else {
            continue; // a listener without a rule serves nothing: 404 INVALID_HOST
        };
        let target = match rule.rule_type {
            RuleType::Basic => {
                let (Some(p), Some(s)) = (&rule.backend_pool, &rule.backend_http_settings) else {
                    continue;
                };
                let Some(b) = backend(p, s) else { continue };
                RuleTarget::Basic(b)
            }
            RuleType::PathBased => {
                let Some(m) = rule
                    .url_path_map
                    .as_ref()
                    .and_then(|n| config.url_path_maps.iter().find(|m| &m.name == n))
                else {
                    continue;
                };
                let Some(default) =
                    backend(&m.default_backend_pool, &m.default_backend_http_settings)
                else {
                    continue;
                };
                let mut exact = HashMap::new();
                let mut prefixes = Vec::new();
                for pr in &m.path_rules {
                    let Some(b) = backend(&pr.backend_pool, &pr.backend_http_settings) else {
                        continue;
                    };
                    for path in &pr.paths {
                        let lower = path.to_ascii_lowercase();
                        match lower.strip_suffix('*') {
                            Some(prefix) => prefixes.push((prefix.to_string(), b.clone())),
                            None => {
                                exact.insert(lower, b.clone());
                            }
                        }
                    }
                }
                prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
                RuleTarget::PathMap(PathMap {
                    exact,
                    prefixes,
                    default,
                })
            }
        };
        entry.0.push(ListenerRoute {
            order: (
                rule.priority.unwrap_or(u32::MAX),
                l.host_names.is_empty(),
                ri,
            ),
            listener: info,
            rule_name: rule.name.as_str().into(),
            target,
        });
    }

    let mut ports = FxHashMap::default();
    for (addr, (mut routes, idx)) in by_addr {
        routes.sort_by_key(|r| r.order);
        let https = idx
            .iter()
            .any(|&i| config.listeners[i].protocol == Protocol::Https);
        let tls = if https {
            let mut by_name = Vec::new();
            let mut fallback = None;
            for &i in &idx {
                let l = &config.listeners[i];
                let Some(t) = &l.tls else { continue };
                match tls::load_certified_key(&base.join(&t.certificate), &base.join(&t.key)) {
                    Ok(k) => {
                        if l.host_names.is_empty() || fallback.is_none() {
                            fallback = Some(k.clone());
                        }
                        for h in &l.host_names {
                            by_name.push((h.to_ascii_lowercase(), k.clone()));
                        }
                    }
                    Err(e) => errors.push(format!("listeners[{i}].tls: {e}")),
                }
            }
            match tls::server_config(tls::SniResolver { by_name, fallback }) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("listeners on {addr}: {e}"));
                    None
                }
            }
        } else {
            None
        };
        ports.insert(addr, PortRoutes { tls, routes });
    }

    errors.append(&mut probe_errors);
    let mut backends: Vec<Arc<Backend>> = backends.into_values().collect();
    backends
        .sort_by(|a, b| (&a.pool.name, &a.settings.name).cmp(&(&b.pool.name, &b.settings.name)));
    if errors.is_empty() {
        Ok(Snapshot {
            ports,
            pools,
            backends,
            instance_id: instance_id.into(),
            header_timeout: config.gateway.request_header_timeout.get(),
            idle_timeout: config.gateway.client_idle_timeout.get(),
            send_timeout: config.gateway.client_send_timeout.get(),
            tunnel_idle_timeout: config.gateway.tunnel_idle_timeout.get(),
        })
    } else {
        Err(errors)
    }
}

/// The probe of one (pool, settings) pair: the custom probe the settings name,
/// else Azure's default probe (`<protocol>://127.0.0.1:<port>/`, 30 s, 30 s, 3),
/// whose path for an app pool is the app's `health_check_path`.
fn probe_spec(
    config: &Config,
    settings_cfg: &crate::config::BackendHttpSettingsConfig,
    settings: &Settings,
    app_health_path: Option<String>,
    errors: &mut Vec<String>,
) -> ProbeSpec {
    let custom = settings_cfg
        .probe
        .as_ref()
        .and_then(|n| config.probes.iter().find(|p| &p.name == n));
    let Some(p) = custom else {
        return ProbeSpec {
            name: "default".into(),
            tls: settings.tls.clone(),
            host: ProbeHost::Fixed("127.0.0.1".into()),
            port: None,
            path: app_health_path.unwrap_or_else(|| "/".into()),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            unhealthy_threshold: 3,
            healthy_threshold: 1,
            min_servers: 0,
            status_ranges: vec![(200, 399)],
            body: None,
        };
    };
    let https = match p.protocol {
        Some(proto) => proto == Protocol::Https,
        None => settings.tls.is_some(),
    };
    let tls = if https {
        settings
            .tls
            .clone()
            .or_else(|| match tls::client_config(&[]) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("probe {}: {e}", p.name));
                    None
                }
            })
    } else {
        None
    };
    ProbeSpec {
        name: p.name.clone(),
        tls,
        host: if p.pick_host_name_from_backend_http_settings {
            ProbeHost::FromSettings
        } else {
            ProbeHost::Fixed(p.host.clone().unwrap_or_else(|| "127.0.0.1".into()))
        },
        port: p.port.and_then(|x| u16::try_from(x).ok()),
        path: p.path.clone(),
        interval: p.interval.get(),
        timeout: p.timeout.get(),
        unhealthy_threshold: p.unhealthy_threshold,
        healthy_threshold: p.healthy_threshold,
        min_servers: p.min_servers,
        status_ranges: p
            .match_
            .status_codes
            .iter()
            .filter_map(|c| parse_status_range(c).ok())
            .collect(),
        body: p.match_.body.clone(),
    }
}
