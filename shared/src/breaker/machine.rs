//! The breaker's state machine, pure: no locks, no clock reads of its own, no logging.
//!
//! Time comes in as an argument and transitions come out as values, so the same machine can
//! sit behind a `std::sync::Mutex` (the in-process [`super::Breaker`]); the distributed breaker
//! replays the same transitions in Lua against state kept in Redis ([`super::redis`]). It asks the failure policy for a
//! verdict only through failsafe's [`FailurePolicy`] trait, after telling it the time of the
//! outcome through [`Clocked`] (the one thing failsafe's trait does not carry).
//!
//! Unlike failsafe's own `StateMachine`, half-open admits exactly one trial call: the caller
//! that finds the reset timer elapsed gets a [`Permit::Trial`], everybody else is rejected
//! until that trial reports back. Only the trial's outcome moves the machine out of
//! half-open; outcomes of calls admitted earlier (while closed) that land late are ignored,
//! so a slow stale success cannot close a breaker whose trial is still in flight.
//!
//! [`State`] carries the instants the machine decides by; [`BreakerState`] is what callers see
//! of it (closed, open, half-open), the one both backends report.

use std::time::Duration;

use failsafe::failure_policy::FailurePolicy;
use serde::Serialize;
use tokio::time::Instant;

use super::policy::{Clocked, ResetBackoff};

/// Where the machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes feed the failure policy.
    Closed,
    /// Calls are rejected until `until`; the first caller after it becomes the trial.
    Open {
        /// When the reset timer elapses.
        until: Instant,
    },
    /// One trial call decides between closed and open again.
    HalfOpen {
        /// Whether the trial is running; if not, the next caller becomes the trial.
        trial_in_flight: bool,
    },
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

/// What an admitted call is: an ordinary call, or the half-open trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Admitted while closed.
    Normal,
    /// The single half-open trial; its outcome closes or re-opens the breaker.
    Trial,
}

/// The machine's answer to "may I call?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Call, then report the outcome with this permit.
    Admitted(Permit),
    /// Do not call the hop.
    Rejected,
}

/// A state change, returned so the owner can log and count it outside its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: the failure policy's window tripped.
    Opened {
        /// How long the breaker stays open.
        delay: Duration,
    },
    /// Open → half-open: the reset timer elapsed and a trial was admitted.
    HalfOpened,
    /// Half-open → closed: the trial succeeded.
    Closed,
    /// Half-open → open: the trial failed; the reset timer starts again.
    Reopened {
        /// How long the breaker stays open.
        delay: Duration,
    },
}

/// The state machine over a failure policy `P` (see the module docs).
#[derive(Debug)]
pub struct Machine<P> {
    state: State,
    policy: P,
    backoff: ResetBackoff,
    enabled: bool,
}

