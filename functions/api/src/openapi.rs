//! The OpenAPI 3.1 document of the API, built from the code's own catalogue, limits and
//! shapes, served at `GET /api/openapi.json` and checked in as `functions/api/openapi.json`.
//! A test fails when the checked-in file, the served document and the router disagree.

use serde_json::{Value, json};
use webhooks::auth::MAX_TOKEN_LEN;
use webhooks::delivery::MAX_RESPONSE_BODY;
use webhooks::domain::{
    DEFAULT_OVERLAP_S, MAX_EVENT_ID_LEN, MAX_EVENTS, MAX_OVERLAP_S, MAX_PAYLOAD_BYTES, MAX_PREVIOUS_SECRETS,
    MAX_SECRET_LEN, MIN_SECRET_LEN,
};
use webhooks::event_types::{EVENT_TYPES, EventFilter};
use webhooks::ports::MAX_RECORDED_FAN_OUT;
use webhooks::ssrf::MAX_URL_LEN;

use crate::extract::MAX_BODY_BYTES;
use crate::{DEFAULT_PAGE, MAX_PAGE, STATS_MAX_DELIVERIES};

/// Every (method, path) the router serves, as the document names them.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/api/webhooks"),
    ("post", "/api/webhooks"),
    ("post", "/api/webhooks/test"),
    ("get", "/api/webhooks/{id}"),
    ("put", "/api/webhooks/{id}"),
    ("delete", "/api/webhooks/{id}"),
    ("post", "/api/webhooks/{id}/test"),
    ("post", "/api/webhooks/{id}/rotate-secret"),
    ("get", "/api/webhooks/{id}/deliveries"),
    ("get", "/api/webhooks/{id}/deliveries/{deliveryId}"),
    ("post", "/api/webhooks/{id}/deliveries/{deliveryId}/resend"),
    ("post", "/api/webhooks/{id}/recover"),
    ("get", "/api/events"),
    ("get", "/api/webhooks/{id}/stats"),
    ("post", "/api/events"),
    ("get", "/api/events/{id}"),
    ("get", "/api/event-types"),
    ("get", "/api/openapi.json"),
];

/// Every subscription filter: the 24 types, each `prefix.*` wildcard, and `*`.
fn filters() -> Vec<String> {
    let mut out: Vec<String> = EVENT_TYPES.iter().map(|(n, _)| n.to_string()).collect();
    let mut wildcards: Vec<String> = Vec::new();
    for (name, _) in EVENT_TYPES {
        let parts: Vec<&str> = name.split('.').collect();
        for n in 1..parts.len() {
            let w = format!("{}.*", parts[..n].join("."));
            if EventFilter::parse(&w).is_some() && !wildcards.contains(&w) {
                wildcards.push(w);
            }
        }
    }
    out.extend(wildcards);
    out.push("*".into());
    out
}

