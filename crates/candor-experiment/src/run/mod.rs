//! The run engine: a model's verbalized distribution and label log-probabilities for every
//! example of a dataset, written to a run directory as `manifest.json` (what determines the
//! records) and `predictions.jsonl` (one record per example, appended as it is computed), and
//! [`merge`], which joins `--shard` directories into one run.
//!
//! A run is planned first ([`RunPlan::new`]: prompt templates and the dataset loaded and
//! checked), then executed on any [`ModelBackend`] ([`RunPlan::execute`]); nothing is created
//! before both have succeeded. Re-running the same plan resumes after the last complete record;
//! a directory whose manifest differs is refused with the differing fields. The same plan gives
//! byte-identical records on the same machine except for `elapsed_ms`.

pub mod elicitation;
mod evaluate;
pub mod manifest;
mod merge;
pub mod predictions;
pub mod prompts;
mod shard;

pub use elicitation::Elicitation;
pub use evaluate::{label_continuations, PromptFormat, VerbalizedMode};
pub use merge::merge;
pub use shard::Shard;

use crate::error::{bail, ensure, Context, Result};
use candor_backend::{ConstrainedOptions, ModelBackend, NumberScale};
use candor_calib::verbalized::ValueScale;
use candor_calib::VerbalizedParser;
use candor_data::truncate::fit_to_budget;
use candor_data::{Dataset, DatasetRequest, Example};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use elicitation::{draw_demonstrations, kshot_template, PermutedLabels, SampleSettings};
use evaluate::{ChatPrompt, Evaluator, VerbalizedSetup};
use manifest::{
    DatasetManifest, ElicitationSettings, KshotSettings, Manifest, PromptManifest, PromptsManifest, SampledSettings,
    Selection, Settings,
};
use predictions::{PredictionsWriter, Record, PREDICTIONS_FILE};
use prompts::{
    PromptTemplate, PromptValues, DEFAULT_LABEL_ANSWER_PREFIX, LABEL_PROMPT, VERBALIZED_PERCENT_PROMPT, VERBALIZED_PROMPT,
    VERBALIZED_TOP1_PROMPT,
};

/// Tokens kept free between an example text's budget and the prompt limit, for merges at the
/// text's boundaries that counting the text alone does not see.
const BOUNDARY_SLACK_TOKENS: usize = 4;

/// A signal `candor run` can collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

/// Everything that determines a run besides the model: the library form of `candor run`'s
/// options (their flags are named in the field docs).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// The dataset and its sample.
    pub dataset: DatasetRequest,
    /// The run directory (created; running the same settings again resumes it; `--out`).
    pub out: PathBuf,
    /// Signals to collect (`--signals`).
    pub signals: Vec<Signal>,
    /// How the verbalized distribution is produced (`--verbalized`).
    pub verbalized: VerbalizedMode,
    /// How the verbalized distribution is asked for, each variant its own signal
    /// (`--elicitation`).
    pub elicitation: Vec<Elicitation>,
    /// Demonstrations of the `kshot` variant (`--kshot`).
    pub kshot: usize,
    /// The split of the same dataset the `kshot` demonstrations are drawn from, with the
    /// dataset's `--seed` (`--kshot-split`; required with that variant).
    pub kshot_split: Option<String>,
    /// Answers sampled per example by the `sampled` variant (`--samples`).
    pub samples: usize,
    /// Their temperature (`--sample-temperature`); their seed is the dataset's `--seed`.
    pub sample_temperature: f64,
    /// Most tokens of free verbalized generation (`--max-tokens`).
    pub max_tokens: usize,
    /// Most digits after the decimal point in constrained numbers (`--max-fraction-digits`).
    pub max_fraction_digits: usize,
    /// Most prompt tokens; longer texts are truncated to fit (`None`: the context window minus
    /// the room the signals need after the prompt; `--max-prompt-tokens`).
    pub max_prompt_tokens: Option<usize>,
    /// Verbalized prompt template file (`None`: the built-in elicitation; `--verbalized-prompt`).
    pub verbalized_prompt: Option<PathBuf>,
    /// Label prompt template file (`None`: the built-in label prompt; `--label-prompt`).
    pub label_prompt: Option<PathBuf>,
    /// Text the assistant's answer is made to start with before the labels are scored
    /// (`--label-answer-prefix`).
    pub label_answer_prefix: String,
    /// Only the examples whose position (after sampling) is I mod N (`--shard I/N`).
    pub shard: Option<Shard>,
    /// Examples in flight at once (their constrained dicts advance together); `None`: what the
    /// backend suggests for the prompt size. The records do not depend on it (`--batch`).
    pub batch: Option<usize>,
    /// Templates sent raw or as a chat turn (`None`: chat when the model has a chat
    /// template; `--prompt-format`).
    pub prompt_format: Option<PromptFormat>,
}

