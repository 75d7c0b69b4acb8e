//! The chunked transfer coding (RFC 9112 §7.1), one strict byte-level scanner
//! for both directions: the request guard checks clients' chunked bodies with
//! it, and the backend client decodes chunked responses with it. Refused: no
//! digits, more than 15 hex digits, whitespace around the size, a bare LF, a
//! missing CRLF after data, a trailer line over [`MAX_TRAILER_LINE`] bytes.

use std::io;

/// Where a scan of a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading hex digits of a chunk size (count so far).
    Size { digits: u8, value: u64 },
    /// In a chunk extension, until CR.
    Ext { value: u64 },
    /// Saw CR after the size line; want LF.
    SizeLf { value: u64 },
    /// Chunk data left.
    Data(u64),
    /// Want CR after data.
    DataCr,
    /// Want LF after data.
    DataLf,
    /// In the trailer section: bytes on the current line so far.
    Trailer { line_len: usize, cr: bool },
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

/// Longest trailer line accepted.
pub const MAX_TRAILER_LINE: usize = 8 * 1024;

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
                    Chunk::Ext { value }
                }
                _ => return Err(chunk_error()),
            },
            Chunk::Ext { value } => match b {
                b'\r' => {
                    i += 1;
                    Chunk::SizeLf { value }
                }
                b'\n' | 0 => return Err(chunk_error()),
                _ => {
                    i += 1;
                    Chunk::Ext { value }
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
            Chunk::Trailer { line_len, cr } => {
                i += 1;
                match (b, cr) {
                    (b'\r', false) => Chunk::Trailer { line_len, cr: true },
                    (b'\n', true) => {
                        if line_len == 0 {
                            return Ok((i, None));
                        }
                        Chunk::Trailer {
                            line_len: 0,
                            cr: false,
                        }
                    }
                    (b'\n', false) | (_, true) => return Err(chunk_error()),
                    _ => {
                        if line_len >= MAX_TRAILER_LINE {
                            return Err(chunk_error());
                        }
                        Chunk::Trailer {
                            line_len: line_len + 1,
                            cr: false,
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

    #[test]
    fn stop_at_data_leaves_the_data() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let (used, next) = scan_chunked(Chunk::START, body, true).expect("ok");
        assert_eq!(used, 3);
        assert_eq!(next, Some(Chunk::Data(5)));
    }
}
