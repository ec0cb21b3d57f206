//! What travels on the queues, and the identifiers it carries, parsed once.
//!
//! Events queue, from producers (and from `POST /api/events`):
//! `{"event": "<type>", "payload": {…}, "tenant": "<tenant>", "id"?: "<idempotency key>",
//!   "timestamp"?: "<RFC 3339>"}`. Without `id`, the SQS message id stands in (stable across
//! redeliveries); without `timestamp`, the time SQS received the message.
//!
//! Delivery queue, from ingest to the dispatcher: one job per (event, webhook), carrying the
//! payload as the stored event has it, already rendered.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::domain::{MAX_EVENT_ID_LEN, MAX_PAYLOAD_BYTES};
use crate::event_types::EventType;

/// A tenant name: 1-256 bytes, printable, no `#` (the key separator). Valid once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(s: &str) -> Option<Tenant> {
        let ok = !s.is_empty()
            && s.len() <= crate::auth::MAX_TENANT_LEN
            && !s.contains('#')
            && !s.chars().any(char::is_control);
        ok.then(|| Tenant(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Tenant {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<Tenant> for String {
    fn eq(&self, other: &Tenant) -> bool {
        *self == other.0
    }
}

impl PartialEq<str> for Tenant {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tenant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tenant::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid tenant"))
    }
}

/// An event id (the producer's idempotency key): 1-128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub fn parse(s: &str) -> Option<EventId> {
        let ok = !s.is_empty() && s.chars().count() <= MAX_EVENT_ID_LEN && !s.chars().any(char::is_control);
        ok.then(|| EventId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventId::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid event id"))
    }
}

/// An event, decoded and valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: Tenant,
    pub id: EventId,
    pub event: EventType,
    pub timestamp_ms: u64,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes one events-queue message body. `message_id` and `sent_ms` come from SQS.
/// Also returns the payload as `jsjson` renders it (its size is checked on that rendering), so
/// ingest stores and delivers it without rendering it again.
pub fn decode_event(body: &str, message_id: &str, sent_ms: u64) -> Result<(Event, String), DecodeError> {
    let err = |m: String| Err(DecodeError(m));
    if body.len() > 2 * MAX_PAYLOAD_BYTES {
        return err(format!(
            "message is {} bytes; the limit is {}",
            body.len(),
            2 * MAX_PAYLOAD_BYTES
        ));
    }
    // What `POST /api/events` refuses with a 422 goes to the events DLQ, for the same reason.
    let losses = crate::jsjson::losses(body.as_bytes());
    if !losses.is_empty() {
        let all: Vec<String> = losses.iter().map(ToString::to_string).collect();
        return err(all.join("; "));
    }
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return err(format!("not JSON: {e}")),
    };
    let Value::Object(map) = value else {
        return err("message must be a JSON object".into());
    };
    let string = |k: &str| map.get(k).and_then(Value::as_str);
    let Some(tenant) = string("tenant") else {
        return err("'tenant' is required and must be a string".into());
    };
    let Some(tenant) = Tenant::parse(tenant) else {
        return err("'tenant' must be 1-256 printable characters without '#'".into());
    };
    let Some(name) = string("event") else {
        return err("'event' is required and must be a string".into());
    };
    let Some(event) = EventType::parse(name) else {
        return err(format!(
            "unknown event type '{}'",
            name.chars().take(100).collect::<String>()
        ));
    };
    let payload = match map.get("payload") {
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return err("'payload' must be a JSON object".into()),
        None => return err("'payload' is required".into()),
    };
    let rendered = crate::jsjson::to_string(&payload);
    if rendered.len() > MAX_PAYLOAD_BYTES {
        return err(format!("'payload' is over {MAX_PAYLOAD_BYTES} bytes"));
    }
    let id = match map.get("id") {
        None | Some(Value::Null) => EventId::parse(message_id),
        Some(Value::String(id)) => EventId::parse(id),
        Some(_) => None,
    };
    let Some(id) = id else {
        return err(format!(
            "'id' must be a string of 1 to {MAX_EVENT_ID_LEN} characters without control characters"
        ));
    };
    let timestamp_ms = match map.get("timestamp") {
        None | Some(Value::Null) => sent_ms,
        Some(Value::String(ts)) => match crate::time::parse_iso(ts) {
            Some(ms) => ms,
            None => {
                return err("'timestamp' must be an RFC 3339 time such as 2025-05-21T21:27:09.442Z".into());
            }
        },
        Some(_) => return err("'timestamp' must be a string".into()),
    };
    Ok((
        Event {
            tenant,
            id,
            event,
            timestamp_ms,
            payload,
        },
        rendered,
    ))
}

