//! The device backend (`DeviceBackend`) on the emulated runtime: whole GPT training steps of
//! the CUDA kernels (launched by name, with the argument lists, scratch memory and geometry a
//! GPU gets, the forward and training passes recorded and replayed as CUDA graphs) against the
//! CPU backend. Tolerances from DESIGN.md: f32, a whole step within 1e-4 relative; bf16, the
//! loss within 1e-2 absolute.
#![cfg(smelt_emulation)]

use smelt::backend::cpu::CpuBackend;
use smelt::backend::device::emu::EmuRuntime;
use smelt::backend::device::{DeviceBackend, Precision, Runtime};

use smelt::backend::{AdamWStep, Backend};
use smelt::model::{Gpt, GptConfig};
use smelt::rng::Rng;

fn seed() -> u64 {
    match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Head size 16 (a tensor-core size), odd sequence length and vocabulary.
const CONFIG: GptConfig = GptConfig {
    n_layer: 2,
    n_head: 2,
    n_embd: 32,
    block_size: 16,
    vocab_size: 77,
};
const B: usize = 2;
const T: usize = 13;

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    if got.iter().any(|g| !g.is_finite()) {
        return f64::INFINITY;
    }
    (diff / norm.max(1e-30)).sqrt()
}

/// One optimizer step as the trainer takes it: grads zeroed, one micro-batch, the global
/// norm, AdamW. Returns (loss, grad norm).
fn train_step<B2: Backend>(m: &mut Gpt<B2>, ids: &[u32], targets: &[u32], step: u64) -> (f32, f64) {
    m.exec.zero_grads();
    m.set_batch(ids, Some(targets)).unwrap();
    let loss = m.forward_backward().unwrap();
    let norm = m.exec.grad_norm();
    m.exec.adamw(
        &AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step,
            grad_scale: 1.0,
        },
        0.1,
    );
    (loss, norm)
}

struct Run {
    losses: Vec<f32>,
    norms: Vec<f64>,
    first_grads: Vec<(String, Vec<f32>)>,
    params: Vec<(String, Vec<f32>)>,
}

fn run<B2: Backend>(backend: B2, seed: u64, steps: usize) -> (Run, Gpt<B2>) {
    let mut rng = Rng::new(seed);
    let mut m = Gpt::new(backend, CONFIG, B, T, true).unwrap();
    m.init_gpt2(seed).unwrap();
    let mut out = Run {
        losses: vec![],
        norms: vec![],
        first_grads: vec![],
        params: vec![],
    };
    for step in 1..=steps {
        let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        let targets: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        let (loss, norm) = train_step(&mut m, &ids, &targets, step as u64);
        if step == 1 {
            out.first_grads = m
                .grads()
                .unwrap()
                .into_iter()
                .map(|t| (t.name, t.data))
                .collect();
        }
        out.losses.push(loss);
        out.norms.push(norm);
    }
    out.params = m
        .state()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect();
    (out, m)
}

