//! One line per run — for the terminal, a CSV and a JSON file — so setups can be compared.
//!
//! Two latency views of the fault window are kept because they answer different questions:
//! `fault p99` is the p99 of every request scheduled inside the window (what a client saw over
//! the whole fault, including the requests that were in flight while a breaker made up its
//! mind), and `typical p99` is the median of the per-second p99s (what a dashboard showed for
//! most of the fault; a fault that was slow for half its seconds gets the mean of the two
//! middle seconds, not the better one). With a breaker the first is dominated by the ~`rate × timeout` requests
//! that time out before it opens; the second shows the steady state it reaches.

use super::recording::{Totals, BREAKERS};
use super::recovery::Recovery;
use super::run::RunResult;
use super::scenario::{Fault, Scenario, Target};
use super::settings::{Arrivals, Settings};
use serde::Serialize;
use shared::env::millis;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One run, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub setup: String,
    /// Every request of the run.
    pub all: Totals,
    /// Requests scheduled in the seconds of the fault window (whose middle lies inside it).
    pub fault: Totals,
    /// Median of the per-second p99 over the fault window's seconds.
    pub fault_p99_typical_ms: f64,
    /// Seconds in which each breaker was seen open or half-open.
    pub breaker_open_s: BTreeMap<String, u64>,
    /// Calls that reached the faulty service from its caller (retries and re-drives included,
    /// calls a breaker rejected not): over the run, and in the fault window. `None` when the
    /// target is order, whose caller is the simulated client.
    pub sick_hop_calls: Option<u64>,
    pub fault_sick_hop_calls: Option<u64>,
    /// Outcomes as `saga load` names them.
    pub outcomes: BTreeMap<String, u64>,
    /// Fallback reasons anywhere along the chain.
    pub fallback_reasons: BTreeMap<String, u64>,
    /// Goodput after the fault window against before it.
    pub recovery: Recovery,
}

impl Summary {
    pub fn of(run: &RunResult, target: Target) -> Self {
        let caller = target.caller_breaker();
        Self {
            sick_hop_calls: caller.map(|i| run.series.calls(i, false)),
            fault_sick_hop_calls: caller.map(|i| run.series.calls(i, true)),
            setup: run.setup.label(),
            all: run.series.totals(),
            fault: run.series.fault_totals(),
            fault_p99_typical_ms: run.series.fault_p99_typical_ms(),
            breaker_open_s: BREAKERS
                .iter()
                .enumerate()
                .map(|(i, name)| (name.to_string(), run.series.open_seconds(i)))
                .collect(),
            outcomes: run.report.outcomes.clone(),
            fallback_reasons: run.report.fallbacks.clone(),
            recovery: Recovery::of(&run.series),
        }
    }

    /// Seconds in which any breaker was open or half-open.
    pub fn open_seconds(&self) -> u64 {
        self.breaker_open_s.values().copied().max().unwrap_or(0)
    }
}

/// What the whole simulation was, for the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub scenario: Scenario,
    pub target: Target,
    pub fault: Fault,
    pub fault_start_s: f64,
    pub fault_end_s: f64,
    pub duration_s: u64,
    pub rate: f64,
    pub hop_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// The simulated client's deadline.
    pub client_timeout_ms: u64,
    /// Graceful degradation (`FALLBACK`) in every service.
    pub fallback: bool,
    /// The seed every run used: `--seed` repeats it.
    pub seed: u64,
    pub arrivals: Arrivals,
    pub runs: Vec<Summary>,
}

impl Document {
    pub fn new(settings: &Settings, runs: Vec<Summary>) -> Self {
        Self {
            scenario: settings.scenario,
            target: settings.target,
            fault: settings.fault.clone(),
            fault_start_s: settings.fault_window.start_s,
            fault_end_s: settings.fault_window.end_s,
            duration_s: settings.duration_s(),
            rate: settings.rate,
            hop_timeout_ms: millis(settings.hop_timeout),
            request_timeout_ms: millis(settings.request_timeout),
            client_timeout_ms: millis(settings.client_timeout),
            fallback: settings.fallback,
            seed: settings.seed,
            arrivals: settings.arrivals,
            runs,
        }
    }
}

