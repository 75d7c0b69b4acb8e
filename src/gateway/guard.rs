//! The HTTP/1 request guard: reads and checks every request head of a client
//! connection, for the server in `h1server.rs`.
//!
//! Why strict: parsers disagree on ambiguous requests (`Content-Length` together
//! with `Transfer-Encoding`, obfuscated codings, bare LF, obs-fold), and a gateway
//! that repairs one of them differently from its backend lets a client smuggle a
//! second request past it (RFC 9112 §6.3, §11.2). So every such head is refused
//! outright with 400 and the right `error_info`, and the connection is closed.
//! Nothing of a refused request reaches a backend.
//!
//! [`take_head`] is sans-I/O: it takes one head off the front of the bytes read
//! so far, or says why it cannot (more bytes needed, the HTTP/2 preface, a
//! refusal), and builds the request's parts from the one parse, so a head is
//! parsed once. Bodies are decoded by the server with the backend client's
//! decoder (`h1client.rs` `decode_body`, strict chunked scanner in `chunked.rs`).

use super::failure::ErrorInfo;
use super::fields::ClientFields;
use super::headers::connection_options;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Uri, Version};
use std::mem::MaybeUninit;
use std::time::Duration;

/// Largest request head accepted (request line and headers), in bytes. Past it: 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest request target accepted, in bytes. Past it: 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most header fields in one request (hyper's default). Past it: 431.
pub const MAX_HEADERS: usize = 100;
/// Time allowed from the first byte of a request head to its end (Azure: 60 s, then 408).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the guard learned about a refused request, for the handler and the log.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Why.
    pub info: ErrorInfo,
    /// Method as sent (sanitized, may be empty).
    pub method: String,
    /// Request target as sent (sanitized, truncated to 1 KiB).
    pub target: String,
    /// Version as sent (`HTTP/1.1`, or what the client wrote).
    pub version: String,
    /// Host header if one could be read.
    pub host: String,
    /// User-Agent if one could be read.
    pub user_agent: String,
    /// Bytes of the refused head.
    pub received_bytes: u64,
}

/// Where a head ends, if it does.
pub enum HeadEnd {
    /// Index just after CRLF CRLF.
    Complete(usize),
    /// A line ends in LF without CR: refused.
    BareLf,
    /// No end yet.
    Partial,
}

/// Finds the end of a head (index after CRLF CRLF); refuses a bare LF (RFC 9112 §2.2
/// lets a server accept it, a gateway must not: parsers disagree on it).
pub fn find_head_end(buf: &[u8]) -> HeadEnd {
    let mut i = 0;
    while let Some(off) = memchr_lf(&buf[i..]) {
        let lf = i + off;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return HeadEnd::BareLf;
        }
        if lf >= 3 && &buf[lf - 3..=lf] == b"\r\n\r\n" {
            return HeadEnd::Complete(lf + 1);
        }
        i = lf + 1;
    }
    HeadEnd::Partial
}

