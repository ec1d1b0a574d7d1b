//! The fused causal attention of `kernels/attention.cu`, run on the CPU through the emulation
//! (`smelt::backend::emu::attention`), against the CPU reference kernels
//! (`smelt::backend::cpu::kernels::attention_forward/backward`): fresh random inputs (the
//! seed, from the clock, is in every failure message), odd sizes (head sizes 3 to 128, t not a
//! multiple of the 32-row tile), outputs poisoned with NaN first, relative error
//! ‖a − b‖ / ‖b‖ < 1e-5; the backward twice must give identical bits. Run with
//! `--nocapture` to see each comparison's error.
#![cfg(smelt_emulation)]

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::attention;
use smelt::backend::kernels::matmul::{bf16_to_f32, to_bf16};

/// f32 kernels against the CPU: relative error bound.
const TOL: f64 = 1e-5;

/// (b, t, c, nh): head sizes 4, 3, 4, 32, 64, 64, 128; t = 1 up to 130 (partial tiles).
const SIZES: [(usize, usize, usize, usize); 7] = [
    (1, 1, 4, 1),
    (2, 5, 6, 2),
    (3, 7, 12, 3),
    (2, 33, 64, 2),
    (1, 100, 128, 2),
    (2, 130, 256, 4),
    (1, 45, 256, 2),
];

/// The CPU forward: (out, lse).
fn cpu_forward(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
    cpu::attention_forward(&mut out, &mut lse, qkv, b, t, c, nh);
    (out, lse)
}

#[test]
fn attention_forward_matches_cpu() {
    let mut r = Inputs::new();
    for (b, t, c, nh) in SIZES {
        // Scale 2 makes the softmax peaky enough that the online max matters.
        let qkv = r.normal(b * t * 3 * c, 2.0, 0.0);
        let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
        attention::attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
        let (out_c, lse_c) = cpu_forward(&qkv, b, t, c, nh);
        let tag = format!("attention_forward b={b} t={t} c={c} nh={nh}");
        r.check(&format!("{tag} out"), &out, &out_c, TOL);
        r.check(&format!("{tag} lse"), &lse, &lse_c, TOL);
    }
}

#[test]
fn attention_backward_matches_cpu() {
    let mut r = Inputs::new();
    for (b, t, c, nh) in SIZES {
        let qkv = r.normal(b * t * 3 * c, 2.0, 0.0);
        let dout = r.normal(b * t * c, 1.0, 0.0);
        let (out, lse) = cpu_forward(&qkv, b, t, c, nh);
        let mut dqkv = nan(b * t * 3 * c);
        attention::attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, b, t, c, nh);
        let mut dqkv_c = nan(b * t * 3 * c);
        cpu::attention_backward(&mut dqkv_c, &dout, &qkv, &out, &lse, b, t, c, nh);
        let tag = format!("attention_backward b={b} t={t} c={c} nh={nh}");
        r.check(&format!("{tag} dqkv"), &dqkv, &dqkv_c, TOL);
        // Each of dQ, dK, dV on its own, so a small part cannot hide behind a large one.
        // Not at t = 1: there dQ and dK are exactly zero analytically (one key: P = 1 and
        // dO·v = dO·o = D), so both kernels return rounding noise and the ratio means nothing.
        if t == 1 {
            continue;
        }
        for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let pick = |x: &[f32]| -> Vec<f32> {
                x.chunks_exact(3 * c)
                    .flat_map(|row| row[part * c..][..c].to_vec())
                    .collect()
            };
            r.check(&format!("{tag} {name}"), &pick(&dqkv), &pick(&dqkv_c), TOL);
        }
    }
}

