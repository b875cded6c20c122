//! The self-contained HTML page: the report's tables, the live traffic split
//! and mirror coverage as SVG bars, and one SVG histogram per latency row.
//! Every bar carries its numbers in `data-*` attributes so the page can be
//! checked by a parser, not only by eye.

use std::fmt::Write;

use super::format::{count, millis, percent};
use super::model::{BinCount, Latency, Report, Verdict};
use super::render::{self, Section};

/// Text and attribute escaping for HTML and inline SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const PALETTE: [&str; 6] = [
    "#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#a463f2", "#97bbf5",
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0 20px}\
th,td{border:1px solid #ccc;padding:3px 8px}td.n{text-align:right}\
th{background:#f3f3f3}.verdict{display:inline-block;padding:6px 14px;border-radius:4px;\
font-weight:bold;color:#fff}.promote{background:#2e7d32}.hold{background:#f9a825}\
.roll_back{background:#c62828}.insufficient_data{background:#616161}\
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}\
figcaption{font-weight:bold}svg text{font-size:11px;fill:#333}";

fn verdict_class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Promote => "promote",
        Verdict::Hold => "hold",
        Verdict::RollBack => "roll_back",
        Verdict::InsufficientData => "insufficient_data",
    }
}

fn table(section: &Section) -> String {
    let mut out = format!("<h2>{}</h2>\n<table>\n<tr>", escape(section.title));
    for h in &section.header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in &section.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i >= section.numeric_from {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Live traffic split as one stacked bar, and each shadow's mirror coverage
/// as a bar against 100 %.
fn traffic_svg(report: &Report) -> String {
    const WIDTH: f64 = 600.0;
    let live: Vec<_> = report
        .versions
        .iter()
        .filter(|v| v.live_share.is_some())
        .collect();
    let shadows: Vec<_> = report
        .versions
        .iter()
        .filter(|v| v.mirror_coverage.is_some())
        .collect();
    let height = 80 + 34 * shadows.len();
    let mut out = format!(
        "<svg class=\"traffic\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"live traffic share per version\">",
        WIDTH + 240.0
    );
    let _ = write!(out, "<text x=\"0\" y=\"14\">live traffic share</text>");
    let mut x = 0.0;
    for (i, v) in live.iter().enumerate() {
        let share = v.live_share.unwrap_or(0.0);
        let w = share * WIDTH;
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            "<rect class=\"share\" data-version=\"{}\" data-requests=\"{}\" data-share=\"{share}\" x=\"{x:.2}\" y=\"20\" width=\"{w:.2}\" height=\"22\" fill=\"{colour}\"><title>{}: {} requests, {}</title></rect>",
            escape(&v.version),
            v.sidecar_requests,
            escape(&v.version),
            count(v.sidecar_requests),
            percent(Some(share)),
        );
        // The legend under the bar names every version, even a thin slice.
        let lx = 150.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"48\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"57\">{} {} ({})</text>",
            lx + 14.0,
            escape(&v.version),
            percent(Some(share)),
            count(v.sidecar_requests),
        );
        x += w;
    }
    for (i, v) in shadows.iter().enumerate() {
        let coverage = v.mirror_coverage.unwrap_or(0.0);
        let y = 72.0 + 34.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"0\" y=\"{y}\" width=\"{WIDTH}\" height=\"18\" fill=\"#eee\"/>\
             <rect class=\"mirror\" data-version=\"{}\" data-requests=\"{}\" data-coverage=\"{coverage}\" x=\"0\" y=\"{y}\" width=\"{:.2}\" height=\"18\" fill=\"#a463f2\"/>\
             <text x=\"{}\" y=\"{:.0}\">{} mirror coverage {}</text>",
            escape(&v.version),
            v.sidecar_requests,
            coverage.min(1.0) * WIDTH,
            WIDTH + 6.0,
            y + 13.0,
            escape(&v.version),
            percent(Some(coverage)),
        );
    }
    out.push_str("</svg>");
    out
}

fn bound(value: f64) -> String {
    format!("{value}")
}

/// A bucket bound as an axis label: ms below a second, then s, m, h.
fn axis_label(ms: f64) -> String {
    match ms {
        v if v >= 3_600_000.0 => format!("{}h", v / 3_600_000.0),
        v if v >= 60_000.0 => format!("{}m", v / 60_000.0),
        v if v >= 1_000.0 => format!("{}s", v / 1_000.0),
        v => format!("{v}"),
    }
}

/// The bars to draw: every bucket up to the last finite one holding
/// observations, one empty bucket after it for context, and the rest (up to
/// an hour with Envoy's default buckets) merged into one open-ended tail
/// bar. Counts stay exact; only empty resolution is dropped.
pub fn display_bins(bins: &[BinCount]) -> Vec<BinCount> {
    let last_used = bins
        .iter()
        .rposition(|b| b.upper.is_some() && b.count > 0.0)
        .map_or(0, |i| i + 1);
    let keep = (last_used + 1).min(bins.len().saturating_sub(1));
    let mut out: Vec<BinCount> = bins[..keep].to_vec();
    if let Some(first_tail) = bins.get(keep) {
        out.push(BinCount {
            lower: first_tail.lower,
            upper: None,
            count: bins[keep..].iter().map(|b| b.count).sum(),
        });
    }
    out
}

