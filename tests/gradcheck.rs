//! Checks of the CPU reference kernels.
//!
//! - Every backward kernel against f64 central finite differences of its forward kernel:
//!   with random inputs x and a random cotangent g, L(x) = Σ g∘f(x), and the numeric
//!   dL/dx_i = (L(x + h e_i) − L(x − h e_i)) / 2h over every input element.
//! - Forward kernels against naive implementations (f64 and f32).
//!
//! Inputs are fresh random numbers each run, seeded from the clock; every failure message
//! prints the seed, and `SMELT_SEED=<seed> cargo test --release --test gradcheck` replays it.
//! Outputs are poisoned with NaN before each kernel call, to test that they are fully
//! overwritten. Run with `-- --nocapture` to see the observed errors.

// Naive reference implementations read best as index loops over the math's indices, and the
// matmul helpers take the kernel's own (long) argument list.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use smelt::backend::cpu::kernels as k;
use smelt::backend::cpu::kernels::Real;

/// Finite-difference step.
const H: f64 = 1e-6;
/// Pass criterion for gradient checks: ‖analytic − numeric‖ / ‖numeric‖.
const GRAD_TOL: f64 = 1e-4;

// ----------------------------------------------------------------------------
// helpers

/// splitmix64 + Box-Muller: a tiny deterministic RNG.
struct Rng {
    state: u64,
    seed: u64,
}

impl Rng {
    /// Seeded from `SMELT_SEED` if set, else from the system clock.
    fn new() -> Rng {
        let seed = match std::env::var("SMELT_SEED") {
            Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.expect("clock after 1970").as_nanos() as u64
            }
        };
        Rng { state: seed, seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal.
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn normals(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// Uniform integer in 0..n.
    fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }

    fn tokens(&mut self, n: usize, vocab: u32) -> Vec<u32> {
        (0..n).map(|_| self.below(vocab)).collect()
    }
}

/// A buffer of NaNs, to be fully overwritten by a kernel.
fn nan<F: Real>(n: usize) -> Vec<F> {
    vec![F::nan(); n]
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ‖a − b‖ / ‖b‖ (or ‖a‖ when b is 0); infinite if any element of `a` is not finite.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// Asserts `rel_err(actual, expected) < tol` and prints the error.
fn check(what: &str, rng: &Rng, actual: &[f64], expected: &[f64], tol: f64) {
    let err = rel_err(actual, expected);
    println!("{what:<55} rel err {err:.2e}");
    assert!(
        err < tol,
        "{what}: relative error {err:.3e} >= {tol:.0e} (reproduce with SMELT_SEED={})",
        rng.seed
    );
}

/// Central-difference gradient of `L(x) = Σ g ∘ f(x)` at `x`.
fn numeric_grad(x: &[f64], g: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut x = x.to_vec();
    let mut grad = vec![0.0; x.len()];
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + H;
        let plus = dot(g, &f(&x));
        x[i] = orig - H;
        let minus = dot(g, &f(&x));
        x[i] = orig;
        grad[i] = (plus - minus) / (2.0 * H);
    }
    grad
}

// ----------------------------------------------------------------------------
// matmul

/// Naive `op(a) · op(b) + bias` in f64, with the same storage conventions as `k::matmul`.
fn naive_matmul(
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    m: usize,
    kk: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |bias| bias[j]);
            for p in 0..kk {
                let av = if ta { a[p * m + i] } else { a[i * kk + p] };
                let bv = if tb { b[j * kk + p] } else { b[p * n + j] };
                acc += av * bv;
            }
            out[i * n + j] = acc;
        }
    }
    out
}

const MATMUL_SIZES: [(usize, usize, usize); 7] = [
    (5, 7, 3),
    (1, 4, 6),
    (6, 1, 5),
    (3, 5, 1),
    (17, 33, 9),
    (64, 64, 65),
    (130, 70, 90),
];

