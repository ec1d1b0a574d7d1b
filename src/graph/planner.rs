//! The memory planner: lays out one arena for a graph.
//!
//! ```text
//! [ params | grads | adam m | adam v | bf16 working copies | outputs | activations (reused by liveness) ]
//! ```
//! Parameters, their gradient accumulators and the two AdamW moments share one relative
//! layout, so the optimizer sees four parallel regions. A graph with bf16 working copies of
//! weights (mixed precision) gets a fifth, in bf16, with one element per parameter element
//! (copies of parameters no op reads in bf16 are written and never read): the optimizer
//! writes it in the same launch, and one conversion of the whole parameter region refreshes it. Each activation is live from the op
//! that writes it to the last op that reads it; the planner gives it a place in the
//! activation region that no tensor live at the same time uses (best fit from a free list).
//! An op's outputs are placed before its dead inputs are released, so no op ever writes
//! over what it reads.

use super::{Graph, Storage, TensorId};
use crate::backend::{DType, View};
use crate::error::{Error, Result};

/// Every tensor offset is a multiple of this many f32s (64 bytes: cache lines, vector loads).
pub const ALIGN: usize = 16;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where every tensor of a graph lives in the arena.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One view per tensor, indexed by `TensorId`.
    pub views: Vec<View>,
    pub params: View,
    pub grads: View,
    pub adam_m: View,
    pub adam_v: View,
    /// The bf16 working copies, element for element parallel to `params` (graphs with
    /// [`Storage::WorkingCopy`] tensors only).
    pub working_copies: Option<View>,
    pub activations: View,
    /// Arena length in f32s.
    pub total: usize,
    /// What the activations would take with one buffer per tensor.
    pub naive_activation_len: usize,
}

impl Plan {
    pub fn view(&self, id: TensorId) -> View {
        self.views[id.0]
    }

    /// The view of the same tensor in a region parallel to the parameters (grads, m, v).
    pub fn parallel(&self, param_view: View, region: View) -> View {
        View::new(
            region.offset + (param_view.offset - self.params.offset),
            param_view.len,
        )
    }

    /// The place of a parameter's bf16 working copy (its element range in the working-copy
    /// region), when the graph has working copies.
    pub fn working_copy(&self, param_view: View) -> Option<View> {
        self.working_copies
            .map(|region| region.slice(param_view.offset - self.params.offset, param_view.len))
    }

    /// Bytes of activation memory planned and naive, for the log.
    pub fn activation_bytes(&self) -> (usize, usize) {
        (self.activations.len * 4, self.naive_activation_len * 4)
    }
}

/// An upper bound of the arena's length in words: every tensor in a place of its own,
/// parameter-sized ones four times (params, grads, AdamW m and v; five with working copies,
/// whose region spans every parameter), in checked arithmetic.
/// None if it (in bytes) exceeds 64 bits; otherwise no offset the planner forms can overflow.
fn arena_bound(graph: &Graph) -> Option<usize> {
    let has_copies = graph
        .tensors
        .iter()
        .any(|t| matches!(t.storage, Storage::WorkingCopy(_)));
    let mut words = 0usize;
    for t in &graph.tensors {
        let len = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let w = align(
            len.checked_mul(t.dtype.bytes())?
                .div_ceil(4)
                .checked_add(ALIGN)?,
        );
        let copies = match t.storage {
            Storage::Param if has_copies => 5,
            Storage::Param | Storage::GradAccum(_) => 4,
            Storage::Activation | Storage::Output => 1,
            // Inside the working-copy region, counted with the parameters.
            Storage::WorkingCopy(_) => 0,
        };
        words = words.checked_add(w.checked_mul(copies)?)?;
    }
    words.checked_mul(4).map(|_| words)
}

