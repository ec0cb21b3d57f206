//! The dispatcher's and ingest's CloudWatch Embedded Metric Format lines: a run through the
//! pipeline's own handlers (a success, a failure that opens the breaker, a skip, a deferral, a
//! duplicate and an undecodable event), every line checked against the EMF schema by a JSON
//! Schema validator (`jsonschema` in `.venv`, installed with moto by `make test`) and against
//! the rules of the specification a schema cannot state, and the counts added up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use webhooks::domain::Webhook;
use webhooks::metrics::Metrics;
use webhooks::ports::OutgoingMessage;
use webhooks_local::{Backend, Handler, Runner, local_config, poll_once};
use webhooks_tests::{JWT_SECRET, Receiver, Reply, closed_port, unique};

fn webhook(tenant: &str, url: String) -> Webhook {
    let now = webhooks::time::now_ms();
    Webhook {
        id: webhooks::ids::new_id("wh"),
        tenant: tenant.into(),
        url,
        events: vec!["system.info".into()],
        secret: None,
        previous_secrets: Vec::new(),
        active: true,
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        disabled: None,
    }
}

/// Runs the schema over every line with Python's `jsonschema` (Draft 2020-12).
fn validate_with_schema(lines: &[String]) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = format!("{root}/.venv/bin/python");
    let schema = format!("{root}/tests/fixtures/emf-schema.json");
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        v = jsonschema.Draft202012Validator(schema)\n\
        n = 0\n\
        for line in sys.stdin:\n\
        \x20   v.validate(json.loads(line)); n += 1\n\
        print(n)\n";
    let mut child = std::process::Command::new(&python)
        .args(["-c", script, &schema])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} (make test installs it with moto): {e}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "not valid EMF: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), lines.len().to_string());
}

/// The rules a schema cannot state: every referenced dimension is a string member of the root,
/// every metric a number or an array of at most 100 numbers there.
fn check_references(doc: &Value) {
    for directive in doc["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            for key in set.as_array().expect("set") {
                let key = key.as_str().expect("key");
                assert!(doc[key].is_string(), "dimension {key} has no string target: {doc}");
            }
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            match &doc[name] {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(values.len() <= 100 && values.iter().all(Value::is_number), "{doc}")
                }
                other => panic!("metric {name} has no numeric target ({other}): {doc}"),
            }
        }
    }
}

