//! The emulation's sanitizer (kernels/emu/cuda_emu.h, "Sanitizer"): for each check, a small
//! kernel of kernels/emu_selftest.cu (`emu_san_*`) plants the bug, and `EmuRuntime::launch`
//! must fail with a finding of the right kind that names the kernel, block, thread and address
//! (and the other thread of a race); the correct twin of every planted kernel must run clean
//! and compute the right values.
//!
//! Fibers run until they synchronise and block 0 runs its threads in increasing order, so a
//! planted bug's first finding is known exactly (see the kernels' comments).

use smelt::backend::device::emu::{EmuBuffer, EmuRuntime};
use smelt::backend::device::sanitizer::{self, Access, Findings, Kind, Report, Space};
use smelt::backend::device::Runtime;
use smelt::backend::kernels::emu_selftest::*;
use smelt::backend::launch::{Dim3, LaunchDims};
use smelt::error::Result;

fn dims(blocks: u32, threads: u32, smem: u32) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks),
        block: Dim3::x(threads),
        smem,
    }
}

fn tid(x: u32) -> Dim3 {
    Dim3 { x, y: 0, z: 0 }
}

/// A zeroed f32 buffer of `len` elements.
fn zeros(rt: &EmuRuntime, len: usize) -> EmuBuffer {
    rt.alloc_zeroed(4 * len).expect("allocation")
}

/// An f32 buffer of exactly `x.len()` elements holding `x`.
fn upload(rt: &EmuRuntime, x: &[f32]) -> EmuBuffer {
    let mut buf = rt.alloc(4 * x.len()).expect("allocation");
    rt.upload(&mut buf, 0, bytemuck::cast_slice(x))
        .expect("upload");
    buf
}

fn download(rt: &EmuRuntime, buf: &EmuBuffer, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; len];
    rt.download(buf, 0, bytemuck::cast_slice_mut(&mut out))
        .expect("download");
    out
}

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|i| i as f32 + 0.5).collect()
}

/// The findings of a launch that must have failed with them; its error names the first.
fn findings(result: Result<()>) -> Findings {
    assert!(
        sanitizer::enabled(),
        "these tests need the sanitizer: run them without SMELT_EMU_SANITIZE=0"
    );
    let err = result.expect_err("the planted bug must be reported");
    let found = sanitizer::last_failed_launch();
    let first = found
        .kept
        .first()
        .expect("a failed launch keeps its findings");
    let msg = err.to_string();
    assert!(
        msg.starts_with("sanitizer: ") && msg.contains(&first.to_string()),
        "the error must be the first finding: {msg}"
    );
    if found.total > 1 {
        assert!(
            msg.contains(&format!("and {} more", found.total - 1)),
            "{msg}"
        );
    }
    found
}

/// What a finding must say.
struct Expect {
    kind: Kind,
    access: Access,
    kernel: &'static str,
    block: u32,
    thread: u32,
    other: Option<u32>,
    space: Space,
    offset: i64,
}

fn check(r: &Report, e: &Expect) {
    let text = r.to_string();
    assert_eq!(r.kind(), e.kind, "{text}");
    assert_eq!(r.access(), e.access, "{text}");
    assert_eq!(r.kernel(), e.kernel, "{text}");
    assert_eq!(r.block, tid(e.block), "{text}");
    assert_eq!(r.thread, tid(e.thread), "{text}");
    assert_eq!(r.other_thread(), e.other.map(tid), "{text}");
    assert_eq!(r.space(), e.space, "{text}");
    if e.space != Space::StaticShared {
        assert_eq!(r.offset, e.offset, "{text}");
    }
    let names = format!(
        "kernel {}, block ({},0,0), thread ({},0,0)",
        e.kernel, e.block, e.thread
    );
    assert!(text.contains(&names), "{text}");
    assert!(text.contains(&format!("0x{:x}", r.address)), "{text}");
}

// ----------------------------------------------------------------------------------------
// racecheck

#[test]
fn racecheck_reports_a_read_after_write_with_no_barrier_between() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // SAFETY: 64 outputs; 64 floats of dynamic shared memory.
    let run = unsafe { emu_san_race_raw::launch_with(&rt, dims(1, 64, 256), rt.address(&out), 0) };
    let found = findings(run);
    check(
        &found.kept[0],
        &Expect {
            kind: Kind::RaceReadAfterWrite,
            access: Access::Read,
            kernel: "emu_san_race_raw",
            block: 0,
            thread: 1,
            other: Some(0),
            space: Space::DynamicShared,
            offset: 0,
        },
    );
    assert_eq!(
        found.total, 63,
        "every thread but 0 reads its neighbour's write"
    );
    assert_eq!(found.kept.len(), 8, "the first 8 are kept");
}

