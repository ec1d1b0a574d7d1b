//! `kernels/elementwise.cu` under emulation: GELU forward/backward, add, add_into, the
//! f32 ↔ bf16 casts, and the bf16-storage GELU forward/backward and add (`*_bf16`: bf16 in
//! memory, f32 arithmetic, results rounded to nearest even). bf16 values are their `u16` bit
//! patterns (`__nv_bfloat16` is one `unsigned short`).

use super::{Dim3, LaunchDims};

unsafe extern "C" {
    fn smelt_emu_gelu_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        x: *const f32,
        n: i32,
    );
    fn smelt_emu_gelu_backward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dx: *mut f32,
        x: *const f32,
        dout: *const f32,
        n: i32,
    );
    fn smelt_emu_add(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        n: i32,
    );
    fn smelt_emu_gelu_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        x: *const u16,
        n: i32,
    );
    fn smelt_emu_gelu_backward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dx: *mut u16,
        x: *const u16,
        dout: *const u16,
        n: i32,
    );
    fn smelt_emu_add_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        a: *const u16,
        b: *const u16,
        n: i32,
    );
    fn smelt_emu_add_into(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dst: *mut f32,
        src: *const f32,
        n: i32,
    );
    fn smelt_emu_cast_f32_to_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        x: *const f32,
        n: i32,
    );
    fn smelt_emu_cast_bf16_to_f32(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        x: *const u16,
        n: i32,
    );
}

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

/// A 1-D launch of `BLOCK` threads per block with enough threads for `items` work items (at
/// least one block, at most `MAX_BLOCKS`).
fn grid_for(items: usize) -> LaunchDims {
    let blocks = items.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchDims {
        grid: Dim3::x(blocks),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// Checks that `n` elements fit the kernels' `int` count and returns it.
fn count(n: usize) -> i32 {
    i32::try_from(n).expect("element-wise kernels take fewer than 2^31 elements")
}

pub fn gelu_forward_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(F32_PER_THREAD))
}

pub fn gelu_backward_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(F32_PER_THREAD))
}

pub fn add_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(F32_PER_THREAD))
}

pub fn add_into_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(F32_PER_THREAD))
}

/// `gelu_forward_bf16`: blocks of 256, one thread per 8 elements (capped at `MAX_BLOCKS`).
pub fn gelu_forward_bf16_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(BF16_PER_THREAD))
}

/// `gelu_backward_bf16`: as [`gelu_forward_bf16_launch`].
pub fn gelu_backward_bf16_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(BF16_PER_THREAD))
}

/// `add_bf16`: as [`gelu_forward_bf16_launch`].
pub fn add_bf16_launch(n: usize) -> LaunchDims {
    grid_for(n.div_ceil(BF16_PER_THREAD))
}

pub fn cast_f32_to_bf16_launch(n: usize) -> LaunchDims {
    grid_for(n)
}

pub fn cast_bf16_to_f32_launch(n: usize) -> LaunchDims {
    grid_for(n)
}

/// `out = gelu(x)` (GPT-2's tanh approximation).
pub fn gelu_forward(out: &mut [f32], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "gelu_forward: out and x must match");
    let n = count(x.len());
    let d = gelu_forward_launch(x.len());
    // SAFETY: both slices hold n elements; the kernel reads x[..n] and writes out[..n].
    unsafe { smelt_emu_gelu_forward(d.grid, d.block, d.smem, out.as_mut_ptr(), x.as_ptr(), n) }
}

/// `dx = gelu'(x) · dout`.
pub fn gelu_backward(dx: &mut [f32], x: &[f32], dout: &[f32]) {
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward: dx, x, dout must match"
    );
    let n = count(x.len());
    let d = gelu_backward_launch(x.len());
    // SAFETY: all three slices hold n elements; dx is written, x and dout are read.
    unsafe {
        smelt_emu_gelu_backward(
            d.grid,
            d.block,
            d.smem,
            dx.as_mut_ptr(),
            x.as_ptr(),
            dout.as_ptr(),
            n,
        )
    }
}