impl RunSettings {
    /// The defaults of `candor run` for `dataset` into `out`: both signals, the whole
    /// distribution asked for and generated constrained with at most 3 fraction digits (free
    /// generation: at most 128 tokens), built-in prompts, `Label:` prefix.
    pub fn new(dataset: DatasetRequest, out: PathBuf) -> Self {
        Self {
            dataset,
            out,
            signals: Signal::ALL.to_vec(),
            verbalized: VerbalizedMode::Constrained,
            elicitation: vec![Elicitation::Distribution],
            kshot: 3,
            kshot_split: None,
            samples: 5,
            sample_temperature: 0.7,
            max_tokens: 128,
            max_fraction_digits: 3,
            max_prompt_tokens: None,
            verbalized_prompt: None,
            label_prompt: None,
            label_answer_prefix: DEFAULT_LABEL_ANSWER_PREFIX.to_string(),
            shard: None,
            batch: None,
            prompt_format: None,
        }
    }

    fn signals(&self) -> Vec<Signal> {
        let mut signals = self.signals.clone();
        signals.sort();
        signals.dedup();
        signals
    }

    fn wants(&self, signal: Signal) -> bool {
        self.signals.contains(&signal)
    }

    /// The elicitation variants collected, in canonical order (none without the verbalized
    /// signal).
    fn elicitations(&self) -> Vec<Elicitation> {
        let mut variants = match self.wants(Signal::Verbalized) {
            true => self.elicitation.clone(),
            false => Vec::new(),
        };
        variants.sort();
        variants.dedup();
        variants
    }

    fn wants_elicitation(&self, variant: Elicitation) -> bool {
        self.elicitations().contains(&variant)
    }
}

/// Reports a run's progress (a progress bar in the binary).
pub trait Progress {
    /// The run has `total` examples, `done` of them already recorded.
    fn start(&mut self, total: usize, done: usize);
    /// One more example is recorded.
    fn advance(&mut self);
    /// The run is over.
    fn finish(&mut self);
}

/// Progress that is not shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _total: usize, _done: usize) {}
    fn advance(&mut self) {}
    fn finish(&mut self) {}
}

/// What an executed run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Examples of this run (its shard).
    pub examples: usize,
    /// Records computed by this call (the rest were there already).
    pub new_records: usize,
    /// Examples whose text was truncated to fit the prompt.
    pub truncated: usize,
    /// The records file.
    pub predictions: PathBuf,
    /// Whether a torn last line (a run killed while writing it) was dropped and recomputed.
    pub repaired_torn_line: bool,
}

/// A checked run waiting for a model: settings, prompt templates, dataset and parser.
#[derive(Debug)]
pub struct RunPlan {
    settings: RunSettings,
    dataset: Dataset,
    labels: Vec<String>,
    parser: VerbalizedParser,
    verbalized_template: Option<PromptTemplate>,
    label_template: Option<PromptTemplate>,
    /// The `kshot` demonstrations and the template they precede.
    kshot: Option<(Vec<Example>, PromptTemplate)>,
    /// The `percent` variant's template.
    percent_template: Option<PromptTemplate>,
    /// The `top1` variant's template.
    top1_template: Option<PromptTemplate>,
}

