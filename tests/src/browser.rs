//! Headless Chromium (Debian's `/usr/bin/chromium`) over the DevTools
//! protocol, and the moves a person makes on the `/sms` page.

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::Page;
use futures::StreamExt;

use crate::tool;

/// Starts Chromium with a fresh profile in `profile`, resolving each of
/// `hosts` to 127.0.0.1 (as an /etc/hosts line would). The flags keep it
/// off the network (its background fetches would only be refused here).
pub async fn launch(profile: &Path, hosts: &[&str]) -> Browser {
    let executable = tool("CHROMIUM_BIN", "/usr/bin/chromium");
    let rules: Vec<String> = hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
    let mut builder = BrowserConfig::builder();
    if !rules.is_empty() {
        builder = builder.arg(("host-resolver-rules", rules.join(",").as_str()));
    }
    let config = builder
        .chrome_executable(&executable)
        .no_sandbox()
        .user_data_dir(profile)
        // chromiumoxide adds the leading `--` to each switch.
        .args([
            "disable-gpu",
            "disable-background-networking",
            "disable-component-update",
            "disable-sync",
            "no-first-run",
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

/// The visible text of the element `selector` ("" when empty).
pub async fn text_of(page: &Page, selector: &str) -> String {
    page.find_element(selector)
        .await
        .unwrap_or_else(|err| panic!("{selector}: {err}"))
        .inner_text()
        .await
        .expect("inner text")
        .unwrap_or_default()
}

/// Waits until `selector` shows some text and returns it.
pub async fn wait_for_text(page: &Page, selector: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = text_of(page, selector).await;
        if !text.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the `/sms` page shows after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: String,
    pub version: String,
    pub cohort: String,
}

/// Types `sms` into the page's form (as keystrokes, after clearing it) and
/// presses the button.
pub async fn type_and_submit(page: &Page, sms: &str) {
    page.evaluate("document.getElementById('verdict').textContent = ''")
        .await
        .expect("clear the verdict");
    let field = page.find_element("#sms").await.expect("#sms field");
    field.click().await.expect("focus");
    page.evaluate("document.getElementById('sms').value = ''")
        .await
        .expect("clear the field");
    field.type_str(sms).await.expect("type");
    page.find_element("#check")
        .await
        .expect("#check")
        .click()
        .await
        .expect("click");
}

/// Submits `sms` and returns the verdict once the page shows it; fails if the
/// page shows an error instead.
pub async fn check_sms(page: &Page, sms: &str) -> Verdict {
    type_and_submit(page, sms).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = text_of(page, "#verdict").await;
        if !result.is_empty() {
            return Verdict {
                result,
                version: text_of(page, "#version").await,
                cohort: text_of(page, "#cohort").await,
            };
        }
        let error = text_of(page, "#error").await;
        assert!(error.is_empty(), "the page shows an error: {error}");
        assert!(Instant::now() < deadline, "no verdict shown for {sms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
