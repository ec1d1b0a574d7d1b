// cuda_emu.h: CUDA's execution model on the CPU, so the same kernels/*.cu run in `cargo test`,
// and a sanitizer that catches what real hardware would punish.
//
// build.rs compiles ONE C++17 translation unit, OUT_DIR/smelt_emu.cpp, holding this header and
// then every kernels/*.cu, with -DSMELT_EMULATE (and -I kernels), plus the runtime
// (emu/runtime.cpp: fibers, scheduler, launches) and the sanitizer (emu/sanitizer.cpp), into the
// static library `smelt_emu`. Only the kernels' unit is instrumented (see "Sanitizer"); the
// runtime is reached through the out-of-line calls of emu/runtime.h. The unit ends with the
// kernel table (SMELT_EMU_KERNEL below) through which EmuRuntime launches every kernel by name.
// This header is included exactly once, in that unit.
//
// This file is also the definition of the CUDA subset our kernels may use: anything not
// declared here does not compile under emulation, so it is not allowed in kernels/*.cu.
//
// ---------------------------------------------------------------------------------------------
// Execution model
// ---------------------------------------------------------------------------------------------
// * A launch runs the grid's blocks on a few OS threads ("workers": the calling thread plus up
//   to SMELT_EMU_THREADS-1 std::threads; default min(4, hardware threads); SMELT_EMU_THREADS=1
//   runs every block on the calling thread). Each worker takes the next block index from an
//   atomic counter, so blocks run concurrently and in no fixed order, as on a GPU: atomics are
//   real (`__atomic` builtins), and blocks that race on global memory without them race here.
// * A block's threads are FIBERS on its worker: each has its own 64 KiB stack (mmap'd with a
//   guard page below; SMELT_EMU_STACK_KIB to change it) and they are scheduled cooperatively.
//   A fiber runs until it reaches a synchronisation point (__syncthreads, a warp intrinsic) or
//   returns; then the scheduler resumes the next runnable fiber. Context switches are a few
//   instructions of assembly on x86-64 (ucontext elsewhere, or with -DSMELT_EMU_UCONTEXT).
// * Scheduling order alternates: even blocks run their threads in increasing thread id, odd
//   blocks in decreasing order. So a missing __syncthreads (a thread reading shared memory that
//   a neighbour writes in the same barrier interval) gives wrong results in one of the two, and
//   the sanitizer reports it in both.
// * __syncthreads() is a barrier: a thread waits until all blockDim.x*y*z threads of the block
//   have reached a __syncthreads() (any of them; like bar.sync 0). If the scheduler finds no
//   runnable thread while some wait at a barrier that others will never reach (they returned,
//   or they wait at a warp intrinsic), the launch ABORTS with a message naming the kernel, the
//   block and the threads. On a GPU that is a hang or undefined behaviour.
// * Warps are the groups of 32 consecutive linear thread ids (x fastest, then y, then z). Warp
//   intrinsics (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp) are a warp
//   rendezvous: each lane deposits its value and waits until every lane of the warp has arrived
//   at a warp intrinsic, then reads a snapshot of the deposits. All lanes must call the same
//   intrinsic with the same mask; otherwise (or if a lane has returned) the launch aborts.
//   Masks: only "all lanes of this warp" (0xffffffff) is supported; other masks abort.
//   Code that relies on implicit warp lock-step (no __syncwarp) breaks here, as since Volta.
// * Blocks whose size is not a multiple of 32 have a partial last warp: its absent lanes do not
//   take part, and a shuffle that READS an absent lane returns a poison value (all bits set:
//   NaN for float, -1 for int) instead of the undefined value a GPU returns. Shuffles whose
//   source is out of the width segment return the caller's own value, as in CUDA.
// * Shared memory: `__shared__` is `thread_local`, so a static __shared__ variable (at kernel
//   or device-function scope) has one instance per worker, which runs one block at a time: all
//   threads of a block share it, concurrent blocks do not. It is NOT reset between blocks: it
//   holds what the previous block on that worker left (the sanitizer reports reading it).
//   build.rs compiles copies of the kernel files in which each __shared__ declaration of a
//   function is rewritten on its line (build/shared_decls.rs): the variable becomes a
//   `static thread_local` reached through a reference the compiler cannot see through (and
//   `smem` is a pointer from the runtime). Without it g++ would leave every constant-offset
//   access (`s[0]`, a scalar) uninstrumented, unseen by the sanitizer.
// * Dynamic shared memory is `smem` (common.cuh declares it for nvcc; here it is a macro for
//   the runtime's pointer to it, and a kernel file's own `extern __shared__ ... smem[];` is
//   dropped by the rewrite below): a 16-byte aligned per-worker buffer of
//   SMELT_EMU_MAX_DYNAMIC_SMEM bytes (227 KiB, Hopper's opt-in maximum), filled with 0xff bytes
//   (NaN) before each block. Launches asking for more abort. (On the GPU, above 48 KiB needs
//   cudaFuncSetAttribute by the backend.)
// * cp.async (tensor_core.cuh) completes late, as PTX allows: cp_async_16 reads its source at
//   once but its 16 destination bytes hold 0xff until a cp_async_wait<N> of the issuing thread
//   covers the copy's group (groups are per thread: cp_async_commit closes one; wait<N> lands
//   every committed group but the N most recent; copies never waited land when the thread
//   exits). The landing is a write by the waiting thread at the wait, so other threads need a
//   __syncthreads() after the wait before they read.
// * Hopper (hopper.cuh; runtime.cpp "Hopper"), strict where the hardware is unforgiving:
//   - The shared window: dynamic shared memory only, smem[0] at window address 16 (not 1024-
//     aligned, so kernels must align swizzled tiles themselves, as on a GPU).
//   - mbarrier: init (count), arrive (with expect_tx), try_wait.parity (true iff the phase
//     before the current one has that parity; "phase -1" counts as complete with parity 1).
//     A failed try_wait yields to the other threads; if a whole round of the scheduler makes no
//     progress while threads spin on mbarriers, the launch aborts naming the deadlock.
//   - Bulk tensor copies (cp.async.bulk.tensor, 2-D): the emulation's tensor map (encoded by
//     src/backend/tensor_map.rs under cuTensorMapEncodeTiled's rules); the box is read at the
//     issue (out-of-bounds elements: zeros), its destination poisoned (0xff) and pending; it
//     LANDS only when some thread waits on its mbarrier (the copy engine is late), in 16-byte
//     chunks placed by the swizzle (bits 4.. of the shared address XOR bits 7..: 1, 2 or 3
//     bits for the 32/64/128-byte modes; destinations aligned to 1024 bytes when swizzled,
//     else 128), and completes its bytes of transactions then. Copies never waited for are
//     dropped at the block's end.
//   - wgmma m64nNk16 f32 += bf16 x bf16, both operands in shared memory, K-major or MN-major
//     (the transpose flags): a warpgroup rendezvous (128 threads, all with the same descriptors). The
//     operands are decoded from the descriptors (start, leading/stride byte offsets, swizzle;
//     a non-zero base offset aborts), read at the issue, and the result kept in flight: the
//     accumulators hold NaN until a wgmma.wait_group covers the op's commit group, when they
//     get its values and the operand bytes are compared with those read at the issue.
//     wgmma.fence is required before the first wgmma after each wait (stricter than PTX, which
//     asks for it only when the registers were touched); without it the launch aborts.
//   - setmaxnreg: a warpgroup rendezvous checking the count (24..256, a multiple of 8).
//   Sanitizer additions: happens-before through mbarrier phases (vector clocks: an arrive
//   releases what the thread has seen, a successful wait acquires the completed phase), bulk
//   copies as writes by a pseudo-thread per mbarrier, so that a thread (or a wgmma, for every
//   thread of its warpgroup) reading copied bytes not ordered after the wait on that phase is
//   reported (bulk copy unwaited: no wait, the wrong parity, the wrong barrier); a wgmma reading
//   bytes threads stored without fence.proxy.async (then a barrier) between; a wgmma reading
//   bytes a copy wrote with another swizzle than its descriptor names; an operand changed
//   before the wgmma's wait. Not checked: a bulk copy overwriting bytes a wgmma in flight reads
//   is seen only through that last check; reads by several warps of bytes a bulk copy then
//   overwrites count as ordered only through a __syncthreads or a single reader's mbarrier.
// * Launch checks, as cudaLaunchKernel: block <= 1024 threads, blockDim.z <= 64, grid.y/.z <=
//   65535, no zero dimension. Not checked: __launch_bounds__, registers, static smem size.
//
// ---------------------------------------------------------------------------------------------
// Sanitizer (on by default; SMELT_EMU_SANITIZE=0 turns it off, =abort prints and aborts)
// ---------------------------------------------------------------------------------------------
// The kernels' unit is compiled with g++'s `-fsanitize=kernel-address --param
// asan-instrumentation-with-call-threshold=0 --param asan-stack=0 --param asan-globals=0
// -fsanitize-recover=kernel-address`: every load and store becomes a call
// `__asan_{load,store}{1,2,4,8,16,N}_noabort(address)` before the access. No ASan runtime is
// linked; emu/sanitizer.cpp defines those callbacks, and they classify the address: this
// worker's static TLS block (which holds every `__shared__` variable and `smem`: nothing else
// instrumented lives there), an EmuRuntime allocation, or anything else (fiber stacks, host
// memory: not checked). Findings do not abort: each launch keeps its first 8 (and counts all),
// and EmuRuntime's launch returns `Error::Device` naming the first and how many more
// (src/backend/device/sanitizer.rs). Each names the kernel, block, thread, address, the offset
// in the allocation or shared memory, and the other thread of a race.
// * racecheck (shared memory): per byte, the last write (thread, time) and the reads since (the
//   latest reader, another reader, their warp). A read of a byte another thread wrote (RAW), or
//   a write of a byte another thread wrote (WAW) or read (WAR), with no __syncthreads between
//   them (or __syncwarp, when both threads are in one warp), is a data race. Shuffles, votes,
//   ldmatrix and mma do not order memory (as in CUDA); atomics are never races.
// * initcheck: a read of shared memory this block never wrote (stale data of a previous block
//   included); a read of an EmuRuntime buffer's bytes never written since allocation (`alloc`:
//   unwritten; `alloc_zeroed`, `upload` and kernel stores write; one bit per byte).
// * memcheck: every access that starts in an EmuRuntime allocation, or in the 4 KiB guard gap
//   on either side of it (EmuRuntime allocates them), and does not stay inside the allocation;
//   and every access past the launch's dynamic shared memory size (inside the 227 KiB buffer).
// * cp.async: reading or writing a destination byte before its wait (a missing or too weak
//   cp_async_wait); a destination outside shared memory or an address not 16-byte aligned.
// What it cannot see: accesses far outside any allocation (landing in another buffer or in
// host memory; memory that is not an EmuRuntime allocation gets no global checks), overflow
// from one static __shared__ array into another, races on global memory between blocks,
// memcpy/memset calls with a non-constant size (kernels must not use them), __shared__
// variables declared outside functions (not rewritten: constant offsets unseen), and accesses
// in code of this header compiled without instrumentation (the atomics, which check
// explicitly). Races are found between the accesses of this schedule: fibers run until they
// synchronise, so within one barrier interval every access of a thread precedes those of the
// next thread in schedule order, and an unsynchronised pair of accesses is seen as long as both
// happen (they do in both orders: even blocks run threads up, odd blocks down).
// Cost: a callback per access (about 2 instructions when the address is neither shared nor
// an allocation), 16 bytes of shadow per byte of the TLS block per worker (~3.7 MiB of address
// space, touched lazily, pooled), one bit per byte of each `alloc`ed buffer. Measured with the
// checks on versus off (SMELT_EMU_SANITIZE=0): the test binaries take 1.2x to 1.5x the CPU
// time; kernels/emu/README.md has the table.
//
// ---------------------------------------------------------------------------------------------
// Arithmetic: nvcc's --use_fast_math, emulated where it changes results
// ---------------------------------------------------------------------------------------------
// nvcc builds with --use_fast_math (checked in the PTX of CUDA 13.0): f32 ops flush subnormal
// inputs and outputs to zero, expf(x) is ex2.approx.ftz(x * log2e) with the product rounded to
// f32, logf(x) is lg2.approx(x) * ln2, tanhf is tanh.approx.f32, x / y is div.approx.f32, sqrtf
// and rsqrtf are sqrt.approx / rsqrt.approx. Here:
// * flush-to-zero: a worker runs its blocks with MXCSR's FTZ and DAZ bits set (x86-64; the
//   fibers share the worker's MXCSR), so subnormals vanish as on the GPU (in f64 too, which the
//   GPU keeps; our kernels have no f64 arithmetic).
// * expf / __expf = exp2f(f32(x * log2e)): the rounding of the product is the approximation's
//   main error (relative |x| * 2^-24, 6e-7 at |x| = 10), so it is reproduced; ex2.approx's own
//   error (2^-22.5 relative) is not.
// * logf / __logf = log2f(x) * f32(ln2), the same structure.
// * tanhf: tanh rounded to 16 significant bits, an error the size of tanh.approx.f32's (about
//   1e-5 relative measured, 2^-11 by PTX's bound), as large as the f32 tolerance: kernels
//   compute tanh-based functions through expf instead (GELU as x * sigmoid(2u)).
// With these, every kernel test holds its tolerance (f32 1e-5, bf16 1e-2, casts bit for bit),
// and so do the device backend against the PyTorch fixture and `evaluate --device emu`.
// * division, sqrtf, rsqrtf: exact here. The approximations are within 2 ulp (2.4e-7 relative)
//   in the ranges kernels use (div.approx: divisors below 2^126), 40x below the f32 tolerance
//   of 1e-5, so the tolerances hold with them on the GPU.
//
// ---------------------------------------------------------------------------------------------
// Supported subset
// ---------------------------------------------------------------------------------------------
// (see the definitions below): __global__ __device__ __host__
// __forceinline__ __noinline__ __launch_bounds__(...) __restrict__ __align__(n) __shared__
// __constant__ (read-only data with an initialiser), threadIdx blockIdx blockDim gridDim
// warpSize, dim3 uint3 int2/int4/uint2/uint4/float2/float4 (+ make_*), __syncthreads,
// __syncthreads_count/_and/_or, __syncwarp, __shfl_sync, __shfl_up_sync, __shfl_down_sync,
// __shfl_xor_sync (int, long, long long, their unsigned versions, float, double),
// __ballot_sync, __any_sync, __all_sync, __threadfence(_block), atomicAdd (int, unsigned,
// unsigned long long, float, double), atomicSub, atomicMax/atomicMin (int, unsigned), atomicExch, atomicCAS,
// __nv_bfloat16 / __nv_bfloat162 with __float2bfloat16(_rn), __bfloat162float,
// __floats2bfloat162_rn, __bfloat1622float2, __bfloat16_as_ushort, __ushort_as_bfloat16 (no
// implicit conversions or operators: convert explicitly), math: the C library's float and
// double functions (expf logf tanhf sqrtf fmaxf fminf fabsf powf fmaf exp2f log2f erff ...,
// exp(float) overloads, isnan/isinf/isfinite/signbit), rsqrtf, __expf __logf __powf __sinf
// __cosf __log2f __fdividef __frcp_rn __saturatef __fadd_rn __fsub_rn __fmul_rn __fdiv_rn
// __fsqrt_rn __fmaf_rn, min/max (int, unsigned, long long, float, double), __float_as_int
// __int_as_float __float_as_uint __uint_as_float, __ldg, INFINITY, printf, assert; and through
// tensor_core.cuh: mma.sync m16n8k16 bf16, ldmatrix(.trans) x4, cp.async 16 bytes; and
// through hopper.cuh: mbarrier, 2-D bulk tensor copies, fence.proxy.async, wgmma m64n128k16
// (shared-memory operands, K- or MN-major), setmaxnreg, `const __grid_constant__ TensorMap`.
// Limits to know:
// * No preemption: a thread that spins waiting for another thread or block (a flag in shared or
//   global memory, without __syncthreads between) loops forever here. Not allowed in CUDA
//   either without cooperative launches; use barriers, or separate kernels for grid-wide steps.
// * Fiber stacks are 64 KiB: large local arrays or deep recursion overflow them (SIGSEGV on
//   the guard page). SMELT_EMU_STACK_KIB=256 raises it.
// * A kernel's register use, occupancy, bank conflicts, coalescing and speed mean nothing
//   here; nvcc's ptxas log (build.rs) and the GPU are the judges of those.
// * Emulation is much slower than the CPU backend (a context switch per thread and barrier, a
//   sanitizer call per access): keep test sizes moderate.
// Not supported: cooperative groups, wmma, clusters, inline PTX, textures, streams or
// events inside kernels, dynamic parallelism, __constant__ written by the host. Kernels must
// have at least one parameter (the launcher appends them after smem).

