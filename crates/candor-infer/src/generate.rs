//! Generation: free greedy decoding (does the model write a valid distribution by itself?)
//! and constrained verbalized generation, where the dict skeleton
//! `{"<label 1>": <number>, "<label 2>": <number>}` is forced (each forced piece runs as one
//! prefill chunk) and only the numbers are generated, greedily, under a number grammar.
//!
//! The number grammar accepts probabilities written as `0`, `1`, `0.` followed by 1 to
//! `max_fraction_digits` digits, or `1.` followed by 1 to `max_fraction_digits` zeros. At each
//! step every token that would leave the grammar is masked; a number ends when the best allowed
//! choice is the first token of the next skeleton piece, or when it cannot be extended.

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

/// Settings of constrained verbalized generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstrainedOptions {
    /// Most digits after the decimal point (at least 1).
    pub max_fraction_digits: usize,
}

impl Default for ConstrainedOptions {
    fn default() -> Self {
        Self {
            max_fraction_digits: 3,
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
    /// Its value, in [0, 1].
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

impl LanguageModel {
    /// Greedy generation after `prefix` until an end token or `max_tokens` tokens.
    pub fn generate(&self, prefix: &Prefix, max_tokens: usize) -> Result<Generation> {
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
            let next = argmax(&log_probs) as u32;
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
        let pieces = skeleton_pieces(labels)?;
        let mut text = pieces[0].clone();
        let mut state = self.extend_text(prefix, &pieces[0])?;
        let mut numbers = Vec::with_capacity(labels.len());
        for (label, next_piece) in labels.iter().zip(&pieces[1..]) {
            let next_ids = self.encode(next_piece)?;
            let Some(&end_token) = next_ids.first() else {
                return Err(InferError::InvalidInput(format!(
                    "skeleton piece `{next_piece}` has no tokens"
                )));
            };
            let (number, after_number) = self.generate_number(&state, label, end_token, options)?;
            text.push_str(&number.text);
            text.push_str(next_piece);
            state = self.extend(&after_number, &next_ids)?;
            numbers.push(number);
        }
        Ok(ConstrainedGeneration { text, numbers })
    }

    /// Generate one number greedily under the grammar; returns it and the state after its tokens.
    fn generate_number(
        &self,
        start: &Prefix,
        label: &str,
        end_token: u32,
        options: &ConstrainedOptions,
    ) -> Result<(GeneratedNumber, Prefix)> {
        let number_tokens = self.number_tokens();
        let mut state = start.clone();
        let (mut text, mut token_ids) = (String::new(), Vec::new());
        let (mut log_prob, mut masked_log_prob) = (0.0, 0.0);
        loop {
            let log_probs = state.next_log_probs()?;
            let mut allowed: Vec<(u32, &str)> = number_tokens
                .iter()
                .filter(|(_, t)| {
                    is_number_prefix(&format!("{text}{t}"), options.max_fraction_digits)
                })
                .map(|(id, t)| (*id, t.as_str()))
                .collect();
            let can_end = is_complete_number(&text, options.max_fraction_digits);
            if allowed.is_empty() && can_end {
                break;
            }
            if can_end {
                allowed.push((end_token, ""));
            }
            if allowed.is_empty() {
                return Err(InferError::InvalidInput(
                    "the vocabulary has no digit tokens to write a number with".into(),
                ));
            }
            let allowed_lp: Vec<f64> = allowed
                .iter()
                .map(|(id, _)| log_probs[*id as usize])
                .collect();
            let best = argmax(&allowed_lp);
            let renormalised =
                log_softmax_values(&allowed_lp.iter().map(|&v| v as f32).collect::<Vec<_>>());
            masked_log_prob += renormalised[best];
            let (id, piece) = allowed[best];
            if can_end && best == allowed.len() - 1 {
                break;
            }
            log_prob += allowed_lp[best];
            text.push_str(piece);
            token_ids.push(id);
            state = self.extend(&state, &[id])?;
        }
        let value = text.parse::<f64>().map_err(|e| {
            InferError::InvalidInput(format!("generated number `{text}` does not parse: {e}"))
        })?;
        let number = GeneratedNumber {
            label: label.to_string(),
            text,
            value,
            token_ids,
            log_prob,
            masked_log_prob,
        };
        Ok((number, state))
    }
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
    fn skeleton_escapes_labels() {
        let labels = vec!["a".to_string(), "say \"hi\"".to_string()];
        assert_eq!(
            skeleton_pieces(&labels).unwrap(),
            ["{\"a\": ", ", \"say \\\"hi\\\"\": ", "}"]
        );
    }

    #[test]
    fn argmax_prefers_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
