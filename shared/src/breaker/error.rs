//! What can go wrong around a breaker: which of the hop's errors count ([`Failure`]), why a call
//! did not return the hop's answer ([`BreakerError`]), and why a breaker could not be built
//! ([`BreakerBuildError`]).
//!
//! The breaker is generic over the hop's error type `E`: it never looks inside, it only asks
//! [`Failure::counts_as_failure`], and hands `E` back untouched in [`BreakerError::Failed`].

use std::fmt::Display;
use std::time::Duration;

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
