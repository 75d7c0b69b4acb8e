//! The record's JSON line, written with its keys as fixed text.
//!
//! `serde_json::to_writer` on the derived `Serialize` escapes every key byte by
//! byte on every record: 41 keys, about 610 of a record's 1,000 bytes, which
//! made the record's JSON the largest user-space item of a proxied request
//! (docs/benchmarks.md section 2). Here the keys and the punctuation between
//! them are constants; numbers and every string value that needs escaping go
//! through serde_json's own `Serializer`, a string with nothing to escape
//! is copied as it is ([`contents`]), and a value the gateway made from
//! characters JSON never escapes is copied without looking ([`made`]); the
//! quotes around a value are part of the fixed texts. The run of fields the
//! records of one route share (listener to instance) is copied as one text
//! made for the thread's last record ([`shared_run`]). The output is byte for
//! byte what `serde_json::to_writer(record)` writes; unit tests hold the two
//! together, field order, `null`s, escapes and every ASCII byte included.

use super::record::{AccessRecord, Attempt, Text};
use serde::Serializer as _;
use std::cell::RefCell;

/// Each fixed text followed by the contents of its string value, written out
/// in line (a loop over an array of pairs cost about 600 instructions a record
/// more). The quotes around a string value are part of the fixed texts on
/// either side of it: `","ruleName":"` closes one value and opens the next.
/// Each value names how it is written: [`contents`] (checked, escaped when it
/// must be) or [`made`] (a value the gateway made from characters JSON never
/// escapes).
macro_rules! texts {
    ($out:expr, $($fixed:expr => $how:ident $value:expr),+ $(,)?) => {
        $(
            key($out, $fixed);
            $how($out, $value);
        )+
    };
}

