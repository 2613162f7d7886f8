//! The forward pass against an independent naive float64 implementation written here, on
//! tiny random models: safetensors directories for qwen2 (q/k/v biases, separate output head),
//! llama (tied embeddings), qwen3 (per-head q/k RMSNorm) and Mistral (sliding window), and each
//! rope scaling (linear, Llama 3 factors, YaRN, with the frequencies computed here from
//! transformers' definitions); GGUF files for Gemma 2 (soft caps, local layers), Gemma 3 (q/k
//! norms, local and global layers with their own rope bases) and Phi-3 (fused projections,
//! YaRN keys). All use grouped-query attention. This covers code paths the real models do
//! not, and checks chunked prefill with a cache and batched continuations against the same
//! reference.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candor_infer::{LanguageModel, LoadOptions, ModelSpec};

const HIDDEN: usize = 16;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const FFN: usize = 24;
const LAYERS: usize = 2;
const VOCAB: usize = 40;
const THETA: f64 = 10_000.0;
const EPS: f64 = 1e-6;

/// float32 forward vs float64 reference on values of order 1.
const TOLERANCE: f64 = 1e-4;

/// Deterministic pseudo-random weights in [-0.5, 0.5) (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|_| (0..cols).map(|_| self.next()).collect())
            .collect()
    }

    fn vector(&mut self, n: usize, centre: f64) -> Vec<f64> {
        (0..n).map(|_| centre + self.next()).collect()
    }
}

struct Layer {
    attn_norm: Vec<f64>,
    q: Vec<Vec<f64>>,
    k: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    q_bias: Option<Vec<f64>>,
    k_bias: Option<Vec<f64>>,
    v_bias: Option<Vec<f64>>,
    o: Vec<Vec<f64>>,
    ffn_norm: Vec<f64>,
    gate: Vec<Vec<f64>>,
    up: Vec<Vec<f64>>,
    down: Vec<Vec<f64>>,
    /// Qwen3's RMSNorm weights of each query and key head.
    q_norm: Option<Vec<f64>>,
    k_norm: Option<Vec<f64>>,
}

struct Weights {
    embed: Vec<Vec<f64>>,
    layers: Vec<Layer>,
    norm: Vec<f64>,
    lm_head: Option<Vec<Vec<f64>>>,
    /// Sliding attention window (Mistral), if any.
    window: Option<usize>,
    /// How the rope's frequencies are scaled.
    rope: RopeScaling,
}

/// The rope scalings of transformers' `rope_scaling`, each computed here from its definition
/// (transformers' `modeling_rope_utils`), independently of Candor's code.
#[derive(Clone, Copy)]
enum RopeScaling {
    None,
    /// Every frequency divided by the factor.
    Linear(f64),
    /// Llama 3.x: long wavelengths divided by the factor, short ones kept, a smooth mix between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original: f64 },
    /// YaRN with transformers' default attention factor.
    Yarn { factor: f64, original: f64, beta_fast: f64, beta_slow: f64 },
}

impl RopeScaling {
    /// The inverse frequency of each rotated pair and the multiplier of cos and sin.
    fn frequencies(self, theta: f64) -> (Vec<f64>, f64) {
        let base: Vec<f64> = (0..HEAD_DIM / 2).map(|i| theta.powf(-((2 * i) as f64) / HEAD_DIM as f64)).collect();
        let tau = 2.0 * std::f64::consts::PI;
        match self {
            RopeScaling::None => (base, 1.0),
            RopeScaling::Linear(factor) => (base.iter().map(|f| f / factor).collect(), 1.0),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original } => {
                let scaled = base.iter().map(|&f| {
                    let wavelength = tau / f;
                    if wavelength < original / high_freq_factor {
                        f
                    } else if wavelength > original / low_freq_factor {
                        f / factor
                    } else {
                        let smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                });
                (scaled.collect(), 1.0)
            }
            RopeScaling::Yarn { factor, original, beta_fast, beta_slow } => {
                let correction_dim = |rotations: f64| HEAD_DIM as f64 * (original / (rotations * tau)).ln() / (2.0 * theta.ln());
                let low = correction_dim(beta_fast).floor().max(0.0);
                let high = correction_dim(beta_slow).ceil().min(HEAD_DIM as f64 - 1.0);
                let scaled = base.iter().enumerate().map(|(i, &f)| {
                    let extrapolated = 1.0 - ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    f / factor * (1.0 - extrapolated) + f * extrapolated
                });
                (scaled.collect(), 0.1 * factor.ln() + 1.0)
            }
        }
    }

    /// The `rope_scaling` entry of config.json.
    fn config_json(self) -> serde_json::Value {
        match self {
            RopeScaling::None => serde_json::Value::Null,
            RopeScaling::Linear(factor) => serde_json::json!({ "type": "linear", "factor": factor }),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original } => serde_json::json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original as usize,
            }),
            RopeScaling::Yarn { factor, original, beta_fast, beta_slow } => serde_json::json!({
                "rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original as usize,
                "beta_fast": beta_fast, "beta_slow": beta_slow,
            }),
        }
    }
}

