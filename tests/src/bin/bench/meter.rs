//! Counting decorators of the ports: each forwards to the DynamoDB / SQS adapter and records
//! the AWS API calls the method makes and the capacity units they consume, estimated from the
//! actual items (attribute names + values, as DynamoDB sizes them).
//!
//! DynamoDB on demand: a strongly consistent read of up to 4 KB is 1 read request unit (RRU),
//! an eventually consistent one 0.5; a write is 1 write request unit (WRU) per KB of the item
//! (for an update: the larger of the item before and after); transactional writes cost double.
//! SQS: every call is one request per started 64 KB of payload.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use webhooks::domain::Webhook;
use webhooks::event_types::EventType;
use webhooks::messages::{EventId, Tenant};
use webhooks::ports::{
    Attempt, Claim, Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore,
    EventSummary, OutgoingMessage, Page, Queue, QueueError, QueueMessage, StoreError, StoredEvent, WebhookStore,
};

#[derive(Debug, Default, Clone)]
pub struct Stat {
    /// The AWS API the method calls.
    pub api: &'static str,
    /// Calls of the port method.
    pub calls: u64,
    /// AWS API calls they made.
    pub api_calls: u64,
    pub rru: f64,
    pub wru: f64,
    /// SQS billed requests (64 KB chunks).
    pub sqs: f64,
    /// Receives that returned nothing (idle polling).
    pub empty: u64,
    /// Messages received or sent.
    pub messages: u64,
    /// Time spent in the calls, summed.
    pub time: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct LambdaStat {
    pub invocations: u64,
    pub messages: u64,
    /// Handler wall time, rounded up to the millisecond per invocation as Lambda bills it.
    pub billed_ms: u64,
    pub wall: Duration,
}

#[derive(Default)]
pub struct Meter {
    stats: Mutex<BTreeMap<String, Stat>>,
    lambda: Mutex<BTreeMap<&'static str, LambdaStat>>,
    /// Estimated size of each delivery item and claim item, so updates can be sized before
    /// and after.
    sizes: Mutex<HashMap<(String, String), usize>>,
    /// Estimated size of each webhook read, (tenant, id): health updates rewrite it whole.
    webhooks: Mutex<HashMap<(String, String), usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Meter {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        took: Duration,
        key: &str,
        api: &'static str,
        api_calls: u64,
        rru: f64,
        wru: f64,
        sqs: f64,
        messages: u64,
    ) {
        let mut stats = lock(&self.stats);
        let s = stats.entry(key.to_string()).or_default();
        s.time += took;
        s.api = api;
        s.calls += 1;
        s.api_calls += api_calls;
        s.rru += rru;
        s.wru += wru;
        s.sqs += sqs;
        s.messages += messages;
    }

    pub fn invocation(&self, function: &'static str, messages: usize, wall: Duration) {
        let mut l = lock(&self.lambda);
        let s = l.entry(function).or_default();
        s.invocations += 1;
        s.messages += messages as u64;
        s.billed_ms += wall.as_micros().div_ceil(1000) as u64;
        s.wall += wall;
    }

    pub fn reset(&self) {
        lock(&self.stats).clear();
        lock(&self.lambda).clear();
    }

