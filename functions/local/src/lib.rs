//! The local runner: the API (and, with the pipeline, ingest and dispatcher) in one process,
//! over in-memory adapters by default or over an AWS API endpoint when `AWS_ENDPOINT_URL` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use webhooks::auth::JwtVerifier;
use webhooks::config::{Config, ConfigError};
use webhooks::delivery::Deliverer;
use webhooks::dynamo::DynamoWebhookStore;
use webhooks::memory::MemoryWebhookStore;
use webhooks::ports::WebhookStore;
use webhooks_api::AppState;

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
    /// DynamoDB (and SQS) at `AWS_ENDPOINT_URL` or AWS itself.
    Aws(Box<aws_config::SdkConfig>),
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Memory => "in-memory (embedded)".into(),
            Backend::Aws(sdk) => format!(
                "AWS API at {}",
                sdk.endpoint_url().unwrap_or("the default AWS endpoints")
            ),
        }
    }
}

pub struct Runner {
    pub state: AppState,
}

impl Runner {
    pub fn new(config: &Config, jwt_secret: &[u8], backend: &Backend) -> Runner {
        let store: Arc<dyn WebhookStore> = match backend {
            Backend::Memory => Arc::new(MemoryWebhookStore::new()),
            Backend::Aws(sdk) => Arc::new(DynamoWebhookStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.webhooks_table,
            )),
        };
        let state = AppState {
            store,
            verifier: Arc::new(JwtVerifier::new(
                jwt_secret,
                config.jwt_issuer.as_deref(),
                config.jwt_audience.as_deref(),
            )),
            deliverer: Deliverer::new(config.policy),
            policy: config.policy,
            test_timeout: config.test_timeout,
        };
        Runner { state }
    }

    /// Serves the API on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, webhooks_api::router(self.state)).await
    }

    /// Binds `127.0.0.1:port` (0 for any) and serves in the background; for tests.
    pub async fn spawn(self, port: u16) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(addr)
    }
}
