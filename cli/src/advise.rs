//! `saga advise`: measure a healthy hop under a given load and recommend the breaker settings
//! that detect its outage within a target time, with the detection time and false-open rate
//! they are expected to give.
//!
//! resilience4j users ask for a guideline on these numbers (its issue #1622: "there is no such
//! guideline document"); the usual answer is to guess and watch. Here the hop is measured with
//! `saga load`'s open-loop generator (so a slow hop cannot slow the measurement down and hide its
//! own tail), and the numbers come from a model small enough to state in a paragraph
//! ([`model`], explained in docs/breaker.md). The advice is printed as the variables to set.
//!
//! What counts is what the calling breaker would count: 5xx, refused connections and timeouts
//! are failures; a degraded 200 is the hop answering, so it is a success; a 4xx means the body is
//! wrong for this hop and is reported, not counted.

pub mod model;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::load::{self, Outcome, Plan, Sample};
use model::{Advice, Goal, Measured};

#[derive(Debug, Clone, Args)]
pub struct AdviseArgs {
    /// The hop's `/create` endpoint: the next hop of the breaker being tuned (e.g. shipment's,
    /// for payment's breaker).
    #[arg(long, default_value = "http://127.0.0.1:3002/create")]
    pub url: String,
    /// The load to measure under, in calls per second: what the hop receives in production.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to measure, in seconds (longer: a better tail estimate).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The longest an outage may last before the breaker opens, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub detect_within_ms: u64,
    /// File holding the request body (JSON); defaults to the demo's order, which order accepts.
    /// Payment and shipment take their own part of it: `{"amount":0,"id":"1","shipment":{…}}`,
    /// `{"id":"1","directions":"home"}`.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Print the advice as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `saga advise`: measure, advise, print.
pub async fn run(args: AdviseArgs) -> anyhow::Result<Advice> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of calls per second, got {}",
        args.rate
    );
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
    anyhow::ensure!(
        args.detect_within_ms > 0,
        "--detect-within-ms must be at least 1"
    );
    let body = match &args.body {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the request body from {}", path.display()))?,
        None => load::SEED.to_owned(),
    };
    let plan = Plan {
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        // Long enough to see the tail the advice is about; a call still unanswered after it
        // counts as a failure, as the breaker would count it.
        timeout: Duration::from_secs(10),
        limit: 10_000,
        spacing: load::Spacing::Even,
        // The hop is measured as it answers, not as a deadline would cut it.
        deadline: false,
    };
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .build()
        .context("building the HTTP client")?;
    let mut tally = Tally::default();
    let progress = load::progress_bar(plan.scheduled(), args.json);
    let report = load::drive_observed(
        &client,
        &args.url,
        &body,
        plan,
        Some(progress),
        tokio::time::Instant::now(),
        |s| tally.add(s),
    )
    .await;
    anyhow::ensure!(
        tally.refused == 0 || tally.refused * 2 < tally.measured.latencies.len() as u64,
        "{} of {} calls were refused with a 4xx: the body does not fit {} (see --body)",
        tally.refused,
        report.completed,
        args.url
    );
    let measured = Measured {
        rate: report.achieved_rps.max(f64::MIN_POSITIVE),
        ..tally.measured
    };
    let goal = Goal {
        detect_within: Duration::from_millis(args.detect_within_ms),
    };
    let advice = model::advise(&measured, goal)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(&advice, &measured))?
        );
    } else {
        print(&advice, &measured, goal);
    }
    Ok(advice)
}

/// The measurement, as the calling breaker would see it.
#[derive(Default)]
struct Tally {
    measured: Measured,
    /// 4xx answers: the body does not fit the hop.
    refused: u64,
}

impl Tally {
    fn add(&mut self, sample: &Sample) {
        match (&sample.outcome, sample.latency) {
            (Outcome::Dropped, _) => {}
            (Outcome::Http(code), _) if (400..500).contains(code) => self.refused += 1,
            (Outcome::Http(_) | Outcome::Timeout | Outcome::Connect, _) => {
                self.measured.failures += 1;
            }
            (Outcome::Ok | Outcome::Degraded(_) | Outcome::Other, Some(latency)) => {
                self.measured.latencies.push(latency);
            }
            (_, None) => {}
        }
    }
}

fn ms(d: Duration) -> u64 {
    shared::env::millis(d)
}

fn print(advice: &Advice, measured: &Measured, goal: Goal) {
    println!(
        "measured: {} calls answered, {} failed, at {:.1} calls/s; p50 {} ms, p99 {} ms, p99.9 {} ms",
        measured.latencies.len(),
        measured.failures,
        measured.rate,
        ms(advice.p50),
        ms(advice.p99),
        ms(advice.p999)
    );
    println!(
        "model: healthy failure share {:.3} %, {:.0} calls per window",
        advice.healthy_failure_share * 100.0,
        advice.calls_per_window
    );
    println!(
        "\nrecommended (detect an outage within {} ms):",
        ms(goal.detect_within)
    );
    for (var, value) in advice.env() {
        println!("  {var}={value}");
    }
    println!(
        "\nexpected detection: {} ms when the hop refuses connections, {} ms when it hangs",
        ms(advice.detect_refused),
        ms(advice.detect_hang)
    );
    let per_day = advice.false_opens_per_day;
    let rate = if per_day < 1e-6 {
        "< 1e-6 per day (never, in practice)".to_owned()
    } else {
        format!(
            "{per_day:.2e} per day (one every {:.1} days)",
            1.0 / per_day
        )
    };
    println!("expected false opens on healthy traffic: {rate}");
    println!("(model and its assumptions: docs/breaker.md, \"Tuning: saga advise\")");
}

fn json(advice: &Advice, measured: &Measured) -> serde_json::Value {
    let env: serde_json::Map<_, _> = advice
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect();
    serde_json::json!({
        "measured": {
            "rate": measured.rate,
            "answered": measured.latencies.len(),
            "failed": measured.failures,
            "p50_ms": ms(advice.p50),
            "p99_ms": ms(advice.p99),
            "p999_ms": ms(advice.p999),
        },
        "env": env,
        "healthy_failure_share": advice.healthy_failure_share,
        "detect_refused_ms": ms(advice.detect_refused),
        "detect_hang_ms": ms(advice.detect_hang),
        "false_opens_per_day": advice.false_opens_per_day,
    })
}
