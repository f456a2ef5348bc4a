//! `saga simulate --matrix` during a hang: the comparison CI relies on.
//!
//! Shipment hangs for four seconds in the middle of a short run, once per setup (none,
//! timeouts, timeouts+breakers, timeouts+breakers+retries), each on a fresh stack. The checks
//! are relations between runs of the same machine, never absolute speeds: with breakers, the
//! p99 a dashboard shows during the hang is far below what timeouts alone give, and no request
//! is lost for it. The breaker window is shortened to one second so the breaker decides within
//! a second of the fault instead of waiting for the failures to outweigh ten seconds of
//! successes (which is what the defaults do — see the README).

use saga::simulate::scenario::Setup;
use saga::simulate::summary::Summary;
use saga::simulate::{self, SimulateArgs};

fn run_by_label<'a>(runs: &'a [Summary], label: &str) -> &'a Summary {
    runs.iter()
        .find(|r| r.setup == label)
        .unwrap_or_else(|| panic!("no run {label} in {runs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_hang_breakers_keep_p99_far_below_timeouts_alone_without_losing_availability() {
    let _turn = crate::alone().await;
    let out = tempfile::tempdir().expect("a temp dir for the charts");
    let args = SimulateArgs::try_parse_from([
        "outage",
        "--hang",
        "--matrix",
        // A fault long enough that the seconds after the breaker opens are most of it, even
        // on a loaded CI machine where the first second of the hang is slow either way.
        "--duration",
        "9",
        "--rate",
        "20",
        "--fault-start",
        "2",
        "--fault-length",
        "6",
        "--request-timeout",
        "1500",
        // The client waits as long as the services may take: this relation is about latency,
        // not about an SLA (the story tests have one).
        "--client-timeout",
        "3",
        "--window-ms",
        "1000",
        // The relation is about the request path. Re-drives of the outage's degraded sagas
        // (each a claim and a write, fsynced) would land inside this short window and, on two
        // cores in a debug build, add their own latency to every setup alike; push them past it.
        "--env",
        "SAGA_BACKOFF_BASE_MS=20000",
        "--out",
        &out.path().display().to_string(),
    ])
    .expect("valid arguments");
    let mut settings = args.settings().expect("valid settings");
    // The matrix this relation was written for: breakers with and without retries, beside
    // timeouts alone and nothing.
    settings.setups = vec![
        Setup::new(false, false, false),
        Setup::new(true, false, false),
        Setup::new(true, true, false),
        Setup::new(true, true, true).budgeted(),
    ];
    let outcome = simulate::simulate(&settings, true)
        .await
        .expect("the matrix runs");
    let runs = &outcome.document.runs;
    let table = simulate::summary::table(runs);

    let none = run_by_label(runs, "none");
    let timeouts = run_by_label(runs, "timeouts");
    let breakers = run_by_label(runs, "timeouts+breakers");
    let retries = run_by_label(runs, "timeouts+breakers+retries+budget");

    // The hang really hit: without a breaker every request in it waits for a hop timeout,
    // and without timeouts for longer still.
    assert!(
        timeouts.fault_p99_typical_ms >= 150.0,
        "timeouts alone should wait about the 300 ms hop timeout:\n{table}"
    );
    assert!(
        none.fault_p99_typical_ms > timeouts.fault_p99_typical_ms,
        "no timeout should wait longer than a 300 ms timeout:\n{table}"
    );
    assert!(
        breakers.breaker_open_s["payment->shipment"] > 0,
        "the payment->shipment breaker never opened:\n{table}"
    );

    // The relation CI checks.
    for with_breakers in [breakers, retries] {
        assert!(
            with_breakers.fault_p99_typical_ms < timeouts.fault_p99_typical_ms / 2.0,
            "{}: p99 during the hang should be under half of timeouts alone:\n{table}",
            with_breakers.setup
        );
        assert!(
            with_breakers.fault.availability_pct >= timeouts.fault.availability_pct,
            "{}: breakers must not cost availability during the hang:\n{table}",
            with_breakers.setup
        );
        assert!(
            with_breakers.all.availability_pct >= timeouts.all.availability_pct,
            "{}: breakers must not cost availability over the run:\n{table}",
            with_breakers.setup
        );
    }

    // The files: a CSV row per second, charts that are real PNGs and SVGs with their series.
    let csv = std::fs::read_to_string(out.path().join("outage-timeouts-breakers.csv"))
        .expect("the run's CSV");
    assert_eq!(csv.lines().count(), 1 + 9, "{csv}");
    for stem in [
        "outage-none",
        "outage-timeouts",
        "outage-timeouts-breakers",
        "outage-timeouts-breakers-retries-budget",
        "outage-matrix",
    ] {
        let png = std::fs::read(out.path().join(format!("{stem}.png"))).expect("a PNG");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{stem}.png is not a PNG"
        );
        assert!(png.len() > 10_000, "{stem}.png is only {} bytes", png.len());
        let svg = std::fs::read_to_string(out.path().join(format!("{stem}.svg"))).expect("an SVG");
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        assert!(
            svg.contains("availability"),
            "{stem}.svg has no availability"
        );
        assert!(svg.contains("p99"), "{stem}.svg has no p99");
        assert!(
            svg.contains("fault window"),
            "{stem}.svg has no fault window"
        );
    }
    let matrix = std::fs::read_to_string(out.path().join("outage-matrix.svg")).expect("SVG");
    assert!(
        matrix.contains("p99 timeouts+breakers"),
        "matrix SVG lacks a series"
    );
    let summary = std::fs::read_to_string(out.path().join("outage-matrix-summary.json"))
        .expect("the matrix JSON");
    let json: serde_json::Value = serde_json::from_str(&summary).expect("valid JSON");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(4));
}