/// Plans the arena for `graph`.
pub fn plan(graph: &Graph) -> Result<Plan> {
    if arena_bound(graph).is_none() {
        return Err(Error::Config(
            "the model's memory would exceed 2^64 bytes: lower the model's size, the batch size or the sequence length".into(),
        ));
    }
    let n = graph.tensors.len();
    let mut views = vec![View::new(0, 0); n];

    // Parameters, then the three parallel regions (all f32: master weights, accumulators).
    if let Some(t) = graph.tensors.iter().find(|t| {
        matches!(t.storage, Storage::Param | Storage::GradAccum(_)) && t.dtype != DType::F32
    }) {
        return Err(Error::Config(format!(
            "parameter or gradient '{}' must be f32 (its bf16 copy is a separate tensor)",
            t.name
        )));
    }
    let mut cursor = 0;
    for p in &graph.params {
        views[p.tensor.0] = View::new(cursor, graph.numel(p.tensor));
        cursor += align(graph.numel(p.tensor));
    }
    let params = View::new(0, cursor);
    let grads = View::new(cursor, cursor);
    let adam_m = View::new(2 * cursor, cursor);
    let adam_v = View::new(3 * cursor, cursor);
    for (i, t) in graph.tensors.iter().enumerate() {
        if let Storage::GradAccum(p) = t.storage {
            let param = views[graph.params[p].tensor.0];
            views[i] = View::new(grads.offset + param.offset, param.len);
        }
    }
    cursor *= 4;

    // The bf16 working copies: one bf16 element per parameter element (`params.len` is a
    // multiple of ALIGN, so every parameter's copy starts on a word).
    let mut working_copies = None;
    for (i, t) in graph.tensors.iter().enumerate() {
        let Storage::WorkingCopy(p) = t.storage else {
            continue;
        };
        let param = graph.params.get(p).map(|p| views[p.tensor.0]);
        let Some(param) = param.filter(|v| v.len == t.numel() && t.dtype == DType::Bf16) else {
            return Err(Error::Config(format!(
                "working copy '{}' must be a bf16 tensor of its parameter's size",
                t.name
            )));
        };
        let region = *working_copies.get_or_insert_with(|| {
            let region = View::typed(cursor, params.len, DType::Bf16);
            cursor += align(region.words());
            region
        });
        views[i] = region.slice(param.offset - params.offset, param.len);
    }

    // Outputs live for the whole run.
    for (i, t) in graph.tensors.iter().enumerate() {
        if t.storage == Storage::Output {
            views[i] = View::typed(cursor, t.numel(), t.dtype);
            cursor += align(views[i].words());
        }
    }

    // Activations: liveness intervals over the op list.
    let is_activation = |id: TensorId| graph.tensors[id.0].storage == Storage::Activation;
    let mut first_write = vec![usize::MAX; n];
    let mut last_use = vec![0usize; n];
    for (i, op) in graph.ops.iter().enumerate() {
        for id in op.outputs() {
            if first_write[id.0] == usize::MAX {
                first_write[id.0] = i;
            }
            last_use[id.0] = last_use[id.0].max(i);
        }
        for id in op.inputs() {
            if is_activation(id) && first_write[id.0] == usize::MAX {
                return Err(Error::Config(format!(
                    "graph reads activation '{}' before any op writes it",
                    graph.tensors[id.0].name
                )));
            }
            last_use[id.0] = last_use[id.0].max(i);
        }
    }
    let mut release_after: Vec<Vec<TensorId>> = vec![Vec::new(); graph.ops.len()];
    let mut naive = 0;
    for i in 0..n {
        if is_activation(TensorId(i)) && first_write[i] != usize::MAX {
            release_after[last_use[i]].push(TensorId(i));
            let t = &graph.tensors[i];
            naive += align(View::typed(0, t.numel(), t.dtype).words());
        }
    }

    let mut arena = FreeList::default();
    let mut placed = vec![false; n];
    for (i, op) in graph.ops.iter().enumerate() {
        for id in op.outputs() {
            if is_activation(id) && !placed[id.0] {
                let t = &graph.tensors[id.0];
                let view = View::typed(0, t.numel(), t.dtype);
                views[id.0] = View::typed(arena.alloc(align(view.words())), view.len, view.dtype);
                placed[id.0] = true;
            }
        }
        for id in &release_after[i] {
            arena.free(views[id.0].offset, align(views[id.0].words()));
        }
    }
    let activation_base = cursor;
    for (i, placed) in placed.iter().enumerate() {
        if *placed {
            views[i].offset += activation_base;
        }
    }
    Ok(Plan {
        views,
        params,
        grads,
        adam_m,
        adam_v,
        working_copies,
        activations: View::new(activation_base, arena.top),
        total: activation_base + arena.top,
        naive_activation_len: naive,
    })
}

/// Best-fit allocator over offsets, with coalescing of neighbouring free blocks.
#[derive(Default)]
struct FreeList {
    /// Free blocks (offset, len), sorted by offset, never adjacent.
    free: Vec<(usize, usize)>,
    /// High-water mark: the region's length.
    top: usize,
}

impl FreeList {
    fn alloc(&mut self, len: usize) -> usize {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &(_, l))| l >= len)
            .min_by_key(|(_, &(_, l))| l)
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (off, l) = self.free[i];
            if l == len {
                self.free.remove(i);
            } else {
                self.free[i] = (off + len, l - len);
            }
            return off;
        }
        // Grow: extend a free block that ends at the top, if any.
        if let Some(&(off, l)) = self.free.last() {
            if off + l == self.top {
                self.free.pop();
                self.top = off + len;
                return off;
            }
        }
        let off = self.top;
        self.top += len;
        off
    }

    fn free(&mut self, off: usize, len: usize) {
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        // Merge with the next block, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FreeList;

    #[test]
    fn free_list_reuses_and_coalesces() {
        let mut f = FreeList::default();
        let a = f.alloc(16);
        let b = f.alloc(32);
        let c = f.alloc(16);
        assert_eq!((a, b, c), (0, 16, 48));
        f.free(b, 32);
        assert_eq!(f.alloc(16), 16); // best fit reuses the hole
        f.free(16, 16);
        f.free(a, 16);
        f.free(c, 16);
        assert_eq!(f.free, vec![(0, 64)]);
        assert_eq!(f.alloc(80), 0); // grows from the free tail
        assert_eq!(f.top, 80);
    }
}