/// One bar per bucket, equal widths (bucket bounds are roughly geometric, so
/// a linear axis would squash the interesting ones), heights by count.
fn histogram_svg(latency: &Latency) -> String {
    const BAR: f64 = 34.0;
    const PLOT: f64 = 140.0;
    let bins = display_bins(&latency.bins);
    let max = bins.iter().map(|b| b.count).fold(0.0_f64, f64::max);
    // Wide enough for the quantile caption under few buckets.
    let width = (80.0 + BAR * bins.len() as f64).max(320.0);
    let mut out = format!(
        "<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" data-subject=\"{}\" data-source=\"{}\" data-count=\"{}\" width=\"{width:.0}\" height=\"{}\" role=\"img\" aria-label=\"latency histogram of {} ({})\">",
        escape(&latency.subject),
        latency.source,
        latency.count,
        PLOT + 50.0,
        escape(&latency.subject),
        latency.source,
    );
    let _ = write!(
        out,
        "<line x1=\"30\" y1=\"{PLOT}\" x2=\"{width:.0}\" y2=\"{PLOT}\" stroke=\"#999\"/>"
    );
    for (i, bin) in bins.iter().enumerate() {
        let h = if max > 0.0 {
            bin.count / max * (PLOT - 20.0)
        } else {
            0.0
        };
        let x = 32.0 + BAR * i as f64;
        let upper = bin.upper.map_or("+Inf".to_string(), bound);
        let _ = write!(
            out,
            "<rect class=\"bin\" data-lower=\"{}\" data-le=\"{upper}\" data-count=\"{}\" x=\"{x:.1}\" y=\"{:.2}\" width=\"{:.1}\" height=\"{h:.2}\" fill=\"#4269d0\"><title>({}, {upper}] ms: {}</title></rect>",
            bound(bin.lower),
            bin.count,
            PLOT - h,
            BAR - 4.0,
            bound(bin.lower),
            count(bin.count),
        );
        if bin.count > 0.0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.2}\" text-anchor=\"middle\">{}</text>",
                x + (BAR - 4.0) / 2.0,
                PLOT - h - 3.0,
                count(bin.count)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + (BAR - 4.0) / 2.0,
            PLOT + 14.0,
            escape(
                &bin.upper
                    .map_or(format!(">{}", axis_label(bin.lower)), axis_label)
            )
        );
    }
    let _ = write!(
        out,
        "<text x=\"30\" y=\"{}\">le (ms); p50 {}, p95 {}, p99 {}</text></svg>",
        PLOT + 36.0,
        millis(latency.p50),
        millis(latency.p95),
        millis(latency.p99),
    );
    out
}

pub fn page(report: &Report) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>Experiment report: {}</title>", report.verdict);
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        out,
        "<h1>Experiment report</h1>\n<p>Prometheus {}, {}.</p>",
        escape(&report.prometheus),
        escape(&render::window_text(report)),
    );
    let _ = writeln!(
        out,
        "<p><span class=\"verdict {}\" data-verdict=\"{}\">{} (exit code {})</span></p>",
        verdict_class(report.verdict),
        verdict_class(report.verdict),
        escape(&report.verdict.to_string().to_uppercase()),
        report.exit_code
    );
    out.push_str("<h2>Traffic</h2>\n");
    out.push_str(&traffic_svg(report));
    out.push_str("\n<h2>Latency histograms</h2>\n<div class=\"charts\">\n");
    for latency in &report.latency {
        let _ = writeln!(
            out,
            "<figure><figcaption>{} ({}, {} requests)</figcaption>{}</figure>",
            escape(&latency.subject),
            latency.source,
            count(latency.count),
            histogram_svg(latency)
        );
    }
    out.push_str("</div>\n");
    for section in render::sections(report) {
        out.push_str(&table(&section));
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::analyse;
    use super::super::model::Window;
    use super::super::testdata::{dataset, settings};
    use super::*;

    fn bin(lower: f64, upper: Option<f64>, count: f64) -> BinCount {
        BinCount {
            lower,
            upper,
            count,
        }
    }

    #[test]
    fn empty_tail_buckets_merge_into_one_bar() {
        let bins = vec![
            bin(0.0, Some(1.0), 5.0),
            bin(1.0, Some(5.0), 0.0),
            bin(5.0, Some(10.0), 2.0),
            bin(10.0, Some(25.0), 0.0),
            bin(25.0, Some(50.0), 0.0),
            bin(50.0, Some(3_600_000.0), 0.0),
            bin(3_600_000.0, None, 1.0),
        ];
        let shown = display_bins(&bins);
        let summary: Vec<_> = shown.iter().map(|b| (b.lower, b.upper, b.count)).collect();
        assert_eq!(
            summary,
            vec![
                (0.0, Some(1.0), 5.0),
                (1.0, Some(5.0), 0.0),
                (5.0, Some(10.0), 2.0),
                (10.0, Some(25.0), 0.0),
                (25.0, None, 1.0),
            ]
        );
        // Nothing to trim: unchanged.
        let short = vec![bin(0.0, Some(1.0), 1.0), bin(1.0, None, 1.0)];
        assert_eq!(display_bins(&short).len(), 2);
        assert_eq!(axis_label(2500.0), "2.5s");
        assert_eq!(axis_label(3_600_000.0), "1h");
        assert_eq!(axis_label(0.5), "0.5");
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn page_holds_one_bar_per_bucket_with_its_count() {
        let window = Window {
            start: 0.0,
            end: 60.0,
            seconds: 60.0,
        };
        let report = analyse("http://p?a=<b>", window, settings(), &dataset(0.0, "25"));
        let html = page(&report);
        assert!(html.contains("http://p?a=&lt;b&gt;"));
        assert!(html.contains("data-verdict=\"roll_back\""));
        assert_eq!(
            html.matches("<svg class=\"histogram\"").count(),
            report.latency.len()
        );
        assert!(html.contains("data-version=\"v1\" data-requests=\"900\" data-share=\"0.9\""));
        assert!(
            html.contains("data-le=\"25\" data-count=\"100\""),
            "canary bar"
        );
        assert!(html.contains("class=\"mirror\" data-version=\"v3\""));
    }
}
