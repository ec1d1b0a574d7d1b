#include "common.cuh"

// LayerNorm over the last dimension of x (n, c), f32. Counterparts of
// kernels::layernorm_forward / layernorm_backward (and kernels::add for the fused residual).
//
// Forward: one warp per row, `blockDim.x / 32` rows per block (launch: block 256, grid
// ceil(n / 8)). Mean and variance are two passes over the row (as the CPU kernel), biased
// variance; mean and rstd are saved per row for the backward pass. Every kernel reads and
// writes rows in 16-byte chunks where aligned (see "Chunks" below).
//
// Backward, deterministic (no float atomics), ONE kernel (layernorm_backward[_bf16]): grid G
// blocks of W warps; global warp g handles rows g, g + G*W, ... in increasing order. It writes
// dx and accumulates dweight/dbias contributions of its rows into its own slice of dynamic
// shared memory (W * 2 * c floats). Then:
//   1. each block sums its warps' slices in warp order into scratch:
//        scratch[k * c + j]       = dweight partial of block k   (k < G)
//        scratch[(G + k) * c + j] = dbias partial of block k
//      (2 * G * c floats), fences (__threadfence) and adds 1 to the block counter `counter`;
//   2. the block that brings the counter to G (the last to finish, whichever it is) fences
//      again, sums the G partials of each column in block order 0, 1, ..., G - 1 and WRITES
//      (does not add to) dweight[j] and dbias[j], then stores 0 into the counter.
// Which block finishes last varies from run to run, but the sum it computes does not: the
// geometry depends only on (n, c) (see src/backend/kernels/layernorm.rs) and the partials are
// summed in a fixed order, so results are bit-identical from run to run.
// The counter is a 4-byte word that must hold 0 when the kernel starts (allocate it zeroed);
// the kernel leaves it 0, so the same word serves every later launch (and graph replay) on
// the stream. Launches sharing a counter must not run concurrently.
//
// dx may alias dout (each element is read and then written by the same thread); no other
// output may alias an input.
//
// bf16 storage variants (`*_bf16`, same geometry, scratch and counter as the f32 kernels): the
// activations x, out, residual_out, dout and dx are bf16; w, b, mean, rstd, the scratch
// partials and dweight/dbias stay f32. Each bf16 value is
// widened to f32 on load, all arithmetic is the f32 kernel's, and results are rounded to bf16
// (to nearest even) on the store. fused_residual_layernorm_forward_bf16 normalises the ROUNDED
// sum bf16(a + b) - the residual it stores - so it computes exactly what add_bf16 followed by
// layernorm_forward_bf16 would.

// Chunks: a warp's lane works on chunks of N = LnVec<T>::N elements of the row, 16 bytes of
// storage (4 f32 or 8 bf16): chunk g is elements g*N .. g*N + N-1 and lane l takes chunks l,
// l + 32, l + 64, ... A chunk moves with 16-byte accesses when the pointers of the row (and w,
// b) are 16-byte aligned and the chunk lies within c; otherwise (a misaligned view, a row not
// starting on 16 bytes because c is not a multiple of N, the partial last chunk of a row)
// element by element. Both ways the lane does the same arithmetic in the same order: the
// results do not depend on alignment. (The per-lane order differs from one element per lane,
// so sums round differently from that layout, within the tolerances.)
template <typename T>
struct LnVec;
template <>
struct LnVec<float> {
    static constexpr int N = 4;
};
template <>
struct LnVec<__nv_bfloat16> {
    static constexpr int N = 8;
};

// Elements i .. i+N-1 of p as floats (N a multiple of 4, i a multiple of N): 16-byte loads when
// `vec` (p 16-byte aligned) and i + N <= c, else one by one; elements at or past c read as 0.
template <int N>
static __device__ __forceinline__ void ln_load_chunk(const float* p, int i, int c, bool vec,
                                                     float (&v)[N]) {
    if (vec && i + N <= c) {
        SMELT_UNROLL
        for (int k = 0; k < N; k += 4) {
            const float4 q = *reinterpret_cast<const float4*>(p + i + k);
            v[k] = q.x;
            v[k + 1] = q.y;
            v[k + 2] = q.z;
            v[k + 3] = q.w;
        }
    } else {
        SMELT_UNROLL
        for (int k = 0; k < N; k++) v[k] = i + k < c ? p[i + k] : 0.0f;
    }
}
static __device__ __forceinline__ void ln_load_chunk(const __nv_bfloat16* p, int i, int c,
                                                     bool vec, float (&v)[8]) {
    if (vec && i + 8 <= c) {
        smelt_unpack_bf16x8(*reinterpret_cast<const uint4*>(p + i), v);
    } else {
        SMELT_UNROLL
        for (int k = 0; k < 8; k++) v[k] = i + k < c ? __bfloat162float(p[i + k]) : 0.0f;
    }
}

