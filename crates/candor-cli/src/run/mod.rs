//! `candor run`: a model's verbalized distribution and label log-probabilities for every example
//! of a dataset, written to a run directory as `manifest.json` (what determines the records) and
//! `predictions.jsonl` (one record per example, appended as it is computed), and `candor merge`,
//! which joins `--shard` directories into one run.
//!
//! Nothing is created before the dataset, the prompt templates and the model have all loaded and
//! been checked. Re-running the same command resumes after the last complete record; a directory
//! whose manifest differs is refused with the differing fields. The same command gives
//! byte-identical records on the same machine except for `elapsed_ms`.

mod evaluate;
pub mod manifest;
mod merge;
mod model_info;
pub mod predictions;
mod prompts;
mod shard;

pub use evaluate::label_continuations;
pub use merge::{run_merge, MergeArgs};

use anyhow::{bail, ensure, Context, Result};
use candor_calib::VerbalizedParser;
use candor_infer::{ConstrainedOptions, LanguageModel, WeightStorage};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::dataset::truncate::fit_to_budget;
use crate::dataset::{Dataset, DatasetArgs, Example};
use crate::model_args::{ModelArgs, WeightsArg, DEFAULT_MODEL};
use evaluate::{ChatPrompt, Evaluator, VerbalizedMode, VerbalizedSetup};
use manifest::{
    DatasetManifest, Manifest, ModelManifest, PromptManifest, PromptsManifest, Selection, Settings,
};
use predictions::{PredictionsWriter, Record, PREDICTIONS_FILE};
use prompts::{
    PromptTemplate, PromptValues, DEFAULT_LABEL_ANSWER_PREFIX, LABEL_PROMPT, VERBALIZED_PROMPT,
};
use shard::Shard;

/// Tokens kept free between an example text's budget and the prompt limit, for merges at the
/// text's boundaries that counting the text alone does not see.
const BOUNDARY_SLACK_TOKENS: usize = 4;

/// A signal `candor run` can collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Signal {
    /// The verbalized distribution (free or constrained generation).
    Verbalized,
    /// Label log-probabilities at the answer position of the label prompt.
    Logits,
}

impl Signal {
    /// Both signals, in canonical order.
    pub const ALL: [Signal; 2] = [Signal::Verbalized, Signal::Logits];

    /// The signal's name in manifests, records and calibration results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verbalized => "verbalized",
            Self::Logits => "logits",
        }
    }
}

/// Arguments of `candor run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model: a .gguf file, a directory with config.json + *.safetensors + tokenizer.json, or
    /// hf:owner/repo[:file.gguf].
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Device: cpu, cuda, cuda:N or metal (GPU devices need a build with that cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// GGUF weight storage: dense, quantized (dequantized per row, activations stay f32) or
    /// auto (dense when the f32 weights fit in available memory).
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto)]
    weights: WeightsArg,
    /// Use only the local Hugging Face cache for hf: models, never the network.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    pub(crate) dataset: DatasetArgs,
    /// The run directory (created; re-running the same command resumes it).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Signals to collect, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "verbalized,logits"
    )]
    signals: Vec<Signal>,
    /// How the verbalized distribution is produced.
    #[arg(long, value_enum, default_value_t = VerbalizedMode::Free)]
    verbalized: VerbalizedMode,
    /// Most tokens of free verbalized generation.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Most digits after the decimal point in constrained numbers.
    #[arg(long, default_value_t = 3)]
    max_fraction_digits: usize,
    /// Most prompt tokens; longer texts are truncated to fit [default: the context window minus
    /// the room the signals need after the prompt].
    #[arg(long, value_name = "N")]
    max_prompt_tokens: Option<usize>,
    /// Verbalized prompt template file (placeholders {text}, {labels}, {label_descriptions},
    /// {task}; {{ and }} for literal braces) [default: the built-in elicitation].
    #[arg(long, value_name = "FILE")]
    verbalized_prompt: Option<PathBuf>,
    /// Label prompt template file, same placeholders [default: the built-in label prompt].
    #[arg(long, value_name = "FILE")]
    label_prompt: Option<PathBuf>,
    /// Text the assistant's answer is made to start with before the labels are scored (each
    /// label gets a leading space after a prefix that ends in a non-space). Without it a small
    /// model puts most of its first-token mass on preambles; "" scores at the answer's start.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_LABEL_ANSWER_PREFIX)]
    label_answer_prefix: String,
    /// Run only shard I of N: the examples whose position (after --limit sampling) is I mod N.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    fn signals(&self) -> Vec<Signal> {
        let mut signals = self.signals.clone();
        signals.sort();
        signals.dedup();
        signals
    }

    fn wants(&self, signal: Signal) -> bool {
        self.signals.contains(&signal)
    }

    fn model_args(&self) -> ModelArgs {
        ModelArgs {
            model: self.model.clone(),
            device: self.device.clone(),
            threads: self.threads,
            weights: self.weights,
            offline: self.offline,
            chat: true,
        }
    }
}