#[test]
fn racecheck_reports_a_write_after_read_with_no_barrier_between() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // SAFETY: as above.
    let run = unsafe { emu_san_race_war::launch_with(&rt, dims(1, 64, 256), rt.address(&out), 0) };
    check(
        &findings(run).kept[0],
        &Expect {
            kind: Kind::RaceWriteAfterRead,
            access: Access::Write,
            kernel: "emu_san_race_war",
            block: 0,
            thread: 1,
            other: Some(0),
            space: Space::DynamicShared,
            offset: 0,
        },
    );
}

#[test]
fn racecheck_reports_a_write_after_write_with_no_barrier_between() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // SAFETY: as above.
    let run = unsafe { emu_san_race_waw::launch_with(&rt, dims(1, 64, 256), rt.address(&out), 0) };
    let found = findings(run);
    check(
        &found.kept[0],
        &Expect {
            kind: Kind::RaceWriteAfterWrite,
            access: Access::Write,
            kernel: "emu_san_race_waw",
            block: 0,
            thread: 1,
            other: Some(0),
            space: Space::DynamicShared,
            offset: 0,
        },
    );
    assert_eq!(found.total, 1);
}

#[test]
fn syncwarp_orders_lanes_of_one_warp_only() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    let launch = |threads: u32, fixed: i32, across: i32| {
        // SAFETY: 64 outputs; `threads` floats of dynamic shared memory.
        unsafe {
            emu_san_warp_exchange::launch_with(
                &rt,
                dims(1, threads, 4 * threads),
                rt.address(&out),
                fixed,
                across,
            )
        }
    };
    // Within a warp, no __syncwarp: lane 1 reads lane 0's write.
    let found = findings(launch(32, 0, 0));
    let race = found
        .kept
        .iter()
        .find(|r| r.kind() == Kind::RaceReadAfterWrite)
        .expect("a read-after-write race");
    check(
        race,
        &Expect {
            kind: Kind::RaceReadAfterWrite,
            access: Access::Read,
            kernel: "emu_san_warp_exchange",
            block: 0,
            thread: 1,
            other: Some(0),
            space: Space::DynamicShared,
            offset: 0,
        },
    );
    // With __syncwarp: clean, and each lane has its partner's value.
    launch(32, 1, 0).expect("__syncwarp orders the lanes of a warp");
    let got = download(&rt, &out, 32);
    assert!(got.iter().enumerate().all(|(t, &v)| v == (t ^ 1) as f32));
    // Across warps, __syncwarp is not enough: a lane of warp 1 reads a write of warp 0.
    let found = findings(launch(64, 1, 1));
    assert!(
        found
            .kept
            .iter()
            .any(|r| r.kind() == Kind::RaceReadAfterWrite
                && r.thread.x / 32 != r.other_thread().expect("a race names both").x / 32),
        "{:?}",
        found.kept
    );
}

// ----------------------------------------------------------------------------------------
// initcheck

#[test]
fn initcheck_reports_reads_of_unwritten_dynamic_shared_memory() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // SAFETY: 64 outputs and floats of dynamic shared memory.
    let run =
        unsafe { emu_san_uninit_smem::launch_with(&rt, dims(1, 64, 256), rt.address(&out), 0) };
    let found = findings(run);
    check(
        &found.kept[0],
        &Expect {
            kind: Kind::Uninitialized,
            access: Access::Read,
            kernel: "emu_san_uninit_smem",
            block: 0,
            // The last thread to reach the barrier runs on first.
            thread: 63,
            other: None,
            space: Space::DynamicShared,
            offset: 252,
        },
    );
    assert_eq!(found.total, 64);
}

#[test]
fn initcheck_reports_static_shared_memory_another_block_wrote() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 2);
    // SAFETY: one output per block.
    let run =
        unsafe { emu_san_uninit_static::launch_with(&rt, dims(2, 32, 0), rt.address(&out), 0) };
    let found = findings(run);
    check(
        &found.kept[0],
        &Expect {
            kind: Kind::Uninitialized,
            access: Access::Read,
            kernel: "emu_san_uninit_static",
            block: 1,
            thread: 0,
            other: None,
            space: Space::StaticShared,
            offset: 0,
        },
    );
    assert_eq!(found.total, 1, "block 0 wrote what it reads");
}

