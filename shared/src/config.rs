//! One typed [`Config`], read from the environment once at start-up.
//!
//! Every variable is parsed into the type it means (a port, a URL, a duration, a rate) and checked
//! at start-up, so nothing past `main` re-validates. A bad value stops start-up with the variable's
//! name, the value and what was expected — all bad values at once, not one per restart — and the
//! binary exits with code 2. Parsing takes a lookup function instead of reading `std::env`
//! directly so tests (and `saga up`, which runs three services in one process) can hand in their
//! own values.
//!
//! This file holds the service's own variables (`ID`, `HOST`, `PORT`, `CHAIN_SVC`, `JUMPS`,
//! `FALLBACK`, `INJECT_ERR`, `ERR_RATE`, `MAX_BODY_BYTES`, `REQUEST_TIMEOUT_MS`, `MAX_IN_FLIGHT`,
//! `MAX_CONNECTIONS`, `HEADER_TIMEOUT_MS`, `CHAOS_*`, `LOG_FORMAT`)
//! and assembles the sections, each of which reads its own variables next to its struct and
//! defaults: [`StoreConfig`] (`MONGO_*`, `DATA_DIR`) in `store`, [`BreakerConfig`] and
//! [`BreakerBackend`] (`BREAKER_*`, `REDIS_URL`) in `breaker`, [`RetryConfig`] (`RETRY_*`) in
//! `retry`, [`SagaConfig`] (`SAGA_*`) in `saga`, [`HopKeys`] (`HOP_*`) in `hop`. The reader they
//! share is `crate::env`'s. The sections are re-exported here, where callers have always found
//! them.

use crate::env::{Reader, DAY_MS};
use crate::failpoint::Failpoints;
use reqwest::Url;
use std::net::IpAddr;
use std::time::Duration;

pub use crate::breaker::{BreakerBackend, BreakerConfig};
pub use crate::env::{BadVar, ConfigError};
pub use crate::hop::HopKeys;
pub use crate::retry::RetryConfig;
pub use crate::saga::SagaConfig;
pub use crate::store::StoreConfig;

/// `LOG_FORMAT`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`: `pretty` (the default) or `json`, in any case.
    fn read(r: &mut Reader<'_>) -> Self {
        r.parse(
            "LOG_FORMAT",
            LogFormat::Pretty,
            "pretty or json",
            |v| match v.to_ascii_lowercase().as_str() {
                "pretty" => Some(LogFormat::Pretty),
                "json" => Some(LogFormat::Json),
                _ => None,
            },
        )
    }
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
    /// `FALLBACK`: graceful degradation. When the next hop fails (breaker open, timeout, 5xx,
    /// no connection) the request answers `degraded` and the re-driver finishes it later; with
    /// `false` it answers 502 `next_hop_failed` instead (the record is kept and re-driven all
    /// the same), so a caller sees the failure as an outage simulator's client would.
    pub fallback: bool,
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
    /// `MAX_IN_FLIGHT`: `POST /create` and `/compensate` requests handled at once; one more is
    /// shed at once with 503 + `Retry-After` (admission control: past the machine's capacity, a
    /// queue only adds latency until every client times out).
    pub max_in_flight: usize,
    /// `HOP_SECRET`, `HOP_KEY_ID`, `HOP_ACCEPTED_SECRETS`, `HOP_MAX_SKEW_MS`: sign hop calls, and
    /// (except at the edge, order) refuse unsigned ones; `None` when `HOP_SECRET` is unset.
    pub hop_keys: Option<HopKeys>,
    /// `MAX_CONNECTIONS`: connections served at once; one more is closed unread.
    pub max_connections: usize,
    /// `HEADER_TIMEOUT_MS`: how long a connection may take to send a request's head, counted
    /// from when one is waited for (so also the idle keep-alive timeout). Slowloris defence.
    pub header_timeout: Duration,
    /// `CHAOS_ENABLED`: expose the fault-injection API.
    pub chaos_enabled: bool,
    /// `CHAOS_TOKEN`: when set, `/chaos` needs `Authorization: Bearer <token>`. Trimmed; blank
    /// counts as unset.
    pub chaos_token: Option<String>,
    pub log_format: LogFormat,
    /// `FAILPOINTS`: armed failpoints (tests only; see `crate::failpoint`).
    pub failpoints: Failpoints,
}

impl Config {
    /// Reads the process environment. `service` and `default_port` are the binary's own
    /// defaults for `ID` and `PORT`.
    pub fn from_env(service: &str, default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(service, default_port, |k| std::env::var(k).ok())
    }