#pragma once
// Warnings of the host compiler that do not apply to CUDA code (cc passes -Wall -Wextra):
// `threadIdx.x < n` compares unsigned with int all the time. (g++ 12 cannot silence
// -Wunknown-pragmas this way, hence SMELT_UNROLL instead of #pragma unroll in common.cuh.)
#pragma GCC diagnostic ignored "-Wsign-compare"

#if !defined(SMELT_EMULATE)
#error "cuda_emu.h is the CPU emulation of CUDA: compile with -DSMELT_EMULATE"
#endif

#include <algorithm>
#include <cassert>
#include <cmath>
#include <math.h>  // libstdc++'s: float overloads (exp(float)...) and isnan etc. in ::, as CUDA
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

// ---------------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// One instance per worker OS thread = per running block (see "Shared memory" above).
#define __shared__ thread_local
#define __constant__ static
// __restrict__ is a g++ keyword already.

#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif

// ---------------------------------------------------------------------------------------------
// Vector types (aggregates, as in CUDA's vector_types.h; alignment as in CUDA; uint3 and dim3
// are in runtime.h)
// ---------------------------------------------------------------------------------------------

struct __attribute__((aligned(8))) int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned int x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned int x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace smelt_emu {
// `p`, as a value the compiler cannot trace back to the variable it points into: accesses
// through it are instrumented even at constant offsets (build/shared_decls.rs).
template <typename T>
inline T* opaque(T* p) {
    __asm__("" : "+r"(p));
    return p;
}
}  // namespace smelt_emu

