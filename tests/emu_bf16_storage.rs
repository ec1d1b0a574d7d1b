//! The bf16-STORAGE kernels (`*_bf16` in kernels/{elementwise,layernorm,reduce,attention}.cu: activations in bf16, parameters, statistics and parameter
//! gradients in f32, arithmetic in f32), run on the CPU through the CUDA emulation, against
//! the f32 CPU kernels (`smelt::backend::cpu::kernels`) run on the SAME bf16-rounded inputs.
//!
//! Inputs are fresh random numbers each run, seeded from the clock (printed; with
//! `--nocapture` every comparison prints its error); `SMELT_SEED=<seed> cargo test --release
//! --test emu_bf16_storage` replays a failure. Sizes are odd. Outputs are poisoned with NaN
//! first (bf16 0xffff). Where the kernel's output is bf16, the CPU result is rounded to bf16
//! too and ‖emu − cpu‖ / ‖cpu‖ must be < 1e-2 (one bf16 rounding is ≤ 2^-9 relative, so a
//! few 1e-3 at most); f32 outputs (mean, rstd, dweight, dbias, sum_rows, D) must be
//! < 1e-5. Exact operations (a sum of two values rounded once) are checked bit for bit.

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::matmul::{bf16_to_f32, f32_to_bf16, to_bf16};
use smelt::backend::emu::{attention, elementwise as ew, norm, reduce};
use smelt::rng::Rng;

/// bf16 outputs vs the CPU rounded to bf16.
const TOL_BF16: f64 = 1e-2;
/// f32 outputs vs the CPU.
const TOL_F32: f64 = 1e-5;
/// bf16 NaN: the poison of bf16 outputs.
const NAN_BF16: u16 = 0xffff;
/// Canary around element-wise output views (bf16 1234.0), to catch out-of-bounds writes.
const CANARY: u16 = 0x449a;

/// Random inputs seeded from `SMELT_SEED` or the clock; the seed is printed.
fn inputs(test: &str) -> Inputs {
    let seed = match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    };
    eprintln!("{test}: seed {seed} (replay with SMELT_SEED={seed})");
    Inputs {
        rng: Rng::new(seed),
        seed,
        max_err: 0.0,
    }
}

/// `len` normals (scale, shift) rounded to bf16: the bit patterns and their exact f32 values.
fn bf16_normal(r: &mut Inputs, len: usize, scale: f64, shift: f64) -> (Vec<u16>, Vec<f32>) {
    let bits = to_bf16(&r.normal(len, scale, shift));
    let vals = widen(&bits);
    (bits, vals)
}

fn widen(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&v| bf16_to_f32(v)).collect()
}

/// The f32 reference rounded to bf16 and back (what a bf16 output should hold).
fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect()
}

/// Compares a bf16 kernel output with the f32 reference rounded to bf16.
fn check_bf16(r: &mut Inputs, what: &str, got: &[u16], want_f32: &[f32]) -> f64 {
    r.check(what, &widen(got), &rounded(want_f32), TOL_BF16)
}

fn assert_bits(r: &Inputs, what: &str, got: &[u16], want: &[u16]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: element {i}: {:#06x} != {:#06x} (SMELT_SEED={})",
            got[i], want[i], r.seed
        );
    }
}

/// A bf16 buffer with room for an `n`-element view that starts on a 16-byte boundary
/// (`aligned`, the uint4 path of the element-wise kernels) or 2 bytes past one (the scalar
/// path), with canaries around it.
struct Buf {
    data: Vec<u16>,
    off: usize,
    n: usize,
}

impl Buf {
    fn new(n: usize, aligned: bool, fill: u16) -> Buf {
        let mut data = vec![CANARY; n + 16];
        let addr = data.as_ptr() as usize;
        assert_eq!(addr % 2, 0);
        let first_aligned = (16 - addr % 16) % 16 / 2;
        let off = first_aligned + usize::from(!aligned);
        data[off..off + n].fill(fill);
        Buf { data, off, n }
    }

    fn from(x: &[u16], aligned: bool) -> Buf {
        let mut b = Buf::new(x.len(), aligned, 0);
        b.view_mut().copy_from_slice(x);
        b
    }

    fn view(&self) -> &[u16] {
        &self.data[self.off..self.off + self.n]
    }

