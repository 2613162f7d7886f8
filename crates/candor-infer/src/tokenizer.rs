//! The tokenizer: loaded from a `tokenizer.json`, or built from a GGUF file's own metadata
//! (`tokenizer.ggml.*`) with the tokenizers crate, so that ids match the model's reference
//! tokenizer (llama.cpp / Hugging Face) exactly.
//!
//! Supported GGUF tokenizers: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the
//! pre-tokenizers listed in [`SUPPORTED_PRE_TOKENIZERS`], and `"llama"` (SentencePiece BPE
//! with byte fallback, converted the way Hugging Face converts it).

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::config::GgufMetadata;
use crate::error::{InferError, Result};

/// The `tokenizer.ggml.pre` values this crate can rebuild exactly.
pub const SUPPORTED_PRE_TOKENIZERS: &str = "smollm, gpt2, default, llama-bpe, llama3, qwen2";

/// GPT-2's split regex, used inside the byte-level pre-tokenizer.
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split regex (numbers in groups of up to three digits).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's fallback sequence of splits for `tokenizer.ggml.pre = "default"`.
const DEFAULT_SPLITS: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_SPLIT,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// GGUF `tokenizer.ggml.token_type` of control tokens (`<|im_start|>`, `<s>`, ...).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined added tokens.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A text tokenizer plus the model's special token ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    add_bos: bool,
    byte_level: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// Whether a pre-tokenizer is (or contains) the byte-level one.
fn has_byte_level(pre: &PreTokenizerWrapper) -> bool {
    match pre {
        PreTokenizerWrapper::ByteLevel(_) => true,
        PreTokenizerWrapper::Sequence(sequence) => sequence.as_ref().iter().any(has_byte_level),
        _ => false,
    }
}

