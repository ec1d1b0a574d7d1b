//! The CPU backend: f32, multithreaded with rayon, matmul through the `gemm` crate.
//! It is the reference every other backend is checked against. The kernels themselves
//! live in [`kernels`], generic over the float type so tests can run them in f64.

pub mod kernels;

use super::{AdamWGroup, AdamWStep, AttentionShape, Backend, DType, MatmulShape, View};
use crate::error::Result;
use crate::memory;

/// The reference backend. Its arena is one `Vec<f32>`.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

/// Borrows the output views mutably and the input views immutably from one arena.
///
/// The planner guarantees that an op's outputs overlap neither each other nor its inputs;
/// this checks that guarantee (a violation is a bug in the planner, hence the panic), which
/// is what makes the aliasing below sound.
fn split<const O: usize, const I: usize>(
    mem: &mut [f32],
    outs: [View; O],
    ins: [View; I],
) -> ([&mut [f32]; O], [&[f32]; I]) {
    for v in outs.iter().chain(ins.iter()) {
        assert_eq!(v.dtype, DType::F32, "the CPU backend computes in f32 only");
    }
    for (i, o) in outs.iter().enumerate() {
        assert!(o.end() <= mem.len(), "view {o:?} outside the arena");
        for other in outs.iter().skip(i + 1).chain(ins.iter()) {
            assert!(!o.overlaps(other), "output {o:?} overlaps {other:?}");
        }
    }
    for v in &ins {
        assert!(v.end() <= mem.len(), "view {v:?} outside the arena");
    }
    let base = mem.as_mut_ptr();
    // SAFETY: every view lies inside `mem` (checked above) and no output overlaps any other
    // view, so the mutable slices are disjoint from each other and from the shared ones.
    // Shared input slices may overlap each other, which is fine for `&[f32]`.
    unsafe {
        (
            outs.map(|v| std::slice::from_raw_parts_mut(base.add(v.offset), v.len)),
            ins.map(|v| std::slice::from_raw_parts(base.add(v.offset) as *const f32, v.len)),
        )
    }
}

