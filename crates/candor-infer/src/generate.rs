//! Generation: free greedy decoding (does the model write a valid distribution by itself?)
//! and constrained verbalized generation, where the dict skeleton
//! `{"<label 1>": <number>, "<label 2>": <number>}` is forced (each forced piece runs as one
//! prefill chunk) and only the numbers are generated, greedily, under a number grammar.
//!
//! The number grammar accepts probabilities written as `0`, `1`, `0.` followed by 1 to
//! `max_fraction_digits` digits, or `1.` followed by 1 to `max_fraction_digits` zeros; on the
//! percent scale ([`NumberScale::Percent`]) whole percentages `0` to `100`. At each
//! step every token that would leave the grammar is masked; a number ends when the best allowed
//! choice is the first token of the next skeleton piece, or when it cannot be extended.
//!
//! Both can sample instead of taking the greedy choice ([`Sampling`]): each token (among the
//! allowed ones, in a constrained dict) is drawn from softmax(log p / τ) by a ChaCha8 generator
//! seeded with the sampling's seed on its stream, so a sample depends on the seed, the stream
//! and the model only. (candle-transformers' `LogitsProcessor` would do the same draw, but the
//! crate is not among this workspace's dependencies; the draw is a few lines.)

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};
use crate::loader::LanguageModel;
use crate::score::{log_softmax_values, Prefix};

/// Why free generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence / end-of-turn token (not included in the output).
    Eos,
    /// The token budget was used up.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// The result of free greedy generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Decoded text of `token_ids`.
    pub text: String,
    /// Generated tokens (without the final EOS).
    pub token_ids: Vec<u32>,
    /// Raw log-probability of each generated token (natural log).
    pub token_log_probs: Vec<f64>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
}

/// The numbers a constrained dict holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberScale {
    /// Probabilities from 0 to 1 with at most `max_fraction_digits` decimals.
    #[default]
    Fraction,
    /// Whole percentages from 0 to 100.
    Percent,
}

/// Settings of constrained verbalized generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstrainedOptions {
    /// Most digits after the decimal point (at least 1; the fraction scale).
    pub max_fraction_digits: usize,
    /// Probabilities or percentages.
    #[serde(default)]
    pub scale: NumberScale,
}

impl Default for ConstrainedOptions {
    fn default() -> Self {
        Self {
            max_fraction_digits: 3,
            scale: NumberScale::Fraction,
        }
    }
}

/// One generated number of a constrained dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedNumber {
    /// The label it belongs to.
    pub label: String,
    /// The number as written.
    pub text: String,
    /// Its value, in [0, 1] (on the percent scale, in [0, 100]).
    pub value: f64,
    /// The tokens the model chose for it.
    pub token_ids: Vec<u32>,
    /// Σ raw (unmasked) log-probabilities of those tokens.
    pub log_prob: f64,
    /// Σ log-probabilities renormalised over the allowed tokens at each step, including the
    /// final choice of ending the number (the next skeleton piece's first token).
    pub masked_log_prob: f64,
}

/// The result of constrained verbalized generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstrainedGeneration {
    /// The whole dict as text, e.g. `{"positive": 0.9, "negative": 0.1}`.
    pub text: String,
    /// One number per label, in label order.
    pub numbers: Vec<GeneratedNumber>,
}

/// Temperature sampling with a seeded generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// τ > 0: the log-probabilities are divided by it before the softmax.
    pub temperature: f64,
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
    /// Stream of the generator (independent samples of one seed).
    pub stream: u64,
}

impl Sampling {
    fn generator(&self) -> Result<ChaCha8Rng> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(InferError::InvalidInput(format!("the sampling temperature must be finite and above 0, got {}", self.temperature)));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.stream);
        Ok(rng)
    }
}

