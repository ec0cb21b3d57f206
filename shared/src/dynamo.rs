//! DynamoDB adapters.
//!
//! Webhooks table (`WEBHOOKS_TABLE`), keys `pk`/`sk` (strings):
//! - webhook:      pk `T#{tenant}`,          sk `W#{id}`: the webhook itself, with the secrets
//!   a rotation replaced in `previousSecrets` (a list of `{secret, expiresAt}`) while any is kept
//! - subscription: pk `S#{tenant}#{event type}`, sk `W#{id}`: one per event type an *active*
//!   webhook's filters match (wildcards expanded)
//!
//! Ingest finds the subscribers of an event with one Query on its key: never a Scan. A webhook and its subscription
//! items change together in one transaction, conditional on the webhook's `version`.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use crate::domain::{Disabled, Health, PreviousSecret, Webhook};
use crate::event_types::EventType;
use crate::memory::{MAX_ITEM_BYTES, event_item_size};
use crate::messages::{EventId, Tenant};
use crate::ports::{
    Attempt, Claim, Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore,
    EventSummary, MAX_RECORDED_FAN_OUT, Page, StoreError, StoredEvent, WebhookStore,
};
use crate::resources::EVENTS_BY_TIME;

pub type Item = HashMap<String, AttributeValue>;

pub fn backend<E: std::error::Error>(e: E) -> StoreError {
    StoreError::Backend(DisplayErrorContext(e).to_string())
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// One item by key, read consistently (a write the caller just made is visible).
async fn get_item(client: &Client, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
    get_item_with(client, table, key, true).await
}

async fn get_item_with(client: &Client, table: &str, key: Item, consistent: bool) -> Result<Option<Item>, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(consistent)
        .send()
        .await
        .map_err(backend)?;
    Ok(out.item().cloned())
}

/// A conditional write's outcome: `Ok(false)` when its condition did not hold.
fn conditional<T, E>(result: Result<T, E>) -> Result<bool, StoreError>
where
    E: std::error::Error + ProvideErrorMetadata,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

fn webhook_key(tenant: &str, id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("T#{tenant}"))),
        ("sk".to_string(), s(format!("W#{id}"))),
    ])
}

fn subscription_key(tenant: &str, event: &str, id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("S#{tenant}#{event}"))),
        ("sk".to_string(), s(format!("W#{id}"))),
    ])
}

fn to_item(w: &Webhook) -> Item {
    let mut item = webhook_key(&w.tenant, &w.id);
    item.insert("id".into(), s(&w.id));
    item.insert("tenant".into(), s(&w.tenant));
    item.insert("url".into(), s(&w.url));
    item.insert("events".into(), AttributeValue::L(w.events.iter().map(s).collect()));
    if let Some(secret) = &w.secret {
        item.insert("secret".into(), s(secret));
    }
    if !w.previous_secrets.is_empty() {
        let previous = w
            .previous_secrets
            .iter()
            .map(|p| {
                AttributeValue::M(HashMap::from([
                    ("secret".to_string(), s(&p.secret)),
                    ("expiresAt".to_string(), n(p.expires_at)),
                ]))
            })
            .collect();
        item.insert("previousSecrets".into(), AttributeValue::L(previous));
    }
    item.insert("active".into(), AttributeValue::Bool(w.active));
    item.insert("createdAt".into(), n(w.created_at));
    item.insert("updatedAt".into(), n(w.updated_at));
    item.insert("version".into(), n(w.version));
    if let Some(d) = &w.disabled {
        item.insert("disabledReason".into(), s(&d.reason));
        item.insert("disabledAt".into(), n(d.at));
    }
    item
}

/// The webhook's health, one map attribute (`health`) of its item: written on its own by a
/// conditional UpdateItem on `health.rev`, so the dispatcher never races a user's update of
/// the other attributes, and read with the webhook at no extra cost.
fn health_to_av(h: &Health) -> AttributeValue {
    let mut m = HashMap::from([
        ("rev".to_string(), n(h.rev)),
        ("failures".to_string(), n(h.consecutive_failures)),
        ("probes".to_string(), n(h.probes)),
    ]);
    let mut opt = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            m.insert(k.to_string(), n(v));
        }
    };
    opt("failingSince", h.failing_since);
    opt("lastSuccessAt", h.last_success_at);
    opt("lastFailureAt", h.last_failure_at);
    opt("breakerUntil", h.breaker_until);
    if let Some(e) = &h.last_error {
        m.insert("lastError".into(), s(e));
    }
    AttributeValue::M(m)
}

fn health_from_av(v: Option<&AttributeValue>) -> Health {
    let Some(m) = v.and_then(|v| v.as_m().ok()) else {
        return Health::default();
    };
    Health {
        rev: get_n(m, "rev").unwrap_or(0),
        consecutive_failures: get_n(m, "failures").unwrap_or(0) as u32,
        failing_since: get_n(m, "failingSince"),
        last_success_at: get_n(m, "lastSuccessAt"),
        last_failure_at: get_n(m, "lastFailureAt"),
        last_error: get_s(m, "lastError"),
        breaker_until: get_n(m, "breakerUntil"),
        probes: get_n(m, "probes").unwrap_or(0) as u32,
    }
}

