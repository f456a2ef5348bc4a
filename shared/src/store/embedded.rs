//! [`EmbeddedStore`]: a service's records in a redb file, for running without MongoDB.
//!
//! One file per collection (`<dir>/<collection>.redb`), so the three services can share a
//! `DATA_DIR` and a process can hold all three stores open. Three tables:
//!
//! - `records`: saga id → the record as JSON,
//! - `keys`: idempotency key → saga id (what the `_id` of a first version is in MongoDB),
//! - `by_status`: (status, `updated_at` in ms, saga id) → `()`, so the re-driver's
//!   [`Store::list_by_status`] reads the oldest records of a status without scanning the rest
//!   (the `{status, updated_at}` index in MongoDB),
//! - `due`: (`due_at` in ms, saga id) → `()` for records the re-driver still has work on, so
//!   [`Store::list_due`] reads the earliest due first (the `due_at` index in MongoDB).
//!
//! redb serializes write transactions, so "insert unless the key exists" and the
//! compare-and-swap on `version` are each one write transaction that reads, decides and writes:
//! the same single-record atomicity MongoDB gives, and no more is offered. redb is synchronous,
//! so every call runs on tokio's blocking pool. Writes share their `fsync`s ([`group_commit`]):
//! a call returns once its write is on disk, but concurrent writes are flushed together.
//!
//! Timestamps are stored truncated to the millisecond, as BSON dates hold them in MongoDB, so a
//! record reads back the same from either store.

use super::{Inserted, Store, StoreError};
use crate::saga::{SagaId, SagaRecord, Status};
use chrono::{DateTime, SubsecRound, Utc};
use futures::future::BoxFuture;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod group_commit;
#[cfg(test)]
mod tests;
use group_commit::GroupCommit;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
const BY_STATUS: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("by_status");
const DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("due");

/// One service's records in one redb file. Cloning is cheap; clones share the open file. redb
/// allows one open handle per file and process: open each collection once and clone the store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    commits: Arc<GroupCommit>,
    /// One permit per operation on the blocking pool, running or waiting for a thread: the
    /// bound on queued store work (see [`QUEUE_LIMIT`]).
    queue: Arc<tokio::sync::Semaphore>,
}

/// The most operations one store lets wait for or run on the blocking pool. Past it an
/// operation fails at once as unavailable (503 + `Retry-After`, nothing accepted) instead of
/// joining a queue that only grows: tokio's blocking pool queues without bound, and every
/// queued operation holds its request's memory.
pub const QUEUE_LIMIT: usize = 256;

