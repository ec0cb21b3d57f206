//! What travels on the queues, and the identifiers it carries, parsed once.
//!
//! Events queue, from producers (and from `POST /api/events`):
//! `{"event": "<type>", "payload": {…}, "tenant": "<tenant>", "id"?: "<idempotency key>",
//!   "timestamp"?: "<RFC 3339>"}`. Without `id`, the SQS message id stands in (stable across
//! redeliveries); without `timestamp`, the time SQS received the message.
//!
//! Delivery queue, from ingest to the dispatcher: one job per (event, webhook), carrying the
//! delivery body rendered once per event (see `DeliveryJob` for the format and its versions).

use bytes::Bytes;
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

/// The delivery-job format this build writes (see `DeliveryJob::encode`).
pub const JOB_FORMAT: u32 = 2;

/// One delivery to do: everything the dispatcher needs to sign and send, so that the happy
/// path reads nothing but the webhook.
///
/// On the queue (format 2) a job is one line of JSON, the header, then `\n`, then the
/// delivery body exactly as it is signed and sent (empty for a resend or recover job):
///
/// ```text
/// {"v":2,"deliveryId":"dl_…","webhookId":"wh_…","tenant":"acme","eventId":"evt-1","event":"system.info","timestampMs":1747862829442,"cycle":0}
/// {"event":"system.info","timestamp":"2025-05-21T21:27:09.442Z","payload":{"a":1}}
/// ```
///
/// The body is rendered once per event by ingest; the dispatcher reads the header (a few
/// hundred bytes) and takes the rest as the bytes to sign, without scanning or copying it into
/// a JSON tree, for every webhook and every retry. The body has no raw newline (JSON.stringify
/// escapes them), so the first `\n` always ends the header. Format 1 (one JSON object with
/// the rendered payload under `payload`, no newline) is still read, because the queues hold
/// jobs across a deploy: its body is built around the payload at each attempt, as before.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub webhook_id: String,
    pub tenant: Tenant,
    pub event_id: EventId,
    pub event: String,
    pub timestamp_ms: u64,
    /// The attempt cycle this job belongs to (see `ports::Delivery::cycle`): 0 from fan-out,
    /// higher for a redriven or resent delivery.
    pub cycle: u32,
    pub body: JobBody,
    /// Set on a parked job (sent again with a delay, see the dispatcher's `PARK_FROM_S`): the
    /// earliest time (ms) its next attempt can be due. A job back before then is parked again
    /// without reading anything; the delivery record still decides when it is due.
    pub not_before_ms: Option<u64>,
}

/// What a job carries to send.
#[derive(Debug, Clone)]
pub enum JobBody {
    /// Format 2: the delivery body, rendered by ingest; every attempt signs and sends these bytes.
    Rendered(Bytes),
    /// Format 1: the payload as `jsjson` rendered it; the body is built around it per attempt.
    Payload(Box<RawValue>),
    /// A resend or recover job: the dispatcher reads the stored event (the claim check), so
    /// those jobs stay small and the API reads no event per delivery.
    Stored,
}

impl PartialEq for JobBody {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (JobBody::Rendered(a), JobBody::Rendered(b)) => a == b,
            (JobBody::Payload(a), JobBody::Payload(b)) => a.get() == b.get(),
            (JobBody::Stored, JobBody::Stored) => true,
            _ => false,
        }
    }
}

/// A job's fields as JSON: format 2's header line, and the whole of a format 1 job.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    /// Absent in format 1.
    #[serde(default)]
    v: u32,
    #[serde(borrow)]
    delivery_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    webhook_id: std::borrow::Cow<'a, str>,
    tenant: Tenant,
    event_id: EventId,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    timestamp_ms: u64,
    #[serde(default)]
    cycle: u32,
    /// Format 1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<Box<RawValue>>,
    /// Parked jobs only (an older dispatcher ignores it and reads the record instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<u64>,
}

