//! The webhook delivery service's shared library: domain, signing, auth, ports and adapters.
//! The Lambda functions and the local runner are thin wiring over this crate.

pub mod auth;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod dynamo;
pub mod event_types;
pub mod ids;
pub mod jsjson;
pub mod memory;
pub mod messages;
pub mod ports;
pub mod resources;
pub mod retry;
pub mod signing;
pub mod sqs;
pub mod ssrf;
pub mod telemetry;
pub mod time;

/// One SDK configuration per process: region, credentials and `AWS_ENDPOINT_URL` (LocalStack,
/// moto server) come from the environment as the AWS SDKs define it.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}
