//! Exact f32 kernels for GGUF block formats: rows of a quantized weight are dequantized into f32
//! (bit for bit the values candle's and ggml's reference dequantizers give) or multiplied with
//! f32 activations, which are never rounded to 8 bits. A product is the dot of each dequantized
//! weight row with each activation row, 16 partial sums added as a tree: the same arithmetic for
//! quantized and dense weights and whatever rows are batched together; weight rows are
//! prefetched ahead.
//!
//! Written here rather than taken from candle: candle's `to_float` is scalar code behind a
//! `Vec`-returning API (41% of quantized decode time went there), and its fast `vec_dot` kernels
//! quantize the activations to 8 bits, which changes the probabilities. The plain build is Rust
//! over fixed-size blocks that LLVM vectorises (aarch64 always has NEON, which it uses); on
//! x86-64 the product runs on intrinsics instead ([`x86`]: AVX-512 or AVX2 + FMA, chosen at run
//! time), with the plain build's arithmetic lane by lane. `CANDOR_PORTABLE_KERNELS=1` forces the
//! plain build, `=avx2` the AVX2 one (tests call each build directly).

// The only unsafe code is the call of a vector build after the run-time check that the CPU
// supports it (`is_x86_feature_detected!`), which is what makes that call sound, a prefetch, and
// the gemm call of a column block (with its checks).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::error::{InferError, Result};

#[cfg(target_arch = "x86_64")]
mod x86;

/// The GGUF block formats with their own kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl BlockFormat {
    /// The format of `dtype`, when it has a kernel here.
    pub(crate) fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Values per block.
    pub(crate) fn block_values(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }
}

/// The builds of the kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Intrinsics on 512-bit registers ([`x86::rows_dot_avx512`]).
    Avx512,
    /// Intrinsics on 256-bit registers with fused multiply-adds ([`x86::rows_dot_avx2`]).
    Avx2,
    /// Plain Rust that the compiler vectorises for whatever the build targets.
    Portable,
}

/// The build this CPU runs (`CANDOR_PORTABLE_KERNELS=1` forces the plain one,
/// `CANDOR_PORTABLE_KERNELS=avx2` the AVX2 one on an AVX-512 CPU).
fn build() -> Build {
    static CHOICE: OnceLock<Build> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let forced = std::env::var("CANDOR_PORTABLE_KERNELS").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2 && is_x86_feature_detected!("avx512f");
            match forced.as_str() {
                "1" => Build::Portable,
                "avx2" if avx2 => Build::Avx2,
                _ if avx512 => Build::Avx512,
                _ if avx2 => Build::Avx2,
                _ => Build::Portable,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = forced;
            Build::Portable
        }
    })
}

/// Whether the AVX2 + FMA build of the plain-Rust kernels (dequantization, dense dots) runs.
fn use_avx2() -> bool {
    build() != Build::Portable
}

/// Which build of the quantized-weight kernels runs on this CPU: `"avx512"`, `"avx2+fma"` or
/// `"portable"`.
pub fn kernel_build() -> &'static str {
    match build() {
        Build::Avx512 => "avx512",
        Build::Avx2 => "avx2+fma",
        Build::Portable => "portable",
    }
}

/// Calls `$body` with the decoder of `$format` and its block shape as const generics, then the
/// `[$extra]` ones.
macro_rules! with_decoder {
    ($format:expr, $body:ident, [$($extra:expr),*], ($($arg:expr),*)) => {
        match $format {
            BlockFormat::Q4_0 => $body::<18, 32, 1, false $(, $extra)*>(q4_0, $($arg),*),
            BlockFormat::Q4_1 => $body::<20, 32, 1, true $(, $extra)*>(q4_1, $($arg),*),
            BlockFormat::Q5_0 => $body::<22, 32, 1, false $(, $extra)*>(q5_0, $($arg),*),
            BlockFormat::Q5_1 => $body::<24, 32, 1, true $(, $extra)*>(q5_1, $($arg),*),
            BlockFormat::Q8_0 => $body::<34, 32, 1, false $(, $extra)*>(q8_0, $($arg),*),
            BlockFormat::Q4K => $body::<144, 256, 8, true $(, $extra)*>(q4_k, $($arg),*),
            BlockFormat::Q5K => $body::<176, 256, 8, true $(, $extra)*>(q5_k, $($arg),*),
            BlockFormat::Q6K => $body::<210, 256, 16, false $(, $extra)*>(q6_k, $($arg),*),
        }
    };
}

/// Dequantizes whole rows: `rows` is a run of blocks, `out` receives their values.
/// `out.len()` must be `rows.len() / block_bytes * block_values`.
pub(crate) fn dequantize(format: BlockFormat, rows: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() checked at run time that the CPU has AVX2 and FMA.
        return unsafe { dequantize_avx2(format, rows, out) };
    }
    dequantize_portable(format, rows, out)
}

/// f32 values in a 64-byte cache line.
const CACHE_LINE_FLOATS: usize = 16;

/// The activation rows of a product, `[n, cols]` row-major, with the interleaved copy the
/// vector builds read: for each run of 16 columns, the 16 values of row 0, then of row 1, …, so
/// that a tile of rows is one contiguous stretch for every run. Built once per product (the
/// activations are small next to the weights) and shared by its tasks.
pub(crate) struct Activations<'a> {
    rows: &'a [f32],
    n: usize,
    cols: usize,
    interleaved: Vec<f32>,
    /// Where the interleaved values start in `interleaved`: the first 64-byte boundary.
    start: usize,
}

impl<'a> Activations<'a> {
    /// `x` is `[n, cols]` row-major (`x.len()` a multiple of `cols`).
    pub(crate) fn new(x: &'a [f32], cols: usize) -> Self {
        let n = x.len() / cols.max(1);
        // Started on a cache line, so that no 16-lane load straddles two (each would cost two
        // loads): 16 rows × 1,536 columns against 16 Q4_1 rows went from 2.1 to 2.6 G fused
        // multiply-adds/s, 16 sequences decoded together from 262-270 to 287-295 tok/s.
        let mut interleaved = vec![0f32; cols / LANES * n * LANES + CACHE_LINE_FLOATS];
        let start = interleaved.as_ptr().align_offset(CACHE_LINE_FLOATS * size_of::<f32>()).min(CACHE_LINE_FLOATS - 1);
        for (t, row) in x.chunks_exact(cols.max(1)).enumerate() {
            for (run, values) in row.chunks_exact(LANES).enumerate() {
                let at = start + (run * n + t) * LANES;
                interleaved[at..at + LANES].copy_from_slice(values);
            }
        }
        Self { rows: x, n, cols, interleaved, start }
    }

