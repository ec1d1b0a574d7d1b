//! `kernels/matmul.cu`: the tensor-core fragment layouts alone (one `mma.sync.m16n8k16`
//! against a naive product, `ldmatrix.x4` and `.trans` against the PTX ISA's element
//! assignment), then the matmuls, on odd and tile-unaligned sizes, k long enough to cycle the
//! 3-stage pipeline, all four transposes, with and without bias and GELU epilogue, inputs and
//! outputs aligned (cp.async chunks, paired stores) or not (element paths), and GPT-2's
//! matmuls (GPU only). Errors are relative to |op(a)|·|op(b)| + |bias| (the magnitude of the
//! terms each output sums: rounding is bounded relative to that, and cancellation cannot make
//! the measure flake): `matmul_bf16` against f64 on the same bf16 inputs (1e-4: only the f32
//! accumulation differs) and on the unrounded inputs (1e-2); its `gelu_out` against the CPU
//! GELU of its own `out` (1e-6, relative to |out|) and the f64 GELU of the f64 product (1e-4).
//! `matmul_bf16_to_bf16` is bit for bit `matmul_bf16`'s outputs rounded to bf16 (one templated
//! body, only the stores differ), and within 1e-2 of the f64 results rounded to bf16.
//! GPT-2-sized outputs are compared on 256 random rows and the edges.

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::int;
use smelt::backend::kernels::matmul::{self as k, bf16_to_f32, f32_to_bf16, to_bf16};
use smelt::backend::{DType, MatmulShape};

use crate::harness::{on_every_runtime, rounded, widen, Buf, Dev, TOL_BF16};

/// `matmul_bf16` against f64 on the same bf16 inputs: only the f32 accumulation differs.
const TOL_SAME_INPUTS: f64 = 1e-4;
/// `gelu_out` against the CPU's f32 GELU of the kernel's own `out`.
const TOL_GELU_SAME: f64 = 1e-6;

/// One matmul to check: shape, and how its operands are placed.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub s: MatmulShape,
    pub bias: bool,
    /// Inputs 16-byte aligned (else 4 bytes past: element loads).
    pub inputs_aligned: bool,
    /// Outputs aligned for paired / vector stores (else one element past).
    pub out_aligned: bool,
    /// The GELU epilogue, with `gelu_out` aligned or not.
    pub gelu: Option<bool>,
}

impl Case {
    pub fn new(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) -> Case {
        Case {
            s: MatmulShape {
                m,
                k,
                n,
                trans_a,
                trans_b,
            },
            bias: false,
            inputs_aligned: true,
            out_aligned: true,
            gelu: None,
        }
    }

    pub fn placed(self, (bias, inputs_aligned, out_aligned, gelu): Placement) -> Case {
        Case {
            bias,
            inputs_aligned,
            out_aligned,
            gelu,
            ..self
        }
    }

    pub fn what(&self, kernel: &str) -> String {
        format!("{kernel} {self:?}")
    }
}

/// How a case places its operands: (bias, inputs aligned, outputs aligned, GELU epilogue with
/// `gelu_out` aligned or not).
type Placement = (bool, bool, bool, Option<bool>);

/// With and without bias.
const PLAIN: [Placement; 2] = [(false, true, true, None), (true, true, true, None)];
/// Each operand placement off (element loads, no paired or vector stores).
const MISALIGNED: [Placement; 5] = [
    (true, false, false, None),
    (true, false, true, None),
    (true, true, false, None),
    (true, true, true, Some(false)),
    (true, false, false, Some(false)),
];
/// The GELU epilogue with and without bias, `out` and `gelu_out` aligned, both not (with the
/// inputs), or `gelu_out` alone not.
const GELU: [Placement; 4] = [
    (true, true, true, Some(true)),
    (false, true, true, Some(true)),
    (true, false, false, Some(true)),
    (true, true, true, Some(false)),
];

/// Every case over the four transposes: `plain` sizes [`PLAIN`], `misaligned` sizes
/// [`MISALIGNED`], `gelu` sizes [`GELU`], then [`gpt2_cases`] (GPU only).
pub fn cases<R: Runtime>(
    dev: &Dev<R>,
    plain: &[(usize, usize, usize)],
    misaligned: &[(usize, usize, usize)],
    gelu: &[(usize, usize, usize)],
) -> Vec<Case> {
    let mut small = Vec::new();
    for (sizes, placements) in [
        (plain, &PLAIN[..]),
        (misaligned, &MISALIGNED),
        (gelu, &GELU),
    ] {
        for (&(m, k, n), &placement) in sizes
            .iter()
            .flat_map(|s| placements.iter().map(move |p| (s, p)))
        {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                small.push(Case::new(m, k, n, ta, tb).placed(placement));
            }
        }
    }
    dev.cases(&small, &gpt2_cases())
}

