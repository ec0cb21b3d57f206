//! The dispatcher function: one signed POST per delivery job, with retries through SQS.
//!
//! Each job goes through the same small steps (`process`): load the target and the delivery's
//! record -> already ended, or not due yet? -> attempt (sign, send) -> record -> and then
//! `schedule` decides what SQS does with the job: delete it, hide it until the next attempt
//! (a wait of `PARK_FROM_S` or more is parked instead: sent again with a delay, so that it is
//! not in flight), or dead-letter it. Attempts are counted from the delivery record, never from SQS's receive
//! count, so a storage outage, a timeout or a crash costs no attempt, and no job ever makes more
//! attempts than the retry schedule allows, whatever the queue's `maxReceiveCount` is. After
//! the last attempt the dispatcher moves the job to the delivery DLQ itself and marks the
//! delivery failed; the queue's redrive policy is only a safety net for jobs that cannot be
//! handled at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bytes::Bytes;
use tracing::Instrument;
use webhooks::batch;
use webhooks::delivery::Deliverer;
use webhooks::domain::{Disabled, Webhook};
use webhooks::event_types::EventType;
use webhooks::health::{BreakerPolicy, Gate};
use webhooks::messages::{DeliveryJob, Event, EventId, JobBody, Tenant, encode_event};
use webhooks::metrics::{Metrics, Tally};
use webhooks::ports::{
    Attempt, Delivery, DeliveryLog, DeliveryStatus, EventStore, MAX_DELAY_S, MAX_VISIBILITY_S, OutgoingMessage, Queue,
    StoreError, WebhookStore, send_all,
};
use webhooks::recover::{self, PageOutcome, RecoverTask};
use webhooks::retry;
use webhooks::signing::{KeyCache, sign_rendered};
use webhooks::time::Clock;

/// Jobs of one batch are delivered concurrently, at most this many at once.
const CONCURRENCY: usize = 10;
/// Kept free before the invocation's deadline for recording an attempt and scheduling the job.
pub const RESERVE: Duration = Duration::from_secs(2);
/// An attempt is not started with less time than this left before the deadline.
pub const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// Margin under SQS's 12 h visibility rule for the time between the receive and the handler.
const VISIBILITY_MARGIN_S: u64 = 60;
/// Compare-and-set writes of an endpoint's health are tried this many times against racing
/// jobs of the same endpoint; then the change is dropped (logged), as the next one retries.
const HEALTH_TRIES: usize = 5;
/// A job deferred by an open breaker costs a receive each time it comes back, and SQS moves a
/// job to the DLQ after `maxReceiveCount` (100) receives: from this many on, a deferred job is
/// sent again as a fresh message (receive count 1) and the old one deleted.
pub const RECYCLE_AFTER_RECEIVES: u32 = 50;
/// Waits of this many seconds or more are parked rather than hidden: the job is sent again as
/// a new message delayed by up to 15 minutes (`DelaySeconds`) and the received one is deleted;
/// one not due when it comes back is parked again. SQS counts a hidden message as in flight,
/// and a standard queue holds about 120,000 in flight (`ports::MAX_IN_FLIGHT`), after which it
/// hands no message to anyone: hiding every retry and breaker deferral, one endpoint failing at
/// 1,000 jobs/s stopped the whole queue within 2 minutes. A delayed message is not in flight.
/// Shorter waits are still hidden (one `ChangeMessageVisibility`, no copy of the job), which
/// bounds what failures keep in flight to about 10 s of the failing jobs.
pub const PARK_FROM_S: u64 = 10;

