//! What a simulation does to the stack: the fault (scenario) and the resilience setup.
//!
//! Both are plain data turned into what the services understand — a `/chaos` body and the
//! environment overlay of `saga up` — so the same run can be described in a CSV name, a table
//! row and a chart legend without any of them knowing about HTTP. A setup is three switches
//! rather than a list of four names because a single run may combine them freely; the matrix
//! just walks the four combinations that tell the story (none → timeouts → breakers → retries).

use clap::ValueEnum;
use serde::Serialize;
use std::time::Duration;

/// The kind of trouble injected into the target service during the fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// The target is down: its listener is stopped, so connections are refused (or it hangs,
    /// with `--hang`, or fails with `--error-rate`/`--status`).
    Outage,
    /// The target is slow: every request waits a random time in
    /// `--latency-ms..=--latency-max-ms`. `slow` is its older name.
    #[value(alias = "slow")]
    Performance,
    /// Intermittent errors: a share `--error-rate` of requests fail with `--status`.
    Flaky,
    /// A metastable failure: the target has a fixed capacity (`--workers`, each request holding
    /// one `--service-ms`, in a FIFO queue) all run long, and the fault window is a short
    /// trigger that makes its service slower (`--trigger-service-ms`).
    Metastable,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Outage => "outage",
            Self::Performance => "performance",
            Self::Flaky => "flaky",
            Self::Metastable => "metastable",
        }
    }
}

/// The service the fault is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Order,
    Payment,
    Shipment,
}

impl Target {
    /// The index (in `recording::BREAKERS`) of the breaker whose owner calls this service;
    /// `None` for order, which the simulated client calls.
    pub fn caller_breaker(self) -> Option<usize> {
        match self {
            Self::Order => None,
            Self::Payment => Some(0),
            Self::Shipment => Some(1),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Payment => "payment",
            Self::Shipment => "shipment",
        }
    }
}

/// What the fault window does to the target: stop its listener (`down`), or the `/chaos` body
/// of a runtime fault, already checked against the API's limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// The target's listener is stopped for the window and started again on the same port:
    /// connections are refused (and pooled ones reset), a real socket error.
    pub down: bool,
    pub error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<u64>,
    pub hang: bool,
    /// The seed of the `/chaos` draws (latencies, failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// A capacity: this many workers, each request holding one `service_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    pub service_ms: u64,
}

impl Fault {
    /// No fault at all: the base the scenarios fill in.
    pub const fn none() -> Self {
        Self {
            down: false,
            error_rate: 0.0,
            status: None,
            latency_ms: 0,
            latency_max_ms: None,
            hang: false,
            seed: None,
            workers: None,
            service_ms: 0,
        }
    }

    /// A capacity of `workers`, each request holding one for `service_ms`.
    pub const fn capacity(workers: u32, service_ms: u64) -> Self {
        Self {
            workers: Some(workers),
            service_ms,
            ..Self::none()
        }
    }

    /// The `PUT /chaos` body: everything but `down`, which no API sets.
    pub fn chaos_body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "hang": self.hang,
        });
        for (key, value) in [
            ("status", self.status.map(u64::from)),
            ("latency_max_ms", self.latency_max_ms),
            ("seed", self.seed),
            ("workers", self.workers.map(u64::from)),
            ("service_ms", self.workers.map(|_| self.service_ms)),
        ] {
            if let (Some(v), Some(map)) = (value, body.as_object_mut()) {
                map.insert(key.into(), v.into());
            }
        }
        body
    }

    /// A short human description for titles and logs.
    pub fn describe(&self) -> String {
        if self.down {
            return "down: connection refused".into();
        }
        if self.hang {
            return "hang".into();
        }
        let mut parts = Vec::new();
        if self.error_rate > 0.0 {
            let status = self.status.unwrap_or(503);
            if self.error_rate >= 1.0 {
                parts.push(format!("all fail {status}"));
            } else {
                parts.push(format!("{:.0}% fail {status}", self.error_rate * 100.0));
            }
        }
        match self.latency_max_ms {
            Some(max) if max > self.latency_ms => {
                parts.push(format!("+{}..{} ms", self.latency_ms, max))
            }
            _ if self.latency_ms > 0 => parts.push(format!("+{} ms", self.latency_ms)),
            _ => {}
        }
        if let Some(workers) = self.workers {
            parts.push(format!("{workers} workers × {} ms", self.service_ms));
        }
        parts.join(", ")
    }
}

/// Which resilience mechanisms the services run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setup {
    /// Hop timeout `--timeout`; without it the hop waits as long as the request timeout.
    pub timeouts: bool,
    /// Circuit breakers on every hop (`BREAKER_ENABLED`).
    pub breakers: bool,
    /// Retries of transient hop failures (`RETRY_MAX_ATTEMPTS` > 1).
    pub retries: bool,
    /// Retries within the retry budget (`RETRY_BUDGET`); without it every failure is retried.
    pub budget: bool,
    /// Load shedding: at most `--max-in-flight` requests in each service (`MAX_IN_FLIGHT`),
    /// one more answered 503 at once.
    pub shedding: bool,
}

impl Setup {
    /// The matrix, the original simulator's story: nothing; timeouts (fast failures); breakers
    /// (load off the sick hop); retries without a budget (the mess); with one (contained).
    pub const MATRIX: [Setup; 5] = [
        Setup::new(false, false, false),
        Setup::new(true, false, false),
        Setup::new(true, true, false),
        Setup::new(true, false, true),
        Setup::new(true, false, true).budgeted(),
    ];

    /// `saga simulate metastable --matrix`: retries without a budget and nothing else (the
    /// loop forms), against every protection at once (it drains).
    pub const METASTABLE: [Setup; 2] = [
        Setup::new(true, false, true),
        Setup::new(true, true, true).budgeted().shedding(),
    ];

