//! The short table `candor calibrate` prints on the terminal: accuracy, ECE, Brier, NLL and the
//! fitted temperature per signal and calibrator.

use candor_results::CalibrationResults;
use std::fmt::Write;

/// A short table for the terminal: accuracy, ECE, Brier, NLL and temperature per signal and
/// calibrator (the full results are in calibration.json and `candor report`).
pub fn summary_table(results: &CalibrationResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {} ({}): {} calibration / {} test examples",
        results.run.model, results.run.dataset, results.run.split, results.n_calibration, results.n_test
    );
    let _ = writeln!(out, "{:<11} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9}", "signal", "calibrator", "accuracy", "ece15", "brier", "nll", "T");
    for signal in &results.signals {
        for calibrator in &signal.calibrators {
            let metric = |name: &str| {
                calibrator.metrics.get(name).and_then(|e| e.value).map_or("n/a".to_string(), |v| format!("{v:.4}"))
            };
            let temperature = calibrator
                .params
                .get("temperature")
                .and_then(serde_json::Value::as_f64)
                .map_or(String::new(), |t| format!("{t:.4}"));
            let _ = writeln!(
                out,
                "{:<11} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9}",
                signal.signal,
                calibrator.calibrator,
                metric("accuracy"),
                metric("ece_15_equal_width"),
                metric("brier"),
                metric("nll"),
                temperature
            );
        }
    }
    out
}
