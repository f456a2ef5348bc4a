//! How a breaker behaves ([`BreakerConfig`]) and where its state lives ([`BreakerBackend`]),
//! each with its defaults and the `BREAKER_*` / `REDIS_URL` variables it is read from.
//!
//! Both are plain values built once at start-up: the struct, its defaults and its parsing sit
//! side by side here so each variable has exactly one home, and the service configuration
//! (`crate::config`) only asks the sections to read themselves.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::jitter::Jitter;
use crate::env::{self, Reader, DAY_MS};

/// What makes a closed breaker open (`BREAKER_POLICY`). Every policy shares the window
/// (`BREAKER_WINDOW_MS`), the state machine, the timeout and the reset; they differ in which
/// outcomes count and which rule trips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum BreakerPolicy {
    /// opossum's rolling percentage: at least `BREAKER_MIN_CALLS` calls in the window and more
    /// than `BREAKER_ERROR_THRESHOLD` % of them failed.
    #[default]
    Rate,
    /// The seed's count: `BREAKER_FAILURES` failures within the window (the seed's `expires`).
    Count {
        /// Failures in the window that open the breaker.
        failures: u32,
    },
    /// resilience4j's slow-call rate: as `Rate`, but a call still running after
    /// `BREAKER_SLOW_CALL_MS` counts as a failure the moment it crosses that line.
    Slow {
        /// How long a call may run before it counts as slow.
        #[serde(rename = "slow_call_ms", serialize_with = "millis")]
        slow_call: Duration,
    },
}

impl BreakerPolicy {
    /// The slow-call threshold, when the policy has one.
    pub fn slow_call(&self) -> Option<Duration> {
        match self {
            Self::Slow { slow_call } => Some(*slow_call),
            Self::Rate | Self::Count { .. } => None,
        }
    }
}

/// How a breaker behaves. The defaults are the original demo's (timeout 300 ms, threshold
/// 50 %, reset 10 s) plus opossum's window (10 s, at least 5 calls), the rate policy, and a
/// uniform reset jitter of up to a tenth of the reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerConfig {
    /// `false`: the breaker never opens, but the timeout still applies.
    pub enabled: bool,
    /// Longest a call may take; a caller's deadline can only shorten it.
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    /// Opens when the failure percentage in the window is strictly greater than this.
    pub error_threshold_pct: u8,
    /// How long the breaker stays open before it admits a trial call.
    #[serde(rename = "reset_ms", serialize_with = "millis")]
    pub reset: Duration,
    /// Open time is `reset` plus a random duration in `[0, reset_jitter]`, drawn from `jitter`.
    /// [`read`](Self::read) defaults it to a tenth of the reset it read; `default()` to 1 s, a
    /// tenth of the default reset (code that shortens `reset` sets this too).
    #[serde(rename = "reset_jitter_ms", serialize_with = "millis")]
    pub reset_jitter: Duration,
    /// The distribution of the reset jitter.
    #[serde(rename = "reset_jitter")]
    pub jitter: Jitter,
    /// Length of the rolling window, split in 10 buckets.
    #[serde(rename = "window_ms", serialize_with = "millis")]
    pub window: Duration,
    /// The breaker never opens with fewer calls than this in the window (`rate`, `slow`).
    pub min_calls: u32,
    /// What opens the breaker.
    #[serde(flatten)]
    pub policy: BreakerPolicy,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_millis(300),
            error_threshold_pct: 50,
            reset: Duration::from_secs(10),
            reset_jitter: Duration::from_secs(1),
            jitter: Jitter::Uniform,
            window: Duration::from_secs(10),
            min_calls: 5,
            policy: BreakerPolicy::Rate,
        }
    }
}

/// `BREAKER_FAILURES` when unset: the seed's count.
const DEFAULT_FAILURES: u32 = 5;

