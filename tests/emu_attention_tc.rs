//! The tensor-core attention backward of `kernels/attention_tc_backward.cu`, run on the CPU
//! through the emulation (`smelt::backend::emu::attention_tc`), against the CPU f32 reference
//! (`smelt::backend::cpu::kernels::attention_backward`) on the SAME bf16-rounded `qkv` and
//! `dout`, with the CPU forward's `out` and `lse`: fresh random inputs (the seed, from the
//! clock, is printed and in every failure message; `SMELT_SEED=<seed>` replays one), t not a
//! multiple of the 64-row tile, head sizes 16, 64, 112 and 128 (the three inner tile widths),
//! outputs poisoned with NaN first, relative error ‖emu − cpu‖ / ‖cpu‖ < 1e-2 for each of dQ,
//! dK and dV (P and dS are rounded to bf16 for the products). Run with `--nocapture` to see
//! each comparison's error.
#![cfg(smelt_emulation)]

mod common;
use common::{nan, Inputs};

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::{attention, attention_tc};
use smelt::backend::kernels::matmul::{bf16_to_f32, to_bf16};

/// bf16 tensor-core kernels against the f32 CPU kernels on the same rounded inputs.
const TOL: f64 = 1e-2;

/// Fresh inputs from the clock, or from `SMELT_SEED` when set; prints the seed.
fn inputs(test: &str) -> Inputs {
    let mut r = Inputs::new();
    if let Ok(s) = std::env::var("SMELT_SEED") {
        let seed: u64 = s.trim().parse().expect("SMELT_SEED must be a u64");
        r = Inputs {
            rng: smelt::rng::Rng::new(seed),
            seed,
            max_err: 0.0,
        };
    }
    eprintln!(
        "{test}: seed {} (replay with SMELT_SEED={})",
        r.seed, r.seed
    );
    r
}

/// One random problem: bf16 `qkv` and `dout` (bit patterns), their f32 values, and the CPU
/// forward's `out` and `lse` on them.
struct Problem {
    qkv: Vec<u16>,
    dout: Vec<u16>,
    qkv_f: Vec<f32>,
    dout_f: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
}

impl Problem {
    fn new(r: &mut Inputs, b: usize, t: usize, c: usize, nh: usize) -> Problem {
        // Scale 2 makes the softmax peaky, as in the forward's tests.
        let qkv = to_bf16(&r.normal(b * t * 3 * c, 2.0, 0.0));
        let dout = to_bf16(&r.normal(b * t * c, 1.0, 0.0));
        let widen = |x: &[u16]| x.iter().map(|&v| bf16_to_f32(v)).collect::<Vec<f32>>();
        let (qkv_f, dout_f) = (widen(&qkv), widen(&dout));
        let (mut out, mut lse) = (nan(b * t * c), nan(b * nh * t));
        cpu::attention_forward(&mut out, &mut lse, &qkv_f, b, t, c, nh);
        Problem {
            qkv,
            dout,
            qkv_f,
            dout_f,
            out,
            lse,
        }
    }
}

/// The emulated backward and the CPU one compared, whole and per part; returns the largest
/// error of the parts.
fn check(r: &mut Inputs, p: &Problem, b: usize, t: usize, c: usize, nh: usize, tag: &str) -> f64 {
    let mut dqkv = nan(b * t * 3 * c);
    attention_tc::attention_backward_bf16(&mut dqkv, &p.dout, &p.qkv, &p.out, &p.lse, b, t, c, nh);
    let mut want = nan(b * t * 3 * c);
    cpu::attention_backward(&mut want, &p.dout_f, &p.qkv_f, &p.out, &p.lse, b, t, c, nh);
    let tag = format!("{tag} b={b} t={t} c={c} nh={nh}");
    let mut worst = r.check(&format!("{tag} dqkv"), &dqkv, &want, TOL);
    // Each of dQ, dK, dV on its own, so a small part cannot hide behind a large one. At t = 1
    // dQ and dK are zero analytically (one key: P = 1, dP = D), so both sides return rounding
    // noise: only finiteness is checked there.
    for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let pick = |x: &[f32]| -> Vec<f32> {
            x.chunks_exact(3 * c)
                .flat_map(|row| row[part * c..][..c].to_vec())
                .collect()
        };
        let (got, exp) = (pick(&dqkv), pick(&want));
        if t == 1 && part < 2 {
            assert!(
                got.iter().all(|v| v.is_finite() && v.abs() < 1e-2),
                "{tag} {name}: not ~0 at t = 1 (seed {})",
                r.seed
            );
            continue;
        }
        worst = worst.max(r.check(&format!("{tag} {name}"), &got, &exp, TOL));
    }
    worst
}

#[test]
fn attention_backward_bf16_matches_cpu() {
    let mut r = inputs("attention_backward_bf16_matches_cpu");
    // (b, t, c, nh): head sizes 16, 32, 64 (GPT-2), 80, 112 and 128 (inner tiles 64, 64, 64,
    // 32, 32, 16); t = 1, 37, 70, 130, 200 (partial 64-row tiles, several key and query tiles,
    // tiles with and without the mask).
    let sizes = [
        (1, 1, 16, 1),
        (2, 37, 48, 3),
        (1, 1, 64, 1),
        (1, 130, 64, 1),
        (2, 37, 192, 3),
        (1, 200, 128, 2),
        (1, 45, 96, 3),
        (1, 70, 80, 1),
        (1, 70, 112, 1),
        (1, 1, 128, 1),
        (1, 130, 128, 1),
        (2, 37, 384, 3),
    ];
    let mut worst = 0.0f64;
    for (b, t, c, nh) in sizes {
        let p = Problem::new(&mut r, b, t, c, nh);
        worst = worst.max(check(&mut r, &p, b, t, c, nh, "attention_backward_bf16"));
    }
    eprintln!("attention_backward_bf16: max relative error {worst:.3e}");
}

