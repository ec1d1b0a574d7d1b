// hopper.cuh: the Hopper (sm_90a) instructions our kernels use, each with two implementations:
// inline PTX under nvcc (compiled only for sm_90a: SMELT_HOPPER_PTX), and under SMELT_EMULATE
// the emulation's (emu/runtime.cpp; the model is at the top of emu/cuda_emu.h, "Hopper").
//
// * Shared-window addresses (`shared_address`): mbarriers, bulk copies and wgmma descriptors
//   take 32-bit addresses in the shared window. Swizzled tiles must start at a multiple of 1024
//   of that address (the swizzle is a function of the address bits); nothing aligns dynamic
//   shared memory that far (the emulation puts smem[0] at window address 16), so kernels align
//   their tiles themselves (`align_shared`).
// * mbarrier (an 8-byte object in shared memory): `mbar_init(bar, count)` (one thread, then
//   `mbar_fence_init()` by that thread, which makes the initialisation visible to the async
//   proxy that bulk copies complete through, then a __syncthreads before others use it),
//   `mbar_arrive`, `mbar_arrive_expect_tx(bar, bytes)`,
//   `mbar_wait(bar, parity)` (spins on try_wait.parity: returns once the phase before the
//   current one has parity `parity`; the phase "before the first" counts as complete with parity
//   1, so a ring's producer starts waiting its empty barriers with parity 1).
// * `tma_load_2d(dst, map, x, y, bar)`: cp.async.bulk.tensor of the box at element (x, y) of
//   the tensor map (`TensorMap`, a __grid_constant__ kernel parameter the host encodes) into
//   `dst`, completing `box bytes` transactions on `bar`; out-of-bounds elements are zeros.
// * `fence_proxy_async()`: shared-memory writes of this thread become visible to the async
//   proxy (wgmma operands written by threads need it, then a barrier).
// * wgmma m64n128k16, f32 += bf16 x bf16, both operands in shared memory, described by
//   `wgmma_desc` (K-major: 8 consecutive k per 16-byte chunk; or MN-major, TRANS_A / TRANS_B:
//   8 consecutive rows of A / columns of B per chunk): `wgmma_fence()` before each batch,
//   `wgmma_m64n128k16<TRANS_A, TRANS_B>(d, da, db, scale_d)`, `wgmma_commit()`,
//   `wgmma_wait<N>()`; all 128 threads of the warpgroup execute each.
//   Accumulator layout (thread t of the warpgroup, warp w = t/32, g = (t%32)/4, q = t%4):
//   d[i] is element (16w + g + 8*((i>>1)&1), 8*(i>>2) + 2q + (i&1)) of the 64x128 tile.
// * `setmaxnreg_inc<N>()` / `setmaxnreg_dec<N>()`: the warpgroup's register budget.

#pragma once

#if defined(SMELT_EMULATE) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SMELT_HOPPER 1  // the instructions below exist (emulation, or nvcc for sm_90a)
#endif
#if !defined(SMELT_EMULATE) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SMELT_HOPPER_PTX 1
#endif

// The 128-byte, 64-byte aligned tensor map (CUtensorMap on a GPU, the emulation's encoding on
// the CPU), passed by value as a `const __grid_constant__` kernel parameter.
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

// Descriptor swizzle modes (bits 62..63 of a wgmma matrix descriptor).
enum : unsigned {
    WGMMA_SWIZZLE_NONE = 0,
    WGMMA_SWIZZLE_128B = 1,
    WGMMA_SWIZZLE_64B = 2,
    WGMMA_SWIZZLE_32B = 3
};

#if defined(SMELT_EMULATE)

// Kernel parameters of this type are `tensor_map` in Rust declarations (src/backend/kernels).
template <>
struct smelt_emu::type_name<TensorMap> {
    static constexpr const char* name = "tensor_map";
};

__device__ __forceinline__ unsigned shared_address(const void* p) {
    return smelt_emu::shared_window_address(p);
}
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned count) {
    smelt_emu::mbar_init(bar, count);
}
__device__ __forceinline__ void mbar_fence_init() { smelt_emu::mbar_fence_init(); }
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
    smelt_emu::mbar_arrive(bar, 0);
}
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    smelt_emu::mbar_arrive(bar, bytes);
}
__device__ __forceinline__ bool mbar_try_wait(unsigned long long* bar, unsigned parity) {
    return smelt_emu::mbar_try_wait(bar, parity);
}
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int x, int y,
                                            unsigned long long* bar) {
    const int coords[2] = {x, y};
    smelt_emu::bulk_tensor_load(dst, map, coords, 2, bar);
}
__device__ __forceinline__ void fence_proxy_async() { smelt_emu::fence_proxy_async(); }
__device__ __forceinline__ void wgmma_fence() { smelt_emu::wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit() { smelt_emu::wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    smelt_emu::wgmma_wait(N);
}
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_m64n128k16(float d[64], unsigned long long desc_a,
                                                 unsigned long long desc_b, int scale_d) {
    smelt_emu::wgmma_mma(d, 128, desc_a, desc_b, scale_d, TRANS_A, TRANS_B);
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_inc() {
    smelt_emu::setmaxnreg(N);
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_dec() {
    smelt_emu::setmaxnreg(N);
}

#elif defined(SMELT_HOPPER_PTX)

__device__ __forceinline__ unsigned shared_address(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count)
                 : "memory");
}
__device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" :::
                     "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar))
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                     shared_address(bar)),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(unsigned long long* bar, unsigned parity) {
    unsigned ok;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(ok)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
    return ok != 0;
}
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int x, int y,
                                            unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
        "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(shared_address(dst)),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(x), "r"(y), "r"(shared_address(bar))
        : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_m64n128k16(float d[64], unsigned long long desc_a,
                                                 unsigned long long desc_b, int scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
          "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
          "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
          "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),
          "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B));
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

#endif

#if defined(SMELT_HOPPER)

// Spins until the phase of parity `parity` before the current one has completed.
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}

// The first byte at or after `p` whose shared-window address is a multiple of `align`.
__device__ __forceinline__ unsigned char* align_shared(void* p, unsigned align) {
    const unsigned addr = shared_address(p);
    return static_cast<unsigned char*>(p) + ((align - addr % align) % align);
}

// A wgmma matrix descriptor for the operand at `p`: leading and stride byte offsets (multiples
// of 16; their meaning depends on the layout, see emu/runtime.cpp's operand_address) and one of
// WGMMA_SWIZZLE_*. For the 128-byte swizzle: K-major rows of 128 bytes have sbo = 1024 (8
// rows) and an unused lbo; MN-major tiles of 64-element rows along k have sbo = 1024 (8 k
// rows) and lbo = the distance between 64-wide blocks of M or N.
__device__ __forceinline__ unsigned long long wgmma_desc(const void* p, unsigned lbo,
                                                         unsigned sbo, unsigned swizzle) {
    const unsigned long long start = (shared_address(p) & 0x3ffffu) >> 4;
    return start | (static_cast<unsigned long long>(lbo >> 4) << 16) |
           (static_cast<unsigned long long>(sbo >> 4) << 32) |
           (static_cast<unsigned long long>(swizzle) << 62);
}

#endif
