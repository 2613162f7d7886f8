//! Helpers shared by the unit tests: gold labels drawn from a known temperature-scaled model.

use crate::matrix::ScoreMatrix;
use crate::softmax::softmax;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One gold label per row of `z`, drawn from softmax(z / t_true) by inverse CDF.
pub(crate) fn labels_at_temperature(z: &ScoreMatrix, t_true: f64, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let k = z.n_classes();
    z.rows()
        .map(|row| {
            let p = softmax(&row.iter().map(|v| v / t_true).collect::<Vec<_>>());
            let u: f64 = rng.random();
            let mut acc = 0.0;
            p.iter()
                .position(|&pk| {
                    acc += pk;
                    u < acc
                })
                .unwrap_or(k - 1)
        })
        .collect()
}
