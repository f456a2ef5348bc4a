//! `saga load` against a real stack: the open-loop schedule sends what it promised, latency
//! percentiles are ordered, and degraded answers are counted with their fallback reasons.

use saga::load::{drive, Plan, SEED};
use std::time::Duration;
use testkit::{Svc, TestStack};

fn plan(rate: f64, secs: u64) -> Plan {
    Plan {
        rate,
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(2),
        limit: 1000,
        spacing: Default::default(),
        deadline: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_stack_keeps_up_with_a_constant_arrival_rate() {
    let _turn = crate::alone().await;
    let s = TestStack::embedded(&[], &[]).await;
    let url = format!("{}/create", s.url(Svc::Order));
    let report = drive(&reqwest::Client::new(), &url, SEED, plan(25.0, 2), None).await;
    s.stop().await;

    assert!(report.scheduled.abs_diff(50) <= 2, "{report:#?}");
    assert_eq!(report.count("ok"), report.scheduled, "{report:#?}");
    let l = &report.latency_ms;
    assert!(l.p50 <= l.p99 && l.p99 <= l.max, "{report:#?}");
    assert!(
        (report.achieved_rps - 25.0).abs() <= 5.0,
        "achieved {} req/s for a target of 25: {report:#?}",
        report.achieved_rps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shipment_is_counted_as_degraded_with_its_fallback_reasons() {
    let _turn = crate::alone().await;
    let s = TestStack::embedded(
        &[("ERR_RATE", "1"), ("BREAKER_MIN_CALLS", "3")],
        &["shipment"],
    )
    .await;
    let url = format!("{}/create", s.url(Svc::Order));
    let report = drive(&reqwest::Client::new(), &url, SEED, plan(20.0, 2), None).await;
    s.stop().await;

    assert_eq!(report.count("degraded"), report.scheduled, "{report:#?}");
    assert!(report.fallbacks.contains_key("http 502"), "{report:#?}");
    assert!(report.fallbacks.contains_key("open"), "{report:#?}");
}

/// The client tells the service how long it will wait (`X-Deadline-Ms` = its timeout), so a
/// service under pressure answers 503 before the client gives up instead of after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_clients_timeout_as_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/create", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let server = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    // One request per connection is enough here: read to the end of the headers
                    // (the seed body is small and arrives with them), answer, close.
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    let value = text
                        .lines()
                        .find_map(|l| l.strip_prefix("x-deadline-ms:"))
                        .map(|v| v.trim().to_string())
                        .unwrap_or_default();
                    if let Ok(mut s) = seen.lock() {
                        s.push(value);
                    }
                    let body = r#"{"status":"completed"}"#;
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(res.as_bytes()).await;
                });
            }
        })
    };
    let report = drive(&reqwest::Client::new(), &url, SEED, plan(10.0, 1), None).await;
    server.abort();
    assert_eq!(report.count("ok"), report.scheduled, "{report:#?}");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len() as u64, report.scheduled);
    assert!(seen.iter().all(|v| v == "2000"), "{seen:?}");
}
