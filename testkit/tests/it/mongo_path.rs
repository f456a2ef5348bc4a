//! The MongoDB path's round trips, counted: what `MongoStore` sends for each thing it does.
//!
//! Every test watches the commands its client sends (the driver's command monitoring), so
//! "one round trip per write, shared by concurrent writers" and "a quiet re-driver sends
//! nothing" are asserted on what really went over the wire, on whatever server `MONGODB_URI`
//! names (FerretDB on SQLite or PostgreSQL in CI, MongoDB where Docker works).

use chrono::{TimeDelta, Utc};
use mongodb::bson::doc;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;
use shared::saga::{SagaRecord, Status};
use shared::store::{Inserted, MongoStore, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::mongo::unique_db_name;

const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands sent by one client, by name.
#[derive(Clone, Default)]
struct Wire(Arc<Mutex<HashMap<String, u64>>>);

impl Wire {
    fn count(&self, name: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every command but the driver's own monitoring (`hello`, `isMaster`, `ping`).
    fn total(&self) -> u64 {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "hello" | "isMaster" | "ping"))
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A store on a fresh database whose client counts the commands it sends.
async fn counted_store(test: &str) -> Option<(MongoStore, Wire, mongodb::Database)> {
    let server = testkit::mongo::mongo().await?;
    let mut options = ClientOptions::parse(server.uri())
        .await
        .expect("the test server's URI parses");
    let wire = Wire::default();
    let seen = wire.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            if let Ok(mut m) = seen.0.lock() {
                *m.entry(started.command_name).or_default() += 1;
            }
        }
    }));
    let client = mongodb::Client::with_options(options).expect("a client");
    let db_name = unique_db_name(test);
    let store = MongoStore::with_client(client.clone(), &db_name, "records", OP_TIMEOUT);
    store.ping().await.expect("the store gets ready");
    Some((store, wire, client.database(&db_name)))
}

fn record(key: &str) -> SagaRecord {
    let mut rec = SagaRecord::accepted(
        key.to_owned(),
        format!("fingerprint of {key}"),
        "1".into(),
        1,
        serde_json::json!({ "id": "1" }),
    );
    rec.due_at = Some(Utc::now() + TimeDelta::seconds(60));
    rec
}

