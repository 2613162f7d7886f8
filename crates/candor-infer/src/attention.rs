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

use std::collections::HashMap;
use std::ops::Range;

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::kernels::{self, key_dots, key_dots_rows, reduce16, FUSED, LANES};
use crate::model::KeySegment;

/// One sequence's chunk: its query rows and where its cached positions are.
pub(crate) struct SequenceQueries<'a> {
    /// Queries `[1, kv_heads, group · s, d]`, rope applied; rows `g · s + i` are query head `g`
    /// of the group at chunk position `i`.
    pub(crate) q: Tensor,
    /// This layer's keys and values of positions `0..offset + s` (the chunk already written),
    /// in order: a shared prefix's buffer, then the sequence's own.
    pub(crate) segments: Vec<KeySegment<'a>>,
    /// Positions cached before the chunk.
    pub(crate) offset: usize,
    /// Chunk length.
    pub(crate) s: usize,
}

impl SequenceQueries<'_> {
    /// Keys visible to query row `row` of a head: up to the offset plus its chunk position,
    /// within the window.
    fn visible(&self, row: usize, window: Option<usize>) -> Range<usize> {
        let position = self.offset + row % self.s;
        let first = window.map_or(0, |w| (position + 1).saturating_sub(w));
        first..position + 1
    }

    /// An error unless the segments hold positions `0..offset + s` in order, each within its
    /// buffer, and the query rows are whole groups of the chunk.
    fn check(&self) -> Result<()> {
        let total = self.offset + self.s;
        let mut next = 0;
        for segment in &self.segments {
            let (_, _, capacity, _) = segment.keys.dims4()?;
            if segment.first != next || segment.end < segment.first || segment.end - segment.first > capacity {
                return Err(InferError::InvalidInput(format!(
                    "direct attention: a segment of positions {}..{} after position {next} in a {capacity}-position buffer",
                    segment.first, segment.end
                )));
            }
            next = segment.end;
        }
        let (_, _, rows, _) = self.q.dims4()?;
        if next != total || self.s == 0 || rows % self.s != 0 {
            return Err(InferError::InvalidInput(format!(
                "direct attention over positions 0..{next} for a chunk ending at {total}, {rows} query rows for a chunk of {}",
                self.s
            )));
        }
        Ok(())
    }
}

/// The query rows of several sequences' chunks attending to their caches, in one pass.
pub(crate) struct DirectAttention<'a> {
    pub(crate) sequences: &'a [SequenceQueries<'a>],
    /// `1 / √d`.
    pub(crate) scale: f32,
    /// Sliding window: a row sees itself and the `window - 1` positions before it.
    pub(crate) window: Option<usize>,
    /// Soft cap of the scores (`cap · tanh(score / cap)`, Gemma 2), if any.
    pub(crate) softcap: Option<f32>,
}

/// One head's cached keys and values of positions `first..end`, `[positions, d]` each.
#[derive(Clone, Copy)]
struct HeadSegment<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    first: usize,
    end: usize,
}

impl HeadSegment<'_> {
    /// The keys of positions `part` (within the segment), `d` values each.
    fn keys_of(&self, part: &Range<usize>, d: usize) -> &[f32] {
        &self.keys[(part.start - self.first) * d..(part.end - self.first) * d]
    }

    /// The values of positions `part` (within the segment), `d` values each.
    fn values_of(&self, part: &Range<usize>, d: usize) -> &[f32] {
        &self.values[(part.start - self.first) * d..(part.end - self.first) * d]
    }
}

/// A task: rows `first_row..first_row + rows` of one kv head of one sequence.
struct Tile {
    sequence: usize,
    head: usize,
    first_row: usize,
    rows: usize,
}

