//! Section `capacity`: the capacity model of tests/BENCH.md put to a simulation. Events go
//! through the real ingest and dispatcher code, several "containers" of each (each with its own
//! webhook cache when `WEBHOOK_CACHE_SECONDS` > 0), over the in-memory adapters wrapped in
//! `webhooks_tests::counting`'s decorators, which count every request against the DynamoDB
//! partition key the DynamoDB adapter would use, per second of a simulated clock. Deliveries
//! are real POSTs to a sink on 127.0.0.1. The clock is stopped and moved 100 ms per tick, so a
//! simulated second holds exactly its share of events however fast this machine is; the counts
//! are of requests, not time, and a debug build gives the same figures.
//!
//! Scaling: a run drives `SIM_RATE` deliveries per simulated second. The model's containers
//! grow in proportion to the rate (a dispatcher invocation of 10 jobs taking ~100 ms), so a
//! rate R is simulated at R / f with 1/f of its containers and, with many tenants, 1/f of its
//! tenants (each at its true rate). One tenant's keys then see 1/f of their real traffic and
//! are multiplied by f; many tenants' keys see their real traffic and are not.

use std::sync::Arc;
use std::time::Duration;

use webhooks::cache::CachedWebhookStore;
use webhooks::delivery::Deliverer;
use webhooks::domain::Webhook;
use webhooks::event_types::EventType;
use webhooks::health::BreakerPolicy;
use webhooks::memory::{MemoryDeliveryLog, MemoryEventStore, MemoryQueue, MemoryWebhookStore};
use webhooks::messages::{Event, EventId, Tenant, encode_event};
use webhooks::ports::{DeliveryLog, EventStore, OutgoingMessage, Queue, WebhookStore, send_all};
use webhooks::ssrf::TargetPolicy;
use webhooks::time::Clock;
use webhooks_dispatcher::Dispatcher;
use webhooks_ingest::Ingest;
use webhooks_local::{Handler, poll_once};
use webhooks_tests::counting::{KeyMeter, KeyedEvents, KeyedLog, KeyedStore, Load, Op};

use crate::payload::{EVENT, payload};
use crate::sink::Sink;
use crate::table::{Table, int};

/// Deliveries per simulated second in every run: 1,000, so that 1k/s is simulated whole and a
/// shard's count at 10k/s is multiplied by 10 rather than 20 (the multiplication scales the
/// sampling noise of the shards' unevenness by its square root).
const SIM_RATE: u64 = 1_000;
/// Simulated seconds per run: two cache periods, so the steady state is in it.
const SECONDS: u64 = 10;
/// The cache period of the "with cache" runs (the Lambda default).
const TTL: Duration = Duration::from_secs(5);
/// DynamoDB's per-partition ceilings, in units per second.
const PARTITION_RRU: f64 = 3000.0;
const PARTITION_WRU: f64 = 1000.0;
/// Lambda's default account concurrency: containers never exceed it.
const CONCURRENCY_QUOTA: u64 = 1000;
/// Tenants of the "many tenants" layout (one endpoint each).
const MANY_TENANTS: u64 = 1000;

struct Run {
    /// Simulated tenants.
    tenants: u64,
    dispatchers: usize,
    ingesters: usize,
    ttl: Duration,
    /// Simulated seconds.
    seconds: u64,
    /// Where the webhooks point instead of the sink (a closed port: an endpoint that is down).
    dead_url: Option<String>,
    /// The dispatcher's `park_from_s` (`u64::MAX`: every wait hidden, as before parking).
    park_from_s: u64,
    breaker: BreakerPolicy,
}

impl Run {
    fn healthy(tenants: u64, dispatchers: usize, ingesters: usize, ttl: Duration) -> Run {
        Run {
            tenants,
            dispatchers,
            ingesters,
            ttl,
            seconds: SECONDS,
            dead_url: None,
            park_from_s: webhooks_dispatcher::PARK_FROM_S,
            breaker: BreakerPolicy::default(),
        }
    }
}

/// What a run leaves: the meter, the deliveries the sink got, and the delivery queue's
/// messages in flight and delayed at the end of each simulated second.
struct Outcome {
    meter: Arc<KeyMeter>,
    delivered: u64,
    queue: Vec<(usize, usize)>,
}

