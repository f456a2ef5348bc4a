//! The final write leaves the answer's path (`shared/src/service/finish.rs`): the answer goes
//! out as soon as the next hop answered, the write follows; reads in the process wait for it,
//! and stopping the service waits for it too.
//!
//! Payment runs on a real embedded store wrapped so its final writes (versions past the first)
//! wait at a gate the test opens: the only way to hold a write still long enough to look at the
//! world around it. Shipment is a real service on a real socket.

use futures::future::BoxFuture;
use serde_json::json;
use shared::saga::{SagaId, SagaRecord, Status};
use shared::store::{EmbeddedStore, Inserted, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use testkit::{Svc, TestStack};
use tokio::sync::watch;

/// An embedded store whose `replace` waits until the gate opens.
struct Gated {
    inner: EmbeddedStore,
    open: watch::Receiver<bool>,
}

impl Store for Gated {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.ping()
    }
    fn insert<'a>(&'a self, rec: &'a SagaRecord) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        self.inner.insert(rec)
    }
    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        self.inner.get(id)
    }
    fn get_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        self.inner.get_by_key(key)
    }
    fn replace<'a>(
        &'a self,
        rec: &'a SagaRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            self.inner.replace(rec, expected_version).await
        })
    }
    fn list_by_status<'a>(
        &'a self,
        statuses: &'a [Status],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.list_by_status(statuses, limit)
    }
    fn list_due<'a>(
        &'a self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.list_due(now, limit)
    }
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.count()
    }
}

/// Payment on a [`Gated`] store, forwarding to the shipment of an embedded stack (whose other
/// services the tests don't use).
struct GatedPayment {
    stack: TestStack,
    store: Arc<dyn Store>,
    gate: watch::Sender<bool>,
    running: shared::service::Running,
    _dir: tempfile::TempDir,
}

impl GatedPayment {
    async fn start() -> Self {
        let stack = TestStack::embedded(&[], &[]).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (gate, open) = watch::channel(false);
        let inner = EmbeddedStore::open(dir.path(), "payments").expect("embedded store");
        let store: Arc<dyn Store> = Arc::new(Gated { inner, open });
        let vars: HashMap<String, String> = [
            ("HOST", "127.0.0.1".to_string()),
            ("PORT", "0".to_string()),
            ("CHAIN_SVC", format!("{}/create", stack.url(Svc::Shipment))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = shared::Config::from_lookup("payment", 0, |k| vars.get(k).cloned())
            .expect("a valid configuration");
        let state = shared::service::state_with_store::<payment::Payment>(config, store.clone())
            .expect("payment's state");
        let running = shared::service::serve::<payment::Payment>(state)
            .await
            .expect("payment serves");
        Self {
            stack,
            store,
            gate,
            running,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_leaves_before_the_final_write_and_reads_wait_for_it() {
    let GatedPayment {
        stack: s,
        store,
        gate,
        running,
        _dir,
    } = GatedPayment::start().await;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();

    // The answer arrives while the final write is held at the gate.
    let res = http
        .post(format!("{base}/create"))
        .json(&json!({"amount": 5, "id": "p-1", "shipment": {"id": "s-1", "directions": "home"}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("payment answers with its final write still held");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(body["status"], "completed", "{body}");
    let id = body["saga_id"].as_str().expect("saga id").to_string();
    let saga_id: SagaId = id.parse().expect("a saga id");
    let stored = store.get(&saga_id).await.expect("read").expect("accepted");
    assert_eq!(
        stored.status,
        Status::Pending,
        "only the accepted version is written yet"
    );

    // A read of the record waits for the write instead of showing the stale version.
    let read = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/payments/{id}");
        async move {
            http.get(url)
                .send()
                .await?
                .json::<serde_json::Value>()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!read.is_finished(), "the read waits for the held write");
    gate.send_replace(true);
    let seen = read.await.expect("the read task").expect("the record");
    assert_eq!(seen["status"], "completed", "{seen}");

    running.stop().await;
    let stored = store.get(&saga_id).await.expect("read").expect("stored");
    assert_eq!(stored.status, Status::Completed);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_service_waits_for_its_final_writes() {
    let GatedPayment {
        stack: s,
        store,
        gate,
        running,
        _dir,
    } = GatedPayment::start().await;
    let res = reqwest::Client::new()
        .post(format!("http://{}/create", running.addr))
        .json(&json!({"amount": 5, "id": "p-2", "shipment": {"id": "s-2", "directions": "home"}}))
        .send()
        .await
        .expect("an answer");
    let body: serde_json::Value = res.json().await.expect("JSON");
    let saga_id: SagaId = body["saga_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a saga id");

    let stopping = tokio::spawn(running.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "stop waits for the held final write"
    );
    gate.send_replace(true);
    stopping.await.expect("stop ends once the write landed");
    let stored = store.get(&saga_id).await.expect("read").expect("stored");
    assert_eq!(
        stored.status,
        Status::Completed,
        "the write landed before stop returned"
    );
    s.stop().await;
}

/// A caller who hangs up mid-request does not cancel the request: once its record is stored,
/// the forward and the final write run to their end. The re-driver is kept out of it (it polls
/// once a minute here), so the only way the record can finish is the request's own work; on the
/// old code the dropped handler left it `pending` for the re-driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_does_not_stop_its_request() {
    let s = TestStack::embedded(
        &[
            ("CHAOS_ENABLED", "true"),
            ("BREAKER_TIMEOUT_MS", "3000"),
            ("SAGA_POLL_MS", "60000"),
        ],
        &[],
    )
    .await;
    let slow = s
        .put_chaos(Svc::Shipment, json!({ "latency_ms": 500 }), None)
        .await;
    assert_eq!(slow.status, 200);

    let hung_up = s
        .http
        .post(format!("{}/create", s.url(Svc::Order)))
        .header("content-type", "application/json")
        .header("idempotency-key", "hangs-up")
        .timeout(Duration::from_millis(150))
        .body(testkit::seed().to_string())
        .send()
        .await;
    assert!(
        hung_up.as_ref().is_err_and(|e| e.is_timeout()),
        "the caller gave up before the answer: {hung_up:?}"
    );

    let order = s.store(Svc::Order);
    let rec = testkit::eventually(
        "order's record completed after its caller hung up",
        Duration::from_secs(10),
        || {
            let order = order.clone();
            async move {
                order
                    .get_by_key("hangs-up")
                    .await
                    .ok()
                    .flatten()
                    .filter(|r| r.status == Status::Completed)
            }
        },
    )
    .await;
    assert_eq!(rec.redrives, 0, "finished by the request, not re-driven");
    assert_eq!(
        rec.response
            .as_ref()
            .map(|r| r.body["next"]["status"].clone()),
        Some(json!("completed")),
        "{rec:?}"
    );
    s.stop().await;
}
