//! Webhooks and the parsing of what clients send about them. Values leave this module valid.

use serde_json::{Map, Value};

use crate::event_types::{EVENT_TYPES, EventFilter, EventType};
pub use crate::health::{Disabled, Health};
use crate::ssrf::{self, TargetPolicy};

/// At most this many entries in `events` (before duplicates are folded).
pub const MAX_EVENTS: usize = 64;
/// Secrets a client chooses are `MIN_SECRET_LEN` to this many bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// A secret a client chooses must be at least this long: a short one can be guessed offline
/// from one signed delivery. (Generated ones are `whsec_` + 44 characters.)
pub const MIN_SECRET_LEN: usize = 16;
/// A secret in the Standard Webhooks form, `whsec_<base64>`, must decode to this many bytes,
/// as that specification (and its libraries) define it.
pub const STANDARD_SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// The longest `id` (in characters) a producer may give an event.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// An event's or a test's payload, written as compact JSON, is at most this many bytes.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

// Serde is the durable store's record format (`sqlite`): a field added here rides along, and
// rows written before it read back with the field's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Webhook {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Subscription filters, duplicates folded, in the order first given.
    pub events: Vec<String>,
    pub secret: Option<String>,
    /// Secrets replaced by a rotation that still sign until they expire, newest first (at most
    /// `MAX_PREVIOUS_SECRETS`). Expired ones may linger until the next write; nothing reads them.
    pub previous_secrets: Vec<PreviousSecret>,
    pub active: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Bumped by every update; stores write conditionally on it.
    pub version: u64,
    /// Written by the dispatcher on a change of state only (see `health`), never by `update`
    /// unless the new value differs from the old (a re-enable resets it).
    pub health: Health,
    /// Set when the dispatcher disabled the webhook (`active: false`); cleared on re-enable.
    pub disabled: Option<Disabled>,
}

/// A secret that a rotation replaced, valid until `expires_at` (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: u64,
}

/// `overlapSeconds` of a rotation when not given: a day, as Svix and Stripe default to.
pub const DEFAULT_OVERLAP_S: u64 = 24 * 3600;
/// The longest overlap: a week (Stripe's longest choice). Longer would keep a replaced, maybe
/// leaked, secret valid past any sensible migration.
pub const MAX_OVERLAP_S: u64 = 7 * 24 * 3600;
/// At most this many replaced secrets sign beside the current one, so a delivery carries at
/// most four `v1,` signatures.
pub const MAX_PREVIOUS_SECRETS: usize = 3;

impl Webhook {
    pub fn subscribes_to(&self, event: EventType) -> bool {
        let filters = event.matching_filters();
        self.events.iter().any(|e| filters.contains(e))
    }