// v stored into elements i .. i+N-1 of p, those below c only (bf16: rounded to nearest even).
template <int N>
static __device__ __forceinline__ void ln_store_chunk(float* p, int i, int c, bool vec,
                                                      const float (&v)[N]) {
    if (vec && i + N <= c) {
        SMELT_UNROLL
        for (int k = 0; k < N; k += 4)
            *reinterpret_cast<float4*>(p + i + k) = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
    } else {
        SMELT_UNROLL
        for (int k = 0; k < N; k++)
            if (i + k < c) p[i + k] = v[k];
    }
}
static __device__ __forceinline__ void ln_store_chunk(__nv_bfloat16* p, int i, int c, bool vec,
                                                      const float (&v)[8]) {
    if (vec && i + 8 <= c) {
        *reinterpret_cast<uint4*>(p + i) = smelt_pack_bf16x8(v);
    } else {
        SMELT_UNROLL
        for (int k = 0; k < 8; k++)
            if (i + k < c) p[i + k] = __float2bfloat16(v[k]);
    }
}

// Column sums of the backward: out_w[j] = sum over k < count of w_rows[k * stride + j] (and
// out_b of b_rows), the rows added in order, four columns per thread of the block (so each
// column is summed in the same order as one by one). `in_vec` / `out_vec`: 16-byte accesses
// allowed (ln_load_chunk, ln_store_chunk).
static __device__ __forceinline__ void ln_sum_columns(float* out_w, float* out_b, bool out_vec,
                                                      const float* w_rows, const float* b_rows,
                                                      long stride, int count, bool in_vec,
                                                      int c) {
    for (int j = 4 * threadIdx.x; j < c; j += 4 * blockDim.x) {
        float sw[4] = {}, sb[4] = {};
        for (int k = 0; k < count; k++) {
            float vw[4], vb[4];
            ln_load_chunk(w_rows + k * stride, j, c, in_vec, vw);
            ln_load_chunk(b_rows + k * stride, j, c, in_vec, vb);
            SMELT_UNROLL
            for (int q = 0; q < 4; q++) {
                sw[q] += vw[q];
                sb[q] += vb[q];
            }
        }
        ln_store_chunk(out_w, j, c, out_vec, sw);
        ln_store_chunk(out_b, j, c, out_vec, sb);
    }
}

