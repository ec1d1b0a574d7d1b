//! One report of how fast the CUDA kernels and a GPT-2 124M training run are on this GPU, each
//! figure next to a baseline measured in the same run:
//!
//! a. `matmul`: our `matmul_bf16` kernel (launched directly, on bf16 operands, f32 out)
//!    against cuBLASLt (bf16 A and B, f32 accumulation, f32 D: the same types) at the GPT-2
//!    124M shapes with B·T = 8192 rows: the forward matmuls, and for each its two backward
//!    matmuls (dA with `trans_b`, dB with `trans_a`, as `graph::autodiff` builds them).
//!    TFLOP/s = 2·m·n·k / time.
//! b. `memory`: memory-bound kernels through `DeviceBackend<CudaRuntime>` (the `Backend`
//!    methods the executor calls; the cast launched directly) at 124M sizes. GB/s = the
//!    minimal traffic (every input read once, every output written once; the formula is in
//!    each row's note) / time, against a device-to-device copy of 1 GiB (cuMemcpyDtoDAsync,
//!    2 GiB moved).
//! c. `attention`: forward (f32 and bf16 tensor cores) and backward (f32 and bf16 tensor
//!    cores; each with its preprocess kernel) at B=8, T=1024, C=768, NH=12. TFLOP/s with
//!    causal FLOPs: forward 4·B·NH·T²·hs / 2, backward 2.5× the forward. Baseline: the bf16
//!    matmul TFLOP/s of cuBLASLt at the qkv shape from section a (a roofline, not the same
//!    work).
//! d. `train`: GPT-2 124M (`Gpt` on `DeviceBackend<CudaRuntime>`, `Precision::Bf16`), B=8
//!    (`--batch`), T=1024, random tokens below 1024 (so that the loss has somewhere to fall),
//!    `--steps` optimizer steps (zero_grads, set_batch, forward_backward, grad_norm, adamw);
//!    the steps after 3 warm-up steps are timed with the wall clock, ending after a device
//!    synchronize. tokens/s, and MFU = tokens/s · (6·N + 6·L·C·T) / 989e12 (llm.c's estimate;
//!    N = `GptConfig::num_params`); first and last loss (the last must be lower).
//!
//! Every time on the GPU is the mean of `--reps` runs (after 2 warm-up runs) between two CUDA
//! events on the runtime's stream.
//!
//! Output: one `GPU-REPORT\t<section>\t<name>\t<ours>\t<baseline>\t<ratio>\t<unit>` line per
//! figure (`-` where there is none), a readable table, and with `--json FILE` the same figures
//! as JSON. Without a GPU, a driver or CUDA kernels in this build it prints
//! `skipped: <why>` and exits 0; a section that fails is reported and the exit status is 1.
//!
//! cargo bench --bench gpu_report -- [--json FILE] [--steps 50] [--batch 8] [--reps 20]
//!                                   [--sections abcd]

use std::process::ExitCode;

/// Command-line options.
#[derive(Clone, Debug)]
struct Options {
    json: Option<String>,
    steps: usize,
    batch: usize,
    reps: usize,
    sections: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        json: None,
        steps: 50,
        batch: 8,
        reps: 20,
        sections: "abcd".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |s: String, name: &str| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name}: '{s}' is not a positive number"))
        };
        match a.as_str() {
            "--json" => o.json = Some(value("--json")?),
            "--steps" => o.steps = number(value("--steps")?, "--steps")?,
            "--batch" => o.batch = number(value("--batch")?, "--batch")?,
            "--reps" => o.reps = number(value("--reps")?, "--reps")?,
            "--sections" => o.sections = value("--sections")?,
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "gpu_report [--json FILE] [--steps N] [--batch B] [--reps N] [--sections abcd]"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            // A criterion-style filter: ignored.
            _ => {}
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gpu_report: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = smelt::backend::cuda::probe() {
        println!("skipped: {why}");
        return ExitCode::SUCCESS;
    }
    run(&opts)
}

#[cfg(not(smelt_emulation))]
fn run(_: &Options) -> ExitCode {
    println!("skipped: this build has no device backend (no host C++ compiler for the emulation)");
    ExitCode::SUCCESS
}

#[cfg(smelt_emulation)]
fn run(opts: &Options) -> ExitCode {
    gpu::run(opts)
}

#[cfg(smelt_emulation)]
mod gpu {
    use std::sync::Arc;
    use std::time::Instant;

    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::{CudaSlice, CudaStream};
    use smelt::backend::cuda::CudaRuntime;
    use smelt::backend::device::{Arg, DeviceArena, DeviceBackend, Kernel, Precision, Runtime};
    use smelt::backend::emu::{elementwise, matmul};
    use smelt::backend::kernels::{attention, attention_tc, attention_tc_backward};
    use smelt::backend::{AdamWGroup, AdamWStep, Backend, View};
    use smelt::model::{Gpt, GptConfig};

    use super::Options;

    type Res<T> = Result<T, String>;

    fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
        move |e| format!("{what}: {e:?}")
    }

    // GPT-2 124M.
    const T: usize = 1024;
    const C: usize = 768;
    const NH: usize = 12;
    const L: usize = 12;
    const V: usize = 50257;
    const VP: usize = 50304;
    /// H100/H200 dense bf16 peak, as llm.c uses for MFU.
    const PEAK_FLOPS: f64 = 989e12;

    /// One figure of the report.
    struct Row {
        section: &'static str,
        name: String,
        ours: Option<f64>,
        baseline: Option<f64>,
        unit: &'static str,
        note: String,
    }

    impl Row {
        fn ratio(&self) -> Option<f64> {
            match (self.ours, self.baseline) {
                (Some(o), Some(b)) if b > 0.0 => Some(o / b),
                _ => None,
            }
        }
    }

    fn cell(x: Option<f64>) -> String {
        match x {
            Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
            Some(v) => format!("{v:.3}"),
            None => "-".into(),
        }
    }

    /// Mean milliseconds of `f` over `reps` runs after 2 warm-up runs, between two CUDA events.
    fn time_ms(stream: &Arc<CudaStream>, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        for _ in 0..2 {
            f()?;
        }
        stream.synchronize().map_err(err("synchronize"))?;
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let ctx = stream.context();
        let start = ctx.new_event(flags).map_err(err("event"))?;
        let end = ctx.new_event(flags).map_err(err("event"))?;
        start.record(stream).map_err(err("record"))?;
        for _ in 0..reps {
            f()?;
        }
        end.record(stream).map_err(err("record"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(err("a kernel failed (event)"))?;
        Ok(f64::from(ms) / reps as f64)
    }

    /// Deterministic values in [-1, 1), cheap to make.
    fn pattern(len: usize, salt: u64) -> Vec<f32> {
        (0..len as u64)
            .map(|i| {
                let h = (i ^ salt.wrapping_mul(0x5851_f42d_4c95_7f2d))
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    >> 40;
                (h as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    const CHUNK: usize = 1 << 24;

    /// Fills `bytes` of `buf` with a repeated bf16 pattern.
    fn fill_bf16(rt: &CudaRuntime, buf: &mut CudaSlice<u8>, elems: usize, salt: u64) -> Res<()> {
        let chunk: Vec<u16> = matmul::to_bf16(&pattern(CHUNK.min(elems), salt));
        let mut at = 0;
        while at < elems {
            let n = chunk.len().min(elems - at);
            rt.upload(buf, 2 * at, bytemuck::cast_slice(&chunk[..n]))
                .map_err(|e| e.to_string())?;
            at += n;
        }
        Ok(())
    }

    /// Fills a view of the arena with a repeated f32 pattern (scaled).
    fn fill_f32(
        be: &DeviceBackend<CudaRuntime>,
        arena: &mut DeviceArena<CudaSlice<u8>>,
        v: View,
        salt: u64,
        scale: f32,
    ) -> Res<()> {
        let chunk: Vec<f32> = pattern(CHUNK.min(v.len), salt)
            .into_iter()
            .map(|x| x * scale)
            .collect();
        let mut at = 0;
        while at < v.len {
            let n = chunk.len().min(v.len - at);
            be.write(arena, v.slice(at, n), &chunk[..n])
                .map_err(|e| e.to_string())?;
            at += n;
        }
        Ok(())
    }

    /// Fills `elems` f32 of `buf` with a repeated pattern.
    fn upload_f32(rt: &CudaRuntime, buf: &mut CudaSlice<u8>, elems: usize, salt: u64) -> Res<()> {
        let chunk = pattern(CHUNK.min(elems), salt);
        let mut at = 0;
        while at < elems {
            let n = chunk.len().min(elems - at);
            rt.upload(buf, 4 * at, bytemuck::cast_slice(&chunk[..n]))
                .map_err(|e| e.to_string())?;
            at += n;
        }
        Ok(())
    }

    fn int(x: usize) -> Arg {
        Arg::I32(i32::try_from(x).expect("fits a C int"))
    }

    pub fn run(opts: &Options) -> std::process::ExitCode {
        let started = Instant::now();
        let mut rows: Vec<Row> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut device = String::from("?");
        let mut cublas_qkv: Option<f64> = None;
        for s in opts.sections.chars() {
            let result = match s {
                'a' => section_matmul(opts, &mut rows, &mut device, &mut cublas_qkv),
                'b' => section_memory(opts, &mut rows, &mut device),
                'c' => section_attention(opts, &mut rows, &mut device, cublas_qkv),
                'd' => section_train(opts, &mut rows, &mut device),
                other => Err(format!("unknown section '{other}' (sections: abcd)")),
            };
            if let Err(e) = result {
                eprintln!("gpu_report: section {s} FAILED: {e}");
                failures.push(format!("section {s}: {e}"));
            }
        }
        report(
            &rows,
            &device,
            &failures,
            opts,
            started.elapsed().as_secs_f64(),
        );
        if failures.is_empty() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        }
    }

    fn report(rows: &[Row], device: &str, failures: &[String], opts: &Options, secs: f64) {
        for r in rows {
            println!(
                "GPU-REPORT\t{}\t{}\t{}\t{}\t{}\t{}",
                r.section,
                r.name,
                cell(r.ours),
                cell(r.baseline),
                cell(r.ratio()),
                r.unit
            );
        }
        println!();
        println!("GPU report on {device} ({secs:.0} s)");
        println!(
            "{:<10} {:<30} {:>12} {:>12} {:>8}  {:<8} note",
            "section", "name", "ours", "baseline", "ratio", "unit"
        );
        for r in rows {
            println!(
                "{:<10} {:<30} {:>12} {:>12} {:>8}  {:<8} {}",
                r.section,
                r.name,
                cell(r.ours),
                cell(r.baseline),
                cell(r.ratio()),
                r.unit,
                r.note
            );
        }
        for f in failures {
            println!("FAILED: {f}");
        }
        if let Some(path) = &opts.json {
            let json = serde_json::json!({
                "device": device,
                "seconds": secs,
                "options": {
                    "steps": opts.steps, "batch": opts.batch, "reps": opts.reps,
                    "sections": opts.sections,
                },
                "rows": rows.iter().map(|r| serde_json::json!({
                    "section": r.section,
                    "name": r.name,
                    "ours": r.ours,
                    "baseline": r.baseline,
                    "ratio": r.ratio(),
                    "unit": r.unit,
                    "note": r.note,
                })).collect::<Vec<_>>(),
                "failures": failures,
            });
            let text = serde_json::to_string_pretty(&json).expect("JSON");
            match std::fs::write(path, text + "\n") {
                Ok(()) => println!("JSON: {path}"),
                Err(e) => eprintln!("gpu_report: writing {path}: {e}"),
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // a. matmul against cuBLASLt

    /// (name, m, k, n, trans_a, trans_b) at B·T = `rows` rows.
    fn matmul_shapes(rows: usize) -> Vec<(String, usize, usize, usize, bool, bool)> {
        // Forward layers: out (rows, oc) = x (rows, ic) · W (ic, oc); the lm head's W is wte
        // (vp, c), so trans_b.
        let layers = [
            ("qkv", C, 3 * C, false),
            ("attn_proj", C, C, false),
            ("fc", C, 4 * C, false),
            ("fc_proj", 4 * C, C, false),
            ("lm_head", C, VP, true),
        ];
        let mut v = Vec::new();
        for (name, ic, oc, tb) in layers {
            v.push((format!("{name}.fwd"), rows, ic, oc, false, tb));
        }
        for (name, ic, oc, tb) in layers {
            // dA (rows, ic) = dout (rows, oc) · op(W)ᵀ.
            v.push((format!("{name}.dA"), rows, oc, ic, false, !tb));
        }
        for (name, ic, oc, tb) in layers {
            // dB = xᵀ · dout (ic, oc), or for a trans_b weight doutᵀ · x (oc, ic).
            if tb {
                v.push((format!("{name}.dB"), oc, rows, ic, true, false));
            } else {
                v.push((format!("{name}.dB"), ic, rows, oc, true, false));
            }
        }
        v
    }

    /// cuBLASLt with bf16 A, B and f32 C, D (compute and scale f32), on row-major operands:
    /// out (m,n) = op(a) · op(b) is, column-major, outᵀ (n,m) = op(b)ᵀ · op(a)ᵀ.
    struct Lt {
        handle: cudarc::cublaslt::sys::cublasLtHandle_t,
        workspace: CudaSlice<u8>,
        stream: Arc<CudaStream>,
    }

    /// One planned cuBLASLt matmul (descriptors and the heuristic's algorithm).
    struct LtPlan {
        desc: cudarc::cublaslt::sys::cublasLtMatmulDesc_t,
        layouts: [cudarc::cublaslt::sys::cublasLtMatrixLayout_t; 3],
        algo: cudarc::cublaslt::sys::cublasLtMatmulAlgo_t,
    }

    impl Lt {
        fn new(stream: &Arc<CudaStream>) -> Res<Lt> {
            // SAFETY: only tries to dlopen libcublasLt.
            if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
                return Err("libcublasLt not found (add its folder to LD_LIBRARY_PATH)".into());
            }
            let handle =
                cudarc::cublaslt::result::create_handle().map_err(err("cublasLtCreate"))?;
            let workspace = stream
                .alloc_zeros::<u8>(32 << 20)
                .map_err(err("cuBLASLt workspace"))?;
            Ok(Lt {
                handle,
                workspace,
                stream: stream.clone(),
            })
        }

        #[allow(clippy::too_many_arguments)]
        fn plan(&self, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Res<LtPlan> {
            use cudarc::cublaslt::result as r;
            use cudarc::cublaslt::sys::{
                cublasComputeType_t, cublasLtMatmulDescAttributes_t as D,
                cublasLtMatmulPreferenceAttributes_t as P, cudaDataType_t,
            };
            let (m, k, n) = (m as u64, k as u64, n as u64);
            // Column-major A' = b: (n,k) ld n, or stored (n,k) row-major = (k,n) ld k, transposed.
            let (a_rows, a_cols, lda) = if tb { (k, n, k) } else { (n, k, n) };
            // B' = a: (k,m) ld k, or stored (k,m) row-major = (m,k) ld m, transposed.
            let (b_rows, b_cols, ldb) = if ta { (m, k, m) } else { (k, m, k) };
            let bf16 = cudaDataType_t::CUDA_R_16BF;
            let f32t = cudaDataType_t::CUDA_R_32F;
            let la = r::create_matrix_layout(bf16, a_rows, a_cols, lda as i64)
                .map_err(err("cuBLASLt layout"))?;
            let lb = r::create_matrix_layout(bf16, b_rows, b_cols, ldb as i64)
                .map_err(err("cuBLASLt layout"))?;
            let lc =
                r::create_matrix_layout(f32t, n, m, n as i64).map_err(err("cuBLASLt layout"))?;
            let desc = r::create_matmul_desc(cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t)
                .map_err(err("cuBLASLt matmul desc"))?;
            let (opa, opb) = (i32::from(tb), i32::from(ta));
            let pref = r::create_matmul_pref().map_err(err("cuBLASLt preference"))?;
            let size = self.workspace.len();
            // SAFETY: the attributes are given buffers of their types (cublasOperation_t is an
            // int, the workspace limit a size_t); every handle was created above.
            let algo = unsafe {
                let set = |attr: D, v: &i32| {
                    r::set_matmul_desc_attribute(desc, attr, (v as *const i32).cast(), 4)
                };
                set(D::CUBLASLT_MATMUL_DESC_TRANSA, &opa).map_err(err("TRANSA"))?;
                set(D::CUBLASLT_MATMUL_DESC_TRANSB, &opb).map_err(err("TRANSB"))?;
                r::set_matmul_pref_attribute(
                    pref,
                    P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    (&size as *const usize).cast(),
                    std::mem::size_of::<usize>(),
                )
                .map_err(err("workspace preference"))?;
                let h = r::get_matmul_algo_heuristic(self.handle, desc, la, lb, lc, lc, pref)
                    .map_err(err("cuBLASLt heuristic"));
                let _ = r::destroy_matmul_pref(pref);
                h?.algo
            };
            Ok(LtPlan {
                desc,
                layouts: [la, lb, lc],
                algo,
            })
        }

        /// out = op(a) · op(b) with the addresses of bf16 `a`, `b` and f32 `out`.
        ///
        /// # Safety
        /// The buffers must hold the plan's operands.
        unsafe fn run(&self, p: &LtPlan, out: u64, a: u64, b: u64) -> Res<()> {
            use cudarc::cublaslt::result as r;
            use cudarc::driver::DevicePtr;
            let (alpha, beta) = (1.0f32, 0.0f32);
            let (ws, _sync) = self.workspace.device_ptr(&self.stream);
            // SAFETY: as the caller guarantees; the descriptors and algorithm are the plan's.
            unsafe {
                r::matmul(
                    self.handle,
                    p.desc,
                    (&alpha as *const f32).cast(),
                    (&beta as *const f32).cast(),
                    b as *const std::ffi::c_void,
                    p.layouts[0],
                    a as *const std::ffi::c_void,
                    p.layouts[1],
                    out as *const std::ffi::c_void,
                    p.layouts[2],
                    out as *mut std::ffi::c_void,
                    p.layouts[2],
                    &p.algo,
                    ws as *mut std::ffi::c_void,
                    self.workspace.len(),
                    self.stream.cu_stream() as _,
                )
            }
            .map_err(err("cublasLtMatmul"))
        }
    }

    impl Drop for LtPlan {
        fn drop(&mut self) {
            use cudarc::cublaslt::result as r;
            // SAFETY: created by Lt::plan, destroyed once.
            unsafe {
                let _ = r::destroy_matmul_desc(self.desc);
                for l in self.layouts {
                    let _ = r::destroy_matrix_layout(l);
                }
            }
        }
    }

    impl Drop for Lt {
        fn drop(&mut self) {
            // SAFETY: created in Lt::new, destroyed once.
            let _ = unsafe { cudarc::cublaslt::result::destroy_handle(self.handle) };
        }
    }

    fn section_matmul(
        opts: &Options,
        rows: &mut Vec<Row>,
        device: &mut String,
        cublas_qkv: &mut Option<f64>,
    ) -> Res<()> {
        let rt = CudaRuntime::new(0).map_err(|e| e.to_string())?;
        *device = rt.name();
        let stream = rt.stream().clone();
        let shapes = matmul_shapes(opts.batch * T);
        let max_a = shapes.iter().map(|s| s.1 * s.2).max().unwrap_or(0);
        let max_b = shapes.iter().map(|s| s.2 * s.3).max().unwrap_or(0);
        let max_out = shapes.iter().map(|s| s.1 * s.3).max().unwrap_or(0);
        eprintln!(
            "gpu_report: a. matmul: {} shapes ({:.1} GB of buffers)",
            shapes.len(),
            (2 * max_a + 2 * max_b + 4 * max_out) as f64 / 1e9
        );
        let alloc = |bytes| rt.alloc(bytes).map_err(|e| e.to_string());
        let mut a = alloc(2 * max_a)?;
        let mut b = alloc(2 * max_b)?;
        let out = alloc(4 * max_out)?;
        fill_bf16(&rt, &mut a, max_a, 1)?;
        fill_bf16(&rt, &mut b, max_b, 2)?;
        let bias = alloc(4 * VP)?;
        let (pa, pb, po, pbias) = (
            rt.address(&a),
            rt.address(&b),
            rt.address(&out),
            rt.address(&bias),
        );
        let lt = match Lt::new(&stream) {
            Ok(lt) => Some(lt),
            Err(e) => {
                eprintln!("gpu_report: no cuBLASLt baseline: {e}");
                None
            }
        };
        for (name, m, k, n, ta, tb) in shapes {
            let flops = 2.0 * (m * n * k) as f64;
            // The forward matmuls carry a bias, as in the model (cuBLASLt's has none: its
            // epilogue is not part of what is compared).
            let bias_arg = if name.ends_with(".fwd") && !tb {
                pbias
            } else {
                0
            };
            let ours = time_ms(&stream, opts.reps, || {
                let args = [
                    Arg::Ptr(po),
                    Arg::Ptr(0),
                    Arg::Ptr(pa),
                    Arg::Ptr(pb),
                    Arg::Ptr(bias_arg),
                    int(m),
                    int(k),
                    int(n),
                    Arg::I32(i32::from(ta)),
                    Arg::I32(i32::from(tb)),
                ];
                // SAFETY: matmul_bf16(out f32 m*n, gelu_out null, a bf16 m*k, b bf16 k*n,
                // bias f32 n or null, m, k, n, trans_a, trans_b): the buffers hold the largest
                // shape; the geometry is matmul_bf16_launch's.
                unsafe {
                    rt.launch(
                        &smelt::backend::kernels::matmul::matmul_bf16::KERNEL,
                        matmul::matmul_bf16_launch(m, n),
                        &args,
                    )
                }
                .map_err(|e| e.to_string())
            })?;
            let base = match &lt {
                Some(lt) => match lt.plan(m, k, n, ta, tb) {
                    Ok(plan) => Some(time_ms(&stream, opts.reps, || {
                        // SAFETY: the buffers hold the plan's operands (the largest shape).
                        unsafe { lt.run(&plan, po, pa, pb) }
                    })?),
                    Err(e) => {
                        eprintln!("gpu_report: cuBLASLt {name}: {e}");
                        None
                    }
                },
                None => None,
            };
            let tflops = |ms: f64| flops / (ms * 1e-3) / 1e12;
            if name == "qkv.fwd" {
                *cublas_qkv = base.map(tflops);
            }
            let flags = match (ta, tb) {
                (false, false) => "",
                (true, false) => " trans_a",
                (false, true) => " trans_b",
                (true, true) => " trans_a trans_b",
            };
            rows.push(Row {
                section: "matmul",
                name,
                ours: Some(tflops(ours)),
                baseline: base.map(tflops),
                unit: "TFLOP/s",
                note: format!(
                    "m={m} k={k} n={n}{flags}; ours {ours:.3} ms{}",
                    base.map_or(String::new(), |b| format!(", cuBLASLt {b:.3} ms"))
                ),
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // b. memory-bound kernels against a device-to-device copy

    /// Hands out consecutive views of an arena.
    struct Bump(usize);
    impl Bump {
        fn take(&mut self, len: usize) -> View {
            // 16-byte aligned views (the kernels' vector paths).
            let v = View::new(self.0, len);
            self.0 = (self.0 + len).next_multiple_of(4);
            v
        }
    }

    fn section_memory(opts: &Options, rows: &mut Vec<Row>, device: &mut String) -> Res<()> {
        let rt = CudaRuntime::new(0).map_err(|e| e.to_string())?;
        *device = rt.name();
        let stream = rt.stream().clone();
        let be = DeviceBackend::new(rt, Precision::Bf16);
        let reps = opts.reps;
        let n = opts.batch * T;
        let nc = n * C;
        let params = GptConfig {
            n_layer: L,
            n_head: NH,
            n_embd: C,
            block_size: T,
            vocab_size: V,
        }
        .num_params()
            + (VP - V) * C;

        // The baseline: 1 GiB copied on the device.
        let copy_bytes = 1usize << 30;
        let src = be.runtime().alloc(copy_bytes).map_err(|e| e.to_string())?;
        let mut dst = be.runtime().alloc(copy_bytes).map_err(|e| e.to_string())?;
        let copy_ms = time_ms(&stream, reps, || {
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(err("memcpy_dtod"))
        })?;
        drop((src, dst));
        let copy_gbs = 2.0 * copy_bytes as f64 / (copy_ms * 1e-3) / 1e9;
        rows.push(Row {
            section: "memory",
            name: "device_copy (baseline)".into(),
            ours: Some(copy_gbs),
            baseline: Some(copy_gbs),
            unit: "GB/s",
            note: format!("cuMemcpyDtoDAsync of 1 GiB: 2 GiB moved, {copy_ms:.3} ms"),
        });

        let mut bump = Bump(0);
        let g_x = bump.take(4 * nc);
        let g_out = bump.take(4 * nc);
        let g_dout = bump.take(4 * nc);
        let g_dx = bump.take(4 * nc);
        let (a1, a2, a3) = (bump.take(nc), bump.take(nc), bump.take(nc));
        let (ln_x, ln_out, ln_dout, ln_dx) =
            (bump.take(nc), bump.take(nc), bump.take(nc), bump.take(nc));
        let (ln_w, ln_b, ln_dw, ln_db) = (bump.take(C), bump.take(C), bump.take(C), bump.take(C));
        let (ln_mean, ln_rstd) = (bump.take(n), bump.take(n));
        let logits = bump.take(n * VP);
        let dlogits = bump.take(n * VP);
        let (ce_lse, ce_loss) = (bump.take(n), bump.take(1));
        let (wte, wpe, emb_out) = (bump.take(VP * C), bump.take(T * C), bump.take(nc));
        let (p, g, m, v) = (
            bump.take(params),
            bump.take(params),
            bump.take(params),
            bump.take(params),
        );
        eprintln!(
            "gpu_report: b. memory-bound kernels ({:.1} GB arena)",
            bump.0 as f64 * 4e-9
        );
        let mut arena = be.alloc(bump.0).map_err(|e| e.to_string())?;
        let ar = &mut arena;
        for (i, (view, scale)) in [
            (g_x, 2.0),
            (g_dout, 1.0),
            (a1, 1.0),
            (a2, 1.0),
            (a3, 1.0),
            (ln_x, 1.0),
            (ln_dout, 1.0),
            (ln_w, 1.0),
            (ln_b, 0.1),
            (logits, 4.0),
            (wte, 0.02),
            (wpe, 0.02),
            (p, 0.02),
            (g, 0.01),
        ]
        .into_iter()
        .enumerate()
        {
            fill_f32(&be, ar, view, 10 + i as u64, scale)?;
        }
        be.fill(ar, v, 1e-4);
        let mut tokens = be.alloc_indices(n).map_err(|e| e.to_string())?;
        let ids: Vec<u32> = (0..n as u64)
            .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % V as u64) as u32)
            .collect();
        be.write_indices(&mut tokens, &ids)
            .map_err(|e| e.to_string())?;
        let bf16_out = be.runtime().alloc(2 * 4 * nc).map_err(|e| e.to_string())?;
        be.check().map_err(|e| e.to_string())?;

        let mut bench = |name: &str, bytes: usize, formula: &str, f: &mut dyn FnMut()| -> Res<()> {
            let ms = time_ms(&stream, reps, || {
                f();
                be.check().map_err(|e| e.to_string())
            })?;
            let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
            rows.push(Row {
                section: "memory",
                name: name.into(),
                ours: Some(gbs),
                baseline: Some(copy_gbs),
                unit: "GB/s",
                note: format!(
                    "{ms:.4} ms; bytes = {formula} = {:.1} MB",
                    bytes as f64 / 1e6
                ),
            });
            Ok(())
        };
        let f4 = 4usize;
        let n4c = 4 * nc;
        bench(
            "gelu_forward",
            2 * f4 * n4c,
            "4·2·(B·T·4C)",
            &mut || be.gelu_forward(ar, g_out, g_x),
        )?;
        bench(
            "gelu_backward",
            3 * f4 * n4c,
            "4·3·(B·T·4C)",
            &mut || be.gelu_backward(ar, g_dx, g_x, g_dout),
        )?;
        bench("add", 3 * f4 * nc, "4·3·(B·T·C)", &mut || {
            be.add(ar, a3, a1, a2)
        })?;
        bench("add_into", 3 * f4 * nc, "4·3·(B·T·C)", &mut || {
            be.add_into(ar, a3, a1)
        })?;
        bench(
            "layernorm_forward",
            f4 * (2 * nc + 2 * C + 2 * n),
            "4·(2·B·T·C + 2C + 2·B·T)",
            &mut || {
                be.layernorm_forward(ar, ln_out, ln_mean, ln_rstd, ln_x, ln_w, ln_b, n, C, 1e-5)
            },
        )?;
        bench(
            "layernorm_backward",
            f4 * (3 * nc + 3 * C + 2 * n),
            "4·(3·B·T·C + 3C + 2·B·T)",
            &mut || {
                be.layernorm_backward(
                    ar, ln_dx, ln_dw, ln_db, ln_dout, ln_x, ln_w, ln_mean, ln_rstd, n, C,
                )
            },
        )?;
        bench(
            "cross_entropy_forward",
            f4 * (n * V + 2 * n),
            "4·(B·T·V + 2·B·T)",
            &mut || be.cross_entropy_forward(ar, ce_loss, ce_lse, logits, &tokens, n, V, VP),
        )?;
        bench(
            "cross_entropy_backward",
            f4 * (n * V + n * VP + n),
            "4·(B·T·V + B·T·Vp + B·T)",
            &mut || be.cross_entropy_backward(ar, dlogits, logits, ce_lse, &tokens, 1.0, n, V, VP),
        )?;
        let half = params / 2;
        let groups = [
            AdamWGroup {
                param: p.slice(0, half),
                grad: g.slice(0, half),
                m: m.slice(0, half),
                v: v.slice(0, half),
                weight_decay: 0.1,
            },
            AdamWGroup {
                param: p.slice(half, params - half),
                grad: g.slice(half, params - half),
                m: m.slice(half, params - half),
                v: v.slice(half, params - half),
                weight_decay: 0.0,
            },
        ];
        let step = AdamWStep {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step: 10,
            grad_scale: 1.0,
        };
        bench(
            "adamw_multi",
            f4 * 7 * params,
            "4·7·N (p, g, m, v read; p, m, v written)",
            &mut || be.adamw(ar, &groups, &step),
        )?;
        bench(
            "embedding_forward",
            f4 * 3 * nc + 4 * n,
            "4·3·B·T·C + 4·B·T (wte row, wpe row, out; ids)",
            &mut || be.embedding_forward(ar, emb_out, &tokens, wte, wpe, opts.batch, T, C),
        )?;
        // The cast has no Backend method (the backend casts matmul operands) and an arena's
        // address is private: launched here on buffers of its own.
        let mut cast_src = be.runtime().alloc(4 * n4c).map_err(|e| e.to_string())?;
        upload_f32(be.runtime(), &mut cast_src, n4c, 30)?;
        let x_addr = be.runtime().address(&cast_src);
        let out_addr = be.runtime().address(&bf16_out);
        let ms = time_ms(&stream, reps, || {
            // SAFETY: cast_f32_to_bf16(out bf16 n, x f32 n, n): bf16_out holds 4·B·T·C bf16,
            // x is the gelu input view of that length.
            unsafe {
                be.runtime().launch(
                    &smelt::backend::kernels::elementwise::cast_f32_to_bf16::KERNEL,
                    elementwise::cast_f32_to_bf16_launch(n4c),
                    &[Arg::Ptr(out_addr), Arg::Ptr(x_addr), int(n4c)],
                )
            }
            .map_err(|e| e.to_string())
        })?;
        let bytes = 6 * n4c;
        rows.push(Row {
            section: "memory",
            name: "cast_f32_to_bf16".into(),
            ours: Some(bytes as f64 / (ms * 1e-3) / 1e9),
            baseline: Some(copy_gbs),
            unit: "GB/s",
            note: format!("{ms:.4} ms; bytes = 6·(B·T·4C)"),
        });
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // c. attention

    fn section_attention(
        opts: &Options,
        rows: &mut Vec<Row>,
        device: &mut String,
        cublas_qkv: Option<f64>,
    ) -> Res<()> {
        let rt = CudaRuntime::new(0).map_err(|e| e.to_string())?;
        *device = rt.name();
        let stream = rt.stream().clone();
        let b = opts.batch;
        let hs = C / NH;
        let (n_qkv, n_out, n_lse) = (b * T * 3 * C, b * T * C, b * NH * T);
        eprintln!("gpu_report: c. attention B={b} T={T} C={C} NH={NH}");
        let alloc = |bytes| rt.alloc(bytes).map_err(|e| e.to_string());
        let mut qkv = alloc(4 * n_qkv)?;
        let mut qkv16 = alloc(2 * n_qkv)?;
        let mut dout = alloc(4 * n_out)?;
        let mut dout16 = alloc(2 * n_out)?;
        let (out, lse, dqkv, dsum) = (
            alloc(4 * n_out)?,
            alloc(4 * n_lse)?,
            alloc(4 * n_qkv)?,
            alloc(4 * n_lse)?,
        );
        upload_f32(&rt, &mut qkv, n_qkv, 40)?;
        fill_bf16(&rt, &mut qkv16, n_qkv, 40)?;
        upload_f32(&rt, &mut dout, n_out, 41)?;
        fill_bf16(&rt, &mut dout16, n_out, 41)?;
        let a = |buf: &CudaSlice<u8>| Arg::Ptr(rt.address(buf));
        let sizes = [int(b), int(T), int(C), int(NH)];
        let with = |head: &[Arg]| [head, &sizes[..]].concat();
        let launch = |k: &'static Kernel, dims, args: &[Arg]| -> Res<()> {
            // SAFETY: every call below passes the kernel's parameter list (kernels/attention*.cu)
            // with buffers of the sizes it reads and writes at (b, T, C, NH), and the geometry
            // of its launch function in smelt::backend::emu.
            unsafe { rt.launch(k, dims, args) }.map_err(|e| e.to_string())
        };
        let fwd_flops = 4.0 * (b * NH * T * T * hs) as f64 / 2.0;
        let bwd_flops = 2.5 * fwd_flops;
        let tflops = |flops: f64, ms: f64| flops / (ms * 1e-3) / 1e12;
        let mut push = |name: &str, flops: f64, ms: f64, what: &str| {
            rows.push(Row {
                section: "attention",
                name: name.into(),
                ours: Some(tflops(flops, ms)),
                baseline: cublas_qkv,
                unit: "TFLOP/s",
                note: format!(
                    "{ms:.3} ms; {what}; baseline: cuBLASLt bf16 matmul at the qkv shape"
                ),
            });
        };
        let fwd = "causal FLOPs 4·B·NH·T²·hs/2";
        let bwd = "causal FLOPs 2.5·4·B·NH·T²·hs/2, preprocess included";

        let ms = time_ms(&stream, opts.reps, || {
            launch(
                &smelt::backend::kernels::attention::attention_forward::KERNEL,
                attention::attention_forward_launch(b, T, C, NH),
                &with(&[a(&out), a(&lse), a(&qkv)]),
            )
        })?;
        push("forward_f32", fwd_flops, ms, fwd);
        if attention_tc::supports(hs) {
            let ms = time_ms(&stream, opts.reps, || {
                launch(
                    &attention_tc::attention_forward_bf16_hs64::KERNEL,
                    attention_tc::forward_dims(64, b as i32, T as i32, C as i32, NH as i32),
                    &with(&[a(&out), a(&lse), a(&qkv16)]),
                )
            })?;
            push(
                "forward_bf16_tc",
                fwd_flops,
                ms,
                &format!("{fwd}; bf16 qkv"),
            );
        }
        // The backward of the f32 forward's out and lse.
        launch(
            &smelt::backend::kernels::attention::attention_forward::KERNEL,
            attention::attention_forward_launch(b, T, C, NH),
            &with(&[a(&out), a(&lse), a(&qkv)]),
        )?;
        let preprocess = || {
            launch(
                &smelt::backend::kernels::attention::attention_backward_preprocess::KERNEL,
                attention::attention_backward_preprocess_launch(b, T, NH),
                &with(&[a(&dsum), a(&dout), a(&out)]),
            )
        };
        let ms = time_ms(&stream, opts.reps, || {
            preprocess()?;
            let args = with(&[a(&dqkv), a(&dout), a(&qkv), a(&lse), a(&dsum)]);
            launch(
                &smelt::backend::kernels::attention::attention_backward_dkdv::KERNEL,
                attention::attention_backward_dkdv_launch(b, T, C, NH),
                &args,
            )?;
            launch(
                &smelt::backend::kernels::attention::attention_backward_dq::KERNEL,
                attention::attention_backward_dq_launch(b, T, C, NH),
                &args,
            )
        })?;
        push("backward_f32", bwd_flops, ms, bwd);
        if attention_tc::supports(hs) {
            let ms = time_ms(&stream, opts.reps, || {
                preprocess()?;
                let args = with(&[a(&dqkv), a(&dout16), a(&qkv16), a(&lse), a(&dsum)]);
                launch(
                    &attention_tc_backward::attention_backward_dkdv_bf16_hs64::KERNEL,
                    attention_tc_backward::dkdv_dims(64, b as i32, T as i32, C as i32, NH as i32),
                    &args,
                )?;
                launch(
                    &attention_tc_backward::attention_backward_dq_bf16_hs64::KERNEL,
                    attention_tc_backward::dq_dims(64, b as i32, T as i32, C as i32, NH as i32),
                    &args,
                )
            })?;
            push(
                "backward_bf16_tc",
                bwd_flops,
                ms,
                &format!("{bwd}; bf16 qkv, dout"),
            );
        }
        stream.synchronize().map_err(err("attention"))?;
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // d. GPT-2 124M training

    fn section_train(opts: &Options, rows: &mut Vec<Row>, device: &mut String) -> Res<()> {
        let e = |e: smelt::Error| e.to_string();
        let rt = CudaRuntime::new(0).map_err(e)?;
        *device = rt.name();
        let config = GptConfig {
            n_layer: L,
            n_head: NH,
            n_embd: C,
            block_size: T,
            vocab_size: V,
        };
        let (b, steps, warmup) = (opts.batch, opts.steps, 3usize);
        eprintln!("gpu_report: d. training GPT-2 124M, B={b} T={T}, {warmup}+{steps} steps");
        let mut model =
            Gpt::new(DeviceBackend::new(rt, Precision::Bf16), config, b, T, true).map_err(e)?;
        model.init_gpt2(1337).map_err(e)?;
        // Random tokens below 1024: the loss can fall from ln(50257) ≈ 10.8 towards
        // ln(1024) ≈ 6.9 by learning which tokens occur. Four batches, cycled.
        let mut rng = smelt::rng::Rng::new(7);
        let batches: Vec<Vec<u32>> = (0..4)
            .map(|_| (0..b * T + 1).map(|_| rng.below(1024) as u32).collect())
            .collect();
        let mut losses = Vec::with_capacity(warmup + steps);
        let mut timed_from = None;
        for step in 0..warmup + steps {
            if step == warmup {
                model.exec.backend.runtime().synchronize().map_err(e)?;
                timed_from = Some(Instant::now());
            }
            let ids = &batches[step % batches.len()];
            model.exec.zero_grads();
            model.set_batch(&ids[..b * T], Some(&ids[1..])).map_err(e)?;
            let loss = model.forward_backward().map_err(e)?;
            if !loss.is_finite() {
                return Err(format!("loss is {loss} at step {}", step + 1));
            }
            losses.push(loss);
            let norm = model.exec.grad_norm();
            let lr = 6e-4 * ((step + 1) as f32 / 10.0).min(1.0);
            model.exec.adamw(
                &AdamWStep {
                    lr,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    step: step as u64 + 1,
                    grad_scale: smelt::optim::clip_factor(norm, 1.0),
                },
                0.1,
            );
        }
        model.exec.backend.runtime().synchronize().map_err(e)?;
        model.exec.backend.check().map_err(e)?;
        let secs = timed_from.expect("timed").elapsed().as_secs_f64();
        let tokens_per_s = (steps * b * T) as f64 / secs;
        let n_params = config.num_params();
        let flops_per_token = 6.0 * n_params as f64 + 6.0 * (L * C * T) as f64;
        let achieved = tokens_per_s * flops_per_token;
        let (first, last) = (losses[0], *losses.last().expect("steps"));
        let replaying = model.exec.is_replaying();
        let mut push = |name: &str, ours: f64, baseline: Option<f64>, unit, note: String| {
            rows.push(Row {
                section: "train",
                name: name.into(),
                ours: Some(ours),
                baseline,
                unit,
                note,
            });
        };
        push(
            "tokens_per_s",
            tokens_per_s,
            None,
            "tok/s",
            format!(
                "GPT-2 124M bf16, B={b} T={T}, {steps} steps after {warmup} warm-up, {:.1} ms/step, CUDA graph replay: {replaying}",
                secs * 1e3 / steps as f64
            ),
        );
        push(
            "mfu",
            100.0 * achieved / PEAK_FLOPS,
            None,
            "%",
            format!(
                "tokens/s·(6N + 6·L·C·T)/989e12, N = {n_params}: {:.1} TFLOP/s achieved",
                achieved / 1e12
            ),
        );
        push(
            "achieved_tflops",
            achieved / 1e12,
            Some(PEAK_FLOPS / 1e12),
            "TFLOP/s",
            "baseline: 989 TFLOP/s dense bf16 peak".into(),
        );
        push(
            "loss_first",
            f64::from(first),
            None,
            "nats",
            "step 1 (random tokens < 1024; ln 50257 = 10.82)".into(),
        );
        push(
            "loss_last",
            f64::from(last),
            Some(f64::from(first)),
            "nats",
            format!(
                "step {}; baseline: the first step's loss (must fall)",
                warmup + steps
            ),
        );
        if last.is_nan() || last >= first {
            return Err(format!(
                "the loss did not fall: {first:.4} at step 1, {last:.4} at step {}",
                warmup + steps
            ));
        }
        Ok(())
    }
}
