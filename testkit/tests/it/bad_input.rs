//! Every way a client can get a request wrong gets a 4xx naming the problem, and stores nothing.

use serde_json::json;
use testkit::{mongo_stack_or_skip, seed, Svc, TestStack};

async fn assert_rejected(s: &TestStack, r: &testkit::Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], error, "{}", r.text);
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    for svc in [Svc::Order, Svc::Payment, Svc::Shipment] {
        assert_eq!(s.count(svc).await, 0, "{svc:?} stored a rejected request");
    }
}

#[tokio::test]
async fn malformed_input_is_rejected_with_the_field_named() {
    let s = mongo_stack_or_skip!(&[("MAX_BODY_BYTES", "1024")], &[]);

    let r = s
        .post_raw(
            Svc::Order,
            "/create",
            "application/json",
            b"{\"id\":".to_vec(),
        )
        .await;
    assert_rejected(&s, &r, 400, "invalid_json").await;

    let r = s.post(Svc::Order, "/create", &json!([1, 2])).await;
    assert_rejected(&s, &r, 400, "invalid_body").await;

    let mut missing = seed();
    missing["payment"]
        .as_object_mut()
        .map(|p| p.remove("amount"));
    let r = s.post(Svc::Order, "/create", &missing).await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert_eq!(r.json["field"], "payment.amount", "{}", r.text);

    // Line items are opaque, but objects (as /openapi.json says): found by schemathesis.
    let mut odd = seed();
    odd["items"] = json!([[null, null]]);
    let r = s.post(Svc::Order, "/create", &odd).await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert!(
        r.json["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("items")),
        "{}",
        r.text
    );

    let mut wrong = seed();
    wrong["payment"]["shipment"]["directions"] = json!(5);
    let r = s.post(Svc::Order, "/create", &wrong).await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert_eq!(r.json["field"], "payment.shipment.directions");

    let mut negative = seed();
    negative["payment"]["amount"] = json!(-1);
    let r = s.post(Svc::Order, "/create", &negative).await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert_eq!(r.json["field"], "payment.amount");

    let mut empty_id = seed();
    empty_id["id"] = json!("");
    let r = s.post(Svc::Order, "/create", &empty_id).await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert_eq!(r.json["field"], "id");

    let r = s
        .post(Svc::Order, "/create", &json!({"id": "1", "items": []}))
        .await;
    assert_rejected(&s, &r, 400, "invalid_field").await;
    assert_eq!(r.json["field"], "payment");

    let r = s
        .post_raw(
            Svc::Order,
            "/create",
            "text/plain",
            seed().to_string().into_bytes(),
        )
        .await;
    assert_rejected(&s, &r, 415, "unsupported_media_type").await;

    let mut big = seed();
    big["items"] = json!(vec!["x".repeat(100); 20]);
    let r = s.post(Svc::Order, "/create", &big).await;
    assert_rejected(&s, &r, 413, "payload_too_large").await;
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the unread body ends the connection"
    );

    let r = s
        .post_with(Svc::Order, "/create", &seed(), &[("idempotency-key", " ")])
        .await;
    assert_rejected(&s, &r, 400, "invalid_header").await;

    let r = s
        .post_with(Svc::Order, "/create", &seed(), &[("x-deadline-ms", "soon")])
        .await;
    assert_rejected(&s, &r, 400, "invalid_header").await;
    assert_eq!(r.json["field"], "X-Deadline-Ms");
    s.stop().await;
}

#[tokio::test]
async fn garbage_count_counts_as_zero() {
    let s = TestStack::embedded(&[], &[]).await;
    for q in ["count=abc", "count=-4", "count=", "nothing=1"] {
        let r = s.post(Svc::Order, &format!("/create?{q}"), &seed()).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(r.json["count"], 1, "{q}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_routes_are_json_404s() {
    let s = TestStack::embedded(&[], &[]).await;
    let r = s
        .get(Svc::Order, "/orders/01939b6a-0000-7000-8000-000000000000")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"], "not_found");
    let r = s.get(Svc::Order, "/orders/not-a-uuid").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["field"], "id");
    let r = s.get(Svc::Order, "/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"], "not_found");
    let r = s.get(Svc::Order, "/create").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json["error"], "method_not_allowed");
    s.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_saga() {
    let s = mongo_stack_or_skip!(&[], &[]);
    let key = [("idempotency-key", "test-key-1")];
    let a = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    let b = s.post_with(Svc::Order, "/create", &seed(), &key).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(a.json, b.json);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(a.header("location"), b.header("location"));
    for svc in [Svc::Order, Svc::Payment, Svc::Shipment] {
        assert_eq!(s.count(svc).await, 1, "{svc:?}");
    }
    let mut other = seed();
    other["id"] = json!("2");
    let c = s.post_with(Svc::Order, "/create", &other, &key).await;
    assert_eq!(c.status, 409, "{}", c.text);
    assert_eq!(c.json["error"], "conflict");
    assert_eq!(s.count(Svc::Order).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_requests_with_one_key_make_one_saga() {
    // About idempotency, not speed: FerretDB under 49 concurrent replays (and this binary's
    // other tests) once took longer than the default 300 ms hop timeout in CI, and the one
    // saga answered `degraded`. A generous hop timeout keeps the test on its subject.
    let s = mongo_stack_or_skip!(&[("BREAKER_TIMEOUT_MS", "3000")], &[]);
    let key = [("idempotency-key", "concurrent-key")];
    let body = seed();
    let replies =
        futures::future::join_all((0..50).map(|_| s.post_with(Svc::Order, "/create", &body, &key)))
            .await;
    let first = &replies[0];
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json, first.json, "every answer is the one saga's");
    }
    assert_eq!(first.json["status"], "completed", "{}", first.text);
    for svc in [Svc::Order, Svc::Payment, Svc::Shipment] {
        assert_eq!(s.count(svc).await, 1, "{svc:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_a_json_431() {
    let s = TestStack::embedded(&[], &[]).await;
    let send = |n: usize, size: usize| {
        let mut req = s
            .http
            .post(format!("{}/create", s.url(Svc::Order)))
            .header("content-type", "application/json")
            .body(seed().to_string());
        for i in 0..n {
            req = req.header(format!("x-extra-{i}"), "v".repeat(size));
        }
        req.send()
    };
    // 70: over our 64, under hyper's own 100 (which answers 431 without a body).
    for (n, size) in [(70, 1), (2, 12 * 1024)] {
        let r = testkit::reply(send(n, size).await.expect("answers")).await;
        assert_eq!(r.status, 431, "{n} headers of {size} bytes: {}", r.text);
        assert_eq!(r.json["error"], "headers_too_large", "{}", r.text);
    }
    assert_eq!(s.count(Svc::Order).await, 0);
    let ok = testkit::reply(send(10, 100).await.expect("answers")).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    s.stop().await;
}
