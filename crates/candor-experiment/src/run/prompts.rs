//! Prompt templates of `candor run`: the built-in verbalized elicitation (after Wang et al. 2024,
//! arXiv 2410.06707: name the most likely label, weigh its confidence, then give the whole
//! distribution as a dict and nothing else) and the label prompt whose answer position is scored,
//! plus user templates read from files.
//!
//! A template is plain text with placeholders `{text}` (the example, required), `{labels}` (the
//! label names, comma-separated), `{label_descriptions}` (one `- name: description` line per label)
//! and `{task}` (the dataset's task sentence). `{{` and `}}` stand for literal braces; any other
//! brace is an error naming its byte offset, so a typo never reaches the model silently.

use crate::error::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

use candor_data::{Dataset, Label};

/// The built-in verbalized elicitation prompt.
pub const VERBALIZED_PROMPT: &str = "{task}

Labels:
{label_descriptions}

Read the text below. First identify the most likely label and weigh how confident you are in it. \
Then give the probability of every label ({labels}) as a Python dictionary that maps each label \
to its probability, the probabilities summing to 1, in the form {{\"label\": probability, ...}}. \
Answer with the dictionary and nothing else.

Text:
{text}";

/// The built-in top-1 elicitation (the `top1` variant, after Xiong et al. 2024): the most likely
/// label and the confidence that it is right, as a dict with that one key.
pub const VERBALIZED_TOP1_PROMPT: &str = "{task}

Labels:
{label_descriptions}

Read the text below. Give the most likely label ({labels}) and your confidence that it is \
correct, a probability from 0 to 1, as a Python dictionary with that label as its only key, in \
the form {{\"label\": confidence}}. Answer with the dictionary and nothing else.

Text:
{text}";

/// The built-in percentage elicitation (the `percent` variant): the distribution prompt with
/// percentages from 0 to 100 that sum to 100 in place of probabilities.
pub const VERBALIZED_PERCENT_PROMPT: &str = "{task}

Labels:
{label_descriptions}

Read the text below. First identify the most likely label and weigh how confident you are in it. \
Then give the probability of every label ({labels}) as a percentage from 0 to 100, as a Python \
dictionary that maps each label to its percentage, the percentages summing to 100, in the form \
{{\"label\": percentage, ...}}. Answer with the dictionary and nothing else.

Text:
{text}";

/// The built-in label prompt: the answer position (the start of the assistant turn) is scored.
pub const LABEL_PROMPT: &str = "{task}

Labels:
{label_descriptions}

Which label fits the text below best? Answer with the label only, exactly as written above.

Text:
{text}";

/// The default text the label prompt's answer starts with; the labels are scored after it.
pub const DEFAULT_LABEL_ANSWER_PREFIX: &str = "Label:";

/// The task sentence used when a dataset has none (plain files).
pub const DEFAULT_TASK: &str = "Classify the text into one of the labels.";

/// The placeholders a template may use, by name.
const PLACEHOLDERS: &[(&str, Placeholder)] = &[
    ("text", Placeholder::Text),
    ("labels", Placeholder::Labels),
    ("label_descriptions", Placeholder::LabelDescriptions),
    ("task", Placeholder::Task),
];

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Text,
    Labels,
    LabelDescriptions,
    Task,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Slot(Placeholder),
}

/// A parsed prompt template with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    /// `builtin:<name>` or the file path it was read from.
    pub source: String,
    /// The template text as written.
    pub text: String,
    pieces: Vec<Piece>,
}

impl PromptTemplate {
    /// A built-in template.
    pub fn builtin(name: &str, text: &str) -> Result<Self> {
        Self::parse(format!("builtin:{name}"), text)
    }

    /// A template read from `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading prompt template {}", path.display()))?;
        Self::parse(path.display().to_string(), &text)
    }

    /// The built-in template `builtin` unless `file` is given.
    pub fn builtin_or_file(name: &str, builtin: &str, file: Option<&Path>) -> Result<Self> {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::builtin(name, builtin),
        }
    }

    /// Parses `text`; errors name `source`, the byte offset and the problem.
    pub fn parse(source: String, text: &str) -> Result<Self> {
        let pieces = parse_pieces(text).with_context(|| format!("prompt template {source}"))?;
        if !pieces.contains(&Piece::Slot(Placeholder::Text)) {
            bail!("prompt template {source}: it has no {{text}} placeholder for the example");
        }
        Ok(Self {
            source,
            text: text.to_string(),
            pieces,
        })
    }

    /// Hex sha256 of the template text.
    pub fn sha256(&self) -> String {
        hex_sha256(self.text.as_bytes())
    }

    /// The template with every placeholder filled.
    pub fn render(&self, values: &PromptValues, text: &str) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(literal) => out.push_str(literal),
                Piece::Slot(Placeholder::Text) => out.push_str(text),
                Piece::Slot(Placeholder::Labels) => out.push_str(&values.labels),
                Piece::Slot(Placeholder::LabelDescriptions) => {
                    out.push_str(&values.label_descriptions)
                }
                Piece::Slot(Placeholder::Task) => out.push_str(&values.task),
            }
        }
        out
    }
}