// ---------------------------------------------------------------------------------------------
// Launches
// ---------------------------------------------------------------------------------------------

namespace smelt_emu {

template <typename F>
inline void launch(const char* name, smelt_dim3 grid, smelt_dim3 block, unsigned smem_bytes,
                   F&& body) {
    using Body = typename std::remove_reference<F>::type;
    launch_impl(name, grid, block, smem_bytes,
                [](void* p) { (*static_cast<Body*>(p))(); }, static_cast<void*>(&body));
}

// Runs `kernel` with its arguments given as cuLaunchKernel's `kernelParams`: params[i] points
// at the value of argument i. The values are copied before the launch (as CUDA does).
template <typename... A, std::size_t... I>
inline void launch_params_impl(const char* name, void (*kernel)(A...), smelt_dim3 grid,
                               smelt_dim3 block, unsigned smem_bytes, void** params,
                               std::index_sequence<I...>) {
    std::tuple<typename std::decay<A>::type...> args(
        *static_cast<typename std::decay<A>::type*>(params[I])...);
    launch(name, grid, block, smem_bytes, [&]() { std::apply(kernel, args); });
}

template <typename... A>
inline void launch_params(const char* name, void (*kernel)(A...), smelt_dim3 grid,
                          smelt_dim3 block, unsigned smem_bytes, void** params) {
    launch_params_impl(name, kernel, grid, block, smem_bytes, params,
                       std::index_sequence_for<A...>{});
}

}  // namespace smelt_emu

