//! The CUDA kernels of `kernels/*.cu` on a real GPU, launched through cudarc directly (there
//! is no device `Backend` yet), against their CPU reference kernels
//! (`smelt::backend::cpu::kernels`). Launch geometry comes from the emulation's `*_launch`
//! functions (`smelt::backend::emu`), the geometry the CUDA backend will use.
//!
//! Every test first calls `smelt::backend::cuda::probe()`; without kernels in this build, a
//! driver or a GPU it prints `skipped: <why>` to stderr and passes (cudarc panics when libcuda
//! is absent, so nothing here touches cudarc before probe() succeeded).
//!
//! Inputs are fresh random numbers (the seed, from the clock, is in every failure message),
//! sizes are odd, outputs are poisoned with NaN first. Error is ‖gpu − cpu‖ / ‖cpu‖ over a
//! whole output (‖gpu − cpu‖ when cpu is zero); a NaN anywhere fails. Bounds:
//! - f32 kernels: 1e-5;
//! - kernels with exp/tanh/log (gelu, cross-entropy, attention): 1e-4, because nvcc builds
//!   with `--use_fast_math` (approximate `__expf`, `tanhf`, `__logf`, division);
//! - `matmul_bf16`: 1e-2 against the f32 CPU matmul of the unrounded inputs;
//!   `matmul_bf16_to_bf16`: 1e-2 against the f64 CPU matmul of its bf16 inputs, rounded to bf16;
//!   `matmul_f32`: 1e-5 (its GELU epilogue 1e-4). Matmul errors are relative to
//!   |op(a)|·|op(b)| + |bias| (the magnitude of the summed terms, `matmul_scale`), not to the
//!   result, so cancellation cannot fail them at random;
//! - casts: bit for bit;
//! - bf16-storage kernels (`*_bf16` outside the matmuls: bf16 activations, f32 parameters,
//!   statistics and gradients of parameters), as `tests/emu_bf16_storage.rs` checks their
//!   emulation: against the f32 CPU kernels on the same bf16-rounded inputs; bf16 outputs
//!   1e-2 against the CPU result rounded to bf16, f32 outputs 1e-5 (1e-4 through exp/log:
//!   lse, losses, loss); exact operations (`add_bf16`, the fused residual, the embedding sum,
//!   padded logit columns, in place vs out of place) bit for bit. Outputs are poisoned with
//!   bf16 NaN (0xffff).
//!
//! Each test prints, per kernel, one line to stdout that `tools/gpu-check.sh` collects:
//! `GPU-KERNEL\t<name>\t<max rel err over all sizes>\t<ms per launch>\t<bench size>`, where
//! the time is the mean of `REPS` launches (after one warm-up) between two CUDA events at a
//! GPT-2-ish size (B=8, T=1024, C=768, 12 heads, vocab 50257 padded to 50304).
//! Run: `cargo test --release --test gpu_kernels -- --nocapture --test-threads=1`.
#![cfg(smelt_emulation)]
// Launch helpers mirror the kernels' argument lists.
#![allow(clippy::too_many_arguments)]

mod common;
use common::Inputs;
use std::sync::Arc;

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut,
    DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::{
    attention, elementwise, loss, matmul, norm, optim, reduce, Dim3, LaunchDims,
};

/// f32 kernels without transcendental functions.
const TOL: f64 = 1e-5;
/// Kernels with exp/tanh/log: `--use_fast_math` approximations.
const TOL_FAST: f64 = 1e-4;
/// bf16 matmul against the f32 CPU matmul.
const TOL_BF16: f64 = 1e-2;
/// Timed launches per measurement (after one warm-up).
const REPS: usize = 5;
const EPS: f32 = 1e-5;

// GPT-2 124M sizes for the timings.
const B: usize = 8;
const T: usize = 1024;
const C: usize = 768;
const NH: usize = 12;
const V: usize = 50257;
const VP: usize = 50304;
/// GPT-2 124M parameter count (with the padded vocabulary).
const PARAMS: usize = 124_475_904;

// ----------------------------------------------------------------------------
// The GPU

/// One CUDA context, its default stream and the module of all kernels (the embedded fatbin).
struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
}

impl Gpu {
    /// The GPU, or `None` (after printing `skipped: <why>`) when CUDA cannot run here.
    fn get() -> Option<Gpu> {
        // probe() must come first: cudarc panics when libcuda is absent.
        if let Err(why) = smelt::backend::cuda::probe() {
            eprintln!("skipped: {why}");
            return None;
        }
        let fatbin = smelt::backend::cuda::FATBIN.expect("probe() checked the fatbin");
        let ctx = CudaContext::new(0).expect("CUDA context on GPU 0");
        let stream = ctx.default_stream();
        // cuModuleLoadData takes a cubin, a fatbin or PTX; Ptx::from_binary passes the bytes
        // through unchanged.
        let module = ctx
            .load_module(Ptx::from_binary(fatbin.to_vec()))
            .expect("load the embedded fatbin (cuModuleLoadData)");
        Some(Gpu {
            ctx,
            stream,
            module,
        })
    }

    fn func(&self, name: &str) -> CudaFunction {
        self.module
            .load_function(name)
            .unwrap_or_else(|e| panic!("kernel {name} not in the fatbin: {e:?}"))
    }

    /// A kernel ready for a launch of `dims`: opts in to more than 48 KiB of dynamic shared
    /// memory when the launch needs it.
    fn prepare(&self, name: &str, dims: LaunchDims) -> (CudaFunction, LaunchConfig) {
        let f = self.func(name);
        if dims.smem > 48 * 1024 {
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dims.smem as i32,
            )
            .unwrap_or_else(|e| panic!("{name}: {} B of shared memory: {e:?}", dims.smem));
        }
        let d3 = |d: Dim3| (d.x, d.y, d.z);
        let cfg = LaunchConfig {
            grid_dim: d3(dims.grid),
            block_dim: d3(dims.block),
            shared_mem_bytes: dims.smem,
        };
        (f, cfg)
    }

    fn up<T: DeviceRepr>(&self, x: &[T]) -> CudaSlice<T> {
        self.stream.clone_htod(x).expect("upload")
    }

    /// A device buffer of `len` NaNs.
    fn nan(&self, len: usize) -> CudaSlice<f32> {
        self.up(&vec![f32::NAN; len])
    }

    fn down<T: DeviceRepr>(&self, x: &CudaSlice<T>) -> Vec<T> {
        let v = self.stream.clone_dtoh(x).expect("download");
        self.sync();
        v
    }

    fn sync(&self) {
        self.stream
            .synchronize()
            .expect("stream synchronize (a kernel failed?)");
    }

    /// Mean milliseconds of `run` (a sequence of launches), over `REPS` runs after a warm-up,
    /// between two CUDA events.
    fn time_ms(&self, mut run: impl FnMut()) -> f64 {
        run();
        self.sync();
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).expect("event");
        let end = self.ctx.new_event(flags).expect("event");
        start.record(&self.stream).expect("record");
        for _ in 0..REPS {
            run();
        }
        end.record(&self.stream).expect("record");
        let ms = start.elapsed_ms(&end).expect("elapsed");
        self.sync();
        f64::from(ms) / REPS as f64
    }
}

/// `launch!(gpu, "kernel", dims; &mut out, &x, &n)`: one launch of a kernel of the fatbin.
/// Arguments are references to device buffers (`CudaSlice`) or to scalar locals of the
/// kernel's C types (`i32` for `int`, `i64` for `long`, `f32`, `u64` 0 for a null pointer).
macro_rules! launch {
    ($gpu:expr, $name:expr, $dims:expr; $($arg:expr),* $(,)?) => {{
        let (func, cfg) = $gpu.prepare($name, $dims);
        let mut builder = $gpu.stream.launch_builder(&func);
        $( builder.arg($arg); )*
        // SAFETY: the arguments follow the kernel's parameter list in `kernels/*.cu` (the same
        // list as its emulation wrapper in `smelt::backend::emu`), with buffers of the lengths
        // that wrapper checks, and the launch geometry is that wrapper's.
        unsafe { builder.launch(cfg) }
            .unwrap_or_else(|e| panic!("launch {}: {e:?}", $name));
    }};
}

// ----------------------------------------------------------------------------
// Inputs and checks

/// Deterministic, cheap values in [-1, 1) for the large timing inputs (no CPU reference).
fn pattern(len: usize, salt: u64) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            (h as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn int(x: usize) -> i32 {
    i32::try_from(x).expect("fits an int")
}

fn long(x: usize) -> i64 {
    i64::try_from(x).expect("fits a long")
}

fn ids_i32(ids: &[u32]) -> Vec<i32> {
    ids.iter().map(|&i| i as i32).collect()
}

/// Odd element counts of the element-wise kernels (partial float4s, partial blocks, grids
/// capped at `MAX_BLOCKS`).
const ELEMENTWISE_SIZES: [usize; 6] = [1, 3, 257, 4097, 300_001, 1_000_003];

/// (n rows, c columns) of the LayerNorm kernels.
const NORM_SIZES: [(usize, usize); 7] = [
    (1, 7),
    (5, 33),
    (37, 100),
    (300, 768),
    (4, 1),
    (37, 1600),
    (5000, 33),
];

// ----------------------------------------------------------------------------
// element-wise

fn gpu_gelu_forward(g: &Gpu, out: &mut CudaSlice<f32>, x: &CudaSlice<f32>, n: usize) {
    let ni = int(n);
    launch!(g, "gelu_forward", elementwise::gelu_forward_launch(n); out, x, &ni);
}

fn gpu_gelu_backward(
    g: &Gpu,
    dx: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    n: usize,
) {
    let ni = int(n);
    launch!(g, "gelu_backward", elementwise::gelu_backward_launch(n); dx, x, dout, &ni);
}

fn gpu_add(g: &Gpu, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>, n: usize) {
    let ni = int(n);
    launch!(g, "add", elementwise::add_launch(n); out, a, b, &ni);
}

#[test]
fn gelu_forward_backward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in ELEMENTWISE_SIZES {
        let x = r.normal(n, 2.0, 0.0);
        let mut out = g.nan(n);
        gpu_gelu_forward(&g, &mut out, &g.up(&x), n);
        let mut want = vec![f32::NAN; n];
        cpu::gelu_forward(&mut want, &x);
        r.check(
            &format!("gelu_forward n={n}"),
            &g.down(&out),
            &want,
            TOL_FAST,
        );
    }
    let n = B * T * 4 * C;
    let (x, mut out) = (g.up(&pattern(n, 1)), g.nan(n));
    let ms = g.time_ms(|| gpu_gelu_forward(&g, &mut out, &x, n));
    report(&mut r, "gelu_forward", ms, &format!("n={n}"));

    for n in ELEMENTWISE_SIZES {
        let x = r.normal(n, 2.0, 0.0);
        let dout = r.normal(n, 1.0, 0.0);
        let mut dx = g.nan(n);
        gpu_gelu_backward(&g, &mut dx, &g.up(&x), &g.up(&dout), n);
        let mut want = vec![f32::NAN; n];
        cpu::gelu_backward(&mut want, &x, &dout);
        r.check(
            &format!("gelu_backward n={n}"),
            &g.down(&dx),
            &want,
            TOL_FAST,
        );
    }
    let dout = g.up(&pattern(n, 2));
    let ms = g.time_ms(|| gpu_gelu_backward(&g, &mut out, &x, &dout, n));
    report(&mut r, "gelu_backward", ms, &format!("n={n}"));
}

#[test]
fn add_and_add_into() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in ELEMENTWISE_SIZES {
        let a = r.normal(n, 1.0, 0.0);
        let b = r.normal(n, 3.0, 1.0);
        let mut out = g.nan(n);
        gpu_add(&g, &mut out, &g.up(&a), &g.up(&b), n);
        let mut want = vec![f32::NAN; n];
        cpu::add(&mut want, &a, &b);
        r.check(&format!("add n={n}"), &g.down(&out), &want, TOL);
    }
    let n = B * T * C;
    let (a, b, mut out) = (g.up(&pattern(n, 1)), g.up(&pattern(n, 2)), g.nan(n));
    let ms = g.time_ms(|| gpu_add(&g, &mut out, &a, &b, n));
    report(&mut r, "add", ms, &format!("n={n}"));

    for n in ELEMENTWISE_SIZES {
        let dst = r.normal(n, 1.0, 0.0);
        let src = r.normal(n, 2.0, 0.0);
        let (mut d_dst, d_src) = (g.up(&dst), g.up(&src));
        let ni = int(n);
        launch!(g, "add_into", elementwise::add_into_launch(n); &mut d_dst, &d_src, &ni);
        let mut want = dst.clone();
        cpu::add_into(&mut want, &src);
        r.check(&format!("add_into n={n}"), &g.down(&d_dst), &want, TOL);
    }
    let ni = int(n);
    let ms = g.time_ms(|| {
        launch!(g, "add_into", elementwise::add_into_launch(n); &mut out, &a, &ni);
    });
    report(&mut r, "add_into", ms, &format!("n={n}"));
}

