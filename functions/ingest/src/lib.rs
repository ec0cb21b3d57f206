//! The ingest function: events in, one delivery job per subscribed webhook out, and one marker
//! per event once all its jobs are enqueued, so the same event id is fanned out once. It writes
//! no delivery records: the dispatcher creates each with its first attempt. `handle` is the
//! whole function; Lambda and the local runner both call it.

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{self, StreamExt};
use webhooks::messages::{DeliveryJob, Event, decode_event};
use webhooks::ports::{DeliveryLog, OutgoingMessage, Queue, WebhookStore, send_all};
use webhooks::{retry, time};

#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn DeliveryLog>,
    pub queue: Arc<dyn Queue>,
    pub delivery_queue_url: String,
    /// Undecodable events go here at once, with the reason, rather than being retried.
    pub dead_letter_url: String,
    /// Event markers expire (DynamoDB TTL) after this many days: the dedupe window.
    pub retention_days: u64,
}

/// SQS's attribute: milliseconds since the epoch when the queue received the message.
pub fn sent_timestamp(m: &SqsMessage) -> u64 {
    m.attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(time::now_ms)
}

/// What became of one message before its jobs are sent.
enum Fanned {
    Jobs(Event, Vec<DeliveryJob>),
    /// Dead-lettered, or nothing to do.
    Done,
    Failed,
}

impl Ingest {
    /// Handles a batch: each message decoded and fanned out on its own, concurrently; then the
    /// jobs of the whole batch go out together, ten per `SendMessageBatch`. The messages that
    /// failed (or whose jobs could not all be sent) are reported, so only they come back.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let fanned: Vec<(String, Fanned)> = stream::iter(event.records)
            .map(|m| async move { (m.message_id.clone().unwrap_or_default(), self.fan_out_message(&m).await) })
            .buffer_unordered(10)
            .collect()
            .await;
        let mut failed: HashSet<String> = HashSet::new();
        let mut messages = Vec::new();
        let mut owner: Vec<String> = Vec::new();
        let mut events: Vec<(String, Event)> = Vec::new();
        for (message_id, result) in fanned {
            match result {
                Fanned::Jobs(event, jobs) => {
                    events.push((message_id.clone(), event));
                    for job in jobs {
                        messages.push(OutgoingMessage {
                            id: owner.len().to_string(),
                            body: job.encode(),
                            reason: None,
                        });
                        owner.push(message_id.clone());
                    }
                }
                Fanned::Done => {}
                Fanned::Failed => {
                    failed.insert(message_id);
                }
            }
        }
        match send_all(self.queue.as_ref(), &self.delivery_queue_url, &messages).await {
            Ok(unsent) => {
                for id in unsent {
                    if let Some(m) = id.parse::<usize>().ok().and_then(|i| owner.get(i)) {
                        failed.insert(m.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not enqueue delivery jobs; the events will be retried");
                failed.extend(owner);
            }
        }
        // Only now, with every job of the event enqueued, is the event marked done.
        let expires_at = time::now_ms() / 1000 + self.retention_days * 86_400;
        let done: Vec<&(String, Event)> = events.iter().filter(|(m, _)| !failed.contains(m)).collect();
        for (message_id, event) in done {
            if let Err(e) = self.log.mark_event(&event.tenant, &event.id, expires_at).await {
                tracing::warn!(event_id = %event.id, error = %e, "could not mark the event fanned out");
                failed.insert(message_id.clone());
            }
        }
        let mut response = SqsBatchResponse::default();
        for id in failed {
            tracing::warn!(message_id = %id, "event not fanned out completely; it will be retried");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        response
    }

    async fn fan_out_message(&self, m: &SqsMessage) -> Fanned {
        let message_id = m.message_id.as_deref().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or_default();
        let event = match decode_event(body, message_id, sent_timestamp(m)) {
            Ok(e) => e,
            Err(reason) => {
                return if self.dead_letter(message_id, body, &reason.to_string()).await {
                    Fanned::Done
                } else {
                    Fanned::Failed
                };
            }
        };
        match self.log.event_seen(&event.tenant, &event.id).await {
            Ok(true) => {
                tracing::info!(tenant = %event.tenant, event_id = %event.id, "duplicate event ignored");
                return Fanned::Done;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant = %event.tenant, event_id = %event.id, error = %e, "could not check for duplicates");
                return Fanned::Failed;
            }
        }
        match self.store.subscribers(&event.tenant, event.event).await {
            Ok(ids) => {
                tracing::info!(tenant = %event.tenant, event_id = %event.id, event = %event.event, deliveries = ids.len(), "event fanned out");
                let jobs = jobs(&event, &ids);
                Fanned::Jobs(event, jobs)
            }
            Err(e) => {
                tracing::warn!(tenant = %event.tenant, event_id = %event.id, error = %e, "could not find subscribers");
                Fanned::Failed
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
        // Not dead-lettered: leave it to SQS, whose redrive policy will move it after retries.
        matches!(send_all(self.queue.as_ref(), &self.dead_letter_url, &[message]).await, Ok(failed) if failed.is_empty())
    }
}

/// One job per subscribed webhook, each with the delivery id that stays the same however often
/// the event is ingested.
pub fn jobs(event: &Event, webhook_ids: &[String]) -> Vec<DeliveryJob> {
    webhook_ids
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
        .collect()
}
