//! The products of [`super::rows_dot`] and [`super::dense_rows_dot`] written with x86-64 vector
//! intrinsics, in an AVX2 + FMA build and an AVX-512 one. A quantized block is unpacked and
//! dequantized in registers (the values [`super::dequantize`] writes out, bit for bit); tiles of
//! 2 weight rows × up to 8 activation rows (2 × 2 on AVX2) keep every pair's 16 partial sums in
//! registers, so each dequantized value meets 8 activation rows and each activation value loaded
//! meets 2 weight rows. On AVX-512 the 4-bit formats (Q4_0, Q4_1, Q4_K) look their values up
//! in a 16-entry table per group, built by the same operations, one permute per 16 values
//! ([`NibbleFormat`]). The arithmetic is the plain build's with fused multiply-adds, lane by
//! lane, so a product has the same bits whatever rows are batched with it and whether the weight
//! is held quantized or dense.
//!
//! Why intrinsics rather than the compiler's vectorisation of the plain build: LLVM wrote each
//! decoded row to memory and read it back for the dot, and kept one activation row per pass
//! (four spilled its registers); a single-sequence decode step spent 55% of its time there, and
//! 16 sequences decoded together got only 2.6× the tokens of one.

// Every function here is `unsafe` only because it uses CPU features; the callers in
// `super` check them at run time (`is_x86_feature_detected!`) before calling.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{half_at, k_group_scales, prefetch, tail_dot, Activations};

/// 16 f32 lanes: the partial sums of one activation row in the fused product.
trait Lanes16: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(value: f32) -> Self;
    /// 16 f32 from `values` (at least 16 long).
    unsafe fn load(values: *const f32) -> Self;
    /// 16 signed bytes as f32, exactly.
    unsafe fn from_bytes(bytes: __m128i) -> Self;
    /// `a · b + c` rounded once, lane by lane.
    unsafe fn multiply_add(a: Self, b: Self, c: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    /// The lanes' sum as [`super::reduce16`] adds them.
    unsafe fn reduce(self) -> f32;
    /// `[v[0].reduce(), …, v[15].reduce()]`: the same additions, perhaps shared between
    /// registers.
    #[inline(always)]
    unsafe fn reduce_sixteen(v: [Self; 16]) -> [f32; 16] {
        unsafe { std::array::from_fn(|i| v[i].reduce()) }
    }
}

/// The tree sum of 8 lanes (after the first halving of [`super::reduce16`]).
#[inline(always)]
unsafe fn reduce8(eights: __m256) -> f32 {
    unsafe {
        let fours = _mm_add_ps(_mm256_castps256_ps128(eights), _mm256_extractf128_ps::<1>(eights));
        let twos = _mm_add_ps(fours, _mm_movehl_ps(fours, fours));
        _mm_cvtss_f32(_mm_add_ss(twos, _mm_shuffle_ps::<1>(twos, twos)))
    }
}

/// Two 8-lane AVX registers.
#[derive(Clone, Copy)]
struct Avx2Lanes(__m256, __m256);

impl Lanes16 for Avx2Lanes {
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Self(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        unsafe { Self(_mm256_set1_ps(value), _mm256_set1_ps(value)) }
    }

    #[inline(always)]
    unsafe fn load(values: *const f32) -> Self {
        unsafe { Self(_mm256_loadu_ps(values), _mm256_loadu_ps(values.add(8))) }
    }

    #[inline(always)]
    unsafe fn from_bytes(bytes: __m128i) -> Self {
        unsafe {
            Self(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)),
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(bytes))),
            )
        }
    }

    #[inline(always)]
    unsafe fn multiply_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { Self(_mm256_fmadd_ps(a.0, b.0, c.0), _mm256_fmadd_ps(a.1, b.1, c.1)) }
    }

    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        unsafe { Self(_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1)) }
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { Self(_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
    }

    #[inline(always)]
    unsafe fn reduce(self) -> f32 {
        unsafe { reduce8(_mm256_add_ps(self.0, self.1)) }
    }
}

/// One AVX-512 register.
#[derive(Clone, Copy)]
struct Avx512Lanes(__m512);

impl Lanes16 for Avx512Lanes {
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Self(_mm512_setzero_ps()) }
    }

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        unsafe { Self(_mm512_set1_ps(value)) }
    }

    #[inline(always)]
    unsafe fn load(values: *const f32) -> Self {
        unsafe { Self(_mm512_loadu_ps(values)) }
    }

    #[inline(always)]
    unsafe fn from_bytes(bytes: __m128i) -> Self {
        unsafe { Self(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))) }
    }

    #[inline(always)]
    unsafe fn multiply_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { Self(_mm512_fmadd_ps(a.0, b.0, c.0)) }
    }

    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        unsafe { Self(_mm512_mul_ps(a.0, b.0)) }
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { Self(_mm512_add_ps(a.0, b.0)) }
    }

    #[inline(always)]
    unsafe fn reduce(self) -> f32 {
        unsafe {
            let low = _mm512_castps512_ps256(self.0);
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
            reduce8(_mm256_add_ps(low, high))
        }
    }

    /// The 16 sums through [`transposed_tree_sum`]: each halving's additions in as many
    /// registers as there are sums left (8, 4, 2, 1) instead of one per register, every lane
    /// getting the additions `reduce` gives it. The register-by-register reductions were an
    /// eighth of a 576-column tile of 2 weight rows × 8 activation rows: Q4_1 tiles went from
    /// 2.85-3.06 to 3.13-3.34 G fused multiply-adds/s.
    #[inline(always)]
    unsafe fn reduce_sixteen(v: [Self; 16]) -> [f32; 16] {
        unsafe {
            let mut sums = [0f32; 16];
            _mm512_storeu_ps(sums.as_mut_ptr(), transposed_tree_sum(v.map(|register| register.0)));
            sums
        }
    }
}

/// A block unpacked for the fused product: its values as signed bytes, 32 per vector in value
/// order, with the scale and offset of each group (`VALUES / GROUPS` values).
struct PackedParts<const CHUNKS: usize, const GROUPS: usize> {
    bytes: [__m256i; CHUNKS],
    scale: [f32; GROUPS],
    offset: [f32; GROUPS],
}

