//! The management API of the integration guide as an axum `Router` over the ports. The Lambda
//! binary serves it through `lambda_http`; the local runner through a TCP listener.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use webhooks::auth::JwtVerifier;
use webhooks::delivery::Deliverer;
use webhooks::domain::{self, Webhook};
use webhooks::messages::EventId;
use webhooks::messages::{Event, encode_event};
use webhooks::ports::{Delivery, DeliveryLog, EventStore, OutgoingMessage, Queue, StoreError, WebhookStore, send_all};
use webhooks::signing::Envelope;
use webhooks::{event_types, ids, time};

use crate::error::ApiError;
use crate::extract::{Auth, JsonBody, OptionalJsonBody};

/// Listing pages hold this many webhooks unless `?limit=` says otherwise (1 to `MAX_PAGE`).
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn DeliveryLog>,
    pub events: Arc<dyn EventStore>,
    pub queue: Arc<dyn Queue>,
    pub events_queue_url: String,
    pub verifier: Arc<JwtVerifier>,
    /// Sends test deliveries; its target policy is the one registrations are checked against.
    pub deliverer: Deliverer,
    pub test_timeout: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/webhooks", get(list_webhooks).post(create_webhook))
        .route("/api/webhooks/test", post(test_webhook))
        .route(
            "/api/webhooks/{id}",
            get(get_webhook).put(update_webhook).delete(delete_webhook),
        )
        .route("/api/webhooks/{id}/test", post(test_registered_webhook))
        .route("/api/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/api/webhooks/{id}/deliveries/{delivery_id}", get(get_delivery))
        .route("/api/events", post(submit_event))
        .route("/api/event-types", get(list_event_types))
        .route("/api/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(ui::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// How a stored webhook is shown. The secret is shown only when it is created or replaced;
/// afterwards `hasSecret` tells whether one is set, so a client that sends back what it read
/// never overwrites the secret with a placeholder.
fn view(w: &Webhook, reveal_secret: bool) -> Value {
    let mut v = json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "active": w.active,
        "hasSecret": w.secret.is_some(),
        "createdAt": time::iso_ms(w.created_at),
        "updatedAt": time::iso_ms(w.updated_at),
    });
    if reveal_secret {
        v["secret"] = json!(w.secret);
    }
    v
}

fn not_found() -> ApiError {
    ApiError::NotFound("webhook not found".into())
}

async fn load(state: &AppState, tenant: &str, id: &str) -> Result<Webhook, ApiError> {
    if !ids::is_id("wh", id) {
        return Err(not_found());
    }
    state.store.get(tenant, id).await?.ok_or_else(not_found)
}

async fn check_target(state: &AppState, url: &str) -> Result<(), ApiError> {
    state
        .deliverer
        .check_target(url)
        .await
        .map_err(|e| ApiError::Invalid(vec![domain::FieldError::new("url", e.to_string())]))
}

async fn create_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new = domain::parse_create(&body, state.deliverer.policy()).map_err(ApiError::Invalid)?;
    check_target(&state, &new.url).await?;
    let now = time::now_ms();
    let webhook = Webhook {
        id: ids::new_id("wh"),
        tenant: who.tenant.into(),
        url: new.url,
        events: new.events,
        secret: new.secret,
        active: new.active,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    state.store.create(&webhook).await?;
    tracing::info!(webhook_id = %webhook.id, tenant = %webhook.tenant, "webhook created");
    let location = HeaderValue::from_str(&format!("/api/webhooks/{}", webhook.id)).ok();
    let mut response = (StatusCode::CREATED, Json(view(&webhook, true))).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `?limit=` and `?cursor=` of a listing.
fn page_params(uri: &Uri, cursor_prefix: &str) -> Result<(usize, Option<String>), ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))
                    })?;
            }
            "cursor" => {
                if !ids::is_id(cursor_prefix, &v) {
                    return Err(ApiError::bad_request("cursor", "is not a cursor this API returned"));
                }
                cursor = Some(v.into_owned());
            }
            _ => {}
        }
    }
    Ok((limit, cursor))
}

