//! Model hyperparameters of the supported architectures, read from GGUF metadata
//! (`llama.*`, `qwen2.*`, `gemma3.*`) or from a Hugging Face `config.json`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};

/// The transformer families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama family: SmolLM2, Llama 2/3.x, TinyLlama, Mistral (no attention biases).
    Llama,
    /// Qwen2 / Qwen2.5: like llama plus biases on the q, k and v projections.
    Qwen2,
    /// Qwen3: like llama plus an RMSNorm of each query and key head before rope.
    Qwen3,
    /// Phi-3 (GGUF only): llama's forward with the q, k, v projections stored as one
    /// `attn_qkv` matrix and the gate and up projections as one `ffn_up` (gate first), split at
    /// load; LongRoPE files (`rope_factors_long`) are refused.
    Phi3,
    /// Gemma 2 (GGUF only): Gemma's embedding scale, norms around attention and feed-forward
    /// and tanh-GELU GeGLU; every other layer (the even ones) local with a sliding window;
    /// attention scores and final logits soft-capped (`cap · tanh(x / cap)`).
    Gemma2,
    /// Gemma 3 (GGUF only): embeddings scaled by √hidden, q/k RMSNorm per head, norms after
    /// attention and feed-forward too, GeGLU with tanh-GELU, local layers (five of every six)
    /// with their own rope base. Norm weights in GGUF already hold Gemma's `1 + w`.
    Gemma3,
}

/// The architecture names accepted in GGUF `general.architecture` / config `model_type`.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, mistral, qwen2, qwen3, phi3 (GGUF), gemma2 (GGUF), gemma3 (GGUF)";

/// Gemma 3: every this-many-th layer is global (full attention, the model's rope base); the
/// others are local (sliding window, [`GEMMA3_LOCAL_ROPE_THETA`]), as in llama.cpp.
pub const GEMMA3_GLOBAL_LAYER_PERIOD: usize = 6;
/// Gemma 3's rope base of local layers (not in the GGUF metadata; llama.cpp's value).
pub const GEMMA3_LOCAL_ROPE_THETA: f64 = 10_000.0;

impl Architecture {
    /// Map a GGUF `general.architecture` or config.json `model_type` to an architecture.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            "phi3" => Ok(Self::Phi3),
            "gemma2" => Ok(Self::Gemma2),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(InferError::UnsupportedArchitecture {
                found: other.to_string(),
                supported: SUPPORTED_ARCHITECTURES.to_string(),
            }),
        }
    }

    /// The name used as prefix of GGUF metadata keys and as config.json `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
        }
    }

    /// Whether layer `layer` attends through the sliding window when the model has one:
    /// every layer (Mistral), or the local ones (Gemma 3).
    pub fn is_windowed_layer(self, layer: usize) -> bool {
        match self {
            Self::Gemma3 => self.is_local_layer(layer),
            // llama.cpp's swa pattern 2: even layers local.
            Self::Gemma2 => layer.is_multiple_of(2),
            _ => true,
        }
    }

    /// Whether this is a Gemma (2 or 3): √hidden embedding scale, norms after attention and
    /// feed-forward, tanh-GELU GeGLU.
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }

    /// Whether each query and key head is RMS-normed before rope (`q_norm`, `k_norm`).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Qwen3 | Self::Gemma3)
    }

    /// Whether layer `layer` is a local (sliding-window) layer with its own rope base.
    pub fn is_local_layer(self, layer: usize) -> bool {
        self == Self::Gemma3 && !(layer + 1).is_multiple_of(GEMMA3_GLOBAL_LAYER_PERIOD)
    }

    /// Whether the q, k, v projections carry a bias.
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }
}

/// Llama 3.x long-context rope frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// Overall scale factor.
    pub factor: f64,
    /// Wavelength threshold factor below which frequencies are scaled fully.
    pub low_freq_factor: f64,
    /// Wavelength threshold factor above which frequencies are kept.
    pub high_freq_factor: f64,
    /// The context length the model was pre-trained with.
    pub original_max_position_embeddings: usize,
}

