//! Verbalized-distribution parsing: turns a model's free text ("Answer: joy\n{'joy': 0.7, ...}")
//! into a probability distribution over a known, ordered label set, with a status that says how
//! much repair was needed.
//!
//! # Rules
//!
//! * **Where the dictionary is.** Every `{` in the text starts a candidate; it is read first as
//!   JSON (serde_json) and, when that fails, by a tolerant scanner that accepts Python dict syntax.
//!   Nested objects are candidates too. The *last* candidate (by starting position) that has at
//!   least one key matching a known label is used; text before and after it, markdown code fences
//!   and other dictionaries are ignored.
//! * **Keys** match labels after [`normalize_key`]: lowercase, `_`, `-` and whitespace runs become
//!   one space, and non-alphanumeric characters at either end (quotes, `*`, `:`, `.`) are trimmed.
//!   So `"Joy"`, `" joy "`, `"JOY:"` and `"**joy**"` all match the label `joy`, and `very_happy`
//!   matches `very happy`. If a label appears twice, the last value wins (as in JSON objects).
//!   Keys matching no label are recorded in [`VerbalizedDistribution::unknown_keys`].
//! * **Values** are numbers, quoted numbers (`"0.7"`) or percentages (`70%`, `"70 %"`). The whole
//!   dictionary is read on the percent scale when any label value carries a `%` sign, or when no
//!   label value exceeds 100 and at least one exceeds 1 (`{"joy": 70, "anger": 30}`); otherwise
//!   values are fractions. A parser told the scale ([`VerbalizedParser::with_scale`], for a
//!   prompt that asks for percentages) reads every dictionary on it. The scale only affects the
//!   status and the raw-sum deviation: the returned distribution is always the values divided by
//!   their sum.
//! * **Status.** [`ParseStatus::Ok`]: every label present and the (probability-scale) sum within
//!   `tolerance` of 1. [`ParseStatus::Renormalized`]: every label present, sum further from 1.
//!   [`ParseStatus::Partial`]: some labels missing; they get 0 and the rest is renormalised.
//!   [`ParseStatus::Unparseable`]: no dictionary with a known label, a label value that is not a
//!   number, negative or not finite, or values that sum to 0.
//!
//! A **top-1 answer** (a dict with one label and its confidence `c`, Xiong et al. 2024:
//! [`VerbalizedParser::parse_top1`]) is read by the same rules and becomes the distribution with
//! `c` on that label and `(1 − c)/(K − 1)` on each of the other `K − 1` (with one label, 1 on
//! it); it is unparseable when
//! its dict names more than one label or `c` exceeds 1.
//!
//! **Sampled answers** (the consistency baseline: n answers at a temperature) are averaged by
//! [`average_distributions`]: the mean of the parsed samples' distributions, unparseable
//! samples left out.
//!
//! The tolerant scanner is hand-written because the usual lenient-JSON crates (json5, hjson)
//! reject Python's single-quoted strings mixed with `None`/`True` and bare percent signs such as
//! `0.7%`, which small models produce routinely. The parser never panics (property-tested on
//! arbitrary strings and bytes).

use crate::error::{CalibError, Result};
use serde::{Deserialize, Serialize};

/// Default tolerance on `|sum − 1|` below which a complete distribution counts as [`ParseStatus::Ok`].
pub const DEFAULT_SUM_TOLERANCE: f64 = 0.01;

/// Objects nested deeper than this are not read by the tolerant scanner.
const MAX_NESTING: usize = 32;

/// How much repair a parse needed. Serialises as `{"status": "ok"}`,
/// `{"status": "partial", "missing": [...]}`, `{"status": "unparseable", "reason": "..."}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ParseStatus {
    /// Every label present and the values sum to 1 within the tolerance.
    Ok,
    /// Every label present, but the sum was further than the tolerance from 1 and was divided out.
    Renormalized,
    /// Some labels were missing: they got probability 0 and the rest was renormalised.
    Partial {
        /// The missing labels, in label order.
        missing: Vec<String>,
    },
    /// No usable distribution could be read.
    Unparseable {
        /// Why the text could not be used.
        reason: String,
    },
}

