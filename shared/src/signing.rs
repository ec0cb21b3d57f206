//! The signed request every receiver gets, from the test endpoint and the dispatcher alike.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::jsjson;

type HmacSha256 = Hmac<Sha256>;

pub const HEADER_EVENT: &str = "x-webhook-event";
pub const HEADER_TIMESTAMP: &str = "x-webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "x-webhook-signature";
pub const HEADER_ID: &str = "x-webhook-id";
pub const HEADER_SW_ID: &str = "webhook-id";
pub const HEADER_SW_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SW_SIGNATURE: &str = "webhook-signature";

/// The body of the guide: `{"event","timestamp","payload"}` as `JSON.stringify` prints it.
pub fn delivery_body(event: &str, timestamp_iso: &str, payload: &Value) -> Vec<u8> {
    delivery_body_rendered(event, timestamp_iso, &jsjson::to_string(payload))
}

/// The same body around a payload already rendered by `jsjson` (the stored event's): the
/// dispatcher's path, which parses nothing.
pub fn delivery_body_rendered(event: &str, timestamp_iso: &str, payload_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + event.len() + payload_json.len());
    out.extend_from_slice(b"{\"event\":");
    jsjson::write_string(&mut out, event);
    out.extend_from_slice(b",\"timestamp\":");
    jsjson::write_string(&mut out, timestamp_iso);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload_json.as_bytes());
    out.push(b'}');
    out
}

/// Random bytes in a generated secret: 32, inside the Standard Webhooks range of 24-64.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// A new secret in the Standard Webhooks form, `whsec_` + base64 of random bytes: the official
/// `standardwebhooks` libraries take it exactly as written, and the guide's receiver keys its
/// HMAC with the whole string, as `guide_signature` does.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", B64.encode(bytes))
}

/// `X-Webhook-Signature`: hex HMAC-SHA256 of the body, keyed with the secret's UTF-8 bytes,
/// exactly as the guide's Node.js example computes it.
pub fn guide_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac(secret.as_bytes(), &[body]))
}

/// `webhook-signature` of the Standard Webhooks spec: `v1,` + base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`. A secret written `whsec_<base64>` is keyed with the decoded
/// bytes, as the spec's libraries do; any other secret with its UTF-8 bytes, so an
/// off-the-shelf verifier works when given `whsec_` + base64(secret).
pub fn standard_signature(secret: &str, id: &str, timestamp_s: u64, body: &[u8]) -> String {
    let mut out = String::with_capacity(STANDARD_SIGNATURE_LEN);
    push_standard_signature(&mut out, secret, id, timestamp_s, body);
    out
}

/// `v1,` + 44 characters of base64.
const STANDARD_SIGNATURE_LEN: usize = 47;

/// Appends one `v1,` signature. Every attempt of every delivery signs, so this works on the
/// stack: the key decoded into a buffer, the timestamp's digits, the base64 into `out`.
fn push_standard_signature(out: &mut String, secret: &str, id: &str, timestamp_s: u64, body: &[u8]) {
    let mut buf = [0u8; 256];
    let heap;
    let key: &[u8] = match secret.strip_prefix("whsec_") {
        Some(b64) if b64.len() / 4 * 3 + 3 <= buf.len() => match B64.decode_slice(b64, &mut buf) {
            Ok(n) => &buf[..n],
            Err(_) => secret.as_bytes(),
        },
        Some(_) => {
            heap = standard_key(secret);
            &heap
        }
        None => secret.as_bytes(),
    };
    let mut digits = [0u8; 20];
    let ts = decimal(timestamp_s, &mut digits);
    let mac = hmac(key, &[id.as_bytes(), b".", ts, b".", body]);
    out.push_str("v1,");
    B64.encode_string(mac, out);
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| B64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a hex `X-Webhook-Signature`, for receivers written in Rust and for
/// our own tests.
pub fn verify_guide_signature(secret: &str, body: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time check of a `webhook-signature` header (space-separated `v1,<base64>` entries;
/// any one matching is enough, as during a secret rotation), keyed as `standard_signature` keys.
pub fn verify_standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = standard_key(secret);
    header.split(' ').filter_map(|e| e.strip_prefix("v1,")).any(|b64| {
        let Ok(sig) = B64.decode(b64) else {
            return false;
        };
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        for p in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            mac.update(p);
        }
        mac.verify_slice(&sig).is_ok()
    })
}

/// One signed delivery request, ready to send. The body is shared, not copied, with the HTTP
/// client and with the job it came from.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// What a delivery is about; `id` stays the same across the retries of one delivery.
pub struct Envelope<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub timestamp_ms: u64,
    /// The payload as `jsjson` renders it (`jsjson::to_string`).
    pub payload: &'a str,
}

impl Envelope<'_> {
    /// Builds the body and every header. `now_s` is the attempt time (Standard Webhooks'
    /// timestamp is for replay protection, so it is the time of sending, not of the event).
    pub fn sign(&self, secret: Option<&str>, now_s: u64) -> SignedRequest {
        self.sign_with(secret.as_slice(), now_s)
    }

    /// Signs with every secret valid now: see `sign_rendered`.
    pub fn sign_with(&self, secrets: &[&str], now_s: u64) -> SignedRequest {
        let body = delivery_body_rendered(self.event, &crate::time::iso_ms(self.timestamp_ms), self.payload);
        sign_rendered(
            self.id,
            self.event,
            self.timestamp_ms,
            Bytes::from(body),
            secrets,
            now_s,
        )
    }
}

