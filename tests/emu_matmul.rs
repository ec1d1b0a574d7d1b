//! `kernels/matmul.cu` (tensor-core matmul, bf16 inputs, f32 accumulation) and the tensor-core
//! wrappers of `kernels/tensor_core.cuh`, run on the CPU through the emulation, against the
//! CPU `matmul` (`smelt::backend::cpu::kernels`).
//!
//! * The fragment layouts alone: one `mma.sync.m16n8k16` against a naive 16×8×16 product, and
//!   `ldmatrix.x4` (+ `.trans`) against the PTX ISA's element assignment.
//! * The matmul, on odd and tile-unaligned sizes, all four transpose combinations, with and
//!   without bias, outputs poisoned with NaN and canaries around them: against the CPU matmul in
//!   f64 on the same bf16-rounded inputs (‖emu − cpu‖ / ‖cpu‖ < 1e-4: only f32 accumulation
//!   differs), and against the f32 CPU matmul on the unrounded inputs (< 1e-2, bf16 rounding).
//! * The GELU epilogue (`gelu_out`): `out` unchanged, `gelu_out` against the CPU `gelu_forward`
//!   of the emulated `out` (same f32 formula, < 1e-6) and against the f64 GELU of the f64 matmul
//!   (< 1e-4), with `out` and `gelu_out` each aligned (float2 stores) or not.
//! * `matmul_bf16_to_bf16` (bf16 outputs), on the same cases: bit for bit `matmul_bf16`'s f32
//!   outputs rounded to bf16 (one body, only the stores differ), and against the f64 matmul
//!   (and its f64 GELU) rounded to bf16 (< 1e-2), with `out` and `gelu_out` each 4-byte aligned
//!   (`__nv_bfloat162` stores) or not, NaN-poisoned with canaries around them.
//!
//! Inputs are fresh random numbers seeded from the clock; failures print the seed and
//! `SMELT_SEED=<seed> cargo test --release --test emu_matmul` replays it.
#![cfg(smelt_emulation)]

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::matmul as emu;
use smelt::rng::Rng;

/// Against f64 on the same bf16 inputs: only the f32 accumulation differs.
const TOL_SAME_INPUTS: f64 = 1e-4;
/// Against f32 on the unrounded inputs: bf16 has 8 significant bits.
const TOL_BF16: f64 = 1e-2;
/// `gelu_out` against the CPU's f32 `gelu_forward` of the kernel's own `out`.
const TOL_GELU_SAME: f64 = 1e-6;
const CANARY: f32 = 1234.5;
/// bf16 outputs against the f64 matmul (or its GELU) rounded to bf16: bf16 has 8 significant
/// bits.
const TOL_BF16_OUT: f64 = 1e-2;
/// bf16 NaN poison for bf16 outputs (`__float2bfloat16` never produces this pattern).
const NAN16: u16 = 0x7fc1;

fn seed() -> u64 {
    match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    }
}

fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// ‖got − want‖ / ‖scale‖, where `scale` is |op(A)|·|op(B)| + |bias|: the magnitude of the
/// terms each output sums. Rounding errors of a dot product are bounded relative to that, not
/// to the result, which cancellation can make arbitrarily small (e.g. a 1×1×1 product plus
/// a bias of opposite sign), so this measure does not flake on such draws.
fn rel_err(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), scale.len());
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let norm: f64 = scale.iter().map(|w| w * w).sum();
    if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    }
}

/// A bf16 buffer whose `n`-element view starts on a 16-byte boundary (`aligned`) or 2 bytes
/// past one (so the kernel must take its element-wise load path).
struct Bf16Buf {
    data: Vec<u16>,
    off: usize,
    n: usize,
}

impl Bf16Buf {
    fn new(values: &[u16], aligned: bool) -> Bf16Buf {
        let n = values.len();
        let mut data = vec![0u16; n + 16];
        let addr = data.as_ptr() as usize;
        assert_eq!(addr % 2, 0);
        let first = (16 - addr % 16) % 16 / 2;
        let off = if aligned { first } else { first + 1 };
        data[off..off + n].copy_from_slice(values);
        Bf16Buf { data, off, n }
    }
    fn view(&self) -> &[u16] {
        &self.data[self.off..self.off + self.n]
    }
}

