//! The autograd graph, define-then-run.
//!
//! A model is built once as a [`Graph`]: tensors (with shapes and a storage class) and a
//! list of [`Op`]s in execution order. [`autodiff::append_backward`] appends the backward
//! ops to the same list, [`fuse::fuse_forward`] merges adjacent forward ops into single kernel
//! calls, [`planner::plan`] gives every tensor a place in one arena (reusing
//! memory by liveness), and [`executor::Executor`] replays the list on a backend each step.

pub mod autodiff;
pub mod executor;
pub mod fuse;
pub mod op;
pub mod planner;
pub mod precision;

use crate::backend::DType;

pub use op::Op;

/// Index of a tensor in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// Index of an integer input (token ids, targets) of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IndexId(pub usize);

/// Where a tensor lives, which decides how the planner treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A trainable parameter: persistent, in the parameter region.
    Param,
    /// The accumulated gradient of parameter number `.0`: persistent, in the gradient region.
    GradAccum(usize),
    /// The bf16 working copy of parameter number `.0` (what matmuls read in mixed precision):
    /// persistent, in the working-copy region parallel to the parameters. The optimizer step
    /// writes it with the f32 master; the executor refreshes it when the masters change
    /// otherwise ([`executor::Executor::refresh_working_copies`]).
    WorkingCopy(usize),
    /// An intermediate value: placed by liveness, memory reused.
    Activation,
    /// A result read after the run (loss, logits): persistent.
    Output,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    /// f32 unless a precision pass ([`precision::store_activations_in_bf16`]) changed it.
    pub dtype: DType,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An integer input buffer of the graph.
#[derive(Clone, Debug)]
pub struct IndexInput {
    pub name: String,
    pub len: usize,
}

/// A trainable parameter and what the optimizer needs to know about it.
#[derive(Clone, Debug)]
pub struct Param {
    pub tensor: TensorId,
    /// Its gradient accumulator, once autodiff has run.
    pub grad: Option<TensorId>,
    /// Decoupled weight decay applies to matrices only (not biases, not layernorm gains).
    pub decay: bool,
}

/// Tensors, ops in execution order, and the bookkeeping autodiff and the planner need.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub ops: Vec<Op>,
    pub indices: Vec<IndexInput>,
    pub params: Vec<Param>,
    /// Ops `0..forward_len` are the forward pass; the rest is the backward pass.
    pub forward_len: usize,
    /// The scalar the backward pass differentiates.
    pub loss: Option<TensorId>,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    pub fn numel(&self, id: TensorId) -> usize {
        self.tensors[id.0].numel()
    }

    fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        storage: Storage,
    ) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            storage,
            dtype: DType::F32,
        });
        TensorId(self.tensors.len() - 1)
    }

    /// A new intermediate tensor.
    pub fn activation(&mut self, name: impl Into<String>, shape: &[usize]) -> TensorId {
        self.add_tensor(name, shape, Storage::Activation)
    }

    /// The bf16 working copy of parameter number `param` (see [`Storage::WorkingCopy`]).
    pub fn working_copy(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        param: usize,
    ) -> TensorId {
        let id = self.add_tensor(name, shape, Storage::WorkingCopy(param));
        self.tensors[id.0].dtype = DType::Bf16;
        id
    }

    /// A new trainable parameter; `decay` selects weight decay for it.
    pub fn param(&mut self, name: impl Into<String>, shape: &[usize], decay: bool) -> TensorId {
        let id = self.add_tensor(name, shape, Storage::Param);
        self.params.push(Param {
            tensor: id,
            grad: None,
            decay,
        });
        id
    }

    /// A new integer input of `len` elements.
    pub fn index_input(&mut self, name: impl Into<String>, len: usize) -> IndexId {
        self.indices.push(IndexInput {
            name: name.into(),
            len,
        });
        IndexId(self.indices.len() - 1)
    }

    /// Marks a tensor as a result that must survive the whole run.
    pub fn mark_output(&mut self, id: TensorId) {
        self.tensors[id.0].storage = Storage::Output;
    }

    /// Appends a forward op.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
        self.forward_len = self.ops.len();
    }

    /// Finds a parameter by name.
    pub fn param_by_name(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| self.tensors[p.tensor.0].name == name)
    }
}