    /// Activation rows.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// For each run of 16 columns, the 16 values of each row in turn; starts on a cache line.
    /// Read by the x86-64 kernels (and the tests).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn interleaved(&self) -> &[f32] {
        &self.interleaved[self.start..]
    }
}

/// A block of whole columns of a `[n, width]` result of `x · wᵀ`, to be filled by
/// [`ColumnBlock::gemm_x_wt`] on whichever thread holds it. [`column_blocks`] cuts a result
/// into blocks that share no column, so blocks filled at the same time on different threads
/// never write the same value.
pub(crate) struct ColumnBlock<'a> {
    result: *mut f32,
    n: usize,
    width: usize,
    columns: std::ops::Range<usize>,
    _result: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a block writes only its own columns of the result (checked in `gemm_x_wt`), the blocks
// of a result cover disjoint columns (they are made only by `column_blocks`, which holds the
// result's unique borrow for their lifetime), so sending blocks to other threads lets no two
// threads write one value, and nothing else reads the result while they exist.
unsafe impl Send for ColumnBlock<'_> {}

/// Fewest columns of a block (unless the whole result is narrower). gemm multiplies small
/// products another way: a dot-product path when `m · n` ≤ 256 and, when `m` and `n` are both
/// at most 64, 512-deep slices of the sums instead of its cache-sized ones (k = 576: 512 + 64
/// instead of 288 + 288). Blocks of more than 64 columns, with the 32 activation rows or more
/// of the gemm path, take the path of the whole product, so every value has the bits of one
/// gemm over the whole weight, whatever the blocks.
const MIN_BLOCK_COLUMNS: usize = 80;

/// `result` (`[n, width]` row-major) cut into blocks of `block_width` columns, at least
/// [`MIN_BLOCK_COLUMNS`], left to right; a remainder narrower than that joins the block before.
pub(crate) fn column_blocks(result: &mut [f32], width: usize, block_width: usize) -> Result<Vec<ColumnBlock<'_>>> {
    if width == 0 || !result.len().is_multiple_of(width) {
        return Err(InferError::InvalidInput(format!(
            "a result of {} values cut into blocks of {width} columns",
            result.len()
        )));
    }
    let block_width = block_width.max(MIN_BLOCK_COLUMNS);
    let mut starts: Vec<usize> = (0..width).step_by(block_width).collect();
    if starts.len() > 1 && width - starts[starts.len() - 1] < MIN_BLOCK_COLUMNS {
        starts.pop();
    }
    let (n, start) = (result.len() / width, result.as_mut_ptr());
    let ends = starts.iter().skip(1).copied().chain([width]);
    Ok(starts
        .iter()
        .zip(ends)
        .map(|(&first, end)| ColumnBlock { result: start, n, width, columns: first..end, _result: std::marker::PhantomData })
        .collect())
}

