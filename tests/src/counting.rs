//! Counting decorators of the storage ports by DynamoDB partition key: each call is recorded
//! against the partition key(s) the DynamoDB adapter would touch (`shared/src/dynamo.rs`'s
//! layout, the `events-by-time` index included), as reads or writes with estimated capacity
//! units, in the second of the pipeline's clock it was made in. The cache tests count reads
//! with them; the bench's `capacity` section finds the hottest keys with them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use webhooks::domain::{Health, Webhook};
use webhooks::event_types::EventType;
use webhooks::messages::{EventId, Tenant};
use webhooks::ports::{
    Attempt, Claim, Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore,
    EventSummary, Page, StoreError, StoredEvent, WebhookStore,
};
use webhooks::time::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read,
    Write,
}

/// What one partition key took in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub requests: u64,
    /// Read request units (strong reads 1 per 4 KB, eventual 0.5) or write request units (1
    /// per KB of the item).
    pub units: f64,
}

/// A key, read or write, and its load in each second it was used.
pub type KeySeries = (String, Op, Vec<(u64, Load)>);

#[derive(Default)]
struct Counts {
    /// (partition key, read or write, second) -> load.
    by_key: HashMap<(String, Op, u64), Load>,
    /// Port method -> calls.
    calls: BTreeMap<&'static str, u64>,
}

/// Shared by the decorators of one pipeline; `clock` says which second a call falls in.
pub struct KeyMeter {
    clock: Clock,
    counts: Mutex<Counts>,
}

