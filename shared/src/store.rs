//! Persistence: one [`Store`] per service, holding that service's [`SagaRecord`]s.
//!
//! Two implementations behind one trait: [`MongoStore`] (the official `mongodb` crate; runs on
//! MongoDB and FerretDB) and [`EmbeddedStore`] (redb, a file under `DATA_DIR`, used when
//! `MONGO_URL` is unset). Both offer only single-document atomic operations — insert-or-return by
//! unique key, and compare-and-swap on `version` — because FerretDB has no multi-document
//! transactions and because nothing more is needed. One contract test suite runs against both.

pub mod config;
pub mod embedded;
pub mod mongo;

pub use config::StoreConfig;
pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;

use crate::saga::{SagaId, SagaRecord, Status};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

/// What an insert did. (Not boxed: it is matched right after the one insert that made it.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The record is new and now stored.
    New,
    /// A record with the same `key` already existed; here it is (nothing was written).
    Existing(SagaRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database can't be reached or didn't answer in time: nothing was written, retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database answered with an error we can't recover from.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored document could not be decoded into a record.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// A service's records. Implementations are cheap to clone-by-`Arc` and safe to share.
pub trait Store: Send + Sync + 'static {
    /// `"mongo"` or `"embedded"`, for logs and `/ready`.
    fn kind(&self) -> &'static str;

    /// Succeeds when the database answers (and start-up work such as index creation is done).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Stores `rec` unless a record with the same `key` exists, in which case that one is
    /// returned and nothing is written. Atomic: 50 concurrent inserts with one key store one.
    fn insert<'a>(&'a self, rec: &'a SagaRecord) -> BoxFuture<'a, Result<Inserted, StoreError>>;

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>>;

    fn get_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>>;

    /// Replaces the stored record with `rec` (same `saga_id`) if the stored `version` is still
    /// `expected_version`; the stored copy gets `version = expected_version + 1`, and so does
    /// nothing else. Returns `false` (and writes nothing) when someone else wrote first.
    ///
    /// What was fixed when the request was accepted (key, saga id, fingerprint, `id`, `count`,
    /// `body`, `created_at`) is the record's identity and never changes: a store may keep the
    /// inserted values and write only the rest (the MongoDB store's later versions do).
    fn replace<'a>(
        &'a self,
        rec: &'a SagaRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records whose status is one of `statuses`, oldest `updated_at` first, at most `limit`.
    fn list_by_status<'a>(
        &'a self,
        statuses: &'a [Status],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// Records whose `due_at` is at or before `now`, earliest first, at most `limit`: what the
    /// re-driver should take up next. Terminal records have no `due_at` and never appear. A
    /// `pending` record (its request died before answering) may show up late: `MongoStore`
    /// finds those by a sweep every `SWEEP_EVERY` rather than paying a write per request.
    fn list_due<'a>(
        &'a self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// How many records are stored.
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// A stored record that can't be decoded, met while listing due work: logged and counted
/// (`saga_records_unreadable_total{store}`), then skipped, so one bad record never stops the
/// re-driver for every other.
pub(crate) fn unreadable(store: &'static str, error: &str) {
    metrics::counter!("saga_records_unreadable_total", "store" => store).increment(1);
    tracing::error!(store, error, "a due record can't be read; skipped");
}
