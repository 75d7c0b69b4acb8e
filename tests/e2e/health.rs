//! Probes, backend health with details, passive health, draining and failover
//! under load (issue 3).

use crate::support::*;
use std::time::Duration;

fn probe_config(port: u16, servers: &[String], probe: &str, settings_extra: &str) -> String {
    let base = basic_config(port, servers, &format!("probe = \"p\"\n{settings_extra}"));
    format!("{base}\n[[probes]]\nname = \"p\"\n{probe}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_are_exact_and_all_unhealthy_means_502_then_recovery() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start(
        "thresholds",
        &probe_config(
            port,
            &[app.addr.to_string()],
            "path = \"/health\"\ninterval = 1\ntimeout = 1\nunhealthy_threshold = 3\nhealthy_threshold = 2",
            "",
        ),
    );
    let server = app.addr.to_string();
    wait_health(&gw, "pool", &server, "Healthy", 10).await;
    assert_eq!(get(app.addr, "/health/toggle").await.status, 200);
    // Watch every state the API shows until Unhealthy.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = server_health(&gw, "pool", &server).await.expect("server");
        let cf = s["consecutive_failures"].as_u64().expect("n");
        seen.push((cf, s["health"].as_str().expect("h").to_string()));
        if s["health"] == "Unhealthy" {
            assert_eq!(cf, 3, "Unhealthy exactly on the 3rd failure: {seen:?}");
            assert_eq!(
                s["details"],
                "status mismatch: expected 200-399, received 503"
            );
            break;
        }
        assert!(cf < 3, "still Healthy after {cf} failures: {seen:?}");
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|(cf, h)| *cf == 2 && h == "Healthy"),
        "{seen:?}"
    );
    // Every server Unhealthy: 502 NO_LIVE, nothing sent to the backend.
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 502);
    let rec = gw.record(&r.txid());
    assert_eq!(
        rec["properties"]["error_info"],
        "ERRORINFO_UPSTREAM_NO_LIVE"
    );
    assert_eq!(
        rec["properties"]["attempts"].as_array().map(Vec::len),
        Some(0)
    );
    // Recovery needs 2 successes in a row.
    assert_eq!(get(app.addr, "/health/toggle").await.status, 200);
    let mut saw_one_success_unhealthy = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = server_health(&gw, "pool", &server).await.expect("server");
        if s["health"] == "Healthy" {
            break;
        }
        if s["consecutive_failures"] == 0 {
            saw_one_success_unhealthy = true;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_one_success_unhealthy,
        "one success is not enough with healthy_threshold = 2"
    );
    assert_eq!(get(local(port), "/").await.status, 200);
    // The transitions are in the activity log.
    let ev = events(&gw).await;
    let msgs: Vec<String> = ev
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Healthy → Unhealthy: status mismatch")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("Unhealthy → Healthy")),
        "{msgs:?}"
    );
    assert!(ev
        .iter()
        .all(|e| e["time"].is_string() && e["kind"] == "health" || e["kind"] != "health"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_sends_host_port_and_path_as_configured() {
    let dir = temp_dir("recorder");
    let recorder = Recorder::start(&dir);
    let app = DemoApp::start();
    let port = free_port();
    // The pool names the demo app; the probe goes to the recorder's port.
    let gw = Gateway::start(
        "probehost",
        &probe_config(
            port,
            &[app.addr.to_string()],
            &format!(
                "host = \"probe.example\"\nport = {}\npath = \"/healthz?deep=1\"\ninterval = 1\ntimeout = 1",
                recorder.addr.port()
            ),
            "",
        ),
    );
    wait_health(&gw, "pool", &app.addr.to_string(), "Healthy", 10).await;
    let lines = recorder.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "GET /healthz?deep=1 probe.example"),
        "{lines:?}"
    );
    // pick_host_name_from_backend_http_settings takes the settings' host_name.
    let port2 = free_port();
    let recorder2 = Recorder::start(&dir);
    let gw2 = Gateway::start(
        "probepick",
        &probe_config(
            port2,
            &[recorder2.addr.to_string()],
            "pick_host_name_from_backend_http_settings = true\ninterval = 1\ntimeout = 1",
            "host_name = \"settings.example\"",
        ),
    );
    wait_health(&gw2, "pool", &recorder2.addr.to_string(), "Healthy", 10).await;
    assert!(
        recorder2
            .lines()
            .iter()
            .any(|l| l == "GET / settings.example"),
        "{:?}",
        recorder2.lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_body_matching_with_details() {
    let dir = temp_dir("www-probe");
    std::fs::write(dir.join("health.txt"), "STATUS: GOOD\n").expect("write");
    let py = PythonServer::start(&dir);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let gw1 = Gateway::start("body-ok", &probe_config(p1, &[py.addr.to_string()],
        "path = \"/health.txt\"\ninterval = 1\ntimeout = 1\nmatch = { status_codes = [\"200\"], body = \"GOOD\" }", ""));
    let gw2 = Gateway::start(
        "body-bad",
        &probe_config(
            p2,
            &[py.addr.to_string()],
            "path = \"/health.txt\"\ninterval = 1\ntimeout = 1\nmatch = { body = \"READY\" }",
            "",
        ),
    );
    let gw3 = Gateway::start("status-bad", &probe_config(p3, &[py.addr.to_string()],
        "path = \"/missing\"\ninterval = 1\ntimeout = 1\nmatch = { status_codes = [\"200\", \"204-206\"] }", ""));
    let server = py.addr.to_string();
    let ok = wait_health(&gw1, "pool", &server, "Healthy", 10).await;
    assert!(
        ok["details"].as_str().expect("s").starts_with("200 in "),
        "{ok}"
    );
    assert!(ok["latency_ms"].is_u64() && ok["last_probe"].is_string());
    let bad = wait_health(&gw2, "pool", &server, "Unhealthy", 10).await;
    assert_eq!(
        bad["details"],
        "body does not contain \"READY\" (status 200)"
    );
    let bad = wait_health(&gw3, "pool", &server, "Unhealthy", 10).await;
    assert_eq!(
        bad["details"],
        "status mismatch: expected 200, 204-206, received 404"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_for_timeout_refused_dns_and_tls() {
    let app = DemoApp::start();
    let dead = free_port();
    let dir = temp_dir("tlsprobe");
    let (_ca, cert, key) = test_pki(&dir);
    let tls_port = free_port();
    let script = format!(
        "import http.server, ssl\n\
         s = http.server.HTTPServer(('127.0.0.1', {tls_port}), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain('{}', '{}')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        cert.display(),
        key.display()
    );
    let mut py = std::process::Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .expect("python");
    wait_port(local(tls_port));
    let port = free_port();
    let tls_gw_port = free_port();
    let config = probe_config(
        port,
        &[
            app.addr.to_string(),
            format!("127.0.0.1:{dead}"),
            "nonexistent.invalid:80".to_string(),
        ],
        "path = \"/hang\"\ninterval = 2\ntimeout = 1",
        "",
    );
    // The system roots do not trust our test CA: a TLS problem.
    let tls_config = basic_config(
        tls_gw_port,
        &[format!("127.0.0.1:{tls_port}")],
        "protocol = \"https\"\nhost_name = \"localhost\"\nprobe = \"p2\"",
    )
    .replace("\"web\"", "\"web2\"")
    .replace("\"pool\"", "\"tlspool\"")
    .replace("\"settings\"", "\"s2\"")
    .replace("\"rule\"", "\"rule2\"")
    .replace("priority = 10", "priority = 20");
    let gw = Gateway::start(
        "details",
        &format!("{config}\n{tls_config}\n[[probes]]\nname = \"p2\"\ninterval = 1\ntimeout = 2\n"),
    );
    let t = wait_health(&gw, "pool", &app.addr.to_string(), "Unhealthy", 10).await;
    assert!(
        t["details"]
            .as_str()
            .expect("s")
            .starts_with("probe timed out after 1 s"),
        "{t}"
    );
    let r = wait_health(&gw, "pool", &format!("127.0.0.1:{dead}"), "Unhealthy", 10).await;
    assert_eq!(
        r["details"],
        format!("TCP connect to 127.0.0.1:{dead} refused")
    );
    let d = server_health(&gw, "pool", "nonexistent.invalid")
        .await
        .expect("unresolved name listed");
    assert_eq!(d["health"], "Unknown");
    assert_eq!(d["details"], "DNS could not resolve nonexistent.invalid");
    let tls = wait_health(
        &gw,
        "tlspool",
        &format!("127.0.0.1:{tls_port}"),
        "Unhealthy",
        10,
    )
    .await;
    assert!(
        tls["details"]
            .as_str()
            .expect("s")
            .starts_with("TLS problem with the backend certificate"),
        "{tls}"
    );
    let _ = py.kill();
    let _ = py.wait();
    // `portcullis health` and `portcullis probe` show the same, for people.
    let out = std::process::Command::new(bin())
        .args([
            "health",
            "--api",
            &format!("http://{}", gw.console),
            "--token",
            "test-token",
        ])
        .output()
        .expect("health");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Unhealthy")
            && text.contains("refused")
            && text.contains("DNS could not resolve"),
        "{text}"
    );
    let out = std::process::Command::new(bin())
        .args([
            "probe",
            "pool",
            "--api",
            &format!("http://{}", gw.console),
            "--token",
            "test-token",
        ])
        .output()
        .expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL") && text.contains(&format!("127.0.0.1:{dead}")),
        "{text}"
    );
    let out = std::process::Command::new(bin())
        .args([
            "probe",
            "nope",
            "--api",
            &format!("http://{}", gw.console),
            "--token",
            "test-token",
        ])
        .output()
        .expect("probe");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_servers_keeps_unhealthy_servers_in_rotation() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start(
        "minservers",
        &probe_config(
            port,
            &[app.addr.to_string()],
            "path = \"/status/500\"\ninterval = 1\ntimeout = 1\nmin_servers = 1",
            "",
        ),
    );
    wait_health(&gw, "pool", &app.addr.to_string(), "Unhealthy", 10).await;
    let r = get(local(port), "/").await;
    assert_eq!(
        r.status, 200,
        "min_servers = 1 keeps the only server in rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_ejects_at_once_and_fails_over() {
    let (a, b) = (DemoApp::start(), DemoApp::start());
    let port = free_port();
    let mut a = a;
    let gw = Gateway::start(
        "eject",
        &probe_config(
            port,
            &[a.addr.to_string(), b.addr.to_string()],
            "interval = 60\ntimeout = 1",
            "",
        ),
    );
    wait_health(&gw, "pool", &a.addr.to_string(), "Healthy", 10).await;
    wait_health(&gw, "pool", &b.addr.to_string(), "Healthy", 10).await;
    let dead = a.addr.to_string();
    let _ = a.child.kill();
    let _ = a.child.wait();
    for _ in 0..6 {
        let r = get(local(port), "/").await;
        assert_eq!(r.status, 200);
    }
    // No probe ran (60 s interval): passive health did it.
    let s = server_health(&gw, "pool", &dead).await.expect("server");
    assert_eq!(s["health"], "Unhealthy");
    assert!(
        s["details"]
            .as_str()
            .expect("s")
            .starts_with(&format!("ejected after a refused connection to {dead}")),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_finishes_in_flight_requests_and_cutting_does_not() {
    let (a, b) = (DemoApp::start(), DemoApp::start());
    let (p1, p2) = (free_port(), free_port());
    let drain = basic_config(
        p1,
        &[a.addr.to_string()],
        "connection_draining = { enabled = true, drain_timeout = 10 }",
    );
    let cut = basic_config(p2, &[a.addr.to_string()], "")
        .replace("\"web\"", "\"web2\"")
        .replace("\"pool\"", "\"pool2\"")
        .replace("\"settings\"", "\"s2\"")
        .replace("\"rule\"", "\"rule2\"")
        .replace("priority = 10", "priority = 20");
    let gw = Gateway::start("drain", &format!("{drain}\n{cut}"));
    wait_health(&gw, "pool", &a.addr.to_string(), "Healthy", 10).await;
    let slow = tokio::spawn(async move { get(local(p1), "/slow?ms=2500").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Replace server a by b in the draining pool only.
    replace_first_and_reload(&gw, a.addr, b.addr).await;
    let s = wait_health(&gw, "pool", &a.addr.to_string(), "Draining", 5).await;
    assert!(
        s["details"]
            .as_str()
            .expect("s")
            .contains("draining 1 in-flight"),
        "{s}"
    );
    // New requests go to b while a drains.
    let r = get(local(p1), "/").await;
    assert_eq!(
        gw.record(&r.txid())["properties"]["serverRouted"],
        b.addr.to_string()
    );
    let r = slow.await.expect("join");
    assert_eq!(
        r.status, 200,
        "the in-flight request finished on the draining server"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !events(&gw)
        .await
        .iter()
        .any(|e| e["message"] == "drained: every in-flight request finished")
    {
        assert!(std::time::Instant::now() < deadline, "no drained event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without draining, a removed server's in-flight requests are cut.
    let slow = tokio::spawn(async move { get(local(p2), "/slow?ms=3000").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    replace_first_and_reload(&gw, a.addr, b.addr).await;
    let r = slow.await.expect("join");
    assert_eq!(r.status, 502);
    assert_eq!(
        gw.record(&r.txid())["properties"]["error_info"],
        "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_under_load_fails_no_request() {
    let apps = [DemoApp::start(), DemoApp::start(), DemoApp::start()];
    let servers: Vec<String> = apps.iter().map(|a| a.addr.to_string()).collect();
    let victim = apps[1].child.id();
    let port = free_port();
    let gw = Gateway::start(
        "killload",
        &probe_config(
            port,
            &servers,
            "path = \"/health\"\ninterval = 1\ntimeout = 1",
            "retry_idempotent_on_reset = true",
        ),
    );
    for s in &servers {
        wait_health(&gw, "pool", s, "Healthy", 10).await;
    }
    let seen = load(
        local(port),
        "/",
        12,
        Duration::from_secs(4),
        Duration::from_millis(1500),
        || kill(victim, "KILL"),
    )
    .await;
    assert_all_ok(&gw, &seen, 1000);
    let s = server_health(&gw, "pool", &servers[1])
        .await
        .expect("victim");
    assert_eq!(s["health"], "Unhealthy");
    drop(apps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_costs_at_most_a_request_timeout_then_is_probed_out() {
    let apps = [DemoApp::start(), DemoApp::start(), DemoApp::start()];
    let servers: Vec<String> = apps.iter().map(|a| a.addr.to_string()).collect();
    let victim = apps[2].child.id();
    let port = free_port();
    let gw = Gateway::start(
        "freeze",
        &probe_config(
            port,
            &servers,
            "path = \"/health\"\ninterval = 1\ntimeout = 1\nunhealthy_threshold = 1",
            "request_timeout = 2",
        ),
    );
    for s in &servers {
        wait_health(&gw, "pool", s, "Healthy", 10).await;
    }
    let clients = 8;
    let seen = load(
        local(port),
        "/",
        clients,
        Duration::from_secs(6),
        Duration::from_millis(1000),
        || kill(victim, "STOP"),
    )
    .await;
    kill(victim, "CONT");
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    // Each client can be caught once or twice before the probe (1 s) ejects it.
    assert!(failed.len() <= clients * 2, "{} failures", failed.len());
    for (status, txid) in &failed {
        assert_eq!(*status, 502);
        let rec = gw.record(txid);
        assert_eq!(
            rec["properties"]["error_info"],
            "ERRORINFO_UPSTREAM_TIMED_OUT"
        );
        assert_eq!(rec["properties"]["serverRouted"], servers[2]);
        let t: f64 = rec["properties"]["serverResponseLatency"]
            .as_str()
            .expect("s")
            .parse()
            .expect("f");
        assert!(
            (1.9..3.0).contains(&t),
            "bounded by the 2 s request timeout: {t}"
        );
    }
    let ev = events(&gw).await;
    assert!(
        ev.iter().any(
            |e| e["subject"].as_str().unwrap_or("").ends_with(&servers[2])
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Healthy → Unhealthy: probe timed out")
        ),
        "{ev:?}"
    );
    drop(apps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answer_with_a_cut_body_is_a_failure() {
    // The probe reads a body with a Content-Length to its end: a 200 whose body
    // is cut short is a failed probe.
    let cut = RawServer::start(Raw::CutBody);
    let port = free_port();
    let gw = Gateway::start(
        "cutbody",
        &probe_config(
            port,
            &[cut.addr.to_string()],
            "interval = 1\ntimeout = 1",
            "",
        ),
    );
    let s = wait_health(&gw, "pool", &cut.addr.to_string(), "Unhealthy", 10).await;
    let details = s["details"].as_str().unwrap_or_default().to_string();
    assert!(
        details.contains("cut short after 5 of 100 bytes"),
        "{details}"
    );
}

/// Outlier detection (`outlier_consecutive_errors`): 5xx answers and bodies cut
/// short count, in a row, and the limit ejects the server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_counts_5xx_answers_and_cut_bodies() {
    let app = DemoApp::start();
    let cut = RawServer::start(Raw::CutBody);
    let pairs = [
        (free_port(), app.addr.to_string()),
        (free_port(), cut.addr.to_string()),
    ];
    // The probe asks the demo app (probe port) so that only the outlier
    // detection, not a failing probe, can take the cut-body server out.
    let config = format!(
        "{}\n[[probes]]\nname = \"app\"\nport = {}\npath = \"/\"\ninterval = 3600\n",
        configs_per_port(&pairs, "outlier_consecutive_errors = 2\nprobe = \"app\""),
        app.addr.port()
    );
    let gw = Gateway::start("outlier", &config);
    let ejected = |ev: &[serde_json::Value], server: &str| {
        ev.iter().any(|e| {
            e["subject"].as_str().unwrap_or("").ends_with(server)
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("ejected after 2 consecutive")
        })
    };
    // A passing probe resets the count too: let the first probes pass, then
    // there is none for an hour.
    wait_health(&gw, "pool0", &pairs[0].1, "Healthy", 10).await;
    wait_health(&gw, "pool1", &pairs[1].1, "Healthy", 10).await;
    // One 5xx, then a success: the count starts again; two in a row eject.
    for path in ["/status/500", "/", "/status/503"] {
        get(local(pairs[0].0), path).await;
        // A success counts when the gateway has dropped the finished body,
        // an instant after the client has it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ejected(&events(&gw).await, &pairs[0].1));
    let r = get(local(pairs[0].0), "/status/500").await;
    assert_eq!(r.status, 500);
    assert!(
        ejected(&events(&gw).await, &pairs[0].1),
        "{:?}",
        events(&gw).await
    );
    // A 200 whose body is cut short is a broken answer, not a success.
    for _ in 0..2 {
        raw_exchange(
            local(pairs[1].0),
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !ejected(&events(&gw).await, &pairs[1].1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no ejection after two cut bodies: {:?}",
            events(&gw).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cut_records = loop {
        let found: Vec<_> = gw
            .records()
            .into_iter()
            .filter(|r| r["listenerName"] == "web1")
            .collect();
        if found.len() >= 2 || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cut_records.len(), 2);
    for r in &cut_records {
        assert_eq!(
            r["properties"]["error_info"], "ERRORINFO_UPSTREAM_CLOSED_CONNECTION",
            "{r}"
        );
    }
}
