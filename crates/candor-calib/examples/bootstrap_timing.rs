//! Times the end-to-end case on N = 100 000 rows × K = 60 classes of synthetic logits:
//! fit temperature scaling, apply it, and bootstrap all thirteen metrics (B = 1000 unless given
//! as the first argument). Also prints a fingerprint of the bits of every resampled metric value,
//! so that an optimisation of the bootstrap can be checked to leave the results bit-identical.
//! Run with `cargo run --release -p candor-calib --example bootstrap_timing [-- RESAMPLES]`;
//! on a busy machine compare user CPU time (`/usr/bin/time -f %U`, with `RAYON_NUM_THREADS`
//! fixed), which is far steadier than wall time, or count instructions under
//! `valgrind --tool=callgrind`; `perf record -e cpu-clock` gives profiles.

use candor_calib::metrics::MetricOptions;
use candor_calib::bootstrap::{bootstrap_metrics, resampled_metrics, BootstrapOptions};
use candor_calib::{fit, CalibError, CalibratorKind, FitOptions, InputKind};
use std::time::Instant;

#[path = "../benches/common/synthetic.rs"]
mod synthetic;

use synthetic::{CLASSES, ROWS};

/// FNV-1a over the bits of `values`: equal fingerprints mean (almost surely) equal bits.
fn fingerprint(values: impl Iterator<Item = f64>) -> u64 {
    values.fold(0xcbf2_9ce4_8422_2325, |hash, v| {
        (hash ^ v.to_bits()).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn main() -> Result<(), CalibError> {
    let resamples = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| CalibError::InvalidParameter {
            name: "resamples",
            reason: format!("expected a non-negative integer, got {arg:?}"),
        })?,
        None => 1000,
    };
    let (logits, labels) = synthetic::logits_and_labels();
    let options = BootstrapOptions { resamples, seed: 1, level: 0.95 };
    println!("N = {ROWS}, K = {CLASSES}, B = {resamples}, rayon threads = {}", rayon::current_num_threads());

    let start = Instant::now();
    let calibrator = fit(CalibratorKind::Ts, InputKind::Logits, &logits, &labels, &FitOptions::default())?;
    let fitted = start.elapsed();
    let probs = calibrator.apply(&logits)?;
    let applied = start.elapsed();
    let estimates = bootstrap_metrics(&probs, &labels, &options, &MetricOptions::default())?;
    let total = start.elapsed();
    println!(
        "fit ts {:.1} ms, apply {:.1} ms, bootstrap {:.1} ms, total {:.1} ms",
        fitted.as_secs_f64() * 1e3,
        (applied - fitted).as_secs_f64() * 1e3,
        (total - applied).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    for e in &estimates {
        println!("{:>20} {:.6} [{:?}, {:?}] defined {}", e.metric.name(), e.value, e.ci_low, e.ci_high, e.defined_resamples);
    }
    let estimate_bits = estimates.iter().flat_map(|e| [e.value, e.ci_low.unwrap_or(f64::NAN), e.ci_high.unwrap_or(f64::NAN)]);
    println!("estimates fingerprint {:016x}", fingerprint(estimate_bits));
    if std::env::var_os("BOOTSTRAP_TIMING_ALL_VALUES").is_some() {
        let all = resampled_metrics(&probs, &labels, &options, &MetricOptions::default())?;
        let bits = all.iter().flat_map(|v| v.iter().map(|(_, x)| x).collect::<Vec<_>>());
        println!("all resampled values fingerprint {:016x}", fingerprint(bits));
    }
    Ok(())
}
