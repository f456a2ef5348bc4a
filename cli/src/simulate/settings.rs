//! `saga simulate`'s flags, and the checked [`Settings`] they become.
//!
//! Parse, don't validate: every flag is checked once, here, against the others (the fault
//! window must fit in the run, a hop timeout must be shorter than the request it serves, …)
//! and turned into typed values, so the runner never meets a rate of zero or a window past the
//! end. A bad combination stops before any service starts, with the flag's name, the value and
//! what was expected, and exit code 2 like clap's own errors.

use super::recording::Window;
use super::scenario::{Fault, Scenario, Setup, Target};
pub use super::span::{parse_span, show};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// What goes wrong in the fault window: `outage` (the target's listener is stopped:
    /// connection refused; or it hangs with `--hang`, or fails with `--error-rate`/`--status`),
    /// `performance` (alias `slow`: the target answers late, a random latency in
    /// `--latency-ms..=--latency-max-ms`), `flaky` (a share of requests fail) or `metastable`
    /// (the target keeps a capacity, `--workers` × `--service-ms`, all run long and is slower
    /// in the window, `--trigger-service-ms`; no fallback, goodput compared after the window).
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Length of each run: `30` (seconds), `30s`, `1500ms`, `2m`.
    #[arg(long, default_value = "30", value_parser = parse_span)]
    pub duration: Duration,
    /// Arrival rate in requests per second (open loop: constant whatever the answers take).
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    pub rate: f64,
    /// Hop timeout (BREAKER_TIMEOUT_MS), and turns timeouts on: `1` is one second, as in the
    /// original simulator; `300ms` [default with --timeouts or --matrix: 300ms].
    #[arg(long, value_parser = parse_span)]
    pub timeout: Option<Duration>,
    /// Hop timeouts on (off unless asked, as in the original).
    #[arg(long, overrides_with = "no_timeouts", conflicts_with = "matrix")]
    pub timeouts: bool,
    /// No hop timeout (the default): modelled as a hop timeout as long as --request-timeout,
    /// the longest any service waits for anything.
    #[arg(long, overrides_with = "timeouts", conflicts_with = "matrix")]
    pub no_timeouts: bool,
    /// Circuit breakers on every hop (off unless asked).
    #[arg(
        long,
        overrides_with = "no_circuit_breakers",
        conflicts_with = "matrix"
    )]
    pub circuit_breakers: bool,
    /// Breakers never open (BREAKER_ENABLED=false), the default; timeouts still apply.
    #[arg(long, overrides_with = "circuit_breakers", conflicts_with = "matrix")]
    pub no_circuit_breakers: bool,
    /// Retry transient hop failures (RETRY_MAX_ATTEMPTS=--retry-attempts) without a retry
    /// budget: every failure is retried, as in the original.
    #[arg(long, overrides_with = "no_retries", conflicts_with = "matrix")]
    pub retries: bool,
    /// Retries within the hop's retry budget (10 % of calls + 10), with full jitter; implies
    /// --retries.
    #[arg(long, conflicts_with_all = ["matrix", "no_retries"])]
    pub retry_budget: bool,
    /// No retries (the default): one attempt per hop.
    #[arg(long, overrides_with = "retries", conflicts_with = "matrix")]
    pub no_retries: bool,
    /// Attempts per hop call when retries are on.
    #[arg(long, default_value_t = 3)]
    pub retry_attempts: u32,
    /// The simulated client's deadline (its SLA): a request not answered by then counts as a
    /// timeout, unavailable. `1` is one second; `800ms`.
    #[arg(long, default_value = "1", value_parser = parse_span)]
    pub client_timeout: Duration,
    /// Graceful degradation off (FALLBACK=false): a failed hop fails the request with 502
    /// instead of answering `degraded`.
    #[arg(long)]
    pub no_fallback: bool,
    /// Fixes the arrivals (with --arrivals poisson), the fault's latency and failure draws and
    /// the retry jitter; printed with every run [default: a random seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// `constant`: request i at i/rate; `poisson`: as many requests at random instants (from
    /// --seed).
    #[arg(long, value_enum, default_value = "constant")]
    pub arrivals: Arrivals,
    /// When the fault starts, in seconds from the start of the run [default: a third in].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub fault_start: Option<f64>,
    /// How long the fault lasts, in seconds [default: a third of the run].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub fault_length: Option<f64>,
    /// `outage` only: the target hangs (answers 503 only after --request-timeout) instead of
    /// refusing connections.
    #[arg(long)]
    pub hang: bool,
    /// The service the fault is injected into.
    #[arg(long, value_enum, default_value = "shipment")]
    pub target: Target,
    /// Share of requests that fail in the window [default: 0.3 for flaky]; with outage, the
    /// target answers an error (`--status`) instead of refusing connections.
    #[arg(long, value_name = "0..1", allow_negative_numbers = true)]
    pub error_rate: Option<f64>,
    /// Status of an injected failure [default: 503].
    #[arg(long)]
    pub status: Option<u16>,
    /// `performance`: least added latency in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// `performance`: most added latency in milliseconds [default: 4000].
    #[arg(long, value_name = "MS")]
    pub latency_max_ms: Option<u64>,
    /// `metastable`: the target's workers, all run long [default: 2].
    #[arg(long)]
    pub workers: Option<u32>,
    /// `metastable`: how long one request holds a worker, outside the trigger [default: 50].
    #[arg(long, value_name = "MS")]
    pub service_ms: Option<u64>,
    /// `metastable`: how long one request holds a worker during the trigger (the fault
    /// window) [default: 300].
    #[arg(long, value_name = "MS")]
    pub trigger_service_ms: Option<u64>,
    /// Load shedding in every service (MAX_IN_FLIGHT): one request more than this is answered
    /// 503 at once [default with `metastable --matrix`: 16, on its protected row].
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Each service's budget for one request (REQUEST_TIMEOUT_MS); a hang lasts this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub request_timeout: u64,
    /// BREAKER_RESET_MS: how long an open breaker waits before a trial call.
    #[arg(long, value_name = "MS")]
    pub reset_ms: Option<u64>,
    /// BREAKER_MIN_CALLS: calls in the window before a breaker may open.
    #[arg(long)]
    pub min_calls: Option<u32>,
    /// BREAKER_ERROR_THRESHOLD: failure percentage above which a breaker opens.
    #[arg(long, value_name = "PERCENT")]
    pub error_threshold: Option<u8>,
    /// BREAKER_WINDOW_MS: the rolling window the failure percentage is taken over.
    #[arg(long, value_name = "MS")]
    pub window_ms: Option<u64>,
    /// How often each breaker's state is sampled (GET /breaker), in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub sample_ms: u64,
    /// Most requests in flight; one over the limit is counted as dropped (an error).
    #[arg(long, default_value_t = 2000)]
    pub concurrency_limit: usize,
    /// Run none / timeouts / timeouts+breakers / timeouts+retries / timeouts+retries+budget
    /// one after the other (a fresh stack each) and compare them; with `metastable`,
    /// timeouts+retries against timeouts+breakers+retries+budget+shedding.
    #[arg(long)]
    pub matrix: bool,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the CSV, JSON and charts go.
    #[arg(long, default_value = "target/simulate")]
    pub out: PathBuf,
    /// MongoDB for the services (a fresh database per run, dropped after it); without it each
    /// run gets an embedded store in a temporary directory.
    #[arg(long, env = "MONGO_URL")]
    pub mongo_url: Option<String>,
    /// Any other service variable, e.g. `--env BREAKER_RESET_JITTER_MS=500` (repeatable). The
    /// shell's environment is not passed to the services: runs are reproducible.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Request i at i/rate.
    Constant,
    /// rate × duration requests at instants drawn uniformly from the run (a Poisson process
    /// with that many arrivals), from the seed.
    Poisson,
}