impl KeyMeter {
    pub fn new(clock: Clock) -> Arc<KeyMeter> {
        Arc::new(KeyMeter {
            clock,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, method: &'static str, keys: &[(String, Op, f64)]) {
        let second = self.clock.now_ms() / 1000;
        let mut c = self.lock();
        *c.calls.entry(method).or_default() += 1;
        for (key, op, units) in keys {
            let l = c.by_key.entry((key.clone(), *op, second)).or_default();
            l.requests += 1;
            l.units += units;
        }
    }

    /// Calls of a port method (`"WebhookStore::get"`, …).
    pub fn calls(&self, method: &str) -> u64 {
        self.lock().calls.get(method).copied().unwrap_or(0)
    }

    pub fn reset(&self) {
        *self.lock() = Counts::default();
    }

    /// Every (key, operation) with its load in each second it was used, heaviest second first.
    pub fn per_second(&self) -> Vec<KeySeries> {
        let c = self.lock();
        let mut grouped: HashMap<(String, Op), Vec<(u64, Load)>> = HashMap::new();
        for ((key, op, second), load) in &c.by_key {
            grouped.entry((key.clone(), *op)).or_default().push((*second, *load));
        }
        let mut out: Vec<KeySeries> = grouped
            .into_iter()
            .map(|((k, op), mut v)| {
                v.sort_by(|a, b| b.1.units.total_cmp(&a.1.units));
                (k, op, v)
            })
            .collect();
        out.sort_by(|a, b| b.2[0].1.units.total_cmp(&a.2[0].1.units).then(a.0.cmp(&b.0)));
        out
    }

    /// Everything `key` took as `op`, over all seconds.
    pub fn total(&self, key: &str, op: Op) -> Load {
        let c = self.lock();
        let mut sum = Load::default();
        for ((k, o, _), l) in &c.by_key {
            if k == key && *o == op {
                sum.requests += l.requests;
                sum.units += l.units;
            }
        }
        sum
    }

    /// The heaviest second of the heaviest key of `op` whose name starts with `prefix`:
    /// (key, second's load). `None` when no such key was used.
    pub fn hottest(&self, op: Op, prefix: &str) -> Option<(String, Load)> {
        self.per_second()
            .into_iter()
            .filter(|(k, o, _)| *o == op && k.starts_with(prefix))
            .map(|(k, _, v)| (k, v[0].1))
            .max_by(|a, b| a.1.units.total_cmp(&b.1.units))
    }
}

fn wru(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn rru_strong(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

fn rru_eventual(bytes: usize) -> f64 {
    0.5 * rru_strong(bytes)
}

/// An item's size as DynamoDB counts it, near enough: its JSON, which spells every attribute
/// name and value once.
fn size<T: serde::Serialize>(item: &T) -> usize {
    serde_json::to_vec(item).map(|v| v.len()).unwrap_or(1024)
}

fn webhook_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}

pub struct KeyedStore {
    pub inner: Arc<dyn WebhookStore>,
    pub meter: Arc<KeyMeter>,
}

#[async_trait]
impl WebhookStore for KeyedStore {
    async fn create(&self, w: &Webhook) -> Result<(), StoreError> {
        let mut keys = vec![(webhook_pk(&w.tenant), Op::Write, 2.0 * wru(size(w)))];
        keys.extend(
            w.subscribed_types()
                .map(|t| (format!("S#{}#{t}", w.tenant), Op::Write, 2.0)),
        );
        self.meter.record("WebhookStore::create", &keys);
        self.inner.create(w).await
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let r = self.inner.get(tenant, id).await;
        let units = match &r {
            Ok(Some(w)) => rru_strong(size(w)),
            _ => 1.0,
        };
        self.meter
            .record("WebhookStore::get", &[(webhook_pk(tenant), Op::Read, units)]);
        r
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        let r = self.inner.list(tenant, limit, after).await;
        let bytes = r.as_ref().map_or(0, |p| p.items.iter().map(size).sum());
        self.meter.record(
            "WebhookStore::list",
            &[(webhook_pk(tenant), Op::Read, rru_strong(bytes))],
        );
        r
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        // One transaction: the webhook and its subscription items, at twice the units.
        let mut keys = vec![(webhook_pk(&old.tenant), Op::Write, 2.0 * wru(size(old).max(size(new))))];
        let types: std::collections::BTreeSet<&str> = old.subscribed_types().chain(new.subscribed_types()).collect();
        keys.extend(
            types
                .into_iter()
                .map(|t| (format!("S#{}#{t}", old.tenant), Op::Write, 2.0)),
        );
        self.meter.record("WebhookStore::update", &keys);
        self.inner.update(old, new).await
    }

    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
        self.meter
            .record("WebhookStore::set_health", &[(webhook_pk(tenant), Op::Write, 1.0)]);
        self.inner.set_health(tenant, id, old, new).await
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.meter
            .record("WebhookStore::delete", &[(webhook_pk(tenant), Op::Write, 2.0)]);
        self.inner.delete(tenant, id).await
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let r = self.inner.subscribers(tenant, event).await;
        // Subscription items are about 100 bytes: one eventually consistent Query.
        let bytes = 100 * r.as_ref().map_or(0, Vec::len);
        self.meter.record(
            "WebhookStore::subscribers",
            &[(format!("S#{tenant}#{event}"), Op::Read, rru_eventual(bytes))],
        );
        r
    }
}

pub struct KeyedLog {
    pub inner: Arc<dyn DeliveryLog>,
    pub meter: Arc<KeyMeter>,
}

/// The shard of the delivery's record (`webhooks::dynamo::delivery_pk`).
fn log_pk(webhook_id: &str, delivery_id: &str) -> String {
    webhooks::dynamo::delivery_pk(webhook_id, delivery_id)
}

#[async_trait]
impl DeliveryLog for KeyedLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let bytes = size(delivery) + size(attempt) * (delivery.attempts.len() + 1);
        self.meter.record(
            "DeliveryLog::record_attempt",
            &[(log_pk(&delivery.webhook_id, &delivery.id), Op::Write, wru(bytes))],
        );
        self.inner
            .record_attempt(delivery, attempt, status, next_attempt_at, now)
            .await
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.meter.record(
            "DeliveryLog::finish",
            &[(
                log_pk(&delivery.webhook_id, &delivery.id),
                Op::Write,
                wru(size(delivery) + note.len()),
            )],
        );
        self.inner.finish(delivery, status, note, now).await
    }

    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError> {
        self.meter.record(
            "DeliveryLog::reopen",
            &[(log_pk(&record.webhook_id, &record.id), Op::Write, wru(size(record)))],
        );
        self.inner.reopen(record, to, now).await
    }

    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        let r = self.inner.get(webhook_id, delivery_id).await;
        let units = match &r {
            Ok(Some(d)) => rru_strong(size(d)),
            _ => 1.0,
        };
        self.meter.record(
            "DeliveryLog::get",
            &[(log_pk(webhook_id, delivery_id), Op::Read, units)],
        );
        r
    }

    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError> {
        let r = self.inner.list(webhook_id, limit, before).await;
        // One Query per shard, each reading its share of the page (strongly consistent).
        let bytes = r.as_ref().map_or(0, |p| p.items.iter().map(size).sum::<usize>());
        let shards = webhooks::dynamo::DELIVERY_SHARDS;
        let keys: Vec<(String, Op, f64)> = (0..shards)
            .map(|h| {
                let share = bytes / shards as usize;
                (format!("W#{webhook_id}#{h}"), Op::Read, rru_strong(share))
            })
            .collect();
        self.meter.record("DeliveryLog::list", &keys);
        r
    }
}