impl DirectAttention<'_> {
    /// Each sequence's attended rows `[1, kv_heads, group · s, d]`: query row at chunk
    /// position `i` sees cached positions `0..=offset + i`.
    pub(crate) fn run(&self) -> Result<Vec<Tensor>> {
        for sequence in self.sequences {
            sequence.check()?;
        }
        let Some(first) = self.sequences.first() else { return Ok(Vec::new()) };
        let (_, kv_heads, _, d) = first.q.dims4()?;
        // One read guard per distinct tensor: sequences extending one prefix read the same
        // buffer, and a lock is not taken twice by one thread.
        let mut guards = HashMap::new();
        for sequence in self.sequences {
            let tensors = sequence.segments.iter().flat_map(|segment| [segment.keys, segment.values]);
            for tensor in tensors.chain([&sequence.q]) {
                if let std::collections::hash_map::Entry::Vacant(entry) = guards.entry(tensor.id()) {
                    let (storage, layout) = tensor.storage_and_layout();
                    entry.insert((storage, layout.contiguous_offsets()));
                }
            }
        }
        let data = |tensor: &Tensor| -> Result<&[f32]> {
            let (storage, offsets) = &guards[&tensor.id()];
            cpu_slice(storage, *offsets)
        };
        let mut queries = Vec::with_capacity(self.sequences.len());
        let mut heads: Vec<Vec<Vec<HeadSegment<'_>>>> = Vec::with_capacity(self.sequences.len());
        for sequence in self.sequences {
            queries.push(data(&sequence.q)?);
            let mut per_head = vec![Vec::with_capacity(sequence.segments.len()); kv_heads];
            for segment in &sequence.segments {
                let (_, _, capacity, _) = segment.keys.dims4()?;
                let (keys, values) = (data(segment.keys)?, data(segment.values)?);
                for (head, segments) in per_head.iter_mut().enumerate() {
                    let at = head * capacity * d;
                    let positions = (segment.end - segment.first) * d;
                    segments.push(HeadSegment {
                        keys: &keys[at..at + positions],
                        values: &values[at..at + positions],
                        first: segment.first,
                        end: segment.end,
                    });
                }
            }
            heads.push(per_head);
        }
        let rows: Vec<usize> = self.sequences.iter().map(|sequence| sequence.q.dim(2)).collect::<candle_core::Result<_>>()?;
        let tiles = self.tiles(kv_heads, &rows);
        // Tiles in order of head, then sequences sharing a buffer, so that the tiles one
        // worker takes in a row read the same cached prefix: a prompt header that several
        // examples extend comes from memory once per step instead of once per example.
        let results: Vec<Vec<f32>> = tiles
            .par_iter()
            .map(|tile| {
                let at = (tile.head * rows[tile.sequence] + tile.first_row) * d;
                let mut out = vec![0f32; tile.rows * d];
                let queries = &queries[tile.sequence][at..at + tile.rows * d];
                self.tile(tile, d, queries, &heads[tile.sequence][tile.head], &mut out);
                out
            })
            .collect();
        let mut outs: Vec<Vec<f32>> = self.sequences.iter().map(|sequence| vec![0f32; sequence.q.elem_count()]).collect();
        for (tile, result) in tiles.iter().zip(results) {
            let at = (tile.head * rows[tile.sequence] + tile.first_row) * d;
            outs[tile.sequence][at..at + result.len()].copy_from_slice(&result);
        }
        outs.into_iter()
            .zip(self.sequences)
            .map(|(out, sequence)| Ok(Tensor::from_vec(out, sequence.q.dims(), &Device::Cpu)?))
            .collect()
    }

    /// The tasks: every head's query rows of every sequence in tiles of up to [`ROW_TILE`]
    /// rows, ordered by head, then by the buffer a sequence's first segment is in. A tile reads
    /// the keys and values its rows see once for all of them (one task per row read them
    /// again for every row, most of the attention's time on MASSIVE's 1,500-token prompts);
    /// tiles are smaller when the rows are too few to keep every core busy (a decode step of
    /// one sequence has as few as 3 kv heads).
    fn tiles(&self, kv_heads: usize, rows: &[usize]) -> Vec<Tile> {
        let rows_in_flight: usize = rows.iter().sum::<usize>() * kv_heads;
        let per_task = (rows_in_flight / (2 * rayon::current_num_threads())).max(1);
        // Sequences grouped by the buffer of their first segment, in order of first appearance.
        let mut groups = HashMap::new();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(self.sequences.len());
        for (i, sequence) in self.sequences.iter().enumerate() {
            let next = groups.len();
            let group = sequence.segments.first().map_or(next, |segment| *groups.entry(segment.keys.id()).or_insert(next));
            order.push((group, i));
        }
        order.sort_unstable();
        let mut tiles = Vec::new();
        for head in 0..kv_heads {
            for &(_, sequence) in &order {
                let tile = rows[sequence].min(ROW_TILE).min(per_task);
                for first_row in (0..rows[sequence]).step_by(tile) {
                    tiles.push(Tile { sequence, head, first_row, rows: tile.min(rows[sequence] - first_row) });
                }
            }
        }
        tiles
    }

    /// One tile's query rows (`queries` `[m, d]`) against its head's segments; `out` `[m, d]`.
    /// Each row's scores, softmax and weighted sum are its own (the same numbers whatever tile
    /// it is in, and however its positions are split among segments); the keys and values the
    /// rows share are read once.
    fn tile(&self, tile: &Tile, d: usize, queries: &[f32], segments: &[HeadSegment<'_>], out: &mut [f32]) {
        let sequence = &self.sequences[tile.sequence];
        let m = tile.rows;
        let ranges: Vec<Range<usize>> =
            (tile.first_row..tile.first_row + m).map(|row| sequence.visible(row, self.window)).collect();
        let start = ranges.iter().map(|r| r.start).min().unwrap_or(0);
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        let span = end - start;
        // Row i's probabilities over keys start..end, zero where it may not look.
        let mut probs = vec![0f32; m * span];
        let rows: Vec<&[f32]> = queries.chunks_exact(d).collect();
        row_scores(segments, &rows, &ranges, start, &mut probs);
        for (i, range) in ranges.iter().enumerate() {
            let scores = &mut probs[i * span + range.start - start..i * span + range.end - start];
            scores.iter_mut().for_each(|score| *score *= self.scale);
            if let Some(cap) = self.softcap {
                scores.iter_mut().for_each(|score| *score = cap * (*score / cap).tanh());
            }
            softmax_in_place(scores);
        }
        // Value sums in groups of up to four rows (their 64-dimension slabs fill 16 registers),
        // segment after segment: the sums carry on in position order.
        for (probs, out) in probs.chunks(4 * span).zip(out.chunks_mut(4 * d)) {
            for (segment, part) in pieces(segments, start..end) {
                let probs = &probs[part.start - start..];
                let values = segment.values_of(&part, d);
                match out.len() / d {
                    1 => weighted_sums::<1>(probs, span, values, out),
                    2 => weighted_sums::<2>(probs, span, values, out),
                    3 => weighted_sums::<3>(probs, span, values, out),
                    _ => weighted_sums::<4>(probs, span, values, out),
                }
            }
        }
    }
}

