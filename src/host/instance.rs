//! One instance slot of an app: start the process, wait until it is ready,
//! watch it, restart it with backoff, stop it.

use super::{AppShared, BACKOFF_MAX, BACKOFF_START, STABLE_AFTER};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Instance state (section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum InstanceState {
    /// Process started, not ready yet.
    #[default]
    Starting,
    /// Ready: in the pool.
    Ready,
    /// Being stopped.
    Stopping,
    /// Exited; will be restarted.
    Exited,
    /// Waiting out a restart delay after failures.
    Backoff,
}

/// What the host knows of one instance.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InstanceStatus {
    /// `<app>-<slot>`.
    pub id: String,
    /// OS process id while running.
    pub pid: Option<u32>,
    /// Port given in `PORT`.
    pub port: Option<u16>,
    /// State.
    pub state: InstanceState,
    /// Restarts so far.
    pub restarts: u32,
    /// Failed starts or crashes in a row.
    pub consecutive_failures: u32,
}

impl InstanceStatus {
    /// Its address when Ready.
    pub fn ready_addr(&self) -> Option<SocketAddr> {
        match (self.state, self.port) {
            (InstanceState::Ready, Some(p)) => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
            _ => None,
        }
    }
}

fn update(shared: &AppShared, slot: usize, f: impl FnOnce(&mut InstanceStatus)) {
    if let Ok(mut st) = shared.statuses.lock() {
        if let Some(s) = st.get_mut(slot) {
            f(s);
        }
    }
    shared.publish();
}

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Supervises slot `slot` of the app until `stop` turns true.
pub(crate) async fn supervise(
    shared: Arc<AppShared>,
    slot: usize,
    mut stop: watch::Receiver<bool>,
) {
    let id = format!("{}-{slot}", shared.config.name);
    update(&shared, slot, |s| s.id = id.clone());
    let mut backoff = BACKOFF_START;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let outcome = run_once(&shared, slot, &id, &mut stop).await;
        if *stop.borrow() {
            return;
        }
        let ran = started.elapsed();
        if ran >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        tracing::warn!(instance = %id, "{outcome}; restarting in {backoff:?}");
        update(&shared, slot, |s| {
            s.state = InstanceState::Backoff;
            s.pid = None;
            s.restarts += 1;
            s.consecutive_failures = if ran >= STABLE_AFTER {
                1
            } else {
                s.consecutive_failures + 1
            };
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs the process once; returns why it ended (unless stopped).
async fn run_once(
    shared: &Arc<AppShared>,
    slot: usize,
    id: &str,
    stop: &mut watch::Receiver<bool>,
) -> String {
    let cfg = &shared.config;
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return format!("no free port: {e}"),
    };
    let program = if cfg.command[0] == "portcullis" {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("portcullis"))
    } else {
        PathBuf::from(&cfg.command[0])
    };
    let dir = cfg
        .working_dir
        .as_ref()
        .map(|w| shared.base_dir.join(w))
        .unwrap_or_else(|| shared.base_dir.clone());
    let mut cmd = Command::new(&program);
    cmd.args(&cfg.command[1..])
        .current_dir(&dir)
        .envs(&cfg.env)
        .env("PORT", port.to_string())
        .env("PORTCULLIS_APP", &cfg.name)
        .env("PORTCULLIS_INSTANCE_ID", id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start {}: {e}", program.display()),
    };
    let pid = child.id();
    tracing::info!(instance = %id, pid, port, "instance started");
    update(shared, slot, |s| {
        s.pid = pid;
        s.port = Some(port);
        s.state = super::instance::InstanceState::Starting;
    });
    capture_output(shared, id, &mut child);

    // Readiness: GET health_check_path answers 200–399 within startup_timeout.
    let deadline = Instant::now() + cfg.startup_timeout.get();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if check_ready(addr, &cfg.health_check_path).await {
            tracing::info!(instance = %id, "instance ready");
            update(shared, slot, |s| {
                s.state = InstanceState::Ready;
                s.consecutive_failures = 0;
            });
            break;
        }
        if Instant::now() >= deadline {
            stop_child(&mut child, cfg.stop_timeout.get()).await;
            return format!("not ready within {:?}", cfg.startup_timeout.get());
        }
        tokio::select! {
            status = child.wait() => {
                return format!("exited before it was ready ({})", describe_exit(status));
            }
            _ = stop.changed() => {
                update(shared, slot, |s| s.state = InstanceState::Stopping);
                stop_child(&mut child, cfg.stop_timeout.get()).await;
                return "stopped".into();
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tokio::select! {
        status = child.wait() => {
            update(shared, slot, |s| { s.state = InstanceState::Exited; s.pid = None; });
            format!("exited ({})", describe_exit(status))
        }
        _ = stop.changed() => {
            update(shared, slot, |s| s.state = InstanceState::Stopping);
            stop_child(&mut child, cfg.stop_timeout.get()).await;
            update(shared, slot, |s| { s.state = InstanceState::Exited; s.pid = None; });
            "stopped".into()
        }
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

/// SIGTERM to the process group, then SIGKILL after `grace`.
async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let pgid = Pid::from_raw(pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
        } else {
            // Reap anything left in the group.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

async fn check_ready(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: portcullis-readiness\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await.ok()?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = line.get(9..12)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// Copies the child's stdout and stderr, line by line with time and instance id,
/// into `<state_dir>/logs/apps/<app>/<instance>.log`.
fn capture_output(shared: &Arc<AppShared>, id: &str, child: &mut Child) {
    let _ = std::fs::create_dir_all(&shared.log_dir);
    let path = shared.log_dir.join(format!("{id}.log"));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    let id_s = id.to_string();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        let id = id_s.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx
                    .send(format!(
                        "{} {id} stdout {l}\n",
                        humantime::format_rfc3339_millis(std::time::SystemTime::now())
                    ))
                    .await;
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        let id = id_s.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx
                    .send(format!(
                        "{} {id} stderr {l}\n",
                        humantime::format_rfc3339_millis(std::time::SystemTime::now())
                    ))
                    .await;
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await;
        let Ok(mut file) = file else { return };
        while let Some(line) = rx.recv().await {
            let _ = file.write_all(line.as_bytes()).await;
        }
    });
}
