//! The transformer forward pass (llama family and qwen2) on dense f32 weights, with a KV cache
//! that the caller owns and can clone, logits for every position of a chunk, and a batched
//! variant that runs several continuations on top of one shared cache.
//!
//! The cache never copies on append: keys and values live in preallocated per-layer buffers
//! that grow in large steps, new positions are written in place and attention reads a view of
//! the filled part. Clones share a buffer; only the clone at the buffer's frontier appends in
//! place, so no position ever changes under a reader. On the CPU any other clone reads the
//! buffer's positions so far as a shared prefix and writes into a new buffer of its own from
//! there (every example extending one prompt header reads the header's single copy, and the
//! examples in flight attend in one pass, so a worker reads the header once for several of
//! them); elsewhere (candle's attention, one view per sequence) it copies its prefix first.
//! Batched continuations attend to the shared prefix as one batch-1 view and to their own
//! tokens separately: the prefix is never materialised per continuation.
//!
//! Projection and embedding matrices are dense f32 or kept quantized (see [`crate::quantized`]);
//! either way activations stay f32. Weights are held in Hugging Face layout and naming (`model.layers.N.self_attn.q_proj.weight`,
//! rows = output features); GGUF llama q/k rows, which llama.cpp permutes for its interleaved
//! rope, are permuted back at load, so one half-rotation rope serves every source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::attention::{DirectAttention, SequenceQueries};
use crate::config::{Architecture, Llama3RopeScaling, ModelConfig, GEMMA3_LOCAL_ROPE_THETA};
use crate::error::{InferError, Result};
use crate::elementwise;
use crate::quantized::{QuantizedMatrix, Weight, WeightStorage, GEMM_MIN_ACTIVATION_ROWS};

/// A linear projection `y = x Wᵀ (+ b)` with `W` of shape `[out, in]`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.matmul_t(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// [`Linear::forward`] of each group of rows apart (see [`row_groups`]).
    fn forward_grouped(&self, x: &Tensor, groups: &[(usize, usize)]) -> Result<Tensor> {
        in_row_groups(x, groups, |rows| self.forward(rows))
    }
}

/// `work` run on a thread of rayon's pool. A forward pass has a few parallel loops per layer;
/// called from outside the pool, each loop is handed to the pool while the caller sleeps on a
/// latch (a futex wait and wake-up per loop: 3% of a decode step in the wait alone, and the
/// waking thread competes with the pool for the cores). From a pool thread the loops are split
/// with the other workers directly, and the caller is handed over once per pass.
fn on_pool_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match rayon::current_thread_index() {
        Some(_) => work(),
        None => rayon::join(work, || ()).0,
    }
}

/// Row ranges `(start, len)` that meet the weights together in a multi-sequence pass:
/// consecutive sequences packed while a group stays under [`GEMM_MIN_ACTIVATION_ROWS`] rows, a
/// longer sequence alone. A sequence's rows then go through the same kernel, summing in the
/// same order, as when it runs by itself, so a batch gives each sequence its lone numbers to
/// the bit (one product over all rows would switch to gemm past that size).
fn row_groups(lengths: impl IntoIterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for len in lengths {
        match groups.last_mut() {
            Some(last) if last.1 + len < GEMM_MIN_ACTIVATION_ROWS => last.1 += len,
            _ => groups.push((start, len)),
        }
        start += len;
    }
    groups
}

/// `f` applied to each group of rows of `x` apart, the results stacked in row order.
fn in_row_groups(x: &Tensor, groups: &[(usize, usize)], f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if groups.len() <= 1 {
        return f(x);
    }
    let parts = groups.iter().map(|&(start, len)| f(&x.narrow(0, start, len)?)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Gemma 3: RMSNorm of each query and key head (`[head_dim]`), before rope.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Gemma 3: RMSNorm of the attention output and of the feed-forward output, before each
    /// joins the residual stream.
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
}

/// Per-layer keys and values of the tokens seen so far, owned by the caller.
///
/// Cloning is cheap (the buffers are shared); a cloned cache can be extended independently,
/// which is how a shared prompt prefix is reused (see the module docs for how appends stay in
/// place).
#[derive(Debug, Clone)]
pub struct KvCache {
    num_layers: usize,
    /// Positions `0..shared.len` read from another cache's buffer, never written (CPU).
    shared: Option<SharedPositions>,
    /// This cache's own buffer: positions from its `first` on.
    buffer: Option<Arc<KvBuffer>>,
    len: usize,
}

/// The first `len` positions of a buffer that caches extended from the same prefix all read.
#[derive(Debug, Clone)]
struct SharedPositions {
    buffer: Arc<KvBuffer>,
    len: usize,
}

/// Keys and values `[1, kv_heads, capacity, head_dim]` of every layer, filled in place; index
/// `i` holds position `first + i`.
#[derive(Debug)]
struct KvBuffer {
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
    first: usize,
    /// Positions `first..filled` have been claimed by some cache sharing this buffer.
    filled: AtomicUsize,
}

/// Where one layer's keys and values of a range of positions are: a `[1, kv_heads, capacity,
/// head_dim]` buffer whose index `i` holds position `first + i`, read at positions
/// `first..end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySegment<'a> {
    pub(crate) keys: &'a Tensor,
    pub(crate) values: &'a Tensor,
    pub(crate) first: usize,
    pub(crate) end: usize,
}

/// The buffers a chunk's attention reads: positions before `own.first` from the shared
/// buffer, the rest (the chunk included) from the chunk's own.
#[derive(Debug, Clone)]
struct ChunkBuffers {
    shared: Option<SharedPositions>,
    own: Arc<KvBuffer>,
}

impl ChunkBuffers {
    /// This layer's segments, covering positions `0..end`.
    fn segments(&self, layer: usize, end: usize) -> Vec<KeySegment<'_>> {
        layer_segments(self.shared.as_ref(), Some(&self.own), layer, end)
    }
}

/// Where `layer`'s keys and values of positions `0..end` are: the shared prefix, then the own
/// buffer's positions up to `end` (none when it holds none of them).
fn layer_segments<'a>(shared: Option<&'a SharedPositions>, own: Option<&'a Arc<KvBuffer>>, layer: usize, end: usize) -> Vec<KeySegment<'a>> {
    let mut segments = Vec::with_capacity(3);
    if let Some(shared) = shared {
        let (keys, values) = &shared.buffer.layers[layer];
        segments.push(KeySegment { keys, values, first: shared.buffer.first, end: shared.len });
    }
    if let Some(own) = own.filter(|own| end > own.first) {
        let (keys, values) = &own.layers[layer];
        segments.push(KeySegment { keys, values, first: own.first, end });
    }
    segments
}

impl KvCache {
    /// An empty cache for a model with `num_layers` blocks.
    pub fn new(num_layers: usize) -> Self {
        Self { num_layers, shared: None, buffer: None, len: 0 }
    }

    /// Number of positions already processed (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of the first `len` positions (at most the cached ones); extending it writes
    /// into a new buffer, never over the positions after `len` that others may share.
    pub(crate) fn truncated(&self, len: usize) -> Self {
        let len = len.min(self.len);
        match &self.shared {
            Some(shared) if len <= shared.len => Self {
                num_layers: self.num_layers,
                shared: Some(SharedPositions { buffer: shared.buffer.clone(), len }),
                buffer: None,
                len,
            },
            _ => Self { len, ..self.clone() },
        }
    }

