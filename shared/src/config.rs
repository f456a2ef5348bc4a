//! One typed [`Config`], read from the environment once at start-up.
//!
//! Every variable is parsed into the type it means (a port, a URL, a duration, a rate) and checked
//! here, so nothing past `main` re-validates. A bad value stops start-up with the variable's name,
//! the value and what was expected — all bad values at once, not one per restart — and the binary
//! exits with code 2. Parsing takes a lookup function instead of reading `std::env` directly so
//! tests (and `saga up`, which runs three services in one process) can hand in their own values.

use crate::breaker::BreakerConfig;
use reqwest::Url;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where records live.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// `MONGO_URL` set: MongoDB (or anything speaking its wire protocol, e.g. FerretDB).
    Mongo {
        url: String,
        db: String,
        /// Server selection / connect / operation budget, so a dead database fails fast (503).
        timeout: Duration,
    },
    /// `MONGO_URL` unset: an embedded redb file under `DATA_DIR`.
    Embedded { data_dir: PathBuf },
}

/// Where breaker state lives.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerBackend {
    /// Each process keeps its own breaker.
    Memory,
    /// State shared by all replicas of a service through Redis.
    Redis { url: String },
}

/// Retries of a hop call (exponential backoff with full jitter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Attempts in total, the first included: 1 means no retries.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Everything a service needs to know about its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ID`: the name in `hello from <ID>`, logs and metrics.
    pub id: String,
    /// `HOST`: the address to bind.
    pub host: IpAddr,
    /// `PORT`: 0 picks a free port.
    pub port: u16,
    /// `CHAIN_SVC`: the next hop's `/create` URL; `None` makes this the last hop.
    pub chain_svc: Option<Url>,
    /// `JUMPS`: a request whose count reaches this stops the chain (`Last`).
    pub jumps: u32,
    /// `INJECT_ERR`: fail requests with 502 at random, after persisting.
    pub inject_err: bool,
    /// `ERR_RATE`: the probability of an injected failure.
    pub err_rate: f64,
    pub store: StoreConfig,
    pub breaker: BreakerConfig,
    pub breaker_backend: BreakerBackend,
    pub saga: SagaConfig,
    pub retry: RetryConfig,
    /// `MAX_BODY_BYTES`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT_MS`: the server-side budget for one request, and the deadline a hop
    /// passes on when its caller sent none.
    pub request_timeout: Duration,
    /// `CHAOS_ENABLED`: expose the fault-injection API.
    pub chaos_enabled: bool,
    /// `CHAOS_TOKEN`: when set, `/chaos` needs `Authorization: Bearer <token>`.
    pub chaos_token: Option<String>,
    pub log_format: LogFormat,
}

/// One variable with a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVar {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

/// All the bad variables found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<BadVar>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for b in &self.0 {
            writeln!(f, "  {}={:?}: expected {}", b.var, b.value, b.expected)?;
        }
        Ok(())
    }
}

/// Reads variables through `get` and records every bad one.
struct Reader<F> {
    get: F,
    bad: Vec<BadVar>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn raw(&self, var: &str) -> Option<String> {
        (self.get)(var).filter(|v| !v.trim().is_empty())
    }

    fn parse<T>(
        &mut self,
        var: &'static str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> T {
        match self.raw(var) {
            None => default,
            Some(value) => match parse(value.trim()) {
                Some(v) => v,
                None => {
                    self.bad.push(BadVar {
                        var,
                        value,
                        expected: expected.to_string(),
                    });
                    default
                }
            },
        }
    }

    fn string(&mut self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    fn bool(&mut self, var: &'static str, default: bool) -> bool {
        self.parse(
            var,
            default,
            "one of 1, 0, true, false, yes, no",
            |v| match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => None,
            },
        )
    }

    fn u32_in(&mut self, var: &'static str, default: u32, min: u32, max: u32) -> u32 {
        let expected = format!("a whole number from {min} to {max}");
        self.parse(var, default, &expected, |v| {
            v.parse::<u32>().ok().filter(|n| (min..=max).contains(n))
        })
    }

    fn millis(&mut self, var: &'static str, default_ms: u64, min_ms: u64, max_ms: u64) -> Duration {
        let expected = format!("milliseconds, a whole number from {min_ms} to {max_ms}");
        Duration::from_millis(self.parse(var, default_ms, &expected, |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (min_ms..=max_ms).contains(n))
        }))
    }
}

const DAY_MS: u64 = 86_400_000;

impl Config {
    /// Reads the process environment. `service` and `default_port` are the binary's own
    /// defaults for `ID` and `PORT`.
    pub fn from_env(service: &str, default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(service, default_port, |k| std::env::var(k).ok())
    }