fn problem_responses(mut ok: serde_json::Map<String, Value>) -> Value {
    let problem = json!({"description": "Problem details (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    ok.insert("4XX".into(), problem);
    Value::Object(ok)
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// A shape of URL that is always well formed, so generated requests reach the interesting
/// checks. The API accepts more (any absolute http(s) URL the WHATWG parser takes) and, in
/// production, refuses some of these (private addresses): that is why the contract run does
/// not check positive/negative acceptance against this pattern.
const URL_PATTERN: &str = "^https?://([a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\\.){0,3}[a-z]([a-z0-9-]{0,20}[a-z0-9])?(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$";
/// Ids and cursors: a prefix and 26 Crockford base32 characters.
fn id_pattern(prefix: &str) -> String {
    format!("^{prefix}_[0-9a-hjkmnp-tv-z]{{26}}$")
}

fn page_params(cursor_prefix: &str) -> Value {
    json!([
        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
        {"name": "cursor", "in": "query", "required": false, "description": "The cursor of the next page, from the Link header",
            "schema": {"type": "string", "pattern": id_pattern(cursor_prefix)}}
    ])
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn link_header() -> Value {
    json!({"Link": {"description": "`<…?limit=N&cursor=C>; rel=\"next\"` when there is a next page", "schema": {"type": "string"}}})
}

/// What a client can do next with a created webhook (schemathesis follows these statefully).
fn webhook_links() -> Value {
    let by_id = json!({"id": "$response.body#/id"});
    json!({
        "TestRegisteredWebhook": {"operationId": "testRegisteredWebhook", "parameters": by_id},
        "GetWebhook": {"operationId": "getWebhook", "parameters": by_id},
        "UpdateWebhook": {"operationId": "updateWebhook", "parameters": by_id},
        "DeleteWebhook": {"operationId": "deleteWebhook", "parameters": by_id},
        "ListDeliveries": {"operationId": "listDeliveries", "parameters": by_id},
        "GetWebhookStats": {"operationId": "getWebhookStats", "parameters": by_id},
        "RotateSecret": {"operationId": "rotateSecret", "parameters": by_id},
    })
}

/// `POST …/resend` (apart: one `json!` of the whole document would pass the macro recursion limit).
fn resend_path() -> Value {
    let r = |v: Value| v.as_object().cloned().unwrap_or_default();
    json!({
                "parameters": [id_param("id"), id_param("deliveryId")],
                "post": {"operationId": "resendDelivery",
                    "summary": "Send a succeeded, failed or skipped delivery again: same id and body, a fresh cycle of attempts on the current schedule, appended to its log",
                    "responses": problem_responses(r(json!({"202": json_response("Queued", json!({"$ref": "#/components/schemas/Resent"})),
                        "409": {"description": "The delivery is still being attempted, or the webhook is inactive",
                            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
                        "410": {"description": "The delivery's event is no longer stored (DELIVERY_RETENTION_DAYS)",
                            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}})))}
    })
}

pub fn document() -> Value {
    let r = |v: Value| v.as_object().cloned().unwrap_or_default();
    let webhook = json!({"$ref": "#/components/schemas/Webhook"});
    let delivery = json!({"$ref": "#/components/schemas/Delivery"});
    let filters = filters();
    let event_names: Vec<&str> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
    let secret = json!({"type": ["string", "null"], "minLength": MIN_SECRET_LEN, "maxLength": MAX_SECRET_LEN,
        "description": format!("Signs deliveries (HMAC-SHA256). Left out when creating: one is generated (whsec_ + base64 of 32 random bytes) and returned once. null: unsigned deliveries. A chosen secret is {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters; one that starts with whsec_ must go on with the base64 of 24 to 64 bytes (Standard Webhooks)")});
    let url = json!({"type": "string", "maxLength": MAX_URL_LEN, "pattern": URL_PATTERN, "description": "Absolute https URL (http only where the operator allows it); private, loopback, link-local and metadata addresses are refused unless the operator allows them"});
    let events =
        json!({"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": {"type": "string", "enum": filters}});
    let payload = json!({"type": "object", "description": format!("Any JSON object of at most {MAX_PAYLOAD_BYTES} bytes as compact JSON")});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Webhooks API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Register webhooks, send signed test deliveries, submit events and read the delivery log. Request bodies are at most {MAX_BODY_BYTES} bytes; bearer tokens at most {MAX_TOKEN_LEN} bytes."),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/webhooks": {
                "get": {"operationId": "listWebhooks", "summary": "The caller's webhooks in creation order", "parameters": page_params("wh"),
                    "responses": problem_responses(r(json!({"200": {"description": "A page of webhooks", "headers": link_header(),
                        "content": {"application/json": {"schema": {"type": "array", "items": webhook}}}}})))},
                "post": {"operationId": "createWebhook", "summary": "Register a webhook", "requestBody": body("CreateWebhook"),
                    "responses": problem_responses(r(json!({"201": {"description": "Created; `secret` is shown in full this once",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": webhook}},
                        "links": webhook_links()}})))}
            },
            "/api/webhooks/test": {
                "post": {"operationId": "testWebhook", "summary": "Send one signed delivery now and report what happened", "requestBody": body("TestWebhook"),
                    "responses": problem_responses(r(json!({"200": json_response("The outcome", json!({"$ref": "#/components/schemas/TestResult"}))})))}
            },
            "/api/webhooks/{id}/test": {
                "parameters": [id_param("id")],
                "post": {"operationId": "testRegisteredWebhook", "summary": "Send one signed delivery to this webhook (its URL and secret) now and report what happened; nothing is queued or logged",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TestRegisteredWebhook"}}}},
                    "responses": problem_responses(r(json!({"200": json_response("The outcome", json!({"$ref": "#/components/schemas/TestResult"}))})))}
            },
            "/api/webhooks/{id}": {
                "parameters": [id_param("id")],
                "get": {"operationId": "getWebhook", "responses": problem_responses(r(json!({"200": json_response("The webhook", webhook.clone())})))},
                "put": {"operationId": "updateWebhook", "summary": "Change any of url, events, active, secret; omitted fields keep their value", "requestBody": body("UpdateWebhook"),
                    "responses": problem_responses(r(json!({"200": json_response("The updated webhook", webhook.clone())})))},
                "delete": {"operationId": "deleteWebhook", "responses": problem_responses(r(json!({"204": {"description": "Deleted"}})))}
            },
            "/api/webhooks/{id}/rotate-secret": {
                "parameters": [id_param("id")],
                "post": {"operationId": "rotateSecret", "summary": "Replace the signing secret; the secrets valid now keep signing for overlapSeconds",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RotateSecret"}}}},
                    "responses": problem_responses(r(json!({"200": json_response("The webhook; `secret` (the new one) is shown in full this once", webhook.clone())})))}
            },
            "/api/webhooks/{id}/deliveries": {
                "parameters": [id_param("id")],
                "get": {"operationId": "listDeliveries", "summary": "Deliveries to this webhook, newest first", "parameters": page_params("dl"),
                    "responses": problem_responses(r(json!({"200": {"description": "A page of deliveries", "headers": link_header(),
                        "content": {"application/json": {"schema": {"type": "array", "items": delivery}}}}})))}
            },
            "/api/webhooks/{id}/deliveries/{deliveryId}": {
                "parameters": [id_param("id"), id_param("deliveryId")],
                "get": {"operationId": "getDelivery", "responses": problem_responses(r(json!({"200": json_response("The delivery and its attempts", delivery.clone())})))}
            },
            "/api/webhooks/{id}/stats": {
                "parameters": [id_param("id")],
                "get": {"operationId": "getWebhookStats", "summary": format!("Deliveries of the last 24 h by status, from the delivery log (at most the newest {STATS_MAX_DELIVERIES})"),
                    "responses": problem_responses(r(json!({"200": json_response("Counts and success rate", json!({"$ref": "#/components/schemas/WebhookStats"}))})))}
            },
            "/api/event-types": {
                "get": {"operationId": "listEventTypes", "responses": problem_responses(r(json!({"200": json_response("Every event type",
                    json!({"type": "array", "items": {"$ref": "#/components/schemas/EventType"}}))})))}
            },
            "/api/openapi.json": {
                "get": {"operationId": "openapi", "security": [], "responses": {"200": json_response("This document", json!({"type": "object"}))}}
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256 with JWT_SECRET; RS256 or ES256 from the JWT_JWKS_URL issuer)"}},
            "schemas": {
                "CreateWebhook": {"type": "object", "additionalProperties": false, "required": ["url", "events"],
                    "properties": {"url": url, "events": events, "secret": secret, "active": {"type": "boolean", "default": true}}},
                "UpdateWebhook": {"type": "object", "additionalProperties": false,
                    "properties": {"url": url, "events": events, "secret": secret, "active": {"type": "boolean"},
                        "id": {"description": "ignored"}, "createdAt": {"description": "ignored"}, "updatedAt": {"description": "ignored"}, "hasSecret": {"description": "ignored"},
                        "previousSecrets": {"description": "ignored"},
                        "health": {"description": "ignored"}, "disabledReason": {"description": "ignored"}, "disabledAt": {"description": "ignored"}}},
                "RotateSecret": {"type": "object", "additionalProperties": false,
                    "properties": {"secret": {"type": "string", "minLength": 1, "maxLength": MAX_SECRET_LEN, "description": "The new secret; absent: a generated `whsec_` + base64 of 32 random bytes"},
                        "overlapSeconds": {"type": "integer", "minimum": 0, "maximum": MAX_OVERLAP_S, "default": DEFAULT_OVERLAP_S,
                            "description": format!("How long the secrets valid now keep signing beside the new one (0 revokes them at once). At most {MAX_PREVIOUS_SECRETS} replaced secrets are kept: a rotation that would keep more is refused with 409")}}},
                "TestWebhook": {"type": "object", "additionalProperties": false, "required": ["url", "event", "payload"],
                    "properties": {"url": url, "event": {"type": "string", "enum": event_names}, "payload": payload, "secret": secret}},
                "SubmitEvent": {"type": "object", "additionalProperties": false, "required": ["event", "payload"],
                    "properties": {"event": {"type": "string", "enum": event_names}, "payload": payload,
                        "id": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID_LEN, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                            "description": "Idempotency key: one fan-out per tenant and id"}}},
                "Webhook": {"type": "object", "required": ["id", "url", "events", "active", "hasSecret", "previousSecrets", "createdAt", "updatedAt", "health"],
                    "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
                        "active": {"type": "boolean"}, "hasSecret": {"type": "boolean"},
                        "previousSecrets": {"type": "array", "maxItems": MAX_PREVIOUS_SECRETS, "description": "Secrets a rotation replaced that still sign, newest first (never the secrets themselves)",
                            "items": {"type": "object", "required": ["expiresAt"], "properties": {"expiresAt": {"type": "string", "format": "date-time"}}}},
                        "secret": {"type": ["string", "null"], "description": "Only in the response that sets it"},
                        "createdAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"},
                        "disabledReason": {"type": "string", "description": "Why the dispatcher disabled the webhook (`active: false`); cleared by re-enabling it"},
                        "disabledAt": {"type": "string", "format": "date-time"},
                        "health": {"$ref": "#/components/schemas/Health"}}},
                "Health": {"type": "object", "description": "The endpoint's health, recorded by the dispatcher on changes of state only",
                    "required": ["status", "consecutiveFailures", "failingSince", "lastSuccessAt", "lastFailureAt", "lastError", "nextProbeAt"],
                    "properties": {"status": {"type": "string", "enum": ["healthy", "failing", "open"], "description": "open: the circuit breaker holds deliveries back until nextProbeAt"},
                        "consecutiveFailures": {"type": "integer", "minimum": 0},
                        "failingSince": {"type": ["string", "null"], "format": "date-time", "description": "The first failure since the last success"},
                        "lastSuccessAt": {"type": ["string", "null"], "format": "date-time", "description": "The last success that changed the state (the first, or the first after failures)"},
                        "lastFailureAt": {"type": ["string", "null"], "format": "date-time"},
                        "lastError": {"type": ["string", "null"]},
                        "nextProbeAt": {"type": ["string", "null"], "format": "date-time", "description": "While the breaker is open: when one delivery is let through to probe the endpoint"}}},
                "TestRegisteredWebhook": {"type": "object", "additionalProperties": false,
                    "properties": {"event": {"type": "string", "enum": event_names, "description": "Default: the first type the webhook subscribes to"},
                        "payload": {"type": "object", "description": format!("Default {{\"test\": true}}; any JSON object of at most {MAX_PAYLOAD_BYTES} bytes as compact JSON")}}},
                "TestResult": {"type": "object", "required": ["success", "statusCode", "message", "durationMs", "responseBody"],
                    "properties": {"success": {"type": "boolean"}, "statusCode": {"type": ["integer", "null"]}, "message": {"type": "string"},
                        "durationMs": {"type": "integer", "minimum": 0, "description": "From the start of the request to the end of the response (or the failure)"},
                        "responseBody": {"type": ["string", "null"], "description": format!("The first {MAX_RESPONSE_BODY} bytes of the response")},
                        "webhookId": {"type": "string", "description": "Testing a registered webhook: which one"},
                        "event": {"type": "string", "description": "Testing a registered webhook: the event type sent"}}},
                "EventAccepted": {"type": "object", "required": ["id", "event", "timestamp", "status", "duplicate"],
                    "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                        "timestamp": {"type": "string", "format": "date-time", "description": "The event's time: for a duplicate, the original submission's"},
                        "status": {"type": "string", "enum": ["queued", "duplicate"]},
                        "duplicate": {"type": "boolean", "description": "True when this id was already accepted: nothing new was enqueued"}}},
                "Attempt": {"type": "object", "required": ["attempt", "at", "statusCode", "durationMs", "message", "responseBody"],
                    "properties": {"attempt": {"type": "integer", "minimum": 1}, "at": {"type": "string", "format": "date-time"},
                        "statusCode": {"type": ["integer", "null"]}, "durationMs": {"type": "integer"}, "message": {"type": "string"},
                        "responseBody": {"type": ["string", "null"], "description": format!("The first {MAX_RESPONSE_BODY} bytes of the response")}}},
                "Delivery": {"type": "object", "required": ["id", "webhookId", "eventId", "event", "status", "createdAt", "updatedAt", "attempts"],
                    "properties": {"id": {"type": "string"}, "webhookId": {"type": "string"}, "eventId": {"type": "string"}, "event": {"type": "string"},
                        "status": {"type": "string", "enum": ["pending", "succeeded", "failed", "skipped"]}, "note": {"type": "string"},
                        "createdAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"},
                        "nextAttemptAt": {"type": "string", "format": "date-time", "description": "When a pending delivery is tried next"},
                        "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}}}},
                "WebhookStats": {"type": "object", "required": ["webhookId", "from", "to", "total", "byStatus", "successRate", "attempts", "failedAttempts", "complete"],
                    "properties": {"webhookId": {"type": "string"},
                        "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
                        "total": {"type": "integer", "minimum": 0, "maximum": STATS_MAX_DELIVERIES},
                        "byStatus": {"type": "object", "required": ["pending", "succeeded", "failed", "skipped"],
                            "properties": {"pending": {"type": "integer"}, "succeeded": {"type": "integer"}, "failed": {"type": "integer"}, "skipped": {"type": "integer"}}},
                        "successRate": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "succeeded / (succeeded + failed); null when none ended so"},
                        "attempts": {"type": "integer"}, "failedAttempts": {"type": "integer"},
                        "complete": {"type": "boolean", "description": format!("false when the window held more than {STATS_MAX_DELIVERIES} deliveries: the counts are of the newest")}}},
                "EventType": {"type": "object", "required": ["name", "description", "category"],
                    "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "category": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"],
                            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}}
            }
        }
    });
    // Added apart: one `json!` of the whole document passes the macro recursion limit.
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), event_paths(&event_names)) {
        paths.insert(
            "/api/webhooks/{id}/deliveries/{deliveryId}/resend".into(),
            resend_path(),
        );
        paths.insert("/api/webhooks/{id}/recover".into(), recover_path());
        paths.extend(more);
    }
    if let (Some(schemas), Value::Object(more)) = (doc["components"]["schemas"].as_object_mut(), event_schemas()) {
        schemas.extend(more);
    }
    doc
}