/// Query rows whose shared keys [`row_scores`] loads once for all of them.
const DOT_ROWS: usize = 4;

/// The dot products of each query row (`rows`, each seeing the keys `ranges[i]`) with the keys
/// it sees, into `probs` (row i's scores at `i · span`, key `start + k` at `k`): rows in groups
/// of up to [`DOT_ROWS`], the keys every row of a group sees loaded once for all of them
/// ([`key_dots_rows`]: a decode step's 3 query heads of a kv head read its keys once, not once
/// for a pair and again for the third), the others row by row; every score the bits
/// [`key_dots`] gives it.
fn row_scores(segments: &[HeadSegment<'_>], rows: &[&[f32]], ranges: &[Range<usize>], start: usize, probs: &mut [f32]) {
    let span = probs.len() / rows.len().max(1);
    for ((scores, rows), ranges) in probs.chunks_mut(DOT_ROWS * span.max(1)).zip(rows.chunks(DOT_ROWS)).zip(ranges.chunks(DOT_ROWS)) {
        let shared = keys_all_see(ranges);
        let mut per_row: Vec<&mut [f32]> = scores.chunks_mut(span.max(1)).collect();
        for (segment, part) in pieces(segments, shared.clone()) {
            let keys = segment.keys_of(&part, rows[0].len());
            let outs = per_row.iter_mut().map(|scores| &mut scores[part.start - start..part.end - start]).collect();
            match rows.len() {
                2 => group_dots::<2>(rows, keys, outs),
                3 => group_dots::<3>(rows, keys, outs),
                4 => group_dots::<4>(rows, keys, outs),
                // A lone row shares no keys with another: it is scored below.
                _ => {}
            }
        }
        for ((query, range), scores) in rows.iter().zip(ranges).zip(per_row) {
            let before = range.start..shared.start.clamp(range.start, range.end);
            let after = shared.end.clamp(range.start, range.end)..range.end;
            for (segment, part) in [before, after].into_iter().flat_map(|rest| pieces(segments, rest)) {
                key_dots(query, segment.keys_of(&part, query.len()), &mut scores[part.start - start..part.end - start]);
            }
        }
    }
}

/// The keys every one of two or more rows sees; empty for a lone row, or rows that share none
/// (a sliding window).
fn keys_all_see(ranges: &[Range<usize>]) -> Range<usize> {
    if ranges.len() < 2 {
        return 0..0;
    }
    let from = ranges.iter().map(|range| range.start).max().unwrap_or(0);
    let to = ranges.iter().map(|range| range.end).min().unwrap_or(0);
    from..to.max(from)
}

/// [`key_dots_rows`] of the `R` rows of a group, `outs` their scores of `keys` (one per row:
/// the caller's chunks of the group's scores).
fn group_dots<const R: usize>(rows: &[&[f32]], keys: &[f32], outs: Vec<&mut [f32]>) {
    if let (Ok(queries), Ok(outs)) = (<[&[f32]; R]>::try_from(rows), <[&mut [f32]; R]>::try_from(outs)) {
        key_dots_rows::<R>(queries, keys, outs);
    }
}

/// The parts of `range` in each segment, in order.
fn pieces<'s, 'a>(segments: &'s [HeadSegment<'a>], range: Range<usize>) -> impl Iterator<Item = (&'s HeadSegment<'a>, Range<usize>)> {
    segments.iter().filter_map(move |segment| {
        let part = range.start.max(segment.first)..range.end.min(segment.end);
        (part.start < part.end).then_some((segment, part))
    })
}

