//! Terminal tables, Markdown and JSON. Tables and Markdown share one layout,
//! drawn by comfy-table with different presets.

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{Cell, CellAlignment, Table, TableStyle, presets};

use super::ReportError;
use super::format::{count, millis, percent};
use super::model::{Report, Role, Verdict};

/// One titled table: header and rows of text, numbers right-aligned.
pub struct Section {
    pub title: &'static str,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub numeric_from: usize,
}

pub fn sections(report: &Report) -> Vec<Section> {
    let role = |r: Option<Role>| r.map_or("-".to_string(), |r| r.to_string());
    let mut out = vec![Section {
        title: "Traffic per version",
        header: [
            "version",
            "role",
            "sidecar requests",
            "service predictions",
            "live share",
            "mirror coverage",
            "errors",
            "error rate",
            "spam ratio",
        ]
        .map(String::from)
        .to_vec(),
        rows: report
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.version.clone(),
                    role(v.role),
                    count(v.sidecar_requests),
                    count(v.predictions),
                    percent(v.live_share),
                    percent(v.mirror_coverage),
                    count(v.errors),
                    percent(v.error_rate),
                    percent(v.spam_ratio),
                ]
            })
            .collect(),
        numeric_from: 2,
    }];
    if !report.version_cohorts.is_empty() {
        out.push(Section {
            title: "Traffic per version and cohort (sidecars)",
            header: [
                "version",
                "role",
                "cohort",
                "requests",
                "errors",
                "spam ratio",
                "mirror coverage",
            ]
            .map(String::from)
            .to_vec(),
            rows: report
                .version_cohorts
                .iter()
                .map(|r| {
                    vec![
                        r.version.clone(),
                        role(r.role),
                        r.cohort.clone(),
                        count(r.requests),
                        count(r.errors),
                        percent(r.spam_ratio),
                        percent(r.mirror_coverage),
                    ]
                })
                .collect(),
            numeric_from: 3,
        });
    }
    if !report.cohorts.is_empty() {
        out.push(Section {
            title: "Traffic per cohort (gateway)",
            header: ["cohort", "requests", "share", "errors", "error rate"]
                .map(String::from)
                .to_vec(),
            rows: report
                .cohorts
                .iter()
                .map(|c| {
                    vec![
                        c.cohort.clone(),
                        count(c.requests),
                        percent(c.share),
                        count(c.errors),
                        percent(c.error_rate),
                    ]
                })
                .collect(),
            numeric_from: 1,
        });
    }
    let thresholds = &report.settings.thresholds_ms;
    let mut header: Vec<String> = ["subject", "source", "role", "count", "p50", "p95", "p99"]
        .map(String::from)
        .to_vec();
    header.extend(thresholds.iter().map(|t| format!("<= {t} ms")));
    out.push(Section {
        title: "Latency (histogram_quantile interpolation)",
        header,
        rows: report
            .latency
            .iter()
            .map(|l| {
                let mut row = vec![
                    l.subject.clone(),
                    l.source.to_string(),
                    role(l.role),
                    count(l.count),
                    millis(l.p50),
                    millis(l.p95),
                    millis(l.p99),
                ];
                row.extend(thresholds.iter().map(|t| {
                    l.under
                        .iter()
                        .find(|u| u.threshold == *t)
                        .map_or("-".to_string(), |u| {
                            format!(
                                "{}{}",
                                percent(Some(u.share)),
                                if u.exact { "" } else { "~" }
                            )
                        })
                }));
                row
            })
            .collect(),
        numeric_from: 3,
    });
    out.push(Section {
        title: "Comparisons",
        header: ["comparison", "check", "source", "outcome", "evidence"]
            .map(String::from)
            .to_vec(),
        rows: report
            .comparisons
            .iter()
            .flat_map(|c| {
                let name = format!(
                    "{} ({} vs {}){}",
                    c.name,
                    c.candidate_versions.join("+"),
                    c.baseline_versions.join("+"),
                    if c.gating { "" } else { ", informative" }
                );
                c.checks.iter().map(move |check| {
                    vec![
                        name.clone(),
                        check.metric.to_string(),
                        check.source.to_string(),
                        // A check that would allow promotion simply passed.
                        match check.outcome {
                            Verdict::Promote => "pass".to_string(),
                            other => other.to_string(),
                        },
                        check.detail.clone(),
                    ]
                })
            })
            .collect(),
        numeric_from: usize::MAX,
    });
    out
}

