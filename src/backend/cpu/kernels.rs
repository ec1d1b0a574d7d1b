//! CPU reference kernels for one GPT-2 training step.
//!
//! In the spirit of llm.c's `train_gpt2.c`: one short function per op, plain loops,
//! generic over the float type (`f32` for training, `f64` for gradient checks).
//!
//! Conventions:
//! - every tensor is a contiguous row-major slice; shapes are given in each doc comment;
//! - every output is fully **overwritten**, never accumulated into, so callers may pass
//!   uninitialised (garbage-filled) buffers;
//! - results are deterministic: parallel loops only split work into disjoint outputs, and
//!   every reduction runs in a fixed order whatever the thread scheduling.
//!
//! Matrix products go through the `gemm` crate (the only `unsafe` in this file, see
//! `gemm_into`); everything else is safe Rust parallelised with rayon.

// The argument lists mirror llm.c's kernels (pointers plus B, T, C, ...), so they are long.
#![allow(clippy::too_many_arguments)]

use std::any::TypeId;
use std::fmt::Debug;
use std::iter::Sum;

use gemm::Parallelism;
use num_traits::{Float, FromPrimitive};
use rayon::prelude::*;

/// The float types the kernels run on: `f32` and `f64`.
pub trait Real: Float + FromPrimitive + Sum + Send + Sync + Debug + 'static {}

impl<T: Float + FromPrimitive + Sum + Send + Sync + Debug + 'static> Real for T {}

/// Element-wise loops below this many elements per task are not worth splitting further.
const PAR_MIN: usize = 1 << 14;

/// Matmuls with more multiply-adds than this use all rayon threads inside `gemm`.
const GEMM_PAR_MIN: usize = 64 * 64 * 64;

/// Converts an `f64` constant to `F`.
fn lit<F: Real>(x: f64) -> F {
    F::from_f64(x).expect("constant representable in F")
}

/// Minimum number of rows of width `c` per rayon task, so each task gets about `PAR_MIN`
/// elements of work.
fn min_rows(c: usize) -> usize {
    (PAR_MIN / c.max(1)).max(1)
}

// ----------------------------------------------------------------------------
// matmul

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, F> {
    data: &'a [F],
    rs: usize,
    cs: usize,
}

impl<'a, F: Copy> Mat<'a, F> {
    fn new(data: &'a [F], rs: usize, cs: usize) -> Self {
        Mat { data, rs, cs }
    }

    fn at(&self, i: usize, j: usize) -> F {
        self.data[i * self.rs + j * self.cs]
    }
}

