//! The CUDA kernels of `kernels/{layernorm,adamw}.cu`, run on the CPU through the emulation
//! (`smelt::backend::emu`), against their CPU reference kernels (`smelt::backend::cpu::kernels`):
//! fresh random inputs (the seed, from the clock, is in every failure message), odd sizes,
//! outputs poisoned with NaN first, relative error ‖a − b‖ / ‖b‖ < 1e-5. Run with
//! `--nocapture` to see each comparison's error.
#![cfg(smelt_emulation)]

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::{norm, optim};

/// f32 kernels against the CPU: relative error bound.
const TOL: f64 = 1e-5;
const EPS: f32 = 1e-5;

const NORM_SIZES: [(usize, usize); 7] = [
    (1, 7),
    (5, 33),
    (37, 100),
    (300, 768),
    (4, 1),
    (37, 1600),
    (5000, 33),
];

#[test]
fn layernorm_forward_matches_cpu() {
    let mut r = Inputs::new();
    for (n, c) in NORM_SIZES {
        let x = r.normal(n * c, 2.0, 0.5);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        let (mut out, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
        norm::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, EPS);
        let (mut out_c, mut mean_c, mut rstd_c) = (nan(n * c), nan(n), nan(n));
        cpu::layernorm_forward(&mut out_c, &mut mean_c, &mut rstd_c, &x, &w, &b, n, c, EPS);
        let tag = format!("layernorm_forward n={n} c={c}");
        r.check(&format!("{tag} out"), &out, &out_c, TOL);
        r.check(&format!("{tag} mean"), &mean, &mean_c, TOL);
        r.check(&format!("{tag} rstd"), &rstd, &rstd_c, TOL);
    }
}

#[test]
fn fused_residual_layernorm_forward_matches_add_then_layernorm() {
    let mut r = Inputs::new();
    for (n, c) in NORM_SIZES {
        let a = r.normal(n * c, 1.0, 0.3);
        let b = r.normal(n * c, 1.5, -0.1);
        let w = r.normal(c, 1.0, 1.0);
        let bias = r.normal(c, 1.0, 0.0);
        let (mut res, mut out) = (nan(n * c), nan(n * c));
        let (mut mean, mut rstd) = (nan(n), nan(n));
        norm::fused_residual_layernorm_forward(
            &mut res, &mut out, &mut mean, &mut rstd, &a, &b, &w, &bias, n, c, EPS,
        );
        let (mut res_c, mut out_c) = (nan(n * c), nan(n * c));
        let (mut mean_c, mut rstd_c) = (nan(n), nan(n));
        cpu::add(&mut res_c, &a, &b);
        cpu::layernorm_forward(
            &mut out_c,
            &mut mean_c,
            &mut rstd_c,
            &res_c,
            &w,
            &bias,
            n,
            c,
            EPS,
        );
        let tag = format!("fused_residual_layernorm_forward n={n} c={c}");
        r.check(&format!("{tag} residual"), &res, &res_c, TOL);
        r.check(&format!("{tag} out"), &out, &out_c, TOL);
        r.check(&format!("{tag} mean"), &mean, &mean_c, TOL);
        r.check(&format!("{tag} rstd"), &rstd, &rstd_c, TOL);
    }
}

#[test]
fn layernorm_backward_matches_cpu_and_is_deterministic() {
    let mut r = Inputs::new();
    for (n, c) in NORM_SIZES {
        let x = r.normal(n * c, 2.0, 0.5);
        let w = r.normal(c, 1.0, 1.0);
        let b = r.normal(c, 1.0, 0.0);
        let dout = r.normal(n * c, 1.0, 0.1);
        let (mut out, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
        cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, EPS);

        let run = || {
            let (mut dx, mut dw, mut db) = (nan(n * c), nan(c), nan(c));
            norm::layernorm_backward(&mut dx, &mut dw, &mut db, &dout, &x, &w, &mean, &rstd, n, c);
            (dx, dw, db)
        };
        let (dx, dw, db) = run();
        let (mut dx_c, mut dw_c, mut db_c) = (nan(n * c), nan(c), nan(c));
        cpu::layernorm_backward(
            &mut dx_c, &mut dw_c, &mut db_c, &dout, &x, &w, &mean, &rstd, n, c,
        );
        let tag = format!("layernorm_backward n={n} c={c}");
        r.check(&format!("{tag} dx"), &dx, &dx_c, TOL);
        r.check(&format!("{tag} dweight"), &dw, &dw_c, TOL);
        r.check(&format!("{tag} dbias"), &db, &db_c, TOL);

        let (dx2, dw2, db2) = run();
        r.same_bits(&format!("{tag} dx"), &dx, &dx2);
        r.same_bits(&format!("{tag} dweight"), &dw, &dw2);
        r.same_bits(&format!("{tag} dbias"), &db, &db2);
    }
}

#[test]
fn layernorm_backward_geometry() {
    // 8 warps while the accumulators fit 48 KiB, fewer beyond; the grid is capped.
    let d = norm::layernorm_backward_launch(300, 768);
    assert_eq!((d.grid.x, d.block.x, d.smem), (38, 256, 49152));
    let d = norm::layernorm_backward_launch(37, 1600);
    assert_eq!((d.grid.x, d.block.x, d.smem), (13, 96, 38400));
    let d = norm::layernorm_backward_launch(1 << 20, 768);
    assert_eq!(d.grid.x, 512);
    assert_eq!(
        norm::layernorm_backward_scratch_len(1 << 20, 768),
        2 * 512 * 768
    );
}

#[test]
fn adamw_matches_cpu() {
    let mut r = Inputs::new();
    for n in [1, 37, 1000, 100_003] {
        for (step, weight_decay) in [(1, 0.1), (7, 0.0), (1000, 0.1)] {
            let params = r.normal(n, 0.02, 0.0);
            let grads = r.normal(n, 1.0, 0.0);
            let m = r.normal(n, 0.1, 0.0);
            let v: Vec<f32> = r.normal(n, 0.1, 0.0).iter().map(|x| x * x).collect();
            let (lr, beta1, beta2, eps, grad_scale) = (1e-2, 0.9, 0.95, 1e-8, 0.7);

            let (mut p, mut mm, mut vv) = (params.clone(), m.clone(), v.clone());
            optim::adamw(
                &mut p,
                &grads,
                &mut mm,
                &mut vv,
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                step,
                grad_scale,
            );
            let (mut p_c, mut m_c, mut v_c) = (params.clone(), m.clone(), v.clone());
            cpu::adamw(
                &mut p_c,
                &grads,
                &mut m_c,
                &mut v_c,
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                step,
                grad_scale,
            );
            let tag = format!("adamw n={n} step={step} wd={weight_decay}");
            r.check(&format!("{tag} params"), &p, &p_c, TOL);
            r.check(&format!("{tag} m"), &mm, &m_c, TOL);
            r.check(&format!("{tag} v"), &vv, &v_c, TOL);
            // The update itself, not only the parameters it is added to.
            let delta =
                |new: &[f32]| -> Vec<f32> { new.iter().zip(&params).map(|(a, b)| a - b).collect() };
            r.check(&format!("{tag} update"), &delta(&p), &delta(&p_c), TOL);
        }
    }
}

#[test]
fn sum_squares_matches_cpu() {
    let mut r = Inputs::new();
    for n in [1, 37, 1000, 100_003, 1_000_003] {
        let x = r.normal(n, 1.0, 0.2);
        let got = optim::sum_squares(&x);
        let want = cpu::sum_squares(&x);
        r.check(&format!("sum_squares n={n}"), &[got], &[want as f32], TOL);
    }
}