#[test]
fn attention_backward_bf16_unaligned_and_deterministic() {
    let mut r = inputs("attention_backward_bf16_unaligned_and_deterministic");
    let (b, t, c, nh) = (2, 70, 128, 2);
    let p = Problem::new(&mut r, b, t, c, nh);
    // Two runs give the same bits.
    let run = |qkv: &[u16], dout: &[u16]| {
        let mut dqkv = nan(b * t * 3 * c);
        attention_tc::attention_backward_bf16(&mut dqkv, dout, qkv, &p.out, &p.lse, b, t, c, nh);
        dqkv
    };
    let first = run(&p.qkv, &p.dout);
    r.same_bits("attention_backward_bf16", &first, &run(&p.qkv, &p.dout));
    // qkv and dout not 16-byte aligned: the kernels load element by element instead of
    // cp.async, and must give the same bits.
    let shifted = |x: &[u16]| -> (Vec<u16>, usize) {
        let mut buf = vec![0u16; x.len() + 8];
        let off = (0..8)
            .find(|&o| !(buf[o..].as_ptr() as usize).is_multiple_of(16))
            .unwrap();
        buf[off..][..x.len()].copy_from_slice(x);
        (buf, off)
    };
    let (qbuf, qoff) = shifted(&p.qkv);
    let (dbuf, doff) = shifted(&p.dout);
    let (qkv_u, dout_u) = (&qbuf[qoff..][..p.qkv.len()], &dbuf[doff..][..p.dout.len()]);
    assert!(!(qkv_u.as_ptr() as usize).is_multiple_of(16));
    assert!(!(dout_u.as_ptr() as usize).is_multiple_of(16));
    r.same_bits(
        "attention_backward_bf16 unaligned",
        &first,
        &run(qkv_u, dout_u),
    );
    check(&mut r, &p, b, t, c, nh, "attention_backward_bf16");
}

#[test]
fn attention_backward_bf16_kernels_write_only_their_parts() {
    // The backend launches the two kernels separately on one dqkv: dK/dV must leave the Q
    // columns alone and dQ the K and V columns (NaN stays NaN), and each must write all of its
    // own (no NaN left).
    let mut r = inputs("attention_backward_bf16_kernels_write_only_their_parts");
    let (b, t, c, nh) = (2, 37, 128, 2);
    let p = Problem::new(&mut r, b, t, c, nh);
    let mut dsum = nan(b * nh * t);
    attention::attention_backward_preprocess(&mut dsum, &p.dout_f, &p.out, b, t, c, nh);
    assert!(dsum.iter().all(|v| v.is_finite()), "preprocess left NaN");
    let parts = |x: &[f32], part: usize| -> Vec<f32> {
        x.chunks_exact(3 * c)
            .flat_map(|row| row[part * c..][..c].to_vec())
            .collect()
    };
    let mut kv = nan(b * t * 3 * c);
    attention_tc::attention_backward_dkdv_bf16(
        &mut kv, &p.dout, &p.qkv, &p.lse, &dsum, b, t, c, nh,
    );
    let mut q = nan(b * t * 3 * c);
    attention_tc::attention_backward_dq_bf16(&mut q, &p.dout, &p.qkv, &p.lse, &dsum, b, t, c, nh);
    assert!(
        parts(&kv, 0).iter().all(|v| v.is_nan()),
        "dkdv wrote Q columns"
    );
    assert!(
        parts(&q, 1).iter().chain(&parts(&q, 2)).all(|v| v.is_nan()),
        "dq wrote K/V columns"
    );
    assert!(
        parts(&q, 0).iter().all(|v| v.is_finite()),
        "dq left Q columns unwritten"
    );
    assert!(
        parts(&kv, 1)
            .iter()
            .chain(&parts(&kv, 2))
            .all(|v| v.is_finite()),
        "dkdv left K/V columns unwritten"
    );
}

#[test]
fn attention_backward_bf16_launch_geometry() {
    // GPT-2 124M: hs = 64, t = 1024.
    for launch in [
        attention_tc::attention_backward_dkdv_bf16_launch,
        attention_tc::attention_backward_dq_bf16_launch,
    ] {
        let d = launch(8, 1024, 768, 12);
        assert_eq!((d.grid.x, d.grid.y, d.grid.z), (16, 96, 1));
        assert_eq!((d.block.x, d.block.y, d.block.z), (128, 1, 1));
    }
    // Every supported head size stays within 48 KiB of shared memory (no opt-in needed).
    for hs in (16..=128).step_by(16) {
        assert!(attention_tc::attention_backward_bf16_supports(hs));
        for d in [
            attention_tc::attention_backward_dkdv_bf16_launch(1, 1, hs, 1),
            attention_tc::attention_backward_dq_bf16_launch(1, 1, hs, 1),
        ] {
            assert!(d.smem <= 48 * 1024, "hs={hs}: {} bytes", d.smem);
            assert_eq!((d.grid.x, d.grid.y), (1, 1));
        }
    }
    for hs in [0, 8, 24, 144] {
        assert!(!attention_tc::attention_backward_bf16_supports(hs));
    }
}
