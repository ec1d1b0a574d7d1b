//! `kernels/attention_tc_backward.cu`: causal attention backward on tensor cores,
//! deterministic: a dK/dV pass per key tile and a dQ pass per query tile, all five products
//! mma.sync; bf16 qkv, dout and dqkv. One compiled kernel per head size and pass
//! (`attention_backward_{dkdv,dq}_bf16_hs<HS>`); [`attention_backward_dkdv_bf16`] and
//! [`attention_backward_dq_bf16`] pick the instance. The whole backward, with the f32
//! preprocess `D = rowsum(dO ∘ O)`, is the sequence `attention::attention_backward`.

use super::attention_tc::{instance_of, tiled};
use super::bf16;
use super::{kernels, LaunchDims};
use crate::backend::device::Runtime;
use crate::error::Result;

/// Rows per block (`ATB_BLOCK`): keys of the dK/dV kernel, queries of the dQ kernel; 4 warps of
/// 16 rows.
pub const BLOCK: usize = 64;

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

/// Head size `c / nh`, which must be `hs` (the instance's).
fn instance_head_size(hs: usize, c: i32, nh: i32) -> usize {
    assert!(
        nh > 0 && c as usize == hs * nh as usize,
        "attention backward tensor-core instance for head size {hs} given c={c}, nh={nh}"
    );
    hs
}

/// The dK/dV instance for head size `hs`: grid (⌈t/64⌉ key tiles, b·nh), 128 threads; shared
/// memory: lse and D of a query tile (2·inner f32), K and V (64 × (hs+8) bf16 each), Q and dO
/// (inner × (hs+8) bf16 each): 36.5 KiB at hs = 64, at most 45.3 KiB (hs = 112).
pub fn dkdv_dims(hs: usize, b: i32, t: i32, c: i32, nh: i32) -> LaunchDims {
    let hs = instance_head_size(hs, c, nh);
    let inner = inner_tile(hs);
    let smem = 2 * inner * 4 + 2 * (BLOCK + inner) * (hs + 8) * 2;
    tiled(b as usize, t as usize, nh as usize, smem)
}

/// The dQ instance for head size `hs`: grid (⌈t/64⌉ query tiles, b·nh), 128 threads; shared
/// memory: Q and dO (64 × (hs+8) bf16 each), K and V (inner × (hs+8) bf16 each): 36 KiB at
/// hs = 64, at most 45 KiB (hs = 112).
pub fn dq_dims(hs: usize, b: i32, t: i32, c: i32, nh: i32) -> LaunchDims {
    let hs = instance_head_size(hs, c, nh);
    let inner = inner_tile(hs);
    tiled(
        b as usize,
        t as usize,
        nh as usize,
        2 * (BLOCK + inner) * (hs + 8) * 2,
    )
}

/// Declares the two instances of each head size (a `kernels!` row each) and
/// [`attention_backward_dkdv_bf16`] / [`attention_backward_dq_bf16`], which launch the
/// instance of `c / nh`: rows and choice from one list, as `attention_tc`'s forward.
macro_rules! backward_instances {
    ($($hs:literal => $dkdv:ident, $dq:ident;)*) => {
        kernels! {$(
            #[doc = concat!("The K and V columns of bf16 `dqkv (b,t,3c)` at head size ", $hs, " (the Q columns left alone) from bf16 `dout (b,t,c)`, `qkv (b,t,3c)` and f32 `lse`, `dsum (b,nh,t)`.")]
            fn $dkdv(dqkv: *mut bf16, dout: *const bf16, qkv: *const bf16, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
                => dkdv_dims($hs, b, t, c, nh);
            #[doc = concat!("The Q columns of `dqkv` at head size ", $hs, " (the K and V columns left alone); operands as the dK/dV instance's.")]
            fn $dq(dqkv: *mut bf16, dout: *const bf16, qkv: *const bf16, lse: *const f32, dsum: *const f32, b: i32, t: i32, c: i32, nh: i32)
                => dq_dims($hs, b, t, c, nh);
        )*}

        /// The K and V parts of `dqkv` at head size `c / nh`: launches that head size's dK/dV
        /// instance.
        ///
        /// # Safety
        /// `dqkv` holds `b·t·3c` bf16, `dout` `b·t·c` bf16, `qkv` `b·t·3c` bf16, `lse` and
        /// `dsum` `b·nh·t` f32 on `rt`.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn attention_backward_dkdv_bf16<R: Runtime + ?Sized>(
            rt: &R,
            dqkv: u64,
            dout: u64,
            qkv: u64,
            lse: u64,
            dsum: u64,
            b: i32,
            t: i32,
            c: i32,
            nh: i32,
        ) -> Result<()> {
            let launch: Launcher<R> = match instance_of("attention_backward_dkdv_bf16", c, nh) {
                $($hs => $dkdv::launch,)*
                _ => unreachable!("instance_of checks the head size"),
            };
            // SAFETY: the caller's contract; the instance's geometry checks c == hs·nh.
            unsafe { launch(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh) }
        }

        /// The Q part of `dqkv` at head size `c / nh`: launches that head size's dQ instance.
        ///
        /// # Safety
        /// As [`attention_backward_dkdv_bf16`].
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn attention_backward_dq_bf16<R: Runtime + ?Sized>(
            rt: &R,
            dqkv: u64,
            dout: u64,
            qkv: u64,
            lse: u64,
            dsum: u64,
            b: i32,
            t: i32,
            c: i32,
            nh: i32,
        ) -> Result<()> {
            let launch: Launcher<R> = match instance_of("attention_backward_dq_bf16", c, nh) {
                $($hs => $dq::launch,)*
                _ => unreachable!("instance_of checks the head size"),
            };
            // SAFETY: as in attention_backward_dkdv_bf16.
            unsafe { launch(rt, dqkv, dout, qkv, lse, dsum, b, t, c, nh) }
        }
    };
}

/// The launcher of every instance (they share one parameter list).
type Launcher<R> = unsafe fn(&R, u64, u64, u64, u64, u64, i32, i32, i32, i32) -> Result<()>;

backward_instances! {
    16 => attention_backward_dkdv_bf16_hs16, attention_backward_dq_bf16_hs16;
    32 => attention_backward_dkdv_bf16_hs32, attention_backward_dq_bf16_hs32;
    48 => attention_backward_dkdv_bf16_hs48, attention_backward_dq_bf16_hs48;
    64 => attention_backward_dkdv_bf16_hs64, attention_backward_dq_bf16_hs64;
    80 => attention_backward_dkdv_bf16_hs80, attention_backward_dq_bf16_hs80;
    96 => attention_backward_dkdv_bf16_hs96, attention_backward_dq_bf16_hs96;
    112 => attention_backward_dkdv_bf16_hs112, attention_backward_dq_bf16_hs112;
    128 => attention_backward_dkdv_bf16_hs128, attention_backward_dq_bf16_hs128;
}
