//! The ingest function: events in, one delivery job per subscribed webhook out. Each event is
//! first claimed (stored once, by a conditional write on its id), so of two copies of one event
//! id, in one batch or in two concurrent invocations, exactly one fans out; the claim is marked
//! complete only when every job of the event is enqueued, and given back at once when that
//! fails, so the retry fans out the stored event again with the same delivery ids. `handle`
//! is the whole function; Lambda and the local runner both call it.

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use tracing::Instrument;
use webhooks::batch;
use webhooks::messages::{DeliveryJob, JobBody, decode_event};
use webhooks::metrics::{Metrics, Tally};
use webhooks::ports::{Claim, EventStore, OutgoingMessage, Queue, StoredEvent, WebhookStore, send_all};
use webhooks::{ids, retry, signing, time};

/// How long a claim protects a fan-out in progress: longer than the ingest function's 60 s
/// timeout, so a live owner never loses it; a crashed owner's claim lapses after this.
pub const CLAIM_LEASE_MS: u64 = 90_000;

/// Messages of one batch handled at once.
const CONCURRENCY: usize = 10;

#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<dyn WebhookStore>,
    pub events: Arc<dyn EventStore>,
    pub queue: Arc<dyn Queue>,
    /// The events queue itself: a copy whose event is being fanned out elsewhere is hidden
    /// there until that claim's lease ends.
    pub events_queue_url: String,
    pub delivery_queue_url: String,
    /// Undecodable events go here at once, with the reason, rather than being retried.
    pub dead_letter_url: String,
    /// Stored events expire (DynamoDB TTL) after this many days: the dedupe window.
    pub retention_days: u64,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Metrics,
}

/// The metrics ingest counts per invocation (`metrics::NAMESPACE`).
pub mod metric {
    /// Events fanned out completely (every job enqueued), even to no webhook.
    pub const FANNED_OUT: &str = "EventsFannedOut";
    /// Delivery jobs enqueued by the events fanned out.
    pub const ENQUEUED: &str = "DeliveriesEnqueued";
    /// Copies of events already fanned out, dropped.
    pub const DUPLICATES: &str = "EventsDuplicate";
    /// Events left to SQS to retry (or dead-lettered as undecodable).
    pub const FAILED: &str = "EventsFailed";
}

/// What became of one message before its jobs are sent.
#[derive(Clone)]
enum Fanned {
    /// Claimed by this invocation; these jobs remain to be sent.
    Jobs(StoredEvent, Vec<DeliveryJob>),
    /// Fanned out already: dropped.
    Duplicate,
    /// Undecodable: in the events DLQ with the reason.
    DeadLettered,
    Failed,
}