impl RunPlan {
    /// Checks `settings`, reads the prompt templates and loads the dataset.
    pub fn new(settings: RunSettings) -> Result<Self> {
        ensure!(!settings.signals.is_empty(), "--signals needs at least one signal");
        ensure!(settings.batch != Some(0), "--batch must be at least 1");
        ensure!(
            !(settings.wants(Signal::Verbalized)
                && settings.verbalized == VerbalizedMode::Free
                && settings.max_tokens == 0),
            "--max-tokens must be at least 1 for free verbalized generation"
        );
        check_elicitation(&settings)?;
        let verbalized_template = settings
            .wants(Signal::Verbalized)
            .then(|| {
                PromptTemplate::builtin_or_file("verbalized", VERBALIZED_PROMPT, settings.verbalized_prompt.as_deref())
            })
            .transpose()?;
        let label_template = settings
            .wants(Signal::Logits)
            .then(|| PromptTemplate::builtin_or_file("label", LABEL_PROMPT, settings.label_prompt.as_deref()))
            .transpose()?;
        let dataset = settings.dataset.load()?;
        let labels: Vec<String> = dataset.labels.iter().map(|l| l.name.clone()).collect();
        let parser = VerbalizedParser::new(&labels)?;
        let kshot = match (&settings.kshot_split, &verbalized_template) {
            (Some(split), Some(base)) if settings.wants_elicitation(Elicitation::Kshot) => {
                let demonstrations =
                    draw_demonstrations(&settings.dataset, split, settings.kshot, settings.dataset.seed, &dataset)?;
                let template = kshot_template(base, &demonstrations, &dataset)?;
                Some((demonstrations, template))
            }
            _ => None,
        };
        let percent_template = settings
            .wants_elicitation(Elicitation::Percent)
            .then(|| PromptTemplate::builtin("verbalized_percent", VERBALIZED_PERCENT_PROMPT))
            .transpose()?;
        let top1_template = settings
            .wants_elicitation(Elicitation::Top1)
            .then(|| PromptTemplate::builtin("verbalized_top1", VERBALIZED_TOP1_PROMPT))
            .transpose()?;
        Ok(Self {
            settings,
            dataset,
            labels,
            parser,
            verbalized_template,
            label_template,
            kshot,
            percent_template,
            top1_template,
        })
    }

    /// The loaded dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Runs `backend` over every example not yet recorded in the run directory.
    pub fn execute<B: ModelBackend>(&self, backend: &B, progress: &mut dyn Progress) -> Result<RunOutcome> {
        let settings = &self.settings;
        if settings.wants(Signal::Verbalized) && settings.verbalized == VerbalizedMode::Constrained {
            ensure!(
                backend.capabilities().constrained_generation,
                "--verbalized constrained needs constrained decoding, which the model backend does not offer; use --verbalized free"
            );
        }
        check_backend_offers_elicitation(settings, backend)?;
        let evaluator = self.evaluator(backend)?;
        let limits = PromptLimits::new(settings, &evaluator, self.dataset.examples.len())?;
        let prepared = prepare_examples(&self.dataset, settings.shard, backend, limits.text_budget)?;
        let manifest = self.manifest(backend, &evaluator, &limits, &prepared)?;
        let (mut writer, done) = open_run_dir(&settings.out, &manifest, &prepared)?;
        let batch = settings.batch.unwrap_or_else(|| backend.suggested_batch(limits.max_prompt_tokens + limits.reserve));
        progress.start(prepared.len(), done);
        for group in prepared[done..].chunks(batch) {
            for record in evaluate_group(&evaluator, &self.dataset, group, limits.max_prompt_tokens)? {
                writer.append(&record)?;
                progress.advance();
            }
        }
        progress.finish();
        Ok(RunOutcome {
            examples: prepared.len(),
            new_records: prepared.len() - done,
            truncated: manifest.selection.truncated,
            predictions: settings.out.join(PREDICTIONS_FILE),
            repaired_torn_line: writer.repaired_torn_line(),
        })
    }

