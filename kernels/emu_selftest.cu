#include "common.cuh"
#include "hopper.cuh"
#include "tensor_core.cuh"

// Tiny kernels that exercise the CUDA emulation itself (kernels/emu/cuda_emu.h): built-in
// indices, barriers, shuffles, block reductions, shared memory, atomics, bf16 conversions, and
// the bugs the emulation must catch. tests/emu_runtime.rs launches them. They are plain CUDA
// and nvcc compiles them too (so they stay within the subset both compilers accept), but the
// CUDA backend never launches them; the emu_bug_* ones are deliberately wrong.

// Every thread writes its indices and the launch dimensions: 8 values per thread at its
// global linear id (block-linear * threads-per-block + thread-linear).
extern "C" __global__ void emu_selftest_indices(unsigned* out) {
    const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned* o = out + 8ull * (block * nthreads + block_thread_rank());
    o[0] = threadIdx.x;
    o[1] = threadIdx.y;
    o[2] = threadIdx.z;
    o[3] = blockIdx.x;
    o[4] = blockIdx.y;
    o[5] = blockIdx.z;
    o[6] = blockDim.x + 1000u * blockDim.y + 1000000u * blockDim.z;
    o[7] = gridDim.x + 1000u * gridDim.y + 1000000u * gridDim.z;
}

// Shared memory and barriers: fill, then `rounds` times rotate the block's values by one
// place (read neighbour, barrier, write, barrier). out[g] = initial value of thread
// (t + rounds) % n of the same block, initial value = seed + 7919 * block + 31 * t.
extern "C" __global__ void emu_selftest_rotate(int* out, int seed, int rounds) {
    __shared__ int buf[1024];
    const int n = blockDim.x, t = threadIdx.x;
    buf[t] = seed + 7919 * static_cast<int>(blockIdx.x) + 31 * t;
    __syncthreads();
    for (int r = 0; r < rounds; ++r) {
        const int v = buf[(t + 1) % n];
        __syncthreads();
        buf[t] = v;
        __syncthreads();
    }
    out[blockIdx.x * n + t] = buf[t];
}

// The same without the barriers: a data race. out[2g] reads the next thread's value and
// out[2g+1] the previous one's; under emulation one of the two is stale in every block.
extern "C" __global__ void emu_bug_missing_sync(int* out, int seed) {
    __shared__ int racy[1024];
    const int n = blockDim.x, t = threadIdx.x;
    racy[t] = seed + 7919 * static_cast<int>(blockIdx.x) + 31 * t;
    const int g = blockIdx.x * n + t;
    out[2 * g] = racy[(t + 1) % n];
    out[2 * g + 1] = racy[(t + n - 1) % n];
}

// Warp intrinsics, with a given width; 8 results per thread.
extern "C" __global__ void emu_selftest_shuffles(int* out, const int* in, int width) {
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = in[g];
    const int lane = threadIdx.x % 32;
    int* o = out + 8 * g;
    o[0] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    o[1] = __shfl_down_sync(0xffffffffu, v, 3, width);
    o[2] = __shfl_up_sync(0xffffffffu, v, 3, width);
    o[3] = __shfl_sync(0xffffffffu, v, lane * 7 + 3, width);
    o[4] = static_cast<int>(__ballot_sync(0xffffffffu, v & 1));
    o[5] = __any_sync(0xffffffffu, v % 5 == 0);
    o[6] = __all_sync(0xffffffffu, v % 3 != 0);
    __syncwarp();
    const float f = __shfl_xor_sync(0xffffffffu, static_cast<float>(v) * 0.5f, 1);
    // (even lane counts in the tests: these never read an absent lane, whose poison is NaN)
    const double d = __shfl_up_sync(0xffffffffu, static_cast<double>(v) * 0.25, 1);
    o[7] = static_cast<int>(f * 4.0f) + static_cast<int>(d * 8.0);
}

// Block reductions (common.cuh): one block per row of x (rows, n). sums[r] = sum of the row,
// maxs[r] = its max, twice[r] = sum of 2 x (a second call right after the first).
extern "C" __global__ void emu_selftest_block_reduce(float* sums, float* maxs, float* twice,
                                                     const float* x, int n) {
    const float* row = x + static_cast<long long>(blockIdx.x) * n;
    const int nthreads = blockDim.x * blockDim.y * blockDim.z;
    float s = 0.0f, m = -INFINITY;
    for (int i = block_thread_rank(); i < n; i += nthreads) {
        s += row[i];
        m = fmaxf(m, row[i]);
    }
    const float sum = block_reduce_sum(s);
    const float mx = block_reduce_max(m);
    const float sum2 = block_reduce_sum(2.0f * s);
    if (block_thread_rank() == 0) {
        sums[blockIdx.x] = sum;
        maxs[blockIdx.x] = mx;
        twice[blockIdx.x] = sum2;
    }
}

