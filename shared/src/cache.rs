//! A per-container cache of webhook reads (`WEBHOOK_CACHE_SECONDS`): a decorator over any
//! `WebhookStore` that serves `get` and `subscribers` from memory for at most `ttl`.
//!
//! Why: every dispatcher attempt reads its webhook from the tenant's partition (`T#{tenant}`)
//! and every ingest queries `S#{tenant}#{event}`. DynamoDB serves about 3,000 read units per
//! second per partition key, so without a cache one busy tenant tops out near that many
//! deliveries per second however far Lambda scales. With it, each warm container reads a key
//! at most once per `ttl`: the key's load is (containers / ttl), not the delivery rate.
//!
//! What the staleness costs, for a TTL of N seconds (the README's "Caching" section):
//! - a webhook deleted, deactivated or disabled may still get deliveries for N seconds;
//! - a new URL, a rotated secret (an `overlapSeconds: 0` revocation too) or a new filter is
//!   used from at most N seconds after the write; a webhook created may miss events for N s;
//! - the dispatcher's compare-and-set writes (`set_health`, `update`) go to the store; when one
//!   fails (a stale view), the entry is dropped so the re-read that follows is fresh, and a
//!   read that was in flight when the entry was dropped is not cached (the `generation`).
//!
//! The API never reads through it: a user's PUT then GET stays consistent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Health, Webhook};
use crate::event_types::EventType;
use crate::ports::{Page, StoreError, WebhookStore};
use crate::time::Clock;

/// Webhooks kept per container: about 1 KB each, so at most ~10 MB of a 256 MB function.
pub const MAX_CACHED_WEBHOOKS: usize = 10_000;
/// Subscriber ids kept per container, summed over the cached lists (~30 bytes each).
pub const MAX_CACHED_SUBSCRIBER_IDS: usize = 100_000;
/// The longest `WEBHOOK_CACHE_SECONDS`: past a minute, the staleness would be noticed.
pub const MAX_CACHE_SECONDS: u64 = 60;

struct Entry<T> {
    value: T,
    expires_ms: u64,
    weight: usize,
}

struct Map<K, T> {
    entries: HashMap<K, Entry<T>>,
    weight: usize,
    max_weight: usize,
}

impl<K: std::hash::Hash + Eq + Clone, T: Clone> Map<K, T> {
    fn new(max_weight: usize) -> Self {
        Map {
            entries: HashMap::new(),
            weight: 0,
            max_weight,
        }
    }

