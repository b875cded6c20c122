//! The rollout's plan: the weights to go through and what each step needs
//! before the next, validated once from the command line.

use std::time::Duration;

/// Steps and their minimums, in seconds and requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Canary weights in percent, strictly increasing.
    pub steps: Vec<u8>,
    /// Least time at each step before it may be promoted.
    pub step_time: f64,
    /// Least canary requests (and as many stable ones) seen at each step.
    pub step_requests: f64,
    /// Time between checks.
    pub interval: f64,
    /// How long a step may go on past its minimum time without being
    /// promoted before the rollout gives up.
    pub hold_limit: f64,
    /// Ask before applying each step's weight.
    pub confirm: bool,
}

/// `5,10,25,50,100`: whole percents, strictly increasing, 1 to 100.
pub fn parse_steps(text: &str) -> Result<Vec<u8>, String> {
    let mut steps: Vec<u8> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let step: u8 = part
            .parse()
            .ok()
            .filter(|s| (1..=100).contains(s))
            .ok_or_else(|| format!("--steps: {part:?} is not a whole percent from 1 to 100"))?;
        if steps.last().is_some_and(|last| *last >= step) {
            return Err(format!(
                "--steps: {text:?} must increase strictly (the canary only grows, so its users keep their cohort)"
            ));
        }
        steps.push(step);
    }
    Ok(steps)
}

impl Plan {
    /// Checks the relations clap cannot: a check must fit in a step.
    pub fn new(
        steps: Vec<u8>,
        step_time: Duration,
        step_requests: u64,
        interval: Duration,
        hold_limit: Duration,
        confirm: bool,
    ) -> Result<Plan, String> {
        if steps.is_empty() {
            return Err("--steps: give at least one weight".into());
        }
        if interval > step_time {
            return Err(format!(
                "--interval ({}) is longer than --step-time ({}): a step would end before its first check",
                humantime::format_duration(interval),
                humantime::format_duration(step_time)
            ));
        }
        Ok(Plan {
            steps,
            step_time: step_time.as_secs_f64(),
            step_requests: step_requests as f64,
            interval: interval.as_secs_f64(),
            hold_limit: hold_limit.as_secs_f64(),
            confirm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_increase_strictly_within_percent() {
        assert_eq!(parse_steps("5,10,25,50,100"), Ok(vec![5, 10, 25, 50, 100]));
        assert_eq!(parse_steps(" 1, 100"), Ok(vec![1, 100]));
        for (bad, says) in [
            ("0,10", "from 1 to 100"),
            ("5,101", "from 1 to 100"),
            ("5,x", "\"x\""),
            ("10,5", "increase strictly"),
            ("5,5", "increase strictly"),
            ("", "\"\""),
        ] {
            let err = parse_steps(bad).unwrap_err();
            assert!(
                err.contains(says) && err.starts_with("--steps"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_check_must_fit_in_a_step() {
        let s = Duration::from_secs;
        let plan = Plan::new(vec![5, 100], s(300), 100, s(30), s(600), false).unwrap();
        assert_eq!((plan.step_time, plan.interval), (300.0, 30.0));
        let err = Plan::new(vec![5], s(30), 100, s(60), s(600), false).unwrap_err();
        assert!(
            err.contains("--interval (1m) is longer than --step-time (30s)"),
            "{err}"
        );
    }
}
