//! Attention of one sequence's chunk (decode steps, forced dict pieces, prompt prefills of any
//! length) computed directly on the CPU key/value buffer of a [`crate::KvCache`].
//!
//! Written here rather than left to candle's matmul: for a handful of queries against a long
//! cache, `q·Kᵀ` and `p·V` through gemm repack the whole cached keys and values on every call
//! (on MASSIVE's 1,500-token prompts, packing and the gemm micro-kernels took a third of a
//! run), and for a long chunk the matmul path builds the whole `[heads, s, s]` score square,
//! half of it masked. Here query rows are attended in tiles that read each cached key and
//! value row once for all the tile's rows, and each row reads only the keys it may see.
//! Scores, softmax and the weighted sum stay f32, as in candle's path; only the order of the
//! additions differs (and products are fused into the sums where the CPU has the instruction:
//! one rounding instead of two).

use std::ops::Range;

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::kernels::{key_dots, reduce16, FUSED, LANES};

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
    /// Query rows of all the sequences attending at the same time (these included).
    pub(crate) rows_in_flight: usize,
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
        // Tasks of up to ROW_TILE query rows of one head: a tile reads the head's cached keys
        // and values from memory once for all its rows (one task per row read them again for
        // every row, and the reads were most of the attention's time on MASSIVE's
        // 1,500-token prompts). Smaller tiles when the rows in flight (sequences of a batch
        // attend in parallel around this) are too few to keep every core busy: a decode step
        // of one sequence has as few as 3 kv heads.
        let per_task = self.rows_in_flight / (2 * rayon::current_num_threads());
        let tile = rows.min(ROW_TILE).min(per_task.max(1));
        let mut out = vec![0f32; kv_heads * rows * d];
        out.par_chunks_mut(rows * d).enumerate().for_each(|(head, head_out)| {
            head_out.par_chunks_mut(tile * d).enumerate().for_each(|(index, out)| {
                let head_keys = &keys[head * capacity * d..(head + 1) * capacity * d];
                let head_values = &values[head * capacity * d..(head + 1) * capacity * d];
                let first_row = index * tile;
                let queries = &q[(head * rows + first_row) * d..][..out.len()];
                self.tile(first_row, d, queries, head_keys, head_values, out);
            });
        });
        Ok(Tensor::from_vec(out, (1, kv_heads, rows, d), &Device::Cpu)?)
    }

    /// Keys visible to query row `row` of a head: up to the offset plus its chunk position,
    /// within the window.
    fn visible(&self, row: usize) -> Range<usize> {
        let position = self.offset + row % self.s;
        let first = self.window.map_or(0, |w| (position + 1).saturating_sub(w));
        first..position + 1
    }

    /// Query rows `first_row..` of one head (`queries` `[m, d]`) against the head's keys and
    /// values (`[capacity, d]`); `out` `[m, d]`. Each row's scores, softmax and weighted sum
    /// are its own (the same numbers whatever tile it is in); the keys and values the rows
    /// share are read once.
    fn tile(&self, first_row: usize, d: usize, queries: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
        let m = out.len() / d;
        let ranges: Vec<Range<usize>> = (first_row..first_row + m).map(|row| self.visible(row)).collect();
        let start = ranges.iter().map(|r| r.start).min().unwrap_or(0);
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        let span = end - start;
        // Row i's probabilities over keys start..end, zero where it may not look.
        let mut probs = vec![0f32; m * span];
        for (i, (range, query)) in ranges.iter().zip(queries.chunks_exact(d)).enumerate() {
            let scores = &mut probs[i * span + range.start - start..i * span + range.end - start];
            key_dots(query, &keys[range.start * d..range.end * d], scores);
            scores.iter_mut().for_each(|score| *score *= self.scale);
            if let Some(cap) = self.softcap {
                scores.iter_mut().for_each(|score| *score = cap * (*score / cap).tanh());
            }
            softmax_in_place(scores);
        }
        let values = &values[start * d..end * d];
        // Value sums in groups of up to four rows (their 64-dimension slabs fill 16 registers).
        for (probs, out) in probs.chunks(4 * span).zip(out.chunks_mut(4 * d)) {
            match out.len() / d {
                1 => weighted_sums::<1>(probs, values, out),
                2 => weighted_sums::<2>(probs, values, out),
                3 => weighted_sums::<3>(probs, values, out),
                _ => weighted_sums::<4>(probs, values, out),
            }
        }
    }
}