fn random_weights(seed: u64, biases: bool, tied: bool, qk_norm: bool) -> Weights {
    let mut r = Lcg(seed);
    let kv = KV_HEADS * HEAD_DIM;
    let layers = (0..LAYERS)
        .map(|_| Layer {
            attn_norm: r.vector(HIDDEN, 1.0),
            q: r.matrix(HEADS * HEAD_DIM, HIDDEN),
            k: r.matrix(kv, HIDDEN),
            v: r.matrix(kv, HIDDEN),
            q_bias: biases.then(|| r.vector(HEADS * HEAD_DIM, 0.0)),
            k_bias: biases.then(|| r.vector(kv, 0.0)),
            v_bias: biases.then(|| r.vector(kv, 0.0)),
            o: r.matrix(HIDDEN, HEADS * HEAD_DIM),
            ffn_norm: r.vector(HIDDEN, 1.0),
            gate: r.matrix(FFN, HIDDEN),
            up: r.matrix(FFN, HIDDEN),
            down: r.matrix(HIDDEN, FFN),
            q_norm: qk_norm.then(|| r.vector(HEAD_DIM, 1.0)),
            k_norm: qk_norm.then(|| r.vector(HEAD_DIM, 1.0)),
        })
        .collect();
    Weights {
        embed: r.matrix(VOCAB, HIDDEN),
        layers,
        norm: r.vector(HIDDEN, 1.0),
        lm_head: (!tied).then(|| r.matrix(VOCAB, HIDDEN)),
        window: None,
        rope: RopeScaling::None,
    }
}

fn tensor2(m: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = m.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_vec(flat, (m.len(), m[0].len()), &Device::Cpu).unwrap()
}

fn tensor1(v: &[f64]) -> Tensor {
    Tensor::from_vec(
        v.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        v.len(),
        &Device::Cpu,
    )
    .unwrap()
}

/// Write the model as config.json + model.safetensors + a word-level tokenizer.json.
/// `w` saved as a `model_type` checkpoint in a fresh directory (removed when the returned guard
/// drops) and loaded.
fn saved_model(w: &Weights, model_type: &str) -> (tempfile::TempDir, LanguageModel) {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), w, model_type);
    let model = LanguageModel::load(&ModelSpec::Directory(dir.path().to_path_buf()), &LoadOptions::default()).unwrap();
    (dir, model)
}

fn save(dir: &Path, w: &Weights, model_type: &str) {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), tensor2(&w.embed));
    t.insert("model.norm.weight".into(), tensor1(&w.norm));
    if let Some(head) = &w.lm_head {
        t.insert("lm_head.weight".into(), tensor2(head));
    }
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        t.insert(p("input_layernorm.weight"), tensor1(&l.attn_norm));
        t.insert(p("post_attention_layernorm.weight"), tensor1(&l.ffn_norm));
        for (name, norm) in [("self_attn.q_norm", &l.q_norm), ("self_attn.k_norm", &l.k_norm)] {
            if let Some(norm) = norm {
                t.insert(p(&format!("{name}.weight")), tensor1(norm));
            }
        }
        for (name, m) in [
            ("self_attn.q_proj", &l.q),
            ("self_attn.k_proj", &l.k),
            ("self_attn.v_proj", &l.v),
            ("self_attn.o_proj", &l.o),
            ("mlp.gate_proj", &l.gate),
            ("mlp.up_proj", &l.up),
            ("mlp.down_proj", &l.down),
        ] {
            t.insert(p(&format!("{name}.weight")), tensor2(m));
        }
        for (name, b) in [
            ("self_attn.q_proj", &l.q_bias),
            ("self_attn.k_proj", &l.k_bias),
            ("self_attn.v_proj", &l.v_bias),
        ] {
            if let Some(b) = b {
                t.insert(p(&format!("{name}.bias")), tensor1(b));
            }
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let mut config = serde_json::json!({
        "model_type": model_type, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB, "rope_theta": THETA, "rms_norm_eps": EPS,
        "max_position_embeddings": 256, "tie_word_embeddings": w.lm_head.is_none(),
        "sliding_window": w.window,
    });
    config["rope_scaling"] = w.rope.config_json();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let vocab = (0..VOCAB).map(|i| (format!("t{i}"), i as u32)).collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab)
        .unk_token("t0".into())
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::whitespace::WhitespaceSplit,
    ));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

fn matvec(m: &[Vec<f64>], x: &[f64], bias: Option<&Vec<f64>>) -> Vec<f64> {
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + bias.map_or(0.0, |b| b[i])
        })
        .collect()
}

fn rms_norm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let scale = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + EPS).sqrt();
    x.iter().zip(w).map(|(v, g)| v * scale * g).collect()
}