    /// Parses from any lookup (tests, `saga up`).
    pub fn from_lookup(
        service: &str,
        default_port: u16,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut r = Reader {
            get,
            bad: Vec::new(),
        };
        let id = r.string("ID", service);
        let host = r.parse(
            "HOST",
            IpAddr::from([0, 0, 0, 0]),
            "an IP address such as 0.0.0.0 or 127.0.0.1",
            |v| v.parse().ok(),
        );
        let port = r.parse(
            "PORT",
            default_port,
            "a TCP port number from 0 to 65535",
            |v| v.parse().ok(),
        );
        let chain_svc = r.parse(
            "CHAIN_SVC",
            None,
            "an http:// or https:// URL of the next hop's /create endpoint",
            |v| {
                Url::parse(v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .map(Some)
            },
        );
        let jumps = r.u32_in("JUMPS", 6, 1, 1_000_000);
        let inject_err = r.bool("INJECT_ERR", false);
        let err_rate = r.parse(
            "ERR_RATE",
            0.4,
            "a probability from 0 to 1, such as 0.4",
            |v| v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)),
        );

        let store = match r.raw("MONGO_URL") {
            Some(url) if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") => {
                StoreConfig::Mongo {
                    url,
                    db: r.string("MONGO_DB", "saga"),
                    timeout: r.millis("MONGO_TIMEOUT_MS", 2_000, 50, 120_000),
                }
            }
            Some(url) => {
                r.bad.push(BadVar {
                    var: "MONGO_URL",
                    value: url,
                    expected: "a mongodb:// or mongodb+srv:// connection string".into(),
                });
                StoreConfig::Embedded {
                    data_dir: PathBuf::new(),
                }
            }
            None => StoreConfig::Embedded {
                data_dir: PathBuf::from(r.string("DATA_DIR", "./data")),
            },
        };

        let defaults = BreakerConfig::default();
        let breaker = BreakerConfig {
            enabled: r.bool("BREAKER_ENABLED", defaults.enabled),
            timeout: r.millis("BREAKER_TIMEOUT_MS", millis(defaults.timeout), 1, DAY_MS),
            error_threshold_pct: r.parse(
                "BREAKER_ERROR_THRESHOLD",
                defaults.error_threshold_pct,
                "a percentage from 0 to 100",
                |v| v.parse::<u8>().ok().filter(|p| *p <= 100),
            ),
            reset: r.millis("BREAKER_RESET_MS", millis(defaults.reset), 1, DAY_MS),
            reset_jitter: r.millis(
                "BREAKER_RESET_JITTER_MS",
                millis(defaults.reset_jitter),
                0,
                DAY_MS,
            ),
            window: r.millis("BREAKER_WINDOW_MS", millis(defaults.window), 10, DAY_MS),
            min_calls: r.u32_in("BREAKER_MIN_CALLS", defaults.min_calls, 1, 1_000_000),
        };
        let breaker_backend = match r.string("BREAKER_BACKEND", "memory").as_str() {
            "memory" => BreakerBackend::Memory,
            "redis" => match r.raw("REDIS_URL") {
                Some(url) if url.starts_with("redis://") => BreakerBackend::Redis { url },
                other => {
                    r.bad.push(BadVar {
                        var: "REDIS_URL",
                        value: other.unwrap_or_default(),
                        expected: "a redis:// URL (required when BREAKER_BACKEND=redis; TLS is not built in)"
                            .into(),
                    });
                    BreakerBackend::Memory
                }
            },
            other => {
                r.bad.push(BadVar {
                    var: "BREAKER_BACKEND",
                    value: other.to_string(),
                    expected: "memory or redis".into(),
                });
                BreakerBackend::Memory
            }
        };
        let sd = SagaConfig::default();
        let saga = SagaConfig {
            max_attempts: r.u32_in("SAGA_MAX_ATTEMPTS", sd.max_attempts, 1, 10_000),
            deadline: r.millis("SAGA_DEADLINE_MS", millis(sd.deadline), 100, DAY_MS),
            backoff_base: r.millis("SAGA_BACKOFF_BASE_MS", millis(sd.backoff_base), 1, DAY_MS),
            backoff_cap: r.millis("SAGA_BACKOFF_CAP_MS", millis(sd.backoff_cap), 1, DAY_MS),
            lease: r.millis("SAGA_LEASE_MS", millis(sd.lease), 100, DAY_MS),
            poll: r.millis("SAGA_POLL_MS", millis(sd.poll), 10, 60_000),
        };
        if saga.backoff_cap < saga.backoff_base {
            r.bad.push(BadVar {
                var: "SAGA_BACKOFF_CAP_MS",
                value: millis(saga.backoff_cap).to_string(),
                expected: format!(
                    "at least SAGA_BACKOFF_BASE_MS ({})",
                    millis(saga.backoff_base)
                ),
            });
        }
        let retry = RetryConfig {
            max_attempts: r.u32_in("RETRY_MAX_ATTEMPTS", 1, 1, 100),
            base: r.millis("RETRY_BASE_MS", 50, 1, DAY_MS),
            cap: r.millis("RETRY_CAP_MS", 2_000, 1, DAY_MS),
        };
        if retry.cap < retry.base {
            r.bad.push(BadVar {
                var: "RETRY_CAP_MS",
                value: millis(retry.cap).to_string(),
                expected: format!("at least RETRY_BASE_MS ({})", millis(retry.base)),
            });
        }
        let max_body_bytes = r.parse(
            "MAX_BODY_BYTES",
            64 * 1024,
            "a size in bytes from 64 to 16777216",
            |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (64..=16 << 20).contains(n))
            },
        );
        let request_timeout = r.millis("REQUEST_TIMEOUT_MS", 10_000, 10, DAY_MS);
        let chaos_enabled = r.bool("CHAOS_ENABLED", false);
        let chaos_token = r.raw("CHAOS_TOKEN");
        let log_format = r.parse(
            "LOG_FORMAT",
            LogFormat::Pretty,
            "pretty or json",
            |v| match v.to_ascii_lowercase().as_str() {
                "pretty" => Some(LogFormat::Pretty),
                "json" => Some(LogFormat::Json),
                _ => None,
            },
        );

        if !r.bad.is_empty() {
            return Err(ConfigError(r.bad));
        }
        Ok(Config {
            id,
            host,
            port,
            chain_svc,
            jumps,
            inject_err,
            err_rate,
            store,
            breaker,
            breaker_backend,
            saga,
            retry,
            max_body_bytes,
            request_timeout,
            chaos_enabled,
            chaos_token,
            log_format,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup("order", 3000, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.id, "order");
        assert_eq!(c.port, 3000);
        assert_eq!(c.jumps, 6);
        assert!(!c.inject_err);
        assert_eq!(c.err_rate, 0.4);
        assert_eq!(c.breaker.timeout, Duration::from_millis(300));
        assert_eq!(c.breaker.error_threshold_pct, 50);
        assert_eq!(c.breaker.reset, Duration::from_secs(10));
        assert_eq!(c.breaker.min_calls, 5);
        assert_eq!(c.max_body_bytes, 65536);
        assert!(c.chain_svc.is_none());
        assert_eq!(c.breaker_backend, BreakerBackend::Memory);
        assert!(matches!(c.store, StoreConfig::Embedded { .. }));
    }

    #[test]
    fn every_bad_value_is_reported_with_name_value_and_expectation() {
        let err = parse(&[
            ("PORT", "http"),
            ("ERR_RATE", "1.5"),
            ("CHAIN_SVC", "payment:3001"),
            ("BREAKER_BACKEND", "etcd"),
        ])
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|b| b.var).collect();
        assert_eq!(vars, ["PORT", "CHAIN_SVC", "ERR_RATE", "BREAKER_BACKEND"]);
        let text = err.to_string();
        assert!(
            text.contains("PORT=\"http\": expected a TCP port"),
            "{text}"
        );
        assert!(text.contains("ERR_RATE=\"1.5\""), "{text}");
    }

    #[test]
    fn mongo_url_selects_mongo_and_redis_backend_needs_a_url() {
        let c = parse(&[("MONGO_URL", "mongodb://db:27017"), ("MONGO_DB", "x")]).unwrap();
        assert!(matches!(c.store, StoreConfig::Mongo { ref db, .. } if db == "x"));
        let err = parse(&[("BREAKER_BACKEND", "redis")]).unwrap_err();
        assert_eq!(err.0[0].var, "REDIS_URL");
        let err = parse(&[("MONGO_URL", "postgres://x")]).unwrap_err();
        assert_eq!(err.0[0].var, "MONGO_URL");
    }

    #[test]
    fn booleans_accept_common_spellings() {
        assert!(parse(&[("INJECT_ERR", "1")]).unwrap().inject_err);
        assert!(parse(&[("INJECT_ERR", "TRUE")]).unwrap().inject_err);
        assert!(!parse(&[("INJECT_ERR", "0")]).unwrap().inject_err);
        assert!(parse(&[("INJECT_ERR", "maybe")]).is_err());
    }

    #[test]
    fn retry_cap_below_base_is_refused() {
        let err = parse(&[("RETRY_BASE_MS", "500"), ("RETRY_CAP_MS", "100")]).unwrap_err();
        assert_eq!(err.0[0].var, "RETRY_CAP_MS");
    }
}
