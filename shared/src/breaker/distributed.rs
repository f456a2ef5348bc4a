//! The call path of a breaker whose state is shared through Redis (`BREAKER_BACKEND=redis`).
//!
//! [`Breaker::call`] hands over to [`Breaker::call_shared`] when the breaker has a Redis
//! handle: Redis admits the call (one script round trip), the hop runs under the same
//! timeout, and Redis records the outcome (one more) and says whether that opened, re-opened or
//! closed the shared breaker; this replica then books and logs what it observed, exactly as the
//! in-memory path does. When Redis does not answer, the local machine admits and records
//! instead, so a permit here is either kind ([`AnyPermit`]).
//!
//! A trial admitted by Redis is named by a random token. Its permit frees the slot when the
//! trial ends without a verdict: awaited on a 4xx, from a spawned task when the caller is
//! cancelled, and if even that cannot happen, the trial lease in Redis runs out.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::error::{BreakerError, Failure};
use super::events::{Change, Event};
use super::machine::{Permit, Transition};
use super::policy::{ResetBackoff, WindowStats};
use super::redis::{Recorded, RedisDown, Shared, Verdict};
use super::{Breaker, PermitGuard};

impl Breaker {
    /// [`call`](Self::call) with the shared backend: Redis admits and records, unless it is
    /// down, in which case the local machine does.
    ///
    /// The memory path stays written out in `call` rather than sharing [`within`] with this
    /// one: the helper cost 13 ns on a 71 ns closed call in `benches/breaker.rs`.
    pub(super) async fn call_shared<T, E, F, Fut>(
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

        let mut fut = pin!(f());
        let outcome = match self.slow_line(budget) {
            None => within(budget, fut).await,
            Some(slow) => {
                let deadline = tokio::time::Instant::now() + budget;
                match within(slow, fut.as_mut()).await {
                    Some(result) => Some(result),
                    None => {
                        // Still running at the slow line: recorded now, as on the memory path.
                        // The deadline is fixed first, so the Redis round trip that records the
                        // slow call does not lengthen the call's budget.
                        permit.record(Event::Slow, slow).await;
                        let rest = tokio::time::timeout_at(deadline, fut).await;
                        return super::unrecorded(rest.ok(), budget);
                    }
                }
            }
        };

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
            None if self.counts_timeout(budget) => {
                permit.record(Event::Timeout, budget).await;
                Err(BreakerError::Timeout(budget))
            }
            None => {
                permit.release().await; // the caller's short deadline, not the hop's health
                self.timed_out_uncounted(budget);
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
        self.instrument.set_state(shared.view().state);
        let trial = match verdict {
            Verdict::Normal => None,
            Verdict::Trial => Some(token),
            Verdict::HalfOpened => {
                self.lock().totals.bump(Event::HalfOpen);
                self.instrument.change(Change {
                    transition: Transition::HalfOpened,
                    window: WindowStats::default(),
                });
                Some(token)
            }
            Verdict::Reject => {
                self.lock().totals.bump(Event::Reject);
                self.instrument.reject();
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
            let open_for = ResetBackoff::of(&self.cfg).next_delay();
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
                    self.instrument.set_state(view.state);
                    self.instrument.outcome(event, trial.is_some(), budget);
                    self.instrument.count(event);
                    if let Some(transition) = transition {
                        self.instrument.change(Change {
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
    pub(super) fn redis_down(&self, shared: &Shared, error: &RedisDown) {
        shared.went_down(error);
        let state = self.lock().machine.state();
        self.instrument.set_state(state.into());
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
                    Ok(()) => self.breaker.instrument.trial_released(),
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
