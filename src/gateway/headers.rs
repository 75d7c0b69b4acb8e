//! Header rules of a proxy (RFC 9110 §7.6.1): hop-by-hop fields are not
//! forwarded, and the backend learns who the client was via `X-Forwarded-*`.

use super::fields::{as_text, ClientFields};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;

/// How many names [`HOP_BY_HOP`] holds.
const HOP_BY_HOP_COUNT: usize = 10;

/// Hop-by-hop fields that never cross the gateway (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`), `Proxy-Authenticate`,
/// which answers the gateway's own `Proxy-Authorization`, and
/// `HTTP2-Settings`, which belongs to an `h2c` upgrade of the one connection
/// (RFC 7540 §3.2.1; the gateway forwards no `h2c` upgrade, [`upgrade_without_h2c`]),
/// whether or not the client's `Connection` names it.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// `name`'s entry in [`HOP_BY_HOP`], if it has one: one `match` on the name's
/// text (names are lower case), where comparing `HeaderName`s against each of
/// the ten would compare the bytes of every custom name ten times.
pub fn hop_by_hop(name: &HeaderName) -> Option<&'static HeaderName> {
    let i = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authorization" => 7,
        "proxy-authenticate" => 8,
        "http2-settings" => 9,
        _ => return None,
    };
    HOP_BY_HOP.get(i)
}

/// Whether `value` is a field value `HeaderValue` accepts: visible ASCII,
/// obs-text (0x80–0xFF), SP and HTAB; no other control byte (RFC 9110 §5.5,
/// `http`'s `HeaderValue::from_bytes`). For a value checked and dropped
/// without being made into a `HeaderValue`, or kept as a slice of the head
/// (`fields.rs`). Every byte is tested, with no early exit, so the compiler
/// tests 16 or 32 at a time (a `User-Agent` is about 110 bytes).
pub fn valid_value(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
    })
}

/// An `Upgrade` value (RFC 9110 §7.8: protocols, `name[/version]`, comma
/// separated) without its `h2c` protocols: `None` when none is left, the
/// value itself when it had none (nearly always: `websocket`), else the
/// others joined with `, `.
///
/// Why: the gateway never forwards an upgrade to cleartext HTTP/2. A backend
/// that accepted one would turn the connection into a tunnel the gateway
/// cannot see into, in which a client could send any request past the routing
/// rules ("h2c smuggling"); RFC 9113 §3.1 has deprecated the upgrade, and an
/// HTTP/2 client reaches the gateway itself with prior knowledge or ALPN.
/// Envoy drops `Upgrade: h2c` the same way and forwards the request as an
/// ordinary one (Java's HTTP clients send it with their first request on
/// every `http://` connection), so such a request keeps its connection open.
/// Names are compared without regard to case.
pub fn upgrade_without_h2c(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let is_h2c = |t: &[u8]| protocol_name(t).eq_ignore_ascii_case(b"h2c");
    if !upgrade_tokens(value).any(is_h2c) {
        return upgrade_tokens(value)
            .next()
            .is_some()
            .then_some(Cow::Borrowed(value));
    }
    let kept: Vec<&[u8]> = upgrade_tokens(value).filter(|t| !is_h2c(t)).collect();
    if kept.is_empty() {
        return None;
    }
    Some(Cow::Owned(kept.join(&b", "[..])))
}

/// The protocols of an `Upgrade` value (`name[/version]`, comma separated,
/// RFC 9110 §7.8), trimmed, empty list elements left out.
fn upgrade_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A protocol's name: an [`upgrade_tokens`] token without its `/version`.
fn protocol_name(token: &[u8]) -> &[u8] {
    token
        .split(|b| *b == b'/')
        .next()
        .unwrap_or(token)
        .trim_ascii()
}

/// Whether a 101 whose `Upgrade` is `answered` switches to protocols the
/// request's `Upgrade` (`asked`, as forwarded) named: each of its protocol
/// names is one the request named, and none is `h2c`. RFC 9110 §7.8: a
/// server must not switch to a protocol the client did not ask for. `None`
/// on either side is false (a 101 without `Upgrade`, or to a request without
/// one). Names are compared without their `/version` and without regard to
/// case.
pub fn switches_as_asked(asked: Option<&[u8]>, answered: Option<&[u8]>) -> bool {
    fn names(v: &[u8]) -> impl Iterator<Item = &[u8]> {
        upgrade_tokens(v)
            .map(protocol_name)
            .filter(|n| !n.is_empty())
    }
    let (Some(asked), Some(answered)) = (asked, answered) else {
        return false;
    };
    let mut any = false;
    for name in names(answered) {
        if name.eq_ignore_ascii_case(b"h2c") || !names(asked).any(|a| a.eq_ignore_ascii_case(name))
        {
            return false;
        }
        any = true;
    }
    any
}

