//! The format-independent content of a report: facts, sections of tables, and the one way
//! numbers are written (4 decimals, `value [low, high]`, `n/a` for undefined). Markdown and HTML
//! renderers only lay this out and escape it.

use candor_results::{Difference, Estimate};

/// A whole report.
pub struct Document {
    /// Page title.
    pub title: String,
    /// The header: what was run and how it was measured.
    pub facts: Vec<Fact>,
    /// The sections, in reading order.
    pub sections: Vec<Section>,
}

/// One `name: value` line of a header or a summary.
pub struct Fact {
    /// What the value is.
    pub name: &'static str,
    /// The value, as shown (data text: renderers escape it).
    pub value: String,
}

/// A titled part of the report.
pub struct Section {
    /// Heading.
    pub title: String,
    /// One sentence on how to read the section; names between backticks are code.
    pub note: String,
    /// Its tables and lists.
    pub blocks: Vec<Block>,
}

/// One piece of a section.
pub enum Block {
    /// A table.
    Table(Table),
    /// A list of facts.
    Facts(Vec<Fact>),
    /// A sentence of text (authored, with backtick code like notes).
    Paragraph(String),
}

/// A table of text cells (data text: renderers escape it).
pub struct Table {
    /// A line above the table.
    pub caption: Option<String>,
    /// Column names.
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

/// A fact whose value is built from data.
pub fn fact(name: &'static str, value: impl Into<String>) -> Fact {
    Fact { name, value: value.into() }
}

/// A number with 4 decimals, or `n/a` when missing or not finite.
pub fn number(value: Option<f64>) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("{:.4}", without_negative_zero(v)),
        None => "n/a".to_string(),
    }
}

/// A signed number with 4 decimals (`+0.0123`, `-0.0123`), or `n/a`.
pub fn signed(value: Option<f64>) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("{:+.4}", without_negative_zero(v)),
        None => "n/a".to_string(),
    }
}

/// 0 for values that print as zero at 4 decimals, so none shows as `-0.0000`.
fn without_negative_zero(value: f64) -> f64 {
    if value.abs() < 0.000_05 {
        0.0
    } else {
        value
    }
}

/// `value [low, high]`, or `value` without an interval, or `n/a`.
pub fn estimate(estimate: &Estimate) -> String {
    with_interval(number(estimate.value), estimate.value, estimate.ci)
}

/// `+difference [low, high]`, or `n/a`.
pub fn difference(difference: &Difference) -> String {
    with_interval(signed(difference.value), difference.value, difference.ci)
}

fn with_interval(shown: String, value: Option<f64>, ci: Option<[f64; 2]>) -> String {
    match (value.filter(|v| v.is_finite()), ci) {
        (Some(_), Some([low, high])) => format!("{shown} [{}, {}]", number(Some(low)), number(Some(high))),
        _ => shown,
    }
}

/// `count (share%)` of `total`, one decimal.
pub fn count_with_share(count: usize, total: usize) -> String {
    if total == 0 {
        return format!("{count} (n/a)");
    }
    format!("{count} ({:.1}%)", 100.0 * count as f64 / total as f64)
}

/// Whether a cell holds a number (or `n/a`): such columns are right-aligned.
pub fn is_numeric(cell: &str) -> bool {
    cell == "n/a" || cell == "not reachable" || cell.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_four_decimals_and_undefined_is_n_a() {
        assert_eq!(number(Some(0.123_45)), "0.1235");
        assert_eq!(number(Some(f64::NAN)), "n/a");
        assert_eq!(number(None), "n/a");
        assert_eq!(signed(Some(-0.01)), "-0.0100");
        assert_eq!(signed(Some(0.02)), "+0.0200");
        assert_eq!(signed(Some(-1e-9)), "+0.0000");
        assert_eq!(number(Some(-0.000_04)), "0.0000");
        assert_eq!(number(Some(-0.000_06)), "-0.0001");
    }

    #[test]
    fn estimates_show_their_interval_only_when_defined() {
        let full = Estimate { value: Some(0.5), ci: Some([0.25, 0.75]) };
        assert_eq!(estimate(&full), "0.5000 [0.2500, 0.7500]");
        assert_eq!(estimate(&Estimate { value: Some(0.5), ci: None }), "0.5000");
        assert_eq!(estimate(&Estimate { value: None, ci: Some([0.1, 0.2]) }), "n/a");
        let d = Difference { a: Some(0.1), b: Some(0.3), value: Some(-0.2), ci: Some([-0.3, -0.1]), fraction_at_most_zero: Some(1.0) };
        assert_eq!(difference(&d), "-0.2000 [-0.3000, -0.1000]");
    }

    #[test]
    fn shares_are_percentages_of_the_total() {
        assert_eq!(count_with_share(3, 60), "3 (5.0%)");
        assert_eq!(count_with_share(0, 0), "0 (n/a)");
    }
}
