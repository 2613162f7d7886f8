//! Loading a [`LanguageModel`] from a [`ModelSpec`]: a GGUF file (weights dequantized to f32,
//! or kept quantized when their f32 form would not fit in memory; tokenizer and chat template
//! from its metadata), a safetensors model directory, or a Hugging
//! Face hub repository resolved through hf-hub (offline mode reads only the local cache).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::config::{Architecture, GgufMetadata, ModelConfig};
use crate::error::{InferError, Result};
use crate::kernels::BlockFormat;
use crate::model::{
    global_rope, unpermute_rope_rows, Model, ModelTensors, TensorNames,
};
use crate::quantized::{QuantizedMatrix, WeightStorage};
use crate::spec::{DeviceSpec, ModelSpec};
use crate::template::{ChatMessage, ChatTemplate};
use crate::tokenizer::Tokenizer;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where to run it.
    pub device: DeviceSpec,
    /// Never touch the network for `hf:` specs: only the local hub cache is used. Also on
    /// when the environment has `HF_HUB_OFFLINE=1`.
    pub offline: bool,
    /// The hub cache directory; default: hf-hub's (`$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub hub_cache_dir: Option<PathBuf>,
    /// Memory budget for the weights in bytes: models whose weights (in the chosen storage)
    /// exceed it are refused. Default: the memory available according to `/proc/meminfo`,
    /// when it can be read.
    pub max_dense_bytes: Option<u64>,
    /// How to hold GGUF weight matrices; `None` (auto): on the CPU quantized when every block
    /// format has Candor's own kernels, else dense f32 when it fits the budget, else quantized;
    /// dense on other devices. Safetensors models are always dense.
    pub weights: Option<WeightStorage>,
}

/// A loaded model with its tokenizer and chat template: the entry point for scoring and
/// generation (see the `score` and `generate` methods).
#[derive(Debug)]
pub struct LanguageModel {
    model: Model,
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    source: String,
    number_tokens: OnceLock<Vec<(u32, String)>>,
}

impl LanguageModel {
    /// Load a model. Sets the thread count for candle first (see [`crate::ensure_thread_count`]).
    pub fn load(spec: &ModelSpec, options: &LoadOptions) -> Result<Self> {
        crate::ensure_thread_count();
        let device = options.device.open()?;
        match spec {
            ModelSpec::Gguf(path) => load_gguf(path, &device, options),
            ModelSpec::Directory(dir) => load_directory(dir, &device, options),
            ModelSpec::Hub { repo, file } => {
                let local = crate::hub::resolve(repo, file.as_deref(), options)?;
                match file {
                    Some(_) => load_gguf(&local, &device, options),
                    None => load_directory(&local, &device, options),
                }
            }
        }
    }

    /// Assemble from parts (used by the loaders and by tests building tiny models).
    pub fn from_parts(
        model: Model,
        tokenizer: Tokenizer,
        chat_template: ChatTemplate,
        source: String,
    ) -> Self {
        Self {
            model,
            tokenizer,
            chat_template,
            source,
            number_tokens: OnceLock::new(),
        }
    }

    /// The forward pass.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template (the model's own, or the plain fallback when it has none).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat_template
    }

    /// Where the model was loaded from (path or hub id), for provenance.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages` with the model's chat template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template.render(messages, add_generation_prompt)
    }

    /// The prompt text for one user message with the generation prompt appended (the
    /// template may add a default system message, as SmolLM2's does).
    pub fn chat_prompt(&self, user_message: &str) -> Result<String> {
        self.render_chat(&[ChatMessage::user(user_message)], true)
    }

    /// Tokens of `text`, special tokens matched as whole tokens, nothing added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// Tokens of a whole prompt: like [`LanguageModel::encode`], plus BOS in front when the
    /// model adds one and the text does not start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode_prompt(text)
    }

    /// Vocabulary tokens made only of digits and `.` with their text (for the number grammar).
    pub(crate) fn number_tokens(&self) -> &[(u32, String)] {
        self.number_tokens.get_or_init(|| {
            let vocab = self.tokenizer.inner().get_vocab(true);
            let special: std::collections::HashSet<u32> = self
                .tokenizer
                .inner()
                .get_added_tokens_decoder()
                .keys()
                .copied()
                .collect();
            let mut tokens: Vec<(u32, String)> = vocab
                .into_iter()
                .filter(|(text, id)| {
                    !text.is_empty()
                        && (*id as usize) < self.model.config().vocab_size
                        && !special.contains(id)
                        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
                .map(|(text, id)| (id, text))
                .collect();
            tokens.sort();
            tokens
        })
    }
}

/// Memory the system can still hand out (`MemAvailable` of `/proc/meminfo`), when readable.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn memory_budget(options: &LoadOptions) -> Option<u64> {
    options.max_dense_bytes.or_else(available_memory_bytes)
}