impl ParseStatus {
    /// The status as its lowercase name: `ok`, `renormalized`, `partial` or `unparseable`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Renormalized => "renormalized",
            Self::Partial { .. } => "partial",
            Self::Unparseable { .. } => "unparseable",
        }
    }
}

/// The scale the label values of the chosen dictionary were read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueScale {
    /// Values are probabilities (`0.7`).
    Fraction,
    /// Values are percentages (`70%` or `70`), divided by 100.
    Percent,
}

/// The result of parsing one model answer. Serialises flat: the status fields sit next to the
/// others (`{"probabilities": [...], "status": "partial", "missing": ["fear"], ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerbalizedDistribution {
    /// The distribution in label order, summing to 1; `None` when unparseable.
    pub probabilities: Option<Vec<f64>>,
    /// The numbers as written (before percent scaling), in label order; `None` for a label with no
    /// numeric value in the chosen dictionary.
    pub raw_values: Vec<Option<f64>>,
    /// The scale the values were read on; `None` when no numeric label value was found.
    pub scale: Option<ValueScale>,
    /// `|Σ raw values (probability scale) − 1|` over the labels present; `None` when unparseable
    /// before a sum existed.
    pub raw_sum_deviation: Option<f64>,
    /// How much repair was needed.
    #[serde(flatten)]
    pub status: ParseStatus,
    /// Keys of the chosen dictionary that match no label, as written.
    pub unknown_keys: Vec<String>,
}

/// Parses verbalized distributions over one ordered label set.
#[derive(Debug, Clone)]
pub struct VerbalizedParser {
    labels: Vec<String>,
    normalized: Vec<String>,
    tolerance: f64,
    /// The scale every dictionary is read on (`None`: detected per dictionary).
    scale: Option<ValueScale>,
}

impl VerbalizedParser {
    /// A parser for `labels` (in the order of the output vector) with
    /// [`DEFAULT_SUM_TOLERANCE`]. Fails when the list is empty, a label normalises to nothing, or
    /// two labels normalise to the same key.
    pub fn new<S: AsRef<str>>(labels: &[S]) -> Result<Self> {
        if labels.is_empty() {
            return Err(CalibError::Empty(
                "a verbalized parser needs at least one label".into(),
            ));
        }
        let labels: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
        let normalized: Vec<String> = labels.iter().map(|l| normalize_key(l)).collect();
        for (i, key) in normalized.iter().enumerate() {
            if key.is_empty() {
                return Err(CalibError::InvalidParameter {
                    name: "labels",
                    reason: format!("label {i} ({:?}) has no letters or digits", labels[i]),
                });
            }
            if let Some(j) = normalized[..i].iter().position(|k| k == key) {
                return Err(CalibError::InvalidParameter {
                    name: "labels",
                    reason: format!(
                        "labels {j} ({:?}) and {i} ({:?}) both normalise to {key:?}",
                        labels[j], labels[i]
                    ),
                });
            }
        }
        Ok(Self {
            labels,
            normalized,
            tolerance: DEFAULT_SUM_TOLERANCE,
            scale: None,
        })
    }

