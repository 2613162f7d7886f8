//! What a report says, section by section: the header facts, what to read first (degenerate
//! signals, temperatures that are no fit), the headline table, every metric per signal, the
//! verbalized − logits comparison, how the signals were read (with degeneracy diagnostics and the
//! signals' agreement), decision thresholds, fitted temperatures and the ε sweep — each with one
//! sentence on how to read it.

use super::document::{count_with_share, difference, estimate, fact, number, Block, Document, Fact, Section, Table};
use candor_results::{
    CalibrationResults, CalibratorResults, RunSummary, SignalAgreement, SignalDiagnostics, SignalResults, WellFormedness,
};
use candor_calib::metrics::Metric;

/// Calibrators of the headline table and of the reliability diagrams, in this order.
pub const HEADLINE_CALIBRATORS: [&str; 3] = ["none", "ts", "resoftmax_ts"];
/// Metrics of the headline table and of the comparison, in this order.
const HEADLINE_METRICS: [&str; 6] = ["accuracy", "ece_15_equal_width", "smooth_ece", "brier", "nll", "auroc"];
/// Metrics whose difference from `none` is shown per signal.
const VERSUS_NONE_METRICS: [&str; 3] = ["ece_15_equal_width", "brier", "nll"];
/// Calibrators whose decision thresholds are shown.
const THRESHOLD_CALIBRATORS: [&str; 2] = ["none", "ts"];
/// Parse statuses in the order they are listed (others follow alphabetically).
const STATUS_ORDER: [&str; 4] = ["ok", "renormalized", "partial", "unparseable"];

/// The whole report of `results`.
pub fn document(results: &CalibrationResults) -> Document {
    let mut sections: Vec<Section> = read_first(results).into_iter().collect();
    sections.push(headline(results));
    sections.extend(results.signals.iter().map(all_metrics));
    sections.extend(comparison(results));
    sections.extend(signal_reading(results));
    sections.push(thresholds(results));
    sections.push(temperatures(results));
    sections.extend(epsilon_sweeps(results));
    Document { title: "Candor calibration report".to_string(), facts: header(results), sections }
}

fn header(results: &CalibrationResults) -> Vec<Fact> {
    let run = &results.run;
    let settings = &results.settings;
    let mut facts = vec![
        fact("model", format!("{} ({})", run.model, run.architecture)),
        fact("weights", format!("{}; sha256 {}", run.weights, short_hash(&run.model_sha256))),
        fact("dataset", format!("{}, split {}", run.dataset, run.split)),
        fact("examples", run.examples.to_string()),
        fact("truncated", format!("{} (text shortened to fit the prompt)", run.truncated)),
        fact("labels", results.labels.join(", ")),
    ];
    if let Some(mode) = &run.verbalized_mode {
        facts.push(fact("verbalized answers", mode.clone()));
    }
    facts.extend([
        fact("calibration / test", format!("{} / {} examples {}", results.n_calibration, results.n_test, split_origin(results))),
        fact("seed", settings.seed.to_string()),
        fact(
            "intervals",
            format!("{}% {}, B = {}", trimmed(settings.level * 100.0), settings.interval_method, settings.bootstrap_resamples),
        ),
        fact(
            "ε",
            format!("{:e} (zeros lifted to ε for every calibrator and for none; every NLL floors p at ε)", settings.epsilon),
        ),
        fact(
            "temperature search range",
            format!("[{}, {}]", trimmed(settings.temperature_bounds[0]), trimmed(settings.temperature_bounds[1])),
        ),
        fact("unparseable answers", settings.unparseable.clone()),
        fact("run", run_origin(run, &results.candor_version)),
    ]);
    facts
}

fn short_hash(hash: &str) -> String {
    match hash.get(..16) {
        Some(prefix) if hash.len() > 16 => format!("{prefix}…"),
        _ => hash.to_string(),
    }
}

