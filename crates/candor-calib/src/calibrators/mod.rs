//! Calibrators: maps fitted on the (scores, gold labels) of a calibration split and applied to new
//! rows, each returning a matrix of probabilities whose rows sum to 1.
//!
//! [`fit`] takes a [`CalibratorKind`], the [`InputKind`] of the scores (probabilities, e.g. parsed
//! verbalized distributions, or logits) and [`FitOptions`]; it returns a [`FittedCalibrator`] that
//! carries its parameters and the provenance of its fit ([`Provenance`]), serialises with serde,
//! and applies to new rows with [`FittedCalibrator::apply`].
//!
//! **One ε.** On probability input every kind starts from the same ε-lifted distribution
//! `softmax(ln max(p, ε))` (zeros lifted to ε, renormalised), the NLL of fits and metrics floors
//! `p_y` at the same ε, and [`Provenance::epsilon`] records it; so `none` and `ts` at T = 1 give
//! bit-for-bit the same probabilities and every metric agrees between them.
//!
//! What each kind sees:
//! * `ts`, `vector`: logits `z`. On probability input, `z = ln(max(p, ε))` (invert softmax).
//! * `resoftmax_ts`: the probabilities themselves, `softmax(p / T)` (the negative control; it
//!   does not apply to logits).
//! * `platt`: the one-vs-rest log-odds of each class, `ln p_k − ln(1 − p_k)` (exact from logits;
//!   from the lifted probabilities with both terms floored at ε).
//! * `histogram`, `isotonic`: the probabilities (`softmax(z)` on logits, the lifted row on
//!   probabilities).
//! * `none`: the same probabilities, unchanged: the uncalibrated baseline through the same path.
//!
//! Probability input must hold values in `[0, 1]` with row sums within
//! [`FitOptions::probability_tolerance`] of 1; every input must be finite. Loops over rows run in
//! parallel with rayon over fixed chunks whose partial sums are added in order, so results are
//! identical from run to run.

mod histogram;
mod isotonic;
mod platt;
mod temperature;
mod vector;

pub use histogram::HistogramParams;
pub use isotonic::{IsotonicMap, IsotonicParams};
pub use platt::{PlattMap, PlattParams};
pub use temperature::{TemperatureParams, MAX_TEMPERATURE, MIN_TEMPERATURE};
pub(crate) use temperature::TemperatureBounds;
pub use vector::VectorParams;

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::softmax::{logsumexp, softmax_in_place, DEFAULT_EPSILON};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// The calibration methods, with stable snake_case names (`none`, `ts`, `resoftmax_ts`, `vector`,
/// `platt`, `histogram`, `isotonic`) used on the command line and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibratorKind {
    /// No calibration: the input probabilities (softmax of logits), as a baseline.
    None,
    /// Temperature scaling `softmax(z / T)` (invert-softmax TS on probabilities).
    Ts,
    /// The re-softmax control `softmax(p / T)` on probabilities.
    ResoftmaxTs,
    /// Vector scaling `softmax(w ⊙ z + b)`.
    Vector,
    /// Platt scaling: binary, or one-vs-rest and renormalised for more than two classes.
    Platt,
    /// One-vs-rest histogram binning, renormalised.
    Histogram,
    /// One-vs-rest isotonic regression, renormalised.
    Isotonic,
}

impl CalibratorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::Ts,
        Self::ResoftmaxTs,
        Self::Vector,
        Self::Platt,
        Self::Histogram,
        Self::Isotonic,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ts => "ts",
            Self::ResoftmaxTs => "resoftmax_ts",
            Self::Vector => "vector",
            Self::Platt => "platt",
            Self::Histogram => "histogram",
            Self::Isotonic => "isotonic",
        }
    }

    /// Whether this kind can be fitted on scores of `input` kind (only `resoftmax_ts` cannot: it
    /// is defined on probabilities).
    pub fn applies_to(self, input: InputKind) -> bool {
        !(self == Self::ResoftmaxTs && input == InputKind::Logits)
    }
}

/// The kinds that apply to scores of `input` kind, in [`CalibratorKind::ALL`] order.
pub fn kinds_for(input: InputKind) -> Vec<CalibratorKind> {
    CalibratorKind::ALL
        .into_iter()
        .filter(|k| k.applies_to(input))
        .collect()
}