    /// The prompts each example of this run (its shard) would be sent, exactly as the model
    /// receives them (texts truncated to the budget as in a run), without running the examples
    /// (only the templates' shared prefixes are processed). Nothing is written.
    pub fn prompts<B: ModelBackend>(&self, backend: &B) -> Result<Vec<ExamplePrompts>> {
        let evaluator = self.evaluator(backend)?;
        let limits = PromptLimits::new(&self.settings, &evaluator, self.dataset.examples.len())?;
        let prepared = prepare_examples(&self.dataset, self.settings.shard, backend, limits.text_budget)?;
        prepared
            .iter()
            .map(|item| {
                let mut verbalized = None;
                let mut variants = BTreeMap::new();
                for setup in &evaluator.verbalized {
                    let text = setup.full_text(backend, item.position, &item.text)?;
                    match setup.elicitation {
                        Elicitation::Distribution => verbalized = Some(text),
                        variant => _ = variants.insert(variant.signal_name().to_string(), text),
                    }
                }
                let label = evaluator.label_prompt.as_ref().map(|prompt| prompt.full_text(backend, &item.text));
                Ok(ExamplePrompts {
                    id: item.example.id.clone(),
                    gold: self.dataset.labels[item.example.label].name.clone(),
                    verbalized,
                    variants,
                    label: label.transpose()?,
                    label_continuations: evaluator.label_continuations.clone(),
                })
            })
            .collect()
    }

    /// The prompts (shared prefixes prefilled) and settings of both signals.
    fn evaluator<'b, B: ModelBackend>(&self, backend: &'b B) -> Result<Evaluator<'b, B>> {
        let settings = &self.settings;
        let values = PromptValues::for_dataset(&self.dataset);
        let format = settings.prompt_format.unwrap_or_else(|| PromptFormat::default_for(backend));
        let chat_prompt = |template: &PromptTemplate, answer_prefix: &str| {
            ChatPrompt::new(backend, template.clone(), format, values.clone(), answer_prefix)
        };
        let evaluator = Evaluator {
            model: backend,
            label_continuations: label_continuations(&self.labels, &settings.label_answer_prefix),
            labels: self.labels.clone(),
            verbalized: settings
                .elicitations()
                .into_iter()
                .map(|variant| -> Result<VerbalizedSetup<B>> {
                    Ok(VerbalizedSetup {
                        elicitation: variant,
                        permuted: (variant == Elicitation::Permuted)
                            .then(|| PermutedLabels::new(&self.dataset, settings.dataset.seed)),
                        sampling: (variant == Elicitation::Sampled).then_some(self.sample_settings()),
                        prompt: chat_prompt(self.template_of(variant)?, "")?,
                        mode: settings.verbalized,
                        max_tokens: settings.max_tokens,
                        constrained: ConstrainedOptions {
                            max_fraction_digits: settings.max_fraction_digits,
                            scale: variant.number_scale(),
                        },
                        parser: match variant.number_scale() {
                            NumberScale::Fraction => self.parser.clone(),
                            NumberScale::Percent => self.parser.clone().with_scale(ValueScale::Percent),
                        },
                    })
                })
                .collect::<Result<_>>()?,
            label_prompt: self
                .label_template
                .as_ref()
                .map(|template| chat_prompt(template, &settings.label_answer_prefix))
                .transpose()?,
        };
        Ok(evaluator)
    }

    /// The template elicitation `variant` renders.
    fn template_of(&self, variant: Elicitation) -> Result<&PromptTemplate> {
        let template = match variant {
            Elicitation::Distribution | Elicitation::Permuted | Elicitation::Sampled => self.verbalized_template.as_ref(),
            Elicitation::Kshot => self.kshot.as_ref().map(|(_, template)| template),
            Elicitation::Percent => self.percent_template.as_ref(),
            Elicitation::Top1 => self.top1_template.as_ref(),
        };
        match template {
            Some(template) => Ok(template),
            None => bail!("the {} elicitation has no prompt template (is the verbalized signal on?)", variant.name()),
        }
    }
}

/// Refuses elicitation variants `backend` cannot do exactly, naming the variant and the engine.
fn check_backend_offers_elicitation<B: ModelBackend>(settings: &RunSettings, backend: &B) -> Result<()> {
    let capabilities = backend.capabilities();
    let engine = backend.identity().backend();
    ensure!(
        !settings.wants_elicitation(Elicitation::Sampled) || capabilities.sampled_generation,
        "--elicitation sampled needs seeded temperature sampling, which the {engine} backend does not offer"
    );
    ensure!(
        !(settings.wants_elicitation(Elicitation::Percent) && settings.verbalized == VerbalizedMode::Constrained)
            || capabilities.constrained_percentages,
        "--elicitation percent with --verbalized constrained needs constrained whole percentages, which the {engine} \
         backend does not offer (its dicts hold probabilities from 0 to 1); use --verbalized free"
    );
    Ok(())
}

