//! The compiled route table: for a (bound address, Host, path) it finds the
//! listener, the request routing rule and the (backend pool, backend HTTP settings)
//! pair, the way Application Gateway v2 evaluates them (section 3.3, 3.7).
//!
//! Listener choice: rules are evaluated by `priority` (lower first); a rule's
//! listener matches when it is basic (no host names) or one of its host names
//! matches the Host (case-insensitive; `*.example.com` matches any name ending in
//! `.example.com`). Rules without priority come after, multi-site before basic.
//!
//! Path choice within a URL path map: an exact path wins over `/prefix/*`; among
//! prefixes the longest wins; matching is case-insensitive (as Azure v2); no match
//! → the map's defaults.

use super::pool::Backend;
use std::collections::HashMap;
use std::sync::Arc;

/// One listener's static facts.
#[derive(Debug)]
pub struct ListenerInfo {
    /// `listenerName`.
    pub name: Arc<str>,
    /// Host names (lowercase); empty = basic.
    pub host_names: Vec<String>,
    /// Port clients connect to.
    pub port: u16,
    /// `port` as the `X-Forwarded-Port` value, made once.
    pub port_value: http::HeaderValue,
    /// `https` listener.
    pub https: bool,
    /// Status → page template (contents of the configured file).
    pub error_pages: HashMap<u16, Arc<str>>,
}

impl ListenerInfo {
    /// True when this listener serves `host` (already stripped of its port, lowercase).
    pub fn matches(&self, host: &str) -> bool {
        self.host_names.is_empty()
            || self.host_names.iter().any(|p| match p.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
                None => p == host,
            })
    }
}

/// Where a rule sends requests.
#[derive(Debug)]
pub enum RuleTarget {
    /// Basic rule: one backend.
    Basic(Arc<Backend>),
    /// Path-based rule.
    PathMap(PathMap),
}

/// A compiled URL path map.
#[derive(Debug)]
pub struct PathMap {
    /// Exact paths (lowercase) → backend.
    pub exact: HashMap<String, Arc<Backend>>,
    /// `(prefix including trailing '/', lowercase, backend)`, longest first.
    pub prefixes: Vec<(String, Arc<Backend>)>,
    /// When nothing matches.
    pub default: Arc<Backend>,
}

/// One listener with its rule, in evaluation order.
#[derive(Debug)]
pub struct ListenerRoute {
    /// The listener.
    pub listener: Arc<ListenerInfo>,
    /// `ruleName`.
    pub rule_name: Arc<str>,
    /// The rule's target.
    pub target: RuleTarget,
    /// Sort key: (priority or MAX, basic?, file order).
    pub order: (u32, bool, usize),
}

/// The outcome of routing one request.
pub struct Route<'a> {
    /// Listener matched.
    pub listener: &'a Arc<ListenerInfo>,
    /// Rule matched.
    pub rule_name: &'a Arc<str>,
    /// Backend chosen.
    pub backend: &'a Arc<Backend>,
    /// Bytes of the request path consumed by the path rule (replaced by a path override).
    pub matched_prefix_len: usize,
}

/// Picks the listener route for `host` among `routes` (already in evaluation order).
pub fn match_listener<'a>(routes: &'a [ListenerRoute], host: &str) -> Option<&'a ListenerRoute> {
    routes.iter().find(|r| r.listener.matches(host))
}

impl ListenerRoute {
    /// Picks the backend for `path` (without query).
    pub fn route<'a>(&'a self, path: &str) -> Route<'a> {
        let (backend, matched_prefix_len) = match &self.target {
            RuleTarget::Basic(b) => (b, 0),
            RuleTarget::PathMap(m) => m.select(path),
        };
        Route {
            listener: &self.listener,
            rule_name: &self.rule_name,
            backend,
            matched_prefix_len,
        }
    }
}

impl PathMap {
    /// The backend for `path` and how many bytes of it the rule matched.
    pub fn select(&self, path: &str) -> (&Arc<Backend>, usize) {
        if !self.exact.is_empty() {
            let lower = path.to_ascii_lowercase();
            if let Some(b) = self.exact.get(&lower) {
                return (b, path.len());
            }
        }
        for (prefix, b) in &self.prefixes {
            let p = prefix.as_bytes();
            let bare = &p[..p.len() - 1]; // `/images` of `/images/`
            let pb = path.as_bytes();
            if pb.len() >= p.len() && pb[..p.len()].eq_ignore_ascii_case(p) {
                return (b, p.len());
            }
            if pb.eq_ignore_ascii_case(bare) {
                return (b, pb.len());
            }
        }
        (&self.default, 0)
    }
}

/// The path sent to the backend: `override` + the part of `path` after the
/// matched prefix (Azure's "override backend path"), or `path` unchanged.
pub fn backend_path(
    path: &str,
    matched_prefix_len: usize,
    override_prefix: Option<&str>,
) -> String {
    match override_prefix {
        None => path.to_string(),
        Some(o) => {
            let rest = path.get(matched_prefix_len..).unwrap_or("");
            let rest = rest.trim_start_matches('/');
            if rest.is_empty() {
                o.to_string()
            } else if o.ends_with('/') {
                format!("{o}{rest}")
            } else {
                format!("{o}/{rest}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(names: &[&str]) -> ListenerInfo {
        ListenerInfo {
            name: "l".into(),
            host_names: names.iter().map(|s| s.to_string()).collect(),
            port: 80,
            port_value: http::HeaderValue::from_static("80"),
            https: false,
            error_pages: HashMap::new(),
        }
    }

    #[test]
    fn host_matching() {
        assert!(listener(&[]).matches("anything"));
        assert!(listener(&["www.a.com"]).matches("www.a.com"));
        assert!(!listener(&["www.a.com"]).matches("a.com"));
        let w = listener(&["*.a.com"]);
        assert!(w.matches("x.a.com") && w.matches("y.x.a.com"));
        assert!(!w.matches("a.com") && !w.matches("xa.com"));
    }

    #[test]
    fn override_paths() {
        assert_eq!(
            backend_path("/home/", 0, Some("/override/")),
            "/override/home/"
        );
        assert_eq!(
            backend_path("/images/a.png", 8, Some("/static/")),
            "/static/a.png"
        );
        assert_eq!(backend_path("/video", 6, Some("/v")), "/v");
        assert_eq!(backend_path("/x", 0, None), "/x");
    }
}
