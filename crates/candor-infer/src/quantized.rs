//! Weight matrices kept quantized in memory (GGUF block formats) and multiplied with exact f32
//! activations: rows are dequantized on the fly into f32 (by the vectorised block decoders of
//! [`crate::kernels`], bit-identical to candle's; formats without one there go through candle's
//! own dequantizer) and the products are accumulated in f32, so nothing rounds the activations
//! (unlike candle's and llama.cpp's quantized matmuls, which round them to 8 bits).
//!
//! Two paths, both exact to f32 rounding:
//! - few activation rows (decode, small batches): a candle custom op where each rayon task
//!   multiplies [`ROWS_PER_TASK`] weight rows with every activation row through
//!   [`kernels::rows_dot`] (blocks dequantized in registers on x86-64, into an L1-sized buffer on
//!   the plain build);
//! - many activation rows (prefill, label batches): the weight's rows are cut into one block
//!   per thread (of at most [`DENSE_SLICE_BYTES`] as f32), and each thread dequantizes its
//!   block, column after column, and multiplies it through candle's f32 gemm.
//!
//! [`Weight`] is what the model holds for a projection or the embedding table: dense f32 or
//! quantized behind the same calls. Dense CPU weights take the same two paths: the dot kernels
//! for few activation rows (candle's gemm would repack the whole weight for every product), the
//! column blocks for many (copied instead of dequantized); dense weights on a GPU go through
//! candle's matmul.

use std::fmt;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor, QuantizedType};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::kernels::{self, BlockFormat};
use crate::rope::cpu_values;

/// Weight rows dequantized together by one task of the few-rows path.
const ROWS_PER_TASK: usize = 16;
/// From this many activation rows on, products go through gemm (on dequantized slices for
/// quantized weights); below, through the dot kernels, which read each weight row once.
pub(crate) const GEMM_MIN_ACTIVATION_ROWS: usize = 32;
/// Largest f32 slice of a weight one thread holds at once on the gemm path (one column block).
const DENSE_SLICE_BYTES: usize = 8 << 20;

thread_local! {
    /// The gemm path's buffer, kept by each thread for its next product: its block's weight rows
    /// column after column, then the few rows being dequantized (or copied) before they are
    /// written there. A fresh slice per product was zeroed by the allocator first (with candle's
    /// output, 4.4% of a 200-token prefill).
    static SLICE_BUFFER: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How a model's weight matrices are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    /// Dequantized to f32 at load: fastest prefill, 4 bytes per weight.
    Dense,
    /// Quantized GGUF tensors kept in their block format and dequantized row by row during
    /// each product (non-quantized tensors stay dense): a fraction of the memory.
    Quantized,
}

impl WeightStorage {
    /// `"dense"` or `"quantized"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Quantized => "quantized",
        }
    }
}

impl fmt::Display for WeightStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WeightStorage {
    type Err = InferError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(Self::Dense),
            "quantized" => Ok(Self::Quantized),
            other => Err(InferError::InvalidInput(format!(
                "weight storage `{other}`: expected `dense` or `quantized`"
            ))),
        }
    }
}

/// A `[rows, cols]` matrix in a GGUF block format, with an optional row order (output row `r`
/// is stored row `row_order[r]`), which is how llama q/k rope rows are un-permuted without
/// touching the blocks.
pub(crate) struct QuantizedMatrix {
    blocks: Blocks,
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    row_order: Vec<u32>,
}

/// The stored blocks: raw bytes for the formats with their own kernels, candle's block type for
/// the rest (Q2_K, Q3_K, ...: decoded by candle's scalar dequantizer, slower but as exact).
enum Blocks {
    Native { format: BlockFormat, bytes: Vec<u8>, row_bytes: usize },
    Candle(Box<dyn QuantizedType>),
}

impl fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QuantizedMatrix[{:?}; {}x{}]",
            self.dtype, self.rows, self.cols
        )
    }
}