#[test]
fn initcheck_reports_buffer_bytes_never_written_since_allocation() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // 64 floats allocated (contents undefined), the first 40 uploaded.
    let mut x = rt.alloc(256).expect("allocation");
    rt.upload(&mut x, 0, bytemuck::cast_slice(&ramp(40)))
        .expect("upload");
    let copy = |x: &EmuBuffer| {
        // SAFETY: 64 outputs, 64 inputs.
        unsafe {
            emu_san_copy::launch_with(&rt, dims(1, 64, 0), rt.address(&out), rt.address(x), 64, 0)
        }
    };
    let found = findings(copy(&x));
    let first = found.kept[0];
    check(
        &first,
        &Expect {
            kind: Kind::Uninitialized,
            access: Access::Read,
            kernel: "emu_san_copy",
            block: 0,
            thread: 40,
            other: None,
            space: Space::Global,
            offset: 160,
        },
    );
    assert_eq!(first.address, rt.address(&x) + 160);
    assert_eq!(first.region_bytes, 256);
    assert_eq!(found.total, 24);

    // Written by the rest of the upload, by a kernel, or zeroed at allocation: clean.
    rt.upload(&mut x, 160, bytemuck::cast_slice(&ramp(64)[40..]))
        .expect("upload");
    copy(&x).expect("every byte was uploaded");
    assert_eq!(download(&rt, &out, 64), ramp(64));
    let by_kernel = rt.alloc(256).expect("allocation");
    // SAFETY: 64 floats each.
    unsafe {
        emu_san_copy::launch_with(
            &rt,
            dims(1, 64, 0),
            rt.address(&by_kernel),
            rt.address(&x),
            64,
            0,
        )
    }
    .expect("clean copy");
    copy(&by_kernel).expect("a kernel's stores count as written");
    copy(&zeros(&rt, 64)).expect("alloc_zeroed counts as written");
}

// ----------------------------------------------------------------------------------------
// memcheck

#[test]
fn memcheck_reports_accesses_leaving_a_buffer() {
    let rt = EmuRuntime::new();
    let x = upload(&rt, &ramp(64));
    let out = zeros(&rt, 64);
    let copy = |out: &EmuBuffer, count: i32, shift: i32| {
        // SAFETY: the out-of-bounds accesses land in EmuRuntime's guard gaps.
        unsafe {
            emu_san_copy::launch_with(
                &rt,
                dims(1, 96, 0),
                rt.address(out),
                rt.address(&x),
                count,
                shift,
            )
        }
    };
    // One read past the end.
    let found = findings(copy(&zeros(&rt, 65), 65, 0));
    let first = found.kept[0];
    check(
        &first,
        &Expect {
            kind: Kind::OutOfBounds,
            access: Access::Read,
            kernel: "emu_san_copy",
            block: 0,
            thread: 64,
            other: None,
            space: Space::Global,
            offset: 256,
        },
    );
    assert_eq!(first.address, rt.address(&x) + 256);
    assert_eq!(first.region_bytes, 256);
    assert_eq!(found.total, 1);
    // One read before the start.
    check(
        &findings(copy(&out, 64, -1)).kept[0],
        &Expect {
            kind: Kind::OutOfBounds,
            access: Access::Read,
            kernel: "emu_san_copy",
            block: 0,
            thread: 0,
            other: None,
            space: Space::Global,
            offset: -4,
        },
    );
    // One write past the end of `out` (x is read in bounds: 65 elements).
    let x65 = upload(&rt, &ramp(65));
    // SAFETY: as above.
    let run = unsafe {
        emu_san_copy::launch_with(
            &rt,
            dims(1, 96, 0),
            rt.address(&out),
            rt.address(&x65),
            65,
            0,
        )
    };
    check(
        &findings(run).kept[0],
        &Expect {
            kind: Kind::OutOfBounds,
            access: Access::Write,
            kernel: "emu_san_copy",
            block: 0,
            thread: 64,
            other: None,
            space: Space::Global,
            offset: 256,
        },
    );
    copy(&out, 64, 0).expect("in bounds");
}

