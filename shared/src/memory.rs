//! In-memory adapters for the embedded local mode and fast tests. They keep the semantics the
//! AWS adapters have (conditional writes, ordering, pagination), which the contract suite checks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::Webhook;
use crate::event_types::EventType;
use crate::ports::{Page, StoreError, WebhookStore};

#[derive(Default)]
pub struct MemoryWebhookStore {
    // (tenant, id): ids sort by creation time, so the map's order is the listing order.
    items: Mutex<BTreeMap<(String, String), Webhook>>,
}

impl MemoryWebhookStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Webhook>> {
        // A poisoned lock only means another thread panicked mid-test; the map is still whole.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhookStore {
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let mut items = self.lock();
        let key = (webhook.tenant.clone(), webhook.id.clone());
        if items.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        items.insert(key, webhook.clone());
        Ok(())
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        Ok(self
            .lock()
            .get(&(tenant.to_string(), id.to_string()))
            .cloned())
    }

    async fn list(
        &self,
        tenant: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Webhook>, StoreError> {
        let items = self.lock();
        let start = (tenant.to_string(), after.unwrap_or("").to_string());
        let mut page: Vec<Webhook> = items
            .range(start..)
            .take_while(|((t, _), _)| t == tenant)
            .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit + 1)
            .map(|(_, w)| w.clone())
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|w| w.id.clone()).unwrap_or_default()
        });
        Ok(Page { items: page, next })
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let mut items = self.lock();
        match items.get_mut(&(old.tenant.clone(), old.id.clone())) {
            None => Err(StoreError::NotFound),
            Some(current) if current.version != old.version => Err(StoreError::Conflict),
            Some(current) => {
                *current = new.clone();
                Ok(())
            }
        }
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        match self.lock().remove(&(tenant.to_string(), id.to_string())) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let items = self.lock();
        let start = (tenant.to_string(), String::new());
        Ok(items
            .range(start..)
            .take_while(|((t, _), _)| t == tenant)
            .filter(|(_, w)| w.active && w.subscribes_to(event))
            .map(|((_, id), _)| id.clone())
            .collect())
    }
}
