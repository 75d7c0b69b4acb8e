//! Bound sockets and client connections: accept, TLS (with the plain-HTTP-on-
//! https-port check), then our HTTP/1.1 server (`h1server.rs`) or our HTTP/2
//! server over the `h2` crate (`h2server.rs`; ALPN `h2`, or the prior-knowledge
//! preface).
//!
//! [`Listeners`] keeps one accept loop per bound address and reconciles them with
//! each new config: new addresses are bound *before* the new tables go live,
//! removed ones stop accepting after; open connections are never cut by a reload.

use super::batch;
use super::failure::{builtin_page, ErrorInfo};
use super::h1server::{self, Outcome, Timeouts};
use super::h2server;
use super::proxy::{base_record, ConnInfo, Gateway, TlsInfo};
use crate::accesslog::secs_number;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::either::Either;

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
    /// Turns true when the gateway shuts down: connections finish their
    /// request in progress and close.
    shutdown: watch::Sender<bool>,
    /// Client connections open, and a wake-up when the last one closes.
    open: Arc<OpenCount>,
}

/// The number of open client connections.
#[derive(Default)]
struct OpenCount {
    n: AtomicUsize,
    none_left: tokio::sync::Notify,
}

impl OpenCount {
    /// One connection fewer; wakes `shutdown` when it was the last.
    fn closed(&self) {
        if self.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.none_left.notify_waiters();
        }
    }
}

/// Puts a listening socket's connections in delayed-ACK mode from their first
/// segment (`TCP_QUICKACK` off on the listening socket; Linux makes each
/// accepted socket as a copy of the listening one, so the setting carries over:
/// tcp(7) does not say so, the unit test below checks it).
///
/// A new connection otherwise starts in quick-ACK mode, and its request is
/// acknowledged at once by a segment of its own, just before the answer that
/// would have carried the acknowledgement anyway: twelve segments for a
/// request on a new connection where eleven do (measured with `nstat` in the
/// benchmark's `close` scenario). HAProxy does the same for every HTTP-mode
/// listener. Large uploads are unaffected (a delayed-ACK receiver still
/// acknowledges every second full segment, RFC 9293 section 3.8.6.3); a slow
/// answer delays only that first acknowledgement, by the delayed-ACK timer
/// (40 ms, up to 200 ms on Linux), as it already did for every later request of a
/// keep-alive connection (Linux leaves quick-ACK mode once a connection answers;
/// docs/behaviour.md section 4). Best effort: a system without the option keeps
/// quick ACKs.
fn delay_first_ack(l: &TcpListener) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(l).set_tcp_quickack(false);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = l;
}

/// `TCP_DEFER_ACCEPT` (tcp(7)), which neither socket2 nor the stable standard
/// library sets: declared with nix's `sockopt_impl!`, the way nix documents for
/// options it does not list, so that the `setsockopt` call stays in nix's code.
#[cfg(target_os = "linux")]
mod defer {
    use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

    sockopt_impl!(
        /// Seconds a listening socket keeps a connection that has sent no data
        /// before handing it over anyway (Linux rounds up to a count of SYN-ACK
        /// retransmissions; reading it back gives the rounded value).
        TcpDeferAccept,
        Both,
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        u32
    );
}

/// How long a connection that has sent nothing waits in the kernel before it
/// is handed over all the same (1 s, as nginx's `deferred` and HAProxy's
/// `defer-accept` set it).
const DEFER_ACCEPT_SECS: u32 = 1;

