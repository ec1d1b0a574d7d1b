//! The token-indexed kernels: fused softmax + cross-entropy (`kernels/cross_entropy.cu`) at
//! the output end of the model, and the token/position embeddings (`kernels/embedding.cu`)
//! at its input end, whose table `wte` is the tied LM head. Both read index buffers
//! (targets, tokens) as C `int`s; the wrappers take `u32` ids and check them against the
//! vocabulary first (the kernels index with them unchecked).
//!
//! The `*_bf16` wrappers run the bf16-storage kernels (activations as bf16 bit patterns,
//! `u16`; tables, statistics, losses and parameter gradients f32; arithmetic f32) with the
//! geometry of their f32 twins' `*_launch` functions.

// The launchers mirror the kernels' argument lists (pointers plus sizes), so they are long.
#![allow(clippy::too_many_arguments)]

use std::ffi::{c_int, c_long};

use super::{Dim3, LaunchDims};

/// Threads per block of the row and element-wise kernels.
const BLOCK: u32 = 256;
/// Grid cap of the grid-stride `fill`.
const MAX_FILL_BLOCKS: usize = 65536;

unsafe extern "C" {
    fn smelt_emu_cross_entropy_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        losses: *mut f32,
        lse: *mut f32,
        logits: *const f32,
        targets: *const c_int,
        n: c_int,
        v: c_int,
        vp: c_int,
    );
    fn smelt_emu_mean_reduce(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        x: *const f32,
        n: c_int,
    );
    fn smelt_emu_cross_entropy_backward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dlogits: *mut f32,
        logits: *const f32,
        lse: *const f32,
        targets: *const c_int,
        dloss: f32,
        n: c_int,
        v: c_int,
        vp: c_int,
    );
    fn smelt_emu_embedding_forward(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        tokens: *const c_int,
        wte: *const f32,
        wpe: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
    );
    fn smelt_emu_embedding_backward_wpe(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dwpe: *mut f32,
        dout: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
    );
    fn smelt_emu_embedding_backward_wte(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dwte: *mut f32,
        dout: *const f32,
        bucket_offsets: *const c_int,
        bucket_tokens: *const c_int,
        positions: *const c_int,
        num_buckets: c_int,
        c: c_int,
    );
    fn smelt_emu_cross_entropy_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        losses: *mut f32,
        lse: *mut f32,
        logits: *const u16,
        targets: *const c_int,
        n: c_int,
        v: c_int,
        vp: c_int,
    );
    fn smelt_emu_cross_entropy_backward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dlogits: *mut u16,
        logits: *const u16,
        lse: *const f32,
        targets: *const c_int,
        dloss: f32,
        n: c_int,
        v: c_int,
        vp: c_int,
    );
    fn smelt_emu_embedding_forward_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        tokens: *const c_int,
        wte: *const f32,
        wpe: *const f32,
        b: c_int,
        t: c_int,
        c: c_int,
    );
    fn smelt_emu_embedding_backward_wpe_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dwpe: *mut f32,
        dout: *const u16,
        b: c_int,
        t: c_int,
        c: c_int,
    );
    fn smelt_emu_embedding_backward_wte_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        dwte: *mut f32,
        dout: *const u16,
        bucket_offsets: *const c_int,
        bucket_tokens: *const c_int,
        positions: *const c_int,
        num_buckets: c_int,
        c: c_int,
    );
    fn smelt_emu_fill(grid: Dim3, block: Dim3, smem: u32, x: *mut f32, value: f32, n: c_long);
}

/// `x` as a C `int`; panics when it does not fit.
fn int(x: usize) -> c_int {
    c_int::try_from(x).expect("size does not fit a C int")
}

/// `ceil(a / b)`, at least 1 (a grid never has zero blocks; the kernels check bounds).
fn blocks(a: usize, b: usize) -> u32 {
    u32::try_from(a.div_ceil(b).max(1)).expect("grid too large")
}

/// Threads per block of the column-parallel embedding kernels: `c` rounded up to a warp,
/// at most 256.
fn column_block(c: usize) -> u32 {
    (c.div_ceil(32) * 32).clamp(32, BLOCK as usize) as u32
}

