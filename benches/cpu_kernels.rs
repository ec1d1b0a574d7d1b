//! Benchmarks of the CPU reference kernels in f32, at GPT-ish sizes:
//! B=8, T=256, C=256, nh=4, V=4096. Also compares `matmul` with a naive triple loop.
//!
//! Run with `cargo bench --bench cpu_kernels`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smelt::backend::cpu::kernels as k;

const B: usize = 8;
const T: usize = 256;
const C: usize = 256;
const NH: usize = 4;
const V: usize = 4096;
const VP: usize = 4096; // V padded to a multiple of 64
const N: usize = B * T;

/// Deterministic pseudo-random values in [-1, 1) (an LCG; quality does not matter here).
fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand_tokens(len: usize, vocab: usize, seed: u64) -> Vec<u32> {
    rand_vec(len, seed)
        .iter()
        .map(|&x| ((x + 1.0) * 0.5 * vocab as f32) as u32 % vocab as u32)
        .collect()
}

/// The textbook triple loop `out (m,n) = a (m,k) · b (k,n)`, as a baseline for `matmul`.
fn naive_matmul(out: &mut [f32], a: &[f32], b: &[f32], m: usize, kk: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..kk {
                acc += a[i * kk + p] * b[p * n + j];
            }
            out[i * n + j] = acc;
        }
    }
}

fn bench_matmul(c: &mut Criterion) {
    // The c_attn projection: (B*T, C) · (C, 3C) + bias, weights stored (3C, C) as in llm.c.
    let (m, kk, n) = (N, C, 3 * C);
    let (a, w, bias) = (rand_vec(m * kk, 1), rand_vec(n * kk, 2), rand_vec(n, 3));
    let mut out = vec![0.0f32; m * n];
    let mut g = c.benchmark_group("matmul");
    g.throughput(Throughput::Elements((2 * m * kk * n) as u64)); // flops
    g.bench_function("fwd 2048x256x768 +bias (trans_b)", |bch| {
        bch.iter(|| {
            k::matmul(
                &mut out,
                black_box(&a),
                black_box(&w),
                Some(&bias),
                m,
                kk,
                n,
                false,
                true,
            )
        })
    });
    g.finish();

    // Library matmul against the naive loop at 256³.
    let s = 256;
    let (a, b) = (rand_vec(s * s, 4), rand_vec(s * s, 5));
    let mut out = vec![0.0f32; s * s];
    let mut g = c.benchmark_group("matmul_vs_naive_256");
    g.throughput(Throughput::Elements((2 * s * s * s) as u64));
    g.bench_function("gemm", |bch| {
        bch.iter(|| {
            k::matmul(
                &mut out,
                black_box(&a),
                black_box(&b),
                None,
                s,
                s,
                s,
                false,
                false,
            )
        })
    });
    g.bench_function("naive triple loop", |bch| {
        bch.iter(|| naive_matmul(&mut out, black_box(&a), black_box(&b), s, s, s))
    });
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let qkv: Vec<f32> = rand_vec(N * 3 * C, 6);
    let dout = rand_vec(N * C, 7);
    let (mut out, mut lse) = (vec![0.0f32; N * C], vec![0.0f32; B * NH * T]);
    let mut dqkv = vec![0.0f32; N * 3 * C];
    let mut g = c.benchmark_group("attention B8 T256 C256 nh4");
    g.bench_function("fwd", |bch| {
        bch.iter(|| k::attention_forward(&mut out, &mut lse, black_box(&qkv), B, T, C, NH))
    });
    k::attention_forward(&mut out, &mut lse, &qkv, B, T, C, NH);
    g.bench_function("bwd", |bch| {
        bch.iter(|| {
            k::attention_backward(&mut dqkv, black_box(&dout), &qkv, &out, &lse, B, T, C, NH)
        })
    });
    g.finish();
}

fn bench_layernorm(c: &mut Criterion) {
    let (x, dout) = (rand_vec(N * C, 8), rand_vec(N * C, 9));
    let (w, bias) = (rand_vec(C, 10), rand_vec(C, 11));
    let (mut out, mut mean, mut rstd) = (vec![0.0f32; N * C], vec![0.0f32; N], vec![0.0f32; N]);
    let (mut dx, mut dw, mut db) = (vec![0.0f32; N * C], vec![0.0f32; C], vec![0.0f32; C]);
    let mut g = c.benchmark_group("layernorm 2048x256");
    g.bench_function("fwd", |bch| {
        bch.iter(|| {
            k::layernorm_forward(
                &mut out,
                &mut mean,
                &mut rstd,
                black_box(&x),
                &w,
                &bias,
                N,
                C,
                1e-5,
            )
        })
    });
    g.bench_function("bwd", |bch| {
        bch.iter(|| {
            k::layernorm_backward(
                &mut dx,
                &mut dw,
                &mut db,
                black_box(&dout),
                &x,
                &w,
                &mean,
                &rstd,
                N,
                C,
            )
        })
    });
    g.finish();
}

fn bench_gelu(c: &mut Criterion) {
    let len = N * 4 * C;
    let (x, dout) = (rand_vec(len, 12), rand_vec(len, 13));
    let mut out = vec![0.0f32; len];
    let mut g = c.benchmark_group("gelu 2048x1024");
    g.bench_function("fwd", |bch| {
        bch.iter(|| k::gelu_forward(&mut out, black_box(&x)))
    });
    g.bench_function("bwd", |bch| {
        bch.iter(|| k::gelu_backward(&mut out, black_box(&x), &dout))
    });
    g.finish();
}

fn bench_cross_entropy(c: &mut Criterion) {
    let logits: Vec<f32> = rand_vec(N * VP, 14).iter().map(|x| 4.0 * x).collect();
    let targets = rand_tokens(N, V, 15);
    let (mut loss, mut lse) = (vec![0.0f32; 1], vec![0.0f32; N]);
    let mut dlogits = vec![0.0f32; N * VP];
    let mut g = c.benchmark_group("cross_entropy 2048x4096");
    g.bench_function("fwd", |bch| {
        bch.iter(|| {
            k::cross_entropy_forward(&mut loss, &mut lse, black_box(&logits), &targets, N, V, VP)
        })
    });
    g.bench_function("bwd", |bch| {
        bch.iter(|| {
            k::cross_entropy_backward(
                &mut dlogits,
                black_box(&logits),
                &lse,
                &targets,
                1.0,
                N,
                V,
                VP,
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_matmul, bench_attention, bench_layernorm, bench_gelu, bench_cross_entropy
}
criterion_main!(benches);