fn from_item(item: &Item) -> Result<Webhook, StoreError> {
    let bad = |field: &str| StoreError::Backend(format!("stored webhook has no valid '{field}'"));
    let events = match item.get("events") {
        Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => return Err(bad("events")),
    };
    Ok(Webhook {
        id: get_s(item, "id").ok_or_else(|| bad("id"))?,
        tenant: get_s(item, "tenant").ok_or_else(|| bad("tenant"))?,
        url: get_s(item, "url").ok_or_else(|| bad("url"))?,
        events,
        secret: get_s(item, "secret"),
        previous_secrets: match item.get("previousSecrets") {
            None => Vec::new(),
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|v| {
                    let m = v.as_m().map_err(|_| bad("previousSecrets"))?;
                    Ok(PreviousSecret {
                        secret: get_s(m, "secret").ok_or_else(|| bad("previousSecrets"))?,
                        expires_at: get_n(m, "expiresAt").ok_or_else(|| bad("previousSecrets"))?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            Some(_) => return Err(bad("previousSecrets")),
        },
        active: item
            .get("active")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        created_at: get_n(item, "createdAt").ok_or_else(|| bad("createdAt"))?,
        updated_at: get_n(item, "updatedAt").ok_or_else(|| bad("updatedAt"))?,
        version: get_n(item, "version").ok_or_else(|| bad("version"))?,
        health: health_from_av(item.get("health")),
        disabled: match (get_s(item, "disabledReason"), get_n(item, "disabledAt")) {
            (Some(reason), Some(at)) => Some(Disabled { reason, at }),
            _ => None,
        },
    })
}

/// The subscription items a webhook should have: one per `Webhook::subscribed_types`.
fn subscription_filters(w: &Webhook) -> BTreeSet<&'static str> {
    w.subscribed_types().collect()
}

#[derive(Clone)]
pub struct DynamoWebhookStore {
    client: Client,
    table: String,
}

impl DynamoWebhookStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoWebhookStore {
            client,
            table: table.into(),
        }
    }

    fn put(&self, item: Item, condition: Option<(&str, Item)>) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if let Some((expr, values)) = condition {
            put = put.condition_expression(expr);
            if !values.is_empty() {
                put = put.set_expression_attribute_values(Some(values));
            }
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(backend)?).build())
    }

    /// The webhook's item updated from `old` to `new` in place, conditional on `old.version`:
    /// every attribute `new` has is set, every one only `old` had is removed, and `health` is
    /// written only when `new` changes it (an UpdateItem rather than a Put, so the health the
    /// dispatcher wrote since `old` was read is kept).
    fn update_op(&self, old: &Webhook, new: &Webhook) -> Result<TransactWriteItem, StoreError> {
        let (before, after) = (to_item(old), to_item(new));
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":v".to_string(), n(old.version))]);
        let mut sets = Vec::new();
        for (i, (k, v)) in after.iter().filter(|(k, _)| *k != "pk" && *k != "sk").enumerate() {
            names.insert(format!("#a{i}"), k.clone());
            values.insert(format!(":a{i}"), v.clone());
            sets.push(format!("#a{i} = :a{i}"));
        }
        if new.health != old.health {
            names.insert("#h".into(), "health".into());
            values.insert(":h".into(), health_to_av(&new.health));
            sets.push("#h = :h".into());
        }
        let mut removes = Vec::new();
        for (i, k) in before.keys().filter(|k| !after.contains_key(*k)).enumerate() {
            names.insert(format!("#r{i}"), k.clone());
            removes.push(format!("#r{i}"));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(webhook_key(&new.tenant, &new.id)))
            .update_expression(expression)
            .condition_expression("version = :v")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(backend)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn delete_op(&self, key: Item, condition: Option<(&str, Item)>) -> Result<TransactWriteItem, StoreError> {
        let mut del = Delete::builder().table_name(&self.table).set_key(Some(key));
        if let Some((expr, values)) = condition {
            del = del
                .condition_expression(expr)
                .set_expression_attribute_values(Some(values));
        }
        Ok(TransactWriteItem::builder()
            .delete(del.build().map_err(backend)?)
            .build())
    }

    fn subscription_item(&self, w: &Webhook, filter: &str) -> Item {
        let mut item = subscription_key(&w.tenant, filter, &w.id);
        item.insert("webhookId".into(), s(&w.id));
        item
    }

    /// Runs a transaction; a failed condition becomes `Err(None)`, anything else `Err(Some)`.
    async fn transact(&self, ops: Vec<TransactWriteItem>) -> Result<(), Option<StoreError>> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.code().unwrap_or_default().to_string();
                if code == "TransactionCanceledException" || code == "ConditionalCheckFailedException" {
                    let msg = e.message().unwrap_or_default();
                    if msg.contains("ConditionalCheckFailed") || code == "ConditionalCheckFailedException" {
                        return Err(None);
                    }
                    // TransactionConflict: another transaction touched the same items.
                    return Err(Some(StoreError::Conflict));
                }
                Err(Some(backend(e)))
            }
        }
    }
}

#[async_trait]
impl WebhookStore for DynamoWebhookStore {
    async fn create(&self, w: &Webhook) -> Result<(), StoreError> {
        let mut ops = vec![self.put(to_item(w), Some(("attribute_not_exists(pk)", Item::new())))?];
        for filter in subscription_filters(w) {
            ops.push(self.put(self.subscription_item(w, filter), None)?);
        }
        self.transact(ops)
            .await
            .map_err(|e| e.unwrap_or(StoreError::AlreadyExists))
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        get_item(&self.client, &self.table, webhook_key(tenant, id))
            .await?
            .as_ref()
            .map(from_item)
            .transpose()
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", s(format!("T#{tenant}")))
            .expression_attribute_values(":after", s(format!("W#{}", after.unwrap_or(""))))
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let items = out.items().iter().map(from_item).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::overfetched(items, limit, |w| w.id.clone()))
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let mut ops = vec![self.update_op(old, new)?];
        let (before, after) = (subscription_filters(old), subscription_filters(new));
        for gone in before.difference(&after) {
            ops.push(self.delete_op(subscription_key(&old.tenant, gone, &old.id), None)?);
        }
        for added in after.difference(&before) {
            ops.push(self.put(self.subscription_item(new, added), None)?);
        }
        match self.transact(ops).await {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(e),
            // The condition failed: tell a deleted webhook from a concurrent update.
            Err(None) => match self.get(&old.tenant, &old.id).await? {
                Some(_) => Err(StoreError::Conflict),
                None => Err(StoreError::NotFound),
            },
        }
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        // The subscription items to remove depend on the stored filters, so read, then delete
        // conditionally on the version read; a concurrent update makes us read again.
        for _ in 0..5 {
            let Some(current) = self.get(tenant, id).await? else {
                return Err(StoreError::NotFound);
            };
            let condition = HashMap::from([(":v".to_string(), n(current.version))]);
            let mut ops = vec![self.delete_op(webhook_key(tenant, id), Some(("version = :v", condition)))?];
            for filter in subscription_filters(&current) {
                ops.push(self.delete_op(subscription_key(tenant, filter, id), None)?);
            }
            match self.transact(ops).await {
                Ok(()) => return Ok(()),
                Err(None) | Err(Some(StoreError::Conflict)) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
        let condition = if old.rev == 0 {
            "attribute_exists(pk) AND (attribute_not_exists(#h) OR #h.#rev = :rev)"
        } else {
            "attribute_exists(pk) AND #h.#rev = :rev"
        };
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(webhook_key(tenant, id)))
                .update_expression("SET #h = :h")
                .condition_expression(condition)
                .expression_attribute_names("#h", "health")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":h", health_to_av(new))
                .expression_attribute_values(":rev", n(old.rev))
                .send()
                .await,
        )
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("S#{tenant}#{event}")))
                .projection_expression("webhookId")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            ids.extend(out.items().iter().filter_map(|i| get_s(i, "webhookId")));
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(ids)
    }
}

/// Deliveries table (`DELIVERIES_TABLE`), keys `pk`/`sk`, TTL on `expiresAt`:
/// - delivery: pk `W#{webhookId}#{h}`, h = `ids::shard(deliveryId, DELIVERY_SHARDS)`, sk
///   `D#{deliveryId}` (ids sort by event time, so a reverse Query of each shard lists newest
///   first and the shards merge by id), written by the dispatcher once per attempt
/// - event:    pk `E#{tenant}#{eventId}`, sk `E`: the stored event and its claim (see
///   `DynamoEventStore`)
///
/// Records written before the shards (pk `W#{webhookId}`, no suffix) are read as one more
/// shard until their TTL ends; one found by id is moved to its shard on that read, so that
/// every later write of it lands in one place.
#[derive(Clone)]
pub struct DynamoDeliveryLog {
    client: Client,
    table: String,
    /// Webhook id -> the newest id in its unsuffixed partition (`None`: empty), and when that
    /// was read. Nothing new is written there, so the answer only shrinks with time.
    legacy: std::sync::Arc<std::sync::Mutex<LegacyMemo>>,
}

