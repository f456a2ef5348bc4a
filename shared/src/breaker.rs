//! The circuit breaker every hop-to-hop call goes through.
//!
//! A [`Breaker`] wraps one next hop. It admits or rejects a call, runs it under a timeout,
//! records the outcome and tells the world about every step: one structured `tracing` event
//! per step with `event` set to its literal name (`open`, `halfOpen`, `close`, `reject`,
//! `fallback`, `success`, `failure`, `timeout`) and `breaker` set to the breaker's name, plus
//! the counter `breaker_events_total{breaker, event}` and the gauge `breaker_state{breaker}`
//! (0 closed, 1 half-open, 2 open).
//!
//! Why not failsafe's own `StateMachine`: in half-open it lets *every* call through, and it
//! reads `std::time::Instant`, which tokio's paused clock cannot drive. Our contract needs a
//! single trial call in half-open and tests that cover windows and resets in virtual
//! milliseconds. So the state machine is our own enum on `tokio::time::Instant`
//! ([`machine`]), and failsafe contributes the seam between the machine and the decision to
//! open: its [`FailurePolicy`](failsafe::failure_policy::FailurePolicy) trait, which our
//! opossum-style rolling window ([`policy`]) implements — `record_success`,
//! `mark_dead_on_failure` answering reset + jitter when the window trips, `revived` clearing
//! the window. The machine talks to the policy through that trait only (plus
//! [`policy::Clocked`] to hand it the time, which failsafe's trait does not carry).
//!
//! The timeout lives *inside* the breaker so a timed-out call is recorded as a failure, and
//! the caller's remaining deadline can only shorten it. The timer is armed only if the hop's
//! future does not complete on its first poll, so an answer that is already there costs no
//! timer. A half-open trial holds its slot through a drop guard, so a cancelled caller can
//! never wedge the breaker half-open.
//!
//! The hot path is cheap: a closed breaker admits with one atomic load (a mirror of "closed"
//! written under the lock at every transition), records with one short `std::sync::Mutex`
//! section, and reads the clock once, outside the lock. Nothing is held across an `.await`
//! and nothing is allocated while closed. Numbers: `benches/breaker.rs`.
//!
//! With `BREAKER_BACKEND=redis` ([`Breaker::with_backend`]) the same calls are decided by state
//! every replica shares in Redis ([`redis`]): one script round trip to admit, one to record,
//! and the same events, logged by the replica that observes them. When Redis does not answer
//! within its bound, the in-memory machine above decides instead, until Redis answers again.
//! The memory path pays one `Option` check for this; the shared path is boxed so the memory
//! path's future stays as small as it was.

mod config;
pub mod machine;
pub mod policy;
pub mod redis;

use std::fmt::Display;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use metrics::{Counter, Gauge};
use serde::Serialize;
use tokio::time::Instant;

pub use config::{BreakerBackend, BreakerConfig};
use machine::{Admission, Machine, Permit, State, Transition};
pub use policy::WindowStats;
use policy::{ResetBackoff, RollingWindow};
pub use redis::Backend;
use redis::{Clock, Recorded, Shared, SystemClock, Verdict};

/// Tells the breaker whether an error says something about the hop's health.
pub trait Failure {
    /// `true` for timeouts, connection errors and 5xx; `false` for a 4xx, which is the
    /// caller's fault: it passes through and is not counted.
    fn counts_as_failure(&self) -> bool;
}

/// Why a call through the breaker did not return the hop's answer.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open (or its half-open trial is in flight): the hop was not contacted.
    #[error("circuit breaker is open")]
    Rejected,
    /// The hop did not answer within this time (the configured timeout or the caller's
    /// shorter deadline).
    #[error("next hop timed out after {0:?}")]
    Timeout(Duration),
    /// The hop answered with an error.
    #[error(transparent)]
    Failed(E),
}

impl<E: Display> BreakerError<E> {
    /// A short reason for fallbacks and saga history: `open`, `timeout`, or the hop's error.
    pub fn reason(&self) -> String {
        match self {
            Self::Rejected => "open".to_owned(),
            Self::Timeout(_) => "timeout".to_owned(),
            Self::Failed(e) => e.to_string(),
        }
    }
}

/// Why a breaker could not be built. Only configuration can cause it: the shared backend
/// connects lazily, so a breaker builds (and the service starts) while Redis is down.
#[derive(Debug, thiserror::Error)]
pub enum BreakerBuildError {
    /// `REDIS_URL` does not parse, or needs a feature this build lacks (`rediss://`: TLS).
    /// The URL itself is not repeated: it may carry a password.
    #[error("REDIS_URL is not a usable Redis URL")]
    RedisUrl(#[source] ::redis::RedisError),
}

/// The breaker's state as callers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are rejected until the reset timer elapses.
    Open,
    /// One trial call is (or is about to be) deciding.
    HalfOpen,
}

impl From<State> for BreakerState {
    fn from(state: State) -> Self {
        match state {
            State::Closed => Self::Closed,
            State::Open { .. } => Self::Open,
            State::HalfOpen { .. } => Self::HalfOpen,
        }
    }
}