    /// The event types whose subscriber index entries this webhook should have: every type its
    /// filters match (wildcards expanded when the webhook is written, so that fan-out is one
    /// lookup by exact type), while it is active; none while it is not.
    pub fn subscribed_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        EVENT_TYPES
            .iter()
            .map(|(name, _)| *name)
            .filter(move |name| self.active && EventType::parse(name).is_some_and(|e| self.subscribes_to(e)))
    }

    /// The previous secrets still valid at `now` (ms), newest first.
    pub fn valid_previous(&self, now: u64) -> impl Iterator<Item = &PreviousSecret> {
        self.previous_secrets.iter().filter(move |p| p.expires_at > now)
    }

    /// Every secret that signs a request sent at `now` (ms): the current one first, then the
    /// previous ones still valid, newest first. Empty for an unsigned webhook.
    pub fn signing_secrets(&self, now: u64) -> Vec<&str> {
        self.signing_secrets_iter(now).collect()
    }

    /// `signing_secrets` without the `Vec`: what every delivery attempt asks.
    pub fn signing_secrets_iter(&self, now: u64) -> impl Iterator<Item = &str> + Clone {
        // Previous secrets sign only beside a current one (a PUT of `null` drops them all).
        let previous: &[PreviousSecret] = if self.secret.is_some() {
            &self.previous_secrets
        } else {
            &[]
        };
        self.secret.as_deref().into_iter().chain(
            previous
                .iter()
                .filter(move |p| p.expires_at > now)
                .map(|p| p.secret.as_str()),
        )
    }

    /// The webhook after a rotation to `secret` at `now`: the secrets valid now stay valid
    /// for `overlap_s` more (never longer than they already were), so an overlap of 0 revokes
    /// them all at once. `None` when that would keep more than `MAX_PREVIOUS_SECRETS`.
    pub fn rotated(&self, secret: String, overlap_s: u64, now: u64) -> Option<Webhook> {
        let until = now + overlap_s * 1000;
        let mut previous: Vec<PreviousSecret> = Vec::new();
        if let Some(current) = &self.secret
            && overlap_s > 0
            && *current != secret
        {
            previous.push(PreviousSecret {
                secret: current.clone(),
                expires_at: until,
            });
        }
        for p in self.valid_previous(now) {
            let expires_at = p.expires_at.min(until);
            if expires_at > now && p.secret != secret && previous.iter().all(|q| q.secret != p.secret) {
                previous.push(PreviousSecret {
                    secret: p.secret.clone(),
                    expires_at,
                });
            }
        }
        (previous.len() <= MAX_PREVIOUS_SECRETS).then(|| Webhook {
            secret: Some(secret),
            previous_secrets: previous,
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        })
    }
}

/// One problem with a request, naming the field (`events[2]`, `url`, or `""` for the body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Invalid = Vec<FieldError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub active: bool,
}

/// A partial update: `None` keeps the stored value. `secret: Some(None)` removes the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<Option<String>>,
    pub active: Option<bool>,
}

impl WebhookPatch {
    pub fn apply(&self, w: &Webhook, now: u64) -> Webhook {
        // Re-enabling starts over: the disable's reason goes, and the health its failures
        // built up is reset (else the breaker would still be open).
        let reenabled = self.active == Some(true) && !w.active;
        Webhook {
            url: self.url.clone().unwrap_or_else(|| w.url.clone()),
            events: self.events.clone().unwrap_or_else(|| w.events.clone()),
            secret: self.secret.clone().unwrap_or_else(|| w.secret.clone()),
            // Setting or removing the secret here replaces it at once: rotate-secret is the
            // way to keep the old one valid for a while.
            previous_secrets: match self.secret {
                Some(_) => Vec::new(),
                None => w.previous_secrets.clone(),
            },
            active: self.active.unwrap_or(w.active),
            updated_at: now,
            version: w.version + 1,
            health: if reenabled {
                Health {
                    rev: w.health.rev + 1,
                    ..Health::default()
                }
            } else {
                w.health.clone()
            },
            disabled: if reenabled { None } else { w.disabled.clone() },
            ..w.clone()
        }
    }
}

/// `POST /api/webhooks/{id}/rotate-secret`: the new secret (`None`: generate one) and how long
/// the secrets valid now stay valid beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    pub secret: Option<String>,
    pub overlap_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestRequest {
    pub url: String,
    pub event: EventType,
    pub payload: Value,
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventSubmission {
    pub event: EventType,
    pub payload: Value,
    pub id: Option<String>,
}

/// Reads the fields of one JSON object, collecting every problem rather than the first.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: Invalid,
}

impl<'a> Fields<'a> {
    fn of(body: &'a Value) -> Result<Self, Invalid> {
        match body {
            Value::Object(map) => Ok(Fields {
                map,
                errors: Vec::new(),
            }),
            other => Err(vec![FieldError::new(
                "",
                format!("body must be a JSON object, not {}", kind(other)),
            )]),
        }
    }

