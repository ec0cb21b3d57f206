//! The local runner: the API, ingest and dispatcher in one process, over the durable SQLite
//! adapters in a data directory by default, the in-memory ones when asked (`BACKEND=memory`), or
//! an AWS API endpoint (LocalStack, moto server, AWS) when `AWS_ENDPOINT_URL` is set. The handlers are the Lambda functions' own; pollers stand in for Lambda's event
//! source mapping: batches of up to 10, delete what succeeded, leave item failures to the
//! visibility timeout.

pub mod listen;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use webhooks::config::{Config, ConfigError};
use webhooks::delivery::Deliverer;
#[cfg(feature = "aws")]
use webhooks::dynamo::{DynamoDeliveryLog, DynamoEventStore, DynamoWebhookStore};
use webhooks::memory::{MemoryDeliveryLog, MemoryEventStore, MemoryQueue, MemoryWebhookStore};
use webhooks::ports::{
    DeliveryLog, EventStore, MAX_BATCH, OutgoingMessage, Queue, QueueMessage, WebhookStore, send_all,
};
use webhooks::resources::{DELIVERY_DLQ, DELIVERY_QUEUE, EVENTS_DLQ, EVENTS_QUEUE, QueueSpec};
use webhooks::sqlite::{Db, SqliteDeliveryLog, SqliteEventStore, SqliteQueue, SqliteWebhookStore};
#[cfg(feature = "aws")]
use webhooks::sqs::SqsQueue;
use webhooks_api::AppState;
use webhooks_dispatcher::Dispatcher;
use webhooks_ingest::Ingest;

/// Pollers per queue; each handles batches of up to 10 messages concurrently, like Lambda
/// running that many concurrent invocations.
pub const INGEST_POLLERS: usize = 2;
pub const DISPATCH_POLLERS: usize = 4;

/// What the local runner defaults differently from Lambda: it is for a developer's machine,
/// so private and plain-http targets are allowed unless the environment says otherwise.
pub fn local_config(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    Config::from_lookup(|k| {
        get(k).or_else(|| match k {
            "ALLOW_PRIVATE_TARGETS" | "ALLOW_HTTP_TARGETS" => Some("true".into()),
            // One process serves the API and the pipeline, with no hot partition to spare:
            // a change made through the API applies to the very next delivery.
            "WEBHOOK_CACHE_SECONDS" => Some("0".into()),
            _ => None,
        })
    })
}

/// Where the durable backend keeps its data when `DATA_DIR` is not set (relative to the
/// working directory: the checkout's root with `cargo run`, and ignored by git).
pub const DEFAULT_DATA_DIR: &str = ".webhooks-data";

/// The backend the environment asks for: `BACKEND` (`sqlite`, `memory` or `aws`) when set;
/// else the AWS backend when an AWS endpoint is set (`AWS_ENDPOINT_URL`, or the per-service
/// ones to mix LocalStack's SQS with moto's DynamoDB); else the durable one in `DATA_DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    Memory,
    Sqlite(PathBuf),
    Aws,
}

impl BackendChoice {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<BackendChoice, ConfigError> {
        let set = |k: &str| get(k).is_some_and(|v| !v.is_empty());
        let data_dir = || {
            PathBuf::from(
                get("DATA_DIR")
                    .filter(|d| !d.is_empty())
                    .unwrap_or(DEFAULT_DATA_DIR.into()),
            )
        };
        match get("BACKEND").as_deref() {
            Some("memory") => Ok(BackendChoice::Memory),
            Some("sqlite") => Ok(BackendChoice::Sqlite(data_dir())),
            Some("aws") => Ok(BackendChoice::Aws),
            None | Some("") => {
                if ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"]
                    .iter()
                    .any(|k| set(k))
                {
                    Ok(BackendChoice::Aws)
                } else {
                    Ok(BackendChoice::Sqlite(data_dir()))
                }
            }
            Some(other) => Err(ConfigError::Invalid {
                name: "BACKEND",
                why: format!("'{other}' is not one of sqlite, memory, aws"),
            }),
        }
    }
}