/// Every header of a delivery whose body is already rendered (`delivery_body_rendered`, once
/// per event in ingest): the dispatcher's path, which renders nothing and only signs.
///
/// Signs with every secret valid now (`Webhook::signing_secrets`: the current one first, then
/// the ones a rotation replaced, newest first). `webhook-signature` carries one `v1,`
/// signature per secret, space-separated, as the Standard Webhooks spec allows, so a receiver
/// holding any one of them verifies. `X-Webhook-Signature` is one hex value (the guide's
/// receiver compares it whole), by the *oldest* valid secret: a receiver that was not touched
/// keeps verifying until the overlap ends, and one that tries its old and new secret in turn
/// verifies before and after; the new secret alone takes over when the old one expires.
pub fn sign_rendered(
    id: &str,
    event: &str,
    timestamp_ms: u64,
    body: Bytes,
    secrets: &[&str],
    now_s: u64,
) -> SignedRequest {
    let mut headers = Vec::with_capacity(8);
    headers.extend([
        ("content-type", "application/json".to_string()),
        (HEADER_EVENT, event.to_string()),
        (HEADER_TIMESTAMP, timestamp_ms.to_string()),
        (HEADER_ID, id.to_string()),
        (HEADER_SW_ID, id.to_string()),
        (HEADER_SW_TIMESTAMP, now_s.to_string()),
    ]);
    if let Some(oldest) = secrets.last() {
        headers.push((HEADER_SIGNATURE, guide_signature(oldest, &body)));
        let mut standard = String::with_capacity(secrets.len() * (STANDARD_SIGNATURE_LEN + 1));
        for (i, s) in secrets.iter().enumerate() {
            if i > 0 {
                standard.push(' ');
            }
            push_standard_signature(&mut standard, s, id, now_s, &body);
        }
        headers.push((HEADER_SW_SIGNATURE, standard));
    }
    SignedRequest { body, headers }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_secrets_are_standard_webhooks_keys_and_differ() {
        let a = super::generate_secret();
        let b = super::generate_secret();
        assert_ne!(a, b);
        let key = super::standard_key(&a);
        assert_eq!(
            key.len(),
            super::GENERATED_SECRET_BYTES,
            "{a} decodes to the random bytes"
        );
    }

    use super::*;

    #[test]
    fn body_is_the_guides_shape() {
        let payload: Value = serde_json::from_str(r#"{"id":"1","status":"COMPLETED","n":1.0}"#).expect("json");
        let body = delivery_body("workflow.execution.completed", "2025-05-21T21:27:09.442Z", &payload);
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"event":"workflow.execution.completed","timestamp":"2025-05-21T21:27:09.442Z","payload":{"id":"1","status":"COMPLETED","n":1}}"#
        );
    }

    #[test]
    fn during_a_rotation_every_secret_signs_and_the_oldest_signs_the_guides_header() {
        let env = Envelope {
            id: "msg_1",
            event: "system.info",
            timestamp_ms: 1_747_862_829_000,
            payload: "{}",
        };
        let header = |r: &SignedRequest, name: &str| r.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let both = env.sign_with(&["new", "old"], 1_747_862_830);
        let sw = header(&both, HEADER_SW_SIGNATURE).expect("signed");
        assert_eq!(
            sw,
            format!(
                "{} {}",
                standard_signature("new", "msg_1", 1_747_862_830, &both.body),
                standard_signature("old", "msg_1", 1_747_862_830, &both.body)
            )
        );
        assert!(verify_guide_signature(
            "old",
            &both.body,
            &header(&both, HEADER_SIGNATURE).expect("guide")
        ));
        let one = env.sign(Some("new"), 1_747_862_830);
        assert!(verify_guide_signature(
            "new",
            &one.body,
            &header(&one, HEADER_SIGNATURE).expect("guide")
        ));
        let none = env.sign(None, 1_747_862_830);
        assert!(header(&none, HEADER_SIGNATURE).is_none() && header(&none, HEADER_SW_SIGNATURE).is_none());
    }

    #[test]
    fn standard_signatures_key_and_count_as_the_spec_libraries_do_for_any_secret() {
        let long = format!("whsec_{}", B64.encode([7u8; 300]));
        for secret in [
            long.as_str(),
            "whsec_not base64!",
            "plain",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            for ts in [0, 9, 1_614_265_330, u64::MAX] {
                let key = standard_key(secret);
                let mac = hmac(&key, &[b"msg_1.", ts.to_string().as_bytes(), b".body"]);
                assert_eq!(
                    standard_signature(secret, "msg_1", ts, b"body"),
                    format!("v1,{}", B64.encode(mac)),
                    "{secret} at {ts}"
                );
            }
        }
    }

    #[test]
    fn signatures_match_known_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            guide_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_guide_signature(
            "Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ));
        assert!(!verify_guide_signature(
            "Jefe",
            b"what do ya want for nothing!",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ));
        // The Standard Webhooks spec's published example.
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let (secret, id, body) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            br#"{"test": 2432232314}"#,
        );
        assert!(verify_standard_signature(
            secret,
            id,
            "1614265330",
            body,
            &format!("v1,bm90IGl0 {sig}")
        ));
        assert!(!verify_standard_signature(secret, id, "1614265331", body, &sig));
        assert!(!verify_standard_signature(secret, id, "1614265330", body, "v1,%%%"));
    }
}
