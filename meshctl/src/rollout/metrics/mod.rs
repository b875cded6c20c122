//! The rollout's own metrics (`--metrics-addr`): where it stands (step,
//! weight), how its checks came out, and the latest evidence of each check
//! (rates, the confidence sequence's ends, the e-value for harm, the sample
//! ratio's p-value), served on `/metrics` while it runs, for Prometheus to
//! scrape and the chart's dashboard to show.

mod server;

pub use server::{MetricsServer, serve};

use std::time::UNIX_EPOCH;

use prometheus::core::Collector;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use serde::Serialize;

use super::events::{CheckLine, Event};

const VERDICTS: [&str; 4] = ["promote", "hold", "insufficient_data", "roll_back"];

/// The name serde gives a unit variant (`roll_back`, `error_rate`).
fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn seconds(time: &str) -> Option<f64> {
    humantime::parse_rfc3339(time)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

pub struct RolloutMetrics {
    registry: Registry,
    info: GaugeVec,
    step: IntGauge,
    steps: IntGauge,
    weight: IntGauge,
    seconds_in_step: Gauge,
    checks: IntCounterVec,
    outcome: GaugeVec,
    candidate_rate: GaugeVec,
    baseline_rate: GaugeVec,
    difference: GaugeVec,
    difference_lower: GaugeVec,
    difference_upper: GaugeVec,
    worse_e_value: GaugeVec,
    srm_p_value: Gauge,
    srm_chi_square: Gauge,
    requests: GaugeVec,
    new_users: GaugeVec,
    started: Gauge,
    last_check: Gauge,
}

impl RolloutMetrics {
    pub fn new() -> anyhow::Result<RolloutMetrics> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(format!("meshctl_rollout_{name}"), help);
        let gauge = |name: &str, help: &str| -> anyhow::Result<Gauge> {
            let g = Gauge::with_opts(opts(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let int = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let g = IntGauge::with_opts(opts(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let vec = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<GaugeVec> {
            let g = GaugeVec::new(opts(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let checks = IntCounterVec::new(
            opts("checks_total", "Checks by their combined verdict"),
            &["verdict"],
        )?;
        registry.register(Box::new(checks.clone()))?;
        let m = &["metric"];
        Ok(RolloutMetrics {
            info: vec(
                "info",
                "1, labelled with what the rollout acts on",
                &["target"],
            )?,
            step: int("step", "Current step, 1-based (0 before the first)")?,
            steps: int("steps", "Steps in the plan")?,
            weight: int("canary_weight_percent", "Canary weight applied, in percent")?,
            seconds_in_step: gauge(
                "step_seconds",
                "Seconds at the current step at the last check",
            )?,
            checks,
            outcome: vec(
                "check_outcome",
                "1 for the latest outcome of each check, 0 for the others",
                &["metric", "outcome"],
            )?,
            candidate_rate: vec("candidate_rate", "Latest canary rate of each rate check", m)?,
            baseline_rate: vec("baseline_rate", "Latest stable rate of each rate check", m)?,
            difference: vec(
                "difference",
                "Latest canary minus stable (Mantel-Haenszel)",
                m,
            )?,
            difference_lower: vec(
                "difference_lower",
                "Lower end of the confidence sequence for the difference",
                m,
            )?,
            difference_upper: vec(
                "difference_upper",
                "Upper end of the confidence sequence for the difference",
                m,
            )?,
            worse_e_value: vec(
                "worse_e_value",
                "E-value for 'the canary is worse' (roll back at 1/alpha)",
                m,
            )?,
            srm_p_value: gauge("srm_p_value", "Sample ratio mismatch chi-square p-value")?,
            srm_chi_square: gauge(
                "srm_chi_square",
                "Sample ratio mismatch chi-square statistic",
            )?,
            requests: vec("requests", "Requests since the start, per arm", &["arm"])?,
            new_users: vec("new_users", "New users since the start, per arm", &["arm"])?,
            started: gauge(
                "start_time_seconds",
                "When the rollout started (Unix seconds)",
            )?,
            last_check: gauge(
                "last_check_time_seconds",
                "When the latest check ran (Unix seconds)",
            )?,
            registry,
        })
    }

    /// Follows one event of the rollout.
    pub fn on(&self, event: &Event) {
        match event {
            Event::Start {
                time,
                target,
                steps,
                ..
            } => {
                self.info.with_label_values(&[target.as_str()]).set(1.0);
                self.steps.set(steps.len() as i64);
                self.started.set(seconds(time).unwrap_or_default());
            }
            Event::Weight { step, canary, .. } => {
                if *step > 0 {
                    self.step.set(*step as i64);
                }
                self.weight.set(i64::from(*canary));
            }
            Event::Check {
                time,
                verdict,
                progress,
                checks,
                ..
            } => {
                self.checks
                    .with_label_values(&[label(verdict).as_str()])
                    .inc();
                self.seconds_in_step.set(progress.seconds_in_step);
                self.last_check.set(seconds(time).unwrap_or_default());
                for (arm, count) in [
                    ("canary", progress.canary_total),
                    ("stable", progress.stable_total),
                ] {
                    self.requests.with_label_values(&[arm]).set(count.requests);
                    self.new_users
                        .with_label_values(&[arm])
                        .set(count.new_users);
                }
                for check in checks {
                    self.check(check);
                }
            }
            Event::Done { canary, .. } => self.weight.set(i64::from(*canary)),
            Event::Notification { .. } => {}
        }
    }

    fn check(&self, check: &CheckLine) {
        let metric = label(&check.metric);
        let outcome = label(&check.outcome);
        for verdict in VERDICTS {
            let on = if verdict == outcome { 1.0 } else { 0.0 };
            self.outcome
                .with_label_values(&[metric.as_str(), verdict])
                .set(on);
        }
        if let Some(rates) = &check.rates {
            let set = |g: &GaugeVec, v: f64| g.with_label_values(&[metric.as_str()]).set(v);
            set(&self.candidate_rate, rates.candidate_rate);
            set(&self.baseline_rate, rates.baseline_rate);
            set(&self.difference, rates.difference);
            set(&self.difference_lower, rates.interval.lower);
            set(&self.difference_upper, rates.interval.upper);
            set(&self.worse_e_value, rates.worse_e_value);
        }
        if let Some(ratio) = &check.sample_ratio {
            self.srm_p_value.set(ratio.p_value);
            self.srm_chi_square.set(ratio.chi_square);
        }
    }

    /// Every series name it exports (the dashboard's panels read them).
    pub fn names(&self) -> Vec<String> {
        let collectors: [&dyn Collector; 19] = [
            &self.info,
            &self.step,
            &self.steps,
            &self.weight,
            &self.seconds_in_step,
            &self.checks,
            &self.outcome,
            &self.candidate_rate,
            &self.baseline_rate,
            &self.difference,
            &self.difference_lower,
            &self.difference_upper,
            &self.worse_e_value,
            &self.srm_p_value,
            &self.srm_chi_square,
            &self.requests,
            &self.new_users,
            &self.started,
            &self.last_check,
        ];
        let mut names: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::Engine;
    use super::super::events::timestamp;
    use super::super::plan::Plan;
    use super::super::simulation::{HEALTHY, Scenario, fixed_weight_intervals};
    use super::*;
    use crate::report::testdata::settings;

    /// The value of the series `name{labels}` in exposition `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    // A check of a simulated interval at a 10 % weight (the canary failing
    // 10 % of its requests, stable 1 %): the gauges carry the check's own
    // numbers.
    #[test]
    fn a_check_sets_the_step_outcomes_and_evidence() {
        let metrics = RolloutMetrics::new().unwrap();
        metrics.on(&Event::Start {
            time: timestamp(1_795_676_400.0),
            target: "the simulation".into(),
            steps: vec![10, 100],
            interval_seconds: 30.0,
        });
        metrics.on(&Event::Weight {
            time: timestamp(1_795_676_401.0),
            step: 1,
            canary: 10,
            stable: 90,
        });
        let plan = Plan {
            steps: vec![10, 100],
            step_time: 60.0,
            step_requests: 100.0,
            interval: 30.0,
            hold_limit: 60.0,
            confirm: false,
        };
        let mut engine = Engine::new(plan, settings(), 0.0);
        let faulted = Scenario {
            canary_errors: 0.1,
            ..HEALTHY
        };
        let interval = fixed_weight_intervals(7, faulted, 10, 1).remove(0);
        let result = engine.check(30.0, &interval, true);
        metrics.on(&Event::check(
            30.0,
            &result.comparison,
            &result.decision,
            &result.progress,
        ));
        let text = metrics.encode();
        assert_eq!(value(&text, "meshctl_rollout_step"), Some(1.0));
        assert_eq!(
            value(&text, "meshctl_rollout_canary_weight_percent"),
            Some(10.0)
        );
        assert_eq!(
            value(&text, "meshctl_rollout_start_time_seconds"),
            Some(1_795_676_400.0)
        );
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_checks_total{verdict="roll_back"}"#
            ),
            Some(1.0)
        );
        let errors = &result.comparison.checks[0];
        let rates = errors.rates.unwrap();
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_check_outcome{metric="error_rate",outcome="roll_back"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_check_outcome{metric="error_rate",outcome="promote"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_candidate_rate{metric="error_rate"}"#
            ),
            Some(rates.candidate_rate)
        );
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_difference_upper{metric="error_rate"}"#
            ),
            Some(rates.interval.upper)
        );
        assert_eq!(
            value(
                &text,
                r#"meshctl_rollout_worse_e_value{metric="error_rate"}"#
            ),
            Some(rates.worse_e_value)
        );
        let srm = result
            .comparison
            .checks
            .iter()
            .find_map(|c| c.sample_ratio)
            .expect("a sample ratio at a 10 % weight");
        assert_eq!(
            value(&text, "meshctl_rollout_srm_p_value"),
            Some(srm.p_value)
        );
        assert_eq!(
            value(&text, r#"meshctl_rollout_requests{arm="canary"}"#),
            Some(result.progress.canary_total.requests)
        );
        assert!(result.progress.canary_total.requests > 300.0);
    }

    // The server answers /metrics with the registry's text, and a taken
    // port is refused when the rollout starts.
    #[test]
    fn the_server_serves_the_text_and_refuses_a_taken_port() {
        let metrics = std::sync::Arc::new(RolloutMetrics::new().unwrap());
        metrics.steps.set(3);
        let server = serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let mut response = ureq::get(format!("http://{}/metrics", server.addr))
            .call()
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        assert_eq!(value(&text, "meshctl_rollout_steps"), Some(3.0));
        let err = serve(server.addr, metrics).err().unwrap();
        assert!(
            format!("{err:#}").starts_with("--metrics-addr: cannot listen on"),
            "{err:#}"
        );
    }
}