    pub fn stats(&self) -> Vec<(String, Stat)> {
        lock(&self.stats).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn lambda(&self) -> Vec<(&'static str, LambdaStat)> {
        lock(&self.lambda).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub fn calls(&self, key: &str) -> u64 {
        lock(&self.stats).get(key).map(|s| s.calls).unwrap_or(0)
    }

    /// Messages handled by the keys starting with `prefix` (sent, received or deleted).
    pub fn messages(&self, prefix: &str) -> u64 {
        lock(&self.stats)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.messages)
            .sum()
    }

    /// Messages (or items) those calls carried.
    pub fn items(&self, key: &str) -> u64 {
        lock(&self.stats).get(key).map(|s| s.messages).unwrap_or(0)
    }
}

// ---- DynamoDB item sizes -------------------------------------------------------------------

fn s(name: &str, v: &str) -> usize {
    name.len() + v.len()
}

/// Numbers: about one byte per two significant digits, plus one.
fn num_bytes(v: u64) -> usize {
    let digits = v.to_string();
    let significant = digits.trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

fn n(name: &str, v: u64) -> usize {
    name.len() + num_bytes(v)
}

/// A list or map: 3 bytes, plus each element and one byte per element.
fn collection(name: &str, elements: impl Iterator<Item = usize>) -> usize {
    name.len() + 3 + elements.map(|e| e + 1).sum::<usize>()
}

pub fn webhook_size(w: &Webhook) -> usize {
    s("pk", &format!("T#{}", w.tenant))
        + s("sk", &format!("W#{}", w.id))
        + s("id", &w.id)
        + s("tenant", &w.tenant)
        + s("url", &w.url)
        + collection("events", w.events.iter().map(String::len))
        + w.secret.as_deref().map(|v| s("secret", v)).unwrap_or(0)
        + "active".len()
        + 1
        + n("createdAt", w.created_at)
        + n("updatedAt", w.updated_at)
        + n("version", w.version)
}

fn subscription_size(tenant: &str, filter: &str, id: &str) -> usize {
    s("pk", &format!("S#{tenant}#{filter}")) + s("sk", &format!("W#{id}")) + s("webhookId", id)
}

fn attempt_size(a: &Attempt) -> usize {
    let fields = [
        n("attempt", a.attempt as u64),
        n("at", a.at),
        n("durationMs", a.duration_ms),
        s("message", &a.message),
        a.status_code.map(|c| n("statusCode", c as u64)).unwrap_or(0),
        a.response_body.as_deref().map(|b| s("responseBody", b)).unwrap_or(0),
    ];
    3 + fields.iter().filter(|f| **f > 0).map(|f| f + 1).sum::<usize>()
}

pub fn delivery_size(d: &Delivery) -> usize {
    s("pk", &webhooks::dynamo::delivery_pk(&d.webhook_id, &d.id))
        + s("sk", &format!("D#{}", d.id))
        + s("id", &d.id)
        + s("tenant", &d.tenant)
        + s("webhookId", &d.webhook_id)
        + s("eventId", &d.event_id)
        + s("event", &d.event)
        + s("status", d.status.as_str())
        + n("createdAt", d.created_at)
        + n("updatedAt", d.updated_at)
        + collection("attempts", d.attempts.iter().map(attempt_size))
        + d.note.as_deref().map(|v| s("note", v)).unwrap_or(0)
        + n("expiresAt", d.expires_at)
}

/// An item's size as DynamoDB bills it: each attribute's name and value; numbers about one
/// byte per two significant digits plus one; lists and maps 3 bytes plus 1 per element.
pub fn item_size(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => s.len(),
        A::N(n) => {
            let digits = n.trim_start_matches('-').replace('.', "");
            let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
            significant.div_ceil(2) + 1
        }
        A::B(b) => b.as_ref().len(),
        A::L(l) => 3 + l.iter().map(|e| value_size(e) + 1).sum::<usize>(),
        A::M(m) => 3 + m.iter().map(|(k, e)| k.len() + value_size(e) + 1).sum::<usize>(),
        A::Ss(s) => s.iter().map(String::len).sum(),
        _ => 1,
    }
}

fn wru(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn rru_strong(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

fn rru_eventual(bytes: usize) -> f64 {
    0.5 * bytes.div_ceil(4096).max(1) as f64
}

// ---- Decorators ---------------------------------------------------------------------------

pub struct CountingStore {
    pub inner: Arc<dyn WebhookStore>,
    pub meter: Arc<Meter>,
}

/// The event types a webhook has subscription items for: its filters, wildcards expanded.
fn subscribed_types(w: &Webhook) -> Vec<&'static str> {
    if !w.active {
        return Vec::new();
    }
    webhooks::event_types::EVENT_TYPES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| EventType::parse(name).is_some_and(|e| w.subscribes_to(e)))
        .collect()
}

#[async_trait]
impl WebhookStore for CountingStore {
    async fn create(&self, w: &Webhook) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let r = self.inner.create(w).await;
        let took = t0.elapsed();
        // One transaction: the webhook and one subscription item per subscribed type, at twice
        // the units.
        let units = wru(webhook_size(w))
            + subscribed_types(w)
                .iter()
                .map(|t| wru(subscription_size(&w.tenant, t, &w.id)))
                .sum::<f64>();
        self.meter.add(
            took,
            "WebhookStore::create",
            "TransactWriteItems",
            1,
            0.0,
            2.0 * units,
            0.0,
            0,
        );
        r
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.get(tenant, id).await;
        let took = t0.elapsed();
        let size = match &r {
            Ok(Some(w)) => webhook_size(w),
            _ => 0,
        };
        lock(&self.meter.webhooks).insert((tenant.to_string(), id.to_string()), size);
        self.meter.add(
            took,
            "WebhookStore::get",
            "GetItem (strong)",
            1,
            rru_strong(size),
            0.0,
            0.0,
            0,
        );
        r
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.list(tenant, limit, after).await;
        let took = t0.elapsed();
        let size = r.as_ref().map(|p| p.items.iter().map(webhook_size).sum()).unwrap_or(0);
        self.meter.add(
            took,
            "WebhookStore::list",
            "Query (strong)",
            1,
            rru_strong(size),
            0.0,
            0.0,
            0,
        );
        r
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let r = self.inner.update(old, new).await;
        let took = t0.elapsed();
        let units = wru(webhook_size(old).max(webhook_size(new))) + new.events.len() as f64;
        self.meter.add(
            took,
            "WebhookStore::update",
            "TransactWriteItems",
            1,
            0.0,
            2.0 * units,
            0.0,
            0,
        );
        r
    }

