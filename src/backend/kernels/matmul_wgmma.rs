//! `kernels/matmul_wgmma.cu`: the Hopper matmul, `out (m,n) = op(a) · op(b) (+ bias)` with the
//! transposes of `matmul.cu`, wgmma m64n128k16 on 128×128×64 tiles fed by bulk tensor copies
//! (TMA) through a 4-stage mbarrier ring, a producer warpgroup and two consumer warpgroups, a
//! persistent grid in grouped tile order; bias and GELU epilogues, f32 or bf16 outputs; a
//! deterministic split-K for products with few tiles and a long k (weight gradients).
//! [`matmul_tma`] is the sequence (tensor maps, persistent grid, reduction), [`supports`] says
//! which products it takes and [`splits`] how far to split k.

use super::{blocks, int, kernels, linear, Dim3, LaunchDims, Scratch};
use crate::backend::device::{Arch, Runtime};
use crate::backend::tensor_map::{Swizzle, TensorMap, TensorMapSpec};
use crate::backend::{DType, MatmulShape};
use crate::error::Result;

use super::bf16;

/// Output tile of one block's step (rows × columns) and the k tile of a stage.
pub const TILE_M: u32 = 128;
pub const TILE_N: u32 = 128;
pub const TILE_K: u32 = 64;
/// Threads per block: a producer warpgroup and two consumers.
pub const THREADS: u32 = 384;
/// Ring stages.
pub const STAGES: u32 = 4;
/// Dynamic shared memory: 1 KiB of alignment slack, the ring, two mbarriers per stage.
pub const SMEM_BYTES: u32 = 1024 + STAGES * 2 * TILE_M * TILE_K * 2 + STAGES * 2 * 8;

kernels! {
    /// `out (m,n) = op(a) · op(b) (+ bias)`, f32: `a` (m,k), or (k,m) with `trans_a`; `b`
    /// (k,n), or (n,k) with `trans_b`; bf16, read through `map_a` / `map_b` (built by
    /// [`matmul_tma`]); `gelu_out = gelu(out)` unless null. Outputs overlap neither each other
    /// nor the inputs. Launched over a persistent grid ([`launch_dims`]).
    fn matmul_wgmma_bf16(out: *mut f32, gelu_out: *mut f32, bias: *const f32, m: i32, n: i32, k: i32, trans_a: i32, trans_b: i32, splits: i32, partials: *mut f32, map_a: TensorMap, map_b: TensorMap)
        => launch_dims(m as usize, n as usize, 132);
    /// [`matmul_wgmma_bf16`] with bf16 outputs (the f32 sum rounded once; the GELU of the
    /// unrounded sum rounded).
    fn matmul_wgmma_bf16_to_bf16(out: *mut bf16, gelu_out: *mut bf16, bias: *const f32, m: i32, n: i32, k: i32, trans_a: i32, trans_b: i32, splits: i32, partials: *mut f32, map_a: TensorMap, map_b: TensorMap)
        => launch_dims(m as usize, n as usize, 132);
    /// Split-K's second pass: `out (m,n)` = the `splits` partial products in `partials` summed in
    /// split order, + `bias` unless null; `gelu_out = gelu(out)` unless null.
    fn matmul_splitk_reduce(out: *mut f32, gelu_out: *mut f32, partials: *const f32, bias: *const f32, m: i32, n: i32, splits: i32)
        => reduce_dims(m as usize, n as usize);
    /// [`matmul_splitk_reduce`] with bf16 outputs.
    fn matmul_splitk_reduce_to_bf16(out: *mut bf16, gelu_out: *mut bf16, partials: *const f32, bias: *const f32, m: i32, n: i32, splits: i32)
        => reduce_dims(m as usize, n as usize);
}

/// The reduction's launch: a thread per pair of output columns.
pub fn reduce_dims(m: usize, n: usize) -> LaunchDims {
    linear(blocks(m * n.div_ceil(2), 256), 256)
}

/// Split-K never gives a split fewer k tiles than this (shorter splits would spend more on
/// their partial sums' traffic than they gain in parallelism).
pub const MIN_KTILES_PER_SPLIT: usize = 8;
/// Nor more splits than this.
pub const MAX_SPLITS: usize = 16;

/// How many splits of k a product gets on `multiprocessors` SMs: enough work units to fill
/// the SMs once when its tiles alone cannot, within [`MIN_KTILES_PER_SPLIT`] and
/// [`MAX_SPLITS`]. A rule of thumb until the GPU check's table picks per shape (issue 12).
pub fn splits(s: &MatmulShape, multiprocessors: u32) -> usize {
    let tiles = (blocks(s.m, TILE_M as usize) * blocks(s.n, TILE_N as usize)) as usize;
    let ktiles = s.k.div_ceil(TILE_K as usize);
    let sms = multiprocessors.max(1) as usize;
    if tiles >= sms {
        return 1;
    }
    sms.div_ceil(tiles)
        .min(ktiles / MIN_KTILES_PER_SPLIT)
        .clamp(1, MAX_SPLITS)
}

/// The scratch [`matmul_tma`] needs for `splits` parts of k: the f32 partial sums of every
/// split, none without split-K.
pub fn scratch_bytes(s: &MatmulShape, splits: usize) -> usize {
    match splits {
        1 => 0,
        n => n * s.m * s.n * 4,
    }
}

