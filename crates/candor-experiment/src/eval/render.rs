//! Output of `candor eval`: one JSON document for scripts (metric names are those of
//! `candor_calib::metrics::Metric`), or an aligned table for people.

use super::{CalibratorResult, EvalReport};
use candor_calib::bootstrap::{MetricDifference, MetricEstimate};
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// The JSON document: labels, split sizes, parse counts and per-calibrator metrics with CIs.
pub fn json(report: &EvalReport) -> Value {
    let data = &report.data;
    json!({
        "input": report.input,
        "input_field": report.input_field,
        "labels": data.labels,
        "n_rows": data.gold.len() + data.excluded,
        "n_calibration": report.n_calibration,
        "n_test": report.n_test,
        "calib_fraction": report.calib_fraction,
        "seed": report.analysis.seed,
        "epsilon": report.analysis.epsilon,
        "temperature_bounds": report.analysis.temperature_bounds,
        "bootstrap": {
            "resamples": report.analysis.bootstrap,
            "level": report.analysis.level,
            "method": report.analysis.interval_method(),
        },
        "parse": data.status_counts,
        "unparseable_policy": report.unparseable.name(),
        "excluded": data.excluded,
        "mean_sum_deviation": finite(data.mean_sum_deviation),
        "results": report.results.iter().map(result_json).collect::<Vec<_>>(),
        "epsilon_sweep": report.sweep,
    })
}

fn result_json(result: &CalibratorResult) -> Value {
    let metrics: Map<String, Value> = result
        .metrics
        .iter()
        .map(|m| (m.metric.name().to_string(), estimate_json(m)))
        .collect();
    let mut entry = json!({
        "calibrator": result.kind.name(),
        "params": result.params,
        "fit_status": result.status.name(),
        "metrics": metrics,
    });
    if let Some((low, high)) = result.temperature_ci {
        entry["temperature_ci"] = json!([low, high]);
    }
    if !result.versus_none.is_empty() {
        let differences: Map<String, Value> = result
            .versus_none
            .iter()
            .map(|d| (d.metric.name().to_string(), difference_json(d)))
            .collect();
        entry["difference_vs_none"] = Value::Object(differences);
    }
    entry
}

fn estimate_json(estimate: &MetricEstimate) -> Value {
    json!({
        "value": finite(Some(estimate.value)),
        "ci": interval(estimate.ci_low, estimate.ci_high),
    })
}

fn difference_json(difference: &MetricDifference) -> Value {
    json!({
        "value": finite(Some(difference.difference)),
        "ci": interval(difference.ci_low, difference.ci_high),
    })
}

fn interval(low: Option<f64>, high: Option<f64>) -> Value {
    match (low, high) {
        (Some(lo), Some(hi)) => json!([lo, hi]),
        _ => Value::Null,
    }
}

/// `null` for missing or non-finite numbers (JSON has no NaN).
fn finite(value: Option<f64>) -> Value {
    value.filter(|v| v.is_finite()).map_or(Value::Null, |v| json!(v))
}

/// The human-readable report: a header, then one row per metric and one column per calibrator
/// (`value [low, high]`), then the fitted temperatures.
pub fn table(report: &EvalReport) -> String {
    let mut out = String::new();
    let data = &report.data;
    let parse: Vec<String> = data.status_counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "input        {} ({} rows of `{}`)", report.input, data.gold.len() + data.excluded, report.input_field);
    let _ = writeln!(out, "labels       {}", data.labels.join(", "));
    let _ = writeln!(out, "read as      {}", parse.join(", "));
    if data.excluded > 0 {
        let _ = writeln!(out, "excluded     {} unparseable rows (--unparseable exclude)", data.excluded);
    }
    if let Some(deviation) = data.mean_sum_deviation {
        let _ = writeln!(out, "mean |Σp−1|  {deviation:.4}");
    }
    let analysis = &report.analysis;
    let _ = writeln!(
        out,
        "split        {} calibration / {} test rows (fraction {}, seed {})",
        report.n_calibration, report.n_test, report.calib_fraction, analysis.seed
    );
    let _ = writeln!(out, "ε            {:e} (zeros lifted to ε; every NLL floors p at ε)", analysis.epsilon);
    let _ = writeln!(
        out,
        "intervals    {}% {}, {} resamples\n",
        analysis.level * 100.0,
        analysis.interval_method(),
        analysis.bootstrap
    );

    let mut rows: Vec<Vec<String>> = vec![std::iter::once("metric".to_string())
        .chain(report.results.iter().map(|r| r.kind.name().to_string()))
        .collect()];
    for metric in analysis.metric_options().metrics() {
        let mut row = vec![metric.name().to_string()];
        for result in &report.results {
            let estimate = result.metrics.iter().find(|m| m.metric == metric);
            row.push(estimate.map_or_else(String::new, cell));
        }
        rows.push(row);
    }
    out.push_str(&aligned(&rows));
    let temperatures: Vec<String> = report.results.iter().filter_map(temperature_line).collect();
    if !temperatures.is_empty() {
        let _ = writeln!(out, "\ntemperatures (search range [{}, {}]):", analysis.temperature_bounds[0], analysis.temperature_bounds[1]);
        temperatures.iter().for_each(|line| { let _ = writeln!(out, "  {line}"); });
    }
    if !report.sweep.is_empty() {
        let _ = writeln!(out, "\nε sweep (ts fitted with each ε; test NLL and ECE of none and ts under that ε):");
        out.push_str(&aligned(&sweep_rows(report)));
    }
    out
}

/// `ts T = 1.7000`, with the interval of `--bootstrap-refit`, or the status when T is no fit.
fn temperature_line(result: &CalibratorResult) -> Option<String> {
    let temperature = result.params.get("temperature")?.as_f64()?;
    let mut line = format!("{} T = {temperature:.4}", result.kind.name());
    if let Some((low, high)) = result.temperature_ci {
        let _ = write!(line, " [{low:.4}, {high:.4}]");
    }
    if let Some(explanation) = result.status.explanation() {
        let _ = write!(line, "  ⚠ {}: {explanation}", result.status.name());
    }
    Some(line)
}

/// The ε sweep as table rows.
fn sweep_rows(report: &EvalReport) -> Vec<Vec<String>> {
    let header = ["ε", "T", "nll none", "nll ts", "ece none", "ece ts"].map(String::from).to_vec();
    std::iter::once(header)
        .chain(report.sweep.iter().map(|point| {
            let t = &point.temperature;
            let flag = if !t.identifiable { " (not identifiable)" } else if t.at_bound { " (at bound)" } else { "" };
            vec![
                format!("{:e}", point.epsilon),
                format!("{:.4}{flag}", t.temperature),
                number(point.nll_none),
                number(point.nll_ts),
                number(point.ece_none),
                number(point.ece_ts),
            ]
        }))
        .collect()
}

fn cell(estimate: &MetricEstimate) -> String {
    let value = number(estimate.value);
    match (estimate.ci_low, estimate.ci_high) {
        (Some(lo), Some(hi)) => format!("{value} [{}, {}]", number(lo), number(hi)),
        _ => value,
    }
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.4}")
    } else {
        "n/a".to_string()
    }
}

/// Left-aligned first column, right-aligned others, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| if c == 0 { format!("{s:<w$}", w = widths[c]) } else { format!("{s:>w$}", w = widths[c]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