/// The hop timeout `--timeouts` and `--matrix` use when `--timeout` is not given.
pub const DEFAULT_HOP_TIMEOUT: Duration = Duration::from_millis(300);

/// A flag value or combination the simulator refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgs(pub String);

impl std::fmt::Display for InvalidArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidArgs {}

/// Everything a simulation needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scenario: Scenario,
    pub fault: Fault,
    pub target: Target,
    pub duration: Duration,
    pub rate: f64,
    pub hop_timeout: Duration,
    pub request_timeout: Duration,
    /// The simulated client's deadline (`--client-timeout`).
    pub client_timeout: Duration,
    /// `FALLBACK` for every service (`--no-fallback` makes it false).
    pub fallback: bool,
    /// What the target runs with outside the fault window (a metastable run's capacity).
    pub base_fault: Option<Fault>,
    /// `MAX_IN_FLIGHT` of a setup with load shedding.
    pub max_in_flight: usize,
    /// The run's seed: given, or drawn and printed so the run can be repeated.
    pub seed: u64,
    pub arrivals: Arrivals,
    pub fault_window: Window,
    /// One setup, or the matrix's five.
    pub setups: Vec<Setup>,
    pub matrix: bool,
    pub retry_attempts: u32,
    pub sample_every: Duration,
    pub concurrency_limit: usize,
    pub out: PathBuf,
    pub json: bool,
    pub mongo_url: Option<String>,
    /// Service variables: the breaker knobs and `--env`.
    pub env: Vec<(String, String)>,
}

