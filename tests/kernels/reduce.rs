//! `kernels/reduce.cu`: the column-sum sequence `sum_rows` (partials, then the final sum) on
//! f32 and bf16 inputs, to 1e-5 of the CPU on the same (bf16-rounded) inputs, and the same bits
//! on a second run with fresh scratch. Sizes: odd, one row or one column, no rows, a row chunk
//! count at its cap, and GPT-2's bias gradients (B·T = 8·1024 rows of C, 3C, 4C: GPU only).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::reduce::{self as k, MAX_CHUNKS};
use smelt::backend::DType;

use crate::harness::{bf16_pair, on_every_runtime, Dev, TOL_F32};

on_every_runtime!(sum_rows);

fn sum_rows<R: Runtime>(dev: &Dev<R>) {
    let small = [
        (1, 1),
        (0, 5),
        (3, 7),
        (65, 7),
        (4097, 3),
        (3, 33),
        (257, 33),
        (8192, 31),
        (70_001, 3), // more row chunks than MAX_CHUNKS: the chunks grow instead
        (37, 100),
        (100, 1000),
        (1000, 768),
        (4097, 2304),
        (1000, 3072),
        (1, 100_003),
    ];
    let large = [(8192, 768), (8192, 2304), (8192, 3072)];
    for (m, n) in dev.cases(&small, &large) {
        for dtype in [DType::F32, DType::Bf16] {
            let x = dev.normal(m * n, 1.0, 0.3);
            let (xb, x) = match dtype {
                DType::F32 => (dev.f32s(&x), x),
                DType::Bf16 => {
                    let (bits, wide) = bf16_pair(&x);
                    (dev.bf16s(&bits), wide)
                }
            };
            // In f64: the f32 reference's own rounding, summing 70001 rows in order, is ~1e-5.
            let mut want = vec![0.0f64; n];
            let x: Vec<f64> = x.iter().map(|&v| v.into()).collect();
            cpu::sum_rows(&mut want, &x, m, n);
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            let what = format!("sum_rows {dtype:?} m={m} n={n}");
            let mut first: Option<Vec<f32>> = None;
            for _run in 0..2 {
                let (scratch_buf, scratch) = dev.scratch_guarded(k::sum_rows_scratch_bytes(m, n));
                let out = dev.f32_out(n);
                unsafe { k::sum_rows(&dev.rt, dtype, out.addr, xb.addr, m, n, scratch).unwrap() };
                let got = dev.read_f32(&out, &what);
                dev.read_f32(&scratch_buf, &format!("{what} scratch"));
                match &first {
                    None => {
                        dev.check(&what, &got, &want, TOL_F32);
                        first = Some(got);
                    }
                    Some(first) => {
                        dev.same_bits(&format!("{what} again"), &bits(&got), &bits(first))
                    }
                }
            }
        }
    }
}

/// The partial kernel's geometry: the block its shared array is sized for, a grid that covers
/// the columns, a row chunk count within its bounds, and scratch for every partial.
#[test]
fn sum_rows_geometry() {
    for (m, n) in [
        (1, 1),
        (0, 5),
        (8192, 31),
        (70_001, 3),
        (65536, 768),
        (8192, 3072),
    ] {
        let p = k::sum_rows_partial_launch(m, n);
        let chunks = p.grid.y as usize;
        let block = (p.block.x, p.block.y, p.block.z);
        assert_eq!(
            block,
            (32, 8, 1),
            "the kernel's lanes[8][32] (SUM_ROWS_LANES, _COLS)"
        );
        assert_eq!(p.grid.x as usize, n.div_ceil(32), "m={m} n={n}");
        assert!(
            (1..=MAX_CHUNKS).contains(&chunks),
            "m={m} n={n}: {chunks} chunks"
        );
        assert_eq!(chunks, k::sum_rows_chunks(m, n));
        assert!(
            k::sum_rows_scratch_bytes(m, n) >= 4 * chunks * n,
            "m={m} n={n}"
        );
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
