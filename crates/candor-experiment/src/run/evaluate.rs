//! Turning one example text into its signals with a loaded model: chat-rendering the prompt
//! templates, reusing each template's shared prefix, scoring the labels at the answer position and
//! generating the verbalized distribution (free or constrained).
//!
//! Prefix reuse: each template is rendered once with a sentinel in place of `{text}`; the chat text
//! before the sentinel is tokenized and prefilled once. An example's prompt is always rendered and
//! tokenized whole, and the shared prefix is reused only when those tokens start with the prefix's
//! tokens, so the token sequence the model sees never depends on reuse. Otherwise (a chat template
//! that rewrites the message, a merge across the boundary) the example is prefilled from scratch.

use crate::error::{Context, Result};
use candor_backend::{ConstrainedOptions, ModelBackend, PromptState};
use candor_calib::softmax::softmax;
use candor_calib::VerbalizedParser;

use super::predictions::{LogitsRecord, VerbalizedRecord};
use super::prompts::{PromptTemplate, PromptValues};

/// Stands in for the example text when the shared prefix is rendered (private-use characters, so
/// no real text or template contains it).
const TEXT_SENTINEL: &str = "\u{E000}candor-example-text\u{E001}";

/// How the verbalized distribution is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum VerbalizedMode {
    /// Free greedy generation, parsed afterwards.
    Free,
    /// The dict skeleton forced, only the numbers generated under a number grammar.
    Constrained,
}

impl VerbalizedMode {
    /// The mode's name in manifests and records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Constrained => "constrained",
        }
    }
}

/// How a rendered template reaches the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PromptFormat {
    /// As it is (base models, which have no chat turn).
    Raw,
    /// As the user's message of a chat rendered by the model's own template.
    Chat,
}

impl PromptFormat {
    /// The format's name in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Chat => "chat",
        }
    }

    /// The format for `model` when none is asked for: chat when it has a chat template.
    pub fn default_for<B: ModelBackend>(model: &B) -> Self {
        match model.has_chat_template() {
            true => Self::Chat,
            false => Self::Raw,
        }
    }

    /// `text` as the model receives it in this format.
    fn wrap<B: ModelBackend>(self, model: &B, text: &str) -> Result<String> {
        Ok(match self {
            Self::Raw => text.to_string(),
            Self::Chat => model.chat_prompt(text)?,
        })
    }
}

/// A template rendered through the model's chat template, with its shared prefix prefilled.
pub struct ChatPrompt<B: ModelBackend> {
    template: PromptTemplate,
    format: PromptFormat,
    values: PromptValues,
    answer_prefix: String,
    head_text: String,
    head: Option<B::Prefix>,
}

/// An example's prompt tokens and whether the shared prefix covers their start.
struct PreparedPrompt {
    tokens: Vec<u32>,
    reuses_head: bool,
}

impl<B: ModelBackend> ChatPrompt<B> {
    /// Renders the part of the chat before the example text and prefills it once. The prompt of
    /// an example is the chat-rendered template followed by `answer_prefix`, the text the
    /// assistant's answer is made to start with.
    pub fn new(
        model: &B,
        template: PromptTemplate,
        format: PromptFormat,
        values: PromptValues,
        answer_prefix: &str,
    ) -> Result<Self> {
        let rendered = format.wrap(model, &template.render(&values, TEXT_SENTINEL))?;
        let head_text = rendered
            .find(TEXT_SENTINEL)
            .map_or("", |position| &rendered[..position])
            .to_string();
        let head_tokens = model.encode_prompt(&head_text)?;
        let head =
            match head_tokens.is_empty() {
                true => None,
                false => Some(model.prefill(&head_tokens).with_context(|| {
                    format!("prefilling the shared prefix of {}", template.source)
                })?),
            };
        Ok(Self {
            template,
            format,
            values,
            answer_prefix: answer_prefix.to_string(),
            head_text,
            head,
        })
    }

    /// The template.
    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    /// The text the assistant's answer starts with (empty: none).
    pub fn answer_prefix(&self) -> &str {
        &self.answer_prefix
    }

