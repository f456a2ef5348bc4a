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
//! the caller's remaining deadline can only shorten it. A timeout counts against the hop only
//! when the hop had a fair share of the breaker's own timeout (at least half of it,
//! [`Breaker::counts_timeout`]): a caller that sends a tiny `X-Deadline-Ms` can make its *own*
//! call time out, never the breaker open for everyone else. Half, not all of it: in a chain
//! every hop keeps a margin of what it was given, so an inner hop never gets its full timeout
//! from a caller with the same one, and its real timeouts must still count. The timer is armed only if the hop's
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
//!
//! **Layout**, one concept per file: `config` (how a breaker behaves and where its state lives,
//! with the `BREAKER_*` variables they are read from), `error` (what counts as a failure, and
//! what a caller gets back), `events` (the literal event names, their totals, metrics and log
//! lines), `snapshot` (the read model behind `GET /breaker`), [`machine`] and [`policy`] (the
//! state machine, and the rolling window with its rate and count rules), [`jitter`] (the reset
//! jitter's distributions), [`redis`] (the shared state) and `distributed` (the
//! call path that asks Redis first). This file is the [`Breaker`] itself and its in-memory call
//! path, including the slow-call policy's part (a call still running at the slow line is
//! recorded as a failure then and there); unit tests are in `tests` and `policy_tests`.

mod config;
mod distributed;
mod error;
mod events;
pub mod jitter;
pub mod machine;
pub mod policy;
#[cfg(test)]
mod policy_tests;
pub mod redis;
mod snapshot;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

pub use config::{BreakerBackend, BreakerConfig, BreakerPolicy};
pub use error::{BreakerBuildError, BreakerError, Failure};
pub use events::{EventTotals, Note, NOTES};
pub use jitter::Jitter;
pub use machine::BreakerState;
pub use policy::WindowStats;
pub use snapshot::{Backend, BreakerSnapshot};

use crate::env;
use events::{Change, Event, Instrument};
use machine::{Admission, Machine, Permit, State, Transition};
use policy::{ResetBackoff, RollingWindow, Trip};
use redis::{Clock, Shared, SystemClock};

struct Inner {
    machine: Machine<RollingWindow>,
    totals: EventTotals,
}

/// A circuit breaker around one next hop; share it as `Arc<Breaker>`.
///
/// Metric handles are registered in [`Breaker::new`]: install the metrics recorder first.
pub struct Breaker {
    cfg: BreakerConfig,
    /// `machine.state() == Closed`, readable without the lock (the admit fast path).
    closed: CacheLine<AtomicBool>,
    inner: Mutex<Inner>,
    /// The breaker's name, metric handles and log lines.
    instrument: Instrument,
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
            .field("name", &self.name())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed in-memory breaker called `name` (e.g. `payment->shipment`).
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Self {
        let backoff = ResetBackoff::of(&cfg);
        let policy = RollingWindow::new(cfg.window, Trip::of(&cfg), backoff, Instant::now());
        Self {
            instrument: Instrument::new(name.into()),
            closed: CacheLine(AtomicBool::new(true)),
            inner: Mutex::new(Inner {
                machine: Machine::new(policy, backoff, cfg.enabled),
                totals: EventTotals::default(),
            }),
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
            let shared = Shared::new(breaker.name(), &breaker.cfg, url, clock)?;
            breaker.shared = Some(Arc::new(shared));
        }
        Ok(breaker)
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.instrument.name()
    }