impl<P: FailurePolicy + Clocked> Machine<P> {
    /// A closed machine. `backoff` times a re-open after a failed trial when the policy gives
    /// no verdict of its own (its window may well be empty by then). A disabled machine feeds
    /// the policy but never leaves `Closed`.
    pub fn new(policy: P, backoff: ResetBackoff, enabled: bool) -> Self {
        Self {
            state: State::Closed,
            policy,
            backoff,
            enabled,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The failure policy, for reading its statistics.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Decides whether a call may go ahead at `now`. A closed machine admits a normal call and
    /// changes nothing, which lets an owner short-cut this call while closed.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.state {
            State::Closed => (Admission::Admitted(Permit::Normal), None),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    trial_in_flight: true,
                };
                (
                    Admission::Admitted(Permit::Trial),
                    Some(Transition::HalfOpened),
                )
            }
            State::Open { .. } => (Admission::Rejected, None),
            State::HalfOpen {
                trial_in_flight: false,
            } => {
                self.state = State::HalfOpen {
                    trial_in_flight: true,
                };
                (Admission::Admitted(Permit::Trial), None)
            }
            State::HalfOpen {
                trial_in_flight: true,
            } => (Admission::Rejected, None),
        }
    }

    /// Records a call that succeeded at `now`.
    pub fn on_success(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        self.policy.set_now(now);
        match (self.state, permit) {
            (State::Closed, _) => {
                self.policy.record_success();
                None
            }
            (State::HalfOpen { .. }, Permit::Trial) => {
                self.state = State::Closed;
                self.policy.revived();
                Some(Transition::Closed)
            }
            // A call admitted before the breaker opened: too late to matter.
            _ => None,
        }
    }

    /// Records a failed call (timeout, connection error, 5xx) at `now`.
    pub fn on_failure(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        self.policy.set_now(now);
        match (self.state, permit) {
            (State::Closed, _) => {
                let delay = self.policy.mark_dead_on_failure()?;
                if !self.enabled {
                    return None;
                }
                self.state = State::Open { until: now + delay };
                Some(Transition::Opened { delay })
            }
            (State::HalfOpen { .. }, Permit::Trial) => {
                let delay = self
                    .policy
                    .mark_dead_on_failure()
                    .unwrap_or_else(|| self.backoff.next_delay());
                self.state = State::Open { until: now + delay };
                Some(Transition::Reopened { delay })
            }
            _ => None,
        }
    }

    /// Gives a permit back without an outcome: the call ended in an error that does not count
    /// (4xx) or was cancelled. A trial's slot is freed for the next caller; no transition.
    pub fn release(&mut self, permit: Permit) {
        if permit == Permit::Trial {
            if let State::HalfOpen { .. } = self.state {
                self.state = State::HalfOpen {
                    trial_in_flight: false,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::jitter::Jitter;

    /// Dead for 1 s on every failure: the machine must only use what the trait says.
    #[derive(Default)]
    struct AlwaysDead {
        successes: u32,
        revived: u32,
    }

    impl FailurePolicy for AlwaysDead {
        fn record_success(&mut self) {
            self.successes += 1;
        }
        fn mark_dead_on_failure(&mut self) -> Option<Duration> {
            Some(Duration::from_secs(1))
        }
        fn revived(&mut self) {
            self.revived += 1;
        }
    }

    impl Clocked for AlwaysDead {
        fn set_now(&mut self, _: Instant) {}
    }

    /// Never has a verdict.
    struct NeverDead;

    impl FailurePolicy for NeverDead {
        fn record_success(&mut self) {}
        fn mark_dead_on_failure(&mut self) -> Option<Duration> {
            None
        }
        fn revived(&mut self) {}
    }

    impl Clocked for NeverDead {
        fn set_now(&mut self, _: Instant) {}
    }

    fn backoff() -> ResetBackoff {
        ResetBackoff::new(Duration::from_secs(5), Duration::ZERO, Jitter::None)
    }

    fn opened(now: Instant) -> Machine<AlwaysDead> {
        let mut m = Machine::new(AlwaysDead::default(), backoff(), true);
        assert_eq!(
            m.on_failure(Permit::Normal, now),
            Some(Transition::Opened {
                delay: Duration::from_secs(1)
            })
        );
        m
    }

    #[test]
    fn closed_admits_normal_calls_and_stays_closed() {
        let mut m = Machine::new(AlwaysDead::default(), backoff(), true);
        let (admission, transition) = m.admit(Instant::now());
        assert_eq!(admission, Admission::Admitted(Permit::Normal));
        assert_eq!(transition, None);
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn open_admits_one_trial_after_the_delay() {
        let t0 = Instant::now();
        let mut m = opened(t0);
        let before = t0 + Duration::from_millis(999);
        assert_eq!(m.admit(before), (Admission::Rejected, None));
        let after = t0 + Duration::from_secs(1);
        assert_eq!(
            m.admit(after),
            (
                Admission::Admitted(Permit::Trial),
                Some(Transition::HalfOpened)
            )
        );
        assert_eq!(m.admit(after), (Admission::Rejected, None));
    }

    #[test]
    fn stale_outcomes_do_not_move_a_half_open_machine() {
        let t0 = Instant::now();
        let mut m = opened(t0);
        let t1 = t0 + Duration::from_secs(1);
        let _ = m.admit(t1);
        assert_eq!(m.on_success(Permit::Normal, t1), None);
        assert_eq!(m.on_failure(Permit::Normal, t1), None);
        assert_eq!(
            m.state(),
            State::HalfOpen {
                trial_in_flight: true
            }
        );
        assert_eq!(m.policy().successes, 0);
    }

    #[test]
    fn trial_success_closes_and_revives_the_policy() {
        let t0 = Instant::now();
        let mut m = opened(t0);
        let _ = m.admit(t0 + Duration::from_secs(1));
        assert_eq!(m.on_success(Permit::Trial, t0), Some(Transition::Closed));
        assert_eq!(m.state(), State::Closed);
        assert_eq!(m.policy().revived, 1);
    }

    #[test]
    fn trial_failure_reopens_with_the_backoff_when_the_policy_has_no_verdict() {
        let t0 = Instant::now();
        let mut m = Machine::new(NeverDead, backoff(), true);
        m.state = State::HalfOpen {
            trial_in_flight: true,
        };
        assert_eq!(
            m.on_failure(Permit::Trial, t0),
            Some(Transition::Reopened {
                delay: Duration::from_secs(5)
            })
        );
        assert_eq!(
            m.state(),
            State::Open {
                until: t0 + Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn released_trial_frees_the_slot_without_a_transition() {
        let t0 = Instant::now();
        let mut m = opened(t0);
        let t1 = t0 + Duration::from_secs(1);
        let _ = m.admit(t1);
        m.release(Permit::Trial);
        assert_eq!(
            m.state(),
            State::HalfOpen {
                trial_in_flight: false
            }
        );
        assert_eq!(m.admit(t1), (Admission::Admitted(Permit::Trial), None));
    }

    #[test]
    fn disabled_machine_feeds_the_policy_but_stays_closed() {
        let mut m = Machine::new(AlwaysDead::default(), backoff(), false);
        assert_eq!(m.on_failure(Permit::Normal, Instant::now()), None);
        assert_eq!(m.state(), State::Closed);
    }
}