fn matmul_against_naive<F: Real>(label: &str, tol: f64) {
    let mut rng = Rng::new();
    let conv = |x: &[f64]| -> Vec<F> { x.iter().map(|&v| F::from_f64(v).unwrap()).collect() };
    let back = |x: &[F]| -> Vec<f64> { x.iter().map(|v| v.to_f64().unwrap()).collect() };
    for (m, kk, n) in MATMUL_SIZES {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for with_bias in [false, true] {
                // Round the inputs to F first, so the naive f64 product sees the same values.
                let a = back(&conv(&rng.normals(m * kk)));
                let b = back(&conv(&rng.normals(kk * n)));
                let bias = back(&conv(&rng.normals(n)));
                let bias = with_bias.then_some(&bias[..]);
                let expected = naive_matmul(&a, &b, bias, m, kk, n, ta, tb);
                let mut out = nan::<F>(m * n);
                let bias_f = bias.map(conv);
                k::matmul(
                    &mut out,
                    &conv(&a),
                    &conv(&b),
                    bias_f.as_deref(),
                    m,
                    kk,
                    n,
                    ta,
                    tb,
                );
                let what = format!("matmul {label} {m}x{kk}x{n} ta={ta} tb={tb} bias={with_bias}");
                check(&what, &rng, &back(&out), &expected, tol);
            }
        }
    }
}

#[test]
fn matmul_matches_naive_f64() {
    matmul_against_naive::<f64>("f64", 1e-12);
}

#[test]
fn matmul_matches_naive_f32() {
    matmul_against_naive::<f32>("f32", 1e-5);
}

/// Gradients of `out = op(a) · op(b) + bias` given `dout`, computed with `k::matmul` and
/// `k::sum_rows` the way a backward pass does. `da`, `db` have `a`'s and `b`'s storage layout.
fn matmul_backward(
    dout: &[f64],
    a: &[f64],
    b: &[f64],
    m: usize,
    kk: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> [Vec<f64>; 3] {
    let (mut da, mut db, mut dbias) = (nan(m * kk), nan(kk * n), nan(n));
    if ta {
        // da (k,m) = op(b) (k,n) · doutᵀ (n,m)
        k::matmul(&mut da, b, dout, None, kk, n, m, tb, true);
    } else {
        // da (m,k) = dout (m,n) · op(b)ᵀ (n,k)
        k::matmul(&mut da, dout, b, None, m, n, kk, false, !tb);
    }
    if tb {
        // db (n,k) = doutᵀ (n,m) · op(a) (m,k)
        k::matmul(&mut db, dout, a, None, n, m, kk, true, ta);
    } else {
        // db (k,n) = op(a)ᵀ (k,m) · dout (m,n)
        k::matmul(&mut db, a, dout, None, kk, m, n, !ta, false);
    }
    k::sum_rows(&mut dbias, dout, m, n);
    [da, db, dbias]
}

#[test]
fn gradcheck_matmul() {
    let mut rng = Rng::new();
    for (m, kk, n) in [(5, 7, 3), (4, 3, 6), (1, 5, 2)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (a, b, bias, g) = (
                rng.normals(m * kk),
                rng.normals(kk * n),
                rng.normals(n),
                rng.normals(m * n),
            );
            let f = |a: &[f64], b: &[f64], bias: &[f64]| {
                let mut out = nan(m * n);
                k::matmul(&mut out, a, b, Some(bias), m, kk, n, ta, tb);
                out
            };
            let [da, db, dbias] = matmul_backward(&g, &a, &b, m, kk, n, ta, tb);
            let label = format!("gradcheck matmul {m}x{kk}x{n} ta={ta} tb={tb}");
            check(
                &format!("{label} da"),
                &rng,
                &da,
                &numeric_grad(&a, &g, |x| f(x, &b, &bias)),
                GRAD_TOL,
            );
            check(
                &format!("{label} db"),
                &rng,
                &db,
                &numeric_grad(&b, &g, |x| f(&a, x, &bias)),
                GRAD_TOL,
            );
            check(
                &format!("{label} dbias"),
                &rng,
                &dbias,
                &numeric_grad(&bias, &g, |x| f(&a, &b, x)),
                GRAD_TOL,
            );
        }
    }
}

// ----------------------------------------------------------------------------
// embeddings

#[test]
fn embedding_forward_matches_naive() {
    let mut rng = Rng::new();
    let (b, t, c, vocab, max_t) = (3, 7, 12, 13, 9);
    let (wte, wpe) = (rng.normals(vocab * c), rng.normals(max_t * c));
    let tokens = rng.tokens(b * t, vocab as u32);
    let mut out = nan(b * t * c);
    k::embedding_forward(&mut out, &tokens, &wte, &wpe, b, t, c);
    let mut expected = vec![0.0; b * t * c];
    for bi in 0..b {
        for ti in 0..t {
            let tok = tokens[bi * t + ti] as usize;
            for j in 0..c {
                expected[(bi * t + ti) * c + j] = wte[tok * c + j] + wpe[ti * c + j];
            }
        }
    }
    check("embedding_forward vs naive", &rng, &out, &expected, 1e-15);
}

