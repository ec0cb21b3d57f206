//! Helpers of the end-to-end suites: a recording receiver on 127.0.0.1, tokens, and access to
//! the AWS-API emulator the README's test command starts.

pub mod counting;
pub mod runtime_api;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use webhooks::auth;

pub const JWT_SECRET: &[u8] = b"test-jwt-secret-0123456789abcdef";

pub fn token(tenant: &str) -> String {
    auth::mint(JWT_SECRET, &auth::claims_for(tenant, None, 600))
}

pub fn bearer(tenant: &str) -> String {
    format!("Bearer {}", token(tenant))
}

/// A unique name for tables and queues, so suites running in parallel never share state.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        webhooks::ids::new_id("t").to_lowercase().replace('_', "-")
    )
}

/// A fresh directory under the system's temporary directory (a `DATA_DIR` for one test),
/// removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The durable store's database in a fresh directory; keep the directory while it is used.
pub fn sqlite_db() -> (TempDir, std::sync::Arc<webhooks::sqlite::Db>) {
    let dir = TempDir::new("webhooks-data");
    let db = webhooks::sqlite::Db::open(dir.path()).expect("open the durable store");
    (dir, db)
}

/// The emulator's SDK configuration: `AWS_ENDPOINT_URL`, or the per-service
/// `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_SQS` (LocalStack's SQS beside moto's
/// DynamoDB). With no endpoint set the test FAILS: an emulator suite that passes without an
/// emulator proves nothing. `SKIP_EMULATOR_SUITES=1` skips them instead, loudly, for a quick
/// local `cargo test`; `make test` never sets it.
pub async fn emulator() -> Option<aws_config::SdkConfig> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let both = set("AWS_ENDPOINT_URL") || (set("AWS_ENDPOINT_URL_DYNAMODB") && set("AWS_ENDPOINT_URL_SQS"));
    if !both {
        assert!(
            std::env::var("SKIP_EMULATOR_SUITES").as_deref() == Ok("1")
                && std::env::var("REQUIRE_EMULATOR").as_deref() != Ok("1"),
            "no AWS-API emulator: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_DYNAMODB and AWS_ENDPOINT_URL_SQS); \
             `make test` starts one. SKIP_EMULATOR_SUITES=1 skips these suites instead."
        );
        eprintln!("SKIPPED (SKIP_EMULATOR_SUITES=1): this suite needs the AWS-API emulator");
        return None;
    }
    Some(webhooks::aws_config().await)
}

/// Creates tables and queues with unique names at the emulator and returns the variables that
/// point a function or the local runner at them (`WEBHOOKS_TABLE` … `DELIVERY_DLQ_URL`).
pub async fn emulator_resources(sdk: &aws_config::SdkConfig) -> Vec<(String, String)> {
    use webhooks::resources::{DELIVERIES_TABLE, WEBHOOKS_TABLE, create_queues, create_table};
    let (webhooks_table, deliveries_table) = (unique("webhooks"), unique("deliveries"));
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    create_table(&dynamo, &WEBHOOKS_TABLE, &webhooks_table)
        .await
        .expect("table");
    create_table(&dynamo, &DELIVERIES_TABLE, &deliveries_table)
        .await
        .expect("table");
    let urls = create_queues(&aws_sdk_sqs::Client::new(sdk), &format!("{}-", unique("q")))
        .await
        .expect("queues");
    let url = |id: &str| {
        urls.iter()
            .find(|(l, _)| *l == id)
            .map(|(_, u)| u.clone())
            .expect("queue url")
    };
    vec![
        ("WEBHOOKS_TABLE".into(), webhooks_table),
        ("DELIVERIES_TABLE".into(), deliveries_table),
        ("EVENTS_QUEUE_URL".into(), url("EventsQueue")),
        ("EVENTS_DLQ_URL".into(), url("EventsDeadLetterQueue")),
        ("DELIVERY_QUEUE_URL".into(), url("DeliveryQueue")),
        ("DELIVERY_DLQ_URL".into(), url("DeliveryDeadLetterQueue")),
    ]
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Sleeps before answering.
    Slow(Duration, u16),
    /// A failure with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// A failure with `Retry-After` as an HTTP date this many seconds from now.
    RetryAfterDate(u16, u64),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    seen: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers from a script.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(default: Reply) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            default: Some(default),
            ..Default::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move {
                let reply = {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.seen.push(Received {
                        path: uri.path().to_string(),
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    s.script
                        .pop_front()
                        .or_else(|| s.default.clone())
                        .unwrap_or(Reply::Status(200))
                };
                answer(reply).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replies for the next requests, in order; then the default applies again.
    pub fn script(&self, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .script
            .extend(replies);
    }

    /// What the receiver answers from now on, once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).seen.clone()
    }

    /// Waits (bounded) until at least `n` requests arrived; returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.received();
            if seen.len() >= n || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(reply: Reply) -> Response {
    let code = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        Reply::Status(c) => (code(c), "ok from receiver").into_response(),
        Reply::Slow(d, c) => {
            tokio::time::sleep(d).await;
            (code(c), "slow").into_response()
        }
        Reply::RetryAfter(c, s) => (code(c), [("retry-after", s.to_string())], "later").into_response(),
        Reply::RetryAfterDate(c, s) => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(s as i64);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            (code(c), [("retry-after", date)], "later").into_response()
        }
    }
}

/// A TCP port on 127.0.0.1 with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

/// The Python of the venv with the official `standardwebhooks` library (`make test` installs it
/// into `.venv-standardwebhooks`; `STANDARDWEBHOOKS_PYTHON` points elsewhere).
pub fn standard_webhooks_python() -> String {
    std::env::var("STANDARDWEBHOOKS_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-standardwebhooks/bin/python").to_string())
}

/// The secret as a Standard Webhooks library takes it: a `whsec_` secret as it is, any other
/// as `whsec_` + base64 of its bytes (what the README tells receivers to do).
pub fn as_standard_secret(secret: &str) -> String {
    use base64::Engine;
    if secret.starts_with("whsec_") {
        secret.to_string()
    } else {
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret))
    }
}

/// Verifies each (secret, request) with the official `standardwebhooks` library from PyPI,
/// run in Python (`tests/python/standard_verify.py`): "ok", or the library's error.
pub async fn standard_webhooks_verify(cases: &[(&str, &Received)]) -> Vec<String> {
    use base64::Engine;
    use tokio::io::AsyncWriteExt;
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|(secret, r)| {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), serde_json::Value::from(v.to_str().ok()?))))
                .collect();
            serde_json::json!({
                "secret": as_standard_secret(secret),
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
                "headers": headers,
            })
        })
        .collect();
    let python = standard_webhooks_python();
    let mut child = tokio::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/standard_verify.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{python} with standardwebhooks must be installed (make test installs it): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(serde_json::Value::from(input).to_string().as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("python finished")
        .expect("python ran");
    assert!(out.status.success(), "standard_verify.py failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("a JSON array of verdicts")
}
