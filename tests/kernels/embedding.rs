//! `kernels/embedding.cu`, f32 and bf16 activations (f32 tables and gradients), all bit for
//! bit against the CPU reference: the forward is one f32 sum (rounded once to bf16), the
//! backward sums in the CPU's order. The backward sequence (`fill`, wte by token buckets, wpe)
//! overwrites every element of both gradients and gives the same bits twice; the wte kernel
//! alone skips padding buckets (token −1) and leaves rows of absent tokens as they were; `fill`
//! writes every element. Shapes: few tokens (many repeats) and many (absent ones), `c` of one,
//! odd, below and above a block; GPT-2's (B=8, T=1024, C=768, V=50304) on a GPU only.

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::device::Runtime;
use smelt::backend::kernels::embedding::{self as emb, bucket_table, token_buckets, Buckets};
use smelt::backend::kernels::{int, long};
use smelt::backend::DType;

use crate::harness::{bf16, on_every_runtime, Buf, Dev};

on_every_runtime!(forward, backward, backward_wte_padding, fill);

/// (b, t, c, vocab, max_t).
fn shapes<R: Runtime>(dev: &Dev<R>) -> Vec<(usize, usize, usize, usize, usize)> {
    dev.cases(
        &[
            (1, 1, 1, 1, 1),
            (1, 1, 1, 3, 1),
            (3, 5, 7, 11, 8),
            (3, 5, 33, 4, 5),
            (2, 7, 300, 4, 9),
            (4, 9, 64, 50, 11),
            (3, 5, 768, 11, 8),
            (4, 37, 100, 1000, 64),
            (2, 129, 300, 5000, 200),
            (1, 1024, 768, 300, 1024),
        ],
        &[(8, 1024, 768, 50304, 1024)],
    )
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// A batch of `b·t` ids below `vocab` on the device, and their bucket table.
fn batch<R: Runtime>(dev: &Dev<R>, b: usize, t: usize, vocab: usize) -> (Vec<u32>, Buf<R>, Buf<R>) {
    let ids = dev.ids(b * t, vocab);
    let (tokens, table) = (
        dev.i32s(bytemuck::cast_slice(&ids)),
        dev.i32s(&bucket_table(&ids, vocab)),
    );
    (ids, tokens, table)
}

fn forward<R: Runtime>(dev: &Dev<R>) {
    for dtype in [DType::F32, DType::Bf16] {
        for (b, t, c, vocab, max_t) in shapes(dev) {
            let (ids, tokens, _) = batch(dev, b, t, vocab);
            let (wte, wpe) = (
                dev.normal(vocab * c, 1.0, 0.0),
                dev.normal(max_t * c, 1.0, 0.0),
            );
            let (wte_b, wpe_b, out) =
                (dev.f32s(&wte), dev.f32s(&wpe), dev.out_as(b * t * c, dtype));
            let (tk, e, p, bi, ti, ci) =
                (tokens.addr, wte_b.addr, wpe_b.addr, int(b), int(t), int(c));
            unsafe {
                match dtype {
                    DType::F32 => {
                        emb::embedding_forward::launch(&dev.rt, out.addr, tk, e, p, bi, ti, ci)
                    }
                    DType::Bf16 => {
                        emb::embedding_forward_bf16::launch(&dev.rt, out.addr, tk, e, p, bi, ti, ci)
                    }
                }
                .unwrap()
            };
            let mut want = vec![0.0; b * t * c];
            cpu::embedding_forward(&mut want, &ids, &wte, &wpe, b, t, c);
            // One f32 sum, rounded once to bf16.
            let want: Vec<u32> = match dtype {
                DType::F32 => bits(&want),
                DType::Bf16 => want.iter().map(|&v| bf16(v).into()).collect(),
            };
            let what = format!("embedding_forward {dtype:?} b={b} t={t} c={c} vocab={vocab}");
            dev.same_bits(&what, &dev.read_as(&out, dtype, &what).1, &want);
        }
    }
}

fn backward<R: Runtime>(dev: &Dev<R>) {
    for dtype in [DType::F32, DType::Bf16] {
        for (b, t, c, vocab, max_t) in shapes(dev) {
            let (ids, _, table) = batch(dev, b, t, vocab);
            let buckets = Buckets {
                table: table.addr,
                slots: b * t,
            };
            let (dout, x) = dev.upload_as(&dev.normal(b * t * c, 1.0, 0.0), dtype);
            let what = format!("embedding backward {dtype:?} b={b} t={t} c={c} vocab={vocab}");
            // Outputs poisoned with NaN: every element must be written.
            let run = || {
                let (dwte, dwpe) = (dev.f32_out(vocab * c), dev.f32_out(max_t * c));
                let (w, p, d) = (dwte.addr, dwpe.addr, dout.addr);
                unsafe {
                    emb::backward(&dev.rt, w, vocab, p, max_t, d, dtype, buckets, b, t, c).unwrap()
                };
                (
                    bits(&dev.read_f32(&dwte, &what)),
                    bits(&dev.read_f32(&dwpe, &what)),
                )
            };
            let (dwte, dwpe) = run();
            let (mut want_wte, mut want_wpe) = (vec![0.0; vocab * c], vec![0.0; max_t * c]);
            cpu::embedding_backward(&mut want_wte, &mut want_wpe, &x, &ids, b, t, c);
            dev.same_bits(&format!("{what} dwte"), &dwte, &bits(&want_wte));
            dev.same_bits(&format!("{what} dwpe"), &dwpe, &bits(&want_wpe));
            let again = run();
            dev.same_bits(&format!("{what} dwte, second run"), &again.0, &dwte);
            dev.same_bits(&format!("{what} dwpe, second run"), &again.1, &dwpe);
        }
    }
}

/// The wte kernel alone over `b·t` buckets (the real ones, then padding with token −1) with
/// three tokens absent, on a `dwte` of `KEEP` between a guard row before and after: padding
/// writes nothing (row −1 is the guard row), absent rows keep their value.
fn backward_wte_padding<R: Runtime>(dev: &Dev<R>) {
    const KEEP: f32 = 7.25;
    for dtype in [DType::F32, DType::Bf16] {
        for (b, t, c, vocab, _) in shapes(dev) {
            let (ids, _, table) = batch(dev, b, t, vocab);
            let bk = Buckets {
                table: table.addr,
                slots: b * t,
            };
            let (dout, x) = dev.upload_as(&dev.normal(b * t * c, 1.0, 0.0), dtype);
            let vocab = vocab + 3;
            let big = dev.f32s(&vec![KEEP; (vocab + 2) * c]);
            let (dwte, d, nb, ci) = (big.addr + 4 * c as u64, dout.addr, int(b * t), int(c));
            let (o, tk, p) = (bk.offsets(), bk.tokens(), bk.positions());
            unsafe {
                match dtype {
                    DType::F32 => {
                        emb::embedding_backward_wte::launch(&dev.rt, dwte, d, o, tk, p, nb, ci)
                    }
                    DType::Bf16 => {
                        emb::embedding_backward_wte_bf16::launch(&dev.rt, dwte, d, o, tk, p, nb, ci)
                    }
                }
                .unwrap()
            };
            let (mut dwte, mut dwpe) = (vec![0.0; vocab * c], vec![0.0; t * c]);
            cpu::embedding_backward(&mut dwte, &mut dwpe, &x, &ids, b, t, c);
            let mut want = vec![KEEP; (vocab + 2) * c];
            for &tok in &ids {
                let row = tok as usize * c;
                want[row + c..][..c].copy_from_slice(&dwte[row..][..c]);
            }
            let what =
                format!("embedding_backward_wte {dtype:?} b={b} t={t} c={c} (padded buckets)");
            dev.same_bits(&what, &bits(&dev.read_f32(&big, &what)), &bits(&want));
        }
    }
}

fn fill<R: Runtime>(dev: &Dev<R>) {
    // One past a full grid: the grid-stride loop wraps.
    let full = emb::MAX_FILL_BLOCKS as usize * emb::BLOCK as usize;
    for n in dev.cases(&[0, 1, 255, 257, 100_003], &[full + 3]) {
        for aligned in [true, false] {
            let value = dev.normal(1, 10.0, 0.0)[0];
            let poison = vec![f32::NAN; n];
            let x = if aligned {
                dev.f32s(&poison)
            } else {
                dev.f32s_misaligned(&poison)
            };
            unsafe { emb::fill::launch(&dev.rt, x.addr, value, long(n)).unwrap() };
            let what = format!("fill n={n} aligned={aligned}");
            dev.same_bits(
                &what,
                &bits(&dev.read_f32(&x, &what)),
                &vec![value.to_bits(); n],
            );
        }
    }
}

/// The buckets of a batch, by hand: tokens 0, 1, 3 at positions {3}, {1, 4}, {0, 2, 5}; the
/// device table pads them to one bucket per position.
#[test]
fn token_buckets_group_positions_by_token_in_order() {
    let (offsets, tokens, positions) = token_buckets(&[3, 1, 3, 0, 1, 3], 4);
    assert_eq!(offsets, [0, 1, 3, 6]);
    assert_eq!(tokens, [0, 1, 3]);
    assert_eq!(positions, [3, 1, 4, 0, 2, 5]);
    let table = bucket_table(&[3, 1, 3, 0, 1, 3], 4);
    assert_eq!(table.len(), Buckets::table_len(6));
    assert_eq!(
        table,
        [
            [0, 1, 3, 6, 6, 6, 6].as_slice(),
            &[0, 1, 3, -1, -1, -1],
            &[3, 1, 4, 0, 2, 5]
        ]
        .concat()
    );
    let (offsets, tokens, positions) = token_buckets(&[], 4);
    assert_eq!((offsets, tokens, positions), (vec![0], vec![], vec![]));
    assert_eq!(bucket_table(&[], 4), [0]);
}