pub enum Backend {
    Memory,
    /// The durable adapters, on one SQLite database in this data directory.
    Sqlite(PathBuf),
    /// DynamoDB and SQS at `AWS_ENDPOINT_URL` or AWS itself; tables and queues from the config.
    #[cfg(feature = "aws")]
    Aws(Box<aws_config::SdkConfig>),
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Memory => "in-memory (BACKEND=memory): nothing is kept across a restart".into(),
            Backend::Sqlite(dir) => format!(
                "durable, SQLite (WAL) in {} (DATA_DIR)",
                std::path::absolute(dir).unwrap_or_else(|_| dir.clone()).display()
            ),
            #[cfg(feature = "aws")]
            Backend::Aws(_) => {
                let endpoint = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let all = endpoint("AWS_ENDPOINT_URL");
                let dynamodb = endpoint("AWS_ENDPOINT_URL_DYNAMODB").or(all.clone());
                let sqs = endpoint("AWS_ENDPOINT_URL_SQS").or(all);
                let name = |e: Option<String>| e.unwrap_or_else(|| "AWS".into());
                format!("DynamoDB at {}, SQS at {}", name(dynamodb), name(sqs))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueueUrls {
    pub events: String,
    pub events_dlq: String,
    pub delivery: String,
    pub delivery_dlq: String,
}

struct Ports {
    store: Arc<dyn WebhookStore>,
    log: Arc<dyn DeliveryLog>,
    events: Arc<dyn EventStore>,
    queue: Arc<dyn Queue>,
}

pub struct Runner {
    /// The pipeline's clock: tests move it forward (with the embedded queue) instead of
    /// sleeping through retry delays.
    pub clock: webhooks::time::Clock,
    pub state: AppState,
    pub ingest: Ingest,
    pub dispatcher: Dispatcher,
    pub urls: QueueUrls,
    /// The embedded queue, when there is one, so tests and operators can look inside.
    pub memory_queue: Option<Arc<MemoryQueue>>,
    /// The durable backend's database, when it is the one in use.
    pub db: Option<Arc<Db>>,
    /// The durable backend's queue, when it is the one in use, so tests can look inside.
    pub sqlite_queue: Option<Arc<SqliteQueue>>,
}

fn memory_queue(spec: &QueueSpec, queue: &MemoryQueue, redrive: Option<(String, u32)>) -> String {
    queue.create_queue(
        spec.default_name,
        Duration::from_secs(spec.visibility_timeout_s as u64),
        redrive,
    )
}

impl Runner {
    pub fn new(config: &Config, jwt_secret: &[u8], backend: &Backend) -> Result<Runner, RunnerError> {
        let clock = webhooks::time::Clock::default();
        let (
            Ports {
                store,
                log,
                events,
                queue,
            },
            urls,
            memory,
            (db, sqlite_queue),
        ) = match backend {
            Backend::Memory => {
                let q = Arc::new(MemoryQueue::with_clock(clock.clone()));
                let events_dlq = memory_queue(&EVENTS_DLQ, &q, None);
                let delivery_dlq = memory_queue(&DELIVERY_DLQ, &q, None);
                let events_redrive = EVENTS_QUEUE.redrive.map(|(_, n)| (events_dlq.clone(), n));
                let delivery_redrive = DELIVERY_QUEUE.redrive.map(|(_, n)| (delivery_dlq.clone(), n));
                let urls = QueueUrls {
                    events: memory_queue(&EVENTS_QUEUE, &q, events_redrive),
                    delivery: memory_queue(&DELIVERY_QUEUE, &q, delivery_redrive),
                    events_dlq,
                    delivery_dlq,
                };
                let ports = Ports {
                    store: Arc::new(MemoryWebhookStore::new()),
                    log: Arc::new(MemoryDeliveryLog::new()),
                    events: Arc::new(MemoryEventStore::new()),
                    queue: q.clone(),
                };
                (ports, urls, Some(q), (None, None))
            }
            Backend::Sqlite(dir) => {
                let (ports, urls, db, q) = sqlite_ports(dir, &clock)?;
                (ports, urls, None, (Some(db), Some(q)))
            }
            #[cfg(feature = "aws")]
            Backend::Aws(sdk) => {
                let dynamo = aws_sdk_dynamodb::Client::new(sdk);
                let urls = QueueUrls {
                    events: config.events_queue_url()?.to_string(),
                    events_dlq: config.events_dlq_url()?.to_string(),
                    delivery: config.delivery_queue_url()?.to_string(),
                    delivery_dlq: config.delivery_dlq_url()?.to_string(),
                };
                let ports = Ports {
                    store: Arc::new(DynamoWebhookStore::new(dynamo.clone(), &config.webhooks_table)),
                    log: Arc::new(DynamoDeliveryLog::new(dynamo.clone(), &config.deliveries_table)),
                    events: Arc::new(DynamoEventStore::new(dynamo, &config.deliveries_table)),
                    queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk))),
                };
                (ports, urls, None, (None, None))
            }
        };
        let deliverer = Deliverer::new(config.policy)?;
        let state = AppState {
            store: store.clone(),
            log: log.clone(),
            events: events.clone(),
            queue: queue.clone(),
            events_queue_url: urls.events.clone(),
            delivery_queue_url: urls.delivery.clone(),
            recover_page: config.recover_page,
            verifier: Arc::new(config.verifier(Some(jwt_secret))?),
            deliverer: deliverer.clone(),
            test_timeout: config.test_timeout,
        };
        // The API reads and writes the store itself; ingest and the dispatcher share one cache,
        // as one Lambda container would each have (off unless WEBHOOK_CACHE_SECONDS is set).
        let cached = webhooks::cache::CachedWebhookStore::wrap(store.clone(), config.webhook_cache, clock.clone());
        let ingest = Ingest {
            store: cached.clone(),
            events: events.clone(),
            queue: queue.clone(),
            events_queue_url: urls.events.clone(),
            delivery_queue_url: urls.delivery.clone(),
            dead_letter_url: urls.events_dlq.clone(),
            retention_days: config.retention_days,
            metrics: Default::default(),
        };
        let dispatcher = Dispatcher {
            store: cached,
            log,
            events,
            queue,
            deliverer,
            delivery_queue_url: urls.delivery.clone(),
            dead_letter_url: urls.delivery_dlq.clone(),
            schedule: config.retry_schedule.clone(),
            timeout: config.delivery_timeout,
            retention_days: config.retention_days,
            recover_page: config.recover_page,
            clock: clock.clone(),
            breaker: config.breaker,
            events_queue_url: urls.events.clone(),
            metrics: Default::default(),
            keys: Default::default(),
            park_from_s: webhooks_dispatcher::PARK_FROM_S,
        };
        Ok(Runner {
            db,
            sqlite_queue,
            clock,
            state,
            ingest,
            dispatcher,
            urls,
            memory_queue: memory,
        })
    }

    /// Starts the queue pollers that drive ingest and dispatcher; `Workers::drain` stops them.
    pub fn spawn_workers(&self) -> Workers {
        let ingest = self.ingest.clone();
        let ingest: Handler = Arc::new(move |e| {
            let ingest = ingest.clone();
            Box::pin(async move { ingest.handle(e).await })
        });
        let dispatcher = self.dispatcher.clone();
        let dispatch: Handler = Arc::new(move |e| {
            let dispatcher = dispatcher.clone();
            // Like Lambda's deadline: a batch must be done before its jobs' visibility timeout
            // runs out, or they would be handed out (and POSTed) a second time.
            let deadline =
                Instant::now() + Duration::from_secs(DELIVERY_QUEUE.visibility_timeout_s as u64) - DEADLINE_MARGIN;
            Box::pin(async move { dispatcher.handle(e, Some(deadline)).await })
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut handles = Vec::new();
        for _ in 0..INGEST_POLLERS {
            handles.push(tokio::spawn(poll(
                self.state.queue.clone(),
                self.urls.events.clone(),
                ingest.clone(),
                stopped.clone(),
            )));
        }
        for _ in 0..DISPATCH_POLLERS {
            handles.push(tokio::spawn(poll(
                self.state.queue.clone(),
                self.urls.delivery.clone(),
                dispatch.clone(),
                stopped.clone(),
            )));
        }
        if let Some(db) = self.db.clone() {
            handles.push(tokio::spawn(purge(db, stopped.clone())));
        }
        Workers { stop, handles }
    }

    /// Serves the API on `listener` and runs the pipeline until `shutdown` resolves; then
    /// stops accepting requests and receiving messages, lets the batches in flight finish and
    /// be recorded (for at most `grace`), and returns whether they all did.
    pub async fn serve_until(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<bool> {
        let workers = self.spawn_workers();
        axum::serve(listener, webhooks_api::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(workers.drain(grace).await)
    }

    /// Binds `127.0.0.1:port` (0 for any), serves in the background until the process ends,
    /// returns the address.
    pub async fn spawn(self, port: u16) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.serve_until(listener, std::future::pending(), Duration::ZERO));
        Ok(addr)
    }
}

/// How often the durable backend deletes what outlived `DELIVERY_RETENTION_DAYS`.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// What DynamoDB's TTL does in AWS: expired delivery records and stored events are deleted, at
/// start and then hourly, until told to stop.
async fn purge(db: Arc<Db>, mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        match db.purge_expired(webhooks::time::now_ms() / 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "expired delivery records and events deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired records"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Kept between the local dispatcher's deadline and the end of its jobs' visibility timeout.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// The durable ports and their queues (created on first use, found again on a restart).
type SqlitePorts = (Ports, QueueUrls, Arc<Db>, Arc<SqliteQueue>);

fn sqlite_ports(dir: &Path, clock: &webhooks::time::Clock) -> Result<SqlitePorts, RunnerError> {
    let db = Db::open(dir).map_err(|e| RunnerError::Storage(e.to_string()))?;
    let q = Arc::new(SqliteQueue::new(db.clone(), clock.clone()));
    let create = |spec: &QueueSpec, redrive: Option<(String, u32)>| {
        q.create_queue(
            spec.default_name,
            Duration::from_secs(spec.visibility_timeout_s as u64),
            redrive,
        )
        .map_err(|e| RunnerError::Storage(e.to_string()))
    };
    let events_dlq = create(&EVENTS_DLQ, None)?;
    let delivery_dlq = create(&DELIVERY_DLQ, None)?;
    let urls = QueueUrls {
        events: create(
            &EVENTS_QUEUE,
            EVENTS_QUEUE.redrive.map(|(_, n)| (events_dlq.clone(), n)),
        )?,
        delivery: create(
            &DELIVERY_QUEUE,
            DELIVERY_QUEUE.redrive.map(|(_, n)| (delivery_dlq.clone(), n)),
        )?,
        events_dlq,
        delivery_dlq,
    };
    // Only the events queue acknowledges to a producer (the API's 202): the others are fed by
    // the pipeline, which redoes a lost send.
    for url in [&urls.delivery, &urls.delivery_dlq, &urls.events_dlq] {
        q.internal(url);
    }
    let ports = Ports {
        store: Arc::new(SqliteWebhookStore::new(db.clone())),
        log: Arc::new(SqliteDeliveryLog::new(db.clone())),
        events: Arc::new(SqliteEventStore::new(db.clone())),
        queue: q.clone(),
    };
    Ok((ports, urls, db, q))
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("durable storage: {0}")]
    Storage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] webhooks::delivery::DelivererError),
}