/// YaRN rope scaling (Qwen 2.5's long-context setting, extended-context fine-tunes): each
/// frequency is a ramp between itself (fast rotations, extrapolated) and itself divided by
/// `factor` (slow rotations, interpolated), and the rope's cos and sin are multiplied by
/// `magnitude` (so attention scores by its square), as in transformers and llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YarnRopeScaling {
    /// Context extension factor.
    pub factor: f64,
    /// The context length the model was pre-trained with.
    pub original_context_length: usize,
    /// Rotations over the original context above which a frequency is kept (default 32).
    pub beta_fast: f64,
    /// Rotations below which a frequency is divided by the factor (default 1).
    pub beta_slow: f64,
    /// Multiplier of cos and sin (transformers' `attention_factor`; llama.cpp's `mscale`).
    pub magnitude: f64,
    /// Whether the ramp's ends are rounded outward to whole dimensions (transformers'
    /// `truncate`, default true; llama.cpp always rounds).
    pub truncate: bool,
}

impl YarnRopeScaling {
    /// transformers' `get_mscale`: `1 + 0.1 · mscale · ln(scale)` for scales above 1.
    fn attention_scale(scale: f64, mscale: f64) -> f64 {
        match scale <= 1.0 {
            true => 1.0,
            false => 0.1 * mscale * scale.ln() + 1.0,
        }
    }

    /// The default magnitude: `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)`
    /// when the model states both (llama.cpp: `mscale` 1 and `yarn_log_multiplier`), else
    /// `get_mscale(factor)`.
    fn default_magnitude(factor: f64, mscales: Option<(f64, f64)>) -> f64 {
        match mscales.filter(|&(mscale, all)| mscale != 0.0 && all != 0.0) {
            Some((mscale, all)) => Self::attention_scale(factor, mscale) / Self::attention_scale(factor, all),
            None => Self::attention_scale(factor, 1.0),
        }
    }

    /// The ramp's ends (transformers' `find_correction_range`): the dimensions whose
    /// frequencies turn `beta_fast` and `beta_slow` times over the original context.
    fn correction_range(&self, head_dim: usize, theta: f64) -> (f64, f64) {
        let dim = |rotations: f64| {
            head_dim as f64 * (self.original_context_length as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * theta.ln())
        };
        let (low, high) = match self.truncate {
            true => (dim(self.beta_fast).floor(), dim(self.beta_slow).ceil()),
            false => (dim(self.beta_fast), dim(self.beta_slow)),
        };
        (low.max(0.0), high.min(head_dim as f64 - 1.0))
    }

    /// `base` (the unscaled inverse frequencies of a `head_dim` head at rope base `theta`)
    /// scaled: pair `i` keeps the share `1 - clamp((i - low) / (high - low))` of its own
    /// frequency and takes the rest from the frequency divided by the factor.
    pub(crate) fn scale(&self, base: &[f64], head_dim: usize, theta: f64) -> Vec<f64> {
        let (low, high) = self.correction_range(head_dim, theta);
        base.iter()
            .enumerate()
            .map(|(i, &f)| {
                let kept = 1.0 - ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                f / self.factor * (1.0 - kept) + f * kept
            })
            .collect()
    }
}

/// Hyperparameters of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which family of forward pass to run.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Rope base frequency.
    pub rope_theta: f64,
    /// Optional Llama 3 rope scaling.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Context window in tokens.
    pub context_length: usize,
    /// Whether the output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Sliding attention window (Mistral; Gemma 3's local layers): a position sees itself and
    /// the `window - 1` before it. `None`: full causal attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Linear rope scaling: positions are divided by this factor (every rope frequency is;
    /// Gemma 3's local layers keep theirs, as in llama.cpp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_linear_factor: Option<f64>,
    /// YaRN rope scaling of every frequency (not implemented for Gemma's local layers: refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_yarn: Option<YarnRopeScaling>,
    /// Gemma 2: attention scores become `cap · tanh(score / cap)` before the softmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_softcap: Option<f64>,
    /// Gemma 2: logits become `cap · tanh(logit / cap)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcap: Option<f64>,
}