/// Half-rotation rope of one head vector at position `pos` with the given inverse frequencies,
/// cos and sin multiplied by `magnitude`.
fn rotate(head: &mut [f64], pos: f64, (inv_freq, magnitude): &(Vec<f64>, f64)) {
    let half = HEAD_DIM / 2;
    for (i, f) in inv_freq.iter().enumerate() {
        let (cos, sin) = (magnitude * (pos * f).cos(), magnitude * (pos * f).sin());
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// Logits of every position, computed token by token in float64.
fn naive_forward(w: &Weights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let group = HEADS / KV_HEADS;
    let mut keys: Vec<Vec<Vec<f64>>> = vec![Vec::new(); LAYERS];
    let mut values: Vec<Vec<Vec<f64>>> = vec![Vec::new(); LAYERS];
    let mut out = Vec::new();
    let frequencies = w.rope.frequencies(THETA);
    for (pos, &tok) in tokens.iter().enumerate() {
        let mut x = w.embed[tok as usize].clone();
        for (li, l) in w.layers.iter().enumerate() {
            let h = rms_norm(&x, &l.attn_norm);
            let mut q = matvec(&l.q, &h, l.q_bias.as_ref());
            let mut k = matvec(&l.k, &h, l.k_bias.as_ref());
            let v = matvec(&l.v, &h, l.v_bias.as_ref());
            if let (Some(q_norm), Some(k_norm)) = (&l.q_norm, &l.k_norm) {
                q = q.chunks(HEAD_DIM).flat_map(|head| rms_norm(head, q_norm)).collect();
                k = k.chunks(HEAD_DIM).flat_map(|head| rms_norm(head, k_norm)).collect();
            }
            q.chunks_mut(HEAD_DIM).for_each(|c| rotate(c, pos as f64, &frequencies));
            k.chunks_mut(HEAD_DIM).for_each(|c| rotate(c, pos as f64, &frequencies));
            keys[li].push(k);
            values[li].push(v);
            let mut attn = vec![0.0; HEADS * HEAD_DIM];
            for head in 0..HEADS {
                let kv = head / group;
                let qh = &q[head * HEAD_DIM..(head + 1) * HEAD_DIM];
                // With a window w, position `pos` sees itself and the w - 1 before it.
                let first = w.window.map_or(0, |window| (pos + 1).saturating_sub(window));
                let scores: Vec<f64> = keys[li][first..]
                    .iter()
                    .map(|k| {
                        qh.iter()
                            .zip(&k[kv * HEAD_DIM..])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (HEAD_DIM as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (p, v) in exps.iter().zip(&values[li][first..]) {
                    for d in 0..HEAD_DIM {
                        attn[head * HEAD_DIM + d] += p / sum * v[kv * HEAD_DIM + d];
                    }
                }
            }
            let o = matvec(&l.o, &attn, None);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rms_norm(&x, &l.ffn_norm);
            let gate = matvec(&l.gate, &h, None);
            let up = matvec(&l.up, &h, None);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&l.down, &act, None);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        let h = rms_norm(&x, &w.norm);
        out.push(matvec(w.lm_head.as_ref().unwrap_or(&w.embed), &h, None));
    }
    out
}

fn assert_close(actual: &Tensor, expected: &[Vec<f64>], what: &str) {
    let rows: Vec<Vec<f32>> = actual.to_vec2().unwrap();
    assert_eq!(rows.len(), expected.len(), "{what}");
    for (i, (a, e)) in rows.iter().zip(expected).enumerate() {
        for (j, (x, y)) in a.iter().zip(e).enumerate() {
            assert!(
                (*x as f64 - y).abs() < TOLERANCE,
                "{what} [{i}][{j}]: {x} vs {y}"
            );
        }
    }
}

fn check_model(model_type: &str, biases: bool, tied: bool, seed: u64) {
    let weights = random_weights(seed, biases, tied, model_type == "qwen3");
    check_weights(model_type, &weights, &[3u32, 1, 4, 1, 5, 9, 2, 6, 5, 35]);
}

/// The checks of [`check_model`] on given weights and tokens.
fn check_weights(model_type: &str, weights: &Weights, tokens: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), weights, model_type);
    let m = LanguageModel::load(
        &ModelSpec::Directory(dir.path().to_path_buf()),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(m.encode("t3 t1 t4").unwrap(), [3, 1, 4]);
    let expected = naive_forward(weights, tokens);

    let mut cache = m.model().new_cache();
    assert_close(
        &m.model().forward(tokens, &mut cache).unwrap(),
        &expected,
        "one chunk",
    );

    let mut cache = m.model().new_cache();
    let first = m.model().forward(&tokens[..4], &mut cache).unwrap();
    let second = m.model().forward(&tokens[4..], &mut cache).unwrap();
    assert_close(
        &Tensor::cat(&[first, second], 0).unwrap(),
        &expected,
        "two chunks",
    );

    let mut cache = m.model().new_cache();
    let last = m.model().forward_last(tokens, &mut cache).unwrap();
    assert_close(
        &last.unsqueeze(0).unwrap(),
        &expected[tokens.len() - 1..],
        "last position only",
    );
    assert_eq!(cache.len(), tokens.len());

    let prefix = m.prefill(&tokens[..3]).unwrap();
    let continuations = vec![tokens[3..].to_vec(), tokens[3..5].to_vec(), vec![tokens[3]]];
    let batch = m
        .model()
        .forward_batch(&continuations, prefix.cache())
        .unwrap();
    for (c, logits) in continuations.iter().zip(&batch) {
        assert_close(logits, &expected[3..3 + c.len()], "batched continuation");
    }
}

#[test]
fn qwen2_with_biases_and_output_head_matches_naive_forward() {
    check_model("qwen2", true, false, 7);
}

#[test]
fn llama_with_tied_embeddings_matches_naive_forward() {
    check_model("llama", false, true, 11);
}

#[test]
fn qwen3_with_per_head_qk_norms_matches_naive_forward() {
    check_model("qwen3", false, true, 13);
}

#[test]
fn llama_with_linear_rope_scaling_matches_naive_forward() {
    let mut weights = random_weights(37, false, true, false);
    weights.rope = RopeScaling::Linear(4.0);
    check_weights("llama", &weights, &token_sequence(24, 9));
}

#[test]
fn llama_with_llama3_rope_scaling_matches_naive_forward() {
    // Wavelengths 2π and 200π against an original context of 1024: the first pair is kept,
    // the second mixed (smooth = (1024 / 200π - 1) / 3 ≈ 0.21).
    let mut weights = random_weights(41, false, true, false);
    weights.rope = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original: 1024.0 };
    check_weights("llama", &weights, &token_sequence(24, 11));
}

/// YaRN over 4-dimensional heads: with beta_slow 0.001 the ramp runs over dims 0..3, so the
/// second pair mixes a third of its frequency divided by 4 with two thirds of its own, and
/// cos and sin are 1 + 0.1 ln 4 ≈ 1.139 times larger.
const TINY_YARN: RopeScaling = RopeScaling::Yarn { factor: 4.0, original: 256.0, beta_fast: 32.0, beta_slow: 0.001 };

#[test]
fn qwen2_with_yarn_rope_scaling_matches_naive_forward() {
    let mut weights = random_weights(43, true, false, false);
    weights.rope = TINY_YARN;
    check_weights("qwen2", &weights, &token_sequence(24, 13));
}

#[test]
fn mistral_with_a_sliding_window_shorter_than_the_prompt_matches_naive_forward() {
    // 40 tokens: one chunk goes through candle's masked attention (more query rows than the
    // direct path takes), the later chunks and steps through the direct path, the batched
    // continuations through the branch path: each must hide positions a window or more back.
    let mut weights = random_weights(17, false, true, false);
    weights.window = Some(5);
    check_weights("mistral", &weights, &token_sequence(40, 3));
}

/// A sequence of `len` token ids in 0..VOCAB.
fn token_sequence(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7 + seed * 13 + i * i) % VOCAB as u32).collect()
}

/// Logits `[vocab]` of the token after `prefix`, as f64 rows for comparison.
fn next_logits(prefix: &candor_infer::Prefix) -> Tensor {
    prefix.next_logits().unsqueeze(0).unwrap()
}

#[test]
fn branches_of_one_cache_never_see_each_others_tokens() {
    // Caught by design: in-place appends into a shared buffer must not leak one branch's
    // positions into another (copy on write for any cache not at the buffer's frontier).
    let weights = random_weights(5, true, false, false);
    let (_dir, m) = saved_model(&weights, "qwen2");
    let left = token_sequence(12, 1);
    let right: Vec<u32> = left[..5].iter().copied().chain(token_sequence(7, 2)).collect();
    let trunk = m.prefill(&left[..5]).unwrap();
    let left_branch = m.extend(&trunk, &left[5..]).unwrap(); // at the frontier: in place
    let right_branch = m.extend(&trunk, &right[5..]).unwrap(); // behind it: copies the trunk
    let expected_left = naive_forward(&weights, &left);
    let expected_right = naive_forward(&weights, &right);
    assert_close(&next_logits(&left_branch), &expected_left[left.len() - 1..], "left branch");
    assert_close(&next_logits(&right_branch), &expected_right[right.len() - 1..], "right branch");
    // The trunk still scores its own continuations, though its buffer holds the left branch.
    let batch = m.model().forward_batch(&[right[5..].to_vec(), left[5..8].to_vec()], trunk.cache()).unwrap();
    assert_close(&batch[0], &expected_right[5..], "batched right continuation");
    assert_close(&batch[1], &expected_left[5..8], "batched left continuation");
    // Extending the trunk again, and a branch again, still gives the naive logits.
    let again = m.extend(&trunk, &left[5..9]).unwrap();
    assert_close(&next_logits(&again), &expected_left[8..9], "trunk extended again");
    let longer = m.extend(&left_branch, &[3]).unwrap();
    let expected_longer = naive_forward(&weights, &[left.as_slice(), &[3]].concat());
    assert_close(&next_logits(&longer), &expected_longer[left.len()..], "branch extended again");
}

#[test]
fn one_token_appends_past_the_buffer_capacity_match_a_from_scratch_forward() {
    // The buffer starts at 1.5 × the prompt + 64 positions; 150 single-token steps must grow it
    // (copying the filled part) without changing any logits.
    let weights = random_weights(9, false, true, false);
    let (_dir, m) = saved_model(&weights, "llama");
    let tokens = token_sequence(150, 3);
    let expected = naive_forward(&weights, &tokens);
    let mut state = m.prefill(&tokens[..3]).unwrap();
    for (position, &token) in tokens.iter().enumerate().skip(3) {
        state = m.extend(&state, &[token]).unwrap();
        assert_close(&next_logits(&state), &expected[position..=position], &format!("step {position}"));
    }
    assert_eq!(state.cache().len(), tokens.len());
    let mut cache = m.model().new_cache();
    let whole = m.model().forward(&tokens, &mut cache).unwrap();
    assert_close(&whole, &expected, "one chunk of 150");
}

#[test]
fn ragged_sequences_in_one_pass_match_each_naive_forward() {
    let weights = random_weights(13, true, false, false);
    let (_dir, m) = saved_model(&weights, "qwen2");
    // Three sequences at different positions, fed chunks of 1, 4 and 2 tokens, twice.
    let sequences = [token_sequence(9, 4), token_sequence(20, 5), token_sequence(14, 6)];
    let prompt_lengths = [2, 11, 5];
    let chunk_lengths = [1, 4, 2];
    let mut states: Vec<_> = sequences.iter().zip(prompt_lengths).map(|(s, n)| m.prefill(&s[..n]).unwrap()).collect();
    let mut at = prompt_lengths;
    for round in 0..2 {
        let chunks: Vec<&[u32]> = (0..3).map(|i| &sequences[i][at[i]..at[i] + chunk_lengths[i]]).collect();
        let refs: Vec<_> = states.iter().collect();
        states = m.extend_many(&refs, &chunks).unwrap();
        for i in 0..3 {
            at[i] += chunk_lengths[i];
            let expected = naive_forward(&weights, &sequences[i][..at[i]]);
            assert_close(&next_logits(&states[i]), &expected[at[i] - 1..], &format!("round {round}, sequence {i}"));
            assert_eq!(states[i].tokens(), &sequences[i][..at[i]]);
        }
    }
}

#[test]
fn a_pass_split_into_halves_gives_every_sequence_its_lone_bits() {
    // 20 short chunks on a 4-thread pool: the pass runs as halves side by side (down to parts
    // of at least 8 rows). Sequences 0-5 extend one shared prompt, so the halves race to
    // claim its buffer; the others have prompts of their own, at ragged positions.
    let weights = random_weights(17, true, false, false);
    let (_dir, m) = saved_model(&weights, "qwen2");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    pool.install(|| {
        let shared = m.prefill(&token_sequence(7, 9)).unwrap();
        let starts: Vec<_> = (0..20u32)
            .map(|i| match i < 6 {
                true => shared.clone(),
                false => m.prefill(&token_sequence(3 + i as usize, 20 + i)).unwrap(),
            })
            .collect();
        let mut together = starts.clone();
        let mut alone = starts;
        for round in 0..3u32 {
            let chunks: Vec<Vec<u32>> = (0..20u32).map(|i| token_sequence(1 + (i % 3) as usize, 100 + 20 * round + i)).collect();
            let chunk_refs: Vec<&[u32]> = chunks.iter().map(|c| c.as_slice()).collect();
            let refs: Vec<_> = together.iter().collect();
            together = m.extend_many(&refs, &chunk_refs).unwrap();
            alone = alone.iter().zip(&chunks).map(|(state, chunk)| m.extend(state, chunk).unwrap()).collect();
            for (i, (a, b)) in together.iter().zip(&alone).enumerate() {
                let (a, b) = (a.next_logits().to_vec1::<f32>().unwrap(), b.next_logits().to_vec1::<f32>().unwrap());
                let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "round {round}, sequence {i}: {a:?} vs {b:?}");
            }
        }
        let expected = naive_forward(&weights, together[0].tokens());
        assert_close(&next_logits(&together[0]), &expected[expected.len() - 1..], "sequence 0 after three rounds");
    });
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &random_weights(3, false, true, false), "llama");
    let m = LanguageModel::load(
        &ModelSpec::Directory(dir.path().to_path_buf()),
        &LoadOptions::default(),
    )
    .unwrap();
    let err = m.prefill(&[1, VOCAB as u32]).unwrap_err().to_string();
    assert!(err.contains(&format!("token id {VOCAB}")), "{err}");
    let prefix = m.prefill(&[1, 2]).unwrap();
    let err = m
        .model()
        .forward_batch(&[vec![1], vec![99]], prefix.cache())
        .unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