// The kernel table: build.rs ends the emulation unit with
//   extern "C" const smelt_emu_kernel smelt_emu_kernels[] = { SMELT_EMU_KERNEL(gelu_forward), ... };
//   extern "C" const unsigned smelt_emu_kernel_count = ...;
// one row per `extern "C" __global__` kernel of kernels/*.cu (found by scanning them), so a
// kernel file needs no export lines. Each row holds the kernel's name, a launcher with
// cuLaunchKernel's argument convention (params[i] points at argument i), and the kernel's
// parameter types as the C++ compiler sees them ("f32*,const bf16*,i32"), which EmuRuntime
// compares with the kernel's Rust declaration (src/backend/kernels) before its first launch.
struct smelt_emu_kernel {
    const char* name;
    void (*launch)(smelt_dim3 grid, smelt_dim3 block, unsigned smem, void** params);
    const char* (*signature)();
};

namespace smelt_emu {
// The Rust declaration's name of each C type a kernel parameter may have.
template <typename T>
struct type_name;  // no definition: a kernel with another parameter type does not compile
#define SMELT_EMU_TYPE_NAME(T, N) \
    template <>                   \
    struct type_name<T> {         \
        static constexpr const char* name = N; \
    };
SMELT_EMU_TYPE_NAME(float, "f32")
SMELT_EMU_TYPE_NAME(double, "f64")
SMELT_EMU_TYPE_NAME(int, "i32")
SMELT_EMU_TYPE_NAME(unsigned, "u32")
SMELT_EMU_TYPE_NAME(long, "i64")
SMELT_EMU_TYPE_NAME(long long, "i64")
SMELT_EMU_TYPE_NAME(unsigned long long, "u64")
SMELT_EMU_TYPE_NAME(unsigned short, "u16")
SMELT_EMU_TYPE_NAME(unsigned char, "u8")
#undef SMELT_EMU_TYPE_NAME

template <typename T>
inline std::string param_type() {
    if constexpr (std::is_pointer<T>::value) {
        using P = typename std::remove_pointer<T>::type;
        const char* c = std::is_const<P>::value ? "const " : "";
        return std::string(c) + type_name<typename std::remove_cv<P>::type>::name + "*";
    } else {
        return type_name<typename std::remove_cv<T>::type>::name;
    }
}

template <typename... A>
inline const char* signature(void (*)(A...)) {
    static const std::string text = [] {
        std::string s;
        ((s += (s.empty() ? "" : ","), s += param_type<A>()), ...);
        return s;
    }();
    return text.c_str();
}
}  // namespace smelt_emu

