//! Seeded, stratified splitting of examples into a calibration part and a test part.
//!
//! Calibrators are fitted on one part and judged on the other; stratifying by gold label keeps
//! rare classes represented in both. Each class's rows are shuffled with a ChaCha8 generator
//! seeded from `seed` (so the split depends only on the labels, the fraction and the seed, not on
//! the machine or thread count) and the first `round(fraction × n_class)` go to calibration.

use crate::error::{CalibError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Row indices of the two parts, each in ascending order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Rows used to fit calibrators.
    pub calibration: Vec<usize>,
    /// Rows used to evaluate them.
    pub test: Vec<usize>,
}

/// Splits rows with gold `labels` (class indices below `n_classes`) so that a `fraction` in
/// `[0, 1)` of each class goes to calibration (rounded half away from zero per class).
pub fn stratified_split(
    labels: &[usize],
    n_classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Split> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(CalibError::InvalidParameter {
            name: "calibration fraction",
            reason: format!("must be in [0, 1), got {fraction}"),
        });
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class
            .get_mut(label)
            .ok_or(CalibError::LabelOutOfRange { row, label, n_classes })?
            .push(row);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split { calibration: Vec::new(), test: Vec::new() };
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        let n_calibration = (fraction * rows.len() as f64).round() as usize;
        let (calibration, test) = rows.split_at(n_calibration);
        split.calibration.extend_from_slice(calibration);
        split.test.extend_from_slice(test);
    }
    split.calibration.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_disjoint_and_complete() {
        // 10 rows of class 0, 4 of class 1, 1 of class 2.
        let labels: Vec<usize> = [vec![0; 10], vec![1; 4], vec![2; 1]].concat();
        let split = stratified_split(&labels, 3, 0.5, 7).unwrap();
        let count = |rows: &[usize], class| rows.iter().filter(|&&r| labels[r] == class).count();
        // round(5.0) = 5, round(2.0) = 2, round(0.5) = 1 (half away from zero).
        assert_eq!([0, 1, 2].map(|c| count(&split.calibration, c)), [5, 2, 1]);
        let mut all = [split.calibration.clone(), split.test.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
    }

    #[test]
    fn split_depends_on_the_seed_only() {
        let labels: Vec<usize> = (0..100).map(|i| i % 3).collect();
        let a = stratified_split(&labels, 3, 0.3, 1).unwrap();
        assert_eq!(a, stratified_split(&labels, 3, 0.3, 1).unwrap());
        assert_ne!(a, stratified_split(&labels, 3, 0.3, 2).unwrap());
    }

    #[test]
    fn zero_fraction_keeps_everything_for_test() {
        let split = stratified_split(&[0, 1, 1], 2, 0.0, 0).unwrap();
        assert!(split.calibration.is_empty());
        assert_eq!(split.test, vec![0, 1, 2]);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(stratified_split(&[0], 1, 1.0, 0).is_err());
        assert!(stratified_split(&[0], 1, f64::NAN, 0).is_err());
        assert!(matches!(
            stratified_split(&[0, 3], 2, 0.5, 0),
            Err(CalibError::LabelOutOfRange { row: 1, label: 3, .. })
        ));
    }
}
