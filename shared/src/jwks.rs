//! The signing keys of an OIDC issuer, from its JWKS document (`JWT_JWKS_URL`): fetched on
//! first use, cached, refreshed when they are old or a token names a `kid` not among them, and
//! never fetched more than once per cooldown, so a flood of tokens with made-up `kid`s costs
//! the issuer at most one request per cooldown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The largest JWKS document read; a provider's is a few KB.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Usable keys kept from one document (providers publish 2-4); the rest are ignored.
pub const MAX_KEYS: usize = 16;
/// RSA moduli from 2048 to 4096 bits: smaller is breakable, larger only costs time.
pub const RSA_MIN_BYTES: usize = 256;
pub const RSA_MAX_BYTES: usize = 512;
/// Keys older than this are fetched again on the next token.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// At most one fetch per this long, however many unknown `kid`s arrive.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// A fetch gives up after this long (connect included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// `kid`s longer than this are not looked up.
pub const MAX_KID_LEN: usize = 256;

/// One verification key, with the one algorithm it may verify: RS256 for RSA keys, ES256 for
/// P-256 keys. Nothing else is ever accepted from a JWKS (no HMAC "oct" keys).
#[derive(Clone)]
pub struct JwkKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWT_JWKS_URL must be an https URL (http only to 127.0.0.1, ::1 or localhost): {0}")]
    BadUrl(String),
    #[error("could not build the JWKS HTTP client: {0}")]
    Client(String),
}

#[derive(Default)]
struct Cache {
    keys: Arc<HashMap<String, JwkKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    fetches: u64,
}

/// The keys of one issuer, shared by every request of the process.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    cooldown: Duration,
    cache: tokio::sync::RwLock<Cache>,
    // One fetch at a time: requests that find the keys stale wait for it instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Jwks {
    pub fn new(url: &str, cooldown: Duration) -> Result<Self, JwksError> {
        check_url(url)?;
        let client = reqwest::Client::builder()
            // The keys come from the configured URL only: a redirect could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(Jwks {
            url: url.to_string(),
            client,
            cooldown,
            cache: tokio::sync::RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// How many times the document was requested (successfully or not).
    pub async fn fetches(&self) -> u64 {
        self.cache.read().await.fetches
    }

    /// The key named `kid`, fetching the document first when the cache is empty or old, or
    /// does not have it (within the cooldown). `None` when the issuer does not publish it.
    pub async fn key(&self, kid: &str) -> Option<JwkKey> {
        if kid.len() > MAX_KID_LEN {
            return None;
        }
        let seen = {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < MAX_AGE);
            if let Some(key) = cache.keys.get(kid)
                && fresh
            {
                return Some(key.clone());
            }
            cache.last_attempt
        };
        self.refresh(seen).await;
        self.cache.read().await.keys.get(kid).cloned()
    }

    /// Fetches the document unless the cooldown forbids it or another request fetched it since
    /// `seen` (the last attempt this caller knew of). Failures keep the keys there were.
    async fn refresh(&self, seen: Option<Instant>) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let cache = self.cache.read().await;
            if cache.last_attempt != seen || cache.last_attempt.is_some_and(|t| t.elapsed() < self.cooldown) {
                return;
            }
        }
        let result = self.fetch().await;
        let mut cache = self.cache.write().await;
        cache.last_attempt = Some(Instant::now());
        cache.fetches += 1;
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                cache.keys = Arc::new(keys);
                cache.fetched_at = Some(Instant::now());
            }
            Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the keys cached before"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, JwkKey>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(format!("document over {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("document over {MAX_JWKS_BYTES} bytes"));
            }
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let keys = parse_jwks(&doc);
        if keys.is_empty() {
            return Err("no usable RS256 or ES256 signing key".into());
        }
        Ok(keys)
    }
}

fn check_url(raw: &str) -> Result<(), JwksError> {
    let bad = || JwksError::BadUrl(raw.to_string());
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let loopback = matches!(
        url.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad()),
    }
}

/// The usable signing keys of a JWKS document, by `kid`: RSA keys of 2048-4096 bits for RS256
/// and P-256 keys for ES256, each with a `kid`, not marked for encryption, and not declaring
/// another algorithm. Anything else (HMAC keys among them) is skipped.
pub fn parse_jwks(doc: &Value) -> HashMap<String, JwkKey> {
    let mut out = HashMap::new();
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return out;
    };
    for jwk in keys {
        if out.len() >= MAX_KEYS {
            tracing::warn!(
                max = MAX_KEYS,
                "JWKS has more usable keys than are kept; the rest are ignored"
            );
            break;
        }
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        let Some(kid) = field("kid").filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN) else {
            continue;
        };
        if field("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let decoded = |name: &str| field(name).and_then(|v| B64URL.decode(v.trim_end_matches('=')).ok());
        let key = match (field("kty"), field("alg")) {
            (Some("RSA"), None | Some("RS256")) => {
                let (Some(n), Some(e)) = (decoded("n"), decoded("e")) else {
                    continue;
                };
                let len = n.iter().position(|b| *b != 0).map_or(0, |i| n.len() - i);
                if !(RSA_MIN_BYTES..=RSA_MAX_BYTES).contains(&len) || e.is_empty() || e.len() > 8 {
                    continue;
                }
                JwkKey {
                    alg: Algorithm::RS256,
                    key: DecodingKey::from_rsa_raw_components(&n, &e),
                }
            }
            (Some("EC"), None | Some("ES256")) if field("crv") == Some("P-256") => {
                let (Some(x), Some(y)) = (decoded("x"), decoded("y")) else {
                    continue;
                };
                if x.len() != 32 || y.len() != 32 {
                    continue;
                }
                let (Some(x), Some(y)) = (field("x"), field("y")) else {
                    continue;
                };
                match DecodingKey::from_ec_components(x.trim_end_matches('='), y.trim_end_matches('=')) {
                    Ok(key) => JwkKey {
                        alg: Algorithm::ES256,
                        key,
                    },
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        out.insert(kid.to_string(), key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://issuer.example/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://[::1]:9/jwks").is_ok());
        for bad in [
            "http://issuer.example/jwks",
            "ftp://x/jwks",
            "jwks.json",
            "http://10.0.0.1/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_rs256_and_es256_signing_keys_are_kept() {
        let n = B64URL.encode([0xc5u8; 256]);
        let small = B64URL.encode([0xc5u8; 128]);
        let xy = B64URL.encode([7u8; 32]);
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": n, "e": "AQAB", "alg": "RS256", "use": "sig"},
            {"kty": "RSA", "kid": "rsa-no-alg", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-1024", "n": small, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-enc", "n": n, "e": "AQAB", "use": "enc"},
            {"kty": "RSA", "kid": "rsa-ps", "n": n, "e": "AQAB", "alg": "PS256"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": xy, "y": xy},
            {"kty": "EC", "kid": "ec-384", "crv": "P-384", "x": xy, "y": xy},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": xy},
            "junk"
        ]});
        let keys = parse_jwks(&doc);
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, vec!["ec", "rsa", "rsa-no-alg"]);
        assert_eq!(keys["rsa"].alg, Algorithm::RS256);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
        let many: Vec<Value> = (0..40)
            .map(|i| json!({"kty": "RSA", "kid": format!("k{i}"), "n": n, "e": "AQAB"}))
            .collect();
        assert_eq!(parse_jwks(&json!({ "keys": many })).len(), MAX_KEYS);
        assert!(parse_jwks(&json!({"nokeys": []})).is_empty());
    }
}