/// Ids as the kernels' C `int`s, after checking each is below `limit`.
fn ids_as_int<'a>(ids: &'a [u32], limit: usize, what: &str) -> &'a [c_int] {
    assert!(
        limit <= c_int::MAX as usize && ids.iter().all(|&id| (id as usize) < limit),
        "{what}: id out of range"
    );
    // Every id is below c_int::MAX, so its u32 bits are the same non-negative c_int; u32 and
    // c_int (i32) have the same size and alignment.
    bytemuck::cast_slice(ids)
}

// ----------------------------------------------------------------------------
// cross-entropy

/// `cross_entropy_forward`: one block of 256 per row.
pub fn cross_entropy_forward_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, 1)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `mean_reduce`: a single block of 256 (a fixed summation order).
pub fn mean_reduce_launch() -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(1),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `cross_entropy_backward`: one block of 256 per row.
pub fn cross_entropy_backward_launch(n: usize) -> LaunchDims {
    cross_entropy_forward_launch(n)
}

fn check_cross_entropy(
    what: &str,
    logits: usize,
    lse: usize,
    targets: usize,
    n: usize,
    v: usize,
    vp: usize,
) {
    assert!(v > 0 && v <= vp, "{what}: need 0 < v <= vp");
    assert_eq!(logits, n * vp, "{what}: logits must be n*vp");
    assert!(lse == n && targets == n, "{what}: lse, targets must be n");
}

/// Mean cross-entropy of `logits (n,vp)` over the first `v` columns into `loss[0]`, and the
/// per-row log-sum-exp `lse (n)`; as `kernels::cross_entropy_forward`. Runs
/// `cross_entropy_forward` (per-row losses into a temporary) then `mean_reduce`.
pub fn cross_entropy_forward(
    loss: &mut [f32],
    lse: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_forward",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    assert_eq!(
        loss.len(),
        1,
        "cross_entropy_forward: loss must have length 1"
    );
    let targets = ids_as_int(targets, v, "cross_entropy_forward: targets");
    let mut losses = vec![f32::NAN; n];
    let d = cross_entropy_forward_launch(n);
    let r = mean_reduce_launch();
    // SAFETY: lengths checked above (logits n*vp, lse, targets and losses n, loss 1); every
    // target is < v <= vp, so z[target] stays inside its row. Outputs are unique borrows or
    // the local `losses`.
    unsafe {
        smelt_emu_cross_entropy_forward(
            d.grid,
            d.block,
            d.smem,
            losses.as_mut_ptr(),
            lse.as_mut_ptr(),
            logits.as_ptr(),
            targets.as_ptr(),
            int(n),
            int(v),
            int(vp),
        );
        smelt_emu_mean_reduce(
            r.grid,
            r.block,
            r.smem,
            loss.as_mut_ptr(),
            losses.as_ptr(),
            int(n),
        );
    }
}

/// `out[0]` = the mean of `x`, summed in a fixed order by one block.
pub fn mean_reduce(out: &mut [f32], x: &[f32]) {
    assert_eq!(out.len(), 1, "mean_reduce: out must have length 1");
    let r = mean_reduce_launch();
    // SAFETY: the kernel reads x[..n] and writes out[0].
    unsafe {
        smelt_emu_mean_reduce(
            r.grid,
            r.block,
            r.smem,
            out.as_mut_ptr(),
            x.as_ptr(),
            int(x.len()),
        );
    }
}

/// `dlogits (n,vp)` from `logits`, `lse` and `targets` for an upstream gradient `dloss` of the
/// mean loss; as `kernels::cross_entropy_backward`.
pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    logits: &[f32],
    lse: &[f32],
    targets: &[u32],
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_backward",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    assert_eq!(
        dlogits.len(),
        n * vp,
        "cross_entropy_backward: dlogits must be n*vp"
    );
    let targets = ids_as_int(targets, v, "cross_entropy_backward: targets");
    let d = cross_entropy_backward_launch(n);
    // SAFETY: lengths checked above; dlogits is a unique borrow.
    unsafe {
        smelt_emu_cross_entropy_backward(
            d.grid,
            d.block,
            d.smem,
            dlogits.as_mut_ptr(),
            logits.as_ptr(),
            lse.as_ptr(),
            targets.as_ptr(),
            dloss,
            int(n),
            int(v),
            int(vp),
        );
    }
}

