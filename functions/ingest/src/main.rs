//! The ingest function: wiring only.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use webhooks::cache::CachedWebhookStore;
use webhooks::config::Config;
use webhooks::dynamo::{DynamoEventStore, DynamoWebhookStore};
use webhooks::sqs::SqsQueue;
use webhooks_ingest::Ingest;

// mimalloc: less CPU per delivery than glibc's malloc (tests/BENCH.md, "Issue 13").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    webhooks::telemetry::init();
    webhooks::telemetry::exit_on_error("ingest", run().await);
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let config = Config::from_env()?;
    let sdk = webhooks::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let ingest = Ingest {
        // Per container, for WEBHOOK_CACHE_SECONDS: see `webhooks::cache` for what it costs.
        store: CachedWebhookStore::wrap(
            Arc::new(DynamoWebhookStore::new(dynamo.clone(), &config.webhooks_table)),
            config.webhook_cache,
            webhooks::time::Clock::default(),
        ),
        events: Arc::new(DynamoEventStore::new(dynamo, &config.deliveries_table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk))),
        events_queue_url: config.events_queue_url()?.to_string(),
        delivery_queue_url: config.delivery_queue_url()?.to_string(),
        dead_letter_url: config.events_dlq_url()?.to_string(),
        retention_days: config.retention_days,
        metrics: webhooks::metrics::Metrics::Stdout,
    };
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(ingest.handle(event.payload).await)
    }))
    .await
}
