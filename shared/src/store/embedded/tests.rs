//! The embedded store's own failure modes, which the shared store contract (in testkit) can't
//! reach from outside: a record in the file that no longer decodes.

use super::*;
use chrono::Duration as Span;

fn due_record(key: &str) -> SagaRecord {
    let mut rec =
        SagaRecord::accepted(key.into(), "f".into(), "1".into(), 1, serde_json::json!({}));
    rec.due_at = Some(Utc::now() - Span::seconds(1));
    rec
}

#[tokio::test]
async fn an_undecodable_record_is_skipped_by_list_due_not_fatal() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let store = EmbeddedStore::open(tmp.path(), "orders").expect("opens");
    let recs: Vec<SagaRecord> = ["a", "b", "c"].into_iter().map(due_record).collect();
    for rec in &recs {
        store.insert(rec).await.expect("inserts");
    }
    // The middle one's bytes go bad on disk (an older version's format, a torn write).
    let bad = recs[1].saga_id.to_string();
    let txn = store.db.begin_write().expect("write txn");
    {
        let mut records = txn.open_table(RECORDS).expect("records");
        records
            .insert(bad.as_str(), b"{\"not\":\"a record\"}".as_slice())
            .expect("overwrite");
    }
    txn.commit().expect("commit");

    let due = store
        .list_due(Utc::now(), 10)
        .await
        .expect("one bad record does not fail the listing");
    let ids: Vec<_> = due.iter().map(|r| r.saga_id).collect();
    assert_eq!(ids, [recs[0].saga_id, recs[2].saga_id]);

    // And the limit still counts good records only.
    let due = store.list_due(Utc::now(), 2).await.expect("lists");
    assert_eq!(due.len(), 2);
}

#[tokio::test]
async fn work_past_the_queue_limit_fails_fast_as_unavailable() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let store = EmbeddedStore::open(tmp.path(), "orders").expect("opens");
    // Every slot taken, as by QUEUE_LIMIT operations waiting for a blocking thread.
    let held = Arc::clone(&store.queue)
        .try_acquire_many_owned(QUEUE_LIMIT as u32)
        .expect("all permits");
    let err = store
        .insert(&due_record("x"))
        .await
        .expect_err("no room in the queue");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert_eq!(store.count().await.ok(), None, "reads are bounded too");
    drop(held);
    store.insert(&due_record("x")).await.expect("room again");
    assert_eq!(store.count().await.expect("counts"), 1);
}
