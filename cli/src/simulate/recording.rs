//! What a run observed, folded into one row per second.
//!
//! Requests are bucketed by the second they were *scheduled* in, not the one they finished in:
//! a request that was due at 12.3 s and hung until 22.3 s belongs to second 12, where the fault
//! hit it. Bucketing by completion would smear a hang's latency over later, healthy seconds and
//! make the fault look shorter and milder than it was (the same coordinated-omission trap the
//! load generator avoids). Latencies are kept exactly (a run holds thousands, not millions) so
//! any window's percentiles are computed from the requests themselves, not merged estimates.
//!
//! Breaker states are sampled a few times per second; each second shows the *worst* state seen
//! (open > half-open > closed), so a breaker that was open for a moment is never hidden by
//! the samples around it. Everything here is pure: the tests feed it made-up samples.

use crate::load::Outcome;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// How a request ended, as the availability count sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// `completed`: the whole chain did its part.
    Ok,
    /// `degraded`: accepted, a later hop skipped by a fallback. Available.
    Fallback,
    /// Any 4xx answer.
    Http4xx,
    /// Any 5xx answer.
    Http5xx,
    /// No answer within the client's timeout.
    Timeout,
    /// No connection.
    Connect,
    /// A broken connection, an unreadable body, or a 2xx with an unknown status.
    Other,
    /// Never sent: the generator's in-flight limit was reached.
    Dropped,
}

impl Class {
    /// Every class, in CSV column order.
    pub const ALL: [Class; 8] = [
        Class::Ok,
        Class::Fallback,
        Class::Http4xx,
        Class::Http5xx,
        Class::Timeout,
        Class::Connect,
        Class::Other,
        Class::Dropped,
    ];

    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Ok => Self::Ok,
            Outcome::Degraded(_) => Self::Fallback,
            Outcome::Http(code) if (400..500).contains(code) => Self::Http4xx,
            Outcome::Http(_) => Self::Http5xx,
            Outcome::Timeout => Self::Timeout,
            Outcome::Connect => Self::Connect,
            Outcome::Other => Self::Other,
            Outcome::Dropped => Self::Dropped,
        }
    }

    /// The class's CSV column and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fallback => "fallbacks",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Other => "other",
            Self::Dropped => "dropped",
        }
    }

    /// Whether the client got what it asked for (the order was accepted).
    pub fn available(self) -> bool {
        matches!(self, Self::Ok | Self::Fallback)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// One finished (or dropped) request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// When it was due, from the start of the run.
    pub scheduled: Duration,
    pub class: Class,
    /// From the scheduled time to the answer; `None` when it was never sent.
    pub latency: Option<Duration>,
}

/// A breaker state as sampled; ordered by how bad it is, so `max` is the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Seen {
    Closed,
    HalfOpen,
    Open,
}

impl Seen {
    /// Parses `GET /breaker`'s `breaker.state`.
    pub fn parse(state: &str) -> Option<Self> {
        match state {
            "closed" => Some(Self::Closed),
            "halfOpen" => Some(Self::HalfOpen),
            "open" => Some(Self::Open),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "halfOpen",
            Self::Open => "open",
        }
    }
}

/// The two breakers of the chain, by the caller that owns them.
pub const BREAKERS: [&str; 2] = ["order->payment", "payment->shipment"];

/// One poll of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSample {
    pub at: Duration,
    /// Index into [`BREAKERS`].
    pub breaker: usize,
    pub state: Seen,
    /// Requests the breaker's owner sent to its next hop so far (`next_hop_calls`, counted as
    /// they leave): what the callee felt, retries and re-drives included.
    pub calls: u64,
}

/// A span of the run, half-open `[start, end)` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
}

impl Window {
    pub fn contains(&self, t: Duration) -> bool {
        let t = t.as_secs_f64();
        t >= self.start_s && t < self.end_s
    }

