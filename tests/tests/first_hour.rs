//! The first hour of a new user (issue 14): generated secrets that the official Standard
//! Webhooks libraries verify as returned, `webhooks-local listen` verifying a real delivery,
//! payloads JavaScript would change refused (API 422, events DLQ), testing a registered webhook,
//! errors that name their field and no operator setting, and the `token` flags.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use webhooks::ports::QueueMessage;
use webhooks::signing;
use webhooks_local::{Backend, Runner, listen};
use webhooks_tests::runtime_api::binary;
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer, emulator, emulator_resources};

const WAIT: Duration = Duration::from_secs(20);
/// A secret a user chose: plain text, not in the `whsec_` form.
const PLAIN: &str = "my-own-plain-secret-42";

struct Local {
    base: String,
    http: reqwest::Client,
    auth: String,
}

/// A local runner (embedded backend) on 127.0.0.1:0 with its pipeline running.
async fn local(vars: &[(&str, &str)]) -> Local {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = webhooks_local::local_config(|k| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| (k == "JWT_SECRET").then(|| String::from_utf8_lossy(JWT_SECRET).into_owned()))
    })
    .expect("config");
    let runner = Runner::new(&config, JWT_SECRET, &Backend::Memory).expect("runner");
    let addr = runner.spawn(0).await.expect("serve");
    Local {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        auth: bearer("first-hour"),
    }
}

impl Local {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body.to_string())).await
    }

    async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body.to_string())).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn webhook(&self, body: Value) -> Value {
        let (status, created) = self.post("/api/webhooks", body).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// The delivery log of a webhook once it has a finished attempt (bounded wait).
    async fn first_attempt(&self, webhook_id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, list) = self.get(&format!("/api/webhooks/{webhook_id}/deliveries")).await;
            if let Some(a) = list.get(0).and_then(|d| d["attempts"].get(0)) {
                return a.clone();
            }
            assert!(started.elapsed() < WAIT, "no attempt logged for {webhook_id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs one official verifier (`python` or `node`) on a received request.
async fn official_verify(lang: &str, secret: &str, plain: bool, req: &webhooks_tests::Received) -> (bool, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let (program, script) = match lang {
        "python" => (
            format!("{root}/.venv-standardwebhooks/bin/python"),
            format!("{root}/tests/standardwebhooks/verify.py"),
        ),
        _ => ("node".to_string(), format!("{root}/tests/standardwebhooks/verify.js")),
    };
    let headers: serde_json::Map<String, Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), json!(req.header(h).expect("standard header"))))
        .collect();
    let input = json!({"secret": secret, "plain": plain, "headers": headers,
        "body": std::str::from_utf8(&req.body).expect("utf8")});
    let mut child = tokio::process::Command::new(&program)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}; run infra/standardwebhooks.sh install (make test does)"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.to_string().as_bytes()).await.expect("write");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("verifier finished")
        .expect("verifier ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError") && !text.contains("Cannot find module"),
        "standardwebhooks for {lang} is missing: run infra/standardwebhooks.sh install\n{text}"
    );
    (out.status.success() && text.trim() == "verified", text)
}