impl ColumnBlock<'_> {
    /// The result's columns this block holds.
    pub(crate) fn columns(&self) -> std::ops::Range<usize> {
        self.columns.clone()
    }

    /// Fills the block: `result[t, first + j] = Σ_c x[t, c] · w[j, c]` for the `n` rows of `x`
    /// (row-major, `cols` wide) and the block's weight rows given column after column
    /// (`w_by_columns[c · count + j]` is `w[j, c]`), by the f32 gemm candle's `matmul` runs, with
    /// the same alpha and beta, so the same sums (tested against candle's matmul), on this
    /// thread: the caller runs blocks in parallel.
    ///
    /// Why the weight by columns: gemm computes a row-major result as its transpose, the weight
    /// as its left operand, which it copies into panels of 64 weight rows one column at a time;
    /// from weight rows it gathered each column's 64 values 2,304 bytes apart (15% of a prefill
    /// with gemm's AVX-512 kernels, perf), from columns it is one contiguous copy.
    pub(crate) fn gemm_x_wt(self, x: &[f32], w_by_columns: &[f32], cols: usize) -> Result<()> {
        let count = self.columns.len();
        if cols == 0 || x.len() != self.n * cols || w_by_columns.len() != count * cols {
            return Err(InferError::InvalidInput(format!(
                "gemm of {} activations and {} weights of {cols} columns into a block of {count} of {} columns for {} rows",
                x.len(),
                w_by_columns.len(),
                self.width,
                self.n
            )));
        }
        let stride = |s: usize| s as isize;
        // SAFETY: `x` holds `n` rows and `w_by_columns` `cols` columns of `count` values (checked
        // above); the outputs `t * width + first + j` (t < n, j < count) lie inside the
        // `n * width` result that `column_blocks` borrowed, in this block's columns, which no
        // other block writes; the result does not alias `x` or the weights (it is mutably
        // borrowed).
        unsafe {
            gemm::gemm(
                self.n,
                count,
                cols,
                self.result.add(self.columns.start),
                1,
                stride(self.width),
                false,
                x.as_ptr(),
                1,
                stride(cols),
                w_by_columns.as_ptr(),
                1,
                stride(count),
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
        Ok(())
    }
}

/// Weight rows written column after column: `out[c · count + first + i] = rows[i · cols + c]`
/// for the `rows.len() / cols` rows (at most 16) and every column `c` (the layout of
/// [`ColumnBlock::gemm_x_wt`]'s weights, `count` values per column). The AVX-512 build moves 16
/// rows × 16 columns at a time through registers; value by value, this was 17% of a prefill
/// (perf), more than the copy gemm made from rows.
pub(crate) fn write_columns(rows: &[f32], cols: usize, out: &mut [f32], count: usize, first: usize) {
    let done = columns_written_in_registers(rows, cols, out, count, first);
    let height = rows.len() / cols.max(1);
    for c in done..cols {
        let column = &mut out[c * count + first..c * count + first + height];
        for (i, value) in column.iter_mut().enumerate() {
            *value = rows[i * cols + c];
        }
    }
}

/// The columns [`write_columns`] moves through AVX-512 registers (the first ones, in tiles of
/// 16), where the CPU has AVX-512 and there are 16 rows: how many it wrote.
fn columns_written_in_registers(rows: &[f32], cols: usize, out: &mut [f32], count: usize, first: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if build() == Build::Avx512 && cols > 0 && rows.len() == LANES * cols && first + LANES <= count {
        let tiles = cols / LANES;
        if out.len() >= (tiles * LANES).saturating_sub(1) * count + first + LANES {
            // SAFETY: build() checked at run time that the CPU has AVX-512F; `rows` holds 16
            // rows of `cols` values, and every store `c · count + first + 0..16` for `c` below
            // `tiles · 16` lies inside `out` (checked just above).
            unsafe { x86::write_column_tiles_avx512(rows, cols, tiles, out, count, first) };
            return tiles * LANES;
        }
    }
    0
}

/// `out[i] = silu(gate[i]) · up[i]`, the feed-forward's gated activation of SiLU models:
/// `g / (1 + e^(-g))` then the product, rounded to f32 at each step as candle's `silu` and
/// `mul` round them, so the same bits wherever the exponential has them. The AVX-512 build
/// computes e^x eight at a time by glibc's own algorithm ([`x86`]), so on glibc it is `f32::exp`
/// bit for bit; the plain build calls `f32::exp`. Library `expf` one value at a time was 1.4%
/// of a 16-sequence decode step and 2.3% of a prefill (perf), the loop around it another 1%.
pub(crate) fn silu_times(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if build() == Build::Avx512 {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        return unsafe { x86::silu_times_avx512(gate, up, out) };
    }
    silu_times_plain(gate, up, out)
}

/// The plain build of [`silu_times`]: candle's `silu` formula, then the product.
fn silu_times_plain(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((y, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *y = g / (1.0 + (-g).exp()) * u;
    }
}

/// `out[t * rows.len() + r] = Σ_c W[r, c] · x[t, c]` (`out` is `[n, rows]`, the layout of
/// `x Wᵀ`) for the weight rows `rows[r]` (each one row's blocks, `cols` values) and the `n`
/// activation rows of `x`: the dot product of each
/// dequantized weight row (the values [`dequantize`] gives) with each activation row, 16
/// partial sums added as a tree at the end ([`reduce16`]). The vector builds dequantize in
/// registers; the sums are those of [`dense_rows_dot`] over the dequantized matrix, bit for bit,
/// and a product does not depend on `n` (each activation row is summed on its own).
pub(crate) fn rows_dot(format: BlockFormat, rows: &[&[u8]], x: &Activations<'_>, out: &mut [f32]) {
    match build() {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx512 => unsafe { x86::rows_dot_avx512(format, rows, x, out) },
        // SAFETY: build() checked at run time that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx2 => unsafe { x86::rows_dot_avx2(format, rows, x, out) },
        _ => rows_dot_plain::<false>(format, rows, x, out),
    }
}

/// `out[t * rows + r] = W[r] · x[t]` for dense f32 weight rows `weights` (`[rows, cols]`) and the
/// `n` activation rows of `x`, summed as in [`rows_dot`].
pub(crate) fn dense_rows_dot(weights: &[f32], x: &Activations<'_>, out: &mut [f32]) {
    match build() {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx512 => unsafe { x86::dense_rows_dot_avx512(weights, x, out) },
        // SAFETY: build() checked at run time that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx2 => unsafe { x86::dense_rows_dot_avx2(weights, x, out) },
        _ => dense_rows_dot_plain::<false>(weights, x, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dequantize_avx2(format: BlockFormat, rows: &[u8], out: &mut [f32]) {
    dequantize_portable(format, rows, out)
}

#[inline(always)]
fn dequantize_portable(format: BlockFormat, rows: &[u8], out: &mut [f32]) {
    with_decoder!(format, expand_blocks, [], (rows, out))
}

/// The plain build of [`rows_dot`]: each weight row dequantized into a buffer, then dotted.
/// `FMA` fuses each multiply-add (the vector builds' arithmetic; without the FMA instruction,
/// `mul_add` is a slow library call, so the plain build multiplies and adds apart).
fn rows_dot_plain<const FMA: bool>(format: BlockFormat, rows: &[&[u8]], x: &Activations<'_>, out: &mut [f32]) {
    let (mut values, mut sums) = (vec![0f32; x.cols], vec![0f32; x.n]);
    for (index, row) in rows.iter().enumerate() {
        if let Some(ahead) = rows.get(index + 2) {
            prefetch(ahead);
        }
        dequantize_portable(format, row, &mut values);
        dots::<FMA>(&values, x.rows, x.cols, &mut sums);
        write_column(out, rows.len(), index, &sums);
    }
}

/// The plain build of [`dense_rows_dot`].
fn dense_rows_dot_plain<const FMA: bool>(weights: &[f32], x: &Activations<'_>, out: &mut [f32]) {
    let rows = weights.len() / x.cols.max(1);
    let mut sums = vec![0f32; x.n];
    for (index, w_row) in weights.chunks_exact(x.cols).enumerate() {
        dots::<FMA>(w_row, x.rows, x.cols, &mut sums);
        write_column(out, rows, index, &sums);
    }
}

/// `sums[t]` into `out[t * rows + row]`: one weight row's outputs into the `[n, rows]` result.
fn write_column(out: &mut [f32], rows: usize, row: usize, sums: &[f32]) {
    for (t, &sum) in sums.iter().enumerate() {
        out[t * rows + row] = sum;
    }
}

/// A block as exact small integers `q` (stored as f32) with one scale and offset per group of
/// `VALUES / GROUPS` consecutive values: value = scale · q (+ offset when `OFFSET`).
struct BlockParts<const VALUES: usize, const GROUPS: usize> {
    q: [f32; VALUES],
    scale: [f32; GROUPS],
    offset: [f32; GROUPS],
}

/// The blocks of `rows` through `decode`, one reference at a time behind `black_box` so that
/// the compiler vectorises inside a block: left alone, LLVM vectorises across blocks instead
/// (byte gathers and scatters of eight blocks at a time, 3× slower on Q4_1).
#[inline(always)]
fn blocks_of<const BYTES: usize, const VALUES: usize, const GROUPS: usize>(
    row: &[u8],
    decode: fn(&[u8; BYTES]) -> BlockParts<VALUES, GROUPS>,
) -> impl Iterator<Item = BlockParts<VALUES, GROUPS>> + '_ {
    row.chunks_exact(BYTES)
        .filter_map(move |block| std::hint::black_box(block).try_into().ok().map(decode))
}

/// Dequantization: every value as `scale · q (+ offset)`, the operations (and so the bits) of
/// ggml's `dequantize_row_*`.
#[inline(always)]
fn expand_blocks<const BYTES: usize, const VALUES: usize, const GROUPS: usize, const OFFSET: bool>(
    decode: fn(&[u8; BYTES]) -> BlockParts<VALUES, GROUPS>,
    rows: &[u8],
    out: &mut [f32],
) {
    let group = VALUES / GROUPS;
    for (parts, values) in blocks_of(rows, decode).zip(out.chunks_exact_mut(VALUES)) {
        for (g, (values, q)) in values.chunks_exact_mut(group).zip(parts.q.chunks_exact(group)).enumerate() {
            let (scale, offset) = (parts.scale[g], parts.offset[g]);
            for (v, &q) in values.iter_mut().zip(q) {
                *v = if OFFSET { scale * q + offset } else { scale * q };
            }
        }
    }
}

/// Asks the CPU to start loading `bytes` into cache (a hint: no effect on results).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint that never faults and does not change memory; the
        // pointer is in bounds anyway.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
}

/// Partial sums kept per activation row by the products.
pub(crate) const LANES: usize = 16;

/// `a · b + c`, rounded once (`FMA`) or twice.
#[inline(always)]
fn multiply_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The sum of 16 partial sums as a tree: halves added lane by lane (16 → 8 → 4 → 2 → 1), the
/// order the vector builds add their registers in.
#[inline(always)]
pub(crate) fn reduce16(p: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    let mut sums = p;
    while width > 0 {
        for i in 0..width {
            sums[i] += sums[i + width];
        }
        width /= 2;
    }
    sums[0]
}

/// The columns past the last full run of 16, summed in order onto `sum`.
#[inline(always)]
fn tail_dot<const FMA: bool>(w: &[f32], x: &[f32], sum: f32) -> f32 {
    let full = w.len() / LANES * LANES;
    w[full..].iter().zip(&x[full..]).fold(sum, |acc, (&a, &b)| multiply_add::<FMA>(a, b, acc))
}

/// `out[t] = w · x[t]` for every activation row of `x`, four rows per pass over `w`.
#[inline(always)]
fn dots<const FMA: bool>(w: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    let mut x_groups = x.chunks_exact(4 * cols);
    let mut out_groups = out.chunks_exact_mut(4);
    for (x4, y4) in (&mut x_groups).zip(&mut out_groups) {
        y4.copy_from_slice(&dot4::<FMA>(w, x4, cols));
    }
    for (x_row, y) in x_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        let [sum, ..] = dot4::<FMA>(w, &[x_row, x_row, x_row, x_row].concat(), cols);
        *y = sum;
    }
}

/// Dots of `w` with four activation rows (`x4` is `[4, cols]`), reading `w` once: 16 partial
/// sums per row, reduced by [`reduce16`], then the columns past the last run of 16.
#[inline(always)]
fn dot4<const FMA: bool>(w: &[f32], x4: &[f32], cols: usize) -> [f32; 4] {
    let (r0, rest) = x4.split_at(cols);
    let (r1, rest) = rest.split_at(cols);
    let (r2, r3) = rest.split_at(cols);
    let mut p = [[0f32; LANES]; 4];
    let chunks = w
        .chunks_exact(LANES)
        .zip(r0.chunks_exact(LANES))
        .zip(r1.chunks_exact(LANES))
        .zip(r2.chunks_exact(LANES))
        .zip(r3.chunks_exact(LANES));
    for ((((w, a), b), c), d) in chunks {
        for i in 0..LANES {
            p[0][i] = multiply_add::<FMA>(w[i], a[i], p[0][i]);
            p[1][i] = multiply_add::<FMA>(w[i], b[i], p[1][i]);
            p[2][i] = multiply_add::<FMA>(w[i], c[i], p[2][i]);
            p[3][i] = multiply_add::<FMA>(w[i], d[i], p[3][i]);
        }
    }
    let mut sums = [0f32; 4];
    for ((sum, p), x) in sums.iter_mut().zip(p).zip([r0, r1, r2, r3]) {
        *sum = tail_dot::<FMA>(w, x, reduce16(p));
    }
    sums
}

/// Whether this build has a fused multiply-add instruction (x86-64 built for a CPU with FMA,
/// as `.cargo/config.toml`'s `native` is on any x86-64 CPU since 2013; aarch64 always). Without
/// one, `mul_add` is a slow library call, so code outside the dispatched kernels multiplies and
/// adds apart there.
pub(crate) const FUSED: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

/// f32 dot product with 16 partial sums added as a tree ([`reduce16`]), then the tail
/// (attention's scores). The vector builds keep the partial sums in one or two registers: left
/// to the compiler, the loop came out as eight 2-lane vectors (a third of a MASSIVE run).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    match build() {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx512 => unsafe { x86::dot_avx512(a, b) },
        // SAFETY: build() checked at run time that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Build::Avx2 => unsafe { x86::dot_avx2(a, b) },
        _ => dot_plain::<false>(a, b),
    }
}

