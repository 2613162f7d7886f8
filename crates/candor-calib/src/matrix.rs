//! [`ScoreMatrix`]: the dense, row-major table of per-example label scores (probabilities or
//! logits) that every calibrator and metric in this crate consumes and produces.

use crate::error::{CalibError, Result};
use serde::{Deserialize, Serialize};

/// A dense `n_rows × n_classes` matrix of `f64` scores, stored row-major: row `i` holds the
/// scores of example `i` for each label, in the label order of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreMatrix {
    n_classes: usize,
    values: Vec<f64>,
}

impl ScoreMatrix {
    /// Wraps row-major `values`; `values.len()` must be a multiple of `n_classes` (≥ 1).
    pub fn new(n_classes: usize, values: Vec<f64>) -> Result<Self> {
        if n_classes == 0 {
            return Err(CalibError::InvalidParameter {
                name: "n_classes",
                reason: "a score matrix needs at least one class".into(),
            });
        }
        if !values.len().is_multiple_of(n_classes) {
            return Err(CalibError::Shape {
                what: "score values (length must be a multiple of n_classes)".into(),
                expected: values.len().div_ceil(n_classes) * n_classes,
                found: values.len(),
            });
        }
        Ok(Self { n_classes, values })
    }

    /// Builds a matrix from rows that must all have the same length.
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<Self> {
        let n_classes = rows.first().map(|r| r.as_ref().len()).ok_or_else(|| {
            CalibError::Empty("a score matrix needs at least one row".into())
        })?;
        let mut values = Vec::with_capacity(n_classes * rows.len());
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != n_classes {
                return Err(CalibError::Shape {
                    what: format!("row {i}"),
                    expected: n_classes,
                    found: row.len(),
                });
            }
            values.extend_from_slice(row);
        }
        Self::new(n_classes, values)
    }

    /// Number of rows (examples).
    pub fn n_rows(&self) -> usize {
        self.values.len() / self.n_classes
    }

    /// Number of columns (classes).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Row `i` (panics if `i >= n_rows()`, like slice indexing).
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.n_classes..(i + 1) * self.n_classes]
    }

    /// Mutable row `i`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        let k = self.n_classes;
        &mut self.values[i * k..(i + 1) * k]
    }

    /// Iterates over rows.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.values.chunks_exact(self.n_classes)
    }

    /// Iterates mutably over rows.
    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, f64> {
        self.values.chunks_exact_mut(self.n_classes)
    }

    /// All values, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// A new matrix holding the given rows, in the given order (indices may repeat).
    pub fn select_rows(&self, indices: &[usize]) -> Self {
        let mut values = Vec::with_capacity(indices.len() * self.n_classes);
        for &i in indices {
            values.extend_from_slice(self.row(i));
        }
        Self {
            n_classes: self.n_classes,
            values,
        }
    }

    /// Checks that every value is finite.
    pub fn check_finite(&self) -> Result<()> {
        self.check_each("a finite number", |v| v.is_finite())
    }

    /// Checks that every row is a probability distribution: values in `[0, 1]` and a row sum
    /// within `tolerance` of 1.
    pub fn check_probabilities(&self, tolerance: f64) -> Result<()> {
        self.check_each("a probability in [0, 1]", |v| (0.0..=1.0).contains(&v))?;
        for (i, row) in self.rows().enumerate() {
            let sum: f64 = row.iter().sum();
            if (sum - 1.0).abs() > tolerance {
                return Err(CalibError::InvalidValue {
                    row: i,
                    column: 0,
                    value: sum,
                    expected: "a row of probabilities summing to 1",
                });
            }
        }
        Ok(())
    }

    /// Checks that gold `labels` match the rows and are valid class indices.
    pub fn check_labels(&self, labels: &[usize]) -> Result<()> {
        if labels.len() != self.n_rows() {
            return Err(CalibError::Shape {
                what: "labels (one per row)".into(),
                expected: self.n_rows(),
                found: labels.len(),
            });
        }
        match labels.iter().enumerate().find(|(_, &l)| l >= self.n_classes) {
            Some((row, &label)) => Err(CalibError::LabelOutOfRange {
                row,
                label,
                n_classes: self.n_classes,
            }),
            None => Ok(()),
        }
    }

    fn check_each(&self, expected: &'static str, ok: impl Fn(f64) -> bool) -> Result<()> {
        match self.values.iter().position(|&v| !ok(v)) {
            Some(pos) => Err(CalibError::InvalidValue {
                row: pos / self.n_classes,
                column: pos % self.n_classes,
                value: self.values[pos],
                expected,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_shape() {
        let m = ScoreMatrix::from_rows(&[vec![0.1, 0.9], vec![0.5, 0.5], vec![1.0, 0.0]]).unwrap();
        assert_eq!((m.n_rows(), m.n_classes()), (3, 2));
        assert_eq!(m.row(1), &[0.5, 0.5]);
        assert_eq!(m.select_rows(&[2, 2, 0]).values(), &[1.0, 0.0, 1.0, 0.0, 0.1, 0.9]);
    }

    #[test]
    fn ragged_rows_are_rejected() {
        let err = ScoreMatrix::from_rows(&[vec![0.1, 0.9], vec![1.0]]).unwrap_err();
        assert!(matches!(err, CalibError::Shape { expected: 2, found: 1, .. }));
        assert!(ScoreMatrix::new(3, vec![0.0; 4]).is_err());
        assert!(ScoreMatrix::new(0, vec![]).is_err());
    }

    #[test]
    fn validation_names_the_bad_cell() {
        let m = ScoreMatrix::from_rows(&[vec![0.5, 0.5], vec![f64::NAN, 1.0]]).unwrap();
        assert!(matches!(m.check_finite(), Err(CalibError::InvalidValue { row: 1, column: 0, .. })));
        let m = ScoreMatrix::from_rows(&[vec![0.5, 0.6]]).unwrap();
        assert!(m.check_probabilities(1e-6).is_err());
        assert!(m.check_probabilities(0.2).is_ok());
        assert!(matches!(
            m.check_labels(&[2]),
            Err(CalibError::LabelOutOfRange { row: 0, label: 2, n_classes: 2 })
        ));
    }
}
