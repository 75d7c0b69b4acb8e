//! Field names as `HeaderName`s: the common ones found without parsing.
//!
//! `HeaderName::from_bytes` lowercases a name into a buffer, matches it
//! against `http`'s standard names and copies any other into an allocation of
//! its own: about 120 instructions a field (callgrind, docs/benchmarks.md §2),
//! and a request or an answer has from 2 to 20 fields. The names requests and
//! answers carry most are looked up here instead, in a hash table of their
//! own, and compared 8 bytes at a time without regard to case (RFC 9110 §5.1): HPACK's static table
//! (RFC 7541 Appendix A), the CORS and security fields, what browsers send
//! besides (`sec-fetch-*`, `sec-ch-ua*`, `priority`) and the proxy fields.
//! Any other name goes to `from_bytes`, and either way the result is the same.

use http::header::{HeaderName, InvalidHeaderName};

/// Declares the table: [`TEXT`], the names in lower case (sorted by length for the reader),
/// and [`NAMES`], the same names as `HeaderName`s (`from_static` gives a
/// standard name `http`'s own representation, as `from_bytes` does).
macro_rules! known {
    ($($t:literal),+ $(,)?) => {
        /// The names, in lower case, sorted by length (for the reader).
        const TEXT: [&str; [$($t),+].len()] = [$($t),+];
        /// [`TEXT`]'s names as `HeaderName`s, in the same order.
        static NAMES: [HeaderName; TEXT.len()] = [$(HeaderName::from_static($t)),+];
    };
}

known!(
    "te",
    "age",
    "dnt",
    "via",
    "date",
    "etag",
    "from",
    "host",
    "link",
    "vary",
    "allow",
    "range",
    "accept",
    "cookie",
    "expect",
    "origin",
    "pragma",
    "server",
    "alt-svc",
    "expires",
    "referer",
    "refresh",
    "trailer",
    "upgrade",
    "if-match",
    "if-range",
    "location",
    "priority",
    "forwarded",
    "sec-ch-ua",
    "x-real-ip",
    "connection",
    "keep-alive",
    "set-cookie",
    "user-agent",
    "retry-after",
    "content-type",
    "accept-ranges",
    "authorization",
    "cache-control",
    "content-range",
    "if-none-match",
    "last-modified",
    "accept-charset",
    "content-length",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "accept-encoding",
    "accept-language",
    "referrer-policy",
    "x-forwarded-for",
    "x-frame-options",
    "content-encoding",
    "content-language",
    "content-location",
    "proxy-connection",
    "sec-ch-ua-mobile",
    "www-authenticate",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-requested-with",
    "x-xss-protection",
    "if-modified-since",
    "transfer-encoding",
    "x-forwarded-proto",
    "proxy-authenticate",
    "sec-ch-ua-platform",
    "content-disposition",
    "if-unmodified-since",
    "proxy-authorization",
    "access-control-max-age",
    "x-content-type-options",
    "content-security-policy",
    "strict-transport-security",
    "upgrade-insecure-requests",
    "access-control-allow-origin",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "access-control-request-method",
    "access-control-request-headers",
    "access-control-allow-credentials",
);

/// How many names the table holds.
const N: usize = TEXT.len();
/// The longest name the table may hold, in bytes.
const MAX: usize = 32;
/// 8-byte words in a name of [`MAX`] bytes.
const WORDS: usize = MAX / 8;

/// How many 8-byte words a name of `len` bytes is compared in.
const fn word_count(len: usize) -> usize {
    if len < 8 {
        1
    } else {
        len.div_ceil(8)
    }
}

/// Where word `i` of a name of `len` >= 8 bytes starts: 0, 8, 16 and so on,
/// the last one ending at `len` (and overlapping the one before).
const fn word_offset(len: usize, i: usize) -> usize {
    if 8 * i + 8 <= len {
        8 * i
    } else {
        len - 8
    }
}

