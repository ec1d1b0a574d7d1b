//! The causal attention backward on tensor cores of `kernels/attention_tc_backward.cu`
//! (FlashAttention-2 style, bf16 mma.sync with f32 accumulation, deterministic): the partner of
//! `attention::attention_forward_bf16`. `D = rowsum(dO ∘ O)` comes from the f32
//! `attention_backward_preprocess` (`kernels/attention.cu`); then `attention_backward_dkdv_bf16`
//! (one block per 64-key tile) writes the K and V parts of `dqkv` and
//! `attention_backward_dq_bf16` (one block per 64-query tile) its Q part. Both take `qkv` and
//! `dout` in bf16, `lse` and `D` in f32, and write f32; P and dS are rounded to bf16 for the
//! products.

// The launchers mirror the kernels' argument lists (pointers plus sizes), so they are long.
#![allow(clippy::too_many_arguments)]

use std::ffi::c_int;

use super::attention::attention_backward_preprocess;
use super::{Dim3, LaunchDims};
use crate::backend::kernels::matmul::bf16_to_f32;

/// Rows per block (`ATB_BLOCK`): keys of the dK/dV kernel, queries of the dQ kernel; 4 warps of
/// 16 rows.
pub const BLOCK: usize = 64;
/// Threads per block of both kernels (`ATB_THREADS`).
pub const THREADS: u32 = 128;
/// The largest head size the kernels support (`ATB_MAX_HS`).
pub const MAX_HS: usize = 128;

unsafe extern "C" {
    fn smelt_emu_attention_backward_dkdv_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dqkv: *mut f32,
        dout: *const u16,
        qkv: *const u16,
        lse: *const f32,
        dsum: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_backward_dq_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dqkv: *mut f32,
        dout: *const u16,
        qkv: *const u16,
        lse: *const f32,
        dsum: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
}

/// `x` as a C `int`; panics when it does not fit (the kernels index with `int`).
fn int(x: usize) -> c_int {
    c_int::try_from(x).expect("size does not fit a C int")
}

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

/// Checks the slice lengths shared by both kernels; false when there is nothing to do.
fn check_lengths(
    what: &str,
    dqkv: &[f32],
    dout: &[u16],
    qkv: &[u16],
    lse: &[f32],
    dsum: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> bool {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "{what}: c must be a multiple of nh"
    );
    assert!(
        qkv.len() == b * t * 3 * c && dqkv.len() == b * t * 3 * c,
        "{what}: qkv, dqkv must be b*t*3c"
    );
    assert_eq!(dout.len(), b * t * c, "{what}: dout must be b*t*c");
    assert!(
        lse.len() == b * nh * t && dsum.len() == b * nh * t,
        "{what}: lse, dsum must be b*nh*t"
    );
    b * t * c != 0
}

/// The K and V parts of `dqkv (b,t,3c)` (the Q part is left as it is) from `dout (b,t,c)` and
/// `qkv (b,t,3c)` as bf16 bit patterns, the forward's `lse (b,nh,t)` and `dsum (b,nh,t)` =
/// `D` of `attention_backward_preprocess`.
pub fn attention_backward_dkdv_bf16(
    dqkv: &mut [f32],
    dout: &[u16],
    qkv: &[u16],
    lse: &[f32],
    dsum: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let what = "attention_backward_dkdv_bf16";
    if !check_lengths(what, dqkv, dout, qkv, lse, dsum, b, t, c, nh) {
        return;
    }
    let d = attention_backward_dkdv_bf16_launch(b, t, c, nh);
    // SAFETY: lengths checked above; the kernel reads dout, qkv (bf16 bit patterns, the layout
    // of __nv_bfloat16), lse and dsum and writes dqkv (a unique borrow) within those lengths;
    // the head size is one the kernel supports and the dynamic shared memory matches its
    // layout.
    unsafe {
        smelt_emu_attention_backward_dkdv_bf16(
            d.grid,
            d.block,
            d.smem,
            dqkv.as_mut_ptr(),
            dout.as_ptr(),
            qkv.as_ptr(),
            lse.as_ptr(),
            dsum.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}

/// The Q part of `dqkv (b,t,3c)` (the K and V parts are left as they are); arguments as
/// [`attention_backward_dkdv_bf16`].
pub fn attention_backward_dq_bf16(
    dqkv: &mut [f32],
    dout: &[u16],
    qkv: &[u16],
    lse: &[f32],
    dsum: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let what = "attention_backward_dq_bf16";
    if !check_lengths(what, dqkv, dout, qkv, lse, dsum, b, t, c, nh) {
        return;
    }
    let d = attention_backward_dq_bf16_launch(b, t, c, nh);
    // SAFETY: as in attention_backward_dkdv_bf16 (same arguments, the Q columns of dqkv).
    unsafe {
        smelt_emu_attention_backward_dq_bf16(
            d.grid,
            d.block,
            d.smem,
            dqkv.as_mut_ptr(),
            dout.as_ptr(),
            qkv.as_ptr(),
            lse.as_ptr(),
            dsum.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}

/// Backward of `attention::attention_forward_bf16` on tensor cores: `dqkv (b,t,3c)` (fully
/// overwritten) from `dout (b,t,c)` and `qkv (b,t,3c)` as bf16 bit patterns and the forward's
/// f32 `out (b,t,c)` and `lse (b,nh,t)`. Runs the three kernels (D from `dout` widened to f32).
pub fn attention_backward_bf16(
    dqkv: &mut [f32],
    dout: &[u16],
    qkv: &[u16],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(
        out.len(),
        b * t * c,
        "attention_backward_bf16: out must be b*t*c"
    );
    assert_eq!(
        dout.len(),
        b * t * c,
        "attention_backward_bf16: dout must be b*t*c"
    );
    let dout_f: Vec<f32> = dout.iter().map(|&x| bf16_to_f32(x)).collect();
    let mut dsum = vec![f32::NAN; b * nh * t];
    attention_backward_preprocess(&mut dsum, &dout_f, out, b, t, c, nh);
    attention_backward_dkdv_bf16(dqkv, dout, qkv, lse, &dsum, b, t, c, nh);
    attention_backward_dq_bf16(dqkv, dout, qkv, lse, &dsum, b, t, c, nh);
}
