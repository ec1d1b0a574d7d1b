//! `kernels/attention_tc_backward.cu`: causal attention backward on tensor cores,
//! deterministic: a dK/dV pass per key tile and a dQ pass per query tile, all five products
//! mma.sync; bf16 qkv and dout, f32 dqkv.

use super::attention::MAX_HS;
use super::bf16;
use super::{kernels, Dim3, LaunchDims};

/// Rows per block (`ATB_BLOCK`): keys of the dK/dV kernel, queries of the dQ kernel; 4 warps of
/// 16 rows.
pub const BLOCK: usize = 64;

/// Threads per block of both kernels (`ATB_THREADS`).
pub const THREADS: u32 = 128;

/// Whether the tensor-core backward supports head size `hs`: a multiple of 16, at most
/// [`MAX_HS`] (GPT-2: 64); the same head sizes as `attention::attention_forward_bf16`. Other
/// head sizes use the f32 `attention::attention_backward`.
pub fn attention_backward_bf16_supports(hs: usize) -> bool {
    hs > 0 && hs.is_multiple_of(16) && hs <= MAX_HS
}

/// Rows of the streamed operand per step (`AtbInner<HS>`): queries for dK/dV, keys for dQ.
/// 64 up to hs = 64, 32 up to 112, 16 at 128 (registers and shared memory under 48 KiB).
pub fn inner_tile(hs: usize) -> usize {
    if hs <= 64 {
        64
    } else if hs <= 112 {
        32
    } else {
        16
    }
}

/// Head size `c / nh`, checked against the kernels' limits.
fn head_size(c: usize, nh: usize, what: &str) -> usize {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "{what}: c must be a multiple of nh"
    );
    let hs = c / nh;
    assert!(
        attention_backward_bf16_supports(hs),
        "{what}: head size must be a multiple of 16 and at most {MAX_HS}"
    );
    hs
}

/// One block per (64-row tile, b·nh head), `THREADS` threads, `smem` bytes.
fn tiled(b: usize, t: usize, nh: usize, smem: usize) -> LaunchDims {
    let bh = u32::try_from(b * nh).expect("b*nh too large");
    assert!(
        bh <= 65535,
        "attention: b*nh must be at most 65535 (grid.y)"
    );
    LaunchDims {
        grid: Dim3 {
            x: u32::try_from(t.div_ceil(BLOCK).max(1)).expect("t too large"),
            y: bh.max(1),
            z: 1,
        },
        block: Dim3::x(THREADS),
        smem: u32::try_from(smem).expect("shared memory size"),
    }
}

/// `attention_backward_dkdv_bf16`: grid (⌈t/64⌉ key tiles, b·nh), 128 threads; shared memory:
/// lse and D of a query tile (2·inner f32), K and V (64 × (hs+8) bf16 each), Q and dO (inner ×
/// (hs+8) bf16 each): 36.5 KiB at hs = 64, at most 45.3 KiB (hs = 112).
pub fn attention_backward_dkdv_bf16_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh, "attention_backward_dkdv_bf16");
    let inner = inner_tile(hs);
    tiled(b, t, nh, 2 * inner * 4 + 2 * (BLOCK + inner) * (hs + 8) * 2)
}

/// `attention_backward_dq_bf16`: grid (⌈t/64⌉ query tiles, b·nh), 128 threads; shared memory:
/// Q and dO (64 × (hs+8) bf16 each), K and V (inner × (hs+8) bf16 each): 36 KiB at hs = 64, at
/// most 45 KiB (hs = 112).
pub fn attention_backward_dq_bf16_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh, "attention_backward_dq_bf16");
    let inner = inner_tile(hs);
    tiled(b, t, nh, 2 * (BLOCK + inner) * (hs + 8) * 2)
}

kernels! {
    fn attention_backward_dkdv_bf16(dqkv: *mut f32, dout: *const bf16, qkv: *const bf16, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_dkdv_bf16_launch(b as usize, t as usize, c as usize, nh as usize);
    fn attention_backward_dq_bf16(dqkv: *mut f32, dout: *const bf16, qkv: *const bf16, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
        => attention_backward_dq_bf16_launch(b as usize, t as usize, c as usize, nh as usize);
}
