//! In-memory adapters for the embedded local mode and fast tests. They keep the semantics and
//! the limits the AWS adapters have (conditional writes, ordering, pagination, item and
//! message sizes, batch entries, the 12 h visibility rule), which the contract suites check.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::domain::{Health, Webhook};
use crate::event_types::EventType;
use crate::messages::{EventId, Tenant};
use crate::ports::{
    Attempt, Claim, Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore,
    EventSummary, MAX_BATCH, MAX_IN_FLIGHT, MAX_RECORDED_FAN_OUT, OutgoingMessage, Page, Queue, QueueError,
    QueueMessage, StoreError, StoredEvent, WebhookStore, check_batch, check_visibility,
};

/// A poisoned lock only means another thread panicked while holding it (in a test); the data
/// is still whole, so carry on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct MemoryWebhookStore {
    // (tenant, id): ids sort by creation time, so the map's order is the listing order.
    items: Mutex<BTreeMap<(String, String), Webhook>>,
}

impl MemoryWebhookStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), Webhook>> {
        lock(&self.items)
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhookStore {
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let mut items = self.lock();
        let key = (webhook.tenant.clone(), webhook.id.clone());
        if items.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        items.insert(key, webhook.clone());
        Ok(())
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        Ok(self.lock().get(&(tenant.to_string(), id.to_string())).cloned())
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        let items = self.lock();
        let start = (tenant.to_string(), after.unwrap_or("").to_string());
        let page: Vec<Webhook> = items
            .range(start..)
            .take_while(|((t, _), _)| t == tenant)
            .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit + 1)
            .map(|(_, w)| w.clone())
            .collect();
        Ok(Page::overfetched(page, limit, |w| w.id.clone()))
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let mut items = self.lock();
        match items.get_mut(&(old.tenant.clone(), old.id.clone())) {
            None => Err(StoreError::NotFound),
            Some(current) if current.version != old.version => Err(StoreError::Conflict),
            Some(current) => {
                let health = if new.health == old.health {
                    current.health.clone()
                } else {
                    new.health.clone()
                };
                *current = Webhook { health, ..new.clone() };
                Ok(())
            }
        }
    }

    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
        let mut items = self.lock();
        match items.get_mut(&(tenant.to_string(), id.to_string())) {
            Some(current) if current.health.rev == old.rev => {
                current.health = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        match self.lock().remove(&(tenant.to_string(), id.to_string())) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let items = self.lock();
        let start = (tenant.to_string(), String::new());
        Ok(items
            .range(start..)
            .take_while(|((t, _), _)| t == tenant)
            .filter(|(_, w)| w.active && w.subscribes_to(event))
            .map(|((_, id), _)| id.clone())
            .collect())
    }
}

#[derive(Default)]
pub struct MemoryDeliveryLog {
    // (webhook id, delivery id) -> delivery; delivery ids sort by event time.
    deliveries: Mutex<BTreeMap<(String, String), Delivery>>,
}

