//! The executor: owns the arena a [`Plan`] lays out and replays the graph's op list on a
//! backend. Nothing is allocated per step.
//!
//! In mixed precision the graph's matmuls read bf16 working copies of the weights
//! ([`super::Storage::WorkingCopy`]). The optimizer step writes them with the f32 masters; when
//! the masters change any other way (initialisation, loading, [`Executor::write`] or
//! [`Executor::write_region`] over parameters) the copies are marked stale, and the next pass
//! first refreshes them ([`Executor::refresh_working_copies`]: one conversion, run eagerly,
//! outside the recorded passes, into the same memory the recordings read).

use std::time::{Duration, Instant};

use super::planner::{self, Plan};
use super::{Graph, IndexId, Op, Storage, TensorId};
use crate::backend::{AdamWGroup, AdamWStep, Backend};
use crate::error::{Error, Result};

pub struct Executor<B: Backend> {
    pub backend: B,
    pub graph: Graph,
    pub plan: Plan,
    arena: B::Arena,
    indices: Vec<B::Indices>,
    /// Per op kind: total time and calls, when profiling is on.
    profile: Option<Vec<(&'static str, Duration, usize)>>,
    /// Record-and-replay of the forward pass and of forward + backward (CUDA graphs), on
    /// backends that can capture.
    capture: bool,
    forward_pass: Replay<B::Captured>,
    training_pass: Replay<B::Captured>,
    /// The bf16 working copies may differ from the f32 masters: refresh before the next pass.
    copies_stale: bool,
}

/// The state of one replayable op range: run eagerly once (which sizes scratch memory and
/// loads kernels), then recorded on its second run and replayed from then on.
enum Replay<C> {
    Cold,
    Warm,
    Captured(C),
}

impl<B: Backend> Executor<B> {
    /// Plans the graph and allocates its arena (zeroed).
    pub fn new(backend: B, graph: Graph) -> Result<Self> {
        let plan = planner::plan(&graph)?;
        let backend_can_capture = backend.can_capture();
        let arena = backend.alloc(plan.total)?;
        let indices = graph
            .indices
            .iter()
            .map(|i| backend.alloc_indices(i.len))
            .collect::<Result<Vec<_>>>()?;
        Ok(Executor {
            backend,
            graph,
            plan,
            arena,
            indices,
            profile: None,
            capture: backend_can_capture,
            forward_pass: Replay::Cold,
            training_pass: Replay::Cold,
            copies_stale: true,
        })
    }

    /// Sets an integer input (token ids or targets).
    pub fn set_indices(&mut self, id: IndexId, data: &[u32]) -> Result<()> {
        let input = &self.graph.indices[id.0];
        if data.len() != input.len {
            return Err(Error::Data(format!(
                "input '{}' needs {} values, got {}",
                input.name,
                input.len,
                data.len()
            )));
        }
        self.backend.write_indices(&mut self.indices[id.0], data)
    }

    pub fn write(&mut self, id: TensorId, data: &[f32]) -> Result<()> {
        let view = self.plan.view(id);
        if data.len() != view.len {
            return Err(Error::Data(format!(
                "tensor '{}' has {} elements, got {}",
                self.graph.tensor(id).name,
                view.len,
                data.len()
            )));
        }
        if self.graph.tensor(id).storage == Storage::Param {
            self.copies_stale = true;
        }
        self.backend.write(&mut self.arena, view, data)
    }

    pub fn read(&self, id: TensorId) -> Result<Vec<f32>> {
        let view = self.plan.view(id);
        let mut out = vec![0.0; view.len];
        self.backend.read(&self.arena, view, &mut out)?;
        Ok(out)
    }

    /// Rewrites every bf16 working copy from its f32 master (one conversion of the whole
    /// parameter region). The passes run it themselves when the masters changed other than by
    /// [`Executor::adamw`]; nothing to do for graphs without working copies.
    pub fn refresh_working_copies(&mut self) -> Result<()> {
        if let Some(copies) = self.plan.working_copies {
            self.backend
                .convert(&mut self.arena, copies, self.plan.params);
            self.backend.check()?;
        }
        self.copies_stale = false;
        Ok(())
    }

    /// Whether the next pass will first refresh the working copies.
    pub fn working_copies_stale(&self) -> bool {
        self.copies_stale && self.plan.working_copies.is_some()
    }

    fn ensure_working_copies(&mut self) -> Result<()> {
        if self.working_copies_stale() {
            self.refresh_working_copies()?;
        }
        Ok(())
    }

