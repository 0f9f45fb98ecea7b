//! The report as a picture: `target/bench/report.svg`, one row per figure, each ratio drawn
//! against its baseline (1x) and its target, so the gaps show at a glance. Plain SVG, no
//! script, readable in any browser or image viewer.

use crate::report::{Line, Section};

const WIDTH: f64 = 1100.0;
const LABEL: f64 = 520.0;
const ROW: f64 = 26.0;
const TOP: f64 = 64.0;
/// The ratio axis: log scale, from 1/8x to 16x.
const MIN_RATIO: f64 = 0.125;
const MAX_RATIO: f64 = 16.0;

/// A ratio's place on the axis.
fn x_of(ratio: f64) -> f64 {
    let span = (MAX_RATIO / MIN_RATIO).log2();
    let at = (ratio.clamp(MIN_RATIO, MAX_RATIO) / MIN_RATIO).log2() / span;
    LABEL + 20.0 + at * (WIDTH - LABEL - 60.0)
}

/// The number a "0.67x throughput" or "<= 2x" starts with (after any comparison sign).
fn leading_number(text: &str) -> Option<f64> {
    let text = text.trim_start_matches(['<', '>', '=', ' ']);
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One row: its label, and its ratio against the target, or what it met, as text.
fn row(out: &mut String, line: &Line, y: f64) {
    let colour = match line.met {
        Some(true) => "#2e7d32",
        Some(false) => "#c62828",
        None => "#555",
    };
    out.push_str(&format!(
        "<text x=\"8\" y=\"{:.0}\" font-size=\"12\">{}</text>\n",
        y + 15.0,
        escape(&line.benchmark)
    ));
    match (leading_number(&line.ratio), line.ratio.contains('x')) {
        (Some(ratio), true) => {
            let (from, to) = (x_of(1.0).min(x_of(ratio)), x_of(1.0).max(x_of(ratio)));
            out.push_str(&format!(
                "<rect x=\"{from:.1}\" y=\"{:.0}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\"><title>{}</title></rect>\n",
                y + 4.0,
                (to - from).max(1.5),
                escape(&format!("{} against {}", line.ours, line.baseline))
            ));
            if let Some(target) = leading_number(&line.target) {
                out.push_str(&format!(
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"#000\" stroke-width=\"2\" stroke-dasharray=\"3,2\"/>\n",
                    y + 1.0,
                    y + 21.0,
                    x = x_of(target)
                ));
            }
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.0}\" font-size=\"11\" fill=\"{colour}\">{}</text>\n",
                to + 6.0,
                y + 15.0,
                escape(&format!("{} (target {})", line.ratio, line.target))
            ));
        }
        _ => {
            let text = if line.target.is_empty() {
                line.ours.clone()
            } else {
                format!("{} (target {})", line.ours, line.target)
            };
            out.push_str(&format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"{colour}\">{}</text>\n",
                LABEL + 20.0,
                y + 15.0,
                escape(&text)
            ));
        }
    }
}

/// The whole report as one SVG document.
pub fn svg(sections: &[Section], machine: &str, quick: bool) -> String {
    let lines: Vec<&Line> = sections.iter().flat_map(|s| &s.lines).collect();
    let height = TOP + ROW * lines.len() as f64 + 40.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
    );
    out.push_str(&format!(
        "<text x=\"8\" y=\"20\" font-size=\"15\" font-weight=\"bold\">namespace-offloading benchmarks{}</text>\n<text x=\"8\" y=\"38\" font-size=\"11\" fill=\"#555\">{}. Bars: ours over the baseline measured in the same run (log scale; the grey line is 1x, a dashed mark the target). Green: target met; red: missed.</text>\n",
        if quick { " (quick run: checks only)" } else { "" },
        escape(machine)
    ));
    // The axis: 1/8x to 16x, the baseline's 1x stronger.
    let bottom = TOP + ROW * lines.len() as f64;
    let mut ratio = MIN_RATIO;
    while ratio <= MAX_RATIO {
        let x = x_of(ratio);
        let (stroke, width) = if ratio == 1.0 {
            ("#888", 2)
        } else {
            ("#ddd", 1)
        };
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{bottom:.0}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>\n<text x=\"{x:.1}\" y=\"{:.0}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">{ratio}x</text>\n",
            TOP - 6.0,
            bottom + 14.0
        ));
        ratio *= 2.0;
    }
    for (i, line) in lines.iter().enumerate() {
        row(&mut out, line, TOP + ROW * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(ratio: &str, target: &str, met: Option<bool>) -> Line {
        Line {
            benchmark: "200 namespaces <offloaded> & Ready".into(),
            ours: "2.68 s".into(),
            baseline: "0.23 s".into(),
            ratio: ratio.into(),
            target: target.into(),
            met,
        }
    }

    #[test]
    fn each_ratio_is_a_bar_against_its_target_and_text_is_escaped() {
        let sections = vec![Section {
            name: "offloading-scale".into(),
            lines: vec![
                line("11.71x time", "<= 2x", Some(false)),
                line("0.95x throughput", ">= 0.9x", Some(true)),
                line("", "<= 64 MiB", Some(true)),
                line("", "", None),
            ],
            figures: serde_json::Value::Null,
        }];
        let svg = svg(&sections, "2 cores", false);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two bars (the background is the one other rect), two target marks.
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(svg.contains("#c62828") && svg.contains("#2e7d32"));
        assert!(svg.contains("&lt;offloaded&gt; &amp; Ready"));
        assert!(!svg.contains("<offloaded>"));
        // The missed one ends right of the 2x target, the met one right of 0.9x.
        assert!(x_of(11.71) > x_of(2.0) && x_of(0.95) > x_of(0.9));
    }

    #[test]
    fn numbers_are_read_after_the_comparison() {
        assert_eq!(leading_number("<= 2x"), Some(2.0));
        assert_eq!(leading_number(">= 0.9x"), Some(0.9));
        assert_eq!(leading_number("0.67x throughput"), Some(0.67));
        assert_eq!(leading_number("< 10 MiB"), Some(10.0));
        assert_eq!(leading_number(""), None);
    }
}
