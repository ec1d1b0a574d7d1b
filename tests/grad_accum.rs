//! Gradient accumulation: two micro-batches accumulated (and scaled by 1/2) give the same
//! gradient as one batch holding both, since the loss is a mean over tokens.

use smelt::backend::cpu::CpuBackend;
use smelt::model::{Gpt, GptConfig};
use smelt::rng::Rng;

#[test]
fn two_accumulated_micro_batches_equal_one_double_batch() {
    let config = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 24,
        block_size: 16,
        vocab_size: 77,
    };
    let t = 11;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(5);
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..4 * t).map(|_| rng.below(77) as u32).collect();
    let targets: Vec<u32> = (0..4 * t).map(|_| rng.below(77) as u32).collect();

    let mut small = Gpt::new(CpuBackend::new(), config, 2, t, true).unwrap();
    small.init_gpt2(seed).unwrap();
    small.exec.zero_grads();
    for half in [0..2 * t, 2 * t..4 * t] {
        small
            .set_batch(&ids[half.clone()], Some(&targets[half]))
            .unwrap();
        small.forward_backward().unwrap();
    }

    let mut big = Gpt::new(CpuBackend::new(), config, 4, t, true).unwrap();
    big.copy_params_from(&small).unwrap();
    big.exec.zero_grads();
    big.set_batch(&ids, Some(&targets)).unwrap();
    big.forward_backward().unwrap();

    for (a, b) in small.grads().unwrap().iter().zip(big.grads().unwrap()) {
        assert_eq!(a.name, b.name);
        let diff: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (*x as f64 / 2.0 - *y as f64).powi(2))
            .sum();
        let norm: f64 = b.data.iter().map(|y| (*y as f64).powi(2)).sum();
        let rel = (diff / norm).sqrt();
        assert!(rel < 1e-5, "{}: rel err {rel:e} (seed {seed})", a.name);
    }
    // The global norm the trainer clips with is the accumulated norm / accumulation steps.
    let rel = (small.exec.grad_norm() / 2.0 - big.exec.grad_norm()).abs() / big.exec.grad_norm();
    assert!(rel < 1e-5, "grad norm rel err {rel:e} (seed {seed})");
}