/// Webhook id -> (the newest delivery id of its unsuffixed partition, when that was read).
type LegacyMemo = HashMap<String, (Option<String>, std::time::Instant)>;

/// Partition keys one webhook's delivery records are spread over: DynamoDB takes at most
/// 1,000 write units per second per partition key, and every attempt writes its record, so
/// one endpoint gets up to 16,000 attempts/s (1 KB records) instead of 1,000. A listing page
/// costs one Query per shard (see `DynamoDeliveryLog::list`). Changing it moves every record
/// to another key: it is part of the stored layout.
pub const DELIVERY_SHARDS: u32 = 16;

/// How long a process trusts what it read of a webhook's unsuffixed partition: the previous
/// release's dispatchers may still add to it while a deploy rolls out.
const LEGACY_MEMO: std::time::Duration = std::time::Duration::from_secs(60);
/// Webhooks remembered in `DynamoDeliveryLog::legacy`; past it the memo starts over.
const MAX_LEGACY_MEMO: usize = 10_000;

impl DynamoDeliveryLog {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDeliveryLog {
            client,
            table: table.into(),
            legacy: Default::default(),
        }
    }
}

/// The partition key of a delivery's record.
pub fn delivery_pk(webhook_id: &str, delivery_id: &str) -> String {
    format!("W#{webhook_id}#{}", crate::ids::shard(delivery_id, DELIVERY_SHARDS))
}

/// The partition key of a webhook's records written before the shards.
pub fn legacy_delivery_pk(webhook_id: &str) -> String {
    format!("W#{webhook_id}")
}

fn delivery_key(webhook_id: &str, delivery_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(delivery_pk(webhook_id, delivery_id))),
        ("sk".to_string(), s(format!("D#{delivery_id}"))),
    ])
}

/// One partition's part of a listing page, as read so far: its records below the cursor,
/// newest first; where its next Query starts (DynamoDB's LastEvaluatedKey) and the id it was
/// read down to, while it has more (below that id it is unread).
struct ShardRead {
    pk: String,
    legacy: bool,
    items: Vec<Delivery>,
    resume: Option<Item>,
    stopped_at: Option<String>,
}

/// Rounds of Queries one listing page may take: the first reads every shard's share of the
/// page, the second the shortfall from the shards that bound it, which settles the page unless
/// a Query stopped at 1 MB; the page then ends short after the last round, with a cursor.
const MAX_LIST_ROUNDS: usize = 4;

/// Records the first round reads from each shard: its share of `limit + 1` and half again,
/// so that the first round usually settles the page.
fn first_round_share(limit: usize) -> usize {
    (limit + 1).div_ceil(DELIVERY_SHARDS as usize) * 3 / 2 + 1
}

/// The page the shards read so far make, as an unsharded listing would give it: newest
/// first, `limit` records, and the cursor of the last one when there is more. Every record at
/// or above the highest id a shard stopped at is known; when fewer than `limit + 1` are, the
/// page is not settled and this says which shards to read further (those stopped above the
/// page's last record so far) and how many records each: the shortfall, after which the
/// shard that stops highest has added that many known records, so the next call settles.
/// `last` settles it anyway, short, with the cursor of its last known record. A record found
/// in a shard and in the unsuffixed partition (moved while an old dispatcher still wrote it)
/// is shown once, from its shard.
fn settle(shards: &[ShardRead], limit: usize, last: bool) -> Result<Page<Delivery>, (Vec<usize>, usize)> {
    let mut all: Vec<(&Delivery, bool)> = shards
        .iter()
        .flat_map(|s| s.items.iter().map(move |d| (d, s.legacy)))
        .collect();
    all.sort_by(|(a, a_legacy), (b, b_legacy)| b.id.cmp(&a.id).then(a_legacy.cmp(b_legacy)));
    all.dedup_by(|later, earlier| later.0.id == earlier.0.id);
    let frontier = shards.iter().filter_map(|s| s.stopped_at.as_deref()).max();
    let known = all
        .iter()
        .take_while(|(d, _)| frontier.is_none_or(|f| d.id.as_str() >= f))
        .count();
    if known > limit || frontier.is_none() || last {
        let mut items: Vec<Delivery> = all[..known.min(limit + 1)].iter().map(|(d, _)| (*d).clone()).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.clone())
        } else if frontier.is_some() {
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        return Ok(Page { items, next });
    }
    let bound = all.get(limit).map(|(d, _)| d.id.as_str());
    let more = shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.stopped_at.as_deref().is_some_and(|at| bound.is_none_or(|b| at > b)))
        .map(|(i, _)| i)
        .collect();
    Err((more, limit + 1 - known))
}

fn attempt_to_av(a: &Attempt) -> AttributeValue {
    let mut m = HashMap::from([
        ("attempt".to_string(), n(a.attempt)),
        ("at".to_string(), n(a.at)),
        ("durationMs".to_string(), n(a.duration_ms)),
        ("message".to_string(), s(&a.message)),
    ]);
    if let Some(code) = a.status_code {
        m.insert("statusCode".into(), n(code));
    }
    if let Some(body) = &a.response_body {
        m.insert("responseBody".into(), s(body));
    }
    AttributeValue::M(m)
}

fn attempt_from_av(v: &AttributeValue) -> Option<Attempt> {
    let m = v.as_m().ok()?;
    Some(Attempt {
        attempt: get_n(m, "attempt")? as u32,
        at: get_n(m, "at")?,
        status_code: get_n(m, "statusCode").map(|c| c as u16),
        duration_ms: get_n(m, "durationMs").unwrap_or(0),
        message: get_s(m, "message").unwrap_or_default(),
        response_body: get_s(m, "responseBody"),
    })
}

fn delivery_from_item(item: &Item) -> Result<Delivery, StoreError> {
    let bad = |field: &str| StoreError::Backend(format!("stored delivery has no valid '{field}'"));
    let attempts = match item.get("attempts") {
        Some(AttributeValue::L(l)) => l.iter().filter_map(attempt_from_av).collect(),
        _ => Vec::new(),
    };
    Ok(Delivery {
        id: get_s(item, "id").ok_or_else(|| bad("id"))?,
        tenant: get_s(item, "tenant").ok_or_else(|| bad("tenant"))?,
        webhook_id: get_s(item, "webhookId").ok_or_else(|| bad("webhookId"))?,
        event_id: get_s(item, "eventId").ok_or_else(|| bad("eventId"))?,
        event: get_s(item, "event").ok_or_else(|| bad("event"))?,
        status: get_s(item, "status")
            .and_then(|v| DeliveryStatus::parse(&v))
            .ok_or_else(|| bad("status"))?,
        created_at: get_n(item, "createdAt").ok_or_else(|| bad("createdAt"))?,
        updated_at: get_n(item, "updatedAt").ok_or_else(|| bad("updatedAt"))?,
        attempts,
        note: get_s(item, "note"),
        expires_at: get_n(item, "expiresAt").unwrap_or(0),
        cycle: get_n(item, "cycle").unwrap_or(0) as u32,
        cycle_start: get_n(item, "cycleStart").unwrap_or(0) as u32,
        next_attempt_at: get_n(item, "nextAttemptAt"),
    })
}

