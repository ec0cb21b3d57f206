//! Sections 5 and 6: AWS calls and their price, through the emulator-backed pipeline with
//! counting decorators around the DynamoDB and SQS adapters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use webhooks::config::DEFAULT_RETRY_SCHEDULE;
use webhooks::delivery::Deliverer;
use webhooks::domain::Webhook;
use webhooks::dynamo::{DynamoDeliveryLog, DynamoEventStore, DynamoWebhookStore, get_s};
use webhooks::event_types::EventType;
use webhooks::messages::{Event, encode_event};
use webhooks::ports::{OutgoingMessage, Queue, WebhookStore};
use webhooks::resources::{
    DELIVERIES_TABLE, DELIVERY_DLQ, DELIVERY_QUEUE, EVENTS_DLQ, EVENTS_QUEUE, WEBHOOKS_TABLE, create_queues,
    create_table,
};
use webhooks::sqs::SqsQueue;
use webhooks::ssrf::TargetPolicy;
use webhooks_dispatcher::Dispatcher;
use webhooks_ingest::Ingest;
use webhooks_local::{DISPATCH_POLLERS, Handler, INGEST_POLLERS, poll_once};

use crate::meter::{CountingEvents, CountingLog, CountingQueue, CountingStore, Meter, Wire, item_size};
use crate::payload::{EVENT, payload};
use crate::sink::Sink;
use crate::table::{Table, dollars, f1, f2, f3, int};

/// us-east-1 on-demand prices, USD.
pub const PRICE_WRU: f64 = 0.625 / 1e6;
pub const PRICE_RRU: f64 = 0.125 / 1e6;
pub const PRICE_SQS: f64 = 0.40 / 1e6;
pub const PRICE_LAMBDA_REQ: f64 = 0.20 / 1e6;
pub const PRICE_LAMBDA_GBS: f64 = 0.000_013_333_4;
/// API Gateway HTTP API, first 300 M requests a month: what `POST /api/events` adds per event.
pub const PRICE_HTTP_API: f64 = 1.00 / 1e6;
/// DynamoDB provisioned capacity, us-east-1, per unit-hour: one WCU is one 1 KB write a second,
/// one RCU one strongly consistent 4 KB read a second (two eventually consistent).
pub const PRICE_WCU_HOUR: f64 = 0.000_65;
pub const PRICE_RCU_HOUR: f64 = 0.000_13;
/// Auto scaling's usual target: provisioned units are paid for whether used or not.
pub const PROVISIONED_UTILISATION: f64 = 0.7;
/// The functions' memory size in `template.yaml`, in GB.
pub const LAMBDA_GB: f64 = 0.25;

/// In-region latencies for the Lambda model (ms per call, SDK and network included): AWS
/// gives single-digit ms on average for DynamoDB GetItem/PutItem; SQS is quoted below 10 ms
/// to send and receive (tests/BENCH.md, "Prices used", has the sources).
pub const MODEL_DYNAMODB_MS: f64 = 8.0;
pub const MODEL_SQS_MS: f64 = 10.0;
/// The receiver's answer, which a dispatcher invocation waits for (its jobs run concurrently,
/// so about once per invocation). The bench's receiver answers at once; real ones do not.
pub const MODEL_RECEIVER_MS: f64 = 100.0;
/// Our own CPU per invocation (decode, sign, encode): well under this in section 2.
pub const MODEL_CPU_MS: f64 = 2.0;

pub const PRICES: &str = "prices (us-east-1): DynamoDB on demand $0.625/M WRU, $0.125/M RRU (provisioned $0.00065/WCU-h, \
                          $0.00013/RCU-h at 70% use); SQS standard $0.40/M requests (64 KB chunks); Lambda arm64 \
                          $0.20/M requests + $0.0000133334/GB-s at 0.25 GB; API Gateway HTTP API $1.00/M";

