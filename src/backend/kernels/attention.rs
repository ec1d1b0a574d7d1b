//! `kernels/attention.cu`: fused causal attention in f32, FlashAttention-2 style (tiles, online
//! softmax, the log-sum-exp saved, no T×T buffer), and its deterministic backward: a
//! preprocess `D = rowsum(dO ∘ O)` (f32 or bf16 inputs), a dK/dV pass per key tile and a dQ
//! pass per query tile. The backward is the sequence [`attention_backward`] (preprocess, then
//! dK/dV and dQ here or on tensor cores, `attention_tc_backward`).

use super::{attention_tc_backward as tc, bf16};
use super::{int, kernels, Dim3, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::backend::{AttentionShape, DType};
use crate::error::Result;

/// Rows (queries or keys) per tile and per block (`ATT_TILE`).
pub const TILE: usize = 32;

/// Threads per block of the three tiled kernels (`ATT_THREADS`): 4 warps of 8 rows each.
pub const THREADS: u32 = 128;

/// The largest head size the kernels support (`ATT_MAX_HS`).
pub const MAX_HS: usize = 128;

/// Threads per block of the preprocess kernel: one warp per (b, t, h) row.
const PREPROCESS_THREADS: u32 = 256;

/// Head size `c / nh`, checked against the kernels' limits.
pub fn head_size(c: usize, nh: usize) -> usize {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention: c must be a multiple of nh"
    );
    let hs = c / nh;
    assert!(
        (1..=MAX_HS).contains(&hs),
        "attention: head size must be in 1..={MAX_HS}"
    );
    hs
}

/// One block per (tile of `TILE` rows, b·nh head); `smem_floats` of dynamic shared memory.
fn tiled(b: usize, t: usize, nh: usize, smem_floats: usize) -> LaunchDims {
    let bh = u32::try_from(b * nh).expect("b*nh too large");
    assert!(
        bh <= 65535,
        "attention: b*nh must be at most 65535 (grid.y)"
    );
    LaunchDims {
        grid: Dim3 {
            x: u32::try_from(t.div_ceil(TILE).max(1)).expect("t too large"),
            y: bh.max(1),
            z: 1,
        },
        block: Dim3::x(THREADS),
        smem: (smem_floats * 4) as u32,
    }
}

/// `attention_forward`: Q (32·hs), K (32·(hs+1)), V (32·hs) and P (32·32) in shared memory
/// (28.8 KiB at hs = 64; above 48 KiB, from hs ≈ 119, the CUDA backend must opt in).
pub fn attention_forward_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh);
    tiled(b, t, nh, TILE * (3 * hs + 1) + TILE * TILE)
}

/// `attention_backward_preprocess`: one warp per (b, t, h) row, 8 per block.
pub fn attention_backward_preprocess_launch(b: usize, t: usize, nh: usize) -> LaunchDims {
    let warps = (PREPROCESS_THREADS / 32) as usize;
    LaunchDims {
        grid: Dim3::x(u32::try_from((b * t * nh).div_ceil(warps).max(1)).expect("grid too large")),
        block: Dim3::x(PREPROCESS_THREADS),
        smem: 0,
    }
}

/// `attention_backward_dkdv`: K, V (32·hs each), Q, dO (32·(hs+1) each), P and dS (2·32·32),
/// lse and D (2·32) in shared memory (40.5 KiB at hs = 64).
pub fn attention_backward_dkdv_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh);
    tiled(b, t, nh, TILE * (4 * hs + 2) + 2 * TILE * TILE + 2 * TILE)
}

/// `attention_backward_dq`: Q, dO (32·hs each), K, V (32·(hs+1) each), dS (32·32), lse and D
/// (2·32) in shared memory (36.5 KiB at hs = 64).
pub fn attention_backward_dq_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh);
    tiled(b, t, nh, TILE * (4 * hs + 2) + TILE * TILE + 2 * TILE)
}