/// The identifying fields of a delivery, set only when the record is created.
const CREATE_FIELDS: &str = "#id = if_not_exists(#id, :id), tenant = if_not_exists(tenant, :tenant), \
     webhookId = if_not_exists(webhookId, :wid), eventId = if_not_exists(eventId, :eid), \
     #ev = if_not_exists(#ev, :ev), createdAt = if_not_exists(createdAt, :now), \
     expiresAt = if_not_exists(expiresAt, :exp), #cy = if_not_exists(#cy, :cycle), \
     cycleStart = if_not_exists(cycleStart, :zero), updatedAt = :now";

impl DynamoDeliveryLog {
    /// One UpdateItem on the delivery's record that creates it if need be: `update` is the
    /// whole expression after the identifying fields, `condition` guards it.
    async fn upsert(
        &self,
        d: &Delivery,
        set: &str,
        remove: Option<&str>,
        condition: Option<&str>,
        mut values: HashMap<String, AttributeValue>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut expression = format!("SET {set}, {CREATE_FIELDS}");
        if let Some(remove) = remove {
            expression.push_str(" REMOVE ");
            expression.push_str(remove);
        }
        values.extend([
            (":now".to_string(), n(now)),
            (":id".to_string(), s(&d.id)),
            (":tenant".to_string(), s(&d.tenant)),
            (":wid".to_string(), s(&d.webhook_id)),
            (":eid".to_string(), s(&d.event_id)),
            (":ev".to_string(), s(&d.event)),
            (":exp".to_string(), n(d.expires_at)),
            (":cycle".to_string(), n(d.cycle)),
            (":zero".to_string(), n(0)),
        ]);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(delivery_key(&d.webhook_id, &d.id)))
            .update_expression(expression)
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#ev", "event")
            .expression_attribute_names("#cy", "cycle")
            .set_expression_attribute_values(Some(values));
        // DynamoDB refuses a name no expression uses.
        if set.contains("#st") || condition.is_some_and(|c| c.contains("#st")) {
            request = request.expression_attribute_names("#st", "status");
        }
        if let Some(condition) = condition {
            request = request.condition_expression(condition);
        }
        conditional(request.send().await)
    }
}

#[async_trait]
impl DeliveryLog for DynamoDeliveryLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let values = || {
            HashMap::from([
                (":a".to_string(), AttributeValue::L(vec![attempt_to_av(attempt)])),
                (":none".to_string(), AttributeValue::L(Vec::new())),
            ])
        };
        let append = "attempts = list_append(if_not_exists(attempts, :none), :a)";
        let mut with_status = values();
        with_status.insert(":st".into(), s(status.as_str()));
        with_status.insert(":succeeded".into(), s(DeliveryStatus::Succeeded.as_str()));
        let (set, remove) = match next_attempt_at {
            Some(at) => {
                with_status.insert(":next".into(), n(at));
                (format!("{append}, #st = :st, nextAttemptAt = :next"), None)
            }
            None => (format!("{append}, #st = :st"), Some("nextAttemptAt")),
        };
        let changed = self
            .upsert(
                delivery,
                &set,
                remove,
                Some("attribute_not_exists(pk) OR #st <> :succeeded"),
                with_status,
                now,
            )
            .await?;
        if changed {
            return Ok(true);
        }
        // Already succeeded: the POST is still logged, the status stays.
        self.upsert(delivery, append, None, None, values(), now).await?;
        Ok(false)
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let values = HashMap::from([
            (":st".to_string(), s(status.as_str())),
            (":note".to_string(), s(note)),
            (":none".to_string(), AttributeValue::L(Vec::new())),
            (":pending".to_string(), s(DeliveryStatus::Pending.as_str())),
        ]);
        self.upsert(
            delivery,
            "#st = :st, note = :note, attempts = if_not_exists(attempts, :none)",
            Some("nextAttemptAt"),
            Some("attribute_not_exists(pk) OR (#st = :pending AND (attribute_not_exists(#cy) OR #cy = :cycle))"),
            values,
            now,
        )
        .await
    }

    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError> {
        let from = record.cycle;
        if to <= from {
            return Ok(false);
        }
        // Conditional on the record as the caller read it (cycle and number of attempts), so
        // the new cycle's start is exact even with a racing attempt; no second read.
        let attempts = record.attempts.len();
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(delivery_key(&record.webhook_id, &record.id)))
                .update_expression(
                    "SET #cy = :to, cycleStart = :start, #st = :pending, updatedAt = :now REMOVE note, nextAttemptAt",
                )
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(#cy) OR #cy = :from) AND size(attempts) = :start",
                )
                .expression_attribute_names("#cy", "cycle")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":to", n(to))
                .expression_attribute_values(":from", n(from))
                .expression_attribute_values(":start", n(attempts))
                .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
                .expression_attribute_values(":now", n(now))
                .send()
                .await,
        )
    }

    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        let item = get_item(&self.client, &self.table, delivery_key(webhook_id, delivery_id)).await?;
        if let Some(item) = item {
            return delivery_from_item(&item).map(Some);
        }
        // Ids sort by event time, so a new delivery is above everything the unsuffixed
        // partition holds, and its first attempt costs no read there.
        let legacy = self.legacy_newest(webhook_id).await?;
        if legacy.is_none_or(|newest| *delivery_id > *newest) {
            return Ok(None);
        }
        self.move_to_shard(webhook_id, delivery_id).await
    }

    /// Newest first: one Query per shard (and the unsuffixed partition while it holds
    /// records), concurrently, each of its share of the page and half again below the cursor,
    /// merged; then, when the page is not settled, the shortfall from the shards that bound it
    /// (see `settle`). Each Query reads at most `limit + 1` records.
    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError> {
        // '~' sorts after every id character, so the first page starts at the newest.
        let hi = format!("D#{}", before.unwrap_or("~"));
        let mut pks: Vec<(String, bool)> = (0..DELIVERY_SHARDS)
            .map(|h| (format!("W#{webhook_id}#{h}"), false))
            .collect();
        if self.legacy_newest(webhook_id).await?.is_some() {
            pks.push((legacy_delivery_pk(webhook_id), true));
        }
        let first = first_round_share(limit);
        let mut shards: Vec<ShardRead> = futures::future::try_join_all(pks.into_iter().map(|(pk, legacy)| {
            let hi = &hi;
            async move {
                let mut shard = ShardRead {
                    pk,
                    legacy,
                    items: Vec::new(),
                    resume: None,
                    stopped_at: None,
                };
                self.read_shard(&mut shard, hi, first).await?;
                Ok::<_, StoreError>(shard)
            }
        }))
        .await?;
        let mut rounds = 1;
        loop {
            match settle(&shards, limit, rounds >= MAX_LIST_ROUNDS) {
                Ok(page) => return Ok(page),
                Err((more, need)) => {
                    let reads: Vec<&mut ShardRead> = shards
                        .iter_mut()
                        .enumerate()
                        .filter(|(i, _)| more.contains(i))
                        .map(|(_, s)| s)
                        .collect();
                    futures::future::try_join_all(reads.into_iter().map(|s| self.read_shard(s, &hi, need))).await?;
                    rounds += 1;
                }
            }
        }
    }
}