impl QuantizedMatrix {
    /// Copy the blocks of a 2-d CPU `QTensor`.
    pub(crate) fn from_qtensor(tensor: &QTensor) -> Result<Self> {
        let (rows, cols) = tensor.shape().dims2()?;
        let dtype = tensor.dtype();
        if rows == 0 || cols == 0 {
            return Err(InferError::InvalidInput(format!(
                "quantized {dtype:?} tensor of shape {rows}x{cols} is empty"
            )));
        }
        let data = tensor.data()?;
        let expected = rows * cols / dtype.block_size() * dtype.type_size();
        if cols % dtype.block_size() != 0 || data.len() != expected {
            return Err(InferError::InvalidInput(format!(
                "quantized {dtype:?} tensor of shape {rows}x{cols} holds {} bytes, expected {expected}",
                data.len()
            )));
        }
        let blocks = match BlockFormat::of(dtype) {
            Some(format) => {
                let row_bytes = cols / format.block_values() * format.block_bytes();
                Blocks::Native { format, row_bytes, bytes: data.into_owned() }
            }
            None => Blocks::Candle(dtype.from_data(data)),
        };
        let row_order = (0..rows as u32).collect();
        Ok(Self {
            blocks,
            dtype,
            rows,
            cols,
            row_order,
        })
    }

    /// Reorder the rows: output row `r` becomes stored row `order[r]`.
    pub(crate) fn with_row_order(mut self, order: Vec<u32>) -> Result<Self> {
        let mut seen = vec![false; self.rows];
        let is_permutation = order.len() == self.rows
            && order.iter().all(|&r| {
                let fresh = (r as usize) < self.rows && !seen[r as usize];
                if fresh {
                    seen[r as usize] = true;
                }
                fresh
            });
        if !is_permutation {
            return Err(InferError::InvalidInput(format!(
                "row order of a {}-row matrix must be a permutation of 0..{}",
                self.rows, self.rows
            )));
        }
        self.row_order = order;
        Ok(self)
    }

    /// `(rows, cols)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Output rows `rows` (indices after the row order) dequantized, `rows.len() * cols` values.
    pub(crate) fn dequantize_rows(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let stored: Vec<u32> = rows
            .iter()
            .map(|&r| {
                self.row_order.get(r as usize).copied().ok_or_else(|| {
                    InferError::InvalidInput(format!(
                        "row {r} of a {}-row quantized matrix",
                        self.rows
                    ))
                })
            })
            .collect::<Result<_>>()?;
        self.dequantize_stored(&stored)
    }

    fn dequantize_stored(&self, stored: &[u32]) -> Result<Vec<f32>> {
        match &self.blocks {
            Blocks::Native { .. } => {
                let mut values = vec![0f32; stored.len() * self.cols];
                self.dequantize_stored_into(stored, &mut values)?;
                Ok(values)
            }
            Blocks::Candle(blocks) => match blocks.embedding(stored, self.rows, self.cols)? {
                CpuStorage::F32(values) => Ok(values),
                _ => Err(InferError::InvalidInput("dequantized rows did not come back as f32".into())),
            },
        }
    }

    /// [`QuantizedMatrix::dequantize_stored`] written into `out` (`[stored.len(), cols]`): the
    /// gemm path's slices are filled in place, not through a buffer per task (allocating,
    /// zeroing and copying those was a tenth of a prefill).
    fn dequantize_stored_into(&self, stored: &[u32], out: &mut [f32]) -> Result<()> {
        match &self.blocks {
            Blocks::Native { format, bytes, row_bytes } => {
                for (&row, out) in stored.iter().zip(out.chunks_exact_mut(self.cols)) {
                    let start = row as usize * row_bytes;
                    kernels::dequantize(*format, &bytes[start..start + row_bytes], out);
                }
                Ok(())
            }
            Blocks::Candle(_) => {
                out.copy_from_slice(&self.dequantize_stored(stored)?);
                Ok(())
            }
        }
    }

