//! Malformed and ambiguous requests: each gets its 4xx with the right
//! `error_info`, the connection is closed, and nothing reaches the backend.

use crate::support::*;

const CASES: &[(&str, &[u8], u16, &str)] = &[
    ("CL+TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("TE+CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("duplicate CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, "ERRORINFO_INVALID_REQUEST"),
    ("signed CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400, "ERRORINFO_INVALID_REQUEST"),
    ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400, "ERRORINFO_INVALID_REQUEST"),
    ("obfuscated TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("NUL in header name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: 1\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("CR in header name", b"GET / HTTP/1.1\r\nHost: a\r\nX\rY: 1\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("userinfo in Host", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("userinfo in target", b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "ERRORINFO_INVALID_REQUEST"),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400, "ERRORINFO_HTTP_NO_HOST_HEADER"),
    ("bad target", b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400, "ERRORINFO_REQUEST_URI_INVALID"),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400, "ERRORINFO_INVALID_VERSION"),
    ("HTTP/0.9", b"GET /\r\n\r\n", 505, "ERRORINFO_INVALID_09_METHOD"),
    ("TRACE", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405, "ERRORINFO_INVALID_METHOD_TRACE"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_is_refused_and_never_forwarded() {
    let backend = RawServer::start(Raw::Hang);
    let port = free_port();
    let gw = Gateway::start_one_core(
        "hostile",
        &basic_config(port, &[backend.addr.to_string()], ""),
    );
    for (name, bytes, status, info) in CASES {
        let (text, closed) = raw_exchange(local(port), bytes);
        assert_eq!(raw_status(&text), *status, "{name}: {text}");
        let txid = raw_txid(&text);
        assert_eq!(
            txid.len(),
            32,
            "{name}: gateway answers carry x-transaction-id: {text}"
        );
        if *status != 405 {
            assert!(closed, "{name}: connection must be closed");
        }
        let rec = gw.record(&txid);
        assert_eq!(rec["properties"]["error_info"], *info, "{name}");
        assert_eq!(rec["properties"]["httpStatus"], *status, "{name}");
        assert_eq!(rec["properties"]["serverRouted"], "-", "{name}");
    }
    assert_eq!(
        backend.requests(),
        Vec::<String>::new(),
        "nothing but probes may reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_is_431_and_overlong_uri_is_414() {
    let backend = RawServer::start(Raw::Hang);
    let port = free_port();
    let gw = Gateway::start_one_core(
        "oversize",
        &basic_config(port, &[backend.addr.to_string()], ""),
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (text, closed) = raw_exchange(local(port), big.as_bytes());
    assert_eq!(raw_status(&text), 431, "{text}");
    assert!(closed);
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(20 * 1024));
    let (text, _) = raw_exchange(local(port), long.as_bytes());
    assert_eq!(raw_status(&text), 414, "{}", &text[..text.len().min(200)]);
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"],
        "ERRORINFO_REQUEST_URI_INVALID"
    );
    assert_eq!(backend.requests(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_second_request_never_reaches_the_backend() {
    // The classic CL.TE smuggle: a front end that trusted Content-Length would
    // forward the tail as a second request. We refuse the whole thing.
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("smuggle", &basic_config(port, &[app.addr.to_string()], ""));
    let attack = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n";
    let (text, closed) = raw_exchange(local(port), attack);
    assert_eq!(raw_status(&text), 400);
    assert!(closed);
    // One answer only, the 400 (not `contains("418")`: a transaction id can hold
    // those digits).
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(!text.contains("HTTP/1.1 418"), "{text}");
    // A valid pipelined pair is served in order.
    let pair = b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (text, _) = raw_exchange(local(port), pair);
    let a = text.find("201 Created").expect("first");
    let b = text.find("202 Accepted").expect("second");
    assert!(a < b);
    // The answer to the request that asked to close says so, once; the first does not.
    let lower = text.to_ascii_lowercase();
    assert_eq!(lower[b..].matches("connection: close").count(), 1, "{text}");
    assert!(!lower[a..b].contains("connection:"), "{text}");
    assert!(gw
        .records()
        .iter()
        .all(|r| r["properties"]["serverStatus"] != "418"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_rides_unchecked_after_a_refused_upgrade_or_connect() {
    let app = DemoApp::start();
    let empty = free_port();
    let port = free_port();
    let config = format!(
        "{}\n{}",
        basic_config(port, &[app.addr.to_string()], ""),
        basic_config(empty, &[], "")
            .replace("\"web\"", "\"web2\"")
            .replace("\"pool\"", "\"pool2\"")
            .replace("\"settings\"", "\"s2\"")
            .replace("\"rule\"", "\"rule2\"")
            .replace("priority = 10", "priority = 20"),
    );
    let _gw = Gateway::start_one_core("upgrade-bypass", &config);
    let smuggle = "POST /status/201 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for (port, first) in [
        (port, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_string()),
        (port, "TRACE / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n".to_string()),
        (empty, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_string()),
        (port, "GET /status/200 HTTP/1.0\r\nHost: a\r\nUpgrade: x\r\nConnection: keep-alive, Upgrade\r\n\r\n".to_string()),
    ] {
        let (text, closed) = raw_exchange(local(port), format!("{first}{smuggle}").as_bytes());
        assert!(closed, "{first:?}: connection must close: {text}");
        assert_eq!(text.matches("HTTP/1.").count(), 1, "{first:?}: exactly one answer: {text}");
        assert!(!text.contains("201 Created"), "{first:?}: {text}");
    }
}

/// Chunk extensions and trailers are dropped on the way (chunks go on with
/// their sizes only), so each has a limit: an extension over 8 KiB or a
/// trailer section over 64 KiB is a 400 and the connection closes; a body
/// within both passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extensions_and_trailers_past_their_limits_are_refused() {
    // Within the limits: a backend that echoes the body. Past them: one that
    // never answers, so the refusal is the only answer (an echo could answer
    // 200 before the bad part of the body arrives; that case is the next
    // test's).
    let app = DemoApp::start();
    let hang = RawServer::start(Raw::Hang);
    let (ok_port, bad_port) = (free_port(), free_port());
    let config = configs_per_port(
        &[
            (ok_port, app.addr.to_string()),
            (bad_port, hang.addr.to_string()),
        ],
        "probe = \"keep\"",
    ) + &keep_probe(1);
    let gw = Gateway::start_one_core("chunk-limits", &config);
    let post = |chunks: &[u8]| {
        [
            &b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            chunks,
        ]
        .concat()
    };
    let ext = |n: usize| [&b"3;"[..], &vec![b'e'; n], b"\r\nabc\r\n0\r\n\r\n"].concat();
    let trailers = |n: usize| {
        [
            &b"3\r\nabc\r\n0\r\n"[..],
            &b"X-T: 0123456789\r\n".repeat(n),
            b"\r\n",
        ]
        .concat()
    };
    for (name, body, port, status) in [
        ("extension at 8 KiB", ext(8 * 1024), ok_port, 200),
        ("extension over 8 KiB", ext(8 * 1024 + 1), bad_port, 400),
        ("trailers within 64 KiB", trailers(3000), ok_port, 200),
        ("trailers over 64 KiB", trailers(4000), bad_port, 400),
    ] {
        let (text, closed) = raw_exchange(local(port), &post(&body));
        assert_eq!(raw_status(&text), status, "{name}: {text}");
        assert!(closed, "{name}");
        let rec = gw.record(&raw_txid(&text));
        let info = if status == 200 {
            "ERRORINFO_NO_ERROR"
        } else {
            "ERRORINFO_INVALID_REQUEST"
        };
        assert_eq!(rec["properties"]["error_info"], info, "{name}");
        if status == 200 {
            assert!(
                text.ends_with("3\r\nabc\r\n0\r\n\r\n"),
                "{name}: the body only: {text}"
            );
        }
    }
}

/// A client that leaves in the middle of its body once the backend's answer
/// has begun (an echo) ends the exchange: the request is logged at once with
/// the status sent and `CLIENT_CLOSED_REQUEST`. The gateway used to go on
/// reading the answer, which the backend, waiting for the rest of the body,
/// never ended: no record, and both connections held, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_after_the_answer_began_ends_the_exchange() {
    use std::io::{Read, Write};
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("mid-body", &basic_config(port, &[app.addr.to_string()], ""));
    let mut s = connect_reading(port);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\nx")
        .expect("write");
    // The echo's head and the one byte it has so far.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nx") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(raw_status(&head), 200, "{head}");
    drop(s);
    let rec = gw.record(&raw_txid(&head));
    assert_eq!(rec["properties"]["httpStatus"], 200, "{rec}");
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_CLIENT_CLOSED_REQUEST",
        "{rec}"
    );
    assert_eq!(rec["properties"]["serverStatus"], "200", "{rec}");
}

/// `Upgrade: h2c` is never forwarded (h2c smuggling: a backend that switched
/// would give the client a tunnel past the routing rules). A Java client's
/// first request on an http:// connection carries it: the request is
/// forwarded as an ordinary one, without `Upgrade` and `HTTP2-Settings`, and
/// the connection goes on. A backend that answers 101 all the same gets no
/// tunnel: the client gets a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_forwarded_and_the_connection_goes_on() {
    use std::io::Write;
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start_one_core("h2c", &basic_config(port, &[app.addr.to_string()], ""));
    let java = "GET /headers HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                Upgrade: h2c\r\nHTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n\
                User-Agent: Java-http-client/21\r\n\r\n";
    let mut s = connect_reading(port);
    for round in 0..2 {
        s.write_all(java.as_bytes()).expect("write");
        let (head, body) = read_response(&mut s);
        assert_eq!(raw_status(&head), 200, "round {round}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let fields = seen["headers"].as_object().expect("headers");
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(
                fields.get(gone).is_none(),
                "round {round}: {gone} forwarded: {seen}"
            );
        }
        assert_eq!(seen["headers"]["user-agent"][0], "Java-http-client/21");
    }
    assert!(!closed_within(
        &mut s,
        std::time::Duration::from_millis(300)
    ));

    // A backend that switches to h2c whatever it was asked (`HTTP2-Settings`
    // not named in `Connection`, as a smuggler would send it).
    let eager = RawServer::start(Raw::Answer(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    ));
    let port = free_port();
    // Kept in rotation: its probe would see the 101 and take it out (502 NO_LIVE).
    let config = kept_config(port, &[eager.addr.to_string()], 1);
    let gw = Gateway::start_one_core("h2c-101", &config);
    let (text, _) = raw_exchange(
        local(port),
        b"GET /admin HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(raw_status(&text), 502, "{text}");
    assert_eq!(text.matches("HTTP/1.").count(), 1, "one answer: {text}");
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"],
        "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"
    );
    let got = eager.requests().join("\n").to_ascii_lowercase();
    assert!(got.starts_with("get /admin http/1.1"), "{got}");
    assert!(
        !got.contains("upgrade") && !got.contains("http2-settings"),
        "{got}"
    );
}

/// A slow upload is not the backend's delay: `request_timeout` (time allowed
/// for the backend's response headers) does not count the time the gateway
/// waits for the client's body. A body that stops coming for
/// `request_header_timeout` before any answer gets 408, as nginx's
/// `client_body_timeout`. A backend that takes the whole body and does not
/// answer still times out (502 `UPSTREAM_TIMED_OUT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_backend_timeout_and_a_stalled_one_is_408() {
    use std::io::Write;
    let whole = RawServer::start(Raw::AfterBody);
    let hang = RawServer::start(Raw::Hang);
    let (port, hang_port) = (free_port(), free_port());
    let config = configs_per_port(
        &[
            (port, whole.addr.to_string()),
            (hang_port, hang.addr.to_string()),
        ],
        "request_timeout = 1\nprobe = \"keep\"",
    ) + &keep_probe(1);
    let gw = Gateway::start_with("slow-upload", "request_header_timeout = 2", &config);

    // 12 bytes, one every 150 ms: 1.8 s of upload against a 1 s
    // request_timeout (and within the minimum rate's 5 s of grace).
    let mut s = connect_reading(port);
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
        .expect("head");
    for _ in 0..12 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        s.write_all(b"x").expect("byte");
    }
    let (head, body) = read_response(&mut s);
    assert_eq!(raw_status(&head), 200, "{head}");
    assert_eq!(body, b"got 12");
    let rec = gw.record(&raw_txid(&head));
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_NO_ERROR",
        "{rec}"
    );

    // Three bytes of ten, then nothing: 408 after the 2 s, the connection closed.
    let started = std::time::Instant::now();
    let (text, closed) = raw_exchange(
        local(port),
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(raw_status(&text), 408, "{text}");
    assert!(closed);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "{text}"
    );
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_INVALID_REQUEST",
        "{rec}"
    );
    assert_eq!(rec["properties"]["httpStatus"], 408, "{rec}");
    assert_eq!(
        rec["properties"]["attempts"][0]["server"],
        whole.addr.to_string(),
        "{rec}"
    );

    // A byte every 400 ms, each wait well within the 2 s: past the 5 s of
    // grace, slower than 240 bytes a second of waiting (Kestrel's minimum
    // body rate): 408.
    let started = std::time::Instant::now();
    let mut s = connect_reading(port);
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .expect("head");
    let mut answer = Vec::new();
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        if s.write_all(b"x").is_err() {
            // Closed after its answer: read what came.
            let _ = std::io::Read::read_to_end(&mut s, &mut answer);
            break;
        }
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        s.set_nonblocking(false).expect("blocking");
        if !answer.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(raw_status(&text), 408, "{text}");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(5), "{took:?}");
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_INVALID_REQUEST",
        "{rec}"
    );

    // The whole body went out and the server says nothing: its timeout.
    let (text, _) = raw_exchange(
        local(hang_port),
        b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(raw_status(&text), 502, "{text}");
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_UPSTREAM_TIMED_OUT",
        "{rec}"
    );
}

