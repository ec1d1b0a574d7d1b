//! `kernels/layernorm.cu`. Every body runs the f32 kernel (to 1e-5 of the CPU) and its
//! bf16-storage twin (bf16 activations to 1e-2 of the CPU result rounded to bf16; the f32
//! statistics and parameter gradients to 1e-5), the CPU getting the same bf16-rounded inputs.
//! Exact relations are checked bit for bit: the fused residual against `add` then
//! `layernorm_forward`, the backward's second run (in place, `dx = dout`) against its first, the
//! reduce against the partials summed in order. Shapes: odd, `c = 1`, `c = 1600` (fewer warps
//! per backward block), `n` past the backward's 512-block grid (warps loop over rows), GPT-2's
//! `B·T = 8192` rows of `C = 768` (GPU only).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::layernorm::{self as k, backward_launch, backward_scratch_bytes};
use smelt::backend::kernels::{elementwise, int};
use smelt::backend::DType;

use crate::harness::TOL_F32;
use crate::harness::{bf16, bf16_pair, on_every_runtime, rounded, widen, Buf, Dev, TOL_BF16};

const EPS: f32 = 1e-5;
const DTYPES: [DType; 2] = [DType::F32, DType::Bf16];

/// `(n, c)`: rows of `c` elements.
fn shapes<R: Runtime>(dev: &Dev<R>) -> Vec<(usize, usize)> {
    let small = [
        (1, 7),
        (5, 33),
        (37, 100),
        (4, 1),
        (9, 768),
        (300, 768),
        (37, 1600),
    ];
    dev.cases(
        &[&small[..], &[(5000, 33), (4500, 5)]].concat(),
        &[(8 * 1024, 768)],
    )
}

/// Activations in `dtype`: the device buffer and the values the CPU reference gets.
fn acts<R: Runtime>(dev: &Dev<R>, dtype: DType, x: &[f32]) -> (Buf<R>, Vec<f32>) {
    match dtype {
        DType::F32 => (dev.f32s(x), x.to_vec()),
        DType::Bf16 => {
            let (bits, wide) = bf16_pair(x);
            (dev.bf16s(&bits), wide)
        }
    }
}

/// A poisoned activation output.
fn acts_out<R: Runtime>(dev: &Dev<R>, dtype: DType, len: usize) -> Buf<R> {
    match dtype {
        DType::F32 => dev.f32_out(len),
        DType::Bf16 => dev.bf16_out(len),
    }
}

/// An activation output against the CPU's f32 result (rounded to bf16 for bf16 storage).
fn check_acts<R: Runtime>(dev: &Dev<R>, dtype: DType, what: &str, got: &Buf<R>, want: &[f32]) {
    match dtype {
        DType::F32 => dev.check(what, &dev.read_f32(got, what), want, TOL_F32),
        DType::Bf16 => dev.check(
            what,
            &widen(&dev.read_u16(got, what)),
            &rounded(want),
            TOL_BF16,
        ),
    };
}

/// The bit patterns of a buffer of `dtype`.
fn bits<R: Runtime>(dev: &Dev<R>, dtype: DType, b: &Buf<R>, what: &str) -> Vec<u32> {
    match dtype {
        DType::F32 => dev.read_f32(b, what).iter().map(|v| v.to_bits()).collect(),
        DType::Bf16 => dev.read_u16(b, what).iter().map(|&v| v as u32).collect(),
    }
}

/// `mean`, `rstd` and `out` as the CPU computes them from `x`.
fn cpu_forward(x: &[f32], w: &[f32], b: &[f32], n: usize, c: usize) -> [Vec<f32>; 3] {
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, x, w, b, n, c, EPS);
    [mean, rstd, out]
}

/// Runs `layernorm_forward[_bf16]`: `[mean, rstd, out]`.
fn forward_on<R: Runtime>(
    dev: &Dev<R>,
    dtype: DType,
    x: &Buf<R>,
    w: &Buf<R>,
    b: &Buf<R>,
    n: usize,
    c: usize,
) -> [Buf<R>; 3] {
    let [mean, rstd, out] = [dev.f32_out(n), dev.f32_out(n), acts_out(dev, dtype, n * c)];
    let f = match dtype {
        DType::F32 => k::layernorm_forward::launch,
        DType::Bf16 => k::layernorm_forward_bf16::launch,
    };
    let args = (out.addr, mean.addr, rstd.addr, x.addr, w.addr, b.addr);
    unsafe {
        f(
            &dev.rt,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            int(n),
            int(c),
            EPS,
        )
        .unwrap()
    };
    [mean, rstd, out]
}

on_every_runtime!(forward, fused_residual_forward, backward, backward_reduce);