/// Whether a request with these `Upgrade` values asks for an upgrade the
/// gateway forwards: one of them names a protocol other than `h2c`
/// ([`upgrade_without_h2c`]).
pub fn asks_upgrade<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|v| upgrade_without_h2c(v).is_some())
}

/// What a `Connection` value (RFC 9110 §7.6.1) says: its options, compared
/// without regard to case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// It lists `close`.
    pub close: bool,
    /// It lists `keep-alive`.
    pub keep_alive: bool,
    /// It lists another token: a field to remove with it.
    pub names: bool,
}

/// Reads a `Connection` value in one pass; a value that is just `keep-alive`
/// or `close` (nearly every one) is recognised whole, where three passes (a
/// token search for each option, then one for other tokens) cost about 500
/// instructions.
pub fn connection_options(value: &[u8]) -> ConnectionOptions {
    // The usual spellings by plain comparison (a few word compares), before
    // `eq_ignore_ascii_case`, which goes byte by byte.
    if matches!(value, b"keep-alive" | b"Keep-Alive") || value.eq_ignore_ascii_case(b"keep-alive") {
        return ConnectionOptions {
            keep_alive: true,
            ..Default::default()
        };
    }
    if matches!(value, b"close" | b"Close") || value.eq_ignore_ascii_case(b"close") {
        return ConnectionOptions {
            close: true,
            ..Default::default()
        };
    }
    let mut o = ConnectionOptions::default();
    for t in value.split(|b| *b == b',') {
        let t = t.trim_ascii();
        if t.eq_ignore_ascii_case(b"close") {
            o.close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            o.keep_alive = true;
        } else if !t.is_empty() {
            o.names = true;
        }
    }
    o
}

