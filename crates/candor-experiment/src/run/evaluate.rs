//! Turning one example text into its signals with a loaded model: chat-rendering the prompt
//! templates, reusing each template's shared prefix, scoring the labels at the answer position and
//! generating the verbalized distribution (free or constrained) of every elicitation variant
//! ([`super::elicitation`]): labels in a per-example order, a top-1 dict whose label is the most
//! probable key, or several seeded samples averaged.
//!
//! Prefix reuse: each template is rendered once with a sentinel in place of `{text}`; the chat text
//! before the sentinel is tokenized and prefilled once. An example's prompt is always rendered and
//! tokenized whole, and the shared prefix is reused only when those tokens start with the prefix's
//! tokens, so the token sequence the model sees never depends on reuse. Otherwise (a chat template
//! that rewrites the message, a merge across the boundary) the example is prefilled from scratch.

use crate::error::{Context, Result};
use candor_backend::{ConstrainedGeneration, ConstrainedOptions, GeneratedNumber, Generation, ModelBackend, PromptState, StopReason};
use candor_calib::softmax::softmax;
use candor_calib::{average_distributions, VerbalizedDistribution, VerbalizedParser};

use super::elicitation::{Elicitation, PermutedLabels, SampleSettings};
use super::predictions::{LogitsRecord, SampledAnswer, VerbalizedRecord};
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
        Ok(self.prepare(model, &self.values, text)?.tokens.len())
    }

    /// The whole prompt for `text` as the model receives it: the chat-rendered template followed
    /// by the answer prefix.
    pub fn full_text(&self, model: &B, text: &str) -> Result<String> {
        self.full_text_with(model, &self.values, text)
    }

    /// [`ChatPrompt::full_text`] with the placeholders other than `{text}` filled from `values`
    /// (labels in another order).
    pub fn full_text_with(&self, model: &B, values: &PromptValues, text: &str) -> Result<String> {
        Ok(self.format.wrap(model, &self.template.render(values, text))? + &self.answer_prefix)
    }

    fn prepare(&self, model: &B, values: &PromptValues, text: &str) -> Result<PreparedPrompt> {
        let full = self.full_text_with(model, values, text)?;
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
        self.prefix_with(model, &self.values, text)
    }

    /// [`ChatPrompt::prefix`] with the placeholders filled from `values`; the shared prefix is
    /// reused only where the prompt's tokens start with it.
    fn prefix_with(&self, model: &B, values: &PromptValues, text: &str) -> Result<(B::Prefix, bool)> {
        let prepared = self.prepare(model, values, text)?;
        let prefix = match (&self.head, prepared.reuses_head) {
            (Some(head), true) => model.extend(head, &prepared.tokens[head.tokens().len()..])?,
            _ => model.prefill(&prepared.tokens)?,
        };
        Ok((prefix, prepared.reuses_head))
    }
}

/// One verbalized signal's prompt and settings.
pub struct VerbalizedSetup<B: ModelBackend> {
    /// The elicitation variant (which signal the answers form).
    pub elicitation: Elicitation,
    /// The labels' per-example order (the `permuted` variant; `None`: manifest order).
    pub permuted: Option<PermutedLabels>,
    /// Answers sampled and averaged (the `sampled` variant; `None`: one greedy answer).
    pub sampling: Option<SampleSettings>,
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

impl<B: ModelBackend> VerbalizedSetup<B> {
    /// The distribution read from an answer: a top-1 dict for `top1`, the whole distribution
    /// otherwise.
    fn parse(&self, text: &str) -> VerbalizedDistribution {
        match self.elicitation {
            Elicitation::Top1 => self.parser.parse_top1(text),
            _ => self.parser.parse(text),
        }
    }

    /// The whole prompt of the example at `position` with text `text`, as the model receives it.
    pub fn full_text(&self, model: &B, position: usize, text: &str) -> Result<String> {
        match &self.permuted {
            Some(permuted) => self.prompt.full_text_with(model, &permuted.values(&permuted.order(position)), text),
            None => self.prompt.full_text(model, text),
        }
    }

    /// Tokens of the prompt without the example text: with permuted labels, the most over the
    /// orders of the `examples` positions of the sampled dataset (orders may tokenize apart).
    pub fn overhead_tokens(&self, model: &B, examples: usize) -> Result<usize> {
        let Some(permuted) = &self.permuted else {
            return self.prompt.token_count(model, "");
        };
        let mut most = 0;
        for position in 0..examples {
            let values = permuted.values(&permuted.order(position));
            most = most.max(self.prompt.prepare(model, &values, "")?.tokens.len());
        }
        Ok(most)
    }
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
    /// The verbalized signals collected (one per elicitation variant, in canonical order).
    pub verbalized: Vec<VerbalizedSetup<B>>,
    /// The label prompt of the logit signal, when collected.
    pub label_prompt: Option<ChatPrompt<B>>,
}

impl<B: ModelBackend> Evaluator<'_, B> {
    /// The verbalized records of `examples` (id, text) at `positions` (their places in the
    /// sampled dataset), one list per collected variant, in the order of `self.verbalized`.
    pub fn verbalized(&self, examples: &[(&str, &str)], positions: &[usize]) -> Result<Vec<Vec<VerbalizedRecord>>> {
        self.verbalized
            .iter()
            .map(|setup| {
                self.verbalized_of(setup, examples, positions)
                    .with_context(|| format!("the {} signal", setup.elicitation.signal_name()))
            })
            .collect()
    }

