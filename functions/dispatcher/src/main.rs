//! The dispatcher function: wiring only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use webhooks::cache::CachedWebhookStore;
use webhooks::config::Config;
use webhooks::delivery::Deliverer;
use webhooks::dynamo::{DynamoDeliveryLog, DynamoEventStore, DynamoWebhookStore};
use webhooks::sqs::SqsQueue;
use webhooks_dispatcher::Dispatcher;

// mimalloc: less CPU per delivery than glibc's malloc (tests/BENCH.md, "Issue 13").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    webhooks::telemetry::init();
    webhooks::telemetry::exit_on_error("dispatcher", run().await);
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let config = Config::from_env()?;
    let sdk = webhooks::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let dispatcher = Dispatcher {
        // Per container, for WEBHOOK_CACHE_SECONDS: see `webhooks::cache` for what it costs.
        store: CachedWebhookStore::wrap(
            Arc::new(DynamoWebhookStore::new(dynamo.clone(), &config.webhooks_table)),
            config.webhook_cache,
            webhooks::time::Clock::default(),
        ),
        log: Arc::new(DynamoDeliveryLog::new(dynamo.clone(), &config.deliveries_table)),
        events: Arc::new(DynamoEventStore::new(dynamo, &config.deliveries_table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk))),
        deliverer: Deliverer::new(config.policy)?,
        delivery_queue_url: config.delivery_queue_url()?.to_string(),
        dead_letter_url: config.delivery_dlq_url()?.to_string(),
        schedule: config.retry_schedule.clone(),
        timeout: config.delivery_timeout,
        retention_days: config.retention_days,
        recover_page: config.recover_page,
        clock: webhooks::time::Clock::default(),
        breaker: config.breaker,
        events_queue_url: config.events_queue_url()?.to_string(),
        metrics: webhooks::metrics::Metrics::Stdout,
        keys: Default::default(),
        park_from_s: webhooks_dispatcher::PARK_FROM_S,
    };
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // Lambda's deadline is wall-clock milliseconds; attempts are bounded by what is left.
        let left_ms = event.context.deadline.saturating_sub(webhooks::time::now_ms());
        let deadline = Instant::now() + Duration::from_millis(left_ms);
        Ok::<_, lambda_runtime::Error>(dispatcher.handle(event.payload, Some(deadline)).await)
    }))
    .await
}
