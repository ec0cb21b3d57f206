//! The delivery pipeline end to end: `POST /api/events` or a producer's SQS message, ingest,
//! the delivery queue, the dispatcher, a real receiver on 127.0.0.1, and the delivery log.
//! Every scenario runs on the embedded backend and on the emulator's DynamoDB + SQS.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use webhooks::ports::{OutgoingMessage, Queue};
use webhooks::signing;
use webhooks_local::{Backend, QueueUrls, Runner, local_config};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer, closed_port, emulator, emulator_resources, unique};

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
    /// The runner's own handlers, for tests that drive a batch by hand.
    ingest: webhooks_ingest::Ingest,
    dispatcher: webhooks_dispatcher::Dispatcher,
    log: Arc<dyn webhooks::ports::DeliveryLog>,
    clock: webhooks::time::Clock,
    memory: Option<Arc<webhooks::memory::MemoryQueue>>,
}

/// A local runner on 127.0.0.1:0 with its pipeline running. `vars` override the environment
/// (retry schedule, timeouts). `None` when the emulator is wanted but not available.
async fn harness(kind: Kind, vars: &[(&str, &str)]) -> Option<Harness> {
    harness_with(kind, vars, true).await
}

/// The same, with the queue pollers running or not (then the test invokes the handlers).
async fn harness_with(kind: Kind, vars: &[(&str, &str)], workers: bool) -> Option<Harness> {
    let runner = runner(kind, vars).await?;
    let queue = runner.state.queue.clone();
    let urls = runner.urls.clone();
    let (ingest, dispatcher, clock, memory) = (
        runner.ingest.clone(),
        runner.dispatcher.clone(),
        runner.clock.clone(),
        runner.memory_queue.clone(),
    );
    let log = runner.state.log.clone();
    let addr = if workers {
        runner.spawn(0).await.expect("serve")
    } else {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(axum::serve(listener, webhooks_api::router(runner.state)).into_future());
        addr
    };
    Some(Harness {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        queue,
        urls,
        ingest,
        dispatcher,
        log,
        clock,
        memory,
    })
}

async fn runner(kind: Kind, vars: &[(&str, &str)]) -> Option<Runner> {
    let mut vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.push(("JWT_SECRET".into(), String::from_utf8_lossy(JWT_SECRET).into_owned()));
    let backend = match kind {
        Kind::Memory => Backend::Memory,
        Kind::Emulator => {
            let sdk = emulator().await?;
            vars.extend(emulator_resources(&sdk).await);
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
            Some("whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyEh"),
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
        "whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyEh",
        &req.body,
        req.header("x-webhook-signature").expect("sig")
    ));
    let (id, ts) = (
        req.header("webhook-id").expect("id"),
        req.header("webhook-timestamp").expect("ts"),
    );
    let expected = signing::standard_signature(
        "whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyEh",
        id,
        ts.parse().expect("ts"),
        &req.body,
    );
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
        .webhook(
            &tenant,
            &receiver.url("/"),
            json!(["task.execution.failed"]),
            Some("k-0123456789abcdef"),
        )
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

/// The receiver's first answer is a failure with `reply`'s `Retry-After`: the retry must come
/// no sooner than about 3 s later, not after the schedule's 1 s.
async fn retry_after_waits(kind: Kind, reply: Reply, what: &str) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1")]).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script(vec![reply]);
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
        "{what} waited {gap:?}, not the schedule's 1 s"
    );
}

