//! `kernels/layernorm.cu`. Every body runs the f32 kernel (to 1e-5 of the CPU) and its
//! bf16-storage twin (bf16 activations to 1e-2 of the CPU result rounded to bf16; the f32
//! statistics and parameter gradients to 1e-5), the CPU getting the same bf16-rounded inputs.
//! Exact relations are checked bit for bit: the fused residual against `add` then
//! `layernorm_forward`, later launches of the one-kernel backward (one in place, `dx = dout`, on
//! the scratch and block counter the first left) against its first, and the counter back at 0 after
//! each. The kernels move 16-byte chunks (4 f32 or 8 bf16) when a row's pointers are aligned,
//! element by element otherwise: every body runs again with a misaligned input (all rows on the
//! scalar path) and must give the same bits. Shapes: odd, `c = 1`, `c` not a multiple of 4 or 8
//! (rows alternate between aligned and not, and end in a partial chunk: at `c = 771` after
//! several full passes of the warp), `c = 1600` (fewer warps per backward block), many backward blocks (38
//! at `300 × 768`, whose last block sums 38 partials), `n` past the backward's 512-block grid
//! (warps loop over rows), GPT-2's `B·T = 8192` rows of `C = 768` (GPU only).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::layernorm::{self as k, backward_launch, backward_scratch_bytes};
use smelt::backend::kernels::{elementwise, int};
use smelt::backend::DType;

use crate::harness::{bf16, bf16_pair, on_every_runtime, rounded, widen, Buf, Dev};
use crate::harness::{TOL_BF16, TOL_F32};

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
        (6, 771),
    ];
    let past_grid = [(5000, 33), (4500, 5)];
    dev.cases(&[&small[..], &past_grid].concat(), &[(8 * 1024, 768)])
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

/// `x` (values as [`acts`] gives them) in `dtype`, 4 bytes past 16-byte alignment: every row
/// takes the kernels' element-by-element path.
fn misaligned<R: Runtime>(dev: &Dev<R>, dtype: DType, x: &[f32]) -> Buf<R> {
    match dtype {
        DType::F32 => dev.f32s_misaligned(x),
        DType::Bf16 => dev.bf16s_misaligned(&x.iter().map(|&v| bf16(v)).collect::<Vec<_>>()),
    }
}

/// A poisoned output of `dtype`.
fn out<R: Runtime>(dev: &Dev<R>, dtype: DType, len: usize) -> Buf<R> {
    match dtype {
        DType::F32 => dev.f32_out(len),
        DType::Bf16 => dev.bf16_out(len),
    }
}

/// An output of `dtype` against the CPU's f32 result (rounded to bf16 for bf16 storage).
fn check<R: Runtime>(dev: &Dev<R>, dtype: DType, what: &str, got: &Buf<R>, want: &[f32]) {
    match dtype {
        DType::F32 => dev.check(what, &dev.read_f32(got, what), want, TOL_F32),
        DType::Bf16 => {
            let got = widen(&dev.read_u16(got, what));
            dev.check(what, &got, &rounded(want), TOL_BF16)
        }
    };
}

/// The bit patterns of a buffer of `dtype`.
fn bits<R: Runtime>(dev: &Dev<R>, dtype: DType, b: &Buf<R>, what: &str) -> Vec<u32> {
    match dtype {
        DType::F32 => dev.read_f32(b, what).iter().map(|v| v.to_bits()).collect(),
        DType::Bf16 => dev.read_u16(b, what).iter().map(|&v| v as u32).collect(),
    }
}

/// Two buffers of `dtype` hold the same bits.
fn same<R: Runtime>(dev: &Dev<R>, dtype: DType, what: &str, got: &Buf<R>, want: &Buf<R>) {
    dev.same_bits(
        what,
        &bits(dev, dtype, got, what),
        &bits(dev, dtype, want, what),
    );
}

/// `[mean, rstd, out]` as the CPU computes them from `x`.
fn cpu_forward(x: &[f32], w: &[f32], b: &[f32], n: usize, c: usize) -> [Vec<f32>; 3] {
    let [mut mean, mut rstd, mut out] = [n, n, n * c].map(|len| vec![0.0; len]);
    cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, x, w, b, n, c, EPS);
    [mean, rstd, out]
}