#[test]
fn casts_bit_exact() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        3.0e38,
    ];
    for n in ELEMENTWISE_SIZES {
        let mut x = r.normal(n, 100.0, 0.0);
        for (xi, s) in x.iter_mut().zip(specials) {
            *xi = s;
        }
        let ni = int(n);
        let (mut bits, d_x) = (g.up(&vec![0xffffu16; n]), g.up(&x));
        launch!(g, "cast_f32_to_bf16", elementwise::cast_f32_to_bf16_launch(n); &mut bits, &d_x, &ni);
        let got = g.down(&bits);
        let want = matmul::to_bf16(&x);
        assert!(
            got == want,
            "cast_f32_to_bf16 n={n}: bits differ (seed {})",
            r.seed
        );

        let mut back = g.nan(n);
        launch!(g, "cast_bf16_to_f32", elementwise::cast_bf16_to_f32_launch(n); &mut back, &bits, &ni);
        let got: Vec<u32> = g.down(&back).iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = want
            .iter()
            .map(|&b| matmul::bf16_to_f32(b).to_bits())
            .collect();
        assert!(
            got == want,
            "cast_bf16_to_f32 n={n}: bits differ (seed {})",
            r.seed
        );
        eprintln!("casts n={n}: bit exact");
    }
    let n = B * T * C;
    let ni = int(n);
    let (x, mut bits, mut back) = (g.up(&pattern(n, 1)), g.up(&vec![0u16; n]), g.nan(n));
    let ms = g.time_ms(|| {
        launch!(g, "cast_f32_to_bf16", elementwise::cast_f32_to_bf16_launch(n); &mut bits, &x, &ni);
    });
    report(&mut r, "cast_f32_to_bf16", ms, &format!("n={n}"));
    let ms = g.time_ms(|| {
        launch!(g, "cast_bf16_to_f32", elementwise::cast_bf16_to_f32_launch(n); &mut back, &bits, &ni);
    });
    report(&mut r, "cast_bf16_to_f32", ms, &format!("n={n}"));
}

// ----------------------------------------------------------------------------
// LayerNorm

fn gpu_layernorm_forward(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    mean: &mut CudaSlice<f32>,
    rstd: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    n: usize,
    c: usize,
) {
    let (ni, ci) = (int(n), int(c));
    launch!(g, "layernorm_forward", norm::layernorm_forward_launch(n);
        out, mean, rstd, x, w, b, &ni, &ci, &EPS);
}

/// Both backward kernels; `scratch` holds `layernorm_backward_scratch_len(n, c)` floats.
fn gpu_layernorm_backward(
    g: &Gpu,
    dx: &mut CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    db: &mut CudaSlice<f32>,
    scratch: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    mean: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    n: usize,
    c: usize,
) {
    let (ni, ci) = (int(n), int(c));
    let d = norm::layernorm_backward_launch(n, c);
    let partials = d.grid.x as i32;
    launch!(g, "layernorm_backward", d; dx, &mut *scratch, dout, x, w, mean, rstd, &ni, &ci);
    launch!(g, "layernorm_backward_reduce", norm::layernorm_backward_reduce_launch(c);
        dw, db, &*scratch, &partials, &ci);
}

#[test]
fn layernorm_forward_backward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (n, c) in NORM_SIZES {
        let x = r.normal(n * c, 2.0, 0.5);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        let (mut out, mut mean, mut rstd) = (g.nan(n * c), g.nan(n), g.nan(n));
        let (dx_, dw_, db_) = (g.up(&x), g.up(&w), g.up(&b));
        gpu_layernorm_forward(&g, &mut out, &mut mean, &mut rstd, &dx_, &dw_, &db_, n, c);
        let mut want = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(&mut want.0, &mut want.1, &mut want.2, &x, &w, &b, n, c, EPS);
        let tag = format!("layernorm_forward n={n} c={c}");
        r.check(&format!("{tag} out"), &g.down(&out), &want.0, TOL);
        r.check(&format!("{tag} mean"), &g.down(&mean), &want.1, TOL);
        r.check(&format!("{tag} rstd"), &g.down(&rstd), &want.2, TOL);
    }
    let (n, c) = (B * T, C);
    let (x, w, b) = (
        g.up(&pattern(n * c, 1)),
        g.up(&pattern(c, 2)),
        g.up(&pattern(c, 3)),
    );
    let (mut out, mut mean, mut rstd) = (g.nan(n * c), g.nan(n), g.nan(n));
    let ms =
        g.time_ms(|| gpu_layernorm_forward(&g, &mut out, &mut mean, &mut rstd, &x, &w, &b, n, c));
    report(&mut r, "layernorm_forward", ms, &format!("n={n} c={c}"));

    for (n, c) in NORM_SIZES {
        let x = r.normal(n * c, 2.0, 0.5);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        let dout = r.normal(n * c, 1.0, 0.0);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, EPS);
        let mut want = (vec![f32::NAN; n * c], vec![f32::NAN; c], vec![f32::NAN; c]);
        cpu::layernorm_backward(
            &mut want.0,
            &mut want.1,
            &mut want.2,
            &dout,
            &x,
            &w,
            &mean,
            &rstd,
            n,
            c,
        );
        let (mut ddx, mut ddw, mut ddb) = (g.nan(n * c), g.nan(c), g.nan(c));
        let mut scratch = g.nan(norm::layernorm_backward_scratch_len(n, c));
        gpu_layernorm_backward(
            &g,
            &mut ddx,
            &mut ddw,
            &mut ddb,
            &mut scratch,
            &g.up(&dout),
            &g.up(&x),
            &g.up(&w),
            &g.up(&mean),
            &g.up(&rstd),
            n,
            c,
        );
        let tag = format!("layernorm_backward n={n} c={c}");
        r.check(&format!("{tag} dx"), &g.down(&ddx), &want.0, TOL);
        r.check(&format!("{tag} dweight"), &g.down(&ddw), &want.1, TOL);
        r.check(&format!("{tag} dbias"), &g.down(&ddb), &want.2, TOL);
    }
    let dout = g.up(&pattern(n * c, 4));
    let (mut ddx, mut ddw, mut ddb) = (g.nan(n * c), g.nan(c), g.nan(c));
    let mut scratch = g.nan(norm::layernorm_backward_scratch_len(n, c));
    let ms = g.time_ms(|| {
        gpu_layernorm_backward(
            &g,
            &mut ddx,
            &mut ddw,
            &mut ddb,
            &mut scratch,
            &dout,
            &x,
            &w,
            &mean,
            &rstd,
            n,
            c,
        )
    });
    report(
        &mut r,
        "layernorm_backward+reduce",
        ms,
        &format!("n={n} c={c}"),
    );
}

#[test]
fn fused_residual_layernorm_forward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let run = |g: &Gpu,
               res: &mut CudaSlice<f32>,
               out: &mut CudaSlice<f32>,
               mean: &mut CudaSlice<f32>,
               rstd: &mut CudaSlice<f32>,
               a: &CudaSlice<f32>,
               b: &CudaSlice<f32>,
               w: &CudaSlice<f32>,
               bias: &CudaSlice<f32>,
               n: usize,
               c: usize| {
        let (ni, ci) = (int(n), int(c));
        launch!(g, "fused_residual_layernorm_forward",
            norm::fused_residual_layernorm_forward_launch(n);
            res, out, mean, rstd, a, b, w, bias, &ni, &ci, &EPS);
    };
    for (n, c) in NORM_SIZES {
        let a = r.normal(n * c, 1.0, 0.3);
        let b = r.normal(n * c, 1.5, -0.1);
        let w = r.normal(c, 1.0, 1.0);
        let bias = r.normal(c, 1.0, 0.0);
        let (mut res, mut out) = (g.nan(n * c), g.nan(n * c));
        let (mut mean, mut rstd) = (g.nan(n), g.nan(n));
        let (da, db, dw, dbias) = (g.up(&a), g.up(&b), g.up(&w), g.up(&bias));
        run(
            &g, &mut res, &mut out, &mut mean, &mut rstd, &da, &db, &dw, &dbias, n, c,
        );
        let mut want_res = vec![f32::NAN; n * c];
        cpu::add(&mut want_res, &a, &b);
        let mut want = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(
            &mut want.0,
            &mut want.1,
            &mut want.2,
            &want_res,
            &w,
            &bias,
            n,
            c,
            EPS,
        );
        let tag = format!("fused_residual_layernorm_forward n={n} c={c}");
        r.check(&format!("{tag} residual"), &g.down(&res), &want_res, TOL);
        r.check(&format!("{tag} out"), &g.down(&out), &want.0, TOL);
        r.check(&format!("{tag} mean"), &g.down(&mean), &want.1, TOL);
        r.check(&format!("{tag} rstd"), &g.down(&rstd), &want.2, TOL);
    }
    let (n, c) = (B * T, C);
    let (a, b) = (g.up(&pattern(n * c, 1)), g.up(&pattern(n * c, 2)));
    let (w, bias) = (g.up(&pattern(c, 3)), g.up(&pattern(c, 4)));
    let (mut res, mut out) = (g.nan(n * c), g.nan(n * c));
    let (mut mean, mut rstd) = (g.nan(n), g.nan(n));
    let ms = g.time_ms(|| {
        run(
            &g, &mut res, &mut out, &mut mean, &mut rstd, &a, &b, &w, &bias, n, c,
        )
    });
    report(
        &mut r,
        "fused_residual_layernorm_forward",
        ms,
        &format!("n={n} c={c}"),
    );
}

// ----------------------------------------------------------------------------
// cross-entropy

/// `cross_entropy_forward` (per-row losses into `losses`) then `mean_reduce` into `loss`.
fn gpu_cross_entropy_forward(
    g: &Gpu,
    loss: &mut CudaSlice<f32>,
    losses: &mut CudaSlice<f32>,
    lse: &mut CudaSlice<f32>,
    logits: &CudaSlice<f32>,
    targets: &CudaSlice<i32>,
    n: usize,
    v: usize,
    vp: usize,
) {
    let (ni, vi, vpi) = (int(n), int(v), int(vp));
    launch!(g, "cross_entropy_forward", loss::cross_entropy_forward_launch(n);
        &mut *losses, lse, logits, targets, &ni, &vi, &vpi);
    launch!(g, "mean_reduce", loss::mean_reduce_launch(); loss, &*losses, &ni);
}

fn gpu_cross_entropy_backward(
    g: &Gpu,
    dlogits: &mut CudaSlice<f32>,
    logits: &CudaSlice<f32>,
    lse: &CudaSlice<f32>,
    targets: &CudaSlice<i32>,
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    let (ni, vi, vpi) = (int(n), int(v), int(vp));
    launch!(g, "cross_entropy_backward", loss::cross_entropy_backward_launch(n);
        dlogits, logits, lse, targets, &dloss, &ni, &vi, &vpi);
}

#[test]
fn cross_entropy_forward_backward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    // (n, v, vp): padded and unpadded rows, rows shorter and longer than a block.
    for (n, v, vp) in [
        (1, 1, 1),
        (3, 10, 16),
        (37, 300, 301),
        (64, 5000, 5056),
        (5, 50257, 50304),
    ] {
        let logits = r.normal(n * vp, 3.0, 0.0);
        let targets = r.ids(n, v);
        let d_logits = g.up(&logits);
        let d_targets = g.up(&ids_i32(&targets));
        let (mut loss, mut losses, mut lse) = (g.nan(1), g.nan(n), g.nan(n));
        gpu_cross_entropy_forward(
            &g,
            &mut loss,
            &mut losses,
            &mut lse,
            &d_logits,
            &d_targets,
            n,
            v,
            vp,
        );
        let (mut want_loss, mut want_lse) = (vec![f32::NAN; 1], vec![f32::NAN; n]);
        cpu::cross_entropy_forward(&mut want_loss, &mut want_lse, &logits, &targets, n, v, vp);
        let tag = format!("cross_entropy n={n} v={v} vp={vp}");
        r.check(&format!("{tag} loss"), &g.down(&loss), &want_loss, TOL_FAST);
        r.check(&format!("{tag} lse"), &g.down(&lse), &want_lse, TOL_FAST);

        let dloss = 1.7f32;
        let mut dlogits = g.nan(n * vp);
        gpu_cross_entropy_backward(
            &g,
            &mut dlogits,
            &d_logits,
            &lse,
            &d_targets,
            dloss,
            n,
            v,
            vp,
        );
        let mut want = vec![f32::NAN; n * vp];
        cpu::cross_entropy_backward(&mut want, &logits, &want_lse, &targets, dloss, n, v, vp);
        r.check(
            &format!("{tag} dlogits"),
            &g.down(&dlogits),
            &want,
            TOL_FAST,
        );
    }
    let n = B * T;
    let logits = g.up(&pattern(n * VP, 1));
    let targets: Vec<i32> = (0..n).map(|i| ((i * 7919) % V) as i32).collect();
    let targets = g.up(&targets);
    let (mut loss, mut losses, mut lse) = (g.nan(1), g.nan(n), g.nan(n));
    let ms = g.time_ms(|| {
        gpu_cross_entropy_forward(
            &g,
            &mut loss,
            &mut losses,
            &mut lse,
            &logits,
            &targets,
            n,
            V,
            VP,
        )
    });
    report(
        &mut r,
        "cross_entropy_forward+mean",
        ms,
        &format!("n={n} v={V} vp={VP}"),
    );
    let mut dlogits = g.nan(n * VP);
    let ms = g.time_ms(|| {
        gpu_cross_entropy_backward(&g, &mut dlogits, &logits, &lse, &targets, 1.0, n, V, VP)
    });
    report(
        &mut r,
        "cross_entropy_backward",
        ms,
        &format!("n={n} v={V} vp={VP}"),
    );
}

// ----------------------------------------------------------------------------
// optimizer and reductions