fn check_size(
    needed: u64,
    storage: WeightStorage,
    limit: Option<u64>,
    source_name: &str,
) -> Result<()> {
    match limit {
        Some(limit) if needed > limit => Err(InferError::ModelTooLarge {
            source_name: source_name.to_string(),
            storage,
            needed_bytes: needed,
            limit_bytes: limit,
        }),
        _ => Ok(()),
    }
}

/// Whether GGUF tensors of this type are kept quantized under [`WeightStorage::Quantized`].
fn is_block_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// The storage to use for a GGUF model: the requested one, or (auto) on the CPU quantized when
/// every block-quantized tensor has Candor's own kernels (`all_native`): as fast as dense f32
/// for prefill and label scoring, faster for decode (53.9 vs 29.4 tok/s on SmolLM2-135M
/// Q4_1, `scripts/bench-infer.sh`), a quarter of the memory. Otherwise dense when the f32
/// weights fit the budget or the device is not the CPU, quantized when they do not fit.
fn choose_storage(
    requested: Option<WeightStorage>,
    all_native: bool,
    dense_bytes: u64,
    limit: Option<u64>,
    device: &Device,
) -> WeightStorage {
    match (requested, limit) {
        (Some(storage), _) => storage,
        (None, _) if all_native && device.is_cpu() => WeightStorage::Quantized,
        (None, Some(limit)) if dense_bytes > limit && device.is_cpu() => WeightStorage::Quantized,
        _ => WeightStorage::Dense,
    }
}

/// The tensors stored under `name`: itself, or the parts of a fused Phi-3 matrix (rows of
/// q, k, v in `attn_qkv`; of gate, up in `ffn_up`) under the names the model reads.
fn split_fused(config: &ModelConfig, name: &str, tensor: QTensor) -> Result<Vec<(String, QTensor)>> {
    let (q_dim, kv_dim) = (config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
    let ffn = config.intermediate_size;
    let fused: [(&str, &[(&str, usize)]); 2] = [
        (".self_attn.qkv_proj.weight", &[("self_attn.q_proj", q_dim), ("self_attn.k_proj", kv_dim), ("self_attn.v_proj", kv_dim)]),
        (".mlp.gate_up_proj.weight", &[("mlp.gate_proj", ffn), ("mlp.up_proj", ffn)]),
    ];
    let Some((layer, parts)) = fused.iter().find_map(|(suffix, parts)| Some((name.strip_suffix(suffix)?, *parts))) else {
        return Ok(vec![(name.to_string(), tensor)]);
    };
    let (rows, cols) = tensor.shape().dims2()?;
    let total: usize = parts.iter().map(|(_, n)| n).sum();
    if rows != total {
        return Err(InferError::invalid_model(name, "shape", format!("{total} rows (the fused parts), found {rows}")));
    }
    let dtype = tensor.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = tensor.data()?;
    let mut start = 0;
    let mut out = Vec::with_capacity(parts.len());
    for &(part, part_rows) in parts {
        let bytes = &data[start * row_bytes..(start + part_rows) * row_bytes];
        let qtensor = candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, bytes, vec![part_rows, cols], &Device::Cpu)?;
        out.push((format!("{layer}.{part}.weight"), qtensor));
        start += part_rows;
    }
    Ok(out)
}

