//! Transaction ids: 32 lowercase hex characters (128 random bits), the
//! `transactionId` of the access log and the `x-transaction-id` header.

/// A fresh random transaction id, e.g. `592d1649f75a8d480a3c4dc6a975309d`.
pub fn new_transaction_id() -> String {
    format!("{:032x}", fastrand::u128(..))
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
            assert!(is_transaction_id(&new_transaction_id()));
        }
        assert!(!is_transaction_id("ABCDEF"));
    }
}
