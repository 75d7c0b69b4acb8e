//! Bodies stream both ways without being buffered whole; upgrades pass through.

use crate::support::*;
use bytes::Bytes;
use std::io::{Read, Write};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start("bodies", &basic_config(port, &[app.addr.to_string()], ""));
    // 8 MiB up and echoed back.
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = request(
        local(port),
        "POST",
        "/echo",
        &[],
        Bytes::from(payload.clone()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), payload.len());
    assert!(r.body == payload, "echoed body differs");
    let rec = gw.record(&r.txid());
    assert!(rec["properties"]["receivedBytes"].as_u64().expect("n") >= payload.len() as u64);
    assert!(rec["properties"]["sentBytes"].as_u64().expect("n") >= payload.len() as u64);
    // 32 MiB down.
    let r = get(local(port), "/bytes?n=33554432").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 33_554_432);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_is_forwarded() {
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start("chunked", &basic_config(port, &[app.addr.to_string()], ""));
    let req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let (text, _) = raw_exchange(local(port), req);
    assert_eq!(raw_status(&text), 200, "{text}");
    assert!(text.contains("hello") && text.contains(" world"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start("ws", &basic_config(port, &[app.addr.to_string()], ""));
    let mut s = std::net::TcpStream::connect(local(port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("read head");
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455 §1.3's example key and accept value.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"));
    // After the upgrade, bytes flow both ways through the gateway.
    for msg in [&b"\x81\x05hello"[..], b"frames pass through untouched"] {
        s.write_all(msg).expect("write");
        let mut echoed = vec![0u8; msg.len()];
        s.read_exact(&mut echoed).expect("echo");
        assert_eq!(echoed, msg);
    }
    let rec = gw.record_where(|r| r["properties"]["requestUri"] == "/ws");
    assert_eq!(rec["properties"]["httpStatus"], 101);
}
