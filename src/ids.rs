//! Identifier rules shared by the API, the store and configuration: the safe id alphabet
//! `[A-Za-z0-9_-]` with a bounded length, so an id can never name a path, a query or a control byte.

/// Longest id accepted anywhere.
pub const MAX_ID_LEN: usize = 128;

/// True when `id` is 1..=128 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new server-assigned id (a random UUID, which fits the alphabet).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_and_length() {
        assert!(is_valid_id("abc-DEF_123"));
        assert!(is_valid_id(&new_id()));
        for bad in ["", "..", "a/b", "a\\b", "a\0b", "%2e%2e%2f", "a b", "é"] {
            assert!(!is_valid_id(bad), "{bad:?} must be refused");
        }
        assert!(is_valid_id(&"a".repeat(MAX_ID_LEN)));
        assert!(!is_valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }
}
