//! Rotary position embedding on the CPU, applied in the same pass that lays the projected rows
//! `[b · s, heads · d]` out as heads `[b, heads, s, d]`.
//!
//! Written here rather than left to candle-nn's `rotary_emb::rope`, which does the same
//! arithmetic: its CPU loop indexes with bounds checks and a per-element branch that keep it
//! scalar (perf: 5.8% of a 4-example MASSIVE run and 3% of a 16-sequence decode step were that
//! loop), and it needs the heads already transposed into a contiguous copy first. Here every
//! element is `x₁ · cos − x₂ · sin` and `x₁ · sin + x₂ · cos` with the products rounded before
//! the sum, as candle computes it, so the results are the same bits (the test says so); the
//! plain slices let the compiler use vector registers. Other devices keep candle's kernels.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements below which the heads are roped on the calling thread: a decode step's few heads
/// cost less than waking a worker.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// [`rope_into_heads`] on tensors: `rows` `[b · s, heads · d]` and `cos`, `sin` `[s, d / 2]`
/// to roped heads `[b, heads, s, d]`; `None` where they are not contiguous f32 CPU tensors
/// (candle's kernels do those).
pub(crate) fn roped_heads_on_cpu(rows: &Tensor, shape: (usize, usize, usize, usize), cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    let (b, s, heads, d) = shape;
    let tables = cos.dims() == [s, d / 2] && sin.dims() == [s, d / 2];
    if !tables || rows.elem_count() != b * s * heads * d || d % 2 != 0 {
        return Ok(None);
    }
    let (rows_storage, rows_layout) = rows.storage_and_layout();
    let (cos_storage, cos_layout) = cos.storage_and_layout();
    let (sin_storage, sin_layout) = sin.storage_and_layout();
    let (Some(rows), Some(cos), Some(sin)) = (
        cpu_values(&rows_storage, rows_layout.contiguous_offsets()),
        cpu_values(&cos_storage, cos_layout.contiguous_offsets()),
        cpu_values(&sin_storage, sin_layout.contiguous_offsets()),
    ) else {
        return Ok(None);
    };
    let roped = rope_into_heads(rows, shape, cos, sin);
    Ok(Some(Tensor::from_vec(roped, (b, heads, s, d), &Device::Cpu)?))
}

/// The f32 values of a contiguous CPU tensor's storage.
pub(crate) fn cpu_values(storage: &Storage, offsets: Option<(usize, usize)>) -> Option<&[f32]> {
    match (storage, offsets) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Some(&data[start..end]),
        _ => None,
    }
}

/// `rows` `[b · s, heads · d]` (row-major) as heads `[b, heads, s, d]`, each head's pair of
/// halves `(x₁, x₂)` at chunk position `t` rotated by `cos[t]`, `sin[t]` (`[s, d / 2]` each).
pub(crate) fn rope_into_heads(rows: &[f32], (b, s, heads, d): (usize, usize, usize, usize), cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; b * heads * s * d];
    let head = |(index, dst): (usize, &mut [f32])| {
        let (batch, h) = (index / heads, index % heads);
        for (t, dst) in dst.chunks_exact_mut(d).enumerate() {
            let at = ((batch * s + t) * heads + h) * d;
            rotate(&rows[at..at + d], &cos[t * d / 2..(t + 1) * d / 2], &sin[t * d / 2..(t + 1) * d / 2], dst);
        }
    };
    match out.len() >= PARALLEL_MIN_ELEMENTS {
        true => out.par_chunks_mut(s * d).enumerate().for_each(head),
        false => out.chunks_mut(s * d).enumerate().for_each(head),
    }
    out
}

/// One head row: `dst = (x₁ · cos − x₂ · sin, x₁ · sin + x₂ · cos)` for `src = (x₁, x₂)`.
#[inline(always)]
fn rotate(src: &[f32], cos: &[f32], sin: &[f32], dst: &mut [f32]) {
    let half = src.len() / 2;
    let (x1, x2) = src.split_at(half);
    let (low, high) = dst.split_at_mut(half);
    for ((((low, high), (&a, &b)), &c), &s) in low.iter_mut().zip(high.iter_mut()).zip(x1.iter().zip(x2)).zip(cos).zip(sin) {
        *low = a * c - b * s;
        *high = a * s + b * c;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn roped_heads_have_the_bits_of_candles_rope_after_the_transpose() {
        // Decode steps (s = 1), prefill chunks, batches of branches, a head of 8 and of 64,
        // and one large enough to run in parallel.
        for (b, s, heads, d) in [(1, 1, 9, 64), (1, 7, 3, 64), (3, 5, 4, 8), (2, 130, 9, 64)] {
            let rows = random_values(b * s * heads * d, (b * 1000 + s * 10 + heads) as u64);
            let cos = random_values(s * d / 2, 7);
            let sin = random_values(s * d / 2, 11);
            let ours = rope_into_heads(&rows, (b, s, heads, d), &cos, &sin);
            let x = Tensor::from_vec(rows, (b, s, heads, d), &Device::Cpu).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let cos = Tensor::from_vec(cos, (s, d / 2), &Device::Cpu).unwrap();
            let sin = Tensor::from_vec(sin, (s, d / 2), &Device::Cpu).unwrap();
            let candle = candle_nn::rotary_emb::rope(&x, &cos, &sin).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(ours.len(), candle.len());
            for (i, (a, c)) in ours.iter().zip(&candle).enumerate() {
                assert_eq!(a.to_bits(), c.to_bits(), "shape {:?} element {i}: {a} vs candle's {c}", (b, s, heads, d));
            }
        }
    }
}
