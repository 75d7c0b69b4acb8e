//! Transaction ids: 32 lowercase hex characters (128 random bits), the
//! `transactionId` of the access log and the `x-transaction-id` header.

use bytes::Bytes;
use http::HeaderValue;

/// One request's transaction id, made once and shared: the record's
/// `transactionId` and every `x-transaction-id` field refer to the same bytes
/// (one allocation per request, where a `String` and a field value per use
/// were four).
#[derive(Clone, Debug)]
pub struct TransactionId(HeaderValue);

impl TransactionId {
    /// A fresh random id, e.g. `592d1649f75a8d480a3c4dc6a975309d`.
    pub fn new() -> TransactionId {
        let (a, b) = (fastrand::u64(..), fastrand::u64(..));
        let mut text = [0u8; 32];
        for (out, word) in text.chunks_exact_mut(8).zip([a >> 32, a, b >> 32, b]) {
            out.copy_from_slice(&hex8(word as u32));
        }
        // Hex digits are always a valid field value.
        let value = HeaderValue::from_maybe_shared(Bytes::from_owner(text))
            .unwrap_or_else(|_| HeaderValue::from_static("00000000000000000000000000000000"));
        TransactionId(value)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// The id as a field value (shares the bytes).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// The id as a field value, borrowed (no reference count taken).
    pub fn as_header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for TransactionId {
    fn default() -> TransactionId {
        TransactionId::new()
    }
}

impl std::fmt::Display for TransactionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for TransactionId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// The 8 lowercase hex digits of `x`, most significant first, made eight at a
/// time in one `u64` (a loop over the 32 digits of a `u128` cost about 150
/// instructions a request, callgrind). Each nibble is spread to a byte of its
/// own (byte k of the result holds nibble k), then turned into its digit:
/// `'0' + n`, plus the 39 between `'9' + 1` and `'a'` where `n > 9`, which is
/// where `n + 6` carries into bit 4.
fn hex8(x: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    let letters = ((v + 6 * ONES) >> 4) & ONES;
    (v + u64::from(b'0') * ONES + letters * 39).to_be_bytes()
}

/// True for 32 lowercase hex characters.
pub fn is_transaction_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn shape() {
        for _ in 0..100 {
            assert!(is_transaction_id(&TransactionId::new()));
        }
        assert!(!is_transaction_id("ABCDEF"));
    }

    #[test]
    fn hex_digits_are_formats_own() {
        let mut x: u32 = 1;
        for _ in 0..100_000 {
            let ours = hex8(x);
            assert_eq!(std::str::from_utf8(&ours), Ok(format!("{x:08x}").as_str()));
            x = x.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        }
        for x in [0, u32::MAX, 0x0123_4567, 0x89ab_cdef, 0xa0a0_9f9f] {
            assert_eq!(
                std::str::from_utf8(&hex8(x)),
                Ok(format!("{x:08x}").as_str())
            );
        }
    }

    #[test]
    fn text_and_field_value_are_the_same_id() {
        let seen: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let id = TransactionId::new();
                assert!(is_transaction_id(id.as_str()), "{}", id.as_str());
                assert_eq!(id.header_value().as_bytes(), id.as_str().as_bytes());
                id.as_str().to_string()
            })
            .collect();
        assert_eq!(seen.len(), 1000, "ids repeat");
    }
}
