//! The plumbing every SQS consumer shares (ingest, the dispatcher, and the local runner's
//! pollers that stand in for Lambda's event source mapping): SQS attributes, one task per
//! message with its own span and its own failure, and the partial batch response.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use futures::FutureExt;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

/// SQS's `ApproximateReceiveCount`: 1 on the first receive.
pub fn receive_count(m: &SqsMessage) -> u32 {
    m.attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// SQS's `SentTimestamp`: milliseconds since the epoch when the queue received the message.
pub fn sent_timestamp(m: &SqsMessage) -> u64 {
    m.attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(crate::time::now_ms)
}

pub fn message_id(m: &SqsMessage) -> String {
    m.message_id.clone().unwrap_or_default()
}

/// Runs `handle` on every message, at most `concurrency` at once, each in a span named by its
/// message id. A panic in one message's handling becomes `on_panic` for that message alone:
/// the other messages of the batch finish and are reported as they went (the release profile
/// unwinds for this reason).
pub async fn each_message<'a, T, F, Fut>(
    records: Vec<SqsMessage>,
    concurrency: usize,
    on_panic: T,
    handle: F,
) -> Vec<(String, T)>
where
    T: Clone + 'a,
    F: Fn(SqsMessage) -> Fut + 'a,
    Fut: Future<Output = T> + 'a,
{
    let handle = &handle;
    let on_panic = &on_panic;
    stream::iter(records)
        .map(|m| {
            let id = message_id(&m);
            let span = tracing::info_span!("message", message_id = %id);
            async move {
                let result = AssertUnwindSafe(handle(m)).catch_unwind().await;
                let result = result.unwrap_or_else(|_| {
                    tracing::error!("handling the message panicked; it will be retried");
                    on_panic.clone()
                });
                (id, result)
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// The partial batch response that makes SQS return exactly these messages.
pub fn failures(ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in ids {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_message() {
        let records = vec![message("a"), message("boom"), message("c")];
        let mut results = each_message(records, 10, false, |m| async move {
            if m.message_id.as_deref() == Some("boom") {
                panic!("bug in one job");
            }
            true
        })
        .await;
        results.sort();
        assert_eq!(
            results,
            vec![("a".into(), true), ("boom".into(), false), ("c".into(), true)]
        );
    }
}
