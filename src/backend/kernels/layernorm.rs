//! `kernels/layernorm.cu`: LayerNorm forward, fused residual + forward, and the deterministic
//! two-kernel backward (per-block partial sums of dweight/dbias into scratch, then a
//! fixed-order sum over the partials); each in f32 and bf16 storage (`*_bf16`: activations
//! bf16, statistics, parameters and their gradients f32).

use super::bf16;
use super::{blocks, kernels, Dim3, LaunchDims};

/// Threads per block of the row kernels: 8 warps, one row each.
const BLOCK: u32 = 256;

/// Rows per block of the forward kernels.
const ROWS_PER_BLOCK: usize = (BLOCK / 32) as usize;

/// Dynamic shared memory one block of the backward may use without opting in to more.
const SMEM_LIMIT: usize = 48 * 1024;

/// Upper bound on the backward's grid, hence on its partial sums (2 × blocks × c floats).
const MAX_BACKWARD_BLOCKS: usize = 512;

/// `layernorm_forward`: one warp per row, 8 rows per block.
pub fn layernorm_forward_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, ROWS_PER_BLOCK)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `fused_residual_layernorm_forward`: as [`layernorm_forward_launch`].
pub fn fused_residual_layernorm_forward_launch(n: usize) -> LaunchDims {
    layernorm_forward_launch(n)
}

/// `layernorm_backward`: blocks of `W` warps, `W = min(8, 48 KiB / (8 c))` so that the warps'
/// dweight/dbias accumulators (`W · 2 · c` floats of dynamic shared memory) fit in 48 KiB
/// (hence `c ≤ 6144`); `min(ceil(n / W), 512)` blocks. Depends only on `(n, c)`, which makes
/// the result deterministic.
pub fn layernorm_backward_launch(n: usize, c: usize) -> LaunchDims {
    assert!(
        c > 0 && 8 * c <= SMEM_LIMIT,
        "layernorm_backward: c must be in 1..=6144"
    );
    let warps = (SMEM_LIMIT / (8 * c)).min(ROWS_PER_BLOCK);
    let grid = n.div_ceil(warps).clamp(1, MAX_BACKWARD_BLOCKS);
    LaunchDims {
        grid: Dim3::x(grid as u32),
        block: Dim3::x(32 * warps as u32),
        smem: (warps * 2 * c * 4) as u32,
    }
}

/// Floats of scratch `layernorm_backward` needs: `2 × grid × c` (dweight partials of every
/// block, then dbias partials).
pub fn layernorm_backward_scratch_len(n: usize, c: usize) -> usize {
    2 * layernorm_backward_launch(n, c).grid.x as usize * c
}

/// `layernorm_backward_reduce`: one thread per column.
pub fn layernorm_backward_reduce_launch(c: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(c, BLOCK as usize)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

kernels! {
    fn layernorm_forward(out: *mut f32, mean: *mut f32, rstd: *mut f32, x: *const f32, w: *const f32, b: *const f32, n: i32, c: i32, eps: f32)
        => layernorm_forward_launch(n as usize);
    fn layernorm_forward_bf16(out: *mut bf16, mean: *mut f32, rstd: *mut f32, x: *const bf16, w: *const f32, b: *const f32, n: i32, c: i32, eps: f32)
        => layernorm_forward_launch(n as usize);
    fn fused_residual_layernorm_forward(residual_out: *mut f32, out: *mut f32, mean: *mut f32, rstd: *mut f32, a: *const f32, b: *const f32, w: *const f32, bias: *const f32, n: i32, c: i32, eps: f32)
        => fused_residual_layernorm_forward_launch(n as usize);
    fn fused_residual_layernorm_forward_bf16(residual_out: *mut bf16, out: *mut bf16, mean: *mut f32, rstd: *mut f32, a: *const bf16, b: *const bf16, w: *const f32, bias: *const f32, n: i32, c: i32, eps: f32)
        => fused_residual_layernorm_forward_launch(n as usize);
    fn layernorm_backward(dx: *mut f32, scratch: *mut f32, dout: *const f32, x: *const f32, w: *const f32, mean: *const f32, rstd: *const f32, n: i32, c: i32)
        => layernorm_backward_launch(n as usize, c as usize);
    fn layernorm_backward_bf16(dx: *mut bf16, scratch: *mut f32, dout: *const bf16, x: *const bf16, w: *const f32, mean: *const f32, rstd: *const f32, n: i32, c: i32)
        => layernorm_backward_launch(n as usize, c as usize);
    fn layernorm_backward_reduce(dweight: *mut f32, dbias: *mut f32, scratch: *const f32, num_partials: i32, c: i32)
        => layernorm_backward_reduce_launch(c as usize);
}
