//! `kernels/matmul_f32.cu` under emulation: the f32 SIMT matmul `out = op(a) · op(b) (+ bias)`
//! (and optionally `gelu_out = gelu(out)` in the same pass) of the device backend's f32 parity
//! mode, with exactly the semantics of `matmul_bf16` (`super::matmul`) on f32 inputs.
//!
//! Geometry: one block of [`THREADS`] = 256 threads (16 × 16) per [`TILE_M`] × [`TILE_N`] =
//! 64 × 64 tile of `out` (grid x over columns, y over rows); each thread computes a 4 × 4
//! sub-tile with 16 f32 accumulators (`fmaf`, k in order), k in steps of [`TILE_K`] = 16
//! through [`SMEM_BYTES`] of dynamic shared memory (one A and one B tile, `[16][64 + 4]` f32
//! each), the next k tile prefetched into registers while the current one is computed.

use super::{Dim3, LaunchDims};

unsafe extern "C" {
    fn smelt_emu_matmul_f32(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        gelu_out: *mut f32,
        a: *const f32,
        b: *const f32,
        bias: *const f32,
        m: i32,
        k: i32,
        n: i32,
        trans_a: i32,
        trans_b: i32,
    );
}

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

fn dim(len: usize, what: &str) -> i32 {
    i32::try_from(len).unwrap_or_else(|_| panic!("matmul_f32: {what} must be below 2^31"))
}

/// `out (m,n) = op(a) · op(b) (+ bias)` in f32: `a` is `(m,k)` row-major, or `(k,m)` with
/// `trans_a`; `b` is `(k,n)`, or `(n,k)` with `trans_b`. With `gelu_out` (`m*n`), the epilogue
/// also writes `gelu_out = gelu(out)` (GPT-2's tanh GELU, the formula of `gelu_forward`), `out`
/// keeping the pre-activation.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32(
    out: &mut [f32],
    gelu_out: Option<&mut [f32]>,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    assert_eq!(out.len(), m * n, "matmul_f32: out must be m*n");
    if let Some(g) = &gelu_out {
        assert_eq!(g.len(), m * n, "matmul_f32: gelu_out must be m*n");
    }
    assert_eq!(a.len(), m * k, "matmul_f32: a must be m*k");
    assert_eq!(b.len(), k * n, "matmul_f32: b must be k*n");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "matmul_f32: bias must be n");
    }
    let (mi, ki, ni) = (dim(m, "m"), dim(k, "k"), dim(n, "n"));
    dim(m * k, "m*k");
    dim(k * n, "k*n");
    dim(m * n, "m*n");
    if m == 0 || n == 0 {
        return;
    }
    let d = matmul_f32_launch(m, n);
    let bias_ptr = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    let gelu_ptr = gelu_out.map_or(std::ptr::null_mut(), <[f32]>::as_mut_ptr);
    // SAFETY: out and gelu_out (or null) hold m*n elements (written, and disjoint from each
    // other and from the inputs by the borrow rules), a m*k, b k*n, bias n or null (read).
    unsafe {
        smelt_emu_matmul_f32(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            gelu_ptr,
            a.as_ptr(),
            b.as_ptr(),
            bias_ptr,
            mi,
            ki,
            ni,
            i32::from(trans_a),
            i32::from(trans_b),
        )
    }
}
