//! Identifiers: time-ordered (so keys sort by creation) and unguessable (80 random bits).

use std::sync::Mutex;

use rand::RngCore;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The last id made by this process, so ids made in the same millisecond still sort in order.
static LAST: Mutex<u128> = Mutex::new(0);

/// A 26-character ULID-style string: 48 bits of milliseconds, then 80 bits from the OS CSPRNG.
/// Within one process ids are strictly increasing: an id made in the same millisecond as the
/// previous one is the previous plus a random 64-bit step, so it is still unguessable.
pub fn ulid_at(ms: u64) -> String {
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let mut value: u128 = (ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= (*b as u128) << (8 * (9 - i));
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        // Same millisecond, or a clock that stepped back: continue from the last id.
        if value <= *last {
            value = last.saturating_add(1 + (rand::rng().next_u64() as u128));
        }
        *last = value;
    }
    encode(value)
}

/// Crockford base32 of a 128-bit value: 26 characters that sort as the value does.
pub fn encode(mut value: u128) -> String {
    let mut out = [0u8; 26];
    for i in (0..26).rev() {
        out[i] = CROCKFORD[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of 26 Crockford base32 characters (`encode`'s inverse).
pub fn decode(s: &str) -> Option<u128> {
    if s.len() != 26 {
        return None;
    }
    s.bytes().try_fold(0u128, |v, b| {
        let digit = CROCKFORD.iter().position(|c| *c == b)?;
        Some((v << 5) | digit as u128)
    })
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid_at(crate::time::now_ms()))
}

/// True when `s` has the shape `new_id(prefix)` produces; used to reject junk ids and cursors
/// before they reach a key.
pub fn is_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r.len() == 26 && r.bytes().all(|b| CROCKFORD.contains(&b)))
}

/// The shard of `key` among `shards` (`0..shards`): the first 8 bytes of its SHA-256, so the
/// same key lands on the same shard in every process and release (std's `RandomState` is
/// seeded per process, and would scatter one record's reads and writes).
pub fn shard(key: &str, shards: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ() {
        assert_ne!(ulid_at(5), ulid_at(5));
        let many: Vec<String> = (0..1000).map(|_| new_id("wh")).collect();
        assert!(
            many.windows(2).all(|w| w[0] < w[1]),
            "ids of one process are increasing"
        );
        assert!(is_id("wh", &new_id("wh")));
        assert!(!is_id("wh", "wh_123"));
        assert!(!is_id("wh", &new_id("dl")));
        assert_eq!(decode(&encode(u128::MAX - 7)), Some(u128::MAX - 7));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: a change of hash would move every stored record to another key.
        // (The first 8 bytes of SHA-256, big-endian, modulo 16: checked with Python's hashlib.)
        assert_eq!(["dl_a", "dl_b", "evt-1"].map(|k| shard(k, 16)), [0, 9, 9]);
        assert_eq!(shard("anything", 1), 0);
        assert_eq!(shard("anything", 0), 0);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[shard(&format!("dl_{i}"), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
    }
}