/// [`cross_entropy_backward`] writing the gradient over the logits themselves (the aliased
/// call the CUDA backend makes when the planner reuses the logits' memory).
pub fn cross_entropy_backward_in_place(
    logits: &mut [f32],
    lse: &[f32],
    targets: &[u32],
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_backward",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    let targets = ids_as_int(targets, v, "cross_entropy_backward: targets");
    let d = cross_entropy_backward_launch(n);
    let ptr = logits.as_mut_ptr();
    // SAFETY: lengths checked above. dlogits and logits are the same buffer, which the kernel
    // allows: each element is read and then written by the same thread.
    unsafe {
        smelt_emu_cross_entropy_backward(
            d.grid,
            d.block,
            d.smem,
            ptr,
            ptr,
            lse.as_ptr(),
            targets.as_ptr(),
            dloss,
            int(n),
            int(v),
            int(vp),
        );
    }
}

// ----------------------------------------------------------------------------
// embeddings

/// `embedding_forward`: grid `(b*t, ceil(c / B))`, block `B` = `c` rounded up to a warp, at
/// most 256.
pub fn embedding_forward_launch(b: usize, t: usize, c: usize) -> LaunchDims {
    let block = column_block(c);
    LaunchDims {
        grid: Dim3 {
            x: blocks(b * t, 1),
            y: blocks(c, block as usize),
            z: 1,
        },
        block: Dim3::x(block),
        smem: 0,
    }
}

/// `embedding_backward_wpe`: one thread per element of the first `t` rows of `dwpe`.
pub fn embedding_backward_wpe_launch(t: usize, c: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(t * c, BLOCK as usize)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
}

/// `embedding_backward_wte`: grid `(num_buckets, ceil(c / B))`, block `B` as
/// [`embedding_forward_launch`].
pub fn embedding_backward_wte_launch(num_buckets: usize, c: usize) -> LaunchDims {
    let block = column_block(c);
    LaunchDims {
        grid: Dim3 {
            x: blocks(num_buckets, 1),
            y: blocks(c, block as usize),
            z: 1,
        },
        block: Dim3::x(block),
        smem: 0,
    }
}

/// `fill`: grid-stride, `min(ceil(n / 256), 65536)` blocks of 256.
pub fn fill_launch(n: usize) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(blocks(n, BLOCK as usize).min(MAX_FILL_BLOCKS as u32)),
        block: Dim3::x(BLOCK),
        smem: 0,
    }
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

/// `x[..] = value`.
pub fn fill(x: &mut [f32], value: f32) {
    let d = fill_launch(x.len());
    // SAFETY: the kernel writes x[..len] only.
    unsafe {
        smelt_emu_fill(
            d.grid,
            d.block,
            d.smem,
            x.as_mut_ptr(),
            value,
            c_long::try_from(x.len()).expect("fill: too long"),
        );
    }
}

/// `out (b,t,c) = wte[tokens] + wpe[position]`; as `kernels::embedding_forward`.
pub fn embedding_forward(
    out: &mut [f32],
    tokens: &[u32],
    wte: &[f32],
    wpe: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(out.len(), b * t * c, "embedding_forward: out must be b*t*c");
    assert_eq!(tokens.len(), b * t, "embedding_forward: tokens must be b*t");
    if c == 0 {
        return;
    }
    assert!(
        wte.len().is_multiple_of(c) && wpe.len() >= t * c,
        "embedding_forward: wte must be vocab*c, wpe needs at least t rows"
    );
    int(b * t * c);
    let tokens = ids_as_int(tokens, wte.len() / c, "embedding_forward: tokens");
    let d = embedding_forward_launch(b, t, c);
    // SAFETY: lengths checked above; every token is a row of wte; out is a unique borrow.
    unsafe {
        smelt_emu_embedding_forward(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            tokens.as_ptr(),
            wte.as_ptr(),
            wpe.as_ptr(),
            int(b),
            int(t),
            int(c),
        );
    }
}

