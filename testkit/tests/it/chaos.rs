//! Faults switched at runtime through `/chaos`, seen from the caller's side.

use serde_json::json;
use testkit::{reply, seed, Svc, TestStack};

#[tokio::test]
async fn faults_switch_at_runtime_and_the_caller_degrades_with_the_reason() {
    let s = TestStack::embedded(
        &[
            ("CHAOS_ENABLED", "true"),
            ("BREAKER_MIN_CALLS", "100"),
            ("BREAKER_TIMEOUT_MS", "500"),
        ],
        &[],
    )
    .await;
    let r = s
        .put_chaos(Svc::Shipment, json!({"error_rate": 1, "status": 500}), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.get(Svc::Shipment, "/chaos").await.json["error_rate"], 1.0);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(
        r.json["next"]["fallback"]["reason"], "http 500",
        "{}",
        r.text
    );
    assert_eq!(
        s.count(Svc::Shipment).await,
        0,
        "a chaos failure accepts nothing"
    );

    // A hang: the breaker's timeout answers for shipment.
    s.put_chaos(Svc::Shipment, json!({"hang": true}), None)
        .await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    // Payment times out on shipment and answers within order's budget — or, on a loaded
    // machine, persists too slowly and order's own timeout answers first: a timeout either way.
    let payment_timed_out = r.json["next"]["fallback"]["reason"] == "timeout";
    let order_timed_out = r.json["fallback"]["reason"] == "timeout";
    assert!(payment_timed_out || order_timed_out, "{}", r.text);
    assert_eq!(r.json["status"], "degraded", "{}", r.text);

    // Added latency under the timeout: slower, still complete.
    s.put_chaos(
        Svc::Shipment,
        json!({"latency_ms": 20, "latency_max_ms": 40}),
        None,
    )
    .await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);

    s.clear_chaos(Svc::Shipment).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    s.stop().await;
}

#[tokio::test]
async fn bad_faults_are_refused_naming_the_field() {
    let s = TestStack::embedded(&[("CHAOS_ENABLED", "1")], &[]).await;
    let r = s
        .put_chaos(Svc::Order, json!({"error_rate": 2}), None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["field"], "error_rate");
    let r = s.put_chaos(Svc::Order, json!({"hang": "yes"}), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["field"], "hang");
    let r = s.put_chaos(Svc::Order, json!({"surprise": 1}), None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(s.get(Svc::Order, "/chaos").await.json["error_rate"], 0.0);
    s.stop().await;
}

#[tokio::test]
async fn the_chaos_api_is_absent_unless_enabled_and_guarded_by_its_token() {
    let off = TestStack::embedded(&[], &[]).await;
    assert_eq!(off.get(Svc::Order, "/chaos").await.status, 404);
    off.stop().await;

    let s = TestStack::embedded(&[("CHAOS_ENABLED", "true"), ("CHAOS_TOKEN", "s3cret")], &[]).await;
    let r = s
        .put_chaos(Svc::Order, json!({"error_rate": 1}), None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"], "unauthorized");
    let r = s
        .put_chaos(Svc::Order, json!({"error_rate": 1}), Some("wrong"))
        .await;
    assert_eq!(r.status, 401);
    let r = s
        .put_chaos(Svc::Order, json!({"error_rate": 1}), Some("s3cret"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["error"], "chaos");
    s.stop().await;
}

#[tokio::test]
async fn clearing_a_hang_releases_the_requests_it_holds() {
    // A hang holds a request for REQUEST_TIMEOUT_MS: a minute here, far past this test's waits.
    let s = TestStack::embedded(
        &[("CHAOS_ENABLED", "true"), ("REQUEST_TIMEOUT_MS", "60000")],
        &[],
    )
    .await;
    s.put_chaos(Svc::Shipment, json!({"hang": true}), None)
        .await;
    let held = tokio::spawn({
        let req = s
            .http
            .post(format!("{}/create", s.url(Svc::Shipment)))
            .header("content-type", "application/json")
            .timeout(std::time::Duration::from_secs(90))
            .body(json!({"id": "7", "directions": "home"}).to_string());
        async move { reply(req.send().await.expect("POST /create")).await }
    });
    // Held: still unanswered well after it was sent.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the hang let the request through");

    s.clear_chaos(Svc::Shipment).await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), held)
        .await
        .expect("the held request was not released when the hang was cleared")
        .expect("request task");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    assert_eq!(s.count(Svc::Shipment).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_capacity_fault_keeps_serving_a_request_its_caller_abandoned() {
    let s = TestStack::embedded(
        &[
            ("CHAOS_ENABLED", "true"),
            ("BREAKER_MIN_CALLS", "100"),
            ("BREAKER_TIMEOUT_MS", "500"),
        ],
        &[],
    )
    .await;
    let r = s
        .put_chaos(Svc::Shipment, json!({"workers": 0}), None)
        .await;
    assert_eq!((r.status, r.json["field"].as_str()), (400, Some("workers")));
    let r = s
        .put_chaos(Svc::Shipment, json!({"service_ms": 10}), None)
        .await;
    assert_eq!(r.json["field"], "service_ms", "{}", r.text);

    // One worker, each request holding it a minute: far past every wait of this test.
    let r = s
        .put_chaos(
            Svc::Shipment,
            json!({"workers": 1, "service_ms": 60000}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("a client");
    let abandoned = impatient
        .post(format!("{}/create", s.url(Svc::Shipment)))
        .header("content-type", "application/json")
        .body(seed().to_string())
        .send()
        .await;
    assert!(
        abandoned.is_err_and(|e| e.is_timeout()),
        "the first caller gives up"
    );
    // The service gets fast, same worker: what waits now waits only for work already taken.
    let r = s
        .put_chaos(Svc::Shipment, json!({"workers": 1, "service_ms": 1}), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The abandoned request's work still holds the only worker for its minute: payment's call
    // waits behind it and times out (or, on a loaded machine, order's own timeout answers
    // first: a timeout either way). Had the work ended with its caller, this one would take
    // the free worker for 1 ms and complete.
    let r = s.post(Svc::Order, "/create", &seed()).await;
    let timed_out = r.json["next"]["fallback"]["reason"] == "timeout"
        || r.json["fallback"]["reason"] == "timeout";
    assert!(timed_out, "{}", r.text);
    // Clearing the fault frees shipment.
    s.clear_chaos(Svc::Shipment).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    s.stop().await;
}