impl DynamoDeliveryLog {
    /// Reads up to `limit` more records of one partition below the sort key `hi`, newest
    /// first, from where its last Query stopped.
    async fn read_shard(&self, shard: &mut ShardRead, hi: &str, limit: usize) -> Result<(), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk < :hi")
            .expression_attribute_values(":pk", s(&shard.pk))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .set_exclusive_start_key(shard.resume.take())
            .send()
            .await
            .map_err(backend)?;
        for item in out.items() {
            shard.items.push(delivery_from_item(item)?);
        }
        // A Query stops at its Limit or at 1 MB of items (records with many attempts are
        // large); DynamoDB says so with a LastEvaluatedKey, the last record it read.
        shard.resume = out.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
        shard.stopped_at = shard
            .resume
            .as_ref()
            .and_then(|k| get_s(k, "sk"))
            .and_then(|sk| sk.strip_prefix("D#").map(str::to_string));
        Ok(())
    }

    /// The newest delivery id in the webhook's unsuffixed partition (records from before the
    /// shards), `None` when it is empty: read at most once a `LEGACY_MEMO` per process.
    async fn legacy_newest(&self, webhook_id: &str) -> Result<Option<String>, StoreError> {
        let lock = || self.legacy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((newest, at)) = lock().get(webhook_id)
            && at.elapsed() < LEGACY_MEMO
        {
            return Ok(newest.clone());
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(legacy_delivery_pk(webhook_id)))
            .projection_expression("sk")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let newest = out
            .items()
            .first()
            .and_then(|i| get_s(i, "sk"))
            .and_then(|sk| sk.strip_prefix("D#").map(str::to_string));
        let mut memo = lock();
        if memo.len() >= MAX_LEGACY_MEMO {
            memo.clear();
        }
        memo.insert(webhook_id.to_string(), (newest.clone(), std::time::Instant::now()));
        Ok(newest)
    }

    /// Moves a record from the unsuffixed partition to its shard (one transaction: put there
    /// if absent, delete here if unchanged since read) and returns it; `None` when it is in
    /// neither. A racing mover or writer makes it read again, at most three times.
    async fn move_to_shard(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        let legacy_key = HashMap::from([
            ("pk".to_string(), s(legacy_delivery_pk(webhook_id))),
            ("sk".to_string(), s(format!("D#{delivery_id}"))),
        ]);
        let shard_key = delivery_key(webhook_id, delivery_id);
        for _ in 0..3 {
            let Some(old) = get_item(&self.client, &self.table, legacy_key.clone()).await? else {
                // Moved by someone else meanwhile, or gone.
                let item = get_item(&self.client, &self.table, shard_key.clone()).await?;
                return item.as_ref().map(delivery_from_item).transpose();
            };
            let delivery = delivery_from_item(&old)?;
            let mut moved = old.clone();
            moved.extend(shard_key.clone());
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(moved))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(backend)?;
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(legacy_key.clone()))
                .condition_expression("updatedAt = :u AND size(attempts) = :n")
                .expression_attribute_values(":u", n(delivery.updated_at))
                .expression_attribute_values(":n", n(delivery.attempts.len()))
                .build()
                .map_err(backend)?;
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().delete(delete).build())
                .send()
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(webhook_id, delivery_id, "delivery record moved to its shard");
                    return Ok(Some(delivery));
                }
                Err(e) if e.code() == Some("TransactionCanceledException") => continue,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Conflict)
    }
}

/// Events, in the deliveries table (`DELIVERIES_TABLE`), two items each, both under pk
/// `E#{tenant}#{eventId}`:
/// - sk `E`, the claim: the event (type, timestamp, rendered payload), its TTL, the
///   events-by-time index keys, and who holds it: `owner`, `leaseUntil`, and `claim` (the
///   claim's number: the ms it was made, raised past the previous one on a takeover). Written
///   whole once, by a conditional PutItem; a takeover rewrites only `owner`/`leaseUntil`/
///   `claim`, keeping the first submission's timestamp and payload.
/// - sk `F`, the completion: the `claim` it completes, the fan-out list and count. The event
///   is fanned out when the completion's `claim` equals the claim item's.
///
/// Why two items: DynamoDB charges an UpdateItem by the whole item's size, so a completion
/// written on the claim item costs ⌈payload / 1 KB⌉ write units (and an index update, since a
/// listed attribute changes), while a small item of its own costs 1 (see tests/BENCH.md,
/// "Cost"). A completion never touches the claim item, so it never writes the index either.
///
/// Items written before this layout (one item with `state` = `fanned` and the fan-out list)
/// still read as fanned out.
#[derive(Clone)]
pub struct DynamoEventStore {
    client: Client,
    table: String,
    /// The claims this process made and may complete: (tenant, event, owner) -> (claim,
    /// expiresAt). A completion needs both; without an entry (another process, or the map
    /// was full) it reads the claim item instead.
    claims: std::sync::Arc<std::sync::Mutex<OpenClaims>>,
}

/// (tenant, event id, owner) -> (claim number, expiresAt).
type OpenClaims = HashMap<(String, String, String), (u64, u64)>;

/// Entries of `DynamoEventStore::claims`: a claim leaves the map on its completion or
/// release, so this bounds only claims whose owner never finished (a crash); past it the map
/// starts over and completions read the claim item.
const MAX_OPEN_CLAIMS: usize = 10_000;