/// How many times each event happened since the breaker was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTotals {
    /// `open` (including re-opens after a failed trial).
    pub open: u64,
    /// `halfOpen`.
    pub half_open: u64,
    /// `close`.
    pub close: u64,
    /// `reject`.
    pub reject: u64,
    /// `fallback`.
    pub fallback: u64,
    /// `success`.
    pub success: u64,
    /// `failure` (timeouts are counted under `timeout`).
    pub failure: u64,
    /// `timeout`.
    pub timeout: u64,
}

/// A point-in-time view of a breaker, for `GET /breaker`.
#[derive(Clone, Debug, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state. An open breaker whose timer has elapsed still reads `open` (with
    /// `open_for_ms` 0) until the next caller becomes the trial.
    pub state: BreakerState,
    /// Calls and failures in the rolling window.
    pub window: WindowStats,
    /// Milliseconds left before a trial is admitted, when open.
    pub open_for_ms: Option<u64>,
    /// Events since start.
    pub totals: EventTotals,
    /// The configuration.
    pub config: BreakerConfig,
    /// Who decides: `memory`, `redis`, or `redis-unavailable (local)`. With `redis`, state,
    /// window and time open are the shared state as this replica last saw it (at its last
    /// call), since reading Redis here could block.
    pub backend: Backend,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Open,
    HalfOpen,
    Close,
    Reject,
    Fallback,
    Success,
    Failure,
    Timeout,
}

impl Event {
    const ALL: [Event; 8] = [
        Event::Open,
        Event::HalfOpen,
        Event::Close,
        Event::Reject,
        Event::Fallback,
        Event::Success,
        Event::Failure,
        Event::Timeout,
    ];

    /// The event a transition is logged and counted under.
    fn of(transition: Transition) -> Self {
        match transition {
            Transition::Opened { .. } | Transition::Reopened { .. } => Event::Open,
            Transition::HalfOpened => Event::HalfOpen,
            Transition::Closed => Event::Close,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::HalfOpen => "halfOpen",
            Event::Close => "close",
            Event::Reject => "reject",
            Event::Fallback => "fallback",
            Event::Success => "success",
            Event::Failure => "failure",
            Event::Timeout => "timeout",
        }
    }
}

impl EventTotals {
    fn bump(&mut self, event: Event) {
        let total = match event {
            Event::Open => &mut self.open,
            Event::HalfOpen => &mut self.half_open,
            Event::Close => &mut self.close,
            Event::Reject => &mut self.reject,
            Event::Fallback => &mut self.fallback,
            Event::Success => &mut self.success,
            Event::Failure => &mut self.failure,
            Event::Timeout => &mut self.timeout,
        };
        *total += 1;
    }
}

/// Metric handles, registered once so a call never hashes a key.
struct Metrics {
    events: [Counter; Event::ALL.len()],
    state: Gauge,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let metrics = Self {
            events: Event::ALL.map(|event| {
                metrics::counter!(
                    "breaker_events_total",
                    "breaker" => name.to_owned(),
                    "event" => event.name()
                )
            }),
            state: metrics::gauge!("breaker_state", "breaker" => name.to_owned()),
        };
        metrics.state.set(0.0);
        metrics
    }

    fn count(&self, event: Event) {
        self.events[event as usize].increment(1);
    }

    fn set_state(&self, state: State) {
        self.set_breaker_state(state.into());
    }

    fn set_breaker_state(&self, state: BreakerState) {
        self.state.set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        });
    }
}

struct Inner {
    machine: Machine<RollingWindow>,
    totals: EventTotals,
}

/// A transition plus what its log line needs, captured under the lock.
struct Change {
    transition: Transition,
    window: WindowStats,
}

/// A circuit breaker around one next hop; share it as `Arc<Breaker>`.
///
/// Metric handles are registered in [`Breaker::new`]: install the metrics recorder first.
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    /// `machine.state() == Closed`, readable without the lock (the admit fast path).
    closed: CacheLine<AtomicBool>,
    inner: Mutex<Inner>,
    metrics: Metrics,
    /// The shared state in Redis, with `BREAKER_BACKEND=redis`; `inner` decides while Redis
    /// does not answer.
    shared: Option<Arc<Shared>>,
}

