//! The AWS resources the code expects, as data. The emulator bootstrap creates exactly these,
//! and a test compares them with `template.yaml`, so the two cannot drift apart.

#[cfg(feature = "aws")]
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
#[cfg(feature = "aws")]
use aws_sdk_sqs::types::QueueAttributeName;

#[cfg(feature = "aws")]
use crate::dynamo::backend;
#[cfg(feature = "aws")]
use crate::ports::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// The resource's logical id in `template.yaml`.
    pub logical_id: &'static str,
    pub default_name: &'static str,
    pub hash_key: &'static str,
    pub range_key: &'static str,
    pub ttl_attribute: Option<&'static str>,
    pub index: Option<IndexSpec>,
}

/// A global secondary index (string keys, `INCLUDE` projection of `projected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: &'static str,
    pub projected: &'static [&'static str],
}

/// A tenant's events by time (`dynamo::DynamoEventStore::list`): pk `EV#{tenant}#{h}` (h the
/// event id's shard, `dynamo::EVENT_INDEX_SHARDS`; `EV#{tenant}` before the shards), sk
/// `{timestamp ms, 15 digits}#{event id}`; sparse (only event items have the keys). It
/// projects what a listing shows and never the payload.
pub const EVENTS_BY_TIME: IndexSpec = IndexSpec {
    name: "events-by-time",
    hash_key: "gsi1pk",
    range_key: "gsi1sk",
    projected: &["id", "event", "ts", "state"],
};

pub const WEBHOOKS_TABLE: TableSpec = TableSpec {
    logical_id: "WebhooksTable",
    default_name: "webhooks",
    hash_key: "pk",
    range_key: "sk",
    ttl_attribute: None,
    index: None,
};

pub const DELIVERIES_TABLE: TableSpec = TableSpec {
    logical_id: "DeliveriesTable",
    default_name: "webhook-deliveries",
    hash_key: "pk",
    range_key: "sk",
    ttl_attribute: Some("expiresAt"),
    index: Some(EVENTS_BY_TIME),
};

pub const TABLES: [TableSpec; 2] = [WEBHOOKS_TABLE, DELIVERIES_TABLE];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: &'static str,
    pub default_name: &'static str,
    pub visibility_timeout_s: u32,
    pub retention_s: u32,
    /// The dead-letter queue's logical id and the receive count that sends a message there.
    pub redrive: Option<(&'static str, u32)>,
}

/// 14 days, the SQS maximum: nothing in a dead-letter queue expires before someone looks.
pub const MAX_RETENTION_S: u32 = 14 * 24 * 3600;

pub const EVENTS_DLQ: QueueSpec = QueueSpec {
    logical_id: "EventsDeadLetterQueue",
    default_name: "webhook-events-dlq",
    visibility_timeout_s: 30,
    retention_s: MAX_RETENTION_S,
    redrive: None,
};

/// Six times the ingest function's 60 s timeout, as AWS recommends for event source mappings.
pub const EVENTS_QUEUE: QueueSpec = QueueSpec {
    logical_id: "EventsQueue",
    default_name: "webhook-events",
    visibility_timeout_s: 360,
    retention_s: 4 * 24 * 3600,
    redrive: Some(("EventsDeadLetterQueue", 5)),
};

/// The delivery queue's `maxReceiveCount` (see `DELIVERY_QUEUE`).
pub const DELIVERY_MAX_RECEIVES: u32 = 100;

pub const DELIVERY_DLQ: QueueSpec = QueueSpec {
    logical_id: "DeliveryDeadLetterQueue",
    default_name: "webhook-deliveries-dlq",
    visibility_timeout_s: 30,
    retention_s: MAX_RETENTION_S,
    redrive: None,
};

/// Six times the dispatcher's 30 s timeout. The dispatcher counts attempts in the delivery
/// record and moves a job to the DLQ itself after its last one, so `maxReceiveCount` is only a
/// safety net for jobs that cannot be handled at all: receives that made no attempt (a storage
/// outage backs off 30 s per receive up to 15 min, so 100 receives ride out about 20 hours).
pub const DELIVERY_QUEUE: QueueSpec = QueueSpec {
    logical_id: "DeliveryQueue",
    default_name: "webhook-delivery-jobs",
    visibility_timeout_s: 180,
    retention_s: MAX_RETENTION_S,
    redrive: Some(("DeliveryDeadLetterQueue", DELIVERY_MAX_RECEIVES)),
};

/// In creation order: each dead-letter queue before the queue that redrives to it.
pub const QUEUES: [QueueSpec; 4] = [EVENTS_DLQ, EVENTS_QUEUE, DELIVERY_DLQ, DELIVERY_QUEUE];

