//! The model-service's `/sms` page in headless Chromium, served directly by
//! the release binary: type a message, submit, read the verdict, the version
//! and the cohort the page shows.

use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams, Headers, SetExtraHttpHeadersParams,
};
use sms_checker_tests::browser::{
    Verdict, check_sms, launch, text_of, type_and_submit, wait_for_text,
};
use sms_checker_tests::process::start_model_service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_page_shows_verdict_version_and_cohort() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_service, base) = start_model_service("v2", dir.path());
    let url = format!("{base}/sms");
    let mut browser = launch(&dir.path().join("profile"), &[]).await;

    let page = browser.new_page(url.as_str()).await.expect("open /sms");
    page.wait_for_navigation().await.expect("load /sms");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some("SMS checker")
    );

    // ASCII only: the DevTools key table has no '£'.
    let spam = "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now to claim, T&C apply";
    let expected = |result: &str, cohort: &str| Verdict {
        result: result.into(),
        version: "v2".into(),
        cohort: cohort.into(),
    };
    // No gateway in front, so no cohort header.
    assert_eq!(check_sms(&page, spam).await, expected("spam", "none"));

    // Behind the gateway the request carries the cohort; the page shows it.
    page.execute(EnableParams::default())
        .await
        .expect("network domain");
    let headers = Headers::new(serde_json::json!({ "x-experiment-cohort": "canary" }));
    page.execute(SetExtraHttpHeadersParams::new(headers))
        .await
        .expect("extra headers");
    let ham = "Are you coming home for dinner tonight?";
    assert_eq!(check_sms(&page, ham).await, expected("ham", "canary"));

    // A blank message passes the form's `required` check; the service's 422
    // message is shown and the previous verdict hidden.
    type_and_submit(&page, "   ").await;
    let error = wait_for_text(&page, "#error", "the error for a blank message").await;
    assert!(error.contains("empty or only whitespace"), "{error}");
    let hidden = page
        .evaluate("document.getElementById('outcome').hidden")
        .await
        .expect("read #outcome")
        .into_value::<bool>()
        .expect("a boolean");
    assert!(
        hidden,
        "the previous verdict is still shown: {:?}",
        text_of(&page, "#verdict").await
    );

    browser.close().await.expect("close chromium");
    let _ = browser.wait().await;
}
