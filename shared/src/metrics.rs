//! Metrics as CloudWatch Embedded Metric Format (EMF) lines: one JSON line per invocation on
//! stdout, which CloudWatch Logs turns into metrics with no API call from the function.
//!
//! Dimensions are the function's name and none (so every metric exists per function and in
//! total). Never a tenant or a webhook: each value of a dimension is a billed custom metric,
//! so per-tenant figures belong in the logs (the `tenant` field of every span).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Webhooks";
/// EMF allows at most 100 values in one metric's array: larger sets go out over more lines.
pub const MAX_VALUES: usize = 100;

/// Where the lines go.
#[derive(Clone, Default)]
pub enum Metrics {
    /// Nowhere (the local runner: its terminal is for people).
    #[default]
    Off,
    /// Standard output, where Lambda sends it to CloudWatch Logs.
    Stdout,
    /// Kept in memory, for tests.
    Capture(Arc<Mutex<Vec<String>>>),
}

/// What one invocation counted.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<TallyInner>,
}

#[derive(Default)]
struct TallyInner {
    counts: BTreeMap<&'static str, u64>,
    /// Values in milliseconds, by metric name.
    timings: BTreeMap<&'static str, Vec<u64>>,
}

impl Tally {
    /// Counts `n` under `name`; a name counted once shows as 0 when nothing else adds to it.
    pub fn add(&self, name: &'static str, n: u64) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *t.counts.entry(name).or_default() += n;
    }

    pub fn time(&self, name: &'static str, ms: u64) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.timings.entry(name).or_default().push(ms);
    }
}

impl Metrics {
    pub fn capture() -> (Metrics, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Metrics::Capture(lines.clone()), lines)
    }

    /// Writes what `tally` counted for `function` as EMF lines.
    pub fn emit(&self, function: &str, tally: &Tally) {
        if matches!(self, Metrics::Off) {
            return;
        }
        let inner = tally.inner.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines(function, &inner.counts, &inner.timings, crate::time::now_ms()) {
            match self {
                Metrics::Off => {}
                Metrics::Stdout => println!("{line}"),
                Metrics::Capture(lines) => lines.lock().unwrap_or_else(|p| p.into_inner()).push(line),
            }
        }
    }
}

fn document(
    function: &str,
    now_ms: u64,
    metrics: Vec<serde_json::Value>,
    values: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut root = serde_json::Map::new();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"], []],
                "Metrics": metrics,
            }],
        }),
    );
    root.insert("Function".into(), serde_json::json!(function));
    root.extend(values);
    serde_json::Value::Object(root).to_string()
}

/// The counts and the first `MAX_VALUES` timings of each metric on one line; further timings
/// on lines of their own.
fn lines(
    function: &str,
    counts: &BTreeMap<&'static str, u64>,
    timings: &BTreeMap<&'static str, Vec<u64>>,
    now_ms: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut metrics = Vec::new();
    let mut values = serde_json::Map::new();
    for (name, n) in counts {
        metrics.push(serde_json::json!({"Name": name, "Unit": "Count"}));
        values.insert(name.to_string(), serde_json::json!(n));
    }
    for (name, ms) in timings {
        if let Some(first) = ms.chunks(MAX_VALUES).next() {
            metrics.push(serde_json::json!({"Name": name, "Unit": "Milliseconds"}));
            values.insert(name.to_string(), serde_json::json!(first));
        }
    }
    if !metrics.is_empty() {
        out.push(document(function, now_ms, metrics, values));
    }
    for (name, ms) in timings {
        for chunk in ms.chunks(MAX_VALUES).skip(1) {
            let metrics = vec![serde_json::json!({"Name": name, "Unit": "Milliseconds"})];
            let mut values = serde_json::Map::new();
            values.insert(name.to_string(), serde_json::json!(chunk));
            out.push(document(function, now_ms, metrics, values));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_timings_fit_emfs_limits() {
        let tally = Tally::default();
        tally.add("DeliveriesSucceeded", 2);
        tally.add("DeliveriesSkipped", 0);
        for i in 0..250 {
            tally.time("AttemptLatency", i);
        }
        let (metrics, lines) = Metrics::capture();
        metrics.emit("dispatcher", &tally);
        let lines = lines.lock().expect("lines").clone();
        assert_eq!(lines.len(), 3, "100 + 100 + 50 timings");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(first["Function"], "dispatcher");
        assert_eq!(first["DeliveriesSucceeded"], 2);
        assert_eq!(first["DeliveriesSkipped"], 0);
        assert_eq!(first["AttemptLatency"].as_array().map(Vec::len), Some(100));
        let last: serde_json::Value = serde_json::from_str(&lines[2]).expect("json");
        assert_eq!(last["AttemptLatency"].as_array().map(Vec::len), Some(50));
        assert!(last.get("DeliveriesSucceeded").is_none());
    }
}