/// `out[k] = dot(query, keys[k])` for the rows of `keys` (`[out.len(), query.len()]`), each
/// the bits [`dot`] gives. The AVX-512 build takes 16 keys at a time and adds their partial
/// sums as one tree across registers (the shuffles of a 16 × 16 transpose), where one key at a
/// time waited on its own tree.
pub(crate) fn key_dots(query: &[f32], keys: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if build() == Build::Avx512 {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        return unsafe { x86::dots_avx512(query, keys, out) };
    }
    for (y, key) in out.iter_mut().zip(keys.chunks_exact(query.len().max(1))) {
        *y = dot(query, key);
    }
}

/// [`key_dots`] of `R` query rows (2 to 4) over the same keys, each score the bits [`key_dots`]
/// gives it; the AVX-512 build loads each key once for all the rows (attention's tiles read a
/// head's keys once per row, from cache after the first: the loads were the dots' bound).
pub(crate) fn key_dots_rows<const R: usize>(queries: [&[f32]; R], keys: &[f32], out: [&mut [f32]; R]) {
    #[cfg(target_arch = "x86_64")]
    if build() == Build::Avx512 {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        return unsafe { x86::dots_rows_avx512::<R>(queries, keys, out) };
    }
    for (query, scores) in queries.iter().zip(out) {
        key_dots(query, keys, scores);
    }
}

/// Dimensions of a value row whose sums [`value_slab_sums`] keeps in registers.
pub(crate) const VALUE_SLAB: usize = 64;