    /// Sets the tolerance on `|sum − 1|` (finite, ≥ 0) that separates `ok` from `renormalized`.
    pub fn with_tolerance(mut self, tolerance: f64) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(CalibError::InvalidParameter {
                name: "tolerance",
                reason: format!("must be finite and non-negative, got {tolerance}"),
            });
        }
        self.tolerance = tolerance;
        Ok(self)
    }

    /// Reads every dictionary on `scale` instead of detecting it (a prompt that asks for
    /// percentages: `{"joy": 1, "anger": 0}` is then 1% and 0%, renormalised).
    pub fn with_scale(mut self, scale: ValueScale) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The labels, in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The tolerance on `|sum − 1|`.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }

    /// Parses one model answer. Never fails: problems are reported in the status.
    pub fn parse(&self, text: &str) -> VerbalizedDistribution {
        let dicts = candidate_dicts(text);
        let chosen = dicts
            .iter()
            .rev()
            .find(|entries| entries.iter().any(|e| self.label_index(&e.key).is_some()));
        match chosen {
            Some(entries) => self.evaluate(entries),
            None if dicts.is_empty() => self.unparseable("no dictionary found in the text"),
            None => self.unparseable("no dictionary has a key matching a known label"),
        }
    }

    /// Parses a top-1 answer `{"<label>": <confidence>}` into the distribution with the
    /// confidence `c` on that label and `(1 − c)/(K − 1)` on each other label (status `ok`; no
    /// raw-sum deviation). Never fails: problems are reported in the status.
    pub fn parse_top1(&self, text: &str) -> VerbalizedDistribution {
        let read = self.parse(text);
        let present: Vec<(usize, f64)> =
            read.raw_values.iter().enumerate().filter_map(|(j, value)| value.map(|value| (j, value))).collect();
        let &[(label, value)] = present.as_slice() else {
            return match present.len() {
                0 => read,
                n => self.fail(read, format!("a top-1 answer names one label, this one names {n}")),
            };
        };
        if !(value.is_finite() && value >= 0.0) {
            return read;
        }
        let confidence = match read.scale {
            Some(ValueScale::Percent) => value / 100.0,
            _ => value,
        };
        if confidence > 1.0 {
            return self.fail(read, format!("the confidence {value} is above 1 (100%)"));
        }
        // A single label is certain whatever the confidence: nothing else could be right.
        let probabilities = match self.labels.len() {
            1 => vec![1.0],
            k => {
                let others = (1.0 - confidence) / (k - 1) as f64;
                (0..k).map(|j| if j == label { confidence } else { others }).collect()
            }
        };
        VerbalizedDistribution {
            probabilities: Some(probabilities),
            raw_sum_deviation: None,
            status: ParseStatus::Ok,
            ..read
        }
    }

    fn label_index(&self, key: &str) -> Option<usize> {
        let key = normalize_key(key);
        self.normalized.iter().position(|k| *k == key)
    }

    fn unparseable(&self, reason: &str) -> VerbalizedDistribution {
        VerbalizedDistribution {
            probabilities: None,
            raw_values: vec![None; self.labels.len()],
            scale: None,
            raw_sum_deviation: None,
            status: ParseStatus::Unparseable {
                reason: reason.to_string(),
            },
            unknown_keys: Vec::new(),
        }
    }

    fn evaluate(&self, entries: &[Entry]) -> VerbalizedDistribution {
        let mut raw: Vec<Option<Scalar>> = vec![None; self.labels.len()];
        let mut unknown_keys = Vec::new();
        for entry in entries {
            match self.label_index(&entry.key) {
                Some(j) => raw[j] = Some(entry.value.clone()),
                None => unknown_keys.push(entry.key.clone()),
            }
        }
        let mut out = self.unparseable("");
        out.unknown_keys = unknown_keys;
        let mut percent_marked = false;
        for (j, value) in raw.iter().enumerate() {
            match value {
                Some(Scalar::Number { value, percent }) => {
                    out.raw_values[j] = Some(*value);
                    percent_marked |= *percent;
                }
                Some(Scalar::Other(text)) => {
                    return self.fail(
                        out,
                        format!(
                            "value for label {:?} is not a number: {text}",
                            self.labels[j]
                        ),
                    );
                }
                None => {}
            }
        }
        let present: Vec<f64> = out.raw_values.iter().flatten().copied().collect();
        if let Some(j) = out
            .raw_values
            .iter()
            .position(|v| v.is_some_and(|v| !v.is_finite() || v < 0.0))
        {
            let value = out.raw_values[j].unwrap_or(f64::NAN);
            return self.fail(
                out,
                format!(
                    "value for label {:?} is {value}, not a finite non-negative number",
                    self.labels[j]
                ),
            );
        }
        let max = present.iter().copied().fold(0.0, f64::max);
        let scale = match self.scale {
            Some(scale) => scale,
            None if percent_marked || (max > 1.0 && max <= 100.0) => ValueScale::Percent,
            None => ValueScale::Fraction,
        };
        out.scale = Some(scale);
        let divisor = if scale == ValueScale::Percent {
            100.0
        } else {
            1.0
        };
        let sum: f64 = present.iter().sum();
        if !sum.is_finite() {
            return self.fail(out, "label values overflow when summed".into());
        }
        let deviation = (sum / divisor - 1.0).abs();
        out.raw_sum_deviation = Some(deviation);
        if sum == 0.0 {
            return self.fail(out, "all label values are zero".into());
        }
        out.probabilities = Some(
            out.raw_values
                .iter()
                .map(|v| v.map_or(0.0, |v| v / sum))
                .collect(),
        );
        let missing: Vec<String> = self
            .labels
            .iter()
            .zip(&out.raw_values)
            .filter(|(_, v)| v.is_none())
            .map(|(l, _)| l.clone())
            .collect();
        out.status = if !missing.is_empty() {
            ParseStatus::Partial { missing }
        } else if deviation <= self.tolerance {
            ParseStatus::Ok
        } else {
            ParseStatus::Renormalized
        };
        out
    }

    fn fail(&self, mut out: VerbalizedDistribution, reason: String) -> VerbalizedDistribution {
        out.probabilities = None;
        out.status = ParseStatus::Unparseable { reason };
        out
    }
}