/// The running pollers.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Stops receiving; waits (at most `grace`) for the batches being handled to finish.
    /// True when every poller stopped in time.
    pub async fn drain(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.handles);
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

/// The shape Lambda gives the handler for an SQS message.
pub fn to_sqs_message(m: &QueueMessage, queue_url: &str) -> SqsMessage {
    let mut out = SqsMessage::default();
    out.message_id = Some(m.message_id.clone());
    out.receipt_handle = Some(m.receipt_handle.clone());
    out.body = Some(m.body.clone());
    out.attributes
        .insert("ApproximateReceiveCount".into(), m.receive_count.to_string());
    out.attributes
        .insert("SentTimestamp".into(), m.sent_timestamp_ms.to_string());
    out.event_source = Some("aws:sqs".into());
    out.event_source_arn = Some(queue_url.to_string());
    out
}

/// A function's handler, as the pollers invoke it.
pub type Handler = Arc<dyn Fn(SqsEvent) -> Pin<Box<dyn Future<Output = SqsBatchResponse> + Send>> + Send + Sync>;

/// What Lambda's event source mapping does: receive a batch, invoke, delete the messages that
/// were not reported as failures.
pub async fn poll_once(queue: &dyn Queue, url: &str, wait: Duration, handler: &Handler) -> Result<usize, String> {
    let messages = queue.receive(url, 10, wait).await.map_err(|e| e.to_string())?;
    if messages.is_empty() {
        return Ok(0);
    }
    let mut event = SqsEvent::default();
    event.records = messages.iter().map(|m| to_sqs_message(m, url)).collect();
    let response = handler(event).await;
    let failed: HashSet<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    let handled: Vec<String> = messages
        .iter()
        .filter(|m| !failed.contains(&m.message_id))
        .map(|m| m.receipt_handle.clone())
        .collect();
    for chunk in handled.chunks(MAX_BATCH) {
        match queue.delete_batch(url, chunk).await {
            Ok(undeleted) if undeleted.is_empty() => {}
            Ok(undeleted) => tracing::warn!(
                count = undeleted.len(),
                "some handled messages were not deleted; they will be handled again"
            ),
            Err(e) => tracing::warn!(error = %e, "could not delete handled messages; they will be handled again"),
        }
    }
    Ok(messages.len())
}