    async fn set_health(
        &self,
        tenant: &str,
        id: &str,
        old: &webhooks::domain::Health,
        new: &webhooks::domain::Health,
    ) -> Result<bool, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.set_health(tenant, id, old, new).await;
        let took = t0.elapsed();
        // An UpdateItem is charged on the whole item: the webhook as last read, with its health
        // map (about 200 bytes).
        let size = lock(&self.meter.webhooks)
            .get(&(tenant.to_string(), id.to_string()))
            .copied();
        let units = wru(size.unwrap_or(0) + 200);
        self.meter.add(
            took,
            "WebhookStore::set_health",
            "UpdateItem (conditional)",
            1,
            0.0,
            units,
            0.0,
            0,
        );
        r
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let r = self.inner.delete(tenant, id).await;
        let took = t0.elapsed();
        self.meter.add(
            took,
            "WebhookStore::delete",
            "GetItem + TransactWriteItems",
            2,
            1.0,
            4.0,
            0.0,
            0,
        );
        r
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.subscribers(tenant, event).await;
        let took = t0.elapsed();
        let ids = r.as_ref().map(Vec::len).unwrap_or(0);
        // One Query on the event type's subscription partition (wildcards are expanded when a
        // webhook is written), eventually consistent, sized by the items it reads; one more
        // page per MB. The wire check in the cost tables confirms the count.
        let bytes = ids * subscription_size(tenant, event.as_str(), "wh_01jv9qk3m4r7t2w8x5y6z0abcd");
        let pages = 1 + (bytes / (1024 * 1024)) as u64;
        self.meter.add(
            took,
            "WebhookStore::subscribers",
            "Query (eventual)",
            pages,
            rru_eventual(bytes),
            0.0,
            0.0,
            0,
        );
        r
    }
}

pub struct CountingLog {
    pub inner: Arc<dyn DeliveryLog>,
    pub meter: Arc<Meter>,
}

