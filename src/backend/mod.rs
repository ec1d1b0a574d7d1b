//! Compute backends. The graph executor speaks only to the [`Backend`] trait: it owns one
//! arena of f32 memory laid out by the planner, a few index buffers (token ids, targets),
//! and calls one method per kernel with [`View`]s into the arena. The CPU backend is the
//! reference; a CUDA backend implements the same trait with device pointers.

pub mod cpu;
pub mod cuda;
#[cfg(smelt_emulation)]
pub mod emu;

use crate::error::Result;

/// A contiguous range of f32 elements inside an arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct View {
    pub offset: usize,
    pub len: usize,
}

impl View {
    pub fn new(offset: usize, len: usize) -> Self {
        View { offset, len }
    }
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
    pub fn overlaps(&self, other: &View) -> bool {
        self.len > 0 && other.len > 0 && self.offset < other.end() && other.offset < self.end()
    }
    /// The sub-range `[start, start + len)` of this view.
    pub fn slice(&self, start: usize, len: usize) -> View {
        assert!(start + len <= self.len, "sub-view out of range");
        View::new(self.offset + start, len)
    }
}

/// Shapes of a causal self-attention call: batch, sequence, channels, heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub n_head: usize,
}

/// Shape of a matmul `out (m,n) = op(a) (m,k) · op(b) (k,n)`; `trans_a` means `a` is stored
/// (k,m), `trans_b` that `b` is stored (n,k).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// One AdamW update's hyperparameters (the step's learning rate from the schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step count, for bias correction.
    pub step: u64,
    /// Multiplies every gradient first: 1/accumulation steps times the clipping factor.
    pub grad_scale: f32,
}

/// One parameter tensor as the optimizer sees it: its place in the parameter, gradient and
/// moment regions (the same offset in each) and its weight decay (0 for 1-D tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWGroup {
    pub param: View,
    pub grad: View,
    pub m: View,
    pub v: View,
    pub weight_decay: f32,
}

/// A compute device: memory plus one method per kernel. Kernels fully overwrite their
/// outputs, except `add_into` which accumulates by definition.
pub trait Backend {
    /// One block of f32 memory holding parameters, gradients, optimizer state and activations.
    type Arena;
    /// A buffer of token ids.
    type Indices;

    fn name(&self) -> String;

    fn alloc(&self, len: usize) -> Result<Self::Arena>;
    fn alloc_indices(&self, len: usize) -> Result<Self::Indices>;
    fn write_indices(&self, dst: &mut Self::Indices, src: &[u32]) -> Result<()>;
    fn write(&self, arena: &mut Self::Arena, dst: View, src: &[f32]) -> Result<()>;
    fn read(&self, arena: &Self::Arena, src: View, dst: &mut [f32]) -> Result<()>;
    fn fill(&self, arena: &mut Self::Arena, dst: View, value: f32);

    /// out (b,t,c) = wte[tokens] + wpe[position].
    #[allow(clippy::too_many_arguments)]
    fn embedding_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        tokens: &Self::Indices,
        wte: View,
        wpe: View,
        b: usize,
        t: usize,
        c: usize,
    );
    /// Gradients of the embedding tables; deterministic (no float atomics).
    #[allow(clippy::too_many_arguments)]
    fn embedding_backward(
        &self,
        arena: &mut Self::Arena,
        dwte: View,
        dwpe: View,
        dout: View,
        tokens: &Self::Indices,
        b: usize,
        t: usize,
        c: usize,
    );
    /// out = op(a) · op(b) (+ bias broadcast over rows).
    fn matmul(
        &self,
        arena: &mut Self::Arena,
        out: View,
        a: View,
        b: View,
        bias: Option<View>,
        shape: MatmulShape,
    );
    /// out (n) = column sums of x (m,n): the bias gradient.
    fn sum_rows(&self, arena: &mut Self::Arena, out: View, x: View, m: usize, n: usize);
    /// Row-wise layernorm of x (n,c); saves mean and 1/std per row for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        mean: View,
        rstd: View,
        x: View,
        weight: View,
        bias: View,
        n: usize,
        c: usize,
        eps: f32,
    );
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        arena: &mut Self::Arena,
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
    );
    fn gelu_forward(&self, arena: &mut Self::Arena, out: View, x: View);
    fn gelu_backward(&self, arena: &mut Self::Arena, dx: View, x: View, dout: View);
    fn add(&self, arena: &mut Self::Arena, out: View, a: View, b: View);
    /// dst += src.
    fn add_into(&self, arena: &mut Self::Arena, dst: View, src: View);
    /// Causal multi-head self-attention of qkv (b,t,3c) into out (b,t,c); saves the
    /// log-sum-exp of each score row, never the (t,t) probabilities.
    fn attention_forward(
        &self,
        arena: &mut Self::Arena,
        out: View,
        lse: View,
        qkv: View,
        shape: AttentionShape,
    );
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        arena: &mut Self::Arena,
        dqkv: View,
        dout: View,
        qkv: View,
        out: View,
        lse: View,
        shape: AttentionShape,
    );
    /// Mean cross-entropy of logits (n,vp) against targets, over the first v columns.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_forward(
        &self,
        arena: &mut Self::Arena,
        loss: View,
        lse: View,
        logits: View,
        targets: &Self::Indices,
        n: usize,
        v: usize,
        vp: usize,
    );
    /// dlogits = dloss/n · (softmax − onehot), zero in the padded columns.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(
        &self,
        arena: &mut Self::Arena,
        dlogits: View,
        logits: View,
        lse: View,
        targets: &Self::Indices,
        dloss: f32,
        n: usize,
        v: usize,
        vp: usize,
    );
    /// Σ x², accumulated in f64.
    fn sum_squares(&self, arena: &Self::Arena, x: View) -> f64;
    /// One AdamW update of every group.
    fn adamw(&self, arena: &mut Self::Arena, groups: &[AdamWGroup], step: &AdamWStep);
}
