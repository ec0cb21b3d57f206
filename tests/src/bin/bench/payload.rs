//! Event payloads of a chosen size that look like the guide's: nested objects, strings with
//! escapes and non-ASCII, integers and floats.

use serde_json::{Value, json};

pub const EVENT: &str = "workflow.execution.completed";

/// A payload whose compact JSON is at least `target` bytes (and not much more). With `seq`,
/// its first field is `"seq": N`, which the recording receiver looks for.
pub fn payload(target: usize, seq: Option<u64>) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(seq) = seq {
        map.insert("seq".into(), json!(seq));
    }
    map.insert("id".into(), json!("exec_01jv9qk3m4r7t2w8x5y6z0abcd"));
    map.insert("workflowId".into(), json!("wf_01jv9pz8a1b2c3d4e5f6g7h8j9"));
    map.insert("status".into(), json!("COMPLETED"));
    map.insert("startedAt".into(), json!("2025-05-21T21:26:58.211Z"));
    map.insert("completedAt".into(), json!("2025-05-21T21:27:09.442Z"));
    map.insert("durationMs".into(), json!(11231));
    map.insert("score".into(), json!(0.875));
    map.insert("tags".into(), json!(["nightly", "étape-finale", "prod"]));
    map.insert("steps".into(), json!([]));
    let mut value = Value::Object(map);
    let mut i = 0u64;
    while webhooks::jsjson::to_vec(&value).len() < target {
        i += 1;
        let step = json!({
            "name": format!("step-{i}"),
            "status": if i.is_multiple_of(7) { "SKIPPED" } else { "COMPLETED" },
            "durationMs": 100 + (i * 37) % 900,
            "ratio": (i as f64) / 3.0,
            "output": {"rows": i * 42, "note": "naïve café \"quoted\"\tline\nnext", "ok": true},
        });
        if let Some(Value::Array(steps)) = value.get_mut("steps") {
            steps.push(step);
        } else {
            break;
        }
    }
    value
}