/// Word `i` of `b` (little-endian), and its mask: 0x20 in each byte that is a
/// lower-case letter, 0 in the others. A name under 8 bytes is one word,
/// padded with zeros.
const fn word_and_mask(b: &[u8], i: usize) -> (u64, u64) {
    let (start, n) = if b.len() < 8 {
        (0, b.len())
    } else {
        (word_offset(b.len(), i), 8)
    };
    let (mut w, mut m) = (0u64, 0u64);
    let mut k = 0;
    while k < n {
        let c = b[start + k];
        w |= (c as u64) << (8 * k);
        if c.is_ascii_lowercase() {
            m |= 0x20 << (8 * k);
        }
        k += 1;
    }
    (w, m)
}

/// Bits of a slot number: the table has `1 << SLOT_BITS` slots.
const SLOT_BITS: u32 = 9;
/// The multiplier of [`slot`]'s hash: an odd number, tried at random until
/// the names fell in slots of their own (the build checks it; a name added
/// that shares a slot fails it, and another multiplier must be found).
const K: u64 = 0xc7f0_9844_8f3c_30d9;

/// A name's slot, from its words ([`word_and_mask`]) with 0x20 set in every
/// byte, so that every spelling of a name, whatever its case, has one slot;
/// multiply-shift hashing of the words and the length.
const fn slot(w: &[u64; WORDS], len: usize) -> usize {
    const L: u64 = 0x2020_2020_2020_2020;
    let x = (w[0] | L)
        ^ (w[1] | L).rotate_left(16)
        ^ (w[2] | L).rotate_left(32)
        ^ (w[3] | L).rotate_left(48)
        ^ len as u64;
    (x.wrapping_mul(K) >> (64 - SLOT_BITS)) as usize
}

/// The table in the form the lookup reads it.
struct Table {
    /// Each name's words ([`word_and_mask`]).
    words: [[u64; WORDS]; N],
    /// Each name's masks. A word of the input matches when `input | mask ==
    /// word`: a letter's byte then matches exactly its two cases (only they
    /// give the lower case when 0x20 is set), any other byte only itself.
    masks: [[u64; WORDS]; N],
    /// Each name's length in bytes.
    lens: [u8; N],
    /// Per slot, the index of the name in it, or `EMPTY`.
    slots: [u8; 1 << SLOT_BITS],
}

/// A slot with no name.
const EMPTY: u8 = u8::MAX;

/// Built at compile time; the build fails if a name is not in lower case,
/// is longer than [`MAX`], or shares its slot with another.
static TABLE: Table = build();

const fn build() -> Table {
    const { assert!(N < EMPTY as usize) };
    let mut t = Table {
        words: [[0; WORDS]; N],
        masks: [[0; WORDS]; N],
        lens: [0; N],
        slots: [EMPTY; 1 << SLOT_BITS],
    };
    let mut i = 0;
    while i < N {
        let b = TEXT[i].as_bytes();
        assert!(!b.is_empty() && b.len() <= MAX);
        let mut k = 0;
        while k < b.len() {
            assert!(!b[k].is_ascii_uppercase());
            k += 1;
        }
        let mut j = 0;
        while j < word_count(b.len()) {
            let (w, m) = word_and_mask(b, j);
            t.words[i][j] = w;
            t.masks[i][j] = m;
            j += 1;
        }
        t.lens[i] = b.len() as u8;
        let s = slot(&t.words[i], b.len());
        assert!(t.slots[s] == EMPTY, "two names share a slot: change K");
        t.slots[s] = i as u8;
        i += 1;
    }
    t
}

/// `raw` (a field name as it came) as a `HeaderName`: the table's own for a
/// name it holds, in any case; else `HeaderName::from_bytes`, whose error this
/// returns (not a token, RFC 9110 §5.1).
pub fn field_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    match known(raw) {
        Some(i) => Ok(NAMES[i].clone()),
        None => HeaderName::from_bytes(raw),
    }
}

