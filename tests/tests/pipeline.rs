//! The delivery pipeline end to end: `POST /api/events` or a producer's SQS message, ingest,
//! the delivery queue, the dispatcher, a real receiver on 127.0.0.1, and the delivery log.
//! Every scenario runs on the embedded backend and on the emulator's DynamoDB + SQS.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use webhooks::ports::{OutgoingMessage, Queue};
use webhooks::resources::{DELIVERIES_TABLE, WEBHOOKS_TABLE, create_queues, create_table};
use webhooks::signing;
use webhooks_local::{Backend, QueueUrls, Runner, local_config};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer, closed_port, emulator, unique};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Emulator,
}

struct Harness {
    base: String,
    http: reqwest::Client,
    queue: Arc<dyn Queue>,
    urls: QueueUrls,
}

/// A local runner on 127.0.0.1:0 with its pipeline running. `vars` override the environment
/// (retry schedule, timeouts). `None` when the emulator is wanted but not available.
async fn harness(kind: Kind, vars: &[(&str, &str)]) -> Option<Harness> {
    let runner = runner(kind, vars).await?;
    let queue = runner.state.queue.clone();
    let urls = runner.urls.clone();
    let addr = runner.spawn(0).await.expect("serve");
    Some(Harness {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        queue,
        urls,
    })
}

async fn runner(kind: Kind, vars: &[(&str, &str)]) -> Option<Runner> {
    let mut vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.push(("JWT_SECRET".into(), String::from_utf8_lossy(JWT_SECRET).into_owned()));
    let backend = match kind {
        Kind::Memory => Backend::Memory,
        Kind::Emulator => {
            let sdk = emulator().await?;
            let (webhooks_table, deliveries_table) = (unique("webhooks"), unique("deliveries"));
            let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
            create_table(&dynamo, &WEBHOOKS_TABLE, &webhooks_table)
                .await
                .expect("table");
            create_table(&dynamo, &DELIVERIES_TABLE, &deliveries_table)
                .await
                .expect("table");
            let prefix = format!("{}-", unique("q"));
            let urls = create_queues(&aws_sdk_sqs::Client::new(&sdk), &prefix)
                .await
                .expect("queues");
            let url = |id: &str| {
                urls.iter()
                    .find(|(l, _)| *l == id)
                    .map(|(_, u)| u.clone())
                    .expect("queue url")
            };
            vars.extend([
                ("WEBHOOKS_TABLE".into(), webhooks_table),
                ("DELIVERIES_TABLE".into(), deliveries_table),
                ("EVENTS_QUEUE_URL".into(), url("EventsQueue")),
                ("EVENTS_DLQ_URL".into(), url("EventsDeadLetterQueue")),
                ("DELIVERY_QUEUE_URL".into(), url("DeliveryQueue")),
                ("DELIVERY_DLQ_URL".into(), url("DeliveryDeadLetterQueue")),
            ]);
            Backend::Aws(Box::new(sdk))
        }
    };
    let config = local_config(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).expect("config");
    Some(Runner::new(&config, JWT_SECRET, &backend).expect("runner"))
}

