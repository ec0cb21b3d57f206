//! One contract for every storage port's adapters (`WebhookStore`, `DeliveryLog`,
//! `EventStore`): the in-memory one, the durable one (SQLite, `webhooks::sqlite`) and DynamoDB
//! on the emulator over HTTP.

use std::sync::Arc;

use webhooks::domain::Webhook;
use webhooks::dynamo::DynamoWebhookStore;
use webhooks::event_types::EventType;
use webhooks::memory::MemoryWebhookStore;
use webhooks::messages::{EventId, Tenant};
use webhooks::ports::{
    Claim, EventCursor, EventQuery, EventRecord, EventStore, MAX_RECORDED_FAN_OUT, StoreError, StoredEvent,
    WebhookStore,
};
use webhooks::resources::{WEBHOOKS_TABLE, create_table};
use webhooks::sqlite::{SqliteDeliveryLog, SqliteEventStore, SqliteWebhookStore};
use webhooks::{ids, time};
use webhooks_tests::{emulator, sqlite_db, unique};

fn webhook(tenant: &str, events: &[&str], active: bool) -> Webhook {
    let now = time::now_ms();
    Webhook {
        id: ids::new_id("wh"),
        tenant: tenant.into(),
        url: "https://example.com/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: Some("s3cret".into()),
        previous_secrets: Vec::new(),
        active,
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        disabled: None,
    }
}

fn ev(s: &str) -> EventType {
    EventType::parse(s).expect("known event")
}

