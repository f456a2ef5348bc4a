//! The flags' checks: what `saga simulate` accepts, refuses, and what it means.

use super::*;

fn parse(line: &str) -> Result<Settings, InvalidArgs> {
    SimulateArgs::try_parse_from(line.split_whitespace())
        .map_err(|e| InvalidArgs(e.to_string()))?
        .settings()
}

fn refused(line: &str, needle: &str) {
    match parse(line) {
        Err(InvalidArgs(msg)) => assert!(msg.contains(needle), "{line}: {msg}"),
        Ok(s) => panic!("{line}: accepted as {s:?}"),
    }
}

#[test]
fn defaults_are_the_originals_protections_off_and_the_fault_in_the_middle_third() {
    let s = parse("outage").unwrap();
    assert_eq!(s.duration, Duration::from_secs(30));
    assert_eq!(
        s.fault_window,
        Window {
            start_s: 10.0,
            end_s: 20.0
        }
    );
    assert_eq!(s.setups, [Setup::new(false, false, false)]);
    assert!(s.fault.down, "a plain outage stops the listener");
    assert_eq!(s.target, Target::Shipment);
    assert_eq!(s.client_timeout, Duration::from_secs(1));
    assert!(s.fallback);
    assert!(parse("outage --hang").unwrap().fault.hang);
    let errors = parse("outage --status 500").unwrap().fault;
    assert!(!errors.down && errors.error_rate == 1.0 && errors.status == Some(500));
}

#[test]
fn the_originals_command_line_means_what_it_meant() {
    let s = parse("outage --duration 30 --timeout 1 --circuit-breakers --retries").unwrap();
    assert_eq!(s.hop_timeout, Duration::from_secs(1));
    assert_eq!(s.setups, [Setup::new(true, true, true)]);
    assert!(!s.setups[0].budget, "the original's retries have no budget");
    let s = parse("performance --duration 1500ms --timeout 300ms").unwrap();
    assert_eq!(s.scenario, Scenario::Performance);
    assert_eq!(s.duration, Duration::from_millis(1500));
    assert_eq!(s.duration_s(), 2);
    assert_eq!(s.setups, [Setup::new(true, false, false)]);
    assert_eq!(
        (s.fault.latency_ms, s.fault.latency_max_ms),
        (1000, Some(4000))
    );
    assert_eq!(parse("slow").unwrap().scenario, Scenario::Performance);
    let s = parse("outage --retry-budget --no-fallback --client-timeout 800ms").unwrap();
    assert_eq!(s.setups, [Setup::new(false, false, true).budgeted()]);
    assert!(!s.fallback);
    assert_eq!(s.client_timeout, Duration::from_millis(800));
    assert_eq!(
        parse("outage --timeouts").unwrap().hop_timeout,
        DEFAULT_HOP_TIMEOUT
    );
}

#[test]
fn the_seed_is_kept_or_drawn_and_reaches_the_fault() {
    let s = parse("flaky --seed 42").unwrap();
    assert_eq!(s.seed, 42);
    assert_eq!(s.fault.seed, Some(42));
    let drawn = parse("flaky").unwrap();
    assert_eq!(drawn.fault.seed, Some(drawn.seed));
    assert_eq!(
        parse("flaky --arrivals poisson").unwrap().arrivals,
        Arrivals::Poisson
    );
}

#[test]
fn switches_pick_the_setup_and_the_last_one_wins() {
    let s = parse("flaky --circuit-breakers --no-circuit-breakers --retries").unwrap();
    assert_eq!(s.setups, [Setup::new(false, false, true)]);
    let s = parse("flaky --no-retries --retries --timeouts").unwrap();
    assert_eq!(s.setups, [Setup::new(true, false, true)]);
    let s = parse("flaky --timeout 1 --no-timeouts").unwrap();
    assert_eq!(s.setups, [Setup::new(false, false, false)]);
    assert_eq!(s.fault.error_rate, 0.3);
    let s = parse("outage --matrix").unwrap();
    assert_eq!(s.setups, Setup::MATRIX);
    assert!(parse("outage --matrix --no-circuit-breakers").is_err());
    assert!(parse("outage --matrix --retry-budget").is_err());
}

