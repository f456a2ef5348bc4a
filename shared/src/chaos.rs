//! Fault injection at runtime: make a service fail, slow down or hang on `POST /create`.
//!
//! `INJECT_ERR` is the original demo's switch, fixed at start-up and applied *after* the record
//! is persisted. This is its runtime sibling for experiments and the outage simulator: faults
//! set through `PUT /chaos` act *before* anything is accepted (the service behaves as if it
//! were down or slow) and can be changed or cleared without a restart. The API exists only with
//! `CHAOS_ENABLED=true`; with `CHAOS_TOKEN` set every call must carry
//! `Authorization: Bearer <token>`. Every change is logged (`event = "chaos"`).
//!
//! A fault set with a `seed` draws its latencies and failures from that seed's sequence, one
//! draw per request in arrival order, so an experiment run twice meets the same faults (the
//! outage simulator's `--seed`); without one the draws come from the OS.
//!
//! A capacity fault (`workers`, `service_ms`) makes the service a bounded worker pool with a
//! FIFO queue: every request waits for one of `workers` and holds it `service_ms`, so latency
//! grows with load, as on a saturated dependency. The work runs apart from the request: a
//! request whose caller gave up still waits its turn and takes a worker (wasted work), which is
//! what lets retries keep a queue full after a trigger is gone (`saga simulate metastable`).

use crate::http::ApiError;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// The faults in force. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability (0 to 1) that a request fails with `status`.
    #[serde(default)]
    pub error_rate: f64,
    /// The status a failed request gets (400 to 599); 503 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Added latency in milliseconds: fixed, or random in `[latency_ms, latency_max_ms]`.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<u64>,
    /// Never answer (until the server's request timeout or shutdown).
    #[serde(default)]
    pub hang: bool,
    /// Fixes the sequence of latency and failure draws; unset: random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Capacity: requests are served by this many workers, in arrival order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Capacity: how long one request holds a worker, read when its turn comes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub service_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The most workers a capacity fault may have.
const MAX_WORKERS: u32 = 10_000;

/// The longest latency the API accepts: a minute.
const MAX_LATENCY_MS: u64 = 60_000;

impl Faults {
    /// Checks a requested change, naming the bad field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |field: &str, msg: &str| {
            ApiError::bad_request("invalid_field", msg.to_string(), Some(field.to_string()))
        };
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(bad("error_rate", "expected a probability from 0 to 1"));
        }
        if self.status.is_some_and(|s| !(400..=599).contains(&s)) {
            return Err(bad(
                "status",
                "expected an HTTP error status from 400 to 599",
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(bad("latency_ms", "expected at most 60000 ms"));
        }
        if let Some(max) = self.latency_max_ms {
            if max < self.latency_ms || max > MAX_LATENCY_MS {
                return Err(bad(
                    "latency_max_ms",
                    "expected from latency_ms up to 60000 ms",
                ));
            }
        }
        if self
            .workers
            .is_some_and(|w| !(1..=MAX_WORKERS).contains(&w))
        {
            return Err(bad("workers", "expected from 1 to 10000 workers"));
        }
        if self.service_ms > MAX_LATENCY_MS {
            return Err(bad("service_ms", "expected at most 60000 ms"));
        }
        if self.service_ms > 0 && self.workers.is_none() {
            return Err(bad("service_ms", "a service time needs `workers`"));
        }
        Ok(())
    }

    pub fn is_active(&self) -> bool {
        self.error_rate > 0.0
            || self.latency_ms > 0
            || self.latency_max_ms.is_some()
            || self.hang
            || self.workers.is_some()
    }

    /// The latency to add to one request.
    pub fn latency(&self, rng: &mut impl Rng) -> Duration {
        let ms = match self.latency_max_ms {
            Some(max) if max > self.latency_ms => rng.random_range(self.latency_ms..=max),
            _ => self.latency_ms,
        };
        Duration::from_millis(ms)
    }

    /// Whether this request fails, and with which status.
    pub fn roll_error(&self, rng: &mut impl Rng) -> Option<u16> {
        (self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate)
            .then(|| self.status.unwrap_or(503))
    }
}