fn forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (xb, x) = acts(dev, dtype, &dev.normal(n * c, 2.0, 0.5));
            let (w, b) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let [mean, rstd, out] = forward_on(dev, dtype, &xb, &dev.f32s(&w), &dev.f32s(&b), n, c);
            let [want_mean, want_rstd, want] = cpu_forward(&x, &w, &b, n, c);
            let what = format!("layernorm_forward {dtype:?} n={n} c={c}");
            check_acts(dev, dtype, &format!("{what} out"), &out, &want);
            dev.check(
                &format!("{what} mean"),
                &dev.read_f32(&mean, &what),
                &want_mean,
                TOL_F32,
            );
            dev.check(
                &format!("{what} rstd"),
                &dev.read_f32(&rstd, &what),
                &want_rstd,
                TOL_F32,
            );
        }
    }
}

/// Against the CPU's add then layernorm of the residual as stored, then bit for bit against
/// the device's `add[_bf16]` then `layernorm_forward[_bf16]`, and in place (`residual_out = a`).
fn fused_residual_forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (a_host, b_host) = (dev.normal(n * c, 1.0, 0.3), dev.normal(n * c, 1.5, -0.1));
            let ((ab, a), (bb, b)) = (acts(dev, dtype, &a_host), acts(dev, dtype, &b_host));
            let (w, bias) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let (wb, biasb) = (dev.f32s(&w), dev.f32s(&bias));
            let fused = |res: &Buf<R>, a: &Buf<R>| {
                let [mean, rstd, out] =
                    [dev.f32_out(n), dev.f32_out(n), acts_out(dev, dtype, n * c)];
                let f = match dtype {
                    DType::F32 => k::fused_residual_layernorm_forward::launch,
                    DType::Bf16 => k::fused_residual_layernorm_forward_bf16::launch,
                };
                let ptrs = [
                    res.addr, out.addr, mean.addr, rstd.addr, a.addr, bb.addr, wb.addr, biasb.addr,
                ];
                let [p0, p1, p2, p3, p4, p5, p6, p7] = ptrs;
                unsafe { f(&dev.rt, p0, p1, p2, p3, p4, p5, p6, p7, int(n), int(c), EPS).unwrap() };
                [mean, rstd, out]
            };
            let res = acts_out(dev, dtype, n * c);
            let got = fused(&res, &ab);

            let mut sum = vec![0.0; n * c];
            cpu::add(&mut sum, &a, &b);
            // The residual as stored: bf16 storage rounds the f32 sum once.
            let (sum_bits, stored): (Vec<u32>, _) = match dtype {
                DType::F32 => (sum.iter().map(|v| v.to_bits()).collect(), sum),
                DType::Bf16 => (sum.iter().map(|&v| bf16(v) as u32).collect(), rounded(&sum)),
            };
            let want = cpu_forward(&stored, &w, &bias, n, c);
            let what = format!("fused_residual_layernorm_forward {dtype:?} n={n} c={c}");
            dev.same_bits(
                &format!("{what} residual"),
                &bits(dev, dtype, &res, &what),
                &sum_bits,
            );
            check_acts(dev, dtype, &format!("{what} out"), &got[2], &want[2]);
            dev.check(
                &format!("{what} mean"),
                &dev.read_f32(&got[0], &what),
                &want[0],
                TOL_F32,
            );
            dev.check(
                &format!("{what} rstd"),
                &dev.read_f32(&got[1], &what),
                &want[1],
                TOL_F32,
            );

            // Bit patterns of [residual, mean, rstd, out].
            let all_bits = |res: &Buf<R>, [mean, rstd, out]: &[Buf<R>; 3], tag: &str| {
                let f32_bits = |b| bits(dev, DType::F32, b, tag);
                [
                    bits(dev, dtype, res, tag),
                    f32_bits(mean),
                    f32_bits(rstd),
                    bits(dev, dtype, out, tag),
                ]
            };
            let first = all_bits(&res, &got, &what);
            let added = acts_out(dev, dtype, n * c);
            let (out, a, b, len) = (added.addr, ab.addr, bb.addr, int(n * c));
            unsafe {
                match dtype {
                    DType::F32 => elementwise::add::launch(&dev.rt, out, a, b, len),
                    DType::Bf16 => elementwise::add_bf16::launch(&dev.rt, out, a, b, len),
                }
                .unwrap()
            };
            let unfused = forward_on(dev, dtype, &added, &wb, &biasb, n, c);
            let in_place = fused(&ab, &ab);
            for (how, res, outs) in [
                ("vs unfused", &added, &unfused),
                ("in place", &ab, &in_place),
            ] {
                let tag = format!("{what} {how}");
                let again = all_bits(res, outs, &tag);
                for (name, (got, want)) in ["residual", "mean", "rstd", "out"]
                    .iter()
                    .zip(again.iter().zip(&first))
                {
                    dev.same_bits(&format!("{tag} {name}"), got, want);
                }
            }
        }
    }
}

