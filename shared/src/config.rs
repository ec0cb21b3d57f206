//! Configuration, read once at start-up from the environment. A bad or missing variable
//! names itself, so mistakes show at cold start rather than mid-request.

use std::time::Duration;

use crate::health::BreakerPolicy;
use crate::ssrf::TargetPolicy;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

/// Who checks the bearer token (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The api function verifies it (`JWT_SECRET`, `JWT_JWKS_URL`): the default.
    Token,
    /// API Gateway's JWT authorizer verified it; the function reads the claims it passes on.
    ApiGateway,
}

#[derive(Clone)]
pub struct Config {
    pub jwt_secret: Option<Vec<u8>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// An OIDC issuer's JWKS: RS256 / ES256 tokens are verified with its keys.
    pub jwt_jwks_url: Option<String>,
    /// The claim naming the tenant (`JWT_TENANT_CLAIM`, default `tenant`; `sub` when absent).
    pub jwt_tenant_claim: String,
    pub auth_mode: AuthMode,
    pub webhooks_table: String,
    pub deliveries_table: String,
    pub events_queue_url: Option<String>,
    pub events_dlq_url: Option<String>,
    pub delivery_queue_url: Option<String>,
    pub delivery_dlq_url: Option<String>,
    pub policy: TargetPolicy,
    pub test_timeout: Duration,
    pub delivery_timeout: Duration,
    pub retry_schedule: Vec<u64>,
    pub retention_days: u64,
    /// The Lambda function's timeout (`FUNCTION_TIMEOUT_SECONDS`, set by the template), when
    /// known: a delivery timeout that cannot fit in it is refused at start.
    pub function_timeout: Option<Duration>,
    /// Deliveries a recover examines per page (`RECOVER_PAGE_SIZE`): one page in the API's
    /// request, then one per continuation message.
    pub recover_page: usize,
    /// `BREAKER_FAILURES`, `BREAKER_PROBE_SECONDS`, `AUTO_DISABLE_AFTER_SECONDS`.
    pub breaker: BreakerPolicy,
    /// How long ingest and the dispatcher serve a webhook or a subscriber list from their
    /// container's memory (`WEBHOOK_CACHE_SECONDS`, see `cache`); zero: not at all.
    pub webhook_cache: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The JWT secret is never printed.
        f.debug_struct("Config")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_jwks_url", &self.jwt_jwks_url)
            .field("jwt_tenant_claim", &self.jwt_tenant_claim)
            .field("auth_mode", &self.auth_mode)
            .field("webhooks_table", &self.webhooks_table)
            .field("deliveries_table", &self.deliveries_table)
            .field("events_queue_url", &self.events_queue_url)
            .field("events_dlq_url", &self.events_dlq_url)
            .field("delivery_queue_url", &self.delivery_queue_url)
            .field("delivery_dlq_url", &self.delivery_dlq_url)
            .field("policy", &self.policy)
            .field("test_timeout", &self.test_timeout)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("retention_days", &self.retention_days)
            .field("function_timeout", &self.function_timeout)
            .field("recover_page", &self.recover_page)
            .field("breaker", &self.breaker)
            .field("webhook_cache", &self.webhook_cache)
            .finish()
    }
}

