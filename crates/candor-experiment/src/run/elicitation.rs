//! Elicitation variants of the verbalized signal (`--elicitation`): how the model is asked for
//! its distribution. Each variant is its own signal, with its own record field and signal name,
//! so `candor calibrate` measures them side by side:
//!
//! * `distribution` → `verbalized`: the built-in (or `--verbalized-prompt`) elicitation of the
//!   whole distribution as a dict (the default; the records of runs before variants existed).
//! * `top1` → `verbalized_top1`: the most likely label and the confidence `c` that it is right,
//!   as a one-key dict (Xiong et al. 2024; its own built-in prompt); the distribution is `c` on
//!   that label and `(1 − c)/(K − 1)` on each other. Constrained, the label is the one whose
//!   dict key `{"<label>": ` the model finds most probable after the prompt, then its number
//!   is generated under the grammar.
//! * `percent` → `verbalized_percent`: the distribution as percentages from 0 to 100 (its own
//!   built-in prompt; the parser reads every dict on the percent scale, and constrained numbers
//!   are whole percentages).
//! * `permuted` → `verbalized_permuted`: the same prompt with the labels listed, and the dict's
//!   keys forced, in a seeded per-example order ([`permutation`]); the record stores the order,
//!   and the parsed distribution is in manifest label order like every other record.
//! * `kshot` → `verbalized_kshot`: the same prompt after K demonstrations drawn with the run's
//!   seed from a named split of the same dataset ([`draw_demonstrations`]), each shown with its
//!   gold answer as a one-hot dict ([`kshot_template`]). The same demonstrations precede every
//!   example, so their tokens are computed once; no example of the run is a demonstration.
//! * `sampled` → `verbalized_sampled`: the consistency baseline. `--samples N` answers to the
//!   verbalized prompt sampled at `--sample-temperature τ` (constrained or free), each parsed,
//!   the parsed ones averaged; sample `i` of the example at position `p` draws from the run's
//!   `--seed` on stream `p · 2³² + i`, so the records are deterministic and shard-independent.

use crate::error::{bail, Context, Result};
use candor_backend::{NumberScale, Sampling};
use candor_data::{Dataset, DatasetRequest, Example, Label};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

use super::prompts::{PromptTemplate, PromptValues};

/// How the verbalized distribution is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Elicitation {
    /// The whole distribution as a dict (signal `verbalized`).
    Distribution,
    /// The most likely label and its confidence (signal `verbalized_top1`).
    Top1,
    /// The whole distribution in percentages (signal `verbalized_percent`).
    Percent,
    /// Labels in a seeded per-example order (signal `verbalized_permuted`).
    Permuted,
    /// K demonstrations with their gold answers first (signal `verbalized_kshot`).
    Kshot,
    /// N sampled answers averaged (signal `verbalized_sampled`).
    Sampled,
}

impl Elicitation {
    /// Every variant, in canonical order.
    pub const ALL: [Elicitation; 6] =
        [Self::Distribution, Self::Top1, Self::Percent, Self::Permuted, Self::Kshot, Self::Sampled];

    /// The variant's name on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Distribution => "distribution",
            Self::Top1 => "top1",
            Self::Percent => "percent",
            Self::Permuted => "permuted",
            Self::Kshot => "kshot",
            Self::Sampled => "sampled",
        }
    }

    /// The signal the variant's answers form, in records and calibration results.
    pub fn signal_name(self) -> &'static str {
        match self {
            Self::Distribution => "verbalized",
            Self::Top1 => "verbalized_top1",
            Self::Percent => "verbalized_percent",
            Self::Permuted => "verbalized_permuted",
            Self::Kshot => "verbalized_kshot",
            Self::Sampled => "verbalized_sampled",
        }
    }

    /// Whether the variant renders a template of its own (recorded under `prompts.variants`)
    /// rather than the verbalized one.
    pub fn has_own_template(self) -> bool {
        matches!(self, Self::Top1 | Self::Percent | Self::Kshot)
    }

    /// The scale of the variant's numbers.
    pub fn number_scale(self) -> NumberScale {
        match self {
            Self::Percent => NumberScale::Percent,
            _ => NumberScale::Fraction,
        }
    }

    /// The variant whose name in manifests is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|variant| variant.name() == name)
    }
}

/// The order in which example `position` (its place in the sampled dataset, all shards
/// together) shows `n_labels` labels: a ChaCha8 shuffle of `0..n_labels` seeded with `seed` on
/// stream `position`, so it depends on neither the shard nor the batch.
pub fn permutation(seed: u64, position: usize, n_labels: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(position as u64);
    let mut order: Vec<usize> = (0..n_labels).collect();
    order.shuffle(&mut rng);
    order
}