/// Number of elements a `rows × cols` view with strides `(rs, cs)` spans from its start.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst (m,n) = lhs (m,k) · rhs (k,n)`, or `dst += lhs · rhs` when `accumulate`.
/// `dst` has row stride `dst_rs` and column stride 1; `lhs` and `rhs` are strided views,
/// so transposes cost nothing.
fn gemm_into<F: Real>(
    dst: &mut [F],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<F>,
    rhs: Mat<F>,
    m: usize,
    k: usize,
    n: usize,
    parallelism: Parallelism,
) {
    assert!(span(m, n, dst_rs, 1) <= dst.len(), "gemm: dst too short");
    assert!(
        span(m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "gemm: lhs too short"
    );
    assert!(
        span(k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "gemm: rhs too short"
    );
    if m == 0 || n == 0 {
        return;
    }

    let is_f32_or_f64 =
        TypeId::of::<F>() == TypeId::of::<f32>() || TypeId::of::<F>() == TypeId::of::<f64>();
    if !is_f32_or_f64 {
        // `gemm` only handles f32/f64 (and f16/complex); any other `Real` takes a plain loop.
        for i in 0..m {
            for j in 0..n {
                let acc: F = (0..k).map(|p| lhs.at(i, p) * rhs.at(p, j)).sum();
                let d = &mut dst[i * dst_rs + j];
                *d = if accumulate { *d + acc } else { acc };
            }
        }
        return;
    }

    // SAFETY: `gemm::gemm` computes dst := alpha·dst + beta·lhs·rhs through raw pointers and
    // strides. The asserts above show that every index it touches (i·rs + j·cs for i, j
    // within the shapes) lies inside the corresponding slice. `dst` is a unique borrow, so it
    // cannot alias `lhs` or `rhs`, which are only read. With `read_dst == false`, gemm sets
    // alpha to 0 and its kernels then never read `dst` (so garbage/NaN contents are fine;
    // the tests poison outputs with NaN to check this). `F` is f32 or f64 (checked above), types
    // `gemm` dispatches on by `TypeId`. Note gemm's argument order: column stride BEFORE row
    // stride for each matrix.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            F::one(),
            F::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out (m,n) = op(a) · op(b) (+ bias)`.
///
/// - `a` is `(m,k)`, or stored as `(k,m)` when `trans_a` (then op(a) = aᵀ);
/// - `b` is `(k,n)`, or stored as `(n,k)` when `trans_b`;
/// - `bias` (n), if given, is added to every row.
///
/// Large products (m·k·n > 64³) use all rayon threads.
pub fn matmul<F: Real>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    bias: Option<&[F]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    assert_eq!(out.len(), m * n, "matmul: out must be m*n");
    assert_eq!(a.len(), m * k, "matmul: a must be m*k");
    assert_eq!(b.len(), k * n, "matmul: b must be k*n");
    // Strided views of op(a) as (m,k) and op(b) as (k,n): a transpose just swaps strides.
    let a = if trans_a {
        Mat::new(a, 1, m)
    } else {
        Mat::new(a, k, 1)
    };
    let b = if trans_b {
        Mat::new(b, 1, k)
    } else {
        Mat::new(b, n, 1)
    };
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "matmul: bias must be n");
        if n > 0 {
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(bias);
            }
        }
    }
    let parallelism = if m * k * n > GEMM_PAR_MIN {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    gemm_into(out, n, bias.is_some(), a, b, m, k, n, parallelism);
}

/// `out (n) = Σ_i x[i, :]` for `x (m,n)`: the bias gradient of a matmul.
pub fn sum_rows<F: Real>(out: &mut [F], x: &[F], m: usize, n: usize) {
    assert_eq!(out.len(), n, "sum_rows: out must be n");
    assert_eq!(x.len(), m * n, "sum_rows: x must be m*n");
    // Each task owns a block of columns and sums the rows in order 0..m: deterministic.
    const COLS: usize = 64;
    out.par_chunks_mut(COLS)
        .enumerate()
        .for_each(|(blk, out_blk)| {
            let j0 = blk * COLS;
            out_blk.fill(F::zero());
            for row in x.chunks_exact(n) {
                for (o, &xv) in out_blk.iter_mut().zip(&row[j0..]) {
                    *o = *o + xv;
                }
            }
        });
}

// ----------------------------------------------------------------------------
// embeddings

/// `out (b,t,c) = wte[tokens] + wpe[position]`.
///
/// `tokens` is `(b,t)`; `wte` is `(vocab,c)` and `wpe` is `(max_t,c)` with `max_t >= t`.
pub fn embedding_forward<F: Real>(
    out: &mut [F],
    tokens: &[u32],
    wte: &[F],
    wpe: &[F],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(out.len(), b * t * c, "embedding_forward: out must be b*t*c");
    assert_eq!(tokens.len(), b * t, "embedding_forward: tokens must be b*t");
    assert!(
        wpe.len() >= t * c,
        "embedding_forward: wpe needs at least t rows"
    );
    if c == 0 {
        return;
    }
    out.par_chunks_mut(c)
        .with_min_len(min_rows(c))
        .zip(tokens.par_iter())
        .enumerate()
        .for_each(|(row, (out_row, &tok))| {
            let tok_row = &wte[tok as usize * c..][..c];
            let pos_row = &wpe[(row % t) * c..][..c];
            for ((o, &e), &p) in out_row.iter_mut().zip(tok_row).zip(pos_row) {
                *o = e + p;
            }
        });
}

/// Backward of [`embedding_forward`]: `dwte (vocab,c)` and `dwpe (max_t,c)` from `dout (b,t,c)`.
///
/// Both gradients are fully overwritten: rows of `dwte` for tokens that do not occur, and
/// rows `t..` of `dwpe`, are zero. Rows are scattered in a fixed order, so the result is
/// deterministic.
pub fn embedding_backward<F: Real>(
    dwte: &mut [F],
    dwpe: &mut [F],
    dout: &[F],
    tokens: &[u32],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(
        dout.len(),
        b * t * c,
        "embedding_backward: dout must be b*t*c"
    );
    assert_eq!(
        tokens.len(),
        b * t,
        "embedding_backward: tokens must be b*t"
    );
    assert!(
        c > 0 && dwte.len().is_multiple_of(c),
        "embedding_backward: dwte must be vocab*c"
    );
    assert!(
        dwpe.len().is_multiple_of(c) && dwpe.len() >= t * c,
        "embedding_backward: dwpe needs >= t rows"
    );
    dwte.fill(F::zero());
    dwpe.fill(F::zero());
    for (row, (d, &tok)) in dout.chunks_exact(c).zip(tokens).enumerate() {
        let tok_row = &mut dwte[tok as usize * c..][..c];
        for (g, &dv) in tok_row.iter_mut().zip(d) {
            *g = *g + dv;
        }
        let pos_row = &mut dwpe[(row % t) * c..][..c];
        for (g, &dv) in pos_row.iter_mut().zip(d) {
            *g = *g + dv;
        }
    }
}

// ----------------------------------------------------------------------------
// layernorm

/// LayerNorm over the last dimension of `x (n,c)`:
/// `out = (x - mean) * rstd * w + bias` with `rstd = 1/sqrt(var + eps)` (biased variance).
///
/// `w`, `bias` are `(c)`; `mean` and `rstd` are `(n)` and are saved for the backward pass.
pub fn layernorm_forward<F: Real>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    x: &[F],
    w: &[F],
    bias: &[F],
    n: usize,
    c: usize,
    eps: F,
) {
    assert_eq!(x.len(), n * c, "layernorm_forward: x must be n*c");
    assert_eq!(out.len(), n * c, "layernorm_forward: out must be n*c");
    assert_eq!(mean.len(), n, "layernorm_forward: mean must be n");
    assert_eq!(rstd.len(), n, "layernorm_forward: rstd must be n");
    assert!(
        w.len() == c && bias.len() == c,
        "layernorm_forward: w, bias must be c"
    );
    if c == 0 {
        return;
    }
    let inv_c = F::one() / lit(c as f64);
    out.par_chunks_mut(c)
        .with_min_len(min_rows(c))
        .zip(x.par_chunks(c))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .for_each(|((out_row, x_row), (mean_i, rstd_i))| {
            let m = x_row.iter().copied().sum::<F>() * inv_c;
            let var = x_row.iter().map(|&xv| (xv - m) * (xv - m)).sum::<F>() * inv_c;
            let s = F::one() / (var + eps).sqrt();
            for (((o, &xv), &wv), &bv) in out_row.iter_mut().zip(x_row).zip(w).zip(bias) {
                *o = (xv - m) * s * wv + bv;
            }
            *mean_i = m;
            *rstd_i = s;
        });
}

/// Backward of [`layernorm_forward`]: `dx (n,c)`, `dw (c)`, `db (c)` from `dout (n,c)`,
/// using the `mean` and `rstd` (n) saved by the forward pass.
pub fn layernorm_backward<F: Real>(
    dx: &mut [F],
    dw: &mut [F],
    db: &mut [F],
    dout: &[F],
    x: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    n: usize,
    c: usize,
) {
    assert!(
        dx.len() == n * c && dout.len() == n * c && x.len() == n * c,
        "layernorm_backward: dx, dout, x must be n*c"
    );
    assert!(
        dw.len() == c && db.len() == c && w.len() == c,
        "layernorm_backward: dw, db, w must be c"
    );
    assert!(
        mean.len() == n && rstd.len() == n,
        "layernorm_backward: mean, rstd must be n"
    );
    if c == 0 {
        return;
    }
    let inv_c = F::one() / lit(c as f64);

    // dx, row by row: dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)),
    // where norm = (x - mean) * rstd and dnorm = dout * w.
    dx.par_chunks_mut(c)
        .with_min_len(min_rows(c))
        .zip(dout.par_chunks(c).zip(x.par_chunks(c)))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|((dx_row, (dout_row, x_row)), (&m, &s))| {
            let mut dnorm_mean = F::zero();
            let mut dnorm_norm_mean = F::zero();
            for ((&d, &xv), &wv) in dout_row.iter().zip(x_row).zip(w) {
                let norm = (xv - m) * s;
                dnorm_mean = dnorm_mean + d * wv;
                dnorm_norm_mean = dnorm_norm_mean + d * wv * norm;
            }
            dnorm_mean = dnorm_mean * inv_c;
            dnorm_norm_mean = dnorm_norm_mean * inv_c;
            for (((g, &d), &xv), &wv) in dx_row.iter_mut().zip(dout_row).zip(x_row).zip(w) {
                let norm = (xv - m) * s;
                *g = s * (d * wv - dnorm_mean - norm * dnorm_norm_mean);
            }
        });

    // dw = Σ_rows dout * norm and db = Σ_rows dout. Each task owns a block of columns and
    // sums the rows in order: deterministic.
    const COLS: usize = 64;
    dw.par_chunks_mut(COLS)
        .zip(db.par_chunks_mut(COLS))
        .enumerate()
        .for_each(|(blk, (dw_blk, db_blk))| {
            let j0 = blk * COLS;
            dw_blk.fill(F::zero());
            db_blk.fill(F::zero());
            for i in 0..n {
                let row = i * c + j0;
                let cols = dw_blk.iter_mut().zip(db_blk.iter_mut());
                for ((gw, gb), (&d, &xv)) in cols.zip(dout[row..].iter().zip(&x[row..])) {
                    *gw = *gw + d * (xv - mean[i]) * rstd[i];
                    *gb = *gb + d;
                }
            }
        });
}

// ----------------------------------------------------------------------------
// element-wise ops

/// sqrt(2/π), the constant of GPT-2's tanh GELU.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GPT-2's tanh GELU.
const GELU_CUBIC: f64 = 0.044715;

/// `out = gelu(x)` element-wise (any shape), GPT-2's tanh approximation:
/// `0.5 x (1 + tanh(u))` with `u = sqrt(2/π) (x + 0.044715 x³)`.
///
/// Computed as `x · sigmoid(2u)`, the same function since `0.5 (1 + tanh(u)) = sigmoid(2u)`:
/// one `exp` is several times faster than libm's `tanh`, and there is no cancellation in
/// `1 + tanh(u)` for negative `u`.
pub fn gelu_forward<F: Real>(out: &mut [F], x: &[F]) {
    assert_eq!(out.len(), x.len(), "gelu_forward: out and x must match");
    let (s, k) = (lit::<F>(GELU_SCALE), lit::<F>(GELU_CUBIC));
    out.par_iter_mut()
        .with_min_len(PAR_MIN)
        .zip(x.par_iter())
        .for_each(|(o, &xv)| {
            let u = s * (xv + k * xv * xv * xv);
            *o = xv * sigmoid(u + u);
        });
}

/// Backward of [`gelu_forward`]: `dx = gelu'(x) * dout` element-wise (any shape), where
/// `gelu'(x) = σ + x σ (1 − σ) · 2 du/dx` with `σ = sigmoid(2u)`.
pub fn gelu_backward<F: Real>(dx: &mut [F], x: &[F], dout: &[F]) {
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward: dx, x, dout must match"
    );
    let (s, k) = (lit::<F>(GELU_SCALE), lit::<F>(GELU_CUBIC));
    let (two, three) = (lit::<F>(2.0), lit::<F>(3.0));
    dx.par_iter_mut()
        .with_min_len(PAR_MIN)
        .zip(x.par_iter().zip(dout.par_iter()))
        .for_each(|(g, (&xv, &d))| {
            let u = s * (xv + k * xv * xv * xv);
            let du = s * (F::one() + three * k * xv * xv);
            let sig = sigmoid(u + u);
            let grad = sig + xv * sig * (F::one() - sig) * two * du;
            *g = grad * d;
        });
}

/// `1 / (1 + exp(−z))`.
fn sigmoid<F: Real>(z: F) -> F {
    F::one() / (F::one() + (-z).exp())
}

/// `out = a + b` element-wise (any shape; the residual connection).
pub fn add<F: Real>(out: &mut [F], a: &[F], b: &[F]) {
    assert!(
        out.len() == a.len() && b.len() == a.len(),
        "add: out, a, b must match"
    );
    out.par_iter_mut()
        .with_min_len(PAR_MIN)
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|(o, (&av, &bv))| *o = av + bv);
}

/// `dst += src` element-wise (gradient accumulation).
pub fn add_into<F: Real>(dst: &mut [F], src: &[F]) {
    assert_eq!(dst.len(), src.len(), "add_into: dst and src must match");
    dst.par_iter_mut()
        .with_min_len(PAR_MIN)
        .zip(src.par_iter())
        .for_each(|(d, &sv)| *d = *d + sv);
}

/// `x *= s` element-wise.
pub fn scale<F: Real>(x: &mut [F], s: F) {
    x.par_iter_mut()
        .with_min_len(PAR_MIN)
        .for_each(|v| *v = *v * s);
}

/// `Σ x²`, accumulated in f64 in a fixed order (for the gradient norm).
pub fn sum_squares<F: Real>(x: &[F]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(PAR_MIN)
        .map(|chunk| chunk.iter().map(|v| v.to_f64().unwrap().powi(2)).sum())
        .collect();
    partial.iter().sum()
}

// ----------------------------------------------------------------------------
// attention

/// Turns `row` (the raw scores `q_i · k_j` of query `i`) into causal softmax probabilities,
/// given the row's log-sum-exp: `row[j] = exp(row[j] * scale - lse)` for `j <= i`, 0 after.
fn causal_probs<F: Real>(row: &mut [F], i: usize, scale: F, lse: F) {
    let (live, masked) = row.split_at_mut(i + 1);
    for s in live {
        *s = (*s * scale - lse).exp();
    }
    masked.fill(F::zero());
}

/// Log-sum-exp of `row[..=i] * scale` (the causally visible, scaled scores of query `i`).
fn causal_lse<F: Real>(row: &[F], i: usize, scale: F) -> F {
    let live = &row[..=i];
    let max = live
        .iter()
        .fold(F::neg_infinity(), |mx, &s| mx.max(s * scale));
    let sum: F = live.iter().map(|&s| (s * scale - max).exp()).sum();
    max + sum.ln()
}

/// Views of head `h`'s Q, K and V (each `(t, hs)`, row stride `3c`) inside batch row `bi` of
/// `qkv (b,t,3c)`, plus the offset of the head's first column in a `(b,t,c)` tensor.
struct HeadViews<'a, F> {
    q: Mat<'a, F>,
    k: Mat<'a, F>,
    v: Mat<'a, F>,
    /// `Kᵀ` as an `(hs, t)` view.
    kt: Mat<'a, F>,
    /// `Vᵀ` as an `(hs, t)` view.
    vt: Mat<'a, F>,
    /// Index of element (0, 0) of this head in a `(b,t,c)` tensor; its row stride is `c`.
    btc_offset: usize,
}