const COLUMNS: [(&str, usize); 12] = [
    ("setup", 41),
    ("avail %", 8),
    ("fault avail %", 14),
    ("p50 ms", 9),
    ("p99 ms", 9),
    ("fault p99 ms", 13),
    ("typical p99", 12),
    ("max ms", 9),
    ("fallbacks", 10),
    ("errors", 7),
    ("open s", 7),
    ("sick hop calls", 14),
];

/// The comparison table, for people.
pub fn table(runs: &[Summary]) -> String {
    let mut out = String::new();
    for (i, (name, width)) in COLUMNS.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, "{name:<width$}");
        } else {
            let _ = write!(out, " {name:>width$}");
        }
    }
    out.push('\n');
    let total: usize = COLUMNS.iter().map(|(_, w)| w + 1).sum();
    out.push_str(&"-".repeat(total - 1));
    out.push('\n');
    for r in runs {
        let w = |i: usize| COLUMNS[i].1;
        let _ = writeln!(
            out,
            "{:<w0$} {:>w1$.2} {:>w2$.2} {:>w3$.1} {:>w4$.1} {:>w5$.1} {:>w6$.1} {:>w7$.1} {:>w8$} {:>w9$} {:>w10$} {:>w11$}",
            r.setup,
            r.all.availability_pct,
            r.fault.availability_pct,
            r.all.p50_ms,
            r.all.p99_ms,
            r.fault.p99_ms,
            r.fault_p99_typical_ms,
            r.all.max_ms,
            r.all.fallbacks,
            r.all.errors,
            r.open_seconds(),
            r.fault_sick_hop_calls
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            w0 = w(0),
            w1 = w(1),
            w2 = w(2),
            w3 = w(3),
            w4 = w(4),
            w5 = w(5),
            w6 = w(6),
            w7 = w(7),
            w8 = w(8),
            w9 = w(9),
            w10 = w(10),
            w11 = w(11),
        );
    }
    out
}

/// Goodput before and after the fault, per run: whether each came back, and when.
pub fn recovery_table(runs: &[Summary]) -> String {
    let mut out = format!(
        "\n{:<42} {:>12} {:>12} {:>8} {:>14}\n",
        "setup", "goodput/s <", "goodput/s >", "after %", "recovered in"
    );
    for r in runs {
        let g = &r.recovery;
        let _ = writeln!(
            out,
            "{:<42} {:>12.1} {:>12.1} {:>8.1} {:>14}",
            r.setup,
            g.before_per_s,
            g.after_per_s,
            g.after_pct,
            g.recovered_after_s
                .map_or_else(|| "never".to_string(), |s| format!("{s} s")),
        );
    }
    out
}

/// The comparison as CSV, one row per run.
pub fn csv(runs: &[Summary]) -> String {
    let mut out = String::from(
        "setup,requests,ok,fallbacks,errors,availability_pct,p50_ms,p99_ms,max_ms,\
         fault_requests,fault_availability_pct,fault_p50_ms,fault_p99_ms,fault_max_ms,\
         fault_p99_typical_ms,sick_hop_calls,fault_sick_hop_calls",
    );
    for name in BREAKERS {
        let _ = write!(out, ",open_s_{}", name.replace("->", "_"));
    }
    out.push('\n');
    for r in runs {
        let (a, f) = (&r.all, &r.fault);
        let _ = write!(
            out,
            "{},{},{},{},{},{:.2},{:.3},{:.3},{:.3},{},{:.2},{:.3},{:.3},{:.3},{:.3}",
            r.setup,
            a.requests,
            a.ok,
            a.fallbacks,
            a.errors,
            a.availability_pct,
            a.p50_ms,
            a.p99_ms,
            a.max_ms,
            f.requests,
            f.availability_pct,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            r.fault_p99_typical_ms,
        );
        for calls in [r.sick_hop_calls, r.fault_sick_hop_calls] {
            let _ = write!(out, ",{}", calls.map(|c| c.to_string()).unwrap_or_default());
        }
        for name in BREAKERS {
            let _ = write!(out, ",{}", r.breaker_open_s.get(name).copied().unwrap_or(0));
        }
        out.push('\n');
    }
    out
}
