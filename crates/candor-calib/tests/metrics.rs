//! Metrics against independent, deliberately naive implementations written here, and the
//! weighted (bootstrap) evaluation against explicitly materialised resamples.

use candor_calib::metrics::MetricOptions;
use candor_calib::bootstrap::{metrics_for_counts, resample_counts};
use candor_calib::metrics::{
    compute_all, smooth_ece, smooth_ece_at_bandwidth, Metric, MetricValues,
};
use candor_calib::ScoreMatrix;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The classes holding a row's maximum.
fn tied_maxima(row: &[f64]) -> Vec<usize> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (0..row.len()).filter(|&c| row[c] == max).collect()
}

/// Top-label (confidence, correctness) pairs; a k-way tie at the maximum that holds the gold
/// label is 1/k correct.
fn top_label(probs: &ScoreMatrix, labels: &[usize]) -> Vec<(f64, f64)> {
    probs
        .rows()
        .zip(labels)
        .map(|(row, &gold)| {
            let tied = tied_maxima(row);
            let correct = if tied.contains(&gold) { 1.0 / tied.len() as f64 } else { 0.0 };
            (row[tied[0]], correct)
        })
        .collect()
}

/// Binned errors of (score, outcome) pairs whose bins are given; returns (ECE, MCE, RMSCE,
/// debiased L2 CE). The debiased estimate follows Kumar et al.'s reference code: per bin of at
/// least two members, the squared gap minus `ā(1 − ā)/(n_b − 1)`, weighted by the bin's share.
fn naive_binned(pairs: &[(f64, f64)], bins: &[usize], n_bins: usize) -> (f64, f64, f64, f64) {
    let n = pairs.len() as f64;
    let (mut ece, mut mce, mut ms, mut debiased) = (0.0, 0.0f64, 0.0, 0.0);
    for b in 0..n_bins {
        let members: Vec<_> = pairs.iter().zip(bins).filter(|(_, &bin)| bin == b).collect();
        if members.is_empty() {
            continue;
        }
        let count = members.len() as f64;
        let conf = members.iter().map(|(p, _)| p.0).sum::<f64>() / count;
        let acc = members.iter().map(|(p, _)| p.1).sum::<f64>() / count;
        ece += count / n * (acc - conf).abs();
        mce = mce.max((acc - conf).abs());
        ms += count / n * (acc - conf).powi(2);
        if members.len() >= 2 {
            debiased += count / n * ((acc - conf).powi(2) - acc * (1.0 - acc) / (count - 1.0));
        }
    }
    (ece, mce, ms.sqrt(), debiased.max(0.0).sqrt())
}

fn width_bins(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    scores.map(|s| ((s * 15.0).floor() as usize).min(14)).collect()
}

/// Equal-mass bins: sort by score, a tie group goes to the bin of its first position, bin of
/// position s = largest b with ⌊b·N/10⌋ ≤ s (found by scanning).
fn mass_bins(pairs: &[(f64, f64)]) -> Vec<usize> {
    let n = pairs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| pairs[a].0.total_cmp(&pairs[b].0));
    let mut bins = vec![0; n];
    let mut first_of_group = 0;
    for (pos, &i) in order.iter().enumerate() {
        if pos > 0 && pairs[order[pos - 1]].0 != pairs[i].0 {
            first_of_group = pos;
        }
        bins[i] = (0..10).filter(|&b| b * n / 10 <= first_of_group).max().unwrap();
    }
    bins
}

/// AUROC by counting all (correct, wrong) pairs, a row being `c` of a correct row and `1 − c`
/// of a wrong one.
fn naive_auroc(pairs: &[(f64, f64)]) -> f64 {
    let (mut won, mut total) = (0.0, 0.0);
    for p in pairs {
        for q in pairs {
            let weight = p.1 * (1.0 - q.1);
            total += weight;
            won += weight * if p.0 > q.0 { 1.0 } else if p.0 == q.0 { 0.5 } else { 0.0 };
        }
    }
    if total < 1e-12 {
        f64::NAN
    } else {
        won / total
    }
}