#[test]
fn gradcheck_embedding() {
    let mut rng = Rng::new();
    for (b, t, c, vocab, max_t) in [(2, 5, 6, 7, 8), (3, 7, 12, 5, 7)] {
        let (wte, wpe, g) = (
            rng.normals(vocab * c),
            rng.normals(max_t * c),
            rng.normals(b * t * c),
        );
        let tokens = rng.tokens(b * t, vocab as u32);
        let f = |wte: &[f64], wpe: &[f64]| {
            let mut out = nan(b * t * c);
            k::embedding_forward(&mut out, &tokens, wte, wpe, b, t, c);
            out
        };
        let (mut dwte, mut dwpe) = (nan(vocab * c), nan(max_t * c));
        k::embedding_backward(&mut dwte, &mut dwpe, &g, &tokens, b, t, c);
        let label = format!("gradcheck embedding b={b} t={t} c={c} vocab={vocab} max_t={max_t}");
        check(
            &format!("{label} dwte"),
            &rng,
            &dwte,
            &numeric_grad(&wte, &g, |x| f(x, &wpe)),
            GRAD_TOL,
        );
        check(
            &format!("{label} dwpe"),
            &rng,
            &dwpe,
            &numeric_grad(&wpe, &g, |x| f(&wte, x)),
            GRAD_TOL,
        );
        assert!(
            dwpe[t * c..].iter().all(|&v| v == 0.0),
            "dwpe rows >= t must be exactly 0 (SMELT_SEED={})",
            rng.seed
        );
    }
}

// ----------------------------------------------------------------------------
// layernorm

const LN_EPS: f64 = 1e-5;

#[test]
fn layernorm_forward_matches_naive() {
    let mut rng = Rng::new();
    let (n, c) = (7, 13);
    let x: Vec<f64> = rng.normals(n * c).iter().map(|v| 3.0 * v + 1.5).collect();
    let (w, bias) = (rng.normals(c), rng.normals(c));
    let (mut out, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
    k::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &bias, n, c, LN_EPS);
    let (mut expected, mut expected_mean, mut expected_rstd) =
        (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let m = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / c as f64;
        let s = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..c {
            expected[i * c + j] = (row[j] - m) * s * w[j] + bias[j];
        }
        (expected_mean[i], expected_rstd[i]) = (m, s);
    }
    check(
        "layernorm_forward out vs naive",
        &rng,
        &out,
        &expected,
        1e-13,
    );
    check(
        "layernorm_forward mean vs naive",
        &rng,
        &mean,
        &expected_mean,
        1e-13,
    );
    check(
        "layernorm_forward rstd vs naive",
        &rng,
        &rstd,
        &expected_rstd,
        1e-13,
    );
}