/// The 32 4-bit values of 16 packed bytes in value order (low nibbles, then high ones).
#[inline(always)]
unsafe fn nibbles(packed: *const u8) -> __m256i {
    unsafe {
        let bytes = _mm_loadu_si128(packed.cast());
        let mask = _mm_set1_epi8(0x0F);
        let low = _mm_and_si128(bytes, mask);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(bytes), mask);
        _mm256_set_m128i(high, low)
    }
}

/// The fifth bits of a Q5 block's 32 values (bit j of `qh` for value j) as 0 or 16.
#[inline(always)]
unsafe fn fifth_bits(qh: *const u8) -> __m256i {
    unsafe {
        let bits = u32::from_le_bytes([*qh, *qh.add(1), *qh.add(2), *qh.add(3)]);
        // Byte j takes byte j / 8 of qh, then keeps bit j % 8 of it.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
        );
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }
}

#[inline(always)]
unsafe fn q4_0(b: &[u8; 18]) -> PackedParts<1, 1> {
    let bytes = unsafe { _mm256_sub_epi8(nibbles(b.as_ptr().add(2)), _mm256_set1_epi8(8)) };
    PackedParts { bytes: [bytes], scale: [half_at(b, 0)], offset: [0.0] }
}

#[inline(always)]
unsafe fn q4_1(b: &[u8; 20]) -> PackedParts<1, 1> {
    let bytes = unsafe { nibbles(b.as_ptr().add(4)) };
    PackedParts { bytes: [bytes], scale: [half_at(b, 0)], offset: [half_at(b, 2)] }
}

#[inline(always)]
unsafe fn q5_0(b: &[u8; 22]) -> PackedParts<1, 1> {
    let bytes = unsafe {
        let values = _mm256_or_si256(nibbles(b.as_ptr().add(6)), fifth_bits(b.as_ptr().add(2)));
        _mm256_sub_epi8(values, _mm256_set1_epi8(16))
    };
    PackedParts { bytes: [bytes], scale: [half_at(b, 0)], offset: [0.0] }
}

#[inline(always)]
unsafe fn q5_1(b: &[u8; 24]) -> PackedParts<1, 1> {
    let bytes = unsafe { _mm256_or_si256(nibbles(b.as_ptr().add(8)), fifth_bits(b.as_ptr().add(4))) };
    PackedParts { bytes: [bytes], scale: [half_at(b, 0)], offset: [half_at(b, 2)] }
}

#[inline(always)]
unsafe fn q8_0(b: &[u8; 34]) -> PackedParts<1, 1> {
    let bytes = unsafe { _mm256_loadu_si256(b.as_ptr().add(2).cast()) };
    PackedParts { bytes: [bytes], scale: [half_at(b, 0)], offset: [0.0] }
}

#[inline(always)]
unsafe fn q4_k(b: &[u8; 144]) -> PackedParts<8, 8> {
    let (scale, offset) = k_group_scales(b);
    let mut bytes = [unsafe { _mm256_setzero_si256() }; 8];
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        for part in 0..4 {
            let packed = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * part).cast());
            bytes[2 * part] = _mm256_and_si256(packed, mask);
            bytes[2 * part + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
        }
    }
    PackedParts { bytes, scale, offset }
}

#[inline(always)]
unsafe fn q5_k(b: &[u8; 176]) -> PackedParts<8, 8> {
    let (scale, offset) = k_group_scales(b);
    let mut bytes = [unsafe { _mm256_setzero_si256() }; 8];
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let sixteen = _mm256_set1_epi8(16);
        let high_bits = _mm256_loadu_si256(b.as_ptr().add(16).cast());
        let plus_16_where = |bit: u8| {
            let bit = _mm256_set1_epi8(bit as i8);
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(high_bits, bit), bit), sixteen)
        };
        for part in 0..4 {
            let packed = _mm256_loadu_si256(b.as_ptr().add(48 + 32 * part).cast());
            let low = _mm256_and_si256(packed, mask);
            let high = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
            bytes[2 * part] = _mm256_add_epi8(low, plus_16_where(1 << (2 * part)));
            bytes[2 * part + 1] = _mm256_add_epi8(high, plus_16_where(2 << (2 * part)));
        }
    }
    PackedParts { bytes, scale, offset }
}

#[inline(always)]
unsafe fn q6_k(b: &[u8; 210]) -> PackedParts<8, 16> {
    let d = half_at(b, 208);
    let mut scale = [0f32; 16];
    for (s, &sc) in scale.iter_mut().zip(&b[192..208]) {
        *s = d * (sc as i8) as f32;
    }
    let mut bytes = [unsafe { _mm256_setzero_si256() }; 8];
    unsafe {
        let low_nibble = _mm256_set1_epi8(0x0F);
        let thirty_two = _mm256_set1_epi8(32);
        for half in 0..2 {
            let ql0 = _mm256_loadu_si256(b.as_ptr().add(64 * half).cast());
            let ql1 = _mm256_loadu_si256(b.as_ptr().add(64 * half + 32).cast());
            let qh = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * half).cast());
            // Bits 2k, 2k + 1 of qh are bits 4, 5 of the values of the k-th 32.
            let high = [
                _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C))),
                _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), _mm256_set1_epi8(0x30)),
            ];
            let low = [
                _mm256_and_si256(ql0, low_nibble),
                _mm256_and_si256(ql1, low_nibble),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low_nibble),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low_nibble),
            ];
            for k in 0..4 {
                bytes[4 * half + k] = _mm256_sub_epi8(_mm256_or_si256(low[k], high[k]), thirty_two);
            }
        }
    }
    PackedParts { bytes, scale, offset: [0f32; 16] }
}

/// A block format's intrinsic decoder as a type, so that every product is compiled for it.
trait Decode<const BYTES: usize, const CHUNKS: usize, const GROUPS: usize> {
    unsafe fn decode(block: &[u8; BYTES]) -> PackedParts<CHUNKS, GROUPS>;
}

