//! `meshctl report` against a real Prometheus scraping two in-test exporters
//! whose exposition text moves through three phases (baseline, traffic, a
//! restarted gateway), so the expected counts are known exactly; the HTML
//! page parsed for its SVG bars and rendered by headless Chromium.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use scraper::{Html, Selector};
use serde_json::Value;
use sms_checker_tests::free_port;
use sms_checker_tests::report::{Exporter, Prometheus, chromium_bin, meshctl_bin, now, report_row};

const MS_BOUNDS: [&str; 8] = ["0.5", "1", "5", "10", "25", "50", "100", "+Inf"];

/// Cumulative `_bucket` lines from per-bin counts (one count per bound).
fn buckets(name: &str, labels: &str, bounds: &[&str], per_bin: &[u64]) -> String {
    let mut cumulative = 0;
    let mut out = format!("# TYPE {name} histogram\n");
    for (le, n) in bounds.iter().zip(per_bin) {
        cumulative += n;
        out.push_str(&format!(
            "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!("{name}_count{{{labels}}} {cumulative}\n"));
    out
}

fn counter(name: &str, series: &[(&str, u64)]) -> String {
    let mut out = format!("# TYPE {name} counter\n");
    for (labels, value) in series {
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
    out
}

const V1_HAM: &str =
    r#"version="v1",cohort="stable",response_class="2xx",prediction="ham",mirrored="false""#;
const V1_SPAM: &str =
    r#"version="v1",cohort="stable",response_class="2xx",prediction="spam",mirrored="false""#;
const V2_HAM: &str =
    r#"version="v2",cohort="canary",response_class="2xx",prediction="ham",mirrored="false""#;
const V2_SPAM: &str =
    r#"version="v2",cohort="canary",response_class="2xx",prediction="spam",mirrored="false""#;
const V3_HAM: &str =
    r#"version="v3",cohort="stable",response_class="2xx",prediction="ham",mirrored="true""#;
const V3_SPAM: &str =
    r#"version="v3",cohort="canary",response_class="2xx",prediction="spam",mirrored="true""#;

/// Exporter A: the gateway, v1's first pod, v2, and v1's model-service.
/// `phase` 0 is the baseline before the window, 1 after the traffic, 2 after
/// the gateway restarted (its stable counter back near zero).
fn exporter_a(phase: u8) -> String {
    let (gateway_stable, canary_ok, canary_5xx) = match phase {
        0 => (2000, 100, None),
        1 => (2800, 190, Some(10)),
        _ => (100, 190, Some(10)),
    };
    let traffic = phase > 0;
    let pick = |before: u64, after: u64| if traffic { after } else { before };
    let mut gateway = vec![
        (r#"cohort="stable",response_class="2xx""#, gateway_stable),
        (r#"cohort="canary",response_class="2xx""#, canary_ok),
    ];
    // The 5xx series is born inside the window: it counts from zero.
    if let Some(n) = canary_5xx {
        gateway.push((r#"cohort="canary",response_class="5xx""#, n));
    }
    let zero_or = |bins: [u64; 8]| if traffic { bins } else { [0; 8] };
    let mut text = counter("sms_cohort_requests_total", &gateway);
    text += &counter(
        "sms_model_requests_total",
        &[
            (V1_HAM, pick(400, 400 + 783)),
            (V2_HAM, pick(40, 40 + 78)),
            (V2_SPAM, pick(5, 5 + 12)),
        ],
    );
    text += &buckets(
        "sms_cohort_request_duration_milliseconds",
        r#"cohort="stable""#,
        &MS_BOUNDS,
        &zero_or([0, 0, 900, 0, 0, 0, 0, 0]),
    );
    // The canary: its 10 aborts answered fast, the rest slower than stable.
    text += &buckets(
        "sms_cohort_request_duration_milliseconds",
        r#"cohort="canary""#,
        &MS_BOUNDS,
        &zero_or([0, 10, 0, 0, 90, 0, 0, 0]),
    );
    text += &buckets(
        "sms_model_request_duration_milliseconds",
        r#"version="v1",mirrored="false""#,
        &MS_BOUNDS,
        &zero_or([0, 200, 500, 0, 0, 0, 0, 0]),
    );
    text += &counter(
        "model_predictions_total",
        &[
            (r#"result="ham",version="v1""#, pick(400, 400 + 783)),
            (r#"result="spam",version="v1""#, pick(60, 60 + 117)),
        ],
    );
    let seconds = if traffic { [500, 900, 900] } else { [0, 0, 0] };
    text += &buckets(
        "model_prediction_latency_seconds",
        r#"version="v1""#,
        &["0.001", "0.005", "+Inf"],
        &[seconds[0], seconds[1] - seconds[0], seconds[2] - seconds[1]],
    );
    text
}

/// Exporter B: v1's second pod (the spam answers) and the shadow v3.
fn exporter_b(phase: u8) -> String {
    let traffic = phase > 0;
    let pick = |before: u64, after: u64| if traffic { after } else { before };
    let mut text = counter(
        "sms_model_requests_total",
        &[
            (V1_SPAM, pick(60, 60 + 117)),
            (V3_HAM, pick(300, 300 + 860)),
            (V3_SPAM, pick(30, 30 + 130)),
        ],
    );
    text += &buckets(
        "sms_model_request_duration_milliseconds",
        r#"version="v1",mirrored="false""#,
        &MS_BOUNDS,
        &if traffic {
            [0, 100, 100, 0, 0, 0, 0, 0]
        } else {
            [0; 8]
        },
    );
    text
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(meshctl_bin())
        .arg("report")
        .args(args)
        .output()
        .expect("run meshctl report")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The report of a window that the test fully controls.
struct Scenario {
    prometheus: Prometheus,
    window: String,
    end: String,
    _exporters: (Exporter, Exporter),
}

/// Timestamp of the first sample of `series` (one series) equal to `value`.
fn first_sample_with(prometheus: &Prometheus, series: &str, value: f64) -> f64 {
    let result = prometheus.query(&format!("{series}[5m]"), None);
    let samples = result
        .first()
        .and_then(|r| r["values"].as_array())
        .unwrap_or_else(|| panic!("no samples of {series}: {result:?}"));
    samples
        .iter()
        .find(|s| s[1].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(value))
        .and_then(|s| s[0].as_f64())
        .unwrap_or_else(|| panic!("no sample of {series} equal to {value}: {samples:?}"))
}

fn scenario(dir: &Path) -> Scenario {
    let a = Exporter::start(&exporter_a(0));
    let b = Exporter::start(&exporter_b(0));
    let prometheus = Prometheus::start(dir, &[a.port, b.port]);
    let gateway = r#"sum(sms_cohort_requests_total{cohort="stable"})"#;
    let shadow = r#"sum(sms_model_requests_total{version="v3"})"#;
    prometheus.wait_for_value(gateway, 2000.0);
    prometheus.wait_for_value(shadow, 330.0);
    a.serve(&exporter_a(1));
    b.serve(&exporter_b(1));
    prometheus.wait_for_value(gateway, 2800.0);
    prometheus.wait_for_value(shadow, 330.0 + 990.0);
    // The window starts just before the first sample of the traffic phase,
    // as Prometheus stamped it (scrapes are 1 s apart, so 10 ms before it
    // only baseline samples lie earlier, even after rounding to ms).
    let start = [
        (r#"sms_cohort_requests_total{cohort="stable"}"#, 2800.0),
        (
            r#"sms_model_requests_total{version="v3",prediction="ham"}"#,
            1160.0,
        ),
    ]
    .into_iter()
    .map(|(series, value)| first_sample_with(&prometheus, series, value))
    .fold(f64::INFINITY, f64::min)
        - 0.01;
    a.serve(&exporter_a(2));
    prometheus.wait_for_value(gateway, 100.0);
    let end = now();
    Scenario {
        prometheus,
        window: format!("{}ms", ((end - start) * 1000.0).round() as u64),
        end: format!("{end:.3}"),
        _exporters: (a, b),
    }
}

#[test]
fn report_counts_and_verdict_match_the_scraped_data_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = scenario(dir.path());
    let html_path = dir.path().join("report.html");
    let window = [
        "--prometheus",
        &s.prometheus.url,
        "--window",
        &s.window,
        "--end",
        &s.end,
    ];
    let mut common = window.to_vec();
    common.extend(["--min-requests", "50"]);
    let mut args = common.to_vec();
    args.extend([
        "--format",
        "json",
        "--html",
        html_path.to_str().expect("utf-8 path"),
    ]);
    let output = meshctl(&args);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(4),
        "roll back expected: {text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));

    // Traffic: increases summed over both exporters' `instance` labels.
    let versions = &report["versions"];
    let v1 = report_row(versions, &[("version", "v1")]);
    assert_eq!(v1["sidecar_requests"], 900.0, "{v1}");
    assert_eq!(v1["predictions"], 900.0, "{v1}");
    assert!(close(v1["spam_ratio"].as_f64().unwrap(), 0.13), "{v1}");
    assert!(close(v1["live_share"].as_f64().unwrap(), 900.0 / 990.0));
    let v2 = report_row(versions, &[("version", "v2")]);
    assert_eq!(v2["sidecar_requests"], 90.0, "{v2}");
    let v3 = report_row(versions, &[("version", "v3")]);
    assert_eq!(
        (v3["role"].as_str(), v3["mirrored_requests"].as_f64()),
        (Some("shadow"), Some(990.0))
    );
    assert!(close(v3["mirror_coverage"].as_f64().unwrap(), 1.0), "{v3}");

    // Per version and cohort: v3 mirrors 860 of stable's 900 requests.
    let v3_stable = report_row(
        &report["version_cohorts"],
        &[("version", "v3"), ("cohort", "stable")],
    );
    assert_eq!(v3_stable["requests"], 860.0);
    assert!(close(
        v3_stable["mirror_coverage"].as_f64().unwrap(),
        860.0 / 900.0
    ));

    // The gateway restarted (2800 -> 100): 800 before + 100 after.
    let cohorts = &report["cohorts"];
    let stable = report_row(cohorts, &[("cohort", "stable")]);
    assert_eq!(stable["requests"], 900.0, "{stable}");
    let canary = report_row(cohorts, &[("cohort", "canary")]);
    assert_eq!(
        (canary["requests"].as_f64(), canary["errors"].as_f64()),
        (Some(100.0), Some(10.0))
    );

    // Latency: the report's quantiles equal Prometheus's own
    // histogram_quantile on the same buckets (they started at zero).
    let row = |subject: &str, source: &str| {
        report_row(
            &report["latency"],
            &[("subject", subject), ("source", source)],
        )
    };
    let end: f64 = s.end.parse().expect("end");
    for (q, key) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let query = format!(
            r#"histogram_quantile({q}, sum by (le) (sms_model_request_duration_milliseconds_bucket{{version="v1"}}))"#
        );
        let expected = s.prometheus.value(&query, Some(end)).expect("a quantile");
        let got = row("v1", "sidecar")[key].as_f64().expect("a number");
        assert!(
            close(got, expected),
            "{key}: report {got}, Prometheus {expected}"
        );
        let query = format!(
            r#"histogram_quantile({q}, sum by (le) (model_prediction_latency_seconds_bucket{{version="v1"}}))"#
        );
        let expected = s.prometheus.value(&query, Some(end)).expect("a quantile") * 1000.0;
        let got = row("v1", "service")[key].as_f64().expect("a number");
        assert!(
            close(got, expected),
            "service {key}: report {got}, Prometheus {expected}"
        );
    }
    assert_eq!(row("v1", "sidecar")["count"], 900.0);

    // The verdict and the evidence behind it.
    assert_eq!(report["verdict"], "roll_back");
    let checks = &report["comparisons"][0]["checks"];
    let errors = report_row(checks, &[("metric", "error_rate")]);
    assert_eq!(
        (errors["source"].as_str(), errors["outcome"].as_str()),
        (Some("gateway"), Some("roll_back"))
    );
    assert_eq!(errors["rates"]["candidate_rate"], 0.1);
    assert_eq!(errors["rates"]["baseline_rate"], 0.0);
    let slow = report_row(checks, &[("metric", "latency")]);
    assert_eq!(slow["outcome"], "roll_back", "{slow}");
    // 90 of the canary's 100 above all 900 stable ones, 10 below: A = 0.9.
    assert!(
        close(slow["latency"]["test"]["a"].as_f64().unwrap(), 0.9),
        "{slow}"
    );

    // The same window as terminal tables and Markdown.
    let table = meshctl(&common);
    assert_eq!(table.status.code(), Some(4));
    let table = stdout(&table);
    assert!(table.contains("10.00% vs 0.00%"), "{table}");
    assert!(
        table.contains("Verdict: ROLL BACK (exit code 4)"),
        "{table}"
    );
    let mut md_args = common.to_vec();
    md_args.extend(["--format", "markdown"]);
    let markdown = stdout(&meshctl(&md_args));
    assert!(markdown.contains("| v1 "), "{markdown}");
    assert!(
        markdown.contains("**Verdict: ROLL BACK (exit code 4)**"),
        "{markdown}"
    );

    // Clear evidence needs no minimum sample: 10 errors in 100 canary
    // requests against none in 900 still roll back when 5,000 per arm are
    // asked for...
    let mut strict = window.to_vec();
    strict.extend(["--min-requests", "5000"]);
    assert_eq!(meshctl(&strict).status.code(), Some(4));
    // ... while the shadow, with no evidence against it, waits for them.
    strict.extend(["--gate", "shadow"]);
    assert_eq!(meshctl(&strict).status.code(), Some(5));

    check_html_svg(&html_path);
    check_html_screenshot(&html_path, dir.path());
}

/// The SVG bars carry the counts Prometheus holds.
fn check_html_svg(path: &Path) {
    let html = std::fs::read_to_string(path).expect("read the HTML report");
    let document = Html::parse_document(&html);
    let selector = |s: &str| Selector::parse(s).unwrap_or_else(|e| panic!("selector {s}: {e:?}"));
    let bins = |subject: &str, source: &str| -> BTreeMap<String, f64> {
        let svg = document
            .select(&selector(&format!(
                r#"svg.histogram[data-subject="{subject}"][data-source="{source}"]"#
            )))
            .next()
            .unwrap_or_else(|| panic!("no histogram for {subject}/{source}"));
        svg.select(&selector("rect.bin"))
            .map(|rect| {
                let attr = |name: &str| rect.value().attr(name).unwrap_or_default().to_string();
                (
                    attr("data-le"),
                    attr("data-count").parse().expect("a count"),
                )
            })
            .collect()
    };
    let v1 = bins("v1", "sidecar");
    // Buckets up to 10 ms, then the empty rest merged into one open bar.
    assert_eq!(v1.len(), 5, "{v1:?}");
    assert_eq!(
        (v1["0.5"], v1["1"], v1["5"], v1["10"], v1["+Inf"]),
        (0.0, 300.0, 600.0, 0.0, 0.0)
    );
    let canary = bins("canary", "gateway");
    assert_eq!((canary["1"], canary["25"]), (10.0, 90.0));
    let service = bins("v1", "service");
    assert_eq!(
        (service["1"], service["5"]),
        (500.0, 400.0),
        "seconds shown as ms"
    );
    let shares: BTreeMap<String, String> = document
        .select(&selector("svg.traffic rect.share"))
        .map(|r| {
            (
                r.value()
                    .attr("data-version")
                    .unwrap_or_default()
                    .to_string(),
                r.value()
                    .attr("data-requests")
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(shares.get("v1").map(String::as_str), Some("900"));
    assert_eq!(shares.get("v2").map(String::as_str), Some("90"));
    let verdict = document
        .select(&selector(".verdict"))
        .next()
        .expect("a verdict badge");
    assert_eq!(verdict.value().attr("data-verdict"), Some("roll_back"));
}

/// Headless Chromium renders the page; the screenshot holds the bars' blue.
fn check_html_screenshot(path: &Path, dir: &Path) {
    let screenshot = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let output = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("run chromium");
    assert!(
        screenshot.exists(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&screenshot).expect("open the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG buffer size")];
    let info = reader.next_frame(&mut pixels).expect("decode the PNG");
    assert_eq!((info.width, info.height), (1200, 900));
    let channels = info.color_type.samples();
    // #4269d0, the histogram bars' fill.
    let blue = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[0].abs_diff(0x42) < 8 && p[1].abs_diff(0x69) < 8 && p[2].abs_diff(0xd0) < 8)
        .count();
    assert!(
        blue > 2000,
        "only {blue} bar-coloured pixels in the screenshot"
    );
}

#[test]
fn failures_of_the_tool_are_not_verdicts() {
    // Nothing listens on a fresh free port: a connection error, exit 1.
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = meshctl(&["--prometheus", &url, "--timeout", "2"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach Prometheus"), "{stderr}");
    // Bad input is a usage error (clap's exit 2) with a clear message.
    for (args, message) in [
        (&["--window", "5x"][..], "not a duration"),
        (&["--confidence", "1.5"][..], "strictly between 0 and 1"),
        (&["--role", "v2"][..], "VERSION=ROLE"),
        (&["--prometheus", "localhost:9090"][..], "http://"),
    ] {
        let output = meshctl(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