#[test]
fn gradcheck_layernorm() {
    let mut rng = Rng::new();
    for (n, c) in [(7, 6), (5, 13), (2, 1)] {
        let x: Vec<f64> = rng.normals(n * c).iter().map(|v| 2.0 * v + 0.5).collect();
        let (w, bias, g) = (rng.normals(c), rng.normals(c), rng.normals(n * c));
        let f = |x: &[f64], w: &[f64], bias: &[f64]| {
            let (mut out, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
            k::layernorm_forward(&mut out, &mut mean, &mut rstd, x, w, bias, n, c, LN_EPS);
            out
        };
        let (mut out, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
        k::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &bias, n, c, LN_EPS);
        let (mut dx, mut dw, mut db) = (nan(n * c), nan(c), nan(c));
        k::layernorm_backward(&mut dx, &mut dw, &mut db, &g, &x, &w, &mean, &rstd, n, c);
        let label = format!("gradcheck layernorm n={n} c={c}");
        check(
            &format!("{label} dx"),
            &rng,
            &dx,
            &numeric_grad(&x, &g, |v| f(v, &w, &bias)),
            GRAD_TOL,
        );
        check(
            &format!("{label} dw"),
            &rng,
            &dw,
            &numeric_grad(&w, &g, |v| f(&x, v, &bias)),
            GRAD_TOL,
        );
        check(
            &format!("{label} db"),
            &rng,
            &db,
            &numeric_grad(&bias, &g, |v| f(&x, &w, v)),
            GRAD_TOL,
        );
    }
}

// ----------------------------------------------------------------------------
// element-wise ops

#[test]
fn gelu_forward_matches_formula() {
    let mut rng = Rng::new();
    let mut x: Vec<f64> = rng.normals(101).iter().map(|v| 2.5 * v).collect();
    x.extend([-100.0, -30.0, -8.0, 0.0, 8.0, 30.0, 100.0]); // saturated tails stay finite
    let mut out = nan(x.len());
    k::gelu_forward(&mut out, &x);
    let s = (2.0 / std::f64::consts::PI).sqrt();
    let expected: Vec<f64> = x
        .iter()
        .map(|&v| 0.5 * v * (1.0 + (s * (v + 0.044715 * v * v * v)).tanh()))
        .collect();
    check("gelu_forward f64 vs formula", &rng, &out, &expected, 1e-14);

    let mut out32 = nan::<f32>(x.len());
    k::gelu_forward(&mut out32, &to_f32(&x));
    check(
        "gelu_forward f32 vs formula",
        &rng,
        &to_f64(&out32),
        &expected,
        1e-6,
    );

    let mut dx32 = nan::<f32>(x.len());
    k::gelu_backward(&mut dx32, &to_f32(&x), &vec![1.0; x.len()]);
    let seed = rng.seed;
    assert!(
        dx32.iter().all(|v| v.is_finite()),
        "gelu_backward f32 not finite (SMELT_SEED={seed})"
    );
}

#[test]
fn gradcheck_gelu() {
    let mut rng = Rng::new();
    for len in [37, 100_003] {
        // The big size takes the parallel path; check a strided sample of it numerically.
        let x: Vec<f64> = rng.normals(len).iter().map(|v| 2.5 * v).collect();
        let g = rng.normals(len);
        let mut dx = nan(len);
        k::gelu_backward(&mut dx, &x, &g);
        let stride = if len > 1000 { 997 } else { 1 };
        let (xs, gs, dxs): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            x.iter().step_by(stride).copied().collect(),
            g.iter().step_by(stride).copied().collect(),
            dx.iter().step_by(stride).copied().collect(),
        );
        let numeric = numeric_grad(&xs, &gs, |v| {
            let mut out = nan(v.len());
            k::gelu_forward(&mut out, v);
            out
        });
        check(
            &format!("gradcheck gelu len={len}"),
            &rng,
            &dxs,
            &numeric,
            GRAD_TOL,
        );
        assert!(
            dx.iter().all(|v| v.is_finite()),
            "gelu_backward left NaN (SMELT_SEED={})",
            rng.seed
        );
    }
}

#[test]
fn small_elementwise_ops() {
    let mut rng = Rng::new();
    let len = 40_000; // above the parallel threshold
    let (a, b) = (rng.normals(len), rng.normals(len));
    let mut out = nan(len);
    k::add(&mut out, &a, &b);
    let expected: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    check("add", &rng, &out, &expected, 1e-15);

    let mut dst = a.clone();
    k::add_into(&mut dst, &b);
    check("add_into", &rng, &dst, &expected, 1e-15);

    let mut x = a.clone();
    k::scale(&mut x, 0.37);
    let expected: Vec<f64> = a.iter().map(|v| v * 0.37).collect();
    check("scale", &rng, &x, &expected, 1e-15);

    let a32 = to_f32(&a);
    let expected: f64 = a32.iter().map(|&v| (v as f64).powi(2)).sum();
    check(
        "sum_squares f32",
        &rng,
        &[k::sum_squares(&a32)],
        &[expected],
        1e-13,
    );

    let (m, n) = (301, 70);
    let x = rng.normals(m * n);
    let mut sums = nan(n);
    k::sum_rows(&mut sums, &x, m, n);
    let expected: Vec<f64> = (0..n).map(|j| (0..m).map(|i| x[i * n + j]).sum()).collect();
    check("sum_rows", &rng, &sums, &expected, 1e-14);
}

// ----------------------------------------------------------------------------
// attention