/// One HTTP/2 frame: the 9-byte head (RFC 9113 §4.1) and its payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames until the connection ends: the error code of the GOAWAY
/// the gateway sent, if it sent one.
fn h2_goaway_code(s: &mut std::net::TcpStream) -> Option<u32> {
    use std::io::Read;
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    let mut at = 0;
    while at + 9 <= all.len() {
        let len = u32::from_be_bytes([0, all[at], all[at + 1], all[at + 2]]) as usize;
        if all[at + 3] == 0x7 && at + 9 + 8 <= all.len() {
            let code = &all[at + 9 + 4..at + 9 + 8];
            return Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        }
        at += 9 + len;
    }
    None
}

/// HTTP/2 floods end the connection and do not reach the backend: the
/// "rapid reset" (CVE-2023-44487: streams opened and reset at once) gets
/// GOAWAY `ENHANCE_YOUR_CALM` after a few dozen streams (the `h2` crate's
/// limit of 20 streams reset before they were taken), and a header block
/// continued without end (CONTINUATION flood, CVE-2024-27316's kind) ends
/// with GOAWAY long before it ends (the `h2` crate limits the header list to
/// 16 KiB and the CONTINUATION frames of one block).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_and_continuation_floods_end_the_connection() {
    use std::io::Write;
    let backend = RawServer::start(Raw::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let port = free_port();
    let config = kept_config(port, &[backend.addr.to_string()], 1);
    let _gw = Gateway::start_one_core("h2-floods", &config);
    let preface = [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &h2_frame(0x4, 0, 0, &[]),
    ]
    .concat();
    // GET / with :authority a (HPACK static table: 0x82 :method GET, 0x86
    // :scheme http, 0x84 :path /, 0x01 :authority as a literal).
    let get = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];

    let mut s = connect_reading(port);
    s.set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut flood = preface.clone();
    for i in 0..200u32 {
        let id = 1 + 2 * i;
        flood.extend(h2_frame(0x1, 0x4 | 0x1, id, &get)); // HEADERS, END_HEADERS | END_STREAM
        flood.extend(h2_frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = s.write_all(&flood); // the gateway may close before it has read it all
    assert_eq!(
        h2_goaway_code(&mut s),
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM"
    );
    let reached = backend.requests().len();
    assert!(
        reached < 100,
        "{reached} of 200 reset streams reached the backend"
    );

    let mut s = connect_reading(port);
    s.set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    // HEADERS without END_HEADERS, then CONTINUATIONs of literal fields
    // (0x00: a new name, not indexed), 16,000 bytes each.
    let mut field = vec![0x00, 5];
    field.extend_from_slice(b"x-pad");
    field.push(100);
    field.extend_from_slice(&[b'v'; 100]);
    let piece: Vec<u8> = field.iter().copied().cycle().take(16_000).collect();
    let _ = s.write_all(&[&preface[..], &h2_frame(0x1, 0x1, 1, &get)].concat());
    // 64 frames, about 1 MB: many times the header list's 16 KiB. (How much
    // of it the sockets' buffers take says nothing: loopback buffers hold
    // megabytes, and a gateway that ended the connection may still read
    // what came, to let its GOAWAY be seen.)
    for _ in 0..64 {
        if s.write_all(&h2_frame(0x9, 0, 1, &piece)).is_err() {
            break;
        }
    }
    // PROTOCOL_ERROR in the runs seen (the block outgrew the header list).
    assert!(
        h2_goaway_code(&mut s).is_some(),
        "the connection ends with GOAWAY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_normal_clients_and_gets_408() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_with(
        "slowloris",
        "request_header_timeout = 2",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    // 200 connections that send their headers a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(local(port)).expect("connect");
        std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").expect("write");
        slow.push(s);
    }
    let dribble = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut open = slow;
        while start.elapsed() < std::time::Duration::from_secs(4) {
            for s in open.iter_mut() {
                let _ = std::io::Write::write_all(s, b"x");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        open
    });
    // Normal clients are served at once meanwhile.
    for _ in 0..30 {
        let t0 = std::time::Instant::now();
        let r = get(local(port), "/").await;
        assert_eq!(r.status, 200);
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
    }
    let open = dribble.join().expect("join");
    // After the 2 s header timeout each slow connection got 408 and was closed.
    let mut s = open.into_iter().next().expect("one");
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .expect("timeout");
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut text);
    assert_eq!(raw_status(&text), 408, "{text}");
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(rec["properties"]["error_info"], "ERRORINFO_INVALID_REQUEST");
}