#[async_trait]
impl DeliveryLog for CountingLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let t0 = Instant::now();
        let r = self
            .inner
            .record_attempt(delivery, attempt, status, next_attempt_at, now)
            .await;
        let took = t0.elapsed();
        // One UpdateItem that creates the record on the first attempt: sized by the larger of
        // the item before (0 when new) and after.
        let key = (delivery.webhook_id.clone(), delivery.id.clone());
        let before = lock(&self.meter.sizes).get(&key).copied();
        let base = before.unwrap_or_else(|| delivery_size(delivery));
        let after = base + attempt_size(attempt) + 1 + status.as_str().len().saturating_sub("pending".len());
        lock(&self.meter.sizes).insert(key, after);
        self.meter.add(
            took,
            "DeliveryLog::record_attempt",
            "UpdateItem (conditional)",
            1,
            0.0,
            wru(before.unwrap_or(0).max(after)),
            0.0,
            0,
        );
        r
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.finish(delivery, status, note, now).await;
        let took = t0.elapsed();
        let key = (delivery.webhook_id.clone(), delivery.id.clone());
        let before = lock(&self.meter.sizes)
            .get(&key)
            .copied()
            .unwrap_or_else(|| delivery_size(delivery));
        self.meter.add(
            took,
            "DeliveryLog::finish",
            "UpdateItem (conditional)",
            1,
            0.0,
            wru(before + s("note", note)),
            0.0,
            0,
        );
        r
    }

    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.reopen(record, to, now).await;
        let took = t0.elapsed();
        let size = delivery_size(record);
        self.meter.add(
            took,
            "DeliveryLog::reopen",
            "UpdateItem (conditional)",
            1,
            0.0,
            wru(size),
            0.0,
            0,
        );
        r
    }

    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.get(webhook_id, delivery_id).await;
        let took = t0.elapsed();
        let size = match &r {
            Ok(Some(d)) => delivery_size(d),
            _ => 0,
        };
        self.meter.add(
            took,
            "DeliveryLog::get",
            "GetItem (strong)",
            1,
            rru_strong(size),
            0.0,
            0.0,
            0,
        );
        r
    }

    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.list(webhook_id, limit, before).await;
        let took = t0.elapsed();
        let size = r.as_ref().map(|p| p.items.iter().map(delivery_size).sum()).unwrap_or(0);
        self.meter.add(
            took,
            "DeliveryLog::list",
            "Query (strong)",
            1,
            rru_strong(size),
            0.0,
            0.0,
            0,
        );
        r
    }
}

pub struct CountingEvents {
    pub inner: Arc<dyn EventStore>,
    pub meter: Arc<Meter>,
}

/// The claim item's size (`DynamoEventStore`): keys, the event, its payload, the index keys
/// and the claim's attributes.
pub fn claim_item_size(e: &StoredEvent) -> usize {
    s("pk", &format!("E#{}#{}", e.tenant, e.id))
        + s("sk", "E")
        + s("tenant", &e.tenant)
        + s("id", e.id.as_str())
        + s("event", e.event.as_str())
        + n("ts", e.timestamp_ms)
        + stored_payload_size(&e.payload)
        + n("expiresAt", e.expires_at)
        + index_keys_size(e)
        + s("state", "fanning")
        + s("owner", "own_01jv9qk3m4r7t2w8x5y6z0abcd")
        + n("leaseUntil", e.timestamp_ms + 90_000)
        + n("claim", e.timestamp_ms)
}

/// The payload as the adapter stores it: deflated when that is smaller.
fn stored_payload_size(payload: &str) -> usize {
    let (name, value) = webhooks::dynamo::payload_attribute(payload);
    name.len()
        + match value {
            aws_sdk_dynamodb::types::AttributeValue::B(b) => b.as_ref().len(),
            _ => payload.len(),
        }
}

fn index_keys_size(e: &StoredEvent) -> usize {
    s("gsi1pk", &webhooks::dynamo::event_index_pk(&e.tenant, &e.id))
        + s("gsi1sk", &format!("{:015}#{}", e.timestamp_ms, e.id))
}

/// The events-by-time index entry a new claim item writes: both tables' keys and the
/// projected attributes (`resources::EVENTS_BY_TIME`). One write unit per started KB, like a
/// table write; only a change of a key or projected attribute writes it again.
pub fn index_entry_size(e: &StoredEvent) -> usize {
    s("pk", &format!("E#{}#{}", e.tenant, e.id))
        + s("sk", "E")
        + index_keys_size(e)
        + s("id", e.id.as_str())
        + s("event", e.event.as_str())
        + n("ts", e.timestamp_ms)
        + s("state", "fanning")
}

/// The completion item: keys, the claim it completes, the fan-out list (as kept) and count.
pub fn completion_item_size(tenant: &Tenant, id: &EventId, webhooks: &[String]) -> usize {
    s("pk", &format!("E#{tenant}#{id}"))
        + s("sk", "F")
        + n("claim", 1_764_000_000_000)
        + collection(
            "webhooks",
            webhooks
                .iter()
                .take(webhooks::ports::MAX_RECORDED_FAN_OUT)
                .map(String::len),
        )
        + n("fanOut", webhooks.len() as u64)
        + n("expiresAt", 1_766_000_000)
}

