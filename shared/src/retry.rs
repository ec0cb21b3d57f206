//! When to try again, and the stable id of a delivery.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::MAX_RETRY_DELAY_S;

/// Retry-After values are honoured up to this many seconds (and never below the schedule).
pub const MAX_RETRY_AFTER_S: u64 = MAX_RETRY_DELAY_S;

/// The delay before attempt `attempt + 1`, after `attempt` (1-based) failed; `None` when the
/// schedule is exhausted. Jitter adds up to a quarter of the delay so that receivers coming
/// back from an outage are not hit by every retry at once. A receiver's `Retry-After` can
/// lengthen the delay (up to 12 h, the SQS maximum) but not shorten it.
pub fn next_delay(schedule: &[u64], attempt: u32, retry_after_s: Option<u64>) -> Option<u64> {
    let base = *schedule.get(attempt.checked_sub(1)? as usize)?;
    let jitter = if base >= 4 {
        rand::rng().random_range(0..=base / 4)
    } else {
        0
    };
    let delay = (base + jitter).max(retry_after_s.unwrap_or(0).min(MAX_RETRY_AFTER_S));
    Some(delay.min(MAX_RETRY_DELAY_S))
}

/// The id of the delivery of a tenant's event to a webhook: the same on every redelivery of
/// the event (so fan-out is idempotent), ordered by event time (so listings are newest first).
pub fn delivery_id(tenant: &str, event_id: &str, webhook_id: &str, event_ms: u64) -> String {
    let mut h = Sha256::new();
    for part in [tenant, event_id, webhook_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut value: u128 = (event_ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in digest[..10].iter().enumerate() {
        value |= (*b as u128) << (8 * (9 - i));
    }
    format!("dl_{}", crate::ids::encode(value))
}

/// The event time a delivery id carries (its first 48 bits), so a delivery record alone
/// says when its event happened; `None` for a string that is not a delivery id.
pub fn delivery_time(delivery_id: &str) -> Option<u64> {
    if !crate::ids::is_id("dl", delivery_id) {
        return None;
    }
    crate::ids::decode(&delivery_id[3..]).map(|v| (v >> 80) as u64)
}

/// The smallest delivery id of an event at `ms` or later: a bound for a window of the log.
pub fn delivery_id_bound(ms: u64) -> String {
    format!("dl_{}", crate::ids::encode((ms as u128 & 0xFFFF_FFFF_FFFF) << 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_bounded_jitter() {
        let s = [5, 300, 1800];
        assert!((5..=6).contains(&next_delay(&s, 1, None).expect("delay")));
        for _ in 0..100 {
            let d = next_delay(&s, 2, None).expect("delay");
            assert!((300..=375).contains(&d), "{d}");
        }
        assert_eq!(next_delay(&s, 4, None), None);
        assert_eq!(next_delay(&s, 0, None), None);
        assert_eq!(next_delay(&[1], 1, Some(60)), Some(60), "Retry-After lengthens");
        assert_eq!(
            next_delay(&[1], 1, Some(10_000_000)),
            Some(MAX_RETRY_DELAY_S),
            "within bounds"
        );
        assert_eq!(next_delay(&[], 1, None), None);
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = delivery_id("t", "e", "w", 1000);
        assert_eq!(a, delivery_id("t", "e", "w", 1000));
        assert_ne!(a, delivery_id("t", "e", "w2", 1000));
        assert_ne!(delivery_id("t", "ew", "", 1000), delivery_id("t", "e", "w", 1000));
        assert!(delivery_id("t", "e", "w", 1000) < delivery_id("t", "e", "w", 2000));
        assert!(crate::ids::is_id("dl", &a));
        assert_eq!(delivery_time(&a), Some(1000));
        assert!(delivery_id_bound(1000) <= a && a < delivery_id_bound(1001));
        assert_eq!(delivery_time("wh_123"), None);
    }
}
