//! Tests of the CUDA emulation itself (kernels/emu/cuda_emu.h), through the small kernels of
//! kernels/emu_selftest.cu: built-in indices, __syncthreads, warp shuffles and votes, block
//! reductions (common.cuh), static and dynamic shared memory, atomics from concurrent blocks,
//! bf16 conversions, concurrent launches, and that kernel bugs (a missing barrier, a barrier
//! some threads skip, divergent warp intrinsics) are caught: the aborting ones run in a child
//! process (this test binary re-run on one test) whose stderr must explain the failure.
//!
//! Every launch goes through `EmuRuntime`, as the kernels' own tests do, so the sanitizer
//! (tests/emu_sanitizer.rs) watches these too; the two tests of what the emulation does
//! without it (a race's stale reads, poisoned shared memory) run again in a child process
//! with `SMELT_EMU_SANITIZE=0`.
//!
//! Random inputs are seeded from the clock; `SMELT_SEED=<seed>` replays a failure.

use bytemuck::{Pod, Zeroable};
use smelt::backend::device::emu::{EmuBuffer, EmuRuntime};
use smelt::backend::device::{sanitizer, Runtime};
use smelt::backend::kernels::emu_selftest::*;
use smelt::backend::launch::{Dim3, LaunchDims};
use smelt::rng::Rng;

fn dim(x: u32, y: u32, z: u32) -> Dim3 {
    Dim3 { x, y, z }
}

fn dims(grid: Dim3, block: Dim3, smem: u32) -> LaunchDims {
    LaunchDims { grid, block, smem }
}

/// A buffer holding `x` (outputs start as a sentinel so that unwritten values show).
fn buffer<T: Pod>(rt: &EmuRuntime, x: &[T]) -> EmuBuffer {
    let mut buf = rt
        .alloc(std::mem::size_of_val(x).max(1))
        .expect("allocation");
    rt.upload(&mut buf, 0, bytemuck::cast_slice(x))
        .expect("upload");
    buf
}

fn read<T: Pod + Zeroable>(rt: &EmuRuntime, buf: &EmuBuffer, len: usize) -> Vec<T> {
    let mut out = vec![T::zeroed(); len];
    rt.download(buf, 0, bytemuck::cast_slice_mut(&mut out))
        .expect("download");
    out
}

/// Runs this test binary again on `test` alone, with `var=value` set: its exit success and its
/// stdout and stderr.
fn rerun(test: &str, var: &str, value: &str) -> (bool, String, String) {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .output()
        .expect("run the test binary");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// With the sanitizer on: re-runs this test binary on `test` with `SMELT_EMU_SANITIZE=0`,
/// checks that it passed and returns true (the caller then checks the sanitizer's finding).
/// With it off: false (the caller checks what the emulation does without it).
fn also_without_sanitizer(test: &str) -> bool {
    if !sanitizer::enabled() {
        return false;
    }
    let (ok, stdout, stderr) = rerun(test, "SMELT_EMU_SANITIZE", "0");
    assert!(
        ok && stdout.contains("1 passed"),
        "{test} without the sanitizer:\n{stdout}{stderr}"
    );
    true
}

fn seed() -> u64 {
    match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    }
}

// ----------------------------------------------------------------------------
// the safe wrappers (each checks buffer sizes against the launch)

fn indices(grid: Dim3, block: Dim3) -> Vec<u32> {
    let n = (grid.x * grid.y * grid.z * block.x * block.y * block.z) as usize;
    let rt = EmuRuntime::new();
    let out = buffer(&rt, &vec![u32::MAX; 8 * n]);
    // SAFETY: 8 values per thread of the launch.
    unsafe { emu_selftest_indices::launch_with(&rt, dims(grid, block, 0), rt.address(&out)) }
        .expect("launch");
    read(&rt, &out, 8 * n)
}

