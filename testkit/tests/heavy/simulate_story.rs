//! `saga simulate` tells the original simulator's story, checked as relations between runs of
//! the same machine (never absolute speeds), in short runs.
//!
//! - `performance` (shipment answers 1–4 s late, the client's SLA is 1 s): with nothing, the
//!   client's deadline passes and availability collapses; with timeouts and breakers the
//!   chain answers in time (fallbacks) and the breaker takes the load off shipment.
//! - `outage` (shipment's listener stopped for real: connection refused): retries without a
//!   budget multiply the calls that reach the sick hop; the retry budget contains them.
//! - `--seed`: the same seed twice gives the same fault draws and the same outcome counts.
//!
//! The re-driver looks for due records once a minute (`SAGA_POLL_MS`), so it does not run
//! during these short runs: its re-drives would add calls to the sick hop that belong to the
//! re-driver, not to the setup compared (and would take fault draws from the requests).

use saga::simulate::scenario::Setup;
use saga::simulate::summary::Summary;
use saga::simulate::{self, SimulateArgs};

fn run_by_label<'a>(runs: &'a [Summary], label: &str) -> &'a Summary {
    runs.iter()
        .find(|r| r.setup == label)
        .unwrap_or_else(|| panic!("no run {label} in {runs:#?}"))
}