/// The default backoff: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts over ~28 h).
pub const DEFAULT_RETRY_SCHEDULE: &[u64] = &[5, 300, 1800, 7200, 18000, 36000, 36000];
/// SQS cannot hide a message for longer than 12 hours.
pub const MAX_RETRY_DELAY_S: u64 = 12 * 3600;
pub const MAX_RETRY_ATTEMPTS: usize = 50;
/// A recover page: 100 deliveries are one Query (up to 1 MB) and 10 SendMessageBatch calls.
pub const DEFAULT_RECOVER_PAGE: usize = 100;
pub const MAX_RECOVER_PAGE: usize = 1000;
/// `WEBHOOK_CACHE_SECONDS` in the Lambda functions: a deleted webhook gets at most this many
/// seconds of deliveries, and one busy tenant's keys are read once per container per period.
pub const DEFAULT_WEBHOOK_CACHE_S: u64 = 5;

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
                None => Ok(default),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some("0" | "false" | "no" | "off") => Ok(false),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    why: format!("'{other}' is not true or false"),
                }),
            }
        };
        let seconds = |name: &'static str, default: u64, max: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(s) if (1..=max).contains(&s) => Ok(s),
                    _ => Err(ConfigError::Invalid {
                        name,
                        why: format!("'{v}' is not a whole number from 1 to {max}"),
                    }),
                },
            }
        };
        let config = Config {
            jwt_secret: get("JWT_SECRET").map(String::into_bytes),
            jwt_issuer: get("JWT_ISSUER"),
            jwt_audience: get("JWT_AUDIENCE"),
            jwt_jwks_url: get("JWT_JWKS_URL"),
            jwt_tenant_claim: get("JWT_TENANT_CLAIM").unwrap_or_else(|| crate::auth::DEFAULT_TENANT_CLAIM.into()),
            auth_mode: match get("AUTH_MODE").as_deref() {
                None | Some("token") => AuthMode::Token,
                Some("api-gateway") => AuthMode::ApiGateway,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "AUTH_MODE",
                        why: format!("'{other}' is not 'token' or 'api-gateway'"),
                    });
                }
            },
            webhooks_table: get("WEBHOOKS_TABLE").unwrap_or_else(|| "webhooks".into()),
            deliveries_table: get("DELIVERIES_TABLE").unwrap_or_else(|| "webhook-deliveries".into()),
            events_queue_url: get("EVENTS_QUEUE_URL"),
            events_dlq_url: get("EVENTS_DLQ_URL"),
            delivery_queue_url: get("DELIVERY_QUEUE_URL"),
            delivery_dlq_url: get("DELIVERY_DLQ_URL"),
            policy: TargetPolicy {
                allow_http: flag("ALLOW_HTTP_TARGETS", false)?,
                allow_private: flag("ALLOW_PRIVATE_TARGETS", false)?,
            },
            test_timeout: Duration::from_secs(seconds("TEST_TIMEOUT_SECONDS", 10, 25)?),
            delivery_timeout: Duration::from_secs(seconds("DELIVERY_TIMEOUT_SECONDS", 15, 60)?),
            retry_schedule: match get("RETRY_SCHEDULE_SECONDS") {
                None => DEFAULT_RETRY_SCHEDULE.to_vec(),
                Some(v) => parse_schedule(&v).map_err(|why| ConfigError::Invalid {
                    name: "RETRY_SCHEDULE_SECONDS",
                    why,
                })?,
            },
            retention_days: seconds("DELIVERY_RETENTION_DAYS", 30, 365)?,
            recover_page: seconds(
                "RECOVER_PAGE_SIZE",
                DEFAULT_RECOVER_PAGE as u64,
                MAX_RECOVER_PAGE as u64,
            )? as usize,
            function_timeout: match get("FUNCTION_TIMEOUT_SECONDS") {
                None => None,
                Some(_) => Some(Duration::from_secs(seconds("FUNCTION_TIMEOUT_SECONDS", 30, 900)?)),
            },
            breaker: BreakerPolicy {
                failures: seconds("BREAKER_FAILURES", 5, 1000)? as u32,
                probe: Duration::from_secs(seconds("BREAKER_PROBE_SECONDS", 60, MAX_RETRY_DELAY_S)?),
                disable_after: Duration::from_secs(seconds("AUTO_DISABLE_AFTER_SECONDS", 5 * 86_400, 365 * 86_400)?),
            },
            webhook_cache: Duration::from_secs(match get("WEBHOOK_CACHE_SECONDS") {
                None => DEFAULT_WEBHOOK_CACHE_S,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(s) if s <= crate::cache::MAX_CACHE_SECONDS => s,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "WEBHOOK_CACHE_SECONDS",
                            why: format!(
                                "'{v}' is not a whole number from 0 to {}",
                                crate::cache::MAX_CACHE_SECONDS
                            ),
                        });
                    }
                },
            }),
        };
        config.check()?;
        Ok(config)
    }

    /// Settings that are each valid but cannot work together, named with their values.
    fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.jwt_jwks_url {
            jwks_supported(url)?;
            crate::jwks::Jwks::new(url, crate::jwks::DEFAULT_COOLDOWN).map_err(|e| ConfigError::Invalid {
                name: "JWT_JWKS_URL",
                why: e.to_string(),
            })?;
            // A public IdP's keys sign tokens for all of its apps: only iss + aud make one ours.
            for (name, value) in [("JWT_ISSUER", &self.jwt_issuer), ("JWT_AUDIENCE", &self.jwt_audience)] {
                if value.is_none() {
                    return Err(ConfigError::Invalid {
                        name,
                        why: "is required when JWT_JWKS_URL is set".into(),
                    });
                }
            }
        }
        if self.jwt_tenant_claim.is_empty() || self.jwt_tenant_claim.len() > 256 {
            return Err(ConfigError::Invalid {
                name: "JWT_TENANT_CLAIM",
                why: "must be 1 to 256 characters".into(),
            });
        }
        if let Some(function) = self.function_timeout {
            // An attempt must end with time left to record it (the dispatcher keeps 2 s).
            let needed = self.delivery_timeout + Duration::from_secs(2);
            if needed > function {
                return Err(ConfigError::Invalid {
                    name: "DELIVERY_TIMEOUT_SECONDS",
                    why: format!(
                        "{} s plus 2 s to record the attempt does not fit in the function timeout \
                         FUNCTION_TIMEOUT_SECONDS={} s",
                        self.delivery_timeout.as_secs(),
                        function.as_secs()
                    ),
                });
            }
        }
        // Every retry must happen while the delivery's record and its event are kept.
        let span_s: u64 = self.retry_schedule.iter().map(|d| d + d / 4).sum();
        if span_s >= self.retention_days * 86_400 {
            return Err(ConfigError::Invalid {
                name: "DELIVERY_RETENTION_DAYS",
                why: format!(
                    "{} days is shorter than RETRY_SCHEDULE_SECONDS, which spans up to {span_s} s with jitter",
                    self.retention_days
                ),
            });
        }
        Ok(())
    }

    pub fn jwt_secret(&self) -> Result<&[u8], ConfigError> {
        self.jwt_secret.as_deref().ok_or(ConfigError::Missing("JWT_SECRET"))
    }

    /// The bearer-token verifier these settings describe. `secret` is the HS256 key to use
    /// (`JWT_SECRET`, or the local runner's generated one); `None` is fine with a JWKS or API
    /// Gateway's authorizer, and an error otherwise.
    pub fn verifier(&self, secret: Option<&[u8]>) -> Result<crate::auth::JwtVerifier, ConfigError> {
        use crate::auth::JwtVerifier;
        let verifier = match (self.auth_mode, &self.jwt_jwks_url) {
            (AuthMode::ApiGateway, _) => JwtVerifier::api_gateway(),
            (AuthMode::Token, Some(url)) => {
                let jwks =
                    crate::jwks::Jwks::new(url, crate::jwks::DEFAULT_COOLDOWN).map_err(|e| ConfigError::Invalid {
                        name: "JWT_JWKS_URL",
                        why: e.to_string(),
                    })?;
                // `check` made sure both are set.
                let (Some(issuer), Some(audience)) = (&self.jwt_issuer, &self.jwt_audience) else {
                    return Err(ConfigError::Missing("JWT_ISSUER"));
                };
                JwtVerifier::with_jwks(secret, std::sync::Arc::new(jwks), issuer, audience)
            }
            (AuthMode::Token, None) => JwtVerifier::new(
                secret.ok_or(ConfigError::Missing("JWT_SECRET"))?,
                self.jwt_issuer.as_deref(),
                self.jwt_audience.as_deref(),
            ),
        };
        Ok(verifier.tenant_claim(&self.jwt_tenant_claim))
    }

    pub fn events_queue_url(&self) -> Result<&str, ConfigError> {
        self.events_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("EVENTS_QUEUE_URL"))
    }

    pub fn events_dlq_url(&self) -> Result<&str, ConfigError> {
        self.events_dlq_url
            .as_deref()
            .ok_or(ConfigError::Missing("EVENTS_DLQ_URL"))
    }

    pub fn delivery_dlq_url(&self) -> Result<&str, ConfigError> {
        self.delivery_dlq_url
            .as_deref()
            .ok_or(ConfigError::Missing("DELIVERY_DLQ_URL"))
    }

    pub fn delivery_queue_url(&self) -> Result<&str, ConfigError> {
        self.delivery_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("DELIVERY_QUEUE_URL"))
    }
}

