//! The HTTP edge without a socket: what a service answers to requests a client got wrong, from
//! its router driven in-process ([`TestRouter`], `tower::ServiceExt::oneshot`).
//!
//! The same answers `bad_input` checks over real ports and `http-tests/bad-input.http` against a
//! live stack, here without a port or a database server, so each edge case is a test of its own
//! and checks all of it: the status code, the JSON error body `{"error","message","field"}`, and
//! that a refused request stored nothing.

use axum::body::Body;
use axum::http::Method;
use order::Order;
use payment::Payment;
use serde_json::{json, Value};
use shared::service::MAX_HEADERS;
use shipment::Shipment;
use testkit::router::request;
use testkit::{seed, Reply, TestRouter};

/// A UUID v7 nobody created.
const UNKNOWN_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// `r` is the JSON error `{"error","message","field"}` with this status, code and field.
fn assert_error(r: &Reply, status: u16, error: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text
    );
    assert_eq!(r.json["error"], error, "{}", r.text);
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    let field = field.map_or(Value::Null, |f| json!(f));
    assert_eq!(r.json.get("field"), Some(&field), "{}", r.text);
}

/// The seed order with `change` applied.
fn order_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = seed();
    change(&mut body);
    body
}

#[tokio::test]
async fn malformed_json_is_a_400_with_an_empty_field() {
    let svc = TestRouter::new::<Order>(&[]);
    for body in [
        &b"{\"id\":"[..],
        b"{\"id\":\"1\",\"items\":[],\"payment\":{\"amount\":0,",
    ] {
        let r = svc
            .post_raw("/create", "application/json", body.to_vec())
            .await;
        assert_error(&r, 400, "invalid_json", None);
    }
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_400() {
    let svc = TestRouter::new::<Order>(&[]);
    let r = svc.post("/create", &json!([1, 2, 3])).await;
    assert_error(&r, 400, "invalid_body", None);
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn a_missing_field_is_named_by_its_dotted_path() {
    let svc = TestRouter::new::<Order>(&[]);
    let cases = [
        (
            order_with(|b| {
                b["payment"]["shipment"]
                    .as_object_mut()
                    .map(|s| s.remove("directions"));
            }),
            "payment.shipment.directions",
        ),
        (
            order_with(|b| {
                b["payment"].as_object_mut().map(|p| p.remove("amount"));
            }),
            "payment.amount",
        ),
        (json!({"id": "1", "items": []}), "payment"),
    ];
    for (body, field) in cases {
        let r = svc.post("/create", &body).await;
        assert_error(&r, 400, "invalid_field", Some(field));
        let message = r.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn a_wrong_typed_or_invalid_field_is_named_by_its_dotted_path() {
    let svc = TestRouter::new::<Order>(&[]);
    let cases = [
        (
            order_with(|b| b["payment"]["shipment"]["directions"] = json!(5)),
            "payment.shipment.directions",
        ),
        (
            order_with(|b| b["payment"]["amount"] = json!("zero")),
            "payment.amount",
        ),
        (
            order_with(|b| b["payment"]["amount"] = json!(-1)),
            "payment.amount",
        ),
        (order_with(|b| b["id"] = json!("")), "id"),
    ];
    for (body, field) in cases {
        let r = svc.post("/create", &body).await;
        assert_error(&r, 400, "invalid_field", Some(field));
        let message = r.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message}");
    }
    // Line items are opaque, but objects.
    let r = svc
        .post(
            "/create",
            &order_with(|b| b["items"] = json!([[null, null]])),
        )
        .await;
    assert_eq!((r.status, &r.json["error"]), (400, &json!("invalid_field")));
    assert!(
        r.json["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("items")),
        "{}",
        r.text
    );
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn paths_are_relative_to_each_services_own_body() {
    let payment = TestRouter::new::<Payment>(&[]);
    let r = payment
        .post("/create", &json!({"amount": 0, "id": "1"}))
        .await;
    assert_error(&r, 400, "invalid_field", Some("shipment"));
    assert_eq!(payment.count().await, 0);

    let shipment = TestRouter::new::<Shipment>(&[]);
    let r = shipment
        .post("/create", &json!({"id": "1", "directions": 5}))
        .await;
    assert_error(&r, 400, "invalid_field", Some("directions"));
    assert_eq!(shipment.count().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let svc = TestRouter::new::<Order>(&[]);
    let r = svc
        .post_raw("/create", "text/plain", seed().to_string().into_bytes())
        .await;
    assert_error(&r, 415, "unsupported_media_type", None);
    let r = svc
        .send(request(
            Method::POST,
            "/create",
            &[],
            Body::from(seed().to_string()),
        ))
        .await;
    assert_error(&r, 415, "unsupported_media_type", None);
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_a_413_that_closes_the_connection() {
    let svc = TestRouter::new::<Order>(&[]);
    // Over the default 64 KiB, as bad-input.http sends it.
    let big = order_with(|b| b["items"] = json!(["x".repeat(70 * 1024)])).to_string();
    let length = big.len().to_string();
    let streamed = request(
        Method::POST,
        "/create",
        &[("content-type", "application/json")],
        Body::from(big.clone()),
    );
    let declared = request(
        Method::POST,
        "/create",
        &[
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        Body::from(big),
    );
    for req in [streamed, declared] {
        let r = svc.send(req).await;
        assert_error(&r, 413, "payload_too_large", None);
        assert_eq!(r.header("connection"), Some("close"), "{}", r.text);
    }
    assert_eq!(svc.count().await, 0);

    // The limit is MAX_BODY_BYTES, not a constant.
    let small = TestRouter::new::<Order>(&[("MAX_BODY_BYTES", "1024")]);
    let r = small
        .post(
            "/create",
            &order_with(|b| b["items"] = json!(vec!["x".repeat(100); 20])),
        )
        .await;
    assert_error(&r, 413, "payload_too_large", None);
    assert_eq!(small.post("/create", &seed()).await.status, 200);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_a_json_431() {
    let svc = TestRouter::new::<Order>(&[]);
    // `extra` headers of `size` bytes besides Content-Type.
    let send = |extra: usize, size: usize| {
        let names: Vec<String> = (0..extra).map(|i| format!("x-extra-{i}")).collect();
        let value = "v".repeat(size);
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(names.iter().map(|n| (n.as_str(), value.as_str())));
        svc.send(request(
            Method::POST,
            "/create",
            &headers,
            Body::from(seed().to_string()),
        ))
    };
    for (extra, size) in [(MAX_HEADERS, 1), (70, 1), (2, 12 * 1024)] {
        let r = send(extra, size).await;
        assert_error(&r, 431, "headers_too_large", None);
    }
    assert_eq!(svc.count().await, 0);
    let ok = send(MAX_HEADERS - 1, 100).await;
    assert_eq!(
        ok.status, 200,
        "exactly {MAX_HEADERS} headers pass: {}",
        ok.text
    );
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let svc = TestRouter::new::<Order>(&[]);
    assert_error(&svc.get("/no/such/route").await, 404, "not_found", None);
    assert_error(&svc.post("/nope", &seed()).await, 404, "not_found", None);
    // The chaos API is absent unless CHAOS_ENABLED.
    assert_error(&svc.get("/chaos").await, 404, "not_found", None);
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let svc = TestRouter::new::<Order>(&[]);
    assert_error(&svc.get("/create").await, 405, "method_not_allowed", None);
    assert_error(
        &svc.post("/health", &seed()).await,
        405,
        "method_not_allowed",
        None,
    );
}

#[tokio::test]
async fn a_malformed_deadline_is_a_400_naming_the_header() {
    let svc = TestRouter::new::<Order>(&[]);
    for path in ["/create", "/compensate"] {
        let r = svc
            .post_with(path, &seed(), &[("x-deadline-ms", "abc")])
            .await;
        assert_error(&r, 400, "invalid_header", Some("X-Deadline-Ms"));
    }
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn a_blank_idempotency_key_is_a_400_naming_the_header() {
    let svc = TestRouter::new::<Order>(&[]);
    let r = svc
        .post_with("/create", &seed(), &[("idempotency-key", " ")])
        .await;
    assert_error(&r, 400, "invalid_header", Some("Idempotency-Key"));
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_replay_the_first_answer() {
    let svc = TestRouter::new::<Order>(&[]);
    let key = [("idempotency-key", "handlers-replay")];
    let first = svc.post_with("/create", &seed(), &key).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["status"], "completed", "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = svc.post_with("/create", &seed(), &key).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(svc.count().await, 1);
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_a_409() {
    let svc = TestRouter::new::<Order>(&[]);
    let key = [("idempotency-key", "handlers-conflict")];
    let first = svc.post_with("/create", &seed(), &key).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let other = order_with(|b| b["id"] = json!("2"));
    let r = svc.post_with("/create", &other, &key).await;
    assert_error(&r, 409, "conflict", None);
    // Another count is another request too.
    let r = svc.post_with("/create?count=1", &seed(), &key).await;
    assert_error(&r, 409, "conflict", None);
    assert_eq!(svc.count().await, 1);
}

#[tokio::test]
async fn a_count_at_jumps_answers_last_and_stores_nothing() {
    let svc = TestRouter::new::<Order>(&[("JUMPS", "6")]);
    for (query, count) in [("count=5", 6), ("count=7", 8)] {
        let r = svc.post(&format!("/create?{query}"), &seed()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json,
            json!({
                "service": "order", "saga_id": null, "id": "1", "count": count,
                "status": "last", "next": null, "fallback": null, "message": "Last"
            })
        );
        assert_eq!(r.header("location"), None);
    }
    assert_eq!(svc.count().await, 0);

    // One below the limit is a saga like any other; garbage counts as zero.
    let r = svc.post("/create?count=4", &seed()).await;
    assert_eq!(
        (r.json["count"].clone(), r.json["status"].clone()),
        (json!(5), json!("completed"))
    );
    for query in ["count=abc", "count=-4", "count=", "nothing=1"] {
        let r = svc.post(&format!("/create?{query}"), &seed()).await;
        assert_eq!(r.json["count"], 1, "{query}: {}", r.text);
    }
    assert_eq!(svc.count().await, 5);
}

#[tokio::test]
async fn record_ids_are_uuids_and_unknown_ones_are_404s() {
    let svc = TestRouter::new::<Order>(&[]);
    let r = svc.get("/orders/not-a-uuid").await;
    assert_error(&r, 400, "invalid_id", Some("id"));
    let r = svc.get(&format!("/orders/{UNKNOWN_ID}")).await;
    assert_error(&r, 404, "not_found", None);

    let created = svc.post("/create", &seed()).await;
    let location = created.header("location").expect("a Location").to_string();
    let rec = svc.get(&location).await;
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["saga_id"], created.json["saga_id"]);
    assert_eq!(rec.json["status"], "completed");

    let payment = TestRouter::new::<Payment>(&[]);
    let r = payment.get(&format!("/payments/{UNKNOWN_ID}")).await;
    assert_error(&r, 404, "not_found", None);
    let shipment = TestRouter::new::<Shipment>(&[]);
    let r = shipment.get(&format!("/shipments/{UNKNOWN_ID}")).await;
    assert_error(&r, 404, "not_found", None);
}

#[tokio::test]
async fn compensate_without_an_idempotency_key_is_a_400_and_leaves_no_tombstone() {
    let svc = TestRouter::new::<Payment>(&[]);
    let r = svc
        .send(request(Method::POST, "/compensate", &[], Body::empty()))
        .await;
    assert_error(&r, 400, "missing_header", Some("Idempotency-Key"));
    assert_eq!(svc.count().await, 0);
}

#[tokio::test]
async fn past_max_in_flight_the_flow_is_shed_with_503_and_the_ops_routes_still_answer() {
    let svc = TestRouter::new::<Shipment>(&[("MAX_IN_FLIGHT", "1")]);
    let body = json!({"id": "1", "directions": "home"});
    // The one permit is taken, as by a request still in flight.
    let held = svc
        .state()
        .admission
        .clone()
        .try_acquire_owned()
        .expect("a free permit");
    let shed = svc.post("/create", &body).await;
    assert_eq!(shed.status, 503, "{}", shed.text);
    assert_eq!(shed.json["error"], "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(svc.count().await, 0, "nothing was accepted");
    assert_eq!(svc.get("/health").await.status, 200);
    assert_eq!(svc.get("/ready").await.status, 200);
    drop(held);
    let admitted = svc.post("/create", &body).await;
    assert_eq!(admitted.status, 200, "{}", admitted.text);
    assert_eq!(svc.count().await, 1);
}

#[tokio::test]
async fn ready_answers_draining_once_the_service_is_stopping() {
    let app = TestRouter::new::<Order>(&[]);
    assert_eq!(app.get("/ready").await.status, 200);
    app.state().shutdown.cancel();
    let r = app.get("/ready").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["reason"], "draining", "{}", r.text);
}
