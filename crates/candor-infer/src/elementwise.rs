//! Elementwise steps of a block on the CPU, written as plain loops over the tensors' values on
//! Candor's own threads: the feed-forward's gated activation of SiLU models, `silu(gate) · up`,
//! in one pass through [`kernels::silu_times`] (no intermediate tensor, no library exponential
//! per value), and the residual sums.
//!
//! Why not candle's ops: besides the slower SiLU, candle runs any elementwise op of 65,536
//! values or more (a prefill's rows) on a thread pool of its own, whose worker then spins for
//! ~0.5 ms waiting for more work, on a core that Candor's threads need: on 2 cores that spin
//! was 9.4% of a 200-token prefill (perf). The values are candle's, bit for bit (an f32 sum is
//! one rounding either way; the kernel's tests check the SiLU); other devices and activations
//! keep candle's kernels.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels;
use crate::rope::cpu_values;

/// Values from which a step is split among rayon's threads (a prefill's rows); a decode step's
/// few rows cost less than waking a worker.
const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per parallel task.
const VALUES_PER_TASK: usize = 1 << 14;

/// `silu(gate) · up` for contiguous f32 CPU tensors of the same shape; `None` for anything else
/// (candle's kernels do those).
pub(crate) fn silu_times_on_cpu(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    pairwise_on_cpu(gate, up, kernels::silu_times)
}

/// `a + b` for contiguous f32 CPU tensors of the same shape; `None` for anything else.
pub(crate) fn sum_on_cpu(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    pairwise_on_cpu(a, b, |a, b, out| {
        for ((y, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *y = a + b;
        }
    })
}

/// `step(a, b, out)` over the values of two contiguous f32 CPU tensors of the same shape, in
/// parallel chunks from [`PARALLEL_MIN_VALUES`] values; `None` for other tensors.
fn pairwise_on_cpu(a: &Tensor, b: &Tensor, step: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Result<Option<Tensor>> {
    if a.dims() != b.dims() {
        return Ok(None);
    }
    let (a_storage, a_layout) = a.storage_and_layout();
    let (b_storage, b_layout) = b.storage_and_layout();
    let (Some(a_values), Some(b_values)) = (
        cpu_values(&a_storage, a_layout.contiguous_offsets()),
        cpu_values(&b_storage, b_layout.contiguous_offsets()),
    ) else {
        return Ok(None);
    };
    let mut out = vec![0f32; a_values.len()];
    match out.len() >= PARALLEL_MIN_VALUES {
        true => out
            .par_chunks_mut(VALUES_PER_TASK)
            .zip(a_values.par_chunks(VALUES_PER_TASK).zip(b_values.par_chunks(VALUES_PER_TASK)))
            .for_each(|(out, (a, b))| step(a, b, out)),
        false => step(a_values, b_values, &mut out),
    }
    Ok(Some(Tensor::from_vec(out, a.shape(), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_tensor(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 12.0
            })
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn sums_and_gated_activations_have_the_bits_of_candles_ops_on_one_thread_and_in_parallel() {
        // A decode step's rows, and a prefill's (over PARALLEL_MIN_VALUES, with a last chunk
        // shorter than VALUES_PER_TASK).
        for (rows, cols) in [(3, 1536), (57, 1537)] {
            let (a, b) = (random_tensor(rows, cols, 3), random_tensor(rows, cols, 5));
            let sum = sum_on_cpu(&a, &b).unwrap().unwrap();
            assert_eq!(bits(&sum), bits(&(&a + &b).unwrap()), "sum {rows}x{cols}");
            let gated = silu_times_on_cpu(&a, &b).unwrap().unwrap();
            let candle = (candle_nn::ops::silu(&a).unwrap() * &b).unwrap();
            assert_eq!(bits(&gated), bits(&candle), "silu · up {rows}x{cols}");
        }
    }

    #[test]
    fn tensors_the_loops_cannot_read_are_left_to_candle() {
        let a = random_tensor(4, 6, 7);
        let transposed = a.t().unwrap();
        assert!(sum_on_cpu(&a, &random_tensor(6, 4, 9)).unwrap().is_none(), "shapes differ");
        assert!(sum_on_cpu(&transposed, &random_tensor(6, 4, 9)).unwrap().is_none(), "not contiguous");
        assert!(silu_times_on_cpu(&a.to_dtype(candle_core::DType::F64).unwrap(), &a).unwrap().is_none(), "not f32");
    }
}
