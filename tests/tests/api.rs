//! The management API, driven in-process through the router (memory and DynamoDB stores) and
//! over HTTP through the local runner.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use webhooks::auth::{self, Claims, JwtVerifier};
use webhooks::delivery::Deliverer;
use webhooks::dynamo::DynamoWebhookStore;
use webhooks::memory::{MemoryDeliveryLog, MemoryQueue, MemoryWebhookStore};
use webhooks::ports::WebhookStore;
use webhooks::resources::{WEBHOOKS_TABLE, create_table};
use webhooks::signing;
use webhooks::ssrf::TargetPolicy;
use webhooks_api::{AppState, router};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer, closed_port, emulator, unique};

const STRICT: TargetPolicy = TargetPolicy {
    allow_http: false,
    allow_private: false,
};

fn app_with(store: Arc<dyn WebhookStore>, policy: TargetPolicy, verifier: JwtVerifier) -> Router {
    let queue = Arc::new(MemoryQueue::new());
    let events_queue_url = queue.create_queue("events", Duration::from_secs(30), None);
    let delivery_queue_url = queue.create_queue("jobs", Duration::from_secs(30), None);
    router(AppState {
        store,
        log: Arc::new(MemoryDeliveryLog::new()),
        events: Arc::new(webhooks::memory::MemoryEventStore::new()),
        queue,
        events_queue_url,
        delivery_queue_url,
        recover_page: 100,
        verifier: Arc::new(verifier),
        deliverer: Deliverer::new(policy).expect("client"),
        test_timeout: Duration::from_secs(1),
    })
}

fn app(policy: TargetPolicy) -> Router {
    app_with(
        Arc::new(MemoryWebhookStore::new()),
        policy,
        JwtVerifier::new(JWT_SECRET, None, None),
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(app: &Router, method: &str, path: &str, auth: Option<&str>, body: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("router never fails");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "errors are problem details: {body}"
        );
        assert_eq!(body["status"], status.as_u16());
    }
    Answer { status, headers, body }
}

fn is_iso_ms(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && webhooks::time::parse_iso(s).is_some()
}