#[test]
fn mma_fragment_layout_matches_naive_product() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for _ in 0..4 {
        let a: [u16; 256] = std::array::from_fn(|_| emu::f32_to_bf16(rng.normal() as f32));
        let b: [u16; 128] = std::array::from_fn(|_| emu::f32_to_bf16(rng.normal() as f32));
        let c: [f32; 128] = std::array::from_fn(|_| rng.normal() as f32);
        let mut d = [f32::NAN; 128];
        emu::mma_bf16_selftest(&mut d, &a, &b, &c);
        for i in 0..16 {
            for j in 0..8 {
                let mut want = c[i * 8 + j] as f64;
                let mut mag = want.abs();
                for k in 0..16 {
                    let p = emu::bf16_to_f32(a[i * 16 + k]) as f64
                        * emu::bf16_to_f32(b[k * 8 + j]) as f64;
                    want += p;
                    mag += p.abs();
                }
                let got = d[i * 8 + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * mag,
                    "mma d[{i}][{j}] = {got}, want {want} (seed {seed})"
                );
            }
        }
    }
}

#[test]
fn ldmatrix_layout_matches_ptx() {
    let src: [u16; 256] = std::array::from_fn(|e| e as u16);
    let mut out = [0u32; 256];
    emu::ldmatrix_selftest(&mut out, &src);
    let at = |row: usize, col: usize| u32::from(src[row * 16 + col]);
    for lane in 0..32 {
        for i in 0..4 {
            let (r0, c0) = ((i & 1) * 8, (i >> 1) * 8);
            // Non-transposed: (row lane/4, cols 2*(lane%4) + {0,1}) of matrix i.
            let (r, c) = (r0 + lane / 4, c0 + 2 * (lane % 4));
            let want = at(r, c) | (at(r, c + 1) << 16);
            assert_eq!(out[lane * 8 + i], want, "ldmatrix lane {lane} reg {i}");
            // .trans: (rows 2*(lane%4) + {0,1}, col lane/4) of the stored matrix i.
            let (r, c) = (r0 + 2 * (lane % 4), c0 + lane / 4);
            let want = at(r, c) | (at(r + 1, c) << 16);
            assert_eq!(
                out[lane * 8 + 4 + i],
                want,
                "ldmatrix.trans lane {lane} reg {i}"
            );
        }
    }
}

/// `len` canaries around a NaN-poisoned view of `len` floats that starts on an 8-byte boundary
/// (`aligned`) or 4 bytes past one; returns the buffer and the view's offset.
fn poisoned(len: usize, aligned: bool) -> (Vec<f32>, usize) {
    let mut buf = vec![CANARY; len + 12];
    let first = (8 - buf.as_ptr() as usize % 8) % 8 / 4;
    let o = 4 + first + usize::from(!aligned);
    buf[o..o + len].fill(f32::NAN);
    (buf, o)
}

/// Asserts that nothing outside `buf[o..o + len]` changed.
fn assert_canaries(buf: &[f32], o: usize, len: usize, tag: &str) {
    assert!(
        buf[..o].iter().chain(&buf[o + len..]).all(|&v| v == CANARY),
        "{tag}: wrote outside the output"
    );
}

