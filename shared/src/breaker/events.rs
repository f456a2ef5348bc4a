//! The breaker's events, and how it tells the world about them.
//!
//! Every step of a call is one [`Event`] with a literal name (`open`, `halfOpen`, `close`,
//! `reject`, `fallback`, `success`, `failure`, `timeout` — the names opossum users know — and
//! `slow`, resilience4j's slow call, with `BREAKER_POLICY=slow`). Each is
//! counted three ways: in the breaker's own [`EventTotals`] (for `GET /breaker`, bumped under the
//! breaker's lock by the caller), in the counter `breaker_events_total{breaker, event}`, and as
//! one structured `tracing` event with `event` and `breaker` fields. The [`Instrument`] holds
//! the metric handles and writes the log lines; the gauge `breaker_state{breaker}` reads 0
//! closed, 1 half-open, 2 open.
//!
//! Levels are chosen for a person watching `docker-compose logs -f payment`: the three state
//! changes are `warn` lines whose message starts with the state's name (`open: …`, like the
//! original demo's `status:: open`). They are root events: a transition belongs to the breaker,
//! not to the request that happened to cause it, so no request's fields are attached (the
//! compact format still prefixes the name of the span it happened in, `create:`). Per-call lines (`reject`, `fallback`, `failure`, `timeout`, `success`) are `debug`: during
//! an outage there is one of them per request, and the request's own `answered` line at `info`
//! already says what was skipped and why (`crate::service`'s answer log).
//!
//! Metric handles are registered once, when the breaker is built, so a call never hashes a key;
//! the log lines are written outside the breaker's lock.
//!
//! Every event but `success` is also published as a [`Note`] on a bounded broadcast channel
//! (`Breaker::subscribe`), which the live page's Server-Sent Events read. Publishing never
//! waits: with nobody subscribed it costs one uncontended lock, and a subscriber that falls
//! more than [`NOTES`] behind skips the oldest. `success` is left out so the closed breaker's
//! hot path stays as it was; the page reads the window counts from snapshots instead.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Counter, Gauge};
use serde::Serialize;
use tokio::sync::broadcast;

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
    Slow,
}

impl Event {
    const ALL: [Event; 9] = [
        Event::Open,
        Event::HalfOpen,
        Event::Close,
        Event::Reject,
        Event::Fallback,
        Event::Success,
        Event::Failure,
        Event::Timeout,
        Event::Slow,
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
            Event::Slow => "slow",
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
    /// `slow`: calls still running at the slow-call line (`BREAKER_POLICY=slow`), counted as
    /// failures when they crossed it; their later answer or timeout is not counted again.
    pub slow: u64,
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
            Event::Slow => &mut self.slow,
        };
        *total += 1;
    }
}

/// How many notes a subscriber may fall behind before it skips the oldest.
pub const NOTES: usize = 64;

/// One breaker event as the live page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Note {
    /// The breaker's name, e.g. `payment->shipment` (shared, not copied, per note).
    #[serde(serialize_with = "shared_str")]
    pub breaker: Arc<str>,
    /// The event's literal name (`open`, `halfOpen`, `close`, `reject`, `fallback`,
    /// `failure`, `timeout`).
    pub event: &'static str,
    /// When it happened (wall clock).
    pub at: DateTime<Utc>,
    /// The fallback's reason, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn shared_str<S: serde::Serializer>(s: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(s)
}

/// A transition plus what its log line needs, captured under the lock.
pub(super) struct Change {
    pub(super) transition: Transition,
    pub(super) window: WindowStats,
}

/// One breaker's voice: its name, its metric handles, and its log lines.
pub(super) struct Instrument {
    name: Arc<str>,
    events: [Counter; Event::ALL.len()],
    state: Gauge,
    notes: broadcast::Sender<Note>,
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
            name: name.into(),
            notes: broadcast::Sender::new(NOTES),
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

