//! The short table `candor calibrate` prints on the terminal: accuracy, ECE, Brier, NLL and the
//! fitted temperature per signal and calibrator, then a warning line for every degenerate signal
//! and every temperature that is no fit (marked `*` in the table).

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
            let mark = if calibrator.fit_status.is_fit() { "" } else { "*" };
            let temperature = calibrator
                .params
                .get("temperature")
                .and_then(serde_json::Value::as_f64)
                .map_or(String::new(), |t| format!("{t:.4}{mark}"));
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
    for signal in &results.signals {
        if let Some(d) = signal.diagnostics.as_ref().filter(|d| d.degenerate) {
            let _ = writeln!(
                out,
                "warning: {} is degenerate: {:.1}% of its answers are uniform, {:.1}% identical",
                signal.signal,
                100.0 * d.constant_share,
                100.0 * d.modal_share
            );
        }
        for calibrator in signal.calibrators.iter().filter(|c| !c.fit_status.is_fit()) {
            if let Some(explanation) = calibrator.fit_status.explanation() {
                let _ = writeln!(out, "* {} {}: {explanation}", signal.signal, calibrator.calibrator);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::summary_table;

    #[test]
    fn a_temperature_at_its_bound_is_marked_and_explained() {
        let table = summary_table(&crate::fixture::results());
        let row = |signal: &str, calibrator: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().take(2).eq([signal, calibrator]))
                .unwrap_or_else(|| panic!("{signal} {calibrator} in {table}"))
        };
        assert!(row("verbalized", "resoftmax_ts").ends_with("100.0000*"), "{table}");
        assert!(row("verbalized", "ts").ends_with("2.5000"), "{table}");
        assert!(table.contains("* verbalized resoftmax_ts: the temperature stopped at the upper search bound"), "{table}");
        assert!(table.contains("warning: verbalized is degenerate: 75.0% of its answers are uniform"), "{table}");
    }

    #[test]
    fn the_signal_column_is_as_wide_as_the_longest_name() {
        let mut results = crate::fixture::results();
        results.signals[0].signal = "verbalized_permuted".into();
        let table = summary_table(&results);
        let rows = results.signals.iter().map(|s| s.calibrators.len()).sum::<usize>();
        let lines: Vec<&str> = table.lines().skip(1).take(rows + 1).collect();
        // 19 characters of the longest name and a space, then every calibrator column starts.
        assert!(lines[0].starts_with("signal              calibrator"), "{table}");
        for line in &lines[1..] {
            assert_eq!(line.chars().nth(19), Some(' '), "{line}");
            assert_ne!(line.chars().nth(20), Some(' '), "{line}");
        }
    }
}