/// The 64-dimension slabs of the attention's value sums on AVX-512 (`out[i][..64 · ⌊d / 64⌋]
/// += Σ_k p[i][k] · values[k]` for the `M` rows of `probs`, row `i` at `i · stride`; `values`
/// `[keys, d]`, `out` `[M, d]`): each element summed in key order by fused multiply-adds, the
/// operations of the attention's plain loop, with a slab's `4 · M` sums in registers. `false`,
/// with nothing done, where the CPU (or `CANDOR_PORTABLE_KERNELS`) rules AVX-512 out or the
/// build does not fuse multiply-adds.
#[cfg(target_arch = "x86_64")]
pub(crate) fn value_slab_sums<const M: usize>(probs: &[f32], stride: usize, values: &[f32], out: &mut [f32]) -> bool {
    if FUSED && build() == Build::Avx512 {
        // SAFETY: build() checked at run time that the CPU has AVX-512F, AVX2 and FMA.
        unsafe { x86::value_slab_sums_avx512::<M>(probs, stride, values, out) };
        return true;
    }
    false
}

/// [`value_slab_sums`] where there is no AVX-512 build: nothing done.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn value_slab_sums<const M: usize>(_probs: &[f32], _stride: usize, _values: &[f32], _out: &mut [f32]) -> bool {
    false
}

/// The plain build of [`dot`].
#[inline(always)]
fn dot_plain<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            partial[i] = multiply_add::<FMA>(x[i], y[i], partial[i]);
        }
    }
    tail_dot::<FMA>(a, b, reduce16(partial))
}

// Block decoders: each splits a block into its integers and group scales and offsets the way
// ggml's `dequantize_row_*` computes them (same operations in the same order, no fused
// multiply-add), so that `scale · q (+ offset)` is bit-identical to candle's values.

#[inline(always)]
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The low nibbles of a block's 16 packed bytes, then the high ones: its 32 4-bit values in order.
#[inline(always)]
fn nibbles(packed: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for (j, byte) in packed.iter().take(16).enumerate() {
        q[j] = byte & 0x0F;
        q[j + 16] = byte >> 4;
    }
    q
}

/// 32 small integers as f32, less `bias`.
#[inline(always)]
fn as_f32(q: [u8; 32], bias: i16) -> [f32; 32] {
    let mut out = [0f32; 32];
    for (o, q) in out.iter_mut().zip(q) {
        *o = (q as i16 - bias) as f32;
    }
    out
}

/// One group of 32 values with scale `d` and offset `m`.
#[inline(always)]
fn single_group(q: [f32; 32], d: f32, m: f32) -> BlockParts<32, 1> {
    BlockParts { q, scale: [d], offset: [m] }
}

#[inline(always)]
fn q4_0(b: &[u8; 18]) -> BlockParts<32, 1> {
    single_group(as_f32(nibbles(&b[2..]), 8), half_at(b, 0), 0.0)
}

#[inline(always)]
fn q4_1(b: &[u8; 20]) -> BlockParts<32, 1> {
    single_group(as_f32(nibbles(&b[4..]), 0), half_at(b, 0), half_at(b, 2))
}

/// A Q5 block's 32 5-bit values: the nibbles of its 16 packed bytes with the fifth bits of `qh`.
#[inline(always)]
fn five_bits(qh: &[u8], packed: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = nibbles(packed);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((qh >> j) << 4) & 0x10) as u8;
    }
    q
}

#[inline(always)]
fn q5_0(b: &[u8; 22]) -> BlockParts<32, 1> {
    single_group(as_f32(five_bits(&b[2..6], &b[6..]), 16), half_at(b, 0), 0.0)
}

#[inline(always)]
fn q5_1(b: &[u8; 24]) -> BlockParts<32, 1> {
    single_group(as_f32(five_bits(&b[4..8], &b[8..]), 0), half_at(b, 0), half_at(b, 2))
}

#[inline(always)]
fn q8_0(b: &[u8; 34]) -> BlockParts<32, 1> {
    let mut q = [0f32; 32];
    for j in 0..32 {
        q[j] = (b[2 + j] as i8) as f32;
    }
    single_group(q, half_at(b, 0), 0.0)
}

/// Scale and min of sub-block `j` of a Q4_K / Q5_K block's packed 6-bit scales.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Scales `d · sc` and offsets `-(min · m)` of the eight 32-value groups of a Q4_K / Q5_K block.
#[inline(always)]
fn k_group_scales(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let (mut scale, mut offset) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &b[4..16]);
        scale[j] = d * sc as f32;
        offset[j] = -(min * m as f32);
    }
    (scale, offset)
}

#[inline(always)]
fn q4_k(b: &[u8; 144]) -> BlockParts<256, 8> {
    let (scale, offset) = k_group_scales(b);
    let mut q = [0f32; 256];
    for (qs, q) in b[16..144].chunks_exact(32).zip(q.chunks_exact_mut(64)) {
        let (lo, hi) = q.split_at_mut(32);
        for ((byte, l), h) in qs.iter().zip(lo).zip(hi) {
            *l = (byte & 0xF) as f32;
            *h = (byte >> 4) as f32;
        }
    }
    BlockParts { q, scale, offset }
}

#[inline(always)]
fn q5_k(b: &[u8; 176]) -> BlockParts<256, 8> {
    let (scale, offset) = k_group_scales(b);
    let qh = &b[16..48];
    let mut q = [0f32; 256];
    for (part, (ql, q)) in b[48..176].chunks_exact(32).zip(q.chunks_exact_mut(64)).enumerate() {
        let (u1, u2) = (1u8 << (2 * part), 2u8 << (2 * part));
        let (lo, hi) = q.split_at_mut(32);
        for (((ql, qh), l), h) in ql.iter().zip(qh).zip(lo).zip(hi) {
            let add_lo = if qh & u1 != 0 { 16f32 } else { 0f32 };
            let add_hi = if qh & u2 != 0 { 16f32 } else { 0f32 };
            *l = (ql & 0xF) as f32 + add_lo;
            *h = (ql >> 4) as f32 + add_hi;
        }
    }
    BlockParts { q, scale, offset }
}

