//! `kernels/attention.cu` (f32), `attention_tc.cu` and `attention_tc_backward.cu` (tensor
//! cores, one instance per head size) against the CPU's `attention_forward` and
//! `attention_backward`. f32 kernels to 1e-5; tensor-core kernels to 1e-2 against the f32 CPU
//! on the same bf16-rounded inputs (P and dS are rounded to bf16 for the products; out and
//! dqkv are stored in bf16, each element rounded once from its f32 value). dQ, dK and
//! dV are also checked each on its own, so that a small part cannot hide behind a large one.
//! Sizes: t not a multiple of the tiles (32 rows f32, 64 tensor cores), every tensor-core head
//! size, and GPT-2 124M (B=4, T=1024, 12 heads of 64: GPU only). The backward and the forward
//! give the same bits twice; unaligned bf16 inputs (the element-wise load paths) give the
//! same bits as aligned ones.

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::attention::{self as k, BackwardOperands};
use smelt::backend::kernels::attention_tc::{self as tc, HEAD_SIZES};
use smelt::backend::kernels::attention_tc_backward::{self as tcb};
use smelt::backend::kernels::int;
use smelt::backend::{AttentionShape, DType};

use crate::harness::{bf16_pair, on_every_runtime, rounded, widen, Buf, Dev, TOL_BF16, TOL_F32};

/// GPT-2 124M at B=4.
const GPT2: (usize, usize, usize, usize) = (4, 1024, 768, 12);

on_every_runtime!(
    forward,
    backward,
    backward_preprocess,
    forward_bf16,
    backward_bf16,
    backward_passes_write_their_columns
);

fn shape(b: usize, t: usize, c: usize, nh: usize) -> AttentionShape {
    AttentionShape {
        b,
        t,
        c,
        n_head: nh,
    }
}

/// The CPU forward: (out, lse).
fn cpu_forward(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut out, mut lse) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t]);
    cpu::attention_forward(&mut out, &mut lse, qkv, b, t, c, nh);
    (out, lse)
}

/// Columns `part·c .. (part+1)·c` of every row of a `(.., 3c)` tensor: 0 = Q, 1 = K, 2 = V.
fn part(x: &[f32], c: usize, part: usize) -> Vec<f32> {
    x.chunks_exact(3 * c)
        .flat_map(|row| &row[part * c..][..c])
        .copied()
        .collect()
}