/// Dispatcher containers the model needs at `rate` deliveries/s: batches of 10 taking ~100 ms.
fn dispatchers_for(rate: u64) -> u64 {
    (rate / 100).clamp(1, CONCURRENCY_QUOTA)
}

/// Ingest containers at `rate` events/s: batches of 10 taking ~50 ms.
fn ingesters_for(rate: u64) -> u64 {
    (rate / 200).clamp(1, CONCURRENCY_QUOTA)
}

fn handler_of_ingest(ingest: Ingest) -> Handler {
    Arc::new(move |e| {
        let ingest = ingest.clone();
        Box::pin(async move { ingest.handle(e).await })
    })
}

fn handler_of_dispatcher(dispatcher: Dispatcher) -> Handler {
    Arc::new(move |e| {
        let dispatcher = dispatcher.clone();
        Box::pin(async move { dispatcher.handle(e, None).await })
    })
}

/// Runs `run.seconds` simulated seconds.
async fn simulate(sink: &Sink, run: &Run) -> Outcome {
    // A whole second, so the meter's buckets are the simulation's seconds.
    let clock = Clock::stopped_at(START_S * 1000);
    let meter = KeyMeter::new(clock.clone());
    let store: Arc<dyn WebhookStore> = Arc::new(KeyedStore {
        inner: Arc::new(MemoryWebhookStore::new()),
        meter: meter.clone(),
    });
    let log: Arc<dyn DeliveryLog> = Arc::new(KeyedLog {
        inner: Arc::new(MemoryDeliveryLog::new()),
        meter: meter.clone(),
    });
    let events: Arc<dyn EventStore> = Arc::new(KeyedEvents {
        inner: Arc::new(MemoryEventStore::new()),
        meter: meter.clone(),
    });
    let memory = Arc::new(MemoryQueue::with_clock(clock.clone()));
    let queue: Arc<dyn Queue> = memory.clone();
    let url = |name: &str| memory.create_queue(name, Duration::from_secs(360), None);
    let (events_url, delivery_url, events_dlq, delivery_dlq) =
        (url("events"), url("delivery"), url("events-dlq"), url("delivery-dlq"));
    let tenants: Vec<Tenant> = (0..run.tenants)
        .map(|t| Tenant::parse(&format!("tenant-{t:05}")).expect("tenant"))
        .collect();
    for (t, tenant) in tenants.iter().enumerate() {
        let hook = Webhook {
            id: format!("wh_{t:05}"),
            tenant: tenant.to_string(),
            url: run.dead_url.clone().unwrap_or_else(|| sink.url(&format!("/t{t}"))),
            events: vec![EVENT.into()],
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            active: true,
            ..Webhook::default()
        };
        store.create(&hook).await.expect("create webhook");
    }
    let deliverer = Deliverer::new(TargetPolicy::PERMISSIVE).expect("client");
    let container_store = || CachedWebhookStore::wrap(store.clone(), run.ttl, clock.clone());
    let ingest: Vec<Handler> = (0..run.ingesters)
        .map(|_| {
            handler_of_ingest(Ingest {
                store: container_store(),
                events: events.clone(),
                queue: queue.clone(),
                events_queue_url: events_url.clone(),
                delivery_queue_url: delivery_url.clone(),
                dead_letter_url: events_dlq.clone(),
                retention_days: 30,
                metrics: Default::default(),
            })
        })
        .collect();
    let dispatch: Vec<Handler> = (0..run.dispatchers)
        .map(|_| {
            handler_of_dispatcher(Dispatcher {
                store: container_store(),
                log: log.clone(),
                events: events.clone(),
                queue: queue.clone(),
                deliverer: deliverer.clone(),
                delivery_queue_url: delivery_url.clone(),
                dead_letter_url: delivery_dlq.clone(),
                schedule: webhooks::config::DEFAULT_RETRY_SCHEDULE.to_vec(),
                timeout: Duration::from_secs(15),
                retention_days: 30,
                recover_page: 100,
                clock: clock.clone(),
                breaker: run.breaker,
                events_queue_url: events_url.clone(),
                metrics: Default::default(),
                keys: Default::default(),
                park_from_s: run.park_from_s,
            })
        })
        .collect();
    let body = payload(1024, None);
    let event_type = EventType::parse(EVENT).expect("type");
    let per_tick = SIM_RATE / 10;
    let before = sink.count();
    let mut seq = 0u64;
    let mut samples = Vec::new();
    for tick in 0..run.seconds * 10 {
        let messages: Vec<OutgoingMessage> = (0..per_tick)
            .map(|i| {
                seq += 1;
                let tenant = tenants[(seq % run.tenants) as usize].clone();
                OutgoingMessage {
                    id: i.to_string(),
                    body: encode_event(&Event {
                        tenant,
                        id: EventId::parse(&format!("evt-{seq}")).expect("id"),
                        event: event_type,
                        timestamp_ms: clock.now_ms(),
                        payload: body.clone(),
                    }),
                    reason: None,
                    delay_s: 0,
                }
            })
            .collect();
        let unsent = send_all(queue.as_ref(), &events_url, &messages).await.expect("send");
        assert!(unsent.is_empty(), "the events queue took every event");
        drain(queue.as_ref(), &events_url, &ingest).await;
        drain(queue.as_ref(), &delivery_url, &dispatch).await;
        clock.advance(Duration::from_millis(100));
        if tick % 10 == 9 {
            samples.push((memory.in_flight(&delivery_url), memory.delayed(&delivery_url)));
        }
    }
    Outcome {
        meter,
        delivered: sink.count() - before,
        queue: samples,
    }
}