impl DynamoEventStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoEventStore {
            client,
            table: table.into(),
            claims: Default::default(),
        }
    }

    fn open_claims(&self) -> std::sync::MutexGuard<'_, OpenClaims> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, event: &StoredEvent, owner: &str, claim: u64) {
        let mut open = self.open_claims();
        if open.len() >= MAX_OPEN_CLAIMS {
            open.clear();
        }
        open.insert(
            (event.tenant.to_string(), event.id.to_string(), owner.to_string()),
            (claim, event.expires_at),
        );
    }

    fn forget(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Option<(u64, u64)> {
        self.open_claims()
            .remove(&(tenant.to_string(), id.to_string(), owner.to_string()))
    }

    /// Both items of an event, read together.
    async fn items(&self, tenant: &Tenant, id: &EventId, consistent: bool) -> Result<EventItems, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(event_pk(tenant, id)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend)?;
        let mut items = EventItems::default();
        for item in out.items() {
            match get_s(item, "sk").as_deref() {
                Some(CLAIM_SK) => items.claim = Some(item.clone()),
                Some(COMPLETION_SK) => items.completion = Some(item.clone()),
                _ => {}
            }
        }
        Ok(items)
    }

    /// Takes over a claim seen lapsed (or given back): only if nobody changed it since.
    async fn take_over(&self, seen: &Item, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Option<u64>, StoreError> {
        let claim = now_ms.max(get_n(seen, "claim").unwrap_or(0) + 1);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([
                ("pk".to_string(), seen.get("pk").cloned().unwrap_or_else(|| s(""))),
                ("sk".to_string(), s(CLAIM_SK)),
            ])))
            .update_expression("SET #owner = :owner, #lease = :lease, #claim = :claim")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#lease", "leaseUntil")
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", n(now_ms + lease_ms))
            .expression_attribute_values(":claim", n(claim))
            .expression_attribute_values(":fanning", s(FANNING))
            .expression_attribute_values(":seen_owner", s(get_s(seen, "owner").unwrap_or_default()))
            .expression_attribute_values(":seen_lease", n(get_n(seen, "leaseUntil").unwrap_or(0)));
        update = match get_n(seen, "claim") {
            Some(c) => update
                .condition_expression(
                    "#state = :fanning AND #owner = :seen_owner AND #lease = :seen_lease AND #claim = :seen_claim",
                )
                .expression_attribute_values(":seen_claim", n(c)),
            // A claim item from before the `claim` attribute.
            None => update.condition_expression(
                "#state = :fanning AND #owner = :seen_owner AND #lease = :seen_lease AND attribute_not_exists(#claim)",
            ),
        };
        Ok(conditional(update.send().await)?.then_some(claim))
    }
}

const FANNING: &str = "fanning";
const CLAIM_SK: &str = "E";
const COMPLETION_SK: &str = "F";

/// An event's claim item and completion item, as read.
#[derive(Default)]
struct EventItems {
    claim: Option<Item>,
    completion: Option<Item>,
}

impl EventItems {
    /// The completion, if it completes the current claim (a stale owner's does not).
    fn current_completion(&self) -> Option<&Item> {
        let claim = self.claim.as_ref()?;
        let completion = self.completion.as_ref()?;
        let current = get_n(claim, "claim")?;
        (get_n(completion, "claim") == Some(current)).then_some(completion)
    }

    fn fanned(&self) -> bool {
        let Some(claim) = &self.claim else {
            return false;
        };
        // Written before this layout: the state itself says it.
        get_s(claim, "state").as_deref() != Some(FANNING) || self.current_completion().is_some()
    }

    /// The fan-out list and its count: the completion's, or an older layout's claim item's.
    fn fan_out(&self) -> (Vec<String>, usize) {
        let from = match (self.current_completion(), &self.claim) {
            (Some(c), _) => c,
            (None, Some(claim)) if self.fanned() => claim,
            _ => return (Vec::new(), 0),
        };
        let webhooks: Vec<String> = match from.get("webhooks") {
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            _ => Vec::new(),
        };
        let count = get_n(from, "fanOut").map_or(webhooks.len(), |c| c as usize);
        (webhooks, count)
    }
}

/// The events-by-time index's sort key: fixed-width milliseconds, so it sorts by time then id.
fn event_time_key(timestamp_ms: u64, id: &str) -> String {
    format!("{timestamp_ms:015}#{id}")
}

fn event_pk(tenant: &Tenant, event_id: &EventId) -> String {
    format!("E#{tenant}#{event_id}")
}

fn event_key(tenant: &Tenant, event_id: &EventId, sk: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(event_pk(tenant, event_id))),
        ("sk".to_string(), s(sk)),
    ])
}

/// Payloads from this size on are stored deflated when that is smaller: a write is charged per
/// started KB of the whole item, and JSON deflates to a third to a half of its size, so a
/// 1 KiB payload's claim item costs 1 write unit instead of 2 (tests/BENCH.md, "Cost").
const DEFLATE_FROM: usize = 256;

/// The claim item's payload attribute: `payload` (the rendered JSON as a string) or, when
/// smaller, `payloadZ` (its UTF-8 bytes deflated, raw DEFLATE, binary).
pub fn payload_attribute(payload: &str) -> (&'static str, AttributeValue) {
    if payload.len() >= DEFLATE_FROM {
        let deflated = miniz_oxide::deflate::compress_to_vec(payload.as_bytes(), 6);
        if deflated.len() < payload.len() {
            return (
                "payloadZ",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(deflated)),
            );
        }
    }
    ("payload", s(payload))
}

