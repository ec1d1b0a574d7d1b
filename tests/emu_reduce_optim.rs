//! `kernels/reduce.cu` (`sum_rows`) and the multi-tensor AdamW of `kernels/adamw.cu`
//! (`adamw_multi`, `adamw_multi_bf16`), run on the CPU through the emulation
//! (`smelt::backend::emu`), against the CPU reference kernels: fresh random inputs (the seed,
//! from the clock, is in every failure message), odd sizes, outputs poisoned with NaN, relative
//! error ‖a − b‖ / ‖b‖ < 1e-5. Run with `--nocapture` to see each comparison's error.
#![cfg(smelt_emulation)]

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::optim::{self, AdamWHyper};
use smelt::backend::emu::reduce;
use smelt::backend::kernels::matmul::f32_to_bf16;

/// f32 kernels against the CPU: relative error bound.
const TOL: f64 = 1e-5;

const SUM_ROWS_SIZES: [(usize, usize); 6] = [
    (1, 1),
    (5, 7),
    (37, 100),
    (300, 768),
    (4096, 33),
    (1000, 3072),
];

#[test]
fn sum_rows_matches_cpu_and_is_deterministic() {
    let mut r = Inputs::new();
    for (m, n) in SUM_ROWS_SIZES {
        let x = r.normal(m * n, 1.0, 0.3);
        let mut out = nan(n);
        reduce::sum_rows(&mut out, &x, m, n);
        let mut out_c = nan(n);
        cpu::sum_rows(&mut out_c, &x, m, n);
        let tag = format!("sum_rows m={m} n={n}");
        r.check(&tag, &out, &out_c, TOL);
        let mut again = nan(n);
        reduce::sum_rows(&mut again, &x, m, n);
        r.same_bits(&tag, &out, &again);
    }
}

#[test]
fn sum_rows_geometry() {
    for (m, n) in SUM_ROWS_SIZES
        .into_iter()
        .chain([(65536, 768), (65536, 3072), (0, 5)])
    {
        let p = reduce::sum_rows_partial_launch(m, n);
        assert_eq!(p.block.x * p.block.y, 256);
        assert_eq!(p.grid.x as usize, n.div_ceil(32));
        assert!(p.grid.y >= 1 && p.grid.y <= 1024);
        assert_eq!(
            reduce::sum_rows_scratch_len(m, n),
            p.grid.y as usize * n,
            "m={m} n={n}"
        );
    }
}

/// Groups of odd lengths (one of them empty) and decays, and a 150-tensor layout.
fn layouts(r: &mut Inputs) -> Vec<Vec<(usize, f32)>> {
    let many = (0..150)
        .map(|k| {
            let len = r.rng.below(400) as usize;
            (len, if k % 2 == 0 { 0.1 } else { 0.0 })
        })
        .collect();
    vec![
        vec![(7, 0.1), (1, 0.0), (100, 0.1), (33, 0.0), (1000, 0.1)],
        vec![(1, 0.0), (0, 0.1), (513, 0.05), (256, 0.0), (2, 0.1)],
        many,
    ]
}

struct State {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn state(r: &mut Inputs, n: usize) -> State {
    State {
        params: r.normal(n, 0.02, 0.0),
        m: r.normal(n, 0.1, 0.0),
        v: r.normal(n, 0.1, 0.0).iter().map(|x| x * x).collect(),
    }
}

/// `cpu::adamw` tensor by tensor over the groups' layout.
fn cpu_step(s: &mut State, grads: &[f32], groups: &[(usize, f32)], h: &AdamWHyper) {
    let mut off = 0;
    for &(len, wd) in groups {
        let r = off..off + len;
        cpu::adamw(
            &mut s.params[r.clone()],
            &grads[r.clone()],
            &mut s.m[r.clone()],
            &mut s.v[r],
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            wd,
            h.step,
            h.grad_scale,
        );
        off += len;
    }
}

fn hyper(step: u64) -> AdamWHyper {
    AdamWHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        step,
        grad_scale: 0.7,
    }
}

#[test]
fn adamw_multi_matches_cpu_per_tensor() {
    let mut r = Inputs::new();
    for groups in layouts(&mut r) {
        let n: usize = groups.iter().map(|g| g.0).sum();
        let mut gpu = state(&mut r, n);
        let mut cpu_s = State {
            params: gpu.params.clone(),
            m: gpu.m.clone(),
            v: gpu.v.clone(),
        };
        for step in 1..=3 {
            let grads = r.normal(n, 1.0, 0.0);
            let h = hyper(step);
            optim::adamw_multi(&mut gpu.params, &grads, &mut gpu.m, &mut gpu.v, &groups, &h);
            cpu_step(&mut cpu_s, &grads, &groups, &h);
            let tag = format!("adamw_multi tensors={} n={n} step={step}", groups.len());
            r.check(&format!("{tag} params"), &gpu.params, &cpu_s.params, TOL);
            r.check(&format!("{tag} m"), &gpu.m, &cpu_s.m, TOL);
            r.check(&format!("{tag} v"), &gpu.v, &cpu_s.v, TOL);
        }
    }
}

#[test]
fn adamw_multi_bf16_matches_f32_path_and_rounds_to_nearest_even() {
    let mut r = Inputs::new();
    for groups in layouts(&mut r) {
        let n: usize = groups.iter().map(|g| g.0).sum();
        let mut f32_path = state(&mut r, n);
        let mut master = State {
            params: f32_path.params.clone(),
            m: f32_path.m.clone(),
            v: f32_path.v.clone(),
        };
        let mut cpu_s = State {
            params: f32_path.params.clone(),
            m: f32_path.m.clone(),
            v: f32_path.v.clone(),
        };
        for step in 1..=3 {
            let grads = r.normal(n, 1.0, 0.0);
            let h = hyper(step);
            optim::adamw_multi(
                &mut f32_path.params,
                &grads,
                &mut f32_path.m,
                &mut f32_path.v,
                &groups,
                &h,
            );
            // Poisoned with a NaN bf16 pattern: every element must be written.
            let mut bf16 = vec![0x7fc0u16; n];
            optim::adamw_multi_bf16(
                &mut master.params,
                &mut bf16,
                &grads,
                &mut master.m,
                &mut master.v,
                &groups,
                &h,
            );
            cpu_step(&mut cpu_s, &grads, &groups, &h);
            let tag = format!(
                "adamw_multi_bf16 tensors={} n={n} step={step}",
                groups.len()
            );
            r.check(
                &format!("{tag} master vs f32"),
                &master.params,
                &f32_path.params,
                TOL,
            );
            r.check(&format!("{tag} m vs f32"), &master.m, &f32_path.m, TOL);
            r.check(&format!("{tag} v vs f32"), &master.v, &f32_path.v, TOL);
            r.check(
                &format!("{tag} master vs cpu"),
                &master.params,
                &cpu_s.params,
                TOL,
            );
            let want: Vec<u16> = master.params.iter().map(|&x| f32_to_bf16(x)).collect();
            assert!(
                bf16 == want,
                "{tag}: params_bf16 is not RNE(master) (seed {})",
                r.seed
            );
        }
    }
}