// Mean and rstd of one row (read by one warp), then the normalised, scaled, shifted row. T is
// the storage type of the row and of out (float or __nv_bfloat16).
template <typename T>
static __device__ __forceinline__ void ln_row(T* __restrict__ out, float* __restrict__ mean,
                                              float* __restrict__ rstd, const T* xr,
                                              const float* __restrict__ w,
                                              const float* __restrict__ b, int row, int c,
                                              float eps, int lane) {
    constexpr int N = LnVec<T>::N;
    T* o = out + (long)row * c;
    const bool vec =
        smelt_aligned16(xr) && smelt_aligned16(o) && smelt_aligned16(w) && smelt_aligned16(b);
    const float inv_c = 1.0f / (float)c;
    float v[N];
    float s = 0.0f;
    for (int i = lane * N; i < c; i += 32 * N) {
        ln_load_chunk(xr, i, c, vec, v);
        SMELT_UNROLL
        for (int k = 0; k < N; k++) s += v[k];  // + 0 past c: the same bits
    }
    const float m = warp_reduce_sum(s) * inv_c;
    float var = 0.0f;
    for (int i = lane * N; i < c; i += 32 * N) {
        ln_load_chunk(xr, i, c, vec, v);
        SMELT_UNROLL
        for (int k = 0; k < N; k++) {
            const float d = i + k < c ? v[k] - m : 0.0f;
            var += d * d;
        }
    }
    const float r = rsqrtf(warp_reduce_sum(var) * inv_c + eps);
    for (int i = lane * N; i < c; i += 32 * N) {
        float wv[N], bv[N];
        ln_load_chunk(xr, i, c, vec, v);
        ln_load_chunk(w, i, c, vec, wv);
        ln_load_chunk(b, i, c, vec, bv);
        SMELT_UNROLL
        for (int k = 0; k < N; k++) v[k] = (v[k] - m) * r * wv[k] + bv[k];
        ln_store_chunk(o, i, c, vec, v);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

template <typename T>
static __device__ __forceinline__ void ln_forward(T* __restrict__ out, float* __restrict__ mean,
                                                  float* __restrict__ rstd,
                                                  const T* __restrict__ x,
                                                  const float* __restrict__ w,
                                                  const float* __restrict__ b, int n, int c,
                                                  float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;
    ln_row(out, mean, rstd, x + (long)row * c, w, b, row, c, eps, lane);
}

extern "C" __global__ void __launch_bounds__(256)
    layernorm_forward(float* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                      const float* __restrict__ x, const float* __restrict__ w,
                      const float* __restrict__ b, int n, int c, float eps) {
    ln_forward(out, mean, rstd, x, w, b, n, c, eps);
}

extern "C" __global__ void __launch_bounds__(256)
    layernorm_forward_bf16(__nv_bfloat16* __restrict__ out, float* __restrict__ mean,
                           float* __restrict__ rstd, const __nv_bfloat16* __restrict__ x,
                           const float* __restrict__ w, const float* __restrict__ b, int n,
                           int c, float eps) {
    ln_forward(out, mean, rstd, x, w, b, n, c, eps);
}

// residual_out = a + b (stored as T, so rounded for bf16), then the layernorm of residual_out
// as stored. residual_out may alias a or b (each element is read and written by the same
// thread); out must not alias anything.
template <typename T>
static __device__ __forceinline__ void ln_fused_residual_forward(
    T* residual_out, T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
    const T* a, const T* b, const float* __restrict__ w, const float* __restrict__ bias, int n,
    int c, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n) return;
    constexpr int N = LnVec<T>::N;
    const long base = (long)row * c;
    T* res = residual_out + base;
    const bool vec =
        smelt_aligned16(res) && smelt_aligned16(a + base) && smelt_aligned16(b + base);
    for (int i = lane * N; i < c; i += 32 * N) {
        float u[N], v[N];
        ln_load_chunk(a + base, i, c, vec, u);
        ln_load_chunk(b + base, i, c, vec, v);
        SMELT_UNROLL
        for (int k = 0; k < N; k++) u[k] += v[k];
        ln_store_chunk(res, i, c, vec, u);
    }
    // ln_row reads back only the chunks this lane wrote: no synchronisation needed.
    ln_row(out, mean, rstd, res, w, bias, row, c, eps, lane);
}

extern "C" __global__ void __launch_bounds__(256)
    fused_residual_layernorm_forward(float* residual_out, float* __restrict__ out,
                                     float* __restrict__ mean, float* __restrict__ rstd,
                                     const float* a, const float* b, const float* __restrict__ w,
                                     const float* __restrict__ bias, int n, int c, float eps) {
    ln_fused_residual_forward(residual_out, out, mean, rstd, a, b, w, bias, n, c, eps);
}

extern "C" __global__ void __launch_bounds__(256)
    fused_residual_layernorm_forward_bf16(__nv_bfloat16* residual_out,
                                          __nv_bfloat16* __restrict__ out,
                                          float* __restrict__ mean, float* __restrict__ rstd,
                                          const __nv_bfloat16* a, const __nv_bfloat16* b,
                                          const float* __restrict__ w,
                                          const float* __restrict__ bias, int n, int c,
                                          float eps) {
    ln_fused_residual_forward(residual_out, out, mean, rstd, a, b, w, bias, n, c, eps);
}

template <typename T>
static __device__ __forceinline__ void ln_backward(T* dx, float* __restrict__ dweight,
                                                   float* __restrict__ dbias, float* scratch,
                                                   unsigned int* counter, const T* dout,
                                                   const T* __restrict__ x,
                                                   const float* __restrict__ w,
                                                   const float* __restrict__ mean,
                                                   const float* __restrict__ rstd, int n, int c) {
    // smem: [warps][2][c]: dweight then dbias accumulators
    constexpr int N = LnVec<T>::N;
    const int warps = blockDim.x / 32;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    float* acc_w = smem + (long)warp * 2 * c;
    float* acc_b = acc_w + c;
    // smem is 16-byte aligned, so every slice is when c is a multiple of 4.
    const bool acc_vec = c % 4 == 0;
    // Each lane owns the columns of its chunks in its warp's accumulators.
    const float zero[N] = {};
    for (int i = lane * N; i < c; i += 32 * N) {
        ln_store_chunk(acc_w, i, c, acc_vec, zero);
        ln_store_chunk(acc_b, i, c, acc_vec, zero);
    }
    const float inv_c = 1.0f / (float)c;
    for (int row = blockIdx.x * warps + warp; row < n; row += gridDim.x * warps) {
        const long base = (long)row * c;
        const T* dr = dout + base;
        const T* xr = x + base;
        T* dxr = dx + base;
        const bool vec = smelt_aligned16(dr) && smelt_aligned16(xr) && smelt_aligned16(dxr) &&
                         smelt_aligned16(w);
        const float m = mean[row];
        const float s = rstd[row];
        float dnorm_mean = 0.0f;
        float dnorm_norm_mean = 0.0f;
        // Past c every chunk reads 0 (d = 0, so every term below adds 0: the same bits) and
        // the accumulators are not stored.
        for (int i = lane * N; i < c; i += 32 * N) {
            float d[N], xv[N], wv[N], aw[N], ab[N];
            ln_load_chunk(dr, i, c, vec, d);
            ln_load_chunk(xr, i, c, vec, xv);
            ln_load_chunk(w, i, c, vec, wv);
            ln_load_chunk(acc_w, i, c, acc_vec, aw);
            ln_load_chunk(acc_b, i, c, acc_vec, ab);
            SMELT_UNROLL
            for (int k = 0; k < N; k++) {
                const float norm = (xv[k] - m) * s;
                const float dnorm = d[k] * wv[k];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
                aw[k] += d[k] * norm;
                ab[k] += d[k];
            }
            ln_store_chunk(acc_w, i, c, acc_vec, aw);
            ln_store_chunk(acc_b, i, c, acc_vec, ab);
        }
        dnorm_mean = warp_reduce_sum(dnorm_mean) * inv_c;
        dnorm_norm_mean = warp_reduce_sum(dnorm_norm_mean) * inv_c;
        for (int i = lane * N; i < c; i += 32 * N) {
            float d[N], xv[N], wv[N];
            ln_load_chunk(dr, i, c, vec, d);
            ln_load_chunk(xr, i, c, vec, xv);
            ln_load_chunk(w, i, c, vec, wv);
            SMELT_UNROLL
            for (int k = 0; k < N; k++) {
                const float norm = (xv[k] - m) * s;
                xv[k] = s * (d[k] * wv[k] - dnorm_mean - norm * dnorm_norm_mean);
            }
            ln_store_chunk(dxr, i, c, vec, xv);
        }
    }
    __syncthreads();
    // This block's column sums (of its warps' accumulators) into its partials.
    const int blocks = gridDim.x;
    float* part_w = scratch + (long)blockIdx.x * c;
    float* part_b = scratch + (long)(blocks + blockIdx.x) * c;
    const bool part_vec = acc_vec && smelt_aligned16(scratch);
    ln_sum_columns(part_w, part_b, part_vec, smem, smem + c, 2L * c, warps, acc_vec, c);
    // This block's partials, visible to every block before the counter says the block is done.
    __threadfence();
    __syncthreads();
    unsigned int last = 0;
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == (unsigned int)blocks - 1u;
    // No barrier follows: every block but the last is done (convention 5 holds).
    if (!__syncthreads_or(last)) return;
    // The last block: every other block fenced its partials before its increment, which this
    // block's thread 0 has seen; fence before reading them.
    __threadfence();
    const bool out_vec = part_vec && smelt_aligned16(dweight) && smelt_aligned16(dbias);
    ln_sum_columns(dweight, dbias, out_vec, scratch, scratch + (long)blocks * c, c, blocks,
                   part_vec, c);
    // Every block has counted itself: zero the counter for the next launch.
    if (threadIdx.x == 0) *counter = 0u;
}

// dx (may alias dout), then dweight/dbias (written, not accumulated) by the last block to
// finish; scratch holds 2 * gridDim.x * c floats, counter is 0 on entry and left 0.
extern "C" __global__ void __launch_bounds__(256)
    layernorm_backward(float* dx, float* __restrict__ dweight, float* __restrict__ dbias,
                       float* scratch, unsigned int* counter, const float* dout,
                       const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ mean, const float* __restrict__ rstd, int n,
                       int c) {
    ln_backward(dx, dweight, dbias, scratch, counter, dout, x, w, mean, rstd, n, c);
}

// bf16 dx, dout, x; everything else as layernorm_backward (f32 partials, dweight, dbias).
extern "C" __global__ void __launch_bounds__(256)
    layernorm_backward_bf16(__nv_bfloat16* dx, float* __restrict__ dweight,
                            float* __restrict__ dbias, float* scratch, unsigned int* counter,
                            const __nv_bfloat16* dout, const __nv_bfloat16* __restrict__ x,
                            const float* __restrict__ w, const float* __restrict__ mean,
                            const float* __restrict__ rstd, int n, int c) {
    ln_backward(dx, dweight, dbias, scratch, counter, dout, x, w, mean, rstd, n, c);
}
