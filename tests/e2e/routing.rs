//! Host and path routing, priorities, affinity, the headers a backend receives,
//! FQDN pools and a foreign backend.

use crate::support::*;
use serde_json::Value;

fn routed(gw: &Gateway, r: &Resp) -> String {
    gw.record(&r.txid())["properties"]["serverRouted"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_site_listeners_share_a_port_and_fall_back_to_basic() {
    let (a, b, c) = (DemoApp::start(), DemoApp::start(), DemoApp::start());
    let port = free_port();
    let only_sites = free_port();
    let config = format!(
        r#"
[[listeners]]
name = "site-a"
listen = "127.0.0.1:{port}"
host_names = ["a.example.com"]
[[listeners]]
name = "wild"
listen = "127.0.0.1:{port}"
host_names = ["*.example.org"]
[[listeners]]
name = "basic"
listen = "127.0.0.1:{port}"
[[listeners]]
name = "strict"
listen = "127.0.0.1:{only_sites}"
host_names = ["only.example.com"]

[[backend_pools]]
name = "a"
addresses = ["{a}"]
[[backend_pools]]
name = "b"
addresses = ["{b}"]
[[backend_pools]]
name = "c"
addresses = ["{c}"]
[[backend_http_settings]]
name = "s"

[[request_routing_rules]]
name = "r-basic"
listener = "basic"
priority = 300
backend_pool = "c"
backend_http_settings = "s"
[[request_routing_rules]]
name = "r-a"
listener = "site-a"
priority = 100
backend_pool = "a"
backend_http_settings = "s"
[[request_routing_rules]]
name = "r-wild"
listener = "wild"
priority = 200
backend_pool = "b"
backend_http_settings = "s"
[[request_routing_rules]]
name = "r-strict"
listener = "strict"
priority = 400
backend_pool = "a"
backend_http_settings = "s"
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    );
    let gw = Gateway::start("sites", &config);
    let addr = local(port);
    for (host, want, listener) in [
        ("a.example.com", a.addr, "site-a"),
        ("A.Example.COM:8080", a.addr, "site-a"),
        ("x.example.org", b.addr, "wild"),
        ("deep.x.example.org", b.addr, "wild"),
        ("example.org", c.addr, "basic"),
        ("other.test", c.addr, "basic"),
    ] {
        let r = request(addr, "GET", "/", &[("host", host)], bytes::Bytes::new()).await;
        assert_eq!(r.status, 200, "{host}");
        let rec = gw.record(&r.txid());
        assert_eq!(
            rec["properties"]["serverRouted"],
            want.to_string(),
            "{host}"
        );
        assert_eq!(rec["listenerName"], listener, "{host}");
    }
    let r = request(
        local(only_sites),
        "GET",
        "/",
        &[("host", "nope.example.com")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        gw.record(&r.txid())["properties"]["error_info"],
        "ERRORINFO_INVALID_HOST"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_maps_route_by_exact_and_prefix_and_override_the_path() {
    let (images, video, default) = (DemoApp::start(), DemoApp::start(), DemoApp::start());
    let port = free_port();
    let config = format!(
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:{port}"
[[backend_pools]]
name = "images"
addresses = ["{i}"]
[[backend_pools]]
name = "video"
addresses = ["{v}"]
[[backend_pools]]
name = "default"
addresses = ["{d}"]
[[backend_http_settings]]
name = "plain"
[[backend_http_settings]]
name = "rewrite"
path = "/status/"
[[url_path_maps]]
name = "map"
default_backend_pool = "default"
default_backend_http_settings = "plain"
path_rules = [
  {{ name = "img", paths = ["/images/*"], backend_pool = "images", backend_http_settings = "rewrite" }},
  {{ name = "vid", paths = ["/video"], backend_pool = "video", backend_http_settings = "plain" }},
]
[[request_routing_rules]]
name = "paths"
rule_type = "path_based"
listener = "web"
priority = 1
url_path_map = "map"
"#,
        i = images.addr,
        v = video.addr,
        d = default.addr
    );
    let gw = Gateway::start("paths", &config);
    let addr = local(port);
    // /images/204 → images pool, path rewritten to /status/204.
    let r = get(addr, "/images/204").await;
    assert_eq!(r.status, 204);
    assert_eq!(routed(&gw, &r), images.addr.to_string());
    let rec = gw.record(&r.txid());
    assert_eq!(rec["properties"]["requestUri"], "/status/204");
    assert_eq!(
        rec["properties"]["originalRequestUriWithArgs"],
        "/images/204"
    );
    let r = get(addr, "/IMAGES/202?x=1").await;
    assert_eq!(r.status, 202, "prefix matching is case-insensitive");
    let r = get(addr, "/video").await;
    assert_eq!(routed(&gw, &r), video.addr.to_string());
    let r = get(addr, "/video/more").await;
    assert_eq!(
        routed(&gw, &r),
        default.addr.to_string(),
        "exact path does not match longer paths"
    );
    let r = get(addr, "/elsewhere").await;
    assert_eq!(routed(&gw, &r), default.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_receives_forwarding_headers_and_no_hop_by_hop_fields() {
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start("headers", &basic_config(port, &[app.addr.to_string()], ""));
    let r = request(
        local(port),
        "GET",
        "/headers",
        &[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.4"),
            // The gateway's own fields replace what a client sends.
            ("x-forwarded-proto", "ftp"),
            ("x-original-host", "forged.example"),
            ("x-transaction-id", "forged"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen: Value = serde_json::from_slice(&r.body).expect("json");
    let h = &seen["headers"];
    assert_eq!(h["host"][0], "shop.example.com");
    assert_eq!(
        h["x-forwarded-for"][0],
        "203.0.113.9, 198.51.100.4, 127.0.0.1"
    );
    assert_eq!(h["x-forwarded-proto"][0], "http");
    for one in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-original-host",
        "x-transaction-id",
    ] {
        assert_eq!(h[one].as_array().map(Vec::len), Some(1), "{one}: {h}");
    }
    assert_eq!(h["x-forwarded-host"][0], "shop.example.com");
    assert_eq!(h["x-forwarded-port"][0], port.to_string());
    assert_eq!(h["x-original-host"][0], "shop.example.com");
    assert_eq!(h["x-transaction-id"][0], r.txid());
    for gone in ["x-private", "keep-alive", "te"] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
}

/// What a raw backend reads: the client's field lines as they came (case and
/// spacing), in their order, less the hop-by-hop ones and those `Connection`
/// names; `Host` first; several `Cookie` fields joined in the first one's
/// place; the gateway's fields after the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_backend_reads_the_clients_field_lines_as_they_came() {
    let backend = RawServer::start(Raw::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ));
    let port = free_port();
    let _gw = Gateway::start(
        "raw-fields",
        &basic_config(port, &[backend.addr.to_string()], ""),
    );
    let request = "GET /raw?q=1 HTTP/1.1\r\n\
        User-Agent:  Mozilla/5.0 (X11)  \r\n\
        Host: shop.example\r\n\
        Connection: close, X-Private\r\n\
        X-Private: secret\r\n\
        Accept:\t*/*\r\n\
        Cookie: a=1\r\n\
        X-Forwarded-For: 203.0.113.9\r\n\
        X-Custom-Thing: 1\r\n\
        cookie: b=2\r\n\
        TE: trailers\r\n\
        Proxy-Authorization: Basic eDp5\r\n\
        \r\n";
    let (answer, _) = raw_exchange(local(port), request.as_bytes());
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].split("\r\n\r\n").next().unwrap_or("");
    let lines: Vec<&str> = head.split("\r\n").collect();
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    assert_eq!(lines[0], "GET /raw?q=1 HTTP/1.1");
    assert_eq!(lines[1], "host: shop.example", "{head}");
    // The client's lines, untouched and in order.
    let kept = [
        "User-Agent:  Mozilla/5.0 (X11)  ",
        "Accept:\t*/*",
        "cookie: a=1; b=2",
        "X-Custom-Thing: 1",
    ];
    let places: Vec<_> = kept
        .iter()
        .map(|k| lines.iter().position(|l| l == k))
        .collect();
    assert!(places.iter().all(Option::is_some), "{kept:?} in {head}");
    assert!(places.windows(2).all(|w| w[0] < w[1]), "order: {head}");
    for gone in [
        "Connection",
        "X-Private",
        "TE",
        "Proxy-Authorization",
        "Cookie: a=1",
    ] {
        assert!(at(gone).is_none(), "{gone} reached the backend: {head}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for"))
            .count(),
        1,
        "{head}"
    );
    let xff = at("x-forwarded-for: ").expect("x-forwarded-for");
    assert_eq!(lines[xff], "x-forwarded-for: 203.0.113.9, 127.0.0.1");
    assert!(
        places.iter().flatten().all(|p| *p < xff),
        "gateway's last: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_override_and_pick_from_backend_address() {
    let app = DemoApp::start();
    let (p1, p2) = (free_port(), free_port());
    let config = format!(
        "{}\n{}",
        basic_config(
            p1,
            &[app.addr.to_string()],
            "host_name = \"internal.example\""
        ),
        basic_config(
            p2,
            &[format!("localhost:{}", app.addr.port())],
            "pick_host_name_from_backend_address = true"
        )
        .replace("\"web\"", "\"web2\"")
        .replace("\"pool\"", "\"pool2\"")
        .replace("\"settings\"", "\"settings2\"")
        .replace("\"rule\"", "\"rule2\"")
        .replace("priority = 10", "priority = 20"),
    );
    let gw = Gateway::start("hosts", &config);
    let r = request(
        local(p1),
        "GET",
        "/headers",
        &[("host", "public.example")],
        bytes::Bytes::new(),
    )
    .await;
    let seen: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(seen["headers"]["host"][0], "internal.example");
    assert_eq!(seen["headers"]["x-original-host"][0], "public.example");
    let rec = gw.record(&r.txid());
    assert_eq!(rec["properties"]["host"], "internal.example");
    assert_eq!(rec["properties"]["originalHost"], "public.example");
    // The FQDN `localhost` is resolved and its name is sent as Host.
    let r = request(
        local(p2),
        "GET",
        "/headers",
        &[("host", "public.example")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(seen["headers"]["host"][0], "localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_cookie_affinity() {
    let (a, b) = (DemoApp::start(), DemoApp::start());
    let (p1, p2) = (free_port(), free_port());
    let servers = [a.addr.to_string(), b.addr.to_string()];
    let config = format!(
        "{}\n{}",
        basic_config(p1, &servers, ""),
        basic_config(p2, &servers, "cookie_based_affinity = true")
            .replace("\"web\"", "\"web2\"")
            .replace("\"pool\"", "\"pool2\"")
            .replace("\"settings\"", "\"settings2\"")
            .replace("\"rule\"", "\"rule2\"")
            .replace("priority = 10", "priority = 20"),
    );
    let gw = Gateway::start("affinity", &config);
    // Both servers probed Healthy first (Unknown ones only serve when none is Healthy).
    for pool in ["pool", "pool2"] {
        for s in &servers {
            wait_health(&gw, pool, s, "Healthy", 10).await;
        }
    }
    // Round robin alternates.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(routed(&gw, &get(local(p1), "/").await));
    }
    assert_eq!(seen.len(), 2);
    // Affinity: the cookie pins the server.
    let first = get(local(p2), "/").await;
    let cookie = first.header("set-cookie").expect("affinity cookie");
    assert!(
        cookie.starts_with("ApplicationGatewayAffinity="),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let pinned = routed(&gw, &first);
    for _ in 0..6 {
        let r = request(
            local(p2),
            "GET",
            "/",
            &[("cookie", &pair)],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(routed(&gw, &r), pinned);
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie while the pinned server lives"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_server_as_a_foreign_backend() {
    let dir = temp_dir("www");
    std::fs::write(dir.join("hello.txt"), "hello from python\n").expect("write");
    let py = PythonServer::start(&dir);
    let port = free_port();
    let gw = Gateway::start("python", &basic_config(port, &[py.addr.to_string()], ""));
    let r = get(local(port), "/hello.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from python\n");
    let r = get(local(port), "/missing.txt").await;
    assert_eq!(r.status, 404);
    let rec = gw.record(&r.txid());
    assert_eq!(rec["properties"]["serverStatus"], "404");
    assert_eq!(rec["properties"]["error_info"], "ERRORINFO_NO_ERROR");
    // python's HTTP/1.0 server closes every connection: later requests still work.
    for _ in 0..5 {
        assert_eq!(get(local(port), "/hello.txt").await.status, 200);
    }
}