    fn reject_unknown(&mut self, known: &[&str], ignored: &[&str]) {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) && !ignored.contains(&key.as_str()) {
                self.errors.push(FieldError::new(
                    key.as_str(),
                    format!("unknown field; expected one of: {}", known.join(", ")),
                ));
            }
        }
    }

    fn present(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    fn string(&mut self, name: &str, required: bool) -> Option<&'a str> {
        match self.map.get(name) {
            None if required => {
                self.errors.push(FieldError::new(name, "is required"));
                None
            }
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.errors
                    .push(FieldError::new(name, format!("must be a string, not {}", kind(other))));
                None
            }
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Invalid> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(vec![FieldError::new("", "invalid request")]),
            _ => Err(self.errors),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_url(f: &mut Fields, raw: &str, policy: TargetPolicy) -> Option<String> {
    match ssrf::check_url(raw, policy) {
        Ok(_) => Some(raw.to_string()),
        Err(e) => {
            e.log_setting(&truncate(raw, 200));
            f.errors.push(FieldError::new("url", e.to_string()));
            None
        }
    }
}

fn parse_events(f: &mut Fields, v: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        f.errors.push(FieldError::new(
            "events",
            format!("must be an array of event types, not {}", kind(v)),
        ));
        return None;
    };
    if items.is_empty() {
        f.errors
            .push(FieldError::new("events", "must name at least one event type"));
        return None;
    }
    if items.len() > MAX_EVENTS {
        f.errors.push(FieldError::new(
            "events",
            format!("must have at most {MAX_EVENTS} entries"),
        ));
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let before = f.errors.len();
    for (i, item) in items.iter().enumerate() {
        let field = format!("events[{i}]");
        match item {
            Value::String(s) => match EventFilter::parse(s) {
                Some(filter) if !out.iter().any(|e| e == filter.as_str()) => out.push(filter.as_str().to_string()),
                Some(_) => {}
                None => f.errors.push(FieldError::new(
                    field,
                    format!(
                        "unknown event type '{}'; GET /api/event-types lists them",
                        truncate(s, 100)
                    ),
                )),
            },
            other => f
                .errors
                .push(FieldError::new(field, format!("must be a string, not {}", kind(other)))),
        }
    }
    (f.errors.len() == before).then_some(out)
}

fn parse_secret(f: &mut Fields, v: &Value, nullable: bool) -> Option<Option<String>> {
    // A rotation cannot switch signing off (`nullable` false): say only what it accepts.
    let hint = if nullable {
        "omit it to have one generated, or send null for unsigned deliveries"
    } else {
        "omit it to have one generated"
    };
    let problem = match v {
        Value::Null if nullable => return Some(None),
        Value::String(s) if s.len() < MIN_SECRET_LEN => {
            format!("must be at least {MIN_SECRET_LEN} characters ({hint})")
        }
        Value::String(s) if s.len() > MAX_SECRET_LEN => format!("must be at most {MAX_SECRET_LEN} bytes"),
        Value::String(s) => match s.strip_prefix("whsec_") {
            // Standard Webhooks libraries decode what follows `whsec_`; a secret that looks like
            // theirs but is not would verify with no library.
            Some(b64) => {
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(key) if STANDARD_SECRET_BYTES.contains(&key.len()) => return Some(Some(s.clone())),
                    _ => format!(
                        "a secret starting with whsec_ must be followed by the base64 of 24 to 64 bytes (Standard Webhooks); {hint}"
                    ),
                }
            }
            None => return Some(Some(s.clone())),
        },
        other => {
            let want = if nullable { "a string or null" } else { "a string" };
            format!("must be {want}, not {}", kind(other))
        }
    };
    f.errors.push(FieldError::new("secret", problem));
    None
}

fn parse_bool(f: &mut Fields, name: &str, v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            f.errors
                .push(FieldError::new(name, format!("must be a boolean, not {}", kind(other))));
            None
        }
    }
}

