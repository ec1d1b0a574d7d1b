//! `kernels/attention_tc.cu`: causal attention forward on tensor cores: bf16 qkv, Q·Kᵀ and P·V
//! with mma.sync + ldmatrix, K/V tiles by cp.async, online softmax in registers.

use super::attention::{head_size, MAX_HS};
use super::bf16;
use super::{kernels, Dim3, LaunchDims};

/// Queries (and keys) per tile of `attention_forward_bf16` (`ATC_BM`, `ATC_BN`).
pub const TC_TILE: usize = 64;

/// Threads per block of `attention_forward_bf16` (`ATC_THREADS`): 4 warps of 16 query rows.
pub const TC_THREADS: u32 = 128;

/// Whether `attention_forward_bf16` supports head size `hs`: a multiple of 16, at most
/// [`MAX_HS`] (GPT-2: 64). Other head sizes use the f32 [`attention_forward`].
pub fn attention_forward_bf16_supports(hs: usize) -> bool {
    hs > 0 && hs.is_multiple_of(16) && hs <= MAX_HS
}

/// `attention_forward_bf16`: one block per (64-query tile, b·nh head); K and V tiles of
/// 64 × (hs + 8) bf16 in shared memory (18 KiB at hs = 64, 34 KiB at hs = 128).
pub fn attention_forward_bf16_launch(b: usize, t: usize, c: usize, nh: usize) -> LaunchDims {
    let hs = head_size(c, nh);
    assert!(
        attention_forward_bf16_supports(hs),
        "attention_forward_bf16: head size must be a multiple of 16 and at most {MAX_HS}"
    );
    let bh = u32::try_from(b * nh).expect("b*nh too large");
    assert!(
        bh <= 65535,
        "attention: b*nh must be at most 65535 (grid.y)"
    );
    LaunchDims {
        grid: Dim3 {
            x: u32::try_from(t.div_ceil(TC_TILE).max(1)).expect("t too large"),
            y: bh.max(1),
            z: 1,
        },
        block: Dim3::x(TC_THREADS),
        smem: (2 * TC_TILE * (hs + 8) * 2) as u32,
    }
}

kernels! {
    fn attention_forward_bf16(out: *mut f32, lse: *mut f32, qkv: *const bf16, b: i32, t: i32, c: i32, nh: i32)
        => attention_forward_bf16_launch(b as usize, t as usize, c as usize, nh as usize);
}