struct AdamState {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl AdamState {
    fn random(r: &mut Inputs, n: usize) -> Self {
        AdamState {
            params: r.normal(n, 1.0, 0.0),
            m: r.normal(n, 0.1, 0.0),
            v: r.normal(n, 0.01, 0.0).iter().map(|x| x.abs()).collect(),
        }
    }
}

const LR: f32 = 3e-4;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.95;
const ADAM_EPS: f32 = 1e-8;

fn gpu_adamw(
    g: &Gpu,
    p: &mut CudaSlice<f32>,
    grads: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    n: usize,
    wd: f32,
    step: u64,
    grad_scale: f32,
) {
    let (bc1, bc2) = optim::adamw_bias_corrections(BETA1, BETA2, step);
    let nl = long(n);
    launch!(g, "adamw", optim::adamw_launch(n);
        p, grads, m, v, &nl, &LR, &BETA1, &BETA2, &ADAM_EPS, &wd, &bc1, &bc2, &grad_scale);
}

#[test]
fn adamw_matches_cpu() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in [1, 7, 1000, 65_537, 1_000_003] {
        let mut s = AdamState::random(&mut r, n);
        let (mut p, mut m, mut v) = (g.up(&s.params), g.up(&s.m), g.up(&s.v));
        for step in 1..=3u64 {
            let grads = r.normal(n, 1.0, 0.0);
            gpu_adamw(&g, &mut p, &g.up(&grads), &mut m, &mut v, n, 0.1, step, 0.5);
            cpu::adamw(
                &mut s.params,
                &grads,
                &mut s.m,
                &mut s.v,
                LR,
                BETA1,
                BETA2,
                ADAM_EPS,
                0.1,
                step,
                0.5,
            );
            let tag = format!("adamw n={n} step={step}");
            r.check(&format!("{tag} params"), &g.down(&p), &s.params, TOL);
            r.check(&format!("{tag} m"), &g.down(&m), &s.m, TOL);
            r.check(&format!("{tag} v"), &g.down(&v), &s.v, TOL);
        }
    }
    let n = PARAMS;
    let (mut p, grads) = (g.up(&pattern(n, 1)), g.up(&pattern(n, 2)));
    let (mut m, mut v) = (g.up(&vec![0.0f32; n]), g.up(&vec![0.0f32; n]));
    let ms = g.time_ms(|| gpu_adamw(&g, &mut p, &grads, &mut m, &mut v, n, 0.1, 10, 1.0));
    report(&mut r, "adamw", ms, &format!("n={n}"));
}

/// `adamw_multi` (f32 params) or `adamw_multi_bf16` (f32 masters + bf16 params) over the
/// per-tensor tables `ends` (i64) and `decays`.
fn gpu_adamw_multi(
    g: &Gpu,
    p: &mut CudaSlice<f32>,
    bf16: Option<&mut CudaSlice<u16>>,
    grads: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    ends: &CudaSlice<i64>,
    decays: &CudaSlice<f32>,
    n: usize,
    step: u64,
    grad_scale: f32,
) {
    let (bc1, bc2) = optim::adamw_bias_corrections(BETA1, BETA2, step);
    let nl = long(n);
    let tensors = int(ends.len());
    let d = optim::adamw_multi_launch(n);
    match bf16 {
        None => launch!(g, "adamw_multi", d;
            p, grads, m, v, &nl, ends, decays, &tensors,
            &LR, &BETA1, &BETA2, &ADAM_EPS, &bc1, &bc2, &grad_scale),
        Some(bf16) => launch!(g, "adamw_multi_bf16", d;
            p, bf16, grads, m, v, &nl, ends, decays, &tensors,
            &LR, &BETA1, &BETA2, &ADAM_EPS, &bc1, &bc2, &grad_scale),
    }
}

#[test]
fn adamw_multi_and_bf16_match_cpu_per_tensor() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let many: Vec<(usize, f32)> = (0..150)
        .map(|k| {
            (
                r.rng.below(400) as usize,
                if k % 2 == 0 { 0.1 } else { 0.0 },
            )
        })
        .collect();
    let layouts = [
        vec![(7, 0.1), (1, 0.0), (100, 0.1), (33, 0.0), (1000, 0.1)],
        vec![(1, 0.0), (0, 0.1), (513, 0.05), (256, 0.0), (2, 0.1)],
        many,
    ];
    for groups in &layouts {
        let (ends, decays, n) = optim::adamw_multi_tables(groups);
        let (d_ends, d_decays) = (g.up(&ends), g.up(&decays));
        for with_bf16 in [false, true] {
            let mut s = AdamState::random(&mut r, n);
            let (mut p, mut m, mut v) = (g.up(&s.params), g.up(&s.m), g.up(&s.v));
            let mut bits = g.up(&vec![0xffffu16; n]);
            for step in 1..=3u64 {
                let grads = r.normal(n, 1.0, 0.0);
                let bf16 = if with_bf16 { Some(&mut bits) } else { None };
                gpu_adamw_multi(
                    &g,
                    &mut p,
                    bf16,
                    &g.up(&grads),
                    &mut m,
                    &mut v,
                    &d_ends,
                    &d_decays,
                    n,
                    step,
                    0.5,
                );
                let mut start = 0;
                for &(len, wd) in groups {
                    let rg = start..start + len;
                    cpu::adamw(
                        &mut s.params[rg.clone()],
                        &grads[rg.clone()],
                        &mut s.m[rg.clone()],
                        &mut s.v[rg],
                        LR,
                        BETA1,
                        BETA2,
                        ADAM_EPS,
                        wd,
                        step,
                        0.5,
                    );
                    start += len;
                }
                let name = if with_bf16 {
                    "adamw_multi_bf16"
                } else {
                    "adamw_multi"
                };
                let tag = format!("{name} tensors={} n={n} step={step}", groups.len());
                let got = g.down(&p);
                r.check(&format!("{tag} params"), &got, &s.params, TOL);
                r.check(&format!("{tag} m"), &g.down(&m), &s.m, TOL);
                r.check(&format!("{tag} v"), &g.down(&v), &s.v, TOL);
                if with_bf16 {
                    assert!(
                        g.down(&bits) == matmul::to_bf16(&got),
                        "{tag}: bf16 params are not the rounded masters (seed {})",
                        r.seed
                    );
                }
            }
        }
    }
    // GPT-2 124M-like layout: 12 layers of (ln 2×768, qkv, proj, fc, fc proj, biases) + wte/wpe.
    let mut groups = vec![(VP * C, 0.1f32), (1024 * C, 0.1)];
    for _ in 0..12 {
        groups.extend([
            (C, 0.0),
            (C, 0.0),
            (3 * C * C, 0.1),
            (3 * C, 0.0),
            (C * C, 0.1),
            (C, 0.0),
            (C, 0.0),
            (C, 0.0),
            (4 * C * C, 0.1),
            (4 * C, 0.0),
            (4 * C * C, 0.1),
            (C, 0.0),
        ]);
    }
    groups.extend([(C, 0.0), (C, 0.0)]);
    let (ends, decays, n) = optim::adamw_multi_tables(&groups);
    let (d_ends, d_decays) = (g.up(&ends), g.up(&decays));
    let (mut p, grads) = (g.up(&pattern(n, 1)), g.up(&pattern(n, 2)));
    let (mut m, mut v) = (g.up(&vec![0.0f32; n]), g.up(&vec![0.0f32; n]));
    let mut bits = g.up(&vec![0u16; n]);
    let bench = format!("n={n} tensors={}", groups.len());
    let ms = g.time_ms(|| {
        gpu_adamw_multi(
            &g, &mut p, None, &grads, &mut m, &mut v, &d_ends, &d_decays, n, 10, 1.0,
        )
    });
    report(&mut r, "adamw_multi", ms, &bench);
    let ms = g.time_ms(|| {
        gpu_adamw_multi(
            &g,
            &mut p,
            Some(&mut bits),
            &grads,
            &mut m,
            &mut v,
            &d_ends,
            &d_decays,
            n,
            10,
            1.0,
        )
    });
    report(&mut r, "adamw_multi_bf16", ms, &bench);
}

fn gpu_sum_squares(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    partials: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    n: usize,
) {
    let d = optim::sum_squares_partial_launch(n);
    let (nl, num) = (long(n), d.grid.x as i32);
    launch!(g, "sum_squares_partial", d; &mut *partials, x, &nl);
    launch!(g, "sum_squares_final", optim::sum_squares_final_launch(); out, &*partials, &num);
}

#[test]
fn sum_squares_matches_cpu() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in [1, 3, 255, 257, 100_000, 1_000_003, 10_000_019] {
        let x = r.normal(n, 1.0, 0.1);
        let (mut out, mut partials) = (
            g.nan(1),
            g.nan(optim::sum_squares_partial_launch(n).grid.x as usize),
        );
        gpu_sum_squares(&g, &mut out, &mut partials, &g.up(&x), n);
        let want = cpu::sum_squares(&x) as f32;
        r.check(&format!("sum_squares n={n}"), &g.down(&out), &[want], TOL);
    }
    let n = PARAMS;
    let x = g.up(&pattern(n, 1));
    let (mut out, mut partials) = (
        g.nan(1),
        g.nan(optim::sum_squares_partial_launch(n).grid.x as usize),
    );
    let ms = g.time_ms(|| gpu_sum_squares(&g, &mut out, &mut partials, &x, n));
    report(&mut r, "sum_squares", ms, &format!("n={n}"));
}

fn gpu_sum_rows(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    partials: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    m: usize,
    n: usize,
) {
    let p = reduce::sum_rows_partial_launch(m, n);
    let (mi, ni, chunks) = (int(m), int(n), p.grid.y as i32);
    launch!(g, "sum_rows_partial", p; &mut *partials, x, &mi, &ni);
    launch!(g, "sum_rows_final", reduce::sum_rows_final_launch(n); out, &*partials, &chunks, &ni);
}

#[test]
fn sum_rows_matches_cpu() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (m, n) in [
        (1, 1),
        (3, 33),
        (65, 7),
        (1000, 768),
        (8192, 31),
        (4097, 2304),
    ] {
        let x = r.normal(m * n, 1.0, 0.2);
        let (mut out, mut partials) = (g.nan(n), g.nan(reduce::sum_rows_scratch_len(m, n)));
        gpu_sum_rows(&g, &mut out, &mut partials, &g.up(&x), m, n);
        let mut want = vec![f32::NAN; n];
        cpu::sum_rows(&mut want, &x, m, n);
        r.check(&format!("sum_rows m={m} n={n}"), &g.down(&out), &want, TOL);
    }
    let (m, n) = (B * T, 4 * C);
    let x = g.up(&pattern(m * n, 1));
    let (mut out, mut partials) = (g.nan(n), g.nan(reduce::sum_rows_scratch_len(m, n)));
    let ms = g.time_ms(|| gpu_sum_rows(&g, &mut out, &mut partials, &x, m, n));
    report(&mut r, "sum_rows", ms, &format!("m={m} n={n}"));
}

// ----------------------------------------------------------------------------
// embeddings

fn gpu_embedding_forward(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    tokens: &CudaSlice<i32>,
    wte: &CudaSlice<f32>,
    wpe: &CudaSlice<f32>,
    b: usize,
    t: usize,
    c: usize,
) {
    let (bi, ti, ci) = (int(b), int(t), int(c));
    launch!(g, "embedding_forward", loss::embedding_forward_launch(b, t, c);
        out, tokens, wte, wpe, &bi, &ti, &ci);
}

/// Device copies of `loss::token_buckets(tokens, vocab)`: offsets, bucket tokens, positions.
struct Buckets {
    offsets: CudaSlice<i32>,
    tokens: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    count: usize,
}

impl Buckets {
    fn new(g: &Gpu, tokens: &[u32], vocab: usize) -> Self {
        let (offsets, bucket_tokens, positions) = loss::token_buckets(tokens, vocab);
        Buckets {
            count: bucket_tokens.len(),
            offsets: g.up(&offsets),
            tokens: g.up(&bucket_tokens),
            positions: g.up(&positions),
        }
    }
}

/// `fill` zeroes all of `dwte` and `dwpe` (the wpe kernel then writes the first `t` rows),
/// then the wte and wpe kernels.
fn gpu_embedding_backward(
    g: &Gpu,
    dwte: &mut CudaSlice<f32>,
    dwpe: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    buckets: &Buckets,
    b: usize,
    t: usize,
    c: usize,
) {
    let zero = 0.0f32;
    let (wte_len, wpe_len) = (long(dwte.len()), long(dwpe.len()));
    launch!(g, "fill", loss::fill_launch(dwte.len()); &mut *dwte, &zero, &wte_len);
    launch!(g, "fill", loss::fill_launch(dwpe.len()); &mut *dwpe, &zero, &wpe_len);
    let (bi, ti, ci, nb) = (int(b), int(t), int(c), int(buckets.count));
    launch!(g, "embedding_backward_wte", loss::embedding_backward_wte_launch(buckets.count, c);
        dwte, dout, &buckets.offsets, &buckets.tokens, &buckets.positions, &nb, &ci);
    launch!(g, "embedding_backward_wpe", loss::embedding_backward_wpe_launch(t, c);
        dwpe, dout, &bi, &ti, &ci);
}

