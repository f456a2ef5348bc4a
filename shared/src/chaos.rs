//! Fault injection at runtime: make a service fail, slow down or hang on `POST /create`.
//!
//! `INJECT_ERR` is the original demo's switch, fixed at start-up and applied *after* the record
//! is persisted. This is its runtime sibling for experiments and the outage simulator: faults
//! set through `PUT /chaos` act *before* anything is accepted (the service behaves as if it
//! were down or slow) and can be changed or cleared without a restart. The API exists only with
//! `CHAOS_ENABLED=true`; with `CHAOS_TOKEN` set every call must carry
//! `Authorization: Bearer <token>`. Every change is logged (`event = "chaos"`).
//!
//! A fault set with a `seed` draws its latencies and failures from that seed's sequence, one
//! draw per request in arrival order, so an experiment run twice meets the same faults (the
//! outage simulator's `--seed`); without one the draws come from the OS.

use crate::http::ApiError;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// The faults in force. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability (0 to 1) that a request fails with `status`.
    #[serde(default)]
    pub error_rate: f64,
    /// The status a failed request gets (400 to 599); 503 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Added latency in milliseconds: fixed, or random in `[latency_ms, latency_max_ms]`.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<u64>,
    /// Never answer (until the server's request timeout or shutdown).
    #[serde(default)]
    pub hang: bool,
    /// Fixes the sequence of latency and failure draws; unset: random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The longest latency the API accepts: a minute.
const MAX_LATENCY_MS: u64 = 60_000;

impl Faults {
    /// Checks a requested change, naming the bad field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |field: &str, msg: &str| {
            ApiError::bad_request("invalid_field", msg.to_string(), Some(field.to_string()))
        };
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(bad("error_rate", "expected a probability from 0 to 1"));
        }
        if self.status.is_some_and(|s| !(400..=599).contains(&s)) {
            return Err(bad(
                "status",
                "expected an HTTP error status from 400 to 599",
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(bad("latency_ms", "expected at most 60000 ms"));
        }
        if let Some(max) = self.latency_max_ms {
            if max < self.latency_ms || max > MAX_LATENCY_MS {
                return Err(bad(
                    "latency_max_ms",
                    "expected from latency_ms up to 60000 ms",
                ));
            }
        }
        Ok(())
    }

    pub fn is_active(&self) -> bool {
        self.error_rate > 0.0 || self.latency_ms > 0 || self.latency_max_ms.is_some() || self.hang
    }

    /// The latency to add to one request.
    pub fn latency(&self, rng: &mut impl Rng) -> Duration {
        let ms = match self.latency_max_ms {
            Some(max) if max > self.latency_ms => rng.random_range(self.latency_ms..=max),
            _ => self.latency_ms,
        };
        Duration::from_millis(ms)
    }

    /// Whether this request fails, and with which status.
    pub fn roll_error(&self, rng: &mut impl Rng) -> Option<u16> {
        (self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate)
            .then(|| self.status.unwrap_or(503))
    }
}

/// One service's fault switchboard. A watch channel, so requests held by a hang or an added
/// latency hear about a change: clearing a hang releases the requests it holds, as fixing a
/// real one would.
#[derive(Debug)]
pub struct Chaos {
    faults: watch::Sender<Faults>,
    /// The draws of the faults in force: from their `seed`, or from the OS.
    draws: Mutex<StdRng>,
}

impl Default for Chaos {
    fn default() -> Self {
        Self {
            faults: watch::Sender::default(),
            draws: Mutex::new(rand::make_rng()),
        }
    }
}

impl Chaos {
    /// The next latency draw of `faults`.
    pub fn latency(&self, faults: &Faults) -> Duration {
        faults.latency(&mut *self.draws.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The next failure draw of `faults`.
    pub fn roll_error(&self, faults: &Faults) -> Option<u16> {
        faults.roll_error(&mut *self.draws.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn get(&self) -> Faults {
        self.faults.borrow().clone()
    }

    /// Follows the faults: `changed()` on the receiver completes at the next [`Chaos::set`].
    pub fn subscribe(&self) -> watch::Receiver<Faults> {
        self.faults.subscribe()
    }

    pub fn set(&self, service: &str, faults: Faults) {
        tracing::warn!(
            event = "chaos",
            service,
            error_rate = faults.error_rate,
            status = faults.status,
            latency_ms = faults.latency_ms,
            latency_max_ms = faults.latency_max_ms,
            hang = faults.hang,
            seed = faults.seed,
            "faults changed"
        );
        *self.draws.lock().unwrap_or_else(|p| p.into_inner()) = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        self.faults.send_replace(faults);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_field() {
        let cases = [
            (r#"{"error_rate": 1.5}"#, "error_rate"),
            (r#"{"status": 200}"#, "status"),
            (r#"{"latency_ms": 70000}"#, "latency_ms"),
            (
                r#"{"latency_ms": 50, "latency_max_ms": 10}"#,
                "latency_max_ms",
            ),
        ];
        for (json, field) in cases {
            let f: Faults = serde_json::from_str(json).unwrap();
            match f.validate() {
                Err(ApiError::BadRequest {
                    field: Some(got), ..
                }) => assert_eq!(got, field),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(serde_json::from_str::<Faults>(r#"{"errror_rate": 1}"#).is_err());
    }

    #[test]
    fn latency_stays_in_its_range_and_errors_follow_the_rate() {
        let f = Faults {
            latency_ms: 10,
            latency_max_ms: Some(20),
            ..Faults::default()
        };
        let rng = &mut rand::rng();
        for _ in 0..100 {
            let d = f.latency(rng);
            assert!((10..=20).contains(&d.as_millis()), "{d:?}");
        }
        let always = Faults {
            error_rate: 1.0,
            status: Some(500),
            ..Faults::default()
        };
        assert_eq!(always.roll_error(rng), Some(500));
        assert_eq!(Faults::default().roll_error(rng), None);
        assert!(!Faults::default().is_active());
    }

    #[test]
    fn a_seeded_fault_draws_the_same_sequence_each_time_it_is_set() {
        let faults = |seed| Faults {
            error_rate: 0.5,
            latency_ms: 10,
            latency_max_ms: Some(500),
            seed: Some(seed),
            ..Faults::default()
        };
        let chaos = Chaos::default();
        let draws = |seed| {
            let f = faults(seed);
            chaos.set("test", f.clone());
            (0..40)
                .map(|_| (chaos.latency(&f), chaos.roll_error(&f)))
                .collect::<Vec<_>>()
        };
        let first = draws(7);
        assert_eq!(
            first,
            draws(7),
            "setting the same seed again restarts the sequence"
        );
        assert_ne!(first, draws(8));
        let failures = first.iter().filter(|(_, e)| e.is_some()).count();
        assert!((5..=35).contains(&failures), "{failures} of 40 at rate 0.5");
    }
}