/// The labels of a run shown in a seeded per-example order (the `permuted` variant).
#[derive(Debug, Clone)]
pub struct PermutedLabels {
    seed: u64,
    labels: Vec<Label>,
    task: Option<String>,
}

impl PermutedLabels {
    /// `dataset`'s labels and task, permuted with `seed`.
    pub fn new(dataset: &Dataset, seed: u64) -> Self {
        Self { seed, labels: dataset.labels.clone(), task: dataset.task.clone() }
    }

    /// The order of example `position` ([`permutation`]).
    pub fn order(&self, position: usize) -> Vec<usize> {
        permutation(self.seed, position, self.labels.len())
    }

    /// The prompt values with the labels listed in `order`.
    pub fn values(&self, order: &[usize]) -> PromptValues {
        let labels: Vec<&Label> = order.iter().map(|&index| &self.labels[index]).collect();
        PromptValues::for_labels(&labels, self.task.as_deref())
    }

    /// The label names in `order`: the keys of the dict, in the order they are forced.
    pub fn names(&self, order: &[usize]) -> Vec<String> {
        order.iter().map(|&index| self.labels[index].name.clone()).collect()
    }
}

/// The `sampled` variant's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSettings {
    /// Answers per example.
    pub samples: usize,
    /// τ.
    pub temperature: f64,
    /// The run's seed.
    pub seed: u64,
}

impl SampleSettings {
    /// The sampling of answer `sample` of the example at `position`.
    pub fn sampling(&self, position: usize, sample: usize) -> Sampling {
        Sampling { temperature: self.temperature, seed: self.seed, stream: ((position as u64) << 32) | sample as u64 }
    }
}

