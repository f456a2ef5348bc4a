//! [`MongoStore`]: a service's records in one MongoDB collection (also runs on FerretDB).
//!
//! Shaped by six constraints:
//!
//! - **Few round trips.** Each command to the database costs milliseconds (3-7 ms to FerretDB),
//!   so a request's path sends as few as possible: a hop writes its record once when it accepts
//!   the request and once when it knows the outcome, reads nothing, and concurrent requests'
//!   writes travel together in one command ([`batch`]). The re-driver's poll reads its schedule
//!   from memory ([`due`]), so a quiet service sends nothing.
//! - **Every write is an insert.** A record's versions are documents: the version it was
//!   inserted at has the idempotency key as its `_id`, each later version `v` is a document of
//!   its own with `_id: "<key> <v>"` (keys are visible ASCII: no space). Writing version `v + 1`
//!   is inserting that `_id`, so a compare-and-swap is the database's own unique `_id` check —
//!   atomic on every server, where FerretDB v1's `update` reads and then writes (no atomic
//!   compare-and-swap), scans the collection for any filter but a lone `_id` on SQLite, and
//!   scans it for every filter on PostgreSQL (its `_id` index serves `=`, its filters use `@>`).
//!   Inserts are the one write FerretDB does without a scan, in one SQL transaction per command.
//!   The record is its newest version; the older ones stay, an audit trail of every state it
//!   was in. A later version leaves out what was fixed when the request was accepted (the
//!   request's body, fingerprint, id, count and creation time): its first version holds them.
//!   Reading a record by key reads its first version and then each next `_id` until one is
//!   missing (lone-`_id` reads, which every server answers from its index).
//! - **Start without the database.** [`MongoStore::connect`] only parses the URI and builds a
//!   [`Client`], which connects lazily; the service starts and reports not-ready instead of
//!   crash-looping. Server-selection and connect timeouts come from the caller's `op_timeout`, so
//!   an unreachable database fails an operation in about that long (not the driver's 30 s), and
//!   every operation is also bounded by a backstop timer in case a server accepts the connection
//!   and then never answers. The indexes are created on the first operation that reaches the
//!   server (and again on the next one if that failed), before anything is written.
//! - **Only single-document atomicity.** FerretDB v1 has no transactions; nothing here needs
//!   them: every write is one insert of one document, guarded by `_id`.
//! - **Durable when acknowledged.** Writes ask for `w: "majority", j: true` and reads for read
//!   concern `majority`: an answered request's record is on disk (journal) and on a majority of a
//!   replica set, and no read returns what a failover could roll back. On a standalone `mongod`
//!   `j: true` waits for the journal flush (up to its commit interval, 100 ms by default, less
//!   under group commit); without it an acknowledged write could be lost in a crash.
//! - **Dates are BSON dates; client JSON is JSON text.** See [`document`] for the layout.

mod batch;
mod document;
mod due;
mod errors;
mod indexes;

use super::{Inserted, Store, StoreError};
use crate::saga::{SagaId, SagaRecord, Status};
use batch::Writer;
use chrono::{DateTime, Utc};
use document::{decode, to_document, to_later_document, Stored};
use due::{Known, Schedule};
use errors::{bounded_raw, classify, to_i64, VersionOverflow};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Document};
use mongodb::options::{Acknowledgment, ClientOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, Database};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

pub use batch::{MAX_BATCH, MAX_FLUSHES, MAX_QUEUED};
pub use due::SWEEP_EVERY;
pub use indexes::{DUE_INDEX, SAGA_ID_INDEX};