impl fmt::Display for CalibratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CalibratorKind {
    type Err = CalibError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                CalibError::InvalidParameter {
                    name: "calibrator",
                    reason: format!(
                        "unknown calibrator {s:?}; expected one of {}",
                        names.join(", ")
                    ),
                }
            })
    }
}

/// What the scores are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Rows are probability distributions (values in `[0, 1]`, summing to 1).
    Probabilities,
    /// Rows are unnormalised logits (any finite values).
    Logits,
}

impl InputKind {
    /// The stable name: `probabilities` or `logits`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Probabilities => "probabilities",
            Self::Logits => "logits",
        }
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InputKind {
    type Err = CalibError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "probabilities" => Ok(Self::Probabilities),
            "logits" => Ok(Self::Logits),
            _ => Err(CalibError::InvalidParameter {
                name: "input_kind",
                reason: format!("unknown input kind {s:?}; expected probabilities or logits"),
            }),
        }
    }
}

/// Fitting options. [`FitOptions::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// ε of invert softmax, the log-odds floor on probability input and the floor of `p_y` in
    /// every NLL (default [`DEFAULT_EPSILON`]); must be in `(0, 1)`.
    pub epsilon: f64,
    /// The smallest temperature `ts` and `resoftmax_ts` may return (default
    /// [`MIN_TEMPERATURE`]); positive.
    pub min_temperature: f64,
    /// The largest temperature (default [`MAX_TEMPERATURE`]); above `min_temperature`.
    pub max_temperature: f64,
    /// Allowed `|row sum − 1|` of probability input (default 0.01).
    pub probability_tolerance: f64,
    /// Number of equal-width bins of `histogram` (default 15).
    pub histogram_bins: usize,
    /// Platt's target smoothing: targets `(N₊+1)/(N₊+2)` and `1/(N₋+2)` instead of 1 and 0
    /// (default true; keeps the fit finite on separable data).
    pub platt_target_smoothing: bool,
    /// Strength λ of the L2 penalty `λ/2 (‖w − 1/T‖² + ‖b‖²)` of `vector`, anchored at the
    /// temperature-scaling solution (default 1e-4); must be positive and finite.
    pub vector_l2: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            epsilon: DEFAULT_EPSILON,
            min_temperature: MIN_TEMPERATURE,
            max_temperature: MAX_TEMPERATURE,
            probability_tolerance: 0.01,
            histogram_bins: 15,
            platt_target_smoothing: true,
            vector_l2: 1e-4,
        }
    }
}

impl FitOptions {
    fn validate(&self) -> Result<()> {
        let invalid = |name, reason: String| Err(CalibError::InvalidParameter { name, reason });
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return invalid(
                "epsilon",
                format!("must be in (0, 1), got {}", self.epsilon),
            );
        }
        if !(self.min_temperature > 0.0
            && self.max_temperature.is_finite()
            && self.min_temperature < self.max_temperature)
        {
            return invalid(
                "temperature bounds",
                format!(
                    "need 0 < min < max < ∞, got [{}, {}]",
                    self.min_temperature, self.max_temperature
                ),
            );
        }
        if !(0.0..1.0).contains(&self.probability_tolerance) {
            return invalid(
                "probability_tolerance",
                format!("must be in [0, 1), got {}", self.probability_tolerance),
            );
        }
        if self.histogram_bins == 0 {
            return invalid("histogram_bins", "must be at least 1".into());
        }
        if !(self.vector_l2 > 0.0 && self.vector_l2.is_finite()) {
            return invalid(
                "vector_l2",
                format!("must be positive and finite, got {}", self.vector_l2),
            );
        }
        Ok(())
    }
}

/// What a calibrator was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Rows of the calibration data.
    pub n_rows: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// The ε of the fit (lifting zero probabilities, and flooring `p_y` in its NLL);
    /// `None` only in results written before every kind recorded it.
    pub epsilon: Option<f64>,
    /// Gold-label count of each class in the calibration data.
    pub class_counts: Vec<usize>,
    /// Mean NLL of the uncalibrated probabilities on the calibration data (see [`mean_nll`]).
    pub nll_before: f64,
    /// Mean NLL of the calibrated probabilities on the calibration data.
    pub nll_after: f64,
}