/// For a llama q/k weight of `rows` rows: the stored row of each Hugging Face row (the row
/// permutation [`unpermute_rope_rows`] applies to a dense matrix).
fn rope_row_order(rows: usize, heads: usize) -> Result<Vec<u32>> {
    let ids = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
    Ok(unpermute_rope_rows(&ids, heads)?.flatten_all()?.to_vec1()?)
}

/// GGUF tensor name for a Hugging Face tensor name.
fn gguf_name(architecture: Architecture, hf_name: &str) -> Option<String> {
    match hf_name {
        TensorNames::EMBED => return Some("token_embd.weight".into()),
        TensorNames::NORM => return Some("output_norm.weight".into()),
        TensorNames::LM_HEAD => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let (module, kind) = suffix.rsplit_once('.')?;
    let gguf_module = match (architecture, module) {
        (_, "input_layernorm") => "attn_norm",
        // Gemma 3 normalises the attention output; llama's post-attention norm is the
        // feed-forward's input norm.
        (Architecture::Gemma2 | Architecture::Gemma3, "post_attention_layernorm") => "post_attention_norm",
        (_, "post_attention_layernorm") => "ffn_norm",
        (_, "pre_feedforward_layernorm") => "ffn_norm",
        (_, "post_feedforward_layernorm") => "post_ffw_norm",
        (_, "self_attn.q_norm") => "attn_q_norm",
        (_, "self_attn.k_norm") => "attn_k_norm",
        (Architecture::Phi3, "self_attn.qkv_proj") => "attn_qkv",
        (Architecture::Phi3, "mlp.gate_up_proj") => "ffn_up",
        (_, "self_attn.q_proj") => "attn_q",
        (_, "self_attn.k_proj") => "attn_k",
        (_, "self_attn.v_proj") => "attn_v",
        (_, "self_attn.o_proj") => "attn_output",
        (_, "mlp.gate_proj") => "ffn_gate",
        (_, "mlp.up_proj") => "ffn_up",
        (_, "mlp.down_proj") => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf_module}.{kind}"))
}

fn expected_tensor_names(config: &ModelConfig) -> Vec<String> {
    let mut names = vec![
        TensorNames::EMBED.to_string(),
        TensorNames::NORM.to_string(),
    ];
    if !config.tie_word_embeddings {
        names.push(TensorNames::LM_HEAD.to_string());
    }
    for i in 0..config.num_layers {
        let norms: &[&str] = match config.architecture {
            Architecture::Gemma2 => &[
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ],
            Architecture::Gemma3 => &[
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
                "self_attn.q_norm",
                "self_attn.k_norm",
            ],
            Architecture::Qwen3 => &[
                "input_layernorm",
                "post_attention_layernorm",
                "self_attn.q_norm",
                "self_attn.k_norm",
            ],
            _ => &["input_layernorm", "post_attention_layernorm"],
        };
        let projections: &[&str] = match config.architecture {
            // Fused in the file, split at load into the names below them.
            Architecture::Phi3 => &["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
            _ => &[
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ],
        };
        for module in norms.iter().copied().chain(projections.iter().copied()) {
            names.push(TensorNames::layer(i, &format!("{module}.weight")));
        }
        if config.architecture.has_qkv_bias() {
            for module in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] {
                names.push(TensorNames::layer(i, &format!("{module}.bias")));
            }
        }
    }
    names
}

fn load_gguf(path: &Path, device: &Device, options: &LoadOptions) -> Result<LanguageModel> {
    let source_name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| InferError::io(path, e))?;
    let invalid = |e: candle_core::Error| InferError::InvalidGguf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    crate::gguf_guard::check_gguf_header(path)?;
    let content = gguf_file::Content::read(&mut file).map_err(invalid)?;
    let meta = GgufMetadata {
        metadata: &content.metadata,
        source_name: source_name.clone(),
    };
    Architecture::from_name(meta.string("general.architecture")?)?;
    let tokenizer = Tokenizer::from_gguf(&meta)?;
    let vocab_len = meta.string_array("tokenizer.ggml.tokens")?.len();
    let config = ModelConfig::from_gguf(
        &meta,
        content.tensor_infos.contains_key("output.weight"),
        vocab_len,
    )?;
    // Every layer has several tensors: a header claiming more layers than the file holds
    // tensors would only make the loader list billions of names (found by fuzzing: a hang).
    if config.num_layers > content.tensor_infos.len() {
        return Err(InferError::invalid_model(
            &source_name,
            format!("{}.block_count", config.architecture.name()),
            format!("at most the file's {} tensors, found {}", content.tensor_infos.len(), config.num_layers),
        ));
    }
    let names = expected_tensor_names(&config);
    let infos: Vec<&gguf_file::TensorInfo> = names
        .iter()
        .filter_map(|n| gguf_name(config.architecture, n))
        .filter_map(|n| content.tensor_infos.get(&n))
        .collect();
    let dense_bytes: u64 = infos.iter().map(|i| 4 * i.shape.elem_count() as u64).sum();
    let quantized_bytes: u64 = infos
        .iter()
        .map(|i| match is_block_quantized(i.ggml_dtype) {
            true => {
                (i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64
            }
            false => 4 * i.shape.elem_count() as u64,
        })
        .sum();
    let limit = memory_budget(options);
    let all_native = infos
        .iter()
        .filter(|i| is_block_quantized(i.ggml_dtype))
        .all(|i| BlockFormat::of(i.ggml_dtype).is_some());
    let storage = choose_storage(options.weights, all_native, dense_bytes, limit, device);
    let needed = match storage {
        WeightStorage::Dense => dense_bytes,
        WeightStorage::Quantized => quantized_bytes,
    };
    check_size(needed, storage, limit, &source_name)?;
    if let Some(long) = ["rope_factors_long.weight", "rope_factors_short.weight"].iter().find(|n| content.tensor_infos.contains_key(**n)) {
        return Err(InferError::invalid_model(
            &source_name,
            *long,
            "no LongRoPE factors (rope scaling that depends on the sequence length is not implemented)",
        ));
    }
    let mut tensors = ModelTensors {
        dense: HashMap::new(),
        quantized: HashMap::new(),
    };
    for name in names {
        let Some(gguf) = gguf_name(config.architecture, &name) else {
            continue;
        };
        if !content.tensor_infos.contains_key(&gguf) {
            return Err(InferError::invalid_model(
                &source_name,
                &gguf,
                "a tensor (missing)",
            ));
        }
        let fused = content
            .tensor(&mut file, &gguf, &Device::Cpu)
            .map_err(invalid)?;
        for (name, qtensor) in split_fused(&config, &name, fused)? {
            let rope_heads = match (config.architecture, name.as_str()) {
                (Architecture::Llama, n) if n.ends_with("q_proj.weight") => Some(config.num_heads),
                (Architecture::Llama, n) if n.ends_with("k_proj.weight") => Some(config.num_kv_heads),
                _ => None,
            };
            if storage == WeightStorage::Quantized
                && is_block_quantized(qtensor.dtype())
                && qtensor.rank() == 2
            {
                let matrix = QuantizedMatrix::from_qtensor(&qtensor)?;
                let matrix = match rope_heads {
                    Some(heads) => {
                        let order = rope_row_order(matrix.dims().0, heads)?;
                        matrix.with_row_order(order)?
                    }
                    None => matrix,
                };
                tensors.quantized.insert(name, matrix);
                continue;
            }
            let dense = qtensor.dequantize(&Device::Cpu).map_err(invalid)?;
            let dense = match rope_heads {
                Some(heads) => unpermute_rope_rows(&dense, heads)?,
                None => dense,
            };
            tensors.dense.insert(name, dense);
        }
    }
    let rope_factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
        true => {
            let t = content
                .tensor(&mut file, "rope_freqs.weight", &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(invalid)?;
            Some(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
        }
        false => None,
    };
    let model = Model::from_tensors(config, tensors, rope_factors, device, &source_name)?;
    let token_text = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    let chat_template = match meta.optional_string("tokenizer.chat_template") {
        Some(source) => ChatTemplate::new(
            source,
            token_text(tokenizer.bos_token_id()),
            token_text(tokenizer.eos_token_ids().first().copied()),
        )?,
        None => ChatTemplate::plain(),
    };
    Ok(LanguageModel::from_parts(
        model,
        tokenizer,
        chat_template,
        source_name,
    ))
}

/// `"text"` or `{"content": "text", ...}` in tokenizer_config.json.
fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

/// `"template"` or `[{"name": "default", "template": "..."}, ...]` in tokenizer_config.json.
fn template_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|i| i.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| items.first())
            .and_then(|i| i.get("template")?.as_str().map(String::from)),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| InferError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| InferError::invalid_model(path.display().to_string(), "JSON", e.to_string()))
}