fn recover_path() -> Value {
    let r = |v: Value| v.as_object().cloned().unwrap_or_default();
    let time = |d: &str| json!({"type": "string", "format": "date-time", "description": d});
    json!({
        "parameters": [id_param("id")],
        "post": {"operationId": "recoverWebhook",
            "summary": "Deliver again every failed delivery of this webhook whose event time is in [since, until]",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["since"],
                "properties": {"since": time("Start of the window (inclusive)"), "until": time("End of the window (inclusive); default: now; not before since")}}}}},
            "responses": problem_responses(r(json!({"202": json_response("Started", json!({"type": "object",
                "required": ["id", "webhookId", "since", "until", "queued", "scanned", "complete"],
                "properties": {"id": {"type": "string"}, "webhookId": {"type": "string"},
                    "since": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"},
                    "queued": {"type": "integer", "minimum": 0, "description": "Failed deliveries this request queued again (its first page)"},
                    "scanned": {"type": "integer", "minimum": 0, "description": "Deliveries this request examined"},
                    "complete": {"type": "boolean", "description": "false: the rest of the window is worked through in the background, page by page"}}})),
                "409": {"description": "The webhook is inactive",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}})))}
    })
}

fn event_paths(event_names: &[&str]) -> Value {
    let r = |v: Value| v.as_object().cloned().unwrap_or_default();
    json!({
            "/api/events": {
                "get": {"operationId": "listEvents", "summary": "The caller's stored events, newest first (kept DELIVERY_RETENTION_DAYS)",
                    "parameters": [
                        {"name": "since", "in": "query", "required": false, "description": "Only events at or after this time",
                            "schema": {"type": "string", "format": "date-time"}},
                        {"name": "event", "in": "query", "required": false, "schema": {"type": "string", "enum": event_names}},
                        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
                        {"name": "cursor", "in": "query", "required": false, "description": "The cursor of the next page, from the Link header",
                            "schema": {"type": "string", "pattern": "^[0-9]{15}[A-Za-z0-9_-]{2,683}$"}}
                    ],
                    "responses": problem_responses(r(json!({"200": {"description": "A page of events (it may hold fewer than `limit` and still have a next page)", "headers": link_header(),
                        "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/EventSummary"}}}}}})))},
                "post": {"operationId": "submitEvent", "summary": "Enqueue an event for the caller's tenant", "requestBody": body("SubmitEvent"),
                    // No link to getEvent: the event is stored by ingest, after this answer.
                    "responses": problem_responses(r(json!({"202": json_response("Accepted", json!({"$ref": "#/components/schemas/EventAccepted"}))})))}
            },
            "/api/events/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID_LEN}}],
                "get": {"operationId": "getEvent", "summary": "A stored event, its payload and its deliveries' statuses",
                    "responses": problem_responses(r(json!({"200": json_response("The event", json!({"$ref": "#/components/schemas/Event"}))})))}
            }
    })
}