#[test]
fn memcheck_reports_accesses_past_the_launched_dynamic_shared_memory() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    // SAFETY: 64 outputs; 63 floats of shared memory (the bug).
    let run = unsafe { emu_san_smem_bounds::launch_with(&rt, dims(1, 64, 252), rt.address(&out)) };
    let found = findings(run);
    let first = found.kept[0];
    check(
        &first,
        &Expect {
            kind: Kind::OutOfBounds,
            access: Access::Write,
            kernel: "emu_san_smem_bounds",
            block: 0,
            thread: 63,
            other: None,
            space: Space::DynamicShared,
            offset: 252,
        },
    );
    assert_eq!(first.region_bytes, 252);
}

// ----------------------------------------------------------------------------------------
// cp.async completes late

/// emu_san_cp_async in `mode` over one block of 64 threads; x has 8 floats per thread.
fn cp_async(rt: &EmuRuntime, out: &EmuBuffer, x: &EmuBuffer, mode: i32) -> Result<()> {
    // SAFETY: two 16-byte rows per thread in x and in shared memory, one output per thread.
    unsafe {
        emu_san_cp_async::launch_with(
            rt,
            dims(1, 64, 64 * 32),
            rt.address(out),
            rt.address(x),
            mode,
        )
    }
}

#[test]
fn cp_async_destinations_stay_pending_until_a_wait_covers_them() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    let x = upload(&rt, &ramp(64 * 8));
    // No wait at all: thread 0 reads its own row.
    let pending = |mode: i32, offset: i64| {
        check(
            &findings(cp_async(&rt, &out, &x, mode)).kept[0],
            &Expect {
                kind: Kind::CpAsyncPending,
                access: Access::Read,
                kernel: "emu_san_cp_async",
                block: 0,
                thread: 0,
                other: Some(0),
                space: Space::DynamicShared,
                offset,
            },
        )
    };
    pending(1, 0);
    // wait<1> with two groups in flight leaves the second pending.
    pending(2, 64 * 16);
    // The wait lands the copy as the waiting thread's write: others need a barrier after it.
    check(
        &findings(cp_async(&rt, &out, &x, 3)).kept[0],
        &Expect {
            kind: Kind::RaceReadAfterWrite,
            access: Access::Read,
            kernel: "emu_san_cp_async",
            block: 0,
            thread: 1,
            other: Some(0),
            space: Space::DynamicShared,
            offset: 0,
        },
    );
    // A misaligned source.
    check(
        &findings(cp_async(&rt, &out, &x, 4)).kept[0],
        &Expect {
            kind: Kind::CpAsyncInvalid,
            access: Access::CpAsync,
            kernel: "emu_san_cp_async",
            block: 0,
            thread: 0,
            other: None,
            space: Space::DynamicShared,
            offset: 0,
        },
    );
}

// ----------------------------------------------------------------------------------------
// the correct twins

#[test]
fn the_correct_twin_of_every_planted_kernel_runs_clean() {
    let rt = EmuRuntime::new();
    let out = zeros(&rt, 64);
    let got = |len: usize| download(&rt, &out, len);
    let o = rt.address(&out);
    let one_block = dims(1, 64, 256);
    // SAFETY (all launches): 64 outputs, 64 floats of shared memory (more for cp.async), the
    // inputs sized for what each kernel reads.
    unsafe {
        emu_san_race_raw::launch_with(&rt, one_block, o, 1).expect("race_raw twin");
        let want: Vec<f32> = (0..64).map(|t: i32| (t - 1).max(0) as f32).collect();
        assert_eq!(got(64), want);

        emu_san_race_war::launch_with(&rt, one_block, o, 1).expect("race_war twin");
        let want: Vec<f32> = (0..64).map(|t| (t + 1).min(63) as f32).collect();
        assert_eq!(got(64), want);

        emu_san_race_waw::launch_with(&rt, one_block, o, 1).expect("race_waw twin");
        assert_eq!(got(64), vec![2.0; 64]);

        emu_san_uninit_smem::launch_with(&rt, one_block, o, 1).expect("uninit_smem twin");
        assert_eq!(got(64), (0..64).map(|t| t as f32).collect::<Vec<_>>());

        emu_san_uninit_static::launch_with(&rt, dims(2, 32, 0), o, 1).expect("uninit_static twin");
        assert_eq!(got(2), vec![0.0, 1.0]);

        emu_san_smem_bounds::launch_with(&rt, one_block, o).expect("smem_bounds twin");
        assert_eq!(got(64), (0..64).map(|t| t as f32).collect::<Vec<_>>());

        let x = ramp(64 * 8);
        let xs = upload(&rt, &x);
        cp_async(&rt, &out, &xs, 0).expect("cp_async twin");
        let want: Vec<f32> = (0..64).map(|t| x[4 * ((t + 63) % 64)]).collect();
        assert_eq!(got(64), want);

        let counter = rt.alloc(4).expect("allocation");
        emu_san_shared_atomics::launch_with(&rt, dims(1, 96, 0), rt.address(&counter))
            .expect("atomics on shared memory are not races");
        let mut n = [0u8; 4];
        rt.download(&counter, 0, &mut n).expect("download");
        assert_eq!(i32::from_le_bytes(n), 96);
    }
}

