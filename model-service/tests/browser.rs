//! The `/sms` page in headless Chromium (Debian's `/usr/bin/chromium`,
//! driven over the DevTools protocol): type a message, submit, read the
//! verdict, the version and the cohort the page shows.

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams, Headers, SetExtraHttpHeadersParams,
};
use chromiumoxide::page::Page;
use futures::StreamExt;
use model_service::app::{AppState, serve};
use model_service::model::{Model, Version};

const CHROMIUM: &str = "/usr/bin/chromium";

async fn start_service(version: Version) -> (String, tokio::sync::oneshot::Sender<()>) {
    let models = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let state = AppState::new(Model::load(models, version).unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        state,
        async {
            let _ = stopped.await;
        },
        Duration::ZERO,
    ));
    (url, stop)
}

async fn launch(profile: &Path) -> Browser {
    let executable = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| CHROMIUM.to_string());
    assert!(
        Path::new(&executable).exists(),
        "Chromium not found at {executable} (run `make tools`, or set CHROMIUM_BIN)"
    );
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
        .unwrap();
    let (browser, mut handler) = Browser::launch(config)
        .await
        .unwrap_or_else(|err| panic!("launch {executable}: {err}"));
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

async fn text_of(page: &Page, selector: &str) -> String {
    page.find_element(selector)
        .await
        .unwrap_or_else(|err| panic!("{selector}: {err}"))
        .inner_text()
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Types `sms` into the form, submits it with the button, and waits for the
/// verdict to change from `previous`.
async fn check(page: &Page, sms: &str, previous: &str) -> (String, String, String) {
    let field = page.find_element("#sms").await.unwrap();
    field.click().await.unwrap();
    page.evaluate("document.getElementById('sms').value = ''")
        .await
        .unwrap();
    field.type_str(sms).await.unwrap();
    page.find_element("#check")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let verdict = text_of(page, "#verdict").await;
        if !verdict.is_empty() && verdict != previous {
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
async fn sms_page_shows_verdict_version_and_cohort() {
    let (url, stop) = start_service(Version::V2).await;
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(profile.path()).await;

    let page = browser.new_page(url.as_str()).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    assert_eq!(
        page.get_title().await.unwrap().as_deref(),
        Some("SMS checker")
    );

    // ASCII only: the DevTools key table has no '£'.
    let spam = "WINNER!! You have been selected for a 1000 cash prize. Call 09061701461 now to claim, T&C apply";
    let (verdict, version, cohort) = check(&page, spam, "").await;
    assert_eq!(verdict, "spam");
    assert_eq!(version, "v2");
    assert_eq!(cohort, "none", "no gateway, so no cohort header");

    // Behind the gateway the request carries the cohort; the page shows it.
    page.execute(EnableParams::default()).await.unwrap();
    let headers = Headers::new(serde_json::json!({ "x-experiment-cohort": "canary" }));
    page.execute(SetExtraHttpHeadersParams::new(headers))
        .await
        .unwrap();
    let (verdict, version, cohort) =
        check(&page, "Are you coming home for dinner tonight?", "spam").await;
    assert_eq!(verdict, "ham");
    assert_eq!(version, "v2");
    assert_eq!(cohort, "canary");

    // A blank message passes the form's `required` check; the service's
    // 422 message is shown and the previous verdict hidden.
    let field = page.find_element("#sms").await.unwrap();
    page.evaluate("document.getElementById('sms').value = ''")
        .await
        .unwrap();
    field.click().await.unwrap();
    field.type_str("   ").await.unwrap();
    page.find_element("#check")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let error = text_of(&page, "#error").await;
        if !error.is_empty() {
            break error;
        }
        assert!(
            Instant::now() < deadline,
            "no error shown for a blank message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("empty or only whitespace"), "{error}");
    let hidden = page
        .evaluate("document.getElementById('outcome').hidden")
        .await
        .unwrap()
        .into_value::<bool>()
        .unwrap();
    assert!(hidden, "the previous verdict is still shown");

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    let _ = stop.send(());
}