#define SMELT_EMU_KERNEL(name)                                                           \
    smelt_emu_kernel {                                                                    \
        #name,                                                                           \
            [](smelt_dim3 g, smelt_dim3 b, unsigned s, void** p) {                       \
                ::smelt_emu::launch_params(#name, &name, g, b, s, p);                    \
            },                                                                           \
            [] { return ::smelt_emu::signature(&name); }                                 \
    }

// ---------------------------------------------------------------------------------------------
// Built-in variables and synchronisation
// ---------------------------------------------------------------------------------------------

#define threadIdx (::smelt_emu::thread_idx())
#define blockIdx (::smelt_emu::block_idx())
#define blockDim (::smelt_emu::block_dim())
#define gridDim (::smelt_emu::grid_dim())
#define warpSize 32

inline void __syncthreads() { smelt_emu::block_barrier(0); }
inline int __syncthreads_count(int pred) { return smelt_emu::block_barrier(pred != 0); }
inline int __syncthreads_and(int pred) {
    return smelt_emu::block_barrier(pred != 0) == int(smelt_emu::block_threads());
}
inline int __syncthreads_or(int pred) { return smelt_emu::block_barrier(pred != 0) != 0; }

inline void __syncwarp(unsigned mask = 0xffffffffu) { smelt_emu::warp_sync(mask); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return smelt_emu::ballot(smelt_emu::WarpOp::Ballot, mask, pred);
}
inline int __any_sync(unsigned mask, int pred) {
    return smelt_emu::ballot(smelt_emu::WarpOp::Any, mask, pred) != 0;
}
inline int __all_sync(unsigned mask, int pred) {
    const unsigned lanes = smelt_emu::warp_lanes();
    const unsigned all = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    return smelt_emu::ballot(smelt_emu::WarpOp::All, mask, pred) == all;
}

namespace smelt_emu {
// A shuffle of any value of at most 8 bytes, through the runtime's shuffle of 64 bits.
template <typename T>
inline T shuffle_value(WarpOp op, unsigned mask, T var, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move values of at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = shuffle(op, mask, bits, arg, width);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
}  // namespace smelt_emu

// Shuffles for the types CUDA provides them for.
#define SMELT_EMU_SHUFFLES(T)                                                                   \
    inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {                  \
        return smelt_emu::shuffle_value(smelt_emu::WarpOp::Shfl, mask, var, src_lane, width);   \
    }                                                                                           \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {             \
        return smelt_emu::shuffle_value(smelt_emu::WarpOp::ShflUp, mask, var, int(delta),       \
                                        width);                                                 \
    }                                                                                           \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {           \
        return smelt_emu::shuffle_value(smelt_emu::WarpOp::ShflDown, mask, var, int(delta),     \
                                        width);                                                 \
    }                                                                                           \
    inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {             \
        return smelt_emu::shuffle_value(smelt_emu::WarpOp::ShflXor, mask, var, lane_mask,       \
                                        width);                                                 \
    }
SMELT_EMU_SHUFFLES(int)
SMELT_EMU_SHUFFLES(unsigned int)
SMELT_EMU_SHUFFLES(long)
SMELT_EMU_SHUFFLES(unsigned long)
SMELT_EMU_SHUFFLES(long long)
SMELT_EMU_SHUFFLES(unsigned long long)
SMELT_EMU_SHUFFLES(float)
SMELT_EMU_SHUFFLES(double)
#undef SMELT_EMU_SHUFFLES

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap() { smelt_emu::fail("__trap() called"); }

// ---------------------------------------------------------------------------------------------
// Atomics (device-wide, relaxed, as CUDA's). Not instrumented (an atomic is never a race): each
// tells the sanitizer of its access explicitly, then runs out of line.
// ---------------------------------------------------------------------------------------------

#define SMELT_EMU_ATOMIC __attribute__((no_sanitize_address, noinline))

template <typename T, typename Op>
SMELT_EMU_ATOMIC T smelt_emu_atomic_rmw(T* p, Op op) {
    smelt_emu::atomic_access(p, sizeof(T));
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, op(old), true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
}
// Floats through their bit patterns.
template <typename F, typename U>
SMELT_EMU_ATOMIC F smelt_emu_atomic_float_add(F* p, F v) {
    static_assert(sizeof(F) == sizeof(U), "float/int sizes");
    const U bits = smelt_emu_atomic_rmw(reinterpret_cast<U*>(p), [v](U old) {
        F f;
        std::memcpy(&f, &old, sizeof f);
        f += v;
        U next;
        std::memcpy(&next, &f, sizeof f);
        return next;
    });
    F old;
    std::memcpy(&old, &bits, sizeof old);
    return old;
}
template <typename T>
SMELT_EMU_ATOMIC T smelt_emu_atomic_cas(T* p, T compare, T v) {
    smelt_emu::atomic_access(p, sizeof(T));
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}

inline int atomicAdd(int* p, int v) {
    return smelt_emu_atomic_rmw(p, [v](int o) { return o + v; });
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned o) { return o + v; });
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned long long o) { return o + v; });
}
inline float atomicAdd(float* p, float v) {
    return smelt_emu_atomic_float_add<float, uint32_t>(p, v);
}
inline double atomicAdd(double* p, double v) {
    return smelt_emu_atomic_float_add<double, uint64_t>(p, v);
}
inline int atomicSub(int* p, int v) {
    return smelt_emu_atomic_rmw(p, [v](int o) { return o - v; });
}
inline unsigned atomicSub(unsigned* p, unsigned v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned o) { return o - v; });
}
inline int atomicMax(int* p, int v) {
    return smelt_emu_atomic_rmw(p, [v](int o) { return o > v ? o : v; });
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned o) { return o > v ? o : v; });
}
inline int atomicMin(int* p, int v) {
    return smelt_emu_atomic_rmw(p, [v](int o) { return o < v ? o : v; });
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned o) { return o < v ? o : v; });
}
inline int atomicExch(int* p, int v) {
    return smelt_emu_atomic_rmw(p, [v](int) { return v; });
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
    return smelt_emu_atomic_rmw(p, [v](unsigned) { return v; });
}
inline float atomicExch(float* p, float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    b = smelt_emu_atomic_rmw(reinterpret_cast<uint32_t*>(p), [b](uint32_t) { return b; });
    std::memcpy(&v, &b, 4);
    return v;
}
inline int atomicCAS(int* p, int compare, int v) { return smelt_emu_atomic_cas(p, compare, v); }
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) {
    return smelt_emu_atomic_cas(p, compare, v);
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare,
                                    unsigned long long v) {
    return smelt_emu_atomic_cas(p, compare, v);
}
#undef SMELT_EMU_ATOMIC

