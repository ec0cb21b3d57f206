//! The signed request every receiver gets, from the test endpoint and the dispatcher alike.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
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
    hex::encode(guide_mac(keyed(secret.as_bytes()), body))
}

/// `webhook-signature` of the Standard Webhooks spec: `v1,` + base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`. A secret written `whsec_<base64>` is keyed with the decoded
/// bytes, as the spec's libraries do; any other secret with its UTF-8 bytes, so an
/// off-the-shelf verifier works when given `whsec_` + base64(secret).
pub fn standard_signature(secret: &str, id: &str, timestamp_s: u64, body: &[u8]) -> String {
    let mut digits = [0u8; 20];
    let mac = standard_mac(standard_keyed(secret), id, decimal(timestamp_s, &mut digits), body);
    let mut out = String::with_capacity(STANDARD_SIGNATURE_LEN);
    out.push_str("v1,");
    B64.encode_string(mac, &mut out);
    out
}

/// `v1,` + 44 characters of base64.
const STANDARD_SIGNATURE_LEN: usize = 47;

/// The guide's MAC of `body`, from a state keyed with the secret's UTF-8 bytes.
fn guide_mac(mut mac: HmacSha256, body: &[u8]) -> [u8; 32] {
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks MAC of `{id}.{timestamp}.{body}`, fed in pieces (no concatenation),
/// from a state keyed by `standard_keyed`.
fn standard_mac(mut mac: HmacSha256, id: &str, timestamp_ascii: &[u8], body: &[u8]) -> [u8; 32] {
    for part in [id.as_bytes(), b".", timestamp_ascii, b".", body] {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks key: a `whsec_` secret's decoded bytes, any other secret's UTF-8 bytes.
fn standard_keyed(secret: &str) -> HmacSha256 {
    match secret.strip_prefix("whsec_") {
        Some(_) => keyed(&standard_key(secret)),
        None => keyed(secret.as_bytes()),
    }
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

/// One secret's HMAC keys, derived once: the guide's (keyed with the secret's UTF-8 bytes) and
/// the Standard Webhooks one (keyed with the decoded `whsec_` bytes, else the same bytes).
/// Signing clones a keyed state instead of keying again, which saves the two SHA-256 blocks of
/// HMAC's key schedule per signature and the base64 decode of the key (`KeyCache` keeps them
/// per webhook in the dispatcher). Holds key material: its `Debug` shows none of it.
#[derive(Clone)]
pub struct SigningKey {
    guide: HmacSha256,
    standard: HmacSha256,
}

impl SigningKey {
    pub fn new(secret: &str) -> Self {
        let guide = keyed(secret.as_bytes());
        let standard = match secret.strip_prefix("whsec_") {
            Some(_) => standard_keyed(secret),
            None => guide.clone(),
        };
        SigningKey { guide, standard }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(redacted)")
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Webhooks whose keys a `KeyCache` holds; beyond it the cache starts again empty (the keys
/// are ~0.5 KB a secret, so at most a few MB of a 256 MB function).
pub const MAX_CACHED_KEYS: usize = 10_000;

/// The `SigningKey`s of each webhook's signing secrets, per container: a warm dispatcher
/// derives a webhook's keys once, not at every attempt. An entry is used only while the
/// webhook's secrets are exactly the ones it was derived from, so a rotation, a revocation
/// (`overlapSeconds: 0`), a PUT of a new secret or an overlap that ends replaces it at the
/// next attempt. Cloning shares the cache. Neither the secrets nor the keys appear in `Debug`.
#[derive(Clone, Default)]
pub struct KeyCache {
    entries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, CachedKeys>>>,
}

struct CachedKeys {
    secrets: Vec<String>,
    keys: std::sync::Arc<[SigningKey]>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("webhooks", &self.len())
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// The keys of `secrets` (the webhook's, in signing order), derived now unless the
    /// webhook's entry was derived from the same secrets.
    pub fn keys<'a>(
        &self,
        webhook_id: &str,
        secrets: impl Iterator<Item = &'a str> + Clone,
    ) -> std::sync::Arc<[SigningKey]> {
        let mut entries = self.lock();
        if let Some(e) = entries.get(webhook_id)
            && e.secrets.iter().map(String::as_str).eq(secrets.clone())
        {
            return e.keys.clone();
        }
        // Deriving is four SHA-256 blocks a secret: short enough to do under the lock.
        let keys: std::sync::Arc<[SigningKey]> = secrets.clone().map(SigningKey::new).collect();
        if entries.len() >= MAX_CACHED_KEYS && !entries.contains_key(webhook_id) {
            entries.clear();
        }
        entries.insert(
            webhook_id.to_string(),
            CachedKeys {
                secrets: secrets.map(str::to_string).collect(),
                keys: keys.clone(),
            },
        );
        keys
    }

    /// Webhooks with keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CachedKeys>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One signed delivery request, ready to send. The body is shared, not copied, with the HTTP
/// client and with the job it came from; so are the header values, which are slices of one
/// buffer.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A header that could not be sent (an id or event type that is not a valid header value:
    /// only a corrupt job has one); the request is then not sent, and this is the reason.
    pub invalid: Option<&'static str>,
}

impl SignedRequest {
    /// The value of header `name` (lowercase), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }
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
        let keys: Vec<SigningKey> = secrets.iter().map(|s| SigningKey::new(s)).collect();
        sign_rendered(self.id, self.event, self.timestamp_ms, Bytes::from(body), &keys, now_s)
    }
}

const H_EVENT: HeaderName = HeaderName::from_static(HEADER_EVENT);
const H_TIMESTAMP: HeaderName = HeaderName::from_static(HEADER_TIMESTAMP);
const H_SIGNATURE: HeaderName = HeaderName::from_static(HEADER_SIGNATURE);
const H_ID: HeaderName = HeaderName::from_static(HEADER_ID);
const H_SW_ID: HeaderName = HeaderName::from_static(HEADER_SW_ID);
const H_SW_TIMESTAMP: HeaderName = HeaderName::from_static(HEADER_SW_TIMESTAMP);
const H_SW_SIGNATURE: HeaderName = HeaderName::from_static(HEADER_SW_SIGNATURE);

/// Appends `bytes`; where they are in `buf`.
fn put(buf: &mut BytesMut, bytes: &[u8]) -> std::ops::Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(bytes);
    start..buf.len()
}

/// Every header of a delivery whose body is already rendered (`delivery_body_rendered`, once
/// per event in ingest): the dispatcher's path, which renders nothing and only signs.
///
/// Signs with the keys of every secret valid now (`Webhook::signing_secrets`: the current one
/// first, then the ones a rotation replaced, newest first). `webhook-signature` carries one
/// `v1,` signature per secret, space-separated, as the Standard Webhooks spec allows, so a
/// receiver holding any one of them verifies. `X-Webhook-Signature` is one hex value (the
/// guide's receiver compares it whole), by the *oldest* valid secret: a receiver that was not
/// touched keeps verifying until the overlap ends, and one that tries its old and new secret in
/// turn verifies before and after; the new secret alone takes over when the old one expires.
///
/// Every attempt of every delivery comes here, so it allocates twice (the header list and one
/// buffer that every header value is a slice of) and formats nothing through `fmt`.
pub fn sign_rendered(
    id: &str,
    event: &str,
    timestamp_ms: u64,
    body: Bytes,
    keys: &[SigningKey],
    now_s: u64,
) -> SignedRequest {
    let signatures = match keys.len() {
        0 => 0,
        n => 64 + n * (STANDARD_SIGNATURE_LEN + 1),
    };
    let mut buf = BytesMut::with_capacity(event.len() + id.len() + 2 * 20 + signatures);
    let (mut ms_digits, mut s_digits) = ([0u8; 20], [0u8; 20]);
    let now_ascii = decimal(now_s, &mut s_digits);
    let r_event = put(&mut buf, event.as_bytes());
    let r_id = put(&mut buf, id.as_bytes());
    let r_ts_ms = put(&mut buf, decimal(timestamp_ms, &mut ms_digits));
    let r_ts_s = put(&mut buf, now_ascii);
    let mut r_sigs = None;
    if let Some(oldest) = keys.last() {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(guide_mac(oldest.guide.clone(), &body), &mut hex);
        let r_guide = put(&mut buf, &hex);
        let start = buf.len();
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b" ");
            }
            let mut b64 = [0u8; 44];
            // 32 bytes are always 44 characters of padded base64.
            let _ = B64.encode_slice(standard_mac(key.standard.clone(), id, now_ascii, &body), &mut b64);
            buf.extend_from_slice(b"v1,");
            buf.extend_from_slice(&b64);
        }
        r_sigs = Some((r_guide, start..buf.len()));
    }
    let buf = buf.freeze();
    let mut invalid = None;
    let mut value = |range: std::ops::Range<usize>, name: &'static str| {
        HeaderValue::from_maybe_shared(buf.slice(range)).unwrap_or_else(|_| {
            invalid = Some(name);
            HeaderValue::from_static("")
        })
    };
    let id_value = value(r_id, HEADER_ID);
    let mut headers = Vec::with_capacity(8);
    headers.extend([
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (H_EVENT, value(r_event, HEADER_EVENT)),
        (H_TIMESTAMP, value(r_ts_ms, HEADER_TIMESTAMP)),
        (H_ID, id_value.clone()),
        (H_SW_ID, id_value),
        (H_SW_TIMESTAMP, value(r_ts_s, HEADER_SW_TIMESTAMP)),
    ]);
    if let Some((guide, standard)) = r_sigs {
        headers.push((H_SIGNATURE, value(guide, HEADER_SIGNATURE)));
        headers.push((H_SW_SIGNATURE, value(standard, HEADER_SW_SIGNATURE)));
    }
    SignedRequest { body, headers, invalid }
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

    /// An HMAC computed directly, the reference the signing code is checked against.
    fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = keyed(key);
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

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
        let header = |r: &SignedRequest, name: &str| r.header(name).map(str::to_string);
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
    fn cached_keys_sign_exactly_as_keying_each_time_does() {
        let long = format!("whsec_{}", B64.encode([7u8; 300]));
        let plain_long = "p".repeat(100);
        let secrets = [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "a-plain-secret-of-some-length",
            long.as_str(),
            plain_long.as_str(),
            "whsec_not base64!",
        ];
        let body = Bytes::from_static(br#"{"event":"system.info","timestamp":"x","payload":{}}"#);
        for n in 0..=3 {
            let chosen = &secrets[..n];
            let keys: Vec<SigningKey> = chosen.iter().map(|s| SigningKey::new(s)).collect();
            for now_s in [0, 7, 1_614_265_330] {
                let r = sign_rendered("dl_1", "system.info", 1_747_862_829_442, body.clone(), &keys, now_s);
                assert_eq!(r.invalid, None);
                assert_eq!(r.header("content-type"), Some("application/json"));
                assert_eq!(r.header(HEADER_EVENT), Some("system.info"));
                assert_eq!(r.header(HEADER_TIMESTAMP), Some("1747862829442"));
                assert_eq!(r.header(HEADER_ID), Some("dl_1"));
                assert_eq!(r.header(HEADER_SW_ID), Some("dl_1"));
                assert_eq!(r.header(HEADER_SW_TIMESTAMP), Some(now_s.to_string().as_str()));
                let standard: Vec<String> = chosen
                    .iter()
                    .map(|s| standard_signature(s, "dl_1", now_s, &body))
                    .collect();
                match chosen.last() {
                    None => {
                        assert_eq!(r.header(HEADER_SIGNATURE), None);
                        assert_eq!(r.header(HEADER_SW_SIGNATURE), None);
                        assert_eq!(r.headers.len(), 6);
                    }
                    Some(oldest) => {
                        assert_eq!(
                            r.header(HEADER_SIGNATURE),
                            Some(guide_signature(oldest, &body).as_str())
                        );
                        assert_eq!(r.header(HEADER_SW_SIGNATURE), Some(standard.join(" ").as_str()));
                        assert_eq!(r.headers.len(), 8);
                    }
                }
            }
        }
    }

    #[test]
    fn the_key_cache_follows_rotations_and_is_bounded() {
        let cache = KeyCache::default();
        let body = Bytes::from_static(b"{}");
        let sign = |secrets: &[&str]| {
            let keys = cache.keys("wh_1", secrets.iter().copied());
            let r = sign_rendered("dl_1", "system.info", 1, body.clone(), &keys, 5);
            r.header(HEADER_SW_SIGNATURE).map(str::to_string)
        };
        let expect = |secrets: &[&str]| {
            let parts: Vec<String> = secrets
                .iter()
                .map(|s| standard_signature(s, "dl_1", 5, &body))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        };
        // A rotation, its overlap, its end, a PUT of another secret, then none: each attempt
        // signs with exactly the secrets valid then, never with keys cached for others.
        for secrets in [
            &["old-secret-0123456789"][..],
            &["old-secret-0123456789"],
            &["new-secret-0123456789", "old-secret-0123456789"],
            &["new-secret-0123456789"],
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            &[],
        ] {
            assert_eq!(sign(secrets), expect(secrets), "{secrets:?}");
            assert_eq!(cache.len(), 1, "one entry per webhook, replaced");
        }
        // The same secrets give the same (shared) keys; other webhooks get their own entry.
        let a = cache.keys("wh_2", ["s-0123456789abcdef"].into_iter());
        let b = cache.keys("wh_2", ["s-0123456789abcdef"].into_iter());
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        for i in 0..MAX_CACHED_KEYS + 5 {
            let id = format!("wh_{i}");
            cache.keys(&id, ["s-0123456789abcdef"].into_iter());
            assert!(cache.len() <= MAX_CACHED_KEYS);
        }
    }

    #[test]
    fn keys_and_the_cache_show_no_secret() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = SigningKey::new(secret);
        let cache = KeyCache::default();
        cache.keys("wh_1", [secret].into_iter());
        let key_bytes = standard_key(secret);
        for shown in [format!("{key:?}"), format!("{key:#?}"), format!("{cache:?}")] {
            assert!(!shown.contains("MfKQ9r8"), "{shown}");
            assert!(!shown.contains(&hex::encode(&key_bytes)), "{shown}");
            assert!(!shown.contains(&format!("{key_bytes:?}")), "{shown}");
        }
    }

    #[test]
    fn an_id_that_is_no_header_value_is_reported_not_sent() {
        let keys = [SigningKey::new("a-plain-secret-of-some-length")];
        let r = sign_rendered("dl_1\r\nx-injected: 1", "system.info", 1, Bytes::new(), &keys, 5);
        assert_eq!(r.invalid, Some(HEADER_ID));
        let ok = sign_rendered("dl_1", "system.info", 1, Bytes::new(), &keys, 5);
        assert_eq!(ok.invalid, None);
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
