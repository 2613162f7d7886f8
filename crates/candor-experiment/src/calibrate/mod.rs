//! The calibrate pipeline (`candor calibrate`): fit every calibrator of candor-calib on the
//! calibration part of a run's records and measure both signals on the test part, giving the
//! `calibration.json` data model of `candor-results` for `candor report`.
//!
//! The calibration part is a seeded, stratified fraction of the run's examples, or every example
//! of a second run of the same model and prompts on another split (`--calibration-run`, e.g. the
//! validation split). Both signals are split identically, so their test metrics describe the same
//! examples. A verbalized answer that could not be parsed counts as the uniform distribution by
//! default (the signal failed on that example, and the failure should show in its metrics);
//! `--unparseable exclude` leaves such examples out of the verbalized signal instead, and the
//! signal comparison then uses the test examples both signals have. Probability signals also
//! get degeneracy diagnostics and an ε sweep, and when both signals were collected their
//! per-example agreement (rank correlation, argmax) is measured on every example that has both.

mod records;
mod signal;

use crate::analysis::AnalysisConfig;
use crate::eval::UnparseablePolicy;
use crate::error::{bail, ensure, Context, Result};
use candor_calib::bootstrap::paired_bootstrap;
use candor_calib::diagnostics::SignalAgreement;
use candor_calib::split::stratified_split;
use candor_calib::verbalized::ParseStatus;
use candor_calib::ScoreMatrix;
use records::{RecordedSignal, RunRecords};
use candor_results::{CalibrateSettings, CalibrationResults, RunSummary, SignalComparison, SignalResults, WellFormedness};
use signal::{diagnostics, differences, measure_signal, sweep, MeasureOptions, Measured, SignalRows};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `candor calibrate` does: the library form of its options (flags named in the field docs).
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrateConfig {
    /// The run directory (manifest.json + predictions.jsonl); calibration.json is written there.
    pub run: PathBuf,
    /// Take the calibration examples from this run (same model and prompts, another split such
    /// as validation) instead of a fraction of --run.
    pub calibration_run: Option<PathBuf>,
    /// Fraction of each class of --run used to fit the calibrators, in (0, 1).
    pub calib_fraction: f64,
    /// Seed, bootstrap, ε, temperature bounds, selections, interval method and ε sweep.
    pub analysis: AnalysisConfig,
    /// Verbalized answers that cannot be parsed: count as uniform, or leave them out.
    pub unparseable: UnparseablePolicy,
    /// Precisions the decision thresholds must reach.
    pub target_precision: Vec<f64>,
}

/// The calibration results of `args` and notes for the user (e.g. an unfinished run); writes nothing.
pub fn calibrate(args: &CalibrateConfig) -> Result<Calibrated> {
    check_args(args)?;
    let run = RunRecords::read(&args.run)?;
    let mut notes = Vec::new();
    if run.len() < run.manifest.selection.examples {
        notes.push(format!(
            "{} holds {} of its {} examples (the run is unfinished); calibrating those",
            args.run.display(),
            run.len(),
            run.manifest.selection.examples
        ));
    }
    let calibration_run = args.calibration_run.as_deref().map(RunRecords::read).transpose()?;
    if let (Some(calibration), Some(dir)) = (&calibration_run, &args.calibration_run) {
        run.check_compatible_calibration(calibration, dir)?;
    }
    let parts = Parts::new(&run, calibration_run.as_ref(), args)?;
    let options = MeasureOptions { analysis: args.analysis.clone(), target_precisions: args.target_precision.clone() };
    let mut signals = Vec::new();
    let mut measured_by_signal: Vec<(RecordedSignal, SignalMeasurements)> = Vec::new();
    for signal in run.signals() {
        let Some(rows) = parts.signal_rows(signal, args.unparseable)? else { continue };
        let name = signal.name();
        let measured = measure_signal(&rows.rows, &options).with_context(|| format!("the {name} signal"))?;
        signals.push(SignalResults {
            signal: name.to_string(),
            input_kind: rows.rows.kind.name().to_string(),
            n_calibration: rows.rows.calibration.1.len(),
            n_test: rows.rows.test.1.len(),
            well_formedness: match signal {
                RecordedSignal::Verbalized(variant) => Some(parts.well_formedness(variant, args.unparseable)),
                RecordedSignal::Logits => None,
            },
            mean_outside_mass: (signal == RecordedSignal::Logits).then(|| parts.mean_outside_mass()).flatten(),
            diagnostics: diagnostics(&rows.rows).with_context(|| format!("diagnosing the {name} signal"))?,
            epsilon_sweep: sweep(&rows.rows, &options.analysis).with_context(|| format!("the {name} signal"))?,
            calibrators: measured.iter().map(|m| m.results.clone()).collect(),
        });
        measured_by_signal.push((signal, (rows.test_examples, measured)));
    }
    // The comparison is of the whole-distribution elicitation with the logits.
    let measured_of = |wanted: RecordedSignal| measured_by_signal.iter().find(|(signal, _)| *signal == wanted).map(|(_, m)| m);
    let distribution = RecordedSignal::Verbalized(crate::run::Elicitation::Distribution);
    let comparisons = match (measured_of(distribution), measured_of(RecordedSignal::Logits)) {
        (Some(verbalized), Some(logits)) => compare(verbalized, logits, &parts.test_gold(), &options.analysis)?,
        _ => Vec::new(),
    };
    let results = CalibrationResults {
        candor_version: env!("CARGO_PKG_VERSION").to_string(),
        run: run_summary(args, &run),
        settings: settings(args),
        labels: run.manifest.dataset.labels.clone(),
        n_calibration: parts.calibration.len(),
        n_test: parts.test.len(),
        signals,
        comparisons,
        agreement: parts.agreement()?,
    };
    Ok(Calibrated { results, notes })
}

