//! The ports every function is written against. Each has an AWS adapter and an in-memory one,
//! and one contract suite (in `tests/`) runs against both.

use async_trait::async_trait;
use futures::StreamExt;

use crate::domain::{Health, Webhook};
use crate::event_types::EventType;
use crate::messages::{EventId, Tenant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The item changed (or was deleted) since it was read; re-read and try again.
    #[error("conflicting concurrent write")]
    Conflict,
    #[error("already exists")]
    AlreadyExists,
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// One page of a listing; `next` is the cursor of the following page, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page from `limit + 1` items fetched (the extra one only says there is more): the
    /// first `limit`, and when there was more, the cursor of the last one kept.
    pub fn overfetched(mut items: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> String) -> Page<T> {
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(cursor).unwrap_or_default()
        });
        Page { items, next }
    }
}

/// Webhooks, owned by tenants. Every method is scoped by tenant, so one tenant's id never
/// reaches another tenant's data.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new webhook; `AlreadyExists` if its id is taken.
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError>;
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError>;
    /// The tenant's webhooks in creation order, `limit` at a time, after the cursor `after`.
    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError>;
    /// Replaces `old` with `new` if the stored webhook still has `old.version`: `Conflict` when
    /// it changed, `NotFound` when it is gone (a deleted webhook is never written back). The
    /// stored `health` is left as it is (the dispatcher may have changed it since `old` was
    /// read) unless `new.health` differs from `old.health`, as when a re-enable resets it.
    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError>;
    /// Writes the webhook's health if the stored health still has `old.rev` (compare and set,
    /// without touching `version`, so it never races a user's update): `Ok(false)` when it
    /// changed or the webhook is gone (a deleted webhook is never written back).
    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError>;
    /// `NotFound` if there was nothing to delete.
    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Ids of the tenant's active webhooks whose filters match `event`, found by key.
    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    #[default]
    Pending,
    Succeeded,
    Failed,
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "succeeded" => DeliveryStatus::Succeeded,
            "failed" => DeliveryStatus::Failed,
            "skipped" => DeliveryStatus::Skipped,
            _ => return None,
        })
    }
}

/// One try at delivering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first try; numbers keep counting across resends and redrives.
    pub attempt: u32,
    /// Milliseconds since the epoch.
    pub at: u64,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// What happened, in words (`Receiver answered HTTP 500 …`, `Timed out after 15 s …`).
    pub message: String,
    /// The first bytes of the response body (see `delivery::MAX_RESPONSE_BODY`).
    pub response_body: Option<String>,
}

/// The delivery of one event to one webhook, and its attempts. Serde is the durable store's
/// record format (see `Webhook`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Delivery {
    pub id: String,
    pub tenant: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event: String,
    pub status: DeliveryStatus,
    pub created_at: u64,
    pub updated_at: u64,
    pub attempts: Vec<Attempt>,
    /// Why the delivery was skipped or given up, when it was.
    pub note: Option<String>,
    /// Epoch seconds after which the record may be deleted (DynamoDB TTL).
    pub expires_at: u64,
    /// Which cycle of attempts is current: 0 for the first; a redrive from the dead-letter
    /// queue (or a resend) starts the next one with a full retry schedule.
    pub cycle: u32,
    /// How many attempts were made before the current cycle began.
    pub cycle_start: u32,
    /// When a pending delivery's next attempt is due (ms since the epoch).
    pub next_attempt_at: Option<u64>,
}

impl Delivery {
    /// Attempts made in the current cycle.
    pub fn attempts_in_cycle(&self) -> u32 {
        (self.attempts.len() as u32).saturating_sub(self.cycle_start)
    }

    /// True when no more attempts belong to this cycle: succeeded, failed or skipped.
    pub fn ended(&self) -> bool {
        self.status != DeliveryStatus::Pending
    }
}

/// The delivery log. A delivery's record is created by its first attempt (or by a skip), and
/// every POST that is made is appended to it, so the log never hides a request a receiver got.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Appends an attempt to `delivery` (only its identifying fields, `cycle` and `expires_at`
    /// are used), creating the record on the first attempt, and sets the status and the time
    /// of the next attempt. A succeeded delivery stays succeeded (a duplicate job that raced
    /// it still has its POST logged): `Ok(false)` then.
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Ends a pending delivery of `delivery.cycle` as `status` (failed or skipped) with the
    /// reason, creating its record if need be. `Ok(false)` when it had already ended or a newer
    /// cycle began.
    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Starts cycle `to` of the delivery `record` (as the caller just read it): pending again,
    /// with a full schedule of attempts counted from its attempts so far. Conditional on the
    /// stored record still having that cycle and that many attempts: `Ok(false)` when it moved
    /// on (or `to` is not newer).
    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError>;
    /// Read consistently: a write that was just made is seen.
    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Newest first, `limit` at a time, older than the cursor `before`.
    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError>;
}