async fn contract(store: Arc<dyn WebhookStore>) {
    let tenant = unique("tenant");
    let other = unique("other");

    // create / get round-trips every field; a second create of the same id is refused.
    let a = webhook(&tenant, &["workflow.execution.completed", "task.*"], true);
    store.create(&a).await.expect("create");
    assert_eq!(store.get(&tenant, &a.id).await.expect("get"), Some(a.clone()));
    assert!(matches!(store.create(&a).await, Err(StoreError::AlreadyExists)));
    let mut unsigned = webhook(&tenant, &["*"], true);
    unsigned.secret = None;
    store.create(&unsigned).await.expect("create unsigned");
    assert_eq!(
        store
            .get(&tenant, &unsigned.id)
            .await
            .expect("get")
            .expect("found")
            .secret,
        None
    );

    // Tenancy: another tenant sees nothing of it.
    assert_eq!(store.get(&other, &a.id).await.expect("get"), None);
    assert!(store.list(&other, 10, None).await.expect("list").items.is_empty());
    assert!(matches!(store.delete(&other, &a.id).await, Err(StoreError::NotFound)));
    assert!(
        store
            .subscribers(&other, ev("task.execution.failed"))
            .await
            .expect("subs")
            .is_empty()
    );

    // Subscribers: exact types, wildcards, `*`; inactive webhooks are not subscribers.
    let inactive = webhook(&tenant, &["task.execution.failed"], false);
    store.create(&inactive).await.expect("create inactive");
    let mut subs = store
        .subscribers(&tenant, ev("task.execution.failed"))
        .await
        .expect("subs");
    subs.sort();
    let mut want = vec![a.id.clone(), unsigned.id.clone()];
    want.sort();
    assert_eq!(subs, want);
    assert_eq!(
        store.subscribers(&tenant, ev("system.info")).await.expect("subs"),
        vec![unsigned.id.clone()]
    );

    // Pagination in creation order, with a cursor.
    let mut all = vec![a.clone(), unsigned.clone(), inactive.clone()];
    for _ in 0..3 {
        let w = webhook(&tenant, &["system.error"], true);
        store.create(&w).await.expect("create");
        all.push(w);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store.list(&tenant, 4, cursor.as_deref()).await.expect("list");
        assert!(page.items.len() <= 4);
        seen.extend(page.items.into_iter().map(|w| w.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|w| w.id.clone()).collect::<Vec<_>>());
    let exact = store.list(&tenant, 6, None).await.expect("list");
    assert_eq!(
        (exact.items.len(), exact.next),
        (6, None),
        "a full last page has no next cursor"
    );

    // Conditional update: the stale writer loses and learns it; subscriptions follow.
    let mut b = a.clone();
    b.events = vec!["system.info".into()];
    b.version = 2;
    store.update(&a, &b).await.expect("update");
    let mut stale = a.clone();
    stale.url = "https://stale.example.com/".into();
    stale.version = 2;
    assert!(matches!(store.update(&a, &stale).await, Err(StoreError::Conflict)));
    assert_eq!(store.get(&tenant, &a.id).await.expect("get"), Some(b.clone()));
    assert!(
        !store
            .subscribers(&tenant, ev("task.execution.failed"))
            .await
            .expect("subs")
            .contains(&a.id)
    );
    assert!(
        store
            .subscribers(&tenant, ev("system.info"))
            .await
            .expect("subs")
            .contains(&a.id)
    );

    // A rotation round-trips the secrets it keeps, and is conditional like any update: a
    // rotation computed from a stale read loses to the write it raced.
    let now = time::now_ms();
    let r1 = b.rotated("whsec_bmV3LXNlY3JldA==".into(), 3600, now).expect("rotated");
    let r2 = r1.rotated("third".into(), 60, now).expect("rotated");
    store.update(&b, &r1).await.expect("rotate");
    store.update(&r1, &r2).await.expect("rotate again");
    let got = store.get(&tenant, &a.id).await.expect("get").expect("found");
    assert_eq!(got, r2, "every previous secret and its expiry round-trips");
    assert_eq!(
        got.signing_secrets(now),
        vec!["third", "whsec_bmV3LXNlY3JldA==", "s3cret"]
    );
    let stale_rotation = b.rotated("lost".into(), 60, now).expect("rotated");
    assert!(matches!(
        store.update(&b, &stale_rotation).await,
        Err(StoreError::Conflict)
    ));
    let unrotated = webhooks::domain::WebhookPatch {
        secret: Some(Some("s3cret".into())),
        ..Default::default()
    }
    .apply(&r2, now);
    store.update(&r2, &unrotated).await.expect("put a secret");
    let got = store.get(&tenant, &a.id).await.expect("get").expect("found");
    assert!(
        got.previous_secrets.is_empty(),
        "a PUT of the secret drops the old ones"
    );
    let b = got;

    // Deactivating removes it from fan-out, reactivating brings it back.
    let mut off = b.clone();
    off.active = false;
    off.version = b.version + 1;
    store.update(&b, &off).await.expect("deactivate");
    assert!(
        !store
            .subscribers(&tenant, ev("system.info"))
            .await
            .expect("subs")
            .contains(&a.id)
    );
    let mut on = off.clone();
    on.active = true;
    on.version = off.version + 1;
    store.update(&off, &on).await.expect("reactivate");
    assert!(
        store
            .subscribers(&tenant, ev("system.info"))
            .await
            .expect("subs")
            .contains(&a.id)
    );

    // Delete, then no resurrection by a late update, and no more fan-out.
    store.delete(&tenant, &a.id).await.expect("delete");
    assert_eq!(store.get(&tenant, &a.id).await.expect("get"), None);
    assert!(matches!(store.delete(&tenant, &a.id).await, Err(StoreError::NotFound)));
    let mut late = on.clone();
    late.version = on.version + 1;
    assert!(matches!(store.update(&on, &late).await, Err(StoreError::NotFound)));
    assert_eq!(store.get(&tenant, &a.id).await.expect("get"), None);
    assert!(
        !store
            .subscribers(&tenant, ev("system.info"))
            .await
            .expect("subs")
            .contains(&a.id)
    );
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    contract(Arc::new(MemoryWebhookStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_meets_the_contract() {
    let (_dir, db) = sqlite_db();
    contract(Arc::new(SqliteWebhookStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_store_meets_the_contract() {
    let Some((client, table)) = dynamodb_table(&WEBHOOKS_TABLE, "webhooks").await else {
        return;
    };
    contract(Arc::new(DynamoWebhookStore::new(client, table))).await;
}

/// A fresh table of `spec` on the emulator, or `None` where the emulator suites are skipped.
async fn dynamodb_table(
    spec: &webhooks::resources::TableSpec,
    name: &str,
) -> Option<(aws_sdk_dynamodb::Client, String)> {
    let sdk = emulator().await?;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique(name);
    create_table(&client, spec, &table).await.expect("create table");
    Some((client, table))
}

/// Many writers racing on one webhook: every patch lands (none silently lost) because each
/// loser re-reads and re-applies.
async fn concurrent_updates(store: Arc<dyn WebhookStore>) {
    let tenant = unique("tenant");
    let w = webhook(&tenant, &["system.info"], true);
    store.create(&w).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let store = store.clone();
        let (tenant, id) = (tenant.clone(), w.id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let cur = store.get(&tenant, &id).await.expect("get").expect("exists");
                let mut next = cur.clone();
                next.version += 1;
                next.events.push(format!("writer-{i}"));
                match store.update(&cur, &next).await {
                    Ok(()) => return true,
                    Err(StoreError::Conflict) => continue,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            false
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task"), "a writer gave up");
    }
    let end = store.get(&tenant, &w.id).await.expect("get").expect("exists");
    assert_eq!(end.version, 9);
    for i in 0..8 {
        assert!(
            end.events.contains(&format!("writer-{i}")),
            "writer {i}'s update was lost"
        );
    }
}

#[tokio::test]
async fn memory_store_keeps_concurrent_updates() {
    concurrent_updates(Arc::new(MemoryWebhookStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_concurrent_updates() {
    let (_dir, db) = sqlite_db();
    concurrent_updates(Arc::new(SqliteWebhookStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_store_keeps_concurrent_updates() {
    let Some((client, table)) = dynamodb_table(&WEBHOOKS_TABLE, "webhooks").await else {
        return;
    };
    concurrent_updates(Arc::new(DynamoWebhookStore::new(client, table))).await;
}

/// Health is written on its own, by compare and set on its `rev`: a stale writer loses, a
/// user's update neither bumps nor clobbers it (unless it changes it, as a re-enable does),
/// disabled fields round-trip, and a deleted webhook is never written back.
async fn health_contract(store: Arc<dyn WebhookStore>) {
    use webhooks::domain::{Disabled, Health, WebhookPatch};
    let tenant = unique("tenant");
    let w = webhook(&tenant, &["system.info"], true);
    store.create(&w).await.expect("create");
    assert_eq!(w.health, Health::default());
    let failed = Health {
        rev: 1,
        consecutive_failures: 1,
        failing_since: Some(1_000),
        last_failure_at: Some(1_000),
        last_error: Some("Receiver answered HTTP 500 Internal Server Error".into()),
        ..Health::default()
    };
    assert!(store.set_health(&tenant, &w.id, &w.health, &failed).await.expect("cas"));
    let read = store.get(&tenant, &w.id).await.expect("get").expect("found");
    assert_eq!(read.health, failed);
    assert_eq!(read.version, w.version, "health is not a user update");
    // A writer that read the old health loses.
    let stale = Health {
        rev: 1,
        last_success_at: Some(2_000),
        ..Health::default()
    };
    assert!(!store.set_health(&tenant, &w.id, &w.health, &stale).await.expect("cas"));
    // A user's update made from a copy read before the failure keeps the stored health.
    let patch = WebhookPatch {
        url: Some("https://example.com/new".into()),
        ..Default::default()
    };
    let updated = patch.apply(&w, time::now_ms());
    store.update(&w, &updated).await.expect("update");
    let read = store.get(&tenant, &w.id).await.expect("get").expect("found");
    assert_eq!(read.url, "https://example.com/new");
    assert_eq!(read.health, failed, "the dispatcher's write survived the PUT");
    // A disable round-trips; a re-enable clears it and resets health, in one update.
    let open = Health {
        rev: 2,
        consecutive_failures: 7,
        breaker_until: Some(9_000),
        probes: 2,
        ..failed.clone()
    };
    assert!(store.set_health(&tenant, &w.id, &failed, &open).await.expect("cas"));
    let current = store.get(&tenant, &w.id).await.expect("get").expect("found");
    let disabled = webhooks::domain::Webhook {
        active: false,
        disabled: Some(Disabled {
            reason: "failing for 5 days".into(),
            at: 10_000,
        }),
        version: current.version + 1,
        ..current.clone()
    };
    store.update(&current, &disabled).await.expect("disable");
    let read = store.get(&tenant, &w.id).await.expect("get").expect("found");
    assert_eq!(read, disabled);
    assert!(
        store
            .subscribers(&tenant, ev("system.info"))
            .await
            .expect("subs")
            .is_empty()
    );
    let enable = WebhookPatch {
        active: Some(true),
        ..Default::default()
    };
    let enabled = enable.apply(&read, time::now_ms());
    assert_eq!(enabled.disabled, None);
    assert_eq!(enabled.health.consecutive_failures, 0);
    store.update(&read, &enabled).await.expect("enable");
    let read = store.get(&tenant, &w.id).await.expect("get").expect("found");
    assert_eq!(read, enabled);
    assert_eq!(read.health.rev, 3, "the reset is a new revision: older writers lose");
    assert!(!store.set_health(&tenant, &w.id, &open, &failed).await.expect("cas"));
    assert_eq!(
        store.subscribers(&tenant, ev("system.info")).await.expect("subs"),
        vec![w.id.clone()]
    );
    // No resurrection.
    store.delete(&tenant, &w.id).await.expect("delete");
    assert!(
        !store
            .set_health(&tenant, &w.id, &read.health, &failed)
            .await
            .expect("cas")
    );
    assert_eq!(store.get(&tenant, &w.id).await.expect("get"), None);
}

#[tokio::test]
async fn memory_store_keeps_health_apart() {
    health_contract(Arc::new(MemoryWebhookStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_keeps_health_apart() {
    let (_dir, db) = sqlite_db();
    health_contract(Arc::new(SqliteWebhookStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_store_keeps_health_apart() {
    let Some((client, table)) = dynamodb_table(&WEBHOOKS_TABLE, "webhooks").await else {
        return;
    };
    health_contract(Arc::new(DynamoWebhookStore::new(client, table))).await;
}

/// The delivery log's state machine, on both adapters: the first attempt creates the record,
/// every attempt is appended (even one that raced a success, which stays succeeded), `finish`
/// ends only a pending delivery of its cycle, `reopen` starts a new cycle of an ended one,
/// listings are newest first with a cursor.
async fn delivery_log_contract(log: Arc<dyn webhooks::ports::DeliveryLog>) {
    use webhooks::ports::{Attempt, Delivery, DeliveryStatus};
    let webhook = ids::new_id("wh");
    let tenant = unique("tenant");
    let mk = |n: u64| Delivery {
        id: webhooks::retry::delivery_id(&tenant, &format!("evt-{n}"), &webhook, 1_000 + n),
        tenant: tenant.clone(),
        webhook_id: webhook.clone(),
        event_id: format!("evt-{n}"),
        event: "system.info".into(),
        status: DeliveryStatus::Pending,
        created_at: 1,
        updated_at: 1,
        attempts: Vec::new(),
        note: None,
        expires_at: 2_000_000_000,
        cycle: 0,
        cycle_start: 0,
        next_attempt_at: None,
    };
    let attempt = |n: u32, code: u16| Attempt {
        attempt: n,
        at: 5,
        status_code: Some(code),
        duration_ms: 3,
        message: format!("HTTP {code}"),
        response_body: Some("body".into()),
    };
    let d = mk(1);
    assert!(
        log.get(&webhook, &d.id).await.expect("get").is_none(),
        "nothing is written before an attempt"
    );
    assert!(
        log.record_attempt(&d, &attempt(1, 500), DeliveryStatus::Pending, Some(60), 6)
            .await
            .expect("a1")
    );
    let first = log
        .get(&webhook, &d.id)
        .await
        .expect("get")
        .expect("created by the first attempt");
    assert_eq!(
        (first.status, first.attempts.len(), first.next_attempt_at),
        (DeliveryStatus::Pending, 1, Some(60))
    );
    assert!(
        log.record_attempt(&d, &attempt(2, 200), DeliveryStatus::Succeeded, None, 8)
            .await
            .expect("a2")
    );
    // A duplicate job that raced the success: its POST is logged, the status stays.
    assert!(
        !log.record_attempt(&d, &attempt(3, 500), DeliveryStatus::Pending, Some(99), 9)
            .await
            .expect("dup")
    );
    assert!(
        !log.finish(&d, DeliveryStatus::Skipped, "late", 9)
            .await
            .expect("finish after success"),
        "a succeeded delivery stays succeeded"
    );
    let got = log.get(&webhook, &d.id).await.expect("get").expect("found");
    assert_eq!((got.status, got.next_attempt_at), (DeliveryStatus::Succeeded, None));
    assert_eq!(
        got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "every POST is in the log"
    );
    assert_eq!(got.attempts[0], attempt(1, 500));
    assert_eq!(
        (got.created_at, got.updated_at, got.expires_at),
        (6, 9, 2_000_000_000),
        "created by the first attempt"
    );
    assert_eq!(
        (got.tenant.as_str(), got.event_id.as_str(), got.event.as_str()),
        (tenant.as_str(), "evt-1", "system.info")
    );
    // A second cycle (a redrive or a resend) starts from the attempts already made.
    let wrong_cycle = Delivery {
        cycle: 1,
        ..got.clone()
    };
    assert!(!log.reopen(&wrong_cycle, 2, 10).await.expect("wrong cycle"));
    let fewer_attempts = Delivery {
        attempts: got.attempts[..2].to_vec(),
        ..got.clone()
    };
    assert!(
        !log.reopen(&fewer_attempts, 1, 10).await.expect("stale read"),
        "a record read before a racing attempt does not start a cycle"
    );
    assert!(log.reopen(&got, 1, 10).await.expect("reopen"));
    let reopened = log.get(&webhook, &d.id).await.expect("get").expect("found");
    assert_eq!(
        (
            reopened.status,
            reopened.cycle,
            reopened.cycle_start,
            reopened.attempts_in_cycle()
        ),
        (DeliveryStatus::Pending, 1, 3, 0)
    );
    assert!(!log.reopen(&got, 1, 11).await.expect("once"), "a cycle starts once");
    let stale = mk(1);
    assert!(
        !log.finish(&stale, DeliveryStatus::Failed, "old cycle", 11)
            .await
            .expect("stale"),
        "a job of the old cycle cannot end the new one"
    );
    let current = Delivery { cycle: 1, ..mk(1) };
    assert!(
        log.finish(&current, DeliveryStatus::Failed, "gave up", 12)
            .await
            .expect("fail")
    );
    let failed = log.get(&webhook, &d.id).await.expect("get").expect("found");
    assert_eq!(
        (failed.status, failed.note.as_deref()),
        (DeliveryStatus::Failed, Some("gave up"))
    );

    let s = mk(2);
    assert!(
        log.finish(&s, DeliveryStatus::Skipped, "webhook was deleted", 9)
            .await
            .expect("skip")
    );
    assert!(!log.finish(&s, DeliveryStatus::Failed, "again", 9).await.expect("ended"));
    let skipped = log.get(&webhook, &s.id).await.expect("get").expect("found");
    assert_eq!(
        (skipped.status, skipped.note.as_deref()),
        (DeliveryStatus::Skipped, Some("webhook was deleted"))
    );
    assert!(skipped.attempts.is_empty());
    for n in 3..7 {
        log.record_attempt(&mk(n), &attempt(1, 200), DeliveryStatus::Succeeded, None, 10)
            .await
            .expect("record");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = log.list(&webhook, 4, cursor.as_deref()).await.expect("list");
        seen.extend(page.items.iter().map(|d| d.event_id.clone()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (1..7).rev().map(|n| format!("evt-{n}")).collect::<Vec<_>>(),
        "newest first, each once"
    );
    assert!(
        log.list(&ids::new_id("wh"), 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

/// A listing walks every delivery however large the records are: DynamoDB stops a Query at
/// 1 MB, so 150 records of about 12 KB (a long log of attempts) cannot come in pages of 100
/// without a cursor after a short page (recover walks the log this way).
async fn delivery_log_pages_past_a_megabyte(log: Arc<dyn webhooks::ports::DeliveryLog>) {
    use webhooks::ports::{Attempt, Delivery, DeliveryStatus};
    let webhook = ids::new_id("wh");
    let tenant = unique("tenant");
    let message = "x".repeat(12 * 1024);
    let mut want = Vec::new();
    for n in 0..150u64 {
        let d = Delivery {
            id: webhooks::retry::delivery_id(&tenant, &format!("evt-{n}"), &webhook, 1_000 + n),
            tenant: tenant.clone(),
            webhook_id: webhook.clone(),
            event_id: format!("evt-{n}"),
            event: "system.info".into(),
            status: DeliveryStatus::Pending,
            created_at: 1,
            updated_at: 1,
            attempts: Vec::new(),
            note: None,
            expires_at: 2_000_000_000,
            cycle: 0,
            cycle_start: 0,
            next_attempt_at: None,
        };
        let attempt = Attempt {
            attempt: 1,
            at: 5,
            status_code: Some(500),
            duration_ms: 3,
            message: message.clone(),
            response_body: None,
        };
        log.record_attempt(&d, &attempt, DeliveryStatus::Pending, Some(9), 6)
            .await
            .expect("record");
        want.push(d.id);
    }
    want.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let page = log.list(&webhook, 100, cursor.as_deref()).await.expect("list");
        seen.extend(page.items.into_iter().map(|d| d.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, want, "every delivery, once, newest first");
}

#[tokio::test]
async fn memory_delivery_log_pages_past_a_megabyte() {
    delivery_log_pages_past_a_megabyte(Arc::new(webhooks::memory::MemoryDeliveryLog::new())).await;
}

#[tokio::test]
async fn sqlite_delivery_log_pages_past_a_megabyte() {
    let (_dir, db) = sqlite_db();
    delivery_log_pages_past_a_megabyte(Arc::new(SqliteDeliveryLog::new(db))).await;
}

#[tokio::test]
async fn dynamodb_delivery_log_pages_past_a_megabyte() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    delivery_log_pages_past_a_megabyte(Arc::new(webhooks::dynamo::DynamoDeliveryLog::new(client, table))).await;
}

#[tokio::test]
async fn memory_delivery_log_meets_the_contract() {
    delivery_log_contract(Arc::new(webhooks::memory::MemoryDeliveryLog::new())).await;
}

#[tokio::test]
async fn sqlite_delivery_log_meets_the_contract() {
    let (_dir, db) = sqlite_db();
    delivery_log_contract(Arc::new(SqliteDeliveryLog::new(db))).await;
}

#[tokio::test]
async fn dynamodb_delivery_log_meets_the_contract() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    delivery_log_contract(Arc::new(webhooks::dynamo::DynamoDeliveryLog::new(client, table))).await;
}

/// The stored event and its claim, on both adapters: the first claim stores the event; a
/// second claim within the lease is busy, whoever makes it; a released or lapsed claim is
/// taken over with the FIRST submission's timestamp and payload; a completed event is a
/// duplicate for ever after; an item over DynamoDB's 400 KB is refused.
async fn event_store_contract(events: Arc<dyn EventStore>) {
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    let id = EventId::parse("evt-1").expect("id");
    let first = StoredEvent {
        tenant: tenant.clone(),
        id: id.clone(),
        event: ev("system.info"),
        timestamp_ms: 1_000,
        payload: r#"{"n":1}"#.into(),
        expires_at: 2_000_000_000,
    };
    let retry = StoredEvent {
        timestamp_ms: 2_000,
        payload: r#"{"n":2}"#.into(),
        ..first.clone()
    };
    assert_eq!(events.get(&tenant, &id, true).await.expect("get"), None);
    assert_eq!(
        events.claim(&first, "a", 10_000, 90_000).await.expect("claim"),
        Claim::Won(first.clone())
    );
    assert_eq!(
        events.claim(&retry, "b", 10_001, 90_000).await.expect("race"),
        Claim::Busy { until_ms: 100_000 },
        "a racing copy does not fan out"
    );
    assert_eq!(
        events.claim(&retry, "a", 10_002, 90_000).await.expect("same owner"),
        Claim::Busy { until_ms: 100_000 },
        "two copies in one batch (one owner) do not both fan out"
    );
    // The owner's fan-out failed and gave the claim back: the retry wins at once, and fans
    // out the event as first stored.
    events.release(&tenant, &id, "b").await.expect("not the owner: no-op");
    assert!(matches!(
        events.claim(&retry, "c", 10_003, 90_000).await.expect("claim"),
        Claim::Busy { .. }
    ));
    events.release(&tenant, &id, "a").await.expect("release");
    assert_eq!(
        events.claim(&retry, "b", 10_004, 90_000).await.expect("take over"),
        Claim::Won(first.clone()),
        "the first submission's timestamp and payload win"
    );
    // The new owner crashed: its lease lapses and another worker takes over.
    assert_eq!(
        events.claim(&retry, "c", 100_005, 90_000).await.expect("lapsed"),
        Claim::Won(first.clone())
    );
    let fan_out = vec![ids::new_id("wh"), ids::new_id("wh")];
    events
        .complete(&tenant, &id, "b", &fan_out)
        .await
        .expect("not the owner any more: no-op");
    let record = |fanned: bool, webhooks: Vec<String>| EventRecord {
        event: first.clone(),
        fanned,
        fan_out: webhooks.len(),
        webhooks,
    };
    assert_eq!(
        events.get(&tenant, &id, true).await.expect("get"),
        Some(record(false, Vec::new()))
    );
    events.complete(&tenant, &id, "c", &fan_out).await.expect("complete");
    assert_eq!(
        events.get(&tenant, &id, true).await.expect("get"),
        Some(record(true, fan_out.clone())),
        "the fan-out is recorded"
    );
    assert_eq!(
        events.claim(&retry, "d", 999_999_999, 90_000).await.expect("dup"),
        Claim::Duplicate(first.clone()),
        "fanned out: a duplicate, however late"
    );
    events
        .release(&tenant, &id, "c")
        .await
        .expect("release after complete: no-op");
    assert!(matches!(
        events.claim(&retry, "d", 999_999_999, 90_000).await.expect("dup"),
        Claim::Duplicate(_)
    ));
    // Another tenant's event of the same id is another event.
    let other = StoredEvent {
        tenant: Tenant::parse(&unique("tenant")).expect("tenant"),
        ..first.clone()
    };
    assert_eq!(
        events.claim(&other, "a", 10_000, 90_000).await.expect("claim"),
        Claim::Won(other.clone())
    );
    // DynamoDB's item limit, enforced alike.
    let huge = StoredEvent {
        id: EventId::parse("evt-huge").expect("id"),
        payload: format!(r#"{{"s":"{}"}}"#, "x".repeat(401 * 1024)),
        ..first.clone()
    };
    assert!(events.claim(&huge, "a", 10_000, 90_000).await.is_err(), "over 400 KB");
    let big = StoredEvent {
        id: EventId::parse("evt-big").expect("id"),
        payload: format!(r#"{{"s":"{}"}}"#, "x".repeat(128 * 1024)),
        ..first.clone()
    };
    assert_eq!(
        events.claim(&big, "a", 10_000, 90_000).await.expect("128 KiB"),
        Claim::Won(big.clone())
    );
    assert_eq!(
        events.get(&tenant, &big.id, false).await.expect("get").map(|r| r.event),
        Some(big.clone())
    );
    // A fan-out past the cap keeps the first ids and the count, and the item stays under
    // 400 KB with a 128 KiB payload.
    let many: Vec<String> = (0..MAX_RECORDED_FAN_OUT + 5).map(|_| ids::new_id("wh")).collect();
    events
        .complete(&tenant, &big.id, "a", &many)
        .await
        .expect("complete big");
    let got = events.get(&tenant, &big.id, true).await.expect("get").expect("found");
    assert_eq!(
        (got.fan_out, got.webhooks.as_slice()),
        (many.len(), &many[..MAX_RECORDED_FAN_OUT])
    );
}

/// Listing a tenant's events: newest first by (timestamp, id), `since` and type filters,
/// cursors that go on where the last page ended whatever characters the ids hold, and no
/// other tenant's events.
async fn event_listing_contract(events: Arc<dyn EventStore>) {
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    let other = Tenant::parse(&unique("other")).expect("tenant");
    let mk = |tenant: &Tenant, id: &str, ts: u64, event: &str| StoredEvent {
        tenant: tenant.clone(),
        id: EventId::parse(id).expect("id"),
        event: ev(event),
        timestamp_ms: ts,
        payload: "{}".into(),
        expires_at: 2_000_000_000,
    };
    // Two events share a timestamp; ids with '#', spaces and unicode.
    let all = [
        mk(&tenant, "a#1", 1_000, "system.info"),
        mk(&tenant, "b 2", 2_000, "system.error"),
        mk(&tenant, "c-é", 2_000, "system.info"),
        mk(&tenant, "d", 3_000, "system.info"),
        mk(&tenant, "e", 4_000, "system.error"),
        mk(&tenant, "f", 5_000, "system.info"),
        mk(&tenant, "g", 6_000, "system.info"),
    ];
    for e in &all {
        assert!(matches!(
            events.claim(e, "o", 1, 90_000).await.expect("claim"),
            Claim::Won(_)
        ));
    }
    events.complete(&tenant, &all[6].id, "o", &[]).await.expect("complete");
    events
        .claim(&mk(&other, "z", 9_000, "system.info"), "o", 1, 90_000)
        .await
        .expect("claim");
    let walk = |query: EventQuery, limit: usize| {
        let (events, tenant) = (events.clone(), tenant.clone());
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<EventCursor> = None;
            for _ in 0..20 {
                let page = events.list(&tenant, query, limit, cursor.as_ref()).await.expect("list");
                assert!(page.items.len() <= limit);
                seen.extend(page.items.into_iter().map(|e| (e.id.to_string(), e.fanned)));
                match page.next {
                    Some(n) => cursor = Some(EventCursor::parse(&n).expect("a cursor the adapter made")),
                    None => return seen,
                }
            }
            panic!("the listing never ended");
        }
    };
    let newest_first: Vec<(String, bool)> = ["g", "f", "e", "d", "c-é", "b 2", "a#1"]
        .iter()
        .map(|id| (id.to_string(), *id == "g"))
        .collect();
    assert_eq!(walk(EventQuery::default(), 2).await, newest_first);
    assert_eq!(walk(EventQuery::default(), 100).await, newest_first);
    let since = EventQuery {
        since_ms: 2_000,
        event: None,
    };
    assert_eq!(walk(since, 3).await, newest_first[..6].to_vec(), "since is inclusive");
    let errors = EventQuery {
        since_ms: 0,
        event: Some(ev("system.error")),
    };
    assert_eq!(
        walk(errors, 1).await,
        vec![("e".to_string(), false), ("b 2".to_string(), false)]
    );
    let page = events
        .list(&other, EventQuery::default(), 10, None)
        .await
        .expect("list");
    assert_eq!(
        page.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["z"],
        "one tenant's listing never shows another's"
    );
}

#[tokio::test]
async fn memory_event_store_lists_events() {
    event_listing_contract(Arc::new(webhooks::memory::MemoryEventStore::new())).await;
}

#[tokio::test]
async fn sqlite_event_store_lists_events() {
    let (_dir, db) = sqlite_db();
    event_listing_contract(Arc::new(SqliteEventStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_event_store_lists_events() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    event_listing_contract(Arc::new(webhooks::dynamo::DynamoEventStore::new(client, table))).await;
}

#[tokio::test]
async fn memory_event_store_meets_the_contract() {
    event_store_contract(Arc::new(webhooks::memory::MemoryEventStore::new())).await;
}

#[tokio::test]
async fn sqlite_event_store_meets_the_contract() {
    let (_dir, db) = sqlite_db();
    event_store_contract(Arc::new(SqliteEventStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_event_store_meets_the_contract() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    event_store_contract(Arc::new(webhooks::dynamo::DynamoEventStore::new(client, table))).await;
}

/// Completions, on every adapter: `a` and `b` are two handles on the same events (two
/// processes where the adapter can have two). A completion made through a handle that did
/// not make the claim counts; a stale owner's completion, before or after the current
/// owner's, never counts nor undoes it; the listing and `get` agree on what is fanned out.
async fn event_completion_contract(a: Arc<dyn EventStore>, b: Arc<dyn EventStore>) {
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    let event = |id: &str, ts: u64| StoredEvent {
        tenant: tenant.clone(),
        id: EventId::parse(id).expect("id"),
        event: ev("system.info"),
        timestamp_ms: ts,
        payload: format!(r#"{{"id":"{id}"}}"#),
        expires_at: 2_000_000_000,
    };
    let listed = |store: Arc<dyn EventStore>, tenant: Tenant| async move {
        let page = store
            .list(&tenant, EventQuery::default(), 10, None)
            .await
            .expect("list");
        page.items
            .into_iter()
            .map(|e| (e.id.to_string(), e.fanned))
            .collect::<Vec<_>>()
    };
    let (w1, w2) = (vec![ids::new_id("wh")], vec![ids::new_id("wh"), ids::new_id("wh")]);

    // The stale owner completes after the current one.
    let late = event("late", 1_000);
    assert_eq!(
        a.claim(&late, "old", 10_000, 90_000).await.expect("claim"),
        Claim::Won(late.clone())
    );
    assert_eq!(
        b.claim(&late, "new", 100_001, 90_000).await.expect("lapsed"),
        Claim::Won(late.clone())
    );
    a.complete(&tenant, &late.id, "new", &w1)
        .await
        .expect("completed through the handle that did not claim");
    a.complete(&tenant, &late.id, "old", &w2)
        .await
        .expect("stale completion: no-op");
    let got = b.get(&tenant, &late.id, true).await.expect("get").expect("stored");
    assert_eq!((got.fanned, got.webhooks, got.fan_out), (true, w1.clone(), 1));

    // The stale owner completes first: it counts only once the current owner completes.
    let early = event("early", 2_000);
    assert_eq!(
        b.claim(&early, "old", 10_000, 90_000).await.expect("claim"),
        Claim::Won(early.clone())
    );
    assert_eq!(
        a.claim(&early, "new", 100_001, 90_000).await.expect("lapsed"),
        Claim::Won(early.clone())
    );
    b.complete(&tenant, &early.id, "old", &w2)
        .await
        .expect("stale completion: no-op");
    let got = a.get(&tenant, &early.id, true).await.expect("get").expect("stored");
    assert_eq!((got.fanned, got.webhooks, got.fan_out), (false, Vec::new(), 0));
    assert_eq!(
        listed(b.clone(), tenant.clone()).await,
        vec![("early".to_string(), false), ("late".to_string(), true)]
    );
    assert!(matches!(
        b.claim(&early, "third", 100_002, 90_000).await.expect("held"),
        Claim::Busy { until_ms: 190_001 }
    ));
    a.complete(&tenant, &early.id, "new", &w1).await.expect("complete");
    let got = b.get(&tenant, &early.id, false).await.expect("get").expect("stored");
    assert_eq!((got.fanned, got.webhooks), (true, w1.clone()));
    assert_eq!(
        listed(a.clone(), tenant.clone()).await,
        vec![("early".to_string(), true), ("late".to_string(), true)]
    );
    for store in [&a, &b] {
        assert_eq!(
            store.claim(&early, "third", 999_999_999, 90_000).await.expect("dup"),
            Claim::Duplicate(early.clone()),
            "fanned out: a duplicate through either handle"
        );
    }
}

#[tokio::test]
async fn memory_event_store_keeps_completions_apart() {
    let store: Arc<dyn EventStore> = Arc::new(webhooks::memory::MemoryEventStore::new());
    event_completion_contract(store.clone(), store).await;
}

#[tokio::test]
async fn sqlite_event_store_keeps_completions_apart() {
    let (_dir, db) = sqlite_db();
    event_completion_contract(
        Arc::new(SqliteEventStore::new(db.clone())),
        Arc::new(SqliteEventStore::new(db)),
    )
    .await;
}

#[tokio::test]
async fn dynamodb_event_store_keeps_completions_apart() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    event_completion_contract(
        Arc::new(webhooks::dynamo::DynamoEventStore::new(client.clone(), table.clone())),
        Arc::new(webhooks::dynamo::DynamoEventStore::new(client, table)),
    )
    .await;
}

/// Payloads come back byte for byte whatever their size and content (the DynamoDB adapter
/// stores the larger ones deflated), through `get` and through a takeover's claim.
async fn event_payload_contract(events: Arc<dyn EventStore>) {
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    // Not JSON-regular: an xorshift stream of hex deflates far less than JSON does (the small
    // payload above is stored as is).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: String = (0..2_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect();
    let payloads = [
        r#"{"a":1}"#.to_string(),
        format!(r#"{{"s":"{}"}}"#, "naïve café \\\"quoted\\\" ☃ 𝄞 ".repeat(12)),
        format!(
            r#"{{"rows":[{}]}}"#,
            vec![r#"{"id":"exec_01jv9qk3","ok":true,"n":1.5e-7}"#; 25].join(",")
        ),
        format!(r#"{{"noise":"{noise}"}}"#),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let e = StoredEvent {
            tenant: tenant.clone(),
            id: EventId::parse(&format!("p-{i}")).expect("id"),
            event: ev("system.info"),
            timestamp_ms: 1_000,
            payload: payload.clone(),
            expires_at: 2_000_000_000,
        };
        assert_eq!(
            events.claim(&e, "a", 10_000, 90_000).await.expect("claim"),
            Claim::Won(e.clone())
        );
        for consistent in [true, false] {
            let got = events
                .get(&tenant, &e.id, consistent)
                .await
                .expect("get")
                .expect("stored");
            assert_eq!(got.event.payload, *payload, "payload {i}, consistent {consistent}");
        }
        let retry = StoredEvent {
            payload: "{}".into(),
            ..e.clone()
        };
        assert_eq!(
            events.claim(&retry, "b", 100_001, 90_000).await.expect("take over"),
            Claim::Won(e.clone()),
            "payload {i} as first stored"
        );
    }
}

#[tokio::test]
async fn memory_event_store_keeps_payloads_exact() {
    event_payload_contract(Arc::new(webhooks::memory::MemoryEventStore::new())).await;
}

#[tokio::test]
async fn sqlite_event_store_keeps_payloads_exact() {
    let (_dir, db) = sqlite_db();
    event_payload_contract(Arc::new(SqliteEventStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_event_store_keeps_payloads_exact() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    event_payload_contract(Arc::new(webhooks::dynamo::DynamoEventStore::new(client, table))).await;
}

/// What the event's writes cost on DynamoDB, read back from the table: a 1 KiB JSON payload's
/// claim item fits in one write unit (1 KB; the payload is stored deflated), and so does the
/// completion of a fan-out of 10 (its own item: the claim item is not rewritten).
#[tokio::test]
async fn dynamodb_event_items_fit_one_write_unit() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    let events = webhooks::dynamo::DynamoEventStore::new(client.clone(), table.clone());
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    let steps: Vec<String> = (0..14)
        .map(|i| {
            format!(
                r#"{{"name":"step-{i}","status":"COMPLETED","durationMs":{},"note":"naïve café"}}"#,
                100 + i * 37
            )
        })
        .collect();
    let payload = format!(
        r#"{{"id":"exec_01jv9qk3m4r7t2w8x5y6z0abcd","steps":[{}]}}"#,
        steps.join(",")
    );
    assert!(payload.len() >= 1024, "a 1 KiB payload: {} bytes", payload.len());
    let e = StoredEvent {
        tenant: tenant.clone(),
        id: EventId::parse("evt-1kib").expect("id"),
        event: ev("system.info"),
        timestamp_ms: time::now_ms(),
        payload,
        expires_at: 2_000_000_000,
    };
    assert!(matches!(
        events.claim(&e, "a", 10_000, 90_000).await.expect("claim"),
        Claim::Won(_)
    ));
    let fan_out: Vec<String> = (0..10).map(|_| ids::new_id("wh")).collect();
    events.complete(&tenant, &e.id, "a", &fan_out).await.expect("complete");
    let items = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("E#{tenant}#{}", e.id)),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    let sizes: Vec<usize> = items.items().iter().map(item_size).collect();
    assert_eq!(sizes.len(), 2, "the claim item and the completion item");
    for size in sizes {
        assert!(size <= 1024, "an item of {size} bytes costs more than one write unit");
    }
    let got = events.get(&tenant, &e.id, true).await.expect("get").expect("stored");
    assert_eq!((got.event, got.fanned, got.webhooks), (e, true, fan_out));
}

/// An item's size as DynamoDB counts it: attribute names and values (numbers about one byte
/// per two significant digits, plus one; lists 3 bytes plus 1 per element).
fn item_size(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    fn value(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        match v {
            A::S(s) => s.len(),
            A::N(n) => n.trim_start_matches('0').trim_end_matches('0').len().max(1).div_ceil(2) + 1,
            A::B(b) => b.as_ref().len(),
            A::L(l) => 3 + l.iter().map(|e| value(e) + 1).sum::<usize>(),
            A::M(m) => 3 + m.iter().map(|(k, e)| k.len() + value(e) + 1).sum::<usize>(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

// ---- Listings over many records: what a sharded adapter must merge exactly ----

/// A pending delivery of `webhook` for event `evt-{n}` at `ms`.
fn delivery_at(tenant: &str, webhook: &str, n: u64, ms: u64) -> webhooks::ports::Delivery {
    webhooks::ports::Delivery {
        id: webhooks::retry::delivery_id(tenant, &format!("evt-{n}"), webhook, ms),
        tenant: tenant.to_string(),
        webhook_id: webhook.to_string(),
        event_id: format!("evt-{n}"),
        event: "system.info".into(),
        expires_at: 2_000_000_000,
        ..Default::default()
    }
}

/// One succeeded attempt of `d`, recorded at 6 ms.
async fn record_succeeded<L: webhooks::ports::DeliveryLog + ?Sized>(log: &L, d: &webhooks::ports::Delivery) {
    log.record_attempt(d, &an_attempt(200), webhooks::ports::DeliveryStatus::Succeeded, None, 6)
        .await
        .expect("record");
}

fn an_attempt(code: u16) -> webhooks::ports::Attempt {
    webhooks::ports::Attempt {
        attempt: 1,
        at: 5,
        status_code: Some(code),
        duration_ms: 3,
        message: format!("HTTP {code}"),
        response_body: None,
    }
}

/// Every page of a delivery listing of `limit`, with the cursor each one was asked with.
async fn delivery_pages(
    log: &dyn webhooks::ports::DeliveryLog,
    webhook: &str,
    limit: usize,
    from: Option<String>,
) -> Vec<(Option<String>, webhooks::ports::Page<webhooks::ports::Delivery>)> {
    let mut pages = Vec::new();
    let mut cursor = from;
    for _ in 0..100 {
        let page = log.list(webhook, limit, cursor.as_deref()).await.expect("list");
        let next = page.next.clone();
        pages.push((cursor.clone(), page));
        match next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
    }
    panic!("the listing never ended");
}

/// 50 deliveries of one webhook, 25 of them of events in the same millisecond (so only the
/// id's hash part orders them) and 25 a millisecond apart, interleaved in time with them:
/// pages of 20 are exactly 20, 20 and 10 records, newest first, each once; asking for a page
/// again with its cursor gives the same page; a cursor that is any record's id starts just
/// below it; pages of 1 and of 100 agree. DynamoDB spreads these records over its shards,
/// so a merge that is not exact (a per-shard share of the limit, shards concatenated, a
/// cursor per shard) fails here.
async fn delivery_listing_over_many(log: Arc<dyn webhooks::ports::DeliveryLog>) {
    let tenant = unique("tenant");
    let webhook = ids::new_id("wh");
    let mut want = Vec::new();
    for n in 0..50u64 {
        let ms = if n % 2 == 0 { 5_000 } else { 4_990 + n };
        let d = delivery_at(&tenant, &webhook, n, ms);
        record_succeeded(&*log, &d).await;
        want.push(d.id);
    }
    want.sort();
    want.reverse();
    let pages = delivery_pages(log.as_ref(), &webhook, 20, None).await;
    assert_eq!(
        pages.iter().map(|(_, p)| p.items.len()).collect::<Vec<_>>(),
        vec![20, 20, 10],
        "full pages, as an unsharded listing gives"
    );
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|(_, p)| p.items.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(seen, want, "newest first, each once");
    for (cursor, page) in &pages {
        assert_eq!(
            &log.list(&webhook, 20, cursor.as_deref()).await.expect("again"),
            page,
            "a cursor gives the same page every time"
        );
        if let Some(next) = &page.next {
            assert_eq!(
                next,
                &page.items.last().expect("a full page").id,
                "the cursor is the last id"
            );
        }
    }
    for at in [0, 7, 24, 25, 48] {
        let below = log.list(&webhook, 5, Some(&want[at])).await.expect("list");
        let end = (at + 6).min(want.len());
        assert_eq!(
            below.items.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
            want[at + 1..end].to_vec(),
            "a cursor at record {at} starts just below it"
        );
    }
    for limit in [1, 100] {
        let all: Vec<String> = delivery_pages(log.as_ref(), &webhook, limit, None)
            .await
            .into_iter()
            .flat_map(|(_, p)| p.items.into_iter().map(|d| d.id))
            .collect();
        assert_eq!(all, want, "pages of {limit}");
    }
}

/// Recover over a window that cuts the log in the middle, in pages smaller than the window:
/// exactly the failed deliveries inside it are queued again, each once, whatever shard they
/// are in; those outside it and those not failed are left alone.
async fn recover_over_many(log: Arc<dyn webhooks::ports::DeliveryLog>) {
    use webhooks::ports::{DeliveryStatus, Queue};
    let tenant = unique("tenant");
    let webhook = ids::new_id("wh");
    let mut want = Vec::new();
    for n in 0..60u64 {
        let ms = 10_000 + n / 3;
        let d = delivery_at(&tenant, &webhook, n, ms);
        if n % 4 == 0 {
            record_succeeded(&*log, &d).await;
        } else {
            log.finish(&d, DeliveryStatus::Failed, "gave up", 6)
                .await
                .expect("fail");
            if (10_003..=10_015).contains(&ms) {
                want.push(d.id);
            }
        }
    }
    want.sort();
    let queue = webhooks::memory::MemoryQueue::new();
    let url = queue.create_queue("deliveries", std::time::Duration::from_secs(30), None);
    let mut task = Some(webhooks::recover::RecoverTask {
        id: "rcv_test".into(),
        tenant: Tenant::parse(&tenant).expect("tenant"),
        webhook_id: webhook.clone(),
        since_ms: 10_003,
        until_ms: 10_015,
        before: None,
    });
    let mut pages = 0;
    while let Some(t) = task.take() {
        pages += 1;
        assert!(pages < 50, "the recover never ended");
        let outcome = webhooks::recover::run_page(log.as_ref(), &queue, &url, &t, 7)
            .await
            .expect("page");
        task = outcome.next;
    }
    let mut queued = Vec::new();
    for _ in 0..100 {
        let got = queue
            .receive(&url, 10, std::time::Duration::ZERO)
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        for m in got {
            queued.push(
                webhooks::messages::DeliveryJob::decode(&m.body)
                    .expect("a job")
                    .delivery_id,
            );
            queue.delete(&url, &m.receipt_handle).await.expect("delete");
        }
    }
    queued.sort();
    assert_eq!(queued, want, "the window's failed deliveries, each once");
}

#[tokio::test]
async fn memory_delivery_log_lists_many() {
    delivery_listing_over_many(Arc::new(webhooks::memory::MemoryDeliveryLog::new())).await;
    recover_over_many(Arc::new(webhooks::memory::MemoryDeliveryLog::new())).await;
}

#[tokio::test]
async fn sqlite_delivery_log_lists_many() {
    let (_dir, db) = sqlite_db();
    delivery_listing_over_many(Arc::new(SqliteDeliveryLog::new(db.clone()))).await;
    recover_over_many(Arc::new(SqliteDeliveryLog::new(db))).await;
}

#[tokio::test]
async fn dynamodb_delivery_log_lists_many() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    let log = Arc::new(webhooks::dynamo::DynamoDeliveryLog::new(client, table));
    delivery_listing_over_many(log.clone()).await;
    recover_over_many(log).await;
}

/// 50 events of one tenant, 25 in the same millisecond: without a filter, pages of 20 are
/// exactly 20, 20 and 10, newest first by (timestamp, id); a page asked again with its cursor
/// is the same; `since` and a type filter list exactly their events (a filtered page may be
/// short, with a cursor, but never skips nor repeats one).
async fn event_listing_over_many(events: Arc<dyn EventStore>) {
    let tenant = Tenant::parse(&unique("tenant")).expect("tenant");
    let mut all = Vec::new();
    for n in 0..50u64 {
        let e = StoredEvent {
            tenant: tenant.clone(),
            id: EventId::parse(&format!("evt-{n}")).expect("id"),
            event: ev(if n % 3 == 0 { "system.error" } else { "system.info" }),
            timestamp_ms: if n % 2 == 0 { 7_000 } else { 6_990 + n },
            payload: "{}".into(),
            expires_at: 2_000_000_000,
        };
        assert!(matches!(
            events.claim(&e, "o", 1, 90_000).await.expect("claim"),
            Claim::Won(_)
        ));
        all.push(e);
    }
    all.sort_by(|a, b| (b.timestamp_ms, b.id.as_str()).cmp(&(a.timestamp_ms, a.id.as_str())));
    let walk = |query: EventQuery, limit: usize| {
        let (events, tenant) = (events.clone(), tenant.clone());
        async move {
            let mut pages = Vec::new();
            let mut cursor: Option<EventCursor> = None;
            for _ in 0..200 {
                let page = events.list(&tenant, query, limit, cursor.as_ref()).await.expect("list");
                assert!(page.items.len() <= limit);
                let again = events
                    .list(&tenant, query, limit, cursor.as_ref())
                    .await
                    .expect("again");
                assert_eq!(again, page, "a cursor gives the same page every time");
                let next = page.next.clone();
                pages.push(page.items.into_iter().map(|e| e.id.to_string()).collect::<Vec<_>>());
                match next {
                    Some(n) => cursor = Some(EventCursor::parse(&n).expect("a cursor the adapter made")),
                    None => return pages,
                }
            }
            panic!("the listing never ended");
        }
    };
    let ids = |filter: &dyn Fn(&StoredEvent) -> bool| -> Vec<String> {
        all.iter().filter(|e| filter(e)).map(|e| e.id.to_string()).collect()
    };
    let pages = walk(EventQuery::default(), 20).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![20, 20, 10]);
    assert_eq!(pages.concat(), ids(&|_| true), "newest first, each once");
    let since = EventQuery {
        since_ms: 7_000,
        event: None,
    };
    assert_eq!(
        walk(since, 20).await.concat(),
        ids(&|e| e.timestamp_ms >= 7_000),
        "since"
    );
    let errors = EventQuery {
        since_ms: 0,
        event: Some(ev("system.error")),
    };
    assert_eq!(
        walk(errors, 4).await.concat(),
        ids(&|e| e.event == ev("system.error")),
        "a type filter"
    );
}

#[tokio::test]
async fn memory_event_store_lists_many() {
    event_listing_over_many(Arc::new(webhooks::memory::MemoryEventStore::new())).await;
}

#[tokio::test]
async fn sqlite_event_store_lists_many() {
    let (_dir, db) = sqlite_db();
    event_listing_over_many(Arc::new(SqliteEventStore::new(db))).await;
}

#[tokio::test]
async fn dynamodb_event_store_lists_many() {
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    event_listing_over_many(Arc::new(webhooks::dynamo::DynamoEventStore::new(client, table))).await;
}

// ---- DynamoDB's layout: the shards, and records written before them ----

type RawItem = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// Every item of one partition key, read back raw from the emulator.
async fn raw_partition(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Vec<RawItem> {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    assert!(out.last_evaluated_key().is_none(), "small enough for one Query");
    out.items().to_vec()
}

fn raw_s(item: &RawItem, k: &str) -> String {
    item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// One webhook's records are spread over `DELIVERY_SHARDS` partition keys, each record under
/// the key its id hashes to, none under the unsuffixed key; one tenant's events are spread
/// over `EVENT_INDEX_SHARDS` index keys alike.
#[tokio::test]
async fn dynamodb_spreads_one_webhooks_records_over_its_shards() {
    use webhooks::dynamo::{DELIVERY_SHARDS, EVENT_INDEX_SHARDS, delivery_pk, event_index_pk};
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    let log = webhooks::dynamo::DynamoDeliveryLog::new(client.clone(), table.clone());
    let tenant = unique("tenant");
    let webhook = ids::new_id("wh");
    let mut ids_written = Vec::new();
    for n in 0..64u64 {
        let d = delivery_at(&tenant, &webhook, n, 5_000);
        record_succeeded(&log, &d).await;
        ids_written.push(d.id);
    }
    let mut per_key = Vec::new();
    let mut found = 0;
    for h in 0..DELIVERY_SHARDS {
        let pk = format!("W#{webhook}#{h}");
        let items = raw_partition(&client, &table, &pk).await;
        for item in &items {
            let id = raw_s(item, "id");
            assert_eq!(delivery_pk(&webhook, &id), pk, "each record under its id's shard");
        }
        found += items.len();
        per_key.push(items.len());
    }
    println!("records per shard key: {per_key:?}");
    assert_eq!(found, 64, "every record is in a shard");
    assert!(
        raw_partition(&client, &table, &format!("W#{webhook}")).await.is_empty(),
        "nothing under the unsuffixed key"
    );
    // 64 records over 16 keys: the chance that a hash of SHA-256 leaves more than 6 keys
    // empty is below one in a million.
    assert!(per_key.iter().filter(|n| **n > 0).count() >= 10, "{per_key:?}");
    assert!(per_key.iter().all(|n| *n < 64), "{per_key:?}");

    let events = webhooks::dynamo::DynamoEventStore::new(client.clone(), table.clone());
    let t = Tenant::parse(&tenant).expect("tenant");
    let mut index_keys = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..64u64 {
        let e = StoredEvent {
            tenant: t.clone(),
            id: EventId::parse(&format!("evt-{n}")).expect("id"),
            event: ev("system.info"),
            timestamp_ms: 7_000,
            payload: "{}".into(),
            expires_at: 2_000_000_000,
        };
        events.claim(&e, "o", 1, 90_000).await.expect("claim");
        let item = raw_partition(&client, &table, &format!("E#{tenant}#evt-{n}")).await;
        let gsi1pk = raw_s(&item[0], "gsi1pk");
        assert_eq!(gsi1pk, event_index_pk(&t, &e.id));
        *index_keys.entry(gsi1pk).or_default() += 1;
    }
    println!("events per index key: {index_keys:?}");
    assert!(index_keys.len() >= 10 && index_keys.len() <= EVENT_INDEX_SHARDS as usize);
    assert!(index_keys.keys().all(|k| k.starts_with(&format!("EV#{tenant}#"))));
}

/// A delivery record as the release before the shards wrote it: under `W#{webhookId}`.
fn legacy_delivery_item(d: &webhooks::ports::Delivery, status: &str) -> RawItem {
    use aws_sdk_dynamodb::types::AttributeValue::{L, M, N, S};
    let attempt = M(std::collections::HashMap::from([
        ("attempt".to_string(), N("1".into())),
        ("at".to_string(), N("5".into())),
        ("durationMs".to_string(), N("3".into())),
        ("statusCode".to_string(), N("500".into())),
        ("message".to_string(), S("HTTP 500".into())),
    ]));
    std::collections::HashMap::from([
        ("pk".to_string(), S(format!("W#{}", d.webhook_id))),
        ("sk".to_string(), S(format!("D#{}", d.id))),
        ("id".to_string(), S(d.id.clone())),
        ("tenant".to_string(), S(d.tenant.clone())),
        ("webhookId".to_string(), S(d.webhook_id.clone())),
        ("eventId".to_string(), S(d.event_id.clone())),
        ("event".to_string(), S(d.event.clone())),
        ("status".to_string(), S(status.into())),
        ("createdAt".to_string(), N("6".into())),
        ("updatedAt".to_string(), N("6".into())),
        ("expiresAt".to_string(), N("2000000000".into())),
        ("cycle".to_string(), N("0".into())),
        ("cycleStart".to_string(), N("0".into())),
        ("attempts".to_string(), L(vec![attempt])),
    ])
}

/// Records written before the shards, put into the emulator in the old layout, beside new
/// ones whose event times interleave with theirs: the listing shows both, merged, newest
/// first, in exact pages; recover finds the failed ones; a read by id finds an old record
/// and moves it to its shard, so the next attempt appends to it (one record, its attempts
/// in order) rather than starting another. Old index entries (`EV#{tenant}`) still list.
#[tokio::test]
async fn dynamodb_reads_records_written_before_the_shards() {
    use webhooks::ports::{DeliveryLog, DeliveryStatus, Queue};
    let Some((client, table)) = dynamodb_table(&webhooks::resources::DELIVERIES_TABLE, "deliveries").await else {
        return;
    };
    let tenant = unique("tenant");
    let webhook = ids::new_id("wh");
    let mut want = Vec::new();
    let mut old_failed = Vec::new();
    for n in 0..12u64 {
        let d = delivery_at(&tenant, &webhook, n, 1_000 + 2 * n);
        let status = if n % 2 == 0 { "failed" } else { "succeeded" };
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(legacy_delivery_item(&d, status)))
            .send()
            .await
            .expect("put an old-layout record");
        if n % 2 == 0 {
            old_failed.push(d.id.clone());
        }
        want.push(d.id);
    }
    let log = webhooks::dynamo::DynamoDeliveryLog::new(client.clone(), table.clone());
    for n in 12..24u64 {
        let d = delivery_at(&tenant, &webhook, n, 1_000 + 2 * (n - 12) + 1);
        record_succeeded(&log, &d).await;
        want.push(d.id);
    }
    want.sort();
    want.reverse();
    let pages = delivery_pages(&log, &webhook, 5, None).await;
    assert_eq!(
        pages.iter().map(|(_, p)| p.items.len()).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 4]
    );
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|(_, p)| p.items.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(seen, want, "old and new records, merged newest first");

    // Recover over the whole window finds the old layout's failed records.
    let queue = webhooks::memory::MemoryQueue::new();
    let url = queue.create_queue("deliveries", std::time::Duration::from_secs(30), None);
    let task = webhooks::recover::RecoverTask {
        id: "rcv_old".into(),
        tenant: Tenant::parse(&tenant).expect("tenant"),
        webhook_id: webhook.clone(),
        since_ms: 0,
        until_ms: 10_000,
        before: None,
    };
    let outcome = webhooks::recover::run_page(&log, &queue, &url, &task, 100)
        .await
        .expect("page");
    assert_eq!(outcome.queued, old_failed.len());
    let mut queued: Vec<String> = queue
        .receive(&url, 10, std::time::Duration::ZERO)
        .await
        .expect("receive")
        .iter()
        .map(|m| {
            webhooks::messages::DeliveryJob::decode(&m.body)
                .expect("job")
                .delivery_id
        })
        .collect();
    queued.sort();
    old_failed.sort();
    assert_eq!(queued, old_failed);

    // Read by id: found, and moved to its shard.
    let old = delivery_at(&tenant, &webhook, 0, 1_000);
    let got = log
        .get(&webhook, &old.id)
        .await
        .expect("get")
        .expect("an old record reads");
    assert_eq!((got.status, got.attempts.len()), (DeliveryStatus::Failed, 1));
    let shard_pk = webhooks::dynamo::delivery_pk(&webhook, &old.id);
    assert!(
        raw_partition(&client, &table, &shard_pk)
            .await
            .iter()
            .any(|i| raw_s(i, "id") == old.id),
        "moved to its shard"
    );
    assert!(
        !raw_partition(&client, &table, &format!("W#{webhook}"))
            .await
            .iter()
            .any(|i| raw_s(i, "id") == old.id),
        "and gone from the old key"
    );
    // Its next cycle and attempt land on the same record.
    assert!(log.reopen(&got, 1, 7).await.expect("reopen"));
    let next = webhooks::ports::Delivery {
        cycle: 1,
        ..old.clone()
    };
    let second = webhooks::ports::Attempt {
        attempt: 2,
        ..an_attempt(200)
    };
    assert!(
        log.record_attempt(&next, &second, DeliveryStatus::Succeeded, None, 8)
            .await
            .expect("record")
    );
    let after = log.get(&webhook, &old.id).await.expect("get").expect("found");
    assert_eq!(
        (
            after.status,
            after.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>()
        ),
        (DeliveryStatus::Succeeded, vec![1, 2]),
        "one record, its attempts in order"
    );
    // The listing still has every record once, the moved one included.
    let again: Vec<String> = delivery_pages(&log, &webhook, 7, None)
        .await
        .into_iter()
        .flat_map(|(_, p)| p.items.into_iter().map(|d| d.id))
        .collect();
    assert_eq!(again, want);
    // A fresh process (an empty memo) reads the old records the same way.
    let fresh = webhooks::dynamo::DynamoDeliveryLog::new(client.clone(), table.clone());
    let other_old = delivery_at(&tenant, &webhook, 1, 1_002);
    assert_eq!(
        fresh.get(&webhook, &other_old.id).await.expect("get").map(|d| d.status),
        Some(DeliveryStatus::Succeeded)
    );
    assert!(fresh.get(&webhook, &ids::new_id("dl")).await.expect("get").is_none());

    // Events whose index entry has the old key still list, merged with new ones.
    let t = Tenant::parse(&tenant).expect("tenant");
    let events = webhooks::dynamo::DynamoEventStore::new(client.clone(), table.clone());
    let mut all = Vec::new();
    for n in 0..10u64 {
        let e = StoredEvent {
            tenant: t.clone(),
            id: EventId::parse(&format!("evt-{n}")).expect("id"),
            event: ev("system.info"),
            timestamp_ms: 9_000 + n,
            payload: "{}".into(),
            expires_at: 2_000_000_000,
        };
        events.claim(&e, "o", 1, 90_000).await.expect("claim");
        if n % 2 == 0 {
            // Rewrite the entry's index key as the release before the shards wrote it.
            client
                .update_item()
                .table_name(&table)
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("E#{tenant}#evt-{n}")),
                )
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("E".into()))
                .update_expression("SET gsi1pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("EV#{tenant}")),
                )
                .send()
                .await
                .expect("old index key");
        }
        all.push(e.id.to_string());
    }
    all.reverse();
    let mut listed = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    for _ in 0..20 {
        let page = events
            .list(&t, EventQuery::default(), 3, cursor.as_ref())
            .await
            .expect("list");
        listed.push(page.items.iter().map(|e| e.id.to_string()).collect::<Vec<_>>());
        match page.next {
            Some(n) => cursor = EventCursor::parse(&n),
            None => break,
        }
    }
    assert_eq!(listed.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    assert_eq!(listed.concat(), all, "old and new index entries, merged newest first");
}