/// One service's records in one MongoDB collection. Cloning is cheap and clones share the
/// client, the write queue, the schedule and the "indexes are created" state.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    records: Collection<Document>,
    writes: Writer,
    schedule: Arc<Schedule>,
    known: Arc<Known>,
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
    /// Reads use read concern `majority` and writes `w: majority, j: true` unless the URI says
    /// otherwise.
    pub async fn connect(
        uri: &str,
        db: &str,
        collection: &str,
        op_timeout: Duration,
    ) -> Result<MongoStore, StoreError> {
        // The driver's message may quote the connection string, password and all.
        let mut options = ClientOptions::parse(uri).await.map_err(|e| {
            StoreError::Backend(
                format!(
                    "MONGO_URL {} is not a usable connection string: {}",
                    crate::env::redact_url(uri),
                    crate::env::scrub(&e.to_string(), uri)
                )
                .into(),
            )
        })?;
        options.server_selection_timeout = Some(op_timeout);
        options.connect_timeout = Some(op_timeout);
        if options.app_name.is_none() {
            options.app_name = Some("saga-breaker".into());
        }
        if options.read_concern.is_none() {
            options.read_concern = Some(ReadConcern::majority());
        }
        if options.write_concern.is_none() {
            options.write_concern = Some(durable());
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
        MongoStore {
            writes: Writer::new(db.clone(), records.clone(), op_timeout),
            db,
            records,
            schedule: Arc::new(Schedule::default()),
            known: Arc::new(Known::default()),
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
        bounded_raw(self.op_timeout, what, call)
            .await?
            .map_err(classify)
    }

    /// The document stored under `_id: id`, decoded.
    async fn find_id(&self, id: String) -> Result<Option<Stored>, StoreError> {
        self.ready().await?;
        let found = self
            .bounded("find", self.records.find_one(doc! { "_id": id }))
            .await?;
        found.map(decode).transpose()
    }

    async fn find_many(&self, filter: Document) -> Result<Vec<Document>, StoreError> {
        let find = self.records.find(filter);
        self.bounded("find", async { find.await?.try_collect().await })
            .await
    }

    /// Remembers what `rec`, just written or read, leaves for the re-driver, and (while it is
    /// not terminal) that its version is stored.
    fn note(&self, rec: &SagaRecord) {
        self.note_version(rec, rec.version);
    }

    /// [`Self::note`] for `rec` stored as version `v`.
    fn note_version(&self, rec: &SagaRecord, v: u64) {
        let at = rec.due_at.filter(|_| !rec.status.is_terminal());
        self.schedule.set(&rec.key, at);
        if rec.status.is_terminal() {
            self.known.forget(&rec.key);
        } else {
            self.known.set(rec, v);
        }
    }

    async fn insert_record(&self, rec: &SagaRecord) -> Result<Inserted, StoreError> {
        check_key(&rec.key)?;
        self.ready().await?;
        let doc = first_version(rec)?;
        match self.writes.insert(rec.key.clone(), doc).await? {
            batch::Inserted::New => {
                self.note(rec);
                Ok(Inserted::New)
            }
            batch::Inserted::Taken => match self.latest(&rec.key).await? {
                Some(existing) => {
                    self.note(&existing);
                    Ok(Inserted::Existing(existing))
                }
                None => Err(StoreError::Backend(Box::new(Missing(rec.key.clone())))),
            },
        }
    }

    /// Writes `rec` as version `expected + 1`: an insert of that version's `_id`, which only
    /// one writer can make.
    async fn replace_record(&self, rec: &SagaRecord, expected: u64) -> Result<bool, StoreError> {
        check_key(&rec.key)?;
        self.ready().await?;
        let next = expected
            .checked_add(1)
            .ok_or(StoreError::Backend(Box::new(VersionOverflow)))?;
        let mut doc = to_later_document(rec)?;
        doc.insert("version", to_i64(next)?);
        // Version `expected` must exist for `expected + 1` to follow it. This process knows
        // the versions it wrote or read itself (a request's own record, on the happy path);
        // anything else is checked by reading it.
        if !self.known.is(&rec.key, expected) && !self.has_version(&rec.key, expected).await? {
            return Ok(false);
        }
        let id = version_id(&rec.key, next);
        match self.writes.insert(id, doc).await? {
            batch::Inserted::New => {
                self.note_version(rec, next);
                Ok(true)
            }
            batch::Inserted::Taken => {
                // Someone else moved it on: what this process remembers is stale.
                self.known.forget(&rec.key);
                Ok(false)
            }
        }
    }

    /// Whether version `v` of the record under `key` is stored.
    async fn has_version(&self, key: &str, v: u64) -> Result<bool, StoreError> {
        if self.find_id(version_id(key, v)).await?.is_some() {
            return Ok(true);
        }
        let first = self.find_id(key.to_owned()).await?;
        Ok(first.is_some_and(|stored| stored.version() == v))
    }

    /// The newest version of the record under `key`: its first version, then each next `_id`
    /// until one is missing (a later version takes the accepted fields from the first).
    async fn latest(&self, key: &str) -> Result<Option<SagaRecord>, StoreError> {
        let Some(first) = self.find_id(key.to_owned()).await? else {
            return Ok(None);
        };
        let first = first.into_record(None)?;
        let mut newest = None;
        let mut next = first.version.saturating_add(1);
        while let Some(newer) = self.find_id(version_id(key, next)).await? {
            next = newer.version().saturating_add(1);
            newest = Some(newer);
        }
        match newest {
            Some(newest) => newest.into_record(Some(&first)).map(Some),
            None => Ok(Some(first)),
        }
    }

    /// The record with this saga id. A record stored without a client key has its saga id as
    /// its key, so `_id` finds it at once; other records are found through the `saga_id` index
    /// (every version carries it; the newest wins).
    async fn by_saga_id(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        let text = id.to_string();
        if let Some(rec) = self.latest(&text).await? {
            if rec.saga_id == *id {
                return Ok(Some(rec));
            }
        }
        // Every version of one record carries its saga id: the newest of them.
        let found = self.all_records(doc! { "saga_id": &text }).await?;
        Ok(found.into_iter().next())
    }

    /// The records `filter` matches, newest version each, decoded from one read (plus a read
    /// of the first version of a record whose first version the filter did not match).
    async fn all_records(&self, filter: Document) -> Result<Vec<SagaRecord>, StoreError> {
        self.ready().await?;
        let docs = self.find_many(filter).await?;
        let mut firsts: HashMap<String, SagaRecord> = HashMap::new();
        let mut later: HashMap<String, Stored> = HashMap::new();
        for doc in docs {
            let stored = decode(doc)?;
            if stored.is_first() {
                firsts.insert(stored.key().to_owned(), stored.into_record(None)?);
                continue;
            }
            keep_newest(&mut later, stored);
        }
        let mut records = Vec::with_capacity(firsts.len().max(later.len()));
        for (key, stored) in later {
            let first = match firsts.remove(&key) {
                Some(first) => first,
                None => match self.find_id(key.clone()).await? {
                    Some(first) => first.into_record(None)?,
                    None => return Err(StoreError::Backend(Box::new(Missing(key)))),
                },
            };
            records.push(stored.into_record(Some(&first))?);
        }
        records.extend(firsts.into_values());
        Ok(records)
    }

    async fn list(&self, statuses: &[Status], limit: usize) -> Result<Vec<SagaRecord>, StoreError> {
        if statuses.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut recs: Vec<SagaRecord> = self
            .all_records(doc! {})
            .await?
            .into_iter()
            .filter(|r| statuses.contains(&r.status))
            .collect();
        recs.sort_by(|a, b| (a.updated_at, &a.key).cmp(&(b.updated_at, &b.key)));
        recs.truncate(limit);
        Ok(recs)
    }

    /// What the re-driver should take up: the keys the schedule says are due, each as this
    /// process stored it last or else read by `_id` (nothing is sent when nothing is due), and
    /// trusted as stored. At the first poll and
    /// every [`SWEEP_EVERY`] the records are also scanned for work another process left.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<SagaRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.schedule.sweep_now() {
            if let Err(e) = self.sweep().await {
                self.schedule.sweep_failed();
                return Err(e);
            }
        }
        let keys = self.schedule.due(now, limit);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.ready().await?;
        // A record this process stored last needs no read (see `Known`). Those are not read, so
        // the server is asked whether it is there (one `ping`, no scan): a re-driver must pause
        // while the database is away, not call the next hop with work it can't record. The
        // other keys' reads find that out themselves.
        let (remembered, unknown): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .map(|key| (self.known.record(&key), key))
            .partition(|(rec, _)| rec.is_some());
        if !remembered.is_empty() {
            self.ping_server().await?;
        }
        let reads = unknown.into_iter().map(|(_, key)| async move {
            match self.latest(&key).await {
                Ok(rec) => Ok((key, rec)),
                // One undecodable record must not stop the re-driver for all the others.
                Err(StoreError::Corrupt(e)) => {
                    super::unreadable("mongo", &e);
                    Ok((key, None))
                }
                Err(e) => Err(e),
            }
        });
        let read = futures::future::try_join_all(reads).await?;
        let mut due = Vec::with_capacity(remembered.len() + read.len());
        let remembered = remembered.into_iter().map(|(rec, key)| (key, rec));
        for (key, rec) in remembered.chain(read) {
            match rec {
                Some(rec)
                    if rec.due_at.is_some_and(|at| at <= now) && !rec.status.is_terminal() =>
                {
                    due.push(rec)
                }
                Some(rec) => self.note(&rec),
                None => self.schedule.set(&key, None),
            }
        }
        due.sort_by_key(|r| (r.due_at, r.saga_id));
        Ok(due)
    }

    /// Reads every record version with a `due_at` into the schedule, the newest seen of each
    /// record winning (an older version's `due_at` is corrected by the next poll, which reads
    /// the newest).
    async fn sweep(&self) -> Result<(), StoreError> {
        self.ready().await?;
        let epoch = bson::DateTime::from_millis(0);
        let docs = self.find_many(doc! { "due_at": { "$gte": epoch } }).await?;
        let mut newest = HashMap::new();
        for doc in docs {
            match decode(doc) {
                Ok(stored) => keep_newest(&mut newest, stored),
                Err(e) => {
                    tracing::error!(error = %e, "a record with work left can't be read; skipped")
                }
            }
        }
        for (key, stored) in newest {
            self.schedule.set(&key, stored.due_at());
        }
        Ok(())
    }

    async fn count_records(&self) -> Result<u64, StoreError> {
        self.ready().await?;
        self.bounded("count", self.records.count_documents(doc! { FIRST: true }))
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
        Box::pin(self.by_saga_id(id))
    }

    fn get_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(self.latest(key))
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

