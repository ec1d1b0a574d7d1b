//! `kernels/matmul_wgmma.cu`, the Hopper matmul (wgmma + TMA, persistent grid), through its
//! sequence `matmul_tma`, for every transpose (K-major and MN-major operands), on sizes that are
//! not multiples of the 128×128×64 tile (the operands' stored rows a multiple of 8 elements, as
//! TMA requires), with enough tiles that the emulation's 3 multiprocessors each take several, k
//! long enough to wrap the 4-stage ring, with and without bias and GELU, outputs aligned or not;
//! compared with f64 like `matmul.rs` (1e-4 on the same bf16 inputs, GELU against the CPU's of
//! the kernel's own pre-activation), the bf16-output kernel bit for bit against the f32 one
//! rounded, and the backend's `matmul` sequence bit for bit against the kernel. On a GPU it runs
//! where the GPU is a Hopper (`Arch::Hopper`), with GPT-2 124M's products at B·T = 8192.

use smelt::backend::device::{Arch, Runtime};
use smelt::backend::kernels::matmul::{self as mm};
use smelt::backend::kernels::matmul_wgmma as k;
use smelt::backend::DType;

use crate::harness::{on_every_runtime, rounded, Dev};
use crate::matmul::{
    bits, check_f32_outputs, gpt2_cases, rows_of, rows_to_check, run, Case, Inputs, Outputs,
};

const TOL_SAME_INPUTS: f64 = 1e-4;

/// The small cases over every transpose the kernel takes at these sizes, then GPT-2 124M's
/// products as training runs them (`matmul::gpt2_cases`, GPU only).
fn cases<R: Runtime>(dev: &Dev<R>) -> Vec<Case> {
    let sizes = [
        (1, 8, 1),
        (5, 24, 3),
        (8, 8, 8),
        (136, 72, 88),
        (128, 64, 128),
        (264, 200, 136),
        (320, 520, 264),
    ];
    let placements = [
        (false, true, true, None),
        (true, true, true, Some(true)),
        (true, true, false, Some(false)),
    ];
    let mut small = Vec::new();
    for &(m, kk, n) in &sizes {
        for (ta, tb) in [(false, true), (false, false), (true, false), (true, true)] {
            let c = Case::new(m, kk, n, ta, tb);
            // Aligned operands: whether the sizes suit TMA (on any Hopper runtime).
            if !k::supports(&dev.rt, &c.s, 256, 512) {
                continue;
            }
            small.extend(placements.iter().map(|&p| c.placed(p)));
        }
    }
    dev.cases(&small, &gpt2_cases())
}

/// Whether the device runs the kernel (a Hopper GPU, or the emulation).
fn hopper<R: Runtime>(dev: &Dev<R>) -> bool {
    if dev.rt.arch() != Arch::Hopper {
        eprintln!("skipped on {}: not a Hopper GPU", dev.rt.name());
        return false;
    }
    true
}

fn run_wgmma<R: Runtime>(dev: &Dev<R>, c: &Case, x: &Inputs, out_type: DType) -> Outputs {
    run_split(
        dev,
        c,
        x,
        out_type,
        k::splits(&c.s, dev.rt.multiprocessors()),
    )
}

/// A case through `matmul_tma` with `splits` parts of k.
fn run_split<R: Runtime>(
    dev: &Dev<R>,
    c: &Case,
    x: &Inputs,
    out_type: DType,
    splits: usize,
) -> Outputs {
    let (_keep, scratch) = dev.scratch(k::scratch_bytes(&c.s, splits));
    run(
        dev,
        c,
        x,
        (DType::Bf16, out_type),
        |out, gelu, a, b, bias| {
            assert!(k::supports(&dev.rt, &c.s, a, b), "{c:?} must be supported");
            unsafe {
                k::matmul_tma(
                    &dev.rt, out, out_type, gelu, a, b, bias, &c.s, splits, scratch,
                )
            }
            .unwrap()
        },
    )
}

on_every_runtime!(
    split_k,
    matmul_wgmma_bf16,
    matmul_wgmma_bf16_to_bf16,
    the_sequence_takes_it,
    supports
);

fn matmul_wgmma_bf16<R: Runtime>(dev: &Dev<R>) {
    if !hopper(dev) {
        return;
    }
    for c in cases(dev) {
        let x = Inputs::new(dev, &c);
        let outputs = run_wgmma(dev, &c, &x, DType::F32);
        check_f32_outputs(dev, &c, &x, outputs, "matmul_wgmma_bf16");
    }
}

fn matmul_wgmma_bf16_to_bf16<R: Runtime>(dev: &Dev<R>) {
    if !hopper(dev) {
        return;
    }
    for c in cases(dev) {
        let x = Inputs::new(dev, &c);
        let (out, gelu) = run_wgmma(dev, &c, &x, DType::Bf16);
        let (out32, gelu32) = run_wgmma(dev, &c, &x, DType::F32);
        let what = c.what("matmul_wgmma_bf16_to_bf16");
        dev.same_bits(
            &format!("{what} vs f32 rounded"),
            &bits(&out),
            &bits(&rounded(&out32)),
        );
        if let (Some(g), Some(g32)) = (gelu, gelu32) {
            dev.same_bits(
                &format!("{what} gelu_out"),
                &bits(&g),
                &bits(&rounded(&g32)),
            );
        }
    }
}