fn head_views<F: Real>(
    qkv: &[F],
    bi: usize,
    h: usize,
    t: usize,
    c: usize,
    hs: usize,
) -> HeadViews<'_, F> {
    let base = bi * t * 3 * c + h * hs;
    let rows = |off: usize| Mat::new(&qkv[base + off..], 3 * c, 1);
    let cols = |off: usize| Mat::new(&qkv[base + off..], 1, 3 * c);
    HeadViews {
        q: rows(0),
        k: rows(c),
        v: rows(2 * c),
        kt: cols(c),
        vt: cols(2 * c),
        btc_offset: bi * t * c + h * hs,
    }
}

/// Causal multi-head self-attention, forward.
///
/// - `qkv (b,t,3c)`: the c_attn output; Q, K, V are columns `0..c`, `c..2c`, `2c..3c`, and
///   head `h` uses columns `h*hs..(h+1)*hs` of each, with `hs = c/nh`;
/// - `out (b,t,c)`: `softmax(mask(q kᵀ / sqrt(hs))) v`, head `h` at columns `h*hs..`;
/// - `lse (b,nh,t)`: log-sum-exp of each query's scaled, masked scores, saved for backward
///   (the probabilities themselves are not saved, as in FlashAttention-2).
///
/// Work is split over (batch, head) pairs.
pub fn attention_forward<F: Real>(
    out: &mut [F],
    lse: &mut [F],
    qkv: &[F],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_forward: c must be a multiple of nh"
    );
    assert_eq!(
        qkv.len(),
        b * t * 3 * c,
        "attention_forward: qkv must be b*t*3c"
    );
    assert_eq!(out.len(), b * t * c, "attention_forward: out must be b*t*c");
    assert_eq!(
        lse.len(),
        b * nh * t,
        "attention_forward: lse must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let hs = c / nh;
    let scale = F::one() / lit::<F>(hs as f64).sqrt();

    // Per (b, h): scores = Q Kᵀ, softmax in place, then O = P V into a (t, hs) buffer.
    let heads: Vec<Vec<F>> = lse
        .par_chunks_mut(t)
        .enumerate()
        .map_init(
            || vec![F::zero(); t * t],
            |scores, (bh, lse_bh)| {
                let hv = head_views(qkv, bh / nh, bh % nh, t, c, hs);
                gemm_into(scores, t, false, hv.q, hv.kt, t, hs, t, Parallelism::None);
                for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                    lse_bh[i] = causal_lse(row, i, scale);
                    causal_probs(row, i, scale, lse_bh[i]);
                }
                let p = Mat::new(&scores[..], t, 1);
                let mut o = vec![F::zero(); t * hs];
                gemm_into(&mut o, hs, false, p, hv.v, t, t, hs, Parallelism::None);
                o
            },
        )
        .collect();

    // Merge heads: head h's (t, hs) block goes to columns h*hs.. of out.
    out.par_chunks_mut(t * c)
        .enumerate()
        .for_each(|(bi, out_b)| {
            for h in 0..nh {
                let o = &heads[bi * nh + h];
                for (out_row, o_row) in out_b.chunks_exact_mut(c).zip(o.chunks_exact(hs)) {
                    out_row[h * hs..][..hs].copy_from_slice(o_row);
                }
            }
        });
}