/// Gradients `dwte (vocab,c)` and `dwpe (max_t,c)` from `dout (b,t,c)`, both fully
/// overwritten; as `kernels::embedding_backward`. Deterministic: `fill` zeroes `dwte` and
/// the rows `t..` of `dwpe`, `embedding_backward_wte` writes the rows of the tokens present
/// (buckets from [`token_buckets`]), `embedding_backward_wpe` the first `t` rows of `dwpe`.
pub fn embedding_backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    tokens: &[u32],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(
        dout.len(),
        b * t * c,
        "embedding_backward: dout must be b*t*c"
    );
    assert_eq!(
        tokens.len(),
        b * t,
        "embedding_backward: tokens must be b*t"
    );
    assert!(
        c > 0 && dwte.len().is_multiple_of(c),
        "embedding_backward: dwte must be vocab*c"
    );
    assert!(
        dwpe.len().is_multiple_of(c) && dwpe.len() >= t * c,
        "embedding_backward: dwpe needs >= t rows"
    );
    int(b * t * c);
    let vocab = dwte.len() / c;
    let (offsets, bucket_tokens, positions) = token_buckets(tokens, vocab);
    fill(dwte, 0.0);
    fill(&mut dwpe[t * c..], 0.0);
    let wte = embedding_backward_wte_launch(bucket_tokens.len(), c);
    let wpe = embedding_backward_wpe_launch(t, c);
    // SAFETY: lengths checked above. The buckets come from token_buckets: offsets has
    // num_buckets + 1 increasing entries within positions, every position is a row of dout
    // (< b*t) and every bucket token a row of dwte (< vocab). dwpe's first t rows exist.
    unsafe {
        smelt_emu_embedding_backward_wte(
            wte.grid,
            wte.block,
            wte.smem,
            dwte.as_mut_ptr(),
            dout.as_ptr(),
            offsets.as_ptr(),
            bucket_tokens.as_ptr(),
            positions.as_ptr(),
            int(bucket_tokens.len()),
            int(c),
        );
        smelt_emu_embedding_backward_wpe(
            wpe.grid,
            wpe.block,
            wpe.smem,
            dwpe.as_mut_ptr(),
            dout.as_ptr(),
            int(b),
            int(t),
            int(c),
        );
    }
}

// ----------------------------------------------------------------------------
// bf16 storage

/// [`cross_entropy_forward`] on bf16 `logits (n,vp)` (bit patterns): the per-row `losses (n)`
/// and `lse (n)` (f32, from `cross_entropy_forward_bf16`), then their mean into `loss[0]`
/// (`mean_reduce`). Geometry of [`cross_entropy_forward_launch`].
pub fn cross_entropy_forward_bf16(
    loss: &mut [f32],
    losses: &mut [f32],
    lse: &mut [f32],
    logits: &[u16],
    targets: &[u32],
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_forward_bf16",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    assert_eq!(
        loss.len(),
        1,
        "cross_entropy_forward_bf16: loss must have length 1"
    );
    assert_eq!(
        losses.len(),
        n,
        "cross_entropy_forward_bf16: losses must be n"
    );
    let targets = ids_as_int(targets, v, "cross_entropy_forward_bf16: targets");
    let d = cross_entropy_forward_launch(n);
    let r = mean_reduce_launch();
    // SAFETY: lengths checked above (logits n*vp bf16 as u16, the layout of __nv_bfloat16;
    // lse, targets, losses n; loss 1); every target is < v <= vp. Outputs are unique borrows.
    unsafe {
        smelt_emu_cross_entropy_forward_bf16(
            d.grid,
            d.block,
            d.smem,
            losses.as_mut_ptr(),
            lse.as_mut_ptr(),
            logits.as_ptr(),
            targets.as_ptr(),
            int(n),
            int(v),
            int(vp),
        );
        smelt_emu_mean_reduce(
            r.grid,
            r.block,
            r.smem,
            loss.as_mut_ptr(),
            losses.as_ptr(),
            int(n),
        );
    }
}

