//! The SQS adapter of the `Queue` port.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use crate::ports::{
    MAX_BATCH, MAX_VISIBILITY_S, OutgoingMessage, Queue, QueueError, QueueMessage, REASON_ATTRIBUTE, check_batch,
};

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
}

impl SqsQueue {
    pub fn new(client: Client) -> Self {
        SqsQueue { client }
    }
}

fn backend<E: std::error::Error>(e: E) -> QueueError {
    QueueError::Backend(DisplayErrorContext(e).to_string())
}

/// Maps the SQS errors the handlers act on to their own variants.
fn classify<E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata>(e: E) -> QueueError {
    match e.code().unwrap_or_default() {
        "ReceiptHandleIsInvalid" | "AWS.SimpleQueueService.MessageNotInflight" | "MessageNotInflight" => {
            QueueError::InvalidReceipt
        }
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => {
            QueueError::NoSuchQueue(e.message().unwrap_or_default().to_string())
        }
        _ => backend(e),
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError> {
        // SQS refuses more than 10 entries or 1 MiB; some emulators do not, so we check here.
        check_batch(messages)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::with_capacity(messages.len());
        for m in messages {
            let mut entry = SendMessageBatchRequestEntry::builder().id(&m.id).message_body(&m.body);
            if m.delay_s > 0 {
                entry = entry.delay_seconds(m.delay_s as i32);
            }
            if let Some(reason) = &m.reason {
                let attr = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(reason)
                    .build()
                    .map_err(backend)?;
                entry = entry.message_attributes(REASON_ATTRIBUTE, attr);
            }
            entries.push(entry.build().map_err(backend)?);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify)?;
        // A call that succeeds can still have failed entries.
        Ok(out.failed().iter().map(|f| f.id().to_string()).collect())
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        if seconds as u64 > MAX_VISIBILITY_S {
            return Err(QueueError::VisibilityTooLong(seconds as u64));
        }
        match self
            .client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds as i32)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // SQS words the 12 h rule as an invalid parameter naming the visibility timeout.
            Err(e)
                if e.code() == Some("InvalidParameterValue")
                    && e.message()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("visibility")) =>
            {
                Err(QueueError::VisibilityTooLong(seconds as u64))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn receive(&self, queue_url: &str, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes()
                        .and_then(|a| a.get(&name))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                QueueMessage {
                    message_id: m.message_id().unwrap_or_default().to_string(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount).max(1) as u32,
                    sent_timestamp_ms: attr(MessageSystemAttributeName::SentTimestamp),
                }
            })
            .collect())
    }

    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError> {
        if receipt_handles.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipt_handles.len()));
        }
        if receipt_handles.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .filter_map(|i| receipt_handles.get(i).cloned())
            .collect())
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