impl Harness {
    async fn post(&self, tenant: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", bearer(tenant))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, tenant: &str, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", bearer(tenant))
            .send()
            .await
            .expect("send");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn webhook(&self, tenant: &str, url: &str, events: Value, secret: Option<&str>) -> String {
        let (status, body) = self
            .post(
                tenant,
                "/api/webhooks",
                json!({"url": url, "events": events, "secret": secret}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    async fn event(&self, tenant: &str, event: &str, payload: Value, id: Option<&str>) -> String {
        let mut body = json!({"event": event, "payload": payload});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let (status, body) = self.post(tenant, "/api/events", body).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("event id").to_string()
    }

    /// Waits (bounded) until the webhook's newest delivery satisfies `done`; returns it.
    async fn delivery_when(&self, tenant: &str, webhook: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, list) = self.get(tenant, &format!("/api/webhooks/{webhook}/deliveries")).await;
            if let Some(d) = list.get(0)
                && done(d)
            {
                return d.clone();
            }
            assert!(
                Instant::now() < deadline,
                "delivery never reached the expected state: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages currently in a queue, read by receiving them (and releasing them again).
    async fn drain(&self, url: &str) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..5 {
            let got = self
                .queue
                .receive(url, 10, Duration::from_millis(200))
                .await
                .expect("receive");
            if got.is_empty() {
                break;
            }
            for m in got {
                self.queue.delete(url, &m.receipt_handle).await.expect("delete");
                out.push(m.body);
            }
        }
        out
    }
}

fn status(d: &Value) -> &str {
    d["status"].as_str().unwrap_or_default()
}

async fn delivers_with_both_signatures(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(
            &tenant,
            &receiver.url("/hooks"),
            json!(["workflow.execution.*"]),
            Some("whsec_c2VjcmV0LWtleQ=="),
        )
        .await;
    let payload = json!({"id": "1", "workflowDefinitionId": "1", "status": "COMPLETED"});
    let event_id = h
        .event(&tenant, "workflow.execution.completed", payload.clone(), None)
        .await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let req = &got[0];
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(body["event"], "workflow.execution.completed");
    assert_eq!(body["payload"], payload);
    assert!(signing::verify_guide_signature(
        "whsec_c2VjcmV0LWtleQ==",
        &req.body,
        req.header("x-webhook-signature").expect("sig")
    ));
    let (id, ts) = (
        req.header("webhook-id").expect("id"),
        req.header("webhook-timestamp").expect("ts"),
    );
    let expected = signing::standard_signature("whsec_c2VjcmV0LWtleQ==", id, ts.parse().expect("ts"), &req.body);
    assert_eq!(req.header("webhook-signature"), Some(expected.as_str()));
    assert_eq!(req.header("x-webhook-event"), Some("workflow.execution.completed"));

    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "succeeded").await;
    assert_eq!(d["id"], id, "X-Webhook-Id is the delivery id");
    assert_eq!(d["eventId"], event_id);
    assert_eq!(d["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(d["attempts"][0]["statusCode"], 200);
    assert_eq!(d["attempts"][0]["responseBody"], "ok from receiver");
    let (code, one) = h.get(&tenant, &format!("/api/webhooks/{hook}/deliveries/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(one["status"], "succeeded");
    let (code, _) = h
        .get(&unique("other"), &format!("/api/webhooks/{hook}/deliveries/{id}"))
        .await;
    assert_eq!(code, 404, "another tenant cannot read the log");
}

async fn fails_twice_then_succeeds(kind: Kind) {
    // Delays of 1 s then 3 s: far enough apart that polling latency cannot reorder them.
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1,3,3")]).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script(vec![Reply::Status(500), Reply::Status(503)]);
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["task.execution.failed"]), Some("k"))
        .await;
    h.event(&tenant, "task.execution.failed", json!({"task": 7}), None)
        .await;
    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "succeeded").await;
    let attempts = d["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a["statusCode"].clone()).collect::<Vec<_>>(),
        vec![json!(500), json!(503), json!(200)]
    );
    assert_eq!(
        attempts.iter().map(|a| a["attempt"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!(3)]
    );
    assert_eq!(
        attempts[0]["message"],
        "Receiver answered HTTP 500 Internal Server Error"
    );
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("x-webhook-id").map(str::to_string))
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "the same id on every retry");
    let (gap1, gap2) = (got[1].at - got[0].at, got[2].at - got[1].at);
    assert!(
        gap1 >= Duration::from_millis(900),
        "first retry after ~1 s, was {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(2900),
        "second retry after ~3 s, was {gap2:?}"
    );
    assert!(gap2 > gap1, "delays grow: {gap1:?} then {gap2:?}");
}

async fn retry_after_lengthens_the_delay(kind: Kind) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1")]).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script(vec![Reply::RetryAfter(503, 3)]);
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.warning"]), None)
        .await;
    h.event(&tenant, "system.warning", json!({}), None).await;
    h.delivery_when(&tenant, &hook, |d| status(d) == "succeeded").await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(2900),
        "Retry-After: 3 waited {gap:?}, not the schedule's 1 s"
    );
}

