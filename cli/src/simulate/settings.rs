//! `saga simulate`'s flags, and the checked [`Settings`] they become.
//!
//! Parse, don't validate: every flag is checked once, here, against the others (the fault
//! window must fit in the run, a hop timeout must be shorter than the request it serves, …)
//! and turned into typed values, so the runner never meets a rate of zero or a window past the
//! end. A bad combination stops before any service starts, with the flag's name, the value and
//! what was expected, and exit code 2 like clap's own errors.

use super::recording::Window;
use super::scenario::{Fault, Scenario, Setup, Target};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// What goes wrong in the fault window: `outage` (the target's listener is stopped:
    /// connection refused; or it hangs with `--hang`, or fails with `--error-rate`/`--status`),
    /// `performance` (alias `slow`: the target answers late, a random latency in
    /// `--latency-ms..=--latency-max-ms`) or `flaky` (a share of requests fail).
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
    /// one after the other (a fresh stack each) and compare them.
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

/// A duration for messages and titles: `300ms`, `1s`, `1.5s`.
pub fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A span of time as the flags take it: a number with an optional unit, `ms`, `s` or `m`. A
/// bare number is seconds, as the original simulator's `--duration 30 --timeout 1` meant.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30, 1.5s, 300ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s or m (a bare number is seconds)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

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
const OWNED: [(&str, &str); 13] = [
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
        let setups = if self.matrix {
            Setup::MATRIX.to_vec()
        } else {
            let timeouts = (self.timeouts || self.timeout.is_some()) && !self.no_timeouts;
            let retries = self.retries || self.retry_budget;
            let setup = Setup::new(timeouts, self.circuit_breakers, retries);
            vec![if self.retry_budget {
                setup.budgeted()
            } else {
                setup
            }]
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
            fallback: !self.no_fallback,
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
        if errors_given && (self.scenario == Scenario::Performance || self.hang) {
            return bad("--error-rate/--status belong to outage (without --hang) and flaky".into());
        }
        let fault = match self.scenario {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Settings, InvalidArgs> {
        SimulateArgs::try_parse_from(line.split_whitespace())
            .map_err(|e| InvalidArgs(e.to_string()))?
            .settings()
    }

    fn refused(line: &str, needle: &str) {
        match parse(line) {
            Err(InvalidArgs(msg)) => assert!(msg.contains(needle), "{line}: {msg}"),
            Ok(s) => panic!("{line}: accepted as {s:?}"),
        }
    }

    #[test]
    fn defaults_are_the_originals_protections_off_and_the_fault_in_the_middle_third() {
        let s = parse("outage").unwrap();
        assert_eq!(s.duration, Duration::from_secs(30));
        assert_eq!(
            s.fault_window,
            Window {
                start_s: 10.0,
                end_s: 20.0
            }
        );
        assert_eq!(s.setups, [Setup::new(false, false, false)]);
        assert!(s.fault.down, "a plain outage stops the listener");
        assert_eq!(s.target, Target::Shipment);
        assert_eq!(s.client_timeout, Duration::from_secs(1));
        assert!(s.fallback);
        assert!(parse("outage --hang").unwrap().fault.hang);
        let errors = parse("outage --status 500").unwrap().fault;
        assert!(!errors.down && errors.error_rate == 1.0 && errors.status == Some(500));
    }

    #[test]
    fn the_originals_command_line_means_what_it_meant() {
        let s = parse("outage --duration 30 --timeout 1 --circuit-breakers --retries").unwrap();
        assert_eq!(s.hop_timeout, Duration::from_secs(1));
        assert_eq!(s.setups, [Setup::new(true, true, true)]);
        assert!(!s.setups[0].budget, "the original's retries have no budget");
        let s = parse("performance --duration 1500ms --timeout 300ms").unwrap();
        assert_eq!(s.scenario, Scenario::Performance);
        assert_eq!(s.duration, Duration::from_millis(1500));
        assert_eq!(s.duration_s(), 2);
        assert_eq!(s.setups, [Setup::new(true, false, false)]);
        assert_eq!(
            (s.fault.latency_ms, s.fault.latency_max_ms),
            (1000, Some(4000))
        );
        assert_eq!(parse("slow").unwrap().scenario, Scenario::Performance);
        let s = parse("outage --retry-budget --no-fallback --client-timeout 800ms").unwrap();
        assert_eq!(s.setups, [Setup::new(false, false, true).budgeted()]);
        assert!(!s.fallback);
        assert_eq!(s.client_timeout, Duration::from_millis(800));
        assert_eq!(
            parse("outage --timeouts").unwrap().hop_timeout,
            DEFAULT_HOP_TIMEOUT
        );
    }

    #[test]
    fn spans_take_units_and_a_bare_number_is_seconds() {
        assert_eq!(parse_span("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_span("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_span("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_span(" 2m "), Ok(Duration::from_secs(120)));
        assert!(parse_span("1h").unwrap_err().contains("unit"));
        assert!(parse_span("fast").is_err());
        assert!(parse_span("").is_err());
        assert_eq!(show(Duration::from_millis(300)), "300ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn the_seed_is_kept_or_drawn_and_reaches_the_fault() {
        let s = parse("flaky --seed 42").unwrap();
        assert_eq!(s.seed, 42);
        assert_eq!(s.fault.seed, Some(42));
        let drawn = parse("flaky").unwrap();
        assert_eq!(drawn.fault.seed, Some(drawn.seed));
        assert_eq!(
            parse("flaky --arrivals poisson").unwrap().arrivals,
            Arrivals::Poisson
        );
    }

    #[test]
    fn switches_pick_the_setup_and_the_last_one_wins() {
        let s = parse("flaky --circuit-breakers --no-circuit-breakers --retries").unwrap();
        assert_eq!(s.setups, [Setup::new(false, false, true)]);
        let s = parse("flaky --no-retries --retries --timeouts").unwrap();
        assert_eq!(s.setups, [Setup::new(true, false, true)]);
        let s = parse("flaky --timeout 1 --no-timeouts").unwrap();
        assert_eq!(s.setups, [Setup::new(false, false, false)]);
        assert_eq!(s.fault.error_rate, 0.3);
        let s = parse("outage --matrix").unwrap();
        assert_eq!(s.setups, Setup::MATRIX);
        assert!(parse("outage --matrix --no-circuit-breakers").is_err());
        assert!(parse("outage --matrix --retry-budget").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        refused("outage --rate 0", "--rate");
        refused("outage --rate -3", "--rate");
        refused("outage --rate NaN", "--rate");
        refused("outage --duration 0", "--duration");
        refused("outage --duration 500ms", "--duration");
        refused("outage --duration 2h", "unit");
        refused(
            "outage --duration 10 --fault-start 8 --fault-length 5",
            "within --duration",
        );
        refused("outage --fault-length 0", "--fault-length");
        refused("outage --fault-start -1", "--fault-start");
        refused("outage --fault-length -2", "--fault-length");
        refused("flaky --error-rate -0.1", "--error-rate");
        refused("outage --timeout 0", "--timeout");
        // Today's `--timeout 300` meant milliseconds; now it is 300 s, and says how to fix it.
        refused("outage --timeout 300", "write 300ms");
        refused("outage --timeout 2 --request-timeout 1000", "--timeout");
        refused("outage --client-timeout 0", "--client-timeout");
        refused("outage --error-rate 1.5", "--error-rate");
        refused("outage --status 200", "--status");
        refused("slow --hang", "--hang");
        refused("flaky --latency-ms 10", "performance scenario");
        refused(
            "performance --latency-ms 500 --latency-max-ms 100",
            "--latency-max-ms",
        );
        refused("outage --hang --error-rate 0.5", "--error-rate");
        refused("outage --sample-ms 5", "--sample-ms");
        refused("outage --retry-attempts 1", "--retry-attempts");
        refused("outage --env BREAKER_ENABLED=false", "--circuit-breakers");
        refused("outage --env FALLBACK=false", "--no-fallback");
        refused("outage --env nonsense", "KEY=VALUE");
        refused("outage --env lower=1", "upper-case");
    }

    #[test]
    fn breaker_knobs_and_env_become_service_variables() {
        let s =
            parse("outage --reset-ms 2000 --min-calls 3 --env BREAKER_RESET_JITTER_MS=50").unwrap();
        assert_eq!(
            s.env,
            [
                ("BREAKER_RESET_JITTER_MS".to_string(), "50".to_string()),
                ("BREAKER_RESET_MS".to_string(), "2000".to_string()),
                ("BREAKER_MIN_CALLS".to_string(), "3".to_string()),
            ]
        );
    }

    #[test]
    fn a_window_may_end_exactly_at_the_end_of_the_run() {
        let s = parse("slow --duration 10 --fault-start 5 --fault-length 5").unwrap();
        assert_eq!(s.fault_window.end_s, 10.0);
        assert_eq!(s.fault.latency_ms, 1000);
        assert_eq!(s.fault.latency_max_ms, Some(4000));
    }
}
