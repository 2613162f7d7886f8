//! Reading `candor eval` input: one JSON object per line holding a gold `label` and exactly one
//! of `probs` (label → probability), `logits` (label → logit) or `text` (raw model output to be
//! parsed as a verbalized distribution). Every problem is reported with the file and line.

use candor_data::{json_kind, read_bounded_line, MAX_LINE_BYTES};
use crate::error::{bail, invalid, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// What a line carries besides its gold label.
#[derive(Debug, Clone, PartialEq)]
pub enum RowScores {
    /// Label → probability, as given.
    Probs(Vec<(String, f64)>),
    /// Label → logit, as given.
    Logits(Vec<(String, f64)>),
    /// Raw model text holding a verbalized distribution.
    Text(String),
}

impl RowScores {
    fn kind(&self) -> InputKind {
        match self {
            RowScores::Probs(_) => InputKind::Probs,
            RowScores::Logits(_) => InputKind::Logits,
            RowScores::Text(_) => InputKind::Text,
        }
    }
}

/// The kind of scores a whole input file carries (every line must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `probs` lines.
    Probs,
    /// `logits` lines.
    Logits,
    /// `text` lines.
    Text,
}

impl InputKind {
    /// The JSON field that carries this kind.
    pub fn field(self) -> &'static str {
        match self {
            InputKind::Probs => "probs",
            InputKind::Logits => "logits",
            InputKind::Text => "text",
        }
    }
}

/// One example of the input file.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRow {
    /// 1-based line number in the file.
    pub line: usize,
    /// Gold label as written.
    pub label: String,
    /// The scores or text of the example.
    pub scores: RowScores,
}

/// A whole input file: its rows (all of one kind) and where it came from.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Display name of the file, used in error messages.
    pub name: String,
    /// The kind shared by all rows.
    pub kind: InputKind,
    /// The rows, in file order.
    pub rows: Vec<InputRow>,
}

impl InputFile {
    /// Reads and checks the syntax of every line of `path`. Blank lines are skipped.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("{name}: cannot open input file"))?;
        Self::from_reader(&name, BufReader::new(file))
    }

    /// Reads input from any buffered reader; `name` is used in error messages. A UTF-8 byte
    /// order mark and CRLF line ends are accepted (as the dataset readers accept them); a line
    /// longer than [`MAX_LINE_BYTES`] is an error, not an allocation of its whole length.
    pub fn from_reader(name: &str, mut reader: impl BufRead) -> Result<Self> {
        let mut rows: Vec<InputRow> = Vec::new();
        let mut line_no = 0;
        while let Some(text) = next_line(&mut reader, name, line_no + 1)? {
            line_no += 1;
            let text = match line_no {
                1 => text.strip_prefix('\u{feff}').unwrap_or(&text).to_string(),
                _ => text,
            };
            if text.trim().is_empty() {
                continue;
            }
            let (label, scores) = parse_line(&text).with_context(|| format!("{name}:{line_no}"))?;
            if let Some(first) = rows.first() {
                if first.scores.kind() != scores.kind() {
                    bail!(
                        "{name}:{line_no}: this line has `{}` but line {} has `{}`; all lines must carry the same kind",
                        scores.kind().field(),
                        first.line,
                        first.scores.kind().field()
                    );
                }
            }
            rows.push(InputRow { line: line_no, label, scores });
        }
        let Some(first) = rows.first() else {
            bail!("{name}: no examples (the file is empty)");
        };
        Ok(Self { name: name.to_string(), kind: first.scores.kind(), rows })
    }

    /// The label set: `explicit` if given (order kept, duplicates rejected), otherwise the sorted
    /// union of gold labels and of the keys of `probs`/`logits`.
    pub fn label_set(&self, explicit: Option<&[String]>) -> Result<Vec<String>> {
        if let Some(labels) = explicit {
            let mut seen = BTreeSet::new();
            for label in labels {
                if label.trim().is_empty() {
                    bail!("--labels: empty label name");
                }
                if !seen.insert(label.as_str()) {
                    bail!("--labels: label '{label}' is given twice");
                }
            }
            return Ok(labels.to_vec());
        }
        let mut set: BTreeSet<&str> = BTreeSet::new();
        for row in &self.rows {
            set.insert(&row.label);
            if let RowScores::Probs(pairs) | RowScores::Logits(pairs) = &row.scores {
                set.extend(pairs.iter().map(|(k, _)| k.as_str()));
            }
        }
        if set.len() < 2 {
            bail!("{}: only one label ({:?}) appears; pass --labels with the full label set", self.name, set);
        }
        Ok(set.into_iter().map(str::to_string).collect())
    }
}