/// Parses `text` against `labels` with the given tolerance; a shorthand for
/// [`VerbalizedParser::new`] + [`VerbalizedParser::with_tolerance`] + [`VerbalizedParser::parse`].
pub fn parse_verbalized<S: AsRef<str>>(
    text: &str,
    labels: &[S],
    tolerance: f64,
) -> Result<VerbalizedDistribution> {
    Ok(VerbalizedParser::new(labels)?
        .with_tolerance(tolerance)?
        .parse(text))
}

/// The mean of the distributions of `samples` over `n_labels` labels, leaving out unparseable
/// samples (their count is the caller's to record): status `ok`, no raw values, scale or sum
/// deviation (the samples have theirs). Unparseable when no sample parsed.
pub fn average_distributions(samples: &[VerbalizedDistribution], n_labels: usize) -> VerbalizedDistribution {
    let parsed: Vec<&Vec<f64>> =
        samples.iter().filter_map(|sample| sample.probabilities.as_ref()).filter(|p| p.len() == n_labels).collect();
    let probabilities = (!parsed.is_empty()).then(|| {
        (0..n_labels).map(|j| parsed.iter().map(|p| p[j]).sum::<f64>() / parsed.len() as f64).collect()
    });
    let status = match probabilities {
        Some(_) => ParseStatus::Ok,
        None => ParseStatus::Unparseable { reason: format!("none of the {} samples could be parsed", samples.len()) },
    };
    VerbalizedDistribution {
        probabilities,
        raw_values: vec![None; n_labels],
        scale: None,
        raw_sum_deviation: None,
        status,
        unknown_keys: Vec::new(),
    }
}

