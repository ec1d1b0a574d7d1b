//! `kernels/embedding.cu`: token + position embedding forward, and its deterministic backward
//! (wte rows by token buckets, no float atomics; wpe rows by position); f32 or bf16
//! activations. Also `fill`.

use super::bf16;
use super::{blocks, kernels, Dim3, LaunchDims};

/// Threads per block of the row and element-wise kernels.
const BLOCK: u32 = 256;

/// Grid cap of the grid-stride `fill`.
const MAX_FILL_BLOCKS: usize = 65536;

/// Threads per block of the column-parallel embedding kernels: `c` rounded up to a warp,
/// at most 256.
fn column_block(c: usize) -> u32 {
    (c.div_ceil(32) * 32).clamp(32, BLOCK as usize) as u32
}

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

kernels! {
    fn embedding_forward(out: *mut f32, tokens: *const i32, wte: *const f32, wpe: *const f32, b: i32, t: i32, c: i32)
        => embedding_forward_launch(b as usize, t as usize, c as usize);
    fn embedding_forward_bf16(out: *mut bf16, tokens: *const i32, wte: *const f32, wpe: *const f32, b: i32, t: i32, c: i32)
        => embedding_forward_launch(b as usize, t as usize, c as usize);
    fn embedding_backward_wpe(dwpe: *mut f32, dout: *const f32, b: i32, t: i32, c: i32)
        => embedding_backward_wpe_launch(t as usize, c as usize);
    fn embedding_backward_wpe_bf16(dwpe: *mut f32, dout: *const bf16, b: i32, t: i32, c: i32)
        => embedding_backward_wpe_launch(t as usize, c as usize);
    fn embedding_backward_wte(dwte: *mut f32, dout: *const f32, bucket_offsets: *const i32, bucket_tokens: *const i32, positions: *const i32, num_buckets: i32, c: i32)
        => embedding_backward_wte_launch(num_buckets as usize, c as usize);
    fn embedding_backward_wte_bf16(dwte: *mut f32, dout: *const bf16, bucket_offsets: *const i32, bucket_tokens: *const i32, positions: *const i32, num_buckets: i32, c: i32)
        => embedding_backward_wte_launch(num_buckets as usize, c as usize);
    fn fill(x: *mut f32, value: f32, n: i64)
        => fill_launch(n as usize);
}