    /// The whole matrix dequantized, `[rows, cols]` on `device`.
    pub(crate) fn to_dense(&self, device: &Device) -> Result<Tensor> {
        let mut values = vec![0f32; self.rows * self.cols];
        values.par_chunks_mut(ROWS_PER_TASK * self.cols).enumerate().try_for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            self.dequantize_stored_into(&self.row_order[first..first + chunk.len() / self.cols], chunk)
        })?;
        Ok(Tensor::from_vec(values, (self.rows, self.cols), device)?)
    }

    /// `x Wᵀ` for activations `x` of shape `[.., cols]` (f32, CPU): `[.., rows]`.
    pub(crate) fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let activation_rows = x.elem_count() / self.cols.max(1);
        if activation_rows < GEMM_MIN_ACTIVATION_ROWS {
            return Ok(x.contiguous()?.apply_op1_no_bwd(self)?);
        }
        let what = format!("quantized {:?}", self.dtype);
        gemm_in_column_blocks(x, (self.rows, self.cols), &what, |first, out| {
            self.dequantize_stored_into(&self.row_order[first..first + out.len() / self.cols], out)
        })
    }

    /// The few-rows product on raw slices: `x` is `[n, cols]` row-major, the result `[n, rows]`.
    fn matmul_t_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let activations = kernels::Activations::new(x, self.cols);
        parallel_row_products(self.rows, n, |first, out| {
            let ids = &self.row_order[first..first + out.len() / n];
            match &self.blocks {
                Blocks::Native { format, bytes, row_bytes } => {
                    let mut weight_rows: [&[u8]; ROWS_PER_TASK] = [&[]; ROWS_PER_TASK];
                    for (slot, &r) in weight_rows.iter_mut().zip(ids) {
                        *slot = &bytes[r as usize * row_bytes..(r as usize + 1) * row_bytes];
                    }
                    kernels::rows_dot(*format, &weight_rows[..ids.len()], &activations, out);
                }
                Blocks::Candle(_) => kernels::dense_rows_dot(&self.dequantize_stored(ids)?, &activations, out),
            }
            Ok(())
        })
    }
}

/// `x Wᵀ` for activations `x` (`[.., cols]`, f32, CPU) and a `[rows, cols]` weight whose rows
/// `fill(first, out)` writes (row-major) into `out`, [`ROWS_PER_TASK`] or fewer at a time: the
/// many-row product of quantized and dense CPU weights. The result is cut into one column block
/// per thread ([`gemm_block_rows`]); each thread writes its block's weight rows column after
/// column into a buffer it keeps, then multiplies them by gemm into the block.
fn gemm_in_column_blocks(
    x: &Tensor,
    (rows, cols): (usize, usize),
    what: &str,
    fill: impl Fn(usize, &mut [f32]) -> Result<()> + Sync,
) -> Result<Tensor> {
    let (leading, x2) = flatten_activations(x, (rows, cols), what)?;
    let x2 = x2.contiguous()?;
    let (storage, layout) = x2.storage_and_layout();
    let Some(values) = cpu_values(&storage, layout.contiguous_offsets()) else {
        return Err(InferError::InvalidInput(format!("{what} product of activations off the CPU")));
    };
    let mut y = vec![0f32; values.len() / cols.max(1) * rows];
    let blocks = kernels::column_blocks(&mut y, rows, gemm_block_rows(rows, cols))?;
    blocks.into_par_iter().try_for_each(|block| {
        // A product nested in another on this thread (rayon work stealing) takes a buffer of its
        // own.
        SLICE_BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut reused) => block_product(values, cols, &fill, &mut reused, block),
            Err(_) => block_product(values, cols, &fill, &mut Vec::new(), block),
        })
    })?;
    let mut shape = leading;
    shape.push(rows);
    Ok(Tensor::from_vec(y, shape, &Device::Cpu)?)
}