/// Most query rows of a head attended together.
const ROW_TILE: usize = 16;

/// Dimensions of a value row summed together in registers by [`weighted_sums`].
const SLAB: usize = 64;

/// `out[i] = Σ_k p[i][k] · values[k]` for the `M` rows of `probs` (`[M, keys]`; `values`
/// `[keys, d]`; `out` `[M, d]`), each element summed over `k` in order. The sums of a
/// 64-dimension slab of every row stay in registers across the keys, and each value row is
/// read once for the `M` rows: summed into `out` in memory, each key waited for the previous
/// key's stores (a latency chain that made this loop a tenth of a MASSIVE run).
fn weighted_sums<const M: usize>(probs: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len() / M;
    let span = probs.len() / M;
    let slabs = d / SLAB;
    for slab in 0..slabs {
        let mut sums = [[0f32; SLAB]; M];
        for (k, value) in values.chunks_exact(d).enumerate() {
            let Ok(value) = <&[f32; SLAB]>::try_from(&value[slab * SLAB..(slab + 1) * SLAB]) else { continue };
            for (i, sums) in sums.iter_mut().enumerate() {
                let p = probs[i * span + k];
                for j in 0..SLAB {
                    sums[j] = multiply_add(p, value[j], sums[j]);
                }
            }
        }
        for (i, sums) in sums.iter().enumerate() {
            out[i * d + slab * SLAB..i * d + (slab + 1) * SLAB].copy_from_slice(sums);
        }
    }
    for (i, out) in out.chunks_exact_mut(d).enumerate() {
        for (k, value) in values.chunks_exact(d).enumerate() {
            let p = probs[i * span + k];
            for (o, &v) in out[slabs * SLAB..].iter_mut().zip(&value[slabs * SLAB..]) {
                *o = multiply_add(p, v, *o);
            }
        }
    }
}

/// `p · v + sum`, fused where the build has the instruction.
#[inline(always)]
fn multiply_add(p: f32, v: f32, sum: f32) -> f32 {
    match FUSED {
        true => p.mul_add(v, sum),
        false => sum + p * v,
    }
}

