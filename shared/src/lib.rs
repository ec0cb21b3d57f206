//! The webhook delivery service's shared library: domain, signing, auth, ports and adapters.
//! The Lambda functions and the local runner are thin wiring over this crate.

pub mod auth;
pub mod batch;
pub mod cache;
pub mod config;
pub mod delivery;
pub mod domain;
#[cfg(feature = "aws")]
pub mod dynamo;
pub mod event_types;
pub mod health;
pub mod ids;
pub mod jsjson;
pub mod jwks;
pub mod memory;
pub mod messages;
pub mod metrics;
pub mod ports;
pub mod recover;
pub mod resources;
pub mod retry;
pub mod signing;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "aws")]
pub mod sqs;
pub mod ssrf;
pub mod telemetry;
pub mod time;

/// One SDK configuration per process: region, credentials and `AWS_ENDPOINT_URL` (LocalStack,
/// moto server) come from the environment as the AWS SDKs define it. Pointed at an emulator
/// without a region, it takes us-east-1 rather than asking the instance metadata service
/// (169.254.169.254), which a developer's machine must not be sent to.
#[cfg(feature = "aws")]
pub async fn aws_config() -> aws_config::SdkConfig {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let emulated = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"]
        .iter()
        .any(|k| set(k));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if emulated && !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    loader.load().await
}
