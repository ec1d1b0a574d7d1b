//! `kernels/reduce.cu`: column sums (the bias gradient), `out[j] = Σ_i x[i, j]`, deterministic
//! in two kernels: per-chunk partials (f32 or bf16 input), then a fixed-order final sum. The
//! sequence is [`sum_rows`], with the scratch [`sum_rows_scratch_bytes`] says.

use super::bf16;
use super::{int, kernels, Dim3, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::backend::DType;
use crate::error::Result;

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
pub const MAX_CHUNKS: usize = 1024;

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
    /// `partials[g·n + j]` = Σ of column `j` over row chunk `g` (f32 `x`).
    fn sum_rows_partial(partials: *mut f32, x: *const f32, m: i32, n: i32)
        => sum_rows_partial_launch(m as usize, n as usize);
    /// [`sum_rows_partial`] of a bf16 `x`, each element widened to f32; f32 partials.
    fn sum_rows_partial_bf16(partials: *mut f32, x: *const bf16, m: i32, n: i32)
        => sum_rows_partial_launch(m as usize, n as usize);
    /// `out[j]` = Σ over `g` in order of `partials[g·n + j]`.
    fn sum_rows_final(out: *mut f32, partials: *const f32, num_partials: i32, n: i32)
        => sum_rows_final_launch(n as usize);
}

/// Bytes of scratch [`sum_rows`] needs for an `(m, n)` input: `G · n` f32 partials.
pub fn sum_rows_scratch_bytes(m: usize, n: usize) -> usize {
    Scratch::bytes_for(&[4 * sum_rows_chunks(m, n) * n])
}

/// `out[j] = Σ_i x[i·n + j]` for a row-major `(m, n)` `x` stored as `dtype` (f32 or bf16),
/// into an f32 `out`: `sum_rows_partial[_bf16]` into the scratch, then `sum_rows_final`.
/// f32 sums in an order fixed by `(m, n)`: the same bits every run.
///
/// # Safety
/// `out` addresses `n` f32, `x` `m · n` elements of `dtype`, and `scratch` at least
/// [`sum_rows_scratch_bytes`]`(m, n)` bytes, all on `rt`.
pub unsafe fn sum_rows<R: Runtime + ?Sized>(
    rt: &R,
    dtype: DType,
    out: u64,
    x: u64,
    m: usize,
    n: usize,
    scratch: Scratch,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let chunks = sum_rows_chunks(m, n);
    let partials = scratch.split(&[4 * chunks * n])[0];
    let (mi, ni) = (int(m), int(n));
    // SAFETY: the caller's contract; the partials fill the region split off above, and
    // `chunks` is the G of the partial kernel's grid (both from `sum_rows_chunks`).
    unsafe {
        match dtype {
            DType::F32 => sum_rows_partial::launch(rt, partials, x, mi, ni)?,
            DType::Bf16 => sum_rows_partial_bf16::launch(rt, partials, x, mi, ni)?,
        }
        sum_rows_final::launch(rt, out, partials, int(chunks), ni)
    }
}