/// The field names that `connection` (the values of the `Connection` fields
/// a message had) lists: its tokens but `close` and `keep-alive` (RFC 9110
/// §7.6.1), as they came (not lower-cased).
fn named_tokens<T: AsRef<[u8]>>(connection: &[T]) -> impl Iterator<Item = &[u8]> {
    connection
        .iter()
        .flat_map(|v| v.as_ref().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Removes the fields that `connection` names ([`named_tokens`]).
pub fn remove_named(headers: &mut HeaderMap, connection: &[HeaderValue]) {
    for t in named_tokens(connection) {
        if let Ok(n) = HeaderName::from_bytes(t) {
            headers.remove(n);
        }
    }
}

/// Whether `connection` names `name` ([`named_tokens`]); as [`remove_named`]
/// decides, for a list of fields.
pub fn named_in<T: AsRef<[u8]>>(connection: &[T], name: &HeaderName) -> bool {
    named_tokens(connection).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// Sets `name: value` in a list of fields as `HeaderMap::insert` sets it in a
/// map: in the place of the first field of that name, the others of that name
/// removed; at the end when there was none. `V`: a field value, or however
/// a list keeps one (`fields.rs`).
pub fn insert_listed<V>(fields: &mut Vec<(HeaderName, V)>, name: HeaderName, value: V) {
    match fields.iter().position(|(n, _)| *n == name) {
        Some(i) => {
            fields[i].1 = value;
            let mut seen = 0;
            fields.retain(|(n, _)| {
                if *n != name {
                    return true;
                }
                seen += 1;
                seen == 1
            });
        }
        None => fields.push((name, value)),
    }
}

/// What [`strip_request_fields`] took out of a request's fields.
#[derive(Debug, Default)]
pub struct RequestFields {
    /// The client's `X-Forwarded-For` values, in order, joined with `, `
    /// (several fields of a list are one list, RFC 9110 §5.3); `None` without
    /// one, or when none is text.
    pub forwarded_for: Option<Vec<u8>>,
    /// The client's `Upgrade` (the first field that asks for more than `h2c`,
    /// without `h2c`: [`upgrade_without_h2c`]), before it was removed with
    /// the other hop-by-hop fields.
    pub upgrade: Option<HeaderValue>,
}

/// Fields the gateway sets itself on every forwarded request, in the order
/// they are written after the client's ([`forwarding_fields`]): the client's
/// own fields of these names are dropped, not passed on.
pub const GATEWAY_SET: [&HeaderName; 6] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_ORIGINAL_HOST,
    &X_FORWARDED_PORT,
    &X_TRANSACTION_ID,
];

/// Prepares a request's fields for the backend: removes hop-by-hop fields
/// (and those `Connection` names), `Expect` (the gateway answers
/// `100-continue` itself) and the client's fields of the names in
/// [`GATEWAY_SET`], and joins several `Cookie` fields into one, in the first
/// one's place (an HTTP/1.1 backend expects one; RFC 9113 §8.2.3 lets HTTP/2
/// clients split them). A request with none of these (most) costs one pass
/// over its fields; the gateway's fields are written after the client's by
/// the backend client (`h1client.rs` `RequestHead::added`), not put in among
/// them.
pub fn strip_request_fields(fields: &mut ClientFields) -> RequestFields {
    let mut hop = false;
    let mut naming = false;
    let mut gateway_set = false;
    let mut expect = false;
    let mut cookies = 0;
    for (name, value) in fields.iter() {
        match name.as_str() {
            "cookie" => cookies += 1,
            "expect" => expect = true,
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-original-host"
            | "x-forwarded-port" | "x-transaction-id" => gateway_set = true,
            "connection" => {
                hop = true;
                naming |= connection_options(value).names;
            }
            _ => hop |= hop_by_hop(name).is_some(),
        }
    }
    // The `Connection` values that name fields (rare), copied out of the
    // list they are about to be removed from.
    let named: Vec<Vec<u8>> = if naming {
        fields
            .get_all(&header::CONNECTION)
            .filter(|v| connection_options(v).names)
            .map(<[u8]>::to_vec)
            .collect()
    } else {
        Vec::new()
    };
    let mut out = RequestFields::default();
    // A client's `X-Forwarded-For` that its `Connection` names is dropped
    // with the other named fields, not read.
    if gateway_set && !(naming && named_in(&named, &X_FORWARDED_FOR)) {
        let mut joined: Option<Vec<u8>> = None;
        for v in fields.get_all(&X_FORWARDED_FOR) {
            let v = v.trim_ascii();
            if v.is_empty() {
                continue;
            }
            match &mut joined {
                Some(j) => {
                    j.extend_from_slice(b", ");
                    j.extend_from_slice(v);
                }
                None => joined = Some(v.to_vec()),
            }
        }
        out.forwarded_for = joined;
    }
    if hop {
        // The first `Upgrade` that asks for more than `h2c`, without `h2c`.
        out.upgrade = fields
            .get_all(&header::UPGRADE)
            .find_map(upgrade_without_h2c)
            .and_then(|v| match v {
                Cow::Borrowed(v) => HeaderValue::from_bytes(v).ok(),
                Cow::Owned(v) => HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok(),
            });
    }
    if hop || expect || gateway_set {
        fields.retain(|name, _| {
            !(hop_by_hop(name).is_some()
                || (expect && *name == header::EXPECT)
                || (gateway_set && GATEWAY_SET.contains(&name))
                || (naming && named_in(&named, name)))
        });
    }
    // Counted again: `Connection` may have named `Cookie`.
    if cookies > 1 && fields.get_all(&header::COOKIE).nth(1).is_some() {
        // Pair by pair (RFC 6265 §5.4: `pair; pair`), so that an empty field
        // or a trailing `;` leaves no empty pair or trailing space behind; as
        // bytes, so a value with obs-text goes along too.
        let mut joined: Vec<u8> = Vec::new();
        for pair in fields
            .get_all(&header::COOKIE)
            .flat_map(|v| v.split(|b| *b == b';'))
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty())
        {
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
            fields.insert(header::COOKIE, v);
        }
    }
    out
}

/// The gateway's fields for a forwarded request, in [`GATEWAY_SET`]'s order:
/// `X-Forwarded-For` (the client's list, if any, then `client_ip`, as nginx's
/// `$proxy_add_x_forwarded_for`), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `X-Original-Host` (the client's `Host`),
/// `X-Forwarded-Port` (the listener's port) and `x-transaction-id`.
/// `client_ip_value` is `client_ip` as a field value made beforehand (once per
/// connection): with no earlier hop it is the whole field, and nothing is made.
/// Values the caller holds are borrowed, not cloned: a clone of a shared field
/// value is a locked increment of its reference count, and its drop a locked
/// decrement (about 4.3 ns each on the benchmark VM, docs/benchmarks.md §2).
pub fn forwarding_fields<'a>(
    prior: Option<Vec<u8>>,
    client_ip: &str,
    client_ip_value: Option<&'a HeaderValue>,
    https: bool,
    client_host: &'a HeaderValue,
    port: &'a HeaderValue,
    txid: &'a HeaderValue,
) -> [(&'static HeaderName, Cow<'a, HeaderValue>); 6] {
    let ip_only = || match client_ip_value {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(
            HeaderValue::from_str(client_ip).unwrap_or_else(|_| HeaderValue::from_static("")),
        ),
    };
    let forwarded_for = match prior {
        Some(mut list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(list))
                .map(Cow::Owned)
                .unwrap_or_else(|_| ip_only())
        }
        None => ip_only(),
    };
    [
        (&X_FORWARDED_FOR, forwarded_for),
        (
            &X_FORWARDED_PROTO,
            Cow::Owned(HeaderValue::from_static(if https {
                "https"
            } else {
                "http"
            })),
        ),
        (&X_FORWARDED_HOST, Cow::Borrowed(client_host)),
        (&X_ORIGINAL_HOST, Cow::Borrowed(client_host)),
        (&X_FORWARDED_PORT, Cow::Borrowed(port)),
        (&X_TRANSACTION_ID, Cow::Borrowed(txid)),
    ]
}

