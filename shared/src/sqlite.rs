//! Durable adapters for one machine: every port on one SQLite database in WAL mode, in the
//! process (no server). They keep the semantics and the limits of the AWS adapters, which the
//! contract suites check against all three.
//!
//! Records are stored as their serde JSON in one column, beside the columns that are queried
//! (keys, versions, leases, expiry), so a field added to a record rides along.
//!
//! Durability. Every write goes through one writer thread that commits the writes waiting for
//! it together (group commit: one fsync for many callers). A write returns only after its
//! commit. Commits are `synchronous=NORMAL`, which in WAL mode survives the process dying at
//! any point (`kill -9`): the write is in the WAL in the OS's hands. Writes that acknowledge
//! something to a client (an event accepted with 202, a webhook created, updated or deleted)
//! are committed `synchronous=FULL` instead: the WAL is fsynced before the call returns, so
//! they survive a power cut too (so is every queue send but those to the queues marked
//! `SqliteQueue::internal`). After a power cut, SQLite's recovery keeps a prefix of the
//! committed transactions, so the pipeline's state goes back to a consistent earlier point
//! from which it is replayed (jobs received again, with the same delivery ids).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::domain::{Health, Webhook};
use crate::event_types::EventType;
use crate::memory::{MAX_ITEM_BYTES, event_item_size};
use crate::messages::{EventId, Tenant};
use crate::ports::{
    Attempt, Claim, Delivery, DeliveryLog, DeliveryStatus, EventCursor, EventQuery, EventRecord, EventStore,
    EventSummary, MAX_BATCH, MAX_IN_FLIGHT, MAX_RECORDED_FAN_OUT, OutgoingMessage, Page, Queue, QueueError,
    QueueMessage, StoreError, StoredEvent, WebhookStore, check_batch, check_visibility,
};
use crate::time::Clock;

/// The database file inside the data directory.
pub const DB_FILE: &str = "webhooks.sqlite3";
/// Locked (exclusively) while a process uses the data directory.
pub const LOCK_FILE: &str = "webhooks.lock";

