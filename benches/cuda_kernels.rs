//! Criterion benches of the device backend's kernels on a GPU: `DeviceBackend<CudaRuntime>`
//! (bf16 tensor-core precision) `Backend` methods at GPT-2 124M sizes (B=8, T=1024, C=768,
//! NH=12, vocab 50257 padded to 50304), on one arena. Throughput is in bytes (memory-bound
//! kernels: inputs read once plus outputs written once) or in elements = FLOPs (matmul: 2mnk,
//! the backend's bf16 casts of the operands included; attention: causal 4·B·NH·T²·hs/2
//! forward, 2.5× that backward), so criterion prints GB/s or Gelem/s = GFLOP/s.
//!
//! Each sample launches `iters` calls, then synchronizes the stream (wall clock).
//! Without a GPU, a driver or CUDA kernels in this build it prints `skipped: <why>`, registers
//! no bench and exits 0.
//!
//! cargo bench --bench cuda_kernels [-- FILTER --warm-up-time 1 --measurement-time 2]

use criterion::Criterion;

fn main() {
    if let Err(why) = smelt::backend::cuda::probe() {
        println!("skipped: {why}");
        return;
    }
    #[cfg(smelt_emulation)]
    {
        let mut c = Criterion::default().configure_from_args();
        gpu::benches(&mut c);
        c.final_summary();
    }
    #[cfg(not(smelt_emulation))]
    {
        let _ = Criterion::default;
        println!("skipped: this build has no device backend");
    }
}

#[cfg(smelt_emulation)]
mod gpu {
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput};
    use smelt::backend::cuda::CudaRuntime;
    use smelt::backend::device::{DeviceBackend, Precision, Runtime};
    use smelt::backend::{AdamWGroup, AdamWStep, AttentionShape, Backend, MatmulShape, View};

    const B: usize = 8;
    const T: usize = 1024;
    const C: usize = 768;
    const NH: usize = 12;
    const V: usize = 50257;
    const VP: usize = 50304;
    const N: usize = B * T;

    pub fn benches(c: &mut Criterion) {
        let rt = CudaRuntime::new(0).expect("CUDA runtime");
        let be = DeviceBackend::new(rt, Precision::Bf16);
        let mut at = 0usize;
        let mut take = |len: usize| {
            let v = View::new(at, len);
            at = (at + len).next_multiple_of(4);
            v
        };
        let (x4, y4, d4, dx4) = (
            take(4 * N * C),
            take(4 * N * C),
            take(4 * N * C),
            take(4 * N * C),
        );
        let (x, y, z) = (take(N * C), take(N * C), take(N * C));
        let (w, bias, dw, db, mean, rstd) = (take(C), take(C), take(C), take(C), take(N), take(N));
        let (wfc, qkv, dqkv, lse) = (
            take(4 * C * C),
            take(3 * N * C),
            take(3 * N * C),
            take(N * NH),
        );
        let (logits, ce_lse, loss) = (take(N * VP), take(N), take(1));
        let params = 124_475_904;
        let (p, g, m, v) = (take(params), take(params), take(params), take(params));
        let mut arena = be.alloc(at).expect("arena");
        let a = &mut arena;
        for (i, view) in [x4, d4, x, y, w, bias, wfc, qkv, logits, p, g]
            .into_iter()
            .enumerate()
        {
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
        let mut targets = be.alloc_indices(N).expect("indices");
        let ids: Vec<u32> = (0..N).map(|i| ((i * 7919) % V) as u32).collect();
        be.write_indices(&mut targets, &ids).expect("targets");

        let mut group = c.benchmark_group("cuda");
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
        let bytes = |n: usize| Throughput::Bytes(4 * n as u64);
        bench!("gelu_forward", bytes(8 * N * C), |a| be
            .gelu_forward(a, y4, x4));
        bench!("gelu_backward", bytes(12 * N * C), |a| be
            .gelu_backward(a, dx4, x4, d4));
        bench!("add", bytes(3 * N * C), |a| be.add(a, z, x, y));
        bench!("add_into", bytes(3 * N * C), |a| be.add_into(a, z, x));
        bench!("layernorm_forward", bytes(2 * N * C), |a| {
            be.layernorm_forward(a, z, mean, rstd, x, w, bias, N, C, 1e-5)
        });
        bench!("layernorm_backward", bytes(3 * N * C), |a| {
            be.layernorm_backward(a, z, dw, db, y, x, w, mean, rstd, N, C)
        });
        bench!("cross_entropy_forward", bytes(N * V), |a| {
            be.cross_entropy_forward(a, loss, ce_lse, logits, &targets, N, V, VP)
        });
        let groups = [AdamWGroup {
            param: p,
            grad: g,
            m,
            v,
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
        bench!("adamw", bytes(7 * params), |a| be.adamw(a, &groups, &step));
        let fc = MatmulShape {
            m: N,
            k: C,
            n: 4 * C,
            trans_a: false,
            trans_b: false,
        };
        let flops = |f: f64| Throughput::Elements(f as u64);
        bench!("matmul_fc_bf16", flops(2.0 * (N * C * 4 * C) as f64), |a| {
            be.matmul(a, y4, x, wfc, None, fc)
        });
        let shape = AttentionShape {
            b: B,
            t: T,
            c: C,
            n_head: NH,
        };
        let att = 4.0 * (B * NH * T * T * (C / NH)) as f64 / 2.0;
        bench!("attention_forward", flops(att), |a| {
            be.attention_forward(a, z, lse, qkv, shape)
        });
        bench!("attention_backward", flops(2.5 * att), |a| {
            be.attention_backward(a, dqkv, y, qkv, z, lse, shape)
        });
        group.finish();
    }
}
