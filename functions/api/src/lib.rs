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
use futures::StreamExt;
use serde_json::{Value, json};
use webhooks::auth::JwtVerifier;
use webhooks::delivery::Deliverer;
use webhooks::domain::{self, Webhook};
use webhooks::event_types::EventType;
use webhooks::messages::EventId;
use webhooks::messages::Tenant;
use webhooks::messages::{DeliveryJob, JobBody};
use webhooks::messages::{Event, encode_event};
use webhooks::ports::{
    Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore, OutgoingMessage, Queue,
    StoreError, WebhookStore, send_all,
};
use webhooks::recover::{self, RecoverTask};
use webhooks::signing::Envelope;
use webhooks::{event_types, ids, signing, time};

use crate::error::ApiError;
use crate::extract::{Auth, JsonBody, JsonBodyOrEmpty};

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
    /// Where resend and recover put delivery jobs (and recover's continuation).
    pub delivery_queue_url: String,
    /// Deliveries a recover examines within the request (`RECOVER_PAGE_SIZE`).
    pub recover_page: usize,
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
        .route("/api/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/api/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/api/webhooks/{id}/deliveries/{delivery_id}", get(get_delivery))
        .route("/api/webhooks/{id}/stats", get(webhook_stats))
        .route(
            "/api/webhooks/{id}/deliveries/{delivery_id}/resend",
            post(resend_delivery),
        )
        .route("/api/webhooks/{id}/recover", post(recover_webhook))
        .route("/api/events", get(list_events).post(submit_event))
        .route("/api/events/{id}", get(get_event))
        .route("/api/event-types", get(list_event_types))
        .route("/api/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(ui::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// How a stored webhook is shown. The secret is shown only when it is created or replaced;
/// afterwards `hasSecret` tells whether one is set, so a client that sends back what it read
/// never overwrites the secret with a placeholder. `previousSecrets` shows when each secret a
/// rotation replaced stops signing, never the secret.
fn view(w: &Webhook, reveal_secret: bool) -> Value {
    let previous: Vec<Value> = w
        .valid_previous(time::now_ms())
        .map(|p| json!({"expiresAt": time::iso_ms(p.expires_at)}))
        .collect();
    let mut v = json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "active": w.active,
        "hasSecret": w.secret.is_some(),
        "previousSecrets": previous,
        "createdAt": time::iso_ms(w.created_at),
        "updatedAt": time::iso_ms(w.updated_at),
    });
    if reveal_secret {
        v["secret"] = json!(w.secret);
    }
    if let Some(d) = &w.disabled {
        v["disabledReason"] = json!(d.reason);
        v["disabledAt"] = json!(time::iso_ms(d.at));
    }
    v["health"] = health_view(&w.health);
    v
}

/// The endpoint's health as the dispatcher last recorded it (on changes of state only).
fn health_view(h: &webhooks::domain::Health) -> Value {
    let iso = |t: Option<u64>| t.map(time::iso_ms);
    json!({
        "status": if h.is_open() { "open" } else if h.consecutive_failures > 0 { "failing" } else { "healthy" },
        "consecutiveFailures": h.consecutive_failures,
        "failingSince": iso(h.failing_since),
        "lastSuccessAt": iso(h.last_success_at),
        "lastFailureAt": iso(h.last_failure_at),
        "lastError": h.last_error,
        "nextProbeAt": iso(h.breaker_until),
    })
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
        previous_secrets: Vec::new(),
        active: new.active,
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        disabled: None,
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

/// `?limit=` of a listing: 1 to `MAX_PAGE`.
fn parse_limit(v: &str) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| ApiError::bad_request("limit", format!("must be a whole number from 1 to {MAX_PAGE}")))
}

/// `?limit=` and `?cursor=` of a listing.
fn page_params(uri: &Uri, cursor_prefix: &str) -> Result<(usize, Option<String>), ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => limit = parse_limit(&v)?,
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

