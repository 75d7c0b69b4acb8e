//! The HTTP/1 request guard (`gateway::guard::GuardedIo`), driven through its
//! public reader interface exactly as hyper drives it: client bytes in, the
//! bytes hyper gets out. Covers the whole state machine (head detection, head
//! checks, Content-Length and chunked body tracking, pipelining, upgrades, the
//! HTTP/2 preface, refusals), not only the head check.
//!
//! Input: byte 0 chooses how reads are split (bits 0-1: how many read-size
//! bytes follow, 0 = the client's bytes arrive at once; bits 2-7: hyper's read
//! buffer, 0 = 8 KiB else that many bytes), then the read sizes (1..=256 each,
//! used in turn), then the client's bytes.
//!
//! Checks, besides "no panic":
//! - the guard stops (Pending) exactly when it recorded a refusal, and then the
//!   last thing hyper read is the synthetic request that carries the refusal;
//! - every request head the guard passes on parses with httparse, and the
//!   bodies it passes on are framed as those heads say (Content-Length bytes,
//!   or chunks as httparse reads chunk sizes), up to an upgrade or CONNECT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::gateway::guard::{ConnShared, GuardedIo};
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// The client: hands out `data` in reads of the given sizes; never pending.
struct Client<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let want = match this.sizes {
            [] => usize::MAX,
            s => {
                let n = usize::from(s[this.next % s.len()]) + 1;
                this.next += 1;
                n
            }
        };
        let n = want.min(buf.remaining()).min(this.data.len());
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq)]
enum End {
    /// EOF after the client's bytes.
    Eof,
    /// A body framing error after its head was already passed on.
    Error,
    /// The guard holds the connection after a refusal.
    Refused,
}

/// The head timer needs a tokio runtime with a time driver in context; the
/// runtime is never driven, so the timer never fires.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let n_sizes = usize::from(control & 3).min(rest.len());
    let (sizes, data) = rest.split_at(n_sizes);
    let cap = match usize::from(control >> 2) {
        0 => 8192,
        n => n,
    };

    let _rt = runtime().enter();
    let shared = ConnShared::new();
    let client = Client {
        data,
        sizes,
        next: 0,
    };
    let mut io = GuardedIo::new(client, shared.clone());
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; cap];
    let end = loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut io).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break End::Eof,
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(_)) => break End::Error,
            Poll::Pending => break End::Refused,
        }
        assert!(
            out.len() <= data.len() + 256,
            "the guard produces more than it was given"
        );
    };
    drop(io);

    let refused = shared.rejection.lock().expect("lock").is_some();
    assert_eq!(
        refused,
        end == End::Refused,
        "refusal recorded: {refused}, but the reader ended with {end:?}"
    );
    let mut passed = &out[..];
    if refused {
        let synthetic = format!(
            "GET {} HTTP/1.1\r\nhost: rejected.invalid\r\nconnection: close\r\n\r\n",
            shared.reject_path()
        );
        assert!(
            out.ends_with(synthetic.as_bytes()),
            "a refusal must end with the synthetic request: {:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(shared.take_rejection(&shared.reject_path()).is_some());
        passed = &out[..out.len() - synthetic.len()];
    }
    if data.starts_with(b"PRI * HTTP/2.0") {
        // HTTP/2 prior knowledge: passed through untouched.
        assert_eq!(out, data);
        return;
    }
    check_messages(passed);
});

/// Walks the messages hyper would read from `out`.
fn check_messages(mut out: &[u8]) {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "the guard passed a head httparse does not accept ({other:?}): {:?}",
                String::from_utf8_lossy(out)
            ),
        };
        let mut length = 0u64;
        let mut chunked = false;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .expect("a passed Content-Length is a number");
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        out = &out[head_len..];
        let body = if chunked {
            match chunked_len(out) {
                Some(n) => n,
                None => return, // the body ends early (EOF or a framing error)
            }
        } else {
            match usize::try_from(length) {
                Ok(n) if n <= out.len() => n,
                _ => return,
            }
        };
        out = &out[body..];
        if upgrade {
            return; // the rest is the upgraded protocol
        }
    }
}

/// Length of the chunked body at the start of `b`, chunk sizes read by
/// httparse; None when `b` ends first.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let (size_line, size) = match httparse::parse_chunk_size(&b[i..]) {
            Ok(httparse::Status::Complete(r)) => r,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => panic!(
                "the guard passed a chunk size httparse does not accept: {:?}",
                String::from_utf8_lossy(&b[i..])
            ),
        };
        i += size_line;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let line = b[i..].windows(2).position(|w| w == b"\r\n")?;
                i += line + 2;
                if line == 0 {
                    return Some(i);
                }
            }
        }
        let end = i.checked_add(usize::try_from(size).ok()?)?;
        if b.len() < end + 2 {
            return None;
        }
        assert_eq!(
            &b[end..end + 2],
            b"\r\n",
            "the guard passed chunk data not followed by CRLF"
        );
        i = end + 2;
    }
}
