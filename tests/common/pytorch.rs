//! Parity with PyTorch on any backend: the committed fixture (tools/make_fixture.sh) holds a
//! tiny transformers GPT2LMHeadModel's weights, a batch, its logits, loss, every gradient, and
//! the losses and weights after 3 AdamW steps with gradient clipping, computed in float64.
//! The checks return the worst errors seen after asserting them against the given bounds.

use std::collections::HashMap;
use std::path::Path;

use smelt::backend::{AdamWStep, Backend};
use smelt::checkpoint::{read_safetensors, TensorMap};
use smelt::model::{Gpt, GptConfig};
use smelt::optim::clip_factor;

const LR: f32 = 1e-3;
const WEIGHT_DECAY: f32 = 0.1;

/// The fixture, from `$SMELT_FIXTURES` when set (test binaries copied to a GPU machine by
/// tools/gpu-check.sh), else from this repository's tests/fixtures.
pub fn fixture() -> TensorMap {
    let dir = std::env::var_os("SMELT_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    read_safetensors(&dir.join("gpt2_tiny.safetensors")).expect("fixture loads")
}

pub fn rel_err(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    if ours.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
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
pub fn model<B: Backend>(backend: B, fx: &TensorMap) -> Gpt<B> {
    let config = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        block_size: 64,
        vocab_size: 300,
    };
    let (b, t) = (fx["input_ids"].0[0], fx["input_ids"].0[1]);
    let mut m = Gpt::new(backend, config, b, t, true).unwrap();
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

/// Worst relative errors of one check.
#[derive(Debug)]
pub struct Errors {
    pub logits: f64,
    pub loss: f64,
    /// (error, tensor name)
    pub worst_grad: (f64, String),
}

/// Logits and loss within `tol_out`, every gradient within `tol_grad`.
pub fn check_forward_backward<B: Backend>(backend: B, tol_out: f64, tol_grad: f64) -> Errors {
    let fx = fixture();
    let mut m = model(backend, &fx);
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
    m.exec.backward().unwrap();
    let logits_err = rel_err(&logits, &fx["logits"].1);
    assert!(logits_err < tol_out, "logits rel err {logits_err:e}");
    let loss_err = rel_err(&[loss], &fx["loss"].1);
    assert!(
        loss_err < tol_out,
        "loss {loss} vs {} rel err {loss_err:e}",
        fx["loss"].1[0]
    );
    let grads = m.grads().unwrap();
    assert_eq!(grads.len(), 28);
    let mut worst = (0.0, String::new());
    for g in grads {
        let (shape, theirs) = &fx[&format!("grad.{}", g.name)];
        assert_eq!(&g.shape, shape, "{}", g.name);
        let e = rel_err(&g.data, theirs);
        assert!(e < tol_grad, "grad {} rel err {e:e}", g.name);
        if e > worst.0 {
            worst = (e, g.name);
        }
    }
    Errors {
        logits: logits_err,
        loss: loss_err,
        worst_grad: worst,
    }
}

/// Worst relative errors of the optimizer trajectory.
#[derive(Debug)]
pub struct TrajectoryErrors {
    pub losses: f64,
    pub grad_norms: f64,
    pub worst_param: (f64, String),
}

/// Three AdamW steps with clipping: losses and gradient norms within `tol`, and every
/// parameter after them within `tol_param`.
pub fn check_adamw_steps<B: Backend>(backend: B, tol: f64, tol_param: f64) -> TrajectoryErrors {
    let fx = fixture();
    let mut m = model(backend, &fx);
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

    let losses_err = rel_err(&losses, &fx["adamw.losses"].1);
    assert!(
        losses_err < tol,
        "losses {losses:?} vs {:?}: rel err {losses_err:e}",
        fx["adamw.losses"].1
    );
    let norms_err = rel_err(&norms, &fx["adamw.grad_norms"].1);
    assert!(
        norms_err < tol,
        "grad norms {norms:?} vs {:?}: rel err {norms_err:e}",
        fx["adamw.grad_norms"].1
    );
    let mut worst = (0.0, String::new());
    for p in m.state().unwrap() {
        let (shape, theirs) = &fx[&format!("after.{}", p.name)];
        assert_eq!(&p.shape, shape);
        let (mut ours, mut theirs) = (p.data.clone(), theirs.clone());
        if p.name.ends_with("c_attn.bias") {
            // The key bias (middle third) has a zero gradient in exact arithmetic (softmax
            // ignores a constant per row), so AdamW moves it by rounding noise scaled up to
            // ±lr per step: compare its size, not its value.
            let c = ours.len() / 3;
            let before = &fx[&p.name].1[c..2 * c];
            let ours_k: Vec<f32> = ours.drain(c..2 * c).collect();
            let theirs_k: Vec<f32> = theirs.drain(c..2 * c).collect();
            // Adam's step is about lr at most (2x margin for the moments' ratio).
            let bound = 2.0 * 3.0 * LR;
            for k in [&ours_k, &theirs_k] {
                let moved = k.iter().zip(before).map(|(a, b)| (a - b).abs());
                assert!(
                    moved.fold(0f32, f32::max) <= bound,
                    "{}: key bias moved more than 2 lr per step",
                    p.name
                );
            }
        }
        let e = rel_err(&ours, &theirs);
        assert!(
            e < tol_param,
            "param {} after 3 steps: rel err {e:e}",
            p.name
        );
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
        // The steps really moved every parameter (the comparison is not vacuous).
        let moved = rel_err(&p.data, &fx[&p.name].1);
        assert!(moved > 1e-3, "param {} barely moved ({moved:e})", p.name);
    }
    TrajectoryErrors {
        losses: losses_err,
        grad_norms: norms_err,
        worst_param: worst,
    }
}
