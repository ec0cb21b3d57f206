//! One contract for the `Queue` port: the in-memory queue, the durable one (SQLite) and SQS on
//! the emulator over HTTP. What the handlers rely on (visibility, receive counts, redrive to the
//! DLQ) and SQS's limits (entries, bytes, the 12 h visibility rule, receipt handles), so the
//! local runner cannot drift from AWS.

use std::sync::Arc;
use std::time::Duration;

use webhooks::memory::MemoryQueue;
use webhooks::ports::{
    MAX_BATCH_BYTES, MAX_DELAY_S, MAX_MESSAGE_BYTES, MAX_VISIBILITY_S, OutgoingMessage, Queue, QueueError, send_all,
};
use webhooks::sqlite::SqliteQueue;
use webhooks::sqs::SqsQueue;
use webhooks_tests::{TempDir, emulator, sqlite_db, unique};

/// Moves a queue's clock forward.
type Advance = Arc<dyn Fn(Duration) + Send + Sync>;
/// Lowers a queue's in-flight limit (`MAX_IN_FLIGHT` on SQS, which cannot be lowered).
type Limit = Arc<dyn Fn(&str, usize) + Send + Sync>;

/// A queue under test: the port, a work queue whose messages move to `dlq` on the receive
/// after the second, and (not on the emulator) a way to move the clock.
struct Subject {
    queue: Arc<dyn Queue>,
    work: String,
    dlq: String,
    advance: Option<Advance>,
    limit: Option<Limit>,
    /// The durable queue's data directory, kept while the subject lives.
    _dir: Option<TempDir>,
}

async fn memory() -> Subject {
    let q = Arc::new(MemoryQueue::new());
    let dlq = q.create_queue(&unique("dlq"), Duration::from_secs(30), None);
    let work = q.create_queue(&unique("work"), Duration::from_secs(30), Some((dlq.clone(), 2)));
    let (moved, limited) = (q.clone(), q.clone());
    Subject {
        queue: q,
        work,
        dlq,
        advance: Some(Arc::new(move |by| moved.advance(by))),
        limit: Some(Arc::new(move |url, n| limited.set_in_flight_limit(url, n))),
        _dir: None,
    }
}

fn sqlite() -> Subject {
    let (dir, db) = sqlite_db();
    let q = Arc::new(SqliteQueue::new(db, Default::default()));
    let dlq = q
        .create_queue(&unique("dlq"), Duration::from_secs(30), None)
        .expect("dlq");
    let work = q
        .create_queue(&unique("work"), Duration::from_secs(30), Some((dlq.clone(), 2)))
        .expect("work queue");
    let (moved, limited) = (q.clone(), q.clone());
    Subject {
        queue: q,
        work,
        dlq,
        advance: Some(Arc::new(move |by| moved.advance(by))),
        limit: Some(Arc::new(move |url, n| limited.set_in_flight_limit(url, n))),
        _dir: Some(dir),
    }
}

async fn sqs() -> Option<Subject> {
    let sdk = emulator().await?;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let create = |name: String| {
        let client = client.clone();
        async move {
            client
                .create_queue()
                .queue_name(name)
                .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30")
                .send()
                .await
                .expect("create queue")
                .queue_url()
                .expect("url")
                .to_string()
        }
    };
    let dlq = create(unique("dlq")).await;
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let work = create(unique("work")).await;
    client
        .set_queue_attributes()
        .queue_url(&work)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"2"}}"#),
        )
        .send()
        .await
        .expect("redrive");
    Some(Subject {
        queue: Arc::new(SqsQueue::new(client)),
        work,
        dlq,
        advance: None,
        limit: None,
        _dir: None,
    })
}

fn message(id: &str, bytes: usize) -> OutgoingMessage {
    OutgoingMessage {
        id: id.into(),
        body: "x".repeat(bytes),
        reason: None,
        delay_s: 0,
    }
}

/// Receives until `n` messages arrived or a few seconds passed.
async fn receive_n(q: &dyn Queue, url: &str, n: usize) -> Vec<webhooks::ports::QueueMessage> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(q.receive(url, 10, Duration::from_millis(500)).await.expect("receive"));
    }
    got
}

