//! `kernels/matmul.cu`: the bf16 tensor-core matmul (mma.sync m16n8k16 + ldmatrix + 3-stage
//! cp.async, 64×64×32 tiles), f32 accumulation, bias and GELU epilogues, all four transposes;
//! f32 output (`matmul_bf16`) or bf16 (`matmul_bf16_to_bf16`). Also the one-warp self-tests
//! of the emulated mma and ldmatrix fragments.

use super::bf16;
use super::{kernels, linear, Dim3, LaunchDims};

/// Output tile of one block (rows of `out` × columns), as in `kernels/matmul.cu`.
pub const TILE_M: u32 = 64;

pub const TILE_N: u32 = 64;

/// Threads per block (4 warps, 2×2, each 32×32 of the tile).
pub const THREADS: u32 = 128;

/// Dynamic shared memory per block: 3 stages × (A + B tile) × 64 × 40 bf16.
pub const SMEM_BYTES: u32 = 3 * 2 * 64 * 40 * 2;

/// The launch of `matmul_bf16` for an `(m, n)` output: one block per 64×64 tile (grid x over
/// columns, y over rows). `m` and `n` must be at least 1.
pub fn matmul_bf16_launch(m: usize, n: usize) -> LaunchDims {
    let tiles = |len: usize, tile: u32| {
        u32::try_from(len.div_ceil(tile as usize)).expect("matmul_bf16: too many tiles")
    };
    let grid = Dim3 {
        x: tiles(n, TILE_N),
        y: tiles(m, TILE_M),
        z: 1,
    };
    assert!(grid.y <= 65535, "matmul_bf16: m too large for grid.y");
    LaunchDims {
        grid,
        block: Dim3::x(THREADS),
        smem: SMEM_BYTES,
    }
}

/// `f32 → bf16` bit pattern, round to nearest even (every NaN → 0x7fff), as
/// `__float2bfloat16`.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fff;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bit pattern → `f32` (exact).
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// Element-wise [`f32_to_bf16`].
pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| f32_to_bf16(v)).collect()
}

kernels! {
    fn matmul_bf16(out: *mut f32, gelu_out: *mut f32, a: *const bf16, b: *const bf16, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_bf16_launch(m as usize, n as usize);
    fn matmul_bf16_to_bf16(out: *mut bf16, gelu_out: *mut bf16, a: *const bf16, b: *const bf16, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_bf16_launch(m as usize, n as usize);
    /// One warp: `d (16×8) = a (16×16) · b (16×8) + c` through `mma_m16n8k16_bf16`.
    fn mma_bf16_selftest(d: *mut f32, a: *const bf16, b: *const bf16, c: *const f32)
        => linear(1, 32);
    /// One warp: `ldmatrix_x4` and `ldmatrix_x4_trans` of four 8×8 bf16 matrices.
    fn ldmatrix_selftest(out: *mut u32, src: *const bf16)
        => linear(1, 32);
}
