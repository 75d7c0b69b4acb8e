//! `portcullis demo-app`: a small web app with fault switches (product contract
//! section 7), used by the built-in default, the docs and the tests.
//!
//! | path | answer |
//! |---|---|
//! | `/` | 200, names its instance and port |
//! | `/health` | 200 `OK` (or 503 after `/health/toggle`) |
//! | `/health/toggle` | flips `/health` between 200 and 503 |
//! | `/slow?ms=N` | 200 after N ms |
//! | `/status/{code}` | that status |
//! | `/crash` | exits the process (code 1), no answer |
//! | `/leak?mb=N` | keeps N more MiB of memory, touched |
//! | `/burn?ms=N` | spins until the process used N ms of CPU time, then 200 |
//! | `/hang` | never answers |
//! | `/reset` | closes the connection without an answer |
//! | `/garbage` | answers bytes that are not HTTP, then closes |
//! | `/headers` | 200, JSON of the method, target and request headers it received |
//! | `/echo` | 200, streams the request body back |
//! | `/bytes?n=N` | 200, N bytes |
//! | `/ws` | WebSocket handshake (RFC 6455 §4.2.2), then echoes raw bytes |
//!
//! When started by the app host (env `PORTCULLIS_APP` set) it exits if its parent
//! goes away, so a killed gateway leaves no orphan demo-app behind.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

struct State {
    healthy: AtomicBool,
    leaked: Mutex<Vec<Vec<u8>>>,
    name: String,
    port: u16,
    requests: AtomicU64,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Why the demo app ends a connection on purpose.
#[derive(Debug)]
struct Fault(&'static str);
impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Fault {}

async fn handle(
    state: Arc<State>,
    garbage: Arc<AtomicBool>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Fault> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    println!("{} {}", req.method(), req.uri());
    let resp = match path.as_str() {
        "/" => text(
            StatusCode::OK,
            format!(
                "Hello from portcullis demo-app instance {} on port {}\n",
                state.name, state.port
            ),
        ),
        "/health" => {
            if state.healthy.load(Ordering::Relaxed) {
                text(StatusCode::OK, "OK")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "UNHEALTHY")
            }
        }
        "/health/toggle" => {
            let now = !state.healthy.fetch_xor(true, Ordering::Relaxed);
            text(
                StatusCode::OK,
                if now { "healthy\n" } else { "unhealthy\n" },
            )
        }
        "/slow" => {
            let ms = query_u64(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms\n"))
        }
        "/crash" => {
            eprintln!("crash requested: exiting");
            std::process::exit(1);
        }
        "/leak" => {
            let mb = query_u64(&req, "mb").unwrap_or(10).min(4096) as usize;
            let chunk = vec![0xa5u8; mb * 1024 * 1024];
            let total = {
                let mut l = state.leaked.lock().map_err(|_| Fault("poisoned"))?;
                l.push(chunk);
                l.iter().map(Vec::len).sum::<usize>() / (1024 * 1024)
            };
            text(
                StatusCode::OK,
                format!("leaked {mb} MiB, {total} MiB in all\n"),
            )
        }
        "/burn" => {
            // Spins until this process used N ms of CPU time (not wall time, so a
            // busy machine cannot make it burn less), at most 30 s of wall time,
            // on a blocking thread so /health keeps answering meanwhile.
            let ms = query_u64(&req, "ms").unwrap_or(500).min(10_000);
            let x = tokio::task::spawn_blocking(move || burn(ms))
                .await
                .map_err(|_| Fault("burn failed"))?;
            text(StatusCode::OK, format!("burned {ms} ms of CPU ({x:x})\n"))
        }
        "/hang" => std::future::pending().await,
        "/reset" => return Err(Fault("reset requested")),
        "/garbage" => {
            garbage.store(true, Ordering::Relaxed);
            text(StatusCode::OK, "this will not be sent")
        }
        "/headers" => {
            let mut map = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v =
                    serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
                match map.get_mut(k.as_str()) {
                    Some(serde_json::Value::Array(a)) => a.push(v),
                    _ => {
                        map.insert(k.as_str().to_string(), serde_json::Value::Array(vec![v]));
                    }
                }
            }
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": map,
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/echo" => {
            let ct = req.headers().get(header::CONTENT_TYPE).cloned();
            let mut r = Response::new(req.into_body().boxed());
            if let Some(ct) = ct {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        "/bytes" => {
            let n = query_u64(&req, "n").unwrap_or(1024).min(1 << 30) as usize;
            let stream = http_body_util::StreamBody::new(ChunkStream { left: n });
            let mut r = Response::new(stream.boxed());
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
            r
        }
        "/ws" => websocket(&mut req)?,
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            text(code, format!("status {}\n", code.as_u16()))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

fn burn(ms: u64) -> u64 {
    let cpu = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
            .map(std::time::Duration::from)
            .unwrap_or_default()
    };
    let start = cpu();
    let wall = std::time::Instant::now();
    let mut x: u64 = 0;
    while cpu() - start < std::time::Duration::from_millis(ms)
        && wall.elapsed() < std::time::Duration::from_secs(30)
    {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
    }
    x
}

/// Streams `left` bytes in 64 KiB frames.
struct ChunkStream {
    left: usize,
}

impl futures_core_stream::Stream for ChunkStream {
    type Item = Result<http_body::Frame<Bytes>, hyper::Error>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

mod futures_core_stream {
    pub use futures_core::Stream;
}

fn websocket(req: &mut Request<Incoming>) -> Result<Response<Body>, Fault> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .ok_or(Fault("missing Sec-WebSocket-Key"))?
        .as_bytes()
        .to_vec();
    let mut data = key;
    data.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &data);
    let accept = base64(digest.as_ref());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let io = TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    Ok(r)
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The connection of the demo app: when `/garbage` was asked for, whatever hyper
/// writes is replaced by bytes that are not HTTP, and the connection ends.
struct FaultyIo {
    inner: tokio::net::TcpStream,
    garbage: Arc<AtomicBool>,
    sent_garbage: bool,
}

impl AsyncRead for FaultyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.garbage.load(Ordering::Relaxed) {
            if !self.sent_garbage {
                const JUNK: &[u8] = b"\x00\x01GARBAGE that is not HTTP at all \xff\xfe\r\n\r\n";
                let r = Pin::new(&mut self.inner).poll_write(cx, JUNK);
                if let Poll::Ready(Ok(_)) = r {
                    self.sent_garbage = true;
                }
                return r.map(|r| r.map(|_| buf.len()));
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "garbage sent",
            )));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the demo app on `127.0.0.1:port` (0 = any free port; the bound
/// address is printed as `listening on ADDR`). Runs until the process exits.
pub async fn run(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    let name = std::env::var("PORTCULLIS_INSTANCE_ID")
        .unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let state = Arc::new(State {
        healthy: AtomicBool::new(true),
        leaked: Mutex::new(Vec::new()),
        name,
        port: local.port(),
        requests: AtomicU64::new(0),
    });
    if std::env::var_os("PORTCULLIS_APP").is_some() {
        let parent = std::os::unix::process::parent_id();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if std::os::unix::process::parent_id() != parent {
                    eprintln!("parent process went away: exiting");
                    std::process::exit(0);
                }
            }
        });
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let garbage = Arc::new(AtomicBool::new(false));
            let io = FaultyIo {
                inner: stream,
                garbage: garbage.clone(),
                sent_garbage: false,
            };
            let svc = service_fn(move |req| handle(state.clone(), garbage.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades()
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_rfc4648_vectors() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
