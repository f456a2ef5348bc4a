//! Per-second aggregation on made-up samples.

use super::*;

fn req(at_ms: u64, class: Class, latency_ms: u64) -> RequestRecord {
    RequestRecord {
        scheduled: Duration::from_millis(at_ms),
        class,
        latency: (class != Class::Dropped).then(|| Duration::from_millis(latency_ms)),
    }
}

fn sample(at_ms: u64, breaker: usize, state: Seen) -> BreakerSample {
    BreakerSample {
        at: Duration::from_millis(at_ms),
        breaker,
        state,
        calls: 0,
    }
}

const FAULT: Window = Window {
    start_s: 1.0,
    end_s: 3.0,
};

#[test]
fn requests_land_in_the_second_they_were_scheduled_in() {
    let requests = [
        req(100, Class::Ok, 5),
        // Due in second 0, answered ten seconds later: still second 0's latency.
        req(900, Class::Fallback, 10_000),
        req(1_000, Class::Http5xx, 7),
        req(1_500, Class::Timeout, 2_000),
        req(1_600, Class::Dropped, 0),
        req(2_999, Class::Ok, 3),
        // Past the end: ignored rather than growing the series.
        req(9_000, Class::Ok, 1),
    ];
    let series = aggregate(3, FAULT, &requests, &[]);
    let [s0, s1, s2] = &series.seconds[..] else {
        panic!("three seconds expected: {series:?}");
    };
    assert_eq!((s0.requests(), s0.errors()), (2, 0));
    assert_eq!(s0.availability_pct(), Some(100.0));
    assert_eq!(s0.percentile_ms(1.0), Some(10_000.0));
    assert_eq!((s1.requests(), s1.errors()), (3, 3));
    assert_eq!(s1.count(Class::Dropped), 1);
    assert_eq!(s1.availability_pct(), Some(0.0));
    // A dropped request has no latency: two latencies in second 1.
    assert_eq!(s1.percentile_ms(0.5), Some(7.0));
    assert_eq!(s1.percentile_ms(0.99), Some(2_000.0));
    assert_eq!((s2.requests(), s2.count(Class::Ok)), (1, 1));
    assert_eq!(
        series
            .seconds
            .iter()
            .map(|s| s.in_fault)
            .collect::<Vec<_>>(),
        [false, true, true]
    );
}

#[test]
fn a_second_without_requests_has_no_availability_or_latency() {
    let series = aggregate(2, FAULT, &[req(10, Class::Ok, 1)], &[]);
    assert_eq!(series.seconds[1].availability_pct(), None);
    assert_eq!(series.seconds[1].percentile_ms(0.99), None);
    assert!(series.to_csv().lines().nth(2).unwrap().contains(",,,,"));
}

#[test]
fn each_second_shows_the_worst_breaker_state_seen_in_it() {
    let samples = [
        sample(0, 1, Seen::Closed),
        sample(500, 1, Seen::Open),
        sample(900, 1, Seen::Closed),
        sample(1_100, 1, Seen::HalfOpen),
        sample(1_200, 1, Seen::Closed),
        sample(1_300, 0, Seen::Closed),
        sample(2_500, 1, Seen::Closed),
    ];
    let series = aggregate(4, FAULT, &[], &samples);
    let states: Vec<_> = series.seconds.iter().map(|s| s.breakers).collect();
    assert_eq!(
        states,
        [
            [None, Some(Seen::Open)],
            [Some(Seen::Closed), Some(Seen::HalfOpen)],
            [None, Some(Seen::Closed)],
            [None, None],
        ]
    );
    assert_eq!(series.open_seconds(1), 2);
    assert_eq!(series.open_seconds(0), 0);
}

#[test]
fn calls_per_second_are_the_growth_of_the_breakers_totals() {
    let at = |ms, breaker, calls| BreakerSample {
        calls,
        ..sample(ms, breaker, Seen::Closed)
    };
    // Totals already at 3 before the run (warm-up): a baseline, not calls of second 0.
    let samples = [
        at(0, 1, 3),
        at(500, 1, 13),
        at(1_200, 1, 40),
        at(1_900, 1, 100),
        at(2_500, 1, 100),
        at(2_600, 0, 7),
        at(3_100, 0, 9),
    ];
    let series = aggregate(4, FAULT, &[], &samples);
    let calls: Vec<_> = series.seconds.iter().map(|s| s.calls).collect();
    assert_eq!(calls, [[0, 10], [0, 87], [0, 0], [2, 0]]);
    assert_eq!(series.calls(1, false), 97);
    assert_eq!(series.calls(1, true), 87);
    assert_eq!(series.calls(0, true), 0);
}

#[test]
fn a_fault_switched_on_a_few_ms_late_still_owns_its_first_second() {
    let late = Window {
        start_s: 1.004,
        end_s: 3.004,
    };
    let series = aggregate(4, late, &[], &[]);
    assert_eq!(
        series
            .seconds
            .iter()
            .map(|s| s.in_fault)
            .collect::<Vec<_>>(),
        [false, true, true, false]
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(50.0));
    assert_eq!(percentile(&v, 0.99), Some(99.0));
    assert_eq!(percentile(&v, 1.0), Some(100.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(median(&[1.0, 2.0, 300.0]), 2.0);
    assert_eq!(median(&[1.0, 2.0, 300.0, 400.0]), 151.0);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn fault_totals_cover_only_the_fault_seconds() {
    let mut requests = Vec::new();
    for s in 0..4u64 {
        for i in 0..10u64 {
            let slow = (1..3).contains(&s) && i == 0;
            let class = if s == 2 && i < 5 {
                Class::Http5xx
            } else {
                Class::Fallback
            };
            requests.push(req(s * 1000 + i * 100, class, if slow { 300 } else { 2 }));
        }
    }
    let series = aggregate(4, FAULT, &requests, &[]);
    let fault = series.fault_totals();
    assert_eq!(fault.requests, 20);
    assert_eq!(fault.errors, 5);
    assert_eq!(fault.availability_pct, 75.0);
    assert_eq!(fault.max_ms, 300.0);
    let all = series.totals();
    assert_eq!((all.requests, all.fallbacks), (40, 35));
    // One slow request in each fault second: each second's p99 is the slow one.
    assert_eq!(series.fault_p99_typical_ms(), 300.0);
}

#[test]
fn csv_has_a_header_and_a_row_per_second() {
    let series = aggregate(
        2,
        FAULT,
        &[req(10, Class::Ok, 1), req(1_010, Class::Http4xx, 2)],
        &[sample(1_010, 0, Seen::Open)],
    );
    let csv = series.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("second,requests,ok,fallbacks,http_4xx"));
    assert!(lines[0].ends_with(
        "breaker_order_payment,breaker_payment_shipment,calls_order_payment,calls_payment_shipment"
    ));
    assert!(lines[2].starts_with("1,1,0,0,1,"), "{}", lines[2]);
    assert!(lines[2].ends_with(",true,open,,0,0"), "{}", lines[2]);
    let columns = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == columns));
}
