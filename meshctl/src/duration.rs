//! Durations, as every flag and value of the project writes them: one
//! grammar (humantime's), which reads what Prometheus and Go (Istio's
//! fields) write too: `500ms`, `30s`, `1h30m`, `1.5h`, `2d`, `1h 30m`.

use std::time::Duration;

/// Any duration, zero included.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("{text:?} is not a duration like 500ms, 30s, 1h30m or 2d ({err})"))
}

/// A duration longer than zero (an interval, a window, a timeout).
pub fn positive(text: &str) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: the duration must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_prometheus_and_go_write_them() {
        assert_eq!(positive("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(positive("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(positive("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(positive("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(positive("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(positive("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in ["", "h", "10", "5x", "0s", "-1m", "often"] {
            assert!(positive(bad).is_err(), "{bad:?} accepted");
        }
        assert!(positive("5x").unwrap_err().contains("not a duration"));
        assert!(positive("0s").unwrap_err().contains("longer than zero"));
    }
}
