//! Section 8: the cost of durability. The local runner end to end (`POST /api/events` -> 202 ->
//! receiver), the same workload on the in-memory backend and on the durable one (SQLite in a
//! fresh data directory), one after the other in one run: deliveries per second, latency
//! p50/p99, and CPU per delivery.

use std::sync::Arc;
use std::time::Duration;

use webhooks_local::{Backend, Runner, local_config};

use crate::dispatch::{cpu_time, raw_client};
use crate::e2e::{Api, Outcome, light, throughput};
use crate::sink::Sink;
use crate::table::{Table, f1, f2, int, percentile};

struct Figures {
    backend: &'static str,
    light: Outcome,
    /// (fan-out, outcome, CPU of the whole process over the run).
    runs: Vec<(usize, Outcome, Duration)>,
}

async fn measure(backend: Backend, name: &'static str, sink: &Sink, seq: &mut u64, quick: bool) -> Figures {
    let config = local_config(|_| None).expect("local config");
    let runner = Runner::new(&config, webhooks_tests::JWT_SECRET, &backend).expect("runner");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(runner.serve_until(
        listener,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let api = Arc::new(Api {
        base: format!("http://{addr}"),
        client: raw_client(),
    });
    let (t1, t10) = (webhooks_tests::unique("d-f1"), webhooks_tests::unique("d-f10"));
    api.register(&t1, sink, 1).await;
    api.register(&t10, sink, 10).await;
    light(&api, sink, &t1, 1, 20, seq).await;
    let q = |full: usize, small: usize| if quick { small } else { full };
    let light = light(&api, sink, &t1, 1, q(300, 50), seq).await;
    let mut runs = Vec::new();
    for (fanout, tenant, events) in [(1, &t1, q(3_000, 300)), (10, &t10, q(500, 50))] {
        let cpu = cpu_time();
        let o = throughput(&api, sink, tenant, fanout, events, seq).await;
        runs.push((fanout, o, cpu_time() - cpu));
    }
    let _ = stop.send(());
    let _ = serving.await;
    Figures {
        backend: name,
        light,
        runs,
    }
}

pub async fn run(quick: bool) -> Table {
    let sink = Sink::start(true).await;
    let mut seq = 0u64;
    let memory = measure(Backend::Memory, "in-memory", &sink, &mut seq, quick).await;
    let dir = std::env::temp_dir().join(webhooks_tests::unique("bench-data"));
    let durable = measure(
        Backend::Sqlite(dir.clone()),
        "durable (SQLite, WAL)",
        &sink,
        &mut seq,
        quick,
    )
    .await;
    let db_bytes: u64 = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let mut table = Table::new(
        "8. The cost of durability: the local runner end to end (202 -> arrival), in-memory vs durable",
        &[
            "backend",
            "run",
            "events",
            "arrived",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "CPU µs/delivery",
        ],
    );
    let mut complete = true;
    for f in [&memory, &durable] {
        complete &= f.light.arrived as u64 == f.light.deliveries;
        table.row(vec![
            f.backend.into(),
            "light load, fan-out 1 (sequential, 5 ms gaps)".into(),
            int(f.light.events as f64),
            int(f.light.arrived as f64),
            "-".into(),
            f2(percentile(&f.light.latencies, 50.0)),
            f2(percentile(&f.light.latencies, 99.0)),
            "-".into(),
        ]);
        for (fanout, o, cpu) in &f.runs {
            complete &= o.arrived as u64 == o.deliveries;
            table.row(vec![
                f.backend.into(),
                format!("throughput, fan-out {fanout} (16 concurrent clients)"),
                int(o.events as f64),
                int(o.arrived as f64),
                int(o.arrived as f64 / o.span.as_secs_f64()),
                f2(percentile(&o.latencies, 50.0)),
                f2(percentile(&o.latencies, 99.0)),
                f1(cpu.as_secs_f64() * 1e6 / o.arrived.max(1) as f64),
            ]);
        }
    }
    table.note("latency per delivery from the event's POST being sent to the receiver's handler running;");
    table.note("  CPU: the whole bench process (clients, runner, receiver) over the run, per delivery (10 ms ticks)");
    table.note(format!(
        "durable: 202 after the event is fsynced (group commit), the pipeline's own writes synchronous=NORMAL; \
         data directory at the end: {:.1} MiB",
        db_bytes as f64 / (1024.0 * 1024.0)
    ));
    if !complete {
        table.note("warning: some deliveries did not arrive within the wait (see 'arrived')");
    }
    let rate = |f: &Figures| {
        f.runs
            .first()
            .map(|(_, o, _)| o.arrived as f64 / o.span.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    table.note(format!(
        "durable / in-memory deliveries per second at fan-out 1: {:.2}",
        rate(&durable) / rate(&memory)
    ));
    table
}
