#include "common.cuh"

// Token + position embeddings, f32. Counterparts of kernels::embedding_forward /
// embedding_backward. Tokens are int32 (b, t); wte is (vocab, c), wpe is (max_t, c), t <= max_t.
//
// embedding_forward: grid (b*t, ceil(c / B)), block B = clamp(round_up(c, 32), 32, 256): one
// block row per token position, one thread per column.
// embedding_backward_wpe: dwpe[p, j] = Σ_bi dout[bi, p, j] for p < t, bi in increasing order;
// one thread per (p, j) (block 256, grid ceil(t*c / 256)). Rows t.. are left to `fill`.
// embedding_backward_wte, deterministic without atomics: the host groups the (b*t) positions by
// token into buckets (CSR: bucket k is token bucket_tokens[k], positions
// positions[bucket_offsets[k] .. bucket_offsets[k+1]] in increasing order; see
// src/backend/kernels/embedding.rs `token_buckets`). Grid (num_buckets, ceil(c / B)), block B as above:
// each thread sums its column over the bucket's positions in order and WRITES dwte[token, j].
// Rows of tokens absent from the batch are not touched: `fill` dwte with 0 first. A bucket whose
// token is negative is padding and writes nothing (so a launch over b*t buckets, a fixed grid
// that a CUDA graph can replay, serves every batch). The order of
// additions is the CPU kernel's (positions in increasing order), so the results match it.
// fill: x[i] = value, grid-stride (block 256, grid min(ceil(n / 256), 65536)).
//
// bf16 storage variants (same geometry): embedding_forward_bf16 writes out in bf16 (the f32 sum
// wte + wpe rounded to nearest even); embedding_backward_wte_bf16 / _wpe_bf16 read a bf16 dout
// and accumulate and write dwte / dwpe in f32, in the same order as the f32 kernels. The
// tables wte and wpe, and their gradients, stay f32.

// Storage helpers: element i of an f32 or bf16 buffer as a float, and a float stored back.
static __device__ __forceinline__ float emb_load(const float* p, long i) { return p[i]; }
static __device__ __forceinline__ float emb_load(const __nv_bfloat16* p, long i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ void emb_store(float* p, long i, float v) { p[i] = v; }
static __device__ __forceinline__ void emb_store(__nv_bfloat16* p, long i, float v) {
    p[i] = __float2bfloat16(v);
}

template <typename T>
static __device__ __forceinline__ void emb_forward(T* __restrict__ out,
                                                   const int* __restrict__ tokens,
                                                   const float* __restrict__ wte,
                                                   const float* __restrict__ wpe, int b, int t,
                                                   int c) {
    const long row = blockIdx.x;
    const int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (row >= (long)b * t || j >= c) return;
    const long tok = tokens[row];
    const long pos = row % t;
    emb_store(out, row * c + j, wte[tok * c + j] + wpe[pos * c + j]);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_forward(float* __restrict__ out, const int* __restrict__ tokens,
                      const float* __restrict__ wte, const float* __restrict__ wpe, int b, int t,
                      int c) {
    emb_forward(out, tokens, wte, wpe, b, t, c);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_forward_bf16(__nv_bfloat16* __restrict__ out, const int* __restrict__ tokens,
                           const float* __restrict__ wte, const float* __restrict__ wpe, int b,
                           int t, int c) {
    emb_forward(out, tokens, wte, wpe, b, t, c);
}

template <typename T>
static __device__ __forceinline__ void emb_backward_wpe(float* __restrict__ dwpe,
                                                        const T* __restrict__ dout, int b, int t,
                                                        int c) {
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const long tc = (long)t * c;
    if (idx >= tc) return;
    float acc = 0.0f;
    for (int bi = 0; bi < b; bi++) acc += emb_load(dout, bi * tc + idx);
    dwpe[idx] = acc;
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_backward_wpe(float* __restrict__ dwpe, const float* __restrict__ dout, int b, int t,
                           int c) {
    emb_backward_wpe(dwpe, dout, b, t, c);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_backward_wpe_bf16(float* __restrict__ dwpe, const __nv_bfloat16* __restrict__ dout,
                                int b, int t, int c) {
    emb_backward_wpe(dwpe, dout, b, t, c);
}

template <typename T>
static __device__ __forceinline__ void emb_backward_wte(float* __restrict__ dwte,
                                                        const T* __restrict__ dout,
                                                        const int* __restrict__ bucket_offsets,
                                                        const int* __restrict__ bucket_tokens,
                                                        const int* __restrict__ positions,
                                                        int num_buckets, int c) {
    const int k = blockIdx.x;
    const int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (k >= num_buckets || j >= c) return;
    const int token = bucket_tokens[k];
    if (token < 0) return;  // padding: the device backend launches b*t buckets every step
    const int end = bucket_offsets[k + 1];
    float acc = 0.0f;
    for (int p = bucket_offsets[k]; p < end; p++)
        acc += emb_load(dout, (long)positions[p] * c + j);
    dwte[(long)token * c + j] = acc;
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_backward_wte(float* __restrict__ dwte, const float* __restrict__ dout,
                           const int* __restrict__ bucket_offsets,
                           const int* __restrict__ bucket_tokens,
                           const int* __restrict__ positions, int num_buckets, int c) {
    emb_backward_wte(dwte, dout, bucket_offsets, bucket_tokens, positions, num_buckets, c);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_backward_wte_bf16(float* __restrict__ dwte, const __nv_bfloat16* __restrict__ dout,
                                const int* __restrict__ bucket_offsets,
                                const int* __restrict__ bucket_tokens,
                                const int* __restrict__ positions, int num_buckets, int c) {
    emb_backward_wte(dwte, dout, bucket_offsets, bucket_tokens, positions, num_buckets, c);
}

extern "C" __global__ void __launch_bounds__(256) fill(float* __restrict__ x, float value, long n) {
    const long stride = (long)gridDim.x * blockDim.x;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) x[i] = value;
}
