//! Exact f32 kernels for GGUF block formats: rows of a quantized weight are dequantized into f32
//! (bit for bit the values candle's and ggml's reference dequantizers give) and multiplied with
//! f32 activations, which are never rounded to 8 bits.
//!
//! Written here rather than taken from candle: candle's `to_float` is scalar code behind a
//! `Vec`-returning API (41% of quantized decode time went there), and its fast `vec_dot` kernels
//! quantize the activations to 8 bits, which changes the probabilities. The kernels are plain
//! Rust over fixed-size blocks that LLVM vectorises; on x86-64 the same code is compiled a second
//! time with AVX2 + FMA enabled and chosen at run time when the CPU has them (aarch64 always has
//! NEON, which the plain build uses). `CANDOR_PORTABLE_KERNELS=1` forces the plain build (tests
//! use it to cover the fallback on machines with AVX2).

// The only unsafe code is the call of the AVX2 build after the run-time check that the CPU
// supports it (`is_x86_feature_detected!`), which is what makes that call sound.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use half::f16;

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

/// Whether the AVX2 + FMA build of the kernels runs on this CPU (and is not switched off).
fn use_avx2() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let forced_portable = std::env::var("CANDOR_PORTABLE_KERNELS").is_ok_and(|v| v == "1");
        #[cfg(target_arch = "x86_64")]
        let available = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let available = false;
        available && !forced_portable
    })
}

/// Which build of the quantized-weight kernels runs on this CPU: `"avx2+fma"` or `"portable"`.
pub fn kernel_build() -> &'static str {
    match use_avx2() {
        true => "avx2+fma",
        false => "portable",
    }
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

/// `out[r * n + t] = Σ_c W[r, c] · x[t, c]` for the weight rows `rows[r]` (each one row's
/// blocks, `cols` values) and the `n` activation rows of `x` (`[n, cols]`, row-major).
/// `scratch` holds one dequantized row (`cols` values).
pub(crate) fn rows_dot(format: BlockFormat, rows: &[&[u8]], x: &[f32], cols: usize, scratch: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() checked at run time that the CPU has AVX2 and FMA.
        return unsafe { rows_dot_avx2(format, rows, x, cols, scratch, out) };
    }
    rows_dot_portable(format, rows, x, cols, scratch, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dequantize_avx2(format: BlockFormat, rows: &[u8], out: &mut [f32]) {
    dequantize_portable(format, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_dot_avx2(format: BlockFormat, rows: &[&[u8]], x: &[f32], cols: usize, scratch: &mut [f32], out: &mut [f32]) {
    rows_dot_portable(format, rows, x, cols, scratch, out)
}

#[inline(always)]
fn rows_dot_portable(format: BlockFormat, rows: &[&[u8]], x: &[f32], cols: usize, scratch: &mut [f32], out: &mut [f32]) {
    let n = x.len() / cols;
    for (row, out_row) in rows.iter().zip(out.chunks_exact_mut(n)) {
        dequantize_portable(format, row, scratch);
        dots_portable(scratch, x, cols, out_row);
    }
}

/// `out[r * n + t] = W[r] · x[t]` for dense f32 weight rows `weights` (`[rows, cols]`) and the
/// `n` activation rows of `x` (`[n, cols]`). Each output is summed in the same order whatever
/// `n` is, so a row's product does not depend on the rows batched with it.
pub(crate) fn dense_rows_dot(weights: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() checked at run time that the CPU has AVX2 and FMA.
        return unsafe { dense_rows_dot_avx2(weights, x, cols, out) };
    }
    dense_rows_dot_portable(weights, x, cols, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dense_rows_dot_avx2(weights: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    dense_rows_dot_portable(weights, x, cols, out)
}

#[inline(always)]
fn dense_rows_dot_portable(weights: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    let n = x.len() / cols;
    for (w_row, out_row) in weights.chunks_exact(cols).zip(out.chunks_exact_mut(n)) {
        dots_portable(w_row, x, cols, out_row);
    }
}

/// `out[t] = w · x[t]` for every activation row of `x`, four rows per pass over `w`.
#[inline(always)]
fn dots_portable(w: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    let mut x_groups = x.chunks_exact(4 * cols);
    let mut out_groups = out.chunks_exact_mut(4);
    for (x4, y4) in (&mut x_groups).zip(&mut out_groups) {
        y4.copy_from_slice(&dot4(w, x4, cols));
    }
    for (x_row, y) in x_groups.remainder().chunks_exact(cols).zip(out_groups.into_remainder()) {
        *y = dot(w, x_row);
    }
}

/// Dots of `w` with four activation rows (`x4` is `[4, cols]`), reading `w` once: 16 partial
/// sums per row.
#[inline(always)]
fn dot4(w: &[f32], x4: &[f32], cols: usize) -> [f32; 4] {
    const LANES: usize = 16;
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
            p[0][i] += w[i] * a[i];
            p[1][i] += w[i] * b[i];
            p[2][i] += w[i] * c[i];
            p[3][i] += w[i] * d[i];
        }
    }
    let full = cols / LANES * LANES;
    let mut sums = [0f32; 4];
    for ((sum, p), x) in sums.iter_mut().zip(&p).zip([r0, r1, r2, r3]) {
        let tail: f32 = w[full..].iter().zip(&x[full..]).map(|(a, b)| a * b).sum();
        *sum = p.iter().sum::<f32>() + tail;
    }
    sums
}

#[inline(always)]
fn dequantize_portable(format: BlockFormat, rows: &[u8], out: &mut [f32]) {
    match format {
        BlockFormat::Q4_0 => decode_blocks(rows, out, q4_0),
        BlockFormat::Q4_1 => decode_blocks(rows, out, q4_1),
        BlockFormat::Q5_0 => decode_blocks(rows, out, q5_0),
        BlockFormat::Q5_1 => decode_blocks(rows, out, q5_1),
        BlockFormat::Q8_0 => decode_blocks(rows, out, q8_0),
        BlockFormat::Q4K => decode_blocks(rows, out, q4_k),
        BlockFormat::Q5K => decode_blocks(rows, out, q5_k),
        BlockFormat::Q6K => decode_blocks(rows, out, q6_k),
    }
}

/// Runs `decode` over every block of `rows` and its `VALUES` outputs. Fixed-size blocks let
/// the compiler unroll and vectorise each decoder completely. The block reference goes
/// through `black_box` so that the compiler vectorises inside a block: left alone, LLVM
/// vectorises across blocks instead (byte gathers and scatters of eight blocks at a time, 3×
/// slower on Q4_1).
#[inline(always)]
fn decode_blocks<const BYTES: usize, const VALUES: usize>(
    rows: &[u8],
    out: &mut [f32],
    decode: fn(&[u8; BYTES], &mut [f32; VALUES]),
) {
    for (block, values) in rows.chunks_exact(BYTES).zip(out.chunks_exact_mut(VALUES)) {
        if let (Ok(block), Ok(values)) = (std::hint::black_box(block).try_into(), values.try_into()) {
            decode(block, values);
        }
    }
}

/// f32 dot product with 16 independent partial sums, which the compiler keeps in vector
/// registers; summed exactly like each row of [`dot4`], so a product is the same bits whichever
/// of the two computes it.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut partial = [0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            partial[i] += x[i] * y[i];
        }
    }
    let full = a.len() / LANES * LANES;
    let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
    partial.iter().sum::<f32>() + tail
}

