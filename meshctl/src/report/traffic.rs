//! The report's descriptive tables: traffic per version, per version and
//! cohort, per cohort, and latency rows, from one window's dataset.

use std::collections::BTreeSet;

use super::dataset::{Dataset, MetricNames, is_error, label};
use super::model::{
    BinCount, CohortTraffic, Latency, Role, Settings, Source, VersionCohort, VersionTraffic,
};
use super::prom::Labels;
use super::stats::finite;
use super::stats::quantile::Histogram;

fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

impl Latency {
    fn new(
        subject: &str,
        source: Source,
        role: Option<Role>,
        histogram: &Histogram,
        thresholds: &[f64],
    ) -> Latency {
        Latency {
            subject: subject.to_string(),
            source,
            role,
            count: histogram.count(),
            p50: finite(histogram.quantile(0.5)),
            p95: finite(histogram.quantile(0.95)),
            p99: finite(histogram.quantile(0.99)),
            under: thresholds
                .iter()
                .filter_map(|t| histogram.share_under(*t))
                .collect(),
            bins: histogram
                .bins()
                .into_iter()
                .map(|b| BinCount {
                    lower: b.lower,
                    upper: finite(b.upper),
                    count: b.count,
                })
                .collect(),
        }
    }
}

/// The descriptive part of a report.
pub struct Tables {
    pub versions: Vec<VersionTraffic>,
    pub cohorts: Vec<CohortTraffic>,
    pub version_cohorts: Vec<VersionCohort>,
    pub latency: Vec<Latency>,
}

/// Every version the data or the roles name.
pub fn versions(settings: &Settings, data: &Dataset) -> BTreeSet<String> {
    let mut versions: BTreeSet<String> = data.values_of(&data.sidecar_requests(), "version");
    versions.extend(data.values_of(MetricNames::SERVICE_PREDICTIONS, "version"));
    versions.extend(settings.roles.keys().cloned());
    versions
}

