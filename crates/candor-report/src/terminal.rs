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
    // Wide enough for the longest signal name (`verbalized_permuted`, ...).
    let width = results.signals.iter().map(|signal| signal.signal.chars().count()).fold("signal".len(), usize::max);
    let _ = writeln!(out, "{:<width$} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9}", "signal", "calibrator", "accuracy", "ece15", "brier", "nll", "T");
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
                "{:<width$} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9}",
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

#[cfg(test)]
mod tests {
    use super::summary_table;

    #[test]
    fn the_signal_column_is_as_wide_as_the_longest_name() {
        let mut results = crate::fixture::results();
        results.signals[0].signal = "verbalized_permuted".into();
        let table = summary_table(&results);
        let lines: Vec<&str> = table.lines().skip(1).collect();
        // 19 characters of the longest name and a space, then every calibrator column starts.
        assert!(lines[0].starts_with("signal              calibrator"), "{table}");
        for line in &lines[1..] {
            assert_eq!(line.chars().nth(19), Some(' '), "{line}");
            assert_ne!(line.chars().nth(20), Some(' '), "{line}");
        }
    }
}