macro_rules! decoder_types {
    ($($name:ident = $decode:ident <$bytes:literal, $chunks:literal, $groups:literal>;)*) => {
        $(
            struct $name;

            impl Decode<$bytes, $chunks, $groups> for $name {
                #[inline(always)]
                unsafe fn decode(block: &[u8; $bytes]) -> PackedParts<$chunks, $groups> {
                    unsafe { $decode(block) }
                }
            }
        )*
    };
}

decoder_types! {
    Q4_0 = q4_0<18, 1, 1>;
    Q4_1 = q4_1<20, 1, 1>;
    Q5_0 = q5_0<22, 1, 1>;
    Q5_1 = q5_1<24, 1, 1>;
    Q8_0 = q8_0<34, 1, 1>;
    Q4K = q4_k<144, 8, 8>;
    Q5K = q5_k<176, 8, 8>;
    Q6K = q6_k<210, 8, 16>;
}

/// Calls `$body!(decoder type, BYTES, VALUES, CHUNKS, GROUPS, OFFSET)` for `$format`.
macro_rules! with_decoder_type {
    ($format:expr, $body:ident) => {
        match $format {
            super::BlockFormat::Q4_0 => $body!(Q4_0, 18, 32, 1, 1, false),
            super::BlockFormat::Q4_1 => $body!(Q4_1, 20, 32, 1, 1, true),
            super::BlockFormat::Q5_0 => $body!(Q5_0, 22, 32, 1, 1, false),
            super::BlockFormat::Q5_1 => $body!(Q5_1, 24, 32, 1, 1, true),
            super::BlockFormat::Q8_0 => $body!(Q8_0, 34, 32, 1, 1, false),
            super::BlockFormat::Q4K => $body!(Q4K, 144, 256, 8, 8, true),
            super::BlockFormat::Q5K => $body!(Q5K, 176, 256, 8, 8, true),
            super::BlockFormat::Q6K => $body!(Q6K, 210, 256, 8, 16, false),
        }
    };
}

/// A product computed tile by tile: `ROWS` weight rows against `TILE` activation rows, all
/// their partial sums in registers, so that each activation value loaded meets `ROWS` weight
/// rows and each weight value dequantized meets `TILE` activation rows.
trait TileProduct<L: Lanes16> {
    /// Weight rows of the product.
    fn weight_rows(&self) -> usize;
    /// Activation rows of the product.
    fn activation_rows(&self) -> usize;
    /// Asks for weight row `row` to be loaded into cache.
    fn prefetch_row(&self, row: usize);
    /// Outputs of weight rows `row..row + ROWS` and activation rows `first..first + TILE`.
    unsafe fn tile<const ROWS: usize, const TILE: usize>(&mut self, row: usize, first: usize);
}

/// The tiles a build compiles, largest first: (weight rows, activation rows).
trait Tiling: Lanes16 {
    /// Weight rows per tile where there are enough.
    const ROWS: usize;
    /// Activation rows per tile where there are enough.
    const MAX_TILE: usize;
    /// Runs `product`'s tile of `rows` weight rows (`Self::ROWS` or 1) and `tile` activation
    /// rows (a power of two up to `Self::MAX_TILE`).
    unsafe fn run_tile<P: TileProduct<Self>>(product: &mut P, rows: usize, tile: usize, row: usize, first: usize);
}

impl Tiling for Avx2Lanes {
    // 16 registers: 2 × 2 rows' sums (8), two rows' values (4), an activation run (2).
    const ROWS: usize = 2;
    const MAX_TILE: usize = 2;

    #[inline(always)]
    unsafe fn run_tile<P: TileProduct<Self>>(product: &mut P, rows: usize, tile: usize, row: usize, first: usize) {
        unsafe {
            match (rows, tile) {
                (2, 2) => product.tile::<2, 2>(row, first),
                (2, _) => product.tile::<2, 1>(row, first),
                (_, 2) => product.tile::<1, 2>(row, first),
                _ => product.tile::<1, 1>(row, first),
            }
        }
    }
}

impl Tiling for Avx512Lanes {
    // 32 registers: 2 × 8 rows' sums (16), two rows' values of a block (4), an activation run.
    const ROWS: usize = 2;
    const MAX_TILE: usize = 8;

    #[inline(always)]
    unsafe fn run_tile<P: TileProduct<Self>>(product: &mut P, rows: usize, tile: usize, row: usize, first: usize) {
        unsafe {
            match (rows, tile) {
                (2, 8) => product.tile::<2, 8>(row, first),
                (2, 4) => product.tile::<2, 4>(row, first),
                (2, 2) => product.tile::<2, 2>(row, first),
                (2, _) => product.tile::<2, 1>(row, first),
                (_, 8) => product.tile::<1, 8>(row, first),
                (_, 4) => product.tile::<1, 4>(row, first),
                (_, 2) => product.tile::<1, 2>(row, first),
                _ => product.tile::<1, 1>(row, first),
            }
        }
    }
}

/// The largest power of two up to `max` that `remaining` rows fill.
fn tile_size(remaining: usize, max: usize) -> usize {
    let mut tile = max;
    while tile > remaining {
        tile /= 2;
    }
    tile.max(1)
}

/// Runs every tile of `product`: weight rows in groups of `L::ROWS` (the next group
/// prefetched), the rest one by one, each group against the activation rows in tiles.
#[inline(always)]
unsafe fn run_tiles<L: Tiling, P: TileProduct<L>>(product: &mut P) {
    let (weight_rows, n) = (product.weight_rows(), product.activation_rows());
    (0..L::ROWS.min(weight_rows)).for_each(|r| product.prefetch_row(r));
    let mut row = 0;
    while row < weight_rows {
        let rows = if weight_rows - row >= L::ROWS { L::ROWS } else { 1 };
        (row + rows..(row + 2 * rows).min(weight_rows)).for_each(|r| product.prefetch_row(r));
        let mut first = 0;
        while first < n {
            let tile = tile_size(n - first, L::MAX_TILE);
            unsafe { L::run_tile(product, rows, tile, row, first) };
            first += tile;
        }
        row += rows;
    }
}

