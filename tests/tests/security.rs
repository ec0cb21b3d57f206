//! Security suites: SSRF at registration and at send time (names, spellings, redirects),
//! tenancy on every route, secrets kept out of logs and error bodies, and limits.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use webhooks::auth::JwtVerifier;
use webhooks::delivery::{Deliverer, Dns, Outcome};
use webhooks::memory::{MemoryDeliveryLog, MemoryQueue, MemoryWebhookStore};
use webhooks::signing::Envelope;
use webhooks::ssrf::TargetPolicy;
use webhooks_api::{AppState, router};
use webhooks_tests::runtime_api::binary;
use webhooks_tests::{JWT_SECRET, Receiver, Reply, bearer, closed_port, token};

const GUARDED: TargetPolicy = TargetPolicy {
    allow_http: true,
    allow_private: false,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A name table instead of DNS: no query leaves the machine.
fn dns() -> Dns {
    Dns::fixed(&[
        ("internal.test", ip("10.0.0.5")),
        ("metadata.test", ip("169.254.169.254")),
        ("v6.test", ip("fd00::1")),
        ("rebind.test", ip("93.184.216.34")),
        ("rebind.test", ip("127.0.0.1")),
        ("public.test", ip("93.184.216.34")),
    ])
}

async fn api(policy: TargetPolicy) -> String {
    let queue = Arc::new(MemoryQueue::new());
    let events_queue_url = queue.create_queue("events", Duration::from_secs(30), None);
    let delivery_queue_url = queue.create_queue("jobs", Duration::from_secs(30), None);
    let app = router(AppState {
        store: Arc::new(MemoryWebhookStore::new()),
        log: Arc::new(MemoryDeliveryLog::new()),
        events: Arc::new(webhooks::memory::MemoryEventStore::new()),
        queue,
        events_queue_url,
        delivery_queue_url,
        recover_page: 100,
        verifier: Arc::new(JwtVerifier::new(JWT_SECRET, None, None)),
        deliverer: Deliverer::with_dns(policy, dns()).expect("client"),
        test_timeout: Duration::from_secs(2),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn ssrf_is_refused_at_registration_and_at_send_time() {
    let base = api(GUARDED).await;
    let http = reqwest::Client::new();
    let t = bearer("ssrf");
    let receiver = Receiver::start(Reply::Status(200)).await;
    let port = receiver.addr.port();
    let refused = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://10.1.2.3/".into(),
        "http://192.168.0.1/".into(),
        "http://172.20.0.1/".into(),
        "http://100.64.1.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00:ec2::254]/".into(),
        "http://[fc00::1]/".into(),
        "http://internal.test/".into(),
        "http://metadata.test/".into(),
        "http://v6.test/".into(),
        "http://rebind.test/".into(),
    ];
    let mut cases = 0;
    for url in &refused {
        let res = http
            .post(format!("{base}/api/webhooks"))
            .header("authorization", &t)
            .json(&json!({"url": url, "events": ["*"]}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 422, "{url} must be refused at registration");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["errors"][0]["field"], "url");
        assert!(
            body["detail"].as_str().expect("detail").contains("target not allowed"),
            "{url}: {body}"
        );
        let res = http
            .post(format!("{base}/api/webhooks/test"))
            .header("authorization", &t)
            .json(&json!({"url": url, "event": "system.info", "payload": {}}))
            .send()
            .await
            .expect("send");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["success"], false, "{url}");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .starts_with("Target not allowed"),
            "{url}: {body}"
        );
        cases += 2;
    }
    assert!(receiver.received().is_empty(), "nothing reached the private receiver");
    // A public name registers (nothing is sent at registration).
    let res = http
        .post(format!("{base}/api/webhooks"))
        .header("authorization", &t)
        .json(&json!({"url": "https://public.test/hook", "events": ["*"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);

    // A name that was public when registered and points at a private address later: the send
    // is refused at connect time.
    let later = Deliverer::with_dns(GUARDED, Dns::fixed(&[("later.test", ip("127.0.0.1"))])).expect("client");
    let payload = "{}".to_string();
    let envelope = Envelope {
        id: "dl_x",
        event: "system.info",
        timestamp_ms: 0,
        payload: &payload,
    };
    let report = later
        .send(
            &format!("http://later.test:{port}/"),
            &envelope.sign(None, 0),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NotAllowed);
    assert!(
        report.message.contains("127.0.0.1 is a loopback address"),
        "{}",
        report.message
    );
    assert!(receiver.received().is_empty());
    println!(
        "ssrf: {} cases refused, 0 requests reached a private address",
        cases + 1
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::start(Reply::Status(200)).await;
    let redirector = {
        let location = target.url("/private");
        let app = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move { (axum::http::StatusCode::FOUND, [("location", location)], "moved") }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let d = Deliverer::new(TargetPolicy::PERMISSIVE).expect("client");
    let payload = "{}".to_string();
    let envelope = Envelope {
        id: "dl_x",
        event: "system.info",
        timestamp_ms: 0,
        payload: &payload,
    };
    let report = d
        .send(
            &format!("http://{redirector}/"),
            &envelope.sign(None, 0),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(report.status_code, Some(302));
    assert!(!report.success(), "a redirect is a failed attempt");
    assert_eq!(report.message, "Receiver answered HTTP 302 Found");
    assert!(target.received().is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_route() {
    let base = api(TargetPolicy::PERMISSIVE).await;
    let http = reqwest::Client::new();
    let (owner, other) = (bearer("owner"), bearer("intruder"));
    let created: Value = http
        .post(format!("{base}/api/webhooks"))
        .header("authorization", &owner)
        .json(&json!({"url": "https://example.com/h", "events": ["*"], "secret": "owner-secret-0123"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let routes = [
        ("GET", format!("/api/webhooks/{id}"), None),
        ("PUT", format!("/api/webhooks/{id}"), Some(json!({"active": false}))),
        ("DELETE", format!("/api/webhooks/{id}"), None),
        ("GET", format!("/api/webhooks/{id}/deliveries"), None),
        (
            "GET",
            format!("/api/webhooks/{id}/deliveries/dl_01m8hw0000000000000000000a"),
            None,
        ),
        (
            "POST",
            format!("/api/webhooks/{id}/deliveries/dl_01m8hw0000000000000000000a/resend"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/api/webhooks/{id}/recover"),
            Some(json!({"since": "2026-01-01T00:00:00Z"})),
        ),
    ];
    for (method, path, body) in &routes {
        let mut req = http
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .header("authorization", &other);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status(), 404, "{method} {path}");
        let text = res.text().await.expect("body");
        assert!(
            !text.contains("example.com") && !text.contains("owner-secret-0123"),
            "{text}"
        );
    }
    let list: Value = http
        .get(format!("{base}/api/webhooks"))
        .header("authorization", &other)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(list, json!([]));
    let still: Value = http
        .get(format!("{base}/api/webhooks/{id}"))
        .header("authorization", &owner)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(still["active"], true, "the intruder's PUT changed nothing");
    println!("tenancy: {} routes answered 404 to another tenant", routes.len() + 1);
}

/// Runs the local runner binary with debug logs through a full session (registrations with
/// secrets, a rotation, test sends, deliveries that fail and succeed, bad input), then searches
/// everything it printed, and every error body, for the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_error_bodies() {
    let path = binary("webhooks-local", "debug");
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    let jwt_secret = "JWTSECRET-0f9e8d7c6b5a4f3e2d1c0b9a";
    // The durable default, in a data directory of its own.
    let data = webhooks_tests::TempDir::new("security-data");
    let mut child = tokio::process::Command::new(&path)
        .env("DATA_DIR", data.path())
        .env("PORT", "0")
        .env("JWT_SECRET", jwt_secret)
        .env("RUST_LOG", "debug")
        .env("RETRY_SCHEDULE_SECONDS", "1")
        .env("DELIVERY_TIMEOUT_SECONDS", "1")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn local runner");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut first))
        .await
        .expect("started")
        .expect("read");
    let base = first.trim().rsplit(' ').next().expect("address").to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let mut stderr = child.stderr.take().expect("stderr");
    let errs = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let http = reqwest::Client::new();
    let tok = webhooks::auth::mint(jwt_secret.as_bytes(), &webhooks::auth::claims_for("alice", None, 600));
    let auth = format!("Bearer {tok}");
    let ok = Receiver::start(Reply::Status(200)).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    let secrets = [
        "HOOKSECRET-one-1111",
        "HOOKSECRET-rotated-2222",
        "HOOKSECRET-test-3333",
        "HOOKSECRET-fail-4444",
    ];
    let mut error_bodies = Vec::new();
    let send = |method: &str, path: &str, body: Value| {
        let req = http
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .header("authorization", &auth)
            .json(&body);
        async move {
            let res = req.send().await.expect("send");
            let status = res.status();
            (status, res.text().await.expect("text"))
        }
    };
    let (_, created) = send(
        "POST",
        "/api/webhooks",
        json!({"url": ok.url("/"), "events": ["*"], "secret": secrets[0]}),
    )
    .await;
    let id = serde_json::from_str::<Value>(&created).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    send("PUT", &format!("/api/webhooks/{id}"), json!({"secret": secrets[1]})).await;
    send(
        "POST",
        "/api/webhooks",
        json!({"url": failing.url("/"), "events": ["system.error"], "secret": secrets[3]}),
    )
    .await;
    send(
        "POST",
        "/api/webhooks/test",
        json!({"url": ok.url("/t"), "event": "system.info", "payload": {}, "secret": secrets[2]}),
    )
    .await;
    send("POST", "/api/webhooks/test", json!({"url": format!("http://127.0.0.1:{}/", closed_port()), "event": "system.info", "payload": {}, "secret": secrets[2]})).await;
    send(
        "POST",
        "/api/events",
        json!({"event": "system.error", "payload": {"x": 1}}),
    )
    .await;
    for bad in [
        json!({"url": "ftp://x", "events": ["*"], "secret": secrets[0]}),
        json!({"url": ok.url("/"), "events": ["nope"], "secret": secrets[1]}),
        json!({"url": ok.url("/"), "events": ["*"], "secret": 12, "note": secrets[2]}),
    ] {
        let (status, body) = send("POST", "/api/webhooks", bad).await;
        assert!(status.is_client_error());
        error_bodies.push(body);
    }
    let (status, body) = send("PUT", &format!("/api/webhooks/{id}"), json!({"secret": ""})).await;
    assert_eq!(status, 422);
    error_bodies.push(body);
    // Let the failing deliveries retry once.
    failing.wait_for(2, Duration::from_secs(10)).await;
    ok.wait_for(2, Duration::from_secs(10)).await;
    let _ = child.kill().await;
    let mut logs = String::new();
    let _ = stdout.read_to_string(&mut logs).await;
    logs.push_str(&errs.await.expect("stderr"));
    assert!(logs.lines().count() > 10, "debug logs were captured:\n{logs}");
    for s in secrets.iter().chain([&jwt_secret]) {
        assert!(!logs.contains(s), "secret {s} appears in the logs");
        for body in &error_bodies {
            assert!(!body.contains(s), "secret {s} appears in an error body: {body}");
        }
    }
    assert!(!logs.contains(&tok), "a bearer token appears in the logs");
    println!(
        "secrets: {} log lines and {} error bodies searched, 0 secrets found",
        logs.lines().count(),
        error_bodies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_give_clear_errors_and_the_server_keeps_serving() {
    let config = webhooks_local::local_config(|_| None).expect("config");
    let runner = webhooks_local::Runner::new(&config, JWT_SECRET, &webhooks_local::Backend::Memory).expect("runner");
    let base = format!("http://{}", runner.spawn(0).await.expect("serve"));
    let http = reqwest::Client::new();
    let t = format!("Bearer {}", token("limits"));
    let post = |path: &str, body: String| {
        http.post(format!("{base}{path}"))
            .header("authorization", &t)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let huge = format!(
        r#"{{"event":"system.info","payload":{{"blob":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    assert_eq!(post("/api/events", huge).await.expect("send").status(), 413);
    let big = format!(
        r#"{{"event":"system.info","payload":{{"blob":"{}"}}}}"#,
        "x".repeat(130 * 1024)
    );
    let res = post("/api/events", big).await.expect("send");
    assert_eq!(res.status(), 422);
    assert!(res.text().await.expect("text").contains("payload"));
    let many: Vec<&str> = vec!["system.info"; 65];
    assert_eq!(
        post(
            "/api/webhooks",
            json!({"url": "https://x.com", "events": many}).to_string()
        )
        .await
        .expect("send")
        .status(),
        422
    );
    let deep = format!(
        r#"{{"event":"system.info","payload":{}{}}}"#,
        "{\"a\":".repeat(200),
        "}".repeat(201)
    );
    assert_eq!(post("/api/events", deep).await.expect("send").status(), 400);
    let long_url = format!("https://x.com/{}", "a".repeat(3000));
    assert_eq!(
        post("/api/webhooks", json!({"url": long_url, "events": ["*"]}).to_string())
            .await
            .expect("send")
            .status(),
        422
    );
    let huge_header = "a".repeat(20_000);
    let res = http
        .get(format!("{base}/api/webhooks"))
        .header("authorization", format!("Bearer {huge_header}"))
        .send()
        .await
        .expect("send");
    assert!(res.status().is_client_error(), "{}", res.status());
    // Still serving, and none of it was stored.
    let res = http
        .get(format!("{base}/api/webhooks"))
        .header("authorization", &t)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json"), json!([]));
}
