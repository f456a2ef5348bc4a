//! The store's indexes: created once per store, before its first operation, and only where the
//! server's queries can use them.

use super::errors::{bounded_raw, classify, is_namespace_not_found};
use super::MongoStore;
use crate::store::StoreError;
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

/// Name of the index on `saga_id` (`GET /<collection>/{id}` reads by it; every version of a
/// record carries its saga id, so it is not unique).
pub const SAGA_ID_INDEX: &str = "saga_id";
/// The index the re-driver's sweep reads by: records with work left, earliest due first.
pub const DUE_INDEX: &str = "due_at";

impl MongoStore {
    /// Creates the indexes once per store; a failed attempt leaves the cell empty, so the next
    /// operation tries again. Concurrent first operations wait for the one attempt in flight.
    ///
    /// On FerretDB v1 none are made: its PostgreSQL backend filters every field but `_id` with
    /// `@>`, which a B-tree index on the field can't serve, and its SQLite backend filters only
    /// `_id` in SQL. There an index on `saga_id` or `due_at` answers no query and costs every
    /// insert an index update (measured: about a tenth of an order's database time).
    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                if self.is_ferretdb_v1().await? {
                    tracing::info!(
                        db = self.db.name(),
                        collection = self.records.name(),
                        "FerretDB v1: no secondary indexes (its queries can't use them)"
                    );
                    return Ok(());
                }
                let index = |keys: Document, name: &str, unique: bool| {
                    IndexModel::builder()
                        .keys(keys)
                        .options(
                            IndexOptions::builder()
                                .name(name.to_string())
                                .unique(unique.then_some(true))
                                .build(),
                        )
                        .build()
                };
                let wanted = [
                    index(doc! { "saga_id": 1 }, SAGA_ID_INDEX, false),
                    index(doc! { "due_at": 1 }, DUE_INDEX, false),
                ];
                // Create only what is missing: FerretDB v1 drops the connection (a server-side
                // panic) on a createIndexes whose indexes all exist already, i.e. on every
                // restart. An absent collection simply has no indexes yet.
                let existing = match bounded_raw(
                    self.op_timeout,
                    "listIndexes",
                    self.records.list_index_names(),
                )
                .await?
                {
                    Ok(names) => names,
                    Err(e) if is_namespace_not_found(&e) => Vec::new(),
                    Err(e) => return Err(classify(e)),
                };
                let missing: Vec<IndexModel> = wanted
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

    /// Whether the server is FerretDB v1 (its `buildInfo` names its own version).
    async fn is_ferretdb_v1(&self) -> Result<bool, StoreError> {
        let info = self
            .bounded("buildInfo", self.db.run_command(doc! { "buildInfo": 1 }))
            .await?;
        Ok(info
            .get_str("ferretdbVersion")
            .is_ok_and(|v| v.starts_with("v1.")))
    }
}