/// GPT-2 124M's matmuls at B·T = 8192 rows, as training runs them: the four of a block
/// (C → 3C, C → C, C → 4C with GELU, 4C → C), each forward (`x · W`, W stored (in, out) as
/// GPT-2's Conv1D, bias), input gradient (`dout · Wᵀ`) and weight gradient (`xᵀ · dout`), and
/// the tied LM head's three (`x · wteᵀ`, `dlogits · wte`, `dlogitsᵀ · x`).
pub fn gpt2_cases() -> Vec<Case> {
    let (bt, c) = (8 * 1024, 768);
    let mut large = Vec::new();
    for (inp, out, gelu) in [
        (c, 3 * c, false),
        (c, c, false),
        (c, 4 * c, true),
        (4 * c, c, false),
    ] {
        let forward = (true, true, true, gelu.then_some(true));
        large.push(Case::new(bt, inp, out, false, false).placed(forward));
        large.push(Case::new(bt, out, inp, false, true));
        large.push(Case::new(inp, bt, out, true, false));
    }
    let vp = 50304;
    large.push(Case::new(bt, c, vp, false, true));
    large.push(Case::new(bt, vp, c, false, false));
    large.push(Case::new(vp, bt, c, true, false));
    large
}

/// A case's random inputs (`a` normal, `b` half that, `bias` normal) on the host.
pub struct Inputs {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Inputs {
    pub fn new<R: Runtime>(dev: &Dev<R>, c: &Case) -> Inputs {
        let s = &c.s;
        Inputs {
            a: dev.normal(s.m * s.k, 1.0, 0.0),
            b: dev.normal(s.k * s.n, 0.5, 0.0),
            bias: c.bias.then(|| dev.normal(s.n, 1.0, 0.0)),
        }
    }

    /// `a` and `b` rounded to bf16 and back: what the tensor cores multiply.
    pub fn rounded(&self) -> Inputs {
        Inputs {
            a: rounded(&self.a),
            b: rounded(&self.b),
            bias: self.bias.clone(),
        }
    }