/// One matmul through the emulation, checked both ways; returns the two errors. With
/// `gelu: Some(gelu_aligned)` it also asks for the GELU epilogue and checks `gelu_out`.
#[allow(clippy::too_many_arguments)]
fn check_matmul(
    rng: &mut Rng,
    seed: u64,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    with_bias: bool,
    aligned: bool,
    gelu: Option<bool>,
) -> (f64, f64) {
    let tag = format!(
        "matmul_bf16 m={m} k={k} n={n} trans_a={trans_a} trans_b={trans_b} bias={with_bias} \
         aligned={aligned} gelu_aligned={gelu:?} (seed {seed})"
    );
    let a = normals(rng, m * k, 1.0);
    let b = normals(rng, k * n, 0.5);
    let bias = with_bias.then(|| normals(rng, n, 1.0));
    let (a16, b16) = (emu::to_bf16(&a), emu::to_bf16(&b));
    let (abuf, bbuf) = (Bf16Buf::new(&a16, aligned), Bf16Buf::new(&b16, aligned));

    // Output views with canaries around them, poisoned with NaN; misaligned: 4 bytes past an
    // 8-byte boundary (no float2 stores).
    let (mut out, o) = poisoned(m * n, aligned);
    let (mut gbuf, go) = poisoned(m * n, gelu.unwrap_or(true));
    emu::matmul_bf16(
        &mut out[o..o + m * n],
        gelu.map(|_| &mut gbuf[go..go + m * n]),
        abuf.view(),
        bbuf.view(),
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    assert_canaries(&out, o, m * n, &tag);
    assert_canaries(&gbuf, go, m * n, &format!("{tag} gelu_out"));
    let got = &out[o..o + m * n];
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{tag}: non-finite output"
    );

    // f64 on the same bf16-rounded inputs.
    let a64: Vec<f64> = a16.iter().map(|&v| emu::bf16_to_f32(v) as f64).collect();
    let b64: Vec<f64> = b16.iter().map(|&v| emu::bf16_to_f32(v) as f64).collect();
    let bias64: Option<Vec<f64>> = bias.as_ref().map(|v| v.iter().map(|&x| x as f64).collect());
    let mut want64 = vec![f64::NAN; m * n];
    cpu::matmul(
        &mut want64,
        &a64,
        &b64,
        bias64.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    // The magnitude of the summed terms: |A|·|B| + |bias|, in f64.
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let mut scale = vec![f64::NAN; m * n];
    cpu::matmul(
        &mut scale,
        &abs(&a64),
        &abs(&b64),
        bias64.as_deref().map(abs).as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    let err64 = rel_err(got, &want64, &scale);
    assert!(
        err64 < TOL_SAME_INPUTS,
        "{tag}: vs f64 on bf16 inputs, relative error {err64:e}"
    );

    // f32 on the unrounded inputs.
    let mut want32 = vec![f32::NAN; m * n];
    cpu::matmul(
        &mut want32,
        &a,
        &b,
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    let want32: Vec<f64> = want32.iter().map(|&v| v as f64).collect();
    let err32 = rel_err(got, &want32, &scale);
    assert!(
        err32 < TOL_BF16,
        "{tag}: vs f32 on unrounded inputs, relative error {err32:e}"
    );

    let gelu_got = &gbuf[go..go + m * n];
    if gelu.is_none() {
        assert!(
            gelu_got.iter().all(|v| v.is_nan()),
            "{tag}: gelu_out written without being asked"
        );
        return (err64, err32);
    }
    assert!(
        gelu_got.iter().all(|v| v.is_finite()),
        "{tag}: non-finite gelu_out"
    );
    // The same f32 formula on the emulated pre-activation: only libm's rounding can differ.
    let mut want_gelu = vec![f32::NAN; m * n];
    cpu::gelu_forward(&mut want_gelu, got);
    let got64: Vec<f64> = got.iter().map(|&v| v as f64).collect();
    let want_gelu: Vec<f64> = want_gelu.iter().map(|&v| v as f64).collect();
    let err_same = rel_err(gelu_got, &want_gelu, &got64);
    assert!(
        err_same < TOL_GELU_SAME,
        "{tag}: gelu_out vs cpu gelu_forward(out), relative error {err_same:e}"
    );
    // The f64 GELU of the f64 matmul (|gelu'| < 1.13: the matmul error carries over).
    let mut want_gelu64 = vec![f64::NAN; m * n];
    cpu::gelu_forward(&mut want_gelu64, &want64);
    let err_gelu = rel_err(gelu_got, &want_gelu64, &scale);
    assert!(
        err_gelu < TOL_SAME_INPUTS,
        "{tag}: gelu_out vs f64 gelu of the f64 matmul, relative error {err_gelu:e}"
    );
    (err64.max(err_gelu), err32)
}

/// (m, k, n): odd, tile-unaligned, one exact tile, k long enough to cycle the 3-stage pipeline
/// several times, and multiples of 8 (16-byte cp.async path) with partial edge tiles.
const SIZES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (5, 7, 3),
    (17, 33, 65),
    (130, 70, 90),
    (128, 128, 64),
    (257, 129, 33),
    (72, 200, 80),
    (64, 264, 64),
    (136, 96, 200),
];

#[test]
fn matmul_bf16_matches_cpu_all_transposes() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (mut max64, mut max32) = (0.0f64, 0.0f64);
    for (m, k, n) in SIZES {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for with_bias in [false, true] {
                    let (e64, e32) = check_matmul(
                        &mut rng, seed, m, k, n, trans_a, trans_b, with_bias, true, None,
                    );
                    max64 = max64.max(e64);
                    max32 = max32.max(e32);
                }
            }
        }
    }
    eprintln!(
        "matmul_bf16: max relative error {max64:.3e} vs f64 (bf16 inputs), {max32:.3e} vs f32"
    );
}