#[test]
fn embedding_forward_backward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    // (b, t, c, vocab, max_t): few tokens (many repeats) and many; c below and above a block.
    for (b, t, c, vocab, max_t) in [
        (1, 1, 1, 1, 1),
        (2, 5, 33, 3, 7),
        (3, 17, 100, 1000, 20),
        (4, 64, 768, 50, 64),
        (2, 129, 300, 5000, 200),
    ] {
        let tokens = r.ids(b * t, vocab);
        let wte = r.normal(vocab * c, 1.0, 0.0);
        let wpe = r.normal(max_t * c, 1.0, 0.0);
        let d_tokens = g.up(&ids_i32(&tokens));
        let mut out = g.nan(b * t * c);
        gpu_embedding_forward(&g, &mut out, &d_tokens, &g.up(&wte), &g.up(&wpe), b, t, c);
        let mut want = vec![f32::NAN; b * t * c];
        cpu::embedding_forward(&mut want, &tokens, &wte, &wpe, b, t, c);
        let tag = format!("embedding b={b} t={t} c={c} vocab={vocab}");
        r.check(&format!("{tag} forward"), &g.down(&out), &want, TOL);

        let dout = r.normal(b * t * c, 1.0, 0.0);
        let (mut dwte, mut dwpe) = (g.nan(vocab * c), g.nan(max_t * c));
        let buckets = Buckets::new(&g, &tokens, vocab);
        gpu_embedding_backward(&g, &mut dwte, &mut dwpe, &g.up(&dout), &buckets, b, t, c);
        let (mut want_wte, mut want_wpe) = (vec![f32::NAN; vocab * c], vec![f32::NAN; max_t * c]);
        cpu::embedding_backward(&mut want_wte, &mut want_wpe, &dout, &tokens, b, t, c);
        r.check(&format!("{tag} dwte"), &g.down(&dwte), &want_wte, TOL);
        r.check(&format!("{tag} dwpe"), &g.down(&dwpe), &want_wpe, TOL);
    }
    let tokens: Vec<u32> = (0..B * T).map(|i| ((i * 7919) % V) as u32).collect();
    let d_tokens = g.up(&ids_i32(&tokens));
    let (wte, wpe) = (g.up(&pattern(VP * C, 1)), g.up(&pattern(T * C, 2)));
    let mut out = g.nan(B * T * C);
    let ms = g.time_ms(|| gpu_embedding_forward(&g, &mut out, &d_tokens, &wte, &wpe, B, T, C));
    let bench = format!("b={B} t={T} c={C} vocab={VP}");
    report(&mut r, "embedding_forward", ms, &bench);
    let buckets = Buckets::new(&g, &tokens, VP);
    let (mut dwte, mut dwpe) = (g.nan(VP * C), g.nan(T * C));
    let ms =
        g.time_ms(|| gpu_embedding_backward(&g, &mut dwte, &mut dwpe, &out, &buckets, B, T, C));
    report(&mut r, "embedding_backward(fill+wte+wpe)", ms, &bench);
}

// ----------------------------------------------------------------------------
// matmul

/// One launch of `matmul_bf16` (`T` = u16, bf16 bits; `O` = f32), `matmul_bf16_to_bf16` (`T`
/// = `O` = u16) or `matmul_f32` (`T` = `O` = f32): the same parameter list, `(out, gelu_out, a,
/// b, bias, m, k, n, trans_a, trans_b)`, null for an absent `gelu_out` or `bias`.
fn gpu_matmul<T, O>(
    g: &Gpu,
    name: &str,
    dims: LaunchDims,
    out: &mut CudaSlice<O>,
    gelu_out: Option<&mut CudaSlice<O>>,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let (mi, ki, ni) = (int(m), int(k), int(n));
    let (ta, tb) = (i32::from(trans_a), i32::from(trans_b));
    let null = 0u64; // a null pointer
    match (gelu_out, bias) {
        (Some(gl), Some(bias)) => {
            launch!(g, name, dims; out, gl, a, b, bias, &mi, &ki, &ni, &ta, &tb)
        }
        (Some(gl), None) => launch!(g, name, dims; out, gl, a, b, &null, &mi, &ki, &ni, &ta, &tb),
        (None, Some(bias)) => {
            launch!(g, name, dims; out, &null, a, b, bias, &mi, &ki, &ni, &ta, &tb)
        }
        (None, None) => launch!(g, name, dims; out, &null, a, b, &null, &mi, &ki, &ni, &ta, &tb),
    }
}

fn gpu_matmul_bf16(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    gelu_out: Option<&mut CudaSlice<f32>>,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let d = matmul::matmul_bf16_launch(m, n);
    gpu_matmul(
        g,
        "matmul_bf16",
        d,
        out,
        gelu_out,
        a,
        b,
        bias,
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
}

fn gpu_matmul_bf16_to_bf16(
    g: &Gpu,
    out: &mut CudaSlice<u16>,
    gelu_out: Option<&mut CudaSlice<u16>>,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let d = matmul::matmul_bf16_launch(m, n);
    gpu_matmul(
        g,
        "matmul_bf16_to_bf16",
        d,
        out,
        gelu_out,
        a,
        b,
        bias,
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
}

fn gpu_matmul_f32(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    gelu_out: Option<&mut CudaSlice<f32>>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let d = smelt::backend::emu::matmul_f32::matmul_f32_launch(m, n);
    gpu_matmul(
        g,
        "matmul_f32",
        d,
        out,
        gelu_out,
        a,
        b,
        bias,
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
}

/// |op(a)|·|op(b)| + |bias|: the magnitude of the terms each matmul output sums. Matmul errors
/// are measured against it (`check_scaled`), not against the result, which cancellation can
/// make arbitrarily small (a 1×1×1 product plus a bias of opposite sign), so they cannot flake.
fn matmul_scale(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f32> {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let bias = bias.map(abs);
    let mut scale = vec![f32::NAN; m * n];
    cpu::matmul(
        &mut scale,
        &abs(a),
        &abs(b),
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    scale
}

/// ‖got − want‖ / ‖scale‖ (‖got − want‖ when scale is zero) asserted below `tol`, as
/// `Inputs::check` (printed, kept in `max_err`) but relative to `matmul_scale`.
fn check_scaled(
    r: &mut Inputs,
    what: &str,
    got: &[f32],
    want: &[f32],
    scale: &[f32],
    tol: f64,
) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
        .sum();
    let norm: f64 = scale.iter().map(|&s| (s as f64).powi(2)).sum();
    let err = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    eprintln!("{what}: relative error {err:.3e}");
    assert!(
        err < tol,
        "{what}: relative error {err:e} >= {tol:e} (seed {})",
        r.seed
    );
    r.max_err = r.max_err.max(err);
    err
}

/// (m, k, n) of the matmul parity checks: single elements, partial tiles everywhere, k not a
/// multiple of 8, 16 or 32, one exact tile, and a GPT-2 size.
const MATMUL_SIZES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (17, 33, 65),
    (64, 64, 64),
    (130, 200, 97),
    (3, 7, 5),
    (37, 19, 53),
    (256, 768, 2304),
];
const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

#[test]
fn matmul_bf16_all_transposes() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (m, k, n) in MATMUL_SIZES {
        for (trans_a, trans_b) in TRANSPOSES {
            for with_bias in [false, true] {
                let a = r.normal(m * k, 1.0, 0.0);
                let b = r.normal(k * n, 1.0, 0.0);
                let bias = r.normal(n, 1.0, 0.0);
                let (da, db) = (g.up(&matmul::to_bf16(&a)), g.up(&matmul::to_bf16(&b)));
                let d_bias = g.up(&bias);
                let mut out = g.nan(m * n);
                let gb = with_bias.then_some(&d_bias);
                gpu_matmul_bf16(&g, &mut out, None, &da, &db, gb, m, k, n, trans_a, trans_b);
                let mut want = vec![f32::NAN; m * n];
                let cb = with_bias.then_some(&bias[..]);
                cpu::matmul(&mut want, &a, &b, cb, m, k, n, trans_a, trans_b);
                let scale = matmul_scale(&a, &b, cb, m, k, n, trans_a, trans_b);
                let tag = format!(
                    "matmul_bf16 m={m} k={k} n={n} ta={trans_a} tb={trans_b} bias={with_bias}"
                );
                check_scaled(&mut r, &tag, &g.down(&out), &want, &scale, TOL_BF16);
            }
        }
    }
    // GPT-2 shapes: the qkv projection forward (bias) and its two backward matmuls.
    let (bt, c) = (B * T, C);
    for (m, k, n, trans_a, trans_b, name) in [
        (bt, c, 3 * c, false, false, "matmul_bf16 NN"),
        (bt, 3 * c, c, false, true, "matmul_bf16 NT"),
        (c, bt, 3 * c, true, false, "matmul_bf16 TN"),
        (c, 3 * c, bt, true, true, "matmul_bf16 TT"),
    ] {
        let a = g.up(&matmul::to_bf16(&pattern(m * k, 1)));
        let b = g.up(&matmul::to_bf16(&pattern(k * n, 2)));
        let bias = g.up(&pattern(n, 3));
        let mut out = g.nan(m * n);
        let ms = g.time_ms(|| {
            gpu_matmul_bf16(
                &g,
                &mut out,
                None,
                &a,
                &b,
                Some(&bias),
                m,
                k,
                n,
                trans_a,
                trans_b,
            )
        });
        let tflops = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
        // The error column of every timed shape is the largest over all parity sizes above.
        let keep = r.max_err;
        report(
            &mut r,
            name,
            ms,
            &format!("m={m} k={k} n={n} {tflops:.1}TFLOP/s"),
        );
        r.max_err = keep;
    }
}

/// The GELU epilogue of `matmul_bf16` (with and without bias, all transposes): `out` against
/// the f32 CPU matmul of the unrounded inputs (1e-2), `gelu_out` against the CPU GELU of it
/// (1e-2); timed on GPT-2's MLP fc layer (out = pre-activation, gelu_out = activation).
#[test]
fn matmul_bf16_gelu_epilogue() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (m, k, n) in MATMUL_SIZES {
        for (trans_a, trans_b) in TRANSPOSES {
            for with_bias in [false, true] {
                let a = r.normal(m * k, 1.0, 0.0);
                let b = r.normal(k * n, 1.0, 0.0);
                let bias = r.normal(n, 1.0, 0.0);
                let (da, db) = (g.up(&matmul::to_bf16(&a)), g.up(&matmul::to_bf16(&b)));
                let d_bias = g.up(&bias);
                let (mut out, mut gelu) = (g.nan(m * n), g.nan(m * n));
                let gb = with_bias.then_some(&d_bias);
                gpu_matmul_bf16(
                    &g,
                    &mut out,
                    Some(&mut gelu),
                    &da,
                    &db,
                    gb,
                    m,
                    k,
                    n,
                    trans_a,
                    trans_b,
                );
                let mut want = vec![f32::NAN; m * n];
                let cb = with_bias.then_some(&bias[..]);
                cpu::matmul(&mut want, &a, &b, cb, m, k, n, trans_a, trans_b);
                let mut want_gelu = vec![f32::NAN; m * n];
                cpu::gelu_forward(&mut want_gelu, &want);
                let scale = matmul_scale(&a, &b, cb, m, k, n, trans_a, trans_b);
                let tag = format!(
                    "matmul_bf16+gelu m={m} k={k} n={n} ta={trans_a} tb={trans_b} \
                     bias={with_bias}"
                );
                check_scaled(
                    &mut r,
                    &format!("{tag} out"),
                    &g.down(&out),
                    &want,
                    &scale,
                    TOL_BF16,
                );
                check_scaled(
                    &mut r,
                    &format!("{tag} gelu_out"),
                    &g.down(&gelu),
                    &want_gelu,
                    &scale,
                    TOL_BF16,
                );
            }
        }
    }
    let (m, k, n) = (B * T, C, 4 * C);
    let a = g.up(&matmul::to_bf16(&pattern(m * k, 1)));
    let b = g.up(&matmul::to_bf16(&pattern(k * n, 2)));
    let bias = g.up(&pattern(n, 3));
    let (mut out, mut gelu) = (g.nan(m * n), g.nan(m * n));
    let ms = g.time_ms(|| {
        gpu_matmul_bf16(
            &g,
            &mut out,
            Some(&mut gelu),
            &a,
            &b,
            Some(&bias),
            m,
            k,
            n,
            false,
            false,
        )
    });
    let tflops = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
    report(
        &mut r,
        "matmul_bf16+gelu NN",
        ms,
        &format!("m={m} k={k} n={n} {tflops:.1}TFLOP/s"),
    );
}

/// `matmul_bf16_to_bf16` (bf16 outputs; all transposes, with and without bias and GELU
/// epilogue): `out` against the f64 CPU matmul of the same bf16 inputs rounded to bf16, and
/// `gelu_out` against the f64 GELU of it rounded to bf16 (1e-2 both); timed on GPT-2's MLP fc
/// layer (+ gelu) and qkv projection.
#[test]
fn matmul_bf16_to_bf16_all_transposes() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let round = |v: &[f64]| -> Vec<f32> {
        v.iter()
            .map(|&x| matmul::bf16_to_f32(matmul::f32_to_bf16(x as f32)))
            .collect()
    };
    let widen = |v: &[u16]| -> Vec<f32> { v.iter().map(|&x| matmul::bf16_to_f32(x)).collect() };
    for (m, k, n) in MATMUL_SIZES {
        for (trans_a, trans_b) in TRANSPOSES {
            for (with_bias, with_gelu) in [(false, false), (true, false), (true, true)] {
                let a16 = matmul::to_bf16(&r.normal(m * k, 1.0, 0.0));
                let b16 = matmul::to_bf16(&r.normal(k * n, 1.0, 0.0));
                let bias = r.normal(n, 1.0, 0.0);
                let (da, db, d_bias) = (g.up(&a16), g.up(&b16), g.up(&bias));
                let nan16 = vec![0x7fc1u16; m * n];
                let (mut out, mut gelu) = (g.up(&nan16), g.up(&nan16));
                let gb = with_bias.then_some(&d_bias);
                let gl = with_gelu.then_some(&mut gelu);
                gpu_matmul_bf16_to_bf16(&g, &mut out, gl, &da, &db, gb, m, k, n, trans_a, trans_b);
                let (a32, b32) = (widen(&a16), widen(&b16));
                let up64 = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
                let bias64 = up64(&bias);
                let mut want64 = vec![f64::NAN; m * n];
                let cb64 = with_bias.then_some(&bias64[..]);
                let (a64, b64) = (up64(&a32), up64(&b32));
                cpu::matmul(&mut want64, &a64, &b64, cb64, m, k, n, trans_a, trans_b);
                let cb = with_bias.then_some(&bias[..]);
                let scale = matmul_scale(&a32, &b32, cb, m, k, n, trans_a, trans_b);
                let tag = format!(
                    "matmul_bf16_to_bf16 m={m} k={k} n={n} ta={trans_a} tb={trans_b} \
                     bias={with_bias} gelu={with_gelu}"
                );
                let got = widen(&g.down(&out));
                check_scaled(&mut r, &tag, &got, &round(&want64), &scale, TOL_BF16);
                let got_gelu = widen(&g.down(&gelu));
                if with_gelu {
                    let mut want_gelu64 = vec![f64::NAN; m * n];
                    cpu::gelu_forward(&mut want_gelu64, &want64);
                    let tag = format!("{tag} gelu_out");
                    let want_gelu = round(&want_gelu64);
                    check_scaled(&mut r, &tag, &got_gelu, &want_gelu, &scale, TOL_BF16);
                } else {
                    assert!(
                        got_gelu.iter().all(|v| v.is_nan()),
                        "{tag}: gelu_out written without being asked"
                    );
                }
            }
        }
    }
    let (bt, c) = (B * T, C);
    let keep = r.max_err;
    for (m, k, n, with_gelu, name) in [
        (bt, c, 3 * c, false, "matmul_bf16_to_bf16 NN"),
        (bt, c, 4 * c, true, "matmul_bf16_to_bf16+gelu NN"),
    ] {
        let a = g.up(&matmul::to_bf16(&pattern(m * k, 1)));
        let b = g.up(&matmul::to_bf16(&pattern(k * n, 2)));
        let bias = g.up(&pattern(n, 3));
        let zeros = vec![0u16; m * n];
        let (mut out, mut gelu) = (g.up(&zeros), g.up(&zeros));
        let ms = g.time_ms(|| {
            let gl = with_gelu.then_some(&mut gelu);
            gpu_matmul_bf16_to_bf16(&g, &mut out, gl, &a, &b, Some(&bias), m, k, n, false, false)
        });
        let tflops = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
        r.max_err = keep;
        report(
            &mut r,
            name,
            ms,
            &format!("m={m} k={k} n={n} {tflops:.1}TFLOP/s"),
        );
    }
}