    /// A receiver of this breaker's notes from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.notes.subscribe()
    }

    /// How many receivers of the notes exist (live pages connected).
    pub(super) fn watchers(&self) -> usize {
        self.notes.receiver_count()
    }

    /// Publishes `event` to whoever watches; nothing is built when nobody does.
    fn publish(&self, event: Event, reason: Option<&str>) {
        if self.notes.receiver_count() == 0 {
            return;
        }
        // An error only means the last receiver left meanwhile.
        let _ = self.notes.send(Note {
            breaker: self.name.clone(),
            event: event.name(),
            at: Utc::now(),
            reason: reason.map(str::to_owned),
        });
    }

    pub(super) fn set_state(&self, state: BreakerState) {
        self.state.set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        });
    }

    /// `reject`: counted, and logged at `debug` (one per request while open).
    pub(super) fn reject(&self) {
        self.count(Event::Reject);
        self.publish(Event::Reject, None);
        tracing::debug!(event = "reject", breaker = %self.name, "breaker open: next hop not called");
    }

    /// `fallback`: counted, and logged at `debug` with the caller's reason.
    pub(super) fn fallback(&self, reason: &str) {
        self.count(Event::Fallback);
        self.publish(Event::Fallback, Some(reason));
        tracing::debug!(event = "fallback", breaker = %self.name, reason, "degraded without the next hop");
    }

    /// `timeout` of a call whose caller had no time left: counted, logged, never contacted.
    pub(super) fn no_time_left(&self) {
        self.count(Event::Timeout);
        self.publish(Event::Timeout, None);
        tracing::debug!(
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
        tracing::debug!(
            event = "timeout",
            breaker = %self.name,
            timeout_ms,
            counted = false,
            "the caller's deadline ran out: not counted against the next hop"
        );
    }

    /// A transition: counted under its event and logged at `warn`, state name first, as a root
    /// event (no request's fields); `open` carries the window that tripped it and how long it
    /// stays open.
    pub(super) fn change(&self, Change { transition, window }: Change) {
        self.publish(Event::of(transition), None);
        match transition {
            Transition::Opened { delay } | Transition::Reopened { delay } => {
                self.count(Event::Open);
                let open_ms = env::millis(delay);
                let trial_failed = matches!(transition, Transition::Reopened { .. });
                tracing::warn!(
                    parent: None,
                    event = "open",
                    breaker = %self.name,
                    failure_pct = window.failure_pct,
                    calls = window.calls,
                    failures = window.failures,
                    open_ms,
                    trial_failed,
                    "open: next hop not called until the reset"
                );
            }
            Transition::HalfOpened => {
                self.count(Event::HalfOpen);
                tracing::warn!(parent: None, event = "halfOpen", breaker = %self.name, "halfOpen: reset elapsed, one trial call");
            }
            Transition::Closed => {
                self.count(Event::Close);
                tracing::warn!(parent: None, event = "close", breaker = %self.name, "close: trial succeeded, calls flow again");
            }
        }
    }

    /// The `debug` line of a call's outcome (`success`, `failure` or `timeout`); the caller
    /// counts it.
    pub(super) fn outcome(&self, event: Event, trial: bool, budget: Duration) {
        if event != Event::Success {
            self.publish(event, None);
        }
        match event {
            Event::Success => {
                tracing::debug!(event = "success", breaker = %self.name, "next hop answered");
            }
            Event::Timeout => {
                let timeout_ms = env::millis(budget);
                tracing::debug!(event = "timeout", breaker = %self.name, timeout_ms, trial, "next hop timed out");
            }
            Event::Slow => {
                let slow_call_ms = env::millis(budget);
                tracing::debug!(event = "slow", breaker = %self.name, slow_call_ms, trial, "next hop still running at the slow-call line: counted as a failure");
            }
            _ => {
                tracing::debug!(event = "failure", breaker = %self.name, trial, "next hop failed");
            }
        }
    }

    /// A half-open trial ended without a verdict (4xx, cancelled caller): its slot is free.
    pub(super) fn trial_released(&self) {
        tracing::debug!(breaker = %self.name, "half-open trial ended without a verdict; slot released");
    }
}

#[cfg(test)]
mod tests {
    use super::NOTES;
    use crate::breaker::{Breaker, BreakerConfig};
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn a_slow_watcher_skips_the_oldest_and_publishing_never_waits() {
        let breaker = Breaker::new("slow->watcher", BreakerConfig::default());
        // Nobody watching: published into the void.
        breaker.record_fallback("before");
        let mut rx = breaker.subscribe();
        assert_eq!(breaker.watchers(), 1);
        let extra = 10;
        for i in 0..NOTES + extra {
            // Synchronous and bounded: this loop would hang if a full channel made it wait.
            breaker.record_fallback(&format!("reason {i}"));
        }
        assert_eq!(
            rx.try_recv().err(),
            Some(TryRecvError::Lagged(extra as u64))
        );
        let oldest_kept = rx.try_recv().expect("the newest NOTES are kept");
        assert_eq!(oldest_kept.event, "fallback");
        assert_eq!(
            oldest_kept.reason.as_deref(),
            Some(&*format!("reason {extra}"))
        );
        assert_eq!(&*oldest_kept.breaker, "slow->watcher");
        drop(rx);
        assert_eq!(breaker.watchers(), 0, "a dropped receiver is gone at once");
    }

    #[test]
    fn a_note_is_the_event_by_its_literal_name() {
        let breaker = Breaker::new("named", BreakerConfig::default());
        let mut rx = breaker.subscribe();
        breaker.record_fallback("http 502");
        let note = rx.try_recv().expect("one note");
        let json = serde_json::to_value(&note).expect("serializes");
        assert_eq!(json["breaker"], "named");
        assert_eq!(json["event"], "fallback");
        assert_eq!(json["reason"], "http 502");
        assert!(json["at"].is_string(), "{json}");
    }
}