/// An example ready to run: its position in the sampled dataset and its fitted text.
struct PreparedExample<'a> {
    position: usize,
    example: &'a Example,
    text: String,
    truncated: bool,
}

/// Run `candor run`.
pub fn run(args: &RunArgs) -> Result<()> {
    ensure!(
        !args.signals.is_empty(),
        "--signals needs at least one signal"
    );
    ensure!(
        !(args.wants(Signal::Verbalized)
            && args.verbalized == VerbalizedMode::Free
            && args.max_tokens == 0),
        "--max-tokens must be at least 1 for free verbalized generation"
    );
    let verbalized_template = args
        .wants(Signal::Verbalized)
        .then(|| {
            PromptTemplate::builtin_or_file(
                "verbalized",
                VERBALIZED_PROMPT,
                args.verbalized_prompt.as_deref(),
            )
        })
        .transpose()?;
    let label_template = args
        .wants(Signal::Logits)
        .then(|| {
            PromptTemplate::builtin_or_file("label", LABEL_PROMPT, args.label_prompt.as_deref())
        })
        .transpose()?;
    let dataset = args.dataset.load()?;
    let labels: Vec<String> = dataset.labels.iter().map(|l| l.name.clone()).collect();
    let parser = VerbalizedParser::new(&labels)?;
    let model = args.model_args().load()?;
    let values = PromptValues::for_dataset(&dataset);
    let chat_prompt = |template: PromptTemplate, answer_prefix: &str| {
        ChatPrompt::new(&model, template, values.clone(), answer_prefix)
    };
    let evaluator = Evaluator {
        model: &model,
        label_continuations: label_continuations(&labels, &args.label_answer_prefix),
        labels: labels.clone(),
        verbalized: verbalized_template
            .map(|template| -> Result<VerbalizedSetup> {
                Ok(VerbalizedSetup {
                    prompt: chat_prompt(template, "")?,
                    mode: args.verbalized,
                    max_tokens: args.max_tokens,
                    constrained: ConstrainedOptions {
                        max_fraction_digits: args.max_fraction_digits,
                    },
                    parser: parser.clone(),
                })
            })
            .transpose()?,
        label_prompt: label_template
            .map(|template| chat_prompt(template, &args.label_answer_prefix))
            .transpose()?,
    };
    let limits = PromptLimits::new(args, &evaluator)?;
    let prepared = prepare_examples(&dataset, args.shard, &model, limits.text_budget)?;
    let manifest = build_manifest(args, &dataset, &evaluator, &limits, &prepared, &parser)?;
    let mut writer = open_run_dir(&args.out, &manifest, &prepared)?;
    let done = writer.1;
    let progress = progress_bar(prepared.len(), done, args.quiet);
    for item in &prepared[done..] {
        let record = evaluate_example(&evaluator, &dataset, item, limits.max_prompt_tokens)?;
        writer.0.append(&record)?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    eprintln!(
        "{}: {} examples ({} new, {} truncated) in {}",
        args.out.display(),
        prepared.len(),
        prepared.len() - done,
        manifest.selection.truncated,
        args.out.join(PREDICTIONS_FILE).display()
    );
    Ok(())
}

/// The prompt-size limits of a run.
struct PromptLimits {
    max_prompt_tokens: usize,
    text_budget: usize,
}

impl PromptLimits {
    fn new(args: &RunArgs, evaluator: &Evaluator<'_>) -> Result<Self> {
        let model = evaluator.model;
        let context = model.model().config().context_length;
        let reserve = generation_reserve(args, evaluator)?;
        let room = context.checked_sub(reserve).filter(|&room| room > 0);
        let Some(room) = room else {
            bail!("the model's context window ({context} tokens) cannot hold the {reserve} tokens the signals need after the prompt");
        };
        let max_prompt_tokens = args.max_prompt_tokens.unwrap_or(room);
        ensure!(
            max_prompt_tokens <= room,
            "--max-prompt-tokens {max_prompt_tokens} leaves too little of the {context}-token context window: \
             the signals need {reserve} tokens after the prompt (at most {room})"
        );
        let prompts = [
            evaluator.verbalized.as_ref().map(|setup| &setup.prompt),
            evaluator.label_prompt.as_ref(),
        ];
        let mut overhead = 0;
        for prompt in prompts.into_iter().flatten() {
            overhead = overhead.max(prompt.token_count(model, "")?);
        }
        let text_budget = max_prompt_tokens
            .checked_sub(overhead + BOUNDARY_SLACK_TOKENS)
            .filter(|&budget| budget > 0)
            .with_context(|| {
                format!(
                    "a prompt limit of {max_prompt_tokens} tokens leaves no room for the example text \
                     (the templates take {overhead} tokens)"
                )
            })?;
        Ok(Self {
            max_prompt_tokens,
            text_budget,
        })
    }
}

/// Tokens the signals need after the prompt: the longest label, the free generation budget, or
/// the constrained dict with the widest numbers.
fn generation_reserve(args: &RunArgs, evaluator: &Evaluator<'_>) -> Result<usize> {
    let model = evaluator.model;
    let mut reserve = 0;
    if evaluator.label_prompt.is_some() {
        for continuation in &evaluator.label_continuations {
            reserve = reserve.max(model.encode(continuation)?.len());
        }
    }
    if let Some(setup) = &evaluator.verbalized {
        let generation = match setup.mode {
            VerbalizedMode::Free => setup.max_tokens,
            VerbalizedMode::Constrained => {
                let widest = format!("0.{}", "0".repeat(args.max_fraction_digits));
                let entries: Vec<String> = evaluator
                    .labels
                    .iter()
                    .map(|label| format!("{}: {widest}", serde_json::Value::from(label.as_str())))
                    .collect();
                model.encode(&format!("{{{}}}", entries.join(", ")))?.len()
            }
        };
        reserve = reserve.max(generation);
    }
    Ok(reserve)
}

/// The examples of this run (its shard), with texts fitted to `text_budget` tokens.
fn prepare_examples<'a>(
    dataset: &'a Dataset,
    shard: Option<Shard>,
    model: &LanguageModel,
    text_budget: usize,
) -> Result<Vec<PreparedExample<'a>>> {
    let count = |text: &str| model.encode(text).map_or(usize::MAX, |ids| ids.len());
    dataset
        .examples
        .iter()
        .enumerate()
        .filter(|(position, _)| shard.is_none_or(|shard| shard.holds(*position)))
        .map(|(position, example)| {
            model
                .encode(&example.text)
                .with_context(|| format!("tokenizing example '{}'", example.id))?;
            let fitted = fit_to_budget(&example.text, text_budget, count)
                .with_context(|| format!("fitting example '{}'", example.id))?;
            Ok(PreparedExample {
                position,
                example,
                truncated: fitted.truncated,
                text: fitted.text.into_owned(),
            })
        })
        .collect()
}

