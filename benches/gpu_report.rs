//! How fast the CUDA kernels and a GPT-2 124M training run are on this GPU: one report, each
//! figure next to a baseline measured in the same run and, for arithmetic, as a percentage of
//! the GPU's peak. Everything runs through `DeviceBackend<CudaRuntime>`, the `Backend` methods
//! the training executor calls, with the dtypes training gives them.
//!
//! First the device: driver (the CUDA version it supports), name, compute capability,
//! multiprocessors, memory, clocks, L2 (`GPU-PROPERTY` lines). A driver older than the kernels
//! need (built with CUDA 13.0: driver 580, CUDA 13.0) stops the run with one line, exit 3.
//! `--probe` stops after that.
//!
//! a. `matmul`: the bf16 tensor-core matmul (`Precision::Bf16`, bf16 operands) at the GPT-2
//!    124M shapes with B·T rows: each forward matmul (bf16 out, as activations are), its input
//!    gradient dA (bf16 out) and its weight gradient dB (f32 out, as parameter gradients are),
//!    with the transposes `graph::autodiff` builds. Baseline: cuBLASLt (`libcublasLt`, found
//!    by tools/gpu-check.sh in pip's nvidia-cublas wheel) with the same operand and output
//!    types, f32 accumulation, on buffers with the same contents. TFLOP/s = 2·m·n·k / time;
//!    the %-of-peak column is against 989 TFLOP/s (H100/H200 SXM dense bf16, NVIDIA's
//!    datasheet). No cuBLASLt is a failure of the section (a matmul figure without its
//!    baseline is easy to misread). "ours" is the kernel the backend picks (wgmma on Hopper
//!    for the products `matmul_wgmma` supports, the note says which); where that is wgmma, the
//!    note also times the mma.sync kernel it replaces on the same operands.
//! b. `memory`: the memory-bound kernels training runs, on bf16 activations (parameters,
//!    gradients, optimizer state and statistics in f32): GELU, residual add, layernorm,
//!    residual + layernorm, their backwards, cross-entropy, embedding, bias-gradient sums,
//!    the gradient norm, AdamW, the f32 ↔ bf16 casts. GB/s = the minimal traffic (every input
//!    read once, every output written once; each row's note gives the formula) / time,
//!    against a device-to-device copy of 1 GiB (2 GiB moved).
//! c. `attention`: causal attention forward and backward at B, T=1024, C=768, NH=12, in bf16
//!    (tensor cores; dtypes as in training, any cast the backend stages included) and in f32.
//!    FLOPs are counted as FlashAttention's benchmarks count them: the forward's two matmuls
//!    (Q·Kᵀ and P·V, 2·T²·hs each per head) are 4·B·NH·T²·hs, halved for the causal mask; the
//!    backward is 2.5× the forward (five T²·hs matmuls: S recomputed, dV, dP, dQ, dK). The
//!    softmax is not counted. TFLOP/s and % of peak: 989 for bf16 tensor cores, 67 TFLOP/s
//!    (H100/H200 SXM FP32, datasheet) for f32.
//! d. `train`: GPT-2 124M (`Gpt` on `Precision::Bf16`), B=`--train-batch` (32), T=1024, random
//!    tokens below 1024 (so the loss has somewhere to fall), `--steps` optimizer steps
//!    (zero_grads, set_batch, forward_backward, grad_norm, adamw, CUDA-graph replay after the
//!    first), timed after 3 warm-up steps with the wall clock up to a device synchronize.
//!    tokens/s, and MFU by llm.c's `gpt2_estimate_mfu` (train_gpt2.cu): flops per token =
//!    6·N + 6·L·C·T, N = the parameters with the vocabulary padded to 50304 (llm.c counts
//!    them so), MFU = tokens/s · flops per token / 989e12. The last loss must be below the
//!    first.
//!
//! Every GPU time is the mean of `--reps` runs (after 2 warm-up runs) between two CUDA events
//! on the runtime's stream.
//!
//! Output: one `GPU-REPORT\t<section>\t<name>\t<ours>\t<baseline>\t<ratio>\t<% of peak>\t<unit>`
//! line per figure (`-` where there is none), a readable table, and with `--json FILE` the same
//! as JSON. Without a GPU (no driver, or the driver sees none) it prints `skipped: <why>` and
//! exits 0 — unless `SMELT_REQUIRE_GPU` is set, or a GPU is present and this build cannot use
//! it (no kernels in this build): then it fails. A section that fails is reported, exit 1.
//!
//! cargo bench --bench gpu_report -- [--probe] [--json FILE] [--steps 20] [--batch 8]
//!                                   [--train-batch 32] [--reps 20] [--sections abcd]

use std::process::ExitCode;

