//! The flags `candor eval` and `candor calibrate` share: seed, bootstrap, ε, the temperature's
//! search bounds, which calibrators and metrics to compute, the interval method and the ε
//! sweep — one definition, flattened into both commands.

use candor_calib::calibrators::{CalibratorKind, MAX_TEMPERATURE, MIN_TEMPERATURE};
use candor_calib::metrics::Metric;
use candor_experiment::analysis::AnalysisConfig;

/// The shared flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalysisFlags {
    /// Seed of the split and of every bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples of every interval (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Refit each calibrator on a resample of the calibration part for every test resample, so
    /// the intervals include the variance of fitting (slower: one fit per resample).
    #[arg(long)]
    pub bootstrap_refit: bool,
    /// ε: zero probabilities are lifted to ε before taking logs (invert softmax, the
    /// uncalibrated baseline alike), and every NLL floors the gold probability at ε.
    #[arg(long, default_value_t = candor_calib::softmax::DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// The ε values of the sweep on probability signals (ts fitted and measured under each).
    #[arg(long, value_delimiter = ',', default_value = "1e-8,1e-7,1e-6,1e-5,1e-4,1e-3,1e-2")]
    pub epsilon_sweep: Vec<f64>,
    /// Skip the ε sweep.
    #[arg(long)]
    pub no_epsilon_sweep: bool,
    /// The smallest temperature the fit may return (a fit stopping here is flagged).
    #[arg(long, default_value_t = MIN_TEMPERATURE)]
    pub min_temperature: f64,
    /// The largest temperature the fit may return (a fit stopping here is flagged).
    #[arg(long, default_value_t = MAX_TEMPERATURE)]
    pub max_temperature: f64,
    /// Calibrators to fit, comma-separated (none, ts, resoftmax_ts, vector, platt, histogram,
    /// isotonic); `none` is always measured. Default: every one that applies.
    #[arg(long, value_delimiter = ',')]
    pub calibrators: Option<Vec<CalibratorKind>>,
    /// Metrics to report, comma-separated, by their JSON names (accuracy, macro_f1, nll, brier,
    /// ece_15_equal_width, ece_10_equal_mass, classwise_ece, mce, rmsce, debiased_l2_ce,
    /// smooth_ece, auroc, aurc). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<Metric>>,
}

impl Default for AnalysisFlags {
    fn default() -> Self {
        let defaults = AnalysisConfig::default();
        Self {
            seed: defaults.seed,
            bootstrap: defaults.bootstrap,
            level: defaults.level,
            bootstrap_refit: false,
            epsilon: defaults.epsilon,
            epsilon_sweep: defaults.epsilon_sweep,
            no_epsilon_sweep: false,
            min_temperature: MIN_TEMPERATURE,
            max_temperature: MAX_TEMPERATURE,
            calibrators: None,
            metrics: None,
        }
    }
}

impl AnalysisFlags {
    /// The pipeline's options these flags describe.
    pub fn config(&self) -> AnalysisConfig {
        AnalysisConfig {
            seed: self.seed,
            bootstrap: self.bootstrap,
            level: self.level,
            epsilon: self.epsilon,
            temperature_bounds: [self.min_temperature, self.max_temperature],
            calibrators: self.calibrators.clone(),
            metrics: self.metrics.clone(),
            bootstrap_refit: self.bootstrap_refit,
            epsilon_sweep: if self.no_epsilon_sweep { Vec::new() } else { self.epsilon_sweep.clone() },
        }
    }
}