/// The first LF in `b`. `memchr` compares 16 or 32 bytes at a time where a
/// byte-by-byte `position` cost about 6 instructions a byte: with a browser's
/// 600-byte heads that was 3,700 instructions a request (callgrind).
fn memchr_lf(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

impl Rejection {
    /// The refusal of a head that parsed, for a reason found after it (its
    /// body's framing).
    pub fn of_head(head: &Head, info: ErrorInfo) -> Rejection {
        let p = &head.parts;
        let field = |name: http::header::HeaderName| {
            head.fields
                .get(&name)
                .map(|v| sanitize(v, 256))
                .unwrap_or_default()
        };
        Rejection {
            info,
            method: p.method.as_str().chars().take(32).collect(),
            target: sanitize(p.uri.to_string().as_bytes(), 1024),
            version: if p.version == Version::HTTP_10 {
                "HTTP/1.0".into()
            } else {
                "HTTP/1.1".into()
            },
            host: field(http::header::HOST),
            user_agent: field(http::header::USER_AGENT),
            received_bytes: head.bytes as u64,
        }
    }
}

/// How a request's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that passed every check, parsed once.
#[derive(Debug)]
pub struct Head {
    /// Method, target and version, as the handler gets them; no header
    /// fields (they are in `fields`).
    pub parts: http::request::Parts,
    /// The header fields, as ranges of the head.
    pub fields: ClientFields,
    /// How the body that follows is framed.
    pub body: BodyFraming,
    /// The request asks to switch protocols (`Upgrade`, to more than `h2c`) or
    /// is a CONNECT.
    pub upgrade: bool,
    /// The client allows another request on the connection: HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `Connection: keep-alive` (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// HTTP/1.1 with `Expect: 100-continue` (RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// Size of the head in bytes, CRLF CRLF included.
    pub bytes: usize,
}

/// What [`take_head`] found at the front of the input.
#[derive(Debug)]
pub enum Step {
    /// No complete head yet: read more (the caller runs the head timeout).
    NeedMore,
    /// The HTTP/2 prior-knowledge preface (RFC 9113 §3.3): hand the connection on.
    Http2,
    /// A checked head, taken off the input.
    Request(Box<Head>),
    /// A refused head: answer 4xx and close. A complete head that was refused
    /// has been taken off the input; a partial or oversized one is left.
    Refused(Box<Rejection>),
}

/// The HTTP/2 connection preface's first line.
const PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Takes the next request head off the front of `input` (after the empty lines
/// RFC 9112 §2.2 allows before it). `first`: `input` starts with the
/// connection's first byte, so it may be the HTTP/2 preface; cleared once the
/// bytes show it is not.
pub fn take_head(input: &mut BytesMut, first: &mut bool) -> Step {
    if *first && !input.is_empty() {
        // Only the very first bytes can be the preface.
        let n = input.len().min(PREFACE.len());
        if input[..n] == PREFACE[..n] {
            return if n == PREFACE.len() {
                Step::Http2
            } else {
                Step::NeedMore
            };
        }
        *first = false;
    }
    let skip = input
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    input.advance(skip);
    if input.is_empty() {
        return Step::NeedMore;
    }
    match find_head_end(input) {
        HeadEnd::Complete(end) if end > MAX_HEAD_BYTES => Step::Refused(Box::new(describe(
            &input[..end],
            ErrorInfo::HeadersTooLarge,
        ))),
        HeadEnd::Complete(end) => {
            // The head becomes one shared buffer: the request's target is a
            // slice of it and its field values are ranges of it, not copies.
            let head = input.split_to(end).freeze();
            match check_head(&head) {
                Ok(head) => Step::Request(head),
                Err(rej) => Step::Refused(rej),
            }
        }
        HeadEnd::BareLf => Step::Refused(Box::new(describe(input, ErrorInfo::InvalidRequest))),
        HeadEnd::Partial => {
            let first_line = memchr_lf(input).unwrap_or(input.len());
            if first_line > MAX_URI_BYTES + 64 {
                Step::Refused(Box::new(describe(input, ErrorInfo::UriTooLong)))
            } else if input.len() > MAX_HEAD_BYTES {
                Step::Refused(Box::new(describe(input, ErrorInfo::HeadersTooLarge)))
            } else {
                Step::NeedMore
            }
        }
    }
}

fn sanitize(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Best-effort description of an unparseable head, for the access log.
pub fn describe(head: &[u8], info: ErrorInfo) -> Rejection {
    let line_end = head
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = sanitize(parts.next().unwrap_or_default(), 32);
    let target = sanitize(parts.next().unwrap_or_default(), 1024);
    let version = sanitize(parts.next().unwrap_or_default(), 16);
    let find = |name: &str| -> String {
        head.split(|b| *b == b'\n')
            .skip(1)
            .find_map(|l| {
                let colon = l.iter().position(|b| *b == b':')?;
                if l[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                    Some(sanitize(l[colon + 1..].trim_ascii(), 256))
                } else {
                    None
                }
            })
            .unwrap_or_default()
    };
    Rejection {
        info,
        method,
        target,
        version,
        host: find("host"),
        user_agent: find("user-agent"),
        received_bytes: head.len() as u64,
    }
}

/// The request fields [`check_head`] acts on besides keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Host,
    ContentLength,
    TransferEncoding,
    Upgrade,
    Connection,
    Expect,
    None,
}

impl Special {
    /// Which of them `name` is. `HeaderName`'s equality compares the numbers of
    /// `http`'s standard names; a name `http` does not know never equals one.
    fn of(name: &http::HeaderName) -> Special {
        use http::header;
        if *name == header::HOST {
            Special::Host
        } else if *name == header::CONTENT_LENGTH {
            Special::ContentLength
        } else if *name == header::TRANSFER_ENCODING {
            Special::TransferEncoding
        } else if *name == header::UPGRADE {
            Special::Upgrade
        } else if *name == header::CONNECTION {
            Special::Connection
        } else if *name == header::EXPECT {
            Special::Expect
        } else {
            Special::None
        }
    }
}

/// Checks one complete head and builds its parts: the target is a slice of
/// `whole` and the field values are ranges of it (no copies). Err: why it is
/// refused.
pub fn check_head(whole: &Bytes) -> Result<Box<Head>, Box<Rejection>> {
    let head: &[u8] = whole;
    let fail = |info| Err(Box::new(describe(head, info)));
    let line_end = memchr::memchr(b'\r', head).unwrap_or(head.len());
    // The request line's words: how many, and the first three (no allocation).
    let mut words: [&[u8]; 3] = [b""; 3];
    let mut n_words = 0;
    for w in head[..line_end]
        .split(|b| *b == b' ')
        .filter(|w| !w.is_empty())
    {
        if let Some(slot) = words.get_mut(n_words) {
            *slot = w;
        }
        n_words += 1;
    }
    if n_words == 2 && words[1].starts_with(b"/") {
        // `GET /path` with no version: an HTTP/0.9 request line.
        return fail(ErrorInfo::Invalid09Method);
    }
    if n_words == 3
        && words[2].starts_with(b"HTTP/")
        && words[2] != b"HTTP/1.1"
        && words[2] != b"HTTP/1.0"
    {
        return fail(ErrorInfo::InvalidVersion);
    }
    // Left uninitialised: the parser writes only the slots it fills, where an
    // `EMPTY_HEADER` array would be 3.2 KiB of stores per request.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return fail(ErrorInfo::InvalidRequest),
        Err(httparse::Error::TooManyHeaders) => return fail(ErrorInfo::HeadersTooLarge),
        Err(httparse::Error::Version) => return fail(ErrorInfo::InvalidVersion),
        Err(_) => return fail(ErrorInfo::InvalidRequest),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return fail(ErrorInfo::InvalidRequest);
    };
    if target.len() > MAX_URI_BYTES {
        return fail(ErrorInfo::UriTooLong);
    }
    // Request target forms (RFC 9112 §3.2).
    let target_ok = if method == "CONNECT" {
        !target.starts_with('/') && target.contains(':')
    } else if target == "*" {
        method == "OPTIONS"
    } else if target.starts_with('/') {
        !target.starts_with("//") || target.len() == 1
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    };
    let uri = match Uri::from_maybe_shared(whole.slice_ref(target.as_bytes())) {
        Ok(uri) if target_ok => uri,
        _ => return fail(ErrorInfo::RequestUriInvalid),
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return fail(ErrorInfo::InvalidRequest);
    };

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te_count = 0;
    let mut chunked = false;
    let mut upgrade = method == Method::CONNECT;
    let mut keep_alive = version == 1;
    let mut expect_continue = false;
    // Just the client's fields, each kept as a range of the head (no
    // reference count, no map; `fields.rs`): the gateway's own
    // (`X-Forwarded-*`, `X-Original-Host`, `x-transaction-id`) are written
    // after them (`headers.rs` `forwarding_fields`), and an upgrade's
    // `Upgrade` and `Connection` go at their end.
    let mut fields = ClientFields::over(whole.clone(), req.headers.len());
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        let Ok(field) = super::fieldname::field_name(name.as_bytes()) else {
            return fail(ErrorInfo::InvalidRequest);
        };
        // The fields the framing and the connection depend on, told apart by
        // the name just looked up (a compare of `http`'s standard-name
        // numbers), not by comparing the name's text, letter by letter where
        // two names have the same length (`cookie` and `expect`, `referer`
        // and `upgrade`, `user-agent` and `connection`).
        let kind = Special::of(&field);
        // httparse has refused every control byte but HTAB in the value (NUL,
        // CR and LF among them, RFC 9110 §5.5), as `HeaderValue` would
        // (`httparse_field_values_are_header_values`); this fails only for
        // slices that are not the head's.
        if !fields.push_slice(field, name.as_bytes(), value) {
            return fail(ErrorInfo::InvalidRequest);
        }
        match kind {
            Special::None => {}
            Special::Host => {
                hosts += 1;
                if !value.is_empty()
                    && http::uri::Authority::from_maybe_shared(whole.slice_ref(value)).is_err()
                {
                    return fail(ErrorInfo::InvalidRequest);
                }
            }
            Special::ContentLength => {
                cl_count += 1;
                // Digits only: no sign, no list, no spaces (RFC 9110 §8.6).
                if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                    return fail(ErrorInfo::InvalidRequest);
                }
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                content_length = n;
            }
            Special::TransferEncoding => {
                te_count += 1;
                // Exactly `chunked`: anything else is either unsupported or an
                // obfuscation attempt (`chunked, identity`, ` chunked`, `xchunked`).
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return fail(ErrorInfo::InvalidRequest);
                }
                chunked = true;
            }
            // `h2c` alone is no upgrade here: it is not forwarded
            // (`headers.rs` `upgrade_without_h2c`), and the connection goes on.
            Special::Upgrade => upgrade |= super::headers::upgrade_without_h2c(value).is_some(),
            Special::Connection => {
                let o = connection_options(value);
                if o.close {
                    keep_alive = false;
                } else if version == 0 && o.keep_alive {
                    keep_alive = true;
                }
            }
            Special::Expect => {
                expect_continue = version == 1 && value.eq_ignore_ascii_case(b"100-continue");
            }
        }
    }
    if cl_count > 1 || te_count > 1 || (cl_count > 0 && te_count > 0) {
        return fail(ErrorInfo::InvalidRequest);
    }
    if hosts > 1 {
        return fail(ErrorInfo::InvalidRequest);
    }
    if version == 1 && hosts == 0 {
        return fail(ErrorInfo::HttpNoHostHeader);
    }
    if version == 0 && chunked {
        return fail(ErrorInfo::InvalidRequest);
    }
    let body = if chunked {
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    Ok(Box::new(Head {
        parts,
        fields,
        body,
        upgrade,
        keep_alive,
        expect_continue,
        bytes: head.len(),
    }))
}

