//! Random bytes and identifiers from the system's secure random source (ring).
//!
//! Nonces, negotiation, agreement and message IDs, product IDs and node secrets all
//! come from here. A failing random source is reported, never papered over with
//! zeros: an ID or nonce of zeros would collide, and a replayed request would pass for
//! a new one.

use ring::rand::{SecureRandom as _, SystemRandom};

/// The system random generator failed; nothing was made.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomError;

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(bytes)
}

/// A random identifier: `prefix-` and 12 random bytes in hex (`neg-…`, `agr-…`).
pub fn random_id(prefix: &str) -> Result<String, RandomError> {
    Ok(format!("{prefix}-{}", hex::encode(random_bytes::<12>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_hex_and_differ() {
        let a = random_id("agr").unwrap();
        let b = random_id("agr").unwrap();
        assert_ne!(a, b);
        let hex = a.strip_prefix("agr-").expect("prefixed");
        assert_eq!(hex.len(), 24);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_bytes::<16>().unwrap(), [0u8; 16]);
    }
}