/// Refuses elicitation settings that cannot run, naming the flag.
fn check_elicitation(settings: &RunSettings) -> Result<()> {
    ensure!(!settings.elicitation.is_empty(), "--elicitation needs at least one variant");
    ensure!(
        settings.wants(Signal::Verbalized) || settings.elicitation == [Elicitation::Distribution],
        "--elicitation asks for verbalized answers, but --signals leaves out the verbalized signal"
    );
    if settings.wants_elicitation(Elicitation::Kshot) {
        ensure!(settings.kshot_split.is_some(), "--elicitation kshot needs --kshot-split (the split demonstrations are drawn from)");
        ensure!(settings.kshot > 0, "--kshot must be at least 1");
    }
    if settings.wants_elicitation(Elicitation::Sampled) {
        ensure!(settings.samples > 0, "--samples must be at least 1");
        let temperature = settings.sample_temperature;
        ensure!(temperature.is_finite() && temperature > 0.0, "--sample-temperature must be above 0, got {temperature}");
    }
    Ok(())
}

/// One example's prompts as the model receives them ([`RunPlan::prompts`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExamplePrompts {
    /// The example's id.
    pub id: String,
    /// Its gold label.
    pub gold: String,
    /// The chat-rendered verbalized prompt, when that signal is collected.
    pub verbalized: Option<String>,
    /// The chat-rendered prompts of the other elicitation variants, by signal name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, String>,
    /// The chat-rendered label prompt followed by the answer prefix, when the logit signal is
    /// collected.
    pub label: Option<String>,
    /// The continuation scored for each label after `label`, in label order.
    pub label_continuations: Vec<String>,
}

/// An example ready to run: its position in the sampled dataset and its fitted text.
struct PreparedExample<'a> {
    position: usize,
    example: &'a Example,
    text: String,
    truncated: bool,
}

/// The prompt-size limits of a run.
struct PromptLimits {
    max_prompt_tokens: usize,
    text_budget: usize,
    /// Tokens the signals need after the prompt.
    reserve: usize,
}

impl PromptLimits {
    fn new<B: ModelBackend>(settings: &RunSettings, evaluator: &Evaluator<'_, B>, examples: usize) -> Result<Self> {
        let model = evaluator.model;
        let context = model.context_length();
        let reserve = generation_reserve(settings, evaluator)?;
        let room = context.checked_sub(reserve).filter(|&room| room > 0);
        let Some(room) = room else {
            bail!("the model's context window ({context} tokens) cannot hold the {reserve} tokens the signals need after the prompt");
        };
        let max_prompt_tokens = settings.max_prompt_tokens.unwrap_or(room);
        ensure!(
            max_prompt_tokens <= room,
            "--max-prompt-tokens {max_prompt_tokens} leaves too little of the {context}-token context window: \
             the signals need {reserve} tokens after the prompt (at most {room})"
        );
        let mut overhead = match &evaluator.label_prompt {
            Some(prompt) => prompt.token_count(model, "")?,
            None => 0,
        };
        for setup in &evaluator.verbalized {
            overhead = overhead.max(setup.overhead_tokens(model, examples)?);
        }
        let Some(text_budget) = max_prompt_tokens.checked_sub(overhead + BOUNDARY_SLACK_TOKENS).filter(|&budget| budget > 0)
        else {
            bail!(
                "a prompt limit of {max_prompt_tokens} tokens leaves no room for the example text \
                 (the templates take {overhead} tokens)"
            );
        };
        Ok(Self { max_prompt_tokens, text_budget, reserve })
    }
}

