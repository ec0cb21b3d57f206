//! `cargo run --release -p webhooks-tests --bin bench [sections…] [--quick]`
//!
//! One table per section, measured side by side in one run (see tests/BENCH.md):
//! `signing`, `dispatch`, `e2e`, `cold`, `cost`, `fanout`, `durable`, `health`, `capacity`, `inflight`. Without names,
//! all of them but the soak.
//! `cost` and `fanout` need the emulator (`AWS_ENDPOINT_URL`); `cold` needs the release
//! binaries (`cargo build --release --bins`). Everything listens and connects on 127.0.0.1.

#[path = "bench/capacity.rs"]
mod capacity;
#[path = "bench/cold.rs"]
mod cold;
#[path = "bench/cost.rs"]
mod cost;
#[path = "bench/dispatch.rs"]
mod dispatch;
#[path = "bench/durable.rs"]
mod durable;
#[path = "bench/e2e.rs"]
mod e2e;
#[path = "bench/health.rs"]
mod health;
#[path = "bench/meter.rs"]
mod meter;
#[path = "bench/payload.rs"]
mod payload;
#[path = "bench/signing.rs"]
mod signing;
#[path = "bench/sink.rs"]
mod sink;
#[path = "bench/soak.rs"]
mod soak;
#[path = "bench/table.rs"]
mod table;

use table::Table;

// The allocator the Lambda binaries ship with (their default `mimalloc` feature), so that the
// bench's figures can be taken with it; the machine table says which one ran.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECTIONS: [&str; 11] = [
    "signing", "dispatch", "e2e", "cold", "cost", "fanout", "soak", "durable", "health", "capacity", "inflight",
];

fn machine() -> Table {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let flags = field(&cpuinfo, "flags");
    let mut t = Table::new("Machine", &["fact", "value"]);
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    t.row(vec!["nproc".into(), nproc.to_string()]);
    t.row(vec!["CPU model".into(), field(&cpuinfo, "model name")]);
    t.row(vec![
        "SHA extensions (sha_ni)".into(),
        if flags.split_whitespace().any(|f| f == "sha_ni") {
            "yes"
        } else {
            "no"
        }
        .into(),
    ]);
    t.row(vec!["memory".into(), field(&meminfo, "MemTotal")]);
    t.row(vec!["kernel".into(), kernel.trim().to_string()]);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    t.row(vec![
        "load average (1/5/15 min, at the end)".into(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    ]);
    t.row(vec![
        "date (UTC)".into(),
        webhooks::time::iso_ms(webhooks::time::now_ms()),
    ]);
    t.row(vec!["commit".into(), commit()]);
    t.row(vec![
        "allocator".into(),
        if cfg!(feature = "mimalloc") {
            "mimalloc (--features mimalloc)"
        } else {
            "system (glibc malloc)"
        }
        .into(),
    ]);
    t.row(vec![
        "build".into(),
        if cfg!(debug_assertions) {
            "debug (figures are not representative: use --release)"
        } else {
            "release"
        }
        .into(),
    ]);
    t
}

/// The workspace's git commit, and whether the code differs from it (the bench's own files aside).
fn commit() -> String {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let changed = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "shared",
        "functions",
    ])
    .unwrap_or_default();
    if changed.is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes in shared/ or functions/")
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .collect();
    for c in &chosen {
        if !SECTIONS.contains(c) {
            eprintln!("unknown section '{c}'; sections: {}", SECTIONS.join(", "));
            std::process::exit(2);
        }
    }
    // The soak takes minutes and wants LocalStack: it runs only when named.
    let run = |name: &str| (chosen.is_empty() && name != "soak") || chosen.contains(&name);
    let events: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 10_000 });
    println!("webhooks bench: one table per section; targets and verdicts under each (see tests/BENCH.md)");
    if cfg!(debug_assertions) {
        println!("warning: debug build; run `cargo run --release -p webhooks-tests --bin bench`");
    }
    if run("signing") {
        signing::run(quick).print();
    }
    if run("dispatch") {
        dispatch::run(quick).await.print();
    }
    if run("e2e") {
        e2e::run(quick).await.print();
    }
    if run("cold") {
        cold::run(quick).await.print();
    }
    if run("cost") || run("fanout") {
        for t in cost::run(quick, run("cost"), run("fanout")).await {
            t.print();
        }
    }
    if run("durable") {
        durable::run(quick).await.print();
    }
    if run("health") {
        health::run(quick).await.print();
    }
    if run("capacity") {
        capacity::run().await.print();
    }
    if run("inflight") {
        capacity::in_flight().await.print();
    }
    if run("soak") {
        soak::run(events).await.print();
    }
    machine().print();
}