/// AURC: for each k, the expected errors among the k most confident rows when tied rows are in
/// random order (rows strictly above the k-th score count fully, the tied group proportionally).
fn naive_aurc(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len();
    let mut scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let mut total = 0.0;
    for k in 1..=n {
        let threshold = scores[k - 1];
        let above: Vec<_> = pairs.iter().filter(|p| p.0 > threshold).collect();
        let tied: Vec<_> = pairs.iter().filter(|p| p.0 == threshold).collect();
        let tied_errors = tied.iter().map(|p| 1.0 - p.1).sum::<f64>();
        let errors = above.iter().map(|p| 1.0 - p.1).sum::<f64>()
            + (k - above.len()) as f64 * tied_errors / tied.len() as f64;
        total += errors / k as f64;
    }
    total / n as f64
}

/// Macro-F1 where a row tied over k classes predicts each of them with weight 1/k.
fn naive_macro_f1(probs: &ScoreMatrix, labels: &[usize]) -> f64 {
    let share = |row: &[f64], c: usize| {
        let tied = tied_maxima(row);
        if tied.contains(&c) { 1.0 / tied.len() as f64 } else { 0.0 }
    };
    let mut f1s = Vec::new();
    for c in 0..probs.n_classes() {
        let tp: f64 = probs.rows().zip(labels).filter(|(_, &g)| g == c).map(|(row, _)| share(row, c)).sum();
        let predicted: f64 = probs.rows().map(|row| share(row, c)).sum();
        let gold = labels.iter().filter(|&&g| g == c).count() as f64;
        if predicted + gold > 0.0 {
            f1s.push(2.0 * tp / (predicted + gold));
        }
    }
    f1s.iter().sum::<f64>() / f1s.len() as f64
}

fn naive_classwise(probs: &ScoreMatrix, labels: &[usize]) -> f64 {
    let k = probs.n_classes();
    (0..k)
        .map(|c| {
            let pairs: Vec<(f64, f64)> =
                probs.rows().zip(labels).map(|(row, &g)| (row[c], f64::from(u8::from(g == c)))).collect();
            naive_binned(&pairs, &width_bins(pairs.iter().map(|p| p.0)), 15).0
        })
        .sum::<f64>()
        / k as f64
}

/// Reflected (at 0 and 1), truncated (|d| ≤ 1/2) Gaussian smoothing evaluated directly at
/// relplot's evaluation points, without any grid: O(N · points).
fn naive_smooth_ece_at(pairs: &[(f64, bool)], sigma: f64) -> f64 {
    let points = (10.0 / sigma).round().max(200.0) as usize;
    let kernel = |d: f64| if d.abs() <= 0.5 { (-d * d / (2.0 * sigma * sigma)).exp() } else { 0.0 };
    let (mut residual_sum, mut density_sum) = (0.0, 0.0);
    for u in 0..points {
        let t = u as f64 / (points - 1) as f64;
        let (mut r, mut d) = (0.0, 0.0);
        for &(f, y) in pairs {
            let k = kernel(t - f) + kernel(t + f) + kernel(t - (2.0 - f));
            r += k * (f - f64::from(u8::from(y)));
            d += k;
        }
        residual_sum += r.abs();
        density_sum += d;
    }
    residual_sum / density_sum
}

/// Random probability rows; `levels` > 0 draws entries from {0..levels} before normalising so
/// that ties (within rows and across rows) are common.
fn random_problem(seed: u64, n: usize, k: usize, levels: u32) -> (ScoreMatrix, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let mut row: Vec<f64> = (0..k)
            .map(|_| if levels > 0 { f64::from(rng.random_range(0..=levels)) } else { rng.random::<f64>().powi(3) })
            .collect();
        if row.iter().all(|&v| v == 0.0) {
            row[0] = 1.0;
        }
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
        rows.push(row);
    }
    let labels = (0..n).map(|_| rng.random_range(0..k)).collect();
    (ScoreMatrix::from_rows(&rows).unwrap(), labels)
}

fn assert_close(a: &MetricValues, b: &MetricValues, tol: f64) {
    for ((m, x), (_, y)) in a.iter().zip(b.iter()) {
        // See check_against_naive: the debiased error is compared through its square.
        let (x, y) = if m == Metric::DebiasedL2Ce { (x * x, y * y) } else { (x, y) };
        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * (1.0 + y.abs());
        assert!(same, "{m}: {x} vs {y}");
    }
}