/// Read GGUF metadata values with errors that name the key.
pub(crate) struct GgufMetadata<'a> {
    pub(crate) metadata: &'a HashMap<String, Value>,
    pub(crate) source_name: String,
}

impl GgufMetadata<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn invalid(&self, key: &str, expected: &str) -> InferError {
        InferError::invalid_model(&self.source_name, key, expected)
    }

    pub(crate) fn string(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.invalid(key, "a string")),
        }
    }

    pub(crate) fn optional_string(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.optional_usize(key)?
            .ok_or_else(|| self.invalid(key, "an unsigned integer"))
    }

    pub(crate) fn optional_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let n = match value {
            Value::U8(v) => *v as u64,
            Value::U16(v) => *v as u64,
            Value::U32(v) => *v as u64,
            Value::U64(v) => *v,
            Value::I8(v) if *v >= 0 => *v as u64,
            Value::I16(v) if *v >= 0 => *v as u64,
            Value::I32(v) if *v >= 0 => *v as u64,
            Value::I64(v) if *v >= 0 => *v as u64,
            _ => return Err(self.invalid(key, "an unsigned integer")),
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| self.invalid(key, "an integer that fits in usize"))
    }

    pub(crate) fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(_) => Err(self.invalid(key, "a float")),
        }
    }

    pub(crate) fn optional_bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<&Vec<Value>> {
        match self.get(key) {
            Some(Value::Array(values)) => Ok(values),
            _ => Err(self.invalid(key, "an array")),
        }
    }

    pub(crate) fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(self.invalid(&format!("{key}[{i}]"), "a string")),
            })
            .collect()
    }
}

impl ModelConfig {
    /// Read the hyperparameters from GGUF metadata. `has_output_weight` tells whether the file
    /// holds a separate `output.weight` (otherwise the embedding is tied).
    pub(crate) fn from_gguf(
        meta: &GgufMetadata<'_>,
        has_output_weight: bool,
        vocab_len: usize,
    ) -> Result<Self> {
        let arch_name = meta.string("general.architecture")?;
        let architecture = Architecture::from_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = meta.usize(&key("embedding_length"))?;
        let num_heads = meta.usize(&key("attention.head_count"))?;
        let num_kv_heads = meta
            .optional_usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let head_dim = match meta.optional_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None => hidden_size / num_heads.max(1),
        };
        // Mixture-of-experts feed-forwards (Mixtral is a `llama` GGUF with experts) are not
        // implemented: refused before any tensor is looked for.
        let experts_key = key("expert_count");
        if let Some(experts) = meta.optional_usize(&experts_key)?.filter(|&n| n > 0) {
            return Err(meta.invalid(
                &experts_key,
                &format!("a dense feed-forward; mixture-of-experts ({experts} experts) is not implemented"),
            ));
        }
        // Rope over part of each head (Phi-2 style) is not implemented.
        let rope_key = key("rope.dimension_count");
        if let Some(dims) = meta.optional_usize(&rope_key)?.filter(|&dims| dims != head_dim) {
            return Err(meta.invalid(
                &rope_key,
                &format!("rope over the whole head ({head_dim} dimensions); partial rope over {dims} is not implemented"),
            ));
        }
        let vocab_size = meta
            .optional_usize(&key("vocab_size"))?
            .unwrap_or(vocab_len);
        let context_length = meta.usize(&key("context_length"))?;
        let (rope_linear_factor, rope_yarn) = Self::gguf_rope_scaling(meta, &key, context_length)?;
        if rope_yarn.is_some() && architecture.is_gemma() {
            return Err(meta.invalid(&key("rope.scaling.type"), &format!("no YaRN rope scaling for {arch_name} (its local layers' rope under YaRN is not implemented)")));
        }
        // A window as long as the context is no window.
        let sliding_window = meta
            .optional_usize(&key("attention.sliding_window"))?
            .filter(|&window| window > 0 && window < context_length);
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: meta.usize(&key("feed_forward_length"))?,
            num_layers: meta.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rope_theta: meta
                .optional_f64(&key("rope.freq_base"))?
                .unwrap_or(10_000.0),
            rope_scaling: None,
            rms_norm_eps: meta
                .optional_f64(&key("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| meta.invalid(&key("attention.layer_norm_rms_epsilon"), "a float"))?,
            context_length,
            tie_word_embeddings: !has_output_weight,
            sliding_window,
            rope_linear_factor,
            rope_yarn,
            attention_softcap: meta.optional_f64(&key("attn_logit_softcapping"))?.filter(|&cap| cap > 0.0),
            final_logit_softcap: meta.optional_f64(&key("final_logit_softcapping"))?.filter(|&cap| cap > 0.0),
        };
        config.validate(&meta.source_name)?;
        Ok(config)
    }

