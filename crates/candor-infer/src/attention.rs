//! Attention of a few query rows (decode steps, forced dict pieces, short chunks) computed
//! directly on the CPU key/value buffer of a [`crate::KvCache`].
//!
//! Written here rather than left to candle's matmul: for a handful of queries against a long
//! cache, `q·Kᵀ` and `p·V` through gemm repack the whole cached keys and values on every call
//! (on MASSIVE's 1,500-token prompts, packing and the gemm micro-kernels took a third of a
//! run). Here each cached key and value row is read once per step, straight from the buffer,
//! for all the query rows that share its head. Scores, softmax and the weighted sum stay f32,
//! as in candle's path; only the order of the additions differs.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::kernels::dot;

/// Most query rows per kv head (query heads sharing it × chunk length) for the direct path.
pub(crate) const MAX_DIRECT_QUERY_ROWS: usize = 64;

/// The query rows of one sequence's chunk attending to its cache buffer.
pub(crate) struct DirectAttention<'a> {
    /// Queries `[1, kv_heads, group · s, d]`, rope applied; rows `g · s + i` are query head `g`
    /// of the group at chunk position `i`.
    pub(crate) q: &'a Tensor,
    /// This layer's key and value buffers `[1, kv_heads, capacity, d]`, the chunk already
    /// written at `offset..offset + s`.
    pub(crate) keys: &'a Tensor,
    pub(crate) values: &'a Tensor,
    /// Positions cached before the chunk.
    pub(crate) offset: usize,
    /// Chunk length.
    pub(crate) s: usize,
    /// `1 / √d`.
    pub(crate) scale: f32,
    /// Sliding window: a row sees itself and the `window - 1` positions before it.
    pub(crate) window: Option<usize>,
    /// Soft cap of the scores (`cap · tanh(score / cap)`, Gemma 2), if any.
    pub(crate) softcap: Option<f32>,
}

impl DirectAttention<'_> {
    /// The attended rows `[1, kv_heads, group · s, d]`: query row at chunk position `i` sees
    /// cached positions `0..=offset + i`.
    pub(crate) fn run(&self) -> Result<Tensor> {
        let (_, kv_heads, rows, d) = self.q.dims4()?;
        let (_, _, capacity, _) = self.keys.dims4()?;
        let total = self.offset + self.s;
        if total > capacity || rows % self.s != 0 {
            return Err(InferError::InvalidInput(format!(
                "direct attention over {total} positions of a {capacity}-position buffer, {rows} query rows for a chunk of {}",
                self.s
            )));
        }
        let q = self.q.contiguous()?;
        let (q_storage, q_layout) = q.storage_and_layout();
        let (k_storage, k_layout) = self.keys.storage_and_layout();
        let (v_storage, v_layout) = self.values.storage_and_layout();
        let q = cpu_slice(&q_storage, q_layout.contiguous_offsets())?;
        let keys = cpu_slice(&k_storage, k_layout.contiguous_offsets())?;
        let values = cpu_slice(&v_storage, v_layout.contiguous_offsets())?;
        // One task per query row (not per head: a decode step has as few as 3 kv heads to
        // spread over the cores); the rows of a head read the same keys and values from cache.
        let mut out = vec![0f32; kv_heads * rows * d];
        out.par_chunks_mut(d).enumerate().for_each(|(index, out)| {
            let (head, row) = (index / rows, index % rows);
            // Keys visible to this row: up to offset + its chunk position, within the window.
            let position = self.offset + row % self.s;
            let first = self.window.map_or(0, |w| (position + 1).saturating_sub(w));
            let visible = (head * capacity + first) * d..(head * capacity + position + 1) * d;
            self.row(&q[index * d..][..d], &keys[visible.clone()], &values[visible], out);
        });
        Ok(Tensor::from_vec(out, (1, kv_heads, rows, d), &Device::Cpu)?)
    }

    /// One query row against the keys and values it may see (`[visible, d]` each); `out` `[d]`.
    fn row(&self, query: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
        let d = query.len();
        let mut scores: Vec<f32> = keys.chunks_exact(d).map(|key| dot(query, key) * self.scale).collect();
        if let Some(cap) = self.softcap {
            scores.iter_mut().for_each(|score| *score = cap * (*score / cap).tanh());
        }
        softmax_in_place(&mut scores);
        weighted_sum(&scores, values, out);
    }
}

