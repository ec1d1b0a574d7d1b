//! Optimizer kernels of `kernels/adamw.cu`: the AdamW update and the deterministic
//! two-kernel Σ x² of the global gradient norm.

// The launchers mirror the kernels' argument lists (pointers plus hyperparameters).
#![allow(clippy::too_many_arguments)]

use std::ffi::{c_int, c_long};

use super::{Dim3, LaunchDims};

/// Threads per block.
const BLOCK: u32 = 256;
/// Grid cap of the grid-stride `adamw`.
const MAX_ADAMW_BLOCKS: u32 = 65536;
/// Grid cap of `sum_squares_partial`: at most this many partial sums.
const MAX_SUM_SQUARES_BLOCKS: u32 = 1024;

unsafe extern "C" {
    fn smelt_emu_adamw(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        params: *mut f32,
        grads: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: c_long,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        bias_correction1: f32,
        bias_correction2: f32,
        grad_scale: f32,
    );
    fn smelt_emu_sum_squares_partial(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        partials: *mut f32,
        x: *const f32,
        n: c_long,
    );
    fn smelt_emu_sum_squares_final(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        partials: *const f32,
        num_partials: c_int,
    );
    fn smelt_emu_adamw_multi(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        params: *mut f32,
        grads: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: c_long,
        tensor_end: *const c_long,
        tensor_decay: *const f32,
        num_tensors: c_int,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        bias_correction1: f32,
        bias_correction2: f32,
        grad_scale: f32,
    );
    fn smelt_emu_adamw_multi_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        master: *mut f32,
        params_bf16: *mut u16,
        grads: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: c_long,
        tensor_end: *const c_long,
        tensor_decay: *const f32,
        num_tensors: c_int,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        bias_correction1: f32,
        bias_correction2: f32,
        grad_scale: f32,
    );
}

/// `n` as a C `long`.
fn long(n: usize) -> c_long {
    c_long::try_from(n).expect("length does not fit a C long")
}

/// `ceil(n / 256)` blocks, at least 1 and at most `cap`.
fn blocks(n: usize, cap: u32) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, cap as usize) as u32
}

/// `adamw`: grid-stride, `min(ceil(n / 256), 65536)` blocks of 256.
pub fn adamw_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, MAX_ADAMW_BLOCKS)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `sum_squares_partial`: `min(ceil(n / 256), 1024)` blocks of 256, one partial sum each
/// (the grid depends only on `n`: deterministic).
pub fn sum_squares_partial_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, MAX_SUM_SQUARES_BLOCKS)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `sum_squares_final`: one block of 256.
pub fn sum_squares_final_launch() -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(1),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// The bias corrections `(1 − beta1^step, 1 − beta2^step)` the `adamw` kernel takes,
/// computed in f64 (as torch) and rounded to f32. `step` is 1-based.
pub fn adamw_bias_corrections(beta1: f32, beta2: f32, step: u64) -> (f32, f32) {
    assert!(step >= 1, "adamw: step is 1-based");
    let t = step as f64;
    (
        (1.0 - (beta1 as f64).powf(t)) as f32,
        (1.0 - (beta2 as f64).powf(t)) as f32,
    )
}

/// One AdamW step on `params`, `m`, `v` from `grads` (all the same length); as
/// `kernels::adamw`.
pub fn adamw(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: u64,
    grad_scale: f32,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw: params, grads, m, v must match"
    );
    let (bc1, bc2) = adamw_bias_corrections(beta1, beta2, step);
    let d = adamw_launch(n);
    // SAFETY: all four buffers hold n floats (checked above); the mutable ones are unique
    // borrows.
    unsafe {
        smelt_emu_adamw(
            d.grid,
            d.block,
            d.smem,
            params.as_mut_ptr(),
            grads.as_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            long(n),
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            bc1,
            bc2,
            grad_scale,
        );
    }
}

