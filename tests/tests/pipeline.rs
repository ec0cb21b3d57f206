//! The delivery pipeline end to end: `POST /api/events` or a producer's SQS message, ingest,
//! the delivery queue, the dispatcher, a real receiver on 127.0.0.1, and the delivery log.
//! Every scenario runs on the in-memory backend, on the durable one (SQLite in a fresh data
//! directory) and on the emulator's DynamoDB + SQS.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use webhooks::ports::{OutgoingMessage, Queue};
use webhooks::signing;
use webhooks_local::{Backend, QueueUrls, Runner, local_config};
use webhooks_tests::{
    JWT_SECRET, Receiver, Reply, TempDir, bearer, closed_port, emulator, emulator_resources, standard_webhooks_verify,
    unique,
};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Durable,
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
    sqlite: Option<Arc<webhooks::sqlite::SqliteQueue>>,
    /// The durable backend's data directory, removed when the harness goes.
    _data: Option<TempDir>,
    /// The emulator's tables and queues (`WEBHOOKS_TABLE` … `DELIVERY_DLQ_URL`), for tests
    /// that start the `webhooks-local` binary on them; empty on the embedded backends.
    env: Vec<(String, String)>,
}

/// A local runner on 127.0.0.1:0 with its pipeline running. `vars` override the environment
/// (retry schedule, timeouts). `None` when the emulator is wanted but not available.
async fn harness(kind: Kind, vars: &[(&str, &str)]) -> Option<Harness> {
    harness_with(kind, vars, true).await
}

/// The same, with the queue pollers running or not (then the test invokes the handlers).
async fn harness_with(kind: Kind, vars: &[(&str, &str)], workers: bool) -> Option<Harness> {
    let (runner, data, env) = runner(kind, vars).await?;
    let queue = runner.state.queue.clone();
    let urls = runner.urls.clone();
    let (ingest, dispatcher, clock, memory) = (
        runner.ingest.clone(),
        runner.dispatcher.clone(),
        runner.clock.clone(),
        runner.memory_queue.clone(),
    );
    let sqlite = runner.sqlite_queue.clone();
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
        sqlite,
        _data: data,
        env,
    })
}

type Built = (Runner, Option<TempDir>, Vec<(String, String)>);

async fn runner(kind: Kind, vars: &[(&str, &str)]) -> Option<Built> {
    let mut vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.push(("JWT_SECRET".into(), String::from_utf8_lossy(JWT_SECRET).into_owned()));
    let mut data = None;
    let mut env = Vec::new();
    let backend = match kind {
        Kind::Memory => Backend::Memory,
        Kind::Durable => {
            let dir = TempDir::new("pipeline-data");
            let backend = Backend::Sqlite(dir.path().to_path_buf());
            data = Some(dir);
            backend
        }
        Kind::Emulator => {
            let sdk = emulator().await?;
            env = emulator_resources(&sdk).await;
            vars.extend(env.clone());
            Backend::Aws(Box::new(sdk))
        }
    };
    let config = local_config(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).expect("config");
    Some((Runner::new(&config, JWT_SECRET, &backend).expect("runner"), data, env))
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

    /// A GET that also returns the `Link: <…>; rel="next"` target, if any.
    async fn get_page(&self, tenant: &str, path: &str) -> (u16, Value, Option<String>) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", bearer(tenant))
            .send()
            .await
            .expect("send");
        let status = res.status().as_u16();
        let next = res
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix('<'))
            .and_then(|v| v.split_once(">; rel=\"next\""))
            .map(|(target, _)| target.to_string());
        (status, res.json().await.unwrap_or(Value::Null), next)
    }

    /// Every item of a paginated listing, following the Link header (bounded).
    async fn walk(&self, tenant: &str, first: &str) -> (Vec<Value>, usize) {
        let (mut items, mut pages, mut path) = (Vec::new(), 0, Some(first.to_string()));
        while let Some(p) = path.take() {
            pages += 1;
            assert!(pages <= 50, "the listing never ended");
            let (status, body, next) = self.get_page(tenant, &p).await;
            assert_eq!(status, 200, "{p}: {body}");
            items.extend(body.as_array().expect("a page").iter().cloned());
            path = next;
        }
        (items, pages)
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
            delay_s: 0,
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
            delay_s: 0,
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

/// A new tenant's webhook for `system.info` to a receiver answering `reply`, and one job of it
/// (taken from the queue, not handled): the receiver, the tenant, the webhook id and the job.
async fn webhook_and_job(
    h: &Harness,
    reply: Reply,
) -> (Receiver, String, String, aws_lambda_events::event::sqs::SqsMessage) {
    let receiver = Receiver::start(reply).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), None)
        .await;
    let job = one_job(h, &tenant, "system.info").await;
    (receiver, tenant, hook, job)
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