/// Longest lingering close after a refusal.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded during a lingering close.
pub const LINGER_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::chunked::{scan_chunked, Chunk};
    use http::HeaderValue;

    fn verdict(head: &str) -> Result<BodyFraming, ErrorInfo> {
        check_head(&Bytes::copy_from_slice(head.as_bytes()))
            .map(|h| h.body)
            .map_err(|r| r.info)
    }

    #[test]
    fn target_and_field_values_are_slices_of_the_head() {
        let whole = Bytes::from_static(
            b"GET /a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Custom: some value\r\n\r\n",
        );
        let head = check_head(&whole).expect("a valid head");
        let within = |b: &[u8]| whole.as_ptr_range().contains(&b.as_ptr());
        let host = head.fields.get(&http::header::HOST).expect("host");
        assert_eq!(host, b"example.com:8080");
        assert!(within(host), "Host was copied");
        let custom = head
            .fields
            .get(&http::header::HeaderName::from_static("x-custom"))
            .expect("x-custom");
        assert_eq!(custom, b"some value");
        assert!(within(custom), "X-Custom was copied");
        assert!(head.parts.headers.is_empty());
        assert_eq!(head.parts.uri, "/a/b?q=1");
        let target = head.parts.uri.path_and_query().expect("target").as_str();
        assert!(within(target.as_bytes()), "the target was copied");
    }

    /// `fields.rs` keeps a value as httparse gives it, unchecked in release
    /// builds: httparse must refuse every byte `HeaderValue` refuses, in short
    /// values and in long ones (its SIMD paths), and let the others through.
    #[test]
    fn httparse_field_values_are_header_values() {
        for b in (0..=255u8).filter(|b| !matches!(b, b'\r' | b'\n')) {
            for len in [1, 7, 40, 70] {
                for at in [0, len / 2, len - 1] {
                    let mut value = vec![b'v'; len];
                    value[at] = b;
                    let mut text = b"GET / HTTP/1.1\r\nHost: a\r\nX-V: ".to_vec();
                    text.extend_from_slice(&value);
                    text.extend_from_slice(b"\r\n\r\n");
                    let valid = HeaderValue::from_bytes(&value).is_ok();
                    let passed = check_head(&Bytes::from(text)).is_ok();
                    assert_eq!(passed, valid, "byte {b:#04x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn take_head_takes_one_head_at_a_time() {
        let mut input = BytesMut::from(
            &b"\r\nGET /a?b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\nGET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGE"[..],
        );
        let Step::Request(a) = take_head(&mut input, &mut true) else {
            panic!("first head")
        };
        assert_eq!(a.parts.uri, "/a?b");
        assert_eq!(a.fields.get(&http::header::HOST), Some(&b"x"[..]));
        assert!(a.keep_alive && a.expect_continue && !a.upgrade);
        let Step::Request(c) = take_head(&mut input, &mut false) else {
            panic!("second head")
        };
        assert_eq!(c.parts.version, Version::HTTP_10);
        assert!(c.keep_alive && !c.expect_continue);
        let Step::Request(d) = take_head(&mut input, &mut false) else {
            panic!("third head")
        };
        assert!(!d.keep_alive);
        assert!(matches!(take_head(&mut input, &mut false), Step::NeedMore));
        assert_eq!(&input[..], b"GE");

        let mut h2 = BytesMut::from(&b"PRI * HTTP/2"[..]);
        assert!(matches!(take_head(&mut h2, &mut true), Step::NeedMore));
        h2.extend_from_slice(b".0\r\n\r\nSM\r\n\r\n");
        assert!(matches!(take_head(&mut h2, &mut true), Step::Http2));
        assert!(matches!(take_head(&mut h2, &mut false), Step::Refused(_)));

        let mut up = BytesMut::from(
            &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        );
        let Step::Request(u) = take_head(&mut up, &mut true) else {
            panic!("upgrade head")
        };
        assert!(u.upgrade && u.keep_alive);

        // `h2c` is not forwarded (`headers.rs`): the connection is checked on.
        let mut h2c = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"[..],
        );
        let Step::Request(c) = take_head(&mut h2c, &mut true) else {
            panic!("h2c head")
        };
        assert!(!c.upgrade && c.keep_alive);
    }

    #[test]
    fn accepts_plain_requests() {
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            verdict("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            verdict("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(verdict("GET / HTTP/1.0\r\n\r\n"), Ok(BodyFraming::None));
        assert_eq!(
            verdict("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            verdict("GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
    }

    #[test]
    fn refuses_ambiguous_framing() {
        use ErrorInfo::*;
        for (head, want) in [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", InvalidRequest),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", InvalidRequest),
            ("GET / HTTP/1.1\r\n\r\n", HttpNoHostHeader),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", InvalidRequest),
            ("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", RequestUriInvalid),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", InvalidVersion),
            ("GET /\r\n\r\n", Invalid09Method),
            ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", InvalidRequest),
        ] {
            assert_eq!(verdict(head), Err(want), "{head:?}");
        }
    }

    #[test]
    fn head_end_refuses_bare_lf() {
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\nHost: a\n\n"),
            HeadEnd::BareLf
        ));
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"),
            HeadEnd::Complete(27)
        ));
        assert!(matches!(
            find_head_end(b"GET / HTTP/1.1\r\nHo"),
            HeadEnd::Partial
        ));
    }

    /// Randomized robustness with a fixed seed, so every `cargo test` repeats it
    /// (the coverage-guided search is the `request_guard` target in `fuzz/`):
    /// mutated requests never panic the guard, and whatever it passes on is a
    /// head httparse parses with the same framing.
    #[test]
    fn mutated_requests_never_panic_and_passed_heads_parse() {
        let seeds: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let alphabet =
            b"\r\n :;,-+0123456789abcdefGHIJ\t\x00\x7f/?chunkedContent-LengthTransfer-Encoding";
        for _ in 0..20_000 {
            let mut m = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(..=m.len());
                match rng.u8(..3) {
                    0 if i < m.len() => {
                        m.remove(i);
                    }
                    1 => m.insert(i, alphabet[rng.usize(..alphabet.len())]),
                    _ if i < m.len() => m[i] = alphabet[rng.usize(..alphabet.len())],
                    _ => {}
                }
            }
            if let HeadEnd::Complete(end) = find_head_end(&m) {
                if let Ok(framing) = check_head(&Bytes::copy_from_slice(&m[..end])) {
                    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut r = httparse::Request::new(&mut h);
                    assert!(
                        matches!(r.parse(&m[..end]), Ok(httparse::Status::Complete(_))),
                        "{m:?}"
                    );
                    let _ = framing;
                }
            }
            let _ = scan_chunked(Chunk::START, &m, false);
        }
    }
}