// Block decoders. Each mirrors ggml's `dequantize_row_*` operation for operation (products and
// sums in the same order, no fused multiply-add), so the values are bit-identical to candle's.

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

#[inline(always)]
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let q = nibbles(&b[2..]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = (q as i16 - 8) as f32 * d;
    }
}

#[inline(always)]
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let q = nibbles(&b[4..]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = q as f32 * d + m;
    }
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
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let q = five_bits(&b[2..6], &b[6..]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = (q as i32 - 16) as f32 * d;
    }
}

#[inline(always)]
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let q = five_bits(&b[4..8], &b[8..]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = q as f32 * d + m;
    }
}

#[inline(always)]
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
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

/// `(d · scale, min · offset)` of the two 32-value sub-blocks of 64-value part `part` of a
/// Q4_K / Q5_K block.
#[inline(always)]
fn part_scales(d: f32, min: f32, scales: &[u8], part: usize) -> [(f32, f32); 2] {
    [2 * part, 2 * part + 1].map(|j| {
        let (sc, m) = scale_min_k4(j, scales);
        (d * sc as f32, min * m as f32)
    })
}

#[inline(always)]
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (part, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let [(d1, m1), (d2, m2)] = part_scales(d, min, scales, part);
        let (lo, hi) = y.split_at_mut(32);
        for ((q, l), h) in q.iter().zip(lo).zip(hi) {
            *l = d1 * (q & 0xF) as f32 - m1;
            *h = d2 * (q >> 4) as f32 - m2;
        }
    }
}

#[inline(always)]
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (part, (ql, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let [(d1, m1), (d2, m2)] = part_scales(d, min, scales, part);
        let (u1, u2) = (1u8 << (2 * part), 2u8 << (2 * part));
        let (lo, hi) = y.split_at_mut(32);
        for (((ql, qh), l), h) in ql.iter().zip(qh).zip(lo).zip(hi) {
            let add_lo = if qh & u1 != 0 { 16f32 } else { 0f32 };
            let add_hi = if qh & u2 != 0 { 16f32 } else { 0f32 };
            *l = d1 * ((ql & 0xF) as f32 + add_lo) - m1;
            *h = d2 * ((ql >> 4) as f32 + add_hi) - m2;
        }
    }
}

#[inline(always)]
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql_all, rest) = b.split_at(128);
    let (qh_all, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = half_at(d, 0);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &scales[8 * half..8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
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
    fn products_match_naive_f64_dequantize_then_dot_on_both_builds() {
        // Odd row counts and several activation rows; both the dispatched and the plain build.
        for (dtype, format) in FORMATS {
            let cols = 3 * format.block_values();
            let rows = 5;
            let row_bytes = cols / format.block_values() * format.block_bytes();
            let (blocks, reference) = quantized(dtype, rows, cols, 29);
            for n in [1, 3] {
                let x = random_values(n * cols, 31 + n as u64, 1.0);
                let row_refs: Vec<&[u8]> = blocks.chunks_exact(row_bytes).collect();
                let mut scratch = vec![0f32; cols];
                let (mut got, mut got_portable) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                rows_dot(format, &row_refs, &x, cols, &mut scratch, &mut got);
                rows_dot_portable(format, &row_refs, &x, cols, &mut scratch, &mut got_portable);
                for r in 0..rows {
                    for t in 0..n {
                        let want: f64 = (0..cols)
                            .map(|c| f64::from(reference[r * cols + c]) * f64::from(x[t * cols + c]))
                            .sum();
                        for (build, value) in [("dispatched", got[r * n + t]), ("portable", got_portable[r * n + t])] {
                            let diff = (f64::from(value) - want).abs();
                            assert!(diff < 1e-4 * (1.0 + want.abs()), "{dtype:?} {build} row {r} act {t}: {value} vs {want}");
                        }
                    }
                }
            }
        }
    }
}
