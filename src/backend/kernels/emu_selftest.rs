//! `kernels/emu_selftest.cu`: small kernels that test the CUDA emulation itself (barriers,
//! shuffles, shared memory, atomics, bf16, and planted bugs it must catch; the `emu_san_*` ones
//! are the sanitizer's, each with its correct twin, for tests/emu_sanitizer.rs). Each test
//! picks its geometry (`launch_with`); the declared one is a single warp.

use super::{bf16, kernels, linear};
use crate::backend::tensor_map::TensorMap;

kernels! {
    fn emu_selftest_indices(out: *mut u32)
        => linear(1, 32);
    fn emu_selftest_rotate(out: *mut i32, seed: i32, rounds: i32)
        => linear(1, 32);
    fn emu_bug_missing_sync(out: *mut i32, seed: i32)
        => linear(1, 32);
    fn emu_selftest_shuffles(out: *mut i32, input: *const i32, width: i32)
        => linear(1, 32);
    fn emu_selftest_block_reduce(sums: *mut f32, maxs: *mut f32, twice: *mut f32, x: *const f32, n: i32)
        => linear(1, 32);
    fn emu_selftest_reverse(out: *mut f32, x: *const f32, n: i32)
        => linear(1, 32);
    fn emu_selftest_smem_poison(out: *mut u32, n: i32)
        => linear(1, 32);
    fn emu_selftest_atomics(counter: *mut i32, olds: *mut i32, fsum: *mut f32, u64: *mut u64, imax: *mut i32)
        => linear(1, 32);
    fn emu_selftest_sync_reduce(out: *mut i32, pred: *const i32)
        => linear(1, 32);
    fn emu_selftest_bf16(bits: *mut u16, back: *mut f32, x: *const f32, n: i32)
        => linear(1, 32);
    fn emu_bug_early_return(out: *mut i32)
        => linear(1, 32);
    fn emu_bug_divergent_warp(out: *mut i32)
        => linear(1, 32);
    fn emu_bug_partial_mask(out: *mut i32)
        => linear(1, 32);
    /// Waits on an mbarrier phase that one of its two arrivals never completes.
    fn emu_bug_mbarrier_deadlock(out: *mut i32)
        => LaunchDims { smem: 64, ..linear(1, 64) };
    fn emu_san_race_raw(out: *mut f32, fixed: i32)
        => linear(1, 32);
    fn emu_san_race_war(out: *mut f32, fixed: i32)
        => linear(1, 32);
    fn emu_san_race_waw(out: *mut f32, fixed: i32)
        => linear(1, 32);
    fn emu_san_warp_exchange(out: *mut f32, fixed: i32, across_warps: i32)
        => linear(1, 32);
    fn emu_san_uninit_smem(out: *mut f32, fixed: i32)
        => linear(1, 32);
    fn emu_san_uninit_static(out: *mut f32, fixed: i32)
        => linear(1, 32);
    fn emu_san_copy(out: *mut f32, x: *const f32, count: i32, shift: i32)
        => linear(1, 32);
    fn emu_san_smem_bounds(out: *mut f32)
        => linear(1, 32);
    fn emu_san_cp_async(out: *mut f32, x: *const f32, mode: i32)
        => linear(1, 32);
    fn emu_san_shared_atomics(out: *mut i32)
        => linear(1, 32);
    /// Hopper's checks: `out (64×128) = a (64×64) · b (128×64)ᵀ` by one warpgroup's wgmmas,
    /// the operands from bulk tensor copies (`map_a`, `map_b`) or stored by the threads; `mode`
    /// plants a bug (see kernels/emu_selftest.cu; 6 aborts the process).
    fn emu_san_wgmma(out: *mut f32, a: *const bf16, b: *const bf16, mode: i32, map_a: TensorMap, map_b: TensorMap)
        => LaunchDims { smem: 1024 + 192 * 128 + 8, ..linear(1, 128) };
}
