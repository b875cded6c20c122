//! Numbers as the tables, the HTML page and the checks' details print them.

pub fn count(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

pub fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_string(), pct)
}

/// A share as a percentage with two decimals.
pub fn pct(value: f64) -> String {
    format!("{:.2}%", value * 100.0)
}

/// An e-value: two decimals, in scientific notation from 10^4.
pub fn e_text(e: f64) -> String {
    if e >= 1e4 {
        format!("{e:.1e}")
    } else {
        format!("{e:.2}")
    }
}

/// Milliseconds with two decimals, or three significant digits below 1 ms
/// (the model-service answers in microseconds).
pub fn millis(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| {
        if v == 0.0 || v.abs() >= 1.0 {
            format!("{v:.2} ms")
        } else {
            let decimals = (2.0 - v.abs().log10().floor()).clamp(2.0, 9.0) as usize;
            format!("{v:.decimals$} ms")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_missing_values_format_plainly() {
        assert_eq!(count(183.0), "183");
        assert_eq!(count(2.5), "2.5");
        assert_eq!(percent(None), "-");
        assert_eq!(millis(Some(1.234)), "1.23 ms");
        assert_eq!(millis(Some(0.004567)), "0.00457 ms");
        assert_eq!(millis(Some(0.25)), "0.250 ms");
        assert_eq!(millis(Some(0.0)), "0.00 ms");
    }
}