fn split_origin(results: &CalibrationResults) -> String {
    match (&results.run.calibration_run, results.settings.calib_fraction) {
        (Some(dir), _) => format!("(calibration examples from run {dir})"),
        (None, Some(fraction)) => format!("(fraction {fraction} of each class for calibration)"),
        (None, None) => String::new(),
    }
}

fn run_origin(run: &RunSummary, version: &str) -> String {
    format!("{}; model time {:.1} s; candor {version}", run.dir, run.model_seconds)
}

/// `95`, `97.5`: a number without trailing zeros (rounded to 6 decimals).
fn trimmed(value: f64) -> String {
    format!("{}", (value * 1e6).round() / 1e6)
}

fn headline(results: &CalibrationResults) -> Section {
    let header = ["signal", "calibrator"].into_iter().chain(HEADLINE_METRICS).map(str::to_string).collect();
    let rows = results
        .signals
        .iter()
        .flat_map(|signal| {
            HEADLINE_CALIBRATORS
                .iter()
                .filter_map(|&name| calibrator(signal, name))
                .map(|c| headline_row(&signal.signal, c))
        })
        .collect();
    Section {
        title: "Headline".to_string(),
        note: "Each row is one confidence signal after one calibrator, measured on the test part as `value [low, high]` \
               (bootstrap interval); lower is better except for accuracy and AUROC, and on `verbalized` `ts` is the \
               paper's invert-softmax temperature scaling while `resoftmax_ts` is its negative control softmax(p/T)."
            .to_string(),
        blocks: vec![Block::Table(Table { caption: None, header, rows })],
    }
}

/// The sentences a reader must see before any number: degenerate signals and temperatures
/// that are no fit; `None` when there is nothing to say.
fn read_first(results: &CalibrationResults) -> Option<Section> {
    let mut blocks = Vec::new();
    for signal in &results.signals {
        if let Some(d) = signal.diagnostics.as_ref().filter(|d| d.degenerate) {
            blocks.push(Block::Paragraph(format!(
                "`{}` is degenerate: {} of its answers are uniform over the labels and {} are one and the same \
                 answer, so its calibration metrics describe a signal that barely changes from example to example \
                 (a small ECE here means little).",
                signal.signal,
                share(d.constant_share),
                share(d.modal_share)
            )));
        }
        for c in signal.calibrators.iter().filter(|c| !c.fit_status.is_fit()) {
            if let Some(explanation) = c.fit_status.explanation() {
                blocks.push(Block::Paragraph(format!("`{}` under `{}`: {explanation}.", signal.signal, c.calibrator)));
            }
        }
    }
    (!blocks.is_empty()).then(|| Section {
        title: "Read this first".to_string(),
        note: "What the numbers below cannot show on their own.".to_string(),
        blocks,
    })
}

/// `75.0%`.
fn share(value: f64) -> String {
    format!("{:.1}%", 100.0 * value)
}

/// The calibrator's name, marked when its temperature is not a fit.
fn calibrator_name(results: &CalibratorResults) -> String {
    match results.fit_status {
        candor_results::FitStatus::Fitted => results.calibrator.clone(),
        status => format!("{} ⚠ {}", results.calibrator, status.name()),
    }
}

fn headline_row(signal: &str, results: &CalibratorResults) -> Vec<String> {
    let mut row = vec![signal.to_string(), calibrator_name(results)];
    row.extend(HEADLINE_METRICS.iter().map(|&m| metric_cell(results, m)));
    row
}

fn calibrator<'a>(signal: &'a SignalResults, name: &str) -> Option<&'a CalibratorResults> {
    signal.calibrators.iter().find(|c| c.calibrator == name)
}

fn metric_cell(results: &CalibratorResults, metric: &str) -> String {
    results.metrics.get(metric).map_or_else(|| "n/a".to_string(), estimate)
}

