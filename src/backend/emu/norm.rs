//! LayerNorm kernels of `kernels/layernorm.cu`: forward, fused residual + forward, and the
//! deterministic two-kernel backward (per-block partial sums of dweight/dbias into a scratch
//! buffer, then a fixed-order sum over the partials).
//!
//! The `*_bf16` wrappers run the bf16-storage kernels: activations (`x`, `out`,
//! `residual_out`, `dout`, `dx`) are bf16 bit patterns (`u16`), while `w`, `b`, `mean`,
//! `rstd`, the scratch partials and `dweight`/`dbias` stay f32; arithmetic is f32. They use
//! the f32 kernels' geometry ([`layernorm_forward_launch`], [`layernorm_backward_launch`], ...).

// The launchers mirror the kernels' argument lists (pointers plus sizes), so they are long.
#![allow(clippy::too_many_arguments)]

use std::ffi::c_int;

use super::{Dim3, LaunchDims};

/// Threads per block of the row kernels: 8 warps, one row each.
const BLOCK: u32 = 256;
/// Rows per block of the forward kernels.
const ROWS_PER_BLOCK: usize = (BLOCK / 32) as usize;
/// Dynamic shared memory one block of the backward may use without opting in to more.
const SMEM_LIMIT: usize = 48 * 1024;
/// Upper bound on the backward's grid, hence on its partial sums (2 × blocks × c floats).
const MAX_BACKWARD_BLOCKS: usize = 512;

unsafe extern "C" {
    fn smelt_emu_layernorm_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        mean: *mut f32,
        rstd: *mut f32,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        n: c_int,
        c: c_int,
        eps: f32,
    );
    fn smelt_emu_fused_residual_layernorm_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        residual_out: *mut f32,
        out: *mut f32,
        mean: *mut f32,
        rstd: *mut f32,
        a: *const f32,
        b: *const f32,
        w: *const f32,
        bias: *const f32,
        n: c_int,
        c: c_int,
        eps: f32,
    );
    fn smelt_emu_layernorm_backward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dx: *mut f32,
        scratch: *mut f32,
        dout: *const f32,
        x: *const f32,
        w: *const f32,
        mean: *const f32,
        rstd: *const f32,
        n: c_int,
        c: c_int,
    );
    fn smelt_emu_layernorm_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        mean: *mut f32,
        rstd: *mut f32,
        x: *const u16,
        w: *const f32,
        b: *const f32,
        n: c_int,
        c: c_int,
        eps: f32,
    );
    fn smelt_emu_fused_residual_layernorm_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        residual_out: *mut u16,
        out: *mut u16,
        mean: *mut f32,
        rstd: *mut f32,
        a: *const u16,
        b: *const u16,
        w: *const f32,
        bias: *const f32,
        n: c_int,
        c: c_int,
        eps: f32,
    );
    fn smelt_emu_layernorm_backward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dx: *mut u16,
        scratch: *mut f32,
        dout: *const u16,
        x: *const u16,
        w: *const f32,
        mean: *const f32,
        rstd: *const f32,
        n: c_int,
        c: c_int,
    );
    fn smelt_emu_layernorm_backward_reduce(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dweight: *mut f32,
        dbias: *mut f32,
        scratch: *const f32,
        num_partials: c_int,
        c: c_int,
    );
}

/// `x` as a C `int`; panics when it does not fit (the kernels index rows with `int`).
fn int(x: usize) -> c_int {
    c_int::try_from(x).expect("size does not fit a C int")
}

/// `ceil(a / b)`, at least 1 (a grid never has zero blocks; the kernels check bounds).
fn blocks(a: usize, b: usize) -> u32 {
    u32::try_from(a.div_ceil(b).max(1)).expect("grid too large")
}

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