    /// Tokens computed once and reused (0 when none).
    pub fn shared_prefix_tokens(&self) -> usize {
        self.head.as_ref().map_or(0, |head| head.tokens().len())
    }

    /// Tokens of the whole chat-rendered prompt for `text`.
    pub fn token_count(&self, model: &B, text: &str) -> Result<usize> {
        Ok(self.prepare(model, text)?.tokens.len())
    }

    /// The whole prompt for `text` as the model receives it: the chat-rendered template followed
    /// by the answer prefix.
    pub fn full_text(&self, model: &B, text: &str) -> Result<String> {
        Ok(self.format.wrap(model, &self.template.render(&self.values, text))? + &self.answer_prefix)
    }

    fn prepare(&self, model: &B, text: &str) -> Result<PreparedPrompt> {
        let full = self.full_text(model, text)?;
        let tokens = model.encode_prompt(&full)?;
        let reuses_head = self.head.as_ref().is_some_and(|head| {
            full.starts_with(&self.head_text)
                && tokens.len() > head.tokens().len()
                && tokens.starts_with(head.tokens())
        });
        Ok(PreparedPrompt {
            tokens,
            reuses_head,
        })
    }

    /// The processed prompt for `text`, and whether the shared prefix was reused.
    fn prefix(&self, model: &B, text: &str) -> Result<(B::Prefix, bool)> {
        let prepared = self.prepare(model, text)?;
        let prefix = match (&self.head, prepared.reuses_head) {
            (Some(head), true) => model.extend(head, &prepared.tokens[head.tokens().len()..])?,
            _ => model.prefill(&prepared.tokens)?,
        };
        Ok((prefix, prepared.reuses_head))
    }
}

/// The verbalized signal's prompt and settings.
pub struct VerbalizedSetup<B: ModelBackend> {
    /// The elicitation prompt.
    pub prompt: ChatPrompt<B>,
    /// Free or constrained.
    pub mode: VerbalizedMode,
    /// Most tokens of free generation.
    pub max_tokens: usize,
    /// Settings of constrained generation.
    pub constrained: ConstrainedOptions,
    /// The parser for the dataset's labels.
    pub parser: VerbalizedParser,
}

/// The continuation scored for each label after `answer_prefix`: the label itself, with a space
/// in front when the prefix ends in a non-space character (`Label:` + ` joy`), as a writer would
/// continue it.
pub fn label_continuations(labels: &[String], answer_prefix: &str) -> Vec<String> {
    let needs_space = answer_prefix.chars().last().is_some_and(|c| !c.is_whitespace());
    labels
        .iter()
        .map(|label| if needs_space { format!(" {label}") } else { label.clone() })
        .collect()
}

/// Computes the signals of one example.
pub struct Evaluator<'a, B: ModelBackend> {
    /// The model.
    pub model: &'a B,
    /// Label names in manifest order.
    pub labels: Vec<String>,
    /// The strings scored for the logit signal, one per label (see [`label_continuations`]).
    pub label_continuations: Vec<String>,
    /// The verbalized signal, when collected.
    pub verbalized: Option<VerbalizedSetup<B>>,
    /// The label prompt of the logit signal, when collected.
    pub label_prompt: Option<ChatPrompt<B>>,
}