/// [`super::rows_dot`] on AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_dot_avx2(format: super::BlockFormat, rows: &[&[u8]], x: &Activations<'_>, out: &mut [f32]) {
    unsafe { rows_dot_with::<Avx2Lanes>(format, rows, x, out) }
}

/// [`super::rows_dot`] on AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn rows_dot_avx512(format: super::BlockFormat, rows: &[&[u8]], x: &Activations<'_>, out: &mut [f32]) {
    macro_rules! nibble_product {
        ($format:ident, $bytes:literal, $groups:literal) => {
            unsafe {
                run_tiles::<Avx512Lanes, _>(&mut BlockProduct::<Nibbles<$format, $bytes, $groups>> {
                    kernel: std::marker::PhantomData,
                    rows,
                    x,
                    out,
                })
            }
        };
    }
    match format {
        super::BlockFormat::Q4_0 => nibble_product!(Q4_0, 18, 1),
        super::BlockFormat::Q4_1 => nibble_product!(Q4_1, 20, 1),
        super::BlockFormat::Q4K => nibble_product!(Q4K, 144, 8),
        _ => unsafe { rows_dot_with::<Avx512Lanes>(format, rows, x, out) },
    }
}

/// [`super::dense_rows_dot`] on AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dense_rows_dot_avx2(weights: &[f32], x: &Activations<'_>, out: &mut [f32]) {
    unsafe { run_tiles::<Avx2Lanes, _>(&mut DenseProduct { weights, x, out }) }
}

/// [`super::dense_rows_dot`] on AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dense_rows_dot_avx512(weights: &[f32], x: &Activations<'_>, out: &mut [f32]) {
    unsafe { run_tiles::<Avx512Lanes, _>(&mut DenseProduct { weights, x, out }) }
}

#[inline(always)]
unsafe fn rows_dot_with<L: Tiling>(format: super::BlockFormat, rows: &[&[u8]], x: &Activations<'_>, out: &mut [f32]) {
    macro_rules! product {
        ($decoder:ident, $bytes:literal, $values:literal, $chunks:literal, $groups:literal, $offset:literal) => {
            unsafe {
                run_tiles::<L, _>(&mut BlockProduct::<Decoded<$decoder, $bytes, $values, $chunks, $groups, $offset>> {
                    kernel: std::marker::PhantomData,
                    rows,
                    x,
                    out,
                })
            }
        };
    }
    with_decoder_type!(format, product)
}

/// `scale · q (+ offset)`, the operations of [`super::dequantize`].
#[inline(always)]
unsafe fn dequantized<L: Lanes16, const OFFSET: bool>(q: L, scale: f32, offset: f32) -> L {
    unsafe {
        let scaled = L::mul(L::splat(scale), q);
        match OFFSET {
            true => L::add(scaled, L::splat(offset)),
            false => scaled,
        }
    }
}

/// The outputs of a tile of a quantized product: `out[(first + t) * weight_rows + row + r]`
/// (`out` is `[n, weight_rows]`) is the tree sum of `sums[r][t]`.
#[inline(always)]
unsafe fn write_sums<L: Lanes16, const ROWS: usize, const TILE: usize>(out: &mut [f32], n: usize, row: usize, first: usize, sums: &[[L; TILE]; ROWS]) {
    let weight_rows = out.len() / n;
    if ROWS * TILE == 16 {
        let totals = unsafe { L::reduce_sixteen(std::array::from_fn(|i| sums[i / TILE][i % TILE])) };
        for (i, total) in totals.into_iter().enumerate() {
            out[(first + i % TILE) * weight_rows + row + i / TILE] = total;
        }
        return;
    }
    for (r, sums) in sums.iter().enumerate() {
        for (t, sum) in sums.iter().enumerate() {
            out[(first + t) * weight_rows + row + r] = unsafe { sum.reduce() };
        }
    }
}

/// Quantized weight rows (`rows[r]` one row's blocks) times activations, `out[t * rows + r]`,
/// each tile computed by the kernel `K` ([`BlockTiles`]).
struct BlockProduct<'a, K> {
    kernel: std::marker::PhantomData<K>,
    rows: &'a [&'a [u8]],
    x: &'a Activations<'a>,
    out: &'a mut [f32],
}

/// How a [`BlockProduct`] computes a tile on `L`'s registers.
trait BlockTiles<L: Lanes16>: Sized {
    /// [`TileProduct::tile`] of `product`.
    unsafe fn tile<const ROWS: usize, const TILE: usize>(product: &mut BlockProduct<'_, Self>, row: usize, first: usize);
}

impl<L: Lanes16, K: BlockTiles<L>> TileProduct<L> for BlockProduct<'_, K> {
    fn weight_rows(&self) -> usize {
        self.rows.len()
    }

    fn activation_rows(&self) -> usize {
        self.x.n
    }

    #[inline(always)]
    fn prefetch_row(&self, row: usize) {
        prefetch(self.rows[row]);
    }

    #[inline(always)]
    unsafe fn tile<const ROWS: usize, const TILE: usize>(&mut self, row: usize, first: usize) {
        unsafe { <K as BlockTiles<L>>::tile::<ROWS, TILE>(self, row, first) }
    }
}

/// The kernel of blocks dequantized in registers by the decoder `D`.
struct Decoded<D, const BYTES: usize, const VALUES: usize, const CHUNKS: usize, const GROUPS: usize, const OFFSET: bool>(
    std::marker::PhantomData<D>,
);

impl<L, D, const BYTES: usize, const VALUES: usize, const CHUNKS: usize, const GROUPS: usize, const OFFSET: bool> BlockTiles<L>
    for Decoded<D, BYTES, VALUES, CHUNKS, GROUPS, OFFSET>
