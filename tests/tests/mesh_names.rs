//! Every header and cookie name the chart lets a user change, changed at
//! once, on the local mesh: the experiment works end to end under the new
//! names and the defaults appear nowhere. Each knob has a reader that shows
//! it here, so a knob that stops reaching one of its readers fails this test:
//!
//! | knob | readers, and what shows them |
//! | --- | --- |
//! | `experiment.cohortHeader` | VirtualService (cohort → version), sidecar filter (`cohort` label), model-service (its echo) |
//! | `experiment.responseHeader` | gateway filter (on every answer), model-service (its echo), `/sms` page |
//! | `filter.predictionHeader` | model-service (sets it), sidecar filter (`prediction` label) |
//! | `experiment.cookie.name` | gateway filter (`Set-Cookie`, returning users keep their cohort) |
//! | `experiment.override.header`, `.tokenHeader` | gateway filter (a QA override takes) |

use std::collections::BTreeMap;
use std::time::Duration;

use model_service::dataset::hex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sms_checker_filter::config::{
    DEFAULT_COHORT_HEADER, DEFAULT_COOKIE_NAME, DEFAULT_PREDICTION_HEADER,
};
use sms_checker_filter::metrics::SIDECAR_REQUESTS;
use sms_checker_tests::browser::{check_sms, launch};
use sms_checker_tests::mesh::{Gateway, LocalMesh, metric_sum, url};
use sms_checker_tests::users::{Names, Reply, parallel, predict_with};
use sms_checker_tests::wait_for;

const PREDICTION_HEADER: &str = "x-verdict";
const COHORT_HEADER: &str = "x-arm";
const RESPONSE_HEADER: &str = "x-arm-out";
const COOKIE: &str = "visitor";
const OVERRIDE_HEADER: &str = "x-qa-arm";
const TOKEN_HEADER: &str = "x-qa-token";
const TOKEN: &str = "let-me-in";

const SPAM: &str = "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now";
const HAM: &str = "Are you coming home for dinner tonight?";

fn sets() -> Vec<String> {
    let token_sha256 = hex(&Sha256::digest(TOKEN));
    vec![
        format!("filter.predictionHeader={PREDICTION_HEADER}"),
        format!("experiment.cohortHeader={COHORT_HEADER}"),
        format!("experiment.responseHeader={RESPONSE_HEADER}"),
        format!("experiment.cookie.name={COOKIE}"),
        format!("experiment.override.header={OVERRIDE_HEADER}"),
        format!("experiment.override.tokenHeader={TOKEN_HEADER}"),
        format!("experiment.override.tokenSha256={token_sha256}"),
        // Both cohorts get users quickly.
        "istio.trafficSplit.stable=50".into(),
        "istio.trafficSplit.canary=50".into(),
    ]
}

fn names() -> Names {
    Names {
        cohort_response: RESPONSE_HEADER.into(),
        cookie: COOKIE.into(),
    }
}

fn version_of(cohort: &str) -> &'static str {
    match cohort {
        "stable" => "v1",
        "canary" => "v2",
        other => panic!("unknown cohort {other:?}"),
    }
}

/// The verdict in a `/predict` answer's body.
fn result(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {reply:?}"));
    body["result"].as_str().unwrap_or_default().to_string()
}

/// Checks one answer through the gateway: its cohort under the new
/// response header, answered by that cohort's version (the VirtualService
/// routed on the new cohort header), the verdict under the new prediction
/// header, and no default name anywhere.
fn check_reply(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, 200, "{reply:?}");
    let cohort = reply
        .cohort
        .clone()
        .unwrap_or_else(|| panic!("no {RESPONSE_HEADER}: {reply:?}"));
    assert_eq!(
        reply.version.as_deref(),
        Some(version_of(&cohort)),
        "{reply:?}"
    );
    let verdict = result(reply);
    assert_eq!(
        reply.header(PREDICTION_HEADER),
        Some(verdict.as_str()),
        "{reply:?}"
    );
    for default in [DEFAULT_COHORT_HEADER, DEFAULT_PREDICTION_HEADER] {
        assert_eq!(reply.header(default), None, "{default} in {reply:?}");
    }
    assert!(
        !reply
            .headers
            .iter()
            .any(|(n, v)| n == "set-cookie" && v.starts_with(DEFAULT_COOKIE_NAME)),
        "{reply:?}"
    );
    (cohort, verdict)
}

