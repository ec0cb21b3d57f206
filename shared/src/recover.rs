//! Recover: every failed delivery of a webhook in a window of event time is delivered again,
//! page by page. The API runs the first page inside its request; each further page is a
//! continuation message on the delivery queue that the dispatcher runs and that names the
//! next one. So a recover over any number of failures neither outlives the API's 29 s nor
//! puts more than one page of jobs on the queue at a time.

use serde::{Deserialize, Serialize};

use crate::messages::{DeliveryJob, EventId, JobBody, Tenant};
use crate::ports::{DeliveryLog, DeliveryStatus, OutgoingMessage, Queue, send_all};
use crate::retry;

/// Where a recover goes on from: which webhook, the window (event time, ms, inclusive), and
/// the delivery id below which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverTask {
    /// Names the recover in logs.
    pub id: String,
    pub tenant: Tenant,
    pub webhook_id: String,
    pub since_ms: u64,
    pub until_ms: u64,
    /// Exclusive upper bound of the next page; `None` for the first page (the window's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// The delivery-queue body of a continuation: `{"recover": {…}}`, which no delivery job has.
#[derive(Serialize, Deserialize)]
struct Envelope {
    recover: RecoverTask,
}

impl RecoverTask {
    pub fn encode(&self) -> String {
        serde_json::to_string(&Envelope { recover: self.clone() }).unwrap_or_default()
    }

    /// `Some` when a delivery-queue body is a recover continuation.
    pub fn decode(body: &str) -> Option<RecoverTask> {
        if !body.trim_start().starts_with("{\"recover\"") {
            return None;
        }
        serde_json::from_str::<Envelope>(body).ok().map(|e| e.recover)
    }
}

/// What one page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    /// Failed deliveries queued again by this page.
    pub queued: usize,
    /// Deliveries this page examined.
    pub scanned: usize,
    /// The task for the next page, when the window has more.
    pub next: Option<RecoverTask>,
}

/// Runs one page: examines up to `page` deliveries of the webhook, newest first, below the
/// task's cursor, and queues each failed one of the window as its next cycle of attempts
/// (a job without payload: the dispatcher reads it from the stored event). The continuation
/// is not sent here: the caller sends it after the jobs, so a page whose jobs could not all
/// be queued is retried from the same cursor.
pub async fn run_page(
    log: &dyn DeliveryLog,
    queue: &dyn Queue,
    delivery_queue_url: &str,
    task: &RecoverTask,
    page: usize,
) -> Result<PageOutcome, String> {
    let before = task
        .before
        .clone()
        .unwrap_or_else(|| retry::delivery_id_bound(task.until_ms.saturating_add(1)));
    let listed = log
        .list(&task.webhook_id, page, Some(&before))
        .await
        .map_err(|e| e.to_string())?;
    let mut jobs = Vec::new();
    let mut ended = listed.next.is_none();
    for d in &listed.items {
        let Some(at) = retry::delivery_time(&d.id) else {
            continue;
        };
        if at < task.since_ms {
            // Newest first: everything further down is older than the window.
            ended = true;
            break;
        }
        if d.status != DeliveryStatus::Failed || d.tenant != task.tenant {
            continue;
        }
        let Some(event_id) = EventId::parse(&d.event_id) else {
            continue;
        };
        jobs.push(DeliveryJob {
            delivery_id: d.id.clone(),
            webhook_id: d.webhook_id.clone(),
            tenant: task.tenant.clone(),
            event_id,
            event: d.event.clone(),
            timestamp_ms: at,
            cycle: d.cycle + 1,
            body: JobBody::Stored,
            not_before_ms: None,
        });
    }
    let messages: Vec<OutgoingMessage> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| OutgoingMessage {
            id: i.to_string(),
            body: j.encode(),
            reason: None,
            delay_s: 0,
        })
        .collect();
    let unsent = send_all(queue, delivery_queue_url, &messages)
        .await
        .map_err(|e| e.to_string())?;
    if !unsent.is_empty() {
        return Err(format!(
            "{} of {} recover jobs were not queued",
            unsent.len(),
            jobs.len()
        ));
    }
    let next = match (&listed.next, ended) {
        (Some(cursor), false) => Some(RecoverTask {
            before: Some(cursor.clone()),
            ..task.clone()
        }),
        _ => None,
    };
    tracing::info!(
        recover_id = %task.id,
        webhook_id = %task.webhook_id,
        queued = jobs.len(),
        scanned = listed.items.len(),
        more = next.is_some(),
        "recover page"
    );
    Ok(PageOutcome {
        queued: jobs.len(),
        scanned: listed.items.len(),
        next,
    })
}

/// Puts the next page's task on the delivery queue.
pub async fn continue_with(queue: &dyn Queue, delivery_queue_url: &str, next: &RecoverTask) -> Result<(), String> {
    let message = OutgoingMessage {
        id: "0".into(),
        body: next.encode(),
        reason: None,
        delay_s: 0,
    };
    match send_all(queue, delivery_queue_url, &[message]).await {
        Ok(unsent) if unsent.is_empty() => Ok(()),
        Ok(_) => Err("the recover continuation was not queued".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_round_trip_and_are_not_jobs() {
        let task = RecoverTask {
            id: "rcv_1".into(),
            tenant: Tenant::parse("acme").expect("tenant"),
            webhook_id: "wh_1".into(),
            since_ms: 1,
            until_ms: 2,
            before: Some("dl_x".into()),
        };
        assert_eq!(RecoverTask::decode(&task.encode()), Some(task.clone()));
        assert!(DeliveryJob::decode(&task.encode()).is_err());
        assert_eq!(RecoverTask::decode(r#"{"deliveryId":"dl_1"}"#), None);
    }
}