/// Keeps `stored` in `newest` unless a newer version of its record is there already.
fn keep_newest(newest: &mut HashMap<String, Stored>, stored: Stored) {
    if newest
        .get(stored.key())
        .is_none_or(|kept| kept.version() < stored.version())
    {
        newest.insert(stored.key().to_owned(), stored);
    }
}

/// The field that marks a record's first version (one per record: what `count` counts).
pub const FIRST: &str = "first";

/// The `_id` of a record's version `v` after its first.
fn version_id(key: &str, v: u64) -> String {
    format!("{key} {v}")
}

/// `rec` as its first version's document.
fn first_version(rec: &SagaRecord) -> Result<Document, StoreError> {
    let mut doc = to_document(rec)?;
    doc.insert(FIRST, true);
    Ok(doc)
}

/// Keys are the `_id` of a record's first version and the prefix of the later ones', which a
/// space separates: a key must not hold one (keys from HTTP are visible ASCII).
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.contains(' ') {
        return Err(StoreError::Backend(Box::new(BadKey(key.to_owned()))));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error(
    "a key must not contain a space (MongoStore names record versions \"<key> <version>\"): {0:?}"
)]
struct BadKey(String);

#[derive(Debug, thiserror::Error)]
#[error("the key {0:?} was reported taken, but no record is stored under it")]
struct Missing(String);

/// `w: majority, j: true`: acknowledged means on disk on a majority.
fn durable() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}