/// Softmax of `row` in place (max subtracted first): max and sum in [`LANES`] partial lanes,
/// the sum's lanes added as a tree ([`reduce16`]), exponentials by [`exp_nonpositive`]. Each
/// step is element-wise within a lane, so the compiler keeps it in vector registers; the
/// library `expf` was one call per score (6% of a MASSIVE run) and the running sum one long
/// chain of dependent additions.
fn softmax_in_place(row: &mut [f32]) {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in maxima.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = chunks.remainder().iter().fold(maxima.into_iter().fold(f32::NEG_INFINITY, f32::max), |m, &v| m.max(v));
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (lane, v) in sums.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_nonpositive(*v - max);
            *lane += *v;
        }
    }
    let mut sum = reduce16(sums);
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `e^x` for `x ≤ 0` (a score minus the row's maximum), within 2 ulp of the exact value; 0
/// below -87 (where `e^x` < 1.7e-38 and `2^n` would leave the normal range).
///
/// Written here, not `f32::exp`: the library function is a call per value that the compiler
/// cannot vectorize. The usual reduction: `n` = x·log₂e rounded to the nearest integer (adding
/// 1.5·2²³ leaves it in the low mantissa bits), `r = x - n·ln 2` in two parts (Cody–Waite),
/// `e^r` by its Taylor polynomial to degree 7 (|r| ≤ ln 2 / 2: truncation error below 5e-9),
/// times `2^n` built from its exponent bits. The same operations on every build, so the same
/// bits wherever the multiply-adds are fused alike.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2²³
    const LN2_HIGH: f32 = 0.693_359_4; // ln 2 to 10 significant bits: n · LN2_HIGH is exact
    const LN2_LOW: f32 = -2.121_944_4e-4; // ln 2 - LN2_HIGH
    const TAYLOR: [f32; 8] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
    let clamped = x.max(-87.0);
    let shifted = multiply_add(clamped, std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = multiply_add(n, -LN2_HIGH, clamped);
    let r = multiply_add(n, -LN2_LOW, r);
    let polynomial = TAYLOR[..7].iter().rev().fold(TAYLOR[7], |p, &c| multiply_add(p, r, c));
    let exponent = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(127);
    let power = f32::from_bits(exponent << 23);
    match x < -87.0 {
        true => 0.0,
        false => polynomial * power,
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
            let direct = DirectAttention { rows_in_flight: 1, q: &qt, keys: &kt, values: &vt, offset, s, scale: 1.0 / (d as f32).sqrt(), window: None, softcap: None };
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
    fn a_rows_numbers_do_not_depend_on_the_tile_it_is_attended_in() {
        // A chunk of 7 positions of a group of 3 heads is 21 rows: tiles of 16 and 5, value
        // sums in fours (4, 4, 4, 4, 4, 1); each row alone (s = 1 over the same keys, one
        // position at a time) gives the same bits, windowed and soft-capped.
        let (kv_heads, group, d, capacity, offset, s) = (2, 3, 128, 60, 41, 7);
        let rows = group * s;
        let q = random_values(kv_heads * rows * d, 7);
        let keys = random_values(kv_heads * capacity * d, 8);
        let values = random_values(kv_heads * capacity * d, 9);
        let tensor = |v: &[f32], n: usize| Tensor::from_vec(v.to_vec(), (1, kv_heads, n, d), &Device::Cpu).unwrap();
        let (kt, vt) = (tensor(&keys, capacity), tensor(&values, capacity));
        let attend = |q: &[f32], offset: usize, s: usize| -> Vec<f32> {
            let qt = tensor(q, group * s);
            let direct = DirectAttention { rows_in_flight: if s == 1 { 1 } else { 1000 }, q: &qt, keys: &kt, values: &vt, offset, s, scale: 0.1, window: Some(17), softcap: Some(5.0) };
            direct.run().unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        let together = attend(&q, offset, s);
        for i in 0..s {
            // Position i's query rows (head g's row is g · s + i in the chunk).
            let alone_q: Vec<f32> = (0..kv_heads)
                .flat_map(|h| (0..group).flat_map(move |g| (h * rows + g * s + i) * d..(h * rows + g * s + i + 1) * d))
                .map(|at| q[at])
                .collect();
            let alone = attend(&alone_q, offset + i, 1);
            for h in 0..kv_heads {
                for g in 0..group {
                    for c in 0..d {
                        let (a, b) = (alone[(h * group + g) * d + c], together[(h * rows + g * s + i) * d + c]);
                        assert_eq!(a.to_bits(), b.to_bits(), "head {h} query {g} position {i} dim {c}: {a} alone, {b} in the chunk");
                    }
                }
            }
        }
    }

    #[test]
    fn a_chunk_past_the_buffer_is_an_error() {
        let t = |n: usize| Tensor::zeros((1, 1, n, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (q, k, v) = (t(1), t(4), t(4));
        let direct = DirectAttention { rows_in_flight: 1, q: &q, keys: &k, values: &v, offset: 4, s: 1, scale: 0.5, window: None, softcap: None };
        assert!(direct.run().is_err());
    }

    #[test]
    fn exp_nonpositive_is_within_two_ulp_of_the_exact_exponential() {
        let mut worst = 0f64;
        for step in 0..=2_000_000u32 {
            let x = -87.0 * step as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            worst = worst.max((exp_nonpositive(x) as f64 - exact).abs() / exact);
        }
        assert!(worst <= 2.0 * f32::EPSILON as f64, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-87.5), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_matches_the_f64_softmax_on_long_rows_with_a_tail() {
        for len in [1, 15, 16, 17, 1500, 1537] {
            let mut row: Vec<f32> = random_values(len, len as u64).iter().map(|v| 30.0 * v).collect();
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            softmax_in_place(&mut row);
            for (p, e) in row.iter().zip(&exps) {
                assert!((*p as f64 - e / sum).abs() <= 1e-6 * (e / sum) + 1e-12, "len {len}: {p} vs {}", e / sum);
            }
        }
    }
}