/// One service's fault switchboard. A watch channel, so requests held by a hang or an added
/// latency hear about a change: clearing a hang releases the requests it holds, as fixing a
/// real one would.
#[derive(Debug)]
pub struct Chaos {
    faults: watch::Sender<Faults>,
    /// The draws of the faults in force: from their `seed`, or from the OS.
    draws: Mutex<StdRng>,
    /// The capacity fault's workers and their queue, kept while `workers` stays the same: a
    /// change of service time (a trigger starting or ending) leaves the queue as it is.
    pool: Mutex<Option<(u32, Arc<Semaphore>)>>,
}

impl Default for Chaos {
    fn default() -> Self {
        Self {
            faults: watch::Sender::default(),
            draws: Mutex::new(rand::make_rng()),
            pool: Mutex::new(None),
        }
    }
}

impl Chaos {
    /// Waits for a worker of the capacity fault and holds it the service time in force when
    /// the turn comes. The work is a task of its own: dropping this future (the caller gave
    /// up) leaves it queued, and it takes its worker all the same. Returns at once without a
    /// capacity fault; `shutdown` ends the work.
    pub async fn serve(&self, shutdown: &CancellationToken) {
        let pool = match &*self.pool.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, pool)) => Arc::clone(pool),
            None => return,
        };
        let faults = self.faults.subscribe();
        let shutdown = shutdown.clone();
        let work = tokio::spawn(async move {
            tokio::select! {
                permit = pool.acquire_owned() => {
                    let Ok(_worker) = permit else { return };
                    let service = Duration::from_millis(faults.borrow().service_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(service) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
        // The task ends by itself (service time or shutdown); a join error is a panic in it,
        // and there is nothing of the request's to clean up.
        let _ = work.await;
    }

    /// The next latency draw of `faults`.
    pub fn latency(&self, faults: &Faults) -> Duration {
        faults.latency(&mut *self.draws.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The next failure draw of `faults`.
    pub fn roll_error(&self, faults: &Faults) -> Option<u16> {
        faults.roll_error(&mut *self.draws.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn get(&self) -> Faults {
        self.faults.borrow().clone()
    }

    /// Follows the faults: `changed()` on the receiver completes at the next [`Chaos::set`].
    pub fn subscribe(&self) -> watch::Receiver<Faults> {
        self.faults.subscribe()
    }

    pub fn set(&self, service: &str, faults: Faults) {
        tracing::warn!(
            event = "chaos",
            service,
            error_rate = faults.error_rate,
            status = faults.status,
            latency_ms = faults.latency_ms,
            latency_max_ms = faults.latency_max_ms,
            hang = faults.hang,
            seed = faults.seed,
            workers = faults.workers,
            service_ms = faults.service_ms,
            "faults changed"
        );
        {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let same = matches!((&*pool, faults.workers), (Some((n, _)), Some(w)) if *n == w);
            if !same {
                *pool = faults
                    .workers
                    .map(|w| (w, Arc::new(Semaphore::new(w as usize))));
            }
        }
        *self.draws.lock().unwrap_or_else(|p| p.into_inner()) = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        self.faults.send_replace(faults);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_field() {
        let cases = [
            (r#"{"error_rate": 1.5}"#, "error_rate"),
            (r#"{"status": 200}"#, "status"),
            (r#"{"latency_ms": 70000}"#, "latency_ms"),
            (
                r#"{"latency_ms": 50, "latency_max_ms": 10}"#,
                "latency_max_ms",
            ),
            (r#"{"workers": 0}"#, "workers"),
            (r#"{"service_ms": 50}"#, "service_ms"),
            (r#"{"workers": 2, "service_ms": 70000}"#, "service_ms"),
        ];
        for (json, field) in cases {
            let f: Faults = serde_json::from_str(json).unwrap();
            match f.validate() {
                Err(ApiError::BadRequest {
                    field: Some(got), ..
                }) => assert_eq!(got, field),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(serde_json::from_str::<Faults>(r#"{"errror_rate": 1}"#).is_err());
    }

    #[test]
    fn latency_stays_in_its_range_and_errors_follow_the_rate() {
        let f = Faults {
            latency_ms: 10,
            latency_max_ms: Some(20),
            ..Faults::default()
        };
        let rng = &mut rand::rng();
        for _ in 0..100 {
            let d = f.latency(rng);
            assert!((10..=20).contains(&d.as_millis()), "{d:?}");
        }
        let always = Faults {
            error_rate: 1.0,
            status: Some(500),
            ..Faults::default()
        };
        assert_eq!(always.roll_error(rng), Some(500));
        assert_eq!(Faults::default().roll_error(rng), None);
        assert!(!Faults::default().is_active());
    }

    #[test]
    fn a_seeded_fault_draws_the_same_sequence_each_time_it_is_set() {
        let faults = |seed| Faults {
            error_rate: 0.5,
            latency_ms: 10,
            latency_max_ms: Some(500),
            seed: Some(seed),
            ..Faults::default()
        };
        let chaos = Chaos::default();
        let draws = |seed| {
            let f = faults(seed);
            chaos.set("test", f.clone());
            (0..40)
                .map(|_| (chaos.latency(&f), chaos.roll_error(&f)))
                .collect::<Vec<_>>()
        };
        let first = draws(7);
        assert_eq!(
            first,
            draws(7),
            "setting the same seed again restarts the sequence"
        );
        assert_ne!(first, draws(8));
        let failures = first.iter().filter(|(_, e)| e.is_some()).count();
        assert!((5..=35).contains(&failures), "{failures} of 40 at rate 0.5");
    }

    /// Runs `n` requests at once through `chaos.serve` and returns when each finished, in ms.
    async fn finish_times(chaos: &Arc<Chaos>, n: usize) -> Vec<u128> {
        let start = tokio::time::Instant::now();
        let shutdown = CancellationToken::new();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (chaos, shutdown) = (Arc::clone(chaos), shutdown.clone());
                tokio::spawn(async move {
                    chaos.serve(&shutdown).await;
                    start.elapsed().as_millis()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times
    }

    fn capacity(workers: u32, service_ms: u64) -> Faults {
        Faults {
            workers: Some(workers),
            service_ms,
            ..Faults::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_capacity_fault_serves_in_arrival_order_with_its_workers() {
        let chaos = Arc::new(Chaos::default());
        chaos.set("test", capacity(2, 100));
        let mut times = finish_times(&chaos, 5).await;
        times.sort_unstable();
        assert_eq!(times, [100, 100, 200, 200, 300]);
        // Without a capacity fault nothing waits.
        chaos.set("test", Faults::default());
        assert_eq!(finish_times(&chaos, 3).await, [0, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_caller_gave_up_still_takes_its_worker() {
        let chaos = Arc::new(Chaos::default());
        chaos.set("test", capacity(1, 100));
        let shutdown = CancellationToken::new();
        // The first caller gives up after 10 ms: its work goes on.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), chaos.serve(&shutdown)).await;
        assert!(gave_up.is_err());
        let start = tokio::time::Instant::now();
        chaos.serve(&shutdown).await;
        assert_eq!(
            start.elapsed().as_millis(),
            190,
            "waited for the abandoned work"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_service_time_keeps_the_queue_and_applies_from_the_next_turn() {
        let chaos = Arc::new(Chaos::default());
        chaos.set("test", capacity(1, 100));
        let shutdown = CancellationToken::new();
        let (c, s) = (Arc::clone(&chaos), shutdown.clone());
        let queued = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let both = futures_join(&c, &s).await;
            (both, start.elapsed().as_millis())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The trigger ends: faster service, same workers, same queue.
        chaos.set("test", capacity(1, 20));
        let (_, took) = queued.await.unwrap();
        assert_eq!(
            took, 120,
            "first at the old 100 ms, the queued one at the new 20 ms"
        );
    }

    async fn futures_join(chaos: &Chaos, shutdown: &CancellationToken) {
        tokio::join!(chaos.serve(shutdown), chaos.serve(shutdown));
    }
}
