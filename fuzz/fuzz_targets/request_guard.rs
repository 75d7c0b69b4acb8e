//! The HTTP/1 request reader of our server: `gateway::guard::take_head` for
//! heads and `gateway::h1client::decode_body` for bodies, driven the way
//! `gateway::h1server` drives them: client bytes arrive in reads, each read is
//! appended to the input, then heads are taken and bodies decoded as far as the
//! input goes. Covers head detection, the head checks, Content-Length and
//! chunked bodies, pipelining, upgrades, the HTTP/2 preface and refusals.
//!
//! Input: byte 0 chooses how reads are split (bits 0-1: how many read-size
//! bytes follow, 0 = the client's bytes arrive at once), then the read sizes
//! (1..=256 each, used in turn), then the client's bytes.
//!
//! Checks, besides "no panic":
//! - the HTTP/2 preface is recognised only at the start;
//! - every head the reader accepts parses with httparse and says the same
//!   framing (Content-Length, or chunked);
//! - the bytes the body decoder consumed, head and body together, are exactly
//!   the messages httparse reads (chunk sizes as httparse reads them), up to an
//!   upgrade or CONNECT, and a Content-Length body decodes to that many bytes;
//! - the field lines an accepted head's fields become for the backend
//!   (`headers::strip_request_fields`, then `ClientFields::write_lines`, which
//!   copies the client's lines as they came) parse with httparse into exactly
//!   the fields left in the list, in order, none of them hop-by-hop.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis::gateway::fields::ClientFields;
use portcullis::gateway::guard::{take_head, BodyFraming, Step, MAX_HEADERS};
use portcullis::gateway::h1client::{decode_body, Framing};
use portcullis::gateway::headers::{hop_by_hop, strip_request_fields};

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let n_sizes = usize::from(control & 3).min(rest.len());
    let (sizes, data) = rest.split_at(n_sizes);

    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut next_size = 0;
    // Bytes accepted as messages so far (heads and bodies, as consumed).
    let mut passed = Vec::new();
    let mut first = true;
    // The body being decoded: its state, bytes decoded, Content-Length.
    let mut body: Option<(Framing, u64, Option<u64>)> = None;
    let mut upgraded = false;
    'reads: while fed < data.len() {
        let n = match sizes {
            [] => data.len() - fed,
            s => {
                let n = usize::from(s[next_size % s.len()]) + 1;
                next_size += 1;
                n.min(data.len() - fed)
            }
        };
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            if let Some((framing, got, length)) = body.as_mut() {
                let before = buf.len();
                let (next, piece) = match decode_body(&mut buf, *framing) {
                    Ok(r) => r,
                    Err(_) => break 'reads, // invalid framing: the body fails
                };
                passed.extend_from_slice(&data[fed - before..fed - buf.len()]);
                *got += piece.map(|p| p.len() as u64).unwrap_or(0);
                *framing = next;
                if next.is_done() {
                    if let Some(n) = length {
                        assert_eq!(*got, *n, "a Content-Length body decodes to its length");
                    }
                    body = None;
                    if upgraded {
                        break 'reads;
                    }
                    continue;
                }
                if before == buf.len() {
                    continue 'reads; // needs more bytes
                }
                continue;
            }
            if upgraded {
                break 'reads;
            }
            match take_head(&mut buf, &mut first) {
                Step::NeedMore => {
                    // Skipped empty lines are not part of a message.
                    continue 'reads;
                }
                Step::Http2 => {
                    assert!(data.starts_with(b"PRI * HTTP/2.0"), "preface only at the start");
                    return;
                }
                Step::Refused(_) => break 'reads,
                Step::Request(mut head) => {
                    check_forwarded(&mut head.fields);
                    let end = fed - buf.len();
                    passed.extend_from_slice(&data[end - head.bytes..end]);
                    upgraded = head.upgrade;
                    body = match head.body {
                        BodyFraming::None => None,
                        BodyFraming::Length(n) => Some((Framing::Length(n), 0, Some(n))),
                        BodyFraming::Chunked => Some((
                            Framing::Chunked(portcullis::gateway::chunked::Chunk::START),
                            0,
                            None,
                        )),
                    };
                }
            }
        }
    }
    check_messages(&passed);
});

/// The fields of an accepted head as the backend would read them: prepared
/// as the proxy prepares them, written as `h1client::write_head` writes them
/// (`Host` left to the gateway), then parsed by httparse.
fn check_forwarded(fields: &mut ClientFields) {
    strip_request_fields(fields);
    let mut lines = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: gateway\r\n"[..]);
    fields.write_lines(&mut lines, |n| *n == http::header::HOST);
    lines.extend_from_slice(b"\r\n");
    // The guard's most fields, and the `host` line above.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 1];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&lines) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, lines.len(), "one head, whole"),
        other => panic!(
            "the forwarded head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&lines)
        ),
    }
    let kept: Vec<_> = fields
        .iter()
        .filter(|(n, _)| **n != http::header::HOST)
        .collect();
    assert_eq!(req.headers.len(), kept.len() + 1, "a field line per field");
    for (h, (name, value)) in req.headers[1..].iter().zip(kept) {
        assert!(
            h.name.eq_ignore_ascii_case(name.as_str()),
            "{} written for {name}",
            h.name
        );
        assert_eq!(h.value, value, "the value of {name}");
        assert!(hop_by_hop(name).is_none(), "{name} forwarded");
    }
}

/// Walks the messages httparse reads from `out`: each must parse, and each
/// body must be framed as its head says.
fn check_messages(mut out: &[u8]) {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "the reader accepted a head httparse does not accept ({other:?}): {:?}",
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
                "the reader accepted a chunk size httparse does not accept: {:?}",
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
            "the reader accepted chunk data not followed by CRLF"
        );
        i = end + 2;
    }
}
