//! Where records live ([`StoreConfig`]), read from `MONGO_URL`, `MONGO_DB`, `MONGO_TIMEOUT_MS`
//! and `DATA_DIR`, and the one way to open a [`Store`] from it.
//!
//! The services, `saga verify` and `saga simulate` all reach their records through
//! [`StoreConfig::open`], so the choice between MongoDB and the embedded store, the timeout that
//! makes a dead database fail fast, and the data directory's creation are decided once, here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{EmbeddedStore, MongoStore, Store, StoreError};
use crate::env::Reader;

/// Where records live.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// `MONGO_URL` set: MongoDB (or anything speaking its wire protocol, e.g. FerretDB).
    Mongo {
        url: String,
        db: String,
        /// Server selection / connect / operation budget, so a dead database fails fast (503).
        timeout: Duration,
    },
    /// `MONGO_URL` unset: an embedded redb file under `DATA_DIR`.
    Embedded { data_dir: PathBuf },
}

impl StoreConfig {
    /// `MONGO_DB` unless set.
    pub const DEFAULT_DB: &'static str = "saga";
    /// `MONGO_TIMEOUT_MS` unless set.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `DATA_DIR` unless set.
    pub const DEFAULT_DATA_DIR: &'static str = "./data";

    /// MongoDB at `url`, database `db`, with the default timeout.
    pub fn mongo(url: impl Into<String>, db: impl Into<String>) -> Self {
        Self::Mongo {
            url: url.into(),
            db: db.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The embedded store, one redb file per collection under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self::Embedded {
            data_dir: data_dir.into(),
        }
    }

    /// `MONGO_URL` (a `mongodb://` or `mongodb+srv://` string) with `MONGO_DB` and
    /// `MONGO_TIMEOUT_MS`; or, with no `MONGO_URL`, `DATA_DIR`.
    pub fn read(r: &mut Reader<'_>) -> Self {
        match r.raw("MONGO_URL") {
            Some(url) if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") => {
                Self::Mongo {
                    url,
                    db: r.string("MONGO_DB", Self::DEFAULT_DB),
                    timeout: r.millis("MONGO_TIMEOUT_MS", Self::DEFAULT_TIMEOUT, 50, 120_000),
                }
            }
            Some(url) => {
                r.reject(
                    "MONGO_URL",
                    crate::env::redact_url(&url),
                    "a mongodb:// or mongodb+srv:// connection string",
                );
                Self::embedded(PathBuf::new())
            }
            None => Self::embedded(r.string("DATA_DIR", Self::DEFAULT_DATA_DIR)),
        }
    }

    /// The store of `collection`: a MongoDB client (which connects lazily, so this succeeds
    /// while the database is down), or the embedded file, creating the data directory first.
    /// Opening the embedded store blocks briefly on file I/O: call it at start-up.
    pub async fn open(&self, collection: &str) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Mongo { url, db, timeout } => {
                Arc::new(MongoStore::connect(url, db, collection, *timeout).await?)
            }
            Self::Embedded { data_dir } => {
                create_data_dir(data_dir)?;
                Arc::new(EmbeddedStore::open(data_dir, collection)?)
            }
        })
    }

    /// With MongoDB, drops the whole database and every collection in it: for throwaway
    /// databases, such as the one `saga simulate` makes per run. The embedded store's files
    /// are its directory's, which belongs to the caller: nothing is dropped.
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        match self {
            Self::Mongo { url, db, timeout } => {
                // The collection is only a handle: dropping the database drops them all.
                let store = MongoStore::connect(url, db, "orders", *timeout).await?;
                store.drop_database().await
            }
            Self::Embedded { .. } => Ok(()),
        }
    }
}

/// `DATA_DIR` could not be created.
#[derive(Debug, thiserror::Error)]
#[error("can't create DATA_DIR {}: {source}", path.display())]
struct DataDirError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn create_data_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(|source| {
        StoreError::Backend(Box::new(DataDirError {
            path: path.to_path_buf(),
            source,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::SagaRecord;
    use crate::store::Inserted;

    #[tokio::test]
    async fn an_unusable_mongo_url_fails_without_printing_its_password() {
        for url in [
            "mongodb://admin:hunter2@",
            "mongodb://admin:hunter2@db:notaport/",
        ] {
            let cfg = StoreConfig::mongo(url, "x");
            let Err(err) = cfg.open("orders").await else {
                panic!("{url} opened");
            };
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[tokio::test]
    async fn open_creates_the_data_dir_and_an_embedded_store_in_it() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().join("nested").join("data");
        let store = StoreConfig::embedded(&dir)
            .open("orders")
            .await
            .expect("opens");
        assert_eq!(store.kind(), "embedded");
        assert!(dir.join("orders.redb").is_file());
        let rec =
            SagaRecord::accepted("k".into(), "f".into(), "1".into(), 1, serde_json::json!({}));
        assert_eq!(store.insert(&rec).await.expect("inserts"), Inserted::New);
        assert_eq!(store.count().await.expect("counts"), 1);
    }

    #[tokio::test]
    async fn a_data_dir_that_cannot_be_created_names_data_dir() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("writes");
        let err = match StoreConfig::embedded(file.join("data"))
            .open("orders")
            .await
        {
            Ok(_) => panic!("a directory under a file can't be created"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("can't create DATA_DIR"), "{err}");
    }

    #[test]
    fn mongo_takes_the_default_timeout() {
        assert_eq!(
            StoreConfig::mongo("mongodb://db:27017", "x"),
            StoreConfig::Mongo {
                url: "mongodb://db:27017".into(),
                db: "x".into(),
                timeout: StoreConfig::DEFAULT_TIMEOUT,
            }
        );
    }
}
