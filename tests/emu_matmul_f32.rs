//! `kernels/matmul_f32.cu` (f32 SIMT matmul, optional bias and GELU epilogue) run on the CPU
//! through the emulation, against the f32 CPU `matmul` and `gelu_forward`
//! (`smelt::backend::cpu::kernels`).
//!
//! Odd, tile-unaligned and exact-tile sizes, all four transpose combinations, with and without
//! bias, with and without `gelu_out`, outputs poisoned with NaN and canaries around them, output
//! views 16-byte aligned (float4 stores when n % 4 == 0) or not. Error: ‖emu − cpu‖ / ‖scale‖ <
//! 1e-5, where `scale` is |op(A)|·|op(B)| + |bias|, the magnitude of the terms each output sums
//! (as in tests/emu_matmul.rs: rounding errors are bounded relative to that, and cancellation
//! cannot make the measure flake).
//!
//! Inputs are fresh random numbers seeded from the clock; the seed is printed and in every
//! failure message, and `SMELT_SEED=<seed> cargo test --release --test emu_matmul_f32`
//! replays it.
#![cfg(smelt_emulation)]

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::matmul_f32 as emu;
use smelt::rng::Rng;

/// f32 against f32: the summation order differs.
const TOL: f64 = 1e-5;
const CANARY: f32 = 1234.5;

fn seed() -> u64 {
    let seed = match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    };
    eprintln!("seed {seed} (replay: SMELT_SEED={seed})");
    seed
}

fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// ‖got − want‖ / ‖scale‖ (‖got − want‖ when scale is zero).
fn rel_err(got: &[f32], want: &[f32], scale: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), scale.len());
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
        .sum();
    let norm: f64 = scale.iter().map(|w| w * w).sum();
    if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    }
}

/// A NaN-poisoned view of `len` floats with 4 canaries or more on each side, starting on a
/// 16-byte boundary (`aligned`) or 4 bytes past one; returns the buffer and the view's offset.
fn poisoned(len: usize, aligned: bool) -> (Vec<f32>, usize) {
    let mut buf = vec![CANARY; len + 12];
    let first = (16 - buf.as_ptr() as usize % 16) % 16 / 4;
    let o = 4 + first + usize::from(!aligned);
    buf[o..o + len].fill(f32::NAN);
    (buf, o)
}

fn assert_canaries(buf: &[f32], o: usize, len: usize, tag: &str) {
    assert!(
        buf[..o].iter().chain(&buf[o + len..]).all(|&v| v == CANARY),
        "{tag}: wrote outside the output"
    );
}

/// How one call asks for the GELU epilogue.
#[derive(Clone, Copy, Debug)]
enum Gelu {
    Off,
    Aligned,
    Misaligned,
}