/// The hop's whole write path: accepted (insert), then finished (compare-and-swap).
async fn accept_and_finish(store: &MongoStore, key: String) -> bool {
    let mut rec = record(&key);
    if store.insert(&rec).await.expect("insert") != Inserted::New {
        return false;
    }
    rec.transition(Status::Completed, "forward", "")
        .expect("pending may complete");
    store.replace(&rec, 0).await.expect("replace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_hop_writes_twice_and_reads_nothing() {
    let Some((store, wire, db)) = counted_store("lone_hop").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let before = wire.total();
    assert!(accept_and_finish(&store, "lone".into()).await);
    assert_eq!(
        wire.total() - before,
        2,
        "two inserts: the accepted version, the finished one"
    );
    assert_eq!(
        wire.count("update"),
        0,
        "no update: every write is an insert"
    );
    assert_eq!(wire.count("find"), 0, "no read on the happy path");
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commands() {
    let Some((store, wire, db)) = counted_store("concurrent_writers").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let before = wire.count("insert");
    let hops = 64;
    let done = futures::future::join_all(
        (0..hops).map(|i| accept_and_finish(&store, format!("concurrent-{i}"))),
    )
    .await;
    assert!(done.iter().all(|ok| *ok), "every hop's writes succeeded");
    let inserts = wire.count("insert") - before;
    assert!(
        inserts <= hops / 4,
        "{inserts} insert commands for {hops} records: concurrent inserts must share commands"
    );
    assert_eq!(store.count().await.expect("count"), hops);
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_swaps_land_and_a_stale_one_is_refused() {
    let Some((store, wire, db)) = counted_store("concurrent_cas").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let recs: Vec<SagaRecord> = (0..8).map(|i| record(&format!("cas-{i}"))).collect();
    for rec in &recs {
        assert_eq!(store.insert(rec).await.expect("insert"), Inserted::New);
    }
    let moved: Vec<SagaRecord> = recs
        .iter()
        .map(|rec| {
            let mut rec = rec.clone();
            rec.note(Status::Degraded, "forward", "timeout");
            rec
        })
        .collect();
    let before = wire.count("insert");
    let results = futures::future::join_all(moved.iter().map(|rec| store.replace(rec, 0))).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(true))),
        "every writer of its own record lands: {results:?}"
    );
    let inserts = wire.count("insert") - before;
    assert!(
        (1..=8).contains(&inserts),
        "{inserts} insert commands for 8 new versions"
    );
    // The same version again: someone (the writer above) moved it on.
    let mut stale = recs[0].clone();
    stale.note(Status::Completed, "forward", "");
    assert!(!store.replace(&stale, 0).await.expect("replace answers"));
    let stored = store
        .get_by_key("cas-0")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.status, Status::Degraded);
    assert_eq!(stored.version, 1);
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_one_key_in_one_batch_store_one() {
    let Some((store, _wire, db)) = counted_store("one_key_in_batch").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let recs: Vec<SagaRecord> = (0..16).map(|_| record("twin-key")).collect();
    let results = futures::future::join_all(recs.iter().map(|r| store.insert(r))).await;
    let new = results
        .iter()
        .filter(|r| matches!(r, Ok(Inserted::New)))
        .count();
    assert_eq!(new, 1, "{results:?}");
    let winner = store
        .get_by_key("twin-key")
        .await
        .expect("get")
        .expect("stored");
    for r in results {
        match r.expect("insert answers") {
            Inserted::New => {}
            Inserted::Existing(rec) => assert_eq!(rec.saga_id, winner.saga_id),
        }
    }
    assert_eq!(store.count().await.expect("count"), 1);
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_re_driver_poll_sends_nothing() {
    let Some((store, wire, db)) = counted_store("quiet_poll").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    // The first poll reads what earlier processes left (nothing here).
    assert!(store
        .list_due(Utc::now(), 64)
        .await
        .expect("poll")
        .is_empty());
    let mut rec = record("later");
    assert_eq!(store.insert(&rec).await.expect("insert"), Inserted::New);
    let before = wire.total();
    for _ in 0..50 {
        assert!(store
            .list_due(Utc::now(), 64)
            .await
            .expect("poll")
            .is_empty());
    }
    assert_eq!(wire.total(), before, "nothing due: no command");

    // Due now: this process stored it last, so the re-driver takes it up from memory.
    rec.note(Status::Degraded, "forward", "timeout");
    rec.due_at = Some(Utc::now() - TimeDelta::seconds(1));
    assert!(store.replace(&rec, 0).await.expect("replace"));
    let before = wire.total();
    let due = store.list_due(Utc::now(), 64).await.expect("poll");
    assert_eq!(
        due.iter()
            .map(|r| (r.key.as_str(), r.version))
            .collect::<Vec<_>>(),
        [("later", 1)]
    );
    assert_eq!(
        wire.total(),
        before,
        "what this process stored last is not read back"
    );

    // Finished: due for nothing, and the poll is quiet again.
    let mut done = due[0].clone();
    done.transition(Status::Completed, "redrive", "")
        .expect("degraded may complete");
    assert!(store.replace(&done, 1).await.expect("replace"));
    let before = wire.total();
    assert!(store
        .list_due(Utc::now(), 64)
        .await
        .expect("poll")
        .is_empty());
    assert_eq!(wire.total(), before);
    let _ = db.drop().await;
}

/// Memory is trusted only until a write says otherwise: a record another process moved on is
/// refused to this one's stale write, forgotten, and read from the database at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_moved_on_elsewhere_is_read_again_after_the_stale_write_is_refused() {
    let Some((mine, wire, db)) = counted_store("moved_elsewhere").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let _ = mine.list_due(Utc::now(), 64).await.expect("first poll");
    let mut rec = record("shared");
    rec.due_at = Some(Utc::now() - TimeDelta::seconds(1));
    assert_eq!(mine.insert(&rec).await.expect("insert"), Inserted::New);

    // Another replica takes it up and moves it on (version 1, still due).
    let client = db.client().clone();
    let other = MongoStore::with_client(client, db.name(), "records", OP_TIMEOUT);
    let mut theirs = rec.clone();
    theirs.note(Status::Degraded, "redrive", "timeout");
    theirs.attempts = 7;
    assert!(other.replace(&theirs, 0).await.expect("their write"));

    // This process still remembers version 0 and acts on it: refused.
    let remembered = mine.list_due(Utc::now(), 64).await.expect("poll");
    assert_eq!(
        remembered.iter().map(|r| r.version).collect::<Vec<_>>(),
        [0]
    );
    let mut stale = remembered[0].clone();
    stale
        .transition(Status::Completed, "redrive", "")
        .expect("pending may complete");
    assert!(
        !mine.replace(&stale, 0).await.expect("stale write"),
        "version 1 is taken"
    );

    // Forgotten: the next poll reads what is stored.
    let finds = wire.count("find");
    let due = mine.list_due(Utc::now(), 64).await.expect("poll");
    assert_eq!(
        due.iter()
            .map(|r| (r.version, r.attempts))
            .collect::<Vec<_>>(),
        [(1, 7)]
    );
    assert!(wire.count("find") > finds, "read from the database");
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_by_a_killed_process_is_found_by_the_next_one() {
    let Some((first, _wire, db)) = counted_store("left_by_killed").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    // The first process accepted a request and died before answering: pending, due soon.
    let mut rec = record("orphan");
    rec.due_at = Some(Utc::now() - TimeDelta::milliseconds(10));
    assert_eq!(first.insert(&rec).await.expect("insert"), Inserted::New);
    drop(first);

    // The restarted process has an empty memory; its first poll reads the records.
    let client = db.client().clone();
    let second = MongoStore::with_client(client, db.name(), "records", OP_TIMEOUT);
    let due = second.list_due(Utc::now(), 64).await.expect("poll");
    assert_eq!(
        due.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["orphan"]
    );
    let _ = db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_the_document_id_and_the_saga_id_is_indexed() {
    let Some((store, _wire, db)) = counted_store("key_is_id").await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let rec = record("client-key-1");
    assert_eq!(store.insert(&rec).await.expect("insert"), Inserted::New);
    let raw = db
        .collection::<mongodb::bson::Document>("records")
        .find_one(doc! { "_id": "client-key-1" })
        .await
        .expect("find")
        .expect("stored under its key");
    assert_eq!(
        raw.get_str("saga_id").ok(),
        Some(rec.saga_id.to_string().as_str())
    );
    let got = store
        .get(&rec.saga_id)
        .await
        .expect("get")
        .expect("found by saga id");
    assert_eq!(got.key, "client-key-1");
    let _ = db.drop().await;
}