    /// Whether second `s` belongs to the window: its middle lies inside. The fault is switched
    /// on a few milliseconds after the planned time; this rule keeps the first fault second in
    /// the window instead of dropping it for a late millisecond.
    fn holds_second(&self, s: u64) -> bool {
        let mid = s as f64 + 0.5;
        mid >= self.start_s && mid < self.end_s
    }
}

/// Everything one second of the run saw.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub second: u64,
    counts: [u64; Class::ALL.len()],
    /// Latencies of the requests sent this second, in milliseconds, sorted.
    latencies_ms: Vec<f64>,
    /// Worst state of each breaker, `None` when no sample landed in this second.
    pub breakers: [Option<Seen>; BREAKERS.len()],
    /// Calls each breaker's owner made to its next hop this second (between the last sample
    /// before it and the last sample in it).
    pub calls: [u64; BREAKERS.len()],
    /// In the fault window (its middle is).
    pub in_fault: bool,
}

impl Second {
    pub fn requests(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn count(&self, class: Class) -> u64 {
        self.counts[class.index()]
    }

    /// Requests that got neither `completed` nor `degraded`.
    pub fn errors(&self) -> u64 {
        Class::ALL
            .iter()
            .filter(|c| !c.available())
            .map(|c| self.count(*c))
            .sum()
    }

    /// Share of requests answered `completed` or `degraded`, in percent; `None` for no requests.
    pub fn availability_pct(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0).then(|| 100.0 * (n - self.errors()) as f64 / n as f64)
    }

    /// The latency at quantile `q` (0 to 1) among requests sent this second.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        percentile(&self.latencies_ms, q)
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `q` of the
/// values at or below it.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The textbook median of an ascending slice: the mean of the two middle values when their
/// number is even, so a fault that was bad for exactly half its seconds is not reported as fine.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A run's per-second rows plus the fault window they were recorded under.
#[derive(Debug, Clone)]
pub struct Series {
    pub seconds: Vec<Second>,
    pub fault: Window,
    /// Every breaker sample in time order, for drawing states finer than a second.
    pub samples: Vec<BreakerSample>,
}

/// Totals and percentiles over some seconds of a series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub ok: u64,
    pub fallbacks: u64,
    pub errors: u64,
    pub availability_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Folds a run's requests and breaker samples into `duration_s` rows.
pub fn aggregate(
    duration_s: u64,
    fault: Window,
    requests: &[RequestRecord],
    samples: &[BreakerSample],
) -> Series {
    let mut seconds: Vec<Second> = (0..duration_s)
        .map(|s| Second {
            second: s,
            in_fault: fault.holds_second(s),
            ..Second::default()
        })
        .collect();
    for r in requests {
        let Some(row) = bucket(&mut seconds, r.scheduled) else {
            continue;
        };
        row.counts[r.class.index()] += 1;
        if let Some(latency) = r.latency {
            row.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        }
    }
    for sample in samples {
        let Some(row) = bucket(&mut seconds, sample.at) else {
            continue;
        };
        if let Some(slot) = row.breakers.get_mut(sample.breaker) {
            *slot = (*slot).max(Some(sample.state));
        }
    }
    let mut samples = samples.to_vec();
    samples.sort_by_key(|s| s.at);
    let mut last: [Option<u64>; BREAKERS.len()] = [None; BREAKERS.len()];
    for sample in &samples {
        let Some(before) = last.get_mut(sample.breaker) else {
            continue;
        };
        let delta = before.map_or(0, |b| sample.calls.saturating_sub(b));
        *before = Some(sample.calls.max(before.unwrap_or(0)));
        if let Some(row) = bucket(&mut seconds, sample.at) {
            row.calls[sample.breaker] += delta;
        }
    }
    for row in &mut seconds {
        row.latencies_ms.sort_by(f64::total_cmp);
    }
    Series {
        seconds,
        fault,
        samples,
    }
}

fn bucket(seconds: &mut [Second], at: Duration) -> Option<&mut Second> {
    let s = usize::try_from(at.as_secs()).ok()?;
    seconds.get_mut(s)
}

impl Series {
    /// Totals over every second.
    pub fn totals(&self) -> Totals {
        totals(self.seconds.iter())
    }

