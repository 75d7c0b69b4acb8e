//! The chunked transfer coding (RFC 9112 §7.1), one strict byte-level scanner
//! for both directions: the request guard checks clients' chunked bodies with
//! it, and the backend client decodes chunked responses with it. Refused: no
//! digits, more than 15 hex digits, whitespace around the size, a bare LF, a
//! missing CRLF after data, a chunk extension or a trailer line over
//! [`MAX_LINE`] bytes, a trailer section over [`MAX_TRAILER_SECTION`] bytes.

use std::io;

/// Where a scan of a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading hex digits of a chunk size (count so far).
    Size { digits: u8, value: u64 },
    /// In a chunk extension, until CR: its bytes so far.
    Ext { value: u64, len: u32 },
    /// Saw CR after the size line; want LF.
    SizeLf { value: u64 },
    /// Chunk data left.
    Data(u64),
    /// Want CR after data.
    DataCr,
    /// Want LF after data.
    DataLf,
    /// In the trailer section: bytes on the current line so far, and in the
    /// section's lines before it.
    Trailer {
        line_len: usize,
        cr: bool,
        before: usize,
    },
}

impl Chunk {
    /// The state at the start of a chunked body.
    pub const START: Chunk = Chunk::Size {
        digits: 0,
        value: 0,
    };
}

/// The error of every framing fault.
pub fn chunk_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "invalid chunked framing")
}

/// Longest chunk extension (after the size's `;`) and longest trailer line
/// accepted, in bytes (8 KiB). The gateway forwards neither (chunks are
/// written again with their sizes only, trailers are dropped), so one line
/// could otherwise be any length that no backend sees. The extension's limit
/// is per chunk, as Node.js counts it since CVE-2024-22019; hyper counts
/// 16 KiB over a whole message.
pub const MAX_LINE: usize = 8 * 1024;

/// Largest trailer section accepted, in bytes: as much as a request head
/// (64 KiB, `guard.rs` `MAX_HEAD_BYTES`).
pub const MAX_TRAILER_SECTION: usize = super::guard::MAX_HEAD_BYTES;

