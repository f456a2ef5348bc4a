//! Our own database down: alive but not ready, and nothing is accepted.

use testkit::{seed, Svc, TestStack};

#[tokio::test]
async fn database_down_means_not_ready_and_503_without_accepting() {
    let s = TestStack::unreachable_mongo(&[("MONGO_TIMEOUT_MS", "300")]).await;
    let health = s.get(Svc::Order, "/health").await;
    assert_eq!(
        health.status, 200,
        "the process is up even when its database is not"
    );
    let ready = s.get(Svc::Order, "/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["ready"], false);
    // The reason is a word: the driver's error names the server's address, which is the
    // operator's business (it is in the log), not every client's.
    assert_eq!(
        ready.json["reason"], "database unavailable",
        "{}",
        ready.text
    );
    assert!(!ready.text.contains("127.0.0.1"), "{}", ready.text);
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"], "unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    s.stop().await;
}

/// Our own database hangs (a stalled disk: FerretDB stopped with SIGSTOP, its connections open).
/// The driver's timeout here is 30 s, so only the request's own deadline can end the wait: the
/// caller gets 503 `deadline_exceeded` + `Retry-After` before it stops listening, never a
/// timeout of its own; and once the database is back, the same key finishes the saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_answers_503_within_the_callers_deadline() {
    use std::time::Duration;
    use testkit::ferretdb::FerretDb;
    use testkit::process::{free_port, wait_ready, Proc};

    let Some(db) = FerretDb::start().await else {
        return;
    };
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", port.to_string()),
        ("MONGO_URL", db.uri()),
        ("MONGO_DB", testkit::mongo::unique_db_name("hang")),
        ("MONGO_TIMEOUT_MS", "30000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let p = Proc::spawn("shipment", &env).expect("spawn shipment");
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ready(&format!("{base}/ready"), Duration::from_secs(30)).await,
        "{}",
        p.log()
    );
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(format!("{base}/create"))
            .header("Idempotency-Key", "hang-1")
            .header("X-Deadline-Ms", "500")
            .json(&serde_json::json!({"id": "s-1", "directions": "home"}))
            // The caller's own patience: three times what it told the service.
            .timeout(Duration::from_millis(1500))
            .send()
    };

    db.freeze();
    let res = send().await;
    db.thaw();
    let res = res.expect("an answer, not the caller's timeout");
    assert_eq!(res.status(), 503, "{}", p.log());
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = res.json().await.expect("a JSON error");
    assert_eq!(body["error"], "deadline_exceeded", "{body}");

    // The database is back: the retry the answer asked for, with the same key, succeeds.
    let again = testkit::eventually("the retry to succeed", Duration::from_secs(20), || async {
        match send().await {
            Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        }
    })
    .await;
    assert_eq!(again["status"], "completed", "{again}");
}
