//! Tokens of a real identity provider: RS256 and ES256, verified with the keys of its JWKS,
//! served here by a JWKS server on 127.0.0.1 with keys generated in the test (aws-lc-rs, apart
//! from the code under test, which signs nothing). Through the API's router and through the
//! local runner configured by its environment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use webhooks::auth::JwtVerifier;
use webhooks::delivery::Deliverer;
use webhooks::jwks::Jwks;
use webhooks::memory::{MemoryDeliveryLog, MemoryQueue, MemoryWebhookStore};
use webhooks::ssrf::TargetPolicy;
use webhooks_api::{AppState, router};
use webhooks_tests::{JWT_SECRET, unique};

const ISSUER: &str = "https://idp.example/";
const AUDIENCE: &str = "webhooks-api";

/// A signing key of the test's identity provider.
enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Key {
    fn rsa() -> Key {
        Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key"))
    }

    fn ec() -> Key {
        Key::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"))
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        }
    }

    /// The public half as a JWK, as an IdP publishes it.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Rsa(k) => {
                let public = k.public_key();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": B64URL.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64URL.encode(public.exponent().big_endian_without_leading_zero())})
            }
            Key::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])})
            }
        }
    }

    /// A compact JWS over `claims` with this key and `header`.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = match self {
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
            Key::Ec(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", B64URL.encode(signature))
    }

    fn token(&self, kid: &str, claims: &Value) -> String {
        self.sign(&json!({"alg": self.alg(), "typ": "JWT", "kid": kid}), claims)
    }
}

fn claims(tenant: &str) -> Value {
    let now = webhooks::time::now_ms() / 1000;
    json!({"sub": "user-1", "tenant": tenant, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now})
}

