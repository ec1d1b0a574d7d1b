//! One full training step (forward, backward, gradient norm, AdamW) of a GPT-2 with
//! L4 H4 C256 T256 V4096 B8 on the CPU backend, on random tokens. Also prints where the
//! time goes, per op kind, from the executor's profiler.
//!
//! cargo bench --bench train_step

use criterion::{criterion_group, criterion_main, Criterion};
use smelt::backend::cpu::CpuBackend;
use smelt::backend::AdamWStep;
use smelt::model::{Gpt, GptConfig};
use smelt::rng::Rng;

const BATCH: usize = 8;
const SEQ: usize = 256;

fn model() -> Gpt<CpuBackend> {
    let config = GptConfig {
        n_layer: 4,
        n_head: 4,
        n_embd: 256,
        block_size: SEQ,
        vocab_size: 4096,
    };
    let mut m = Gpt::new(CpuBackend::new(), config, BATCH, SEQ, true).unwrap();
    m.init_gpt2(1).unwrap();
    let mut rng = Rng::new(2);
    let ids: Vec<u32> = (0..BATCH * SEQ + 1)
        .map(|_| rng.below(4096) as u32)
        .collect();
    m.set_batch(&ids[..BATCH * SEQ], Some(&ids[1..])).unwrap();
    m
}

fn step(m: &mut Gpt<CpuBackend>, n: u64) {
    m.exec.zero_grads();
    m.forward_backward().unwrap();
    let norm = m.exec.grad_norm();
    let clip = smelt::optim::clip_factor(norm, 1.0);
    let hp = AdamWStep {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        step: n,
        grad_scale: clip,
    };
    m.exec.adamw(&hp, 0.1);
}

fn bench(c: &mut Criterion) {
    let mut m = model();
    let (planned, naive) = m.exec.plan.activation_bytes();
    println!(
        "L4 H4 C256 T256 V4096 B8: activations planned {:.1} MB vs naive {:.1} MB; arena {:.1} MB",
        planned as f64 / 1e6,
        naive as f64 / 1e6,
        m.exec.plan.total as f64 * 4.0 / 1e6
    );
    // One profiled step first, to show the split by op.
    m.exec.enable_profile();
    step(&mut m, 1);
    step(&mut m, 2);
    for (kind, time, calls) in m.exec.profile() {
        println!(
            "  {kind:<24} {:>8.1} ms over 2 steps ({calls} calls)",
            time.as_secs_f64() * 1e3
        );
    }
    let mut m = model();
    let mut n = 0;
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements((BATCH * SEQ) as u64));
    group.bench_function("L4_H4_C256_T256_V4096_B8", |b| {
        b.iter(|| {
            n += 1;
            step(&mut m, n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