/// Every container takes a batch at once, round after round, until the queue is empty.
async fn drain(queue: &dyn Queue, url: &str, containers: &[Handler]) {
    // Bounded: a tick's messages take a few rounds; a stuck queue ends the run loudly.
    for _ in 0..10_000 {
        let handled = futures::future::join_all(
            containers
                .iter()
                .map(|h| async move { poll_once(queue, url, Duration::ZERO, h).await.unwrap_or(0) }),
        )
        .await;
        if handled.iter().all(|n| *n == 0) {
            return;
        }
    }
    panic!("queue {url} did not drain");
}

/// The key classes the model names, with the operation that loads them.
const CLASSES: [(&str, Op, &str); 5] = [
    ("T#", Op::Read, "T#{tenant} webhook reads (dispatcher)"),
    ("S#", Op::Read, "S#{tenant}#{event} subscriber queries (ingest)"),
    ("W#", Op::Write, "W#{webhook}#{h} delivery-record writes"),
    ("W#", Op::Read, "W#{webhook}#{h} delivery-record reads"),
    ("EV#", Op::Write, "EV#{tenant}#{h} events-by-time index writes"),
];

/// The simulated clock's first second.
const START_S: u64 = 1_900_000_000;

fn peak(meter: &KeyMeter, prefix: &str, op: Op) -> Load {
    meter.hottest(op, prefix).map(|(_, l)| l).unwrap_or_default()
}

