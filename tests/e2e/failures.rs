//! Every row of the failure table (product contract section 4), each with its
//! access-log record.

use crate::support::*;
use bytes::Bytes;
use std::time::{Duration, Instant};

fn props(r: &serde_json::Value) -> &serde_json::Value {
    &r["properties"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_logged_with_the_backend_that_answered() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("success", &basic_config(port, &[app.addr.to_string()], ""));
    let r = get(local(port), "/status/201").await;
    assert_eq!(r.status, 201);
    let txid = r.txid();
    assert_eq!(txid.len(), 32);
    let rec = gw.record(&txid);
    let p = props(&rec);
    assert_eq!(rec["listenerName"], "web");
    assert_eq!(rec["ruleName"], "rule");
    assert_eq!(rec["backendPoolName"], "pool");
    assert_eq!(rec["backendSettingName"], "settings");
    assert_eq!(p["httpStatus"], 201);
    assert_eq!(p["serverStatus"], "201");
    assert_eq!(p["serverRouted"], app.addr.to_string());
    assert_eq!(p["error_info"], "ERRORINFO_NO_ERROR");
    assert!(p["timeTaken"].as_f64().expect("number") >= 0.0);
    let latency: f64 = p["serverResponseLatency"]
        .as_str()
        .expect("string")
        .parse()
        .expect("seconds");
    assert!(latency < 5.0);
    assert!(p["upstreamSourcePort"]
        .as_str()
        .expect("string")
        .parse::<u16>()
        .is_ok());
    assert_eq!(p["attempts"].as_array().expect("attempts").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pool_is_502_upstream_no_live() {
    let port = free_port();
    let gw = Gateway::start_one_core("empty", &basic_config(port, &[], ""));
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains(&r.txid()),
        "page names the transaction id"
    );
    let rec = gw.record(&r.txid());
    assert_eq!(props(&rec)["error_info"], "ERRORINFO_UPSTREAM_NO_LIVE");
    assert_eq!(props(&rec)["serverRouted"], "-");
    assert_eq!(props(&rec)["serverStatus"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_on_every_server_is_502_no_live_with_every_attempt() {
    let (a, b) = (free_port(), free_port());
    let port = free_port();
    // min_servers = 2 keeps both (Unhealthy) servers in rotation, so the request
    // really tries each one instead of being refused up front.
    let gw = Gateway::start_one_core(
        "refused",
        &kept_config(
            port,
            &[format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")],
            2,
        ),
    );
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 502);
    let rec = gw.record(&r.txid());
    let p = props(&rec);
    assert_eq!(p["error_info"], "ERRORINFO_UPSTREAM_NO_LIVE");
    let attempts = p["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts
        .iter()
        .all(|a| a["error_info"] == "ERRORINFO_UPSTREAM_NO_LIVE"));
    // No internal address leaks into the page.
    assert!(!r.text().contains(&a.to_string()) && !r.text().contains("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_fails_over_to_a_live_one() {
    let app = DemoApp::start();
    let dead = free_port();
    let port = free_port();
    let gw = Gateway::start_one_core(
        "failover",
        &kept_config(
            port,
            &[format!("127.0.0.1:{dead}"), app.addr.to_string()],
            2,
        ),
    );
    for _ in 0..4 {
        let r = get(local(port), "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rec = gw.record(&r.txid());
        assert_eq!(props(&rec)["serverRouted"], app.addr.to_string());
    }
    // At least one of them went through the dead server first.
    let tried_dead = gw
        .records()
        .iter()
        .any(|r| props(r)["attempts"].as_array().map(|a| a.len()) == Some(2));
    assert!(tried_dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_close_and_garbage_are_502_closed_connection() {
    let app = DemoApp::start();
    let closer = RawServer::start(Raw::Close);
    let garbage = RawServer::start(Raw::Garbage);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let config = format!(
        "{}\n{}\n{}",
        basic_config(p1, &[app.addr.to_string()], "probe = \"keep\""),
        basic_config(p2, &[closer.addr.to_string()], "probe = \"keep\"")
            .replace("\"web\"", "\"web2\"")
            .replace("\"pool\"", "\"pool2\"")
            .replace("\"settings\"", "\"settings2\"")
            .replace("\"rule\"", "\"rule2\"")
            .replace("priority = 10", "priority = 20"),
        basic_config(p3, &[garbage.addr.to_string()], "probe = \"keep\"")
            .replace("\"web\"", "\"web3\"")
            .replace("\"pool\"", "\"pool3\"")
            .replace("\"settings\"", "\"settings3\"")
            .replace("\"rule\"", "\"rule3\"")
            .replace("priority = 10", "priority = 30"),
    );
    // The probe would soon eject these misbehaving servers (502 NO_LIVE); keep
    // them in rotation to see how each failure itself is reported.
    let config = config + &keep_probe(1);
    let gw = Gateway::start_one_core("closed", &config);
    for (port, path) in [(p1, "/reset"), (p1, "/garbage"), (p2, "/"), (p3, "/")] {
        let r = get(local(port), path).await;
        assert_eq!(r.status, 502, "{port}{path}");
        let rec = gw.record(&r.txid());
        assert_eq!(
            props(&rec)["error_info"],
            "ERRORINFO_UPSTREAM_CLOSED_CONNECTION",
            "{port}{path}"
        );
        assert_eq!(props(&rec)["serverStatus"], "-");
        assert_ne!(props(&rec)["serverRouted"], "-");
    }
    // A POST is not replayed after the backend got it.
    let r = request(local(p2), "POST", "/", &[], Bytes::from_static(b"x")).await;
    assert_eq!(r.status, 502);
    let rec = gw.record(&r.txid());
    assert_eq!(props(&rec)["attempts"].as_array().map(|a| a.len()), Some(1));
}

/// RFC 9110 section 15.5.9: a 408 on a connection taken from the pool is the
/// backend timing the idle connection out as the request came; an idempotent
/// request without a body is sent again on a new connection, a POST gets the 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_on_a_reused_connection_is_replayed_for_idempotent_requests() {
    let backend = RawServer::start(Raw::TimeoutSecond);
    let port = free_port();
    let config = kept_config(port, &[backend.addr.to_string()], 1);
    let gw = Gateway::start_one_core("timeout408", &config);
    let first = get(local(port), "/a").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = get(local(port), "/b").await;
    assert_eq!(second.status, 200, "{}", second.text());
    let rec = gw.record(&second.txid());
    let attempts = props(&rec)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{rec}");
    assert_eq!(attempts[0]["serverStatus"], "408");
    assert_eq!(
        attempts[0]["error_info"],
        "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"
    );
    assert_eq!(attempts[1]["serverStatus"], "200");
    assert_eq!(props(&rec)["error_info"], "ERRORINFO_NO_ERROR");
    assert_eq!(props(&rec)["connectionReused"], false);
    // A request with a body is not sent twice: the client gets the 408.
    let post = request(local(port), "POST", "/c", &[], Bytes::from_static(b"x")).await;
    assert_eq!(post.status, 408, "{}", post.text());
    let rec = gw.record(&post.txid());
    assert_eq!(props(&rec)["attempts"].as_array().map(|a| a.len()), Some(1));
    let sent: Vec<String> = backend.requests();
    assert_eq!(sent.iter().filter(|r| r.starts_with("GET /b ")).count(), 2);
    assert_eq!(sent.iter().filter(|r| r.starts_with("POST /c ")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_headers_within_request_timeout_is_502_timed_out() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core(
        "timeout",
        &basic_config(port, &[app.addr.to_string()], "request_timeout = 1"),
    );
    let started = Instant::now();
    let r = get(local(port), "/hang").await;
    let took = started.elapsed();
    assert_eq!(r.status, 502);
    assert!(
        took >= Duration::from_millis(900),
        "gave up too early: {took:?}"
    );
    let rec = gw.record(&r.txid());
    let p = props(&rec);
    assert_eq!(p["error_info"], "ERRORINFO_UPSTREAM_TIMED_OUT");
    assert_eq!(p["serverRouted"], app.addr.to_string());
    let waited: f64 = p["serverResponseLatency"]
        .as_str()
        .expect("string")
        .parse()
        .expect("seconds");
    assert!(waited >= 0.9, "{waited}");
    // /slow within the timeout still succeeds.
    assert_eq!(get(local(port), "/slow?ms=200").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_leaves_early_is_logged_499() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("499", &basic_config(port, &[app.addr.to_string()], ""));
    let mut s = tokio::net::TcpStream::connect(local(port))
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET /hang?who=leaver HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let rec =
        gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == "/hang?who=leaver");
    assert_eq!(props(&rec)["httpStatus"], 499);
    assert_eq!(props(&rec)["error_info"], "ERRORINFO_CLIENT_CLOSED_REQUEST");
    assert_eq!(props(&rec)["serverRouted"], app.addr.to_string());
    // The try that was in progress is listed, with the reason it ended.
    let attempts = props(&rec)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["server"], app.addr.to_string());
    assert_eq!(attempts[0]["error_info"], "ERRORINFO_CLIENT_CLOSED_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_app_without_ready_instance_is_503_with_retry_after() {
    let port = free_port();
    let gw = Gateway::start_one_core(
        "app503",
        &format!(
            r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:{port}"
[[backend_pools]]
name = "pool"
app = "broken"
[[backend_http_settings]]
name = "s"
[[request_routing_rules]]
name = "r"
listener = "web"
backend_pool = "pool"
backend_http_settings = "s"
[[apps]]
name = "broken"
command = ["false"]
startup_timeout = 1
"#
        ),
    );
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    let rec = gw.record(&r.txid());
    assert_eq!(props(&rec)["error_info"], "ERRORINFO_APP_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_error_page_replaces_the_builtin_one() {
    let port = free_port();
    let dir = temp_dir("pages");
    let page = dir.join("502.html");
    std::fs::write(
        &page,
        "<h1>We are fixing it</h1><p>ref {{transaction_id}}</p>",
    )
    .expect("write");
    let config = basic_config(port, &[], "").replace(
        "listen = ",
        &format!(
            "custom_error_pages = {{ \"502\" = \"{}\" }}\nlisten = ",
            page.display()
        ),
    );
    let _gw = Gateway::start_one_core("pages", &config);
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("We are fixing it"));
    assert!(r.text().contains(&format!("ref {}", r.txid())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_elsewhere_only_for_idempotent_requests_when_configured() {
    let frozen = DemoApp::start();
    let live = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core(
        "timeout-retry",
        &basic_config(
            port,
            &[frozen.addr.to_string(), live.addr.to_string()],
            "request_timeout = 1\nretry_idempotent_on_timeout = true",
        ),
    );
    for s in [&frozen, &live] {
        wait_health(&gw, "pool", &s.addr.to_string(), "Healthy", 10).await;
    }
    // Frozen (SIGSTOP): connections are accepted by the kernel, nothing answers.
    kill(frozen.child.id(), "STOP");
    let mut retried = 0;
    for _ in 0..4 {
        let r = get(local(port), "/").await;
        assert_eq!(r.status, 200);
        let rec = gw.record(&r.txid());
        let attempts = props(&rec)["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if attempts.len() == 2 {
            assert_eq!(attempts[0]["server"], frozen.addr.to_string());
            assert_eq!(attempts[0]["error_info"], "ERRORINFO_UPSTREAM_TIMED_OUT");
            assert_eq!(attempts[1]["server"], live.addr.to_string());
            assert_eq!(attempts[1]["error_info"], "ERRORINFO_NO_ERROR");
            retried += 1;
        }
    }
    assert!(
        retried >= 1,
        "round robin sent no GET to the frozen server first"
    );
    // A POST with a body is not idempotent-and-replayable: its timeout is a 502.
    let mut timed_out = 0;
    for _ in 0..2 {
        let r = request(local(port), "POST", "/echo", &[], Bytes::from_static(b"x")).await;
        if r.status == 502 {
            let rec = gw.record(&r.txid());
            assert_eq!(props(&rec)["error_info"], "ERRORINFO_UPSTREAM_TIMED_OUT");
            assert_eq!(props(&rec)["attempts"].as_array().map(Vec::len), Some(1));
            timed_out += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(timed_out, 1, "one of two POSTs goes to the frozen server");
    kill(frozen.child.id(), "CONT");
}
