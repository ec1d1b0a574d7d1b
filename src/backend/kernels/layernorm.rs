//! `kernels/layernorm.cu`: LayerNorm forward, fused residual + forward, and the deterministic
//! one-kernel backward (per-block partial sums of dweight/dbias into scratch, summed in block
//! order by the last block to finish, found with a block counter: [`backward`]); each in f32
//! and bf16 storage (`*_bf16`: activations bf16, statistics, parameters and their gradients
//! f32). Each lane of a row's warp moves 16-byte chunks of the row (4 f32 or 8 bf16) where the
//! pointers are aligned, element by element elsewhere, with the same results.

use super::bf16;
use super::{blocks, int, kernels, Dim3, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::backend::DType;
use crate::error::Result;

/// Threads per block of the row kernels: 8 warps, one row each.
const BLOCK: u32 = 256;

/// Rows per block of the forward kernels.
const ROWS_PER_BLOCK: usize = (BLOCK / 32) as usize;

/// Dynamic shared memory one block of the backward may use without opting in to more.
const SMEM_LIMIT: usize = 48 * 1024;

/// Upper bound on the backward's grid, hence on its partial sums (2 × blocks × c floats).
const MAX_BACKWARD_BLOCKS: usize = 512;

/// `layernorm_forward` and `fused_residual_layernorm_forward`: one warp per row, 8 rows per
/// block.
pub fn forward_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, ROWS_PER_BLOCK)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `layernorm_backward`: blocks of `W` warps, `W = min(8, 48 KiB / (8 c))` so that the warps'
/// dweight/dbias accumulators (`W · 2 · c` floats of dynamic shared memory) fit in 48 KiB
/// (hence `c ≤ 6144`); `min(ceil(n / W), 512)` blocks. Depends only on `(n, c)`, which makes
/// the result deterministic.
pub fn backward_launch(n: usize, c: usize) -> LaunchDims {
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

kernels! {
    /// LayerNorm of `x (n,c)` into `out`, saving `mean (n)` and `rstd (n)`.
    fn layernorm_forward(out: *mut f32, mean: *mut f32, rstd: *mut f32, x: *const f32, w: *const f32, b: *const f32, n: i32, c: i32, eps: f32)
        => forward_launch(n as usize);
    /// [`layernorm_forward`] with bf16 `out` and `x`.
    fn layernorm_forward_bf16(out: *mut bf16, mean: *mut f32, rstd: *mut f32, x: *const bf16, w: *const f32, b: *const f32, n: i32, c: i32, eps: f32)
        => forward_launch(n as usize);
    /// `residual_out = a + b` (may alias `a` or `b`), then its LayerNorm as stored.
    fn fused_residual_layernorm_forward(residual_out: *mut f32, out: *mut f32, mean: *mut f32, rstd: *mut f32, a: *const f32, b: *const f32, w: *const f32, bias: *const f32, n: i32, c: i32, eps: f32)
        => forward_launch(n as usize);
    /// As `add_bf16` then [`layernorm_forward_bf16`], bit for bit.
    fn fused_residual_layernorm_forward_bf16(residual_out: *mut bf16, out: *mut bf16, mean: *mut f32, rstd: *mut f32, a: *const bf16, b: *const bf16, w: *const f32, bias: *const f32, n: i32, c: i32, eps: f32)
        => forward_launch(n as usize);
    /// `dx` (may alias `dout`), each block's dweight/dbias partials into `scratch`, and
    /// `dweight`/`dbias` written by the last block to finish, as counted in `counter` (0 on
    /// entry, left 0); see [`backward`].
    fn layernorm_backward(dx: *mut f32, dweight: *mut f32, dbias: *mut f32, scratch: *mut f32, counter: *mut u32, dout: *const f32, x: *const f32, w: *const f32, mean: *const f32, rstd: *const f32, n: i32, c: i32)
        => backward_launch(n as usize, c as usize);
    /// [`layernorm_backward`] with bf16 `dx`, `dout`, `x`.
    fn layernorm_backward_bf16(dx: *mut bf16, dweight: *mut f32, dbias: *mut f32, scratch: *mut f32, counter: *mut u32, dout: *const bf16, x: *const bf16, w: *const f32, mean: *const f32, rstd: *const f32, n: i32, c: i32)
        => backward_launch(n as usize, c as usize);
}

/// Bytes of the partials `layernorm_backward` writes: dweight then dbias of each block.
fn partials_bytes(n: usize, c: usize) -> usize {
    4 * 2 * backward_launch(n, c).grid.x as usize * c
}

/// Scratch [`backward`] needs for `(n, c)`.
pub fn backward_scratch_bytes(n: usize, c: usize) -> usize {
    if c == 0 {
        return 0;
    }
    Scratch::bytes_for(&[partials_bytes(n, c)])
}

/// The LayerNorm backward, one launch: `dx (n,c)` in `dtype` (as `dout` and `x`), `dweight
/// (c)` and `dbias (c)` in f32 (written, not accumulated), from the forward's `mean` and `rstd
/// (n)`. Each block of `layernorm_backward[_bf16]` writes its partial sums into `scratch` and
/// counts itself done in `counter`; the last block sums the partials in block order: the same
/// bits on every run, whichever block finishes last. `dx` may alias `dout`.
///
/// `counter` is the address of a `u32` of device memory that holds 0 when the launch runs
/// (allocate it with `alloc_zeroed`); the kernel leaves it 0, so one word serves every later
/// call and every replay of a recorded graph. Calls sharing a counter must run in stream order
/// (never concurrently), and a call that fails part-way may leave it non-zero.
///
/// # Safety
/// Every address is memory of `rt` holding its operand at these sizes (`w`, `mean`, `rstd`,
/// `dweight`, `dbias` f32; `counter` 4 bytes, as above); `scratch` holds
/// [`backward_scratch_bytes`] and overlaps nothing.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward<R: Runtime + ?Sized>(
    rt: &R,
    dtype: DType,
    [dx, dweight, dbias]: [u64; 3],
    [dout, x, w, mean, rstd]: [u64; 5],
    n: usize,
    c: usize,
    scratch: Scratch,
    counter: u64,
) -> Result<()> {
    if c == 0 {
        return Ok(());
    }
    let partials = scratch.split(&[partials_bytes(n, c)])[0];
    let (n, c) = (int(n), int(c));
    // SAFETY: the caller's contract; the scratch region holds the 2 × grid × c floats the
    // kernel writes and its last block reads, and the counter is zero.
    unsafe {
        match dtype {
            DType::F32 => layernorm_backward::launch(
                rt, dx, dweight, dbias, partials, counter, dout, x, w, mean, rstd, n, c,
            ),
            DType::Bf16 => layernorm_backward_bf16::launch(
                rt, dx, dweight, dbias, partials, counter, dout, x, w, mean, rstd, n, c,
            ),
        }
    }
}
