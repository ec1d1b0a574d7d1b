// common.cuh: included first by every kernels/*.cu; the conventions all kernel files follow.
//
// Two compilers read every kernel file:
//   * nvcc (build.rs): all kernels/*.cu #included into ONE translation unit, compiled to one
//     fatbin with -std=c++17 -O3 --use_fast_math for sm_80 (+PTX) and sm_90a, -I kernels.
//     ptxas runs with -warn-spills and ANY register spill fails the build.
//   * g++ (build.rs, `cargo test`): the same files, after kernels/emu/cuda_emu.h, with
//     -DSMELT_EMULATE, into the static library smelt_emu that EmuRuntime launches by name
//     (src/backend/device/emu.rs). The emulation runs each block's threads as fibers with real
//     barriers and warp rendezvous, under a sanitizer (racecheck, initcheck, memcheck, late
//     cp.async); cuda_emu.h documents both and is the list of CUDA features kernels may use.
//
// Conventions
//   1. First line of a kernel file: `#include "common.cuh"`. No other CUDA headers: anything
//      needed from CUDA must exist in both <cuda_bf16.h>/nvcc built-ins and cuda_emu.h.
//   2. Kernels are `extern "C" __global__ void name(...)` with at least one parameter; the CUDA
//      backend loads them by name from the fatbin (cudarc), so names are unique across files.
//      File-local helpers are `static __device__ __forceinline__` (or live in this header).
//   3. Plain CUDA C++: threadIdx/blockIdx/blockDim/gridDim, __syncthreads, full-warp shuffles
//      (mask 0xffffffff), static __shared__ arrays, atomicAdd, __nv_bfloat16 with explicit
//      __float2bfloat16 / __bfloat162float, float math (expf, logf, tanhf, sqrtf, rsqrtf,
//      fmaxf, ...), __restrict__, __launch_bounds__(n).
//   4. Dynamic shared memory is `smem`, declared once below (`extern __shared__ __align__(16)
//      float smem[];`, one name and type for the whole translation unit, 16-byte aligned for
//      cp.async, ldmatrix and float4/uint4 accesses); kernels use it without declaring it
//      (reinterpret_cast for other types). The emulation defines its own, aligned the same.
//   5. Every thread of a block reaches every __syncthreads() (no early `return` before a
//      barrier: guard the work instead), and all lanes of a warp reach every warp intrinsic.
//   6. Blocks that use warp intrinsics (including the helpers below) have a multiple of 32
//      threads. Lanes of a partial warp that read an absent lane get poison in emulation.
//   7. Every kernel is declared once in Rust, in the module named after its file
//      (src/backend/kernels/<file>.rs: a `kernels!` row with its parameters, in order and with
//      the .cu types, and its launch geometry); nothing in the .cu names the emulation. The
//      build makes the emulation's kernel table from the declarations, and EmuRuntime checks
//      each row's parameters against the kernel's C++ signature (tests/kernels/declarations.rs).
//   8. Sizes are `int` (element counts < 2^31); index arithmetic that can pass 2^31 uses
//      64-bit or unsigned types.
//   9. Loop unrolling hints are written SMELT_UNROLL (nvcc: #pragma unroll), not `#pragma unroll`:
//      g++ 12 warns on every unknown pragma and the warning cannot be silenced from a header.
//      nvcc unrolls constant-trip loops at -O3 anyway.
//  10. Results are compared with the CPU kernels (src/backend/cpu/kernels.rs): f32 kernels to a
//      relative error ||gpu - cpu|| / ||cpu|| < 1e-5; exact operations bit for bit.

#pragma once

#if defined(SMELT_EMULATE)
#include "emu/cuda_emu.h"
#elif defined(__CUDACC__)
#include <cuda_bf16.h>
#else
#error "kernels/*.cu are compiled by nvcc or, with -DSMELT_EMULATE, against kernels/emu/cuda_emu.h"
#endif

#if defined(__CUDACC__) && !defined(SMELT_EMULATE)
// Convention 4: every kernel's dynamic shared memory.
extern __shared__ __align__(16) float smem[];
#endif