/// `"5,300,1800"` -> `[5, 300, 1800]`: N delays, so N + 1 attempts. `""` means no retries.
pub fn parse_schedule(s: &str) -> Result<Vec<u64>, String> {
    if s.trim().is_empty() || s.trim() == "none" {
        return Ok(Vec::new());
    }
    let delays = s
        .split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<u64>() {
                Ok(d) if d <= MAX_RETRY_DELAY_S => Ok(d),
                Ok(_) => Err(format!(
                    "delay {part} is over the 12 h SQS maximum ({MAX_RETRY_DELAY_S} s)"
                )),
                Err(_) => Err(format!("'{part}' is not a whole number of seconds")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if delays.len() > MAX_RETRY_ATTEMPTS {
        return Err(format!("at most {MAX_RETRY_ATTEMPTS} delays"));
    }
    Ok(delays)
}

/// RS256 / ES256 need jsonwebtoken's aws-lc-rs backend, which comes with the cargo feature `aws`
/// (every Lambda build, and the local runner's default). The quick-start build
/// (`--no-default-features`) verifies HS256 only (see `auth`), so it refuses a JWKS at startup
/// rather than every token later.
#[cfg(feature = "aws")]
fn jwks_supported(_url: &str) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(not(feature = "aws"))]
fn jwks_supported(url: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        name: "JWT_JWKS_URL",
        why: format!(
            "{url}: RS256/ES256 tokens need the cargo feature `aws` (jsonwebtoken's aws-lc-rs \
             backend), which this build leaves out; build with default features \
             (cargo run -p webhooks-local), or use JWT_SECRET (HS256)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_strict() {
        let c = cfg(&[]).expect("defaults");
        assert_eq!(
            c.policy,
            TargetPolicy {
                allow_http: false,
                allow_private: false
            }
        );
        assert_eq!(c.retry_schedule, DEFAULT_RETRY_SCHEDULE);
        assert_eq!(c.jwt_secret(), Err(ConfigError::Missing("JWT_SECRET")));
    }

    #[test]
    fn bad_values_name_themselves() {
        let e = cfg(&[("ALLOW_PRIVATE_TARGETS", "maybe")]).expect_err("invalid");
        assert!(e.to_string().starts_with("ALLOW_PRIVATE_TARGETS"));
        let e = cfg(&[("RETRY_SCHEDULE_SECONDS", "1,x")]).expect_err("invalid");
        assert!(e.to_string().contains("'x'"));
        assert!(cfg(&[("RETRY_SCHEDULE_SECONDS", "50000")]).is_err());
        assert_eq!(
            cfg(&[("RETRY_SCHEDULE_SECONDS", "1, 2,3")]).expect("ok").retry_schedule,
            vec![1, 2, 3]
        );
        assert!(cfg(&[("TEST_TIMEOUT_SECONDS", "30")]).is_err());
        assert_eq!(c_default_breaker(), BreakerPolicy::default());
        let e = cfg(&[("BREAKER_FAILURES", "0")]).expect_err("invalid");
        assert!(e.to_string().starts_with("BREAKER_FAILURES"), "{e}");
        assert!(cfg(&[("BREAKER_PROBE_SECONDS", "43201")]).is_err());
        let c = cfg(&[("AUTO_DISABLE_AFTER_SECONDS", "3"), ("BREAKER_PROBE_SECONDS", "1")]).expect("ok");
        assert_eq!(c.breaker.disable_after, Duration::from_secs(3));
        assert_eq!(c.breaker.probe, Duration::from_secs(1));
        assert_eq!(cfg(&[]).expect("defaults").webhook_cache, Duration::from_secs(5));
        assert_eq!(
            cfg(&[("WEBHOOK_CACHE_SECONDS", "0")]).expect("ok").webhook_cache,
            Duration::ZERO
        );
        for bad in ["61", "-1", "5s"] {
            let e = cfg(&[("WEBHOOK_CACHE_SECONDS", bad)]).expect_err("invalid");
            assert!(e.to_string().starts_with("WEBHOOK_CACHE_SECONDS is invalid"), "{e}");
        }
    }

    fn c_default_breaker() -> BreakerPolicy {
        cfg(&[]).expect("defaults").breaker
    }

    #[test]
    fn a_jwks_needs_an_issuer_an_audience_and_a_safe_url() {
        let jwks = ("JWT_JWKS_URL", "https://issuer.example/.well-known/jwks.json");
        let e = cfg(&[jwks]).expect_err("no issuer");
        assert!(
            e.to_string()
                .starts_with("JWT_ISSUER is invalid: is required when JWT_JWKS_URL"),
            "{e}"
        );
        let e = cfg(&[jwks, ("JWT_ISSUER", "https://issuer.example/")]).expect_err("no audience");
        assert!(e.to_string().starts_with("JWT_AUDIENCE"), "{e}");
        let full = [
            jwks,
            ("JWT_ISSUER", "https://issuer.example/"),
            ("JWT_AUDIENCE", "webhooks"),
        ];
        let c = cfg(&full).expect("valid");
        assert!(c.verifier(None).is_ok(), "no JWT_SECRET needed with a JWKS");
        let e = cfg(&[("JWT_JWKS_URL", "http://issuer.example/jwks"), full[1], full[2]]).expect_err("http");
        assert!(e.to_string().starts_with("JWT_JWKS_URL"), "{e}");
        assert_eq!(
            cfg(&[]).expect("defaults").verifier(None).map(|_| ()),
            Err(ConfigError::Missing("JWT_SECRET"))
        );
        let gw = cfg(&[("AUTH_MODE", "api-gateway")]).expect("valid");
        assert_eq!(gw.auth_mode, AuthMode::ApiGateway);
        assert!(gw.verifier(None).expect("no secret needed").from_api_gateway());
        assert!(cfg(&[("AUTH_MODE", "cognito")]).is_err());
    }

    #[test]
    fn settings_that_cannot_work_together_fail_naming_both() {
        let e = cfg(&[("DELIVERY_TIMEOUT_SECONDS", "30"), ("FUNCTION_TIMEOUT_SECONDS", "30")]).expect_err("too long");
        let text = e.to_string();
        assert!(
            text.contains("DELIVERY_TIMEOUT_SECONDS") && text.contains("FUNCTION_TIMEOUT_SECONDS=30"),
            "{text}"
        );
        assert!(cfg(&[("DELIVERY_TIMEOUT_SECONDS", "15"), ("FUNCTION_TIMEOUT_SECONDS", "30")]).is_ok());
        let e = cfg(&[
            ("DELIVERY_RETENTION_DAYS", "1"),
            ("RETRY_SCHEDULE_SECONDS", "43200,43200"),
        ])
        .expect_err("span");
        assert!(e.to_string().contains("RETRY_SCHEDULE_SECONDS"), "{e}");
    }
}
