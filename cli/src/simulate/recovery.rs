//! Did the system come back once the fault was gone? Goodput before, after, and when.
//!
//! A metastable failure is told apart from an ordinary one by what happens *after* the trigger:
//! an ordinary failure ends with its cause, a metastable one keeps itself going (retries and a
//! queue that never drains). So the numbers compare goodput — requests answered `completed`, per
//! second — after the fault window with goodput before it, on the run's own baseline (never an
//! absolute rate: the machine's speed is not the question), and find the second from which the
//! run stayed back at that baseline.

use super::recording::{Class, Series};
use serde::Serialize;

/// Goodput within this share of the baseline counts as recovered.
pub const RECOVERED_SHARE: f64 = 0.8;

/// Goodput around the fault window of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// Completed requests per second before the fault (second 0, the warm start, left out when
    /// there are later ones).
    pub before_per_s: f64,
    /// Completed requests per second from the end of the fault window to the end of the run.
    pub after_per_s: f64,
    /// `after_per_s` as a percentage of `before_per_s`.
    pub after_pct: f64,
    /// Seconds after the fault ended from which every second had at least 80 % of the
    /// baseline's goodput; `None` when the run never got back there.
    pub recovered_after_s: Option<u64>,
}

impl Recovery {
    pub fn of(series: &Series) -> Self {
        let good = |s: u64| {
            series
                .seconds
                .get(s as usize)
                .map_or(0.0, |row| row.count(Class::Ok) as f64)
        };
        let mean = |from: u64, to: u64| {
            if to > from {
                (from..to).map(good).sum::<f64>() / (to - from) as f64
            } else {
                0.0
            }
        };
        let rows = series.seconds.len() as u64;
        let start = (series.fault.start_s.floor() as u64).min(rows);
        let end = (series.fault.end_s.ceil() as u64).min(rows);
        let before_per_s = mean(u64::from(start >= 2), start);
        let after_per_s = mean(end, rows);
        let after_pct = if before_per_s > 0.0 {
            100.0 * after_per_s / before_per_s
        } else {
            0.0
        };
        let threshold = RECOVERED_SHARE * before_per_s;
        // The last second that fell short, after the fault; recovered from the one after it.
        let recovered_after_s = match (end..rows).rev().find(|s| good(*s) < threshold) {
            None => Some(0),
            Some(last_bad) if last_bad + 1 < rows => Some(last_bad + 1 - end),
            Some(_) => None,
        };
        Self {
            before_per_s,
            after_per_s,
            after_pct,
            recovered_after_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::recording::{aggregate, RequestRecord, Window};
    use std::time::Duration;

    /// A 10 s series, 10 requests a second, completed where `ok(second)` says.
    fn series(ok: impl Fn(u64) -> bool) -> Series {
        let requests: Vec<RequestRecord> = (0..100u64)
            .map(|i| {
                let second = i / 10;
                RequestRecord {
                    scheduled: Duration::from_millis(i * 100),
                    class: if ok(second) {
                        Class::Ok
                    } else {
                        Class::Timeout
                    },
                    latency: Some(Duration::from_millis(20)),
                }
            })
            .collect();
        let window = Window {
            start_s: 3.0,
            end_s: 5.0,
        };
        aggregate(10, window, &requests, &[])
    }

    #[test]
    fn a_run_that_stays_down_after_the_fault_never_recovers() {
        let r = Recovery::of(&series(|s| s < 3));
        assert_eq!(r.before_per_s, 10.0);
        assert_eq!(r.after_per_s, 0.0);
        assert_eq!(r.recovered_after_s, None);
    }

    #[test]
    fn recovery_is_the_first_second_from_which_goodput_held() {
        // Down in the fault and two seconds after it, one good second in between.
        let r = Recovery::of(&series(|s| !(3..8).contains(&s) || s == 6));
        assert_eq!(r.recovered_after_s, Some(3), "{r:?}");
        assert!((r.after_pct - 60.0).abs() < 1e-9, "{r:?}");
        let fine = Recovery::of(&series(|_| true));
        assert_eq!(fine.recovered_after_s, Some(0));
        assert_eq!(fine.after_pct, 100.0);
    }
}