fn parse_payload(f: &mut Fields, required: bool) -> Option<Value> {
    match f.present("payload") {
        None if required => {
            f.errors.push(FieldError::new("payload", "is required"));
            None
        }
        None => Some(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => {
            let size = crate::jsjson::to_vec(v).len();
            if size > MAX_PAYLOAD_BYTES {
                f.errors.push(FieldError::new(
                    "payload",
                    format!("is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"),
                ));
                return None;
            }
            Some(v.clone())
        }
        Some(other) => {
            f.errors.push(FieldError::new(
                "payload",
                format!("must be a JSON object, not {}", kind(other)),
            ));
            None
        }
    }
}

fn parse_event_type(f: &mut Fields, name: &str) -> Option<EventType> {
    let s = f.string(name, true)?;
    match EventType::parse(s) {
        Some(e) => Some(e),
        None => {
            f.errors.push(FieldError::new(
                name,
                format!(
                    "unknown event type '{}'; GET /api/event-types lists them",
                    truncate(s, 100)
                ),
            ));
            None
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `POST /api/webhooks`: `{url, events, secret?, active?}`.
pub fn parse_create(body: &Value, policy: TargetPolicy) -> Result<NewWebhook, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["url", "events", "secret", "active"], &[]);
    let url = f.string("url", true).and_then(|u| parse_url(&mut f, u, policy));
    let events = match f.present("events") {
        Some(v) => parse_events(&mut f, v),
        None => {
            f.errors.push(FieldError::new("events", "is required"));
            None
        }
    };
    // Omitted: a generated secret, returned once, so that every delivery is signed unless the
    // client opts out with `null` (a receiver that verifies fails on an unsigned delivery).
    let secret = match f.present("secret") {
        Some(v) => parse_secret(&mut f, v, true),
        None => Some(Some(crate::signing::generate_secret())),
    };
    let active = match f.present("active") {
        Some(v) => parse_bool(&mut f, "active", v),
        None => Some(true),
    };
    let value = match (url, events, secret, active) {
        (Some(url), Some(events), Some(secret), Some(active)) => Some(NewWebhook {
            url,
            events,
            secret,
            active,
        }),
        _ => None,
    };
    f.finish(value)
}

/// `PUT /api/webhooks/{id}`: any of `{url, events, secret, active}`. The read-only fields of
/// a webhook (`id`, `createdAt`, `updatedAt`, `hasSecret`, `previousSecrets`, `health`,
/// `disabledReason`, `disabledAt`) are ignored, so a client can send back what it got.
pub fn parse_update(body: &Value, policy: TargetPolicy) -> Result<WebhookPatch, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(
        &["url", "events", "secret", "active"],
        &[
            "id",
            "createdAt",
            "updatedAt",
            "hasSecret",
            "previousSecrets",
            "health",
            "disabledReason",
            "disabledAt",
        ],
    );
    let mut patch = WebhookPatch::default();
    let mut ok = true;
    if let Some(v) = f.present("url") {
        patch.url = match v {
            Value::String(u) => parse_url(&mut f, u, policy),
            other => {
                f.errors
                    .push(FieldError::new("url", format!("must be a string, not {}", kind(other))));
                None
            }
        };
        ok &= patch.url.is_some();
    }
    if let Some(v) = f.present("events") {
        patch.events = parse_events(&mut f, v);
        ok &= patch.events.is_some();
    }
    if let Some(v) = f.present("secret") {
        patch.secret = parse_secret(&mut f, v, true);
        ok &= patch.secret.is_some();
    }
    if let Some(v) = f.present("active") {
        patch.active = parse_bool(&mut f, "active", v);
        ok &= patch.active.is_some();
    }
    f.finish(ok.then_some(patch))
}

/// `POST /api/webhooks/{id}/rotate-secret`: `{secret?, overlapSeconds?}`; an absent or empty
/// body rotates to a generated secret with the default overlap.
pub fn parse_rotate(body: &Value) -> Result<RotateRequest, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["secret", "overlapSeconds"], &[]);
    let secret = match f.present("secret") {
        Some(v) => parse_secret(&mut f, v, false),
        None => Some(None),
    };
    let overlap_s = match f.present("overlapSeconds") {
        None => Some(DEFAULT_OVERLAP_S),
        Some(v) => match v.as_u64().filter(|s| *s <= MAX_OVERLAP_S) {
            Some(s) => Some(s),
            None => {
                f.errors.push(FieldError::new(
                    "overlapSeconds",
                    format!("must be a whole number of seconds from 0 to {MAX_OVERLAP_S} (7 days)"),
                ));
                None
            }
        },
    };
    let value = match (secret, overlap_s) {
        (Some(secret), Some(overlap_s)) => Some(RotateRequest { secret, overlap_s }),
        _ => None,
    };
    f.finish(value)
}

