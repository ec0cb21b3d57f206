//! The ports every function is written against. Each has an AWS adapter and an in-memory one,
//! and one contract suite (in `tests/`) runs against both.

use async_trait::async_trait;

use crate::domain::Webhook;
use crate::event_types::EventType;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The item changed (or was deleted) since it was read; re-read and try again.
    #[error("conflicting concurrent write")]
    Conflict,
    #[error("already exists")]
    AlreadyExists,
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// One page of a listing; `next` is the cursor of the following page, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Webhooks, owned by tenants. Every method is scoped by tenant, so one tenant's id never
/// reaches another tenant's data.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new webhook; `AlreadyExists` if its id is taken.
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError>;
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError>;
    /// The tenant's webhooks in creation order, `limit` at a time, after the cursor `after`.
    async fn list(
        &self,
        tenant: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Webhook>, StoreError>;
    /// Replaces `old` with `new` if the stored webhook still has `old.version`: `Conflict` when
    /// it changed, `NotFound` when it is gone (a deleted webhook is never written back).
    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError>;
    /// `NotFound` if there was nothing to delete.
    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError>;
    /// Ids of the tenant's active webhooks whose filters match `event`, found by key.
    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError>;
}