/// The form in which keys and labels are compared: lowercase, `_`/`-`/whitespace runs turned into
/// single spaces, and non-alphanumeric characters trimmed from both ends.
pub fn normalize_key(key: &str) -> String {
    let spaced: String = key
        .to_lowercase()
        .chars()
        .map(|c| {
            if c == '_' || c == '-' || c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let trimmed = spaced.trim_matches(|c: char| !c.is_alphanumeric());
    trimmed
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A dictionary value as far as parsing cares: a number (maybe with a percent sign) or anything
/// else, kept as a short description for the error message.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Number { value: f64, percent: bool },
    Other(String),
}

/// One `key: value` pair of a candidate dictionary.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    value: Scalar,
}

/// Reads a value written as text: `0.7`, `"70%"`, ` 70 % `; anything else is [`Scalar::Other`].
fn scalar_from_text(text: &str) -> Scalar {
    let trimmed = text.trim();
    let (number, percent) = match trimmed.strip_suffix('%') {
        Some(rest) => (rest.trim_end(), true),
        None => (trimmed, false),
    };
    match number.parse::<f64>() {
        Ok(value) => Scalar::Number { value, percent },
        Err(_) => Scalar::Other(format!("{:?}", truncate(trimmed, 40))),
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Every dictionary in `text`, in order of starting position (outer before nested).
fn candidate_dicts(text: &str) -> Vec<Vec<Entry>> {
    let mut dicts = Vec::new();
    let bytes = text.as_bytes();
    let mut pos = 0;
    while let Some(offset) = bytes[pos..].iter().position(|&b| b == b'{') {
        let start = pos + offset;
        pos = match read_json_object(text, start, &mut dicts)
            .or_else(|| Scanner::new(bytes, start).object_at_start(&mut dicts))
        {
            Some(end) => end,
            None => start + 1,
        };
    }
    dicts
}

/// Reads one JSON value starting at `start` with serde_json; on success pushes its objects and
/// returns the byte position after it.
fn read_json_object(text: &str, start: usize, dicts: &mut Vec<Vec<Entry>>) -> Option<usize> {
    let mut stream =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    let value = stream.next()?.ok()?;
    collect_json_objects(&value, dicts);
    Some(start + stream.byte_offset())
}

fn collect_json_objects(value: &serde_json::Value, dicts: &mut Vec<Vec<Entry>>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let entries = map
                .iter()
                .map(|(key, v)| Entry {
                    key: key.clone(),
                    value: json_scalar(v),
                })
                .collect();
            dicts.push(entries);
            map.values().for_each(|v| collect_json_objects(v, dicts));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_json_objects(v, dicts)),
        _ => {}
    }
}

fn json_scalar(value: &serde_json::Value) -> Scalar {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(value) => Scalar::Number {
                value,
                percent: false,
            },
            None => Scalar::Other(n.to_string()),
        },
        Value::String(s) => scalar_from_text(s),
        Value::Null => Scalar::Other("null".into()),
        Value::Bool(b) => Scalar::Other(b.to_string()),
        Value::Array(_) => Scalar::Other("a list".into()),
        Value::Object(_) => Scalar::Other("a dictionary".into()),
    }
}

