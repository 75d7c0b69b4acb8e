//! One instance: start the process, wait until it is ready, watch it, restart
//! it with backoff, stop it.

use super::logs::LogFile;
use super::{App, BACKOFF_MAX, BACKOFF_START, STABLE_AFTER};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Instance state (section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum InstanceState {
    /// Process started, not ready yet.
    #[default]
    Starting,
    /// Ready (in the pool unless draining).
    Ready,
    /// Out of rotation, finishing in-flight requests.
    Draining,
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
    /// `<app>-<n>`.
    pub id: String,
    /// OS process id while running.
    pub pid: Option<u32>,
    /// Port given in `PORT`.
    pub port: Option<u16>,
    /// State.
    pub state: InstanceState,
    /// RFC 3339 start time of the current process.
    pub started_at: Option<String>,
    /// Restarts after exits so far.
    pub restarts: u32,
    /// Failed starts or crashes in a row.
    pub consecutive_failures: u32,
    #[serde(skip)]
    started: Option<Instant>,
}

/// A supervised instance.
pub struct Instance {
    /// `<app>-<n>`.
    pub id: String,
    status: Mutex<InstanceStatus>,
    rotation: AtomicBool,
    stop_tx: watch::Sender<bool>,
    ready_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Instance {
    /// Starts supervising a new instance of `app`.
    pub(crate) fn spawn(app: Arc<App>, id: String) -> Arc<Instance> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let inst = Arc::new(Instance {
            status: Mutex::new(InstanceStatus {
                id: id.clone(),
                ..Default::default()
            }),
            id,
            rotation: AtomicBool::new(true),
            stop_tx,
            ready_tx: watch::channel(false).0,
            task: Mutex::new(None),
        });
        let me = inst.clone();
        let handle = tokio::spawn(async move { supervise(app, me, stop_rx).await });
        if let Ok(mut t) = inst.task.lock() {
            *t = Some(handle);
        }
        inst
    }

    /// An instance with no process or supervisor (unit tests of the app's
    /// view): its state is set with [`Instance::set_state`].
    #[cfg(test)]
    pub(crate) fn detached(id: &str, port: u16) -> Arc<Instance> {
        Arc::new(Instance {
            status: Mutex::new(InstanceStatus {
                id: id.into(),
                port: Some(port),
                ..Default::default()
            }),
            id: id.into(),
            rotation: AtomicBool::new(true),
            stop_tx: watch::channel(false).0,
            ready_tx: watch::channel(false).0,
            task: Mutex::new(None),
        })
    }

    #[cfg(test)]
    pub(crate) fn set_state(&self, state: InstanceState) {
        self.update(|s| s.state = state);
    }

    /// A copy of the status.
    pub fn status(&self) -> InstanceStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// In rotation (not draining).
    pub fn in_rotation(&self) -> bool {
        self.rotation.load(Ordering::Relaxed)
    }

    /// Takes the instance out of rotation.
    pub fn leave_rotation(&self) {
        self.rotation.store(false, Ordering::Relaxed);
        self.update(|s| {
            if s.state == InstanceState::Ready {
                s.state = InstanceState::Draining;
            }
        });
    }

    /// `127.0.0.1:PORT` once a port was given.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.status()
            .port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
    }

    /// Waits until the instance is Ready; false after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the process (SIGTERM, SIGKILL after `stop_timeout`) and the supervisor.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let handle = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// The API view (section 6) with process figures.
    pub fn report(&self) -> serde_json::Value {
        let s = self.status();
        let figures = s.pid.and_then(super::stats::figures).unwrap_or_default();
        serde_json::json!({
            "id": s.id,
            "pid": s.pid,
            "port": s.port,
            "state": s.state,
            "started_at": s.started_at,
            "uptime_seconds": s.started.map(|t| t.elapsed().as_secs()),
            "restarts": s.restarts,
            "cpu_seconds": figures.cpu_seconds,
            "memory_bytes": figures.memory_bytes,
            "private_bytes": figures.private_bytes,
            "threads": figures.threads,
            "handles": figures.handles,
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn supervise(app: Arc<App>, inst: Arc<Instance>, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_START;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let outcome = run_once(&app, &inst, &mut stop).await;
        if *stop.borrow() {
            break;
        }
        let ran = started.elapsed();
        if ran >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        inst.update(|s| {
            s.state = InstanceState::Backoff;
            s.pid = None;
            s.restarts += 1;
            s.consecutive_failures = if ran >= STABLE_AFTER {
                1
            } else {
                s.consecutive_failures + 1
            };
        });
        let _ = inst.ready_tx.send(false);
        app.publish();
        let failures = inst.status().consecutive_failures;
        app.events.record(
            "instance",
            &inst.id,
            format!(
                "{outcome}; restarting in {} s ({failures} failure(s) in a row)",
                backoff.as_secs()
            ),
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    inst.update(|s| {
        s.state = InstanceState::Exited;
        s.pid = None;
    });
    app.publish();
}

fn command_for(app: &App, id: &str, port: u16) -> Command {
    let cfg = app.config.load();
    let program = if cfg.command[0] == "portcullis" {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("portcullis"))
    } else {
        PathBuf::from(&cfg.command[0])
    };
    let dir = cfg
        .working_dir
        .as_ref()
        .map(|w| app.base_dir.join(w))
        .unwrap_or_else(|| app.base_dir.clone());
    // setpriv --pdeathsig KILL: the instance is killed if portcullis dies, even by SIGKILL.
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut cmd = if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
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
    cmd
}

/// Runs the process once; returns why it ended (unless stopped).
async fn run_once(
    app: &Arc<App>,
    inst: &Arc<Instance>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    let cfg = app.config.load_full();
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return format!("no free port: {e}"),
    };
    let mut child = match command_for(app, &inst.id, port).spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start `{}`: {e}", cfg.command[0]),
    };
    let pid = child.id();
    inst.update(|s| {
        s.pid = pid;
        s.port = Some(port);
        s.state = InstanceState::Starting;
        s.started = Some(Instant::now());
        s.started_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    });
    app.events.record(
        "instance",
        &inst.id,
        format!("started: pid {}, port {port}", pid.unwrap_or(0)),
    );
    capture_output(app, &inst.id, &mut child);

    let deadline = Instant::now() + cfg.startup_timeout.get();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if check_ready(addr, &cfg.health_check_path).await {
            inst.update(|s| {
                // Failures in a row reset only after a stable run (see supervise):
                // a process that gets ready and then crashes is still crash-looping.
                s.state = if inst.in_rotation() {
                    InstanceState::Ready
                } else {
                    InstanceState::Draining
                };
            });
            let _ = inst.ready_tx.send(true);
            app.publish();
            app.events.record(
                "instance",
                &inst.id,
                format!(
                    "ready: GET {} answered on port {port}",
                    cfg.health_check_path
                ),
            );
            break;
        }
        if Instant::now() >= deadline {
            stop_child(&mut child, cfg.stop_timeout.get()).await;
            return format!(
                "not ready within {} s (GET {} on port {port})",
                cfg.startup_timeout.get().as_secs(),
                cfg.health_check_path
            );
        }
        tokio::select! {
            status = child.wait() => {
                return format!("exited before it was ready ({})", describe_exit(status));
            }
            _ = stop.changed() => {
                inst.update(|s| s.state = InstanceState::Stopping);
                stop_child(&mut child, cfg.stop_timeout.get()).await;
                app.events.record("instance", &inst.id, "stopped before it was ready");
                return "stopped".into();
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    tokio::select! {
        status = child.wait() => {
            inst.update(|s| { s.state = InstanceState::Exited; s.pid = None; });
            app.publish();
            format!("exited ({})", describe_exit(status))
        }
        _ = stop.changed() => {
            inst.update(|s| s.state = InstanceState::Stopping);
            app.publish();
            let how = stop_child(&mut child, cfg.stop_timeout.get()).await;
            app.events.record("instance", &inst.id, format!("stopped ({how})"));
            "stopped".into()
        }
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!(
                "killed by signal {sig} ({})",
                Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?")
            ),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

/// SIGTERM to the process group, then SIGKILL after `grace`. Says which it took.
async fn stop_child(child: &mut Child, grace: Duration) -> &'static str {
    let Some(pid) = child.id() else {
        return "already gone";
    };
    let pgid = Pid::from_raw(pid as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let how = if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        "SIGKILL after the stop timeout"
    } else {
        "SIGTERM"
    };
    // Anything left in the group goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    how
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

/// Copies the child's stdout and stderr, line by line with time, instance id
/// and stream, to the instance log file and the app's ring.
fn capture_output(app: &Arc<App>, id: &str, child: &mut Child) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    for (name, reader) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(reader) = reader else { continue };
        let tx = tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let stamp = humantime::format_rfc3339_millis(SystemTime::now());
                if tx.send(format!("{stamp} {id} {name} {l}")).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let ring = app.logs.clone();
    let mut file = LogFile::new(&app.log_dir.join(format!("{id}.log")));
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            file.write(&line).await;
            ring.push(line);
        }
    });
}
