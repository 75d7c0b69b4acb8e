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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = fastrand::u128(..);
        let mut text = [0u8; 32];
        for (i, b) in text.iter_mut().enumerate() {
            *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
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
