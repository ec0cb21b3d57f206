//! Section 3: the local runner on the embedded backend, end to end: `POST /api/events`
//! accepted (202) -> events queue -> ingest -> delivery queue -> dispatcher -> receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use webhooks_local::{Backend, Runner, local_config};

use crate::dispatch::raw_client;
use crate::payload::{EVENT, payload};
use crate::sink::Sink;
use crate::table::{Table, f1, f2, int, ms, percentile};

const CONCURRENCY: usize = 16;

/// Event bodies still to send, with their `seq`.
type Bodies = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;
const GAP: Duration = Duration::from_millis(5);

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

impl Api {
    pub(crate) async fn register(&self, tenant: &str, sink: &Sink, n: usize) {
        let auth = format!("Bearer {}", webhooks_tests::token(tenant));
        for i in 0..n {
            let body = json!({"url": sink.url(&format!("/e2e/{tenant}/{i}")), "events": [EVENT], "secret": "whsec-e2e-0123456789"});
            let r = self
                .client
                .post(format!("{}/api/webhooks", self.base))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("register webhook");
            assert_eq!(r.status().as_u16(), 201, "register webhook");
        }
    }

    /// POSTs one event; returns when it was sent and when its 202 arrived.
    async fn submit(&self, auth: &str, body: Vec<u8>) -> Option<Stamp> {
        let sent = Instant::now();
        let r = self
            .client
            .post(format!("{}/api/events", self.base))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .ok()?;
        let at = Instant::now();
        let ok = r.status().as_u16() == 202;
        let _ = r.bytes().await;
        ok.then_some(Stamp { sent, accepted: at })
    }
}

fn event_json(seq: u64) -> Vec<u8> {
    json!({"event": EVENT, "payload": payload(1024, Some(seq))})
        .to_string()
        .into_bytes()
}

/// When an event's POST was sent and when its 202 reached the client.
#[derive(Clone, Copy)]
struct Stamp {
    sent: Instant,
    accepted: Instant,
}

pub(crate) struct Outcome {
    pub(crate) events: usize,
    pub(crate) deliveries: u64,
    pub(crate) arrived: usize,
    /// Per-delivery latency from the event's POST being sent to its arrival, ms, ascending.
    pub(crate) latencies: Vec<f64>,
    /// The same from the client holding the 202 (0 when the delivery came first), ascending.
    pub(crate) from_202: Vec<f64>,
    /// Deliveries that arrived before the client saw the event's 202.
    pub(crate) before_202: usize,
    /// First send to last arrival.
    pub(crate) span: Duration,
}

fn outcome(sink: &Sink, accepted: &HashMap<u64, Stamp>, start: Instant, fanout: usize) -> Outcome {
    let (mut latencies, mut from_202, mut before_202) = (Vec::new(), Vec::new(), 0);
    let mut last = start;
    for (seq, at) in sink.arrivals() {
        if let Some(t) = accepted.get(&seq) {
            latencies.push(ms(at.saturating_duration_since(t.sent)));
            from_202.push(ms(at.saturating_duration_since(t.accepted)));
            before_202 += usize::from(at < t.accepted);
            last = last.max(at);
        }
    }
    latencies.sort_by(f64::total_cmp);
    from_202.sort_by(f64::total_cmp);
    Outcome {
        events: accepted.len(),
        deliveries: (accepted.len() * fanout) as u64,
        arrived: latencies.len(),
        latencies,
        from_202,
        before_202,
        span: last - start,
    }
}

/// Sequential events with a small gap after each one's last delivery arrived.
pub(crate) async fn light(
    api: &Api,
    sink: &Sink,
    tenant: &str,
    fanout: usize,
    events: usize,
    seq: &mut u64,
) -> Outcome {
    let auth = format!("Bearer {}", webhooks_tests::token(tenant));
    let mut accepted = HashMap::new();
    let start = Instant::now();
    let mut expected = sink.count();
    for _ in 0..events {
        *seq += 1;
        let body = event_json(*seq);
        if let Some(t) = api.submit(&auth, body).await {
            accepted.insert(*seq, t);
            expected += fanout as u64;
            sink.wait_for(expected, Duration::from_secs(10)).await;
        }
        tokio::time::sleep(GAP).await;
    }
    outcome(sink, &accepted, start, fanout)
}

