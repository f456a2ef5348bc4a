//! The chain end to end: three real services on loopback ports, a real MongoDB-wire server.

use serde_json::json;
use testkit::{mongo_stack_or_skip, seed, Svc, TestStack};

#[tokio::test]
async fn happy_path_leaves_one_record_in_each_collection() {
    let s = mongo_stack_or_skip!(&[], &[]);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["service"], "order");
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    assert_eq!(r.json["count"], 1);
    assert_eq!(r.json["fallback"], json!(null));
    assert_eq!(r.json["next"]["service"], "payment");
    assert_eq!(r.json["next"]["count"], 2);
    assert_eq!(r.json["next"]["next"]["service"], "shipment");
    assert_eq!(r.json["next"]["next"]["status"], "completed");
    let saga_id = r.json["saga_id"].as_str().expect("a saga id").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/orders/{saga_id}").as_str())
    );
    for svc in [Svc::Order, Svc::Payment, Svc::Shipment] {
        assert_eq!(s.count(svc).await, 1, "{svc:?}");
    }
    let rec = s.get(Svc::Order, &format!("/orders/{saga_id}")).await;
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["status"], "completed");
    assert_eq!(
        rec.json["body"]["payment"]["shipment"]["directions"],
        "home"
    );
    let steps: Vec<_> = rec.json["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["step"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(steps, ["accepted", "forward"]);

    let pay_id = r.json["next"]["saga_id"].as_str().expect("payment saga id");
    let pay = s.get(Svc::Payment, &format!("/payments/{pay_id}")).await;
    assert_eq!(pay.json["status"], "completed");
    s.stop().await;
}

#[tokio::test]
async fn the_same_business_id_posted_twice_is_two_orders() {
    let s = mongo_stack_or_skip!(&[], &[]);
    let a = s.post(Svc::Order, "/create", &seed()).await;
    let b = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.json["saga_id"], b.json["saga_id"]);
    assert_eq!(s.count(Svc::Shipment).await, 2);
    s.stop().await;
}

