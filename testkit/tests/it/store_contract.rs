//! The `Store` contract, run against every implementation.
//!
//! Each behaviour is one async fn in [`behaviour`] that takes an `Arc<dyn Store>`; the
//! `contract_suite!` macro turns the whole list into `#[tokio::test]`s inside a module per store,
//! so a failure reads `mongo::replace_bumps_version` and no behaviour can be written for one store
//! and forgotten for the other. The embedded store gets a temp dir per test, MongoDB a fresh
//! database per test (`MONGODB_URI`, else testcontainers; skipped outside CI when neither works).
//! Tests that only make sense for one store live beside the suite in that store's module.

use shared::saga::{Fallback, HistoryEvent, SagaId, SagaRecord, SavedResponse, Status};
use shared::store::{Inserted, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Generous: FerretDB on SQLite under fifty concurrent inserts is not fast.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A store for one test, and what keeps its data alive (and cleans it up).
struct Harness {
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Mongo {
        db: mongodb::Database,
        _server: Box<testkit::mongo::MongoServer>,
    },
}

impl Harness {
    async fn teardown(self) {
        drop(self.store);
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Mongo { db, _server } => {
                if let Err(e) = db.drop().await {
                    eprintln!("could not drop test database {}: {e}", db.name());
                }
            }
        }
    }
}

/// Defines one `#[tokio::test]` per contract behaviour, each on a fresh store from `$harness`.
macro_rules! contract_suite {
    ($harness:path) => {
        contract_suite!(@tests $harness;
            insert_then_get_roundtrips_every_field,
            insert_then_get_roundtrips_any_json_payload,
            insert_with_existing_key_returns_the_stored_record_and_writes_nothing,
            fifty_concurrent_inserts_with_one_key_store_one,
            replace_with_stale_version_is_refused,
            replace_bumps_version,
            list_by_status_returns_oldest_first_and_respects_limit,
            list_due_returns_what_is_due_earliest_first_and_follows_replace,
            get_unknown_is_none,
            count_counts,
        );
    };
    (@tests $harness:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(harness) = $harness(stringify!($name)).await else {
                    eprintln!("skipped: no MongoDB");
                    return;
                };
                crate::store_contract::behaviour::$name(Arc::clone(&harness.store)).await;
                harness.teardown().await;
            }
        )+
    };
}

mod embedded {
    use super::*;
    use shared::store::EmbeddedStore;

    async fn harness(_test: &str) -> Option<Harness> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = EmbeddedStore::open(dir.path(), "records").expect("open the embedded store");
        Some(Harness {
            store: Arc::new(store),
            cleanup: Cleanup::Dir(dir),
        })
    }

    contract_suite!(harness);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_after_drop_keeps_records() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = record("reopen-a");
        let second = record("reopen-b");
        let mut moved = first.clone();
        moved
            .transition(Status::Degraded, "forward", "open")
            .expect("pending may degrade");
        {
            let store = EmbeddedStore::open(dir.path(), "orders").expect("open");
            assert_eq!(store.insert(&first).await.expect("insert"), Inserted::New);
            assert_eq!(store.insert(&second).await.expect("insert"), Inserted::New);
            assert!(store.replace(&moved, 0).await.expect("replace"));
        }

        let store = EmbeddedStore::open(dir.path(), "orders").expect("reopen");
        let mut expected = stored_form(&moved);
        expected.version = 1;
        let got = store.get(&first.saga_id).await.expect("get");
        assert_eq!(got, Some(expected.clone()));
        let got = store.get_by_key("reopen-b").await.expect("get_by_key");
        assert_eq!(got, Some(stored_form(&second)));
        assert_eq!(store.count().await.expect("count"), 2);
        let listed = store
            .list_by_status(&[Status::Degraded], 10)
            .await
            .expect("list");
        assert_eq!(listed, vec![expected]);
        let again = store.insert(&record("reopen-b")).await.expect("insert");
        assert_eq!(again, Inserted::Existing(stored_form(&second)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collections_open_side_by_side_in_one_process_stay_separate() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let orders = EmbeddedStore::open(dir.path(), "orders").expect("open orders");
        let payments = EmbeddedStore::open(dir.path(), "payments").expect("open payments");
        let rec = record("same-key");
        assert_eq!(orders.insert(&rec).await.expect("insert"), Inserted::New);
        assert_eq!(
            payments.insert(&record("same-key")).await.expect("insert"),
            Inserted::New
        );
        assert_eq!(orders.count().await.expect("count"), 1);
        assert_eq!(payments.count().await.expect("count"), 1);
        assert_eq!(payments.get(&rec.saga_id).await.expect("get"), None);
    }
}