/// `x-transaction-id`.
pub static X_TRANSACTION_ID: HeaderName = HeaderName::from_static("x-transaction-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `x-original-host`.
pub static X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");

/// The value of cookie `name` in the request's `Cookie` fields, when it is
/// text. Read pair by pair as bytes, so that another pair with obs-text in
/// it does not hide this one.
pub fn cookie<'a>(fields: &'a ClientFields, name: &str) -> Option<&'a str> {
    fields
        .get_all(&header::COOKIE)
        .flat_map(|v| v.split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (pair.get(..eq)?, pair.get(eq + 1..)?);
            if k == name.as_bytes() {
                as_text(v)
            } else {
                None
            }
        })
}

/// Rough size of a header block on the wire (`name: value\r\n` each), for
/// byte counts: of a map, of a request's [`ClientFields`], or of any (name,
/// value) pairs.
pub fn wire_size<'a, V: AsRef<[u8]>>(fields: impl IntoIterator<Item = (&'a HeaderName, V)>) -> u64 {
    fields
        .into_iter()
        .map(|(k, v)| (k.as_str().len() + v.as_ref().len() + 4) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_value_accepts_what_header_value_accepts() {
        for b in 0..=255u8 {
            for v in [vec![b], vec![b'a', b, b'z']] {
                assert_eq!(
                    valid_value(&v),
                    HeaderValue::from_bytes(&v).is_ok(),
                    "byte {b:#04x}"
                );
            }
        }
        assert!(valid_value(b""));
    }

    #[test]
    fn every_hop_by_hop_name_is_found_by_its_text_and_no_other_name_is() {
        for h in &HOP_BY_HOP {
            assert_eq!(hop_by_hop(h), Some(h));
            let parsed = HeaderName::from_bytes(h.as_str().to_ascii_uppercase().as_bytes())
                .expect("a valid name");
            assert_eq!(hop_by_hop(&parsed), Some(h));
        }
        for other in [
            "host",
            "content-length",
            "x-te",
            "connection2",
            "keep-alive-x",
        ] {
            let n = HeaderName::from_bytes(other.as_bytes()).expect("a valid name");
            assert_eq!(hop_by_hop(&n), None, "{other}");
        }
    }

    #[test]
    fn cookies() {
        let mut h = fields(&[
            ("accept", "*/*"),
            ("cookie", "a=1"),
            ("x-between", "1"),
            ("cookie", ""),
            ("cookie", "ApplicationGatewayAffinity=abc; b=2;"),
            ("cookie", "name=caf\u{e9}"),
        ]);
        assert_eq!(cookie(&h, "ApplicationGatewayAffinity"), Some("abc"));
        strip_request_fields(&mut h);
        let left: Vec<_> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            left,
            [
                "accept: */*",
                "cookie: a=1; ApplicationGatewayAffinity=abc; b=2; name=caf\u{e9}",
                "x-between: 1"
            ]
        );
        assert_eq!(cookie(&h, "b"), Some("2"));
    }

    /// A request's fields as a head's ranges, as the guard makes them.
    fn fields(pairs: &[(&str, &'static str)]) -> ClientFields {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for (n, v) in pairs {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        let head = bytes::Bytes::from(text);
        let mut f = ClientFields::over(head.clone(), pairs.len());
        let mut at = 0;
        for (n, v) in pairs {
            let line = format!("{n}: {v}\r\n");
            let i = at
                + head[at..]
                    .windows(line.len())
                    .position(|w| w == line.as_bytes())
                    .expect("the line");
            let start = i + n.len() + 2;
            let name = HeaderName::from_bytes(n.as_bytes()).expect("a valid name");
            assert!(f.push_slice(name, &head[i..i + n.len()], &head[start..start + v.len()]));
            at = i + line.len();
        }
        f
    }

    #[test]
    fn an_upgrade_to_h2c_is_not_forwarded_and_other_protocols_are() {
        let w = |v: &'static str| upgrade_without_h2c(v.as_bytes()).map(|c| c.into_owned());
        assert_eq!(w("websocket"), Some(b"websocket".to_vec()));
        // Left as the client wrote it when there is no `h2c` in it.
        assert!(matches!(
            upgrade_without_h2c(b"HTTP/2.0, SHTTP/1.3"),
            Some(Cow::Borrowed(_))
        ));
        for only_h2c in ["h2c", "H2C", " h2c ", "h2c, h2c", "h2c/1", "", " , "] {
            assert_eq!(w(only_h2c), None, "{only_h2c:?}");
        }
        assert_eq!(w("h2c, websocket"), Some(b"websocket".to_vec()));
        assert_eq!(w("foo/1,H2C ,bar"), Some(b"foo/1, bar".to_vec()));
        assert_eq!(w("h2"), Some(b"h2".to_vec()));
        assert!(!asks_upgrade([&b"h2c"[..], b"H2c"].into_iter()));
        assert!(asks_upgrade([&b"h2c"[..], b"websocket"].into_iter()));
        assert!(!asks_upgrade(std::iter::empty()));
        // A 101 switches only to what the request named, never to h2c.
        let ok = |a: Option<&'static str>, b: Option<&'static str>| {
            switches_as_asked(a.map(str::as_bytes), b.map(str::as_bytes))
        };
        assert!(ok(Some("websocket"), Some("websocket")));
        assert!(ok(Some("WebSocket"), Some("websocket")));
        assert!(ok(Some("foo/2, bar"), Some("Foo/1")));
        assert!(!ok(Some("websocket"), Some("h2c")));
        assert!(!ok(Some("websocket"), Some("websocket, h2c")));
        assert!(!ok(Some("h2c"), Some("h2c")));
        assert!(!ok(Some("websocket"), Some("other")));
        assert!(!ok(None, Some("websocket")));
        assert!(!ok(Some("websocket"), None));
        assert!(!ok(Some("websocket"), Some(" , ")));

        // A Java client's first request on an http:// connection: no
        // upgrade, and neither `Upgrade` nor `HTTP2-Settings` goes on, even
        // when `Connection` does not name the second.
        for connection in ["Upgrade, HTTP2-Settings", "Upgrade"] {
            let mut h = fields(&[
                ("host", "a"),
                ("connection", connection),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ("user-agent", "Java-http-client/21"),
            ]);
            let f = strip_request_fields(&mut h);
            assert_eq!(f.upgrade, None, "{connection}");
            let left: Vec<_> = h.iter().map(|(n, _)| n.as_str().to_owned()).collect();
            assert_eq!(left, ["host", "user-agent"], "{connection}");
        }
        let mut h = fields(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c"),
            ("upgrade", "h2c, websocket"),
        ]);
        let f = strip_request_fields(&mut h);
        assert_eq!(f.upgrade, Some(HeaderValue::from_static("websocket")));
    }

    #[test]
    fn request_fields_lose_hop_by_hop_expect_and_the_gateways_own_names() {
        let mut h = fields(&[
            ("host", "a"),
            ("x-forwarded-for", "203.0.113.9"),
            ("X-Forwarded-For", " "),
            ("x-forwarded-for", "198.51.100.4, 192.0.2.1"),
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-host", "b"),
            ("x-forwarded-port", "1"),
            ("x-original-host", "c"),
            ("x-transaction-id", "forged"),
            ("connection", "Upgrade, x-private"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
            ("expect", "100-continue"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-keep", "1"),
        ]);
        let f = strip_request_fields(&mut h);
        assert_eq!(
            f.forwarded_for.as_deref(),
            Some(&b"203.0.113.9, 198.51.100.4, 192.0.2.1"[..])
        );
        assert_eq!(f.upgrade, Some(HeaderValue::from_static("websocket")));
        let left: Vec<_> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(left, ["host: a", "cookie: a=1; b=2", "x-keep: 1"]);
        // Fields the client's `Connection` names go, even the gateway's own
        // and `Cookie`: neither read nor joined.
        let mut named = fields(&[
            ("connection", "x-forwarded-for, cookie"),
            ("x-forwarded-for", "203.0.113.9"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("accept", "*/*"),
        ]);
        let f = strip_request_fields(&mut named);
        assert!(f.forwarded_for.is_none());
        let left: Vec<_> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(left, ["accept"]);
        // Nothing to take out: the list is left as it is.
        let mut plain = fields(&[("host", "a"), ("cookie", "a=1"), ("accept", "*/*")]);
        let f = strip_request_fields(&mut plain);
        assert!(f.forwarded_for.is_none() && f.upgrade.is_none());
        assert_eq!(plain.len(), 3);
    }

    #[test]
    fn forwarding_fields_append_the_client_or_take_the_ready_value() {
        let ready = HeaderValue::from_static("10.0.0.7");
        let host = HeaderValue::from_static("shop.example");
        let port = HeaderValue::from_static("443");
        let txid = HeaderValue::from_static("0123");
        let written = |prior: Option<&[u8]>, ready: Option<&HeaderValue>| {
            forwarding_fields(
                prior.map(<[u8]>::to_vec),
                "10.0.0.7",
                ready,
                true,
                &host,
                &port,
                &txid,
            )
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().expect("text")))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            written(None, Some(&ready)),
            [
                "x-forwarded-for: 10.0.0.7",
                "x-forwarded-proto: https",
                "x-forwarded-host: shop.example",
                "x-original-host: shop.example",
                "x-forwarded-port: 443",
                "x-transaction-id: 0123",
            ]
        );
        assert_eq!(written(None, None)[0], "x-forwarded-for: 10.0.0.7");
        assert_eq!(
            written(Some(b"203.0.113.9"), Some(&ready))[0],
            "x-forwarded-for: 203.0.113.9, 10.0.0.7"
        );
        for (i, (name, _)) in forwarding_fields(None, "1.2.3.4", None, false, &host, &port, &txid)
            .iter()
            .enumerate()
        {
            assert_eq!(*name, GATEWAY_SET[i]);
        }
    }

    #[test]
    fn connection_tokens() {
        let o = |close, keep_alive, names| ConnectionOptions {
            close,
            keep_alive,
            names,
        };
        for (value, want) in [
            (&b"keep-alive"[..], o(false, true, false)),
            (b"Keep-Alive", o(false, true, false)),
            (b"close", o(true, false, false)),
            (b"CLOSE", o(true, false, false)),
            (b" close ,", o(true, false, false)),
            (b" close ", o(true, false, false)),
            (b"keep-alive, Close", o(true, true, false)),
            (b"keep-alive, Upgrade", o(false, true, true)),
            (b"x-secret", o(false, false, true)),
            (b"closed", o(false, false, true)),
            (b"closed, x-close", o(false, false, true)),
            (b"", o(false, false, false)),
            (b"close, keep-alive", o(true, true, false)),
        ] {
            assert_eq!(connection_options(value), want, "{value:?}");
        }
    }

    #[test]
    fn a_listed_field_inserted_takes_the_first_ones_place() {
        let v = HeaderValue::from_static;
        let id = HeaderName::from_static("x-transaction-id");
        let mut fields = vec![
            (id.clone(), v("from-the-backend")),
            (header::SERVER, v("nginx")),
            (id.clone(), v("twice")),
        ];
        insert_listed(&mut fields, id.clone(), v("ours"));
        assert_eq!(
            fields,
            [(id.clone(), v("ours")), (header::SERVER, v("nginx"))]
        );
        insert_listed(&mut fields, header::DATE, v("today"));
        assert_eq!(fields.last(), Some(&(header::DATE, v("today"))));
        assert_eq!(fields.len(), 3);
    }
}
