//! Fitting long texts (IMDB reviews) into a token budget: keep the beginning, cut at a word
//! boundary and append [`TRUNCATION_MARKER`], measuring length with the caller's token counter (the
//! model's tokenizer in `candor run`). A word longer than [`LONGEST_UNCUT_WORD`] characters (a
//! whitespace-free script, a URL) is cut inside, so such texts keep their budget.
//!
//! The cut point is found by binary search over word boundaries, so the counter is called
//! O(log words) times; this assumes that a longer prefix never has fewer tokens, which holds for
//! whitespace counting and, up to rare merges at the cut, for BPE tokenizers. The result is always
//! checked: it has at most `budget` tokens.

use crate::error::{bail, Result};
use std::borrow::Cow;

/// Appended to a truncated text: a space and U+2026 HORIZONTAL ELLIPSIS.
pub const TRUNCATION_MARKER: &str = " …";

/// A word longer than this many characters may be cut inside (at a character boundary): a
/// whitespace-free script (Chinese, Japanese, Thai) or a long URL would otherwise be cut to
/// the marker alone.
pub const LONGEST_UNCUT_WORD: usize = 32;

/// A text fitted to a token budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedText<'a> {
    /// The text, cut and marked when it was too long.
    pub text: Cow<'a, str>,
    /// Whether the text was cut.
    pub truncated: bool,
}

/// Fits `text` into `budget` tokens as counted by `count_tokens`.
///
/// A text that fits is returned unchanged. Otherwise the longest prefix that ends at a word
/// boundary (before a whitespace run) and still fits together with [`TRUNCATION_MARKER`] is kept,
/// with trailing whitespace removed. If not even the first word fits, the result is the marker
/// alone without its leading space. Errors when the budget cannot hold the marker itself.
pub fn fit_to_budget<'a>(
    text: &'a str,
    budget: usize,
    count_tokens: impl Fn(&str) -> usize,
) -> Result<FittedText<'a>> {
    if count_tokens(text) <= budget {
        return Ok(FittedText {
            text: Cow::Borrowed(text),
            truncated: false,
        });
    }
    let bare_marker = TRUNCATION_MARKER.trim_start();
    let marker_tokens = count_tokens(bare_marker);
    if marker_tokens > budget {
        bail!(
            "a token budget of {budget} cannot hold the truncation marker \"{bare_marker}\" ({marker_tokens} tokens)"
        );
    }
    let cuts = word_ends(text);
    let fits = |cut: usize| count_tokens(&marked(text, cut)) <= budget;
    // Binary search for the last cut that fits: cuts[..lo] fit, the rest do not.
    let lo = cuts.partition_point(|&cut| fits(cut));
    let last_word_end = lo.checked_sub(1).map(|i| cuts[i]);
    let next_word_end = cuts.get(lo).copied().unwrap_or(text.len());
    let inside = cut_inside_long_word(text, last_word_end.unwrap_or(0), next_word_end, &fits);
    let text = match inside.or(last_word_end) {
        Some(cut) => marked(text, cut),
        None => bare_marker.to_string(),
    };
    Ok(FittedText {
        text: Cow::Owned(text),
        truncated: true,
    })
}

/// The longest cut inside the word of `text[start..end]` that `fits`, when that word is longer
/// than [`LONGEST_UNCUT_WORD`] characters (binary search over its character boundaries).
fn cut_inside_long_word(text: &str, start: usize, end: usize, fits: &impl Fn(usize) -> bool) -> Option<usize> {
    let word = text[start..end].trim_start();
    if word.chars().count() <= LONGEST_UNCUT_WORD {
        return None;
    }
    let word_start = end - word.len();
    let boundaries: Vec<usize> = word.char_indices().skip(1).map(|(offset, _)| word_start + offset).collect();
    let lo = boundaries.partition_point(|&cut| fits(cut));
    lo.checked_sub(1).map(|i| boundaries[i])
}

/// Byte offsets where a word ends and whitespace follows, in increasing order.
fn word_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut previous_is_space = true;
    for (offset, character) in text.char_indices() {
        let is_space = character.is_whitespace();
        if is_space && !previous_is_space {
            ends.push(offset);
        }
        previous_is_space = is_space;
    }
    ends
}

fn marked(text: &str, cut: usize) -> String {
    let mut kept = text[..cut].trim_end().to_string();
    kept.push_str(TRUNCATION_MARKER);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn short_text_is_borrowed_unchanged() {
        let fitted = fit_to_budget("one two three", 3, words).expect("fits");
        assert!(!fitted.truncated);
        assert!(matches!(fitted.text, Cow::Borrowed("one two three")));
    }

    #[test]
    fn long_text_keeps_the_words_that_fit_with_the_marker() {
        // Budget 4 whitespace tokens: three words plus the marker "…".
        let fitted = fit_to_budget("one two  three four five", 4, words).expect("fits");
        assert_eq!(fitted.text, "one two  three …");
        assert!(fitted.truncated);
        assert_eq!(words(&fitted.text), 4);
    }

    #[test]
    fn cut_never_splits_a_word() {
        let text = "naïve café résumé über";
        let fitted = fit_to_budget(text, 3, words).expect("fits");
        assert_eq!(fitted.text, "naïve café …");
    }

    #[test]
    fn a_first_word_that_does_not_fit_leaves_the_marker_alone() {
        // Character counter: "…" is 1 character, "abcdef …" is 8.
        let chars = |text: &str| text.chars().count();
        let fitted = fit_to_budget("abcdef ghij", 3, chars).expect("fits");
        assert_eq!(fitted.text, "…");
        assert!(fitted.truncated);
    }

    #[test]
    fn a_whitespace_free_text_keeps_most_of_its_budget() {
        // 200,000 CJK characters, one token each: the cut falls inside the one "word".
        let chars = |text: &str| text.chars().filter(|c| !c.is_whitespace()).count();
        let text = "我们今天很高兴见到你".repeat(20_000);
        let fitted = fit_to_budget(&text, 1000, chars).expect("fits");
        assert!(fitted.truncated);
        assert_eq!(chars(&fitted.text), 1000, "{} tokens kept", chars(&fitted.text));
        assert!(fitted.text.ends_with(" …") && text.starts_with(fitted.text.trim_end_matches(" …")));
        // After a few words, a long unspaced run is cut inside too.
        let mixed = format!("short words then {}", "語".repeat(500));
        let fitted = fit_to_budget(&mixed, 100, chars).expect("fits");
        assert_eq!(chars(&fitted.text), 100);
    }

    #[test]
    fn a_budget_below_the_marker_is_an_error() {
        let error = fit_to_budget("one two", 0, words).unwrap_err().to_string();
        assert!(
            error.contains("budget of 0 cannot hold the truncation marker"),
            "{error}"
        );
        assert!(error.contains("(1 tokens)"), "{error}");
    }

    #[test]
    fn result_matches_a_naive_word_by_word_scan() {
        let text = "the quick brown fox jumps over the lazy dog and keeps running far away";
        for budget in 1..=14 {
            let fitted = fit_to_budget(text, budget, words).expect("fits");
            let all: Vec<&str> = text.split_whitespace().collect();
            let expected = if all.len() <= budget {
                text.to_string()
            } else {
                // Naive: the first budget-1 words, then the marker.
                format!("{} …", all[..budget - 1].join(" "))
                    .trim_start()
                    .to_string()
            };
            assert_eq!(fitted.text, expected, "budget {budget}");
            assert!(words(&fitted.text) <= budget);
        }
    }
}
