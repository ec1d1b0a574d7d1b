//! Parity with PyTorch: the committed fixture (tools/make_fixture.sh) holds a tiny
//! transformers GPT2LMHeadModel's weights, a batch, its logits, loss, every gradient, and
//! the losses and weights after 3 AdamW steps with gradient clipping, computed in float64.
//! Our CPU engine (f32) must match: logits and loss to 1e-5, gradients and the optimizer
//! trajectory to 1e-4 (relative error ‖ours − theirs‖ / ‖theirs‖).

use std::collections::HashMap;
use std::path::Path;

use smelt::backend::cpu::CpuBackend;
use smelt::backend::AdamWStep;
use smelt::checkpoint::{read_safetensors, TensorMap};
use smelt::model::{Gpt, GptConfig};
use smelt::optim::clip_factor;

const LR: f32 = 1e-3;
const WEIGHT_DECAY: f32 = 0.1;

fn fixture() -> TensorMap {
    read_safetensors(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny.safetensors"),
    )
    .expect("fixture loads")
}

fn rel_err(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let diff: f64 = ours
        .iter()
        .zip(theirs)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let norm: f64 = theirs.iter().map(|&b| (b as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

fn ids(fx: &TensorMap, name: &str) -> Vec<u32> {
    fx[name].1.iter().map(|&x| x as u32).collect()
}

/// The model with the fixture's initial weights and batch loaded.
fn model(fx: &TensorMap) -> Gpt<CpuBackend> {
    let config = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        block_size: 64,
        vocab_size: 300,
    };
    let (b, t) = (fx["input_ids"].0[0], fx["input_ids"].0[1]);
    let mut m = Gpt::new(CpuBackend::new(), config, b, t, true).unwrap();
    let weights: HashMap<_, _> = fx
        .iter()
        .filter(|(k, _)| k.starts_with("transformer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.load(&weights).unwrap();
    m.set_batch(&ids(fx, "input_ids"), Some(&ids(fx, "targets")))
        .unwrap();
    m
}

#[test]
fn logits_loss_and_every_gradient_match_pytorch() {
    let fx = fixture();
    let mut m = model(&fx);
    m.exec.zero_grads();
    let loss = m.forward().unwrap();
    // Logits are an activation: read them before the backward pass reuses their memory.
    let (v, vp) = (m.config.vocab_size, m.config.padded_vocab());
    let logits: Vec<f32> = m
        .logits()
        .unwrap()
        .chunks(vp)
        .flat_map(|row| row[..v].to_vec())
        .collect();
    m.exec.backward();
    let e = rel_err(&logits, &fx["logits"].1);
    assert!(e < 1e-5, "logits rel err {e:e}");
    let e = rel_err(&[loss], &fx["loss"].1);
    assert!(e < 1e-5, "loss {loss} vs {} rel err {e:e}", fx["loss"].1[0]);

    println!(
        "logits rel err {:.2e}, loss rel err {e:.2e}",
        rel_err(&logits, &fx["logits"].1)
    );

    let grads = m.grads().unwrap();
    assert_eq!(grads.len(), 28);
    let mut worst = (0.0, String::new());
    for g in grads {
        let (shape, theirs) = &fx[&format!("grad.{}", g.name)];
        assert_eq!(&g.shape, shape, "{}", g.name);
        let e = rel_err(&g.data, theirs);
        assert!(e < 1e-4, "grad {} rel err {e:e}", g.name);
        if e > worst.0 {
            worst = (e, g.name);
        }
    }
    println!("worst gradient rel err {:.2e} ({})", worst.0, worst.1);
}

#[test]
fn three_adamw_steps_with_clipping_match_pytorch() {
    let fx = fixture();
    let mut m = model(&fx);
    let mut losses = Vec::new();
    let mut norms = Vec::new();
    for step in 1..=3u64 {
        m.exec.zero_grads();
        losses.push(m.forward_backward().unwrap());
        let norm = m.exec.grad_norm();
        norms.push(norm as f32);
        let step = AdamWStep {
            lr: LR,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step,
            grad_scale: clip_factor(norm, 1.0),
        };
        m.exec.adamw(&step, WEIGHT_DECAY);
    }
    losses.push(m.forward().unwrap());

    let e = rel_err(&losses, &fx["adamw.losses"].1);
    assert!(
        e < 1e-4,
        "losses {losses:?} vs {:?}: rel err {e:e}",
        fx["adamw.losses"].1
    );
    println!("losses rel err {e:.2e}");
    let e = rel_err(&norms, &fx["adamw.grad_norms"].1);
    assert!(
        e < 1e-4,
        "grad norms {norms:?} vs {:?}: rel err {e:e}",
        fx["adamw.grad_norms"].1
    );
    let mut worst = (0.0, String::new());
    for p in m.state().unwrap() {
        let (shape, theirs) = &fx[&format!("after.{}", p.name)];
        assert_eq!(&p.shape, shape);
        let e = rel_err(&p.data, theirs);
        assert!(e < 1e-4, "param {} after 3 steps: rel err {e:e}", p.name);
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
        // The steps really moved every parameter (the comparison is not vacuous).
        let moved = rel_err(&p.data, &fx[&p.name].1);
        assert!(moved > 1e-3, "param {} barely moved ({moved:e})", p.name);
    }
    println!(
        "worst parameter rel err after 3 steps {:.2e} ({})",
        worst.0, worst.1
    );
}