const ATTN_SIZES: [(usize, usize, usize, usize); 3] = [(2, 5, 6, 2), (3, 7, 12, 3), (1, 1, 4, 1)];

/// Naive causal attention materialising the full T×T probability matrix per head.
/// Returns `(out (b,t,c), lse (b,nh,t))`.
fn naive_attention(qkv: &[f64], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let at = |bi: usize, ti: usize, part: usize, h: usize, d: usize| {
        qkv[(bi * t + ti) * 3 * c + part * c + h * hs + d]
    };
    let mut out = vec![0.0; b * t * c];
    let mut lse = vec![0.0; b * nh * t];
    for bi in 0..b {
        for h in 0..nh {
            let mut att = vec![vec![0.0; t]; t];
            for i in 0..t {
                for j in 0..t {
                    let s: f64 = (0..hs)
                        .map(|d| at(bi, i, 0, h, d) * at(bi, j, 1, h, d))
                        .sum();
                    att[i][j] = if j <= i { s * scale } else { f64::NEG_INFINITY };
                }
                let max = att[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = att[i].iter().map(|s| (s - max).exp()).sum();
                lse[(bi * nh + h) * t + i] = max + sum.ln();
                for j in 0..t {
                    att[i][j] = (att[i][j] - max).exp() / sum;
                }
                for d in 0..hs {
                    out[(bi * t + i) * c + h * hs + d] =
                        (0..t).map(|j| att[i][j] * at(bi, j, 2, h, d)).sum();
                }
            }
        }
    }
    (out, lse)
}

#[test]
fn attention_forward_matches_naive() {
    let mut rng = Rng::new();
    // t=1 is left out here: its lse is a single dot product, possibly near 0, so a relative
    // error is meaningless (`attention_with_one_token` covers it).
    for (b, t, c, nh) in [(2, 5, 6, 2), (3, 7, 12, 3), (2, 33, 32, 4), (2, 64, 64, 2)] {
        let qkv = rng.normals(b * t * 3 * c);
        let (expected, expected_lse) = naive_attention(&qkv, b, t, c, nh);
        let label = format!("attention_forward b={b} t={t} c={c} nh={nh}");

        let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
        k::attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
        check(&format!("{label} f64 out"), &rng, &out, &expected, 1e-12);
        check(
            &format!("{label} f64 lse"),
            &rng,
            &lse,
            &expected_lse,
            1e-12,
        );

        let (mut out32, mut lse32) = (nan::<f32>(b * t * c), nan::<f32>(b * nh * t));
        k::attention_forward(&mut out32, &mut lse32, &to_f32(&qkv), b, t, c, nh);
        check(
            &format!("{label} f32 out"),
            &rng,
            &to_f64(&out32),
            &expected,
            1e-5,
        );
        check(
            &format!("{label} f32 lse"),
            &rng,
            &to_f64(&lse32),
            &expected_lse,
            1e-5,
        );
    }
}

/// With a single token, attention returns V unchanged and lse = q·k / sqrt(hs).
#[test]
fn attention_with_one_token() {
    let mut rng = Rng::new();
    let (b, c, nh) = (2, 8, 2);
    let hs = c / nh;
    let qkv = rng.normals(b * 3 * c);
    let (mut out, mut lse) = (nan(b * c), nan(b * nh));
    k::attention_forward(&mut out, &mut lse, &qkv, b, 1, c, nh);
    for bi in 0..b {
        let row = &qkv[bi * 3 * c..(bi + 1) * 3 * c];
        assert_eq!(
            out[bi * c..(bi + 1) * c],
            row[2 * c..],
            "SMELT_SEED={}",
            rng.seed
        );
        for h in 0..nh {
            let qk: f64 = (0..hs).map(|d| row[h * hs + d] * row[c + h * hs + d]).sum();
            let err = (lse[bi * nh + h] - qk / (hs as f64).sqrt()).abs();
            assert!(err < 1e-14, "lse error {err:e} (SMELT_SEED={})", rng.seed);
        }
    }
}

#[test]
fn gradcheck_attention() {
    let mut rng = Rng::new();
    for (b, t, c, nh) in ATTN_SIZES {
        let (qkv, g) = (rng.normals(b * t * 3 * c), rng.normals(b * t * c));
        let forward = |qkv: &[f64]| {
            let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
            k::attention_forward(&mut out, &mut lse, qkv, b, t, c, nh);
            (out, lse)
        };
        let (out, lse) = forward(&qkv);
        let mut dqkv = nan(b * t * 3 * c);
        k::attention_backward(&mut dqkv, &g, &qkv, &out, &lse, b, t, c, nh);
        let numeric = numeric_grad(&qkv, &g, |x| forward(x).0);
        check(
            &format!("gradcheck attention b={b} t={t} c={c} nh={nh} dqkv"),
            &rng,
            &dqkv,
            &numeric,
            GRAD_TOL,
        );
    }
}

// ----------------------------------------------------------------------------
// cross-entropy

const CE_SIZES: [(usize, usize, usize); 3] = [(6, 11, 64), (4, 64, 64), (3, 70, 128)];

#[test]
fn cross_entropy_forward_matches_naive() {
    let mut rng = Rng::new();
    for (n, v, vp) in CE_SIZES {
        let mut logits: Vec<f64> = rng.normals(n * vp).iter().map(|x| 3.0 * x).collect();
        // Huge values in the padded columns must be ignored.
        for i in 0..n {
            logits[i * vp + v..(i + 1) * vp].fill(1e3);
        }
        let targets = rng.tokens(n, v as u32);
        let (mut loss, mut lse) = (nan(1), nan(n));
        k::cross_entropy_forward(&mut loss, &mut lse, &logits, &targets, n, v, vp);

        let mut expected_lse = vec![0.0; n];
        let mut expected_loss = 0.0;
        for i in 0..n {
            let row = &logits[i * vp..i * vp + v];
            let sum_exp: f64 = row.iter().map(|z| z.exp()).sum();
            let p_target = row[targets[i] as usize].exp() / sum_exp;
            expected_lse[i] = sum_exp.ln();
            expected_loss -= p_target.ln() / n as f64;
        }
        let label = format!("cross_entropy_forward n={n} v={v} vp={vp}");
        check(
            &format!("{label} loss"),
            &rng,
            &loss,
            &[expected_loss],
            1e-12,
        );
        check(&format!("{label} lse"), &rng, &lse, &expected_lse, 1e-12);
    }
}

#[test]
fn gradcheck_cross_entropy() {
    let mut rng = Rng::new();
    for (n, v, vp) in CE_SIZES {
        let logits: Vec<f64> = rng.normals(n * vp).iter().map(|x| 2.0 * x).collect();
        let targets = rng.tokens(n, v as u32);
        let dloss = rng.normal();
        let loss_of = |logits: &[f64]| {
            let (mut loss, mut lse) = (nan(1), nan(n));
            k::cross_entropy_forward(&mut loss, &mut lse, logits, &targets, n, v, vp);
            (loss, lse)
        };
        let (_, lse) = loss_of(&logits);
        let mut dlogits = nan(n * vp);
        k::cross_entropy_backward(&mut dlogits, &logits, &lse, &targets, dloss, n, v, vp);
        let numeric = numeric_grad(&logits, &[dloss], |x| loss_of(x).0);
        check(
            &format!("gradcheck cross_entropy n={n} v={v} vp={vp} dlogits"),
            &rng,
            &dlogits,
            &numeric,
            GRAD_TOL,
        );
        for i in 0..n {
            assert!(
                dlogits[i * vp + v..(i + 1) * vp].iter().all(|&d| d == 0.0),
                "padded dlogits columns must be exactly 0 (SMELT_SEED={})",
                rng.seed
            );
        }
    }
}

// ----------------------------------------------------------------------------
// optimizer

/// Two AdamW steps of one scalar parameter, written out by hand (torch.optim.AdamW).
fn scalar_adamw(
    p0: f64,
    grads: [f64; 2],
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    gs: f64,
) -> (f64, f64, f64) {
    let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
    for (i, grad) in grads.into_iter().enumerate() {
        let step = (i + 1) as i32;
        let g = grad * gs;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        p *= 1.0 - lr * wd;
        let m_hat = m / (1.0 - b1.powi(step));
        let v_hat = v / (1.0 - b2.powi(step));
        p -= lr * m_hat / (v_hat.sqrt() + eps);
    }
    (p, m, v)
}

#[test]
fn adamw_matches_scalar_two_steps() {
    let mut rng = Rng::new();
    let len = 40_003; // above the parallel threshold
    let (lr, b1, b2, eps, wd, gs) = (3e-3, 0.9, 0.95, 1e-8, 0.1, 0.7);
    let p0 = rng.normals(len);
    let grads = [rng.normals(len), rng.normals(len)];
    let mut expected = [vec![0.0; len], vec![0.0; len], vec![0.0; len]];
    for i in 0..len {
        let (p, m, v) = scalar_adamw(p0[i], [grads[0][i], grads[1][i]], lr, b1, b2, eps, wd, gs);
        (expected[0][i], expected[1][i], expected[2][i]) = (p, m, v);
    }

    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; len], vec![0.0; len]);
    for (step, g) in (1..).zip(&grads) {
        k::adamw(&mut p, g, &mut m, &mut v, lr, b1, b2, eps, wd, step, gs);
    }
    check("adamw f64 params", &rng, &p, &expected[0], 1e-12);
    check("adamw f64 m", &rng, &m, &expected[1], 1e-12);
    check("adamw f64 v", &rng, &v, &expected[2], 1e-12);

    let (mut p, mut m, mut v) = (to_f32(&p0), vec![0f32; len], vec![0f32; len]);
    for (step, g) in (1..).zip(&grads) {
        let (lr, b1, b2, eps, wd, gs) = (
            lr as f32, b1 as f32, b2 as f32, eps as f32, wd as f32, gs as f32,
        );
        k::adamw(
            &mut p,
            &to_f32(g),
            &mut m,
            &mut v,
            lr,
            b1,
            b2,
            eps,
            wd,
            step,
            gs,
        );
    }
    check("adamw f32 params", &rng, &to_f64(&p), &expected[0], 1e-6);
    check("adamw f32 m", &rng, &to_f64(&m), &expected[1], 1e-6);
    check("adamw f32 v", &rng, &to_f64(&v), &expected[2], 1e-6);
}

