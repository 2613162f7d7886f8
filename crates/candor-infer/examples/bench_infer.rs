//! Throughput benchmark of candor-infer on a real model (issue 3), printed as one small table.
//!
//! In one run it measures prefill tokens/s (a ~200-token chat prompt), decode tokens/s (64
//! greedy steps, end-of-turn ignored, like `llama-bench -n 64`), label scoring and constrained
//! verbalized generation in examples/s on Emotion-like prompts with 6 labels, and the same
//! scoring and generation done naively for the ratio:
//!
//! * label scoring, candor: the shared instruction header is prefilled once, each example extends
//!   it and all labels are scored as one batch on top of its cache;
//!   naive: every label is run as a fresh forward of `prompt + label` (no prefix reuse, one label
//!   at a time); the bench checks both give the same log-probs;
//! * constrained verbalized, candor: `generate_constrained` after the reused header (forced dict
//!   pieces run as prefill chunks); naive: the full prompt from scratch, then the very same dict
//!   tokens replayed one decode step each.
//!
//! Then it compares weight storages: dense f32 weights vs weights kept quantized (dequantized
//! per row inside each product), prefill and decode tok/s and label scoring ex/s as above and
//! the peak resident memory
//! (`VmHWM`, load included), each measured in a child process of its own (this binary run with
//! `--storage-child dense|quantized`), alternating dense and quantized over [`STORAGE_ROUNDS`]
//! rounds; the best tok/s of each storage is reported with the quantized / dense ratios.
//!
//! Usage: `cargo run --release -p candor-infer --example bench_infer -- [MODEL.gguf] [--examples N]
//! [--storage-only]` (or `scripts/bench-infer.sh`); `--storage-only` skips the first table. Set
//! `RAYON_NUM_THREADS` to the core count and run nothing else.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candor_infer::{
    ChatMessage, ConstrainedGeneration, ConstrainedOptions, InferError, LabelScores, LanguageModel,
    LoadOptions, ModelSpec, Prefix, Result, WeightStorage,
};
use rayon::prelude::*;

const LABELS: [&str; 6] = ["anger", "fear", "joy", "love", "sadness", "surprise"];
const DECODE_STEPS: usize = 64;
const REPEATS: usize = 3;
/// Dense, quantized pairs of child processes in the storage comparison.
const STORAGE_ROUNDS: usize = 2;

const TEXTS: [&str; 12] = [
    "They charged me twice and then hung up on me when I called to complain.",
    "The elevator stopped between floors and the lights went out.",
    "My sister just told me she is having a baby and I am going to be an aunt!",
    "Holding your hand on the porch at sunset is all I ever want.",
    "I packed up his room today; his shoes are still by the door.",
    "The quiet new intern turned out to be the company's founder.",
    "Someone keyed my car in the parking lot and left a rude note.",
    "I heard a scratching noise inside the wall at three in the morning.",
    "Got the acceptance letter from my dream school this afternoon.",
    "After twenty years together he still leaves notes in my lunch box.",
    "Nobody came to my birthday dinner, so I ate alone.",
    "The magician pulled my lost wedding ring out of a sealed envelope.",
];

fn label_prompt(text: &str) -> String {
    format!(
        "Classify the emotion expressed in the text. Answer with exactly one word from: {}.\nText: {text}",
        LABELS.join(", ")
    )
}

fn verbalized_prompt(text: &str) -> String {
    format!(
        "Read the text and give the probability of each emotion ({}) as a Python dict, and nothing else.\nText: {text}",
        LABELS.join(", ")
    )
}