async fn retry_after_lengthens_the_delay(kind: Kind) {
    retry_after_waits(kind, Reply::RetryAfter(503, 3), "Retry-After: 3").await;
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
    let Some(h) = harness_with(kind, &[], false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let store = h.ingest.store.clone();
    let (ingest, dispatcher) = (h.ingest.clone(), h.dispatcher.clone());
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
        .env("SECRET", "guide-secret-0123456789")
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
            Some("guide-secret-0123456789"),
        )
        .await;
    let payloads = [
        json!({"float": 1.0, "half": 0.5, "tiny": 1e-7, "huge": 1e21, "neg": -0.0, "exp": 2.5E-3}),
        serde_json::from_str::<Value>(r#"{"max": 9007199254740991, "min": -9007199254740991, "list": [1.10, 2e0], "bigfloat": 1.2345678901234567e30}"#)
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

// ---------------------------------------------------------------------------------------
// Guarantees at the edges: one test per defect of the reliability issue, each named after
// what it proves, on both backends unless it needs the embedded queue's movable clock.
// ---------------------------------------------------------------------------------------

/// The messages of a queue as Lambda would hand them to a handler, after receiving them.
async fn take(h: &Harness, url: &str, n: usize) -> Vec<aws_lambda_events::event::sqs::SqsMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n && Instant::now() < deadline {
        let got = h
            .queue
            .receive(url, n - out.len(), Duration::from_millis(500))
            .await
            .expect("receive");
        out.extend(got.iter().map(|m| webhooks_local::to_sqs_message(m, url)));
    }
    out
}

fn sqs_event(records: Vec<aws_lambda_events::event::sqs::SqsMessage>) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut e = aws_lambda_events::event::sqs::SqsEvent::default();
    e.records = records;
    e
}

/// Submits an event through the API and runs ingest on it by hand; returns its one job.
async fn one_job(h: &Harness, tenant: &str, event: &str) -> aws_lambda_events::event::sqs::SqsMessage {
    h.event(tenant, event, json!({"n": 1}), None).await;
    let events = take(h, &h.urls.events, 1).await;
    let response = h.ingest.handle(sqs_event(events)).await;
    assert!(response.batch_item_failures.is_empty());
    take(h, &h.urls.delivery, 1).await.remove(0)
}

async fn record(
    h: &Harness,
    webhook: &str,
    job: &aws_lambda_events::event::sqs::SqsMessage,
) -> webhooks::ports::Delivery {
    let job = webhooks::messages::DeliveryJob::decode(job.body.as_deref().unwrap_or_default()).expect("job");
    h.log
        .get(webhook, &job.delivery_id)
        .await
        .expect("get")
        .expect("recorded")
}

/// Defect 1: an event near the payload limit reaches all of a dozen subscribers: its jobs are
/// packed into batches by bytes (twelve 120 KiB jobs are well over one batch's 1 MiB).
async fn large_payloads_reach_every_subscriber(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    for i in 0..12 {
        h.webhook(
            &tenant,
            &receiver.url(&format!("/{i}")),
            json!(["system.info"]),
            Some("k-0123456789abcdef"),
        )
        .await;
    }
    let blob = "x".repeat(120 * 1024);
    h.event(&tenant, "system.info", json!({"blob": blob}), None).await;
    let got = receiver.wait_for(12, WAIT).await;
    let mut paths: Vec<String> = got.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 12, "every subscriber, once: {paths:?}");
    assert!(got.iter().all(|r| r.body.len() > 120 * 1024));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 12, "no job sent twice");
    assert!(
        h.drain(&h.urls.events_dlq).await.is_empty(),
        "the event was not dead-lettered"
    );
}

