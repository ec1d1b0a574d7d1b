//! `kernels/reduce.cu`: column sums (the bias gradient), `out[j] = Σ_i x[i, j]`, deterministic
//! in two kernels: per-chunk partials (f32 or bf16 input), then a fixed-order final sum.

use super::bf16;
use super::{kernels, Dim3, LaunchDims};

/// Columns per `sum_rows_partial` block (its `blockDim.x`, one warp).
const COLS: u32 = 32;

/// Row lanes per `sum_rows_partial` block (its `blockDim.y`).
const LANES: u32 = 8;

/// Threads per `sum_rows_final` block.
const FINAL_BLOCK: u32 = 256;

/// `sum_rows_partial` aims at about this many blocks in all (enough to fill an H100/H200).
const TARGET_BLOCKS: usize = 2048;

/// At least this many rows per row chunk (so a chunk is worth a block).
const MIN_CHUNK_ROWS: usize = 64;

/// At most this many row chunks (partials per column).
const MAX_CHUNKS: usize = 1024;

/// The number of row chunks `G` (partials per column) for an `(m, n)` input: enough blocks
/// in all (`ceil(n / 32) · G ≈ 2048`), chunks of at least 64 rows, at most 1024 chunks.
/// Depends only on `(m, n)`, so the result does too.
pub fn sum_rows_chunks(m: usize, n: usize) -> usize {
    let strips = n.div_ceil(COLS as usize).max(1);
    TARGET_BLOCKS
        .div_ceil(strips)
        .min(m.div_ceil(MIN_CHUNK_ROWS))
        .clamp(1, MAX_CHUNKS)
}

/// Floats of scratch `sum_rows` needs: `G · n` partials.
pub fn sum_rows_scratch_len(m: usize, n: usize) -> usize {
    sum_rows_chunks(m, n) * n
}

/// `sum_rows_partial`: block (32, 8), grid (ceil(n / 32), G), G = [`sum_rows_chunks`].
pub fn sum_rows_partial_launch(m: usize, n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3 {
            x: n.div_ceil(COLS as usize).max(1) as u32,
            y: sum_rows_chunks(m, n) as u32,
            z: 1,
        },
        block: Dim3 {
            x: COLS,
            y: LANES,
            z: 1,
        },
        smem: 0,
    }
}

/// `sum_rows_final`: one thread per column, blocks of 256.
pub fn sum_rows_final_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(n.div_ceil(FINAL_BLOCK as usize).max(1) as u32),
        block: Dim3::x(FINAL_BLOCK),
        smem: 0,
    }
}

kernels! {
    fn sum_rows_partial(partials: *mut f32, x: *const f32, m: i32, n: i32)
        => sum_rows_partial_launch(m as usize, n as usize);
    fn sum_rows_partial_bf16(partials: *mut f32, x: *const bf16, m: i32, n: i32)
        => sum_rows_partial_launch(m as usize, n as usize);
    fn sum_rows_final(out: *mut f32, partials: *const f32, num_partials: i32, n: i32)
        => sum_rows_final_launch(n as usize);
}
