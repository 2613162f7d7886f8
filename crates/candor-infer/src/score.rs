//! Exact label scoring: the log-probability of each label string as the continuation of a
//! prompt, summed over its tokens, plus the first-token variant and the probability mass that
//! falls outside the labels' first tokens. Prompts are held as [`Prefix`]es (KV cache + the
//! next-token logits) so a shared instruction prefix is computed once and extended per example.
//!
//! Tokenization convention: each label is tokenized on its own (special tokens matched, nothing
//! added) and appended to the prompt's tokens. The prompt should therefore end at a natural
//! token boundary, e.g. right after `<|im_start|>assistant\n`; a label that follows a space in
//! running text should carry that space itself (`" positive"`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};
use crate::loader::LanguageModel;
use crate::model::KvCache;

/// A processed token sequence: its KV cache and the logits of the token that follows it.
/// Clone it to branch (the tensors are shared, not copied).
#[derive(Debug, Clone)]
pub struct Prefix {
    cache: KvCache,
    tokens: Vec<u32>,
    next_logits: Tensor,
}

impl Prefix {
    /// The tokens processed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The KV cache of those tokens.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Raw logits `[vocab]` of the next token.
    pub fn next_logits(&self) -> &Tensor {
        &self.next_logits
    }

    /// The next token's log-probabilities (log-softmax of the logits in f64).
    pub fn next_log_probs(&self) -> Result<Vec<f64>> {
        log_softmax(&self.next_logits)
    }
}

/// The score of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label as given.
    pub label: String,
    /// Its tokens as appended to the prompt.
    pub token_ids: Vec<u32>,
    /// Sum over its tokens of log p(token | prompt, previous label tokens), natural log.
    pub log_prob: f64,
    /// log p(first token | prompt).
    pub first_token_log_prob: f64,
}

/// Scores of a set of labels after one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScores {
    /// One entry per label, in the order given.
    pub labels: Vec<LabelScore>,
    /// Probability of the next token NOT being the first token of any label
    /// (1 − Σ over the distinct first tokens of their probabilities).
    pub first_token_mass_outside: f64,
}

/// Log-probabilities of the tokens of one prompt (see [`LanguageModel::prompt_log_probs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogProbs {
    /// One entry per prompt token.
    pub tokens: Vec<PromptTokenLogProb>,
    /// The `top` most likely tokens after the whole prompt (at least the greedy one).
    pub next: Vec<(u32, f64)>,
}

/// One prompt token's log-probability given the tokens before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTokenLogProb {
    /// log p(token | earlier tokens); `None` for the first token.
    pub log_prob: Option<f64>,
    /// 1 + the number of tokens more likely at this position (0 for the first token).
    pub rank: usize,
    /// The `top` most likely tokens at this position (empty for the first).
    pub top: Vec<(u32, f64)>,
}

/// The `top` largest entries of `log_probs` (at least one), largest first, ties by lower id.
fn top_entries(log_probs: &[f64], top: usize) -> Vec<(u32, f64)> {
    let mut ids: Vec<u32> = (0..log_probs.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| log_probs[*b as usize].total_cmp(&log_probs[*a as usize]).then(a.cmp(b));
    let keep = top.max(1).min(ids.len());
    if keep < ids.len() {
        ids.select_nth_unstable_by(keep - 1, by_value);
        ids.truncate(keep);
    }
    ids.sort_unstable_by(by_value);
    ids.into_iter().map(|id| (id, log_probs[id as usize])).collect()
}

/// Log-softmax of a `[vocab]` logits tensor, accumulated in f64.
pub(crate) fn log_softmax(logits: &Tensor) -> Result<Vec<f64>> {
    let values = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    Ok(log_softmax_values(&values))
}

///
/// The exponentials `e^(v - max)` come from [`exp_nonpositive`] in a plain loop, which the
/// compiler vectorizes (a `map` + `collect` stayed scalar), and are summed in [`SUM_LANES`]
/// partial sums added pairwise at the end. With the library `exp` (one call per vocabulary
/// entry) and one running sum, the log-softmax of a 49,152-entry vocabulary was ~4.5% of a
/// 16-sequence decode step (perf), on one core while the other waited; now 1.7%.
pub(crate) fn log_softmax_values(values: &[f32]) -> Vec<f64> {
    let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let mut out = vec![0f64; values.len()];
    for (o, &v) in out.iter_mut().zip(values) {
        *o = exp_nonpositive(v as f64 - max);
    }
    let mut sums = [0f64; SUM_LANES];
    let chunks = out.chunks_exact(SUM_LANES);
    let tail: f64 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (sum, &e) in sums.iter_mut().zip(chunk) {
            *sum += e;
        }
    }
    let mut width = SUM_LANES / 2;
    while width > 0 {
        for lane in 0..width {
            sums[lane] += sums[lane + width];
        }
        width /= 2;
    }
    let log_z = max + (sums[0] + tail).ln();
    for (o, &v) in out.iter_mut().zip(values) {
        *o = v as f64 - log_z;
    }
    out
}