where
    L: Lanes16,
    D: Decode<BYTES, CHUNKS, GROUPS>,
{
    /// Block by block: each row's block dequantized in registers, each run of 16 values
    /// multiplied into the partial sums of every activation row of the tile.
    #[inline(always)]
    // `t` picks the activation run and the sums' column, `r` their row: two arrays, one index.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const ROWS: usize, const TILE: usize>(product: &mut BlockProduct<'_, Self>, row: usize, first: usize) {
        let n = product.x.n;
        let run_stride = n * 16;
        unsafe {
            let tile = product.x.interleaved().as_ptr().add(first * 16);
            let weight_rows: [&[u8]; ROWS] = std::array::from_fn(|r| product.rows[row + r]);
            let mut sums = [[L::zero(); TILE]; ROWS];
            for index in 0..weight_rows[0].len() / BYTES {
                let parts: [PackedParts<CHUNKS, GROUPS>; ROWS] = std::array::from_fn(|r| {
                    D::decode(&*weight_rows[r].as_ptr().add(index * BYTES).cast::<[u8; BYTES]>())
                });
                for chunk in 0..CHUNKS {
                    // Groups of 32 share a scale; Q6_K's groups of 16 have one each.
                    let (low_group, high_group) = match GROUPS == CHUNKS {
                        true => (chunk, chunk),
                        false => (2 * chunk, 2 * chunk + 1),
                    };
                    let run = (index * VALUES + 32 * chunk) / 16;
                    let xs = tile.add(run * run_stride);
                    let low: [L; ROWS] = std::array::from_fn(|r| {
                        let q = L::from_bytes(_mm256_castsi256_si128(parts[r].bytes[chunk]));
                        dequantized::<L, OFFSET>(q, parts[r].scale[low_group], parts[r].offset[low_group])
                    });
                    for t in 0..TILE {
                        let x = L::load(xs.add(16 * t));
                        for r in 0..ROWS {
                            sums[r][t] = L::multiply_add(low[r], x, sums[r][t]);
                        }
                    }
                    let xs = xs.add(run_stride);
                    let high: [L; ROWS] = std::array::from_fn(|r| {
                        let q = L::from_bytes(_mm256_extracti128_si256::<1>(parts[r].bytes[chunk]));
                        dequantized::<L, OFFSET>(q, parts[r].scale[high_group], parts[r].offset[high_group])
                    });
                    for t in 0..TILE {
                        let x = L::load(xs.add(16 * t));
                        for r in 0..ROWS {
                            sums[r][t] = L::multiply_add(high[r], x, sums[r][t]);
                        }
                    }
                }
            }
            write_sums(product.out, n, row, first, &sums);
        }
    }
}

/// A 4-bit block format as AVX-512 reads it: each group of 32 values has a table of the 16
/// values its nibbles stand for, and each half of a group is the low or high nibbles of 16
/// packed bytes. One permute per 16 values looks them up, in place of [`dequantized`]'s widen,
/// convert, multiply and add; the table is built by those same operations on the nibbles 0 to
/// 15, so every value has the same bits. Measured against the register decoder (SmolLM2 Q4_1,
/// alternating runs): single-sequence decode 88 -> 101-108 tok/s, 16 sequences 294-309 ->
/// 310-323 tok/s. AVX2 has no 16-entry permute of f32 (two 8-entry ones and a blend would cost
/// what they save), so it keeps the decoder.
trait NibbleFormat<const BYTES: usize, const GROUPS: usize> {
    /// `q` of nibble 0 (`q = nibble - BIAS`).
    const BIAS: f32;
    /// Whether a group's values are `scale · q + offset` (else `scale · q`).
    const OFFSET: bool;
    /// Each group's scale and offset.
    fn scales(block: &[u8; BYTES]) -> ([f32; GROUPS], [f32; GROUPS]);
    /// The first of the 16 bytes holding half `half` (0 or 1) of group `group`, and whether
    /// its values are their high nibbles.
    fn half(group: usize, half: usize) -> (usize, bool);
}

impl NibbleFormat<18, 1> for Q4_0 {
    const BIAS: f32 = 8.0;
    const OFFSET: bool = false;

    #[inline(always)]
    fn scales(block: &[u8; 18]) -> ([f32; 1], [f32; 1]) {
        ([half_at(block, 0)], [0.0])
    }

    #[inline(always)]
    fn half(_group: usize, half: usize) -> (usize, bool) {
        (2, half == 1)
    }
}

impl NibbleFormat<20, 1> for Q4_1 {
    const BIAS: f32 = 0.0;
    const OFFSET: bool = true;

    #[inline(always)]
    fn scales(block: &[u8; 20]) -> ([f32; 1], [f32; 1]) {
        ([half_at(block, 0)], [half_at(block, 2)])
    }

    #[inline(always)]
    fn half(_group: usize, half: usize) -> (usize, bool) {
        (4, half == 1)
    }
}

impl NibbleFormat<144, 8> for Q4K {
    const BIAS: f32 = 0.0;
    const OFFSET: bool = true;

    #[inline(always)]
    fn scales(block: &[u8; 144]) -> ([f32; 8], [f32; 8]) {
        k_group_scales(block)
    }

    /// Groups 2p and 2p + 1 are the low and high nibbles of the p-th 32 packed bytes.
    #[inline(always)]
    fn half(group: usize, half: usize) -> (usize, bool) {
        (16 + 32 * (group / 2) + 16 * half, group % 2 == 1)
    }
}

/// The kernel of 4-bit blocks read through [`NibbleFormat`]'s tables: the sums of
/// [`Decoded`], bit for bit, with fewer operations per value.
struct Nibbles<F, const BYTES: usize, const GROUPS: usize>(std::marker::PhantomData<F>);

