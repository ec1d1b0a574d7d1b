#include "common.cuh"

// Element-wise kernels: GELU forward/backward, add, add_into, f32 <-> bf16 casts.
//
// Geometry (src/backend/emu/elementwise.rs, `*_launch`): 1-D blocks of 256 threads, grid
// ceil(work / 256) capped at 1024 blocks (about one full wave on an H100/H200: 132 SMs x 8
// resident blocks of 256), and grid-stride loops cover the rest. The f32 kernels take four
// elements per thread (float4) when every pointer is 16-byte aligned - views into the arena
// usually are, sub-views need not be - and fall back to scalar loads otherwise; the 0-3
// trailing elements are done one by one. The choice is uniform over the grid.

// sqrt(2/pi) and the cubic coefficient of GPT-2's tanh GELU.
#define SMELT_GELU_SCALE 0.7978845608028654f
#define SMELT_GELU_CUBIC 0.044715f

static __device__ __forceinline__ bool smelt_aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

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

// The grid-stride loop of the f32 kernels: f.vec4(j) for each float4 group j < n/4 (elements
// 4j..4j+3) when `vec` (every pointer 16-byte aligned), then f.one(i) for each remaining
// element (all of them when !vec). Indices stay below 2^31 + stride: unsigned cannot overflow.
template <typename F>
static __device__ __forceinline__ void elementwise_loop(int n, bool vec, const F& f) {
    const unsigned stride = blockDim.x * gridDim.x;
    const unsigned first = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned count = static_cast<unsigned>(n);
    unsigned tail = 0;
    if (vec) {
        const unsigned groups = count / 4;
        for (unsigned j = first; j < groups; j += stride) f.vec4(j);
        tail = groups * 4;
    }
    for (unsigned i = tail + first; i < count; i += stride) f.one(i);
}

static __device__ __forceinline__ float4 load4(const float* p, unsigned j) {
    return reinterpret_cast<const float4*>(p)[j];
}
static __device__ __forceinline__ void store4(float* p, unsigned j, float4 v) {
    reinterpret_cast<float4*>(p)[j] = v;
}

struct ElementwiseGeluForward {
    float* __restrict__ out;
    const float* __restrict__ x;
    __device__ __forceinline__ void one(unsigned i) const { out[i] = smelt_gelu(x[i]); }
    __device__ __forceinline__ void vec4(unsigned j) const {
        const float4 v = load4(x, j);
        store4(out, j, make_float4(smelt_gelu(v.x), smelt_gelu(v.y), smelt_gelu(v.z),
                                   smelt_gelu(v.w)));
    }
};

struct ElementwiseGeluBackward {
    float* __restrict__ dx;
    const float* __restrict__ x;
    const float* __restrict__ dout;
    __device__ __forceinline__ void one(unsigned i) const {
        dx[i] = smelt_gelu_grad(x[i], dout[i]);
    }
    __device__ __forceinline__ void vec4(unsigned j) const {
        const float4 v = load4(x, j), d = load4(dout, j);
        store4(dx, j, make_float4(smelt_gelu_grad(v.x, d.x), smelt_gelu_grad(v.y, d.y),
                                  smelt_gelu_grad(v.z, d.z), smelt_gelu_grad(v.w, d.w)));
    }
};

// a and b may be the same buffer (read only); out overlaps neither.
struct ElementwiseAdd {
    float* __restrict__ out;
    const float* a;
    const float* b;
    __device__ __forceinline__ void one(unsigned i) const { out[i] = a[i] + b[i]; }
    __device__ __forceinline__ void vec4(unsigned j) const {
        const float4 u = load4(a, j), v = load4(b, j);
        store4(out, j, make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w));
    }
};

struct ElementwiseAddInto {
    float* __restrict__ dst;
    const float* __restrict__ src;
    __device__ __forceinline__ void one(unsigned i) const { dst[i] += src[i]; }
    __device__ __forceinline__ void vec4(unsigned j) const {
        const float4 d = load4(dst, j), v = load4(src, j);
        store4(dst, j, make_float4(d.x + v.x, d.y + v.y, d.z + v.z, d.w + v.w));
    }
};

extern "C" __global__ void __launch_bounds__(256)
    gelu_forward(float* __restrict__ out, const float* __restrict__ x, int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(x);
    elementwise_loop(n, vec, ElementwiseGeluForward{out, x});
}

extern "C" __global__ void __launch_bounds__(256)
    gelu_backward(float* __restrict__ dx, const float* __restrict__ x,
                  const float* __restrict__ dout, int n) {
    const bool vec = smelt_aligned16(dx) && smelt_aligned16(x) && smelt_aligned16(dout);
    elementwise_loop(n, vec, ElementwiseGeluBackward{dx, x, dout});
}

// out = a + b.
extern "C" __global__ void __launch_bounds__(256)
    add(float* __restrict__ out, const float* a, const float* b, int n) {
    const bool vec = smelt_aligned16(out) && smelt_aligned16(a) && smelt_aligned16(b);
    elementwise_loop(n, vec, ElementwiseAdd{out, a, b});
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

#ifdef SMELT_EMULATE
SMELT_EMU_EXPORT(gelu_forward, (float* out, const float* x, int n), (out, x, n))
SMELT_EMU_EXPORT(gelu_backward, (float* dx, const float* x, const float* dout, int n),
                 (dx, x, dout, n))
SMELT_EMU_EXPORT(add, (float* out, const float* a, const float* b, int n), (out, a, b, n))
SMELT_EMU_EXPORT(add_into, (float* dst, const float* src, int n), (dst, src, n))
SMELT_EMU_EXPORT(cast_f32_to_bf16, (__nv_bfloat16* out, const float* x, int n), (out, x, n))
SMELT_EMU_EXPORT(cast_bf16_to_f32, (float* out, const __nv_bfloat16* x, int n), (out, x, n))
#endif
