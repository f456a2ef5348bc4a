//! Signed hop calls (`HOP_SECRET`), over real sockets: the chain signs and passes; a stranger
//! calling payment or shipment directly — unsigned, with a forged or stale signature, or a key
//! no longer listed — gets 401 and nothing is stored; a key being rotated out is still accepted
//! while it is listed.

use serde_json::{json, Value};
use shared::hop::keys::{HopKey, Secret};
use shared::hop::signature::{self, Call};
use testkit::{reply, seed, Reply, Svc, TestStack};

const OLD: &str = "old-secret-0123456789abcdef012345";
const NEW: &str = "new-secret-fedcba9876543210fedcba";

fn key(id: &str, secret: &str) -> HopKey {
    HopKey {
        id: id.into(),
        secret: Secret::new(secret),
    }
}

/// POSTs `body` (or nothing, for `/compensate`) to `svc`'s `path`, signed with `key` as of
/// `at` (Unix seconds) when a key is given. `sign_body` is what the signature covers, so a test
/// can sign one body and send another.
async fn call(
    s: &TestStack,
    svc: Svc,
    path: &str,
    idem: &str,
    body: Option<&Value>,
    signed: Option<(&HopKey, i64, Option<&Value>)>,
) -> Reply {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = s
        .http
        .post(format!("{}{path}", s.url(svc)))
        .header("idempotency-key", idem);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some((key, at, sign_body)) = signed {
        let covered = sign_body.map_or(bytes.clone(), |b| b.to_string());
        let headers = signature::sign(
            key,
            at,
            &Call {
                method: "POST",
                path_and_query: path,
                idempotency_key: Some(idem),
                body: covered.as_bytes(),
            },
        );
        for (name, value) in headers {
            req = req.header(name, value);
        }
    }
    reply(
        req.body(bytes)
            .send()
            .await
            .expect("POST reaches the service"),
    )
    .await
}

fn payment_part() -> Value {
    seed()["payment"].clone()
}

/// A signed `POST /create?count=1` of `body` to payment under the key `idem`.
async fn to_payment(
    s: &TestStack,
    idem: &str,
    body: &Value,
    signed: (&HopKey, i64, Option<&Value>),
) -> Reply {
    call(
        s,
        Svc::Payment,
        "/create?count=1",
        idem,
        Some(body),
        Some(signed),
    )
    .await
}

