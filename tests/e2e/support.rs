//! Test support: the real `portcullis` binary on OS-chosen loopback ports, real
//! backends (demo-app, python3 http.server, raw TCP misbehavers), a small HTTP
//! client, and access-log readers.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Next candidate in [`free_port`]'s range; starts at a pid-derived offset.
static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);

/// A loopback port that is free now, taken from 15000..32000 — below the
/// kernel's ephemeral range (32768..60999), so that no `bind(0)` elsewhere
/// (an app instance's `PORT`, a backend the test started, an outgoing
/// connection) can take it between this check and the gateway binding it.
/// A counter hands each port out once per test run.
pub fn free_port() -> u16 {
    const LOW: usize = 15_000;
    const SPAN: usize = 17_000;
    let _ = NEXT_PORT.compare_exchange(
        0,
        (std::process::id() as usize * 97) % SPAN + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under target/e2e-tmp.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The first CPU this process may run on (`Cpus_allowed_list` in
/// /proc/self/status), for `taskset`.
fn first_allowed_cpu() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|v| {
                    v.trim()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse().ok())
                })
        })
        .unwrap_or(0)
}

/// A running `portcullis run`.
pub struct Gateway {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub console: SocketAddr,
}

impl Gateway {
    /// Writes `config` (with `{console}` replaced by a free console address and
    /// `{dir}` by the folder) and starts the binary; waits for `ready`.
    pub fn start(name: &str, config: &str) -> Gateway {
        Self::start_with(name, "", config)
    }

    /// Like [`Gateway::start`] with extra `[gateway]` lines.
    pub fn start_with(name: &str, gateway_lines: &str, config: &str) -> Gateway {
        Self::start_on(name, gateway_lines, config, false)
    }

    /// Like [`Gateway::start`], confined to one core (`taskset`): the gateway
    /// then runs its single-threaded runtime, where small writes are batched
    /// (`gateway/batch.rs`). Asserts that it did.
    pub fn start_one_core(name: &str, config: &str) -> Gateway {
        let gw = Self::start_on(name, "", config, true);
        assert!(
            gw.stderr_text().contains("batched writes on"),
            "the gateway did not run single-threaded:\n{}",
            gw.stderr_text()
        );
        gw
    }

    fn start_on(name: &str, gateway_lines: &str, config: &str, one_core: bool) -> Gateway {
        let dir = temp_dir(name);
        let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = format!(
            "[gateway]\ninstance_id = \"e2e\"\nshutdown_timeout = 10\nalert_evaluation_interval = 1\n{gateway_lines}\n[console]\nlisten = \"{console}\"\ntoken = \"test-token\"\n\n{}",
            config.replace("{dir}", &dir.display().to_string())
        );
        let path = dir.join("portcullis.toml");
        std::fs::write(&path, text).expect("write config");
        Self::spawn(dir, path, console, &["run", "-c"], one_core)
    }

