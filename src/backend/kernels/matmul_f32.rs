//! `kernels/matmul_f32.cu`: the f32 SIMT matmul (64×64 tiles, 4×4 per thread), bias and GELU
//! epilogues, all four transposes: the f32 parity mode, with the semantics of
//! `matmul::matmul_bf16` on f32 inputs.

use super::{blocks, kernels, Dim3, LaunchDims};

/// Output tile of one block (rows of `out` × columns), as in `kernels/matmul_f32.cu`.
pub const TILE_M: u32 = 64;

pub const TILE_N: u32 = 64;

/// k step of the shared-memory tiles.
pub const TILE_K: u32 = 16;

/// Threads per block: 16 × 16, each 4 × 4 outputs of the tile.
pub const THREADS: u32 = 256;

/// Dynamic shared memory per block: (A + B tile) × 16 × (64 + 4) f32.
pub const SMEM_BYTES: u32 = 2 * TILE_K * (TILE_M + 4) * 4;

/// The launch of `matmul_f32` for an `(m, n)` output: one block per 64×64 tile (grid x over
/// columns, y over rows; one idle block for an empty output), [`SMEM_BYTES`].
pub fn matmul_f32_launch(m: usize, n: usize) -> LaunchDims {
    let grid = Dim3 {
        x: blocks(n, TILE_N as usize),
        y: blocks(m, TILE_M as usize),
        z: 1,
    };
    assert!(grid.y <= 65535, "matmul_f32: m too large for grid.y");
    LaunchDims {
        grid,
        block: Dim3::x(THREADS),
        smem: SMEM_BYTES,
    }
}

kernels! {
    /// `out (m,n) = op(a) · op(b) (+ bias)` in f32 (`fmaf`, k in order): `a` is `(m,k)`
    /// row-major, or `(k,m)` with `trans_a`; `b` is `(k,n)`, or `(n,k)` with `trans_b`; `bias`
    /// (n) or null. Unless `gelu_out` is null it also gets `gelu(out)`, `out` keeping the
    /// pre-activation. Outputs overlap neither each other nor the inputs.
    fn matmul_f32(out: *mut f32, gelu_out: *mut f32, a: *const f32, b: *const f32, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_f32_launch(m as usize, n as usize);
}