impl Settings {
    /// Whole seconds of the run, a partial last second counted: the rows of the series.
    pub fn duration_s(&self) -> u64 {
        self.duration.as_secs_f64().ceil() as u64
    }
}

/// Variables the simulator sets itself, with the flag that controls each.
const OWNED: [(&str, &str); 14] = [
    ("MAX_IN_FLIGHT", "--max-in-flight"),
    (
        "BREAKER_ENABLED",
        "--circuit-breakers/--no-circuit-breakers",
    ),
    ("BREAKER_TIMEOUT_MS", "--timeout/--timeouts/--no-timeouts"),
    ("RETRY_MAX_ATTEMPTS", "--retries/--retry-attempts"),
    ("RETRY_BUDGET", "--retries/--retry-budget"),
    ("RETRY_SEED", "--seed"),
    ("FALLBACK", "--no-fallback"),
    ("REQUEST_TIMEOUT_MS", "--request-timeout"),
    ("CHAOS_ENABLED", "(always on)"),
    ("DATA_DIR", "(a temporary directory per run)"),
    ("MONGO_URL", "--mongo-url"),
    ("ID", "(set per service)"),
    ("PORT", "(a free port per service)"),
    ("CHAIN_SVC", "(set per service)"),
];

/// `SimulateArgs` as a command of its own, for parsing an argument list outside `saga`.
#[derive(Debug, clap::Parser)]
#[command(name = "simulate")]
struct Standalone {
    #[command(flatten)]
    args: SimulateArgs,
}