#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn DeliveryLog>,
    /// Where a resend or recover job's payload is read from (those jobs carry none).
    pub events: Arc<dyn EventStore>,
    pub queue: Arc<dyn Queue>,
    pub deliverer: Deliverer,
    pub delivery_queue_url: String,
    /// Where a job goes after its last attempt (`DELIVERY_DLQ_URL`).
    pub dead_letter_url: String,
    /// Delays between attempts (`RETRY_SCHEDULE_SECONDS`): N delays, N + 1 attempts.
    pub schedule: Vec<u64>,
    pub timeout: Duration,
    /// Delivery records expire (DynamoDB TTL) this many days after they are created.
    pub retention_days: u64,
    /// Deliveries a recover continuation examines (`RECOVER_PAGE_SIZE`).
    pub recover_page: usize,
    /// The system clock in production; shared with the in-memory queue in the local runner.
    pub clock: Clock,
    /// The circuit breaker and auto-disable settings.
    pub breaker: BreakerPolicy,
    /// Where the `system.warning` of an auto-disabled webhook goes (`EVENTS_QUEUE_URL`), to be
    /// fanned out to the tenant's other webhooks like any event.
    pub events_queue_url: String,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Metrics,
    /// Waits of this many seconds or more are parked (`PARK_FROM_S`; the bench sets `u64::MAX`
    /// to show what hiding every wait did).
    pub park_from_s: u64,
    /// Each webhook's HMAC keys, derived once per container (per secret: a rotation derives
    /// the new ones at its next attempt). `KeyCache::default()`.
    pub keys: KeyCache,
}

/// The metrics the dispatcher counts per invocation (`metrics::NAMESPACE`).
pub mod metric {
    /// Deliveries that succeeded (a 2xx).
    pub const SUCCEEDED: &str = "DeliveriesSucceeded";
    /// Deliveries given up after their last attempt (to the DLQ).
    pub const FAILED: &str = "DeliveriesFailed";
    /// Attempts that failed (each POST that was not a 2xx, retried or not).
    pub const ATTEMPTS_FAILED: &str = "AttemptsFailed";
    /// Jobs not sent: the webhook is inactive or gone, or the delivery had already ended.
    pub const SKIPPED: &str = "DeliveriesSkipped";
    /// Jobs held back by an open breaker, without a POST.
    pub const DEFERRED: &str = "DeliveriesDeferred";
    /// Each POST's duration, in milliseconds.
    pub const LATENCY: &str = "AttemptLatency";
}

/// What became of one job, and so what SQS does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Delivered,
    /// Nothing to send: a deleted or inactive webhook, a delivery that had already ended, a
    /// stale job. Deleted from the queue.
    Skipped(&'static str),
    /// To be tried again after this many seconds.
    RetryIn(u64),
    /// Not due yet (the job came back early, e.g. capped by the 12 h rule): hidden again.
    NotYet(u64),
    /// The schedule is used up: to the dead-letter queue, the delivery marked failed.
    GaveUp {
        attempts: u32,
        reason: String,
    },
    /// Not attempted for lack of time before the deadline: back to the queue at once.
    Released,
    /// The endpoint's breaker is open: hidden until its next probe (this many seconds), not
    /// POSTed and not counted as an attempt.
    Deferred(u64),
    /// Could not be handled now (storage error): SQS hands it back after a short backoff,
    /// and no attempt was counted.
    Error(String),
}

impl Dispatcher {
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// Handles a batch. `deadline` is the invocation's (Lambda's `context.deadline`; the local
    /// runner's visibility timeout): no attempt runs past it.
    pub async fn handle(&self, event: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
        let received_at = Instant::now();
        let tally = Tally::default();
        for name in [
            metric::SUCCEEDED,
            metric::FAILED,
            metric::ATTEMPTS_FAILED,
            metric::SKIPPED,
            metric::DEFERRED,
        ] {
            tally.add(name, 0);
        }
        let tally = &tally;
        let results = batch::each_message(event.records, CONCURRENCY, false, |m| async move {
            self.handle_message(&m, received_at, deadline, tally).await
        })
        .await;
        self.metrics.emit("dispatcher", tally);
        batch::failures(results.into_iter().filter(|(_, done)| !done).map(|(id, _)| id))
    }