struct Args {
    model: PathBuf,
    examples: usize,
    /// Only the storage comparison, not the first table.
    storage_only: bool,
    /// Run as the child process measuring one storage.
    storage_child: Option<WeightStorage>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut model = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    let mut examples = 8;
    let mut storage_only = false;
    let mut storage_child = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--examples" => {
                let value = args.next().ok_or("--examples needs a number")?;
                examples = value
                    .parse()
                    .map_err(|_| format!("--examples expects a positive integer, got `{value}`"))?;
                if examples == 0 || examples > TEXTS.len() {
                    return Err(format!("--examples must be between 1 and {}", TEXTS.len()));
                }
            }
            "--storage-only" => storage_only = true,
            "--storage-child" => {
                let value = args
                    .next()
                    .ok_or("--storage-child needs dense or quantized")?;
                storage_child = Some(value.parse().map_err(|e: InferError| e.to_string())?);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            path => model = PathBuf::from(path),
        }
    }
    Ok(Args {
        model,
        examples,
        storage_only,
        storage_child,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds taken by `work`.
fn timed<T>(work: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = Instant::now();
    let value = work()?;
    Ok((value, start.elapsed().as_secs_f64()))
}

/// Token ids of the chat prompt for each text, and the longest token prefix they all share.
fn prompts(
    model: &LanguageModel,
    texts: &[&str],
    user: fn(&str) -> String,
) -> Result<(Vec<Vec<u32>>, usize)> {
    let ids = texts
        .iter()
        .map(|t| model.encode(&model.render_chat(&[ChatMessage::user(user(t))], true)?))
        .collect::<Result<Vec<_>>>()?;
    let shared = ids
        .iter()
        .map(|p| p.len())
        .min()
        .map(|shortest| {
            (0..shortest)
                .take_while(|&i| ids.iter().all(|p| p[i] == ids[0][i]))
                .count()
        })
        .unwrap_or(0);
    Ok((ids, shared))
}

/// A ~200-token prompt for the prefill figure.
fn long_prompt(model: &LanguageModel) -> Result<Vec<u32>> {
    let story = TEXTS.join(" ");
    let ids = model.encode(&model.chat_prompt(&format!(
        "Summarise these diary lines in one sentence: {story}"
    ))?)?;
    Ok(ids.into_iter().take(200).collect())
}

fn bench_prefill(model: &LanguageModel, ids: &[u32]) -> Result<f64> {
    let times = (0..REPEATS)
        .map(|_| timed(|| model.prefill(ids)).map(|(_, s)| s))
        .collect::<Result<Vec<_>>>()?;
    Ok(ids.len() as f64 / median(times))
}

/// The index of the largest value (the first of equals), keeping the best value in hand: the
/// fold that indexed `values[best]` at every step, bounds checks included, was 1.3% of a
/// 16-sequence decode step (perf), twice its share of a single-sequence one.
fn argmax(values: &[f64]) -> u32 {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &value) in values.iter().enumerate() {
        if value > best.1 {
            best = (i, value);
        }
    }
    best.0 as u32
}

fn bench_decode(model: &LanguageModel, prompt: &Prefix) -> Result<f64> {
    let times = (0..REPEATS).map(|_| single_decode_seconds(model, prompt)).collect::<Result<Vec<_>>>()?;
    Ok(DECODE_STEPS as f64 / median(times))
}

/// Seconds of [`DECODE_STEPS`] greedy steps of one sequence after `prompt`.
fn single_decode_seconds(model: &LanguageModel, prompt: &Prefix) -> Result<f64> {
    let ((), seconds) = timed(|| {
        let mut state = prompt.clone();
        for _ in 0..DECODE_STEPS {
            let next = argmax(&state.next_log_probs()?);
            state = model.extend(&state, &[next])?;
        }
        Ok(())
    })?;
    Ok(seconds)
}

/// Sequences decoded together in the batched decode figure.
const BATCHED_SEQUENCES: usize = 16;

/// Runs of each decode figure, one sequence and [`BATCHED_SEQUENCES`] alternating, so that the
/// machine's drift (10-30% within an hour on a shared virtual machine) moves both alike.
const DECODE_REPEATS: usize = 5;

/// Single-sequence and batched decode tokens/s, medians of [`DECODE_REPEATS`] alternating runs.
/// Single: greedy steps after the prompt. Batched: greedy steps of [`BATCHED_SEQUENCES`]
/// sequences at once (the prompt with a different last token each, so they diverge), one
/// batched forward per step, the sequences' next tokens chosen in parallel as constrained
/// generation chooses its dicts'.
fn bench_decodes(model: &LanguageModel, prompt: &[u32]) -> Result<(f64, f64)> {
    let single_start = model.prefill(prompt)?;
    let starts: Vec<Prefix> = (0..BATCHED_SEQUENCES as u32)
        .map(|i| model.prefill(&[&prompt[..prompt.len() - 1], &[prompt[prompt.len() - 1] + i]].concat()))
        .collect::<Result<_>>()?;
    let (mut single, mut batched) = (Vec::with_capacity(DECODE_REPEATS), Vec::with_capacity(DECODE_REPEATS));
    for _ in 0..DECODE_REPEATS {
        single.push(single_decode_seconds(model, &single_start)?);
        batched.push(batched_decode_seconds(model, &starts)?);
    }
    Ok((DECODE_STEPS as f64 / median(single), (BATCHED_SEQUENCES * DECODE_STEPS) as f64 / median(batched)))
}

/// Seconds of [`DECODE_STEPS`] batched greedy steps of the sequences after `starts`.
fn batched_decode_seconds(model: &LanguageModel, starts: &[Prefix]) -> Result<f64> {
    let ((), seconds) = timed(|| {
        let mut states = starts.to_vec();
        for _ in 0..DECODE_STEPS {
            let next: Vec<[u32; 1]> = states.par_iter().map(|s| Ok([argmax(&s.next_log_probs()?)])).collect::<Result<_>>()?;
            let refs: Vec<&Prefix> = states.iter().collect();
            let chunks: Vec<&[u32]> = next.iter().map(|n| n.as_slice()).collect();
            states = model.extend_many(&refs, &chunks)?;
        }
        Ok(())
    })?;
    Ok(seconds)
}

/// Label log-probs of one prompt, naively: a fresh forward of `prompt + label` per label.
fn naive_label_log_probs(
    model: &LanguageModel,
    prompt: &[u32],
    labels: &[String],
) -> Result<Vec<f64>> {
    labels
        .iter()
        .map(|label| {
            let label_ids = model.encode(label)?;
            let sequence: Vec<u32> = prompt.iter().chain(&label_ids).copied().collect();
            let mut cache = model.model().new_cache();
            let rows: Vec<Vec<f32>> = model.model().forward(&sequence, &mut cache)?.to_vec2()?;
            Ok(label_ids
                .iter()
                .enumerate()
                .map(|(k, &id)| log_prob_of(&rows[prompt.len() - 1 + k], id))
                .sum())
        })
        .collect()
}

fn log_prob_of(row: &[f32], id: u32) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let log_z = max
        + row
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln();
    f64::from(row[id as usize]) - log_z
}