/// Every format 2 body starts so (`signing::delivery_body_rendered`).
const BODY_PREFIX: &str = "{\"event\":";

impl DeliveryJob {
    pub fn decode(message: &str) -> Result<Self, DecodeError> {
        let bad = |m: String| DecodeError(format!("bad delivery job: {m}"));
        let (header, body) = match message.split_once('\n') {
            Some((header, body)) => (header, Some(body)),
            None => (message, None),
        };
        let h: Header<'_> = serde_json::from_str(header).map_err(|e| bad(e.to_string()))?;
        let body = match (h.v, body, h.payload) {
            (0 | 1, None, Some(payload)) => JobBody::Payload(payload),
            (0 | 1, None, None) => JobBody::Stored,
            (JOB_FORMAT, Some(""), None) => JobBody::Stored,
            (JOB_FORMAT, Some(body), None) => {
                if !body.starts_with(BODY_PREFIX) || !body.ends_with('}') {
                    return Err(bad("the body is not a delivery body".into()));
                }
                JobBody::Rendered(Bytes::copy_from_slice(body.as_bytes()))
            }
            (v, _, _) if v > JOB_FORMAT => {
                // Written by a newer build: to the DLQ with this reason, and a redrive after
                // the dispatcher is upgraded delivers it.
                return Err(bad(format!(
                    "format {v} is newer than this dispatcher reads (up to {JOB_FORMAT})"
                )));
            }
            (v, _, _) => return Err(bad(format!("not a well-formed job of format {}", v.max(1)))),
        };
        if EventType::parse(&h.event).is_none() {
            return Err(bad(format!("unknown event '{}'", h.event)));
        }
        Ok(DeliveryJob {
            delivery_id: h.delivery_id.into_owned(),
            webhook_id: h.webhook_id.into_owned(),
            tenant: h.tenant,
            event_id: h.event_id,
            event: h.event.into_owned(),
            timestamp_ms: h.timestamp_ms,
            cycle: h.cycle,
            body,
            not_before_ms: h.not_before,
        })
    }

    /// Format 2, whatever format the job was read in: a format 1 job that is sent on (to the
    /// DLQ, or again when deferred) gets its body rendered here once.
    pub fn encode(&self) -> String {
        let header = Header {
            v: JOB_FORMAT,
            delivery_id: self.delivery_id.as_str().into(),
            webhook_id: self.webhook_id.as_str().into(),
            tenant: self.tenant.clone(),
            event_id: self.event_id.clone(),
            event: self.event.as_str().into(),
            timestamp_ms: self.timestamp_ms,
            cycle: self.cycle,
            payload: None,
            not_before: self.not_before_ms,
        };
        // Strings and numbers: serialising cannot fail.
        let mut out = serde_json::to_string(&header).unwrap_or_default();
        out.push('\n');
        match &self.body {
            JobBody::Rendered(body) => out.push_str(&String::from_utf8_lossy(body)),
            JobBody::Payload(payload) => out.push_str(&String::from_utf8_lossy(&self.render(payload.get()))),
            JobBody::Stored => {}
        }
        out
    }