#if defined(__CUDACC__)
#define SMELT_UNROLL _Pragma("unroll")
#else
#define SMELT_UNROLL
#endif

// Sum of v over the 32 lanes of the warp, returned to every lane. All lanes must call it.
__device__ __forceinline__ float warp_reduce_sum(float v) {
    SMELT_UNROLL
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Maximum of v over the 32 lanes of the warp, returned to every lane. All lanes must call it.
__device__ __forceinline__ float warp_reduce_max(float v) {
    SMELT_UNROLL
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// The linear thread id within the block (x fastest), as warps are formed.
__device__ __forceinline__ int block_thread_rank() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

#if defined(SMELT_EMULATE)
#define SMELT_CHECK_FULL_WARPS(what)                                                  \
    do {                                                                              \
        if ((blockDim.x * blockDim.y * blockDim.z) % 32 != 0)                         \
            ::smelt_emu::fail("%s needs a block of whole warps, not %u threads", what, \
                              blockDim.x * blockDim.y * blockDim.z);                  \
    } while (0)
#else
#define SMELT_CHECK_FULL_WARPS(what) \
    do {                             \
    } while (0)
#endif

// Sum of v over every thread of the block, returned to every thread. The block has a multiple
// of 32 threads (at most 1024) and EVERY thread must call it (it contains __syncthreads).
// Safe to call several times in a row: it waits until the previous call's reads are done
// before reusing its shared scratch.
__device__ __forceinline__ float block_reduce_sum(float v) {
    __shared__ float smelt_block_partial_sum[32];
    SMELT_CHECK_FULL_WARPS("block_reduce_sum");
    const int rank = block_thread_rank();
    const int lane = rank % 32, warp = rank / 32;
    const int nwarps = (blockDim.x * blockDim.y * blockDim.z) / 32;
    v = warp_reduce_sum(v);
    __syncthreads();
    if (lane == 0) smelt_block_partial_sum[warp] = v;
    __syncthreads();
    v = lane < nwarps ? smelt_block_partial_sum[lane] : 0.0f;
    return warp_reduce_sum(v);
}

// Maximum of v over every thread of the block, returned to every thread; same rules as
// block_reduce_sum. The maximum of no values is -INFINITY.
__device__ __forceinline__ float block_reduce_max(float v) {
    __shared__ float smelt_block_partial_max[32];
    SMELT_CHECK_FULL_WARPS("block_reduce_max");
    const int rank = block_thread_rank();
    const int lane = rank % 32, warp = rank / 32;
    const int nwarps = (blockDim.x * blockDim.y * blockDim.z) / 32;
    v = warp_reduce_max(v);
    __syncthreads();
    if (lane == 0) smelt_block_partial_max[warp] = v;
    __syncthreads();
    v = lane < nwarps ? smelt_block_partial_max[lane] : -INFINITY;
    return warp_reduce_max(v);
}

// 16-byte vector accesses (float4, or uint4 of eight bf16) need 16-byte aligned addresses;
// kernels check their pointers with this and fall back to scalar accesses otherwise.
__device__ __forceinline__ bool smelt_aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// Eight bf16 (one uint4) as floats, exactly: each 16 bits are the top half of the float
// (little-endian: element 2k is the low half of word k).
__device__ __forceinline__ void smelt_unpack_bf16x8(const uint4 q, float (&v)[8]) {
    const unsigned w[4] = {q.x, q.y, q.z, q.w};
    SMELT_UNROLL
    for (int k = 0; k < 4; k++) {
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}

// Eight floats rounded to bf16 (to nearest even, __float2bfloat16) and packed into one uint4.
__device__ __forceinline__ uint4 smelt_pack_bf16x8(const float (&v)[8]) {
    unsigned w[4];
    SMELT_UNROLL
    for (int k = 0; k < 4; k++)
        w[k] = (unsigned)__bfloat16_as_ushort(__float2bfloat16(v[2 * k])) |
               ((unsigned)__bfloat16_as_ushort(__float2bfloat16(v[2 * k + 1])) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}