/// Traffic per version, per version and cohort, per cohort, and latency.
pub fn tables(settings: &Settings, data: &Dataset) -> Tables {
    let sidecar = data.sidecar_requests();
    let gateway = data.gateway_requests();

    let versions = versions(settings, data);
    let role_of = |v: &str| settings.roles.get(v).copied();
    // Shares and mirror coverage come from the sidecars; a set-up without
    // the filter (the model-service alone, as before this project) still
    // gets them from the service's prediction counter.
    let share_source = if data.sum(&sidecar, |_| true) > 0.0 {
        sidecar.clone()
    } else {
        MetricNames::SERVICE_PREDICTIONS.to_string()
    };
    let live_total = data.sum(&share_source, |l| {
        role_of(label(l, "version")) != Some(Role::Shadow)
    });

    let traffic: Vec<VersionTraffic> = versions
        .iter()
        .map(|v| {
            let mine = |l: &Labels| label(l, "version") == v;
            let requests = data.sum(&sidecar, mine);
            let errors = data.sum(&sidecar, |l| mine(l) && is_error(l));
            let (spam, ham) = data.spam_and_ham(v);
            let role = role_of(v);
            let counted = data.sum(&share_source, mine);
            VersionTraffic {
                version: v.clone(),
                role,
                sidecar_requests: requests,
                mirrored_requests: data
                    .sum(&sidecar, |l| mine(l) && label(l, "mirrored") == "true"),
                predictions: data.sum(MetricNames::SERVICE_PREDICTIONS, mine),
                live_share: if role == Some(Role::Shadow) {
                    None
                } else {
                    ratio(counted, live_total)
                },
                mirror_coverage: if role == Some(Role::Shadow) {
                    ratio(counted, live_total)
                } else {
                    None
                },
                errors,
                error_rate: ratio(errors, requests),
                spam,
                ham,
                spam_ratio: ratio(spam, spam + ham),
            }
        })
        .collect();

    let mut version_cohorts = Vec::new();
    for v in &versions {
        let role = role_of(v);
        for cohort in data.values_of(&sidecar, "cohort") {
            let mine = |l: &Labels| label(l, "version") == v && label(l, "cohort") == cohort;
            let requests = data.sum(&sidecar, mine);
            if requests == 0.0 {
                continue;
            }
            let count = |prediction: &str| {
                data.sum(&sidecar, |l| {
                    mine(l) && label(l, "prediction") == prediction
                })
            };
            let (spam, ham) = (count("spam"), count("ham"));
            let live_in_cohort = data.sum(&sidecar, |l| {
                label(l, "cohort") == cohort && role_of(label(l, "version")) != Some(Role::Shadow)
            });
            version_cohorts.push(VersionCohort {
                version: v.clone(),
                role,
                requests,
                errors: data.sum(&sidecar, |l| mine(l) && is_error(l)),
                spam_ratio: ratio(spam, spam + ham),
                mirror_coverage: if role == Some(Role::Shadow) {
                    ratio(requests, live_in_cohort)
                } else {
                    None
                },
                cohort,
            });
        }
    }

    let cohort_names = data.values_of(&gateway, "cohort");
    let gateway_total = data.sum(&gateway, |_| true);
    let cohorts: Vec<CohortTraffic> = cohort_names
        .iter()
        .map(|c| {
            let mine = |l: &Labels| label(l, "cohort") == c;
            let requests = data.sum(&gateway, mine);
            let errors = data.sum(&gateway, |l| mine(l) && is_error(l));
            CohortTraffic {
                cohort: c.clone(),
                requests,
                share: ratio(requests, gateway_total),
                errors,
                error_rate: ratio(errors, requests),
            }
        })
        .collect();

    let thresholds = &settings.thresholds_ms;
    let mut latency = Vec::new();
    for v in &versions {
        let histogram = data.sidecar_latency(&BTreeSet::from([v.clone()]));
        if histogram.count() > 0.0 {
            latency.push(Latency::new(
                v,
                Source::Sidecar,
                role_of(v),
                &histogram,
                thresholds,
            ));
        }
    }
    for c in &cohort_names {
        let histogram = data.gateway_latency(c);
        if histogram.count() > 0.0 {
            let role = [Role::Stable, Role::Canary, Role::Shadow]
                .into_iter()
                .find(|r| r.as_str() == c);
            latency.push(Latency::new(
                c,
                Source::Gateway,
                role,
                &histogram,
                thresholds,
            ));
        }
    }
    for v in &versions {
        let histogram = data.service_latency(v);
        if histogram.count() > 0.0 {
            latency.push(Latency::new(
                v,
                Source::Service,
                role_of(v),
                &histogram,
                thresholds,
            ));
        }
    }

    Tables {
        versions: traffic,
        cohorts,
        version_cohorts,
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{dataset, settings};
    use super::*;

    #[test]
    fn traffic_sums_away_instances_and_computes_shares() {
        let report = tables(&settings(), &dataset(0.0, "5"));
        let v = |name: &str| report.versions.iter().find(|t| t.version == name).unwrap();
        assert_eq!(v("v1").sidecar_requests, 900.0);
        assert_eq!(v("v1").predictions, 900.0);
        assert_eq!(v("v1").live_share, Some(0.9));
        assert_eq!(v("v2").live_share, Some(0.1));
        assert_eq!(v("v3").mirror_coverage, Some(1.0));
        assert_eq!(v("v3").mirrored_requests, 1000.0);
        assert_eq!(v("v3").live_share, None);
        assert_eq!(v("v1").spam_ratio, Some(0.13));
        // v3 mirrors both cohorts: 870 of stable's 900, 130 of canary's 100.
        let vc = |version: &str, cohort: &str| {
            report
                .version_cohorts
                .iter()
                .find(|r| r.version == version && r.cohort == cohort)
                .unwrap()
        };
        assert_eq!(vc("v3", "stable").requests, 870.0);
        let coverage = vc("v3", "stable").mirror_coverage.unwrap();
        assert!((coverage - 870.0 / 900.0).abs() < 1e-12);
        assert_eq!(vc("v3", "canary").mirror_coverage, Some(1.3));
        assert_eq!(vc("v1", "stable").requests, 900.0);
        assert_eq!(vc("v1", "stable").spam_ratio, Some(0.13));
        assert_eq!(vc("v1", "stable").mirror_coverage, None);
        let canary = report
            .cohorts
            .iter()
            .find(|c| c.cohort == "canary")
            .unwrap();
        assert_eq!((canary.requests, canary.share), (100.0, Some(0.1)));
        let sidecar_v1 = report
            .latency
            .iter()
            .find(|l| l.subject == "v1" && l.source == Source::Sidecar)
            .unwrap();
        assert_eq!(sidecar_v1.count, 900.0);
        // Rank 450 of 900 ends the first bucket exactly: p50 = 1 ms.
        assert_eq!(sidecar_v1.p50, Some(1.0));
    }
}
