//! `kernels/attention_tc.cu`: causal attention forward on tensor cores: bf16 qkv and out, Q·Kᵀ
//! and P·V with mma.sync + ldmatrix, K/V tiles by cp.async, online softmax in registers. One
//! compiled kernel per head size (`attention_forward_bf16_hs<HS>`, each with its own register
//! count); [`attention_forward_bf16`] picks the instance.

use super::bf16;
use super::{kernels, Dim3, LaunchDims};
use crate::backend::device::Runtime;
use crate::error::Result;

/// Queries (and keys) per tile (`ATC_BM`, `ATC_BN`).
pub const TC_TILE: usize = 64;

/// Threads per block (`ATC_THREADS`): 4 warps of 16 query rows.
pub const TC_THREADS: u32 = 128;

/// The head sizes with a compiled instance: multiples of 16 up to 128 (GPT-2: 64).
/// Other head sizes use the f32 `attention::attention_forward`.
pub const HEAD_SIZES: [usize; 8] = [16, 32, 48, 64, 80, 96, 112, 128];

/// Whether the tensor-core kernels (this forward and `attention_tc_backward`) have an instance
/// for head size `hs`.
pub fn supports(hs: usize) -> bool {
    HEAD_SIZES.contains(&hs)
}

/// Head size `c / nh`, which must be `hs` (the instance's).
fn instance_head_size(hs: usize, c: usize, nh: usize) -> usize {
    assert!(
        nh > 0 && c == hs * nh,
        "attention tensor-core instance for head size {hs} given c={c}, nh={nh}"
    );
    hs
}

/// One block per (64-row tile, b·nh head), [`TC_THREADS`] threads, `smem` bytes. Shared by the
/// tensor-core backward, whose blocks are 64 rows too.
pub(super) fn tiled(b: usize, t: usize, nh: usize, smem: usize) -> LaunchDims {
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
        smem: u32::try_from(smem).expect("shared memory size"),
    }
}

/// The instance for head size `hs`: one block per (64-query tile, b·nh head); K and V tiles of
/// 64 × (hs + 8) bf16 in shared memory (18 KiB at hs = 64, 34 KiB at hs = 128).
pub fn forward_dims(hs: usize, b: i32, t: i32, c: i32, nh: i32) -> LaunchDims {
    let hs = instance_head_size(hs, c as usize, nh as usize);
    tiled(
        b as usize,
        t as usize,
        nh as usize,
        2 * TC_TILE * (hs + 8) * 2,
    )
}

/// Declares one instance per head size (a `kernels!` row each) and
/// [`attention_forward_bf16`], which launches the instance of `c / nh`: the rows and the
/// choice among them come from one list, so they cannot drift apart.
macro_rules! forward_instances {
    ($($name:ident = $hs:literal,)*) => {
        kernels! {$(
            #[doc = concat!("`attention::attention_forward` on tensor cores at head size ", $hs, ": bf16 `qkv (b,t,3c)` and `out (b,t,c)` (rounded once, when stored), f32 `lse (b,nh,t)`.")]
            fn $name(out: *mut bf16, lse: *mut f32, qkv: *const bf16, b: i32, t: i32, c: i32, nh: i32)
                => forward_dims($hs, b, t, c, nh);
        )*}

        /// The tensor-core forward at head size `c / nh` (one of [`HEAD_SIZES`]; panics
        /// otherwise): launches that head size's instance. Q·Kᵀ and P·V in bf16 with f32
        /// accumulation (P rounded to bf16); `out` is stored in bf16.
        ///
        /// # Safety
        /// `out` holds `b·t·c` bf16, `lse` `b·nh·t` f32 and `qkv` `b·t·3c` bf16 on `rt`.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn attention_forward_bf16<R: Runtime + ?Sized>(
            rt: &R,
            out: u64,
            lse: u64,
            qkv: u64,
            b: i32,
            t: i32,
            c: i32,
            nh: i32,
        ) -> Result<()> {
            let launch: unsafe fn(&R, u64, u64, u64, i32, i32, i32, i32) -> Result<()> =
                match instance_of("attention_forward_bf16", c, nh) {
                    $($hs => $name::launch,)*
                    _ => unreachable!("instance_of checks the head size"),
                };
            // SAFETY: the caller's contract; the instance's geometry checks c == hs·nh.
            unsafe { launch(rt, out, lse, qkv, b, t, c, nh) }
        }
    };
}

forward_instances! {
    attention_forward_bf16_hs16 = 16,
    attention_forward_bf16_hs32 = 32,
    attention_forward_bf16_hs48 = 48,
    attention_forward_bf16_hs64 = 64,
    attention_forward_bf16_hs80 = 80,
    attention_forward_bf16_hs96 = 96,
    attention_forward_bf16_hs112 = 112,
    attention_forward_bf16_hs128 = 128,
}

/// The head size `c / nh` when it has instances (one of [`HEAD_SIZES`]); panics otherwise.
pub(super) fn instance_of(what: &str, c: i32, nh: i32) -> usize {
    let hs = if nh > 0 && c % nh == 0 {
        (c / nh) as usize
    } else {
        0
    };
    assert!(
        supports(hs),
        "{what}: no tensor-core instance for head size c/nh (c={c}, nh={nh}); head sizes {HEAD_SIZES:?}"
    );
    hs
}