/// Keeps the read-mostly `closed` flag off the cache line the mutex keeps writing.
#[repr(align(64))]
struct CacheLine<T>(T);

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed in-memory breaker called `name` (e.g. `payment->shipment`).
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Self {
        let name = name.into();
        let backoff = ResetBackoff::new(cfg.reset, cfg.reset_jitter);
        let policy = RollingWindow::new(
            cfg.window,
            cfg.min_calls,
            cfg.error_threshold_pct,
            backoff,
            Instant::now(),
        );
        Self {
            metrics: Metrics::new(&name),
            closed: CacheLine(AtomicBool::new(true)),
            inner: Mutex::new(Inner {
                machine: Machine::new(policy, backoff, cfg.enabled),
                totals: EventTotals::default(),
            }),
            name,
            cfg,
            shared: None,
        }
    }

    /// A breaker kept where `backend` says: in memory, or shared through Redis by every
    /// breaker of the same name. Does not connect (the first call does), so it builds while
    /// Redis is down; fails only on a `REDIS_URL` that cannot work.
    pub fn with_backend(
        name: impl Into<String>,
        cfg: BreakerConfig,
        backend: &BreakerBackend,
    ) -> Result<Self, BreakerBuildError> {
        Self::with_backend_and_clock(name, cfg, backend, Arc::new(SystemClock))
    }

    /// [`with_backend`](Self::with_backend) with the wall clock the shared state is kept on
    /// (tests pass a [`redis::ManualClock`]). The memory backend ignores it: it runs on
    /// `tokio::time::Instant`.
    pub fn with_backend_and_clock(
        name: impl Into<String>,
        cfg: BreakerConfig,
        backend: &BreakerBackend,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BreakerBuildError> {
        let mut breaker = Self::new(name, cfg);
        if let BreakerBackend::Redis { url } = backend {
            let shared = Shared::new(&breaker.name, &breaker.cfg, url, clock)?;
            breaker.shared = Some(Arc::new(shared));
        }
        Ok(breaker)
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The current state (with Redis: as this replica last saw it).
    pub fn state(&self) -> BreakerState {
        match self.shared.as_deref().filter(|s| s.is_up()) {
            Some(shared) => shared.view().state,
            None => self.lock().machine.state().into(),
        }
    }

    /// Runs `f()` if admitted. `timeout`: `None` = the configured timeout; `Some(d)` =
    /// `min(d, configured)` (deadline propagation).
    ///
    /// The timeout is inside the breaker: a timed-out call is recorded as a failure (event
    /// `timeout`). When rejected, `f` is never called (the hop is not contacted). A zero
    /// budget (the caller's deadline has already passed) returns `Timeout` without contacting
    /// the hop and without counting against it. An error whose
    /// [`counts_as_failure`](Failure::counts_as_failure) is `false` passes through uncounted.
    ///
    /// Runs inside a Tokio runtime with the time driver enabled (the timer is armed when the
    /// hop does not answer on its first poll). Dropping the returned future cancels the call;
    /// a cancelled half-open trial gives its slot back.
    pub async fn call<T, E, F, Fut>(
        &self,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Failure,
    {
        let budget = timeout.map_or(self.cfg.timeout, |d| d.min(self.cfg.timeout));
        if budget.is_zero() {
            self.lock().totals.bump(Event::Timeout);
            self.metrics.count(Event::Timeout);
            tracing::info!(
                event = "timeout",
                breaker = %self.name,
                timeout_ms = 0u64,
                counted = false,
                "no deadline left: next hop not called"
            );
            return Err(BreakerError::Timeout(budget));
        }
        if let Some(shared) = &self.shared {
            return Box::pin(self.call_shared(shared, budget, f)).await;
        }
        let permit = self.admit().ok_or(BreakerError::Rejected)?;

        let mut fut = pin!(f());
        // Poll once before arming a timer: an answer that is already there needs none.
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(result) => Some(result),
            Poll::Pending => tokio::time::timeout(budget, fut).await.ok(),
        };

        match outcome {
            Some(Ok(value)) => {
                permit.succeeded();
                Ok(value)
            }
            Some(Err(e)) if e.counts_as_failure() => {
                permit.failed(Event::Failure, budget);
                Err(BreakerError::Failed(e))
            }
            Some(Err(e)) => {
                drop(permit); // releases a trial slot; nothing is recorded
                Err(BreakerError::Failed(e))
            }
            None => {
                permit.failed(Event::Timeout, budget);
                Err(BreakerError::Timeout(budget))
            }
        }
    }

    /// [`call`](Self::call) with the shared backend: Redis admits and records, unless it is
    /// down, in which case the local machine does.
    ///
    /// The memory path stays written out in `call` rather than sharing [`within`] with this
    /// one: the helper cost 13 ns on a 71 ns closed call in `benches/breaker.rs`.
    async fn call_shared<T, E, F, Fut>(
        &self,
        shared: &Arc<Shared>,
        budget: Duration,
        f: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Failure,
    {
        let permit = match self.admit_shared(shared).await {
            SharedAdmission::Admitted(permit) => AnyPermit::Shared(permit),
            SharedAdmission::Rejected => return Err(BreakerError::Rejected),
            SharedAdmission::Local => AnyPermit::Local(self.admit().ok_or(BreakerError::Rejected)?),
        };

        let outcome = within(budget, f()).await;

        match outcome {
            Some(Ok(value)) => {
                permit.record(Event::Success, budget).await;
                Ok(value)
            }
            Some(Err(e)) if e.counts_as_failure() => {
                permit.record(Event::Failure, budget).await;
                Err(BreakerError::Failed(e))
            }
            Some(Err(e)) => {
                permit.release().await; // a trial's slot is freed; nothing is recorded
                Err(BreakerError::Failed(e))
            }
            None => {
                permit.record(Event::Timeout, budget).await;
                Err(BreakerError::Timeout(budget))
            }
        }
    }

    /// Asks Redis to admit a call; `Local` when Redis is down (or just failed to answer).
    async fn admit_shared<'a>(&'a self, shared: &'a Arc<Shared>) -> SharedAdmission<'a> {
        if !shared.should_ask() {
            return SharedAdmission::Local;
        }
        let token = rand::random::<u64>();
        let verdict = match shared.admit(token).await {
            Ok(verdict) => verdict,
            Err(e) => {
                self.redis_down(shared, &e);
                return SharedAdmission::Local;
            }
        };
        shared.came_up();
        self.metrics.set_breaker_state(shared.view().state);
        let trial = match verdict {
            Verdict::Normal => None,
            Verdict::Trial => Some(token),
            Verdict::HalfOpened => {
                self.lock().totals.bump(Event::HalfOpen);
                self.log_change(Change {
                    transition: Transition::HalfOpened,
                    window: WindowStats::default(),
                });
                Some(token)
            }
            Verdict::Reject => {
                self.lock().totals.bump(Event::Reject);
                self.log_reject();
                return SharedAdmission::Rejected;
            }
        };
        SharedAdmission::Admitted(SharedPermit {
            breaker: self,
            shared,
            trial,
        })
    }

    /// Hands an outcome to Redis and books what it decided; records it locally if Redis is
    /// down (as an ordinary call: the local machine never admitted a trial).
    async fn record_shared(
        &self,
        shared: &Shared,
        trial: Option<u64>,
        event: Event,
        budget: Duration,
    ) {
        if shared.is_up() {
            let open_for = ResetBackoff::new(self.cfg.reset, self.cfg.reset_jitter).next_delay();
            match shared
                .record(trial, event != Event::Success, open_for)
                .await
            {
                Ok((recorded, view)) => {
                    let transition = match recorded {
                        Recorded::Opened => Some(Transition::Opened { delay: open_for }),
                        Recorded::Reopened => Some(Transition::Reopened { delay: open_for }),
                        Recorded::Closed => Some(Transition::Closed),
                        Recorded::Counted | Recorded::Stale => None,
                    };
                    {
                        let mut inner = self.lock();
                        inner.totals.bump(event);
                        if let Some(transition) = transition {
                            inner.totals.bump(Event::of(transition));
                        }
                    }
                    self.metrics.set_breaker_state(view.state);
                    self.log_outcome(event, trial.is_some(), budget);
                    self.metrics.count(event);
                    if let Some(transition) = transition {
                        self.log_change(Change {
                            transition,
                            window: view.window,
                        });
                    }
                    return;
                }
                Err(e) => self.redis_down(shared, &e),
            }
        }
        self.record(Permit::Normal, event, budget);
    }

    /// Redis failed a round trip: the local machine decides from now on, and the state gauge
    /// shows its state.
    fn redis_down(&self, shared: &Shared, error: &redis::RedisDown) {
        shared.went_down(error);
        let state = self.lock().machine.state();
        self.metrics.set_state(state);
    }

    /// The caller degraded (answered without the hop): logs event `fallback` with the
    /// reason and counts it.
    pub fn record_fallback(&self, reason: &str) {
        self.lock().totals.bump(Event::Fallback);
        self.metrics.count(Event::Fallback);
        tracing::info!(event = "fallback", breaker = %self.name, reason, "degraded without the next hop");
    }

    /// A point-in-time view: state, window, time left open, event totals and configuration.
    pub fn snapshot(&self) -> BreakerSnapshot {
        if let Some(shared) = self.shared.as_deref().filter(|s| s.is_up()) {
            let view = shared.view();
            let open_for_ms = (view.state == BreakerState::Open)
                .then(|| view.until_ms.saturating_sub(shared.now_ms()));
            return BreakerSnapshot {
                name: self.name.clone(),
                state: view.state,
                window: view.window,
                open_for_ms,
                totals: self.lock().totals,
                config: self.cfg.clone(),
                backend: Backend::Redis,
            };
        }
        let now = Instant::now();
        let (state, window, totals) = {
            let inner = self.lock();
            (
                inner.machine.state(),
                inner.machine.policy().stats(now),
                inner.totals,
            )
        };
        let open_for_ms = match state {
            State::Open { until } => Some(
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
            ),
            _ => None,
        };
        BreakerSnapshot {
            name: self.name.clone(),
            state: state.into(),
            window,
            open_for_ms,
            totals,
            config: self.cfg.clone(),
            backend: match self.shared {
                Some(_) => Backend::RedisUnavailable,
                None => Backend::Memory,
            },
        }
    }

    /// The state is consistent after any panic elsewhere (no user code runs under the lock),
    /// so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Option<PermitGuard<'_>> {
        // `Machine::admit` on a closed machine admits a normal call and changes nothing, so
        // the mirror (written under the lock at every transition) lets it skip the lock.
        if self.closed.0.load(Ordering::Acquire) {
            return Some(PermitGuard {
                breaker: self,
                permit: Some(Permit::Normal),
            });
        }
        let now = Instant::now();
        let (admission, change) = {
            let mut inner = self.lock();
            let (admission, transition) = inner.machine.admit(now);
            if admission == Admission::Rejected {
                inner.totals.bump(Event::Reject);
            }
            let change = transition.map(|t| self.apply(&mut inner, t, now));
            (admission, change)
        };
        if let Some(change) = change {
            self.log_change(change);
        }
        match admission {
            Admission::Admitted(permit) => Some(PermitGuard {
                breaker: self,
                permit: Some(permit),
            }),
            Admission::Rejected => {
                self.log_reject();
                None
            }
        }
    }

    fn log_reject(&self) {
        self.metrics.count(Event::Reject);
        tracing::info!(event = "reject", breaker = %self.name, "breaker open: next hop not called");
    }

    /// Books a transition under the lock: totals, gauge (in order), and the window for the log.
    fn apply(&self, inner: &mut Inner, transition: Transition, now: Instant) -> Change {
        inner.totals.bump(Event::of(transition));
        let state = inner.machine.state();
        self.closed
            .0
            .store(state == State::Closed, Ordering::Release);
        self.metrics.set_state(state);
        let window = match transition {
            Transition::Opened { .. } | Transition::Reopened { .. } => {
                inner.machine.policy().stats(now)
            }
            Transition::HalfOpened | Transition::Closed => WindowStats::default(),
        };
        Change { transition, window }
    }

    fn log_change(&self, Change { transition, window }: Change) {
        match transition {
            Transition::Opened { delay } | Transition::Reopened { delay } => {
                self.metrics.count(Event::Open);
                let open_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let trial_failed = matches!(transition, Transition::Reopened { .. });
                tracing::warn!(
                    event = "open",
                    breaker = %self.name,
                    failure_pct = window.failure_pct,
                    calls = window.calls,
                    failures = window.failures,
                    open_ms,
                    trial_failed,
                    "breaker opened"
                );
            }
            Transition::HalfOpened => {
                self.metrics.count(Event::HalfOpen);
                tracing::info!(event = "halfOpen", breaker = %self.name, "reset elapsed: admitting one trial call");
            }
            Transition::Closed => {
                self.metrics.count(Event::Close);
                tracing::info!(event = "close", breaker = %self.name, "trial succeeded: breaker closed");
            }
        }
    }

    fn record(&self, permit: Permit, event: Event, budget: Duration) {
        let now = Instant::now(); // outside the lock: a clock read is not free
        let change = {
            let mut inner = self.lock();
            inner.totals.bump(event);
            let transition = match event {
                Event::Success => inner.machine.on_success(permit, now),
                _ => inner.machine.on_failure(permit, now),
            };
            transition.map(|t| self.apply(&mut inner, t, now))
        };
        self.log_outcome(event, permit == Permit::Trial, budget);
        self.metrics.count(event);
        if let Some(change) = change {
            self.log_change(change);
        }
    }

    fn log_outcome(&self, event: Event, trial: bool, budget: Duration) {
        match event {
            Event::Success => {
                tracing::debug!(event = "success", breaker = %self.name, "next hop answered");
            }
            Event::Timeout => {
                let timeout_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(event = "timeout", breaker = %self.name, timeout_ms, trial, "next hop timed out");
            }
            _ => {
                tracing::info!(event = "failure", breaker = %self.name, trial, "next hop failed");
            }
        }
    }

    fn release(&self, permit: Permit) {
        if permit == Permit::Trial {
            self.lock().machine.release(permit);
            tracing::debug!(breaker = %self.name, "half-open trial ended without a verdict; slot released");
        }
    }
}

/// The hop's answer, or `None` if it took longer than `budget`. Polls once before arming a
/// timer: an answer that is already there needs none.
async fn within<Fut: Future>(budget: Duration, fut: Fut) -> Option<Fut::Output> {
    let mut fut = pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout(budget, fut).await.ok(),
    }
}