/// Partial sums of [`log_softmax_values`]: one AVX-512 register of f64.
const SUM_LANES: usize = 8;

/// `e^x` for `x ≤ 0` in f64, within 2 ulp of the exact value; 0 below -708 (where `e^x` <
/// 3.3e-308 and `2^n` would leave the normal range; next to the maximum's `e^0 = 1` it does
/// not move a sum).
///
/// The reduction of the attention's f32 version: `n` = x·log₂e rounded to the nearest integer
/// (adding 1.5·2⁵² leaves it in the low mantissa bits), `r = x - n·ln 2` in two parts
/// (Cody–Waite, fdlibm's split: `n · LN2_HIGH` is exact), `e^r` by its Taylor polynomial to
/// degree 13 (|r| ≲ ln 2 / 2: truncation error below 3e-17), times `2^n` from its exponent
/// bits. Plain multiplies and adds, so every build gives the same bits.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const ROUNDER: f64 = 6_755_399_441_055_744.0; // 1.5 · 2⁵²
    const LN2_HIGH: f64 = 0.693_147_180_369_123_8; // ln 2's leading 32 bits
    const LN2_LOW: f64 = 1.908_214_929_270_587_7e-10; // ln 2 - LN2_HIGH
    const TAYLOR: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let clamped = x.max(-708.0);
    let shifted = clamped * std::f64::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = (clamped - n * LN2_HIGH) - n * LN2_LOW;
    let polynomial = TAYLOR[..13].iter().rev().fold(TAYLOR[13], |p, &c| p * r + c);
    let exponent = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(1023);
    let power = f64::from_bits(exponent << 52);
    match x < -708.0 {
        true => 0.0,
        false => polynomial * power,
    }
}

impl LanguageModel {
    /// Process `tokens` from an empty cache.
    pub fn prefill(&self, tokens: &[u32]) -> Result<Prefix> {
        let empty = Prefix {
            cache: self.model().new_cache(),
            tokens: Vec::new(),
            next_logits: Tensor::zeros(
                self.model().config().vocab_size,
                candle_core::DType::F32,
                self.model().device(),
            )?,
        };
        self.extend(&empty, tokens)
    }

    /// Process `tokens` after `prefix` (as one chunk), leaving `prefix` untouched.
    pub fn extend(&self, prefix: &Prefix, tokens: &[u32]) -> Result<Prefix> {
        let mut cache = prefix.cache.clone();
        let next_logits = self.model().forward_last(tokens, &mut cache)?;
        let mut all_tokens = prefix.tokens.clone();
        all_tokens.extend_from_slice(tokens);
        Ok(Prefix {
            cache,
            tokens: all_tokens,
            next_logits,
        })
    }

    /// Process `chunks[i]` after `prefixes[i]` for every i as one batch (see
    /// [`crate::Model::forward_many_last`]); the prefixes are left as they are.
    pub fn extend_many(&self, prefixes: &[&Prefix], chunks: &[&[u32]]) -> Result<Vec<Prefix>> {
        let mut caches: Vec<KvCache> = prefixes.iter().map(|p| p.cache.clone()).collect();
        let mut cache_refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let logits = self.model().forward_many_last(chunks, &mut cache_refs)?;
        Ok(prefixes
            .iter()
            .zip(chunks)
            .zip(caches.into_iter().zip(logits))
            .map(|((prefix, chunk), (cache, next_logits))| Prefix {
                cache,
                tokens: [prefix.tokens.as_slice(), chunk].concat(),
                next_logits,
            })
            .collect())
    }