mod mongo {
    use super::*;
    use mongodb::bson::{doc, Bson, Document};
    use shared::store::MongoStore;
    use testkit::mongo::unique_db_name;

    async fn harness(test: &str) -> Option<Harness> {
        let server = testkit::mongo::mongo().await?;
        let client = mongodb::Client::with_uri_str(server.uri())
            .await
            .expect("a client for the test server");
        let db_name = unique_db_name(test);
        let store = MongoStore::with_client(client.clone(), &db_name, "records", OP_TIMEOUT);
        Some(Harness {
            store: Arc::new(store),
            cleanup: Cleanup::Mongo {
                db: client.database(&db_name),
                _server: Box::new(server),
            },
        })
    }

    contract_suite!(harness);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_server_is_unavailable_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let uri = format!("mongodb://127.0.0.1:{port}/");
        let store = MongoStore::connect(&uri, "unreachable", "records", Duration::from_millis(500))
            .await
            .expect("connect must succeed without a server");

        // The guard only keeps a regression (the driver's 30 s default) from hanging the run.
        let guard = Duration::from_secs(10);
        let ping = tokio::time::timeout(guard, store.ping())
            .await
            .expect("ping gave up within op_timeout");
        assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
        let insert = tokio::time::timeout(guard, store.insert(&record("k")))
            .await
            .expect("insert gave up within op_timeout");
        assert!(
            matches!(insert, Err(StoreError::Unavailable(_))),
            "{insert:?}"
        );
    }

    /// A restarted service opens a store on a collection whose indexes exist already (FerretDB
    /// v1 used to drop the connection on the repeated createIndexes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_store_on_an_existing_collection_gets_ready() {
        let Some(server) = testkit::mongo::mongo().await else {
            eprintln!("skipped: no MongoDB");
            return;
        };
        let db_name = unique_db_name("second_store");
        let first = MongoStore::connect(server.uri(), &db_name, "records", OP_TIMEOUT)
            .await
            .expect("connect");
        first.ping().await.expect("the first store gets ready");
        drop(first);
        let second = MongoStore::connect(server.uri(), &db_name, "records", OP_TIMEOUT)
            .await
            .expect("connect");
        second
            .ping()
            .await
            .expect("a store on an existing collection gets ready");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexes_exist_after_ping() {
        let Some(harness) = harness("indexes_exist_after_ping").await else {
            eprintln!("skipped: no MongoDB");
            return;
        };
        harness.store.ping().await.expect("ping");
        // A record, so the collection exists even where no index was made.
        harness.store.insert(&record("k")).await.expect("insert");
        let Cleanup::Mongo { db, .. } = &harness.cleanup else {
            unreachable!("the mongo harness cleans up a database");
        };
        let indexes = list_indexes(db).await;
        let on = |fields: &[&str]| {
            indexes
                .iter()
                .find(|index| is_ascending_on(&index.keys, fields))
                .cloned()
        };
        // The key is the `_id` of a record's first version (unique by itself); the saga id,
        // carried by every version, has an index for `GET /<collection>/{id}`, and `due_at` one
        // for the re-driver's sweep. FerretDB v1's queries can't use either, so there are none.
        let wanted = !is_ferretdb_v1(db).await;
        assert_eq!(
            on(&["saga_id"]).is_some(),
            wanted,
            "index on saga_id wanted: {wanted}, in {indexes:?}"
        );
        assert_eq!(
            on(&["due_at"]).is_some(),
            wanted,
            "index on due_at wanted: {wanted}, in {indexes:?}"
        );
        harness.teardown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_itself_refuses_a_second_record_with_one_key() {
        let Some(harness) = harness("db_refuses_duplicate_key").await else {
            eprintln!("skipped: no MongoDB");
            return;
        };
        harness.store.ping().await.expect("ping");
        let Cleanup::Mongo { db, .. } = &harness.cleanup else {
            unreachable!("the mongo harness cleans up a database");
        };
        // Bypass the store: write straight through the driver. The key is the `_id`.
        let raw = db.collection::<Document>("records");
        raw.insert_one(doc! { "_id": "same", "saga_id": "a" })
            .await
            .expect("first insert");
        let second = raw.insert_one(doc! { "_id": "same", "saga_id": "b" }).await;
        let code = match second.as_ref().map_err(|e| e.kind.as_ref()) {
            Err(mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w))) => {
                Some(w.code)
            }
            _ => None,
        };
        assert_eq!(code, Some(11000), "{second:?}");
        harness.teardown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timestamps_are_bson_dates_and_counters_int64() {
        let Some(harness) = harness("timestamps_are_bson_dates").await else {
            eprintln!("skipped: no MongoDB");
            return;
        };
        let rec = record("typed");
        harness.store.insert(&rec).await.expect("insert");

        let Cleanup::Mongo { db, .. } = &harness.cleanup else {
            unreachable!("the mongo harness cleans up a database");
        };
        let raw = db
            .collection::<Document>("records")
            .find_one(doc! { "_id": &rec.key })
            .await
            .expect("find")
            .expect("the record is stored under its key");
        let at = |path: &[&str]| {
            let mut value = Bson::Document(raw.clone());
            for step in path {
                value = match value {
                    Bson::Document(d) => d.get(*step).cloned().unwrap_or(Bson::Null),
                    Bson::Array(a) => step
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| a.get(i).cloned())
                        .unwrap_or(Bson::Null),
                    _ => Bson::Null,
                };
            }
            value
        };
        let millis = rec.updated_at.timestamp_millis();
        assert_eq!(
            at(&["updated_at"]),
            Bson::DateTime(mongodb::bson::DateTime::from_millis(millis)),
            "{raw}"
        );
        assert!(matches!(at(&["created_at"]), Bson::DateTime(_)), "{raw}");
        assert!(
            matches!(at(&["history", "0", "at"]), Bson::DateTime(_)),
            "{raw}"
        );
        assert_eq!(at(&["version"]), Bson::Int64(0), "{raw}");
        assert_eq!(at(&["count"]), Bson::Int64(1), "{raw}");
        harness.teardown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_started_before_its_server_becomes_ready_when_the_server_comes_up() {
        let Some(server) = testkit::mongo::mongo().await else {
            eprintln!("skipped: no MongoDB");
            return;
        };
        let Some(upstream) = single_host(server.uri()) else {
            eprintln!(
                "skipped: {} is not a plain mongodb://host:port URI",
                server.uri()
            );
            return;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("the port").port();
        drop(listener);
        let db_name = unique_db_name("ready_when_server_comes_up");
        let uri = format!("mongodb://127.0.0.1:{port}/");
        let store = MongoStore::connect(&uri, &db_name, "records", Duration::from_secs(1))
            .await
            .expect("connect must succeed without a server");
        let down = store.ping().await;
        assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");

        // The "server" appears: a proxy on the same port to the real one.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port is still free");
        let proxy = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });

        // The driver notices within its heartbeat; a service's /ready would poll like this.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let up = loop {
            let ping = store.ping().await;
            if ping.is_ok() || tokio::time::Instant::now() > deadline {
                break ping;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(up.is_ok(), "{up:?}");
        assert_eq!(
            store.insert(&record("k")).await.expect("insert"),
            Inserted::New
        );

        let client = mongodb::Client::with_uri_str(server.uri())
            .await
            .expect("a client");
        let db = client.database(&db_name);
        let indexes = list_indexes(&db).await;
        assert_eq!(
            indexes
                .iter()
                .any(|i| is_ascending_on(&i.keys, &["saga_id"])),
            !is_ferretdb_v1(&db).await,
            "the indexes were created on the late first contact (none on FerretDB v1): {indexes:?}"
        );
        drop_db(db).await;
        proxy.abort();
    }

    /// `host:port` of a `mongodb://host:port/` URI with nothing else in it.
    fn single_host(uri: &str) -> Option<String> {
        let rest = uri.strip_prefix("mongodb://")?;
        let host = rest.split(['/', '?']).next()?;
        let plain = !host.is_empty() && !host.contains([',', '@']);
        plain.then(|| {
            if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:27017")
            }
        })
    }

    /// `keys` is exactly `fields`, in order, each ascending (servers answer 1 as int or double).
    fn is_ascending_on(keys: &Document, fields: &[&str]) -> bool {
        let one = |v: &Bson| match v {
            Bson::Int32(n) => *n == 1,
            Bson::Int64(n) => *n == 1,
            Bson::Double(n) => *n == 1.0,
            _ => false,
        };
        keys.len() == fields.len()
            && keys
                .iter()
                .zip(fields)
                .all(|((name, value), field)| name == field && one(value))
    }

    /// Whether the server is FerretDB v1 (whose queries use no index but `_id`'s).
    async fn is_ferretdb_v1(db: &mongodb::Database) -> bool {
        let info = db
            .run_command(mongodb::bson::doc! { "buildInfo": 1 })
            .await
            .expect("buildInfo");
        info.get_str("ferretdbVersion")
            .is_ok_and(|v| v.starts_with("v1."))
    }

    async fn list_indexes(db: &mongodb::Database) -> Vec<mongodb::IndexModel> {
        let mut cursor = db
            .collection::<Document>("records")
            .list_indexes()
            .await
            .expect("listIndexes");
        let mut indexes = Vec::new();
        while cursor.advance().await.expect("listIndexes cursor") {
            indexes.push(cursor.deserialize_current().expect("an index description"));
        }
        indexes
    }

    async fn drop_db(db: mongodb::Database) {
        if let Err(e) = db.drop().await {
            eprintln!("could not drop test database {}: {e}", db.name());
        }
    }
}

