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

/// Formats seconds the way Azure's string fields do: `"0.028"`, rounded to the
/// millisecond as `format!("{:.3}")` would round it (half up; durations are
/// whole microseconds or nanoseconds, so no tie is lost to binary fractions).
///
/// The digits are written into a stack buffer from the right: this runs three
/// times per proxied request, and pushing characters one by one onto the
/// string cost about 470 instructions a call (callgrind). Values under ten
/// seconds, nearly all of them, take five fixed places without the loop.
pub fn secs_string(d: std::time::Duration) -> Text {
    // (whole micros + 500) / 1000 in u64: the seconds' micros are a multiple of 1000.
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from((d.subsec_micros() + 500) / 1000));
    if ms < 10_000 {
        // Under ten seconds, nearly every value: five fixed places, no loop.
        let m = ms as u16;
        let digit = |d: u16| b'0' + (d % 10) as u8;
        let short = [
            digit(m / 1000),
            b'.',
            digit(m / 100),
            digit(m / 10),
            digit(m),
        ];
        return Text::from_utf8(short).unwrap_or_else(|_| Text::const_new("0.000"));
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
