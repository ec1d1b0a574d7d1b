//! `kernels/elementwise.cu`. f32 kernels to 1e-5 of the CPU (add and add_into bit for bit);
//! bf16-storage kernels against the f32 CPU kernels on the same bf16 inputs, rounded to bf16
//! (1e-2; add_bf16 bit for bit); casts bit for bit against round-to-nearest-even from its
//! definition. Sizes: odd (7 and 15 end in a tail of 3 f32 or 7 bf16 elements after 0 or more
//! 16-byte vectors; 12345 in one of 1), a whole number of vectors (1000), one past a full grid
//! (the grid-stride loops wrap), and GPT-2's activations (B·T·C and B·T·4C at B=8, T=1024,
//! C=768: GPU only); aligned buffers take the kernels' vector paths, misaligned ones the scalar
//! paths.

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::elementwise::{self as k, BLOCK, F32_PER_THREAD, MAX_BLOCKS};
use smelt::backend::kernels::int;

use crate::harness::{
    bf16, bf16_pair, on_every_runtime, rounded, widen, Buf, Dev, TOL_BF16, TOL_F32,
};

/// Elements in one full grid of the f32 kernels (beyond it the grid-stride loops wrap).
const GRID: usize = MAX_BLOCKS as usize * BLOCK as usize * F32_PER_THREAD;

fn sizes<R: Runtime>(dev: &Dev<R>) -> Vec<usize> {
    dev.cases(
        &[1, 7, 15, 1000, 12345, GRID + 4099],
        &[8 * 1024 * 768, 8 * 1024 * 3072],
    )
}

/// f32 inputs at both alignments (vector path, scalar path).
fn placed<R: Runtime>(dev: &Dev<R>, x: &[f32], aligned: bool) -> Buf<R> {
    if aligned {
        dev.f32s(x)
    } else {
        dev.f32s_misaligned(x)
    }
}

fn placed_bf16<R: Runtime>(dev: &Dev<R>, x: &[u16], aligned: bool) -> Buf<R> {
    if aligned {
        dev.bf16s(x)
    } else {
        dev.bf16s_misaligned(x)
    }
}

on_every_runtime!(gelu, add, add_into, gelu_bf16, add_bf16, casts);

fn gelu<R: Runtime>(dev: &Dev<R>) {
    // Beyond |x| ~ 1e12 the backward formula overflows (x³ · 0 = NaN, on the CPU too).
    let extremes = [
        0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 30.0, -30.0, 88.0, -88.0, 1e4, -1e4,
    ];
    let mut cases: Vec<Vec<f32>> = sizes(dev)
        .iter()
        .map(|&n| dev.normal(n, 3.0, 0.0))
        .collect();
    cases.push(extremes.to_vec());
    for x in cases {
        let n = x.len();
        for aligned in [true, false] {
            let dout = dev.normal(n, 1.0, 0.0);
            let (xb, db) = (placed(dev, &x, aligned), placed(dev, &dout, aligned));
            let (out, dx) = (dev.f32_out(n), dev.f32_out(n));
            unsafe {
                k::gelu_forward::launch(&dev.rt, out.addr, xb.addr, int(n)).unwrap();
                k::gelu_backward::launch(&dev.rt, dx.addr, xb.addr, db.addr, int(n)).unwrap();
            }
            let (mut want, mut want_dx) = (vec![0.0; n], vec![0.0; n]);
            cpu::gelu_forward(&mut want, &x);
            cpu::gelu_backward(&mut want_dx, &x, &dout);
            let what = format!("n={n} aligned={aligned}");
            dev.check(
                &format!("gelu_forward {what}"),
                &dev.read_f32(&out, &what),
                &want,
                TOL_F32,
            );
            dev.check(
                &format!("gelu_backward {what}"),
                &dev.read_f32(&dx, &what),
                &want_dx,
                TOL_F32,
            );
        }
    }
}

fn add<R: Runtime>(dev: &Dev<R>) {
    for n in sizes(dev) {
        for aligned in [true, false] {
            let (a, b) = (dev.normal(n, 1.0, 0.0), dev.normal(n, 1.0, 0.0));
            let (ab, bb, out) = (placed(dev, &a, aligned), dev.f32s(&b), dev.f32_out(n));
            unsafe { k::add::launch(&dev.rt, out.addr, ab.addr, bb.addr, int(n)).unwrap() };
            let mut want = vec![0.0; n];
            cpu::add(&mut want, &a, &b);
            let what = format!("add n={n} aligned={aligned}");
            dev.same_bits(&what, &bits(&dev.read_f32(&out, &what)), &bits(&want));
        }
    }
}