/// The parameters of a fitted calibrator, tagged by `method`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum CalibratorParams {
    /// `none`: no parameters.
    Identity,
    /// `ts` and `resoftmax_ts`.
    Temperature(TemperatureParams),
    /// `vector`.
    Vector(VectorParams),
    /// `platt`.
    Platt(PlattParams),
    /// `histogram`.
    Histogram(HistogramParams),
    /// `isotonic`.
    Isotonic(IsotonicParams),
}

/// Whether a calibrator's parameters are a fit, or something the reader must be told about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitStatus {
    /// An interior optimum (or a calibrator without a search bound).
    #[default]
    Fitted,
    /// The temperature stopped at the lower search bound.
    AtLowerBound,
    /// The temperature stopped at the upper search bound.
    AtUpperBound,
    /// Every temperature gives the same NLL.
    NotIdentifiable,
}

impl FitStatus {
    /// The stable name (`fitted`, `at_lower_bound`, `at_upper_bound`, `not_identifiable`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fitted => "fitted",
            Self::AtLowerBound => "at_lower_bound",
            Self::AtUpperBound => "at_upper_bound",
            Self::NotIdentifiable => "not_identifiable",
        }
    }

    /// Whether the parameters are an actual fit.
    pub fn is_fit(self) -> bool {
        self == Self::Fitted
    }

    /// What the status means, in one sentence for reports (`None` for a fit).
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            Self::Fitted => None,
            Self::AtUpperBound => Some(
                "the temperature stopped at the upper search bound: no temperature helps, the \
                 confidence carries no ranking information about the label (or --max-temperature \
                 is too tight); T is the bound, not a fit",
            ),
            Self::AtLowerBound => Some(
                "the temperature stopped at the lower search bound: on the calibration part the \
                 most confident label was (nearly) always right, so sharpening kept helping (or \
                 --min-temperature is too tight); T is the bound, not a fit",
            ),
            Self::NotIdentifiable => Some(
                "not identifiable: every answer is uniform, so every temperature gives the same \
                 NLL; T = 1 is a convention, not a fit",
            ),
        }
    }
}

/// A fitted calibration map with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedCalibrator {
    kind: CalibratorKind,
    input_kind: InputKind,
    provenance: Provenance,
    params: CalibratorParams,
}

/// Fits a calibrator of `kind` on `scores` (of `input_kind`) and gold `labels` (class indices,
/// one per row).
///
/// Fails on empty data, mismatched or out-of-range labels, non-finite scores, probability input
/// outside `[0, 1]` or not summing to 1, invalid options, or `resoftmax_ts` on logits.
pub fn fit(
    kind: CalibratorKind,
    input_kind: InputKind,
    scores: &ScoreMatrix,
    labels: &[usize],
    options: &FitOptions,
) -> Result<FittedCalibrator> {
    options.validate()?;
    if !kind.applies_to(input_kind) {
        return Err(CalibError::NotApplicable(format!(
            "calibrator {kind} is defined on probabilities, not {input_kind}"
        )));
    }
    if scores.n_rows() == 0 {
        return Err(CalibError::Empty("calibration scores have no rows".into()));
    }
    validate_scores(input_kind, scores, options.probability_tolerance)?;
    scores.check_labels(labels)?;
    let view = InputView {
        input_kind,
        epsilon: options.epsilon,
    };
    let bounds = TemperatureBounds::new(options.min_temperature, options.max_temperature);
    let params = match kind {
        CalibratorKind::None => CalibratorParams::Identity,
        CalibratorKind::Ts => CalibratorParams::Temperature(temperature::fit(
            &*view.logits(scores)?,
            labels,
            bounds,
        )),
        CalibratorKind::ResoftmaxTs => {
            CalibratorParams::Temperature(temperature::fit(scores, labels, bounds))
        }
        CalibratorKind::Vector => CalibratorParams::Vector(vector::fit(
            &*view.logits(scores)?,
            labels,
            options.vector_l2,
        )?),
        CalibratorKind::Platt => CalibratorParams::Platt(platt::fit(
            &view.log_odds(scores)?,
            labels,
            options.platt_target_smoothing,
        )),
        CalibratorKind::Histogram => CalibratorParams::Histogram(histogram::fit(
            &view.probabilities(scores)?,
            labels,
            options.histogram_bins,
        )),
        CalibratorKind::Isotonic => {
            CalibratorParams::Isotonic(isotonic::fit(&view.probabilities(scores)?, labels))
        }
    };
    let mut class_counts = vec![0; scores.n_classes()];
    labels.iter().for_each(|&y| class_counts[y] += 1);
    let mut fitted = FittedCalibrator {
        kind,
        input_kind,
        provenance: Provenance {
            n_rows: scores.n_rows(),
            n_classes: scores.n_classes(),
            epsilon: Some(options.epsilon),
            class_counts,
            nll_before: view.uncalibrated_nll(scores, labels),
            nll_after: 0.0,
        },
        params,
    };
    fitted.provenance.nll_after = mean_nll(&fitted.transform(scores)?, labels, options.epsilon)?;
    Ok(fitted)
}

