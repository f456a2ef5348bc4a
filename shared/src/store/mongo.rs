//! [`MongoStore`]: a service's records in one MongoDB collection (also runs on FerretDB).
//!
//! Shaped by four constraints:
//!
//! - **Start without the database.** [`MongoStore::connect`] only parses the URI and builds a
//!   [`Client`], which connects lazily; the service starts and reports not-ready instead of
//!   crash-looping. Server-selection and connect timeouts come from the caller's `op_timeout`, so
//!   an unreachable database fails an operation in about that long (not the driver's 30 s), and
//!   every operation is also bounded by a backstop timer in case a server accepts the connection
//!   and then never answers. The indexes are created on the first operation that reaches the
//!   server (and again on the next one if that failed), before anything is written.
//! - **Only single-document atomicity.** FerretDB v1 has no transactions, so "insert or return what
//!   is there" is an insert guarded by a unique index on `key` (the database enforces it, not this
//!   code), and an update is a compare-and-swap `replaceOne({_id, version})`.
//! - **Dates are BSON dates.** chrono's serde form is a string, which sorts only by accident; here
//!   every timestamp is written as a BSON date, so `{status, updated_at}` sorts by time. BSON dates
//!   hold milliseconds: stored timestamps are truncated to the millisecond (the embedded store does
//!   the same, so both stores return the same records). BSON has no unsigned integers: `version`
//!   and the counters are written as `Int64`.
//! - **Client JSON is stored as JSON text.** `body`, `next` and `response.body` hold whatever the
//!   client or the next hop sent, and not every JSON value is a valid BSON document: FerretDB
//!   refuses field names containing `.` or starting with `$` (MongoDB accepts some of them), and
//!   BSON has no integer above `i64::MAX`. Kept as strings, any JSON the service accepted is
//!   stored, on every server, exactly as the embedded store keeps it; nothing queries inside them.
//!
//! The document layout (`MongoRecord`, the BSON mapping) is in [`document`].

mod document;

use super::{Inserted, Store, StoreError};
use crate::saga::{SagaId, SagaRecord, Status};
use chrono::{DateTime, Utc};
use document::{from_document, to_document};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// MongoDB's error code for a unique-index violation.
const DUPLICATE_KEY: i32 = 11000;

/// Server error codes that mean "not now" rather than "never": the node is shutting down,
/// stepping down, unreachable from a router, or ran out of time. Retrying later can succeed.
const TRANSIENT_CODES: [i32; 13] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Name of the unique index on `key`.
pub const KEY_INDEX: &str = "key_unique";
/// Name of the re-driver's index on `{status: 1, updated_at: 1}`.
pub const STATUS_INDEX: &str = "status_updated_at";
/// How often [`MongoStore::list_due`](Store::list_due) also scans the records themselves.
pub const SWEEP_EVERY: Duration = Duration::from_secs(20);
/// The index the re-driver reads by: records with work left, earliest due first.
pub const DUE_INDEX: &str = "due_at";