/// Weight rows per block of the gemm path: the rows shared evenly among the threads, in runs of
/// [`ROWS_PER_TASK`], each block's slice at most [`DENSE_SLICE_BYTES`].
///
/// Why one block per thread, each written and multiplied on that thread by a single-threaded
/// gemm, rather than the whole weight dequantized in parallel and then one gemm on every
/// thread: the slice a thread multiplies is the one it just wrote (in its own cache, not written
/// out to memory and read back by the other core), and a product waits for the other threads
/// once instead of at each of gemm's own parallel steps. A 200-token prefill went from
/// 462/431/496 to 494/465/509 tok/s (medians of 6 alternating runs in one process, three
/// processes); dequantizing fell from 5.2% to 1.8% of it (perf).
fn gemm_block_rows(rows: usize, cols: usize) -> usize {
    let per_thread = rows.div_ceil(rayon::current_num_threads().max(1));
    let largest = (DENSE_SLICE_BYTES / (4 * cols.max(1))).max(ROWS_PER_TASK);
    per_thread.min(largest).div_ceil(ROWS_PER_TASK) * ROWS_PER_TASK
}

/// One column block of `x Wᵀ` (`x` `[n, cols]`): the block's weight rows filled
/// [`ROWS_PER_TASK`] at a time and written column after column into `slice` (the layout
/// [`kernels::ColumnBlock::gemm_x_wt`] copies fastest), then multiplied by gemm into the block.
fn block_product(
    x: &[f32],
    cols: usize,
    fill: &impl Fn(usize, &mut [f32]) -> Result<()>,
    slice: &mut Vec<f32>,
    block: kernels::ColumnBlock<'_>,
) -> Result<()> {
    let columns = block.columns();
    let count = columns.len();
    let staged = ROWS_PER_TASK * cols;
    if slice.len() < count * cols + staged {
        slice.resize(count * cols + staged, 0.0);
    }
    let (by_columns, rows) = slice.split_at_mut(count * cols);
    for first in (0..count).step_by(ROWS_PER_TASK) {
        let rows = &mut rows[..ROWS_PER_TASK.min(count - first) * cols];
        fill(columns.start + first, rows)?;
        kernels::write_columns(rows, cols, by_columns, count, first);
    }
    block.gemm_x_wt(x, by_columns, cols)
}

/// Leading dims of `x` and `x` as `[n, cols]`, after checking it is f32 with `cols` columns
/// for a `what` weight of `rows` × `cols`.
fn flatten_activations(x: &Tensor, (rows, cols): (usize, usize), what: &str) -> Result<(Vec<usize>, Tensor)> {
    let dims = x.dims();
    if dims.last() != Some(&cols) || x.dtype() != DType::F32 {
        return Err(InferError::InvalidInput(format!(
            "activations of shape {dims:?} ({:?}) for a {what} {rows}x{cols} weight: expected f32 [.., {cols}]",
            x.dtype()
        )));
    }
    let leading = dims[..dims.len() - 1].to_vec();
    let n = leading.iter().product::<usize>();
    Ok((leading, x.reshape((n, cols))?))
}

