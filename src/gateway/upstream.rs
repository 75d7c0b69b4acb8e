//! Connections to backends: connect (TCP, optional TLS), a keep-alive pool of idle
//! HTTP/1.1 connections per (address, TLS name), and the request body type.
//!
//! Idle connections are closed by the gateway after [`UPSTREAM_IDLE_TIMEOUT`],
//! below the keep-alive timeouts common backends use (Node.js and Apache 5 s,
//! nginx 75 s), so the gateway, not the backend, closes idle connections in the
//! common case; when a backend closes first anyway, the request is retried on a
//! fresh connection (see `proxy.rs`).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle time after which the gateway closes a pooled backend connection.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Most idle connections kept per backend address.
pub const MAX_IDLE_PER_SERVER: usize = 256;

/// The body of a request sent to a backend: the client's body, counted.
pub enum ReqBody {
    /// No body.
    Empty,
    /// The client's streaming body; the counter adds up its bytes for `receivedBytes`.
    Client(Incoming, Arc<AtomicU64>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Client(b, count) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r {
                    if let Some(d) = f.data_ref() {
                        count.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Client(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Client(b, _) => b.size_hint(),
        }
    }
}

/// Which pooled connections are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Backend address.
    pub addr: SocketAddr,
    /// TLS server name, None for plain HTTP.
    pub tls_name: Option<Arc<str>>,
}

/// A connection ready to carry one request.
pub struct Conn {
    /// hyper's sender.
    pub tx: SendRequest<ReqBody>,
    /// Pool key.
    pub key: ConnKey,
    /// Local port (`upstreamSourcePort`).
    pub local_port: u16,
    /// Came from the idle pool.
    pub reused: bool,
}

struct Idle {
    tx: SendRequest<ReqBody>,
    local_port: u16,
    since: Instant,
}

/// Why a connection could not be made. Nothing was sent in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused (RST): nothing listens there.
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout.
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
    /// TLS handshake with the backend failed (certificate, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Another socket error.
    #[error("{0}")]
    Io(io::Error),
}

/// The pool of backend connections; one per process, shared by all snapshots.
#[derive(Default)]
pub struct Upstream {
    idle: Mutex<HashMap<ConnKey, Vec<Idle>>>,
    /// Connection tasks per backend address, to cut them when a server is removed.
    live: Mutex<HashMap<SocketAddr, HashMap<u64, tokio::task::AbortHandle>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Upstream {
    /// A pooled connection to `key`, if one is idle, fresh and still open.
    pub async fn checkout(&self, key: &ConnKey) -> Option<Conn> {
        loop {
            let idle = {
                let mut map = self.idle.lock().ok()?;
                let list = map.get_mut(key)?;
                list.pop()?
            };
            if idle.since.elapsed() >= UPSTREAM_IDLE_TIMEOUT || idle.tx.is_closed() {
                continue;
            }
            let mut tx = idle.tx;
            if !tx.is_ready() {
                // Just checked in: the dispatcher finishes the previous exchange.
                match tokio::time::timeout(Duration::from_millis(50), tx.ready()).await {
                    Ok(Ok(())) => {}
                    _ => continue,
                }
            }
            return Some(Conn {
                tx,
                key: key.clone(),
                local_port: idle.local_port,
                reused: true,
            });
        }
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin(&self, conn: Conn) {
        if conn.tx.is_closed() {
            return;
        }
        if let Ok(mut map) = self.idle.lock() {
            let list = map.entry(conn.key).or_default();
            if list.len() < MAX_IDLE_PER_SERVER {
                list.push(Idle {
                    tx: conn.tx,
                    local_port: conn.local_port,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Opens a new connection to `key` within `timeout` (TCP and TLS together).
    pub async fn connect(
        self: &Arc<Self>,
        key: &ConnKey,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let fut = async {
            let tcp = TcpStream::connect(key.addr).await.map_err(|e| {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Io(e)
                }
            })?;
            let _ = tcp.set_nodelay(true);
            let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
            let tx = match (tls, &key.tls_name) {
                (Some(cfg), Some(name)) => {
                    let server_name = ServerName::try_from(name.to_string())
                        .map_err(|e| ConnectError::Tls(format!("bad server name {name}: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(server_name, tcp)
                        .await
                        .map_err(|e| ConnectError::Tls(e.to_string()))?;
                    self.handshake(key.addr, tls).await?
                }
                _ => self.handshake(key.addr, tcp).await?,
            };
            Ok(Conn {
                tx,
                key: key.clone(),
                local_port,
                reused: false,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::TimedOut(timeout)),
        }
    }

    /// Closes idle connections older than [`UPSTREAM_IDLE_TIMEOUT`], every 500 ms,
    /// for as long as the pool lives.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(up) = weak.upgrade() else { return };
                let lock = up.idle.lock();
                if let Ok(mut map) = lock {
                    map.retain(|_, list| {
                        list.retain(|i| {
                            i.since.elapsed() < UPSTREAM_IDLE_TIMEOUT && !i.tx.is_closed()
                        });
                        !list.is_empty()
                    });
                }
            }
        });
    }

    /// Idle connections held now (all servers).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

impl Upstream {
    async fn handshake<I>(
        self: &Arc<Self>,
        addr: SocketAddr,
        io: I,
    ) -> Result<SendRequest<ReqBody>, ConnectError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Io(io::Error::other(e)))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            if let Some(up) = weak.upgrade() {
                if let Ok(mut live) = up.live.lock() {
                    if let Some(m) = live.get_mut(&addr) {
                        m.remove(&id);
                        if m.is_empty() {
                            live.remove(&addr);
                        }
                    }
                }
            }
        });
        if let Ok(mut live) = self.live.lock() {
            live.entry(addr)
                .or_default()
                .insert(id, task.abort_handle());
        }
        tracing::debug!(server = %addr, id, "backend connection opened");
        Ok(tx)
    }

    /// Closes every connection to `addr`, idle or busy (a server left the pool).
    /// Requests still on them fail.
    pub fn close_server(&self, addr: SocketAddr) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|k, _| k.addr != addr);
        }
        let tasks = self.live.lock().ok().and_then(|mut l| l.remove(&addr));
        tracing::debug!(server = %addr, connections = tasks.as_ref().map(|t| t.len()).unwrap_or(0), "closing every connection");
        for (_, t) in tasks.into_iter().flatten() {
            t.abort();
        }
    }
}