fn draw(section: &Section, style: TableStyle) -> String {
    let mut table = Table::new();
    table.load_style(style).set_header(section.header.clone());
    for row in &section.rows {
        table.add_row(row.iter().enumerate().map(|(i, text)| {
            let cell = Cell::new(text);
            if i >= section.numeric_from {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table.to_string()
}

fn verdict_line(report: &Report) -> String {
    format!(
        "Verdict: {} (exit code {})",
        report.verdict.to_string().to_uppercase(),
        report.exit_code
    )
}

/// "window 30m ending 2026-11-26T07:00:00Z".
pub fn window_text(report: &Report) -> String {
    let window = Duration::from_secs_f64(report.window.seconds.max(0.0));
    let end = UNIX_EPOCH + Duration::from_secs_f64(report.window.end.max(0.0));
    format!(
        "window {} ending {}",
        humantime::format_duration(window),
        humantime::format_rfc3339_seconds(end)
    )
}

fn window_line(report: &Report) -> String {
    format!(
        "Prometheus {}, {}. `~`: interpolated inside a bucket.",
        report.prometheus,
        window_text(report)
    )
}

pub fn table(report: &Report) -> String {
    let mut out = format!("{}\n\n", window_line(report));
    for section in sections(report) {
        out.push_str(&format!(
            "{}\n{}\n\n",
            section.title,
            draw(&section, presets::UTF8_FULL_CONDENSED)
        ));
    }
    out.push_str(&verdict_line(report));
    out.push('\n');
    out
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!("# Experiment report\n\n{}\n\n", window_line(report));
    for section in sections(report) {
        // A literal `|` inside a cell would split it in Markdown.
        let escaped = Section {
            rows: section
                .rows
                .iter()
                .map(|r| r.iter().map(|c| c.replace('|', "\\|")).collect())
                .collect(),
            ..section
        };
        out.push_str(&format!(
            "## {}\n\n{}\n\n",
            escaped.title,
            draw(&escaped, presets::ASCII_MARKDOWN)
        ));
    }
    out.push_str(&format!("**{}**\n", verdict_line(report)));
    out
}

pub fn json(report: &Report) -> Result<String, ReportError> {
    let mut text = serde_json::to_string_pretty(report).map_err(ReportError::Encode)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::super::analyse;
    use super::super::model::Window;
    use super::super::testdata::{dataset, settings};
    use super::*;

    fn report(errors: f64) -> Report {
        let window = Window {
            start: 0.0,
            end: 600.0,
            seconds: 600.0,
        };
        analyse("http://prom", window, settings(), &dataset(errors, "5"))
    }

    #[test]
    fn table_shows_counts_shares_and_verdict() {
        let text = table(&report(10.0));
        assert!(
            text.contains("window 10m ending 1970-01-01T00:10:00Z"),
            "{text}"
        );
        assert!(text.contains("Traffic per version"));
        assert!(text.contains("90.00%"), "{text}");
        assert!(text.contains("10.00% vs 0.00%"), "{text}");
        assert!(
            text.trim_end()
                .ends_with("Verdict: ROLL BACK (exit code 4)"),
            "{text}"
        );
    }

    #[test]
    fn markdown_is_pipe_tables() {
        let text = markdown(&report(0.0));
        assert!(text.starts_with("# Experiment report"));
        let header = text
            .lines()
            .find(|l| l.starts_with("| version"))
            .expect("a traffic table header");
        assert_eq!(header.matches('|').count(), 10, "{header}");
        assert!(text.contains("|---"), "{text}");
    }

    #[test]
    fn json_round_trips_the_numbers() {
        let value: serde_json::Value = serde_json::from_str(&json(&report(10.0)).unwrap()).unwrap();
        assert_eq!(value["verdict"], "roll_back");
        assert_eq!(value["exit_code"], 4);
        let canary = value["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cohort"] == "canary")
            .unwrap();
        assert_eq!(canary["errors"], 10.0);
        assert_eq!(canary["requests"], 100.0);
        let bins = value["latency"][0]["bins"].as_array().unwrap();
        assert!(
            bins.last().unwrap()["upper"].is_null(),
            "+Inf bucket has no upper bound"
        );
    }
}
