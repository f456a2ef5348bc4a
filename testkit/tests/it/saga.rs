//! The saga finishes what requests left undone: re-drives, compensation, tombstones, leases.
//!
//! Each test runs the real services on the embedded store with a re-driver tuned to
//! milliseconds (backoff 20–200 ms, poll 20 ms) and waits for the *eventual* state — a degraded
//! order completing, a given-up saga compensated all the way down — then runs the `saga verify`
//! checks over the three stores.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{eventually, seed, Svc, TestStack};

const FAST: [(&str, &str); 7] = [
    ("CHAOS_ENABLED", "true"),
    ("SAGA_BACKOFF_BASE_MS", "20"),
    ("SAGA_BACKOFF_CAP_MS", "200"),
    ("SAGA_POLL_MS", "20"),
    ("SAGA_LEASE_MS", "2000"),
    ("BREAKER_RESET_MS", "200"),
    ("BREAKER_MIN_CALLS", "3"),
];

fn env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    FAST.iter().chain(extra).copied().collect()
}

const WAIT: Duration = Duration::from_secs(30);

async fn status_of(s: &TestStack, svc: Svc, id: &str) -> Value {
    s.get(svc, &format!("/{}/{id}", svc.collection()))
        .await
        .json
}

/// Waits until `svc`'s record `id` has `status`, and returns it.
async fn until_status(s: &TestStack, svc: Svc, id: &str, status: &str) -> Value {
    eventually(&format!("{} {id} {status}", svc.name()), WAIT, || async {
        let rec = status_of(s, svc, id).await;
        (rec["status"] == status).then_some(rec)
    })
    .await
}

async fn chaos(s: &TestStack, svc: Svc, faults: Option<Value>) {
    match faults {
        Some(f) => {
            let r = s.put_chaos(svc, f, None).await;
            assert!((200..300).contains(&r.status), "{}", r.text);
        }
        None => s.clear_chaos(svc).await,
    }
}