/// `[mean, rstd, out]` of `layernorm_forward[_bf16]`.
fn forward_on<R: Runtime>(
    dev: &Dev<R>,
    dtype: DType,
    [x, w, b]: [u64; 3],
    n: usize,
    c: usize,
) -> [Buf<R>; 3] {
    let [mean, rstd, y] = [dev.f32_out(n), dev.f32_out(n), out(dev, dtype, n * c)];
    let f = match dtype {
        DType::F32 => k::layernorm_forward::launch,
        DType::Bf16 => k::layernorm_forward_bf16::launch,
    };
    let (nc, cc) = (int(n), int(c));
    unsafe { f(&dev.rt, y.addr, mean.addr, rstd.addr, x, w, b, nc, cc, EPS).unwrap() };
    [mean, rstd, y]
}

on_every_runtime!(forward, fused_residual_forward, backward);

fn forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (xb, x) = acts(dev, dtype, &dev.normal(n * c, 2.0, 0.5));
            let (w, b) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let (wb, bb) = (dev.f32s(&w), dev.f32s(&b));
            let got = forward_on(dev, dtype, [xb.addr, wb.addr, bb.addr], n, c);
            let want = cpu_forward(&x, &w, &b, n, c);
            let what = format!("layernorm_forward {dtype:?} n={n} c={c}");
            for (i, name) in ["mean", "rstd", "out"].iter().enumerate() {
                let d = if i == 2 { dtype } else { DType::F32 };
                check(dev, d, &format!("{what} {name}"), &got[i], &want[i]);
            }
            let xm = misaligned(dev, dtype, &x);
            let scalar = forward_on(dev, dtype, [xm.addr, wb.addr, bb.addr], n, c);
            for (i, name) in ["mean", "rstd", "out"].iter().enumerate() {
                let d = if i == 2 { dtype } else { DType::F32 };
                let tag = format!("{what} misaligned {name}");
                same(dev, d, &tag, &scalar[i], &got[i]);
            }
        }
    }
}

/// Against the CPU's add then layernorm of the residual as stored; then bit for bit against
/// the device's `add[_bf16]` then `layernorm_forward[_bf16]`, and in place (`residual_out = a`).
fn fused_residual_forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (ab, a) = acts(dev, dtype, &dev.normal(n * c, 1.0, 0.3));
            let am = misaligned(dev, dtype, &a);
            let (bb, b) = acts(dev, dtype, &dev.normal(n * c, 1.5, -0.1));
            let (w, bias) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let (wb, biasb) = (dev.f32s(&w), dev.f32s(&bias));
            // [residual, mean, rstd, out] of the fused kernel.
            let fused = |res: Buf<R>, a: u64| {
                let [mean, rstd, y] = [dev.f32_out(n), dev.f32_out(n), out(dev, dtype, n * c)];
                let f = match dtype {
                    DType::F32 => k::fused_residual_layernorm_forward::launch,
                    DType::Bf16 => k::fused_residual_layernorm_forward_bf16::launch,
                };
                let [r, o, m, s] = [&res, &y, &mean, &rstd].map(|b| b.addr);
                let (b, w, bias, nc, cc) = (bb.addr, wb.addr, biasb.addr, int(n), int(c));
                unsafe { f(&dev.rt, r, o, m, s, a, b, w, bias, nc, cc, EPS).unwrap() };
                [res, mean, rstd, y]
            };
            let got = fused(out(dev, dtype, n * c), ab.addr);

            let mut sum = vec![0.0; n * c];
            cpu::add(&mut sum, &a, &b);
            // The residual as stored: bf16 storage rounds the f32 sum once.
            let (sum_bits, stored): (Vec<u32>, _) = match dtype {
                DType::F32 => (sum.iter().map(|v| v.to_bits()).collect(), sum),
                DType::Bf16 => (sum.iter().map(|&v| bf16(v) as u32).collect(), rounded(&sum)),
            };
            let want = cpu_forward(&stored, &w, &bias, n, c);
            let what = format!("fused_residual_layernorm_forward {dtype:?} n={n} c={c}");
            let residual = bits(dev, dtype, &got[0], &what);
            dev.same_bits(&format!("{what} residual"), &residual, &sum_bits);
            for (i, name) in ["mean", "rstd", "out"].iter().enumerate() {
                let d = if i == 2 { dtype } else { DType::F32 };
                check(dev, d, &format!("{what} {name}"), &got[i + 1], &want[i]);
            }

            let added = out(dev, dtype, n * c);
            let (y, a, b, len) = (added.addr, ab.addr, bb.addr, int(n * c));
            unsafe {
                match dtype {
                    DType::F32 => elementwise::add::launch(&dev.rt, y, a, b, len),
                    DType::Bf16 => elementwise::add_bf16::launch(&dev.rt, y, a, b, len),
                }
                .unwrap()
            };
            let [mean, rstd, y] = forward_on(dev, dtype, [added.addr, wb.addr, biasb.addr], n, c);
            let unfused = [added, mean, rstd, y];
            let scalar = fused(out(dev, dtype, n * c), am.addr);
            let a_addr = ab.addr;
            let in_place = fused(ab, a_addr);
            let names = ["residual", "mean", "rstd", "out"];
            let runs = [
                ("vs unfused", unfused),
                ("misaligned a", scalar),
                ("in place", in_place),
            ];
            for (how, again) in runs {
                for (i, name) in names.iter().enumerate() {
                    let d = if i % 3 == 0 { dtype } else { DType::F32 };
                    same(dev, d, &format!("{what} {how} {name}"), &again[i], &got[i]);
                }
            }
        }
    }
}

