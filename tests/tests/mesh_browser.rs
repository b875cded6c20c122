//! The seed's reproduction step on the local mesh: headless Chromium opens
//! `http://localhost:<gateway>/sms`, submits a message through the gateway,
//! and sees the verdict, the version and its cohort; a reload keeps it.

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::Page;
use futures::StreamExt;
use sms_checker_tests::mesh::{LocalMesh, UID_COOKIE};
use sms_checker_tests::tool;

async fn launch(profile: &Path) -> Browser {
    let executable = tool("CHROMIUM_BIN", "/usr/bin/chromium");
    let config = BrowserConfig::builder()
        .chrome_executable(&executable)
        .no_sandbox()
        .user_data_dir(profile)
        .args([
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .launch_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("browser config");
    let (browser, mut handler) = Browser::launch(config)
        .await
        .unwrap_or_else(|err| panic!("launch {}: {err}", executable.display()));
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

async fn text_of(page: &Page, selector: &str) -> String {
    page.find_element(selector)
        .await
        .unwrap_or_else(|err| panic!("{selector}: {err}"))
        .inner_text()
        .await
        .expect("inner text")
        .unwrap_or_default()
}

/// Submits `sms` with the page's own form and returns (verdict, version,
/// cohort) once the verdict shows.
async fn submit(page: &Page, sms: &str) -> (String, String, String) {
    page.evaluate("document.getElementById('verdict').textContent = ''")
        .await
        .expect("clear the verdict");
    let field = page.find_element("#sms").await.expect("#sms field");
    field.click().await.expect("focus");
    page.evaluate("document.getElementById('sms').value = ''")
        .await
        .expect("clear");
    field.type_str(sms).await.expect("type");
    page.find_element("#check")
        .await
        .expect("#check")
        .click()
        .await
        .expect("click");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let verdict = text_of(page, "#verdict").await;
        if !verdict.is_empty() {
            return (
                verdict,
                text_of(page, "#version").await,
                text_of(page, "#cohort").await,
            );
        }
        let error = text_of(page, "#error").await;
        assert!(error.is_empty(), "the page shows an error: {error}");
        assert!(Instant::now() < deadline, "no verdict shown for {sms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_page_through_the_gateway_keeps_the_cohort_across_a_reload() {
    let mesh = LocalMesh::start(&[]);
    let url = format!(
        "http://localhost:{}/sms",
        mesh.component("gateway").http_port
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let mut browser = launch(profile.path()).await;
    let page = browser.new_page(url.as_str()).await.expect("open /sms");
    page.wait_for_navigation().await.expect("load /sms");
    assert_eq!(
        page.get_title().await.expect("title").as_deref(),
        Some("SMS checker")
    );

    // ASCII only: the DevTools key table has no '£'.
    let spam =
        "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now to claim";
    let (verdict, version, cohort) = submit(&page, spam).await;
    assert_eq!(verdict, "spam");
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
    let (verdict, version_again, cohort_again) =
        submit(&page, "Are you coming home for dinner tonight?").await;
    assert_eq!(verdict, "ham");
    assert_eq!(cohort_again, cohort, "the cohort changed across a reload");
    assert_eq!(version_again, version);
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
