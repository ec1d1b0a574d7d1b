//! `kernels/elementwise.cu`: GELU forward/backward, add, add_into, the f32 ↔ bf16 casts, and
//! the bf16-storage GELU and add (`*_bf16`: bf16 in memory, f32 arithmetic, results rounded to
//! nearest even). All are grid-stride loops over `n` elements with 1-D blocks of [`BLOCK`].

use super::bf16;
use super::{kernels, linear, LaunchDims};

/// Threads per block of every element-wise kernel (their `__launch_bounds__`).
pub const BLOCK: u32 = 256;

/// The most blocks an element-wise launch uses; grid-stride loops cover larger inputs. About
/// one full wave on an H100/H200 (132 SMs × 8 resident blocks of 256 threads).
pub const MAX_BLOCKS: u32 = 1024;

/// Elements each thread of the f32 kernels handles per loop step (float4 when aligned).
pub const F32_PER_THREAD: usize = 4;

/// Elements each thread of the bf16-storage kernels handles per loop step (one 16-byte uint4
/// of eight bf16 when aligned).
pub const BF16_PER_THREAD: usize = 8;

/// Enough blocks of [`BLOCK`] threads for `n` elements at `per_thread` each (at least one
/// block, at most [`MAX_BLOCKS`]).
pub fn grid_for(n: i32, per_thread: usize) -> LaunchDims {
    let items = (n.max(0) as usize).div_ceil(per_thread);
    let blocks = items.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    linear(blocks, BLOCK)
}

kernels! {
    /// `out = gelu(x)` (GPT-2's tanh approximation).
    fn gelu_forward(out: *mut f32, x: *const f32, n: i32) => grid_for(n, F32_PER_THREAD);
    /// `dx = gelu'(x) · dout`.
    fn gelu_backward(dx: *mut f32, x: *const f32, dout: *const f32, n: i32)
        => grid_for(n, F32_PER_THREAD);
    /// `out = a + b`.
    fn add(out: *mut f32, a: *const f32, b: *const f32, n: i32) => grid_for(n, F32_PER_THREAD);
    /// `dst += src`.
    fn add_into(dst: *mut f32, src: *const f32, n: i32) => grid_for(n, F32_PER_THREAD);
    /// [`gelu_forward`] with bf16 storage.
    fn gelu_forward_bf16(out: *mut bf16, x: *const bf16, n: i32) => grid_for(n, BF16_PER_THREAD);
    /// [`gelu_backward`] with bf16 storage.
    fn gelu_backward_bf16(dx: *mut bf16, x: *const bf16, dout: *const bf16, n: i32)
        => grid_for(n, BF16_PER_THREAD);
    /// [`add`] with bf16 storage: `bf16(a + b)`, the sum in f32.
    fn add_bf16(out: *mut bf16, a: *const bf16, b: *const bf16, n: i32)
        => grid_for(n, BF16_PER_THREAD);
    /// Round to nearest even; NaN → 0x7fff.
    fn cast_f32_to_bf16(out: *mut bf16, x: *const f32, n: i32) => grid_for(n, 1);
    /// Exact.
    fn cast_bf16_to_f32(out: *mut f32, x: *const bf16, n: i32) => grid_for(n, 1);
}
