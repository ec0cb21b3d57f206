//! The API function: wiring only. Clients are built once per sandbox, at cold start.

use std::sync::Arc;

use webhooks::config::Config;
use webhooks::delivery::Deliverer;
use webhooks::dynamo::{DynamoDeliveryLog, DynamoEventStore, DynamoWebhookStore};
use webhooks::sqs::SqsQueue;
use webhooks_api::{AppState, router};

// mimalloc: less CPU per delivery than glibc's malloc (tests/BENCH.md, "Issue 13").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    webhooks::telemetry::init();
    webhooks::telemetry::exit_on_error("api", run().await);
}

async fn run() -> Result<(), lambda_http::Error> {
    let config = Config::from_env()?;
    let sdk = webhooks::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let state = AppState {
        store: Arc::new(DynamoWebhookStore::new(dynamo.clone(), &config.webhooks_table)),
        log: Arc::new(DynamoDeliveryLog::new(dynamo.clone(), &config.deliveries_table)),
        events: Arc::new(DynamoEventStore::new(dynamo, &config.deliveries_table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk))),
        events_queue_url: config.events_queue_url()?.to_string(),
        delivery_queue_url: config.delivery_queue_url()?.to_string(),
        recover_page: config.recover_page,
        verifier: Arc::new(config.verifier(config.jwt_secret.as_deref())?),
        deliverer: Deliverer::new(config.policy)?,
        test_timeout: config.test_timeout,
    };
    lambda_http::run(router(state)).await
}