    /// [`LanguageModel::extend_many`] after the first `kept[i]` tokens of `prefixes[i]` (the
    /// rest set aside, as when the tokens across a boundary are re-tokenized together).
    pub(crate) fn extend_many_after(&self, prefixes: &[&Prefix], kept: &[usize], chunks: &[&[u32]]) -> Result<Vec<Prefix>> {
        let shortened: Vec<Prefix> = prefixes
            .iter()
            .zip(kept)
            .map(|(p, &keep)| Prefix {
                cache: p.cache.truncated(keep),
                tokens: p.tokens[..keep.min(p.tokens.len())].to_vec(),
                // Not read: every chunk is non-empty, so the extension computes its own.
                next_logits: p.next_logits.clone(),
            })
            .collect();
        self.extend_many(&shortened.iter().collect::<Vec<_>>(), chunks)
    }

    /// Tokenize `text` and process it after `prefix`.
    pub fn extend_text(&self, prefix: &Prefix, text: &str) -> Result<Prefix> {
        self.extend(prefix, &self.encode(text)?)
    }

    /// Tokenize `text` as a whole prompt ([`LanguageModel::encode_prompt`]: BOS added when
    /// the model wants one) and process it from an empty cache.
    pub fn prefill_text(&self, text: &str) -> Result<Prefix> {
        self.prefill(&self.encode_prompt(text)?)
    }