/// The one-kernel backward against the CPU (dweight/dbias written over poisoned outputs); a
/// launch on misaligned `dout` and `x` gives the same bits; a third, in place (`dx = dout`) on
/// the scratch and counter the others left, the same bits again (deterministic whichever block
/// finishes last, `dx` may alias `dout`, and the counter was reset: otherwise no block of a
/// later launch would be the last and dweight would stay poisoned); the counter is 0 after
/// each launch.
fn backward<R: Runtime>(dev: &Dev<R>) {
    for dtype in DTYPES {
        for (n, c) in shapes(dev) {
            let (xb, x) = acts(dev, dtype, &dev.normal(n * c, 2.0, 0.5));
            let (doutb, dout) = acts(dev, dtype, &dev.normal(n * c, 1.0, 0.1));
            let (w, b) = (dev.normal(c, 1.0, 1.0), dev.normal(c, 1.0, 0.0));
            let [mean, rstd, _] = cpu_forward(&x, &w, &b, n, c);
            let [wb, mb, rb] = [&w, &mean, &rstd].map(|v| dev.f32s(v));
            let (_mem, scratch) = dev.scratch(backward_scratch_bytes(n, c));
            let counter = dev.i32s(&[0]);
            let what = format!("layernorm backward {dtype:?} n={n} c={c}");
            // [dweight, dbias] of a launch reading `dout` and `x` (writing `dx`).
            let run = |dx: &Buf<R>, [dout, x]: [&Buf<R>; 2], tag: &str| {
                let [dw, db] = [dev.f32_out(c), dev.f32_out(c)];
                let outs = [dx, &dw, &db].map(|b| b.addr);
                let ins = [dout, x, &wb, &mb, &rb].map(|b| b.addr);
                unsafe {
                    k::backward(&dev.rt, dtype, outs, ins, n, c, scratch, counter.addr).unwrap()
                };
                let left = dev.read_f32(&counter, tag)[0].to_bits();
                dev.same_bits(&format!("{tag} counter left"), &[left], &[0]);
                [dw, db]
            };
            let dx = out(dev, dtype, n * c);
            let [dw, db] = run(&dx, [&doutb, &xb], &what);
            let [mut gx, mut gw, mut gb] = [n * c, c, c].map(|len| vec![0.0; len]);
            cpu::layernorm_backward(&mut gx, &mut gw, &mut gb, &dout, &x, &w, &mean, &rstd, n, c);
            check(dev, dtype, &format!("{what} dx"), &dx, &gx);
            check(dev, DType::F32, &format!("{what} dweight"), &dw, &gw);
            check(dev, DType::F32, &format!("{what} dbias"), &db, &gb);

            // dout and x misaligned: the element-by-element path, the same bits.
            let [doutm, xm] = [&dout, &x].map(|v| misaligned(dev, dtype, v));
            let dxm = out(dev, dtype, n * c);
            let tag = format!("{what} misaligned");
            let [dwm, dbm] = run(&dxm, [&doutm, &xm], &tag);
            same(dev, dtype, &format!("{tag} dx"), &dxm, &dx);
            same(dev, DType::F32, &format!("{tag} dweight"), &dwm, &dw);
            same(dev, DType::F32, &format!("{tag} dbias"), &dbm, &db);

            let tag = format!("{what} launch in place");
            let [dw2, db2] = run(&doutb, [&doutb, &xb], &tag);
            same(dev, dtype, &format!("{tag} dx"), &doutb, &dx);
            same(dev, DType::F32, &format!("{tag} dweight"), &dw2, &dw);
            same(dev, DType::F32, &format!("{tag} dbias"), &db2, &db);
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