/// Most query rows of a head attended together.
const ROW_TILE: usize = 16;

/// Dimensions of a value row summed together in registers by [`weighted_sums`].
const SLAB: usize = kernels::VALUE_SLAB;

/// `out[i] += Σ_k p[i][k] · values[k]` for the `M` rows of `probs` (row `i` at `i · stride`;
/// `values` `[keys, d]`; `out` `[M, d]`), each element summed over `k` in order after what
/// `out` holds (so a row's sum over two segments is its sum over their positions in order).
/// The sums of a 64-dimension slab of every row stay in registers across the keys, and each
/// value row is read once for the `M` rows: summed into `out` in memory, each key waited for
/// the previous key's stores (a latency chain that made this loop a tenth of a MASSIVE run).
/// The slabs go through AVX-512 intrinsics where the CPU has them
/// ([`kernels::value_slab_sums`]), the same operations in the same order.
fn weighted_sums<const M: usize>(probs: &[f32], stride: usize, values: &[f32], out: &mut [f32]) {
    if !kernels::value_slab_sums::<M>(probs, stride, values, out) {
        plain_slab_sums::<M>(probs, stride, values, out);
    }
    let d = out.len() / M;
    let done = d / SLAB * SLAB;
    if done == d {
        // No dimensions past the slabs (head sizes 64, 128, 256): walking every key and row
        // for nothing was 2% of a 16-sequence decode step.
        return;
    }
    for (i, out) in out.chunks_exact_mut(d).enumerate() {
        for (k, value) in values.chunks_exact(d).enumerate() {
            let p = probs[i * stride + k];
            for (o, &v) in out[done..].iter_mut().zip(&value[done..]) {
                *o = multiply_add(p, v, *o);
            }
        }
    }
}

