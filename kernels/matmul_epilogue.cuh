// matmul_epilogue.cuh: what the tensor-core matmuls (matmul.cu, matmul_wgmma.cu) do with an
// f32 sum on its way out: GPT-2's GELU and the stores by output type.
#pragma once

// GPT-2's tanh GELU, gelu(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x +
// 0.044715 x^3): the same formula and constants as smelt_gelu in elementwise.cu (its twin; keep
// them identical; matmul_f32.cu has a third copy). Kernel files stand alone (nvcc and the
// emulation include every kernels/*.cu into one unit, but a file that depends on another's
// helpers breaks when files are renamed or compiled alone); the tensor-core matmuls share
// this header instead.
static __device__ __forceinline__ float matmul_gelu(float x) {
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x * (1.0f / (1.0f + expf(-(u + u))));
}

// Epilogue stores by output type: one element, or the pair (v0, v1) at p (p aligned to twice
// the element size: float2 / __nv_bfloat162). bf16 outputs are rounded to nearest even.
static __device__ __forceinline__ void matmul_store1(float* p, float v) { *p = v; }
static __device__ __forceinline__ void matmul_store1(__nv_bfloat16* p, float v) {
    *p = __float2bfloat16(v);
}
static __device__ __forceinline__ void matmul_store2(float* p, float v0, float v1) {
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
}
static __device__ __forceinline__ void matmul_store2(__nv_bfloat16* p, float v0, float v1) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
}

// Whether the epilogue may store column pairs as one float2 (__nv_bfloat162): n even and both
// outputs aligned to a pair.
template <typename OutT>
static __device__ __forceinline__ bool matmul_pairs_aligned(const OutT* out, const OutT* gelu_out,
                                                            int n) {
    constexpr unsigned long long pair_mask = 2 * sizeof(OutT) - 1;
    return n % 2 == 0 && (reinterpret_cast<unsigned long long>(out) & pair_mask) == 0 &&
           (reinterpret_cast<unsigned long long>(gelu_out) & pair_mask) == 0;
}

// out[r, col..col+1] = (v0, v1) + bias, and gelu_out the GELU of those f32 values (before any
// rounding to bf16), for the columns < n; `pairs`: matmul_pairs_aligned. Rows >= m: nothing.
template <typename OutT>
static __device__ __forceinline__ void matmul_store_pair(OutT* __restrict__ out,
                                                         OutT* __restrict__ gelu_out,
                                                         const float* __restrict__ bias, int m,
                                                         int n, int r, int col, float v0, float v1,
                                                         bool pairs) {
    if (r >= m) return;
    if (bias != nullptr && col < n) v0 += bias[col];
    if (bias != nullptr && col + 1 < n) v1 += bias[col + 1];
    const size_t at = static_cast<size_t>(r) * n + col;
    const bool gelu = gelu_out != nullptr;
    if (pairs && col + 1 < n) {
        matmul_store2(out + at, v0, v1);
        if (gelu) matmul_store2(gelu_out + at, matmul_gelu(v0), matmul_gelu(v1));
    } else {
        if (col < n) matmul_store1(out + at, v0);
        if (col + 1 < n) matmul_store1(out + at + 1, v1);
        if (gelu && col < n) matmul_store1(gelu_out + at, matmul_gelu(v0));
        if (gelu && col + 1 < n) matmul_store1(gelu_out + at + 1, matmul_gelu(v1));
    }
}
