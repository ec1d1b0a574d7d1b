//! `kernels/attention.cu`: fused causal attention in f32, FlashAttention-2 style (tiles, online
//! softmax, the log-sum-exp saved, no T×T buffer), and its deterministic backward: a
//! preprocess `D = rowsum(dO ∘ O)` (f32 or bf16 inputs), a dK/dV pass per key tile and a dQ
//! pass per query tile.

use super::bf16;
use super::{kernels, Dim3, LaunchDims};

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

/// Floats of scratch the backward needs: `D`, one per (b, h, t).
pub fn attention_backward_scratch_len(b: usize, t: usize, nh: usize) -> usize {
    b * nh * t
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
