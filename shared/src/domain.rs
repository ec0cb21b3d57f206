//! Webhooks and the parsing of what clients send about them. Values leave this module valid.

use serde_json::{Map, Value};

use crate::event_types::{EventFilter, EventType};
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Subscription filters, duplicates folded, in the order first given.
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub active: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Bumped by every update; stores write conditionally on it.
    pub version: u64,
}

impl Webhook {
    pub fn subscribes_to(&self, event: EventType) -> bool {
        let filters = event.matching_filters();
        self.events.iter().any(|e| filters.contains(e))
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
        Webhook {
            url: self.url.clone().unwrap_or_else(|| w.url.clone()),
            events: self.events.clone().unwrap_or_else(|| w.events.clone()),
            secret: self.secret.clone().unwrap_or_else(|| w.secret.clone()),
            active: self.active.unwrap_or(w.active),
            updated_at: now,
            version: w.version + 1,
            ..w.clone()
        }
    }
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
    let hint = "omit it to have one generated, or send null for unsigned deliveries";
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
/// a webhook (`id`, `createdAt`, `updatedAt`, `hasSecret`) are ignored, so a client can send
/// back what it got.
pub fn parse_update(body: &Value, policy: TargetPolicy) -> Result<WebhookPatch, Invalid> {
    let mut f = Fields::of(body)?;
    f.reject_unknown(
        &["url", "events", "secret", "active"],
        &["id", "createdAt", "updatedAt", "hasSecret"],
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