impl BreakerConfig {
    /// `BREAKER_ENABLED`, `BREAKER_TIMEOUT_MS`, `BREAKER_ERROR_THRESHOLD`, `BREAKER_RESET_MS`,
    /// `BREAKER_RESET_JITTER` / `_MS`, `BREAKER_WINDOW_MS`, `BREAKER_MIN_CALLS`,
    /// `BREAKER_POLICY` and its parameters (`BREAKER_FAILURES`, `BREAKER_SLOW_CALL_MS`); unset
    /// ones keep the [defaults](Self::default). The jitter bound defaults to a tenth of the
    /// reset and the slow-call line to half the timeout, so they follow those when only those
    /// are set.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let d = Self::default();
        let timeout = r.millis("BREAKER_TIMEOUT_MS", d.timeout, 1, DAY_MS);
        let reset = r.millis("BREAKER_RESET_MS", d.reset, 1, DAY_MS);
        Self {
            enabled: r.bool("BREAKER_ENABLED", d.enabled),
            timeout,
            error_threshold_pct: r.parse(
                "BREAKER_ERROR_THRESHOLD",
                d.error_threshold_pct,
                "a percentage from 0 to 100",
                |v| v.parse::<u8>().ok().filter(|p| *p <= 100),
            ),
            reset,
            reset_jitter: r.millis("BREAKER_RESET_JITTER_MS", reset / 10, 0, DAY_MS),
            jitter: r.parse(
                "BREAKER_RESET_JITTER",
                d.jitter,
                Jitter::NAMES,
                Jitter::parse,
            ),
            window: r.millis("BREAKER_WINDOW_MS", d.window, 10, DAY_MS),
            min_calls: r.u32_in("BREAKER_MIN_CALLS", d.min_calls, 1, 1_000_000),
            policy: read_policy(r, timeout),
        }
    }
}