/// An admitted call's permit. Dropping it without an outcome (4xx, cancelled caller, panic)
/// releases a half-open trial slot so the next caller can try.
struct PermitGuard<'a> {
    breaker: &'a Breaker,
    permit: Option<Permit>,
}

impl PermitGuard<'_> {
    fn succeeded(mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, Event::Success, Duration::ZERO);
        }
    }

    fn failed(mut self, event: Event, budget: Duration) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, event, budget);
        }
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

/// A permit from whichever machine admitted the call (the shared path falls back to local).
enum AnyPermit<'a> {
    Local(PermitGuard<'a>),
    Shared(SharedPermit<'a>),
}

impl AnyPermit<'_> {
    async fn record(self, event: Event, budget: Duration) {
        match self {
            AnyPermit::Local(permit) if event == Event::Success => permit.succeeded(),
            AnyPermit::Local(permit) => permit.failed(event, budget),
            AnyPermit::Shared(permit) => permit.record(event, budget).await,
        }
    }

    async fn release(self) {
        match self {
            AnyPermit::Local(permit) => drop(permit),
            AnyPermit::Shared(permit) => permit.release().await,
        }
    }
}

/// Redis's answer to "may I call?", or `Local`: Redis is down, ask the local machine.
enum SharedAdmission<'a> {
    Admitted(SharedPermit<'a>),
    Rejected,
    Local,
}

