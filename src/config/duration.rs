//! Durations in configuration: integer seconds (`30`) or a string with a unit
//! (`"500ms"`, `"30s"`, `"5m"`, `"1h"`), as section 3 of the product contract says.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A configuration duration. Deserializes from an integer number of seconds or a
/// string `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfDuration(pub Duration);

impl ConfDuration {
    /// A duration of `s` whole seconds.
    pub const fn secs(s: u64) -> Self {
        ConfDuration(Duration::from_secs(s))
    }

    /// The wrapped value.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for ConfDuration {
    /// Shortest exact form: `500ms`, `30s`, `5m`, `2h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else {
            let s = ms / 1000;
            if s != 0 && s % 3600 == 0 {
                write!(f, "{}h", s / 3600)
            } else if s != 0 && s % 60 == 0 && s < 3600 {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        }
    }
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"` or a bare integer (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "`{text}` is not a duration (use seconds or a string such as \"500ms\", \"30s\", \"5m\")"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is too large for a duration"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (use ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("integer seconds or a string such as \"500ms\", \"30s\", \"5m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfDuration, E> {
                u64::try_from(v)
                    .map(ConfDuration::secs)
                    .map_err(|_| E::custom(format!("{v} is negative; durations are >= 0")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfDuration, E> {
                Ok(ConfDuration::secs(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfDuration, E> {
                parse_duration(v).map(ConfDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn displays_shortest() {
        assert_eq!(ConfDuration::secs(0).to_string(), "0s");
        assert_eq!(ConfDuration::secs(30).to_string(), "30s");
        assert_eq!(ConfDuration::secs(300).to_string(), "5m");
        assert_eq!(ConfDuration::secs(86400).to_string(), "24h");
        assert_eq!(
            ConfDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }
}