fn event_schemas() -> Value {
    json!({
                "Resent": {"type": "object", "required": ["id", "webhookId", "status", "cycle"],
                    "properties": {"id": {"type": "string"}, "webhookId": {"type": "string"}, "status": {"type": "string", "enum": ["queued"]},
                        "cycle": {"type": "integer", "minimum": 1, "description": "The cycle of attempts this resend starts"}}},
                "EventSummary": {"type": "object", "required": ["id", "event", "timestamp", "status"],
                    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
                        "status": {"type": "string", "enum": ["queued", "fannedOut"], "description": "fannedOut: every delivery job was enqueued"}}},
                "Event": {"type": "object", "required": ["id", "event", "timestamp", "status", "payload", "fanOut", "deliveries"],
                    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
                        "status": {"type": "string", "enum": ["queued", "fannedOut"]}, "payload": {"type": "object"},
                        "fanOut": {"type": "integer", "minimum": 0, "description": format!("How many webhooks it went to; `deliveries` lists the first {MAX_RECORDED_FAN_OUT}")},
                        "deliveries": {"type": "array", "items": {"type": "object", "required": ["id", "webhookId", "status", "attempts"],
                            "properties": {"id": {"type": "string"}, "webhookId": {"type": "string"},
                                "status": {"type": "string", "enum": ["pending", "succeeded", "failed", "skipped"]},
                                "attempts": {"type": "integer", "minimum": 0}}}}}}
    })
}