#[tokio::test]
async fn jumps_stops_the_chain() {
    let s = mongo_stack_or_skip!(&[("JUMPS", "2")], &[]);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "completed");
    assert_eq!(r.json["next"]["status"], "last");
    assert_eq!(r.json["next"]["message"], "Last");
    assert_eq!(r.json["next"]["count"], 2);
    assert_eq!(s.count(Svc::Order).await, 1);
    assert_eq!(s.count(Svc::Payment).await, 0);
    assert_eq!(s.count(Svc::Shipment).await, 0);

    // A count already at the limit stops at the first hop and stores nothing.
    let r = s.post(Svc::Order, "/create?count=7", &seed()).await;
    assert_eq!(r.json["status"], "last");
    assert_eq!(r.json["saga_id"], json!(null));
    assert_eq!(s.count(Svc::Order).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn injected_502_is_still_persisted() {
    let s = mongo_stack_or_skip!(&[("ERR_RATE", "1")], &["shipment"]);
    let body = &seed()["payment"]["shipment"];
    let r = s.post(Svc::Shipment, "/create", body).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"], "injected");
    assert_eq!(s.count(Svc::Shipment).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_failing_next_hop_degrades_with_an_explicit_fallback() {
    let s = mongo_stack_or_skip!(&[("ERR_RATE", "1")], &["shipment"]);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Payment skipped shipment: it says so, and order reports the chain as degraded.
    let pay = &r.json["next"];
    assert_eq!(pay["status"], "degraded", "{}", r.text);
    assert_eq!(pay["next"], json!(null));
    assert_eq!(pay["fallback"]["reason"], "http 502");
    assert_eq!(r.json["status"], "degraded");
    let id = pay["saga_id"].as_str().expect("payment saga id");
    let rec = s.get(Svc::Payment, &format!("/payments/{id}")).await;
    assert_eq!(rec.json["status"], "degraded");
    assert_eq!(rec.json["history"][1]["reason"], "http 502");
    s.stop().await;
}

#[tokio::test]
async fn the_chain_runs_on_the_embedded_store_too() {
    // About the store, not speed: a fresh stack's first request on a busy CI machine (debug
    // build, one runtime thread, the binary's other tests alongside) once took longer than the
    // default 300 ms hop timeout and answered `degraded` (0 of 20 runs here under a CPU hog).
    let s = TestStack::embedded(&[("BREAKER_TIMEOUT_MS", "3000")], &[]).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "completed");
    for svc in [Svc::Order, Svc::Payment, Svc::Shipment] {
        assert_eq!(s.count(svc).await, 1, "{svc:?}");
    }
    let ready = s.get(Svc::Order, "/ready").await;
    assert_eq!(ready.json["store"], "embedded");
    s.stop().await;
}

#[tokio::test]
async fn kernel_routes_answer() {
    let s = TestStack::embedded(&[], &[]).await;
    let hello = s.get(Svc::Payment, "/").await;
    assert_eq!(hello.text, "hello from payment");
    assert_eq!(s.get(Svc::Order, "/health").await.json["status"], "up");
    assert_eq!(s.get(Svc::Order, "/ready").await.status, 200);
    let b = s.get(Svc::Order, "/breaker").await;
    assert_eq!(b.json["breaker"]["name"], "order->payment");
    assert_eq!(b.json["breaker"]["state"], "closed");
    let last = s.get(Svc::Shipment, "/breaker").await;
    assert_eq!(last.json["breaker"], json!(null));
    s.post(Svc::Order, "/create", &seed()).await;
    let m = s.get(Svc::Order, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.text.contains("http_request_duration_seconds"),
        "{}",
        m.text
    );
    assert!(m.text.contains("breaker_events_total"), "{}", m.text);
    s.stop().await;
}

#[tokio::test]
async fn retries_reuse_the_hop_key_so_the_callee_stores_one_record() {
    let s = mongo_stack_or_skip!(
        &[
            ("ERR_RATE", "1"),
            ("RETRY_MAX_ATTEMPTS", "3"),
            ("RETRY_BASE_MS", "1"),
            ("RETRY_CAP_MS", "5"),
            ("BREAKER_MIN_CALLS", "100"),
        ],
        &["shipment"]
    );
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pay_id = r.json["next"]["saga_id"].as_str().expect("payment saga id");
    let pay = s.get(Svc::Payment, &format!("/payments/{pay_id}")).await;
    assert_eq!(pay.json["attempts"], 3, "{}", pay.text);
    assert_eq!(pay.json["status"], "degraded");
    assert_eq!(
        s.count(Svc::Shipment).await,
        1,
        "three attempts with one idempotency key are one shipment"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_deadline_below_the_floor_is_refused_and_a_generous_one_passes() {
    // A hop timeout a loaded machine's first (cold) call fits in.
    let s = TestStack::embedded(&[("BREAKER_TIMEOUT_MS", "3000")], &[]).await;
    // A 2 ms budget can't persist anything, and five of them must not be able to make the
    // next hop look slow: refused at the edge with a clear error, nothing stored or called.
    for _ in 0..5 {
        let r = s
            .post_with(Svc::Order, "/create", &seed(), &[("x-deadline-ms", "2")])
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["field"], "X-Deadline-Ms", "{}", r.text);
        assert!(
            r.json["message"]
                .as_str()
                .is_some_and(|m| m.contains("at least 50 ms")),
            "{}",
            r.text
        );
    }
    assert_eq!(s.count(Svc::Order).await, 0, "nothing was accepted");
    assert_eq!(s.count(Svc::Payment).await, 0, "payment was never called");
    let b = s.get(Svc::Order, "/breaker").await;
    assert_eq!(b.json["breaker"]["state"], "closed", "{}", b.text);
    // A generous budget passes through all three hops.
    let r = s
        .post_with(Svc::Order, "/create", &seed(), &[("x-deadline-ms", "5000")])
        .await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    s.stop().await;
}

#[tokio::test]
async fn saga_verify_passes_on_completed_chains_and_flags_a_lost_order() {
    let s = mongo_stack_or_skip!(&[], &[]);
    for _ in 0..3 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.json["status"], "completed", "{}", r.text);
    }
    let testkit::Backing::Mongo { server, db } = &s.backing else {
        unreachable!("a mongo stack")
    };
    let args = saga::verify::VerifyArgs {
        mongo_url: Some(server.uri().to_string()),
        mongo_db: db.clone(),
        data_dir: "unused".into(),
        stuck_after: 300,
        json: false,
    };
    assert!(saga::verify::run(args.clone())
        .await
        .expect("verify reads the collections"));

    // Lose one order behind the services' back (every stored version of it): its payment is
    // now an orphan.
    let client = mongodb::Client::with_uri_str(server.uri())
        .await
        .expect("client");
    let orders = client
        .database(db)
        .collection::<mongodb::bson::Document>("orders");
    let one = orders
        .find_one(mongodb::bson::doc! {})
        .await
        .expect("find an order")
        .expect("an order is stored");
    let saga_id = one
        .get_str("saga_id")
        .expect("a stored order has its saga id")
        .to_owned();
    orders
        .delete_many(mongodb::bson::doc! { "saga_id": saga_id })
        .await
        .expect("delete one order");
    assert!(!saga::verify::run(args)
        .await
        .expect("verify reads the collections"));
    s.stop().await;
}

#[tokio::test]
async fn the_stack_runs_with_the_redis_shared_breaker() {
    let Some(redis) = testkit::redis::redis_url() else {
        eprintln!("skipped: no Redis");
        return;
    };
    // A breaker name of its own: other tests share this Redis.
    let s = TestStack::embedded(
        &[
            ("BREAKER_BACKEND", "redis"),
            ("REDIS_URL", redis.as_str()),
            ("ERR_RATE", "1"),
            ("BREAKER_MIN_CALLS", "3"),
            ("BREAKER_RESET_MS", "60000"),
        ],
        &["shipment"],
    )
    .await;
    for _ in 0..4 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let b = s.get(Svc::Payment, "/breaker").await;
    assert_eq!(b.json["breaker"]["backend"], "redis", "{}", b.text);
    assert_eq!(b.json["breaker"]["state"], "open", "{}", b.text);
    s.stop().await;
}

#[tokio::test]
async fn each_service_serves_an_openapi_document_of_its_own_body() {
    let s = TestStack::embedded(&[], &[]).await;
    let doc = s.get(Svc::Order, "/openapi.json").await;
    assert_eq!(doc.status, 200);
    let d = &doc.json;
    assert!(
        d["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc.text
    );
    let body = &d["paths"]["/create"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/Order");
    let order = &d["components"]["schemas"]["Order"];
    let required: Vec<_> = order["required"].as_array().expect("required").clone();
    for f in ["id", "items", "payment"] {
        assert!(required.contains(&json!(f)), "{f} in {order}");
    }
    let shipment = &d["components"]["schemas"]["Shipment"];
    assert_eq!(
        shipment["properties"]["directions"]["maxLength"], 1000,
        "{shipment}"
    );
    assert!(d["paths"]["/orders/{id}"]["get"].is_object());

    let pay = s.get(Svc::Payment, "/openapi.json").await;
    assert!(pay.json["paths"]["/payments/{id}"]["get"].is_object());
    assert_eq!(
        pay.json["paths"]["/create"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Payment"
    );
    s.stop().await;
}