/// A fresh pending record under `key`.
fn record(key: &str) -> SagaRecord {
    SagaRecord::accepted(
        key.to_owned(),
        format!("fingerprint of {key}"),
        "1".into(),
        1,
        serde_json::json!({ "id": "1", "items": [] }),
    )
}

/// `rec` as any store gives it back: timestamps cut to the millisecond (BSON's precision).
fn stored_form(rec: &SagaRecord) -> SagaRecord {
    use chrono::SubsecRound;
    let mut rec = rec.clone();
    rec.created_at = rec.created_at.trunc_subsecs(3);
    rec.due_at = rec.due_at.map(|at| at.trunc_subsecs(3));
    rec.updated_at = rec.updated_at.trunc_subsecs(3);
    for event in &mut rec.history {
        event.at = event.at.trunc_subsecs(3);
    }
    rec
}

mod behaviour {
    use super::*;
    use chrono::{TimeDelta, Utc};

    pub async fn insert_then_get_roundtrips_every_field(store: Arc<dyn Store>) {
        let now = Utc::now();
        let rec = SagaRecord {
            saga_id: SagaId::new(),
            key: "order:every-field".into(),
            fingerprint: "sha256:0123abcd".into(),
            id: "client-1".into(),
            count: 4_000_000_000,
            status: Status::Degraded,
            body: serde_json::json!({
                "id": "1",
                "items": [{"sku": "a", "qty": 2}, {"sku": "ü-ñ", "qty": -1}],
                "payment": {"amount": 12.5, "id": "1",
                            "shipment": {"id": "1", "directions": "home", "fragile": true}},
                "note": null,
                "big": 9_007_199_254_740_993_i64
            }),
            next: Some(serde_json::json!({"service": "payment", "status": "pending"})),
            fallback: Some(Fallback {
                reason: "open".into(),
                detail: "the payment breaker is open".into(),
            }),
            response: Some(SavedResponse {
                status: 200,
                body: serde_json::json!({"service": "order", "count": 1}),
            }),
            history: vec![
                HistoryEvent {
                    at: now - TimeDelta::milliseconds(1500),
                    step: "accepted".into(),
                    status: Status::Pending,
                    reason: String::new(),
                },
                HistoryEvent {
                    at: now,
                    step: "forward".into(),
                    status: Status::Degraded,
                    reason: "open".into(),
                },
            ],
            attempts: 3,
            redrives: 2,
            due_at: Some(now + TimeDelta::milliseconds(250)),
            leased_by: Some("order-1-abc".into()),
            version: 7,
            created_at: now - TimeDelta::milliseconds(1500),
            updated_at: now,
        };

        assert_eq!(store.insert(&rec).await.expect("insert"), Inserted::New);

        let expected = Some(stored_form(&rec));
        assert_eq!(store.get(&rec.saga_id).await.expect("get"), expected);
        assert_eq!(
            store.get_by_key(&rec.key).await.expect("get_by_key"),
            expected
        );
    }