#[test]
fn matmul_bf16_misaligned_inputs_take_the_element_path() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (m, k, n) in [(72, 200, 80), (128, 128, 64)] {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                check_matmul(&mut rng, seed, m, k, n, trans_a, trans_b, true, false, None);
            }
        }
    }
}

/// The GELU epilogue on odd and tile-unaligned sizes, all four transposes, with and without
/// bias; `out` and `gelu_out` both aligned (float2 stores), `out` misaligned (with the inputs:
/// element loads), and `out` aligned but `gelu_out` not (no float2 stores for either).
#[test]
fn matmul_bf16_gelu_epilogue_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut max64 = 0.0f64;
    for (m, k, n) in [
        (1, 1, 1),
        (5, 7, 3),
        (17, 33, 65),
        (130, 70, 90),
        (72, 200, 80),
    ] {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for (with_bias, aligned, gelu_aligned) in [
                    (true, true, true),
                    (false, true, true),
                    (true, false, true),
                    (true, true, false),
                ] {
                    let (e64, _) = check_matmul(
                        &mut rng,
                        seed,
                        m,
                        k,
                        n,
                        trans_a,
                        trans_b,
                        with_bias,
                        aligned,
                        Some(gelu_aligned),
                    );
                    max64 = max64.max(e64);
                }
            }
        }
    }
    eprintln!("matmul_bf16 + gelu: max relative error {max64:.3e} vs f64 (bf16 inputs)");
}

#[test]
fn matmul_bf16_empty_k_gives_bias() {
    let bias = [1.5f32, -2.0, 0.25];
    let mut out = [f32::NAN; 6];
    emu::matmul_bf16(&mut out, None, &[], &[], Some(&bias), 2, 0, 3, false, false);
    assert_eq!(out, [1.5, -2.0, 0.25, 1.5, -2.0, 0.25]);
    let mut gelu = [f32::NAN; 6];
    emu::matmul_bf16(
        &mut out,
        Some(&mut gelu),
        &[],
        &[],
        None,
        2,
        0,
        3,
        true,
        true,
    );
    assert_eq!(out, [0.0; 6]);
    assert_eq!(gelu, [0.0; 6]);
}

/// `len` canaries around a NaN-poisoned view of `len` bf16 values that starts on a 4-byte
/// boundary (`aligned`) or 2 bytes past one; returns the buffer and the view's offset.
fn poisoned_bf16(len: usize, aligned: bool) -> (Vec<u16>, usize) {
    let canary = emu::f32_to_bf16(CANARY);
    let mut buf = vec![canary; len + 12];
    let first = (4 - buf.as_ptr() as usize % 4) % 4 / 2;
    let o = 4 + first + usize::from(!aligned);
    buf[o..o + len].fill(NAN16);
    (buf, o)
}

fn assert_canaries_bf16(buf: &[u16], o: usize, len: usize, tag: &str) {
    let canary = emu::f32_to_bf16(CANARY);
    assert!(
        buf[..o].iter().chain(&buf[o + len..]).all(|&v| v == canary),
        "{tag}: wrote outside the output"
    );
}

/// Errors of one `matmul_bf16_to_bf16` check (all relative to |op(A)|·|op(B)| + |bias|).
#[derive(Default, Clone, Copy)]
struct Bf16OutErr {
    /// `out` vs the f64 matmul rounded to bf16.
    out_rounded: f64,
    /// `out` vs the unrounded f64 matmul (the bf16 rounding of the output itself).
    out_exact: f64,
    /// `gelu_out` vs the f64 GELU of the f64 matmul, rounded to bf16.
    gelu_rounded: f64,
}

impl Bf16OutErr {
    fn max(self, o: Bf16OutErr) -> Bf16OutErr {
        Bf16OutErr {
            out_rounded: self.out_rounded.max(o.out_rounded),
            out_exact: self.out_exact.max(o.out_exact),
            gelu_rounded: self.gelu_rounded.max(o.gelu_rounded),
        }
    }
}