/// The index of `raw` in the table, compared without regard to case: the
/// one name in its slot, compared a word at a time.
fn known(raw: &[u8]) -> Option<usize> {
    let len = raw.len();
    if len == 0 || len > MAX {
        return None;
    }
    let w = words(raw);
    let i = usize::from(TABLE.slots[slot(&w, len)]);
    let (t, m) = (TABLE.words.get(i)?, TABLE.masks.get(i)?);
    let differ = ((w[0] | m[0]) ^ t[0])
        | ((w[1] | m[1]) ^ t[1])
        | ((w[2] | m[2]) ^ t[2])
        | ((w[3] | m[3]) ^ t[3]);
    (differ == 0 && TABLE.lens.get(i).copied() == Some(len as u8)).then_some(i)
}

/// `raw` (1 to [`MAX`] bytes) in words as [`word_and_mask`] makes them, the
/// words it does not use zero. Under 8 bytes, two loads of 2 or 4 bytes that
/// overlap in the middle (the bytes they share are the same, so OR-ing them
/// is exact).
fn words(raw: &[u8]) -> [u64; WORDS] {
    fn load<const K: usize>(raw: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = raw.get(at..at + K) {
            b[..K].copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }
    let len = raw.len();
    let mut w = [0u64; WORDS];
    match len {
        0 => {}
        1 => w[0] = load::<1>(raw, 0),
        2..=3 => w[0] = load::<2>(raw, 0) | load::<2>(raw, len - 2) << (8 * (len - 2)),
        4..=7 => w[0] = load::<4>(raw, 0) | load::<4>(raw, len - 4) << (8 * (len - 4)),
        _ => {
            w[0] = load::<8>(raw, 0);
            if len > 8 {
                w[1] = load::<8>(raw, word_offset(len, 1));
            }
            if len > 16 {
                w[2] = load::<8>(raw, word_offset(len, 2));
            }
            if len > 24 {
                w[3] = load::<8>(raw, word_offset(len, 3));
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_http(raw: &[u8]) {
        let ours = field_name(raw);
        let theirs = HeaderName::from_bytes(raw);
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{raw:?}");
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            assert_eq!(a, b, "{raw:?}");
        }
    }

    #[test]
    fn every_name_is_found_in_any_case_as_http_would_parse_it() {
        for (i, t) in TEXT.iter().enumerate() {
            assert_eq!(NAMES[i].as_str(), *t);
            let title: String = t
                .split('-')
                .map(|p| p[..1].to_ascii_uppercase() + &p[1..])
                .collect::<Vec<_>>()
                .join("-");
            for spelling in [t.to_string(), t.to_ascii_uppercase(), title] {
                assert_eq!(known(spelling.as_bytes()), Some(i), "{spelling}");
                same_as_http(spelling.as_bytes());
            }
        }
    }

    /// Each byte of each name changed into every other value: found only
    /// when the change is the other case of a letter.
    #[test]
    fn a_name_with_any_other_byte_is_not_found() {
        for (i, t) in TEXT.iter().enumerate() {
            for at in 0..t.len() {
                for c in 0..=255u8 {
                    let mut v = t.as_bytes().to_vec();
                    let was = v[at];
                    v[at] = c;
                    let same = c == was || (was.is_ascii_lowercase() && c == was ^ 0x20);
                    assert_eq!(known(&v), same.then_some(i), "{v:?}");
                    same_as_http(&v);
                }
            }
        }
    }

    #[test]
    fn other_names_go_to_http() {
        for raw in [
            &b""[..],
            b"x",
            b"x-custom",
            b"content-lengthx",
            b"hos",
            b"Content Length",
            b"access-control-allow-credentials-and-more",
            b"x-\xff",
            // A table name's words with zero bytes after it: the length tells.
            b"host\0",
            b"te\0\0\0\0\0\0",
            b"content-type\0\0\0\0",
        ] {
            assert_eq!(known(raw), None, "{raw:?}");
            same_as_http(raw);
        }
    }
}