/// `k` demonstrations from split `split` of the dataset `request` asks for: a ChaCha8 shuffle
/// (seeded with `seed`) of the split's rows, the first `k` that are no example of `run` (same
/// id, or the same row of the same file: a plain file's split is only a name), kept in shuffled
/// order. Fails naming the split when it has too few.
pub fn draw_demonstrations(request: &DatasetRequest, split: &str, k: usize, seed: u64, run: &Dataset) -> Result<Vec<Example>> {
    let pool_request = DatasetRequest { split: Some(split.to_string()), limit: None, ..request.clone() };
    let pool = pool_request.load().with_context(|| format!("loading --kshot-split {split}"))?;
    let run_ids: BTreeSet<&str> = run.examples.iter().map(|example| example.id.as_str()).collect();
    let same_file = pool.origin.path() == run.origin.path();
    let run_rows: BTreeSet<usize> = run.examples.iter().filter(|_| same_file).map(|example| example.row).collect();
    let mut order: Vec<usize> = (0..pool.examples.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let drawn: Vec<Example> = order
        .into_iter()
        .map(|row| &pool.examples[row])
        .filter(|example| !run_ids.contains(example.id.as_str()) && !run_rows.contains(&example.row))
        .take(k)
        .cloned()
        .collect();
    if drawn.len() < k {
        bail!(
            "--kshot {k}: split '{split}' has only {} examples that are not examples of this run",
            drawn.len()
        );
    }
    Ok(drawn)
}

/// `base` preceded by `demonstrations`, each as its text and its gold answer (one-hot over
/// `dataset`'s labels, in label order) in the form the prompt asks for. Braces of the texts and
/// answers are escaped, so the result has the placeholders of `base` only.
pub fn kshot_template(base: &PromptTemplate, demonstrations: &[Example], dataset: &Dataset) -> Result<PromptTemplate> {
    let mut block = String::from("Examples of texts with the answer expected for each:\n\n");
    for example in demonstrations {
        block.push_str(&format!("Text:\n{}\nAnswer: {}\n\n", example.text, one_hot_dict(dataset, example.label)));
    }
    let escaped = block.replace('{', "{{").replace('}', "}}");
    PromptTemplate::parse(format!("{}+kshot", base.source), &format!("{escaped}{}", base.text))
}

/// `{"a": 0.0, "b": 1.0}`: probability 1 on label `gold`, keys JSON-escaped, in label order.
fn one_hot_dict(dataset: &Dataset, gold: usize) -> String {
    let entries: Vec<String> = dataset
        .labels
        .iter()
        .enumerate()
        .map(|(index, label)| {
            let value = if index == gold { "1.0" } else { "0.0" };
            format!("{}: {value}", serde_json::Value::from(label.name.as_str()))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candor_data::{Label, Origin};
    use std::path::PathBuf;

    fn dataset(labels: &[&str]) -> Dataset {
        Dataset {
            name: "d".into(),
            split: "test".into(),
            task: None,
            origin: Origin::File { path: PathBuf::from("d.jsonl") },
            labels: labels.iter().map(|name| Label { name: name.to_string(), description: None }).collect(),
            rows_in_split: 0,
            counts_in_split: vec![0; labels.len()],
            limit: None,
            seed: 0,
            examples: Vec::new(),
        }
    }

    #[test]
    fn names_are_stable_and_round_trip() {
        let names: Vec<(&str, &str)> = Elicitation::ALL.iter().map(|e| (e.name(), e.signal_name())).collect();
        assert_eq!(
            names,
            [
                ("distribution", "verbalized"),
                ("top1", "verbalized_top1"),
                ("percent", "verbalized_percent"),
                ("permuted", "verbalized_permuted"),
                ("kshot", "verbalized_kshot"),
                ("sampled", "verbalized_sampled")
            ]
        );
        for variant in Elicitation::ALL {
            assert_eq!(Elicitation::from_name(variant.name()), Some(variant));
        }
        assert_eq!(Elicitation::from_name("verbalized"), None);
    }

    #[test]
    fn samples_draw_on_a_stream_per_position_and_sample() {
        let settings = SampleSettings { samples: 3, temperature: 0.7, seed: 9 };
        assert_eq!(settings.sampling(0, 2), Sampling { temperature: 0.7, seed: 9, stream: 2 });
        assert_eq!(settings.sampling(5, 1), Sampling { temperature: 0.7, seed: 9, stream: 5 * (1 << 32) + 1 });
    }

    #[test]
    fn permutations_are_seeded_per_position() {
        let first = permutation(7, 0, 6);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5], "a permutation");
        assert_eq!(permutation(7, 0, 6), first, "deterministic");
        // Over 20 positions, not every order is the same (the stream is per position), and a
        // different seed changes them.
        let orders: BTreeSet<Vec<usize>> = (0..20).map(|position| permutation(7, position, 6)).collect();
        assert!(orders.len() > 10, "{orders:?}");
        assert_ne!((0..20).map(|p| permutation(7, p, 6)).collect::<Vec<_>>(), (0..20).map(|p| permutation(8, p, 6)).collect::<Vec<_>>());
        assert_eq!(permutation(3, 4, 1), [0]);
    }

    #[test]
    fn permuted_labels_list_names_and_descriptions_in_the_order() {
        let mut data = dataset(&["anger", "fear", "joy"]);
        data.labels[1].description = Some("afraid".into());
        data.task = Some("Pick.".into());
        let permuted = PermutedLabels::new(&data, 0);
        let values = permuted.values(&[2, 0, 1]);
        assert_eq!(values.labels, "joy, anger, fear");
        assert_eq!(values.label_descriptions, "- joy\n- anger\n- fear: afraid");
        assert_eq!(values.task, "Pick.");
        assert_eq!(permuted.names(&[2, 0, 1]), ["joy", "anger", "fear"]);
        assert_eq!(permuted.order(5), permutation(0, 5, 3));
    }

    #[test]
    fn kshot_template_shows_each_demonstration_with_its_one_hot_answer_before_the_base() {
        let base = PromptTemplate::parse("builtin:verbalized".into(), "Labels: {labels}\n{text}").unwrap();
        let demonstrations = vec![
            Example { id: "train-3".into(), row: 3, text: "so {happy}".into(), label: 1 },
            Example { id: "train-0".into(), row: 0, text: "grr".into(), label: 0 },
        ];
        let template = kshot_template(&base, &demonstrations, &dataset(&["anger", "joy"])).unwrap();
        assert_eq!(template.source, "builtin:verbalized+kshot");
        let values = PromptValues { labels: "anger, joy".into(), label_descriptions: String::new(), task: String::new() };
        assert_eq!(
            template.render(&values, "EXAMPLE"),
            "Examples of texts with the answer expected for each:\n\n\
             Text:\nso {happy}\nAnswer: {\"anger\": 0.0, \"joy\": 1.0}\n\n\
             Text:\ngrr\nAnswer: {\"anger\": 1.0, \"joy\": 0.0}\n\n\
             Labels: anger, joy\nEXAMPLE"
        );
    }
}