/// Products of `n` activation rows with `rows` weight rows, `[n, rows]` row-major. Rayon tasks
/// own [`ROWS_PER_TASK`] weight rows each: `task(first, out)` fills the outputs of weight rows
/// `first..first + out.len() / n`, laid out `[n, out.len() / n]` in a buffer of the task's
/// thread, whose rows the task then copies into its columns of the result.
///
/// Each task writes its own columns, in runs of [`ROWS_PER_TASK`]: transposing the whole
/// `[rows, n]` result afterwards on one thread was 4.5% of a 16-sequence decode step (perf),
/// with the other core idle, and zeroing its buffer another 1-2%. The kernels write the
/// buffer in the result's own layout, so each run is one copy (a gather of `[weight row,
/// activation row]` values was 1.7% of a 16-sequence step).
fn parallel_row_products(rows: usize, n: usize, task: impl Fn(usize, &mut [f32]) -> Result<()> + Sync) -> Result<Vec<f32>> {
    let mut y = vec![0f32; n * rows];
    if n == 1 {
        // One activation row: both layouts are the same.
        y.par_chunks_mut(ROWS_PER_TASK).enumerate().try_for_each(|(index, out)| task(index * ROWS_PER_TASK, out))?;
        return Ok(y);
    }
    // Task-major: the run of task k in activation row t is `columns[k * n + t]`.
    let mut runs_of_rows: Vec<_> = y.chunks_mut(rows.max(1)).map(|row| row.chunks_mut(ROWS_PER_TASK)).collect();
    let tasks = rows.div_ceil(ROWS_PER_TASK);
    let mut columns: Vec<&mut [f32]> = Vec::with_capacity(tasks * n);
    for _ in 0..tasks {
        columns.extend(runs_of_rows.iter_mut().filter_map(Iterator::next));
    }
    columns.par_chunks_mut(n.max(1)).enumerate().try_for_each_init(Vec::new, |local, (index, runs)| {
        let count = runs.first().map_or(0, |run| run.len());
        local.resize(count * n, 0.0);
        task(index * ROWS_PER_TASK, local)?;
        for (run, values) in runs.iter_mut().zip(local.chunks_exact(count.max(1))) {
            copy_run(run, values);
        }
        Ok::<(), InferError>(())
    })?;
    Ok(y)
}

/// `run.copy_from_slice(values)`, with a full run of [`ROWS_PER_TASK`] copied inline: the
/// library `memmove` called for each 64-byte run was 1.2% of a 16-sequence decode step.
fn copy_run(run: &mut [f32], values: &[f32]) {
    if let (Ok(run), Ok(values)) = (<&mut [f32; ROWS_PER_TASK]>::try_from(&mut *run), <&[f32; ROWS_PER_TASK]>::try_from(values)) {
        *run = *values;
        return;
    }
    run.copy_from_slice(values);
}

/// `x Wᵀ` for a few activation rows and a dense f32 weight `[rows, cols]` on the CPU, by the
/// dot kernels of [`kernels::dense_rows_dot`]. candle's matmul packs the whole weight for every
/// product (41% of a MASSIVE run went to packing and gemm with the few rows of decode steps);
/// this reads each weight row once, and a row's result does not depend on the rows batched
/// with it.
struct DenseSmallBatch;

impl CustomOp2 for DenseSmallBatch {
    fn name(&self) -> &'static str {
        "f32-activations-times-dense-weight-few-rows"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = match (x_storage, x_layout.contiguous_offsets(), w_storage, w_layout.contiguous_offsets()) {
            (CpuStorage::F32(x), Some((xs, xe)), CpuStorage::F32(w), Some((ws, we))) => (&x[xs..xe], &w[ws..we]),
            _ => candle_core::bail!("{}: expected contiguous f32 tensors", self.name()),
        };
        let (rows, cols) = w_layout.shape().dims2()?;
        let dims = x_layout.dims();
        if dims.last() != Some(&cols) {
            candle_core::bail!("{}: activations of shape {dims:?} for a {rows}x{cols} weight", self.name());
        }
        let activations = kernels::Activations::new(x, cols);
        let n = activations.len();
        let y = parallel_row_products(rows, n, |first, out| {
            kernels::dense_rows_dot(&w[first * cols..(first + out.len() / n) * cols], &activations, out);
            Ok(())
        })
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.push(rows);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

impl CustomOp1 for QuantizedMatrix {
    fn name(&self) -> &'static str {
        "f32-activations-times-quantized-weight"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(values), Some((start, end))) => &values[start..end],
            _ => candle_core::bail!(
                "{}: expected contiguous f32 activations, got layout {layout:?}",
                self.name()
            ),
        };
        if dims.last() != Some(&self.cols) {
            candle_core::bail!(
                "{}: activations of shape {dims:?} for a {}x{} weight",
                self.name(),
                self.rows,
                self.cols
            );
        }
        let n = x.len() / self.cols.max(1);
        let y = self
            .matmul_t_rows(x, n)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.push(self.rows);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