/// The sequence against the CPU; a second run, in place (`dx = dout`) and on the scratch the
/// first left, gives the same bits (deterministic, and `dx` may alias `dout`).
fn backward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (xb, x) = acts(dev, dtype, &dev.normal(n * c, 2.0, 0.5));
            let (doutb, dout) = acts(dev, dtype, &dev.normal(n * c, 1.0, 0.1));
            let (w, b) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let [mean, rstd, _] = cpu_forward(&x, &w, &b, n, c);
            let f32_ins = [&w, &mean, &rstd].map(|v| dev.f32s(v));
            let ins = [
                doutb.addr,
                xb.addr,
                f32_ins[0].addr,
                f32_ins[1].addr,
                f32_ins[2].addr,
            ];
            let (_mem, scratch) = dev.scratch(backward_scratch_bytes(n, c));
            let run = |dx: &Buf<R>, ins: [u64; 5]| {
                let [dw, db] = [dev.f32_out(c), dev.f32_out(c)];
                unsafe {
                    k::backward(
                        &dev.rt,
                        dtype,
                        [dx.addr, dw.addr, db.addr],
                        ins,
                        n,
                        c,
                        scratch,
                    )
                    .unwrap()
                };
                [dw, db]
            };
            let dx = acts_out(dev, dtype, n * c);
            let [dw, db] = run(&dx, ins);
            let (mut want_dx, mut want_dw, mut want_db) =
                (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
            cpu::layernorm_backward(
                &mut want_dx,
                &mut want_dw,
                &mut want_db,
                &dout,
                &x,
                &w,
                &mean,
                &rstd,
                n,
                c,
            );
            let what = format!("layernorm backward {dtype:?} n={n} c={c}");
            check_acts(dev, dtype, &format!("{what} dx"), &dx, &want_dx);
            dev.check(
                &format!("{what} dweight"),
                &dev.read_f32(&dw, &what),
                &want_dw,
                TOL_F32,
            );
            dev.check(
                &format!("{what} dbias"),
                &dev.read_f32(&db, &what),
                &want_db,
                TOL_F32,
            );

            let [dw2, db2] = run(&doutb, ins);
            let tag = format!("{what} second run in place");
            dev.same_bits(
                &format!("{tag} dx"),
                &bits(dev, dtype, &doutb, &tag),
                &bits(dev, dtype, &dx, &tag),
            );
            for (name, again, first) in [("dweight", &dw2, &dw), ("dbias", &db2, &db)] {
                dev.same_bits(
                    &format!("{tag} {name}"),
                    &bits(dev, DType::F32, again, &tag),
                    &bits(dev, DType::F32, first, &tag),
                );
            }
        }
    }
}

/// Bit for bit against the partials summed in increasing order; `c` past one block.
fn backward_reduce<R: Runtime>(dev: &Dev<R>) {
    for (partials, c) in [(1, 1), (7, 300), (512, 769)] {
        let scratch = dev.normal(2 * partials * c, 1.0, 0.0);
        let [dw, db] = [dev.f32_out(c), dev.f32_out(c)];
        let (sb, np) = (dev.f32s(&scratch), int(partials));
        unsafe {
            k::layernorm_backward_reduce::launch(&dev.rt, dw.addr, db.addr, sb.addr, np, int(c))
                .unwrap()
        };
        let sum = |first: usize, j: usize| {
            (0..partials).fold(0.0f32, |s, k| s + scratch[(first + k) * c + j])
        };
        let what = format!("layernorm_backward_reduce partials={partials} c={c}");
        for (name, got, first) in [("dweight", &dw, 0), ("dbias", &db, partials)] {
            let want: Vec<u32> = (0..c).map(|j| sum(first, j).to_bits()).collect();
            dev.same_bits(
                &format!("{what} {name}"),
                &bits(dev, DType::F32, got, &what),
                &want,
            );
        }
    }
}

/// 8 warps while their accumulators fit 48 KiB, fewer beyond; the grid is capped at 512.
#[test]
fn backward_geometry() {
    let dims = |n, c| {
        let d = backward_launch(n, c);
        (d.grid.x, d.block.x, d.smem)
    };
    assert_eq!(dims(300, 768), (38, 256, 49152));
    assert_eq!(dims(37, 1600), (13, 96, 38400));
    assert_eq!(dims(1 << 20, 768).0, 512);
    assert!(backward_scratch_bytes(1 << 20, 768) >= 4 * 2 * 512 * 768);
}
