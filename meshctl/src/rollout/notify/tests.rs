//! The notifications a rollout sends, their bodies, and the receivers it takes.

use super::super::engine::{ArmCount, Progress};
use super::super::events::timestamp;
use super::body::body;
use super::*;
use crate::report::model::Metric;

fn check(decision: Decision) -> Event {
    let arm = ArmCount::default();
    Event::Check {
        time: timestamp(60.0),
        verdict: Verdict::Hold,
        decision,
        progress: Progress {
            step: 1,
            steps: 2,
            weight: 5,
            seconds_in_step: 60.0,
            canary_in_step: arm,
            stable_in_step: arm,
            canary_total: arm,
            stable_total: arm,
        },
        checks: vec![CheckLine {
            metric: Metric::ErrorRate,
            outcome: Verdict::Hold,
            detail: "0.00% vs 0.00%, at most 3.10%".into(),
            rates: None,
            sample_ratio: None,
        }],
    }
}

fn hold() -> Decision {
    Decision::Stay {
        verdict: Verdict::Hold,
        reason: "error rate: 0.00% vs 0.00%, at most 3.10%".into(),
    }
}

// Start, step 1, each hold as it begins (held, held again: no second
// notification; waiting; held: a new hold), and the roll-back; the
// stop's 0 % is not a step of its own.
#[test]
fn the_start_each_step_a_hold_once_and_the_end_are_notified() {
    let mut tracker = Tracker::default();
    let events = [
        Event::Start {
            time: timestamp(0.0),
            target: "helm release r in namespace n".into(),
            steps: vec![5, 100],
            interval_seconds: 30.0,
        },
        Event::Weight {
            time: timestamp(1.0),
            step: 1,
            canary: 5,
            stable: 95,
        },
        check(hold()),
        check(hold()),
        check(Decision::Stay {
            verdict: Verdict::InsufficientData,
            reason: "waiting".into(),
        }),
        check(hold()),
        Event::Weight {
            time: timestamp(2.0),
            step: 0,
            canary: 0,
            stable: 100,
        },
        Event::Done {
            time: timestamp(3.0),
            end: End::RolledBack,
            canary: 0,
            exit_code: 4,
            reason: "error rate: 9.00% vs 0.00%".into(),
        },
    ];
    let sent: Vec<Notification> = events.iter().filter_map(|e| tracker.on(e)).collect();
    let kinds: Vec<Kind> = sent.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Started,
            Kind::Step,
            Kind::Hold,
            Kind::Hold,
            Kind::RolledBack
        ]
    );
    assert_eq!(
        sent.iter().map(|n| n.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let done = &sent[4];
    assert_eq!((done.canary, done.step, done.steps), (0, 1, 2));
    assert_eq!(done.reason, "error rate: 9.00% vs 0.00%");
    assert_eq!(done.evidence[0].metric, Metric::ErrorRate);
    assert_eq!(
        done.summary,
        "Rollout on helm release r in namespace n: ROLLED BACK: canary at 0%"
    );
    assert!(sent[2].reason.starts_with("error rate: 0.00%"));
}

#[test]
fn each_format_carries_the_summary_reason_and_evidence() {
    let mut tracker = Tracker::default();
    tracker.on(&check(hold()));
    let n = tracker
        .on(&Event::Done {
            time: timestamp(3.0),
            end: End::Aborted {
                verdict: Verdict::Hold,
            },
            canary: 0,
            exit_code: 3,
            reason: "step 1 (5%) not passed".into(),
        })
        .unwrap();
    let json = body(&n, Format::Json);
    assert_eq!(json["kind"], "aborted");
    assert_eq!(json["evidence"][0]["metric"], "error_rate");
    assert_eq!(json["reason"], "step 1 (5%) not passed");
    let slack = body(&n, Format::Slack);
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.starts_with("*Rollout on : aborted at step 0/0"),
        "{text}"
    );
    assert!(
        text.contains("\n>step 1 (5%) not passed\n• error rate hold: 0.00%"),
        "{text}"
    );
    let teams = body(&n, Format::Teams);
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    let blocks = card["content"]["body"].as_array().unwrap();
    assert_eq!(blocks[1]["text"], "step 1 (5%) not passed");
    assert_eq!(blocks[2]["facts"][0]["title"], "error rate");
}

#[test]
fn a_receiver_is_a_url_with_an_optional_format() {
    assert_eq!(
        parse_target("https://hooks.slack.com/services/T/B/X"),
        Ok(Target {
            url: "https://hooks.slack.com/services/T/B/X".into(),
            format: None
        })
    );
    assert_eq!(
        parse_target("teams=https://example.org/hook?a=b").map(|t| t.format),
        Ok(Some(Format::Teams))
    );
    // An '=' inside the URL's query is not a format.
    assert_eq!(
        parse_target("http://127.0.0.1:9/x?a=b").map(|t| t.format),
        Ok(None)
    );
    assert!(
        parse_target("discord=https://x")
            .unwrap_err()
            .contains("json, slack, teams")
    );
    assert!(
        parse_target("hooks.slack.com")
            .unwrap_err()
            .contains("not an http")
    );
    assert!(parse_target("https://").is_err());
}
