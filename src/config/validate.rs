//! Range and reference checks (section 3). Collects every error with its path and
//! never stops at the first one. Ranges are the Azure ones in `azure-facts.md`.

use super::{BackendPoolConfig, ConfDuration, Config, ConfigError, Protocol, RuleType};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A config that passed [`validate`], and the warnings it raised (e.g. a probe
/// whose timeout is longer than its interval).
#[derive(Debug, Clone)]
pub struct Validated {
    /// The checked config.
    pub config: Config,
    /// Non-fatal remarks, each with its path.
    pub warnings: Vec<ConfigError>,
}

/// A backend address as written in a pool: host (IP or FQDN) and optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    /// The IP literal or the FQDN.
    pub host: BackendHost,
    /// Explicit port; else the settings' port.
    pub port: Option<u16>,
}

/// IP literal or name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendHost {
    /// Used as is.
    Ip(IpAddr),
    /// Resolved at start and periodically.
    Fqdn(String),
}

impl std::fmt::Display for BackendHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendHost::Ip(ip) => write!(f, "{ip}"),
            BackendHost::Fqdn(n) => f.write_str(n),
        }
    }
}

/// Parses `IP`, `IP:port`, `[v6]:port`, `FQDN`, `FQDN:port`.
pub fn parse_backend_address(text: &str) -> Result<BackendAddress, String> {
    let t = text.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("`{t}`: port 0 is outside 1..65535"));
        }
        return Ok(BackendAddress {
            host: BackendHost::Ip(sa.ip()),
            port: Some(sa.port()),
        });
    }
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(BackendAddress {
            host: BackendHost::Ip(ip),
            port: None,
        });
    }
    let (name, port) = match t.rsplit_once(':') {
        Some((n, p)) => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{t}`: port `{p}` is outside 1..65535"))?;
            (n, Some(port))
        }
        None => (t, None),
    };
    if !is_dns_name(name) {
        return Err(format!("`{t}` is neither an IP address nor a host name"));
    }
    Ok(BackendAddress {
        host: BackendHost::Fqdn(name.to_ascii_lowercase()),
        port,
    })
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A listener host name: exact (`www.example.com`) or wildcard (`*.example.com`).
pub fn is_host_name_pattern(name: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => is_dns_name(rest),
        None => is_dns_name(name),
    }
}

/// Parses a probe's `match.status_codes` entry: `"200"` or `"200-399"`.
pub fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let parse = |s: &str| -> Result<u16, String> {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("`{text}` is not a status code or range within 100..599"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{text}`: range start is above its end"));
            }
            Ok((a, b))
        }
        None => {
            let c = parse(text)?;
            Ok((c, c))
        }
    }
}

struct Checker {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    fn range_u32(&mut self, path: String, v: u32, lo: u32, hi: u32) {
        if v < lo || v > hi {
            self.err(path, format!("{v} is outside {lo}..{hi}"));
        }
    }

    fn range_dur(&mut self, path: String, v: ConfDuration, lo: u64, hi: u64) {
        let d = v.get();
        if d < Duration::from_secs(lo) || d > Duration::from_secs(hi) {
            self.err(path, format!("{v} is outside {lo}s..{hi}s"));
        }
    }

    fn unique<'a>(&mut self, section: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            if n.trim().is_empty() {
                self.err(format!("{section}[{i}].name"), "must not be empty");
            } else if !seen.insert(n) {
                self.err(
                    format!("{section}[{i}].name"),
                    format!("`{n}` is used by an earlier entry; names must be unique"),
                );
            }
        }
    }

    fn url_path(&mut self, path: String, p: &str) {
        if !p.starts_with('/') {
            self.err(path, format!("`{p}` must start with `/`"));
        } else if p
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0 || b == b' ')
        {
            self.err(path, "must not contain CR, LF, NUL or spaces");
        }
    }
}