    pub async fn insert_then_get_roundtrips_any_json_payload(store: Arc<dyn Store>) {
        // Valid JSON that is not a valid BSON document, or not on every server.
        let mut deep = serde_json::json!("bottom");
        for _ in 0..90 {
            deep = serde_json::json!({ "down": deep });
        }
        let awkward = serde_json::json!({
            "a.b": 1,
            "$set": {"$inc": 2},
            "": "empty key",
            "big": u64::MAX,
            "small": i64::MIN,
            "float": 0.1,
            "deep": deep,
        });
        let mut rec = record("awkward-json");
        rec.body = awkward.clone();
        rec.next = Some(awkward.clone());
        rec.response = Some(SavedResponse {
            status: 200,
            body: awkward,
        });

        assert_eq!(store.insert(&rec).await.expect("insert"), Inserted::New);
        assert_eq!(
            store.get(&rec.saga_id).await.expect("get"),
            Some(stored_form(&rec))
        );
        // A later version carries what moves (the body is fixed at acceptance).
        rec.next = Some(serde_json::json!({"x.y": {"$z": u64::MAX}}));
        assert!(store.replace(&rec, rec.version).await.expect("replace"));
        let stored = store.get(&rec.saga_id).await.expect("get");
        assert_eq!(
            stored.map(|r| (r.body, r.next)),
            Some((stored_form(&rec).body, rec.next))
        );
    }

