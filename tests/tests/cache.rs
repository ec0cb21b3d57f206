//! The per-container webhook cache (`WEBHOOK_CACHE_SECONDS`) end to end: the local runner's
//! API, ingest and dispatcher on the in-memory backend, real deliveries to a receiver on
//! 127.0.0.1, and the pipeline's reads counted by partition key under the cache. The cache's
//! expiry follows the pipeline's clock, which the tests move forward instead of sleeping, so
//! nothing here depends on timing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use webhooks::cache::CachedWebhookStore;
use webhooks::ports::{DeliveryLog, DeliveryStatus, Queue, WebhookStore};
use webhooks::signing;
use webhooks::time::Clock;
use webhooks_local::{Backend, Handler, QueueUrls, Runner, local_config, poll_once};
use webhooks_tests::counting::{KeyMeter, KeyedStore, Op};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer};

const TENANT: &str = "acme";
// Long enough that a loaded machine never expires an entry between two steps of a test:
// only `clock.advance` does.
const TTL: Duration = Duration::from_secs(60);

struct Setup {
    base: String,
    http: reqwest::Client,
    queue: Arc<dyn Queue>,
    urls: QueueUrls,
    ingest: Handler,
    dispatch: Handler,
    meter: Arc<KeyMeter>,
    clock: Clock,
    /// The store as the API sees it (no cache), for another container's writes.
    store: Arc<dyn WebhookStore>,
    log: Arc<dyn DeliveryLog>,
}

/// The runner's own ingest and dispatcher, reading the store through a counter and a cache of
/// `ttl` (zero: none), as a Lambda container would; the API on 127.0.0.1 without a cache.
async fn setup(ttl: Duration) -> Setup {
    setup_with(Some(ttl), None).await
}