/// The backend's `matmul` sequence sends supported products here: bit for bit the kernel's
/// outputs, from f32 or bf16 operands.
fn the_sequence_takes_it<R: Runtime>(dev: &Dev<R>) {
    if !hopper(dev) {
        return;
    }
    for (ta, tb) in [(false, true), (false, false), (true, false)] {
        let c = Case::new(152, 136, 144, ta, tb).placed((true, true, true, Some(true)));
        sequence_case(dev, &c);
    }
}

fn sequence_case<R: Runtime>(dev: &Dev<R>, c: &Case) {
    let c = *c;
    let x = Inputs::new(dev, &c);
    for out_type in [DType::F32, DType::Bf16] {
        let direct = run_wgmma(dev, &c, &x, out_type);
        for a_type in [DType::F32, DType::Bf16] {
            let bytes = mm::matmul_scratch_bytes(&dev.rt, &c.s, a_type, DType::Bf16);
            let (_keep, scratch) = dev.scratch(bytes);
            let a = crate::matmul::input(dev, &c, &x.a, a_type);
            let b = crate::matmul::input(dev, &c, &x.b, DType::Bf16);
            let got = run(
                dev,
                &c,
                &x,
                (DType::Bf16, out_type),
                |out, gelu, _, _, bias| unsafe {
                    let (a, b) = ((a.addr, a_type), (b.addr, DType::Bf16));
                    mm::matmul(&dev.rt, out, out_type, gelu, a, b, bias, c.s, scratch).unwrap()
                },
            );
            let what = format!("matmul {a_type:?} → {out_type:?} {c:?}");
            dev.same_bits(&what, &bits(&got.0), &bits(&direct.0));
            dev.same_bits(
                &what,
                &bits(&got.1.unwrap()),
                &bits(direct.1.as_ref().unwrap()),
            );
        }
    }
}

/// What the kernel takes: Hopper, a non-empty product, each operand's stored rows a multiple
/// of 8 elements (k for `a` plain and `b` transposed, m for `a` transposed, n for `b` plain),
/// 16-byte aligned operands.
fn supports<R: Runtime>(dev: &Dev<R>) {
    let hopper = dev.rt.arch() == Arch::Hopper;
    for (ta, tb) in [(false, true), (false, false), (true, false), (true, true)] {
        let s = Case::new(64, 64, 64, ta, tb).s;
        assert_eq!(k::supports(&dev.rt, &s, 256, 512), hopper, "{s:?}");
    }
    for (s, a, b) in [
        (Case::new(64, 60, 64, false, true).s, 256, 512),
        (Case::new(64, 64, 60, false, false).s, 256, 512),
        (Case::new(60, 64, 64, true, false).s, 256, 512),
        (Case::new(64, 0, 64, false, true).s, 256, 512),
        (Case::new(64, 64, 64, false, true).s, 258, 512),
        (Case::new(64, 64, 64, false, true).s, 256, 520),
    ] {
        assert!(!k::supports(&dev.rt, &s, a, b), "{s:?} at {a:#x}, {b:#x}");
    }
}

/// Split-K: the product split into 1, 2, 5 and 16 parts of its 16 k tiles (the partial sums,
/// then the ordered reduction with bias and GELU) within 1e-4 of f64 on the same bf16 inputs,
/// run twice bit for bit (deterministic), and the bf16 reduction the f32 one rounded; and the
/// rule that picks the split count.
fn split_k<R: Runtime>(dev: &Dev<R>) {
    let weight_grad = Case::new(768, 8192, 768, true, false).s;
    assert_eq!(k::splits(&weight_grad, 132), 4, "36 tiles on 132 SMs");
    assert_eq!(
        k::splits(&Case::new(8192, 768, 2304, false, true).s, 132),
        1
    );
    assert_eq!(
        k::splits(&Case::new(128, 200, 128, true, false).s, 132),
        1,
        "4 k tiles"
    );
    if !hopper(dev) {
        return;
    }
    for (ta, tb) in [(true, false), (false, true)] {
        let c = Case::new(136, 1000, 88, ta, tb).placed((true, true, true, Some(true)));
        let x = Inputs::new(dev, &c);
        let rows = rows_to_check(dev, c.s.m);
        let r = x.rounded().product(&c.s, &rows);
        for splits in [1, 2, 5, 16] {
            let what = format!("{} splits={splits}", c.what("matmul_tma"));
            let (out, gelu) = run_split(dev, &c, &x, DType::F32, splits);
            r.check(dev, &what, &rows_of(&out, &rows, c.s.n), TOL_SAME_INPUTS);
            let gelu = gelu.expect("the case has the GELU epilogue");
            let gelu = rows_of(&gelu, &rows, c.s.n);
            r.gelu()
                .check(dev, &format!("{what} gelu_out"), &gelu, TOL_SAME_INPUTS);
            let (again, _) = run_split(dev, &c, &x, DType::F32, splits);
            dev.same_bits(&format!("{what} twice"), &bits(&again), &bits(&out));
            let (out16, _) = run_split(dev, &c, &x, DType::Bf16, splits);
            dev.same_bits(
                &format!("{what} bf16"),
                &bits(&out16),
                &bits(&rounded(&out)),
            );
        }
    }
}
