//! Speed of the metric engine and the bootstrap on a synthetic, seeded problem of
//! N = 100 000 rows × K = 60 classes: `compute_all`, the weighted bootstrap of all metrics with
//! B = 1000, a naive baseline (materialise each resample and call `compute_all`; B = 10, to be
//! scaled ×100 for the ratio), fitting temperature scaling on the logits, and the issue's
//! end-to-end case: fit temperature scaling, apply it, and bootstrap all metrics with B = 1000.
//!
//! Run with `cargo bench -p candor-calib --bench calib` on an otherwise idle machine.

use candor_calib::metrics::MetricOptions;
use candor_calib::bootstrap::{bootstrap_metrics, resample_counts, BootstrapOptions};
use candor_calib::calibrators::{fit, CalibratorKind, FitOptions, InputKind};
use candor_calib::metrics::compute_all;
use candor_calib::softmax::softmax_rows;
use candor_calib::ScoreMatrix;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

const NAIVE_RESAMPLES: usize = 10;

#[path = "common/synthetic.rs"]
mod synthetic;

fn naive_bootstrap(probs: &ScoreMatrix, labels: &[usize], resamples: usize) -> f64 {
    let mut checksum = 0.0;
    for b in 0..resamples {
        let counts = resample_counts(probs.n_rows(), 1, b as u64);
        let indices: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize))
            .collect();
        let resampled_labels: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
        let values = compute_all(&probs.select_rows(&indices), &resampled_labels).expect("valid");
        checksum += values.ece_15_equal_width;
    }
    checksum
}

fn bench(c: &mut Criterion) {
    let (logits, labels) = synthetic::logits_and_labels();
    let probs = softmax_rows(&logits);
    let mut group = c.benchmark_group(format!("calib_n{}_k{}", synthetic::ROWS, synthetic::CLASSES));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("compute_all", |b| {
        b.iter(|| compute_all(black_box(&probs), black_box(&labels)).expect("valid"))
    });
    group.measurement_time(Duration::from_secs(20));
    let options = BootstrapOptions { resamples: 1000, seed: 1, level: 0.95 };
    group.bench_function("bootstrap_all_metrics_b1000", |b| {
        b.iter(|| bootstrap_metrics(black_box(&probs), black_box(&labels), &options, &MetricOptions::default()).expect("valid"))
    });
    group.bench_function("naive_materialised_bootstrap_b10", |b| {
        b.iter(|| naive_bootstrap(black_box(&probs), black_box(&labels), NAIVE_RESAMPLES))
    });
    group.bench_function("fit_ts_apply_bootstrap_all_metrics_b1000", |b| {
        b.iter(|| {
            let calibrator =
                fit(CalibratorKind::Ts, InputKind::Logits, black_box(&logits), &labels, &FitOptions::default())
                    .expect("valid");
            let calibrated = calibrator.apply(&logits).expect("same shape as the fit");
            bootstrap_metrics(&calibrated, &labels, &options, &MetricOptions::default()).expect("valid")
        })
    });
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("fit_ts_logits", |b| {
        b.iter(|| {
            fit(CalibratorKind::Ts, InputKind::Logits, black_box(&logits), &labels, &FitOptions::default())
                .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