fn refused(r: &Reply, code: &str) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json["error"], code, "{}", r.text);
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn the_signed_chain_completes_and_unsigned_forged_or_stale_calls_are_refused() {
    let s = TestStack::embedded(&[("HOP_SECRET", NEW)], &[]).await;

    // The chain signs its own hops: the client needs no signature at the edge.
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    assert_eq!(r.json["next"]["next"]["status"], "completed", "{}", r.text);
    let (payments, shipments) = (s.count(Svc::Payment).await, s.count(Svc::Shipment).await);
    assert_eq!((payments, shipments), (1, 1));

    let now = signature::unix_now();
    let good = key("k1", NEW);
    let body = payment_part();
    let create = "/create?count=1";
    for svc in [Svc::Payment, Svc::Shipment] {
        // Unsigned: refused, on both routes.
        let r = call(&s, svc, create, "stranger/order", Some(&body), None).await;
        refused(&r, "signature_required");
        let r = call(&s, svc, "/compensate", "stranger/order", None, None).await;
        refused(&r, "signature_required");
    }
    // Signed with a secret we don't hold, under the right key id.
    let forged = key("k1", "not-the-secret-but-long-enough-000");
    let r = to_payment(&s, "x/order", &body, (&forged, now, None)).await;
    refused(&r, "signature_invalid");
    // A key id nobody listed.
    let unknown = key("k9", NEW);
    let r = to_payment(&s, "x/order", &body, (&unknown, now, None)).await;
    refused(&r, "signature_invalid");
    // A good signature over another body, or another idempotency key, or another path.
    let other = json!({"amount": 1000, "id": "1", "shipment": {"id": "1", "directions": "x"}});
    let r = to_payment(&s, "x/order", &other, (&good, now, Some(&body))).await;
    refused(&r, "signature_invalid");
    let headers_for_x = signature::sign(
        &good,
        now,
        &Call {
            method: "POST",
            path_and_query: "/compensate",
            idempotency_key: Some("x/order"),
            body: b"",
        },
    );
    let mut req = s
        .http
        .post(format!("{}/compensate", s.url(Svc::Payment)))
        .header("idempotency-key", "someone-elses/order");
    for (name, value) in headers_for_x {
        req = req.header(name, value);
    }
    let r = reply(req.send().await.expect("POST reaches payment")).await;
    refused(&r, "signature_invalid");
    // Stale: signed 31 s ago or 31 s ahead (the window is 30 s), or a replay a minute later.
    for at in [now - 31, now + 31, now - 60] {
        let r = to_payment(&s, "x/order", &body, (&good, at, None)).await;
        refused(&r, "signature_stale");
    }
    // None of it stored anything, or compensated the real saga.
    assert_eq!(s.count(Svc::Payment).await, payments);
    assert_eq!(s.count(Svc::Shipment).await, shipments);
    let order = s
        .get(Svc::Order, &format!("/orders/{}", r_saga(&s).await))
        .await;
    assert_eq!(order.json["status"], "completed", "{}", order.text);

    // A correctly signed direct call is an ordinary hop call; inside the window, sent twice it
    // is the same call, answered the same, stored once.
    let first = to_payment(&s, "direct/order", &body, (&good, now, None)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = to_payment(&s, "direct/order", &body, (&good, now, None)).await;
    assert_eq!(
        again.json["saga_id"], first.json["saga_id"],
        "{}",
        again.text
    );
    assert_eq!(s.count(Svc::Payment).await, payments + 1);
    s.stop().await;
}

/// The saga id of the one order the stack holds.
async fn r_saga(s: &TestStack) -> String {
    let recs = s
        .store(Svc::Order)
        .list_by_status(&[shared::saga::Status::Completed], 10)
        .await
        .expect("read orders");
    recs.first()
        .map(|r| r.saga_id.to_string())
        .expect("one completed order")
}

#[tokio::test]
async fn during_a_rotation_the_old_key_is_accepted_while_listed_and_refused_once_dropped() {
    // Mid-rotation: every service signs with k2 and still accepts k1.
    let s = TestStack::embedded(
        &[
            ("HOP_SECRET", NEW),
            ("HOP_KEY_ID", "k2"),
            ("HOP_ACCEPTED_SECRETS", &format!("k1:{OLD}")),
        ],
        &[],
    )
    .await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    let now = signature::unix_now();
    let body = payment_part();
    let old = key("k1", OLD);
    let r = to_payment(&s, "a/order", &body, (&old, now, None)).await;
    assert_eq!(r.status, 200, "the old key is still listed: {}", r.text);
    let r = call(
        &s,
        Svc::Shipment,
        "/compensate",
        "b/payment",
        None,
        Some((&old, now, None)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "compensated", "{}", r.text);
    s.stop().await;

    // Rotation done: k1 is dropped, and a call signed with it is refused.
    let s = TestStack::embedded(&[("HOP_SECRET", NEW), ("HOP_KEY_ID", "k2")], &[]).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    let r = to_payment(&s, "a/order", &body, (&old, now, None)).await;
    refused(&r, "signature_invalid");
    s.stop().await;
}

#[tokio::test]
async fn without_a_secret_hops_are_unsigned_and_accepted_as_before() {
    let s = TestStack::embedded(&[], &[]).await;
    let r = call(
        &s,
        Svc::Payment,
        "/create?count=1",
        "plain/order",
        Some(&payment_part()),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await;
}

#[tokio::test]
async fn a_secret_that_is_too_short_stops_start_up_without_being_shown() {
    let args = saga::up::UpArgs {
        host: std::net::IpAddr::from([127, 0, 0, 1]),
        order_port: 0,
        payment_port: 0,
        shipment_port: 0,
        mongo_url: None,
        inject_err: vec![],
        env: vec![("HOP_SECRET".into(), "hunter2-hunter2".into())],
        inherit_env: false,
    };
    let err = saga::up::config_for::<payment::Payment>(&args, 0, None)
        .expect_err("a 15-character secret is refused");
    let text = err.to_string();
    assert!(text.contains("HOP_SECRET"), "{text}");
    assert!(!text.contains("hunter2"), "the secret leaked: {text}");
}