/// A call admitted by Redis. `trial` is the half-open trial's token; dropping the permit of a
/// trial without a verdict (cancelled caller) frees the slot from a task of its own, and if
/// even that cannot happen, the trial lease runs out.
struct SharedPermit<'a> {
    breaker: &'a Breaker,
    shared: &'a Arc<Shared>,
    trial: Option<u64>,
}

impl SharedPermit<'_> {
    async fn record(mut self, event: Event, budget: Duration) {
        let trial = self.trial.take();
        self.breaker
            .record_shared(self.shared, trial, event, budget)
            .await;
    }

    async fn release(mut self) {
        if let Some(token) = self.trial.take() {
            if self.shared.is_up() {
                match self.shared.release(token).await {
                    Ok(()) => {
                        tracing::debug!(breaker = %self.breaker.name, "half-open trial ended without a verdict; slot released")
                    }
                    Err(e) => self.breaker.redis_down(self.shared, &e),
                }
            }
        }
    }
}

impl Drop for SharedPermit<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.trial.take() {
            self.shared.release_later(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::Notify;
    use tokio::time::{advance, sleep};

    use super::*;

    /// A hop's error: 4xx passes through, 5xx counts.
    #[derive(Debug, PartialEq, Eq)]
    struct Status(u16);

    impl Failure for Status {
        fn counts_as_failure(&self) -> bool {
            self.0 >= 500
        }
    }

    impl fmt::Display for Status {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "http {}", self.0)
        }
    }

    type Outcome = Result<u32, BreakerError<Status>>;

    fn config() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn breaker(cfg: BreakerConfig) -> Arc<Breaker> {
        Arc::new(Breaker::new("payment->shipment", cfg))
    }

    async fn ok(b: &Breaker) -> Outcome {
        b.call(None, || async { Ok(1) }).await
    }

    async fn fail(b: &Breaker) -> Outcome {
        b.call(None, || async { Err(Status(502)) }).await
    }

    async fn open(b: &Breaker) {
        for _ in 0..b.config().min_calls {
            let _ = fail(b).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    /// Opens `b`, then lets the reset timer elapse (no jitter in these configs).
    async fn open_and_wait(b: &Breaker) {
        open(b).await;
        advance(b.config().reset).await;
    }

    fn is_rejected(outcome: &Outcome) -> bool {
        matches!(outcome, Err(BreakerError::Rejected))
    }

    /// A hop that counts its invocations and answers `Ok` once `gate` is notified.
    fn gated_hop(
        calls: &Arc<AtomicUsize>,
        gate: &Arc<Notify>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, Status>> + Send>> {
        let calls = Arc::clone(calls);
        let gate = Arc::clone(gate);
        move || {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(7)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_open_below_min_calls() {
        let b = breaker(config());
        for _ in 0..4 {
            assert!(matches!(
                fail(&b).await,
                Err(BreakerError::Failed(Status(502)))
            ));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().window.failures, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_when_failure_rate_exceeds_threshold() {
        let b = breaker(config());
        for _ in 0..2 {
            ok(&b).await.expect("closed breaker passes successes");
        }
        for _ in 0..3 {
            let _ = fail(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        let snapshot = b.snapshot();
        assert_eq!(snapshot.window.failure_pct, 60.0);
        assert_eq!(snapshot.open_for_ms, Some(10_000));
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_threshold_failure_rate_does_not_open() {
        let b = breaker(config());
        for _ in 0..3 {
            ok(&b).await.expect("closed breaker passes successes");
        }
        for _ in 0..3 {
            let _ = fail(&b).await;
        }
        assert_eq!(b.snapshot().window.failure_pct, 50.0);
        assert_eq!(b.state(), BreakerState::Closed);
        let _ = fail(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_while_open_without_calling_the_hop() {
        let b = breaker(config());
        open(&b).await;
        let calls = AtomicUsize::new(0);
        for _ in 0..10 {
            let outcome: Outcome = b
                .call(None, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Ok(1) }
                })
                .await;
            assert!(is_rejected(&outcome));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let snapshot = b.snapshot();
        assert_eq!(snapshot.totals.reject, 10);
        assert_eq!(snapshot.window.calls, 5, "rejections are not calls");
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_reset() {
        let b = breaker(config());
        open(&b).await;
        advance(Duration::from_millis(9_999)).await;
        assert!(is_rejected(&ok(&b).await));
        advance(Duration::from_millis(1)).await;
        assert_eq!(b.snapshot().open_for_ms, Some(0));

        let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let trial = tokio::spawn({
            let b = Arc::clone(&b);
            let hop = gated_hop(&calls, &gate);
            async move { b.call(None, hop).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.snapshot().totals.half_open, 1);
        gate.notify_one();
        assert_eq!(trial.await.expect("trial task").expect("trial answers"), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_of_many_concurrent_callers_is_the_trial() {
        let b = breaker(config());
        open_and_wait(&b).await;
        let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let b = Arc::clone(&b);
                let hop = gated_hop(&calls, &gate);
                tokio::spawn(async move { b.call(None, hop).await })
            })
            .collect();
        for _ in 0..100 {
            if tasks.iter().filter(|t| t.is_finished()).count() == 19 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "only the trial reaches the hop"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        gate.notify_one();

        let mut admitted = 0;
        let mut rejected = 0;
        for task in tasks {
            match task.await.expect("caller task") {
                Ok(7) => admitted += 1,
                Err(BreakerError::Rejected) => rejected += 1,
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!((admitted, rejected), (1, 19));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn trial_success_closes() {
        let b = breaker(config());
        open_and_wait(&b).await;
        assert_eq!(ok(&b).await.expect("trial passes"), 1);
        assert_eq!(b.state(), BreakerState::Closed);
        let snapshot = b.snapshot();
        assert_eq!(snapshot.window, WindowStats::default(), "window cleared");
        assert_eq!((snapshot.totals.half_open, snapshot.totals.close), (1, 1));
        ok(&b).await.expect("closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn trial_failure_reopens_and_restarts_the_timer() {
        let b = breaker(config());
        open_and_wait(&b).await;
        advance(Duration::from_secs(3)).await; // the trial comes late: timer must restart from it
        assert!(matches!(fail(&b).await, Err(BreakerError::Failed(_))));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().open_for_ms, Some(10_000));
        assert_eq!(b.snapshot().totals.open, 2);

        advance(Duration::from_millis(9_999)).await;
        assert!(is_rejected(&ok(&b).await));
        advance(Duration::from_millis(1)).await;
        ok(&b).await.expect("second trial admitted");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_call_counts_as_failure() {
        let b = breaker(BreakerConfig {
            min_calls: 1,
            ..config()
        });
        let start = Instant::now();
        let outcome: Outcome = b
            .call(None, || async {
                sleep(Duration::from_secs(1)).await;
                Ok(1)
            })
            .await;
        assert!(
            matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(300))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let snapshot = b.snapshot();
        assert_eq!((snapshot.window.calls, snapshot.window.failures), (1, 1));
        assert_eq!(snapshot.totals.timeout, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answer_within_the_timeout_succeeds() {
        let b = breaker(config());
        let outcome: Outcome = b
            .call(None, || async {
                sleep(Duration::from_millis(299)).await;
                Ok(1)
            })
            .await;
        assert_eq!(outcome.expect("answered in time"), 1);
        assert_eq!(b.snapshot().totals.success, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn four_xx_passes_through_uncounted() {
        let b = breaker(BreakerConfig {
            min_calls: 1,
            ..config()
        });
        for _ in 0..10 {
            let outcome: Outcome = b.call(None, || async { Err(Status(404)) }).await;
            assert!(matches!(outcome, Err(BreakerError::Failed(Status(404)))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().window, WindowStats::default());
    }

    #[tokio::test(start_paused = true)]
    async fn trial_ending_in_four_xx_releases_the_slot_without_a_transition() {
        let b = breaker(config());
        open_and_wait(&b).await;
        let outcome: Outcome = b.call(None, || async { Err(Status(409)) }).await;
        assert!(matches!(outcome, Err(BreakerError::Failed(Status(409)))));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        ok(&b).await.expect("next caller is the new trial");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let stale = breaker(config());
        let recent = breaker(config());
        for b in [&stale, &recent] {
            for _ in 0..4 {
                let _ = fail(b).await;
            }
        }
        advance(Duration::from_secs(5)).await;
        let _ = fail(&recent).await;
        assert_eq!(
            recent.state(),
            BreakerState::Open,
            "5 s old failures still count"
        );

        advance(Duration::from_secs(5)).await;
        assert_eq!(stale.snapshot().window, WindowStats::default());
        let _ = fail(&stale).await;
        assert_eq!(stale.state(), BreakerState::Closed);
        assert_eq!(stale.snapshot().window.calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_jitter_stays_within_bounds() {
        let jitter = Duration::from_secs(2);
        let mut open_for = Vec::new();
        for _ in 0..50 {
            let b = breaker(BreakerConfig {
                reset_jitter: jitter,
                ..config()
            });
            open(&b).await;
            open_for.push(b.snapshot().open_for_ms.expect("open"));
            // A failed trial draws a fresh delay, also within bounds.
            advance(Duration::from_secs(12)).await;
            let _ = fail(&b).await;
            open_for.push(b.snapshot().open_for_ms.expect("re-opened"));
        }
        assert!(
            open_for.iter().all(|ms| (10_000..=12_000).contains(ms)),
            "{open_for:?}"
        );
        assert!(
            open_for.iter().any(|ms| *ms != open_for[0]),
            "jitter varies"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_trial_releases_the_slot() {
        let b = breaker(config());
        open_and_wait(&b).await;
        let trial = tokio::spawn({
            let b = Arc::clone(&b);
            async move {
                b.call(None, std::future::pending::<Result<u32, Status>>)
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(is_rejected(&ok(&b).await), "the trial holds the slot");

        trial.abort();
        assert!(trial.await.expect_err("aborted").is_cancelled());
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "no verdict from a cancelled trial"
        );
        ok(&b).await.expect("the next caller becomes the trial");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_success_does_not_close_a_half_open_breaker() {
        let b = breaker(BreakerConfig {
            timeout: Duration::from_secs(30),
            ..config()
        });
        // Admitted while closed, answers only after the breaker has gone half-open.
        let slow = tokio::spawn({
            let b = Arc::clone(&b);
            async move {
                b.call(None, || async {
                    sleep(Duration::from_secs(15)).await;
                    Ok::<_, Status>(1)
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        open_and_wait(&b).await;
        let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let trial = tokio::spawn({
            let b = Arc::clone(&b);
            let hop = gated_hop(&calls, &gate);
            async move { b.call(None, hop).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);

        advance(Duration::from_secs(5)).await;
        slow.await.expect("slow task").expect("slow call answers");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        gate.notify_one();
        trial.await.expect("trial task").expect("trial answers");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_shorter_than_timeout_wins() {
        let b = breaker(config());
        let slow = || async {
            sleep(Duration::from_secs(1)).await;
            Ok::<u32, Status>(1)
        };
        let start = Instant::now();
        let outcome = b.call(Some(Duration::from_millis(50)), slow).await;
        assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(50)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));

        let start = Instant::now();
        let outcome = b.call(Some(Duration::from_secs(5)), slow).await;
        assert!(
            matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(300))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_deadline_skips_the_hop_without_counting() {
        let b = breaker(BreakerConfig {
            min_calls: 1,
            ..config()
        });
        let calls = AtomicUsize::new(0);
        let outcome: Outcome = b
            .call(Some(Duration::ZERO), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(1) }
            })
            .await;
        assert!(matches!(
            outcome,
            Err(BreakerError::Timeout(Duration::ZERO))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().window, WindowStats::default());
        assert_eq!(b.snapshot().totals.timeout, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_breaker_never_opens_but_times_out() {
        let b = breaker(BreakerConfig {
            enabled: false,
            ..config()
        });
        for _ in 0..20 {
            let _ = fail(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
        ok(&b).await.expect("still calling the hop");
        let outcome: Outcome = b
            .call(None, || async {
                sleep(Duration::from_secs(1)).await;
                Ok(1)
            })
            .await;
        assert!(matches!(outcome, Err(BreakerError::Timeout(_))));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn reason_names_open_timeout_or_the_hop_error() {
        assert_eq!(BreakerError::<Status>::Rejected.reason(), "open");
        assert_eq!(
            BreakerError::<Status>::Timeout(Duration::from_millis(300)).reason(),
            "timeout"
        );
        assert_eq!(BreakerError::Failed(Status(503)).reason(), "http 503");
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_serializes_state_in_camel_case_and_durations_in_ms() {
        let b = breaker(config());
        open_and_wait(&b).await;
        let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let trial = tokio::spawn({
            let b = Arc::clone(&b);
            let hop = gated_hop(&calls, &gate);
            async move { b.call(None, hop).await }
        });
        tokio::task::yield_now().await;
        b.record_fallback("open");

        let json = serde_json::to_value(b.snapshot()).expect("snapshot serializes");
        assert_eq!(json["name"], "payment->shipment");
        assert_eq!(json["state"], "halfOpen");
        assert_eq!(json["open_for_ms"], serde_json::Value::Null);
        // The reset (10 s) outlasted the window (10 s): the old failures have left it.
        assert_eq!(json["window"]["calls"], 0);
        assert_eq!(json["window"]["failure_pct"], 0.0);
        assert_eq!(json["totals"]["halfOpen"], 1);
        assert_eq!(json["totals"]["fallback"], 1);
        assert_eq!(json["config"]["timeout_ms"], 300);
        assert_eq!(json["config"]["reset_ms"], 10_000);
        assert_eq!(json["config"]["error_threshold_pct"], 50);
        assert_eq!(json["backend"], "memory");
        gate.notify_one();
        trial.await.expect("trial task").expect("trial answers");
    }

    #[test]
    fn breaker_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Breaker>();
    }

    /// Collects `(level, event, breaker)` of every tracing event on this thread.
    mod capture {
        use std::fmt;
        use std::sync::{Arc, Mutex};

        use tracing::field::{Field, Visit};
        use tracing::span::{Attributes, Id, Record};
        use tracing::{Event, Level, Metadata, Subscriber};

        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Seen {
            pub level: Level,
            pub event: String,
            pub breaker: String,
        }

        #[derive(Clone, Default)]
        pub struct Capture(pub Arc<Mutex<Vec<Seen>>>);

        #[derive(Default)]
        struct Fields {
            event: String,
            breaker: String,
        }

        impl Visit for Fields {
            fn record_str(&mut self, field: &Field, value: &str) {
                self.record_debug(field, &format_args!("{value}"));
            }
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                match field.name() {
                    "event" => self.event = format!("{value:?}"),
                    "breaker" => self.breaker = format!("{value:?}"),
                    _ => {}
                }
            }
        }

        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut fields = Fields::default();
                event.record(&mut fields);
                if !fields.event.is_empty() {
                    self.0.lock().expect("capture lock").push(Seen {
                        level: *event.metadata().level(),
                        event: fields.event,
                        breaker: fields.breaker,
                    });
                }
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
    }

    /// Goes through every event once: success, failure, timeout + open, reject, fallback,
    /// halfOpen + success + close.
    async fn every_event() {
        let b = breaker(BreakerConfig {
            min_calls: 2,
            ..config()
        });
        ok(&b).await.expect("success");
        let _ = fail(&b).await; // 1 of 2: 50 %, stays closed
        let _ = b
            .call(None, || async {
                sleep(Duration::from_secs(1)).await;
                Ok::<u32, Status>(1)
            })
            .await; // timeout: 2 of 3 failed, opens
        let _ = ok(&b).await; // reject
        b.record_fallback("open");
        advance(Duration::from_secs(10)).await;
        ok(&b).await.expect("trial"); // halfOpen, success, close
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_emitted_with_literal_names() {
        use tracing::Level;

        let capture = capture::Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        // Tests on other threads may have registered these callsites while only the no-op
        // dispatcher existed; once all are registered, recompute their interest with ours.
        every_event().await;
        tracing::callsite::rebuild_interest_cache();
        capture.0.lock().expect("capture lock").clear();

        every_event().await;
        let seen = capture.0.lock().expect("capture lock").clone();
        let names: Vec<&str> = seen.iter().map(|s| s.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "success", "failure", "timeout", "open", "reject", "fallback", "halfOpen",
                "success", "close"
            ]
        );
        assert!(seen.iter().all(|s| s.breaker == "payment->shipment"));
        let level = |name: &str| {
            seen.iter()
                .find(|s| s.event == name)
                .map(|s| s.level)
                .expect("event seen")
        };
        assert_eq!(level("open"), Level::WARN);
        assert_eq!(level("success"), Level::DEBUG);
        for name in [
            "halfOpen", "close", "reject", "fallback", "failure", "timeout",
        ] {
            assert_eq!(level(name), Level::INFO, "{name}");
        }
    }
}