#[test]
fn f32_training_steps_match_the_cpu_backend_through_graph_replay() {
    let seed = seed();
    let steps = 4;
    let (cpu, _) = run(CpuBackend::new(), seed, steps);
    let (dev, m) = run(
        DeviceBackend::new(EmuRuntime::new(), Precision::F32),
        seed,
        steps,
    );
    // Step 1 ran eagerly, step 2 was recorded (then replayed), steps 3-4 replayed.
    assert!(
        m.exec.is_replaying(),
        "the training pass was never captured"
    );
    assert!(m.exec.backend.runtime().launches_run() > 0);
    for (i, (d, c)) in dev.losses.iter().zip(&cpu.losses).enumerate() {
        let rel = ((d - c) / c).abs();
        assert!(
            rel < 1e-4,
            "step {}: loss {d} vs cpu {c} (seed {seed})",
            i + 1
        );
    }
    for (i, (d, c)) in dev.norms.iter().zip(&cpu.norms).enumerate() {
        let rel = ((d - c) / c).abs();
        assert!(
            rel < 1e-4,
            "step {}: grad norm {d} vs cpu {c} (seed {seed})",
            i + 1
        );
    }
    for ((name, d), (_, c)) in dev.first_grads.iter().zip(&cpu.first_grads) {
        let e = rel_err(d, c);
        assert!(e < 1e-4, "grad {name}: rel err {e:e} (seed {seed})");
    }
    // Parameters after the steps. The key bias (the middle third of c_attn.bias) has a
    // gradient that is zero up to rounding (softmax ignores a per-row constant), which AdamW
    // turns into ±lr updates of either sign: it is compared by size only.
    let c = CONFIG.n_embd;
    for ((name, d), (_, cp)) in dev.params.iter().zip(&cpu.params) {
        let (mut d, mut cp) = (d.clone(), cp.clone());
        if name.ends_with("c_attn.bias") {
            let key_bias = |x: &mut Vec<f32>| x.drain(c..2 * c).collect::<Vec<f32>>();
            let (dk, ck) = (key_bias(&mut d), key_bias(&mut cp));
            let bound = 1e-3 * steps as f32 * 1.01;
            assert!(
                dk.iter().chain(&ck).all(|x| x.abs() <= bound),
                "key bias moved more than lr per step (seed {seed})"
            );
        }
        // AdamW divides each gradient by its own running size, so elements whose gradient is
        // near zero move by up to ±lr on rounding noise alone: after several steps on random
        // data a tensor can differ by ~1e-4 where every gradient agreed to 1e-6 (the losses,
        // norms and gradients above are the whole-step check, at 1e-4).
        let e = rel_err(&d, &cp);
        assert!(
            e < 5e-4,
            "param {name} after {steps} steps: rel err {e:e} (seed {seed})"
        );
    }
}

#[test]
fn bf16_tensor_core_steps_stay_close_to_the_cpu_backend() {
    let seed = seed();
    let steps = 3;
    let (cpu, _) = run(CpuBackend::new(), seed, steps);
    let (dev, _) = run(
        DeviceBackend::new(EmuRuntime::new(), Precision::Bf16),
        seed,
        steps,
    );
    for (i, (d, c)) in dev.losses.iter().zip(&cpu.losses).enumerate() {
        assert!(
            (d - c).abs() < 1e-2,
            "step {}: loss {d} vs cpu {c} (seed {seed})",
            i + 1
        );
    }
    for ((name, d), (_, c)) in dev.first_grads.iter().zip(&cpu.first_grads) {
        let e = rel_err(d, c);
        assert!(e < 5e-2, "grad {name}: rel err {e:e} (seed {seed})");
    }
}

#[test]
fn evaluation_forward_replays_and_matches() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut cpu = Gpt::new(CpuBackend::new(), CONFIG, B, T, true).unwrap();
    cpu.init_gpt2(seed).unwrap();
    let dev_backend = DeviceBackend::new(EmuRuntime::new(), Precision::F32);
    let mut dev = Gpt::new(dev_backend, CONFIG, B, T, true).unwrap();
    dev.copy_params_from(&cpu).unwrap();
    for _ in 0..3 {
        let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        let targets: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        cpu.set_batch(&ids, Some(&targets)).unwrap();
        dev.set_batch(&ids, Some(&targets)).unwrap();
        let (c, d) = (cpu.forward().unwrap(), dev.forward().unwrap());
        assert!(((d - c) / c).abs() < 1e-5, "loss {d} vs {c} (seed {seed})");
        let e = rel_err(&dev.logits().unwrap(), &cpu.logits().unwrap());
        assert!(e < 1e-5, "logits rel err {e:e} (seed {seed})");
    }
}