/// Metric names in `candor eval` order, then any others the results carry.
fn metric_names<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = Metric::ALL.iter().map(|m| m.name().to_string()).collect();
    for key in keys {
        if !names.contains(key) {
            names.push(key.clone());
        }
    }
    names
}

fn all_metrics(signal: &SignalResults) -> Section {
    let names = metric_names(signal.calibrators.iter().flat_map(|c| c.metrics.keys()));
    let header = std::iter::once("metric".to_string())
        .chain(signal.calibrators.iter().map(|c| c.calibrator.clone()))
        .collect();
    let rows = names
        .iter()
        .map(|name| {
            std::iter::once(name.clone()).chain(signal.calibrators.iter().map(|c| metric_cell(c, name))).collect()
        })
        .collect();
    let caption = format!(
        "{}: {} calibration / {} test examples, calibrators fitted on {}",
        signal.signal, signal.n_calibration, signal.n_test, signal.input_kind
    );
    let mut blocks = vec![Block::Table(Table { caption: Some(caption), header, rows })];
    blocks.extend(versus_none(signal));
    Section { title: format!("All metrics: {}", signal.signal), note: all_metrics_note(&signal.input_kind), blocks }
}

fn all_metrics_note(input_kind: &str) -> String {
    let calibrators = if input_kind == "logits" {
        "on logits `ts` is plain temperature scaling of the label log-probabilities"
    } else {
        "on probabilities `ts` is the paper's invert-softmax temperature scaling (TS on log p) and `resoftmax_ts` \
         its negative control softmax(p/T)"
    };
    format!(
        "Every metric of `candor eval` on the test part, one column per calibrator fitted on the calibration part \
         ({calibrators}); the second table is each calibrator's paired-bootstrap difference from `none`, where an \
         interval entirely below 0 means the calibrator reliably lowered that error."
    )
}