/// The payload as submitted, byte for byte. Inflates to at most DynamoDB's item size, so a
/// corrupt item cannot make a reader allocate more.
fn payload_of(item: &Item) -> Option<String> {
    if let Some(p) = get_s(item, "payload") {
        return Some(p);
    }
    let deflated = item.get("payloadZ")?.as_b().ok()?;
    let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated.as_ref(), MAX_ITEM_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

/// The stored event, whether it was fanned out, and the end of its lease (ms). `None` for an
/// item without the event (a marker written before events were stored: fanned out).
fn event_from_item(item: &Item) -> Option<(StoredEvent, bool, u64)> {
    let event = StoredEvent {
        tenant: Tenant::parse(&get_s(item, "tenant")?)?,
        id: EventId::parse(&get_s(item, "id")?)?,
        event: EventType::parse(&get_s(item, "event")?)?,
        timestamp_ms: get_n(item, "ts")?,
        payload: payload_of(item)?,
        expires_at: get_n(item, "expiresAt").unwrap_or(0),
    };
    let fanned = get_s(item, "state").as_deref() != Some(FANNING);
    Some((event, fanned, get_n(item, "leaseUntil").unwrap_or(0)))
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError> {
        // Refused as DynamoDB would refuse the payload undeflated, so that what is accepted
        // does not depend on how well a payload deflates (and the other adapters agree).
        if event_item_size(event) > MAX_ITEM_BYTES {
            return Err(StoreError::Backend(
                "ValidationException: Item size has exceeded the maximum allowed size".into(),
            ));
        }
        // The common case, a new event: one PutItem of the whole claim item.
        let (payload_name, payload) = payload_attribute(&event.payload);
        let mut item = event_key(&event.tenant, &event.id, CLAIM_SK);
        item.extend([
            ("tenant".to_string(), s(event.tenant.as_str())),
            ("id".to_string(), s(event.id.as_str())),
            ("event".to_string(), s(event.event.as_str())),
            ("ts".to_string(), n(event.timestamp_ms)),
            (payload_name.to_string(), payload),
            ("expiresAt".to_string(), n(event.expires_at)),
            ("gsi1pk".to_string(), s(event_index_pk(&event.tenant, &event.id))),
            (
                "gsi1sk".to_string(),
                s(event_time_key(event.timestamp_ms, event.id.as_str())),
            ),
            ("state".to_string(), s(FANNING)),
            ("owner".to_string(), s(owner)),
            ("leaseUntil".to_string(), n(now_ms + lease_ms)),
            ("claim".to_string(), n(now_ms)),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if conditional(put)? {
            self.remember(event, owner, now_ms);
            return Ok(Claim::Won(event.clone()));
        }
        // Claimed before: fanned out, held, or lapsed (then taken over here).
        let items = self.items(&event.tenant, &event.id, true).await?;
        let Some(claim) = &items.claim else {
            // Gone between the two calls (its TTL): try again later.
            return Ok(Claim::Busy { until_ms: now_ms });
        };
        let Some((stored, _, until_ms)) = event_from_item(claim) else {
            return Ok(Claim::Duplicate(event.clone()));
        };
        if items.fanned() {
            return Ok(Claim::Duplicate(stored));
        }
        if until_ms > now_ms {
            return Ok(Claim::Busy { until_ms });
        }
        match self.take_over(claim, owner, now_ms, lease_ms).await? {
            Some(number) => {
                self.remember(&stored, owner, number);
                Ok(Claim::Won(stored))
            }
            // Another copy took it over first: back soon, to find it held or fanned out.
            None => Ok(Claim::Busy { until_ms: now_ms }),
        }
    }

    async fn complete(
        &self,
        tenant: &Tenant,
        id: &EventId,
        owner: &str,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        let (claim, expires_at) = match self.forget(tenant, id, owner) {
            Some(known) => known,
            None => {
                let Some(item) = get_item(&self.client, &self.table, event_key(tenant, id, CLAIM_SK)).await? else {
                    return Ok(());
                };
                let holds = get_s(&item, "owner").as_deref() == Some(owner)
                    && get_s(&item, "state").as_deref() == Some(FANNING);
                match (holds, get_n(&item, "claim")) {
                    (true, Some(claim)) => (claim, get_n(&item, "expiresAt").unwrap_or(0)),
                    _ => return Ok(()),
                }
            }
        };
        let kept = webhooks.iter().take(MAX_RECORDED_FAN_OUT).map(s).collect();
        let mut item = event_key(tenant, id, COMPLETION_SK);
        item.extend([
            ("claim".to_string(), n(claim)),
            ("webhooks".to_string(), AttributeValue::L(kept)),
            ("fanOut".to_string(), n(webhooks.len())),
            ("expiresAt".to_string(), n(expires_at)),
        ]);
        // A completion of an older claim (an owner that outlived its lease) never replaces a
        // newer one's.
        conditional(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #claim < :claim")
                .expression_attribute_names("#claim", "claim")
                .expression_attribute_values(":claim", n(claim))
                .send()
                .await,
        )
        .map(|_| ())
    }

    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError> {
        self.forget(tenant, id, owner);
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(event_key(tenant, id, CLAIM_SK)))
                .update_expression("SET #lease = :zero")
                .condition_expression("#owner = :owner AND #state = :fanning")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#lease", "leaseUntil")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":fanning", s(FANNING))
                .send()
                .await,
        )
        .map(|_| ())
    }

    async fn get(&self, tenant: &Tenant, id: &EventId, consistent: bool) -> Result<Option<EventRecord>, StoreError> {
        let items = self.items(tenant, id, consistent).await?;
        let Some((event, _, _)) = items.claim.as_ref().and_then(event_from_item) else {
            return Ok(None);
        };
        let (webhooks, fan_out) = items.fan_out();
        Ok(Some(EventRecord {
            event,
            fanned: items.fanned(),
            webhooks,
            fan_out,
        }))
    }

    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError> {
        // BETWEEN is inclusive: the cursor's own event is dropped below (its shard reads one
        // more for it). '~' sorts after every digit and '#', so without a cursor the first
        // page starts at the newest.
        let hi = before.map_or_else(|| "~".to_string(), |b| event_time_key(b.timestamp_ms, b.id.as_str()));
        let lo = format!("{:015}", query.since_ms);
        let cursor_pk = before.map(|b| event_index_pk(tenant, &b.id));
        let pks: Vec<String> = (0..EVENT_INDEX_SHARDS)
            .map(|h| format!("EV#{tenant}#{h}"))
            .chain([legacy_event_index_pk(tenant)])
            .collect();
        let shards = futures::future::try_join_all(pks.iter().map(|pk| {
            let extra = usize::from(cursor_pk.as_deref() == Some(pk.as_str()));
            self.query_index_shard(pk, query, &lo, &hi, limit + 1 + extra, before)
        }))
        .await?;
        // Every entry at or above the highest place a shard stopped at is known; below it
        // the page waits for the next one. With a type filter (applied after DynamoDB's
        // Limit) that can leave a page short, even empty, with a cursor where it stopped.
        let frontier = shards.iter().filter_map(|(_, stop)| stop.clone()).max_by(cursor_cmp);
        let mut items: Vec<EventSummary> = shards.into_iter().flat_map(|(items, _)| items).collect();
        items.sort_by(|a, b| (b.timestamp_ms, b.id.as_str()).cmp(&(a.timestamp_ms, a.id.as_str())));
        items.retain(|e| {
            frontier
                .as_ref()
                .is_none_or(|f| (e.timestamp_ms, e.id.as_str()) >= (f.timestamp_ms, f.id.as_str()))
        });
        items.truncate(limit + 1);
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(EventCursor::after)
        } else {
            frontier.map(|c| c.encode())
        };
        self.mark_fanned(tenant, &mut items).await?;
        Ok(Page { items, next })
    }
}

/// Keys one BatchGetItem may ask for (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;
/// BatchGetItem calls one page's completions may take, unprocessed keys retried included.
const MAX_BATCH_GETS: usize = 10;

impl DynamoEventStore {
    /// The index shows a claim, not its completion (a separate item, so that completing does
    /// not rewrite the payload nor the index): reads both items of each event the index shows
    /// in progress, eventually consistently like the index itself.
    async fn mark_fanned(&self, tenant: &Tenant, events: &mut [EventSummary]) -> Result<(), StoreError> {
        let mut keys: Vec<Item> = events
            .iter()
            .filter(|e| !e.fanned)
            .flat_map(|e| [CLAIM_SK, COMPLETION_SK].map(|sk| event_key(tenant, &e.id, sk)))
            .collect();
        let mut found: HashMap<String, EventItems> = HashMap::new();
        let mut calls = 0;
        while !keys.is_empty() {
            calls += 1;
            if calls > MAX_BATCH_GETS {
                return Err(StoreError::Backend(
                    "event listing: DynamoDB left keys unprocessed too many times".into(),
                ));
            }
            let chunk: Vec<Item> = keys.drain(..keys.len().min(BATCH_GET_KEYS)).collect();
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(chunk))
                .projection_expression("pk, sk, #claim, #state")
                .expression_attribute_names("#claim", "claim")
                .expression_attribute_names("#state", "state")
                .build()
                .map_err(backend)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(backend)?;
            for item in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
                    continue;
                };
                let entry = found.entry(pk).or_default();
                match sk.as_str() {
                    CLAIM_SK => entry.claim = Some(item.clone()),
                    COMPLETION_SK => entry.completion = Some(item.clone()),
                    _ => {}
                }
            }
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                keys.extend(left.keys().iter().cloned());
            }
        }
        for e in events.iter_mut().filter(|e| !e.fanned) {
            e.fanned = found.get(&event_pk(tenant, &e.id)).is_some_and(EventItems::fanned);
        }
        Ok(())
    }
}