// ----------------------------------------------------------------------------
// determinism

/// Runs the parallel kernels twice on f32 inputs big enough to be split across threads and
/// checks the results are bitwise identical.
#[test]
fn parallel_kernels_are_deterministic() {
    let mut rng = Rng::new();
    let (b, t, c, nh, v, vp) = (4, 64, 64, 4, 500, 512);
    let x = to_f32(&rng.normals(b * t * c));
    let qkv = to_f32(&rng.normals(b * t * 3 * c));
    let logits = to_f32(&rng.normals(b * t * vp));
    let (w, bias) = (to_f32(&rng.normals(c)), to_f32(&rng.normals(c)));
    let targets = rng.tokens(b * t, v as u32);
    let tokens = rng.tokens(b * t, v as u32);

    let run = || {
        let n = b * t;
        let (mut ln, mut mean, mut rstd) = (nan(n * c), nan(n), nan(n));
        k::layernorm_forward(&mut ln, &mut mean, &mut rstd, &x, &w, &bias, n, c, 1e-5);
        let (mut dx, mut dw, mut db) = (nan(n * c), nan(c), nan(c));
        k::layernorm_backward(&mut dx, &mut dw, &mut db, &ln, &x, &w, &mean, &rstd, n, c);
        let (mut att, mut lse) = (nan(n * c), nan(b * nh * t));
        k::attention_forward(&mut att, &mut lse, &qkv, b, t, c, nh);
        let mut dqkv = nan(n * 3 * c);
        k::attention_backward(&mut dqkv, &x, &qkv, &att, &lse, b, t, c, nh);
        let (mut loss, mut ce_lse) = (nan(1), nan(n));
        k::cross_entropy_forward(&mut loss, &mut ce_lse, &logits, &targets, n, v, vp);
        let (mut dwte, mut dwpe) = (nan(v * c), nan(t * c));
        k::embedding_backward(&mut dwte, &mut dwpe, &x, &tokens, b, t, c);
        let mut dbias = nan(c);
        k::sum_rows(&mut dbias, &x, n, c);
        let ss = k::sum_squares(&x) as f32;
        [dx, dw, db, att, dqkv, loss, dwte, dwpe, dbias, vec![ss]]
    };
    let first = run();
    for _ in 0..3 {
        let again = run();
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "output {i} differs between runs (SMELT_SEED={})",
                rng.seed
            );
        }
    }
}