fn steps(rec: &Value) -> Vec<String> {
    rec["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["step"].as_str().unwrap_or(""),
                        e["status"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_order_completes_by_itself_once_shipment_recovers() {
    let s = TestStack::embedded(&env(&[]), &[]).await;
    chaos(&s, Svc::Shipment, Some(json!({"error_rate": 1.0}))).await;
    let key = [("Idempotency-Key", "order-recovers")];
    let first = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    assert_eq!(first.json["status"], "degraded", "{}", first.text);
    let id = first.json["saga_id"]
        .as_str()
        .expect("a saga id")
        .to_string();

    chaos(&s, Svc::Shipment, None).await;
    let order = until_status(&s, Svc::Order, &id, "completed").await;
    let payment_id = order["next"]["saga_id"].as_str().expect("payment's id");
    let payment = status_of(&s, Svc::Payment, payment_id).await;
    assert_eq!(payment["status"], "completed", "{payment}");
    assert!(
        steps(&payment).iter().any(|s| s == "redrive:completed"),
        "payment finished by its re-driver: {:?}",
        steps(&payment)
    );

    // The client's retry of the same request now sees the finished saga.
    let again = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["status"], "completed", "{}", again.text);
    assert_eq!(again.json["saga_id"], first.json["saga_id"]);
    assert_eq!(
        (s.count(Svc::Payment).await, s.count(Svc::Shipment).await),
        (1, 1)
    );
    let report = s.verify().await;
    assert!(report.ok(), "{report:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_accepted_but_never_answered_is_finished_by_its_own_redriver() {
    // INJECT_ERR: shipment stores its record, then answers 502 — as if it died before answering.
    // Attempts enough to outlast shipment's wait for the request's deadline (else payment gives
    // up first and the saga is compensated, which is right, but not this test's point).
    let s = TestStack::embedded(
        &env(&[("ERR_RATE", "1"), ("SAGA_MAX_ATTEMPTS", "1000")]),
        &["shipment"],
    )
    .await;
    let first = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(first.json["status"], "degraded", "{}", first.text);
    let id = first.json["saga_id"]
        .as_str()
        .expect("a saga id")
        .to_string();

    // Shipment's re-driver completes its pending record (nothing after it to call); payment's
    // next re-drive gets that as the replay, and order's gets payment's.
    let order = until_status(&s, Svc::Order, &id, "completed").await;
    let payment_id = order["next"]["saga_id"].as_str().expect("payment's id");
    let payment = status_of(&s, Svc::Payment, payment_id).await;
    let shipment_id = payment["next"]["saga_id"].as_str().expect("shipment's id");
    let shipment = status_of(&s, Svc::Shipment, shipment_id).await;
    assert_eq!(shipment["status"], "completed", "{shipment}");
    assert!(
        steps(&shipment).contains(&"redrive:completed".to_string()),
        "{:?}",
        steps(&shipment)
    );
    assert_eq!(
        s.count(Svc::Shipment).await,
        1,
        "retries and re-drives made one shipment"
    );
    let report = s.verify().await;
    assert!(report.ok(), "{report:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_the_saga_is_compensated_all_the_way_down() {
    let s = TestStack::embedded(&env(&[("SAGA_MAX_ATTEMPTS", "2")]), &[]).await;
    chaos(&s, Svc::Shipment, Some(json!({"error_rate": 1.0}))).await;
    let first = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(first.json["status"], "degraded", "{}", first.text);
    let id = first.json["saga_id"]
        .as_str()
        .expect("a saga id")
        .to_string();
    let payment_id = first.json["next"]["saga_id"]
        .as_str()
        .expect("payment's id")
        .to_string();

    // Payment gives up (or order does first and cancels it), but can't reach shipment to undo
    // it either: it keeps compensating.
    let payment = until_status(&s, Svc::Payment, &payment_id, "compensating").await;
    let steps = steps(&payment);
    assert!(
        steps
            .iter()
            .any(|s| s == "give up:compensating" || s == "compensate:compensating"),
        "{steps:?}"
    );
    chaos(&s, Svc::Shipment, None).await;

    let order = until_status(&s, Svc::Order, &id, "compensated").await;
    let payment = until_status(&s, Svc::Payment, &payment_id, "compensated").await;
    // Shipment never stored anything (chaos refused it before accepting): the compensation
    // left a tombstone, so a late request under that key can't ship a refunded order.
    let shipment_id = payment["next"]["saga_id"]
        .as_str()
        .expect("the tombstone's id");
    let shipment = status_of(&s, Svc::Shipment, shipment_id).await;
    assert_eq!(shipment["status"], "compensated", "{shipment}");
    assert_eq!(order["status"], "compensated");
    let report = s.verify().await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.counts["orders"]["compensated"], 1, "{report:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensating_an_unknown_key_leaves_a_tombstone_a_late_request_respects() {
    let s = TestStack::embedded(&env(&[]), &[]).await;
    let key = "0190b3a4-0000-7000-8000-000000000000/order";
    let url = format!("{}/compensate", s.url(Svc::Payment));
    let undo = s
        .http
        .post(&url)
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("compensate answers");
    let undo = testkit::reply(undo).await;
    assert_eq!(undo.status, 200, "{}", undo.text);
    assert_eq!(undo.json["status"], "compensated");

    // The create that was "still on its way" arrives: nothing is paid, nothing shipped.
    let payment = json!({"amount": 5, "id": "1", "shipment": {"id": "1", "directions": "home"}});
    let late = s
        .post_with(
            Svc::Payment,
            "/create?count=1",
            &payment,
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(late.status, 200, "{}", late.text);
    assert_eq!(late.json["status"], "compensated", "{}", late.text);
    assert_eq!(late.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        (s.count(Svc::Payment).await, s.count(Svc::Shipment).await),
        (1, 0)
    );

    // Asking again is harmless, and the key is required.
    let again = testkit::reply(
        s.http
            .post(&url)
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("compensate answers"),
    )
    .await;
    assert_eq!(
        (again.status, again.json["status"].clone()),
        (200, json!("compensated"))
    );
    let keyless = testkit::reply(s.http.post(&url).send().await.expect("answers")).await;
    assert_eq!(keyless.status, 400, "{}", keyless.text);
    assert_eq!(keyless.json["field"], "Idempotency-Key");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensating_a_completed_saga_reports_it_completed_and_undoes_nothing() {
    let s = TestStack::embedded(&env(&[]), &[]).await;
    let done = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(done.json["status"], "completed", "{}", done.text);
    let key = format!("{}/order", done.json["saga_id"].as_str().expect("id"));
    let res = s
        .http
        .post(format!("{}/compensate", s.url(Svc::Payment)))
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("compensate answers");
    let res = testkit::reply(res).await;
    assert_eq!(
        (res.status, res.json["status"].clone()),
        (200, json!("completed"))
    );
    let report = s.verify().await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.counts["payments"]["completed"], 1);
    s.stop().await;
}

/// A stand-in shipment that counts `/create` calls per idempotency key and fails until told
/// otherwise: what two re-drivers sharing one database do to the next hop, made visible.
async fn counting_shipment(
    healthy: Arc<AtomicBool>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/create",
        post(move |headers: HeaderMap| {
            let (healthy, calls) = (healthy.clone(), calls.clone());
            async move {
                if !healthy.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                }
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                *calls.lock().expect("not poisoned").entry(key).or_default() += 1;
                (StatusCode::OK, axum::Json(json!({"status": "completed"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_records_but_never_drive_one_twice() {
    use shared::service::{serve, state_with_store};
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let shipment = counting_shipment(healthy.clone(), calls.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn shared::store::Store> = Arc::new(
        shared::store::EmbeddedStore::open(dir.path(), "payments").expect("open the store"),
    );
    let mut lookup: HashMap<String, String> = FAST
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    lookup.insert("PORT".into(), "0".into());
    lookup.insert("CHAIN_SVC".into(), shipment);
    // A breaker that never opens, so both replicas keep calling while shipment is down.
    lookup.insert("BREAKER_ENABLED".into(), "false".into());
    let config = || {
        shared::Config::from_lookup("payment", 3001, |k| lookup.get(k).cloned())
            .expect("the config parses")
    };
    let a = serve::<payment::Payment>(
        state_with_store::<payment::Payment>(config(), store.clone()).expect("state"),
    )
    .await
    .expect("replica a serves");
    let b = serve::<payment::Payment>(
        state_with_store::<payment::Payment>(config(), store.clone()).expect("state"),
    )
    .await
    .expect("replica b serves");

    let http = reqwest::Client::new();
    let n = 20;
    for i in 0..n {
        let body = json!({"amount": i, "id": i.to_string(), "shipment": {"id": "1", "directions": "home"}});
        let replica = if i % 2 == 0 { a.addr } else { b.addr };
        let res = http
            .post(format!("http://{replica}/create"))
            .json(&body)
            .send()
            .await
            .expect("payment answers");
        let res = testkit::reply(res).await;
        assert_eq!(res.json["status"], "degraded", "{}", res.text);
    }
    calls.lock().expect("not poisoned").clear();
    healthy.store(true, Ordering::SeqCst);

    eventually("all payments completed", WAIT, || async {
        let done = store
            .list_by_status(&[shared::saga::Status::Completed], 100)
            .await
            .expect("list");
        (done.len() == n).then_some(())
    })
    .await;
    let calls = calls.lock().expect("not poisoned").clone();
    assert_eq!(calls.len(), n, "every record was driven: {calls:?}");
    assert!(
        calls.values().all(|&c| c == 1),
        "a record was driven by both replicas: {calls:?}"
    );
    a.stop().await;
    b.stop().await;
}
