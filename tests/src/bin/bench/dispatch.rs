//! Section 2: deliveries per second through `Dispatcher::handle` (in-memory ports, the real
//! `Deliverer`) next to a bare reqwest client POSTing the same bytes to the same receiver.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use futures::StreamExt;
use webhooks::delivery::Deliverer;
use webhooks::domain::Webhook;
use webhooks::memory::{MemoryDeliveryLog, MemoryQueue, MemoryWebhookStore};
use webhooks::messages::{DeliveryJob, EventId, JobBody, Tenant};
use webhooks::ports::{QueueMessage, WebhookStore};
use webhooks::signing::{self, Envelope, SignedRequest};
use webhooks::ssrf::TargetPolicy;
use webhooks_dispatcher::Dispatcher;

use crate::payload::{EVENT, payload};
use crate::signing::{Op, measure};
use crate::sink::Sink;
use crate::table::{Table, f1, f2, int, median};

/// Batches in flight at once, like the local runner's dispatch pollers (Lambda invocations).
const LOOPS: usize = webhooks_local::DISPATCH_POLLERS;
/// Jobs per SQS batch; the dispatcher delivers the jobs of one batch concurrently.
const BATCH: usize = 10;
const WEBHOOKS: usize = 10;
const SECRET: &str = "whsec-bench-0123456789abcdef";

/// Process CPU time (user + system) so far, from /proc/self/stat (clock ticks of 10 ms).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Prepared {
    dispatcher: Dispatcher,
    batches: Vec<SqsEvent>,
}

/// How the jobs are written: format 1 is what ingest wrote before the body was rendered once
/// per event (the payload, the body built at each attempt: today's path at the time of
/// issue 13); format 2 carries the body. Both go through the same dispatcher.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    One,
    Two,
}

/// A job as format 1 wrote it: one JSON object, the payload raw under `payload` (the field
/// order of the old `#[derive(Serialize)]`).
fn format1(job: &DeliveryJob, payload: &str) -> String {
    format!(
        r#"{{"deliveryId":{},"webhookId":{},"tenant":{},"eventId":{},"event":{},"timestampMs":{},"cycle":{},"payload":{payload}}}"#,
        serde_json::to_string(&job.delivery_id).expect("json"),
        serde_json::to_string(&job.webhook_id).expect("json"),
        serde_json::to_string(job.tenant.as_str()).expect("json"),
        serde_json::to_string(job.event_id.as_str()).expect("json"),
        serde_json::to_string(&job.event).expect("json"),
        job.timestamp_ms,
        job.cycle,
    )
}

/// Webhooks in the store, a pending delivery record per job in the log, and the jobs as the
/// SQS batches Lambda would hand over.
async fn prepare(deliverer: &Deliverer, sink: &Sink, n: usize, format: Format) -> Prepared {
    let store = Arc::new(MemoryWebhookStore::new());
    let log = Arc::new(MemoryDeliveryLog::new());
    let queue = Arc::new(MemoryQueue::new());
    let queue_url = queue.create_queue("bench-delivery-jobs", Duration::from_secs(180), None);
    let now = webhooks::time::now_ms();
    let tenant = "bench";
    let mut hooks = Vec::new();
    for i in 0..WEBHOOKS {
        let w = Webhook {
            id: webhooks::ids::new_id("wh"),
            tenant: tenant.into(),
            url: sink.url(&format!("/hook/{i}")),
            events: vec![EVENT.into()],
            secret: Some(SECRET.into()),
            previous_secrets: Vec::new(),
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
            disabled: None,
        };
        store.create(&w).await.expect("create webhook");
        hooks.push(w.id);
    }
    let rendered = webhooks::jsjson::to_string(&payload(1024, None));
    let event_id = webhooks::ids::new_id("evt");
    let mut messages = Vec::with_capacity(n);
    for i in 0..n {
        let webhook_id = hooks[i % WEBHOOKS].clone();
        let mut job = DeliveryJob {
            delivery_id: webhooks::retry::delivery_id(tenant, &format!("{event_id}-{i}"), &webhook_id, now),
            webhook_id,
            tenant: Tenant::parse(tenant).expect("tenant"),
            event_id: EventId::parse(&format!("{event_id}-{i}")).expect("id"),
            event: EVENT.into(),
            timestamp_ms: now,
            cycle: 0,
            body: JobBody::Stored,
            not_before_ms: None,
        };
        let body = match format {
            Format::One => format1(&job, &rendered),
            Format::Two => {
                job.body = JobBody::Rendered(job.render(&rendered).into());
                job.encode()
            }
        };
        // No record beforehand: the dispatcher creates it with the first attempt, as in production.
        let m = QueueMessage {
            message_id: format!("msg-{i}"),
            receipt_handle: format!("rh-{i}"),
            body,
            receive_count: 1,
            sent_timestamp_ms: now,
        };
        messages.push(webhooks_local::to_sqs_message(&m, &queue_url));
    }
    let mut batches = Vec::new();
    let mut it = messages.into_iter().peekable();
    while it.peek().is_some() {
        let mut e = SqsEvent::default();
        e.records = it.by_ref().take(BATCH).collect();
        batches.push(e);
    }
    let dispatcher = Dispatcher {
        store,
        log,
        events: Arc::new(webhooks::memory::MemoryEventStore::new()),
        queue,
        deliverer: deliverer.clone(),
        delivery_queue_url: queue_url.clone(),
        dead_letter_url: queue_url.clone(),
        schedule: vec![5, 300],
        timeout: Duration::from_secs(15),
        retention_days: 1,
        recover_page: 100,
        clock: Default::default(),
        breaker: Default::default(),
        events_queue_url: queue_url,
        metrics: Default::default(),
        keys: Default::default(),
        park_from_s: webhooks_dispatcher::PARK_FROM_S,
    };
    Prepared { dispatcher, batches }
}