/// Moves up to `max` messages from a dead-letter queue back to `to` by receiving, sending
/// and deleting them (what `StartMessageMoveTask` does, but through calls every SQS API
/// offers, moto's included). A message is deleted from `from` only once `to` has it, so a
/// failure part-way leaves it in the DLQ (visible again after its visibility timeout) or, at
/// worst, in both, which the dispatcher and ingest treat as a duplicate. Returns how many
/// moved. The receives are short polls: an empty answer ends the move.
pub async fn redrive(queue: &dyn Queue, from: &str, to: &str, max: usize) -> Result<usize, String> {
    let mut moved = 0;
    while moved < max {
        let got = queue
            .receive(from, (max - moved).min(MAX_BATCH), Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?;
        if got.is_empty() {
            break;
        }
        let messages: Vec<OutgoingMessage> = got
            .iter()
            .enumerate()
            .map(|(i, m)| OutgoingMessage {
                id: i.to_string(),
                body: m.body.clone(),
                reason: None,
                delay_s: 0,
            })
            .collect();
        let unsent: HashSet<String> = send_all(queue, to, &messages)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let sent: Vec<String> = got
            .iter()
            .enumerate()
            .filter(|(i, _)| !unsent.contains(&i.to_string()))
            .map(|(_, m)| m.receipt_handle.clone())
            .collect();
        if sent.is_empty() {
            return Err(format!("{to} refused every message; {moved} moved so far"));
        }
        let undeleted = queue.delete_batch(from, &sent).await.map_err(|e| e.to_string())?;
        if !undeleted.is_empty() {
            tracing::warn!(
                count = undeleted.len(),
                "moved but not deleted from the DLQ: they will be moved again"
            );
        }
        moved += sent.len();
    }
    Ok(moved)
}

/// Polls until told to stop; a batch being handled is always finished first.
async fn poll(queue: Arc<dyn Queue>, url: String, handler: Handler, stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(e) = poll_once(queue.as_ref(), &url, Duration::from_secs(1), &handler).await {
            tracing::warn!(error = %e, queue = %url, "receive failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(vars: &[(&str, &str)]) -> Result<BackendChoice, ConfigError> {
        BackendChoice::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_durable_backend_is_the_default_and_the_others_are_chosen() {
        assert_eq!(choose(&[]).ok(), Some(BackendChoice::Sqlite(DEFAULT_DATA_DIR.into())));
        assert_eq!(
            choose(&[("DATA_DIR", "/srv/hooks")]).ok(),
            Some(BackendChoice::Sqlite("/srv/hooks".into()))
        );
        assert_eq!(choose(&[("BACKEND", "memory")]).ok(), Some(BackendChoice::Memory));
        assert_eq!(
            choose(&[("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566")]).ok(),
            Some(BackendChoice::Aws)
        );
        assert_eq!(choose(&[("BACKEND", "aws")]).ok(), Some(BackendChoice::Aws));
        // An explicit choice wins over an endpoint left in the environment.
        assert_eq!(
            choose(&[("BACKEND", "sqlite"), ("AWS_ENDPOINT_URL", "http://127.0.0.1:4599")]).ok(),
            Some(BackendChoice::Sqlite(DEFAULT_DATA_DIR.into()))
        );
        let err = choose(&[("BACKEND", "postgres")])
            .expect_err("unknown backend")
            .to_string();
        assert!(err.contains("BACKEND"), "{err}");
    }
}
