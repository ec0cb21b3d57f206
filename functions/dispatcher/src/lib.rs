//! The dispatcher function: one signed POST per delivery job, with retries through SQS.
//!
//! A failed attempt sets the job's visibility timeout to the next backoff delay and reports
//! the job as a batch item failure, so SQS hands it back when the delay is over. After the last
//! attempt the delivery is marked failed and the job is released at once; its next receive is
//! over the queue's `maxReceiveCount`, which moves it to the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{self, StreamExt};
use webhooks::delivery::Deliverer;
use webhooks::messages::DeliveryJob;
use webhooks::ports::{Attempt, Delivery, DeliveryLog, DeliveryStatus, Queue, WebhookStore};
use webhooks::signing::Envelope;
use webhooks::{retry, time};

/// Jobs of one batch are delivered concurrently, at most this many at once.
const CONCURRENCY: usize = 10;

#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn DeliveryLog>,
    pub queue: Arc<dyn Queue>,
    pub deliverer: Deliverer,
    pub delivery_queue_url: String,
    /// Delays between attempts (`RETRY_SCHEDULE_SECONDS`): N delays, N + 1 attempts.
    pub schedule: Vec<u64>,
    pub timeout: Duration,
    /// Delivery records expire (DynamoDB TTL) this many days after they are created.
    pub retention_days: u64,
}

/// What became of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    Delivered,
    /// Deleted or inactive webhook, or a job whose delivery had already ended.
    Skipped,
    /// To be retried after the given delay.
    RetryIn(u64),
    /// The last attempt failed; the job goes to the dead-letter queue.
    GaveUp,
    /// Could not be handled now (storage error, undecodable job); SQS will redeliver it.
    Error,
}

impl JobResult {
    fn done(self) -> bool {
        matches!(self, JobResult::Delivered | JobResult::Skipped)
    }
}

fn receive_count(m: &SqsMessage) -> u32 {
    m.attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

impl Dispatcher {
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let results = stream::iter(event.records)
            .map(|m| async move { (m.message_id.clone().unwrap_or_default(), self.handle_message(&m).await) })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut response = SqsBatchResponse::default();
        for (id, result) in results {
            if !result.done() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub async fn handle_message(&self, m: &SqsMessage) -> JobResult {
        let receipt = m.receipt_handle.as_deref().unwrap_or_default();
        let job = match DeliveryJob::decode(m.body.as_deref().unwrap_or_default()) {
            Ok(job) => job,
            Err(e) => {
                // Only ingest writes jobs, so this is a bug or tampering; let the redrive
                // policy move it to the DLQ where an operator will see it.
                tracing::error!(message_id = ?m.message_id, error = %e, "undecodable delivery job");
                return JobResult::Error;
            }
        };
        let attempt_no = receive_count(m);
        let result = self.deliver(&job, attempt_no).await;
        let hide_for = match result {
            JobResult::RetryIn(delay) => Some(delay),
            JobResult::GaveUp => Some(0),
            _ => None,
        };
        if let Some(seconds) = hide_for
            && let Err(e) = self
                .queue
                .change_visibility(&self.delivery_queue_url, receipt, seconds as u32)
                .await
        {
            // The job still comes back, after the queue's default visibility timeout.
            tracing::warn!(delivery_id = %job.delivery_id, error = %e, "could not set the retry delay");
        }
        result
    }

    async fn deliver(&self, job: &DeliveryJob, attempt_no: u32) -> JobResult {
        let now = time::now_ms();
        let delivery = Delivery {
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
            expires_at: now / 1000 + self.retention_days * 86_400,
        };
        // The webhook is read again for every attempt: deleted or paused webhooks get nothing,
        // and a rotated secret or a new URL applies from the next attempt on.
        let webhook = match self.store.get(&job.tenant, &job.webhook_id).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(delivery_id = %job.delivery_id, error = %e, "could not load the webhook");
                return JobResult::Error;
            }
        };
        let webhook = match webhook {
            Some(w) if w.active => w,
            other => {
                let note = if other.is_some() {
                    "webhook is inactive"
                } else {
                    "webhook was deleted"
                };
                tracing::info!(delivery_id = %job.delivery_id, webhook_id = %job.webhook_id, note, "delivery skipped");
                return match self.log.skip(&delivery, note, now).await {
                    Ok(_) => JobResult::Skipped,
                    Err(_) => JobResult::Error,
                };
            }
        };
        let envelope = Envelope {
            id: &job.delivery_id,
            event: &job.event,
            timestamp_ms: job.timestamp_ms,
            payload: &job.payload,
        };
        let request = envelope.sign(webhook.secret.as_deref(), now / 1000);
        let report = self.deliverer.send(&webhook.url, &request, self.timeout).await;
        let next_delay = if report.success() {
            None
        } else {
            retry::next_delay(&self.schedule, attempt_no, report.retry_after_s)
        };
        let (status, result) = match (report.success(), next_delay) {
            (true, _) => (DeliveryStatus::Succeeded, JobResult::Delivered),
            (false, Some(delay)) => (DeliveryStatus::Pending, JobResult::RetryIn(delay)),
            (false, None) => (DeliveryStatus::Failed, JobResult::GaveUp),
        };
        let attempt = Attempt {
            attempt: attempt_no,
            at: now,
            status_code: report.status_code,
            duration_ms: report.duration_ms,
            message: report.message.clone(),
            response_body: report.response_body.clone(),
        };
        match self
            .log
            .record_attempt(&delivery, &attempt, status, time::now_ms())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // The delivery had already ended: this job was a duplicate.
                tracing::info!(delivery_id = %job.delivery_id, "delivery already ended; duplicate job dropped");
                return JobResult::Skipped;
            }
            Err(e) => {
                // The POST happened; losing its record is better than sending it twice now.
                tracing::error!(delivery_id = %job.delivery_id, error = %e, "could not record the attempt");
            }
        }
        tracing::info!(
            delivery_id = %job.delivery_id,
            webhook_id = %job.webhook_id,
            attempt = attempt_no,
            outcome = ?report.outcome,
            status = ?report.status_code,
            duration_ms = report.duration_ms,
            "delivery attempt"
        );
        result
    }
}