/// The events-queue message body for an event (what `POST /api/events` enqueues).
pub fn encode_event(event: &Event) -> String {
    serde_json::json!({
        "event": event.event.as_str(),
        "payload": event.payload,
        "tenant": event.tenant,
        "id": event.id,
        "timestamp": crate::time::iso_ms(event.timestamp_ms),
    })
    .to_string()
}

/// One delivery to do: everything the dispatcher needs to sign and send, so that the happy
/// path reads nothing but the webhook. `payload` is the stored event's rendering, carried as
/// raw JSON (neither escaped into a string nor parsed again).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub webhook_id: String,
    pub tenant: Tenant,
    pub event_id: EventId,
    pub event: String,
    pub timestamp_ms: u64,
    /// The attempt cycle this job belongs to (see `ports::Delivery::cycle`): 0 from fan-out,
    /// higher for a redriven or resent delivery.
    #[serde(default)]
    pub cycle: u32,
    /// Absent on a resend or recover job: the dispatcher reads it from the stored event (the
    /// claim check), so those jobs stay small and the API reads no event per delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
}

impl DeliveryJob {
    pub fn decode(body: &str) -> Result<Self, DecodeError> {
        let job: DeliveryJob = serde_json::from_str(body).map_err(|e| DecodeError(format!("bad delivery job: {e}")))?;
        if EventType::parse(&job.event).is_none() {
            return Err(DecodeError(format!("bad delivery job: unknown event '{}'", job.event)));
        }
        Ok(job)
    }

    pub fn encode(&self) -> String {
        // Strings, numbers and already-valid raw JSON: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The same job in another cycle: what a redrive or a resend sends.
    pub fn in_cycle(&self, cycle: u32) -> DeliveryJob {
        DeliveryJob { cycle, ..self.clone() }
    }
}

/// Raw JSON of a payload rendered by `jsjson` (always valid JSON).
pub fn raw_payload(rendered: &str) -> Box<RawValue> {
    RawValue::from_string(rendered.to_string()).unwrap_or_else(|_| {
        // Unreachable for our own rendering; an empty object keeps the job well formed.
        RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_defaults_from_sqs() {
        let e = decode_event(
            r#"{"event":"system.info","payload":{"a":1},"tenant":"acme"}"#,
            "m-1",
            1_000,
        )
        .expect("ok")
        .0;
        assert_eq!(
            (e.id.as_str(), e.timestamp_ms, e.tenant.as_str()),
            ("m-1", 1_000, "acme")
        );
        let e = decode_event(
            r#"{"event":"system.info","payload":{},"tenant":"acme","id":"evt-9","timestamp":"2025-05-21T21:27:09.442Z"}"#,
            "m-1",
            1_000,
        )
        .expect("ok")
        .0;
        assert_eq!((e.id.as_str(), e.timestamp_ms), ("evt-9", 1_747_862_829_442));
        assert_eq!(decode_event(&encode_event(&e), "other", 5).expect("round trip").0, e);
    }

    #[test]
    fn refuses_what_it_cannot_deliver() {
        for bad in [
            "nope",
            "[]",
            r#"{"event":"system.info","payload":{}}"#,
            r#"{"event":"system.info","payload":{},"tenant":""}"#,
            r#"{"event":"system.info","payload":{},"tenant":"a#b"}"#,
            r#"{"event":"system.nope","payload":{},"tenant":"a"}"#,
            r#"{"event":"system.info","payload":[],"tenant":"a"}"#,
            r#"{"event":"system.info","tenant":"a"}"#,
            r#"{"event":"system.info","payload":{},"tenant":"a","id":""}"#,
            r#"{"event":"system.info","payload":{},"tenant":"a","timestamp":"soon"}"#,
            r#"{"event":"system.info","payload":{"n":9007199254740993},"tenant":"a"}"#,
            r#"{"event":"system.info","payload":{"k":1,"k":2},"tenant":"a"}"#,
        ] {
            assert!(decode_event(bad, "m", 1).is_err(), "{bad}");
        }
    }
}