/// Send, receive (hidden while in flight, counted), change visibility, delete, redrive.
async fn semantics(s: Subject) {
    let q = s.queue.as_ref();
    let failed = q
        .send_batch(&s.work, &[message("a", 10), message("b", 20)])
        .await
        .expect("send");
    assert!(failed.is_empty());
    let got = receive_n(q, &s.work, 2).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.receive_count == 1 && m.sent_timestamp_ms > 0));
    assert!(
        q.receive(&s.work, 10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "in flight: hidden"
    );
    // Released at once: back with its receive counted.
    let b = got.iter().find(|m| m.body.len() == 20).expect("b");
    q.change_visibility(&s.work, &b.receipt_handle, 0)
        .await
        .expect("release");
    let again = receive_n(q, &s.work, 1).await;
    assert_eq!((again.len(), again[0].receive_count), (1, 2));
    // Deleted: gone for good.
    let a = got.iter().find(|m| m.body.len() == 10).expect("a");
    q.delete(&s.work, &a.receipt_handle).await.expect("delete");
    // The receive after maxReceiveCount (2) moves b to the dead-letter queue.
    q.change_visibility(&s.work, &again[0].receipt_handle, 0)
        .await
        .expect("release");
    assert!(
        receive_n(q, &s.work, 1).await.is_empty(),
        "b went to the DLQ instead of a third receive"
    );
    let dead = receive_n(q, &s.dlq, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.len(), 20);
}

/// SQS's limits, refused before the call whatever the emulator would let through.
async fn limits(s: Subject) {
    let q = s.queue.as_ref();
    let eleven: Vec<_> = (0..11).map(|i| message(&i.to_string(), 1)).collect();
    assert!(matches!(
        q.send_batch(&s.work, &eleven).await,
        Err(QueueError::BatchTooLarge(11))
    ));
    // Ten messages at exactly the batch limit go through; one byte more does not.
    let per = MAX_BATCH_BYTES / 10;
    let mut at_limit: Vec<_> = (0..10).map(|i| message(&i.to_string(), per)).collect();
    at_limit[9].body.push_str(&"y".repeat(MAX_BATCH_BYTES - 10 * per));
    assert_eq!(
        at_limit.iter().map(OutgoingMessage::size).sum::<usize>(),
        MAX_BATCH_BYTES
    );
    assert!(q.send_batch(&s.work, &at_limit).await.expect("at the limit").is_empty());
    at_limit[0].body.push('z');
    assert!(matches!(
        q.send_batch(&s.work, &at_limit).await,
        Err(QueueError::BatchBytesTooLarge(n)) if n == MAX_BATCH_BYTES + 1
    ));
    assert!(matches!(
        q.send_batch(&s.work, &[message("big", MAX_MESSAGE_BYTES + 1)]).await,
        Err(QueueError::MessageTooLarge(_))
    ));
    let mut late = message("late", 1);
    late.delay_s = MAX_DELAY_S + 1;
    assert!(matches!(
        q.send_batch(&s.work, &[late]).await,
        Err(QueueError::DelayTooLong(901))
    ));
    let got = receive_n(q, &s.work, 10).await;
    assert_eq!(got.len(), 10, "the batch at the limit arrived whole");
    let receipt = &got[0].receipt_handle;
    assert!(matches!(
        q.change_visibility(&s.work, receipt, (MAX_VISIBILITY_S + 1) as u32)
            .await,
        Err(QueueError::VisibilityTooLong(_))
    ));
    q.change_visibility(&s.work, receipt, 60).await.expect("within 12 h");
    // A receipt handle that no receive gave out.
    assert!(
        q.change_visibility(&s.work, "not-a-receipt-handle", 5).await.is_err(),
        "an unknown receipt handle is refused"
    );
}

/// `send_all` packs by count and bytes: twenty 105 KB jobs (one event with a large payload
/// and many subscribers) all arrive; none is sent twice.
async fn packing(s: Subject) {
    let q = s.queue.as_ref();
    let messages: Vec<_> = (0..20)
        .map(|i| OutgoingMessage {
            id: i.to_string(),
            body: format!("{i:02}{}", "p".repeat(105 * 1024)),
            reason: None,
            delay_s: 0,
        })
        .collect();
    let failed = send_all(q, &s.work, &messages).await.expect("send_all");
    assert!(failed.is_empty(), "{failed:?}");
    let got = receive_n(q, &s.work, 20).await;
    let mut ids: Vec<String> = got.iter().map(|m| m.body[..2].to_string()).collect();
    ids.sort();
    assert_eq!(ids, (0..20).map(|i| format!("{i:02}")).collect::<Vec<_>>());
    // One message too large for SQS is reported as failed, and only it.
    let mixed = vec![message("ok", 10), message("huge", MAX_MESSAGE_BYTES + 1)];
    assert_eq!(
        send_all(q, &s.work, &mixed).await.expect("send_all"),
        vec!["huge".to_string()]
    );
}