    pub const fn new(timeouts: bool, breakers: bool, retries: bool) -> Self {
        Self {
            timeouts,
            breakers,
            retries,
            budget: false,
            shedding: false,
        }
    }

    /// The same setup with load shedding (`MAX_IN_FLIGHT`) in every service.
    pub const fn shedding(self) -> Self {
        Self {
            shedding: true,
            ..self
        }
    }

    /// The same setup with its retries kept within the retry budget.
    pub const fn budgeted(self) -> Self {
        Self {
            budget: true,
            ..self
        }
    }

    /// `none`, `timeouts`, `timeouts+breakers`, `timeouts+retries+budget`, …
    pub fn label(self) -> String {
        let parts: Vec<&str> = [
            (self.timeouts, "timeouts"),
            (self.breakers, "breakers"),
            (self.retries, "retries"),
            (self.retries && self.budget, "budget"),
            (self.shedding, "shedding"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("+")
        }
    }

    /// The label as a file-name part: `none`, `timeouts`, `timeouts-breakers`, …
    pub fn slug(self) -> String {
        self.label().replace('+', "-")
    }

    /// The variables that make the services run this setup. "No timeouts" is a hop timeout as
    /// long as the request timeout: nothing waits longer than that in the services anyway.
    pub fn env(
        self,
        hop_timeout: Duration,
        request_timeout: Duration,
        retry_attempts: u32,
        max_in_flight: usize,
    ) -> Vec<(String, String)> {
        let timeout = if self.timeouts {
            hop_timeout
        } else {
            request_timeout
        };
        let attempts = if self.retries { retry_attempts } else { 1 };
        let shedding = self
            .shedding
            .then(|| ("MAX_IN_FLIGHT", max_in_flight.to_string()));
        [
            ("BREAKER_ENABLED", self.breakers.to_string()),
            ("BREAKER_TIMEOUT_MS", timeout.as_millis().to_string()),
            ("RETRY_MAX_ATTEMPTS", attempts.to_string()),
            ("RETRY_BUDGET", self.budget.to_string()),
            (
                "REQUEST_TIMEOUT_MS",
                request_timeout.as_millis().to_string(),
            ),
            ("CHAOS_ENABLED", "true".to_string()),
        ]
        .into_iter()
        .chain(shedding)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_labels_add_one_mechanism_per_row() {
        let labels: Vec<String> = Setup::MATRIX.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "none",
                "timeouts",
                "timeouts+breakers",
                "timeouts+retries",
                "timeouts+retries+budget"
            ]
        );
        assert_eq!(Setup::MATRIX[4].slug(), "timeouts-retries-budget");
        assert_eq!(Setup::MATRIX[2].slug(), "timeouts-breakers");
    }

    #[test]
    fn no_timeouts_means_the_hop_waits_as_long_as_the_request() {
        let env = Setup::new(false, false, false).env(
            Duration::from_millis(300),
            Duration::from_millis(4000),
            3,
            16,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BREAKER_TIMEOUT_MS"), Some("4000"));
        assert_eq!(get("BREAKER_ENABLED"), Some("false"));
        assert_eq!(get("RETRY_MAX_ATTEMPTS"), Some("1"));
        assert_eq!(get("MAX_IN_FLIGHT"), None, "no shedding unless asked");

        let env = Setup::new(true, true, true).shedding().env(
            Duration::from_millis(300),
            Duration::from_secs(4),
            3,
            16,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BREAKER_TIMEOUT_MS"), Some("300"));
        assert_eq!(get("BREAKER_ENABLED"), Some("true"));
        assert_eq!(get("RETRY_MAX_ATTEMPTS"), Some("3"));
        assert_eq!(get("MAX_IN_FLIGHT"), Some("16"));
    }

    #[test]
    fn the_metastable_pair_is_unbudgeted_retries_against_every_protection() {
        let labels: Vec<String> = Setup::METASTABLE.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "timeouts+retries",
                "timeouts+breakers+retries+budget+shedding"
            ]
        );
        let f = Fault::capacity(2, 50);
        assert_eq!(f.describe(), "2 workers × 50 ms");
        let parsed: shared::chaos::Faults =
            serde_json::from_value(f.chaos_body()).expect("a /chaos body");
        assert_eq!((parsed.workers, parsed.service_ms), (Some(2), 50));
        assert!(Fault::none().chaos_body().get("workers").is_none());
    }

    #[test]
    fn faults_describe_themselves() {
        let hang = Fault {
            hang: true,
            ..Fault::none()
        };
        assert_eq!(hang.describe(), "hang");
        let flaky = Fault {
            error_rate: 0.3,
            status: Some(503),
            ..Fault::none()
        };
        assert_eq!(flaky.describe(), "30% fail 503");
        let slow = Fault {
            latency_ms: 200,
            latency_max_ms: Some(800),
            ..Fault::none()
        };
        assert_eq!(slow.describe(), "+200..800 ms");
        let down = Fault {
            down: true,
            ..Fault::none()
        };
        assert_eq!(down.describe(), "down: connection refused");
    }

    #[test]
    fn the_chaos_body_carries_the_seed_and_never_down() {
        let f = Fault {
            latency_ms: 200,
            latency_max_ms: Some(800),
            seed: Some(42),
            ..Fault::none()
        };
        let body = f.chaos_body();
        assert_eq!(body["seed"], 42);
        assert_eq!(body["latency_max_ms"], 800);
        assert!(
            body.get("down").is_none() && body.get("status").is_none(),
            "{body}"
        );
        // What the service accepts: it refuses unknown fields.
        let parsed: shared::chaos::Faults = serde_json::from_value(body).expect("a /chaos body");
        assert_eq!(parsed.seed, Some(42));
    }
}
