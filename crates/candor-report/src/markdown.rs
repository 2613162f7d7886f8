//! Markdown layout of a report: a fact list, then per section a heading, its note and GitHub-style
//! tables whose columns are padded so the raw text also reads well in a terminal.
//!
//! Data text (labels, model names, paths) that Markdown could misread is put in a code span, and
//! `|` in table cells is escaped as `\|`, so any label renders as written.

use super::document::{is_numeric, Block, Document, Fact, Table};

/// The report as Markdown.
pub fn render(document: &Document) -> String {
    let mut out = format!("# {}\n\n", document.title);
    out.push_str(&facts(&document.facts));
    out.push_str("\nReliability diagrams are in the HTML report (`candor report --run DIR --format html`).\n");
    for section in &document.sections {
        out.push_str(&format!("\n## {}\n\n{}\n", section.title, section.note));
        for block in &section.blocks {
            out.push('\n');
            out.push_str(&match block {
                Block::Table(table) => self::table(table),
                Block::Facts(list) => facts(list),
                Block::Paragraph(text) => format!("{text}\n"),
            });
        }
    }
    out
}

fn facts(facts: &[Fact]) -> String {
    facts.iter().map(|f| format!("- **{}**: {}\n", f.name, text(&f.value))).collect()
}

fn table(table: &Table) -> String {
    let header: Vec<String> = table.header.iter().map(|h| cell(h)).collect();
    let rows: Vec<Vec<String>> = table.rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].chars().count(), 3]).max().unwrap_or(3))
        .collect();
    let numeric: Vec<bool> = (0..header.len()).map(|c| !rows.is_empty() && rows.iter().all(|r| is_numeric(&r[c]))).collect();
    let mut out = String::new();
    if let Some(caption) = &table.caption {
        out.push_str(&format!("{}\n\n", text(caption)));
    }
    out.push_str(&line(&header, &widths, &numeric));
    let rule: Vec<String> = widths
        .iter()
        .zip(&numeric)
        .map(|(&w, &right)| if right { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(w) })
        .collect();
    out.push_str(&line(&rule, &widths, &numeric));
    for row in &rows {
        out.push_str(&line(row, &widths, &numeric));
    }
    out
}

fn line(cells: &[String], widths: &[usize], numeric: &[bool]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths.iter().zip(numeric))
        .map(|(c, (&w, &right))| if right { format!("{c:>w$}") } else { format!("{c:<w$}") })
        .collect();
    format!("| {} |\n", padded.join(" | "))
}

/// Data text for a table cell.
fn cell(value: &str) -> String {
    text(value).replace('|', "\\|")
}

/// Data text as written: plain when Markdown reads it literally, otherwise a code span.
fn text(value: &str) -> String {
    let risky = value.contains(['`', '*', '<', '>', '&', '\\', '~']) || value.starts_with('_') || value.ends_with('_');
    if risky {
        code_span(value)
    } else {
        value.to_string()
    }
}

/// A code span with a fence longer than any backtick run inside.
fn code_span(value: &str) -> String {
    let longest_run = value.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let pad = if value.starts_with('`') || value.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{value}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::super::{fixture, sections};
    use super::*;

    /// The cells of the table row whose first cells are `keys`, in a Markdown table.
    fn row<'a>(markdown: &'a str, keys: &[&str]) -> Vec<&'a str> {
        markdown
            .lines()
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect::<Vec<_>>())
            .find(|cells| cells.len() > keys.len() && cells[..keys.len()] == *keys)
            .unwrap_or_else(|| panic!("no row {keys:?}"))
    }

    fn markdown() -> String {
        render(&sections::document(&fixture::results()))
    }

    #[test]
    fn the_headline_ece_lands_in_its_row_and_column() {
        let markdown = markdown();
        let header = row(&markdown, &["signal", "calibrator"]);
        let ece_column = header.iter().position(|&h| h == "ece_15_equal_width").unwrap();
        assert_eq!(row(&markdown, &["verbalized", "none"])[ece_column], "0.1234 [0.0987, 0.1500]");
        // Metric i of `none` on logits is 0.50 + i/100: accuracy (i = 0) is 0.5000 ± 0.02.
        assert_eq!(row(&markdown, &["logits", "none"])[2], "0.5000 [0.4800, 0.5200]");
    }

    #[test]
    fn undefined_values_are_n_a() {
        let markdown = markdown();
        let header = row(&markdown, &["signal", "calibrator"]);
        let auroc_column = header.iter().position(|&h| h == "auroc").unwrap();
        assert_eq!(row(&markdown, &["logits", "ts"])[auroc_column], "n/a");
        let comparison = row(&markdown, &["none", "auroc"]);
        assert_eq!(comparison[3..], ["n/a", "0.7000", "n/a", "n/a"]);
    }

    #[test]
    fn differences_are_signed_with_their_interval_and_share() {
        let markdown = markdown();
        assert_eq!(row(&markdown, &["ts", "ece_15_equal_width", "30"])[5..], ["+0.0125 [-0.0375, 0.0625]", "0.9700"]);
        assert_eq!(row(&markdown, &["ts", "-0.0500 [-0.0800, -0.0200]"])[3], "-0.2000 [-0.3000, -0.1000]");
    }

    #[test]
    fn awkward_text_is_a_code_span_and_pipes_are_escaped() {
        let markdown = markdown();
        assert!(markdown.contains("`a<b&\"c\" ×2, anger ×1`"), "{markdown}");
        assert!(markdown.contains("- **model**: `tiny <model> & \"co\" (llama)`"));
        assert_eq!(cell("x|y"), "x\\|y");
        assert_eq!(text("a`b"), "``a`b``");
        assert_eq!(text("`a"), "`` `a ``");
        assert_eq!(text("ece_15_equal_width"), "ece_15_equal_width");
    }

    #[test]
    fn numeric_columns_are_right_aligned_and_padded() {
        let table = Table {
            caption: None,
            header: vec!["name".to_string(), "value".to_string()],
            rows: vec![vec!["a".to_string(), "1.0000".to_string()], vec!["bb".to_string(), "n/a".to_string()]],
        };
        assert_eq!(self::table(&table), "| name |  value |\n| ---- | -----: |\n| a    | 1.0000 |\n| bb   |    n/a |\n");
    }
}