pub struct KeyedEvents {
    pub inner: Arc<dyn EventStore>,
    pub meter: Arc<KeyMeter>,
}

fn event_keys(tenant: &Tenant, id: &EventId, units: f64, index: bool) -> Vec<(String, Op, f64)> {
    let mut keys = vec![(format!("E#{tenant}#{id}"), Op::Write, units)];
    if index {
        // The `events-by-time` index holds the claim item (it projects `state`): the claim
        // and a release write the tenant's index partition too (small entries: 1 unit). The
        // completion is an item of its own, not in the index.
        keys.push((webhooks::dynamo::event_index_pk(tenant, id), Op::Write, 1.0));
    }
    keys
}

/// The claim item as the DynamoDB adapter writes it: the event with its payload deflated when
/// that is smaller (`webhooks::dynamo::payload_attribute`), plus ~100 bytes of keys and lease.
fn claim_bytes(event: &StoredEvent) -> usize {
    let payload = match webhooks::dynamo::payload_attribute(&event.payload) {
        (_, aws_sdk_dynamodb::types::AttributeValue::B(b)) => b.as_ref().len(),
        _ => event.payload.len(),
    };
    size(event) - event.payload.len() + payload + 100
}

#[async_trait]
impl EventStore for KeyedEvents {
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError> {
        let units = wru(claim_bytes(event));
        self.meter
            .record("EventStore::claim", &event_keys(&event.tenant, &event.id, units, true));
        self.inner.claim(event, owner, now_ms, lease_ms).await
    }

    async fn complete(
        &self,
        tenant: &Tenant,
        id: &EventId,
        owner: &str,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        // A small item of its own (sk `F`): the claim number, the fan-out's ids and count.
        let units = wru(100 + 30 * webhooks.len().min(webhooks::ports::MAX_RECORDED_FAN_OUT));
        self.meter
            .record("EventStore::complete", &event_keys(tenant, id, units, false));
        self.inner.complete(tenant, id, owner, webhooks).await
    }

    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError> {
        self.meter
            .record("EventStore::release", &event_keys(tenant, id, 2.0, true));
        self.inner.release(tenant, id, owner).await
    }

    async fn get(&self, tenant: &Tenant, id: &EventId, consistent: bool) -> Result<Option<EventRecord>, StoreError> {
        let r = self.inner.get(tenant, id, consistent).await;
        let bytes = match &r {
            Ok(Some(e)) => size(&e.event),
            _ => 0,
        };
        let units = if consistent {
            rru_strong(bytes)
        } else {
            rru_eventual(bytes)
        };
        self.meter
            .record("EventStore::get", &[(format!("E#{tenant}#{id}"), Op::Read, units)]);
        r
    }

    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError> {
        let r = self.inner.list(tenant, query, limit, before).await;
        // One Query per index shard, each reading its share of the page.
        let n = r.as_ref().map_or(0, |p| p.items.len());
        let shards = webhooks::dynamo::EVENT_INDEX_SHARDS;
        let keys: Vec<(String, Op, f64)> = (0..shards)
            .map(|h| {
                let share = 100 * n / shards as usize;
                (format!("EV#{tenant}#{h}"), Op::Read, rru_eventual(share))
            })
            .collect();
        self.meter.record("EventStore::list", &keys);
        r
    }
}
