//! Seeded, label-stratified sampling of `limit` rows out of a split.
//!
//! Allocation is proportional to each label's share with the largest-remainder method: label `c`
//! with `n_c` of `N` rows first gets `floor(limit * n_c / N)` rows; the rows still missing go, one
//! each, to the labels with the largest remainders `limit * n_c mod N` (ties: the label that comes
//! first in the label set). Within a label the rows are drawn without replacement from a ChaCha8
//! generator seeded with the seed, visiting labels in label-set order; the chosen rows are returned
//! in their original file order. The same rows, labels, limit and seed always give the same sample.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How many rows each label gets when `limit` rows are taken from a split whose label `c` has
/// `counts[c]` rows. Returns `counts` unchanged when `limit` is at least the total.
pub fn allocate(counts: &[usize], limit: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    if limit >= total {
        return counts.to_vec();
    }
    // u128 keeps limit * count exact for any realistic split size.
    let quota = |count: usize| (limit as u128 * count as u128, total as u128);
    let mut allocation: Vec<usize> = counts
        .iter()
        .map(|&count| {
            let (numerator, denominator) = quota(count);
            (numerator / denominator) as usize
        })
        .collect();
    let missing = limit - allocation.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by_key(|&class| {
        let (numerator, denominator) = quota(counts[class]);
        (std::cmp::Reverse(numerator % denominator), class)
    });
    for &class in by_remainder.iter().take(missing) {
        allocation[class] += 1;
    }
    allocation
}

/// Indices (ascending, i.e. file order) of a stratified sample of `limit` rows, where `labels[i]` is
/// the label index (`< n_labels`) of row `i`. All rows when `limit >= labels.len()`.
pub fn stratified_sample(labels: &[usize], n_labels: usize, limit: usize, seed: u64) -> Vec<usize> {
    if limit >= labels.len() {
        return (0..labels.len()).collect();
    }
    let mut rows_by_label: Vec<Vec<usize>> = vec![Vec::new(); n_labels];
    for (row, &label) in labels.iter().enumerate() {
        rows_by_label[label].push(row);
    }
    let counts: Vec<usize> = rows_by_label.iter().map(Vec::len).collect();
    let allocation = allocate(&counts, limit);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = Vec::with_capacity(limit);
    for (rows, &take) in rows_by_label.iter().zip(&allocation) {
        let picks = rand::seq::index::sample(&mut rng, rows.len(), take);
        chosen.extend(picks.iter().map(|pick| rows[pick]));
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocation_by_hand() {
        // 10 rows: 5/3/2, limit 4 → quotas 2.0, 1.2, 0.8 → floors 2,1,0 (3), remainders 0,2,8 of 10:
        // the one missing row goes to the third label.
        assert_eq!(allocate(&[5, 3, 2], 4), [2, 1, 1]);
        // 7 rows: 3/2/2, limit 3 → quotas 9/7, 6/7, 6/7 → floors 1,0,0; remainders 2,6,6:
        // two missing rows go to labels 1 and 2.
        assert_eq!(allocate(&[3, 2, 2], 3), [1, 1, 1]);
        // Tie on remainders: 2/2, limit 1 → quotas 0.5, 0.5 → the first label wins.
        assert_eq!(allocate(&[2, 2], 1), [1, 0]);
        // An empty label never gets a row.
        assert_eq!(allocate(&[0, 4, 4], 3), [0, 2, 1]);
        assert_eq!(allocate(&[5, 3], 100), [5, 3]);
    }

    #[test]
    fn sample_is_stratified_in_file_order_and_seeded() {
        let labels: Vec<usize> = (0..100).map(|row| usize::from(row % 4 == 0)).collect(); // 75/25
        let sample = stratified_sample(&labels, 2, 20, 7);
        assert_eq!(sample.len(), 20);
        assert!(sample.windows(2).all(|pair| pair[0] < pair[1]));
        let ones = sample.iter().filter(|&&row| labels[row] == 1).count();
        assert_eq!(ones, 5);
        assert_eq!(sample, stratified_sample(&labels, 2, 20, 7));
        assert_ne!(sample, stratified_sample(&labels, 2, 20, 8));
    }

    proptest! {
        #[test]
        fn allocation_sums_to_limit_and_stays_within_one_of_the_quota(
            counts in proptest::collection::vec(0usize..50, 1..8),
            fraction in 0.0f64..1.0,
        ) {
            let total: usize = counts.iter().sum();
            let limit = (total as f64 * fraction) as usize;
            let allocation = allocate(&counts, limit);
            prop_assert_eq!(allocation.iter().sum::<usize>(), limit.min(total));
            for (&got, &count) in allocation.iter().zip(&counts) {
                prop_assert!(got <= count);
                let quota = limit as f64 * count as f64 / total.max(1) as f64;
                prop_assert!((got as f64 - quota).abs() < 1.0 + 1e-9);
            }
        }
    }
}