/// `POST /api/webhooks/test`: `{url, event, payload, secret?}`. The URL gets the syntactic
/// checks here; the address guard runs when the request is sent.
pub fn parse_test(body: &Value, policy: TargetPolicy) -> Result<TestRequest, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["url", "event", "payload", "secret"], &[]);
    let syntax_only = TargetPolicy {
        allow_private: true,
        ..policy
    };
    let url = f.string("url", true).and_then(|u| parse_url(&mut f, u, syntax_only));
    let event = parse_event_type(&mut f, "event");
    let payload = parse_payload(&mut f, true);
    let secret = match f.present("secret") {
        Some(v) => parse_secret(&mut f, v, true),
        None => Some(None),
    };
    let value = match (url, event, payload, secret) {
        (Some(url), Some(event), Some(payload), Some(secret)) => Some(TestRequest {
            url,
            event,
            payload,
            secret,
        }),
        _ => None,
    };
    f.finish(value)
}

/// `POST /api/events`: `{event, payload, id?}`. The tenant comes from the token, never the body.
pub fn parse_event_submission(body: &Value) -> Result<EventSubmission, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["event", "payload", "id"], &[]);
    let event = parse_event_type(&mut f, "event");
    let payload = parse_payload(&mut f, true);
    let id = match f.string("id", false) {
        Some(id) if id.is_empty() || id.chars().count() > MAX_EVENT_ID_LEN || id.chars().any(char::is_control) => {
            f.errors.push(FieldError::new(
                "id",
                format!("must be 1 to {MAX_EVENT_ID_LEN} characters without control characters"),
            ));
            None
        }
        Some(id) => Some(Some(id.to_string())),
        None if f.errors.iter().any(|e| e.field == "id") => None,
        None => Some(None),
    };
    let value = match (event, payload, id) {
        (Some(event), Some(payload), Some(id)) => Some(EventSubmission { event, payload, id }),
        _ => None,
    };
    f.finish(value)
}

/// `POST /api/webhooks/{id}/test`: `{event?, payload?}` (an empty body is `{}`). Without
/// `event`, the first type the webhook subscribes to; without `payload`, `{"test": true}`.
pub fn parse_registered_test(body: &Value, webhook: &Webhook) -> Result<(EventType, Value), Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["event", "payload"], &[]);
    let event = match f.present("event") {
        Some(_) => parse_event_type(&mut f, "event"),
        None => crate::event_types::EVENT_TYPES
            .iter()
            .filter_map(|(name, _)| EventType::parse(name))
            .find(|e| webhook.subscribes_to(*e)),
    };
    let payload = match f.present("payload") {
        Some(_) => parse_payload(&mut f, true),
        None => Some(serde_json::json!({"test": true})),
    };
    let value = match (event, payload) {
        (Some(e), Some(p)) => Some((e, p)),
        _ => None,
    };
    f.finish(value)
}