impl FittedCalibrator {
    /// The method.
    pub fn kind(&self) -> CalibratorKind {
        self.kind
    }

    /// The kind of scores it was fitted on and applies to.
    pub fn input_kind(&self) -> InputKind {
        self.input_kind
    }

    /// What it was fitted on.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The fitted parameters.
    pub fn parameters(&self) -> &CalibratorParams {
        &self.params
    }

    /// Whether the parameters are a fit (see [`FitStatus`]).
    pub fn fit_status(&self) -> FitStatus {
        match &self.params {
            CalibratorParams::Temperature(t) if !t.identifiable => FitStatus::NotIdentifiable,
            CalibratorParams::Temperature(t) if t.at_bound && t.temperature <= t.bounds[0] => FitStatus::AtLowerBound,
            CalibratorParams::Temperature(t) if t.at_bound => FitStatus::AtUpperBound,
            _ => FitStatus::Fitted,
        }
    }

    /// The parameters as JSON for reports, e.g. `{"method": "temperature", "temperature": 1.7,
    /// ...}`.
    pub fn params(&self) -> serde_json::Value {
        // Serialising plain structs of numbers and vectors cannot fail.
        serde_json::to_value(&self.params).unwrap_or(serde_json::Value::Null)
    }

    /// Calibrated probabilities for `scores` (same input kind and number of classes as the fit;
    /// probability rows must be within the default tolerance 0.01 of summing to 1): every row
    /// sums to 1.
    pub fn apply(&self, scores: &ScoreMatrix) -> Result<ScoreMatrix> {
        if scores.n_classes() != self.provenance.n_classes {
            return Err(CalibError::Shape {
                what: format!(
                    "classes of the scores given to the {} calibrator",
                    self.kind
                ),
                expected: self.provenance.n_classes,
                found: scores.n_classes(),
            });
        }
        validate_scores(
            self.input_kind,
            scores,
            FitOptions::default().probability_tolerance,
        )?;
        self.transform(scores)
    }

    fn transform(&self, scores: &ScoreMatrix) -> Result<ScoreMatrix> {
        let view = InputView {
            input_kind: self.input_kind,
            epsilon: self.provenance.epsilon.unwrap_or(DEFAULT_EPSILON),
        };
        let k = self.provenance.n_classes;
        match &self.params {
            CalibratorParams::Identity => view.probabilities(scores),
            CalibratorParams::Temperature(t) if self.kind == CalibratorKind::ResoftmaxTs => {
                t.apply(scores)
            }
            CalibratorParams::Temperature(t) => t.apply(&*view.logits(scores)?),
            CalibratorParams::Vector(v) => v.apply(&*view.logits(scores)?),
            CalibratorParams::Platt(p) => p.apply(&view.log_odds(scores)?),
            CalibratorParams::Histogram(h) => h.apply(&view.probabilities(scores)?, k),
            CalibratorParams::Isotonic(i) => i.apply(&view.probabilities(scores)?, k),
        }
    }
}

/// Mean negative log-likelihood `−mean ln max(p̂_y, ε)`: the floor is the ε of the fit, the
/// same as the `nll` metric's, so a zero probability on the gold label costs `−ln ε`.
pub fn mean_nll(probabilities: &ScoreMatrix, labels: &[usize], epsilon: f64) -> Result<f64> {
    probabilities.check_labels(labels)?;
    if labels.is_empty() {
        return Err(CalibError::Empty("NLL of zero rows".into()));
    }
    let total: f64 = probabilities
        .rows()
        .zip(labels)
        .map(|(row, &y)| -row[y].max(epsilon).ln())
        .sum();
    Ok(total / labels.len() as f64)
}