/// Checks ranges and references of `config`. Errors: every problem, with paths.
pub fn validate(config: Config) -> Result<Validated, Vec<ConfigError>> {
    let mut c = Checker {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let cfg = &config;

    if cfg.console.listen.parse::<SocketAddr>().is_err() {
        c.err(
            "console.listen",
            format!("`{}` is not an IP:port address", cfg.console.listen),
        );
    }
    if let Some(t) = &cfg.console.token {
        if t.trim().is_empty() {
            c.err("console.token", "must not be empty");
        }
    }
    c.range_dur(
        "gateway.shutdown_timeout".into(),
        cfg.gateway.shutdown_timeout,
        0,
        3600,
    );

    c.unique("listeners", cfg.listeners.iter().map(|l| l.name.as_str()));
    c.unique(
        "backend_pools",
        cfg.backend_pools.iter().map(|l| l.name.as_str()),
    );
    c.unique(
        "backend_http_settings",
        cfg.backend_http_settings.iter().map(|l| l.name.as_str()),
    );
    c.unique("probes", cfg.probes.iter().map(|l| l.name.as_str()));
    c.unique(
        "request_routing_rules",
        cfg.request_routing_rules.iter().map(|l| l.name.as_str()),
    );
    c.unique(
        "url_path_maps",
        cfg.url_path_maps.iter().map(|l| l.name.as_str()),
    );
    c.unique("apps", cfg.apps.iter().map(|l| l.name.as_str()));

    let pools: HashSet<&str> = cfg.backend_pools.iter().map(|p| p.name.as_str()).collect();
    let settings: HashSet<&str> = cfg
        .backend_http_settings
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let probes: HashSet<&str> = cfg.probes.iter().map(|p| p.name.as_str()).collect();
    let maps: HashSet<&str> = cfg.url_path_maps.iter().map(|p| p.name.as_str()).collect();
    let apps: HashSet<&str> = cfg.apps.iter().map(|p| p.name.as_str()).collect();
    let listeners: HashSet<&str> = cfg.listeners.iter().map(|p| p.name.as_str()).collect();
    // Entries that failed to parse were already reported; references to them are not.
    let (mut pools, mut settings, mut probes, mut maps, mut apps, mut listeners) =
        (pools, settings, probes, maps, apps, listeners);
    for (section, name) in &cfg.unparsed {
        let set = match section.as_str() {
            "backend_pools" => &mut pools,
            "backend_http_settings" => &mut settings,
            "probes" => &mut probes,
            "url_path_maps" => &mut maps,
            "apps" => &mut apps,
            "listeners" => &mut listeners,
            _ => continue,
        };
        set.insert(name.as_str());
    }

    // Listeners, and what shares an address.
    let mut by_addr: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        match l.listen.parse::<SocketAddr>() {
            Ok(a) => by_addr.entry(a).or_default().push(i),
            Err(_) => c.err(
                format!("{p}.listen"),
                format!("`{}` is not an IP:port address", l.listen),
            ),
        }
        if l.protocol == Protocol::Https && l.tls.is_none() {
            c.err(
                format!("{p}.tls"),
                "an https listener needs tls.certificate and tls.key",
            );
        }
        if l.protocol == Protocol::Http && l.tls.is_some() {
            c.err(format!("{p}.tls"), "tls is only for protocol = \"https\"");
        }
        if let Some(tls) = &l.tls {
            for (k, f) in [("certificate", &tls.certificate), ("key", &tls.key)] {
                let full = cfg.base_dir.join(f);
                if !full.is_file() {
                    c.err(
                        format!("{p}.tls.{k}"),
                        format!("file {} does not exist", full.display()),
                    );
                }
            }
        }
        for (j, h) in l.host_names.iter().enumerate() {
            if !is_host_name_pattern(h) {
                c.err(
                    format!("{p}.host_names[{j}]"),
                    format!("`{h}` is not a host name or `*.domain` wildcard"),
                );
            }
        }
        for (code, file) in &l.custom_error_pages {
            let ok = code
                .parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .is_some();
            if !ok {
                c.err(
                    format!("{p}.custom_error_pages.{code}"),
                    "key must be a status code within 400..599",
                );
            }
            let full = cfg.base_dir.join(file);
            if !full.is_file() {
                c.err(
                    format!("{p}.custom_error_pages.{code}"),
                    format!("file {} does not exist", full.display()),
                );
            }
        }
    }
    let mut addrs: Vec<_> = by_addr.into_iter().collect();
    addrs.sort();
    for (addr, idx) in addrs {
        let first = &cfg.listeners[idx[0]];
        let mut basic = 0;
        let mut hosts: HashSet<String> = HashSet::new();
        for &i in &idx {
            let l = &cfg.listeners[i];
            if l.protocol != first.protocol {
                c.err(
                    format!("listeners[{i}].protocol"),
                    format!(
                        "listeners on {addr} must share one protocol; `{}` uses {}",
                        first.name,
                        first.protocol.as_str()
                    ),
                );
            }
            if l.host_names.is_empty() {
                basic += 1;
                if basic > 1 {
                    c.err(
                        format!("listeners[{i}].host_names"),
                        format!("a second basic listener on {addr}; give it host_names"),
                    );
                }
            }
            for h in &l.host_names {
                if !hosts.insert(h.to_ascii_lowercase()) {
                    c.err(
                        format!("listeners[{i}].host_names"),
                        format!("`{h}` is served by another listener on {addr}"),
                    );
                }
            }
        }
    }

    for (i, pool) in cfg.backend_pools.iter().enumerate() {
        check_pool(&mut c, i, pool, &apps);
    }

    for (i, s) in cfg.backend_http_settings.iter().enumerate() {
        let p = format!("backend_http_settings[{i}]");
        c.range_u32(format!("{p}.port"), s.port, 1, 65535);
        c.range_dur(format!("{p}.request_timeout"), s.request_timeout, 1, 86400);
        c.range_u32(
            format!("{p}.outlier_consecutive_errors"),
            s.outlier_consecutive_errors,
            0,
            1000,
        );
        if let Some(probe) = &s.probe {
            if !probes.contains(probe.as_str()) {
                c.err(format!("{p}.probe"), format!("no probe is named `{probe}`"));
            }
        }
        if let Some(path) = &s.path {
            c.url_path(format!("{p}.path"), path);
        }
        if let Some(h) = &s.host_name {
            if h.trim().is_empty() || h.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                c.err(
                    format!("{p}.host_name"),
                    format!("`{h}` is not a host name"),
                );
            }
        }
        if s.host_name.is_some() && s.pick_host_name_from_backend_address {
            c.err(
                format!("{p}.pick_host_name_from_backend_address"),
                "set either host_name or pick_host_name_from_backend_address, not both",
            );
        }
        if s.affinity_cookie_name.is_empty()
            || !s
                .affinity_cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            c.err(
                format!("{p}.affinity_cookie_name"),
                "must be letters, digits, `_`, `-` or `.`",
            );
        }
        if let Some(d) = &s.connection_draining {
            c.range_dur(
                format!("{p}.connection_draining.drain_timeout"),
                d.drain_timeout,
                1,
                3600,
            );
        }
        for (j, f) in s.trusted_root_certificates.iter().enumerate() {
            let full = cfg.base_dir.join(f);
            if !full.is_file() {
                c.err(
                    format!("{p}.trusted_root_certificates[{j}]"),
                    format!("file {} does not exist", full.display()),
                );
            }
        }
    }

    for (i, pr) in cfg.probes.iter().enumerate() {
        let p = format!("probes[{i}]");
        if let Some(port) = pr.port {
            c.range_u32(format!("{p}.port"), port, 1, 65535);
        }
        c.url_path(format!("{p}.path"), &pr.path);
        c.range_dur(format!("{p}.interval"), pr.interval, 1, 86400);
        c.range_dur(format!("{p}.timeout"), pr.timeout, 1, 86400);
        c.range_u32(
            format!("{p}.unhealthy_threshold"),
            pr.unhealthy_threshold,
            1,
            20,
        );
        c.range_u32(
            format!("{p}.healthy_threshold"),
            pr.healthy_threshold,
            1,
            20,
        );
        if pr.host.is_some() && pr.pick_host_name_from_backend_http_settings {
            c.err(
                format!("{p}.pick_host_name_from_backend_http_settings"),
                "set either host or pick_host_name_from_backend_http_settings, not both",
            );
        }
        if pr.match_.status_codes.is_empty() {
            c.err(
                format!("{p}.match.status_codes"),
                "must list at least one code",
            );
        }
        for (j, sc) in pr.match_.status_codes.iter().enumerate() {
            if let Err(e) = parse_status_range(sc) {
                c.err(format!("{p}.match.status_codes[{j}]"), e);
            }
        }
        if let Some(b) = &pr.match_.body {
            if b.chars().count() > 4090 {
                c.err(format!("{p}.match.body"), "is longer than 4090 characters");
            }
        }
        if pr.timeout > pr.interval {
            c.warnings.push(ConfigError::new(
                format!("{p}.timeout"),
                format!(
                    "{} is longer than interval {}; probes will overlap",
                    pr.timeout, pr.interval
                ),
            ));
        }
    }

    let mut rule_of_listener: HashMap<&str, usize> = HashMap::new();
    let mut priorities: HashMap<u32, usize> = HashMap::new();
    for (i, r) in cfg.request_routing_rules.iter().enumerate() {
        let p = format!("request_routing_rules[{i}]");
        if !listeners.contains(r.listener.as_str()) {
            c.err(
                format!("{p}.listener"),
                format!("no listener is named `{}`", r.listener),
            );
        } else if let Some(prev) = rule_of_listener.insert(r.listener.as_str(), i) {
            c.err(
                format!("{p}.listener"),
                format!(
                    "listener `{}` is already used by request_routing_rules[{prev}]",
                    r.listener
                ),
            );
        }
        if let Some(pri) = r.priority {
            c.range_u32(format!("{p}.priority"), pri, 1, 20000);
            if let Some(prev) = priorities.insert(pri, i) {
                c.err(
                    format!("{p}.priority"),
                    format!(
                        "{pri} is used by request_routing_rules[{prev}]; priorities must be unique"
                    ),
                );
            }
        }
        match r.rule_type {
            RuleType::Basic => {
                if r.url_path_map.is_some() {
                    c.err(
                        format!("{p}.url_path_map"),
                        "only for rule_type = \"path_based\"",
                    );
                }
                match &r.backend_pool {
                    None => c.err(
                        format!("{p}.backend_pool"),
                        "a basic rule needs a backend_pool",
                    ),
                    Some(n) if !pools.contains(n.as_str()) => c.err(
                        format!("{p}.backend_pool"),
                        format!("no backend pool is named `{n}`"),
                    ),
                    _ => {}
                }
                match &r.backend_http_settings {
                    None => c.err(
                        format!("{p}.backend_http_settings"),
                        "a basic rule needs backend_http_settings",
                    ),
                    Some(n) if !settings.contains(n.as_str()) => c.err(
                        format!("{p}.backend_http_settings"),
                        format!("no backend HTTP settings are named `{n}`"),
                    ),
                    _ => {}
                }
            }
            RuleType::PathBased => {
                for (k, v) in [
                    ("backend_pool", &r.backend_pool),
                    ("backend_http_settings", &r.backend_http_settings),
                ] {
                    if v.is_some() {
                        c.err(
                            format!("{p}.{k}"),
                            "a path_based rule takes them from its url_path_map",
                        );
                    }
                }
                match &r.url_path_map {
                    None => c.err(
                        format!("{p}.url_path_map"),
                        "a path_based rule needs a url_path_map",
                    ),
                    Some(n) if !maps.contains(n.as_str()) => c.err(
                        format!("{p}.url_path_map"),
                        format!("no url path map is named `{n}`"),
                    ),
                    _ => {}
                }
            }
        }
    }

    for (i, m) in cfg.url_path_maps.iter().enumerate() {
        let p = format!("url_path_maps[{i}]");
        if !pools.contains(m.default_backend_pool.as_str()) {
            c.err(
                format!("{p}.default_backend_pool"),
                format!("no backend pool is named `{}`", m.default_backend_pool),
            );
        }
        if !settings.contains(m.default_backend_http_settings.as_str()) {
            c.err(
                format!("{p}.default_backend_http_settings"),
                format!(
                    "no backend HTTP settings are named `{}`",
                    m.default_backend_http_settings
                ),
            );
        }
        let mut names = HashSet::new();
        let mut seen_paths = HashSet::new();
        for (j, r) in m.path_rules.iter().enumerate() {
            let rp = format!("{p}.path_rules[{j}]");
            if !names.insert(r.name.as_str()) {
                c.err(
                    format!("{rp}.name"),
                    format!("`{}` is used twice in this map", r.name),
                );
            }
            if r.paths.is_empty() {
                c.err(format!("{rp}.paths"), "must list at least one path");
            }
            for (k, path) in r.paths.iter().enumerate() {
                c.url_path(format!("{rp}.paths[{k}]"), path);
                let star = path.find('*');
                if star.is_some_and(|s| s + 1 != path.len() || !path.ends_with("/*")) {
                    c.err(
                        format!("{rp}.paths[{k}]"),
                        format!("`{path}`: `*` is only allowed as a final `/*`"),
                    );
                }
                if !seen_paths.insert(path.to_ascii_lowercase()) {
                    c.err(
                        format!("{rp}.paths[{k}]"),
                        format!("`{path}` appears twice in this map"),
                    );
                }
            }
            if !pools.contains(r.backend_pool.as_str()) {
                c.err(
                    format!("{rp}.backend_pool"),
                    format!("no backend pool is named `{}`", r.backend_pool),
                );
            }
            if !settings.contains(r.backend_http_settings.as_str()) {
                c.err(
                    format!("{rp}.backend_http_settings"),
                    format!(
                        "no backend HTTP settings are named `{}`",
                        r.backend_http_settings
                    ),
                );
            }
        }
    }

    for (i, a) in cfg.apps.iter().enumerate() {
        let p = format!("apps[{i}]");
        if a.command.is_empty() || a.command[0].trim().is_empty() {
            c.err(format!("{p}.command"), "must name a program (argv list)");
        }
        c.range_u32(format!("{p}.instances"), a.instances, 0, 64);
        c.url_path(format!("{p}.health_check_path"), &a.health_check_path);
        c.range_dur(format!("{p}.startup_timeout"), a.startup_timeout, 1, 3600);
        c.range_dur(format!("{p}.stop_timeout"), a.stop_timeout, 0, 3600);
        c.range_dur(format!("{p}.queue_timeout"), a.queue_timeout, 0, 3600);
        c.range_u32(format!("{p}.queue_length"), a.queue_length, 0, 100_000);
        for k in a.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                c.err(format!("{p}.env.{k}"), "is not a valid variable name");
            }
        }
        if let Some(w) = &a.working_dir {
            let full = cfg.base_dir.join(w);
            if !full.is_dir() {
                c.err(
                    format!("{p}.working_dir"),
                    format!("folder {} does not exist", full.display()),
                );
            }
        }
    }

    c.range_dur(
        "gateway.request_header_timeout".into(),
        cfg.gateway.request_header_timeout,
        1,
        3600,
    );
    c.range_dur(
        "gateway.client_idle_timeout".into(),
        cfg.gateway.client_idle_timeout,
        1,
        3600,
    );
    c.range_dur(
        "gateway.client_send_timeout".into(),
        cfg.gateway.client_send_timeout,
        1,
        3600,
    );
    c.range_dur(
        "gateway.tunnel_idle_timeout".into(),
        cfg.gateway.tunnel_idle_timeout,
        1,
        86400,
    );
    c.range_dur(
        "gateway.alert_evaluation_interval".into(),
        cfg.gateway.alert_evaluation_interval,
        1,
        3600,
    );
    c.unique("alerts", cfg.alerts.iter().map(|a| a.name.as_str()));
    for (i, a) in cfg.alerts.iter().enumerate() {
        let p = format!("alerts[{i}]");
        if !crate::telemetry::SERIES.contains(&a.metric.as_str()) {
            c.err(
                format!("{p}.metric"),
                format!(
                    "`{}` is not one of {}",
                    a.metric,
                    crate::telemetry::SERIES.join(", ")
                ),
            );
        }
        let set = [&a.scope.app, &a.scope.pool, &a.scope.listener]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if set != 1 {
            c.err(
                format!("{p}.scope"),
                "name exactly one of app, pool, listener",
            );
        }
        if let Some(n) = &a.scope.app {
            if !apps.contains(n.as_str()) {
                c.err(format!("{p}.scope.app"), format!("no app is named `{n}`"));
            }
        }
        if let Some(n) = &a.scope.pool {
            if !pools.contains(n.as_str()) {
                c.err(
                    format!("{p}.scope.pool"),
                    format!("no backend pool is named `{n}`"),
                );
            }
        }
        if let Some(n) = &a.scope.listener {
            if !listeners.contains(n.as_str()) {
                c.err(
                    format!("{p}.scope.listener"),
                    format!("no listener is named `{n}`"),
                );
            }
        }
        c.range_dur(format!("{p}.window"), a.window, 10, 86400);
        if ![">", ">=", "<", "<="].contains(&a.operator.as_str()) {
            c.err(
                format!("{p}.operator"),
                format!("`{}` is not one of >, >=, <, <=", a.operator),
            );
        }
        if !a.threshold.is_finite() {
            c.err(format!("{p}.threshold"), "must be a finite number");
        }
        if a.severity > 4 {
            c.err(
                format!("{p}.severity"),
                format!("{} is outside 0..4", a.severity),
            );
        }
        for (j, w) in a.webhooks.iter().enumerate() {
            if let Err(e) = crate::telemetry::alerts::WebhookTarget::parse(w) {
                c.err(format!("{p}.webhooks[{j}]"), e);
            }
        }
        if let Some(cmd) = &a.command {
            if cmd.is_empty() || cmd[0].trim().is_empty() {
                c.err(format!("{p}.command"), "must name a program (argv list)");
            }
        }
    }

    if c.errors.is_empty() {
        Ok(Validated {
            config,
            warnings: c.warnings,
        })
    } else {
        Err(c.errors)
    }
}