    /// A receiver of this breaker's events from now on (all but `success`), for the live
    /// page. Bounded: a receiver more than [`NOTES`] behind skips the oldest
    /// (`RecvError::Lagged`), so a slow reader never holds a call up.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Note> {
        self.instrument.subscribe()
    }

    /// How many receivers from [`subscribe`](Self::subscribe) are alive.
    pub fn watchers(&self) -> usize {
        self.instrument.watchers()
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
    /// `timeout`) when its budget was a fair share of the configured timeout
    /// ([`counts_timeout`](Self::counts_timeout)); a call the caller's deadline cut shorter
    /// still logs and counts `timeout`, but leaves the window alone. When rejected, `f` is never called (the hop is not contacted). A zero
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
            self.instrument.no_time_left();
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
            Poll::Pending => match self.slow_line(budget) {
                None => tokio::time::timeout(budget, fut).await.ok(),
                Some(slow) => match tokio::time::timeout(slow, fut.as_mut()).await {
                    Ok(result) => Some(result),
                    Err(_) => {
                        // Still running at the slow line: that is the verdict on this call,
                        // recorded now (an open breaker must not wait for a hang to end).
                        permit.failed(Event::Slow, slow);
                        let rest = tokio::time::timeout(budget - slow, fut).await;
                        return unrecorded(rest.ok(), budget);
                    }
                },
            },
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
            None if self.counts_timeout(budget) => {
                permit.failed(Event::Timeout, budget);
                Err(BreakerError::Timeout(budget))
            }
            None => {
                drop(permit); // the caller's short deadline, not the hop's health
                self.timed_out_uncounted(budget);
                Err(BreakerError::Timeout(budget))
            }
        }
    }

    /// With the slow-call policy, when a call still running counts as slow: only when that is
    /// before its budget runs out (a shorter budget times out first and counts as a timeout).
    fn slow_line(&self, budget: Duration) -> Option<Duration> {
        self.cfg.policy.slow_call().filter(|slow| *slow < budget)
    }

    /// Whether a call that timed out after `budget` says anything about the hop: it does when
    /// the hop had at least half the configured timeout. Less than that is the caller's
    /// deadline speaking (any client can send a tiny `X-Deadline-Ms`), and counting it would
    /// let one client open the breaker for all.
    pub fn counts_timeout(&self, budget: Duration) -> bool {
        budget >= self.cfg.timeout / 2
    }

    /// A timeout the caller's short deadline caused: in the totals and the log, not the window.
    fn timed_out_uncounted(&self, budget: Duration) {
        self.lock().totals.bump(Event::Timeout);
        self.instrument.short_deadline(budget);
    }

    /// The caller degraded (answered without the hop): logs event `fallback` with the
    /// reason and counts it.
    pub fn record_fallback(&self, reason: &str) {
        self.lock().totals.bump(Event::Fallback);
        self.instrument.fallback(reason);
    }

    /// A point-in-time view: state, window, time left open, event totals and configuration.
    pub fn snapshot(&self) -> BreakerSnapshot {
        if let Some(shared) = self.shared.as_deref().filter(|s| s.is_up()) {
            let view = shared.view();
            let open_for_ms = (view.state == BreakerState::Open)
                .then(|| view.until_ms.saturating_sub(shared.now_ms()));
            return BreakerSnapshot {
                name: self.name().to_owned(),
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
            State::Open { until } => Some(env::millis(until.saturating_duration_since(now))),
            _ => None,
        };
        BreakerSnapshot {
            name: self.name().to_owned(),
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
            self.instrument.change(change);
        }
        match admission {
            Admission::Admitted(permit) => Some(PermitGuard {
                breaker: self,
                permit: Some(permit),
            }),
            Admission::Rejected => {
                self.instrument.reject();
                None
            }
        }
    }

    /// Books a transition under the lock: totals, gauge (in order), and the window for the log.
    fn apply(&self, inner: &mut Inner, transition: Transition, now: Instant) -> Change {
        inner.totals.bump(Event::of(transition));
        let state = inner.machine.state();
        self.closed
            .0
            .store(state == State::Closed, Ordering::Release);
        self.instrument.set_state(state.into());
        let window = match transition {
            Transition::Opened { .. } | Transition::Reopened { .. } => {
                inner.machine.policy().stats(now)
            }
            Transition::HalfOpened | Transition::Closed => WindowStats::default(),
        };
        Change { transition, window }
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
        self.instrument
            .outcome(event, permit == Permit::Trial, budget);
        self.instrument.count(event);
        if let Some(change) = change {
            self.instrument.change(change);
        }
    }

    fn release(&self, permit: Permit) {
        if permit == Permit::Trial {
            self.lock().machine.release(permit);
            self.instrument.trial_released();
        }
    }
}

/// The result of a call already recorded as slow: what the hop said, or a timeout, without
/// counting it a second time.
fn unrecorded<T, E>(outcome: Option<Result<T, E>>, budget: Duration) -> Result<T, BreakerError<E>> {
    match outcome {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(BreakerError::Failed(e)),
        None => Err(BreakerError::Timeout(budget)),
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