/// A connection to the gateway on `port` whose reads give up after 10 s.
fn connect_reading(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(local(port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads one response with a Content-Length body from a kept-alive
/// connection; returns its head.
fn read_one_response(s: &mut std::net::TcpStream) -> String {
    read_response(s).0
}

/// Reads one response with a Content-Length body from a kept-alive
/// connection: its head and its body.
fn read_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (head, body)
}

/// Waits (up to `limit`) for the peer to close: true on EOF.
fn closed_within(s: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
    use std::io::Write;
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        "idle",
        "client_idle_timeout = 1",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    tokio::task::spawn_blocking(move || {
        // A connection that never sends anything is closed after the idle time.
        let mut silent = std::net::TcpStream::connect(local(port)).expect("connect");
        let t0 = std::time::Instant::now();
        assert!(closed_within(
            &mut silent,
            std::time::Duration::from_secs(5)
        ));
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );

        // A connection that sends only empty lines (which RFC 9112 §2.2 lets
        // come before a request) is closed at the idle time too.
        let mut crlf = std::net::TcpStream::connect(local(port)).expect("connect");
        crlf.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .expect("timeout");
        let t0 = std::time::Instant::now();
        let closed = loop {
            if t0.elapsed() > std::time::Duration::from_secs(5) {
                break false;
            }
            if crlf.write_all(b"\r\n").is_err() {
                break true;
            }
            let mut b = [0u8; 16];
            match std::io::Read::read(&mut crlf, &mut b) {
                Ok(0) => break true,
                Ok(_) => panic!("an answer to empty lines: {:?}", &b),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => {} // the read timed out: still open
            }
        };
        assert!(closed, "empty lines kept the connection open for 5 s");
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(900)
                && t0.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            t0.elapsed()
        );

        // A kept-alive connection serves requests, then is closed ~1 s after the last.
        let mut s = std::net::TcpStream::connect(local(port)).expect("connect");
        for _ in 0..3 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .expect("write");
            assert!(read_one_response(&mut s).starts_with("HTTP/1.1 200"));
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        assert!(closed_within(&mut s, std::time::Duration::from_secs(5)));

        // A request that takes longer than the idle time is answered in full:
        // the idle time starts only when its response has ended.
        let mut busy = std::net::TcpStream::connect(local(port)).expect("connect");
        busy.write_all(b"GET /slow?ms=2500 HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        busy.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        assert!(read_one_response(&mut busy).starts_with("HTTP/1.1 200"));
        let t1 = std::time::Instant::now();
        assert!(closed_within(&mut busy, std::time::Duration::from_secs(5)));
        assert!(
            t1.elapsed() >= std::time::Duration::from_millis(800),
            "{:?}",
            t1.elapsed()
        );
    })
    .await
    .expect("client thread");
}

/// Reads up to the end of a response head; returns how many body bytes came
/// with it.
fn read_head(s: &mut std::net::TcpStream) -> (String, usize) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read the head");
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            return (head, buf.len() - end - 4);
        }
    }
}

