//! Bootstrap behaviour: reproducible for any thread count, consistent with the per-resample
//! values, and paired differences built from the same resamples.

use candor_calib::metrics::MetricOptions;
use candor_calib::bootstrap::{
    bootstrap_metrics, metrics_for_counts, paired_bootstrap, percentile_interval, resample_counts,
    resampled_metrics, BootstrapOptions,
};
use candor_calib::metrics::{compute_all, Metric};
use candor_calib::ScoreMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn problem(seed: u64, n: usize, k: usize, sharpness: f64) -> (ScoreMatrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let label = rng.random_range(0..k);
        let mut row: Vec<f64> = (0..k)
            .map(|c| (sharpness * (rng.random::<f64>() + if c == label { 0.8 } else { 0.0 })).exp())
            .collect();
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
        rows.push(row);
        labels.push(label);
    }
    (ScoreMatrix::from_rows(&rows).unwrap(), labels)
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (probs, labels) = problem(1, 300, 5, 3.0);
    let options = BootstrapOptions { resamples: 70, seed: 42, level: 0.9 };
    let one = in_pool(1, || bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap());
    let three = in_pool(3, || bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap());
    assert_eq!(one, three);
    let other_seed = BootstrapOptions { seed: 43, ..options };
    assert_ne!(one, bootstrap_metrics(&probs, &labels, &other_seed, &MetricOptions::default()).unwrap());
}

#[test]
fn block_evaluation_equals_one_resample_at_a_time() {
    // 1300 rows: several rank tiles and a partial one; 40 resamples: a full block and a partial one.
    let (probs, labels) = problem(5, 1300, 4, 3.0);
    let options = BootstrapOptions { resamples: 40, seed: 9, level: 0.9 };
    let resampled = resampled_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    for (b, values) in resampled.iter().enumerate() {
        let counts = resample_counts(probs.n_rows(), options.seed, b as u64);
        let alone = metrics_for_counts(&probs, &labels, &counts, &MetricOptions::default()).unwrap();
        for metric in Metric::ALL {
            let (block, single) = (values.get(metric), alone.get(metric));
            assert!(block == single || (block.is_nan() && single.is_nan()), "resample {b} {metric}");
        }
    }
}

#[test]
fn estimates_are_point_values_and_percentiles_of_the_resamples() {
    let (probs, labels) = problem(2, 250, 4, 2.0);
    let options = BootstrapOptions { resamples: 120, seed: 7, level: 0.8 };
    let estimates = bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    let point = compute_all(&probs, &labels).unwrap();
    let resampled = resampled_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    assert_eq!(resampled.len(), 120);
    for (estimate, metric) in estimates.iter().zip(Metric::ALL) {
        assert_eq!(estimate.metric, metric);
        assert_eq!(estimate.value, point.get(metric));
        let mut values: Vec<f64> = resampled.iter().map(|v| v.get(metric)).collect();
        let (low, high) = percentile_interval(&mut values, 0.8).unwrap();
        assert_eq!((estimate.ci_low, estimate.ci_high), (Some(low), Some(high)));
        assert_eq!(estimate.defined_resamples, 120);
        assert!(low <= high);
    }
}

#[test]
fn undefined_resamples_are_skipped_and_counted() {
    // Six rows, five correct: some resamples contain no wrong row, so AUROC is undefined there.
    let probs = ScoreMatrix::from_rows(&[
        vec![0.9, 0.1],
        vec![0.8, 0.2],
        vec![0.7, 0.3],
        vec![0.6, 0.4],
        vec![0.55, 0.45],
        vec![0.65, 0.35],
    ])
    .unwrap();
    let labels = [0, 0, 0, 0, 0, 1];
    let options = BootstrapOptions { resamples: 200, seed: 3, level: 0.95 };
    let estimates = bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    let auroc = estimates.iter().find(|e| e.metric == Metric::Auroc).unwrap();
    let resampled = resampled_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    let defined = resampled.iter().filter(|v| v.auroc.is_finite()).count();
    assert_eq!(auroc.defined_resamples, defined);
    // P(no wrong row in 6 draws) = (5/6)^6 ≈ 0.33.
    assert!(defined > 100 && defined < 170, "{defined}");
    let accuracy = estimates.iter().find(|e| e.metric == Metric::Accuracy).unwrap();
    assert_eq!(accuracy.defined_resamples, 200);
}

#[test]
fn paired_bootstrap_uses_the_same_resamples_for_both_matrices() {
    let (a, labels) = problem(4, 200, 3, 4.0);
    // b: a softened copy of a (same examples, same labels).
    let b_rows: Vec<Vec<f64>> = a
        .rows()
        .map(|row| {
            let soft: Vec<f64> = row.iter().map(|p| p.sqrt()).collect();
            let s: f64 = soft.iter().sum();
            soft.iter().map(|v| v / s).collect()
        })
        .collect();
    let b = ScoreMatrix::from_rows(&b_rows).unwrap();
    let options = BootstrapOptions { resamples: 90, seed: 11, level: 0.9 };
    let diffs = paired_bootstrap(&a, &b, &labels, &options, &MetricOptions::default()).unwrap();
    let ra = resampled_metrics(&a, &labels, &options, &MetricOptions::default()).unwrap();
    let rb = resampled_metrics(&b, &labels, &options, &MetricOptions::default()).unwrap();
    for (d, metric) in diffs.iter().zip(Metric::ALL) {
        let mut per_resample: Vec<f64> =
            ra.iter().zip(&rb).map(|(x, y)| x.get(metric) - y.get(metric)).collect();
        let at_most_zero = per_resample.iter().filter(|&&v| v <= 0.0).count() as f64 / 90.0;
        let (low, high) = percentile_interval(&mut per_resample, 0.9).unwrap();
        assert_eq!((d.ci_low, d.ci_high), (Some(low), Some(high)), "{metric}");
        assert_eq!(d.fraction_at_most_zero, Some(at_most_zero));
        assert_eq!(d.difference, d.value_a - d.value_b);
    }
    // A matrix against itself: every difference is exactly zero.
    for d in paired_bootstrap(&a, &a, &labels, &options, &MetricOptions::default()).unwrap() {
        assert_eq!((d.difference, d.ci_low, d.ci_high), (0.0, Some(0.0), Some(0.0)), "{}", d.metric);
        assert_eq!(d.fraction_at_most_zero, Some(1.0));
    }
}

#[test]
fn interval_covers_the_truth_for_a_simple_mean() {
    // Accuracy 0.7 on 2000 rows: the 95% interval has half-width ≈ 1.96·sqrt(.21/2000) ≈ 0.02.
    let rows: Vec<Vec<f64>> = (0..2000).map(|_| vec![0.8, 0.2]).collect();
    let labels: Vec<usize> = (0..2000).map(|i| usize::from(i % 10 >= 7)).collect();
    let probs = ScoreMatrix::from_rows(&rows).unwrap();
    let options = BootstrapOptions { resamples: 400, ..Default::default() };
    let estimates = bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default()).unwrap();
    let accuracy = estimates[0];
    let (low, high) = (accuracy.ci_low.unwrap(), accuracy.ci_high.unwrap());
    assert!((high - low - 2.0 * 0.0201).abs() < 0.008, "{low} {high}");
    assert!(low < 0.7 && high > 0.7);
}
