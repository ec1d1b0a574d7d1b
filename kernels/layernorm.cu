#include "common.cuh"

// LayerNorm over the last dimension of x (n, c), f32. Counterparts of
// kernels::layernorm_forward / layernorm_backward (and kernels::add for the fused residual).
//
// Forward: one warp per row, `blockDim.x / 32` rows per block (launch: block 256, grid
// ceil(n / 8)). Mean and variance are two passes over the row (as the CPU kernel), biased
// variance; mean and rstd are saved per row for the backward pass.
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

// Storage helpers: element i of an f32 or bf16 buffer as a float, and a float stored back.
static __device__ __forceinline__ float ln_load(const float* p, int i) { return p[i]; }
static __device__ __forceinline__ float ln_load(const __nv_bfloat16* p, int i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ void ln_store(float* p, int i, float v) { p[i] = v; }
static __device__ __forceinline__ void ln_store(__nv_bfloat16* p, int i, float v) {
    p[i] = __float2bfloat16(v);
}

// Mean and rstd of one row (read by one warp), then the normalised, scaled, shifted row. T is
// the storage type of the row and of out (float or __nv_bfloat16).
template <typename T>
static __device__ __forceinline__ void ln_row(T* __restrict__ out, float* __restrict__ mean,
                                              float* __restrict__ rstd, const T* xr,
                                              const float* __restrict__ w,
                                              const float* __restrict__ b, int row, int c,
                                              float eps, int lane) {
    const float inv_c = 1.0f / (float)c;
    float s = 0.0f;
    for (int i = lane; i < c; i += 32) s += ln_load(xr, i);
    const float m = warp_reduce_sum(s) * inv_c;
    float var = 0.0f;
    for (int i = lane; i < c; i += 32) {
        const float d = ln_load(xr, i) - m;
        var += d * d;
    }
    const float r = rsqrtf(warp_reduce_sum(var) * inv_c + eps);
    T* o = out + (long)row * c;
    for (int i = lane; i < c; i += 32) ln_store(o, i, (ln_load(xr, i) - m) * r * w[i] + b[i]);
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
    const long base = (long)row * c;
    T* res = residual_out + base;
    for (int i = lane; i < c; i += 32)
        ln_store(res, i, ln_load(a + base, i) + ln_load(b + base, i));
    // ln_row reads back only the elements this lane wrote: no synchronisation needed.
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
    const int warps = blockDim.x / 32;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    float* acc_w = smem + (long)warp * 2 * c;
    float* acc_b = acc_w + c;
    // Each lane owns columns lane, lane + 32, ... of its warp's accumulators.
    for (int i = lane; i < c; i += 32) {
        acc_w[i] = 0.0f;
        acc_b[i] = 0.0f;
    }
    const float inv_c = 1.0f / (float)c;
    for (int row = blockIdx.x * warps + warp; row < n; row += gridDim.x * warps) {
        const long base = (long)row * c;
        const T* dr = dout + base;
        const T* xr = x + base;
        const float m = mean[row];
        const float s = rstd[row];
        float dnorm_mean = 0.0f;
        float dnorm_norm_mean = 0.0f;
        for (int i = lane; i < c; i += 32) {
            const float d = ln_load(dr, i);
            const float norm = (ln_load(xr, i) - m) * s;
            const float dnorm = d * w[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
            acc_w[i] += d * norm;
            acc_b[i] += d;
        }
        dnorm_mean = warp_reduce_sum(dnorm_mean) * inv_c;
        dnorm_norm_mean = warp_reduce_sum(dnorm_norm_mean) * inv_c;
        T* dxr = dx + base;
        for (int i = lane; i < c; i += 32) {
            const float norm = (ln_load(xr, i) - m) * s;
            ln_store(dxr, i, s * (ln_load(dr, i) * w[i] - dnorm_mean - norm * dnorm_norm_mean));
        }
    }
    __syncthreads();
    const int blocks = gridDim.x;
    float* part_w = scratch + (long)blockIdx.x * c;
    float* part_b = scratch + (long)(blocks + blockIdx.x) * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        float sw = 0.0f;
        float sb = 0.0f;
        for (int k = 0; k < warps; k++) {
            sw += smem[(long)k * 2 * c + j];
            sb += smem[(long)k * 2 * c + c + j];
        }
        part_w[j] = sw;
        part_b[j] = sb;
    }
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
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        float sw = 0.0f;
        float sb = 0.0f;
        for (int k = 0; k < blocks; k++) {
            sw += scratch[(long)k * c + j];
            sb += scratch[(long)(blocks + k) * c + j];
        }
        dweight[j] = sw;
        dbias[j] = sb;
    }
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