/// Causal multi-head self-attention, backward: `dqkv (b,t,3c)` (fully overwritten) from
/// `dout (b,t,c)`, given the forward's inputs `qkv (b,t,3c)`, output `out (b,t,c)` and
/// `lse (b,nh,t)`.
///
/// Per (b, h), with `P = exp(S·scale − lse)` recomputed (masked) from `S = Q Kᵀ`:
/// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `D_i = Σ_d dO_id O_id`, `dS = P ∘ (dP − D)`,
/// `dQ = dS K · scale`, `dK = dSᵀ Q · scale`.
pub fn attention_backward<F: Real>(
    dqkv: &mut [F],
    dout: &[F],
    qkv: &[F],
    out: &[F],
    lse: &[F],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_backward: c must be a multiple of nh"
    );
    assert!(
        qkv.len() == b * t * 3 * c && dqkv.len() == b * t * 3 * c,
        "attention_backward: qkv, dqkv must be b*t*3c"
    );
    assert!(
        out.len() == b * t * c && dout.len() == b * t * c,
        "attention_backward: out, dout must be b*t*c"
    );
    assert_eq!(
        lse.len(),
        b * nh * t,
        "attention_backward: lse must be b*nh*t"
    );
    if b * t * c == 0 {
        return;
    }
    let hs = c / nh;
    let scale = F::one() / lit::<F>(hs as f64).sqrt();

    // Per (b, h): a (t, 3hs) buffer holding [dQ | dK | dV] for this head.
    let heads: Vec<Vec<F>> = lse
        .par_chunks(t)
        .enumerate()
        .map_init(
            || (vec![F::zero(); t * t], vec![F::zero(); t * t]),
            |(p, ds), (bh, lse_bh)| {
                let hv = head_views(qkv, bh / nh, bh % nh, t, c, hs);
                let d_o = Mat::new(&dout[hv.btc_offset..], c, 1);
                let none = Parallelism::None;

                // P, recomputed from the scores and the saved log-sum-exp.
                gemm_into(p, t, false, hv.q, hv.kt, t, hs, t, none);
                for (i, row) in p.chunks_exact_mut(t).enumerate() {
                    causal_probs(row, i, scale, lse_bh[i]);
                }
                let p_t = Mat::new(&p[..], 1, t);

                let g_rs = 3 * hs;
                let mut grads = vec![F::zero(); t * g_rs];
                // dV = Pᵀ dO
                gemm_into(&mut grads[2 * hs..], g_rs, false, p_t, d_o, t, t, hs, none);
                // dP = dO Vᵀ (stored in ds)
                gemm_into(ds, t, false, d_o, hv.vt, t, hs, t, none);
                // dS = P ∘ (dP − D) · scale, with D_i = dO_i · O_i
                for i in 0..t {
                    let row = hv.btc_offset + i * c;
                    let d_i: F = (dout[row..][..hs].iter().zip(&out[row..][..hs]))
                        .map(|(&g, &o)| g * o)
                        .sum();
                    for j in 0..t {
                        ds[i * t + j] = p[i * t + j] * (ds[i * t + j] - d_i) * scale;
                    }
                }
                let ds_m = Mat::new(&ds[..], t, 1);
                let ds_t = Mat::new(&ds[..], 1, t);
                // dQ = dS K, dK = dSᵀ Q (scale already folded into dS)
                gemm_into(&mut grads[..], g_rs, false, ds_m, hv.k, t, t, hs, none);
                gemm_into(&mut grads[hs..], g_rs, false, ds_t, hv.q, t, t, hs, none);
                grads
            },
        )
        .collect();

    // Scatter: head h's dQ, dK, dV go to columns h*hs.. of the Q, K and V parts of dqkv.
    dqkv.par_chunks_mut(t * 3 * c)
        .enumerate()
        .for_each(|(bi, dqkv_b)| {
            for h in 0..nh {
                let g = &heads[bi * nh + h];
                for (d_row, g_row) in dqkv_b.chunks_exact_mut(3 * c).zip(g.chunks_exact(3 * hs)) {
                    for part in 0..3 {
                        d_row[part * c + h * hs..][..hs].copy_from_slice(&g_row[part * hs..][..hs]);
                    }
                }
            }
        });
}

