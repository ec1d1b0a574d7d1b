#include "common.cuh"
// attention.cu: fused causal self-attention, FlashAttention-2 style, f32 (plain FMA math).
//
// Layouts (GPT-2 / HF): qkv (b, t, 3c) = [Q | K | V] per row, head h at columns h*hs..;
// out (b, t, c) merged heads; lse (b, nh, t) = log Σ_{j≤i} exp(scale · q_i·k_j), the value the
// CPU kernel saves; scale = 1/sqrt(hs); hs = c / nh ≤ ATT_MAX_HS (128).
//
// Tiling (all three main kernels): ATT_TILE (32) rows per tile, ATT_THREADS (128 = 4 warps)
// per block, blockIdx.y = b*nh + h, blockIdx.x = tile (largest causal work first). Each warp
// owns ATT_ROWS_PER_WARP (8) rows of the block's tile; inside a warp, lane j is column j of the
// 8 x 32 score sub-tile (one dot product per row), and for the accumulators (O, dQ, dK, dV)
// lane l owns head dims l, l+32, l+64, l+96 of its 8 rows (registers). Operand tiles live in
// dynamic shared memory; tiles that lanes read row-wise (one row per lane) have a padded row
// stride hs+1 so the 32 lanes hit 32 banks; tiles read by broadcast are unpadded.
// The two products per tile (scores = A·Bᵀ and acc += P·C) are the separate helpers below, so
// they can become mma.sync calls without touching the softmax logic.
//
// Forward (attention_forward): per query tile, loop over key/value tiles up to the causal
// limit with an online softmax (running max m and sum l per row, rescaling the accumulator
// by exp(m_old - m_new)); never a t x t buffer.
//
// Backward (three kernels, deterministic, no float atomics):
//   attention_backward_preprocess: D_i = Σ_d dO_id·O_id per (b, h, i) into scratch (b,nh,t).
//   attention_backward_dkdv: per key tile, loop over query tiles j0.. t, recompute
//     P = exp(scale·S - lse), dP = dO·Vᵀ, dS = P∘(dP - D)·scale; dV += Pᵀ dO, dK += dSᵀ Q in
//     registers; write the K and V parts of dqkv.
//   attention_backward_dq: per query tile, loop over key tiles up to the causal limit,
//     recompute P and dS the same way and accumulate dQ += dS K in registers (option (a): one
//     more recomputation of S and dP instead of partial sums or atomics; each dQ element is
//     summed by one thread in a fixed order). Writes the Q part of dqkv.
//
// Dynamic shared memory (floats) by hs: forward 32·(3hs+1) + 1024; dkdv 32·(4hs+2) + 2048
// + 64; dq 32·(4hs+2) + 1024 + 64. For hs = 64 (GPT-2) all are < 48 KiB; hs = 128 needs the
// CUDA backend to opt in (cudaFuncAttributeMaxDynamicSharedMemorySize) to up to 74 KiB.

#define ATT_TILE 32
#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_ROWS_PER_WARP (ATT_TILE / ATT_WARPS)
#define ATT_MAX_HS 128
#define ATT_DCHUNKS (ATT_MAX_HS / 32)

// Copies rows [row0, row0 + ATT_TILE) of one head's (t, hs) slice (row stride `ld` floats in
// global memory, first element at `src`) into shared memory with row stride `sld`; rows past
// t are zero. All threads of the block take part.
static __device__ __forceinline__ void att_load_tile(float* dst, int sld, const float* src,
                                                     long long ld, int row0, int t, int hs) {
    for (int e = threadIdx.x; e < ATT_TILE * hs; e += ATT_THREADS) {
        const int r = e / hs, d = e % hs;
        const int row = row0 + r;
        dst[r * sld + d] = row < t ? src[(long long)row * ld + d] : 0.0f;
    }
}

// s[r] = a_r · b_lane for the warp's ATT_ROWS_PER_WARP rows: `a` points at the warp's first
// row (row stride lda, read by broadcast), `b` at this lane's row (read contiguously per lane).
static __device__ __forceinline__ void att_dot_rows(float (&s)[ATT_ROWS_PER_WARP],
                                                    const float* a, int lda, const float* b,
                                                    int hs) {
    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) s[r] = 0.0f;
    for (int d = 0; d < hs; d++) {
        const float bd = b[d];
        SMELT_UNROLL
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) s[r] = fmaf(a[r * lda + d], bd, s[r]);
    }
}

