//! The soak: many events through the local runner on an AWS-API emulator (LocalStack's SQS
//! and moto's DynamoDB, or moto for both), with the runner killed (SIGKILL) mid-flight several
//! times and restarted, and the receiver answering 503 for a while. It counts, per delivery
//! id, what the receiver accepted: nothing may be lost; duplicates (the same delivery id
//! accepted twice, the at-least-once price of a kill between a POST and its record) are
//! reported. Run only when named: `bench soak [--events N]`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use webhooks::ports::{OutgoingMessage, send_all};
use webhooks::resources::{DELIVERIES_TABLE, WEBHOOKS_TABLE, create_queues, create_table};
use webhooks::sqs::SqsQueue;

use crate::table::Table;

const TENANT: &str = "soak";
/// Shorter than the specs' visibility timeouts, so work held by a killed runner comes back in
/// seconds, not minutes (the runner's attempts are bounded far below it). An event whose
/// claim a killed runner held is taken over when the claim's 90 s lease lapses.
const SOAK_VISIBILITY_S: &str = "20";

#[derive(Default)]
struct Seen {
    accepted: HashMap<String, u32>,
    refused: u64,
}

async fn receiver(down: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (down, seen) = (down.clone(), seen.clone());
        async move {
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            if down.load(Ordering::Relaxed) {
                s.refused += 1;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let id = headers
                .get("x-webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            *s.accepted.entry(id).or_default() += 1;
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn runner_binary() -> std::path::PathBuf {
    let release = webhooks_tests::runtime_api::binary("webhooks-local", "release");
    if release.exists() {
        release
    } else {
        webhooks_tests::runtime_api::binary("webhooks-local", "debug")
    }
}

fn spawn_runner(env: &[(String, String)]) -> std::process::Child {
    std::process::Command::new(runner_binary())
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("webhooks-local is built (cargo build --release --bins)")
}

pub async fn run(events: usize) -> Table {
    let mut t = Table::new(
        format!("7. Soak: {events} events through the emulator, runner killed mid-flight, receiver down for a while"),
        &["figure", "value"],
    );
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let emulated = set("AWS_ENDPOINT_URL") || (set("AWS_ENDPOINT_URL_SQS") && set("AWS_ENDPOINT_URL_DYNAMODB"));
    if !emulated {
        t.note("skipped: no emulator (infra/emulator.sh start; infra/localstack.sh start; export their env)");
        return t;
    }
    let sdk = webhooks::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let prefix = webhooks_tests::unique("soak");
    let (webhooks_table, deliveries_table) = (format!("{prefix}-webhooks"), format!("{prefix}-deliveries"));
    create_table(&dynamo, &WEBHOOKS_TABLE, &webhooks_table)
        .await
        .expect("table");
    create_table(&dynamo, &DELIVERIES_TABLE, &deliveries_table)
        .await
        .expect("table");
    let urls: HashMap<&str, String> = create_queues(&sqs, &format!("{prefix}-"))
        .await
        .expect("queues")
        .into_iter()
        .collect();
    for q in ["EventsQueue", "DeliveryQueue"] {
        sqs.set_queue_attributes()
            .queue_url(&urls[q])
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                SOAK_VISIBILITY_S,
            )
            .send()
            .await
            .expect("visibility");
    }
    let down = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let addr = receiver(down.clone(), seen.clone()).await;

    // One webhook, so that events = deliveries; created straight in the store.
    let store = webhooks::dynamo::DynamoWebhookStore::new(dynamo.clone(), &webhooks_table);
    let now = webhooks::time::now_ms();
    let hook = webhooks::domain::Webhook {
        id: webhooks::ids::new_id("wh"),
        tenant: TENANT.into(),
        url: format!("http://{addr}/soak"),
        events: vec!["system.info".into()],
        secret: Some("soak-secret-0123456789".into()),
        previous_secrets: Vec::new(),
        active: true,
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        disabled: None,
    };
    webhooks::ports::WebhookStore::create(&store, &hook)
        .await
        .expect("webhook");

    let mut env: Vec<(String, String)> = vec![
        ("JWT_SECRET".into(), "soak-jwt-secret-0123456789abcdef".into()),
        ("PORT".into(), "0".into()),
        ("RUST_LOG".into(), "error".into()),
        ("WEBHOOKS_TABLE".into(), webhooks_table),
        ("DELIVERIES_TABLE".into(), deliveries_table),
        ("EVENTS_QUEUE_URL".into(), urls["EventsQueue"].clone()),
        ("EVENTS_DLQ_URL".into(), urls["EventsDeadLetterQueue"].clone()),
        ("DELIVERY_QUEUE_URL".into(), urls["DeliveryQueue"].clone()),
        ("DELIVERY_DLQ_URL".into(), urls["DeliveryDeadLetterQueue"].clone()),
        ("RETRY_SCHEDULE_SECONDS".into(), "1,2,4,8,15,30,30,30".into()),
        ("DELIVERY_TIMEOUT_SECONDS".into(), "2".into()),
    ];
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }

    // Every event has its id and timestamp, so every delivery id is known in advance.
    let base_ms = webhooks::time::now_ms();
    let expected: HashSet<String> = (0..events)
        .map(|i| webhooks::retry::delivery_id(TENANT, &format!("soak-{i}"), &hook.id, base_ms + i as u64))
        .collect();
    let queue = SqsQueue::new(sqs.clone());
    let started = Instant::now();
    let mut child = spawn_runner(&env);
    let producer = {
        let queue = queue.clone();
        let url = urls["EventsQueue"].clone();
        tokio::spawn(async move {
            let mut unsent = 0;
            for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
                let batch: Vec<OutgoingMessage> = chunk
                    .iter()
                    .map(|i| OutgoingMessage {
                        id: i.to_string(),
                        body: serde_json::json!({"event": "system.info", "tenant": TENANT, "id": format!("soak-{i}"),
                            "timestamp": webhooks::time::iso_ms(base_ms + *i as u64), "payload": {"n": i}})
                        .to_string(),
                        reason: None,
                        delay_s: 0,
                    })
                    .collect();
                unsent += send_all(&queue, &url, &batch)
                    .await
                    .map(|f| f.len())
                    .unwrap_or(batch.len());
                // A steady producer, rather than one burst the emulator must scan through.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unsent
        })
    };

    let mut kills = 0;
    let mut next_kill = Duration::from_secs(15);
    let (down_from, down_until) = (Duration::from_secs(25), Duration::from_secs(45));
    let limit = Duration::from_secs(1200);
    loop {
        let elapsed = started.elapsed();
        down.store(elapsed >= down_from && elapsed < down_until, Ordering::Relaxed);
        if kills < 4 && elapsed >= next_kill {
            // SIGKILL: no drain, no chance to record anything.
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
            next_kill += Duration::from_secs(20);
            child = spawn_runner(&env);
        }
        let delivered = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            expected.iter().filter(|id| s.accepted.contains_key(*id)).count()
        };
        if (delivered == events && producer.is_finished()) || elapsed > limit {
            break;
        }
        if elapsed.as_millis() % 10_000 < 250 {
            eprintln!(
                "soak: {:>4} s, {delivered} of {events} delivered, {kills} kills",
                elapsed.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let unsent = producer.await.unwrap_or(events);
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let delivered = expected.iter().filter(|id| s.accepted.contains_key(*id)).count();
    let duplicates: u32 = s.accepted.values().map(|n| n - 1).sum();
    let strangers = s.accepted.keys().filter(|id| !expected.contains(*id)).count();
    let lost = events - delivered;
    let sqs_at = std::env::var("AWS_ENDPOINT_URL_SQS")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_default();
    t.row(vec!["SQS endpoint".into(), sqs_at]);
    t.row(vec!["events sent".into(), (events - unsent).to_string()]);
    t.row(vec!["deliveries expected".into(), events.to_string()]);
    t.row(vec![
        "delivered (distinct delivery ids accepted)".into(),
        delivered.to_string(),
    ]);
    t.row(vec![
        "duplicates (a delivery id accepted again)".into(),
        duplicates.to_string(),
    ]);
    t.row(vec!["lost".into(), lost.to_string()]);
    t.row(vec!["unexpected delivery ids".into(), strangers.to_string()]);
    t.row(vec!["runner kills (SIGKILL) and restarts".into(), kills.to_string()]);
    t.row(vec![
        "503s answered while the receiver was down (25-45 s)".into(),
        s.refused.to_string(),
    ]);
    t.row(vec!["wall time".into(), format!("{:.0} s", took.as_secs_f64())]);
    t.verdict(
        lost == 0 && unsent == 0 && strangers == 0,
        "nothing lost (lost must be 0)",
    );
    t
}