/// Command-line options.
#[derive(Clone, Debug)]
struct Options {
    probe: bool,
    json: Option<String>,
    steps: usize,
    batch: usize,
    train_batch: usize,
    reps: usize,
    sections: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        probe: false,
        json: None,
        steps: 20,
        batch: 8,
        train_batch: 32,
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
            "--probe" => o.probe = true,
            "--json" => o.json = Some(value("--json")?),
            "--steps" => o.steps = number(value("--steps")?, "--steps")?,
            "--batch" => o.batch = number(value("--batch")?, "--batch")?,
            "--train-batch" => o.train_batch = number(value("--train-batch")?, "--train-batch")?,
            "--reps" => o.reps = number(value("--reps")?, "--reps")?,
            "--sections" => o.sections = value("--sections")?,
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "gpu_report [--probe] [--json FILE] [--steps N] [--batch B] [--train-batch B] [--reps N] [--sections abcd]"
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
    // The device first, whenever a driver sees one (also when this build cannot use it).
    let present = gpu::present();
    if present {
        match gpu::properties() {
            Ok(p) => {
                p.print();
                if let Err(stop) = p.check_driver() {
                    println!("gpu_report: STOP: {stop}");
                    return ExitCode::from(3);
                }
            }
            Err(e) => {
                println!("gpu_report: FAILED: reading the device's properties: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Err(why) = smelt::backend::cuda::probe() {
        if present || std::env::var_os("SMELT_REQUIRE_GPU").is_some() {
            println!("gpu_report: FAILED: a GPU is required here but CUDA cannot run: {why}");
            return ExitCode::from(1);
        }
        println!("skipped: {why}");
        return ExitCode::SUCCESS;
    }
    if opts.probe {
        return ExitCode::SUCCESS;
    }
    gpu::run(&opts)
}

mod gpu {
    use std::sync::Arc;
    use std::time::Instant;

    use cudarc::driver::sys::{CUdevice_attribute as A, CUevent_flags};
    use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
    use smelt::backend::cuda::CudaRuntime;
    use smelt::backend::device::{DeviceArena, DeviceBackend, Precision, Runtime};
    use smelt::backend::kernels::matmul::to_bf16;
    use smelt::backend::{
        AdamWGroup, AdamWStep, AttentionShape, Backend, DType, MatmulShape, View,
    };
    use smelt::model::{Gpt, GptConfig};

    use super::Options;

    type Res<T> = Result<T, String>;
    type Arena = DeviceArena<CudaSlice<u8>>;

    fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
        move |e| format!("{what}: {e:?}")
    }

    fn text<E: std::fmt::Display>(e: E) -> String {
        e.to_string()
    }

    // GPT-2 124M.
    const T: usize = 1024;
    const C: usize = 768;
    const NH: usize = 12;
    const L: usize = 12;
    const V: usize = 50257;
    const VP: usize = 50304;
    /// H100/H200 SXM dense bf16 tensor-core peak (NVIDIA's datasheet; llm.c's figure for MFU).
    const PEAK_BF16: f64 = 989e12;
    /// H100/H200 SXM FP32 peak without tensor cores (NVIDIA's datasheet).
    const PEAK_F32: f64 = 67e12;
    /// The kernels are built by CUDA 13.0's nvcc: the driver must support CUDA 13.0 (r580).
    const MIN_DRIVER_CUDA: i32 = 13000;

    /// Whether a CUDA driver is installed and sees at least one GPU.
    pub fn present() -> bool {
        // SAFETY: only tries to dlopen libcuda (cudarc panics on first use when it is absent).
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        driver && CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// What the driver says about GPU 0.
    pub struct Properties {
        pub driver_cuda: i32,
        pub list: Vec<(&'static str, String)>,
    }

    pub fn properties() -> Res<Properties> {
        cudarc::driver::result::init().map_err(err("cuInit"))?;
        let mut driver_cuda = 0i32;
        // SAFETY: writes one int.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_cuda) }
            .result()
            .map_err(err("cuDriverGetVersion"))?;
        let ctx = CudaContext::new(0).map_err(err("open GPU 0"))?;
        let attr = |a: A| ctx.attribute(a).ok();
        let (free, total) = ctx.mem_get_info().map_err(err("memory info"))?;
        let mhz = |khz: Option<i32>| khz.map_or("?".into(), |k| format!("{}", k / 1000));
        let mem_clock = attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        let bus = attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        // Double data rate: two transfers per memory clock over the bus.
        let bandwidth = match (mem_clock, bus) {
            (Some(k), Some(b)) => format!("{:.0}", 2.0 * k as f64 * 1e3 * b as f64 / 8.0 / 1e9),
            _ => "?".into(),
        };
        let cc = ctx
            .compute_capability()
            .map_err(err("compute capability"))?;
        let list = vec![
            (
                "driver_cuda",
                format!("{}.{}", driver_cuda / 1000, driver_cuda % 1000 / 10),
            ),
            ("name", ctx.name().unwrap_or_else(|_| "?".into())),
            ("compute_capability", format!("{}.{}", cc.0, cc.1)),
            (
                "multiprocessors",
                attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                    .map_or("?".into(), |n| n.to_string()),
            ),
            (
                "memory_total_gib",
                format!("{:.1}", total as f64 / (1u64 << 30) as f64),
            ),
            (
                "memory_free_gib",
                format!("{:.1}", free as f64 / (1u64 << 30) as f64),
            ),
            (
                "sm_clock_max_mhz",
                mhz(attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)),
            ),
            ("memory_clock_max_mhz", mhz(mem_clock)),
            ("memory_bus_bits", bus.map_or("?".into(), |b| b.to_string())),
            ("memory_bandwidth_peak_gbs", bandwidth),
            (
                "l2_mib",
                attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).map_or("?".into(), |b| {
                    format!("{:.0}", b as f64 / (1 << 20) as f64)
                }),
            ),
            (
                "smem_per_block_optin_kib",
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                    .map_or("?".into(), |b| (b / 1024).to_string()),
            ),
            (
                "kernels_built",
                smelt::backend::cuda::FATBIN.map_or("no (built without nvcc)".into(), |f| {
                    format!("{} KiB fatbin", f.len() / 1024)
                }),
            ),
        ];
        Ok(Properties { driver_cuda, list })
    }

    impl Properties {
        pub fn print(&self) {
            for (k, v) in &self.list {
                println!("GPU-PROPERTY\t{k}\t{v}");
            }
        }

        /// Fails when the driver is older than the CUDA the kernels were built with.
        pub fn check_driver(&self) -> Result<(), String> {
            if self.driver_cuda >= MIN_DRIVER_CUDA {
                return Ok(());
            }
            Err(format!(
                "the driver supports CUDA {}.{}, older than the kernels need: they are built with CUDA 13.0 and need driver 580 or newer",
                self.driver_cuda / 1000,
                self.driver_cuda % 1000 / 10
            ))
        }
    }

    /// One figure of the report.
    struct Row {
        section: &'static str,
        name: String,
        ours: Option<f64>,
        baseline: Option<f64>,
        /// `ours` as a percentage of the GPU's peak for this kind of arithmetic.
        peak_pct: Option<f64>,
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

    /// Deterministic values in [-1, 1), cheap to make (never all zeros: zeros can time faster).
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

    /// Values are made and uploaded this many at a time (even, so bf16 slices start on words).
    const CHUNK: usize = 1 << 24;

    /// Fills a view of the arena with the pattern times `scale` (bf16 views get it rounded).
    fn fill(
        be: &DeviceBackend<CudaRuntime>,
        arena: &mut Arena,
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
            be.write(arena, v.slice(at, n), &chunk[..n]).map_err(text)?;
            at += n;
        }
        Ok(())
    }

    /// Hands out consecutive views of one arena, each starting 16-byte aligned.
    struct Bump(usize);
    impl Bump {
        fn take(&mut self, len: usize, dtype: DType) -> View {
            let v = View::typed(self.0, len, dtype);
            self.0 = v.end().next_multiple_of(4);
            v
        }
    }

    fn gpt2() -> GptConfig {
        GptConfig {
            n_layer: L,
            n_head: NH,
            n_embd: C,
            block_size: T,
            vocab_size: V,
        }
    }

    /// Parameters as the training graph holds them: the vocabulary padded to `VP`.
    fn padded_params() -> usize {
        GptConfig {
            vocab_size: VP,
            ..gpt2()
        }
        .num_params()
    }

    pub fn run(opts: &Options) -> std::process::ExitCode {
        let started = Instant::now();
        let mut rows: Vec<Row> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let rt = match CudaRuntime::new(0) {
            Ok(rt) => rt,
            Err(e) => {
                println!("gpu_report: FAILED: opening the GPU: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        let device = rt.name();
        drop(rt);
        for s in opts.sections.chars() {
            let result = match s {
                'a' => section_matmul(opts, &mut rows),
                'b' => section_memory(opts, &mut rows),
                'c' => section_attention(opts, &mut rows),
                'd' => section_train(opts, &mut rows),
                other => Err(format!("unknown section '{other}' (sections: abcd)")),
            };
            if let Err(e) = result {
                println!("gpu_report: section {s} FAILED: {e}");
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
                "GPU-REPORT\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.section,
                r.name,
                cell(r.ours),
                cell(r.baseline),
                cell(r.ratio()),
                cell(r.peak_pct),
                r.unit
            );
        }
        println!();
        println!("GPU report on {device} ({secs:.0} s)");
        println!(
            "{:<10} {:<26} {:>10} {:>10} {:>7} {:>7}  {:<8} note",
            "section", "name", "ours", "baseline", "ratio", "%peak", "unit"
        );
        for r in rows {
            println!(
                "{:<10} {:<26} {:>10} {:>10} {:>7} {:>7}  {:<8} {}",
                r.section,
                r.name,
                cell(r.ours),
                cell(r.baseline),
                cell(r.ratio()),
                cell(r.peak_pct),
                r.unit,
                r.note
            );
        }
        for f in failures {
            println!("FAILED: {f}");
        }
        if let Some(path) = &opts.json {
            let props = properties().map(|p| {
                p.list
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                    .collect::<serde_json::Map<_, _>>()
            });
            let json = serde_json::json!({
                "device": device,
                "properties": props.ok(),
                "seconds": secs,
                "options": {
                    "steps": opts.steps, "batch": opts.batch, "train_batch": opts.train_batch,
                    "reps": opts.reps, "sections": opts.sections,
                },
                "rows": rows.iter().map(|r| serde_json::json!({
                    "section": r.section,
                    "name": r.name,
                    "ours": r.ours,
                    "baseline": r.baseline,
                    "ratio": r.ratio(),
                    "peak_pct": r.peak_pct,
                    "unit": r.unit,
                    "note": r.note,
                })).collect::<Vec<_>>(),
                "failures": failures,
            });
            let text = serde_json::to_string_pretty(&json).expect("JSON");
            match std::fs::write(path, text + "\n") {
                Ok(()) => println!("JSON: {path}"),
                Err(e) => println!("gpu_report: FAILED: writing {path}: {e}"),
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // a. matmul against cuBLASLt

    /// One matmul of the model: `out (m, n) = op(a) (m, k) · op(b) (k, n)`.
    struct Mm {
        name: String,
        s: MatmulShape,
        out: DType,
        /// The forward linear layers carry a bias (not the lm head).
        bias: bool,
    }

    /// The GPT-2 124M matmuls at `rows` = B·T rows.
    fn matmul_shapes(rows: usize) -> Vec<Mm> {
        // Forward: out (rows, oc) = x (rows, ic) · W (ic, oc); the lm head's W is wte (vp, c),
        // so trans_b.
        let layers = [
            ("qkv", C, 3 * C, false),
            ("attn_proj", C, C, false),
            ("fc", C, 4 * C, false),
            ("fc_proj", 4 * C, C, false),
            ("lm_head", C, VP, true),
        ];
        let shape = |m, k, n, trans_a, trans_b| MatmulShape {
            m,
            k,
            n,
            trans_a,
            trans_b,
        };
        let mut v = Vec::new();
        for (name, ic, oc, tb) in layers {
            v.push(Mm {
                name: format!("{name}.fwd"),
                s: shape(rows, ic, oc, false, tb),
                out: DType::Bf16,
                bias: !tb,
            });
        }
        for (name, ic, oc, tb) in layers {
            // dA (rows, ic) = dout (rows, oc) · op(W)ᵀ: an activation gradient, bf16.
            v.push(Mm {
                name: format!("{name}.dA"),
                s: shape(rows, oc, ic, false, !tb),
                out: DType::Bf16,
                bias: false,
            });
        }
        for (name, ic, oc, tb) in layers {
            // dB = xᵀ · dout (ic, oc), or for a trans_b weight doutᵀ · x (oc, ic): a parameter
            // gradient, f32.
            let (m, n) = if tb { (oc, ic) } else { (ic, oc) };
            v.push(Mm {
                name: format!("{name}.dB"),
                s: shape(m, rows, n, true, false),
                out: DType::F32,
                bias: false,
            });
        }
        v
    }

    /// cuBLASLt with bf16 A and B, f32 compute and scale, bf16 or f32 C = D, on row-major
    /// operands: out (m,n) = op(a) · op(b) is, column-major, outᵀ (n,m) = op(b)ᵀ · op(a)ᵀ.
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
                return Err("libcublasLt not found (tools/gpu-check.sh puts pip's nvidia-cublas lib/ on LD_LIBRARY_PATH)".into());
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

        fn plan(&self, s: &MatmulShape, out: DType) -> Res<LtPlan> {
            use cudarc::cublaslt::result as r;
            use cudarc::cublaslt::sys::{
                cublasComputeType_t, cublasLtMatmulDescAttributes_t as D,
                cublasLtMatmulPreferenceAttributes_t as P, cudaDataType_t,
            };
            let (m, k, n) = (s.m as u64, s.k as u64, s.n as u64);
            // A' = op(b)ᵀ (n,k): b stored (k,n) row-major is (n,k) column-major, ld n; stored
            // (n,k) row-major (trans_b) it is (k,n) column-major, ld k, transposed.
            let (a_rows, a_cols, lda) = if s.trans_b { (k, n, k) } else { (n, k, n) };
            // B' = op(a)ᵀ (k,m): likewise from a (m,k), or (k,m) when trans_a.
            let (b_rows, b_cols, ldb) = if s.trans_a { (m, k, m) } else { (k, m, k) };
            let bf16 = cudaDataType_t::CUDA_R_16BF;
            let out_type = match out {
                DType::Bf16 => bf16,
                DType::F32 => cudaDataType_t::CUDA_R_32F,
            };
            let la = r::create_matrix_layout(bf16, a_rows, a_cols, lda as i64)
                .map_err(err("cuBLASLt layout"))?;
            let lb = r::create_matrix_layout(bf16, b_rows, b_cols, ldb as i64)
                .map_err(err("cuBLASLt layout"))?;
            let lc = r::create_matrix_layout(out_type, n, m, n as i64)
                .map_err(err("cuBLASLt layout"))?;
            let desc = r::create_matmul_desc(
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cudaDataType_t::CUDA_R_32F,
            )
            .map_err(err("cuBLASLt matmul desc"))?;
            let (opa, opb) = (i32::from(s.trans_b), i32::from(s.trans_a));
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

        /// out = op(a) · op(b) with the addresses of bf16 `a`, `b` and `out` of the plan's type.
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

    fn section_matmul(opts: &Options, rows: &mut Vec<Row>) -> Res<()> {
        let be = DeviceBackend::new(CudaRuntime::new(0).map_err(text)?, Precision::Bf16);
        let stream = be.runtime().stream().clone();
        let shapes = matmul_shapes(opts.batch * T);
        let max_a = shapes.iter().map(|x| x.s.m * x.s.k).max().unwrap_or(0);
        let max_b = shapes.iter().map(|x| x.s.k * x.s.n).max().unwrap_or(0);
        let max_out = shapes.iter().map(|x| x.s.m * x.s.n).max().unwrap_or(0);
        eprintln!(
            "gpu_report: a. matmul: {} shapes at B·T = {} rows",
            shapes.len(),
            opts.batch * T
        );
        // Ours: bf16 operands in an arena; outputs of both dtypes; a bias.
        let mut bump = Bump(0);
        let a = bump.take(max_a, DType::Bf16);
        let b = bump.take(max_b, DType::Bf16);
        let out16 = bump.take(max_out, DType::Bf16);
        let out32 = bump.take(max_out, DType::F32);
        let bias = bump.take(VP, DType::F32);
        let mut arena = be.alloc(bump.0).map_err(text)?;
        fill(&be, &mut arena, a, 1, 1.0)?;
        fill(&be, &mut arena, b, 2, 1.0)?;
        fill(&be, &mut arena, bias, 3, 0.1)?;
        // cuBLASLt: its own buffers with the same bf16 contents.
        let rt = be.runtime();
        let alloc = |bytes| rt.alloc(bytes).map_err(text);
        let (mut la, mut lb, lout) = (alloc(2 * max_a)?, alloc(2 * max_b)?, alloc(4 * max_out)?);
        for (buf, len, salt) in [(&mut la, max_a, 1), (&mut lb, max_b, 2)] {
            let chunk = to_bf16(&pattern(CHUNK.min(len), salt));
            let mut at = 0;
            while at < len {
                let n = chunk.len().min(len - at);
                rt.upload(buf, 2 * at, bytemuck::cast_slice(&chunk[..n]))
                    .map_err(text)?;
                at += n;
            }
        }
        let (pa, pb, pout) = (rt.address(&la), rt.address(&lb), rt.address(&lout));
        let lt = Lt::new(&stream);
        if let Err(e) = &lt {
            eprintln!("gpu_report: no cuBLASLt baseline: {e}");
        }
        for mm in &shapes {
            let s = mm.s;
            let flops = 2.0 * (s.m * s.n * s.k) as f64;
            let out = match mm.out {
                DType::Bf16 => out16,
                DType::F32 => out32,
            };
            let (a, b, out) = (
                a.slice(0, s.m * s.k),
                b.slice(0, s.k * s.n),
                out.slice(0, s.m * s.n),
            );
            let bias = mm.bias.then(|| bias.slice(0, s.n));
            let ours = time_ms(&stream, opts.reps, || {
                be.matmul(&mut arena, out, a, b, bias, s);
                be.check().map_err(text)
            })?;
            let base = match &lt {
                Ok(lt) => {
                    let plan = lt.plan(&s, mm.out)?;
                    Some(time_ms(&stream, opts.reps, || {
                        // SAFETY: the buffers hold the largest shape's operands.
                        unsafe { lt.run(&plan, pout, pa, pb) }
                    })?)
                }
                Err(_) => None,
            };
            // Where the backend takes the Hopper kernel, the mma.sync kernel it replaces, timed
            // side by side on cuBLASLt's buffers (same contents, no bias).
            let wgmma = smelt::backend::kernels::matmul_wgmma::supports(rt, &s, pa, pb);
            let mma_sync = if wgmma {
                use smelt::backend::kernels::{int, matmul as k};
                let (m, kk, n) = (int(s.m), int(s.k), int(s.n));
                Some(time_ms(&stream, opts.reps, || {
                    // SAFETY: the buffers hold the largest shape's operands and output.
                    unsafe {
                        match mm.out {
                            DType::F32 => {
                                k::matmul_bf16::launch(rt, pout, 0, pa, pb, 0, m, kk, n, 0, 1)
                            }
                            DType::Bf16 => k::matmul_bf16_to_bf16::launch(
                                rt, pout, 0, pa, pb, 0, m, kk, n, 0, 1,
                            ),
                        }
                    }
                    .map_err(text)
                })?)
            } else {
                None
            };
            let tflops = |ms: f64| flops / (ms * 1e-3) / 1e12;
            let flags = match (s.trans_a, s.trans_b) {
                (false, false) => "",
                (true, false) => " trans_a",
                (false, true) => " trans_b",
                (true, true) => " trans_a trans_b",
            };
            rows.push(Row {
                section: "matmul",
                name: mm.name.clone(),
                ours: Some(tflops(ours)),
                baseline: base.map(tflops),
                peak_pct: Some(100.0 * tflops(ours) * 1e12 / PEAK_BF16),
                unit: "TFLOP/s",
                note: format!(
                    "m={} k={} n={}{flags}, {:?} out{}; ours ({}) {ours:.3} ms{}{}",
                    s.m,
                    s.k,
                    s.n,
                    mm.out,
                    if mm.bias { " + bias (ours only)" } else { "" },
                    if wgmma { "wgmma" } else { "mma.sync" },
                    mma_sync.map_or(String::new(), |t| format!(
                        ", mma.sync {t:.3} ms ({:.0} TFLOP/s)",
                        tflops(t)
                    )),
                    base.map_or(String::new(), |b| format!(", cuBLASLt {b:.3} ms"))
                ),
            });
        }
        stream.synchronize().map_err(err("matmul"))?;
        lt.map(|_| ())
    }

    // ------------------------------------------------------------------------------------
    // b. memory-bound kernels against a device-to-device copy

    fn section_memory(opts: &Options, rows: &mut Vec<Row>) -> Res<()> {
        let be = DeviceBackend::new(CudaRuntime::new(0).map_err(text)?, Precision::Bf16);
        let stream = be.runtime().stream().clone();
        let reps = opts.reps;
        let (b, n) = (opts.batch, opts.batch * T);
        let nc = n * C;
        let params = padded_params();

        // The baseline: 1 GiB copied on the device.
        let copy_bytes = 1usize << 30;
        let src = be.runtime().alloc(copy_bytes).map_err(text)?;
        let mut dst = be.runtime().alloc(copy_bytes).map_err(text)?;
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
            peak_pct: None,
            unit: "GB/s",
            note: format!("cuMemcpyDtoDAsync of 1 GiB: 2 GiB moved, {copy_ms:.3} ms"),
        });

        let (h, f) = (DType::Bf16, DType::F32);
        let mut bump = Bump(0);
        // Activations (bf16) of one layer's MLP (4C wide) and residual stream (C wide).
        let (g_x, g_out, g_dout, g_dx) = (
            bump.take(4 * nc, h),
            bump.take(4 * nc, h),
            bump.take(4 * nc, h),
            bump.take(4 * nc, h),
        );
        let (x1, x2, x3, x4) = (
            bump.take(nc, h),
            bump.take(nc, h),
            bump.take(nc, h),
            bump.take(nc, h),
        );
        let (w, bias, dw, db) = (
            bump.take(C, f),
            bump.take(C, f),
            bump.take(C, f),
            bump.take(C, f),
        );
        let (mean, rstd) = (bump.take(n, f), bump.take(n, f));
        let (logits, dlogits) = (bump.take(n * VP, h), bump.take(n * VP, h));
        let (lse, loss) = (bump.take(n, f), bump.take(1, f));
        let (wte, wpe) = (bump.take(VP * C, f), bump.take(T * C, f));
        let (dwte, dwpe) = (bump.take(VP * C, f), bump.take(T * C, f));
        let (p, g, m, v) = (
            bump.take(params, f),
            bump.take(params, f),
            bump.take(params, f),
            bump.take(params, f),
        );
        // The weights' bf16 working copies, which AdamW writes with the masters in training.
        let copies = bump.take(params, h);
        let cast32 = bump.take(4 * nc, f);
        eprintln!(
            "gpu_report: b. memory-bound kernels at B·T = {n} ({:.1} GB arena)",
            bump.0 as f64 * 4e-9
        );
        let mut arena = be.alloc(bump.0).map_err(text)?;
        let ar = &mut arena;
        for (i, (view, scale)) in [
            (g_x, 2.0),
            (g_dout, 1.0),
            (x1, 1.0),
            (x2, 1.0),
            (x3, 1.0),
            (w, 1.0),
            (bias, 0.1),
            (logits, 4.0),
            (wte, 0.02),
            (wpe, 0.02),
            (p, 0.02),
            (g, 0.01),
            (m, 0.001),
            (cast32, 1.0),
        ]
        .into_iter()
        .enumerate()
        {
            fill(&be, ar, view, 10 + i as u64, scale)?;
        }
        be.fill(ar, v, 1e-4);
        // mean and rstd as a layernorm forward leaves them (the backward reads them).
        be.layernorm_forward(ar, x4, mean, rstd, x3, w, bias, n, C, 1e-5);
        let mut tokens = be.alloc_indices(n).map_err(text)?;
        let ids: Vec<u32> = (0..n as u64)
            .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % V as u64) as u32)
            .collect();
        be.write_indices(&mut tokens, &ids).map_err(text)?;
        be.check().map_err(text)?;

        let mut bench = |name: &str, bytes: usize, formula: &str, f: &mut dyn FnMut()| -> Res<()> {
            let ms = time_ms(&stream, reps, || {
                f();
                be.check().map_err(text)
            })?;
            let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
            rows.push(Row {
                section: "memory",
                name: name.into(),
                ours: Some(gbs),
                baseline: Some(copy_gbs),
                peak_pct: None,
                unit: "GB/s",
                note: format!(
                    "{ms:.4} ms; bytes = {formula} = {:.1} MB",
                    bytes as f64 / 1e6
                ),
            });
            Ok(())
        };
        // Sizes in the formulas: N = B·T rows, 2 bytes per bf16, 4 per f32.
        let n4c = 4 * nc;
        bench("gelu_forward", 2 * 2 * n4c, "2·2·(N·4C)", &mut || {
            be.gelu_forward(ar, g_out, g_x)
        })?;
        bench("gelu_backward", 3 * 2 * n4c, "3·2·(N·4C)", &mut || {
            be.gelu_backward(ar, g_dx, g_x, g_dout)
        })?;
        bench("add (residual)", 3 * 2 * nc, "3·2·(N·C)", &mut || {
            be.add(ar, x3, x1, x2)
        })?;
        bench(
            "layernorm_forward",
            2 * 2 * nc + 4 * 2 * C + 4 * 2 * n,
            "2·2·N·C + 4·2C (w, b) + 4·2N (mean, rstd)",
            &mut || be.layernorm_forward(ar, x4, mean, rstd, x3, w, bias, n, C, 1e-5),
        )?;
        bench(
            "residual+layernorm",
            4 * 2 * nc + 4 * 2 * C + 4 * 2 * n,
            "4·2·N·C (a, b, sum, out) + 4·2C + 4·2N",
            &mut || {
                be.add_layernorm_forward(ar, [x3, x4, mean, rstd], [x1, x2, w, bias], n, C, 1e-5)
            },
        )?;
        bench(
            "layernorm_backward",
            3 * 2 * nc + 4 * 3 * C + 4 * 2 * n,
            "3·2·N·C (dout, x, dx) + 4·3C (w, dw, db) + 4·2N",
            &mut || be.layernorm_backward(ar, x4, dw, db, x1, x3, w, mean, rstd, n, C),
        )?;
        bench(
            "sum_rows (bias grad)",
            2 * nc + 4 * C,
            "2·N·C (dout) + 4C (dbias)",
            &mut || be.sum_rows(ar, dw, x1, n, C),
        )?;
        bench(
            "cross_entropy_forward",
            2 * n * V + 4 * 3 * n + 4,
            "2·N·V (logits) + 4·3N (targets, lse, losses) + 4",
            &mut || be.cross_entropy_forward(ar, loss, lse, logits, &tokens, n, V, VP),
        )?;
        bench(
            "cross_entropy_backward",
            2 * n * V + 2 * n * VP + 4 * 2 * n,
            "2·N·V + 2·N·Vp (dlogits, padding zeroed) + 4·2N",
            &mut || {
                be.cross_entropy_backward(
                    ar,
                    dlogits,
                    logits,
                    lse,
                    &tokens,
                    1.0 / n as f32,
                    n,
                    V,
                    VP,
                )
            },
        )?;
        bench(
            "embedding_forward",
            2 * 4 * nc + 2 * nc + 4 * n,
            "2·4·N·C (wte, wpe rows) + 2·N·C (out) + 4N (ids)",
            &mut || be.embedding_forward(ar, x1, &tokens, wte, wpe, b, T, C),
        )?;
        bench(
            "embedding_backward",
            2 * nc + 4 * VP * C + 4 * T * C + 4 * n,
            "2·N·C (dout) + 4·Vp·C (dwte) + 4·T·C (dwpe) + 4N",
            &mut || be.embedding_backward(ar, dwte, dwpe, x2, &tokens, b, T, C),
        )?;
        bench(
            "grad_norm (sum of squares)",
            4 * params,
            "4·P (the total is read back to the host each time)",
            &mut || {
                let _ = be.sum_squares(ar, g);
            },
        )?;
        let half = (params / 2).next_multiple_of(4);
        let groups = [
            AdamWGroup {
                param: p.slice(0, half),
                grad: g.slice(0, half),
                m: m.slice(0, half),
                v: v.slice(0, half),
                copy: Some(copies.slice(0, half)),
                weight_decay: 0.1,
            },
            AdamWGroup {
                param: p.slice(half, params - half),
                grad: g.slice(half, params - half),
                m: m.slice(half, params - half),
                v: v.slice(half, params - half),
                copy: Some(copies.slice(half, params - half)),
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
            "adamw (+ bf16 working copies)",
            4 * 7 * params + 2 * params,
            "4·7·P (p, g, m, v read; p, m, v written) + 2·P (bf16 copies written), P = 124M",
            &mut || be.adamw(ar, &groups, &step),
        )?;
        bench("cast_f32_to_bf16", 6 * n4c, "6·(N·4C)", &mut || {
            be.convert(ar, g_out, cast32)
        })?;
        bench("cast_bf16_to_f32", 6 * n4c, "6·(N·4C)", &mut || {
            be.convert(ar, cast32, g_x)
        })?;
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // c. attention

    fn section_attention(opts: &Options, rows: &mut Vec<Row>) -> Res<()> {
        let b = opts.batch;
        let hs = C / NH;
        let shape = AttentionShape {
            b,
            t: T,
            c: C,
            n_head: NH,
        };
        eprintln!("gpu_report: c. attention B={b} T={T} C={C} NH={NH}");
        // FlashAttention's count (see the top of this file).
        let fwd_flops = 4.0 * (b * NH * T * T * hs) as f64 / 2.0;
        let bwd_flops = 2.5 * fwd_flops;
        for (precision, act, peak, peak_name) in [
            (
                Precision::Bf16,
                DType::Bf16,
                PEAK_BF16,
                "989 (bf16 tensor cores)",
            ),
            (Precision::F32, DType::F32, PEAK_F32, "67 (f32)"),
        ] {
            let be = DeviceBackend::new(CudaRuntime::new(0).map_err(text)?, precision);
            let stream = be.runtime().stream().clone();
            let mut bump = Bump(0);
            let qkv = bump.take(b * T * 3 * C, act);
            let out = bump.take(b * T * C, act);
            let dout = bump.take(b * T * C, act);
            let dqkv = bump.take(b * T * 3 * C, act);
            let lse = bump.take(b * NH * T, DType::F32);
            let mut arena = be.alloc(bump.0).map_err(text)?;
            let ar = &mut arena;
            fill(&be, ar, qkv, 40, 1.0)?;
            fill(&be, ar, dout, 41, 1.0)?;
            let tag = match precision {
                Precision::Bf16 => "bf16",
                Precision::F32 => "f32",
            };
            let mut push = |name: String, flops: f64, ms: f64, what: &str| {
                let tflops = flops / (ms * 1e-3) / 1e12;
                rows.push(Row {
                    section: "attention",
                    name,
                    ours: Some(tflops),
                    baseline: None,
                    peak_pct: Some(100.0 * tflops * 1e12 / peak),
                    unit: "TFLOP/s",
                    note: format!("{ms:.3} ms; {what}; % of {peak_name} TFLOP/s"),
                });
            };
            let ms = time_ms(&stream, opts.reps, || {
                be.attention_forward(ar, out, lse, qkv, shape);
                be.check().map_err(text)
            })?;
            push(
                format!("forward_{tag}"),
                fwd_flops,
                ms,
                "causal FLOPs 4·B·NH·T²·hs/2",
            );
            let ms = time_ms(&stream, opts.reps, || {
                be.attention_backward(ar, dqkv, dout, qkv, out, lse, shape);
                be.check().map_err(text)
            })?;
            push(
                format!("backward_{tag}"),
                bwd_flops,
                ms,
                "2.5 × the forward's FLOPs; preprocess included",
            );
            stream.synchronize().map_err(err("attention"))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // d. GPT-2 124M training

    fn section_train(opts: &Options, rows: &mut Vec<Row>) -> Res<()> {
        let rt = CudaRuntime::new(0).map_err(text)?;
        let ctx = rt.context().clone();
        let config = gpt2();
        let (b, steps, warmup) = (opts.train_batch, opts.steps, 3usize);
        // The logits' kernels index B·T·Vp elements with a C int.
        if b * T * VP > i32::MAX as usize {
            return Err(format!(
                "--train-batch {b}: B·T·Vp = {} exceeds the kernels' 32-bit indexing",
                b * T * VP
            ));
        }
        eprintln!("gpu_report: d. training GPT-2 124M, B={b} T={T}, {warmup}+{steps} steps");
        let mut model =
            Gpt::new(DeviceBackend::new(rt, Precision::Bf16), config, b, T, true).map_err(text)?;
        model.init_gpt2(1337).map_err(text)?;
        // Random tokens below 1024: the loss can fall from ln(50257) ≈ 10.8 towards
        // ln(1024) ≈ 6.9 by learning which tokens occur. Four batches, cycled.
        let mut rng = smelt::rng::Rng::new(7);
        let batches: Vec<Vec<u32>> = (0..4)
            .map(|_| (0..b * T + 1).map(|_| rng.below(1024) as u32).collect())
            .collect();
        let mut losses = Vec::with_capacity(warmup + steps);
        let mut timed_from = None;
        let mut used_gib = 0.0;
        for step in 0..warmup + steps {
            if step == warmup {
                model.exec.backend.runtime().synchronize().map_err(text)?;
                if let Ok((free, total)) = ctx.mem_get_info() {
                    used_gib = (total - free) as f64 / (1u64 << 30) as f64;
                }
                timed_from = Some(Instant::now());
            }
            let ids = &batches[step % batches.len()];
            model.exec.zero_grads();
            model
                .set_batch(&ids[..b * T], Some(&ids[1..]))
                .map_err(text)?;
            let loss = model.forward_backward().map_err(text)?;
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
        model.exec.backend.runtime().synchronize().map_err(text)?;
        model.exec.backend.check().map_err(text)?;
        let secs = timed_from.expect("timed").elapsed().as_secs_f64();
        let tokens_per_s = (steps * b * T) as f64 / secs;
        // llm.c's gpt2_estimate_mfu: 6·N for the weight matmuls (forward and backward), 6·L·C·T
        // for attention's, per token; N counts wte at the padded vocabulary, as llm.c does.
        let n_params = padded_params();
        let flops_per_token = 6.0 * n_params as f64 + 6.0 * (L * C * T) as f64;
        let achieved = tokens_per_s * flops_per_token;
        let (first, last) = (losses[0], *losses.last().expect("steps"));
        let replaying = model.exec.is_replaying();
        let mut push = |name: &str, ours: f64, peak_pct, unit, note: String| {
            rows.push(Row {
                section: "train",
                name: name.into(),
                ours: Some(ours),
                baseline: None,
                peak_pct,
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
                "GPT-2 124M bf16, B={b} T={T}, {steps} steps after {warmup} warm-up, {:.1} ms/step, CUDA graph replay: {replaying}, {used_gib:.1} GiB of device memory in use",
                secs * 1e3 / steps as f64
            ),
        );
        push(
            "mfu",
            100.0 * achieved / PEAK_BF16,
            Some(100.0 * achieved / PEAK_BF16),
            "%",
            format!(
                "llm.c: tokens/s·(6N + 6·L·C·T)/989e12, N = {n_params}: {:.1} TFLOP/s achieved",
                achieved / 1e12
            ),
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
            None,
            "nats",
            format!("step {} (must be below the first)", warmup + steps),
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