impl Backend for CpuBackend {
    type Arena = Vec<f32>;
    type Indices = Vec<u32>;
    /// The CPU runs kernels as they are called: nothing to record.
    type Captured = ();

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        memory::zeroed_vec(
            "the model's memory (parameters, gradients, optimizer state and activations for this batch)",
            len,
            "use a smaller model, batch size or sequence length",
        )
    }

    fn alloc_indices(&self, len: usize) -> Result<Vec<u32>> {
        memory::zeroed_vec(
            "the batch's token ids",
            len,
            "use a smaller batch size or sequence length",
        )
    }

    fn write_indices(&self, dst: &mut Vec<u32>, src: &[u32]) -> Result<()> {
        dst.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, arena: &mut Vec<f32>, dst: View, src: &[f32]) -> Result<()> {
        arena[dst.offset..dst.end()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, arena: &Vec<f32>, src: View, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(&arena[src.offset..src.end()]);
        Ok(())
    }

    fn convert(&self, arena: &mut Vec<f32>, out: View, x: View) {
        let ([out], [x]) = split(arena, [out], [x]);
        out.copy_from_slice(x);
    }

    fn fill(&self, arena: &mut Vec<f32>, dst: View, value: f32) {
        arena[dst.offset..dst.end()].fill(value);
    }

    fn embedding_forward(
        &self,
        arena: &mut Vec<f32>,
        out: View,
        tokens: &Vec<u32>,
        wte: View,
        wpe: View,
        b: usize,
        t: usize,
        c: usize,
    ) {
        let ([out], [wte, wpe]) = split(arena, [out], [wte, wpe]);
        kernels::embedding_forward(out, tokens, wte, wpe, b, t, c);
    }

    fn embedding_backward(
        &self,
        arena: &mut Vec<f32>,
        dwte: View,
        dwpe: View,
        dout: View,
        tokens: &Vec<u32>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        let ([dwte, dwpe], [dout]) = split(arena, [dwte, dwpe], [dout]);
        kernels::embedding_backward(dwte, dwpe, dout, tokens, b, t, c);
    }

    fn matmul(
        &self,
        arena: &mut Vec<f32>,
        out: View,
        a: View,
        b: View,
        bias: Option<View>,
        s: MatmulShape,
    ) {
        match bias {
            Some(bias) => {
                let ([out], [a, b, bias]) = split(arena, [out], [a, b, bias]);
                kernels::matmul(out, a, b, Some(bias), s.m, s.k, s.n, s.trans_a, s.trans_b);
            }
            None => {
                let ([out], [a, b]) = split(arena, [out], [a, b]);
                kernels::matmul(out, a, b, None, s.m, s.k, s.n, s.trans_a, s.trans_b);
            }
        }
    }

    fn sum_rows(&self, arena: &mut Vec<f32>, out: View, x: View, m: usize, n: usize) {
        let ([out], [x]) = split(arena, [out], [x]);
        kernels::sum_rows(out, x, m, n);
    }

    fn layernorm_forward(
        &self,
        arena: &mut Vec<f32>,
        out: View,
        mean: View,
        rstd: View,
        x: View,
        weight: View,
        bias: View,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let ([out, mean, rstd], [x, w, b]) = split(arena, [out, mean, rstd], [x, weight, bias]);
        kernels::layernorm_forward(out, mean, rstd, x, w, b, n, c, eps);
    }

    fn layernorm_backward(
        &self,
        arena: &mut Vec<f32>,
        dx: View,
        dweight: View,
        dbias: View,
        dout: View,
        x: View,
        weight: View,
        mean: View,
        rstd: View,
        n: usize,
        c: usize,
    ) {
        let ([dx, dw, db], [dout, x, w, mean, rstd]) =
            split(arena, [dx, dweight, dbias], [dout, x, weight, mean, rstd]);
        kernels::layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, n, c);
    }

    fn gelu_forward(&self, arena: &mut Vec<f32>, out: View, x: View) {
        let ([out], [x]) = split(arena, [out], [x]);
        kernels::gelu_forward(out, x);
    }

    fn gelu_backward(&self, arena: &mut Vec<f32>, dx: View, x: View, dout: View) {
        let ([dx], [x, dout]) = split(arena, [dx], [x, dout]);
        kernels::gelu_backward(dx, x, dout);
    }

    fn add(&self, arena: &mut Vec<f32>, out: View, a: View, b: View) {
        let ([out], [a, b]) = split(arena, [out], [a, b]);
        kernels::add(out, a, b);
    }

    fn add_into(&self, arena: &mut Vec<f32>, dst: View, src: View) {
        let ([dst], [src]) = split(arena, [dst], [src]);
        kernels::add_into(dst, src);
    }

    fn attention_forward(
        &self,
        arena: &mut Vec<f32>,
        out: View,
        lse: View,
        qkv: View,
        s: AttentionShape,
    ) {
        let ([out, lse], [qkv]) = split(arena, [out, lse], [qkv]);
        kernels::attention_forward(out, lse, qkv, s.b, s.t, s.c, s.n_head);
    }

    fn attention_backward(
        &self,
        arena: &mut Vec<f32>,
        dqkv: View,
        dout: View,
        qkv: View,
        out: View,
        lse: View,
        s: AttentionShape,
    ) {
        let ([dqkv], [dout, qkv, out, lse]) = split(arena, [dqkv], [dout, qkv, out, lse]);
        kernels::attention_backward(dqkv, dout, qkv, out, lse, s.b, s.t, s.c, s.n_head);
    }

    fn cross_entropy_forward(
        &self,
        arena: &mut Vec<f32>,
        loss: View,
        lse: View,
        logits: View,
        targets: &Vec<u32>,
        n: usize,
        v: usize,
        vp: usize,
    ) {
        let ([loss, lse], [logits]) = split(arena, [loss, lse], [logits]);
        kernels::cross_entropy_forward(loss, lse, logits, targets, n, v, vp);
    }

    fn cross_entropy_backward(
        &self,
        arena: &mut Vec<f32>,
        dlogits: View,
        logits: View,
        lse: View,
        targets: &Vec<u32>,
        dloss: f32,
        n: usize,
        v: usize,
        vp: usize,
    ) {
        let ([dlogits], [logits, lse]) = split(arena, [dlogits], [logits, lse]);
        kernels::cross_entropy_backward(dlogits, logits, lse, targets, dloss, n, v, vp);
    }

    fn sum_squares(&self, arena: &Vec<f32>, x: View) -> f64 {
        kernels::sum_squares(&arena[x.offset..x.end()])
    }

    fn adamw(&self, arena: &mut Vec<f32>, groups: &[AdamWGroup], step: &AdamWStep) {
        for g in groups {
            // The CPU backend keeps no bf16 working copies (its graphs are f32).
            debug_assert!(g.copy.is_none(), "the CPU backend has no working copies");
            let ([p, m, v], [grad]) = split(arena, [g.param, g.m, g.v], [g.grad]);
            kernels::adamw(
                p,
                grad,
                m,
                v,
                step.lr,
                step.beta1,
                step.beta2,
                step.eps,
                g.weight_decay,
                step.step,
                step.grad_scale,
            );
        }
    }

    fn end_capture(&self) -> Result<()> {
        Err(crate::error::Error::Device(
            "the CPU backend does not record kernel calls".into(),
        ))
    }

    fn replay(&self, _: &()) -> Result<()> {
        Err(crate::error::Error::Device(
            "the CPU backend does not record kernel calls".into(),
        ))
    }
}
