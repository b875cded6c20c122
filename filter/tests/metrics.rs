//! Metric names in Istio's tag encoding, and the bounded slot table.

use std::collections::HashSet;

use sms_checker_filter::metrics::{
    CohortLabel, Kind, Metric, MetricSet, Prediction, ResponseClass, TAG_NAMES, sanitize_label,
    tagged,
};

fn set() -> MetricSet {
    MetricSet::new(vec!["stable".into(), "canary".into()], "v2")
}

#[test]
fn names_use_istio_tag_encoding() {
    let m = set();
    assert_eq!(
        m.name(Metric::GatewayRequests {
            cohort: 1,
            class: ResponseClass::Success
        }),
        "cohort=.=canary;.;response_class=.=2xx;.;sms_cohort_requests_total"
    );
    assert_eq!(
        m.name(Metric::GatewayDuration { cohort: 0 }),
        "cohort=.=stable;.;sms_cohort_request_duration_milliseconds"
    );
    assert_eq!(
        m.name(Metric::GatewayUsers {
            cohort: 0,
            returning: false
        }),
        "cohort=.=stable;.;user=.=new;.;sms_cohort_users_total"
    );
    assert_eq!(
        m.name(Metric::GatewayOverrides { accepted: false }),
        "outcome=.=rejected;.;sms_cohort_overrides_total"
    );
    assert_eq!(
        m.name(Metric::SidecarRequests {
            cohort: CohortLabel::Unknown,
            class: ResponseClass::ServerError,
            prediction: Prediction::Spam,
            mirrored: true
        }),
        "version=.=v2;.;cohort=.=unknown;.;response_class=.=5xx;.;prediction=.=spam;.;mirrored=.=true;.;sms_model_requests_total"
    );
    assert_eq!(
        m.name(Metric::SidecarDuration { mirrored: false }),
        "version=.=v2;.;mirrored=.=false;.;sms_model_request_duration_milliseconds"
    );
    assert_eq!(
        MetricSet::kind(Metric::SidecarDuration { mirrored: false }),
        Kind::Histogram
    );
    assert_eq!(
        MetricSet::kind(Metric::GatewayOverrides { accepted: true }),
        Kind::Counter
    );
}

fn every_metric(cohorts: usize) -> Vec<Metric> {
    let mut all = Vec::new();
    let labels: Vec<CohortLabel> = (0..cohorts)
        .map(CohortLabel::Known)
        .chain([CohortLabel::Unknown, CohortLabel::None])
        .collect();
    for cohort in 0..cohorts {
        for class in ResponseClass::ALL {
            all.push(Metric::GatewayRequests { cohort, class });
        }
        all.push(Metric::GatewayDuration { cohort });
        for returning in [false, true] {
            all.push(Metric::GatewayUsers { cohort, returning });
        }
    }
    for accepted in [false, true] {
        all.push(Metric::GatewayOverrides { accepted });
        all.push(Metric::SidecarDuration { mirrored: accepted });
    }
    for &cohort in &labels {
        for class in ResponseClass::ALL {
            for prediction in Prediction::ALL {
                for mirrored in [false, true] {
                    all.push(Metric::SidecarRequests {
                        cohort,
                        class,
                        prediction,
                        mirrored,
                    });
                }
            }
        }
    }
    all
}

#[test]
fn every_series_has_its_own_slot_and_name() {
    for n in 1..5 {
        let m = MetricSet::new((0..n).map(|i| format!("c{i}")).collect(), "v1");
        let all = every_metric(n);
        assert_eq!(all.len(), m.len(), "every slot is reachable");
        let slots: HashSet<usize> = all.iter().map(|&x| m.slot(x)).collect();
        assert_eq!(slots.len(), all.len());
        assert!(slots.iter().all(|&s| s < m.len()));
        for &metric in &all {
            assert_eq!(m.metric_at(m.slot(metric)), Some(metric));
        }
        assert_eq!(m.metric_at(m.len()), None);
        let names: HashSet<String> = all.iter().map(|&x| m.name(x)).collect();
        assert_eq!(names.len(), all.len());
    }
}

#[test]
fn every_tag_in_every_name_is_a_documented_tag() {
    let m = set();
    for metric in every_metric(2) {
        let name = m.name(metric);
        let parts: Vec<&str> = name.split(";.;").collect();
        let (tags, base) = parts.split_at(parts.len() - 1);
        assert!(base[0].starts_with("sms_"), "{name}");
        for tag in tags {
            let (key, value) = tag.split_once("=.=").unwrap();
            assert!(TAG_NAMES.contains(&key), "{key} in {name}");
            assert!(!value.is_empty() && !value.contains(';'), "{name}");
        }
    }
}

#[test]
fn response_classes() {
    let class = |s: &str| ResponseClass::from_status(Some(s.as_bytes())).as_str();
    assert_eq!(class("100"), "1xx");
    assert_eq!(class("200"), "2xx");
    assert_eq!(class("302"), "3xx");
    assert_eq!(class("404"), "4xx");
    assert_eq!(class("503"), "5xx");
    assert_eq!(class("600"), "none");
    assert_eq!(class("20"), "none");
    assert_eq!(class("2000"), "none");
    assert_eq!(class("2x0"), "none");
    assert_eq!(ResponseClass::from_status(None).as_str(), "none");
}

#[test]
fn predictions() {
    let p = |v: Option<&str>| Prediction::from_header(v.map(str::as_bytes)).as_str();
    assert_eq!(p(Some("spam")), "spam");
    assert_eq!(p(Some("HAM ")), "ham");
    assert_eq!(p(Some("maybe")), "other");
    assert_eq!(p(Some("")), "other");
    assert_eq!(p(None), "none");
}

#[test]
fn labels_are_sanitised() {
    assert_eq!(sanitize_label("v1.2-rc_3"), "v1.2-rc_3");
    assert_eq!(sanitize_label("v1;.;evil=.=x"), "v1_._evil_._x");
    assert_eq!(sanitize_label(""), "unknown");
    assert_eq!(sanitize_label(&"é".repeat(100)).len(), 63);
    assert_eq!(tagged(&[("a", "1")], "m"), "a=.=1;.;m");
}
