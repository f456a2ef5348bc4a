//! `saga load`: drive `POST /create` at a constant arrival rate and report latency percentiles.
//!
//! The generator is *open-loop*: request `i` is scheduled at `start + i / rate` whatever happened
//! to the requests before it, and each one runs as its own task. A closed-loop generator (N
//! workers, each waiting for its answer before sending again) slows down exactly when the
//! service does, and so never measures the queue it would have built: that is *coordinated
//! omission*. Here latency is taken from the **scheduled** time, so a stall in the service — or
//! in this process falling behind its own schedule — shows up in the percentiles instead of
//! being quietly skipped.
//!
//! In-flight requests are capped (`--concurrency-limit`); a request that would exceed the cap is
//! counted as `dropped` rather than delayed, because delaying it would close the loop again.
//! Tasks send their results over a channel to one collector that owns the HDR histogram, so no
//! lock is held around a measurement.

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// The original demo's request body (http-tests/order.http).
pub const SEED: &str = r#"{"id":"1","items":[],"payment":{"amount":0,"id":"1","shipment":{"id":"1","directions":"home"}}}"#;

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Endpoint to POST to.
    #[arg(long, default_value = "http://127.0.0.1:3000/create")]
    pub url: String,
    /// Arrival rate in requests per second (constant, independent of response times).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to keep scheduling requests, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Per-request timeout in milliseconds. Also sent as `X-Deadline-Ms`, as a well-behaved
    /// client does: the service then answers (503 + `Retry-After` if it must) before the client
    /// stops listening, instead of working on for a caller that is gone.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Most requests in flight at once; a request over the limit is counted as `dropped`.
    #[arg(long, default_value_t = 1000)]
    pub concurrency_limit: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// File holding the request body (JSON); defaults to the demo's seed order.
    #[arg(long)]
    pub body: Option<PathBuf>,
}

/// How the scheduled requests are spread over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spacing {
    /// Request `i` at `i / rate`.
    #[default]
    Even,
    /// As many requests at instants drawn uniformly from the run by a generator seeded with
    /// `seed` (a Poisson process with that many arrivals): bursts and lulls, the same ones
    /// for the same seed.
    Random { seed: u64 },
}

/// What one run should do: how fast, how long, and how much to tolerate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests per second; must be positive and finite.
    pub rate: f64,
    /// How long to keep scheduling requests.
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most requests in flight at once.
    pub limit: usize,
    pub spacing: Spacing,
    /// Send `timeout` as `X-Deadline-Ms`, so the service answers within it (deadline
    /// propagation, itself a timeout: `saga simulate` sends it only in setups with timeouts).
    pub deadline: bool,
}

impl Plan {
    /// How many requests the schedule holds: `rate × duration`, rounded.
    pub fn scheduled(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round() as u64
    }

    /// Every request's due time from the start, in order.
    pub fn offsets(&self) -> Vec<Duration> {
        let n = self.scheduled();
        match self.spacing {
            Spacing::Even => (0..n)
                .map(|i| Duration::from_secs_f64(i as f64 / self.rate))
                .collect(),
            Spacing::Random { seed } => {
                use rand::{RngExt, SeedableRng};
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let nanos = u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX);
                let mut at: Vec<Duration> = (0..n)
                    .map(|_| Duration::from_nanos(rng.random_range(0..nanos.max(1))))
                    .collect();
                at.sort_unstable();
                at
            }
        }
    }
}

/// Latency percentiles in milliseconds, over every request that was sent (errors included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The result of one run; printed as a table or as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target_rps: f64,
    /// Requests that finished (any outcome but `dropped`) per second of elapsed time.
    pub achieved_rps: f64,
    /// From the first scheduled request to the last answer, in seconds.
    pub elapsed_s: f64,
    pub scheduled: u64,
    /// Requests that were sent and finished, whatever their outcome.
    pub completed: u64,
    /// Outcomes: `ok`, `degraded`, `http_<code>`, `timeout`, `connect`, `other`, `dropped`.
    pub outcomes: BTreeMap<String, u64>,
    /// Fallback reasons found anywhere in degraded answers' `next` chains.
    pub fallbacks: BTreeMap<String, u64>,
    pub latency_ms: Latency,
}

impl Report {
    /// How many requests ended with `outcome`.
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// How one scheduled request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Degraded(Vec<String>),
    Http(u16),
    Timeout,
    Connect,
    Other,
    Dropped,
}

impl Outcome {
    /// The outcome's name in [`Report::outcomes`].
    pub fn class(&self) -> String {
        match self {
            Self::Ok => "ok".into(),
            Self::Degraded(_) => "degraded".into(),
            Self::Http(code) => format!("http_{code}"),
            Self::Timeout => "timeout".into(),
            Self::Connect => "connect".into(),
            Self::Other => "other".into(),
            Self::Dropped => "dropped".into(),
        }
    }