/// With `ttl` `None`, the runner's handlers as it wired them (from `WEBHOOK_CACHE_SECONDS`
/// when `cache_var` is given, else the local default); reads are not counted then.
async fn setup_with(ttl: Option<Duration>, cache_var: Option<&str>) -> Setup {
    let config = local_config(|k| match k {
        "RETRY_SCHEDULE_SECONDS" => Some("5".to_string()),
        "WEBHOOK_CACHE_SECONDS" => cache_var.map(str::to_string),
        _ => None,
    })
    .expect("config");
    let runner = Runner::new(&config, JWT_SECRET, &Backend::Memory).expect("runner");
    let meter = KeyMeter::new(runner.clock.clone());
    let mut ingest = runner.ingest.clone();
    let mut dispatcher = runner.dispatcher.clone();
    if let Some(ttl) = ttl {
        let counted: Arc<dyn WebhookStore> = Arc::new(KeyedStore {
            inner: runner.state.store.clone(),
            meter: meter.clone(),
        });
        let cached = CachedWebhookStore::wrap(counted, ttl, runner.clock.clone());
        ingest.store = cached.clone();
        dispatcher.store = cached;
    }
    let ingest: Handler = Arc::new(move |e| {
        let ingest = ingest.clone();
        Box::pin(async move { ingest.handle(e).await })
    });
    let dispatch: Handler = Arc::new(move |e| {
        let dispatcher = dispatcher.clone();
        Box::pin(async move { dispatcher.handle(e, None).await })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let setup = Setup {
        base,
        http: reqwest::Client::new(),
        queue: runner.state.queue.clone(),
        urls: runner.urls.clone(),
        ingest,
        dispatch,
        meter,
        clock: runner.clock.clone(),
        store: runner.state.store.clone(),
        log: runner.state.log.clone(),
    };
    let app = webhooks_api::router(runner.state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    setup
}

impl Setup {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", bearer(TENANT));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, url: &str, secret: &str) -> String {
        let (status, w) = self
            .call(
                reqwest::Method::POST,
                "/api/webhooks",
                Some(json!({"url": url, "events": ["workflow.*"], "secret": secret})),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        w["id"].as_str().expect("id").to_string()
    }

    async fn send(&self, n: u32) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/events",
                Some(json!({"event": "workflow.execution.completed", "payload": {"n": n}})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    /// Runs ingest, then the dispatcher, until both queues are empty (bounded).
    async fn ingest_all(&self) {
        for _ in 0..100 {
            if poll_once(self.queue.as_ref(), &self.urls.events, Duration::ZERO, &self.ingest)
                .await
                .expect("ingest")
                == 0
            {
                return;
            }
        }
        panic!("the events queue did not drain");
    }

    async fn dispatch_all(&self) {
        for _ in 0..100 {
            if poll_once(self.queue.as_ref(), &self.urls.delivery, Duration::ZERO, &self.dispatch)
                .await
                .expect("dispatch")
                == 0
            {
                return;
            }
        }
        panic!("the delivery queue did not drain");
    }

    async fn run(&self) {
        self.ingest_all().await;
        self.dispatch_all().await;
    }

    async fn statuses(&self, webhook_id: &str) -> Vec<(DeliveryStatus, Option<String>)> {
        let page = self.log.list(webhook_id, 100, None).await.expect("log");
        page.items.into_iter().map(|d| (d.status, d.note)).collect()
    }
}

#[tokio::test]
async fn the_cache_reads_each_key_once_per_ttl_instead_of_once_per_delivery() {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let mut reads = Vec::new();
    for ttl in [Duration::ZERO, TTL] {
        let s = setup(ttl).await;
        let hook = s.register(&receiver.url("/hook"), "a-secret-of-sixteen-or-more").await;
        // The first delivery writes the endpoint's first success (health); after it, a healthy
        // endpoint's deliveries write nothing to the webhook, and only reads are left.
        s.send(0).await;
        s.run().await;
        let mut counted = Vec::new();
        for round in 0..2 {
            s.meter.reset();
            for n in 0..30 {
                s.send(n).await;
            }
            s.run().await;
            // Counted by partition key, as DynamoDB would see them.
            let t_key = s.meter.total(&format!("T#{TENANT}"), Op::Read);
            let s_key = s
                .meter
                .total(&format!("S#{TENANT}#workflow.execution.completed"), Op::Read);
            counted.push((
                s.meter.calls("WebhookStore::get"),
                s.meter.calls("WebhookStore::subscribers"),
                t_key.requests,
                s_key.requests,
            ));
            if round == 0 {
                // The second round starts when the first one's entries have expired.
                s.clock.advance(ttl);
            }
        }
        let ok = s
            .statuses(&hook)
            .await
            .iter()
            .filter(|(st, _)| *st == DeliveryStatus::Succeeded)
            .count();
        assert_eq!(ok, 61, "every event delivered with TTL {ttl:?}");
        reads.push(counted);
    }
    eprintln!(
        "reads per 30 deliveries (get, subscribers, T# key, S# key): without the cache {:?}, with it {:?}",
        reads[0], reads[1]
    );
    assert_eq!(
        reads[0],
        vec![(30, 30, 30, 30); 2],
        "without the cache: one read of each per delivery"
    );
    assert_eq!(
        reads[1],
        vec![(0, 0, 0, 0), (1, 1, 1, 1)],
        "with it: none while the warm entries last, then one of each per TTL"
    );
    assert_eq!(receiver.received().len(), 122);
}

#[tokio::test]
async fn a_disabled_or_deleted_webhook_gets_nothing_once_the_ttl_is_over() {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let s = setup(TTL).await;
    let disabled = s
        .register(&receiver.url("/disabled"), "a-secret-of-sixteen-or-more")
        .await;
    let deleted = s
        .register(&receiver.url("/deleted"), "a-secret-of-sixteen-or-more")
        .await;
    s.send(1).await;
    s.run().await;
    assert_eq!(receiver.received().len(), 2, "both delivered; the caches are warm");

    // Event 2's jobs are queued; then the user disables one webhook and deletes the other.
    s.send(2).await;
    s.ingest_all().await;
    let (status, w) = s
        .call(
            reqwest::Method::PUT,
            &format!("/api/webhooks/{disabled}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!((status, &w["active"]), (200, &json!(false)));
    // The API reads the store itself: the user sees the change at once.
    let (_, w) = s
        .call(reqwest::Method::GET, &format!("/api/webhooks/{disabled}"), None)
        .await;
    assert_eq!(w["active"], json!(false));
    let (status, _) = s
        .call(reqwest::Method::DELETE, &format!("/api/webhooks/{deleted}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .call(reqwest::Method::GET, &format!("/api/webhooks/{deleted}"), None)
        .await;
    assert_eq!(status, 404);

    // Within the TTL the container's view is stale: this is the documented bound, not zero.
    s.send(3).await;
    s.run().await;
    assert_eq!(
        receiver.received().len(),
        6,
        "events 2 and 3 still delivered within the TTL"
    );

    // Event 4's jobs are queued within the TTL (the subscriber list still names both), and
    // dispatched after it: each job reads its webhook afresh and is skipped.
    s.send(4).await;
    s.ingest_all().await;
    s.clock.advance(TTL);
    s.dispatch_all().await;
    // After the TTL, ingest's subscriber list is fresh too: no jobs at all.
    s.send(5).await;
    s.ingest_all().await;
    assert_eq!(
        s.queue
            .receive(&s.urls.delivery, 10, Duration::ZERO)
            .await
            .expect("receive")
            .len(),
        0
    );
    assert_eq!(receiver.received().len(), 6, "nothing after the TTL");
    let notes = |v: Vec<(DeliveryStatus, Option<String>)>| {
        v.into_iter()
            .filter(|(st, _)| *st == DeliveryStatus::Skipped)
            .map(|(_, n)| n.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(notes(s.statuses(&disabled).await), vec!["webhook is inactive"]);
    assert_eq!(notes(s.statuses(&deleted).await), vec!["webhook was deleted"]);
}

#[tokio::test]
async fn a_revoked_secret_stops_signing_once_the_ttl_is_over() {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let s = setup(TTL).await;
    let (old, new) = ("the-old-secret-0123456789", "the-new-secret-9876543210");
    let hook = s.register(&receiver.url("/hook"), old).await;
    s.send(1).await;
    s.run().await;
    let (status, w) = s
        .call(
            reqwest::Method::POST,
            &format!("/api/webhooks/{hook}/rotate-secret"),
            Some(json!({"secret": new, "overlapSeconds": 0})),
        )
        .await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["previousSecrets"], json!([]), "revoked at once in the store");
    s.send(2).await;
    s.run().await;
    s.clock.advance(TTL);
    s.send(3).await;
    s.run().await;
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let signed_by = |r: &webhooks_tests::Received| {
        [old, new]
            .into_iter()
            .filter(|secret| {
                signing::verify_standard_signature(
                    secret,
                    r.header("webhook-id").unwrap_or_default(),
                    r.header("webhook-timestamp").unwrap_or_default(),
                    &r.body,
                    r.header("webhook-signature").unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(signed_by(&got[0]), vec![old]);
    assert_eq!(signed_by(&got[1]), vec![old], "within the TTL: the cached secret");
    assert_eq!(signed_by(&got[2]), vec![new], "after it: the new secret only");
    assert!(signing::verify_guide_signature(
        new,
        &got[2].body,
        got[2].header("x-webhook-signature").unwrap_or_default()
    ));
}

#[tokio::test]
async fn a_stale_view_of_the_breaker_costs_one_post_then_is_read_afresh() {
    let receiver = Receiver::start(Reply::Status(500)).await;
    // A TTL far longer than the test: only the failed compare-and-set can refresh the view.
    let s = setup(Duration::from_secs(60)).await;
    let hook = s.register(&receiver.url("/hook"), "a-secret-of-sixteen-or-more").await;
    receiver.script(vec![Reply::Status(200)]);
    s.send(1).await;
    s.run().await;
    assert_eq!(receiver.received().len(), 1);
    let reads = s.meter.calls("WebhookStore::get");

    // Another container opens the breaker for an hour.
    let seen = s.store.get(TENANT, &hook).await.expect("get").expect("webhook");
    let open = webhooks::health::Health {
        rev: seen.health.rev + 1,
        consecutive_failures: 5,
        failing_since: Some(s.clock.now_ms()),
        breaker_until: Some(s.clock.now_ms() + 3_600_000),
        ..seen.health.clone()
    };
    assert!(
        s.store
            .set_health(TENANT, &hook, &seen.health, &open)
            .await
            .expect("cas")
    );

    // This container still sees a closed breaker: one POST, which fails; recording it loses
    // the compare-and-set, the webhook is read afresh (bypassing the cache) and the failure
    // is recorded on the fresh health.
    s.send(2).await;
    s.ingest_all().await;
    s.dispatch_all().await;
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(s.meter.calls("WebhookStore::get"), reads + 1, "one fresh read");
    let stored = s.store.get(TENANT, &hook).await.expect("get").expect("webhook");
    assert_eq!(stored.health.consecutive_failures, 6);
    assert_eq!(stored.health.breaker_until, open.breaker_until);

    // From then on the container acts on the open breaker: deferred, no POST, no new read.
    s.send(3).await;
    s.ingest_all().await;
    s.dispatch_all().await;
    assert_eq!(receiver.received().len(), 2, "no POST while the breaker is open");
    assert_eq!(s.meter.calls("WebhookStore::get"), reads + 1);
}

#[tokio::test]
async fn the_local_runner_caches_only_when_asked() {
    for (var, stale) in [(None, false), (Some("60"), true)] {
        let receiver = Receiver::start(Reply::Status(200)).await;
        let s = setup_with(None, var).await;
        let hook = s.register(&receiver.url("/hook"), "a-secret-of-sixteen-or-more").await;
        s.send(1).await;
        s.run().await;
        let (status, _) = s
            .call(
                reqwest::Method::PUT,
                &format!("/api/webhooks/{hook}"),
                Some(json!({"active": false})),
            )
            .await;
        assert_eq!(status, 200);
        s.send(2).await;
        s.run().await;
        assert_eq!(
            receiver.received().len(),
            if stale { 2 } else { 1 },
            "WEBHOOK_CACHE_SECONDS={var:?}: a change applies to the next delivery unless cached"
        );
        s.clock.advance(TTL);
        s.send(3).await;
        s.run().await;
        assert_eq!(receiver.received().len(), if stale { 2 } else { 1 });
    }
}