    /// Parses from any lookup (tests, `saga up`). Variables are read, and bad ones reported,
    /// in the order of the README's table.
    pub fn from_lookup(
        service: &str,
        default_port: u16,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut r = Reader::new(get);
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
        let chain_svc = read_chain_svc(&mut r);
        let jumps = r.u32_in("JUMPS", 6, 1, 1_000_000);
        let fallback = r.bool("FALLBACK", true);
        let inject_err = r.bool("INJECT_ERR", false);
        let err_rate = r.parse(
            "ERR_RATE",
            0.4,
            "a probability from 0 to 1, such as 0.4",
            |v| v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)),
        );
        let store = StoreConfig::read(&mut r);
        let breaker = BreakerConfig::read(&mut r);
        let breaker_backend = BreakerBackend::read(&mut r);
        let saga = SagaConfig::read(&mut r);
        let retry = RetryConfig::read(&mut r);
        let config = Config {
            id,
            host,
            port,
            chain_svc,
            jumps,
            fallback,
            inject_err,
            err_rate,
            store,
            breaker,
            breaker_backend,
            saga,
            retry,
            max_body_bytes: read_max_body_bytes(&mut r),
            request_timeout: r.millis("REQUEST_TIMEOUT_MS", Duration::from_secs(10), 10, DAY_MS),
            max_in_flight: r.u32_in("MAX_IN_FLIGHT", 128, 1, 1_000_000) as usize,
            hop_keys: HopKeys::read(&mut r),
            max_connections: r.u32_in("MAX_CONNECTIONS", 1024, 1, 1_000_000) as usize,
            header_timeout: r.millis("HEADER_TIMEOUT_MS", Duration::from_secs(10), 10, DAY_MS),
            chaos_enabled: r.bool("CHAOS_ENABLED", false),
            chaos_token: r.raw("CHAOS_TOKEN").map(|t| t.trim().to_owned()),
            log_format: LogFormat::read(&mut r),
            failpoints: Failpoints::read(&mut r),
        };
        r.finish(config)
    }
}

/// `CHAIN_SVC`: an http(s) URL with a host, or unset for the last hop.
fn read_chain_svc(r: &mut Reader<'_>) -> Option<Url> {
    r.parse(
        "CHAIN_SVC",
        None,
        "an http:// or https:// URL of the next hop's /create endpoint",
        |v| {
            Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(Some)
        },
    )
}

/// `MAX_BODY_BYTES`: 64 KiB unless set, from 64 bytes to 16 MiB.
fn read_max_body_bytes(r: &mut Reader<'_>) -> usize {
    r.parse(
        "MAX_BODY_BYTES",
        64 * 1024,
        "a size in bytes from 64 to 16777216",
        |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (64..=16 << 20).contains(n))
        },
    )
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
        assert!(c.fallback);
        assert!(!c.inject_err);
        assert_eq!(c.err_rate, 0.4);
        assert_eq!(c.breaker.timeout, Duration::from_millis(300));
        assert_eq!(c.breaker.error_threshold_pct, 50);
        assert_eq!(c.breaker.reset, Duration::from_secs(10));
        assert_eq!(c.breaker.min_calls, 5);
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.header_timeout, Duration::from_secs(10));
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
        assert!(!parse(&[("FALLBACK", "false")]).unwrap().fallback);
        let err = parse(&[("FALLBACK", "sometimes")]).unwrap_err();
        assert_eq!(err.0[0].var, "FALLBACK");
    }

    #[test]
    fn a_blank_chaos_token_is_no_token_and_a_padded_one_is_trimmed() {
        assert_eq!(parse(&[("CHAOS_TOKEN", "   ")]).unwrap().chaos_token, None);
        assert_eq!(
            parse(&[("CHAOS_TOKEN", " s3cret \n")]).unwrap().chaos_token,
            Some("s3cret".into())
        );
    }

    #[test]
    fn a_bad_database_or_redis_url_is_reported_without_its_password() {
        let err = parse(&[
            ("MONGO_URL", "postgres://admin:hunter2@db:5432/x"),
            ("BREAKER_BACKEND", "redis"),
            ("REDIS_URL", "http://:hunter3@cache:6379/"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("hunter3"),
            "{err}"
        );
        assert!(
            err.contains("MONGO_URL=\"postgres://***@db:5432/x\""),
            "{err}"
        );
        assert!(
            err.contains("REDIS_URL=\"http://***@cache:6379/\""),
            "{err}"
        );
    }

    #[test]
    fn retry_cap_below_base_is_refused() {
        let err = parse(&[("RETRY_BASE_MS", "500"), ("RETRY_CAP_MS", "100")]).unwrap_err();
        assert_eq!(err.0[0].var, "RETRY_CAP_MS");
    }
}