    /// Runs the forward ops.
    pub fn forward(&mut self) -> Result<()> {
        self.ensure_working_copies()?;
        let mut state = std::mem::replace(&mut self.forward_pass, Replay::Cold);
        let result = self.run_replayable(&mut state, 0..self.graph.forward_len);
        self.forward_pass = state;
        result
    }

    /// Runs the backward ops, adding this micro-batch's gradients into the accumulators.
    pub fn backward(&mut self) -> Result<()> {
        self.ensure_working_copies()?;
        self.run(self.graph.forward_len..self.graph.ops.len());
        self.backend.check()
    }

    /// Runs the forward and backward ops (one training micro-step).
    pub fn forward_backward(&mut self) -> Result<()> {
        self.ensure_working_copies()?;
        let mut state = std::mem::replace(&mut self.training_pass, Replay::Cold);
        let result = self.run_replayable(&mut state, 0..self.graph.ops.len());
        self.training_pass = state;
        result
    }

    /// Turns record-and-replay off (or back on, where the backend supports it). Off, every
    /// call launches each kernel anew: for debugging and for timing kernels one by one.
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on && self.backend.can_capture();
        self.forward_pass = Replay::Cold;
        self.training_pass = Replay::Cold;
    }

    /// Whether the training pass now replays a recording.
    pub fn is_replaying(&self) -> bool {
        matches!(self.training_pass, Replay::Captured(_))
    }

    fn run_replayable(
        &mut self,
        state: &mut Replay<B::Captured>,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        if !self.capture || self.profile.is_some() {
            self.run(range);
            return self.backend.check();
        }
        match state {
            Replay::Captured(recording) => self.backend.replay(recording)?,
            Replay::Cold => {
                self.run(range);
                *state = Replay::Warm;
            }
            Replay::Warm => {
                self.backend.begin_capture()?;
                self.run(range);
                let recording = self.backend.end_capture()?;
                // Capturing records without running: run the recording now.
                self.backend.replay(&recording)?;
                *state = Replay::Captured(recording);
            }
        }
        self.backend.check()
    }

    /// Zeroes the gradient accumulators (start of an optimizer step).
    pub fn zero_grads(&mut self) {
        self.backend.fill(&mut self.arena, self.plan.grads, 0.0);
    }

    /// Zeroes the AdamW moments (start of training).
    pub fn zero_optimizer_state(&mut self) {
        self.backend.fill(&mut self.arena, self.plan.adam_m, 0.0);
        self.backend.fill(&mut self.arena, self.plan.adam_v, 0.0);
    }

    /// L2 norm of all accumulated gradients.
    pub fn grad_norm(&self) -> f64 {
        self.sum_squares(self.plan.grads).sqrt()
    }

    /// The sum of squares of a region (e.g. all parameters): one pass on the backend, in
    /// which NaN and infinities propagate.
    pub fn sum_squares(&self, region: crate::backend::View) -> f64 {
        self.backend.sum_squares(&self.arena, region)
    }

    /// One AdamW update of every parameter from the accumulated gradients; writes the bf16
    /// working copies (if any) from the new masters in the same pass.
    pub fn adamw(&mut self, step: &AdamWStep, weight_decay: f32) {
        let groups: Vec<AdamWGroup> = self
            .graph
            .params
            .iter()
            .map(|p| {
                let param = self.plan.view(p.tensor);
                AdamWGroup {
                    param,
                    grad: self.plan.parallel(param, self.plan.grads),
                    m: self.plan.parallel(param, self.plan.adam_m),
                    v: self.plan.parallel(param, self.plan.adam_v),
                    copy: self.plan.working_copy(param),
                    weight_decay: if p.decay { weight_decay } else { 0.0 },
                }
            })
            .collect();
        self.backend.adamw(&mut self.arena, &groups, step);
        // Every parameter's copy was written from its new master.
        self.copies_stale = false;
    }

    /// Copies a whole region (e.g. all parameters) out of the arena.
    pub fn read_region(&self, region: crate::backend::View) -> Result<Vec<f32>> {
        let mut out = vec![0.0; region.len];
        self.backend.read(&self.arena, region, &mut out)?;
        Ok(out)
    }

    /// Overwrites a whole region (e.g. all parameters).
    pub fn write_region(&mut self, region: crate::backend::View, data: &[f32]) -> Result<()> {
        if region.overlaps(&self.plan.params) {
            self.copies_stale = true;
        }
        self.backend.write(&mut self.arena, region, data)
    }

    /// Turns per-op timing on (it measures wall time per kernel call).
    pub fn enable_profile(&mut self) {
        self.profile = Some(Vec::new());
    }