struct Env {
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    webhooks_table: String,
    deliveries_table: String,
    urls: HashMap<&'static str, String>,
    sink: Sink,
    wire: Wire,
}

/// `WEBHOOK_CACHE_SECONDS`' default in the Lambda functions.
const LAMBDA_WEBHOOK_CACHE: Duration = Duration::from_secs(webhooks::config::DEFAULT_WEBHOOK_CACHE_S);

struct Pipeline {
    meter: Arc<Meter>,
    store: Arc<dyn WebhookStore>,
    queue: Arc<dyn Queue>,
    ingest: Ingest,
    dispatcher: Dispatcher,
}

fn pipeline(env: &Env) -> Pipeline {
    let meter = Arc::new(Meter::default());
    let store: Arc<dyn WebhookStore> = Arc::new(CountingStore {
        inner: Arc::new(DynamoWebhookStore::new(env.dynamo.clone(), &env.webhooks_table)),
        meter: meter.clone(),
    });
    let log: Arc<dyn webhooks::ports::DeliveryLog> = Arc::new(CountingLog {
        inner: Arc::new(DynamoDeliveryLog::new(env.dynamo.clone(), &env.deliveries_table)),
        meter: meter.clone(),
    });
    let labels = HashMap::from([
        (env.urls[EVENTS_QUEUE.logical_id].clone(), "events"),
        (env.urls[EVENTS_DLQ.logical_id].clone(), "events DLQ"),
        (env.urls[DELIVERY_QUEUE.logical_id].clone(), "delivery"),
        (env.urls[DELIVERY_DLQ.logical_id].clone(), "delivery DLQ"),
    ]);
    let queue: Arc<dyn Queue> = Arc::new(CountingQueue {
        inner: Arc::new(SqsQueue::new(env.sqs.clone())),
        meter: meter.clone(),
        labels,
    });
    let events: Arc<dyn webhooks::ports::EventStore> = Arc::new(CountingEvents {
        inner: Arc::new(DynamoEventStore::new(env.dynamo.clone(), &env.deliveries_table)),
        meter: meter.clone(),
    });
    // As deployed: ingest and the dispatcher are separate Lambda containers, each reading
    // webhooks through its own cache for WEBHOOK_CACHE_SECONDS (5 by default in Lambda).
    let cached = || webhooks::cache::CachedWebhookStore::wrap(store.clone(), LAMBDA_WEBHOOK_CACHE, Default::default());
    let ingest = Ingest {
        store: cached(),
        events: events.clone(),
        queue: queue.clone(),
        events_queue_url: env.urls[EVENTS_QUEUE.logical_id].clone(),
        delivery_queue_url: env.urls[DELIVERY_QUEUE.logical_id].clone(),
        dead_letter_url: env.urls[EVENTS_DLQ.logical_id].clone(),
        retention_days: 30,
        metrics: Default::default(),
    };
    let dispatcher = Dispatcher {
        store: cached(),
        log,
        events,
        queue: queue.clone(),
        deliverer: Deliverer::new(TargetPolicy::PERMISSIVE).expect("client"),
        delivery_queue_url: env.urls[DELIVERY_QUEUE.logical_id].clone(),
        dead_letter_url: env.urls[DELIVERY_DLQ.logical_id].clone(),
        schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
        timeout: Duration::from_secs(15),
        retention_days: 30,
        recover_page: 100,
        clock: Default::default(),
        breaker: Default::default(),
        events_queue_url: env.urls[EVENTS_QUEUE.logical_id].clone(),
        metrics: Default::default(),
        keys: Default::default(),
        park_from_s: webhooks_dispatcher::PARK_FROM_S,
    };
    Pipeline {
        meter,
        store,
        queue,
        ingest,
        dispatcher,
    }
}

