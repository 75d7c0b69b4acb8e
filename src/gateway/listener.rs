//! Bound sockets and client connections: accept, TLS (with the plain-HTTP-on-
//! https-port check), the HTTP/1 guard, and hyper's HTTP/1.1 + HTTP/2 server.
//!
//! [`Listeners`] keeps one accept loop per bound address and reconciles them with
//! each new config: new addresses are bound *before* the new tables go live,
//! removed ones stop accepting after; open connections are never cut by a reload.

use super::failure::{builtin_page, ErrorInfo};
use super::guard::{ConnShared, GuardedIo};
use super::proxy::{self, base_record, ConnInfo, Gateway, TlsInfo};
use crate::accesslog::secs_number;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Time allowed for a TLS handshake (and for the first byte that tells TLS from plain HTTP).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Active {
    local: SocketAddr,
    stop: watch::Sender<bool>,
}

/// The accept loops of the gateway.
pub struct Listeners {
    gateway: Arc<Gateway>,
    active: Mutex<HashMap<SocketAddr, Active>>,
    graceful: Mutex<Option<GracefulShutdown>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl Listeners {
    /// No sockets yet.
    pub fn new(gateway: Arc<Gateway>) -> Arc<Listeners> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true).half_close(false);
        builder.http2().max_concurrent_streams(250);
        Arc::new(Listeners {
            gateway,
            active: Mutex::new(HashMap::new()),
            graceful: Mutex::new(Some(GracefulShutdown::new())),
            builder: Arc::new(builder),
        })
    }

    /// Binds every address of `wanted` not bound yet. Returns the newly bound
    /// (configured, local) pairs. Errors: addresses that could not be bound
    /// (those bound by this call are released again).
    pub async fn bind_new(
        self: &Arc<Self>,
        wanted: &[SocketAddr],
    ) -> Result<Vec<(SocketAddr, SocketAddr)>, Vec<String>> {
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for addr in wanted {
            let known = self
                .active
                .lock()
                .map(|a| a.contains_key(addr))
                .unwrap_or(false);
            if known {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(l) => fresh.push((*addr, l)),
                Err(e) => errors.push(format!("cannot listen on {addr}: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut out = Vec::new();
        for (addr, l) in fresh {
            let local = l.local_addr().unwrap_or(addr);
            let (stop, stop_rx) = watch::channel(false);
            if let Ok(mut a) = self.active.lock() {
                a.insert(addr, Active { local, stop });
            }
            tokio::spawn(self.clone().accept_loop(addr, l, stop_rx));
            out.push((addr, local));
        }
        Ok(out)
    }

    /// Stops accepting on every bound address not in `wanted`.
    pub fn retain(&self, wanted: &[SocketAddr]) {
        if let Ok(mut a) = self.active.lock() {
            a.retain(|addr, act| {
                let keep = wanted.contains(addr);
                if !keep {
                    let _ = act.stop.send(true);
                }
                keep
            });
        }
    }

    /// (configured, local) address of every bound socket.
    pub fn bound(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut v: Vec<_> = self
            .active
            .lock()
            .map(|a| a.iter().map(|(k, v)| (*k, v.local)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Stops accepting everywhere, lets open connections finish their requests
    /// (idle keep-alive connections close at once) for at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.retain(&[]);
        let graceful = self.graceful.lock().ok().and_then(|mut g| g.take());
        if let Some(g) = graceful {
            if tokio::time::timeout(timeout, g.shutdown()).await.is_err() {
                tracing::warn!("shutdown timeout reached with requests still in flight");
            }
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        key: SocketAddr,
        l: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                r = l.accept() => match r {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let m = &self.gateway.telemetry.metrics;
                        m.new_connections.inc();
                        m.current_connections.inc();
                        let watcher = self.graceful.lock().ok().and_then(|g| g.as_ref().map(|g| g.watcher()));
                        let Some(watcher) = watcher else { break };
                        tokio::spawn(self.clone().serve_tcp(key, stream, peer, watcher));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(listen = %key, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    async fn serve_tcp(
        self: Arc<Self>,
        key: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        // Counted open from accept to the end of this task.
        struct Open(Arc<Gateway>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.telemetry.metrics.current_connections.dec();
            }
        }
        let _open = Open(self.gateway.clone());
        let tls = self
            .gateway
            .snapshot
            .load()
            .ports
            .get(&key)
            .and_then(|p| p.tls.clone());
        let Some(tls) = tls else {
            let (io, info) = self.guarded(stream, key, peer, None);
            self.serve(io, info, watcher).await;
            return;
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        if first[0] != 0x16 {
            // Not a TLS handshake record: someone spoke plain HTTP to an https port.
            self.plain_http_on_https(stream, peer).await;
            return;
        }
        let accepted = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsAcceptor::from(tls).accept(stream),
        )
        .await;
        let Ok(Ok(tls_stream)) = accepted else {
            tracing::debug!(client = %peer, "TLS handshake failed");
            return;
        };
        let (_, sc) = tls_stream.get_ref();
        let h2 = sc.alpn_protocol() == Some(b"h2");
        let tls_info = TlsInfo {
            cipher: sc
                .negotiated_cipher_suite()
                .map(|c| compact_str::format_compact!("{:?}", c.suite()))
                .unwrap_or_default(),
            protocol: match sc.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
                Some(v) => compact_str::format_compact!("{v:?}"),
                None => Default::default(),
            },
        };
        if h2 {
            let info = Arc::new(ConnInfo::new(
                self.gateway.clone(),
                key,
                peer,
                Some(tls_info),
                None,
            ));
            self.serve(tls_stream, info, watcher).await;
        } else {
            let (io, info) = self.guarded(tls_stream, key, peer, Some(tls_info));
            self.serve(io, info, watcher).await;
        }
    }

    /// Wraps an HTTP/1 client connection (plain or TLS) in the request guard,
    /// with the head and idle timeouts of the running snapshot, and makes the
    /// connection's info pointing at the guard's shared state.
    fn guarded<T>(
        &self,
        io: T,
        bound: SocketAddr,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> (GuardedIo<T>, Arc<ConnInfo>) {
        let snapshot = self.gateway.snapshot.load();
        let shared = ConnShared::with_idle_timeout(Some(snapshot.idle_timeout));
        let info = Arc::new(ConnInfo::new(
            self.gateway.clone(),
            bound,
            peer,
            tls,
            Some(shared.clone()),
        ));
        (
            GuardedIo::with_timeout(io, shared, snapshot.header_timeout),
            info,
        )
    }

    async fn serve<I>(
        &self,
        io: I,
        info: Arc<ConnInfo>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req| proxy::handle(info.clone(), req));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!("client connection ended with an error: {e}");
        }
    }

    async fn plain_http_on_https(&self, mut stream: TcpStream, peer: SocketAddr) {
        let start = Instant::now();
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let head = &buf[..n];
        let snapshot = self.gateway.snapshot.load();
        let txid = crate::txid::new_transaction_id();
        let mut rec = base_record(
            &snapshot.instance_id,
            peer,
            &peer.ip().to_string(),
            None,
            &txid,
        );
        let line = head
            .split(|b| *b == b'\r' || *b == b'\n')
            .next()
            .unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split(' ');
        let info = ErrorInfo::HttpToHttpsPort;
        let status = info.status();
        {
            let p = &mut rec.properties;
            p.http_method = words.next().unwrap_or("").chars().take(32).collect();
            p.original_request_uri_with_args =
                words.next().unwrap_or("").chars().take(1024).collect();
            p.request_uri = p
                .original_request_uri_with_args
                .split('?')
                .next()
                .unwrap_or("")
                .into();
            p.http_version = words.next().unwrap_or("").chars().take(16).collect();
            p.http_status = status.as_u16();
            p.error_info = info.text();
            p.received_bytes = n as u64;
            p.request_query = p
                .original_request_uri_with_args
                .split_once('?')
                .map(|(_, q)| q.into())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(head);
            let field = |name: &str| -> crate::accesslog::Text {
                text.lines()
                    .skip(1)
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().chars().take(256).collect())
                    })
                    .unwrap_or_default()
            };
            p.original_host = field("host");
            p.host = p.original_host.clone();
            p.user_agent = field("user-agent");
            p.content_type = "text/html; charset=utf-8".into();
        }
        let page = builtin_page(info, &txid);
        let head_out = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nx-transaction-id: {txid}\r\nconnection: close\r\n\r\n",
            page.len()
        );
        let _ = stream.write_all(head_out.as_bytes()).await;
        let _ = stream.write_all(&page).await;
        let _ = stream.shutdown().await;
        rec.properties.sent_bytes = (head_out.len() + page.len()) as u64;
        rec.properties.time_taken = secs_number(start.elapsed());
        let obs = crate::telemetry::Observation {
            total: start.elapsed(),
            ..Default::default()
        };
        self.gateway.telemetry.observe(&rec, &obs);
        self.gateway.log.log(rec);
    }
}
