//! The breaker's events, and how it tells the world about them.
//!
//! Every step of a call is one [`Event`] with a literal name (`open`, `halfOpen`, `close`,
//! `reject`, `fallback`, `success`, `failure`, `timeout` — the names opossum users know). Each is
//! counted three ways: in the breaker's own [`EventTotals`] (for `GET /breaker`, bumped under the
//! breaker's lock by the caller), in the counter `breaker_events_total{breaker, event}`, and as
//! one structured `tracing` event with `event` and `breaker` fields. The [`Instrument`] holds
//! the metric handles and writes the log lines; the gauge `breaker_state{breaker}` reads 0
//! closed, 1 half-open, 2 open.
//!
//! Metric handles are registered once, when the breaker is built, so a call never hashes a key;
//! the log lines are written outside the breaker's lock.

use std::time::Duration;

use metrics::{Counter, Gauge};
use serde::Serialize;

use super::machine::BreakerState;
use super::machine::Transition;
use super::policy::WindowStats;
use crate::env;

/// One step of a call, by its literal name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
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
    pub(super) fn of(transition: Transition) -> Self {
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

impl EventTotals {
    pub(super) fn bump(&mut self, event: Event) {
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

/// A transition plus what its log line needs, captured under the lock.
pub(super) struct Change {
    pub(super) transition: Transition,
    pub(super) window: WindowStats,
}

/// One breaker's voice: its name, its metric handles, and its log lines.
pub(super) struct Instrument {
    name: String,
    events: [Counter; Event::ALL.len()],
    state: Gauge,
}

impl Instrument {
    /// Registers the metric handles of the breaker called `name`; the gauge starts closed.
    pub(super) fn new(name: String) -> Self {
        let instrument = Self {
            events: Event::ALL.map(|event| {
                metrics::counter!(
                    "breaker_events_total",
                    "breaker" => name.clone(),
                    "event" => event.name()
                )
            }),
            state: metrics::gauge!("breaker_state", "breaker" => name.clone()),
            name,
        };
        instrument.state.set(0.0);
        instrument
    }

    /// The breaker's name, as in the logs and metrics.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn count(&self, event: Event) {
        self.events[event as usize].increment(1);
    }

    pub(super) fn set_state(&self, state: BreakerState) {
        self.state.set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        });
    }

    /// `reject`: counted and logged.
    pub(super) fn reject(&self) {
        self.count(Event::Reject);
        tracing::info!(event = "reject", breaker = %self.name, "breaker open: next hop not called");
    }

    /// `fallback`: counted and logged with the caller's reason.
    pub(super) fn fallback(&self, reason: &str) {
        self.count(Event::Fallback);
        tracing::info!(event = "fallback", breaker = %self.name, reason, "degraded without the next hop");
    }

    /// `timeout` of a call whose caller had no time left: counted, logged, never contacted.
    pub(super) fn no_time_left(&self) {
        self.count(Event::Timeout);
        tracing::info!(
            event = "timeout",
            breaker = %self.name,
            timeout_ms = 0u64,
            counted = false,
            "no deadline left: next hop not called"
        );
    }

    /// `timeout` of a call the caller's deadline cut short of a fair share of the breaker's
    /// timeout: counted and logged, but not a failure of the hop.
    pub(super) fn short_deadline(&self, budget: Duration) {
        self.count(Event::Timeout);
        let timeout_ms = env::millis(budget);
        tracing::info!(
            event = "timeout",
            breaker = %self.name,
            timeout_ms,
            counted = false,
            "the caller's deadline ran out: not counted against the next hop"
        );
    }

    /// A transition: counted under its event and logged (`open` at `warn`, with the window
    /// that tripped it and how long it stays open).
    pub(super) fn change(&self, Change { transition, window }: Change) {
        match transition {
            Transition::Opened { delay } | Transition::Reopened { delay } => {
                self.count(Event::Open);
                let open_ms = env::millis(delay);
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
                self.count(Event::HalfOpen);
                tracing::info!(event = "halfOpen", breaker = %self.name, "reset elapsed: admitting one trial call");
            }
            Transition::Closed => {
                self.count(Event::Close);
                tracing::info!(event = "close", breaker = %self.name, "trial succeeded: breaker closed");
            }
        }
    }

    /// The log line of a call's outcome (`success`, `failure` or `timeout`); the caller
    /// counts it.
    pub(super) fn outcome(&self, event: Event, trial: bool, budget: Duration) {
        match event {
            Event::Success => {
                tracing::debug!(event = "success", breaker = %self.name, "next hop answered");
            }
            Event::Timeout => {
                let timeout_ms = env::millis(budget);
                tracing::info!(event = "timeout", breaker = %self.name, timeout_ms, trial, "next hop timed out");
            }
            _ => {
                tracing::info!(event = "failure", breaker = %self.name, trial, "next hop failed");
            }
        }
    }

    /// A half-open trial ended without a verdict (4xx, cancelled caller): its slot is free.
    pub(super) fn trial_released(&self) {
        tracing::debug!(breaker = %self.name, "half-open trial ended without a verdict; slot released");
    }
}