async fn always_failing_ends_in_the_dlq(kind: Kind) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1,1")]).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.error"]), None)
        .await;
    h.event(&tenant, "system.error", json!({"boom": true}), Some("evt-dlq"))
        .await;
    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "failed").await;
    assert_eq!(
        d["attempts"].as_array().expect("attempts").len(),
        3,
        "N delays, N + 1 attempts"
    );
    // The job reaches the DLQ on its next receive; nothing stays in the delivery queue.
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead = h.drain(&h.urls.delivery_dlq).await;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead.len(), 1, "the job is in the delivery DLQ");
    assert!(dead[0].contains("evt-dlq"));
    assert!(h.drain(&h.urls.delivery).await.is_empty(), "nothing else stuck");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt after the last");
}

async fn timeouts_and_closed_ports_are_failed_attempts(kind: Kind) {
    let vars = [("RETRY_SCHEDULE_SECONDS", "1"), ("DELIVERY_TIMEOUT_SECONDS", "1")];
    let Some(h) = harness(kind, &vars).await else { return };
    let slow = Receiver::start(Reply::Slow(Duration::from_secs(3), 200)).await;
    let tenant = unique("acme");
    let slow_hook = h
        .webhook(&tenant, &slow.url("/"), json!(["system.warning"]), None)
        .await;
    let closed_hook = h
        .webhook(
            &tenant,
            &format!("http://127.0.0.1:{}/", closed_port()),
            json!(["system.warning"]),
            None,
        )
        .await;
    h.event(&tenant, "system.warning", json!({}), None).await;
    let d = h.delivery_when(&tenant, &slow_hook, |d| status(d) == "failed").await;
    assert_eq!(
        d["attempts"][0]["message"],
        "Timed out after 1 s waiting for the receiver"
    );
    assert_eq!(d["attempts"][0]["statusCode"], Value::Null);
    let d = h.delivery_when(&tenant, &closed_hook, |d| status(d) == "failed").await;
    assert!(
        d["attempts"][1]["message"]
            .as_str()
            .expect("message")
            .starts_with("Connection refused"),
        "{d}"
    );
}