    pub async fn insert_with_existing_key_returns_the_stored_record_and_writes_nothing(
        store: Arc<dyn Store>,
    ) {
        let first = record("same-key");
        let mut second = record("same-key");
        second.fingerprint = "another request".into();
        second.body = serde_json::json!({"id": "2"});

        assert_eq!(store.insert(&first).await.expect("insert"), Inserted::New);
        let again = store.insert(&second).await.expect("second insert");

        assert_eq!(again, Inserted::Existing(stored_form(&first)));
        assert_eq!(store.get(&second.saga_id).await.expect("get"), None);
        assert_eq!(
            store.get(&first.saga_id).await.expect("get"),
            Some(stored_form(&first))
        );
        assert_eq!(store.count().await.expect("count"), 1);
    }

    pub async fn fifty_concurrent_inserts_with_one_key_store_one(store: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let rec = record("contended");
                    let outcome = store.insert(&rec).await;
                    (rec, outcome)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut returned = Vec::new();
        for task in tasks {
            let (rec, outcome) = task.await.expect("insert task");
            match outcome.expect("insert") {
                Inserted::New => winners.push(rec),
                Inserted::Existing(existing) => returned.push(existing),
            }
        }

        assert_eq!(winners.len(), 1, "exactly one insert stores a record");
        let winner = stored_form(&winners[0]);
        assert_eq!(returned.len(), 49);
        assert!(returned.iter().all(|r| *r == winner), "all see the winner");
        assert_eq!(store.count().await.expect("count"), 1);
        assert_eq!(
            store.get_by_key("contended").await.expect("get_by_key"),
            Some(winner)
        );
    }