kernels! {
    fn attention_forward(out: *mut f32, lse: *mut f32, qkv: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_forward_launch(b as usize, t as usize, c as usize, nh as usize);
    fn attention_backward_preprocess(dsum: *mut f32, dout: *const f32, out: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_preprocess_launch(b as usize, t as usize, nh as usize);
    fn attention_backward_preprocess_bf16(dsum: *mut f32, dout: *const bf16, out: *const bf16, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_preprocess_launch(b as usize, t as usize, nh as usize);
    fn attention_backward_dkdv(dqkv: *mut f32, dout: *const f32, qkv: *const f32, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_dkdv_launch(b as usize, t as usize, c as usize, nh as usize);
    fn attention_backward_dq(dqkv: *mut f32, dout: *const f32, qkv: *const f32, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_dq_launch(b as usize, t as usize, c as usize, nh as usize);
}

/// Where the backward's operands are (device addresses) and how they are stored.
#[derive(Clone, Copy, Debug)]
pub struct BackwardOperands {
    /// `dqkv (b,t,3c)` in `storage`, written whole.
    pub dqkv: u64,
    /// The forward's `qkv (b,t,3c)` and the gradient `dout (b,t,c)`, both in `storage` (as
    /// `dqkv`): f32 runs the f32 kernels, bf16 the tensor-core ones (`attention_tc_backward`;
    /// head size one of `attention_tc::HEAD_SIZES`).
    pub qkv: u64,
    pub dout: u64,
    pub storage: DType,
    /// The forward's `out (b,t,c)` and `dout` again, both in `d_storage`: the preprocess's
    /// inputs (a backend may hold `dout` in two dtypes).
    pub d_out: u64,
    pub d_dout: u64,
    pub d_storage: DType,
    /// The forward's `lse (b,nh,t)`, f32.
    pub lse: u64,
}

/// Scratch bytes of [`attention_backward`]: `D`, one f32 per (b, h, t).
pub fn attention_backward_scratch_bytes(s: AttentionShape) -> usize {
    Scratch::bytes_for(&[4 * s.b * s.n_head * s.t])
}

/// The backward of the causal attention: `D = rowsum(dO ∘ O)` into `scratch`
/// ([`attention_backward_scratch_bytes`]), then the dK/dV pass (the K and V columns of dqkv)
/// and the dQ pass (its Q columns), deterministic.
///
/// # Safety
/// The addresses hold what [`BackwardOperands`] says at the sizes of `s`, on `rt`; `scratch`
/// is `rt`'s memory.
pub unsafe fn attention_backward<R: Runtime + ?Sized>(
    rt: &R,
    x: &BackwardOperands,
    s: AttentionShape,
    scratch: Scratch,
) -> Result<()> {
    let [dsum] = scratch.split(&[4 * s.b * s.n_head * s.t])[..] else {
        unreachable!("one region")
    };
    let (b, t, c, nh) = (int(s.b), int(s.t), int(s.c), int(s.n_head));
    // SAFETY: the caller's contract; dsum holds b·nh·t f32, written by the preprocess before
    // the other two read it; the two passes write disjoint columns of dqkv.
    unsafe {
        match x.d_storage {
            DType::F32 => {
                attention_backward_preprocess::launch(rt, dsum, x.d_dout, x.d_out, b, t, c, nh)?
            }
            DType::Bf16 => attention_backward_preprocess_bf16::launch(
                rt, dsum, x.d_dout, x.d_out, b, t, c, nh,
            )?,
        }
        let (dqkv, dout, qkv, lse) = (x.dqkv, x.dout, x.qkv, x.lse);
        match x.storage {
            DType::F32 => {
                attention_backward_dkdv::launch(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh)?;
                attention_backward_dq::launch(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh)
            }
            DType::Bf16 => {
                tc::attention_backward_dkdv_bf16(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh)?;
                tc::attention_backward_dq_bf16(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh)
            }
        }
    }
}
