//! The synthetic, seeded problem shared by the `calib` benchmark and the `bootstrap_timing`
//! example (included by both with `#[path]`), so that their figures are about the same data:
//! N = 100 000 rows × K = 60 classes of logits with one boosted class per row, and gold labels
//! drawn from a flatter softmax, so the model is over-confident (realistic, non-trivial
//! calibration error).

use candor_calib::ScoreMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of rows of the synthetic problem.
pub const ROWS: usize = 100_000;
/// Number of classes of the synthetic problem.
pub const CLASSES: usize = 60;

/// The logits and gold labels of the synthetic problem (always the same for the same build).
pub fn logits_and_labels() -> (ScoreMatrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(2023);
    let mut logits = Vec::with_capacity(ROWS * CLASSES);
    let mut labels = Vec::with_capacity(ROWS);
    for _ in 0..ROWS {
        let boosted = rng.random_range(0..CLASSES);
        let boost = 6.0 * rng.random::<f64>();
        let row: Vec<f64> = (0..CLASSES)
            .map(|c| 2.0 * rng.random::<f64>() + if c == boosted { boost } else { 0.0 })
            .collect();
        let flatter: Vec<f64> = row.iter().map(|z| (z / 1.5).exp()).collect();
        let mut u = rng.random::<f64>() * flatter.iter().sum::<f64>();
        let label = flatter
            .iter()
            .position(|&w| {
                u -= w;
                u <= 0.0
            })
            .unwrap_or(CLASSES - 1);
        logits.extend(row);
        labels.push(label);
    }
    let logits = ScoreMatrix::new(CLASSES, logits).expect("rectangular by construction");
    (logits, labels)
}