// ----------------------------------------------------------------------------
// cross-entropy loss

/// Mean cross-entropy of `logits (n,vp)` against `targets (n)`.
///
/// Only the first `v` of the `vp` columns are real vocabulary (vp is v padded to a multiple
/// of 64); the softmax runs over those. Writes `loss[0] = mean_i (lse_i − logit_i[target_i])`
/// and the per-row log-sum-exp `lse (n)`, saved for backward.
pub fn cross_entropy_forward<F: Real>(
    loss: &mut [F],
    lse: &mut [F],
    logits: &[F],
    targets: &[u32],
    n: usize,
    v: usize,
    vp: usize,
) {
    assert!(v > 0 && v <= vp, "cross_entropy_forward: need 0 < v <= vp");
    assert_eq!(
        loss.len(),
        1,
        "cross_entropy_forward: loss must have length 1"
    );
    assert_eq!(lse.len(), n, "cross_entropy_forward: lse must be n");
    assert_eq!(
        logits.len(),
        n * vp,
        "cross_entropy_forward: logits must be n*vp"
    );
    assert_eq!(targets.len(), n, "cross_entropy_forward: targets must be n");
    assert!(
        targets.iter().all(|&tg| (tg as usize) < v),
        "cross_entropy_forward: target >= v"
    );
    let row_losses: Vec<F> = lse
        .par_iter_mut()
        .with_min_len(min_rows(vp))
        .zip(logits.par_chunks(vp).zip(targets.par_iter()))
        .map(|(lse_i, (row, &target))| {
            let row = &row[..v];
            let max = row.iter().fold(F::neg_infinity(), |mx, &z| mx.max(z));
            let sum: F = row.iter().map(|&z| (z - max).exp()).sum();
            *lse_i = max + sum.ln();
            *lse_i - row[target as usize]
        })
        .collect();
    // Summed in row order: deterministic.
    loss[0] = row_losses.into_iter().sum::<F>() / lit(n as f64);
}

