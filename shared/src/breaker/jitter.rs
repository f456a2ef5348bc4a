//! The reset jitter: how much random time an opened breaker adds to `BREAKER_RESET_MS`.
//!
//! Without jitter, every replica (and every breaker in front of the same sick hop) that opened
//! in the same second sends its half-open trial in the same millisecond, and a hop that just
//! came back meets a synchronised burst. The distributed breaker this project grew from added
//! a random 1-10 s to its retry timeout and let callers plug in their own function; here the
//! jitter is on by default (uniform, up to a tenth of the reset: 1 s with the default 10 s,
//! 20 ms with a test's 200 ms) and the distribution is chosen by `BREAKER_RESET_JITTER`:
//!
//! - [`Jitter::Uniform`]: any value in `[0, max]` equally likely; spreads trials the most.
//! - [`Jitter::Gaussian`]: centred on `max / 2` with a standard deviation of `max / 6`, clamped
//!   to `[0, max]` (three sigmas each side): most trials land near the middle, few at the ends,
//!   for callers that want the reset to stay close to a known value.
//! - [`Jitter::None`]: exactly `BREAKER_RESET_MS`, for tests and lock-step experiments.
//!
//! A draw is a pure function of the distribution, the bound and the random source, so tests
//! check bounds and shape over many draws.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The distribution the reset jitter is drawn from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// No jitter: the reset is exact.
    None,
    /// Uniform in `[0, max]`.
    #[default]
    Uniform,
    /// Normal around `max / 2`, standard deviation `max / 6`, clamped to `[0, max]`.
    Gaussian,
}

impl Jitter {
    /// The names `BREAKER_RESET_JITTER` accepts.
    pub const NAMES: &'static str = "uniform, gaussian or none";

    /// Parses `uniform`, `gaussian` or `none` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "uniform" => Some(Self::Uniform),
            "gaussian" | "normal" => Some(Self::Gaussian),
            "none" | "off" => Some(Self::None),
            _ => None,
        }
    }

    /// One draw in `[0, max]`.
    pub fn draw(self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        match self {
            Self::None => Duration::ZERO,
            Self::Uniform => Duration::from_nanos(rand::random_range(0..=max_nanos)),
            Self::Gaussian => {
                let span = max_nanos as f64;
                let z = standard_normal();
                let nanos = (span / 2.0 + z * span / 6.0).clamp(0.0, span);
                // In [0, max_nanos] after the clamp, so the cast neither wraps nor truncates
                // beyond the fraction of a nanosecond.
                Duration::from_nanos(nanos as u64)
            }
        }
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Uniform => "uniform",
            Self::Gaussian => "gaussian",
        })
    }
}

/// One standard normal draw (Box-Muller): two uniforms, one log, one cosine. A crate for this
/// one formula would be heavier than the formula.
fn standard_normal() -> f64 {
    // `1 - u` keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rand::random::<f64>();
    let u2 = rand::random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(2);

    fn draws(jitter: Jitter) -> Vec<Duration> {
        (0..4_000).map(|_| jitter.draw(MAX)).collect()
    }

    fn share_in_middle_third(d: &[Duration]) -> f64 {
        let (lo, hi) = (MAX / 3, MAX * 2 / 3);
        d.iter().filter(|x| (lo..hi).contains(*x)).count() as f64 / d.len() as f64
    }

    #[test]
    fn every_draw_stays_within_the_bound() {
        for jitter in [Jitter::Uniform, Jitter::Gaussian, Jitter::None] {
            assert!(draws(jitter).iter().all(|d| *d <= MAX), "{jitter}");
        }
        assert_eq!(Jitter::Uniform.draw(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn none_adds_nothing() {
        assert!(draws(Jitter::None).iter().all(Duration::is_zero));
    }

    #[test]
    fn uniform_spreads_evenly_and_gaussian_gathers_in_the_middle() {
        // Uniform puts a third of its draws in the middle third; a normal with sigma = max/6
        // puts the mass within one sigma of the mean there, about 68 %.
        let uniform = share_in_middle_third(&draws(Jitter::Uniform));
        let gaussian = share_in_middle_third(&draws(Jitter::Gaussian));
        assert!((0.28..0.39).contains(&uniform), "uniform {uniform}");
        assert!((0.62..0.75).contains(&gaussian), "gaussian {gaussian}");
    }

    #[test]
    fn names_parse_and_print_back() {
        for jitter in [Jitter::Uniform, Jitter::Gaussian, Jitter::None] {
            assert_eq!(Jitter::parse(&jitter.to_string()), Some(jitter));
        }
        assert_eq!(Jitter::parse("GAUSSIAN"), Some(Jitter::Gaussian));
        assert_eq!(Jitter::parse("poisson"), None);
    }
}
