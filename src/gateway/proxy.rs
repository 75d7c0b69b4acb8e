//! The request path: one client request → route → backend attempts → response,
//! with its access-log record. See ARCHITECTURE.md, "the request path".
//!
//! Failover (section 4): a connection attempt that failed sent nothing, so the
//! request moves to the next server of the pool, always. A request that reached a
//! backend is retried only when it is idempotent, has no body, went out on a
//! reused idle connection, and that connection closed before any response byte
//! or answered 408 (the keep-alive race; RFC 9110 section 15.5.9 lets a client
//! repeat a request a 408 met in transit); the retry uses a fresh connection. A request that could
//! not be sent at all (pooled connection already closed) is retried without
//! conditions.

use super::body::{Inner, PendingRecord, ResponseBody};
use super::deadline;
use super::failure::{builtin_page, custom_page, ErrorInfo};
use super::fields::ClientFields;
use super::guard::Rejection;
use super::h1client;
use super::h1server::OnUpgrade;
use super::headers::{self, X_TRANSACTION_ID};
use super::health::ServerHealth;
use super::pool::{affinity_key, Backend, Candidate, HostRewrite, PoolSource, ServerAddr};
use super::probe::Prober;
use super::reqbody::ClientBody;
use super::routing::{backend_path, match_listener, ListenerInfo};
use super::upstream::{ClientWait, Conn, ConnKey, ConnectError, Liveness, ReqBody, Upstream};
use super::Snapshot;
use crate::accesslog::{secs_string, AccessLog, AccessRecord, Attempt, Properties, Text};
use crate::txid::TransactionId;
use arc_swap::ArcSwap;
use bytes::Bytes;
use compact_str::ToCompactString;
use http::header::HeaderName;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most bytes of a request head the gateway sets aside for it at once
/// (`RequestHead::size_hint`); a larger head grows as it is written.
const MAX_HEAD_HINT: usize = 16 * 1024;

/// The gateway's shared state: the current tables, the backend connection pool
/// and the access log.
pub struct Gateway {
    /// Current route tables; replaced whole on reload.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The activity log (passive-health ejections go there).
    pub events: Arc<crate::events::EventLog>,
    /// Backend connections.
    pub upstream: Arc<Upstream>,
    /// Access log.
    pub log: AccessLog,
    /// Metrics and time series.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

/// TLS facts of a client connection, for the log.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: Text,
    /// e.g. `TLSv1.3`.
    pub protocol: Text,
}

/// Per client connection: held by every connection, idle ones too, so kept
/// small (152 bytes; docs/benchmarks.md section 4).
pub struct ConnInfo {
    /// Gateway state.
    pub gateway: Arc<Gateway>,
    /// The bound address the client connected to (the route table key).
    pub bound: SocketAddr,
    /// The client.
    pub peer: SocketAddr,
    /// TLS details for https listeners (boxed: 8 bytes in every
    /// connection's facts where they were 48, plain ones included).
    pub tls: Option<Box<TlsInfo>>,
    /// An HTTP/1 connection (our server, `h1server.rs`), not HTTP/2.
    pub http1: bool,
    /// The client's IP address as text (`clientIP`, `X-Forwarded-For`), made
    /// once per connection; inline (no allocation) up to 24 bytes: every
    /// IPv4 address and short IPv6 ones (`::1`, `::ffff:192.0.2.1`).
    pub peer_ip: Text,
    /// `peer_ip` as a field value (`X-Forwarded-For` when the client sent none).
    pub peer_ip_value: Option<HeaderValue>,
}

impl ConnInfo {
    /// The facts of a new client connection.
    pub fn new(
        gateway: Arc<Gateway>,
        bound: SocketAddr,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
        http1: bool,
    ) -> ConnInfo {
        let peer_ip = ip_text(peer.ip());
        ConnInfo {
            gateway,
            bound,
            peer,
            tls: tls.map(Box::new),
            http1,
            peer_ip_value: HeaderValue::from_str(&peer_ip).ok(),
            peer_ip,
        }
    }
}

