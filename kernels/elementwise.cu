#include "common.cuh"

// Element-wise kernels: GELU forward/backward, add, add_into, f32 <-> bf16 casts, and bf16
// STORAGE variants of GELU forward/backward and add (`*_bf16`: bf16 in memory, f32 arithmetic
// exactly as the f32 kernel, each result rounded to bf16 to nearest even on the store).
//
// Geometry (src/backend/kernels/elementwise.rs): 1-D blocks of 256 threads, grid
// ceil(work / 256) capped at 1024 blocks (about one full wave on an H100/H200: 132 SMs x 8
// resident blocks of 256), and grid-stride loops cover the rest. A work item is one 16-byte
// vector: the f32 kernels take four elements per thread (float4), the bf16 kernels eight (one
// uint4 of bf16), so work = ceil(n / 4) or ceil(n / 8). The vector path is taken when every
// pointer is 16-byte aligned - views into the arena usually are, sub-views need not be - with
// scalar loads otherwise; the 0-3 (f32) or 0-7 (bf16) trailing elements are done one by one.
// The choice is uniform over the grid.

// sqrt(2/pi) and the cubic coefficient of GPT-2's tanh GELU.
#define SMELT_GELU_SCALE 0.7978845608028654f
#define SMELT_GELU_CUBIC 0.044715f

// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as
// x * sigmoid(2u) like the CPU kernel (no cancellation in 1 + tanh(u) for negative u).
static __device__ __forceinline__ float smelt_gelu(float x) {
    const float u = SMELT_GELU_SCALE * (x + SMELT_GELU_CUBIC * x * x * x);
    return x * (1.0f / (1.0f + expf(-(u + u))));
}

// gelu'(x) * dout with gelu'(x) = s + x s (1 - s) 2 du/dx, s = sigmoid(2u).
static __device__ __forceinline__ float smelt_gelu_grad(float x, float dout) {
    const float u = SMELT_GELU_SCALE * (x + SMELT_GELU_CUBIC * x * x * x);
    const float du = SMELT_GELU_SCALE * (1.0f + 3.0f * SMELT_GELU_CUBIC * x * x);
    const float s = 1.0f / (1.0f + expf(-(u + u)));
    return (s + x * s * (1.0f - s) * 2.0f * du) * dout;
}