    pub async fn replace_with_stale_version_is_refused(store: Arc<dyn Store>) {
        let rec = record("stale");
        store.insert(&rec).await.expect("insert");

        let mut first = rec.clone();
        first
            .transition(Status::Degraded, "forward", "timeout")
            .expect("pending may degrade");
        let mut late = rec.clone();
        late.transition(Status::Completed, "forward", "")
            .expect("pending may complete");

        assert!(store.replace(&first, 0).await.expect("replace"));
        assert!(!store.replace(&late, 0).await.expect("stale replace"));

        let mut expected = stored_form(&first);
        expected.version = 1;
        assert_eq!(
            store.get(&rec.saga_id).await.expect("get"),
            Some(expected),
            "the refused write left no trace"
        );

        let never_stored = record("never-stored");
        assert!(
            !store.replace(&never_stored, 0).await.expect("replace"),
            "a record that was never inserted can't be replaced"
        );
        assert_eq!(store.get(&never_stored.saga_id).await.expect("get"), None);
    }

    pub async fn replace_bumps_version(store: Arc<dyn Store>) {
        let rec = record("bump");
        store.insert(&rec).await.expect("insert");

        let mut next = rec.clone();
        next.transition(Status::Degraded, "forward", "http 502")
            .expect("pending may degrade");
        next.attempts = 1;
        // The stored version comes from `expected_version`, whatever the record says.
        next.version = 41;
        assert!(store.replace(&next, 0).await.expect("replace"));

        let mut expected = stored_form(&next);
        expected.version = 1;
        let stored = store.get(&rec.saga_id).await.expect("get");
        assert_eq!(stored, Some(expected.clone()));

        let mut done = expected;
        done.transition(Status::Completed, "redrive", "")
            .expect("degraded may complete");
        assert!(store.replace(&done, 1).await.expect("second replace"));
        let stored = store.get(&rec.saga_id).await.expect("get");
        assert_eq!(
            stored.map(|r| (r.version, r.status)),
            Some((2, Status::Completed))
        );
    }

    pub async fn list_by_status_returns_oldest_first_and_respects_limit(store: Arc<dyn Store>) {
        let base = Utc::now() - TimeDelta::hours(1);
        // (key, status, seconds after base), inserted out of time order.
        let plan = [
            ("p5", Status::Pending, 5),
            ("d1", Status::Degraded, 1),
            ("c0", Status::Completed, 0),
            ("p3", Status::Pending, 3),
            ("d4", Status::Degraded, 4),
            ("f2", Status::Failed, 2),
        ];
        let mut by_key = std::collections::HashMap::new();
        for (key, status, secs) in plan {
            let mut rec = record(key);
            rec.status = status;
            rec.updated_at = base + TimeDelta::seconds(secs);
            store.insert(&rec).await.expect("insert");
            by_key.insert(key, rec);
        }
        let keys =
            |records: Vec<SagaRecord>| records.into_iter().map(|r| r.key).collect::<Vec<_>>();
        let list = |statuses: &'static [Status], limit| {
            let store = Arc::clone(&store);
            async move {
                keys(
                    store
                        .list_by_status(statuses, limit)
                        .await
                        .expect("list_by_status"),
                )
            }
        };

