//! A stand-in for the Lambda Runtime API on 127.0.0.1, enough to run a function binary as
//! Lambda does: it hands out events from `/runtime/invocation/next` and collects what the
//! function posts back. The cold-start benchmark uses it too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

/// What a function answered to one invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Value),
    Error(String),
}

#[derive(Clone)]
struct Shared {
    events: Arc<Mutex<mpsc::UnboundedReceiver<(String, Value)>>>,
    results: mpsc::UnboundedSender<(String, Outcome)>,
    first_poll: Arc<std::sync::Mutex<Option<Instant>>>,
}

pub struct RuntimeApi {
    pub addr: std::net::SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    results: Mutex<mpsc::UnboundedReceiver<(String, Outcome)>>,
    first_poll: Arc<std::sync::Mutex<Option<Instant>>>,
    counter: std::sync::atomic::AtomicU64,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let first_poll = Arc::new(std::sync::Mutex::new(None));
        let shared = Shared {
            events: Arc::new(Mutex::new(events_rx)),
            results: results_tx,
            first_poll: first_poll.clone(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind runtime api");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        RuntimeApi {
            addr,
            events: events_tx,
            results: Mutex::new(results_rx),
            first_poll,
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The moment the function first asked for an event (the end of its cold start).
    pub fn first_poll(&self) -> Option<Instant> {
        *self.first_poll.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `event` to the function and waits (bounded) for its answer.
    pub async fn invoke(&self, event: Value, within: Duration) -> Outcome {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("8476a536-e9f4-11e8-9739-2dfe598c{n:04}");
        self.events.send((id.clone(), event)).expect("runtime api is running");
        let mut results = self.results.lock().await;
        loop {
            match tokio::time::timeout(within, results.recv()).await {
                Ok(Some((rid, outcome))) if rid == id => return outcome,
                Ok(Some(_)) => continue,
                Ok(None) => return Outcome::Error("runtime api stopped".into()),
                Err(_) => return Outcome::Error(format!("no answer within {within:?}")),
            }
        }
    }

    /// The environment Lambda gives a function, pointing at this stand-in.
    pub fn lambda_env(&self, function: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/28/[$LATEST]0123456789abcdef".to_string(),
            ),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

async fn next(State(s): State<Shared>) -> Response {
    {
        let mut first = s.first_poll.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(Instant::now);
    }
    let Some((id, event)) = s.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = (webhooks::time::now_ms() + 30_000).to_string();
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    put("lambda-runtime-aws-request-id", &id);
    put("lambda-runtime-deadline-ms", &deadline);
    put(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:test",
    );
    put(
        "lambda-runtime-trace-id",
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
    );
    put("content-type", "application/json");
    (headers, event.to_string()).into_response()
}

async fn response(State(s): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = s.results.send((id, Outcome::Response(value)));
    StatusCode::ACCEPTED
}

async fn error(State(s): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    let _ = s.results.send((id, Outcome::Error(body)));
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Shared>, body: String) -> StatusCode {
    let _ = s.results.send(("init".into(), Outcome::Error(body)));
    StatusCode::ACCEPTED
}

/// A function binary built in this workspace (`cargo build --bins`, or `--release`).
pub fn binary(name: &str, profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join(profile).join(name)
}