    fn spawn(
        dir: PathBuf,
        path: PathBuf,
        console: SocketAddr,
        args: &[&str],
        one_core: bool,
    ) -> Gateway {
        let mut cmd = if one_core {
            let mut c = Command::new("taskset");
            c.args(["-c", &first_allowed_cpu().to_string()]).arg(bin());
            c
        } else {
            Command::new(bin())
        };
        cmd.args(args);
        if args.last() == Some(&"-c") {
            cmd.arg(&path);
        }
        let mut child = cmd
            .current_dir(&dir)
            .env("PORTCULLIS_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains(" ready ") || l.ends_with(" ready") || l.contains("ready config") {
                    let _ = tx.send(l.clone());
                }
                lines.lock().expect("lock").push(l);
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(60));
        if ready.is_err() {
            let _ = child.kill();
            panic!(
                "portcullis did not get ready; stderr:\n{}",
                stderr.lock().expect("lock").join("\n")
            );
        }
        Gateway {
            child,
            dir,
            config: path,
            stderr,
            console,
        }
    }

    /// Starts `portcullis run` without a config file in an empty folder.
    pub fn start_default(name: &str) -> Gateway {
        let dir = temp_dir(name);
        let path = dir.join("none.toml");
        Self::spawn(
            dir,
            path,
            SocketAddr::from(([127, 0, 0, 1], 9090)),
            &["run"],
            false,
        )
    }

    /// The access-log records written so far.
    pub fn records(&self) -> Vec<Value> {
        let path = self.dir.join(".portcullis/logs/access.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 10 s) for the record of transaction `txid`.
    pub fn record(&self, txid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self
                .records()
                .into_iter()
                .find(|r| r["properties"]["transactionId"] == txid)
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no access-log record for {txid}; have {:#?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) for a record matching `pred`.
    pub fn record_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no matching access-log record; have {:#?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The record of the request for `uri` (path and query), waited for as in
    /// [`Gateway::record_where`]; asserts that it says the client left
    /// (`ERRORINFO_CLIENT_CLOSED_REQUEST`) with `status` (499, or the status
    /// already sent).
    pub fn client_left_record(&self, uri: &str, status: u16) -> Value {
        let rec = self.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == uri);
        assert_eq!(rec["properties"]["httpStatus"], status, "{rec:#}");
        assert_eq!(
            rec["properties"]["error_info"], "ERRORINFO_CLIENT_CLOSED_REQUEST",
            "{rec:#}"
        );
        rec
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM and wait (up to 30 s) for the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "portcullis did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All stderr lines so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `portcullis demo-app` process on a free port.
pub struct DemoApp {
    pub child: Child,
    pub addr: SocketAddr,
}

impl DemoApp {
    pub fn start() -> DemoApp {
        let mut child = Command::new(bin())
            .args(["demo-app", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo-app");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected demo-app line {line:?}"));
        // Keep draining stdout so the app never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        DemoApp { child, addr }
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python3 -m http.server` serving `dir` on a free port.
pub struct PythonServer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl PythonServer {
    pub fn start(dir: &Path) -> PythonServer {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 http.server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr);
        PythonServer { child, addr }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 15 s) until something accepts on `addr`.
pub fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while StdStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// How a raw test backend treats each connection.
#[derive(Clone, Copy, Debug)]
pub enum Raw {
    /// Accepts, reads, never answers.
    Hang,
    /// Reads the request, then closes without answering.
    Close,
    /// Reads the request, answers bytes that are not HTTP.
    Garbage,
    /// Reads the request, answers a 200 head promising 100 bytes, sends 5, closes.
    CutBody,
    /// Reads the request, writes these bytes as they are, closes.
    Answer(&'static [u8]),
    /// Answers a connection's first request 200 (`ok`, kept alive) and its
    /// next one 408 with `Connection: close`, as a server that timed the idle
    /// connection out the moment the request came.
    TimeoutSecond,
    /// Reads a request and its whole `Content-Length` body, then answers 200
    /// with the body's size as text (`got N`) and closes, as a server that
    /// takes a whole upload before it answers.
    AfterBody,
}

/// A raw TCP backend on a free port; records the first bytes of every connection.
pub struct RawServer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    pub fn start(kind: Raw) -> RawServer {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let note = |b: &[u8]| {
                        log.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(b).into_owned())
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let n = s.read(&mut buf).unwrap_or(0);
                    note(&buf[..n]);
                    match kind {
                        Raw::Hang => std::thread::sleep(Duration::from_secs(60)),
                        Raw::Close => {}
                        Raw::Garbage => {
                            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.0 this is not http\r\n\r\n");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Raw::CutBody => {
                            let _ =
                                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
                        }
                        Raw::Answer(bytes) => {
                            let _ = s.write_all(bytes);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Raw::AfterBody => {
                            let mut got = buf[..n].to_vec();
                            let head_end = loop {
                                if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                                    break Some(i + 4);
                                }
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => break None,
                                    Ok(k) => got.extend_from_slice(&buf[..k]),
                                }
                            };
                            let Some(head_end) = head_end else { return };
                            let head =
                                String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            while got.len() < head_end + length {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(k) => got.extend_from_slice(&buf[..k]),
                                }
                            }
                            let body = format!("got {length}");
                            let _ = s.write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            );
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Raw::TimeoutSecond => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                            let n = s.read(&mut buf).unwrap_or(0);
                            if n > 0 {
                                note(&buf[..n]);
                                let _ = s.write_all(
                                    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                                );
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                });
            }
        });
        RawServer { addr, received }
    }

    /// What reached the backend other than health probes.
    pub fn requests(&self) -> Vec<String> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| !r.contains("User-Agent: portcullis-probe"))
            .cloned()
            .collect()
    }
}

/// A response read by [`request`].
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn txid(&self) -> String {
        self.header("x-transaction-id")
            .expect("x-transaction-id header")
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send(&mut tx, addr, method, path, headers, body).await
}

/// Sends on an existing connection.
pub async fn send(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", addr.to_string());
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).expect("request");
    let resp = tx.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// GET `path` with Host `host` (or the address).
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], Bytes::new()).await
}

/// Opens a keep-alive connection.
pub async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

/// Writes raw bytes, reads until the server closes (or 5 s pass). Returns the
/// bytes and whether the server closed the connection.
pub fn raw_exchange(addr: SocketAddr, data: &[u8]) -> (String, bool) {
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(data).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Status code of the first response in raw bytes.
pub fn raw_status(text: &str) -> u16 {
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The `x-transaction-id` of the first response in raw bytes.
pub fn raw_txid(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("x-transaction-id: "))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A test CA and a `localhost` / `127.0.0.1` leaf signed by it (openssl CLI).
/// Returns (ca certificate, leaf certificate, leaf key) paths.
pub fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=portcullis test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A basic config: one listener on `port` → pool `addresses` with `settings` lines.
pub fn basic_config(port: u16, addresses: &[String], settings: &str) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:{port}"

[[backend_pools]]
name = "pool"
addresses = [{list}]

[[backend_http_settings]]
name = "settings"
{settings}

[[request_routing_rules]]
name = "rule"
listener = "web"
priority = 10
backend_pool = "pool"
backend_http_settings = "settings"
"#
    )
}

/// The probe `keep`, for settings that say `probe = "keep"`: it keeps up to
/// `min_servers` servers of a pool in rotation whatever their health, so a raw
/// backend that answers probes badly, or a misbehaving one a test watches, is
/// still routed to.
pub fn keep_probe(min_servers: u32) -> String {
    format!("\n[[probes]]\nname = \"keep\"\nmin_servers = {min_servers}\n")
}

/// A [`basic_config`] whose settings use [`keep_probe`] (`min_servers` kept).
pub fn kept_config(port: u16, addresses: &[String], min_servers: u32) -> String {
    basic_config(port, addresses, "probe = \"keep\"") + &keep_probe(min_servers)
}

/// One [`basic_config`] per (listener port, backend address): listener `webN`,
/// pool `poolN`, settings `settingsN` (with `settings` lines), rule `ruleN`.
pub fn configs_per_port(pairs: &[(u16, String)], settings: &str) -> String {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (port, addr))| {
            basic_config(*port, std::slice::from_ref(addr), settings)
                .replace("\"web\"", &format!("\"web{i}\""))
                .replace("\"pool\"", &format!("\"pool{i}\""))
                .replace("\"settings\"", &format!("\"settings{i}\""))
                .replace("\"rule\"", &format!("\"rule{i}\""))
                .replace("priority = 10", &format!("priority = {}", 10 + i))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `127.0.0.1:port` as a socket address.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET /api/backend-health` of a gateway started by [`Gateway::start`].
pub async fn backend_health(gw: &Gateway) -> Value {
    let r = request(
        gw.console,
        "GET",
        "/api/backend-health",
        &[("authorization", "Bearer test-token")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("json")
}

/// The health entry of `server` (an `IP:port` or name) in pool `pool`.
pub async fn server_health(gw: &Gateway, pool: &str, server: &str) -> Option<Value> {
    let h = backend_health(gw).await;
    h["pools"].as_array()?.iter().find(|p| p["name"] == pool)?["settings"]
        .as_array()?
        .iter()
        .flat_map(|s| s["servers"].as_array().cloned().unwrap_or_default())
        .find(|s| s["address"] == server)
}

/// Polls until `server`'s health is `want` (up to `secs`), returning its entry.
pub async fn wait_health(gw: &Gateway, pool: &str, server: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = server_health(gw, pool, server).await {
            if s["health"] == want {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never became {want}: {s}"
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "{server} not in backend health: {}",
                backend_health(gw).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The activity log of a gateway.
pub async fn events(gw: &Gateway) -> Vec<Value> {
    let r = request(
        gw.console,
        "GET",
        "/api/events",
        &[("authorization", "Bearer test-token")],
        Bytes::new(),
    )
    .await;
    serde_json::from_slice::<Value>(&r.body)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A python3 backend that answers 200 `ok` and appends `METHOD TARGET HOST` of
/// every request to `log`.
pub struct Recorder {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Recorder {
    pub fn start(dir: &Path) -> Recorder {
        let port = free_port();
        let log = dir.join(format!("recorder-{port}.log"));
        let script = format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       open('{log}', 'a').write(f\"{{self.command}} {{self.path}} {{self.headers.get('Host')}}\\n\")\n\
             \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n",
            log = log.display()
        );
        let child = Command::new("python3")
            .args(["-c", &script])
            .spawn()
            .expect("python3");
        let addr = local(port);
        wait_port(addr);
        Recorder { child, addr, log }
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGKILL/SIGSTOP/SIGCONT to a process.
pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// `clients` keep-alive clients sending `GET path` to `addr` for `run`; calls
/// `during` once after `after`. Returns every status seen with its transaction id.
/// Asserts that a [`load`] run made more than `min` requests and that every one
/// got 200; on failure shows the first failures with their access-log records.
pub fn assert_all_ok(gw: &Gateway, seen: &[(u16, String)], min: usize) {
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(seen.len() > min, "only {} requests", seen.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        failed
            .iter()
            .take(5)
            .map(|(s, t)| (s, gw.record(t)))
            .collect::<Vec<_>>()
    );
}

pub async fn load<F: FnOnce()>(
    addr: SocketAddr,
    path: &'static str,
    clients: usize,
    run: Duration,
    after: Duration,
    during: F,
) -> Vec<(u16, String)> {
    let stop_at = Instant::now() + run;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut tx = connect(addr).await;
            while Instant::now() < stop_at {
                if tx.ready().await.is_err() {
                    tx = connect(addr).await;
                }
                let r = send(&mut tx, addr, "GET", path, &[], Bytes::new()).await;
                seen.push((r.status, r.header("x-transaction-id").unwrap_or_default()));
            }
            seen
        }));
    }
    tokio::time::sleep(after).await;
    during();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Reads what is still on the way on `s` until the peer closes (end of stream
/// or reset); returns the bytes read. Panics if it is still open after 10 s
/// without a byte.
pub fn read_until_closed(s: &mut std::net::TcpStream) -> usize {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection was not closed: {e} after {got} bytes"),
        }
    }
}

/// Replaces the first `from` in the gateway's config file by `to` (the next
/// pool that still lists it) and reloads through the API, expecting 200.
pub async fn replace_first_and_reload(
    gw: &Gateway,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
) {
    let text = std::fs::read_to_string(&gw.config).expect("read");
    let from = from.to_string();
    let at = text.find(&from).expect("server in the config");
    let new = format!("{}{}{}", &text[..at], to, &text[at + from.len()..]);
    std::fs::write(&gw.config, new).expect("write");
    let ok = request(
        gw.console,
        "POST",
        "/api/reload",
        &[("authorization", "Bearer test-token")],
        Bytes::new(),
    )
    .await;
    assert_eq!(ok.status, 200);
}