/// Dimensions of a value row summed together in registers by [`weighted_sum`].
const SLAB: usize = 64;

/// `out = Σ_k p[k] · values[k]` (`values` `[p.len(), out.len()]`), each element summed over `k`
/// in order. The sums of a 64-dimension slab stay in registers across the keys: summed into
/// `out` in memory, each key waited for the previous key's stores (a latency chain that made
/// this loop a tenth of a MASSIVE run).
fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len();
    for (slab, out) in out.chunks_mut(SLAB).enumerate() {
        let start = slab * SLAB;
        if let Ok(out) = <&mut [f32; SLAB]>::try_from(&mut *out) {
            let mut sums = [0f32; SLAB];
            for (p, value) in p.iter().zip(values.chunks_exact(d)) {
                if let Ok(value) = <&[f32; SLAB]>::try_from(&value[start..start + SLAB]) {
                    for i in 0..SLAB {
                        sums[i] += p * value[i];
                    }
                }
            }
            *out = sums;
            continue;
        }
        for (p, value) in p.iter().zip(values.chunks_exact(d)) {
            for (o, v) in out.iter_mut().zip(&value[start..]) {
                *o += p * v;
            }
        }
    }
}

/// Softmax of `row` in place (max subtracted first).
fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// The f32 values of a contiguous CPU tensor.
fn cpu_slice(storage: &Storage, offsets: Option<(usize, usize)>) -> Result<&[f32]> {
    match (storage, offsets) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Ok(&data[start..end]),
        _ => Err(InferError::InvalidInput("direct attention needs contiguous f32 CPU tensors".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Naive f64 causal attention of query row `r` of head `h` (chunk position `r % s`).
    /// `shape` is (query rows per head, buffer capacity, d); `chunk` (offset, s); `at` (h, r).
    fn naive(q: &[f32], keys: &[f32], values: &[f32], shape: (usize, usize, usize), chunk: (usize, usize), at: (usize, usize)) -> Vec<f64> {
        let ((rows, capacity, d), (offset, s), (h, r)) = (shape, chunk, at);
        let scale = 1.0 / (d as f64).sqrt();
        let visible = offset + r % s + 1;
        let query = &q[(h * rows + r) * d..][..d];
        let scores: Vec<f64> = (0..visible)
            .map(|j| {
                let key = &keys[(h * capacity + j) * d..][..d];
                query.iter().zip(key).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>() * scale
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        (0..d)
            .map(|c| (0..visible).map(|j| weights[j] / sum * f64::from(values[(h * capacity + j) * d + c])).sum())
            .collect()
    }

    #[test]
    fn direct_attention_matches_naive_causal_attention() {
        // Two kv heads, a group of 3 query heads, chunks of 1 and 4 after 37 cached positions,
        // in a buffer with spare capacity (positions past the chunk must be ignored).
        let (kv_heads, group, d, capacity) = (2, 3, 64, 50);
        for (offset, s) in [(37, 1), (37, 4), (0, 3)] {
            let rows = group * s;
            let q = random_values(kv_heads * rows * d, 1 + s as u64);
            let keys = random_values(kv_heads * capacity * d, 2);
            let values = random_values(kv_heads * capacity * d, 3);
            let tensor = |v: &[f32], n: usize| Tensor::from_vec(v.to_vec(), (1, kv_heads, n, d), &Device::Cpu).unwrap();
            let (qt, kt, vt) = (tensor(&q, rows), tensor(&keys, capacity), tensor(&values, capacity));
            let direct = DirectAttention { q: &qt, keys: &kt, values: &vt, offset, s, scale: 1.0 / (d as f32).sqrt(), window: None, softcap: None };
            let got: Vec<f32> = direct.run().unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for h in 0..kv_heads {
                for r in 0..rows {
                    let want = naive(&q, &keys, &values, (rows, capacity, d), (offset, s), (h, r));
                    for (c, w) in want.iter().enumerate() {
                        let g = f64::from(got[(h * rows + r) * d + c]);
                        assert!((g - w).abs() < 1e-5, "offset {offset} s {s} head {h} row {r} col {c}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_chunk_past_the_buffer_is_an_error() {
        let t = |n: usize| Tensor::zeros((1, 1, n, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (q, k, v) = (t(1), t(4), t(4));
        let direct = DirectAttention { q: &q, keys: &k, values: &v, offset: 4, s: 1, scale: 0.5, window: None, softcap: None };
        assert!(direct.run().is_err());
    }
}