fn evaluate_example(
    evaluator: &Evaluator<'_>,
    dataset: &Dataset,
    item: &PreparedExample<'_>,
    max_prompt_tokens: usize,
) -> Result<Record> {
    let started = Instant::now();
    let context = || format!("example '{}'", item.example.id);
    let verbalized = evaluator.verbalized(&item.text).with_context(context)?;
    let logits = evaluator.logits(&item.text).with_context(context)?;
    let prompt_tokens = [
        verbalized.as_ref().map(|v| v.prompt_tokens),
        logits.as_ref().map(|l| l.prompt_tokens),
    ];
    if let Some(longest) = prompt_tokens.into_iter().flatten().max() {
        ensure!(
            longest <= max_prompt_tokens,
            "example '{}': its prompt has {longest} tokens, more than the limit of {max_prompt_tokens}",
            item.example.id
        );
    }
    Ok(Record {
        index: item.position,
        id: item.example.id.clone(),
        gold: dataset.labels[item.example.label].name.clone(),
        gold_index: item.example.label,
        truncated: item.truncated,
        verbalized,
        logits,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

fn build_manifest(
    args: &RunArgs,
    dataset: &Dataset,
    evaluator: &Evaluator<'_>,
    limits: &PromptLimits,
    prepared: &[PreparedExample<'_>],
    parser: &VerbalizedParser,
) -> Result<Manifest> {
    let model = evaluator.model;
    let config = model.model().config();
    let chat_template = model.chat_template().source().map(str::to_string);
    let data_file = dataset.origin.path();
    let prompt_manifest = |prompt: &ChatPrompt| PromptManifest {
        source: prompt.template().source.clone(),
        sha256: prompt.template().sha256(),
        text: prompt.template().text.clone(),
        shared_prefix_tokens: prompt.shared_prefix_tokens(),
        answer_prefix: prompt.answer_prefix().to_string(),
    };
    Ok(Manifest {
        candor_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        model: ModelManifest {
            spec: args.model.clone(),
            source: model.source().to_string(),
            architecture: config.architecture.name().to_string(),
            context_length: config.context_length,
            vocab_size: config.vocab_size,
            weights: model_info::inspect_weights(Path::new(model.source()))?,
            compute_dtype: match model.model().weight_storage() {
                WeightStorage::Dense => "f32".into(),
                WeightStorage::Quantized => "f32, quantized weights".into(),
            },
            device: args.device.clone(),
            chat_template_sha256: chat_template
                .as_deref()
                .map(|t| prompts::hex_sha256(t.as_bytes())),
            chat_template,
        },
        dataset: DatasetManifest {
            spec: args.dataset.spec.clone(),
            name: dataset.name.clone(),
            split: dataset.split.clone(),
            file: data_file.display().to_string(),
            file_sha256: model_info::file_sha256(data_file)?,
            rows_in_split: dataset.rows_in_split,
            limit: dataset.limit,
            seed: dataset.seed,
            examples: dataset.examples.len(),
            labels: evaluator.labels.clone(),
            label_descriptions: dataset
                .labels
                .iter()
                .map(|l| l.description.clone())
                .collect(),
            task: PromptValues::for_dataset(dataset).task,
        },
        prompts: PromptsManifest {
            verbalized: evaluator
                .verbalized
                .as_ref()
                .map(|setup| prompt_manifest(&setup.prompt)),
            label: evaluator.label_prompt.as_ref().map(prompt_manifest),
        },
        settings: Settings {
            signals: args
                .signals()
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            verbalized_mode: args
                .wants(Signal::Verbalized)
                .then(|| args.verbalized.name().to_string()),
            max_tokens: args.max_tokens,
            max_fraction_digits: args.max_fraction_digits,
            max_prompt_tokens: limits.max_prompt_tokens,
            text_token_budget: limits.text_budget,
            parse_tolerance: parser.tolerance(),
        },
        selection: Selection {
            shard: args.shard,
            examples: prepared.len(),
            truncated: prepared.iter().filter(|item| item.truncated).count(),
        },
    })
}

/// Creates the run directory with its manifest, or checks an existing one's manifest, and opens
/// its predictions for appending; returns the writer and the number of records already done.
fn open_run_dir(
    dir: &Path,
    manifest: &Manifest,
    prepared: &[PreparedExample<'_>],
) -> Result<(PredictionsWriter, usize)> {
    if dir.join(manifest::MANIFEST_FILE).is_file() {
        let existing = Manifest::read(dir)?;
        manifest::check_same_run(dir, &existing, manifest)?;
    } else {
        if dir.join(PREDICTIONS_FILE).exists() {
            bail!(
                "{} has a {PREDICTIONS_FILE} but no {}: refusing to add to records of unknown origin",
                dir.display(),
                manifest::MANIFEST_FILE
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        manifest.write(dir)?;
    }
    let expected: Vec<(usize, &str)> = prepared
        .iter()
        .map(|item| (item.position, item.example.id.as_str()))
        .collect();
    PredictionsWriter::open(dir, &expected)
}

/// A progress bar on stderr with rate and ETA; hidden with `--quiet` or when stderr is no terminal.
fn progress_bar(total: usize, done: usize, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} examples  {per_sec}  elapsed {elapsed}  ETA {eta}",
    )
    .expect("the progress template is valid");
    bar.set_style(style);
    bar.set_position(done as u64);
    bar.reset_eta();
    bar
}
