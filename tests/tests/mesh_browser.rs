//! The seed's reproduction step on the local mesh: headless Chromium opens
//! `http://sms-checker.local:<gateway>/sms` (the name mapped to 127.0.0.1, as
//! the seed maps it in /etc/hosts), submits a message through the gateway,
//! and sees the verdict, the version and its cohort; a reload keeps it.

use sms_checker_tests::browser::{check_sms, launch};
use sms_checker_tests::mesh::LocalMesh;
use sms_checker_tests::users::UID_COOKIE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_page_through_the_gateway_keeps_the_cohort_across_a_reload() {
    let mesh = LocalMesh::start(&[]);
    let gateway = mesh.gateway();
    let url = format!("http://{}:{}/sms", gateway.host, gateway.port);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut browser = launch(profile.path(), &[&gateway.host]).await;
    let page = browser.new_page(url.as_str()).await.expect("open /sms");
    page.wait_for_navigation().await.expect("load /sms");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some("SMS checker")
    );

    // ASCII only: the DevTools key table has no '£'.
    let spam =
        "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now to claim";
    let first = check_sms(&page, spam).await;
    assert_eq!(first.result, "spam");
    let (version, cohort) = (first.version, first.cohort);
    let expected_version = match cohort.as_str() {
        "stable" => "v1",
        "canary" => "v2",
        other => panic!("the page shows cohort {other:?}"),
    };
    assert_eq!(
        version, expected_version,
        "cohort {cohort} answered by {version}"
    );

    let cookies = page.get_cookies().await.expect("cookies");
    let uid = cookies
        .iter()
        .find(|c| c.name == UID_COOKIE)
        .map(|c| c.value.clone())
        .unwrap_or_else(|| panic!("no {UID_COOKIE} cookie in {cookies:?}"));

    page.reload().await.expect("reload");
    page.wait_for_navigation().await.expect("reload /sms");
    let again = check_sms(&page, "Are you coming home for dinner tonight?").await;
    assert_eq!(again.result, "ham");
    assert_eq!(again.cohort, cohort, "the cohort changed across a reload");
    assert_eq!(again.version, version);
    let cookies = page.get_cookies().await.expect("cookies");
    assert!(
        cookies
            .iter()
            .any(|c| c.name == UID_COOKIE && c.value == uid),
        "the user id changed"
    );

    browser.close().await.expect("close chromium");
    let _ = browser.wait().await;
    drop(mesh);
}
