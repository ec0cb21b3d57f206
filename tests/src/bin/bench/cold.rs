//! Section 4: cold start of the three release binaries under the stand-in Lambda Runtime API:
//! exec -> first `GET /runtime/invocation/next`, peak RSS after one invocation, binary size.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhooks::messages::DeliveryJob;
use webhooks_tests::runtime_api::{Outcome, RuntimeApi, binary};

use crate::payload::{EVENT, payload};
use crate::table::{Table, f1, median, mib, ms};

const FUNCTIONS: [&str; 3] = ["api", "ingest", "dispatcher"];

fn fixture(name: &str, vars: &[(&str, &str)]) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).expect("fixture");
    for (k, v) in vars {
        let escaped = serde_json::to_string(v).expect("string");
        text = text.replace(&format!("{{{{{k}}}}}"), &escaped[1..escaped.len() - 1]);
    }
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The event each function gets: the API a GET of the event types (no AWS call); ingest an
/// event and the dispatcher a job, whose DynamoDB calls fail at once (nothing listens on the
/// endpoint), so they report the message as a batch item failure.
fn event_for(function: &str) -> Value {
    match function {
        "api" => fixture("apigw-http-v2-get.json", &[("TOKEN", &webhooks_tests::token("cold"))]),
        "ingest" => {
            let body = json!({"event": EVENT, "payload": payload(1024, None), "tenant": "cold", "id": "evt-cold"});
            fixture("sqs-event.json", &[("BODY", &body.to_string())])
        }
        _ => {
            let job = DeliveryJob {
                delivery_id: "dl_01jv9qk3m4r7t2w8x5y6z0abcd".into(),
                webhook_id: "wh_01jv9qk3m4r7t2w8x5y6z0abcd".into(),
                tenant: webhooks::messages::Tenant::parse("cold").expect("tenant"),
                event_id: webhooks::messages::EventId::parse("evt-cold").expect("id"),
                event: EVENT.into(),
                timestamp_ms: webhooks::time::now_ms(),
                cycle: 0,
                body: webhooks::messages::JobBody::Payload(webhooks::messages::raw_payload(
                    &webhooks::jsjson::to_string(&payload(1024, None)),
                )),
                not_before_ms: None,
            };
            fixture("sqs-event.json", &[("BODY", &job.encode())])
        }
    }
}

