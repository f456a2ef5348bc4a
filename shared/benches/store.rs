//! What one request costs the embedded store: insert the accepted record, then move it to
//! `completed` (the two writes every hop makes per request), alone and with writers at once.
//!
//! "1 writer" is the latency floor of one request's writes; "16 writers" runs 16 such requests
//! concurrently on a 2-thread runtime (as a service under load does) and reports the time per
//! request, so it shows how well concurrent commits share the disk's flushes.
//!
//! Run: `cargo bench -p shared --bench store -- --warm-up-time 1 --measurement-time 5`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shared::saga::{SagaRecord, Status};
use shared::store::{EmbeddedStore, Inserted, Store};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime builds")
}

/// One request's writes: insert, then compare-and-swap to `completed`.
async fn one_request(store: &EmbeddedStore) {
    let mut rec = SagaRecord::accepted(
        String::new(),
        "fp".into(),
        "1".into(),
        1,
        serde_json::json!({"id": "1", "directions": "home"}),
    );
    rec.key = rec.saga_id.to_string();
    match store.insert(&rec).await {
        Ok(Inserted::New) => {}
        other => panic!("insert: {other:?}"),
    }
    rec.transition(Status::Completed, "last hop", "")
        .expect("pending may complete");
    rec.version = 1;
    assert!(matches!(store.replace(&rec, 0).await, Ok(true)));
}

/// `iters` requests, `writers` at a time; the elapsed time for all of them.
fn requests(rt: &Runtime, store: &EmbeddedStore, writers: u64, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let store = store.clone();
            let share = iters / writers + u64::from(w < iters % writers);
            tasks.spawn(async move {
                for _ in 0..share {
                    one_request(&store).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), "bench").expect("store opens");
    let mut group = c.benchmark_group("embedded store: insert + complete");
    for writers in [1, 16] {
        group.bench_function(format!("{writers} writer(s)"), |b| {
            b.iter_custom(|iters| requests(&rt, &store, writers, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