/// The next line of `reader` without its `\n` or `\r\n` (`None` at the end), read at most
/// [`MAX_LINE_BYTES`] at a time.
fn next_line(reader: &mut impl BufRead, name: &str, line_no: usize) -> Result<Option<String>> {
    let mut bytes = Vec::new();
    match read_bounded_line(reader, &mut bytes).with_context(|| format!("{name}:{line_no}: cannot read line"))? {
        None => return Ok(None),
        Some(Err(())) => bail!("{name}:{line_no}: line longer than {MAX_LINE_BYTES} bytes (one JSON object per line expected)"),
        Some(Ok(())) => {}
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    String::from_utf8(bytes).map(Some).map_err(|_| invalid!("{name}:{line_no}: the line is not UTF-8"))
}

fn parse_line(text: &str) -> Result<(String, RowScores)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let hint = if text.contains("NaN") || text.contains("Infinity") {
            " (NaN and Infinity are not JSON numbers)"
        } else {
            ""
        };
        invalid!("not valid JSON{hint}: {e}")
    })?;
    let Value::Object(object) = value else {
        bail!("expected a JSON object like {{\"label\": ..., \"probs\": {{...}}}}");
    };
    Ok((label_of(&object)?, scores_of(&object)?))
}

fn scores_of(object: &Map<String, Value>) -> Result<RowScores> {
    let present: Vec<&str> = ["probs", "logits", "text"]
        .into_iter()
        .filter(|field| object.contains_key(*field))
        .collect();
    match present.as_slice() {
        ["probs"] => Ok(RowScores::Probs(number_map(object, "probs")?)),
        ["logits"] => Ok(RowScores::Logits(number_map(object, "logits")?)),
        ["text"] => match &object["text"] {
            Value::String(s) => Ok(RowScores::Text(s.clone())),
            other => bail!("field `text` must be a string, found {}", json_kind(other)),
        },
        [] => bail!("missing scores: expected one of the fields `probs`, `logits` or `text`"),
        several => bail!("fields {several:?} given together; expected exactly one of `probs`, `logits` or `text`"),
    }
}

fn label_of(object: &Map<String, Value>) -> Result<String> {
    match object.get("label") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => bail!("field `label` is empty"),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => bail!("field `label` must be a string, found {}", json_kind(other)),
        None => bail!("missing field `label` (the gold label)"),
    }
}

fn number_map(object: &Map<String, Value>, field: &str) -> Result<Vec<(String, f64)>> {
    let Value::Object(map) = &object[field] else {
        bail!("field `{field}` must be an object mapping label to number, found {}", json_kind(&object[field]));
    };
    if map.is_empty() {
        bail!("field `{field}` is empty");
    }
    map.iter()
        .map(|(label, value)| match value.as_f64() {
            Some(x) => Ok((label.clone(), x)),
            None => bail!("{field}[{label:?}] must be a number, found {}", json_kind(value)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_and_crlf_line_ends_are_read_like_the_dataset_readers_read_them() {
        let text = "\u{feff}{\"label\": \"a\", \"probs\": {\"a\": 0.7, \"b\": 0.3}}\r\n\r\n{\"label\": \"b\", \"probs\": {\"a\": 0.2, \"b\": 0.8}}\r\n";
        let input = InputFile::from_reader("in.jsonl", std::io::Cursor::new(text)).unwrap();
        assert_eq!(input.rows.len(), 2);
        assert_eq!((input.rows[0].label.as_str(), input.rows[1].line), ("a", 3));
    }

    #[test]
    fn an_overlong_line_is_an_error_naming_the_line_not_an_allocation() {
        let text = format!("{{\"label\": \"a\", \"probs\": {{\"a\": 1}}}}\n{}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let err = InputFile::from_reader("in.jsonl", std::io::Cursor::new(text)).unwrap_err().to_string();
        assert!(err.contains("in.jsonl:2") && err.contains("longer than"), "{err}");
    }
}