/// `BREAKER_POLICY` and the parameter of the chosen policy; a slow-call line must be shorter
/// than the timeout, or no call could ever be slow before it times out.
fn read_policy(r: &mut Reader<'_>, timeout: Duration) -> BreakerPolicy {
    match r
        .string("BREAKER_POLICY", "rate")
        .to_ascii_lowercase()
        .as_str()
    {
        "rate" => BreakerPolicy::Rate,
        "count" => BreakerPolicy::Count {
            failures: r.u32_in("BREAKER_FAILURES", DEFAULT_FAILURES, 1, 1_000_000),
        },
        "slow" => {
            let slow_call = r.millis("BREAKER_SLOW_CALL_MS", timeout / 2, 1, DAY_MS);
            if slow_call >= timeout {
                r.reject(
                    "BREAKER_SLOW_CALL_MS",
                    env::millis(slow_call).to_string(),
                    format!(
                        "less than BREAKER_TIMEOUT_MS ({}): a call cannot be slow after it timed out",
                        env::millis(timeout)
                    ),
                );
            }
            BreakerPolicy::Slow { slow_call }
        }
        other => {
            let other = other.to_owned();
            r.reject("BREAKER_POLICY", other, "rate, count or slow");
            BreakerPolicy::Rate
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(env::millis(*d))
}

/// Where breaker state lives.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerBackend {
    /// Each process keeps its own breaker.
    Memory,
    /// State shared by all replicas of a service through Redis.
    Redis { url: String },
}

impl BreakerBackend {
    /// `BREAKER_BACKEND` (`memory`, the default, or `redis`), and with `redis` the `REDIS_URL`
    /// it needs.
    pub fn read(r: &mut Reader<'_>) -> Self {
        match r.string("BREAKER_BACKEND", "memory").as_str() {
            "memory" => Self::Memory,
            "redis" => match r.raw("REDIS_URL") {
                Some(url) if url.starts_with("redis://") => Self::Redis { url },
                other => {
                    r.reject(
                        "REDIS_URL",
                        env::redact_url(&other.unwrap_or_default()),
                        "a redis:// URL (required when BREAKER_BACKEND=redis; TLS is not built in)",
                    );
                    Self::Memory
                }
            },
            other => {
                r.reject("BREAKER_BACKEND", other, "memory or redis");
                Self::Memory
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T>(vars: &[(&str, &str)], section: impl FnOnce(&mut Reader<'_>) -> T) -> T {
        let mut r = Reader::new(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        });
        let value = section(&mut r);
        r.finish(value).expect("valid")
    }

    #[test]
    fn variables_override_the_defaults() {
        let cfg = read(
            &[("BREAKER_TIMEOUT_MS", "1500"), ("BREAKER_MIN_CALLS", "2")],
            BreakerConfig::read,
        );
        assert_eq!(cfg.timeout, Duration::from_millis(1_500));
        assert_eq!(cfg.min_calls, 2);
        assert_eq!(cfg.reset, BreakerConfig::default().reset);
    }

    fn bad<T: std::fmt::Debug>(
        vars: &[(&str, &str)],
        section: impl FnOnce(&mut Reader<'_>) -> T,
    ) -> Vec<&'static str> {
        let mut r = Reader::new(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        });
        let value = section(&mut r);
        match r.finish(value) {
            Ok(v) => panic!("accepted {v:?}"),
            Err(e) => e.0.into_iter().map(|b| b.var).collect(),
        }
    }

    #[test]
    fn the_default_is_the_rate_policy_with_uniform_jitter_of_a_tenth_of_the_reset() {
        let cfg = read(&[], BreakerConfig::read);
        assert_eq!(cfg, BreakerConfig::default());
        assert_eq!(cfg.policy, BreakerPolicy::Rate);
        assert_eq!(cfg.jitter, Jitter::Uniform);
        assert_eq!(cfg.reset_jitter, Duration::from_secs(1));
        let short = read(&[("BREAKER_RESET_MS", "200")], BreakerConfig::read);
        assert_eq!(short.reset_jitter, Duration::from_millis(20));
    }

    #[test]
    fn policies_take_their_parameters() {
        let count = read(
            &[("BREAKER_POLICY", "count"), ("BREAKER_FAILURES", "3")],
            BreakerConfig::read,
        );
        assert_eq!(count.policy, BreakerPolicy::Count { failures: 3 });
        let slow = read(
            &[("BREAKER_POLICY", "Slow"), ("BREAKER_SLOW_CALL_MS", "120")],
            BreakerConfig::read,
        );
        assert_eq!(slow.policy.slow_call(), Some(Duration::from_millis(120)));
        let half = read(
            &[("BREAKER_POLICY", "slow"), ("BREAKER_TIMEOUT_MS", "1000")],
            BreakerConfig::read,
        );
        assert_eq!(half.policy.slow_call(), Some(Duration::from_millis(500)));
        let gaussian = read(
            &[
                ("BREAKER_RESET_JITTER", "gaussian"),
                ("BREAKER_RESET_JITTER_MS", "0"),
            ],
            BreakerConfig::read,
        );
        assert_eq!(gaussian.jitter, Jitter::Gaussian);
        assert_eq!(gaussian.reset_jitter, Duration::ZERO);
    }

    #[test]
    fn bad_policies_are_refused_by_name() {
        assert_eq!(
            bad(&[("BREAKER_POLICY", "sometimes")], BreakerConfig::read),
            ["BREAKER_POLICY"]
        );
        assert_eq!(
            bad(
                &[("BREAKER_POLICY", "count"), ("BREAKER_FAILURES", "0")],
                BreakerConfig::read
            ),
            ["BREAKER_FAILURES"]
        );
        assert_eq!(
            bad(
                &[("BREAKER_POLICY", "slow"), ("BREAKER_SLOW_CALL_MS", "300")],
                BreakerConfig::read
            ),
            ["BREAKER_SLOW_CALL_MS"],
            "a slow line at the timeout can never be crossed"
        );
        assert_eq!(
            bad(&[("BREAKER_RESET_JITTER", "poisson")], BreakerConfig::read),
            ["BREAKER_RESET_JITTER"]
        );
    }

    #[test]
    fn the_policy_shows_in_the_configuration_json() {
        let cfg = BreakerConfig {
            policy: BreakerPolicy::Slow {
                slow_call: Duration::from_millis(150),
            },
            ..BreakerConfig::default()
        };
        let json = serde_json::to_value(&cfg).expect("serializes");
        assert_eq!(json["policy"], "slow");
        assert_eq!(json["slow_call_ms"], 150);
        assert_eq!(json["reset_jitter"], "uniform");
        assert_eq!(json["reset_jitter_ms"], 1_000);
    }

    #[test]
    fn redis_backend_takes_its_url() {
        let backend = read(
            &[
                ("BREAKER_BACKEND", "redis"),
                ("REDIS_URL", "redis://r:6379/"),
            ],
            BreakerBackend::read,
        );
        assert_eq!(
            backend,
            BreakerBackend::Redis {
                url: "redis://r:6379/".into()
            }
        );
    }
}
