#include "common.cuh"

// AdamW (torch.optim.AdamW's math) and the global gradient norm's Σ x², f32.
// Counterparts of kernels::adamw and kernels::sum_squares.
//
// adamw: element-wise, grid-stride (launch: block 256, grid min(ceil(n / 256), 65536)).
// The host passes the bias corrections 1 - beta1^t and 1 - beta2^t.
//
// sum_squares, deterministic in two kernels:
//   sum_squares_partial: block 256, grid G = min(ceil(n / 256), 1024) fixed by n; thread
//     (block k, lane i) sums x² over its grid-stride slice in increasing order, the block sums
//     its threads in a fixed tree into partials[k];
//   sum_squares_final: one block of 256 sums the G partials in a fixed order into out[0].
// Accumulation is f32 (the CPU's is f64): the two agree to ~1e-6 relative.

extern "C" __global__ void __launch_bounds__(256)
    adamw(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ m,
          float* __restrict__ v, long n, float lr, float beta1, float beta2, float eps,
          float weight_decay, float bias_correction1, float bias_correction2, float grad_scale) {
    const float step_size = lr / bias_correction1;
    const float bias_correction2_sqrt = sqrtf(bias_correction2);
    const float decay = 1.0f - lr * weight_decay;
    const long stride = (long)gridDim.x * blockDim.x;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = grads[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        params[i] = params[i] * decay - step_size * (mi / denom);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    sum_squares_partial(float* __restrict__ partials, const float* __restrict__ x, long n) {
    const long stride = (long)gridDim.x * blockDim.x;
    float s = 0.0f;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float xi = x[i];
        s += xi * xi;
    }
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(256)
    sum_squares_final(float* __restrict__ out, const float* __restrict__ partials,
                      int num_partials) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < num_partials; i += blockDim.x) s += partials[i];
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}

// adamw_multi / adamw_multi_bf16: ONE launch for every parameter tensor. The tensors lie
// back to back in four parallel regions of n floats (params or master, grads, m, v); tensor t
// covers [tensor_end[t - 1], tensor_end[t]) (tensor_end ascending, tensor_end[T - 1] = n) and
// has weight decay tensor_decay[t]. Grid-stride as adamw (block 256, grid min(ceil(n / 256),
// 65536)); each thread finds the tensor of its element by binary search over tensor_end,
// starting from the tensor of its previous element (its indices only increase).
// adamw_multi_bf16 keeps f32 master weights and also writes the bf16 copy the model runs on,
// params_bf16[i] = __float2bfloat16 (round to nearest even) of the new master[i].

// The first t in [lo, num_tensors) with i < tensor_end[t] (num_tensors - 1 if none).
static __device__ __forceinline__ int adamw_find_tensor(const long* __restrict__ tensor_end,
                                                        int lo, int num_tensors, long i) {
    int hi = num_tensors - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (i < __ldg(tensor_end + mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

// One element of adamw's update; returns the new parameter.
static __device__ __forceinline__ float adamw_element(float p, float grad, float* __restrict__ m,
                                                      float* __restrict__ v, long i, float beta1,
                                                      float beta2, float eps, float step_size,
                                                      float bias_correction2_sqrt, float decay,
                                                      float grad_scale) {
    const float g = grad * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    return p * decay - step_size * (mi / denom);
}

extern "C" __global__ void __launch_bounds__(256)
    adamw_multi(float* __restrict__ params, const float* __restrict__ grads,
                float* __restrict__ m, float* __restrict__ v, long n,
                const long* __restrict__ tensor_end, const float* __restrict__ tensor_decay,
                int num_tensors, float lr, float beta1, float beta2, float eps,
                float bias_correction1, float bias_correction2, float grad_scale) {
    const float step_size = lr / bias_correction1;
    const float bias_correction2_sqrt = sqrtf(bias_correction2);
    const long stride = (long)gridDim.x * blockDim.x;
    int t = 0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        t = adamw_find_tensor(tensor_end, t, num_tensors, i);
        const float decay = 1.0f - lr * __ldg(tensor_decay + t);
        params[i] = adamw_element(params[i], grads[i], m, v, i, beta1, beta2, eps, step_size,
                                  bias_correction2_sqrt, decay, grad_scale);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    adamw_multi_bf16(float* __restrict__ master, __nv_bfloat16* __restrict__ params_bf16,
                     const float* __restrict__ grads, float* __restrict__ m,
                     float* __restrict__ v, long n, const long* __restrict__ tensor_end,
                     const float* __restrict__ tensor_decay, int num_tensors, float lr,
                     float beta1, float beta2, float eps, float bias_correction1,
                     float bias_correction2, float grad_scale) {
    const float step_size = lr / bias_correction1;
    const float bias_correction2_sqrt = sqrtf(bias_correction2);
    const long stride = (long)gridDim.x * blockDim.x;
    int t = 0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        t = adamw_find_tensor(tensor_end, t, num_tensors, i);
        const float decay = 1.0f - lr * __ldg(tensor_decay + t);
        const float p = adamw_element(master[i], grads[i], m, v, i, beta1, beta2, eps,
                                      step_size, bias_correction2_sqrt, decay, grad_scale);
        master[i] = p;
        params_bf16[i] = __float2bfloat16(p);
    }
}