fn validate_scores(input_kind: InputKind, scores: &ScoreMatrix, tolerance: f64) -> Result<()> {
    scores.check_finite()?;
    if input_kind == InputKind::Probabilities {
        scores.check_probabilities(tolerance)?;
    }
    Ok(())
}

/// Turns validated scores of one input kind into what each calibrator works on.
struct InputView {
    input_kind: InputKind,
    epsilon: f64,
}

impl InputView {
    /// Logits: the scores themselves, or `ln(max(p, ε))` of probabilities (the invert-softmax
    /// trick of [`crate::softmax::invert_softmax`], row-parallel on validated input).
    fn logits<'a>(&self, scores: &'a ScoreMatrix) -> Result<Cow<'a, ScoreMatrix>> {
        match self.input_kind {
            InputKind::Logits => Ok(Cow::Borrowed(scores)),
            InputKind::Probabilities => {
                let epsilon = self.epsilon;
                map_rows(scores, |row| {
                    row.iter_mut().for_each(|p| *p = p.max(epsilon).ln())
                })
                .map(Cow::Owned)
            }
        }
    }

    /// Probabilities: `softmax` of the logits of [`Self::logits`] — on probability input the
    /// ε-lifted, renormalised rows, computed exactly as `ts` computes them at T = 1.
    fn probabilities(&self, scores: &ScoreMatrix) -> Result<ScoreMatrix> {
        match self.input_kind {
            InputKind::Logits => map_rows(scores, softmax_in_place),
            InputKind::Probabilities => {
                let epsilon = self.epsilon;
                map_rows(scores, |row| {
                    row.iter_mut().for_each(|p| *p = p.max(epsilon).ln());
                    softmax_in_place(row);
                })
            }
        }
    }

    /// [`mean_nll`] of [`Self::probabilities`], computed row-parallel without building the
    /// matrix: `ln Σ e^z − z_y` of the logits of [`Self::logits`], capped at `−ln ε` like the
    /// floor of [`mean_nll`].
    fn uncalibrated_nll(&self, scores: &ScoreMatrix, labels: &[usize]) -> f64 {
        let k = scores.n_classes();
        let values = scores.values();
        let cap = -self.epsilon.ln();
        let epsilon = self.epsilon;
        let partial = map_row_chunks(scores.n_rows(), |rows| {
            let mut lifted = vec![0.0; k];
            rows.map(|i| {
                let row = &values[i * k..(i + 1) * k];
                let logits = match self.input_kind {
                    InputKind::Logits => row,
                    InputKind::Probabilities => {
                        lifted.iter_mut().zip(row).for_each(|(z, p)| *z = p.max(epsilon).ln());
                        &lifted[..]
                    }
                };
                (logsumexp(logits) - logits[labels[i]]).min(cap)
            })
            .sum::<f64>()
        });
        partial.iter().sum::<f64>() / scores.n_rows() as f64
    }

    /// One-vs-rest log-odds `ln p_k − ln(1 − p_k)` of every class.
    fn log_odds(&self, scores: &ScoreMatrix) -> Result<ScoreMatrix> {
        match self.input_kind {
            InputKind::Logits => map_rows(scores, logit_log_odds_in_place),
            InputKind::Probabilities => {
                let epsilon = self.epsilon;
                map_rows(&self.probabilities(scores)?, |row| {
                    let odds: Vec<f64> = (0..row.len())
                        .map(|k| row[k].max(epsilon).ln() - rest_mass(row, k).max(epsilon).ln())
                        .collect();
                    row.copy_from_slice(&odds);
                })
            }
        }
    }
}

/// `1 − p_k` of a normalised row, summed from the other entries when `p_k` is large so that it
/// keeps its relative precision.
fn rest_mass(row: &[f64], k: usize) -> f64 {
    if row[k] > 0.5 {
        row.iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .map(|(_, p)| p)
            .sum()
    } else {
        1.0 - row[k]
    }
}

