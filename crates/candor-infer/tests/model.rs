//! Tests against the real default model (SmolLM2-135M-Instruct Q4_1 GGUF, fetched by
//! `scripts/fetch-default-model.sh`): tokenizer ids, chat template, greedy answer, cache and
//! batch equivalences, label log-probs against a naive token-by-token computation, constrained
//! generation, the dense export round trip, quantized weight storage against dense storage,
//! and error cases. A missing model file fails the tests (scripts/test.sh fetches it).

use std::path::PathBuf;
use std::sync::OnceLock;

use candor_infer::{ChatMessage, InferError, LanguageModel, LoadOptions, ModelSpec, WeightStorage};

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The loaded default model, shared by all tests of this file. A missing file fails the test
/// (scripts/test.sh fetches it): a model test never passes by skipping.
fn model() -> &'static LanguageModel {
    static MODEL: OnceLock<LanguageModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model_path();
        assert!(path.exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", path.display());
        LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).expect("load default model")
    })
}

/// The default model with its weights dequantized to f32 at load (auto storage keeps Q4_1 and
/// Q8_0 quantized).
fn dense_model() -> &'static LanguageModel {
    static MODEL: OnceLock<LanguageModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        model();
        load_with(LoadOptions { weights: Some(WeightStorage::Dense), ..LoadOptions::default() }).expect("load default model dense")
    })
}

#[test]
fn tokenizer_splits_digits_without_prefix_space() {
    let m = model();
    let tok = m.tokenizer();
    let ids = tok.encode("Hello world 12345").unwrap();
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(pieces, ["Hello", "Ġworld", "Ġ", "1", "2", "3", "4", "5"]);
    assert_eq!(tok.decode(&ids).unwrap(), "Hello world 12345");
}

#[test]
fn special_tokens_are_whole_tokens_and_round_trip() {
    let m = model();
    let tok = m.tokenizer();
    let text = "<|im_start|>user\nCafé ünïcödé — 3.14 ✓<|im_end|>\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").unwrap());
    assert_eq!(ids[0], 1);
    assert!(
        ids.contains(&2),
        "<|im_end|> (id 2) matched as one token: {ids:?}"
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eos_token_ids(), [2]);
    assert_eq!(tok.bos_token_id(), Some(1));
    // tokenizer.ggml.add_bos_token = false: prompts get no BOS.
    assert!(!tok.add_bos());
    assert_eq!(tok.encode_prompt(text).unwrap(), ids);
}

