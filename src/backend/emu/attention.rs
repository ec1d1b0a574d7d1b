//! Fused causal attention of `kernels/attention.cu` (FlashAttention-2 style, f32): the forward
//! (online softmax over key tiles, saving the log-sum-exp) and the deterministic three-kernel
//! backward (`D = rowsum(dO ∘ O)` into a scratch buffer, then dK/dV per key tile and dQ per
//! query tile, each recomputing the probabilities from the saved log-sum-exp).

// The launchers mirror the kernels' argument lists (pointers plus sizes), so they are long.
#![allow(clippy::too_many_arguments)]

use std::ffi::c_int;

use super::{Dim3, LaunchDims};

/// Rows (queries or keys) per tile and per block (`ATT_TILE`).
pub const TILE: usize = 32;
/// Threads per block of the three tiled kernels (`ATT_THREADS`): 4 warps of 8 rows each.
pub const THREADS: u32 = 128;
/// The largest head size the kernels support (`ATT_MAX_HS`).
pub const MAX_HS: usize = 128;
/// Threads per block of the preprocess kernel: one warp per (b, t, h) row.
const PREPROCESS_THREADS: u32 = 256;

unsafe extern "C" {
    fn smelt_emu_attention_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        lse: *mut f32,
        qkv: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        lse: *mut f32,
        qkv: *const u16,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_backward_preprocess(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dsum: *mut f32,
        dout: *const f32,
        out: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_backward_preprocess_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dsum: *mut f32,
        dout: *const u16,
        out: *const u16,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_backward_dkdv(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dqkv: *mut f32,
        dout: *const f32,
        qkv: *const f32,
        lse: *const f32,
        dsum: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
        nh: c_int,
    );
    fn smelt_emu_attention_backward_dq(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dqkv: *mut f32,
        dout: *const f32,
        qkv: *const f32,
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

/// Head size `c / nh`, checked against the kernels' limits.
fn head_size(c: usize, nh: usize) -> usize {
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

/// Causal multi-head attention of `qkv (b,t,3c)` into `out (b,t,c)`, saving the log-sum-exp
/// `lse (b,nh,t)`; as `kernels::attention_forward`.
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_forward: c must be a multiple of nh"
    );
    assert_eq!(
        qkv.len(),
        b * t * 3 * c,
        "attention_forward: qkv must be b*t*3c"
    );
    assert_eq!(out.len(), b * t * c, "attention_forward: out must be b*t*c");
    assert_eq!(
        lse.len(),
        b * nh * t,
        "attention_forward: lse must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let d = attention_forward_launch(b, t, c, nh);
    // SAFETY: lengths checked above; the kernel reads qkv and writes out and lse (unique
    // borrows) within those lengths; the dynamic shared memory matches the kernel's layout.
    unsafe {
        smelt_emu_attention_forward(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            lse.as_mut_ptr(),
            qkv.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}

/// Backward of [`attention_forward`]: `dqkv (b,t,3c)` from `dout (b,t,c)` and the forward's
/// `qkv`, `out`, `lse`; as `kernels::attention_backward`. Allocates the `D` scratch
/// ([`attention_backward_scratch_len`]) and runs the three kernels.
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_backward: c must be a multiple of nh"
    );
    assert!(
        qkv.len() == b * t * 3 * c && dqkv.len() == b * t * 3 * c,
        "attention_backward: qkv, dqkv must be b*t*3c"
    );
    assert!(
        out.len() == b * t * c && dout.len() == b * t * c,
        "attention_backward: out, dout must be b*t*c"
    );
    assert_eq!(
        lse.len(),
        b * nh * t,
        "attention_backward: lse must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let mut dsum = vec![f32::NAN; attention_backward_scratch_len(b, t, nh)];
    attention_backward_preprocess(&mut dsum, dout, out, b, t, c, nh);
    let kv = attention_backward_dkdv_launch(b, t, c, nh);
    let q = attention_backward_dq_launch(b, t, c, nh);
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    // SAFETY: lengths checked above; dsum holds b*nh*t floats, all written by the preprocess
    // kernel before the other two read them; dqkv is a unique borrow whose K and V parts the
    // dkdv kernel writes and whose Q part the dq kernel writes (disjoint columns); the dynamic
    // shared memory of each launch matches its kernel's layout.
    unsafe {
        smelt_emu_attention_backward_dkdv(
            kv.grid,
            kv.block,
            kv.smem,
            dqkv.as_mut_ptr(),
            dout.as_ptr(),
            qkv.as_ptr(),
            lse.as_ptr(),
            dsum.as_ptr(),
            bi,
            ti,
            ci,
            nhi,
        );
        smelt_emu_attention_backward_dq(
            q.grid,
            q.block,
            q.smem,
            dqkv.as_mut_ptr(),
            dout.as_ptr(),
            qkv.as_ptr(),
            lse.as_ptr(),
            dsum.as_ptr(),
            bi,
            ti,
            ci,
            nhi,
        );
    }
}

/// `dsum (b,nh,t)` = `D_i = Σ_d dO_id·O_id` the first step of
/// [`attention_backward`], from `dout`, `out (b,t,c)` (f32). Geometry of
/// [`attention_backward_preprocess_launch`].
pub fn attention_backward_preprocess(
    dsum: &mut [f32],
    dout: &[f32],
    out: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_backward_preprocess: c must be a multiple of nh"
    );
    assert!(
        dout.len() == b * t * c && out.len() == b * t * c,
        "attention_backward_preprocess: dout, out must be b*t*c"
    );
    assert_eq!(
        dsum.len(),
        b * nh * t,
        "attention_backward_preprocess: dsum must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let p = attention_backward_preprocess_launch(b, t, nh);
    // SAFETY: lengths checked above; the kernel reads dout and out and writes dsum (a unique
    // borrow), one value per (b, h, t), within those lengths.
    unsafe {
        smelt_emu_attention_backward_preprocess(
            p.grid,
            p.block,
            p.smem,
            dsum.as_mut_ptr(),
            dout.as_ptr(),
            out.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}

/// The first step of the backward with bf16 storage of `dout` and `out (b,t,c)` (bit
/// patterns): `dsum[(bi·nh + h)·t + i] = Σ_d dout[bi,i,h·hs+d] · out[bi,i,h·hs+d]` in f32
/// (`dsum` is `(b,nh,t)`, [`attention_backward_scratch_len`]). Geometry of
/// [`attention_backward_preprocess_launch`].
pub fn attention_backward_preprocess_bf16(
    dsum: &mut [f32],
    dout: &[u16],
    out: &[u16],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_backward_preprocess_bf16: c must be a multiple of nh"
    );
    assert!(
        out.len() == b * t * c && dout.len() == b * t * c,
        "attention_backward_preprocess_bf16: out, dout must be b*t*c"
    );
    assert_eq!(
        dsum.len(),
        attention_backward_scratch_len(b, t, nh),
        "attention_backward_preprocess_bf16: dsum must be b*nh*t"
    );
    int(b * t * c);
    if b * t * c == 0 {
        return;
    }
    let p = attention_backward_preprocess_launch(b, t, nh);
    // SAFETY: lengths checked above; the kernel reads dout and out (u16, the layout of
    // __nv_bfloat16) and writes dsum[..b*nh*t] (a unique borrow); no dynamic shared memory.
    unsafe {
        smelt_emu_attention_backward_preprocess_bf16(
            p.grid,
            p.block,
            p.smem,
            dsum.as_mut_ptr(),
            dout.as_ptr(),
            out.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}

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

/// [`attention_forward`] on tensor cores: `qkv (b,t,3c)` as bf16 bit patterns (see
/// `matmul::f32_to_bf16`), f32 `out (b,t,c)` and `lse (b,nh,t)`; Q·Kᵀ and P·V are bf16 mma
/// with f32 accumulation (P rounded to bf16). Head size `c / nh`: a multiple of 16, at most
/// [`MAX_HS`].
pub fn attention_forward_bf16(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[u16],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_forward_bf16: c must be a multiple of nh"
    );
    assert_eq!(
        qkv.len(),
        b * t * 3 * c,
        "attention_forward_bf16: qkv must be b*t*3c"
    );
    assert_eq!(
        out.len(),
        b * t * c,
        "attention_forward_bf16: out must be b*t*c"
    );
    assert_eq!(
        lse.len(),
        b * nh * t,
        "attention_forward_bf16: lse must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let d = attention_forward_bf16_launch(b, t, c, nh);
    // SAFETY: lengths checked above; the kernel reads qkv (bf16 bit patterns, the layout of
    // __nv_bfloat16) and writes out and lse (unique borrows) within those lengths; the head
    // size is one the kernel supports and the dynamic shared memory matches its layout.
    unsafe {
        smelt_emu_attention_forward_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            lse.as_mut_ptr(),
            qkv.as_ptr(),
            int(b),
            int(t),
            int(c),
            int(nh),
        );
    }
}