/// `POST /api/webhooks/{id}/recover`: `{since, until?}`, ISO-8601 times of events; `until`
/// defaults to `now_ms` and may not be before `since`. Returns the window in ms, inclusive.
pub fn parse_recover(body: &Value, now_ms: u64) -> Result<(u64, u64), Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(&["since", "until"], &[]);
    let time = |f: &mut Fields, name: &str, required: bool| match f.string(name, required) {
        Some(s) => match crate::time::parse_iso(s) {
            Some(ms) => Some(Some(ms)),
            None => {
                f.errors.push(FieldError::new(
                    name,
                    "must be an ISO-8601 time such as 2025-05-21T21:27:09.442Z",
                ));
                None
            }
        },
        None if f.errors.iter().any(|e| e.field == name) => None,
        None => Some(None),
    };
    let since = time(&mut f, "since", true).flatten();
    let until = time(&mut f, "until", false).map(|u| u.unwrap_or(now_ms));
    let value = match (since, until) {
        (Some(since), Some(until)) if until < since => {
            f.errors.push(FieldError::new("until", "must not be before since"));
            None
        }
        (Some(since), Some(until)) => Some((since, until)),
        _ => None,
    };
    f.finish(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recover_takes_a_window() {
        let now = 1_747_862_829_442;
        assert_eq!(
            parse_recover(&json!({"since": "2025-05-21T21:27:09.442Z"}), now + 5),
            Ok((now, now + 5))
        );
        assert_eq!(
            parse_recover(
                &json!({"since": "2025-05-21T21:27:09.442Z", "until": "2025-05-21T21:27:09.443Z"}),
                0
            ),
            Ok((now, now + 1))
        );
        assert_eq!(fields(parse_recover(&json!({}), now)), vec!["since"]);
        assert_eq!(fields(parse_recover(&json!({"since": "soon"}), now)), vec!["since"]);
        assert_eq!(fields(parse_recover(&json!({"since": 5}), now)), vec!["since"]);
        assert_eq!(
            fields(parse_recover(
                &json!({"since": "2025-05-21T21:27:09.442Z", "until": "2025-05-20T00:00:00Z"}),
                now
            )),
            vec!["until"]
        );
        assert_eq!(
            fields(parse_recover(
                &json!({"since": "2025-05-21T21:27:09.442Z", "x": 1}),
                now
            )),
            vec!["x"]
        );
    }

    const P: TargetPolicy = TargetPolicy {
        allow_http: false,
        allow_private: false,
    };

    fn fields(r: Result<impl std::fmt::Debug, Invalid>) -> Vec<String> {
        r.expect_err("should be invalid").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn create_accepts_the_guides_example_and_folds_duplicates() {
        let body = json!({"url": "https://example.com/webhook",
            "events": ["workflow.execution.completed", "task.execution.failed", "task.execution.failed", "workflow.*"],
            "secret": "your-webhook-secret"});
        let w = parse_create(&body, P).expect("valid");
        assert_eq!(
            w.events,
            vec!["workflow.execution.completed", "task.execution.failed", "workflow.*"]
        );
        assert!(w.active);
        assert_eq!(w.secret.as_deref(), Some("your-webhook-secret"));
    }

    #[test]
    fn create_names_every_bad_field() {
        assert_eq!(fields(parse_create(&json!([]), P)), vec![""]);
        assert_eq!(fields(parse_create(&json!({}), P)), vec!["url", "events"]);
        assert_eq!(
            fields(parse_create(
                &json!({"url": "http://x.com", "events": ["nope", 3], "secret": "", "extra": 1}),
                P
            )),
            vec!["extra", "url", "events[0]", "events[1]", "secret"]
        );
        assert_eq!(
            fields(parse_create(&json!({"url": "https://x.com", "events": []}), P)),
            vec!["events"]
        );
        assert_eq!(
            fields(parse_create(&json!({"url": 5, "events": "system.info"}), P)),
            vec!["url", "events"]
        );
        let many: Vec<&str> = vec!["system.info"; MAX_EVENTS + 1];
        assert_eq!(
            fields(parse_create(&json!({"url": "https://x.com", "events": many}), P)),
            vec!["events"]
        );
        let long = "s".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(
            fields(parse_create(
                &json!({"url": "https://x.com", "events": ["*"], "secret": long}),
                P
            )),
            vec!["secret"]
        );
    }

    #[test]
    fn secrets_are_generated_bounded_below_or_explicitly_absent() {
        let create = |secret: Option<Value>| {
            let mut body = json!({"url": "https://x.com", "events": ["*"]});
            if let Some(s) = secret {
                body["secret"] = s;
            }
            parse_create(&body, P)
        };
        let generated = create(None).expect("valid").secret.expect("generated");
        assert!(generated.starts_with("whsec_"), "{generated}");
        assert_ne!(
            create(None).expect("valid").secret,
            Some(generated),
            "a new one each time"
        );
        assert_eq!(create(Some(Value::Null)).expect("valid").secret, None, "null: unsigned");
        let short = "s".repeat(MIN_SECRET_LEN - 1);
        let e = create(Some(json!(short))).expect_err("too short");
        assert_eq!(e[0].field, "secret");
        assert!(e[0].message.contains("at least 16 characters"), "{}", e[0].message);
        let ok = "s".repeat(MIN_SECRET_LEN);
        assert_eq!(create(Some(json!(ok))).expect("valid").secret, Some(ok));
        // `whsec_` secrets must be what Standard Webhooks libraries can decode.
        assert!(create(Some(json!("whsec_not-base64-at-all!!"))).is_err());
        assert!(
            create(Some(json!(format!("whsec_{}", "QUFB".repeat(5))))).is_err(),
            "15 bytes"
        );
        let key = format!("whsec_{}", "QUFB".repeat(8));
        assert_eq!(create(Some(json!(key))).expect("24 bytes").secret, Some(key));
        // The same rules when a PUT sets one; null still removes it.
        assert!(parse_update(&json!({"secret": "short"}), P).is_err());
        assert_eq!(
            parse_update(&json!({"secret": null}), P).expect("ok").secret,
            Some(None)
        );
    }

    #[test]
    fn update_is_partial_and_ignores_read_only_fields() {
        let p = parse_update(&json!({"active": false, "id": "wh_x", "createdAt": "t"}), P).expect("valid");
        assert_eq!(
            p,
            WebhookPatch {
                active: Some(false),
                ..Default::default()
            }
        );
        let p = parse_update(&json!({"secret": null}), P).expect("valid");
        assert_eq!(p.secret, Some(None));
        assert_eq!(
            fields(parse_update(&json!({"active": "yes", "events": []}), P)),
            vec!["events", "active"]
        );
    }

    #[test]
    fn rotate_bodies() {
        assert_eq!(
            parse_rotate(&json!({})).expect("valid"),
            RotateRequest {
                secret: None,
                overlap_s: DEFAULT_OVERLAP_S
            }
        );
        let r = parse_rotate(&json!({"secret": "new-secret-0123456789", "overlapSeconds": 0})).expect("valid");
        assert_eq!((r.secret.as_deref(), r.overlap_s), (Some("new-secret-0123456789"), 0));
        // The same rules as at registration: at least MIN_SECRET_LEN characters.
        let short = "s".repeat(MIN_SECRET_LEN - 1);
        assert_eq!(fields(parse_rotate(&json!({"secret": short}))), vec!["secret"]);
        assert_eq!(
            parse_rotate(&json!({"overlapSeconds": MAX_OVERLAP_S}))
                .expect("valid")
                .overlap_s,
            MAX_OVERLAP_S
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!("60"),
            json!(MAX_OVERLAP_S + 1),
            Value::Null,
        ] {
            assert_eq!(
                fields(parse_rotate(&json!({"overlapSeconds": bad}))),
                vec!["overlapSeconds"]
            );
        }
        assert_eq!(
            fields(parse_rotate(&json!({"secret": null, "extra": 1}))),
            vec!["extra", "secret"]
        );
        assert_eq!(fields(parse_rotate(&json!({"secret": ""}))), vec!["secret"]);
    }

    fn hook(secret: Option<&str>) -> Webhook {
        Webhook {
            id: "wh_1".into(),
            tenant: "t".into(),
            url: "https://x.com".into(),
            events: vec!["*".into()],
            secret: secret.map(str::to_string),
            previous_secrets: Vec::new(),
            active: true,
            created_at: 0,
            updated_at: 0,
            version: 1,
            ..Webhook::default()
        }
    }

    #[test]
    fn rotation_keeps_the_old_secrets_for_the_overlap_only() {
        let now = 1_000_000;
        let a = hook(Some("a"));
        let b = a.rotated("b".into(), 60, now).expect("rotated");
        assert_eq!(b.version, 2);
        assert_eq!(b.signing_secrets(now), vec!["b", "a"]);
        assert_eq!(b.signing_secrets(now + 59_999), vec!["b", "a"]);
        assert_eq!(
            b.signing_secrets(now + 60_000),
            vec!["b"],
            "expired at the end of the overlap"
        );
        // A second rotation keeps both, never extending the first overlap.
        let c = b.rotated("c".into(), 3600, now + 1000).expect("rotated");
        assert_eq!(c.signing_secrets(now + 1000), vec!["c", "b", "a"]);
        assert_eq!(c.previous_secrets[1].expires_at, now + 60_000);
        // An overlap of 0 revokes every old secret at once.
        let d = c.rotated("d".into(), 0, now + 2000).expect("rotated");
        assert_eq!(d.signing_secrets(now + 2000), vec!["d"]);
        assert!(d.previous_secrets.is_empty());
        // Bounded: a fourth secret still valid beside the current one is refused.
        let full = c
            .rotated("d".into(), 3600, now + 2000)
            .expect("three previous")
            .rotated("e".into(), 3600, now + 3000);
        assert!(full.is_none());
        // An unsigned webhook gets its first secret, with nothing to keep.
        let u = hook(None).rotated("s".into(), 60, now).expect("rotated");
        assert_eq!(u.signing_secrets(now), vec!["s"]);
        // Rotating to the secret already in use keeps no duplicate.
        assert_eq!(
            a.rotated("a".into(), 60, now).expect("same").signing_secrets(now),
            vec!["a"]
        );
        // PUT with a secret replaces it at once.
        let patch = WebhookPatch {
            secret: Some(Some("z".into())),
            ..Default::default()
        };
        assert_eq!(patch.apply(&b, now).signing_secrets(now), vec!["z"]);
        let keep = WebhookPatch {
            active: Some(false),
            ..Default::default()
        };
        assert_eq!(keep.apply(&b, now).signing_secrets(now), vec!["b", "a"]);
    }

    #[test]
    fn test_and_event_bodies() {
        let t = parse_test(
            &json!({"url": "https://x.com", "event": "system.info", "payload": {"a": 1}}),
            P,
        )
        .expect("ok");
        assert_eq!(t.event.as_str(), "system.info");
        assert_eq!(
            fields(parse_test(
                &json!({"url": "https://x.com", "event": "system.*", "payload": 1}),
                P
            )),
            vec!["event", "payload"]
        );
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        assert_eq!(
            fields(parse_event_submission(
                &json!({"event": "system.info", "payload": {"b": big}})
            )),
            vec!["payload"]
        );
        assert_eq!(
            fields(parse_event_submission(
                &json!({"event": "system.info", "payload": {}, "id": ""})
            )),
            vec!["id"]
        );
        assert_eq!(
            fields(parse_event_submission(
                &json!({"event": "system.info", "payload": {}, "id": 7})
            )),
            vec!["id"]
        );
        let e = parse_event_submission(&json!({"event": "system.info", "payload": {}, "id": "evt-1"})).expect("ok");
        assert_eq!(e.id.as_deref(), Some("evt-1"));
    }
}
