//! The feed-forward's gated activation of SiLU models on the CPU, `silu(gate) · up`, in one
//! pass through [`kernels::silu_times`] instead of candle's `silu` then `mul`: no intermediate
//! tensor, no library exponential per value, and no wake-up of candle's thread pool for a
//! prefill's rows (its workers then spin for a while, competing with Candor's own threads for
//! the cores). The values are candle's, bit for bit (the kernel's tests say so); other devices
//! and activations keep candle's kernels.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels;
use crate::rope::cpu_values;

/// Values from which the activation is split among rayon's threads (a prefill's rows); a
/// decode step's few rows cost less than waking a worker.
const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per parallel task.
const VALUES_PER_TASK: usize = 1 << 14;

/// `silu(gate) · up` for contiguous f32 CPU tensors of the same shape; `None` for anything else
/// (candle's kernels do those).
pub(crate) fn silu_times_on_cpu(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    if gate.dims() != up.dims() {
        return Ok(None);
    }
    let (gate_storage, gate_layout) = gate.storage_and_layout();
    let (up_storage, up_layout) = up.storage_and_layout();
    let (Some(gate_values), Some(up_values)) = (
        cpu_values(&gate_storage, gate_layout.contiguous_offsets()),
        cpu_values(&up_storage, up_layout.contiguous_offsets()),
    ) else {
        return Ok(None);
    };
    let mut out = vec![0f32; gate_values.len()];
    match out.len() >= PARALLEL_MIN_VALUES {
        true => out
            .par_chunks_mut(VALUES_PER_TASK)
            .zip(gate_values.par_chunks(VALUES_PER_TASK).zip(up_values.par_chunks(VALUES_PER_TASK)))
            .for_each(|(out, (gate, up))| kernels::silu_times(gate, up, out)),
        false => kernels::silu_times(gate_values, up_values, &mut out),
    }
    Ok(Some(Tensor::from_vec(out, gate.shape(), &Device::Cpu)?))
}
