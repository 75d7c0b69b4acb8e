//! The access log: one JSON object per line in the Azure Application Gateway v2
//! shape (section 5), written off the request path.
//!
//! [`AccessRecord`] is both what the gateway writes and what readers parse: the
//! same struct deserializes Azure's own v2 records (portcullis's extra fields are
//! optional), so a tool that reads one reads the other.

mod record;
mod writer;

pub use record::{AccessRecord, Attempt, Properties};
pub use writer::{wait_for_writers, AccessLog, AccessLogTarget};

/// Formats seconds the way Azure's string fields do: `"0.028"`.
pub fn secs_string(d: std::time::Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Seconds as a JSON number with millisecond precision, like `timeTaken`.
pub fn secs_number(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
