//! One contract for every `WebhookStore` adapter: the in-memory one and DynamoDB on the
//! emulator over HTTP.

use std::sync::Arc;

use webhooks::domain::Webhook;
use webhooks::dynamo::DynamoWebhookStore;
use webhooks::event_types::EventType;
use webhooks::memory::MemoryWebhookStore;
use webhooks::ports::{StoreError, WebhookStore};
use webhooks::resources::{WEBHOOKS_TABLE, create_table};
use webhooks::{ids, time};
use webhooks_tests::{emulator, unique};

fn webhook(tenant: &str, events: &[&str], active: bool) -> Webhook {
    let now = time::now_ms();
    Webhook {
        id: ids::new_id("wh"),
        tenant: tenant.into(),
        url: "https://example.com/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: Some("s3cret".into()),
        active,
        created_at: now,
        updated_at: now,
        version: 1,
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

    // Deactivating removes it from fan-out, reactivating brings it back.
    let mut off = b.clone();
    off.active = false;
    off.version = 3;
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
    on.version = 4;
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
    late.version = 5;
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
async fn dynamodb_store_meets_the_contract() {
    let Some(sdk) = emulator().await else { return };
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("webhooks");
    create_table(&client, &WEBHOOKS_TABLE, &table)
        .await
        .expect("create table");
    contract(Arc::new(DynamoWebhookStore::new(client, table))).await;
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

#[tokio::test]
async fn dynamodb_store_keeps_concurrent_updates() {
    let Some(sdk) = emulator().await else { return };
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("webhooks");
    create_table(&client, &WEBHOOKS_TABLE, &table)
        .await
        .expect("create table");
    concurrent_updates(Arc::new(DynamoWebhookStore::new(client, table))).await;
}

/// The delivery log's state machine, on both adapters: the first attempt creates the record,
/// attempts append while pending, a failed delivery takes attempts again (a DLQ redrive),
/// succeeded and skipped are final, listings are newest first with a cursor.
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
        log.record_attempt(&d, &attempt(1, 500), DeliveryStatus::Pending, 6)
            .await
            .expect("a1")
    );
    let first = log
        .get(&webhook, &d.id)
        .await
        .expect("get")
        .expect("created by the first attempt");
    assert_eq!((first.status, first.attempts.len()), (DeliveryStatus::Pending, 1));
    assert!(
        log.record_attempt(&d, &attempt(2, 500), DeliveryStatus::Failed, 7)
            .await
            .expect("a2")
    );
    assert!(
        log.record_attempt(&d, &attempt(3, 200), DeliveryStatus::Succeeded, 8)
            .await
            .expect("redrive")
    );
    assert!(
        !log.record_attempt(&d, &attempt(4, 200), DeliveryStatus::Succeeded, 9)
            .await
            .expect("dup")
    );
    assert!(!log.skip(&d, "late", 9).await.expect("skip after success"));
    let got = log.get(&webhook, &d.id).await.expect("get").expect("found");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(
        got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(got.attempts[0], attempt(1, 500));
    assert_eq!(
        (got.created_at, got.updated_at, got.expires_at),
        (6, 8, 2_000_000_000),
        "created by the first attempt"
    );
    assert_eq!(
        (got.tenant.as_str(), got.event_id.as_str(), got.event.as_str()),
        (tenant.as_str(), "evt-1", "system.info")
    );
    let s = mk(2);
    assert!(log.skip(&s, "webhook was deleted", 9).await.expect("skip"));
    assert!(
        !log.record_attempt(&s, &attempt(1, 200), DeliveryStatus::Succeeded, 9)
            .await
            .expect("after skip")
    );
    let skipped = log.get(&webhook, &s.id).await.expect("get").expect("found");
    assert_eq!(
        (skipped.status, skipped.note.as_deref()),
        (DeliveryStatus::Skipped, Some("webhook was deleted"))
    );
    assert!(skipped.attempts.is_empty());
    for n in 3..7 {
        log.record_attempt(&mk(n), &attempt(1, 200), DeliveryStatus::Succeeded, 10)
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

#[tokio::test]
async fn memory_delivery_log_meets_the_contract() {
    delivery_log_contract(Arc::new(webhooks::memory::MemoryDeliveryLog::new())).await;
}

#[tokio::test]
async fn dynamodb_delivery_log_meets_the_contract() {
    let Some(sdk) = emulator().await else { return };
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique("deliveries");
    create_table(&client, &webhooks::resources::DELIVERIES_TABLE, &table)
        .await
        .expect("create table");
    delivery_log_contract(Arc::new(webhooks::dynamo::DynamoDeliveryLog::new(client, table))).await;
}