    fn get(&mut self, key: &K, now: u64) -> Option<T> {
        match self.entries.get(key) {
            Some(e) if e.expires_ms > now => Some(e.value.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(e) = self.entries.remove(key) {
            self.weight -= e.weight;
        }
    }

    fn insert(&mut self, key: K, value: T, weight: usize, expires_ms: u64, now: u64) {
        if weight > self.max_weight {
            return;
        }
        self.remove(&key);
        if self.weight + weight > self.max_weight {
            // Expired entries go first; if that is not enough, the ones closest to expiry.
            self.entries.retain(|_, e| e.expires_ms > now);
            self.weight = self.entries.values().map(|e| e.weight).sum();
            if self.weight + weight > self.max_weight {
                let mut by_expiry: Vec<(u64, K)> =
                    self.entries.iter().map(|(k, e)| (e.expires_ms, k.clone())).collect();
                by_expiry.sort_unstable_by_key(|(t, _)| *t);
                for (_, k) in by_expiry {
                    if self.weight + weight <= self.max_weight {
                        break;
                    }
                    self.remove(&k);
                }
            }
        }
        self.weight += weight;
        self.entries.insert(
            key,
            Entry {
                value,
                expires_ms,
                weight,
            },
        );
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

struct State {
    webhooks: Map<(String, String), Option<Webhook>>,
    subscribers: Map<(String, EventType), Vec<String>>,
    /// Bumped by every invalidation: a read that began before one is not cached.
    generation: u64,
}

impl State {
    /// Forgets the webhook, and makes any read of it already in flight not cache its answer.
    fn forget_webhook(&mut self, key: &(String, String)) {
        self.generation += 1;
        self.webhooks.remove(key);
    }
}

/// See the module's documentation. Cloning shares the cache.
#[derive(Clone)]
pub struct CachedWebhookStore {
    inner: Arc<dyn WebhookStore>,
    ttl_ms: u64,
    clock: Clock,
    state: Arc<Mutex<State>>,
}

impl CachedWebhookStore {
    /// `ttl` zero caches nothing (every call goes to `inner`). `clock` is the pipeline's: tests
    /// move it forward to expire entries without sleeping.
    pub fn new(inner: Arc<dyn WebhookStore>, ttl: Duration, clock: Clock) -> Self {
        Self::with_limits(inner, ttl, clock, MAX_CACHED_WEBHOOKS, MAX_CACHED_SUBSCRIBER_IDS)
    }

    pub fn with_limits(
        inner: Arc<dyn WebhookStore>,
        ttl: Duration,
        clock: Clock,
        max_webhooks: usize,
        max_subscriber_ids: usize,
    ) -> Self {
        CachedWebhookStore {
            inner,
            ttl_ms: ttl.as_millis() as u64,
            clock,
            state: Arc::new(Mutex::new(State {
                webhooks: Map::new(max_webhooks),
                subscribers: Map::new(max_subscriber_ids),
                generation: 0,
            })),
        }
    }

    /// The store itself when `ttl` is zero, so that a disabled cache costs nothing.
    pub fn wrap(inner: Arc<dyn WebhookStore>, ttl: Duration, clock: Clock) -> Arc<dyn WebhookStore> {
        if ttl.is_zero() {
            inner
        } else {
            Arc::new(Self::new(inner, ttl, clock))
        }
    }

    /// Entries held (webhooks, subscriber lists), expired ones included until touched.
    pub fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.webhooks.len(), s.subscribers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops what this container knows of the webhook and of its tenant's subscriber lists.
    fn invalidate(&self, tenant: &str, id: &str) {
        let mut s = self.lock();
        s.forget_webhook(&(tenant.to_string(), id.to_string()));
        let keys: Vec<(String, EventType)> = s
            .subscribers
            .entries
            .keys()
            .filter(|(t, _)| t == tenant)
            .cloned()
            .collect();
        for k in keys {
            s.subscribers.remove(&k);
        }
    }

    /// The generation and the expiry of a read that starts now: the expiry counts from before
    /// the read, so nothing is served longer than `ttl` after the store was asked.
    fn begin(&self) -> (u64, u64) {
        (self.lock().generation, self.clock.now_ms() + self.ttl_ms)
    }
}

#[async_trait]
impl WebhookStore for CachedWebhookStore {
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let r = self.inner.create(webhook).await;
        self.invalidate(&webhook.tenant, &webhook.id);
        r
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let key = (tenant.to_string(), id.to_string());
        let now = self.clock.now_ms();
        if let Some(hit) = self.lock().webhooks.get(&key, now) {
            return Ok(hit);
        }
        let (generation, expires) = self.begin();
        let fresh = self.inner.get(tenant, id).await?;
        let mut s = self.lock();
        if s.generation == generation {
            s.webhooks.insert(key, fresh.clone(), 1, expires, now);
        }
        Ok(fresh)
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        self.inner.list(tenant, limit, after).await
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let r = self.inner.update(old, new).await;
        self.invalidate(&old.tenant, &old.id);
        r
    }

    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
        let written = self.inner.set_health(tenant, id, old, new).await;
        let key = (tenant.to_string(), id.to_string());
        let mut s = self.lock();
        match &written {
            Ok(true) => {
                // The stored health is now `new`: keep the cached webhook in step (no re-read),
                // as long as it is the one the write was made from.
                if let Some(Entry { value: Some(w), .. }) = s.webhooks.entries.get_mut(&key)
                    && w.health == *old
                {
                    w.health = new.clone();
                } else {
                    s.forget_webhook(&key);
                }
            }
            // A stale view lost the compare-and-set: the caller's re-read must be fresh.
            _ => s.forget_webhook(&key),
        }
        written
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let r = self.inner.delete(tenant, id).await;
        self.invalidate(tenant, id);
        r
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let key = (tenant.to_string(), event);
        let now = self.clock.now_ms();
        if let Some(hit) = self.lock().subscribers.get(&key, now) {
            return Ok(hit);
        }
        let (generation, expires) = self.begin();
        let fresh = self.inner.subscribers(tenant, event).await?;
        let mut s = self.lock();
        if s.generation == generation {
            s.subscribers.insert(key, fresh.clone(), 1 + fresh.len(), expires, now);
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::memory::MemoryWebhookStore;

    /// Counts the reads that reach the store.
    struct Counting {
        inner: MemoryWebhookStore,
        gets: AtomicU64,
        queries: AtomicU64,
    }

    #[async_trait]
    impl WebhookStore for Counting {
        async fn create(&self, w: &Webhook) -> Result<(), StoreError> {
            self.inner.create(w).await
        }
        async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(tenant, id).await
        }
        async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
            self.inner.list(tenant, limit, after).await
        }
        async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
            self.inner.update(old, new).await
        }
        async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
            self.inner.set_health(tenant, id, old, new).await
        }
        async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
            self.inner.delete(tenant, id).await
        }
        async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
            self.queries.fetch_add(1, Ordering::Relaxed);
            self.inner.subscribers(tenant, event).await
        }
    }

    fn hook(id: &str) -> Webhook {
        Webhook {
            id: id.into(),
            tenant: "acme".into(),
            url: "https://example.com/hook".into(),
            events: vec!["workflow.execution.completed".into()],
            active: true,
            ..Webhook::default()
        }
    }

    fn setup(ttl_s: u64) -> (Arc<Counting>, CachedWebhookStore, Clock) {
        let inner = Arc::new(Counting {
            inner: MemoryWebhookStore::new(),
            gets: AtomicU64::new(0),
            queries: AtomicU64::new(0),
        });
        // Stopped: only `advance` moves it, so the bound is checked to the millisecond.
        let clock = Clock::stopped_at(1_000_000);
        let cache = CachedWebhookStore::new(inner.clone(), Duration::from_secs(ttl_s), clock.clone());
        (inner, cache, clock)
    }

    fn order() -> EventType {
        EventType::parse("workflow.execution.completed").expect("type")
    }

    #[tokio::test]
    async fn reads_are_served_from_memory_until_the_ttl_then_fresh() {
        let (inner, cache, clock) = setup(5);
        inner.create(&hook("wh_1")).await.expect("create");
        for _ in 0..100 {
            assert!(cache.get("acme", "wh_1").await.expect("get").is_some());
            assert_eq!(cache.subscribers("acme", order()).await.expect("subs"), vec!["wh_1"]);
        }
        assert_eq!(inner.gets.load(Ordering::Relaxed), 1);
        assert_eq!(inner.queries.load(Ordering::Relaxed), 1);
        // Another container deletes it: this one still sees it until the TTL is over.
        inner.delete("acme", "wh_1").await.expect("delete");
        clock.advance(Duration::from_millis(4_999));
        assert!(cache.get("acme", "wh_1").await.expect("get").is_some());
        assert_eq!(cache.subscribers("acme", order()).await.expect("subs").len(), 1);
        clock.advance(Duration::from_millis(1));
        assert!(cache.get("acme", "wh_1").await.expect("get").is_none());
        assert!(cache.subscribers("acme", order()).await.expect("subs").is_empty());
        assert_eq!(inner.gets.load(Ordering::Relaxed), 2);
        assert_eq!(inner.queries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_failed_compare_and_set_makes_the_next_read_fresh() {
        let (inner, cache, _clock) = setup(60);
        inner.create(&hook("wh_1")).await.expect("create");
        let seen = cache.get("acme", "wh_1").await.expect("get").expect("some");
        // Another container opens the breaker.
        let theirs = Health {
            rev: 1,
            consecutive_failures: 5,
            breaker_until: Some(u64::MAX),
            ..Health::default()
        };
        assert!(
            inner
                .set_health("acme", "wh_1", &seen.health, &theirs)
                .await
                .expect("cas")
        );
        // This container's view is stale, and within the TTL it is still served...
        assert_eq!(
            cache.get("acme", "wh_1").await.expect("get").expect("some").health,
            seen.health
        );
        // ...until it acts on it: the CAS loses, and the re-read is fresh, not the cache's.
        let mine = Health {
            rev: 1,
            ..Health::default()
        };
        assert!(
            !cache
                .set_health("acme", "wh_1", &seen.health, &mine)
                .await
                .expect("cas")
        );
        let fresh = cache.get("acme", "wh_1").await.expect("get").expect("some");
        assert_eq!(fresh.health, theirs);
        assert_eq!(inner.gets.load(Ordering::Relaxed), 2);
        // A write that wins keeps the cached copy in step without a read.
        let next = Health {
            rev: 2,
            ..theirs.clone()
        };
        assert!(cache.set_health("acme", "wh_1", &theirs, &next).await.expect("cas"));
        assert_eq!(
            cache.get("acme", "wh_1").await.expect("get").expect("some").health,
            next
        );
        assert_eq!(inner.gets.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_lost_update_drops_the_stale_entry() {
        let (inner, cache, _clock) = setup(60);
        inner.create(&hook("wh_1")).await.expect("create");
        let seen = cache.get("acme", "wh_1").await.expect("get").expect("some");
        let theirs = Webhook {
            url: "https://example.com/new".into(),
            version: seen.version + 1,
            ..seen.clone()
        };
        inner.update(&seen, &theirs).await.expect("update");
        let mine = Webhook {
            active: false,
            version: seen.version + 1,
            ..seen.clone()
        };
        assert!(matches!(cache.update(&seen, &mine).await, Err(StoreError::Conflict)));
        let fresh = cache.get("acme", "wh_1").await.expect("get").expect("some");
        assert_eq!(fresh.url, "https://example.com/new");
    }

    #[tokio::test]
    async fn size_is_bounded_and_zero_ttl_caches_nothing() {
        let inner = Arc::new(Counting {
            inner: MemoryWebhookStore::new(),
            gets: AtomicU64::new(0),
            queries: AtomicU64::new(0),
        });
        let cache = CachedWebhookStore::with_limits(inner.clone(), Duration::from_secs(60), Clock::default(), 3, 5);
        for i in 0..10 {
            let id = format!("wh_{i}");
            inner.create(&hook(&id)).await.expect("create");
            cache.get("acme", &id).await.expect("get");
        }
        assert_eq!(cache.len().0, 3);
        // Five ids fit; a list of six is not kept at all.
        assert_eq!(cache.subscribers("acme", order()).await.expect("subs").len(), 10);
        assert_eq!(cache.len().1, 0);
        let off = CachedWebhookStore::wrap(inner.clone(), Duration::ZERO, Clock::default());
        let before = inner.gets.load(Ordering::Relaxed);
        off.get("acme", "wh_1").await.expect("get");
        off.get("acme", "wh_1").await.expect("get");
        assert_eq!(inner.gets.load(Ordering::Relaxed), before + 2);
    }
}