    fn from_error(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect
        } else {
            Self::Other
        }
    }
}

/// One request's result, sent from its task to the collector.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was due, counted from the start of the schedule.
    pub scheduled: Duration,
    pub outcome: Outcome,
    /// From the scheduled time to the end; `None` when the request was never sent.
    pub latency: Option<Duration>,
}

/// `saga load`: run the plan against `args.url`, print the report, and return it.
pub async fn run(args: LoadArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of requests per second, got {}",
        args.rate
    );
    anyhow::ensure!(
        args.concurrency_limit > 0,
        "--concurrency-limit must be at least 1"
    );
    let body = match &args.body {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the request body from {}", path.display()))?,
        None => SEED.to_owned(),
    };
    let plan = Plan {
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        timeout: Duration::from_millis(args.timeout_ms),
        limit: args.concurrency_limit,
        spacing: Spacing::Even,
        deadline: true,
    };
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .build()
        .context("building the HTTP client")?;
    let progress = progress_bar(plan.scheduled(), args.json);
    let report = drive(&client, &args.url, &body, plan, Some(progress)).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(report)
}

/// A bar counting scheduled requests; hidden for JSON output or when stderr is not a terminal.
pub(crate) fn progress_bar(len: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} scheduled")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len).with_style(style)
}

/// Send `plan.scheduled()` POSTs of `body` to `url` on an open-loop schedule and report on them.
pub async fn drive(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    plan: Plan,
    progress: Option<ProgressBar>,
) -> Report {
    drive_observed(client, url, body, plan, progress, Instant::now(), |_| {}).await
}

/// [`drive`] with the schedule starting at `start`, showing every request's [`Sample`] to
/// `observe` as it finishes (in the collector: `observe` runs on one task, never concurrently).
pub async fn drive_observed(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    plan: Plan,
    progress: Option<ProgressBar>,
    start: Instant,
    observe: impl FnMut(&Sample),
) -> Report {
    let (tx, rx) = mpsc::unbounded_channel();
    let target = Target {
        runtime: tokio::runtime::Handle::current(),
        client: client.clone(),
        url: url.to_owned(),
        body: body.to_owned(),
    };
    let bar = progress.clone();
    let schedule = tokio::task::spawn_blocking(move || schedule(&target, plan, start, &tx, bar));
    let (scheduled, tally) = tokio::join!(schedule, collect(rx, observe));
    if let Err(e) = scheduled {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    tally.into_report(plan, elapsed)
}

/// Where the scheduler sends its requests, and the runtime their tasks run on.
struct Target {
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
    url: String,
    body: String,
}

/// Start request `i` at its due time, each in its own task on `runtime`, until the schedule is
/// done. Returns once every request is started (or dropped); `tx` clones live on in the tasks.
///
/// Runs on a thread of its own and waits with the OS's sleep, not tokio's timer: tokio's timer
/// wakes on whole milliseconds, so a request would leave up to 1 ms after its due time and,
/// since latency is taken from the due time, every percentile would carry that lateness (it
/// was 1.3 ms of a 1.75 ms p50 against a handler that answers 400 at once).
fn schedule(
    target: &Target,
    plan: Plan,
    start: Instant,
    tx: &mpsc::UnboundedSender<Sample>,
    progress: Option<ProgressBar>,
) {
    let in_flight = Arc::new(Semaphore::new(plan.limit.min(Semaphore::MAX_PERMITS)));
    for offset in plan.offsets() {
        let due = start + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
        let scheduled = due - start;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            let _ = tx.send(Sample {
                scheduled,
                outcome: Outcome::Dropped,
                latency: None,
            });
            continue;
        };
        let request = target
            .client
            .post(&target.url)
            .timeout(plan.timeout)
            .header("content-type", "application/json")
            .body(target.body.clone());
        let request = if plan.deadline {
            request.header("x-deadline-ms", plan.timeout.as_millis().to_string())
        } else {
            request
        };
        let tx = tx.clone();
        target.runtime.spawn(async move {
            let outcome = send(request).await;
            let latency = Some(due.elapsed());
            drop(permit);
            let _ = tx.send(Sample {
                scheduled,
                outcome,
                latency,
            });
        });
    }
}

/// Send one request and classify how it ended.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::from_error(&e),
    };
    let status = response.status();
    if !status.is_success() {
        return Outcome::Http(status.as_u16());
    }
    match response.json::<serde_json::Value>().await {
        Ok(body) => classify(&body),
        Err(e) => Outcome::from_error(&e),
    }
}

/// A 2xx body: `completed` is ok, `degraded` carries its fallback reasons, anything else is odd.
fn classify(body: &serde_json::Value) -> Outcome {
    match body["status"].as_str() {
        Some("completed") => Outcome::Ok,
        Some("degraded") => Outcome::Degraded(fallback_reasons(body)),
        _ => Outcome::Other,
    }
}