// Dynamic shared memory: each block reverses its n-element chunk of x through smem (n floats).
extern "C" __global__ void emu_selftest_reverse(float* out, const float* x, int n) {
    const long long base = static_cast<long long>(blockIdx.x) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) smem[i] = x[base + i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[base + i] = smem[n - 1 - i];
}

// Reads dynamic shared memory before anything wrote it (emulation: poisoned with 0xff bytes),
// and reports its address modulo 16.
extern "C" __global__ void emu_selftest_smem_poison(unsigned* out, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = __float_as_uint(smem[i]);
    if (threadIdx.x == 0)
        out[n] = static_cast<unsigned>(reinterpret_cast<unsigned long long>(smem) & 15ull);
}

// Atomics from every thread of every block: olds[g] = the counter before this thread's add
// (a permutation of 0..N-1), fsum += 1 per thread, u64 += g, imax = max of g.
extern "C" __global__ void emu_selftest_atomics(int* counter, int* olds, float* fsum,
                                                unsigned long long* u64, int* imax) {
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    olds[g] = atomicAdd(counter, 1);
    atomicAdd(fsum, 1.0f);
    atomicAdd(u64, static_cast<unsigned long long>(g));
    atomicMax(imax, static_cast<int>(g));
}

// __syncthreads_count / _and / _or of pred[g], written by thread 0 of each block.
extern "C" __global__ void emu_selftest_sync_reduce(int* out, const int* pred) {
    const int p = pred[blockIdx.x * blockDim.x + threadIdx.x];
    const int count = __syncthreads_count(p);
    const int all = __syncthreads_and(p);
    const int any = __syncthreads_or(p);
    if (threadIdx.x == 0) {
        out[3 * blockIdx.x] = count;
        out[3 * blockIdx.x + 1] = all;
        out[3 * blockIdx.x + 2] = any;
    }
}

// bf16 round trip: bits = bf16(x) as raw bits, back = float(bf16(x)).
extern "C" __global__ void emu_selftest_bf16(unsigned short* bits, float* back, const float* x,
                                             int n) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<unsigned>(n);
         i += blockDim.x * gridDim.x) {
        const __nv_bfloat16 h = __float2bfloat16(x[i]);
        bits[i] = __bfloat16_as_ushort(h);
        back[i] = __bfloat162float(h);
    }
}

// BUG: thread 3 returns before a barrier the others wait at.
extern "C" __global__ void emu_bug_early_return(int* out) {
    if (threadIdx.x == 3) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

// BUG: half the warp shuffles while the other half votes.
extern "C" __global__ void emu_bug_divergent_warp(int* out) {
    const int lane = threadIdx.x % 32;
    out[threadIdx.x] = lane < 16 ? __shfl_xor_sync(0xffffffffu, lane, 1)
                                 : static_cast<int>(__ballot_sync(0xffffffffu, 1));
}

// Not supported by the emulation: a partial mask.
extern "C" __global__ void emu_bug_partial_mask(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, static_cast<int>(threadIdx.x), 1);
}

// ---- planted bugs for the sanitizer (tests/emu_sanitizer.rs) --------------------------------
// Each kernel takes `fixed`: 0 plants the bug, 1 runs its correct twin (which must run clean).
// Fibers run until they synchronise, so in block 0 thread 0 runs its whole kernel before
// thread 1 starts: the first finding of each bug below is thread 1's (or thread 0's).

// Racecheck, read after write: thread t writes s[t], then reads s[t - 1] (0 reads nothing).
// Bug: no __syncthreads between.
extern "C" __global__ void emu_san_race_raw(float* out, int fixed) {
    const int t = threadIdx.x;
    smem[t] = static_cast<float>(t);
    if (fixed) __syncthreads();
    out[t] = t > 0 ? smem[t - 1] : 0.0f;
}