impl CountingEvents {
    fn claim_size(&self, tenant: &Tenant, id: &EventId) -> usize {
        lock(&self.meter.sizes)
            .get(&(tenant.to_string(), id.to_string()))
            .copied()
            .unwrap_or(1024)
    }
}

#[async_trait]
impl EventStore for CountingEvents {
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.claim(event, owner, now_ms, lease_ms).await;
        let took = t0.elapsed();
        let key = (event.tenant.to_string(), event.id.to_string());
        let seen = lock(&self.meter.sizes).get(&key).copied();
        let size = seen.unwrap_or_else(|| claim_item_size(event));
        lock(&self.meter.sizes).insert(key, size);
        let new = matches!(r, Ok(Claim::Won(_))) && seen.is_none();
        // A conditional PutItem of the whole claim item; a failed condition is charged too, by
        // the item's size. A new item also writes its index entry.
        let index = if new { wru(index_entry_size(event)) } else { 0.0 };
        self.meter.add(
            took,
            "EventStore::claim",
            "PutItem (conditional) + index entry",
            1,
            0.0,
            wru(size) + index,
            0.0,
            0,
        );
        if !new && r.is_ok() {
            // Claimed before: both items read (one strongly consistent Query; the completion is
            // small), then, if the claim lapsed, taken over by an UpdateItem charged by the
            // whole claim item (owner, lease and claim are not in the index).
            let read = size + completion_item_size(&event.tenant, &event.id, &[]);
            self.meter.add(
                Duration::ZERO,
                "EventStore::claim, claimed before",
                "Query (strong)",
                1,
                rru_strong(read),
                0.0,
                0.0,
                0,
            );
            if matches!(r, Ok(Claim::Won(_))) {
                self.meter.add(
                    Duration::ZERO,
                    "EventStore::claim, take-over",
                    "UpdateItem (conditional)",
                    1,
                    0.0,
                    wru(size),
                    0.0,
                    0,
                );
            }
        }
        r
    }

    async fn complete(
        &self,
        tenant: &Tenant,
        id: &EventId,
        owner: &str,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let r = self.inner.complete(tenant, id, owner, webhooks).await;
        // A PutItem of the small completion item: the claim item (and the index) untouched.
        // The adapter knows the claim it completes from its own claim call (the same process
        // in ingest), so it reads nothing first.
        self.meter.add(
            t0.elapsed(),
            "EventStore::complete",
            "PutItem (conditional)",
            1,
            0.0,
            wru(completion_item_size(tenant, id, webhooks)),
            0.0,
            0,
        );
        r
    }

    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let r = self.inner.release(tenant, id, owner).await;
        let size = self.claim_size(tenant, id);
        self.meter.add(
            t0.elapsed(),
            "EventStore::release",
            "UpdateItem (conditional)",
            1,
            0.0,
            wru(size),
            0.0,
            0,
        );
        r
    }

    async fn get(&self, tenant: &Tenant, id: &EventId, consistent: bool) -> Result<Option<EventRecord>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.get(tenant, id, consistent).await;
        let took = t0.elapsed();
        // One Query of both items, sized by their sum.
        let size = match &r {
            Ok(Some(e)) => claim_item_size(&e.event) + completion_item_size(tenant, id, &e.webhooks),
            _ => 0,
        };
        let (api, rru) = if consistent {
            ("Query (strong)", rru_strong(size))
        } else {
            ("Query (eventual)", rru_eventual(size))
        };
        self.meter.add(took, "EventStore::get", api, 1, rru, 0.0, 0.0, 0);
        r
    }

    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError> {
        let t0 = Instant::now();
        let r = self.inner.list(tenant, query, limit, before).await;
        // Index entries are small (no payload): about 150 bytes each, eventually consistent;
        // then one BatchGetItem of both items of each event (each item charged on its own).
        let n = r.as_ref().map_or(0, |p| p.items.len());
        let rru = rru_eventual(150 * n.max(1));
        self.meter
            .add(t0.elapsed(), "EventStore::list", "Query (index)", 1, rru, 0.0, 0.0, 0);
        if n > 0 {
            self.meter.add(
                Duration::ZERO,
                "EventStore::list, completions",
                "BatchGetItem (eventual)",
                (2 * n).div_ceil(100) as u64,
                (2 * n) as f64 * 0.5,
                0.0,
                0.0,
                0,
            );
        }
        r
    }
}