    /// Where `layer`'s keys and values of the cached positions are, in position order.
    fn segments(&self, layer: usize) -> Vec<KeySegment<'_>> {
        layer_segments(self.shared.as_ref(), self.buffer.as_ref(), layer, self.len)
    }

    /// Keys and values of `layer` for the cached positions, `[1, kv, len, d]`: a view of the
    /// buffer, or the shared and own parts joined (a copy).
    fn layer_view(&self, layer: usize) -> Result<Option<(Tensor, Tensor)>> {
        let mut parts = Vec::with_capacity(2);
        if let Some(shared) = &self.shared {
            let (k, v) = &shared.buffer.layers[layer];
            parts.push((k.narrow(2, 0, shared.len)?, v.narrow(2, 0, shared.len)?));
        }
        if let Some(buffer) = &self.buffer {
            let own = self.len.saturating_sub(buffer.first);
            if own > 0 {
                let (k, v) = &buffer.layers[layer];
                parts.push((k.narrow(2, 0, own)?, v.narrow(2, 0, own)?));
            }
        }
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop()),
            _ => {
                let (keys, values): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
                Ok(Some((Tensor::cat(&keys, 2)?, Tensor::cat(&values, 2)?)))
            }
        }
    }

    /// The buffers a chunk of `extra` positions after this cache is attended in and written
    /// to: its own buffer, when the cache sits at the buffer's frontier and the buffer has
    /// room; else a new one (sized `own · 1.5 + 64` positions, at most `max_positions`).
    ///
    /// With `share_prefix` (the CPU path, whose attention reads two segments), the new buffer
    /// holds only positions from the end of a prefix that other caches may share: a cache
    /// whose positions all lie in one buffer hands that buffer's first `len` positions on as
    /// shared, uncopied (every example extending one prompt header reads the header's single
    /// copy); only positions after a shared part are copied. Without it, the new buffer holds a
    /// copy of every cached position.
    fn chunk_buffers(&self, extra: usize, shape: (usize, usize), max_positions: usize, share_prefix: bool, device: &Device) -> Result<ChunkBuffers> {
        let needed = self.len + extra;
        if let Some(buffer) = &self.buffer {
            let claimed = buffer.first <= self.len
                && needed - buffer.first <= buffer.capacity
                && buffer.filled.compare_exchange(self.len, needed, Ordering::AcqRel, Ordering::Acquire).is_ok();
            if claimed {
                return Ok(ChunkBuffers { shared: self.shared.clone(), own: buffer.clone() });
            }
        }
        let shared = match (share_prefix, &self.shared, &self.buffer) {
            (false, _, _) => None,
            (true, Some(shared), _) => Some(SharedPositions { buffer: shared.buffer.clone(), len: shared.len.min(self.len) }),
            (true, None, Some(buffer)) if self.len > 0 => Some(SharedPositions { buffer: buffer.clone(), len: self.len }),
            (true, None, _) => None,
        };
        let first = shared.as_ref().map_or(0, |shared| shared.len);
        let own = needed - first;
        let capacity = (own + own / 2 + 64).min(max_positions.saturating_sub(first)).max(own);
        let (kv_heads, head_dim) = shape;
        let view = match first {
            0 => self.clone(),
            _ => Self { shared: None, buffer: self.buffer.clone().filter(|b| b.first == first), ..self.clone() },
        };
        let mut layers = Vec::with_capacity(self.num_layers);
        for layer in 0..self.num_layers {
            let k = Tensor::zeros((1, kv_heads, capacity, head_dim), DType::F32, device)?;
            let v = Tensor::zeros((1, kv_heads, capacity, head_dim), DType::F32, device)?;
            if let Some((k_past, v_past)) = view.layer_view(layer)? {
                k.slice_set(&k_past.contiguous()?, 2, 0)?;
                v.slice_set(&v_past.contiguous()?, 2, 0)?;
            }
            layers.push((k, v));
        }
        let own = Arc::new(KvBuffer { layers, capacity, first, filled: AtomicUsize::new(needed) });
        Ok(ChunkBuffers { shared, own })
    }
}

/// The names of the dense tensors of one model, in Hugging Face convention.
pub(crate) struct TensorNames;

impl TensorNames {
    pub(crate) const EMBED: &'static str = "model.embed_tokens.weight";
    pub(crate) const NORM: &'static str = "model.norm.weight";
    pub(crate) const LM_HEAD: &'static str = "lm_head.weight";

    pub(crate) fn layer(i: usize, suffix: &str) -> String {
        format!("model.layers.{i}.{suffix}")
    }
}

/// The tensors a model is assembled from, by Hugging Face name: f32 tensors and quantized
/// matrices (the latter only for projections, the embedding table and the output head).
pub(crate) struct ModelTensors {
    /// f32 (or convertible) tensors.
    pub(crate) dense: HashMap<String, Tensor>,
    /// Matrices kept quantized.
    pub(crate) quantized: HashMap<String, QuantizedMatrix>,
}

struct TensorTaker<'a> {
    tensors: ModelTensors,
    device: &'a Device,
    source_name: &'a str,
}

impl TensorTaker<'_> {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.dense.remove(name).ok_or_else(|| {
            InferError::invalid_model(self.source_name, name, "a tensor (missing)")
        })?;
        check_shape(t.dims(), name, shape, self.source_name)?;
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Weight> {
        match self.tensors.quantized.remove(name) {
            Some(q) => {
                let (rows, cols) = q.dims();
                check_shape(&[rows, cols], name, shape, self.source_name)?;
                Ok(Weight::Quantized(std::sync::Arc::new(q)))
            }
            None => Ok(Weight::Dense(self.dense(name, shape)?)),
        }
    }
}

/// A transformer over f32 activations, with dense or quantized weight matrices.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    device: Device,
    embed: Weight,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Weight,
    /// Rope inverse frequencies (after any scaling), length `head_dim / 2`.
    inv_freq: Vec<f64>,
    /// Multiplier of the rope's cos and sin (YaRN's attention factor; 1 otherwise).
    rope_magnitude: f64,
    /// Those of local layers, where they have their own rope base (Gemma 3).
    local_inv_freq: Option<Vec<f64>>,
}