/// `matmul_f32` (all transposes, with and without bias and GELU epilogue) against the f32 CPU
/// matmul: 1e-5 for `out`, 1e-4 for `gelu_out` (`--use_fast_math`'s expf); timed on GPT-2's qkv
/// projection and MLP fc layer (+ gelu).
#[test]
fn matmul_f32_all_transposes() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (m, k, n) in MATMUL_SIZES {
        for (trans_a, trans_b) in TRANSPOSES {
            for (with_bias, with_gelu) in [(false, false), (true, false), (true, true)] {
                let a = r.normal(m * k, 1.0, 0.0);
                let b = r.normal(k * n, 1.0, 0.0);
                let bias = r.normal(n, 1.0, 0.0);
                let (da, db, d_bias) = (g.up(&a), g.up(&b), g.up(&bias));
                let (mut out, mut gelu) = (g.nan(m * n), g.nan(m * n));
                let gb = with_bias.then_some(&d_bias);
                let gl = with_gelu.then_some(&mut gelu);
                gpu_matmul_f32(&g, &mut out, gl, &da, &db, gb, m, k, n, trans_a, trans_b);
                let mut want = vec![f32::NAN; m * n];
                let cb = with_bias.then_some(&bias[..]);
                cpu::matmul(&mut want, &a, &b, cb, m, k, n, trans_a, trans_b);
                let scale = matmul_scale(&a, &b, cb, m, k, n, trans_a, trans_b);
                let tag = format!(
                    "matmul_f32 m={m} k={k} n={n} ta={trans_a} tb={trans_b} bias={with_bias} \
                     gelu={with_gelu}"
                );
                check_scaled(&mut r, &tag, &g.down(&out), &want, &scale, TOL);
                if with_gelu {
                    let mut want_gelu = vec![f32::NAN; m * n];
                    cpu::gelu_forward(&mut want_gelu, &want);
                    let tag = format!("{tag} gelu_out");
                    check_scaled(&mut r, &tag, &g.down(&gelu), &want_gelu, &scale, TOL_FAST);
                }
            }
        }
    }
    let (bt, c) = (B * T, C);
    let keep = r.max_err;
    for (m, k, n, with_gelu, name) in [
        (bt, c, 3 * c, false, "matmul_f32 NN"),
        (bt, c, 4 * c, true, "matmul_f32+gelu NN"),
    ] {
        let (a, b, bias) = (
            g.up(&pattern(m * k, 1)),
            g.up(&pattern(k * n, 2)),
            g.up(&pattern(n, 3)),
        );
        let (mut out, mut gelu) = (g.nan(m * n), g.nan(m * n));
        let ms = g.time_ms(|| {
            let gl = with_gelu.then_some(&mut gelu);
            gpu_matmul_f32(&g, &mut out, gl, &a, &b, Some(&bias), m, k, n, false, false)
        });
        let tflops = 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
        r.max_err = keep;
        report(
            &mut r,
            name,
            ms,
            &format!("m={m} k={k} n={n} {tflops:.1}TFLOP/s"),
        );
    }
}

// ----------------------------------------------------------------------------
// attention

fn gpu_attention_forward(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    lse: &mut CudaSlice<f32>,
    qkv: &CudaSlice<f32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    launch!(g, "attention_forward", attention::attention_forward_launch(b, t, c, nh);
        out, lse, qkv, &bi, &ti, &ci, &nhi);
}

/// The three backward kernels; `dsum` holds `attention_backward_scratch_len(b, t, nh)` floats.
fn gpu_attention_backward(
    g: &Gpu,
    dqkv: &mut CudaSlice<f32>,
    dsum: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    qkv: &CudaSlice<f32>,
    out: &CudaSlice<f32>,
    lse: &CudaSlice<f32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    launch!(g, "attention_backward_preprocess",
        attention::attention_backward_preprocess_launch(b, t, nh);
        &mut *dsum, dout, out, &bi, &ti, &ci, &nhi);
    launch!(g, "attention_backward_dkdv", attention::attention_backward_dkdv_launch(b, t, c, nh);
        &mut *dqkv, dout, qkv, lse, &*dsum, &bi, &ti, &ci, &nhi);
    launch!(g, "attention_backward_dq", attention::attention_backward_dq_launch(b, t, c, nh);
        dqkv, dout, qkv, lse, &*dsum, &bi, &ti, &ci, &nhi);
}

#[test]
fn attention_forward_backward() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    // (b, t, c, nh): head sizes 4, 3, 4, 32, 64, 64, 128 (over 48 KiB of shared memory), 64;
    // t from 1 to 1024 (partial tiles).
    for (b, t, c, nh) in [
        (1, 1, 4, 1),
        (2, 5, 6, 2),
        (3, 7, 12, 3),
        (2, 33, 64, 2),
        (1, 100, 128, 2),
        (2, 130, 256, 4),
        (1, 45, 256, 2),
        (1, 1024, 768, 12),
    ] {
        let qkv = r.normal(b * t * 3 * c, 1.0, 0.0);
        let d_qkv = g.up(&qkv);
        let (mut out, mut lse) = (g.nan(b * t * c), g.nan(b * nh * t));
        gpu_attention_forward(&g, &mut out, &mut lse, &d_qkv, b, t, c, nh);
        let (mut want_out, mut want_lse) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t]);
        cpu::attention_forward(&mut want_out, &mut want_lse, &qkv, b, t, c, nh);
        let tag = format!("attention b={b} t={t} c={c} nh={nh}");
        r.check(&format!("{tag} out"), &g.down(&out), &want_out, TOL_FAST);
        r.check(&format!("{tag} lse"), &g.down(&lse), &want_lse, TOL_FAST);

        let dout = r.normal(b * t * c, 1.0, 0.0);
        let (mut dqkv, mut dsum) = (
            g.nan(b * t * 3 * c),
            g.nan(attention::attention_backward_scratch_len(b, t, nh)),
        );
        // The backward from the CPU's forward outputs, so that both sides see the same inputs.
        let (d_out, d_lse) = (g.up(&want_out), g.up(&want_lse));
        gpu_attention_backward(
            &g,
            &mut dqkv,
            &mut dsum,
            &g.up(&dout),
            &d_qkv,
            &d_out,
            &d_lse,
            b,
            t,
            c,
            nh,
        );
        let mut want = vec![f32::NAN; b * t * 3 * c];
        cpu::attention_backward(&mut want, &dout, &qkv, &want_out, &want_lse, b, t, c, nh);
        r.check(&format!("{tag} dqkv"), &g.down(&dqkv), &want, TOL_FAST);
    }
    let (b, t, c, nh) = (B, T, C, NH);
    let bench = format!("b={b} t={t} c={c} nh={nh}");
    let qkv = g.up(&pattern(b * t * 3 * c, 1));
    let (mut out, mut lse) = (g.nan(b * t * c), g.nan(b * nh * t));
    let ms = g.time_ms(|| gpu_attention_forward(&g, &mut out, &mut lse, &qkv, b, t, c, nh));
    report(&mut r, "attention_forward", ms, &bench);
    let dout = g.up(&pattern(b * t * c, 2));
    let (mut dqkv, mut dsum) = (
        g.nan(b * t * 3 * c),
        g.nan(attention::attention_backward_scratch_len(b, t, nh)),
    );
    let ms = g.time_ms(|| {
        gpu_attention_backward(
            &g, &mut dqkv, &mut dsum, &dout, &qkv, &out, &lse, b, t, c, nh,
        )
    });
    report(&mut r, "attention_backward(3 kernels)", ms, &bench);
}

/// Prints the summary line of one kernel (what tools/gpu-check.sh collects) and resets the
/// largest error.
fn report(r: &mut Inputs, kernel: &str, ms: f64, bench: &str) {
    println!("GPU-KERNEL\t{kernel}\t{:.3e}\t{ms:.4}\t{bench}", r.max_err);
    r.max_err = 0.0;
}

// ----------------------------------------------------------------------------
// attention backward on tensor cores (kernels/attention_tc_backward.cu)

/// The tensor-core backward: the f32 preprocess (D from the f32 `dout_f`), then the bf16 dK/dV
/// and dQ kernels on the bf16 `dout` and `qkv`; `dsum` holds
/// `attention_backward_scratch_len(b, t, nh)` floats.
fn gpu_attention_backward_bf16(
    g: &Gpu,
    dqkv: &mut CudaSlice<f32>,
    dsum: &mut CudaSlice<f32>,
    dout_f: &CudaSlice<f32>,
    dout: &CudaSlice<u16>,
    qkv: &CudaSlice<u16>,
    out: &CudaSlice<f32>,
    lse: &CudaSlice<f32>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    use smelt::backend::emu::attention_tc;
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    launch!(g, "attention_backward_preprocess",
        attention::attention_backward_preprocess_launch(b, t, nh);
        &mut *dsum, dout_f, out, &bi, &ti, &ci, &nhi);
    launch!(g, "attention_backward_dkdv_bf16",
        attention_tc::attention_backward_dkdv_bf16_launch(b, t, c, nh);
        &mut *dqkv, dout, qkv, lse, &*dsum, &bi, &ti, &ci, &nhi);
    launch!(g, "attention_backward_dq_bf16",
        attention_tc::attention_backward_dq_bf16_launch(b, t, c, nh);
        dqkv, dout, qkv, lse, &*dsum, &bi, &ti, &ci, &nhi);
}

/// `attention_backward_dkdv_bf16` + `attention_backward_dq_bf16` against the f32 CPU backward
/// on the same bf16-rounded `qkv` and `dout` (and the CPU forward's `out`, `lse`): 1e-2 for
/// the whole dqkv and for each of dQ, dK, dV; two runs give the same bits.
#[test]
fn attention_backward_bf16_matches_cpu() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    // (b, t, c, nh): head sizes 64, 16, 64, 112, 128, 64; t from 1 to 1024 (partial tiles).
    for (b, t, c, nh) in [
        (1, 1, 64, 1),
        (2, 37, 48, 3),
        (2, 130, 192, 3),
        (1, 70, 112, 1),
        (1, 100, 256, 2),
        (1, 1024, 768, 12),
    ] {
        let qkv = matmul::to_bf16(&r.normal(b * t * 3 * c, 2.0, 0.0));
        let dout = matmul::to_bf16(&r.normal(b * t * c, 1.0, 0.0));
        let widen = |x: &[u16]| {
            x.iter()
                .map(|&v| matmul::bf16_to_f32(v))
                .collect::<Vec<_>>()
        };
        let (qkv_f, dout_f) = (widen(&qkv), widen(&dout));
        let (mut out, mut lse) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t]);
        cpu::attention_forward(&mut out, &mut lse, &qkv_f, b, t, c, nh);
        let mut want = vec![f32::NAN; b * t * 3 * c];
        cpu::attention_backward(&mut want, &dout_f, &qkv_f, &out, &lse, b, t, c, nh);

        let (d_qkv, d_dout, d_dout_f) = (g.up(&qkv), g.up(&dout), g.up(&dout_f));
        let (d_out, d_lse) = (g.up(&out), g.up(&lse));
        let run = || {
            let (mut dqkv, mut dsum) = (
                g.nan(b * t * 3 * c),
                g.nan(attention::attention_backward_scratch_len(b, t, nh)),
            );
            gpu_attention_backward_bf16(
                &g, &mut dqkv, &mut dsum, &d_dout_f, &d_dout, &d_qkv, &d_out, &d_lse, b, t, c, nh,
            );
            g.down(&dqkv)
        };
        let got = run();
        let tag = format!("attention_backward_bf16 b={b} t={t} c={c} nh={nh}");
        r.same_bits(&tag, &got, &run());
        r.check(&format!("{tag} dqkv"), &got, &want, TOL_BF16);
        // dQ, dK, dV each on its own (not at t = 1: dQ and dK are zero analytically there).
        if t > 1 {
            for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
                let pick = |x: &[f32]| -> Vec<f32> {
                    x.chunks_exact(3 * c)
                        .flat_map(|row| row[part * c..][..c].to_vec())
                        .collect()
                };
                r.check(
                    &format!("{tag} {name}"),
                    &pick(&got),
                    &pick(&want),
                    TOL_BF16,
                );
            }
        }
    }
    let (b, t, c, nh) = (B, T, C, NH);
    let bench = format!("b={b} t={t} c={c} nh={nh}");
    let qkv_f = pattern(b * t * 3 * c, 1);
    let qkv = g.up(&matmul::to_bf16(&qkv_f));
    let dout_h = pattern(b * t * c, 2);
    let (dout, dout_f) = (g.up(&matmul::to_bf16(&dout_h)), g.up(&dout_h));
    let (mut out, mut lse) = (g.nan(b * t * c), g.nan(b * nh * t));
    gpu_attention_forward(&g, &mut out, &mut lse, &g.up(&qkv_f), b, t, c, nh);
    let (mut dqkv, mut dsum) = (
        g.nan(b * t * 3 * c),
        g.nan(attention::attention_backward_scratch_len(b, t, nh)),
    );
    let keep = r.max_err;
    let ms = g.time_ms(|| {
        gpu_attention_backward_bf16(
            &g, &mut dqkv, &mut dsum, &dout_f, &dout, &qkv, &out, &lse, b, t, c, nh,
        )
    });
    report(&mut r, "attention_backward_bf16(3 kernels)", ms, &bench);
    // Each tensor-core kernel alone (D from the runs above), with the same error.
    for name in ["attention_backward_dkdv_bf16", "attention_backward_dq_bf16"] {
        use smelt::backend::emu::attention_tc;
        let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
        let dims = if name.contains("dkdv") {
            attention_tc::attention_backward_dkdv_bf16_launch(b, t, c, nh)
        } else {
            attention_tc::attention_backward_dq_bf16_launch(b, t, c, nh)
        };
        let ms = g.time_ms(
            || launch!(g, name, dims; &mut dqkv, &dout, &qkv, &lse, &dsum, &bi, &ti, &ci, &nhi),
        );
        r.max_err = keep;
        report(&mut r, name, ms, &bench);
    }
}

