//! `kernels/adamw.cu`: the AdamW update (per tensor, or every tensor in one launch with a
//! per-tensor decay table, optionally writing bf16 working copies) and the deterministic
//! two-kernel Σ x² of the global gradient norm.

use super::bf16;
use super::{kernels, Dim3, LaunchDims};

/// Threads per block.
const BLOCK: u32 = 256;

/// Grid cap of the grid-stride `adamw`.
const MAX_ADAMW_BLOCKS: u32 = 65536;

/// Grid cap of `sum_squares_partial`: at most this many partial sums.
const MAX_SUM_SQUARES_BLOCKS: u32 = 1024;

/// `ceil(n / 256)` blocks, at least 1 and at most `cap`.
fn capped_blocks(n: usize, cap: u32) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, cap as usize) as u32
}

/// `adamw`: grid-stride, `min(ceil(n / 256), 65536)` blocks of 256.
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

/// The bias corrections `(1 − beta1^step, 1 − beta2^step)` the `adamw` kernel takes,
/// computed in f64 (as torch) and rounded to f32. `step` is 1-based.
pub fn adamw_bias_corrections(beta1: f32, beta2: f32, step: u64) -> (f32, f32) {
    assert!(step >= 1, "adamw: step is 1-based");
    let t = step as f64;
    (
        (1.0 - (beta1 as f64).powf(t)) as f32,
        (1.0 - (beta2 as f64).powf(t)) as f32,
    )
}

/// `adamw_multi` / `adamw_multi_bf16`: grid-stride over all `n` elements, as `adamw`.
pub fn adamw_multi_launch(n: usize) -> LaunchDims {
    adamw_launch(n)
}

kernels! {
    fn adamw(params: *mut f32, grads: *const f32, m: *mut f32, v: *mut f32, n: i64, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, bias_correction1: f32, bias_correction2: f32, grad_scale: f32)
        => adamw_launch(n as usize);
    fn sum_squares_partial(partials: *mut f32, x: *const f32, n: i64)
        => sum_squares_partial_launch(n as usize);
    fn sum_squares_final(out: *mut f32, partials: *const f32, num_partials: i32)
        => sum_squares_final_launch();
    fn adamw_multi(params: *mut f32, grads: *const f32, m: *mut f32, v: *mut f32, n: i64, tensor_end: *const i64, tensor_decay: *const f32, num_tensors: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, bias_correction1: f32, bias_correction2: f32, grad_scale: f32)
        => adamw_multi_launch(n as usize);
    fn adamw_multi_bf16(master: *mut f32, params_bf16: *mut bf16, grads: *const f32, m: *mut f32, v: *mut f32, n: i64, tensor_end: *const i64, tensor_decay: *const f32, num_tensors: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, bias_correction1: f32, bias_correction2: f32, grad_scale: f32)
        => adamw_multi_launch(n as usize);
}
