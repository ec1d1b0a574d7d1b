#include "common.cuh"

// Column sums of a row-major (m, n) matrix, out[j] = Σ_i x[i, j] (the bias gradient), f32.
// Counterpart of kernels::sum_rows. Deterministic in two kernels (no float atomics):
//
//   sum_rows_partial: block (32, 8). Block (bx, by) owns the 32 columns 32·bx .. 32·bx + 31
//     and the chunk of rows by·R .. min(m, (by + 1)·R), R = ceil(m / gridDim.y). Thread
//     (tx, ty) sums column 32·bx + tx over the chunk's rows ty, ty + 8, ... in increasing
//     order (a warp reads 32 consecutive floats of one row: coalesced along n); the 8 row
//     lanes are then added in order ty = 0..7 through shared memory into
//     partials[by · n + j]. The grid (ceil(n / 32), G) depends only on (m, n)
//     (src/backend/kernels/reduce.rs: sum_rows_partial_launch), so the result does too.
//   sum_rows_final: one thread per column (block 256, grid ceil(n / 256)) sums the G partials
//     of its column in order k = 0..G-1 (coalesced along n).
//
// Scratch: G · n floats. Accumulation is f32 in a fixed order.
//
// sum_rows_partial_bf16: the same with a bf16 x (each element widened to f32 on load), same
// geometry and f32 partials, finished by sum_rows_final.

// *p (f32 or bf16) as a float.
static __device__ __forceinline__ float rs_load(const float* p) { return *p; }
static __device__ __forceinline__ float rs_load(const __nv_bfloat16* p) {
    return __bfloat162float(*p);
}

#define SUM_ROWS_COLS 32
#define SUM_ROWS_LANES 8

template <typename T>
static __device__ __forceinline__ void sum_rows_partial_body(float* __restrict__ partials,
                                                             const T* __restrict__ x, int m,
                                                             int n) {
    __shared__ float lanes[SUM_ROWS_LANES][SUM_ROWS_COLS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long j = (long)blockIdx.x * SUM_ROWS_COLS + tx;
    const int rows = (m + (int)gridDim.y - 1) / (int)gridDim.y;
    const int row0 = (int)blockIdx.y * rows;  // < m + gridDim.y: fits an int
    const int row1 = min(m, row0 + rows);
    float s = 0.0f;
    if (j < n) {
        const T* col = x + j;
        for (int i = row0 + ty; i < row1; i += SUM_ROWS_LANES) s += rs_load(col + (long)i * n);
    }
    lanes[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < n) {
        float t = lanes[0][tx];
        SMELT_UNROLL
        for (int k = 1; k < SUM_ROWS_LANES; k++) t += lanes[k][tx];
        partials[(long)blockIdx.y * n + j] = t;
    }
}

extern "C" __global__ void __launch_bounds__(SUM_ROWS_COLS* SUM_ROWS_LANES)
    sum_rows_partial(float* __restrict__ partials, const float* __restrict__ x, int m, int n) {
    sum_rows_partial_body(partials, x, m, n);
}

extern "C" __global__ void __launch_bounds__(SUM_ROWS_COLS* SUM_ROWS_LANES)
    sum_rows_partial_bf16(float* __restrict__ partials, const __nv_bfloat16* __restrict__ x,
                          int m, int n) {
    sum_rows_partial_body(partials, x, m, n);
}

extern "C" __global__ void __launch_bounds__(256)
    sum_rows_final(float* __restrict__ out, const float* __restrict__ partials,
                   int num_partials, int n) {
    const long j = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float s = 0.0f;
    for (int k = 0; k < num_partials; k++) s += partials[(long)k * n + j];
    out[j] = s;
}