fn tokenizer_error(e: impl std::fmt::Display) -> InferError {
    InferError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Wrap a tokenizers-crate tokenizer with the model's BOS and end-of-generation ids.
    pub fn new(
        inner: tokenizers::Tokenizer,
        bos_token_id: Option<u32>,
        eos_token_ids: Vec<u32>,
    ) -> Self {
        let byte_level = inner.get_pre_tokenizer().is_some_and(has_byte_level);
        Self {
            inner,
            bos_token_id,
            eos_token_ids,
            add_bos: false,
            byte_level,
        }
    }

    /// Whether [`Tokenizer::encode_prompt`] starts a prompt with BOS (GGUF
    /// `tokenizer.ggml.add_bos_token`, tokenizer_config.json `add_bos_token`).
    pub fn with_add_bos(mut self, add_bos: bool) -> Self {
        self.add_bos = add_bos;
        self
    }

    /// Whether prompts start with BOS for this model.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(
        path: &Path,
        bos_token_id: Option<u32>,
        eos_token_ids: Vec<u32>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(InferError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| InferError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::new(inner, bos_token_id, eos_token_ids))
    }

    /// Build the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    /// The tokenizer of a GGUF file, from its metadata alone (any architecture, vocab-only
    /// files included): what [`crate::LanguageModel::load`] uses for the model.
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        crate::gguf_guard::check_gguf_header(path)?;
        let mut file = std::fs::File::open(path).map_err(|e| InferError::io(path, e))?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).map_err(|e| InferError::InvalidGguf {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_gguf(&GgufMetadata {
            metadata: &content.metadata,
            source_name: path.display().to_string(),
        })
    }

    pub(crate) fn from_gguf(meta: &GgufMetadata<'_>) -> Result<Self> {
        let model = meta.string("tokenizer.ggml.model")?;
        let tokens = meta.string_array("tokenizer.ggml.tokens")?;
        let token_types = match meta.get("tokenizer.ggml.token_type") {
            Some(_) => integer_array(meta, "tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(InferError::invalid_model(
                &meta.source_name,
                "tokenizer.ggml.token_type",
                format!(
                    "{} entries (one per token), found {}",
                    tokens.len(),
                    token_types.len()
                ),
            ));
        }
        let mut inner = match model {
            "gpt2" => byte_level_bpe(meta, &tokens)?,
            "llama" => sentencepiece_bpe(meta, &tokens)?,
            other => {
                return Err(InferError::Tokenizer(format!(
                    "tokenizer.ggml.model `{other}` is not supported (supported: gpt2, llama)"
                )))
            }
        };
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(token, &t)| {
                AddedToken::from(token.to_string(), t == TOKEN_TYPE_CONTROL).normalized(false)
            })
            .collect();
        inner.add_special_tokens(added).map_err(tokenizer_error)?;
        let id =
            |key: &str| -> Result<Option<u32>> { Ok(meta.optional_usize(key)?.map(|v| v as u32)) };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let mut eos: Vec<u32> = [
            id("tokenizer.ggml.eos_token_id")?,
            id("tokenizer.ggml.eot_token_id")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        eos.dedup();
        // llama.cpp's defaults when the key is absent: SentencePiece models add BOS.
        let add_bos = meta
            .optional_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(model == "llama");
        Ok(Self::new(inner, bos, eos).with_add_bos(add_bos))
    }

    /// Token ids of `text`. Special tokens written in the text (e.g. `<|im_start|>`) are
    /// matched as whole tokens; no BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(tokenizer_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` as the model sees it right after the prompt ids `context`: the ids
    /// that tokenizing the context's text followed by `text` adds after the context's own ids.
    /// A leading BOS of `context` is set aside (it is not part of the text). Errors when the
    /// context does not re-tokenize to itself or when a token would straddle the boundary
    /// (the continuation has no tokens of its own then).
    ///
    /// This is what a label or a dict piece is made of in context. Encoding it on its own can
    /// differ: a SentencePiece tokenizer with `add_space_prefix` writes `▁` before every text
    /// it encodes, so a standalone ` joy` becomes `▁▁joy` instead of the `▁joy` the model reads.
    pub fn encode_after(&self, context: &[u32], text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_each_after(context, &[text])?.remove(0))
    }

    /// [`Tokenizer::encode_after`] for several continuations of one context (which is decoded
    /// and checked once).
    pub fn encode_each_after<S: AsRef<str>>(&self, context: &[u32], texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let (body, context_text) = self.context_text(context)?;
        texts.iter().map(|text| self.continuation(body, &context_text, text.as_ref())).collect()
    }

    /// [`Tokenizer::encode_after`] after a context given as text: the ids that tokenizing
    /// `context_text` followed by `text` adds after the ids of `context_text` alone.
    pub fn encode_after_text(&self, context_text: &str, text: &str) -> Result<Vec<u32>> {
        self.continuation(&self.encode(context_text)?, context_text, text)
    }

    /// The prompt ids `context` without a leading BOS, and their text, checked to re-tokenize
    /// to those ids.
    pub(crate) fn context_text<'c>(&self, context: &'c [u32]) -> Result<(&'c [u32], String)> {
        let body = match (self.bos_token_id, context.split_first()) {
            (Some(bos), Some((&first, rest))) if first == bos && self.add_bos => rest,
            _ => context,
        };
        let text = self.decode(body)?;
        if self.encode(&text)? != body {
            return Err(InferError::Tokenizer(format!(
                "the prompt's {} tokens do not re-tokenize to themselves from their text, so a continuation cannot be tokenized in context",
                body.len()
            )));
        }
        Ok((body, text))
    }

    /// The ids `context_text + text` has past `before` (the ids of `context_text`).
    fn continuation(&self, before: &[u32], context_text: &str, text: &str) -> Result<Vec<u32>> {
        let all = self.encode(&format!("{context_text}{text}"))?;
        match all.strip_prefix(before) {
            Some(rest) if !rest.is_empty() => Ok(rest.to_vec()),
            _ => Err(InferError::Tokenizer(format!(
                "`{text}` does not tokenize as a continuation of the prompt: a token spans the boundary between the prompt and it"
            ))),
        }
    }

    /// Whether a text's tokens are the same alone and after any text that ends where a
    /// pre-token ends: byte-level BPE splits text into pre-tokens first (spaces, punctuation
    /// and digits start new ones) and merges only inside them. SentencePiece tokenizers merge
    /// across the whole text and (with `add_space_prefix`) prefix every encoded text with `▁`.
    pub fn is_byte_level(&self) -> bool {
        self.byte_level
    }

    /// Token ids of a whole prompt: [`Tokenizer::encode`], with BOS in front when the model
    /// adds one ([`Tokenizer::add_bos`]) and the text does not already start with it (chat
    /// templates often write it themselves).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos_token_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tokenizer_error)
    }

    /// The vocabulary string of one token (byte-level form, e.g. `Ġthe`), if the id exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary string (including special tokens), if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Tokens that end a generation (EOS, end-of-turn).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The underlying tokenizers-crate tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Write a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tokenizer_error)
    }
}

