//! `kernels/cross_entropy.cu`, f32 and bf16 logits (bf16: against the f32 CPU kernels on the
//! same bf16 values). The forward sequence (per-row kernel + `mean_reduce`): loss, lse and the
//! per-row losses to 1e-5; the backward to 1e-5 (bf16 dlogits: 1e-2 against the CPU rounded
//! to bf16), its padded columns exactly 0, and in place (over the logits) the same bits as out
//! of place. Padded logit columns hold NaN, which the kernels must not read. Shapes: one
//! column, padded and unpadded rows, rows shorter and longer than a block, GPT-2's vocabulary
//! (50257 padded to 50304; 4096 rows of it on a GPU only).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::cross_entropy as ce;
use smelt::backend::kernels::{int, Scratch};
use smelt::backend::DType;

use crate::harness::{on_every_runtime, rounded, Buf, Dev, TOL_BF16, TOL_F32};

on_every_runtime!(forward, mean_reduce, backward);

/// (n, v, vp).
fn shapes<R: Runtime>(dev: &Dev<R>) -> Vec<(usize, usize, usize)> {
    dev.cases(
        &[
            (1, 1, 1),
            (2, 1, 1),
            (5, 11, 64),
            (3, 64, 64),
            (3, 10, 16),
            (33, 50, 64),
            (2, 257, 320),
            (37, 300, 301),
            (300, 1000, 1024),
            (5, 50257, 50304),
        ],
        &[(4 * 1024, 50257, 50304)],
    )
}

/// Logits `(n, vp)` as `dtype` with NaN in the padded columns, their f32 values, and targets
/// below `v` on the device.
fn inputs<R: Runtime>(
    dev: &Dev<R>,
    (n, v, vp): (usize, usize, usize),
    dtype: DType,
) -> (Buf<R>, Vec<f32>, Buf<R>, Vec<u32>) {
    let mut x = dev.normal(n * vp, 3.0, 0.0);
    for row in x.chunks_exact_mut(vp) {
        row[v..].fill(f32::NAN);
    }
    let (logits, x) = dev.upload_as(&x, dtype);
    let targets = dev.ids(n, v);
    (logits, x, dev.i32s(bytemuck::cast_slice(&targets)), targets)
}

fn forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in [DType::F32, DType::Bf16] {
        for (n, v, vp) in shapes(dev) {
            let (logits, x, targets, ids) = inputs(dev, (n, v, vp), dtype);
            let (loss, lse) = (dev.f32_out(1), dev.f32_out(n));
            // Scratch in a guarded buffer: the sequence stays inside what it asked for.
            let bytes = ce::forward_scratch_bytes(n);
            let scratch = dev.f32_out(bytes / 4);
            let s = Scratch {
                addr: scratch.addr,
                bytes,
            };
            let (l, t) = (logits.addr, targets.addr);
            let losses =
                unsafe { ce::forward(&dev.rt, loss.addr, lse.addr, l, dtype, t, n, v, vp, s) };
            assert_eq!(
                losses.unwrap(),
                scratch.addr,
                "the losses are the first region"
            );
            let (mut want_loss, mut want_lse) = (vec![0.0; 1], vec![0.0; n]);
            cpu::cross_entropy_forward(&mut want_loss, &mut want_lse, &x, &ids, n, v, vp);
            let want_losses: Vec<f32> = (0..n)
                .map(|i| want_lse[i] - x[i * vp + ids[i] as usize])
                .collect();
            let what = format!("cross_entropy forward {dtype:?} n={n} v={v} vp={vp}");
            for (name, got, want) in [
                ("loss", dev.read_f32(&loss, &what), want_loss),
                ("lse", dev.read_f32(&lse, &what), want_lse),
                (
                    "losses",
                    dev.read_f32(&scratch, &what)[..n].to_vec(),
                    want_losses,
                ),
            ] {
                dev.check(&format!("{what} {name}"), &got, &want, TOL_F32);
            }
        }
    }
}

fn mean_reduce<R: Runtime>(dev: &Dev<R>) {
    for n in dev.cases(&[1, 37, 255, 1000, 5003], &[4 * 1024, 1 << 20]) {
        let x = dev.normal(n, 3.0, 1.0);
        let (xb, out) = (dev.f32s(&x), dev.f32_out(1));
        unsafe { ce::mean_reduce::launch(&dev.rt, out.addr, xb.addr, int(n)).unwrap() };
        let want = (x.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
        let what = format!("mean_reduce n={n}");
        dev.check(&what, &dev.read_f32(&out, &what), &[want], TOL_F32);
    }
}

fn backward<R: Runtime>(dev: &Dev<R>) {
    for dtype in [DType::F32, DType::Bf16] {
        for (n, v, vp) in shapes(dev) {
            let (logits, x, targets, ids) = inputs(dev, (n, v, vp), dtype);
            let dloss = 0.5 + dev.normal(1, 1.0, 0.0)[0].abs();
            let (mut loss, mut lse) = (vec![0.0; 1], vec![0.0; n]);
            cpu::cross_entropy_forward(&mut loss, &mut lse, &x, &ids, n, v, vp);
            let mut want = vec![0.0; n * vp];
            cpu::cross_entropy_backward(&mut want, &x, &lse, &ids, dloss, n, v, vp);
            let lse = dev.f32s(&lse);
            let dlogits = dev.out_as(n * vp, dtype);
            let (n_, v_, vp_) = (int(n), int(v), int(vp));
            let launch = |out: u64| unsafe {
                let (l, t) = (logits.addr, targets.addr);
                match dtype {
                    DType::F32 => ce::cross_entropy_backward::launch(
                        &dev.rt, out, l, lse.addr, t, dloss, n_, v_, vp_,
                    ),
                    DType::Bf16 => ce::cross_entropy_backward_bf16::launch(
                        &dev.rt, out, l, lse.addr, t, dloss, n_, v_, vp_,
                    ),
                }
                .unwrap()
            };
            launch(dlogits.addr);
            let what = format!("cross_entropy_backward {dtype:?} n={n} v={v} vp={vp}");
            let (got, bits) = dev.read_as(&dlogits, dtype, &what);
            match dtype {
                DType::F32 => dev.check(&what, &got, &want, TOL_F32),
                DType::Bf16 => dev.check(&what, &got, &rounded(&want), TOL_BF16),
            };
            let padding: Vec<u32> = bits.chunks(vp).flat_map(|row| row[v..].to_vec()).collect();
            dev.same_bits(
                &format!("{what} padding"),
                &padding,
                &vec![0; padding.len()],
            );
            // In place: over the logits themselves.
            launch(logits.addr);
            let (_, in_place) = dev.read_as(&logits, dtype, &what);
            dev.same_bits(&format!("{what} in place"), &in_place, &bits);
        }
    }
}