impl<B: ModelBackend> Evaluator<'_, B> {
    /// The verbalized records of `examples` (id, text), if that signal is on. Constrained dicts
    /// of all of them are generated together ([`ModelBackend::generate_constrained_batch`]);
    /// free answers one after another. Errors name the example.
    pub fn verbalized(&self, examples: &[(&str, &str)]) -> Result<Vec<Option<VerbalizedRecord>>> {
        let Some(setup) = &self.verbalized else {
            return Ok(vec![None; examples.len()]);
        };
        let mut prefixes = Vec::with_capacity(examples.len());
        for (id, text) in examples {
            prefixes.push(setup.prompt.prefix(self.model, text).with_context(|| format!("example '{id}'"))?);
        }
        let record = |prefix: &B::Prefix, prefix_reused: bool, raw_text: String, generated_tokens, stop_reason, numbers| VerbalizedRecord {
            mode: setup.mode.name().into(),
            prompt_tokens: prefix.tokens().len(),
            prefix_reused,
            parsed: setup.parser.parse(&raw_text),
            generated_tokens,
            stop_reason,
            raw_text,
            numbers,
        };
        match setup.mode {
            VerbalizedMode::Free => {
                let refs: Vec<&B::Prefix> = prefixes.iter().map(|(prefix, _)| prefix).collect();
                let generations =
                    self.model.generate_batch(&refs, setup.max_tokens).with_context(|| examples_context(examples))?;
                Ok(generations
                    .into_iter()
                    .zip(&prefixes)
                    .map(|(generation, (prefix, reused))| {
                        let tokens = generation.token_ids.len();
                        Some(record(prefix, *reused, generation.text, tokens, Some(generation.stop_reason), None))
                    })
                    .collect())
            }
            VerbalizedMode::Constrained => {
                let refs: Vec<&B::Prefix> = prefixes.iter().map(|(prefix, _)| prefix).collect();
                let dicts = self
                    .model
                    .generate_constrained_batch(&refs, &self.labels, &setup.constrained)
                    .with_context(|| examples_context(examples))?;
                Ok(dicts
                    .into_iter()
                    .zip(&prefixes)
                    .map(|(dict, (prefix, reused))| {
                        let tokens = dict.numbers.iter().map(|n| n.token_ids.len()).sum();
                        // A served dict comes as text only: no per-number detail to record.
                        let numbers = (!dict.numbers.is_empty()).then_some(dict.numbers);
                        Some(record(prefix, *reused, dict.text, tokens, None, numbers))
                    })
                    .collect())
            }
        }
    }

    /// The label-score records of `examples` (id, text), if that signal is on: their labels
    /// scored together ([`ModelBackend::score_labels_batch`]). Errors name the examples.
    pub fn logits(&self, examples: &[(&str, &str)]) -> Result<Vec<Option<LogitsRecord>>> {
        let Some(prompt) = &self.label_prompt else {
            return Ok(vec![None; examples.len()]);
        };
        let mut prefixes = Vec::with_capacity(examples.len());
        for (id, text) in examples {
            prefixes.push(prompt.prefix(self.model, text).with_context(|| format!("example '{id}'"))?);
        }
        let refs: Vec<&B::Prefix> = prefixes.iter().map(|(prefix, _)| prefix).collect();
        let all_scores = self
            .model
            .score_labels_batch(&refs, &self.label_continuations)
            .with_context(|| examples_context(examples))?;
        Ok(all_scores
            .into_iter()
            .zip(&prefixes)
            .map(|(scores, (prefix, prefix_reused))| {
                let log_probs: Vec<f64> = scores.labels.iter().map(|s| s.log_prob).collect();
                Some(LogitsRecord {
                    prompt_tokens: prefix.tokens().len(),
                    prefix_reused: *prefix_reused,
                    probabilities: softmax(&log_probs),
                    first_token_log_probs: scores.labels.iter().map(|s| s.first_token_log_prob).collect(),
                    token_counts: scores.labels.iter().map(|s| s.token_ids.len()).collect(),
                    outside_mass: scores.first_token_mass_outside,
                    log_probs,
                })
            })
            .collect())
    }
}

/// `example 'a'` or `examples 'a', 'b'`, for errors of a batch.
fn examples_context(examples: &[(&str, &str)]) -> String {
    let ids: Vec<String> = examples.iter().map(|(id, _)| format!("'{id}'")).collect();
    match ids.len() {
        1 => format!("example {}", ids[0]),
        _ => format!("examples {}", ids.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::label_continuations;

    #[test]
    fn continuations_get_a_space_only_after_a_non_space_prefix() {
        let labels = vec!["joy".to_string(), "sad ness".to_string()];
        assert_eq!(label_continuations(&labels, "Label:"), [" joy", " sad ness"]);
        assert_eq!(label_continuations(&labels, "Label: "), ["joy", "sad ness"]);
        assert_eq!(label_continuations(&labels, ""), ["joy", "sad ness"]);
    }
}