fn rotate(blocks: u32, threads: u32, seed: i32, rounds: i32) -> Vec<i32> {
    let n = (blocks * threads) as usize;
    let rt = EmuRuntime::new();
    let out = buffer(&rt, &vec![i32::MIN; n]);
    let d = dims(Dim3::x(blocks), Dim3::x(threads), 0);
    // SAFETY: one value per thread; threads <= 1024 (the kernel's shared buffer).
    unsafe { emu_selftest_rotate::launch_with(&rt, d, rt.address(&out), seed, rounds) }
        .expect("launch");
    read(&rt, &out, n)
}

fn shuffles(blocks: u32, threads: u32, input: &[i32], width: i32) -> Vec<i32> {
    assert_eq!(input.len(), (blocks * threads) as usize);
    let rt = EmuRuntime::new();
    let out = buffer(&rt, &vec![i32::MIN; 8 * input.len()]);
    let x = buffer(&rt, input);
    let d = dims(Dim3::x(blocks), Dim3::x(threads), 0);
    // SAFETY: one input and 8 outputs per thread.
    unsafe { emu_selftest_shuffles::launch_with(&rt, d, rt.address(&out), rt.address(&x), width) }
        .expect("launch");
    read(&rt, &out, 8 * input.len())
}

/// (sums, maxs, twice) of each row of x (rows, n), one block of shape `block` per row.
fn block_reduce(block: Dim3, x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / n;
    assert_eq!(rows * n, x.len());
    let rt = EmuRuntime::new();
    let nans = vec![f32::NAN; rows];
    let (s, m, t) = (buffer(&rt, &nans), buffer(&rt, &nans), buffer(&rt, &nans));
    let xs = buffer(&rt, x);
    let d = dims(Dim3::x(rows as u32), block, 0);
    let a = |b: &EmuBuffer| rt.address(b);
    // SAFETY: one block per row, each reading its n elements and writing three values.
    unsafe {
        emu_selftest_block_reduce::launch_with(&rt, d, a(&s), a(&m), a(&t), a(&xs), n as i32)
    }
    .expect("launch");
    (
        read(&rt, &s, rows),
        read(&rt, &m, rows),
        read(&rt, &t, rows),
    )
}

// ----------------------------------------------------------------------------
// indices, barriers, shared memory