/// Scans chunked-body bytes. Returns how many bytes belong to the body and the
/// state after them (None = the body ended within `buf`). With `stop_at_data`
/// the scan stops where chunk data begins (state `Data`), so a decoder can take
/// the data out.
pub fn scan_chunked(
    mut c: Chunk,
    buf: &[u8],
    stop_at_data: bool,
) -> io::Result<(usize, Option<Chunk>)> {
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        c = match c {
            Chunk::Size { digits, value } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(chunk_error());
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    i += 1;
                    Chunk::Size {
                        digits: digits + 1,
                        value: value * 16 + d,
                    }
                }
                b'\r' if digits > 0 => {
                    i += 1;
                    Chunk::SizeLf { value }
                }
                b';' if digits > 0 => {
                    i += 1;
                    Chunk::Ext { value, len: 0 }
                }
                _ => return Err(chunk_error()),
            },
            Chunk::Ext { value, len } => match b {
                b'\r' => {
                    i += 1;
                    Chunk::SizeLf { value }
                }
                b'\n' | 0 => return Err(chunk_error()),
                _ if len as usize >= MAX_LINE => return Err(chunk_error()),
                _ => {
                    i += 1;
                    Chunk::Ext {
                        value,
                        len: len + 1,
                    }
                }
            },
            Chunk::SizeLf { value } => {
                if b != b'\n' {
                    return Err(chunk_error());
                }
                i += 1;
                if value == 0 {
                    Chunk::Trailer {
                        line_len: 0,
                        cr: false,
                        before: 0,
                    }
                } else {
                    Chunk::Data(value)
                }
            }
            Chunk::Data(left) if stop_at_data => return Ok((i, Some(Chunk::Data(left)))),
            Chunk::Data(left) => {
                let k = left.min((buf.len() - i) as u64);
                i += k as usize;
                if left - k == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - k)
                }
            }
            Chunk::DataCr => {
                if b != b'\r' {
                    return Err(chunk_error());
                }
                i += 1;
                Chunk::DataLf
            }
            Chunk::DataLf => {
                if b != b'\n' {
                    return Err(chunk_error());
                }
                i += 1;
                Chunk::Size {
                    digits: 0,
                    value: 0,
                }
            }
            Chunk::Trailer {
                line_len,
                cr,
                before,
            } => {
                i += 1;
                match (b, cr) {
                    (b'\r', false) => Chunk::Trailer {
                        line_len,
                        cr: true,
                        before,
                    },
                    (b'\n', true) => {
                        if line_len == 0 {
                            return Ok((i, None));
                        }
                        // The line and its CRLF.
                        let before = before + line_len + 2;
                        if before > MAX_TRAILER_SECTION {
                            return Err(chunk_error());
                        }
                        Chunk::Trailer {
                            line_len: 0,
                            cr: false,
                            before,
                        }
                    }
                    (b'\n', false) | (_, true) => return Err(chunk_error()),
                    _ => {
                        if line_len >= MAX_LINE {
                            return Err(chunk_error());
                        }
                        Chunk::Trailer {
                            line_len: line_len + 1,
                            cr: false,
                            before,
                        }
                    }
                }
            }
        };
    }
    Ok((i, Some(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_scanner() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET";
        let (used, next) = scan_chunked(Chunk::START, body, false).expect("ok");
        assert_eq!(next, None);
        assert_eq!(&body[used..], b"GET");
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloX",
            b"-1\r\n",
            b" 5\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(scan_chunked(Chunk::START, bad, false).is_err(), "{bad:?}");
        }
        // Split anywhere: same outcome.
        let mut c = Chunk::START;
        let mut total = 0;
        for piece in body[..body.len() - 3].chunks(2) {
            let (u, n) = scan_chunked(c, piece, false).expect("ok");
            total += u;
            match n {
                Some(n) => c = n,
                None => break,
            }
        }
        assert_eq!(total, body.len() - 3);
    }

    /// Chunk extensions and trailers are dropped, not forwarded: each has a
    /// limit, and a body that stays within them passes.
    #[test]
    fn long_extensions_and_trailer_sections_are_refused() {
        let scan = |b: &[u8]| scan_chunked(Chunk::START, b, false).map(|(_, n)| n);
        let ext = |n: usize| [&b"3;"[..], &vec![b'a'; n], b"\r\nabc\r\n0\r\n\r\n"].concat();
        assert_eq!(scan(&ext(MAX_LINE)).expect("at the limit"), None);
        assert!(scan(&ext(MAX_LINE + 1)).is_err());
        // Long, in pieces, as it comes off a socket: refused in the piece
        // that holds its byte MAX_LINE + 1.
        let long = ext(5_000_000);
        let mut c = Chunk::START;
        let mut refused_at = None;
        for (i, piece) in long.chunks(4096).enumerate() {
            match scan_chunked(c, piece, false) {
                Ok((_, Some(next))) => c = next,
                Ok((_, None)) => panic!("a 5 MB extension was taken whole"),
                Err(_) => {
                    refused_at = Some(i);
                    break;
                }
            }
        }
        assert_eq!(refused_at, Some((2 + MAX_LINE) / 4096));
        let trailers = |lines: usize| {
            let line = b"X-T: 0123456789\r\n"; // 17 bytes
            [&b"0\r\n"[..], &line.repeat(lines), b"\r\n"].concat()
        };
        let fit = MAX_TRAILER_SECTION / 17;
        assert_eq!(scan(&trailers(fit)).expect("within the section"), None);
        assert!(scan(&trailers(fit + 1)).is_err());
        let line = |n: usize| [&b"0\r\nX: "[..], &vec![b'v'; n - 3], b"\r\n\r\n"].concat();
        assert_eq!(scan(&line(MAX_LINE)).expect("a line at the limit"), None);
        assert!(scan(&line(MAX_LINE + 1)).is_err());
    }

    #[test]
    fn stop_at_data_leaves_the_data() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let (used, next) = scan_chunked(Chunk::START, body, true).expect("ok");
        assert_eq!(used, 3);
        assert_eq!(next, Some(Chunk::Data(5)));
    }
}