/// Issue 13: ingest renders the delivery body once per event and writes it into each job
/// (format 2); jobs written by the builds before (format 1: the payload, the body built at
/// each attempt) are still in the queues after a deploy and still delivered. Both reach their
/// receivers with the same bytes, which are `JSON.stringify`'s and verify under both schemes.
async fn jobs_of_both_formats_deliver_the_same_signed_bytes(kind: Kind) {
    let Some(h) = harness_with(kind, &[], false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let secret = "whsec_c2VjcmV0LWtleS1vZi0yNC1ieXRlcyEh";
    let hooks = [
        h.webhook(&tenant, &receiver.url("/two"), json!(["system.info"]), Some(secret))
            .await,
        h.webhook(&tenant, &receiver.url("/one"), json!(["system.info"]), Some(secret))
            .await,
    ];
    // What JSON.stringify changes: 1.0 and 1e21, integer-like keys moved first, escapes.
    let payload: Value =
        serde_json::from_str(r#"{"id":"1","n":1.0,"big":1e21,"10":"a","2":"b","s":"naïve \"q\"\n\t\u2028"}"#)
            .expect("json");
    h.event(&tenant, "system.info", payload.clone(), Some("both-formats"))
        .await;
    let events = take(&h, &h.urls.events, 1).await;
    assert!(h.ingest.handle(sqs_event(events)).await.batch_item_failures.is_empty());
    let mut jobs = take(&h, &h.urls.delivery, 2).await;
    let decoded: Vec<webhooks::messages::DeliveryJob> = jobs
        .iter()
        .map(|m| webhooks::messages::DeliveryJob::decode(m.body.as_deref().unwrap_or_default()).expect("job"))
        .collect();
    let expected = signing::delivery_body(
        "system.info",
        &webhooks::time::iso_ms(decoded[0].timestamp_ms),
        &payload,
    );
    assert!(
        String::from_utf8_lossy(&expected).contains(r#""payload":{"2":"b","10":"a","id":"1","n":1,"big":1e+21,"#),
        "{}",
        String::from_utf8_lossy(&expected)
    );
    for (m, job) in jobs.iter().zip(&decoded) {
        let (header, body) = m
            .body
            .as_deref()
            .unwrap_or_default()
            .split_once('\n')
            .expect("format 2");
        assert!(header.starts_with(r#"{"v":2,"#), "{header}");
        assert_eq!(
            body.as_bytes(),
            expected.as_slice(),
            "ingest wrote the body, rendered once"
        );
        assert_eq!(job.body, webhooks::messages::JobBody::Rendered(expected.clone().into()));
    }
    // The job for /one, rewritten as format 1 wrote it (the old `#[derive(Serialize)]`).
    let i = decoded
        .iter()
        .position(|j| j.webhook_id == hooks[1])
        .expect("job for /one");
    let old = &decoded[i];
    let format1 = format!(
        r#"{{"deliveryId":"{}","webhookId":"{}","tenant":"{}","eventId":"both-formats","event":"system.info","timestampMs":{},"cycle":0,"payload":{}}}"#,
        old.delivery_id,
        old.webhook_id,
        tenant,
        old.timestamp_ms,
        webhooks::jsjson::to_string(&payload)
    );
    jobs[i].body = Some(format1);
    assert!(
        h.dispatcher
            .handle(sqs_event(jobs), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for req in &got {
        assert_eq!(req.body.as_ref(), expected.as_slice(), "{}: the same bytes", req.path);
        assert!(signing::verify_guide_signature(
            secret,
            &req.body,
            req.header("x-webhook-signature").expect("sig")
        ));
        let (id, ts) = (
            req.header("webhook-id").expect("id"),
            req.header("webhook-timestamp").expect("ts"),
        );
        assert!(signing::verify_standard_signature(
            secret,
            id,
            ts,
            &req.body,
            req.header("webhook-signature").expect("sig")
        ));
        let job = decoded.iter().find(|j| j.delivery_id == id).expect("its job");
        let d = h
            .log
            .get(&job.webhook_id, &job.delivery_id)
            .await
            .expect("get")
            .expect("recorded");
        assert_eq!(d.status.as_str(), "succeeded", "{}", req.path);
    }
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/one", "/two"]);
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
    let all = receiver.received();
    if matches!(kind, Kind::Emulator) {
        // moto's ReceiveMessage checks a message's visibility and marks it received without a
        // lock (moto/sqs/models.py, `receive_message`), so two of the runner's four pollers can
        // both get one job, more often with 120 KiB messages; two copies of one job in flight
        // may both POST (README, "at least once"). A second fan-out would repeat all 12 jobs or
        // a whole batch of them (4 or 8), so: at most one repeat per poller but the first, each
        // the same delivery (webhook-id) with the same bytes.
        let mut first: std::collections::HashMap<&str, &[u8]> = Default::default();
        let mut repeats = 0;
        for r in &all {
            let id = r.header("webhook-id").expect("webhook-id");
            match first.get(id) {
                Some(body) => {
                    repeats += 1;
                    assert_eq!(*body, &r.body[..], "a repeat of {id} has other bytes");
                }
                None => {
                    first.insert(id, &r.body[..]);
                }
            }
        }
        assert_eq!(first.len(), 12, "twelve deliveries");
        assert!(
            repeats < 4,
            "{repeats} jobs POSTed twice: more than a receive race explains"
        );
    } else {
        assert_eq!(all.len(), 12, "no job sent twice");
    }
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
        delay_s: 0,
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
        delay_s: 0,
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
    let mut check: Option<Box<dyn webhooks::ports::DeliveryLog>> = None;
    let data = TempDir::new("sigterm-data");
    if let Kind::Emulator = kind {
        let Some(sdk) = emulator().await else { return };
        let resources = emulator_resources(&sdk).await;
        let deliveries_table = resources
            .iter()
            .find(|(k, _)| k == "DELIVERIES_TABLE")
            .map(|(_, v)| v.clone())
            .expect("deliveries table");
        check = Some(Box::new(webhooks::dynamo::DynamoDeliveryLog::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            deliveries_table,
        )));
        env.extend(resources);
    } else {
        for k in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"] {
            env.push((k.into(), String::new()));
        }
        match kind {
            Kind::Durable => env.push(("DATA_DIR".into(), data.path().display().to_string())),
            _ => env.push(("BACKEND".into(), "memory".into())),
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
    if let Kind::Durable = kind {
        // The process is gone: its log is read from its data directory.
        let db = webhooks::sqlite::Db::open(data.path()).expect("reopen the data directory");
        check = Some(Box::new(webhooks::sqlite::SqliteDeliveryLog::new(db)));
    }
    if let Some(log) = check {
        for hook in &hooks {
            let page = log.list(hook, 10, None).await.expect("list");
            assert_eq!(page.items.len(), 1);
            assert_eq!(page.items[0].status.as_str(), "succeeded", "recorded before the exit");
        }
    }
    assert_eq!(receiver.received().len(), 2, "nothing sent twice");
}

// ---------------------------------------------------------------------------------------
// Events kept, resend, recover, redrive (issue 10).
// ---------------------------------------------------------------------------------------

/// Waits (bounded) until `GET /api/events/{id}` satisfies `done`; returns it.
async fn event_when(h: &Harness, tenant: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, e) = h.get(tenant, &format!("/api/events/{id}")).await;
        if code == 200 && done(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "event never reached the expected state: {code} {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Percent-encodes everything but ASCII letters and digits (a path segment).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn all_succeeded(e: &Value) -> bool {
    e["status"] == "fannedOut"
        && e["deliveries"]
            .as_array()
            .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["status"] == "succeeded"))
}

/// Accepted events are kept: `GET /api/events/{id}` shows the payload and each delivery's
/// id and status; `GET /api/events` lists them newest first, filtered, page by page through
/// the Link header; another tenant gets 404 and an empty listing.
async fn events_are_kept_and_listed(kind: Kind) {
    let Some(h) = harness(kind, &[]).await else { return };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let hooks = [
        h.webhook(&tenant, &receiver.url("/1"), json!(["system.*"]), None).await,
        h.webhook(&tenant, &receiver.url("/2"), json!(["system.info"]), None)
            .await,
    ];
    let kinds = [
        "system.info",
        "system.error",
        "system.info",
        "system.error",
        "system.info",
    ];
    let mut ids = Vec::new();
    for (i, event) in kinds.iter().enumerate() {
        // Ids with characters a URL must escape.
        let id = format!("order {i}/#é");
        h.event(
            &tenant,
            event,
            json!({"n": i, "big": 9_007_199_254_740_991u64}),
            Some(&id),
        )
        .await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let path = |id: &str| format!("/api/events/{}", escape(id));
    let e = event_when(&h, &tenant, &escape(&ids[0]), all_succeeded).await;
    assert_eq!(e["id"], ids[0]);
    assert_eq!(e["event"], "system.info");
    // The payload as it was delivered: rendered once, as JSON.stringify prints it (the largest
    // integer JavaScript keeps exactly; a bigger one is refused with 422, see first_hour.rs).
    assert_eq!(e["payload"], json!({"n": 0, "big": 9_007_199_254_740_991u64}));
    assert_eq!(e["fanOut"], 2);
    let mut delivered: Vec<(String, String)> = e["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            (
                d["webhookId"].as_str().expect("webhook").to_string(),
                d["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    delivered.sort();
    let mut want: Vec<String> = hooks.to_vec();
    want.sort();
    assert_eq!(delivered.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(), want);
    // The ids are the ones the receiver saw as webhook-id.
    receiver.wait_for(8, WAIT).await;
    for (_, id) in &delivered {
        assert!(
            receiver
                .received()
                .iter()
                .any(|r| r.header("webhook-id") == Some(id.as_str()))
        );
    }
    let e = event_when(&h, &tenant, &escape(&ids[1]), all_succeeded).await;
    assert_eq!(e["fanOut"], 1, "system.error goes to the first webhook only");

    let (listed, pages) = h.walk(&tenant, "/api/events?limit=2").await;
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(
        listed.iter().map(|e| e["id"].as_str().expect("id")).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(pages, 3, "5 events, 2 a page");
    let since = listed[1]["timestamp"].as_str().expect("timestamp").to_string();
    let (errors, _) = h
        .walk(
            &tenant,
            &format!("/api/events?limit=1&event=system.error&since={since}"),
        )
        .await;
    assert_eq!(
        errors.iter().map(|e| e["id"].as_str().expect("id")).collect::<Vec<_>>(),
        vec![ids[3].as_str()],
        "filters hold across pages"
    );
    for bad in [
        "/api/events?since=yesterday",
        "/api/events?event=nope",
        "/api/events?cursor=x",
        "/api/events?limit=0",
    ] {
        let (code, body) = h.get(&tenant, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["errors"][0]["field"].is_string(), "{body}");
    }
    let other = unique("other");
    let (code, _) = h.get(&other, &path(&ids[0])).await;
    assert_eq!(code, 404, "another tenant's event");
    let (code, list) = h.get(&other, "/api/events").await;
    assert_eq!((code, list), (200, json!([])));
    let (code, _) = h.get(&tenant, "/api/events/never-sent").await;
    assert_eq!(code, 404);
}

/// Resend: a succeeded delivery is sent again with the same id and the same bytes (the
/// receiver sees the webhook-id twice) and a failed one, dead-lettered, gets a fresh cycle
/// and succeeds; each resend's attempts are appended to the same record.
async fn resend_delivers_the_same_delivery_again(kind: Kind) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1")]).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    let down = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &ok.url("/"), json!(["system.info"]), Some("s3cret-0123456789"))
        .await;
    let broken = h.webhook(&tenant, &down.url("/"), json!(["system.info"]), None).await;
    h.event(&tenant, "system.info", json!({"n": 1}), None).await;
    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "succeeded").await;
    let id = d["id"].as_str().expect("id").to_string();
    let (code, body) = h
        .post(
            &tenant,
            &format!("/api/webhooks/{hook}/deliveries/{id}/resend"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["cycle"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    let got = ok.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(
        got[1].header("webhook-id"),
        Some(id.as_str()),
        "the receiver can tell it is the same"
    );
    assert_eq!(got[1].header("x-webhook-id"), Some(id.as_str()));
    assert_eq!(got[0].body, got[1].body, "the same body");
    assert!(signing::verify_guide_signature(
        "s3cret-0123456789",
        &got[1].body,
        got[1].header("x-webhook-signature").expect("signed")
    ));
    let d = h
        .delivery_when(&tenant, &hook, |d| {
            status(d) == "succeeded" && d["attempts"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(
        d["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["attempt"].clone())
            .collect::<Vec<_>>(),
        vec![json!(1), json!(2)],
        "appended to the log"
    );

    // The failed delivery: two attempts, dead-lettered; the receiver is fixed; resend.
    let f = h.delivery_when(&tenant, &broken, |d| status(d) == "failed").await;
    let failed_id = f["id"].as_str().expect("id").to_string();
    down.set_default(Reply::Status(200));
    let (code, body) = h
        .post(
            &tenant,
            &format!("/api/webhooks/{broken}/deliveries/{failed_id}/resend"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let f = h.delivery_when(&tenant, &broken, |d| status(d) == "succeeded").await;
    assert_eq!(
        f["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["statusCode"].clone())
            .collect::<Vec<_>>(),
        vec![json!(500), json!(500), json!(200)]
    );
    assert!(f.get("note").is_none(), "the failure note is gone with the new cycle");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(down.received().len(), 3, "one POST for the resend");
    assert_eq!(ok.received().len(), 2);
}

/// Resend refuses, with a clear problem, what it cannot do: a delivery still being attempted
/// (409), an inactive webhook (409), an unknown delivery or another tenant's (404).
async fn resend_refuses_what_it_cannot_do(kind: Kind) {
    let Some(h) = harness_with(kind, &[("RETRY_SCHEDULE_SECONDS", "600")], false).await else {
        return;
    };
    let (receiver, tenant, hook, job) = webhook_and_job(&h, Reply::Status(503)).await;
    let response = h.dispatcher.handle(sqs_event(vec![job.clone()]), None).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a retry is scheduled: the job parked for 600 s, the received message done with"
    );
    let d = record(&h, &hook, &job).await;
    assert_eq!(d.status.as_str(), "pending");
    let resend = format!("/api/webhooks/{hook}/deliveries/{}/resend", d.id);
    let (code, body) = h.post(&tenant, &resend, json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("still being attempted")
    );
    let (code, _) = h.post(&unique("other"), &resend, json!({})).await;
    assert_eq!(code, 404, "another tenant");
    let (code, _) = h
        .post(
            &tenant,
            &format!("/api/webhooks/{hook}/deliveries/dl_01m8hw0000000000000000000a/resend"),
            json!({}),
        )
        .await;
    assert_eq!(code, 404);
    // Ended (skipped: the webhook was paused), and the webhook still paused: 409.
    let res = h
        .http
        .put(format!("{}/api/webhooks/{hook}", h.base))
        .header("authorization", bearer(&tenant))
        .json(&json!({"active": false}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    // The retry is due (the pipeline's clock moves; SQS's is the emulator's own, so the same
    // received message is handled again rather than waiting 600 s, plus up to 25 % jitter, for it to come back).
    h.clock.advance(Duration::from_secs(600 + 150 + 1));
    let response = h.dispatcher.handle(sqs_event(vec![job.clone()]), None).await;
    assert!(response.batch_item_failures.is_empty());
    h.queue
        .delete(&h.urls.delivery, job.receipt_handle.as_deref().expect("receipt"))
        .await
        .expect("delete");
    assert_eq!(record(&h, &hook, &job).await.status.as_str(), "skipped");
    let (code, body) = h.post(&tenant, &resend, json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["detail"].as_str().expect("detail").contains("inactive"));
    // Only the parked retry of the first attempt is in the queue (visible once the clock moved),
    // no resend job.
    let first = webhooks::messages::DeliveryJob::decode(job.body.as_deref().expect("body")).expect("job");
    assert!(
        h.drain(&h.urls.delivery).await.iter().all(|b| {
            let queued = webhooks::messages::DeliveryJob::decode(b).expect("job");
            (queued.delivery_id.as_str(), queued.cycle) == (first.delivery_id.as_str(), first.cycle)
        }),
        "nothing was queued"
    );

    // A payload-less (resend or recover) job whose event has expired sends nothing and says why.
    let res = h
        .http
        .put(format!("{}/api/webhooks/{hook}", h.base))
        .header("authorization", bearer(&tenant))
        .json(&json!({"active": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let orphan = webhooks::messages::DeliveryJob {
        delivery_id: webhooks::retry::delivery_id(&tenant, "expired", &hook, 5_000),
        webhook_id: hook.clone(),
        tenant: webhooks::messages::Tenant::parse(&tenant).expect("tenant"),
        event_id: webhooks::messages::EventId::parse("expired").expect("id"),
        event: "system.info".into(),
        timestamp_ms: 5_000,
        cycle: 1,
        body: webhooks::messages::JobBody::Stored,
        not_before_ms: None,
    };
    let mut message = job.clone();
    message.body = Some(orphan.encode());
    assert!(
        h.dispatcher
            .handle(sqs_event(vec![message]), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    let d = h
        .log
        .get(&hook, &orphan.delivery_id)
        .await
        .expect("get")
        .expect("recorded");
    assert_eq!(
        (d.status.as_str(), d.note.as_deref()),
        (
            "skipped",
            Some("the event is no longer stored (DELIVERY_RETENTION_DAYS)")
        )
    );
    assert_eq!(receiver.received().len(), 1, "only the first attempt was ever POSTed");
}

/// Waits (bounded) until `n` of the webhook's deliveries have `want` as status; returns them.
async fn counted(h: &Harness, tenant: &str, hook: &str, want: &str, n: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, list) = h.get(tenant, &format!("/api/webhooks/{hook}/deliveries")).await;
        let got = list
            .as_array()
            .map_or(0, |l| l.iter().filter(|d| status(d) == want).count());
        if got == n {
            return list;
        }
        assert!(Instant::now() < deadline, "never {n} {want}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Recover: a receiver down for a while, then `recover` with a small page size. Every failed
/// delivery of the window is delivered again exactly once (one extra POST each), over several
/// pages handed on through the delivery queue; `until` bounds the window; a failure before
/// `since` and another webhook's failures are left alone.
async fn recover_redelivers_each_failed_delivery_once(kind: Kind) {
    // The breaker kept shut: this scenario wants every delivery attempted until it fails.
    let vars = [
        ("RETRY_SCHEDULE_SECONDS", "1"),
        ("RECOVER_PAGE_SIZE", "2"),
        ("BREAKER_FAILURES", "1000"),
    ];
    let Some(h) = harness(kind, &vars).await else { return };
    let receiver = Receiver::start(Reply::Status(503)).await;
    let other = Receiver::start(Reply::Status(503)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), None)
        .await;
    let untouched = h.webhook(&tenant, &other.url("/"), json!(["system.info"]), None).await;
    let old = h
        .event(&tenant, "system.info", json!({"n": 0}), Some("before-window"))
        .await;
    counted(&h, &tenant, &hook, "failed", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = webhooks::time::iso_ms(webhooks::time::now_ms());
    for i in 1..=5 {
        h.event(&tenant, "system.info", json!({"n": i}), Some(&format!("in-window-{i}")))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counted(&h, &tenant, &hook, "failed", 6).await;
    counted(&h, &tenant, &untouched, "failed", 6).await;
    assert_eq!(receiver.received().len(), 12, "two attempts each");
    receiver.set_default(Reply::Status(200));
    // The 4th event's time bounds the first recover; the 5th is recovered by a second one.
    let (_, fourth) = h.get(&tenant, "/api/events/in-window-4").await;
    let until = fourth["timestamp"].as_str().expect("timestamp").to_string();
    let recover = format!("/api/webhooks/{hook}/recover");
    let (code, body) = h.post(&tenant, &recover, json!({"since": since, "until": until})).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["queued"], 2, "the first page, in the request: {body}");
    assert_eq!(body["complete"], false, "the rest goes on page by page: {body}");
    counted(&h, &tenant, &hook, "succeeded", 4).await;
    let (code, body) = h.post(&tenant, &recover, json!({"since": since})).await;
    assert_eq!(code, 202, "{body}");
    counted(&h, &tenant, &hook, "succeeded", 5).await;
    // Let any stray continuation or duplicate job run out before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = counted(&h, &tenant, &hook, "failed", 1).await;
    for d in list.as_array().expect("list") {
        let id = d["id"].as_str().expect("id");
        let posts = receiver
            .received()
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id))
            .count();
        if d["eventId"] == old {
            assert_eq!((status(d), posts), ("failed", 2), "before the window: left alone");
        } else {
            assert_eq!((status(d), posts), ("succeeded", 3), "exactly one extra POST: {d}");
            assert_eq!(d["attempts"].as_array().expect("attempts").len(), 3);
        }
    }
    assert_eq!(receiver.received().len(), 12 + 5);
    assert_eq!(
        other.received().len(),
        12,
        "another webhook's failures are not recovered"
    );
    // Bad input: a clear problem naming the field; another tenant: 404.
    let (code, body) = h.post(&tenant, &recover, json!({"since": "yesterday"})).await;
    assert_eq!(
        (code, body["errors"][0]["field"].as_str()),
        (422, Some("since")),
        "{body}"
    );
    let (code, _) = h.post(&unique("other"), &recover, json!({"since": since})).await;
    assert_eq!(code, 404);
}

/// Redrive: the delivery DLQ moved back (by `webhooks_local::redrive` on the embedded queues,
/// by the `webhooks-local redrive` command on the emulator's SQS) starts a fresh cycle for a
/// delivery that failed, and drops without a POST the job of one that was resent meanwhile;
/// the log stays true (every POST an attempt, the final statuses right).
async fn redrive_moves_the_dlq_back_and_the_log_stays_true(kind: Kind) {
    let Some(h) = harness(kind, &[("RETRY_SCHEDULE_SECONDS", "1")]).await else {
        return;
    };
    let a = Receiver::start(Reply::Status(500)).await;
    let b = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    let hook_a = h.webhook(&tenant, &a.url("/"), json!(["system.info"]), None).await;
    let hook_b = h.webhook(&tenant, &b.url("/"), json!(["system.info"]), None).await;
    h.event(&tenant, "system.info", json!({"n": 1}), None).await;
    h.delivery_when(&tenant, &hook_a, |d| status(d) == "failed").await;
    let failed_b = h.delivery_when(&tenant, &hook_b, |d| status(d) == "failed").await;
    // Both receivers are fixed; B's delivery is resent first, A's waits for the redrive.
    a.set_default(Reply::Status(200));
    b.set_default(Reply::Status(200));
    let resend = format!(
        "/api/webhooks/{hook_b}/deliveries/{}/resend",
        failed_b["id"].as_str().expect("id")
    );
    assert_eq!(h.post(&tenant, &resend, json!({})).await.0, 202);
    h.delivery_when(&tenant, &hook_b, |d| status(d) == "succeeded").await;
    let moved = match kind {
        Kind::Memory | Kind::Durable => {
            webhooks_local::redrive(h.queue.as_ref(), &h.urls.delivery_dlq, &h.urls.delivery, 100)
                .await
                .expect("redrive")
        }
        Kind::Emulator => {
            let out = tokio::process::Command::new(webhooks_tests::runtime_api::binary("webhooks-local", "debug"))
                .arg("redrive")
                .envs(h.env.clone())
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("webhooks-local is built (make test builds every binary)");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            text.split_whitespace()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {text}"))
        }
    };
    assert_eq!(moved, 2, "both dead-lettered jobs moved back");
    let d = h.delivery_when(&tenant, &hook_a, |d| status(d) == "succeeded").await;
    assert_eq!(
        d["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["statusCode"].clone())
            .collect::<Vec<_>>(),
        vec![json!(500), json!(500), json!(200)],
        "a fresh cycle after the redrive, appended"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.received().len(), 3);
    assert_eq!(
        b.received().len(),
        3,
        "B's redriven job was dropped: it had been resent"
    );
    let (_, list) = h.get(&tenant, &format!("/api/webhooks/{hook_b}/deliveries")).await;
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(
        list[0]["attempts"].as_array().expect("attempts").len(),
        3,
        "every POST logged, none invented"
    );
    assert!(h.drain(&h.urls.delivery_dlq).await.is_empty(), "the DLQ is empty");
}

/// Secret rotation, verified by the official `standardwebhooks` library (Python, from PyPI) as
/// a receiver would: a delivery attempted before the rotation is signed with the old secret
/// only; its retry during the overlap with both (each verifies on its own) and the guide's
/// `X-Webhook-Signature` still with the old one; after the overlap only the new secret signs.
async fn rotation_signs_with_every_valid_secret(kind: Kind) {
    let Some(h) = harness_with(kind, &[("RETRY_SCHEDULE_SECONDS", "1")], false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script(vec![Reply::Status(500)]);
    let tenant = unique("acme");
    // Long enough for any minimum a registration may ask of a chosen secret.
    let old = "old-secret-chosen-by-the-user-0123";
    let hook = h
        .webhook(&tenant, &receiver.url("/"), json!(["system.info"]), Some(old))
        .await;
    let job = one_job(&h, &tenant, "system.info").await;
    let first = h.dispatcher.handle(sqs_event(vec![job.clone()]), None).await;
    assert_eq!(first.batch_item_failures.len(), 1, "500: to be retried");
    let before = receiver.received()[0].clone();
    assert_eq!(
        before.header("webhook-signature").map(|s| s.split(' ').count()),
        Some(1),
        "one secret, one signature"
    );

    let (code, rotated) = h
        .post(
            &tenant,
            &format!("/api/webhooks/{hook}/rotate-secret"),
            json!({"overlapSeconds": 3600}),
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    let new = rotated["secret"]
        .as_str()
        .expect("the new secret, shown once")
        .to_string();
    assert!(new.starts_with("whsec_") && new != old);
    assert_eq!(rotated["previousSecrets"].as_array().map(Vec::len), Some(1));
    let (_, shown) = h.get(&tenant, &format!("/api/webhooks/{hook}")).await;
    assert!(shown.get("secret").is_none(), "GET never shows a secret: {shown}");
    assert_eq!(shown["previousSecrets"], rotated["previousSecrets"]);

    // The retry of the delivery made before the rotation, now due.
    h.clock.advance(Duration::from_secs(2));
    let receipt = job.receipt_handle.clone().unwrap_or_default();
    h.queue
        .change_visibility(&h.urls.delivery, &receipt, 0)
        .await
        .expect("release");
    let retry = take(&h, &h.urls.delivery, 1).await;
    assert!(
        h.dispatcher
            .handle(sqs_event(retry), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    let during = receiver.received()[1].clone();
    assert_eq!(
        during.header("x-webhook-id"),
        before.header("x-webhook-id"),
        "the same delivery"
    );
    assert_eq!(
        during.header("webhook-signature").map(|s| s.split(' ').count()),
        Some(2),
        "one v1 signature per valid secret"
    );
    let guide = during.header("x-webhook-signature").expect("guide signature");
    assert!(
        signing::verify_guide_signature(old, &during.body, guide),
        "the guide's header: the old secret until the overlap ends"
    );
    assert!(!signing::verify_guide_signature(&new, &during.body, guide));

    // The overlap ends (a second rotation shortens it to a second), then only the newest signs.
    let (code, again) = h
        .post(
            &tenant,
            &format!("/api/webhooks/{hook}/rotate-secret"),
            json!({"overlapSeconds": 1}),
        )
        .await;
    assert_eq!(code, 200, "{again}");
    let newest = again["secret"].as_str().expect("secret").to_string();
    assert_eq!(again["previousSecrets"].as_array().map(Vec::len), Some(2));
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, shown) = h.get(&tenant, &format!("/api/webhooks/{hook}")).await;
        if shown["previousSecrets"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "the overlap never ended: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_job = one_job(&h, &tenant, "system.info").await;
    assert!(
        h.dispatcher
            .handle(sqs_event(vec![after_job]), None)
            .await
            .batch_item_failures
            .is_empty()
    );
    let after = receiver.received()[2].clone();
    assert_eq!(after.header("webhook-signature").map(|s| s.split(' ').count()), Some(1));
    assert!(signing::verify_guide_signature(
        &newest,
        &after.body,
        after.header("x-webhook-signature").expect("guide")
    ));

    let verdicts = standard_webhooks_verify(&[
        (old, &before),
        (new.as_str(), &before),
        (old, &during),
        (new.as_str(), &during),
        ("whsec_c2VjcmV0LWtleS1ub3QtaW4tdXNl", &during),
        (newest.as_str(), &after),
        (new.as_str(), &after),
        (old, &after),
    ])
    .await;
    let no = "No matching signature found";
    assert_eq!(verdicts, vec!["ok", no, "ok", "ok", no, "ok", no, no]);

    // The guide's scheme, checked by the guide's Node.js code: an untouched receiver (old
    // secret) verifies until the overlap ends; one that trusts old and new verifies throughout;
    // the new secret alone only once the overlap is over (the retry schedule covers a receiver
    // switched early: its deliveries are retried until then).
    let verdicts = guide_verify(&[
        (&[old], &before),
        (&[old], &during),
        (&[new.as_str(), old], &during),
        (&[new.as_str()], &during),
        (&[newest.as_str(), new.as_str(), old], &after),
        (&[newest.as_str()], &after),
        (&[old], &after),
    ])
    .await;
    assert_eq!(verdicts, vec![true, true, true, false, true, true, false]);
    let d = h
        .delivery_when(&tenant, &hook, |d| d["attempts"].as_array().map(Vec::len) == Some(1))
        .await;
    assert_eq!(status(&d), "succeeded");
}

/// Runs the guide's Node.js check (`tests/node/guide_rotation.js`) on each (secrets trusted,
/// request): whether any of the secrets verifies its `X-Webhook-Signature`.
async fn guide_verify(cases: &[(&[&str], &webhooks_tests::Received)]) -> Vec<bool> {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let input: Vec<Value> = cases
        .iter()
        .map(|(secrets, r)| {
            json!({"secrets": secrets, "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
                "signature": r.header("x-webhook-signature")})
        })
        .collect();
    let mut child = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/node/guide_rotation.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed (make test installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(Value::from(input).to_string().as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("node finished")
        .expect("node ran");
    assert!(out.status.success(), "guide_rotation.js failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("a JSON array of verdicts")
}

// ---------------------------------------------------------------------------------------
// Endpoint health: the circuit breaker and auto-disable (issue 11).
// ---------------------------------------------------------------------------------------

async fn webhook_view(h: &Harness, tenant: &str, hook: &str) -> Value {
    let (code, w) = h.get(tenant, &format!("/api/webhooks/{hook}")).await;
    assert_eq!(code, 200, "{w}");
    w
}

/// Five failed attempts open an endpoint's breaker; jobs that come while it is open are
/// deferred without a POST (and without an attempt in the log); the probe after the receiver
/// recovered closes it, and every deferred delivery is then delivered, each POSTed once.
async fn a_dead_endpoint_opens_its_breaker_and_recovers(kind: Kind) {
    // Probes every 5 s: the test's open phase (a few hundred ms) ends long before the first.
    let vars = [
        ("RETRY_SCHEDULE_SECONDS", "1,1,1,1,1,1"),
        ("BREAKER_PROBE_SECONDS", "5"),
    ];
    let Some(h) = harness_with(kind, &vars, false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    let hook = h
        .webhook(&tenant, &receiver.url("/dead"), json!(["system.info"]), None)
        .await;
    for i in 0..5 {
        h.event(&tenant, "system.info", json!({"n": i}), None).await;
    }
    let events = take(&h, &h.urls.events, 5).await;
    assert!(h.ingest.handle(sqs_event(events)).await.batch_item_failures.is_empty());
    let jobs = take(&h, &h.urls.delivery, 5).await;
    let first = h.dispatcher.handle(sqs_event(jobs), None).await;
    assert_eq!(first.batch_item_failures.len(), 5, "five failures, each to be retried");
    assert_eq!(receiver.received().len(), 5);
    let w = webhook_view(&h, &tenant, &hook).await;
    assert_eq!(w["health"]["status"], "open", "{w}");
    assert_eq!(w["health"]["consecutiveFailures"], 5);
    assert_eq!(
        w["health"]["lastError"],
        "Receiver answered HTTP 500 Internal Server Error"
    );
    assert!(w["health"]["failingSince"].is_string() && w["health"]["nextProbeAt"].is_string());
    assert!(w["health"]["lastSuccessAt"].is_null());

    // While open: three more deliveries, and whatever job comes first off the queue, is
    // handled without a POST and left hidden in the queue.
    for i in 5..8 {
        h.event(&tenant, "system.info", json!({"n": i}), None).await;
    }
    let events = take(&h, &h.urls.events, 3).await;
    assert!(h.ingest.handle(sqs_event(events)).await.batch_item_failures.is_empty());
    let jobs = take(&h, &h.urls.delivery, 3).await;
    let deferred = h.dispatcher.handle(sqs_event(jobs.clone()), None).await;
    assert_eq!(deferred.batch_item_failures.len(), 3, "deferred jobs stay in the queue");
    assert_eq!(receiver.received().len(), 5, "no POST while the breaker is open");
    let (_, list) = h.get(&tenant, &format!("/api/webhooks/{hook}/deliveries")).await;
    let attempts: usize = list
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["attempts"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(attempts, 5, "a deferral is not an attempt: {list}");

    // The receiver recovers; the pipeline runs until all eight are delivered.
    receiver.set_default(Reply::Status(200));
    let dispatcher = h.dispatcher.clone();
    let handler: webhooks_local::Handler = Arc::new(move |e| {
        let d = dispatcher.clone();
        Box::pin(async move { d.handle(e, None).await })
    });
    let deadline = Instant::now() + WAIT;
    loop {
        webhooks_local::poll_once(h.queue.as_ref(), &h.urls.delivery, Duration::from_millis(500), &handler)
            .await
            .expect("poll");
        let (_, list) = h.get(&tenant, &format!("/api/webhooks/{hook}/deliveries")).await;
        let done = list
            .as_array()
            .expect("list")
            .iter()
            .filter(|d| status(d) == "succeeded")
            .count();
        if done == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered after recovery: {list}");
    }
    let got = receiver.received();
    assert_eq!(
        got.len(),
        5 + 8,
        "5 failures, then each of the 8 deliveries POSTed once"
    );
    let w = webhook_view(&h, &tenant, &hook).await;
    assert_eq!(w["health"]["status"], "healthy", "{w}");
    assert_eq!(w["health"]["consecutiveFailures"], 0);
    assert!(w["health"]["lastSuccessAt"].is_string() && w["health"]["failingSince"].is_null());
    assert!(w["health"]["nextProbeAt"].is_null());
}

/// An endpoint that fails without a single success for AUTO_DISABLE_AFTER_SECONDS (3 s here)
/// is disabled: `active: false` with the reason, its pending delivery skipped without a POST,
/// no job made for it afterwards, and a `system.warning` about it delivered to the tenant's
/// other subscribed webhooks (not to another tenant's). Re-enabling clears it all.
async fn a_webhook_failing_for_too_long_is_disabled(kind: Kind) {
    let vars = [
        ("RETRY_SCHEDULE_SECONDS", "1,1,1,1,1,1,1,1,1,1"),
        ("BREAKER_FAILURES", "2"),
        ("BREAKER_PROBE_SECONDS", "1"),
        ("AUTO_DISABLE_AFTER_SECONDS", "3"),
    ];
    let Some(h) = harness(kind, &vars).await else { return };
    let dead = Receiver::start(Reply::Status(503)).await;
    let ops = Receiver::start(Reply::Status(200)).await;
    let elsewhere = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let hook = h.webhook(&tenant, &dead.url("/dead"), json!(["*"]), None).await;
    h.webhook(
        &tenant,
        &ops.url("/ops"),
        json!(["system.warning"]),
        Some("ops-secret-0123456789"),
    )
    .await;
    h.webhook(&unique("other"), &elsewhere.url("/x"), json!(["system.warning"]), None)
        .await;
    h.event(&tenant, "task.execution.failed", json!({"task": 1}), None)
        .await;

    let warning = ops.wait_for(1, WAIT).await;
    assert_eq!(warning.len(), 1, "the tenant's other webhook is told");
    let body: Value = serde_json::from_slice(&warning[0].body).expect("json");
    assert_eq!(body["event"], "system.warning");
    assert_eq!(body["payload"]["type"], "webhook.disabled");
    assert_eq!(body["payload"]["webhookId"], hook);
    let w = webhook_view(&h, &tenant, &hook).await;
    assert_eq!(w["active"], false, "{w}");
    let reason = w["disabledReason"].as_str().expect("reason");
    assert!(reason.starts_with("failing without a success since"), "{reason}");
    assert!(reason.contains("HTTP 503"), "{reason}");
    assert_eq!(body["payload"]["reason"], reason);
    assert!(w["disabledAt"].is_string());

    // Its pending delivery is skipped when its job comes back, without a POST.
    let d = h.delivery_when(&tenant, &hook, |d| status(d) == "skipped").await;
    assert!(
        d["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("webhook was disabled: failing"),
        "{d}"
    );
    let attempts = d["attempts"].as_array().expect("attempts").len();
    assert!(attempts >= 3, "failed for 3 s at 1 s intervals: {d}");
    assert_eq!(
        dead.received().len(),
        attempts,
        "every POST is an attempt; none after the disable"
    );

    // A new event reaches the other webhook and makes no job for the disabled one.
    h.event(&tenant, "system.warning", json!({"note": "after"}), None).await;
    assert_eq!(ops.wait_for(2, WAIT).await.len(), 2);
    assert_eq!(dead.received().len(), attempts, "a disabled webhook gets no POST");
    assert!(elsewhere.received().is_empty(), "another tenant is not told");

    // Re-enabled: reason gone, health reset, delivering again.
    let res = h
        .http
        .put(format!("{}/api/webhooks/{hook}", h.base))
        .header("authorization", bearer(&tenant))
        .json(&json!({"active": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status().as_u16(), 200);
    let w: Value = res.json().await.expect("json");
    assert_eq!(w["active"], true);
    assert!(
        w.get("disabledReason").is_none() && w.get("disabledAt").is_none(),
        "{w}"
    );
    assert_eq!(w["health"]["status"], "healthy");
    assert_eq!(w["health"]["consecutiveFailures"], 0);
    dead.set_default(Reply::Status(200));
    h.event(&tenant, "task.execution.failed", json!({"task": 2}), None)
        .await;
    assert_eq!(dead.wait_for(attempts + 1, WAIT).await.len(), attempts + 1);
}

/// A job deferred so often that SQS would soon dead-letter it for its receive count (100)
/// though it made no attempt is sent again as a fresh message and the old one deleted, still
/// without a POST.
async fn a_job_deferred_many_times_is_sent_again_fresh(kind: Kind) {
    let vars = [
        ("RETRY_SCHEDULE_SECONDS", "60"),
        ("BREAKER_FAILURES", "1"),
        // Under PARK_FROM_S (with its jitter), so deferrals are hidden and counted as receives.
        ("BREAKER_PROBE_SECONDS", "8"),
    ];
    let Some(h) = harness_with(kind, &vars, false).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(500)).await;
    let tenant = unique("acme");
    h.webhook(&tenant, &receiver.url("/dead"), json!(["system.info"]), None)
        .await;
    let first = one_job(&h, &tenant, "system.info").await;
    assert_eq!(
        h.dispatcher
            .handle(sqs_event(vec![first]), None)
            .await
            .batch_item_failures
            .len(),
        0,
        "its 60 s retry is parked (delayed), out of the way of the next receive"
    );
    assert_eq!(receiver.received().len(), 1, "the breaker is open");
    let mut job = one_job(&h, &tenant, "system.info").await;
    job.attributes.insert(
        "ApproximateReceiveCount".into(),
        webhooks_dispatcher::RECYCLE_AFTER_RECEIVES.to_string(),
    );
    let handled = h.dispatcher.handle(sqs_event(vec![job.clone()]), None).await;
    assert!(handled.batch_item_failures.is_empty(), "the old message is done with");
    let fresh = take(&h, &h.urls.delivery, 1).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].body, job.body, "the same job");
    assert_eq!(
        fresh[0].attributes.get("ApproximateReceiveCount").map(String::as_str),
        Some("1")
    );
    assert_eq!(receiver.received().len(), 1, "and still no POST");
}

/// Polls the delivery queue with `handler` (deleting what it is done with) until `done`, for
/// at most `WAIT`.
async fn poll_until(h: &Harness, handler: &webhooks_local::Handler, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "not done after {WAIT:?}: {what}");
        webhooks_local::poll_once(h.queue.as_ref(), &h.urls.delivery, Duration::from_millis(500), handler)
            .await
            .expect("poll");
    }
}

/// The delivery queue's messages in flight and delayed, as SQS reports them
/// (ApproximateNumberOfMessagesNotVisible and ApproximateNumberOfMessagesDelayed).
async fn in_flight_and_delayed(h: &Harness) -> (usize, usize) {
    let url = &h.urls.delivery;
    if let Some(q) = &h.memory {
        return (q.in_flight(url), q.delayed(url));
    }
    if let Some(q) = &h.sqlite {
        return (
            q.in_flight(url).await.expect("in flight"),
            q.delayed(url).await.expect("delayed"),
        );
    }
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let client = aws_sdk_sqs::Client::new(&emulator().await.expect("emulator"));
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("queue attributes");
    let n = |a: A| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .expect("a count")
    };
    (
        n(A::ApproximateNumberOfMessagesNotVisible),
        n(A::ApproximateNumberOfMessagesDelayed),
    )
}

/// Jobs waiting 10 s or more (a retry here; an open breaker's deferral alike) are parked: sent
/// again with a delay and the received message deleted, so a failing endpoint's jobs are not
/// in flight, where SQS's ~120,000 limit would stop every delivery of the queue. On the
/// embedded queues the limit is then lowered to the number of failing jobs: a healthy
/// endpoint's job still gets through (hidden jobs would have blocked it), and the parked jobs
/// are delivered once due, each with one more attempt.
async fn waiting_jobs_are_not_in_flight(kind: Kind) {
    let vars = [("RETRY_SCHEDULE_SECONDS", "600"), ("BREAKER_FAILURES", "1000")];
    let Some(h) = harness_with(kind, &vars, false).await else {
        return;
    };
    let dead = Receiver::start(Reply::Status(500)).await;
    let alive = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let dead_hook = h
        .webhook(&tenant, &dead.url("/dead"), json!(["system.info"]), None)
        .await;
    h.webhook(&tenant, &alive.url("/alive"), json!(["system.warning"]), None)
        .await;
    for i in 0..12 {
        h.event(&tenant, "system.info", json!({"n": i}), None).await;
    }
    let events = take(&h, &h.urls.events, 12).await;
    assert!(h.ingest.handle(sqs_event(events)).await.batch_item_failures.is_empty());
    let dispatcher = h.dispatcher.clone();
    let handler: webhooks_local::Handler = Arc::new(move |e| {
        let d = dispatcher.clone();
        Box::pin(async move { d.handle(e, None).await })
    });
    poll_until(&h, &handler, "12 first attempts", || dead.received().len() == 12).await;
    assert_eq!(
        in_flight_and_delayed(&h).await,
        (0, 12),
        "each failed job waits delayed, none in flight"
    );
    if matches!(kind, Kind::Emulator) {
        // Neither the limit nor the clock can be moved on the emulator.
        return;
    }
    if let Some(q) = &h.memory {
        q.set_in_flight_limit(&h.urls.delivery, 12);
    }
    if let Some(q) = &h.sqlite {
        q.set_in_flight_limit(&h.urls.delivery, 12);
    }
    h.event(&tenant, "system.warning", json!({"ok": true}), None).await;
    let events = take(&h, &h.urls.events, 1).await;
    assert!(h.ingest.handle(sqs_event(events)).await.batch_item_failures.is_empty());
    poll_until(&h, &handler, "the healthy endpoint's job is not held up", || {
        !alive.received().is_empty()
    })
    .await;
    // Due: the parked jobs come back and are delivered, one more attempt each.
    dead.set_default(Reply::Status(200));
    h.clock.advance(Duration::from_secs(901));
    if let Some(q) = &h.memory {
        q.advance(Duration::ZERO);
    }
    poll_until(&h, &handler, "the parked jobs delivered", || {
        dead.received().len() >= 24
    })
    .await;
    let (_, list) = h.get(&tenant, &format!("/api/webhooks/{dead_hook}/deliveries")).await;
    let list = list.as_array().expect("list").clone();
    assert_eq!(list.len(), 12);
    assert!(
        list.iter()
            .all(|d| status(d) == "succeeded" && d["attempts"].as_array().map_or(0, Vec::len) == 2),
        "{list:?}"
    );
    assert_eq!(in_flight_and_delayed(&h).await, (0, 0));
}

/// A parked job that comes back before it is due (a wait longer than SQS's 15-minute delay)
/// is parked again for the rest without reading the delivery record and without a POST: here
/// every read of the log fails, which would leave the job hidden as an error had it been read.
async fn a_parked_job_not_due_is_parked_again_without_a_read(kind: Kind) {
    let Some(h) = harness_with(kind, &[("RETRY_SCHEDULE_SECONDS", "3600")], false).await else {
        return;
    };
    let (receiver, _, hook, job) = webhook_and_job(&h, Reply::Status(200)).await;
    // As the dispatcher parks a two-hour wait: due an hour from now, back every 15 minutes.
    let mut parked = webhooks::messages::DeliveryJob::decode(job.body.as_deref().expect("body")).expect("job");
    parked.not_before_ms = Some(h.clock.now_ms() + 3_600_000);
    let mut message = job.clone();
    message.body = Some(parked.encode());
    let blind = webhooks_dispatcher::Dispatcher {
        log: Arc::new(FailingGets {
            inner: h.log.clone(),
            failures: std::sync::atomic::AtomicU32::new(u32::MAX),
        }),
        ..h.dispatcher.clone()
    };
    let handled = blind.handle(sqs_event(vec![message]), None).await;
    assert!(handled.batch_item_failures.is_empty(), "parked again, not an error");
    assert!(receiver.received().is_empty(), "no POST");
    h.queue
        .delete(&h.urls.delivery, job.receipt_handle.as_deref().expect("receipt"))
        .await
        .expect("delete");
    assert_eq!(
        in_flight_and_delayed(&h).await,
        (0, 1),
        "one delayed copy, none in flight"
    );
    assert!(
        h.log.get(&hook, &parked.delivery_id).await.expect("get").is_none(),
        "nothing recorded"
    );
    if let Some(q) = &h.memory {
        let bodies = q.bodies(&h.urls.delivery);
        assert_eq!(bodies.len(), 1);
        let again = webhooks::messages::DeliveryJob::decode(&bodies[0]).expect("job");
        assert_eq!(
            (again.delivery_id.as_str(), again.not_before_ms),
            (parked.delivery_id.as_str(), parked.not_before_ms),
            "the same job, due at the same time"
        );
    }
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Kind::Memory).await })*
        }
        mod durable {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Kind::Durable).await })*
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
    jobs_of_both_formats_deliver_the_same_signed_bytes,
    racing_copies_of_an_event_fan_out_once,
    receives_without_an_attempt_cost_no_attempt,
    a_duplicate_job_is_not_posted_again,
    retry_after_as_an_http_date_is_honoured,
    an_attempt_never_outlives_the_deadline,
    sigterm_lets_deliveries_in_flight_finish,
    events_are_kept_and_listed,
    resend_delivers_the_same_delivery_again,
    resend_refuses_what_it_cannot_do,
    recover_redelivers_each_failed_delivery_once,
    redrive_moves_the_dlq_back_and_the_log_stays_true,
    rotation_signs_with_every_valid_secret,
    a_dead_endpoint_opens_its_breaker_and_recovers,
    a_webhook_failing_for_too_long_is_disabled,
    a_job_deferred_many_times_is_sent_again_fresh,
    waiting_jobs_are_not_in_flight,
    a_parked_job_not_due_is_parked_again_without_a_read,
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
            previous_secrets: Vec::new(),
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
            disabled: None,
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
        metrics: Default::default(),
    };
    let body = json!({"event": "system.info", "payload": {}, "tenant": tenant}).to_string();
    queue
        .send_batch(
            &events,
            &[OutgoingMessage {
                id: "0".into(),
                body,
                reason: None,
                delay_s: 0,
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
        events: Arc::new(MemoryEventStore::new()),
        queue: queue.clone(),
        deliverer: webhooks::delivery::Deliverer::new(webhooks::ssrf::TargetPolicy::PERMISSIVE).expect("client"),
        delivery_queue_url: jobs.clone(),
        dead_letter_url: dlq_url.clone(),
        schedule: vec![1],
        timeout: Duration::from_secs(2),
        retention_days: 1,
        recover_page: 100,
        clock: Default::default(),
        breaker: Default::default(),
        events_queue_url: events.clone(),
        metrics: Default::default(),
        keys: Default::default(),
        park_from_s: webhooks_dispatcher::PARK_FROM_S,
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
