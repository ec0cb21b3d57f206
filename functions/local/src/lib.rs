//! The local runner: the API, ingest and dispatcher in one process, over in-memory adapters by
//! default or over an AWS API endpoint (LocalStack, moto server, AWS) when `AWS_ENDPOINT_URL`
//! is set. The handlers are the Lambda functions' own; pollers stand in for Lambda's event
//! source mapping: batches of up to 10, delete what succeeded, leave item failures to the
//! visibility timeout.

pub mod listen;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use webhooks::auth::JwtVerifier;
use webhooks::config::{Config, ConfigError};
use webhooks::delivery::Deliverer;
#[cfg(feature = "aws")]
use webhooks::dynamo::{DynamoDeliveryLog, DynamoEventStore, DynamoWebhookStore};
use webhooks::memory::{MemoryDeliveryLog, MemoryEventStore, MemoryQueue, MemoryWebhookStore};
use webhooks::ports::{DeliveryLog, EventStore, MAX_BATCH, Queue, QueueMessage, WebhookStore};
use webhooks::resources::{DELIVERY_DLQ, DELIVERY_QUEUE, EVENTS_DLQ, EVENTS_QUEUE, QueueSpec};
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
            _ => None,
        })
    })
}

pub enum Backend {
    Memory,
    /// DynamoDB and SQS at `AWS_ENDPOINT_URL` or AWS itself; tables and queues from the config.
    #[cfg(feature = "aws")]
    Aws(Box<aws_config::SdkConfig>),
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Memory => "in-memory (embedded)".into(),
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
                (ports, urls, Some(q))
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
                (ports, urls, None)
            }
        };
        let deliverer = Deliverer::new(config.policy)?;
        let state = AppState {
            store: store.clone(),
            log: log.clone(),
            events: events.clone(),
            queue: queue.clone(),
            events_queue_url: urls.events.clone(),
            verifier: Arc::new(JwtVerifier::new(
                jwt_secret,
                config.jwt_issuer.as_deref(),
                config.jwt_audience.as_deref(),
            )),
            deliverer: deliverer.clone(),
            test_timeout: config.test_timeout,
        };
        let ingest = Ingest {
            store: store.clone(),
            events,
            queue: queue.clone(),
            events_queue_url: urls.events.clone(),
            delivery_queue_url: urls.delivery.clone(),
            dead_letter_url: urls.events_dlq.clone(),
            retention_days: config.retention_days,
        };
        let dispatcher = Dispatcher {
            store,
            log,
            queue,
            deliverer,
            delivery_queue_url: urls.delivery.clone(),
            dead_letter_url: urls.delivery_dlq.clone(),
            schedule: config.retry_schedule.clone(),
            timeout: config.delivery_timeout,
            retention_days: config.retention_days,
            clock: clock.clone(),
        };
        Ok(Runner {
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

/// Kept between the local dispatcher's deadline and the end of its jobs' visibility timeout.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
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

/// Polls until told to stop; a batch being handled is always finished first.
async fn poll(queue: Arc<dyn Queue>, url: String, handler: Handler, stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(e) = poll_once(queue.as_ref(), &url, Duration::from_secs(1), &handler).await {
            tracing::warn!(error = %e, queue = %url, "receive failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