    /// One job, start to end; true when the job is done with (delete it from the queue).
    pub async fn handle_message(
        &self,
        m: &SqsMessage,
        received_at: Instant,
        deadline: Option<Instant>,
        tally: &Tally,
    ) -> bool {
        let receipt = m.receipt_handle.as_deref().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or_default();
        if let Some(task) = RecoverTask::decode(body) {
            return self.recover_page(&task).await;
        }
        let job = match DeliveryJob::decode(body) {
            Ok(job) => job,
            Err(e) => {
                // Only ingest writes jobs, so this is a bug or tampering: straight to the DLQ,
                // where an operator sees it with the reason.
                tracing::error!(error = %e, "undecodable delivery job");
                return self.dead_letter(body, &e.to_string()).await;
            }
        };
        if let Some(at) = job.not_before_ms {
            let now = self.clock.now_ms();
            if at > now + 1000 {
                // Parked for longer than SQS's 15-minute delay, and not due: parked again for
                // the rest, without reading the webhook or the record.
                let rest = (at - now).div_ceil(1000);
                return self.park(&job, receipt, rest, rest, received_at).await;
            }
        }
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %job.delivery_id,
            webhook_id = %job.webhook_id,
            attempt = tracing::field::Empty
        );
        async {
            let result = self.process(&job, deadline, tally).await;
            match &result {
                JobResult::Delivered => tally.add(metric::SUCCEEDED, 1),
                JobResult::GaveUp { .. } => tally.add(metric::FAILED, 1),
                JobResult::Skipped(_) => tally.add(metric::SKIPPED, 1),
                JobResult::Deferred(_) => tally.add(metric::DEFERRED, 1),
                _ => {}
            }
            self.schedule(&job, receipt, batch::receive_count(m), received_at, result)
                .await
        }
        .instrument(span)
        .await
    }

    /// One page of a recover, then the continuation for the next; true when both are queued.
    /// A failure leaves the message to come back after the queue's visibility timeout, and
    /// the page is run again from the same cursor.
    async fn recover_page(&self, task: &RecoverTask) -> bool {
        let span = tracing::info_span!("recover", recover_id = %task.id, webhook_id = %task.webhook_id);
        async {
            let queue = self.queue.as_ref();
            let outcome = recover::run_page(
                self.log.as_ref(),
                queue,
                &self.delivery_queue_url,
                task,
                self.recover_page,
            )
            .await;
            let result = match outcome {
                Ok(PageOutcome { next: Some(next), .. }) => {
                    recover::continue_with(queue, &self.delivery_queue_url, &next).await
                }
                Ok(_) => {
                    tracing::info!("recover complete");
                    Ok(())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "recover page failed; it will be retried");
            }
            result.is_ok()
        }
        .instrument(span)
        .await
    }

    /// Load -> ended? due? -> attempt -> record.
    pub async fn process(&self, job: &DeliveryJob, deadline: Option<Instant>, tally: &Tally) -> JobResult {
        let (webhook, record, body) = match self.load(job).await {
            Ok(loaded) => loaded,
            Err(e) => return JobResult::Error(e),
        };
        let delivery = match self.current_cycle(job, record).await {
            Ok(d) => d,
            Err(result) => return result,
        };
        let made = delivery.attempts_in_cycle();
        if made >= self.max_attempts() {
            // The last attempt was made but the job was not moved on (a crash, a failed
            // dead-letter send): finish that now, without another POST.
            let reason = delivery.attempts.last().map(|a| a.message.clone()).unwrap_or_default();
            return JobResult::GaveUp { attempts: made, reason };
        }
        let now = self.clock.now_ms();
        if let Some(at) = delivery.next_attempt_at
            && at > now + 1000
        {
            return JobResult::NotYet((at - now).div_ceil(1000));
        }
        let webhook = match webhook {
            Some(w) if w.active => w,
            other => {
                let (note, why) = match &other {
                    Some(Webhook { disabled: Some(d), .. }) => {
                        ("webhook was disabled", format!("webhook was disabled: {}", d.reason))
                    }
                    Some(_) => ("webhook is inactive", "webhook is inactive".to_string()),
                    None => ("webhook was deleted", "webhook was deleted".to_string()),
                };
                return match self.log.finish(&delivery, DeliveryStatus::Skipped, &why, now).await {
                    Ok(_) => {
                        tracing::info!(note, "delivery skipped");
                        JobResult::Skipped(note)
                    }
                    Err(e) => JobResult::Error(e.to_string()),
                };
            }
        };
        let Some(body) = body else {
            // A resend or recover job whose event's retention ran out: nothing left to send.
            let note = "the event is no longer stored (DELIVERY_RETENTION_DAYS)";
            return match self.log.finish(&delivery, DeliveryStatus::Skipped, note, now).await {
                Ok(_) => JobResult::Skipped(note),
                Err(e) => JobResult::Error(e.to_string()),
            };
        };
        let Some(timeout) = self.attempt_timeout(deadline) else {
            return JobResult::Released;
        };
        let webhook = match self.pass_breaker(webhook).await {
            Ok(w) => w,
            Err(result) => return result,
        };
        self.attempt(job, &delivery, &webhook, body, timeout, tally).await
    }

    /// The breaker's verdict: closed, or open with a probe due that this job claimed (one
    /// compare-and-set, so of the jobs that come back at the probe time exactly one POSTs):
    /// the webhook to attempt, with the health the outcome applies to. Open otherwise: deferred.
    async fn pass_breaker(&self, mut webhook: Webhook) -> Result<Webhook, JobResult> {
        for _ in 0..HEALTH_TRIES {
            let now = self.clock.now_ms();
            let claim = match webhook.health.gate(&self.breaker, now) {
                Gate::Closed => return Ok(webhook),
                Gate::Wait(until) => return Err(JobResult::Deferred(until.saturating_sub(now).div_ceil(1000).max(1))),
                Gate::Probe(claim) => claim,
            };
            match self
                .store
                .set_health(&webhook.tenant, &webhook.id, &webhook.health, &claim)
                .await
            {
                Ok(true) => {
                    tracing::info!(probe = claim.probes, "breaker open: this attempt is its probe");
                    webhook.health = claim;
                    return Ok(webhook);
                }
                Ok(false) => match self.store.get(&webhook.tenant, &webhook.id).await {
                    Ok(Some(fresh)) if fresh.active => webhook = fresh,
                    Ok(_) => return Err(JobResult::Error("the webhook changed while claiming a probe".into())),
                    Err(e) => return Err(JobResult::Error(e.to_string())),
                },
                Err(e) => return Err(JobResult::Error(e.to_string())),
            }
        }
        Err(JobResult::Error(
            "the endpoint's health kept changing while claiming a probe".into(),
        ))
    }

    /// Applies an attempt's outcome to the endpoint's health, written only when it changes
    /// (never for a success on a healthy endpoint); disables the webhook when it has failed
    /// without a success for `AUTO_DISABLE_AFTER_SECONDS`.
    async fn record_health(&self, webhook: &Webhook, success: bool, error: &str) {
        // A success on a healthy endpoint (most attempts) changes nothing: no copy, no write.
        if success && webhook.health.after_success(self.clock.now_ms()).is_none() {
            return;
        }
        let mut webhook = webhook.clone();
        for _ in 0..HEALTH_TRIES {
            let now = self.clock.now_ms();
            let next = if success {
                match webhook.health.after_success(now) {
                    Some(next) => next,
                    None => return,
                }
            } else {
                webhook.health.after_failure(&self.breaker, now, error)
            };
            match self
                .store
                .set_health(&webhook.tenant, &webhook.id, &webhook.health, &next)
                .await
            {
                Ok(true) => {
                    if webhook.health.is_open() && !next.is_open() {
                        tracing::info!("endpoint recovered: breaker closed");
                    } else if !webhook.health.is_open() && next.is_open() {
                        tracing::warn!(failures = next.consecutive_failures, "endpoint failing: breaker opened");
                    }
                    let due = next.due_for_disable(&self.breaker, now);
                    webhook.health = next;
                    if due {
                        self.disable(webhook).await;
                    }
                    return;
                }
                Ok(false) => match self.store.get(&webhook.tenant, &webhook.id).await {
                    Ok(Some(fresh)) => webhook = fresh,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not re-read the endpoint's health");
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the endpoint's health");
                    return;
                }
            }
        }
        tracing::warn!("the endpoint's health kept changing; this outcome was not recorded in it");
    }

    /// Sets the webhook inactive with the reason (its subscriptions go with it, so no new jobs
    /// are made for it; its pending jobs are skipped as they come back), then tells the tenant.
    async fn disable(&self, mut webhook: Webhook) {
        for _ in 0..HEALTH_TRIES {
            if !webhook.active {
                return;
            }
            let now = self.clock.now_ms();
            let h = &webhook.health;
            let since = h.failing_since.map(webhooks::time::iso_ms).unwrap_or_default();
            let reason = format!(
                "failing without a success since {since} ({} consecutive failed attempts; last: {})",
                h.consecutive_failures,
                h.last_error.as_deref().unwrap_or("unknown")
            );
            let disabled = Webhook {
                active: false,
                disabled: Some(Disabled { reason, at: now }),
                updated_at: now,
                version: webhook.version + 1,
                ..webhook.clone()
            };
            match self.store.update(&webhook, &disabled).await {
                Ok(()) => {
                    tracing::warn!(tenant = %webhook.tenant, "webhook disabled: failing for too long");
                    self.announce_disabled(&disabled).await;
                    return;
                }
                Err(StoreError::Conflict) => match self.store.get(&webhook.tenant, &webhook.id).await {
                    Ok(Some(fresh)) => webhook = fresh,
                    _ => return,
                },
                Err(e) => {
                    // The next failed probe tries again.
                    tracing::error!(error = %e, "could not disable the webhook");
                    return;
                }
            }
        }
    }

    /// A `system.warning` event for the tenant, through the events queue, so it reaches the
    /// tenant's other webhooks subscribed to it (this one is inactive now) and is logged like
    /// any event. Its id is fixed by the failing period, so a repeat is deduplicated.
    async fn announce_disabled(&self, w: &Webhook) {
        let (Some(d), Some(tenant), Some(event)) = (
            w.disabled.as_ref(),
            Tenant::parse(&w.tenant),
            EventType::parse("system.warning"),
        ) else {
            return;
        };
        let since = w.health.failing_since.unwrap_or(d.at);
        let Some(id) = EventId::parse(&format!("webhook-disabled-{}-{since}", w.id)) else {
            return;
        };
        let iso = |t: Option<u64>| t.map(webhooks::time::iso_ms);
        let payload = serde_json::json!({
            "type": "webhook.disabled",
            "message": "A webhook was disabled because its endpoint kept failing; fix the endpoint, then re-enable it with PUT {\"active\": true}",
            "webhookId": w.id,
            "reason": d.reason,
            "disabledAt": webhooks::time::iso_ms(d.at),
            "failingSince": iso(w.health.failing_since),
            "lastSuccessAt": iso(w.health.last_success_at),
            "consecutiveFailures": w.health.consecutive_failures,
        });
        let message = OutgoingMessage {
            id: "0".into(),
            body: encode_event(&Event {
                tenant,
                id,
                event,
                timestamp_ms: d.at,
                payload,
            }),
            reason: None,
            delay_s: 0,
        };
        match send_all(self.queue.as_ref(), &self.events_queue_url, &[message]).await {
            Ok(failed) if failed.is_empty() => tracing::info!("system.warning about the disabled webhook sent"),
            Ok(_) => tracing::error!("the events queue refused the system.warning about the disabled webhook"),
            Err(e) => tracing::error!(error = %e, "could not send the system.warning about the disabled webhook"),
        }
    }

    /// The webhook (as it is now: a new URL or secret, or a rotation, applies from the next
    /// attempt on), the delivery's record and the body to send, read together. The body is the
    /// job's (format 2, rendered by ingest); built around the job's payload (format 1); or
    /// built around the stored event's payload for a job that carries none.
    async fn load(&self, job: &DeliveryJob) -> Result<(Option<Webhook>, Option<Delivery>, Option<Bytes>), String> {
        let body = async {
            match &job.body {
                JobBody::Rendered(body) => Ok(Some(body.clone())),
                JobBody::Payload(payload) => Ok(Some(Bytes::from(job.render(payload.get())))),
                JobBody::Stored => self
                    .events
                    .get(&job.tenant, &job.event_id, false)
                    .await
                    .map(|r| r.map(|r| Bytes::from(job.render(&r.event.payload)))),
            }
        };
        let (webhook, record, body) = futures::join!(
            self.store.get(&job.tenant, &job.webhook_id),
            self.log.get(&job.webhook_id, &job.delivery_id),
            body
        );
        Ok((
            webhook.map_err(|e| e.to_string())?,
            record.map_err(|e| e.to_string())?,
            body.map_err(|e| e.to_string())?,
        ))
    }

    /// The delivery as this job should see it: a job of an older cycle is stale; a job of a
    /// newer cycle (a redrive or a resend) starts that cycle; an ended delivery stays ended.
    async fn current_cycle(&self, job: &DeliveryJob, record: Option<Delivery>) -> Result<Delivery, JobResult> {
        let now = self.clock.now_ms();
        let Some(record) = record else {
            return Ok(self.new_delivery(job, now));
        };
        if job.cycle < record.cycle {
            return Err(JobResult::Skipped("job of an earlier cycle"));
        }
        if job.cycle > record.cycle {
            return match self.log.reopen(&record, job.cycle, now).await {
                Ok(true) => {
                    tracing::info!(cycle = job.cycle, "delivery reopened for a new cycle of attempts");
                    Ok(Delivery {
                        cycle: job.cycle,
                        cycle_start: record.attempts.len() as u32,
                        status: DeliveryStatus::Pending,
                        next_attempt_at: None,
                        ..record
                    })
                }
                Ok(false) => Err(JobResult::Error("the delivery changed while reopening it".into())),
                Err(e) => Err(JobResult::Error(e.to_string())),
            };
        }
        if record.ended() {
            tracing::info!(
                status = record.status.as_str(),
                "delivery already ended; duplicate job dropped"
            );
            return Err(JobResult::Skipped("delivery already ended"));
        }
        Ok(record)
    }

    fn new_delivery(&self, job: &DeliveryJob, now: u64) -> Delivery {
        Delivery {
            id: job.delivery_id.clone(),
            tenant: job.tenant.to_string(),
            webhook_id: job.webhook_id.clone(),
            event_id: job.event_id.to_string(),
            event: job.event.clone(),
            status: DeliveryStatus::Pending,
            created_at: now,
            updated_at: now,
            attempts: Vec::new(),
            note: None,
            expires_at: now / 1000 + self.retention_days * 86_400,
            cycle: job.cycle,
            cycle_start: 0,
            next_attempt_at: None,
        }
    }

    /// The configured timeout, shortened so the attempt ends before the deadline with time to
    /// record it; `None` when too little time is left to start one.
    pub fn attempt_timeout(&self, deadline: Option<Instant>) -> Option<Duration> {
        let Some(deadline) = deadline else {
            return Some(self.timeout);
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(RESERVE);
        (left >= MIN_ATTEMPT).then(|| self.timeout.min(left))
    }

    /// Sign, send, record.
    async fn attempt(
        &self,
        job: &DeliveryJob,
        delivery: &Delivery,
        webhook: &Webhook,
        body: Bytes,
        timeout: Duration,
        tally: &Tally,
    ) -> JobResult {
        let started = self.clock.now_ms();
        let number = delivery.attempts.len() as u32 + 1;
        tracing::Span::current().record("attempt", number);
        // The secrets valid at this attempt, not at the event: a retry after a rotation is
        // signed with the new secret too, and one after the overlap with the new one only.
        let keys = self.keys.keys(&webhook.id, webhook.signing_secrets_iter(started));
        let request = sign_rendered(
            &job.delivery_id,
            &job.event,
            job.timestamp_ms,
            body,
            &keys,
            started / 1000,
        );
        let report = self.deliverer.send(&webhook.url, &request, timeout).await;
        tally.time(metric::LATENCY, report.duration_ms);
        if !report.success() {
            tally.add(metric::ATTEMPTS_FAILED, 1);
        }
        let in_cycle = delivery.attempts_in_cycle() + 1;
        let next_delay = if report.success() {
            None
        } else {
            retry::next_delay(&self.schedule, in_cycle, report.retry_after_s)
        };
        let now = self.clock.now_ms();
        let next_at = next_delay.map(|d| now + d * 1000);
        let status = if report.success() {
            DeliveryStatus::Succeeded
        } else {
            // Still pending after the last attempt until the job is in the DLQ (then failed).
            DeliveryStatus::Pending
        };
        let success = report.success();
        tracing::info!(
            outcome = ?report.outcome,
            status = ?report.status_code,
            duration_ms = report.duration_ms,
            "delivery attempt"
        );
        // The report's strings move into the attempt: nothing below needs a second copy.
        let attempt = Attempt {
            attempt: number,
            at: started,
            status_code: report.status_code,
            duration_ms: report.duration_ms,
            message: report.message,
            response_body: report.response_body,
        };
        match self.log.record_attempt(delivery, &attempt, status, next_at, now).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("delivery had already succeeded: a duplicate job raced this POST"),
            // The POST happened; its record is lost, but scheduling goes on as if it were
            // kept, rather than POSTing again now.
            Err(e) => tracing::error!(error = %e, "could not record the attempt"),
        }
        self.record_health(webhook, success, &attempt.message).await;
        match (success, next_delay) {
            (true, _) => JobResult::Delivered,
            (false, Some(delay)) => JobResult::RetryIn(delay),
            (false, None) => JobResult::GaveUp {
                attempts: in_cycle,
                reason: attempt.message,
            },
        }
    }

    /// What SQS does with the job; true when it is done with (deleted).
    async fn schedule(
        &self,
        job: &DeliveryJob,
        receipt: &str,
        receive_count: u32,
        received_at: Instant,
        result: JobResult,
    ) -> bool {
        let hide = |seconds: u64| self.hide(receipt, seconds, received_at);
        match result {
            JobResult::Delivered | JobResult::Skipped(_) => true,
            JobResult::RetryIn(seconds) | JobResult::NotYet(seconds) if seconds >= self.park_from_s => {
                self.park(job, receipt, seconds, seconds, received_at).await
            }
            JobResult::RetryIn(seconds) | JobResult::NotYet(seconds) => {
                hide(seconds).await;
                false
            }
            JobResult::Deferred(seconds) => {
                // A little jitter, so the jobs of a recovered endpoint do not all return at once.
                let seconds = seconds + rand::random_range(0..=seconds / 8);
                tracing::info!(retry_in_s = seconds, "breaker open: deferred without a POST");
                if seconds >= self.park_from_s {
                    self.park(job, receipt, seconds, seconds, received_at).await
                } else if receive_count >= RECYCLE_AFTER_RECEIVES {
                    // Sent again as a fresh message, so that SQS's maxReceiveCount never moves
                    // a job that made no attempt to the DLQ.
                    self.park(job, receipt, 0, seconds, received_at).await
                } else {
                    hide(seconds).await;
                    false
                }
            }
            JobResult::Released => {
                tracing::info!("too close to the deadline to attempt; released to the queue");
                hide(0).await;
                false
            }
            JobResult::Error(e) => {
                // A short, growing backoff: a storage outage neither spins nor costs attempts.
                let backoff = (30 * receive_count as u64).min(900);
                tracing::warn!(error = %e, retry_in_s = backoff, "could not handle the job now");
                hide(backoff).await;
                false
            }
            JobResult::GaveUp { attempts, reason } => self.give_up(job, attempts, &reason).await,
        }
    }

    /// Sends the job again as a new message delayed by `seconds` (at most `MAX_DELAY_S`; a
    /// longer wait is parked again when it comes back), so the wait is not spent in flight;
    /// true when sent, and the received message is then deleted. If the send fails, the
    /// received message is hidden for `or_hide` seconds instead (in flight, as before).
    async fn park(&self, job: &DeliveryJob, receipt: &str, seconds: u64, or_hide: u64, received_at: Instant) -> bool {
        // A fresh copy of a job that waits no longer (`seconds` 0) is the job as it was.
        let parked = DeliveryJob {
            not_before_ms: (seconds > 0)
                .then(|| self.clock.now_ms() + seconds * 1000)
                .or(job.not_before_ms),
            ..job.clone()
        };
        let message = OutgoingMessage {
            id: "0".into(),
            body: parked.encode(),
            reason: None,
            delay_s: seconds.min(u64::from(MAX_DELAY_S)) as u32,
        };
        match send_all(self.queue.as_ref(), &self.delivery_queue_url, &[message]).await {
            Ok(failed) if failed.is_empty() => {
                tracing::info!(retry_in_s = seconds, "job parked: sent again with a delay");
                true
            }
            _ => {
                tracing::warn!(retry_in_s = or_hide, "could not park the job; hidden instead");
                self.hide(receipt, or_hide, received_at).await;
                false
            }
        }
    }

    /// After the last attempt: the job (as the next cycle, so that a redrive starts a fresh
    /// schedule) to the DLQ, then the delivery marked failed. If the DLQ send fails, the job
    /// stays and the next receive tries again, without a POST.
    async fn give_up(&self, job: &DeliveryJob, attempts: u32, reason: &str) -> bool {
        let note = format!("gave up after {attempts} attempts: {reason}");
        let body = job.in_cycle(job.cycle + 1).encode();
        if !self.dead_letter(&body, &note).await {
            return false;
        }
        let now = self.clock.now_ms();
        let delivery = self.new_delivery(job, now);
        if let Err(e) = self.log.finish(&delivery, DeliveryStatus::Failed, &note, now).await {
            tracing::error!(error = %e, "job dead-lettered but the delivery could not be marked failed");
        }
        tracing::warn!(attempts, "delivery failed; job moved to the dead-letter queue");
        true
    }

    async fn dead_letter(&self, body: &str, reason: &str) -> bool {
        let message = OutgoingMessage {
            id: "0".into(),
            body: body.to_string(),
            reason: Some(reason.chars().take(256).collect()),
            delay_s: 0,
        };
        match send_all(self.queue.as_ref(), &self.dead_letter_url, &[message]).await {
            Ok(failed) if failed.is_empty() => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "could not send to the dead-letter queue");
                false
            }
        }
    }

    /// Hides the job for `seconds`, within SQS's rule that a message may stay hidden at most
    /// 12 h after its receive (a longer delay brings it back early, and `NotYet` hides it
    /// again for the rest).
    async fn hide(&self, receipt: &str, seconds: u64, received_at: Instant) {
        let held = received_at.elapsed().as_secs();
        let cap = MAX_VISIBILITY_S.saturating_sub(held + VISIBILITY_MARGIN_S);
        let seconds = seconds.min(cap) as u32;
        if let Err(e) = self
            .queue
            .change_visibility(&self.delivery_queue_url, receipt, seconds)
            .await
        {
            // The job still comes back, after the queue's default visibility timeout.
            tracing::warn!(error = %e, seconds, "could not set the job's visibility");
        }
    }
}