/// Replaces a row of logits by the exact one-vs-rest log-odds `z_k − ln Σ_{j≠k} e^{z_j}`
/// (`ln p_k − ln(1 − p_k)` via `ln_1p` when `p_k ≤ 1/2`, the direct sum otherwise). A single
/// class has no rest; its log-odds are set to 0.
fn logit_log_odds_in_place(row: &mut [f64]) {
    let lse = logsumexp(row);
    let odds: Vec<f64> = (0..row.len())
        .map(|k| {
            let log_p = row[k] - lse;
            if log_p.exp() <= 0.5 {
                log_p - (-log_p.exp()).ln_1p()
            } else {
                let rest: Vec<f64> = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != k)
                    .map(|(_, &z)| z)
                    .collect();
                match logsumexp(&rest) {
                    f64::NEG_INFINITY => 0.0,
                    rest_lse => row[k] - rest_lse,
                }
            }
        })
        .collect();
    row.copy_from_slice(&odds);
}

/// Rows per parallel chunk in the fitting loops.
const CHUNK_ROWS: usize = 2048;

/// Computes `per_chunk` over fixed row ranges in parallel and returns the results in row order,
/// so that callers can add them up deterministically.
fn map_row_chunks<T: Send>(n_rows: usize, per_chunk: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
    (0..n_rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| per_chunk(c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(n_rows)))
        .collect()
}

/// A copy of `scores` with `transform` applied to every row, rows processed in parallel.
fn map_rows(scores: &ScoreMatrix, transform: impl Fn(&mut [f64]) + Sync) -> Result<ScoreMatrix> {
    let k = scores.n_classes();
    let mut values = scores.values().to_vec();
    values
        .par_chunks_mut(k * CHUNK_ROWS)
        .for_each(|chunk| chunk.chunks_exact_mut(k).for_each(&transform));
    ScoreMatrix::new(k, values)
}