/// An accepted event, stored once: the dedupe claim of its id, the source of its payload for
/// every delivery, resend and recovery, and what its deliveries' ids are derived from.
/// Immutable once claimed: a later copy of the same id gets this record back, so the first
/// accepted submission's timestamp and payload win. Serde is the durable store's record format:
/// a field added later needs `#[serde(default)]` to read rows written before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub tenant: Tenant,
    pub id: EventId,
    pub event: EventType,
    pub timestamp_ms: u64,
    /// The payload exactly as `JSON.stringify` writes it: rendered once, when accepted.
    pub payload: String,
    /// Epoch seconds after which the record may be deleted (DynamoDB TTL): the dedupe window.
    pub expires_at: u64,
}

/// What became of a claim on an event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the fan-out of this event (as stored: an earlier claim that lapsed
    /// may have fixed its timestamp and payload).
    Won(StoredEvent),
    /// Fanned out already: nothing to do.
    Duplicate(StoredEvent),
    /// Another worker is fanning it out now; its lease ends at this time (ms).
    Busy { until_ms: u64 },
}

/// An event as stored, with what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub event: StoredEvent,
    /// True once every job of the fan-out was enqueued.
    pub fanned: bool,
    /// The webhooks the event was fanned out to (the first `MAX_RECORDED_FAN_OUT`); their
    /// delivery ids follow from `retry::delivery_id`.
    pub webhooks: Vec<String>,
    /// How many webhooks it was fanned out to (more than `webhooks.len()` past the cap).
    pub fan_out: usize,
}

/// The webhook ids an event record keeps: enough for any real fan-out, and bounded so that the
/// record stays under DynamoDB's 400 KB item limit with a 128 KiB payload (1,000 ids of 29
/// bytes are 29 KB).
pub const MAX_RECORDED_FAN_OUT: usize = 1000;

/// One line of an event listing (the payload is left out: a page of 100 events of 128 KiB
/// each would be over Lambda's 6 MB response limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: EventId,
    pub event: EventType,
    pub timestamp_ms: u64,
    pub fanned: bool,
}

/// A position in a tenant's event listing: events are ordered by (timestamp, id), newest
/// first. Written as 15 digits of milliseconds then the id in unpadded base64url, so a cursor
/// is URL-safe whatever the producer's id contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub timestamp_ms: u64,
    pub id: EventId,
}

impl EventCursor {
    /// The cursor that continues a listing after `e`.
    pub fn after(e: &EventSummary) -> String {
        EventCursor {
            timestamp_ms: e.timestamp_ms,
            id: e.id.clone(),
        }
        .encode()
    }

    pub fn encode(&self) -> String {
        use base64::Engine;
        format!(
            "{:015}{}",
            self.timestamp_ms,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.id.as_str())
        )
    }

    pub fn parse(s: &str) -> Option<EventCursor> {
        use base64::Engine;
        // An id is at most 128 characters of at most 4 UTF-8 bytes: 683 base64 characters.
        if s.len() <= 15 || s.len() > 15 + 683 {
            return None;
        }
        let (ts, id) = s.split_at(15);
        if !ts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).ok()?;
        Some(EventCursor {
            timestamp_ms: ts.parse().ok()?,
            id: EventId::parse(std::str::from_utf8(&id).ok()?)?,
        })
    }
}

/// Which of a tenant's events a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Only events at or after this time (ms).
    pub since_ms: u64,
    pub event: Option<EventType>,
}

