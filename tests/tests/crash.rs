//! The durable backend under `kill -9`: the real `webhooks-local` binary on one data directory,
//! events accepted over HTTP, the process SIGKILLed at four points (right after a burst of 202s,
//! mid-delivery, mid-delivery with retries pending, in the middle of a burst of submissions) and
//! started again each time on the same `DATA_DIR`. In the end every accepted (event, webhook)
//! reaches its real receiver on 127.0.0.1 with one delivery id, the retries kept their schedule,
//! and the delivery log has one record per delivery whose attempts are intact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use webhooks_tests::{JWT_SECRET, Receiver, Reply, TempDir, bearer, unique};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(90);
/// The flaky receiver's first answers, before it answers 200.
const FLAKY_FAILURES: usize = 8;
/// The retry delay (s); more attempts than the flaky receiver has failures.
const RETRY_S: u64 = 2;

struct Running {
    child: Child,
    base: String,
}

/// Starts the runner on `data` and waits for its banner.
async fn start(data: &TempDir) -> Running {
    let schedule = vec![RETRY_S.to_string(); FLAKY_FAILURES + 2].join(",");
    let mut child = tokio::process::Command::new(webhooks_tests::runtime_api::binary("webhooks-local", "debug"))
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_SQS")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .env_remove("BACKEND")
        .env("DATA_DIR", data.path())
        .env("PORT", "0")
        .env("JWT_SECRET", String::from_utf8_lossy(JWT_SECRET).as_ref())
        .env("RETRY_SCHEDULE_SECONDS", schedule)
        .env("DELIVERY_TIMEOUT_SECONDS", "5")
        // The flaky receiver's 8 failures would open the breaker (5) whenever fewer than 8 of
        // them are in flight together, and a probe among the 503s doubles the wait to 120 s,
        // past WAIT: what a kill loses is this test's subject, the breaker has its own.
        .env("BREAKER_FAILURES", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("webhooks-local is built (make test builds every binary)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !banner.iter().any(|l: &String| l.contains("storage:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .expect("the banner in time")
            .expect("read")
            .expect("a banner line");
        banner.push(line);
    }
    assert!(banner[1].contains("durable, SQLite"), "{banner:?}");
    let base = banner[0].rsplit(' ').next().expect("address").to_string();
    // Keep reading, so the runner never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running { child, base }
}

impl Running {
    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("dies")
            .expect("status");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

struct Api {
    http: reqwest::Client,
    tenant: String,
    /// Events accepted so far, to kill the runner in the middle of a burst.
    accepted: std::sync::atomic::AtomicUsize,
}

impl Api {
    async fn webhook(&self, base: &str, url: String) -> String {
        let res = self
            .http
            .post(format!("{base}/api/webhooks"))
            .header("authorization", bearer(&self.tenant))
            .json(&json!({"url": url, "events": ["system.info"], "secret": "crash-secret-0123456789"}))
            .send()
            .await
            .expect("register");
        assert_eq!(res.status().as_u16(), 201);
        let body: Value = res.json().await.expect("json");
        body["id"].as_str().expect("id").to_string()
    }

    /// Submits event `n`; true when it was accepted (202).
    async fn event(&self, base: &str, n: usize) -> bool {
        let sent = self
            .http
            .post(format!("{base}/api/events"))
            .header("authorization", bearer(&self.tenant))
            .json(&json!({"event": "system.info", "id": format!("crash-{n}"), "payload": {"n": n}}))
            .send()
            .await;
        let ok = matches!(sent, Ok(r) if r.status().as_u16() == 202);
        if ok {
            self.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// Submits `range` with 4 clients at once; returns the numbers accepted.
    async fn burst(self: &Arc<Self>, base: &str, range: std::ops::Range<usize>) -> Vec<usize> {
        let next = Arc::new(std::sync::Mutex::new(range));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (api, next, base) = (self.clone(), next.clone(), base.to_string());
            tasks.push(tokio::spawn(async move {
                let mut accepted = Vec::new();
                loop {
                    let n = next.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some(n) = n else { break };
                    if api.event(&base, n).await {
                        accepted.push(n);
                    }
                }
                accepted
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("submitter"));
        }
        all
    }

    async fn deliveries(&self, base: &str, webhook: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = format!("/api/webhooks/{webhook}/deliveries?limit=100");
        for _ in 0..20 {
            let res = self
                .http
                .get(format!("{base}{path}"))
                .header("authorization", bearer(&self.tenant))
                .send()
                .await
                .expect("list");
            let next = res
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(p, _)| p.to_string());
            let page: Vec<Value> = res.json().await.expect("json");
            out.extend(page);
            match next {
                Some(p) => path = p,
                None => break,
            }
        }
        out
    }
}

/// (event number, delivery id) of each request a receiver got on `path`, in arrival order.
fn arrivals(receiver: &Receiver, path: &str) -> Vec<(usize, String)> {
    receiver
        .received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
            let n = body["payload"]["n"].as_u64().expect("payload.n") as usize;
            (n, r.header("x-webhook-id").expect("X-Webhook-Id").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_loses_nothing() {
    let data = TempDir::new("crash-data");
    let steady = Receiver::start(Reply::Slow(Duration::from_millis(200), 200)).await;
    let flaky = Receiver::start(Reply::Status(200)).await;
    flaky.script(vec![Reply::Status(503); FLAKY_FAILURES]);
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        tenant: unique("crash"),
        accepted: Default::default(),
    });

    let run = start(&data).await;
    let hooks = [
        ("/a", api.webhook(&run.base, steady.url("/a")).await),
        ("/b", api.webhook(&run.base, steady.url("/b")).await),
        ("/c", api.webhook(&run.base, flaky.url("/c")).await),
    ];
    let mut accepted: BTreeSet<usize> = BTreeSet::new();

    // Kill 1: right after a burst of 202s, before most were fanned out.
    accepted.extend(api.burst(&run.base, 0..30).await);
    assert_eq!(accepted.len(), 30, "every event of the first burst accepted");
    run.kill9().await;
    println!(
        "kill 1: after 30 events accepted; {} requests received",
        steady.received().len() + flaky.received().len()
    );

    // Kill 2: mid-delivery (the steady receiver takes 200 ms per request).
    let run = start(&data).await;
    let before = steady.received().len();
    steady.wait_for(before + 5, WAIT).await;
    let at = Instant::now();
    run.kill9().await;
    let in_flight = steady
        .received()
        .iter()
        .filter(|r| at.saturating_duration_since(r.at) < Duration::from_millis(200))
        .count();
    println!("kill 2: mid-delivery, about {in_flight} requests in flight");

    // Kill 3: a second burst, then mid-delivery with the flaky receiver's retries pending.
    let run = start(&data).await;
    accepted.extend(api.burst(&run.base, 30..50).await);
    assert_eq!(accepted.len(), 50, "every event of the second burst accepted");
    let before = steady.received().len();
    steady.wait_for(before + 5, WAIT).await;
    flaky.wait_for(3, WAIT).await;
    run.kill9().await;
    println!(
        "kill 3: mid-delivery, the flaky receiver answered 503 to {} of {} requests so far",
        flaky.received().len().min(FLAKY_FAILURES),
        flaky.received().len()
    );

    // Kill 4: in the middle of a burst of submissions; only what got its 202 counts.
    let run = start(&data).await;
    let base = run.base.clone();
    let submitting = {
        let api = api.clone();
        tokio::spawn(async move { api.burst(&base, 50..200).await })
    };
    let deadline = Instant::now() + WAIT;
    while api.accepted.load(std::sync::atomic::Ordering::Relaxed) < 90 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.kill9().await;
    let fourth = submitting.await.expect("submitters");
    println!(
        "kill 4: during a burst; {} of its 150 events were accepted",
        fourth.len()
    );
    accepted.extend(fourth);

    // Started again for good. The events whose answer the kill cut off are submitted again
    // with the same ids, as a producer would: each is delivered once more at most, never lost.
    let run = start(&data).await;
    let unanswered: Vec<usize> = (50..200).filter(|n| !accepted.contains(n)).collect();
    for n in &unanswered {
        assert!(api.event(&run.base, *n).await, "event {n} accepted when sent again");
    }
    println!("{} events sent again after kill 4", unanswered.len());
    accepted.extend(unanswered);
    assert_eq!(accepted.len(), 200);
    let deadline = Instant::now() + WAIT;
    let flaky_ok = |r: &Receiver| {
        // The first FLAKY_FAILURES requests were answered 503, the rest 200.
        arrivals(r, "/c")
            .iter()
            .skip(FLAKY_FAILURES)
            .map(|(n, _)| *n)
            .collect::<BTreeSet<_>>()
    };
    loop {
        let got = |path: &str| arrivals(&steady, path).iter().map(|(n, _)| *n).collect::<BTreeSet<_>>();
        let mut done = got("/a").is_superset(&accepted)
            && got("/b").is_superset(&accepted)
            && flaky_ok(&flaky).is_superset(&accepted);
        // And recorded: a request arrives before its answer, and its attempt is logged after.
        for (_, hook) in &hooks {
            if done {
                let log = api.deliveries(&run.base, hook).await;
                done = log.len() == accepted.len() && log.iter().all(|d| d["status"] == "succeeded");
            }
        }
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut duplicates = 0;
    for (path, hook) in &hooks {
        let receiver = if *path == "/c" { &flaky } else { &steady };
        let got = arrivals(receiver, path);
        // Nothing lost, one delivery id per (event, webhook).
        let mut ids: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for (n, id) in &got {
            ids.entry(*n).or_default().insert(id.clone());
        }
        let missing: Vec<usize> = accepted.iter().filter(|n| !ids.contains_key(n)).copied().collect();
        assert!(
            missing.is_empty(),
            "{path}: accepted events never delivered: {missing:?}"
        );
        for (n, set) in &ids {
            assert!(
                accepted.contains(n),
                "{path}: event {n} was delivered but never accepted"
            );
            assert_eq!(
                set.len(),
                1,
                "{path}: event {n} came with several delivery ids: {set:?}"
            );
        }
        let posts: HashMap<String, usize> = got.iter().fold(HashMap::new(), |mut m, (_, id)| {
            *m.entry(id.clone()).or_default() += 1;
            m
        });
        duplicates += got.len() - posts.len();
        // The log: one record per delivery, succeeded, with the id the receiver saw; its
        // attempts in order, never more than the POSTs made (a POST cut off by a kill may be
        // missing), one a 200, and each retry after its delay.
        let log = api.deliveries(&run.base, hook).await;
        assert_eq!(log.len(), accepted.len(), "{path}: one record per accepted event");
        for d in &log {
            let n: usize = d["eventId"]
                .as_str()
                .and_then(|e| e.strip_prefix("crash-"))
                .and_then(|n| n.parse().ok())
                .expect("an event of this test");
            let id = d["id"].as_str().expect("id");
            assert_eq!(
                ids[&n].iter().next().map(String::as_str),
                Some(id),
                "{path}: event {n}'s delivery id"
            );
            assert_eq!(d["status"], "succeeded", "{path}: {d}");
            let attempts = d["attempts"].as_array().expect("attempts");
            assert!(!attempts.is_empty() && attempts.len() <= posts[id], "{path}: {d}");
            // Two copies of one job racing (a fan-out redone after a kill) both POST and both
            // log, each with the number it read: numbers may repeat, never skip.
            let numbers: Vec<u64> = attempts.iter().filter_map(|a| a["attempt"].as_u64()).collect();
            assert_eq!(numbers.first(), Some(&1), "{path}: {d}");
            for (i, pair) in numbers.windows(2).enumerate() {
                assert!(
                    pair[0] <= pair[1] && pair[1] <= i as u64 + 2,
                    "{path}: attempts in order: {d}"
                );
            }
            assert!(attempts.iter().any(|a| a["statusCode"] == 200), "{d}");
            let raced = numbers.windows(2).any(|p| p[0] == p[1]);
            for pair in attempts.windows(2).filter(|_| !raced) {
                let t = |a: &Value| a["at"].as_str().and_then(webhooks::time::parse_iso).expect("at");
                if pair[0]["statusCode"] == 503 {
                    assert!(
                        t(&pair[1]) >= t(&pair[0]) + RETRY_S * 1000,
                        "{path}: a retry came before its delay: {d}"
                    );
                }
            }
        }
    }
    println!(
        "after 4 kills: {} events accepted, {} deliveries, all arrived with stable ids; {duplicates} sent again (at least once)",
        accepted.len(),
        accepted.len() * hooks.len()
    );
    run.kill9().await;
}

/// The adapters across a reopen of their data directory: what was written is there; a message
/// the dead process had received comes back at once with its receive counted, one it had
/// hidden for a retry stays hidden until due; its event claims lapse; a second process is
/// refused the directory; expired records are purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_hands_back_what_a_dead_process_held() {
    use webhooks::ports::{Claim, EventStore, OutgoingMessage, Queue, StoredEvent, WebhookStore};
    use webhooks::sqlite::{Db, SqliteEventStore, SqliteQueue, SqliteWebhookStore};
    let data = TempDir::new("reopen-data");
    let clock = webhooks::time::Clock::default();
    let db = Db::open(data.path()).expect("open");
    assert!(Db::open(data.path()).is_err(), "one process per data directory");
    let queue = SqliteQueue::new(db.clone(), clock.clone());
    let url = queue
        .create_queue("jobs", Duration::from_secs(180), None)
        .expect("queue");
    let send = |body: &str| OutgoingMessage {
        id: body.into(),
        body: body.into(),
        reason: None,
        delay_s: 0,
    };
    queue
        .send_batch(&url, &[send("in-flight"), send("retry")])
        .await
        .expect("send");
    let got = queue.receive(&url, 10, Duration::from_secs(1)).await.expect("receive");
    assert_eq!(got.len(), 2);
    let retry = got.iter().find(|m| m.body == "retry").expect("retry");
    queue
        .change_visibility(&url, &retry.receipt_handle, 60)
        .await
        .expect("hide for a retry");
    let webhook = webhooks::domain::Webhook {
        id: webhooks::ids::new_id("wh"),
        tenant: "acme".into(),
        url: "https://example.com/".into(),
        events: vec!["*".into()],
        active: true,
        version: 1,
        ..Default::default()
    };
    SqliteWebhookStore::new(db.clone())
        .create(&webhook)
        .await
        .expect("create");
    let tenant = webhooks::messages::Tenant::parse("acme").expect("tenant");
    let event = StoredEvent {
        tenant: tenant.clone(),
        id: webhooks::messages::EventId::parse("evt-1").expect("id"),
        event: webhooks::event_types::EventType::parse("system.info").expect("type"),
        timestamp_ms: 1,
        payload: "{}".into(),
        expires_at: 1,
    };
    let now = clock.now_ms();
    let events = SqliteEventStore::new(db.clone());
    assert!(matches!(
        events.claim(&event, "dead", now, 90_000).await,
        Ok(Claim::Won(_))
    ));
    drop((queue, events));
    drop(db);

    let db = Db::open(data.path()).expect("reopen");
    let queue = SqliteQueue::new(db.clone(), clock.clone());
    let url = queue
        .create_queue("jobs", Duration::from_secs(180), None)
        .expect("queue");
    let back = queue
        .receive(&url, 10, Duration::from_millis(300))
        .await
        .expect("receive");
    assert_eq!(
        back.iter()
            .map(|m| (m.body.as_str(), m.receive_count))
            .collect::<Vec<_>>(),
        vec![("in-flight", 2)],
        "the received message is back, the retry is not due"
    );
    queue.advance(Duration::from_secs(61));
    let due = queue.receive(&url, 10, Duration::from_secs(1)).await.expect("receive");
    assert_eq!(due.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["retry"]);
    assert_eq!(due[0].message_id, retry.message_id, "the same message");
    let store = SqliteWebhookStore::new(db.clone());
    assert_eq!(store.get("acme", &webhook.id).await.expect("get"), Some(webhook));
    let events = SqliteEventStore::new(db.clone());
    assert!(
        matches!(events.claim(&event, "alive", now + 1, 90_000).await, Ok(Claim::Won(_))),
        "the dead owner's claim lapsed at the reopen"
    );
    assert_eq!(db.purge_expired(2).await.expect("purge"), 1, "the expired event");
    assert_eq!(events.get(&tenant, &event.id, true).await.expect("get"), None);
}
