//! `kernels/adamw.cu`: `adamw` (one tensor) and `adamw_multi` / `adamw_multi_bf16` (every tensor
//! in one launch) against `cpu::adamw` applied tensor by tensor, over steps 1, 2, 7 and 1000:
//! params, m, v and the update to 1e-5; the bf16 copies bit for bit the round-to-nearest-even
//! of the new masters.
//! The sequence `sum_squares` to 1e-5 of the CPU's f64 sum, and the same bits on a second run.
//! Sizes: odd, past a full grid (the grid-stride loops wrap), layouts with an empty tensor and
//! 150 tensors, and GPT-2 124M's parameters (GPU only).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::adamw::{self as k, BLOCK, MAX_ADAMW_BLOCKS, MAX_SUM_SQUARES_BLOCKS};
use smelt::backend::kernels::{int, long};

use crate::harness::{bf16, on_every_runtime, Buf, Dev, TOL_F32};

const LR: f32 = 3e-4;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.95;
const EPS: f32 = 1e-8;
const GRAD_SCALE: f32 = 0.5;

/// GPT-2 124M's channels, padded vocabulary and context.
const C: usize = 768;
const VP: usize = 50304;
const T: usize = 1024;

/// Parameters and moments, on the host (the CPU reference steps them).
struct State {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl State {
    fn random<R: Runtime>(dev: &Dev<R>, n: usize) -> Self {
        State {
            params: dev.normal(n, 0.02, 0.0),
            m: dev.normal(n, 0.1, 0.0),
            v: dev.normal(n, 0.01, 0.0).iter().map(|x| x.abs()).collect(),
        }
    }

    fn upload<R: Runtime>(&self, dev: &Dev<R>) -> [Buf<R>; 3] {
        [&self.params, &self.m, &self.v].map(|x| dev.f32s(x))
    }

    /// `cpu::adamw` on each `(len, weight_decay)` tensor laid out back to back.
    fn step(&mut self, grads: &[f32], tensors: &[(usize, f32)], step: u64) {
        let mut at = 0;
        for &(len, wd) in tensors {
            let r = at..at + len;
            let (p, m, v) = (
                &mut self.params[r.clone()],
                &mut self.m[r.clone()],
                &mut self.v[r.clone()],
            );
            cpu::adamw(
                p, &grads[r], m, v, LR, BETA1, BETA2, EPS, wd, step, GRAD_SCALE,
            );
            at += len;
        }
    }

    /// The device's params, m, v against this state, and the update itself (the params minus
    /// `before`: small next to the params). Returns the device's params.
    fn check<R: Runtime>(
        &self,
        dev: &Dev<R>,
        what: &str,
        got: &[Buf<R>; 3],
        before: &[f32],
    ) -> Vec<f32> {
        let [params, m, v] = got.each_ref().map(|b| dev.read_f32(b, what));
        for (name, got, want) in [
            ("params", &params, &self.params),
            ("m", &m, &self.m),
            ("v", &v, &self.v),
        ] {
            dev.check(&format!("{what} {name}"), got, want, TOL_F32);
        }
        let update = |p: &[f32]| -> Vec<f32> { p.iter().zip(before).map(|(a, b)| a - b).collect() };
        let (got, want) = (update(&params), update(&self.params));
        dev.check(&format!("{what} update"), &got, &want, TOL_F32);
        params
    }
}

/// The steps of each case, with the weight decay of `adamw`'s: bias corrections far from 1,
/// then close to 1; a step without decay.
const STEPS: [(u64, f32); 4] = [(1, 0.1), (2, 0.0), (7, 0.1), (1000, 0.1)];

/// The steps run at size `n`: all, or the first at GPT-2 size (making the inputs dominates).
fn steps(n: usize) -> &'static [(u64, f32)] {
    if n > 1 << 24 {
        &STEPS[..1]
    } else {
        &STEPS
    }
}

on_every_runtime!(adamw, adamw_multi, sum_squares);

fn adamw<R: Runtime>(dev: &Dev<R>) {
    let wraps = (MAX_ADAMW_BLOCKS * BLOCK) as usize + 3;
    for n in dev.cases(&[1, 7, 1000, 65_537, 1_000_003], &[wraps, VP * C]) {
        let mut want = State::random(dev, n);
        let got = want.upload(dev);
        for &(step, wd) in steps(n) {
            let grads = dev.normal(n, 1.0, 0.0);
            let (bc1, bc2) = k::adamw_bias_corrections(BETA1, BETA2, step);
            let [p, m, v] = got.each_ref().map(|b| b.addr);
            let g = dev.f32s(&grads);
            unsafe {
                k::adamw::launch(
                    &dev.rt,
                    p,
                    g.addr,
                    m,
                    v,
                    long(n),
                    LR,
                    BETA1,
                    BETA2,
                    EPS,
                    wd,
                    bc1,
                    bc2,
                    GRAD_SCALE,
                )
                .unwrap()
            };
            let before = want.params.clone();
            want.step(&grads, &[(n, wd)], step);
            want.check(
                dev,
                &format!("adamw n={n} step={step} wd={wd}"),
                &got,
                &before,
            );
        }
    }
}