    /// The log-probability of every token of each prompt given the tokens before it, with the
    /// `top` most likely tokens at each position and after the prompt.
    ///
    /// The prompts' shared context runs first, then the rest of each prompt as a batch on its
    /// cache, the way [`LanguageModel::score_labels`] runs labels after a prompt: a rest's
    /// first token is read from the context's last row, its later tokens from one batch of the
    /// multi-token rests without their last token. `chunks` says how a client processed the
    /// context (e.g. `[shared instruction head, the example's part]`): the context runs in
    /// those chunks, its last row through the one-row path, so the numbers are those of a local
    /// run over the same chunks, bit for bit. Empty `chunks`: the prompts' whole common prefix
    /// in one chunk.
    pub fn prompt_log_probs(&self, prompts: &[Vec<u32>], top: usize, chunks: &[usize]) -> Result<Vec<PromptLogProbs>> {
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(InferError::InvalidInput(format!("prompt {i} has no tokens")));
        }
        let shared = common_prefix_len(prompts);
        if shared == 0 && chunks.is_empty() {
            // No common first token: each prompt on its own.
            return prompts.iter().map(|p| Ok(self.prompt_log_probs(std::slice::from_ref(p), top, &[])?.remove(0))).collect();
        }
        let chunks = match chunks {
            [] => vec![shared],
            given if given.contains(&0) || given.iter().sum::<usize>() > shared => {
                return Err(InferError::InvalidInput(format!(
                    "prefix chunks {given:?} do not fit the prompts' common prefix of {shared} tokens"
                )))
            }
            given => given.to_vec(),
        };
        for prompt in prompts {
            self.model().check_token_ids(prompt)?;
        }
        let (context_rows, cache) = self.context_rows(&prompts[0], &chunks)?;
        let context = context_rows.len();
        let rests: Vec<&[u32]> = prompts.iter().map(|p| &p[context..]).collect();
        let rest_rows = self.rest_rows(&rests, &cache)?;
        prompts
            .iter()
            .zip(rest_rows)
            .map(|(prompt, (rest, after))| {
                // rows[i] is the distribution of token i + 1.
                let rows: Vec<&Vec<f64>> = context_rows.iter().chain(&rest).collect();
                let mut tokens = vec![PromptTokenLogProb { log_prob: None, rank: 0, top: Vec::new() }];
                for (row, &token) in rows.iter().zip(&prompt[1..]) {
                    let log_prob = row[token as usize];
                    let rank = 1 + row.iter().filter(|&&lp| lp > log_prob).count();
                    tokens.push(PromptTokenLogProb { log_prob: Some(log_prob), rank, top: top_entries(row, top) });
                }
                let next = top_entries(after.as_ref().unwrap_or(rows[context - 1]), top);
                Ok(PromptLogProbs { tokens, next })
            })
            .collect()
    }

    /// Log-probs of every row of `prompt`'s first `Σ chunks` tokens, run chunk by chunk (the
    /// last chunk's last row through the one-row path), and the cache after them.
    fn context_rows(&self, prompt: &[u32], chunks: &[usize]) -> Result<(Vec<Vec<f64>>, KvCache)> {
        let mut cache = self.model().new_cache();
        let mut rows = Vec::new();
        let mut start = 0;
        for (i, &len) in chunks.iter().enumerate() {
            let piece = &prompt[start..start + len];
            let before = (i + 1 == chunks.len()).then(|| cache.clone());
            let logits = self.model().forward(piece, &mut cache)?;
            for row in 0..len {
                rows.push(log_softmax(&logits.get(row)?)?);
            }
            if let (Some(mut before), Some(last)) = (before, rows.last_mut()) {
                *last = log_softmax(&self.model().forward_last(piece, &mut before)?)?;
            }
            start += len;
        }
        Ok((rows, cache))
    }

    /// For each rest after the context: the log-prob rows of its tokens after the first (one
    /// batch of the multi-token rests without their last token, as label scoring runs them),
    /// and the row after its last token (a second batch; `None` for an empty rest).
    fn rest_rows(&self, rests: &[&[u32]], cache: &KvCache) -> Result<Vec<RestRows>> {
        let multi: Vec<Vec<u32>> = rests.iter().filter(|r| r.len() > 1).map(|r| r[..r.len() - 1].to_vec()).collect();
        let whole: Vec<Vec<u32>> = rests.iter().filter(|r| !r.is_empty()).map(|r| r.to_vec()).collect();
        let batch = |continuations: &[Vec<u32>]| match continuations.is_empty() {
            true => Ok(Vec::new()),
            false => self.model().forward_batch(continuations, cache),
        };
        let (mut inner, mut after) = (batch(&multi)?.into_iter(), batch(&whole)?.into_iter());
        let missing = || InferError::InvalidInput("internal error: a continuation has no logits".into());
        rests
            .iter()
            .map(|rest| {
                let rows = match rest.len() > 1 {
                    true => {
                        let logits = inner.next().ok_or_else(missing)?;
                        (0..rest.len() - 1).map(|row| log_softmax(&logits.get(row)?)).collect::<Result<_>>()?
                    }
                    false => Vec::new(),
                };
                let last = match rest.is_empty() {
                    true => None,
                    false => Some(log_softmax(&after.next().ok_or_else(missing)?.get(rest.len() - 1)?)?),
                };
                Ok((rows, last))
            })
            .collect()
    }

    /// Score `labels` as continuations of `prefix`. All multi-token labels run as one batch
    /// on top of the prefix's cache; see the module docs for the tokenization convention.
    pub fn score_labels(&self, prefix: &Prefix, labels: &[String]) -> Result<LabelScores> {
        if prefix.tokens.is_empty() {
            return Err(InferError::InvalidInput(
                "score_labels needs a non-empty prompt".into(),
            ));
        }
        if labels.is_empty() {
            return Err(InferError::InvalidInput(
                "score_labels needs at least one label".into(),
            ));
        }
        if let Some(label) = labels.iter().find(|label| label.is_empty()) {
            return Err(InferError::InvalidInput(format!("label `{label}` has no tokens")));
        }
        // Each label as the model reads it after the prompt, not tokenized on its own.
        let label_tokens = self.tokenizer().encode_each_after(&prefix.tokens, labels)?;
        for ids in &label_tokens {
            self.model().check_token_ids(ids)?;
        }
        let first_log_probs = prefix.next_log_probs()?;
        // Tokens after the first are predicted from the label's own earlier tokens.
        let multi: Vec<usize> = (0..labels.len())
            .filter(|&i| label_tokens[i].len() > 1)
            .collect();
        let continuations: Vec<Vec<u32>> = multi
            .iter()
            .map(|&i| label_tokens[i][..label_tokens[i].len() - 1].to_vec())
            .collect();
        let batch_logits = self.model().forward_batch(&continuations, &prefix.cache)?;
        let mut scores = Vec::with_capacity(labels.len());
        for (i, (label, ids)) in labels.iter().zip(&label_tokens).enumerate() {
            let first = first_log_probs[ids[0] as usize];
            let mut total = first;
            if let Some(slot) = multi.iter().position(|&m| m == i) {
                let logits = &batch_logits[slot];
                for (row, &next) in ids[1..].iter().enumerate() {
                    total += log_softmax(&logits.get(row)?)?[next as usize];
                }
            }
            scores.push(LabelScore {
                label: label.clone(),
                token_ids: ids.clone(),
                log_prob: total,
                first_token_log_prob: first,
            });
        }
        let mut firsts: Vec<u32> = label_tokens.iter().map(|ids| ids[0]).collect();
        firsts.sort_unstable();
        firsts.dedup();
        let inside: f64 = firsts
            .iter()
            .map(|&id| first_log_probs[id as usize].exp())
            .sum();
        Ok(LabelScores {
            labels: scores,
            first_token_mass_outside: (1.0 - inside).max(0.0),
        })
    }
}