impl DynamoEventStore {
    /// One index partition's part of a listing page: the entries matching `query` among the
    /// first `limit` examined below `hi`, newest first, and where DynamoDB stopped when it
    /// did before the end.
    async fn query_index_shard(
        &self,
        pk: &str,
        query: EventQuery,
        lo: &str,
        hi: &str,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<(Vec<EventSummary>, Option<EventCursor>), StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EVENTS_BY_TIME.name)
            .key_condition_expression("gsi1pk = :pk AND gsi1sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(event) = query.event {
            request = request
                .filter_expression("#ev = :ev")
                .expression_attribute_names("#ev", "event")
                .expression_attribute_values(":ev", s(event.as_str()));
        }
        let out = request.send().await.map_err(backend)?;
        let items = out
            .items()
            .iter()
            .filter_map(summary_from_item)
            .filter(|e| !before.is_some_and(|b| b.timestamp_ms == e.timestamp_ms && b.id == e.id))
            .collect();
        let stopped = out
            .last_evaluated_key()
            .and_then(|k| get_s(k, "gsi1sk"))
            .and_then(|sk| cursor_of_time_key(&sk));
        Ok((items, stopped))
    }
}

/// Index partitions one tenant's events are spread over: the events-by-time index takes at
/// most 1,000 write units per second per partition key, and every new event writes one entry,
/// so one tenant gets up to 16,000 events/s instead of 1,000. A listing page costs one Query
/// per shard, plus one of the unsuffixed partition that entries written before the shards are
/// in (until `DELIVERY_RETENTION_DAYS` has passed). Part of the stored layout.
pub const EVENT_INDEX_SHARDS: u32 = 16;

/// The events-by-time index partition of an event.
pub fn event_index_pk(tenant: &Tenant, event_id: &EventId) -> String {
    format!(
        "EV#{tenant}#{}",
        crate::ids::shard(event_id.as_str(), EVENT_INDEX_SHARDS)
    )
}

/// The index partition of a tenant's events claimed before the shards (a tenant has no `#`).
pub fn legacy_event_index_pk(tenant: &Tenant) -> String {
    format!("EV#{tenant}")
}

fn cursor_cmp(a: &EventCursor, b: &EventCursor) -> std::cmp::Ordering {
    (a.timestamp_ms, a.id.as_str()).cmp(&(b.timestamp_ms, b.id.as_str()))
}

fn cursor_of_time_key(sk: &str) -> Option<EventCursor> {
    let (ts, id) = sk.split_once('#')?;
    Some(EventCursor {
        timestamp_ms: ts.parse().ok()?,
        id: EventId::parse(id)?,
    })
}

fn summary_from_item(item: &Item) -> Option<EventSummary> {
    Some(EventSummary {
        id: EventId::parse(&get_s(item, "id")?)?,
        event: EventType::parse(&get_s(item, "event")?)?,
        timestamp_ms: get_n(item, "ts")?,
        fanned: get_s(item, "state").as_deref() != Some(FANNING),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing over shards held in memory, driven by `settle` as `DynamoDeliveryLog::list`
    /// drives it over DynamoDB (a Query that reaches its Limit reports a LastEvaluatedKey even
    /// when nothing is left, as DynamoDB may): the page, the records read, the rounds.
    fn list(shards: &[Vec<String>], limit: usize, before: Option<&str>) -> (Page<Delivery>, usize, usize) {
        let below: Vec<Vec<&String>> = shards
            .iter()
            .map(|s| s.iter().filter(|id| before.is_none_or(|b| id.as_str() < b)).collect())
            .collect();
        let mut reads: Vec<ShardRead> = (0..shards.len())
            .map(|i| ShardRead {
                pk: i.to_string(),
                legacy: false,
                items: Vec::new(),
                resume: None,
                stopped_at: None,
            })
            .collect();
        let mut read = 0;
        let mut take = |r: &mut ShardRead, i: usize, n: usize| {
            let from = r.items.len();
            let got: Vec<&String> = below[i].iter().skip(from).take(n).copied().collect();
            read += got.len();
            r.stopped_at = (got.len() == n).then(|| got.last().map(|s| s.to_string())).flatten();
            r.items.extend(got.into_iter().map(|id| Delivery {
                id: id.clone(),
                ..Delivery::default()
            }));
        };
        for (i, r) in reads.iter_mut().enumerate() {
            take(r, i, first_round_share(limit));
        }
        let mut rounds = 1;
        loop {
            match settle(&reads, limit, rounds >= MAX_LIST_ROUNDS) {
                Ok(page) => return (page, read, rounds),
                Err((more, need)) => {
                    assert!(!more.is_empty());
                    for i in more {
                        take(&mut reads[i], i, need);
                    }
                    rounds += 1;
                }
            }
        }
    }

    /// Pages over shards are exactly the pages of the sorted whole, for any number of records
    /// and any page size, in at most two rounds, reading far less than `limit + 1` per shard.
    #[test]
    fn merged_pages_are_the_unsharded_pages() {
        for records in [0usize, 1, 5, 17, 50, 333, 1000] {
            let mut shards = vec![Vec::new(); DELIVERY_SHARDS as usize];
            let mut whole: Vec<String> = (0..records).map(|i| format!("dl_{i:06}")).collect();
            for id in &whole {
                shards[crate::ids::shard(id, DELIVERY_SHARDS) as usize].push(id.clone());
            }
            for s in &mut shards {
                s.sort_by(|a, b| b.cmp(a));
            }
            whole.reverse();
            for limit in [1usize, 2, 7, 20, 50, 100] {
                let (mut cursor, mut at, mut worst, mut total) = (None::<String>, 0, 0, 0);
                for _ in 0..=records {
                    let (page, read, rounds) = list(&shards, limit, cursor.as_deref());
                    assert!(rounds <= 2, "{records} records, pages of {limit}: {rounds} rounds");
                    let want: Vec<&String> = whole.iter().skip(at).take(limit).collect();
                    let got: Vec<&String> = page.items.iter().map(|d| &d.id).collect();
                    assert_eq!(got, want, "{records} records, pages of {limit}, from {at}");
                    at += got.len();
                    let more = at < whole.len();
                    assert_eq!(
                        page.next.is_some(),
                        more,
                        "{records} records, pages of {limit}, at {at}"
                    );
                    worst = worst.max(read);
                    total += read;
                    match page.next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                assert_eq!(at, records);
                if records == 1000 {
                    println!("pages of {limit}: at most {worst} records read per page ({total} for 1,000 records)");
                    assert!(worst <= 3 * (limit + 1) + 2 * DELIVERY_SHARDS as usize, "{worst}");
                }
            }
        }
    }
}
