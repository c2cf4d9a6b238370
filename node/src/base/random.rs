//! Random bytes and identifiers from the system's secure random source (ring).
//!
//! Nonces, negotiation, agreement and message IDs, product IDs and node secrets all
//! come from here; IDs and request nonces begin with the time they were made, so they
//! sort by it. A failing random source is reported, never papered over with
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

/// A new identifier (`neg-…`, `agr-…`): `prefix-` and 24 lowercase hex digits, the
/// milliseconds since the Unix epoch (12) and 6 random bytes. IDs made later sort after
/// those made earlier, so the records keyed by them land in the storage engine's most
/// recently written pages rather than in a random, long unread page of a large store;
/// the random bytes keep IDs of the same millisecond apart.
pub fn new_id(prefix: &str) -> Result<String, RandomError> {
    Ok(format!("{prefix}-{}", time_ordered_hex::<6>()?))
}

/// A new nonce for a contract request: 32 lowercase hex digits, the milliseconds since
/// the Unix epoch (12) and 10 random bytes; nonces sort by time as [`new_id`]s do.
pub fn new_nonce() -> Result<String, RandomError> {
    time_ordered_hex::<10>()
}

/// The milliseconds since the Unix epoch in 12 hex digits, then `N` random bytes in
/// hex.
fn time_ordered_hex<const N: usize>() -> Result<String, RandomError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // 12 hex digits hold milliseconds until the year 10889.
    let ms = (ms & 0xffff_ffff_ffff) as u64;
    Ok(format!("{ms:012x}{}", hex::encode(random_bytes::<N>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_hex_and_differ() {
        let a = new_id("agr").unwrap();
        let b = new_id("agr").unwrap();
        assert_ne!(a, b);
        let hex = a.strip_prefix("agr-").expect("prefixed");
        assert_eq!(hex.len(), 24);
        assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        let nonce = new_nonce().unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(
            nonce
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_ne!(nonce, new_nonce().unwrap());
        assert_ne!(random_bytes::<16>().unwrap(), [0u8; 16]);
    }

    #[test]
    fn ids_and_nonces_sort_by_the_time_they_were_made() {
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = now_ms();
        let (id, nonce) = (new_id("neg").unwrap(), new_nonce().unwrap());
        let after = now_ms();
        for made in [&id["neg-".len()..], nonce.as_str()] {
            let ms = u64::from_str_radix(&made[..12], 16).unwrap();
            assert!(
                (before..=after).contains(&ms),
                "{made}: {ms} not in {before}..={after}"
            );
        }
        let mut made = Vec::new();
        for _ in 0..3 {
            made.push((new_id("neg").unwrap(), new_nonce().unwrap()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        for pair in made.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
            assert!(pair[0].1 < pair[1].1, "{pair:?}");
        }
    }
}
