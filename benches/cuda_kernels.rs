//! Criterion benches of every kernel (and kernel sequence) on a GPU, through the `Backend`
//! methods of `DeviceBackend<CudaRuntime>` that training calls, at GPT-2 124M sizes (B=8,
//! T=1024, C=768, NH=12, vocab 50257 padded to 50304), in both precisions: group `cuda_bf16`
//! (bf16 activations, tensor cores; parameters, gradients, statistics in f32, as training has
//! them) and group `cuda_f32`. Throughput is in bytes (memory-bound kernels: inputs read once
//! plus outputs written once) or in elements = FLOPs (matmul: 2mnk; attention: causal
//! 4·B·NH·T²·hs/2 forward, 2.5× that backward, as FlashAttention counts), so criterion prints
//! GB/s or Gelem/s = GFLOP/s. `gpu_report` sets these against baselines and peaks.
//!
//! Each sample launches `iters` calls, then synchronizes the stream (wall clock).
//! Without a GPU it prints `skipped: <why>` and exits 0; with `SMELT_REQUIRE_GPU` set, or a
//! GPU present that this build cannot use (no kernels built in), it fails instead.
//!
//! cargo bench --bench cuda_kernels [-- FILTER --warm-up-time 1 --measurement-time 2]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use smelt::backend::cuda::{probe, CudaRuntime};
use smelt::backend::device::{DeviceBackend, Precision, Runtime};
use smelt::backend::{AdamWGroup, AdamWStep, AttentionShape, Backend, DType, MatmulShape, View};

const B: usize = 8;
const T: usize = 1024;
const C: usize = 768;
const NH: usize = 12;
const V: usize = 50257;
const VP: usize = 50304;
const N: usize = B * T;
/// GPT-2 124M's parameters with the vocabulary padded to `VP`.
const PARAMS: usize = 124_475_904;