// ---------------------------------------------------------------------------------------------
// Math: CUDA's device functions missing from the host's libm, and the fast-math approximations
// (see "Arithmetic" at the top)
// ---------------------------------------------------------------------------------------------

// Correctly rounded, never contracted into an FMA (nvcc: the same; used to pin rounding).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

// ex2.approx.ftz(x * log2e), the product rounded to f32 (0f3FB8AA3B, as nvcc writes it).
inline float __expf(float x) { return std::exp2(__fmul_rn(x, 1.44269502f)); }
// lg2.approx(x) * ln2 (0f3F317218).
inline float __logf(float x) { return __fmul_rn(std::log2(x), 0.693147182f); }
// tanh.approx.f32: modelled as tanh rounded to 16 significant bits (about its error).
inline float smelt_emu_tanh_approx(float x) {
    const float t = std::tanh(x);
    uint32_t u;
    std::memcpy(&u, &t, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x80u) & ~0xffu;
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __powf(float a, float b) { return std::exp2(__fmul_rn(b, std::log2(a))); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __log2f(float x) { return std::log2(x); }
// What --use_fast_math makes of the libm names in kernels (every header is included above).
#define expf(x) __expf(x)
#define logf(x) __logf(x)
#define tanhf(x) smelt_emu_tanh_approx(x)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(unsigned(a), b); }
inline unsigned max(int a, unsigned b) { return max(unsigned(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, unsigned(b)); }
inline unsigned max(unsigned a, int b) { return max(a, unsigned(b)); }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline int __float_as_int(float x) {
    int i;
    std::memcpy(&i, &x, 4);
    return i;
}
inline unsigned __float_as_uint(float x) {
    unsigned i;
    std::memcpy(&i, &x, 4);
    return i;
}
inline float __int_as_float(int i) {
    float x;
    std::memcpy(&x, &i, 4);
    return x;
}
inline float __uint_as_float(unsigned i) {
    float x;
    std::memcpy(&x, &i, 4);
    return x;
}
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}


// ---------------------------------------------------------------------------------------------
// bfloat16 (cuda_bf16.h subset; explicit conversions only)
// ---------------------------------------------------------------------------------------------

struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

// Round to nearest, ties to even; every NaN becomes the canonical bf16 NaN 0x7fff (as CUDA's
// own host implementation in cuda_bf16.hpp); infinities and subnormals convert exactly.
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{static_cast<unsigned short>(u >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = uint32_t(h.__x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return float2{__bfloat162float(h.x), __bfloat162float(h.y)};
}

namespace smelt_emu {
template <>
struct type_name<__nv_bfloat16> {
    static constexpr const char* name = "bf16";
};
}  // namespace smelt_emu

// Dynamic shared memory (common.cuh, convention 4): this worker's buffer, through a pointer the
// instrumentation sees every access through (build/shared_decls.rs). Last in this header, so
// that only kernel code reads the name.
#define smem (reinterpret_cast<float*>(::smelt_emu::dynamic_smem()))
