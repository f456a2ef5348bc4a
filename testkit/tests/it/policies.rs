//! `BREAKER_POLICY` seen from outside: the variable reaches payment's breaker (its `/breaker`
//! says so) and changes what opens it against a real shipment over HTTP. The policies' timing is
//! tested on the paused clock in `shared/src/breaker/policy_tests.rs`; here it is the wiring.

use serde_json::json;
use testkit::{seed, Svc, TestStack};

/// Payment's breaker as `/breaker` shows it.
async fn breaker(s: &TestStack) -> serde_json::Value {
    s.get(Svc::Payment, "/breaker").await.json["breaker"].clone()
}

#[tokio::test]
async fn count_opens_at_its_failures_where_the_rate_window_would_wait_for_min_calls() {
    // Shipment fails every call; min calls 100 would keep the rate policy closed all along.
    let base = [("ERR_RATE", "1"), ("BREAKER_MIN_CALLS", "100")];
    let mut env = base.to_vec();
    env.extend([("BREAKER_POLICY", "count"), ("BREAKER_FAILURES", "2")]);
    let count = TestStack::embedded(&env, &["shipment"]).await;
    let rate = TestStack::embedded(&base, &["shipment"]).await;

    let config = &breaker(&count).await["config"];
    assert_eq!(config["policy"], "count", "{config}");
    assert_eq!(config["failures"], 2, "{config}");
    assert_eq!(breaker(&rate).await["config"]["policy"], "rate");

    for s in [&count, &rate] {
        for _ in 0..3 {
            let r = s.post(Svc::Order, "/create", &seed()).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    let opened = breaker(&count).await;
    assert_eq!(opened["state"], "open", "{opened}");
    assert_eq!(
        opened["totals"]["failure"], 2,
        "the third call was not made: {opened}"
    );
    assert_eq!(breaker(&rate).await["state"], "closed");
    let r = count
        .post(Svc::Payment, "/create", &seed()["payment"])
        .await;
    assert_eq!(r.json["fallback"]["reason"], "open", "{}", r.text);
    count.stop().await;
    rate.stop().await;
}

#[tokio::test]
async fn slow_counts_answers_past_the_line_and_the_client_still_gets_them() {
    let env = [
        ("CHAOS_ENABLED", "true"),
        ("BREAKER_POLICY", "slow"),
        ("BREAKER_SLOW_CALL_MS", "60"),
        ("BREAKER_TIMEOUT_MS", "2000"),
        ("BREAKER_MIN_CALLS", "3"),
    ];
    let s = TestStack::embedded(&env, &[]).await;
    assert_eq!(breaker(&s).await["config"]["slow_call_ms"], 60);
    let slowed = s
        .put_chaos(Svc::Shipment, json!({"latency_ms": 200}), None)
        .await;
    assert_eq!(slowed.status, 200);

    for _ in 0..3 {
        let r = s.post(Svc::Payment, "/create", &seed()["payment"]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["status"], "completed",
            "slow, not failed: {}",
            r.text
        );
    }
    let b = breaker(&s).await;
    assert_eq!(b["totals"]["slow"], 3, "{b}");
    assert_eq!(b["state"], "open", "three slow calls of three: {b}");
    s.stop().await;
}