// acc[r][k] += Σ_j p[r][j] · c[j][lane + 32k]: p is the warp's (ATT_ROWS_PER_WARP, 32) tile in
// shared memory (row stride 32), c the block's (32, hs) tile with row stride ldc.
static __device__ __forceinline__ void att_accumulate(float (&acc)[ATT_ROWS_PER_WARP][ATT_DCHUNKS],
                                                      const float* p, const float* c, int ldc,
                                                      int hs, int lane) {
    for (int j = 0; j < ATT_TILE; j++) {
        float cj[ATT_DCHUNKS];
        SMELT_UNROLL
        for (int k = 0; k < ATT_DCHUNKS; k++) {
            const int d = lane + 32 * k;
            cj[k] = d < hs ? c[j * ldc + d] : 0.0f;
        }
        SMELT_UNROLL
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const float prj = p[r * ATT_TILE + j];
            SMELT_UNROLL
            for (int k = 0; k < ATT_DCHUNKS; k++) acc[r][k] = fmaf(prj, cj[k], acc[r][k]);
        }
    }
}

// Tiles in the causal direction: tile index from blockIdx.x, the heaviest (last) tile first.
static __device__ __forceinline__ int att_tile_desc() { return gridDim.x - 1 - blockIdx.x; }
static __device__ __forceinline__ int att_tile_asc() { return blockIdx.x; }

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_forward(float* out, float* lse, const float* qkv, int b, int t, int c, int nh) {
    const int hs = c / nh;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int q0 = att_tile_desc() * ATT_TILE;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int rw = warp * ATT_ROWS_PER_WARP;  // the warp's first row in the tile
    const float scale = 1.0f / sqrtf((float)hs);
    const long long ld = 3LL * c;
    const float* q_g = qkv + (long long)bi * t * ld + h * hs;
    const float* k_g = q_g + c;
    const float* v_g = q_g + 2 * c;

    float* q_s = smem;                             // (32, hs)    broadcast reads
    float* k_s = q_s + ATT_TILE * hs;              // (32, hs+1)  one row per lane
    float* v_s = k_s + ATT_TILE * (hs + 1);        // (32, hs)    row-contiguous reads
    float* p_s = v_s + ATT_TILE * hs;              // (4 warps, 8, 32)
    float* p_w = p_s + warp * ATT_ROWS_PER_WARP * ATT_TILE;

    att_load_tile(q_s, hs, q_g, ld, q0, t, hs);

    float o[ATT_ROWS_PER_WARP][ATT_DCHUNKS];
    float m[ATT_ROWS_PER_WARP], l[ATT_ROWS_PER_WARP];
    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        SMELT_UNROLL
        for (int k = 0; k < ATT_DCHUNKS; k++) o[r][k] = 0.0f;
    }

    const int kv_end = min(q0 + ATT_TILE, t);  // keys beyond the last query are masked
    for (int k0 = 0; k0 < kv_end; k0 += ATT_TILE) {
        __syncthreads();  // the previous tile's K, V are no longer read
        att_load_tile(k_s, hs + 1, k_g, ld, k0, t, hs);
        att_load_tile(v_s, hs, v_g, ld, k0, t, hs);
        __syncthreads();

        float s[ATT_ROWS_PER_WARP];
        att_dot_rows(s, q_s + rw * hs, hs, k_s + lane * (hs + 1), hs);
        const int j = k0 + lane;
        SMELT_UNROLL
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const int i = q0 + rw + r;
            const float sr = (j <= i && j < t) ? s[r] * scale : -INFINITY;
            // Key 0 is in the first tile and visible to every row, so m_new is finite.
            const float m_new = fmaxf(m[r], warp_reduce_max(sr));
            const float p = expf(sr - m_new);
            const float alpha = expf(m[r] - m_new);
            l[r] = l[r] * alpha + warp_reduce_sum(p);
            m[r] = m_new;
            SMELT_UNROLL
            for (int k = 0; k < ATT_DCHUNKS; k++) o[r][k] *= alpha;
            p_w[r * ATT_TILE + lane] = p;
        }
        __syncwarp();
        att_accumulate(o, p_w, v_s, hs, hs, lane);
        __syncwarp();  // p_w is rewritten next tile
    }

    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        const int i = q0 + rw + r;
        if (i < t) {
            const float inv = 1.0f / l[r];
            float* o_g = out + ((long long)bi * t + i) * c + h * hs;
            SMELT_UNROLL
            for (int k = 0; k < ATT_DCHUNKS; k++) {
                const int d = lane + 32 * k;
                if (d < hs) o_g[d] = o[r][k] * inv;
            }
            if (lane == 0) lse[(long long)bh * t + i] = m[r] + logf(l[r]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// D[(b*nh + h)*t + i] = Σ_d dout[b,i,h*hs+d] · out[b,i,h*hs+d]: one warp per (b, i, h).
// T is the storage type of dout and out (f32, or bf16 widened to f32 on load); D is f32.
static __device__ __forceinline__ float att_load(const float* p, int i) { return p[i]; }
static __device__ __forceinline__ float att_load(const __nv_bfloat16* p, int i) {
    return __bfloat162float(p[i]);
}

template <typename T>
static __device__ __forceinline__ void att_backward_preprocess(float* dsum, const T* dout,
                                                               const T* out, int b, int t, int c,
                                                               int nh) {
    const int hs = c / nh;
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const long long rows = (long long)b * t * nh;
    float acc = 0.0f;
    if (row < rows) {
        const long long bt = row / nh;  // b*t + i
        const int h = row % nh;
        const T* go = dout + bt * c + h * hs;
        const T* o = out + bt * c + h * hs;
        for (int d = lane; d < hs; d += 32) acc = fmaf(att_load(go, d), att_load(o, d), acc);
    }
    acc = warp_reduce_sum(acc);
    if (row < rows && lane == 0) {
        const long long bt = row / nh;
        const int h = row % nh;
        const long long bi = bt / t, i = bt % t;
        dsum[(bi * nh + h) * t + i] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
    attention_backward_preprocess(float* dsum, const float* dout, const float* out, int b,
                                  int t, int c, int nh) {
    att_backward_preprocess(dsum, dout, out, b, t, c, nh);
}

// bf16 storage of dout and out (mixed precision), same geometry; D stays f32.
extern "C" __global__ void __launch_bounds__(256)
    attention_backward_preprocess_bf16(float* dsum, const __nv_bfloat16* dout,
                                       const __nv_bfloat16* out, int b, int t, int c, int nh) {
    att_backward_preprocess(dsum, dout, out, b, t, c, nh);
}

// Per key tile: dK and dV. Rows of the warp are keys; lanes are queries.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dkdv(float* dqkv, const float* dout, const float* qkv, const float* lse,
                            const float* dsum, int b, int t, int c, int nh) {
    const int hs = c / nh;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int k0 = att_tile_asc() * ATT_TILE;  // first key tile has the most queries
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int rw = warp * ATT_ROWS_PER_WARP;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long ld = 3LL * c;
    const float* q_g = qkv + (long long)bi * t * ld + h * hs;
    const float* k_g = q_g + c;
    const float* v_g = q_g + 2 * c;
    const float* do_g = dout + (long long)bi * t * c + h * hs;
    const float* lse_g = lse + (long long)bh * t;
    const float* d_g = dsum + (long long)bh * t;

    float* k_s = smem;                             // (32, hs)    broadcast
    float* v_s = k_s + ATT_TILE * hs;              // (32, hs)    broadcast
    float* q_s = v_s + ATT_TILE * hs;              // (32, hs+1)  one row per lane / rows
    float* do_s = q_s + ATT_TILE * (hs + 1);       // (32, hs+1)
    float* p_s = do_s + ATT_TILE * (hs + 1);       // (4 warps, 8, 32)
    float* ds_s = p_s + ATT_WARPS * ATT_ROWS_PER_WARP * ATT_TILE;
    float* lse_s = ds_s + ATT_WARPS * ATT_ROWS_PER_WARP * ATT_TILE;  // (32)
    float* dd_s = lse_s + ATT_TILE;                                  // (32)
    float* p_w = p_s + warp * ATT_ROWS_PER_WARP * ATT_TILE;
    float* ds_w = ds_s + warp * ATT_ROWS_PER_WARP * ATT_TILE;

    att_load_tile(k_s, hs, k_g, ld, k0, t, hs);
    att_load_tile(v_s, hs, v_g, ld, k0, t, hs);

    float dk[ATT_ROWS_PER_WARP][ATT_DCHUNKS], dv[ATT_ROWS_PER_WARP][ATT_DCHUNKS];
    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        SMELT_UNROLL
        for (int k = 0; k < ATT_DCHUNKS; k++) dk[r][k] = dv[r][k] = 0.0f;
    }

    for (int q0 = k0; q0 < t; q0 += ATT_TILE) {
        __syncthreads();  // the previous query tile is no longer read
        att_load_tile(q_s, hs + 1, q_g, ld, q0, t, hs);
        att_load_tile(do_s, hs + 1, do_g, c, q0, t, hs);
        if (threadIdx.x < ATT_TILE) {
            const int i = q0 + threadIdx.x;
            lse_s[threadIdx.x] = i < t ? lse_g[i] : 0.0f;
            dd_s[threadIdx.x] = i < t ? d_g[i] : 0.0f;
        }
        __syncthreads();

        // Sᵀ and dPᵀ for the warp's 8 keys against the 32 queries of the tile.
        float s[ATT_ROWS_PER_WARP], dp[ATT_ROWS_PER_WARP];
        att_dot_rows(s, k_s + rw * hs, hs, q_s + lane * (hs + 1), hs);
        att_dot_rows(dp, v_s + rw * hs, hs, do_s + lane * (hs + 1), hs);
        const int i = q0 + lane;
        const float lse_i = lse_s[lane], d_i = dd_s[lane];
        SMELT_UNROLL
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const int j = k0 + rw + r;
            const bool live = j <= i && i < t;
            const float p = live ? expf(s[r] * scale - lse_i) : 0.0f;
            p_w[r * ATT_TILE + lane] = p;
            ds_w[r * ATT_TILE + lane] = live ? p * (dp[r] - d_i) * scale : 0.0f;
        }
        __syncwarp();
        att_accumulate(dv, p_w, do_s, hs + 1, hs, lane);
        att_accumulate(dk, ds_w, q_s, hs + 1, hs, lane);
        __syncwarp();
    }

    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        const int j = k0 + rw + r;
        if (j < t) {
            float* dk_g = dqkv + ((long long)bi * t + j) * ld + c + h * hs;
            float* dv_g = dk_g + c;
            SMELT_UNROLL
            for (int k = 0; k < ATT_DCHUNKS; k++) {
                const int d = lane + 32 * k;
                if (d < hs) {
                    dk_g[d] = dk[r][k];
                    dv_g[d] = dv[r][k];
                }
            }
        }
    }
}