/// `Σ x²`, accumulated in f32 in a fixed order: `sum_squares_partial` into a temporary of
/// one partial per block, then `sum_squares_final`. Counterpart of `kernels::sum_squares`
/// (which accumulates in f64).
pub fn sum_squares(x: &[f32]) -> f32 {
    let d = sum_squares_partial_launch(x.len());
    let f = sum_squares_final_launch();
    let mut partials = vec![f32::NAN; d.grid.x as usize];
    let mut out = [f32::NAN];
    // SAFETY: the first kernel reads x[..len] and writes partials[..grid], the second reads
    // those and writes out[0].
    unsafe {
        smelt_emu_sum_squares_partial(
            d.grid,
            d.block,
            d.smem,
            partials.as_mut_ptr(),
            x.as_ptr(),
            long(x.len()),
        );
        smelt_emu_sum_squares_final(
            f.grid,
            f.block,
            f.smem,
            out.as_mut_ptr(),
            partials.as_ptr(),
            partials.len() as c_int,
        );
    }
    out[0]
}

/// AdamW hyperparameters of one step for [`adamw_multi`] / [`adamw_multi_bf16`] (the fields
/// of `backend::AdamWStep`; weight decay comes per tensor).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step count, for bias correction.
    pub step: u64,
    pub grad_scale: f32,
}

/// `adamw_multi` / `adamw_multi_bf16`: grid-stride over all `n` elements, as `adamw`.
pub fn adamw_multi_launch(n: usize) -> LaunchDims {
    adamw_launch(n)
}

/// The per-tensor tables `adamw_multi` takes from `(len, weight_decay)` groups laid out back
/// to back: exclusive end offsets (ascending) and decays. Returns them with the total length.
pub fn adamw_multi_tables(groups: &[(usize, f32)]) -> (Vec<c_long>, Vec<f32>, usize) {
    let mut end = 0usize;
    let ends = groups
        .iter()
        .map(|&(len, _)| {
            end += len;
            long(end)
        })
        .collect();
    let decays = groups.iter().map(|&(_, wd)| wd).collect();
    (ends, decays, end)
}

/// One AdamW step on every tensor of `groups` (`(len, weight_decay)`, laid out back to back
/// in `params`, `grads`, `m`, `v`, whose lengths are the sum of the lens) in one launch; as
/// `kernels::adamw` applied tensor by tensor.
pub fn adamw_multi(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    groups: &[(usize, f32)],
    h: &AdamWHyper,
) {
    let (ends, decays, n) = adamw_multi_tables(groups);
    assert!(
        params.len() == n && grads.len() == n && m.len() == n && v.len() == n,
        "adamw_multi: params, grads, m, v must hold the groups' total length"
    );
    if n == 0 {
        return;
    }
    let (bc1, bc2) = adamw_bias_corrections(h.beta1, h.beta2, h.step);
    let d = adamw_multi_launch(n);
    // SAFETY: the four buffers hold n floats (checked above), the tables groups.len()
    // entries with ends ascending to n; the mutable buffers are unique borrows.
    unsafe {
        smelt_emu_adamw_multi(
            d.grid,
            d.block,
            d.smem,
            params.as_mut_ptr(),
            grads.as_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            long(n),
            ends.as_ptr(),
            decays.as_ptr(),
            c_int::try_from(groups.len()).expect("too many tensors"),
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            bc1,
            bc2,
            h.grad_scale,
        );
    }
}

/// [`adamw_multi`] on f32 `master` weights, also writing `params_bf16` (bf16 bit patterns),
/// the round-to-nearest-even of each new master value.
pub fn adamw_multi_bf16(
    master: &mut [f32],
    params_bf16: &mut [u16],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    groups: &[(usize, f32)],
    h: &AdamWHyper,
) {
    let (ends, decays, n) = adamw_multi_tables(groups);
    assert!(
        master.len() == n
            && params_bf16.len() == n
            && grads.len() == n
            && m.len() == n
            && v.len() == n,
        "adamw_multi_bf16: master, params_bf16, grads, m, v must hold the groups' total length"
    );
    if n == 0 {
        return;
    }
    let (bc1, bc2) = adamw_bias_corrections(h.beta1, h.beta2, h.step);
    let d = adamw_multi_launch(n);
    // SAFETY: as adamw_multi; params_bf16 holds n 16-bit values (__nv_bfloat16 is 2 bytes).
    unsafe {
        smelt_emu_adamw_multi_bf16(
            d.grid,
            d.block,
            d.smem,
            master.as_mut_ptr(),
            params_bf16.as_mut_ptr(),
            grads.as_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            long(n),
            ends.as_ptr(),
            decays.as_ptr(),
            c_int::try_from(groups.len()).expect("too many tensors"),
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            bc1,
            bc2,
            h.grad_scale,
        );
    }
}