/// [`cross_entropy_backward`] with bf16 `logits` and `dlogits (n,vp)` (bit patterns; the
/// padded columns `v..vp` get 0), f32 `lse`. Geometry of [`cross_entropy_backward_launch`].
pub fn cross_entropy_backward_bf16(
    dlogits: &mut [u16],
    logits: &[u16],
    lse: &[f32],
    targets: &[u32],
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_backward_bf16",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    assert_eq!(
        dlogits.len(),
        n * vp,
        "cross_entropy_backward_bf16: dlogits must be n*vp"
    );
    let targets = ids_as_int(targets, v, "cross_entropy_backward_bf16: targets");
    let d = cross_entropy_backward_launch(n);
    // SAFETY: lengths checked above; bf16 as u16 (the layout of __nv_bfloat16); dlogits is a
    // unique borrow.
    unsafe {
        smelt_emu_cross_entropy_backward_bf16(
            d.grid,
            d.block,
            d.smem,
            dlogits.as_mut_ptr(),
            logits.as_ptr(),
            lse.as_ptr(),
            targets.as_ptr(),
            dloss,
            int(n),
            int(v),
            int(vp),
        );
    }
}

/// [`cross_entropy_backward_bf16`] writing the gradient over the bf16 logits themselves.
pub fn cross_entropy_backward_bf16_in_place(
    logits: &mut [u16],
    lse: &[f32],
    targets: &[u32],
    dloss: f32,
    n: usize,
    v: usize,
    vp: usize,
) {
    check_cross_entropy(
        "cross_entropy_backward_bf16",
        logits.len(),
        lse.len(),
        targets.len(),
        n,
        v,
        vp,
    );
    let targets = ids_as_int(targets, v, "cross_entropy_backward_bf16: targets");
    let d = cross_entropy_backward_launch(n);
    let ptr = logits.as_mut_ptr();
    // SAFETY: lengths checked above. dlogits and logits are the same buffer, which the kernel
    // allows: each element is read and then written by the same thread.
    unsafe {
        smelt_emu_cross_entropy_backward_bf16(
            d.grid,
            d.block,
            d.smem,
            ptr,
            ptr,
            lse.as_ptr(),
            targets.as_ptr(),
            dloss,
            int(n),
            int(v),
            int(vp),
        );
    }
}

/// [`embedding_forward`] into a bf16 `out (b,t,c)` (bit patterns): `bf16(wte[token] +
/// wpe[position])`, the sum in f32. Geometry of [`embedding_forward_launch`].
pub fn embedding_forward_bf16(
    out: &mut [u16],
    tokens: &[u32],
    wte: &[f32],
    wpe: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(
        out.len(),
        b * t * c,
        "embedding_forward_bf16: out must be b*t*c"
    );
    assert_eq!(
        tokens.len(),
        b * t,
        "embedding_forward_bf16: tokens must be b*t"
    );
    if c == 0 {
        return;
    }
    assert!(
        wte.len().is_multiple_of(c) && wpe.len() >= t * c,
        "embedding_forward_bf16: wte must be vocab*c, wpe needs at least t rows"
    );
    int(b * t * c);
    let tokens = ids_as_int(tokens, wte.len() / c, "embedding_forward_bf16: tokens");
    let d = embedding_forward_launch(b, t, c);
    // SAFETY: lengths checked above; every token is a row of wte; out (u16, the layout of
    // __nv_bfloat16) is a unique borrow.
    unsafe {
        smelt_emu_embedding_forward_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            tokens.as_ptr(),
            wte.as_ptr(),
            wpe.as_ptr(),
            int(b),
            int(t),
            int(c),
        );
    }
}

