//! Command-line values of the report (and of the rollout, which takes the
//! same thresholds): each parser names what it expects, so clap's usage
//! error says exactly what was wrong.

use std::time::{Duration, UNIX_EPOCH};

use super::model::Role;

/// A Prometheus duration: one or more `<number><unit>` with units
/// y, w, d, h, m, s, ms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 30s, 15m, 1h30m or 2d");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(millis).ok_or_else(invalid)?;
        total += Duration::from_millis(part);
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the window must be longer than zero"));
    }
    Ok(total)
}

/// Unix seconds, or an RFC 3339 timestamp (what a pipeline logs when a
/// rollout stage started or ended).
pub fn parse_time(text: &str) -> Result<f64, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(seconds)
        } else {
            Err(format!("{text:?} is not a time"))
        };
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| {
            format!(
                "{text:?} is neither Unix seconds nor an RFC 3339 time like 2026-11-26T07:00:00Z"
            )
        })
}

/// Plain HTTP only: the client is built without TLS, and a cluster's
/// Prometheus is reached through `kubectl port-forward`, which speaks HTTP.
pub fn parse_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") {
        Ok(text.to_string())
    } else if text.starts_with("https://") {
        Err(format!(
            "{text:?}: https is not supported; reach Prometheus over http, e.g. through kubectl port-forward"
        ))
    } else {
        Err(format!("{text:?} is not an http:// URL"))
    }
}

pub fn parse_role(text: &str) -> Result<(String, Role), String> {
    let (version, role) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not VERSION=ROLE (e.g. v2=canary)"))?;
    let role = <Role as clap::ValueEnum>::from_str(role, true)
        .map_err(|_| format!("role {role:?} is not one of stable, canary, shadow"))?;
    if version.is_empty() {
        return Err(format!("{text:?} has no version before '='"));
    }
    Ok((version.to_string(), role))
}

pub fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = text.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a Prometheus metric name prefix"))
    }
}

pub fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number"))
}

pub fn parse_open_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} must lie strictly between 0 and 1"))
    }
}

pub fn parse_unit(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must lie between 0 and 1"))
    }
}

pub fn parse_effect(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.5 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} must lie in (0.5, 1]: 0.5 means no difference at all"
        ))
    }
}

pub fn parse_non_negative(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must not be negative"))
    }
}

pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("threshold {v} ms must be positive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_prometheus_syntax() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "h", "10", "5x", "1.5h", "0s", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn numeric_options_are_range_checked() {
        assert!(parse_open_unit("1").is_err());
        assert!(parse_open_unit("0.99").is_ok());
        assert!(parse_unit("1.5").is_err());
        assert!(parse_effect("0.5").is_err());
        assert!(parse_effect("0.71").is_ok());
        assert!(parse_threshold("0").is_err());
        assert!(parse_non_negative("-1").is_err());
        assert!(parse_non_negative("0").is_ok());
        assert!(parse_number("NaN").is_err());
        assert!(parse_url("https://prom").is_err());
        // date -u -d 2026-11-26T07:00:00Z +%s
        assert_eq!(parse_time("2026-11-26T07:00:00Z"), Ok(1_795_676_400.0));
        assert_eq!(parse_time("1795676400.5"), Ok(1_795_676_400.5));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
        assert!(parse_url("http://127.0.0.1:9090").is_ok());
        assert!(parse_prefix("envoy_").is_ok());
        assert!(parse_prefix("9x").is_err());
        assert!(parse_prefix("a|b").is_err());
    }
}