impl SimulateArgs {
    /// Parses `saga simulate`'s arguments (without the program and subcommand names), as the
    /// command line would; tests build their runs this way.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let argv = std::iter::once(std::ffi::OsString::from("simulate"))
            .chain(args.into_iter().map(Into::into));
        Standalone::try_parse_from(argv).map(|s| s.args)
    }

    /// Checks every flag and returns the settings, or the first problem found.
    pub fn settings(&self) -> Result<Settings, InvalidArgs> {
        let bad = |msg: String| Err(InvalidArgs(msg));
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad(format!(
                "--rate must be a positive number of requests per second, got {}",
                self.rate
            ));
        }
        let duration_s = self.duration.as_secs_f64();
        if !(1.0..=3600.0).contains(&duration_s) {
            return bad(format!(
                "--duration must be from 1 s to 3600 s, got {}",
                show(self.duration)
            ));
        }
        if self.rate * duration_s > 1_000_000.0 {
            return bad(format!(
                "--rate × --duration schedules {:.0} requests; at most a million per run",
                self.rate * duration_s
            ));
        }
        let start = self.fault_start.unwrap_or(duration_s / 3.0);
        let length = self.fault_length.unwrap_or(duration_s / 3.0);
        if !(start.is_finite() && start >= 0.0) {
            return bad(format!(
                "--fault-start must be a number of seconds ≥ 0, got {start}"
            ));
        }
        if !(length.is_finite() && length > 0.0) {
            return bad(format!(
                "--fault-length must be a positive number of seconds, got {length}"
            ));
        }
        if start + length > duration_s + 1e-9 {
            return bad(format!(
                "the fault window {start}..{} s must end within --duration {}",
                start + length,
                show(self.duration)
            ));
        }
        if !(10..=600_000).contains(&self.request_timeout) {
            return bad(format!(
                "--request-timeout must be from 10 to 600000 ms, got {}",
                self.request_timeout
            ));
        }
        let request_timeout = Duration::from_millis(self.request_timeout);
        let hop_timeout = self.timeout.unwrap_or(DEFAULT_HOP_TIMEOUT);
        if hop_timeout < Duration::from_millis(1) || hop_timeout >= request_timeout {
            return bad(format!(
                "--timeout must be at least 1ms and shorter than --request-timeout ({} ms), \
                 got {} (a bare number is seconds: write 300ms for milliseconds)",
                self.request_timeout,
                show(hop_timeout)
            ));
        }
        if self.client_timeout < Duration::from_millis(1)
            || self.client_timeout > Duration::from_secs(3600)
        {
            return bad(format!(
                "--client-timeout must be from 1ms to 3600 s, got {}",
                show(self.client_timeout)
            ));
        }
        if !(2..=100).contains(&self.retry_attempts) {
            return bad(format!(
                "--retry-attempts must be from 2 to 100 (1 is --no-retries), got {}",
                self.retry_attempts
            ));
        }
        if !(10..=1000).contains(&self.sample_ms) {
            return bad(format!(
                "--sample-ms must be from 10 to 1000, got {}",
                self.sample_ms
            ));
        }
        if self.concurrency_limit == 0 {
            return bad("--concurrency-limit must be at least 1".into());
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut fault = self.fault()?;
        fault.seed = Some(seed);
        let base_fault = self.base_fault()?.map(|base| Fault {
            seed: Some(seed),
            ..base
        });
        if let Some(n) = self.max_in_flight.filter(|n| !(1..=1_000_000).contains(n)) {
            return bad(format!(
                "--max-in-flight must be from 1 to 1000000, got {n}"
            ));
        }
        let metastable = self.scenario == Scenario::Metastable;
        let setups = if self.matrix && metastable {
            Setup::METASTABLE.to_vec()
        } else if self.matrix {
            Setup::MATRIX.to_vec()
        } else {
            let timeouts = (self.timeouts || self.timeout.is_some()) && !self.no_timeouts;
            let retries = self.retries || self.retry_budget;
            let mut setup = Setup::new(timeouts, self.circuit_breakers, retries);
            if self.retry_budget {
                setup = setup.budgeted();
            }
            if self.max_in_flight.is_some() {
                setup = setup.shedding();
            }
            vec![setup]
        };
        Ok(Settings {
            scenario: self.scenario,
            fault,
            target: self.target,
            duration: self.duration,
            rate: self.rate,
            hop_timeout,
            request_timeout,
            client_timeout: self.client_timeout,
            // A metastable run counts goodput: a failure reaches the client (and its caller's
            // retries) instead of being answered `degraded`.
            fallback: !self.no_fallback && !metastable,
            base_fault,
            max_in_flight: self.max_in_flight.unwrap_or(16),
            seed,
            arrivals: self.arrivals,
            fault_window: Window {
                start_s: start,
                end_s: start + length,
            },
            setups,
            matrix: self.matrix,
            retry_attempts: self.retry_attempts,
            sample_every: Duration::from_millis(self.sample_ms),
            concurrency_limit: self.concurrency_limit,
            out: self.out.clone(),
            json: self.json,
            mongo_url: self.mongo_url.clone(),
            env: self.service_env()?,
        })
    }

    /// The fault of the scenario, with its defaults filled in.
    fn fault(&self) -> Result<Fault, InvalidArgs> {
        let bad = |msg: String| Err(InvalidArgs(msg));
        self.check_capacity_flags()?;
        if self.hang && self.scenario != Scenario::Outage {
            return bad(format!(
                "--hang belongs to the outage scenario, not {}",
                self.scenario.name()
            ));
        }
        if let Some(status) = self.status.filter(|s| !(400..=599).contains(s)) {
            return bad(format!(
                "--status must be an HTTP error status from 400 to 599, got {status}"
            ));
        }
        let latency_given = self.latency_ms.is_some() || self.latency_max_ms.is_some();
        if latency_given && self.scenario != Scenario::Performance {
            return bad(format!(
                "--latency-ms/--latency-max-ms belong to the performance scenario, not {}",
                self.scenario.name()
            ));
        }
        let errors_given = self.error_rate.is_some() || self.status.is_some();
        if errors_given
            && (matches!(self.scenario, Scenario::Performance | Scenario::Metastable) || self.hang)
        {
            return bad("--error-rate/--status belong to outage (without --hang) and flaky".into());
        }
        let fault = match self.scenario {
            Scenario::Metastable => self.trigger()?,
            Scenario::Outage if self.hang => Fault {
                hang: true,
                ..Fault::none()
            },
            Scenario::Outage if !errors_given => Fault {
                down: true,
                ..Fault::none()
            },
            Scenario::Outage | Scenario::Flaky => {
                let default = if self.scenario == Scenario::Outage {
                    1.0
                } else {
                    0.3
                };
                let rate = self.error_rate.unwrap_or(default);
                if !(rate > 0.0 && rate <= 1.0) {
                    return bad(format!(
                        "--error-rate must be a share above 0 and at most 1, got {rate}"
                    ));
                }
                Fault {
                    error_rate: rate,
                    status: Some(self.status.unwrap_or(503)),
                    ..Fault::none()
                }
            }
            Scenario::Performance => {
                let min = self.latency_ms.unwrap_or(1000);
                let max = self.latency_max_ms.unwrap_or(min.max(4000));
                if min == 0 && max == 0 {
                    return bad(
                        "--latency-ms/--latency-max-ms: a performance fault needs some latency"
                            .into(),
                    );
                }
                if max < min || max > 60_000 {
                    return bad(format!(
                        "--latency-max-ms must be from --latency-ms ({min}) up to 60000, got {max}"
                    ));
                }
                Fault {
                    latency_ms: min,
                    latency_max_ms: Some(max),
                    ..Fault::none()
                }
            }
        };
        Ok(fault)
    }

    /// The breaker knobs and `--env` pairs as service variables.
    fn service_env(&self) -> Result<Vec<(String, String)>, InvalidArgs> {
        let mut env = Vec::new();
        for pair in &self.env {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(InvalidArgs(format!(
                    "--env expects KEY=VALUE, got {pair:?}"
                )));
            };
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(InvalidArgs(format!(
                    "--env {pair:?}: the name must be an upper-case variable like BREAKER_RESET_MS"
                )));
            }
            if let Some((_, flag)) = OWNED.iter().find(|(k, _)| *k == key) {
                return Err(InvalidArgs(format!(
                    "--env {key}: the simulator sets {key} itself; use {flag}"
                )));
            }
            env.push((key.to_string(), value.to_string()));
        }
        let knobs = [
            ("BREAKER_RESET_MS", self.reset_ms.map(|v| v.to_string())),
            ("BREAKER_MIN_CALLS", self.min_calls.map(|v| v.to_string())),
            (
                "BREAKER_ERROR_THRESHOLD",
                self.error_threshold.map(|v| v.to_string()),
            ),
            ("BREAKER_WINDOW_MS", self.window_ms.map(|v| v.to_string())),
        ];
        // Flags come after --env, and the last value of a name wins.
        env.extend(
            knobs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        Ok(env)
    }
}

mod capacity;
#[cfg(test)]
mod tests;