/// Appends `record` as one JSON object (no newline) to `out`: exactly the bytes
/// `serde_json::to_writer(out, record)` would append, for a record the gateway
/// made. The values [`made`] lists are copied unchecked, so a record read from
/// elsewhere (an Azure log) must go through serde_json instead.
pub(crate) fn write_record(out: &mut Vec<u8>, record: &AccessRecord) {
    let p = &record.properties;
    texts!(
        out,
        r#"{"timeStamp":""# => made &record.time_stamp,
    );
    shared_run(out, record);
    texts!(
        out,
        r#"","clientIP":""# => made &p.client_ip,
    );
    key(out, r#"","clientPort":"#);
    unsigned(out, u64::from(p.client_port));
    texts!(
        out,
        r#","httpMethod":""# => contents &p.http_method,
        r#"","originalRequestUriWithArgs":""# => contents &p.original_request_uri_with_args,
        r#"","requestUri":""# => contents &p.request_uri,
        r#"","requestQuery":""# => contents &p.request_query,
        r#"","userAgent":""# => contents &p.user_agent,
    );
    key(out, r#"","httpStatus":"#);
    unsigned(out, u64::from(p.http_status));
    texts!(
        out,
        r#","httpVersion":""# => contents &p.http_version,
    );
    key(out, r#"","receivedBytes":"#);
    unsigned(out, p.received_bytes);
    key(out, r#","sentBytes":"#);
    unsigned(out, p.sent_bytes);
    key(out, r#","clientResponseTime":"#);
    float(out, p.client_response_time);
    key(out, r#","timeTaken":"#);
    float(out, p.time_taken);
    texts!(
        out,
        r#","transactionId":""# => made &p.transaction_id,
        r#"","sslEnabled":""# => made &p.ssl_enabled,
        r#"","sslCipher":""# => made &p.ssl_cipher,
        r#"","sslProtocol":""# => made &p.ssl_protocol,
        r#"","serverRouted":""# => contents &p.server_routed,
        r#"","serverStatus":""# => made &p.server_status,
        r#"","serverResponseLatency":""# => made &p.server_response_latency,
        r#"","upstreamSourcePort":""# => made &p.upstream_source_port,
        r#"","originalHost":""# => contents &p.original_host,
        r#"","host":""# => contents &p.host,
        r#"","error_info":""# => made &p.error_info,
        r#"","contentType":""# => contents &p.content_type,
    );
    key(out, r#"","serverConnectTime":"#);
    optional_made(out, p.server_connect_time.as_deref());
    key(out, r#","serverHeaderTime":"#);
    optional_made(out, p.server_header_time.as_deref());
    key(out, r#","attempts":"#);
    match &p.attempts {
        None => key(out, "null"),
        Some(attempts) => {
            out.push(b'[');
            for (i, a) in attempts.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_attempt(out, a);
            }
            out.push(b']');
        }
    }
    key(
        out,
        match p.connection_reused {
            None => r#","connectionReused":null}}"#,
            Some(true) => r#","connectionReused":true}}"#,
            Some(false) => r#","connectionReused":false}}"#,
        },
    );
}

/// The names a route's records share, and the text they make in a record
/// ([`write_shared_run`]), for [`shared_run`].
#[derive(Default)]
struct SharedRun {
    listener: Text,
    rule: Text,
    pool: Text,
    setting: Text,
    operation: Text,
    category: Text,
    instance: Text,
    text: Vec<u8>,
}

impl SharedRun {
    /// Makes this `r`'s run, in the same text buffer.
    fn set(&mut self, r: &AccessRecord) {
        self.text.clear();
        write_shared_run(&mut self.text, r);
        self.listener.clone_from(&r.listener_name);
        self.rule.clone_from(&r.rule_name);
        self.pool.clone_from(&r.backend_pool_name);
        self.setting.clone_from(&r.backend_setting_name);
        self.operation.clone_from(&r.operation_name);
        self.category.clone_from(&r.category);
        self.instance.clone_from(&r.properties.instance_id);
    }

    /// Whether `r` has these names (the rule's first: it differs most often).
    fn is_of(&self, r: &AccessRecord) -> bool {
        self.rule == r.rule_name
            && self.listener == r.listener_name
            && self.pool == r.backend_pool_name
            && self.setting == r.backend_setting_name
            && self.instance == r.properties.instance_id
            && self.operation == r.operation_name
            && self.category == r.category
    }
}

thread_local! {
    /// The last record's [`SharedRun`] on this thread.
    static SHARED_RUN: RefCell<Option<SharedRun>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// How many times this thread made a [`SharedRun`] (for the tests).
    static SHARED_RUNS_MADE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Appends the part of `r`'s line from `","listenerName":"` to the value of
/// `instanceId`, which the records of one route share: the listener, rule,
/// pool and settings names, the operation, the category, the instance. It
/// is copied as one text made for the thread's last record when `r` has the
/// same seven values (seven comparisons), and made again in place when not:
/// a thread whose requests alternate between routes pays, on top of writing
/// the run, the comparisons, one more copy of it and seven name copies (an
/// allocation each for a name over 24 bytes after a shorter one). The output
/// is the same either way ([`write_shared_run`]).
fn shared_run(out: &mut Vec<u8>, r: &AccessRecord) {
    // `try_with`: a record may be written as its thread ends.
    let copied = SHARED_RUN.try_with(|cell| {
        let Ok(mut last) = cell.try_borrow_mut() else {
            return false;
        };
        if !last.as_ref().is_some_and(|run| run.is_of(r)) {
            // Out of the cell while it is made again: a panic halfway (a
            // debug assertion of `made`) leaves no entry rather than a text
            // that is not its names'.
            let mut run = last.take().unwrap_or_default();
            run.set(r);
            #[cfg(test)]
            SHARED_RUNS_MADE.set(SHARED_RUNS_MADE.get() + 1);
            *last = Some(run);
        }
        if let Some(run) = last.as_ref() {
            out.extend_from_slice(&run.text);
        }
        true
    });
    if copied != Ok(true) {
        write_shared_run(out, r);
    }
}

/// [`shared_run`]'s text, written field by field.
fn write_shared_run(out: &mut Vec<u8>, r: &AccessRecord) {
    texts!(
        out,
        r#"","listenerName":""# => contents &r.listener_name,
        r#"","ruleName":""# => contents &r.rule_name,
        r#"","backendPoolName":""# => contents &r.backend_pool_name,
        r#"","backendSettingName":""# => contents &r.backend_setting_name,
        r#"","operationName":""# => made &r.operation_name,
        r#"","category":""# => made &r.category,
        r#"","properties":{"instanceId":""# => contents &r.properties.instance_id,
    );
}

/// One element of `attempts`.
fn write_attempt(out: &mut Vec<u8>, a: &Attempt) {
    texts!(
        out,
        r#"{"server":""# => contents &a.server,
        r#"","error_info":""# => made &a.error_info,
        r#"","serverStatus":""# => made &a.server_status,
    );
    key(out, r#""}"#);
}

/// Fixed JSON text: keys (known not to need escaping) and punctuation.
fn key(out: &mut Vec<u8>, fixed: &str) {
    out.extend_from_slice(fixed.as_bytes());
}

// Writing to a `Vec<u8>` cannot fail, so the serializers' `Result`s carry no
// error worth handling below.

/// The line being written, as serde_json's writer: its quotes and escapes
/// are pushed as bytes, where `Vec`'s own `write_all` copies even a single
/// byte through `memcpy`.
struct Line<'a>(&'a mut Vec<u8>);

impl std::io::Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b)?;
        Ok(b.len())
    }

    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        if let [one] = b {
            self.0.push(*one);
        } else {
            self.0.extend_from_slice(b);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The contents of a JSON string, without its quotes (the fixed texts around
/// it hold them). A value with no byte that JSON escapes (`"`, `\\` and the
/// controls U+0000 to U+001F, RFC 8259 section 7: exactly the bytes serde_json
/// escapes) is copied as it is; any other is escaped by serde_json. Most
/// values have none (names, addresses, times, codes, the id), and
/// [`needs_escape`] looks at eight bytes a step where serde_json's escaper
/// looks each byte up in turn.
fn contents(out: &mut Vec<u8>, v: &str) {
    let b = v.as_bytes();
    if needs_escape(b) {
        // serde_json writes the quotes too: the rare case pays for taking
        // them off again.
        let start = out.len();
        let _ = serde_json::Serializer::new(Line(out)).serialize_str(v);
        out.pop();
        out.remove(start);
    } else {
        out.extend_from_slice(b);
    }
}

/// Every byte of a word set to one (`ONES * b` spreads `b` over the word).
const ONES: u64 = 0x0101_0101_0101_0101;
/// The top bit of every byte of a word.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether `b` holds a byte JSON escapes: below 0x20, `"` or `\\`.
///
/// Eight bytes a step, as one `u64` ("SWAR"): `(x - ONES * n) & !x & HIGHS`
/// is non-zero exactly when some byte of `x` is below `n` (for `n` <= 0x80;
/// "Determine if a word has a byte less than n", Sean Eron Anderson, Bit
/// Twiddling Hacks), and a byte equal to `c` is a zero byte of
/// `x ^ (ONES * c)`. Any length of 8 or more is covered by whole words,
/// the last one overlapping the one before; shorter values go byte by byte.
/// A loop over the bytes (a fold, no early exit) cost about 130 instructions
/// a value; a unit test holds the two to the same answer.
fn needs_escape(b: &[u8]) -> bool {
    #[inline(always)]
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
    }
    #[inline(always)]
    fn word(x: u64) -> u64 {
        below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
    }
    let load = |w: &[u8]| -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        u64::from_le_bytes(a)
    };
    if b.len() < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    let mut found = 0;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        found |= word(load(w));
    }
    if !words.remainder().is_empty() {
        found |= word(load(&b[b.len() - 8..]));
    }
    found != 0
}

/// The contents of a string value the gateway made itself from characters
/// JSON never escapes, copied without [`contents`]'s check: the time stamp,
/// the transaction id (hex), the client's address, TLS names, status codes,
/// seconds, ports and `ERRORINFO_*` codes, or `-`: about half of a record's
/// value bytes. Not checking them saves about 1,100 instructions a proxied
/// request, 2.5 % in h2 and 3.6 % in ka64 (docs/benchmarks.md section 2).
/// Builds with debug assertions (the tests) check anyway, so a value that
/// ever came from elsewhere fails there instead of writing a line that is not
/// JSON.
fn made(out: &mut Vec<u8>, v: &str) {
    debug_assert!(
        !needs_escape(v.as_bytes()),
        "not a gateway-made value: {v:?}"
    );
    out.extend_from_slice(v.as_bytes());
}

/// A [`made`] string or `null`, as serde writes an `Option`.
fn optional_made(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => {
            out.push(b'"');
            made(out, v);
            out.push(b'"');
        }
        None => key(out, "null"),
    }
}

/// A JSON integer, formatted by serde_json.
fn unsigned(out: &mut Vec<u8>, v: u64) {
    let _ = serde_json::Serializer::new(Line(out)).serialize_u64(v);
}

/// A JSON number (`null` when not finite), formatted by serde_json; a whole
/// number of milliseconds under ten seconds, as the record's times nearly
/// always are, is copied from the table of [`super::ms_number_text`], which
/// holds the same text (about 50 instructions a number less).
fn float(out: &mut Vec<u8>, v: f64) {
    match super::ms_number_text(v) {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        None => {
            let _ = serde_json::Serializer::new(Line(out)).serialize_f64(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::write_record;
    use crate::accesslog::{AccessRecord, Attempt, Properties};

    fn same_as_serde(r: &AccessRecord) {
        let mut ours = Vec::new();
        write_record(&mut ours, r);
        let theirs = serde_json::to_vec(r).expect("a record serializes");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        let back: serde_json::Value = serde_json::from_slice(&ours).expect("our line is JSON");
        assert_eq!(
            back["properties"]["transactionId"],
            *r.properties.transaction_id
        );
    }

    fn record() -> AccessRecord {
        AccessRecord {
            time_stamp: "2026-12-03T10:01:21.247Z".into(),
            listener_name: "plain".into(),
            rule_name: "r".into(),
            backend_pool_name: "pool".into(),
            backend_setting_name: "s".into(),
            operation_name: "ApplicationGatewayAccess".into(),
            category: "ApplicationGatewayAccessLog".into(),
            properties: Properties {
                instance_id: "vm".into(),
                client_ip: "127.0.0.1".into(),
                client_port: 44936,
                http_method: "GET".into(),
                original_request_uri_with_args: "/a?b=c".into(),
                request_uri: "/a".into(),
                request_query: "b=c".into(),
                user_agent: "curl/8".into(),
                http_status: 200,
                http_version: "HTTP/1.1".into(),
                received_bytes: 41,
                sent_bytes: u64::MAX,
                client_response_time: 0.0,
                time_taken: 0.003,
                transaction_id: "1bacad5d9cc5f7e91df623a98033978e".into(),
                ssl_enabled: "off".into(),
                ssl_cipher: "".into(),
                ssl_protocol: "".into(),
                server_routed: "127.0.0.1:18080".into(),
                server_status: "200".into(),
                server_response_latency: "0.003".into(),
                upstream_source_port: "36824".into(),
                original_host: "127.0.0.1:18081".into(),
                host: "127.0.0.1:18081".into(),
                error_info: "ERRORINFO_NO_ERROR".into(),
                content_type: "text/plain".into(),
                server_connect_time: Some("0.000".into()),
                server_header_time: Some("0.003".into()),
                attempts: Some(vec![Attempt {
                    server: "127.0.0.1:18080".into(),
                    error_info: "ERRORINFO_NO_ERROR".into(),
                    server_status: "200".into(),
                }]),
                connection_reused: Some(true),
            },
        }
    }

    #[test]
    fn a_proxied_request_is_written_as_serde_writes_it() {
        same_as_serde(&record());
    }

    /// The shared run ([`super::shared_run`]) is made again whenever one of its
    /// seven values differs from the last record's, and only then; in
    /// between it is copied. Values that need escaping, and names over 24
    /// bytes (kept on the heap) after short ones, included.
    #[test]
    fn records_of_other_routes_in_turn_are_written_as_serde_writes_them() {
        let made = || super::SHARED_RUNS_MADE.get();
        let base = record();
        same_as_serde(&base);
        let before = made();
        same_as_serde(&base);
        same_as_serde(&base);
        assert_eq!(made(), before, "the same route's run is copied, not made");
        for round in 0..3 {
            for field in 0..8 {
                let mut r = base.clone();
                // The operation and the category (fields 4 and 5) are values
                // the gateway makes: never any that need escaping.
                let other = match round {
                    0 => "other".to_string(),
                    1 if field != 4 && field != 5 => {
                        "a \"quoted\" \\ name\twith\u{1} controls".to_string()
                    }
                    1 => "other-made".to_string(),
                    _ => "a-name-well-beyond-twenty-four-bytes-so-on-the-heap".to_string(),
                };
                match field {
                    0 => r.listener_name = other.as_str().into(),
                    1 => r.rule_name = other.as_str().into(),
                    2 => r.backend_pool_name = other.as_str().into(),
                    3 => r.backend_setting_name = other.as_str().into(),
                    4 => r.operation_name = other.as_str().into(),
                    5 => r.category = other.as_str().into(),
                    6 => r.properties.instance_id = other.as_str().into(),
                    _ => {}
                }
                same_as_serde(&base);
                let before = made();
                same_as_serde(&r);
                same_as_serde(&base);
                same_as_serde(&r);
                same_as_serde(&r);
                // From `base`'s run: `r`, `base`, `r` made; the second `r`
                // copied (none made for the unchanged record, field 7).
                let expected = if field == 7 { 0 } else { 3 };
                assert_eq!(made() - before, expected, "round {round}, field {field}");
            }
        }
        // Every value empty (a request no listener took) after a full one.
        let mut empty = base.clone();
        empty.listener_name = "".into();
        empty.rule_name = "".into();
        empty.backend_pool_name = "".into();
        empty.backend_setting_name = "".into();
        empty.properties.instance_id = "".into();
        same_as_serde(&empty);
        same_as_serde(&base);
    }

    #[test]
    fn absent_fields_and_empty_attempts_are_written_as_serde_writes_them() {
        let mut r = record();
        r.properties.server_connect_time = None;
        r.properties.server_header_time = None;
        r.properties.attempts = None;
        r.properties.connection_reused = None;
        same_as_serde(&r);
        r.properties.attempts = Some(Vec::new());
        r.properties.connection_reused = Some(false);
        same_as_serde(&r);
    }

    #[test]
    fn several_attempts_and_odd_numbers_are_written_as_serde_writes_them() {
        let mut r = record();
        let a = |s: &str| Attempt {
            server: s.into(),
            error_info: "ERRORINFO_UPSTREAM_TIMED_OUT".into(),
            server_status: "-".into(),
        };
        r.properties.attempts = Some(vec![a("10.0.0.1:80"), a("10.0.0.2:80"), a("[::1]:8080")]);
        r.properties.time_taken = 123_456.789;
        r.properties.client_response_time = f64::NAN;
        r.properties.client_port = 0;
        r.properties.http_status = 499;
        same_as_serde(&r);
        r.properties.time_taken = f64::INFINITY;
        r.properties.client_response_time = 1e-7;
        same_as_serde(&r);
    }

    #[test]
    fn every_whole_millisecond_under_ten_seconds_is_written_as_serde_writes_it() {
        for ms in 0..10_000u64 {
            let v = crate::accesslog::secs_number(std::time::Duration::from_millis(ms));
            let mut ours = Vec::new();
            super::float(&mut ours, v);
            let theirs = serde_json::to_vec(&v).expect("a number serializes");
            assert_eq!(ours, theirs, "{ms} ms");
            assert!(crate::accesslog::ms_number_text(v).is_some(), "{ms} ms");
        }
        // Not a whole millisecond, or not under ten seconds: serde_json's own text.
        for v in [0.0005, 1e-7, 10.0, 12.345, 9.9995, -0.001, f64::NAN] {
            assert_eq!(crate::accesslog::ms_number_text(v), None, "{v}");
        }
    }

    #[test]
    fn every_ascii_byte_in_a_value_is_written_as_serde_writes_it() {
        let mut r = record();
        for c in 0u8..0x80 {
            let v = format!("a{}b", char::from(c));
            r.properties.user_agent = v.as_str().into();
            r.properties.request_query = char::from(c).to_string().into();
            same_as_serde(&r);
        }
    }

    /// The word-at-a-time check against the plain definition: every byte value
    /// at every position of values of length 0 to 40, among fillers that are
    /// (0x1f, 0x20, '"', '\\', 0x21, 0x5b, 0x5d) and are not (0x7f, 0x80,
    /// 0xff) near the edges of what is escaped, and pseudo-random values.
    #[test]
    fn the_word_check_finds_exactly_the_bytes_json_escapes() {
        let plain = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..40usize {
            for filler in [
                b'a', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff, 0x1f, b'"', b'\\',
            ] {
                let mut v = vec![filler; len];
                assert_eq!(super::needs_escape(&v), plain(&v), "{v:?}");
                for at in 0..len {
                    for c in 0..=255u8 {
                        v[at] = c;
                        assert_eq!(super::needs_escape(&v), plain(&v), "{v:?}");
                    }
                    v[at] = filler;
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 7) as u8) | 0x18)
                .collect();
            assert_eq!(super::needs_escape(&v), plain(&v), "{v:?}");
        }
    }

    #[test]
    fn values_that_need_escaping_are_escaped_as_serde_escapes_them() {
        let mut r = record();
        r.properties.user_agent = "a \"quoted\" \\ back\tslash\u{1}\u{7f} é 😀".into();
        r.properties.original_request_uri_with_args = "/x?q=\"</script>\"\n".into();
        r.properties.original_host = "\u{0}\u{1f}".into();
        r.properties.request_query = "\\".into();
        r.properties.request_uri = "\"".into();
        r.properties.http_method = "\u{20}\u{7f}\u{80}".into();
        r.listener_name = "ünïcode-listener-with-a-long-name-beyond-24-bytes".into();
        same_as_serde(&r);
    }
}
