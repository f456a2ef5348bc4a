//! How a breaker behaves ([`BreakerConfig`]) and where its state lives ([`BreakerBackend`]),
//! each with its defaults and the `BREAKER_*` / `REDIS_URL` variables it is read from.
//!
//! Both are plain values built once at start-up: the struct, its defaults and its parsing sit
//! side by side here so each variable has exactly one home, and the service configuration
//! (`crate::config`) only asks the sections to read themselves.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::env::{self, Reader, DAY_MS};

/// How a breaker behaves. The defaults are the original demo's (timeout 300 ms, threshold
/// 50 %, reset 10 s) plus opossum's window (10 s, at least 5 calls).
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
    /// Open time is `reset` plus a uniform random duration in `[0, reset_jitter]`.
    #[serde(rename = "reset_jitter_ms", serialize_with = "millis")]
    pub reset_jitter: Duration,
    /// Length of the rolling window, split in 10 buckets.
    #[serde(rename = "window_ms", serialize_with = "millis")]
    pub window: Duration,
    /// The breaker never opens with fewer calls than this in the window.
    pub min_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_millis(300),
            error_threshold_pct: 50,
            reset: Duration::from_secs(10),
            reset_jitter: Duration::ZERO,
            window: Duration::from_secs(10),
            min_calls: 5,
        }
    }
}

impl BreakerConfig {
    /// `BREAKER_ENABLED`, `BREAKER_TIMEOUT_MS`, `BREAKER_ERROR_THRESHOLD`, `BREAKER_RESET_MS`,
    /// `BREAKER_RESET_JITTER_MS`, `BREAKER_WINDOW_MS`, `BREAKER_MIN_CALLS`; unset ones keep
    /// the [defaults](Self::default).
    pub fn read(r: &mut Reader<'_>) -> Self {
        let d = Self::default();
        Self {
            enabled: r.bool("BREAKER_ENABLED", d.enabled),
            timeout: r.millis("BREAKER_TIMEOUT_MS", d.timeout, 1, DAY_MS),
            error_threshold_pct: r.parse(
                "BREAKER_ERROR_THRESHOLD",
                d.error_threshold_pct,
                "a percentage from 0 to 100",
                |v| v.parse::<u8>().ok().filter(|p| *p <= 100),
            ),
            reset: r.millis("BREAKER_RESET_MS", d.reset, 1, DAY_MS),
            reset_jitter: r.millis("BREAKER_RESET_JITTER_MS", d.reset_jitter, 0, DAY_MS),
            window: r.millis("BREAKER_WINDOW_MS", d.window, 10, DAY_MS),
            min_calls: r.u32_in("BREAKER_MIN_CALLS", d.min_calls, 1, 1_000_000),
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