/// Writes a GGUF file of `metadata` and f32 `tensors`, with a word-level vocabulary of
/// [`VOCAB`] tokens (`t0`, `t1`, ...; byte-level BPE without merges) added to the metadata.
fn write_gguf(path: &Path, metadata: &[(&str, candle_core::quantized::gguf_file::Value)], tensors: &[(String, candle_core::quantized::QTensor)]) {
    use candle_core::quantized::gguf_file::{self, Value};
    let tokens: Vec<Value> = (0..VOCAB).map(|i| Value::String(format!("t{i}"))).collect();
    let tokenizer = [
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.merges", Value::Array(Vec::new())),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().chain(&tokenizer).map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

/// A tiny random Gemma 2 or Gemma 3 written as a GGUF file (f32 tensors, llama.cpp's names
/// and keys).
struct TinyGemma {
    version: GemmaVersion,
    embed: Vec<Vec<f64>>,
    layers: Vec<GemmaLayer>,
    norm: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum GemmaVersion {
    /// Soft caps on attention scores and logits; the even layers local.
    Two,
    /// Per-head q/k RMSNorm; 5 of every 6 layers local with rope base 10000, the others global
    /// with the model's base.
    Three,
}

struct GemmaLayer {
    attn_norm: Vec<f64>,
    q: Vec<Vec<f64>>,
    k: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    o: Vec<Vec<f64>>,
    post_attn_norm: Vec<f64>,
    ffn_norm: Vec<f64>,
    gate: Vec<Vec<f64>>,
    up: Vec<Vec<f64>>,
    down: Vec<Vec<f64>>,
    post_ffn_norm: Vec<f64>,
    /// Gemma 3's RMSNorm weights of each query and key head.
    q_norm: Option<Vec<f64>>,
    k_norm: Option<Vec<f64>>,
}

const GEMMA2_WINDOW: usize = 5;
/// Gemma 3's global rope base (its local layers use 10000, [`THETA`]).
const GEMMA3_GLOBAL_THETA: f64 = 1_000_000.0;
/// Layers of the tiny Gemma 3: the sixth is its one global layer.
const GEMMA3_LAYERS: usize = 6;
const GEMMA2_ATTENTION_CAP: f64 = 0.7;
const GEMMA2_FINAL_CAP: f64 = 1.5;

impl TinyGemma {
    fn random(version: GemmaVersion, seed: u64) -> Self {
        let mut r = Lcg(seed);
        let kv = KV_HEADS * HEAD_DIM;
        let gemma3 = version == GemmaVersion::Three;
        let layers = (0..if gemma3 { GEMMA3_LAYERS } else { LAYERS })
            .map(|_| GemmaLayer {
                attn_norm: r.vector(HIDDEN, 1.0),
                q: r.matrix(HEADS * HEAD_DIM, HIDDEN),
                k: r.matrix(kv, HIDDEN),
                v: r.matrix(kv, HIDDEN),
                o: r.matrix(HIDDEN, HEADS * HEAD_DIM),
                post_attn_norm: r.vector(HIDDEN, 1.0),
                ffn_norm: r.vector(HIDDEN, 1.0),
                gate: r.matrix(FFN, HIDDEN),
                up: r.matrix(FFN, HIDDEN),
                down: r.matrix(HIDDEN, FFN),
                post_ffn_norm: r.vector(HIDDEN, 1.0),
                q_norm: gemma3.then(|| r.vector(HEAD_DIM, 1.0)),
                k_norm: gemma3.then(|| r.vector(HEAD_DIM, 1.0)),
            })
            .collect();
        Self { version, embed: r.matrix(VOCAB, HIDDEN), layers, norm: r.vector(HIDDEN, 1.0) }
    }

    fn architecture(&self) -> &'static str {
        match self.version {
            GemmaVersion::Two => "gemma2",
            GemmaVersion::Three => "gemma3",
        }
    }

    /// Whether layer `li` attends through the sliding window.
    fn is_local(&self, li: usize) -> bool {
        match self.version {
            GemmaVersion::Two => li.is_multiple_of(2),
            GemmaVersion::Three => !(li + 1).is_multiple_of(6),
        }
    }

    /// The rope base of layer `li`.
    fn theta(&self, li: usize) -> f64 {
        match self.version {
            GemmaVersion::Three if !self.is_local(li) => GEMMA3_GLOBAL_THETA,
            _ => THETA,
        }
    }

    fn save(&self, path: &Path) {
        use candle_core::quantized::gguf_file::Value;
        use candle_core::quantized::{GgmlDType, QTensor};
        let quantize = |t: Tensor| QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let mut tensors: Vec<(String, QTensor)> = vec![
            ("token_embd.weight".into(), quantize(tensor2(&self.embed))),
            ("output_norm.weight".into(), quantize(tensor1(&self.norm))),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            for (name, v) in [
                ("attn_norm", &l.attn_norm),
                ("post_attention_norm", &l.post_attn_norm),
                ("ffn_norm", &l.ffn_norm),
                ("post_ffw_norm", &l.post_ffn_norm),
            ] {
                tensors.push((format!("blk.{i}.{name}.weight"), quantize(tensor1(v))));
            }
            for (name, m) in [
                ("attn_q", &l.q),
                ("attn_k", &l.k),
                ("attn_v", &l.v),
                ("attn_output", &l.o),
                ("ffn_gate", &l.gate),
                ("ffn_up", &l.up),
                ("ffn_down", &l.down),
            ] {
                tensors.push((format!("blk.{i}.{name}.weight"), quantize(tensor2(m))));
            }
            for (name, norm) in [("attn_q_norm", &l.q_norm), ("attn_k_norm", &l.k_norm)] {
                if let Some(v) = norm {
                    tensors.push((format!("blk.{i}.{name}.weight"), quantize(tensor1(v))));
                }
            }
        }
        let arch = self.architecture();
        let key = |k: &str| format!("{arch}.{k}");
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (key("embedding_length"), Value::U32(HIDDEN as u32)),
            (key("feed_forward_length"), Value::U32(FFN as u32)),
            (key("block_count"), Value::U32(self.layers.len() as u32)),
            (key("attention.head_count"), Value::U32(HEADS as u32)),
            (key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
            (key("attention.key_length"), Value::U32(HEAD_DIM as u32)),
            (key("attention.layer_norm_rms_epsilon"), Value::F32(EPS as f32)),
            (key("context_length"), Value::U32(256)),
            (key("attention.sliding_window"), Value::U32(GEMMA2_WINDOW as u32)),
        ];
        metadata.extend(match self.version {
            GemmaVersion::Two => vec![
                (key("rope.freq_base"), Value::F32(THETA as f32)),
                (key("attn_logit_softcapping"), Value::F32(GEMMA2_ATTENTION_CAP as f32)),
                (key("final_logit_softcapping"), Value::F32(GEMMA2_FINAL_CAP as f32)),
            ],
            GemmaVersion::Three => vec![(key("rope.freq_base"), Value::F32(GEMMA3_GLOBAL_THETA as f32))],
        });
        let metadata: Vec<(&str, Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        write_gguf(path, &metadata, &tensors);
    }

    /// Logits of every position in float64, as llama.cpp's gemma2 and gemma3 graphs compute them.
    fn naive_forward(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let group = HEADS / KV_HEADS;
        let caps = self.version == GemmaVersion::Two;
        let cap = |x: f64, limit: f64| match caps {
            true => limit * (x / limit).tanh(),
            false => x,
        };
        let gelu = |x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        let mut keys: Vec<Vec<Vec<f64>>> = vec![Vec::new(); self.layers.len()];
        let mut values: Vec<Vec<Vec<f64>>> = vec![Vec::new(); self.layers.len()];
        let mut out = Vec::new();
        for (pos, &tok) in tokens.iter().enumerate() {
            let mut x: Vec<f64> = self.embed[tok as usize].iter().map(|v| v * (HIDDEN as f64).sqrt()).collect();
            for (li, l) in self.layers.iter().enumerate() {
                let h = rms_norm(&x, &l.attn_norm);
                let mut q = matvec(&l.q, &h, None);
                let mut k = matvec(&l.k, &h, None);
                let v = matvec(&l.v, &h, None);
                if let (Some(q_norm), Some(k_norm)) = (&l.q_norm, &l.k_norm) {
                    q = q.chunks(HEAD_DIM).flat_map(|head| rms_norm(head, q_norm)).collect();
                    k = k.chunks(HEAD_DIM).flat_map(|head| rms_norm(head, k_norm)).collect();
                }
                let frequencies = RopeScaling::None.frequencies(self.theta(li));
                q.chunks_mut(HEAD_DIM).for_each(|c| rotate(c, pos as f64, &frequencies));
                k.chunks_mut(HEAD_DIM).for_each(|c| rotate(c, pos as f64, &frequencies));
                keys[li].push(k);
                values[li].push(v);
                // A local layer's position sees itself and the window - 1 before it.
                let first = match self.is_local(li) {
                    true => (pos + 1).saturating_sub(GEMMA2_WINDOW),
                    false => 0,
                };
                let mut attn = vec![0.0; HEADS * HEAD_DIM];
                for head in 0..HEADS {
                    let kv = head / group;
                    let qh = &q[head * HEAD_DIM..(head + 1) * HEAD_DIM];
                    let scores: Vec<f64> = keys[li][first..]
                        .iter()
                        .map(|k| {
                            let dot: f64 = qh.iter().zip(&k[kv * HEAD_DIM..]).map(|(a, b)| a * b).sum();
                            cap(dot / (HEAD_DIM as f64).sqrt(), GEMMA2_ATTENTION_CAP)
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for (p, v) in exps.iter().zip(&values[li][first..]) {
                        for d in 0..HEAD_DIM {
                            attn[head * HEAD_DIM + d] += p / sum * v[kv * HEAD_DIM + d];
                        }
                    }
                }
                let o = rms_norm(&matvec(&l.o, &attn, None), &l.post_attn_norm);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h = rms_norm(&x, &l.ffn_norm);
                let gate = matvec(&l.gate, &h, None);
                let up = matvec(&l.up, &h, None);
                let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| gelu(*g) * u).collect();
                let down = rms_norm(&matvec(&l.down, &act, None), &l.post_ffn_norm);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
            let h = rms_norm(&x, &self.norm);
            out.push(matvec(&self.embed, &h, None).into_iter().map(|v| cap(v, GEMMA2_FINAL_CAP)).collect());
        }
        out
    }
}

#[test]
fn gemma2_gguf_with_soft_caps_and_a_local_window_matches_naive_forward() {
    // 40 tokens, a 5-position window on the even layers and caps that bite (random scores
    // and logits are of order 1): candle's masked path for the long chunk, the direct path for
    // later chunks, the branch path for batched continuations.
    check_gemma(&TinyGemma::random(GemmaVersion::Two, 23));
}

#[test]
fn gemma3_gguf_with_qk_norms_and_local_and_global_layers_matches_naive_forward() {
    // Six layers: five local (5-position window, rope base 10000), one global (base 10⁶, no
    // window), each with per-head q/k norms, over the same three attention paths as Gemma 2.
    check_gemma(&TinyGemma::random(GemmaVersion::Three, 53));
}

/// `model` saved as GGUF and loaded, against its naive forward: one chunk, two chunks, and
/// batched continuations of a shared prefix.
fn check_gemma(model: &TinyGemma) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", model.architecture()));
    model.save(&path);
    let m = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap();
    let tokens = token_sequence(40, 5);
    let expected = model.naive_forward(&tokens);
    let mut cache = m.model().new_cache();
    assert_close(&m.model().forward(&tokens, &mut cache).unwrap(), &expected, "one chunk");
    let mut cache = m.model().new_cache();
    let first = m.model().forward(&tokens[..30], &mut cache).unwrap();
    let second = m.model().forward(&tokens[30..], &mut cache).unwrap();
    assert_close(&Tensor::cat(&[first, second], 0).unwrap(), &expected, "two chunks");
    let prefix = m.prefill(&tokens[..20]).unwrap();
    let continuations = vec![tokens[20..].to_vec(), tokens[20..23].to_vec(), vec![tokens[20]]];
    let batch = m.model().forward_batch(&continuations, prefix.cache()).unwrap();
    for (c, logits) in continuations.iter().zip(&batch) {
        assert_close(logits, &expected[20..20 + c.len()], "batched continuation");
    }
}

/// `weights` (untied, no biases) written as a Phi-3 GGUF: q, k, v rows fused in `attn_qkv`,
/// gate and up rows in `ffn_up` (gate first), f32 tensors. `extra` tensors are added as they are.
fn save_phi3(path: &Path, w: &Weights, extra: &[(&str, Tensor)]) {
    save_phi3_with(path, w, extra, Vec::new())
}

/// [`save_phi3`] with `keys` added to the metadata.
fn save_phi3_with(path: &Path, w: &Weights, extra: &[(&str, Tensor)], keys: Vec<(&str, candle_core::quantized::gguf_file::Value)>) {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    let quantize = |t: Tensor| QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let stack = |parts: &[&Vec<Vec<f64>>]| -> Vec<Vec<f64>> { parts.iter().flat_map(|m| m.iter().cloned()).collect() };
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), quantize(tensor2(&w.embed))),
        ("output_norm.weight".into(), quantize(tensor1(&w.norm))),
        ("output.weight".into(), quantize(tensor2(w.lm_head.as_ref().unwrap()))),
    ];
    for (i, l) in w.layers.iter().enumerate() {
        tensors.push((format!("blk.{i}.attn_norm.weight"), quantize(tensor1(&l.attn_norm))));
        tensors.push((format!("blk.{i}.ffn_norm.weight"), quantize(tensor1(&l.ffn_norm))));
        tensors.push((format!("blk.{i}.attn_qkv.weight"), quantize(tensor2(&stack(&[&l.q, &l.k, &l.v])))));
        tensors.push((format!("blk.{i}.attn_output.weight"), quantize(tensor2(&l.o))));
        tensors.push((format!("blk.{i}.ffn_up.weight"), quantize(tensor2(&stack(&[&l.gate, &l.up])))));
        tensors.push((format!("blk.{i}.ffn_down.weight"), quantize(tensor2(&l.down))));
    }
    tensors.extend(extra.iter().map(|(name, t)| (name.to_string(), quantize(t.clone()))));
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("phi3".into())),
        ("phi3.embedding_length", Value::U32(HIDDEN as u32)),
        ("phi3.feed_forward_length", Value::U32(FFN as u32)),
        ("phi3.block_count", Value::U32(LAYERS as u32)),
        ("phi3.attention.head_count", Value::U32(HEADS as u32)),
        ("phi3.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("phi3.rope.dimension_count", Value::U32(HEAD_DIM as u32)),
        ("phi3.attention.layer_norm_rms_epsilon", Value::F32(EPS as f32)),
        ("phi3.context_length", Value::U32(256)),
        ("phi3.rope.freq_base", Value::F32(THETA as f32)),
    ];
    let metadata: Vec<(&str, Value)> = metadata.into_iter().chain(keys).collect();
    write_gguf(path, &metadata, &tensors);
}