/// Hands a listening socket's connections over only once their first bytes
/// have arrived (`TCP_DEFER_ACCEPT`), as nginx's `listen ... deferred` and
/// HAProxy's `bind ... defer-accept` do: every protocol a listener speaks
/// starts with the client (an HTTP/1 request line, the HTTP/2 preface, a TLS
/// ClientHello), so the accept and the first read happen in one wake-up of
/// the gateway instead of two, and the read does not first find the socket
/// empty. Measured in the benchmark's `close` scenario: 0.77 sleeps of the
/// gateway's thread and 3 `recvfrom` calls per request without it, 0.15 and 2
/// with it (docs/benchmarks.md section 2).
///
/// A client that connects and sends nothing is handed over after
/// [`DEFER_ACCEPT_SECS`] (when the kernel resends its SYN-ACK and the client
/// acknowledges it again), and only then do the idle and header timeouts
/// start: such a connection is closed about a second later than without the
/// option, and until then it costs the gateway nothing (docs/behaviour.md
/// section 4). Best effort: elsewhere connections are accepted at once.
fn defer_accept(l: &TcpListener) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::socket::setsockopt(l, defer::TcpDeferAccept, &DEFER_ACCEPT_SECS);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = l;
}

impl Listeners {
    /// No sockets yet.
    pub fn new(gateway: Arc<Gateway>) -> Arc<Listeners> {
        Arc::new(Listeners {
            gateway,
            active: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            open: Arc::new(OpenCount::default()),
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
                Ok(l) => {
                    delay_first_ack(&l);
                    defer_accept(&l);
                    fresh.push((*addr, l))
                }
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
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let none_left = self.open.none_left.notified();
            if self.open.n.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, none_left).await.is_err() {
                tracing::warn!("shutdown timeout reached with requests still in flight");
                return;
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
                        // Counted before the flag is read, and `shutdown` sets the
                        // flag before it reads the count: either this connection
                        // sees the flag, or `shutdown` waits for it.
                        self.open.n.fetch_add(1, Ordering::SeqCst);
                        if *self.shutdown.borrow() {
                            self.open.closed();
                            break;
                        }
                        let _ = stream.set_nodelay(true);
                        let m = &self.gateway.telemetry.metrics;
                        m.new_connections.inc();
                        m.current_connections.inc();
                        tokio::spawn(self.clone().serve_tcp(key, stream, peer));
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

    /// A connection's task. Not an `async fn`: what it needs is made when the
    /// task is spawned and the returned future (the server's, with the open
    /// count's guard in a `map`) holds only that, where an `async fn` would
    /// also keep its arguments for the connection's whole life (an
    /// idle connection's memory is mostly this future, docs/benchmarks.md
    /// section 4). The open count is taken back when the task ends or is
    /// dropped, polled or not. What is made here (the snapshot lookup, the
    /// connection's facts, its HTTP/1 state) runs on the accept loop, not on the
    /// connection's first poll; none of it can fail.
    fn serve_tcp(
        self: Arc<Self>,
        key: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send {
        // Counted open from accept to the end of this task.
        struct Open(Arc<Gateway>, Arc<OpenCount>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.telemetry.metrics.current_connections.dec();
                self.1.closed();
            }
        }
        let open = Open(self.gateway.clone(), self.open.clone());
        let tls = self
            .gateway
            .snapshot
            .load()
            .ports
            .get(&key)
            .and_then(|p| p.tls.clone());
        let serve = match tls {
            None => {
                Either::Left(self.serve_http1(batch::Socket::for_client(stream), key, peer, None))
            }
            // Boxed: the handshake and the TLS stream are large, and a plain
            // connection's task must not carry room for them.
            Some(tls) => Either::Right(Box::pin(self.serve_tls(tls, key, stream, peer))),
        };
        // The guard goes with the closure: dropped when the connection ends or
        // its task is dropped. (An async block awaiting `serve` would hold it
        // twice: captured, and moved into its await.)
        serve.map(move |()| drop(open))
    }

    /// An https connection: the plain-HTTP check and the handshake (SNI, ALPN),
    /// then HTTP/2 or HTTP/1.
    ///
    /// Not an `async fn`, for the reason `serve_tcp` gives: two futures
    /// chained (`then`), the handshake's and then the server's. The chain is
    /// boxed in the connection's task and lives as long as the connection, idle
    /// or not, at the size of its larger part (about 1,700 bytes, the HTTP/1
    /// server's over the TLS stream). As one `async fn` it was 11,728 bytes
    /// (`-Zprint-type-sizes`): room for HTTP/2's server (7,800, now boxed
    /// apart in [`Listeners::serve_handshaken`]), the TLS stream twice (a
    /// binding for the handshake's result beside the stream moved into the
    /// server), and its arguments twice (docs/benchmarks.md section 4).
    fn serve_tls(
        self: &Arc<Self>,
        tls: Arc<rustls::ServerConfig>,
        key: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        let handshake = async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return None,
            }
            if first[0] != 0x16 {
                // Not a TLS handshake record: someone spoke plain HTTP to an
                // https port. (Boxed: rare, and larger than the handshake.)
                Box::pin(this.plain_http_on_https(stream, peer)).await;
                return None;
            }
            let accept =
                tokio_rustls::TlsAcceptor::from(tls).accept(batch::Socket::for_client(stream));
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(tls_stream)) => Some(tls_stream),
                _ => {
                    tracing::debug!(client = %peer, "TLS handshake failed");
                    None
                }
            }
        };
        let this = Arc::clone(self);
        handshake.then(move |done| match done {
            Some(tls_stream) => Either::Left(this.serve_handshaken(tls_stream, key, peer)),
            None => Either::Right(std::future::ready(())),
        })
    }

    /// The server of a TLS connection whose handshake is done: HTTP/2 when
    /// ALPN chose `h2` (boxed: its state is large, and an HTTP/1.1
    /// connection's task must not carry room for it), else HTTP/1.
    fn serve_handshaken(
        self: &Arc<Self>,
        mut tls_stream: tokio_rustls::server::TlsStream<batch::Socket>,
        key: SocketAddr,
        peer: SocketAddr,
    ) -> Either<Pin<Box<dyn Future<Output = ()> + Send>>, impl Future<Output = ()> + Send + 'static>
    {
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
                false,
            ));
            // HTTP/2 writes its frames, then flushes: each flush's frames
            // go out with the other connections' writes (batch.rs).
            tls_stream.get_mut().0.write_behind();
            let this = Arc::clone(self);
            Either::Left(Box::pin(
                async move { this.serve_h2(tls_stream, info).await },
            ))
        } else {
            Either::Right(self.serve_http1(tls_stream, key, peer, Some(tls_info)))
        }
    }

    /// Serves an HTTP/1 client connection (plain or TLS) with the head, idle
    /// and send timeouts of the running snapshot; hands it to HTTP/2 if it starts with
    /// the HTTP/2 preface.
    ///
    /// Not an `async fn`, for the reason `serve_tcp` gives: the returned
    /// future is the HTTP/1 server's, chained (`then`) to an HTTP/2 hand-over
    /// that keeps only the gateway and the connection's facts.
    fn serve_http1<I>(
        self: &Arc<Self>,
        io: I,
        bound: SocketAddr,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + h1server::Lend + Unpin + Send + 'static,
    {
        let timeouts = self.timeouts();
        let info = Arc::new(ConnInfo::new(self.gateway.clone(), bound, peer, tls, true));
        let shutdown = self.shutdown.subscribe();
        let http1 = h1server::serve(io, info.clone(), timeouts, shutdown);
        let this = Arc::clone(self);
        // Chained, not awaited in an async block, which would hold the HTTP/1
        // server's future twice (captured, and moved into its await).
        http1.then(move |outcome| match outcome {
            Outcome::Http2(mut io) => {
                if let Some(socket) = io.get_mut().batch_socket() {
                    socket.write_behind();
                }
                let info = Arc::new(ConnInfo::new(
                    this.gateway.clone(),
                    info.bound,
                    info.peer,
                    info.tls.as_deref().cloned(),
                    false,
                ));
                // Boxed: an HTTP/2 connection's state is large, and an HTTP/1
                // connection's task must not carry room for it.
                Either::Left(Box::pin(async move { this.serve_h2(io, info).await }))
            }
            Outcome::Closed => Either::Right(std::future::ready(())),
        })
    }

    /// Serves an HTTP/2 client connection until it ends (`h2server.rs`), with
    /// the running snapshot's `client_idle_timeout` and `client_send_timeout`;
    /// on shutdown, sends GOAWAY and lets the streams in progress finish.
    async fn serve_h2<I>(&self, io: I, info: Arc<ConnInfo>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        h2server::serve(io, info, self.shutdown.subscribe(), self.timeouts()).await;
    }

    /// The client timeouts of the running snapshot (`[gateway]`
    /// `request_header_timeout`, `client_idle_timeout`, `client_send_timeout`).
    fn timeouts(&self) -> Timeouts {
        let snapshot = self.gateway.snapshot.load();
        Timeouts {
            header: snapshot.header_timeout,
            idle: snapshot.idle_timeout,
            send: snapshot.send_timeout,
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
        let txid = crate::txid::TransactionId::new();
        let mut rec = base_record(
            &snapshot.instance_id,
            peer,
            &peer.ip().to_string(),
            None,
            &txid,
            Instant::now(),
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
        self.gateway.log.log(&rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns (four arguments), without calling it.
    fn returned_size4<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// The same with five arguments.
    fn returned_size5<F, A, B, C, D, E, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// A connection's task holds `serve_tcp`'s future for the connection's
    /// whole life. It is 512 bytes; at most 536, with tokio's stage (8),
    /// core (16), header (32) and trailer (48) it is a 640-byte task (rounded
    /// up to its 128-byte alignment); past that, 768 (`-Zprint-type-sizes`,
    /// docs/benchmarks.md section 4). An https connection's part is boxed
    /// apart: 1,680 bytes, at most 1,792, one of the allocator's size
    /// classes (it was 11,728 bytes).
    ///
    /// Inside both, the HTTP/1 server's future (`h1server::serve`) is the
    /// largest part of an idle connection's memory: at 472 bytes the task is
    /// 640 of the connection's about 1,720 bytes, and would be 768 past 496
    /// (the wrappers add 40); this test allows 480. Its exchange and its close
    /// are boxed to keep it there.
    #[test]
    fn a_connection_task_stays_small() {
        let task = returned_size4(Listeners::serve_tcp);
        let tls = returned_size5(Listeners::serve_tls);
        let http1 = returned_size4(h1server::serve::<batch::Socket>);
        assert!(task <= 536, "serve_tcp: {task} bytes");
        assert!(tls <= 1792, "serve_tls: {tls} bytes");
        assert!(http1 <= 480, "h1server::serve: {http1} bytes");
    }

    /// The connections a listener accepts start in delayed-ACK mode: the
    /// setting made on the listening socket is the accepted socket's too.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_start_with_delayed_acks() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let fresh = socket2::SockRef::from(&l)
            .tcp_quickack()
            .expect("getsockopt");
        assert!(fresh, "a new socket starts in quick-ACK mode");
        delay_first_ack(&l);
        let addr = l.local_addr().expect("local address");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = l.accept().await.expect("accept");
        let quick = socket2::SockRef::from(&accepted)
            .tcp_quickack()
            .expect("getsockopt");
        assert!(!quick, "the accepted socket inherits delayed ACKs");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn connections_are_handed_over_once_their_first_bytes_arrive() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        defer_accept(&l);
        let set = nix::sys::socket::getsockopt(&l, defer::TcpDeferAccept).expect("getsockopt");
        assert!(set >= DEFER_ACCEPT_SECS, "TCP_DEFER_ACCEPT is {set}");
        let addr = l.local_addr().expect("local address");
        // Connected, from the client's side, but nothing sent: the kernel
        // keeps it (for a second, well past this wait).
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let early = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
        assert!(early.is_err(), "a connection without data was handed over");
        // Its first bytes arrive: handed over, with them already readable.
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("handed over once data arrived")
            .expect("accept");
        let mut got = [0u8; 16];
        let n = accepted.read(&mut got).await.expect("read");
        assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n");
    }
}