impl MemoryDeliveryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The delivery's record, a new one from `delivery` if there is none.
    fn with_record<T>(&self, delivery: &Delivery, now: u64, f: impl FnOnce(&mut Delivery) -> T) -> T {
        let mut all = lock(&self.deliveries);
        let record = all
            .entry((delivery.webhook_id.clone(), delivery.id.clone()))
            .or_insert_with(|| Delivery {
                attempts: Vec::new(),
                status: DeliveryStatus::Pending,
                created_at: now,
                updated_at: now,
                note: None,
                cycle_start: 0,
                next_attempt_at: None,
                ..delivery.clone()
            });
        f(record)
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with_record(delivery, now, |d| {
            d.attempts.push(attempt.clone());
            d.updated_at = now;
            if d.status == DeliveryStatus::Succeeded {
                return false;
            }
            d.status = status;
            d.next_attempt_at = next_attempt_at;
            true
        }))
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with_record(delivery, now, |d| {
            if d.status != DeliveryStatus::Pending || d.cycle != delivery.cycle {
                return false;
            }
            d.status = status;
            d.note = Some(note.to_string());
            d.next_attempt_at = None;
            d.updated_at = now;
            true
        }))
    }

    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError> {
        let mut all = lock(&self.deliveries);
        match all.get_mut(&(record.webhook_id.clone(), record.id.clone())) {
            Some(d) if d.cycle == record.cycle && d.attempts.len() == record.attempts.len() && to > record.cycle => {
                d.cycle = to;
                d.cycle_start = d.attempts.len() as u32;
                d.status = DeliveryStatus::Pending;
                d.note = None;
                d.next_attempt_at = None;
                d.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(lock(&self.deliveries)
            .get(&(webhook_id.to_string(), delivery_id.to_string()))
            .cloned())
    }

    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError> {
        let all = lock(&self.deliveries);
        let lo = (webhook_id.to_string(), String::new());
        let hi = (
            webhook_id.to_string(),
            before.map(str::to_string).unwrap_or_else(|| "~".into()),
        );
        let items: Vec<Delivery> = all
            .range(lo..hi)
            .rev()
            .take(limit + 1)
            .map(|(_, d)| d.clone())
            .collect();
        Ok(Page::overfetched(items, limit, |d| d.id.clone()))
    }
}

/// DynamoDB's largest item (400 KB), counted as it counts: attribute names and values.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

struct EventEntry {
    event: StoredEvent,
    fanned: bool,
    owner: String,
    lease_until: u64,
    webhooks: Vec<String>,
    fan_out: usize,
}

/// Events, claimed and stored as the DynamoDB adapter does it.
#[derive(Default)]
pub struct MemoryEventStore {
    events: Mutex<HashMap<(Tenant, EventId), EventEntry>>,
}

impl MemoryEventStore {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The size DynamoDB would count for an event record (names and values of its attributes).
pub fn event_item_size(e: &StoredEvent) -> usize {
    // pk, sk, tenant, id, event, ts, payload, expiresAt, state, owner, leaseUntil.
    const NAMES_AND_NUMBERS: usize = 2 + 2 + 6 + 2 + 5 + 2 + 7 + 9 + 5 + 5 + 10 + 4 * 21 + 40;
    NAMES_AND_NUMBERS + 2 * (e.tenant.len() + e.id.as_str().len()) + 4 + e.event.as_str().len() + e.payload.len()
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError> {
        if event_item_size(event) > MAX_ITEM_BYTES {
            return Err(StoreError::Backend(
                "ValidationException: Item size has exceeded the maximum allowed size".into(),
            ));
        }
        let mut all = lock(&self.events);
        let key = (event.tenant.clone(), event.id.clone());
        match all.get_mut(&key) {
            None => {
                all.insert(
                    key,
                    EventEntry {
                        event: event.clone(),
                        fanned: false,
                        owner: owner.to_string(),
                        lease_until: now_ms + lease_ms,
                        webhooks: Vec::new(),
                        fan_out: 0,
                    },
                );
                Ok(Claim::Won(event.clone()))
            }
            Some(e) if e.fanned => Ok(Claim::Duplicate(e.event.clone())),
            Some(e) if e.lease_until <= now_ms => {
                e.owner = owner.to_string();
                e.lease_until = now_ms + lease_ms;
                Ok(Claim::Won(e.event.clone()))
            }
            Some(e) => Ok(Claim::Busy {
                until_ms: e.lease_until,
            }),
        }
    }

    async fn complete(
        &self,
        tenant: &Tenant,
        id: &EventId,
        owner: &str,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        if let Some(e) = lock(&self.events).get_mut(&(tenant.clone(), id.clone()))
            && e.owner == owner
        {
            e.fanned = true;
            e.webhooks = webhooks.iter().take(MAX_RECORDED_FAN_OUT).cloned().collect();
            e.fan_out = webhooks.len();
        }
        Ok(())
    }

    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError> {
        if let Some(e) = lock(&self.events).get_mut(&(tenant.clone(), id.clone()))
            && e.owner == owner
            && !e.fanned
        {
            e.lease_until = 0;
        }
        Ok(())
    }

    async fn get(&self, tenant: &Tenant, id: &EventId, _consistent: bool) -> Result<Option<EventRecord>, StoreError> {
        Ok(lock(&self.events)
            .get(&(tenant.clone(), id.clone()))
            .map(|e| EventRecord {
                event: e.event.clone(),
                fanned: e.fanned,
                webhooks: e.webhooks.clone(),
                fan_out: e.fan_out,
            }))
    }

    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError> {
        let all = lock(&self.events);
        let mut items: Vec<EventSummary> = all
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, e)| &e.event)
            .filter(|e| e.timestamp_ms >= query.since_ms && query.event.is_none_or(|t| t == e.event))
            .filter(|e| before.is_none_or(|b| (e.timestamp_ms, e.id.as_str()) < (b.timestamp_ms, b.id.as_str())))
            .map(|e| EventSummary {
                id: e.id.clone(),
                event: e.event,
                timestamp_ms: e.timestamp_ms,
                fanned: all.get(&(e.tenant.clone(), e.id.clone())).is_some_and(|x| x.fanned),
            })
            .collect();
        items.sort_by(|a, b| (b.timestamp_ms, b.id.as_str()).cmp(&(a.timestamp_ms, a.id.as_str())));
        items.truncate(limit + 1);
        Ok(Page::overfetched(items, limit, EventCursor::after))
    }
}

