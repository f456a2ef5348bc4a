//! The embedded store's group commit: concurrent writes share flushes, and a write that has
//! returned survives the process being killed the next instant.

use std::process::{Command, Stdio};

use shared::saga::SagaRecord;
use shared::store::{EmbeddedStore, Inserted, Store};

const WRITES: usize = 64;

fn record(key: String) -> SagaRecord {
    SagaRecord::accepted(
        key,
        "fp".into(),
        "1".into(),
        1,
        serde_json::json!({"id": "1"}),
    )
}

/// `WRITES` inserts at once under keys `k0..`; panics unless every one is new.
async fn insert_all(store: &EmbeddedStore) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WRITES {
        let store = store.clone();
        tasks.spawn(async move { store.insert(&record(format!("k{i}"))).await });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Inserted::New)) => {}
            other => panic!("insert: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_flushes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), "orders").expect("store opens");
    let before = store.flushes();
    insert_all(&store).await;
    let flushes = store.flushes() - before;
    assert!(flushes >= 1, "no flush at all for {WRITES} writes");
    assert!(
        flushes <= WRITES as u64 / 2,
        "{flushes} flushes for {WRITES} concurrent writes: they are not being grouped"
    );
    for i in 0..WRITES {
        let found = store.get_by_key(&format!("k{i}")).await.expect("read");
        assert!(found.is_some(), "k{i} missing");
    }
}

/// Child half of the test below: writes, says so, and aborts at once, with no orderly close
/// that could flush what group commit still held in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writes_then_aborts() {
    let Ok(dir) = std::env::var("GROUP_COMMIT_CHILD_DIR") else {
        return; // Only does something as the child of `answered_writes_survive_an_abort`.
    };
    let store = EmbeddedStore::open(std::path::Path::new(&dir), "orders").expect("store opens");
    insert_all(&store).await;
    // And one alone, aborted right after its answer: nothing else can flush it by chance.
    match store.insert(&record("last".into())).await {
        Ok(Inserted::New) => {}
        other => panic!("insert: {other:?}"),
    }
    println!("ALL-ANSWERED");
    std::process::abort();
}

#[test]
fn answered_writes_survive_an_abort() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", "child_writes_then_aborts", "--nocapture"])
        .env("GROUP_COMMIT_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .expect("child runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ALL-ANSWERED"), "child didn't finish: {said}");
    assert!(!out.status.success(), "child should have aborted");

    let store = EmbeddedStore::open(dir.path(), "orders").expect("store reopens");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for key in (0..WRITES).map(|i| format!("k{i}")).chain(["last".into()]) {
            let found = store.get_by_key(&key).await.expect("read");
            assert!(found.is_some(), "answered write {key} was lost");
        }
        assert_eq!(store.count().await.expect("count"), WRITES as u64 + 1);
    });
}
