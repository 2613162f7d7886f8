//! The cross-run table of `candor summarize`: one Markdown table across several calibrated runs (e.g. one per dataset),
//! for a README or a paper: per run and signal, the parse rate and accuracy, and ECE / Brier /
//! NLL on the test part before calibration (`none`), after the paper's invert-softmax temperature
//! scaling (`ts`) and after its negative control (`resoftmax_ts`, verbalized only), with the
//! model time the run took. Every number comes from the runs' `calibration.json`.

use candor_results::{CalibrationResults, CalibratorResults, FitStatus, SignalResults};
use std::fmt::Write;

/// Calibrators shown per signal, in order.
const CALIBRATORS: [&str; 3] = ["none", "ts", "resoftmax_ts"];

/// The Markdown table of `runs`.
pub fn table(runs: &[CalibrationResults]) -> String {
    let mut out = String::from(
        "| dataset | model time | calibration / test | signal | parsed | calibrator | accuracy | ECE (15 bins) | Brier | NLL |\n\
         | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for results in runs {
        for signal in &results.signals {
            for calibrator in CALIBRATORS.iter().filter_map(|name| signal.calibrators.iter().find(|c| c.calibrator == *name)) {
                let _ = writeln!(
                    out,
                    "| {} ({}) | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
                    results.run.dataset,
                    results.run.split,
                    minutes(results.run.model_seconds, results.run.examples),
                    signal.n_calibration,
                    signal.n_test,
                    signal_label(signal),
                    parse_rate(signal),
                    calibrator_label(calibrator),
                    value(calibrator, "accuracy"),
                    value(calibrator, "ece_15_equal_width"),
                    value(calibrator, "brier"),
                    value(calibrator, "nll"),
                );
            }
        }
    }
    out
}

/// `12.3 min (300 ex.)`: the sum of the run's per-example times.
fn minutes(seconds: f64, examples: usize) -> String {
    format!("{:.1} min ({examples} ex.)", seconds / 60.0)
}

/// Share of verbalized answers that could be read (every status but `unparseable`); `—` for logits.
fn parse_rate(signal: &SignalResults) -> String {
    match &signal.well_formedness {
        Some(table) if table.total > 0 => {
            let unparseable = table.status_counts.get("unparseable").copied().unwrap_or(0);
            format!("{:.1}%", 100.0 * (table.total - unparseable) as f64 / table.total as f64)
        }
        _ => "—".to_string(),
    }
}

/// The signal's name, marked when it is degenerate.
fn signal_label(signal: &SignalResults) -> String {
    match &signal.diagnostics {
        Some(d) if d.degenerate => format!(
            "{} (degenerate: {:.0}% uniform, {:.0}% identical answers)",
            signal.signal,
            100.0 * d.constant_share,
            100.0 * d.modal_share
        ),
        _ => signal.signal.clone(),
    }
}

/// The calibrator's name, with its fitted temperature where it has one, and what it is when it
/// is no fit (a search bound, or not identifiable).
fn calibrator_label(calibrator: &CalibratorResults) -> String {
    let Some(t) = calibrator.params.get("temperature").and_then(serde_json::Value::as_f64) else {
        return calibrator.calibrator.clone();
    };
    let note = match calibrator.fit_status {
        FitStatus::Fitted => String::new(),
        FitStatus::AtUpperBound => ", upper bound: no fit".to_string(),
        FitStatus::AtLowerBound => ", lower bound: no fit".to_string(),
        FitStatus::NotIdentifiable => ", not identifiable".to_string(),
    };
    format!("{} (T = {t:.3}{note})", calibrator.calibrator)
}

/// `0.1234 [0.1000, 0.1500]`, or `n/a`.
fn value(calibrator: &CalibratorResults, metric: &str) -> String {
    let Some(estimate) = calibrator.metrics.get(metric) else { return "n/a".to_string() };
    match (estimate.value, estimate.ci) {
        (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        (Some(v), None) => format!("{v:.3}"),
        _ => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candor_experiment::analysis::AnalysisConfig;
    use candor_experiment::calibrate::{calibrate, CalibrateConfig};
    use candor_experiment::eval::UnparseablePolicy;
    use std::path::Path;

    /// calibrate on the fixture runs of tests/fixtures/calibrate (copied: calibrate reads only).
    fn fixture_results() -> CalibrationResults {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/calibrate");
        calibrate(&CalibrateConfig {
            run: fixtures.join("test-run"),
            calibration_run: Some(fixtures.join("calibration-run")),
            calib_fraction: 0.5,
            analysis: AnalysisConfig { bootstrap: 0, ..AnalysisConfig::default() },
            unparseable: UnparseablePolicy::Uniform,
            target_precision: vec![0.9],
        })
        .unwrap()
        .results
    }

    #[test]
    fn one_row_per_signal_and_shown_calibrator_with_hand_checked_cells() {
        let text = table(&[fixture_results()]);
        let rows: Vec<&str> = text.lines().skip(2).collect();
        // verbalized: none, ts, resoftmax_ts; logits: none, ts (re-softmax is for probabilities).
        assert_eq!(rows.len(), 5, "{text}");
        let cells = |row: &str| row.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
        let verbalized_none = cells(rows[0]);
        // 20 of the 21 verbalized answers could be read; 7 of 12 test answers are right outright,
        // the unparseable one (uniform, gold among 3 tied) counts 1/3 and test-5's 2-way tie
        // holding its gold label 1/2: (7 + 1/3 + 1/2)/12 = 0.653. (When ties went to the first
        // label, the uniform answer "predicted" its gold label 0 and this read 0.667.)
        assert_eq!(verbalized_none[4], "95.2%");
        assert_eq!(verbalized_none[5], "none");
        assert_eq!(verbalized_none[6], "0.653");
        assert_eq!(verbalized_none[2], "9 / 12");
        // 21 records of 100 ms each in the two runs, 12 in this one.
        assert_eq!(verbalized_none[1], "0.0 min (12 ex.)");
        let logits_none = cells(rows[3]);
        assert_eq!((logits_none[3].as_str(), logits_none[4].as_str(), logits_none[6].as_str()), ("logits", "—", "0.833"));
        assert!(cells(rows[1])[5].starts_with("ts (T = "));
        assert!(cells(rows[2])[5].starts_with("resoftmax_ts (T = "));
    }

    #[test]
    fn bounds_and_degenerate_signals_are_flagged() {
        let text = table(&[crate::fixture::results()]);
        let resoftmax = text.lines().find(|l| l.contains("resoftmax_ts")).unwrap();
        assert!(resoftmax.contains("resoftmax_ts (T = 100.000, upper bound: no fit)"), "{resoftmax}");
        assert!(resoftmax.contains("verbalized (degenerate: 75% uniform, 75% identical answers)"), "{resoftmax}");
    }
}