#[test]
fn the_sanitizer_is_off_under_smelt_emu_sanitize_0() {
    const NAME: &str = "the_sanitizer_is_off_under_smelt_emu_sanitize_0";
    if std::env::var("SMELT_EMU_SANITIZE").as_deref() == Ok("0") {
        assert!(!sanitizer::enabled());
        let rt = EmuRuntime::new();
        let out = zeros(&rt, 64);
        // SAFETY: as in the racecheck test.
        unsafe { emu_san_race_raw::launch_with(&rt, dims(1, 64, 256), rt.address(&out), 0) }
            .expect("no checks when the sanitizer is off");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([NAME, "--exact", "--test-threads=1"])
        .env("SMELT_EMU_SANITIZE", "0")
        .output()
        .expect("run the test binary");
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stdout)
    );
}

// ----------------------------------------------------------------------------------------
// the build step that makes every shared-memory access visible to the instrumentation

#[path = "../build/shared_decls.rs"]
mod shared_decls;

#[test]
fn shared_declarations_are_rewritten_in_place_and_others_left_alone() {
    let source = "\
#include \"common.cuh\"
extern __shared__ __align__(16) float smem[];
__shared__ float file_scope[4];
extern \"C\" __global__ void k(float* out) {
    extern __shared__ float smem[];  // dropped: cuda_emu.h defines smem
    // a comment before a declaration
    __shared__ float part[32];
    __shared__ float grid2[4][8];
    __shared__
        int counter;
    const char* s = \"__shared__ in a string\";
    out[0] = smem[0] + part[0] + grid2[1][2] + counter + s[0];
}
";
    let got = shared_decls::rewrite(source).expect("rewritable");
    assert_eq!(got.lines().count(), source.lines().count(), "{got}");
    let want = [
        "#include \"common.cuh\"",
        "",
        "__shared__ float file_scope[4];",
        "extern \"C\" __global__ void k(float* out) {",
        "      // dropped: cuda_emu.h defines smem",
        "    // a comment before a declaration",
        "    static thread_local float part__smelt_shared[32]; \
         auto& part = *::smelt_emu::opaque(&part__smelt_shared);",
        "    static thread_local float grid2__smelt_shared[4][8]; \
         auto& grid2 = *::smelt_emu::opaque(&grid2__smelt_shared);",
        "    static thread_local int counter__smelt_shared; \
         auto& counter = *::smelt_emu::opaque(&counter__smelt_shared);",
        "",
        "    const char* s = \"__shared__ in a string\";",
        "    out[0] = smem[0] + part[0] + grid2[1][2] + counter + s[0];",
        "}",
    ];
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}

#[test]
fn shared_declarations_the_rewrite_cannot_keep_exact_are_refused() {
    for (source, why) in [
        (
            "void f() {\n  __shared__ float a[4], b[4];\n}",
            "line 2: one variable",
        ),
        (
            "void f() {\n  __shared__ int n = 0;\n}",
            "line 2: one variable",
        ),
        (
            "void f() {\n  extern __shared__ float smem[8];\n}",
            "line 2: dynamic shared memory",
        ),
        (
            "extern __shared__ float buf[];",
            "line 1: dynamic shared memory",
        ),
        (
            "void f() {\n  static __shared__ float x[2];\n}",
            "line 2: __shared__ must start",
        ),
    ] {
        let err = shared_decls::rewrite(source).expect_err(source);
        assert!(err.starts_with(why), "{source}: {err}");
    }
}

// ---- Hopper: bulk tensor copies, mbarriers, wgmma ---------------------------------------------

