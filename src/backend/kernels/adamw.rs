//! `kernels/adamw.cu`: the AdamW update (per tensor, or every tensor in one launch with a
//! per-tensor decay table, optionally writing bf16 working copies) and the deterministic
//! two-kernel Σ x² of the global gradient norm (the sequence [`sum_squares`]).

use super::bf16;
use super::{kernels, long, Dim3, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::error::Result;

/// Threads per block of every kernel of the file.
pub const BLOCK: u32 = 256;

/// Grid cap of the grid-stride AdamW kernels: beyond `65536 · 256` elements they wrap.
pub const MAX_ADAMW_BLOCKS: u32 = 65536;

/// Grid cap of `sum_squares_partial`: at most this many partial sums.
pub const MAX_SUM_SQUARES_BLOCKS: u32 = 1024;

/// `ceil(n / 256)` blocks, at least 1 and at most `cap`.
fn capped_blocks(n: usize, cap: u32) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, cap as usize) as u32
}

/// `adamw`, `adamw_multi`, `adamw_multi_bf16`: grid-stride, `min(ceil(n / 256), 65536)`
/// blocks of 256.
pub fn adamw_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(capped_blocks(n, MAX_ADAMW_BLOCKS)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `sum_squares_partial`: `min(ceil(n / 256), 1024)` blocks of 256, one partial sum each
/// (the grid depends only on `n`: deterministic).
pub fn sum_squares_partial_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(capped_blocks(n, MAX_SUM_SQUARES_BLOCKS)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `sum_squares_final`: one block of 256.
pub fn sum_squares_final_launch() -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(1),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

kernels! {
    /// One AdamW step on `n` elements (torch's math); the host passes the bias corrections
    /// ([`adamw_bias_corrections`]).
    fn adamw(
        params: *mut f32, grads: *const f32, m: *mut f32, v: *mut f32, n: i64,
        lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32,
        bias_correction1: f32, bias_correction2: f32, grad_scale: f32,
    ) => adamw_launch(n as usize);
    /// `partials[k]` = Σ x² over block `k`'s grid-stride slice.
    fn sum_squares_partial(partials: *mut f32, x: *const f32, n: i64)
        => sum_squares_partial_launch(n as usize);
    /// `out[0]` = Σ of the partials, in a fixed order.
    fn sum_squares_final(out: *mut f32, partials: *const f32, num_partials: i32)
        => sum_squares_final_launch();
    /// [`adamw`] on every tensor at once: tensor `t` ends at `tensor_end[t]` (i64, ascending,
    /// the last = `n`) and decays by `tensor_decay[t]` ([`adamw_multi_tables`]).
    fn adamw_multi(
        params: *mut f32, grads: *const f32, m: *mut f32, v: *mut f32, n: i64,
        tensor_end: *const i64, tensor_decay: *const f32, num_tensors: i32,
        lr: f32, beta1: f32, beta2: f32, eps: f32,
        bias_correction1: f32, bias_correction2: f32, grad_scale: f32,
    ) => adamw_launch(n as usize);
    /// [`adamw_multi`] on f32 `master` weights, also writing `params_bf16`, each new master
    /// value rounded to nearest even.
    fn adamw_multi_bf16(
        master: *mut f32, params_bf16: *mut bf16, grads: *const f32, m: *mut f32, v: *mut f32,
        n: i64, tensor_end: *const i64, tensor_decay: *const f32, num_tensors: i32,
        lr: f32, beta1: f32, beta2: f32, eps: f32,
        bias_correction1: f32, bias_correction2: f32, grad_scale: f32,
    ) => adamw_launch(n as usize);
}

/// The bias corrections `(1 − beta1^step, 1 − beta2^step)` the AdamW kernels take,
/// computed in f64 (as torch) and rounded to f32. `step` is 1-based.
pub fn adamw_bias_corrections(beta1: f32, beta2: f32, step: u64) -> (f32, f32) {
    assert!(step >= 1, "adamw: step is 1-based");
    let t = step as f64;
    (
        (1.0 - (beta1 as f64).powf(t)) as f32,
        (1.0 - (beta2 as f64).powf(t)) as f32,
    )
}

/// The per-tensor tables `adamw_multi` takes for `(len, weight_decay)` tensors laid out back
/// to back: exclusive end offsets (ascending) and decays. Returns them with the total length.
pub fn adamw_multi_tables(tensors: &[(usize, f32)]) -> (Vec<i64>, Vec<f32>, usize) {
    let mut end = 0usize;
    let ends = tensors
        .iter()
        .map(|&(len, _)| {
            end += len;
            long(end)
        })
        .collect();
    let decays = tensors.iter().map(|&(_, wd)| wd).collect();
    (ends, decays, end)
}

/// Bytes of scratch [`sum_squares`] needs for `n` elements: the partials and the total.
pub fn sum_squares_scratch_bytes(n: usize) -> usize {
    Scratch::bytes_for(&sum_squares_regions(n))
}

/// The scratch regions of [`sum_squares`]: one f32 partial per block, then the total.
fn sum_squares_regions(n: usize) -> [usize; 2] {
    [4 * sum_squares_partial_launch(n).grid.x as usize, 4]
}

/// `Σ x²` of the `n` f32 at `x`, accumulated in f32 in an order fixed by `n` (the same bits
/// every run): `sum_squares_partial` into the scratch, then `sum_squares_final`. Returns the
/// address of the total, one f32 in the scratch.
///
/// # Safety
/// `x` addresses `n` f32 and `scratch` at least [`sum_squares_scratch_bytes`]`(n)` bytes, on
/// `rt`.
pub unsafe fn sum_squares<R: Runtime + ?Sized>(
    rt: &R,
    x: u64,
    n: usize,
    scratch: Scratch,
) -> Result<u64> {
    let regions = sum_squares_regions(n);
    let at = scratch.split(&regions);
    let (partials, total) = (at[0], at[1]);
    let num_partials = (regions[0] / 4) as i32;
    // SAFETY: the caller's contract; `partials` holds one f32 per block of the partial
    // kernel's grid, `total` one f32.
    unsafe {
        sum_squares_partial::launch(rt, partials, x, long(n))?;
        sum_squares_final::launch(rt, total, partials, num_partials)?;
    }
    Ok(total)
}