#[test]
fn bad_values_are_refused_with_the_flag_named() {
    refused("outage --rate 0", "--rate");
    refused("outage --rate -3", "--rate");
    refused("outage --rate NaN", "--rate");
    refused("outage --duration 0", "--duration");
    refused("outage --duration 500ms", "--duration");
    refused("outage --duration 2h", "unit");
    refused(
        "outage --duration 10 --fault-start 8 --fault-length 5",
        "within --duration",
    );
    refused("outage --fault-length 0", "--fault-length");
    refused("outage --fault-start -1", "--fault-start");
    refused("outage --fault-length -2", "--fault-length");
    refused("flaky --error-rate -0.1", "--error-rate");
    refused("outage --timeout 0", "--timeout");
    // Today's `--timeout 300` meant milliseconds; now it is 300 s, and says how to fix it.
    refused("outage --timeout 300", "write 300ms");
    refused("outage --timeout 2 --request-timeout 1000", "--timeout");
    refused("outage --client-timeout 0", "--client-timeout");
    refused("outage --error-rate 1.5", "--error-rate");
    refused("outage --status 200", "--status");
    refused("slow --hang", "--hang");
    refused("flaky --latency-ms 10", "performance scenario");
    refused(
        "performance --latency-ms 500 --latency-max-ms 100",
        "--latency-max-ms",
    );
    refused("outage --hang --error-rate 0.5", "--error-rate");
    refused("outage --sample-ms 5", "--sample-ms");
    refused("outage --retry-attempts 1", "--retry-attempts");
    refused("outage --env BREAKER_ENABLED=false", "--circuit-breakers");
    refused("outage --env FALLBACK=false", "--no-fallback");
    refused("outage --env nonsense", "KEY=VALUE");
    refused("outage --env lower=1", "upper-case");
}

#[test]
fn breaker_knobs_and_env_become_service_variables() {
    let s = parse("outage --reset-ms 2000 --min-calls 3 --env BREAKER_RESET_JITTER_MS=50").unwrap();
    assert_eq!(
        s.env,
        [
            ("BREAKER_RESET_JITTER_MS".to_string(), "50".to_string()),
            ("BREAKER_RESET_MS".to_string(), "2000".to_string()),
            ("BREAKER_MIN_CALLS".to_string(), "3".to_string()),
        ]
    );
}

#[test]
fn a_window_may_end_exactly_at_the_end_of_the_run() {
    let s = parse("slow --duration 10 --fault-start 5 --fault-length 5").unwrap();
    assert_eq!(s.fault_window.end_s, 10.0);
    assert_eq!(s.fault.latency_ms, 1000);
    assert_eq!(s.fault.latency_max_ms, Some(4000));
}

#[test]
fn metastable_keeps_a_capacity_all_run_and_slows_it_in_the_trigger() {
    let s = parse("metastable --matrix --seed 5").unwrap();
    let base = s
        .base_fault
        .clone()
        .expect("a capacity outside the trigger");
    assert_eq!(
        (base.workers, base.service_ms, base.seed),
        (Some(2), 50, Some(5))
    );
    assert_eq!((s.fault.workers, s.fault.service_ms), (Some(2), 300));
    assert!(!s.fallback, "goodput: failures reach the client");
    assert_eq!(s.setups, Setup::METASTABLE);
    assert_eq!(s.max_in_flight, 16);

    let s =
        parse("metastable --workers 4 --service-ms 20 --trigger-service-ms 90 --max-in-flight 8")
            .unwrap();
    assert_eq!(s.fault.service_ms, 90);
    assert_eq!(s.setups, [Setup::new(false, false, false).shedding()]);
    assert_eq!(s.max_in_flight, 8);
    assert!(parse("outage").unwrap().base_fault.is_none());

    refused(
        "performance --workers 2",
        "belong to the metastable scenario",
    );
    refused("metastable --workers 0", "--workers");
    refused(
        "metastable --service-ms 100 --trigger-service-ms 100",
        "--trigger-service-ms",
    );
    refused("metastable --max-in-flight 0", "--max-in-flight");
    refused("metastable --error-rate 0.5", "--error-rate");
    refused("outage --env MAX_IN_FLIGHT=3", "--max-in-flight");
}
