//! Section 8 (`health`): a healthy endpoint's latency, alone and beside an endpoint of the same
//! tenant that times out, in the same run: the local runner on the embedded backend, every
//! event fanned out to both webhooks, the healthy one's p99 from the event's POST to its
//! arrival. Run three times: alone, beside the dead one with the circuit breaker (defaults:
//! opens after 5 failures), and beside it with the breaker kept shut (`BREAKER_FAILURES=1000`),
//! which is how the dispatcher behaved before it had one.

use std::time::{Duration, Instant};

use serde_json::json;
use webhooks_local::{Backend, Runner, local_config};

use crate::dispatch::raw_client;
use crate::payload::{EVENT, payload};
use crate::sink::Sink;
use crate::table::{Table, f1, f2, int, ms, percentile};

/// The delivery timeout in this section: the dead endpoint holds each attempt this long.
const TIMEOUT_S: &str = "2";
const GAP: Duration = Duration::from_millis(10);

/// A receiver that accepts connections and never answers: every attempt runs to its timeout.
async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut socket, &mut sink).await;
            });
        }
    });
    format!("http://{addr}/hang")
}

struct Run {
    latencies: Vec<f64>,
    events: usize,
    dead_attempts: usize,
}

async fn scenario(sink: &Sink, dead_url: Option<&str>, breaker_failures: &str, events: usize, seq: &mut u64) -> Run {
    let vars = [
        ("DELIVERY_TIMEOUT_SECONDS", TIMEOUT_S),
        ("RETRY_SCHEDULE_SECONDS", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
        ("BREAKER_FAILURES", breaker_failures),
        ("BREAKER_PROBE_SECONDS", "5"),
    ];
    let config = local_config(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).expect("config");
    let runner = Runner::new(&config, webhooks_tests::JWT_SECRET, &Backend::Memory).expect("runner");
    let log = runner.state.log.clone();
    let addr = runner.spawn(0).await.expect("serve");
    let base = format!("http://{addr}");
    let client = raw_client();
    let tenant = webhooks_tests::unique("health");
    let auth = format!("Bearer {}", webhooks_tests::token(&tenant));
    let mut dead_id: Option<String> = None;
    for url in std::iter::once(sink.url("/healthy")).chain(dead_url.map(str::to_string)) {
        let r = client
            .post(format!("{base}/api/webhooks"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(json!({"url": url, "events": [EVENT]}).to_string())
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 201);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
        if url != sink.url("/healthy") {
            dead_id = body["id"].as_str().map(str::to_string);
        }
    }
    let mut sent_at = std::collections::HashMap::new();
    let mut expected = sink.count();
    for _ in 0..events {
        *seq += 1;
        let body = json!({"event": EVENT, "payload": payload(1024, Some(*seq))}).to_string();
        let sent = Instant::now();
        let r = client
            .post(format!("{base}/api/events"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().as_u16() == 202) {
            sent_at.insert(*seq, sent);
            expected += 1;
            sink.wait_for(expected, Duration::from_secs(30)).await;
        }
        tokio::time::sleep(GAP).await;
    }
    let mut latencies: Vec<f64> = sink
        .arrivals()
        .into_iter()
        .filter_map(|(s, at)| sent_at.get(&s).map(|t| ms(at.saturating_duration_since(*t))))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut dead_attempts = 0;
    if let Some(id) = dead_id {
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let page = log.list(&id, 100, cursor.as_deref()).await.expect("log");
            dead_attempts += page.items.iter().map(|d| d.attempts.len()).sum::<usize>();
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    Run {
        latencies,
        events: sent_at.len(),
        dead_attempts,
    }
}

pub async fn run(quick: bool) -> Table {
    let sink = Sink::start(true).await;
    let dead = hanging().await;
    let events = if quick { 150 } else { 600 };
    let mut seq = 0u64;
    // Warm-up: connections, pollers, allocator.
    scenario(&sink, None, "5", 20, &mut seq).await;
    let runs = [
        ("alone", scenario(&sink, None, "5", events, &mut seq).await),
        (
            "beside an endpoint that times out, breaker on (opens after 5 failures)",
            scenario(&sink, Some(&dead), "5", events, &mut seq).await,
        ),
        (
            "beside an endpoint that times out, breaker kept shut (BREAKER_FAILURES=1000)",
            scenario(&sink, Some(&dead), "1000", events, &mut seq).await,
        ),
    ];
    let mut table = Table::new(
        format!(
            "8. A healthy endpoint beside one that times out ({TIMEOUT_S} s delivery timeout, retries every 1 s): \
             its POST -> arrival latency, local runner, embedded backend, same tenant, every event to both"
        ),
        &[
            "run",
            "events",
            "arrived",
            "p50 ms",
            "p99 ms",
            "max ms",
            "POSTs to the dead one",
        ],
    );
    for (name, r) in &runs {
        table.row(vec![
            name.to_string(),
            int(r.events as f64),
            int(r.latencies.len() as f64),
            f2(percentile(&r.latencies, 50.0)),
            f2(percentile(&r.latencies, 99.0)),
            f1(r.latencies.last().copied().unwrap_or(f64::NAN)),
            if *name == "alone" {
                "-".into()
            } else {
                int(r.dead_attempts as f64)
            },
        ]);
    }
    table.note(
        "sequential events, 10 ms apart, each sent once the previous one's healthy delivery arrived; a timed-out \
         attempt holds its batch (and so a poller) until it ends",
    );
    let (alone, with) = (
        percentile(&runs[0].1.latencies, 99.0),
        percentile(&runs[1].1.latencies, 99.0),
    );
    table.verdict(
        with <= (2.0 * alone).max(alone + 10.0),
        format!(
            "with the breaker, the healthy endpoint's p99 beside a dead one is {with:.2} ms against {alone:.2} ms \
             alone (target: within 2x or 10 ms)"
        ),
    );
    table
}