#[test]
fn attention_backward_is_deterministic() {
    let mut r = Inputs::new();
    let (b, t, c, nh) = (2, 130, 256, 4);
    let qkv = r.normal(b * t * 3 * c, 2.0, 0.0);
    let dout = r.normal(b * t * c, 1.0, 0.0);
    let (out, lse) = cpu_forward(&qkv, b, t, c, nh);
    let run = || {
        let mut dqkv = nan(b * t * 3 * c);
        attention::attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, b, t, c, nh);
        dqkv.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let first = run();
    assert!(
        first == run(),
        "attention_backward: two runs differ (seed {})",
        r.seed
    );
    let (mut out1, mut lse1) = (nan(b * t * c), nan(b * nh * t));
    let (mut out2, mut lse2) = (nan(b * t * c), nan(b * nh * t));
    attention::attention_forward(&mut out1, &mut lse1, &qkv, b, t, c, nh);
    attention::attention_forward(&mut out2, &mut lse2, &qkv, b, t, c, nh);
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&out1) == bits(&out2) && bits(&lse1) == bits(&lse2),
        "attention_forward: two runs differ (seed {})",
        r.seed
    );
}

/// bf16 tensor-core forward against the CPU f32 forward on the same bf16-rounded qkv: relative
/// error bound (P is rounded to bf16 before P·V, so ~1e-3 is expected).
const TOL_BF16: f64 = 1e-2;

#[test]
fn attention_forward_bf16_matches_cpu() {
    let mut r = Inputs::new();
    // (b, t, c, nh): head size 64 (GPT-2), then 128 and 32; t = 1 up to 130 (partial
    // 64-row tiles, several key tiles).
    let sizes = [
        (1, 1, 64, 1),
        (2, 17, 128, 2),
        (1, 100, 128, 2),
        (2, 130, 256, 4),
        (1, 64, 512, 8),
        (1, 70, 256, 2),
        (1, 40, 64, 2),
    ];
    let (mut worst_out, mut worst_lse) = (0.0f64, 0.0f64);
    for (b, t, c, nh) in sizes {
        let qkv = to_bf16(&r.normal(b * t * 3 * c, 2.0, 0.0));
        let qkv_f: Vec<f32> = qkv.iter().map(|&v| bf16_to_f32(v)).collect();
        let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
        attention::attention_forward_bf16(&mut out, &mut lse, &qkv, b, t, c, nh);
        let (out_c, lse_c) = cpu_forward(&qkv_f, b, t, c, nh);
        let tag = format!("attention_forward_bf16 b={b} t={t} c={c} nh={nh}");
        worst_out = worst_out.max(r.check(&format!("{tag} out"), &out, &out_c, TOL_BF16));
        worst_lse = worst_lse.max(r.check(&format!("{tag} lse"), &lse, &lse_c, TOL_BF16));
    }
    // qkv not 16-byte aligned: the kernel loads element by element instead of cp.async.
    let (b, t, c, nh) = (1, 70, 128, 2);
    let mut buf = vec![0u16; b * t * 3 * c + 1];
    let off = usize::from((buf.as_ptr() as usize).is_multiple_of(16));
    let qkv = &mut buf[off..][..b * t * 3 * c];
    qkv.copy_from_slice(&to_bf16(&r.normal(b * t * 3 * c, 2.0, 0.0)));
    assert!(!(qkv.as_ptr() as usize).is_multiple_of(16));
    let qkv_f: Vec<f32> = qkv.iter().map(|&v| bf16_to_f32(v)).collect();
    let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
    attention::attention_forward_bf16(&mut out, &mut lse, qkv, b, t, c, nh);
    let (out_c, lse_c) = cpu_forward(&qkv_f, b, t, c, nh);
    let tag = format!("attention_forward_bf16 unaligned b={b} t={t} c={c} nh={nh}");
    worst_out = worst_out.max(r.check(&format!("{tag} out"), &out, &out_c, TOL_BF16));
    worst_lse = worst_lse.max(r.check(&format!("{tag} lse"), &lse, &lse_c, TOL_BF16));
    eprintln!(
        "attention_forward_bf16: max relative error out {worst_out:.3e}, lse {worst_lse:.3e}"
    );
}