        assert_eq!(
            list(&[Status::Pending, Status::Degraded], 3).await,
            ["d1", "p3", "d4"]
        );
        assert_eq!(
            list(&[Status::Degraded, Status::Pending], 10).await,
            ["d1", "p3", "d4", "p5"]
        );
        assert_eq!(
            list(&[Status::Pending, Status::Pending], 10).await,
            ["p3", "p5"]
        );
        assert_eq!(list(&[Status::Completed], 10).await, ["c0"]);
        assert!(list(&[Status::Compensated], 10).await.is_empty());
        assert!(list(&[], 10).await.is_empty());
        assert!(
            list(&[Status::Pending], 0).await.is_empty(),
            "limit 0 is none"
        );

        // A record leaves its old status's listing and joins the new one at its new time.
        let mut moved = by_key["p3"].clone();
        moved
            .transition(Status::Completed, "forward", "")
            .expect("pending may complete");
        moved.updated_at = base + TimeDelta::seconds(6);
        assert!(store.replace(&moved, 0).await.expect("replace"));
        assert_eq!(
            list(&[Status::Pending, Status::Degraded], 10).await,
            ["d1", "d4", "p5"]
        );
        assert_eq!(list(&[Status::Completed], 10).await, ["c0", "p3"]);
        let full = store
            .list_by_status(&[Status::Failed], 10)
            .await
            .expect("list_by_status");
        assert_eq!(
            full,
            vec![stored_form(&by_key["f2"])],
            "whole records come back"
        );
    }

    pub async fn list_due_returns_what_is_due_earliest_first_and_follows_replace(
        store: Arc<dyn Store>,
    ) {
        let now = Utc::now();
        // (key, due in seconds from now; None = nothing left to do)
        let plan = [
            ("later", Some(30)),
            ("b", Some(-2)),
            ("done", None),
            ("a", Some(-5)),
            ("c", Some(0)),
        ];
        let mut by_key = std::collections::HashMap::new();
        for (key, due) in plan {
            let mut rec = record(key);
            // The re-driver's usual work: degraded records (a `pending` one is due only when
            // its request died; MongoStore finds those by a periodic sweep).
            rec.status = Status::Degraded;
            rec.due_at = due.map(|s| now + TimeDelta::seconds(s));
            store.insert(&rec).await.expect("insert");
            by_key.insert(key, rec);
        }
        let due = |at, limit| {
            let store = Arc::clone(&store);
            async move {
                store
                    .list_due(at, limit)
                    .await
                    .expect("list_due")
                    .into_iter()
                    .map(|r| r.key)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(due(now, 10).await, ["a", "b", "c"]);
        assert_eq!(due(now, 2).await, ["a", "b"]);
        assert!(due(now, 0).await.is_empty());
        assert_eq!(
            due(now + TimeDelta::seconds(60), 10).await,
            ["a", "b", "c", "later"]
        );

        // A claim moves a record's due time to its lease's end; finishing clears it.
        let mut claimed = by_key["a"].clone();
        claimed.due_at = Some(now + TimeDelta::seconds(10));
        assert!(store.replace(&claimed, 0).await.expect("claim"));
        assert_eq!(due(now, 10).await, ["b", "c"]);
        let mut finished = by_key["b"].clone();
        finished
            .transition(Status::Completed, "redrive", "")
            .expect("pending may complete");
        assert_eq!(
            finished.due_at, None,
            "a terminal record is due for nothing"
        );
        assert!(store.replace(&finished, 0).await.expect("finish"));
        assert_eq!(due(now, 10).await, ["c"]);
    }

    pub async fn get_unknown_is_none(store: Arc<dyn Store>) {
        store.insert(&record("known")).await.expect("insert");
        assert_eq!(store.get(&SagaId::new()).await.expect("get"), None);
        assert_eq!(store.get_by_key("unknown").await.expect("get_by_key"), None);
    }

    pub async fn count_counts(store: Arc<dyn Store>) {
        assert_eq!(store.count().await.expect("count"), 0);
        for key in ["a", "b", "c"] {
            store.insert(&record(key)).await.expect("insert");
        }
        assert_eq!(store.count().await.expect("count"), 3);
        store.insert(&record("b")).await.expect("insert");
        assert_eq!(
            store.count().await.expect("count"),
            3,
            "a replayed key adds nothing"
        );
    }
}
