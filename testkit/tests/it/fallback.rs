//! `FALLBACK=false`: a failed next hop fails the request with 502 instead of answering
//! `degraded`, and nothing accepted is lost for it.

use testkit::{seed, Svc, TestStack};

/// The re-driver stays out of the way (its first re-drive is a minute off), so what moves the
/// records here is the requests alone.
const QUIET_REDRIVER: [(&str, &str); 2] = [
    ("SAGA_BACKOFF_BASE_MS", "60000"),
    ("SAGA_BACKOFF_CAP_MS", "60000"),
];

#[tokio::test]
async fn without_fallback_a_failed_hop_is_a_502_naming_the_reason_and_a_retry_finishes_it() {
    let mut env = vec![("FALLBACK", "false"), ("ERR_RATE", "1")];
    env.extend(QUIET_REDRIVER);
    let mut s = TestStack::embedded(&env, &["shipment"]).await;

    // Payment itself: shipment's injected 502 is not hidden behind a degraded answer.
    let body = &seed()["payment"];
    let r = s.post(Svc::Payment, "/create", body).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"], "next_hop_failed", "{}", r.text);
    assert_eq!(r.json["reason"], "http 502", "{}", r.text);
    let message = r.json["message"].as_str().unwrap_or_default();
    assert!(message.contains("payment->shipment"), "{message}");
    assert!(message.contains("FALLBACK=false"), "{message}");
    // The record was persisted and waits for the re-driver, degraded, with no answer saved.
    let id = r.json["saga_id"].as_str().expect("the 502 names the saga");
    let rec = s.get(Svc::Payment, &format!("/payments/{id}")).await;
    assert_eq!(rec.json["status"], "degraded", "{}", rec.text);
    assert_eq!(rec.json["fallback"]["reason"], "http 502", "{}", rec.text);

    // Through order, under a key: the whole chain fails, each hop with a 502 of its own.
    let key = [("idempotency-key", "no-fallback-1")];
    let r = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"], "next_hop_failed");
    assert_eq!(r.json["reason"], "http 502", "{}", r.text);
    assert_eq!(s.count(Svc::Order).await, 1);

    // Shipment recovers; the client's retry under the same key carries the stored records on
    // (no saved 502 is replayed) and completes the chain without a second record anywhere.
    s.restart_shipment(false).await;
    let again = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["status"], "completed", "{}", again.text);
    assert_eq!(again.json["saga_id"], r.json["saga_id"]);
    assert_eq!(s.count(Svc::Order).await, 1);
    assert_eq!(s.count(Svc::Payment).await, 2);
    s.stop().await;
}

#[tokio::test]
async fn with_the_default_fallback_the_same_failure_answers_degraded() {
    let mut env = vec![("ERR_RATE", "1")];
    env.extend(QUIET_REDRIVER);
    let s = TestStack::embedded(&env, &["shipment"]).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "degraded", "{}", r.text);
    assert_eq!(
        r.json["next"]["fallback"]["reason"], "http 502",
        "{}",
        r.text
    );
    s.stop().await;
}

#[tokio::test]
async fn breaker_counts_the_calls_sent_to_the_next_hop_even_those_given_up_on() {
    let stack = TestStack::embedded(
        &[("CHAOS_ENABLED", "true"), ("BREAKER_TIMEOUT_MS", "100")],
        &[],
    )
    .await;
    let s = &stack;
    let calls = |svc| async move { s.get(svc, "/breaker").await.json["next_hop_calls"].clone() };
    assert_eq!(calls(Svc::Payment).await, 0);
    // Shipment answers after 300 ms: payment gives up at 100 ms, but the call was sent.
    let slow = s
        .put_chaos(Svc::Shipment, serde_json::json!({"latency_ms": 300}), None)
        .await;
    assert_eq!(slow.status, 200);
    let r = s.post(Svc::Payment, "/create", &seed()["payment"]).await;
    assert_eq!(r.json["fallback"]["reason"], "timeout", "{}", r.text);
    assert_eq!(calls(Svc::Payment).await, 1);
    assert_eq!(calls(Svc::Order).await, 0);
    // The last hop calls nobody.
    assert_eq!(calls(Svc::Shipment).await, serde_json::Value::Null);
    stack.stop().await;
}