    /// One variant's records. Constrained dicts of examples with the same label order are
    /// generated together ([`ModelBackend::generate_constrained_batch`]); free answers one
    /// after another. Errors name the example.
    fn verbalized_of(
        &self,
        setup: &VerbalizedSetup<B>,
        examples: &[(&str, &str)],
        positions: &[usize],
    ) -> Result<Vec<VerbalizedRecord>> {
        let orders: Vec<Option<Vec<usize>>> =
            positions.iter().map(|&position| setup.permuted.as_ref().map(|permuted| permuted.order(position))).collect();
        let mut prefixes = Vec::with_capacity(examples.len());
        for ((id, text), order) in examples.iter().zip(&orders) {
            let prefix = match (&setup.permuted, order) {
                (Some(permuted), Some(order)) => setup.prompt.prefix_with(self.model, &permuted.values(order), text),
                _ => setup.prompt.prefix(self.model, text),
            };
            prefixes.push(prefix.with_context(|| format!("example '{id}'"))?);
        }
        if let Some(sampling) = &setup.sampling {
            return self.sampled_records(setup, sampling, &prefixes, examples, positions);
        }
        let refs: Vec<&B::Prefix> = prefixes.iter().map(|(prefix, _)| prefix).collect();
        let answers = match setup.mode {
            VerbalizedMode::Free => {
                let generations =
                    self.model.generate_batch(&refs, setup.max_tokens).with_context(|| examples_context(examples))?;
                generations
                    .into_iter()
                    .map(Answer::free)
                    .collect()
            }
            VerbalizedMode::Constrained if setup.elicitation == Elicitation::Top1 => self.top1_answers(setup, &refs, examples)?,
            VerbalizedMode::Constrained => self.constrained_answers(setup, &refs, &orders, examples)?,
        };
        Ok(answers
            .into_iter()
            .zip(&prefixes)
            .zip(orders)
            .map(|((answer, (prefix, prefix_reused)), permutation)| VerbalizedRecord {
                mode: setup.mode.name().into(),
                prompt_tokens: prefix.tokens().len(),
                prefix_reused: *prefix_reused,
                parsed: setup.parse(&answer.text),
                generated_tokens: answer.generated_tokens,
                stop_reason: answer.stop_reason,
                raw_text: answer.text,
                numbers: answer.numbers,
                permutation,
                key_log_probs: answer.key_log_probs,
                samples: None,
                unparseable_samples: None,
            })
            .collect())
    }

    /// The `sampled` variant's records: `sampling.samples` answers per example, all examples'
    /// samples generated together, each parsed, the parsed ones averaged.
    fn sampled_records(
        &self,
        setup: &VerbalizedSetup<B>,
        sampling: &SampleSettings,
        prefixes: &[(B::Prefix, bool)],
        examples: &[(&str, &str)],
        positions: &[usize],
    ) -> Result<Vec<VerbalizedRecord>> {
        let (mut refs, mut samplings) = (Vec::new(), Vec::new());
        for ((prefix, _), &position) in prefixes.iter().zip(positions) {
            for sample in 0..sampling.samples {
                refs.push(prefix);
                samplings.push(sampling.sampling(position, sample));
            }
        }
        let answers: Vec<Answer> = match setup.mode {
            VerbalizedMode::Free => self
                .model
                .generate_sampled_batch(&refs, setup.max_tokens, &samplings)
                .with_context(|| examples_context(examples))?
                .into_iter()
                .map(Answer::free)
                .collect(),
            VerbalizedMode::Constrained => self
                .model
                .generate_constrained_sampled_batch(&refs, &self.labels, &setup.constrained, &samplings)
                .with_context(|| examples_context(examples))?
                .into_iter()
                .map(|dict| Answer::constrained(dict, None))
                .collect(),
        };
        let mut answers = answers.into_iter();
        let mut records = Vec::with_capacity(prefixes.len());
        for (prefix, prefix_reused) in prefixes {
            let samples: Vec<SampledAnswer> = answers
                .by_ref()
                .take(sampling.samples)
                .map(|answer| SampledAnswer {
                    parsed: setup.parse(&answer.text),
                    generated_tokens: answer.generated_tokens,
                    raw_text: answer.text,
                })
                .collect();
            let parsed: Vec<VerbalizedDistribution> = samples.iter().map(|sample| sample.parsed.clone()).collect();
            records.push(VerbalizedRecord {
                mode: setup.mode.name().into(),
                prompt_tokens: prefix.tokens().len(),
                prefix_reused: *prefix_reused,
                raw_text: String::new(),
                generated_tokens: samples.iter().map(|sample| sample.generated_tokens).sum(),
                stop_reason: None,
                parsed: average_distributions(&parsed, self.labels.len()),
                numbers: None,
                permutation: None,
                key_log_probs: None,
                unparseable_samples: Some(parsed.iter().filter(|p| p.probabilities.is_none()).count()),
                samples: Some(samples),
            });
        }
        Ok(records)
    }