    /// Totals over the seconds of the fault window.
    pub fn fault_totals(&self) -> Totals {
        totals(self.seconds.iter().filter(|s| s.in_fault))
    }

    /// The median of the per-second p99s inside the fault window: the p99 a dashboard showed
    /// for most of the fault, insensitive to the one second in which a breaker was deciding.
    pub fn fault_p99_typical_ms(&self) -> f64 {
        let mut p99s: Vec<f64> = self
            .seconds
            .iter()
            .filter(|s| s.in_fault)
            .filter_map(|s| s.percentile_ms(0.99))
            .collect();
        p99s.sort_by(f64::total_cmp);
        median(&p99s)
    }

    /// Calls breaker `i`'s owner made to its next hop over the run, or in the fault window.
    pub fn calls(&self, i: usize, fault_only: bool) -> u64 {
        self.seconds
            .iter()
            .filter(|s| s.in_fault || !fault_only)
            .map(|s| s.calls.get(i).copied().unwrap_or(0))
            .sum()
    }

    /// Seconds in which breaker `i` was seen open (or half-open) at least once.
    pub fn open_seconds(&self, i: usize) -> u64 {
        self.seconds
            .iter()
            .filter(|s| s.breakers.get(i).copied().flatten() > Some(Seen::Closed))
            .count() as u64
    }

    /// One CSV line per second, with a header.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("second,requests");
        for class in Class::ALL {
            out.push(',');
            out.push_str(class.name());
        }
        out.push_str(",errors,availability_pct,p50_ms,p99_ms,max_ms,in_fault");
        for name in BREAKERS {
            out.push_str(",breaker_");
            out.push_str(&name.replace("->", "_"));
        }
        for name in BREAKERS {
            out.push_str(",calls_");
            out.push_str(&name.replace("->", "_"));
        }
        out.push('\n');
        let opt =
            |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_default();
        for s in &self.seconds {
            let _ = write!(out, "{},{}", s.second, s.requests());
            for class in Class::ALL {
                let _ = write!(out, ",{}", s.count(class));
            }
            let _ = write!(
                out,
                ",{},{},{},{},{},{}",
                s.errors(),
                opt(s.availability_pct(), 2),
                opt(s.percentile_ms(0.5), 3),
                opt(s.percentile_ms(0.99), 3),
                opt(s.percentile_ms(1.0), 3),
                s.in_fault,
            );
            for state in s.breakers {
                let _ = write!(out, ",{}", state.map(Seen::name).unwrap_or(""));
            }
            for calls in s.calls {
                let _ = write!(out, ",{calls}");
            }
            out.push('\n');
        }
        out
    }
}

fn totals<'a>(seconds: impl Iterator<Item = &'a Second>) -> Totals {
    let mut t = Totals::default();
    let mut latencies = Vec::new();
    for s in seconds {
        t.requests += s.requests();
        t.ok += s.count(Class::Ok);
        t.fallbacks += s.count(Class::Fallback);
        t.errors += s.errors();
        latencies.extend_from_slice(&s.latencies_ms);
    }
    latencies.sort_by(f64::total_cmp);
    if t.requests > 0 {
        t.availability_pct = 100.0 * (t.requests - t.errors) as f64 / t.requests as f64;
    }
    t.p50_ms = percentile(&latencies, 0.5).unwrap_or(0.0);
    t.p99_ms = percentile(&latencies, 0.99).unwrap_or(0.0);
    t.max_ms = percentile(&latencies, 1.0).unwrap_or(0.0);
    t
}

#[cfg(test)]
mod tests;
