//! HTML layout of a report: one self-contained page (inline CSS, inline SVG, no script, no
//! external reference) with the reliability diagrams first — `none` (before) next to `ts`
//! (after) and `resoftmax_ts` (the control) — then the same sections as the Markdown report as
//! HTML tables. Every piece of data text is escaped.

use super::document::{is_numeric, Block, Document, Fact, Table};
use super::sections::HEADLINE_CALIBRATORS;
use super::svg::{reliability_diagram, Series};
use candor_results::CalibrationResults;
use std::fmt::Write;

/// Tables wider than this many characters put intervals on a second line (the headline table and
/// the per-signal tables of every metric), so they fit the page.
const WIDE_TABLE_CHARACTERS: usize = 120;

const STYLE: &str = "\
body{margin:0;background:#fff;color:#1a1a1a;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1400px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:1.6em;margin:0 0 .6em}
h2{font-size:1.2em;margin:1.8em 0 .3em;padding-bottom:.2em;border-bottom:1px solid #ddd}
p.note{color:#444;max-width:80em;margin:.2em 0 .8em}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:.3em 0 1em}
dt{font-weight:600;color:#333}
dd{margin:0}
table{border-collapse:collapse;margin:.3em 0 1.2em;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;color:#333;padding:0 0 .3em;white-space:nowrap}
th,td{padding:3px 10px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top;white-space:nowrap}
.ci{color:#666;font-size:.85em}
.scroll{overflow-x:auto}
th{background:#f4f4f4;border-bottom-color:#bbb}
td.num,th.num{text-align:right}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;background:#f2f2f2;padding:0 .2em;border-radius:3px}
.figures{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;padding:8px 10px;border:1px solid #e4e4e4;border-radius:6px}
figcaption{font-weight:600;margin:0 0 4px;max-width:396px}
svg{display:block}
";

/// Escapes text for HTML content and attribute values.
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

/// The report as one HTML page.
pub fn render(document: &Document, results: &CalibrationResults) -> String {
    let mut body = format!("<h1>{}</h1>\n{}", escape(&document.title), facts(&document.facts));
    body.push_str(&diagrams(results));
    for section in &document.sections {
        let _ = write!(body, "<section>\n<h2>{}</h2>\n<p class=\"note\">{}</p>\n", escape(&section.title), inline(&section.note));
        for block in &section.blocks {
            body.push_str(&match block {
                Block::Table(t) => table(t),
                Block::Facts(list) => facts(list),
                Block::Paragraph(text) => format!("<p>{}</p>\n", inline(text)),
            });
        }
        body.push_str("</section>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} — {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(&document.title),
        escape(&results.run.model),
    )
}

/// Authored text with `code` between backticks.
fn inline(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, piece)| if i % 2 == 1 { format!("<code>{}</code>", escape(piece)) } else { escape(piece) })
        .collect()
}

fn facts(facts: &[Fact]) -> String {
    let items: String = facts
        .iter()
        .map(|f| format!("<dt>{}</dt><dd>{}</dd>\n", escape(f.name), escape(&f.value)))
        .collect();
    format!("<dl>\n{items}</dl>\n")
}

fn table(table: &Table) -> String {
    let split_intervals = inline_width(table) > WIDE_TABLE_CHARACTERS;
    let numeric: Vec<bool> =
        (0..table.header.len()).map(|c| !table.rows.is_empty() && table.rows.iter().all(|r| is_numeric(&r[c]))).collect();
    let mut out = String::from("<div class=\"scroll\"><table>\n");
    if let Some(caption) = &table.caption {
        let _ = writeln!(out, "<caption>{}</caption>", escape(caption));
    }
    out.push_str("<thead><tr>");
    for (name, &right) in table.header.iter().zip(&numeric) {
        let _ = write!(out, "<th{}>{}</th>", class(right), escape(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (value, &right) in row.iter().zip(&numeric) {
            let shown = if split_intervals { cell(value) } else { escape(value) };
            let _ = write!(out, "<td{}>{}</td>", class(right), shown);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    out
}

/// Characters of a table's widest cells, column by column, as if written on one line.
fn inline_width(table: &Table) -> usize {
    (0..table.header.len())
        .map(|c| table.rows.iter().map(|r| &r[c]).chain([&table.header[c]]).map(|s| s.chars().count()).max().unwrap_or(0))
        .sum()
}

/// A cell of a wide table: an interval `value [low, high]` goes on a second, smaller line.
fn cell(value: &str) -> String {
    match value.split_once(" [") {
        Some((estimate, interval)) if interval.ends_with(']') => {
            format!("{}<br><span class=\"ci\">[{}</span>", escape(estimate), escape(interval))
        }
        _ => escape(value),
    }
}

fn class(numeric: bool) -> &'static str {
    if numeric {
        " class=\"num\""
    } else {
        ""
    }
}

/// The diagram section: one figure per headline calibrator that any signal has.
fn diagrams(results: &CalibrationResults) -> String {
    let figures: String = HEADLINE_CALIBRATORS.iter().filter_map(|&name| figure(results, name)).collect();
    if figures.is_empty() {
        return String::new();
    }
    let level = results.settings.level * 100.0;
    format!(
        "<section>\n<h2>Reliability diagrams</h2>\n<p class=\"note\">{}</p>\n<div class=\"figures\">\n{figures}</div>\n</section>\n",
        inline(&format!(
            "Each marker is one non-empty bin of 15 equal-width confidence bins on the test part, at its mean \
             confidence and accuracy with a {level:.0}% Wilson interval; markers below the dashed diagonal are \
             overconfident, and the strip under each plot counts the examples per bin (hover for numbers). \
             `none` is before calibration, `ts` after temperature scaling (the paper's invert-softmax TS on \
             `verbalized`) and `resoftmax_ts` its negative control."
        ))
    )
}

fn figure(results: &CalibrationResults, calibrator: &str) -> Option<String> {
    let series: Vec<Series<'_>> = results
        .signals
        .iter()
        .filter_map(|s| Some(Series { signal: &s.signal, diagram: &results.calibrator(&s.signal, calibrator)?.reliability }))
        .collect();
    if series.is_empty() {
        return None;
    }
    let caption = match calibrator {
        "none" => "before calibration".to_string(),
        "ts" => "after temperature scaling".to_string(),
        "resoftmax_ts" => "control: softmax(p/T)".to_string(),
        other => other.to_string(),
    };
    Some(format!(
        "<figure>\n<figcaption><code>{}</code> — {}</figcaption>\n{}\n</figure>\n",
        escape(calibrator),
        escape(&caption),
        reliability_diagram(&format!("Reliability diagram, {calibrator}: {caption}"), &series)
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{self, AWKWARD_LABEL, CALIBRATED_BINS, LOGITS_NONE_BINS, VERBALIZED_NONE_BINS};
    use super::super::sections;
    use super::*;

    fn page() -> String {
        let results = fixture::results();
        render(&sections::document(&results), &results)
    }

    /// The text of the `index`-th `<svg>` element.
    fn svg(page: &str, index: usize) -> &str {
        let start = page.match_indices("<svg").nth(index).expect("svg").0;
        &page[start..start + page[start..].find("</svg>").unwrap()]
    }

    #[test]
    fn one_svg_per_headline_calibrator_with_one_marker_per_non_empty_bin() {
        let page = page();
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
        // none: verbalized and logits; ts: both; resoftmax_ts: verbalized only.
        let expected = [VERBALIZED_NONE_BINS.len() + LOGITS_NONE_BINS.len(), 2 * CALIBRATED_BINS.len(), CALIBRATED_BINS.len()];
        for (index, markers) in expected.into_iter().enumerate() {
            assert_eq!(svg(&page, index).matches("class=\"point\"").count(), markers, "diagram {index}");
        }
        assert!(svg(&page, 0).contains("<title>Reliability diagram, none: before calibration</title>"));
        assert_eq!(svg(&page, 2).matches("(n = ").count(), 1, "one legend entry without logits");
    }

    #[test]
    fn before_and_after_are_neighbours() {
        let page = page();
        let none = page.find("<code>none</code> — before").unwrap();
        let ts = page.find("<code>ts</code> — after").unwrap();
        assert!(none < ts && !page[none..ts].contains("</div>"), "same row of figures");
    }

    #[test]
    fn data_text_is_escaped() {
        let page = page();
        assert!(!page.contains(AWKWARD_LABEL));
        assert!(page.contains("a&lt;b&amp;&quot;c&quot; ×2"));
        assert!(page.contains("tiny &lt;model&gt; &amp; &quot;co&quot; (llama)"));
        assert!(!page.contains("<model>"));
        assert_eq!(escape("'x'"), "&#39;x&#39;");
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = page();
        for reference in ["http", "src=", "href", "url(", "@import", "<script", "<link"] {
            assert!(!page.contains(reference), "{reference} in the page");
        }
    }

    #[test]
    fn tables_match_the_markdown_cells() {
        let page = page();
        assert!(page.contains(
            "<td>verbalized</td><td>none</td><td class=\"num\">0.1000<br><span class=\"ci\">[0.0800, 0.1200]</span></td>"
        ));
        assert!(page.contains("<td class=\"num\">not reachable</td>"));
        // The narrow threshold table keeps its intervals on the line.
        assert!(page.contains("<td class=\"num\">0.8800 [0.7000, 1.0000]</td>"));
        assert!(page.contains("<p class=\"note\">Each row is one confidence signal"));
        assert_eq!(inline("a `b<` c"), "a <code>b&lt;</code> c");
    }
}