/// Tokens the signals need after the prompt: the longest label, the free generation budget, or
/// the constrained dict with the widest numbers.
fn generation_reserve<B: ModelBackend>(settings: &RunSettings, evaluator: &Evaluator<'_, B>) -> Result<usize> {
    let model = evaluator.model;
    let mut reserve = 0;
    if evaluator.label_prompt.is_some() {
        for continuation in &evaluator.label_continuations {
            reserve = reserve.max(model.encode(continuation)?.len());
        }
    }
    for setup in &evaluator.verbalized {
        let generation = match setup.mode {
            VerbalizedMode::Free => setup.max_tokens,
            VerbalizedMode::Constrained => {
                let widest = match setup.constrained.scale {
                    NumberScale::Fraction => format!("0.{}", "0".repeat(settings.max_fraction_digits)),
                    NumberScale::Percent => "100".to_string(),
                };
                let entries: Vec<String> = evaluator
                    .labels
                    .iter()
                    .map(|label| format!("{}: {widest}", serde_json::Value::from(label.as_str())))
                    .collect();
                // Keys in another order may merge differently: a token more per key.
                let reorder_slack = if setup.permuted.is_some() { entries.len() } else { 0 };
                model.encode(&format!("{{{}}}", entries.join(", ")))?.len() + reorder_slack
            }
        };
        reserve = reserve.max(generation);
    }
    Ok(reserve)
}

/// The examples of this run (its shard), with texts fitted to `text_budget` tokens.
fn prepare_examples<'a, B: ModelBackend>(
    dataset: &'a Dataset,
    shard: Option<Shard>,
    model: &B,
    text_budget: usize,
) -> Result<Vec<PreparedExample<'a>>> {
    let count = |text: &str| model.encode(text).map_or(usize::MAX, |ids| ids.len());
    dataset
        .examples
        .iter()
        .enumerate()
        .filter(|(position, _)| shard.is_none_or(|shard| shard.holds(*position)))
        .map(|(position, example)| {
            model.encode(&example.text).with_context(|| format!("tokenizing example '{}'", example.id))?;
            let fitted = fit_to_budget(&example.text, text_budget, count)
                .with_context(|| format!("fitting example '{}'", example.id))?;
            Ok(PreparedExample { position, example, truncated: fitted.truncated, text: fitted.text.into_owned() })
        })
        .collect()
}