/// `POST /api/webhooks/{id}/rotate-secret`: a new secret (the caller's, or generated), shown
/// in full this once; the secrets valid until now keep signing for `overlapSeconds`.
/// Conditional on the version read, like an update, so a racing PUT is re-read, not lost.
async fn rotate_secret(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty,
) -> Result<Json<Value>, ApiError> {
    let mut current = load(&state, &who.tenant, &id).await?;
    let request = domain::parse_rotate(&body).map_err(ApiError::Invalid)?;
    let secret = request.secret.unwrap_or_else(signing::generate_secret);
    for _ in 0..5 {
        let now = time::now_ms();
        let Some(rotated) = current.rotated(secret.clone(), request.overlap_s, now) else {
            let first_free = current.valid_previous(now).map(|p| p.expires_at).min().unwrap_or(now);
            return Err(ApiError::Conflict(format!(
                "{} replaced secrets are still valid, the most a webhook keeps; rotate with \
                 overlapSeconds 0 to revoke them now, or after {}",
                domain::MAX_PREVIOUS_SECRETS,
                time::iso_ms(first_free)
            )));
        };
        match state.store.update(&current, &rotated).await {
            Ok(()) => {
                tracing::info!(
                    webhook_id = %id,
                    tenant = %who.tenant,
                    overlap_s = request.overlap_s,
                    still_valid = rotated.previous_secrets.len(),
                    "webhook secret rotated"
                );
                return Ok(Json(view(&rotated, true)));
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
    JsonBodyOrEmpty(body): JsonBodyOrEmpty,
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
    if let Some(EventRecord { event: stored, .. }) = state.events.get(&who.tenant, &id, false).await? {
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
        delay_s: 0,
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

/// `GET /api/webhooks/{id}/stats` counts the deliveries of events from the last this many
/// seconds.
pub const STATS_WINDOW_S: u64 = 86_400;
/// ... reading at most this many of them (newest first, `MAX_PAGE` a query): the work and the
/// DynamoDB reads of one call are bounded whatever the traffic; past it, `complete: false`.
pub const STATS_MAX_DELIVERIES: usize = 1000;

/// `GET /api/webhooks/{id}/stats`: the webhook's deliveries of the last 24 h by status, from
/// the delivery log. Delivery ids begin with their event's time, so the newest-first listing
/// stops at the first delivery older than the window, or at `STATS_MAX_DELIVERIES`.
async fn webhook_stats(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let now = time::now_ms();
    let from = now.saturating_sub(STATS_WINDOW_S * 1000);
    // The smallest delivery id of an event at `from`: ids sort as their 48-bit time prefix.
    let floor = format!("dl_{}", ids::encode(((from as u128) & 0xFFFF_FFFF_FFFF) << 80));
    let mut counts = [0u64; 4];
    let (mut attempts, mut failed_attempts, mut counted) = (0u64, 0u64, 0usize);
    let mut cursor: Option<String> = None;
    let complete = 'pages: loop {
        let page = state.log.list(&webhook.id, MAX_PAGE, cursor.as_deref()).await?;
        for d in page.items.iter().filter(|d| d.tenant == who.tenant) {
            if d.id < floor {
                break 'pages true;
            }
            if counted == STATS_MAX_DELIVERIES {
                break 'pages false;
            }
            counted += 1;
            counts[match d.status {
                DeliveryStatus::Pending => 0,
                DeliveryStatus::Succeeded => 1,
                DeliveryStatus::Failed => 2,
                DeliveryStatus::Skipped => 3,
            }] += 1;
            attempts += d.attempts.len() as u64;
            failed_attempts += d
                .attempts
                .iter()
                .filter(|a| !a.status_code.is_some_and(|c| (200..300).contains(&c)))
                .count() as u64;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break true,
        }
    };
    let [pending, succeeded, failed, skipped] = counts;
    let ended = succeeded + failed;
    Ok(Json(json!({
        "webhookId": webhook.id,
        "from": time::iso_ms(from),
        "to": time::iso_ms(now),
        "total": counted,
        "byStatus": {"pending": pending, "succeeded": succeeded, "failed": failed, "skipped": skipped},
        "successRate": (ended > 0).then(|| succeeded as f64 / ended as f64),
        "attempts": attempts,
        "failedAttempts": failed_attempts,
        "complete": complete,
    })))
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

/// `POST /api/webhooks/{id}/deliveries/{deliveryId}/resend`: the same delivery (same id and
/// body) gets a fresh cycle of attempts on the current schedule, appended to its log. The job
/// carries the next cycle number and no payload; the dispatcher starts the cycle (a
/// conditional write on the record) and reads the payload from the stored event.
async fn resend_delivery(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let missing = || ApiError::NotFound("delivery not found".into());
    if !ids::is_id("dl", &delivery_id) {
        return Err(missing());
    }
    let delivery = match state.log.get(&webhook.id, &delivery_id).await? {
        Some(d) if d.tenant == who.tenant => d,
        _ => return Err(missing()),
    };
    if delivery.status == DeliveryStatus::Pending {
        return Err(ApiError::Conflict(
            "the delivery is still being attempted; resend it once it has succeeded or failed".into(),
        ));
    }
    if !webhook.active {
        return Err(ApiError::Conflict(
            "the webhook is inactive; activate it before resending".into(),
        ));
    }
    // The payload lives on the stored event: without it there is nothing to send.
    let event_id = EventId::parse(&delivery.event_id).ok_or_else(|| ApiError::Internal("stored event id".into()))?;
    let Some(record) = state.events.get(&who.tenant, &event_id, false).await? else {
        return Err(ApiError::Gone(
            "the event of this delivery is no longer stored (DELIVERY_RETENTION_DAYS)".into(),
        ));
    };
    let cycle = delivery.cycle + 1;
    let job = DeliveryJob {
        delivery_id: delivery.id.clone(),
        webhook_id: webhook.id.clone(),
        tenant: who.tenant.clone(),
        event_id,
        event: delivery.event.clone(),
        timestamp_ms: record.event.timestamp_ms,
        cycle,
        body: JobBody::Stored,
        not_before_ms: None,
    };
    enqueue_jobs(&state, &[job]).await?;
    tracing::info!(tenant = %who.tenant, webhook_id = %webhook.id, delivery_id = %delivery.id, cycle, "delivery resent");
    let body = json!({"id": delivery.id, "webhookId": webhook.id, "status": "queued", "cycle": cycle});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/webhooks/{id}/recover` `{since, until?}`: every failed delivery of the webhook
/// whose event time is in the window is delivered again. The request runs the first page
/// (`RECOVER_PAGE_SIZE` deliveries examined) and, when the window holds more, puts a
/// continuation on the delivery queue that the dispatcher works through page by page. The
/// answer counts what this request queued and says whether the rest goes on in the
/// background.
async fn recover_webhook(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let webhook = load(&state, &who.tenant, &id).await?;
    let (since_ms, until_ms) = domain::parse_recover(&body, time::now_ms()).map_err(ApiError::Invalid)?;
    if !webhook.active {
        return Err(ApiError::Conflict(
            "the webhook is inactive; activate it before recovering".into(),
        ));
    }
    let task = RecoverTask {
        id: ids::new_id("rcv"),
        tenant: who.tenant.clone(),
        webhook_id: webhook.id.clone(),
        since_ms,
        until_ms,
        before: None,
    };
    let queue = state.queue.as_ref();
    let page = recover::run_page(
        state.log.as_ref(),
        queue,
        &state.delivery_queue_url,
        &task,
        state.recover_page,
    )
    .await
    .map_err(ApiError::Internal)?;
    if let Some(next) = &page.next {
        recover::continue_with(queue, &state.delivery_queue_url, next)
            .await
            .map_err(ApiError::Internal)?;
    }
    tracing::info!(tenant = %who.tenant, webhook_id = %webhook.id, recover_id = %task.id,
        queued = page.queued, more = page.next.is_some(), "recover started");
    let body = json!({
        "id": task.id,
        "webhookId": webhook.id,
        "since": time::iso_ms(since_ms),
        "until": time::iso_ms(until_ms),
        "queued": page.queued,
        "scanned": page.scanned,
        "complete": page.next.is_none(),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Sends delivery jobs; any that SQS refused makes the request fail (500), so the caller
/// knows to try again.
async fn enqueue_jobs(state: &AppState, jobs: &[DeliveryJob]) -> Result<(), ApiError> {
    let messages: Vec<OutgoingMessage> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| OutgoingMessage {
            id: i.to_string(),
            body: j.encode(),
            reason: None,
            delay_s: 0,
        })
        .collect();
    let unsent = send_all(state.queue.as_ref(), &state.delivery_queue_url, &messages)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !unsent.is_empty() {
        return Err(ApiError::Internal(format!(
            "the delivery queue refused {} jobs",
            unsent.len()
        )));
    }
    Ok(())
}

/// `GET /api/events?since=&event=&limit=&cursor=`: the caller's events, newest first.
async fn list_events(State(state): State<AppState>, Auth(who): Auth, uri: Uri) -> Result<Response, ApiError> {
    let mut query = EventQuery::default();
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    let mut since_raw = None;
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "since" => {
                query.since_ms = time::parse_iso(&v).ok_or_else(|| {
                    ApiError::bad_request("since", "must be an ISO-8601 time such as 2025-05-21T21:27:09.442Z")
                })?;
                since_raw = Some(v.into_owned());
            }
            "event" => {
                query.event = Some(
                    EventType::parse(&v).ok_or_else(|| ApiError::bad_request("event", "is not a known event type"))?,
                );
            }
            "limit" => limit = parse_limit(&v)?,
            "cursor" => {
                cursor = Some(
                    EventCursor::parse(&v)
                        .ok_or_else(|| ApiError::bad_request("cursor", "is not a cursor this API returned"))?,
                );
            }
            _ => {}
        }
    }
    let page = state.events.list(&who.tenant, query, limit, cursor.as_ref()).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "event": e.event.as_str(),
                "timestamp": time::iso_ms(e.timestamp_ms),
                "status": if e.fanned { "fannedOut" } else { "queued" },
            })
        })
        .collect();
    let mut response = Json(items).into_response();
    if let Some(next) = page.next {
        // The filters ride along, so following the link continues the same listing.
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", &limit.to_string()).append_pair("cursor", &next);
        if let Some(since) = &since_raw {
            q.append_pair("since", since);
        }
        if let Some(event) = query.event {
            q.append_pair("event", event.as_str());
        }
        if let Ok(link) = HeaderValue::from_str(&format!(r#"<{}?{}>; rel="next""#, uri.path(), q.finish())) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// Delivery statuses read at once for `GET /api/events/{id}`.
const STATUS_READS: usize = 16;

/// The stored event as the API shows it; the payload is the stored rendering, sent as is.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    id: &'a str,
    event: &'a str,
    timestamp: String,
    status: &'static str,
    payload: &'a serde_json::value::RawValue,
    fan_out: usize,
    deliveries: Vec<Value>,
}

/// `GET /api/events/{id}`: the event, its payload, and its deliveries with their statuses.
async fn get_event(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NotFound("event not found".into());
    let id = EventId::parse(&id).ok_or_else(missing)?;
    let record = state.events.get(&who.tenant, &id, true).await?.ok_or_else(missing)?;
    let deliveries = delivery_statuses(&state, &who.tenant, &record).await?;
    let payload = serde_json::value::RawValue::from_string(record.event.payload.clone())
        .map_err(|e| ApiError::Internal(format!("stored payload: {e}")))?;
    let view = EventView {
        id: record.event.id.as_str(),
        event: record.event.event.as_str(),
        timestamp: time::iso_ms(record.event.timestamp_ms),
        status: if record.fanned { "fannedOut" } else { "queued" },
        payload: &payload,
        fan_out: record.fan_out,
        deliveries,
    };
    Ok(Json(view).into_response())
}

/// Each recorded delivery of the event with its status; one without a record yet is waiting
/// for its first attempt (`pending`).
async fn delivery_statuses(state: &AppState, tenant: &Tenant, record: &EventRecord) -> Result<Vec<Value>, ApiError> {
    let (event_id, ts) = (record.event.id.to_string(), record.event.timestamp_ms);
    let reads = futures::stream::iter(record.webhooks.clone())
        .map(|webhook_id| {
            let (log, tenant, event_id) = (state.log.clone(), tenant.to_string(), event_id.clone());
            async move {
                let id = webhooks::retry::delivery_id(&tenant, &event_id, &webhook_id, ts);
                let found = log.get(&webhook_id, &id).await?;
                let status = found.as_ref().map_or("pending", |d| d.status.as_str());
                let attempts = found.as_ref().map_or(0, |d| d.attempts.len());
                Ok::<Value, StoreError>(
                    json!({"id": id, "webhookId": webhook_id, "status": status, "attempts": attempts}),
                )
            }
        })
        .buffered(STATUS_READS)
        .collect::<Vec<_>>()
        .await;
    reads.into_iter().map(|r| r.map_err(ApiError::from)).collect()
}