    fn view_mut(&mut self) -> &mut [u16] {
        &mut self.data[self.off..self.off + self.n]
    }

    fn assert_canaries(&self, what: &str) {
        let outside = self.data[..self.off]
            .iter()
            .chain(&self.data[self.off + self.n..]);
        assert!(
            outside.into_iter().all(|&v| v == CANARY),
            "{what}: wrote outside its output"
        );
    }
}

/// Element counts: odd, tiny, and one past a full grid of the bf16 element-wise kernels
/// (8 per thread), so the grid-stride loop wraps.
fn ew_sizes() -> [usize; 6] {
    let grid = ew::MAX_BLOCKS as usize * ew::BLOCK as usize * ew::BF16_PER_THREAD;
    [1, 3, 257, 4097, 100003, grid + 4099]
}

#[test]
fn gelu_forward_bf16_matches_cpu() {
    let mut r = inputs("gelu_forward_bf16");
    for n in ew_sizes() {
        for aligned in [true, false] {
            let (x, xf) = bf16_normal(&mut r, n, 2.0, 0.0);
            let x = Buf::from(&x, aligned);
            let mut out = Buf::new(n, aligned, NAN_BF16);
            ew::gelu_forward_bf16(out.view_mut(), x.view());
            let mut want = vec![0.0f32; n];
            cpu::gelu_forward(&mut want, &xf);
            let what = format!("gelu_forward_bf16 n={n} aligned={aligned}");
            check_bf16(&mut r, &what, out.view(), &want);
            out.assert_canaries(&what);
        }
    }
    eprintln!("gelu_forward_bf16: max relative error {:.3e}", r.max_err);
}

#[test]
fn gelu_backward_bf16_matches_cpu() {
    let mut r = inputs("gelu_backward_bf16");
    for n in ew_sizes() {
        for aligned in [true, false] {
            let (x, xf) = bf16_normal(&mut r, n, 2.0, 0.0);
            let (dout, doutf) = bf16_normal(&mut r, n, 1.0, 0.0);
            let (x, dout) = (Buf::from(&x, aligned), Buf::from(&dout, aligned));
            let mut dx = Buf::new(n, aligned, NAN_BF16);
            ew::gelu_backward_bf16(dx.view_mut(), x.view(), dout.view());
            let mut want = vec![0.0f32; n];
            cpu::gelu_backward(&mut want, &xf, &doutf);
            let what = format!("gelu_backward_bf16 n={n} aligned={aligned}");
            check_bf16(&mut r, &what, dx.view(), &want);
            dx.assert_canaries(&what);
        }
    }
    eprintln!("gelu_backward_bf16: max relative error {:.3e}", r.max_err);
}

#[test]
fn add_bf16_matches_cpu_exactly() {
    let mut r = inputs("add_bf16");
    for n in ew_sizes() {
        for aligned in [true, false] {
            let (a, af) = bf16_normal(&mut r, n, 1.0, 0.0);
            let (b, bf) = bf16_normal(&mut r, n, 3.0, 0.5);
            let (a, b) = (Buf::from(&a, aligned), Buf::from(&b, aligned));
            let mut out = Buf::new(n, aligned, NAN_BF16);
            ew::add_bf16(out.view_mut(), a.view(), b.view());
            let mut want = vec![0.0f32; n];
            cpu::add(&mut want, &af, &bf);
            let what = format!("add_bf16 n={n} aligned={aligned}");
            check_bf16(&mut r, &what, out.view(), &want);
            // One f32 addition rounded once: bit for bit.
            assert_bits(&r, &what, out.view(), &to_bf16(&want));
            out.assert_canaries(&what);
            // a and b may be the same buffer.
            ew::add_bf16(out.view_mut(), a.view(), a.view());
            cpu::add(&mut want, &af, &af);
            assert_bits(&r, &format!("{what} a=b"), out.view(), &to_bf16(&want));
        }
    }
    eprintln!("add_bf16: max relative error {:.3e}", r.max_err);
}

/// (n, c) for the layernorm tests; the last one runs past the backward's 512-block grid, so
/// warps loop over several rows.
const LN_SHAPES: [(usize, usize); 6] = [(1, 7), (5, 33), (37, 100), (4, 1), (9, 768), (4500, 5)];
const EPS: f32 = 1e-5;