    /// Time per op kind, longest first: (kind, total, calls).
    pub fn profile(&self) -> Vec<(&'static str, Duration, usize)> {
        let mut p = self.profile.clone().unwrap_or_default();
        p.sort_by_key(|e| std::cmp::Reverse(e.1));
        p
    }

    fn run(&mut self, range: std::ops::Range<usize>) {
        for i in range {
            let start = self.profile.as_ref().map(|_| Instant::now());
            self.run_op(i);
            if let (Some(profile), Some(start)) = (self.profile.as_mut(), start) {
                let kind = self.graph.ops[i].kind();
                match profile.iter_mut().find(|e| e.0 == kind) {
                    Some(e) => {
                        e.1 += start.elapsed();
                        e.2 += 1;
                    }
                    None => profile.push((kind, start.elapsed(), 1)),
                }
            }
        }
    }

    fn run_op(&mut self, i: usize) {
        let v = |id: TensorId| self.plan.views[id.0];
        let (be, arena) = (&self.backend, &mut self.arena);
        match self.graph.ops[i] {
            Op::Embedding {
                tokens,
                wte,
                wpe,
                out,
                b,
                t,
                c,
            } => be.embedding_forward(
                arena,
                v(out),
                &self.indices[tokens.0],
                v(wte),
                v(wpe),
                b,
                t,
                c,
            ),
            Op::EmbeddingBackward {
                tokens,
                dout,
                dwte,
                dwpe,
                b,
                t,
                c,
            } => be.embedding_backward(
                arena,
                v(dwte),
                v(dwpe),
                v(dout),
                &self.indices[tokens.0],
                b,
                t,
                c,
            ),
            Op::Matmul {
                a,
                b,
                bias,
                out,
                shape,
            } => be.matmul(arena, v(out), v(a), v(b), bias.map(v), shape),
            Op::MatmulGelu {
                a,
                b,
                bias,
                out,
                act,
                shape,
            } => be.matmul_gelu(arena, v(out), v(act), v(a), v(b), bias.map(v), shape),
            Op::AddLayerNorm {
                a,
                b,
                sum,
                weight,
                bias,
                out,
                mean,
                rstd,
                n,
                c,
                eps,
            } => be.add_layernorm_forward(
                arena,
                [v(sum), v(out), v(mean), v(rstd)],
                [v(a), v(b), v(weight), v(bias)],
                n,
                c,
                eps,
            ),
            Op::SumRows { x, out, m, n } => be.sum_rows(arena, v(out), v(x), m, n),
            Op::LayerNorm {
                x,
                weight,
                bias,
                out,
                mean,
                rstd,
                n,
                c,
                eps,
            } => be.layernorm_forward(
                arena,
                v(out),
                v(mean),
                v(rstd),
                v(x),
                v(weight),
                v(bias),
                n,
                c,
                eps,
            ),
            Op::LayerNormBackward {
                dout,
                x,
                weight,
                mean,
                rstd,
                dx,
                dweight,
                dbias,
                n,
                c,
            } => be.layernorm_backward(
                arena,
                v(dx),
                v(dweight),
                v(dbias),
                v(dout),
                v(x),
                v(weight),
                v(mean),
                v(rstd),
                n,
                c,
            ),
            Op::Gelu { x, out } => be.gelu_forward(arena, v(out), v(x)),
            Op::GeluBackward { x, dout, dx } => be.gelu_backward(arena, v(dx), v(x), v(dout)),
            Op::Add { a, b, out } => be.add(arena, v(out), v(a), v(b)),
            Op::Attention {
                qkv,
                out,
                lse,
                shape,
            } => be.attention_forward(arena, v(out), v(lse), v(qkv), shape),
            Op::AttentionBackward {
                dout,
                qkv,
                out,
                lse,
                dqkv,
                shape,
            } => be.attention_backward(arena, v(dqkv), v(dout), v(qkv), v(out), v(lse), shape),
            Op::CrossEntropy {
                logits,
                targets,
                loss,
                lse,
                n,
                v: vocab,
                vp,
            } => be.cross_entropy_forward(
                arena,
                v(loss),
                v(lse),
                v(logits),
                &self.indices[targets.0],
                n,
                vocab,
                vp,
            ),
            Op::CrossEntropyBackward {
                logits,
                lse,
                targets,
                dlogits,
                n,
                v: vocab,
                vp,
            } => be.cross_entropy_backward(
                arena,
                v(dlogits),
                v(logits),
                v(lse),
                &self.indices[targets.0],
                1.0,
                n,
                vocab,
                vp,
            ),
            Op::AccumulateGrad { grad, into } => be.add_into(arena, v(into), v(grad)),
        }
    }
}