    /// Rope scaling from `{arch}.rope.scaling.*`: linear (a factor) or YaRN (llama.cpp's keys
    /// and defaults); per-frequency factors come as the `rope_freqs.weight` tensor instead.
    /// Any other kind would change every angle: refused, not ignored.
    fn gguf_rope_scaling(
        meta: &GgufMetadata<'_>,
        key: &dyn Fn(&str) -> String,
        context_length: usize,
    ) -> Result<(Option<f64>, Option<YarnRopeScaling>)> {
        let scaling_key = key("rope.scaling.type");
        let factor = || {
            let factor_key = key("rope.scaling.factor");
            match meta.optional_f64(&factor_key)? {
                Some(factor) if factor > 0.0 => Ok(factor),
                _ => Err(meta.invalid(&factor_key, "a positive float (rope scaling factor)")),
            }
        };
        match meta.optional_string(&scaling_key) {
            None | Some("none") => Ok((None, None)),
            Some("linear") => Ok((Some(factor()?), None)),
            Some("yarn") => {
                let ext_key = key("rope.scaling.yarn_ext_factor");
                if meta.optional_f64(&ext_key)?.is_some_and(|ext| ext != 1.0) {
                    return Err(meta.invalid(&ext_key, "1 (YaRN's full ramp; other extrapolation mixes are not implemented)"));
                }
                let factor = factor()?;
                let optional = |name: &str, default: f64| Ok::<_, InferError>(meta.optional_f64(&key(name))?.unwrap_or(default));
                let log_multiplier = optional("rope.scaling.yarn_log_multiplier", 0.0)?;
                let magnitude = optional("rope.scaling.attn_factor", 1.0)?
                    * YarnRopeScaling::default_magnitude(factor, Some((1.0, log_multiplier)));
                Ok((None, Some(YarnRopeScaling {
                    factor,
                    original_context_length: meta
                        .optional_usize(&key("rope.scaling.original_context_length"))?
                        .unwrap_or(context_length),
                    beta_fast: optional("rope.scaling.yarn_beta_fast", 32.0)?,
                    beta_slow: optional("rope.scaling.yarn_beta_slow", 1.0)?,
                    magnitude,
                    truncate: true,
                })))
            }
            Some(kind) => Err(meta.invalid(
                &scaling_key,
                &format!("none, linear or yarn rope scaling (or per-frequency factors in rope_freqs.weight); `{kind}` is not implemented"),
            )),
        }
    }

