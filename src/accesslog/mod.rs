//! The access log: one JSON object per line in the Azure Application Gateway v2
//! shape (section 5), written off the request path.
//!
//! [`AccessRecord`] is both what the gateway writes and what readers parse: the
//! same struct deserializes Azure's own v2 records (portcullis's extra fields are
//! optional), so a tool that reads one reads the other.

mod record;
mod writer;

pub use record::{AccessRecord, Attempt, Properties, Text};
pub use writer::{wait_for_writers, AccessLog, AccessLogTarget};

/// Formats seconds the way Azure's string fields do: `"0.028"`.
pub fn secs_string(d: std::time::Duration) -> Text {
    // Rounded to the millisecond as `{:.3}` would, without float formatting.
    let ms = (d.as_micros() + 500) / 1000;
    let mut s = compact_str::ToCompactString::to_compact_string(&(ms / 1000));
    let frac = (ms % 1000) as u32;
    s.push('.');
    s.push(char::from(b'0' + (frac / 100) as u8));
    s.push(char::from(b'0' + (frac / 10 % 10) as u8));
    s.push(char::from(b'0' + (frac % 10) as u8));
    s
}

/// Seconds as a JSON number with millisecond precision, like `timeTaken`.
pub fn secs_number(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::secs_string;
    use std::time::Duration;

    #[test]
    fn seconds_are_written_with_three_decimals() {
        assert_eq!(secs_string(Duration::ZERO), "0.000");
        assert_eq!(secs_string(Duration::from_micros(28_400)), "0.028");
        assert_eq!(secs_string(Duration::from_micros(28_600)), "0.029");
        assert_eq!(secs_string(Duration::from_micros(999_600)), "1.000");
        assert_eq!(secs_string(Duration::from_millis(61_005)), "61.005");
    }
}