/// A signal's test examples (positions among the test part) and its calibrators' results.
type SignalMeasurements = (Vec<usize>, Vec<Measured>);

fn settings(args: &CalibrateConfig) -> CalibrateSettings {
    let analysis = &args.analysis;
    let names = |names: Vec<&str>| names.into_iter().map(String::from).collect::<Vec<_>>();
    CalibrateSettings {
        calib_fraction: args.calibration_run.is_none().then_some(args.calib_fraction),
        seed: analysis.seed,
        bootstrap_resamples: analysis.bootstrap,
        level: analysis.level,
        epsilon: analysis.epsilon,
        unparseable: args.unparseable.name().to_string(),
        target_precisions: args.target_precision.clone(),
        temperature_bounds: analysis.temperature_bounds,
        interval_method: analysis.interval_method().to_string(),
        calibrators: analysis.calibrators.as_ref().map(|kinds| names(kinds.iter().map(|k| k.name()).collect())),
        metrics: analysis.metrics.as_ref().map(|metrics| names(metrics.iter().map(|m| m.name()).collect())),
    }
}

/// What [`calibrate`] computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    /// The results (write them with [`CalibrationResults::write`]).
    pub results: CalibrationResults,
    /// Things the user should know about the input, one sentence each.
    pub notes: Vec<String>,
}

fn check_args(args: &CalibrateConfig) -> Result<()> {
    ensure!(
        args.calibration_run.is_some() || (args.calib_fraction > 0.0 && args.calib_fraction < 1.0),
        "--calib-fraction must be in (0, 1), got {}",
        args.calib_fraction
    );
    args.analysis.check()?;
    for &target in &args.target_precision {
        ensure!(target > 0.0 && target <= 1.0, "--target-precision {target} is not in (0, 1]");
    }
    Ok(())
}