/// Where events are stored and claimed. The claim is a conditional write, so of two copies of
/// one event id racing in one batch or in two functions, exactly one fans out.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Claims the event's id for `owner` until `now_ms + lease_ms`: stores the event if it is
    /// new, or takes over a claim whose lease ran out (its owner failed or gave it back).
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError>;
    /// Marks the event fanned out to `webhooks` (the first `MAX_RECORDED_FAN_OUT` are kept,
    /// and their number); a no-op when `owner` no longer holds the claim.
    async fn complete(&self, tenant: &Tenant, id: &EventId, owner: &str, webhooks: &[String])
    -> Result<(), StoreError>;
    /// Gives the claim back at once (the fan-out failed), so that the retry need not wait for
    /// the lease; a no-op when `owner` no longer holds it.
    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError>;
    /// The stored event and its fan-out. `consistent: false` is a cheaper read that may miss
    /// a claim made within the last second.
    async fn get(&self, tenant: &Tenant, id: &EventId, consistent: bool) -> Result<Option<EventRecord>, StoreError>;
    /// The tenant's events matching `query`, newest first, `limit` at most, older than the
    /// cursor `before`. A page may hold fewer than `limit` events and still have a `next`
    /// (a type filter examines a bounded number of events per call). Eventually consistent:
    /// an event claimed within the last second may be missing.
    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError>;
}

/// A message to send; `id` names it within one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    pub id: String,
    pub body: String,
    /// Shown to operators on dead-lettered messages (an SQS message attribute).
    pub reason: Option<String>,
    /// Seconds before the message can be received (SQS's per-message `DelaySeconds`,
    /// 0-`MAX_DELAY_S`). A delayed message is not in flight, so it does not count against the
    /// queue's in-flight limit, which is why the dispatcher parks long waits this way.
    pub delay_s: u32,
}

impl OutgoingMessage {
    /// What SQS counts against its size limits: the body and the attribute's name, type and
    /// value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .reason
                .as_ref()
                .map_or(0, |r| REASON_ATTRIBUTE.len() + "String".len() + r.len())
    }
}

/// The message attribute that carries a dead-lettering reason.
pub const REASON_ATTRIBUTE: &str = "ErrorReason";

/// A received message, with the attributes the handlers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// 1 on the first receive.
    pub receive_count: u32,
    pub sent_timestamp_ms: u64,
}

/// SQS accepts at most this many entries per batch call.
pub const MAX_BATCH: usize = 10;
/// SQS's largest message, and the largest total of one `SendMessageBatch` (1 MiB each).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// SQS's longest per-message delay (`DelaySeconds`): 15 minutes.
pub const MAX_DELAY_S: u32 = 900;
/// SQS's limit of messages in flight (received and neither deleted nor visible again) in one
/// standard queue: about 120,000. Past it, a long-polling receive returns no message (and a
/// short poll an `OverLimit` error) for every consumer of the queue. The in-process queues
/// stop receiving at it too (`set_in_flight_limit` lowers it for tests).
pub const MAX_IN_FLIGHT: usize = 120_000;
/// SQS refuses a visibility timeout that would end more than 12 h after the message was
/// received, counted from the receive, not from the call.
pub const MAX_VISIBILITY_S: u64 = 12 * 3600;