/// A GitHub-style `Link: <…>; rel="next"` header, relative to the request's own path so it
/// stays right behind any API Gateway domain or stage mapping.
fn next_link(uri: &Uri, limit: usize, next: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(r#"<{}?limit={limit}&cursor={next}>; rel="next""#, uri.path())).ok()
}

async fn list_webhooks(State(state): State<AppState>, Auth(who): Auth, uri: Uri) -> Result<Response, ApiError> {
    let (limit, cursor) = page_params(&uri, "wh")?;
    let page = state.store.list(&who.tenant, limit, cursor.as_deref()).await?;
    let items: Vec<Value> = page.items.iter().map(|w| view(w, false)).collect();
    let mut response = Json(items).into_response();
    if let Some(link) = page.next.as_deref().and_then(|n| next_link(&uri, limit, n)) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

async fn get_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&load(&state, &who.tenant, &id).await?, false)))
}

async fn update_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let mut current = load(&state, &who.tenant, &id).await?;
    let patch = domain::parse_update(&body, state.deliverer.policy()).map_err(ApiError::Invalid)?;
    if let Some(url) = &patch.url {
        check_target(&state, url).await?;
    }
    // Optimistic concurrency: a concurrent update makes us re-read and re-apply this patch on
    // top of it, so neither is lost; a concurrent delete wins (no resurrection).
    for _ in 0..5 {
        let updated = patch.apply(&current, time::now_ms());
        match state.store.update(&current, &updated).await {
            Ok(()) => {
                tracing::info!(webhook_id = %id, tenant = %who.tenant, "webhook updated");
                let reveal = matches!(patch.secret, Some(Some(_)));
                return Ok(Json(view(&updated, reveal)));
            }
            Err(StoreError::Conflict) => current = load(&state, &who.tenant, &id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

async fn delete_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !ids::is_id("wh", &id) {
        return Err(not_found());
    }
    state.store.delete(&who.tenant, &id).await?;
    tracing::info!(webhook_id = %id, tenant = %who.tenant, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn test_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let test = domain::parse_test(&body, state.deliverer.policy()).map_err(ApiError::Invalid)?;
    let report = send_test(&state, &test.url, test.event, &test.payload, test.secret.as_deref()).await;
    tracing::info!(tenant = %who.tenant, outcome = ?report.outcome, status = ?report.status_code, "test webhook sent");
    Ok(Json(test_result(&report)))
}

/// `POST /api/webhooks/{id}/test`: one signed delivery to a registered webhook, with its URL
/// and secret (which the caller need not have kept), whether it is active or not. Nothing is
/// queued or logged as a delivery.
async fn test_registered_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Value>, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let (event, payload) = domain::parse_registered_test(&body, &webhook).map_err(ApiError::Invalid)?;
    let report = send_test(&state, &webhook.url, event, &payload, webhook.secret.as_deref()).await;
    tracing::info!(tenant = %who.tenant, webhook_id = %webhook.id, outcome = ?report.outcome, status = ?report.status_code, "registered webhook tested");
    let mut result = test_result(&report);
    result["webhookId"] = json!(webhook.id);
    result["event"] = json!(event.as_str());
    Ok(Json(result))
}

async fn send_test(
    state: &AppState,
    url: &str,
    event: webhooks::event_types::EventType,
    payload: &Value,
    secret: Option<&str>,
) -> webhooks::delivery::AttemptReport {
    let now = time::now_ms();
    let id = ids::new_id("msg");
    let payload = webhooks::jsjson::to_string(payload);
    let envelope = Envelope {
        id: &id,
        event: event.as_str(),
        timestamp_ms: now,
        payload: &payload,
    };
    let request = envelope.sign(secret, now / 1000);
    state.deliverer.send(url, &request, state.test_timeout).await
}

/// A test's outcome, with the same facts a delivery log attempt has.
fn test_result(report: &webhooks::delivery::AttemptReport) -> Value {
    json!({
        "success": report.success(),
        "statusCode": report.status_code,
        "message": report.message,
        "durationMs": report.duration_ms,
        "responseBody": report.response_body,
    })
}

async fn list_event_types(Auth(_): Auth) -> Json<Value> {
    Json(json!(event_types::catalogue()))
}

/// `POST /api/events`: enqueues an event for the caller's tenant (from the token, never the
/// body) and answers 202 with its id. `id` is the caller's idempotency key: an id already
/// stored answers `"duplicate": true` with the original event's timestamp and enqueues
/// nothing. (That look-up is a cheap read; the guarantee is ingest's claim, which also
/// catches two submissions racing within the same second.)
async fn submit_event(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let submission = domain::parse_event_submission(&body).map_err(ApiError::Invalid)?;
    let id = match submission.id {
        Some(id) => EventId::parse(&id)
            .ok_or_else(|| ApiError::Invalid(vec![domain::FieldError::new("id", "is not a valid event id")]))?,
        None => EventId::parse(&ids::new_id("evt")).ok_or_else(|| ApiError::Internal("event id".into()))?,
    };
    if let Some((stored, _)) = state.events.get(&who.tenant, &id, false).await? {
        tracing::info!(tenant = %who.tenant, event_id = %id, "duplicate event submission");
        let body = json!({"id": stored.id, "event": stored.event.as_str(),
            "timestamp": time::iso_ms(stored.timestamp_ms), "status": "duplicate", "duplicate": true});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let event = Event {
        tenant: who.tenant,
        id,
        event: submission.event,
        timestamp_ms: time::now_ms(),
        payload: submission.payload,
    };
    let message = OutgoingMessage {
        id: "0".into(),
        body: encode_event(&event),
        reason: None,
    };
    let unsent = send_all(state.queue.as_ref(), &state.events_queue_url, &[message])
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !unsent.is_empty() {
        return Err(ApiError::Internal("the events queue refused the message".into()));
    }
    tracing::info!(tenant = %event.tenant, event_id = %event.id, event = %event.event, "event accepted");
    let body = json!({"id": event.id, "event": event.event.as_str(),
        "timestamp": time::iso_ms(event.timestamp_ms), "status": "queued", "duplicate": false});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn delivery_view(d: &Delivery) -> Value {
    let attempts: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "at": time::iso_ms(a.at),
                "statusCode": a.status_code,
                "durationMs": a.duration_ms,
                "message": a.message,
                "responseBody": a.response_body,
            })
        })
        .collect();
    let mut v = json!({
        "id": d.id,
        "webhookId": d.webhook_id,
        "eventId": d.event_id,
        "event": d.event,
        "status": d.status.as_str(),
        "createdAt": time::iso_ms(d.created_at),
        "updatedAt": time::iso_ms(d.updated_at),
        "attempts": attempts,
    });
    if let Some(note) = &d.note {
        v["note"] = json!(note);
    }
    if let Some(at) = d
        .next_attempt_at
        .filter(|_| d.status == webhooks::ports::DeliveryStatus::Pending)
    {
        v["nextAttemptAt"] = json!(time::iso_ms(at));
    }
    v
}

/// `GET /api/webhooks/{id}/deliveries`: newest first, paginated like the webhook listing.
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let (limit, cursor) = page_params(&uri, "dl")?;
    let page = state.log.list(&webhook.id, limit, cursor.as_deref()).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .filter(|d| d.tenant == who.tenant)
        .map(delivery_view)
        .collect();
    let mut response = Json(items).into_response();
    if let Some(link) = page.next.as_deref().and_then(|n| next_link(&uri, limit, n)) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

async fn get_delivery(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let missing = || ApiError::NotFound("delivery not found".into());
    if !ids::is_id("dl", &delivery_id) {
        return Err(missing());
    }
    match state.log.get(&webhook.id, &delivery_id).await? {
        Some(d) if d.tenant == who.tenant => Ok(Json(delivery_view(&d))),
        _ => Err(missing()),
    }
}