/// Layernorm parameters: gains around 1, small biases (f32).
fn ln_params(r: &mut Inputs, c: usize) -> (Vec<f32>, Vec<f32>) {
    (r.normal(c, 0.5, 1.0), r.normal(c, 0.2, 0.0))
}

#[test]
fn layernorm_forward_bf16_matches_cpu() {
    let mut r = inputs("layernorm_forward_bf16");
    for (n, c) in LN_SHAPES {
        let (x, xf) = bf16_normal(&mut r, n * c, 2.0, 0.5);
        let (w, b) = ln_params(&mut r, c);
        let (mut out, mut mean, mut rstd) = (vec![NAN_BF16; n * c], nan(n), nan(n));
        norm::layernorm_forward_bf16(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, EPS);
        let (mut want, mut wmean, mut wrstd) = (vec![0.0f32; n * c], nan(n), nan(n));
        cpu::layernorm_forward(&mut want, &mut wmean, &mut wrstd, &xf, &w, &b, n, c, EPS);
        let what = format!("layernorm_forward_bf16 n={n} c={c}");
        check_bf16(&mut r, &format!("{what} out"), &out, &want);
        r.check(&format!("{what} mean"), &mean, &wmean, TOL_F32);
        r.check(&format!("{what} rstd"), &rstd, &wrstd, TOL_F32);
    }
    eprintln!(
        "layernorm_forward_bf16: max relative error {:.3e}",
        r.max_err
    );
}

#[test]
fn fused_residual_layernorm_forward_bf16_matches_add_then_layernorm() {
    let mut r = inputs("fused_residual_layernorm_forward_bf16");
    for (n, c) in LN_SHAPES {
        let (a, af) = bf16_normal(&mut r, n * c, 2.0, 0.5);
        let (b, bf) = bf16_normal(&mut r, n * c, 1.0, 0.0);
        let (w, bias) = ln_params(&mut r, c);
        let mut residual = vec![NAN_BF16; n * c];
        let (mut out, mut mean, mut rstd) = (vec![NAN_BF16; n * c], nan(n), nan(n));
        norm::fused_residual_layernorm_forward_bf16(
            &mut residual,
            &mut out,
            &mut mean,
            &mut rstd,
            &a,
            &b,
            &w,
            &bias,
            n,
            c,
            EPS,
        );
        // Reference: the f32 sum rounded to bf16 (add_bf16), then the layernorm of THAT.
        let mut sum = vec![0.0f32; n * c];
        cpu::add(&mut sum, &af, &bf);
        let sum_bits = to_bf16(&sum);
        let sum_rounded = widen(&sum_bits);
        let (mut want, mut wmean, mut wrstd) = (vec![0.0f32; n * c], nan(n), nan(n));
        cpu::layernorm_forward(
            &mut want,
            &mut wmean,
            &mut wrstd,
            &sum_rounded,
            &w,
            &bias,
            n,
            c,
            EPS,
        );
        let what = format!("fused_residual_layernorm_forward_bf16 n={n} c={c}");
        assert_bits(&r, &format!("{what} residual_out"), &residual, &sum_bits);
        check_bf16(&mut r, &format!("{what} out"), &out, &want);
        r.check(&format!("{what} mean"), &mean, &wmean, TOL_F32);
        r.check(&format!("{what} rstd"), &rstd, &wrstd, TOL_F32);

        // And exactly what the unfused bf16 kernels compute.
        let mut added = vec![NAN_BF16; n * c];
        ew::add_bf16(&mut added, &a, &b);
        let (mut out2, mut mean2, mut rstd2) = (vec![NAN_BF16; n * c], nan(n), nan(n));
        norm::layernorm_forward_bf16(
            &mut out2, &mut mean2, &mut rstd2, &added, &w, &bias, n, c, EPS,
        );
        assert_bits(
            &r,
            &format!("{what} residual vs add_bf16"),
            &residual,
            &added,
        );
        assert_bits(&r, &format!("{what} out vs unfused"), &out, &out2);
        r.same_bits(&format!("{what} mean vs unfused"), &mean, &mean2);
        r.same_bits(&format!("{what} rstd vs unfused"), &rstd, &rstd2);
    }
    eprintln!(
        "fused_residual_layernorm_forward_bf16: max relative error {:.3e}",
        r.max_err
    );
}