async fn inactive_and_deleted_webhooks_get_nothing(kind: Kind) {
    let Some(runner) = runner(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let store = runner.state.store.clone();
    let h = {
        let queue = runner.state.queue.clone();
        let urls = runner.urls.clone();
        let ingest = runner.ingest.clone();
        let dispatcher = runner.dispatcher.clone();
        let addr = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(axum::serve(listener, webhooks_api::router(runner.state)).into_future());
            addr
        };
        (
            Harness {
                base: format!("http://{addr}"),
                http: reqwest::Client::new(),
                queue,
                urls,
            },
            ingest,
            dispatcher,
        )
    };
    let (h, ingest, dispatcher) = h;
    let paused = h
        .webhook(&tenant, &receiver.url("/paused"), json!(["system.info"]), None)
        .await;
    let gone = h
        .webhook(&tenant, &receiver.url("/gone"), json!(["system.info"]), None)
        .await;
    let never = h
        .webhook(&tenant, &receiver.url("/never"), json!(["system.info"]), None)
        .await;
    let res = h
        .http
        .put(format!("{}/api/webhooks/{never}", h.base))
        .header("authorization", bearer(&tenant))
        .json(&json!({"active": false}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    h.event(&tenant, "system.info", json!({}), None).await;
    // Ingest only (the pollers are not running): an inactive webhook gets no delivery at all.
    let ingest_handler: webhooks_local::Handler = Arc::new(move |e| {
        let i = ingest.clone();
        Box::pin(async move { i.handle(e).await })
    });
    let n = webhooks_local::poll_once(
        h.queue.as_ref(),
        &h.urls.events,
        Duration::from_secs(1),
        &ingest_handler,
    )
    .await
    .expect("poll");
    assert_eq!(n, 1);
    // Between ingest and delivery, one webhook is paused and one deleted.
    let current = store.get(&tenant, &paused).await.expect("get").expect("exists");
    let mut off = current.clone();
    off.active = false;
    off.version += 1;
    store.update(&current, &off).await.expect("pause");
    let res = h
        .http
        .delete(format!("{}/api/webhooks/{gone}", h.base))
        .header("authorization", bearer(&tenant))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let dispatch: webhooks_local::Handler = Arc::new(move |e| {
        let d = dispatcher.clone();
        Box::pin(async move { d.handle(e, None).await })
    });
    let n = webhooks_local::poll_once(h.queue.as_ref(), &h.urls.delivery, Duration::from_secs(1), &dispatch)
        .await
        .expect("poll");
    assert_eq!(
        n, 2,
        "jobs for the paused and the deleted webhook; none for the inactive one"
    );
    assert!(receiver.received().is_empty(), "no POST to any of them");
    let (_, list) = h.get(&tenant, &format!("/api/webhooks/{paused}/deliveries")).await;
    assert_eq!(list[0]["status"], "skipped");
    assert_eq!(list[0]["note"], "webhook is inactive");
    let (_, list) = h.get(&tenant, &format!("/api/webhooks/{never}/deliveries")).await;
    assert_eq!(list, json!([]));
    assert!(
        h.drain(&h.urls.delivery).await.is_empty(),
        "skipped jobs are acknowledged"
    );
}

async fn fan_out_stays_within_the_tenant(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let (a_recv, b_recv) = (
        Receiver::start(Reply::Status(200)).await,
        Receiver::start(Reply::Status(200)).await,
    );
    let (a, b) = (unique("tenant-a"), unique("tenant-b"));
    h.webhook(&a, &a_recv.url("/"), json!(["*"]), None).await;
    h.webhook(&a, &a_recv.url("/second"), json!(["blocker.detected"]), None)
        .await;
    h.webhook(&b, &b_recv.url("/"), json!(["*"]), None).await;
    h.event(&a, "blocker.detected", json!({"who": "a"}), None).await;
    let got = a_recv.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "both of tenant A's subscribers");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b_recv.received().is_empty(),
        "tenant B's webhook never sees tenant A's event"
    );
    // A producer cannot reach another tenant through the API either: the tenant is the token's.
    let (status, _) = h
        .post(
            &b,
            "/api/events",
            json!({"event": "system.info", "payload": {}, "tenant": a}),
        )
        .await;
    assert_eq!(status, 422, "tenant in the body is refused, not obeyed");
}

async fn duplicate_events_deliver_once(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    h.webhook(&tenant, &receiver.url("/1"), json!(["milestone.achieved"]), None)
        .await;
    h.webhook(&tenant, &receiver.url("/2"), json!(["milestone.achieved"]), None)
        .await;
    h.event(&tenant, "milestone.achieved", json!({"m": 1}), Some("order-42"))
        .await;
    receiver.wait_for(2, WAIT).await;
    h.event(&tenant, "milestone.achieved", json!({"m": 1}), Some("order-42"))
        .await;
    // The same event straight from a producer, twice, with its idempotency key.
    let body =
        json!({"event": "milestone.achieved", "payload": {"m": 1}, "tenant": tenant, "id": "order-42"}).to_string();
    let msgs: Vec<OutgoingMessage> = (0..2)
        .map(|i| OutgoingMessage {
            id: i.to_string(),
            body: body.clone(),
            reason: None,
        })
        .collect();
    assert!(
        h.queue
            .send_batch(&h.urls.events, &msgs)
            .await
            .expect("send")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.drain(&h.urls.events).await.is_empty(), "the duplicates were consumed");
    assert_eq!(receiver.received().len(), 2, "one delivery per webhook");
}