fn versus_none(signal: &SignalResults) -> Option<Block> {
    let rows: Vec<Vec<String>> = signal
        .calibrators
        .iter()
        .filter(|c| !c.difference_vs_none.is_empty())
        .map(|c| {
            std::iter::once(c.calibrator.clone())
                .chain(VERSUS_NONE_METRICS.iter().map(|&m| c.difference_vs_none.get(m).map_or_else(|| "n/a".to_string(), difference)))
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let header = std::iter::once("calibrator".to_string())
        .chain(VERSUS_NONE_METRICS.iter().map(|m| format!("Δ {m}")))
        .collect();
    let caption = format!("{}: calibrator − none, paired on the same test examples", signal.signal);
    Some(Block::Table(Table { caption: Some(caption), header, rows }))
}

fn comparison(results: &CalibrationResults) -> Option<Section> {
    if results.comparisons.is_empty() {
        return None;
    }
    let header = ["calibrator", "metric", "n", "verbalized", "logits", "verbalized − logits", "P(Δ ≤ 0)"]
        .map(str::to_string)
        .to_vec();
    let rows = results
        .comparisons
        .iter()
        .flat_map(|c| {
            HEADLINE_METRICS.iter().filter_map(move |&metric| {
                let d = c.differences.get(metric)?;
                Some(vec![
                    c.calibrator.clone(),
                    metric.to_string(),
                    c.n_test.to_string(),
                    number(d.a),
                    number(d.b),
                    difference(d),
                    number(d.fraction_at_most_zero),
                ])
            })
        })
        .collect();
    Some(Section {
        title: "Verbalized − logits".to_string(),
        note: "Paired-bootstrap differences on the test examples both signals could use: for the error metrics a \
               negative difference favours `verbalized`, and P(Δ ≤ 0) is the share of resamples in which it was at \
               least as good (for accuracy and AUROC, where higher is better, read both the other way round). These \
               paired intervals resample the test examples with each calibrator fitted once, whatever the interval \
               method of the other sections."
            .to_string(),
        blocks: vec![Block::Table(Table { caption: None, header, rows })],
    })
}

fn signal_reading(results: &CalibrationResults) -> Option<Section> {
    let mut blocks = Vec::new();
    for signal in &results.signals {
        if let Some(wf) = &signal.well_formedness {
            blocks.push(Block::Table(status_table(&signal.signal, wf)));
            blocks.push(Block::Facts(well_formedness_facts(wf)));
        }
        if let Some(diagnostics) = &signal.diagnostics {
            blocks.push(Block::Facts(diagnostics_facts(&signal.signal, diagnostics, &results.labels)));
        }
        if let Some(mass) = signal.mean_outside_mass {
            let name = "mean probability outside the labels";
            blocks.push(Block::Facts(vec![fact(name, format!("{} ({})", number(Some(mass)), signal.signal))]));
        }
    }
    if let Some(agreement) = &results.agreement {
        blocks.push(Block::Facts(agreement_facts(agreement)));
    }
    if blocks.is_empty() {
        return None;
    }
    Some(Section {
        title: "How the signals were read".to_string(),
        note: "`renormalized` answers did not sum to 1, `partial` ones left labels out (counted as 0) and \
               `unparseable` ones follow the unparseable policy; for `logits` the outside mass is the probability \
               of a first token that starts no label, which the label distribution leaves out. A signal is degenerate \
               when at least half its answers are uniform or identical; the agreement compares the two signals' \
               distributions example by example."
            .to_string(),
        blocks,
    })
}

fn diagnostics_facts(signal: &str, d: &SignalDiagnostics, labels: &[String]) -> Vec<Fact> {
    let modal: Vec<String> =
        labels.iter().zip(&d.modal_answer).map(|(label, p)| format!("{label}: {}", trimmed(*p))).collect();
    vec![
        fact("signal", format!("{signal}{}", if d.degenerate { " (degenerate)" } else { "" })),
        fact("uniform answers", format!("{} of {}", share(d.constant_share), d.n)),
        fact("identical to the most common answer", format!("{} ({{{}}})", share(d.modal_share), modal.join(", "))),
        fact("distinct answers", d.distinct_answers.to_string()),
        fact("mean entropy", format!("{} nats (uniform: {})", number(Some(d.mean_entropy)), number(Some((labels.len() as f64).ln())))),
    ]
}

fn agreement_facts(a: &SignalAgreement) -> Vec<Fact> {
    vec![
        fact("verbalized vs logits: examples with both", a.n.to_string()),
        fact(
            "mean rank correlation (Spearman, per example)",
            format!("{} over {} examples where neither is constant", number(a.mean_rank_correlation), a.rank_correlation_defined),
        ),
        fact("argmax agreement", share(a.argmax_agreement)),
    ]
}

fn status_table(signal: &str, wf: &WellFormedness) -> Table {
    let mut statuses: Vec<&String> = wf.status_counts.keys().collect();
    statuses.sort_by_key(|s| (STATUS_ORDER.iter().position(|o| o == s).unwrap_or(STATUS_ORDER.len()), s.as_str()));
    let rows = statuses
        .into_iter()
        .map(|status| vec![status.clone(), count_with_share(wf.status_counts[status], wf.total)])
        .collect();
    Table {
        caption: Some(format!("{signal}: {} answers by parse status", wf.total)),
        header: vec!["status".to_string(), "answers".to_string()],
        rows,
    }
}

fn well_formedness_facts(wf: &WellFormedness) -> Vec<Fact> {
    let missing: Vec<String> = wf.missing_labels.iter().map(|(label, n)| format!("{label} ×{n}")).collect();
    vec![
        fact("mean |Σp − 1|", number(wf.mean_abs_sum_deviation)),
        fact("excluded from every metric", count_with_share(wf.excluded, wf.total)),
        fact("labels missing from partial answers", if missing.is_empty() { "none".to_string() } else { missing.join(", ") }),
    ]
}

fn thresholds(results: &CalibrationResults) -> Section {
    let header = [
        "signal",
        "calibrator",
        "target precision",
        "threshold",
        "calibration recall",
        "test precision",
        "test recall",
    ]
    .map(str::to_string)
    .to_vec();
    let mut rows = Vec::new();
    for signal in &results.signals {
        for c in THRESHOLD_CALIBRATORS.iter().filter_map(|&name| calibrator(signal, name)) {
            for t in &c.thresholds {
                rows.push(vec![
                    signal.signal.clone(),
                    c.calibrator.clone(),
                    trimmed(t.target_precision),
                    t.threshold.map_or_else(|| "not reachable".to_string(), |v| number(Some(v))),
                    number(t.calibration_recall),
                    t.test_precision.as_ref().map_or_else(|| "n/a".to_string(), estimate),
                    t.test_recall.as_ref().map_or_else(|| "n/a".to_string(), estimate),
                ]);
            }
        }
    }
    Section {
        title: "Decision thresholds".to_string(),
        note: "Accept the top label when its confidence is at least the threshold chosen on the calibration part \
               (most recall with precision ≥ target); the test columns show whether that precision holds on unseen \
               examples and how much recall it keeps."
            .to_string(),
        blocks: vec![Block::Table(Table { caption: None, header, rows })],
    }
}

fn temperatures(results: &CalibrationResults) -> Section {
    let rows: Vec<Vec<String>> = results
        .signals
        .iter()
        .flat_map(|signal| {
            signal.calibrators.iter().filter_map(|c| {
                let temperature = c.params.get("temperature")?.as_f64()?;
                let interval = c.temperature_ci.map_or_else(|| "—".to_string(), |[lo, hi]| format!("[{}, {}]", number(Some(lo)), number(Some(hi))));
                Some(vec![signal.signal.clone(), c.calibrator.clone(), number(Some(temperature)), interval, c.fit_status.name().to_string()])
            })
        })
        .collect();
    let block = if rows.is_empty() {
        Block::Paragraph("No calibrator with a temperature was fitted.".to_string())
    } else {
        let header = ["signal", "calibrator", "temperature", "refit interval", "status"].map(str::to_string).to_vec();
        Block::Table(Table { caption: None, header, rows })
    };
    Section {
        title: "Fitted temperatures".to_string(),
        note: "The calibration part asked for softer probabilities where T > 1 (the signal was overconfident) and \
               sharper ones where T < 1; a status other than `fitted` means T is a search bound (`at_upper_bound`: no \
               temperature helps, the signal carries no ranking information; `at_lower_bound`: sharpening kept \
               helping) or a convention (`not_identifiable`: every answer uniform), not a fit. The refit interval \
               (`--bootstrap-refit`) is the temperature's own uncertainty."
            .to_string(),
        blocks: vec![block],
    }
}

/// The ε sweep of each probability signal that has one.
fn epsilon_sweeps(results: &CalibrationResults) -> Option<Section> {
    let blocks: Vec<Block> = results
        .signals
        .iter()
        .filter(|signal| !signal.epsilon_sweep.is_empty())
        .map(|signal| {
            let rows = signal
                .epsilon_sweep
                .iter()
                .map(|point| {
                    let t = &point.temperature;
                    let status = if !t.identifiable { " (not identifiable)" } else if t.at_bound { " (at bound)" } else { "" };
                    vec![
                        format!("{:e}", point.epsilon),
                        format!("{}{status}", number(Some(t.temperature))),
                        number(Some(point.nll_none)),
                        number(Some(point.nll_ts)),
                        number(Some(point.ece_none)),
                        number(Some(point.ece_ts)),
                    ]
                })
                .collect();
            let header = ["ε", "T", "NLL none", "NLL ts", "ECE none", "ECE ts"].map(str::to_string).to_vec();
            Block::Table(Table { caption: Some(format!("{}: test part", signal.signal)), header, rows })
        })
        .collect();
    (!blocks.is_empty()).then(|| Section {
        title: "ε sweep".to_string(),
        note: "ε is the hidden hyperparameter of invert-softmax scaling: zero probabilities become ln ε, and a wrong \
               one-hot answer costs −ln ε in NLL. Each row fits `ts` with that ε and measures `none` and `ts` under \
               the same ε; where the fitted T and the calibrated NLL move with ε, the result depends on that choice."
            .to_string(),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    fn section<'a>(document: &'a Document, title: &str) -> &'a Section {
        document.sections.iter().find(|s| s.title == title).unwrap_or_else(|| panic!("section {title}"))
    }

    fn table(section: &Section, index: usize) -> &Table {
        section
            .blocks
            .iter()
            .filter_map(|b| if let Block::Table(t) = b { Some(t) } else { None })
            .nth(index)
            .expect("table")
    }

    #[test]
    fn headline_has_one_row_per_signal_and_headline_calibrator() {
        let document = document(&fixture::results());
        let rows = &table(section(&document, "Headline"), 0).rows;
        let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
        // logits has no resoftmax_ts; `vector` is not a headline calibrator.
        assert_eq!(
            keys,
            [
                ("verbalized", "none"),
                ("verbalized", "ts"),
                ("verbalized", "resoftmax_ts ⚠ at_upper_bound"),
                ("logits", "none"),
                ("logits", "ts")
            ]
        );
        // ece_15_equal_width is the 4th column after signal and calibrator.
        assert_eq!(rows[0][3], "0.1234 [0.0987, 0.1500]");
    }

    #[test]
    fn thresholds_say_not_reachable_for_a_missing_threshold() {
        let document = document(&fixture::results());
        let rows = &table(section(&document, "Decision thresholds"), 0).rows;
        assert_eq!(rows[0][2..5], ["0.9", "0.8125", "0.4000"]);
        assert_eq!(rows[1][3], "not reachable");
        assert_eq!(rows[1][5], "n/a");
    }

    #[test]
    fn statuses_follow_the_parse_order_with_shares() {
        let document = document(&fixture::results());
        let rows = &table(section(&document, "How the signals were read"), 0).rows;
        let statuses: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(statuses, ["ok", "renormalized", "partial", "unparseable"]);
        assert_eq!(rows[1][1], "6 (10.0%)");
    }

    #[test]
    fn temperatures_come_from_the_params_with_their_status() {
        let document = document(&fixture::results());
        let rows = &table(section(&document, "Fitted temperatures"), 0).rows;
        assert_eq!(rows[0], ["verbalized", "ts", "2.5000", "—", "fitted"]);
        assert_eq!(rows[1], ["verbalized", "resoftmax_ts", "100.0000", "—", "at_upper_bound"]);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn a_temperature_at_its_bound_and_a_degenerate_signal_are_said_first() {
        let document = document(&fixture::results());
        let first = &document.sections[0];
        assert_eq!(first.title, "Read this first");
        let paragraphs: Vec<&str> =
            first.blocks.iter().filter_map(|b| if let Block::Paragraph(p) = b { Some(p.as_str()) } else { None }).collect();
        assert!(paragraphs[0].starts_with("`verbalized` is degenerate: 75.0% of its answers are uniform"), "{paragraphs:?}");
        assert!(paragraphs[1].contains("`resoftmax_ts`") && paragraphs[1].contains("upper search bound"), "{paragraphs:?}");
        let headline = &table(section(&document, "Headline"), 0).rows;
        assert_eq!(headline[2][1], "resoftmax_ts ⚠ at_upper_bound");
    }

    #[test]
    fn the_sweep_has_one_row_per_epsilon_and_flags_the_bound() {
        let document = document(&fixture::results());
        let rows = &table(section(&document, "ε sweep"), 0).rows;
        assert_eq!(rows[0], ["1e-8", "3.5000", "5.5000", "1.0000", "0.3000", "0.1000"]);
        assert_eq!(rows[1][1], "100.0000 (at bound)");
    }
}