/// The persistent grid for an `(m, n)` output on `multiprocessors` SMs: one block per SM (one
/// fits: 129 KiB of shared memory, 384 threads), fewer when there are fewer tiles.
pub fn launch_dims(m: usize, n: usize, multiprocessors: u32) -> LaunchDims {
    launch_dims_split(m, n, 1, multiprocessors)
}

/// [`launch_dims`] for `splits` work units per tile.
pub fn launch_dims_split(m: usize, n: usize, splits: usize, multiprocessors: u32) -> LaunchDims {
    let units = blocks(m, TILE_M as usize) * blocks(n, TILE_N as usize) * splits.max(1) as u32;
    LaunchDims {
        grid: Dim3::x(units.min(multiprocessors.max(1))),
        block: Dim3::x(THREADS),
        smem: SMEM_BYTES,
    }
}

/// How an operand is stored: `rows` × `cols` row-major, and whether its rows run along k
/// (K-major: `a` plain, `b` with `trans_b`) or along m / n (MN-major).
struct Stored {
    rows: usize,
    cols: usize,
    k_major: bool,
}

fn stored(s: &MatmulShape) -> [Stored; 2] {
    let (a, b) = (
        match s.trans_a {
            false => (s.m, s.k, true),
            true => (s.k, s.m, false),
        },
        match s.trans_b {
            true => (s.n, s.k, true),
            false => (s.k, s.n, false),
        },
    );
    [a, b].map(|(rows, cols, k_major)| Stored {
        rows,
        cols,
        k_major,
    })
}

/// Whether [`matmul_tma`] computes this product on `rt`: a Hopper GPU, a non-empty product,
/// each operand's stored rows a multiple of 8 elements and both addresses 16-byte aligned
/// (TMA's rules for strides and addresses).
pub fn supports<R: Runtime + ?Sized>(rt: &R, s: &MatmulShape, a: u64, b: u64) -> bool {
    rt.arch() == Arch::Hopper
        && s.m > 0
        && s.n > 0
        && s.k > 0
        && stored(s).iter().all(|o| o.cols.is_multiple_of(8))
        && a.is_multiple_of(16)
        && b.is_multiple_of(16)
}

/// The tensor map of a bf16 operand at `addr`: boxes 64 elements wide (128 bytes, the 128-byte
/// swizzle), 128 rows (of m or n) when K-major, 64 rows (of k) when MN-major (two boxes make a
/// tile).
fn operand_map<R: Runtime + ?Sized>(rt: &R, addr: u64, o: &Stored) -> Result<TensorMap> {
    let box_rows = if o.k_major { TILE_M } else { TILE_K };
    let spec = TensorMapSpec::row_major(addr, o.rows, o.cols, (box_rows, TILE_K), Swizzle::B128);
    rt.tensor_map(&spec)
}

/// `out (m,n) = op(a) · op(b) (+ bias)` and `gelu_out = gelu(out)` unless 0, stored in
/// `out_type`; `a`, `b` bf16 with the shape's transposes, and [`supports`]ed; k in `splits`
/// parts (1 ..= the k tiles; [`splits`] picks it), `scratch` holding [`scratch_bytes`].
///
/// # Safety
/// Every address is device memory of `rt` holding the sizes above; the outputs overlap
/// neither each other, the inputs nor `scratch`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_tma<R: Runtime + ?Sized>(
    rt: &R,
    out: u64,
    out_type: DType,
    gelu_out: u64,
    a: u64,
    b: u64,
    bias: u64,
    s: &MatmulShape,
    splits: usize,
    scratch: Scratch,
) -> Result<()> {
    assert!(
        (1..=s.k.div_ceil(TILE_K as usize)).contains(&splits),
        "matmul_tma: {splits} splits of {s:?}"
    );
    let [sa, sb] = stored(s);
    let (map_a, map_b) = (operand_map(rt, a, &sa)?, operand_map(rt, b, &sb)?);
    let dims = launch_dims_split(s.m, s.n, splits, rt.multiprocessors());
    let (m, n, k) = (int(s.m), int(s.n), int(s.k));
    let (ta, tb) = (i32::from(s.trans_a), i32::from(s.trans_b));
    let parts = int(splits);
    let partials = match splits {
        1 => 0,
        _ => scratch.split(&[scratch_bytes(s, splits)])[0],
    };
    // SAFETY: the caller's contract; the maps describe a and b; `partials` has room for the
    // splits' sums (checked by Scratch::split).
    unsafe {
        if splits == 1 {
            return match out_type {
                DType::F32 => matmul_wgmma_bf16::launch_with(
                    rt, dims, out, gelu_out, bias, m, n, k, ta, tb, 1, 0, map_a, map_b,
                ),
                DType::Bf16 => matmul_wgmma_bf16_to_bf16::launch_with(
                    rt, dims, out, gelu_out, bias, m, n, k, ta, tb, 1, 0, map_a, map_b,
                ),
            };
        }
        // The partial sums (the kernel's output type does not matter: it writes none), then
        // their reduction with the epilogue.
        matmul_wgmma_bf16::launch_with(
            rt, dims, 0, 0, 0, m, n, k, ta, tb, parts, partials, map_a, map_b,
        )?;
        match out_type {
            DType::F32 => {
                matmul_splitk_reduce::launch(rt, out, gelu_out, partials, bias, m, n, parts)
            }
            DType::Bf16 => {
                matmul_splitk_reduce_to_bf16::launch(rt, out, gelu_out, partials, bias, m, n, parts)
            }
        }
    }
}