/// The tolerant scanner for Python-style dictionaries: single or double quoted or bare keys,
/// bare or quoted values, `%` signs, trailing commas. All structural characters are ASCII, so
/// byte positions of them are always valid `str` boundaries.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    /// Reads the object starting at the current `{`; returns the position after its `}`.
    fn object_at_start(mut self, dicts: &mut Vec<Vec<Entry>>) -> Option<usize> {
        let before = dicts.len();
        let found = self.object(0, dicts);
        if found.is_none() {
            dicts.truncate(before);
        }
        found.map(|()| self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn text(&self, from: usize, to: usize) -> String {
        String::from_utf8_lossy(&self.bytes[from..to]).into_owned()
    }

    /// `{ (key : value ,)* }` at the current position (after whitespace).
    fn object(&mut self, depth: usize, dicts: &mut Vec<Vec<Entry>>) -> Option<()> {
        if depth > MAX_NESTING || !self.eat(b'{') {
            return None;
        }
        let slot = dicts.len();
        dicts.push(Vec::new());
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                break;
            }
            let key = self.key()?;
            if !self.eat(b':') {
                return None;
            }
            let value = self.value(depth, dicts)?;
            entries.push(Entry { key, value });
            if !self.eat(b',') {
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        dicts[slot] = entries;
        Some(())
    }

    fn key(&mut self) -> Option<String> {
        self.skip_whitespace();
        match self.peek()? {
            quote @ (b'"' | b'\'') => self.quoted(quote),
            _ => {
                let token = self.bare(b":")?;
                let forbidden =
                    |b: u8| matches!(b, b'{' | b'}' | b'[' | b']' | b'"' | b'\'' | b',');
                (!token.bytes().any(forbidden)).then_some(token)
            }
        }
    }

    fn value(&mut self, depth: usize, dicts: &mut Vec<Vec<Entry>>) -> Option<Scalar> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => {
                self.object(depth + 1, dicts)?;
                Some(Scalar::Other("a dictionary".into()))
            }
            b'[' => {
                self.list(depth + 1, dicts)?;
                Some(Scalar::Other("a list".into()))
            }
            quote @ (b'"' | b'\'') => {
                let text = self.quoted(quote)?;
                // A percent sign may follow the closing quote: '70'%.
                let percent_after = self.eat(b'%');
                Some(match scalar_from_text(&text) {
                    Scalar::Number { value, percent } => Scalar::Number {
                        value,
                        percent: percent || percent_after,
                    },
                    other => other,
                })
            }
            _ => self.bare(b",}]").map(|token| scalar_from_text(&token)),
        }
    }

    fn list(&mut self, depth: usize, dicts: &mut Vec<Vec<Entry>>) -> Option<()> {
        if depth > MAX_NESTING || !self.eat(b'[') {
            return None;
        }
        loop {
            if self.eat(b']') {
                return Some(());
            }
            self.value(depth, dicts)?;
            if !self.eat(b',') {
                return self.eat(b']').then_some(());
            }
        }
    }

    /// A quoted string; a backslash keeps the next character literally.
    fn quoted(&mut self, quote: u8) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => {
                    out.push(self.peek()?);
                    self.pos += 1;
                }
                b if b == quote => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\n' => return None,
                b => out.push(b),
            }
        }
        None
    }

    /// An unquoted token up to (not including) one of `stops` or a newline; trimmed, non-empty.
    fn bare(&mut self, stops: &[u8]) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| !stops.contains(&b) && b != b'\n' && b != b'{' && b != b'}')
        {
            self.pos += 1;
        }
        let token = self.text(start, self.pos).trim().to_string();
        (!token.is_empty()).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 3] = ["joy", "sadness", "anger"];

    fn parse(text: &str) -> VerbalizedDistribution {
        VerbalizedParser::new(&LABELS).unwrap().parse(text)
    }

    fn probs(d: &VerbalizedDistribution) -> Vec<f64> {
        d.probabilities.clone().expect("parsed")
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn json_with_surrounding_text_is_ok() {
        let d =
            parse("Answer: joy\n{\"joy\": 0.7, \"sadness\": 0.2, \"anger\": 0.1}\nHope this helps");
        assert_eq!(d.status, ParseStatus::Ok);
        assert!(close(&probs(&d), &[0.7, 0.2, 0.1]));
        assert_eq!(d.scale, Some(ValueScale::Fraction));
        assert!(d.raw_sum_deviation.unwrap() < 1e-12);
    }

    #[test]
    fn python_dict_in_code_fence_with_percentages() {
        let d = parse("```python\n{'Joy': '50%', 'SADNESS': 30%, ' anger ': 20 %,}\n```");
        assert_eq!(d.status, ParseStatus::Ok);
        assert_eq!(d.scale, Some(ValueScale::Percent));
        assert!(close(&probs(&d), &[0.5, 0.3, 0.2]));
        assert_eq!(d.raw_values, vec![Some(50.0), Some(30.0), Some(20.0)]);
    }

    #[test]
    fn unmarked_percentages_and_bare_keys() {
        let d = parse("{joy: 60, sadness: 30, anger: 10}");
        assert_eq!(d.status, ParseStatus::Ok);
        assert!(close(&probs(&d), &[0.6, 0.3, 0.1]));
        // Values up to 1 stay fractions: this sums to 0.5 → renormalized, deviation 0.5.
        let d = parse("{joy: 0.25, sadness: 0.125, anger: 0.125}");
        assert_eq!(d.status, ParseStatus::Renormalized);
        assert!(close(&probs(&d), &[0.5, 0.25, 0.25]));
        assert!((d.raw_sum_deviation.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn samples_average_over_those_that_parsed() {
        let parser = VerbalizedParser::new(&["a", "b"]).unwrap();
        let samples: Vec<VerbalizedDistribution> =
            [r#"{"a": 0.8, "b": 0.2}"#, "no dict", r#"{"a": 0.2, "b": 0.6}"#].iter().map(|t| parser.parse(t)).collect();
        // (0.8, 0.2) and (0.25, 0.75) (the second renormalised): mean (0.525, 0.475).
        let mean = average_distributions(&samples, 2);
        assert_eq!(mean.status, ParseStatus::Ok);
        assert!(close(&probs(&mean), &[0.525, 0.475]));
        let none = average_distributions(&samples[1..2], 2);
        assert_eq!(none.status, ParseStatus::Unparseable { reason: "none of the 1 samples could be parsed".into() });
        assert_eq!(none.probabilities, None);
    }

    #[test]
    fn a_top1_answer_spreads_the_rest_evenly_over_the_other_labels() {
        let parser = VerbalizedParser::new(&["anger", "joy", "fear"]).unwrap();
        // c = 0.7 on joy; (1 − 0.7) / 2 = 0.15 on each other label.
        for text in [r#"{"joy": 0.7}"#, r#"Answer: {'JOY': 70}"#, r#"{"joy": "70%"}"#] {
            let d = parser.parse_top1(text);
            assert_eq!(d.status, ParseStatus::Ok, "{text}");
            assert!(close(&probs(&d), &[0.15, 0.7, 0.15]), "{text}: {:?}", d.probabilities);
            assert_eq!(d.raw_sum_deviation, None);
        }
        // Confidence 0 is an answer too: the other two share everything.
        assert!(close(&probs(&parser.parse_top1(r#"{"fear": 0}"#)), &[0.5, 0.5, 0.0]));
        let reason = |text: &str| match parser.parse_top1(text).status {
            ParseStatus::Unparseable { reason } => reason,
            status => panic!("{text}: {status:?}"),
        };
        assert_eq!(reason(r#"{"joy": 0.7, "anger": 0.3}"#), "a top-1 answer names one label, this one names 2");
        assert_eq!(reason(r#"{"joy": 150}"#), "the confidence 150 is above 1 (100%)");
        assert_eq!(reason("joy, surely"), "no dictionary found in the text");
        assert!(reason(r#"{"joy": -0.5}"#).contains("not a finite non-negative number"));
        let single = VerbalizedParser::new(&["only"]).unwrap();
        assert_eq!(probs(&single.parse_top1(r#"{"only": 0.4}"#)), [1.0]);
    }

    #[test]
    fn a_parser_told_the_percent_scale_divides_every_dict_by_100() {
        let parser = VerbalizedParser::new(&["joy", "anger", "fear"]).unwrap().with_scale(ValueScale::Percent);
        // Values that detection would read as fractions: 1 + 0 + 0 = 1% in all.
        let d = parser.parse(r#"{"joy": 1, "anger": 0, "fear": 0}"#);
        assert_eq!(d.scale, Some(ValueScale::Percent));
        assert_eq!(d.status, ParseStatus::Renormalized);
        assert!((d.raw_sum_deviation.unwrap() - 0.99).abs() < 1e-12);
        assert_eq!(probs(&d), [1.0, 0.0, 0.0]);
        // 70 + 20 + 10 = 100%: ok, 0.7 / 0.2 / 0.1.
        let d = parser.parse(r#"{"joy": 70, "anger": 20, "fear": 10}"#);
        assert_eq!(d.status, ParseStatus::Ok);
        assert!(close(&probs(&d), &[0.7, 0.2, 0.1]));
    }

    #[test]
    fn tolerance_separates_ok_from_renormalized() {
        let text = "{'joy': 0.7, 'sadness': 0.2, 'anger': 0.105}";
        assert_eq!(parse(text).status, ParseStatus::Ok);
        let strict = VerbalizedParser::new(&LABELS)
            .unwrap()
            .with_tolerance(0.001)
            .unwrap();
        let d = strict.parse(text);
        assert_eq!(d.status, ParseStatus::Renormalized);
        assert!(close(
            &probs(&d),
            &[0.7 / 1.005, 0.2 / 1.005, 0.105 / 1.005]
        ));
    }

    #[test]
    fn missing_labels_give_partial_and_unknown_keys_are_recorded() {
        let d = parse("{\"joy\": 0.6, \"surprise\": 0.2, \"anger\": 0.2}");
        assert_eq!(
            d.status,
            ParseStatus::Partial {
                missing: vec!["sadness".into()]
            }
        );
        assert!(close(&probs(&d), &[0.75, 0.0, 0.25]));
        assert_eq!(d.unknown_keys, vec!["surprise".to_string()]);
        assert_eq!(d.raw_values, vec![Some(0.6), None, Some(0.2)]);
    }

    #[test]
    fn last_dict_with_a_known_label_wins() {
        let text = "{'joy': 0.1, 'sadness': 0.8, 'anger': 0.1} then {'joy': 0.9, 'sadness': 0.05, 'anger': 0.05} {'x': 1}";
        assert!(close(&probs(&parse(text)), &[0.9, 0.05, 0.05]));
        // A nested distribution is found inside a wrapper object.
        let d = parse(
            "{\"answer\": \"joy\", \"distribution\": {\"joy\": 1, \"sadness\": 0, \"anger\": 0}}",
        );
        assert_eq!(d.status, ParseStatus::Ok);
        assert!(close(&probs(&d), &[1.0, 0.0, 0.0]));
    }

    #[test]
    fn unparseable_cases_say_why() {
        let reason = |text: &str| match parse(text).status {
            ParseStatus::Unparseable { reason } => reason,
            other => panic!("expected unparseable for {text:?}, got {other:?}"),
        };
        assert!(reason("joy, definitely").contains("no dictionary"));
        assert!(reason("{'happy': 1.0}").contains("no dictionary has a key"));
        assert!(reason("{'joy': -0.1, 'sadness': 1.1, 'anger': 0}").contains("non-negative"));
        assert!(reason("{'joy': nan, 'sadness': 1, 'anger': 0}").contains("non-negative"));
        assert!(reason("{'joy': 'high', 'sadness': 0.1, 'anger': 0}").contains("not a number"));
        assert!(reason("{'joy': 0, 'sadness': 0}").contains("zero"));
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("  **Very_Happy**: "), "very happy");
        assert_eq!(normalize_key("Not-At  all"), "not at all");
        let d = parse("{'JOY:': 0.5, '\"sadness\"': 0.25, 'Anger ': 0.25}");
        assert_eq!(d.status, ParseStatus::Ok);
    }

    #[test]
    fn parser_rejects_bad_label_sets() {
        assert!(VerbalizedParser::new::<&str>(&[]).is_err());
        assert!(VerbalizedParser::new(&["joy", "Joy "]).is_err());
        assert!(VerbalizedParser::new(&["joy", "??"]).is_err());
        assert!(VerbalizedParser::new(&LABELS)
            .unwrap()
            .with_tolerance(f64::NAN)
            .is_err());
    }

    #[test]
    fn status_serialises_to_lowercase_names() {
        let json = |s: &ParseStatus| serde_json::to_string(s).unwrap();
        assert_eq!(json(&ParseStatus::Ok), r#"{"status":"ok"}"#);
        assert_eq!(
            json(&ParseStatus::Renormalized),
            r#"{"status":"renormalized"}"#
        );
        assert_eq!(
            json(&ParseStatus::Partial {
                missing: vec!["a".into()]
            }),
            r#"{"status":"partial","missing":["a"]}"#
        );
        assert_eq!(
            json(&ParseStatus::Unparseable { reason: "r".into() }),
            r#"{"status":"unparseable","reason":"r"}"#
        );
        let d = parse("{'joy': 1}");
        let value = serde_json::to_value(&d).unwrap();
        assert_eq!(value["status"], "partial");
        assert_eq!(value["missing"], serde_json::json!(["sadness", "anger"]));
        let back: VerbalizedDistribution = serde_json::from_value(value).unwrap();
        assert_eq!(back, d);
    }
}
