//! Output of `candor eval`: one JSON document for scripts (metric names are those of
//! `candor_calib::metrics::Metric`), or an aligned table for people.

use super::{CalibratorResult, EvalReport};
use candor_calib::bootstrap::{MetricDifference, MetricEstimate};
use candor_calib::metrics::Metric;
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
        "seed": report.seed,
        "epsilon": report.epsilon,
        "bootstrap": {"resamples": report.bootstrap.resamples, "level": report.bootstrap.level},
        "parse": data.status_counts,
        "unparseable_policy": report.unparseable.name(),
        "excluded": data.excluded,
        "mean_sum_deviation": finite(data.mean_sum_deviation),
        "results": report.results.iter().map(result_json).collect::<Vec<_>>(),
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
        "metrics": metrics,
    });
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
    let _ = writeln!(
        out,
        "split        {} calibration / {} test rows (fraction {}, seed {})",
        report.n_calibration, report.n_test, report.calib_fraction, report.seed
    );
    let level = report.bootstrap.level * 100.0;
    let _ = writeln!(out, "intervals    {level}% percentile bootstrap, {} resamples\n", report.bootstrap.resamples);

    let mut rows: Vec<Vec<String>> = vec![std::iter::once("metric".to_string())
        .chain(report.results.iter().map(|r| r.kind.name().to_string()))
        .collect()];
    for metric in Metric::ALL {
        let mut row = vec![metric.name().to_string()];
        for result in &report.results {
            let estimate = result.metrics.iter().find(|m| m.metric == metric);
            row.push(estimate.map_or_else(String::new, cell));
        }
        rows.push(row);
    }
    out.push_str(&aligned(&rows));
    let temperatures: Vec<String> = report
        .results
        .iter()
        .filter_map(|r| Some(format!("{} T = {:.4}", r.kind.name(), r.params.get("temperature")?.as_f64()?)))
        .collect();
    if !temperatures.is_empty() {
        let _ = writeln!(out, "\nfitted temperatures: {}", temperatures.join(", "));
    }
    out
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