/// LayerNorm of `x (n,c)` into `out (n,c)`, saving `mean (n)` and `rstd (n)`; as
/// `kernels::layernorm_forward`.
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(
        out.len() == n * c && x.len() == n * c,
        "layernorm_forward: out, x must be n*c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "layernorm_forward: mean, rstd must be n"
    );
    assert!(
        w.len() == c && b.len() == c,
        "layernorm_forward: w, b must be c"
    );
    if c == 0 {
        return;
    }
    let d = layernorm_forward_launch(n);
    // SAFETY: the kernel reads x (n*c), w, b (c) and writes out (n*c), mean, rstd (n): the
    // lengths are checked above, and the borrows guarantee the outputs alias nothing.
    unsafe {
        smelt_emu_layernorm_forward(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            mean.as_mut_ptr(),
            rstd.as_mut_ptr(),
            x.as_ptr(),
            w.as_ptr(),
            b.as_ptr(),
            int(n),
            int(c),
            eps,
        );
    }
}

/// `residual_out = a + b` then its LayerNorm into `out`, `mean`, `rstd`; as `kernels::add`
/// followed by `kernels::layernorm_forward`.
pub fn fused_residual_layernorm_forward(
    residual_out: &mut [f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    a: &[f32],
    b: &[f32],
    w: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(
        [residual_out.len(), out.len(), a.len(), b.len()]
            .iter()
            .all(|&len| len == n * c),
        "fused_residual_layernorm_forward: residual_out, out, a, b must be n*c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "fused_residual_layernorm_forward: mean, rstd must be n"
    );
    assert!(
        w.len() == c && bias.len() == c,
        "fused_residual_layernorm_forward: w, bias must be c"
    );
    if c == 0 {
        return;
    }
    let d = fused_residual_layernorm_forward_launch(n);
    // SAFETY: lengths checked above; every output is a unique borrow.
    unsafe {
        smelt_emu_fused_residual_layernorm_forward(
            d.grid,
            d.block,
            d.smem,
            residual_out.as_mut_ptr(),
            out.as_mut_ptr(),
            mean.as_mut_ptr(),
            rstd.as_mut_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            w.as_ptr(),
            bias.as_ptr(),
            int(n),
            int(c),
            eps,
        );
    }
}

/// Backward of [`layernorm_forward`]: `dx (n,c)`, `dweight (c)`, `dbias (c)`; as
/// `kernels::layernorm_backward`. Allocates the scratch
/// ([`layernorm_backward_scratch_len`]) and runs both kernels.
pub fn layernorm_backward(
    dx: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    assert!(
        dx.len() == n * c && dout.len() == n * c && x.len() == n * c,
        "layernorm_backward: dx, dout, x must be n*c"
    );
    assert!(
        dweight.len() == c && dbias.len() == c && w.len() == c,
        "layernorm_backward: dweight, dbias, w must be c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "layernorm_backward: mean, rstd must be n"
    );
    if c == 0 {
        return;
    }
    let d = layernorm_backward_launch(n, c);
    let mut scratch = vec![f32::NAN; layernorm_backward_scratch_len(n, c)];
    let r = layernorm_backward_reduce_launch(c);
    // SAFETY: lengths checked above; the scratch holds 2 × grid × c floats, as the kernel
    // writes (every one of them, so its NaN poison never reaches the reduction); the dynamic
    // shared memory matches the block's warps × 2 × c floats.
    unsafe {
        smelt_emu_layernorm_backward(
            d.grid,
            d.block,
            d.smem,
            dx.as_mut_ptr(),
            scratch.as_mut_ptr(),
            dout.as_ptr(),
            x.as_ptr(),
            w.as_ptr(),
            mean.as_ptr(),
            rstd.as_ptr(),
            int(n),
            int(c),
        );
        smelt_emu_layernorm_backward_reduce(
            r.grid,
            r.block,
            r.smem,
            dweight.as_mut_ptr(),
            dbias.as_mut_ptr(),
            scratch.as_ptr(),
            d.grid.x as c_int,
            int(c),
        );
    }
}

/// [`layernorm_forward`] with bf16 storage: `x` and `out (n,c)` are bf16 bit patterns, `w`,
/// `b`, `mean (n)` and `rstd (n)` f32. Geometry of [`layernorm_forward_launch`].
pub fn layernorm_forward_bf16(
    out: &mut [u16],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[u16],
    w: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(
        out.len() == n * c && x.len() == n * c,
        "layernorm_forward_bf16: out, x must be n*c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "layernorm_forward_bf16: mean, rstd must be n"
    );
    assert!(
        w.len() == c && b.len() == c,
        "layernorm_forward_bf16: w, b must be c"
    );
    if c == 0 {
        return;
    }
    let d = layernorm_forward_launch(n);
    // SAFETY: the kernel reads x (n*c bf16, u16 has the layout of __nv_bfloat16), w, b (c)
    // and writes out (n*c), mean, rstd (n): lengths checked above; outputs are unique borrows.
    unsafe {
        smelt_emu_layernorm_forward_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            mean.as_mut_ptr(),
            rstd.as_mut_ptr(),
            x.as_ptr(),
            w.as_ptr(),
            b.as_ptr(),
            int(n),
            int(c),
            eps,
        );
    }
}