#[test]
fn smollm_template_adds_default_system_message() {
    let m = model();
    let prompt = m.chat_prompt("What is the capital of France?").unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let own_system = m
        .render_chat(
            &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
            false,
        )
        .unwrap();
    assert_eq!(
        own_system,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn greedy_answer_to_the_capital_of_france() {
    let m = model();
    let prefix = m
        .prefill_text(&m.chat_prompt("What is the capital of France?").unwrap())
        .unwrap();
    let generation = m.generate(&prefix, 24).unwrap();
    assert_eq!(generation.text, "The capital of France is Paris.");
    assert_eq!(generation.stop_reason, candor_infer::StopReason::Eos);
    assert_eq!(generation.token_log_probs.len(), generation.token_ids.len());
    assert!(generation
        .token_log_probs
        .iter()
        .all(|&lp| lp <= 0.0 && lp.is_finite()));
}

/// Tolerance between two f32 computations of the same quantity that group the arithmetic
/// differently (chunked vs one token at a time, batched vs alone): float32 rounding noise.
const REORDER_TOLERANCE: f64 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

#[test]
fn prefix_cache_gives_the_same_logits_as_a_full_run() {
    let m = model();
    let header = m
        .encode("<|im_start|>system\nClassify the sentiment of the review.<|im_end|>\n")
        .unwrap();
    let body = m
        .encode("<|im_start|>user\nA wonderful, moving film.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let all: Vec<u32> = header.iter().chain(&body).copied().collect();

    let mut full_cache = m.model().new_cache();
    let full: Vec<Vec<f32>> = m
        .model()
        .forward(&all, &mut full_cache)
        .unwrap()
        .to_vec2()
        .unwrap();

    let shared = m.prefill(&header).unwrap();
    let reused = m.extend(&shared.clone(), &body).unwrap();
    let mut cache = shared.cache().clone();
    let tail: Vec<Vec<f32>> = m
        .model()
        .forward(&body, &mut cache)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (i, row) in tail.iter().enumerate() {
        assert!(
            max_abs_diff(row, &full[header.len() + i]) < REORDER_TOLERANCE,
            "row {i}"
        );
    }
    let last: Vec<f32> = reused.next_logits().to_vec1().unwrap();
    assert!(max_abs_diff(&last, full.last().unwrap()) < REORDER_TOLERANCE);
    assert_eq!(reused.tokens(), all.as_slice());
    assert_eq!(
        shared.cache().len(),
        header.len(),
        "extending a clone leaves the original cache alone"
    );
}

/// log p(label | prompt) computed naively: every token of prompt + label fed one at a time
/// through `forward` with a fresh cache, log-softmax of each row by hand.
fn naive_label_log_probs(m: &LanguageModel, prompt: &[u32], label: &[u32]) -> (f64, f64) {
    let mut cache = m.model().new_cache();
    let sequence: Vec<u32> = prompt.iter().chain(label).copied().collect();
    let mut total = 0.0;
    let mut first = 0.0;
    for (i, &token) in sequence[..sequence.len() - 1].iter().enumerate() {
        let row: Vec<f32> = m
            .model()
            .forward(&[token], &mut cache)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        if i + 1 < prompt.len() {
            continue;
        }
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let log_z = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let lp = row[sequence[i + 1] as usize] as f64 - log_z;
        if i + 1 == prompt.len() {
            first = lp;
        }
        total += lp;
    }
    (total, first)
}

#[test]
fn label_scores_match_a_naive_token_by_token_computation() {
    let m = model();
    let prompt = m
        .encode(&m.chat_prompt("Is this review positive or negative? 'I loved every minute.' Answer with one word.").unwrap())
        .unwrap();
    let labels: Vec<String> = ["positive", "negative", "neutral and mixed"]
        .map(String::from)
        .to_vec();
    let scores = m
        .score_labels(&m.prefill(&prompt).unwrap(), &labels)
        .unwrap();
    assert!(
        scores.labels.iter().any(|s| s.token_ids.len() > 1),
        "a multi-token label is covered"
    );
    for score in &scores.labels {
        let (total, first) = naive_label_log_probs(m, &prompt, &score.token_ids);
        assert!(
            (score.log_prob - total).abs() < REORDER_TOLERANCE,
            "{}: {} vs {total}",
            score.label,
            score.log_prob
        );
        assert!(
            (score.first_token_log_prob - first).abs() < REORDER_TOLERANCE,
            "{}",
            score.label
        );
        assert_eq!(score.token_ids, m.encode(&score.label).unwrap());
    }
    // Outside mass from the first-token probabilities of the distinct first tokens.
    let mut firsts: Vec<(u32, f64)> = scores
        .labels
        .iter()
        .map(|s| (s.token_ids[0], s.first_token_log_prob))
        .collect();
    firsts.sort_by_key(|f| f.0);
    firsts.dedup_by_key(|f| f.0);
    let inside: f64 = firsts.iter().map(|f| f.1.exp()).sum();
    assert!((scores.first_token_mass_outside - (1.0 - inside)).abs() < 1e-12);
    assert!((0.0..=1.0).contains(&scores.first_token_mass_outside));
}

#[test]
fn batched_label_scoring_equals_each_label_alone() {
    let m = model();
    let prefix = m
        .prefill_text(&m.chat_prompt("Name a colour.").unwrap())
        .unwrap();
    let labels: Vec<String> = ["red", "dark blue", "light sea green", "Red"]
        .map(String::from)
        .to_vec();
    let together = m.score_labels(&prefix, &labels).unwrap();
    for (label, score) in labels.iter().zip(&together.labels) {
        let alone = m
            .score_labels(&prefix, std::slice::from_ref(label))
            .unwrap();
        assert!(
            (alone.labels[0].log_prob - score.log_prob).abs() < REORDER_TOLERANCE,
            "{label}"
        );
        assert_eq!(
            alone.labels[0].first_token_log_prob,
            score.first_token_log_prob
        );
    }
}

/// Varied classification prompts for constrained generation: (text, labels).
fn constrained_cases() -> Vec<(String, Vec<String>)> {
    let label_sets: [&[&str]; 5] = [
        &["positive", "negative"],
        &["joy", "anger"],
        &["yes", "no", "maybe"],
        &["sports", "politics & world", "science"],
        &["spam", "not \"spam\""],
    ];
    let texts = [
        "I loved this movie, the acting was superb.",
        "Worst purchase ever. Broke after a day.",
        "The weather is fine today.",
        "My dog died this morning and I can't stop crying.",
        "You won a FREE cruise!!! Click here now",
        "The team scored twice in the final minutes.",
        "Parliament passed the new budget after a long debate.",
        "Researchers found a new exoplanet with water vapour.",
        "I am so angry that they cancelled my flight again.",
        "Wow, I did not expect that ending at all!",
    ];
    let mut cases = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        for (j, labels) in label_sets.iter().enumerate() {
            let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
            let instruction = match (i + j) % 3 {
                0 => "Give the probability of each label as a JSON dict.",
                1 => "How likely is each label? Answer with a dict of probabilities.",
                _ => "Write your confidence for every label.",
            };
            cases.push((
                format!("{instruction} Labels: {}. Text: {text}", labels.join(", ")),
                labels,
            ));
        }
    }
    cases
}

#[test]
fn constrained_dicts_generated_together_equal_each_alone() {
    let m = model();
    let options = candor_infer::ConstrainedOptions { max_fraction_digits: 2, ..Default::default() };
    let cases = constrained_cases();
    // Ragged prompts (different lengths, so the dicts are at different positions at each step)
    // and two label sets of different sizes; eight dicts, so steps where all of them force a
    // dict piece have more rows than one product takes through the dot kernels (the rows are
    // then split into groups that each sequence alone would also meet).
    for labels in [&cases[0].1, &cases[3].1] {
        let mut texts = vec![cases[0].0.clone(), format!("{} Think it over carefully first.", cases[11].0), cases[27].0.clone()];
        texts.extend([2, 5, 8, 14, 20].map(|i| cases[i].0.clone()));
        let prefixes: Vec<_> =
            texts.iter().map(|t| m.prefill(&m.encode(&m.chat_prompt(t).unwrap()).unwrap()).unwrap()).collect();
        let lengths: Vec<usize> = prefixes.iter().map(|p| p.tokens().len()).collect();
        assert!(lengths[0] != lengths[1] && lengths[1] != lengths[2], "{lengths:?}");
        let first_piece = m.encode(&format!("{{{}: ", serde_json::to_string(&labels[0]).unwrap())).unwrap().len();
        assert!(texts.len() * first_piece >= 32, "the first step must exceed one product's rows");
        let refs: Vec<_> = prefixes.iter().collect();
        let together = m.generate_constrained_many(&refs, labels, &options).unwrap();
        assert_eq!(together.len(), prefixes.len());
        for (prefix, dict) in prefixes.iter().zip(&together) {
            let alone = m.generate_constrained(prefix, labels, &options).unwrap();
            assert_eq!(dict.text, alone.text);
            // The same tokens and the same numbers to the bit: under 32 rows a step's products
            // go through the dot kernels, which sum each row in the same order whatever rows
            // are batched with it (gemm did not: up to 1e-5 nats apart before).
            for (a, b) in dict.numbers.iter().zip(&alone.numbers) {
                assert_eq!((&a.label, &a.token_ids), (&b.label, &b.token_ids));
                assert_eq!(a.log_prob, b.log_prob);
                assert_eq!(a.masked_log_prob, b.masked_log_prob);
            }
        }
    }
}

#[test]
fn constrained_generation_always_writes_a_valid_dict() {
    let m = model();
    // One fractional digit keeps this 50-prompt test short; the grammar is unit-tested for more.
    let options = candor_infer::ConstrainedOptions {
        max_fraction_digits: 1,
        ..Default::default()
    };
    let cases = constrained_cases();
    assert_eq!(cases.len(), 50);
    // The chat header (default system message + user turn opening) is shared: prefill it once.
    let header = m.encode(&m.chat_prompt("").unwrap()).unwrap();
    let header = &header[..header.len()
        - m.encode("<|im_end|>\n<|im_start|>assistant\n")
            .unwrap()
            .len()];
    let shared = m.prefill(header).unwrap();
    for (prompt, labels) in cases {
        let ids = m.encode(&m.chat_prompt(&prompt).unwrap()).unwrap();
        assert_eq!(&ids[..header.len()], header);
        let prefix = m.extend(&shared, &ids[header.len()..]).unwrap();
        let out = m.generate_constrained(&prefix, &labels, &options).unwrap();
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{}: {e}", out.text));
        let keys: Vec<&String> = parsed.keys().collect();
        let mut expected: Vec<&String> = labels.iter().collect();
        expected.sort();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(keys_sorted, expected, "{}", out.text);
        assert_eq!(out.numbers.len(), labels.len());
        for (number, label) in out.numbers.iter().zip(&labels) {
            assert_eq!(&number.label, label);
            assert!((0.0..=1.0).contains(&number.value), "{}", out.text);
            assert_eq!(parsed[label].as_f64().unwrap(), number.value);
            let fraction = number.text.split('.').nth(1).unwrap_or("");
            assert!(fraction.len() <= 1, "{}", number.text);
            assert!(number.log_prob <= 0.0 && number.masked_log_prob <= 0.0);
            assert_eq!(
                m.tokenizer().decode(&number.token_ids).unwrap(),
                number.text
            );
        }
        // The text is exactly the skeleton with the numbers in label order.
        let rebuilt = format!(
            "{{{}}}",
            out.numbers
                .iter()
                .map(|n| format!("{}: {}", serde_json::to_string(&n.label).unwrap(), n.text))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(out.text, rebuilt);
    }
}

#[test]
fn constrained_number_log_prob_matches_a_naive_rescoring() {
    let m = model();
    let labels: Vec<String> = vec!["positive".into(), "negative".into()];
    let prompt = m
        .encode(
            &m.chat_prompt("Rate the sentiment of: 'Great food, rude staff.'")
                .unwrap(),
        )
        .unwrap();
    let out = m
        .generate_constrained(&m.prefill(&prompt).unwrap(), &labels, &Default::default())
        .unwrap();
    let first = &out.numbers[0];
    let skeleton = m.encode("{\"positive\": ").unwrap();
    let context: Vec<u32> = prompt.iter().chain(&skeleton).copied().collect();
    let (total, _) = naive_label_log_probs(m, &context, &first.token_ids);
    assert!(
        (first.log_prob - total).abs() < REORDER_TOLERANCE,
        "{} vs {total}",
        first.log_prob
    );
}

#[test]
fn dense_export_round_trips() {
    let m = dense_model();
    let dir = tempfile::tempdir().unwrap();
    candor_infer::export_dense(m, dir.path()).unwrap();
    let dense = LanguageModel::load(
        &ModelSpec::Directory(dir.path().to_path_buf()),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(dense.model().config(), m.model().config());
    let prompt = dense.chat_prompt("What is the capital of France?").unwrap();
    assert_eq!(
        prompt,
        m.chat_prompt("What is the capital of France?").unwrap()
    );
    let ids = dense.encode(&prompt).unwrap();
    assert_eq!(ids, m.encode(&prompt).unwrap());
    assert_eq!(
        dense.tokenizer().eos_token_ids(),
        m.tokenizer().eos_token_ids()
    );
    assert_eq!(dense.tokenizer().add_bos(), m.tokenizer().add_bos());
    let generation = dense.generate(&dense.prefill(&ids).unwrap(), 24).unwrap();
    assert_eq!(generation.text, "The capital of France is Paris.");
    // Same f32 weights, same arithmetic: identical up to float noise (stated: 1e-5).
    let labels: Vec<String> = vec!["Paris".into(), "Lyon".into(), "Marseille".into()];
    let a = m.score_labels(&m.prefill(&ids).unwrap(), &labels).unwrap();
    let b = dense
        .score_labels(&dense.prefill(&ids).unwrap(), &labels)
        .unwrap();
    for (x, y) in a.labels.iter().zip(&b.labels) {
        assert!((x.log_prob - y.log_prob).abs() < 1e-5, "{}", x.label);
    }
}

fn load_with(options: LoadOptions) -> Result<LanguageModel, InferError> {
    LanguageModel::load(&ModelSpec::Gguf(model_path()), &options)
}

#[test]
fn quantized_storage_matches_dense_storage() {
    let dense = dense_model();
    assert_eq!(dense.model().weight_storage(), WeightStorage::Dense);
    let quantized = load_with(LoadOptions {
        weights: Some(WeightStorage::Quantized),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(quantized.model().weight_storage(), WeightStorage::Quantized);
    let prompt = dense
        .encode(&dense.chat_prompt("What is the capital of France?").unwrap())
        .unwrap();
    // Every position of the prompt (many activation rows: dequantized slices through gemm),
    // then one decode step on the cache (one row: the row-by-row kernel).
    let logits = |m: &LanguageModel| -> (Vec<f32>, Vec<f32>) {
        let mut cache = m.model().new_cache();
        let all = m.model().forward(&prompt, &mut cache).unwrap();
        let step = m.model().forward_last(&[42], &mut cache).unwrap();
        (
            all.flatten_all().unwrap().to_vec1().unwrap(),
            step.to_vec1().unwrap(),
        )
    };
    let (dense_all, dense_step) = logits(dense);
    let (quantized_all, quantized_step) = logits(&quantized);
    let prefill_diff = max_abs_diff(&dense_all, &quantized_all);
    let decode_diff = max_abs_diff(&dense_step, &quantized_step);
    eprintln!(
        "quantized vs dense storage, max |logit diff|: {} prompt positions {prefill_diff:.2e}, decode step {decode_diff:.2e}",
        prompt.len()
    );
    assert!(
        prefill_diff < REORDER_TOLERANCE,
        "prompt logits: {prefill_diff:e}"
    );
    assert!(
        decode_diff < REORDER_TOLERANCE,
        "decode-step logits: {decode_diff:e}"
    );

    let labels: Vec<String> = ["Paris", "Lyon", "The capital is Marseille"]
        .map(String::from)
        .to_vec();
    let a = dense
        .score_labels(&dense.prefill(&prompt).unwrap(), &labels)
        .unwrap();
    let b = quantized
        .score_labels(&quantized.prefill(&prompt).unwrap(), &labels)
        .unwrap();
    for (x, y) in a.labels.iter().zip(&b.labels) {
        assert!(
            (x.log_prob - y.log_prob).abs() < REORDER_TOLERANCE,
            "{}",
            x.label
        );
        assert!(
            (x.first_token_log_prob - y.first_token_log_prob).abs() < REORDER_TOLERANCE,
            "{}",
            x.label
        );
    }
    let answer = quantized
        .generate(&quantized.prefill(&prompt).unwrap(), 24)
        .unwrap();
    assert_eq!(answer.text, "The capital of France is Paris.");
}

#[test]
fn auto_storage_is_quantized_for_native_formats_and_checked_against_the_budget() {
    model();
    // SmolLM2-135M: ~540 MB as f32, ~100 MB as Q4_1/Q8_0 blocks, formats with native kernels.
    let budget = |bytes: u64| LoadOptions {
        max_dense_bytes: Some(bytes),
        ..LoadOptions::default()
    };
    let roomy = load_with(budget(1 << 30)).unwrap();
    assert_eq!(roomy.model().weight_storage(), WeightStorage::Quantized);
    let fits_quantized = load_with(budget(200 << 20)).unwrap();
    assert_eq!(
        fits_quantized.model().weight_storage(),
        WeightStorage::Quantized
    );
    match load_with(budget(50 << 20)) {
        Err(InferError::ModelTooLarge {
            storage,
            needed_bytes,
            limit_bytes,
            ..
        }) => {
            assert_eq!(storage, WeightStorage::Quantized);
            assert!(needed_bytes > limit_bytes && needed_bytes < 200 << 20);
        }
        other => panic!("expected ModelTooLarge, got {other:?}"),
    }
    let forced_dense = load_with(LoadOptions {
        weights: Some(WeightStorage::Dense),
        ..budget(200 << 20)
    });
    assert!(matches!(
        forced_dense,
        Err(InferError::ModelTooLarge {
            storage: WeightStorage::Dense,
            ..
        })
    ));
}

#[test]
fn prompt_longer_than_the_context_is_a_typed_error() {
    let m = model();
    let context = m.model().config().context_length;
    let tokens = vec![m.encode("a").unwrap()[0]; context + 1];
    match m.prefill(&tokens) {
        Err(candor_infer::InferError::ContextOverflow {
            needed,
            context_length,
        }) => {
            assert_eq!((needed, context_length), (context + 1, context));
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
}

#[test]
fn missing_and_truncated_files_are_typed_errors() {
    let missing = LanguageModel::load(
        &ModelSpec::Gguf("/no/such/model.gguf".into()),
        &LoadOptions::default(),
    );
    assert!(
        matches!(missing, Err(candor_infer::InferError::Io { .. })),
        "{missing:?}"
    );
    let path = model_path();
    assert!(path.exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", path.display());
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [10, 4096, bytes.len() / 2] {
        let truncated = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let err = LanguageModel::load(&ModelSpec::Gguf(truncated.clone()), &LoadOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, candor_infer::InferError::InvalidGguf { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains(&truncated.display().to_string()));
    }
}

#[test]
fn unsupported_architecture_is_named() {
    use candle_core::quantized::gguf_file::{self, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("falcon.gguf");
    let mut file = std::fs::File::create(&path).unwrap();
    let arch = Value::String("falcon".into());
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).unwrap();
    drop(file);
    let err = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            candor_infer::InferError::UnsupportedArchitecture { .. }
        ),
        "{message}"
    );
    assert!(
        message.contains("falcon") && message.contains("llama") && message.contains("gemma3"),
        "{message}"
    );
}

#[test]
fn offline_hub_miss_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        offline: true,
        hub_cache_dir: Some(cache.path().to_path_buf()),
        ..LoadOptions::default()
    };
    let spec: ModelSpec = "hf:HuggingFaceTB/SmolLM2-135M-Instruct".parse().unwrap();
    let err = LanguageModel::load(&spec, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HuggingFaceTB/SmolLM2-135M-Instruct/config.json") && err.contains("offline"),
        "{err}"
    );
}

#[test]
fn prompt_log_probs_over_the_callers_chunks_equal_label_scoring_bit_for_bit() {
    // What `candor serve` computes for a served run's label prompts must be what the local run
    // computes: the same context chunks (shared head, then the example), the same label batch.
    let m = model();
    let head = m.encode("Classify the emotion of the text. Answer with one word.\nText:").unwrap();
    let rest = m.encode(" I finally got the job I wanted!\nLabel:").unwrap();
    let prefix = m.extend(&m.prefill(&head).unwrap(), &rest).unwrap();
    let labels: Vec<String> = [" joy", " deep sadness and regret", " anger", " a mild surprise"].iter().map(|s| s.to_string()).collect();
    let scores = m.score_labels(&prefix, &labels).unwrap();
    let prompts: Vec<Vec<u32>> = scores.labels.iter().map(|l| [prefix.tokens(), l.token_ids.as_slice()].concat()).collect();
    assert!(scores.labels.iter().any(|l| l.token_ids.len() > 2), "a multi-token label is covered");
    let all = m.prompt_log_probs(&prompts, 1, &[head.len(), rest.len()]).unwrap();
    for (score, log_probs) in scores.labels.iter().zip(&all) {
        let label_part: Vec<f64> = log_probs.tokens[prefix.tokens().len()..].iter().map(|t| t.log_prob.unwrap()).collect();
        assert_eq!(label_part[0].to_bits(), score.first_token_log_prob.to_bits(), "{}", score.label);
        assert_eq!(label_part.iter().sum::<f64>().to_bits(), score.log_prob.to_bits(), "{}", score.label);
    }
    let err = m.prompt_log_probs(&prompts, 1, &[head.len(), rest.len() + 50]).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
}