/// Divides `row` by its sum; when the sum is zero or not finite, restores `input` instead.
fn renormalise_or_restore(row: &mut [f64], input: &[f64]) {
    let sum: f64 = row.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        row.iter_mut().for_each(|v| *v /= sum);
    } else {
        row.copy_from_slice(input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in CalibratorKind::ALL {
            assert_eq!(kind.name().parse::<CalibratorKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        assert!("temperature".parse::<CalibratorKind>().is_err());
        assert_eq!("logits".parse::<InputKind>().unwrap(), InputKind::Logits);
        assert!(!kinds_for(InputKind::Logits).contains(&CalibratorKind::ResoftmaxTs));
        assert_eq!(kinds_for(InputKind::Probabilities).len(), 7);
    }

    #[test]
    fn logit_log_odds_match_probabilities() {
        let mut row = vec![1.0, -0.5, 2.0];
        let p = crate::softmax::softmax(&row);
        logit_log_odds_in_place(&mut row);
        for (s, p) in row.iter().zip(&p) {
            assert!((s - (p / (1.0 - p)).ln()).abs() < 1e-12);
        }
        // Saturated: the exact form keeps the large log-odds instead of dividing by zero.
        let mut row = vec![800.0, 0.0];
        logit_log_odds_in_place(&mut row);
        assert_eq!(row, vec![800.0, -800.0]);
    }

    #[test]
    fn uncalibrated_nll_equals_mean_nll_of_the_probabilities() {
        let logits = ScoreMatrix::from_rows(&[vec![1.0, -2.0, 0.5], vec![0.0, 3.0, -1.0]]).unwrap();
        let probabilities =
            ScoreMatrix::from_rows(&[vec![0.2, 0.0, 0.8], vec![0.5, 0.25, 0.25]]).unwrap();
        for (input_kind, scores, labels) in [
            (InputKind::Logits, &logits, [2, 0]),
            (InputKind::Probabilities, &probabilities, [0, 1]),
            (InputKind::Probabilities, &probabilities, [1, 1]),
        ] {
            let view = InputView {
                input_kind,
                epsilon: DEFAULT_EPSILON,
            };
            let direct = view.uncalibrated_nll(scores, &labels);
            let through_matrix =
                mean_nll(&view.probabilities(scores).unwrap(), &labels, DEFAULT_EPSILON).unwrap();
            assert!(
                (direct - through_matrix).abs() < 1e-12,
                "{direct} vs {through_matrix}"
            );
        }
    }

    /// Verbalized answers with zeros, some one-hot and wrong (the case where two floors once
    /// made `ts` "improve" on `none` by ~14 nats at T = 1).
    fn answers_with_zeros() -> (ScoreMatrix, Vec<usize>) {
        let rows = [
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.5, 0.5, 0.0],
            vec![0.2, 0.3, 0.5],
            vec![0.0, 0.0, 1.0],
        ];
        (ScoreMatrix::from_rows(&rows).unwrap(), vec![1, 1, 2, 0, 2])
    }

    #[test]
    fn ts_at_temperature_one_equals_none_on_inputs_with_zeros() {
        let (scores, labels) = answers_with_zeros();
        for epsilon in [1e-8, 1e-6, 1e-3] {
            let options = FitOptions { epsilon, ..FitOptions::default() };
            let none = fit(CalibratorKind::None, InputKind::Probabilities, &scores, &labels, &options).unwrap();
            let mut ts = fit(CalibratorKind::Ts, InputKind::Probabilities, &scores, &labels, &options).unwrap();
            ts.params = CalibratorParams::Temperature(TemperatureParams {
                temperature: 1.0,
                at_bound: false,
                identifiable: true,
                bounds: [MIN_TEMPERATURE, MAX_TEMPERATURE],
                iterations: 0,
            });
            let (a, b) = (none.apply(&scores).unwrap(), ts.apply(&scores).unwrap());
            assert_eq!(a, b, "ε = {epsilon}");
            let metrics = crate::metrics::MetricOptions::with_epsilon(epsilon);
            let (ma, mb) = (
                crate::metrics::compute_all_with(&a, &labels, &metrics).unwrap(),
                crate::metrics::compute_all_with(&b, &labels, &metrics).unwrap(),
            );
            for ((metric, x), (_, y)) in ma.iter().zip(mb.iter()) {
                assert!(x == y || (x.is_nan() && y.is_nan()), "{metric}: {x} vs {y}");
            }
            // The hand value of row 0 (one-hot on the wrong label): p_y = ε/(1 + 2ε), floored at
            // ε, costs −ln ε; provenance and metric agree.
            let lifted_gold = epsilon / (1.0 + 2.0 * epsilon);
            assert!((a.row(0)[1] - lifted_gold).abs() < 1e-15 * lifted_gold.max(1.0));
            assert_eq!(none.provenance().nll_before, none.provenance().nll_after);
            assert!((ma.nll - none.provenance().nll_before).abs() < 1e-12);
            assert_eq!(none.provenance().epsilon, Some(epsilon));
        }
    }

    #[test]
    fn confident_answers_independent_of_labels_drive_t_to_the_upper_bound() {
        // One-hot answers that match the gold label no more often than chance.
        let rows: Vec<Vec<f64>> = (0..30).map(|i| {
            let mut row = vec![0.0; 3];
            row[i % 3] = 1.0;
            row
        }).collect();
        let labels: Vec<usize> = (0..30).map(|i| (i / 3) % 3).collect();
        let scores = ScoreMatrix::from_rows(&rows).unwrap();
        let ts = fit(CalibratorKind::Ts, InputKind::Probabilities, &scores, &labels, &FitOptions::default()).unwrap();
        let CalibratorParams::Temperature(t) = ts.parameters() else { panic!("{:?}", ts.parameters()) };
        assert!(t.at_bound && t.identifiable);
        assert_eq!(t.temperature, MAX_TEMPERATURE);
        assert_eq!(ts.fit_status(), FitStatus::AtUpperBound);
    }

    #[test]
    fn uniform_answers_leave_the_temperature_not_identifiable() {
        let scores = ScoreMatrix::from_rows(&vec![vec![0.25; 4]; 6]).unwrap();
        let labels = [0, 1, 2, 3, 0, 1];
        for kind in [CalibratorKind::Ts, CalibratorKind::ResoftmaxTs] {
            let fitted = fit(kind, InputKind::Probabilities, &scores, &labels, &FitOptions::default()).unwrap();
            let CalibratorParams::Temperature(t) = fitted.parameters() else { panic!() };
            assert!(!t.identifiable && !t.at_bound, "{kind}");
            assert_eq!(fitted.fit_status(), FitStatus::NotIdentifiable);
        }
    }

    #[test]
    fn mean_nll_is_hand_value() {
        let p = ScoreMatrix::from_rows(&[vec![0.5, 0.5], vec![0.25, 0.75]]).unwrap();
        let nll = mean_nll(&p, &[0, 1], DEFAULT_EPSILON).unwrap();
        assert!((nll - (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0).abs() < 1e-15);
    }
}
