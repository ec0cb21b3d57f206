//! Times as the guide writes them: ISO-8601 UTC with milliseconds and `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

pub fn iso_ms(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (any offset) to milliseconds since the epoch.
pub fn parse_iso(s: &str) -> Option<u64> {
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_guide() {
        assert_eq!(iso_ms(1_747_862_818_211), "2025-05-21T21:26:58.211Z");
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_iso("2025-05-21T21:26:58.211Z"), Some(1_747_862_818_211));
        assert_eq!(parse_iso("2025-05-21T23:26:58.211+02:00"), Some(1_747_862_818_211));
        assert_eq!(parse_iso("yesterday"), None);
    }
}

/// The time as the pipeline sees it: the system clock, moved forward by `advance`. The
/// in-memory queue and the dispatcher share one, so tests of long retry schedules take no
/// wall-clock time; in production nothing advances it.
#[derive(Clone, Default, Debug)]
pub struct Clock {
    skew_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set for a clock that only `advance` moves (the bench's capacity simulation, whose
    /// simulated seconds must not stretch with the machine's speed).
    stopped_at: Option<u64>,
}

impl Clock {
    /// A clock standing at `ms` until advanced.
    pub fn stopped_at(ms: u64) -> Clock {
        Clock {
            stopped_at: Some(ms),
            ..Clock::default()
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.stopped_at.unwrap_or_else(now_ms) + self.skew_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The time it stands at before any `advance`, for a clock only `advance` moves.
    pub fn stopped(&self) -> Option<u64> {
        self.stopped_at
    }

    /// How far this clock is ahead of the system's.
    pub fn skew(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.skew_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}