#[test]
fn phi3_gguf_with_fused_qkv_and_gate_up_matches_naive_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi3.gguf");
    let weights = random_weights(29, false, false, false);
    save_phi3(&path, &weights, &[]);
    let m = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap();
    let tokens = token_sequence(40, 7);
    let expected = naive_forward(&weights, &tokens);
    let mut cache = m.model().new_cache();
    assert_close(&m.model().forward(&tokens, &mut cache).unwrap(), &expected, "one chunk");
    let mut cache = m.model().new_cache();
    let first = m.model().forward(&tokens[..30], &mut cache).unwrap();
    let second = m.model().forward(&tokens[30..], &mut cache).unwrap();
    assert_close(&Tensor::cat(&[first, second], 0).unwrap(), &expected, "two chunks");
}

#[test]
fn phi3_gguf_with_yarn_keys_matches_naive_forward() {
    use candle_core::quantized::gguf_file::Value;
    let RopeScaling::Yarn { factor, original, beta_fast, beta_slow } = TINY_YARN else { unreachable!() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi3-yarn.gguf");
    let mut weights = random_weights(47, false, false, false);
    weights.rope = TINY_YARN;
    let keys = vec![
        ("phi3.rope.scaling.type", Value::String("yarn".into())),
        ("phi3.rope.scaling.factor", Value::F32(factor as f32)),
        ("phi3.rope.scaling.original_context_length", Value::U32(original as u32)),
        ("phi3.rope.scaling.yarn_beta_fast", Value::F32(beta_fast as f32)),
        ("phi3.rope.scaling.yarn_beta_slow", Value::F32(beta_slow as f32)),
    ];
    save_phi3_with(&path, &weights, &[], keys);
    let m = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap();
    let tokens = token_sequence(40, 17);
    let expected = naive_forward(&weights, &tokens);
    let mut cache = m.model().new_cache();
    assert_close(&m.model().forward(&tokens, &mut cache).unwrap(), &expected, "one chunk");
    let prefix = m.prefill(&tokens[..20]).unwrap();
    let continuations = vec![tokens[20..].to_vec(), vec![tokens[20]]];
    let batch = m.model().forward_batch(&continuations, prefix.cache()).unwrap();
    for (c, logits) in continuations.iter().zip(&batch) {
        assert_close(logits, &expected[20..20 + c.len()], "batched continuation");
    }
}

#[test]
fn phi3_longrope_factors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi3-128k.gguf");
    let factors = Tensor::ones(HEAD_DIM / 2, candle_core::DType::F32, &Device::Cpu).unwrap();
    save_phi3(&path, &random_weights(31, false, false, false), &[("rope_factors_long.weight", factors)]);
    let err = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("rope_factors_long") && err.contains("LongRoPE"), "{err}");
}

