//! The access log: one JSON object per line in the Azure Application Gateway v2
//! shape (section 5), written off the request path.
//!
//! [`AccessRecord`] is both what the gateway writes and what readers parse: the
//! same struct deserializes Azure's own v2 records (portcullis's extra fields are
//! optional), so a tool that reads one reads the other.

mod json;
mod record;
mod writer;

pub use record::{AccessRecord, Attempt, Properties, Text};
pub use writer::{wait_for_writers, AccessLog, AccessLogTarget};

/// Values under ten seconds with millisecond precision ("0.000" to "9.999"),
/// 5 bytes each, value `ms` at `ms * 5`: nearly every latency a record holds.
/// Built at compile time (50,000 bytes of read-only data).
static UNDER_TEN: &str = match std::str::from_utf8(&under_ten_table()) {
    Ok(s) => s,
    Err(_) => panic!("the table is ASCII"),
};

/// The bytes of [`UNDER_TEN`].
const fn under_ten_table() -> [u8; 50_000] {
    let mut t = [0u8; 50_000];
    let mut ms = 0;
    while ms < 10_000 {
        let at = ms * 5;
        t[at] = b'0' + (ms / 1000) as u8;
        t[at + 1] = b'.';
        t[at + 2] = b'0' + (ms / 100 % 10) as u8;
        t[at + 3] = b'0' + (ms / 10 % 10) as u8;
        t[at + 4] = b'0' + (ms % 10) as u8;
        ms += 1;
    }
    t
}

/// `"d.ddd"` for `ms` milliseconds under ten seconds, borrowed from the table.
fn under_ten(ms: u64) -> Option<&'static str> {
    let at = usize::try_from(ms).ok().filter(|&m| m < 10_000)? * 5;
    UNDER_TEN.get(at..at + 5)
}

/// Formats seconds the way Azure's string fields do: `"0.028"`, rounded to the
/// millisecond as `format!("{:.3}")` would round it (half up; durations are
/// whole microseconds or nanoseconds, so no tie is lost to binary fractions).
///
/// This runs three times per proxied request. Values under ten seconds, nearly
/// all of them, are borrowed from a table made at compile time, so the text is
/// a static reference: no digits computed, no UTF-8 check, no copy (digits
/// written into a stack buffer and checked cost about 160 instructions a call,
/// callgrind, docs/benchmarks.md section 2). Longer ones are written from the
/// right into a stack buffer.
pub fn secs_string(d: std::time::Duration) -> Text {
    // (whole micros + 500) / 1000 in u64: the seconds' micros are a multiple of 1000.
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from((d.subsec_micros() + 500) / 1000));
    if let Some(s) = under_ten(ms) {
        return Text::const_new(s);
    }
    // u64::MAX has 20 digits: with the point, 24 bytes, which CompactString keeps inline.
    let mut buf = [b'0'; 24];
    let mut i = buf.len();
    let mut rest = ms;
    for k in 0.. {
        if k == 3 {
            i -= 1;
            buf[i] = b'.';
        }
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 && k >= 3 {
            break;
        }
    }
    Text::from_utf8(&buf[i..]).unwrap_or_else(|_| Text::const_new("0.000"))
}

/// The JSON number serde_json writes for `v` when `v` is a whole number of
/// milliseconds under ten seconds, as [`secs_number`] makes them: the shortest
/// text that reads back as `v` (`0.0`, `0.01`, `0.003`, `1.5`), cut from the
/// [`UNDER_TEN`] table's `"d.ddd"` by dropping trailing zeros after the
/// second character of the fraction. `None` for any other value (the caller
/// formats it in full). A unit test holds every one of the 10,000 to
/// serde_json's text.
pub(crate) fn ms_number_text(v: f64) -> Option<&'static str> {
    let m = (v * 1000.0).round();
    // The f64 must be exactly what secs_number made from `m`, bit for bit.
    if !(0.0..10_000.0).contains(&m) || m / 1000.0 != v {
        return None;
    }
    let text = under_ten(m as u64)?;
    let b = text.as_bytes();
    let keep = if b[4] != b'0' {
        5
    } else if b[3] != b'0' {
        4
    } else {
        3
    };
    text.get(..keep)
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

    #[test]
    fn every_value_under_ten_seconds_comes_from_the_table_as_format_writes_it() {
        for ms in 0..10_000u64 {
            let d = Duration::from_millis(ms);
            assert_eq!(secs_string(d), format!("{:.3}", d.as_secs_f64()), "{ms} ms");
        }
        assert_eq!(secs_string(Duration::from_micros(9_999_499)), "9.999");
        assert_eq!(secs_string(Duration::from_micros(9_999_500)), "10.000");
    }

    #[test]
    fn seconds_match_the_rounded_integer_division_over_many_magnitudes() {
        let mut micros: u64 = 1;
        while micros < u64::MAX / 7 {
            for d in [micros, micros + 499, micros + 500, micros * 3 + 1] {
                let ms = (u128::from(d) + 500) / 1000;
                let expected = format!("{}.{:03}", ms / 1000, ms % 1000);
                assert_eq!(secs_string(Duration::from_micros(d)), expected, "{d} us");
            }
            micros = micros * 7 + 3;
        }
        assert_eq!(secs_string(Duration::from_nanos(1_499_999)), "0.001");
        assert_eq!(secs_string(Duration::from_nanos(1_500_000)), "0.002");
    }
}