impl<F, const BYTES: usize, const GROUPS: usize> BlockTiles<Avx512Lanes> for Nibbles<F, BYTES, GROUPS>
where
    F: NibbleFormat<BYTES, GROUPS>,
{
    #[inline(always)]
    // `t` picks the activation run and the sums' column, `r` their row: two arrays, one index.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const ROWS: usize, const TILE: usize>(product: &mut BlockProduct<'_, Self>, row: usize, first: usize) {
        let n = product.x.n;
        let run_stride = n * 16;
        unsafe {
            let tile = product.x.interleaved().as_ptr().add(first * 16);
            let nibbles = Avx512Lanes(_mm512_sub_ps(
                _mm512_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0),
                _mm512_set1_ps(F::BIAS),
            ));
            let weight_rows: [&[u8]; ROWS] = std::array::from_fn(|r| product.rows[row + r]);
            let mut sums = [[Avx512Lanes::zero(); TILE]; ROWS];
            for index in 0..weight_rows[0].len() / BYTES {
                let blocks: [&[u8; BYTES]; ROWS] =
                    std::array::from_fn(|r| &*weight_rows[r].as_ptr().add(index * BYTES).cast::<[u8; BYTES]>());
                let scales: [_; ROWS] = std::array::from_fn(|r| F::scales(blocks[r]));
                for group in 0..GROUPS {
                    let tables: [Avx512Lanes; ROWS] = std::array::from_fn(|r| match F::OFFSET {
                        true => dequantized::<_, true>(nibbles, scales[r].0[group], scales[r].1[group]),
                        false => dequantized::<_, false>(nibbles, scales[r].0[group], 0.0),
                    });
                    for half in 0..2 {
                        let (at, high) = F::half(group, half);
                        // The permute reads the low 4 bits of each index.
                        let values: [Avx512Lanes; ROWS] = std::array::from_fn(|r| {
                            let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(blocks[r].as_ptr().add(at).cast()));
                            let indices = if high { _mm512_srli_epi32::<4>(bytes) } else { bytes };
                            Avx512Lanes(_mm512_permutexvar_ps(indices, tables[r].0))
                        });
                        let run = index * 2 * GROUPS + 2 * group + half;
                        let xs = tile.add(run * run_stride);
                        for t in 0..TILE {
                            let x = Avx512Lanes::load(xs.add(16 * t));
                            for r in 0..ROWS {
                                sums[r][t] = Avx512Lanes::multiply_add(values[r], x, sums[r][t]);
                            }
                        }
                    }
                }
            }
            write_sums(product.out, n, row, first, &sums);
        }
    }
}

/// Dense f32 weight rows (`[rows, cols]`) times activations, `out[t * rows + r]`; the columns past
/// the last run of 16 are added after the partial sums, as in the plain build.
struct DenseProduct<'a> {
    weights: &'a [f32],
    x: &'a Activations<'a>,
    out: &'a mut [f32],
}

impl<L: Lanes16> TileProduct<L> for DenseProduct<'_> {
    fn weight_rows(&self) -> usize {
        self.weights.len() / self.x.cols.max(1)
    }

    fn activation_rows(&self) -> usize {
        self.x.n
    }

    #[inline(always)]
    fn prefetch_row(&self, _row: usize) {
        // Dense rows are contiguous: the hardware prefetcher follows them.
    }

    #[inline(always)]
    // `t` picks the activation run and the sums' column, `r` their row: two arrays, one index.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const ROWS: usize, const TILE: usize>(&mut self, row: usize, first: usize) {
        let (n, cols) = (self.x.n, self.x.cols);
        let run_stride = n * 16;
        unsafe {
            let tile = self.x.interleaved().as_ptr().add(first * 16);
            let weights = self.weights.as_ptr().add(row * cols);
            let mut sums = [[L::zero(); TILE]; ROWS];
            for run in 0..cols / 16 {
                let w: [L; ROWS] = std::array::from_fn(|r| L::load(weights.add(r * cols + 16 * run)));
                let xs = tile.add(run * run_stride);
                for t in 0..TILE {
                    let x = L::load(xs.add(16 * t));
                    for r in 0..ROWS {
                        sums[r][t] = L::multiply_add(w[r], x, sums[r][t]);
                    }
                }
            }
            let weight_rows = self.out.len() / n;
            for (r, sums) in sums.iter().enumerate() {
                let w_row = &self.weights[(row + r) * cols..(row + r + 1) * cols];
                for (t, sum) in sums.iter().enumerate() {
                    let x_row = &self.x.rows[(first + t) * cols..(first + t + 1) * cols];
                    self.out[(first + t) * weight_rows + row + r] = tail_dot::<true>(w_row, x_row, sum.reduce());
                }
            }
        }
    }
}

/// [`super::dot`] on AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    unsafe { dot_with::<Avx2Lanes>(a, b) }
}

/// [`super::dot`] on AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    unsafe { dot_with::<Avx512Lanes>(a, b) }
}

/// 16 partial sums of fused products, their tree sum, then the tail.
#[inline(always)]
unsafe fn dot_with<L: Lanes16>(a: &[f32], b: &[f32]) -> f32 {
    let runs = a.len().min(b.len()) / 16;
    unsafe {
        let mut sum = L::zero();
        for run in 0..runs {
            sum = L::multiply_add(L::load(a.as_ptr().add(16 * run)), L::load(b.as_ptr().add(16 * run)), sum);
        }
        tail_dot::<true>(a, b, sum.reduce())
    }
}

/// [`super::key_dots`] on AVX-512: blocks of 16 keys, each key's 16 partial sums in a register,
/// the 16 registers added pairwise through shuffles in [`super::reduce16`]'s order (halves 8
/// apart, then 4, 2, 1), which leaves key `4j + l` in lane `4l + j`; one permute puts the
/// scores in key order. Keys past the last block, and head sizes that are not a multiple of 16,
/// go through [`dot_with`] one at a time.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dots_avx512(query: &[f32], keys: &[f32], out: &mut [f32]) {
    let d = query.len();
    let blocks = if d.is_multiple_of(16) { out.len() / 16 } else { 0 };
    unsafe {
        for block in 0..blocks {
            let mut sums = [_mm512_setzero_ps(); 16];
            for run in 0..d / 16 {
                let q = _mm512_loadu_ps(query.as_ptr().add(16 * run));
                for (k, sum) in sums.iter_mut().enumerate() {
                    let key = keys.as_ptr().add((16 * block + k) * d + 16 * run);
                    *sum = _mm512_fmadd_ps(q, _mm512_loadu_ps(key), *sum);
                }
            }
            let scores = transposed_tree_sum(sums);
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * block), scores);
        }
        for (y, key) in out.iter_mut().zip(keys.chunks_exact(d.max(1))).skip(16 * blocks) {
            *y = dot_with::<Avx512Lanes>(query, key);
        }
    }
}

// Four 16-lane registers per row hold one slab.
const _: () = assert!(super::VALUE_SLAB == 64);

