//! The access token: generation, the shape a configured one must have, and
//! the constant-time comparison every request goes through.

use crate::ServerError;

/// A fresh random token: 128 bits from the OS, as 32 lower-case hex digits.
pub(crate) fn generate() -> Result<String, ServerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A configured token must be long enough to be unguessable and safe to put
/// in a URL and a cookie without escaping.
pub(crate) fn check(t: &str) -> Result<(), ServerError> {
    let ok_len = (16..=256).contains(&t.len());
    let ok_chars = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ServerError::BadToken(t.chars().count()))
    }
}

/// True when `given` equals `want`, in time that depends only on the
/// lengths (the token's length is public: it is fixed by the format).
pub(crate) fn matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_tokens_are_hex_and_differ() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        check(&a).unwrap();
    }

    #[test]
    fn comparison() {
        assert!(matches(b"abcdef", b"abcdef"));
        assert!(!matches(b"abcdeg", b"abcdef"));
        assert!(!matches(b"abcde", b"abcdef"));
        assert!(!matches(b"", b"abcdef"));
    }

    #[test]
    fn configured_token_shape() {
        assert!(check("short").is_err());
        assert!(check("has space in it 0123456789").is_err());
        assert!(check("has;semicolon;0123456789").is_err());
        check("0123456789abcdef").unwrap();
    }
}