// Racecheck, write after read: shift left in place: read s[t], then write it to s[t - 1].
// Bug: no __syncthreads between the read and the write.
extern "C" __global__ void emu_san_race_war(float* out, int fixed) {
    const int t = threadIdx.x;
    smem[t] = static_cast<float>(t);
    __syncthreads();
    const float v = smem[t];
    if (fixed) __syncthreads();
    if (t > 0) smem[t - 1] = v;
    __syncthreads();
    out[t] = smem[t];
}

// Racecheck, write after write: threads 0 and 1 both write s[0]. Bug: no __syncthreads
// between (the twin lets thread 1 write after the barrier).
extern "C" __global__ void emu_san_race_waw(float* out, int fixed) {
    const int t = threadIdx.x;
    if (t == 0) smem[0] = 1.0f;
    if (fixed) __syncthreads();
    if (t == 1) smem[0] = 2.0f;
    __syncthreads();
    out[t] = smem[0];
}

// __syncwarp orders the lanes of one warp and nothing else: lane t writes s[t] and reads
// s[partner]; partner = t ^ 1 (same warp) or (t + 32) % 64 (the other warp; two warps).
// fixed: a __syncwarp between (enough only within the warp); across warps it stays a race.
extern "C" __global__ void emu_san_warp_exchange(float* out, int fixed, int across_warps) {
    const int t = threadIdx.x;
    smem[t] = static_cast<float>(t);
    if (fixed) __syncwarp();
    const int partner = across_warps ? (t + 32) % 64 : t ^ 1;
    out[t] = smem[partner];
}

// Initcheck, dynamic shared memory: read s[t]. Bug: nothing wrote it.
extern "C" __global__ void emu_san_uninit_smem(float* out, int fixed) {
    const int t = threadIdx.x;
    if (fixed) smem[t] = static_cast<float>(t);
    __syncthreads();
    out[t] = smem[t];
}

// Initcheck, static shared memory: thread 0 reads what block 0 wrote. Bug: only block 0
// writes it, so other blocks read stale (or zero) memory of another block.
extern "C" __global__ void emu_san_uninit_static(float* out, int fixed) {
    __shared__ float stale[32];
    const int t = threadIdx.x;
    if (fixed || blockIdx.x == 0) stale[t % 32] = static_cast<float>(blockIdx.x);
    __syncthreads();
    if (t == 0) out[blockIdx.x] = stale[0];
}

// Initcheck and memcheck of global memory: out[t] = x[t + shift] for t < count (fixed: the
// caller passes sizes that fit and an x that was written).
extern "C" __global__ void emu_san_copy(float* out, const float* x, int count, int shift) {
    const int t = threadIdx.x;
    if (t < count) out[t] = x[t + shift];
}

// Memcheck of dynamic shared memory: every thread writes s[t] and reads it back. Bug: the
// launch gives fewer bytes than blockDim floats.
extern "C" __global__ void emu_san_smem_bounds(float* out) {
    const int t = threadIdx.x;
    smem[t] = static_cast<float>(t);
    __syncthreads();
    out[t] = smem[t];
}

// cp.async: thread t copies row t (16 bytes) of x into shared row t, then reads rows.
// mode 0: commit, wait<0>, __syncthreads, read row t - 1 (correct).
// mode 1: commit, read its own row (no wait: the copy has not landed).
// mode 2: two groups (rows t, then rows blockDim + t), wait<1>, read the second (too weak).
// mode 3: commit, wait<0>, read row t - 1 (no __syncthreads: the landing is thread t-1's write).
// mode 4: source 4 bytes past a 16-byte boundary (misaligned).
extern "C" __global__ void emu_san_cp_async(float* out, const float* x, int mode) {
    const int t = threadIdx.x, n = blockDim.x;
    cp_async_16(smem + 4 * t, x + 4 * t + (mode == 4 ? 1 : 0));
    cp_async_commit();
    if (mode == 2) {
        cp_async_16(smem + 4 * (n + t), x + 4 * (n + t));
        cp_async_commit();
        cp_async_wait<1>();
        out[t] = smem[4 * (n + t)];
        return;
    }
    if (mode != 1) cp_async_wait<0>();
    if (mode == 0 || mode == 4) __syncthreads();
    const int row = mode == 1 ? t : (t + n - 1) % n;
    out[t] = mode == 3 && t == 0 ? 0.0f : smem[4 * row];
    if (mode == 1) cp_async_wait<0>();
}