// Per query tile: dQ. Rows of the warp are queries; lanes are keys.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dq(float* dqkv, const float* dout, const float* qkv, const float* lse,
                          const float* dsum, int b, int t, int c, int nh) {
    const int hs = c / nh;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int q0 = att_tile_desc() * ATT_TILE;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int rw = warp * ATT_ROWS_PER_WARP;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long ld = 3LL * c;
    const float* q_g = qkv + (long long)bi * t * ld + h * hs;
    const float* k_g = q_g + c;
    const float* v_g = q_g + 2 * c;
    const float* do_g = dout + (long long)bi * t * c + h * hs;
    const float* lse_g = lse + (long long)bh * t;
    const float* d_g = dsum + (long long)bh * t;

    float* q_s = smem;                             // (32, hs)    broadcast
    float* do_s = q_s + ATT_TILE * hs;             // (32, hs)    broadcast
    float* k_s = do_s + ATT_TILE * hs;             // (32, hs+1)  one row per lane / rows
    float* v_s = k_s + ATT_TILE * (hs + 1);        // (32, hs+1)  one row per lane
    float* ds_s = v_s + ATT_TILE * (hs + 1);       // (4 warps, 8, 32)
    float* lse_s = ds_s + ATT_WARPS * ATT_ROWS_PER_WARP * ATT_TILE;  // (32)
    float* dd_s = lse_s + ATT_TILE;                                  // (32)
    float* ds_w = ds_s + warp * ATT_ROWS_PER_WARP * ATT_TILE;

    att_load_tile(q_s, hs, q_g, ld, q0, t, hs);
    att_load_tile(do_s, hs, do_g, c, q0, t, hs);
    if (threadIdx.x < ATT_TILE) {
        const int i = q0 + threadIdx.x;
        lse_s[threadIdx.x] = i < t ? lse_g[i] : 0.0f;
        dd_s[threadIdx.x] = i < t ? d_g[i] : 0.0f;
    }

    float dq[ATT_ROWS_PER_WARP][ATT_DCHUNKS];
    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        SMELT_UNROLL
        for (int k = 0; k < ATT_DCHUNKS; k++) dq[r][k] = 0.0f;
    }

    const int kv_end = min(q0 + ATT_TILE, t);
    for (int k0 = 0; k0 < kv_end; k0 += ATT_TILE) {
        __syncthreads();
        att_load_tile(k_s, hs + 1, k_g, ld, k0, t, hs);
        att_load_tile(v_s, hs + 1, v_g, ld, k0, t, hs);
        __syncthreads();

        float s[ATT_ROWS_PER_WARP], dp[ATT_ROWS_PER_WARP];
        att_dot_rows(s, q_s + rw * hs, hs, k_s + lane * (hs + 1), hs);
        att_dot_rows(dp, do_s + rw * hs, hs, v_s + lane * (hs + 1), hs);
        const int j = k0 + lane;
        SMELT_UNROLL
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const int i = q0 + rw + r;
            const bool live = j <= i && i < t;
            const float p = live ? expf(s[r] * scale - lse_s[rw + r]) : 0.0f;
            ds_w[r * ATT_TILE + lane] = live ? p * (dp[r] - dd_s[rw + r]) * scale : 0.0f;
        }
        __syncwarp();
        att_accumulate(dq, ds_w, k_s, hs + 1, hs, lane);
        __syncwarp();
    }

    SMELT_UNROLL
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        const int i = q0 + rw + r;
        if (i < t) {
            float* dq_g = dqkv + ((long long)bi * t + i) * ld + h * hs;
            SMELT_UNROLL
            for (int k = 0; k < ATT_DCHUNKS; k++) {
                const int d = lane + 32 * k;
                if (d < hs) dq_g[d] = dq[r][k];
            }
        }
    }
}