struct StoredMessage {
    message_id: String,
    body: String,
    sent_ms: u64,
    receive_count: u32,
    visible_at: Instant,
    /// The handle of the latest receive, and when it happened.
    receipt: Option<(String, Instant)>,
}

impl StoredMessage {
    fn in_flight(&self, now: Instant) -> bool {
        self.receipt.is_some() && self.visible_at > now
    }
}

struct MemoryQueueState {
    messages: Vec<StoredMessage>,
    visibility: Duration,
    redrive: Option<(String, u32)>,
    in_flight_limit: usize,
}

/// Queues with the SQS semantics the handlers rely on: a received message is hidden for the
/// visibility timeout, comes back unless deleted, counts its receives, and moves to the
/// dead-letter queue on the receive after `maxReceiveCount`; with SQS's limits (10 entries and
/// 1 MiB a batch, 1 MiB a message, delays up to 15 min, visibility at most 12 h after the
/// receive, receipt handles checked, receives stop at `MAX_IN_FLIGHT` messages in flight). Its clock can be moved forward (`advance`), so tests of long retry schedules
/// take no wall-clock time.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<String, MemoryQueueState>>,
    arrived: Notify,
    counter: std::sync::atomic::AtomicU64,
    clock: crate::time::Clock,
    /// When the queue was made, for a stopped clock (see `now`).
    origin: Option<Instant>,
}