/// An index drawn from softmax(`log_probs` / `temperature`): the first whose cumulative weight
/// exceeds a uniform draw from [0, total weight). Indices of weight 0 (log-prob −∞) are never
/// drawn.
fn sample_index(log_probs: &[f64], temperature: f64, rng: &mut ChaCha8Rng) -> usize {
    let max = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_probs.iter().map(|lp| ((lp - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let target = rng.random::<f64>() * total;
    let mut cumulative = 0.0;
    let mut last_positive = argmax(log_probs);
    for (index, weight) in weights.iter().enumerate() {
        cumulative += weight;
        if *weight > 0.0 {
            last_positive = index;
            if target < cumulative {
                return index;
            }
        }
    }
    last_positive
}

/// Index of the largest value; ties go to the lowest index.
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Whether `s` can still grow into a number of the grammar.
pub(crate) fn is_number_prefix(s: &str, max_fraction_digits: usize) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    let rest = &s[1..];
    if rest.is_empty() {
        return first == '0' || first == '1';
    }
    let Some(fraction) = rest.strip_prefix('.') else {
        return false;
    };
    let fraction_ok = match first {
        '0' => fraction.chars().all(|c| c.is_ascii_digit()),
        '1' => fraction.chars().all(|c| c == '0'),
        _ => false,
    };
    fraction_ok && fraction.len() <= max_fraction_digits
}

/// Whether `s` is a complete number of the grammar.
pub(crate) fn is_complete_number(s: &str, max_fraction_digits: usize) -> bool {
    is_number_prefix(s, max_fraction_digits) && !s.is_empty() && !s.ends_with('.')
}

/// Whether `s` can still grow into a whole percentage `0` to `100` (no leading zeros).
fn is_percent_prefix(s: &str) -> bool {
    let digits = s.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = s.len() > 1 && s.starts_with('0');
    digits && !leading_zero && s.parse::<u32>().map_or(s.is_empty(), |value| value <= 100)
}

/// Whether `s` can still grow into a number of `options`' grammar.
fn is_prefix_under(s: &str, options: &ConstrainedOptions) -> bool {
    match options.scale {
        NumberScale::Fraction => is_number_prefix(s, options.max_fraction_digits),
        NumberScale::Percent => is_percent_prefix(s),
    }
}

/// Whether `s` is a complete number of `options`' grammar.
fn is_complete_under(s: &str, options: &ConstrainedOptions) -> bool {
    match options.scale {
        NumberScale::Fraction => is_complete_number(s, options.max_fraction_digits),
        NumberScale::Percent => !s.is_empty() && is_percent_prefix(s),
    }
}

impl LanguageModel {
    /// Greedy generation after `prefix` until an end token or `max_tokens` tokens.
    pub fn generate(&self, prefix: &Prefix, max_tokens: usize) -> Result<Generation> {
        self.generate_with(prefix, max_tokens, None)
    }

    /// [`LanguageModel::generate`] with every token sampled under `sampling`.
    pub fn generate_sampled(&self, prefix: &Prefix, max_tokens: usize, sampling: &Sampling) -> Result<Generation> {
        self.generate_with(prefix, max_tokens, Some(sampling))
    }

    fn generate_with(&self, prefix: &Prefix, max_tokens: usize, sampling: Option<&Sampling>) -> Result<Generation> {
        let mut sampler = sampling.map(|s| Ok::<_, InferError>((s.temperature, s.generator()?))).transpose()?;
        let eos = self.tokenizer().eos_token_ids();
        let context = self.model().config().context_length;
        let mut state = prefix.clone();
        let mut token_ids = Vec::new();
        let mut token_log_probs = Vec::new();
        let stop_reason = loop {
            if token_ids.len() >= max_tokens {
                break StopReason::MaxTokens;
            }
            let log_probs = state.next_log_probs()?;
            let next = match &mut sampler {
                Some((temperature, rng)) => sample_index(&log_probs, *temperature, rng),
                None => argmax(&log_probs),
            } as u32;
            if eos.contains(&next) {
                break StopReason::Eos;
            }
            token_ids.push(next);
            token_log_probs.push(log_probs[next as usize]);
            if state.tokens().len() + 1 >= context {
                break StopReason::ContextFull;
            }
            state = self.extend(&state, &[next])?;
        };
        Ok(Generation {
            text: self.tokenizer().decode(&token_ids)?,
            token_ids,
            token_log_probs,
            stop_reason,
        })
    }

    /// Constrained verbalized generation of a probability for each label after `prefix`.
    pub fn generate_constrained(
        &self,
        prefix: &Prefix,
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> Result<ConstrainedGeneration> {
        let mut dicts = self.generate_constrained_many(&[prefix], labels, options)?;
        Ok(dicts.remove(0))
    }

    /// [`LanguageModel::generate_constrained`] for several prompts at once: every dict advances
    /// one step per batched forward ([`LanguageModel::extend_many`]), whatever its position —
    /// a digit being decoded or a forced skeleton piece as one chunk. Each dict is exactly the
    /// one its prompt gets alone (the same choices from the same logits, up to float rounding
    /// of the batched products).
    pub fn generate_constrained_many(
        &self,
        prefixes: &[&Prefix],
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> Result<Vec<ConstrainedGeneration>> {
        self.constrained_many(prefixes, labels, options, None)
    }

    /// [`LanguageModel::generate_constrained_many`] with each dict's numbers sampled under its
    /// own `samplings` entry (one per prefix) instead of chosen greedily.
    pub fn generate_constrained_sampled_many(
        &self,
        prefixes: &[&Prefix],
        labels: &[String],
        options: &ConstrainedOptions,
        samplings: &[Sampling],
    ) -> Result<Vec<ConstrainedGeneration>> {
        if samplings.len() != prefixes.len() {
            return Err(InferError::InvalidInput(format!("{} samplings for {} prompts", samplings.len(), prefixes.len())));
        }
        self.constrained_many(prefixes, labels, options, Some(samplings))
    }

    fn constrained_many(
        &self,
        prefixes: &[&Prefix],
        labels: &[String],
        options: &ConstrainedOptions,
        samplings: Option<&[Sampling]>,
    ) -> Result<Vec<ConstrainedGeneration>> {
        if labels.is_empty() {
            return Err(InferError::InvalidInput(
                "constrained generation needs at least one label".into(),
            ));
        }
        if options.max_fraction_digits == 0 {
            return Err(InferError::InvalidInput(
                "max_fraction_digits must be at least 1".into(),
            ));
        }
        let skeleton = Skeleton::new(self, labels)?;
        // Each dict's text before its first piece: the prompt's, when pieces are tokenized in
        // context (see `Skeleton`).
        let prompt_texts: Vec<Option<String>> = prefixes
            .iter()
            .map(|prefix| match skeleton.context_free {
                true => Ok(None),
                false => Ok(Some(self.tokenizer().context_text(prefix.tokens())?.1)),
            })
            .collect::<Result<_>>()?;
        // The first piece after each prompt: its tokens, and how many of the prompt's tokens
        // stay (in context, the prompt's last tokens and the piece may merge: `.{"` after a
        // text ending in a full stop; they are then tokenized together, as the model reads
        // the whole text).
        let (kept, first_ids): (Vec<usize>, Vec<Vec<u32>>) = prefixes
            .iter()
            .zip(&prompt_texts)
            .map(|(prefix, prompt)| match prompt {
                None => Ok((prefix.tokens().len(), skeleton.piece_ids(self, None, "", 0)?)),
                Some(prompt) => self.first_piece_in_context(prefix, prompt, &skeleton.pieces[0]),
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let first: Vec<&[u32]> = first_ids.iter().map(Vec::as_slice).collect();
        let mut dicts: Vec<DictInProgress> = self
            .extend_many_after(prefixes, &kept, &first)?
            .into_iter()
            .zip(prompt_texts)
            .enumerate()
            .map(|(i, (state, prompt_text))| {
                let sampler = samplings.map(|s| Ok::<_, InferError>((s[i].temperature, s[i].generator()?))).transpose()?;
                Ok(DictInProgress::new(state, prompt_text, &skeleton.pieces[0], sampler))
            })
            .collect::<Result<_>>()?;
        loop {
            // Every unfinished dict's choice at once: each reads only its own state and
            // generator, so the records are those of one dict after another.
            let chunks: Vec<(usize, Vec<u32>)> = dicts
                .par_iter_mut()
                .enumerate()
                .filter(|(_, dict)| dict.label < labels.len())
                .map(|(i, dict)| Ok(dict.advance(self, &skeleton, labels, options)?.map(|tokens| (i, tokens))))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            if chunks.is_empty() {
                break;
            }
            let states: Vec<&Prefix> = chunks.iter().map(|(i, _)| &dicts[*i].state).collect();
            let tokens: Vec<&[u32]> = chunks.iter().map(|(_, c)| c.as_slice()).collect();
            let next = self.extend_many(&states, &tokens)?;
            for ((i, _), state) in chunks.iter().zip(next) {
                dicts[*i].state = state;
            }
        }
        Ok(dicts
            .into_iter()
            .map(|d| ConstrainedGeneration { text: d.text, numbers: d.numbers })
            .collect())
    }
}

impl LanguageModel {
    /// How many of `prefix`'s tokens stay and the tokens that follow them when `piece` follows
    /// the prompt `prompt_text` (the prefix's text): the tokens of the whole text past the
    /// longest run it shares with the prefix's.
    fn first_piece_in_context(&self, prefix: &Prefix, prompt_text: &str, piece: &str) -> Result<(usize, Vec<u32>)> {
        let whole = self.tokenizer().encode_prompt(&format!("{prompt_text}{piece}"))?;
        let kept = prefix.tokens().iter().zip(&whole).take_while(|(a, b)| a == b).count();
        match kept {
            0 => Err(InferError::Tokenizer(format!("the prompt shares no tokens with itself followed by `{piece}`"))),
            kept if kept == whole.len() => Err(InferError::Tokenizer(format!("`{piece}` adds no tokens after the prompt"))),
            kept => Ok((kept, whole[kept..].to_vec())),
        }
    }
}

/// The forced pieces of a dict and how they are tokenized.
///
/// A piece's tokens are those it has in the dict's text, after the prompt and the numbers
/// before it. With a byte-level BPE tokenizer they are its tokens on its own (each piece starts
/// a pre-token: `{` after a newline or a space, `,` and `}` after a digit, and merges never
/// cross pre-tokens), computed once. Other tokenizers (SentencePiece) merge across the whole
/// text and may prefix a standalone text with `▁`, so each piece is tokenized in context: the
/// ids that the prompt's text, the dict so far and the piece get past those of the text before
/// the piece ([`crate::Tokenizer::encode_after_text`]).
struct Skeleton {
    /// `{"A": `, `, "B": `, ..., `}`.
    pieces: Vec<String>,
    /// Whether the pieces' standalone tokens are their tokens in context.
    context_free: bool,
    /// Standalone tokens of every piece (never empty), when context-free.
    standalone_ids: Vec<Vec<u32>>,
}

impl Skeleton {
    fn new(model: &LanguageModel, labels: &[String]) -> Result<Self> {
        let pieces = skeleton_pieces(labels)?;
        let context_free = model.tokenizer().is_byte_level();
        let standalone_ids = match context_free {
            true => pieces
                .iter()
                .map(|piece| match model.encode(piece)? {
                    ids if ids.is_empty() => Err(InferError::InvalidInput(format!("skeleton piece `{piece}` has no tokens"))),
                    ids => Ok(ids),
                })
                .collect::<Result<Vec<_>>>()?,
            false => Vec::new(),
        };
        Ok(Self { pieces, context_free, standalone_ids })
    }

    /// Tokens of piece `index` after the prompt text `prompt` (`None` when context-free) and
    /// the dict text `before` it.
    fn piece_ids(&self, model: &LanguageModel, prompt: Option<&str>, before: &str, index: usize) -> Result<Vec<u32>> {
        match prompt {
            None => Ok(self.standalone_ids[index].clone()),
            Some(prompt) => model.tokenizer().encode_after_text(&format!("{prompt}{before}"), &self.pieces[index]),
        }
    }
}

/// What a dict does next.
enum Choice {
    /// Write this digit token of the current number.
    Digit(u32),
    /// The current number is complete.
    End,
}

/// One dict being written: its state, the text so far, the finished numbers and the current one.
struct DictInProgress {
    state: Prefix,
    /// The prompt's text, when pieces are tokenized in context.
    prompt_text: Option<String>,
    /// Index of the label whose number is being generated.
    label: usize,
    text: String,
    numbers: Vec<GeneratedNumber>,
    number_text: String,
    number_ids: Vec<u32>,
    log_prob: f64,
    masked_log_prob: f64,
    /// Temperature and generator when the numbers are sampled (`None`: greedy).
    sampler: Option<(f64, ChaCha8Rng)>,
}

impl DictInProgress {
    fn new(state: Prefix, prompt_text: Option<String>, first_piece: &str, sampler: Option<(f64, ChaCha8Rng)>) -> Self {
        Self {
            sampler,
            state,
            prompt_text,
            label: 0,
            text: first_piece.to_string(),
            numbers: Vec::new(),
            number_text: String::new(),
            number_ids: Vec::new(),
            log_prob: 0.0,
            masked_log_prob: 0.0,
        }
    }

    /// The next choice under the number grammar, and the tokens to run for it: a digit, or the
    /// piece after a finished number (`None` after the last number: the closing brace needs
    /// no forward, nothing is read after it).
    fn advance(&mut self, model: &LanguageModel, skeleton: &Skeleton, labels: &[String], options: &ConstrainedOptions) -> Result<Option<Vec<u32>>> {
        match self.choose(model, skeleton, options)? {
            Choice::Digit(id) => Ok(Some(vec![id])),
            Choice::End => {
                let piece_ids = self.next_piece_ids(model, skeleton)?;
                self.finish_number(labels, skeleton)?;
                Ok((self.label < labels.len()).then_some(piece_ids))
            }
        }
    }

    /// The greedy choice under the number grammar from the next-token logits: a digit token, or
    /// the end of the number (the next piece's first token, once the number is complete).
    fn choose(&mut self, model: &LanguageModel, skeleton: &Skeleton, options: &ConstrainedOptions) -> Result<Choice> {
        let number_tokens = model.number_tokens();
        let log_probs = self.state.next_log_probs()?;
        let text = &self.number_text;
        let mut allowed: Vec<(u32, &str)> = number_tokens
            .iter()
            .filter(|(_, t)| is_prefix_under(&format!("{text}{t}"), options))
            .map(|(id, t)| (*id, t.as_str()))
            .collect();
        let can_end = is_complete_under(text, options);
        if allowed.is_empty() && can_end {
            return Ok(Choice::End);
        }
        if can_end {
            allowed.push((self.next_piece_ids(model, skeleton)?[0], ""));
        }
        if allowed.is_empty() {
            return Err(InferError::InvalidInput(
                "the vocabulary has no digit tokens to write a number with".into(),
            ));
        }
        // Ids come from the tokenizer, which may know more tokens than the model has rows.
        let allowed_lp: Vec<f64> = allowed
            .iter()
            .map(|(id, _)| log_probs.get(*id as usize).copied().ok_or_else(|| outside_vocabulary(*id, log_probs.len())))
            .collect::<Result<_>>()?;
        let best = match &mut self.sampler {
            Some((temperature, rng)) => sample_index(&allowed_lp, *temperature, rng),
            None => argmax(&allowed_lp),
        };
        let renormalised = log_softmax_values(&allowed_lp.iter().map(|&v| v as f32).collect::<Vec<_>>());
        self.masked_log_prob += renormalised[best];
        if can_end && best == allowed.len() - 1 {
            return Ok(Choice::End);
        }
        let (id, piece) = allowed[best];
        self.log_prob += allowed_lp[best];
        self.number_text.push_str(piece);
        self.number_ids.push(id);
        Ok(Choice::Digit(id))
    }

    /// Tokens of the piece after the current number, as they follow the dict so far.
    fn next_piece_ids(&self, model: &LanguageModel, skeleton: &Skeleton) -> Result<Vec<u32>> {
        let before = format!("{}{}", self.text, self.number_text);
        skeleton.piece_ids(model, self.prompt_text.as_deref(), &before, self.label + 1)
    }

    /// Records the finished number and the piece that follows it; moves to the next label.
    fn finish_number(&mut self, labels: &[String], skeleton: &Skeleton) -> Result<()> {
        let text = std::mem::take(&mut self.number_text);
        let value = text.parse::<f64>().map_err(|e| {
            InferError::InvalidInput(format!("generated number `{text}` does not parse: {e}"))
        })?;
        self.text.push_str(&text);
        self.text.push_str(&skeleton.pieces[self.label + 1]);
        self.numbers.push(GeneratedNumber {
            label: labels[self.label].clone(),
            text,
            value,
            token_ids: std::mem::take(&mut self.number_ids),
            log_prob: std::mem::take(&mut self.log_prob),
            masked_log_prob: std::mem::take(&mut self.masked_log_prob),
        });
        self.label += 1;
        Ok(())
    }
}

/// A token id the tokenizer produced that the model has no logit for.
fn outside_vocabulary(id: u32, vocab: usize) -> InferError {
    InferError::InvalidInput(format!(
        "token id {id} (a number digit or the dict's next piece, from the tokenizer) is outside the model's vocabulary of {vocab}"
    ))
}

/// The forced text pieces: `{"A": `, `, "B": `, ..., `}` — labels JSON-escaped.
fn skeleton_pieces(labels: &[String]) -> Result<Vec<String>> {
    let mut pieces = Vec::with_capacity(labels.len() + 1);
    for (i, label) in labels.iter().enumerate() {
        let key =
            serde_json::to_string(label).map_err(|e| InferError::InvalidInput(e.to_string()))?;
        pieces.push(format!("{}{key}: ", if i == 0 { "{" } else { ", " }));
    }
    pieces.push("}".to_string());
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_prefixes() {
        for ok in ["", "0", "1", "0.", "0.5", "0.123", "1.", "1.0", "1.000"] {
            assert!(is_number_prefix(ok, 3), "{ok}");
        }
        for bad in [
            "2", "00", "01", "0.1234", "1.5", "1.0001", ".5", "0..", "0.a", "10",
        ] {
            assert!(!is_number_prefix(bad, 3), "{bad}");
        }
    }

    #[test]
    fn grammar_completeness() {
        for ok in ["0", "1", "0.25", "1.0"] {
            assert!(is_complete_number(ok, 3), "{ok}");
        }
        for bad in ["", "0.", "1."] {
            assert!(!is_complete_number(bad, 3), "{bad}");
        }
    }

    #[test]
    fn percent_grammar_takes_whole_numbers_up_to_100() {
        let percent = ConstrainedOptions { max_fraction_digits: 3, scale: NumberScale::Percent };
        for ok in ["", "0", "1", "10", "100", "99", "7"] {
            assert!(is_prefix_under(ok, &percent), "{ok}");
        }
        for bad in ["101", "00", "05", "1000", "0.5", "50.", "-1", "x"] {
            assert!(!is_prefix_under(bad, &percent), "{bad}");
        }
        for complete in ["0", "5", "55", "100"] {
            assert!(is_complete_under(complete, &percent), "{complete}");
        }
        assert!(!is_complete_under("", &percent));
        // The fraction scale is the grammar above.
        let fraction = ConstrainedOptions { max_fraction_digits: 3, scale: NumberScale::Fraction };
        assert!(is_prefix_under("0.5", &fraction) && !is_prefix_under("50", &fraction));
    }

    #[test]
    fn skeleton_escapes_labels() {
        let labels = vec!["a".to_string(), "say \"hi\"".to_string()];
        assert_eq!(
            skeleton_pieces(&labels).unwrap(),
            ["{\"a\": ", ", \"say \\\"hi\\\"\": ", "}"]
        );
    }

    #[test]
    fn samples_follow_softmax_over_the_temperature() {
        // log p = ln(0.6), ln(0.3), ln(0.1), −∞. At τ = 1 the frequencies approach 0.6 / 0.3 /
        // 0.1 and the −∞ token never comes; at τ = 0.5 the weights are p², normalised:
        // 0.36 / 0.09 / 0.01 over 0.46.
        let log_probs = [0.6f64.ln(), 0.3f64.ln(), 0.1f64.ln(), f64::NEG_INFINITY];
        for (temperature, expected) in [(1.0, [0.6, 0.3, 0.1]), (0.5, [0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46])] {
            let mut rng = Sampling { temperature, seed: 11, stream: 0 }.generator().unwrap();
            let mut counts = [0usize; 4];
            let n = 200_000;
            for _ in 0..n {
                counts[sample_index(&log_probs, temperature, &mut rng)] += 1;
            }
            assert_eq!(counts[3], 0);
            for (count, p) in counts.iter().zip(expected) {
                // Five standard errors of a binomial proportion.
                let tolerance = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
                assert!((*count as f64 / n as f64 - p).abs() < tolerance, "τ {temperature}: {counts:?}");
            }
        }
    }

    #[test]
    fn a_sampling_is_a_function_of_its_seed_and_stream() {
        let draws = |seed, stream| {
            let mut rng = Sampling { temperature: 1.0, seed, stream }.generator().unwrap();
            (0..32).map(|_| sample_index(&[0.0, 0.0, 0.0], 1.0, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3, 1), draws(3, 1));
        assert_ne!(draws(3, 1), draws(3, 2));
        assert_ne!(draws(3, 1), draws(4, 1));
        assert!(Sampling { temperature: 0.0, seed: 0, stream: 0 }.generator().is_err());
        assert!(Sampling { temperature: f64::NAN, seed: 0, stream: 0 }.generator().is_err());
    }

    #[test]
    fn argmax_prefers_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
