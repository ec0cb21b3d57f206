//! The ingest function: events in, one delivery record and one delivery job per subscribed
//! webhook out. `handle` is the whole function; Lambda and the local runner both call it.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{self, StreamExt};
use webhooks::messages::{DeliveryJob, Event, decode_event};
use webhooks::ports::{Delivery, DeliveryLog, DeliveryStatus, OutgoingMessage, Queue, WebhookStore, send_all};
use webhooks::{retry, time};

/// Delivery records are written this many at a time per event.
const WRITE_CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn DeliveryLog>,
    pub queue: Arc<dyn Queue>,
    pub delivery_queue_url: String,
    /// Undecodable events go here at once, with the reason, rather than being retried.
    pub dead_letter_url: String,
    pub retention_days: u64,
}

#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("{0}")]
    Store(#[from] webhooks::ports::StoreError),
    #[error("{0}")]
    Queue(#[from] webhooks::ports::QueueError),
    #[error("{0} delivery jobs could not be enqueued")]
    Unsent(usize),
}

/// SQS's attribute: milliseconds since the epoch when the queue received the message.
pub fn sent_timestamp(m: &SqsMessage) -> u64 {
    m.attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(time::now_ms)
}

impl Ingest {
    /// Handles a batch: each message on its own and concurrently; the failed ones are
    /// reported so that only they come back.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let results = stream::iter(event.records)
            .map(|m| async move {
                let id = m.message_id.clone().unwrap_or_default();
                (id, self.handle_message(&m).await)
            })
            .buffer_unordered(10)
            .collect::<Vec<_>>()
            .await;
        let mut response = SqsBatchResponse::default();
        for (id, ok) in results {
            if !ok {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// True when the message is done with (fanned out, a duplicate, or dead-lettered).
    async fn handle_message(&self, m: &SqsMessage) -> bool {
        let message_id = m.message_id.as_deref().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or_default();
        let event = match decode_event(body, message_id, sent_timestamp(m)) {
            Ok(e) => e,
            Err(reason) => {
                return self.dead_letter(message_id, body, &reason.to_string()).await;
            }
        };
        match self.fan_out(&event).await {
            Ok(n) => {
                tracing::info!(tenant = %event.tenant, event_id = %event.id, event = %event.event, deliveries = n, "event fanned out");
                true
            }
            Err(e) => {
                tracing::warn!(tenant = %event.tenant, event_id = %event.id, error = %e, "fan-out failed; the event will be retried");
                false
            }
        }
    }

    async fn dead_letter(&self, message_id: &str, body: &str, reason: &str) -> bool {
        tracing::error!(message_id, reason, "undeliverable event sent to the dead-letter queue");
        let message = OutgoingMessage {
            id: "0".into(),
            body: body.to_string(),
            reason: Some(reason.to_string()),
        };
        match send_all(self.queue.as_ref(), &self.dead_letter_url, &[message]).await {
            Ok(failed) if failed.is_empty() => true,
            // Not dead-lettered: leave it to SQS, whose redrive policy will move it after retries.
            Ok(_) | Err(_) => false,
        }
    }

    /// Returns the number of deliveries. Safe to repeat: records are created conditionally,
    /// delivery ids are derived from (tenant, event id, webhook id), and the event is marked
    /// done only after every job is enqueued.
    async fn fan_out(&self, event: &Event) -> Result<usize, IngestError> {
        if self.log.event_seen(&event.tenant, &event.id).await? {
            tracing::info!(tenant = %event.tenant, event_id = %event.id, "duplicate event ignored");
            return Ok(0);
        }
        let webhook_ids = self.store.subscribers(&event.tenant, event.event).await?;
        let now = time::now_ms();
        let expires_at = now / 1000 + self.retention_days * 86_400;
        let jobs: Vec<DeliveryJob> = webhook_ids
            .iter()
            .map(|webhook_id| DeliveryJob {
                delivery_id: retry::delivery_id(&event.tenant, &event.id, webhook_id, event.timestamp_ms),
                webhook_id: webhook_id.clone(),
                tenant: event.tenant.clone(),
                event_id: event.id.clone(),
                event: event.event.as_str().to_string(),
                timestamp_ms: event.timestamp_ms,
                payload: event.payload.clone(),
            })
            .collect();
        let records: Vec<Delivery> = jobs
            .iter()
            .map(|job| Delivery {
                id: job.delivery_id.clone(),
                tenant: job.tenant.clone(),
                webhook_id: job.webhook_id.clone(),
                event_id: job.event_id.clone(),
                event: job.event.clone(),
                status: DeliveryStatus::Pending,
                created_at: now,
                updated_at: now,
                attempts: Vec::new(),
                note: None,
                expires_at,
            })
            .collect();
        // Owned records and a cloned port keep the future `Send` for Lambda's and tokio's
        // multi-threaded runtimes.
        let created: Vec<Result<bool, _>> = stream::iter(records)
            .map(|record| {
                let log = self.log.clone();
                async move { log.create(&record).await }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for result in created {
            result?;
        }
        let messages: Vec<OutgoingMessage> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| OutgoingMessage {
                id: i.to_string(),
                body: job.encode(),
                reason: None,
            })
            .collect();
        let unsent = send_all(self.queue.as_ref(), &self.delivery_queue_url, &messages).await?;
        if !unsent.is_empty() {
            return Err(IngestError::Unsent(unsent.len()));
        }
        self.log.mark_event(&event.tenant, &event.id, expires_at).await?;
        Ok(jobs.len())
    }
}
