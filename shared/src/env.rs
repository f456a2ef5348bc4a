//! Reading configuration from the environment: a [`Reader`] with typed parsers that keeps every
//! bad value, and [`millis`], the way back from a [`Duration`] to the `_MS` integer.
//!
//! Each section of the configuration (the service in `crate::config`, the store, the breaker,
//! retries, the saga's re-driver) reads its own variables from one shared `&mut Reader`, next to
//! its struct and defaults, so every variable has one home. The reader does not stop at the
//! first bad value: it records it with the variable's name, the value and what was expected,
//! hands the caller a default to carry on with, and [`Reader::finish`] reports them all at once
//! ([`ConfigError`]) — a misconfigured service is fixed in one restart, not one per variable.
//!
//! Values come through a lookup function rather than `std::env` directly, so tests (and
//! `saga up`, which runs three services in one process) hand in their own. This module depends
//! on nothing else in the crate.

use std::fmt;
use std::time::Duration;

/// A day in milliseconds: the longest duration most `_MS` variables accept.
pub const DAY_MS: u64 = 86_400_000;

/// `url` fit for a log or an error message: everything between the scheme and the last `@`
/// (user and password) replaced by `***`. Meant for URLs that may be malformed, so it looks
/// for the separators, not for a valid URL: `mongodb://u:p@h/` becomes `mongodb://***@h/`.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

/// `text` with the credentials of `url` (as [`redact_url`] finds them) replaced by `***`, for a
/// driver's error message that may repeat them.
pub fn scrub(text: &str, url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url.rfind('@') {
        Some(at) if at > start => {
            let userinfo = &url[start..at];
            let mut out = text.replace(userinfo, "***");
            if let Some((_, password)) = userinfo.split_once(':') {
                if !password.is_empty() {
                    out = out.replace(password, "***");
                }
            }
            out
        }
        _ => text.to_owned(),
    }
}

/// `d` in whole milliseconds, saturating at `u64::MAX`: for logs, metrics, JSON and the `_MS`
/// variables, which are all integers of milliseconds. The inverse of [`Reader::millis`].
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One variable with a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVar {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

/// All the bad variables found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<BadVar>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for b in &self.0 {
            writeln!(f, "  {}={:?}: expected {}", b.var, b.value, b.expected)?;
        }
        Ok(())
    }
}

/// Where a [`Reader`] gets a variable's value: `None` when unset.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Reads variables through a lookup function and records every bad one. An unset or blank
/// variable takes its default; a bad one is recorded and also takes its default, so reading
/// goes on and finds the next.
pub struct Reader<'a> {
    get: Box<Lookup<'a>>,
    bad: Vec<BadVar>,
}

impl<'a> Reader<'a> {
    /// A reader over `get` (`|k| std::env::var(k).ok()` for the process environment).
    pub fn new(get: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            get: Box::new(get),
            bad: Vec::new(),
        }
    }

    /// `value` if nothing bad was read, else every bad variable.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.bad.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.bad))
        }
    }

    /// Records `var` as bad: it held `value`, and `expected` says what it should hold.
    pub fn reject(
        &mut self,
        var: &'static str,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) {
        self.bad.push(BadVar {
            var,
            value: value.into(),
            expected: expected.into(),
        });
    }

    /// Records the `_MS` variable `var` as bad when its `value` is below `floor`, the value of
    /// `floor_var` (a backoff's cap below its base).
    pub fn not_below(
        &mut self,
        var: &'static str,
        value: Duration,
        floor_var: &str,
        floor: Duration,
    ) {
        if value < floor {
            self.reject(
                var,
                millis(value).to_string(),
                format!("at least {floor_var} ({})", millis(floor)),
            );
        }
    }

    /// The variable as set, `None` when unset or blank.
    pub fn raw(&self, var: &str) -> Option<String> {
        (self.get)(var).filter(|v| !v.trim().is_empty())
    }

    /// The variable parsed by `parse` (given the trimmed value); `default` when unset, and
    /// when `parse` refuses it (then it is recorded with `expected`).
    pub fn parse<T>(
        &mut self,
        var: &'static str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> T {
        match self.raw(var) {
            None => default,
            Some(value) => match parse(value.trim()) {
                Some(v) => v,
                None => {
                    self.reject(var, value, expected);
                    default
                }
            },
        }
    }

    /// The variable as a string, `default` when unset.
    pub fn string(&mut self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    /// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`, in any case.
    pub fn bool(&mut self, var: &'static str, default: bool) -> bool {
        self.parse(
            var,
            default,
            "one of 1, 0, true, false, yes, no",
            |v| match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => None,
            },
        )
    }

    /// A whole number in `min..=max`.
    pub fn u32_in(&mut self, var: &'static str, default: u32, min: u32, max: u32) -> u32 {
        let expected = format!("a whole number from {min} to {max}");
        self.parse(var, default, &expected, |v| {
            v.parse::<u32>().ok().filter(|n| (min..=max).contains(n))
        })
    }

    /// A `_MS` variable: whole milliseconds in `min_ms..=max_ms`, as a [`Duration`].
    pub fn millis(
        &mut self,
        var: &'static str,
        default: Duration,
        min_ms: u64,
        max_ms: u64,
    ) -> Duration {
        let expected = format!("milliseconds, a whole number from {min_ms} to {max_ms}");
        Duration::from_millis(self.parse(var, millis(default), &expected, |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (min_ms..=max_ms).contains(n))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(vars: &'static [(&'static str, &'static str)]) -> Reader<'static> {
        Reader::new(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn blank_values_take_the_default_and_bad_ones_are_all_kept() {
        let mut r = reader(&[("A", "  "), ("B", "x"), ("C", "70000")]);
        assert_eq!(r.u32_in("A", 3, 1, 10), 3);
        assert_eq!(r.u32_in("B", 3, 1, 10), 3);
        assert_eq!(
            r.millis("C", Duration::from_millis(5), 1, 60_000),
            Duration::from_millis(5)
        );
        let err = r.finish(()).unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|b| b.var).collect();
        assert_eq!(vars, ["B", "C"]);
        assert!(err
            .to_string()
            .contains("C=\"70000\": expected milliseconds"));
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_millis(300)), 300);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
