//! Spans of time as `saga simulate`'s flags take them (`30`, `1.5s`, `300ms`, `2m`) and as its
//! messages and titles show them. A bare number is seconds, as the original simulator's
//! `--duration 30 --timeout 1` meant; the units are there for everything shorter.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
