//! An endpoint's health, its circuit breaker and auto-disable: pure state transitions that the
//! dispatcher applies and a store writes with a compare-and-set on `rev`.
//!
//! Written only on a change of state: a success on a healthy endpoint changes nothing (no
//! write on the happy path); a failure, a recovery, a probe claimed and a disable do.

use std::time::Duration;

/// The breaker's and auto-disable's settings (`BREAKER_FAILURES`, `BREAKER_PROBE_SECONDS`,
/// `AUTO_DISABLE_AFTER_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts that open the breaker.
    pub failures: u32,
    /// The first interval between probes of an open breaker; each failed probe doubles it.
    pub probe: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    pub disable_after: Duration,
}

/// Probe intervals double per failed probe up to this (or the first interval, if longer): an
/// endpoint that stays dead is tried about once an hour until it is disabled.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            probe: Duration::from_secs(60),
            disable_after: Duration::from_secs(5 * 86_400),
        }
    }
}

impl BreakerPolicy {
    /// The wait before the probe after `probes` probes have failed.
    pub fn probe_interval(&self, probes: u32) -> Duration {
        let cap = MAX_PROBE_INTERVAL.max(self.probe);
        self.probe.saturating_mul(1u32 << probes.min(16)).min(cap)
    }
}

/// What the dispatcher knows of an endpoint. `Default` is a healthy endpoint never tried.
/// (Serde: the durable store's record format.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Health {
    /// Bumped by every write: the compare-and-set stores check it.
    pub rev: u64,
    pub consecutive_failures: u32,
    /// The first failure after the last success (ms), while failing.
    pub failing_since: Option<u64>,
    /// The last success that changed the state (the first ever, or the first after failures):
    /// a steady run of successes is not written, as that would cost a write per delivery.
    pub last_success_at: Option<u64>,
    pub last_failure_at: Option<u64>,
    pub last_error: Option<String>,
    /// While the breaker is open: when the next probe may go (ms).
    pub breaker_until: Option<u64>,
    /// Probes made since the breaker opened (the probe interval grows with them).
    pub probes: u32,
}

/// Why and when an endpoint was disabled by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub at: u64,
}

/// What a job may do, given the endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The breaker is closed: attempt.
    Closed,
    /// The breaker is open and a probe is due: claim it with this health, then attempt.
    Probe(Health),
    /// The breaker is open: defer the job until this time (ms), without a POST.
    Wait(u64),
}

/// The longest error kept in the health record.
pub const MAX_ERROR_LEN: usize = 256;

impl Health {
    /// Open from the failure that reached the threshold until a success; kept as the next
    /// probe time, so readers (the API) need not know the threshold.
    pub fn is_open(&self) -> bool {
        self.breaker_until.is_some()
    }

    pub fn gate(&self, policy: &BreakerPolicy, now: u64) -> Gate {
        match self.breaker_until {
            None => Gate::Closed,
            Some(until) if until > now => Gate::Wait(until),
            Some(_) => {
                let next = now + policy.probe_interval(self.probes).as_millis() as u64;
                Gate::Probe(Health {
                    rev: self.rev + 1,
                    breaker_until: Some(next),
                    probes: self.probes + 1,
                    ..self.clone()
                })
            }
        }
    }

    /// After a successful attempt: `None` when nothing changes (healthy already).
    pub fn after_success(&self, now: u64) -> Option<Health> {
        if self.consecutive_failures == 0 && self.last_success_at.is_some() && self.breaker_until.is_none() {
            return None;
        }
        Some(Health {
            rev: self.rev + 1,
            last_success_at: Some(now),
            last_failure_at: self.last_failure_at,
            last_error: self.last_error.clone(),
            ..Health::default()
        })
    }

