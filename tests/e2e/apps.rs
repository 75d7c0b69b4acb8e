//! The app host (issue 4): supervised instances, lifecycle under load, 503s,
//! process figures, logs, and no orphans.

use crate::support::*;
use bytes::Bytes;
use serde_json::Value;
use std::time::{Duration, Instant};

fn app_config(port: u16, app: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:{port}"
[[backend_pools]]
name = "pool"
app = "web-app"
[[backend_http_settings]]
name = "s"
probe = "p"
[[probes]]
name = "p"
path = "/health"
interval = 1
timeout = 1
[[request_routing_rules]]
name = "r"
listener = "web"
backend_pool = "pool"
backend_http_settings = "s"
[[apps]]
name = "web-app"
{app}
"#
    )
}

const AUTH: [(&str, &str); 1] = [("authorization", "Bearer test-token")];

async fn app_json(gw: &Gateway) -> Value {
    let r = request(gw.console, "GET", "/api/apps/web-app", &AUTH, Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("json")
}

async fn pids(gw: &Gateway) -> Vec<u32> {
    app_json(gw).await["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
        .collect()
}

async fn wait_app<F: Fn(&Value) -> bool>(gw: &Gateway, what: &str, secs: u64, f: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let a = app_json(gw).await;
        if f(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "app never {what}: {a:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running(a: &Value, n: usize) -> bool {
    a["state"] == "Running"
        && a["instances"].as_array().map(|i| i.len()) == Some(n)
        && a["instances"]
            .as_array()
            .is_some_and(|i| i.iter().all(|x| x["state"] == "Ready"))
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn action(gw: &Gateway, what: &str, body: &str) -> Resp {
    request(
        gw.console,
        "POST",
        &format!("/api/apps/web-app/{what}"),
        &AUTH,
        Bytes::from(body.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_restarted_and_clients_see_no_failure() {
    let port = free_port();
    let gw = Gateway::start("kill9", &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 2\nhealth_check_path = \"/health\""));
    let a = wait_app(&gw, "ran 2 instances", 20, |a| running(a, 2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // both probed Healthy
    let victim = a["instances"][0]["pid"].as_u64().expect("pid") as u32;
    let seen = load(
        local(port),
        "/",
        8,
        Duration::from_secs(4),
        Duration::from_millis(1000),
        || kill(victim, "KILL"),
    )
    .await;
    assert_all_ok(&gw, &seen, 500);
    let a = wait_app(&gw, "restarted the killed instance", 15, |a| running(a, 2)).await;
    let inst = &a["instances"][0];
    assert_ne!(inst["pid"].as_u64(), Some(victim as u64), "a new process");
    assert_eq!(inst["restarts"], 1);
    let ev = events(&gw).await;
    assert!(
        ev.iter().any(|e| e["kind"] == "instance"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("killed by signal 9")),
        "{ev:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_and_is_reported() {
    let port = free_port();
    let gw = Gateway::start("crashloop", &app_config(port, "command = [\"sh\", \"-c\", \"echo starting; exit 3\"]\ninstances = 1\nstartup_timeout = 5"));
    let started = Instant::now();
    let a = wait_app(&gw, "Degraded", 20, |a| a["state"] == "Degraded").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "backoff spaced the attempts: {:?}",
        started.elapsed()
    );
    assert!(a["instances"][0]["restarts"].as_u64().expect("n") >= 3);
    let delays: Vec<String> = events(&gw)
        .await
        .iter()
        .filter_map(|e| {
            e["message"]
                .as_str()
                .filter(|m| m.contains("exit code 3"))
                .map(str::to_string)
        })
        .collect();
    assert!(delays[0].contains("restarting in 1 s"), "{delays:?}");
    assert!(delays[1].contains("restarting in 2 s"), "{delays:?}");
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        gw.record(&r.txid())["properties"]["error_info"],
        "ERRORINFO_APP_UNAVAILABLE"
    );
    let logs = request(
        gw.console,
        "GET",
        "/api/apps/web-app/logs",
        &AUTH,
        Bytes::new(),
    )
    .await;
    assert!(
        logs.text().contains("web-app-0 stdout starting"),
        "{}",
        logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_scale_under_load_lose_no_request() {
    let port = free_port();
    let gw = Gateway::start("rolling", &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 2\nhealth_check_path = \"/health\""));
    wait_app(&gw, "ran 2 instances", 20, |a| running(a, 2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = pids(&gw).await;
    let api = format!("http://{}", gw.console);
    let seen = load(
        local(port),
        "/",
        8,
        Duration::from_secs(9),
        Duration::from_millis(800),
        move || {
            std::thread::spawn(move || {
                let run = |args: &[&str]| {
                    let out = std::process::Command::new(bin())
                        .args(args)
                        .args(["--api", &api, "--token", "test-token"])
                        .output()
                        .expect("cli");
                    assert!(
                        out.status.success(),
                        "{args:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                };
                run(&["app", "restart", "web-app"]);
                std::thread::sleep(Duration::from_millis(2500));
                run(&["app", "scale", "web-app", "3"]);
                std::thread::sleep(Duration::from_millis(1500));
                run(&["app", "scale", "web-app", "1"]);
            });
        },
    )
    .await;
    assert_all_ok(&gw, &seen, 1000);
    let a = wait_app(&gw, "ran 1 instance", 20, |a| running(a, 1)).await;
    let now: Vec<u32> = a["instances"]
        .as_array()
        .expect("i")
        .iter()
        .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert!(
        before.iter().all(|p| !now.contains(p)),
        "restart replaced every process"
    );
    for p in &before {
        assert!(!alive(*p), "old instance {p} stopped");
    }
    let ev: Vec<String> = events(&gw)
        .await
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(ev.iter().any(|m| m == "restarted"), "{ev:?}");
    assert!(ev.iter().any(|m| m.starts_with("drained")), "{ev:?}");
    assert!(
        ev.iter().any(|m| m == "scaled from 3 to 1 instance(s)"),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_503_app_stopped_and_start_restores() {
    let port = free_port();
    let gw = Gateway::start("stopstart", &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 1\nhealth_check_path = \"/health\""));
    wait_app(&gw, "ran", 20, |a| running(a, 1)).await;
    let old = pids(&gw).await;
    let r = action(&gw, "stop", "").await;
    assert_eq!(r.status, 202);
    let r = get(local(port), "/").await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        gw.record(&r.txid())["properties"]["error_info"],
        "ERRORINFO_APP_STOPPED"
    );
    assert!(!alive(old[0]));
    assert_eq!(
        action(&gw, "restart", "").await.status,
        409,
        "a stopped app cannot be restarted"
    );
    assert_eq!(action(&gw, "start", "").await.status, 202);
    wait_app(&gw, "ran again", 20, |a| running(a, 1)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(local(port), "/").await.status != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        action(&gw, "scale", "{\"instances\": 65}").await.status,
        400
    );
    let nope = request(
        gw.console,
        "POST",
        "/api/apps/nope/start",
        &AUTH,
        Bytes::new(),
    )
    .await;
    assert_eq!(nope.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overload_queue_answers_503_exactly_past_its_limits() {
    let port = free_port();
    let gw = Gateway::start(
        "overload",
        &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 1\nhealth_check_path = \"/health\"\nmax_concurrent_requests = 2\nqueue_length = 3\nqueue_timeout = 10"),
    );
    wait_app(&gw, "ran", 20, |a| running(a, 1)).await;
    // 2 run + 3 wait = 5 served; the 6th is refused at once.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(tokio::spawn(async move {
            get(local(port), "/slow?ms=1500").await
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let sixth = get(local(port), "/slow?ms=1500").await;
    assert_eq!(sixth.status, 503);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "refused without waiting"
    );
    assert!(sixth.header("retry-after").is_some());
    assert_eq!(
        gw.record(&sixth.txid())["properties"]["error_info"],
        "ERRORINFO_APP_OVERLOADED"
    );
    for t in tasks {
        assert_eq!(t.await.expect("join").status, 200);
    }
    // A queue wait longer than queue_timeout is refused too.
    let port2 = free_port();
    let gw2 = Gateway::start(
        "queuetimeout",
        &app_config(port2, "command = [\"portcullis\", \"demo-app\"]\ninstances = 1\nhealth_check_path = \"/health\"\nmax_concurrent_requests = 1\nqueue_length = 5\nqueue_timeout = \"500ms\""),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app_json(&gw2).await["state"] != "Running" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = tokio::spawn(async move { get(local(port2), "/slow?ms=2000").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let waited = get(local(port2), "/").await;
    assert_eq!(waited.status, 503);
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        gw2.record(&waited.txid())["properties"]["error_info"],
        "ERRORINFO_APP_OVERLOADED"
    );
    assert_eq!(first.await.expect("join").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_survives_its_gateway() {
    for (name, sig) in [("orphans-term", "TERM"), ("orphans-kill", "KILL")] {
        let port = free_port();
        let gw = Gateway::start(name, &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 2\nhealth_check_path = \"/health\""));
        wait_app(&gw, "ran", 20, |a| running(a, 2)).await;
        let list = pids(&gw).await;
        assert_eq!(list.len(), 2);
        gw.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(15);
        while list.iter().any(|p| alive(*p)) {
            assert!(
                Instant::now() < deadline,
                "{sig}: instances {list:?} outlived portcullis"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_app_started_through_sh_works() {
    let port = free_port();
    let gw = Gateway::start(
        "foreign",
        &app_config(port, "command = [\"sh\", \"-c\", \"exec python3 -m http.server $PORT --bind 127.0.0.1\"]\ninstances = 1\nhealth_check_path = \"/\"")
            .replace("path = \"/health\"", "path = \"/\""),
    );
    wait_app(&gw, "ran python", 20, |a| running(a, 1)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(local(port), "/").await;
        if r.status == 200 {
            assert!(r.text().contains("Directory listing"), "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "{} {}", r.status, r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_figures_move_and_logs_stream() {
    let port = free_port();
    let gw = Gateway::start("figures", &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 1\nhealth_check_path = \"/health\""));
    let a = wait_app(&gw, "ran", 20, |a| running(a, 1)).await;
    let (mem0, cpu0) = (
        a["instances"][0]["memory_bytes"].as_u64().expect("mem"),
        a["instances"][0]["cpu_seconds"].as_f64().expect("cpu"),
    );
    assert!(
        mem0 > 0
            && a["instances"][0]["threads"].as_u64().expect("threads") >= 1
            && a["instances"][0]["handles"].as_u64().expect("fds") >= 3
    );
    assert_eq!(get(local(port), "/leak?mb=64").await.status, 200);
    assert_eq!(get(local(port), "/burn?ms=700").await.status, 200);
    let a = app_json(&gw).await;
    let (mem1, cpu1) = (
        a["instances"][0]["memory_bytes"].as_u64().expect("mem"),
        a["instances"][0]["cpu_seconds"].as_f64().expect("cpu"),
    );
    assert!(mem1 >= mem0 + 60 * 1024 * 1024, "{mem0} → {mem1}");
    assert!(
        a["instances"][0]["private_bytes"]
            .as_u64()
            .expect("private")
            >= 60 * 1024 * 1024
    );
    assert!(cpu1 >= cpu0 + 0.5, "{cpu0} → {cpu1}");
    // `portcullis logs --follow` streams new lines as they come.
    let mut follow = std::process::Command::new(bin())
        .args([
            "logs",
            "--app",
            "web-app",
            "--follow",
            "--api",
            &format!("http://{}", gw.console),
            "--token",
            "test-token",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(local(port), "/status/299?marker=live-line")
            .await
            .status,
        299
    );
    let out = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("marker=live-line"))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "the live line never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let line = reader.join().expect("join").expect("line");
    assert!(
        line.contains("web-app-0 stdout GET /status/299?marker=live-line"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_after_ready_is_still_a_crash_loop() {
    let port = free_port();
    let gw = Gateway::start("crashready", &app_config(port, "command = [\"portcullis\", \"demo-app\"]\ninstances = 1\nhealth_check_path = \"/health\""));
    let mut degraded = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !degraded && Instant::now() < deadline {
        let a = app_json(&gw).await;
        if a["state"] == "Degraded" {
            degraded = true;
            break;
        }
        if a["instances"][0]["state"] == "Ready" {
            // Wait for the answer (a 502 once the instance died): a client that
            // leaves at once may be gone before the request was forwarded.
            let _ = std::net::TcpStream::connect(local(port)).and_then(|mut s| {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(b"GET /crash HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
                let mut sink = Vec::new();
                s.read_to_end(&mut sink)
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(degraded, "three crashes in a row make the app Degraded");
}