/// Defect 2: copies of one event id racing (two in one batch, one in a concurrent
/// invocation, each with its own timestamp) fan out once, with delivery ids that do not
/// depend on which copy won; the losers come back and are dropped as duplicates.
async fn racing_copies_of_an_event_fan_out_once(kind: Kind) {
    let Some(h) = harness_with(kind, &[], false).await else {
        return;
    };
    let tenant = unique("acme");
    let hooks = [
        h.webhook(&tenant, "http://127.0.0.1:9/a", json!(["system.info"]), None)
            .await,
        h.webhook(&tenant, "http://127.0.0.1:9/b", json!(["system.info"]), None)
            .await,
    ];
    let copy = |ts: &str| {
        json!({"event": "system.info", "payload": {"ts": ts}, "tenant": tenant, "id": "order-7", "timestamp": ts})
            .to_string()
    };
    let message = |id: &str, body: String| {
        webhooks_local::to_sqs_message(
            &webhooks::ports::QueueMessage {
                message_id: id.into(),
                receipt_handle: format!("unused-{id}"),
                body,
                receive_count: 1,
                sent_timestamp_ms: 1,
            },
            &h.urls.events,
        )
    };
    let batch_a = sqs_event(vec![
        message("a1", copy("2025-01-01T00:00:00.000Z")),
        message("a2", copy("2025-01-01T00:00:05.000Z")),
    ]);
    let batch_b = sqs_event(vec![message("b1", copy("2025-01-01T00:00:09.000Z"))]);
    let (ra, rb) = tokio::join!(h.ingest.handle(batch_a), h.ingest.handle(batch_b));
    let losers: Vec<String> = ra
        .batch_item_failures
        .iter()
        .chain(&rb.batch_item_failures)
        .map(|f| f.item_identifier.clone())
        .collect();
    // A loser either found the claim busy (reported, to come back) or, when the winner was
    // already done, a duplicate (acknowledged).
    assert!(losers.len() <= 2, "at most the two other copies come back: {losers:?}");
    let jobs: Vec<webhooks::messages::DeliveryJob> = h
        .drain(&h.urls.delivery)
        .await
        .iter()
        .map(|b| webhooks::messages::DeliveryJob::decode(b).expect("job"))
        .collect();
    assert_eq!(jobs.len(), 2, "one job per webhook, not one per copy");
    let ts = jobs[0].timestamp_ms;
    assert!(
        jobs.iter().all(|j| j.timestamp_ms == ts),
        "one winner's timestamp for all"
    );
    let mut ids: Vec<String> = jobs.iter().map(|j| j.delivery_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = hooks
        .iter()
        .map(|w| webhooks::retry::delivery_id(&tenant, "order-7", w, ts))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    // The losers come back (their visibility ran out) and find the event fanned out.
    let retry = sqs_event(vec![
        message("a2", copy("2025-01-01T00:00:05.000Z")),
        message("b1", copy("2025-01-01T00:00:09.000Z")),
    ]);
    let again = h.ingest.handle(retry).await;
    assert!(again.batch_item_failures.is_empty(), "duplicates are acknowledged");
    assert!(h.drain(&h.urls.delivery).await.is_empty(), "and make no jobs");
    // A producer retrying through the API is told it is a duplicate, with the original time.
    let (status, body) = h
        .post(
            &tenant,
            "/api/events",
            json!({"event": "system.info", "payload": {}, "id": "order-7"}),
        )
        .await;
    assert_eq!((status, body["duplicate"].clone()), (202, json!(true)), "{body}");
    assert_eq!(body["timestamp"], webhooks::time::iso_ms(ts));
    assert!(
        h.drain(&h.urls.events).await.is_empty(),
        "nothing enqueued for a known duplicate"
    );
}

/// Defects 3 and 4: attempts are counted in the delivery record, not from SQS's receive count.
/// A job received nine times (receives lost to crashes or a storage outage) still gets the
/// schedule's two attempts, an outage of the log costs no attempt and no POST, and after the
/// last attempt the job is in the DLQ and the log says failed.
async fn receives_without_an_attempt_cost_no_attempt(kind: Kind) {
    let Some(h) = harness_with(kind, &[("RETRY_SCHEDULE_SECONDS", "1")], false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.error"]), None)
        .await;
    let mut job = one_job(&h, &tenant, "system.error").await;
    job.attributes.insert("ApproximateReceiveCount".into(), "9".into());
    let first = h.dispatcher.handle(sqs_event(vec![job.clone()]), None).await;
    assert_eq!(first.batch_item_failures.len(), 1, "to be retried, not given up");
    let d = record(&h, &hook, &job).await;
    assert_eq!(
        (d.status.as_str(), d.attempts.len(), d.attempts[0].attempt),
        ("pending", 1, 1),
        "attempt 1, whatever the receive count"
    );
    assert!(d.next_attempt_at.is_some());
    // The log is down for one receive: no POST, no attempt.
    let outage = webhooks_dispatcher::Dispatcher {
        log: Arc::new(FailingGets {
            inner: h.log.clone(),
            failures: std::sync::atomic::AtomicU32::new(1),
        }),
        ..h.dispatcher.clone()
    };
    let mut again = take(&h, &h.urls.delivery, 1).await.remove(0);
    again.attributes.insert("ApproximateReceiveCount".into(), "10".into());
    let during = outage.handle(sqs_event(vec![again.clone()]), None).await;
    assert_eq!(during.batch_item_failures.len(), 1);
    assert_eq!(receiver.received().len(), 1, "no POST while the log is down");
    assert_eq!(
        record(&h, &hook, &job).await.attempts.len(),
        1,
        "and no attempt counted"
    );
    // Back to normal (the outage backed the job off; bring it back now): the second and
    // last attempt, then the DLQ.
    let receipt = again.receipt_handle.clone().unwrap_or_default();
    h.queue
        .change_visibility(&h.urls.delivery, &receipt, 0)
        .await
        .expect("release");
    let mut last = take(&h, &h.urls.delivery, 1).await.remove(0);
    last.attributes.insert("ApproximateReceiveCount".into(), "11".into());
    let done = h.dispatcher.handle(sqs_event(vec![last]), None).await;
    assert!(done.batch_item_failures.is_empty(), "moved to the DLQ, so deleted here");
    assert_eq!(receiver.received().len(), 2, "exactly the schedule's attempts");
    let d = record(&h, &hook, &job).await;
    assert_eq!((d.status.as_str(), d.attempts.len()), ("failed", 2));
    assert!(
        d.note
            .as_deref()
            .is_some_and(|n| n.starts_with("gave up after 2 attempts")),
        "{:?}",
        d.note
    );
    let dead = h.drain(&h.urls.delivery_dlq).await;
    assert_eq!(dead.len(), 1, "the job is in the DLQ");
    let dead = webhooks::messages::DeliveryJob::decode(&dead[0]).expect("job");
    assert_eq!(dead.cycle, 1, "a redrive starts a fresh cycle");
}

/// A `DeliveryLog` over a real adapter whose `get` fails a given number of times: a storage
/// outage, injected.
struct FailingGets {
    inner: Arc<dyn webhooks::ports::DeliveryLog>,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl webhooks::ports::DeliveryLog for FailingGets {
    async fn record_attempt(
        &self,
        d: &webhooks::ports::Delivery,
        a: &webhooks::ports::Attempt,
        s: webhooks::ports::DeliveryStatus,
        next: Option<u64>,
        now: u64,
    ) -> Result<bool, webhooks::ports::StoreError> {
        self.inner.record_attempt(d, a, s, next, now).await
    }
    async fn finish(
        &self,
        d: &webhooks::ports::Delivery,
        s: webhooks::ports::DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, webhooks::ports::StoreError> {
        self.inner.finish(d, s, note, now).await
    }
    async fn reopen(
        &self,
        record: &webhooks::ports::Delivery,
        to: u32,
        now: u64,
    ) -> Result<bool, webhooks::ports::StoreError> {
        self.inner.reopen(record, to, now).await
    }
    async fn get(&self, w: &str, d: &str) -> Result<Option<webhooks::ports::Delivery>, webhooks::ports::StoreError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(webhooks::ports::StoreError::Backend("injected outage".into()));
        }
        self.inner.get(w, d).await
    }
    async fn list(
        &self,
        w: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<webhooks::ports::Page<webhooks::ports::Delivery>, webhooks::ports::StoreError> {
        self.inner.list(w, limit, before).await
    }
}

/// Defect 5: a job that comes back after its delivery succeeded is not POSTed again; two
/// copies of a pending job racing may both POST, and then both POSTs are in the log.
async fn a_duplicate_job_is_not_posted_again(kind: Kind) {
    let Some(h) = harness_with(kind, &[], false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), None)
        .await;
    let job = one_job(&h, &tenant, "system.info").await;
    let body = job.body.clone().unwrap_or_default();
    assert!(
        h.dispatcher
            .handle(sqs_event(vec![job.clone()]), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(receiver.received().len(), 1);
    let copy = OutgoingMessage {
        id: "0".into(),
        body,
        reason: None,
    };
    h.queue.send_batch(&h.urls.delivery, &[copy]).await.expect("send");
    let dup = take(&h, &h.urls.delivery, 1).await;
    assert!(
        h.dispatcher
            .handle(sqs_event(dup), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(receiver.received().len(), 1, "an ended delivery is not POSTed again");
    assert_eq!(record(&h, &hook, &job).await.attempts.len(), 1);

    // Two copies of a pending job in flight at once: whatever they POST is logged.
    let slow = Receiver::start(Reply::Slow(Duration::from_millis(300), 200)).await;
    let slow_hook = h
        .webhook(&tenant, &slow.url("/slow"), json!(["system.warning"]), None)
        .await;
    let job = one_job(&h, &tenant, "system.warning").await;
    let copy = OutgoingMessage {
        id: "0".into(),
        body: job.body.clone().unwrap_or_default(),
        reason: None,
    };
    h.queue.send_batch(&h.urls.delivery, &[copy]).await.expect("send");
    let mut both = take(&h, &h.urls.delivery, 1).await;
    both.push(job.clone());
    assert!(
        h.dispatcher
            .handle(sqs_event(both), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    let posts = slow.received().len();
    let d = record(&h, &slow_hook, &job).await;
    assert_eq!(d.status.as_str(), "succeeded");
    assert_eq!(d.attempts.len(), posts, "every POST made is an attempt in the log");
}

/// Defect 6 (embedded queue and its movable clock): a receiver's `Retry-After` of 12 h is
/// capped under SQS's rule counted from the receive, so the job is neither retried early nor
/// lost; it comes back shortly before 12 h, is hidden for the rest, and then delivered.
async fn a_twelve_hour_retry_after_is_honoured_within_the_sqs_rule() {
    let h = harness(Kind::Memory, &[("RETRY_SCHEDULE_SECONDS", "5")])
        .await
        .expect("memory");
    let q = h.memory.clone().expect("embedded queue");
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script(vec![Reply::RetryAfter(503, 43_200)]);
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), None)
        .await;
    h.event(&tenant, "system.info", json!({}), None).await;
    let d = h
        .delivery_when(&tenant, &hook, |d| {
            d["attempts"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(status(&d), "pending");
    // The queue's default visibility (180 s) is where a refused visibility change leaves it.
    h.clock.advance(Duration::from_secs(200));
    q.advance(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 1, "not retried early");
    // Just under 12 h after the receive the job is visible again, and hidden for the rest.
    h.clock.advance(Duration::from_secs(43_200 - 60 - 200 + 5));
    q.advance(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 1, "not due yet: hidden again");
    assert_eq!(q.depth(&h.urls.delivery), 1, "and not lost");
    h.clock.advance(Duration::from_secs(120));
    q.advance(Duration::ZERO);
    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "succeeded").await;
    assert_eq!(d["attempts"].as_array().expect("attempts").len(), 2);
}

/// Defect 6: `Retry-After` as an HTTP date is honoured too.
async fn retry_after_as_an_http_date_is_honoured(kind: Kind) {
    retry_after_waits(kind, Reply::RetryAfterDate(503, 4), "a date 4 s ahead").await;
}

/// Defect 7: an attempt never outlives the invocation's deadline, whatever
/// DELIVERY_TIMEOUT_SECONDS says: it is cut short and recorded; with too little time left it
/// is not started, and the job goes straight back to the queue.
async fn an_attempt_never_outlives_the_deadline(kind: Kind) {
    let vars = [("RETRY_SCHEDULE_SECONDS", "1"), ("DELIVERY_TIMEOUT_SECONDS", "15")];
    let Some(h) = harness_with(kind, &vars, false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Slow(Duration::from_secs(10), 200)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), None)
        .await;
    let job = one_job(&h, &tenant, "system.info").await;
    let deadline = std::time::Instant::now() + Duration::from_millis(3500);
    let response = h.dispatcher.handle(sqs_event(vec![job.clone()]), Some(deadline)).await;
    assert!(
        std::time::Instant::now() < deadline,
        "the batch returned before its deadline"
    );
    assert_eq!(response.batch_item_failures.len(), 1);
    let d = record(&h, &hook, &job).await;
    assert_eq!(d.attempts.len(), 1);
    assert!(
        d.attempts[0].message.starts_with("Timed out after 1."),
        "{}",
        d.attempts[0].message
    );
    // 2.5 s left is under the 2 s reserve plus the 1 s minimum: no attempt is started.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = take(&h, &h.urls.delivery, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    let response = h.dispatcher.handle(sqs_event(again), Some(deadline)).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(receiver.received().len(), 1, "no second POST");
    assert_eq!(record(&h, &hook, &job).await.attempts.len(), 1);
    assert_eq!(
        take(&h, &h.urls.delivery, 1).await.len(),
        1,
        "released at once, not hidden"
    );
}

/// Defect 9: the local runner, sent SIGTERM mid-delivery, stops receiving, lets the deliveries
/// in flight finish and be recorded, and exits 0.
async fn sigterm_lets_deliveries_in_flight_finish(kind: Kind) {
    let mut env: Vec<(String, String)> = vec![
        ("JWT_SECRET".into(), String::from_utf8_lossy(JWT_SECRET).into_owned()),
        ("PORT".into(), "0".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let mut check: Option<webhooks::dynamo::DynamoDeliveryLog> = None;
    if let Kind::Emulator = kind {
        let Some(sdk) = emulator().await else { return };
        let resources = emulator_resources(&sdk).await;
        let deliveries_table = resources
            .iter()
            .find(|(k, _)| k == "DELIVERIES_TABLE")
            .map(|(_, v)| v.clone())
            .expect("deliveries table");
        check = Some(webhooks::dynamo::DynamoDeliveryLog::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            deliveries_table,
        ));
        env.extend(resources);
    } else {
        for k in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"] {
            env.push((k.into(), String::new()));
        }
    }
    let receiver = Receiver::start(Reply::Slow(Duration::from_secs(2), 200)).await;
    let mut child = tokio::process::Command::new(webhooks_tests::runtime_api::binary("webhooks-local", "debug"))
        .envs(env)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("webhooks-local is built (make test builds every binary)");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(WAIT, out.next_line())
        .await
        .expect("banner")
        .expect("read")
        .expect("line");
    let addr = first.rsplit("http://").next().expect("address").trim().to_string();
    let h = Harness {
        base: format!("http://{addr}"),
        ..harness_with(Kind::Memory, &[], false).await.expect("a client")
    };
    let tenant = unique("acme");
    let hooks = [
        h.webhook(&tenant, &receiver.url("/1"), json!(["system.info"]), None)
            .await,
        h.webhook(&tenant, &receiver.url("/2"), json!(["system.info"]), None)
            .await,
    ];
    h.event(&tenant, "system.info", json!({}), None).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2, "both deliveries in flight");
    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "exit 0, got {status:?}");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = out.next_line().await {
        rest.push(line);
    }
    assert!(
        rest.iter()
            .any(|l| l.contains("deliveries in flight finished and were recorded")),
        "{rest:?}"
    );
    if let Some(log) = check {
        for hook in &hooks {
            let page = webhooks::ports::DeliveryLog::list(&log, hook, 10, None)
                .await
                .expect("list");
            assert_eq!(page.items.len(), 1);
            assert_eq!(page.items[0].status.as_str(), "succeeded", "recorded before the exit");
        }
    }
    assert_eq!(receiver.received().len(), 2, "nothing sent twice");
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
    large_payloads_reach_every_subscriber,
    racing_copies_of_an_event_fan_out_once,
    receives_without_an_attempt_cost_no_attempt,
    a_duplicate_job_is_not_posted_again,
    retry_after_as_an_http_date_is_honoured,
    an_attempt_never_outlives_the_deadline,
    sigterm_lets_deliveries_in_flight_finish,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_twelve_hour_retry_after_is_honoured_within_the_sqs_rule() {
    a_twelve_hour_retry_after_is_honoured_within_the_sqs_rule().await;
}

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
        events_queue_url: events.clone(),
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
