//! The CUDA kernels of `kernels/{cross_entropy,embedding}.cu`, run on the CPU
//! through the emulation (`smelt::backend::emu`), against their CPU reference kernels
//! (`smelt::backend::cpu::kernels`): fresh random inputs (the seed, from the clock, is in
//! every failure message), odd sizes, outputs poisoned with NaN first, relative error
//! ‖a − b‖ / ‖b‖ < 1e-5. Run with `--nocapture` to see each comparison's error.
#![cfg(smelt_emulation)]

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::loss;

/// f32 kernels against the CPU: relative error bound.
const TOL: f64 = 1e-5;

const CE_SIZES: [(usize, usize, usize); 6] = [
    (1, 11, 64),
    (5, 11, 64),
    (37, 1000, 1024),
    (300, 1000, 1024),
    (3, 64, 64),
    (2, 1, 1),
];

/// Logits with NaN in the padded columns (which must be ignored), and targets.
fn ce_inputs(r: &mut Inputs, n: usize, v: usize, vp: usize) -> (Vec<f32>, Vec<u32>) {
    let mut logits = r.normal(n * vp, 4.0, 1.0);
    for row in logits.chunks_exact_mut(vp) {
        row[v..].fill(f32::NAN);
    }
    let targets = r.ids(n, v);
    (logits, targets)
}

#[test]
fn cross_entropy_forward_matches_cpu() {
    let mut r = Inputs::new();
    for (n, v, vp) in CE_SIZES {
        let (logits, targets) = ce_inputs(&mut r, n, v, vp);
        let (mut loss, mut lse) = (nan(1), nan(n));
        loss::cross_entropy_forward(&mut loss, &mut lse, &logits, &targets, n, v, vp);
        let (mut loss_c, mut lse_c) = (nan(1), nan(n));
        cpu::cross_entropy_forward(&mut loss_c, &mut lse_c, &logits, &targets, n, v, vp);
        let tag = format!("cross_entropy_forward n={n} v={v} vp={vp}");
        r.check(&format!("{tag} loss"), &loss, &loss_c, TOL);
        r.check(&format!("{tag} lse"), &lse, &lse_c, TOL);
    }
}

#[test]
fn cross_entropy_backward_matches_cpu_separate_and_in_place() {
    let mut r = Inputs::new();
    for (n, v, vp) in CE_SIZES {
        let (logits, targets) = ce_inputs(&mut r, n, v, vp);
        let dloss = 1.0 + r.rng.uniform() as f32;
        let (mut loss, mut lse) = (nan(1), nan(n));
        cpu::cross_entropy_forward(&mut loss, &mut lse, &logits, &targets, n, v, vp);
        let mut want = nan(n * vp);
        cpu::cross_entropy_backward(&mut want, &logits, &lse, &targets, dloss, n, v, vp);

        let tag = format!("cross_entropy_backward n={n} v={v} vp={vp}");
        let mut dlogits = nan(n * vp);
        loss::cross_entropy_backward(&mut dlogits, &logits, &lse, &targets, dloss, n, v, vp);
        r.check(&tag, &dlogits, &want, TOL);

        let mut in_place = logits.clone();
        loss::cross_entropy_backward_in_place(&mut in_place, &lse, &targets, dloss, n, v, vp);
        r.check(&format!("{tag} in place"), &in_place, &want, TOL);
    }
}

#[test]
fn mean_reduce_matches_cpu_sum() {
    let mut r = Inputs::new();
    for n in [1, 37, 1000, 5003] {
        let x = r.normal(n, 3.0, 1.0);
        let mut out = nan(1);
        loss::mean_reduce(&mut out, &x);
        let want = (x.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
        r.check(&format!("mean_reduce n={n}"), &out, &[want], TOL);
    }
}

/// (b, t, c, vocab, max_t): few distinct tokens (repeats), and a vocabulary larger than
/// the batch (absent tokens).
const EMB_SIZES: [(usize, usize, usize, usize, usize); 5] = [
    (3, 5, 7, 11, 8),
    (3, 5, 33, 4, 5),
    (3, 5, 768, 11, 8),
    (1, 1, 1, 3, 1),
    (4, 37, 100, 1000, 64),
];

#[test]
fn embedding_forward_matches_cpu() {
    let mut r = Inputs::new();
    for (b, t, c, vocab, max_t) in EMB_SIZES {
        let tokens = r.ids(b * t, vocab);
        let wte = r.normal(vocab * c, 1.0, 0.0);
        let wpe = r.normal(max_t * c, 1.0, 0.0);
        let mut out = nan(b * t * c);
        loss::embedding_forward(&mut out, &tokens, &wte, &wpe, b, t, c);
        let mut want = nan(b * t * c);
        cpu::embedding_forward(&mut want, &tokens, &wte, &wpe, b, t, c);
        r.check(
            &format!("embedding_forward b={b} t={t} c={c}"),
            &out,
            &want,
            TOL,
        );
    }
}

#[test]
fn embedding_backward_matches_cpu_and_is_deterministic() {
    let mut r = Inputs::new();
    for (b, t, c, vocab, max_t) in EMB_SIZES {
        let tokens = r.ids(b * t, vocab);
        let dout = r.normal(b * t * c, 1.0, 0.0);
        let run = || {
            let (mut dwte, mut dwpe) = (nan(vocab * c), nan(max_t * c));
            loss::embedding_backward(&mut dwte, &mut dwpe, &dout, &tokens, b, t, c);
            (dwte, dwpe)
        };
        let (dwte, dwpe) = run();
        let (mut dwte_c, mut dwpe_c) = (nan(vocab * c), nan(max_t * c));
        cpu::embedding_backward(&mut dwte_c, &mut dwpe_c, &dout, &tokens, b, t, c);
        let tag = format!("embedding_backward b={b} t={t} c={c} vocab={vocab}");
        r.check(&format!("{tag} dwte"), &dwte, &dwte_c, TOL);
        r.check(&format!("{tag} dwpe"), &dwpe, &dwpe_c, TOL);

        let (dwte2, dwpe2) = run();
        r.same_bits(&format!("{tag} dwte"), &dwte, &dwte2);
        r.same_bits(&format!("{tag} dwpe"), &dwpe, &dwpe2);
    }
}

#[test]
fn token_buckets_group_positions_by_token_in_order() {
    let (offsets, tokens, positions) = loss::token_buckets(&[3, 1, 3, 0, 1, 3], 4);
    assert_eq!(offsets, [0, 1, 3, 6]);
    assert_eq!(tokens, [0, 1, 3]);
    assert_eq!(positions, [3, 1, 4, 0, 2, 5]);
    let (offsets, tokens, positions) = loss::token_buckets(&[], 4);
    assert_eq!((offsets, tokens, positions), (vec![0], vec![], vec![]));
}

#[test]
fn fill_writes_every_element() {
    for n in [0, 1, 255, 257, 100_003] {
        let mut x = nan(n);
        loss::fill(&mut x, 2.5);
        assert!(x.iter().all(|&v| v == 2.5), "fill n={n}");
    }
}