/// dqkv whole, then dQ, dK and dV each on its own. At t = 1 dQ and dK are zero analytically
/// (one key: P = 1 and dP = D), so both sides return rounding noise: only checked small.
fn check_dqkv<R: Runtime>(
    dev: &Dev<R>,
    what: &str,
    got: &[f32],
    want: &[f32],
    c: usize,
    t: usize,
    tol: f64,
) {
    dev.check(&format!("{what} dqkv"), got, want, tol);
    for (p, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let (g, w) = (part(got, c, p), part(want, c, p));
        if t == 1 && p < 2 {
            assert!(
                g.iter().all(|v| v.is_finite() && v.abs() < 1e-2),
                "{what} {name}: not ~0 at t = 1 (seed {})",
                dev.seed
            );
        } else {
            dev.check(&format!("{what} {name}"), &g, &w, tol);
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// (b, t, c, nh) of the f32 kernels: head sizes 4, 3, 4, 32, 64, 64, 128; t = 1 up to 130.
const F32_SIZES: [(usize, usize, usize, usize); 7] = [
    (1, 1, 4, 1),
    (2, 5, 6, 2),
    (3, 7, 12, 3),
    (2, 33, 64, 2),
    (1, 100, 128, 2),
    (2, 130, 256, 4),
    (1, 45, 256, 2),
];

fn forward<R: Runtime>(dev: &Dev<R>) {
    for (b, t, c, nh) in dev.cases(&F32_SIZES, &[GPT2]) {
        // Scale 2 makes the softmax peaky enough that the online max matters.
        let qkv = dev.normal(b * t * 3 * c, 2.0, 0.0);
        let qb = dev.f32s(&qkv);
        let what = format!("attention_forward b={b} t={t} c={c} nh={nh}");
        let run = || {
            let (out, lse) = (dev.f32_out(b * t * c), dev.f32_out(b * nh * t));
            let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
            unsafe {
                k::attention_forward::launch(&dev.rt, out.addr, lse.addr, qb.addr, bi, ti, ci, nhi)
                    .unwrap()
            };
            (dev.read_f32(&out, &what), dev.read_f32(&lse, &what))
        };
        let (out, lse) = run();
        let (want_out, want_lse) = cpu_forward(&qkv, b, t, c, nh);
        dev.check(&format!("{what} out"), &out, &want_out, TOL_F32);
        dev.check(&format!("{what} lse"), &lse, &want_lse, TOL_F32);
        let (out2, lse2) = run();
        dev.same_bits(&format!("{what} twice"), &bits(&out2), &bits(&out));
        dev.same_bits(&format!("{what} twice lse"), &bits(&lse2), &bits(&lse));
    }
}

/// The backward sequence on device inputs; dqkv read back.
fn run_backward<R: Runtime>(
    dev: &Dev<R>,
    s: AttentionShape,
    (qkv, dout, storage): (&Buf<R>, &Buf<R>, DType),
    (out, d_dout, d_storage): (&Buf<R>, &Buf<R>, DType),
    lse: &Buf<R>,
    what: &str,
) -> Vec<f32> {
    // dqkv in `storage`, as the backend passes it.
    let dqkv = dev.out_as(s.b * s.t * 3 * s.c, storage);
    let (_scratch_buf, scratch) = dev.scratch(k::attention_backward_scratch_bytes(s));
    let x = BackwardOperands {
        dqkv: dqkv.addr,
        qkv: qkv.addr,
        dout: dout.addr,
        storage,
        d_out: out.addr,
        d_dout: d_dout.addr,
        d_storage,
        lse: lse.addr,
    };
    unsafe { k::attention_backward(&dev.rt, &x, s, scratch).unwrap() };
    dev.read_as(&dqkv, storage, what).0
}

fn backward<R: Runtime>(dev: &Dev<R>) {
    for (b, t, c, nh) in dev.cases(&F32_SIZES, &[GPT2]) {
        let qkv = dev.normal(b * t * 3 * c, 2.0, 0.0);
        let dout = dev.normal(b * t * c, 1.0, 0.0);
        let (out, lse) = cpu_forward(&qkv, b, t, c, nh);
        let mut want = vec![f32::NAN; b * t * 3 * c];
        cpu::attention_backward(&mut want, &dout, &qkv, &out, &lse, b, t, c, nh);
        let (qb, db, ob, lb) = (
            dev.f32s(&qkv),
            dev.f32s(&dout),
            dev.f32s(&out),
            dev.f32s(&lse),
        );
        let what = format!("attention_backward b={b} t={t} c={c} nh={nh}");
        let f32s = DType::F32;
        let run = || {
            run_backward(
                dev,
                shape(b, t, c, nh),
                (&qb, &db, f32s),
                (&ob, &db, f32s),
                &lb,
                &what,
            )
        };
        let got = run();
        check_dqkv(dev, &what, &got, &want, c, t, TOL_F32);
        dev.same_bits(&format!("{what} twice"), &bits(&run()), &bits(&got));
    }
}

/// `D = rowsum(dO ∘ O)` alone, f32 and bf16 inputs, against the sum in f64; head sizes above
/// the tiled kernels' 128 too (the preprocess loops over any head size).
fn backward_preprocess<R: Runtime>(dev: &Dev<R>) {
    let small = [
        (1, 1, 8, 2),
        (2, 5, 48, 3),
        (2, 33, 128, 2),
        (1, 7, 300, 2),
        (3, 4, 5, 5),
    ];
    for (b, t, c, nh) in dev.cases(&small, &[GPT2]) {
        let hs = c / nh;
        let (d_bits, dout) = bf16_pair(&dev.normal(b * t * c, 1.0, 0.0));
        let (o_bits, out) = bf16_pair(&dev.normal(b * t * c, 1.0, 0.0));
        let mut want = vec![0.0f32; b * nh * t];
        for (row, (d, o)) in dout.chunks_exact(hs).zip(out.chunks_exact(hs)).enumerate() {
            let (bi, i, h) = (row / (t * nh), row / nh % t, row % nh);
            let sum: f64 = d.iter().zip(o).map(|(&d, &o)| d as f64 * o as f64).sum();
            want[(bi * nh + h) * t + i] = sum as f32;
        }
        let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
        for storage in [DType::F32, DType::Bf16] {
            let dsum = dev.f32_out(b * nh * t);
            let (db, ob) = match storage {
                DType::F32 => (dev.f32s(&dout), dev.f32s(&out)),
                DType::Bf16 => (dev.bf16s(&d_bits), dev.bf16s(&o_bits)),
            };
            let (d, o) = (db.addr, ob.addr);
            unsafe {
                match storage {
                    DType::F32 => k::attention_backward_preprocess::launch(
                        &dev.rt, dsum.addr, d, o, bi, ti, ci, nhi,
                    ),
                    DType::Bf16 => k::attention_backward_preprocess_bf16::launch(
                        &dev.rt, dsum.addr, d, o, bi, ti, ci, nhi,
                    ),
                }
                .unwrap()
            };
            let what =
                format!("attention_backward_preprocess {storage:?} b={b} t={t} c={c} nh={nh}");
            dev.check(&what, &dev.read_f32(&dsum, &what), &want, TOL_F32);
        }
    }
}

/// (b, t, c, nh) of the tensor-core kernels: every head size of [`HEAD_SIZES`]; t = 1 up to
/// 200 (partial 64-row tiles, several key and query tiles, tiles with and without the mask).
const TC_SIZES: [(usize, usize, usize, usize); 14] = [
    (1, 1, 16, 1),
    (2, 37, 48, 3),
    (1, 45, 96, 3),
    (1, 33, 96, 2),
    (1, 1, 64, 1),
    (1, 130, 64, 1),
    (2, 37, 192, 3),
    (1, 200, 128, 2),
    (1, 70, 80, 1),
    (1, 50, 192, 2),
    (1, 70, 112, 1),
    (1, 1, 128, 1),
    (1, 130, 128, 1),
    (2, 37, 384, 3),
];

fn forward_bf16<R: Runtime>(dev: &Dev<R>) {
    let mut seen = Vec::new();
    // The last small case again with qkv not 16-byte aligned (element-wise loads, no cp.async).
    let cases = [&TC_SIZES[..], &[(1, 70, 128, 2)]].concat();
    for (i, (b, t, c, nh)) in dev.cases(&cases, &[GPT2]).into_iter().enumerate() {
        let aligned = i != cases.len() - 1;
        seen.push(c / nh);
        let (q_bits, qkv) = bf16_pair(&dev.normal(b * t * 3 * c, 2.0, 0.0));
        let qb = if aligned {
            dev.bf16s(&q_bits)
        } else {
            dev.bf16s_misaligned(&q_bits)
        };
        let what = format!("attention_forward_bf16 b={b} t={t} c={c} nh={nh} aligned={aligned}");
        let run = || {
            let (out, lse) = (dev.bf16_out(b * t * c), dev.f32_out(b * nh * t));
            let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
            unsafe {
                tc::attention_forward_bf16(&dev.rt, out.addr, lse.addr, qb.addr, bi, ti, ci, nhi)
                    .unwrap()
            };
            (widen(&dev.read_u16(&out, &what)), dev.read_f32(&lse, &what))
        };
        let (out, lse) = run();
        let (want_out, want_lse) = cpu_forward(&qkv, b, t, c, nh);
        dev.check(&format!("{what} out"), &out, &want_out, TOL_BF16);
        dev.check(&format!("{what} lse"), &lse, &want_lse, TOL_BF16);
        if t == 130 {
            let (out2, lse2) = run();
            dev.same_bits(&format!("{what} twice"), &bits(&out2), &bits(&out));
            dev.same_bits(&format!("{what} twice lse"), &bits(&lse2), &bits(&lse));
        }
    }
    assert!(
        HEAD_SIZES.iter().all(|hs| seen.contains(hs)),
        "a head size untested"
    );
}

fn backward_bf16<R: Runtime>(dev: &Dev<R>) {
    for (i, (b, t, c, nh)) in dev.cases(&TC_SIZES, &[GPT2]).into_iter().enumerate() {
        let (q_bits, qkv) = bf16_pair(&dev.normal(b * t * 3 * c, 2.0, 0.0));
        let (d_bits, dout) = bf16_pair(&dev.normal(b * t * c, 1.0, 0.0));
        let (mut out, lse) = cpu_forward(&qkv, b, t, c, nh);
        // D from f32 dout and out (what the backend does when they differ in dtype), or from
        // both in bf16 (when both are bf16), alternately.
        let d_storage = if i % 2 == 0 { DType::F32 } else { DType::Bf16 };
        let (ob, ddb) = match d_storage {
            DType::F32 => (dev.f32s(&out), dev.f32s(&dout)),
            DType::Bf16 => {
                out = rounded(&out);
                let (o_bits, _) = bf16_pair(&out);
                (dev.bf16s(&o_bits), dev.bf16s(&d_bits))
            }
        };
        let mut want = vec![f32::NAN; b * t * 3 * c];
        cpu::attention_backward(&mut want, &dout, &qkv, &out, &lse, b, t, c, nh);
        let (qb, db, lb) = (dev.bf16s(&q_bits), dev.bf16s(&d_bits), dev.f32s(&lse));
        let s = shape(b, t, c, nh);
        let what =
            format!("attention_backward_bf16 b={b} t={t} c={c} nh={nh} D from {d_storage:?}");
        let run = |qb: &Buf<R>, db: &Buf<R>| {
            run_backward(
                dev,
                s,
                (qb, db, DType::Bf16),
                (&ob, &ddb, d_storage),
                &lb,
                &what,
            )
        };
        let got = run(&qb, &db);
        check_dqkv(dev, &what, &got, &want, c, t, TOL_BF16);
        if (b, t, c, nh) == (1, 130, 128, 1) || (b, t, c, nh) == GPT2 {
            dev.same_bits(&format!("{what} twice"), &bits(&run(&qb, &db)), &bits(&got));
            // qkv and dout not 16-byte aligned: element-wise loads, the same bits.
            let (qu, du) = (dev.bf16s_misaligned(&q_bits), dev.bf16s_misaligned(&d_bits));
            dev.same_bits(
                &format!("{what} unaligned"),
                &bits(&run(&qu, &du)),
                &bits(&got),
            );
        }
    }
}

/// Each pass of the backward alone on a poisoned dqkv, f32 and tensor cores: dK/dV writes
/// all of the K and V columns and none of Q's, dQ the reverse (the backend may run them in
/// either order on one dqkv).
fn backward_passes_write_their_columns<R: Runtime>(dev: &Dev<R>) {
    let (b, t, c, nh) = (2, 37, 128, 2);
    let (q_bits, qkv) = bf16_pair(&dev.normal(b * t * 3 * c, 2.0, 0.0));
    let (d_bits, dout) = bf16_pair(&dev.normal(b * t * c, 1.0, 0.0));
    let (out, lse) = cpu_forward(&qkv, b, t, c, nh);
    let (ob, lb, ddb) = (dev.f32s(&out), dev.f32s(&lse), dev.f32s(&dout));
    let (bi, ti, ci, nhi) = (int(b), int(t), int(c), int(nh));
    let dsum = dev.f32_out(b * nh * t);
    unsafe {
        k::attention_backward_preprocess::launch(
            &dev.rt, dsum.addr, ddb.addr, ob.addr, bi, ti, ci, nhi,
        )
        .unwrap()
    };
    let (ds, l) = (dsum.addr, lb.addr);
    for storage in [DType::F32, DType::Bf16] {
        let (qb, db) = match storage {
            DType::F32 => (dev.f32s(&qkv), dev.f32s(&dout)),
            DType::Bf16 => (dev.bf16s(&q_bits), dev.bf16s(&d_bits)),
        };
        let (q, d) = (qb.addr, db.addr);
        // Poisoned with NaN in the kernels' output dtype (the dtype of their inputs).
        let (kv, dq) = (
            dev.out_as(b * t * 3 * c, storage),
            dev.out_as(b * t * 3 * c, storage),
        );
        unsafe {
            match storage {
                DType::F32 => {
                    k::attention_backward_dkdv::launch(
                        &dev.rt, kv.addr, d, q, l, ds, bi, ti, ci, nhi,
                    )
                    .unwrap();
                    k::attention_backward_dq::launch(
                        &dev.rt, dq.addr, d, q, l, ds, bi, ti, ci, nhi,
                    )
                    .unwrap();
                }
                DType::Bf16 => {
                    tcb::attention_backward_dkdv_bf16(
                        &dev.rt, kv.addr, d, q, l, ds, bi, ti, ci, nhi,
                    )
                    .unwrap();
                    tcb::attention_backward_dq_bf16(&dev.rt, dq.addr, d, q, l, ds, bi, ti, ci, nhi)
                        .unwrap();
                }
            }
        }
        let what = format!("attention backward passes {storage:?}");
        let (kv, dq) = (
            dev.read_as(&kv, storage, &what).0,
            dev.read_as(&dq, storage, &what).0,
        );
        let written = |x: &[f32], p: usize| part(x, c, p).iter().all(|v| v.is_finite());
        let untouched = |x: &[f32], p: usize| part(x, c, p).iter().all(|v| v.is_nan());
        assert!(
            untouched(&kv, 0) && written(&kv, 1) && written(&kv, 2),
            "{what}: dK/dV columns (seed {})",
            dev.seed
        );
        assert!(
            written(&dq, 0) && untouched(&dq, 1) && untouched(&dq, 2),
            "{what}: dQ columns (seed {})",
            dev.seed
        );
    }
}

/// The tensor-core instances: one per head size, each under 48 KiB of shared memory (no
/// opt-in), GPT-2's grid; an instance refuses another head size; other head sizes have none.
#[test]
fn tensor_core_instances_and_geometry() {
    for hs in HEAD_SIZES {
        assert!(tc::supports(hs));
        let (c, nh) = (int(2 * hs), 2);
        for d in [
            tc::forward_dims(hs, 1, 1, c, nh),
            tcb::dkdv_dims(hs, 1, 1, c, nh),
            tcb::dq_dims(hs, 1, 1, c, nh),
        ] {
            assert!(d.smem <= 48 * 1024, "hs={hs}: {} bytes", d.smem);
            assert_eq!((d.grid.x, d.grid.y, d.block.x), (1, 2, 128));
        }
        for kernels in [tc::KERNELS, tcb::KERNELS] {
            let named = kernels
                .iter()
                .filter(|k| k.name.ends_with(&format!("_hs{hs}")))
                .count();
            assert_eq!(
                named,
                kernels.len() / HEAD_SIZES.len(),
                "instances of head size {hs}"
            );
        }
        let other = if hs == 64 { 32 } else { 64 };
        assert!(std::panic::catch_unwind(|| tc::forward_dims(other, 1, 1, c, nh)).is_err());
        assert!(std::panic::catch_unwind(|| tcb::dq_dims(other, 1, 1, c, nh)).is_err());
    }
    for hs in [0, 8, 24, 144] {
        assert!(!tc::supports(hs));
    }
    let (b, t, c, nh) = GPT2;
    for d in [
        tc::forward_dims(64, int(b), int(t), int(c), int(nh)),
        tcb::dkdv_dims(64, int(b), int(t), int(c), int(nh)),
        tcb::dq_dims(64, int(b), int(t), int(c), int(nh)),
    ] {
        assert_eq!((d.grid.x, d.grid.y, d.grid.z), (16, 48, 1));
    }
}
