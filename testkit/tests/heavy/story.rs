//! The story docker-compose.yaml tells on purpose: at one order every 2-3 s, payment's log shows
//! its breaker open, reject (orders degraded with `breaker open`), go half-open and close — the
//! settings say so (payment's `BREAKER_MIN_CALLS`, window and reset in the compose file), not the
//! re-driver's extra calls.
//!
//! The services run as processes with exactly the compose environment, and the test reads
//! payment's log as a person would (`docker-compose logs -f payment`). Time is compressed
//! [`DEFAULT_SCALE`]-fold to keep CI short: every duration that sets the pace — the breaker's window and
//! reset, the re-driver's backoff and poll — is divided by it, and so is the pace of orders
//! (200-300 ms instead of 2-3 s). The hop timeout is not: it is about how long a call may take,
//! not about the pace. The run stops once the cycle is seen; the bound is three compose minutes,
//! so chance (shipment fails 40 % of calls, a trial may fail) can't make it flaky, and the
//! compose time the cycle took is printed. `STORY_SCALE=1` runs it at the compose file's own
//! pace (up to three real minutes), to measure what a person at the keyboard sees.

use serde_json::Value;
use shared::breaker::BreakerConfig;
use shared::saga::SagaConfig;
use std::time::Duration;
use testkit::compose::ComposeStack;
use testkit::{mongo, seed, unique_db_name};

/// How much faster than the compose file's clock the test runs, unless `STORY_SCALE` says.
const DEFAULT_SCALE: u64 = 10;

fn scale() -> u64 {
    match std::env::var("STORY_SCALE") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|s| (1..=50).contains(s))
            .unwrap_or_else(|| panic!("STORY_SCALE={v:?}: expected a whole number from 1 to 50")),
        Err(_) => DEFAULT_SCALE,
    }
}

/// The variables that set the pace, with the code's default for when the compose file leaves
/// one unset, in milliseconds.
fn pace_variables() -> [(&'static str, u64); 5] {
    let breaker = BreakerConfig::default();
    let saga = SagaConfig::default();
    let ms = |d: Duration| d.as_millis() as u64;
    [
        ("BREAKER_WINDOW_MS", ms(breaker.window)),
        ("BREAKER_RESET_MS", ms(breaker.reset)),
        ("SAGA_BACKOFF_BASE_MS", ms(saga.backoff_base)),
        ("SAGA_BACKOFF_CAP_MS", ms(saga.backoff_cap)),
        ("SAGA_POLL_MS", ms(saga.poll)),
    ]
}

/// Divides the pace variables of `env` by `scale` (adding the scaled default where unset).
fn compress(env: &mut Vec<(String, String)>, scale: u64) {
    for (name, default) in pace_variables() {
        let compose = env.iter().position(|(k, _)| k == name);
        let value = compose
            .map(|i| {
                env[i]
                    .1
                    .parse::<u64>()
                    .expect("a number of ms in docker-compose.yaml")
            })
            .unwrap_or(default);
        let scaled = (value / scale).to_string();
        match compose {
            Some(i) => env[i].1 = scaled,
            None => env.push((name.to_string(), scaled)),
        }
    }
}

/// Where each step of the story first shows in payment's log, in order: `open`, an order
/// answered without shipment because of it, `halfOpen`, `close`. `None` until all four have.
fn cycle_in(log: &str) -> Option<[usize; 4]> {
    let lines: Vec<&str> = log.lines().collect();
    let find =
        |from: usize, what: &dyn Fn(&str) -> bool| (from..lines.len()).find(|&i| what(lines[i]));
    let warn = |state: &'static str| {
        move |l: &str| l.contains(" WARN ") && l.contains(&format!(" {state}: "))
    };
    let open = find(0, &warn("open"))?;
    let reject = find(open, &|l: &str| {
        l.contains(" INFO ") && l.contains("answered") && l.contains("not called: breaker open")
    })?;
    let half_open = find(reject, &warn("halfOpen"))?;
    let close = find(half_open, &warn("close"))?;
    Some([open, reject, half_open, close])
}