async fn a_poison_message_does_not_block_its_batch(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    h.webhook(&tenant, &receiver.url("/"), json!(["resource.shortage"]), None)
        .await;
    let good = json!({"event": "resource.shortage", "payload": {"cpu": 0.5}, "tenant": tenant}).to_string();
    let bodies = [
        "{not json".to_string(),
        json!({"event": "resource.exploded", "payload": {}, "tenant": tenant}).to_string(),
        good,
        json!({"event": "resource.shortage", "payload": "text", "tenant": tenant}).to_string(),
    ];
    let msgs: Vec<OutgoingMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| OutgoingMessage {
            id: i.to_string(),
            body: b.clone(),
            reason: None,
        })
        .collect();
    assert!(
        h.queue
            .send_batch(&h.urls.events, &msgs)
            .await
            .expect("send")
            .is_empty()
    );
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let deadline = Instant::now() + WAIT;
    let mut dead = Vec::new();
    while dead.len() < 3 && Instant::now() < deadline {
        dead.extend(h.drain(&h.urls.events_dlq).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dead.sort();
    let mut want = vec![bodies[0].clone(), bodies[1].clone(), bodies[3].clone()];
    want.sort();
    assert_eq!(dead, want, "the three poison messages are in the events DLQ, untouched");
    assert!(
        h.drain(&h.urls.events).await.is_empty(),
        "nothing left behind in the events queue"
    );
}

/// The guide's Node.js receiver re-serialises the parsed body before verifying. Our bytes are a
/// fixed point of JSON.stringify(JSON.parse(...)), so it verifies as well as a raw-body one.
async fn node_receivers_that_reserialise_verify(kind: Kind) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "")]).await else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/receiver.js");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .env("SECRET", "guide-secret")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed (make test installs it)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("node started")
        .expect("read")
        .expect("line");
    let port: u16 = first.strip_prefix("PORT ").expect("PORT line").parse().expect("port");
    let tenant = unique("acme");
    let hook = h
        .webhook(
            &tenant,
            &format!("http://127.0.0.1:{port}/webhook"),
            json!(["progress.updated"]),
            Some("guide-secret"),
        )
        .await;
    let payloads = [
        json!({"float": 1.0, "half": 0.5, "tiny": 1e-7, "huge": 1e21, "neg": -0.0, "exp": 2.5E-3}),
        serde_json::from_str::<Value>(r#"{"big": 12345678901234567890, "max": 9007199254740993, "list": [1.10, 2e0]}"#)
            .expect("json"),
        json!({"unicode": "héllo wörld ✓ 😀 \u{2028}\u{2029}", "escapes": "quote\" back\\ slash/ nl\n tab\t ctl\u{1} del\u{7f}"}),
        serde_json::from_str::<Value>(
            r#"{"z": 1, "a": {"y": [{"c": 3, "b": 2}], "x": null}, "10": "ten", "2": "two", "m": true}"#,
        )
        .expect("json"),
    ];
    for p in &payloads {
        h.event(&tenant, "progress.updated", p.clone(), None).await;
    }
    let mut verdicts = Vec::new();
    while verdicts.len() < payloads.len() {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a delivery")
            .expect("read")
            .expect("line");
        verdicts.push(serde_json::from_str::<Value>(&line).expect("verdict"));
    }
    for v in &verdicts {
        assert_eq!(v, &json!({"guideOk": true, "rawOk": true, "identical": true}));
    }
    // The receiver answers before the dispatcher records the attempt: wait for the log.
    let deadline = Instant::now() + WAIT;
    let list = loop {
        let (_, list) = h.get(&tenant, &format!("/api/webhooks/{hook}/deliveries")).await;
        let done = list
            .as_array()
            .is_some_and(|l| l.len() == payloads.len() && l.iter().all(|d| status(d) != "pending"));
        if done || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list.as_array().expect("list").len(), payloads.len());
    for d in list.as_array().expect("list") {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempts"][0]["responseBody"], "Webhook received");
    }
    let _ = child.kill().await;
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Kind::Memory).await })*
        }
        mod emulator {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Kind::Emulator).await })*
        }
    };
}

