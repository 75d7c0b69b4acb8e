//! Configuration: TOML → [`Config`] → [`validate()`].
//!
//! Owns the file model, its defaults, the built-in default config and the checks;
//! it opens no sockets and starts no tasks. The file is parsed table by table (each
//! `[[listeners]]` entry on its own) so that one malformed item does not hide the
//! errors of the others: [`load_str`] returns every error, each with its field path.

mod duration;
mod model;
mod validate;

pub use duration::{parse_duration, ConfDuration};
pub use model::*;
pub use validate::{
    is_host_name_pattern, parse_backend_address, parse_status_range, validate, BackendAddress,
    BackendHost, Validated,
};

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config, with the path of the field it is about
/// (`probes[0].interval`) or an empty path for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `listeners[1].listen`.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl ConfigError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Where a config came from, for messages and for relative paths.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file given with `-c` or found as `./portcullis.toml`.
    File(PathBuf),
    /// The built-in default (section 3.9).
    BuiltIn,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::BuiltIn => f.write_str("built-in default"),
        }
    }
}

/// The built-in default (section 3.9): a listener on `127.0.0.1:8080` in front of
/// the app `demo`, two instances of `portcullis demo-app`, the default probe, the
/// console on `127.0.0.1:9090`.
pub const BUILT_IN_DEFAULT: &str = r#"
[[listeners]]
name = "default-listener"
listen = "127.0.0.1:8080"

[[backend_pools]]
name = "demo-pool"
app = "demo"

[[backend_http_settings]]
name = "demo-settings"
request_timeout = 30

[[request_routing_rules]]
name = "default-rule"
listener = "default-listener"
priority = 100
backend_pool = "demo-pool"
backend_http_settings = "demo-settings"

[[apps]]
name = "demo"
command = ["portcullis", "demo-app"]
instances = 2
health_check_path = "/health"
"#;

/// Finds the config to run: `explicit`, else `./portcullis.toml`, else the built-in default.
pub fn locate(explicit: Option<&Path>) -> Source {
    match explicit {
        Some(p) => Source::File(p.to_path_buf()),
        None => {
            let here = PathBuf::from("portcullis.toml");
            if here.exists() {
                Source::File(here)
            } else {
                Source::BuiltIn
            }
        }
    }
}

/// Reads, parses and validates the config of `source`. Errors: every problem found.
pub fn load(source: &Source) -> Result<Validated, Vec<ConfigError>> {
    let (text, base) = match source {
        Source::BuiltIn => (
            BUILT_IN_DEFAULT.to_string(),
            std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        ),
        Source::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                vec![ConfigError::new(
                    "",
                    format!("cannot read {}: {e}", p.display()),
                )]
            })?;
            let base = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let base = std::fs::canonicalize(&base).unwrap_or(base);
            (text, base)
        }
    };
    let (mut config, mut errors) = parse(&text);
    config.base_dir = base;
    let positions = config.positions.clone();
    match validate(config) {
        Ok(v) if errors.is_empty() => Ok(v),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more.into_iter().map(|e| renumber(e, &positions)));
            Err(errors)
        }
    }
}

/// Rewrites `section[i]` at the start of an error path to the entry's position
/// in the file (entries that failed to parse shift the others).
fn renumber(
    mut e: ConfigError,
    positions: &std::collections::HashMap<String, Vec<usize>>,
) -> ConfigError {
    let Some(open) = e.path.find('[') else {
        return e;
    };
    let Some(close) = e.path[open..].find(']').map(|c| open + c) else {
        return e;
    };
    let section = &e.path[..open];
    let Ok(i) = e.path[open + 1..close].parse::<usize>() else {
        return e;
    };
    if let Some(&real) = positions.get(section).and_then(|p| p.get(i)) {
        e.path = format!("{section}[{real}]{}", &e.path[close + 1..]);
    }
    e
}

