//! Monitoring (issue 5): exact counters from /metrics read by a real Prometheus
//! text parser, the time-series API, the terminal view, and an alert that fires
//! and resolves through a webhook served here.

use crate::support::*;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUTH: [(&str, &str); 1] = [("authorization", "Bearer test-token")];

/// Parses an exposition with python's prometheus_client OpenMetrics parser (the
/// strict one: it requires `# EOF`, valid TYPE/UNIT lines and counter `_total`
/// samples): `name{k="v",...}` (labels sorted) → value.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(out.status.success(), "the exposition does not parse");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn config(web: u16, empty: u16, app: &str) -> String {
    let mut c = basic_config(web, &[app.to_string()], "");
    c.push_str(
        &basic_config(empty, &[], "")
            .replace("\"web\"", "\"empty\"")
            .replace("\"pool\"", "\"nobody\"")
            .replace("\"settings\"", "\"s2\"")
            .replace("\"rule\"", "\"rule2\"")
            .replace("priority = 10", "priority = 20"),
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_and_parse_as_prometheus_text() {
    let app = DemoApp::start();
    let (web, empty) = (free_port(), free_port());
    let gw = Gateway::start("metrics", &config(web, empty, &app.addr.to_string()));
    wait_health(&gw, "pool", &app.addr.to_string(), "Healthy", 10).await;
    for _ in 0..3 {
        assert_eq!(get(local(web), "/").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(local(web), "/status/404").await.status, 404);
    }
    for _ in 0..4 {
        assert_eq!(get(local(empty), "/").await.status, 502);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let no_token = request(gw.console, "GET", "/metrics", &[], Bytes::new()).await;
    assert_eq!(
        no_token.status, 401,
        "metrics need the token unless public_metrics"
    );
    let r = request(gw.console, "GET", "/metrics", &AUTH, Bytes::new()).await;
    assert_eq!(r.status, 200);
    let m = parse_exposition(&r.text());
    let v = |k: &str| {
        *m.get(k).unwrap_or_else(|| {
            panic!(
                "no sample {k}; have {:#?}",
                m.keys()
                    .filter(|x| x.starts_with(k.split('{').next().unwrap_or("")))
                    .collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(
        v(r#"portcullis_requests_total{listener="web",status_class="2xx"}"#),
        3.0
    );
    assert_eq!(
        v(r#"portcullis_requests_total{listener="web",status_class="4xx"}"#),
        2.0
    );
    assert_eq!(
        v(r#"portcullis_requests_total{listener="empty",status_class="5xx"}"#),
        4.0
    );
    assert_eq!(
        v(r#"portcullis_failed_requests_total{listener="empty"}"#),
        4.0
    );
    assert!(
        !m.contains_key(r#"portcullis_failed_requests_total{listener="web"}"#),
        "4xx from the app are not failures of the gateway"
    );
    assert_eq!(
        v(
            r#"portcullis_responses_by_error_info_total{error_info="ERRORINFO_UPSTREAM_NO_LIVE",listener="empty"}"#
        ),
        4.0
    );
    assert_eq!(
        v(
            r#"portcullis_responses_by_error_info_total{error_info="ERRORINFO_NO_ERROR",listener="web"}"#
        ),
        5.0
    );
    let server = app.addr.to_string();
    assert_eq!(
        v(&format!(
            r#"portcullis_backend_responses_total{{pool="pool",server="{server}",status_class="2xx"}}"#
        )),
        3.0
    );
    assert_eq!(
        v(&format!(
            r#"portcullis_backend_responses_total{{pool="pool",server="{server}",status_class="4xx"}}"#
        )),
        2.0
    );
    assert_eq!(
        v(r#"portcullis_total_time_seconds_count{listener="web",pool="pool",settings="settings"}"#),
        5.0
    );
    assert_eq!(
        v(&format!(
            r#"portcullis_backend_first_byte_seconds_count{{listener="web",pool="pool",server="{server}",settings="settings"}}"#
        )),
        5.0
    );
    assert_eq!(
        v(r#"portcullis_healthy_hosts{pool="pool",settings="settings"}"#),
        1.0
    );
    assert_eq!(v(r#"portcullis_new_connections_total{}"#), 9.0);
    // Every record of this test reached the log: none was dropped.
    assert_eq!(v(r#"portcullis_access_log_dropped_records_total{}"#), 0.0);
    // The same figures over time.
    let series = |name: &str, scope: &str| {
        let path = format!("/api/metrics?name={name}&{scope}&window=10m&grain=10s");
        let gw = &gw;
        async move {
            let r = request(gw.console, "GET", &path, &AUTH, Bytes::new()).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let j: Value = serde_json::from_slice(&r.body).expect("json");
            j["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["sum"].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        }
    };
    assert_eq!(series("requests", "listener=web").await, 5.0);
    assert_eq!(series("http_4xx", "pool=pool").await, 2.0);
    assert_eq!(series("failed_requests", "listener=empty").await, 4.0);
    let bad = request(
        gw.console,
        "GET",
        "/api/metrics?name=nope&app=x",
        &AUTH,
        Bytes::new(),
    )
    .await;
    assert_eq!(bad.status, 400);
    // The terminal view.
    let out = std::process::Command::new(bin())
        .args([
            "metrics",
            "--listener",
            "web",
            "--window",
            "10m",
            "--api",
            &format!("http://{}", gw.console),
            "--token",
            "test-token",
        ])
        .output()
        .expect("metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("requests") && text.contains("response_time"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_metrics_count_requests_and_instance_figures() {
    let port = free_port();
    let gw = Gateway::start(
        "appmetrics",
        &format!(
            "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\n[[backend_pools]]\nname = \"pool\"\napp = \"demo\"\n\
             [[backend_http_settings]]\nname = \"s\"\n[[request_routing_rules]]\nname = \"r\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_http_settings = \"s\"\n\
             [[apps]]\nname = \"demo\"\ncommand = [\"portcullis\", \"demo-app\"]\nhealth_check_path = \"/health\"\n"
        ),
    );
    for _ in 0..3 {
        assert_eq!(get(local(port), "/").await.status, 200);
    }
    assert_eq!(get(local(port), "/status/503").await.status, 503);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = request(gw.console, "GET", "/metrics", &AUTH, Bytes::new()).await;
    let m = parse_exposition(&r.text());
    assert_eq!(
        m[r#"portcullis_app_requests_total{app="demo",status_class="2xx"}"#],
        3.0
    );
    assert_eq!(
        m[r#"portcullis_app_responses_by_code_total{app="demo",code="503"}"#],
        1.0
    );
    assert_eq!(
        m[r#"portcullis_app_response_seconds_count{app="demo"}"#],
        4.0
    );
    assert!(m[r#"portcullis_app_memory_working_set_bytes{app="demo",instance="demo-0"}"#] > 1e6);
    assert!(m[r#"portcullis_app_threads{app="demo",instance="demo-0"}"#] >= 1.0);
    assert_eq!(m[r#"portcullis_app_queue_length{app="demo"}"#], 0.0);

    // After a restart the old instance (and its port) leave /metrics.
    let before = r.text();
    let old_server = before
        .lines()
        .find(|l| l.starts_with("portcullis_backend_responses_total"))
        .and_then(|l| l.split("server=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a server label:\n{before}"))
        .to_string();
    let restarted = request(
        gw.console,
        "POST",
        "/api/apps/demo/restart",
        &AUTH,
        Bytes::new(),
    )
    .await;
    assert!(restarted.status < 300, "{}", restarted.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = request(gw.console, "GET", "/metrics", &AUTH, Bytes::new())
            .await
            .text();
        if !text.contains(&old_server) && !text.contains(r#"instance="demo-0""#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old instance still on /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A webhook receiver: records the JSON bodies POSTed to it.
fn webhook_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            if let Some(b) = body {
                if let Ok(v) = serde_json::from_slice(&b) {
                    seen.lock().expect("lock").push(v);
                }
            }
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_on_a_burst_of_502s_calls_the_webhook_and_resolves() {
    let app = DemoApp::start();
    let (hook, received) = webhook_server();
    let (web, empty) = (free_port(), free_port());
    let marks = temp_dir("alert-cmd").join("states.txt");
    let alert = format!(
        "\n[[alerts]]\nname = \"too-many-5xx\"\nmetric = \"http_5xx\"\nscope = {{ listener = \"empty\" }}\naggregation = \"total\"\n\
         window = \"10s\"\noperator = \">\"\nthreshold = 3\nseverity = 1\nwebhooks = [\"http://{hook}/hook\"]\n\
         command = [\"sh\", \"-c\", \"echo $PORTCULLIS_ALERT $PORTCULLIS_ALERT_STATE >> {}\"]\n",
        marks.display()
    );
    // The test gateway evaluates alerts every second (alert_evaluation_interval = 1).
    let gw = Gateway::start(
        "alerts",
        &(config(web, empty, &app.addr.to_string()) + &alert),
    );
    for _ in 0..5 {
        assert_eq!(get(local(empty), "/").await.status, 502);
    }
    let fired_at = Instant::now();
    let deadline = fired_at + Duration::from_secs(15);
    loop {
        if received
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["state"] == "Fired")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no Fired webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = received.lock().expect("lock")[0].clone();
    assert_eq!(body["alert"], "too-many-5xx");
    assert_eq!(body["value"], 5.0);
    assert_eq!(body["scope"]["name"], "empty");
    let st = request(gw.console, "GET", "/api/alerts", &AUTH, Bytes::new()).await;
    let st: Value = serde_json::from_slice(&st.body).expect("json");
    assert_eq!(st[0]["state"], "Fired");
    // No more errors: the window empties and the alert resolves.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if received
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["state"] == "Resolved")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never resolved: {:?}",
            received.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = events(&gw).await;
    assert!(
        ev.iter().any(|e| e["kind"] == "alert"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("Fired: total of http_5xx")),
        "{ev:?}"
    );
    let ran = std::fs::read_to_string(&marks).unwrap_or_default();
    assert_eq!(
        ran, "too-many-5xx Fired\ntoo-many-5xx Resolved\n",
        "the command ran on each transition"
    );
    assert!(ev.iter().any(
        |e| e["kind"] == "alert" && e["message"].as_str().unwrap_or("").starts_with("Resolved")
    ));
}