/// Slow reading, the other half of slowloris: a client that takes no byte of
/// its answer for `client_send_timeout` has its connection closed, which ends
/// the request and frees its backend connection, and the request is logged
/// with the status sent and `CLIENT_CLOSED_REQUEST`. A client that reads slowly
/// but takes some bytes within every timeout gets its whole answer: the time is
/// between writes that move bytes, not for the answer (nginx's `send_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    const BIG: usize = 64 * 1024 * 1024;
    const STEADY: usize = 8 * 1024 * 1024;
    let app = DemoApp::start();
    let port = free_port();
    let gw = std::sync::Arc::new(Gateway::start_with(
        "sendtimeout",
        "client_send_timeout = 1",
        &basic_config(port, &[app.addr.to_string()], ""),
    ));
    let g = gw.clone();
    tokio::task::spawn_blocking(move || {
        // More than the sockets on the way hold: the gateway's writes block.
        let mut stalled = std::net::TcpStream::connect(local(port)).expect("connect");
        write!(stalled, "GET /bytes?n={BIG} HTTP/1.1\r\nHost: a\r\n\r\n").expect("write");
        let (head, _) = read_head(&mut stalled);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let stopped = Instant::now();
        let rec = g.client_left_record(&format!("/bytes?n={BIG}"), 200);
        assert!(
            stopped.elapsed() >= Duration::from_millis(900),
            "given up after {:?}",
            stopped.elapsed()
        );
        let sent = rec["properties"]["sentBytes"].as_u64().expect("sentBytes");
        assert!(sent < BIG as u64, "{sent}");
        // What was on the way arrives, then the connection's end.
        let rest = read_until_closed(&mut stalled);
        assert!(rest < BIG, "{rest}");
        let mut chunk = vec![0u8; 1 << 16];

        // 256 KiB every 100 ms: slow (over 3 s for the answer), but never a
        // full second without a byte, with 900 ms to spare for a client thread
        // the machine is slow to run (at 512 KiB every 300 ms, a CI run beside a
        // build once saw its connection cut 20 KB before the end).
        let mut steady = std::net::TcpStream::connect(local(port)).expect("connect");
        write!(steady, "GET /bytes?n={STEADY} HTTP/1.1\r\nHost: a\r\n\r\n").expect("write");
        let (head, mut got) = read_head(&mut steady);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        steady
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        while got < STEADY {
            std::thread::sleep(Duration::from_millis(100));
            let mut step = 0;
            while step < 256 * 1024 && got < STEADY {
                let n = steady.read(&mut chunk).expect("the answer goes on");
                assert!(n > 0, "closed after {got} bytes");
                step += n;
                got += n;
            }
        }
        assert_eq!(got, STEADY);
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("client thread");
    let uri = format!("/bytes?n={STEADY}");
    let rec = gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == uri);
    assert_eq!(rec["properties"]["error_info"], "ERRORINFO_NO_ERROR");
    assert_eq!(rec["properties"]["httpStatus"], 200);
}