    /// The constrained dicts after `prefixes`, keys in each example's label order (`None`:
    /// manifest order, all generated together; a permuted example is generated alone).
    fn constrained_answers(
        &self,
        setup: &VerbalizedSetup<B>,
        prefixes: &[&B::Prefix],
        orders: &[Option<Vec<usize>>],
        examples: &[(&str, &str)],
    ) -> Result<Vec<Answer>> {
        let dicts = match &setup.permuted {
            None => self
                .model
                .generate_constrained_batch(prefixes, &self.labels, &setup.constrained)
                .with_context(|| examples_context(examples))?,
            Some(permuted) => {
                let mut dicts = Vec::with_capacity(prefixes.len());
                for ((prefix, order), example) in prefixes.iter().zip(orders).zip(examples) {
                    let labels = order.as_deref().map_or_else(|| self.labels.clone(), |order| permuted.names(order));
                    let dict = self
                        .model
                        .generate_constrained(prefix, &labels, &setup.constrained)
                        .with_context(|| examples_context(std::slice::from_ref(example)))?;
                    dicts.push(dict);
                }
                dicts
            }
        };
        Ok(dicts.into_iter().map(|dict| Answer::constrained(dict, None)).collect())
    }

    /// Constrained top-1 dicts `{"<label>": <confidence>}` after `prefixes`: the label whose
    /// key the model finds most probable (ties: the first in manifest order), then its number.
    fn top1_answers(&self, setup: &VerbalizedSetup<B>, prefixes: &[&B::Prefix], examples: &[(&str, &str)]) -> Result<Vec<Answer>> {
        let keys: Vec<String> =
            self.labels.iter().map(|label| format!("{{{}: ", serde_json::Value::from(label.as_str()))).collect();
        let scores = self.model.score_labels_batch(prefixes, &keys).with_context(|| examples_context(examples))?;
        let mut answers = Vec::with_capacity(prefixes.len());
        for ((prefix, scores), example) in prefixes.iter().zip(scores).zip(examples) {
            let key_log_probs: Vec<f64> = scores.labels.iter().map(|score| score.log_prob).collect();
            let chosen = first_argmax(&key_log_probs);
            let dict = self
                .model
                .generate_constrained(prefix, std::slice::from_ref(&self.labels[chosen]), &setup.constrained)
                .with_context(|| examples_context(std::slice::from_ref(example)))?;
            answers.push(Answer::constrained(dict, Some(key_log_probs)));
        }
        Ok(answers)
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

/// A verbalized answer before it is parsed.
struct Answer {
    text: String,
    generated_tokens: usize,
    stop_reason: Option<StopReason>,
    numbers: Option<Vec<GeneratedNumber>>,
    key_log_probs: Option<Vec<f64>>,
}

impl Answer {
    /// A free generation's answer.
    fn free(generation: Generation) -> Self {
        Self {
            generated_tokens: generation.token_ids.len(),
            text: generation.text,
            stop_reason: Some(generation.stop_reason),
            numbers: None,
            key_log_probs: None,
        }
    }

    /// A constrained dict's answer.
    fn constrained(dict: ConstrainedGeneration, key_log_probs: Option<Vec<f64>>) -> Self {
        Self {
            generated_tokens: dict.numbers.iter().map(|n| n.token_ids.len()).sum(),
            // A served dict comes as text only: no per-number detail to record.
            numbers: (!dict.numbers.is_empty()).then_some(dict.numbers),
            text: dict.text,
            stop_reason: None,
            key_log_probs,
        }
    }
}

/// Index of the largest value; ties go to the lowest index.
fn first_argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (index, &value) in values.iter().enumerate() {
        if value > values[best] {
            best = index;
        }
    }
    best
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
    fn the_first_of_equal_maxima_is_chosen() {
        assert_eq!(super::first_argmax(&[-2.0, -0.5, -0.5, -3.0]), 1);
        assert_eq!(super::first_argmax(&[-1.0]), 0);
    }

    #[test]
    fn continuations_get_a_space_only_after_a_non_space_prefix() {
        let labels = vec!["joy".to_string(), "sad ness".to_string()];
        assert_eq!(label_continuations(&labels, "Label:"), [" joy", " sad ness"]);
        assert_eq!(label_continuations(&labels, "Label: "), ["joy", "sad ness"]);
        assert_eq!(label_continuations(&labels, ""), ["joy", "sad ness"]);
    }
}