    /// Parse a Hugging Face `config.json`.
    pub(crate) fn from_hf_config(json: &str, source_name: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(json)
            .map_err(|e| InferError::invalid_model(source_name, "config.json", e.to_string()))?;
        let architecture = Architecture::from_name(&raw.model_type)?;
        if architecture.is_gemma() || architecture == Architecture::Phi3 {
            return Err(InferError::invalid_model(
                source_name,
                "config.json model_type",
                "llama, mistral, qwen2 or qwen3 (Phi-3, Gemma 2 and Gemma 3 are read from GGUF files only)",
            ));
        }
        let (rope_scaling, rope_linear_factor, rope_yarn) = match raw.rope_scaling {
            None => (None, None, None),
            Some(s) => s.into_config(raw.max_position_embeddings, source_name)?,
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let config = Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
            vocab_size: raw.vocab_size,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            rms_norm_eps: raw.rms_norm_eps,
            context_length: raw.max_position_embeddings,
            sliding_window: match (raw.sliding_window, raw.use_sliding_window) {
                (Some(window), None | Some(true)) if window > 0 && window < raw.max_position_embeddings => Some(window),
                _ => None,
            },
            rope_linear_factor,
            rope_yarn,
            attention_softcap: None,
            final_logit_softcap: None,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        config.validate(source_name)?;
        Ok(config)
    }

    /// The `config.json` a Hugging Face loader (and [`ModelConfig::from_hf_config`]) reads back.
    pub fn to_hf_config_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "architectures": [match self.architecture {
                Architecture::Llama => "LlamaForCausalLM",
                Architecture::Qwen2 => "Qwen2ForCausalLM",
                Architecture::Qwen3 => "Qwen3ForCausalLM",
                Architecture::Phi3 => "Phi3ForCausalLM",
                Architecture::Gemma2 => "Gemma2ForCausalLM",
                Architecture::Gemma3 => "Gemma3ForCausalLM",
            }],
            "model_type": self.architecture.name(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        if let Some(window) = self.sliding_window {
            json["sliding_window"] = window.into();
        }
        if let Some(factor) = self.rope_linear_factor {
            json["rope_scaling"] = serde_json::json!({ "rope_type": "linear", "factor": factor });
        }
        if let Some(y) = self.rope_yarn {
            json["rope_scaling"] = serde_json::json!({
                "rope_type": "yarn",
                "factor": y.factor,
                "original_max_position_embeddings": y.original_context_length,
                "beta_fast": y.beta_fast,
                "beta_slow": y.beta_slow,
                "attention_factor": y.magnitude,
                "truncate": y.truncate,
            });
        }
        if let Some(s) = self.rope_scaling {
            json["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        json
    }

    fn validate(&self, source_name: &str) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(InferError::invalid_model(
                    source_name,
                    name,
                    "a positive integer",
                ));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(InferError::invalid_model(
                source_name,
                "num_kv_heads",
                format!("a divisor of num_heads = {}", self.num_heads),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(InferError::invalid_model(
                source_name,
                "head_dim",
                "an even number (rope)",
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct HfRopeScaling {
    /// `rope_type`, or `type` in older configs.
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: f64,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
    /// YaRN's keys (transformers' names and defaults).
    beta_fast: Option<f64>,
    beta_slow: Option<f64>,
    attention_factor: Option<f64>,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    truncate: Option<bool>,
}

/// The three rope scalings a `config.json` can ask for: (Llama 3 factors, linear factor, YaRN).
type HfRopeScalings = (Option<Llama3RopeScaling>, Option<f64>, Option<YarnRopeScaling>);

impl HfRopeScaling {
    /// The scaling this names, with transformers' defaults; an unknown kind is an error.
    fn into_config(self, max_position_embeddings: usize, source_name: &str) -> Result<HfRopeScalings> {
        match self.rope_type.as_deref() {
            Some("linear") => Ok((None, Some(self.factor), None)),
            Some("llama3") => Ok((
                Some(Llama3RopeScaling {
                    factor: self.factor,
                    low_freq_factor: self.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: self.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: self.original_max_position_embeddings.unwrap_or(8192),
                }),
                None,
                None,
            )),
            Some("yarn") => Ok((None, None, Some(YarnRopeScaling {
                factor: self.factor,
                original_context_length: self.original_max_position_embeddings.unwrap_or(max_position_embeddings),
                beta_fast: self.beta_fast.unwrap_or(32.0),
                beta_slow: self.beta_slow.unwrap_or(1.0),
                magnitude: self.attention_factor.unwrap_or_else(|| {
                    YarnRopeScaling::default_magnitude(self.factor, self.mscale.zip(self.mscale_all_dim))
                }),
                truncate: self.truncate.unwrap_or(true),
            }))),
            other => Err(InferError::invalid_model(
                source_name,
                "rope_scaling.rope_type",
                format!("`llama3`, `linear`, `yarn` or no rope scaling, found {other:?}"),
            )),
        }
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    /// Mistral's attention window (null when none); Qwen2 also has `use_sliding_window`.
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_round_trips() {
        let config = ModelConfig {
            architecture: Architecture::Qwen2,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            vocab_size: 100,
            rope_theta: 1e6,
            rope_scaling: None,
            rms_norm_eps: 1e-6,
            context_length: 256,
            tie_word_embeddings: true,
            sliding_window: Some(64),
            rope_linear_factor: Some(2.0),
            rope_yarn: None,
            attention_softcap: None,
            final_logit_softcap: None,
        };
        let json = config.to_hf_config_json().to_string();
        assert_eq!(ModelConfig::from_hf_config(&json, "test").unwrap(), config);
    }

    /// GGUF metadata of a small llama model plus `extra` keys.
    fn llama_metadata(extra: &[(&str, Value)]) -> HashMap<String, Value> {
        let mut metadata: HashMap<String, Value> = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(64)),
            ("llama.feed_forward_length", Value::U32(128)),
            ("llama.block_count", Value::U32(2)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.context_length", Value::U32(4096)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        metadata
    }

    fn config_of(metadata: &HashMap<String, Value>) -> Result<ModelConfig> {
        let meta = GgufMetadata { metadata, source_name: "m.gguf".into() };
        ModelConfig::from_gguf(&meta, false, 100)
    }

    #[test]
    fn linear_and_yarn_rope_scaling_are_read_and_other_kinds_are_refused_by_name() {
        assert_eq!(config_of(&llama_metadata(&[])).unwrap().context_length, 4096);
        let none = llama_metadata(&[("llama.rope.scaling.type", Value::String("none".into()))]);
        assert!(config_of(&none).is_ok());
        let linear = llama_metadata(&[
            ("llama.rope.scaling.type", Value::String("linear".into())),
            ("llama.rope.scaling.factor", Value::F32(4.0)),
        ]);
        assert_eq!(config_of(&linear).unwrap().rope_linear_factor, Some(4.0));
        let unfactored = llama_metadata(&[("llama.rope.scaling.type", Value::String("linear".into()))]);
        assert!(config_of(&unfactored).unwrap_err().to_string().contains("llama.rope.scaling.factor"));
        for kind in ["longrope", "dynamic"] {
            let metadata = llama_metadata(&[("llama.rope.scaling.type", Value::String(kind.into()))]);
            let err = config_of(&metadata).unwrap_err().to_string();
            assert!(err.contains("llama.rope.scaling.type") && err.contains(kind), "{err}");
        }
        let yarn = |extra: &[(&str, Value)]| {
            let mut keys = vec![
                ("llama.rope.scaling.type", Value::String("yarn".into())),
                ("llama.rope.scaling.factor", Value::F32(4.0)),
            ];
            keys.extend(extra.iter().cloned());
            config_of(&llama_metadata(&keys))
        };
        // llama.cpp's defaults: the original context is the model's, betas 32 and 1,
        // cos and sin times 1 + 0.1 ln 4.
        let defaults = yarn(&[]).unwrap().rope_yarn.unwrap();
        let expected = YarnRopeScaling {
            factor: 4.0,
            original_context_length: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            magnitude: 1.0 + 0.1 * 4f64.ln(),
            truncate: true,
        };
        assert_eq!(defaults, expected);
        let stated = yarn(&[
            ("llama.rope.scaling.original_context_length", Value::U32(1024)),
            ("llama.rope.scaling.yarn_beta_fast", Value::F32(16.0)),
            ("llama.rope.scaling.yarn_beta_slow", Value::F32(2.0)),
            ("llama.rope.scaling.attn_factor", Value::F32(0.5)),
            ("llama.rope.scaling.yarn_log_multiplier", Value::F32(0.5)),
        ])
        .unwrap()
        .rope_yarn
        .unwrap();
        let magnitude = 0.5 * (1.0 + 0.1 * 4f64.ln()) / (1.0 + 0.05 * 4f64.ln());
        assert_eq!(
            stated,
            YarnRopeScaling { original_context_length: 1024, beta_fast: 16.0, beta_slow: 2.0, magnitude, ..expected }
        );
        let err = yarn(&[("llama.rope.scaling.yarn_ext_factor", Value::F32(0.5))]).unwrap_err().to_string();
        assert!(err.contains("llama.rope.scaling.yarn_ext_factor"), "{err}");
        let err = config_of(&llama_metadata(&[("llama.rope.scaling.type", Value::String("yarn".into()))])).unwrap_err().to_string();
        assert!(err.contains("llama.rope.scaling.factor"), "{err}");
    }

    #[test]
    fn yarn_frequencies_equal_hand_computed_ones() {
        // head 8, base 10000, original context 256, betas 32 and 1: the ramp's ends are
        // floor(8 ln(256 / 64π) / 2 ln 10⁴) = floor(0.105) = 0 and ceil(8 ln(256 / 2π) / 2 ln 10⁴)
        // = ceil(1.610) = 2, so pair 0 keeps its frequency, pair 1 half of it, pairs 2 and 3 none.
        let yarn = YarnRopeScaling {
            factor: 4.0,
            original_context_length: 256,
            beta_fast: 32.0,
            beta_slow: 1.0,
            magnitude: 1.0,
            truncate: true,
        };
        let base = [1.0, 0.1, 0.01, 0.001];
        let scaled = yarn.scale(&base, 8, 10_000.0);
        for (got, want) in scaled.iter().zip([1.0, 0.1 * (0.5 / 4.0 + 0.5), 0.01 / 4.0, 0.001 / 4.0]) {
            assert!((got - want).abs() < 1e-15, "{scaled:?}");
        }
        // Unrounded ends 0.105 and 1.610: pair 1 keeps 1 - (1 - 0.105) / 1.505 of its frequency.
        let low = 8.0 * (256.0 / (64.0 * std::f64::consts::PI)).ln() / (2.0 * 10_000f64.ln());
        let high = 8.0 * (256.0 / (2.0 * std::f64::consts::PI)).ln() / (2.0 * 10_000f64.ln());
        let kept = 1.0 - (1.0 - low) / (high - low);
        let unrounded = YarnRopeScaling { truncate: false, ..yarn }.scale(&base, 8, 10_000.0);
        assert!((unrounded[1] - 0.1 * ((1.0 - kept) / 4.0 + kept)).abs() < 1e-15, "{unrounded:?}");
    }

    #[test]
    fn hf_yarn_reads_transformers_keys_and_defaults() {
        let config = |scaling: serde_json::Value| {
            let json = serde_json::json!({
                "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
                "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_scaling": scaling,
            });
            ModelConfig::from_hf_config(&json.to_string(), "config.json")
        };
        // Qwen 2.5's setting, with the old `type` key.
        let qwen = config(serde_json::json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}));
        let yarn = qwen.unwrap().rope_yarn.unwrap();
        assert_eq!((yarn.factor, yarn.original_context_length, yarn.beta_fast, yarn.beta_slow), (4.0, 32768, 32.0, 1.0));
        assert_eq!(yarn.magnitude, 1.0 + 0.1 * 4f64.ln());
        let ratio = config(serde_json::json!({"rope_type": "yarn", "factor": 4.0, "mscale": 2.0, "mscale_all_dim": 1.0}));
        let yarn = ratio.unwrap().rope_yarn.unwrap();
        assert_eq!(yarn.original_context_length, 32768);
        assert_eq!(yarn.magnitude, (1.0 + 0.2 * 4f64.ln()) / (1.0 + 0.1 * 4f64.ln()));
        let stated = config(serde_json::json!({"rope_type": "yarn", "factor": 4.0, "attention_factor": 0.7, "truncate": false}));
        let yarn = stated.unwrap().rope_yarn.unwrap();
        assert_eq!((yarn.magnitude, yarn.truncate), (0.7, false));
        let err = config(serde_json::json!({"rope_type": "dynamic", "factor": 2.0})).unwrap_err().to_string();
        assert!(err.contains("rope_scaling.rope_type") && err.contains("dynamic"), "{err}");
    }

    #[test]
    fn yarn_on_gemma_is_refused_by_name() {
        let mut metadata: HashMap<String, Value> = llama_metadata(&[])
            .into_iter()
            .map(|(k, v)| (k.replacen("llama", "gemma3", 1), v))
            .collect();
        metadata.insert("general.architecture".into(), Value::String("gemma3".into()));
        metadata.insert("gemma3.rope.scaling.type".into(), Value::String("yarn".into()));
        metadata.insert("gemma3.rope.scaling.factor".into(), Value::F32(8.0));
        let err = config_of(&metadata).unwrap_err().to_string();
        assert!(err.contains("gemma3.rope.scaling.type") && err.contains("YaRN"), "{err}");
    }

    #[test]
    fn a_mixture_of_experts_gguf_is_refused_by_key() {
        assert!(config_of(&llama_metadata(&[("llama.expert_count", Value::U32(0))])).is_ok());
        let err = config_of(&llama_metadata(&[("llama.expert_count", Value::U32(8))])).unwrap_err().to_string();
        assert!(err.contains("llama.expert_count") && err.contains("mixture-of-experts (8 experts)"), "{err}");
    }

    #[test]
    fn partial_rope_is_refused_by_key() {
        // 64 hidden / 4 heads = 16 dimensions per head.
        assert!(config_of(&llama_metadata(&[("llama.rope.dimension_count", Value::U32(16))])).is_ok());
        let err = config_of(&llama_metadata(&[("llama.rope.dimension_count", Value::U32(8))])).unwrap_err().to_string();
        assert!(err.contains("llama.rope.dimension_count") && err.contains("partial rope"), "{err}");
    }

    #[test]
    fn a_sliding_window_shorter_than_the_context_is_kept() {
        let windowed = config_of(&llama_metadata(&[("llama.attention.sliding_window", Value::U32(1024))])).unwrap();
        assert_eq!((windowed.sliding_window, windowed.context_length), (Some(1024), 4096));
        let wide = llama_metadata(&[("llama.attention.sliding_window", Value::U32(8192))]);
        assert_eq!(config_of(&wide).unwrap().sliding_window, None);
    }

    #[test]
    fn unknown_architecture_lists_supported() {
        let err = Architecture::from_name("falcon").unwrap_err().to_string();
        assert!(
            err.contains("falcon") && err.contains("llama") && err.contains("phi3"),
            "{err}"
        );
    }

    #[test]
    fn hf_sliding_window_is_read_unless_switched_off() {
        let config = |window: &str| {
            let json = format!(
                r#"{{"model_type":"mistral","hidden_size":64,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
                "rms_norm_eps":1e-5,"max_position_embeddings":4096{window}}}"#
            );
            ModelConfig::from_hf_config(&json, "cfg").unwrap().sliding_window
        };
        assert_eq!(config(""), None);
        assert_eq!(config(r#","sliding_window":null"#), None);
        assert_eq!(config(r#","sliding_window":1024"#), Some(1024));
        assert_eq!(config(r#","sliding_window":1024,"use_sliding_window":false"#), None);
        assert_eq!(config(r#","sliding_window":4096"#), None);
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let json = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3,
            "vocab_size":10,"rms_norm_eps":1e-5,"max_position_embeddings":16}"#;
        let err = ModelConfig::from_hf_config(json, "cfg")
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_kv_heads"), "{err}");
    }
}