/// Lambda's variables plus the functions' own; every AWS endpoint is a closed port on 127.0.0.1.
fn app_env() -> Vec<(String, String)> {
    [
        (
            "JWT_SECRET",
            String::from_utf8_lossy(webhooks_tests::JWT_SECRET).into_owned(),
        ),
        ("WEBHOOKS_TABLE", "webhooks".into()),
        ("DELIVERIES_TABLE", "webhook-deliveries".into()),
        (
            "EVENTS_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/webhook-events".into(),
        ),
        (
            "EVENTS_DLQ_URL",
            "http://127.0.0.1:1/000000000000/webhook-events-dlq".into(),
        ),
        (
            "DELIVERY_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/webhook-delivery-jobs".into(),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "x".into()),
        ("AWS_SECRET_ACCESS_KEY", "x".into()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1".into()),
        // One try: the refused connection fails the call at once instead of after backoff.
        ("AWS_MAX_ATTEMPTS", "1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Sample {
    cold: Duration,
    hwm_kib: u64,
    answer: String,
}

async fn once(function: &str) -> Result<Sample, String> {
    let api = RuntimeApi::start().await;
    let path = binary(function, "release");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&path)
        .env_clear()
        .envs(api.lambda_env(function))
        .envs(app_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", path.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(t) = api.first_poll() {
            break t;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{function} exited before polling: {status}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(format!("{function} did not poll within 10 s"));
        }
        tokio::time::sleep(Duration::from_micros(250)).await;
    };
    let cold = first.saturating_duration_since(started);
    let answer = match api.invoke(event_for(function), Duration::from_secs(20)).await {
        Outcome::Response(v) => {
            if let Some(code) = v.get("statusCode") {
                format!("HTTP {code}")
            } else if let Some(f) = v.get("batchItemFailures").and_then(Value::as_array) {
                format!("{} item failure(s)", f.len())
            } else {
                "answered".into()
            }
        }
        Outcome::Error(e) => format!("error: {}", e.chars().take(60).collect::<String>()),
    };
    let hwm_kib = child.id().and_then(vm_hwm_kib).unwrap_or(0);
    let _ = child.kill().await;
    Ok(Sample { cold, hwm_kib, answer })
}

/// What `make build-lambda` (cargo lambda, arm64) ships, when it has been built.
fn arm64_size(function: &str) -> Option<f64> {
    let target = binary(function, "release");
    let lambda = target
        .parent()?
        .parent()?
        .join("lambda")
        .join(function)
        .join("bootstrap");
    std::fs::metadata(lambda).ok().map(|m| m.len() as f64)
}

pub async fn run(quick: bool) -> Table {
    let runs = if quick { 2 } else { 5 };
    let mut table = Table::new(
        format!("4. Cold start of the release binaries under the stand-in Runtime API (median of {runs})"),
        &[
            "function",
            "exec -> first poll ms",
            "min",
            "max",
            "peak RSS MiB",
            "binary MiB",
            "arm64 bootstrap MiB",
            "the invocation answered",
        ],
    );
    let missing: Vec<&str> = FUNCTIONS
        .iter()
        .copied()
        .filter(|f| !binary(f, "release").exists())
        .collect();
    if !missing.is_empty() {
        table.row(vec![format!("skipped: {} missing", missing.join(", "))]);
        table.note(
            "build them first: cargo build --release --bins   (they land in target/release/{api,ingest,dispatcher})",
        );
        return table;
    }
    let (mut worst_cold, mut worst_rss, mut worst_size) = (0.0f64, 0.0f64, 0.0f64);
    for f in FUNCTIONS {
        let size = std::fs::metadata(binary(f, "release")).map(|m| m.len()).unwrap_or(0) as f64;
        let mut colds = Vec::new();
        let mut rss = Vec::new();
        let mut answer = String::new();
        for _ in 0..runs {
            match once(f).await {
                Ok(s) => {
                    colds.push(ms(s.cold));
                    rss.push(s.hwm_kib as f64 * 1024.0);
                    answer = s.answer;
                }
                Err(e) => answer = e,
            }
        }
        let cold = median(&colds);
        let peak = median(&rss);
        worst_cold = worst_cold.max(cold);
        worst_rss = worst_rss.max(peak);
        worst_size = worst_size.max(size);
        table.row(vec![
            f.to_string(),
            f1(cold),
            f1(colds.iter().copied().fold(f64::INFINITY, f64::min)),
            f1(colds.iter().copied().fold(0.0, f64::max)),
            mib(peak),
            mib(size),
            arm64_size(f).map(mib).unwrap_or_else(|| "-".into()),
            answer,
        ]);
    }
    table.note(
        "env: Lambda's variables + the app's; AWS_ENDPOINT_URL=http://127.0.0.1:1 (nothing listens), so ingest's \
         and the dispatcher's DynamoDB calls fail and the message is reported back, as Lambda would retry it",
    );
    let mib_of = |b: f64| b / (1024.0 * 1024.0);
    table.verdict(
        worst_cold < 20.0,
        format!("slowest cold start {worst_cold:.1} ms (target < 20 ms)"),
    );
    table.verdict(
        mib_of(worst_rss) < 30.0,
        format!("largest peak RSS {:.1} MiB (target < 30 MiB)", mib_of(worst_rss)),
    );
    table.verdict(
        mib_of(worst_size) < 10.0,
        format!(
            "largest binary {:.1} MiB, x86_64 release (target < 10 MiB)",
            mib_of(worst_size)
        ),
    );
    let arm64: Vec<f64> = FUNCTIONS.iter().filter_map(|f| arm64_size(f)).collect();
    if arm64.len() == FUNCTIONS.len() {
        let worst = arm64.iter().copied().fold(0.0, f64::max);
        table.verdict(
            mib_of(worst) < 10.0,
            format!(
                "largest arm64 bootstrap (what Lambda runs; target/lambda, may be older than this build) {:.1} MiB",
                mib_of(worst)
            ),
        );
    }
    table
}