/// The records of a group of examples, in order: their verbalized answers generated together,
/// their labels scored one example at a time. Each record's `elapsed_ms` is an equal share of
/// the group's time.
fn evaluate_group<B: ModelBackend>(
    evaluator: &Evaluator<'_, B>,
    dataset: &Dataset,
    group: &[PreparedExample<'_>],
    max_prompt_tokens: usize,
) -> Result<Vec<Record>> {
    let started = Instant::now();
    let examples: Vec<(&str, &str)> = group.iter().map(|item| (item.example.id.as_str(), item.text.as_str())).collect();
    let positions: Vec<usize> = group.iter().map(|item| item.position).collect();
    let mut verbalized: Vec<_> = evaluator.verbalized(&examples, &positions)?.into_iter().map(Vec::into_iter).collect();
    let logits = evaluator.logits(&examples)?;
    let mut records = Vec::with_capacity(group.len());
    for (item, logits) in group.iter().zip(logits) {
        let mut record = Record {
            backend: evaluator.model.identity().backend().to_string(),
            index: item.position,
            id: item.example.id.clone(),
            gold: dataset.labels[item.example.label].name.clone(),
            gold_index: item.example.label,
            truncated: item.truncated,
            verbalized: None,
            verbalized_top1: None,
            verbalized_percent: None,
            verbalized_permuted: None,
            verbalized_kshot: None,
            verbalized_sampled: None,
            logits,
            elapsed_ms: 0,
        };
        let mut longest = record.logits.as_ref().map_or(0, |l| l.prompt_tokens);
        for (setup, answers) in evaluator.verbalized.iter().zip(&mut verbalized) {
            let Some(answer) = answers.next() else { bail!("example '{}': no {} answer", item.example.id, setup.elicitation.name()) };
            longest = longest.max(answer.prompt_tokens);
            record.set_verbalized(setup.elicitation, answer);
        }
        ensure!(
            longest <= max_prompt_tokens,
            "example '{}': its prompt has {longest} tokens, more than the limit of {max_prompt_tokens}",
            item.example.id
        );
        records.push(record);
    }
    let share = started.elapsed().as_millis() / group.len().max(1) as u128;
    for record in &mut records {
        record.elapsed_ms = u64::try_from(share).unwrap_or(u64::MAX);
    }
    Ok(records)
}

impl RunPlan {
    fn manifest<B: ModelBackend>(
        &self,
        backend: &B,
        evaluator: &Evaluator<'_, B>,
        limits: &PromptLimits,
        prepared: &[PreparedExample<'_>],
    ) -> Result<Manifest> {
        let (settings, dataset) = (&self.settings, &self.dataset);
        let prompt_manifest = |prompt: &ChatPrompt<B>| PromptManifest {
            source: prompt.template().source.clone(),
            sha256: prompt.template().sha256(),
            text: prompt.template().text.clone(),
            shared_prefix_tokens: prompt.shared_prefix_tokens(),
            answer_prefix: prompt.answer_prefix().to_string(),
        };
        Ok(Manifest {
            candor_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
            model: backend.identity().clone(),
            dataset: DatasetManifest {
                spec: settings.dataset.spec.clone(),
                name: dataset.name.clone(),
                split: dataset.split.clone(),
                file: dataset.origin.path().display().to_string(),
                file_sha256: prompts::file_sha256(dataset.origin.path())?,
                rows_in_split: dataset.rows_in_split,
                limit: dataset.limit,
                seed: dataset.seed,
                examples: dataset.examples.len(),
                labels: self.labels.clone(),
                label_descriptions: dataset.labels.iter().map(|l| l.description.clone()).collect(),
                task: PromptValues::for_dataset(dataset).task,
            },
            prompts: PromptsManifest {
                verbalized: evaluator
                    .verbalized
                    .iter()
                    .find(|setup| !setup.elicitation.has_own_template())
                    .map(|setup| prompt_manifest(&setup.prompt)),
                label: evaluator.label_prompt.as_ref().map(prompt_manifest),
                variants: evaluator
                    .verbalized
                    .iter()
                    .filter(|setup| setup.elicitation.has_own_template())
                    .map(|setup| (setup.elicitation.signal_name().to_string(), prompt_manifest(&setup.prompt)))
                    .collect(),
            },
            settings: Settings {
                signals: settings.signals().iter().map(|s| s.name().to_string()).collect(),
                verbalized_mode: settings.wants(Signal::Verbalized).then(|| settings.verbalized.name().to_string()),
                max_tokens: settings.max_tokens,
                max_fraction_digits: settings.max_fraction_digits,
                max_prompt_tokens: limits.max_prompt_tokens,
                text_token_budget: limits.text_budget,
                parse_tolerance: self.parser.tolerance(),
                prompt_format: settings.prompt_format.unwrap_or_else(|| PromptFormat::default_for(backend)).name().to_string(),
                elicitation: self.elicitation_settings(),
            },
            selection: Selection {
                shard: settings.shard,
                examples: prepared.len(),
                truncated: prepared.iter().filter(|item| item.truncated).count(),
            },
        })
    }
}

impl RunPlan {
    /// The manifest's record of the elicitation variants.
    fn elicitation_settings(&self) -> ElicitationSettings {
        let settings = &self.settings;
        let seed = settings.dataset.seed;
        let mut variants = settings.elicitation.clone();
        variants.sort();
        variants.dedup();
        ElicitationSettings {
            variants: variants.iter().map(|variant| variant.name().to_string()).collect(),
            permutation_seed: settings.wants_elicitation(Elicitation::Permuted).then_some(seed),
            kshot: self.kshot.as_ref().zip(settings.kshot_split.as_ref()).map(|((demonstrations, _), split)| KshotSettings {
                split: split.clone(),
                k: settings.kshot,
                seed,
                demonstrations: demonstrations.iter().map(|example| example.id.clone()).collect(),
            }),
            sampled: settings.wants_elicitation(Elicitation::Sampled).then(|| {
                let sampling = self.sample_settings();
                SampledSettings { samples: sampling.samples, temperature: sampling.temperature, seed: sampling.seed }
            }),
        }
    }

    /// The `sampled` variant's settings.
    fn sample_settings(&self) -> SampleSettings {
        let settings = &self.settings;
        SampleSettings { samples: settings.samples, temperature: settings.sample_temperature, seed: settings.dataset.seed }
    }
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
    let expected: Vec<(usize, &str)> = prepared.iter().map(|item| (item.position, item.example.id.as_str())).collect();
    PredictionsWriter::open(dir, &expected)
}