/// The whole CRUD life of a webhook, as the guide describes it, on any store.
async fn crud_scenario(app: &Router) {
    let alice = bearer(&unique("alice"));
    let body = r#"{"url":"https://example.com/webhook","events":["workflow.execution.completed","task.execution.failed"],"secret":"your-webhook-secret"}"#;
    let created = call(app, "POST", "/api/webhooks", Some(&alice), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let w = created.body;
    let id = w["id"].as_str().expect("string id").to_string();
    assert!(id.starts_with("wh_") && id.len() == 29);
    assert_eq!(created.headers["location"], format!("/api/webhooks/{id}"));
    assert_eq!(w["url"], "https://example.com/webhook");
    assert_eq!(
        w["events"],
        json!(["workflow.execution.completed", "task.execution.failed"])
    );
    assert_eq!(w["secret"], "your-webhook-secret");
    assert_eq!(w["active"], true);
    assert!(is_iso_ms(&w["createdAt"]) && is_iso_ms(&w["updatedAt"]), "{w}");
    let keys: Vec<&str> = w.as_object().expect("object").keys().map(String::as_str).collect();
    for k in ["id", "url", "events", "secret", "active", "createdAt", "updatedAt"] {
        assert!(keys.contains(&k), "response lacks {k}");
    }

    // Get and list never show the stored secret, only whether there is one.
    let got = call(app, "GET", &format!("/api/webhooks/{id}"), Some(&alice), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.get("secret"), None);
    assert_eq!(got.body["hasSecret"], true);
    let list = call(app, "GET", "/api/webhooks", Some(&alice), None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().expect("array").len(), 1);
    assert!(!list.body.to_string().contains("your-webhook-secret"));

    // PUT is partial: omitted fields keep their value; the response is the updated webhook.
    let put = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(r#"{"active":false}"#),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["active"], false);
    assert_eq!(put.body["url"], "https://example.com/webhook");
    assert_eq!(put.body["events"], w["events"]);
    assert_eq!(put.body["createdAt"], w["createdAt"]);
    assert_eq!(put.body.get("secret"), None);
    // Sending back what GET returned changes nothing and keeps the secret.
    let round_trip = got.body.to_string();
    let put = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(&round_trip),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["hasSecret"], true);
    let guide = r#"{"url":"https://example.com/updated-webhook","events":["workflow.execution.completed","workflow.execution.failed"],"active":true}"#;
    let put = call(app, "PUT", &format!("/api/webhooks/{id}"), Some(&alice), Some(guide)).await;
    assert_eq!(put.body["url"], "https://example.com/updated-webhook");
    assert_eq!(
        put.body["events"],
        json!(["workflow.execution.completed", "workflow.execution.failed"])
    );
    let put = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(r#"{"secret":"rotated-secret-0123"}"#),
    )
    .await;
    assert_eq!(put.body["secret"], "rotated-secret-0123", "a new secret is shown once");
    let put = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(r#"{"secret":null}"#),
    )
    .await;
    assert_eq!(put.body["hasSecret"], false);

    // Invalid updates are refused and change nothing.
    let before = call(app, "GET", &format!("/api/webhooks/{id}"), Some(&alice), None)
        .await
        .body;
    for bad in [
        r#"{"url":"ftp://x"}"#,
        r#"{"events":[]}"#,
        r#"{"active":"yes"}"#,
        r#"{"events":["nope"]}"#,
        r#"{"colour":1}"#,
    ] {
        let r = call(app, "PUT", &format!("/api/webhooks/{id}"), Some(&alice), Some(bad)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
        assert!(r.body["errors"][0]["field"].is_string());
    }
    let after = call(app, "GET", &format!("/api/webhooks/{id}"), Some(&alice), None)
        .await
        .body;
    assert_eq!(before, after);

    // Another tenant: 404 for every verb, and an empty list.
    let mallory = bearer(&unique("mallory"));
    for (method, body) in [("GET", None), ("PUT", Some(r#"{"active":true}"#)), ("DELETE", None)] {
        let r = call(app, method, &format!("/api/webhooks/{id}"), Some(&mallory), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
    }
    assert_eq!(
        call(app, "GET", "/api/webhooks", Some(&mallory), None).await.body,
        json!([])
    );

    // Delete, then it is gone for good.
    let del = call(app, "DELETE", &format!("/api/webhooks/{id}"), Some(&alice), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(del.body, Value::Null);
    assert_eq!(
        call(app, "GET", &format!("/api/webhooks/{id}"), Some(&alice), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(app, "DELETE", &format!("/api/webhooks/{id}"), Some(&alice), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(r#"{"active":true}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a deleted webhook is not resurrected");
}

#[tokio::test]
async fn crud_over_the_memory_store() {
    crud_scenario(&app(STRICT)).await;
}

#[tokio::test]
async fn crud_over_dynamodb() {
    let Some(sdk) = emulator().await else { return };
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("webhooks");
    create_table(&client, &WEBHOOKS_TABLE, &table).await.expect("table");
    let store = Arc::new(DynamoWebhookStore::new(client, table));
    crud_scenario(&app_with(store, STRICT, JwtVerifier::new(JWT_SECRET, None, None))).await;
}

/// `POST /api/webhooks/{id}/rotate-secret` on any store: generated or chosen secrets, shown
/// once; the replaced ones listed with their expiry and never shown; bounds and bad bodies
/// refused without a change; tenant-isolated; and conditional, so racing PUTs lose nothing.
async fn rotation_scenario(app: &Router) {
    let alice = bearer(&unique("alice"));
    let created = call(
        app,
        "POST",
        "/api/webhooks",
        Some(&alice),
        Some(r#"{"url":"https://example.com/hook","events":["system.info"],"secret":"first-secret-chosen-by-the-user-0001"}"#),
    )
    .await;
    let id = created.body["id"].as_str().expect("id").to_string();
    let rotate = format!("/api/webhooks/{id}/rotate-secret");
    let path = format!("/api/webhooks/{id}");
    let get = || call(app, "GET", &path, Some(&alice), None);

    // No body at all: a generated secret and the default overlap of a day.
    let r = call(app, "POST", &rotate, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let generated = r.body["secret"].as_str().expect("shown once");
    assert!(
        generated.starts_with("whsec_") && generated.len() == 6 + 44,
        "{generated}"
    );
    let expires = r.body["previousSecrets"][0]["expiresAt"].clone();
    assert!(is_iso_ms(&expires));
    let in_a_day = webhooks::time::parse_iso(expires.as_str().unwrap_or_default()).unwrap_or_default();
    let now = webhooks::time::now_ms();
    assert!(in_a_day > now + 86_300_000 && in_a_day <= now + 86_400_000, "{expires}");
    let r = call(
        app,
        "POST",
        &rotate,
        Some(&alice),
        Some(r#"{"secret":"chosen-secret-of-the-user-0123456789","overlapSeconds":60}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["secret"], "chosen-secret-of-the-user-0123456789");
    assert_eq!(r.body["previousSecrets"].as_array().map(Vec::len), Some(2));
    let shown = get().await.body;
    assert_eq!(shown.get("secret"), None);
    for s in [
        "first-secret-chosen-by-the-user-0001",
        generated,
        "chosen-secret-of-the-user-0123456789",
    ] {
        assert!(!shown.to_string().contains(s), "GET shows no secret");
    }
    assert_eq!(shown["previousSecrets"], r.body["previousSecrets"]);
    // What GET returned can be sent back: the rotation state is read-only and kept.
    let put = call(
        app,
        "PUT",
        &format!("/api/webhooks/{id}"),
        Some(&alice),
        Some(&shown.to_string()),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["previousSecrets"], shown["previousSecrets"]);

    // Bounded: a third replaced secret is kept, a fourth is refused and changes nothing.
    let r = call(app, "POST", &rotate, Some(&alice), Some("{}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let before = get().await.body;
    let r = call(app, "POST", &rotate, Some(&alice), Some("{}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("overlapSeconds 0"),
        "{}",
        r.body
    );
    for (bad, field) in [
        (r#"{"overlapSeconds":-1}"#, "overlapSeconds"),
        (r#"{"overlapSeconds":604801}"#, "overlapSeconds"),
        (r#"{"overlapSeconds":"60"}"#, "overlapSeconds"),
        (r#"{"overlapSeconds":1.5}"#, "overlapSeconds"),
        (r#"{"secret":""}"#, "secret"),
        (r#"{"secret":null}"#, "secret"),
        (r#"{"secret":7}"#, "secret"),
        (r#"{"colour":1}"#, "colour"),
        ("[]", ""),
    ] {
        let r = call(app, "POST", &rotate, Some(&alice), Some(bad)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"], field, "{bad}");
    }
    let long = json!({"secret": "s".repeat(webhooks::domain::MAX_SECRET_LEN + 1)}).to_string();
    let r = call(app, "POST", &rotate, Some(&alice), Some(&long)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(app, "POST", &rotate, Some(&alice), Some("{not json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(get().await.body, before, "refused rotations change nothing");

    // Another tenant, an unknown id: 404 and nothing rotated.
    let mallory = bearer(&unique("mallory"));
    assert_eq!(
        call(app, "POST", &rotate, Some(&mallory), Some("{}")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = call(
        app,
        "POST",
        "/api/webhooks/wh_01jz0000000000000000000000/rotate-secret",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(get().await.body, before);

    // An overlap of 0 revokes every replaced secret at once (a leaked secret).
    let r = call(app, "POST", &rotate, Some(&alice), Some(r#"{"overlapSeconds":0}"#)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["previousSecrets"], json!([]));

    // Rotations racing PUTs: each is applied to what the other wrote, none is lost.
    let events = r#"{"events":["system.warning"]}"#;
    let (a, b, c, d) = tokio::join!(
        call(app, "POST", &rotate, Some(&alice), Some(r#"{"overlapSeconds":3600}"#)),
        call(app, "PUT", &path, Some(&alice), Some(events)),
        call(app, "POST", &rotate, Some(&alice), Some(r#"{"overlapSeconds":3600}"#)),
        call(app, "PUT", &path, Some(&alice), Some(r#"{"active":false}"#)),
    );
    for r in [&a, &b, &c, &d] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let end = get().await.body;
    assert_eq!(end["events"], json!(["system.warning"]));
    assert_eq!(end["active"], false);
    assert_eq!(
        end["previousSecrets"].as_array().map(Vec::len),
        Some(2),
        "both rotations kept: {end}"
    );

    // An unsigned webhook (`"secret": null`, the explicit opt-out) gets its first secret.
    let created = call(
        app,
        "POST",
        "/api/webhooks",
        Some(&alice),
        Some(r#"{"url":"https://example.com/hook","events":["*"],"secret":null}"#),
    )
    .await;
    let unsigned = created.body["id"].as_str().expect("id");
    let r = call(
        app,
        "POST",
        &format!("/api/webhooks/{unsigned}/rotate-secret"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (r.body["hasSecret"].clone(), r.body["previousSecrets"].clone()),
        (json!(true), json!([]))
    );
}

#[tokio::test]
async fn rotation_over_the_memory_store() {
    rotation_scenario(&app(STRICT)).await;
}

#[tokio::test]
async fn rotation_over_dynamodb() {
    let Some(sdk) = emulator().await else { return };
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("webhooks");
    create_table(&client, &WEBHOOKS_TABLE, &table).await.expect("table");
    let store = Arc::new(DynamoWebhookStore::new(client, table));
    rotation_scenario(&app_with(store, STRICT, JwtVerifier::new(JWT_SECRET, None, None))).await;
}

#[tokio::test]
async fn listing_is_paginated_with_a_link_header() {
    let app = app(STRICT);
    let t = bearer("pager");
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"url":"https://example.com/{i}","events":["*"]}}"#);
        let r = call(&app, "POST", "/api/webhooks", Some(&t), Some(&body)).await;
        let secret = r.body["secret"].as_str().expect("no secret given: one is generated");
        assert!(secret.starts_with("whsec_"), "{secret}");
        ids.push(r.body["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut path = "/api/webhooks?limit=2".to_string();
    for _ in 0..5 {
        let r = call(&app, "GET", &path, Some(&t), None).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.extend(
            r.body
                .as_array()
                .expect("array")
                .iter()
                .map(|w| w["id"].as_str().expect("id").to_string()),
        );
        let Some(link) = r.headers.get("link") else {
            break;
        };
        let link = link.to_str().expect("ascii");
        assert!(link.ends_with(r#">; rel="next""#), "{link}");
        path = link[1..link.find('>').expect(">")].to_string();
    }
    assert_eq!(seen, ids);
    for bad in [
        "/api/webhooks?limit=0",
        "/api/webhooks?limit=101",
        "/api/webhooks?limit=x",
        "/api/webhooks?cursor=abc",
    ] {
        let r = call(&app, "GET", bad, Some(&t), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(["limit", "cursor"].contains(&r.body["errors"][0]["field"].as_str().expect("field")));
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let app = app(STRICT);
    let t = bearer("validator");
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, StatusCode, &'a str);
    let cases: &[Case] = &[
        ("POST", "/api/webhooks", "", Some("{"), StatusCode::BAD_REQUEST, ""),
        ("POST", "/api/webhooks", "", Some(""), StatusCode::BAD_REQUEST, ""),
        (
            "POST",
            "/api/webhooks",
            "",
            Some("[1]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://x.com"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"events":["*"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"http://x.com","events":["*"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://127.0.0.1/","events":["*"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://localhost/","events":["*"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://x.com","events":["task.execution.exploded"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[0]",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://x.com","events":"*"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://x.com","events":["*"],"secret":42}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret",
        ),
        (
            "POST",
            "/api/webhooks",
            "",
            Some(r#"{"url":"https://x.com","events":["*"],"evnets":[]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "evnets",
        ),
        (
            "POST",
            "/api/webhooks/test",
            "",
            Some(r#"{"url":"https://x.com","event":"*","payload":{}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "event",
        ),
        (
            "POST",
            "/api/webhooks/test",
            "",
            Some(r#"{"url":"https://x.com","event":"system.info"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payload",
        ),
        ("GET", "/api/nothing-here", "", None, StatusCode::NOT_FOUND, ""),
        ("PATCH", "/api/webhooks", "", None, StatusCode::METHOD_NOT_ALLOWED, ""),
        (
            "DELETE",
            "/api/event-types",
            "",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "",
        ),
        ("GET", "/api/webhooks/not-an-id", "", None, StatusCode::NOT_FOUND, ""),
        (
            "GET",
            "/api/webhooks/wh_01jz0000000000000000000000",
            "",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (method, path, _, body, status, field) in cases {
        let r = call(&app, method, path, Some(&t), *body).await;
        assert_eq!(r.status, *status, "{method} {path} {body:?}: {}", r.body);
        assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        if !field.is_empty() {
            let fields: Vec<&str> = r.body["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(
                fields.contains(field),
                "{method} {path}: expected field {field} in {fields:?}"
            );
        }
    }
    // Deep nesting and huge bodies.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(
        call(&app, "POST", "/api/webhooks", Some(&t), Some(&deep)).await.status,
        StatusCode::BAD_REQUEST
    );
    let huge = format!(
        r#"{{"url":"https://x.com","events":["*"],"secret":"{}"}}"#,
        "a".repeat(300 * 1024)
    );
    assert_eq!(
        call(&app, "POST", "/api/webhooks", Some(&t), Some(&huge)).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Wrong media type.
    let req = Request::post("/api/webhooks")
        .header("authorization", &t)
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .expect("req");
    assert_eq!(
        app.clone().oneshot(req).await.expect("res").status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // None of it stored anything.
    assert_eq!(call(&app, "GET", "/api/webhooks", Some(&t), None).await.body, json!([]));
}

#[tokio::test]
async fn event_types_lists_the_whole_catalogue() {
    let r = call(&app(STRICT), "GET", "/api/event-types", Some(&bearer("x")), None).await;
    let list = r.body.as_array().expect("array");
    assert_eq!(list.len(), 24);
    assert_eq!(list[4]["name"], "workflow.execution.completed");
    assert_eq!(
        list[4]["description"],
        "A workflow execution has completed successfully"
    );
    assert!(
        list.iter()
            .all(|e| e["description"].as_str().is_some_and(|d| !d.is_empty()))
    );
}

fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let verifier = JwtVerifier::new(JWT_SECRET, Some("https://issuer.example"), Some("webhooks-api"));
    let app = app_with(Arc::new(MemoryWebhookStore::new()), STRICT, verifier);
    let now = webhooks::time::now_ms() / 1000;
    let good = json!({"sub": "alice", "exp": now + 600, "iss": "https://issuer.example", "aud": "webhooks-api"});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let valid = forge(&hs256, &good, JWT_SECRET);
    assert_eq!(
        call(&app, "GET", "/api/webhooks", Some(&format!("Bearer {valid}")), None)
            .await
            .status,
        StatusCode::OK
    );

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let unsigned = format!(
        "{}.{}.",
        B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64URL.encode(good.to_string())
    );
    let bad_tokens: Vec<(&str, String)> = vec![
        ("expired", forge(&hs256, &with(json!({"exp": now - 3600})), JWT_SECRET)),
        (
            "not yet valid",
            forge(&hs256, &with(json!({"nbf": now + 3600})), JWT_SECRET),
        ),
        ("wrong key", forge(&hs256, &good, b"another-secret")),
        ("alg none", unsigned),
        (
            "HS/RS confusion",
            forge(&json!({"alg": "RS256", "typ": "JWT"}), &good, JWT_SECRET),
        ),
        (
            "HS512",
            forge(&json!({"alg": "HS512", "typ": "JWT"}), &good, JWT_SECRET),
        ),
        (
            "wrong issuer",
            forge(&hs256, &with(json!({"iss": "https://evil.example"})), JWT_SECRET),
        ),
        (
            "wrong audience",
            forge(&hs256, &with(json!({"aud": "other-api"})), JWT_SECRET),
        ),
        ("missing exp", forge(&hs256, &with(json!({"exp": null})), JWT_SECRET)),
        ("no tenant", forge(&hs256, &with(json!({"sub": null})), JWT_SECRET)),
        ("garbage", "not.a.jwt".into()),
        ("empty", String::new()),
        ("oversize", format!("{}.{}.x", "a".repeat(20_000), "b".repeat(10))),
    ];
    let routes = [
        ("GET", "/api/webhooks", None),
        (
            "POST",
            "/api/webhooks",
            Some(r#"{"url":"https://x.com","events":["*"]}"#),
        ),
        ("GET", "/api/webhooks/wh_01jz0000000000000000000000", None),
        ("PUT", "/api/webhooks/wh_01jz0000000000000000000000", Some("{}")),
        ("DELETE", "/api/webhooks/wh_01jz0000000000000000000000", None),
        (
            "POST",
            "/api/webhooks/wh_01jz0000000000000000000000/rotate-secret",
            Some("{}"),
        ),
        (
            "POST",
            "/api/webhooks/test",
            Some(r#"{"url":"https://x.com","event":"system.info","payload":{}}"#),
        ),
        ("GET", "/api/event-types", None),
    ];
    for (method, path, body) in routes {
        let r = call(&app, method, path, None, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(r.headers["www-authenticate"], r#"Bearer realm="webhooks""#);
        for (case, token) in &bad_tokens {
            let r = call(&app, method, path, Some(&format!("Bearer {token}")), body).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case} on {method} {path}");
            assert!(
                r.headers["www-authenticate"]
                    .to_str()
                    .expect("ascii")
                    .starts_with("Bearer"),
                "{case}"
            );
        }
        let r = call(&app, method, path, Some(&format!("Basic {valid}")), body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        call(&app, "GET", "/api/webhooks", None, None).await.body["detail"],
        "missing bearer token"
    );
    let expired = &bad_tokens[0].1;
    let r = call(&app, "GET", "/api/webhooks", Some(&format!("Bearer {expired}")), None).await;
    assert_eq!(r.body["detail"], "token has expired");
}

#[tokio::test]
async fn tenant_claim_owns_what_it_creates() {
    let app = app(STRICT);
    let acme_alice = format!(
        "Bearer {}",
        auth::mint(
            JWT_SECRET,
            &Claims {
                tenant: Some("acme".into()),
                ..auth::claims_for("alice", None, 60)
            }
        )
    );
    let acme_bob = format!(
        "Bearer {}",
        auth::mint(JWT_SECRET, &auth::claims_for("bob", Some("acme"), 60))
    );
    let alice_alone = bearer("alice");
    let r = call(
        &app,
        "POST",
        "/api/webhooks",
        Some(&acme_alice),
        Some(r#"{"url":"https://x.com","events":["*"]}"#),
    )
    .await;
    let path = format!("/api/webhooks/{}", r.body["id"].as_str().expect("id"));
    assert_eq!(
        call(&app, "GET", &path, Some(&acme_bob), None).await.status,
        StatusCode::OK,
        "same tenant, other user"
    );
    assert_eq!(
        call(&app, "GET", &path, Some(&alice_alone), None).await.status,
        StatusCode::NOT_FOUND,
        "sub is not the tenant here"
    );
}

async fn test_call(app: &Router, body: Value) -> Value {
    let r = call(
        app,
        "POST",
        "/api/webhooks/test",
        Some(&bearer("tester")),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let keys: Vec<&String> = r.body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["success", "statusCode", "message", "durationMs", "responseBody"]);
    r.body
}

#[tokio::test]
async fn test_endpoint_sends_a_real_signed_request() {
    let app = app(TargetPolicy::PERMISSIVE);
    let receiver = Receiver::start(Reply::Status(200)).await;
    let payload = json!({"id": "1", "status": "COMPLETED", "ratio": 1.0, "big": 1e21});
    let r = test_call(
        &app,
        json!({"url": receiver.url("/hook"), "event": "workflow.execution.completed",
        "payload": payload, "secret": "your-webhook-secret"}),
    )
    .await;
    assert!(r["durationMs"].is_u64(), "{r}");
    assert_eq!(
        r,
        json!({"success": true, "statusCode": 200, "message": "Webhook delivered successfully",
            "durationMs": r["durationMs"], "responseBody": r["responseBody"]})
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-webhook-event"), Some("workflow.execution.completed"));
    let sig = req.header("x-webhook-signature").expect("signed");
    assert!(signing::verify_guide_signature("your-webhook-secret", &req.body, sig));
    let body: Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(
        body.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["event", "timestamp", "payload"]
    );
    assert_eq!(body["event"], "workflow.execution.completed");
    let ts_ms: u64 = req
        .header("x-webhook-timestamp")
        .expect("timestamp")
        .parse()
        .expect("ms");
    assert_eq!(
        webhooks::time::parse_iso(body["timestamp"].as_str().expect("iso")),
        Some(ts_ms)
    );
    assert_eq!(
        std::str::from_utf8(&req.body)
            .expect("utf8")
            .split(r#""payload":"#)
            .nth(1),
        Some(r#"{"id":"1","status":"COMPLETED","ratio":1,"big":1e+21}}"#),
        "JSON.stringify's numbers"
    );
    let id = req.header("webhook-id").expect("standard id");
    assert_eq!(req.header("x-webhook-id"), Some(id));
    let ts: u64 = req
        .header("webhook-timestamp")
        .expect("standard ts")
        .parse()
        .expect("seconds");
    assert_eq!(
        req.header("webhook-signature").expect("standard sig"),
        signing::standard_signature("your-webhook-secret", id, ts, &req.body)
    );

    // Without a secret there is no signature header, as the guide says.
    test_call(
        &app,
        json!({"url": receiver.url("/plain"), "event": "system.info", "payload": {}}),
    )
    .await;
    let plain = &receiver.received()[1];
    assert_eq!(plain.header("x-webhook-signature"), None);
    assert_eq!(plain.header("webhook-signature"), None);
}

#[tokio::test]
async fn test_endpoint_says_what_went_wrong() {
    let app = app(TargetPolicy::PERMISSIVE);
    let failing = Receiver::start(Reply::Status(500)).await;
    let r = test_call(
        &app,
        json!({"url": failing.url("/"), "event": "system.error", "payload": {}}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["statusCode"], 500);
    assert_eq!(r["message"], "Receiver answered HTTP 500 Internal Server Error");

    let slow = Receiver::start(Reply::Slow(Duration::from_secs(3), 200)).await;
    let r = test_call(
        &app,
        json!({"url": slow.url("/"), "event": "system.error", "payload": {}}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["statusCode"], Value::Null);
    assert_eq!(r["message"], "Timed out after 1 s waiting for the receiver");

    let port = closed_port();
    let r = test_call(
        &app,
        json!({"url": format!("http://127.0.0.1:{port}/"), "event": "system.error", "payload": {}}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert!(
        r["message"]
            .as_str()
            .expect("message")
            .starts_with("Connection refused"),
        "{r}"
    );

    let r = test_call(
        &app,
        json!({"url": "http://no-such-host.invalid/", "event": "system.error", "payload": {}}),
    )
    .await;
    assert_eq!(r["success"], false);
    assert_eq!(r["message"], "DNS lookup failed for no-such-host.invalid");
}

#[tokio::test]
async fn test_endpoint_guards_the_address_it_connects_to() {
    let app = app(TargetPolicy {
        allow_http: true,
        allow_private: false,
    });
    let receiver = Receiver::start(Reply::Status(200)).await;
    for url in [
        receiver.url("/"),
        format!("http://localhost:{}/", receiver.addr.port()),
        format!("http://2130706433:{}/", receiver.addr.port()),
        "http://169.254.169.254/latest/meta-data/".into(),
        format!("http://[::ffff:127.0.0.1]:{}/", receiver.addr.port()),
    ] {
        let r = test_call(&app, json!({"url": url, "event": "system.info", "payload": {}})).await;
        assert_eq!(r["success"], false, "{url}");
        assert!(
            r["message"]
                .as_str()
                .expect("message")
                .starts_with("Target not allowed"),
            "{url}: {r}"
        );
    }
    assert!(receiver.received().is_empty(), "nothing reached the private receiver");
}

#[tokio::test]
async fn local_runner_serves_the_api_over_http() {
    let config =
        webhooks_local::local_config(|k| (k == "JWT_SECRET").then(|| String::from_utf8_lossy(JWT_SECRET).into_owned()))
            .expect("config");
    assert!(
        config.policy.allow_private && config.policy.allow_http,
        "local defaults are permissive"
    );
    let runner = webhooks_local::Runner::new(&config, JWT_SECRET, &webhooks_local::Backend::Memory).expect("runner");
    let addr = runner.spawn(0).await.expect("serve");
    let receiver = Receiver::start(Reply::Status(204)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let t = bearer("local");
    let created: Value = http
        .post(format!("{base}/api/webhooks"))
        .header("authorization", &t)
        .json(&json!({"url": receiver.url("/in"), "events": ["system.info"], "secret": "abc-0123456789abcdef"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let listed: Value = http
        .get(format!("{base}/api/webhooks"))
        .header("authorization", &t)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["id"], id);
    let res = http
        .post(format!("{base}/api/webhooks/test"))
        .header("authorization", &t)
        .json(&json!({"url": receiver.url("/in"), "event": "system.info", "payload": {"n": 1}, "secret": "abc-0123456789abcdef"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.expect("json");
    assert_eq!(
        report,
        json!({"success": true, "statusCode": 204, "message": "Webhook delivered successfully",
            "durationMs": report["durationMs"], "responseBody": report["responseBody"]})
    );
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert!(signing::verify_guide_signature(
        "abc-0123456789abcdef",
        &got[0].body,
        got[0].header("x-webhook-signature").expect("sig")
    ));
    let res = http.get(format!("{base}/api/webhooks")).send().await.expect("send");
    assert_eq!(res.status(), 401);
    let res = http
        .delete(format!("{base}/api/webhooks/{id}"))
        .header("authorization", &t)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn the_openapi_document_is_checked_in_served_and_true_to_the_router() {
    let app = app(STRICT);
    let served = call(&app, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(served.status, StatusCode::OK, "the contract is public");
    assert_eq!(served.body, webhooks_api::openapi::document());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/api/openapi.json");
    let pretty = format!("{}\n", serde_json::to_string_pretty(&served.body).expect("json"));
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(path, &pretty).expect("write openapi.json");
    }
    let checked_in = std::fs::read_to_string(path).expect("functions/api/openapi.json (UPDATE_OPENAPI=1 writes it)");
    assert_eq!(
        checked_in, pretty,
        "functions/api/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p webhooks-tests --test api"
    );

    // Every documented operation is routed, and every other method on a documented path is 405.
    let doc = &served.body["paths"];
    let t = bearer("openapi");
    let mut routed = 0;
    for (path, item) in doc.as_object().expect("paths") {
        let concrete = path
            .replace("{id}", "wh_01jz0000000000000000000000")
            .replace("{deliveryId}", "dl_01jz0000000000000000000000");
        for method in ["get", "post", "put", "delete", "patch"] {
            let documented = item.get(method).is_some();
            assert_eq!(
                documented,
                webhooks_api::openapi::OPERATIONS.contains(&(method, path.as_str())),
                "{method} {path}: OPERATIONS and the document disagree"
            );
            let r = call(&app, &method.to_uppercase(), &concrete, Some(&t), Some("{}")).await;
            if documented {
                routed += 1;
                assert_ne!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    r.body["detail"], "no such route",
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
    assert_eq!(routed, webhooks_api::openapi::OPERATIONS.len());
}

/// `GET /api/webhooks/{id}/stats` counts the last 24 h of the delivery log by status, leaves
/// older deliveries and other webhooks out, and reads at most 1000 deliveries (then says the
/// counts are incomplete); another tenant gets 404.
#[tokio::test]
async fn stats_count_the_last_day_of_the_delivery_log() {
    use webhooks::ports::{Attempt, Delivery, DeliveryLog, DeliveryStatus};
    let store: Arc<dyn WebhookStore> = Arc::new(MemoryWebhookStore::new());
    let log: Arc<dyn DeliveryLog> = Arc::new(MemoryDeliveryLog::new());
    let queue = Arc::new(MemoryQueue::new());
    let events_queue_url = queue.create_queue("events", Duration::from_secs(30), None);
    let delivery_queue_url = queue.create_queue("jobs", Duration::from_secs(30), None);
    let app = router(AppState {
        store,
        log: log.clone(),
        events: Arc::new(webhooks::memory::MemoryEventStore::new()),
        queue,
        events_queue_url,
        delivery_queue_url,
        recover_page: 100,
        verifier: Arc::new(JwtVerifier::new(JWT_SECRET, None, None)),
        deliverer: Deliverer::new(TargetPolicy::PERMISSIVE).expect("client"),
        test_timeout: Duration::from_secs(1),
    });
    let tenant = unique("acme");
    let t = bearer(&tenant);
    let mut hooks = Vec::new();
    for _ in 0..2 {
        let created = call(
            &app,
            "POST",
            "/api/webhooks",
            Some(&t),
            Some(r#"{"url":"https://example.com/h","events":["*"]}"#),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED);
        hooks.push(created.body["id"].as_str().expect("id").to_string());
    }
    let now = webhooks::time::now_ms();
    let add = |hook: String, event_ms: u64, n: u64, status: DeliveryStatus, code: u16| {
        let (log, tenant) = (log.clone(), tenant.clone());
        async move {
            let event_id = format!("evt-{event_ms}-{n}");
            let d = Delivery {
                id: webhooks::retry::delivery_id(&tenant, &event_id, &hook, event_ms),
                tenant: tenant.clone(),
                webhook_id: hook,
                event_id,
                event: "system.info".into(),
                status: DeliveryStatus::Pending,
                created_at: event_ms,
                updated_at: event_ms,
                attempts: Vec::new(),
                note: None,
                expires_at: event_ms / 1000 + 86_400,
                cycle: 0,
                cycle_start: 0,
                next_attempt_at: None,
            };
            if status == DeliveryStatus::Skipped {
                log.finish(&d, status, "webhook is inactive", event_ms)
                    .await
                    .expect("finish");
                return;
            }
            let attempt = Attempt {
                attempt: 1,
                at: event_ms,
                status_code: Some(code),
                duration_ms: 3,
                message: String::new(),
                response_body: None,
            };
            let (after, next) = match status {
                DeliveryStatus::Succeeded => (DeliveryStatus::Succeeded, None),
                _ => (DeliveryStatus::Pending, Some(event_ms + 1000)),
            };
            log.record_attempt(&d, &attempt, after, next, event_ms)
                .await
                .expect("record");
            if status == DeliveryStatus::Failed {
                log.finish(&d, status, "gave up", event_ms).await.expect("finish");
            }
        }
    };
    let hour = 3_600_000;
    for n in 0..6 {
        add(hooks[0].clone(), now - hour - n, n, DeliveryStatus::Succeeded, 200).await;
    }
    add(hooks[0].clone(), now - 2 * hour, 0, DeliveryStatus::Failed, 500).await;
    add(hooks[0].clone(), now - 3 * hour, 0, DeliveryStatus::Failed, 503).await;
    add(hooks[0].clone(), now - 4 * hour, 0, DeliveryStatus::Pending, 500).await;
    add(hooks[0].clone(), now - 5 * hour, 0, DeliveryStatus::Skipped, 0).await;
    // Outside the window, and another webhook's.
    add(hooks[0].clone(), now - 25 * hour, 0, DeliveryStatus::Failed, 500).await;
    add(hooks[1].clone(), now - hour, 0, DeliveryStatus::Failed, 500).await;

    let stats = call(
        &app,
        "GET",
        &format!("/api/webhooks/{}/stats", hooks[0]),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    let b = &stats.body;
    assert_eq!(
        b["byStatus"],
        json!({"pending": 1, "succeeded": 6, "failed": 2, "skipped": 1}),
        "{b}"
    );
    assert_eq!(b["total"], 10);
    assert_eq!(b["successRate"], json!(0.75));
    assert_eq!(b["attempts"], 9);
    assert_eq!(b["failedAttempts"], 3);
    assert_eq!(b["complete"], true);

    // Bounded: past 1000 deliveries in the window the newest 1000 are counted.
    for n in 0..1000 {
        add(hooks[1].clone(), now - 60_000 - n, n, DeliveryStatus::Succeeded, 200).await;
    }
    let stats = call(
        &app,
        "GET",
        &format!("/api/webhooks/{}/stats", hooks[1]),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(stats.body["total"], 1000, "{}", stats.body);
    assert_eq!(stats.body["complete"], false);
    assert_eq!(stats.body["byStatus"]["succeeded"], 1000, "the newest are counted");
    assert_eq!(stats.body["successRate"], json!(1.0));

    let other = call(
        &app,
        "GET",
        &format!("/api/webhooks/{}/stats", hooks[0]),
        Some(&bearer(&unique("other"))),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let empty = call(
        &app,
        "GET",
        "/api/webhooks/wh_01jz0000000000000000000000/stats",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(empty.status, StatusCode::NOT_FOUND);
}