/// The dataset-wide values of the placeholders other than `{text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptValues {
    /// Label names joined by ", ".
    pub labels: String,
    /// One `- name: description` line per label (`- name` without a description).
    pub label_descriptions: String,
    /// The dataset's task sentence or [`DEFAULT_TASK`].
    pub task: String,
}

impl PromptValues {
    /// The values for `dataset`.
    pub fn for_dataset(dataset: &Dataset) -> Self {
        let labels: Vec<&Label> = dataset.labels.iter().collect();
        Self::for_labels(&labels, dataset.task.as_deref())
    }

    /// The values for `labels`, listed in the order given, and the task sentence `task`
    /// ([`DEFAULT_TASK`] when `None`).
    pub fn for_labels(labels: &[&Label], task: Option<&str>) -> Self {
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        let lines: Vec<String> = labels
            .iter()
            .map(|label| match &label.description {
                Some(description) => format!("- {}: {description}", label.name),
                None => format!("- {}", label.name),
            })
            .collect();
        Self {
            labels: names.join(", "),
            label_descriptions: lines.join("\n"),
            task: task.unwrap_or(DEFAULT_TASK).to_string(),
        }
    }
}

/// Hex sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a file's bytes, streamed (the dataset file's hash in the manifest).
pub fn file_sha256(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn parse_pieces(text: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(position) = rest.find(['{', '}']) {
        literal.push_str(&rest[..position]);
        let tail = &rest[position..];
        let at = offset + position;
        let consumed = if tail.starts_with("{{") {
            literal.push('{');
            2
        } else if tail.starts_with("}}") {
            literal.push('}');
            2
        } else if tail.starts_with('}') {
            bail!("unmatched '}}' at byte {at} (write '}}}}' for a literal brace)");
        } else {
            let Some(end) = tail.find('}') else {
                bail!("unclosed '{{' at byte {at} (write '{{{{' for a literal brace)");
            };
            let name = &tail[1..end];
            let Some(&(_, known)) = PLACEHOLDERS.iter().find(|(known, _)| *known == name) else {
                bail!(
                    "unknown placeholder {{{name}}} at byte {at} (placeholders: {}; write '{{{{' for a literal brace)",
                    PLACEHOLDERS
                        .iter()
                        .map(|(p, _)| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Slot(known));
            end + 1
        };
        rest = &tail[consumed..];
        offset = at + consumed;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> PromptValues {
        PromptValues {
            labels: "a, b".into(),
            label_descriptions: "- a: first\n- b".into(),
            task: "Pick.".into(),
        }
    }

    #[test]
    fn placeholders_and_escaped_braces_render() {
        let template = PromptTemplate::parse(
            "t".into(),
            "{task} [{labels}]\n{label_descriptions}\n{{\"x\": 1}} {text}!",
        )
        .expect("valid");
        assert_eq!(
            template.render(&values(), "hello"),
            "Pick. [a, b]\n- a: first\n- b\n{\"x\": 1} hello!"
        );
    }

    #[test]
    fn builtins_parse_and_contain_the_text_last() {
        for text in [VERBALIZED_PROMPT, VERBALIZED_TOP1_PROMPT, VERBALIZED_PERCENT_PROMPT, LABEL_PROMPT] {
            let template = PromptTemplate::builtin("x", text).expect("builtin parses");
            assert!(template.render(&values(), "EXAMPLE").ends_with("\nEXAMPLE"));
        }
        let verbalized = PromptTemplate::builtin("v", VERBALIZED_PROMPT).unwrap();
        assert!(verbalized
            .render(&values(), "t")
            .contains("in the form {\"label\": probability, ...}"));
        let top1 = PromptTemplate::builtin("t", VERBALIZED_TOP1_PROMPT).unwrap();
        assert!(top1
            .render(&values(), "t")
            .contains("Give the most likely label (a, b) and your confidence that it is correct, a probability from 0 to 1, as a Python dictionary with that label as its only key, in the form {\"label\": confidence}."));
        let percent = PromptTemplate::builtin("p", VERBALIZED_PERCENT_PROMPT).unwrap();
        assert!(percent
            .render(&values(), "t")
            .contains("as a percentage from 0 to 100, as a Python dictionary that maps each label to its percentage, the percentages summing to 100, in the form {\"label\": percentage, ...}."));
    }

    #[test]
    fn bad_templates_are_refused_with_the_offset() {
        // The whole chain of causes, as the binary prints it.
        let error = |text: &str| {
            let error = PromptTemplate::parse("f.txt".into(), text).unwrap_err();
            let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source());
            chain.map(ToString::to_string).collect::<Vec<_>>().join(": ")
        };
        assert!(error("{txt} {text}").contains("unknown placeholder {txt} at byte 0"));
        assert!(error("ab {text").contains("unclosed '{' at byte 3"));
        assert!(error("{text} }").contains("unmatched '}' at byte 7"));
        assert!(error("no example").contains("f.txt: it has no {text} placeholder"));
    }

    #[test]
    fn sha256_is_the_known_digest() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
