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
    /// The target is down: every request fails (or hangs, with `--hang`).
    Outage,
    /// A latency spike: every request waits a random time in `--latency-ms..=--latency-max-ms`.
    Slow,
    /// Intermittent errors: a share `--error-rate` of requests fail with `--status`.
    Flaky,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Outage => "outage",
            Self::Slow => "slow",
            Self::Flaky => "flaky",
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
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Payment => "payment",
            Self::Shipment => "shipment",
        }
    }
}

/// The `/chaos` body for the fault window, already checked against the API's limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<u64>,
    pub hang: bool,
}

impl Fault {
    /// A short human description for titles and logs.
    pub fn describe(&self) -> String {
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
}

impl Setup {
    /// The matrix: each row adds one mechanism to the one before.
    pub const MATRIX: [Setup; 4] = [
        Setup::new(false, false, false),
        Setup::new(true, false, false),
        Setup::new(true, true, false),
        Setup::new(true, true, true),
    ];

    pub const fn new(timeouts: bool, breakers: bool, retries: bool) -> Self {
        Self {
            timeouts,
            breakers,
            retries,
        }
    }

    /// `none`, `timeouts`, `timeouts+breakers`, `timeouts+breakers+retries`, …
    pub fn label(self) -> String {
        let parts: Vec<&str> = [
            (self.timeouts, "timeouts"),
            (self.breakers, "breakers"),
            (self.retries, "retries"),
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
    ) -> Vec<(String, String)> {
        let timeout = if self.timeouts {
            hop_timeout
        } else {
            request_timeout
        };
        let attempts = if self.retries { retry_attempts } else { 1 };
        [
            ("BREAKER_ENABLED", self.breakers.to_string()),
            ("BREAKER_TIMEOUT_MS", timeout.as_millis().to_string()),
            ("RETRY_MAX_ATTEMPTS", attempts.to_string()),
            (
                "REQUEST_TIMEOUT_MS",
                request_timeout.as_millis().to_string(),
            ),
            ("CHAOS_ENABLED", "true".to_string()),
        ]
        .into_iter()
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
                "timeouts+breakers+retries"
            ]
        );
        assert_eq!(Setup::MATRIX[2].slug(), "timeouts-breakers");
    }

    #[test]
    fn no_timeouts_means_the_hop_waits_as_long_as_the_request() {
        let env = Setup::new(false, false, false).env(
            Duration::from_millis(300),
            Duration::from_millis(4000),
            3,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BREAKER_TIMEOUT_MS"), Some("4000"));
        assert_eq!(get("BREAKER_ENABLED"), Some("false"));
        assert_eq!(get("RETRY_MAX_ATTEMPTS"), Some("1"));

        let env =
            Setup::new(true, true, true).env(Duration::from_millis(300), Duration::from_secs(4), 3);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BREAKER_TIMEOUT_MS"), Some("300"));
        assert_eq!(get("BREAKER_ENABLED"), Some("true"));
        assert_eq!(get("RETRY_MAX_ATTEMPTS"), Some("3"));
    }

    #[test]
    fn faults_describe_themselves() {
        let hang = Fault {
            error_rate: 0.0,
            status: None,
            latency_ms: 0,
            latency_max_ms: None,
            hang: true,
        };
        assert_eq!(hang.describe(), "hang");
        let flaky = Fault {
            error_rate: 0.3,
            status: Some(503),
            hang: false,
            ..hang.clone()
        };
        assert_eq!(flaky.describe(), "30% fail 503");
        let slow = Fault {
            latency_ms: 200,
            latency_max_ms: Some(800),
            hang: false,
            ..hang
        };
        assert_eq!(slow.describe(), "+200..800 ms");
    }
}
