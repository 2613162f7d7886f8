//! Numerically stable softmax primitives and the invert-softmax trick.
//!
//! `softmax` and `log_softmax` subtract the row maximum before exponentiating, so they stay exact
//! for logits of any magnitude (±1e300 included). [`invert_softmax`] maps a probability vector
//! back to logits, `z_i = ln(max(p_i, ε))`: softmax(z) recovers p (renormalised, with zeros
//! lifted to ε), and softmax(z / T) is temperature scaling of verbalized probabilities
//! (arXiv 2410.06707). ε is explicit because verbalized outputs often contain zeros, and its
//! value changes the fitted temperature.

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;

/// The default ε for [`invert_softmax`]: probabilities below it are lifted to it.
pub const DEFAULT_EPSILON: f64 = 1e-6;

/// `ln Σ exp(z_i)`, computed stably. Returns `-inf` for an empty slice or all `-inf` inputs.
pub fn logsumexp(logits: &[f64]) -> f64 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if max == f64::INFINITY {
        return f64::INFINITY;
    }
    max + logits.iter().map(|&z| (z - max).exp()).sum::<f64>().ln()
}

/// Replaces `logits` by `softmax(logits)` in place.
pub fn softmax_in_place(logits: &mut [f64]) {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for z in logits.iter_mut() {
        *z = (*z - max).exp();
        sum += *z;
    }
    for p in logits.iter_mut() {
        *p /= sum;
    }
}

/// `softmax(logits)` as a new vector.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let mut out = logits.to_vec();
    softmax_in_place(&mut out);
    out
}

/// `log_softmax(logits)`: `z_i − logsumexp(z)`.
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let lse = logsumexp(logits);
    logits.iter().map(|&z| z - lse).collect()
}

/// Row-wise softmax of a logit matrix.
pub fn softmax_rows(logits: &ScoreMatrix) -> ScoreMatrix {
    let mut out = logits.clone();
    out.rows_mut().for_each(softmax_in_place);
    out
}

/// The invert-softmax trick for one row: `z_i = ln(max(p_i, ε))`.
///
/// `p` must hold finite, non-negative values (it need not sum to 1); `ε` must be in `(0, 1)`.
pub fn invert_softmax(probabilities: &[f64], epsilon: f64) -> Result<Vec<f64>> {
    check_epsilon(epsilon)?;
    probabilities
        .iter()
        .enumerate()
        .map(|(column, &p)| {
            if p.is_finite() && p >= 0.0 {
                Ok(p.max(epsilon).ln())
            } else {
                Err(CalibError::InvalidValue {
                    row: 0,
                    column,
                    value: p,
                    expected: "a finite, non-negative probability",
                })
            }
        })
        .collect()
}

/// [`invert_softmax`] applied to every row of a probability matrix.
pub fn invert_softmax_rows(probabilities: &ScoreMatrix, epsilon: f64) -> Result<ScoreMatrix> {
    check_epsilon(epsilon)?;
    let mut values = Vec::with_capacity(probabilities.values().len());
    for (row, p) in probabilities.rows().enumerate() {
        let z = invert_softmax(p, epsilon).map_err(|e| match e {
            CalibError::InvalidValue { column, value, expected, .. } => {
                CalibError::InvalidValue { row, column, value, expected }
            }
            other => other,
        })?;
        values.extend(z);
    }
    ScoreMatrix::new(probabilities.n_classes(), values)
}

pub(crate) fn check_epsilon(epsilon: f64) -> Result<()> {
    if epsilon > 0.0 && epsilon < 1.0 {
        Ok(())
    } else {
        Err(CalibError::InvalidParameter {
            name: "epsilon",
            reason: format!("must be in (0, 1), got {epsilon}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn softmax_matches_hand_values() {
        // softmax([0, ln 3]) = [1/4, 3/4]
        assert!(close(&softmax(&[0.0, 3f64.ln()]), &[0.25, 0.75], 1e-15));
        // log-softmax of equal logits is -ln K
        assert!(close(&log_softmax(&[7.0; 4]), &[-(4f64.ln()); 4], 1e-15));
    }

    #[test]
    fn softmax_is_stable_for_extreme_logits() {
        let p = softmax(&[1e300, -1e300, 0.0]);
        assert_eq!(p, vec![1.0, 0.0, 0.0]);
        let p = softmax(&[1000.0, 1000.0 + 2f64.ln()]);
        // 1000 + ln 2 is rounded to the f64 grid near 1000 (ulp ≈ 1.1e-13).
        assert!(close(&p, &[1.0 / 3.0, 2.0 / 3.0], 1e-12));
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn invert_softmax_round_trips_and_lifts_zeros() {
        let p = [0.7, 0.2, 0.1];
        assert!(close(&softmax(&invert_softmax(&p, 1e-6).unwrap()), &p, 1e-15));
        // An unnormalised row comes back renormalised.
        assert!(close(&softmax(&invert_softmax(&[2.0, 2.0], 1e-6).unwrap()), &[0.5, 0.5], 1e-15));
        // A zero becomes ε.
        let z = invert_softmax(&[1.0, 0.0], 1e-4).unwrap();
        assert_eq!(z, vec![0.0, 1e-4f64.ln()]);
    }

    #[test]
    fn invert_softmax_rejects_bad_values() {
        assert!(invert_softmax(&[0.5, -0.1], 1e-6).is_err());
        assert!(invert_softmax(&[0.5, f64::NAN], 1e-6).is_err());
        assert!(invert_softmax(&[0.5, 0.5], 0.0).is_err());
        let m = ScoreMatrix::from_rows(&[vec![0.5, 0.5], vec![0.5, f64::INFINITY]]).unwrap();
        assert!(matches!(
            invert_softmax_rows(&m, 1e-6),
            Err(CalibError::InvalidValue { row: 1, column: 1, .. })
        ));
    }
}
