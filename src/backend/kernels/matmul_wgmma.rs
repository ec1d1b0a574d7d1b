//! `kernels/matmul_wgmma.cu`: the Hopper matmul, `out (m,n) = op(a) · op(b) (+ bias)` with the
//! transposes of `matmul.cu`, wgmma m64n128k16 on 128×128×64 tiles fed by bulk tensor copies
//! (TMA) through a 4-stage mbarrier ring, a producer warpgroup and two consumer warpgroups, a
//! persistent grid in grouped tile order; bias and GELU epilogues, f32 or bf16 outputs.
//! [`matmul_tma`] is the sequence (tensor maps, persistent grid) and [`supports`] says which
//! products it takes.

use super::{blocks, int, kernels, Dim3, LaunchDims};
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
    fn matmul_wgmma_bf16(out: *mut f32, gelu_out: *mut f32, bias: *const f32, m: i32, n: i32, k: i32, trans_a: i32, trans_b: i32, map_a: TensorMap, map_b: TensorMap)
        => launch_dims(m as usize, n as usize, 132);
    /// [`matmul_wgmma_bf16`] with bf16 outputs (the f32 sum rounded once; the GELU of the
    /// unrounded sum rounded).
    fn matmul_wgmma_bf16_to_bf16(out: *mut bf16, gelu_out: *mut bf16, bias: *const f32, m: i32, n: i32, k: i32, trans_a: i32, trans_b: i32, map_a: TensorMap, map_b: TensorMap)
        => launch_dims(m as usize, n as usize, 132);
}

/// The persistent grid for an `(m, n)` output on `multiprocessors` SMs: one block per SM (one
/// fits: 129 KiB of shared memory, 384 threads), fewer when there are fewer tiles.
pub fn launch_dims(m: usize, n: usize, multiprocessors: u32) -> LaunchDims {
    let tiles = blocks(m, TILE_M as usize) * blocks(n, TILE_N as usize);
    LaunchDims {
        grid: Dim3::x(tiles.min(multiprocessors.max(1))),
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
    rt.tensor_map(&TensorMapSpec {
        address: addr,
        rows: o.rows as u64,
        cols: o.cols as u64,
        row_bytes: (o.cols * 2) as u64,
        box_rows: if o.k_major { TILE_M } else { TILE_K },
        box_cols: TILE_K,
        swizzle: Swizzle::B128,
    })
}

/// `out (m,n) = op(a) · op(b) (+ bias)` and `gelu_out = gelu(out)` unless 0, stored in
/// `out_type`; `a`, `b` bf16 with the shape's transposes, and [`supports`]ed.
///
/// # Safety
/// Every address is device memory of `rt` holding the sizes above; the outputs overlap
/// neither each other nor the inputs.
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
) -> Result<()> {
    let [sa, sb] = stored(s);
    let (map_a, map_b) = (operand_map(rt, a, &sa)?, operand_map(rt, b, &sb)?);
    let dims = launch_dims(s.m, s.n, rt.multiprocessors());
    let (m, n, k) = (int(s.m), int(s.n), int(s.k));
    let (ta, tb) = (i32::from(s.trans_a), i32::from(s.trans_b));
    // SAFETY: the caller's contract; the maps describe a and b.
    unsafe {
        match out_type {
            DType::F32 => matmul_wgmma_bf16::launch_with(
                rt, dims, out, gelu_out, bias, m, n, k, ta, tb, map_a, map_b,
            ),
            DType::Bf16 => matmul_wgmma_bf16_to_bf16::launch_with(
                rt, dims, out, gelu_out, bias, m, n, k, ta, tb, map_a, map_b,
            ),
        }
    }
}