    /// After a failed attempt: one more consecutive failure; the breaker opens at the
    /// threshold (a failed probe keeps the next probe time its claim set).
    pub fn after_failure(&self, policy: &BreakerPolicy, now: u64, error: &str) -> Health {
        let failures = self.consecutive_failures.saturating_add(1);
        let breaker_until = match self.breaker_until {
            Some(t) => Some(t),
            None if failures >= policy.failures => Some(now + policy.probe_interval(0).as_millis() as u64),
            None => None,
        };
        Health {
            rev: self.rev + 1,
            consecutive_failures: failures,
            failing_since: self.failing_since.or(Some(now)),
            last_success_at: self.last_success_at,
            last_failure_at: Some(now),
            last_error: Some(error.chars().take(MAX_ERROR_LEN).collect()),
            breaker_until,
            probes: self.probes,
        }
    }

    /// True when the endpoint has failed, without a single success, for the policy's time.
    pub fn due_for_disable(&self, policy: &BreakerPolicy, now: u64) -> bool {
        self.consecutive_failures > 0
            && self
                .failing_since
                .is_some_and(|since| now.saturating_sub(since) >= policy.disable_after.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            probe: Duration::from_secs(10),
            disable_after: Duration::from_secs(100),
        }
    }

    #[test]
    fn failures_open_the_breaker_and_a_success_closes_it() {
        let p = policy();
        let mut h = Health::default();
        assert_eq!(h.gate(&p, 0), Gate::Closed);
        for i in 1..=3u64 {
            h = h.after_failure(&p, i * 1000, "Receiver answered HTTP 500");
        }
        assert_eq!(h.consecutive_failures, 3);
        assert_eq!(h.failing_since, Some(1000));
        assert_eq!(h.breaker_until, Some(13_000));
        assert_eq!(h.gate(&p, 5000), Gate::Wait(13_000));
        let Gate::Probe(claimed) = h.gate(&p, 13_000) else {
            panic!("a probe is due")
        };
        assert_eq!(claimed.probes, 1);
        assert_eq!(claimed.breaker_until, Some(23_000));
        assert_eq!(claimed.rev, h.rev + 1);
        // A failed probe keeps the claim's next probe time; the next interval is longer.
        let failed = claimed.after_failure(&p, 13_500, "Timed out");
        assert_eq!(failed.gate(&p, 20_000), Gate::Wait(23_000));
        let Gate::Probe(second) = failed.gate(&p, 23_000) else {
            panic!("second probe")
        };
        assert_eq!(second.breaker_until, Some(23_000 + 20_000));
        let healed = second.after_success(24_000).expect("a change");
        assert_eq!(healed.gate(&p, 24_000), Gate::Closed);
        assert_eq!(healed.consecutive_failures, 0);
        assert_eq!(healed.failing_since, None);
        assert_eq!(healed.last_success_at, Some(24_000));
        assert_eq!(
            healed.last_error.as_deref(),
            Some("Timed out"),
            "kept for the owner to read"
        );
        assert_eq!(healed.after_success(25_000), None, "no write on the happy path");
    }

    #[test]
    fn probe_intervals_grow_and_are_bounded() {
        let p = policy();
        assert_eq!(p.probe_interval(0), Duration::from_secs(10));
        assert_eq!(p.probe_interval(3), Duration::from_secs(80));
        assert_eq!(p.probe_interval(40), MAX_PROBE_INTERVAL);
        let long = BreakerPolicy {
            probe: Duration::from_secs(7200),
            ..p
        };
        assert_eq!(long.probe_interval(5), Duration::from_secs(7200));
    }

    #[test]
    fn disable_is_due_after_failing_without_success_for_the_policys_time() {
        let p = policy();
        let h = Health::default().after_failure(&p, 1_000, "x");
        assert!(!h.due_for_disable(&p, 100_999));
        assert!(h.due_for_disable(&p, 101_000));
        let healed = h.after_success(50_000).expect("change");
        assert!(!healed.due_for_disable(&p, 1_000_000));
        let long_error = "é".repeat(1000);
        let h = Health::default().after_failure(&p, 1, &long_error);
        assert_eq!(h.last_error.expect("error").chars().count(), MAX_ERROR_LEN);
    }
}
