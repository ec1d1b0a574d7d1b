//! `kernels/matmul_f32.cu` (the f32 SIMT matmul) against f64, to 1e-5 relative to
//! |op(a)|·|op(b)| + |bias| (see `matmul`), `gelu_out` against the f64 GELU of the f64 product:
//! single elements, partial tiles everywhere, k not a multiple of 16, one exact tile, several k
//! tiles, n % 4 == 0 (float4 stores) with partial edge tiles; all four transposes, with and
//! without bias and GELU, outputs 16-byte aligned or not; GPT-2's matmuls (GPU only); k = 0
//! and empty outputs.

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::int;
use smelt::backend::kernels::matmul_f32 as k;
use smelt::backend::{DType, MatmulShape};

use crate::harness::{on_every_runtime, Dev, TOL_F32};
use crate::matmul::{
    bits, cases, check_scaled, rows_of, rows_to_check, run, Case, Inputs, Outputs,
};

on_every_runtime!(matmul_f32, empty);

fn launch<R: Runtime>(dev: &Dev<R>, c: &Case, x: &Inputs) -> Outputs {
    let s: MatmulShape = c.s;
    let f32s = (DType::F32, DType::F32);
    run(dev, c, x, f32s, |out, gelu, a, b, bias| unsafe {
        k::matmul_f32::launch(
            &dev.rt,
            out,
            gelu,
            a,
            b,
            bias,
            int(s.m),
            int(s.k),
            int(s.n),
            i32::from(s.trans_a),
            i32::from(s.trans_b),
        )
        .unwrap()
    })
}

fn matmul_f32<R: Runtime>(dev: &Dev<R>) {
    let sizes = [
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
    let misaligned = [(37, 19, 53), (128, 64, 96), (100, 33, 68)];
    for c in cases(dev, &sizes, &misaligned, &sizes) {
        let x = Inputs::new(dev, &c);
        let (out, gelu) = launch(dev, &c, &x);
        let rows = rows_to_check(dev, c.s.m);
        let (want, scale) = x.product(&c.s, &rows);
        let what = c.what("matmul_f32");
        check_scaled(
            dev,
            &what,
            &rows_of(&out, &rows, c.s.n),
            &want,
            &scale,
            TOL_F32,
        );
        if let Some(gelu) = gelu {
            // |gelu'| < 1.13: the matmul's error carries over.
            let mut want_gelu = vec![0.0f64; want.len()];
            cpu::gelu_forward(&mut want_gelu, &want);
            let got = rows_of(&gelu, &rows, c.s.n);
            check_scaled(
                dev,
                &format!("{what} gelu_out"),
                &got,
                &want_gelu,
                &scale,
                TOL_F32,
            );
        }
    }
}

/// k = 0: the output is the bias, or 0 and gelu(0) = 0 without one; an empty output (m or
/// n = 0) writes nothing (the buffers' guard zones).
fn empty<R: Runtime>(dev: &Dev<R>) {
    let bias = vec![1.5f32, -2.0, 0.25];
    let x = Inputs {
        a: vec![],
        b: vec![],
        bias: Some(bias.clone()),
    };
    let (out, _) = launch(
        dev,
        &Case {
            bias: true,
            ..case(2, 0, 3)
        },
        &x,
    );
    dev.same_bits(
        "matmul_f32 k=0",
        &bits(&out),
        &bits(&[&bias[..], &bias[..]].concat()),
    );
    let x = Inputs { bias: None, ..x };
    let c = Case {
        gelu: Some(true),
        ..case(2, 0, 3)
    };
    let (out, gelu) = launch(
        dev,
        &Case {
            s: MatmulShape {
                trans_a: true,
                trans_b: true,
                ..c.s
            },
            ..c
        },
        &x,
    );
    dev.same_bits("matmul_f32 k=0 no bias", &bits(&out), &bits(&[0.0; 6]));
    dev.same_bits(
        "matmul_f32 k=0 gelu_out",
        &bits(&gelu.unwrap()),
        &bits(&[0.0; 6]),
    );
    for (m, n) in [(0, 3), (4, 0)] {
        let x = Inputs {
            a: vec![0.5; m * 5],
            b: vec![0.5; 5 * n],
            bias: None,
        };
        let (out, gelu) = launch(
            dev,
            &Case {
                gelu: Some(true),
                ..case(m, 5, n)
            },
            &x,
        );
        assert!(out.is_empty() && gelu.unwrap().is_empty());
    }
}

fn case(m: usize, k: usize, n: usize) -> Case {
    Case::new(m, k, n, false, false)
}