/// redb's page cache per store file. Its default (1 GiB) lets the cache grow with the file, so a
/// service's memory grew with every record written (110 MB after a minute of overload). 8 MiB
/// keeps the hot pages of the key and due indexes; at 10x the sustainable rate for a minute it
/// peaked at 35-52 MB per service (16 MiB: 45-64 MB), same answers and latency
/// (`scripts/overload.sh embedded`).
const CACHE_BYTES: usize = 8 << 20;

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/<collection>.redb`, creating `dir` if needed. Blocks briefly on
    /// file I/O; call it at start-up.
    pub fn open(dir: &Path, collection: &str) -> Result<EmbeddedStore, StoreError> {
        let valid = !collection.is_empty()
            && collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(backend(EmbeddedError::BadCollectionName(collection.into())));
        }
        std::fs::create_dir_all(dir).map_err(|source| {
            backend(EmbeddedError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        })?;
        let path = dir.join(format!("{collection}.redb"));
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| {
                backend(EmbeddedError::Open {
                    path: path.clone(),
                    source,
                })
            })?;
        let txn = db.begin_write().map_err(redb_error)?;
        {
            txn.open_table(RECORDS).map_err(redb_error)?;
            txn.open_table(KEYS).map_err(redb_error)?;
            txn.open_table(BY_STATUS).map_err(redb_error)?;
            txn.open_table(DUE).map_err(redb_error)?;
        }
        txn.commit().map_err(redb_error)?;
        let db = Arc::new(db);
        let commits = GroupCommit::start(&db, collection).map_err(|source| {
            backend(EmbeddedError::Flusher {
                path: path.clone(),
                source,
            })
        })?;
        Ok(EmbeddedStore {
            db,
            path: Arc::new(path),
            commits: Arc::new(commits),
            queue: Arc::new(tokio::sync::Semaphore::new(QUEUE_LIMIT)),
        })
    }

    /// How many `fsync`ed commits this store has made: with concurrent writers, fewer than
    /// writes (see [`group_commit`]). For tests and benchmarks.
    pub fn flushes(&self) -> u64 {
        self.commits.flushes()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the blocking pool with the database, if fewer than [`QUEUE_LIMIT`]
    /// operations are already there; else fails at once as unavailable.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.queue)
            .try_acquire_owned()
            .map_err(|_| StoreError::Unavailable(Box::new(EmbeddedError::Busy(QUEUE_LIMIT))))?;
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let out = work(&db);
            drop(permit);
            out
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Runs a write on the blocking pool and waits until it is on disk. `work` gets a write
    /// transaction and says whether it committed; whatever it decided, the answer waits for
    /// everything committed before it to be durable too.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(WriteTransaction) -> Result<(T, bool), StoreError> + Send + 'static,
    {
        let commits = Arc::clone(&self.commits);
        let (out, ticket) = self.blocking(move |db| commits.write(db, work)).await?;
        self.commits.durable(ticket).await?;
        out
    }

    /// Runs a read on the blocking pool; answers once every write it could have seen is on disk.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let out = self.blocking(work).await?;
        self.commits.settled().await?;
        Ok(out)
    }
}

impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            txn.open_table(RECORDS).map_err(redb_error)?;
            Ok(())
        }))
    }

    fn insert<'a>(&'a self, rec: &'a SagaRecord) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        let rec = at_millisecond_precision(rec.clone());
        Box::pin(self.write(move |txn| insert(txn, &rec)))
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        let id = id.to_string();
        Box::pin(self.read(move |db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let records = txn.open_table(RECORDS).map_err(redb_error)?;
            let found = records.get(id.as_str()).map_err(redb_error)?;
            found.map(|bytes| decode(&id, bytes.value())).transpose()
        }))
    }

    fn get_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.read(move |db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let keys = txn.open_table(KEYS).map_err(redb_error)?;
            let Some(id) = keys.get(key.as_str()).map_err(redb_error)? else {
                return Ok(None);
            };
            let records = txn.open_table(RECORDS).map_err(redb_error)?;
            load(&records, id.value()).map(Some)
        }))
    }

    fn replace<'a>(
        &'a self,
        rec: &'a SagaRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let rec = at_millisecond_precision(rec.clone());
        Box::pin(self.write(move |txn| replace(txn, rec, expected_version)))
    }

    fn list_by_status<'a>(
        &'a self,
        statuses: &'a [Status],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        let mut statuses = statuses.to_vec();
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        Box::pin(self.read(move |db| list_by_status(db, &statuses, limit)))
    }

    fn list_due<'a>(
        &'a self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(self.read(move |db| list_due(db, now, limit)))
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.blocking(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let records = txn.open_table(RECORDS).map_err(redb_error)?;
            records.len().map_err(redb_error)
        }))
    }
}

/// Insert-or-return in one write transaction: the key lookup and the write can't interleave
/// with another writer's. The second value says whether it committed.
fn insert(txn: WriteTransaction, rec: &SagaRecord) -> Result<(Inserted, bool), StoreError> {
    let id = rec.saga_id.to_string();
    {
        let mut keys = txn.open_table(KEYS).map_err(redb_error)?;
        let mut records = txn.open_table(RECORDS).map_err(redb_error)?;
        let mut by_status = txn.open_table(BY_STATUS).map_err(redb_error)?;
        if let Some(owner) = keys.get(rec.key.as_str()).map_err(redb_error)? {
            // Dropping the transaction uncommitted writes nothing.
            return load(&records, owner.value()).map(|old| (Inserted::Existing(old), false));
        }
        if records.get(id.as_str()).map_err(redb_error)?.is_some() {
            return Err(backend(EmbeddedError::DuplicateId(rec.saga_id)));
        }
        records
            .insert(id.as_str(), encode(rec)?.as_slice())
            .map_err(redb_error)?;
        keys.insert(rec.key.as_str(), id.as_str())
            .map_err(redb_error)?;
        by_status
            .insert(status_entry(rec, &id), ())
            .map_err(redb_error)?;
        if let Some(entry) = due_entry(rec, &id) {
            let mut due = txn.open_table(DUE).map_err(redb_error)?;
            due.insert(entry, ()).map_err(redb_error)?;
        }
    }
    txn.commit().map_err(redb_error)?;
    Ok((Inserted::New, true))
}

/// Compare-and-swap on `version` in one write transaction. Keeps `keys` and `by_status` in step
/// with the record (a changed key must still be unique, as MongoDB's index would insist).
/// The second value says whether it committed.
fn replace(
    txn: WriteTransaction,
    mut rec: SagaRecord,
    expected: u64,
) -> Result<(bool, bool), StoreError> {
    rec.version = expected
        .checked_add(1)
        .ok_or_else(|| backend(EmbeddedError::VersionOverflow))?;
    let id = rec.saga_id.to_string();
    {
        let mut records = txn.open_table(RECORDS).map_err(redb_error)?;
        let stored = match records.get(id.as_str()).map_err(redb_error)? {
            Some(bytes) => decode(&id, bytes.value())?,
            None => return Ok((false, false)),
        };
        if stored.version != expected {
            return Ok((false, false));
        }
        if stored.key != rec.key {
            let mut keys = txn.open_table(KEYS).map_err(redb_error)?;
            if let Some(owner) = keys.get(rec.key.as_str()).map_err(redb_error)? {
                return Err(backend(EmbeddedError::KeyTaken {
                    key: rec.key.clone(),
                    owner: owner.value().to_owned(),
                }));
            }
            keys.remove(stored.key.as_str()).map_err(redb_error)?;
            keys.insert(rec.key.as_str(), id.as_str())
                .map_err(redb_error)?;
        }
        let mut by_status = txn.open_table(BY_STATUS).map_err(redb_error)?;
        by_status
            .remove(status_entry(&stored, &id))
            .map_err(redb_error)?;
        by_status
            .insert(status_entry(&rec, &id), ())
            .map_err(redb_error)?;
        let mut due = txn.open_table(DUE).map_err(redb_error)?;
        if let Some(entry) = due_entry(&stored, &id) {
            due.remove(entry).map_err(redb_error)?;
        }
        if let Some(entry) = due_entry(&rec, &id) {
            due.insert(entry, ()).map_err(redb_error)?;
        }
        records
            .insert(id.as_str(), encode(&rec)?.as_slice())
            .map_err(redb_error)?;
    }
    txn.commit().map_err(redb_error)?;
    Ok((true, true))
}

/// Walks `by_status` for each status (each range is already oldest-first), then merges. Order
/// and ties match MongoDB's `sort({updated_at: 1, _id: 1})`.
fn list_by_status(
    db: &Database,
    statuses: &[Status],
    limit: usize,
) -> Result<Vec<SagaRecord>, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let index = txn.open_table(BY_STATUS).map_err(redb_error)?;
    let mut oldest: Vec<(i64, String)> = Vec::new();
    for status in statuses {
        let from = (status.as_str(), i64::MIN, "");
        for entry in index.range(from..).map_err(redb_error)?.take(limit) {
            let (entry, _) = entry.map_err(redb_error)?;
            let (entry_status, updated_at, id) = entry.value();
            if entry_status != status.as_str() {
                break;
            }
            oldest.push((updated_at, id.to_owned()));
        }
    }
    oldest.sort();
    oldest.truncate(limit);
    let records = txn.open_table(RECORDS).map_err(redb_error)?;
    oldest.iter().map(|(_, id)| load(&records, id)).collect()
}

/// The records due by `now`, earliest first, at most `limit`.
///
/// A record that can't be decoded is skipped, logged and counted
/// (`saga_records_unreadable_total`), not returned as an error: one bad record must not stop
/// the re-driver for every other. It stays in the index, so the scan looks a little past
/// `limit` to keep a few bad ones from taking every slot.
fn list_due(
    db: &Database,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<SagaRecord>, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let index = txn.open_table(DUE).map_err(redb_error)?;
    let records = txn.open_table(RECORDS).map_err(redb_error)?;
    let until = (now.timestamp_millis(), "\u{10ffff}");
    let mut due = Vec::new();
    for entry in index
        .range(..=until)
        .map_err(redb_error)?
        .take(limit * 2 + 16)
    {
        if due.len() >= limit {
            break;
        }
        let (entry, _) = entry.map_err(redb_error)?;
        match load(&records, entry.value().1) {
            Ok(rec) => due.push(rec),
            Err(StoreError::Corrupt(e)) => super::unreadable("embedded", &e),
            Err(e) => return Err(e),
        }
    }
    Ok(due)
}

fn due_entry<'a>(rec: &SagaRecord, id: &'a str) -> Option<(i64, &'a str)> {
    rec.due_at.map(|at| (at.timestamp_millis(), id))
}

fn status_entry<'a>(rec: &SagaRecord, id: &'a str) -> (&'static str, i64, &'a str) {
    (rec.status.as_str(), rec.updated_at.timestamp_millis(), id)
}

/// The record `id` names, which must exist: `keys` and `by_status` only point at stored records.
fn load(
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<SagaRecord, StoreError> {
    match records.get(id).map_err(redb_error)? {
        Some(bytes) => decode(id, bytes.value()),
        None => Err(StoreError::Corrupt(format!(
            "an index points at record {id}, which is not stored"
        ))),
    }
}

fn encode(rec: &SagaRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(|source| {
        backend(EmbeddedError::Encode {
            id: rec.saga_id,
            source,
        })
    })
}

fn decode(id: &str, bytes: &[u8]) -> Result<SagaRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record {id}: {e}")))
}

fn at_millisecond_precision(mut rec: SagaRecord) -> SagaRecord {
    fn ms(at: DateTime<Utc>) -> DateTime<Utc> {
        at.trunc_subsecs(3)
    }
    rec.created_at = ms(rec.created_at);
    rec.updated_at = ms(rec.updated_at);
    rec.due_at = rec.due_at.map(ms);
    for event in &mut rec.history {
        event.at = ms(event.at);
    }
    rec
}

fn redb_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

fn backend(e: EmbeddedError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

#[derive(Debug, thiserror::Error)]
enum EmbeddedError {
    #[error("collection name {0:?} can't be a file name: use ASCII letters, digits, '_' and '-'")]
    BadCollectionName(String),
    #[error("can't create the data directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("can't start the flush thread for {}: {source}", path.display())]
    Flusher {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("saga {0} is already stored under another key")]
    DuplicateId(SagaId),
    #[error("key {key:?} already belongs to saga {owner}")]
    KeyTaken { key: String, owner: String },
    #[error("record version overflows u64")]
    VersionOverflow,
    #[error("{0} store operations are already queued: retry shortly")]
    Busy(usize),
    #[error("can't encode record {id}: {source}")]
    Encode {
        id: SagaId,
        #[source]
        source: serde_json::Error,
    },
}