/// Candor's label scoring: the shared header prefilled once, each prompt extends it and all
/// labels are scored as one batch.
fn score_with_prefix_reuse(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    shared: usize,
    labels: &[String],
) -> Result<Vec<LabelScores>> {
    let header = model.prefill(&prompts[0][..shared])?;
    prompts
        .iter()
        .map(|p| model.score_labels(&model.extend(&header, &p[shared..])?, labels))
        .collect()
}

struct Pair {
    candor: f64,
    naive: f64,
}

/// Label scoring examples/s with prefix reuse + batched labels vs naive; also the largest
/// log-prob difference between the two (they must agree).
fn bench_label_scoring(
    model: &LanguageModel,
    texts: &[&str],
    labels: &[String],
) -> Result<(Pair, f64)> {
    let (prompts, shared) = prompts(model, texts, label_prompt)?;
    let (fast, fast_s) = timed(|| score_with_prefix_reuse(model, &prompts, shared, labels))?;
    let (naive, naive_s) = timed(|| {
        prompts
            .iter()
            .map(|p| naive_label_log_probs(model, p, labels))
            .collect::<Result<Vec<_>>>()
    })?;
    let max_diff = fast
        .iter()
        .zip(&naive)
        .flat_map(|(f, n)| f.labels.iter().zip(n).map(|(a, b)| (a.log_prob - b).abs()))
        .fold(0.0, f64::max);
    let n = texts.len() as f64;
    Ok((
        Pair {
            candor: n / fast_s,
            naive: n / naive_s,
        },
        max_diff,
    ))
}

/// Mean tokens per constrained dict: all of them, and those generated (the numbers).
struct DictSize {
    tokens: usize,
    generated: usize,
}

/// The exact tokens candor fed for one dict: forced pieces interleaved with the generated numbers.
fn replay_ids(
    model: &LanguageModel,
    labels: &[String],
    dict: &ConstrainedGeneration,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for (i, (label, number)) in labels.iter().zip(&dict.numbers).enumerate() {
        let key =
            serde_json::to_string(label).map_err(|e| InferError::InvalidInput(e.to_string()))?;
        ids.extend(model.encode(&format!("{}{key}: ", if i == 0 { "{" } else { ", " }))?);
        ids.extend(&number.token_ids);
    }
    ids.extend(model.encode("}")?);
    Ok(ids)
}

