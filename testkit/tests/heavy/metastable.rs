//! `saga simulate metastable`: a short trigger leaves the unprotected chain down after it is
//! gone, and the protected one comes back within seconds — checked as relations on each run's
//! own baseline, never against this machine's speed.
//!
//! Shipment has a capacity the run sets (2 workers × 50 ms = 40 requests/s, a FIFO queue) and
//! the client sends 20/s: half the capacity. The trigger makes the service 300 ms for 3 s; the
//! queue grows past payment's hop timeout. Then:
//! - timeouts alone: the queue drains at 40 − 20 = 20/s and goodput comes back;
//! - timeouts + unbudgeted retries: every timed-out call is sent again (and the abandoned ones
//!   still take a worker), more than the capacity arrives, and the queue never drains;
//! - timeouts + breakers + retry budget + load shedding: back within a few seconds.
//!
//! The re-driver is kept out (`SAGA_POLL_MS`): its re-drives would be load of its own.

use saga::simulate::recording::Series;
use saga::simulate::scenario::Setup;
use saga::simulate::summary::{self, Summary};
use saga::simulate::{self, SimulateArgs};

const RATE: f64 = 20.0;
/// 2 workers × 50 ms.
const CAPACITY_PER_S: f64 = 40.0;
const TRIGGER_END_S: usize = 6;

/// Calls that reached shipment per second, from the end of the trigger to the end of the run.
fn calls_after_trigger(series: &Series) -> f64 {
    let after = &series.seconds[TRIGGER_END_S..];
    after.iter().map(|s| s.calls[1] as f64).sum::<f64>() / after.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_trigger_outlives_itself_with_unbudgeted_retries_and_not_with_protections() {
    let _turn = crate::alone().await;
    let out = tempfile::tempdir().expect("a temp dir for the charts");
    let out_dir = out.path().display().to_string();
    let mut settings = SimulateArgs::try_parse_from([
        "metastable",
        "--duration",
        "13",
        "--rate",
        "20",
        "--fault-start",
        "3",
        "--fault-length",
        "3",
        "--workers",
        "2",
        "--service-ms",
        "50",
        "--trigger-service-ms",
        "300",
        "--reset-ms",
        "1000",
        "--window-ms",
        "1000",
        "--seed",
        "13",
        "--env",
        "SAGA_POLL_MS=60000",
        "--out",
        &out_dir,
    ])
    .expect("valid arguments")
    .settings()
    .expect("valid settings");
    let [unprotected, protected] = Setup::METASTABLE;
    settings.setups = vec![Setup::new(true, false, false), unprotected, protected];
    let outcome = simulate::simulate(&settings, true)
        .await
        .expect("the runs complete");
    let runs = &outcome.document.runs;
    let table = format!("{}{}", summary::table(runs), summary::recovery_table(runs));
    let by = |label: &str| -> (&Summary, &Series) {
        let i = runs
            .iter()
            .position(|r| r.setup == label)
            .unwrap_or_else(|| panic!("no run {label}:\n{table}"));
        (&runs[i], &outcome.runs[i].series)
    };
    let (timeouts, _) = by("timeouts");
    let (retries, retries_series) = by("timeouts+retries");
    let (guarded, guarded_series) = by("timeouts+breakers+retries+budget+shedding");

    for run in [timeouts, retries, guarded] {
        assert!(
            run.recovery.before_per_s >= 0.8 * RATE,
            "{}: the chain must be healthy before the trigger:\n{table}",
            run.setup
        );
        assert!(
            run.fault.availability_pct < 50.0,
            "{}: the trigger must hurt:\n{table}",
            run.setup
        );
    }
    // Unprotected: the trigger is gone for 7 s and goodput is not back.
    assert!(
        retries.recovery.after_pct < 25.0 && retries.recovery.recovered_after_s.is_none(),
        "unbudgeted retries should keep the chain down after the trigger:\n{table}"
    );
    // Sustained by the retries: more calls reach shipment than it can serve.
    let sustaining = calls_after_trigger(retries_series);
    assert!(
        sustaining > CAPACITY_PER_S,
        "after the trigger {sustaining:.1} calls/s reached shipment, capacity \
         {CAPACITY_PER_S}/s:\n{table}"
    );
    // The same trigger without retries drains: it is the retries that sustain the failure.
    assert!(
        timeouts.recovery.recovered_after_s.is_some_and(|s| s <= 4),
        "without retries the queue should drain within 4 s:\n{table}"
    );
    // Protected: back above 80 % of the baseline within 3 s, and stays there.
    assert!(
        guarded.recovery.recovered_after_s.is_some_and(|s| s <= 3),
        "breakers + budget + shedding should bring goodput back within 3 s:\n{table}"
    );
    assert!(
        guarded.recovery.after_pct >= 80.0,
        "goodput after the trigger should be near the baseline:\n{table}"
    );
    let contained = calls_after_trigger(guarded_series);
    assert!(
        contained <= 1.2 * RATE,
        "with the budget the calls to shipment should stay near the arrivals \
         ({contained:.1}/s):\n{table}"
    );

    let png = std::fs::read(out.path().join("metastable-timeouts-retries.png")).expect("PNG");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
}