fn check_against_naive(probs: &ScoreMatrix, labels: &[usize]) {
    let v = compute_all(probs, labels).unwrap();
    let pairs = top_label(probs, labels);
    let n = pairs.len() as f64;
    let (ece, mce, rmsce, debiased) = naive_binned(&pairs, &width_bins(pairs.iter().map(|p| p.0)), 15);
    let checks = [
        (Metric::Accuracy, pairs.iter().map(|p| p.1).sum::<f64>() / n),
        (Metric::MacroF1, naive_macro_f1(probs, labels)),
        (
            Metric::Nll,
            probs.rows().zip(labels).map(|(r, &g)| -r[g].max(1e-6).ln()).sum::<f64>() / n,
        ),
        (
            Metric::Brier,
            probs
                .rows()
                .zip(labels)
                .map(|(r, &g)| {
                    r.iter().enumerate().map(|(c, p)| (p - f64::from(u8::from(c == g))).powi(2)).sum::<f64>()
                })
                .sum::<f64>()
                / n,
        ),
        (Metric::Ece15EqualWidth, ece),
        (Metric::Ece10EqualMass, naive_binned(&pairs, &mass_bins(&pairs), 10).0),
        (Metric::ClasswiseEce, naive_classwise(probs, labels)),
        (Metric::Mce, mce),
        (Metric::Rmsce, rmsce),
        (Metric::DebiasedL2Ce, debiased),
        (Metric::Auroc, naive_auroc(&pairs)),
        (Metric::Aurc, naive_aurc(&pairs)),
    ];
    for (metric, expected) in checks {
        let got = v.get(metric);
        // The debiased error is the square root of a difference that can cancel to 0, where
        // the square root turns a 1e-17 rounding residue into 3e-9: compare its squares.
        let (got_cmp, expected_cmp) =
            if metric == Metric::DebiasedL2Ce { (got * got, expected * expected) } else { (got, expected) };
        let same = (got.is_nan() && expected.is_nan()) || (got_cmp - expected_cmp).abs() < 1e-9;
        assert!(same, "{metric}: fast {got} vs naive {expected}");
    }
}

#[test]
fn all_metrics_match_naive_implementations_on_continuous_data() {
    for seed in 0..5 {
        let (probs, labels) = random_problem(seed, 200, 4, 0);
        check_against_naive(&probs, &labels);
    }
}

#[test]
fn all_metrics_match_naive_implementations_with_heavy_ties() {
    for seed in 0..5 {
        let (probs, labels) = random_problem(100 + seed, 150, 3, 3);
        check_against_naive(&probs, &labels);
    }
}

#[test]
fn equal_mass_keeps_tied_rows_together() {
    // 10 rows: six at 0.6 (3 correct), four at 0.9 (all correct). Binary problem.
    let mut rows = vec![vec![0.6, 0.4]; 6];
    rows.extend(vec![vec![0.9, 0.1]; 4]);
    let labels = [0, 0, 0, 1, 1, 1, 0, 0, 0, 0];
    let probs = ScoreMatrix::from_rows(&rows).unwrap();
    let v = compute_all(&probs, &labels).unwrap();
    // Two bins only: {0.6 × 6, accuracy 0.5} and {0.9 × 4, accuracy 1}.
    let expected = 0.6 * (0.6f64 - 0.5).abs() + 0.4 * (0.9f64 - 1.0).abs();
    assert!((v.ece_10_equal_mass - expected).abs() < 1e-12, "{}", v.ece_10_equal_mass);
}

#[test]
fn smooth_ece_at_fixed_bandwidth_matches_direct_kernel_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Over-confident: outcome probability is 0.7 × score; includes exact 0 and 1 scores.
    let mut pairs: Vec<(f64, bool)> = (0..400)
        .map(|_| {
            let f: f64 = rng.random();
            (f, rng.random::<f64>() < 0.7 * f)
        })
        .collect();
    pairs.extend([(1.0, true), (1.0, false), (0.0, false)]);
    let scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let outcomes: Vec<bool> = pairs.iter().map(|p| p.1).collect();
    for sigma in [0.02, 0.05, 0.1, 0.3] {
        let fast = smooth_ece_at_bandwidth(&scores, &outcomes, sigma).unwrap();
        let naive = naive_smooth_ece_at(&pairs, sigma);
        assert!((fast - naive).abs() < 2e-3 * naive, "σ={sigma}: {fast} vs {naive}");
    }
}

