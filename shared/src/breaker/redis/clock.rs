//! The wall clock the shared breaker's replicas agree on.
//!
//! The scripts take "now" from the caller instead of Redis `TIME` (the parent module says why);
//! this is where "now" comes from: [`SystemClock`] in production, a [`ManualClock`] in tests,
//! which moves only when told to so windows, resets and leases pass in virtual milliseconds
//! against a real Redis.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::env::millis;

/// Wall-clock time shared by all replicas, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock: what production replicas agree on (through NTP).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }
}

/// A clock that moves only when told to: tests share one between "replicas" and advance it
/// past windows, resets and leases without sleeping.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// A clock reading the system time now (then moving only on [`advance`](Self::advance)).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