fn load_directory(dir: &Path, device: &Device, options: &LoadOptions) -> Result<LanguageModel> {
    let source_name = dir.display().to_string();
    let config_path = dir.join("config.json");
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| InferError::io(&config_path, e))?;
    let config = ModelConfig::from_hf_config(&config_text, &config_path.display().to_string())?;
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| InferError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(InferError::invalid_model(
            &source_name,
            "*.safetensors",
            "at least one weights file",
        ));
    }
    let shard_bytes: u64 = shards
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    // f16/bf16 files double in size as f32; f32 files stay the same: bound by the worst case.
    check_size(
        shard_bytes * 2,
        WeightStorage::Dense,
        memory_budget(options),
        &source_name,
    )?;
    let mut tensors = HashMap::new();
    for shard in &shards {
        let loaded = candle_core::safetensors::load(shard, &Device::Cpu).map_err(|e| {
            InferError::invalid_model(shard.display().to_string(), "safetensors", e.to_string())
        })?;
        for (name, t) in loaded {
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?;
    let generation_config = read_json(&dir.join("generation_config.json"))?;
    let field = |key: &str| tokenizer_config.as_ref().and_then(|c| c.get(key));
    let bos_token = token_string(field("bos_token"));
    let eos_token = token_string(field("eos_token"));
    let tokenizer_json = Tokenizer::from_file(&dir.join("tokenizer.json"), None, Vec::new())?;
    let id_of = |t: &Option<String>| t.as_deref().and_then(|t| tokenizer_json.token_to_id(t));
    let mut eos_ids: Vec<u32> = id_of(&eos_token).into_iter().collect();
    if let Some(ids) = generation_config
        .as_ref()
        .and_then(|g| g.get("eos_token_id"))
    {
        let extra: Vec<u32> = match ids {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            v => v.as_u64().map(|v| v as u32).into_iter().collect(),
        };
        for id in extra {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    // add_bos_token when tokenizer_config.json says so; otherwise whether the tokenizer's own
    // post-processor adds BOS (as Llama 3's does).
    let add_bos = match field("add_bos_token").and_then(|v| v.as_bool()) {
        Some(add) => add,
        None => adds_bos_itself(tokenizer_json.inner(), id_of(&bos_token)),
    };
    let tokenizer = Tokenizer::new(tokenizer_json.inner().clone(), id_of(&bos_token), eos_ids)
        .with_add_bos(add_bos);
    let chat_template = match template_string(field("chat_template")) {
        Some(source) => ChatTemplate::new(
            source,
            bos_token.unwrap_or_default(),
            eos_token.unwrap_or_default(),
        )?,
        None => ChatTemplate::plain(),
    };
    let tensors = ModelTensors {
        dense: tensors,
        quantized: HashMap::new(),
    };
    let model = Model::from_tensors(config, tensors, None, device, &source_name)?;
    Ok(LanguageModel::from_parts(
        model,
        tokenizer,
        chat_template,
        source_name,
    ))
}

/// Whether encoding with the post-processor puts `bos` in front of the text.
fn adds_bos_itself(tokenizer: &tokenizers::Tokenizer, bos: Option<u32>) -> bool {
    let Some(bos) = bos else { return false };
    tokenizer
        .encode("a", true)
        .is_ok_and(|e| e.get_ids().first() == Some(&bos))
}

/// Write `model` as a Hugging Face directory: `model.safetensors` (f32), `config.json`,
/// `tokenizer.json` and `tokenizer_config.json` (chat template, bos/eos tokens), which
/// [`LanguageModel::load`] reads back as a [`ModelSpec::Directory`].
pub fn export_dense(model: &LanguageModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| InferError::io(dir, e))?;
    let config = model.model().config();
    // The config's rope (written to config.json) must be the model's: per-frequency factors
    // have no config.json form.
    let (from_config, _) = global_rope(config, None).map_err(InferError::InvalidInput)?;
    if model.model().inv_freq() != from_config.as_slice() {
        return Err(InferError::InvalidInput(
            "export of per-frequency rope factors (GGUF rope_freqs.weight) is not supported".into(),
        ));
    }
    let tensors: HashMap<String, Tensor> = model
        .model()
        .named_tensors()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;
    let write = |name: &str, value: &serde_json::Value| -> Result<()> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| InferError::InvalidInput(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| InferError::io(path, e))
    };
    write("config.json", &config.to_hf_config_json())?;
    model.tokenizer().save(&dir.join("tokenizer.json"))?;
    let tok = model.tokenizer();
    let text_of = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let mut tokenizer_config = serde_json::json!({
        "bos_token": text_of(tok.bos_token_id()),
        "eos_token": text_of(tok.eos_token_ids().first().copied()),
        "add_bos_token": tok.add_bos(),
    });
    if let Some(source) = model.chat_template().source() {
        tokenizer_config["chat_template"] = serde_json::Value::String(source.to_string());
    }
    write("tokenizer_config.json", &tokenizer_config)?;
    write(
        "generation_config.json",
        &serde_json::json!({ "eos_token_id": tok.eos_token_ids() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_storage_is_quantized_on_the_cpu_only_when_every_format_has_native_kernels() {
        let cpu = Device::Cpu;
        let (fits, too_big) = (Some(1 << 30), Some(1 << 20));
        assert_eq!(choose_storage(None, true, 1 << 25, fits, &cpu), WeightStorage::Quantized);
        assert_eq!(choose_storage(None, false, 1 << 25, fits, &cpu), WeightStorage::Dense);
        assert_eq!(choose_storage(None, false, 1 << 25, too_big, &cpu), WeightStorage::Quantized);
        assert_eq!(choose_storage(None, false, 1 << 25, None, &cpu), WeightStorage::Dense);
        assert_eq!(
            choose_storage(Some(WeightStorage::Dense), true, 1 << 25, fits, &cpu),
            WeightStorage::Dense
        );
    }

    #[test]
    fn maps_hf_names_to_gguf() {
        assert_eq!(
            gguf_name(Architecture::Llama, "model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name(Architecture::Llama, "model.layers.12.self_attn.k_proj.bias").unwrap(),
            "blk.12.attn_k.bias"
        );
        assert_eq!(
            gguf_name(Architecture::Llama, "model.layers.0.mlp.down_proj.weight").unwrap(),
            "blk.0.ffn_down.weight"
        );
        assert_eq!(
            gguf_name(Architecture::Llama, "model.layers.3.post_attention_layernorm.weight").unwrap(),
            "blk.3.ffn_norm.weight"
        );
        let gemma = |name: &str| gguf_name(Architecture::Gemma3, name).unwrap();
        assert_eq!(gemma("model.layers.3.post_attention_layernorm.weight"), "blk.3.post_attention_norm.weight");
        assert_eq!(gemma("model.layers.3.pre_feedforward_layernorm.weight"), "blk.3.ffn_norm.weight");
        assert_eq!(gemma("model.layers.3.post_feedforward_layernorm.weight"), "blk.3.post_ffw_norm.weight");
        assert_eq!(gemma("model.layers.3.self_attn.k_norm.weight"), "blk.3.attn_k_norm.weight");
        assert!(gguf_name(Architecture::Llama, "model.layers.0.unknown.weight").is_none());
    }

    #[test]
    fn reads_tokenizer_config_shapes() {
        let cfg = serde_json::json!({
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
        });
        assert_eq!(token_string(cfg.get("bos_token")).unwrap(), "<s>");
        assert_eq!(token_string(cfg.get("eos_token")).unwrap(), "</s>");
        assert_eq!(template_string(cfg.get("chat_template")).unwrap(), "D");
        assert!(template_string(cfg.get("missing")).is_none());
    }
}