impl Model {
    /// Assemble a model from tensors named in Hugging Face convention (q/k rows in HF
    /// order). `rope_freq_factors` divides the rope frequencies (GGUF `rope_freqs.weight`).
    /// Quantized matrices need a CPU `device`.
    pub(crate) fn from_tensors(
        config: ModelConfig,
        tensors: ModelTensors,
        rope_freq_factors: Option<Vec<f64>>,
        device: &Device,
        source_name: &str,
    ) -> Result<Self> {
        if !tensors.quantized.is_empty() && !device.is_cpu() {
            return Err(InferError::Device {
                device: format!("{device:?}"),
                reason: "quantized weight storage runs on the CPU only; use dense weights".into(),
            });
        }
        let mut take = TensorTaker {
            tensors,
            device,
            source_name,
        };
        let c = &config;
        let (h, q_dim, kv_dim) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
        );
        let embed = take.weight(TensorNames::EMBED, &[c.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let mut linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let weight = take.weight(
                    &TensorNames::layer(i, &format!("{name}.weight")),
                    &[out, inp],
                )?;
                let bias = match bias {
                    true => {
                        Some(take.dense(&TensorNames::layer(i, &format!("{name}.bias")), &[out])?)
                    }
                    false => None,
                };
                Ok(Linear { weight, bias })
            };
            let qkv_bias = c.architecture.has_qkv_bias();
            let q = linear("self_attn.q_proj", q_dim, h, qkv_bias)?;
            let k = linear("self_attn.k_proj", kv_dim, h, qkv_bias)?;
            let v = linear("self_attn.v_proj", kv_dim, h, qkv_bias)?;
            let o = linear("self_attn.o_proj", h, q_dim, false)?;
            let gate = linear("mlp.gate_proj", c.intermediate_size, h, false)?;
            let up = linear("mlp.up_proj", c.intermediate_size, h, false)?;
            let down = linear("mlp.down_proj", h, c.intermediate_size, false)?;
            let gemma = c.architecture.is_gemma();
            let mut norm = |name: &str, len: usize| take.dense(&TensorNames::layer(i, &format!("{name}.weight")), &[len]);
            let ffn_norm = match gemma {
                true => norm("pre_feedforward_layernorm", h)?,
                false => norm("post_attention_layernorm", h)?,
            };
            let qk_norm = c.architecture.has_qk_norm();
            let mut optional_norm = |present: bool, name: &str, len: usize| present.then(|| norm(name, len)).transpose();
            blocks.push(Block {
                q_norm: optional_norm(qk_norm, "self_attn.q_norm", c.head_dim)?,
                k_norm: optional_norm(qk_norm, "self_attn.k_norm", c.head_dim)?,
                post_attn_norm: optional_norm(gemma, "post_attention_layernorm", h)?,
                post_ffn_norm: optional_norm(gemma, "post_feedforward_layernorm", h)?,
                attn_norm: take.dense(&TensorNames::layer(i, "input_layernorm.weight"), &[h])?,
                q,
                k,
                v,
                o,
                ffn_norm,
                gate,
                up,
                down,
            });
        }
        let norm = take.dense(TensorNames::NORM, &[h])?;
        let lm_head = match c.tie_word_embeddings {
            true => embed.clone(),
            false => take.weight(TensorNames::LM_HEAD, &[c.vocab_size, h])?,
        };
        let (inv_freq, rope_magnitude) = global_rope(c, rope_freq_factors.as_deref())
            .map_err(|expected| InferError::invalid_model(source_name, "rope_freqs.weight", expected))?;
        let local_inv_freq = (c.architecture == Architecture::Gemma3)
            .then(|| rope_inverse_frequencies(c.head_dim, GEMMA3_LOCAL_ROPE_THETA, None, None))
            .transpose()
            .map_err(|expected| InferError::invalid_model(source_name, "rope", expected))?;
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
            rope_magnitude,
            local_inv_freq,
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// How the weight matrices are held: [`WeightStorage::Quantized`] when any of them is.
    pub fn weight_storage(&self) -> WeightStorage {
        let quantized = self.embed.is_quantized()
            || self.lm_head.is_quantized()
            || self.blocks.iter().any(|b| {
                [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]
                    .iter()
                    .any(|l| l.weight.is_quantized())
            });
        match quantized {
            true => WeightStorage::Quantized,
            false => WeightStorage::Dense,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes one cached position takes (f32 keys and values of every layer).
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.config;
        c.num_layers * 2 * c.num_kv_heads * c.head_dim * std::mem::size_of::<f32>()
    }

    /// A fresh, empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }

    /// Run `tokens` after the tokens already in `cache`, append their keys/values to the cache
    /// and return the logits of every position of the chunk, shape `[tokens.len(), vocab]`
    /// (row `i` is the distribution of the token that follows `tokens[i]`).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.check_single_sequence(tokens, cache)?;
        let logits = self.run_sequences(&[tokens], &mut [cache], LogitRows::All)?;
        logits.into_iter().next().ok_or_else(|| missing_output("the sequence"))
    }

