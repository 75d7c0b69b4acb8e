//! `validate`, the built-in default, the console's auth, reload (API and SIGHUP)
//! keeping connections, and graceful shutdown.

use crate::support::*;
use bytes::Bytes;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `portcullis validate -c PATH`, asserts exit code 2, returns stdout.
fn validate_refused(path: &std::path::Path) -> String {
    let out = Command::new(bin())
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn validate_prints_every_error_with_its_path_and_exits_2() {
    let dir = temp_dir("validate");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:99999"
colour = "blue"

[[backend_http_settings]]
name = "s"
port = 0
request_timeout = "2 weeks"

[[probes]]
name = "p"
interval = 0
path = "health"

[[request_routing_rules]]
name = "r"
listener = "nope"
backend_pool = "ghost"
backend_http_settings = "s"
"#,
    )
    .expect("write");
    let text = validate_refused(&path);
    for want in [
        "listeners[0].colour: unknown field `colour`",
        "backend_http_settings[0].request_timeout:",
        "probes[0].interval: 0s is outside 1s..86400s",
        "probes[0].path: `health` must start with `/`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // After fixing the parse errors, the range and reference errors show, all at once.
    let fixed = std::fs::read_to_string(&path)
        .expect("read")
        .replace("colour = \"blue\"\n", "")
        .replace("\"2 weeks\"", "\"20s\"");
    std::fs::write(&path, fixed).expect("write");
    let text = validate_refused(&path);
    for want in [
        "listeners[0].listen: `127.0.0.1:99999` is not an IP:port address",
        "backend_http_settings[0].port: 0 is outside 1..65535",
        "probes[0].interval: 0s is outside 1s..86400s",
        "request_routing_rules[0].listener: no listener is named `nope`",
        "request_routing_rules[0].backend_pool: no backend pool is named `ghost`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let ok = Command::new(bin())
        .args(["validate"])
        .current_dir(&dir)
        .output()
        .expect("run");
    assert_eq!(ok.status.code(), Some(0), "the built-in default is valid");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_default_serves_demo_app_and_stops_cleanly() {
    let mut gw = Gateway::start_default("default");
    let r = get(local(8080), "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("demo-app instance demo-"), "{}", r.text());
    // The instance ports, from the two answers.
    // Both instances take traffic once their first probe passed.
    let mut ports = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports.len() < 2 && Instant::now() < deadline {
        let t = get(local(8080), "/").await.text();
        if let Some(p) = t
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
        {
            ports.insert(p);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ports.len(), 2, "two instances behind the listener");
    // A generated console token, readable only by its owner.
    let token_file = gw.dir.join(".portcullis/console.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file)
            .expect("token file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .expect("token")
        .trim()
        .to_string();
    let no = request(local(9090), "POST", "/api/reload", &[], Bytes::new()).await;
    assert_eq!(no.status, 401);
    let bad = request(
        local(9090),
        "POST",
        "/api/reload",
        &[("authorization", "Bearer wrong")],
        Bytes::new(),
    )
    .await;
    assert_eq!(bad.status, 401);
    let auth = format!("Bearer {token}");
    let apps = request(
        local(9090),
        "GET",
        "/api/apps",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(apps.status, 200);
    assert!(apps.text().contains("\"demo\""), "{}", apps.text());
    assert_eq!(gw.stop(), 0);
    for p in ports {
        assert!(
            std::net::TcpStream::connect(local(p)).is_err(),
            "instance on {p} must be stopped"
        );
    }
}

fn write_pool(gw: &Gateway, port: u16, backend: &str) {
    let text = std::fs::read_to_string(&gw.config).expect("read");
    let start = text.find("addresses = [").expect("addresses");
    let end = start + text[start..].find(']').expect("]");
    let new = format!(
        "{}addresses = [\"{backend}\"{}",
        &text[..start],
        &text[end..]
    );
    assert!(new.contains(&format!("127.0.0.1:{port}")));
    std::fs::write(&gw.config, new).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_config_keeps_connections_and_refuses_bad_config() {
    let (a, b) = (DemoApp::start(), DemoApp::start());
    let port = free_port();
    let gw = Gateway::start("reload", &basic_config(port, &[a.addr.to_string()], ""));
    let addr = local(port);
    let mut conn = connect(addr).await;
    let r = send(&mut conn, addr, "GET", "/", &[], Bytes::new()).await;
    assert_eq!(
        gw.record(&r.txid())["properties"]["serverRouted"],
        a.addr.to_string()
    );

    write_pool(&gw, port, &b.addr.to_string());
    let auth = [("authorization", "Bearer test-token")];
    let ok = request(gw.console, "POST", "/api/reload", &auth, Bytes::new()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Same client connection, new tables.
    let r = send(&mut conn, addr, "GET", "/", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gw.record(&r.txid())["properties"]["serverRouted"],
        b.addr.to_string()
    );

    // A broken config is refused with every error; the old one keeps serving.
    let good = std::fs::read_to_string(&gw.config).expect("read");
    std::fs::write(
        &gw.config,
        good.replace("priority = 10", "priority = 0\nbogus = 1"),
    )
    .expect("write");
    let refused = request(gw.console, "POST", "/api/reload", &auth, Bytes::new()).await;
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("bogus"), "{}", refused.text());
    let r = send(&mut conn, addr, "GET", "/", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gw.record(&r.txid())["properties"]["serverRouted"],
        b.addr.to_string()
    );

    // SIGHUP reloads too.
    std::fs::write(&gw.config, &good).expect("write");
    write_pool(&gw, port, &a.addr.to_string());
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(&mut conn, addr, "GET", "/", &[], Bytes::new()).await;
        if gw.record(&r.txid())["properties"]["serverRouted"] == a.addr.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let app = DemoApp::start();
    let port = free_port();
    let mut gw = Gateway::start("drain", &basic_config(port, &[app.addr.to_string()], ""));
    let slow = tokio::spawn(async move { get(local(port), "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal("TERM");
    let r = slow.await.expect("join");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.stop(), 0);
    let rec = gw.record(&r.txid());
    assert_eq!(rec["properties"]["httpStatus"], 200);
    // Stopped accepting.
    assert!(std::net::TcpStream::connect(local(port)).is_err());
}