/// [`super::value_slab_sums`] on AVX-512: for each 64-dimension slab, the `M` rows' sums in
/// `4 · M` registers across the keys, each value row loaded once for the `M` rows, each
/// probability broadcast.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn value_slab_sums_avx512<const M: usize>(probs: &[f32], stride: usize, values: &[f32], out: &mut [f32]) {
    let d = out.len() / M;
    for slab in 0..d / 64 {
        let at = |i: usize| i * d + 64 * slab;
        unsafe {
            let mut sums: [[__m512; 4]; M] = std::array::from_fn(|i| {
                let row = &out[at(i)..at(i) + 64];
                std::array::from_fn(|j| _mm512_loadu_ps(row.as_ptr().add(16 * j)))
            });
            for (k, value) in values.chunks_exact(d).enumerate() {
                let value = &value[64 * slab..64 * slab + 64];
                let lanes: [__m512; 4] = std::array::from_fn(|j| _mm512_loadu_ps(value.as_ptr().add(16 * j)));
                for (i, sums) in sums.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(probs[i * stride + k]);
                    for (sum, &lane) in sums.iter_mut().zip(&lanes) {
                        *sum = _mm512_fmadd_ps(p, lane, *sum);
                    }
                }
            }
            for (i, sums) in sums.iter().enumerate() {
                let row = &mut out[at(i)..at(i) + 64];
                for (j, &sum) in sums.iter().enumerate() {
                    _mm512_storeu_ps(row.as_mut_ptr().add(16 * j), sum);
                }
            }
        }
    }
}

/// [`super::key_dots_rows`] on AVX-512: blocks of `16 / R` keys (8 for two rows, 5 for three, 4
/// for four), each key loaded once for the `R` query rows, the partial-sum registers (row 0's
/// keys, then row 1's, ...) added as one tree in [`transposed_tree_sum`], so every score has the
/// bits [`dots_avx512`] gives it. Keys past the last block go through [`dots_avx512`] row by row.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dots_rows_avx512<const R: usize>(queries: [&[f32]; R], keys: &[f32], mut out: [&mut [f32]; R]) {
    let per_block = 16 / R;
    let d = queries[0].len();
    let count = out.iter().map(|scores| scores.len()).min().unwrap_or(0);
    let blocks = if d.is_multiple_of(16) && queries.iter().all(|query| query.len() == d) { count / per_block } else { 0 };
    unsafe {
        for block in 0..blocks {
            let block_keys = &keys[per_block * block * d..per_block * (block + 1) * d];
            let mut sums = [_mm512_setzero_ps(); 16];
            for run in 0..d / 16 {
                let q: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(queries[r].as_ptr().add(16 * run)));
                for k in 0..per_block {
                    let key = _mm512_loadu_ps(block_keys.as_ptr().add(k * d + 16 * run));
                    for r in 0..R {
                        sums[r * per_block + k] = _mm512_fmadd_ps(q[r], key, sums[r * per_block + k]);
                    }
                }
            }
            let mut scores = [0f32; 16];
            _mm512_storeu_ps(scores.as_mut_ptr(), transposed_tree_sum(sums));
            for (r, scores_of_row) in scores.chunks_exact(per_block).take(R).enumerate() {
                out[r][per_block * block..per_block * (block + 1)].copy_from_slice(scores_of_row);
            }
        }
        let rest = &keys[(per_block * blocks * d).min(keys.len())..];
        for (query, scores) in queries.iter().zip(out.iter_mut()) {
            dots_avx512(query, rest, &mut scores[per_block * blocks..]);
        }
    }
}

/// The tree sums of 16 registers (as [`Lanes16::reduce`] adds one), lane k of the result
/// holding register k's.
#[inline(always)]
unsafe fn transposed_tree_sum(a: [__m512; 16]) -> __m512 {
    unsafe {
        // 16 → 8: [a_2j halves summed | a_2j+1 halves summed].
        let halves: [__m512; 8] = std::array::from_fn(|j| {
            let (x, y) = (a[2 * j], a[2 * j + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(x, y), _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y))
        });
        // 8 → 4: 128-bit lane l of quarters[m] is register 4m + l.
        let quarters: [__m512; 4] = std::array::from_fn(|m| {
            let (x, y) = (halves[2 * m], halves[2 * m + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y))
        });
        // 4 → 2 within each 128-bit lane: [x0 + x2, x1 + x3, y0 + y2, y1 + y3].
        let pairs: [__m512; 2] = std::array::from_fn(|p| {
            let (x, y) = (quarters[2 * p], quarters[2 * p + 1]);
            _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(x, y), _mm512_shuffle_ps::<0b11_10_11_10>(x, y))
        });
        // 2 → 1: element 4l + j holds register 4j + l.
        let (x, y) = (pairs[0], pairs[1]);
        let sums = _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(x, y), _mm512_shuffle_ps::<0b11_01_11_01>(x, y));
        let key_order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(key_order, sums)
    }
}

/// The table of [`exp_of_eight`]: entry `i` is the bits of 2^(i/32) correctly rounded to f64,
/// less `i << 47` (so that adding `k << 47` for `k ≡ i mod 32` gives 2^(k/32)). Computed with
/// 80-digit decimal arithmetic; the test recomputes each entry.
pub(super) const EXP_TABLE: [u64; 32] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
];
/// 32 / ln 2, and the constants of the cubic 2^(r/32) ≈ 1 + C2 r + C1 r² + C0 r³ on
/// r ∈ [-1/2, 1/2]: those of the exponential in glibc's libm (from Arm's optimized routines).
const EXP_32_OVER_LN2: u64 = 0x4047_1547_652b_82fe;
const EXP_C0: u64 = 0x3ebc_6af8_4b91_2394;
const EXP_C1: u64 = 0x3f2e_bfce_50fa_c4f3;
const EXP_C2: u64 = 0x3f96_2e42_ff0c_52d6;
/// 1.5 · 2^52: adding it rounds a double to an integer in the low mantissa bits.
const EXP_ROUNDING_SHIFT: u64 = 0x4338_0000_0000_0000;
/// Top 12 bits (sign cleared) of |x| = 88.0: from there on glibc's `expf` takes its paths for
/// overflow, underflow, infinities and NaN, which [`silu_times_avx512`] leaves to `f32::exp`.
const EXP_SPECIAL_TOP12: i32 = 0x42b;