    /// Like [`Model::forward`] but returns only the last position's logits, `[vocab]`,
    /// skipping the output projection of the other positions (the cheaper way to prefill).
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.check_single_sequence(tokens, cache)?;
        let logits = self.run_sequences(&[tokens], &mut [cache], LogitRows::Last)?;
        Ok(logits.into_iter().next().ok_or_else(|| missing_output("the sequence"))?.flatten_all()?)
    }

    /// Runs several independent sequences as one batch: `chunks[i]` after the positions of
    /// `caches[i]` (ragged lengths and offsets, no padding). Projections and feed-forward layers
    /// see all rows in one product, so the weights are read once per step for every sequence;
    /// attention runs per sequence on its own cache. Appends each chunk to its cache and returns
    /// each sequence's last-position logits `[vocab]`.
    pub fn forward_many_last(&self, chunks: &[&[u32]], caches: &mut [&mut KvCache]) -> Result<Vec<Tensor>> {
        if chunks.len() != caches.len() {
            return Err(InferError::InvalidInput(format!(
                "forward_many_last got {} chunks for {} caches",
                chunks.len(),
                caches.len()
            )));
        }
        for (tokens, cache) in chunks.iter().zip(caches.iter()) {
            self.check_single_sequence(tokens, cache)?;
        }
        let logits = self.run_sequences(chunks, caches, LogitRows::Last)?;
        logits.into_iter().map(|l| Ok(l.flatten_all()?)).collect()
    }

    fn check_single_sequence(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        if tokens.is_empty() {
            return Err(InferError::InvalidInput(
                "forward called with no tokens".into(),
            ));
        }
        if cache.num_layers != self.blocks.len() {
            return Err(InferError::InvalidInput(format!(
                "cache has {} layers, model has {}",
                cache.num_layers,
                self.blocks.len()
            )));
        }
        self.check_token_ids(tokens)
    }

    /// Run several continuations on top of one shared single-sequence cache (which is not
    /// modified) and return each continuation's logits, `[len_i, vocab]`.
    ///
    /// When right-padding to the longest would waste at least [`PADDING_WORTH_SPLITTING`] rows,
    /// continuations of equal length run as one batch each (MASSIVE's 60 labels span a few
    /// lengths; padding doubled their rows, and the grouped passes took 0.55× the time); otherwise
    /// all run as one padded batch, as a pass reads every weight once whatever its rows (six
    /// short labels: one pass is 1.5× faster than three).
    pub fn forward_batch(
        &self,
        continuations: &[Vec<u32>],
        cache: &KvCache,
    ) -> Result<Vec<Tensor>> {
        if let Some(i) = continuations.iter().position(Vec::is_empty) {
            return Err(InferError::InvalidInput(format!(
                "continuation {i} of the batch has no tokens"
            )));
        }
        for c in continuations {
            self.check_token_ids(c)?;
        }
        if continuations.is_empty() {
            return Ok(Vec::new());
        }
        let max_len = continuations.iter().map(Vec::len).max().unwrap_or(0);
        let rows: usize = continuations.iter().map(Vec::len).sum();
        let mut lengths: Vec<usize> = continuations.iter().map(Vec::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        if continuations.len() * max_len - rows < PADDING_WORTH_SPLITTING {
            lengths = vec![max_len];
        }
        let mut logits: Vec<Option<Tensor>> = vec![None; continuations.len()];
        let mut first = 0;
        for length in lengths {
            // Continuations no longer than `length` not yet run, padded to `length`.
            let members: Vec<usize> =
                (0..continuations.len()).filter(|&i| (first..=length).contains(&continuations[i].len())).collect();
            first = length + 1;
            let pad = continuations[members[0]][0];
            let mut ids = Vec::with_capacity(members.len() * length);
            for &i in &members {
                ids.extend_from_slice(&continuations[i]);
                ids.extend(std::iter::repeat_n(pad, length - continuations[i].len()));
            }
            let ids = Tensor::from_vec(ids, (members.len(), length), &self.device)?;
            let group = self.run_branches(&ids, cache)?;
            for (row, &i) in members.iter().enumerate() {
                logits[i] = Some(group.get(row)?.narrow(0, 0, continuations[i].len())?);
            }
        }
        logits.into_iter().map(|l| l.ok_or_else(|| missing_output("a continuation"))).collect()
    }

    /// An error naming the first id that has no embedding row.
    pub(crate) fn check_token_ids(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(t) => Err(InferError::InvalidInput(format!(
                "token id {t} is outside the model's vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Embedding-to-logits pass over independent sequences, each chunk appended to its cache.
    /// Returns per sequence `[len_i, vocab]`, or `[1, vocab]` with [`LogitRows::Last`].
    fn run_sequences(&self, chunks: &[&[u32]], caches: &mut [&mut KvCache], rows: LogitRows) -> Result<Vec<Tensor>> {
        on_pool_thread(|| self.run_sequences_in_parts(chunks, caches, rows, rayon::current_num_threads()))
    }

    /// A multi-sequence pass of short chunks on the CPU, split into halves that run whole
    /// passes side by side, each on its share of `threads`, while each half keeps at least
    /// [`MIN_ROWS_PER_PART`] rows (a full kernel tile).
    ///
    /// Why: a pass has a dozen parallel loops per layer between short serial steps (norms,
    /// rotary embedding, residual adds), and at every loop the other workers are woken from
    /// sleep; two halves run their serial steps at the same time and share no loop. 16
    /// sequences decoded together on 2 cores: 343-354 tok/s as one pass, 443-446 as two
    /// halves (alternating runs). Every row's numbers are those of the whole pass (the
    /// kernels sum each activation row on its own, and each sequence attends to its own
    /// cache); a cache shared by sequences in both halves is claimed atomically
    /// ([`KvCache::chunk_buffers`]).
    fn run_sequences_in_parts(&self, chunks: &[&[u32]], caches: &mut [&mut KvCache], rows: LogitRows, threads: usize) -> Result<Vec<Tensor>> {
        let lengths: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
        let Some(middle) = self.split_point(&lengths, threads) else {
            return self.run_sequences_here(chunks, caches, rows);
        };
        let (first_caches, second_caches) = caches.split_at_mut(middle);
        let (first, second) = rayon::join(
            || self.run_sequences_in_parts(&chunks[..middle], first_caches, rows, threads / 2),
            || self.run_sequences_in_parts(&chunks[middle..], second_caches, rows, threads - threads / 2),
        );
        let mut logits = first?;
        logits.extend(second?);
        Ok(logits)
    }

    /// Where to halve a pass of chunks of `lengths` for [`Self::run_sequences_in_parts`]: the
    /// sequence at which the rows are split most evenly, when the pass runs on the CPU with two
    /// threads or more, every chunk goes through the dot kernels (shorter than
    /// [`GEMM_MIN_ACTIVATION_ROWS`]; gemm splits its own work) and both halves keep
    /// [`MIN_ROWS_PER_PART`] rows.
    fn split_point(&self, lengths: &[usize], threads: usize) -> Option<usize> {
        let total: usize = lengths.iter().sum();
        let short = lengths.iter().all(|&len| len < GEMM_MIN_ACTIVATION_ROWS);
        if !self.attends_directly() || threads < 2 || !short || total < 2 * MIN_ROWS_PER_PART {
            return None;
        }
        let mut before = 0;
        let middle = lengths.iter().position(|&len| {
            before += len;
            2 * before >= total
        })?;
        let first: usize = lengths[..=middle].iter().sum();
        (first >= MIN_ROWS_PER_PART && total - first >= MIN_ROWS_PER_PART).then_some(middle + 1)
    }

    fn run_sequences_here(&self, chunks: &[&[u32]], caches: &mut [&mut KvCache], rows: LogitRows) -> Result<Vec<Tensor>> {
        let shape = (self.config.num_kv_heads, self.config.head_dim);
        let mut sequences = Vec::with_capacity(chunks.len());
        let mut start = 0;
        // Token ids and cache shapes were checked by the public callers (check_single_sequence).
        for (tokens, cache) in chunks.iter().zip(caches.iter()) {
            self.check_room(cache.len, tokens.len())?;
            sequences.push(SequenceChunk {
                start,
                len: tokens.len(),
                offset: cache.len,
                rope: self.rope_tables(cache.len, tokens.len())?,
                // The direct path applies causality itself; only candle's path reads a mask.
                masks: match self.attends_directly() {
                    true => Masks::default(),
                    false => self.masks(tokens.len(), cache.len)?,
                },
                buffers: cache.chunk_buffers(tokens.len(), shape, self.config.context_length, self.attends_directly(), &self.device)?,
            });
            start += tokens.len();
        }
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, start, &self.device)?;
        let mut x = self.embed_rows(&ids)?; // [rows, hidden]
        let groups = row_groups(sequences.iter().map(|s| s.len));
        for (layer, block) in self.blocks.iter().enumerate() {
            x = self.block_forward_sequences(block, layer, &x, &sequences, &groups)?;
        }
        for (sequence, cache) in sequences.iter().zip(caches.iter_mut()) {
            cache.shared = sequence.buffers.shared.clone();
            cache.buffer = Some(sequence.buffers.own.clone());
            cache.len += sequence.len;
        }
        let kept: Vec<Tensor> = sequences
            .iter()
            .map(|s| match rows {
                LogitRows::All => x.narrow(0, s.start, s.len),
                LogitRows::Last => x.narrow(0, s.start + s.len - 1, 1),
            })
            .collect::<candle_core::Result<_>>()?;
        let x = Tensor::cat(&kept, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.config.rms_norm_eps as f32)?;
        let kept_groups = row_groups(kept.iter().map(|k| k.dim(0)).collect::<candle_core::Result<Vec<_>>>()?);
        let logits = in_row_groups(&x, &kept_groups, |rows| self.lm_head.matmul_t(rows))?;
        let logits = self.soft_cap(logits, self.config.final_logit_softcap)?;
        let mut at = 0;
        kept.iter()
            .map(|k| {
                let n = k.dim(0)?;
                let part = logits.narrow(0, at, n)?;
                at += n;
                Ok(part)
            })
            .collect()
    }

    /// One block over the rows of several sequences: shared projections and feed-forward, and
    /// each sequence's attention over its own buffer.
    fn block_forward_sequences(
        &self,
        block: &Block,
        layer: usize,
        x: &Tensor,
        sequences: &[SequenceChunk],
        groups: &[(usize, usize)],
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &block.attn_norm, eps)?;
        let project = |linear: &Linear, rows: &Tensor| linear.forward_grouped(rows, groups);
        let (q, k, v) = (project(&block.q, &h)?, project(&block.k, &h)?, project(&block.v, &h)?);
        let (q, k) = self.normed_heads(block, q, k)?;
        let outs = match self.attends_directly() {
            true => self.attend_directly((&q, &k, &v), layer, sequences)?,
            // Sequences attend in parallel: each writes and reads only its own buffer.
            false => sequences
                .par_iter()
                .map(|sequence| {
                    let rows = |t: &Tensor| t.narrow(0, sequence.start, sequence.len);
                    let (cos, sin) = sequence.rope.for_layer(self.config.architecture, layer);
                    let window = self.layer_window(layer);
                    let ctx = AttentionInput {
                        batch: 1,
                        seq_len: sequence.len,
                        cos,
                        sin,
                        mask: sequence.masks.for_window(window),
                        past: None,
                        store: Some((&sequence.buffers.own.layers[layer], sequence.offset - sequence.buffers.own.first)),
                        branches_on: None,
                    };
                    self.attend((rows(&q)?, rows(&k)?, rows(&v)?), &ctx)
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let attn = self.post_norm(project(&block.o, &Tensor::cat(&outs, 0)?)?, block.post_attn_norm.as_ref())?;
        let x = residual(x, &attn)?;
        let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, eps)?;
        let gated = self.gated(&project(&block.gate, &h)?, &project(&block.up, &h)?)?;
        let ffn = self.post_norm(project(&block.down, &gated)?, block.post_ffn_norm.as_ref())?;
        residual(&x, &ffn)
    }

    /// Whether a sequence's chunk attends through [`DirectAttention`] (on the CPU, any chunk
    /// length) rather than candle's matmuls. Measured on MASSIVE (4 examples, 1,500-token
    /// prompts): 45.0 s with candle's path for chunks of more than 64 query rows per kv head,
    /// 37.9 s with the direct path for every chunk (the shared header's prefill no longer builds
    /// `[heads, 1500, 1500]` score tensors, and each causal row reads only the keys it sees).
    fn attends_directly(&self) -> bool {
        self.device.is_cpu()
    }

    fn check_room(&self, offset: usize, seq_len: usize) -> Result<()> {
        match offset + seq_len > self.config.context_length {
            true => Err(InferError::ContextOverflow {
                needed: offset + seq_len,
                context_length: self.config.context_length,
            }),
            false => Ok(()),
        }
    }

    /// Embedding-to-logits pass over continuations `[B, S]` after the positions of `cache`,
    /// which is only read (the continuations' keys and values are dropped). Returns
    /// `[B, S, vocab]`.
    fn run_branches(&self, ids: &Tensor, cache: &KvCache) -> Result<Tensor> {
        on_pool_thread(|| self.run_branches_here(ids, cache))
    }

    fn run_branches_here(&self, ids: &Tensor, cache: &KvCache) -> Result<Tensor> {
        let (batch, seq_len) = ids.dims2()?;
        let offset = cache.len;
        self.check_room(offset, seq_len)?;
        if cache.num_layers != self.blocks.len() {
            return Err(InferError::InvalidInput(format!(
                "cache has {} layers, model has {}",
                cache.num_layers,
                self.blocks.len()
            )));
        }
        let rope = self.rope_tables(offset, seq_len)?;
        let direct = self.attends_directly();
        let masks = match direct {
            true => Masks::default(),
            false => self.masks(seq_len, offset)?,
        };
        let flat_ids = ids.flatten_all()?;
        let mut x = self.embed_rows(&flat_ids)?; // [B*S, hidden]
        for (layer, block) in self.blocks.iter().enumerate() {
            let (cos, sin) = rope.for_layer(self.config.architecture, layer);
            let window = self.layer_window(layer);
            let ctx = AttentionInput {
                batch,
                seq_len,
                cos,
                sin,
                mask: masks.for_window(window),
                past: match direct {
                    true => None,
                    false => cache.layer_view(layer)?,
                },
                store: None,
                branches_on: direct.then_some((cache, layer)),
            };
            x = self.block_forward(block, &x, &ctx)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.config.rms_norm_eps as f32)?;
        let logits = self.soft_cap(self.lm_head.matmul_t(&x)?, self.config.final_logit_softcap)?;
        Ok(logits.reshape((batch, seq_len, self.config.vocab_size))?)
    }

    fn block_forward(
        &self,
        block: &Block,
        x: &Tensor,
        ctx: &AttentionInput<'_>,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &block.attn_norm, eps)?;
        let attn = self.post_norm(self.attention(block, &h, ctx)?, block.post_attn_norm.as_ref())?;
        let x = residual(x, &attn)?;
        let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, eps)?;
        let gated = self.gated(&block.gate.forward(&h)?, &block.up.forward(&h)?)?;
        let ffn = self.post_norm(block.down.forward(&gated)?, block.post_ffn_norm.as_ref())?;
        residual(&x, &ffn)
    }

    fn attention(&self, block: &Block, h: &Tensor, ctx: &AttentionInput<'_>) -> Result<Tensor> {
        let (q, k) = self.normed_heads(block, block.q.forward(h)?, block.k.forward(h)?)?;
        let qkv = (q, k, block.v.forward(h)?);
        let out = match ctx.branches_on {
            Some((cache, layer)) => self.attend_branches_directly(qkv, ctx, cache, layer)?,
            None => self.attend(qkv, ctx)?,
        };
        block.o.forward(&out)
    }

    /// Continuations `[b · s]` rows on top of `cache` through [`DirectAttention`]: each one a
    /// sequence whose positions are the cache's buffers (read, never written) and then its own
    /// keys and values, all attended in one pass, so the tiles of every continuation read the
    /// cached prompt one after another.
    fn attend_branches_directly(&self, qkv: (Tensor, Tensor, Tensor), ctx: &AttentionInput<'_>, cache: &KvCache, layer: usize) -> Result<Tensor> {
        let (b, s) = (ctx.batch, ctx.seq_len);
        let (q, k, v) = self.roped_heads(qkv, (b, s), (ctx.cos, ctx.sin))?;
        let own: Vec<(Tensor, Tensor)> = (0..b)
            .map(|i| Ok((k.narrow(0, i, 1)?.contiguous()?, v.narrow(0, i, 1)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let sequences = own
            .iter()
            .enumerate()
            .map(|(i, (keys, values))| {
                let mut segments = cache.segments(layer);
                segments.push(KeySegment { keys, values, first: cache.len, end: cache.len + s });
                Ok(SequenceQueries { q: q.narrow(0, i, 1)?.contiguous()?, segments, offset: cache.len, s })
            })
            .collect::<Result<Vec<_>>>()?;
        let outs = self.attend_sequences_directly(&sequences, layer)?;
        self.merge_heads(Tensor::cat(&outs, 0)?, (b, s))
    }

    /// Each sequence's attended rows `[1, kv, group · s, d]` at `layer` by [`DirectAttention`].
    fn attend_sequences_directly(&self, sequences: &[SequenceQueries<'_>], layer: usize) -> Result<Vec<Tensor>> {
        let direct = DirectAttention {
            sequences,
            scale: self.attention_scale() as f32,
            window: self.layer_window(layer),
            softcap: self.config.attention_softcap.map(|cap| cap as f32),
        };
        direct.run()
    }

    /// The sliding window layer `layer` attends through, if any.
    fn layer_window(&self, layer: usize) -> Option<usize> {
        self.config.sliding_window.filter(|_| self.config.architecture.is_windowed_layer(layer))
    }

    /// Attention masks of a chunk of `len` positions after `offset` cached ones: causal, and
    /// causal within the sliding window when the model has one.
    fn masks(&self, len: usize, offset: usize) -> Result<Masks> {
        Ok(Masks {
            full: causal_mask(len, offset, None, &self.device)?,
            windowed: match self.config.sliding_window {
                Some(window) => causal_mask(len, offset, Some(window), &self.device)?,
                None => None,
            },
        })
    }

    /// Token embeddings of `ids` on the model's device (scaled by √hidden for Gemma 3, in f32
    /// like llama.cpp).
    fn embed_rows(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed.rows(ids)?.to_device(&self.device)?;
        Ok(match self.config.architecture {
            a if a.is_gemma() => (x * (self.config.hidden_size as f64).sqrt())?,
            _ => x,
        })
    }

    /// The feed-forward's `activation(gate) · up`: SiLU, or tanh-approximated GELU for Gemma 3.
    /// SiLU on the CPU takes the fused kernel of [`elementwise`], with candle's bits.
    fn gated(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        Ok(match self.config.architecture {
            a if a.is_gemma() => (gate.gelu()? * up)?,
            _ => match elementwise::silu_times_on_cpu(gate, up)? {
                Some(product) => product,
                None => (candle_nn::ops::silu(gate)? * up)?,
            },
        })
    }

    /// `t` through the RMSNorm `norm` when the block has it.
    fn post_norm(&self, t: Tensor, norm: Option<&Tensor>) -> Result<Tensor> {
        Ok(match norm {
            Some(weight) => candle_nn::ops::rms_norm(&t, weight, self.config.rms_norm_eps as f32)?,
            None => t,
        })
    }

    /// Projected queries and keys `[rows, heads · d]` with the block's per-head RMSNorms applied.
    fn normed_heads(&self, block: &Block, q: Tensor, k: Tensor) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let per_head = |t: Tensor, heads: usize, norm: Option<&Tensor>| -> Result<Tensor> {
            let Some(weight) = norm else { return Ok(t) };
            let rows = t.dim(0)?;
            let normed = candle_nn::ops::rms_norm(&t.reshape((rows, heads, c.head_dim))?, weight, c.rms_norm_eps as f32)?;
            Ok(normed.reshape((rows, heads * c.head_dim))?)
        };
        Ok((per_head(q, c.num_heads, block.q_norm.as_ref())?, per_head(k, c.num_kv_heads, block.k_norm.as_ref())?))
    }

    /// `cap · tanh(t / cap)` when there is a cap (Gemma 2's soft-capping), `t` otherwise.
    fn soft_cap(&self, t: Tensor, cap: Option<f64>) -> Result<Tensor> {
        Ok(match cap {
            Some(cap) => ((t / cap)?.tanh()? * cap)?,
            None => t,
        })
    }

    /// `1 / √d` for the attention scores; the 27B Gemmas scale by their hidden size per head
    /// instead (query_pre_attn_scalar), as llama.cpp does for them (Gemma 2: 46 layers, Gemma 3:
    /// 62).
    fn attention_scale(&self) -> f64 {
        let c = &self.config;
        match (c.architecture, c.num_layers) {
            (Architecture::Gemma2, 46) | (Architecture::Gemma3, 62) => 1.0 / ((c.hidden_size / c.num_heads) as f64).sqrt(),
            _ => 1.0 / (c.head_dim as f64).sqrt(),
        }
    }

    /// Attention of projected rows `(q, k, v)` `[b·s, heads·d]` under `ctx`; returns the
    /// attended rows `[b·s, heads·d]` before the output projection.
    /// Queries, keys and values `[b · s, heads · d]` as heads `[b, kv, group · s, d]` (query
    /// heads sharing a kv head folded into the rows) and `[b, kv, s, d]`, rope applied.
    fn roped_heads(&self, (q, k, v): (Tensor, Tensor, Tensor), (b, s): (usize, usize), (cos, sin): (&Tensor, &Tensor)) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let d = c.head_dim;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let roped = |t: Tensor, n: usize| -> Result<Tensor> {
            match crate::rope::roped_heads_on_cpu(&t, (b, s, n, d), cos, sin)? {
                Some(roped) => Ok(roped),
                None => Ok(candle_nn::rotary_emb::rope(&heads(t, n)?, cos, sin)?),
            }
        };
        let (q, k) = (roped(q, c.num_heads)?, roped(k, c.num_kv_heads)?);
        let group = c.num_heads / c.num_kv_heads;
        Ok((q.reshape((b, c.num_kv_heads, group * s, d))?, k, heads(v, c.num_kv_heads)?))
    }

    /// Attended rows `[b, kv, group · s, d]` back to `[b · s, heads · d]`.
    fn merge_heads(&self, out: Tensor, (b, s): (usize, usize)) -> Result<Tensor> {
        let c = &self.config;
        Ok(out.reshape((b, c.num_heads, s, c.head_dim))?.transpose(1, 2)?.reshape((b * s, c.num_heads * c.head_dim))?)
    }

    /// Every sequence's chunk through [`DirectAttention`] in one pass: each chunk's keys and
    /// values written into its own buffer, then all chunks' query rows attended together, so
    /// that the tiles of sequences reading one shared prefix run one after another.
    fn attend_directly(&self, (q, k, v): (&Tensor, &Tensor, &Tensor), layer: usize, sequences: &[SequenceChunk]) -> Result<Vec<Tensor>> {
        let queries = sequences
            .par_iter()
            .map(|sequence| {
                let rows = |t: &Tensor| t.narrow(0, sequence.start, sequence.len);
                let cos_sin = sequence.rope.for_layer(self.config.architecture, layer);
                let (q, k, v) = self.roped_heads((rows(q)?, rows(k)?, rows(v)?), (1, sequence.len), cos_sin)?;
                let own = &sequence.buffers.own;
                let (k_buffer, v_buffer) = &own.layers[layer];
                k_buffer.slice_set(&k, 2, sequence.offset - own.first)?;
                v_buffer.slice_set(&v, 2, sequence.offset - own.first)?;
                Ok(SequenceQueries {
                    q,
                    segments: sequence.buffers.segments(layer, sequence.offset + sequence.len),
                    offset: sequence.offset,
                    s: sequence.len,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.attend_sequences_directly(&queries, layer)?
            .into_iter()
            .zip(sequences)
            .map(|(out, sequence)| self.merge_heads(out, (1, sequence.len)))
            .collect()
    }

    fn attend(&self, (q, k, v): (Tensor, Tensor, Tensor), ctx: &AttentionInput<'_>) -> Result<Tensor> {
        let c = &self.config;
        let (b, s, d) = (ctx.batch, ctx.seq_len, c.head_dim);
        let (q, k, v) = self.roped_heads((q, k, v), (b, s), (ctx.cos, ctx.sin))?;
        let group = c.num_heads / c.num_kv_heads;
        let scale = self.attention_scale();
        let out = match (&ctx.store, &ctx.past) {
            // One sequence (candle's path): write the chunk into the buffer, attend to the
            // filled view.
            (Some(((k_buffer, v_buffer), index)), _) => {
                k_buffer.slice_set(&k, 2, *index)?;
                v_buffer.slice_set(&v, 2, *index)?;
                let total = index + s;
                let (k, v) = (k_buffer.narrow(2, 0, total)?, v_buffer.narrow(2, 0, total)?);
                let scores = self.soft_cap((q.matmul(&k.t()?)? * scale)?, c.attention_softcap)?;
                let probs = self.masked_softmax(scores, ctx, b, s, total)?;
                probs.matmul(&v)?
            }
            // Branches without a stored cache and no shared prefix.
            (None, None) => {
                let scores = self.soft_cap((q.matmul(&k.t()?)? * scale)?, c.attention_softcap)?;
                let probs = self.masked_softmax(scores, ctx, b, s, s)?;
                probs.matmul(&v)?
            }
            // Branches over a shared batch-1 prefix: all branches' query rows against the
            // prefix in one product, each branch against its own tokens, one softmax.
            (None, Some((k_past, v_past))) => {
                let past = k_past.dim(2)?;
                let rows = (1, c.num_kv_heads, b * group * s, d);
                let q_rows = q.transpose(0, 1)?.contiguous()?.reshape(rows)?;
                let scores_past = q_rows
                    .matmul(&k_past.t()?)?
                    .reshape((c.num_kv_heads, b, group * s, past))?
                    .transpose(0, 1)?;
                let scores_own = q.matmul(&k.t()?)?;
                let scores = self.soft_cap((Tensor::cat(&[scores_past, scores_own], 3)? * scale)?, c.attention_softcap)?;
                let probs = self.masked_softmax(scores, ctx, b, s, past + s)?;
                let probs_past = probs
                    .narrow(3, 0, past)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((1, c.num_kv_heads, b * group * s, past))?;
                let out_past = probs_past
                    .matmul(v_past)?
                    .reshape((c.num_kv_heads, b, group * s, d))?
                    .transpose(0, 1)?;
                let out_own = probs.narrow(3, past, s)?.contiguous()?.matmul(&v)?;
                (out_past + out_own)?
            }
        }; // [b, kv, group*s, d]
        self.merge_heads(out, (b, s))
    }

    /// Softmax over keys of scores `[b, kv, group*s, total]` after the causal mask, in that shape.
    fn masked_softmax(&self, scores: Tensor, ctx: &AttentionInput<'_>, b: usize, s: usize, total: usize) -> Result<Tensor> {
        let c = &self.config;
        let scores = scores.reshape((b, c.num_heads, s, total))?;
        let scores = match ctx.mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs.reshape((b, c.num_kv_heads, (c.num_heads / c.num_kv_heads) * s, total))?)
    }

    /// cos/sin of the rope angles for positions `offset..offset+len`, `[len, head_dim/2]`,
    /// computed in f64 and rounded once; also for local layers when they have their own base.
    fn rope_tables(&self, offset: usize, len: usize) -> Result<RopeTables> {
        Ok(RopeTables {
            global: self.rope_angles(&self.inv_freq, self.rope_magnitude, offset, len)?,
            local: self.local_inv_freq.as_ref().map(|f| self.rope_angles(f, 1.0, offset, len)).transpose()?,
        })
    }

    /// cos and sin `[len, d/2]` of positions `offset..offset + len`, times `magnitude` (YaRN).
    fn rope_angles(&self, inv_freq: &[f64], magnitude: f64, offset: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in offset..offset + len {
            for f in inv_freq {
                let angle = pos as f64 * f;
                cos.push((magnitude * angle.cos()) as f32);
                sin.push((magnitude * angle.sin()) as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), &self.device)?,
            Tensor::from_vec(sin, (len, half), &self.device)?,
        ))
    }

    /// All tensors under their Hugging Face names, quantized ones dequantized (for export).
    pub(crate) fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        if self.config.architecture.is_gemma() {
            return Err(InferError::InvalidInput(
                "export of gemma models is not supported (llama, qwen2 and qwen3 are)".into(),
            ));
        }
        let mut out = vec![
            (
                TensorNames::EMBED.to_string(),
                self.embed.to_dense(&self.device)?,
            ),
            (TensorNames::NORM.to_string(), self.norm.clone()),
        ];
        if !self.config.tie_word_embeddings {
            out.push((
                TensorNames::LM_HEAD.to_string(),
                self.lm_head.to_dense(&self.device)?,
            ));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let linears = [
                ("self_attn.q_proj", &b.q),
                ("self_attn.k_proj", &b.k),
                ("self_attn.v_proj", &b.v),
                ("self_attn.o_proj", &b.o),
                ("mlp.gate_proj", &b.gate),
                ("mlp.up_proj", &b.up),
                ("mlp.down_proj", &b.down),
            ];
            for (name, linear) in linears {
                out.push((
                    TensorNames::layer(i, &format!("{name}.weight")),
                    linear.weight.to_dense(&self.device)?,
                ));
                if let Some(bias) = &linear.bias {
                    out.push((TensorNames::layer(i, &format!("{name}.bias")), bias.clone()));
                }
            }
            out.push((
                TensorNames::layer(i, "input_layernorm.weight"),
                b.attn_norm.clone(),
            ));
            out.push((
                TensorNames::layer(i, "post_attention_layernorm.weight"),
                b.ffn_norm.clone(),
            ));
            for (name, norm) in [("self_attn.q_norm", &b.q_norm), ("self_attn.k_norm", &b.k_norm)] {
                if let Some(norm) = norm {
                    out.push((TensorNames::layer(i, &format!("{name}.weight")), norm.clone()));
                }
            }
        }
        Ok(out)
    }

    /// The rope inverse frequencies in use (after scaling), for checking an export.
    pub(crate) fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }
}

/// The residual sum `x + delta`: on the CPU by [`elementwise::sum_on_cpu`], elsewhere candle's.
fn residual(x: &Tensor, delta: &Tensor) -> Result<Tensor> {
    match elementwise::sum_on_cpu(x, delta)? {
        Some(sum) => Ok(sum),
        None => Ok((x + delta)?),
    }
}

/// Which positions of a chunk get logits.
#[derive(Debug, Clone, Copy)]
enum LogitRows {
    All,
    Last,
}

/// Rows each half of a split pass keeps ([`Model::run_sequences_in_parts`]): the AVX-512
/// kernels' tile of activation rows, so that every dequantized weight value meets a full tile.
const MIN_ROWS_PER_PART: usize = 8;

/// Padding rows above which [`Model::forward_batch`] runs each continuation length apart.
const PADDING_WORTH_SPLITTING: usize = 64;

/// One sequence's chunk in a multi-sequence pass: its rows, position and buffer.
struct SequenceChunk {
    /// First row of the chunk among all sequences' rows.
    start: usize,
    len: usize,
    /// Positions already cached before the chunk.
    offset: usize,
    rope: RopeTables,
    masks: Masks,
    /// The buffers the chunk's attention reads, the chunk's keys and values written into
    /// the own one.
    buffers: ChunkBuffers,
}

/// cos/sin rope tables of a chunk's positions: for the model's base, and for local layers'
/// base when they have one.
struct RopeTables {
    global: (Tensor, Tensor),
    local: Option<(Tensor, Tensor)>,
}

impl RopeTables {
    fn for_layer(&self, architecture: Architecture, layer: usize) -> (&Tensor, &Tensor) {
        match (&self.local, architecture.is_local_layer(layer)) {
            (Some((cos, sin)), true) => (cos, sin),
            _ => (&self.global.0, &self.global.1),
        }
    }
}

/// The masks of a chunk for candle's attention path (`None`: nothing hidden).
#[derive(Default)]
struct Masks {
    full: Option<Tensor>,
    windowed: Option<Tensor>,
}

impl Masks {
    fn for_window(&self, window: Option<usize>) -> Option<&Tensor> {
        match window {
            Some(_) => self.windowed.as_ref(),
            None => self.full.as_ref(),
        }
    }
}

struct AttentionInput<'a> {
    batch: usize,
    seq_len: usize,
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: Option<&'a Tensor>,
    /// The cached positions of this layer, `[1, kv, offset, d]` (candle's path).
    past: Option<(Tensor, Tensor)>,
    /// Where to write the chunk: this layer's buffer and the index in it.
    store: Option<(&'a (Tensor, Tensor), usize)>,
    /// Continuations attending directly to this cache's buffers at this layer (CPU).
    branches_on: Option<(&'a KvCache, usize)>,
}

fn check_shape(dims: &[usize], name: &str, expected: &[usize], source_name: &str) -> Result<()> {
    if dims != expected {
        return Err(InferError::invalid_model(
            source_name,
            name,
            format!("shape {expected:?}, found {dims:?}"),
        ));
    }
    Ok(())
}

/// Additive causal mask `[len, offset + len]` for a chunk that starts after `offset` cached
/// positions: query `i` may attend to keys `0..=offset + i`. `None` for a single token, which
/// may attend to everything.
pub(crate) fn causal_mask(len: usize, offset: usize, window: Option<usize>, device: &Device) -> Result<Option<Tensor>> {
    // Position p = offset + i sees keys j with j <= p and, with a window w, p - j < w.
    let hidden = |i: usize, j: usize| j > offset + i || window.is_some_and(|w| offset + i - j >= w);
    let total = offset + len;
    let first_seen = |i: usize| window.map_or(0, |w| (offset + i + 1).saturating_sub(w));
    if len == 1 && first_seen(0) == 0 {
        return Ok(None);
    }
    let values: Vec<f32> = (0..len)
        .flat_map(|i| (0..total).map(move |j| if hidden(i, j) { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(Tensor::from_vec(values, (len, total), device)?))
}

/// Rope inverse frequencies `theta^(-2i/d)`, with Llama 3 scaling or per-frequency divisors.
/// The error of a batched pass that returned no logits for `what` (a bug, not bad input).
fn missing_output(what: &str) -> InferError {
    InferError::InvalidInput(format!("internal error: the forward pass returned no logits for {what}"))
}

/// The inverse frequencies of a model's global (or only) rope and the multiplier of its cos
/// and sin: per-frequency `factors` (GGUF `rope_freqs.weight`) or Llama 3 scaling, then linear
/// or YaRN scaling.
pub(crate) fn global_rope(config: &ModelConfig, factors: Option<&[f64]>) -> std::result::Result<(Vec<f64>, f64), String> {
    let inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, factors)?;
    Ok(match (config.rope_linear_factor, config.rope_yarn) {
        (Some(factor), _) => (inv_freq.into_iter().map(|f| f / factor).collect(), 1.0),
        (None, Some(yarn)) => (yarn.scale(&inv_freq, config.head_dim, config.rope_theta), yarn.magnitude),
        (None, None) => (inv_freq, 1.0),
    })
}

pub(crate) fn rope_inverse_frequencies(
    head_dim: usize,
    theta: f64,
    scaling: Option<Llama3RopeScaling>,
    factors: Option<&[f64]>,
) -> std::result::Result<Vec<f64>, String> {
    let half = head_dim / 2;
    let base: Vec<f64> = (0..half)
        .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
        .collect();
    if let Some(factors) = factors {
        if factors.len() != half {
            return Err(format!(
                "{half} factors (head_dim / 2), found {}",
                factors.len()
            ));
        }
        return Ok(base.iter().zip(factors).map(|(f, k)| f / k).collect());
    }
    let Some(s) = scaling else {
        return Ok(base);
    };
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    Ok(base
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect())
}

/// Undo llama.cpp's rope permutation of a GGUF llama q/k weight `[heads * head_dim, in]`:
/// within each head, rows stored as interleaved pairs go back to two halves.
pub(crate) fn unpermute_rope_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let head_dim = rows / heads;
    Ok(w.reshape((heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cache` after a chunk of `extra` positions (nothing is computed: only the buffers).
    fn extended(cache: &KvCache, extra: usize, share_prefix: bool) -> KvCache {
        let buffers = cache.chunk_buffers(extra, (1, 4), 8192, share_prefix, &Device::Cpu).unwrap();
        KvCache { num_layers: cache.num_layers, shared: buffers.shared, buffer: Some(buffers.own), len: cache.len + extra }
    }

    #[test]
    fn examples_extending_one_prompt_header_read_its_single_copy() {
        let header = extended(&KvCache::new(2), 1500, true);
        let header_buffer = header.buffer.clone().unwrap();
        // The first extension appends in place; the others read the header's buffer as a
        // shared prefix and hold only their own positions.
        let first = extended(&header, 20, true);
        assert!(Arc::ptr_eq(first.buffer.as_ref().unwrap(), &header_buffer));
        for _ in 0..3 {
            let other = extended(&header, 20, true);
            let shared = other.shared.as_ref().unwrap();
            assert!(Arc::ptr_eq(&shared.buffer, &header_buffer));
            assert_eq!(shared.len, 1500);
            let own = other.buffer.as_ref().unwrap();
            assert_eq!((own.first, own.capacity), (1500, 20 + 10 + 64));
            // Its next steps append in place, behind the same shared prefix.
            let next = extended(&other, 1, true);
            assert!(Arc::ptr_eq(next.buffer.as_ref().unwrap(), own));
            assert!(Arc::ptr_eq(&next.shared.unwrap().buffer, &header_buffer));
        }
        // Cut back into the header: the shared prefix is cut, nothing is copied.
        let cut = extended(&extended(&header, 20, true).truncated(1400), 5, true);
        assert_eq!(cut.shared.as_ref().map(|shared| shared.len), Some(1400));
        assert_eq!(cut.buffer.as_ref().unwrap().first, 1400);
        // Without sharing (candle's path on a GPU), a new buffer copies every position.
        let copied = extended(&header, 20, false);
        assert!(copied.shared.is_none());
        assert_eq!(copied.buffer.as_ref().unwrap().first, 0);
    }

    #[test]
    fn row_groups_stay_under_the_gemm_size_and_keep_long_sequences_alone() {
        let limit = GEMM_MIN_ACTIVATION_ROWS;
        assert_eq!(row_groups([5, 6, 7]), vec![(0, 18)]);
        assert_eq!(row_groups([20, 20, 5]), vec![(0, 20), (20, 25)]);
        assert_eq!(row_groups([3, limit, 2]), vec![(0, 3), (3, limit), (3 + limit, 2)]);
        assert_eq!(row_groups([limit - 1, 1]), vec![(0, limit - 1), (limit - 1, 1)]);
        assert!(row_groups(std::iter::empty()).is_empty());
    }

    #[test]
    fn mask_blocks_future_positions_after_offset() {
        let mask = causal_mask(3, 2, None, &Device::Cpu).unwrap().unwrap();
        let rows: Vec<Vec<f32>> = mask.to_vec2().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            rows,
            vec![
                vec![0.0, 0.0, 0.0, inf, inf],
                vec![0.0, 0.0, 0.0, 0.0, inf],
                vec![0.0, 0.0, 0.0, 0.0, 0.0],
            ]
        );
        assert!(causal_mask(1, 7, None, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn windowed_mask_hides_positions_a_window_or_more_back() {
        let inf = f32::NEG_INFINITY;
        let rows: Vec<Vec<f32>> = causal_mask(2, 2, Some(2), &Device::Cpu).unwrap().unwrap().to_vec2().unwrap();
        assert_eq!(rows, vec![vec![inf, 0.0, 0.0, inf], vec![inf, inf, 0.0, 0.0]]);
        assert!(causal_mask(1, 1, Some(2), &Device::Cpu).unwrap().is_none());
        let one: Vec<Vec<f32>> = causal_mask(1, 3, Some(2), &Device::Cpu).unwrap().unwrap().to_vec2().unwrap();
        assert_eq!(one, vec![vec![inf, inf, 0.0, 0.0]]);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // One head of dim 4 on 1 input column: HF rows [a0 a1 | b0 b1] are stored by llama.cpp
        // as interleaved pairs [a0 b0 a1 b1].
        let gguf = Tensor::new(&[[10f32], [20.], [11.], [21.]], &Device::Cpu).unwrap();
        let hf = unpermute_rope_rows(&gguf, 1).unwrap();
        assert_eq!(
            hf.to_vec2::<f32>().unwrap(),
            vec![vec![10.], vec![11.], vec![20.], vec![21.]]
        );
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let base = rope_inverse_frequencies(64, 500_000.0, None, None).unwrap();
        let scaled = rope_inverse_frequencies(64, 500_000.0, Some(s), None).unwrap();
        assert_eq!(base[0], scaled[0]); // wavelength 2π < 2048: unchanged
        assert!((scaled[31] - base[31] / 8.0).abs() < 1e-18); // longest wavelength: divided
        let factors = vec![2.0; 32];
        let divided = rope_inverse_frequencies(64, 500_000.0, None, Some(&factors)).unwrap();
        assert_eq!(divided[5], base[5] / 2.0);
        assert!(rope_inverse_frequencies(64, 1e4, None, Some(&[1.0])).is_err());
    }
}