    /// The delivery body around a payload rendered by `jsjson`.
    pub fn render(&self, payload: &str) -> Vec<u8> {
        crate::signing::delivery_body_rendered(&self.event, &crate::time::iso_ms(self.timestamp_ms), payload)
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

    fn job(body: JobBody) -> DeliveryJob {
        DeliveryJob {
            delivery_id: "dl_1".into(),
            webhook_id: "wh_1".into(),
            tenant: Tenant::parse("acme").expect("tenant"),
            event_id: EventId::parse("evt-1").expect("id"),
            event: "system.info".into(),
            timestamp_ms: 1_747_862_829_442,
            cycle: 0,
            body,
            not_before_ms: None,
        }
    }

    const BODY: &str = r#"{"event":"system.info","timestamp":"2025-05-21T21:27:09.442Z","payload":{"a":"x\ny"}}"#;

    #[test]
    fn format_2_carries_the_body_after_one_header_line() {
        let j = job(JobBody::Rendered(Bytes::from_static(BODY.as_bytes())));
        let wire = j.encode();
        assert_eq!(
            wire,
            format!(
                "{}\n{BODY}",
                r#"{"v":2,"deliveryId":"dl_1","webhookId":"wh_1","tenant":"acme","eventId":"evt-1","event":"system.info","timestampMs":1747862829442,"cycle":0}"#
            )
        );
        assert_eq!(DeliveryJob::decode(&wire).expect("decodes"), j);
        // Resend and recover jobs: the header alone.
        let stored = job(JobBody::Stored).in_cycle(3);
        let wire = stored.encode();
        assert!(wire.ends_with("}\n"), "{wire}");
        assert_eq!(DeliveryJob::decode(&wire).expect("decodes"), stored);
        // A parked job says when it can be due; a job without it reads as not parked.
        let parked = DeliveryJob {
            not_before_ms: Some(1_747_862_900_000),
            ..j.clone()
        };
        let wire = parked.encode();
        assert!(
            wire.starts_with(r#"{"v":2,"#) && wire.contains(r#","notBefore":1747862900000}"#),
            "{wire}"
        );
        assert_eq!(DeliveryJob::decode(&wire).expect("decodes"), parked);
        assert_eq!(DeliveryJob::decode(&j.encode()).expect("decodes").not_before_ms, None);
    }

    #[test]
    fn format_1_jobs_are_still_read_and_sent_on_as_format_2() {
        // Byte for byte what the builds before format 2 wrote (`#[derive(Serialize)]`).
        let old = r#"{"deliveryId":"dl_1","webhookId":"wh_1","tenant":"acme","eventId":"evt-1","event":"system.info","timestampMs":1747862829442,"cycle":0,"payload":{"a":"x\ny"}}"#;
        let j = DeliveryJob::decode(old).expect("format 1");
        assert_eq!(j, job(JobBody::Payload(raw_payload(r#"{"a":"x\ny"}"#))));
        // The body it is sent with is the one format 2 would carry.
        let JobBody::Payload(p) = &j.body else { unreachable!() };
        assert_eq!(j.render(p.get()), BODY.as_bytes());
        // Sent on (to the DLQ, or again when deferred): as format 2, body rendered.
        let again = DeliveryJob::decode(&j.in_cycle(1).encode()).expect("format 2");
        assert_eq!(
            again,
            job(JobBody::Rendered(Bytes::from_static(BODY.as_bytes()))).in_cycle(1)
        );
        // A payload-less format 1 job (a resend's) reads the stored event.
        let old = r#"{"deliveryId":"dl_1","webhookId":"wh_1","tenant":"acme","eventId":"evt-1","event":"system.info","timestampMs":1747862829442,"cycle":2}"#;
        assert_eq!(
            DeliveryJob::decode(old).expect("format 1"),
            job(JobBody::Stored).in_cycle(2)
        );
    }

    #[test]
    fn jobs_that_are_not_well_formed_are_refused_with_the_reason() {
        let header = r#"{"v":2,"deliveryId":"dl_1","webhookId":"wh_1","tenant":"acme","eventId":"evt-1","event":"system.info","timestampMs":1}"#;
        let newer = header.replace(r#""v":2"#, r#""v":3"#);
        for (bad, why) in [
            (format!("{newer}\n{BODY}"), "format 3 is newer"),
            (format!("{header}\n[1]"), "not a delivery body"),
            (format!("{header}\n{{\"event\":"), "not a delivery body"),
            (format!("{}\n{BODY}", header.replace(r#""v":2,"#, "")), "format 1"),
            (
                format!("{}\n", header.replace("system.info", "system.nope")),
                "unknown event",
            ),
            ("nope".to_string(), "bad delivery job"),
        ] {
            let e = DeliveryJob::decode(&bad).expect_err(&bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
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
