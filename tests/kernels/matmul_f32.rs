//! `kernels/matmul_f32.cu` (the f32 SIMT matmul) against f64, to 1e-5 relative to
//! |op(a)|·|op(b)| + |bias| (see `matmul`), `gelu_out` against the f64 GELU of the f64 product:
//! single elements, partial tiles everywhere, k not a multiple of 16, one exact tile, several k
//! tiles, n % 4 == 0 (float4 stores) with partial edge tiles; all four transposes, with and
//! without bias and GELU, outputs 16-byte aligned or not; GPT-2's matmuls (GPU only); k = 0
//! and empty outputs.

use smelt::backend::device::Runtime;
use smelt::backend::kernels::int;
use smelt::backend::kernels::matmul_f32 as k;
use smelt::backend::{DType, MatmulShape};

use crate::harness::{on_every_runtime, Dev, TOL_F32};
use crate::matmul::{cases, check_empty, rows_of, rows_to_check, run, Case, Inputs, Outputs};

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
        (600, 20, 10), // compared on sampled rows, as GPT-2's sizes are
    ];
    let misaligned = [(37, 19, 53), (128, 64, 96), (100, 33, 68)];
    for c in cases(dev, &sizes, &misaligned, &sizes) {
        let x = Inputs::new(dev, &c);
        let (out, gelu) = launch(dev, &c, &x);
        let rows = rows_to_check(dev, c.s.m);
        let r = x.product(&c.s, &rows);
        let what = c.what("matmul_f32");
        r.check(dev, &what, &rows_of(&out, &rows, c.s.n), TOL_F32);
        if let Some(gelu) = gelu {
            let got = rows_of(&gelu, &rows, c.s.n);
            r.gelu()
                .check(dev, &format!("{what} gelu_out"), &got, TOL_F32);
        }
    }
}

fn empty<R: Runtime>(dev: &Dev<R>) {
    check_empty(dev, "matmul_f32", &|v| v.to_vec(), &|c, x| {
        launch(dev, c, x)
    });
}