/// The steady state: the heaviest key's mean requests and units per second over the run's
/// second half (after the cold start, one full cache period).
fn steady(meter: &KeyMeter, prefix: &str, op: Op) -> (f64, f64) {
    let from = START_S + SECONDS / 2;
    let n = (SECONDS - SECONDS / 2) as f64;
    meter
        .per_second()
        .into_iter()
        .filter(|(k, o, _)| *o == op && k.starts_with(prefix))
        .map(|(_, _, seconds)| {
            let (requests, units) = seconds
                .iter()
                .filter(|(s, _)| *s >= from)
                .fold((0u64, 0f64), |(r, u), (_, l)| (r + l.requests, u + l.units));
            (requests as f64 / n, units / n)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default()
}

pub async fn run() -> Table {
    let sink = Sink::start(false).await;
    let mut t = Table::new(
        "Capacity: the hottest DynamoDB partition key of each kind, per second (simulated; see tests/BENCH.md \"Capacity\")",
        &[
            "layout",
            "deliveries/s",
            "key",
            "no cache: req/s",
            "units/s",
            "cache 5 s: req/s",
            "units/s",
            "busiest s",
            "limit",
            "with cache",
        ],
    );
    let mut simulated = 0u64;
    let mut runs = 0u64;
    for (layout, many) in [("1 tenant, 1 endpoint", false), ("1,000 tenants x 1 endpoint", true)] {
        // One tenant's runs are the same at every rate (containers scale with the rate): run
        // them once and scale.
        let mut one_tenant: Option<[(Arc<KeyMeter>, u64); 2]> = None;
        for rate in [1_000u64, 10_000, 100_000] {
            let f = rate / SIM_RATE;
            let dispatchers = (dispatchers_for(rate) / f).max(1) as usize;
            let ingesters = (ingesters_for(rate) / f).max(1) as usize;
            let tenants = if many { (MANY_TENANTS / f).max(1) } else { 1 };
            let results = match (&one_tenant, many) {
                (Some(r), false) => r.clone(),
                _ => {
                    let mut out = Vec::new();
                    for ttl in [Duration::ZERO, TTL] {
                        let run = Run::healthy(tenants, dispatchers, ingesters, ttl);
                        let Outcome { meter, delivered, .. } = simulate(&sink, &run).await;
                        simulated += delivered;
                        runs += 1;
                        out.push((meter, delivered));
                    }
                    let pair: [(Arc<KeyMeter>, u64); 2] = [out[0].clone(), out[1].clone()];
                    if !many {
                        one_tenant = Some(pair.clone());
                    }
                    pair
                }
            };
            let scale = if many { 1.0 } else { f as f64 };
            for (prefix, op, name) in CLASSES {
                let s = scale;
                let off = steady(&results[0].0, prefix, op);
                let on = steady(&results[1].0, prefix, op);
                let on_peak = peak(&results[1].0, prefix, op);
                let limit = if op == Op::Read { PARTITION_RRU } else { PARTITION_WRU };
                let verdict = match (on.1 * s >= limit, on_peak.units * s >= limit) {
                    (true, _) => "AT or OVER",
                    (false, true) => "under (cold start over)",
                    _ => "under",
                };
                t.row(vec![
                    layout.into(),
                    int(rate as f64),
                    name.into(),
                    int(off.0 * s),
                    int(off.1 * s),
                    int(on.0 * s),
                    int(on.1 * s),
                    int(on_peak.units * s),
                    int(limit),
                    verdict.into(),
                ]);
            }
        }
    }
    t.note(format!(
        "{runs} runs of {SECONDS} simulated s at {SIM_RATE} deliveries/s (fan-out 1, 1 KiB payloads): {simulated} real POSTs to 127.0.0.1 through the real ingest and dispatcher, in-memory adapters counted by the DynamoDB key they would use"
    ));
    t.note(format!(
        "containers: dispatchers = rate / 100 (10 jobs per ~100 ms invocation), ingest = rate / 200, both at most {CONCURRENCY_QUOTA} (the default account quota); a rate R runs at {SIM_RATE}/s with 1/f of the containers (f = R / {SIM_RATE}); one tenant's keys are multiplied by f, many tenants run 1/f of the 1,000 tenants at their true rate"
    ));
    t.note(format!(
        "req/s and units/s: the hottest key's mean over the last {} simulated s (steady state); busiest s: its busiest second with the cache, the cold start (every container fills its cache at once, and the endpoint's first success makes each container's racing jobs re-read after losing the health compare-and-set)",
        SECONDS - SECONDS / 2
    ));
    t.note("not shown: E#{tenant}#{id}, each event's own key, written twice in its life (the claim, 1 unit with a 1 KiB payload stored deflated, and the completion, a small item of its own: 1 unit): never hot");
    t.note("many tenants with the cache: 1/f of the containers see each tenant f times as often as in AWS, so their cached reads are a lower bound; without it they are exact (and far under the limits either way)");
    t.note(format!(
        "shards: W#{{webhook}}#{{h}}, h = a hash of the delivery id modulo {} (webhooks::dynamo::DELIVERY_SHARDS), and EV#{{tenant}}#{{h}}, h = a hash of the event id modulo {} (EVENT_INDEX_SHARDS); one endpoint or tenant gets up to {} x 1,000 writes/s; 100,000/s on one key class would take at least 100 shards, 128 with headroom for the hash's unevenness and records past 1 KB",
        webhooks::dynamo::DELIVERY_SHARDS,
        webhooks::dynamo::EVENT_INDEX_SHARDS,
        webhooks::dynamo::DELIVERY_SHARDS
    ));
    t.note("one tenant's figures are a simulated 1/f of the traffic multiplied by f, so the shards' unevenness is sqrt(f) times what it is at the real rate: at 10k/s a shard's second is 625 +- 25 writes in AWS (Poisson), and here 10 x (62.5 +- 8), so its busiest of 160 simulated shard-seconds reads ~880");
    t.note("limits: 3,000 read units and 1,000 write units per partition key per second (DynamoDB, on-demand or provisioned); units: strong reads 1 per 4 KB, eventual 0.5, writes 1 per KB, estimated from each item's JSON");
    t
}

/// Simulated seconds of the in-flight runs.
const FAILING_SECONDS: u64 = 20;
/// SQS's in-flight limit per standard queue.
const IN_FLIGHT_LIMIT: usize = webhooks::ports::MAX_IN_FLIGHT;

/// Section `inflight`: one endpoint that is down (a closed port on 127.0.0.1), sent 1,000 jobs
/// per simulated second through the real ingest and dispatcher, and the delivery queue's
/// messages in flight (SQS's ~120,000 limit, past which no consumer receives anything) and
/// delayed, each simulated second: jobs parked out of flight as the dispatcher does now, every
/// wait hidden as it did before, and parked with the breaker kept shut (every job's own retries).
pub async fn in_flight() -> Table {
    let sink = Sink::start(false).await;
    let dead = format!("http://127.0.0.1:{}/down", webhooks_tests::closed_port());
    let mut t = Table::new(
        "In flight: one endpoint down, 1,000 jobs/s, the delivery queue's messages in flight and delayed (simulated; see tests/BENCH.md \"Capacity\")",
        &[
            "waits",
            "breaker",
            "in flight at 5 s",
            "10 s",
            "20 s",
            "peak",
            "delayed at 20 s",
            "in flight per failing job/s",
            "120,000 in flight after",
        ],
    );
    let shut = BreakerPolicy {
        failures: 1_000_000,
        ..BreakerPolicy::default()
    };
    let runs = [
        (
            "parked (10 s or more)",
            webhooks_dispatcher::PARK_FROM_S,
            BreakerPolicy::default(),
            "opens after 5",
        ),
        (
            "all hidden (before)",
            u64::MAX,
            BreakerPolicy::default(),
            "opens after 5",
        ),
        (
            "parked (10 s or more)",
            webhooks_dispatcher::PARK_FROM_S,
            shut,
            "kept shut",
        ),
    ];
    for (waits, park_from_s, breaker, name) in runs {
        let run = Run {
            seconds: FAILING_SECONDS,
            dead_url: Some(dead.clone()),
            park_from_s,
            breaker,
            ..Run::healthy(
                1,
                dispatchers_for(SIM_RATE) as usize,
                ingesters_for(SIM_RATE) as usize,
                TTL,
            )
        };
        let out = simulate(&sink, &run).await;
        let at = |s: usize| out.queue.get(s - 1).map_or(0, |q| q.0);
        let peak = out.queue.iter().map(|q| q.0).max().unwrap_or(0);
        let last = at(FAILING_SECONDS as usize);
        // Growth over the last 10 s: what keeps accumulating, per job/s failing.
        let growth = (last as f64 - at(10) as f64) / 10.0;
        let full = if growth > 1.0 {
            format!(
                "{:.0} s",
                FAILING_SECONDS as f64 + (IN_FLIGHT_LIMIT as f64 - last as f64) / growth
            )
        } else {
            "never (steady)".into()
        };
        t.row(vec![
            waits.into(),
            name.into(),
            int(at(5) as f64),
            int(at(10) as f64),
            int(last as f64),
            int(peak as f64),
            int(out.queue.last().map_or(0, |q| q.1) as f64),
            format!("{:.1}", peak as f64 / SIM_RATE as f64),
            full,
        ]);
    }
    t.note(format!(
        "{FAILING_SECONDS} simulated s each, 1 tenant, 1 endpoint refusing connections, fan-out 1, default retry schedule (5 s, 300 s, ...), breaker probe 60 s; {} dispatcher and {} ingest containers; the in-memory queue on the stopped clock, so hidden and delayed messages come back on simulated time only",
        dispatchers_for(SIM_RATE),
        ingesters_for(SIM_RATE)
    ));
    t.note("in flight: received and neither deleted nor visible again (ApproximateNumberOfMessagesNotVisible); delayed: sent with DelaySeconds, not yet receivable (…Delayed), which SQS does not limit");
    t.note("at 10,000 jobs/s the in-flight figures are 10 times these (the same per failing job/s): parked, a few seconds' worth of the first 5 s retries; hidden, the limit in about 12 s");
    t
}