fn integer_array(meta: &GgufMetadata<'_>, key: &str) -> Result<Vec<i64>> {
    meta.array(key)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::I32(x) => Ok(*x as i64),
            Value::U32(x) => Ok(*x as i64),
            Value::I8(x) => Ok(*x as i64),
            Value::U8(x) => Ok(*x as i64),
            _ => Err(InferError::invalid_model(
                &meta.source_name,
                format!("{key}[{i}]"),
                "an integer",
            )),
        })
        .collect()
}

fn vocab_from(tokens: &[&str]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect()
}

fn split(pattern: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tokenizer_error)?;
    Ok(split.into())
}

/// The pre-tokenizer (and normalizer) that `tokenizer.ggml.pre` names, as Hugging Face's
/// tokenizer.json for that model family defines it.
pub(crate) fn pre_tokenizer_for(
    pre: &str,
) -> Result<(PreTokenizerWrapper, Option<NormalizerWrapper>)> {
    let byte_level_without_regex = || PreTokenizerWrapper::from(ByteLevel::new(false, true, false));
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "gpt2" => ByteLevel::new(false, true, true).into(),
        "default" => {
            let mut steps = DEFAULT_SPLITS.iter().map(|p| split(p)).collect::<Result<Vec<_>>>()?;
            steps.push(byte_level_without_regex());
            Sequence::new(steps).into()
        }
        "llama-bpe" | "llama3" => Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level_without_regex()]).into(),
        "qwen2" => {
            let pre = Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level_without_regex()]).into();
            return Ok((pre, Some(NFC.into())));
        }
        other => {
            return Err(InferError::Tokenizer(format!(
                "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported (supported: {SUPPORTED_PRE_TOKENIZERS})"
            )))
        }
    };
    Ok((pre_tokenizer, None))
}

