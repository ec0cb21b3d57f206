//! In-memory adapters for the embedded local mode and fast tests. They keep the semantics the
//! AWS adapters have (conditional writes, ordering, pagination), which the contract suite checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::domain::Webhook;
use crate::event_types::EventType;
use crate::ports::{
    Attempt, Delivery, DeliveryLog, DeliveryStatus, MAX_BATCH, OutgoingMessage, Page, Queue, QueueError, QueueMessage,
    StoreError, WebhookStore,
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
        let mut page: Vec<Webhook> = items
            .range(start..)
            .take_while(|((t, _), _)| t == tenant)
            .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit + 1)
            .map(|(_, w)| w.clone())
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|w| w.id.clone()).unwrap_or_default()
        });
        Ok(Page { items: page, next })
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let mut items = self.lock();
        match items.get_mut(&(old.tenant.clone(), old.id.clone())) {
            None => Err(StoreError::NotFound),
            Some(current) if current.version != old.version => Err(StoreError::Conflict),
            Some(current) => {
                *current = new.clone();
                Ok(())
            }
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
    events: Mutex<std::collections::HashSet<(String, String)>>,
}

impl MemoryDeliveryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `change` to the delivery's record (a new one from `delivery` if there is none)
    /// when `allowed` accepts its current status.
    fn upsert(
        &self,
        delivery: &Delivery,
        now: u64,
        allowed: impl Fn(DeliveryStatus) -> bool,
        change: impl FnOnce(&mut Delivery),
    ) -> bool {
        let mut all = lock(&self.deliveries);
        let record = all
            .entry((delivery.webhook_id.clone(), delivery.id.clone()))
            .or_insert_with(|| Delivery {
                attempts: Vec::new(),
                status: DeliveryStatus::Pending,
                created_at: now,
                updated_at: now,
                note: None,
                ..delivery.clone()
            });
        if !allowed(record.status) {
            return false;
        }
        change(record);
        record.updated_at = now;
        true
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        now: u64,
    ) -> Result<bool, StoreError> {
        let open = |s| matches!(s, DeliveryStatus::Pending | DeliveryStatus::Failed);
        Ok(self.upsert(delivery, now, open, |d| {
            d.attempts.push(attempt.clone());
            d.status = status;
        }))
    }

    async fn skip(&self, delivery: &Delivery, note: &str, now: u64) -> Result<bool, StoreError> {
        let open = |s| matches!(s, DeliveryStatus::Pending | DeliveryStatus::Failed);
        Ok(self.upsert(delivery, now, open, |d| {
            d.status = DeliveryStatus::Skipped;
            d.note = Some(note.to_string());
        }))
    }

    async fn event_seen(&self, tenant: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.events).contains(&(tenant.to_string(), event_id.to_string())))
    }

    async fn mark_event(&self, tenant: &str, event_id: &str, _expires_at: u64) -> Result<(), StoreError> {
        lock(&self.events).insert((tenant.to_string(), event_id.to_string()));
        Ok(())
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
        let mut items: Vec<Delivery> = all
            .range(lo..hi)
            .rev()
            .take(limit + 1)
            .map(|(_, d)| d.clone())
            .collect();
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|d| d.id.clone()).unwrap_or_default()
        });
        Ok(Page { items, next })
    }
}

struct StoredMessage {
    message_id: String,
    body: String,
    sent_ms: u64,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

struct MemoryQueueState {
    messages: Vec<StoredMessage>,
    visibility: Duration,
    redrive: Option<(String, u32)>,
}

/// Queues with the SQS semantics the handlers rely on: a received message is hidden for the
/// visibility timeout, comes back unless deleted, counts its receives, and moves to the
/// dead-letter queue on the receive after `maxReceiveCount`.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<String, MemoryQueueState>>,
    arrived: Notify,
    counter: std::sync::atomic::AtomicU64,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a queue and returns its URL (`memory://name`).
    pub fn create_queue(&self, name: &str, visibility: Duration, redrive: Option<(String, u32)>) -> String {
        let url = format!("memory://{name}");
        lock(&self.queues).entry(url.clone()).or_insert(MemoryQueueState {
            messages: Vec::new(),
            visibility,
            redrive,
        });
        url
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// Messages in the queue, visible or not (SQS's ApproximateNumberOfMessages + NotVisible).
    pub fn depth(&self, queue_url: &str) -> usize {
        lock(&self.queues).get(queue_url).map(|q| q.messages.len()).unwrap_or(0)
    }

    fn try_receive(&self, queue_url: &str, max: usize) -> Result<Vec<QueueMessage>, QueueError> {
        let mut queues = lock(&self.queues);
        let now = Instant::now();
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        let visibility = q.visibility;
        let mut out = Vec::new();
        let mut dead = Vec::new();
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
            let receipt = format!("{}-r{}", q.messages[i].message_id, q.messages[i].receive_count + 1);
            let m = &mut q.messages[i];
            m.receive_count += 1;
            m.visible_at = now + visibility;
            m.receipt = Some(receipt.clone());
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
        if messages.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(messages.len()));
        }
        {
            let mut queues = lock(&self.queues);
            let q = queues
                .get_mut(queue_url)
                .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
            let now = Instant::now();
            for m in messages {
                q.messages.push(StoredMessage {
                    message_id: self.next_id("msg"),
                    body: m.body.clone(),
                    sent_ms: crate::time::now_ms(),
                    receive_count: 0,
                    visible_at: now,
                    receipt: None,
                });
            }
        }
        self.arrived.notify_waiters();
        Ok(Vec::new())
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        if let Some(m) = q
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt_handle))
        {
            m.visible_at = Instant::now() + Duration::from_secs(seconds as u64);
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
        for r in receipt_handles {
            self.delete(queue_url, r).await?;
        }
        Ok(Vec::new())
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue_url)
            .ok_or_else(|| QueueError::NoSuchQueue(queue_url.to_string()))?;
        q.messages.retain(|m| m.receipt.as_deref() != Some(receipt_handle));
        Ok(())
    }
}