#[test]
fn a_capture_records_without_running_and_a_replay_runs() {
    let rt = EmuRuntime::new();
    let mut buf = rt.alloc_zeroed(4 * 100).unwrap();
    let addr = rt.address(&buf);
    rt.begin_capture().unwrap();
    // SAFETY: fills the 100 floats of `buf`.
    unsafe { smelt::backend::kernels::embedding::fill::launch(&rt, addr, 2.5, 100).unwrap() };
    assert!(
        rt.upload(&mut buf, 0, &[0u8; 4]).is_err(),
        "copies during a capture must be refused"
    );
    let graph = rt.end_capture().unwrap();
    let mut host = [0f32; 100];
    rt.download(&buf, 0, bytemuck::cast_slice_mut(&mut host))
        .unwrap();
    assert!(host.iter().all(|&x| x == 0.0), "a capture ran a kernel");
    rt.replay(&graph).unwrap();
    rt.download(&buf, 0, bytemuck::cast_slice_mut(&mut host))
        .unwrap();
    assert!(
        host.iter().all(|&x| x == 2.5),
        "the replay did not run the kernel"
    );
    assert!(rt.end_capture().is_err(), "end without begin must fail");
}

/// Losses of `steps` training steps on random batches, with or without graph replay.
fn replay_losses(capture: bool, seed: u64, steps: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let backend = DeviceBackend::new(EmuRuntime::new(), Precision::Bf16);
    let mut m = Gpt::new(backend, CONFIG, B, T, true).unwrap();
    m.exec.set_capture(capture);
    m.init_gpt2(seed).unwrap();
    (1..=steps as u64)
        .map(|step| {
            let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
            let targets: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
            let loss = train_step(&mut m, &ids, &targets, step).0;
            assert_eq!(m.exec.is_replaying(), capture && step >= 2);
            loss
        })
        .collect()
}

#[test]
fn graph_replay_equals_eager_launches_bit_for_bit() {
    // The kernels are deterministic (fixed reduction orders, no float atomics), so recording
    // and replaying must change nothing.
    let seed = seed();
    assert_eq!(
        replay_losses(false, seed, 4),
        replay_losses(true, seed, 4),
        "seed {seed}"
    );
}

#[test]
fn bf16_precision_stores_activations_in_half_the_memory() {
    use smelt::backend::DType;
    use smelt::graph::{Op, Storage};
    let backend = DeviceBackend::new(EmuRuntime::new(), Precision::Bf16);
    let m = Gpt::new(backend, CONFIG, B, T, true).unwrap();
    let g = &m.exec.graph;
    let dtype = |id: smelt::graph::TensorId| g.tensor(id).dtype;
    for t in &g.tensors {
        if matches!(t.storage, Storage::Param | Storage::GradAccum(_)) {
            assert_eq!(t.dtype, DType::F32, "{} must stay f32", t.name);
        }
    }
    for op in &g.ops {
        match *op {
            Op::LayerNorm {
                out, mean, rstd, ..
            }
            | Op::AddLayerNorm {
                out, mean, rstd, ..
            } => {
                assert_eq!(dtype(out), DType::Bf16);
                assert_eq!((dtype(mean), dtype(rstd)), (DType::F32, DType::F32));
            }
            Op::Attention { out, lse, .. } => {
                assert_eq!((dtype(out), dtype(lse)), (DType::Bf16, DType::F32));
            }
            Op::CrossEntropy { logits, loss, .. } => {
                assert_eq!((dtype(logits), dtype(loss)), (DType::Bf16, DType::F32));
            }
            // Weights reach the tensor cores as bf16 copies; parameter gradients are f32.
            // The copies are persistent tensors the optimizer writes: no op converts weights.
            Op::Matmul { a, b, out, .. } | Op::MatmulGelu { a, b, out, .. } => {
                assert_eq!((dtype(a), dtype(b)), (DType::Bf16, DType::Bf16));
                for x in [a, b] {
                    assert!(
                        matches!(
                            g.tensor(x).storage,
                            Storage::Activation | Storage::WorkingCopy(_)
                        ),
                        "matmul reads {} directly",
                        g.tensor(x).name
                    );
                }
                let param_grad = g
                    .ops
                    .iter()
                    .any(|o| matches!(*o, Op::AccumulateGrad { grad, .. } if grad == out));
                let want = if param_grad { DType::F32 } else { DType::Bf16 };
                assert_eq!(dtype(out), want, "{}", g.tensor(out).name);
            }
            _ => {}
        }
    }
    let copies = g
        .tensors
        .iter()
        .filter(|t| matches!(t.storage, Storage::WorkingCopy(_)))
        .inspect(|t| assert_eq!(t.dtype, DType::Bf16))
        .count();
    // c_attn, c_proj, c_fc, mlp c_proj per layer, and the tied wte for the LM head.
    assert_eq!(copies, 4 * CONFIG.n_layer + 1);
    // Memory, at a size where activations (not weight copies) dominate.
    let big = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
        block_size: 256,
        vocab_size: 500,
    };
    let bf16_model = Gpt::new(
        DeviceBackend::new(EmuRuntime::new(), Precision::Bf16),
        big,
        8,
        256,
        true,
    )
    .unwrap();
    let f32_model = Gpt::new(CpuBackend::new(), big, 8, 256, true).unwrap();
    let (bf16_bytes, _) = bf16_model.exec.plan.activation_bytes();
    let (f32_bytes, _) = f32_model.exec.plan.activation_bytes();
    eprintln!("activations: bf16 {bf16_bytes} B vs f32 {f32_bytes} B");
    assert!(
        (bf16_bytes as f64) < 0.65 * f32_bytes as f64,
        "bf16 activations take {bf16_bytes} B against {f32_bytes} B in f32"
    );
}