impl Ingest {
    /// Handles a batch: each message decoded, claimed and fanned out on its own, concurrently;
    /// then the jobs of the whole batch go out together, packed by count and bytes. The
    /// messages that failed (or whose jobs could not all be sent) are reported, so only they
    /// come back.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // One owner per invocation: two copies of an event in this batch cannot both win.
        let owner = ids::new_id("own");
        let owner = owner.as_str();
        let fanned = batch::each_message(event.records, CONCURRENCY, Fanned::Failed, |m| async move {
            self.fan_out_message(&m, owner).await
        })
        .await;
        let mut failed: HashSet<String> = HashSet::new();
        let mut messages = Vec::new();
        let mut owner_of: Vec<String> = Vec::new();
        let mut claimed: Vec<(String, StoredEvent, Vec<String>)> = Vec::new();
        let (mut duplicates, mut dead_lettered) = (0u64, 0u64);
        for (message_id, result) in fanned {
            match result {
                Fanned::Jobs(event, jobs) => {
                    let webhooks = jobs.iter().map(|j| j.webhook_id.clone()).collect();
                    claimed.push((message_id.clone(), event, webhooks));
                    for job in jobs {
                        messages.push(OutgoingMessage {
                            id: owner_of.len().to_string(),
                            body: job.encode(),
                            reason: None,
                            delay_s: 0,
                        });
                        owner_of.push(message_id.clone());
                    }
                }
                Fanned::Duplicate => duplicates += 1,
                Fanned::DeadLettered => dead_lettered += 1,
                Fanned::Failed => {
                    failed.insert(message_id);
                }
            }
        }
        match send_all(self.queue.as_ref(), &self.delivery_queue_url, &messages).await {
            Ok(unsent) => {
                for id in unsent {
                    if let Some(m) = id.parse::<usize>().ok().and_then(|i| owner_of.get(i)) {
                        failed.insert(m.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not enqueue delivery jobs; the events will be retried");
                failed.extend(owner_of.iter().cloned());
            }
        }
        for (message_id, event, webhooks) in &claimed {
            let span = tracing::info_span!("event", tenant = %event.tenant, event_id = %event.id);
            if failed.contains(message_id) {
                // Some job did not go out: give the claim back so the retry need not wait for
                // the lease. Jobs already sent are sent again then, with the same delivery ids,
                // and the dispatcher does not POST a delivery twice once it has ended.
                if let Err(e) = self
                    .events
                    .release(&event.tenant, &event.id, owner)
                    .instrument(span)
                    .await
                {
                    tracing::warn!(error = %e, "could not release the claim; the retry waits for its lease");
                }
                continue;
            }
            if let Err(e) = self
                .events
                .complete(&event.tenant, &event.id, owner, webhooks)
                .instrument(span)
                .await
            {
                tracing::warn!(error = %e, "could not mark the event fanned out; it will be retried");
                failed.insert(message_id.clone());
            }
        }
        for id in &failed {
            tracing::warn!(message_id = %id, "event not fanned out completely; it will be retried");
        }
        let tally = Tally::default();
        let fanned_out: Vec<&String> = claimed
            .iter()
            .map(|(id, _, _)| id)
            .filter(|id| !failed.contains(*id))
            .collect();
        tally.add(metric::FANNED_OUT, fanned_out.len() as u64);
        let enqueued = owner_of.iter().filter(|id| fanned_out.contains(id)).count();
        tally.add(metric::ENQUEUED, enqueued as u64);
        tally.add(metric::DUPLICATES, duplicates);
        tally.add(metric::FAILED, failed.len() as u64 + dead_lettered);
        self.metrics.emit("ingest", &tally);
        batch::failures(failed)
    }

    async fn fan_out_message(&self, m: &SqsMessage, owner: &str) -> Fanned {
        let message_id = m.message_id.as_deref().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or_default();
        let (event, payload) = match decode_event(body, message_id, batch::sent_timestamp(m)) {
            Ok(decoded) => decoded,
            Err(reason) => {
                return if self.dead_letter(message_id, body, &reason.to_string()).await {
                    Fanned::DeadLettered
                } else {
                    Fanned::Failed
                };
            }
        };
        let now = time::now_ms();
        let candidate = StoredEvent {
            payload,
            tenant: event.tenant,
            id: event.id,
            event: event.event,
            timestamp_ms: event.timestamp_ms,
            expires_at: now / 1000 + self.retention_days * 86_400,
        };
        let span = tracing::info_span!("event", tenant = %candidate.tenant, event_id = %candidate.id);
        let receipt = m.receipt_handle.as_deref().unwrap_or_default();
        self.claim_and_fan_out(candidate, owner, now, receipt)
            .instrument(span)
            .await
    }

    async fn claim_and_fan_out(&self, candidate: StoredEvent, owner: &str, now: u64, receipt: &str) -> Fanned {
        let stored = match self.events.claim(&candidate, owner, now, CLAIM_LEASE_MS).await {
            Ok(Claim::Won(stored)) => stored,
            Ok(Claim::Duplicate(_)) => {
                tracing::info!("duplicate event ignored: already fanned out");
                return Fanned::Duplicate;
            }
            Ok(Claim::Busy { until_ms }) => {
                // Back when the lease ends: then the event is fanned out (a duplicate to drop)
                // or its owner died (the claim lapses and this copy takes over). One receive,
                // not the queue's default visibility timeout per try.
                let wait_s = until_ms.saturating_sub(now).div_ceil(1000) + 1;
                tracing::info!(
                    retry_in_s = wait_s,
                    "event is being fanned out elsewhere; retrying when its claim ends"
                );
                if let Err(e) = self
                    .queue
                    .change_visibility(&self.events_queue_url, receipt, wait_s.min(43_000) as u32)
                    .await
                {
                    tracing::warn!(error = %e, "could not delay the copy; it returns after the visibility timeout");
                }
                return Fanned::Failed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the event");
                return Fanned::Failed;
            }
        };
        match self.store.subscribers(&stored.tenant, stored.event).await {
            Ok(ids) => {
                tracing::info!(event = %stored.event, deliveries = ids.len(), "event fanned out");
                let jobs = jobs(&stored, &ids);
                Fanned::Jobs(stored, jobs)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not find subscribers");
                if let Err(e) = self.events.release(&stored.tenant, &stored.id, owner).await {
                    tracing::warn!(error = %e, "could not release the claim");
                }
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
            delay_s: 0,
        };
        // Not dead-lettered: leave it to SQS, whose redrive policy will move it after retries.
        matches!(send_all(self.queue.as_ref(), &self.dead_letter_url, &[message]).await, Ok(failed) if failed.is_empty())
    }
}

/// One job per subscribed webhook. The delivery id depends on the tenant, the event id and the
/// webhook, and on the stored event's timestamp, which the first claim fixed: so every copy
/// and every retry of the event gives a webhook the same id. The body every webhook is sent
/// (and its signatures cover) is rendered here once for the event; the jobs share it.
pub fn jobs(event: &StoredEvent, webhook_ids: &[String]) -> Vec<DeliveryJob> {
    if webhook_ids.is_empty() {
        return Vec::new();
    }
    let body = Bytes::from(signing::delivery_body_rendered(
        event.event.as_str(),
        &time::iso_ms(event.timestamp_ms),
        &event.payload,
    ));
    webhook_ids
        .iter()
        .map(|webhook_id| DeliveryJob {
            delivery_id: retry::delivery_id(&event.tenant, event.id.as_str(), webhook_id, event.timestamp_ms),
            webhook_id: webhook_id.clone(),
            tenant: event.tenant.clone(),
            event_id: event.id.clone(),
            event: event.event.as_str().to_string(),
            timestamp_ms: event.timestamp_ms,
            cycle: 0,
            body: JobBody::Rendered(body.clone()),
            not_before_ms: None,
        })
        .collect()
}