fn add_into<R: Runtime>(dev: &Dev<R>) {
    for n in sizes(dev) {
        for aligned in [true, false] {
            let (dst, src) = (dev.normal(n, 1.0, 0.0), dev.normal(n, 1.0, 0.0));
            let (db, sb) = (dev.f32s(&dst), placed(dev, &src, aligned));
            unsafe { k::add_into::launch(&dev.rt, db.addr, sb.addr, int(n)).unwrap() };
            let mut want = dst.clone();
            cpu::add_into(&mut want, &src);
            let what = format!("add_into n={n} aligned={aligned}");
            dev.same_bits(&what, &bits(&dev.read_f32(&db, &what)), &bits(&want));
        }
    }
}

fn gelu_bf16<R: Runtime>(dev: &Dev<R>) {
    for n in sizes(dev) {
        for aligned in [true, false] {
            let (x_bits, x) = bf16_pair(&dev.normal(n, 3.0, 0.0));
            let (d_bits, dout) = bf16_pair(&dev.normal(n, 1.0, 0.0));
            let xb = placed_bf16(dev, &x_bits, aligned);
            let db = placed_bf16(dev, &d_bits, aligned);
            let (out, dx) = (dev.bf16_out(n), dev.bf16_out(n));
            unsafe {
                k::gelu_forward_bf16::launch(&dev.rt, out.addr, xb.addr, int(n)).unwrap();
                k::gelu_backward_bf16::launch(&dev.rt, dx.addr, xb.addr, db.addr, int(n)).unwrap();
            }
            let (mut want, mut want_dx) = (vec![0.0; n], vec![0.0; n]);
            cpu::gelu_forward(&mut want, &x);
            cpu::gelu_backward(&mut want_dx, &x, &dout);
            let what = format!("n={n} aligned={aligned}");
            let got = widen(&dev.read_u16(&out, &what));
            dev.check(
                &format!("gelu_forward_bf16 {what}"),
                &got,
                &rounded(&want),
                TOL_BF16,
            );
            let got = widen(&dev.read_u16(&dx, &what));
            dev.check(
                &format!("gelu_backward_bf16 {what}"),
                &got,
                &rounded(&want_dx),
                TOL_BF16,
            );
        }
    }
}

fn add_bf16<R: Runtime>(dev: &Dev<R>) {
    for n in sizes(dev) {
        for aligned in [true, false] {
            let (a_bits, a) = bf16_pair(&dev.normal(n, 1.0, 0.0));
            let (b_bits, b) = bf16_pair(&dev.normal(n, 1.0, 0.0));
            let (ab, bb) = (placed_bf16(dev, &a_bits, aligned), dev.bf16s(&b_bits));
            let out = dev.bf16_out(n);
            unsafe { k::add_bf16::launch(&dev.rt, out.addr, ab.addr, bb.addr, int(n)).unwrap() };
            // The sum of two bf16 values is exact in f32: one rounding, to bf16.
            let want: Vec<u16> = a.iter().zip(&b).map(|(x, y)| bf16(x + y)).collect();
            let what = format!("add_bf16 n={n} aligned={aligned}");
            dev.same_bits(&what, &dev.read_u16(&out, &what), &want);
        }
    }
}

/// f32 → bf16 bits from the definition of round-to-nearest-even: keep the upper 16 bits, add
/// one if the dropped half is above half an ulp, or exactly half and the kept bits are odd.
/// Every NaN becomes 0x7fff, as CUDA's.
fn bf16_by_definition(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let (kept, dropped) = ((x.to_bits() >> 16) as u16, x.to_bits() & 0xffff);
    kept + u16::from(dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1))
}

fn casts<R: Runtime>(dev: &Dev<R>) {
    let special = [
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::from_bits(0x3f80_8000), // a tie, even: stays
        f32::from_bits(0x3f81_8000), // a tie, odd: rounds up
        f32::from_bits(0x3f80_8001),
        f32::from_bits(0x3f80_7fff),
        f32::from_bits(0x0000_0001), // subnormals
        f32::from_bits(0x0000_8001),
        f32::from_bits(0x007f_ffff),
    ];
    let mut cases: Vec<Vec<f32>> = sizes(dev)
        .iter()
        .map(|&n| dev.normal(n, 10.0, 0.0))
        .collect();
    cases.push(special.to_vec());
    for x in cases {
        let n = x.len();
        let xb = dev.f32s(&x);
        let (to_bf16, back) = (dev.bf16_out(n), dev.f32_out(n));
        unsafe {
            k::cast_f32_to_bf16::launch(&dev.rt, to_bf16.addr, xb.addr, int(n)).unwrap();
            k::cast_bf16_to_f32::launch(&dev.rt, back.addr, to_bf16.addr, int(n)).unwrap();
        }
        let what = format!("cast_f32_to_bf16 n={n}");
        let got = dev.read_u16(&to_bf16, &what);
        let want: Vec<u16> = x.iter().map(|&v| bf16_by_definition(v)).collect();
        dev.same_bits(&what, &got, &want);
        let what = format!("cast_bf16_to_f32 n={n}");
        dev.same_bits(
            &what,
            &bits(&dev.read_f32(&back, &what)),
            &bits(&widen(&want)),
        );
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