fn main() {
    if let Err(why) = probe() {
        // SAFETY: only tries to dlopen libcuda.
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        let present = driver && cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0);
        if present || std::env::var_os("SMELT_REQUIRE_GPU").is_some() {
            eprintln!("cuda_kernels: FAILED: a GPU is required here but CUDA cannot run: {why}");
            std::process::exit(1);
        }
        println!("skipped: {why}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, Precision::Bf16);
    benches(&mut c, Precision::F32);
    c.final_summary();
}

/// Consecutive views of one arena, each starting 16-byte aligned.
struct Bump(usize);
impl Bump {
    fn take(&mut self, len: usize, dtype: DType) -> View {
        let v = View::typed(self.0, len, dtype);
        self.0 = v.end().next_multiple_of(4);
        v
    }
}

fn benches(c: &mut Criterion, precision: Precision) {
    let be = DeviceBackend::new(CudaRuntime::new(0).expect("CUDA runtime"), precision);
    let (act, f) = (be.activation_dtype(), DType::F32);
    let mut bump = Bump(0);
    let mut take = |len, dtype| bump.take(len, dtype);
    let (x4, y4, d4, dx4) = (
        take(4 * N * C, act),
        take(4 * N * C, act),
        take(4 * N * C, act),
        take(4 * N * C, act),
    );
    let (x, y, z, u) = (
        take(N * C, act),
        take(N * C, act),
        take(N * C, act),
        take(N * C, act),
    );
    let (xf, yf) = (take(N * C, f), take(N * C, f));
    let (w, bias, dw, db) = (take(C, f), take(C, f), take(C, f), take(C, f));
    let (mean, rstd) = (take(N, f), take(N, f));
    let (wfc, bfc) = (take(4 * C * C, act), take(4 * C, f));
    let (qkv, att, datt, dqkv, lse) = (
        take(3 * N * C, act),
        take(N * C, act),
        take(N * C, act),
        take(3 * N * C, act),
        take(N * NH, f),
    );
    let (logits, dlogits, ce_lse, loss) =
        (take(N * VP, act), take(N * VP, act), take(N, f), take(1, f));
    let (wte, wpe, dwte, dwpe) = (
        take(VP * C, f),
        take(T * C, f),
        take(VP * C, f),
        take(T * C, f),
    );
    let (p, g, m, v) = (
        take(PARAMS, f),
        take(PARAMS, f),
        take(PARAMS, f),
        take(PARAMS, f),
    );
    // In bf16 training AdamW also writes the weights' bf16 working copies.
    let copies = (act == DType::Bf16).then(|| take(PARAMS, DType::Bf16));
    let cast = take(4 * N * C, f);
    let mut arena = be.alloc(bump.0).expect("arena");
    let a = &mut arena;
    for (i, view) in [
        x4, d4, x, y, xf, yf, w, bias, wfc, bfc, qkv, datt, logits, wte, wpe, p, g, m, cast,
    ]
    .into_iter()
    .enumerate()
    {
        // Never zeros (they can run faster than real data); 1e-3 keeps AdamW's m, v sane.
        let data: Vec<f32> = (0..view.len.min(1 << 24))
            .map(|j| (((j * 7919 + i * 104_729) % 2001) as f32 / 1000.0 - 1.0) * 0.5)
            .collect();
        let mut off = 0;
        while off < view.len {
            let n = data.len().min(view.len - off);
            be.write(a, view.slice(off, n), &data[..n]).expect("write");
            off += n;
        }
    }
    be.fill(a, v, 1e-4);
    be.layernorm_forward(a, z, mean, rstd, x, w, bias, N, C, 1e-5);
    let shape = AttentionShape {
        b: B,
        t: T,
        c: C,
        n_head: NH,
    };
    be.attention_forward(a, att, lse, qkv, shape);
    let mut targets = be.alloc_indices(N).expect("indices");
    let ids: Vec<u32> = (0..N).map(|i| ((i * 7919) % V) as u32).collect();
    be.write_indices(&mut targets, &ids).expect("targets");
    be.check().expect("setup");

    let mut group = c.benchmark_group(match precision {
        Precision::Bf16 => "cuda_bf16",
        Precision::F32 => "cuda_f32",
    });
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    // Times `iters` calls of `f`, from the first launch to the end of the last.
    macro_rules! bench {
        ($name:expr, $throughput:expr, |$a:ident| $call:expr) => {
            group.throughput($throughput);
            group.bench_function($name, |bencher| {
                bencher.iter_custom(|iters| {
                    be.runtime().synchronize().expect("sync");
                    let start = Instant::now();
                    for _ in 0..iters {
                        let $a = &mut *a;
                        $call;
                    }
                    be.runtime().synchronize().expect("sync");
                    be.check().expect("kernel");
                    start.elapsed()
                })
            });
        };
    }
    // Bytes of `n` activations / f32 values.
    let ab = |n: usize| n * act.bytes();
    let bytes = |n: usize| Throughput::Bytes(n as u64);
    let flops = |f: f64| Throughput::Elements(f as u64);
    let nc = N * C;
    bench!("gelu_forward", bytes(2 * ab(4 * nc)), |a| be
        .gelu_forward(a, y4, x4));
    bench!("gelu_backward", bytes(3 * ab(4 * nc)), |a| be
        .gelu_backward(a, dx4, x4, d4));
    bench!("add", bytes(3 * ab(nc)), |a| be.add(a, z, x, y));
    bench!("add_into_f32", bytes(3 * 4 * nc), |a| be
        .add_into(a, yf, xf));
    bench!("layernorm_forward", bytes(2 * ab(nc) + 8 * N), |a| {
        be.layernorm_forward(a, z, mean, rstd, x, w, bias, N, C, 1e-5)
    });
    bench!("add_layernorm_forward", bytes(4 * ab(nc) + 8 * N), |a| {
        be.add_layernorm_forward(a, [u, z, mean, rstd], [x, y, w, bias], N, C, 1e-5)
    });
    bench!("layernorm_backward", bytes(3 * ab(nc) + 8 * N), |a| {
        be.layernorm_backward(a, z, dw, db, y, x, w, mean, rstd, N, C)
    });
    bench!("sum_rows", bytes(ab(4 * nc) + 16 * C), |a| {
        be.sum_rows(a, bfc, d4, N, 4 * C)
    });
    bench!("cross_entropy_forward", bytes(ab(N * V) + 12 * N), |a| {
        be.cross_entropy_forward(a, loss, ce_lse, logits, &targets, N, V, VP)
    });
    bench!(
        "cross_entropy_backward",
        bytes(ab(N * V) + ab(N * VP) + 8 * N),
        |a| {
            be.cross_entropy_backward(
                a,
                dlogits,
                logits,
                ce_lse,
                &targets,
                1.0 / N as f32,
                N,
                V,
                VP,
            )
        }
    );
    bench!("embedding_forward", bytes(8 * nc + ab(nc) + 4 * N), |a| {
        be.embedding_forward(a, x, &targets, wte, wpe, B, T, C)
    });
    bench!(
        "embedding_backward",
        bytes(ab(nc) + 4 * VP * C + 4 * T * C),
        |a| { be.embedding_backward(a, dwte, dwpe, y, &targets, B, T, C) }
    );
    bench!("sum_squares", bytes(4 * PARAMS), |a| {
        let _ = be.sum_squares(a, g);
    });
    let groups = [AdamWGroup {
        param: p,
        grad: g,
        m,
        v,
        copy: copies,
        weight_decay: 0.1,
    }];
    let step = AdamWStep {
        lr: 1e-5,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        step: 10,
        grad_scale: 1.0,
    };
    let copy_bytes = if copies.is_some() { 2 * PARAMS } else { 0 };
    bench!("adamw", bytes(7 * 4 * PARAMS + copy_bytes), |a| be
        .adamw(a, &groups, &step));
    if act == DType::Bf16 {
        bench!("cast_f32_to_bf16", bytes(6 * 4 * nc), |a| be
            .convert(a, x4, cast));
        bench!("cast_bf16_to_f32", bytes(6 * 4 * nc), |a| be
            .convert(a, cast, x4));
    }
    let fc = MatmulShape {
        m: N,
        k: C,
        n: 4 * C,
        trans_a: false,
        trans_b: false,
    };
    let fc_flops = flops(2.0 * (N * C * 4 * C) as f64);
    bench!("matmul_fc", fc_flops.clone(), |a| be.matmul(
        a,
        y4,
        x,
        wfc,
        Some(bfc),
        fc
    ));
    bench!("matmul_gelu_fc", fc_flops, |a| be.matmul_gelu(
        a,
        y4,
        dx4,
        x,
        wfc,
        Some(bfc),
        fc
    ));
    let fc_dw = MatmulShape {
        m: C,
        k: N,
        n: 4 * C,
        trans_a: true,
        trans_b: false,
    };
    bench!(
        "matmul_fc_dweight_f32_out",
        flops(2.0 * (N * C * 4 * C) as f64),
        |a| { be.matmul(a, p.slice(0, 4 * C * C), x, d4, None, fc_dw) }
    );
    let att_flops = 4.0 * (B * NH * T * T * (C / NH)) as f64 / 2.0;
    bench!("attention_forward", flops(att_flops), |a| {
        be.attention_forward(a, att, lse, qkv, shape)
    });
    bench!("attention_backward", flops(2.5 * att_flops), |a| {
        be.attention_backward(a, dqkv, datt, qkv, att, lse, shape)
    });
    group.finish();
}