/// One service's records in one MongoDB collection. Cloning is cheap and clones share the client
/// and the "indexes are created" state.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    records: Collection<Document>,
    /// `<collection>_due`: `{_id: saga id, due_at}` for each record the re-driver has work on.
    /// A hint, kept beside the records rather than found by a query on them: FerretDB v1 on
    /// SQLite pushes down no filter but `_id`, so "records due by now" would read and decode
    /// the whole collection on every poll (measured: 260 ms at 600 orders, and the database
    /// fell over under three pollers). Hints are written for `degraded` and `compensating`
    /// records only — a request that finishes normally writes none — and each is read back by
    /// `_id`; the record stays the truth (see [`MongoStore::due`]). A `pending` record gets
    /// work only when its request died, which a periodic sweep over the records finds.
    due: Collection<Document>,
    /// `<collection>_keys`: `{_id: idempotency key, saga_id}`, written after each insert, so
    /// replays find their record by two `_id` reads instead of a
    /// scan on `key` (same FerretDB limitation). The unique index on `key` stays the guard; a
    /// missing or stale entry falls back to the scan.
    keys: Collection<Document>,
    /// When the records were last swept for due work that has no hint.
    swept: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    indexes: Arc<OnceCell<()>>,
    op_timeout: Duration,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("db", &self.db.name())
            .field("collection", &self.records.name())
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl MongoStore {
    /// Builds a client for `uri` and a store on `db.collection`. Does not contact the server (a
    /// `mongodb+srv://` URI does need DNS), so it succeeds while the database is down; fails only
    /// on a URI the driver can't use. Server selection and connecting give up after `op_timeout`.
    pub async fn connect(
        uri: &str,
        db: &str,
        collection: &str,
        op_timeout: Duration,
    ) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(classify)?;
        options.server_selection_timeout = Some(op_timeout);
        options.connect_timeout = Some(op_timeout);
        if options.app_name.is_none() {
            options.app_name = Some("saga-breaker".into());
        }
        let client = Client::with_options(options).map_err(classify)?;
        Ok(Self::with_client(client, db, collection, op_timeout))
    }

    /// A store on `db.collection` over an existing client, so several services in one process
    /// can share one connection pool. The client's own timeouts apply to server selection;
    /// `op_timeout` still bounds each operation.
    pub fn with_client(
        client: Client,
        db: &str,
        collection: &str,
        op_timeout: Duration,
    ) -> MongoStore {
        let db = client.database(db);
        let records = db.collection::<Document>(collection);
        let due = db.collection::<Document>(&format!("{collection}_due"));
        let keys = db.collection::<Document>(&format!("{collection}_keys"));
        MongoStore {
            db,
            records,
            due,
            keys,
            swept: Arc::new(std::sync::Mutex::new(None)),
            indexes: Arc::new(OnceCell::new()),
            op_timeout,
        }
    }

    /// Drops this store's whole database (every collection in it, not only this store's).
    /// For throwaway databases, such as the one `saga simulate` makes per run.
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.bounded("dropDatabase", self.db.drop()).await
    }

    /// Runs one driver call under the backstop timer. The driver's own timeouts (server
    /// selection, connect) normally fire first with a better message; this catches a server
    /// that accepted the connection and then went silent.
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        self.bounded_raw(what, call).await?.map_err(classify)
    }

    /// [`Self::bounded`] that hands the driver's error back unclassified, for callers that
    /// treat some errors (a duplicate key) as an answer.
    async fn bounded_raw<T>(
        &self,
        what: &'static str,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>, StoreError> {
        let backstop = self.op_timeout.saturating_mul(2);
        tokio::time::timeout(backstop, call).await.map_err(|_| {
            StoreError::Unavailable(Box::new(TimedOut {
                what,
                after: backstop,
            }))
        })
    }

    /// Creates the indexes once per store; a failed attempt leaves the cell empty, so the next
    /// operation tries again. Concurrent first operations wait for the one attempt in flight, so
    /// no insert can run before the unique index exists.
    async fn ready(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                let key = IndexModel::builder()
                    .keys(doc! { "key": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(KEY_INDEX.to_string())
                            .unique(true)
                            .build(),
                    )
                    .build();
                let by_status = IndexModel::builder()
                    .keys(doc! { "status": 1, "updated_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(STATUS_INDEX.to_string())
                            .build(),
                    )
                    .build();
                let due = IndexModel::builder()
                    .keys(doc! { "due_at": 1 })
                    .options(IndexOptions::builder().name(DUE_INDEX.to_string()).build())
                    .build();
                // Create only what is missing: FerretDB v1 drops the connection (a server-side
                // panic) on a createIndexes whose indexes all exist already, i.e. on every
                // restart. An absent collection simply has no indexes yet.
                let existing = match self
                    .bounded_raw("listIndexes", self.records.list_index_names())
                    .await?
                {
                    Ok(names) => names,
                    Err(e) if is_namespace_not_found(&e) => Vec::new(),
                    Err(e) => return Err(classify(e)),
                };
                let missing: Vec<IndexModel> = [key, by_status, due]
                    .into_iter()
                    .filter(|m| {
                        let name = m.options.as_ref().and_then(|o| o.name.as_deref());
                        !name.is_some_and(|n| existing.iter().any(|e| e == n))
                    })
                    .collect();
                if !missing.is_empty() {
                    self.bounded("createIndexes", self.records.create_indexes(missing))
                        .await?;
                }
                tracing::info!(
                    db = self.db.name(),
                    collection = self.records.name(),
                    "indexes ready"
                );
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn find_one(&self, filter: Document) -> Result<Option<SagaRecord>, StoreError> {
        self.ready().await?;
        let found = self.bounded("find", self.records.find_one(filter)).await?;
        found.map(from_document).transpose()
    }

    /// Writes the due hint for a `degraded` or `compensating` `rec` *before* the record
    /// itself, so such a record never exists without one (a crash in between leaves a hint
    /// without a record, which [`MongoStore::due`] drops).
    async fn hint(&self, rec: &SagaRecord) -> Result<(), StoreError> {
        let Some(at) = rec.due_at else {
            return Ok(());
        };
        if !matches!(rec.status, Status::Degraded | Status::Compensating) {
            return Ok(());
        }
        let at = bson::DateTime::from_millis(at.timestamp_millis());
        let id = rec.saga_id.to_string();
        let upsert = || {
            self.due
                .update_one(doc! { "_id": &id }, doc! { "$set": { "due_at": at } })
                .upsert(true)
        };
        // Two upserts of one new `_id` at once: one inserts, the other gets E11000 (MongoDB
        // documents this); by then the hint exists, so once more is an update.
        match self.bounded_raw("update", upsert().into_future()).await? {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => self.bounded("update", upsert()).await.map(drop),
            Err(e) => Err(classify(e)),
        }
    }

    async fn unhint(&self, id: &SagaId) -> Result<(), StoreError> {
        let delete = self.due.delete_one(doc! { "_id": id.to_string() });
        self.bounded("delete", delete).await.map(drop)
    }

    async fn insert_record(&self, rec: &SagaRecord) -> Result<Inserted, StoreError> {
        self.ready().await?;
        self.hint(rec).await?;
        let document = to_document(rec)?;
        let inserted = self
            .bounded_raw("insert", self.records.insert_one(document))
            .await?;
        let error = match inserted {
            Ok(_) => {
                // Best effort (a missing entry falls back to the scan): one cheap `_id` write
                // now saves a whole-collection scan at this record's first replay.
                let entry = doc! { "_id": &rec.key, "saga_id": rec.saga_id.to_string() };
                let _ = self.bounded("insert", self.keys.insert_one(entry)).await;
                return Ok(Inserted::New);
            }
            Err(e) if is_duplicate_key(&e) => e,
            Err(e) => return Err(classify(e)),
        };
        // The key (or, by a bug, the id) is taken. The winner's insert is committed by the time
        // the server reports the conflict, so reading by key finds it.
        match self.by_key(&rec.key).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(StoreError::Backend(Box::new(error))),
        }
    }

    /// The record stored under `key`: through the key entry when there is a right one, else by
    /// scanning on `key` (and writing the entry for next time).
    async fn by_key(&self, key: &str) -> Result<Option<SagaRecord>, StoreError> {
        self.ready().await?;
        let entry = self
            .bounded("find", self.keys.find_one(doc! { "_id": key }))
            .await?;
        if let Some(id) = entry.as_ref().and_then(|e| e.get_str("saga_id").ok()) {
            if let Some(rec) = self.find_one(doc! { "_id": id }).await? {
                if rec.key == key {
                    return Ok(Some(rec));
                }
            }
        }
        let found = self.find_one(doc! { "key": key }).await?;
        if let Some(rec) = &found {
            let fix = self
                .keys
                .update_one(
                    doc! { "_id": key },
                    doc! { "$set": { "saga_id": rec.saga_id.to_string() } },
                )
                .upsert(true);
            let _ = self.bounded("update", fix).await;
        }
        Ok(found)
    }

    async fn replace_record(&self, rec: &SagaRecord, expected: u64) -> Result<bool, StoreError> {
        self.ready().await?;
        let next = expected
            .checked_add(1)
            .ok_or(StoreError::Backend(Box::new(VersionOverflow)))?;
        let mut document = to_document(rec)?;
        document.insert("version", to_i64(next)?);
        let filter = doc! { "_id": rec.saga_id.to_string(), "version": to_i64(expected)? };
        self.hint(rec).await?;
        let result = self
            .bounded("replaceOne", self.records.replace_one(filter, document))
            .await?;
        // A hint left behind by a record that finished is dropped by the next `due`.
        Ok(result.matched_count == 1)
    }

    async fn list(&self, statuses: &[Status], limit: usize) -> Result<Vec<SagaRecord>, StoreError> {
        // `limit(0)` means "no limit" to MongoDB; to callers it means none.
        if statuses.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.ready().await?;
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let find = self
            .records
            .find(doc! { "status": { "$in": names } })
            .sort(doc! { "updated_at": 1, "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let documents: Vec<Document> = self
            .bounded("find", async { find.await?.try_collect().await })
            .await?;
        documents.into_iter().map(from_document).collect()
    }

    /// Reads the hints due by `now`, then each record by `_id`, and trusts the record: a hint
    /// whose record is finished or gone is dropped, one whose record moved later is corrected.
    /// Every [`SWEEP_EVERY`] (and first) it also scans the records themselves for due work
    /// without a hint: `pending` records whose request died.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<SagaRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.ready().await?;
        let cutoff = bson::DateTime::from_millis(now.timestamp_millis());
        let find = self
            .due
            .find(doc! { "due_at": { "$lte": cutoff } })
            .sort(doc! { "due_at": 1, "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let hints: Vec<Document> = self
            .bounded("find", async { find.await?.try_collect().await })
            .await?;
        let mut due = Vec::with_capacity(hints.len());
        for hint in hints {
            let Ok(id) = hint.get_str("_id") else {
                continue;
            };
            let Ok(saga_id) = id.parse::<SagaId>() else {
                continue;
            };
            match self.find_one(doc! { "_id": id }).await? {
                Some(rec) if rec.due_at.is_some_and(|at| at <= now) => due.push(rec),
                Some(rec) if rec.due_at.is_some() => self.hint(&rec).await?,
                _ => self.unhint(&saga_id).await?,
            }
        }
        let sweep = {
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            let at = tokio::time::Instant::now();
            let go = swept.is_none_or(|last| at.duration_since(last) >= SWEEP_EVERY);
            if go {
                *swept = Some(at);
            }
            go
        };
        if sweep && due.len() < limit {
            let find = self
                .records
                .find(doc! { "due_at": { "$lte": cutoff } })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX));
            let documents: Vec<Document> = self
                .bounded("find", async { find.await?.try_collect().await })
                .await?;
            for rec in documents.into_iter().map(from_document) {
                let rec = rec?;
                if due.len() < limit && !due.iter().any(|d| d.saga_id == rec.saga_id) {
                    due.push(rec);
                }
            }
        }
        due.sort_by_key(|r| (r.due_at, r.saga_id));
        Ok(due)
    }

    async fn count_records(&self) -> Result<u64, StoreError> {
        self.ready().await?;
        self.bounded("count", self.records.count_documents(doc! {}))
            .await
    }

    async fn ping_server(&self) -> Result<(), StoreError> {
        self.ready().await?;
        self.bounded("ping", self.db.run_command(doc! { "ping": 1 }))
            .await
            .map(|_| ())
    }
}

impl Store for MongoStore {
    fn kind(&self) -> &'static str {
        "mongo"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.ping_server())
    }

    fn insert<'a>(&'a self, rec: &'a SagaRecord) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        Box::pin(self.insert_record(rec))
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(self.find_one(doc! { "_id": id.to_string() }))
    }

    fn get_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(self.by_key(key))
    }

    fn replace<'a>(
        &'a self,
        rec: &'a SagaRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.replace_record(rec, expected_version))
    }

    fn list_by_status<'a>(
        &'a self,
        statuses: &'a [Status],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(self.list(statuses, limit))
    }

    fn list_due<'a>(
        &'a self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(self.due(now, limit))
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.count_records())
    }
}

/// A driver call that outlived the backstop timer.
#[derive(Debug, thiserror::Error)]
#[error("{what} got no answer within {after:?}")]
struct TimedOut {
    what: &'static str,
    after: Duration,
}

/// `version` can't be bumped past what BSON's `Int64` holds.
#[derive(Debug, thiserror::Error)]
#[error("record version does not fit in BSON's Int64")]
struct VersionOverflow;

fn to_i64(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::Backend(Box::new(VersionOverflow)))
}

/// `NamespaceNotFound` (26): listing the indexes of a collection that does not exist yet.
fn is_namespace_not_found(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == 26)
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Sorts a driver error into "retry later" ([`StoreError::Unavailable`]: no server, network,
/// timeouts, a node stepping down) and everything else ([`StoreError::Backend`]).
fn classify(e: mongodb::error::Error) -> StoreError {
    let transient = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(c)) => TRANSIENT_CODES.contains(&c.code),
        _ => e.contains_label("RetryableWriteError"),
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}