// Atomics on shared memory are never races: every thread adds 1 to one counter.
extern "C" __global__ void emu_san_shared_atomics(int* out) {
    __shared__ int counter;
    if (threadIdx.x == 0) counter = 0;
    __syncthreads();
    atomicAdd(&counter, 1);
    __syncthreads();
    if (threadIdx.x == 0) out[0] = counter;
}

// The Hopper checks (tests/emu_sanitizer.rs): out (64 x 128, f32) = a (64 x 64) · b (128 x 64)ᵀ
// by one warpgroup with 4 wgmma m64n128k16, the operands in shared memory as 128-byte swizzled
// rows (16-byte chunk c of row r at chunk c ^ (r % 8), tiles 1024-byte aligned). `mode`:
//   0: loaded by bulk tensor copies (map_a, map_b: 64 / 128 rows x 64, 128-byte swizzle),
//      waited for on their mbarrier (correct);
//   1: the wait with the wrong parity (1 on the first phase: returns at once);
//   2: the descriptors name the 64-byte swizzle the copies did not write;
//   3: the threads store the tiles themselves (from a, b), then __syncthreads, no
//      fence.proxy.async;  4: the same with the fence (correct);
//   5: as 0, but thread 0 changes an operand byte between the wgmma and its wait;
//   6: as 0 without mbar_fence_init after the mbarrier's init (the emulation aborts).
extern "C" __global__ void emu_san_wgmma(float* out, const __nv_bfloat16* a,
                                         const __nv_bfloat16* b, int mode,
                                         const __grid_constant__ TensorMap map_a,
                                         const __grid_constant__ TensorMap map_b) {
#if defined(SMELT_HOPPER)
    unsigned char* tile_a = align_shared(smem, 1024);
    unsigned char* tile_b = tile_a + 64 * 128;
    unsigned long long* bar = reinterpret_cast<unsigned long long*>(tile_b + 128 * 128);
    const int tid = threadIdx.x;
    if (tid == 0) {
        mbar_init(bar, 1);
        if (mode != 6) mbar_fence_init();
    }
    __syncthreads();
    if (mode == 3 || mode == 4) {
        for (int i = tid; i < (64 + 128) * 8; i += 128) {
            const int r = i / 8, c = i % 8;
            const __nv_bfloat16* src = r < 64 ? a + r * 64 + c * 8 : b + (r - 64) * 64 + c * 8;
            unsigned char* row = r < 64 ? tile_a + r * 128 : tile_b + (r - 64) * 128;
            *reinterpret_cast<uint4*>(row + 16 * (c ^ (r % 8))) =
                *reinterpret_cast<const uint4*>(src);
        }
        if (mode == 4) fence_proxy_async();
        __syncthreads();
    } else {
        if (tid == 0) {
            mbar_arrive_expect_tx(bar, (64 + 128) * 128);
            tma_load_2d(tile_a, &map_a, 0, 0, bar);
            tma_load_2d(tile_b, &map_b, 0, 0, bar);
        }
        mbar_wait(bar, mode == 1 ? 1 : 0);
    }
    const unsigned swizzle = mode == 2 ? WGMMA_SWIZZLE_64B : WGMMA_SWIZZLE_128B;
    float acc[64];
    wgmma_fence();
    for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n128k16<0, 0>(acc, wgmma_desc(tile_a + 32 * kk, 16, 1024, swizzle),
                               wgmma_desc(tile_b + 32 * kk, 16, 1024, swizzle), kk > 0);
    wgmma_commit();
    if (mode == 5 && tid == 0) tile_a[0] ^= 1;
    wgmma_wait<0>();
    const int warp = tid / 32, g = (tid % 32) / 4, q = tid % 4;
    for (int i = 0; i < 64; ++i)
        out[(warp * 16 + g + 8 * ((i >> 1) & 1)) * 128 + 8 * (i >> 2) + 2 * q + (i & 1)] = acc[i];
#endif
}

// An mbarrier phase that never completes: it expects 2 arrivals, only thread 0 arrives, and
// every thread waits for the phase (the emulation must abort naming the deadlock).
extern "C" __global__ void emu_bug_mbarrier_deadlock(int* out) {
#if defined(SMELT_HOPPER)
    unsigned long long* bar = reinterpret_cast<unsigned long long*>(smem);
    if (threadIdx.x == 0) mbar_init(bar, 2);
    __syncthreads();
    if (threadIdx.x == 0) mbar_arrive(bar);
    mbar_wait(bar, 0);
    out[threadIdx.x] = 1;
#endif
}