/// GPT-2 124M's parameter tensors `(len, weight decay)`: wte, wpe, 12 blocks, final layernorm.
fn gpt2_tensors() -> Vec<(usize, f32)> {
    let mut tensors = vec![(VP * C, 0.1), (T * C, 0.1)];
    for _ in 0..12 {
        tensors.extend([
            (C, 0.0),
            (C, 0.0),
            (3 * C * C, 0.1),
            (3 * C, 0.0),
            (C * C, 0.1),
            (C, 0.0),
            (C, 0.0),
            (C, 0.0),
            (4 * C * C, 0.1),
            (4 * C, 0.0),
            (4 * C * C, 0.1),
            (C, 0.0),
        ]);
    }
    tensors.extend([(C, 0.0), (C, 0.0)]);
    tensors
}

/// `adamw_multi` and `adamw_multi_bf16` from the same state and gradients: each against the
/// CPU, the bf16 copies exactly the rounded masters.
fn adamw_multi<R: Runtime>(dev: &Dev<R>) {
    let many: Vec<(usize, f32)> = (0..150)
        .map(|i| {
            (
                dev.ids(1, 400)[0] as usize,
                if i % 2 == 0 { 0.1 } else { 0.0 },
            )
        })
        .collect();
    let layouts = [
        vec![(7, 0.1), (1, 0.0), (100, 0.1), (33, 0.0), (1000, 0.1)],
        vec![(1, 0.0), (0, 0.1), (513, 0.05), (256, 0.0), (2, 0.1)],
        many,
    ];
    for tensors in dev.cases(&layouts, &[gpt2_tensors()]) {
        let (ends, decays, n) = k::adamw_multi_tables(&tensors);
        let (ends, decays, count) = (dev.i64s(&ends), dev.f32s(&decays), int(tensors.len()));
        let mut want = State::random(dev, n);
        let (f32_path, master) = (want.upload(dev), want.upload(dev));
        let params_bf16 = dev.bf16_out(n);
        for &(step, _) in steps(n) {
            let grads = dev.normal(n, 1.0, 0.0);
            let g = dev.f32s(&grads);
            let (bc1, bc2) = k::adamw_bias_corrections(BETA1, BETA2, step);
            let [p, m, v] = f32_path.each_ref().map(|b| b.addr);
            let [mp, mm, mv] = master.each_ref().map(|b| b.addr);
            unsafe {
                k::adamw_multi::launch(
                    &dev.rt,
                    p,
                    g.addr,
                    m,
                    v,
                    long(n),
                    ends.addr,
                    decays.addr,
                    count,
                    LR,
                    BETA1,
                    BETA2,
                    EPS,
                    bc1,
                    bc2,
                    GRAD_SCALE,
                )
                .unwrap();
                k::adamw_multi_bf16::launch(
                    &dev.rt,
                    mp,
                    params_bf16.addr,
                    g.addr,
                    mm,
                    mv,
                    long(n),
                    ends.addr,
                    decays.addr,
                    count,
                    LR,
                    BETA1,
                    BETA2,
                    EPS,
                    bc1,
                    bc2,
                    GRAD_SCALE,
                )
                .unwrap();
            }
            let before = want.params.clone();
            want.step(&grads, &tensors, step);
            let what = format!("tensors={} n={n} step={step}", tensors.len());
            let f32_params = want.check(dev, &format!("adamw_multi {what}"), &f32_path, &before);
            let what = format!("adamw_multi_bf16 {what}");
            let masters = want.check(dev, &what, &master, &before);
            dev.check(
                &format!("{what} masters vs adamw_multi"),
                &masters,
                &f32_params,
                TOL_F32,
            );
            let rounded: Vec<u16> = masters.iter().map(|&x| bf16(x)).collect();
            dev.same_bits(
                &format!("{what} params_bf16"),
                &dev.read_u16(&params_bf16, &what),
                &rounded,
            );
        }
    }
}

fn sum_squares<R: Runtime>(dev: &Dev<R>) {
    let one_grid = (MAX_SUM_SQUARES_BLOCKS * BLOCK) as usize;
    let small = [
        0,
        1,
        3,
        255,
        257,
        one_grid + 1,
        100_000,
        1_000_003,
        10_000_019,
    ];
    let gpt2: usize = gpt2_tensors().iter().map(|t| t.0).sum();
    for n in dev.cases(&small, &[gpt2]) {
        let x = dev.normal(n, 1.0, 0.1);
        let xb = dev.f32s(&x);
        let want = [cpu::sum_squares(&x) as f32];
        let what = format!("sum_squares n={n}");
        let mut first: Option<u32> = None;
        for _run in 0..2 {
            let (scratch_buf, scratch) = dev.scratch_guarded(k::sum_squares_scratch_bytes(n));
            let total = unsafe { k::sum_squares(&dev.rt, xb.addr, n, scratch).unwrap() };
            let image = dev.read_f32(&scratch_buf, &what);
            let got = [image[(total - scratch.addr) as usize / 4]];
            match first {
                None => {
                    dev.check(&what, &got, &want, TOL_F32);
                    first = Some(got[0].to_bits());
                }
                Some(bits) => dev.same_bits(&format!("{what} again"), &[got[0].to_bits()], &[bits]),
            }
        }
    }
}