/// e^x of 8 floats, computed the way glibc's `expf` computes it on a CPU with FMA (its
/// `__expf_fma`): in doubles, `k = round(x · 32/ln 2)` by the 1.5 · 2^52 shift, both fused
/// multiply-adds of the reduction, 2^(k/32) from the table, the cubic by three fused
/// multiply-adds, then rounded to f32 once. Same operations in the same order, so the same bits
/// for every |x| < 88 (the test compares with `f32::exp`).
#[inline(always)]
unsafe fn exp_of_eight(x: __m256) -> __m256 {
    unsafe {
        let constant = |bits: u64| _mm512_set1_pd(f64::from_bits(bits));
        let (scale, shift) = (constant(EXP_32_OVER_LN2), constant(EXP_ROUNDING_SHIFT));
        let xd = _mm512_cvtps_pd(x);
        let shifted = _mm512_fmadd_pd(scale, xd, shift);
        let k = _mm512_castpd_si512(shifted);
        let r = _mm512_fmsub_pd(scale, xd, _mm512_sub_pd(shifted, shift));
        let table = |at: usize| _mm512_loadu_si512(EXP_TABLE[at..at + 8].as_ptr().cast());
        // Entries 0-15 and 16-31 by two 16-way permutes, bit 4 of k picking between them.
        let low = _mm512_permutex2var_epi64(table(0), k, table(8));
        let high = _mm512_permutex2var_epi64(table(16), k, table(24));
        let entry = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(k, _mm512_set1_epi64(16)), low, high);
        let two_to_k = _mm512_castsi512_pd(_mm512_add_epi64(entry, _mm512_slli_epi64::<47>(k)));
        let z = _mm512_fmadd_pd(constant(EXP_C0), r, constant(EXP_C1));
        let y = _mm512_fmadd_pd(constant(EXP_C2), r, _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, _mm512_mul_pd(r, r), y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, two_to_k))
    }
}

/// [`super::write_columns`] on AVX-512, for the first `tiles` tiles of 16 columns of 16 rows:
/// each tile's 16 rows loaded, transposed in registers (pairs of values, then of pairs, then of
/// 128-bit lanes, twice), and stored as 16 columns.
///
/// # Safety
/// The CPU must have AVX-512F; `rows` must hold 16 rows of `cols` values with `tiles · 16 ≤
/// cols`, and `out` every `c · count + first + 0..16` for `c < tiles · 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn write_column_tiles_avx512(rows: &[f32], cols: usize, tiles: usize, out: &mut [f32], count: usize, first: usize) {
    unsafe {
        for tile in 0..tiles {
            let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(rows.as_ptr().add(i * cols + 16 * tile)));
            // Within each 128-bit lane: [r2i[0], r2i+1[0], r2i[1], r2i+1[1]] and the next two columns.
            let pairs: [__m512; 16] = std::array::from_fn(|j| match j % 2 {
                0 => _mm512_unpacklo_ps(r[j], r[j + 1]),
                _ => _mm512_unpackhi_ps(r[j - 1], r[j]),
            });
            // quads[4g + c]: rows 4g..4g+4 of column c (lane 0), c + 4, c + 8, c + 12 (lanes 1-3).
            let quads: [__m512; 16] = std::array::from_fn(|j| {
                let (g, c) = (j / 4, j % 4);
                let (a, b) = (_mm512_castps_pd(pairs[4 * g + c / 2]), _mm512_castps_pd(pairs[4 * g + 2 + c / 2]));
                _mm512_castpd_ps(match c % 2 {
                    0 => _mm512_unpacklo_pd(a, b),
                    _ => _mm512_unpackhi_pd(a, b),
                })
            });
            // halves[8h + c]: rows 8h..8h+4 and 8h+4..8h+8 of column c (c < 4: columns c, c + 8;
            // c ≥ 4: columns c, c + 8 from the odd lanes).
            let halves: [__m512; 16] = std::array::from_fn(|j| {
                let (h, c) = (j / 8, j % 8);
                let (a, b) = (quads[8 * h + c % 4], quads[8 * h + 4 + c % 4]);
                match c / 4 {
                    0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                    _ => _mm512_shuffle_f32x4::<0xdd>(a, b),
                }
            });
            // Column c: rows 0..16 from halves[c % 8] and halves[8 + c % 8].
            for c in 0..16 {
                let (a, b) = (halves[c % 8], halves[8 + c % 8]);
                let column = match c / 8 {
                    0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                    _ => _mm512_shuffle_f32x4::<0xdd>(a, b),
                };
                _mm512_storeu_ps(out.as_mut_ptr().add((16 * tile + c) * count + first), column);
            }
        }
    }
}

/// [`super::silu_times`] on AVX-512: `out = g / (1 + e^(-g)) · u`, eight values at a time with
/// [`exp_of_eight`], f32 additions, divisions and products as the plain build's; runs holding
/// a gate of magnitude 88 or more, and the values past the last run of 8, go through `f32::exp`.
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn silu_times_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let runs = gate.len().min(up.len()).min(out.len()) / 8;
    unsafe {
        let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
        for run in 0..runs {
            let g = _mm256_loadu_ps(gate.as_ptr().add(8 * run));
            let top12 = _mm256_and_si256(_mm256_srli_epi32::<20>(_mm256_castps_si256(g)), _mm256_set1_epi32(0x7ff));
            if _mm256_movemask_epi8(_mm256_cmpgt_epi32(top12, _mm256_set1_epi32(EXP_SPECIAL_TOP12 - 1))) != 0 {
                let at = 8 * run..8 * run + 8;
                super::silu_times_plain(&gate[at.clone()], &up[at.clone()], &mut out[at]);
                continue;
            }
            let e = exp_of_eight(_mm256_xor_ps(g, sign));
            let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * run), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(8 * run))));
        }
    }
    let done = 8 * runs;
    super::silu_times_plain(&gate[done..], &up[done..], &mut out[done..]);
}
