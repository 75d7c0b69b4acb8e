//! Header rules of a proxy (RFC 9110 §7.6.1): hop-by-hop fields are not
//! forwarded, and the backend learns who the client was via `X-Forwarded-*`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many names [`HOP_BY_HOP`] holds.
const HOP_BY_HOP_COUNT: usize = 9;

/// Hop-by-hop fields that never cross the gateway (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`), and `Proxy-Authenticate`,
/// which answers the gateway's own `Proxy-Authorization`.
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
];

/// `name`'s entry in [`HOP_BY_HOP`], if it has one: one `match` on the name's
/// text (names are lower case), where comparing `HeaderName`s against each of
/// the nine would compare the bytes of every custom name nine times.
fn hop_by_hop(name: &HeaderName) -> Option<&'static HeaderName> {
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
        _ => return None,
    };
    HOP_BY_HOP.get(i)
}

/// Whether a comma-separated field value (`Connection`, RFC 9110 §7.6.1) lists
/// `token`, compared case-insensitively with surrounding whitespace ignored.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Removes hop-by-hop fields and every field named in `Connection`.
///
/// One pass over the names finds the fields to remove: most messages carry
/// none or one (`Connection: keep-alive`), and removing each of the nine by name
/// would look every one of them up.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found: [Option<&'static HeaderName>; HOP_BY_HOP_COUNT] = Default::default();
    let mut n = 0;
    for name in headers.keys() {
        if let Some(h) = hop_by_hop(name) {
            found[n] = Some(h);
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `close` names no field; `keep-alive` is removed anyway.
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for h in found.into_iter().flatten() {
        headers.remove(h);
    }
    for h in named {
        headers.remove(h);
    }
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

/// Appends the client IP to `X-Forwarded-For` (keeping earlier hops).
/// `client_ip_value` is `client_ip` as a field value made beforehand (once per
/// connection): with no earlier hop it is the whole field, and nothing is made.
pub fn append_forwarded_for(
    headers: &mut HeaderMap,
    client_ip: &str,
    client_ip_value: Option<&HeaderValue>,
) {
    let joined = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {client_ip}"),
        _ => match client_ip_value {
            Some(v) => {
                headers.insert(X_FORWARDED_FOR.clone(), v.clone());
                return;
            }
            None => client_ip.to_string(),
        },
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// Joins several `Cookie` fields into one, as an HTTP/1.1 backend expects
/// (RFC 9113 §8.2.3 lets HTTP/2 clients split them).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let _ = first;
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Rough size of a header block on the wire (`name: value\r\n` each), for byte counts.
pub fn wire_size(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn strips_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gw\""),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // Nothing to remove: the map is left as it is.
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("ApplicationGatewayAffinity=abc; b=2"),
        );
        assert_eq!(cookie(&h, "ApplicationGatewayAffinity"), Some("abc"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(cookie(&h, "b"), Some("2"));
    }

    #[test]
    fn forwarded_for_appends_or_takes_the_ready_value() {
        let ready = HeaderValue::from_static("10.0.0.7");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.7", Some(&ready));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        append_forwarded_for(&mut h, "10.0.0.7", Some(&ready));
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.7");
        // An empty earlier field is replaced, as without a ready value.
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static(""));
        append_forwarded_for(&mut h, "10.0.0.7", None);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(has_token(b" close ", "close"));
        assert!(!has_token(b"closed, x-close", "close"));
        assert!(!has_token(b"", "close"));
    }
}
