//! What the breaker costs per call, next to raw failsafe, in the three states.
//!
//! Each measurement runs `iters` calls inside one `block_on` of a current-thread runtime (timer
//! enabled, as in the services) so the runtime's entry cost is amortized and the numbers are
//! per call. The "2 threads" variants run the same loop on two threads against one shared
//! breaker and report the slower thread's time per call: the cost under lock contention.
//!
//! Run: `cargo bench -p shared --bench breaker -- --warm-up-time 1 --measurement-time 3`

use std::fmt;
use std::future::{pending, ready, Future};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::task::{Context, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use failsafe::{CircuitBreaker, Config};
use shared::breaker::{Breaker, BreakerConfig, BreakerError, BreakerState, Failure};
use tokio::runtime::Runtime;

#[derive(Debug)]
struct HopError;

impl Failure for HopError {
    fn counts_as_failure(&self) -> bool {
        true
    }
}

impl fmt::Display for HopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hop failed")
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("bench runtime builds")
}

/// `iters` calls through our breaker with an answer that is already there.
fn ours(rt: &Runtime, breaker: &Breaker, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let outcome = breaker
                .call(None, || ready(Ok::<u64, HopError>(black_box(1))))
                .await;
            let _ = black_box(outcome);
        }
        start.elapsed()
    })
}

/// Runs `per_thread(iters)` on `threads` threads at once (each with its own runtime, started
/// together) and returns the slowest thread's time.
fn contended(
    threads: usize,
    iters: u64,
    per_thread: impl Fn(&Runtime, u64) -> Duration + Sync,
) -> Duration {
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let rt = runtime();
                    barrier.wait();
                    per_thread(&rt, iters)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread does not panic"))
            .max()
            .unwrap_or_default()
    })
}

fn bench_both<F>(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, f: F)
where
    F: Fn(&Runtime, u64) -> Duration + Sync,
{
    group.bench_function(format!("{name}/1 thread"), |b| {
        let rt = runtime();
        b.iter_custom(|iters| f(&rt, iters))
    });
    group.bench_function(format!("{name}/2 threads"), |b| {
        b.iter_custom(|iters| contended(2, iters, &f))
    });
}

fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed");
    let breaker = Breaker::new("bench", BreakerConfig::default());
    bench_both(&mut group, "ours call", |rt, iters| {
        ours(rt, &breaker, iters)
    });

    let raw = Config::new().build();
    bench_both(&mut group, "failsafe permit+on_success", |_, iters| {
        let start = Instant::now();
        for _ in 0..iters {
            if black_box(raw.is_call_permitted()) {
                raw.on_success();
            }
        }
        start.elapsed()
    });

    let raw = Config::new().build();
    bench_both(&mut group, "failsafe call", |_, iters| {
        let start = Instant::now();
        for _ in 0..iters {
            let _ = black_box(raw.call(|| Ok::<u64, HopError>(black_box(1))));
        }
        start.elapsed()
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    let breaker = Breaker::new(
        "bench",
        BreakerConfig {
            min_calls: 1,
            reset: Duration::from_secs(3600),
            ..BreakerConfig::default()
        },
    );
    runtime().block_on(async {
        let _ = breaker.call(None, || ready(Err::<u64, _>(HopError))).await;
    });
    assert_eq!(breaker.state(), BreakerState::Open);
    bench_both(&mut group, "ours reject", |rt, iters| {
        ours(rt, &breaker, iters)
    });

    let raw = Config::new().build();
    for _ in 0..10 {
        raw.on_error();
    }
    assert!(!raw.is_call_permitted(), "failsafe opened");
    bench_both(&mut group, "failsafe reject", |_, iters| {
        let start = Instant::now();
        for _ in 0..iters {
            let _ = black_box(raw.call(|| Ok::<u64, HopError>(black_box(1))));
        }
        start.elapsed()
    });
    group.finish();
}

fn half_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("half_open");
    let breaker = Arc::new(Breaker::new(
        "bench",
        BreakerConfig {
            min_calls: 1,
            reset: Duration::from_millis(1),
            reset_jitter: Duration::ZERO,
            timeout: Duration::from_secs(3600),
            ..BreakerConfig::default()
        },
    ));
    let trial_rt = runtime();
    trial_rt.block_on(async {
        let _ = breaker.call(None, || ready(Err::<u64, _>(HopError))).await;
    });
    thread::sleep(Duration::from_millis(5));

    // The trial: admitted, polled once, then kept pending (and alive) for the whole group.
    let mut trial = Box::pin(breaker.call(None, pending::<Result<u64, HopError>>));
    let first = {
        let _enter = trial_rt.enter(); // the trial's timer lives on this runtime
        trial.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    assert!(first.is_pending());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(matches!(
        runtime().block_on(breaker.call(None, || ready(Ok::<u64, HopError>(1)))),
        Err(BreakerError::Rejected)
    ));

    bench_both(&mut group, "ours reject (trial in flight)", |rt, iters| {
        ours(rt, &breaker, iters)
    });
    group.finish();
    drop(trial);
}

criterion_group!(benches, closed, open, half_open);
criterion_main!(benches);
