//! `kernels/embedding.cu`: token + position embedding forward, and its deterministic backward
//! (wte rows by token buckets, no float atomics; wpe rows by position); f32 or bf16
//! activations, f32 tables and gradients. Also `fill`.

use super::bf16;
use super::{blocks, int, kernels, linear, long, Dim3, LaunchDims};
use crate::backend::device::Runtime;
use crate::backend::DType;
use crate::error::Result;

/// Threads per block of `fill` and `embedding_backward_wpe`; the most of the column kernels.
pub const BLOCK: u32 = 256;

/// Grid cap of the grid-stride `fill`.
pub const MAX_FILL_BLOCKS: u32 = 65536;

/// The column-parallel kernels: grid `(rows, ceil(c / B))`, block `B` = `c` rounded up to a
/// warp, at most [`BLOCK`]; one thread per column.
fn rows_by_columns(rows: i64, c: i32) -> LaunchDims {
    let c = c.max(0) as usize;
    let block = (c.div_ceil(32) * 32).clamp(32, BLOCK as usize) as u32;
    LaunchDims {
        grid: Dim3 {
            x: blocks(rows.max(0) as usize, 1),
            y: blocks(c, block as usize),
            z: 1,
        },
        block: Dim3::x(block),
        smem: 0,
    }
}

/// One thread per element, `n` of them.
fn per_element(n: usize) -> LaunchDims {
    linear(blocks(n, BLOCK as usize), BLOCK)
}

kernels! {
    /// `out[bi, p, :] = wte[tokens[bi, p], :] + wpe[p, :]`.
    fn embedding_forward(out: *mut f32, tokens: *const i32, wte: *const f32, wpe: *const f32, b: i32, t: i32, c: i32)
        => rows_by_columns(i64::from(b) * i64::from(t), c);
    /// [`embedding_forward`] into bf16 (the f32 sum rounded once).
    fn embedding_forward_bf16(out: *mut bf16, tokens: *const i32, wte: *const f32, wpe: *const f32, b: i32, t: i32, c: i32)
        => rows_by_columns(i64::from(b) * i64::from(t), c);
    /// `dwpe[p, :] = Σ_bi dout[bi, p, :]` for `p < t`, `bi` in increasing order.
    fn embedding_backward_wpe(dwpe: *mut f32, dout: *const f32, b: i32, t: i32, c: i32)
        => per_element(t.max(0) as usize * c.max(0) as usize);
    /// [`embedding_backward_wpe`] from a bf16 `dout`.
    fn embedding_backward_wpe_bf16(dwpe: *mut f32, dout: *const bf16, b: i32, t: i32, c: i32)
        => per_element(t.max(0) as usize * c.max(0) as usize);
    /// For each bucket (CSR, see [`token_buckets`]) with a token `>= 0`: `dwte[token, :] =
    /// Σ dout[p, :]` over its positions in order. Padding buckets (token −1) and rows in no
    /// bucket are left as they are.
    fn embedding_backward_wte(dwte: *mut f32, dout: *const f32, bucket_offsets: *const i32, bucket_tokens: *const i32, positions: *const i32, num_buckets: i32, c: i32)
        => rows_by_columns(num_buckets.into(), c);
    /// [`embedding_backward_wte`] from a bf16 `dout`.
    fn embedding_backward_wte_bf16(dwte: *mut f32, dout: *const bf16, bucket_offsets: *const i32, bucket_tokens: *const i32, positions: *const i32, num_buckets: i32, c: i32)
        => rows_by_columns(num_buckets.into(), c);
    /// `x[..n] = value`, grid-stride over at most [`MAX_FILL_BLOCKS`] blocks.
    fn fill(x: *mut f32, value: f32, n: i64)
        => linear(blocks(n.max(0) as usize, BLOCK as usize).min(MAX_FILL_BLOCKS), BLOCK);
}