/// Parses TOML text into a [`Config`] without checking ranges or references.
/// Errors: every key or type problem found, each with its path.
pub fn load_str(text: &str) -> Result<Config, Vec<ConfigError>> {
    let (config, errors) = parse(text);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Parses what it can: the entries that parse, and every error of those that do
/// not (a TOML syntax error stops everything: nothing else is reliable then).
pub fn parse(text: &str) -> (Config, Vec<ConfigError>) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            return (
                Config::default(),
                vec![ConfigError::new("", syntax_message(&e))],
            );
        }
    };
    let mut errors = Vec::new();
    let mut config = Config::default();
    let mut unparsed = Vec::new();
    let mut positions = std::collections::HashMap::new();
    for (key, value) in table {
        match key.as_str() {
            "gateway" => {
                if let Some(v) = item(value, "gateway", &mut errors) {
                    config.gateway = v;
                }
            }
            "console" => {
                if let Some(v) = item(value, "console", &mut errors) {
                    config.console = v;
                }
            }
            "listeners" => {
                config.listeners = list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "backend_pools" => {
                config.backend_pools = list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "backend_http_settings" => {
                config.backend_http_settings =
                    list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "probes" => {
                config.probes = list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "request_routing_rules" => {
                config.request_routing_rules =
                    list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "url_path_maps" => {
                config.url_path_maps = list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            "apps" => config.apps = list(value, &key, &mut errors, &mut unparsed, &mut positions),
            "alerts" => {
                config.alerts = list(value, &key, &mut errors, &mut unparsed, &mut positions)
            }
            other => errors.push(ConfigError::new(
                other,
                "unknown section (expected gateway, console, listeners, backend_pools, \
                 backend_http_settings, probes, request_routing_rules, url_path_maps, apps or alerts)",
            )),
        }
    }
    config.unparsed = unparsed;
    config.positions = positions;
    (config, errors)
}

fn syntax_message(e: &toml::de::Error) -> String {
    let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => format!("TOML syntax error at byte {}: {msg}", span.start),
        None => format!("TOML syntax error: {msg}"),
    }
}

fn item<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            // The TOML library adds "in `key`" and blank lines: keep one line.
            let msg = e.into_inner().to_string();
            let first = msg
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("invalid value");
            errors.push(ConfigError::new(full, first.to_string()));
            None
        }
    }
}

fn list<T: DeserializeOwned>(
    value: toml::Value,
    key: &str,
    errors: &mut Vec<ConfigError>,
    unparsed: &mut Vec<(String, String)>,
    positions: &mut std::collections::HashMap<String, Vec<usize>>,
) -> Vec<T> {
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
                let parsed = item(v, &format!("{key}[{i}]"), errors);
                match (&parsed, name) {
                    (Some(_), _) => positions.entry(key.to_string()).or_default().push(i),
                    (None, Some(n)) => unparsed.push((key.to_string(), n)),
                    (None, None) => {}
                }
                parsed
            })
            .collect(),
        _ => {
            errors.push(ConfigError::new(
                key,
                format!("must be an array of tables ([[{key}]])"),
            ));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Randomized robustness with a fixed seed, so every `cargo test` repeats it
    /// (the coverage-guided search is the `config` target in `fuzz/`): mutated
    /// configs never panic the parser or the validator; they are accepted or
    /// refused with errors.
    #[test]
    fn mutated_configs_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let base = BUILT_IN_DEFAULT.as_bytes();
        let alphabet = b"[]{}=\"'#.,0123456789-_ abcxyz\n\t";
        for _ in 0..3000 {
            let mut m = base.to_vec();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..m.len());
                match rng.u8(..3) {
                    0 => {
                        m.remove(i);
                    }
                    1 => m.insert(i, alphabet[rng.usize(..alphabet.len())]),
                    _ => m[i] = alphabet[rng.usize(..alphabet.len())],
                }
            }
            let text = String::from_utf8_lossy(&m);
            let (cfg, errors) = parse(&text);
            if errors.is_empty() {
                let _ = validate(cfg);
            } else {
                assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
        }
    }

    #[test]
    fn built_in_default_is_valid() {
        let c = load_str(BUILT_IN_DEFAULT).expect("parses");
        let v = validate(c).expect("valid");
        assert_eq!(v.config.apps[0].instances, 2);
    }

    #[test]
    fn reports_every_item_error_with_path() {
        let text = r#"
            [[listeners]]
            name = "a"
            listen = "127.0.0.1:80"
            colour = "blue"

            [[listeners]]
            name = "b"
            listen = 5

            [[probes]]
            name = "p"
            interval = "3 fortnights"

            [bogus]
        "#;
        let errs = load_str(text).expect_err("must fail");
        let paths: Vec<_> = errs.iter().map(|e| e.path.clone()).collect();
        assert!(
            paths.contains(&"listeners[0].colour".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"listeners[1].listen".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"probes[0].interval".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"bogus".to_string()), "{paths:?}");
        assert!(errs.iter().any(|e| e.message.contains("colour")));
        assert!(errs.iter().all(|e| !e.message.contains('\n')));
    }

    #[test]
    fn errors_name_the_entry_as_written_even_after_a_parse_failure() {
        let dir = std::env::temp_dir().join(format!("pc-renumber-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[[listeners]]\nname = \"a\"\nlisten = 5\n[[listeners]]\nname = \"b\"\nlisten = \"nope\"\n",
        )
        .expect("write");
        let errs = load(&Source::File(f)).expect_err("invalid");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("listeners[0].listen: invalid type")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t == "listeners[1].listen: `nope` is not an IP:port address"),
            "{text:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
