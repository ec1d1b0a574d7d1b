//! `kernels/cross_entropy.cu`: fused softmax + cross-entropy over the first `v` of `vp` logit
//! columns (per-row losses and log-sum-exp), the fixed-order mean of the losses, and the
//! backward (in place safe); f32 or bf16 logits.

use super::bf16;
use super::{blocks, kernels, Dim3, LaunchDims};

/// Threads per block of the row and element-wise kernels.
const BLOCK: u32 = 256;

/// `cross_entropy_forward`: one block of 256 per row.
pub fn cross_entropy_forward_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, 1)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `mean_reduce`: a single block of 256 (a fixed summation order).
pub fn mean_reduce_launch() -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(1),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `cross_entropy_backward`: one block of 256 per row.
pub fn cross_entropy_backward_launch(n: usize) -> LaunchDims {
    cross_entropy_forward_launch(n)
}

kernels! {
    fn cross_entropy_forward(losses: *mut f32, lse: *mut f32, logits: *const f32, targets: *const i32, n: i32, v: i32, vp: i32)
        => cross_entropy_forward_launch(n as usize);
    fn cross_entropy_forward_bf16(losses: *mut f32, lse: *mut f32, logits: *const bf16, targets: *const i32, n: i32, v: i32, vp: i32)
        => cross_entropy_forward_launch(n as usize);
    fn mean_reduce(out: *mut f32, x: *const f32, n: i32)
        => mean_reduce_launch();
    fn cross_entropy_backward(dlogits: *mut f32, logits: *const f32, lse: *const f32, targets: *const i32, dloss: f32, n: i32, v: i32, vp: i32)
        => cross_entropy_backward_launch(n as usize);
    fn cross_entropy_backward_bf16(dlogits: *mut bf16, logits: *const bf16, lse: *const f32, targets: *const i32, dloss: f32, n: i32, v: i32, vp: i32)
        => cross_entropy_backward_launch(n as usize);
}