/// `events` events from `CONCURRENCY` concurrent clients, as fast as the API takes them.
pub(crate) async fn throughput(
    api: &Arc<Api>,
    sink: &Sink,
    tenant: &str,
    fanout: usize,
    events: usize,
    seq: &mut u64,
) -> Outcome {
    let auth = format!("Bearer {}", webhooks_tests::token(tenant));
    let first = *seq + 1;
    *seq += events as u64;
    let bodies: Bodies = Arc::new(Mutex::new((first..=*seq).rev().map(|s| (s, event_json(s))).collect()));
    let accepted: Arc<Mutex<HashMap<u64, Stamp>>> = Arc::new(Mutex::new(HashMap::new()));
    let before = sink.count();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (api, bodies, accepted, auth) = (api.clone(), bodies.clone(), accepted.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = bodies.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((s, body)) = next else { break };
                if let Some(t) = api.submit(&auth, body).await {
                    accepted.lock().unwrap_or_else(|p| p.into_inner()).insert(s, t);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    sink.wait_for(before + (accepted.len() * fanout) as u64, Duration::from_secs(180))
        .await;
    outcome(sink, &accepted, start, fanout)
}

pub async fn run(quick: bool) -> Table {
    let config = local_config(|_| None).expect("local config");
    let runner = Runner::new(&config, webhooks_tests::JWT_SECRET, &Backend::Memory).expect("runner");
    let addr = runner.spawn(0).await.expect("serve the local runner");
    let api = Arc::new(Api {
        base: format!("http://{addr}"),
        client: raw_client(),
    });
    let sink = Sink::start(true).await;
    let (t1, t100) = (webhooks_tests::unique("e2e-f1"), webhooks_tests::unique("e2e-f100"));
    api.register(&t1, &sink, 1).await;
    api.register(&t100, &sink, 100).await;
    let mut seq = 0u64;
    // Warm-up: connections, the runner's pollers and allocator.
    light(&api, &sink, &t1, 1, 20, &mut seq).await;

    let q = |full: usize, small: usize| if quick { small } else { full };
    let runs = [
        (
            "light load, fan-out 1 (sequential, 5 ms gaps)",
            1,
            light(&api, &sink, &t1, 1, q(300, 50), &mut seq).await,
        ),
        (
            "light load, fan-out 100 (sequential, 5 ms gaps)",
            100,
            light(&api, &sink, &t100, 100, q(30, 5), &mut seq).await,
        ),
        (
            "throughput, fan-out 1 (16 concurrent clients)",
            1,
            throughput(&api, &sink, &t1, 1, q(3_000, 300), &mut seq).await,
        ),
        (
            "throughput, fan-out 100 (16 concurrent clients)",
            100,
            throughput(&api, &sink, &t100, 100, q(100, 10), &mut seq).await,
        ),
    ];
    let mut table = Table::new(
        format!(
            "3. End to end in the local runner (embedded backend, {} ingest + {} dispatch pollers): 202 -> arrival",
            webhooks_local::INGEST_POLLERS,
            webhooks_local::DISPATCH_POLLERS
        ),
        &[
            "run",
            "events",
            "deliveries",
            "arrived",
            "events/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p50 from 202",
            "p99 from 202",
            "before 202",
        ],
    );
    let mut p99_light_1 = f64::NAN;
    let mut complete = true;
    for (i, (name, _fanout, o)) in runs.iter().enumerate() {
        let secs = o.span.as_secs_f64();
        let rate = |n: f64| if i < 2 { "-".to_string() } else { int(n / secs) };
        let p99 = percentile(&o.latencies, 99.0);
        if i == 0 {
            p99_light_1 = p99;
        }
        complete &= o.arrived as u64 == o.deliveries;
        table.row(vec![
            name.to_string(),
            int(o.events as f64),
            int(o.deliveries as f64),
            int(o.arrived as f64),
            rate(o.events as f64),
            rate(o.arrived as f64),
            f2(percentile(&o.latencies, 50.0)),
            f2(p99),
            f1(o.latencies.last().copied().unwrap_or(f64::NAN)),
            f2(percentile(&o.from_202, 50.0)),
            f2(percentile(&o.from_202, 99.0)),
            int(o.before_202 as f64),
        ]);
    }
    table.note(
        "latency per delivery, to the receiver's handler running: p50/p99/max from the moment the POST is sent (an \
         upper bound of 202 -> arrival);",
    );
    table.note(
        "  'from 202' counts from the client holding the 202, which in one process on 2 cores often comes after the \
         delivery ('before 202': such deliveries, counted as 0 ms); throughput: first POST to last arrival",
    );
    if !complete {
        table.note("warning: some deliveries did not arrive within the wait (see 'arrived')");
    }
    table.verdict(
        p99_light_1 < 20.0,
        format!("p99 at fan-out 1 under light load is {p99_light_1:.2} ms from POST sent (target < 20 ms from 202)"),
    );
    table
}