#[test]
fn layernorm_backward_bf16_matches_cpu() {
    let mut r = inputs("layernorm_backward_bf16");
    for (n, c) in LN_SHAPES {
        let (x, xf) = bf16_normal(&mut r, n * c, 2.0, 0.5);
        let (dout, doutf) = bf16_normal(&mut r, n * c, 1.0, 0.0);
        let (w, b) = ln_params(&mut r, c);
        // The saved statistics (f32), shared by both sides.
        let (mut y, mut mean, mut rstd) = (vec![0.0f32; n * c], nan(n), nan(n));
        cpu::layernorm_forward(&mut y, &mut mean, &mut rstd, &xf, &w, &b, n, c, EPS);
        let (mut dx, mut dw, mut db) = (vec![NAN_BF16; n * c], nan(c), nan(c));
        norm::layernorm_backward_bf16(&mut dx, &mut dw, &mut db, &dout, &x, &w, &mean, &rstd, n, c);
        let (mut wdx, mut wdw, mut wdb) = (vec![0.0f32; n * c], nan(c), nan(c));
        cpu::layernorm_backward(
            &mut wdx, &mut wdw, &mut wdb, &doutf, &xf, &w, &mean, &rstd, n, c,
        );
        let what = format!("layernorm_backward_bf16 n={n} c={c}");
        check_bf16(&mut r, &format!("{what} dx"), &dx, &wdx);
        r.check(&format!("{what} dweight"), &dw, &wdw, TOL_F32);
        r.check(&format!("{what} dbias"), &db, &wdb, TOL_F32);
    }
    eprintln!(
        "layernorm_backward_bf16: max relative error {:.3e}",
        r.max_err
    );
}

#[test]
fn sum_rows_bf16_matches_cpu() {
    let mut r = inputs("sum_rows_bf16");
    for (m, n) in [
        (1, 1),
        (3, 7),
        (257, 33),
        (100, 1000),
        (4097, 3),
        (1, 100003),
    ] {
        let (x, xf) = bf16_normal(&mut r, m * n, 1.0, 0.25);
        let mut out = nan(n);
        reduce::sum_rows_bf16(&mut out, &x, m, n);
        let mut want = nan(n);
        cpu::sum_rows(&mut want, &xf, m, n);
        r.check(&format!("sum_rows_bf16 m={m} n={n}"), &out, &want, TOL_F32);
    }
    eprintln!("sum_rows_bf16: max relative error {:.3e}", r.max_err);
}

#[test]
fn attention_backward_preprocess_bf16_matches_reference() {
    let mut r = inputs("attention_backward_preprocess_bf16");
    // (b, t, c, nh): head sizes 4, 16, 64, 150 (above the tiled kernels' 128: the preprocess
    // loops over any head size), 1.
    for (b, t, c, nh) in [
        (1, 1, 8, 2),
        (2, 5, 48, 3),
        (2, 33, 128, 2),
        (1, 7, 300, 2),
        (3, 4, 5, 5),
    ] {
        let hs = c / nh;
        let (dout, doutf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let (out, outf) = bf16_normal(&mut r, b * t * c, 1.0, 0.0);
        let mut dsum = nan(attention::attention_backward_scratch_len(b, t, nh));
        attention::attention_backward_preprocess_bf16(&mut dsum, &dout, &out, b, t, c, nh);
        let mut want = vec![0.0f32; b * nh * t];
        for bi in 0..b {
            for i in 0..t {
                for h in 0..nh {
                    let row = (bi * t + i) * c + h * hs;
                    let d: f64 = (0..hs)
                        .map(|d| doutf[row + d] as f64 * outf[row + d] as f64)
                        .sum();
                    want[(bi * nh + h) * t + i] = d as f32;
                }
            }
        }
        let what = format!("attention_backward_preprocess_bf16 b={b} t={t} c={c} nh={nh}");
        r.check(&what, &dsum, &want, TOL_F32);
    }
    eprintln!(
        "attention_backward_preprocess_bf16: max relative error {:.3e}",
        r.max_err
    );
}