/// The handlers as the pollers invoke them, timed as Lambda bills them.
fn handlers(p: &Pipeline) -> (Handler, Handler) {
    let (ingest, meter) = (p.ingest.clone(), p.meter.clone());
    let ingest: Handler = Arc::new(move |e| {
        let (ingest, meter) = (ingest.clone(), meter.clone());
        Box::pin(async move {
            let (n, t) = (e.records.len(), Instant::now());
            let r = ingest.handle(e).await;
            meter.invocation("ingest", n, t.elapsed());
            r
        })
    });
    let (dispatcher, meter) = (p.dispatcher.clone(), p.meter.clone());
    let dispatch: Handler = Arc::new(move |e| {
        let (dispatcher, meter) = (dispatcher.clone(), meter.clone());
        Box::pin(async move {
            let (n, t) = (e.records.len(), Instant::now());
            let r = dispatcher.handle(e, None).await;
            meter.invocation("dispatcher", n, t.elapsed());
            r
        })
    });
    (ingest, dispatch)
}

async fn create_webhooks(p: &Pipeline, env: &Env, tenant: &str, n: usize) {
    let now = webhooks::time::now_ms();
    let hooks: Vec<Webhook> = (0..n)
        .map(|i| Webhook {
            id: webhooks::ids::new_id("wh"),
            tenant: tenant.to_string(),
            url: env.sink.url(&format!("/cost/{i}")),
            events: vec![EVENT.to_string()],
            secret: Some("whsec-bench-cost-secret".into()),
            previous_secrets: Vec::new(),
            active: true,
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
            disabled: None,
        })
        .collect();
    // One at a time: moto's TransactWriteItems copies the table without a lock, and a
    // concurrent transaction can make it fail with a 500.
    for w in hooks {
        let mut tries = 0;
        while let Err(e) = p.store.create(&w).await {
            tries += 1;
            assert!(tries < 5, "create webhook on the emulator: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn event_body(tenant: &str, id: String, seq: u64) -> String {
    encode_event(&Event {
        tenant: webhooks::messages::Tenant::parse(tenant).expect("tenant"),
        id: webhooks::messages::EventId::parse(&id).expect("id"),
        event: EventType::parse(EVENT).expect("known type"),
        timestamp_ms: webhooks::time::now_ms(),
        payload: payload(1024, Some(seq)),
    })
}

/// Enqueues events as a batching producer does: one SendMessageBatch of up to 10 straight to
/// the events queue (what `POST /api/events` does with one event per call).
async fn send_events(p: &Pipeline, env: &Env, bodies: Vec<String>) {
    let m: Vec<OutgoingMessage> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| OutgoingMessage {
            id: i.to_string(),
            body,
            reason: None,
            delay_s: 0,
        })
        .collect();
    let failed = p
        .queue
        .send_batch(&env.urls[EVENTS_QUEUE.logical_id], &m)
        .await
        .expect("send events");
    assert!(failed.is_empty(), "the emulator refused an event");
}

/// The API calls the ports' mapping predicts next to those seen on the wire.
fn wire_check(meter: &Meter, wire: &Wire) -> String {
    let mut predicted: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (_, s) in meter.stats() {
        let api = s.api.split_whitespace().next().unwrap_or("").to_string();
        *predicted.entry(api).or_default() += s.api_calls;
    }
    let seen = wire.counts();
    let mut names: Vec<&String> = predicted.keys().chain(seen.keys()).collect();
    names.sort();
    names.dedup();
    let mut parts = Vec::new();
    let mut all_match = true;
    for name in names {
        let (p, w) = (
            predicted.get(name).copied().unwrap_or(0),
            seen.get(name).copied().unwrap_or(0),
        );
        all_match &= p == w;
        parts.push(if p == w {
            format!("{name} {}", int(w as f64))
        } else {
            format!("{name} {} (ports predict {})", int(w as f64), int(p as f64))
        });
    }
    format!(
        "on the wire (x-amz-target, retries included): {}{}",
        parts.join(", "),
        if all_match {
            "; all as the ports predict"
        } else {
            "; MISMATCH: see the figures in parentheses"
        }
    )
}

fn per_unit(v: f64) -> String {
    if v >= 100.0 { int(v) } else { f3(v) }
}

/// What a run costs per million units, by service; Lambda both as measured on moto and as
/// modelled with in-region latencies.
struct Priced {
    dynamodb: f64,
    dynamodb_provisioned: f64,
    sqs: f64,
    lambda_measured: f64,
    lambda_modelled: f64,
}

impl Priced {
    fn measured(&self) -> f64 {
        self.dynamodb + self.sqs + self.lambda_measured
    }

    /// The verdict's figure: in-region Lambda time, not moto's.
    fn modelled(&self) -> f64 {
        self.dynamodb + self.sqs + self.lambda_modelled
    }

    fn provisioned(&self) -> f64 {
        self.dynamodb_provisioned + self.sqs + self.lambda_modelled
    }
}

/// `ports::send_all`'s concurrent SendMessageBatch calls.
const SEND_CONCURRENCY: f64 = 8.0;
/// Events per SendMessageBatch of a batching producer (SQS's maximum).
const PRODUCER_BATCH: usize = 10;

/// Lambda time per invocation in region, from the calls each handler makes one after the
/// other: ingest claims, finds subscribers, sends the jobs (`SEND_CONCURRENCY` calls at a
/// time), completes; the dispatcher reads the webhook and the record together, POSTs, records.
fn modelled_ms(meter: &Meter, function: &str, invocations: u64) -> f64 {
    match function {
        "ingest" => {
            let sends = meter.calls("Queue::send_batch (delivery)") as f64 / invocations.max(1) as f64;
            let rounds = (sends / SEND_CONCURRENCY).ceil().max(1.0);
            3.0 * MODEL_DYNAMODB_MS + rounds * MODEL_SQS_MS + MODEL_CPU_MS
        }
        _ => 2.0 * MODEL_DYNAMODB_MS + MODEL_RECEIVER_MS + MODEL_CPU_MS,
    }
}

/// Price of the counted calls and the per-method rows, per `per` units (deliveries or events).
fn price_table(t: &mut Table, meter: &Meter, per: f64, per_label: &str) -> Priced {
    let scale = 1e6 / per;
    let (mut ddb, mut ddb_provisioned, mut sqs, mut idle) = (0.0, 0.0, 0.0, 0.0);
    let wcu = PRICE_WCU_HOUR / 3600.0 / PROVISIONED_UTILISATION;
    let rcu = PRICE_RCU_HOUR / 3600.0 / PROVISIONED_UTILISATION;
    for (key, s) in meter.stats() {
        let cost = s.rru * PRICE_RRU + s.wru * PRICE_WRU + s.sqs * PRICE_SQS;
        let num = |v: f64| if v >= 100.0 { int(v) } else { f1(v) };
        let mut units = Vec::new();
        if s.wru > 0.0 {
            units.push(format!("{} WRU", num(s.wru)));
        }
        if s.rru > 0.0 {
            units.push(format!("{} RRU", num(s.rru)));
        }
        if s.sqs > 0.0 {
            units.push(format!("{} req", int(s.sqs)));
        }
        let price = if s.empty > 0 {
            idle += cost;
            format!("({}) idle", dollars(cost * scale))
        } else {
            if s.sqs > 0.0 {
                sqs += cost;
            } else {
                ddb += cost;
                ddb_provisioned += s.wru * wcu + s.rru * rcu;
            }
            dollars(cost * scale)
        };
        t.row(vec![
            key,
            s.api.to_string(),
            int(s.calls as f64),
            int(s.api_calls as f64),
            per_unit(s.api_calls as f64 / per),
            units.join(" + "),
            price,
            f2(s.time.as_secs_f64() * 1000.0 / s.calls.max(1) as f64),
        ]);
    }
    let (mut lambda, mut modelled) = (0.0, 0.0);
    let mut model_notes = Vec::new();
    for (name, l) in meter.lambda() {
        let gbs = l.billed_ms as f64 / 1000.0 * LAMBDA_GB;
        let requests = l.invocations as f64 * PRICE_LAMBDA_REQ;
        let cost = requests + gbs * PRICE_LAMBDA_GBS;
        lambda += cost;
        let ms = modelled_ms(meter, name, l.invocations);
        let model_gbs = l.invocations as f64 * ms / 1000.0 * LAMBDA_GB;
        modelled += requests + model_gbs * PRICE_LAMBDA_GBS;
        model_notes.push(format!(
            "{name} {} GB-s ({} ms x {} invocations)",
            f3(model_gbs),
            f1(ms),
            int(l.invocations as f64)
        ));
        t.row(vec![
            format!("Lambda {name}"),
            format!(
                "Invoke (avg batch {:.1})",
                l.messages as f64 / l.invocations.max(1) as f64
            ),
            int(l.invocations as f64),
            int(l.invocations as f64),
            per_unit(l.invocations as f64 / per),
            format!("{} GB-s on moto", f2(gbs)),
            dollars(cost * scale),
            f2(l.wall.as_secs_f64() * 1000.0 / l.invocations.max(1) as f64),
        ]);
    }
    let priced = Priced {
        dynamodb: ddb * scale,
        dynamodb_provisioned: ddb_provisioned * scale,
        sqs: sqs * scale,
        lambda_measured: lambda * scale,
        lambda_modelled: modelled * scale,
    };
    t.note(format!(
        "per million {per_label}, Lambda as measured on moto: DynamoDB {} + SQS {} + Lambda {} = {} (empty receives, \
         idle polling, {} not included)",
        dollars(priced.dynamodb),
        dollars(priced.sqs),
        dollars(priced.lambda_measured),
        dollars(priced.measured()),
        dollars(idle * scale),
    ));
    t.note(format!(
        "Lambda modelled in region (DynamoDB {MODEL_DYNAMODB_MS} ms, SQS {MODEL_SQS_MS} ms a call, receiver \
         {MODEL_RECEIVER_MS} ms, CPU {MODEL_CPU_MS} ms an invocation): {}; Lambda {} per million {per_label}",
        model_notes.join(", "),
        dollars(priced.lambda_modelled)
    ));
    t.note(format!(
        "per million {per_label}, Lambda modelled (the verdict's figure): DynamoDB {} + SQS {} + Lambda {} = {}",
        dollars(priced.dynamodb),
        dollars(priced.sqs),
        dollars(priced.lambda_modelled),
        dollars(priced.modelled()),
    ));
    t.note(format!(
        "separate line, DynamoDB provisioned for a steady load at {:.0}% use instead of on demand: DynamoDB {} \
         -> total {}",
        PROVISIONED_UTILISATION * 100.0,
        dollars(priced.dynamodb_provisioned),
        dollars(priced.provisioned()),
    ));
    priced
}

fn headers(per: &'static str) -> [&'static str; 8] {
    [
        "port method",
        "AWS API",
        "calls",
        "API calls",
        per,
        "units",
        "$ per M",
        "ms/call (moto)",
    ]
}

/// Section 5: `events` events to a tenant with `fanout` webhooks, through ingest and the
/// dispatcher driven by pollers like the local runner's.
async fn deliveries(env: &Env, events: usize, fanout: usize, quick: bool) -> (Table, Priced) {
    let p = pipeline(env);
    let tenant = webhooks_tests::unique("cost");
    create_webhooks(&p, env, &tenant, fanout).await;
    p.meter.reset();
    env.wire.reset();
    let total = (events * fanout) as u64;
    let arrived_before = env.sink.count();
    let (ingest, dispatch) = handlers(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(if quick { 300 } else { 900 });
    let mut pollers = Vec::new();
    for (n, url, handler) in [
        (INGEST_POLLERS, &env.urls[EVENTS_QUEUE.logical_id], &ingest),
        (DISPATCH_POLLERS, &env.urls[DELIVERY_QUEUE.logical_id], &dispatch),
    ] {
        for _ in 0..n {
            let (queue, url, handler, stop) = (p.queue.clone(), url.clone(), handler.clone(), stop.clone());
            pollers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if poll_once(queue.as_ref(), &url, Duration::from_secs(1), &handler)
                        .await
                        .is_err()
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
        }
    }
    let t0 = Instant::now();
    let bodies: Vec<String> = (0..events)
        .map(|i| event_body(&tenant, format!("evt-{i}"), i as u64))
        .collect();
    let batches: Vec<Vec<String>> = bodies.chunks(PRODUCER_BATCH).map(<[String]>::to_vec).collect();
    futures::stream::iter(batches)
        .map(|b| send_events(&p, env, b))
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    // Done when every delivery's attempt is recorded and its job deleted (one by one or in batches).
    let delivered_key = "DeliveryLog::record_attempt";
    let deleted = |m: &Meter| m.messages("Queue::delete (delivery)") + m.messages("Queue::delete_batch (delivery)");
    while (p.meter.calls(delivered_key) < total || deleted(&p.meter) < total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in pollers {
        let _ = t.await;
    }
    let arrived = env.sink.count() - arrived_before;
    let mut t = Table::new(
        format!(
            "5. Cost: {} deliveries ({events} events x fan-out {fanout}, sent {PRODUCER_BATCH} per SendMessageBatch by \
             the producer) through ingest + dispatcher on the emulator",
            int(total as f64)
        ),
        &headers("per delivery"),
    );
    let price = price_table(&mut t, &p.meter, total as f64, "deliveries");
    t.note(wire_check(&p.meter, &env.wire));
    // Lambda's event source mapping deletes a handled batch itself. Where messages are still
    // deleted one by one, what one DeleteMessageBatch per invocation would save:
    let mut batched = 0.0;
    for (function, queue) in [("ingest", "events"), ("dispatcher", "delivery")] {
        let deletes = p.meter.calls(&format!("Queue::delete ({queue})")) as f64;
        let invocations = p
            .meter
            .lambda()
            .iter()
            .find(|(f, _)| *f == function)
            .map(|(_, l)| l.invocations as f64)
            .unwrap_or(0.0);
        batched += (deletes - invocations).max(0.0) * PRICE_SQS * 1e6 / total as f64;
    }
    if batched > 0.0 {
        t.note(format!(
            "some deletes are one DeleteMessage per message; one DeleteMessageBatch per invocation would save {} per M",
            dollars(batched)
        ));
    }
    t.note(
        "Lambda GB-s on moto is handler wall time against moto (slower than DynamoDB/SQS in region) and a receiver \
         that answers at once; the modelled figure waits for the receiver instead",
    );
    // Producers that cannot batch send each event through the API: one HTTP API request, one
    // api invocation (modelled like ingest's single write, as the API only enqueues) and one
    // SendMessageBatch per event, instead of a tenth of one.
    let per_event = 1e6 / total as f64 * events as f64 / 1e6;
    let batches = p.meter.calls("Queue::send_batch (events)") as f64;
    let extra_sqs = (events as f64 - batches).max(0.0) * PRICE_SQS * 1e6 / total as f64;
    let api_ms = MODEL_SQS_MS + MODEL_CPU_MS;
    let api = per_event * 1e6 * (PRICE_HTTP_API + PRICE_LAMBDA_REQ + api_ms / 1000.0 * LAMBDA_GB * PRICE_LAMBDA_GBS);
    t.note(format!(
        "separate line, producers sending through POST /api/events instead: + SQS {} + API Gateway and the api \
         function {} = {} per million deliveries (Lambda modelled)",
        dollars(extra_sqs),
        dollars(api),
        dollars(price.modelled() + extra_sqs + api)
    ));
    t.note(item_sizes(env, &tenant).await);
    t.note(format!(
        "{} of {} deliveries arrived in {:.1} s ({} deliveries/s through moto; not a production figure)",
        int(arrived as f64),
        int(total as f64),
        elapsed.as_secs_f64(),
        int(arrived as f64 / elapsed.as_secs_f64())
    ));
    (t, price)
}

/// The tenant's items as DynamoDB sizes them, read back from the table after the run: what the
/// meter's estimates stand for.
async fn item_sizes(env: &Env, tenant: &str) -> String {
    let mut sizes: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    let event_pk = format!("E#{tenant}#");
    let mut start = None;
    for _ in 0..1_000 {
        let out = match env
            .dynamo
            .scan()
            .table_name(&env.deliveries_table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => return format!("item sizes: the scan failed: {e}"),
        };
        for item in out.items() {
            let (pk, sk) = (
                get_s(item, "pk").unwrap_or_default(),
                get_s(item, "sk").unwrap_or_default(),
            );
            let kind = if pk.starts_with(&event_pk) && sk == "E" {
                "claim items"
            } else if pk.starts_with(&event_pk) && sk == "F" {
                "completion items"
            } else if sk.starts_with("D#") && get_s(item, "tenant").as_deref() == Some(tenant) {
                "delivery records"
            } else {
                continue;
            };
            sizes.entry(kind).or_default().push(item_size(item));
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    let parts: Vec<String> = sizes
        .iter()
        .map(|(kind, v)| {
            let max = v.iter().copied().max().unwrap_or(0);
            format!(
                "{} {kind} avg {} B, max {max} B ({} WRU a write)",
                int(v.len() as f64),
                v.iter().sum::<usize>() / v.len().max(1),
                max.div_ceil(1024).max(1)
            )
        })
        .collect();
    format!(
        "item sizes read back from the table (DynamoDB's rules: names + values): {}",
        parts.join("; ")
    )
}

/// Section 6: one event to a tenant with `fanout` webhooks: ingest's time and calls.
async fn fan_out(env: &Env, fanout: usize) -> Table {
    let p = pipeline(env);
    let tenant = webhooks_tests::unique("fanout");
    let setup = Instant::now();
    create_webhooks(&p, env, &tenant, fanout).await;
    let setup = setup.elapsed();
    p.meter.reset();
    env.wire.reset();
    let (ingest, _) = handlers(&p);
    let t0 = Instant::now();
    send_events(&p, env, vec![event_body(&tenant, "evt-fanout".into(), 0)]).await;
    let url = &env.urls[EVENTS_QUEUE.logical_id];
    let deadline = Instant::now() + Duration::from_secs(120);
    // Fanned out when every job has been enqueued.
    while p.meter.items("Queue::send_batch (delivery)") < fanout as u64 && Instant::now() < deadline {
        let _ = poll_once(p.queue.as_ref(), url, Duration::from_secs(1), &ingest).await;
    }
    let elapsed = t0.elapsed();
    let mut t = Table::new(
        format!(
            "6. Fan-out: one event subscribed by {} webhooks, ingested on the emulator",
            int(fanout as f64)
        ),
        &headers("per event"),
    );
    price_table(&mut t, &p.meter, 1.0, "such events");
    t.note(wire_check(&p.meter, &env.wire));
    let handler = p.meter.lambda().first().map(|(_, l)| l.wall).unwrap_or_default();
    t.note(format!(
        "ingest handler: {:.2} s for {} delivery jobs ({:.2} ms per delivery); send -> fanned out: {:.2} s; Lambda \
         ingest timeout: 60 s",
        handler.as_secs_f64(),
        int(p.meter.messages("Queue::send_batch (delivery)") as f64),
        handler.as_secs_f64() * 1000.0 / (fanout.max(1) as f64),
        elapsed.as_secs_f64()
    ));
    let mut busy: Vec<(String, f64)> = p
        .meter
        .stats()
        .into_iter()
        .map(|(k, s)| (k, s.time.as_secs_f64()))
        .filter(|(_, t)| *t >= 0.01)
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    t.note(format!(
        "time inside the calls, summed over concurrent ones: {}",
        busy.iter()
            .map(|(k, t)| format!("{k} {t:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    t.note(format!(
        "(setup, not counted: {fanout} webhooks created in {:.1} s)",
        setup.as_secs_f64()
    ));
    t
}

fn skipped(why: &str) -> Vec<Table> {
    let mut t = Table::new("5./6. Cost and fan-out (emulator)", &["status"]);
    t.row(vec![format!("skipped: {why}")]);
    t.note("start it with: infra/emulator.sh start && eval \"$(infra/emulator.sh env)\"");
    vec![t]
}

pub async fn run(quick: bool, cost: bool, fanout: bool) -> Vec<Table> {
    let endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
    if !endpoint {
        return skipped("AWS_ENDPOINT_URL is not set, so there is no emulator to count calls against");
    }
    let sdk = webhooks::aws_config().await;
    let wire = Wire::default();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(wire.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(wire.clone())
            .build(),
    );
    let reachable = tokio::time::timeout(Duration::from_secs(5), dynamo.list_tables().limit(1).send()).await;
    if !matches!(reachable, Ok(Ok(_))) {
        return skipped("the emulator at AWS_ENDPOINT_URL does not answer");
    }
    let prefix = webhooks_tests::unique("bench");
    let (webhooks_table, deliveries_table) = (format!("{prefix}-webhooks"), format!("{prefix}-deliveries"));
    create_table(&dynamo, &WEBHOOKS_TABLE, &webhooks_table)
        .await
        .expect("webhooks table");
    create_table(&dynamo, &DELIVERIES_TABLE, &deliveries_table)
        .await
        .expect("deliveries table");
    let urls: HashMap<&'static str, String> = create_queues(&sqs, &format!("{prefix}-"))
        .await
        .expect("queues")
        .into_iter()
        .collect();
    let env = Env {
        dynamo,
        sqs,
        webhooks_table,
        deliveries_table,
        urls,
        sink: Sink::start(false).await,
        wire,
    };
    let mut tables = Vec::new();
    if cost {
        let scale = if quick { 10 } else { 1 };
        let (mut a, price_1) = deliveries(&env, 1_000 / scale, 1, quick).await;
        let (mut b, price_10) = deliveries(&env, 100 / scale, 10, quick).await;
        for (t, price, fanout, target) in [(&mut a, &price_1, 1, 1.00), (&mut b, &price_10, 10, 0.70)] {
            t.note(PRICES);
            t.verdict(
                price.modelled() < target,
                format!(
                    "{} per million deliveries at fan-out {fanout}, DynamoDB on demand, Lambda modelled in region \
                     (target < {}; {} with Lambda as measured on moto)",
                    dollars(price.modelled()),
                    dollars(target),
                    dollars(price.measured())
                ),
            );
            t.verdict(
                price.provisioned() < target,
                format!(
                    "{} per million deliveries at fan-out {fanout} with DynamoDB provisioned for a steady load at \
                     {:.0}% use (separate line; target < {})",
                    dollars(price.provisioned()),
                    PROVISIONED_UTILISATION * 100.0,
                    dollars(target)
                ),
            );
        }
        tables.push(a);
        tables.push(b);
    }
    if fanout {
        tables.push(fan_out(&env, if quick { 100 } else { 1_000 }).await);
    }
    // The tables and queues were made for this run; leave the emulator as it was.
    let _ = env.dynamo.delete_table().table_name(&env.webhooks_table).send().await;
    let _ = env.dynamo.delete_table().table_name(&env.deliveries_table).send().await;
    for url in env.urls.values() {
        let _ = env.sqs.delete_queue().queue_url(url).send().await;
    }
    tables
}