#[cfg(feature = "aws")]
/// Creates a table of `spec` named `name` (on-demand, TTL where the spec has one). An
/// existing table is left as it is.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, spec: &TableSpec, name: &str) -> Result<(), StoreError> {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(backend)
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(backend)
    };
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(spec.hash_key)?)
        .attribute_definitions(attr(spec.range_key)?)
        .key_schema(key(spec.hash_key, KeyType::Hash)?)
        .key_schema(key(spec.range_key, KeyType::Range)?);
    if let Some(index) = spec.index {
        let projection = Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(index.projected.iter().map(|a| a.to_string()).collect()))
            .build();
        request = request
            .attribute_definitions(attr(index.hash_key)?)
            .attribute_definitions(attr(index.range_key)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key(index.hash_key, KeyType::Hash)?)
                    .key_schema(key(index.range_key, KeyType::Range)?)
                    .projection(projection)
                    .build()
                    .map_err(backend)?,
            );
    }
    let created = request.send().await;
    if let Err(e) = created {
        let existing = e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception());
        if !existing {
            return Err(backend(e));
        }
    }
    if let Some(ttl) = spec.ttl_attribute {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(ttl)
            .enabled(true)
            .build()
            .map_err(backend)?;
        // Enabling TTL twice is an error on AWS; the table is usable either way.
        let _ = client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await;
    }
    Ok(())
}

/// Names of the four queues, keyed by logical id, with a prefix (tests use unique ones).
pub fn queue_name(spec: &QueueSpec, prefix: &str) -> String {
    format!("{prefix}{}", spec.default_name)
}

#[cfg(feature = "aws")]
/// Creates the queues with their visibility timeouts, retention and redrive policies; returns
/// (logical id, queue URL) pairs. Creating an existing queue with the same attributes is a
/// no-op in SQS.
pub async fn create_queues(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
) -> Result<Vec<(&'static str, String)>, StoreError> {
    let mut urls: Vec<(&'static str, String)> = Vec::new();
    for spec in QUEUES {
        let mut req = client
            .create_queue()
            .queue_name(queue_name(&spec, prefix))
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                spec.visibility_timeout_s.to_string(),
            )
            .attributes(QueueAttributeName::MessageRetentionPeriod, spec.retention_s.to_string());
        if let Some((dlq, max_receive)) = spec.redrive {
            let dlq_url = urls
                .iter()
                .find(|(id, _)| *id == dlq)
                .map(|(_, u)| u.clone())
                .unwrap_or_default();
            let arn = client
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(backend)?
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .unwrap_or_default();
            let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive}"}}"#);
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy);
        }
        let url = req
            .send()
            .await
            .map_err(backend)?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        urls.push((spec.logical_id, url));
    }
    Ok(urls)
}

#[cfg(feature = "aws")]
/// Creates every table and queue the functions use at the SDK's endpoint and prints the
/// environment a local runner needs to use them.
pub async fn bootstrap(
    sdk: &aws_config::SdkConfig,
    config: &crate::config::Config,
    queue_prefix: &str,
) -> Result<(), StoreError> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    create_table(&dynamo, &WEBHOOKS_TABLE, &config.webhooks_table).await?;
    create_table(&dynamo, &DELIVERIES_TABLE, &config.deliveries_table).await?;
    let urls = create_queues(&aws_sdk_sqs::Client::new(sdk), queue_prefix).await?;
    let url_of = |id: &str| {
        urls.iter()
            .find(|(l, _)| *l == id)
            .map(|(_, u)| u.clone())
            .unwrap_or_default()
    };
    println!("export WEBHOOKS_TABLE={}", config.webhooks_table);
    println!("export DELIVERIES_TABLE={}", config.deliveries_table);
    println!("export EVENTS_QUEUE_URL={}", url_of(EVENTS_QUEUE.logical_id));
    println!("export EVENTS_DLQ_URL={}", url_of(EVENTS_DLQ.logical_id));
    println!("export DELIVERY_QUEUE_URL={}", url_of(DELIVERY_QUEUE.logical_id));
    println!("export DELIVERY_DLQ_URL={}", url_of(DELIVERY_DLQ.logical_id));
    Ok(())
}

/// The specs as JSON, for checks that compare them with `template.yaml`.
pub fn specs_json() -> serde_json::Value {
    let tables: Vec<serde_json::Value> = TABLES
        .iter()
        .map(|t| {
            serde_json::json!({
                "logicalId": t.logical_id, "defaultName": t.default_name,
                "hashKey": t.hash_key, "rangeKey": t.range_key, "ttlAttribute": t.ttl_attribute,
                "index": t.index.map(|i| serde_json::json!({
                    "name": i.name, "hashKey": i.hash_key, "rangeKey": i.range_key, "projected": i.projected,
                })),
            })
        })
        .collect();
    let queues: Vec<serde_json::Value> = QUEUES
        .iter()
        .map(|q| {
            serde_json::json!({
                "logicalId": q.logical_id, "defaultName": q.default_name,
                "visibilityTimeout": q.visibility_timeout_s, "retentionPeriod": q.retention_s,
                "deadLetterQueue": q.redrive.map(|(d, _)| d), "maxReceiveCount": q.redrive.map(|(_, m)| m),
            })
        })
        .collect();
    serde_json::json!({"tables": tables, "queues": queues})
}
