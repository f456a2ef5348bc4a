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