#[test]
fn a_dict_piece_token_outside_the_models_vocabulary_is_an_error_not_a_panic() {
    // The tokenizer knows 43 words, the model has 40 rows: the dict's first piece and the
    // digits are inside, but `,` (the first token of the piece after a number, the number's
    // end token) is id 40. Choosing whether to end the number must refuse it by id instead of
    // indexing past the logits.
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &random_weights(59, false, true, false), "llama");
    let inside = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ".", "{\"", "a", "\":", "b"];
    let words = (0..VOCAB - inside.len()).map(|i| format!("t{i}")).chain(inside.iter().chain(&[",", "\"", "}"]).map(|w| w.to_string()));
    let vocab = words.enumerate().map(|(id, word)| (word, id as u32)).collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder().vocab(vocab).unk_token("t0".into()).build().unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
    tokenizer.save(dir.path().join("tokenizer.json"), false).unwrap();
    let m = LanguageModel::load(&ModelSpec::Directory(dir.path().to_path_buf()), &LoadOptions::default()).unwrap();
    let prefix = m.prefill(&[3, 1, 4]).unwrap();
    let options = candor_infer::ConstrainedOptions { max_fraction_digits: 2, ..Default::default() };
    let err = m.generate_constrained(&prefix, &["a".to_string(), "b".to_string()], &options).unwrap_err().to_string();
    assert!(err.contains("token id 40") && err.contains("outside the model's vocabulary of 40"), "{err}");
}