// Storage helpers: element i of an f32 or bf16 buffer as a float, and a float stored back
// (bf16: __float2bfloat16, round to nearest even).
static __device__ __forceinline__ float ew_load(const float* p, unsigned i) { return p[i]; }
static __device__ __forceinline__ float ew_load(const __nv_bfloat16* p, unsigned i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ void ew_store(float* p, unsigned i, float v) { p[i] = v; }
static __device__ __forceinline__ void ew_store(__nv_bfloat16* p, unsigned i, float v) {
    p[i] = __float2bfloat16(v);
}

// Elements of storage type T in one 16-byte vector (one work item of the vector path).
template <typename T>
struct EwVec;
template <>
struct EwVec<float> {
    static constexpr int N = 4;
};
template <>
struct EwVec<__nv_bfloat16> {
    static constexpr int N = 8;
};

// Vector j of p (elements N*j .. N*j + N-1, 16-byte aligned) as floats, and back.
static __device__ __forceinline__ void ew_load_vec(const float* p, unsigned j, float (&v)[4]) {
    const float4 q = reinterpret_cast<const float4*>(p)[j];
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
}
static __device__ __forceinline__ void ew_store_vec(float* p, unsigned j, const float (&v)[4]) {
    reinterpret_cast<float4*>(p)[j] = make_float4(v[0], v[1], v[2], v[3]);
}
// bf16: one uint4 of eight (common.cuh's pack and unpack).
static __device__ __forceinline__ void ew_load_vec(const __nv_bfloat16* p, unsigned j,
                                                   float (&v)[8]) {
    smelt_unpack_bf16x8(reinterpret_cast<const uint4*>(p)[j], v);
}
static __device__ __forceinline__ void ew_store_vec(__nv_bfloat16* p, unsigned j,
                                                    const float (&v)[8]) {
    reinterpret_cast<uint4*>(p)[j] = smelt_pack_bf16x8(v);
}

// The grid-stride loop of the element-wise kernels: f.vec(j) for each vector j < n / F::VEC
// (elements VEC*j .. VEC*j + VEC-1) when `vec` (every pointer 16-byte aligned), then f.one(i)
// for each remaining element (all of them when !vec). Indices stay below 2^31 + stride:
// unsigned cannot overflow.
template <typename F>
static __device__ __forceinline__ void elementwise_loop(int n, bool vec, const F& f) {
    const unsigned stride = blockDim.x * gridDim.x;
    const unsigned first = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned count = static_cast<unsigned>(n);
    unsigned tail = 0;
    if (vec) {
        const unsigned groups = count / F::VEC;
        for (unsigned j = first; j < groups; j += stride) f.vec(j);
        tail = groups * F::VEC;
    }
    for (unsigned i = tail + first; i < count; i += stride) f.one(i);
}

// The functors, on storage type T (float or __nv_bfloat16); arithmetic is f32 either way.
template <typename T>
struct ElementwiseGeluForward {
    static constexpr int VEC = EwVec<T>::N;
    T* __restrict__ out;
    const T* __restrict__ x;
    __device__ __forceinline__ void one(unsigned i) const {
        ew_store(out, i, smelt_gelu(ew_load(x, i)));
    }
    __device__ __forceinline__ void vec(unsigned j) const {
        float v[VEC];
        ew_load_vec(x, j, v);
        SMELT_UNROLL
        for (int k = 0; k < VEC; k++) v[k] = smelt_gelu(v[k]);
        ew_store_vec(out, j, v);
    }
};

template <typename T>
struct ElementwiseGeluBackward {
    static constexpr int VEC = EwVec<T>::N;
    T* __restrict__ dx;
    const T* __restrict__ x;
    const T* __restrict__ dout;
    __device__ __forceinline__ void one(unsigned i) const {
        ew_store(dx, i, smelt_gelu_grad(ew_load(x, i), ew_load(dout, i)));
    }
    __device__ __forceinline__ void vec(unsigned j) const {
        float v[VEC], d[VEC];
        ew_load_vec(x, j, v);
        ew_load_vec(dout, j, d);
        SMELT_UNROLL
        for (int k = 0; k < VEC; k++) v[k] = smelt_gelu_grad(v[k], d[k]);
        ew_store_vec(dx, j, v);
    }
};

// a and b may be the same buffer (read only); out overlaps neither.
template <typename T>
struct ElementwiseAdd {
    static constexpr int VEC = EwVec<T>::N;
    T* __restrict__ out;
    const T* a;
    const T* b;
    __device__ __forceinline__ void one(unsigned i) const {
        ew_store(out, i, ew_load(a, i) + ew_load(b, i));
    }
    __device__ __forceinline__ void vec(unsigned j) const {
        float u[VEC], v[VEC];
        ew_load_vec(a, j, u);
        ew_load_vec(b, j, v);
        SMELT_UNROLL
        for (int k = 0; k < VEC; k++) u[k] += v[k];
        ew_store_vec(out, j, u);
    }
};

struct ElementwiseAddInto {
    static constexpr int VEC = 4;
    float* __restrict__ dst;
    const float* __restrict__ src;
    __device__ __forceinline__ void one(unsigned i) const { dst[i] += src[i]; }
    __device__ __forceinline__ void vec(unsigned j) const {
        float d[VEC], v[VEC];
        ew_load_vec(dst, j, d);
        ew_load_vec(src, j, v);
        SMELT_UNROLL
        for (int k = 0; k < VEC; k++) d[k] += v[k];
        ew_store_vec(dst, j, d);
    }
};

extern "C" __global__ void __launch_bounds__(256)
    gelu_forward(float* __restrict__ out, const float* __restrict__ x, int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(x);
    elementwise_loop(n, vec, ElementwiseGeluForward<float>{out, x});
}

extern "C" __global__ void __launch_bounds__(256)
    gelu_backward(float* __restrict__ dx, const float* __restrict__ x,
                  const float* __restrict__ dout, int n) {
    const bool vec = smelt_aligned16(dx) && smelt_aligned16(x) && smelt_aligned16(dout);
    elementwise_loop(n, vec, ElementwiseGeluBackward<float>{dx, x, dout});
}

// out = a + b.
extern "C" __global__ void __launch_bounds__(256)
    add(float* __restrict__ out, const float* a, const float* b, int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(a) && smelt_aligned16(b);
    elementwise_loop(n, vec, ElementwiseAdd<float>{out, a, b});
}

// bf16 storage (8 elements per thread on the vector path): dx, x, dout as gelu_backward; out,
// a, b as add (a and b may be the same buffer). Each result is rounded once, on the store.
extern "C" __global__ void __launch_bounds__(256)
    gelu_forward_bf16(__nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,
                      int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(x);
    elementwise_loop(n, vec, ElementwiseGeluForward<__nv_bfloat16>{out, x});
}

extern "C" __global__ void __launch_bounds__(256)
    gelu_backward_bf16(__nv_bfloat16* __restrict__ dx, const __nv_bfloat16* __restrict__ x,
                       const __nv_bfloat16* __restrict__ dout, int n) {
    const bool vec = smelt_aligned16(dx) && smelt_aligned16(x) && smelt_aligned16(dout);
    elementwise_loop(n, vec, ElementwiseGeluBackward<__nv_bfloat16>{dx, x, dout});
}

extern "C" __global__ void __launch_bounds__(256)
    add_bf16(__nv_bfloat16* __restrict__ out, const __nv_bfloat16* a, const __nv_bfloat16* b,
             int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(a) && smelt_aligned16(b);
    elementwise_loop(n, vec, ElementwiseAdd<__nv_bfloat16>{out, a, b});
}

// dst += src (gradient accumulation).
extern "C" __global__ void __launch_bounds__(256)
    add_into(float* __restrict__ dst, const float* __restrict__ src, int n) {
    const bool vec = smelt_aligned16(dst) && smelt_aligned16(src);
    elementwise_loop(n, vec, ElementwiseAddInto{dst, src});
}

// out = bf16(x), round to nearest even (NaN -> canonical NaN 0x7fff). Exact, no arithmetic:
// --use_fast_math's flush-to-zero does not touch subnormals here.
extern "C" __global__ void __launch_bounds__(256)
    cast_f32_to_bf16(__nv_bfloat16* __restrict__ out, const float* __restrict__ x, int n) {
    const unsigned stride = blockDim.x * gridDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<unsigned>(n);
         i += stride)
        out[i] = __float2bfloat16(x[i]);
}

// out = float(x), exact.
extern "C" __global__ void __launch_bounds__(256)
    cast_bf16_to_f32(float* __restrict__ out, const __nv_bfloat16* __restrict__ x, int n) {
    const unsigned stride = blockDim.x * gridDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<unsigned>(n);
         i += stride)
        out[i] = __bfloat162float(x[i]);
}