// ----------------------------------------------------------------------------
// bf16 storage
//
// The `*_bf16` kernels of kernels/{elementwise,layernorm,cross_entropy,embedding,reduce,
// attention}.cu (activations in bf16, parameters, statistics and parameter gradients in f32,
// arithmetic in f32) against the f32 CPU kernels run on the SAME bf16-rounded inputs, as
// tests/emu_bf16_storage.rs checks their emulation: bf16 outputs against the CPU result rounded
// to bf16 (`TOL_BF16`), f32 outputs `TOL` (`TOL_FAST` through exp/log), exact operations (one
// f32 sum rounded once, padded columns, in place vs out of place) bit for bit. bf16 device
// buffers are `CudaSlice<u16>` of bit patterns; bf16 outputs are poisoned with bf16 NaN.

/// bf16 NaN: the poison of bf16 outputs.
const NAN_BF16: u16 = 0xffff;
/// Canary around the element-wise bf16 views (bf16 1234.0), to catch out-of-bounds writes.
const CANARY: u16 = 0x449a;

impl Gpu {
    /// A device buffer of `len` bf16 NaNs.
    fn nan_bf16(&self, len: usize) -> CudaSlice<u16> {
        self.up(&vec![NAN_BF16; len])
    }
}

/// `len` normals (scale, shift) rounded to bf16: the bit patterns and their exact f32 values.
fn bf16_normal(r: &mut Inputs, len: usize, scale: f64, shift: f64) -> (Vec<u16>, Vec<f32>) {
    let bits = matmul::to_bf16(&r.normal(len, scale, shift));
    let vals = widen(&bits);
    (bits, vals)
}

fn widen(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&v| matmul::bf16_to_f32(v)).collect()
}

/// The f32 reference rounded to bf16 and back (what a bf16 output should hold).
fn rounded(x: &[f32]) -> Vec<f32> {
    widen(&matmul::to_bf16(x))
}

/// A bf16 kernel output against the f32 reference rounded to bf16.
fn check_bf16(r: &mut Inputs, what: &str, got: &[u16], want_f32: &[f32]) -> f64 {
    r.check(what, &widen(got), &rounded(want_f32), TOL_BF16)
}

fn assert_bits(r: &Inputs, what: &str, got: &[u16], want: &[u16]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: element {i}: {:#06x} != {:#06x} (seed {})",
            got[i], want[i], r.seed
        );
    }
}

/// A device buffer of `x.len() + 2` bf16 holding `x` from element `off` (0: 16-byte aligned,
/// the kernels' vector path; 1: 2 bytes past, the scalar path), `CANARY` around it.
fn up_at(g: &Gpu, x: &[u16], off: usize) -> CudaSlice<u16> {
    let mut h = vec![CANARY; x.len() + 2];
    h[off..off + x.len()].copy_from_slice(x);
    g.up(&h)
}

/// The `n` elements at `off` of a buffer of [`up_at`], after asserting its canaries.
fn down_at(
    g: &Gpu,
    r: &Inputs,
    what: &str,
    buf: &CudaSlice<u16>,
    off: usize,
    n: usize,
) -> Vec<u16> {
    let h = g.down(buf);
    assert!(
        h[..off].iter().chain(&h[off + n..]).all(|&v| v == CANARY),
        "{what}: wrote outside its output (seed {})",
        r.seed
    );
    h[off..off + n].to_vec()
}

/// Element counts of the bf16 element-wise kernels: `ELEMENTWISE_SIZES` and one past a full
/// grid (`MAX_BLOCKS` blocks, 8 elements per thread), so that the grid-stride loop wraps.
fn bf16_elementwise_sizes() -> [usize; 7] {
    let grid = elementwise::MAX_BLOCKS as usize
        * elementwise::BLOCK as usize
        * elementwise::BF16_PER_THREAD;
    let [a, b, c, d, e, f] = ELEMENTWISE_SIZES;
    [a, b, c, d, e, f, grid + 4099]
}

fn gpu_gelu_forward_bf16(g: &Gpu, out: &mut CudaViewMut<u16>, x: &CudaView<u16>, n: usize) {
    let ni = int(n);
    launch!(g, "gelu_forward_bf16", elementwise::gelu_forward_bf16_launch(n); out, x, &ni);
}

fn gpu_gelu_backward_bf16(
    g: &Gpu,
    dx: &mut CudaViewMut<u16>,
    x: &CudaView<u16>,
    dout: &CudaView<u16>,
    n: usize,
) {
    let ni = int(n);
    launch!(g, "gelu_backward_bf16", elementwise::gelu_backward_bf16_launch(n); dx, x, dout, &ni);
}

fn gpu_add_bf16(
    g: &Gpu,
    out: &mut CudaViewMut<u16>,
    a: &CudaView<u16>,
    b: &CudaView<u16>,
    n: usize,
) {
    let ni = int(n);
    launch!(g, "add_bf16", elementwise::add_bf16_launch(n); out, a, b, &ni);
}

/// `gelu_forward_bf16`, `gelu_backward_bf16`: bf16 outputs 1e-2 against the CPU on the
/// bf16 inputs, on aligned (vector) and 2-byte-offset (scalar) views, no write outside them.
#[test]
fn gelu_forward_backward_bf16() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in bf16_elementwise_sizes() {
        for off in [0, 1] {
            let (x, xf) = bf16_normal(&mut r, n, 2.0, 0.0);
            let d_x = up_at(&g, &x, off);
            let mut out = up_at(&g, &vec![NAN_BF16; n], off);
            let span = off..off + n;
            gpu_gelu_forward_bf16(&g, &mut out.slice_mut(span.clone()), &d_x.slice(span), n);
            let mut want = vec![f32::NAN; n];
            cpu::gelu_forward(&mut want, &xf);
            let what = format!("gelu_forward_bf16 n={n} offset={off}");
            let got = down_at(&g, &r, &what, &out, off, n);
            check_bf16(&mut r, &what, &got, &want);
        }
    }
    let n = B * T * 4 * C;
    let (x, mut out) = (g.up(&matmul::to_bf16(&pattern(n, 1))), g.nan_bf16(n));
    let ms = g.time_ms(|| gpu_gelu_forward_bf16(&g, &mut out.slice_mut(..), &x.slice(..), n));
    report(&mut r, "gelu_forward_bf16", ms, &format!("n={n}"));

    for n in bf16_elementwise_sizes() {
        for off in [0, 1] {
            let (x, xf) = bf16_normal(&mut r, n, 2.0, 0.0);
            let (dout, doutf) = bf16_normal(&mut r, n, 1.0, 0.0);
            let (d_x, d_dout) = (up_at(&g, &x, off), up_at(&g, &dout, off));
            let mut dx = up_at(&g, &vec![NAN_BF16; n], off);
            let span = off..off + n;
            gpu_gelu_backward_bf16(
                &g,
                &mut dx.slice_mut(span.clone()),
                &d_x.slice(span.clone()),
                &d_dout.slice(span),
                n,
            );
            let mut want = vec![f32::NAN; n];
            cpu::gelu_backward(&mut want, &xf, &doutf);
            let what = format!("gelu_backward_bf16 n={n} offset={off}");
            let got = down_at(&g, &r, &what, &dx, off, n);
            check_bf16(&mut r, &what, &got, &want);
        }
    }
    let dout = g.up(&matmul::to_bf16(&pattern(n, 2)));
    let ms = g.time_ms(|| {
        gpu_gelu_backward_bf16(&g, &mut out.slice_mut(..), &x.slice(..), &dout.slice(..), n)
    });
    report(&mut r, "gelu_backward_bf16", ms, &format!("n={n}"));
}

/// `add_bf16`: 1e-2, and bit for bit (one f32 sum rounded once), also with a and b the same
/// buffer; aligned and offset views, no write outside them.
#[test]
fn add_bf16_bit_exact() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for n in bf16_elementwise_sizes() {
        for off in [0, 1] {
            let (a, af) = bf16_normal(&mut r, n, 1.0, 0.0);
            let (b, bf) = bf16_normal(&mut r, n, 3.0, 1.0);
            let (d_a, d_b) = (up_at(&g, &a, off), up_at(&g, &b, off));
            let mut out = up_at(&g, &vec![NAN_BF16; n], off);
            let span = off..off + n;
            gpu_add_bf16(
                &g,
                &mut out.slice_mut(span.clone()),
                &d_a.slice(span.clone()),
                &d_b.slice(span.clone()),
                n,
            );
            let mut want = vec![f32::NAN; n];
            cpu::add(&mut want, &af, &bf);
            let what = format!("add_bf16 n={n} offset={off}");
            let got = down_at(&g, &r, &what, &out, off, n);
            check_bf16(&mut r, &what, &got, &want);
            assert_bits(&r, &what, &got, &matmul::to_bf16(&want));

            let a_view = d_a.slice(span.clone());
            gpu_add_bf16(&g, &mut out.slice_mut(span), &a_view, &a_view, n);
            cpu::add(&mut want, &af, &af);
            let what = format!("{what} a=b");
            let got = down_at(&g, &r, &what, &out, off, n);
            assert_bits(&r, &what, &got, &matmul::to_bf16(&want));
        }
    }
    let n = B * T * C;
    let a = g.up(&matmul::to_bf16(&pattern(n, 1)));
    let b = g.up(&matmul::to_bf16(&pattern(n, 2)));
    let mut out = g.nan_bf16(n);
    let ms = g.time_ms(|| gpu_add_bf16(&g, &mut out.slice_mut(..), &a.slice(..), &b.slice(..), n));
    report(&mut r, "add_bf16", ms, &format!("n={n}"));
}

fn gpu_layernorm_forward_bf16(
    g: &Gpu,
    out: &mut CudaSlice<u16>,
    mean: &mut CudaSlice<f32>,
    rstd: &mut CudaSlice<f32>,
    x: &CudaSlice<u16>,
    w: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    n: usize,
    c: usize,
) {
    let (ni, ci) = (int(n), int(c));
    launch!(g, "layernorm_forward_bf16", norm::layernorm_forward_launch(n);
        out, mean, rstd, x, w, b, &ni, &ci, &EPS);
}

/// `layernorm_backward_bf16` then `layernorm_backward_reduce`; `scratch` holds
/// `layernorm_backward_scratch_len(n, c)` floats.
fn gpu_layernorm_backward_bf16(
    g: &Gpu,
    dx: &mut CudaSlice<u16>,
    dw: &mut CudaSlice<f32>,
    db: &mut CudaSlice<f32>,
    scratch: &mut CudaSlice<f32>,
    dout: &CudaSlice<u16>,
    x: &CudaSlice<u16>,
    w: &CudaSlice<f32>,
    mean: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    n: usize,
    c: usize,
) {
    let (ni, ci) = (int(n), int(c));
    let d = norm::layernorm_backward_launch(n, c);
    let partials = d.grid.x as i32;
    launch!(g, "layernorm_backward_bf16", d;
        dx, &mut *scratch, dout, x, w, mean, rstd, &ni, &ci);
    launch!(g, "layernorm_backward_reduce", norm::layernorm_backward_reduce_launch(c);
        dw, db, &*scratch, &partials, &ci);
}