/// A projection weight or embedding table, `[rows, cols]`: dense f32, or quantized blocks
/// shared between the embedding and a tied output head.
#[derive(Debug, Clone)]
pub(crate) enum Weight {
    /// f32 on the model's device.
    Dense(Tensor),
    /// GGUF blocks in CPU memory.
    Quantized(Arc<QuantizedMatrix>),
}

/// `x Wᵀ` for many activation rows and a dense CPU weight: through the column blocks of
/// [`gemm_in_column_blocks`] for a contiguous f32 one (candle's matmul packed the weight's rows
/// value by value: dense prefill was ~20% slower than quantized), candle's matmul otherwise.
fn dense_gemm(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let (storage, layout) = w.storage_and_layout();
    let Some(weights) = cpu_values(&storage, layout.contiguous_offsets()) else {
        return Ok(x.matmul(&w.t()?)?);
    };
    gemm_in_column_blocks(x, (rows, cols), "dense", |first, out| {
        out.copy_from_slice(&weights[first * cols..first * cols + out.len()]);
        Ok(())
    })
}

impl Weight {
    /// `x Wᵀ` for `x` of shape `[.., cols]`.
    pub(crate) fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => {
                let activation_rows = x.elem_count() / w.dim(1)?.max(1);
                match (w.device().is_cpu(), activation_rows < GEMM_MIN_ACTIVATION_ROWS) {
                    (true, true) => Ok(x.contiguous()?.apply_op2_no_bwd(w, &DenseSmallBatch)?),
                    (true, false) => dense_gemm(x, w),
                    (false, _) => Ok(x.matmul(&w.t()?)?),
                }
            }
            Self::Quantized(q) => q.matmul_t(x),
        }
    }

    /// Rows `ids` (a 1-d u32 tensor) as `[ids.len(), cols]`: the embedding lookup.
    pub(crate) fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(w.index_select(ids, 0)?),
            Self::Quantized(q) => {
                let ids = ids.to_vec1::<u32>()?;
                let values = q.dequantize_rows(&ids)?;
                Ok(Tensor::from_vec(values, (ids.len(), q.cols), &Device::Cpu)?)
            }
        }
    }

    /// The matrix as dense f32 on `device` (for export).
    pub(crate) fn to_dense(&self, device: &Device) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(w.clone()),
            Self::Quantized(q) => q.to_dense(device),
        }
    }

    /// Whether the matrix is held quantized.
    pub(crate) fn is_quantized(&self) -> bool {
        matches!(self, Self::Quantized(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[rows, cols]` tensor of deterministic pseudo-random values in [-1, 1).
    fn random_matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    /// `x Wᵀ` computed naively in f64 from the fully dequantized weight.
    fn naive_product(x: &Tensor, w_dense: &Tensor) -> Vec<Vec<f64>> {
        let x: Vec<Vec<f32>> = x.to_vec2().unwrap();
        let w: Vec<Vec<f32>> = w_dense.to_vec2().unwrap();
        x.iter()
            .map(|xr| {
                w.iter()
                    .map(|wr| {
                        xr.iter()
                            .zip(wr)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }

    fn max_abs_diff(got: &Tensor, want: &[Vec<f64>]) -> f64 {
        let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .flat_map(|(g, w)| {
                assert_eq!(g.len(), w.len());
                g.iter().zip(w).map(|(a, b)| (f64::from(*a) - b).abs())
            })
            .fold(0.0, f64::max)
    }

    /// Every format with its own kernel, and Q3_K, which goes through candle's dequantizer.
    const BLOCK_TYPES: [GgmlDType; 9] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q3K,
    ];

    #[test]
    fn products_match_naive_dequantize_then_matmul_for_every_block_type() {
        // Row counts that are not multiples of ROWS_PER_TASK; activation batches on both paths.
        for dtype in BLOCK_TYPES {
            let cols = 2 * dtype.block_size();
            for rows in [1, 37] {
                let q = QTensor::quantize(&random_matrix(rows, cols, rows as u64), dtype).unwrap();
                let dense = q.dequantize(&Device::Cpu).unwrap();
                let matrix = QuantizedMatrix::from_qtensor(&q).unwrap();
                for batch in [1, 3, GEMM_MIN_ACTIVATION_ROWS + 5] {
                    let x = random_matrix(batch, cols, 1000 + batch as u64);
                    let got = matrix.matmul_t(&x).unwrap();
                    assert_eq!(got.dims(), &[batch, rows]);
                    let diff = max_abs_diff(&got, &naive_product(&x, &dense));
                    // Sums of `cols` products of magnitude < ~1 in f32: a few ulps of ~sqrt(cols).
                    assert!(
                        diff < 1e-4,
                        "{dtype:?} {rows}x{cols}, batch {batch}: max |diff| {diff:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_path_slices_large_weights_and_keeps_leading_dims() {
        // 600 rows of 4096 columns: 9.4 MB as f32, more than one 8 MB slice whatever the threads
        // (blocks of at most 512 rows); 2 × 20 activation rows, past the gemm threshold. Quantized
        // and dense weights give the bits of candle's matmul with the dequantized weight.
        let (rows, cols) = (600, 4096);
        let q = QTensor::quantize(&random_matrix(rows, cols, 7), GgmlDType::Q8_0).unwrap();
        let dense = q.dequantize(&Device::Cpu).unwrap();
        let matrix = QuantizedMatrix::from_qtensor(&q).unwrap();
        let x = random_matrix(2 * 20, cols, 8).reshape((2, 20, cols)).unwrap();
        let candle: Vec<f32> = x.matmul(&dense.t().unwrap().broadcast_left(2).unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for weight in [Weight::Quantized(Arc::new(matrix)), Weight::Dense(dense.clone())] {
            let got = weight.matmul_t(&x).unwrap();
            assert_eq!(got.dims(), &[2, 20, rows]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let differing = got.iter().zip(&candle).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "quantized: {}", weight.is_quantized());
        }
    }

    #[test]
    fn row_order_permutes_products_and_lookups() {
        let (rows, cols) = (20, 64);
        let q = QTensor::quantize(&random_matrix(rows, cols, 3), GgmlDType::Q4_1).unwrap();
        let dense: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
        let order: Vec<u32> = (0..rows as u32).rev().collect();
        let matrix = QuantizedMatrix::from_qtensor(&q)
            .unwrap()
            .with_row_order(order)
            .unwrap();
        let looked_up = matrix.dequantize_rows(&[0, 5]).unwrap();
        assert_eq!(&looked_up[..cols], dense[rows - 1].as_slice());
        assert_eq!(&looked_up[cols..], dense[rows - 6].as_slice());
        let x = random_matrix(1, cols, 4);
        let y: Vec<Vec<f32>> = matrix.matmul_t(&x).unwrap().to_vec2().unwrap();
        let reversed: Vec<Vec<f32>> = dense.into_iter().rev().collect();
        let w = Tensor::new(reversed, &Device::Cpu).unwrap();
        let diff = max_abs_diff(
            &Tensor::new(y, &Device::Cpu).unwrap(),
            &naive_product(&x, &w),
        );
        assert!(diff < 1e-5, "max |diff| {diff:e}");
        let bad = QuantizedMatrix::from_qtensor(&q)
            .unwrap()
            .with_row_order(vec![0; rows]);
        assert!(bad.is_err(), "a repeated row is not a permutation");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let q = QTensor::quantize(&random_matrix(4, 32, 1), GgmlDType::Q8_0).unwrap();
        let matrix = QuantizedMatrix::from_qtensor(&q).unwrap();
        assert!(matrix.matmul_t(&random_matrix(1, 33, 2)).is_err());
        assert!(matrix.matmul_t(&random_matrix(9, 33, 2)).is_err());
        assert!(matrix.dequantize_rows(&[4]).is_err());
        assert!("q4".parse::<WeightStorage>().is_err());
        assert_eq!(
            "quantized".parse::<WeightStorage>().unwrap(),
            WeightStorage::Quantized
        );
    }
}
