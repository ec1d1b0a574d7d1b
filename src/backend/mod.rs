//! Compute backends. The graph executor speaks only to the [`Backend`] trait: it owns one
//! arena of f32 memory laid out by the planner, a few index buffers (token ids, targets),
//! and calls one method per kernel with [`View`]s into the arena. The CPU backend is the
//! reference; a CUDA backend implements the same trait with device pointers.

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod kernels;
pub mod launch;
pub mod select;
pub mod tensor_map;

use crate::error::{Error, Result};

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DType {
    #[default]
    F32,
    /// bfloat16: f32's exponent, 8 significant bits. Device backends store activations in it
    /// in mixed precision; arithmetic stays f32.
    Bf16,
}

impl DType {
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// A contiguous range of elements inside an arena. The arena is addressed in 4-byte words:
/// `offset` counts words, `len` elements of `dtype` (a bf16 view of `len` elements spans
/// `ceil(len / 2)` words). The CPU backend only ever sees f32 views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct View {
    pub offset: usize,
    pub len: usize,
    pub dtype: DType,
}

impl View {
    /// An f32 view.
    pub fn new(offset: usize, len: usize) -> Self {
        View {
            offset,
            len,
            dtype: DType::F32,
        }
    }
    pub fn typed(offset: usize, len: usize, dtype: DType) -> Self {
        View { offset, len, dtype }
    }
    /// The 4-byte words the view spans.
    pub fn words(&self) -> usize {
        (self.len * self.dtype.bytes()).div_ceil(4)
    }
    /// The word after the view's last.
    pub fn end(&self) -> usize {
        self.offset + self.words()
    }
    pub fn overlaps(&self, other: &View) -> bool {
        self.len > 0 && other.len > 0 && self.offset < other.end() && other.offset < self.end()
    }
    /// The sub-range `[start, start + len)` of this view (elements; for bf16, `start` must be
    /// even so the sub-view starts on a word).
    pub fn slice(&self, start: usize, len: usize) -> View {
        assert!(start + len <= self.len, "sub-view out of range");
        let start_bytes = start * self.dtype.bytes();
        assert!(
            start_bytes.is_multiple_of(4),
            "sub-view must start on a 4-byte word"
        );
        View::typed(self.offset + start_bytes / 4, len, self.dtype)
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
/// moment regions (the same offset in each), the bf16 working copy the update also writes
/// (mixed precision on a device backend; None elsewhere) and its weight decay (0 for 1-D
/// tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWGroup {
    pub param: View,
    pub grad: View,
    pub m: View,
    pub v: View,
    pub copy: Option<View>,
    pub weight_decay: f32,
}

/// A compute device: memory plus one method per kernel. Kernels fully overwrite their
/// outputs, except `add_into` which accumulates by definition.
pub trait Backend {
    /// One block of f32 memory holding parameters, gradients, optimizer state and activations.
    type Arena;
    /// A buffer of token ids.
    type Indices;
    /// A recorded sequence of kernel calls (see [`Backend::can_capture`]).
    type Captured;

    fn name(&self) -> String;

    fn alloc(&self, len: usize) -> Result<Self::Arena>;
    fn alloc_indices(&self, len: usize) -> Result<Self::Indices>;
    fn write_indices(&self, dst: &mut Self::Indices, src: &[u32]) -> Result<()>;
    fn write(&self, arena: &mut Self::Arena, dst: View, src: &[f32]) -> Result<()>;
    fn read(&self, arena: &Self::Arena, src: View, dst: &mut [f32]) -> Result<()>;
    fn fill(&self, arena: &mut Self::Arena, dst: View, value: f32);
    /// out = x converted to out's dtype (the bf16 working copies of f32 weights).
    fn convert(&self, arena: &mut Self::Arena, out: View, x: View);
    /// The dtype this backend stores activations in (a graph is given that precision when
    /// it is built for the backend).
    fn activation_dtype(&self) -> DType {
        DType::F32
    }

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
    /// [`Backend::matmul`] then act = gelu(out), keeping both (GELU as the matmul epilogue).
    #[allow(clippy::too_many_arguments)]
    fn matmul_gelu(
        &self,
        arena: &mut Self::Arena,
        out: View,
        act: View,
        a: View,
        b: View,
        bias: Option<View>,
        shape: MatmulShape,
    ) {
        self.matmul(arena, out, a, b, bias, shape);
        self.gelu_forward(arena, act, out);
    }
    /// sum = a + b, then [`Backend::layernorm_forward`] of sum: the residual connection and
    /// the next layernorm. Outputs `[sum, out, mean, rstd]`, inputs `[a, b, weight, bias]`.
    fn add_layernorm_forward(
        &self,
        arena: &mut Self::Arena,
        outputs: [View; 4],
        inputs: [View; 4],
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let [sum, out, mean, rstd] = outputs;
        let [a, b, weight, bias] = inputs;
        self.add(arena, sum, a, b);
        self.layernorm_forward(arena, out, mean, rstd, sum, weight, bias, n, c, eps);
    }
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
    /// One AdamW update of every group; a group's `copy`, if any, receives the new parameter
    /// rounded to its dtype.
    fn adamw(&self, arena: &mut Self::Arena, groups: &[AdamWGroup], step: &AdamWStep);

    /// Whether kernel calls can be recorded once ([`Backend::begin_capture`] ..
    /// [`Backend::end_capture`]) and replayed: CUDA graphs.
    fn can_capture(&self) -> bool {
        false
    }
    /// From now on kernel calls are recorded, not run.
    fn begin_capture(&self) -> Result<()> {
        Err(Error::Device(format!(
            "{} cannot record kernel calls",
            self.name()
        )))
    }
    /// The calls recorded since [`Backend::begin_capture`].
    fn end_capture(&self) -> Result<Self::Captured>;
    /// Runs recorded calls again, on the same memory with the same arguments.
    fn replay(&self, captured: &Self::Captured) -> Result<()>;
    /// Reports the first failure of an earlier kernel call. Kernel calls return nothing
    /// because a device runs them asynchronously; a device backend keeps the failure.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}
