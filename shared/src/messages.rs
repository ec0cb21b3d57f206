//! What travels on the queues.
//!
//! Events queue, from producers (and from `POST /api/events`):
//! `{"event": "<type>", "payload": {…}, "tenant": "<tenant>", "id"?: "<idempotency key>",
//!   "timestamp"?: "<RFC 3339>"}`. Without `id`, the SQS message id stands in (stable across
//! redeliveries); without `timestamp`, the time SQS received the message.
//!
//! Delivery queue, from ingest to the dispatcher: one job per (event, webhook).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{MAX_EVENT_ID_LEN, MAX_PAYLOAD_BYTES};
use crate::event_types::EventType;

/// An event, decoded and valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: String,
    pub id: String,
    pub event: EventType,
    pub timestamp_ms: u64,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes one events-queue message body. `message_id` and `sent_ms` come from SQS.
pub fn decode_event(body: &str, message_id: &str, sent_ms: u64) -> Result<Event, DecodeError> {
    let err = |m: String| Err(DecodeError(m));
    if body.len() > 2 * MAX_PAYLOAD_BYTES {
        return err(format!(
            "message is {} bytes; the limit is {}",
            body.len(),
            2 * MAX_PAYLOAD_BYTES
        ));
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
    if tenant.is_empty()
        || tenant.len() > crate::auth::MAX_TENANT_LEN
        || tenant.contains('#')
        || tenant.chars().any(char::is_control)
    {
        return err("'tenant' must be 1-256 printable characters without '#'".into());
    }
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
    if crate::jsjson::to_vec(&payload).len() > MAX_PAYLOAD_BYTES {
        return err(format!("'payload' is over {MAX_PAYLOAD_BYTES} bytes"));
    }
    let id = match map.get("id") {
        None | Some(Value::Null) => message_id.to_string(),
        Some(Value::String(id))
            if !id.is_empty() && id.chars().count() <= MAX_EVENT_ID_LEN && !id.chars().any(char::is_control) =>
        {
            id.clone()
        }
        Some(_) => {
            return err(format!("'id' must be a string of 1 to {MAX_EVENT_ID_LEN} bytes"));
        }
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
    Ok(Event {
        tenant: tenant.to_string(),
        id,
        event,
        timestamp_ms,
        payload,
    })
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

/// One delivery to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub webhook_id: String,
    pub tenant: String,
    pub event_id: String,
    pub event: String,
    pub timestamp_ms: u64,
    pub payload: Value,
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
        serde_json::to_string(self).unwrap_or_default()
    }
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
        .expect("ok");
        assert_eq!(
            (e.id.as_str(), e.timestamp_ms, e.tenant.as_str()),
            ("m-1", 1_000, "acme")
        );
        let e = decode_event(
            r#"{"event":"system.info","payload":{},"tenant":"acme","id":"evt-9","timestamp":"2025-05-21T21:27:09.442Z"}"#,
            "m-1",
            1_000,
        )
        .expect("ok");
        assert_eq!((e.id.as_str(), e.timestamp_ms), ("evt-9", 1_747_862_829_442));
        assert_eq!(decode_event(&encode_event(&e), "other", 5).expect("round trip"), e);
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
        ] {
            assert!(decode_event(bad, "m", 1).is_err(), "{bad}");
        }
    }
}