async fn simulate(args: &[&str], setups: &[Setup]) -> (Vec<Summary>, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("a temp dir for the charts");
    let out_dir = out.path().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--env", "SAGA_POLL_MS=60000", "--out", &out_dir]);
    let mut settings = SimulateArgs::try_parse_from(all)
        .expect("valid arguments")
        .settings()
        .expect("valid settings");
    if !setups.is_empty() {
        settings.setups = setups.to_vec();
    }
    let outcome = simulate::simulate(&settings, true)
        .await
        .expect("the runs complete");
    (outcome.document.runs, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hop_collapses_availability_without_protection_and_breakers_restore_it() {
    let _turn = crate::alone().await;
    let none = Setup::new(false, false, false);
    let breakers = Setup::new(true, true, false);
    let (runs, out) = simulate(
        &[
            "performance",
            "--duration",
            "6",
            "--rate",
            "20",
            "--fault-start",
            "1",
            "--fault-length",
            "4",
            "--window-ms",
            "1000",
            "--seed",
            "11",
        ],
        &[none, breakers],
    )
    .await;
    let table = simulate::summary::table(&runs);
    let none = run_by_label(&runs, "none");
    let breakers = run_by_label(&runs, "timeouts+breakers");

    assert!(
        none.fault.availability_pct < 50.0,
        "without protection the 1 s SLA should be missed by most requests:\n{table}"
    );
    assert!(
        none.fault_p99_typical_ms >= 900.0,
        "without protection latency should climb to the client's deadline:\n{table}"
    );
    assert!(
        breakers.fault.availability_pct > none.fault.availability_pct,
        "availability with breakers must be above availability without:\n{table}"
    );
    assert!(
        breakers.breaker_open_s["payment->shipment"] > 0,
        "payment's breaker never opened:\n{table}"
    );
    let (with, without) = (
        breakers
            .fault_sick_hop_calls
            .expect("shipment has a caller"),
        run_by_label(&runs, "none")
            .sick_hop_calls
            .expect("shipment has a caller"),
    );
    assert!(with > 0 && without > 0, "calls were counted:\n{table}");

    let png = std::fs::read(out.path().join("performance-timeouts-breakers.png")).expect("PNG");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let csv = std::fs::read_to_string(out.path().join("performance-none.csv")).expect("CSV");
    assert!(csv
        .lines()
        .next()
        .unwrap_or_default()
        .contains("calls_payment_shipment"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_real_outage_unbudgeted_retries_multiply_the_calls_and_the_budget_contains_them() {
    let _turn = crate::alone().await;
    let timeouts = Setup::new(true, false, false);
    let retries = Setup::new(true, false, true);
    let budget = retries.budgeted();
    let breakers = Setup::new(true, true, false);
    let (runs, out) = simulate(
        &[
            "outage",
            // Enough calls in the fault that the budget's floor (10 retries per hop) is small
            // beside its 10 % share: about 200 first attempts, so the budget allows ~1.16×. At
            // a rate a debug build keeps up with on two cores (the `load` tests use 20–25).
            "--duration",
            "11",
            "--rate",
            "20",
            "--fault-start",
            "1",
            "--fault-length",
            "10",
            "--window-ms",
            "1000",
            "--seed",
            "12",
        ],
        &[timeouts, retries, budget, breakers],
    )
    .await;
    let table = simulate::summary::table(&runs);
    let calls = |label: &str| {
        run_by_label(&runs, label)
            .fault_sick_hop_calls
            .expect("shipment has a caller") as f64
    };
    let (single, unbudgeted, budgeted, broken) = (
        calls("timeouts"),
        calls("timeouts+retries"),
        calls("timeouts+retries+budget"),
        calls("timeouts+breakers"),
    );
    assert!(single >= 100.0, "the outage saw too few calls:\n{table}");
    assert!(
        unbudgeted >= 2.0 * single,
        "retries without a budget should at least double the calls to the sick hop \
         ({unbudgeted} vs {single}):\n{table}"
    );
    // The budget bounds retries by the first attempts (10 % of them plus a floor of 10), and
    // without retries a request sends at most one call: so the bound is taken on the fault's
    // requests, the same number in every run. (On a starved machine some requests of the
    // run without retries never get as far as shipment, which would make its count a moving
    // yardstick; on an idle one the two are equal.)
    let requests = run_by_label(&runs, "timeouts+retries+budget")
        .fault
        .requests as f64;
    assert!(
        budgeted <= 1.2 * single.max(requests),
        "the retry budget should keep the calls within 1.2× ({budgeted} calls, {single} \
         without retries, {requests} requests):\n{table}"
    );
    assert!(
        broken < single / 2.0,
        "an open breaker should take the load off the sick hop ({broken} vs {single}):\n{table}"
    );
    // A real socket error, as the original: connections refused, not an injected status.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("outage-timeouts-summary.json"))
            .expect("the summary JSON"),
    )
    .expect("valid JSON");
    assert_eq!(summary["fault"]["down"], true, "{summary}");
    let reasons = &summary["runs"][0]["fallback_reasons"];
    assert!(
        reasons.get("connect").is_some() || reasons.get("io").is_some(),
        "the fallbacks should name a socket error: {reasons}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_faults_and_the_same_outcome_counts() {
    let _turn = crate::alone().await;
    // Every request meets the fault (it covers the run), nothing retries or opens, and a
    // failure reaches the client (no fallback): the count of 5xx is the count of failure
    // draws, which the seed fixes, whatever the timing.
    let args = [
        "flaky",
        "--duration",
        "3",
        "--rate",
        "20",
        "--fault-start",
        "0",
        "--fault-length",
        "3",
        "--error-rate",
        "0.5",
        "--no-fallback",
        "--client-timeout",
        "5",
        "--arrivals",
        "poisson",
    ];
    let with_seed = |seed: &'static str| {
        let mut a = args.to_vec();
        a.extend(["--seed", seed]);
        a
    };
    let (first, _a) = simulate(&with_seed("7"), &[]).await;
    let (second, _b) = simulate(&with_seed("7"), &[]).await;
    let outcomes = |runs: &[Summary]| runs[0].outcomes.clone();
    assert_eq!(
        outcomes(&first),
        outcomes(&second),
        "same seed, different outcomes"
    );
    let failed = first[0].outcomes.get("http_502").copied().unwrap_or(0);
    assert!(
        (10..=50).contains(&failed),
        "about half of 60 requests should fail: {:?}",
        first[0].outcomes
    );
}