/// One `matmul_bf16_to_bf16` through the emulation: outputs NaN-poisoned with canaries
/// around them (`out_aligned`, and `gelu: Some(gelu_aligned)` for the GELU epilogue: 4-byte
/// aligned views take the `__nv_bfloat162` stores), inputs 16-byte aligned or not (`aligned`).
/// Checked bit for bit against `matmul_bf16`'s f32 outputs rounded to bf16, and against the
/// f64 matmul (and GELU) of the same bf16 inputs rounded to bf16.
#[allow(clippy::too_many_arguments)]
fn check_matmul_bf16_out(
    rng: &mut Rng,
    seed: u64,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    with_bias: bool,
    aligned: bool,
    out_aligned: bool,
    gelu: Option<bool>,
) -> Bf16OutErr {
    let tag = format!(
        "matmul_bf16_to_bf16 m={m} k={k} n={n} trans_a={trans_a} trans_b={trans_b} \
         bias={with_bias} aligned={aligned} out_aligned={out_aligned} gelu_aligned={gelu:?} \
         (seed {seed})"
    );
    let a16 = emu::to_bf16(&normals(rng, m * k, 1.0));
    let b16 = emu::to_bf16(&normals(rng, k * n, 0.5));
    let bias = with_bias.then(|| normals(rng, n, 1.0));
    let (abuf, bbuf) = (Bf16Buf::new(&a16, aligned), Bf16Buf::new(&b16, aligned));

    let (mut out, o) = poisoned_bf16(m * n, out_aligned);
    let (mut gbuf, go) = poisoned_bf16(m * n, gelu.unwrap_or(true));
    emu::matmul_bf16_to_bf16(
        &mut out[o..o + m * n],
        gelu.map(|_| &mut gbuf[go..go + m * n]),
        abuf.view(),
        bbuf.view(),
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    assert_canaries_bf16(&out, o, m * n, &tag);
    assert_canaries_bf16(&gbuf, go, m * n, &format!("{tag} gelu_out"));
    let got = &out[o..o + m * n];
    let gelu_got = &gbuf[go..go + m * n];
    let finite = |v: &[u16]| v.iter().all(|&x| emu::bf16_to_f32(x).is_finite());
    assert!(finite(got), "{tag}: non-finite output");
    if gelu.is_some() {
        assert!(finite(gelu_got), "{tag}: non-finite gelu_out");
    } else {
        assert!(
            gelu_got.iter().all(|&v| v == NAN16),
            "{tag}: gelu_out written without being asked"
        );
    }

    // The same body with f32 stores: out and gelu_out must be its outputs, rounded.
    let mut out32 = vec![f32::NAN; m * n];
    let mut gelu32 = vec![f32::NAN; m * n];
    emu::matmul_bf16(
        &mut out32,
        gelu.map(|_| &mut gelu32[..]),
        abuf.view(),
        bbuf.view(),
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    for (i, (&g, &w)) in got.iter().zip(&out32).enumerate() {
        assert_eq!(
            g,
            emu::f32_to_bf16(w),
            "{tag}: out[{i}] is not matmul_bf16's {w} rounded"
        );
    }
    if gelu.is_some() {
        for (i, (&g, &w)) in gelu_got.iter().zip(&gelu32).enumerate() {
            assert_eq!(
                g,
                emu::f32_to_bf16(w),
                "{tag}: gelu_out[{i}] is not matmul_bf16's {w} rounded"
            );
        }
    }

    // f64 on the same bf16 inputs, rounded to bf16.
    let a64: Vec<f64> = a16.iter().map(|&v| emu::bf16_to_f32(v) as f64).collect();
    let b64: Vec<f64> = b16.iter().map(|&v| emu::bf16_to_f32(v) as f64).collect();
    let bias64: Option<Vec<f64>> = bias.as_ref().map(|v| v.iter().map(|&x| x as f64).collect());
    let mut want64 = vec![f64::NAN; m * n];
    cpu::matmul(
        &mut want64,
        &a64,
        &b64,
        bias64.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let mut scale = vec![f64::NAN; m * n];
    cpu::matmul(
        &mut scale,
        &abs(&a64),
        &abs(&b64),
        bias64.as_deref().map(abs).as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    let round = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|&x| emu::bf16_to_f32(emu::f32_to_bf16(x as f32)) as f64)
            .collect()
    };
    let got32: Vec<f32> = got.iter().map(|&v| emu::bf16_to_f32(v)).collect();
    let mut err = Bf16OutErr {
        out_rounded: rel_err(&got32, &round(&want64), &scale),
        out_exact: rel_err(&got32, &want64, &scale),
        gelu_rounded: 0.0,
    };
    assert!(
        err.out_rounded < TOL_BF16_OUT,
        "{tag}: vs f64 on bf16 inputs rounded to bf16, relative error {:e}",
        err.out_rounded
    );
    assert!(
        err.out_exact < TOL_BF16_OUT,
        "{tag}: vs f64 on bf16 inputs, relative error {:e}",
        err.out_exact
    );
    if gelu.is_some() {
        let mut want_gelu64 = vec![f64::NAN; m * n];
        cpu::gelu_forward(&mut want_gelu64, &want64);
        let gelu32: Vec<f32> = gelu_got.iter().map(|&v| emu::bf16_to_f32(v)).collect();
        err.gelu_rounded = rel_err(&gelu32, &round(&want_gelu64), &scale);
        assert!(
            err.gelu_rounded < TOL_BF16_OUT,
            "{tag}: gelu_out vs f64 gelu of the f64 matmul rounded to bf16, relative error {:e}",
            err.gelu_rounded
        );
    }
    err
}

#[test]
fn matmul_bf16_to_bf16_matches_cpu_all_transposes() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut max = Bf16OutErr::default();
    for (m, k, n) in SIZES {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for with_bias in [false, true] {
                    let e = check_matmul_bf16_out(
                        &mut rng, seed, m, k, n, trans_a, trans_b, with_bias, true, true, None,
                    );
                    max = max.max(e);
                }
            }
        }
    }
    eprintln!(
        "matmul_bf16_to_bf16: max relative error {:.3e} vs f64 rounded to bf16, {:.3e} vs f64",
        max.out_rounded, max.out_exact
    );
}