/// Writes committed together at most (a bound on one transaction's size and latency).
const MAX_GROUP: usize = 256;
/// Reader connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL, event TEXT NOT NULL, webhook_id TEXT NOT NULL,
    PRIMARY KEY (tenant, event, webhook_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT NOT NULL, id TEXT NOT NULL, expires_at INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (webhook_id, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL, id TEXT NOT NULL, fanned INTEGER NOT NULL, owner TEXT NOT NULL,
    lease_until INTEGER NOT NULL, expires_at INTEGER NOT NULL, record TEXT NOT NULL,
    ts INTEGER NOT NULL, event TEXT NOT NULL, fan_out INTEGER NOT NULL DEFAULT 0,
    webhooks TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (tenant, ts, id);
CREATE TABLE IF NOT EXISTS queues (
    url TEXT PRIMARY KEY, visibility_ms INTEGER NOT NULL, dlq TEXT, max_receive INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, message_id TEXT NOT NULL,
    body TEXT NOT NULL, reason TEXT, sent_ms INTEGER NOT NULL, receive_count INTEGER NOT NULL,
    visible_at INTEGER NOT NULL, receipt TEXT, received_at INTEGER, in_flight INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);
";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use the data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("the data directory {0} is in use by another process (one runner per DATA_DIR)")]
    InUse(PathBuf),
    #[error("stored record is unreadable: {0}")]
    Record(#[from] serde_json::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a storage operation panicked")]
    Panicked,
    #[error("sqlite: {0}")]
    Refused(String),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<DbError> for QueueError {
    fn from(e: DbError) -> Self {
        QueueError::Backend(e.to_string())
    }
}

/// A write waiting for the writer thread: run inside the group's transaction, then told the
/// commit's outcome.
trait WriteJob: Send {
    /// Runs the write; false when it failed (its changes are rolled back, the group's stay).
    fn run(&mut self, conn: &Connection) -> bool;
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, DbError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, DbError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, DbError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        // A panic in one write must not take the writer (and every later write) with it.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))).unwrap_or(Err(DbError::Panicked));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let result = match (committed, self.result) {
            (Ok(()), Some(r)) => r,
            (Err(e), Some(Ok(_))) => Err(DbError::Refused(format!("commit failed: {e}"))),
            (_, Some(Err(e))) => Err(e),
            (_, None) => Err(DbError::Panicked),
        };
        let _ = self.reply.send(result);
    }
}

struct Envelope {
    /// Commit with `synchronous=FULL` (fsync before returning).
    sync: bool,
    job: Box<dyn WriteJob>,
}

/// One database: a writer thread and a pool of reader connections.
pub struct Db {
    path: PathBuf,
    /// Held for the life of this `Db`; the OS lets go of it when the process dies, however.
    _lock: std::fs::File,
    writes: Mutex<mpsc::Sender<Envelope>>,
    readers: Mutex<Vec<Connection>>,
}

fn connect(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Db {
    /// Opens (creating if need be) the database in `dir`, which is created too. One process
    /// at a time: the directory is locked. What a previous process had in hand when it died
    /// is handed back at once: the messages it had received (not those it hid for a retry)
    /// are visible again, and its claims on events lapse.
    pub fn open(dir: &Path) -> Result<Arc<Db>, DbError> {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Dir(dir.to_path_buf(), e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| DbError::Dir(dir.to_path_buf(), e))?;
        lock.try_lock().map_err(|_| DbError::InUse(dir.to_path_buf()))?;
        let path = dir.join(DB_FILE);
        let writer = connect(&path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Refused(format!("WAL mode refused (journal_mode is {mode})")));
        }
        writer.execute_batch(SCHEMA)?;
        // The lock says no other process is using these: whoever held them is gone.
        writer.execute_batch(
            "UPDATE messages SET visible_at = 0, receipt = NULL, in_flight = 0 WHERE in_flight = 1; \
             UPDATE events SET lease_until = 0 WHERE fanned = 0;",
        )?;
        let (tx, rx) = mpsc::channel::<Envelope>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(|e| DbError::Dir(dir.to_path_buf(), e))?;
        Ok(Arc::new(Db {
            path,
            _lock: lock,
            writes: Mutex::new(tx),
            readers: Mutex::new(Vec::new()),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<T, F>(&self, sync: bool, work: F) -> tokio::sync::oneshot::Receiver<Result<T, DbError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            result: None,
            reply,
        });
        // If the writer is gone the job (and its reply) is dropped, and the caller hears so.
        let _ = lock(&self.writes).send(Envelope { sync, job });
        rx
    }

    /// Runs `work` in a write transaction; returns once it is committed (and, with `sync`,
    /// fsynced).
    pub async fn write<T, F>(&self, sync: bool, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.submit(sync, work).await.map_err(|_| DbError::WriterGone)?
    }

    /// The same, synced, on a connection of its own, for start-up code that is not async (it
    /// blocks the calling thread, and waits for the writer thread's transaction if one is open).
    pub fn write_blocking<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> Result<T, DbError>,
    {
        let conn = connect(&self.path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        match work(&conn) {
            Ok(v) => {
                conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `work` on a reader connection, off the async threads. It sees every committed write.
    pub async fn read<T, F>(self: &Arc<Self>, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match lock(&db.readers).pop() {
                Some(c) => c,
                None => connect(&db.path)?,
            };
            let result = work(&conn);
            let mut idle = lock(&db.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|_| DbError::Panicked)?
    }

    /// Deletes delivery records and stored events whose retention ended (what DynamoDB's TTL
    /// does in AWS); returns how many went.
    pub async fn purge_expired(&self, now_s: u64) -> Result<usize, DbError> {
        self.write(false, move |c| {
            let d = c.execute("DELETE FROM deliveries WHERE expires_at < ?1", params![now_s as i64])?;
            let e = c.execute("DELETE FROM events WHERE expires_at < ?1", params![now_s as i64])?;
            Ok(d + e)
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer thread: takes every write waiting, runs each in a savepoint of one transaction,
/// commits once, then answers them all. Ends when the last `Db` handle is dropped.
fn write_loop(conn: Connection, rx: mpsc::Receiver<Envelope>) {
    let mut full = false;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(e) => group.push(e),
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|e| e.sync);
        if sync != full {
            let level = if sync { "FULL" } else { "NORMAL" };
            if conn.pragma_update(None, "synchronous", level).is_ok() {
                full = sync;
            }
        }
        let committed = commit_group(&conn, &mut group);
        for e in group {
            e.job.finish(committed.clone());
        }
    }
}

fn commit_group(conn: &Connection, group: &mut [Envelope]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    for e in group.iter_mut() {
        let step = conn.execute_batch("SAVEPOINT job").and_then(|()| {
            if e.job.run(conn) {
                conn.execute_batch("RELEASE job")
            } else {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
            }
        });
        if let Err(err) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err.to_string());
        }
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    })
}

/// SQLite stores integers as i64; our times and counters are u64 well under i64::MAX.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Adds or removes the webhook's rows of the subscriber index (`Webhook::subscribed_types`, as
/// the DynamoDB adapter's subscription items), so that fan-out is one key lookup.
fn set_subscriptions(c: &Connection, w: &Webhook, add: bool) -> Result<(), DbError> {
    let sql = if add {
        "INSERT OR IGNORE INTO subscriptions (tenant, event, webhook_id) VALUES (?1, ?2, ?3)"
    } else {
        "DELETE FROM subscriptions WHERE tenant = ?1 AND event = ?2 AND webhook_id = ?3"
    };
    let mut stmt = c.prepare_cached(sql)?;
    for event in w.subscribed_types() {
        stmt.execute(params![w.tenant, event, w.id])?;
    }
    Ok(())
}

fn stored_webhook(c: &Connection, tenant: &str, id: &str) -> Result<Option<Webhook>, DbError> {
    let record: Option<String> = c
        .prepare_cached("SELECT record FROM webhooks WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| r.get(0))
        .optional()?;
    Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
}

#[derive(Clone)]
pub struct SqliteWebhookStore {
    db: Arc<Db>,
}

impl SqliteWebhookStore {
    pub fn new(db: Arc<Db>) -> Self {
        SqliteWebhookStore { db }
    }
}

#[async_trait]
impl WebhookStore for SqliteWebhookStore {
    async fn create(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let w = webhook.clone();
        let record = serde_json::to_string(&w).map_err(DbError::from)?;
        let created = self
            .db
            .write(true, move |c| {
                let n = c.execute(
                    "INSERT OR IGNORE INTO webhooks (tenant, id, version, record) VALUES (?1, ?2, ?3, ?4)",
                    params![w.tenant, w.id, int(w.version), record],
                )?;
                if n == 1 {
                    set_subscriptions(c, &w, true)?;
                }
                Ok(n == 1)
            })
            .await?;
        if created {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists)
        }
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        Ok(self.db.read(move |c| stored_webhook(c, &tenant, &id)).await?)
    }

    async fn list(&self, tenant: &str, limit: usize, after: Option<&str>) -> Result<Page<Webhook>, StoreError> {
        let (tenant, after) = (tenant.to_string(), after.unwrap_or("").to_string());
        let items: Vec<Webhook> = self
            .db
            .read(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT record FROM webhooks WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?;
                let rows = stmt.query_map(params![tenant, after, int(limit as u64 + 1)], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(serde_json::from_str(&r?)?);
                }
                Ok(out)
            })
            .await?;
        Ok(Page::overfetched(items, limit, |w| w.id.clone()))
    }

    async fn update(&self, old: &Webhook, new: &Webhook) -> Result<(), StoreError> {
        let (old_version, mut new) = (old.version, new.clone());
        let (tenant, id) = (old.tenant.clone(), old.id.clone());
        // The dispatcher may have written health since `old` was read: keep the stored one
        // unless this update means to change it (a re-enable resets it).
        let keep_health = new.health == old.health;
        self.db
            .write(true, move |c| {
                let Some(current) = stored_webhook(c, &tenant, &id)? else {
                    return Ok(Err(StoreError::NotFound));
                };
                if current.version != old_version {
                    return Ok(Err(StoreError::Conflict));
                }
                if keep_health {
                    new.health = current.health.clone();
                }
                let record = serde_json::to_string(&new)?;
                c.execute(
                    "UPDATE webhooks SET version = ?3, record = ?4 WHERE tenant = ?1 AND id = ?2",
                    params![tenant, id, int(new.version), record],
                )?;
                set_subscriptions(c, &current, false)?;
                set_subscriptions(c, &new, true)?;
                Ok(Ok(()))
            })
            .await?
    }

    async fn set_health(&self, tenant: &str, id: &str, old: &Health, new: &Health) -> Result<bool, StoreError> {
        let (tenant, id, old_rev, health) = (tenant.to_string(), id.to_string(), old.rev, new.clone());
        Ok(self
            .db
            .write(false, move |c| {
                let Some(mut current) = stored_webhook(c, &tenant, &id)? else {
                    return Ok(false);
                };
                if current.health.rev != old_rev {
                    return Ok(false);
                }
                current.health = health;
                let record = serde_json::to_string(&current)?;
                c.execute(
                    "UPDATE webhooks SET record = ?3 WHERE tenant = ?1 AND id = ?2",
                    params![tenant, id, record],
                )?;
                Ok(true)
            })
            .await?)
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.db
            .write(true, move |c| {
                let Some(current) = stored_webhook(c, &tenant, &id)? else {
                    return Ok(Err(StoreError::NotFound));
                };
                c.execute(
                    "DELETE FROM webhooks WHERE tenant = ?1 AND id = ?2",
                    params![tenant, id],
                )?;
                set_subscriptions(c, &current, false)?;
                Ok(Ok(()))
            })
            .await?
    }

    async fn subscribers(&self, tenant: &str, event: EventType) -> Result<Vec<String>, StoreError> {
        let tenant = tenant.to_string();
        Ok(self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT webhook_id FROM subscriptions WHERE tenant = ?1 AND event = ?2 ORDER BY webhook_id",
                )?;
                let rows = stmt.query_map(params![tenant, event.as_str()], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }
}

#[derive(Clone)]
pub struct SqliteDeliveryLog {
    db: Arc<Db>,
}

impl SqliteDeliveryLog {
    pub fn new(db: Arc<Db>) -> Self {
        SqliteDeliveryLog { db }
    }

    /// Changes the delivery's record (a new one from `delivery` if there is none) in one write.
    async fn with_record<T, F>(&self, delivery: &Delivery, now: u64, change: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Delivery) -> T + Send + 'static,
    {
        let delivery = delivery.clone();
        Ok(self
            .db
            .write(false, move |c| {
                let mut record = stored_delivery(c, &delivery.webhook_id, &delivery.id)?.unwrap_or_else(|| Delivery {
                    attempts: Vec::new(),
                    status: DeliveryStatus::Pending,
                    created_at: now,
                    updated_at: now,
                    note: None,
                    cycle_start: 0,
                    next_attempt_at: None,
                    ..delivery.clone()
                });
                let out = change(&mut record);
                put_delivery(c, &record)?;
                Ok(out)
            })
            .await?)
    }
}

fn stored_delivery(c: &Connection, webhook_id: &str, id: &str) -> Result<Option<Delivery>, DbError> {
    let record: Option<String> = c
        .prepare_cached("SELECT record FROM deliveries WHERE webhook_id = ?1 AND id = ?2")?
        .query_row(params![webhook_id, id], |r| r.get(0))
        .optional()?;
    Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
}

fn put_delivery(c: &Connection, d: &Delivery) -> Result<(), DbError> {
    c.prepare_cached("INSERT OR REPLACE INTO deliveries (webhook_id, id, expires_at, record) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            d.webhook_id,
            d.id,
            int(d.expires_at),
            serde_json::to_string(d)?
        ])?;
    Ok(())
}

#[async_trait]
impl DeliveryLog for SqliteDeliveryLog {
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        status: DeliveryStatus,
        next_attempt_at: Option<u64>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let attempt = attempt.clone();
        self.with_record(delivery, now, move |d| {
            d.attempts.push(attempt);
            d.updated_at = now;
            if d.status == DeliveryStatus::Succeeded {
                return false;
            }
            d.status = status;
            d.next_attempt_at = next_attempt_at;
            true
        })
        .await
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        status: DeliveryStatus,
        note: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (cycle, note) = (delivery.cycle, note.to_string());
        self.with_record(delivery, now, move |d| {
            if d.status != DeliveryStatus::Pending || d.cycle != cycle {
                return false;
            }
            d.status = status;
            d.note = Some(note);
            d.next_attempt_at = None;
            d.updated_at = now;
            true
        })
        .await
    }

    async fn reopen(&self, record: &Delivery, to: u32, now: u64) -> Result<bool, StoreError> {
        let (webhook_id, id, cycle, attempts) = (
            record.webhook_id.clone(),
            record.id.clone(),
            record.cycle,
            record.attempts.len(),
        );
        Ok(self
            .db
            .write(false, move |c| match stored_delivery(c, &webhook_id, &id)? {
                Some(mut d) if d.cycle == cycle && d.attempts.len() == attempts && to > cycle => {
                    d.cycle = to;
                    d.cycle_start = d.attempts.len() as u32;
                    d.status = DeliveryStatus::Pending;
                    d.note = None;
                    d.next_attempt_at = None;
                    d.updated_at = now;
                    put_delivery(c, &d)?;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await?)
    }

    async fn get(&self, webhook_id: &str, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        let (webhook_id, id) = (webhook_id.to_string(), delivery_id.to_string());
        Ok(self.db.read(move |c| stored_delivery(c, &webhook_id, &id)).await?)
    }

    async fn list(&self, webhook_id: &str, limit: usize, before: Option<&str>) -> Result<Page<Delivery>, StoreError> {
        let webhook_id = webhook_id.to_string();
        // '~' sorts after every id character: no cursor means from the newest.
        let before = before.unwrap_or("~").to_string();
        let items: Vec<Delivery> = self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT record FROM deliveries WHERE webhook_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![webhook_id, before, int(limit as u64 + 1)], |r| {
                    r.get::<_, String>(0)
                })?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(serde_json::from_str(&r?)?);
                }
                Ok(out)
            })
            .await?;
        Ok(Page::overfetched(items, limit, |d| d.id.clone()))
    }
}

#[derive(Clone)]
pub struct SqliteEventStore {
    db: Arc<Db>,
}

impl SqliteEventStore {
    pub fn new(db: Arc<Db>) -> Self {
        SqliteEventStore { db }
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn claim(&self, event: &StoredEvent, owner: &str, now_ms: u64, lease_ms: u64) -> Result<Claim, StoreError> {
        // DynamoDB's item limit, so that the local mode accepts no event AWS would refuse.
        if event_item_size(event) > MAX_ITEM_BYTES {
            return Err(StoreError::Backend(
                "ValidationException: Item size has exceeded the maximum allowed size".into(),
            ));
        }
        let (event, owner) = (event.clone(), owner.to_string());
        let record = serde_json::to_string(&event).map_err(DbError::from)?;
        let lease = int(now_ms + lease_ms);
        Ok(self
            .db
            .write(false, move |c| {
                let key = params![event.tenant.as_str(), event.id.as_str()];
                let found: Option<(bool, i64, String)> = c
                    .prepare_cached("SELECT fanned, lease_until, record FROM events WHERE tenant = ?1 AND id = ?2")?
                    .query_row(key, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                match found {
                    None => {
                        c.prepare_cached(
                            "INSERT INTO events (tenant, id, fanned, owner, lease_until, expires_at, record, ts, event) \
                             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )?
                        .execute(params![
                            event.tenant.as_str(),
                            event.id.as_str(),
                            owner,
                            lease,
                            int(event.expires_at),
                            record,
                            int(event.timestamp_ms),
                            event.event.as_str()
                        ])?;
                        Ok(Claim::Won(event))
                    }
                    Some((true, _, stored)) => Ok(Claim::Duplicate(serde_json::from_str(&stored)?)),
                    Some((false, until, stored)) if uint(until) <= now_ms => {
                        c.prepare_cached(
                            "UPDATE events SET owner = ?3, lease_until = ?4 WHERE tenant = ?1 AND id = ?2",
                        )?
                        .execute(params![
                            event.tenant.as_str(),
                            event.id.as_str(),
                            owner,
                            lease
                        ])?;
                        Ok(Claim::Won(serde_json::from_str(&stored)?))
                    }
                    Some((false, until, _)) => Ok(Claim::Busy { until_ms: uint(until) }),
                }
            })
            .await?)
    }

    async fn complete(
        &self,
        tenant: &Tenant,
        id: &EventId,
        owner: &str,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        let (tenant, id, owner) = (tenant.to_string(), id.to_string(), owner.to_string());
        let kept = &webhooks[..webhooks.len().min(MAX_RECORDED_FAN_OUT)];
        let recorded = serde_json::to_string(kept).map_err(DbError::from)?;
        let fan_out = int(webhooks.len() as u64);
        Ok(self
            .db
            .write(false, move |c| {
                c.execute(
                    "UPDATE events SET fanned = 1, webhooks = ?4, fan_out = ?5 \
                     WHERE tenant = ?1 AND id = ?2 AND owner = ?3",
                    params![tenant, id, owner, recorded, fan_out],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn release(&self, tenant: &Tenant, id: &EventId, owner: &str) -> Result<(), StoreError> {
        let (tenant, id, owner) = (tenant.to_string(), id.to_string(), owner.to_string());
        Ok(self
            .db
            .write(false, move |c| {
                c.execute(
                    "UPDATE events SET lease_until = 0 WHERE tenant = ?1 AND id = ?2 AND owner = ?3 AND fanned = 0",
                    params![tenant, id, owner],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn get(&self, tenant: &Tenant, id: &EventId, _consistent: bool) -> Result<Option<EventRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        Ok(self
            .db
            .read(move |c| {
                let found: Option<(String, bool, String, i64)> = c
                    .prepare_cached(
                        "SELECT record, fanned, webhooks, fan_out FROM events WHERE tenant = ?1 AND id = ?2",
                    )?
                    .query_row(params![tenant, id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                found
                    .map(|(record, fanned, webhooks, fan_out)| {
                        Ok(EventRecord {
                            event: serde_json::from_str(&record)?,
                            fanned,
                            webhooks: serde_json::from_str(&webhooks)?,
                            fan_out: uint(fan_out) as usize,
                        })
                    })
                    .transpose()
            })
            .await?)
    }

    async fn list(
        &self,
        tenant: &Tenant,
        query: EventQuery,
        limit: usize,
        before: Option<&EventCursor>,
    ) -> Result<Page<EventSummary>, StoreError> {
        let tenant = tenant.to_string();
        let event = query.event.map(|e| e.as_str());
        // The cursor bound is (ts, id) < (before.ts, before.id); with no cursor, past any event.
        let (before_ts, before_id) = match before {
            Some(b) => (int(b.timestamp_ms), b.id.to_string()),
            None => (i64::MAX, String::new()),
        };
        let since = int(query.since_ms);
        let rows: Vec<(String, String, i64, bool)> = self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, event, ts, fanned FROM events \
                     WHERE tenant = ?1 AND ts >= ?2 AND (?3 IS NULL OR event = ?3) \
                       AND (ts < ?4 OR (ts = ?4 AND id < ?5)) \
                     ORDER BY ts DESC, id DESC LIMIT ?6",
                )?;
                let rows = stmt
                    .query_map(
                        params![tenant, since, event, before_ts, before_id, (limit + 1) as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, event, ts, fanned) in rows {
            let (Some(id), Some(event)) = (EventId::parse(&id), EventType::parse(&event)) else {
                return Err(StoreError::Backend(format!("a stored event row does not parse: {id}")));
            };
            items.push(EventSummary {
                id,
                event,
                timestamp_ms: uint(ts),
                fanned,
            });
        }
        Ok(Page::overfetched(items, limit, EventCursor::after))
    }
}

/// Receipt handles this queue gives out start with this; SQS refuses handles it never issued.
const RECEIPT_PREFIX: &str = "rh_";

/// Queues with the SQS semantics the handlers rely on, on disk: a received message is hidden
/// for the visibility timeout, comes back unless deleted, counts its receives, and moves to the
/// dead-letter queue on the receive after `maxReceiveCount`; with SQS's limits (10 entries and
/// 1 MiB a batch, 1 MiB a message, delays up to 15 min, visibility at most 12 h after the
/// receive, receipt handles checked, receives stop at `MAX_IN_FLIGHT` in flight). Times are the pipeline's `Clock` in ms since the epoch, so a message hidden until
/// a retry is due stays hidden until then across a restart, and tests can move the clock.
pub struct SqliteQueue {
    db: Arc<Db>,
    arrived: Notify,
    clock: Clock,
    /// Queues whose sends are committed without an fsync (see `internal`).
    internal: Mutex<std::collections::HashSet<String>>,
    /// Queues whose in-flight limit is lowered (`set_in_flight_limit`); `MAX_IN_FLIGHT` otherwise.
    in_flight_limits: Mutex<HashMap<String, usize>>,
}

struct QueueConfig {
    visibility_ms: u64,
    redrive: Option<(String, u32)>,
}

fn queue_config(c: &Connection, url: &str) -> Result<Option<QueueConfig>, DbError> {
    Ok(
        c.prepare_cached("SELECT visibility_ms, dlq, max_receive FROM queues WHERE url = ?1")?
            .query_row(params![url], |r| {
                let dlq: Option<String> = r.get(1)?;
                let max: Option<i64> = r.get(2)?;
                Ok(QueueConfig {
                    visibility_ms: uint(r.get(0)?),
                    redrive: dlq.zip(max).map(|(d, m)| (d, u32::try_from(m).unwrap_or(u32::MAX))),
                })
            })
            .optional()?,
    )
}

fn count_in_flight(c: &Connection, url: &str, now: i64) -> Result<usize, DbError> {
    let n: i64 = c
        .prepare_cached("SELECT count(*) FROM messages WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2")?
        .query_row(params![url, now], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn no_such_queue(url: &str) -> QueueError {
    QueueError::NoSuchQueue(url.to_string())
}

impl SqliteQueue {
    /// A queue on a clock shared with the dispatcher (see `time::Clock`).
    pub fn new(db: Arc<Db>, clock: Clock) -> Self {
        SqliteQueue {
            db,
            arrived: Notify::new(),
            clock,
            internal: Mutex::new(Default::default()),
            in_flight_limits: Mutex::new(HashMap::new()),
        }
    }

    /// Messages sent with a delay that has not run out (SQS's ApproximateNumberOfMessagesDelayed).
    pub async fn delayed(&self, queue_url: &str) -> Result<usize, QueueError> {
        let (url, now) = (queue_url.to_string(), int(self.clock.now_ms()));
        Ok(self
            .db
            .read(move |c| {
                let n: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM messages WHERE queue = ?1 AND receipt IS NULL AND visible_at > ?2",
                    )?
                    .query_row(params![url, now], |r| r.get(0))?;
                Ok(usize::try_from(n).unwrap_or(0))
            })
            .await?)
    }

    /// Lowers a queue's in-flight limit (SQS's is `MAX_IN_FLIGHT`), so a test can reach it.
    pub fn set_in_flight_limit(&self, queue_url: &str, limit: usize) {
        lock(&self.in_flight_limits).insert(queue_url.to_string(), limit);
    }

    /// Messages received and neither deleted nor visible again (SQS's
    /// ApproximateNumberOfMessagesNotVisible); a delayed message is not among them.
    pub async fn in_flight(&self, queue_url: &str) -> Result<usize, QueueError> {
        let (url, now) = (queue_url.to_string(), int(self.clock.now_ms()));
        Ok(self.db.read(move |c| count_in_flight(c, &url, now)).await?)
    }

    /// Marks a queue whose senders are the pipeline itself (jobs, dead letters), not a producer
    /// waiting for an acknowledgment: its sends are committed `synchronous=NORMAL`, which
    /// survives `kill -9`. After a power cut a suffix of such commits may be lost, and with it
    /// everything the pipeline did after them (the claim's completion, the deletion of the
    /// message that caused the send), so the cause is received again and the send redone. By
    /// default every send is fsynced before it returns.
    pub fn internal(&self, queue_url: &str) {
        lock(&self.internal).insert(queue_url.to_string());
    }

    /// Creates a queue (or updates its settings) and returns its URL (`sqlite://name`). Its
    /// messages, if it existed, are kept.
    pub fn create_queue(
        &self,
        name: &str,
        visibility: Duration,
        redrive: Option<(String, u32)>,
    ) -> Result<String, QueueError> {
        let url = format!("sqlite://{name}");
        let u = url.clone();
        let visibility_ms = int(visibility.as_millis() as u64);
        self.db.write_blocking(move |c| {
            let (dlq, max) = redrive.map(|(d, m)| (d, i64::from(m))).unzip();
            c.execute(
                "INSERT INTO queues (url, visibility_ms, dlq, max_receive) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (url) DO UPDATE SET visibility_ms = ?2, dlq = ?3, max_receive = ?4",
                params![u, visibility_ms, dlq, max],
            )?;
            Ok(())
        })?;
        Ok(url)
    }

    /// Moves this queue's clock forward: hidden messages whose time has come are visible.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.arrived.notify_waiters();
    }

    /// Messages in the queue, visible or not (SQS's ApproximateNumberOfMessages + NotVisible).
    pub async fn depth(&self, queue_url: &str) -> Result<usize, QueueError> {
        let url = queue_url.to_string();
        Ok(self
            .db
            .read(move |c| {
                let n: i64 = c.query_row("SELECT count(*) FROM messages WHERE queue = ?1", params![url], |r| {
                    r.get(0)
                })?;
                Ok(uint(n) as usize)
            })
            .await?)
    }

    /// Whether the queue has a message to receive now (a read: no write for an idle poll).
    async fn has_visible(&self, queue_url: &str) -> Result<bool, QueueError> {
        let (url, now) = (queue_url.to_string(), int(self.clock.now_ms()));
        self.db
            .read(move |c| {
                if queue_config(c, &url)?.is_none() {
                    return Ok(Err(no_such_queue(&url)));
                }
                let any: Option<i64> = c
                    .prepare_cached("SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2 LIMIT 1")?
                    .query_row(params![url, now], |r| r.get(0))
                    .optional()?;
                Ok(Ok(any.is_some()))
            })
            .await?
    }

    async fn try_receive(&self, queue_url: &str, max: usize) -> Result<Vec<QueueMessage>, QueueError> {
        let (url, now) = (queue_url.to_string(), self.clock.now_ms());
        let limit = lock(&self.in_flight_limits)
            .get(queue_url)
            .copied()
            .unwrap_or(MAX_IN_FLIGHT);
        self.db
            .write(false, move |c| {
                let Some(q) = queue_config(c, &url)? else {
                    return Ok(Err(no_such_queue(&url)));
                };
                // Past the limit SQS hands out nothing (a long poll just waits), to every consumer.
                let max = max.min(limit.saturating_sub(count_in_flight(c, &url, int(now))?));
                // Room for the dead letters moved on the way, which do not count.
                let candidates: Vec<(i64, u32)> = c
                    .prepare_cached(
                        "SELECT seq, receive_count FROM messages WHERE queue = ?1 AND visible_at <= ?2 \
                         ORDER BY visible_at, seq LIMIT ?3",
                    )?
                    .query_map(params![url, int(now), int((max + 100) as u64)], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<Result<_, _>>()?;
                let dlq_exists = match &q.redrive {
                    Some((dlq, _)) => queue_config(c, dlq)?.is_some(),
                    None => false,
                };
                let mut out = Vec::new();
                for (seq, count) in candidates {
                    if out.len() >= max {
                        break;
                    }
                    if let Some((dlq, max_receive)) = &q.redrive
                        && count >= *max_receive
                    {
                        if dlq_exists {
                            c.prepare_cached(
                                "UPDATE messages SET queue = ?2, receive_count = 0, receipt = NULL, \
                                 received_at = NULL, in_flight = 0, visible_at = ?3 WHERE seq = ?1",
                            )?
                            .execute(params![seq, dlq, int(now)])?;
                        } else {
                            c.execute("DELETE FROM messages WHERE seq = ?1", params![seq])?;
                        }
                        continue;
                    }
                    let receipt = crate::ids::new_id(RECEIPT_PREFIX.trim_end_matches('_'));
                    let m = c
                        .prepare_cached(
                            "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3, \
                             received_at = ?4, in_flight = 1 WHERE seq = ?1 RETURNING message_id, body, receive_count, sent_ms",
                        )?
                        .query_row(params![seq, int(now + q.visibility_ms), receipt, int(now)], |r| {
                            Ok(QueueMessage {
                                message_id: r.get(0)?,
                                receipt_handle: receipt.clone(),
                                body: r.get(1)?,
                                receive_count: r.get(2)?,
                                sent_timestamp_ms: uint(r.get(3)?),
                            })
                        })?;
                    out.push(m);
                }
                Ok(Ok(out))
            })
            .await?
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send_batch(&self, queue_url: &str, messages: &[OutgoingMessage]) -> Result<Vec<String>, QueueError> {
        check_batch(messages)?;
        let (url, now) = (queue_url.to_string(), int(self.clock.now_ms()));
        let rows: Vec<(String, String, Option<String>, i64)> = messages
            .iter()
            .map(|m| {
                let visible_at = int(self.clock.now_ms() + u64::from(m.delay_s) * 1000);
                (crate::ids::new_id("msg"), m.body.clone(), m.reason.clone(), visible_at)
            })
            .collect();
        // Synced: a producer (the API's 202) is told the message is kept only once it is on disk.
        let sync = !lock(&self.internal).contains(queue_url);
        self.db
            .write(sync, move |c| {
                if queue_config(c, &url)?.is_none() {
                    return Ok(Err(no_such_queue(&url)));
                }
                let mut stmt = c.prepare_cached(
                    "INSERT INTO messages (queue, message_id, body, reason, sent_ms, receive_count, visible_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                )?;
                for (id, body, reason, visible_at) in rows {
                    stmt.execute(params![url, id, body, reason, now, visible_at])?;
                }
                Ok(Ok(()))
            })
            .await??;
        self.arrived.notify_waiters();
        Ok(Vec::new())
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        let (url, receipt, now) = (queue_url.to_string(), receipt_handle.to_string(), self.clock.now_ms());
        self.db
            .write(false, move |c| {
                if queue_config(c, &url)?.is_none() {
                    return Ok(Err(no_such_queue(&url)));
                }
                let found: Option<(i64, Option<i64>)> = c
                    .prepare_cached("SELECT seq, received_at FROM messages WHERE queue = ?1 AND receipt = ?2")?
                    .query_row(params![url, receipt], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((seq, received_at)) = found else {
                    return Ok(Err(QueueError::InvalidReceipt));
                };
                let held = now.saturating_sub(received_at.map_or(now, uint)) / 1000;
                if let Err(e) = check_visibility(held, seconds) {
                    return Ok(Err(e));
                }
                // Hidden on purpose (a retry's delay): kept hidden across a restart.
                c.prepare_cached("UPDATE messages SET visible_at = ?2, in_flight = 0 WHERE seq = ?1")?
                    .execute(params![seq, int(now + seconds as u64 * 1000)])?;
                Ok(Ok(()))
            })
            .await??;
        if seconds == 0 {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn receive(&self, queue_url: &str, max: usize, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            if self.has_visible(queue_url).await? {
                let got = self.try_receive(queue_url, max.clamp(1, MAX_BATCH)).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Wake on a send, or look again soon for messages whose visibility ran out.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        let failed = self.delete_batch(queue_url, &[receipt_handle.to_string()]).await?;
        match failed.is_empty() {
            true => Ok(()),
            false if receipt_handle.starts_with(RECEIPT_PREFIX) => Err(no_such_queue(queue_url)),
            false => Err(QueueError::InvalidReceipt),
        }
    }

    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError> {
        if receipt_handles.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipt_handles.len()));
        }
        let (url, handles) = (queue_url.to_string(), receipt_handles.to_vec());
        Ok(self
            .db
            .write(false, move |c| {
                if queue_config(c, &url)?.is_none() {
                    return Ok(handles);
                }
                let mut failed = Vec::new();
                let mut stmt = c.prepare_cached("DELETE FROM messages WHERE queue = ?1 AND receipt = ?2")?;
                for h in handles {
                    // SQS refuses a handle it never issued, and accepts (as a no-op) an old one.
                    if h.starts_with(RECEIPT_PREFIX) {
                        stmt.execute(params![url, h])?;
                    } else {
                        failed.push(h);
                    }
                }
                Ok(failed)
            })
            .await?)
    }
}