/// `embedding_backward_wte_bf16` alone, on explicit buckets (CSR as [`token_buckets`]):
/// for each bucket `k` with `bucket_tokens[k] >= 0`, `dwte[token, :] = Σ dout[p, :]` (f32,
/// positions in the given order) over `positions[offsets[k]..offsets[k + 1]]`; buckets with a
/// negative token are padding and write nothing, and rows of `dwte` in no bucket are left as
/// they are. `dout` is `(rows, c)` bf16 bit patterns. Geometry of
/// [`embedding_backward_wte_launch`].
pub fn embedding_backward_wte_bf16(
    dwte: &mut [f32],
    dout: &[u16],
    bucket_offsets: &[i32],
    bucket_tokens: &[i32],
    positions: &[i32],
    c: usize,
) {
    assert!(
        c > 0 && dwte.len().is_multiple_of(c) && dout.len().is_multiple_of(c),
        "embedding_backward_wte_bf16: dwte must be vocab*c, dout rows*c"
    );
    let (vocab, rows) = (dwte.len() / c, dout.len() / c);
    let nb = bucket_tokens.len();
    assert_eq!(
        bucket_offsets.len(),
        nb + 1,
        "embedding_backward_wte_bf16: bucket_offsets must have one entry per bucket, plus one"
    );
    assert!(
        bucket_offsets[0] >= 0
            && bucket_offsets.windows(2).all(|w| w[0] <= w[1])
            && bucket_offsets[nb] as usize <= positions.len(),
        "embedding_backward_wte_bf16: bucket_offsets must increase within positions"
    );
    assert!(
        positions.iter().all(|&p| p >= 0 && (p as usize) < rows),
        "embedding_backward_wte_bf16: position out of range"
    );
    assert!(
        bucket_tokens.iter().all(|&tok| (tok as i64) < vocab as i64),
        "embedding_backward_wte_bf16: token >= vocab"
    );
    int(dout.len());
    if nb == 0 {
        return;
    }
    let d = embedding_backward_wte_launch(nb, c);
    // SAFETY: checked above: offsets has nb + 1 non-decreasing entries within positions,
    // every position is a row of dout and every non-negative bucket token a row of dwte
    // (negative ones write nothing); dout is u16, the layout of __nv_bfloat16.
    unsafe {
        smelt_emu_embedding_backward_wte_bf16(
            d.grid,
            d.block,
            d.smem,
            dwte.as_mut_ptr(),
            dout.as_ptr(),
            bucket_offsets.as_ptr(),
            bucket_tokens.as_ptr(),
            positions.as_ptr(),
            int(nb),
            int(c),
        );
    }
}

/// [`embedding_backward`] from a bf16 `dout (b,t,c)` (bit patterns): `dwte (vocab,c)` and
/// `dwpe (max_t,c)` in f32, both fully overwritten (`fill`, then
/// `embedding_backward_wte_bf16` on [`token_buckets`] and `embedding_backward_wpe_bf16`).
pub fn embedding_backward_bf16(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[u16],
    tokens: &[u32],
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(
        dout.len(),
        b * t * c,
        "embedding_backward_bf16: dout must be b*t*c"
    );
    assert_eq!(
        tokens.len(),
        b * t,
        "embedding_backward_bf16: tokens must be b*t"
    );
    assert!(
        c > 0 && dwte.len().is_multiple_of(c),
        "embedding_backward_bf16: dwte must be vocab*c"
    );
    assert!(
        dwpe.len().is_multiple_of(c) && dwpe.len() >= t * c,
        "embedding_backward_bf16: dwpe needs >= t rows"
    );
    int(b * t * c);
    let vocab = dwte.len() / c;
    let (offsets, bucket_tokens, positions) = token_buckets(tokens, vocab);
    fill(dwte, 0.0);
    fill(&mut dwpe[t * c..], 0.0);
    embedding_backward_wte_bf16(dwte, dout, &offsets, &bucket_tokens, &positions, c);
    let wpe = embedding_backward_wpe_launch(t, c);
    // SAFETY: lengths checked above: dout holds b*t*c bf16 (u16) and dwpe's first t rows
    // exist; the kernel writes dwpe[..t*c] only.
    unsafe {
        smelt_emu_embedding_backward_wpe_bf16(
            wpe.grid,
            wpe.block,
            wpe.smem,
            dwpe.as_mut_ptr(),
            dout.as_ptr(),
            int(b),
            int(t),
            int(c),
        );
    }
}