#[tokio::test]
async fn generated_secrets_verify_with_both_official_libraries_as_returned() {
    let l = local(&[("RETRY_SCHEDULE_SECONDS", "")]).await;
    let rx = Receiver::start(Reply::Status(200)).await;
    let generated = l
        .webhook(json!({"url": rx.url("/generated"), "events": ["system.info"]}))
        .await;
    let secret = generated["secret"]
        .as_str()
        .expect("a secret is generated when none is given");
    assert!(
        secret.starts_with("whsec_") && secret.len() == "whsec_".len() + 44,
        "{secret}"
    );
    let (_, shown) = l
        .get(&format!("/api/webhooks/{}", generated["id"].as_str().expect("id")))
        .await;
    assert_eq!(
        (shown.get("secret"), &shown["hasSecret"]),
        (None, &json!(true)),
        "shown once"
    );
    l.webhook(json!({"url": rx.url("/plain"), "events": ["system.info"], "secret": PLAIN}))
        .await;
    let (status, _) = l
        .post(
            "/api/events",
            json!({"event": "system.info", "payload": {"n": 1, "text": "héllo ✓"}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = rx.wait_for(2, WAIT).await;
    for req in &got {
        for lang in ["python", "node"] {
            let (ok, out) = if req.path == "/generated" {
                official_verify(lang, secret, false, req).await
            } else {
                official_verify(lang, PLAIN, true, req).await
            };
            assert!(ok, "{lang} standardwebhooks on {}: {out}", req.path);
        }
    }
    // The control: the libraries do check, and a plain secret needs the README's conversion.
    let plain = got.iter().find(|r| r.path == "/plain").expect("plain delivery");
    for lang in ["python", "node"] {
        let (ok, out) = official_verify(lang, PLAIN, false, plain).await;
        assert!(!ok, "{lang} verified a plain secret without the conversion: {out}");
    }
}

/// Starts `listen` on 127.0.0.1:0; returns its URL and what it prints.
async fn start_listen(secret: Option<String>, forward: Option<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let print: listen::Printer = Arc::new(move |l| sink.lock().expect("lock").push(l));
    let options = listen::ListenOptions {
        port: 0,
        secret,
        forward,
    };
    tokio::spawn(listen::serve(options, listener, print));
    (url, lines)
}

async fn printed(lines: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let now = lines.lock().expect("lock").clone();
        if now.len() >= n {
            return now;
        }
        assert!(
            started.elapsed() < WAIT,
            "listen printed {now:?}, wanted {n} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn listen_verifies_prints_and_forwards_a_real_delivery() {
    let l = local(&[("RETRY_SCHEDULE_SECONDS", "")]).await;
    let downstream = Receiver::start(Reply::Status(202)).await;
    // Registered first, as in the README: the secret comes back from the API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let created = l
        .webhook(json!({"url": format!("http://{addr}/hook"), "events": ["workflow.execution.completed"]}))
        .await;
    let secret = created["secret"].as_str().expect("secret").to_string();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let options = listen::ListenOptions {
        port: 0,
        secret: Some(secret.clone()),
        forward: Some(downstream.url("/mine")),
    };
    tokio::spawn(listen::serve(
        options,
        listener,
        Arc::new(move |l| sink.lock().expect("lock").push(l)),
    ));
    let (status, _) = l
        .post(
            "/api/events",
            json!({"event": "workflow.execution.completed", "payload": {"id": "1", "status": "COMPLETED"}}),
        )
        .await;
    assert_eq!(status, 202);
    let out = printed(&lines, 1).await;
    let line = &out[0];
    for want in [
        "--> POST /hook",
        "event workflow.execution.completed",
        "attempt 1 ",
        "verified (X-Webhook-Signature and webhook-signature)",
        r#""payload":{"id":"1","status":"COMPLETED"}"#,
        "forwarded to http://127.0.0.1:",
        "HTTP 202",
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
    let id = created["id"].as_str().expect("id");
    assert!(line.contains(" id dl_"), "{line}");
    // Forwarded as received: the downstream receiver verifies it too.
    let fwd = &downstream.wait_for(1, WAIT).await[0];
    assert_eq!(fwd.path, "/mine");
    assert!(signing::verify_guide_signature(
        &secret,
        &fwd.body,
        fwd.header("x-webhook-signature").expect("signature forwarded")
    ));
    // listen answers with the forward's status, which the delivery log records.
    let attempt = l.first_attempt(id).await;
    assert_eq!(attempt["statusCode"], 202, "{attempt}");
}

#[tokio::test]
async fn listen_answers_a_wrong_secret_401_and_shows_unsigned_deliveries() {
    let l = local(&[("RETRY_SCHEDULE_SECONDS", "")]).await;
    let (url, lines) = start_listen(Some("not-the-secret-of-this-hook".into()), None).await;
    let signed = l.webhook(json!({"url": url, "events": ["system.info"]})).await;
    let unsigned = l
        .webhook(json!({"url": url, "events": ["system.warning"], "secret": null}))
        .await;
    assert_eq!(unsigned["secret"], Value::Null, "null: an explicit unsigned webhook");
    assert_eq!(unsigned["hasSecret"], false);
    l.post("/api/events", json!({"event": "system.info", "payload": {}}))
        .await;
    let out = printed(&lines, 1).await;
    assert!(
        out[0].contains("NOT VERIFIED: X-Webhook-Signature and webhook-signature do not match --secret"),
        "{}",
        out[0]
    );
    let attempt = l.first_attempt(signed["id"].as_str().expect("id")).await;
    assert_eq!(attempt["statusCode"], 401, "{attempt}");
    l.post("/api/events", json!({"event": "system.warning", "payload": {}}))
        .await;
    let out = printed(&lines, 2).await;
    assert!(out[1].contains("unsigned (the webhook has no secret)"), "{}", out[1]);
    let attempt = l.first_attempt(unsigned["id"].as_str().expect("id")).await;
    assert_eq!(attempt["statusCode"], 200, "{attempt}");
}

#[tokio::test]
async fn payloads_javascript_would_change_are_refused_naming_the_path() {
    let l = local(&[("RETRY_SCHEDULE_SECONDS", "")]).await;
    let rx = Receiver::start(Reply::Status(200)).await;
    l.webhook(json!({"url": rx.url("/in"), "events": ["system.info"], "secret": null}))
        .await;
    let url = rx.url("/test");
    let cases = [
        (
            r#"{"order":{"id":12345678901234567890}}"#,
            "payload.order.id",
            "the integer 12345678901234567890 is beyond what JavaScript represents exactly (±9007199254740991, Number.MAX_SAFE_INTEGER); receivers would read 12345678901234567000: send it as a string",
        ),
        (
            r#"{"items":[{"n":-9007199254740993}]}"#,
            "payload.items[0].n",
            "send it as a string",
        ),
        (r#"{"a":1,"a":2}"#, "payload.a", "appears more than once"),
        (
            r#"{"a b":{"s":"\ud800x"}}"#,
            r#"payload["a b"].s"#,
            "lone UTF-16 surrogate",
        ),
    ];
    for (payload, path, message) in cases {
        for (route, extra) in [
            ("/api/events", String::new()),
            ("/api/webhooks/test", format!(r#","url":"{url}""#)),
        ] {
            let body = format!(r#"{{"event":"system.info","payload":{payload}{extra}}}"#);
            let (status, problem) = l.post_raw(route, &body).await;
            assert_eq!(status, 422, "{route} {body}: {problem}");
            assert_eq!(problem["errors"][0]["field"], path, "{problem}");
            let got = problem["errors"][0]["message"].as_str().expect("message");
            assert!(got.contains(message), "{got}");
            assert!(
                problem["detail"]
                    .as_str()
                    .expect("detail")
                    .starts_with(&format!("{path}: ")),
                "{problem}"
            );
        }
    }
    // -0 is delivered as 0 (JSON.stringify's writing; documented), and nothing refused was sent.
    let (status, _) = l
        .post_raw("/api/events", r#"{"event":"system.info","payload":{"n":-0,"f":-0.0}}"#)
        .await;
    assert_eq!(status, 202);
    let got = rx.wait_for(1, WAIT).await;
    assert!(
        std::str::from_utf8(&got[0].body)
            .expect("utf8")
            .ends_with(r#""payload":{"n":0,"f":0}}"#)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.received().iter().filter(|r| r.path == "/in").count(),
        1,
        "no refused event was delivered"
    );
    assert!(
        rx.received().iter().all(|r| r.path != "/test"),
        "no refused test was sent"
    );
}

/// The events queue refuses the same input: ingest moves it to the events DLQ at once, with
/// the reason in its `ErrorReason` attribute (on the emulator's SQS, attribute and all).
#[tokio::test]
async fn the_events_queue_dead_letters_the_same_payloads_with_the_reason() {
    let Some(sdk) = emulator().await else {
        return;
    };
    let mut vars = emulator_resources(&sdk).await;
    vars.push(("JWT_SECRET".into(), String::from_utf8_lossy(JWT_SECRET).into_owned()));
    let config =
        webhooks_local::local_config(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).expect("config");
    let runner = Runner::new(&config, JWT_SECRET, &Backend::Aws(Box::new(sdk.clone()))).expect("runner");
    let body = r#"{"tenant":"acme","event":"system.info","payload":{"n":9007199254740993,"k":1,"k":2}}"#;
    let message = QueueMessage {
        message_id: "m-first-hour".into(),
        receipt_handle: "r".into(),
        body: body.into(),
        receive_count: 1,
        sent_timestamp_ms: webhooks::time::now_ms(),
    };
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records = vec![webhooks_local::to_sqs_message(&message, &runner.urls.events)];
    let response = runner.ingest.handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "dead-lettered is handled");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let got = sqs
        .receive_message()
        .queue_url(&runner.urls.events_dlq)
        .message_attribute_names("All")
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    let dead = got.messages().first().expect("a message in the events DLQ");
    assert_eq!(dead.body(), Some(body), "the message as sent");
    let reason = dead
        .message_attributes()
        .and_then(|a| a.get("ErrorReason"))
        .and_then(|v| v.string_value())
        .expect("ErrorReason");
    assert!(
        reason.contains("payload.n: the integer 9007199254740993 is beyond what JavaScript represents exactly")
            && reason.contains("send it as a string")
            && reason.contains("payload.k: this key appears more than once"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_registered_webhook_is_tested_with_its_url_and_secret() {
    let l = local(&[("RETRY_SCHEDULE_SECONDS", "")]).await;
    let rx = Receiver::start(Reply::Status(200)).await;
    let created = l.webhook(json!({"url": rx.url("/reg"), "events": ["task.*"]})).await;
    let (id, secret) = (
        created["id"].as_str().expect("id"),
        created["secret"].as_str().expect("secret"),
    );
    // No body at all: the first subscribed type and {"test": true}.
    let (status, r) = l
        .send(reqwest::Method::POST, &format!("/api/webhooks/{id}/test"), None)
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r,
        json!({"success": true, "statusCode": 200, "message": "Webhook delivered successfully",
            "durationMs": r["durationMs"], "responseBody": "ok from receiver",
            "webhookId": id, "event": "task.execution.started"})
    );
    assert!(r["durationMs"].is_u64());
    let req = &rx.wait_for(1, WAIT).await[0];
    assert!(
        std::str::from_utf8(&req.body)
            .expect("utf8")
            .ends_with(r#""payload":{"test":true}}"#)
    );
    assert!(signing::verify_guide_signature(
        secret,
        &req.body,
        req.header("x-webhook-signature").expect("signed")
    ));
    let (ts, sw_id) = (
        req.header("webhook-timestamp").expect("ts"),
        req.header("webhook-id").expect("id"),
    );
    assert!(signing::verify_standard_signature(
        secret,
        sw_id,
        ts,
        &req.body,
        req.header("webhook-signature").expect("sig")
    ));
    let (status, r) = l
        .post(
            &format!("/api/webhooks/{id}/test"),
            json!({"event": "system.info", "payload": {"x": 1}}),
        )
        .await;
    assert_eq!((status, &r["event"]), (200, &json!("system.info")));
    let (status, r) = l.post(&format!("/api/webhooks/{id}/test"), json!({"nope": 1})).await;
    assert_eq!((status, &r["errors"][0]["field"]), (422, &json!("nope")), "{r}");
    // Another tenant's webhook, an unknown one: 404.
    let other = Local {
        base: l.base.clone(),
        http: l.http.clone(),
        auth: bearer("someone-else"),
    };
    let (status, _) = other
        .send(reqwest::Method::POST, &format!("/api/webhooks/{id}/test"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = l
        .send(
            reqwest::Method::POST,
            "/api/webhooks/wh_00000000000000000000000000/test",
            None,
        )
        .await;
    assert_eq!(status, 404);
    // A failing receiver: the status and the start of its answer, as in the log.
    rx.script(vec![Reply::Status(500)]);
    let (_, r) = l
        .send(reqwest::Method::POST, &format!("/api/webhooks/{id}/test"), None)
        .await;
    assert_eq!(
        (&r["success"], &r["statusCode"], &r["responseBody"]),
        (&json!(false), &json!(500), &json!("ok from receiver"))
    );
    // Tests are not deliveries: nothing in the log.
    let (_, log) = l.get(&format!("/api/webhooks/{id}/deliveries")).await;
    assert_eq!(log, json!([]));
}

#[tokio::test]
async fn errors_name_their_field_and_no_operator_setting() {
    let l = local(&[("ALLOW_PRIVATE_TARGETS", "false"), ("ALLOW_HTTP_TARGETS", "false")]).await;
    let mut bodies = Vec::new();
    for (body, field, message) in [
        (
            json!({"url": "http://example.com/", "events": ["*"]}),
            "url",
            "must use https",
        ),
        (
            json!({"url": "https://127.0.0.1/", "events": ["*"]}),
            "url",
            "target not allowed: 127.0.0.1 is a loopback address",
        ),
        (
            json!({"url": "https://example.com/", "events": ["*"], "secret": "short"}),
            "secret",
            "must be at least 16 characters (omit it to have one generated, or send null for unsigned deliveries)",
        ),
    ] {
        let (status, problem) = l.post("/api/webhooks", body).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field);
        assert_eq!(problem["errors"][0]["message"], message);
        bodies.push(problem.to_string());
    }
    let (status, r) = l
        .post(
            "/api/webhooks/test",
            json!({"url": "https://10.0.0.1/", "event": "system.info", "payload": {}}),
        )
        .await;
    assert_eq!((status, &r["success"]), (200, &json!(false)));
    assert_eq!(r["message"], "Target not allowed: 10.0.0.1 is a private address");
    bodies.push(r.to_string());
    for b in &bodies {
        assert!(!b.contains("ALLOW_"), "an operator setting named to a client: {b}");
    }
    // JSON syntax errors are about the body: no empty field name.
    let (status, problem) = l.post_raw("/api/webhooks", r#"{"url":"#).await;
    assert_eq!(status, 400);
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.starts_with("malformed JSON: "), "{detail}");
    assert_eq!(problem.get("errors"), None, "{problem}");
}

#[tokio::test]
async fn token_and_listen_errors_name_the_flag() {
    let path = binary("webhooks-local", "debug");
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    let run = |args: &[&str]| {
        std::process::Command::new(&path)
            .args(args)
            .env("JWT_SECRET", String::from_utf8_lossy(JWT_SECRET).as_ref())
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .expect("run webhooks-local")
    };
    for (args, want) in [
        (
            &["token", "--sub", "alice", "--ttl", "0"][..],
            "error: --ttl must be a positive number of seconds, not '0'",
        ),
        (
            &["token", "--sub", "alice", "--ttl", "soon"][..],
            "error: --ttl must be a positive number of seconds, not 'soon'",
        ),
        (&["token", "--ttl", "60"][..], "error: --sub is required"),
        (&["token", "--sub"][..], "error: --sub needs a value"),
        (&["listen", "--port", "x"][..], "error: --port must be a port number"),
        (
            &["listen", "--forward", "file:///etc"][..],
            "error: --forward must be an http(s) URL",
        ),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
    }
    let out = run(&["token", "--sub", "alice", "--tenant", "acme", "--ttl", "60"]);
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let who = webhooks::auth::JwtVerifier::new(JWT_SECRET, None, None)
        .verify(&token)
        .await
        .expect("a valid token");
    assert_eq!(who.tenant.as_str(), "acme");
}