/// Sums each metric's values over the lines of one function.
fn totals(docs: &[Value], function: &str) -> BTreeMap<String, (f64, usize)> {
    let mut out: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d["Function"] == function) {
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
            for metric in directive["Metrics"].as_array().expect("metrics") {
                let name = metric["Name"].as_str().expect("name").to_string();
                let entry = out.entry(name.clone()).or_default();
                match &doc[&name] {
                    Value::Array(values) => {
                        entry.0 += values.iter().filter_map(Value::as_f64).sum::<f64>();
                        entry.1 += values.len();
                    }
                    v => {
                        entry.0 += v.as_f64().expect("number");
                        entry.1 += 1;
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_lines_match_the_schema_and_add_up() {
    let vars = [
        ("JWT_SECRET", String::from_utf8_lossy(JWT_SECRET).into_owned()),
        ("RETRY_SCHEDULE_SECONDS", "1".to_string()),
        ("BREAKER_FAILURES", "1".to_string()),
        ("BREAKER_PROBE_SECONDS", "600".to_string()),
    ];
    let config = local_config(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    let mut runner = Runner::new(&config, JWT_SECRET, &Backend::Memory).expect("runner");
    let (metrics, captured) = Metrics::capture();
    runner.ingest.metrics = metrics.clone();
    runner.dispatcher.metrics = metrics;
    let (store, queue, urls) = (
        runner.state.store.clone(),
        runner.state.queue.clone(),
        runner.urls.clone(),
    );

    let receiver = Receiver::start(Reply::Status(200)).await;
    let tenant = unique("acme");
    let ok = webhook(&tenant, receiver.url("/ok"));
    let dead = webhook(&tenant, format!("http://127.0.0.1:{}/dead", closed_port()));
    let later = webhook(&tenant, receiver.url("/later"));
    for w in [&ok, &dead, &later] {
        store.create(w).await.expect("create");
    }
    let ingest = runner.ingest.clone();
    let ingest: Handler = Arc::new(move |e| {
        let i = ingest.clone();
        Box::pin(async move { i.handle(e).await })
    });
    let dispatcher = runner.dispatcher.clone();
    let dispatch: Handler = Arc::new(move |e| {
        let d = dispatcher.clone();
        Box::pin(async move { d.handle(e, None).await })
    });
    let send = |body: String| {
        let queue = queue.clone();
        let url = urls.events.clone();
        async move {
            let m = OutgoingMessage {
                id: "0".into(),
                body,
                reason: None,
                delay_s: 0,
            };
            assert!(queue.send_batch(&url, &[m]).await.expect("send").is_empty());
        }
    };
    let event = json!({"tenant": tenant, "event": "system.info", "id": "evt-1", "payload": {}}).to_string();
    let wait = Duration::from_secs(2);

    send(event.clone()).await;
    assert_eq!(poll_once(queue.as_ref(), &urls.events, wait, &ingest).await, Ok(1));
    send(event).await;
    send("{\"not\": \"an event\"}".to_string()).await;
    for _ in 0..2 {
        poll_once(queue.as_ref(), &urls.events, wait, &ingest)
            .await
            .expect("ingest");
    }
    // Inactive before its job is handled: that job is skipped.
    let current = store.get(&tenant, &later.id).await.expect("get").expect("found");
    let off = Webhook {
        active: false,
        version: current.version + 1,
        ..current.clone()
    };
    store.update(&current, &off).await.expect("deactivate");
    let mut handled = 0;
    for _ in 0..3 {
        if handled < 3 {
            handled += poll_once(queue.as_ref(), &urls.delivery, wait, &dispatch)
                .await
                .expect("dispatch");
        }
    }
    assert_eq!(handled, 3);
    // The dead endpoint's retry comes back after 1 s to a breaker that the first failure
    // opened: deferred.
    let again = poll_once(queue.as_ref(), &urls.delivery, Duration::from_secs(5), &dispatch)
        .await
        .expect("dispatch");
    assert_eq!(again, 1);
    assert_eq!(receiver.received().len(), 1, "one POST to the healthy endpoint");

    let lines = captured.lock().expect("lines").clone();
    assert!(!lines.is_empty());
    validate_with_schema(&lines);
    let docs: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    for (line, doc) in lines.iter().zip(&docs) {
        check_references(doc);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Webhooks");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"], []]),
            "per function and in total"
        );
        for private in [tenant.as_str(), ok.id.as_str(), dead.id.as_str(), "evt-1"] {
            assert!(
                !line.contains(private),
                "no tenant, webhook or event in metrics: {line}"
            );
        }
    }
    let dispatcher = totals(&docs, "dispatcher");
    let count = |t: &BTreeMap<String, (f64, usize)>, name: &str| t.get(name).map(|(sum, _)| *sum).unwrap_or(-1.0);
    assert_eq!(count(&dispatcher, "DeliveriesSucceeded"), 1.0, "{dispatcher:?}");
    assert_eq!(count(&dispatcher, "AttemptsFailed"), 1.0);
    assert_eq!(count(&dispatcher, "DeliveriesSkipped"), 1.0);
    assert_eq!(count(&dispatcher, "DeliveriesDeferred"), 1.0);
    assert_eq!(count(&dispatcher, "DeliveriesFailed"), 0.0);
    assert_eq!(
        dispatcher.get("AttemptLatency").map(|(_, n)| *n),
        Some(2),
        "one value per POST"
    );
    let ingest = totals(&docs, "ingest");
    assert_eq!(count(&ingest, "EventsFannedOut"), 1.0, "{ingest:?}");
    assert_eq!(count(&ingest, "DeliveriesEnqueued"), 3.0);
    assert_eq!(count(&ingest, "EventsDuplicate"), 1.0);
    assert_eq!(
        count(&ingest, "EventsFailed"),
        1.0,
        "the undecodable one, dead-lettered"
    );
}