/// Every `fallback.reason` along the `next` chain, outermost hop first.
fn fallback_reasons(body: &serde_json::Value) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut hop = Some(body);
    while let Some(value) = hop.filter(|v| v.is_object()) {
        if let Some(reason) = value["fallback"]["reason"].as_str() {
            reasons.push(reason.to_owned());
        }
        hop = value.get("next");
    }
    reasons
}

/// The largest latency the histogram tells apart (an hour); longer ones are recorded as this.
const MAX_MICROS: u64 = 3_600_000_000;

/// Counts and the latency histogram, owned by the collector alone.
struct Tally {
    histogram: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    fallbacks: BTreeMap<String, u64>,
    completed: u64,
    scheduled: u64,
}

/// Receive samples until every task (and the scheduler) has dropped its sender.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Sample>,
    mut observe: impl FnMut(&Sample),
) -> Tally {
    let mut tally = Tally {
        histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("bounds 1..=MAX_MICROS at 3 significant figures are valid for hdrhistogram"),
        outcomes: BTreeMap::new(),
        fallbacks: BTreeMap::new(),
        completed: 0,
        scheduled: 0,
    };
    while let Some(sample) = rx.recv().await {
        observe(&sample);
        tally.add(sample);
    }
    tally
}

impl Tally {
    fn add(&mut self, sample: Sample) {
        self.scheduled += 1;
        if let Some(latency) = sample.latency {
            self.completed += 1;
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.histogram.saturating_record(micros.max(1));
        }
        *self.outcomes.entry(sample.outcome.class()).or_default() += 1;
        if let Outcome::Degraded(reasons) = sample.outcome {
            for reason in reasons {
                *self.fallbacks.entry(reason).or_default() += 1;
            }
        }
    }

    fn into_report(self, plan: Plan, elapsed: Duration) -> Report {
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        let elapsed_s = elapsed.as_secs_f64();
        Report {
            target_rps: plan.rate,
            achieved_rps: if elapsed_s > 0.0 {
                self.completed as f64 / elapsed_s
            } else {
                0.0
            },
            elapsed_s,
            scheduled: self.scheduled,
            completed: self.completed,
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: self.histogram.max() as f64 / 1000.0,
            },
            outcomes: self.outcomes,
            fallbacks: self.fallbacks,
        }
    }
}

/// Print `report` as a table for people.
pub fn print_table(report: &Report) {
    println!("{:<14} {:>10.1} req/s", "target", report.target_rps);
    println!("{:<14} {:>10.1} req/s", "achieved", report.achieved_rps);
    println!("{:<14} {:>10.2} s", "elapsed", report.elapsed_s);
    println!("{:<14} {:>10}", "scheduled", report.scheduled);
    println!("{:<14} {:>10}", "completed", report.completed);
    println!();
    println!("latency (ms, from scheduled time)");
    let l = &report.latency_ms;
    for (name, value) in [
        ("p50", l.p50),
        ("p90", l.p90),
        ("p99", l.p99),
        ("p99.9", l.p999),
        ("max", l.max),
    ] {
        println!("  {name:<12} {value:>10.2}");
    }
    println!();
    println!("outcomes");
    for (class, count) in &report.outcomes {
        println!("  {class:<12} {count:>10}");
    }
    if !report.fallbacks.is_empty() {
        println!();
        println!("fallbacks (reason, anywhere in the chain)");
        for (reason, count) in &report.fallbacks {
            println!("  {reason:<12} {count:>10}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fallback_reasons_are_collected_along_the_next_chain() {
        let body = json!({
            "status": "degraded",
            "next": {"status": "degraded", "fallback": {"reason": "open"}, "next": null}
        });
        assert_eq!(fallback_reasons(&body), vec!["open".to_string()]);
    }

    #[test]
    fn schedule_is_rate_times_duration() {
        let plan = Plan {
            rate: 100.0,
            duration: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            limit: 10,
            spacing: Spacing::Even,
            deadline: true,
        };
        assert_eq!(plan.scheduled(), 200);
        assert_eq!(plan.offsets()[50], Duration::from_millis(500));
    }

    #[test]
    fn random_arrivals_follow_the_seed_and_stay_in_the_run() {
        let plan = |seed| Plan {
            rate: 50.0,
            duration: Duration::from_secs(4),
            timeout: Duration::from_secs(1),
            limit: 10,
            spacing: Spacing::Random { seed },
            deadline: true,
        };
        let a = plan(3).offsets();
        assert_eq!(a.len(), 200);
        assert_eq!(a, plan(3).offsets());
        assert_ne!(a, plan(4).offsets());
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "in order");
        assert!(a.iter().all(|d| *d < Duration::from_secs(4)));
        // Not the even spacing: some gaps are far shorter, some far longer than 20 ms.
        let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|g| *g < Duration::from_millis(5)));
        assert!(gaps.iter().any(|g| *g > Duration::from_millis(50)));
    }
}
