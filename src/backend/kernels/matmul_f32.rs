//! `kernels/matmul_f32.cu`: the f32 SIMT matmul (64×64 tiles, 4×4 per thread), bias and GELU
//! epilogues, all four transposes: the f32 parity mode.

use super::{kernels, Dim3, LaunchDims};

/// Output tile of one block (rows of `out` × columns), as in `kernels/matmul_f32.cu`.
pub const TILE_M: u32 = 64;

pub const TILE_N: u32 = 64;

/// k step of the shared-memory tiles.
pub const TILE_K: u32 = 16;

/// Threads per block: 16 × 16, each 4 × 4 outputs of the tile.
pub const THREADS: u32 = 256;

/// Dynamic shared memory per block: (A + B tile) × 16 × (64 + 4) f32.
pub const SMEM_BYTES: u32 = 2 * TILE_K * (TILE_M + 4) * 4;

/// The launch of `matmul_f32` for an `(m, n)` output: grid `(ceil(n/64), ceil(m/64))`, block
/// 256, [`SMEM_BYTES`] (8704) of dynamic shared memory. `m` and `n` must be at least 1.
pub fn matmul_f32_launch(m: usize, n: usize) -> LaunchDims {
    let tiles = |len: usize, tile: u32| {
        u32::try_from(len.div_ceil(tile as usize)).expect("matmul_f32: too many tiles")
    };
    let grid = Dim3 {
        x: tiles(n, TILE_N),
        y: tiles(m, TILE_M),
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
    fn matmul_f32(out: *mut f32, gelu_out: *mut f32, a: *const f32, b: *const f32, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_f32_launch(m as usize, n as usize);
}