fn check_pool(c: &mut Checker, i: usize, pool: &BackendPoolConfig, apps: &HashSet<&str>) {
    let p = format!("backend_pools[{i}]");
    match (&pool.addresses, &pool.app) {
        (Some(_), Some(_)) => c.err(
            format!("{p}.app"),
            "a pool has either addresses or an app, not both",
        ),
        (None, Some(app)) => {
            if !apps.contains(app.as_str()) {
                c.err(format!("{p}.app"), format!("no app is named `{app}`"));
            }
        }
        (Some(list), None) => {
            for (j, a) in list.iter().enumerate() {
                if let Err(e) = parse_backend_address(a) {
                    c.err(format!("{p}.addresses[{j}]"), e);
                }
            }
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use super::*;

    #[test]
    fn backend_addresses() {
        let a = parse_backend_address("10.0.0.1:8080").expect("ip:port");
        assert_eq!(a.port, Some(8080));
        let a = parse_backend_address("10.0.0.1").expect("ip");
        assert_eq!(a.port, None);
        let a = parse_backend_address("[::1]:81").expect("v6");
        assert_eq!(a.port, Some(81));
        let a = parse_backend_address("App.Example.com:443").expect("fqdn");
        assert_eq!(a.host, BackendHost::Fqdn("app.example.com".into()));
        assert!(parse_backend_address("bad host").is_err());
        assert!(parse_backend_address("x.com:0").is_err());
        assert!(parse_backend_address("x.com:70000").is_err());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("99").is_err());
    }

    #[test]
    fn collects_range_and_reference_errors() {
        let text = r#"
            [gateway]
            client_idle_timeout = 0
            client_send_timeout = "2h"
            tunnel_idle_timeout = "25h"
            [[listeners]]
            name = "l"
            listen = "127.0.0.1:8080"
            [[backend_http_settings]]
            name = "s"
            port = 0
            request_timeout = 0
            [[probes]]
            name = "p"
            interval = 0
            path = "nope"
            unhealthy_threshold = 21
            [[request_routing_rules]]
            name = "r"
            listener = "l"
            backend_pool = "ghost"
            backend_http_settings = "s"
        "#;
        let errs = validate(load_str(text).expect("parses")).expect_err("invalid");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for want in [
            "gateway.client_idle_timeout: 0s is outside 1s..3600s",
            "gateway.client_send_timeout: 2h is outside 1s..3600s",
            "gateway.tunnel_idle_timeout: 25h is outside 1s..86400s",
            "backend_http_settings[0].port: 0 is outside 1..65535",
            "backend_http_settings[0].request_timeout: 0s is outside 1s..86400s",
            "probes[0].interval: 0s is outside 1s..86400s",
            "probes[0].path: `nope` must start with `/`",
            "probes[0].unhealthy_threshold: 21 is outside 1..20",
            "request_routing_rules[0].backend_pool: no backend pool is named `ghost`",
        ] {
            assert!(
                text.iter().any(|t| t == want),
                "missing {want:?} in {text:#?}"
            );
        }
    }
}