    /// The rows `rows` of `op(a) · op(b) (+ bias)` in f64, and of |op(a)|·|op(b)| + |bias|.
    pub fn product(&self, s: &MatmulShape, rows: &[usize]) -> Reference {
        let op_a: Vec<f64> = rows
            .iter()
            .flat_map(|&i| {
                (0..s.k).map(move |kk| match s.trans_a {
                    false => self.a[i * s.k + kk],
                    true => self.a[kk * s.m + i],
                } as f64)
            })
            .collect();
        let b: Vec<f64> = self.b.iter().map(|&x| x as f64).collect();
        let bias: Option<Vec<f64>> = self
            .bias
            .as_ref()
            .map(|v| v.iter().map(|&x| x as f64).collect());
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        let (r, k, n) = (rows.len(), s.k, s.n);
        let product = |a: &[f64], b: &[f64], bias: Option<&[f64]>| {
            let mut o = vec![0.0; r * n];
            cpu::matmul(&mut o, a, b, bias, r, k, n, false, s.trans_b);
            o
        };
        let abs_bias = bias.as_deref().map(abs);
        Reference {
            want: product(&op_a, &b, bias.as_deref()),
            scale: product(&abs(&op_a), &abs(&b), abs_bias.as_deref()),
        }
    }
}

/// Values to compare with in f64 (`want`), and the magnitudes of the terms each one sums
/// (`scale`): rounding errors are bounded relative to those, not to the result, which
/// cancellation can make arbitrarily small.
#[derive(Clone)]
pub struct Reference {
    pub want: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Reference {
    /// ‖got − want‖ / ‖scale‖ (‖got − want‖ when scale is zero), asserted below `tol`; a NaN
    /// anywhere fails.
    pub fn check<R: Runtime>(&self, dev: &Dev<R>, what: &str, got: &[f32], tol: f64) {
        assert_eq!(got.len(), self.want.len(), "{what}: lengths differ");
        let diff: f64 = got
            .iter()
            .zip(&self.want)
            .map(|(&g, &w)| (g as f64 - w).powi(2))
            .sum();
        let norm: f64 = self.scale.iter().map(|w| w * w).sum();
        let err = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        println!("KERNEL-CHECK\t{}\t{what}\t{err:.3e}", dev.rt.name());
        assert!(
            err < tol,
            "{what} on {}: relative error {err:e} >= {tol:e} (seed {}; SMELT_SEED replays)",
            dev.rt.name(),
            dev.seed
        );
    }

    /// GPT-2's GELU of `want` (|gelu'| < 1.13: the error of the product carries over).
    pub fn gelu(&self) -> Reference {
        let mut want = vec![0.0f64; self.want.len()];
        cpu::gelu_forward(&mut want, &self.want);
        Reference {
            want,
            ..self.clone()
        }
    }

    /// `want` rounded to bf16.
    pub fn rounded(&self) -> Reference {
        let want = self
            .want
            .iter()
            .map(|&w| bf16_to_f32(f32_to_bf16(w as f32)) as f64);
        Reference {
            want: want.collect(),
            ..self.clone()
        }
    }
}

/// The rows to compare: all of a small output; 256 random ones and both edges of a large one.
pub fn rows_to_check<R: Runtime>(dev: &Dev<R>, m: usize) -> Vec<usize> {
    if m <= 512 {
        return (0..m).collect();
    }
    let mut rows: Vec<usize> = dev.ids(256, m).into_iter().map(|r| r as usize).collect();
    rows.extend([0, m - 1]);
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The rows `rows` of an `(m, n)` row-major matrix.
pub fn rows_of<T: Copy>(x: &[T], rows: &[usize], n: usize) -> Vec<T> {
    rows.iter()
        .flat_map(|&r| x[r * n..(r + 1) * n].iter().copied())
        .collect()
}

/// Places a kernel input as the case asks.
pub fn input<R: Runtime>(dev: &Dev<R>, c: &Case, x: &[f32], dtype: DType) -> Buf<R> {
    match (dtype, c.inputs_aligned) {
        (DType::F32, true) => dev.f32s(x),
        (DType::F32, false) => dev.f32s_misaligned(x),
        (DType::Bf16, true) => dev.bf16s(&to_bf16(x)),
        (DType::Bf16, false) => dev.bf16s_misaligned(&to_bf16(x)),
    }
}

/// A poisoned output (f32 NaN, bf16 0xffff) of `len` elements at `addr`: aligned for paired
/// and vector stores, or one element past that.
pub struct Out<R: Runtime> {
    buf: Buf<R>,
    dtype: DType,
    pub addr: u64,
}

impl<R: Runtime> Out<R> {
    pub fn new(dev: &Dev<R>, dtype: DType, len: usize, aligned: bool) -> Out<R> {
        let skip = usize::from(!aligned);
        let buf = match dtype {
            DType::F32 => dev.f32_out(len + skip),
            DType::Bf16 => dev.bf16_out(len + skip),
        };
        let addr = buf.addr + (skip * dtype.bytes()) as u64;
        Out { buf, dtype, addr }
    }

    /// The values (bf16 widened), after checking that the skipped element stayed poisoned.
    pub fn read(&self, dev: &Dev<R>, what: &str) -> Vec<f32> {
        let all = match self.dtype {
            DType::F32 => dev.read_f32(&self.buf, what),
            DType::Bf16 => widen(&dev.read_u16(&self.buf, what)),
        };
        let skip = (self.addr - self.buf.addr) as usize / self.dtype.bytes();
        assert!(
            all[..skip].iter().all(|v| v.is_nan()),
            "{what}: wrote before the output"
        );
        all[skip..].to_vec()
    }
}

/// The kernel's outputs for a case: `out`, and `gelu_out` when the case has the epilogue.
pub type Outputs = (Vec<f32>, Option<Vec<f32>>);

/// One launch of a matmul kernel (`launch(out, gelu_out, a, b, bias)`) on the case's inputs
/// placed as `dtype` (inputs) and `out_type`.
pub fn run<R: Runtime>(
    dev: &Dev<R>,
    c: &Case,
    x: &Inputs,
    (dtype, out_type): (DType, DType),
    launch: impl FnOnce(u64, u64, u64, u64, u64),
) -> Outputs {
    let (a, b) = (input(dev, c, &x.a, dtype), input(dev, c, &x.b, dtype));
    let bias = x.bias.as_ref().map(|v| dev.f32s(v));
    let mn = c.s.m * c.s.n;
    let out = Out::new(dev, out_type, mn, c.out_aligned);
    let gelu = c.gelu.map(|aligned| Out::new(dev, out_type, mn, aligned));
    launch(
        out.addr,
        gelu.as_ref().map_or(0, |g| g.addr),
        a.addr,
        b.addr,
        bias.as_ref().map_or(0, |b| b.addr),
    );
    let what = c.what("matmul");
    let gelu = gelu.map(|g| g.read(dev, &format!("{what} gelu_out")));
    (out.read(dev, &what), gelu)
}

/// A case through the kernel of `out_type` (`matmul_bf16` or `matmul_bf16_to_bf16`).
fn run_bf16<R: Runtime>(dev: &Dev<R>, c: &Case, x: &Inputs, out_type: DType) -> Outputs {
    let s = c.s;
    let (mi, ki, ni) = (int(s.m), int(s.k), int(s.n));
    let (ta, tb) = (i32::from(s.trans_a), i32::from(s.trans_b));
    run(
        dev,
        c,
        x,
        (DType::Bf16, out_type),
        |out, gelu, a, b, bias| {
            unsafe {
                match out_type {
                    DType::F32 => {
                        k::matmul_bf16::launch(&dev.rt, out, gelu, a, b, bias, mi, ki, ni, ta, tb)
                    }
                    DType::Bf16 => k::matmul_bf16_to_bf16::launch(
                        &dev.rt, out, gelu, a, b, bias, mi, ki, ni, ta, tb,
                    ),
                }
            }
            .unwrap()
        },
    )
}

fn bf16_cases<R: Runtime>(dev: &Dev<R>) -> Vec<Case> {
    cases(
        dev,
        // Odd, tile-unaligned, one exact tile, k cycling the 3 stages several times, and
        // multiples of 8 (16-byte cp.async chunks) with partial edge tiles.
        &[
            (1, 1, 1),
            (5, 7, 3),
            (17, 33, 65),
            (130, 70, 90),
            (128, 128, 64),
            (257, 129, 33),
            (72, 200, 80),
            (64, 264, 64),
            (136, 96, 200),
        ],
        &[(72, 200, 80), (128, 128, 64)],
        &[
            (1, 1, 1),
            (5, 7, 3),
            (17, 33, 65),
            (130, 70, 90),
            (72, 200, 80),
        ],
    )
}

on_every_runtime!(
    mma_bf16_selftest,
    ldmatrix_selftest,
    matmul_bf16,
    matmul_bf16_to_bf16,
    matmul_sequence,
    empty,
);

fn mma_bf16_selftest<R: Runtime>(dev: &Dev<R>) {
    for _ in 0..4 {
        let (a, b) = (
            to_bf16(&dev.normal(256, 1.0, 0.0)),
            to_bf16(&dev.normal(128, 1.0, 0.0)),
        );
        let c = dev.normal(128, 1.0, 0.0);
        let d = dev.f32_out(128);
        let (ab, bb, cb) = (dev.bf16s(&a), dev.bf16s(&b), dev.f32s(&c));
        unsafe { k::mma_bf16_selftest::launch(&dev.rt, d.addr, ab.addr, bb.addr, cb.addr) }
            .unwrap();
        let got = dev.read_f32(&d, "mma_bf16_selftest");
        for i in 0..16 {
            for j in 0..8 {
                let (mut want, mut mag) = (c[i * 8 + j] as f64, (c[i * 8 + j] as f64).abs());
                for kk in 0..16 {
                    let p = bf16_to_f32(a[i * 16 + kk]) as f64 * bf16_to_f32(b[kk * 8 + j]) as f64;
                    want += p;
                    mag += p.abs();
                }
                let g = got[i * 8 + j] as f64;
                assert!(
                    (g - want).abs() <= 1e-6 * mag,
                    "mma d[{i}][{j}] = {g}, want {want} on {} (seed {})",
                    dev.rt.name(),
                    dev.seed
                );
            }
        }
    }
}

fn ldmatrix_selftest<R: Runtime>(dev: &Dev<R>) {
    let src: Vec<u16> = (0..256).collect();
    let (sb, out) = (dev.bf16s(&src), dev.f32_out(256));
    unsafe { k::ldmatrix_selftest::launch(&dev.rt, out.addr, sb.addr) }.unwrap();
    let got: Vec<u32> = dev
        .read_f32(&out, "ldmatrix_selftest")
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let at = |row: usize, col: usize| u32::from(src[row * 16 + col]);
    let mut want = vec![0u32; 256];
    for lane in 0..32 {
        for i in 0..4 {
            let (r0, c0) = ((i & 1) * 8, (i >> 1) * 8);
            // Without .trans: row lane/4, columns 2·(lane%4) + {0,1} of matrix i.
            let (r, c) = (r0 + lane / 4, c0 + 2 * (lane % 4));
            want[lane * 8 + i] = at(r, c) | (at(r, c + 1) << 16);
            // .trans: rows 2·(lane%4) + {0,1}, column lane/4 of the stored matrix i.
            let (r, c) = (r0 + 2 * (lane % 4), c0 + lane / 4);
            want[lane * 8 + 4 + i] = at(r, c) | (at(r + 1, c) << 16);
        }
    }
    dev.same_bits("ldmatrix_selftest (PTX ISA layout)", &got, &want);
}

fn matmul_bf16<R: Runtime>(dev: &Dev<R>) {
    for c in bf16_cases(dev) {
        let x = Inputs::new(dev, &c);
        let outputs = run_bf16(dev, &c, &x, DType::F32);
        check_f32_outputs(dev, &c, &x, outputs, "matmul_bf16");
    }
}

/// A bf16 tensor-core matmul's f32 outputs for a case: `out` against f64 on the same bf16
/// inputs (1e-4) and on the unrounded ones (1e-2); `gelu_out` against the CPU's GELU of the
/// kernel's own `out` (1e-6) and the f64 GELU (1e-4).
pub fn check_f32_outputs<R: Runtime>(
    dev: &Dev<R>,
    c: &Case,
    x: &Inputs,
    (out, gelu): Outputs,
    kernel: &str,
) {
    let s = c.s;
    let rows = rows_to_check(dev, s.m);
    let got = rows_of(&out, &rows, s.n);
    let what = c.what(kernel);
    let at = |part: &str| format!("{what} {part}");
    let r = x.rounded().product(&s, &rows);
    r.check(dev, &at("vs f64 on bf16 inputs"), &got, TOL_SAME_INPUTS);
    let r_unrounded = Reference {
        want: x.product(&s, &rows).want,
        ..r.clone()
    };
    r_unrounded.check(dev, &at("vs f64"), &got, TOL_BF16);
    let Some(gelu) = gelu else { return };
    let gelu = rows_of(&gelu, &rows, s.n);
    // The CPU's f32 GELU of the kernel's own pre-activation: only libm's rounding differs.
    let mut same = vec![0.0f32; got.len()];
    cpu::gelu_forward(&mut same, &got);
    let same = Reference {
        want: same.iter().map(|&g| g as f64).collect(),
        scale: got.iter().map(|&o| (o as f64).abs()).collect(),
    };
    same.check(dev, &at("gelu_out vs gelu(out)"), &gelu, TOL_GELU_SAME);
    r.gelu()
        .check(dev, &at("gelu_out vs f64"), &gelu, TOL_SAME_INPUTS);
}

fn matmul_bf16_to_bf16<R: Runtime>(dev: &Dev<R>) {
    for c in bf16_cases(dev) {
        let (x, s) = (Inputs::new(dev, &c), c.s);
        let (out, gelu) = run_bf16(dev, &c, &x, DType::Bf16);
        let what = c.what("matmul_bf16_to_bf16");
        let at = |part: &str| format!("{what} {part}");
        // The same body with f32 stores: every output is its value rounded to bf16.
        let aligned = Case {
            inputs_aligned: true,
            out_aligned: true,
            ..c
        };
        let (out32, gelu32) = run_bf16(dev, &aligned, &x, DType::F32);
        let same = |what: &str, got: &[f32], f32s: &[f32]| {
            dev.same_bits(what, &bits(got), &bits(&rounded(f32s)))
        };
        same(&at("vs matmul_bf16 rounded"), &out, &out32);
        let rows = rows_to_check(dev, s.m);
        let r = x.rounded().product(&s, &rows);
        let got = rows_of(&out, &rows, s.n);
        r.rounded()
            .check(dev, &at("vs f64 rounded"), &got, TOL_BF16);
        r.check(dev, &at("vs f64"), &got, TOL_BF16);
        if let (Some(g), Some(g32)) = (gelu, gelu32) {
            same(&at("gelu_out vs matmul_bf16's rounded"), &g, &g32);
            let g = rows_of(&g, &rows, s.n);
            r.gelu()
                .rounded()
                .check(dev, &at("gelu_out vs f64 rounded"), &g, TOL_BF16);
        }
    }
}

/// [`k::matmul`], the backend's sequence: for each storage type of `a`, `b` and the outputs,
/// bit for bit the kernel of the output's type on the operands rounded to bf16 on the host
/// (the cast rounds to nearest even, as `to_bf16`), with its scratch from
/// `matmul_scratch_bytes` (bf16 operands: the same launch twice, so also determinism).
fn matmul_sequence<R: Runtime>(dev: &Dev<R>) {
    let f32_and_bf16 = [DType::F32, DType::Bf16];
    for (m, kk, n) in [(37, 45, 29), (130, 70, 90)] {
        for (ta, tb) in [(false, false), (true, true), (false, true)] {
            let c = Case {
                bias: true,
                gelu: Some(true),
                ..Case::new(m, kk, n, ta, tb)
            };
            let x = Inputs::new(dev, &c);
            for out_type in f32_and_bf16 {
                let direct = run_bf16(dev, &c, &x, out_type);
                for a_type in f32_and_bf16 {
                    for b_type in f32_and_bf16 {
                        let bytes = k::matmul_scratch_bytes(&dev.rt, &c.s, a_type, b_type);
                        let (_keep, scratch) = dev.scratch(bytes);
                        let a = input(dev, &c, &x.a, a_type);
                        let b = input(dev, &c, &x.b, b_type);
                        let sequence = |out, gelu, _, _, bias| unsafe {
                            let (a, b) = ((a.addr, a_type), (b.addr, b_type));
                            k::matmul(&dev.rt, out, out_type, gelu, a, b, bias, c.s, scratch)
                                .unwrap()
                        };
                        let got = run(dev, &c, &x, (DType::Bf16, out_type), sequence);
                        let what = format!("matmul {a_type:?} · {b_type:?} → {out_type:?} {c:?}");
                        dev.same_bits(&what, &bits(&got.0), &bits(&direct.0));
                        let (g, d) = (got.1.unwrap(), direct.1.as_ref().unwrap());
                        dev.same_bits(&format!("{what} gelu_out"), &bits(&g), &bits(d));
                    }
                }
            }
        }
    }
}

fn empty<R: Runtime>(dev: &Dev<R>) {
    check_empty(dev, "matmul_bf16", &|v| v.to_vec(), &|c, x| {
        run_bf16(dev, c, x, DType::F32)
    });
    let run = |c: &Case, x: &Inputs| run_bf16(dev, c, x, DType::Bf16);
    check_empty(dev, "matmul_bf16_to_bf16", &rounded, &run);
}

/// k = 0: `out` is the bias (`round`ed to the output type), or 0 and gelu(0) = 0 without one;
/// an empty output (m or n = 0) writes nothing (the buffers' guard zones).
pub fn check_empty<R: Runtime>(
    dev: &Dev<R>,
    kernel: &str,
    round: &dyn Fn(&[f32]) -> Vec<f32>,
    run: &dyn Fn(&Case, &Inputs) -> Outputs,
) {
    let bias = vec![1.5f32, -2.0, 0.1];
    let x = Inputs {
        a: vec![],
        b: vec![],
        bias: Some(bias.clone()),
    };
    let (out, _) = run(
        &Case {
            bias: true,
            ..Case::new(2, 0, 3, false, false)
        },
        &x,
    );
    let what = format!("{kernel} k=0");
    dev.same_bits(
        &what,
        &bits(&out),
        &bits(&round(&[&bias[..], &bias[..]].concat())),
    );
    let x = Inputs { bias: None, ..x };
    let (out, gelu) = run(
        &Case {
            gelu: Some(true),
            ..Case::new(2, 0, 3, true, true)
        },
        &x,
    );
    dev.same_bits(&format!("{what} no bias"), &bits(&out), &bits(&[0.0; 6]));
    dev.same_bits(
        &format!("{what} gelu_out"),
        &bits(&gelu.unwrap()),
        &bits(&[0.0; 6]),
    );
    for (m, n) in [(0, 3), (4, 0)] {
        let x = Inputs {
            a: vec![0.5; m * 5],
            b: vec![0.5; 5 * n],
            bias: None,
        };
        let (out, gelu) = run(
            &Case {
                gelu: Some(true),
                ..Case::new(m, 5, n, false, false)
            },
            &x,
        );
        assert!(out.is_empty() && gelu.unwrap().is_empty());
    }
}

pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