/// Launches of `kernel` a closure makes on `m`'s runtime.
fn launches_of<T>(
    m: &mut Gpt<DeviceBackend<EmuRuntime>>,
    kernel: &str,
    f: impl FnOnce(&mut Gpt<DeviceBackend<EmuRuntime>>) -> T,
) -> (u64, T) {
    let before = m.exec.backend.runtime().launches_of(kernel);
    let out = f(m);
    (m.exec.backend.runtime().launches_of(kernel) - before, out)
}

#[test]
fn bf16_passes_convert_no_weights_after_the_first_and_adamw_writes_the_copies() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let backend = DeviceBackend::new(EmuRuntime::new(), Precision::Bf16);
    let mut m = Gpt::new(backend, CONFIG, B, T, true).unwrap();
    m.init_gpt2(seed).unwrap();
    const CAST: &str = "cast_f32_to_bf16";
    let mut casts = Vec::new();
    for step in 1..=4u64 {
        let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        let (n, _) = launches_of(&mut m, CAST, |m| train_step(m, &ids, &ids, step));
        casts.push(n);
    }
    // Step 1 converts every weight once (one launch over the parameter region, after the
    // initialisation); later steps convert no weight: their casts (if any) are the backend's
    // staging of activations, the same every step, eager (step 2 records) or replayed.
    assert_eq!(casts[0], casts[1] + 1, "casts per step {casts:?}");
    assert!(casts[1..].iter().all(|&c| c == casts[1]), "{casts:?}");
    assert!(m.exec.is_replaying());
    let rt = m.exec.backend.runtime();
    assert_eq!(rt.launches_of("adamw_multi_bf16"), 4);
    assert_eq!(rt.launches_of("adamw_multi") + rt.launches_of("adamw"), 0);

    // Gradient accumulation: every micro-step of one optimizer step reads the same weights
    // (the same batch twice gives the same loss, bit for bit, and no conversion).
    let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
    m.exec.zero_grads();
    m.set_batch(&ids, Some(&ids)).unwrap();
    let (n, losses) = launches_of(&mut m, CAST, |m| {
        [m.forward_backward().unwrap(), m.forward_backward().unwrap()]
    });
    assert_eq!(losses[0].to_bits(), losses[1].to_bits());
    assert_eq!(n, 2 * casts[1]);
}