#[test]
fn indices_of_3d_grids_and_blocks() {
    for (grid, block) in [
        (dim(1, 1, 1), dim(1, 1, 1)),
        (dim(3, 2, 2), dim(5, 4, 3)),
        (dim(2, 3, 1), dim(32, 2, 1)),
        (dim(7, 1, 1), dim(1024, 1, 1)),
        (dim(1, 1, 3), dim(2, 2, 64)),
    ] {
        let out = indices(grid, block);
        let mut g = 0;
        for bz in 0..grid.z {
            for by in 0..grid.y {
                for bx in 0..grid.x {
                    for tz in 0..block.z {
                        for ty in 0..block.y {
                            for tx in 0..block.x {
                                let want = [
                                    tx,
                                    ty,
                                    tz,
                                    bx,
                                    by,
                                    bz,
                                    block.x + 1000 * block.y + 1_000_000 * block.z,
                                    grid.x + 1000 * grid.y + 1_000_000 * grid.z,
                                ];
                                assert_eq!(
                                    out[8 * g..8 * g + 8],
                                    want,
                                    "grid {grid:?} block {block:?}"
                                );
                                g += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn syncthreads_orders_shared_memory() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for threads in [1u32, 2, 31, 32, 100, 256, 1024] {
        for rounds in [0i32, 1, 2, 5, threads as i32 + 3] {
            let blocks = 5;
            let s = rng.below(1 << 20) as i32;
            let out = rotate(blocks, threads, s, rounds);
            let n = threads as i32;
            for b in 0..blocks as i32 {
                for t in 0..n {
                    let src = (t + rounds) % n;
                    let want = s + 7919 * b + 31 * src;
                    assert_eq!(
                        out[(b * n + t) as usize],
                        want,
                        "threads {threads} rounds {rounds} block {b} thread {t} (SMELT_SEED={seed})"
                    );
                }
            }
        }
    }
}

#[test]
fn a_missing_syncthreads_gives_wrong_results() {
    // Threads run in increasing id order in even blocks and decreasing in odd ones, so a read
    // of a neighbour's shared value without a barrier is stale in one direction or the other
    // (what the child without the sanitizer checks); with it, the launch fails on the race.
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (blocks, threads) = (6u32, 64u32);
    let s = rng.below(1 << 20) as i32 + 1;
    let rt = EmuRuntime::new();
    let out = rt
        .alloc_zeroed(8 * (blocks * threads) as usize)
        .expect("allocation");
    let d = dims(Dim3::x(blocks), Dim3::x(threads), 0);
    // SAFETY: two values per thread.
    let launched = unsafe { emu_bug_missing_sync::launch_with(&rt, d, rt.address(&out), s) };
    if also_without_sanitizer("a_missing_syncthreads_gives_wrong_results") {
        // The first thread of a block to run reads a neighbour's slot before it is written
        // (which block reports first depends on the workers' timing).
        let err = launched
            .expect_err("the sanitizer must report the race")
            .to_string();
        assert!(
            err.contains("kernel emu_bug_missing_sync, block (")
                && err.contains("uninitialized read")
                && err.contains("static __shared__ memory"),
            "{err}"
        );
        return;
    }
    launched.expect("without the sanitizer the launch runs");
    let out: Vec<i32> = read(&rt, &out, 2 * (blocks * threads) as usize);
    let n = threads as i32;
    for b in 0..blocks as i32 {
        let mut wrong = 0;
        for t in 0..n {
            let g = (b * n + t) as usize;
            let next = s + 7919 * b + 31 * ((t + 1) % n);
            let prev = s + 7919 * b + 31 * ((t + n - 1) % n);
            wrong += (out[2 * g] != next) as usize + (out[2 * g + 1] != prev) as usize;
        }
        assert!(
            wrong >= (threads - 1) as usize,
            "block {b}: only {wrong} stale reads: the race went unnoticed (SMELT_SEED={seed})"
        );
    }
}

#[test]
fn dynamic_shared_memory() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    // Up to 200 KB of dynamic shared memory per block.
    for n in [1usize, 33, 1000, 50_000] {
        let blocks = 3;
        let x: Vec<f32> = (0..blocks * n).map(|_| rng.normal() as f32).collect();
        let rt = EmuRuntime::new();
        let out = buffer(&rt, &vec![f32::NAN; x.len()]);
        let xs = buffer(&rt, &x);
        let d = dims(Dim3::x(blocks as u32), Dim3::x(128), (n * 4) as u32);
        // SAFETY: blocks * n elements each; n floats of dynamic shared memory.
        unsafe {
            emu_selftest_reverse::launch_with(&rt, d, rt.address(&out), rt.address(&xs), n as i32)
        }
        .expect("launch");
        let out: Vec<f32> = read(&rt, &out, x.len());
        for b in 0..blocks {
            for i in 0..n {
                assert_eq!(
                    out[b * n + i],
                    x[b * n + n - 1 - i],
                    "n={n} block {b} i {i}"
                );
            }
        }
    }
}

#[test]
fn dynamic_shared_memory_starts_poisoned_and_aligned() {
    // The kernel reads shared memory it never wrote: the sanitizer reports it; without the
    // sanitizer the bytes read are the poison (0xff), so such a read cannot pass unnoticed.
    let n = 300;
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * (n + 1)).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(64), (n * 4) as u32);
    // SAFETY: n + 1 outputs; n floats of dynamic shared memory.
    let launched =
        unsafe { emu_selftest_smem_poison::launch_with(&rt, d, rt.address(&out), n as i32) };
    if also_without_sanitizer("dynamic_shared_memory_starts_poisoned_and_aligned") {
        let err = launched
            .expect_err("the sanitizer must report the read")
            .to_string();
        assert!(
            err.contains("uninitialized") && err.contains("dynamic shared memory"),
            "{err}"
        );
        return;
    }
    launched.expect("without the sanitizer the launch runs");
    let out: Vec<u32> = read(&rt, &out, n + 1);
    assert!(out[..n].iter().all(|&v| v == u32::MAX), "not poisoned");
    assert_eq!(out[n], 0, "dynamic shared memory not 16-byte aligned");
}

// ----------------------------------------------------------------------------
// warps

/// CUDA's shuffle semantics for lane `lane` of a warp with `lanes` present lanes; None: the
/// source lane is absent (emulation: poison, -1).
fn shuffle_source(kind: &str, lane: i32, arg: i32, width: i32) -> i32 {
    let seg = lane & !(width - 1);
    match kind {
        "idx" => seg + (arg & (width - 1)),
        "up" => {
            if lane - arg >= seg {
                lane - arg
            } else {
                lane
            }
        }
        "down" => {
            if lane + arg < seg + width {
                lane + arg
            } else {
                lane
            }
        }
        "xor" => {
            let j = lane ^ arg;
            if j < seg + width {
                j
            } else {
                lane
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn warp_shuffles_and_votes() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    // (threads per block, width): full warps, narrower widths, and a partial last warp.
    for (threads, width) in [
        (64u32, 32i32),
        (96, 16),
        (64, 8),
        (32, 4),
        (64, 1),
        (40, 32),
        (70, 8),
    ] {
        let blocks = 3u32;
        let input: Vec<i32> = (0..blocks * threads)
            .map(|_| rng.below(1000) as i32)
            .collect();
        let out = shuffles(blocks, threads, &input, width);
        for b in 0..blocks as usize {
            for t in 0..threads as usize {
                let g = b * threads as usize + t;
                let warp_first = t / 32 * 32;
                let lanes = (threads as usize - warp_first).min(32);
                let lane = (t % 32) as i32;
                let value = |src: i32| -> i32 {
                    if src as usize >= lanes {
                        -1 // absent lane: poison
                    } else {
                        input[b * threads as usize + warp_first + src as usize]
                    }
                };
                let warp_values: Vec<i32> = (0..lanes as i32).map(value).collect();
                let ballot = warp_values
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &v)| acc | (((v & 1) as u32) << i));
                let f = value(shuffle_source("xor", lane, 1, 32)) as f32 * 0.5;
                let d = value(shuffle_source("up", lane, 1, 32)) as f64 * 0.25;
                let want = [
                    value(shuffle_source("xor", lane, 5, width)),
                    value(shuffle_source("down", lane, 3, width)),
                    value(shuffle_source("up", lane, 3, width)),
                    value(shuffle_source("idx", lane, lane * 7 + 3, width)),
                    ballot as i32,
                    warp_values.iter().any(|v| v % 5 == 0) as i32,
                    warp_values.iter().all(|v| v % 3 != 0) as i32,
                    (f * 4.0) as i32 + (d * 8.0) as i32,
                ];
                assert_eq!(
                    out[8 * g..8 * g + 8],
                    want,
                    "threads {threads} width {width} block {b} thread {t} (SMELT_SEED={seed})"
                );
            }
        }
    }
}

#[test]
fn block_reductions() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for block in [
        dim(32, 1, 1),
        dim(64, 1, 1),
        dim(96, 1, 1),
        dim(32, 4, 1),
        dim(8, 4, 2),
        dim(1024, 1, 1),
    ] {
        for n in [1usize, 31, 100, 5000] {
            let rows = 4;
            let x: Vec<f32> = (0..rows * n).map(|_| rng.normal() as f32).collect();
            let (sums, maxs, twice) = block_reduce(block, &x, n);
            for r in 0..rows {
                let row = &x[r * n..(r + 1) * n];
                let want: f64 = row.iter().map(|&v| v as f64).sum();
                let abs: f64 = row.iter().map(|&v| (v as f64).abs()).sum();
                let what = format!("block {block:?} n {n} row {r} (SMELT_SEED={seed})");
                assert!(
                    (sums[r] as f64 - want).abs() <= 1e-6 * abs.max(1.0),
                    "{what}: sum {} want {want}",
                    sums[r]
                );
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(maxs[r], max, "{what}: max");
                assert_eq!(twice[r], 2.0 * sums[r], "{what}: second reduction");
            }
        }
    }
}

#[test]
fn syncthreads_count_and_or() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let threads = 96usize;
    let patterns: Vec<Vec<i32>> = vec![
        vec![1; threads],
        vec![0; threads],
        (0..threads).map(|t| (t == 77) as i32).collect(),
        (0..threads).map(|t| (t != 5) as i32 * 7).collect(),
        (0..threads).map(|_| rng.below(2) as i32).collect(),
    ];
    let pred: Vec<i32> = patterns.concat();
    let rt = EmuRuntime::new();
    let out = buffer(&rt, &vec![-1i32; 3 * patterns.len()]);
    let preds = buffer(&rt, &pred);
    let d = dims(Dim3::x(patterns.len() as u32), Dim3::x(threads as u32), 0);
    // SAFETY: one predicate per thread, three outputs per block.
    unsafe { emu_selftest_sync_reduce::launch_with(&rt, d, rt.address(&out), rt.address(&preds)) }
        .expect("launch");
    let out: Vec<i32> = read(&rt, &out, 3 * patterns.len());
    for (b, p) in patterns.iter().enumerate() {
        let count = p.iter().filter(|&&v| v != 0).count() as i32;
        let want = [count, (count == threads as i32) as i32, (count > 0) as i32];
        assert_eq!(
            out[3 * b..3 * b + 3],
            want,
            "pattern {b} (SMELT_SEED={seed})"
        );
    }
}

// ----------------------------------------------------------------------------
// atomics, concurrency

#[test]
fn atomics_from_many_blocks() {
    for (blocks, threads) in [(1u32, 32u32), (64, 256), (1000, 64)] {
        let total = (blocks * threads) as usize;
        let rt = EmuRuntime::new();
        let counter = buffer(&rt, &[0i32]);
        let olds = buffer(&rt, &vec![-1i32; total]);
        let fsum = buffer(&rt, &[0f32]);
        let u64sum = buffer(&rt, &[0u64]);
        let imax = buffer(&rt, &[-1i32]);
        let d = dims(Dim3::x(blocks), Dim3::x(threads), 0);
        let a = |b: &EmuBuffer| rt.address(b);
        // SAFETY: one `olds` slot per thread; the scalars are single elements.
        unsafe {
            emu_selftest_atomics::launch_with(
                &rt,
                d,
                a(&counter),
                a(&olds),
                a(&fsum),
                a(&u64sum),
                a(&imax),
            )
        }
        .expect("launch");
        let counter = read::<i32>(&rt, &counter, 1)[0];
        let mut olds: Vec<i32> = read(&rt, &olds, total);
        let fsum = read::<f32>(&rt, &fsum, 1)[0];
        let u64sum = read::<u64>(&rt, &u64sum, 1)[0];
        let imax = read::<i32>(&rt, &imax, 1)[0];
        assert_eq!(counter as usize, total);
        olds.sort_unstable();
        assert!(
            olds.iter().enumerate().all(|(i, &v)| v as usize == i),
            "atomicAdd's old values are not a permutation"
        );
        assert_eq!(fsum, total as f32);
        assert_eq!(u64sum, (total as u64) * (total as u64 - 1) / 2);
        assert_eq!(imax as usize, total - 1);
    }
}

#[test]
fn concurrent_launches_from_several_threads() {
    // Static shared memory is per worker thread; launches from different OS threads (as cargo
    // test does) must not see each other's.
    let seed = seed();
    let handles: Vec<_> = (0..4u64)
        .map(|k| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (k + 1));
                for i in 0..20 {
                    let threads = [32u32, 100, 256, 1024][(i + k as usize) % 4];
                    let s = rng.below(1 << 20) as i32;
                    let out = rotate(7, threads, s, 3);
                    let n = threads as i32;
                    for (g, &v) in out.iter().enumerate() {
                        let (b, t) = (g as i32 / n, g as i32 % n);
                        assert_eq!(v, s + 7919 * b + 31 * ((t + 3) % n));
                    }
                    let x: Vec<f32> = (0..9 * 300).map(|_| rng.normal() as f32).collect();
                    let (sums, _, _) = block_reduce(Dim3::x(threads.div_ceil(32) * 32), &x, 300);
                    for (r, &sum) in sums.iter().enumerate() {
                        let want: f64 = x[r * 300..(r + 1) * 300].iter().map(|&v| v as f64).sum();
                        assert!((sum as f64 - want).abs() < 1e-3, "{sum} vs {want}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a launching thread failed");
    }
}

// ----------------------------------------------------------------------------
// bf16

fn bf16_rne(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let bits = x.to_bits();
    let (kept, dropped) = ((bits >> 16) as u16, bits & 0xffff);
    kept + (dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1)) as u16
}

#[test]
fn bf16_round_trip() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut bits: Vec<u32> = vec![
        0,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0001,
        0xff80_0001,
        0x7f7f_ffff,
        0x0000_0001,
        0x007f_ffff,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
    ];
    bits.extend((0..50_000).map(|_| rng.next_u64() as u32));
    let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let rt = EmuRuntime::new();
    let (hs, backs) = (
        buffer(&rt, &vec![0u16; x.len()]),
        buffer(&rt, &vec![0f32; x.len()]),
    );
    let xs = buffer(&rt, &x);
    let d = dims(Dim3::x(40), Dim3::x(128), 0);
    let a = |b: &EmuBuffer| rt.address(b);
    // SAFETY: x.len() elements each.
    unsafe { emu_selftest_bf16::launch_with(&rt, d, a(&hs), a(&backs), a(&xs), x.len() as i32) }
        .expect("launch");
    let h: Vec<u16> = read(&rt, &hs, x.len());
    let back: Vec<f32> = read(&rt, &backs, x.len());
    for i in 0..x.len() {
        let want = bf16_rne(x[i]);
        assert_eq!(h[i], want, "bf16({:#010x}) (SMELT_SEED={seed})", bits[i]);
        assert_eq!(
            back[i].to_bits(),
            (want as u32) << 16,
            "float(bf16({:#010x}))",
            bits[i]
        );
    }
}

// ----------------------------------------------------------------------------
// bugs the emulation must refuse: run in a child process, which must abort with a message

/// In the parent: re-runs this test binary on `test` with SMELT_EMU_CHILD set and returns the
/// child's stderr after checking that it failed. In the child: returns None (do the bad thing).
fn in_child(test: &str) -> Option<String> {
    if std::env::var_os("SMELT_EMU_CHILD").is_some() {
        return None;
    }
    let (ok, _, stderr) = rerun(test, "SMELT_EMU_CHILD", "1");
    assert!(!ok, "{test}: the child did not fail:\n{stderr}");
    Some(stderr)
}

#[test]
fn early_return_before_syncthreads_aborts() {
    if let Some(stderr) = in_child("early_return_before_syncthreads_aborts") {
        assert!(stderr.contains("deadlock"), "{stderr}");
        assert!(stderr.contains("emu_bug_early_return"), "{stderr}");
        assert!(
            stderr.contains("63 threads wait at __syncthreads()"),
            "{stderr}"
        );
        assert!(
            stderr.contains("1 have returned (first: linear thread 3)"),
            "{stderr}"
        );
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * 64).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(64), 0);
    // SAFETY: 64 outputs (aborts before writing).
    let _ = unsafe { emu_bug_early_return::launch_with(&rt, d, rt.address(&out)) };
    panic!("the launch returned");
}

#[test]
fn an_mbarrier_phase_that_never_completes_aborts() {
    if let Some(stderr) = in_child("an_mbarrier_phase_that_never_completes_aborts") {
        assert!(stderr.contains("emu_bug_mbarrier_deadlock"), "{stderr}");
        assert!(
            stderr.contains(
                "64 threads wait on mbarrier phases that no thread or bulk copy can complete"
            ),
            "{stderr}"
        );
        assert!(stderr.contains("deadlock"), "{stderr}");
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * 64).expect("allocation");
    // SAFETY: 64 outputs (aborts before writing).
    let _ = unsafe { emu_bug_mbarrier_deadlock::launch(&rt, rt.address(&out)) };
    panic!("the launch returned");
}

#[test]
fn a_bulk_copy_on_an_mbarrier_whose_init_was_not_fenced_aborts() {
    use smelt::backend::tensor_map::{Swizzle, TensorMapSpec};
    if let Some(stderr) = in_child("a_bulk_copy_on_an_mbarrier_whose_init_was_not_fenced_aborts") {
        assert!(stderr.contains("emu_san_wgmma"), "{stderr}");
        assert!(stderr.contains("call mbar_fence_init()"), "{stderr}");
        return;
    }
    let rt = EmuRuntime::new();
    let operand = |rows: usize| {
        let buf = rt.alloc_zeroed(128 * rows).expect("allocation");
        let spec =
            TensorMapSpec::row_major(rt.address(&buf), rows, 64, (rows as u32, 64), Swizzle::B128);
        let map = rt.tensor_map(&spec).expect("tensor map");
        (buf, map)
    };
    let ((a, map_a), (b, map_b)) = (operand(64), operand(128));
    let out = rt.alloc_zeroed(4 * 64 * 128).expect("allocation");
    // SAFETY: the operands and output emu_san_wgmma reads and writes (mode 6 aborts first).
    let _ = unsafe {
        emu_san_wgmma::launch(
            &rt,
            rt.address(&out),
            rt.address(&a),
            rt.address(&b),
            6,
            map_a,
            map_b,
        )
    };
    panic!("the launch returned");
}

#[test]
fn divergent_warp_intrinsics_abort() {
    if let Some(stderr) = in_child("divergent_warp_intrinsics_abort") {
        assert!(stderr.contains("divergent warp intrinsics"), "{stderr}");
        assert!(stderr.contains("__ballot_sync"), "{stderr}");
        assert!(stderr.contains("__shfl_xor_sync"), "{stderr}");
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * 32).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(32), 0);
    // SAFETY: 32 outputs.
    let _ = unsafe { emu_bug_divergent_warp::launch_with(&rt, d, rt.address(&out)) };
    panic!("the launch returned");
}