/// [`fused_residual_layernorm_forward`] with bf16 storage: `residual_out = bf16(a + b)`, then
/// the LayerNorm of that ROUNDED residual into `out` (bf16), `mean`, `rstd` (f32): exactly
/// `add_bf16` followed by [`layernorm_forward_bf16`].
pub fn fused_residual_layernorm_forward_bf16(
    residual_out: &mut [u16],
    out: &mut [u16],
    mean: &mut [f32],
    rstd: &mut [f32],
    a: &[u16],
    b: &[u16],
    w: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(
        [residual_out.len(), out.len(), a.len(), b.len()]
            .iter()
            .all(|&len| len == n * c),
        "fused_residual_layernorm_forward_bf16: residual_out, out, a, b must be n*c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "fused_residual_layernorm_forward_bf16: mean, rstd must be n"
    );
    assert!(
        w.len() == c && bias.len() == c,
        "fused_residual_layernorm_forward_bf16: w, bias must be c"
    );
    if c == 0 {
        return;
    }
    let d = fused_residual_layernorm_forward_launch(n);
    // SAFETY: lengths checked above; bf16 buffers are u16 (the layout of __nv_bfloat16);
    // every output is a unique borrow.
    unsafe {
        smelt_emu_fused_residual_layernorm_forward_bf16(
            d.grid,
            d.block,
            d.smem,
            residual_out.as_mut_ptr(),
            out.as_mut_ptr(),
            mean.as_mut_ptr(),
            rstd.as_mut_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            w.as_ptr(),
            bias.as_ptr(),
            int(n),
            int(c),
            eps,
        );
    }
}

/// [`layernorm_backward`] with bf16 storage: `dx`, `dout`, `x (n,c)` bf16 bit patterns;
/// `dweight (c)`, `dbias (c)` f32, from the f32 scratch partials that
/// `layernorm_backward_bf16` writes and `layernorm_backward_reduce` sums (the f32 geometry
/// and scratch, [`layernorm_backward_scratch_len`]).
pub fn layernorm_backward_bf16(
    dx: &mut [u16],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[u16],
    x: &[u16],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    assert!(
        dx.len() == n * c && dout.len() == n * c && x.len() == n * c,
        "layernorm_backward_bf16: dx, dout, x must be n*c"
    );
    assert!(
        dweight.len() == c && dbias.len() == c && w.len() == c,
        "layernorm_backward_bf16: dweight, dbias, w must be c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "layernorm_backward_bf16: mean, rstd must be n"
    );
    if c == 0 {
        return;
    }
    let d = layernorm_backward_launch(n, c);
    let mut scratch = vec![f32::NAN; layernorm_backward_scratch_len(n, c)];
    let r = layernorm_backward_reduce_launch(c);
    // SAFETY: lengths checked above (bf16 as u16, the layout of __nv_bfloat16); the scratch
    // holds 2 × grid × c floats, all written by the first kernel; the dynamic shared memory
    // matches the block's warps × 2 × c floats.
    unsafe {
        smelt_emu_layernorm_backward_bf16(
            d.grid,
            d.block,
            d.smem,
            dx.as_mut_ptr(),
            scratch.as_mut_ptr(),
            dout.as_ptr(),
            x.as_ptr(),
            w.as_ptr(),
            mean.as_ptr(),
            rstd.as_ptr(),
            int(n),
            int(c),
        );
        smelt_emu_layernorm_backward_reduce(
            r.grid,
            r.block,
            r.smem,
            dweight.as_mut_ptr(),
            dbias.as_mut_ptr(),
            scratch.as_ptr(),
            d.grid.x as c_int,
            int(c),
        );
    }
}
