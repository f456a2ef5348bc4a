//! What a breaker looks like from outside: the point-in-time [`BreakerSnapshot`] that
//! `GET /breaker` serves.
//!
//! This is the breaker's public read model: its state as callers see it (the machine's three
//! states without the instants it decides by), its window and event totals, its configuration,
//! and which backend ([`Backend`]) the numbers come from.

use serde::Serialize;

use super::config::BreakerConfig;
use super::events::EventTotals;
use super::machine::BreakerState;
use super::policy::WindowStats;

/// Which breaker a snapshot describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Backend {
    /// `BREAKER_BACKEND=memory`: this process's own breaker.
    #[serde(rename = "memory")]
    Memory,
    /// The shared breaker in Redis.
    #[serde(rename = "redis")]
    Redis,
    /// `BREAKER_BACKEND=redis`, but Redis did not answer: the local breaker decides.
    #[serde(rename = "redis-unavailable (local)")]
    RedisUnavailable,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_backend_names() {
        let names: Vec<_> = [Backend::Memory, Backend::Redis, Backend::RedisUnavailable]
            .iter()
            .map(|b| serde_json::to_value(b).expect("serializes"))
            .collect();
        assert_eq!(names, ["memory", "redis", "redis-unavailable (local)"]);
    }
}
