#include "common.cuh"

// Fused softmax + cross-entropy over the first v of vp columns of logits (n, vp), f32.
// Counterparts of kernels::cross_entropy_forward / cross_entropy_backward.
//
// cross_entropy_forward: one block per row (launch: block 256, grid n). Each thread runs an
// online softmax (running max and sum of exp(z - max)) over columns tid, tid + 256, ... < v;
// the (max, sum) pairs are then merged in a fixed tree (warp shuffles, then warp 0 over the
// warps). Probabilities are never stored. Writes lse[row] and losses[row] = lse - z[target].
// mean_reduce: one block (launch: block 256, grid 1) sums x in a fixed order, out[0] = Σ/n.
// cross_entropy_backward: one block per row (launch: block 256, grid n); dlogits may alias
// logits (every element is read, then written, by the same thread).
//
// bf16 storage variants (same geometry): cross_entropy_forward_bf16 reads bf16 logits and
// writes the same f32 losses and lse (then the f32 mean_reduce); cross_entropy_backward_bf16
// reads bf16 logits and writes bf16 dlogits (may be the logits buffer itself, as above), the
// padded columns v..vp as 0. Logits are widened to f32 on load, arithmetic is the f32 kernel's,
// and dlogits are rounded to bf16 (to nearest even) on the store.

// Storage helpers: element i of an f32 or bf16 buffer as a float, and a float stored back.
static __device__ __forceinline__ float ce_load(const float* p, long i) { return p[i]; }
static __device__ __forceinline__ float ce_load(const __nv_bfloat16* p, long i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ void ce_store(float* p, long i, float v) { p[i] = v; }
static __device__ __forceinline__ void ce_store(__nv_bfloat16* p, long i, float v) {
    p[i] = __float2bfloat16(v);
}

// Merges the online-softmax state (m2, s2) into (m, s): sum of exp(z - m) over both parts.
static __device__ __forceinline__ void ce_merge(float& m, float& s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;  // both parts empty
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
}

template <typename T>
static __device__ __forceinline__ void ce_forward(float* __restrict__ losses,
                                                  float* __restrict__ lse,
                                                  const T* __restrict__ logits,
                                                  const int* __restrict__ targets, int n, int v,
                                                  int vp) {
    __shared__ float warp_m[32];
    __shared__ float warp_s[32];
    const int row = blockIdx.x;
    if (row >= n) return;  // whole block: uniform
    const T* z = logits + (long)row * vp;
    float m = -INFINITY;
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        const float zj = ce_load(z, j);
        if (zj > m) {
            s = s * expf(m - zj) + 1.0f;
            m = zj;
        } else {
            s += expf(zj - m);
        }
    }
    // Tree over the warp: lane 0 ends with the warp's state.
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_down_sync(0xffffffff, m, o);
        const float s2 = __shfl_down_sync(0xffffffff, s, o);
        ce_merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (lane == 0) {
        warp_m[warp] = m;
        warp_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        const int warps = blockDim.x / 32;
        m = lane < warps ? warp_m[lane] : -INFINITY;
        s = lane < warps ? warp_s[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_down_sync(0xffffffff, m, o);
            const float s2 = __shfl_down_sync(0xffffffff, s, o);
            ce_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            const float l = m + logf(s);
            lse[row] = l;
            losses[row] = l - ce_load(z, targets[row]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    cross_entropy_forward(float* __restrict__ losses, float* __restrict__ lse,
                          const float* __restrict__ logits, const int* __restrict__ targets,
                          int n, int v, int vp) {
    ce_forward(losses, lse, logits, targets, n, v, vp);
}

extern "C" __global__ void __launch_bounds__(256)
    cross_entropy_forward_bf16(float* __restrict__ losses, float* __restrict__ lse,
                               const __nv_bfloat16* __restrict__ logits,
                               const int* __restrict__ targets, int n, int v, int vp) {
    ce_forward(losses, lse, logits, targets, n, v, vp);
}

extern "C" __global__ void __launch_bounds__(256)
    mean_reduce(float* __restrict__ out, const float* __restrict__ x, int n) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) out[0] = s / (float)n;
}

// dlogits[i, j] = dloss/n * (softmax_ij - [j == target_i]) for j < v, 0 for v <= j < vp.
template <typename T>
static __device__ __forceinline__ void ce_backward(T* dlogits, const T* logits,
                                                   const float* __restrict__ lse,
                                                   const int* __restrict__ targets, float dloss,
                                                   int n, int v, int vp) {
    const int row = blockIdx.x;
    if (row >= n) return;
    const float g = dloss / (float)n;
    const float l = lse[row];
    const int target = targets[row];
    const long base = (long)row * vp;
    for (int j = threadIdx.x; j < vp; j += blockDim.x) {
        float d = 0.0f;
        if (j < v) {
            const float p = expf(ce_load(logits, base + j) - l);
            d = g * (p - (j == target ? 1.0f : 0.0f));
        }
        ce_store(dlogits, base + j, d);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    cross_entropy_backward(float* dlogits, const float* logits, const float* __restrict__ lse,
                           const int* __restrict__ targets, float dloss, int n, int v, int vp) {
    ce_backward(dlogits, logits, lse, targets, dloss, n, v, vp);
}

// dlogits may be logits itself (in place).
extern "C" __global__ void __launch_bounds__(256)
    cross_entropy_backward_bf16(__nv_bfloat16* dlogits, const __nv_bfloat16* logits,
                                const float* __restrict__ lse, const int* __restrict__ targets,
                                float dloss, int n, int v, int vp) {
    ce_backward(dlogits, logits, lse, targets, dloss, n, v, vp);
}