pub struct CountingQueue {
    pub inner: Arc<dyn Queue>,
    pub meter: Arc<Meter>,
    /// Queue URL -> a short name for the tables (`events`, `delivery`, …).
    pub labels: HashMap<String, &'static str>,
}

impl CountingQueue {
    fn key(&self, method: &str, url: &str) -> String {
        format!("Queue::{method} ({})", self.labels.get(url).copied().unwrap_or("?"))
    }
}

fn sqs_requests(bytes: usize) -> f64 {
    bytes.div_ceil(64 * 1024).max(1) as f64
}

#[async_trait]
impl Queue for CountingQueue {
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError> {
        let t0 = Instant::now();
        let r = self.inner.send_batch(queue_url, messages).await;
        let took = t0.elapsed();
        let bytes: usize = messages
            .iter()
            .map(|m| {
                m.body.len()
                    + m.reason
                        .as_deref()
                        .map(|r| r.len() + "ErrorReason".len() + 6)
                        .unwrap_or(0)
            })
            .sum();
        self.meter.add(
            took,
            &self.key("send_batch", queue_url),
            "SendMessageBatch",
            1,
            0.0,
            0.0,
            sqs_requests(bytes),
            messages.len() as u64,
        );
        r
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        let t0 = Instant::now();
        let r = self.inner.change_visibility(queue_url, receipt_handle, seconds).await;
        let took = t0.elapsed();
        self.meter.add(
            took,
            &self.key("change_visibility", queue_url),
            "ChangeMessageVisibility",
            1,
            0.0,
            0.0,
            1.0,
            0,
        );
        r
    }

    async fn receive(&self, queue_url: &str, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let t0 = Instant::now();
        let r = self.inner.receive(queue_url, max, wait).await;
        let took = t0.elapsed();
        let got = r.as_ref().map(Vec::len).unwrap_or(0);
        if got == 0 {
            // Idle polling: counted apart, it does not grow with deliveries.
            let key = self.key("receive", queue_url) + ", empty";
            self.meter.add(took, &key, "ReceiveMessage", 1, 0.0, 0.0, 1.0, 0);
            let mut stats = lock(&self.meter.stats);
            if let Some(s) = stats.get_mut(&key) {
                s.empty += 1;
            }
        } else {
            let bytes: usize = r.as_ref().map(|m| m.iter().map(|m| m.body.len()).sum()).unwrap_or(0);
            self.meter.add(
                took,
                &self.key("receive", queue_url),
                "ReceiveMessage",
                1,
                0.0,
                0.0,
                sqs_requests(bytes),
                got as u64,
            );
        }
        r
    }

    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError> {
        let t0 = Instant::now();
        let r = self.inner.delete_batch(queue_url, receipt_handles).await;
        let took = t0.elapsed();
        self.meter.add(
            took,
            &self.key("delete_batch", queue_url),
            "DeleteMessageBatch",
            1,
            0.0,
            0.0,
            1.0,
            receipt_handles.len() as u64,
        );
        r
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        let t0 = Instant::now();
        let r = self.inner.delete(queue_url, receipt_handle).await;
        let took = t0.elapsed();
        self.meter.add(
            took,
            &self.key("delete", queue_url),
            "DeleteMessage",
            1,
            0.0,
            0.0,
            1.0,
            1,
        );
        r
    }
}

/// Counts the AWS API calls actually sent (every attempt, retries included), by the operation
/// name in the `x-amz-target` header both DynamoDB and SQS use: a check on the ports' mapping.
#[derive(Clone, Debug, Default)]
pub struct Wire(Arc<Mutex<BTreeMap<String, u64>>>);

impl Wire {
    pub fn reset(&self) {
        lock(&self.0).clear();
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.0).clone()
    }
}

impl aws_sdk_dynamodb::config::Intercept for Wire {
    fn name(&self) -> &'static str {
        "bench-wire-counter"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let op = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("(unknown)")
            .to_string();
        *lock(&self.0).entry(op).or_default() += 1;
        Ok(())
    }
}