#[tokio::test]
async fn compose_settings_show_a_whole_breaker_cycle_at_a_persons_pace() {
    let _machine = crate::alone().await;
    let Some(server) = mongo().await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let db = unique_db_name("story");
    let scale = scale();
    let stack = ComposeStack::start(server.uri(), &db, |_, env| compress(env, scale)).await;

    let client = reqwest::Client::new();
    let create = format!("{}/create", stack.url("order"));
    let paces = [2000 / scale, 2500 / scale, 3000 / scale]; // ms: 2, 2.5 and 3 s on the compose clock
    let start = tokio::time::Instant::now();
    let bound = Duration::from_secs(180) / scale as u32;
    let mut orders = 0usize;
    let mut cycle = None;
    let mut next_order = start;
    while start.elapsed() < bound {
        // Start to start, as a person clicking would: a slow answer doesn't slow the pace.
        next_order += Duration::from_millis(paces[orders % paces.len()]);
        let res = client.post(&create).json(&seed()).send().await;
        let body: Value = match res {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => panic!("order must answer: {e}"),
        };
        // Whatever the breaker does, the client gets an answer: completed, or degraded.
        let status = body["status"].as_str().unwrap_or_default();
        assert!(
            ["completed", "degraded"].contains(&status),
            "order {orders}: {body}"
        );
        orders += 1;
        cycle = cycle_in(&stack.log("payment"));
        if cycle.is_some() {
            break;
        }
        tokio::time::sleep_until(next_order).await;
    }
    let took = start.elapsed();
    let log = stack.log("payment");
    assert!(
        cycle.is_some(),
        "no open -> reject -> halfOpen -> close in payment's log after {orders} orders \
         ({} s on the compose clock):\n{log}",
        took.as_secs() * scale
    );
    eprintln!(
        "cycle complete after {orders} orders, {:.1} s on the compose clock; payment's log:",
        took.as_secs_f64() * scale as f64
    );
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains("answered"))
    {
        eprintln!("  {line}");
    }

    // /breaker agrees with the log.
    let b: Value = client
        .get(format!("{}/breaker", stack.url("payment")))
        .send()
        .await
        .expect("payment answers")
        .json()
        .await
        .expect("JSON");
    for event in ["open", "reject", "fallback", "halfOpen", "close"] {
        assert!(
            b["breaker"]["totals"][event].as_u64() >= Some(1),
            "{event}: {b}"
        );
    }
    // The log a person reads: state changes at WARN, and no per-call breaker lines at INFO.
    assert!(
        !log.lines().any(|l| l.contains(" INFO ")
            && (l.contains("event=\"reject\"") || l.contains("event=\"fallback\""))),
        "per-call breaker lines at info:\n{log}"
    );
    drop(stack);
    if let Ok(c) = mongodb::Client::with_uri_str(server.uri()).await {
        let _ = c.database(&db).drop().await;
    }
}

/// A hop error that counts as a failure (shipment's injected 502).
#[derive(Debug)]
struct Injected;

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http 502")
    }
}

impl shared::breaker::Failure for Injected {
    fn counts_as_failure(&self) -> bool {
        true
    }
}

/// Payment's breaker settings as the compose file gives them.
fn compose_breaker() -> BreakerConfig {
    let env = testkit::compose::environment("payment");
    let mut r = shared::env::Reader::new(|k| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    });
    let cfg = BreakerConfig::read(&mut r);
    r.finish(cfg)
        .expect("docker-compose.yaml's breaker settings are valid")
}

/// Drives `cfg`'s breaker on tokio's paused clock with one order every 2, 2.5, 3 s and nothing
/// else (no re-drives), shipment failing 4 calls in 10 in a fixed order. The virtual seconds at
/// which the whole cycle — open, a reject, halfOpen, close — was complete, if within `limit`.
async fn cycle_at_a_persons_pace(cfg: BreakerConfig, limit: Duration) -> Option<Duration> {
    use shared::breaker::{Breaker, BreakerError, BreakerState};
    const SHIPMENT: [bool; 10] = [
        true, false, true, false, false, true, true, false, true, true,
    ];
    let breaker = Breaker::new("payment->shipment", cfg);
    let start = tokio::time::Instant::now();
    let (mut calls, mut opened, mut rejected, mut half_open) = (0usize, false, false, false);
    let mut order = 0usize;
    while start.elapsed() <= limit {
        let answers = SHIPMENT[calls % SHIPMENT.len()];
        let was = breaker.state();
        let outcome = breaker
            .call(None, || async move {
                if answers {
                    Ok(())
                } else {
                    Err(Injected)
                }
            })
            .await;
        match outcome {
            Err(BreakerError::Rejected) => rejected |= opened,
            _ => calls += 1,
        }
        let totals = breaker.snapshot().totals;
        opened |= totals.open > 0;
        half_open |= rejected && (totals.half_open > 0 || was == BreakerState::HalfOpen);
        if opened && rejected && half_open && breaker.state() == BreakerState::Closed {
            return Some(start.elapsed());
        }
        order += 1;
        tokio::time::advance(Duration::from_millis([2000, 2500, 3000][order % 3])).await;
    }
    None
}

/// The settings alone, without the re-driver's extra calls: at a person's pace the compose
/// file's breaker goes through its whole cycle well within a minute, where the code's defaults
/// (5 calls in a 10 s window, which 2-3 s orders barely fill) never open.
#[tokio::test(start_paused = true)]
async fn compose_breaker_settings_cycle_within_a_minute_without_redrives() {
    let minute = Duration::from_secs(60);
    let took = cycle_at_a_persons_pace(compose_breaker(), minute).await;
    let Some(took) = took else {
        panic!("no whole cycle within a minute");
    };
    eprintln!(
        "compose settings: whole cycle after {} s",
        took.as_secs_f64()
    );
    assert_eq!(
        cycle_at_a_persons_pace(BreakerConfig::default(), minute).await,
        None,
        "the code's defaults alone cycled at this pace: the compose settings would not be needed"
    );
}