const RECEIPT_PREFIX: &str = "rh-";

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue on a clock shared with the dispatcher (see `time::Clock`).
    pub fn with_clock(clock: crate::time::Clock) -> Self {
        MemoryQueue {
            origin: clock.stopped().map(|_| Instant::now()),
            clock,
            ..Self::default()
        }
    }

    /// Creates a queue and returns its URL (`memory://name`).
    pub fn create_queue(&self, name: &str, visibility: Duration, redrive: Option<(String, u32)>) -> String {
        let url = format!("memory://{name}");
        lock(&self.queues).entry(url.clone()).or_insert(MemoryQueueState {
            messages: Vec::new(),
            visibility,
            redrive,
            in_flight_limit: MAX_IN_FLIGHT,
        });
        url
    }

    /// Lowers a queue's in-flight limit (SQS's is `MAX_IN_FLIGHT`), so a test can reach it.
    pub fn set_in_flight_limit(&self, queue_url: &str, limit: usize) {
        if let Some(q) = lock(&self.queues).get_mut(queue_url) {
            q.in_flight_limit = limit;
        }
    }

    /// Messages received and not yet deleted nor visible again (SQS's
    /// ApproximateNumberOfMessagesNotVisible); a delayed message is not among them.
    pub fn in_flight(&self, queue_url: &str) -> usize {
        let now = self.now();
        lock(&self.queues)
            .get(queue_url)
            .map_or(0, |q| q.messages.iter().filter(|m| m.in_flight(now)).count())
    }

    /// Messages sent with a delay that has not run out (SQS's ApproximateNumberOfMessagesDelayed).
    pub fn delayed(&self, queue_url: &str) -> usize {
        let now = self.now();
        lock(&self.queues).get(queue_url).map_or(0, |q| {
            q.messages
                .iter()
                .filter(|m| m.receipt.is_none() && m.visible_at > now)
                .count()
        })
    }

    /// Moves this queue's clock forward: hidden messages whose time has come are visible.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.arrived.notify_waiters();
    }

    /// On a stopped clock (the bench's simulation) only `advance` moves the queue's time, so a
    /// message hidden for 5 simulated seconds is not shown early by a slow machine.
    fn now(&self) -> Instant {
        match self.origin {
            Some(origin) => origin + self.clock.skew(),
            None => Instant::now() + self.clock.skew(),
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// Messages in the queue, visible or not (SQS's ApproximateNumberOfMessages + NotVisible).
    pub fn depth(&self, queue_url: &str) -> usize {
        lock(&self.queues).get(queue_url).map(|q| q.messages.len()).unwrap_or(0)
    }

    /// The bodies of the messages in a queue, visible or not, without receiving them.
    pub fn bodies(&self, queue_url: &str) -> Vec<String> {
        lock(&self.queues)
            .get(queue_url)
            .map(|q| q.messages.iter().map(|m| m.body.clone()).collect())
            .unwrap_or_default()
    }

    fn try_receive(&self, queue_url: &str, max: usize) -> Result<Vec<QueueMessage>, QueueError> {
        let now = self.now();
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        let visibility = q.visibility;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        // Past the limit SQS hands out nothing (a long poll just waits), to every consumer.
        let room = q
            .in_flight_limit
            .saturating_sub(q.messages.iter().filter(|m| m.in_flight(now)).count());
        let max = max.min(room);
        let mut i = 0;
        while i < q.messages.len() && out.len() < max {
            if q.messages[i].visible_at > now {
                i += 1;
                continue;
            }
            if let Some((_, max_receive)) = &q.redrive
                && q.messages[i].receive_count >= *max_receive
            {
                dead.push(q.messages.remove(i));
                continue;
            }
            let receipt = format!("{RECEIPT_PREFIX}{}", self.next_id(&q.messages[i].message_id));
            let m = &mut q.messages[i];
            m.receive_count += 1;
            m.visible_at = now + visibility;
            m.receipt = Some((receipt.clone(), now));
            out.push(QueueMessage {
                message_id: m.message_id.clone(),
                receipt_handle: receipt,
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_timestamp_ms: m.sent_ms,
            });
            i += 1;
        }
        if let Some((dlq, _)) = q.redrive.clone()
            && !dead.is_empty()
            && let Some(target) = queues.get_mut(&dlq)
        {
            for mut m in dead {
                m.receive_count = 0;
                m.receipt = None;
                m.visible_at = now;
                target.messages.push(m);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError> {
        check_batch(messages)?;
        {
            let now = self.now();
            let mut queues = lock(&self.queues);
            let q = queues
                .get_mut(queue_url)
                .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
            for m in messages {
                q.messages.push(StoredMessage {
                    message_id: self.next_id("msg"),
                    body: m.body.clone(),
                    sent_ms: self.clock.now_ms(),
                    receive_count: 0,
                    visible_at: now + Duration::from_secs(u64::from(m.delay_s)),
                    receipt: None,
                });
            }
        }
        self.arrived.notify_waiters();
        Ok(Vec::new())
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        let now = self.now();
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        let m = q
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_ref().is_some_and(|(r, _)| r == receipt_handle))
            .ok_or(QueueError::InvalidReceipt)?;
        let received_at = m.receipt.as_ref().map_or(now, |(_, at)| *at);
        let held = now.saturating_duration_since(received_at).as_secs();
        check_visibility(held, seconds)?;
        m.visible_at = now + Duration::from_secs(seconds as u64);
        drop(queues);
        if seconds == 0 {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn receive(&self, queue_url: &str, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let got = self.try_receive(queue_url, max.min(MAX_BATCH))?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Wake on a send, or poll again soon for messages whose visibility ran out.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError> {
        if receipt_handles.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipt_handles.len()));
        }
        let mut failed = Vec::new();
        for r in receipt_handles {
            if self.delete(queue_url, r).await.is_err() {
                failed.push(r.clone());
            }
        }
        Ok(failed)
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        // SQS refuses a handle it never issued, and accepts (as a no-op) an old one.
        if !receipt_handle.starts_with(RECEIPT_PREFIX) {
            return Err(QueueError::InvalidReceipt);
        }
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        q.messages
            .retain(|m| m.receipt.as_ref().is_none_or(|(r, _)| r != receipt_handle));
        Ok(())
    }
}