/// One matmul through the emulation against the CPU; returns the largest relative error.
#[allow(clippy::too_many_arguments)]
fn check(
    rng: &mut Rng,
    seed: u64,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    with_bias: bool,
    out_aligned: bool,
    gelu: Gelu,
) -> f64 {
    let tag = format!(
        "matmul_f32 m={m} k={k} n={n} trans_a={trans_a} trans_b={trans_b} bias={with_bias} \
         out_aligned={out_aligned} gelu={gelu:?} (seed {seed})"
    );
    let a = normals(rng, m * k, 1.0);
    let b = normals(rng, k * n, 0.5);
    let bias = with_bias.then(|| normals(rng, n, 1.0));

    let (mut out, o) = poisoned(m * n, out_aligned);
    let (mut gbuf, go) = poisoned(m * n, !matches!(gelu, Gelu::Misaligned));
    let gelu_view = match gelu {
        Gelu::Off => None,
        Gelu::Aligned | Gelu::Misaligned => Some(&mut gbuf[go..go + m * n]),
    };
    emu::matmul_f32(
        &mut out[o..o + m * n],
        gelu_view,
        &a,
        &b,
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

    let mut want = vec![f32::NAN; m * n];
    cpu::matmul(
        &mut want,
        &a,
        &b,
        bias.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    // The magnitude of the summed terms: |A|·|B| + |bias|, in f64.
    let abs = |v: &[f32]| v.iter().map(|&x| (x as f64).abs()).collect::<Vec<f64>>();
    let bias_abs = bias.as_deref().map(abs);
    let mut scale = vec![f64::NAN; m * n];
    cpu::matmul(
        &mut scale,
        &abs(&a),
        &abs(&b),
        bias_abs.as_deref(),
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
    let err = rel_err(got, &want, &scale);
    assert!(
        err < TOL,
        "{tag}: out vs cpu matmul, relative error {err:e}"
    );

    let gelu_got = &gbuf[go..go + m * n];
    if matches!(gelu, Gelu::Off) {
        assert!(
            gelu_got.iter().all(|v| v.is_nan()),
            "{tag}: gelu_out written without being asked"
        );
        return err;
    }
    assert!(
        gelu_got.iter().all(|v| v.is_finite()),
        "{tag}: non-finite gelu_out"
    );
    // CPU gelu of the CPU matmul (|gelu'| < 1.13: the matmul's error carries over).
    let mut want_gelu = vec![f32::NAN; m * n];
    cpu::gelu_forward(&mut want_gelu, &want);
    let err_gelu = rel_err(gelu_got, &want_gelu, &scale);
    assert!(
        err_gelu < TOL,
        "{tag}: gelu_out vs cpu gelu_forward(matmul), relative error {err_gelu:e}"
    );
    err.max(err_gelu)
}

/// (m, k, n): single elements, partial tiles everywhere, k not a multiple of 16, one exact
/// tile, several k tiles, and n % 4 == 0 (float4 stores) with partial edge tiles.
const SIZES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (2, 3, 1),
    (1, 257, 3),
    (37, 19, 53),
    (64, 16, 64),
    (65, 130, 67),
    (128, 64, 96),
    (3, 40, 130),
    (100, 33, 68),
];

#[test]
fn matmul_f32_matches_cpu_all_transposes() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut max = 0.0f64;
    for size in SIZES {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for with_bias in [false, true] {
                    for gelu in [Gelu::Off, Gelu::Aligned] {
                        let e = check(
                            &mut rng, seed, size, trans_a, trans_b, with_bias, true, gelu,
                        );
                        max = max.max(e);
                    }
                }
            }
        }
    }
    eprintln!("matmul_f32: max relative error {max:.3e} vs the f32 CPU matmul (+ gelu)");
}

/// Output views off a 16-byte boundary: no float4 stores (for `out`, `gelu_out`, or both).
#[test]
fn matmul_f32_misaligned_outputs() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for size in [(37, 19, 53), (128, 64, 96), (100, 33, 68)] {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for (out_aligned, gelu) in [
                    (false, Gelu::Off),
                    (false, Gelu::Aligned),
                    (true, Gelu::Misaligned),
                    (false, Gelu::Misaligned),
                ] {
                    check(
                        &mut rng,
                        seed,
                        size,
                        trans_a,
                        trans_b,
                        true,
                        out_aligned,
                        gelu,
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_f32_empty_k_gives_bias() {
    let bias = [1.5f32, -2.0, 0.25];
    let mut out = [f32::NAN; 6];
    emu::matmul_f32(&mut out, None, &[], &[], Some(&bias), 2, 0, 3, false, false);
    assert_eq!(out, [1.5, -2.0, 0.25, 1.5, -2.0, 0.25]);
    let mut gelu = [f32::NAN; 6];
    emu::matmul_f32(
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

#[test]
fn matmul_f32_launch_geometry() {
    let d = emu::matmul_f32_launch(130, 65);
    assert_eq!((d.grid.x, d.grid.y, d.grid.z), (2, 3, 1));
    assert_eq!((d.block.x, d.block.y, d.block.z), (256, 1, 1));
    assert_eq!(d.smem, 8704);
}