/// `layernorm_forward_bf16` (out bf16 1e-2, mean and rstd f32 1e-5) and
/// `layernorm_backward_bf16` + `layernorm_backward_reduce` (dx bf16 1e-2, dweight and dbias
/// f32 1e-5), against the CPU on the same bf16 x and dout.
#[test]
fn layernorm_forward_backward_bf16() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (n, c) in NORM_SIZES {
        let (x, xf) = bf16_normal(&mut r, n * c, 2.0, 0.5);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        let (mut out, mut mean, mut rstd) = (g.nan_bf16(n * c), g.nan(n), g.nan(n));
        let (d_x, d_w, d_b) = (g.up(&x), g.up(&w), g.up(&b));
        gpu_layernorm_forward_bf16(&g, &mut out, &mut mean, &mut rstd, &d_x, &d_w, &d_b, n, c);
        let mut want = (vec![f32::NAN; n * c], vec![f32::NAN; n], vec![f32::NAN; n]);
        cpu::layernorm_forward(
            &mut want.0,
            &mut want.1,
            &mut want.2,
            &xf,
            &w,
            &b,
            n,
            c,
            EPS,
        );
        let tag = format!("layernorm_forward_bf16 n={n} c={c}");
        check_bf16(&mut r, &format!("{tag} out"), &g.down(&out), &want.0);
        r.check(&format!("{tag} mean"), &g.down(&mean), &want.1, TOL);
        r.check(&format!("{tag} rstd"), &g.down(&rstd), &want.2, TOL);
    }
    let (n, c) = (B * T, C);
    let x = g.up(&matmul::to_bf16(&pattern(n * c, 1)));
    let (w, b) = (g.up(&pattern(c, 2)), g.up(&pattern(c, 3)));
    let (mut out, mut mean, mut rstd) = (g.nan_bf16(n * c), g.nan(n), g.nan(n));
    let ms = g.time_ms(|| {
        gpu_layernorm_forward_bf16(&g, &mut out, &mut mean, &mut rstd, &x, &w, &b, n, c)
    });
    report(
        &mut r,
        "layernorm_forward_bf16",
        ms,
        &format!("n={n} c={c}"),
    );

    for (n, c) in NORM_SIZES {
        let (x, xf) = bf16_normal(&mut r, n * c, 2.0, 0.5);
        let (dout, doutf) = bf16_normal(&mut r, n * c, 1.0, 0.0);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        // The saved statistics (f32), shared by both sides.
        let (mut y, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(&mut y, &mut mean, &mut rstd, &xf, &w, &b, n, c, EPS);
        let mut want = (vec![f32::NAN; n * c], vec![f32::NAN; c], vec![f32::NAN; c]);
        cpu::layernorm_backward(
            &mut want.0,
            &mut want.1,
            &mut want.2,
            &doutf,
            &xf,
            &w,
            &mean,
            &rstd,
            n,
            c,
        );
        let (mut ddx, mut ddw, mut ddb) = (g.nan_bf16(n * c), g.nan(c), g.nan(c));
        let mut scratch = g.nan(norm::layernorm_backward_scratch_len(n, c));
        gpu_layernorm_backward_bf16(
            &g,
            &mut ddx,
            &mut ddw,
            &mut ddb,
            &mut scratch,
            &g.up(&dout),
            &g.up(&x),
            &g.up(&w),
            &g.up(&mean),
            &g.up(&rstd),
            n,
            c,
        );
        let tag = format!("layernorm_backward_bf16 n={n} c={c}");
        check_bf16(&mut r, &format!("{tag} dx"), &g.down(&ddx), &want.0);
        r.check(&format!("{tag} dweight"), &g.down(&ddw), &want.1, TOL);
        r.check(&format!("{tag} dbias"), &g.down(&ddb), &want.2, TOL);
    }
    let dout = g.up(&matmul::to_bf16(&pattern(n * c, 4)));
    let (mut ddx, mut ddw, mut ddb) = (g.nan_bf16(n * c), g.nan(c), g.nan(c));
    let mut scratch = g.nan(norm::layernorm_backward_scratch_len(n, c));
    let ms = g.time_ms(|| {
        gpu_layernorm_backward_bf16(
            &g,
            &mut ddx,
            &mut ddw,
            &mut ddb,
            &mut scratch,
            &dout,
            &x,
            &w,
            &mean,
            &rstd,
            n,
            c,
        )
    });
    report(
        &mut r,
        "layernorm_backward_bf16+reduce",
        ms,
        &format!("n={n} c={c}"),
    );
}

/// `fused_residual_layernorm_forward_bf16`: the residual bit for bit (bf16 of the f32 sum),
/// out bf16 1e-2 against the CPU layernorm of that rounded sum, mean and rstd f32 1e-5.
#[test]
fn fused_residual_layernorm_forward_bf16() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let run = |g: &Gpu,
               res: &mut CudaSlice<u16>,
               out: &mut CudaSlice<u16>,
               mean: &mut CudaSlice<f32>,
               rstd: &mut CudaSlice<f32>,
               a: &CudaSlice<u16>,
               b: &CudaSlice<u16>,
               w: &CudaSlice<f32>,
               bias: &CudaSlice<f32>,
               n: usize,
               c: usize| {
        let (ni, ci) = (int(n), int(c));
        launch!(g, "fused_residual_layernorm_forward_bf16",
            norm::fused_residual_layernorm_forward_launch(n);
            res, out, mean, rstd, a, b, w, bias, &ni, &ci, &EPS);
    };
    for (n, c) in NORM_SIZES {
        let (a, af) = bf16_normal(&mut r, n * c, 1.0, 0.3);
        let (b, bf) = bf16_normal(&mut r, n * c, 1.5, -0.1);
        let w = r.normal(c, 1.0, 1.0);
        let bias = r.normal(c, 1.0, 0.0);
        let (mut res, mut out) = (g.nan_bf16(n * c), g.nan_bf16(n * c));
        let (mut mean, mut rstd) = (g.nan(n), g.nan(n));
        let (da, db, dw, dbias) = (g.up(&a), g.up(&b), g.up(&w), g.up(&bias));
        run(
            &g, &mut res, &mut out, &mut mean, &mut rstd, &da, &db, &dw, &dbias, n, c,
        );
        // Reference: the f32 sum rounded to bf16 (add_bf16), then the layernorm of THAT.
        let mut sum = vec![f32::NAN; n * c];
        cpu::add(&mut sum, &af, &bf);
        let sum_bits = matmul::to_bf16(&sum);
        let mut want = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(
            &mut want.0,
            &mut want.1,
            &mut want.2,
            &widen(&sum_bits),
            &w,
            &bias,
            n,
            c,
            EPS,
        );
        let tag = format!("fused_residual_layernorm_forward_bf16 n={n} c={c}");
        let got_res = g.down(&res);
        check_bf16(&mut r, &format!("{tag} residual"), &got_res, &sum);
        assert_bits(&r, &format!("{tag} residual"), &got_res, &sum_bits);
        check_bf16(&mut r, &format!("{tag} out"), &g.down(&out), &want.0);
        r.check(&format!("{tag} mean"), &g.down(&mean), &want.1, TOL);
        r.check(&format!("{tag} rstd"), &g.down(&rstd), &want.2, TOL);
    }
    let (n, c) = (B * T, C);
    let a = g.up(&matmul::to_bf16(&pattern(n * c, 1)));
    let b = g.up(&matmul::to_bf16(&pattern(n * c, 2)));
    let (w, bias) = (g.up(&pattern(c, 3)), g.up(&pattern(c, 4)));
    let (mut res, mut out) = (g.nan_bf16(n * c), g.nan_bf16(n * c));
    let (mut mean, mut rstd) = (g.nan(n), g.nan(n));
    let ms = g.time_ms(|| {
        run(
            &g, &mut res, &mut out, &mut mean, &mut rstd, &a, &b, &w, &bias, n, c,
        )
    });
    report(
        &mut r,
        "fused_residual_layernorm_forward_bf16",
        ms,
        &format!("n={n} c={c}"),
    );
}

/// `cross_entropy_forward_bf16` (per-row losses into `losses`) then `mean_reduce` into `loss`.
fn gpu_cross_entropy_forward_bf16(
    g: &Gpu,
    loss: &mut CudaSlice<f32>,
    losses: &mut CudaSlice<f32>,
    lse: &mut CudaSlice<f32>,
    logits: &CudaSlice<u16>,
    targets: &CudaSlice<i32>,
    n: usize,
    v: usize,
    vp: usize,
) {
    let (ni, vi, vpi) = (int(n), int(v), int(vp));
    launch!(g, "cross_entropy_forward_bf16", loss::cross_entropy_forward_launch(n);
        &mut *losses, lse, logits, targets, &ni, &vi, &vpi);
    launch!(g, "mean_reduce", loss::mean_reduce_launch(); loss, &*losses, &ni);
}

fn gpu_cross_entropy_backward_bf16(
    g: &Gpu,
    dlogits: &mut CudaSlice<u16>,
    logits: &CudaSlice<u16>,
    lse: &CudaSlice<f32>,
    targets: &CudaSlice<i32>,
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    let (ni, vi, vpi) = (int(n), int(v), int(vp));
    launch!(g, "cross_entropy_backward_bf16", loss::cross_entropy_backward_launch(n);
        dlogits, logits, lse, targets, &dloss, &ni, &vi, &vpi);
}

/// `cross_entropy_backward_bf16` with `dlogits` = `logits`: the gradient over the logits.
fn gpu_cross_entropy_backward_bf16_in_place(
    g: &Gpu,
    logits: &mut CudaSlice<u16>,
    lse: &CudaSlice<f32>,
    targets: &CudaSlice<i32>,
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    let (ni, vi, vpi) = (int(n), int(v), int(vp));
    // The same device pointer for both parameters (the kernel allows it: each element is read
    // and then written by the same thread); `_written` records the write after the launch.
    let (ptr, _written) = logits.device_ptr_mut(&g.stream);
    launch!(g, "cross_entropy_backward_bf16", loss::cross_entropy_backward_launch(n);
        &ptr, &ptr, lse, targets, &dloss, &ni, &vi, &vpi);
}

/// `cross_entropy_forward_bf16` + `mean_reduce` (lse, losses, loss f32 1e-4) and
/// `cross_entropy_backward_bf16` (dlogits bf16 1e-2, padded columns exactly 0, in place the
/// same bits), against the CPU on the same bf16 logits.
#[test]
fn cross_entropy_forward_backward_bf16() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    let (mut e_fwd, mut e_bwd) = (0.0f64, 0.0f64);
    // (n, v, vp): padded and unpadded rows, rows shorter and longer than a block.
    for (n, v, vp) in [
        (1, 1, 1),
        (3, 10, 16),
        (37, 300, 301),
        (64, 5000, 5056),
        (5, 50257, 50304),
    ] {
        let (logits, logitsf) = bf16_normal(&mut r, n * vp, 3.0, 0.0);
        let targets = r.ids(n, v);
        let d_logits = g.up(&logits);
        let d_targets = g.up(&ids_i32(&targets));
        let (mut loss, mut losses, mut lse) = (g.nan(1), g.nan(n), g.nan(n));
        gpu_cross_entropy_forward_bf16(
            &g,
            &mut loss,
            &mut losses,
            &mut lse,
            &d_logits,
            &d_targets,
            n,
            v,
            vp,
        );
        let (mut want_loss, mut want_lse) = (vec![f32::NAN; 1], vec![f32::NAN; n]);
        cpu::cross_entropy_forward(&mut want_loss, &mut want_lse, &logitsf, &targets, n, v, vp);
        let want_losses: Vec<f32> = (0..n)
            .map(|i| want_lse[i] - logitsf[i * vp + targets[i] as usize])
            .collect();
        let tag = format!("cross_entropy_bf16 n={n} v={v} vp={vp}");
        for (name, got, want) in [
            ("loss", &loss, &want_loss),
            ("losses", &losses, &want_losses),
            ("lse", &lse, &want_lse),
        ] {
            let e = r.check(&format!("{tag} {name}"), &g.down(got), want, TOL_FAST);
            e_fwd = e_fwd.max(e);
        }

        let dloss = 1.7f32;
        let mut dlogits = g.nan_bf16(n * vp);
        gpu_cross_entropy_backward_bf16(
            &g,
            &mut dlogits,
            &d_logits,
            &lse,
            &d_targets,
            dloss,
            n,
            v,
            vp,
        );
        let mut want = vec![f32::NAN; n * vp];
        cpu::cross_entropy_backward(&mut want, &logitsf, &want_lse, &targets, dloss, n, v, vp);
        let got = g.down(&dlogits);
        e_bwd = e_bwd.max(check_bf16(&mut r, &format!("{tag} dlogits"), &got, &want));
        let pads: Vec<u16> = (0..n)
            .flat_map(|i| got[i * vp + v..][..vp - v].to_vec())
            .collect();
        assert_bits(&r, &format!("{tag} padding"), &pads, &vec![0; pads.len()]);

        let mut inplace = g.up(&logits);
        gpu_cross_entropy_backward_bf16_in_place(
            &g,
            &mut inplace,
            &lse,
            &d_targets,
            dloss,
            n,
            v,
            vp,
        );
        assert_bits(&r, &format!("{tag} in place"), &g.down(&inplace), &got);
    }
    let n = B * T;
    let logits = g.up(&matmul::to_bf16(&pattern(n * VP, 1)));
    let targets: Vec<i32> = (0..n).map(|i| ((i * 7919) % V) as i32).collect();
    let targets = g.up(&targets);
    let (mut loss, mut losses, mut lse) = (g.nan(1), g.nan(n), g.nan(n));
    let bench = format!("n={n} v={V} vp={VP}");
    let ms = g.time_ms(|| {
        gpu_cross_entropy_forward_bf16(
            &g,
            &mut loss,
            &mut losses,
            &mut lse,
            &logits,
            &targets,
            n,
            V,
            VP,
        )
    });
    r.max_err = e_fwd;
    report(&mut r, "cross_entropy_forward_bf16+mean", ms, &bench);
    let mut dlogits = g.nan_bf16(n * VP);
    let ms = g.time_ms(|| {
        gpu_cross_entropy_backward_bf16(&g, &mut dlogits, &logits, &lse, &targets, 1.0, n, V, VP)
    });
    r.max_err = e_bwd;
    report(&mut r, "cross_entropy_backward_bf16", ms, &bench);
    // In place over a copy of the logits (later runs see the gradient: the same work).
    let mut grad = logits;
    let ms = g.time_ms(|| {
        gpu_cross_entropy_backward_bf16_in_place(&g, &mut grad, &lse, &targets, 1.0, n, V, VP)
    });
    r.max_err = e_bwd;
    report(&mut r, "cross_entropy_backward_bf16(in place)", ms, &bench);
}