#[test]
fn smooth_ece_bandwidth_is_the_fixed_point() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let scores: Vec<f64> = (0..3000).map(|_| rng.random()).collect();
    let outcomes: Vec<bool> = scores.iter().map(|&f| rng.random::<f64>() < f * f).collect();
    let result = smooth_ece(&scores, &outcomes).unwrap();
    let sigma = result.bandwidth;
    // σ* passes (σ* ≥ smECE_σ*) and σ* − 2⁻¹⁰ fails (it is below its smECE).
    assert!(sigma >= result.value);
    let below = sigma - 1.0 / 1024.0;
    assert!(below < smooth_ece_at_bandwidth(&scores, &outcomes, below).unwrap());
    // E|f − f²| over f ~ U(0,1) is 1/6; smoothing shrinks it a little.
    assert!(result.value > 0.12 && result.value < 1.0 / 6.0 + 0.02, "{result:?}");
}

#[test]
fn smooth_ece_is_small_for_calibrated_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let scores: Vec<f64> = (0..20_000).map(|_| rng.random()).collect();
    let outcomes: Vec<bool> = scores.iter().map(|&f| rng.random::<f64>() < f).collect();
    let calibrated = smooth_ece(&scores, &outcomes).unwrap().value;
    assert!(calibrated < 0.02, "{calibrated}");
}

#[test]
fn top_label_smooth_ece_in_compute_all_uses_confidence_and_correctness() {
    let (probs, labels) = random_problem(3, 300, 5, 0);
    let pairs = top_label(&probs, &labels);
    let scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    // Continuous data: no ties, so every correctness is 0 or 1.
    let outcomes: Vec<bool> = pairs.iter().map(|p| p.1 == 1.0).collect();
    let direct = smooth_ece(&scores, &outcomes).unwrap().value;
    // Same definition; the engine sums in confidence order, so only rounding may differ.
    assert!((compute_all(&probs, &labels).unwrap().smooth_ece - direct).abs() < 1e-12);
}

/// Strategy: a small problem with tied values, plus arbitrary resample indices.
fn problem_and_indices() -> impl Strategy<Value = (Vec<Vec<u32>>, Vec<usize>, Vec<usize>)> {
    (1usize..25, 1usize..5).prop_flat_map(|(n, k)| {
        (
            prop::collection::vec(prop::collection::vec(0u32..4, k), n),
            prop::collection::vec(0..k, n),
            prop::collection::vec(0..n, 1..60),
        )
    })
}

fn to_probs(raw: &[Vec<u32>]) -> ScoreMatrix {
    let rows: Vec<Vec<f64>> = raw
        .iter()
        .map(|r| {
            let mut row: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
            if row.iter().all(|&v| v == 0.0) {
                row[0] = 1.0;
            }
            let sum: f64 = row.iter().sum();
            row.iter().map(|v| v / sum).collect()
        })
        .collect();
    ScoreMatrix::from_rows(&rows).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The weighted evaluation used by the bootstrap equals the plain metrics of the
    /// materialised resample (rows repeated), for all thirteen metrics.
    #[test]
    fn weighted_metrics_equal_materialised_resample((raw, labels, indices) in problem_and_indices()) {
        let probs = to_probs(&raw);
        let mut counts = vec![0u32; probs.n_rows()];
        indices.iter().for_each(|&i| counts[i] += 1);
        let weighted = metrics_for_counts(&probs, &labels, &counts, &MetricOptions::default()).unwrap();
        let materialised = probs.select_rows(&indices);
        let repeated: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
        let plain = compute_all(&materialised, &repeated).unwrap();
        assert_close(&weighted, &plain, 1e-9);
    }

    /// The naive implementations agree with the fast ones on arbitrary tied inputs too.
    #[test]
    fn metrics_match_naive_on_random_tied_inputs((raw, labels, _indices) in problem_and_indices()) {
        check_against_naive(&to_probs(&raw), &labels);
    }
}

#[test]
fn weighted_equals_materialised_for_a_bootstrap_resample() {
    let (probs, labels) = random_problem(21, 500, 6, 0);
    let counts = resample_counts(500, 4, 2);
    let indices: Vec<usize> =
        counts.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize)).collect();
    let repeated: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
    let plain = compute_all(&probs.select_rows(&indices), &repeated).unwrap();
    assert_close(&metrics_for_counts(&probs, &labels, &counts, &MetricOptions::default()).unwrap(), &plain, 1e-9);
}
