//! The driver of Candor's fuzz targets (included by each crate's `fuzz` test module with
//! `#[path]`): a target is a function of arbitrary bytes that must return, never panic, on
//! any input. Under `cargo test` each target runs [`DEFAULT_CASES`] random inputs (seeds
//! mutated and raw bytes); `scripts/fuzz.sh SECONDS` sets `CANDOR_FUZZ_SECONDS` and each
//! target then runs until that much time has passed and prints how many inputs it ran. A
//! failure prints proptest's smallest failing input: add it as a regression test named after
//! what it found.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::time::{Duration, Instant};

/// Inputs per target under plain `cargo test`.
pub const DEFAULT_CASES: u32 = 256;

/// Bytes: a seed with a few bytes changed, inserted or cut, or raw random bytes.
fn inputs(seeds: std::sync::Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (0..seeds.len(), prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8)).prop_map(move |(seed, edits)| {
        let mut bytes = seeds[seed].to_vec();
        for (at, byte, kind) in edits {
            let at = if bytes.is_empty() { 0 } else { at % (bytes.len() + 1) };
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.truncate(at.max(1));
                }
                _ => bytes.push(byte),
            }
        }
        bytes
    });
    prop_oneof![3 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..512)]
}

/// Runs `target` on inputs derived from `seeds` (see the module docs); panics with the
/// smallest failing input when the target panics.
pub fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) {
    let seeds = std::sync::Arc::new(seeds);
    let budget = std::env::var("CANDOR_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
    let started = Instant::now();
    let mut executions: u64 = 0;
    for round in 0u64.. {
        // A new seed each round (the round and the clock): the same seed would replay the
        // same inputs.
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..24].copy_from_slice(&std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_le_bytes());
        let config = Config { cases: DEFAULT_CASES, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let result = runner.run(&inputs(seeds.clone()), |bytes| {
            target(&bytes);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("fuzz target {name} failed: {failure}");
        }
        executions += u64::from(DEFAULT_CASES);
        match budget {
            Some(budget) if started.elapsed() < budget => continue,
            _ => break,
        }
    }
    if budget.is_some() {
        println!("fuzz target {name}: {executions} inputs in {:.0} s, no failure", started.elapsed().as_secs_f64());
    }
}
