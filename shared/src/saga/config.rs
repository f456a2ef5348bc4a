//! How the re-driver finishes what requests left undone: [`SagaConfig`], its defaults and the
//! `SAGA_*` variables it is read from.
//!
//! The re-driver (`crate::redrive`) is its only reader. The section sits here, with the saga's
//! record, rather than in the re-driver so that the service configuration (`crate::config`),
//! which assembles every section, depends on nothing but plain values: the re-driver itself
//! needs the service, the hop client and the store, which all need the configuration.

use std::time::Duration;

use crate::env::{Reader, DAY_MS};

/// How the re-driver finishes what a request left undone (see `crate::redrive`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SagaConfig {
    /// `SAGA_MAX_ATTEMPTS`: re-drives of a record before it is compensated.
    pub max_attempts: u32,
    /// `SAGA_DEADLINE_MS`: a record still unfinished this long after it was accepted is
    /// compensated, whatever its attempts.
    pub deadline: Duration,
    /// `SAGA_BACKOFF_BASE_MS` / `SAGA_BACKOFF_CAP_MS`: re-drive `n` waits
    /// `random(0, min(cap, base·2ⁿ))` (full jitter).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// `SAGA_LEASE_MS`: how long a claim on a record lasts; a driver that dies holding one
    /// delays that record by at most this much.
    pub lease: Duration,
    /// `SAGA_POLL_MS`: how often the re-driver looks for due records when it found none.
    pub poll: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            deadline: Duration::from_secs(300),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(500),
        }
    }
}

impl SagaConfig {
    /// The `SAGA_*` variables; unset ones keep the [defaults](Self::default). The backoff cap
    /// may not be below its base.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let d = Self::default();
        let saga = Self {
            max_attempts: r.u32_in("SAGA_MAX_ATTEMPTS", d.max_attempts, 1, 10_000),
            deadline: r.millis("SAGA_DEADLINE_MS", d.deadline, 100, DAY_MS),
            backoff_base: r.millis("SAGA_BACKOFF_BASE_MS", d.backoff_base, 1, DAY_MS),
            backoff_cap: r.millis("SAGA_BACKOFF_CAP_MS", d.backoff_cap, 1, DAY_MS),
            lease: r.millis("SAGA_LEASE_MS", d.lease, 100, DAY_MS),
            poll: r.millis("SAGA_POLL_MS", d.poll, 10, 60_000),
        };
        r.not_below(
            "SAGA_BACKOFF_CAP_MS",
            saga.backoff_cap,
            "SAGA_BACKOFF_BASE_MS",
            saga.backoff_base,
        );
        saga
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_cap_below_base_is_refused() {
        let mut r = Reader::new(|k| match k {
            "SAGA_BACKOFF_BASE_MS" => Some("2000".into()),
            "SAGA_BACKOFF_CAP_MS" => Some("1000".into()),
            _ => None,
        });
        let saga = SagaConfig::read(&mut r);
        let err = r.finish(saga).unwrap_err();
        assert_eq!(err.0[0].var, "SAGA_BACKOFF_CAP_MS");
        assert_eq!(err.0[0].expected, "at least SAGA_BACKOFF_BASE_MS (2000)");
    }
}
