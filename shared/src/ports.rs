//! The ports every function is written against. Each has an AWS adapter and an in-memory one,
//! and one contract suite (in `tests/`) runs against both.

use async_trait::async_trait;
use futures::StreamExt;

use crate::domain::Webhook;
use crate::event_types::EventType;

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
    /// it changed, `NotFound` when it is gone (a deleted webhook is never written back).
    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError>;
    /// `NotFound` if there was nothing to delete.
    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Ids of the tenant's active webhooks whose filters match `event`, found by key.
    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
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
    /// 1 for the first try.
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

/// The delivery of one event to one webhook, and its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Why the delivery was skipped, when it was.
    pub note: Option<String>,
    /// Epoch seconds after which the record may be deleted (DynamoDB TTL).
    pub expires_at: u64,
}

/// The delivery log, and the record of which events were already fanned out. A delivery's
/// record is written once per attempt and no more: the first attempt creates it, later ones
/// append to it; fan-out writes one marker per event.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Appends an attempt to `delivery` (only its identifying fields are used) and sets the
    /// status, creating the record on the first attempt. A failed delivery takes attempts again
    /// (a job redriven from the dead-letter queue). `Ok(false)` when the delivery already
    /// succeeded or was skipped (a duplicate job): nothing changes.
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Marks a delivery skipped with the reason, creating its record if need be, unless it
    /// already succeeded.
    async fn skip(&self, delivery: &Delivery, note: &str, now: u64) -> Result<bool, StoreError>;
    /// True when the tenant's event was already fanned out completely (read cheaply:
    /// eventually consistent; a duplicate that arrives within the second is caught by the
    /// conditional delivery writes instead, at worst as one more POST).
    async fn event_seen(&self, tenant: &str, event_id: &str) -> Result<bool, StoreError>;
    /// Records that the tenant's event was fanned out, after every job was enqueued.
    async fn mark_event(&self, tenant: &str, event_id: &str, expires_at: u64) -> Result<(), StoreError>;
    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Newest first, `limit` at a time, older than the cursor `before`.
    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError>;
}

/// A message to send; `id` names it within one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub id: String,
    pub body: String,
    /// Shown to operators on dead-lettered messages (an SQS message attribute).
    pub reason: Option<String>,
}

impl OutgoingMessage {
    /// The bytes SQS counts against a batch's size limit: the body, and each message attribute's
    /// name, data type and value (the `ErrorReason` string attribute the SQS adapter writes).
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .reason
                .as_ref()
                .map_or(0, |r| "ErrorReason".len() + "String".len() + r.len())
    }
}

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

/// SQS refuses a batch whose messages add up to more than this (`OutgoingMessage::size`).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("batch of {0} entries is over the SQS limit of 10")]
    BatchTooLarge(usize),
    #[error("no such queue: {0}")]
    NoSuchQueue(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

/// A queue with SQS semantics. Lambda's event source mapping does the receiving in AWS; the
/// local runner and the tests use `receive` and `delete` to do the same.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends up to `MAX_BATCH` messages in one call; returns the ids of entries that failed.
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError>;
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

/// Splits messages, in order, into batches SQS accepts: at most `MAX_BATCH` entries and
/// `MAX_BATCH_BYTES` each (a message larger than that by itself goes alone, and SQS refuses it).
pub fn batches<'a>(messages: &[&'a OutgoingMessage]) -> Vec<Vec<&'a OutgoingMessage>> {
    let mut out: Vec<Vec<&OutgoingMessage>> = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let size = m.size();
        match out.last_mut() {
            Some(batch) if batch.len() < MAX_BATCH && bytes + size <= MAX_BATCH_BYTES => {
                batch.push(m);
                bytes += size;
            }
            _ => {
                out.push(vec![m]);
                bytes = size;
            }
        }
    }
    out
}

/// Sends any number of messages in batches SQS accepts (`batches`: 10 entries, 1 MiB: ten jobs
/// of a large payload take more than one call), retrying failed entries up to three times;
/// returns the ids that still failed.
pub async fn send_all(
    queue: &dyn Queue,
    queue_url: &str,
    messages: &[OutgoingMessage],
) -> Result<Vec<String>, QueueError> {
    let mut pending: Vec<&OutgoingMessage> = messages.iter().collect();
    for round in 0..4 {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
        }
        // Chunks go out concurrently: a 1,000-webhook fan-out is 100 calls.
        // Owned batches keep the futures `Send` for every caller's runtime.
        let owned: Vec<Vec<OutgoingMessage>> = batches(&pending)
            .into_iter()
            .map(|b| b.into_iter().cloned().collect())
            .collect();
        let results: Vec<(Vec<String>, BatchResult)> = futures::stream::iter(owned)
            .map(|batch| async move {
                let ids = batch.iter().map(|m| m.id.clone()).collect();
                (ids, queue.send_batch(queue_url, &batch).await)
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut failed_ids = Vec::new();
        for (ids, result) in results {
            match result {
                Ok(failed) => failed_ids.extend(failed),
                Err(QueueError::Backend(e)) => {
                    tracing::warn!(error = %e, "batch send failed; retrying");
                    failed_ids.extend(ids);
                }
                Err(e) => return Err(e),
            }
        }
        pending.retain(|m| failed_ids.contains(&m.id));
    }
    Ok(pending.into_iter().map(|m| m.id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize, body_len: usize, reason: Option<&str>) -> OutgoingMessage {
        OutgoingMessage {
            id: i.to_string(),
            body: "x".repeat(body_len),
            reason: reason.map(str::to_string),
        }
    }

    fn shape(messages: &[OutgoingMessage]) -> Vec<usize> {
        let refs: Vec<&OutgoingMessage> = messages.iter().collect();
        let out = batches(&refs);
        for b in &out {
            assert!(b.len() == 1 || b.iter().map(|m| m.size()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        let ids: Vec<&str> = out.iter().flatten().map(|m| m.id.as_str()).collect();
        let want: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, want, "every message once, in order");
        out.iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_keep_to_ten_entries_and_one_mib() {
        let small: Vec<_> = (0..25).map(|i| message(i, 100, None)).collect();
        assert_eq!(shape(&small), vec![10, 10, 5]);
        // Ten jobs of a 128 KiB payload: 1.25 MiB, over the limit as one batch.
        let large: Vec<_> = (0..10).map(|i| message(i, 128 * 1024 + 300, None)).collect();
        assert_eq!(shape(&large), vec![7, 3]);
        // Exactly 1 MiB of bodies fits; the attribute bytes count too.
        let exact: Vec<_> = (0..8).map(|i| message(i, MAX_BATCH_BYTES / 8, None)).collect();
        assert_eq!(shape(&exact), vec![8]);
        let with_reason: Vec<_> = (0..8).map(|i| message(i, MAX_BATCH_BYTES / 8, Some("why"))).collect();
        assert_eq!(shape(&with_reason), vec![7, 1]);
        let oversize = vec![
            message(0, 10, None),
            message(1, MAX_BATCH_BYTES + 1, None),
            message(2, 10, None),
        ];
        assert_eq!(shape(&oversize), vec![1, 1, 1]);
        assert!(shape(&[]).is_empty());
    }
}