/// `emu_san_wgmma` in `mode` on fresh random operands; its output and the f64 product.
fn wgmma(mode: i32) -> (Result<()>, Vec<f32>, Vec<f64>) {
    use smelt::backend::kernels::matmul::{bf16_to_f32, to_bf16};
    use smelt::backend::tensor_map::{Swizzle, TensorMapSpec};
    let rt = EmuRuntime::new();
    let seed = 0x5eed_0000 + mode as u32;
    let values = |len: usize, salt: u32| -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed ^ salt) % 17) as f32 / 8.0 - 1.0)
            .collect()
    };
    let (a, b) = (to_bf16(&values(64 * 64, 1)), to_bf16(&values(128 * 64, 2)));
    let bf16_buffer = |x: &[u16]| {
        let mut buf = rt.alloc(2 * x.len()).expect("allocation");
        rt.upload(&mut buf, 0, bytemuck::cast_slice(x))
            .expect("upload");
        buf
    };
    let (ab, bb) = (bf16_buffer(&a), bf16_buffer(&b));
    let map = |buf: &EmuBuffer, rows: usize| {
        let spec =
            TensorMapSpec::row_major(rt.address(buf), rows, 64, (rows as u32, 64), Swizzle::B128);
        rt.tensor_map(&spec).expect("tensor map")
    };
    let (map_a, map_b) = (map(&ab, 64), map(&bb, 128));
    let out = zeros(&rt, 64 * 128);
    let result = unsafe {
        emu_san_wgmma::launch(
            &rt,
            rt.address(&out),
            rt.address(&ab),
            rt.address(&bb),
            mode,
            map_a,
            map_b,
        )
    };
    let mut want = vec![0f64; 64 * 128];
    for i in 0..64 {
        for j in 0..128 {
            want[i * 128 + j] = (0..64)
                .map(|k| bf16_to_f32(a[i * 64 + k]) as f64 * bf16_to_f32(b[j * 64 + k]) as f64)
                .sum();
        }
    }
    (result, download(&rt, &out, 64 * 128), want)
}

fn assert_product(got: &[f32], want: &[f64], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}: out[{i}] = {g}, want {w}"
        );
    }
}

#[test]
fn wgmma_on_bulk_copied_or_fenced_operands_runs_clean_and_computes_the_product() {
    for (mode, what) in [(0, "bulk tensor copies"), (4, "stores + fence.proxy.async")] {
        let (result, got, want) = wgmma(mode);
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_product(&got, &want, what);
    }
}

/// The first finding of `emu_san_wgmma` in `mode`: its kind and access (the reporting thread is
/// the last of the warpgroup to reach the wgmma, or the one that read).
fn wgmma_finding(mode: i32) -> Report {
    let (result, _, _) = wgmma(mode);
    let found = findings(result);
    let first = found.kept[0];
    assert_eq!(first.kernel(), "emu_san_wgmma");
    assert_eq!(first.space(), Space::DynamicShared, "{first}");
    first
}

#[test]
fn a_wait_with_the_wrong_parity_leaves_the_bulk_copy_unwaited() {
    let r = wgmma_finding(1);
    assert_eq!(
        (r.kind(), r.access()),
        (Kind::BulkCopyUnwaited, Access::Wgmma),
        "{r}"
    );
}

#[test]
fn a_descriptor_with_another_swizzle_than_the_copy_is_reported() {
    let r = wgmma_finding(2);
    assert_eq!(
        (r.kind(), r.access()),
        (Kind::SwizzleMismatch, Access::Wgmma),
        "{r}"
    );
}

#[test]
fn operands_stored_by_threads_need_fence_proxy_async() {
    let r = wgmma_finding(3);
    assert_eq!(
        (r.kind(), r.access()),
        (Kind::ProxyFenceMissing, Access::Wgmma),
        "{r}"
    );
    assert!(r.other_thread().is_some(), "the writer is named: {r}");
}

#[test]
fn an_operand_changed_before_the_wgmma_wait_is_reported() {
    let r = wgmma_finding(5);
    assert_eq!(
        (r.kind(), r.access()),
        (Kind::WgmmaOperandChanged, Access::Wgmma),
        "{r}"
    );
    // Tile a starts at the first 1024-byte boundary of the shared window, where smem[0] is at 16.
    assert_eq!(r.offset, 1024 - 16, "the first byte of tile a: {r}");
}