/// Under bf16 the tensor-core attention reads and writes the bf16 activations in place: a
/// training step launches no `cast_f32_to_bf16` at all (before the tensor-core kernels wrote
/// bf16 themselves, each layer's forward out and backward dqkv were staged in f32 and cast:
/// 2 · n_layer casts per step), and no `cast_bf16_to_f32` either.
#[test]
fn bf16_attention_is_not_staged() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let backend = DeviceBackend::new(EmuRuntime::new(), Precision::Bf16);
    let mut m = Gpt::new(backend, CONFIG, B, T, true).unwrap();
    m.init_gpt2(seed).unwrap();
    const KERNELS: [&str; 4] = [
        "cast_f32_to_bf16",
        "cast_bf16_to_f32",
        "attention_forward_bf16_hs16",
        "attention_backward_dq_bf16_hs16",
    ];
    let counts = |m: &Gpt<DeviceBackend<EmuRuntime>>| {
        KERNELS.map(|k| m.exec.backend.runtime().launches_of(k))
    };
    let mut per_step = Vec::new();
    for step in 1..=3u64 {
        let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
        let before = counts(&m);
        train_step(&mut m, &ids, &ids, step);
        let after = counts(&m);
        per_step.push(std::array::from_fn::<u64, 4, _>(|i| after[i] - before[i]));
    }
    eprintln!("launches of {KERNELS:?} per step: {per_step:?}");
    let n = CONFIG.n_layer as u64;
    // Step 1 converts the weights into their working copies (one cast); then none.
    assert_eq!(per_step[0], [1, 0, n, n], "{per_step:?}");
    assert!(
        per_step[1..].iter().all(|s| *s == [0, 0, n, n]),
        "{per_step:?}"
    );
}

#[test]
fn bf16_working_copies_follow_every_load_of_the_masters() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..B * T).map(|_| rng.below(77) as u32).collect();
    let bf16 = || DeviceBackend::new(EmuRuntime::new(), Precision::Bf16);
    // A model trained a few steps (its copies written by AdamW, its passes replayed).
    let mut m = Gpt::new(bf16(), CONFIG, B, T, true).unwrap();
    m.init_gpt2(seed).unwrap();
    for step in 1..=3 {
        train_step(&mut m, &ids, &ids, step);
    }
    assert!(m.exec.is_replaying());
    assert!(!m.exec.working_copies_stale());
    // Other parameters, and the loss a fresh model built from them gives.
    let mut other = Gpt::new(bf16(), CONFIG, B, T, true).unwrap();
    other.init_gpt2(seed ^ 0x5eed).unwrap();
    other.set_batch(&ids, Some(&ids)).unwrap();
    let want = other.forward().unwrap();
    let state: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> = other
        .state()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, (t.shape, t.data)))
        .collect();

    // Gpt::load (checkpoints, imports): Executor::write per parameter.
    m.load(&state).unwrap();
    assert!(m.exec.working_copies_stale());
    m.set_batch(&ids, Some(&ids)).unwrap();
    let (casts, got) = launches_of(&mut m, "cast_f32_to_bf16", |m| m.forward().unwrap());
    assert!(casts >= 1);
    assert_eq!(got.to_bits(), want.to_bits(), "after load: {got} vs {want}");
    assert!(!m.exec.working_copies_stale());

    // copy_params_from (Executor::write_region over the parameters), from a CPU model.
    let mut m2 = Gpt::new(bf16(), CONFIG, B, T, true).unwrap();
    m2.init_gpt2(seed).unwrap();
    train_step(&mut m2, &ids, &ids, 1);
    let mut cpu = Gpt::new(CpuBackend::new(), CONFIG, B, T, true).unwrap();
    cpu.load(&state).unwrap();
    m2.copy_params_from(&cpu).unwrap();
    m2.set_batch(&ids, Some(&ids)).unwrap();
    let got = m2.forward().unwrap();
    assert_eq!(got.to_bits(), want.to_bits(), "after copy: {got} vs {want}");

    // Optimizer state written alone leaves the copies as they are.
    let moments = m2.exec.read_region(m2.exec.plan.adam_m).unwrap();
    m2.exec.write_region(m2.exec.plan.adam_m, &moments).unwrap();
    assert!(!m2.exec.working_copies_stale());
}

#[test]
fn f32_precision_has_no_working_copies() {
    let m = Gpt::new(
        DeviceBackend::new(EmuRuntime::new(), Precision::F32),
        CONFIG,
        B,
        T,
        true,
    )
    .unwrap();
    assert!(m.exec.plan.working_copies.is_none());
    assert!(!m.exec.working_copies_stale());
}