/// The slabs of [`weighted_sums`] in plain Rust (the compiler's vectors: 256-bit registers on
/// x86-64, where the 4 × 64 sums do not fit and spill to the stack).
fn plain_slab_sums<const M: usize>(probs: &[f32], stride: usize, values: &[f32], out: &mut [f32]) {
    let d = out.len() / M;
    for slab in 0..d / SLAB {
        let mut sums = [[0f32; SLAB]; M];
        for (i, sums) in sums.iter_mut().enumerate() {
            sums.copy_from_slice(&out[i * d + slab * SLAB..i * d + (slab + 1) * SLAB]);
        }
        for (k, value) in values.chunks_exact(d).enumerate() {
            let Ok(value) = <&[f32; SLAB]>::try_from(&value[slab * SLAB..(slab + 1) * SLAB]) else { continue };
            for (i, sums) in sums.iter_mut().enumerate() {
                let p = probs[i * stride + k];
                for j in 0..SLAB {
                    sums[j] = multiply_add(p, value[j], sums[j]);
                }
            }
        }
        for (i, sums) in sums.iter().enumerate() {
            out[i * d + slab * SLAB..i * d + (slab + 1) * SLAB].copy_from_slice(sums);
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

    fn tensor(values: &[f32], kv_heads: usize, n: usize, d: usize) -> Tensor {
        Tensor::from_vec(values.to_vec(), (1, kv_heads, n, d), &Device::Cpu).unwrap()
    }

    /// A sequence whose positions `0..offset + s` are all in one buffer.
    fn in_one_buffer<'a>(q: Tensor, keys: &'a Tensor, values: &'a Tensor, offset: usize, s: usize) -> SequenceQueries<'a> {
        SequenceQueries { q, segments: vec![KeySegment { keys, values, first: 0, end: offset + s }], offset, s }
    }

    fn attention(sequences: &[SequenceQueries<'_>], scale: f32, window: Option<usize>, softcap: Option<f32>) -> Vec<Vec<f32>> {
        let direct = DirectAttention { sequences, scale, window, softcap };
        direct.run().unwrap().iter().map(|out| out.flatten_all().unwrap().to_vec1().unwrap()).collect()
    }

    fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what}: element {i}: {x} vs {y}");
        }
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
            let (kt, vt) = (tensor(&keys, kv_heads, capacity, d), tensor(&values, kv_heads, capacity, d));
            let sequence = in_one_buffer(tensor(&q, kv_heads, rows, d), &kt, &vt, offset, s);
            let got = attention(&[sequence], 1.0 / (d as f32).sqrt(), None, None).remove(0);
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
        // A chunk of 7 positions of a group of 3 heads is 21 rows per head, attended in tiles
        // of several rows with value sums in fours; each row alone (s = 1 over the same keys,
        // one position at a time) gives the same bits, windowed and soft-capped.
        let (kv_heads, group, d, capacity, offset, s) = (2, 3, 128, 60, 41, 7);
        let rows = group * s;
        let q = random_values(kv_heads * rows * d, 7);
        let keys = random_values(kv_heads * capacity * d, 8);
        let values = random_values(kv_heads * capacity * d, 9);
        let (kt, vt) = (tensor(&keys, kv_heads, capacity, d), tensor(&values, kv_heads, capacity, d));
        let attend = |q: &[f32], offset: usize, s: usize| -> Vec<f32> {
            let sequence = in_one_buffer(tensor(q, kv_heads, group * s, d), &kt, &vt, offset, s);
            attention(&[sequence], 0.1, Some(17), Some(5.0)).remove(0)
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
    fn a_sequences_numbers_do_not_depend_on_a_shared_prefix_buffer_or_the_sequences_beside_it() {
        // Positions 0..offset + s of one buffer, against the same positions split as a shared
        // prefix (0..23, in a buffer with spare room) and an own buffer from 23 on, attended in
        // one pass with a second sequence reading the same prefix and a third with its own
        // buffer: every sequence gets the bits it gets alone in one buffer.
        let (kv_heads, group, d, capacity, split) = (2, 3, 64, 48, 23);
        let keys = random_values(kv_heads * capacity * d, 11);
        let values = random_values(kv_heads * capacity * d, 12);
        let (kt, vt) = (tensor(&keys, kv_heads, capacity, d), tensor(&values, kv_heads, capacity, d));
        // Positions first..first + n of the full buffer as a buffer of capacity `room`.
        let part = |data: &[f32], first: usize, n: usize, room: usize| -> Tensor {
            let mut out = vec![0f32; kv_heads * room * d];
            for h in 0..kv_heads {
                out[h * room * d..][..n * d].copy_from_slice(&data[(h * capacity + first) * d..][..n * d]);
            }
            tensor(&out, kv_heads, room, d)
        };
        let (shared_k, shared_v) = (part(&keys, 0, split, split + 5), part(&values, 0, split, split + 5));
        let chunks = [(30, 4), (split, 1), (40, 3)];
        let queries: Vec<Vec<f32>> = chunks.iter().enumerate().map(|(i, &(_, s))| random_values(kv_heads * group * s * d, 20 + i as u64)).collect();
        let alone: Vec<Vec<f32>> = chunks
            .iter()
            .zip(&queries)
            .map(|(&(offset, s), q)| attention(&[in_one_buffer(tensor(q, kv_heads, group * s, d), &kt, &vt, offset, s)], 0.125, None, None).remove(0))
            .collect();
        let owns: Vec<(Tensor, Tensor)> = chunks
            .iter()
            .map(|&(offset, s)| (part(&keys, split, offset + s - split, capacity), part(&values, split, offset + s - split, capacity)))
            .collect();
        let sequences: Vec<SequenceQueries<'_>> = chunks
            .iter()
            .zip(&queries)
            .zip(&owns)
            .enumerate()
            .map(|(i, ((&(offset, s), q), (own_k, own_v)))| {
                let own = KeySegment { keys: own_k, values: own_v, first: split, end: offset + s };
                let shared = KeySegment { keys: &shared_k, values: &shared_v, first: 0, end: split };
                let q = tensor(q, kv_heads, group * s, d);
                match i {
                    2 => in_one_buffer(q, &kt, &vt, offset, s),
                    _ => SequenceQueries { q, segments: vec![shared, own], offset, s },
                }
            })
            .collect();
        let together = attention(&sequences, 0.125, None, None);
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_same_bits(a, b, &format!("sequence {i}"));
        }
    }

    #[test]
    fn value_sums_give_the_bits_of_one_multiply_add_per_key_in_order() {
        // The AVX-512 slabs (where the CPU has them), the plain slabs and the tail past the last
        // slab against the loop the sums are defined by: each element, key after key.
        let random = |count: usize, seed: u32| -> Vec<f32> {
            (0..count as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007) as f32 / 5_003.0 - 1.0).collect()
        };
        fn check<const M: usize>(d: usize, keys: usize, random: &dyn Fn(usize, u32) -> Vec<f32>) {
            let stride = keys + 3;
            let (probs, values, start) = (random(M * stride, 1), random(keys * d, 2), random(M * d, 3));
            let mut out = start.clone();
            weighted_sums::<M>(&probs, stride, &values, &mut out);
            let mut plain = start.clone();
            plain_slab_sums::<M>(&probs, stride, &values, &mut plain);
            for i in 0..M {
                for j in 0..d {
                    let mut sum = start[i * d + j];
                    for k in 0..keys {
                        sum = multiply_add(probs[i * stride + k], values[k * d + j], sum);
                    }
                    assert_eq!(out[i * d + j].to_bits(), sum.to_bits(), "M {M} d {d}: row {i} element {j}");
                    if j < d / SLAB * SLAB {
                        assert_eq!(plain[i * d + j].to_bits(), sum.to_bits(), "plain M {M} d {d}: row {i} element {j}");
                    }
                }
            }
        }
        for (d, keys) in [(64, 37), (80, 5), (128, 130), (32, 9)] {
            check::<1>(d, keys, &random);
            check::<2>(d, keys, &random);
            check::<3>(d, keys, &random);
            check::<4>(d, keys, &random);
        }
    }

    #[test]
    fn segments_that_do_not_cover_the_chunk_are_an_error() {
        let t = |n: usize| Tensor::zeros((1, 1, n, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (k, v) = (t(4), t(4));
        // The chunk's position 4 lies past the 4-position buffer.
        let past_the_buffer = in_one_buffer(t(1), &k, &v, 4, 1);
        assert!(DirectAttention { sequences: &[past_the_buffer], scale: 0.5, window: None, softcap: None }.run().is_err());
        // A gap: the own segment starts at 3, the shared one ends at 2.
        let gap = SequenceQueries {
            q: t(1),
            segments: vec![KeySegment { keys: &k, values: &v, first: 0, end: 2 }, KeySegment { keys: &k, values: &v, first: 3, end: 4 }],
            offset: 3,
            s: 1,
        };
        assert!(DirectAttention { sequences: &[gap], scale: 0.5, window: None, softcap: None }.run().is_err());
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