/// Misaligned inputs (element loads) and a misaligned `out` (no `__nv_bfloat162` stores).
#[test]
fn matmul_bf16_to_bf16_misaligned_inputs_and_output() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (m, k, n) in [(72, 200, 80), (128, 128, 64)] {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for (aligned, out_aligned) in [(false, false), (false, true), (true, false)] {
                    check_matmul_bf16_out(
                        &mut rng,
                        seed,
                        m,
                        k,
                        n,
                        trans_a,
                        trans_b,
                        true,
                        aligned,
                        out_aligned,
                        None,
                    );
                }
            }
        }
    }
}

/// The GELU epilogue with bf16 outputs, on the cases of `matmul_bf16_gelu_epilogue_matches_cpu`:
/// `out` and `gelu_out` both aligned (paired stores), `out` misaligned (with the inputs), and
/// `out` aligned but `gelu_out` not (no paired stores for either).
#[test]
fn matmul_bf16_to_bf16_gelu_epilogue_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut max = Bf16OutErr::default();
    for (m, k, n) in [
        (1, 1, 1),
        (5, 7, 3),
        (17, 33, 65),
        (130, 70, 90),
        (72, 200, 80),
    ] {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for (with_bias, aligned, gelu_aligned) in [
                    (true, true, true),
                    (false, true, true),
                    (true, false, true),
                    (true, true, false),
                ] {
                    let e = check_matmul_bf16_out(
                        &mut rng,
                        seed,
                        m,
                        k,
                        n,
                        trans_a,
                        trans_b,
                        with_bias,
                        aligned,
                        aligned,
                        Some(gelu_aligned),
                    );
                    max = max.max(e);
                }
            }
        }
    }
    eprintln!(
        "matmul_bf16_to_bf16 + gelu: max relative error {:.3e} (out), {:.3e} (gelu_out) vs f64 \
         rounded to bf16",
        max.out_rounded, max.gelu_rounded
    );
}

#[test]
fn matmul_bf16_to_bf16_empty_k_gives_rounded_bias() {
    let bias = [1.5f32, -2.0, 0.1];
    let mut out = [NAN16; 6];
    emu::matmul_bf16_to_bf16(&mut out, None, &[], &[], Some(&bias), 2, 0, 3, false, false);
    let b16 = emu::to_bf16(&bias);
    assert_eq!(out, [b16[0], b16[1], b16[2], b16[0], b16[1], b16[2]]);
    let mut gelu = [NAN16; 6];
    emu::matmul_bf16_to_bf16(
        &mut out,
        Some(&mut gelu),
        &[],
        &[],
        None,
        2,
        0,
        3,
        true,
        true,
    );
    assert_eq!(out, [0; 6]);
    assert_eq!(gelu, [0; 6]);
}