/// `out = a + b`.
pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    assert!(
        out.len() == a.len() && b.len() == a.len(),
        "add: out, a, b must match"
    );
    let n = count(a.len());
    let d = add_launch(a.len());
    // SAFETY: all three slices hold n elements; out is written (and overlaps neither input,
    // by the borrow rules), a and b are read.
    unsafe {
        smelt_emu_add(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            n,
        )
    }
}

/// [`gelu_forward`] with bf16 storage: `out = bf16(gelu(x))`, bit patterns in and out.
pub fn gelu_forward_bf16(out: &mut [u16], x: &[u16]) {
    assert_eq!(
        out.len(),
        x.len(),
        "gelu_forward_bf16: out and x must match"
    );
    let n = count(x.len());
    let d = gelu_forward_bf16_launch(x.len());
    // SAFETY: both slices hold n elements; u16 has the layout of __nv_bfloat16; the kernel
    // reads x[..n] and writes out[..n].
    unsafe { smelt_emu_gelu_forward_bf16(d.grid, d.block, d.smem, out.as_mut_ptr(), x.as_ptr(), n) }
}

/// [`gelu_backward`] with bf16 storage: `dx = bf16(gelu'(x) · dout)`.
pub fn gelu_backward_bf16(dx: &mut [u16], x: &[u16], dout: &[u16]) {
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward_bf16: dx, x, dout must match"
    );
    let n = count(x.len());
    let d = gelu_backward_bf16_launch(x.len());
    // SAFETY: all three slices hold n elements of __nv_bfloat16 layout; dx is written (a
    // unique borrow), x and dout are read.
    unsafe {
        smelt_emu_gelu_backward_bf16(
            d.grid,
            d.block,
            d.smem,
            dx.as_mut_ptr(),
            x.as_ptr(),
            dout.as_ptr(),
            n,
        )
    }
}

/// [`add`] with bf16 storage: `out = bf16(a + b)` (the sum in f32, rounded once).
pub fn add_bf16(out: &mut [u16], a: &[u16], b: &[u16]) {
    assert!(
        out.len() == a.len() && b.len() == a.len(),
        "add_bf16: out, a, b must match"
    );
    let n = count(a.len());
    let d = add_bf16_launch(a.len());
    // SAFETY: all three slices hold n elements of __nv_bfloat16 layout; out is written (and
    // overlaps neither input, by the borrow rules), a and b are read.
    unsafe {
        smelt_emu_add_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            n,
        )
    }
}

/// `dst += src`.
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add_into: dst and src must match");
    let n = count(src.len());
    let d = add_into_launch(src.len());
    // SAFETY: both slices hold n elements; dst is read and written, src read.
    unsafe { smelt_emu_add_into(d.grid, d.block, d.smem, dst.as_mut_ptr(), src.as_ptr(), n) }
}

/// `out = bf16(x)` as bit patterns, round to nearest even (every NaN → 0x7fff).
pub fn cast_f32_to_bf16(out: &mut [u16], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "cast_f32_to_bf16: out and x must match");
    let n = count(x.len());
    let d = cast_f32_to_bf16_launch(x.len());
    // SAFETY: both slices hold n elements; u16 has the layout of __nv_bfloat16.
    unsafe { smelt_emu_cast_f32_to_bf16(d.grid, d.block, d.smem, out.as_mut_ptr(), x.as_ptr(), n) }
}

/// `out = f32(x)` from bf16 bit patterns (exact).
pub fn cast_bf16_to_f32(out: &mut [f32], x: &[u16]) {
    assert_eq!(out.len(), x.len(), "cast_bf16_to_f32: out and x must match");
    let n = count(x.len());
    let d = cast_bf16_to_f32_launch(x.len());
    // SAFETY: both slices hold n elements; u16 has the layout of __nv_bfloat16.
    unsafe { smelt_emu_cast_bf16_to_f32(d.grid, d.block, d.smem, out.as_mut_ptr(), x.as_ptr(), n) }
}