/// `GET /sms` through the gateway as the user `uid`: the gateway filter sets
/// the cohort response header on every answer, here one the model-service
/// echoes nothing on.
fn page_cohort(mesh: &LocalMesh, gateway: &Gateway, uid: &str) -> Option<String> {
    let response = gateway
        .get(&mesh.client(), "/sms")
        .header("cookie", &format!("{COOKIE}={uid}"))
        .call()
        .expect("GET /sms through the gateway");
    assert_eq!(response.status().as_u16(), 200);
    response
        .headers()
        .get(RESPONSE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_renamed_header_and_the_cookie_work_end_to_end() {
    let sets = sets();
    let mesh = LocalMesh::start(&sets.iter().map(String::as_str).collect::<Vec<_>>());
    let gateway = mesh.gateway();
    let names = names();

    // New users: a cookie under the new name, a cohort, the cohort's version.
    let replies = parallel(40, 4, |agent, i| {
        let sms = if i % 2 == 0 { SPAM } else { HAM };
        predict_with(agent, &gateway, &names, None, &[], sms)
    });
    let mut sent: BTreeMap<(String, String), f64> = BTreeMap::new();
    for reply in &replies {
        let (cohort, verdict) = check_reply(reply);
        assert!(reply.set_uid.is_some(), "no {COOKIE} cookie: {reply:?}");
        *sent.entry((cohort, verdict)).or_default() += 1.0;
    }
    for cohort in ["stable", "canary"] {
        assert!(
            sent.keys().any(|(c, _)| c == cohort),
            "no {cohort} user among 40: {sent:?}"
        );
    }

    // A returning user, known by the cookie under its new name, keeps the
    // cohort and gets no new cookie.
    let first = &replies[0];
    let uid = first.set_uid.clone().expect("a user id");
    let cohort = first.cohort.clone().expect("a cohort");
    let again = predict_with(&mesh.client(), &gateway, &names, Some(&uid), &[], HAM);
    let (again_cohort, verdict) = check_reply(&again);
    assert_eq!(again_cohort, cohort, "the returning user changed cohort");
    assert_eq!(again.set_uid, None, "a returning user got a new cookie");
    *sent.entry((cohort.clone(), verdict)).or_default() += 1.0;

    // A QA override under the new header names moves the user to the other
    // cohort for that request.
    let other = if cohort == "stable" {
        "canary"
    } else {
        "stable"
    };
    let overridden = predict_with(
        &mesh.client(),
        &gateway,
        &names,
        Some(&uid),
        &[(OVERRIDE_HEADER, other), (TOKEN_HEADER, TOKEN)],
        SPAM,
    );
    let (overridden_cohort, verdict) = check_reply(&overridden);
    assert_eq!(overridden_cohort, other, "the override did not take");
    *sent.entry((other.to_string(), verdict)).or_default() += 1.0;

    // The gateway filter itself answers with the cohort under the new name.
    assert_eq!(
        page_cohort(&mesh, &gateway, &uid).as_deref(),
        Some(cohort.as_str())
    );

    // The sidecars read both renamed headers: every answer is counted under
    // its cohort and its real verdict (none would mean the prediction header
    // went unread).
    let counted = |cohort: &str, verdict: &str| {
        metric_sum(
            &mesh.proxy_stats(&format!("sidecar-{}", version_of(cohort))),
            SIDECAR_REQUESTS,
            &[
                ("cohort", cohort),
                ("prediction", verdict),
                ("mirrored", "false"),
            ],
        )
    };
    wait_for(
        "the sidecars to count every answer by cohort and verdict",
        Duration::from_secs(30),
        || {
            sent.iter()
                .all(|((cohort, verdict), n)| counted(cohort, verdict) == *n)
                .then_some(())
        },
    );

    // The model-service itself, reached behind its sidecar but not through
    // the gateway (whose filter sets the response header anyway): it reads
    // the cohort from the new request header and answers with the new names.
    let model = mesh.component("model-v1");
    let mut direct = mesh
        .client()
        .post(&url(&model, "http", "/predict"))
        .header("content-type", "application/json")
        .header(COHORT_HEADER, "canary")
        .send(&serde_json::json!({ "sms": SPAM }).to_string())
        .expect("POST /predict to model-v1");
    assert_eq!(direct.status().as_u16(), 200);
    let header = |name: &str| {
        direct
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header(RESPONSE_HEADER).as_deref(), Some("canary"));
    assert_eq!(header(PREDICTION_HEADER).as_deref(), Some("spam"));
    assert_eq!(header(DEFAULT_PREDICTION_HEADER), None);
    assert_eq!(header(DEFAULT_COHORT_HEADER), None);
    let _ = direct.body_mut().read_to_string();

    // A person on the /sms page sees the cohort (read from the new response
    // header) and holds the cookie under its new name.
    let page_url = format!("http://{}:{}/sms", gateway.host, gateway.port);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut browser = launch(profile.path(), &[&gateway.host]).await;
    let page = browser
        .new_page(page_url.as_str())
        .await
        .expect("open /sms");
    page.wait_for_navigation().await.expect("load /sms");
    let shown = check_sms(&page, "Call me when you are back home").await;
    assert_eq!(
        shown.version,
        version_of(&shown.cohort),
        "the page shows cohort {:?} answered by {}",
        shown.cohort,
        shown.version
    );
    let cookies = page.get_cookies().await.expect("cookies");
    assert!(
        cookies.iter().any(|c| c.name == COOKIE),
        "no {COOKIE} cookie in {cookies:?}"
    );
    assert!(
        !cookies.iter().any(|c| c.name == DEFAULT_COOKIE_NAME),
        "{cookies:?}"
    );
    browser.close().await.expect("close chromium");
    let _ = browser.wait().await;
    drop(mesh);
}