/// A JWKS endpoint on 127.0.0.1 whose document the test changes, counting the fetches.
#[derive(Clone)]
struct JwksServer {
    url: String,
    doc: Arc<Mutex<Value>>,
    fetches: Arc<AtomicU64>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        let doc = Arc::new(Mutex::new(json!({ "keys": keys })));
        let fetches = Arc::new(AtomicU64::new(0));
        let (d, f) = (doc.clone(), fetches.clone());
        let app = Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (d, f) = (d.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    axum::Json(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            doc,
            fetches,
        }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.doc.lock().unwrap_or_else(|p| p.into_inner()) = json!({ "keys": keys });
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn app(verifier: JwtVerifier) -> Router {
    let queue = Arc::new(MemoryQueue::new());
    let events_queue_url = queue.create_queue("events", Duration::from_secs(30), None);
    let delivery_queue_url = queue.create_queue("jobs", Duration::from_secs(30), None);
    router(AppState {
        store: Arc::new(MemoryWebhookStore::new()),
        log: Arc::new(MemoryDeliveryLog::new()),
        events: Arc::new(webhooks::memory::MemoryEventStore::new()),
        queue,
        events_queue_url,
        delivery_queue_url,
        recover_page: 100,
        verifier: Arc::new(verifier),
        deliverer: Deliverer::new(TargetPolicy {
            allow_http: false,
            allow_private: false,
        })
        .expect("client"),
        test_timeout: Duration::from_secs(1),
    })
}

fn verifier(server: &JwksServer, secret: Option<&[u8]>, cooldown: Duration) -> JwtVerifier {
    let jwks = Jwks::new(&server.url, cooldown).expect("jwks");
    JwtVerifier::with_jwks(secret, Arc::new(jwks), ISSUER, AUDIENCE)
}

/// (status, problem detail or body) of `method path` with `token`.
async fn call(app: &Router, method: &str, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("router never fails");
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn status(app: &Router, token: &str) -> StatusCode {
    call(app, "GET", "/api/webhooks", token, None).await.0
}

async fn detail(app: &Router, token: &str) -> String {
    let (code, body) = call(app, "GET", "/api/webhooks", token, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    body["detail"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_of_the_issuer_are_accepted_and_forgeries_are_not() {
    let (rsa, ec) = (Key::rsa(), Key::ec());
    let server = JwksServer::start(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1")]).await;
    let app = app(verifier(&server, Some(JWT_SECRET), Duration::from_secs(60)));
    let tenant = unique("acme");

    // One tenant, whichever key signed: what RS256 created, ES256 and HS256 see.
    let rs = rsa.token("rsa-1", &claims(&tenant));
    let (code, created) = call(
        &app,
        "POST",
        "/api/webhooks",
        &rs,
        Some(json!({"url": "https://example.com/hook", "events": ["*"]})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let es = ec.token("ec-1", &claims(&tenant));
    let (code, list) = call(&app, "GET", "/api/webhooks", &es, None).await;
    assert_eq!((code, list[0]["id"].clone()), (StatusCode::OK, created["id"].clone()));
    let mut hs_claims = webhooks::auth::claims_for("user-1", Some(&tenant), 600);
    hs_claims.iss = Some(ISSUER.into());
    hs_claims.aud = Some(webhooks::auth::Audience::One(AUDIENCE.into()));
    assert_eq!(
        status(&app, &webhooks::auth::mint(JWT_SECRET, &hs_claims)).await,
        StatusCode::OK,
        "JWT_SECRET still works beside the JWKS"
    );
    let other = ec.token("ec-1", &claims(&unique("other")));
    assert_eq!(
        call(&app, "GET", "/api/webhooks", &other, None).await.1,
        json!([]),
        "another tenant sees nothing"
    );
    assert_eq!(server.fetches(), 1, "the keys were fetched once and cached");

    // A key the issuer does not publish, under a known kid and under an unknown one.
    let stranger = Key::rsa();
    assert_eq!(
        detail(&app, &stranger.token("rsa-1", &claims(&tenant))).await,
        "token is invalid: bad signature"
    );
    assert_eq!(
        detail(&app, &stranger.token("rsa-unknown", &claims(&tenant))).await,
        "token is invalid: unknown signing key"
    );
    // HS256 keyed with the RSA public key (DER, PEM, or the JWK's modulus), naming its kid.
    let Key::Rsa(pair) = &rsa else { unreachable!() };
    let der = pair.public_key().as_ref().to_vec();
    let spki = pair.public_key().as_der().expect("spki");
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(spki.as_ref())
    );
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    for secret in [
        der.clone(),
        pem.clone().into_bytes(),
        pair.public_key().modulus().big_endian_without_leading_zero().to_vec(),
    ] {
        let forged = hs256(&hs_header, &claims(&tenant), &secret);
        assert_eq!(detail(&app, &forged).await, "token is invalid: bad signature");
    }
    // Without JWT_SECRET, HS256 is not an algorithm this API takes at all.
    let jwks_only = self::app(verifier(&server, None, Duration::from_secs(60)));
    assert_eq!(
        detail(&jwks_only, &hs256(&hs_header, &claims(&tenant), &der)).await,
        "token is invalid: algorithm not allowed"
    );
    // The algorithm is the key's, not the token's: RS256 named on the EC key, ES256 on RSA.
    let swapped = rsa.sign(&json!({"alg": "RS256", "kid": "ec-1"}), &claims(&tenant));
    assert_eq!(detail(&app, &swapped).await, "token is invalid: algorithm not allowed");
    let swapped = ec.sign(&json!({"alg": "ES256", "kid": "rsa-1"}), &claims(&tenant));
    assert_eq!(detail(&app, &swapped).await, "token is invalid: algorithm not allowed");
    let none = format!(
        "{}.{}.",
        B64URL.encode(json!({"alg": "none", "kid": "rsa-1"}).to_string()),
        B64URL.encode(claims(&tenant).to_string())
    );
    assert_eq!(detail(&app, &none).await, "token is invalid: malformed token");
    // Past exp (beyond the 30 s leeway), another issuer or audience, no kid.
    let mut expired = claims(&tenant);
    expired["exp"] = json!(webhooks::time::now_ms() / 1000 - 120);
    assert_eq!(detail(&app, &rsa.token("rsa-1", &expired)).await, "token has expired");
    let mut wrong = claims(&tenant);
    wrong["iss"] = json!("https://evil.example/");
    assert_eq!(
        detail(&app, &ec.token("ec-1", &wrong)).await,
        "token is invalid: wrong issuer"
    );
    let mut wrong = claims(&tenant);
    wrong["aud"] = json!("another-app");
    assert_eq!(
        detail(&app, &rsa.token("rsa-1", &wrong)).await,
        "token is invalid: wrong audience"
    );
    let no_kid = rsa.sign(&json!({"alg": "RS256"}), &claims(&tenant));
    assert_eq!(detail(&app, &no_kid).await, "token is invalid: token has no kid");
}

fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

/// The issuer rotates its keys: a token under the new `kid` is accepted by the same running
/// verifier (a fetch on the unknown kid), and the retired key stops working once the document
/// no longer has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_is_accepted_without_a_restart() {
    let (old, new) = (Key::rsa(), Key::ec());
    let server = JwksServer::start(vec![old.jwk("2026-11")]).await;
    // A short cooldown, so the test need not wait out the default 30 s between fetches.
    let app = app(verifier(&server, None, Duration::from_millis(300)));
    let tenant = unique("acme");
    assert_eq!(
        status(&app, &old.token("2026-11", &claims(&tenant))).await,
        StatusCode::OK
    );
    assert_eq!(server.fetches(), 1);

    server.publish(vec![new.jwk("2026-12")]);
    let rotated = new.token("2026-12", &claims(&tenant));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Within the cooldown of the first fetch the new kid is still unknown: 401 until then.
        if status(&app, &rotated).await == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.fetches() >= 2);
    assert_eq!(status(&app, &rotated).await, StatusCode::OK, "and cached");
    assert_eq!(
        detail(&app, &old.token("2026-11", &claims(&tenant))).await,
        "token is invalid: unknown signing key",
        "the retired key is gone with the document that dropped it"
    );
}

/// Tokens with made-up `kid`s cannot make the API hammer the issuer: one fetch per cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_at_most_once_per_cooldown() {
    let key = Key::rsa();
    let server = JwksServer::start(vec![key.jwk("k1")]).await;
    let app = app(verifier(&server, None, Duration::from_secs(60)));
    let tenant = unique("acme");
    assert_eq!(status(&app, &key.token("k1", &claims(&tenant))).await, StatusCode::OK);
    let mut calls = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        let token = key.token(&format!("made-up-{i}"), &claims(&tenant));
        calls.push(tokio::spawn(async move { status(&app, &token).await }));
    }
    for c in calls {
        assert_eq!(c.await.expect("task"), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        server.fetches(),
        1,
        "the first fetch is within the cooldown: no refetch at all"
    );
    assert_eq!(status(&app, &key.token("k1", &claims(&tenant))).await, StatusCode::OK);
}

/// What the issuer serves is bounded: a document over 64 KiB, or one without a usable key,
/// loads nothing (and a JWK of an HMAC key never becomes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_unusable_documents_load_no_key() {
    let key = Key::rsa();
    let mut padded = key.jwk("k1");
    padded["x-padding"] = json!("p".repeat(webhooks::jwks::MAX_JWKS_BYTES));
    let server = JwksServer::start(vec![padded]).await;
    let app = app(verifier(&server, None, Duration::from_millis(1)));
    let tenant = unique("acme");
    assert_eq!(
        detail(&app, &key.token("k1", &claims(&tenant))).await,
        "token is invalid: unknown signing key"
    );
    server.publish(vec![
        json!({"kty": "oct", "kid": "k1", "k": B64URL.encode(b"secret"), "alg": "HS256"}),
    ]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let forged = hs256(&json!({"alg": "HS256", "kid": "k1"}), &claims(&tenant), b"secret");
    assert_eq!(detail(&app, &forged).await, "token is invalid: algorithm not allowed");
    server.publish(vec![key.jwk("k1")]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(status(&app, &key.token("k1", &claims(&tenant))).await, StatusCode::OK);
}

/// The local runner, configured only by its environment (`JWT_JWKS_URL`, `JWT_ISSUER`,
/// `JWT_AUDIENCE`, `JWT_TENANT_CLAIM`), over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_runner_takes_its_issuer_from_the_environment() {
    let key = Key::ec();
    let server = JwksServer::start(vec![key.jwk("k1")]).await;
    let vars = [
        ("JWT_JWKS_URL", server.url.clone()),
        ("JWT_ISSUER", ISSUER.to_string()),
        ("JWT_AUDIENCE", AUDIENCE.to_string()),
        ("JWT_TENANT_CLAIM", "https://idp.example/tenant".to_string()),
    ];
    let config =
        webhooks_local::local_config(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    let runner =
        webhooks_local::Runner::new(&config, b"local-secret", &webhooks_local::Backend::Memory).expect("runner");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, router(runner.state)).into_future());
    let http = reqwest::Client::new();
    let tenant = unique("acme");
    let mut c = claims("ignored-plain-tenant-claim");
    c["https://idp.example/tenant"] = json!(tenant);
    let res = http
        .post(format!("http://{addr}/api/webhooks"))
        .bearer_auth(key.token("k1", &c))
        .json(&json!({"url": "https://example.com/hook", "events": ["*"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    let res = http
        .get(format!("http://{addr}/api/webhooks"))
        .bearer_auth(key.token("k1", &claims(&tenant)))
        .send()
        .await
        .expect("send");
    let list: Value = res.json().await.expect("json");
    assert_eq!(list, json!([]), "the tenant is the configured claim's, not `tenant`");
    let res = http
        .get(format!("http://{addr}/api/webhooks"))
        .bearer_auth(key.token("k1", &c))
        .send()
        .await
        .expect("send");
    let list: Value = res.json().await.expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let res = http
        .get(format!("http://{addr}/api/webhooks"))
        .bearer_auth(key.token("k2", &c))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 401);
}