/// SQS's 12 h rule for `ChangeMessageVisibility` on a message received `held_s` seconds ago.
pub fn check_visibility(held_s: u64, seconds: u32) -> Result<(), QueueError> {
    let seconds = u64::from(seconds);
    if seconds > MAX_VISIBILITY_S || held_s + seconds > MAX_VISIBILITY_S {
        return Err(QueueError::VisibilityTooLong(seconds));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("batch of {0} entries is over the SQS limit of 10")]
    BatchTooLarge(usize),
    #[error("batch of {0} bytes is over the SQS limit of {MAX_BATCH_BYTES}")]
    BatchBytesTooLarge(usize),
    #[error("message of {0} bytes is over the SQS limit of {MAX_MESSAGE_BYTES}")]
    MessageTooLarge(usize),
    #[error("delay of {0} s is over the SQS limit of {MAX_DELAY_S} s")]
    DelayTooLong(u32),
    #[error("visibility timeout of {0} s is beyond 12 h after the receive")]
    VisibilityTooLong(u64),
    #[error("receipt handle is not valid for a message in flight")]
    InvalidReceipt,
    #[error("no such queue: {0}")]
    NoSuchQueue(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

/// Checks what SQS checks of a `SendMessageBatch` before the call: entries, each message's
/// size and delay, and the batch's total. Both adapters call it, so the emulator's laxity cannot hide a
/// batch AWS would refuse.
pub fn check_batch(messages: &[OutgoingMessage]) -> Result<(), QueueError> {
    if messages.len() > MAX_BATCH {
        return Err(QueueError::BatchTooLarge(messages.len()));
    }
    if let Some(big) = messages
        .iter()
        .map(OutgoingMessage::size)
        .find(|s| *s > MAX_MESSAGE_BYTES)
    {
        return Err(QueueError::MessageTooLarge(big));
    }
    if let Some(m) = messages.iter().find(|m| m.delay_s > MAX_DELAY_S) {
        return Err(QueueError::DelayTooLong(m.delay_s));
    }
    let total: usize = messages.iter().map(OutgoingMessage::size).sum();
    if total > MAX_BATCH_BYTES {
        return Err(QueueError::BatchBytesTooLarge(total));
    }
    Ok(())
}

/// A queue with SQS semantics. Lambda's event source mapping does the receiving in AWS; the
/// local runner and the tests use `receive` and `delete` to do the same.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends one batch (see `check_batch` for its limits); returns the ids of entries that
    /// failed.
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError>;
    /// Hides a received message for `seconds` from now; `VisibilityTooLong` past 12 h after
    /// its receive, `InvalidReceipt` when the handle is not one of a message in flight.
    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError>;
    async fn receive(
        &self,
        queue_url: &str,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<QueueMessage>, QueueError>;
    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError>;
    /// Deletes up to `MAX_BATCH` messages in one call (what the event source mapping does with
    /// a handled batch); returns the receipt handles that failed.
    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError>;
}

/// A batch call's outcome: the ids of the entries that failed, or the call's error.
type BatchResult = Result<Vec<String>, QueueError>;

/// Batch calls in flight at once in `send_all`.
const SEND_CONCURRENCY: usize = 8;

/// Splits messages into batches SQS accepts: at most `MAX_BATCH` entries and `MAX_BATCH_BYTES`
/// in all, in order. A message over `MAX_MESSAGE_BYTES` is returned apart: no batch can carry it.
pub fn pack<'a>(messages: &[&'a OutgoingMessage]) -> (Vec<Vec<&'a OutgoingMessage>>, Vec<&'a OutgoingMessage>) {
    let mut batches: Vec<Vec<&OutgoingMessage>> = Vec::new();
    let mut too_large = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let size = m.size();
        if size > MAX_MESSAGE_BYTES {
            too_large.push(*m);
            continue;
        }
        match batches.last_mut() {
            Some(b) if b.len() < MAX_BATCH && bytes + size <= MAX_BATCH_BYTES => {
                b.push(m);
                bytes += size;
            }
            _ => {
                batches.push(vec![m]);
                bytes = size;
            }
        }
    }
    (batches, too_large)
}

/// Sends any number of messages in batches packed by count and bytes, retrying failed entries
/// up to three times; returns the ids that still failed (a message too large for SQS among
/// them). A failed batch call costs only its own entries, never its neighbours'.
pub async fn send_all(
    queue: &dyn Queue,
    queue_url: &str,
    messages: &[OutgoingMessage],
) -> Result<Vec<String>, QueueError> {
    let mut pending: Vec<&OutgoingMessage> = messages.iter().collect();
    let mut refused: Vec<String> = Vec::new();
    for round in 0..4 {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
        }
        let (batches, too_large) = pack(&pending);
        for m in too_large {
            tracing::error!(bytes = m.size(), "message over the SQS size limit; not sent");
            refused.push(m.id.clone());
        }
        // Batches go out concurrently: a 1,000-webhook fan-out is 100 calls. Owned batches
        // keep the futures `Send` for every caller's runtime.
        let batches: Vec<Vec<OutgoingMessage>> =
            batches.into_iter().map(|b| b.into_iter().cloned().collect()).collect();
        let results: Vec<(Vec<String>, BatchResult)> = futures::stream::iter(batches)
            .map(|batch| async move {
                let ids = batch.iter().map(|m| m.id.clone()).collect();
                (ids, queue.send_batch(queue_url, &batch).await)
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut failed_ids = std::collections::HashSet::new();
        for (ids, result) in results {
            match result {
                Ok(failed) => failed_ids.extend(failed),
                Err(e @ QueueError::NoSuchQueue(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "batch send failed; retrying its entries");
                    failed_ids.extend(ids);
                }
            }
        }
        pending.retain(|m| failed_ids.contains(&m.id));
    }
    refused.extend(pending.into_iter().map(|m| m.id.clone()));
    Ok(refused)
}