/// The positions of `tokens` grouped by token, for `embedding_backward_wte`, as CSR:
/// `(offsets, bucket_tokens, positions)`. Bucket `k` holds token `bucket_tokens[k]` (buckets
/// in increasing token order, one per distinct token) and its positions
/// `positions[offsets[k]..offsets[k + 1]]` in increasing order; `offsets` has one entry more
/// than there are buckets and `positions` is a permutation of `0..tokens.len()`.
pub fn token_buckets(tokens: &[u32], vocab: usize) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    assert!(
        tokens.len() <= i32::MAX as usize && vocab <= i32::MAX as usize,
        "token_buckets: too many tokens or too large a vocabulary"
    );
    assert!(
        tokens.iter().all(|&tok| (tok as usize) < vocab),
        "token_buckets: token >= vocab"
    );
    let mut positions: Vec<i32> = (0..tokens.len() as i32).collect();
    // Stable: equal tokens keep their positions in increasing order.
    positions.sort_by_key(|&p| tokens[p as usize]);
    let mut offsets = vec![0];
    let mut bucket_tokens = Vec::new();
    for (i, &p) in positions.iter().enumerate() {
        let tok = tokens[p as usize] as i32;
        if bucket_tokens.last() != Some(&tok) {
            if i > 0 {
                offsets.push(i as i32);
            }
            bucket_tokens.push(tok);
        }
    }
    if !positions.is_empty() {
        offsets.push(positions.len() as i32);
    }
    (offsets, bucket_tokens, positions)
}

/// The bucket table of `embedding_backward_wte` for a batch of `tokens` (ids below `vocab`),
/// as the device holds it: the CSR of [`token_buckets`] padded to one bucket per token
/// (`slots = tokens.len()`; padding buckets have token −1 and empty ranges), so that every
/// batch of that size launches the same grid (a recorded graph replays it), laid out as
/// `offsets (slots + 1) | bucket tokens (slots) | positions (slots)`, i32.
pub fn bucket_table(tokens: &[u32], vocab: usize) -> Vec<i32> {
    let slots = tokens.len();
    let (mut offsets, mut bucket_tokens, positions) = token_buckets(tokens, vocab);
    offsets.resize(slots + 1, int(slots));
    bucket_tokens.resize(slots, -1);
    [offsets, bucket_tokens, positions].concat()
}

/// A [`bucket_table`] of `slots` buckets on the device, at `table`.
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    pub table: u64,
    pub slots: usize,
}

impl Buckets {
    /// i32 elements of a table of `slots` buckets.
    pub fn table_len(slots: usize) -> usize {
        3 * slots + 1
    }

    pub fn offsets(&self) -> u64 {
        self.table
    }

    pub fn tokens(&self) -> u64 {
        self.table + 4 * (self.slots as u64 + 1)
    }

    pub fn positions(&self) -> u64 {
        self.table + 4 * (2 * self.slots as u64 + 1)
    }
}

/// The gradients `dwte (vocab, c)` and `dwpe (max_t, c)` (f32, both fully overwritten) of
/// [`embedding_forward`] from `dout (b, t, c)` (f32 or bf16 as `dtype`): `fill` zeroes `dwte`
/// and the rows `t..` of `dwpe`, `embedding_backward_wte` writes the rows of the tokens
/// present, `embedding_backward_wpe` the first `t` rows of `dwpe`. Deterministic, and in the
/// CPU reference's order of additions (positions in increasing order).
///
/// # Safety
/// `dwte` holds `vocab·c` f32, `dwpe` `max_t·c` f32 with `t <= max_t`, `dout` `b·t·c`
/// elements of `dtype`; `buckets` is the [`bucket_table`] of the `b·t` tokens (ids below
/// `vocab`), `slots == b·t`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward<R: Runtime + ?Sized>(
    rt: &R,
    dwte: u64,
    vocab: usize,
    dwpe: u64,
    max_t: usize,
    dout: u64,
    dtype: DType,
    buckets: Buckets,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    assert!(
        t <= max_t && buckets.slots == b * t,
        "embedding::backward: sizes"
    );
    let (nb, bi, ti, ci) = (int(buckets.slots), int(b), int(t), int(c));
    let (offsets, tokens, positions) = (buckets.offsets(), buckets.tokens(), buckets.positions());
    // SAFETY: the caller's contract: the fills stay inside dwte and dwpe's rows t..max_t.
    unsafe {
        fill::launch(rt, dwte, 0.0, long(vocab * c))?;
        if max_t > t {
            fill::launch(rt, dwpe + 4 * (t * c) as u64, 0.0, long((max_t - t) * c))?;
        }
        match dtype {
            DType::F32 => {
                embedding_backward_wte::launch(rt, dwte, dout, offsets, tokens, positions, nb, ci)?;
                embedding_backward_wpe::launch(rt, dwpe, dout, bi, ti, ci)
            }
            DType::Bf16 => {
                embedding_backward_wte_bf16::launch(
                    rt, dwte, dout, offsets, tokens, positions, nb, ci,
                )?;
                embedding_backward_wpe_bf16::launch(rt, dwpe, dout, bi, ti, ci)
            }
        }
    }
}