/// Backward of [`cross_entropy_forward`]: `dlogits (n,vp)` for an upstream gradient `dloss`
/// of the mean loss: `dloss/n · (softmax_ij − [j == target_i])` for `j < v`, and 0 in the
/// padded columns `v..vp`.
pub fn cross_entropy_backward<F: Real>(
    dlogits: &mut [F],
    logits: &[F],
    lse: &[F],
    targets: &[u32],
    dloss: F,
    n: usize,
    v: usize,
    vp: usize,
) {
    assert!(v > 0 && v <= vp, "cross_entropy_backward: need 0 < v <= vp");
    assert!(
        dlogits.len() == n * vp && logits.len() == n * vp,
        "cross_entropy_backward: dlogits, logits must be n*vp"
    );
    assert!(
        lse.len() == n && targets.len() == n,
        "cross_entropy_backward: lse, targets must be n"
    );
    assert!(
        targets.iter().all(|&tg| (tg as usize) < v),
        "cross_entropy_backward: target >= v"
    );
    let g = dloss / lit(n as f64);
    dlogits
        .par_chunks_mut(vp)
        .with_min_len(min_rows(vp))
        .zip(logits.par_chunks(vp))
        .zip(lse.par_iter().zip(targets.par_iter()))
        .for_each(|((d_row, row), (&lse_i, &target))| {
            let (real, pad) = d_row.split_at_mut(v);
            for (j, (d, &z)) in real.iter_mut().zip(row).enumerate() {
                let p = (z - lse_i).exp();
                let indicator = if j == target as usize {
                    F::one()
                } else {
                    F::zero()
                };
                *d = g * (p - indicator);
            }
            pad.fill(F::zero());
        });
}

