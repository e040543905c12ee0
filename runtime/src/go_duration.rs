//! Go's `time.ParseDuration` forms ("10s", "1m30s", "1.5h", "500ms"), which runc's flags and
//! Kubernetes' configuration files use. Hand-written: humantime and friends read other forms
//! ("1m 30s", "1min").

use std::time::Duration;

/// A duration like `10s`, `1h2m3s` or `250ms`; a bare number, an unknown unit or a value too
/// large for a `Duration` is an error naming the text.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 10s, 1m30s or 500ms");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "10", "s", "1x", "1m 30s", "99999999999999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