#[inline(always)]
fn q6_k(b: &[u8; 210]) -> BlockParts<256, 16> {
    let (ql_all, rest) = b.split_at(128);
    let (qh_all, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = half_at(d, 0);
    let mut q = [0f32; 256];
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let q = &mut q[128 * half..128 * half + 128];
        for l in 0..32 {
            q[l] = (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32) as f32;
            q[l + 32] = (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32) as f32;
            q[l + 64] = (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32) as f32;
            q[l + 96] = (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32) as f32;
        }
    }
    // Group g (values 16g..16g + 16) has scale byte g: ggml's `d * sc[is] * q` with
    // is = l / 16 + 2k for value l + 32k of a 128-value half.
    let mut scale = [0f32; 16];
    for (s, &sc) in scale.iter_mut().zip(scales) {
        *s = d * (sc as i8) as f32;
    }
    BlockParts { q, scale, offset: [0f32; 16] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    const FORMATS: [(GgmlDType, BlockFormat); 8] = [
        (GgmlDType::Q4_0, BlockFormat::Q4_0),
        (GgmlDType::Q4_1, BlockFormat::Q4_1),
        (GgmlDType::Q5_0, BlockFormat::Q5_0),
        (GgmlDType::Q5_1, BlockFormat::Q5_1),
        (GgmlDType::Q8_0, BlockFormat::Q8_0),
        (GgmlDType::Q4K, BlockFormat::Q4K),
        (GgmlDType::Q5K, BlockFormat::Q5K),
        (GgmlDType::Q6K, BlockFormat::Q6K),
    ];

    /// Deterministic pseudo-random values in [-scale, scale).
    fn random_values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// A `rows x cols` matrix quantized by candle, its raw blocks and candle's dequantization.
    fn quantized(dtype: GgmlDType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let values = random_values(rows * cols, seed, 3.0);
        let tensor = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&tensor, dtype).unwrap();
        let reference = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        (q.data().unwrap().into_owned(), reference)
    }

    #[test]
    fn layouts_match_candle() {
        for (dtype, format) in FORMATS {
            assert_eq!(format.block_values(), dtype.block_size(), "{dtype:?}");
            assert_eq!(format.block_bytes(), dtype.type_size(), "{dtype:?}");
            assert_eq!(BlockFormat::of(dtype), Some(format));
        }
        assert_eq!(BlockFormat::of(GgmlDType::F16), None);
    }

    #[test]
    fn dequantization_is_bit_identical_to_candle_for_every_format() {
        for (dtype, format) in FORMATS {
            let cols = 2 * format.block_values();
            let (blocks, reference) = quantized(dtype, 7, cols, 11);
            let mut ours = vec![0f32; reference.len()];
            dequantize(format, &blocks, &mut ours);
            let mut portable = vec![0f32; reference.len()];
            dequantize_portable(format, &blocks, &mut portable);
            for (i, ((a, b), c)) in ours.iter().zip(&reference).zip(&portable).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} value {i}: {a} vs candle {b}");
                assert_eq!(c.to_bits(), b.to_bits(), "{dtype:?} portable value {i}: {c} vs candle {b}");
            }
        }
    }

    #[test]
    fn interleaved_activations_start_on_a_cache_line() {
        // A 16-lane load that straddles two cache lines costs two: products of 1,536 columns
        // ran at 80% of their speed when the copy started wherever the allocator put it.
        for (n, cols) in [(1, 16), (3, 576), (16, 1536), (5, 40)] {
            let x = random_values(n * cols, 51, 1.0);
            let activations = Activations::new(&x, cols);
            assert_eq!(activations.interleaved().as_ptr() as usize % 64, 0, "n {n} cols {cols}");
            for t in 0..n {
                for run in 0..cols / LANES {
                    let at = (run * n + t) * LANES;
                    assert_eq!(&activations.interleaved()[at..at + LANES], &x[t * cols + run * LANES..][..LANES]);
                }
            }
        }
    }

    #[test]
    fn a_product_has_the_same_bits_whatever_rows_are_batched_with_it() {
        // Batched runs give the records of one-at-a-time runs only if each activation row's
        // product is computed the same way for every n (31 rows: AVX-512 tiles of 8, 8, 8, 4, 2, 1).
        for (dtype, format) in FORMATS {
            let cols = 2 * format.block_values();
            let row_bytes = cols / format.block_values() * format.block_bytes();
            let (blocks, _) = quantized(dtype, 3, cols, 41);
            let row_refs: Vec<&[u8]> = blocks.chunks_exact(row_bytes).collect();
            let batch = random_values(31 * cols, 43, 1.0);
            let mut together = vec![0f32; 3 * 31];
            rows_dot(format, &row_refs, &Activations::new(&batch, cols), &mut together);
            for (t, alone_x) in batch.chunks_exact(cols).enumerate() {
                let mut alone = vec![0f32; 3];
                rows_dot(format, &row_refs, &Activations::new(alone_x, cols), &mut alone);
                for r in 0..3 {
                    assert_eq!(alone[r].to_bits(), together[t * 3 + r].to_bits(), "{dtype:?} row {r} act {t}");
                }
            }
        }
    }

    #[test]
    fn quantized_and_dequantized_weights_give_the_same_bits() {
        // `--weights quantized` and `--weights dense` give the same numbers: a quantized product
        // is the dense product of the dequantized matrix, on the dispatched and the plain build.
        for (dtype, format) in FORMATS {
            let cols = 2 * format.block_values();
            let row_bytes = cols / format.block_values() * format.block_bytes();
            let (blocks, dense) = quantized(dtype, 5, cols, 47);
            let row_refs: Vec<&[u8]> = blocks.chunks_exact(row_bytes).collect();
            for n in [1, 6, 19] {
                let x = random_values(n * cols, 49 + n as u64, 1.0);
                let activations = Activations::new(&x, cols);
                let (mut from_blocks, mut from_dense) = (vec![0f32; 5 * n], vec![0f32; 5 * n]);
                rows_dot(format, &row_refs, &activations, &mut from_blocks);
                dense_rows_dot(&dense, &activations, &mut from_dense);
                let (mut plain_blocks, mut plain_dense) = (vec![0f32; 5 * n], vec![0f32; 5 * n]);
                rows_dot_plain::<false>(format, &row_refs, &activations, &mut plain_blocks);
                dense_rows_dot_plain::<false>(&dense, &activations, &mut plain_dense);
                for i in 0..5 * n {
                    assert_eq!(from_blocks[i].to_bits(), from_dense[i].to_bits(), "{dtype:?} n {n} output {i}");
                    assert_eq!(plain_blocks[i].to_bits(), plain_dense[i].to_bits(), "{dtype:?} plain n {n} output {i}");
                }
            }
        }
    }

    #[test]
    fn the_tree_sum_adds_halves_lane_by_lane() {
        // Values whose sum depends on the order: 1e8 cancels only where the tree pairs it.
        let mut p = [1f32; LANES];
        p[0] = 1e8;
        p[8] = -1e8;
        // 16 → 8: lane 0 = 1e8 - 1e8 = 0, lanes 1..8 = 2; 8 → 4 → 2 → 1: 0 + 7 · 2 = 14.
        assert_eq!(reduce16(p), 14.0);
        // In order, 1e8 + 1 + … would lose the ones before -1e8 cancels it.
        assert_ne!(p.iter().sum::<f32>(), 14.0);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_builds_give_the_plain_fused_kernels_bits_for_every_format_tile_and_dense_weights() {
        // Activation counts 1..=20 cover every tile size and remainder of both builds (16, 8,
        // 4, 2, 1); seven weight rows of three blocks, and dense rows with a tail past the last
        // run of 16 columns.
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        assert!(avx2, "this test needs an x86-64 CPU with AVX2 and FMA");
        type Quantized = unsafe fn(BlockFormat, &[&[u8]], &Activations<'_>, &mut [f32]);
        type Dense = unsafe fn(&[f32], &Activations<'_>, &mut [f32]);
        let mut builds: Vec<(&str, Quantized, Dense)> = vec![("avx2", x86::rows_dot_avx2, x86::dense_rows_dot_avx2)];
        if avx512 {
            builds.push(("avx512", x86::rows_dot_avx512, x86::dense_rows_dot_avx512));
        }
        for n in 1..=20 {
            for (dtype, format) in FORMATS {
                let cols = 3 * format.block_values();
                let row_bytes = cols / format.block_values() * format.block_bytes();
                let (blocks, _) = quantized(dtype, 7, cols, 53);
                let row_refs: Vec<&[u8]> = blocks.chunks_exact(row_bytes).collect();
                let x = random_values(n * cols, 59 + n as u64, 2.0);
                let activations = Activations::new(&x, cols);
                let mut want = vec![0f32; 7 * n];
                rows_dot_plain::<true>(format, &row_refs, &activations, &mut want);
                for (build, product, _) in &builds {
                    let mut got = vec![0f32; 7 * n];
                    // SAFETY: checked above that the CPU has the build's features.
                    unsafe { product(format, &row_refs, &activations, &mut got) };
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} {build} n {n} output {i}: {a} vs plain {b}");
                    }
                }
            }
            let cols = 75;
            let weights = random_values(7 * cols, 61, 1.0);
            let x = random_values(n * cols, 67 + n as u64, 2.0);
            let activations = Activations::new(&x, cols);
            let mut want = vec![0f32; 7 * n];
            dense_rows_dot_plain::<true>(&weights, &activations, &mut want);
            for (build, _, product) in &builds {
                let mut got = vec![0f32; 7 * n];
                // SAFETY: checked above that the CPU has the build's features.
                unsafe { product(&weights, &activations, &mut got) };
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "dense {build} n {n} output {i}: {a} vs plain {b}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_dots_give_the_plain_fused_dots_bits() {
        let avx512 = is_x86_feature_detected!("avx512f");
        for len in [1, 15, 16, 64, 75, 256] {
            let (a, b) = (random_values(len, 71 + len as u64, 2.0), random_values(len, 73, 2.0));
            let want = dot_plain::<true>(&a, &b);
            // SAFETY: the test above asserts AVX2 and FMA on this CPU; AVX-512 checked here.
            let avx2 = unsafe { x86::dot_avx2(&a, &b) };
            assert_eq!(avx2.to_bits(), want.to_bits(), "avx2 len {len}");
            if avx512 {
                // SAFETY: checked above.
                let got = unsafe { x86::dot_avx512(&a, &b) };
                assert_eq!(got.to_bits(), want.to_bits(), "avx512 len {len}");
            }
        }
    }

    #[test]
    fn key_dots_of_two_three_and_four_rows_have_each_rows_bits() {
        // Blocks of keys shared by the rows (8, 5 or 4 keys), the keys after them, and head
        // sizes without the blocks (not a multiple of 16).
        fn check<const R: usize>() {
            for (d, keys) in [(64, 37), (128, 16), (80, 7), (20, 5), (64, 0), (64, 3)] {
                let queries: [Vec<f32>; R] = std::array::from_fn(|r| random_values(d, 89 + (d * R + r) as u64, 2.0));
                let key_rows = random_values(d * keys, 101, 2.0);
                let mut scores: [Vec<f32>; R] = std::array::from_fn(|_| vec![0f32; keys]);
                key_dots_rows::<R>(std::array::from_fn(|r| queries[r].as_slice()), &key_rows, scores.each_mut().map(|s| s.as_mut_slice()));
                for (query, got) in queries.iter().zip(&scores) {
                    let mut alone = vec![0f32; keys];
                    key_dots(query, &key_rows, &mut alone);
                    for k in 0..keys {
                        assert_eq!(got[k].to_bits(), alone[k].to_bits(), "{R} rows, d {d} key {k}");
                        assert_eq!(got[k].to_bits(), dot(query, &key_rows[k * d..(k + 1) * d]).to_bits(), "{R} rows, d {d} key {k}");
                    }
                }
            }
        }
        check::<2>();
        check::<3>();
        check::<4>();
    }

    #[test]
    fn key_dots_have_each_dots_bits() {
        // 16-key blocks and the keys after them, for head sizes with and without a tail.
        for (d, keys) in [(64, 37), (128, 16), (80, 19), (20, 5)] {
            let query = random_values(d, 79 + d as u64, 2.0);
            let key_rows = random_values(d * keys, 83, 2.0);
            let mut got = vec![0f32; keys];
            key_dots(&query, &key_rows, &mut got);
            for (k, (g, key)) in got.iter().zip(key_rows.chunks_exact(d)).enumerate() {
                assert_eq!(g.to_bits(), dot(&query, key).to_bits(), "d {d} key {k}");
            }
        }
    }

    #[test]
    fn column_blocks_filled_in_parallel_have_the_bits_of_candles_matmul() {
        // The many-row product cuts its result into column blocks that threads fill at once,
        // each with the gemm call candle's matmul makes, on that thread: every value has the
        // bits of candle's matmul over the whole weight, whatever the blocks. 37 activation
        // rows and 576 columns: blocks of 64 columns or fewer would be summed in 512 + 64
        // instead of 288 + 288 (and differ), so blocks are kept wider.
        use rayon::prelude::*;
        let (n, rows, cols) = (37, 200, 576);
        let x = random_values(n * cols, 97, 1.0);
        let w = random_values(rows * cols, 101, 1.0);
        let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap();
        let candle: Vec<Vec<f32>> = xt.matmul(&wt.t().unwrap()).unwrap().to_vec2().unwrap();
        for (block_width, widths) in [(16, vec![80, 120]), (64, vec![80, 120]), (96, vec![96, 104]), (112, vec![112, 88]), (200, vec![200]), (512, vec![200])] {
            let mut out = vec![f32::NAN; n * rows];
            let blocks = column_blocks(&mut out, rows, block_width).unwrap();
            assert_eq!(blocks.iter().map(|block| block.columns().len()).collect::<Vec<_>>(), widths, "blocks of {block_width}");
            blocks
                .into_par_iter()
                .try_for_each(|block| {
                    let columns = block.columns();
                    let rows = &w[columns.start * cols..columns.end * cols];
                    let by_columns: Vec<f32> = (0..cols * columns.len()).map(|i| rows[(i % columns.len()) * cols + i / columns.len()]).collect();
                    block.gemm_x_wt(&x, &by_columns, cols)
                })
                .unwrap();
            for t in 0..n {
                for j in 0..rows {
                    assert_eq!(out[t * rows + j].to_bits(), candle[t][j].to_bits(), "blocks of {block_width}: row {t} column {j}");
                }
            }
        }
    }

    #[test]
    fn weight_rows_written_by_columns_land_where_the_index_formula_says() {
        // 16 rows (the AVX-512 tiles, then the columns past the last tile one by one) and
        // fewer rows (value by value), into a wider layout of 40 values per column at 3 and at 24.
        for (height, cols) in [(16, 16), (16, 37), (16, 576), (5, 37), (1, 3)] {
            for first in [3, 24] {
                let count = 40;
                let rows = random_values(height * cols, 7 + cols as u64, 1.0);
                let mut out = vec![f32::NAN; cols * count];
                write_columns(&rows, cols, &mut out, count, first);
                for c in 0..cols {
                    for j in 0..count {
                        let got = out[c * count + j];
                        match j.checked_sub(first).filter(|&i| i < height) {
                            Some(i) => assert_eq!(got.to_bits(), rows[i * cols + c].to_bits(), "{height} x {cols} at {first}: row {i} column {c}"),
                            None => assert!(got.is_nan(), "{height} x {cols} at {first}: column {c} slot {j} written"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn column_blocks_refuse_shapes_that_do_not_fit() {
        let x = vec![1f32; 4 * 3];
        let mut out = vec![0f32; 4 * 170];
        assert!(column_blocks(&mut out, 3, 80).is_err(), "680 values are not rows of 3 columns");
        assert!(column_blocks(&mut out, 0, 80).is_err(), "rows of no columns");
        let mut blocks = column_blocks(&mut out, 170, 80).unwrap();
        assert_eq!(blocks.iter().map(ColumnBlock::columns).collect::<Vec<_>>(), [0..80, 80..170]);
        // A block given weight rows of another count, or activations of another width, is an
        // error rather than a write into the next block.
        let last = blocks.pop().unwrap();
        assert!(last.gemm_x_wt(&x, &vec![1f32; 89 * 3], 3).is_err());
        let first = blocks.remove(0);
        assert!(first.gemm_x_wt(&x[..9], &vec![1f32; 80 * 3], 3).is_err());
    }

    /// Every 4,099th f32 bit pattern (about a million values of every sign and magnitude), the
    /// gates of magnitude 88 and more that take `f32::exp`'s special paths, and zeros.
    fn gate_values() -> Vec<f32> {
        let mut values: Vec<f32> = (0..u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)).filter(|v| !v.is_nan()).collect();
        values.extend([0.0, -0.0, 88.0, -88.0, 87.99, -87.99, 104.0, -104.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY]);
        values
    }

    #[test]
    fn silu_times_has_the_bits_of_candles_silu_then_product() {
        // 8-lane runs and a tail of 5; runs holding a special gate fall back whole.
        let gate = gate_values();
        let up = random_values(gate.len(), 89, 3.0);
        let mut got = vec![0f32; gate.len()];
        silu_times(&gate, &up, &mut got);
        let g = Tensor::from_vec(gate.clone(), gate.len(), &Device::Cpu).unwrap();
        let u = Tensor::from_vec(up.clone(), up.len(), &Device::Cpu).unwrap();
        let candle: Vec<f32> = (candle_nn::ops::silu(&g).unwrap() * u).unwrap().to_vec1().unwrap();
        for (i, (a, c)) in got.iter().zip(&candle).enumerate() {
            let same = a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan());
            // glibc's expf is the algorithm of the vector build; another libm may round a
            // value the other way, never by more than an ulp of the exponential.
            let close = (a - c).abs() <= 4.0 * f32::EPSILON * c.abs();
            assert!(same || (!cfg!(target_env = "gnu") && close), "gate {} up {}: {a} vs candle's {c}", gate[i], up[i]);
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vector_exponential_table_is_two_to_the_i_over_32() {
        // Entry i plus i << 47 is 2^(i/32), to the nearest double: within half an ulp of the
        // library's exp2 (which is itself within an ulp), and exact at i = 0 and 16 (√2 known).
        for i in 0..32u64 {
            let value = f64::from_bits(x86::EXP_TABLE[i as usize] + (i << 47));
            let want = (i as f64 / 32.0).exp2();
            assert!((value - want).abs() <= f64::EPSILON * want, "entry {i}: {value} vs {want}");
        }
        assert_eq!(f64::from_bits(x86::EXP_TABLE[0]), 1.0);
        assert_eq!(f64::from_bits(x86::EXP_TABLE[16] + (16 << 47)), std::f64::consts::SQRT_2);
    }

    #[test]
    fn products_match_naive_f64_dequantize_then_dot_on_both_builds() {
        // Odd row counts and several activation rows; both the dispatched and the plain build.
        for (dtype, format) in FORMATS {
            let cols = 3 * format.block_values();
            let rows = 5;
            let row_bytes = cols / format.block_values() * format.block_bytes();
            let (blocks, reference) = quantized(dtype, rows, cols, 29);
            for n in [1, 3, 17] {
                let x = random_values(n * cols, 31 + n as u64, 1.0);
                let row_refs: Vec<&[u8]> = blocks.chunks_exact(row_bytes).collect();
                let activations = Activations::new(&x, cols);
                let (mut got, mut got_portable) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                rows_dot(format, &row_refs, &activations, &mut got);
                rows_dot_plain::<false>(format, &row_refs, &activations, &mut got_portable);
                for r in 0..rows {
                    for t in 0..n {
                        let want: f64 = (0..cols)
                            .map(|c| f64::from(reference[r * cols + c]) * f64::from(x[t * cols + c]))
                            .sum();
                        for (build, value) in [("dispatched", got[t * rows + r]), ("portable", got_portable[t * rows + r])] {
                            let diff = (f64::from(value) - want).abs();
                            assert!(diff < 1e-4 * (1.0 + want.abs()), "{dtype:?} {build} row {r} act {t}: {value} vs {want}");
                        }
                    }
                }
            }
        }
    }
}