/// Returns (elapsed, failed jobs).
async fn run_dispatcher(p: Prepared) -> (Duration, usize) {
    let queue = Arc::new(Mutex::new(VecDeque::from(p.batches)));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..LOOPS {
        let d = p.dispatcher.clone();
        let q = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                let next = q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(event) = next else { break };
                failed += d.handle(event, None).await.batch_item_failures.len();
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("dispatch task");
    }
    (t.elapsed(), failed)
}

pub fn raw_client() -> reqwest::Client {
    // The Deliverer's settings, minus its SSRF-guarding resolver (unused for an IP literal).
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn post(client: &reqwest::Client, url: &str, req: &SignedRequest) -> bool {
    let mut b = client.post(url).timeout(Duration::from_secs(15)).body(req.body.clone());
    for (k, v) in &req.headers {
        b = b.header(k.clone(), v.clone());
    }
    match b.send().await {
        Ok(mut r) => {
            let ok = r.status().is_success();
            while let Ok(Some(_)) = r.chunk().await {}
            ok
        }
        Err(_) => false,
    }
}

/// `LOOPS * BATCH` free-running senders (batched: `LOOPS` loops of `BATCH` concurrent POSTs,
/// each batch waiting for its slowest, as the dispatcher's batches do). Returns (elapsed, failed).
async fn run_raw(
    client: &reqwest::Client,
    url: &str,
    req: &SignedRequest,
    n: usize,
    batched: bool,
) -> (Duration, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let req = Arc::new(req.clone());
    let t = Instant::now();
    let mut tasks = Vec::new();
    let workers = if batched { LOOPS } else { LOOPS * BATCH };
    for _ in 0..workers {
        let (client, url, req, next) = (client.clone(), url.to_string(), req.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                if batched {
                    let start = next.fetch_add(BATCH, Ordering::Relaxed);
                    if start >= n {
                        break;
                    }
                    let k = BATCH.min(n - start);
                    let oks: Vec<bool> = futures::stream::iter(0..k)
                        .map(|_| post(&client, &url, &req))
                        .buffer_unordered(BATCH)
                        .collect()
                        .await;
                    failed += oks.iter().filter(|ok| !**ok).count();
                } else {
                    if next.fetch_add(1, Ordering::Relaxed) >= n {
                        break;
                    }
                    if !post(&client, &url, &req).await {
                        failed += 1;
                    }
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("raw task");
    }
    (t.elapsed(), failed)
}

#[derive(Default)]
struct Runs {
    rate: Vec<f64>,
    cpu_us: Vec<f64>,
    failed: usize,
}

impl Runs {
    fn add(&mut self, n: usize, (elapsed, failed): (Duration, usize), cpu: Duration) {
        self.rate.push(n as f64 / elapsed.as_secs_f64());
        self.cpu_us.push(cpu.as_secs_f64() * 1e6 / n as f64);
        self.failed += failed;
    }
}

pub async fn run(quick: bool) -> Table {
    // Many short rounds: the VM's speed drifts (and sometimes steps) during a run, so each
    // path's rate is compared with the raw ceiling of the same round.
    let n = if quick { 2_000 } else { 6_000 };
    let rounds = if quick { 1 } else { 9 };
    let sink = Sink::start(false).await;
    let deliverer = Deliverer::new(TargetPolicy::PERMISSIVE).expect("client");
    let client = raw_client();
    let p = webhooks::jsjson::to_string(&payload(1024, None));
    let req = Envelope {
        id: "dl_01jv9qk3m4r7t2w8x5y6z0abcd",
        event: EVENT,
        timestamp_ms: webhooks::time::now_ms(),
        payload: &p,
    }
    .sign(Some(SECRET), webhooks::time::now_ms() / 1000);
    let url = sink.url("/hook/raw");

    // Warm-up: connections open, allocator and caches settled.
    run_dispatcher(prepare(&deliverer, &sink, 2_000, Format::One).await).await;
    run_dispatcher(prepare(&deliverer, &sink, 2_000, Format::Two).await).await;
    run_raw(&client, &url, &req, 2_000, false).await;

    // A profiling aid: BENCH_DISPATCH_ONLY=raw|batched|format1|format2 runs one path only.
    const MODES: [&str; 4] = ["format2", "raw", "batched", "format1"];
    let only = std::env::var("BENCH_DISPATCH_ONLY").ok();
    let wanted = |k: usize| only.as_deref().is_none_or(|o| o == MODES[k]);
    let (mut two, mut raw, mut raw_b, mut one) = (Runs::default(), Runs::default(), Runs::default(), Runs::default());
    let before = sink.count();
    for round in 0..rounds {
        // Rotate the order so that no mode always runs first or last.
        for k in 0..MODES.len() {
            let mode = (round + k) % MODES.len();
            if !wanted(mode) {
                continue;
            }
            match mode {
                0 | 3 => {
                    let format = if mode == 0 { Format::Two } else { Format::One };
                    let prepared = prepare(&deliverer, &sink, n, format).await;
                    let c = cpu_time();
                    let r = run_dispatcher(prepared).await;
                    let runs = if mode == 0 { &mut two } else { &mut one };
                    runs.add(n, r, cpu_time() - c);
                }
                1 => {
                    let c = cpu_time();
                    let r = run_raw(&client, &url, &req, n, false).await;
                    raw.add(n, r, cpu_time() - c);
                }
                _ => {
                    let c = cpu_time();
                    let r = run_raw(&client, &url, &req, n, true).await;
                    raw_b.add(n, r, cpu_time() - c);
                }
            }
        }
    }
    let arrived = sink.count() - before;
    // Each round's rate over the same round's raw ceiling.
    let vs_raw = |r: &Runs| {
        let ratios: Vec<f64> = r.rate.iter().zip(&raw.rate).map(|(x, c)| x / c).collect();
        median(&ratios)
    };
    // What a path adds to the process's CPU per delivery over the bare POST of the same round.
    let added = |r: &Runs| {
        let gaps: Vec<f64> = r.cpu_us.iter().zip(&raw.cpu_us).map(|(d, r)| d - r).collect();
        median(&gaps)
    };
    let mut table = Table::new(
        format!(
            "2. Dispatch throughput to a 200 receiver on 127.0.0.1 ({} B signed body, {} batches x {} jobs in flight, \
             {n} deliveries x {rounds} rounds; rates: median; vs raw: median of per-round ratios)",
            req.body.len(),
            LOOPS,
            BATCH
        ),
        &[
            "path",
            "deliveries/s",
            "min",
            "max",
            "CPU us/delivery",
            "added CPU us",
            "failed",
            "vs raw",
        ],
    );
    let row = |table: &mut Table, name: &str, r: &Runs| {
        let rate = median(&r.rate);
        let min = r.rate.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.rate.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            name.to_string(),
            int(rate),
            int(min),
            int(max),
            f1(median(&r.cpu_us)),
            f1(added(r)),
            int(r.failed as f64),
            f2(vs_raw(r)),
        ]);
    };
    row(&mut table, "raw ceiling: reqwest, 40 free-running senders", &raw);
    row(&mut table, "raw, batched like the dispatcher (4 x 10, barrier)", &raw_b);
    row(
        &mut table,
        "Dispatcher::handle, job format 1 (payload; today's path)",
        &one,
    );
    row(
        &mut table,
        "Dispatcher::handle, job format 2 (body rendered in ingest)",
        &two,
    );
    table.note(format!(
        "receiver counted {} of {} requests; CPU is the whole process (client, receiver and runtime share 2 cores); \
         added CPU: the path's CPU per delivery minus the raw ceiling's in the same round (median)",
        int(arrived as f64),
        int((4 * n * rounds) as f64)
    ));
    // The dispatcher's own steps, each timed alone on one core (ns -> us).
    let mut job = DeliveryJob {
        delivery_id: "dl_01jv9qk3m4r7t2w8x5y6z0abcd".into(),
        webhook_id: "wh_01jv9qk3m4r7t2w8x5y6z0abcd".into(),
        tenant: Tenant::parse("bench").expect("tenant"),
        event_id: EventId::parse("evt_01jv9qk3m4r7t2w8x5y6z0abcd").expect("id"),
        event: EVENT.into(),
        timestamp_ms: webhooks::time::now_ms(),
        cycle: 0,
        body: JobBody::Stored,
        not_before_ms: None,
    };
    let job1 = format1(&job, &p);
    job.body = JobBody::Rendered(job.render(&p).into());
    let job2 = job.encode();
    let body = req.body.clone();
    let keys = [signing::SigningKey::new(SECRET)];
    let hook_url = sink.url("/hook/0");
    let mut steps: Vec<Op<'_>> = vec![
        (
            "  step alone, format 1: DeliveryJob::decode (payload kept raw)",
            Box::new(|| {
                black_box(DeliveryJob::decode(black_box(&job1)).ok());
            }),
        ),
        (
            "  step alone, format 1: Envelope::sign (body + 2 signatures)",
            Box::new(|| {
                black_box(
                    Envelope {
                        id: "dl_01jv9qk3m4r7t2w8x5y6z0abcd",
                        event: EVENT,
                        timestamp_ms: 1_747_862_829_442,
                        payload: &p,
                    }
                    .sign(Some(black_box(SECRET)), 1_747_862_829),
                );
            }),
        ),
        (
            "  step alone, format 2: DeliveryJob::decode (header only)",
            Box::new(|| {
                black_box(DeliveryJob::decode(black_box(&job2)).ok());
            }),
        ),
        (
            "  step alone, format 2: sign_rendered (2 signatures, keys derived before)",
            Box::new(|| {
                black_box(signing::sign_rendered(
                    "dl_01jv9qk3m4r7t2w8x5y6z0abcd",
                    EVENT,
                    1_747_862_829_442,
                    body.clone(),
                    black_box(&keys),
                    1_747_862_829,
                ));
            }),
        ),
        (
            "  step alone: ssrf::check_url (send-time URL check, the one parse)",
            Box::new(|| {
                black_box(webhooks::ssrf::check_url(black_box(&hook_url), TargetPolicy::PERMISSIVE).ok());
            }),
        ),
    ];
    let ns = measure(&mut steps, Duration::from_millis(if quick { 10 } else { 30 }));
    for ((name, _), ns) in steps.iter().zip(&ns) {
        let dash = || "-".to_string();
        table.row(vec![
            name.to_string(),
            dash(),
            dash(),
            dash(),
            f1(ns / 1000.0),
            dash(),
            dash(),
            dash(),
        ]);
    }
    let (added1, added2) = (added(&one), added(&two));
    table.note(format!(
        "CPU the dispatcher adds per delivery: format 1 {added1:.1} us, format 2 {added2:.1} us ({:.2}x); steps timed \
         alone: format 1 {:.1} us, format 2 {:.1} us (+ the URL check); the rest is the ports, tracing, allocator and \
         scheduling work (see tests/BENCH.md)",
        added2 / added1,
        (ns[0] + ns[1]) / 1000.0,
        (ns[2] + ns[3]) / 1000.0,
    ));
    let ratio = vs_raw(&two);
    table.verdict(
        ratio >= 0.8 && two.failed == 0,
        format!("dispatcher (format 2) reaches {ratio:.2} of the raw ceiling (target >= 0.8)"),
    );
    table.verdict(
        added2 <= 0.5 * added1 && one.failed == 0,
        format!(
            "CPU the dispatcher adds per delivery: {added2:.1} us against {added1:.1} us for today's path in the same \
             run, {:.2}x (target <= 0.5x)",
            added2 / added1
        ),
    );
    table
}