/// A rest's log-prob rows after its first token, and the row after its last token.
type RestRows = (Vec<Vec<f64>>, Option<Vec<f64>>);

/// Length of the longest prefix all `prompts` share.
fn common_prefix_len(prompts: &[Vec<u32>]) -> usize {
    let Some(first) = prompts.first() else { return 0 };
    prompts.iter().skip(1).fold(first.len(), |len, p| first.iter().zip(p).take(len).take_while(|(a, b)| a == b).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_entries_are_the_largest_in_order_with_ties_by_id() {
        let lp = [-3.0, -1.0, -2.0, -1.0, -5.0];
        assert_eq!(top_entries(&lp, 3), vec![(1, -1.0), (3, -1.0), (2, -2.0)]);
        assert_eq!(top_entries(&lp, 0), vec![(1, -1.0)]);
        assert_eq!(top_entries(&lp, 9).len(), 5);
    }

    #[test]
    fn common_prefix_of_prompts() {
        assert_eq!(common_prefix_len(&[vec![1, 2, 3], vec![1, 2, 4], vec![1, 2]]), 2);
        assert_eq!(common_prefix_len(&[vec![1, 2, 3]]), 3);
        assert_eq!(common_prefix_len(&[vec![1], vec![2]]), 0);
    }

    #[test]
    fn exp_nonpositive_is_within_two_ulp_of_the_library_exponential() {
        let ulp = |v: f64| f64::from_bits(v.to_bits() + 1) - v;
        let mut worst = 0f64;
        for i in 0..=2_000_000u32 {
            let x = -708.0 * i as f64 / 2_000_000.0;
            let (ours, exact) = (exp_nonpositive(x), x.exp());
            worst = worst.max((ours - exact).abs() / ulp(exact));
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-709.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn log_softmax_matches_the_library_exponential_sum_on_a_long_row_with_a_tail() {
        // 49,155 logits: 6,144 runs of the 8 partial sums, then 3 left over.
        let logits: Vec<f32> = (0..49_155u32).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 40.0).collect();
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let log_z = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        for (i, (&v, &ours)) in logits.iter().zip(&log_softmax_values(&logits)).enumerate() {
            assert!((ours - (v as f64 - log_z)).abs() < 1e-12, "entry {i}: {ours} vs {}", v as f64 - log_z);
        }
    }

    #[test]
    fn log_softmax_matches_hand_computation() {
        // logits [0, ln 3]: probabilities 1/4 and 3/4.
        let lp = log_softmax_values(&[0.0, 3f32.ln()]);
        assert!((lp[0] - 0.25f64.ln()).abs() < 1e-7);
        assert!((lp[1] - 0.75f64.ln()).abs() < 1e-7);
        // Shift invariance with large logits (no overflow).
        let big = log_softmax_values(&[1000.0, 1000.0 + 3f32.ln()]);
        assert!((big[1] - 0.75f64.ln()).abs() < 1e-4);
    }
}
