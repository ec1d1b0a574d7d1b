//! `kernels/cross_entropy.cu`: fused softmax + cross-entropy over the first `v` of `vp` logit
//! columns (per-row losses and log-sum-exp), the fixed-order mean of the losses, and the
//! backward (in place safe: `dlogits` may be `logits`); f32 or bf16 logits, f32 statistics.
//! Targets are C `int`s below `v`; the kernels index with them unchecked.

use super::bf16;
use super::{blocks, int, kernels, linear, LaunchDims, Scratch};
use crate::backend::device::Runtime;
use crate::backend::DType;
use crate::error::Result;

/// Threads per block of every kernel here (their `__launch_bounds__`).
pub const BLOCK: u32 = 256;

/// One block per row.
fn per_row(n: i32) -> LaunchDims {
    linear(blocks(n.max(0) as usize, 1), BLOCK)
}

kernels! {
    /// `lse[i] = log Σ_{j<v} exp(z_ij)`, `losses[i] = lse[i] − z[i, targets[i]]`.
    fn cross_entropy_forward(losses: *mut f32, lse: *mut f32, logits: *const f32, targets: *const i32, n: i32, v: i32, vp: i32)
        => per_row(n);
    /// [`cross_entropy_forward`] on bf16 logits.
    fn cross_entropy_forward_bf16(losses: *mut f32, lse: *mut f32, logits: *const bf16, targets: *const i32, n: i32, v: i32, vp: i32)
        => per_row(n);
    /// `out[0] = Σ x / n`, summed by one block in a fixed order.
    fn mean_reduce(out: *mut f32, x: *const f32, n: i32) => linear(1, BLOCK);
    /// `dlogits = dloss/n · (softmax − onehot(target))` for `j < v`, 0 in the padded columns.
    fn cross_entropy_backward(dlogits: *mut f32, logits: *const f32, lse: *const f32, targets: *const i32, dloss: f32, n: i32, v: i32, vp: i32)
        => per_row(n);
    /// [`cross_entropy_backward`] with bf16 logits and dlogits (rounded to nearest even).
    fn cross_entropy_backward_bf16(dlogits: *mut bf16, logits: *const bf16, lse: *const f32, targets: *const i32, dloss: f32, n: i32, v: i32, vp: i32)
        => per_row(n);
}

/// Scratch bytes of [`forward`]: the per-row losses.
pub fn forward_scratch_bytes(n: usize) -> usize {
    Scratch::bytes_for(&[4 * n])
}

/// The mean cross-entropy of `logits (n, vp)` (f32 or bf16 as `dtype`) into `loss` (one f32)
/// and the per-row `lse (n)`: `cross_entropy_forward` writes the per-row losses into `scratch`,
/// `mean_reduce` averages them. Returns the address of those per-row losses (in `scratch`,
/// valid until it is reused).
///
/// # Safety
/// `logits` holds `n·vp` elements of `dtype`, `targets` `n` ids below `v <= vp`, `loss` one
/// f32 and `lse` `n`; `scratch` has [`forward_scratch_bytes`]`(n)`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward<R: Runtime + ?Sized>(
    rt: &R,
    loss: u64,
    lse: u64,
    logits: u64,
    dtype: DType,
    targets: u64,
    n: usize,
    v: usize,
    vp: usize,
    scratch: Scratch,
) -> Result<u64> {
    let losses = scratch.split(&[4 * n])[0];
    let (n, v, vp) = (int(n), int(v), int(vp));
    // SAFETY: the caller's contract; `losses` holds n f32.
    unsafe {
        match dtype {
            DType::F32 => {
                cross_entropy_forward::launch(rt, losses, lse, logits, targets, n, v, vp)?
            }
            DType::Bf16 => {
                cross_entropy_forward_bf16::launch(rt, losses, lse, logits, targets, n, v, vp)?
            }
        }
        mean_reduce::launch(rt, loss, losses, n)?;
    }
    Ok(losses)
}