#[test]
fn partial_masks_are_refused() {
    if let Some(stderr) = in_child("partial_masks_are_refused") {
        assert!(stderr.contains("mask 0x0000ffff"), "{stderr}");
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * 32).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(32), 0);
    // SAFETY: 32 outputs.
    let _ = unsafe { emu_bug_partial_mask::launch_with(&rt, d, rt.address(&out)) };
    panic!("the launch returned");
}

#[test]
fn oversized_launches_abort() {
    if let Some(stderr) = in_child("oversized_launches_abort") {
        assert!(stderr.contains("exceeds CUDA's limits"), "{stderr}");
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4 * 8 * 2048).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(2048), 0);
    // SAFETY: never runs: a block of 2048 threads is refused.
    let _ = unsafe { emu_selftest_indices::launch_with(&rt, d, rt.address(&out)) };
    panic!("the launch returned");
}

#[test]
fn too_much_dynamic_shared_memory_aborts() {
    if let Some(stderr) = in_child("too_much_dynamic_shared_memory_aborts") {
        assert!(
            stderr.contains("bytes of dynamic shared memory requested"),
            "{stderr}"
        );
        return;
    }
    let rt = EmuRuntime::new();
    let out = rt.alloc_zeroed(4).expect("allocation");
    let d = dims(Dim3::x(1), Dim3::x(32), 300_000);
    // SAFETY: never runs.
    let _ = unsafe { emu_selftest_smem_poison::launch_with(&rt, d, rt.address(&out), 0) };
    panic!("the launch returned");
}