fn gpu_embedding_forward_bf16(
    g: &Gpu,
    out: &mut CudaSlice<u16>,
    tokens: &CudaSlice<i32>,
    wte: &CudaSlice<f32>,
    wpe: &CudaSlice<f32>,
    b: usize,
    t: usize,
    c: usize,
) {
    let (bi, ti, ci) = (int(b), int(t), int(c));
    launch!(g, "embedding_forward_bf16", loss::embedding_forward_launch(b, t, c);
        out, tokens, wte, wpe, &bi, &ti, &ci);
}

impl Buckets {
    /// As [`Buckets::new`], then padding buckets (token -1, empty ranges) up to `total`, as the
    /// device backend launches them (b*t buckets every step).
    fn padded(g: &Gpu, tokens: &[u32], vocab: usize, total: usize) -> Self {
        let (mut offsets, mut bucket_tokens, positions) = loss::token_buckets(tokens, vocab);
        let last = *offsets
            .last()
            .expect("token_buckets: offsets starts with 0");
        while bucket_tokens.len() < total {
            bucket_tokens.push(-1);
            offsets.push(last);
        }
        Buckets {
            count: bucket_tokens.len(),
            offsets: g.up(&offsets),
            tokens: g.up(&bucket_tokens),
            positions: g.up(&positions),
        }
    }
}

fn gpu_embedding_backward_wte_bf16(
    g: &Gpu,
    dwte: &mut CudaViewMut<f32>,
    dout: &CudaSlice<u16>,
    buckets: &Buckets,
    c: usize,
) {
    let (ci, nb) = (int(c), int(buckets.count));
    launch!(g, "embedding_backward_wte_bf16",
        loss::embedding_backward_wte_launch(buckets.count, c);
        dwte, dout, &buckets.offsets, &buckets.tokens, &buckets.positions, &nb, &ci);
}

fn gpu_embedding_backward_wpe_bf16(
    g: &Gpu,
    dwpe: &mut CudaSlice<f32>,
    dout: &CudaSlice<u16>,
    b: usize,
    t: usize,
    c: usize,
) {
    let (bi, ti, ci) = (int(b), int(t), int(c));
    launch!(g, "embedding_backward_wpe_bf16", loss::embedding_backward_wpe_launch(t, c);
        dwpe, dout, &bi, &ti, &ci);
}

/// `embedding_forward_bf16` (bf16 1e-2 and bit for bit: one f32 sum rounded once),
/// `embedding_backward_wte_bf16` (f32 1e-5; also padded with token -1 buckets to b*t, which
/// write nothing: absent rows keep their value, guard rows around dwte untouched) and
/// `embedding_backward_wpe_bf16` (f32 1e-5), against the CPU on the same bf16 dout.
#[test]
fn embedding_forward_backward_bf16() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    const KEEP: f32 = 7.25;
    let (mut e_fwd, mut e_wte, mut e_wpe) = (0.0f64, 0.0f64, 0.0f64);
    // (b, t, c, vocab, max_t): few tokens (many repeats) and many; c below and above a block.
    for (b, t, c, vocab, max_t) in [
        (1, 1, 1, 1, 1),
        (2, 5, 33, 3, 7),
        (3, 17, 100, 1000, 20),
        (4, 64, 768, 50, 64),
        (2, 129, 300, 5000, 200),
    ] {
        let tokens = r.ids(b * t, vocab);
        let wte = r.normal(vocab * c, 1.0, 0.0);
        let wpe = r.normal(max_t * c, 1.0, 0.0);
        let d_tokens = g.up(&ids_i32(&tokens));
        let mut out = g.nan_bf16(b * t * c);
        gpu_embedding_forward_bf16(&g, &mut out, &d_tokens, &g.up(&wte), &g.up(&wpe), b, t, c);
        let mut want = vec![f32::NAN; b * t * c];
        cpu::embedding_forward(&mut want, &tokens, &wte, &wpe, b, t, c);
        let tag = format!("embedding_bf16 b={b} t={t} c={c} vocab={vocab}");
        let got = g.down(&out);
        e_fwd = e_fwd.max(check_bf16(&mut r, &format!("{tag} forward"), &got, &want));
        assert_bits(&r, &format!("{tag} forward"), &got, &matmul::to_bf16(&want));

        // Backward: dwte zeroed (`fill`), then the wte kernel on the real buckets; dwpe's rows
        // from t zeroed, its first t rows (NaN) written by the wpe kernel.
        let (dout, doutf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let d_dout = g.up(&dout);
        let (mut dwte, mut dwpe) = (g.nan(vocab * c), g.nan(max_t * c));
        let zero = 0.0f32;
        let wte_len = long(vocab * c);
        launch!(g, "fill", loss::fill_launch(vocab * c); &mut dwte, &zero, &wte_len);
        if max_t > t {
            let rest = (max_t - t) * c;
            let rest_len = long(rest);
            let mut rows = dwpe.slice_mut(t * c..);
            launch!(g, "fill", loss::fill_launch(rest); &mut rows, &zero, &rest_len);
        }
        let buckets = Buckets::new(&g, &tokens, vocab);
        gpu_embedding_backward_wte_bf16(&g, &mut dwte.slice_mut(..), &d_dout, &buckets, c);
        gpu_embedding_backward_wpe_bf16(&g, &mut dwpe, &d_dout, b, t, c);
        let (mut want_wte, mut want_wpe) = (vec![f32::NAN; vocab * c], vec![f32::NAN; max_t * c]);
        cpu::embedding_backward(&mut want_wte, &mut want_wpe, &doutf, &tokens, b, t, c);
        let e = r.check(&format!("{tag} dwte"), &g.down(&dwte), &want_wte, TOL);
        e_wte = e_wte.max(e);
        let e = r.check(&format!("{tag} dwpe"), &g.down(&dwpe), &want_wpe, TOL);
        e_wpe = e_wpe.max(e);

        // The wte kernel alone over b*t buckets (padding with token -1), 3 tokens absent, on
        // a dwte of KEEP with a guard row before and after.
        let vocab = vocab + 3;
        let tokens = r.ids(b * t, vocab - 3);
        let (dout, doutf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let buckets = Buckets::padded(&g, &tokens, vocab, b * t);
        let mut big = g.up(&vec![KEEP; (vocab + 2) * c]);
        gpu_embedding_backward_wte_bf16(
            &g,
            &mut big.slice_mut(c..(vocab + 1) * c),
            &g.up(&dout),
            &buckets,
            c,
        );
        let (mut want_wte, mut want_wpe) = (vec![f32::NAN; vocab * c], vec![f32::NAN; t * c]);
        cpu::embedding_backward(&mut want_wte, &mut want_wpe, &doutf, &tokens, b, t, c);
        for tok in 0..vocab {
            if !tokens.contains(&(tok as u32)) {
                want_wte[tok * c..][..c].fill(KEEP);
            }
        }
        let got = g.down(&big);
        let what = format!("{tag} dwte (padded to {} buckets)", b * t);
        let e = r.check(&what, &got[c..(vocab + 1) * c], &want_wte, TOL);
        e_wte = e_wte.max(e);
        assert!(
            got[..c]
                .iter()
                .chain(&got[(vocab + 1) * c..])
                .all(|&v| v == KEEP),
            "{what}: a padding bucket wrote (seed {})",
            r.seed
        );
    }
    let tokens: Vec<u32> = (0..B * T).map(|i| ((i * 7919) % V) as u32).collect();
    let d_tokens = g.up(&ids_i32(&tokens));
    let (wte, wpe) = (g.up(&pattern(VP * C, 1)), g.up(&pattern(T * C, 2)));
    let mut out = g.nan_bf16(B * T * C);
    let ms = g.time_ms(|| gpu_embedding_forward_bf16(&g, &mut out, &d_tokens, &wte, &wpe, B, T, C));
    let bench = format!("b={B} t={T} c={C} vocab={VP}");
    r.max_err = e_fwd;
    report(&mut r, "embedding_forward_bf16", ms, &bench);
    let buckets = Buckets::padded(&g, &tokens, VP, B * T);
    let (mut dwte, mut dwpe) = (g.nan(VP * C), g.nan(T * C));
    let ms = g.time_ms(|| {
        gpu_embedding_backward_wte_bf16(&g, &mut dwte.slice_mut(..), &out, &buckets, C)
    });
    r.max_err = e_wte;
    report(
        &mut r,
        "embedding_backward_wte_bf16",
        ms,
        &format!("{bench} buckets={}", B * T),
    );
    let ms = g.time_ms(|| gpu_embedding_backward_wpe_bf16(&g, &mut dwpe, &out, B, T, C));
    r.max_err = e_wpe;
    report(&mut r, "embedding_backward_wpe_bf16", ms, &bench);
}

fn gpu_sum_rows_bf16(
    g: &Gpu,
    out: &mut CudaSlice<f32>,
    partials: &mut CudaSlice<f32>,
    x: &CudaSlice<u16>,
    m: usize,
    n: usize,
) {
    let p = reduce::sum_rows_partial_launch(m, n);
    let (mi, ni, chunks) = (int(m), int(n), p.grid.y as i32);
    launch!(g, "sum_rows_partial_bf16", p; &mut *partials, x, &mi, &ni);
    launch!(g, "sum_rows_final", reduce::sum_rows_final_launch(n); out, &*partials, &chunks, &ni);
}

/// `sum_rows_partial_bf16` + `sum_rows_final`: f32 1e-5 against the CPU on the same bf16 x.
#[test]
fn sum_rows_bf16_matches_cpu() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    for (m, n) in [
        (1, 1),
        (3, 33),
        (65, 7),
        (1000, 768),
        (8192, 31),
        (4097, 2304),
        (1, 100_003),
    ] {
        let (x, xf) = bf16_normal(&mut r, m * n, 1.0, 0.2);
        let (mut out, mut partials) = (g.nan(n), g.nan(reduce::sum_rows_scratch_len(m, n)));
        gpu_sum_rows_bf16(&g, &mut out, &mut partials, &g.up(&x), m, n);
        let mut want = vec![f32::NAN; n];
        cpu::sum_rows(&mut want, &xf, m, n);
        r.check(
            &format!("sum_rows_bf16 m={m} n={n}"),
            &g.down(&out),
            &want,
            TOL,
        );
    }
    let (m, n) = (B * T, 4 * C);
    let x = g.up(&matmul::to_bf16(&pattern(m * n, 1)));
    let (mut out, mut partials) = (g.nan(n), g.nan(reduce::sum_rows_scratch_len(m, n)));
    let ms = g.time_ms(|| gpu_sum_rows_bf16(&g, &mut out, &mut partials, &x, m, n));
    report(
        &mut r,
        "sum_rows_partial_bf16+final",
        ms,
        &format!("m={m} n={n}"),
    );
}

fn gpu_attention_backward_preprocess_bf16(
    g: &Gpu,
    dsum: &mut CudaSlice<f32>,
    dout: &CudaSlice<u16>,
    out: &CudaSlice<u16>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    launch!(g, "attention_backward_preprocess_bf16",
        attention::attention_backward_preprocess_launch(b, t, nh);
        dsum, dout, out, &bi, &ti, &ci, &nhi);
}

/// `attention_backward_preprocess_bf16`: D = Σ_d dout·out per (batch, head, query), f32 1e-5
/// against an f64 sum over the same bf16 values.
#[test]
fn attention_backward_preprocess_bf16_matches_reference() {
    let Some(g) = Gpu::get() else { return };
    let mut r = Inputs::new();
    // (b, t, c, nh): head sizes 4, 16, 64, 150 (above the tiled kernels' 128), 1, 64, 64.
    for (b, t, c, nh) in [
        (1, 1, 8, 2),
        (2, 5, 48, 3),
        (2, 33, 128, 2),
        (1, 7, 300, 2),
        (3, 4, 5, 5),
        (2, 130, 256, 4),
        (1, 1024, 768, 12),
    ] {
        let hs = c / nh;
        let (dout, doutf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let (out, outf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let mut dsum = g.nan(attention::attention_backward_scratch_len(b, t, nh));
        gpu_attention_backward_preprocess_bf16(
            &g,
            &mut dsum,
            &g.up(&dout),
            &g.up(&out),
            b,
            t,
            c,
            nh,
        );
        let mut want = vec![f32::NAN; b * nh * t];
        for bi in 0..b {
            for i in 0..t {
                for h in 0..nh {
                    let row = (bi * t + i) * c + h * hs;
                    let d: f64 = (0..hs)
                        .map(|d| doutf[row + d] as f64 * outf[row + d] as f64)
                        .sum();
                    want[(bi * nh + h) * t + i] = d as f32;
                }
            }
        }
        r.check(
            &format!("attention_backward_preprocess_bf16 b={b} t={t} c={c} nh={nh}"),
            &g.down(&dsum),
            &want,
            TOL,
        );
    }
    let (b, t, c, nh) = (B, T, C, NH);
    let dout = g.up(&matmul::to_bf16(&pattern(b * t * c, 1)));
    let out = g.up(&matmul::to_bf16(&pattern(b * t * c, 2)));
    let mut dsum = g.nan(attention::attention_backward_scratch_len(b, t, nh));
    let ms = g.time_ms(|| {
        gpu_attention_backward_preprocess_bf16(&g, &mut dsum, &dout, &out, b, t, c, nh)
    });
    report(
        &mut r,
        "attention_backward_preprocess_bf16",
        ms,
        &format!("b={b} t={t} c={c} nh={nh}"),
    );
}