/// An IP address as text, as `IpAddr`'s `Display` writes it: IPv4 dotted
/// decimal (`192.0.2.1`), IPv6 in RFC 5952's form (by `Display` itself). IPv4's
/// octets are written with `itoa` into a stack buffer, made text once:
/// `Display` took about 1,300 instructions, and `CompactString::push_str`
/// per piece 300 more than this, once per client connection (the close
/// scenario of docs/benchmarks.md).
fn ip_text(ip: IpAddr) -> Text {
    match ip {
        IpAddr::V4(v4) => {
            // "255.255.255.255" is 15 bytes.
            let mut buf = [0u8; 15];
            let mut len = 0;
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let d = digits.format(octet).as_bytes();
                buf[len..len + d.len()].copy_from_slice(d);
                len += d.len();
            }
            Text::from_utf8(&buf[..len]).unwrap_or_default()
        }
        IpAddr::V6(v6) => compact_str::format_compact!("{v6}"),
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

thread_local! {
    /// The second of the last timestamp made on this thread, and its text up to
    /// the milliseconds (`YYYY-MM-DDTHH:MM:SS.`).
    static STAMP: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// `now` as RFC 3339 with milliseconds (`2026-11-22T08:20:15.123Z`, 24 bytes:
/// stored inline). The date and time of day are formatted (humantime) once per
/// second per thread; only the milliseconds change in between.
fn rfc3339_at(now: SystemTime) -> Text {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (since.as_secs(), since.subsec_millis());
    let (cached, mut text) = STAMP.get();
    if cached != secs {
        let full = humantime::format_rfc3339_seconds(now).to_string();
        match full.as_bytes().get(..19) {
            Some(head) => {
                text[..19].copy_from_slice(head);
                text[19] = b'.';
                STAMP.set((secs, text));
            }
            None => {
                return compact_str::format_compact!("{}", humantime::format_rfc3339_millis(now))
            }
        }
    }
    let mut out = [0u8; 24];
    out[..20].copy_from_slice(&text);
    out[20] = b'0' + (ms / 100) as u8;
    out[21] = b'0' + (ms / 10 % 10) as u8;
    out[22] = b'0' + (ms % 10) as u8;
    out[23] = b'Z';
    Text::from_utf8(&out[..]).unwrap_or_default()
}

/// A record with the envelope and the client's side filled in; `client_ip` is
/// `peer`'s IP address as text; `at` is when the request started (a clock
/// reading just made), whose wall-clock time is the record's `timeStamp`
/// (`clock.rs` `wall_at`).
pub fn base_record(
    instance_id: &str,
    peer: SocketAddr,
    client_ip: &str,
    tls: Option<&TlsInfo>,
    transaction_id: &str,
    at: Instant,
) -> AccessRecord {
    AccessRecord {
        time_stamp: rfc3339_at(super::clock::wall_at(at)),
        listener_name: Text::const_new(""),
        rule_name: Text::const_new(""),
        backend_pool_name: Text::const_new(""),
        backend_setting_name: Text::const_new(""),
        // Static text: `category` (27 bytes) would not fit inline.
        operation_name: Text::const_new("ApplicationGatewayAccess"),
        category: Text::const_new("ApplicationGatewayAccessLog"),
        properties: Properties {
            instance_id: instance_id.into(),
            client_ip: client_ip.into(),
            client_port: peer.port(),
            transaction_id: transaction_id.into(),
            ssl_enabled: if tls.is_some() { "on" } else { "off" }.into(),
            ssl_cipher: tls.map(|t| t.cipher.clone()).unwrap_or_default(),
            ssl_protocol: tls.map(|t| t.protocol.clone()).unwrap_or_default(),
            server_routed: "-".into(),
            server_status: "-".into(),
            server_response_latency: "-".into(),
            upstream_source_port: "-".into(),
            error_info: ErrorInfo::NoError.text(),
            server_connect_time: Some("-".into()),
            server_header_time: Some("-".into()),
            attempts: Some(Vec::new()),
            connection_reused: Some(false),
            ..Default::default()
        },
    }
}

/// For unit tests: the record of a request `txid` from 127.0.0.1:1, started
/// now, answered 200 (instance `t`, plain HTTP).
#[cfg(test)]
pub fn test_record(txid: &str) -> AccessRecord {
    let mut r = base_record(
        "t",
        SocketAddr::from(([127, 0, 0, 1], 1)),
        "127.0.0.1",
        None,
        txid,
        Instant::now(),
    );
    r.properties.http_status = 200;
    r
}

/// The handler of one client request (HTTP/1 from `h1server.rs`, HTTP/2 from
/// hyper): routes it, forwards it, and answers with a body that writes the
/// request's access-log record when it ends (or is dropped: 499).
///
/// `fields` are the request's header fields (`req`'s own `HeaderMap` is empty:
/// `fields.rs` says why). `head_bytes` is the size of the request head as it
/// came on the wire (request line, fields, the empty line), for the record's
/// `receivedBytes`; `None` (HTTP/2, whose fields arrive compressed) counts the
/// decoded head as an HTTP/1.1 head would be.
///
/// The checks that need no waiting (the record started, the request's own
/// fields checked) run here, before the future is made; a refused request
/// gets a ready future. The future is boxed: its state machine (about 2.5 KiB,
/// `route_and_forward`'s) exists only while a request is in progress, not in
/// every idle connection. It holds the request's parts once: an `async fn`
/// keeps its arguments beside the locals they move into (the request was in
/// it four times, 3.5 KiB in all), and a new future is copied whole into its
/// box.
pub fn handle(
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
    fields: ClientFields,
    head_bytes: Option<u64>,
) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>> {
    let txid = TransactionId::new();
    let snapshot = conn.gateway.snapshot.load_full();
    let mut pending = pending_record(&conn, &snapshot, &txid);
    // The guard stops checking a connection once a request asks for an upgrade
    // (or is a CONNECT): unless the answer really is 101, close the connection so
    // no further request can ride on it unchecked.
    let asked_upgrade = conn.http1
        && (req.method() == Method::CONNECT
            || headers::asks_upgrade(fields.get_all(&header::UPGRADE)));
    match check_request(&req, &fields, head_bytes, &mut pending) {
        Ok(host) => {
            let (parts, body) = req.into_parts();
            Box::pin(async move {
                let resp = route_and_forward(
                    &conn,
                    &snapshot,
                    (parts, fields),
                    body,
                    pending,
                    &txid,
                    host,
                )
                .await;
                close_unless_switched(resp, asked_upgrade)
            })
        }
        Err(info) => Box::pin(std::future::ready(close_unless_switched(
            error_response(pending, info, &txid, None),
            asked_upgrade,
        ))),
    }
}

/// `Connection: close` on the answer to a request that asked for an upgrade,
/// unless it is the 101 that switches.
fn close_unless_switched(
    mut resp: Response<ResponseBody>,
    asked_upgrade: bool,
) -> Response<ResponseBody> {
    if asked_upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A new record for a request of `conn`, its clock started.
fn pending_record(conn: &ConnInfo, snapshot: &Snapshot, txid: &str) -> PendingRecord {
    let at = Instant::now();
    let record = base_record(
        &snapshot.instance_id,
        conn.peer,
        &conn.peer_ip,
        conn.tls.as_deref(),
        txid,
        at,
    );
    PendingRecord::new(conn.gateway.clone(), record, at)
}

/// The answer to a request head the guard refused (4xx, `Connection: close`),
/// with its record.
pub fn refused(conn: &ConnInfo, rej: Rejection) -> Response<ResponseBody> {
    let txid = TransactionId::new();
    let snapshot = conn.gateway.snapshot.load();
    let mut pending = pending_record(conn, &snapshot, &txid);
    fill_from_rejection(&mut pending.record.properties, &rej);
    pending.received_head = rej.received_bytes;
    error_response(pending, rej.info, &txid, None)
}

fn fill_from_rejection(p: &mut Properties, rej: &Rejection) {
    p.http_method = rej.method.as_str().into();
    p.original_request_uri_with_args = rej.target.as_str().into();
    let (path, query) = rej.target.split_once('?').unwrap_or((&rej.target, ""));
    p.request_uri = path.into();
    p.request_query = query.into();
    p.http_version = if rej.version.is_empty() {
        "HTTP/0.9".into()
    } else {
        rej.version.as_str().into()
    };
    p.original_host = rej.host.as_str().into();
    p.host = rej.host.as_str().into();
    p.user_agent = rej.user_agent.as_str().into();
}

/// A gateway-generated response: the status of `info`, its page (custom if the
/// listener has one), `x-transaction-id`, and `Retry-After` for 503s.
pub fn error_response(
    mut pending: PendingRecord,
    info: ErrorInfo,
    txid: &TransactionId,
    listener: Option<&ListenerInfo>,
) -> Response<ResponseBody> {
    let status = info.status();
    let page = listener
        .and_then(|l| l.error_pages.get(&status.as_u16()))
        .map(|t| custom_page(t, txid))
        .unwrap_or_else(|| builtin_page(info, txid));
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_txid(h, txid);
    if let Some(secs) = info.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if info.closes_connection() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let p = &mut pending.record.properties;
    p.http_status = status.as_u16();
    p.error_info = info.as_str().into();
    p.content_type = "text/html; charset=utf-8".into();
    let head = head_size(status, resp.headers(), &[]) + 20;
    let (parts, ()) = resp.into_parts();
    Response::from_parts(parts, pending.into_body(Inner::Full(Some(page)), head))
}

/// A response head's size in bytes as the record counts it: the status line as
/// the HTTP/1.1 server writes it (`HTTP/1.1 101 Switching Protocols`, the
/// status's canonical reason phrase), the fields (the map's and `listed`,
/// [`ResponseBody::listed_fields`]), CRLF.
fn head_size(status: StatusCode, h: &HeaderMap, listed: &[(HeaderName, HeaderValue)]) -> u64 {
    let reason = status.canonical_reason().unwrap_or("").len() as u64;
    let line = "HTTP/1.1 200 \r\n".len() as u64 + reason;
    line + headers::wire_size(h) + headers::wire_size(listed.iter().map(|(k, v)| (k, v))) + 2
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The request target of `uri` as sent (`/path?query`).
fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

/// Fills the client's side of the record and decides whether the request is
/// routed (`Ok`: the host to route on) or answered here (`Err`). Synchronous, so
/// the handler's future holds the routing future only (not a layer per step).
fn check_request(
    req: &Request<ClientBody>,
    fields: &ClientFields,
    head_bytes: Option<u64>,
    pending: &mut PendingRecord,
) -> Result<HeaderValue, ErrorInfo> {
    let version = req.version();
    let method = req.method();
    // RFC 9112 §3.2.2: the authority of an absolute-form target (and HTTP/2's
    // :authority) wins over the Host header.
    // As a field value: the Host field itself when the host comes from it (a
    // shared slice of the request head, no copy).
    let client_host: Option<HeaderValue> = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => fields.value(&header::HOST).filter(|v| v.to_str().is_ok()),
    };
    {
        let p = &mut pending.record.properties;
        p.http_method = method.as_str().into();
        p.http_version = version_str(version).into();
        p.original_request_uri_with_args = path_and_query(req.uri()).into();
        p.request_uri = req.uri().path().into();
        p.request_query = req.uri().query().unwrap_or("").into();
        p.user_agent = fields.get_str(&header::USER_AGENT).unwrap_or("").into();
        p.original_host = client_host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .into();
        p.host = p.original_host.clone();
    }
    pending.received_head = head_bytes.unwrap_or_else(|| {
        (method.as_str().len() + path_and_query(req.uri()).len() + 12) as u64
            + fields.wire_size()
            + 2
    });

    // RFC 9113 §8.2.1: an HTTP/2 field value must not start or end with SP or
    // HTAB, and a request with one is malformed (§8.1.1), which an
    // intermediary must not forward. HTTP/1's parser takes such whitespace off
    // as optional whitespace (RFC 9112 §5), so only HTTP/2 can carry it here.
    // Answered 400 as h2o does; nghttp2 resets the stream, HAProxy strips the
    // whitespace and nginx forwards it.
    if version == Version::HTTP_2 && fields.iter().any(|(_, v)| padded(v)) {
        return Err(ErrorInfo::InvalidRequest);
    }
    if method == Method::TRACE {
        return Err(ErrorInfo::InvalidMethodTrace);
    }
    if method == Method::CONNECT {
        return Err(ErrorInfo::InvalidMethod);
    }
    // No userinfo in the host: `Host = uri-host [":" port]` (RFC 9110 §7.2;
    // a Host with an invalid value is a 400, RFC 9112 §3.2), and HTTP/2's `:authority` must
    // not carry it (RFC 9113 §8.3.1). `http`'s authority parser takes
    // `user@host`, and a backend that builds links from `Host` would too.
    if client_host
        .as_ref()
        .is_some_and(|h| h.as_bytes().contains(&b'@'))
    {
        return Err(ErrorInfo::InvalidRequest);
    }
    match client_host.filter(|h| !h.is_empty()) {
        Some(host) => Ok(host),
        // HTTP/1.0 may omit Host: only a basic listener can serve it.
        None if version == Version::HTTP_10 => Ok(HeaderValue::from_static("")),
        None => Err(ErrorInfo::HttpNoHostHeader),
    }
}

/// Whether a field value starts or ends with whitespace (SP or HTAB), which
/// RFC 9113 §8.2.1 forbids in HTTP/2. An empty value does not.
fn padded(value: &[u8]) -> bool {
    matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'))
}

/// `host` without its port and trailing dot, lowercase (borrowed when it
/// already is).
fn host_without_port(host: &str) -> std::borrow::Cow<'_, str> {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

/// Routes a checked request and forwards it to a backend, trying the pool's
/// candidates in turn. Not an `async fn`: an async block uses the arguments it
/// captures in place, where an `async fn` would keep each argument twice in
/// its state machine (the request's parts are 224 bytes).
#[allow(clippy::manual_async_fn)]
fn route_and_forward<'a>(
    conn: &'a ConnInfo,
    snapshot: &'a Snapshot,
    (parts, mut fields): (http::request::Parts, ClientFields),
    body: ClientBody,
    mut pending: PendingRecord,
    txid: &'a TransactionId,
    client_host: HeaderValue,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'a {
    async move {
        let Some(port) = snapshot.ports.get(&conn.bound) else {
            return error_response(pending, ErrorInfo::InvalidHost, txid, None);
        };
        // check_request let only text through.
        let host_name = host_without_port(client_host.to_str().unwrap_or(""));
        let Some(lr) = match_listener(&port.routes, &host_name) else {
            return error_response(pending, ErrorInfo::InvalidHost, txid, None);
        };
        let clean_path = remove_dot_segments(parts.uri.path());
        let route = lr.route(&clean_path);
        let listener = route.listener;
        let backend = route.backend;
        let settings = &backend.settings;
        pending.record.listener_name = listener.name.as_ref().into();
        pending.record.rule_name = route.rule_name.as_ref().into();
        pending.record.backend_pool_name = backend.pool.name.as_ref().into();
        pending.record.backend_setting_name = settings.name.as_ref().into();
        if let PoolSource::App { app, .. } = &backend.pool.source {
            pending.obs.app = Some(app.as_str().into());
        }

        // Affinity: a valid cookie names the server to prefer.
        let cookie_name = settings.affinity_cookie.as_deref();
        let prefer = cookie_name
            .and_then(|n| headers::cookie(&fields, n))
            .map(str::to_string);
        let candidates = match backend.candidates(prefer.as_deref()) {
            Ok(c) => c,
            Err(info) => return error_response(pending, info, txid, Some(listener)),
        };
        // An app's concurrency limit: run, wait in its queue, or 503 APP_OVERLOADED.
        if let PoolSource::App {
            app,
            registry,
            limits,
            ..
        } = &backend.pool.source
        {
            if limits.max_concurrent_requests > 0 {
                let capacity = limits.max_concurrent_requests as usize * candidates.len();
                match registry
                    .admission(app)
                    .acquire(capacity, limits.queue_length as usize, limits.queue_timeout)
                    .await
                {
                    Ok(permit) => pending.admission = Some(permit),
                    Err(()) => {
                        return error_response(
                            pending,
                            ErrorInfo::AppOverloaded,
                            txid,
                            Some(listener),
                        )
                    }
                }
            }
        }

        // The request for the backend: the client's target as it came when routing
        // changed nothing in its path (it was parsed as a URI already).
        let unchanged =
            settings.path_override.is_none() && matches!(clean_path, std::borrow::Cow::Borrowed(_));
        let rewritten: Option<String> = if unchanged {
            None
        } else {
            let path = backend_path(
                &clean_path,
                route.matched_prefix_len,
                settings.path_override.as_deref(),
            );
            let target = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            // `requestUri` is the path sent to the backend (check_request put the
            // client's there).
            pending.record.properties.request_uri = target.split('?').next().unwrap_or("").into();
            if Uri::try_from(target.as_str()).is_err() {
                return error_response(pending, ErrorInfo::RequestUriInvalid, txid, Some(listener));
            }
            Some(target)
        };
        let stripped = headers::strip_request_fields(&mut fields);
        let wants_upgrade = parts.version == Version::HTTP_11 && stripped.upgrade.is_some();
        let mut extensions = parts.extensions;
        let client_upgrade = extensions.remove::<OnUpgrade>().filter(|_| wants_upgrade);
        let target: &str = rewritten
            .as_deref()
            .unwrap_or_else(|| path_and_query(&parts.uri));
        if let (true, Some(u)) = (wants_upgrade, stripped.upgrade) {
            fields.insert(header::UPGRADE, u);
            fields.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let added = headers::forwarding_fields(
            stripped.forwarded_for,
            &conn.peer_ip,
            conn.peer_ip_value.as_ref(),
            listener.https,
            &client_host,
            &listener.port_value,
            txid.as_header_value(),
        );

        let has_body = !http_body::Body::is_end_stream(&body);
        // With a body, the time its upload waits for the client, which the
        // backend's `request_timeout` does not count (`upstream.rs` `ClientWait`).
        let mut client_wait = None;
        let body = if has_body {
            let counter = Arc::new(AtomicU64::new(0));
            pending.received_body = Some(counter.clone());
            let wait = Arc::new(ClientWait::new(Instant::now(), counter));
            client_wait = Some(wait.clone());
            ReqBody::counted(body, wait)
        } else {
            ReqBody::empty()
        };
        let replayable = !has_body && is_idempotent(&parts.method);

        let mut body = Some(body);
        let mut last_failure = ErrorInfo::UpstreamNoLive;
        let mut retried_elsewhere = false;
        let upstream = &conn.gateway.upstream;

        for cand in candidates.iter() {
            let server = &cand.server;
            let addr = cand.addr;
            let addr_text = match &cand.health {
                Some(h) => h.addr_text.clone(),
                None => addr.to_compact_string(),
            };
            let mut in_flight = cand.health.as_ref().map(|h| InFlight::new(h.clone()));
            let host_value = match &settings.host {
                HostRewrite::Client => Some(client_host.clone()),
                HostRewrite::Fixed(v) => Some(v.clone()),
                HostRewrite::FromBackend => {
                    HeaderValue::from_str(&host_for_backend(server, addr)).ok()
                }
            };
            let tls_name: Option<Arc<str>> = settings
                .tls
                .as_ref()
                .map(|_| tls_name_for(settings, server, host_value.as_ref()));
            let key = ConnKey { addr, tls_name };
            if let Some(h) = &host_value {
                pending.record.properties.host = h.to_str().unwrap_or("").into();
            }
            let request_head = h1client::RequestHead {
                method: &parts.method,
                target,
                fields: &fields,
                host: host_value.as_ref(),
                added: &added,
                // The client's head, less the fields taken out, plus the
                // forwarding fields (about 150 bytes) and room for a longer path.
                size_hint: (pending.received_head as usize).min(MAX_HEAD_HINT) + 256,
                // Our HTTP/1.1 server writes a list of fields as it is; hyper's
                // HTTP/2 server needs the map.
                fields_as_list: parts.version != Version::HTTP_2,
            };
            let mut fresh_only = false;
            let mut replayed = false;
            let liveness = if replayable {
                Liveness::Readiness
            } else {
                Liveness::Ask
            };
            loop {
                let connect_started = Instant::now();
                let pooled = if fresh_only || wants_upgrade {
                    None
                } else {
                    // A request the keep-alive race would replay trusts the
                    // runtime's word that the connection is open (no syscall).
                    upstream.checkout(&key, liveness, connect_started)
                };
                let c: Box<Conn> = match pooled {
                    Some(c) => c,
                    // Boxed: a new connection is the rare case, and its future
                    // (TCP and TLS) would otherwise sit in every request's future.
                    None => match Box::pin(upstream.connect(
                        &key,
                        settings.tls.as_ref(),
                        settings.connect_timeout,
                    ))
                    .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(server = %addr, error = %e, "connect failed");
                            if matches!(e, ConnectError::Refused) {
                                eject(
                                    conn,
                                    backend,
                                    cand,
                                    format!(
                                        "ejected after a refused connection to {addr} at {}",
                                        humantime::format_rfc3339_seconds(SystemTime::now())
                                    ),
                                );
                            }
                            add_attempt(
                                &mut pending.record.properties,
                                Attempt {
                                    server: addr_text.clone(),
                                    error_info: ErrorInfo::UpstreamNoLive.text(),
                                    server_status: "-".into(),
                                },
                            );
                            // TLS failures count as connect failures: nothing was sent.
                            last_failure = ErrorInfo::UpstreamNoLive;
                            break; // next server
                        }
                    },
                };
                let connect_time = if c.reused {
                    std::time::Duration::ZERO
                } else {
                    connect_started.elapsed()
                };
                let Some(b) = body.take() else { break };
                let may_replay = replayable && c.reused && !replayed;
                let (local_port, reused) = (c.local_port, c.reused);
                {
                    // Known before the answer: a 499 record names the server too.
                    let pc = &mut *pending;
                    let p = &mut pc.record.properties;
                    p.server_routed = addr_text.clone();
                    p.upstream_source_port = local_port.to_compact_string();
                    p.connection_reused = Some(reused);
                    p.server_connect_time = Some(secs_string(connect_time));
                    pc.obs.connect = Some(connect_time);
                    // The try in progress, provisionally: a 499 record (client gone
                    // while waiting) lists it; its outcome replaces it below.
                    add_attempt(
                        p,
                        Attempt {
                            server: addr_text.clone(),
                            error_info: ErrorInfo::ClientClosedRequest.text(),
                            server_status: "-".into(),
                        },
                    );
                }
                // A pooled connection was taken just now: no second clock read.
                let sent_at = if reused {
                    connect_started
                } else {
                    Instant::now()
                };
                // The deadline from that clock reading: `timeout` would read
                // the clock again. `request_timeout` is at most a day
                // (validated), so the sum cannot overflow.
                // A timer an earlier request left spare (deadline.rs).
                let mut client_stalled = false;
                let result = match &client_wait {
                    None => {
                        let deadline =
                            tokio::time::Instant::from_std(sent_at + settings.request_timeout);
                        deadline::timeout_at(deadline, h1client::send(c, request_head, b)).await
                    }
                    Some(wait) => {
                        wait_for_answer(
                            h1client::send(c, request_head, b),
                            wait,
                            sent_at + settings.request_timeout,
                            snapshot.header_timeout,
                            parts.version != Version::HTTP_2,
                            &mut client_stalled,
                        )
                        .await
                    }
                };
                let answered = Instant::now();
                let since_arrival = pending.elapsed_at(answered);
                if matches!(result, Ok(Ok(_))) {
                    pending.obs.first_byte = Some(since_arrival);
                }
                let p = &mut pending.record.properties;
                // Whether the keep-alive race (a close, or a 408, on a connection
                // taken from the pool) may send the request again on a fresh
                // connection: not to a server that left its pool (its connections
                // were cut). Asked only when it is met.
                let race_replay =
                    || may_replay && !cand.health.as_ref().is_some_and(|h| h.is_retired());
                if client_stalled {
                    // The client's body stopped coming before any answer: its
                    // fault, not the server's (no outlier count); the backend
                    // connection is closed with the request.
                    add_attempt(
                        p,
                        Attempt {
                            server: addr_text.clone(),
                            error_info: ErrorInfo::RequestBodyTimeout.text(),
                            server_status: "-".into(),
                        },
                    );
                    return fail(pending, ErrorInfo::RequestBodyTimeout, txid, listener);
                }
                match result {
                    // RFC 9110 section 15.5.9: a 408 says the server closed the
                    // connection instead of waiting for a request; a client with a
                    // request in transit MAY repeat it. On a connection taken from
                    // the pool it is the keep-alive race with bytes: the backend
                    // timed the idle connection out (some send a 408 before closing)
                    // as the request went out, and the 408 was waiting there.
                    Ok(Ok(answer))
                        if answer.head.status == StatusCode::REQUEST_TIMEOUT && race_replay() =>
                    {
                        drop(answer); // closes the connection
                        add_attempt(
                            p,
                            Attempt {
                                server: addr_text.clone(),
                                error_info: ErrorInfo::UpstreamClosedConnection.text(),
                                server_status: "408".into(),
                            },
                        );
                        last_failure = ErrorInfo::UpstreamClosedConnection;
                        replayed = true;
                        fresh_only = true;
                        body = Some(ReqBody::empty());
                        continue;
                    }
                    Ok(Ok(mut answer)) => {
                        let latency = answered.saturating_duration_since(sent_at);
                        let status = answer.head.status;
                        // A 5xx counts now; any other answer when its body has ended
                        // (a body cut short is a broken answer too).
                        let body_decides =
                            !status.is_server_error() && status != StatusCode::SWITCHING_PROTOCOLS;
                        if !body_decides {
                            outlier(conn, backend, cand, status.is_server_error());
                        }
                        add_attempt(
                            p,
                            Attempt {
                                server: addr_text.clone(),
                                error_info: ErrorInfo::NoError.text(),
                                server_status: status.as_u16().to_compact_string(),
                            },
                        );
                        p.server_status = status.as_u16().to_compact_string();
                        p.server_response_latency = secs_string(latency);
                        p.server_header_time = Some(secs_string(since_arrival));
                        p.http_status = status.as_u16();
                        p.content_type = answer
                            .head
                            .headers
                            .get(header::CONTENT_TYPE)
                            .or_else(|| {
                                answer
                                    .fields
                                    .iter()
                                    .find(|(n, _)| n == header::CONTENT_TYPE)
                                    .map(|(_, v)| v)
                            })
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .into();
                        // The answer's fields come without hop-by-hop ones
                        // (`h1client.rs` `build_head`).
                        let keep_upgrade = answer.upgrade.take();
                        let (mut rparts, mut rbody) = answer.into_parts(upstream.clone());
                        if status == StatusCode::SWITCHING_PROTOCOLS {
                            // The body (and its list of fields) goes with the
                            // connection: the fields go to the map.
                            for (name, value) in rbody.take_fields() {
                                rparts.headers.append(name, value);
                            }
                            if let Some(u) = keep_upgrade {
                                rparts.headers.insert(header::UPGRADE, u);
                                rparts.headers.insert(
                                    header::CONNECTION,
                                    HeaderValue::from_static("upgrade"),
                                );
                            }
                            add_txid(&mut rparts.headers, txid);
                            let head = head_size(status, &rparts.headers, &[]);
                            let body = match (client_upgrade, rbody.into_conn()) {
                                (Some(client_up), Some(backend_conn)) => {
                                    // The tunnel writes the record when it ends.
                                    let (body, record) = pending.into_tunnel(head);
                                    tokio::spawn(super::tunnel::tunnel(
                                        client_up,
                                        backend_conn,
                                        super::tunnel::Limits {
                                            idle: snapshot.tunnel_idle_timeout,
                                            send: snapshot.send_timeout,
                                        },
                                        record,
                                    ));
                                    body
                                }
                                _ => pending.into_body(Inner::Full(None), head),
                            };
                            return Response::from_parts(rparts, body);
                        }
                        if wants_upgrade {
                            // A refused upgrade: the guard stopped checking this
                            // connection, so it must not carry another request.
                            rparts
                                .headers
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        if request_head.fields_as_list {
                            // As the map's insert: in place of any the backend
                            // sent, else last.
                            rbody.set_field(X_TRANSACTION_ID.clone(), txid.header_value());
                        } else {
                            add_txid(&mut rparts.headers, txid);
                        }
                        if let Some(name) = cookie_name {
                            let key = affinity_key(addr);
                            if prefer.as_deref() != Some(key.as_str()) {
                                set_affinity_cookie(
                                    &mut rparts.headers,
                                    name,
                                    &key,
                                    listener.https,
                                );
                            }
                        }
                        let head = head_size(status, &rparts.headers, rbody.fields());
                        if wants_upgrade {
                            rbody.no_reuse();
                        }
                        if let Some(report) =
                            OutlierReport::new(conn, backend, cand).filter(|_| body_decides)
                        {
                            rbody.on_outcome(Box::new(move |broken| report.record(broken)));
                        }
                        // Counted in flight until the body ends (draining waits for it).
                        pending.in_flight = in_flight.take();
                        return Response::from_parts(
                            rparts,
                            pending.into_body(Inner::Upstream(rbody), head),
                        );
                    }
                    Ok(Err(err)) => {
                        if let h1client::SendError::ClientBody(e) = &err {
                            // The client went away in the middle of its body, or its
                            // chunked framing is invalid: no backend is at fault.
                            tracing::debug!(server = %addr, error = %e, "client request body failed");
                            let info = if super::reqbody::is_invalid_framing(e) {
                                ErrorInfo::InvalidRequest
                            } else {
                                ErrorInfo::ClientClosedRequest
                            };
                            return fail(pending, info, txid, listener);
                        }
                        tracing::debug!(server = %addr, error = %err, reused, "backend failed before response headers");
                        let reset = err.is_reset();
                        if !reused && !reset {
                            // A new connection that closed before complete headers, or an
                            // answer that is not HTTP, is the server's fault (not the
                            // keep-alive race): it counts for outlier detection. A reset
                            // ejects at once below.
                            outlier(conn, backend, cand, true);
                        }
                        if reset && !reused {
                            eject(
                                conn,
                                backend,
                                cand,
                                format!(
                                    "ejected after {addr} reset the connection at {}",
                                    humantime::format_rfc3339_seconds(SystemTime::now())
                                ),
                            );
                        }
                        add_attempt(
                            p,
                            Attempt {
                                server: addr_text.clone(),
                                error_info: ErrorInfo::UpstreamClosedConnection.text(),
                                server_status: "-".into(),
                            },
                        );
                        last_failure = ErrorInfo::UpstreamClosedConnection;
                        if err.nothing_received() && race_replay() {
                            // The keep-alive race: retry once on a fresh connection.
                            replayed = true;
                            fresh_only = true;
                            body = Some(ReqBody::empty());
                            continue;
                        }
                        let retry_on_reset = settings
                            .retry_idempotent_on_reset
                            .unwrap_or_else(|| backend.pool.is_app());
                        if replayable && retry_on_reset && !retried_elsewhere {
                            // Opt-in: the server died under the request; try another once.
                            retried_elsewhere = true;
                            body = Some(ReqBody::empty());
                            break;
                        }
                        return fail(pending, last_failure, txid, listener);
                    }
                    Err(_elapsed) => {
                        outlier(conn, backend, cand, true);
                        add_attempt(
                            p,
                            Attempt {
                                server: addr_text.clone(),
                                error_info: ErrorInfo::UpstreamTimedOut.text(),
                                server_status: "-".into(),
                            },
                        );
                        p.server_response_latency =
                            secs_string(answered.saturating_duration_since(sent_at));
                        last_failure = ErrorInfo::UpstreamTimedOut;
                        if replayable && settings.retry_idempotent_on_timeout && !retried_elsewhere
                        {
                            // Opt-in: the server hangs; try another once, with a
                            // fresh request_timeout.
                            retried_elsewhere = true;
                            body = Some(ReqBody::empty());
                            break;
                        }
                        return fail(pending, last_failure, txid, listener);
                    }
                }
            }
            if body.is_none() {
                break;
            }
        }
        fail(pending, last_failure, txid, listener)
    }
}

/// Waits for the answer to a request with a body: `send` (the upload and the
/// answer's head) against the backend's and the client's limits. The backend
/// has until `backend_deadline` (sending plus `request_timeout`) moved on by
/// the time the upload waited for the client's body (`wait`): a slow upload
/// is not the backend's delay. A wait for the body longer than
/// `client_limit` (`request_header_timeout`, as nginx's `client_body_timeout`
/// limits the time between two reads of a body) or, with `min_rate` (HTTP/1),
/// a body slower than `MIN_BODY_RATE` over the waiting (`ClientWait::too_slow`)
/// sets `client_stalled` and ends it (`Err`). `Err` also when the backend's
/// time is up. While the body is still coming, the limits are looked at
/// every [`LOOK_AGAIN`], so either may be seen up to that late.
async fn wait_for_answer<F: Future>(
    send: F,
    wait: &ClientWait,
    backend_deadline: Instant,
    client_limit: Duration,
    min_rate: bool,
    client_stalled: &mut bool,
) -> Result<F::Output, deadline::Elapsed> {
    let mut send = std::pin::pin!(send);
    loop {
        let now = Instant::now();
        let until = match wait.current(now) {
            // Waiting for the client: the backend's time stands still.
            Some(waited) => now + client_limit.saturating_sub(waited).min(LOOK_AGAIN),
            None => {
                let backend = backend_deadline + wait.total(now);
                if wait.done() {
                    backend
                } else {
                    // A wait may begin in the next poll of `send`.
                    backend.min(now + LOOK_AGAIN)
                }
            }
        };
        match deadline::timeout_at(tokio::time::Instant::from_std(until), send.as_mut()).await {
            Err(elapsed) => {
                let now = Instant::now();
                if wait.current(now).is_some_and(|t| t >= client_limit)
                    || (min_rate && wait.too_slow(now))
                {
                    *client_stalled = true;
                    return Err(elapsed);
                }
                if backend_deadline + wait.total(now) <= now {
                    return Err(elapsed);
                }
            }
            done => return done,
        }
    }
}

/// How often [`wait_for_answer`] looks at a request whose body is still
/// coming (1 s).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

fn fail(
    pending: PendingRecord,
    info: ErrorInfo,
    txid: &TransactionId,
    listener: &ListenerInfo,
) -> Response<ResponseBody> {
    error_response(pending, info, txid, Some(listener))
}

/// Records one backend attempt in the request's record as it happens, so even
/// a 499 record lists every server tried.
fn add_attempt(p: &mut Properties, a: Attempt) {
    let list = p.attempts.get_or_insert_with(Vec::new);
    match list.last_mut() {
        // The outcome of the provisional entry of the try in progress.
        Some(last)
            if last.server == a.server
                && last.error_info == ErrorInfo::ClientClosedRequest.as_str() =>
        {
            *last = a
        }
        _ => list.push(a),
    }
}

/// Adds `x-transaction-id` to a response. The value is new in every response,
/// so HTTP/2's HPACK is told not to index it (RFC 7541 §6.2.3, via `sensitive`):
/// indexed, each one would take a place in the connection's dynamic table and
/// push out entries that do repeat (`content-type`, `server`, `date`).
fn add_txid(h: &mut HeaderMap, txid: &TransactionId) {
    let mut v = txid.header_value();
    v.set_sensitive(true);
    h.insert(X_TRANSACTION_ID.clone(), v);
}

fn set_affinity_cookie(h: &mut HeaderMap, name: &str, key: &str, https: bool) {
    let plain = format!("{name}={key}; Path=/; HttpOnly");
    if let Ok(v) = HeaderValue::from_str(&plain) {
        h.append(header::SET_COOKIE, v);
    }
    if https {
        // Azure's CORS twin: the same value, usable in cross-site requests.
        let cors = format!("{name}CORS={key}; Path=/; SameSite=None; Secure; HttpOnly");
        if let Ok(v) = HeaderValue::from_str(&cors) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

fn host_for_backend(server: &ServerAddr, addr: SocketAddr) -> String {
    if server.ip.to_string() == *server.name {
        match addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        }
    } else {
        server.name.to_string()
    }
}

fn tls_name_for(
    settings: &super::pool::Settings,
    server: &ServerAddr,
    host: Option<&HeaderValue>,
) -> Arc<str> {
    let from_host = host
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .filter(|h| !h.is_empty());
    match (&settings.host, from_host) {
        (HostRewrite::Client, Some(h)) | (HostRewrite::Fixed(_), Some(h)) => h.into(),
        _ => server.name.clone(),
    }
}

/// RFC 3986 §5.2.4 "remove_dot_segments" for a request path, so that
/// `/images/../admin` is routed (and forwarded) as `/admin`. Paths without a
/// `/.` are returned unchanged and unallocated.
pub fn remove_dot_segments(path: &str) -> std::borrow::Cow<'_, str> {
    let encoded_dot = path.contains('%') && path.to_ascii_lowercase().contains("%2e");
    if !path.contains("/.") && !encoded_dot {
        return std::borrow::Cow::Borrowed(path);
    }
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dotdot = |s: &str| {
        let l = s.to_ascii_lowercase();
        l == ".." || l == "%2e%2e" || l == ".%2e" || l == "%2e."
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            s if is_dot(s) => trailing_slash = i == last,
            s if is_dotdot(s) => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing_slash || p.is_empty() {
        p.push('/');
    }
    std::borrow::Cow::Owned(p)
}

/// Counts a request as in flight on a server until dropped (draining waits for 0).
pub struct InFlight(Arc<ServerHealth>);

impl InFlight {
    fn new(h: Arc<ServerHealth>) -> InFlight {
        h.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(h)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Passive health: marks the candidate Unhealthy now and logs the transition.
fn eject(conn: &ConnInfo, backend: &Backend, cand: &Candidate, details: String) {
    if let Some(h) = &cand.health {
        if let Some(t) = h.eject(details) {
            Prober::log_transition(&conn.gateway.events, &backend.health, cand.addr, &t);
        }
    }
}

/// Outlier detection (passive health) for one server: answers in a row that were
/// errors (a 5xx, a timeout, a broken answer or body) and the ejection at the
/// settings' `outlier_consecutive_errors`.
pub struct OutlierReport {
    events: Arc<crate::events::EventLog>,
    table: Arc<super::health::BackendHealth>,
    server: Arc<ServerHealth>,
    addr: SocketAddr,
    limit: u32,
}

impl OutlierReport {
    /// None when outlier detection is off or the server has no health entry.
    fn new(conn: &ConnInfo, backend: &Backend, cand: &Candidate) -> Option<OutlierReport> {
        let limit = backend.settings.outlier_consecutive_errors;
        let server = cand.health.as_ref().filter(|_| limit > 0)?.clone();
        Some(OutlierReport {
            events: conn.gateway.events.clone(),
            table: backend.health.clone(),
            server,
            addr: cand.addr,
            limit,
        })
    }

    /// Counts one answer: an error, or a success that resets the count.
    pub fn record(&self, error: bool) {
        if !error {
            self.server.count_success();
        } else if self.server.count_error(self.limit) {
            let details = format!(
                "ejected after {} consecutive 5xx answers, timeouts or broken answers at {}",
                self.limit,
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
            if let Some(t) = self.server.eject(details) {
                Prober::log_transition(&self.events, &self.table, self.addr, &t);
            }
        }
    }
}

/// Outlier detection: `error` = a 5xx answer, a timeout or a broken answer.
fn outlier(conn: &ConnInfo, backend: &Backend, cand: &Candidate, error: bool) {
    if let Some(o) = OutlierReport::new(conn, backend, cand) {
        o.record(error);
    }
}

/// Body bytes of a gateway-made response.
pub fn full(b: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::plain(Inner::Full(Some(b.into())))
}

#[cfg(test)]
mod tests {
    use super::remove_dot_segments as r;

    #[test]
    fn timestamps_match_humantime() {
        for _ in 0..3 {
            let ours = super::rfc3339_at(std::time::SystemTime::now());
            let now = std::time::SystemTime::now();
            assert_eq!(ours.len(), 24, "{ours}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            let parsed = humantime::parse_rfc3339(&ours).expect("valid RFC 3339");
            let behind = now.duration_since(parsed).expect("not in the future");
            assert!(behind < std::time::Duration::from_secs(1), "{ours}");
            let back = humantime::format_rfc3339_millis(parsed).to_string();
            assert_eq!(back, ours.as_str());
            std::thread::sleep(std::time::Duration::from_millis(7));
        }
    }

    #[test]
    fn only_whitespace_at_a_value_edge_is_padding() {
        for v in [&b" a"[..], b"a ", b"\ta", b"a\t", b" ", b"\t"] {
            assert!(super::padded(v), "{v:?}");
        }
        for v in [&b""[..], b"a", b"a b", b"a\tb", b"\x0ba\x0b", b"\xa0a"] {
            assert!(!super::padded(v), "{v:?}");
        }
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.0.2.9",
            "255.255.255.255",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::8:800:200c:417a",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(super::ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn dot_segments() {
        assert_eq!(r("/a/b"), "/a/b");
        assert_eq!(r("/images/../admin"), "/admin");
        assert_eq!(r("/a/./b/"), "/a/b/");
        assert_eq!(r("/a/b/.."), "/a/");
        assert_eq!(r("/../../x"), "/x");
        assert_eq!(r("/."), "/");
        assert_eq!(r("/.well-known/x"), "/.well-known/x");
        assert_eq!(r("/images/%2e%2e/admin"), "/admin");
        assert_eq!(r("/images/%2E./admin"), "/admin");
        assert_eq!(r("/a/%2e/b"), "/a/b");
    }
}