// ----------------------------------------------------------------------------
// optimizer

/// One AdamW step, with torch.optim.AdamW's math, on `params`, `grads`, `m`, `v` (all the
/// same length). `step` is 1-based; the gradient is first multiplied by `grad_scale` (e.g.
/// for clipping):
///
/// ```text
/// g = grad * grad_scale
/// m = beta1 m + (1 − beta1) g
/// v = beta2 v + (1 − beta2) g²
/// p *= 1 − lr wd
/// p −= lr / (1 − beta1^step) · m / (sqrt(v) / sqrt(1 − beta2^step) + eps)
/// ```
///
/// As in torch, the bias corrections are computed in f64 and then rounded to `F`.
pub fn adamw<F: Real>(
    params: &mut [F],
    grads: &[F],
    m: &mut [F],
    v: &mut [F],
    lr: F,
    beta1: F,
    beta2: F,
    eps: F,
    weight_decay: F,
    step: u64,
    grad_scale: F,
) {
    let len = params.len();
    assert!(
        grads.len() == len && m.len() == len && v.len() == len,
        "adamw: params, grads, m, v must match"
    );
    assert!(step >= 1, "adamw: step is 1-based");
    let to_f64 = |x: F| x.to_f64().expect("F converts to f64");
    let step_f = step as f64;
    let step_size: F = lit(to_f64(lr) / (1.0 - to_f64(beta1).powf(step_f)));
    let bias_correction2_sqrt: F = lit((1.0 - to_f64(beta2).powf(step_f)).sqrt());
    let decay: F = lit(1.0 - to_f64(lr) * to_f64(weight_decay));
    params
        .par_iter_mut()
        .with_min_len(PAR_MIN)
        .zip(grads.par_iter())
        .zip(m.par_iter_mut().zip(v.par_iter_mut()))
        .for_each(|((p, &grad), (m_i, v_i))| {
            let g = grad * grad_scale;
            *m_i = beta1 * *m_i + (F::one() - beta1) * g;
            *v_i = beta2 * *v_i + (F::one() - beta2) * g * g;
            let denom = v_i.sqrt() / bias_correction2_sqrt + eps;
            *p = *p * decay - step_size * (*m_i / denom);
        });
}