/// Constrained verbalized examples/s with the reused header vs full prompt + one step per token.
fn bench_constrained(
    model: &LanguageModel,
    texts: &[&str],
    labels: &[String],
) -> Result<(Pair, DictSize)> {
    let (prompts, shared) = prompts(model, texts, verbalized_prompt)?;
    let options = ConstrainedOptions::default();
    let (dicts, fast_s) = timed(|| {
        let header = model.prefill(&prompts[0][..shared])?;
        prompts
            .iter()
            .map(|p| {
                model.generate_constrained(&model.extend(&header, &p[shared..])?, labels, &options)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let replays = dicts
        .iter()
        .map(|dict| replay_ids(model, labels, dict))
        .collect::<Result<Vec<_>>>()?;
    let ((), naive_s) = timed(|| {
        for (prompt, replay) in prompts.iter().zip(&replays) {
            let mut state = model.prefill(prompt)?;
            for &id in replay {
                state = model.extend(&state, &[id])?;
            }
        }
        Ok(())
    })?;
    let size = DictSize {
        tokens: replays.iter().map(Vec::len).sum::<usize>() / replays.len(),
        generated: dicts
            .iter()
            .flat_map(|d| &d.numbers)
            .map(|n| n.token_ids.len())
            .sum::<usize>()
            / dicts.len(),
    };
    let n = texts.len() as f64;
    Ok((
        Pair {
            candor: n / fast_s,
            naive: n / naive_s,
        },
        size,
    ))
}

fn run(args: &Args) -> Result<()> {
    let (model, load_s) = timed(|| {
        LanguageModel::load(
            &ModelSpec::Gguf(args.model.clone()),
            &LoadOptions::default(),
        )
    })?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!(
        "model {} (loaded in {load_s:.1} s), RAYON_NUM_THREADS={threads}, quantized kernels: {}",
        args.model.display(),
        candor_infer::quantized_kernel_build()
    );

    let texts = &TEXTS[..args.examples];
    let labels: Vec<String> = LABELS.iter().map(|l| l.to_string()).collect();
    let long = long_prompt(&model)?;
    let prefill = bench_prefill(&model, &long)?;
    let (decode, batched_decode) = bench_decodes(&model, &long)?;
    let (scoring, max_diff) = bench_label_scoring(&model, texts, &labels)?;
    let (constrained, dict) = bench_constrained(&model, texts, &labels)?;

    println!();
    println!("| workload | candor | naive | candor / naive |");
    println!("|---|---|---|---|");
    println!(
        "| prefill, {}-token prompt (median of {REPEATS}) | {prefill:.1} tok/s | | |",
        long.len()
    );
    println!(
        "| decode, {DECODE_STEPS} greedy steps (median of {DECODE_REPEATS}, alternating with the batched runs) | {decode:.1} tok/s | | |"
    );
    println!(
        "| batched decode, {BATCHED_SEQUENCES} sequences x {DECODE_STEPS} steps (median of {DECODE_REPEATS}) | {batched_decode:.1} tok/s | | {:.1}x single |",
        batched_decode / decode
    );
    println!(
        "| label scoring, {} labels, {} examples | {:.2} ex/s | {:.2} ex/s | {:.1}x |",
        labels.len(),
        texts.len(),
        scoring.candor,
        scoring.naive,
        scoring.candor / scoring.naive
    );
    println!(
        "| constrained verbalized, {} labels, {} examples (~{} dict tokens, {} generated) | {:.2} ex/s | {:.2} ex/s | {:.1}x |",
        labels.len(),
        texts.len(),
        dict.tokens,
        dict.generated,
        constrained.candor,
        constrained.naive,
        constrained.candor / constrained.naive
    );
    println!();
    println!("label log-probs, candor vs naive: max |diff| {max_diff:.1e} nats");
    Ok(())
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child process: load with `storage`, measure prefill, decode and label scoring, print
/// one line `storage=S prefill=P decode=D scoring=E peak_rss_kib=K` for the parent.
fn run_storage_child(args: &Args, storage: WeightStorage) -> Result<()> {
    let options = LoadOptions {
        weights: Some(storage),
        ..LoadOptions::default()
    };
    let model = LanguageModel::load(&ModelSpec::Gguf(args.model.clone()), &options)?;
    let long = long_prompt(&model)?;
    let prefill = bench_prefill(&model, &long)?;
    let decode = bench_decode(&model, &model.prefill(&long)?)?;
    let labels: Vec<String> = LABELS.iter().map(|l| l.to_string()).collect();
    let (prompts, shared) = prompts(&model, &TEXTS[..args.examples], label_prompt)?;
    let (_, scoring_s) = timed(|| score_with_prefix_reuse(&model, &prompts, shared, &labels))?;
    let scoring = prompts.len() as f64 / scoring_s;
    let peak = peak_rss_kib().ok_or_else(|| {
        InferError::InvalidInput("VmHWM not readable in /proc/self/status".into())
    })?;
    println!(
        "storage={} prefill={prefill} decode={decode} scoring={scoring} peak_rss_kib={peak}",
        model.model().weight_storage()
    );
    Ok(())
}

/// Figures of one storage from one child process.
struct StorageFigures {
    prefill: f64,
    decode: f64,
    scoring: f64,
    peak_rss_kib: u64,
}

fn measure_in_child(
    args: &Args,
    storage: WeightStorage,
) -> std::result::Result<StorageFigures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let output = Command::new(exe)
        .arg(&args.model)
        .args(["--storage-child", storage.as_str()])
        .args(["--examples", &args.examples.to_string()])
        .output()
        .map_err(|e| format!("starting the {storage} child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{storage} child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let field = |key: &str| -> std::result::Result<&str, String> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("{storage} child printed no {key}: {stdout}"))
    };
    if field("storage")? != storage.as_str() {
        return Err(format!("{storage} child used other storage: {stdout}"));
    }
    let number = |key: &str| -> std::result::Result<f64, String> {
        field(key)?
            .parse()
            .map_err(|_| format!("{storage} child: {key} is not a number: {stdout}"))
    };
    Ok(StorageFigures {
        prefill: number("prefill")?,
        decode: number("decode")?,
        scoring: number("scoring")?,
        peak_rss_kib: number("peak_rss_kib")? as u64,
    })
}

/// Dense vs quantized weights, alternating child processes; prints the second table.
fn compare_storages(args: &Args) -> std::result::Result<(), String> {
    let storages = [WeightStorage::Dense, WeightStorage::Quantized];
    let mut best: Vec<StorageFigures> = Vec::new();
    for round in 0..STORAGE_ROUNDS {
        for (i, storage) in storages.into_iter().enumerate() {
            let figures = measure_in_child(args, storage)?;
            eprintln!(
                "round {}: {storage}: prefill {:.1} tok/s, decode {:.1} tok/s, label scoring {:.2} ex/s, peak RSS {} MiB",
                round + 1,
                figures.prefill,
                figures.decode,
                figures.scoring,
                figures.peak_rss_kib / 1024
            );
            match best.get_mut(i) {
                None => best.push(figures),
                Some(b) => {
                    b.prefill = b.prefill.max(figures.prefill);
                    b.decode = b.decode.max(figures.decode);
                    b.scoring = b.scoring.max(figures.scoring);
                    b.peak_rss_kib = b.peak_rss_kib.max(figures.peak_rss_kib);
                }
            }
        }
    }
    let (dense, quantized) = (&best[0], &best[1]);
    println!();
    println!(
        "| weights (best of {STORAGE_ROUNDS} alternating child runs) | prefill tok/s | decode tok/s | label scoring ex/s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|");
    for (storage, f) in storages.iter().zip(&best) {
        println!(
            "| {storage} | {:.1} | {:.1} | {:.2} | {} |",
            f.prefill,
            f.decode,
            f.scoring,
            f.peak_rss_kib / 1024
        );
    }
    println!(
        "| quantized / dense | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
        quantized.prefill / dense.prefill,
        quantized.decode / dense.decode,
        quantized.scoring / dense.scoring,
        quantized.peak_rss_kib as f64 / dense.peak_rss_kib as f64
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "error: {message}\nusage: bench_infer [MODEL.gguf] [--examples N] [--storage-only]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    if !args.model.is_file() {
        eprintln!(
            "error: model {} not found: run scripts/fetch-default-model.sh",
            args.model.display()
        );
        return std::process::ExitCode::from(2);
    }
    let outcome = match (args.storage_child, args.storage_only) {
        (Some(storage), _) => run_storage_child(&args, storage).map_err(|e| e.to_string()),
        (None, true) => compare_storages(&args),
        (None, false) => run(&args)
            .map_err(|e| e.to_string())
            .and_then(|()| compare_storages(&args)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