/// A message sent with a delay is received only after it (and then as a first receive); the
/// dispatcher parks long waits this way. On the emulator the delay is waited out (2 s).
async fn delays(s: Subject) {
    let q = s.queue.as_ref();
    let mut later = message("later", 5);
    later.delay_s = 2;
    q.send_batch(&s.work, &[message("now", 3), later]).await.expect("send");
    let first = receive_n(q, &s.work, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].body, "xxx", "the undelayed one");
    assert!(
        q.receive(&s.work, 10, Duration::from_millis(500))
            .await
            .expect("receive")
            .is_empty(),
        "the delayed one is not received before its delay"
    );
    if let Some(advance) = &s.advance {
        advance(Duration::from_secs(3));
    }
    // On an emulator the delay is waited out: LocalStack shows the message a second or so
    // after it (and a receive of under 1 s is a short poll), so poll for up to 8 s.
    let mut second = Vec::new();
    for _ in 0..16 {
        second = q.receive(&s.work, 10, Duration::ZERO).await.expect("receive");
        if !second.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(second.len(), 1, "received after its delay");
    assert_eq!((second[0].body.as_str(), second[0].receive_count), ("xxxxx", 1));
}

/// Receives stop at the in-flight limit (SQS: ~120,000 a queue, for every consumer) and go on
/// when a message leaves flight: deleted, or visible again. A delayed message is not in flight.
async fn in_flight_limit(s: Subject) {
    let (q, limit) = (s.queue.as_ref(), s.limit.clone().expect("a settable limit"));
    limit(&s.work, 2);
    let mut delayed = message("delayed", 1);
    delayed.delay_s = 600;
    q.send_batch(&s.work, &[message("a", 2), message("b", 3), message("c", 4), delayed])
        .await
        .expect("send");
    let got = receive_n(q, &s.work, 3).await;
    assert_eq!(got.len(), 2, "two in flight at most");
    assert!(
        q.receive(&s.work, 10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "a visible message, but the limit is reached"
    );
    q.delete(&s.work, &got[0].receipt_handle).await.expect("delete");
    let third = receive_n(q, &s.work, 1).await;
    assert_eq!(third.len(), 1, "room again after a delete");
    q.change_visibility(&s.work, &third[0].receipt_handle, 0)
        .await
        .expect("release");
    assert_eq!(
        receive_n(q, &s.work, 1).await.len(),
        1,
        "room again when one is visible again"
    );
}

#[tokio::test]
async fn memory_queue_delays_messages() {
    delays(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_delays_messages() {
    delays(sqlite()).await;
}

#[tokio::test]
async fn sqs_queue_delays_messages() {
    let Some(s) = sqs().await else { return };
    delays(s).await;
}

#[tokio::test]
async fn memory_queue_stops_at_the_in_flight_limit() {
    in_flight_limit(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_stops_at_the_in_flight_limit() {
    in_flight_limit(sqlite()).await;
}

#[tokio::test]
async fn memory_queue_has_sqs_semantics() {
    semantics(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_has_sqs_semantics() {
    semantics(sqlite()).await;
}

#[tokio::test]
async fn sqs_queue_has_sqs_semantics() {
    let Some(s) = sqs().await else { return };
    semantics(s).await;
}

#[tokio::test]
async fn memory_queue_enforces_sqs_limits() {
    limits(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_enforces_sqs_limits() {
    limits(sqlite()).await;
}

#[tokio::test]
async fn sqs_queue_enforces_sqs_limits() {
    let Some(s) = sqs().await else { return };
    limits(s).await;
}

#[tokio::test]
async fn memory_queue_packs_batches_by_bytes() {
    packing(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_packs_batches_by_bytes() {
    packing(sqlite()).await;
}

#[tokio::test]
async fn sqs_queue_packs_batches_by_bytes() {
    let Some(s) = sqs().await else { return };
    packing(s).await;
}

/// The 12 h rule counts from the receive, not from the call: not on the emulator, whose clock
/// cannot be moved (SQS answers InvalidParameterValue, mapped to the same error).
async fn twelve_hours_from_the_receive(s: Subject) {
    let advance = s.advance.clone().expect("a movable clock");
    s.queue.send_batch(&s.work, &[message("a", 1)]).await.expect("send");
    let got = receive_n(s.queue.as_ref(), &s.work, 1).await;
    let receipt = &got[0].receipt_handle;
    advance(Duration::from_secs(11 * 3600));
    assert!(matches!(
        s.queue.change_visibility(&s.work, receipt, 3600 + 1).await,
        Err(QueueError::VisibilityTooLong(_))
    ));
    s.queue
        .change_visibility(&s.work, receipt, 3600 - 1)
        .await
        .expect("within 12 h of the receive");
}

#[tokio::test]
async fn memory_queue_counts_twelve_hours_from_the_receive() {
    twelve_hours_from_the_receive(memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_counts_twelve_hours_from_the_receive() {
    twelve_hours_from_the_receive(sqlite()).await;
}
