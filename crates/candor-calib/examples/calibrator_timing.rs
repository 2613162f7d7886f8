//! Prints how long fitting each calibrator takes on N = 100 000 rows × K = 60 classes of random
//! logits, as absolute times and as multiples of one row-wise softmax pass over the same matrix
//! (the baseline, measured in the same run). Run with
//! `cargo run --release -p candor-calib --example calibrator_timing`.

use candor_calib::softmax::softmax_rows;
use candor_calib::{fit, CalibratorKind, FitOptions, InputKind, ScoreMatrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

fn best_of<T>(repeats: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() -> Result<(), candor_calib::CalibError> {
    let (n, k) = (100_000, 60);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let logits = ScoreMatrix::new(k, (0..n * k).map(|_| rng.random_range(-6.0..6.0)).collect())?;
    // Labels follow the argmax 60% of the time, otherwise uniform: a miscalibrated model.
    let labels: Vec<usize> = logits
        .rows()
        .map(|row| {
            if rng.random_bool(0.6) {
                row.iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
            } else {
                rng.random_range(0..k)
            }
        })
        .collect();
    let probabilities = softmax_rows(&logits);
    let options = FitOptions::default();
    let baseline = best_of(5, || softmax_rows(&logits));
    println!(
        "N = {n}, K = {k}, rayon threads = {}",
        rayon::current_num_threads()
    );
    println!(
        "baseline: one softmax pass {:.1} ms",
        baseline.as_secs_f64() * 1e3
    );
    let cases = [
        (CalibratorKind::None, InputKind::Logits, &logits, 5),
        (CalibratorKind::Ts, InputKind::Logits, &logits, 5),
        (
            CalibratorKind::Ts,
            InputKind::Probabilities,
            &probabilities,
            5,
        ),
        (
            CalibratorKind::ResoftmaxTs,
            InputKind::Probabilities,
            &probabilities,
            3,
        ),
        (CalibratorKind::Platt, InputKind::Logits, &logits, 1),
        (CalibratorKind::Histogram, InputKind::Logits, &logits, 1),
        (CalibratorKind::Isotonic, InputKind::Logits, &logits, 1),
        (CalibratorKind::Vector, InputKind::Logits, &logits, 1),
    ];
    for (kind, input_kind, scores, repeats) in cases {
        let fitted = fit(kind, input_kind, scores, &labels, &options)?;
        let time = best_of(repeats, || fit(kind, input_kind, scores, &labels, &options));
        println!(
            "fit {kind:>12} on {input_kind:<13}: {:>8.1} ms = {:>6.1} × baseline   params {}",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / baseline.as_secs_f64(),
            summary(&fitted.params())
        );
    }
    Ok(())
}

fn summary(params: &serde_json::Value) -> String {
    let text = params.to_string();
    text.chars().take(80).collect()
}