/// Which examples of which run form the calibration and test parts.
struct Parts<'a> {
    /// (records, example index) of each calibration example.
    calibration: Vec<(&'a RunRecords, usize)>,
    /// (records, example index) of each test example.
    test: Vec<(&'a RunRecords, usize)>,
}

/// One signal's rows and, for each test row, its position among the test examples.
struct GatheredRows {
    rows: SignalRows,
    test_examples: Vec<usize>,
}

impl<'a> Parts<'a> {
    fn new(run: &'a RunRecords, calibration_run: Option<&'a RunRecords>, args: &CalibrateConfig) -> Result<Self> {
        let parts = match calibration_run {
            Some(calibration) => Self {
                calibration: (0..calibration.len()).map(|i| (calibration, i)).collect(),
                test: (0..run.len()).map(|i| (run, i)).collect(),
            },
            None => {
                let n_labels = run.manifest.dataset.labels.len();
                let split = stratified_split(&run.gold, n_labels, args.calib_fraction, args.analysis.seed)
                    .context("--calib-fraction")?;
                Self {
                    calibration: split.calibration.iter().map(|&i| (run, i)).collect(),
                    test: split.test.iter().map(|&i| (run, i)).collect(),
                }
            }
        };
        if parts.calibration.is_empty() || parts.test.is_empty() {
            bail!(
                "{} examples give {} calibration and {} test examples; both parts need at least one",
                run.len(),
                parts.calibration.len(),
                parts.test.len()
            );
        }
        Ok(parts)
    }

    fn test_gold(&self) -> Vec<usize> {
        self.test.iter().map(|&(records, i)| records.gold[i]).collect()
    }

    /// The rows of `signal` (`None` when the run did not collect it).
    fn signal_rows(&self, signal: RecordedSignal, policy: UnparseablePolicy) -> Result<Option<GatheredRows>> {
        let (run, _) = self.test[0];
        let collected = match signal {
            RecordedSignal::Verbalized(variant) => run.verbalized_rows(variant).is_some(),
            RecordedSignal::Logits => run.logits.is_some(),
        };
        if !collected {
            return Ok(None);
        }
        let n_labels = run.manifest.dataset.labels.len();
        let uniform = vec![1.0 / n_labels as f64; n_labels];
        // Both runs were checked to collect the same signals, so the rows exist in each.
        let row = |records: &RunRecords, i: usize| -> Option<Vec<f64>> {
            match signal {
                RecordedSignal::Verbalized(variant) => records.verbalized_rows(variant).and_then(|rows| {
                    rows[i].probabilities.clone().or_else(|| (policy == UnparseablePolicy::Uniform).then(|| uniform.clone()))
                }),
                RecordedSignal::Logits => records.logits.as_ref().map(|rows| rows[i].log_probs.clone()),
            }
        };
        let gather = |part: &[(&RunRecords, usize)]| -> Result<(Vec<usize>, ScoreMatrix, Vec<usize>)> {
            let (mut kept, mut values, mut gold) = (Vec::new(), Vec::new(), Vec::new());
            for (position, &(records, i)) in part.iter().enumerate() {
                if let Some(scores) = row(records, i) {
                    kept.push(position);
                    values.extend(scores);
                    gold.push(records.gold[i]);
                }
            }
            Ok((kept, ScoreMatrix::new(n_labels, values)?, gold))
        };
        let (_, calibration_scores, calibration_gold) = gather(&self.calibration)?;
        let (test_examples, test_scores, test_gold) = gather(&self.test)?;
        if calibration_gold.is_empty() || test_gold.is_empty() {
            bail!("the {} signal has no usable rows in the calibration or the test part (every answer unparseable?)", signal.name());
        }
        let kind = signal.input_kind();
        Ok(Some(GatheredRows {
            rows: SignalRows { kind, calibration: (calibration_scores, calibration_gold), test: (test_scores, test_gold) },
            test_examples,
        }))
    }

    fn all_examples(&self) -> impl Iterator<Item = &(&'a RunRecords, usize)> {
        self.calibration.iter().chain(&self.test)
    }

    fn well_formedness(&self, variant: crate::run::Elicitation, policy: UnparseablePolicy) -> WellFormedness {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut missing_labels: BTreeMap<String, usize> = BTreeMap::new();
        let (mut deviations, mut total, mut unparseable) = (Vec::new(), 0, 0);
        for &(records, i) in self.all_examples() {
            let Some(row) = records.verbalized_rows(variant).map(|rows| &rows[i]) else { continue };
            total += 1;
            *counts.entry(row.status.code().to_string()).or_insert(0) += 1;
            deviations.extend(row.raw_sum_deviation);
            match &row.status {
                ParseStatus::Partial { missing } => {
                    for label in missing {
                        *missing_labels.entry(label.clone()).or_insert(0) += 1;
                    }
                }
                ParseStatus::Unparseable { .. } => unparseable += 1,
                _ => {}
            }
        }
        WellFormedness {
            status_counts: counts,
            total,
            mean_abs_sum_deviation: (!deviations.is_empty()).then(|| deviations.iter().sum::<f64>() / deviations.len() as f64),
            excluded: if policy == UnparseablePolicy::Exclude { unparseable } else { 0 },
            missing_labels,
        }
    }

    /// The verbalized distribution (the whole-distribution elicitation) against the logit one, on
    /// every example with both (a parsed answer and label scores); `None` unless both signals were
    /// collected and such examples exist.
    fn agreement(&self) -> Result<Option<SignalAgreement>> {
        let (mut verbalized, mut logits) = (Vec::new(), Vec::new());
        for &(records, i) in self.all_examples() {
            let distribution = records.verbalized_rows(crate::run::Elicitation::Distribution);
            let (Some(v), Some(l)) = (distribution, &records.logits) else { return Ok(None) };
            if let Some(probabilities) = &v[i].probabilities {
                verbalized.push(probabilities.as_slice());
                logits.push(l[i].log_probs.as_slice());
            }
        }
        if verbalized.is_empty() {
            return Ok(None);
        }
        let (verbalized, logits) = (ScoreMatrix::from_rows(&verbalized)?, ScoreMatrix::from_rows(&logits)?);
        Ok(Some(SignalAgreement::between(&verbalized, &logits)?))
    }

    fn mean_outside_mass(&self) -> Option<f64> {
        let masses: Vec<f64> = self
            .all_examples()
            .filter_map(|&(records, i)| records.logits.as_ref().map(|rows| rows[i].outside_mass))
            .collect();
        (!masses.is_empty()).then(|| masses.iter().sum::<f64>() / masses.len() as f64)
    }
}

/// Paired `verbalized − logits` differences per calibrator both signals have, on the test
/// examples both signals kept.
fn compare(
    verbalized: &(Vec<usize>, Vec<Measured>),
    logits: &(Vec<usize>, Vec<Measured>),
    test_gold: &[usize],
    analysis: &AnalysisConfig,
) -> Result<Vec<SignalComparison>> {
    let logit_row: BTreeMap<usize, usize> = logits.0.iter().enumerate().map(|(row, &example)| (example, row)).collect();
    let (mut rows_a, mut rows_b, mut gold) = (Vec::new(), Vec::new(), Vec::new());
    for (row, example) in verbalized.0.iter().enumerate() {
        if let Some(&row_b) = logit_row.get(example) {
            rows_a.push(row);
            rows_b.push(row_b);
            gold.push(test_gold[*example]);
        }
    }
    let mut comparisons = Vec::new();
    for a in &verbalized.1 {
        let Some(b) = logits.1.iter().find(|b| b.results.calibrator == a.results.calibrator) else { continue };
        if gold.is_empty() {
            continue;
        }
        let matrix_a = a.test_probabilities.select_rows(&rows_a);
        let matrix_b = b.test_probabilities.select_rows(&rows_b);
        let paired = paired_bootstrap(&matrix_a, &matrix_b, &gold, &analysis.bootstrap_options(), &analysis.metric_options())
            .with_context(|| format!("comparing the signals under {}", a.results.calibrator))?;
        comparisons.push(SignalComparison {
            calibrator: a.results.calibrator.clone(),
            n_test: gold.len(),
            differences: differences(&paired),
        });
    }
    Ok(comparisons)
}

fn run_summary(args: &CalibrateConfig, run: &RunRecords) -> RunSummary {
    let manifest = &run.manifest;
    RunSummary {
        dir: args.run.display().to_string(),
        model: manifest.model.spec.clone(),
        architecture: manifest.model.architecture.clone(),
        weights: manifest
            .model
            .weights
            .tensor_types
            .iter()
            .map(|(kind, count)| format!("{kind} ×{count}"))
            .collect::<Vec<_>>()
            .join(", "),
        model_sha256: manifest.model.weights.sha256.clone(),
        dataset: manifest.dataset.name.clone(),
        split: manifest.dataset.split.clone(),
        verbalized_mode: manifest.settings.verbalized_mode.clone(),
        examples: run.len(),
        truncated: run.truncated,
        model_seconds: run.model_seconds,
        calibration_run: args.calibration_run.as_deref().map(|p: &Path| p.display().to_string()),
    }
}