fn byte_level_bpe(meta: &GgufMetadata<'_>, tokens: &[&str]) -> Result<tokenizers::Tokenizer> {
    let merges = meta
        .string_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    InferError::invalid_model(
                        &meta.source_name,
                        format!("tokenizer.ggml.merges[{i}]"),
                        "two tokens separated by a space",
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = meta
        .optional_string("tokenizer.ggml.pre")
        .unwrap_or("default");
    let (pre_tokenizer, normalizer) = pre_tokenizer_for(pre)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_from(tokens), merges)
        .ignore_merges(matches!(pre, "llama-bpe" | "llama3"))
        .build()
        .map_err(tokenizer_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer
        .with_normalizer(normalizer)
        .map_err(tokenizer_error)?;
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

/// SentencePiece BPE (TinyLlama, Mistral, Llama 2 GGUFs) as Hugging Face's converter builds it:
/// merges of every vocabulary pair whose concatenation is in the vocabulary, ranked by the
/// score of the merged piece; byte fallback; `▁` for spaces.
fn sentencepiece_bpe(meta: &GgufMetadata<'_>, tokens: &[&str]) -> Result<tokenizers::Tokenizer> {
    let scores: Vec<f64> = meta
        .array("tokenizer.ggml.scores")?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => Err(InferError::invalid_model(
                &meta.source_name,
                format!("tokenizer.ggml.scores[{i}]"),
                "a float",
            )),
        })
        .collect::<Result<_>>()?;
    let vocab = vocab_from(tokens);
    let mut merges: Vec<(f64, u32, u32, String, String)> = Vec::new();
    for (piece, &merged_id) in &vocab {
        for (split_at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split_at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                let score = scores
                    .get(merged_id as usize)
                    .copied()
                    .unwrap_or(f64::NEG_INFINITY);
                merges.push((score, l, r, left.to_string(), right.to_string()));
            }
        }
    }
    // Highest score first; ties broken by the ids of the parts, as HF's extractor does.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges = merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect();
    let unk = meta
        .optional_usize("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i))
        .map(|t| t.to_string());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(tokenizer_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let add_space_prefix = meta
        .optional_bool("tokenizer.ggml.add_space_prefix")
        .unwrap_or(true);
    let replace_spaces: NormalizerWrapper = Replace::new(" ", "▁").map_err(tokenizer_error)?.into();
    let normalizer: NormalizerWrapper = if add_space_prefix {
        tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("▁".to_string()).into(),
            replace_spaces,
        ])
        .into()
    } else {
        replace_spaces
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(tokenizer_error)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(tokenizer_error)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let (pre_tokenizer, _) = pre_tokenizer_for(pre).unwrap();
        let mut s = PreTokenizedString::from(text);
        pre_tokenizer.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p.to_string())
            .collect()
    }

    #[test]
    fn smollm_splits_digits_without_prefix_space() {
        assert_eq!(
            pieces("smollm", "Hello world 12345"),
            ["Hello", "Ġworld", "Ġ", "1", "2", "3", "4", "5"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(pieces("llama-bpe", "x 12345"), ["x", "Ġ", "123", "45"]);
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(pieces("qwen2", "ab 123"), ["ab", "Ġ", "1", "2", "3"]);
    }

    /// A tiny SentencePiece vocabulary: control tokens, 256 byte tokens, characters and the
    /// merge chain `▁ h e l l o` → `▁hello`.
    fn sentencepiece_metadata() -> std::collections::HashMap<String, Value> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        types.extend([6; 256]);
        let pieces = ["▁", "h", "e", "l", "o", "▁h", "ll", "▁he", "llo", "▁hello"];
        tokens.extend(pieces.iter().map(|p| p.to_string()));
        types.extend([1; 10]);
        // Longer pieces score higher, so every merge of the chain applies.
        let scores: Vec<Value> = tokens
            .iter()
            .map(|t| Value::F32(t.chars().count() as f32))
            .collect();
        let strings = tokens.into_iter().map(Value::String).collect();
        [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", Value::Array(strings)),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
        let metadata = sentencepiece_metadata();
        let meta = GgufMetadata {
            metadata: &metadata,
            source_name: "test".into(),
        };
        let tok = Tokenizer::from_gguf(&meta).unwrap();
        let id = |t: &str| tok.token_to_id(t).unwrap();
        assert_eq!(tok.encode("hello").unwrap(), [id("▁hello")]);
        // é is not in the vocabulary: its two UTF-8 bytes become byte tokens.
        assert_eq!(tok.encode("hé").unwrap(), [id("▁h"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(
            tok.decode(&tok.encode("hé hello").unwrap()).unwrap(),
            "hé hello"
        );
        assert_eq!(tok.encode("<s>").unwrap(), [1]);
        assert_eq!(
            (tok.bos_token_id(), tok.eos_token_ids()),
            (Some(1), &[2u32][..])
        );
        // SentencePiece models add BOS by default, once.
        assert!(tok.add_bos());
        assert_eq!(tok.encode_prompt("hello").unwrap(), [1, id("▁hello")]);
        assert_eq!(
            tok.encode_prompt("<s>hello").unwrap(),
            tok.encode("<s>hello").unwrap()
        );
    }

    #[test]
    fn sentencepiece_continuations_are_tokenized_in_context_not_with_a_second_space_prefix() {
        let metadata = sentencepiece_metadata();
        let meta = GgufMetadata {
            metadata: &metadata,
            source_name: "test".into(),
        };
        let tok = Tokenizer::from_gguf(&meta).unwrap();
        let id = |t: &str| tok.token_to_id(t).unwrap();
        assert!(!tok.is_byte_level());
        // On its own, " hello" gets the space prefix in front of its own space: `▁ ▁hello`.
        assert_eq!(tok.encode(" hello").unwrap(), [id("▁"), id("▁hello")]);
        // After a prompt it is the single `▁hello` the model reads in "hello hello".
        let prompt = tok.encode_prompt("hello").unwrap();
        assert_eq!(prompt, [1, id("▁hello")]);
        assert_eq!(tok.encode_after(&prompt, " hello").unwrap(), [id("▁hello")]);
        assert_eq!(
            tok.encode_each_after(&prompt, &[" hello", " h"]).unwrap(),
            [vec![id("▁hello")], vec![id("▁h")]]
        );
        // "he" + "llo" merges into one token across the boundary: no tokens of its own.
        let err = tok.encode_after(&tok.encode("he").unwrap(), "llo").unwrap_err().to_string();
        assert!(err.contains("`llo`") && err.contains("boundary"), "{err}");
    }

    #[test]
    fn byte_level_tokenizers_are_recognised() {
        let tokens = ["a", "b", "Ġ"];
        let metadata: std::collections::HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.iter().map(|t| Value::String(t.to_string())).collect()),
            ),
            ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let meta = GgufMetadata {
            metadata: &metadata,
            source_name: "test".into(),
        };
        let tok = Tokenizer::from_gguf(&meta).unwrap();
        assert!(tok.is_byte_level());
        let context = tok.encode("ab").unwrap();
        assert_eq!(tok.encode_after(&context, " a").unwrap(), tok.encode(" a").unwrap());
    }

    #[test]
    fn unknown_pre_tokenizer_lists_supported() {
        let err = pre_tokenizer_for("falcon").unwrap_err().to_string();
        assert!(
            err.contains("falcon") && err.contains("smollm") && err.contains("qwen2"),
            "{err}"
        );
    }
}
