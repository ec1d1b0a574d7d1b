//! Column sums of `kernels/reduce.cu` (the bias gradient): `out[j] = Σ_i x[i, j]`,
//! deterministic in two kernels (per-chunk partials, then a fixed-order final sum).
//! [`sum_rows_bf16`] reads a bf16 `x` (`sum_rows_partial_bf16`, same geometry and f32
//! partials), the sums staying f32.

use std::ffi::c_int;

use super::{Dim3, LaunchDims};

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

unsafe extern "C" {
    fn smelt_emu_sum_rows_partial(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        partials: *mut f32,
        x: *const f32,
        m: c_int,
        n: c_int,
    );
    fn smelt_emu_sum_rows_partial_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        partials: *mut f32,
        x: *const u16,
        m: c_int,
        n: c_int,
    );
    fn smelt_emu_sum_rows_final(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        partials: *const f32,
        num_partials: c_int,
        n: c_int,
    );
}

fn int(n: usize) -> c_int {
    c_int::try_from(n).expect("size does not fit a C int")
}

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

/// `out[j] = Σ_i x[i·n + j]` for an `(m, n)` row-major `x`; as `kernels::sum_rows`, in f32
/// and a fixed order. Allocates the `sum_rows_scratch_len(m, n)` floats of partials.
pub fn sum_rows(out: &mut [f32], x: &[f32], m: usize, n: usize) {
    assert_eq!(out.len(), n, "sum_rows: out must be n");
    assert_eq!(x.len(), m * n, "sum_rows: x must be m*n");
    if n == 0 {
        return;
    }
    let p = sum_rows_partial_launch(m, n);
    let f = sum_rows_final_launch(n);
    let chunks = p.grid.y as usize;
    let mut partials = vec![f32::NAN; sum_rows_scratch_len(m, n)];
    // SAFETY: the first kernel reads x[..m·n] and writes partials[..G·n]; the second reads
    // those and writes out[..n].
    unsafe {
        smelt_emu_sum_rows_partial(
            p.grid,
            p.block,
            p.smem,
            partials.as_mut_ptr(),
            x.as_ptr(),
            int(m),
            int(n),
        );
        smelt_emu_sum_rows_final(
            f.grid,
            f.block,
            f.smem,
            out.as_mut_ptr(),
            partials.as_ptr(),
            int(chunks),
            int(n),
        );
    }
}

/// [`sum_rows`] of a bf16 `x (m,n)` (bit patterns) into an f32 `out (n)`: each element widened
/// to f32, the sums in f32 and the same fixed order ([`sum_rows_partial_launch`] geometry).
pub fn sum_rows_bf16(out: &mut [f32], x: &[u16], m: usize, n: usize) {
    assert_eq!(out.len(), n, "sum_rows_bf16: out must be n");
    assert_eq!(x.len(), m * n, "sum_rows_bf16: x must be m*n");
    if n == 0 {
        return;
    }
    let p = sum_rows_partial_launch(m, n);
    let f = sum_rows_final_launch(n);
    let chunks = p.grid.y as usize;
    let mut partials = vec![f32::NAN; sum_rows_scratch_len(m, n)];
    // SAFETY: the first kernel reads x[..m·n] (u16, the layout of __nv_bfloat16) and writes
    // partials[..G·n]; the second reads those and writes out[..n].
    unsafe {
        smelt_emu_sum_rows_partial_bf16(
            p.grid,
            p.block,
            p.smem,
            partials.as_mut_ptr(),
            x.as_ptr(),
            int(m),
            int(n),
        );
        smelt_emu_sum_rows_final(
            f.grid,
            f.block,
            f.smem,
            out.as_mut_ptr(),
            partials.as_ptr(),
            int(chunks),
            int(n),
        );
    }
}
