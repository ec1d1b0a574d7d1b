//! `kernels/matmul.cu`: the bf16 tensor-core matmul (mma.sync m16n8k16 + ldmatrix + 3-stage
//! cp.async, 64×64×32 tiles), f32 accumulation, bias and GELU epilogues, all four transposes;
//! f32 output (`matmul_bf16`) or bf16 (`matmul_bf16_to_bf16`). [`matmul`] is the sequence the
//! device backend runs: f32 operands cast to bf16 first, then the kernel of the output's type.
//! Also the one-warp self-tests of the emulated mma and ldmatrix fragments, and the crate's
//! f32 ↔ bf16 conversions on the host.

use super::bf16;
use super::{blocks, elementwise, int, kernels, linear, matmul_wgmma, Dim3, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::backend::{DType, MatmulShape};
use crate::error::Result;

/// Output tile of one block (rows of `out` × columns), as in `kernels/matmul.cu`.
pub const TILE_M: u32 = 64;

pub const TILE_N: u32 = 64;

/// Threads per block (4 warps, 2×2, each 32×32 of the tile).
pub const THREADS: u32 = 128;

/// Dynamic shared memory per block: 3 stages × (A + B tile) × 64 × 40 bf16.
pub const SMEM_BYTES: u32 = 3 * 2 * 64 * 40 * 2;

/// The launch of both matmul kernels for an `(m, n)` output: one block per 64×64 tile (grid x
/// over columns, y over rows; one idle block for an empty output).
pub fn matmul_bf16_launch(m: usize, n: usize) -> LaunchDims {
    let grid = Dim3 {
        x: blocks(n, TILE_N as usize),
        y: blocks(m, TILE_M as usize),
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
    /// `out (m,n) = op(a) · op(b) (+ bias)`, f32: `a` is `(m,k)` row-major, or `(k,m)` with
    /// `trans_a`; `b` is `(k,n)`, or `(n,k)` with `trans_b`; `bias` (n) or null. Unless
    /// `gelu_out` is null it also gets `gelu(out)` (GPT-2's tanh GELU), `out` keeping the
    /// pre-activation. Outputs overlap neither each other nor the inputs.
    fn matmul_bf16(out: *mut f32, gelu_out: *mut f32, a: *const bf16, b: *const bf16, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_bf16_launch(m as usize, n as usize);
    /// [`matmul_bf16`] with bf16 outputs: the f32 sum rounded once, and the GELU of the
    /// unrounded sum rounded.
    fn matmul_bf16_to_bf16(out: *mut bf16, gelu_out: *mut bf16, a: *const bf16, b: *const bf16, bias: *const f32, m: i32, k: i32, n: i32, trans_a: i32, trans_b: i32)
        => matmul_bf16_launch(m as usize, n as usize);
    /// One warp: `d (16×8) = a (16×16) · b (16×8) + c` through `mma_m16n8k16_bf16`, the
    /// fragments built by the PTX ISA's layout (all row-major).
    fn mma_bf16_selftest(d: *mut f32, a: *const bf16, b: *const bf16, c: *const f32)
        => linear(1, 32);
    /// One warp: `ldmatrix_x4` and `ldmatrix_x4_trans` of a 16×16 bf16 matrix (row-major)
    /// copied to 512 bytes of shared memory; matrix `i` = rows `(i&1)*8..`, cols `(i>>1)*8..`;
    /// `out[lane*8 + i]` is register `i` of `lane` without `.trans`, `out[lane*8 + 4 + i]` with.
    fn ldmatrix_selftest(out: *mut u32, src: *const bf16)
        => LaunchDims { smem: 512, ..linear(1, 32) };
}

/// The bf16 copies [`matmul`] makes of its f32 operands, in bytes (none for bf16 operands).
fn staged_bytes(s: &MatmulShape, a: DType, b: DType) -> [usize; 2] {
    let bytes = |dtype: DType, len: usize| match dtype {
        DType::F32 => len * DType::Bf16.bytes(),
        DType::Bf16 => 0,
    };
    [bytes(a, s.m * s.k), bytes(b, s.k * s.n)]
}

/// The scratch regions [`matmul`] uses on `rt`: the bf16 copies of f32 operands, and the Hopper
/// kernel's split-K partial sums (counted wherever the shape may take it).
fn regions<R: Runtime + ?Sized>(rt: &R, s: &MatmulShape, a: DType, b: DType) -> [usize; 3] {
    let [sa, sb] = staged_bytes(s, a, b);
    let partials = match matmul_wgmma::supports(rt, s, 0, 0) {
        true => matmul_wgmma::scratch_bytes(s, matmul_wgmma::splits(s, rt.multiprocessors())),
        false => 0,
    };
    [sa, sb, partials]
}

/// The scratch [`matmul`] needs on `rt` for operands of these types.
pub fn matmul_scratch_bytes<R: Runtime + ?Sized>(
    rt: &R,
    s: &MatmulShape,
    a: DType,
    b: DType,
) -> usize {
    Scratch::bytes_for(&regions(rt, s, a, b))
}

/// `out (m,n) = op(a) · op(b) (+ bias)` on tensor cores, and `gelu_out = gelu(out)` unless
/// `gelu_out` is 0, stored in `out_type` (both outputs): on Hopper the products
/// `matmul_wgmma` supports go to it, everything else to `matmul_bf16*`. `a` (`m*k`) and `b` (`k*n`) are
/// given with their storage type: f32 ones are cast to bf16 (round to nearest even) into
/// `scratch` ([`matmul_scratch_bytes`], which also holds the Hopper kernel's split-K sums)
/// first. `bias` (n, f32) may be 0.
///
/// # Safety
/// Every address is device memory of `rt` holding the sizes above; the outputs overlap
/// neither each other, the inputs nor `scratch`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul<R: Runtime + ?Sized>(
    rt: &R,
    out: u64,
    out_type: DType,
    gelu_out: u64,
    (a, a_type): (u64, DType),
    (b, b_type): (u64, DType),
    bias: u64,
    s: MatmulShape,
    scratch: Scratch,
) -> Result<()> {
    let sizes = regions(rt, &s, a_type, b_type);
    let regions = scratch.split(&sizes);
    let operand = |addr: u64, dtype: DType, len: usize, at: u64| -> Result<u64> {
        match dtype {
            DType::Bf16 => Ok(addr),
            DType::F32 => {
                // SAFETY: `at` has room for len bf16 (split above); addr holds len f32.
                unsafe { elementwise::cast_f32_to_bf16::launch(rt, at, addr, int(len))? };
                Ok(at)
            }
        }
    };
    let a = operand(a, a_type, s.m * s.k, regions[0])?;
    let b = operand(b, b_type, s.k * s.n, regions[1])?;
    if matmul_wgmma::supports(rt, &s, a, b) {
        let partials = Scratch {
            addr: regions[2],
            bytes: sizes[2],
        };
        let splits = matmul_wgmma::splits(&s, rt.multiprocessors());
        // SAFETY: the caller's contract; a and b are now bf16 of m*k and k*n elements; the
        // partials region was sized for this split count (`regions`).
        return unsafe {
            matmul_wgmma::matmul_tma(
                rt, out, out_type, gelu_out, a, b, bias, &s, splits, partials,
            )
        };
    }
    let (m, k, n) = (int(s.m), int(s.k), int(s.n));
    let (ta, tb) = (i32::from(s.trans_a), i32::from(s.trans_b));
    // SAFETY: the caller's contract; a and b are now bf16 of m*k and k*n elements.
    unsafe {
        match out_type {
            DType::F32 => matmul_bf16::launch(rt, out, gelu_out, a, b, bias, m, k, n, ta, tb),
            DType::Bf16 => {
                matmul_bf16_to_bf16::launch(rt, out, gelu_out, a, b, bias, m, k, n, ta, tb)
            }
        }
    }
}
