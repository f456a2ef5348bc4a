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