on_both_backends!(
    delivers_with_both_signatures,
    fails_twice_then_succeeds,
    retry_after_lengthens_the_delay,
    always_failing_ends_in_the_dlq,
    timeouts_and_closed_ports_are_failed_attempts,
    inactive_and_deleted_webhooks_get_nothing,
    fan_out_stays_within_the_tenant,
    duplicate_events_deliver_once,
    a_poison_message_does_not_block_its_batch,
    node_receivers_that_reserialise_verify,
);

/// A dispatcher that dies mid-batch (received, never acknowledged) loses nothing: the jobs
/// come back after the visibility timeout and are delivered by the next invocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_loses_nothing() {
    use webhooks::memory::{MemoryDeliveryLog, MemoryEventStore, MemoryQueue, MemoryWebhookStore};
    use webhooks::ports::{DeliveryLog, WebhookStore};
    let receiver = Receiver::start(Reply::Status(200)).await;
    let queue = Arc::new(MemoryQueue::new());
    let dlq = queue.create_queue("jobs-dlq", Duration::from_secs(30), None);
    // A short visibility timeout stands in for the real 180 s.
    let dlq_url = dlq.clone();
    let jobs = queue.create_queue("jobs", Duration::from_secs(1), Some((dlq, 100)));
    let events = queue.create_queue("events", Duration::from_secs(1), None);
    let store: Arc<dyn WebhookStore> = Arc::new(MemoryWebhookStore::new());
    let log: Arc<dyn DeliveryLog> = Arc::new(MemoryDeliveryLog::new());
    let tenant = unique("acme");
    for i in 0..3 {
        let now = webhooks::time::now_ms();
        let w = webhooks::domain::Webhook {
            id: webhooks::ids::new_id("wh"),
            tenant: tenant.clone(),
            url: receiver.url(&format!("/{i}")),
            events: vec!["*".into()],
            secret: None,
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.create(&w).await.expect("create");
    }
    let ingest = webhooks_ingest::Ingest {
        store: store.clone(),
        events: Arc::new(MemoryEventStore::new()),
        queue: queue.clone(),
        delivery_queue_url: jobs.clone(),
        dead_letter_url: events.clone(),
        retention_days: 1,
    };
    let body = json!({"event": "system.info", "payload": {}, "tenant": tenant}).to_string();
    queue
        .send_batch(
            &events,
            &[OutgoingMessage {
                id: "0".into(),
                body,
                reason: None,
            }],
        )
        .await
        .expect("send");
    let handler: webhooks_local::Handler = Arc::new(move |e| {
        let i = ingest.clone();
        Box::pin(async move { i.handle(e).await })
    });
    webhooks_local::poll_once(queue.as_ref(), &events, Duration::from_secs(1), &handler)
        .await
        .expect("ingest");
    // The "crashed" invocation: it takes the batch and dies before answering.
    let taken = queue.receive(&jobs, 10, Duration::from_secs(1)).await.expect("receive");
    assert_eq!(taken.len(), 3);
    assert!(
        queue
            .receive(&jobs, 10, Duration::from_millis(100))
            .await
            .expect("receive")
            .is_empty(),
        "hidden while in flight"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dispatcher = webhooks_dispatcher::Dispatcher {
        store,
        log,
        queue: queue.clone(),
        deliverer: webhooks::delivery::Deliverer::new(webhooks::ssrf::TargetPolicy::PERMISSIVE).expect("client"),
        delivery_queue_url: jobs.clone(),
        dead_letter_url: dlq_url.clone(),
        schedule: vec![1],
        timeout: Duration::from_secs(2),
        retention_days: 1,
        clock: Default::default(),
    };
    let handler: webhooks_local::Handler = Arc::new(move |e| {
        let d = dispatcher.clone();
        Box::pin(async move { d.handle(e, None).await })
    });
    let n = webhooks_local::poll_once(queue.as_ref(), &jobs, Duration::from_secs(2), &handler)
        .await
        .expect("dispatch");
    assert_eq!(n, 3, "every job came back");
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(queue.depth(&jobs), 0, "and each was acknowledged once delivered");
}
