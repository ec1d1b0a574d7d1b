// cuda_emu.h: CUDA's execution model on the CPU, so the same kernels/*.cu run in `cargo test`.
//
// build.rs compiles ONE C++17 translation unit, OUT_DIR/smelt_emu.cpp, holding this header and
// then every kernels/*.cu, with -DSMELT_EMULATE (and -I kernels), into the static library
// `smelt_emu`. Each kernel file ends with SMELT_EMU_EXPORT lines that define C launchers
// `smelt_emu_<kernel>(grid, block, dynamic_smem_bytes, args...)`, which Rust calls through FFI
// (src/backend/emu). This header is included exactly once, in that unit.
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
//   a neighbour writes in the same barrier interval) gives wrong results in one of the two.
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
//   holds what the previous block on that worker left (uninitialised memory, as on a GPU).
// * Dynamic shared memory is `extern __shared__ float smem[];` - that one name and type (nvcc
//   compiles all kernels as one unit, where every declaration of an extern __shared__ name must
//   agree anyway; reinterpret_cast it for other types). It is a 16-byte aligned per-worker
//   buffer of SMELT_EMU_MAX_DYNAMIC_SMEM bytes (227 KiB, Hopper's opt-in maximum), filled with
//   0xff bytes (NaN) before each block so reads of unwritten shared memory show. Launches asking
//   for more abort. (On the GPU, above 48 KiB needs cudaFuncSetAttribute by the backend.)
// * Launch checks, as cudaLaunchKernel: block <= 1024 threads, blockDim.z <= 64, grid.y/.z <=
//   65535, no zero dimension. Not checked: __launch_bounds__, registers, static smem size.
// * Arithmetic is the host's IEEE float (no fast-math; subnormals kept). nvcc builds with
//   --use_fast_math (approximate expf/division, flush-to-zero), so GPU results differ by a few
//   ulps: compare with tolerances, except for exact operations (casts, copies, integer work).
//
// Supported subset (see the definitions below): __global__ __device__ __host__
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
// __int_as_float __float_as_uint __uint_as_float, __ldg, INFINITY, printf, assert.
// Limits to know:
// * No preemption: a thread that spins waiting for another thread or block (a flag in shared or
//   global memory, without __syncthreads between) loops forever here. Not allowed in CUDA
//   either without cooperative launches; use barriers, or separate kernels for grid-wide steps.
// * Fiber stacks are 64 KiB: large local arrays or deep recursion overflow them (SIGSEGV on
//   the guard page). SMELT_EMU_STACK_KIB=256 raises it.
// * Static __shared__ memory is zero in a worker's first block and stale after; only dynamic
//   shared memory is poisoned. Stale data equal to the right answer can hide a missing write.
// * A kernel's register use, occupancy, bank conflicts, coalescing and speed mean nothing
//   here; nvcc's ptxas log (build.rs) and the GPU are the judges of those.
// * Emulation is much slower than the CPU backend (a context switch per thread and barrier):
//   keep test sizes moderate.
// Not supported: cooperative groups, tensor cores (mma/wmma), cp.async / TMA, clusters, inline
// PTX, textures, streams or events inside kernels, dynamic parallelism, __constant__ written by
// the host. Kernels must have at least one parameter (the launcher appends them after smem).

#pragma once
// Warnings of the host compiler that do not apply to CUDA code (cc passes -Wall -Wextra):
// `threadIdx.x < n` compares unsigned with int all the time. (g++ 12 cannot silence
// -Wunknown-pragmas this way, hence SMELT_UNROLL instead of #pragma unroll in common.cuh.)
#pragma GCC diagnostic ignored "-Wsign-compare"

#if !defined(SMELT_EMULATE)
#error "cuda_emu.h is the CPU emulation of CUDA: compile with -DSMELT_EMULATE"
#endif

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <math.h>  // libstdc++'s: float overloads (exp(float)...) and isnan etc. in ::, as CUDA
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__) && !defined(SMELT_EMU_UCONTEXT)
#define SMELT_EMU_UCONTEXT 1
#endif
#if defined(SMELT_EMU_UCONTEXT)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One instance per worker OS thread = per running block (see "Shared memory" above).
#define __shared__ thread_local
#define __constant__ static
// __restrict__ is a g++ keyword already.

#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif

// The largest dynamic shared memory a launch may request (Hopper's per-block opt-in maximum).
#define SMELT_EMU_MAX_DYNAMIC_SMEM (227u * 1024u)

// The launch geometry as Rust passes it (`#[repr(C)] struct Dim3 { x: u32, y: u32, z: u32 }`).
struct smelt_dim3 {
    unsigned int x, y, z;
};

// ---------------------------------------------------------------------------------------------
// Vector types (aggregates, as in CUDA's vector_types.h; alignment as in CUDA)
// ---------------------------------------------------------------------------------------------

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
};
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

// ---------------------------------------------------------------------------------------------
// The runtime: fibers, scheduler, barriers, warp rendezvous
// ---------------------------------------------------------------------------------------------

namespace smelt_emu {

[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("smelt CUDA emulation: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::fflush(stderr);
    std::abort();
}

// ---- context switching -----------------------------------------------------------------------

#if defined(SMELT_EMU_UCONTEXT)
struct Context {
    ucontext_t uc;
};
#else
// x86-64 System V: save the callee-saved registers on the current stack, store its stack
// pointer in *save, load `next` as the stack pointer, pop that context's registers, return
// into it. A fresh fiber's stack is prepared by prepare_stack() to "return" into the entry.
extern "C" void smelt_emu_switch(void** save, void* next);
__asm__(
    ".text\n"
    ".globl smelt_emu_switch\n"
    ".hidden smelt_emu_switch\n"
    ".type smelt_emu_switch,@function\n"
    "smelt_emu_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size smelt_emu_switch, .-smelt_emu_switch\n");
struct Context {
    void* sp = nullptr;
};
#endif

struct Worker;
void fiber_main();

enum class State : unsigned char { Runnable, AtBarrier, AtWarp, Done };

// What a lane waits for at a warp rendezvous; all lanes of a warp must agree.
enum class WarpOp : unsigned char { None, Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, Sync };

inline const char* warp_op_name(WarpOp op) {
    switch (op) {
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::Sync: return "__syncwarp";
    default: return "(none)";
    }
}

struct Fiber {
    Context ctx;
    uint3 tid;
    unsigned linear;
    State state;
    char* stack_lo;  // usable stack [stack_lo, stack_lo + stack_size)
};

struct Warp {
    unsigned lanes;      // lanes present (32, or fewer in a partial last warp)
    unsigned arrived;    // lanes waiting at the current rendezvous
    WarpOp op;           // the intrinsic of the current rendezvous
    unsigned mask;       // its mask
    uint64_t deposit[32];
    uint64_t snapshot[32];  // the deposits of the last completed rendezvous
};

struct Kernel {
    const char* name;
    void (*body)(void*);
    void* ctx;
    dim3 grid, block;
    unsigned smem_bytes;
    unsigned nthreads;
};

// Dynamic shared memory: the name kernels declare (`extern __shared__ float smem[];`).
}  // namespace smelt_emu

alignas(16) thread_local float smem[SMELT_EMU_MAX_DYNAMIC_SMEM / sizeof(float)];

namespace smelt_emu {

inline size_t stack_bytes() {
    static const size_t bytes = [] {
        size_t kib = 64;
        if (const char* s = std::getenv("SMELT_EMU_STACK_KIB")) {
            long v = std::strtol(s, nullptr, 10);
            if (v >= 16) kib = size_t(v);
        }
        return kib * 1024;
    }();
    return bytes;
}

inline unsigned worker_count() {
    static const unsigned n = [] {
        unsigned hw = std::max(1u, std::thread::hardware_concurrency());
        unsigned v = std::min(4u, hw);
        if (const char* s = std::getenv("SMELT_EMU_THREADS")) {
            long x = std::strtol(s, nullptr, 10);
            if (x >= 1) v = unsigned(std::min(x, 256L));
        }
        return v;
    }();
    return n;
}

// Fiber stacks: one mmap'd region per fiber slot with a PROT_NONE guard page at its low end.
// Slots are kept in a process-wide pool and reused by later launches (on any OS thread).
struct StackSet {
    std::vector<char*> stacks;
    void grow(size_t n) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        const size_t bytes = (stack_bytes() + page - 1) / page * page;
        while (stacks.size() < n) {
            void* p = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) fail("mmap of a %zu-byte fiber stack failed", bytes + page);
            mprotect(p, page, PROT_NONE);  // stack overflow -> SIGSEGV, not silent corruption
            stacks.push_back(static_cast<char*>(p) + page);
        }
    }
};

inline std::mutex& pool_mutex() {
    static std::mutex m;
    return m;
}
inline std::vector<StackSet*>& pool() {
    static std::vector<StackSet*> p;
    return p;
}
inline StackSet* take_stacks() {
    std::lock_guard<std::mutex> lock(pool_mutex());
    if (pool().empty()) return new StackSet();
    StackSet* s = pool().back();
    pool().pop_back();
    return s;
}
inline void give_stacks(StackSet* s) {
    std::lock_guard<std::mutex> lock(pool_mutex());
    pool().push_back(s);
}

// One OS thread's state while it runs blocks of a launch.
struct Worker {
    const Kernel* kernel = nullptr;
    StackSet* stacks = nullptr;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Context scheduler;
    Fiber* current = nullptr;
    uint3 block_idx{0, 0, 0};
    unsigned block_linear = 0;
    unsigned remaining = 0;         // fibers not yet returned
    unsigned barrier_arrived = 0;   // fibers waiting at __syncthreads
    int barrier_count = 0;          // __syncthreads_count accumulator
    int barrier_result = 0;         // the count of the last completed barrier
};

inline thread_local Worker* tl_worker = nullptr;

inline Worker& worker() {
    Worker* w = tl_worker;
    if (!w) fail("a CUDA device function was called outside an emulated kernel launch");
    return *w;
}

inline void prepare(Fiber& f) {
    char* top = f.stack_lo + stack_bytes();
    top = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
#if defined(SMELT_EMU_UCONTEXT)
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack_lo;
    f.ctx.uc.uc_stack.ss_size = size_t(top - f.stack_lo);
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, fiber_main, 0);
#else
    // From the top: a zero fake return address for fiber_main (so that its entry sees
    // rsp % 16 == 8 as after a call), fiber_main as smelt_emu_switch's return address, six
    // zeroed callee-saved registers, then MXCSR and the x87 control word (defaults).
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);
    for (int i = 0; i < 6; ++i) *--sp = 0;
    --sp;
    uint32_t mxcsr;
    uint16_t fcw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fcw));
    std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fcw, 2);
    f.ctx.sp = sp;
#endif
}

inline void switch_to_fiber(Worker& w, Fiber& f) {
    w.current = &f;
#if defined(SMELT_EMU_UCONTEXT)
    swapcontext(&w.scheduler.uc, &f.ctx.uc);
#else
    smelt_emu_switch(&w.scheduler.sp, f.ctx.sp);
#endif
    w.current = nullptr;
}

// Called on a fiber: hand control back to the scheduler until it resumes this fiber.
inline void yield(Worker& w, Fiber& f) {
#if defined(SMELT_EMU_UCONTEXT)
    swapcontext(&f.ctx.uc, &w.scheduler.uc);
#else
    smelt_emu_switch(&f.ctx.sp, w.scheduler.sp);
#endif
}

inline void fiber_main() {
    Worker& w = *tl_worker;
    w.kernel->body(w.kernel->ctx);
    Fiber& f = *w.current;
    f.state = State::Done;
    --w.remaining;
#if defined(SMELT_EMU_UCONTEXT)
    setcontext(&w.scheduler.uc);
#else
    void* dead;
    smelt_emu_switch(&dead, w.scheduler.sp);
#endif
    fail("a finished fiber was resumed");
}

// ---- barriers ------------------------------------------------------------------------------

// __syncthreads and its reductions: wait until every thread of the block has arrived.
inline int block_barrier(int contribution) {
    Worker& w = worker();
    Fiber& f = *w.current;
    w.barrier_count += contribution;
    if (++w.barrier_arrived == w.kernel->nthreads) {
        // Last to arrive: release everyone.
        w.barrier_result = w.barrier_count;
        w.barrier_count = 0;
        w.barrier_arrived = 0;
        for (Fiber& g : w.fibers)
            if (g.state == State::AtBarrier) g.state = State::Runnable;
        return w.barrier_result;
    }
    f.state = State::AtBarrier;
    yield(w, f);
    // barrier_result cannot change before this fiber arrives at the next barrier.
    return w.barrier_result;
}

// ---- warp rendezvous -----------------------------------------------------------------------

// Deposits `value` for this lane, waits for every lane of the warp, returns the lane's index
// in its warp; the deposits are then in warp.snapshot until the warp's next rendezvous.
inline Warp& warp_rendezvous(WarpOp op, unsigned mask, uint64_t value, unsigned* lane_out) {
    Worker& w = worker();
    Fiber& f = *w.current;
    Warp& warp = w.warps[f.linear / 32];
    const unsigned lane = f.linear % 32;
    if (mask != 0xffffffffu) {
        const unsigned present = warp.lanes == 32 ? 0xffffffffu : (1u << warp.lanes) - 1;
        if (mask != present)
            fail("kernel %s: thread %u of block %u called %s with mask 0x%08x; the emulation "
                 "supports only all lanes of the warp (0xffffffff)",
                 w.kernel->name, f.linear, w.block_linear, warp_op_name(op), mask);
    }
    if (warp.arrived == 0) {
        warp.op = op;
        warp.mask = mask;
    } else if (warp.op != op || warp.mask != mask) {
        fail("kernel %s, block %u, warp %u: lane %u called %s (mask 0x%08x) while other lanes "
             "wait in %s (mask 0x%08x): divergent warp intrinsics",
             w.kernel->name, w.block_linear, f.linear / 32, lane, warp_op_name(op), mask,
             warp_op_name(warp.op), warp.mask);
    }
    warp.deposit[lane] = value;
    *lane_out = lane;
    if (++warp.arrived == warp.lanes) {
        std::memcpy(warp.snapshot, warp.deposit, sizeof(uint64_t) * warp.lanes);
        warp.arrived = 0;
        warp.op = WarpOp::None;
        const unsigned first = f.linear / 32 * 32;
        for (unsigned i = 0; i < warp.lanes; ++i) {
            Fiber& g = w.fibers[first + i];
            if (g.state == State::AtWarp) g.state = State::Runnable;
        }
        return warp;
    }
    f.state = State::AtWarp;
    yield(w, f);
    return warp;
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move values of at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

inline void check_width(const char* what, int width) {
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
        fail("kernel %s: %s with width %d (must be a power of two <= 32)", worker().kernel->name,
             what, width);
}

// Source lane per shuffle kind (CUDA semantics), or -1 for "keep own value".
template <typename T>
inline T shuffle(WarpOp op, unsigned mask, T var, int arg, int width) {
    check_width(warp_op_name(op), width);
    unsigned lane;
    Warp& warp = warp_rendezvous(op, mask, to_bits(var), &lane);
    const int seg = int(lane) & ~(width - 1);  // first lane of this lane's width-segment
    int src;
    switch (op) {
    case WarpOp::Shfl: src = seg + (arg & (width - 1)); break;
    case WarpOp::ShflUp: src = int(lane) - arg >= seg ? int(lane) - arg : -1; break;
    case WarpOp::ShflDown: src = int(lane) + arg < seg + width ? int(lane) + arg : -1; break;
    default: {  // xor: lanes may read earlier segments, not later ones
        const int j = int(lane) ^ arg;
        src = j < seg + width ? j : -1;
    }
    }
    if (src < 0 || (op == WarpOp::ShflUp && arg < 0)) return var;
    if (unsigned(src) >= warp.lanes) return from_bits<T>(~uint64_t(0));  // absent lane: poison
    return from_bits<T>(warp.snapshot[src]);
}

inline unsigned ballot(WarpOp op, unsigned mask, int pred) {
    unsigned lane;
    Warp& warp = warp_rendezvous(op, mask, pred != 0, &lane);
    unsigned bits = 0;
    for (unsigned i = 0; i < warp.lanes; ++i)
        if (warp.snapshot[i]) bits |= 1u << i;
    return bits;
}

// ---- launches ------------------------------------------------------------------------------

// Runs one block on this worker: all its threads as fibers until every one has returned.
inline void run_block(Worker& w, unsigned linear_block) {
    const Kernel& k = *w.kernel;
    w.block_linear = linear_block;
    w.block_idx = uint3{linear_block % k.grid.x, linear_block / k.grid.x % k.grid.y,
                        linear_block / (k.grid.x * k.grid.y)};
    if (k.smem_bytes) std::memset(smem, 0xff, k.smem_bytes);
    for (Fiber& f : w.fibers) {
        f.state = State::Runnable;
        prepare(f);
    }
    for (Warp& warp : w.warps) {
        warp.arrived = 0;
        warp.op = WarpOp::None;
    }
    w.remaining = k.nthreads;
    w.barrier_arrived = 0;
    w.barrier_count = 0;
    const bool reverse = linear_block % 2 == 1;
    const unsigned n = k.nthreads;
    while (w.remaining > 0) {
        bool progressed = false;
        for (unsigned i = 0; i < n; ++i) {
            Fiber& f = w.fibers[reverse ? n - 1 - i : i];
            if (f.state != State::Runnable) continue;
            switch_to_fiber(w, f);
            progressed = true;
        }
        if (progressed || w.remaining == 0) continue;
        // Nobody can run and not everyone has returned: a deadlock. Explain it.
        unsigned at_barrier = 0, at_warp = 0, done = 0;
        int first_done = -1;
        for (const Fiber& f : w.fibers) {
            if (f.state == State::AtBarrier) ++at_barrier;
            if (f.state == State::AtWarp) ++at_warp;
            if (f.state == State::Done) {
                ++done;
                if (first_done < 0) first_done = int(f.linear);
            }
        }
        std::fprintf(stderr,
                     "smelt CUDA emulation: kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), "
                     "blockDim (%u,%u,%u): deadlock: %u threads wait at __syncthreads(), %u at "
                     "warp intrinsics, %u have returned (first: linear thread %d).\n",
                     k.name, w.block_idx.x, w.block_idx.y, w.block_idx.z, k.grid.x, k.grid.y,
                     k.grid.z, k.block.x, k.block.y, k.block.z, at_barrier, at_warp, done,
                     first_done);
        for (size_t wi = 0; wi < w.warps.size(); ++wi) {
            const Warp& warp = w.warps[wi];
            if (warp.arrived == 0) continue;
            std::fprintf(stderr, "  warp %zu: %u of %u lanes wait in %s; missing lanes:", wi,
                         warp.arrived, warp.lanes, warp_op_name(warp.op));
            for (unsigned l = 0; l < warp.lanes; ++l) {
                const Fiber& g = w.fibers[wi * 32 + l];
                if (g.state != State::AtWarp)
                    std::fprintf(stderr, " %u(%s)", l,
                                 g.state == State::Done ? "returned" : "at __syncthreads");
            }
            std::fputc('\n', stderr);
        }
        fail("every thread of a block must reach each __syncthreads(), and every lane of a warp "
             "each warp intrinsic (no early return before them, no divergent barriers)");
    }
}

// The body of one worker: takes blocks from `next` until the grid is done.
inline void work(const Kernel& k, std::atomic<unsigned>& next, unsigned nblocks) {
    Worker w;
    w.kernel = &k;
    w.stacks = take_stacks();
    w.stacks->grow(k.nthreads);
    w.fibers.resize(k.nthreads);
    for (unsigned i = 0; i < k.nthreads; ++i) {
        Fiber& f = w.fibers[i];
        f.linear = i;
        f.tid = uint3{i % k.block.x, i / k.block.x % k.block.y, i / (k.block.x * k.block.y)};
        f.stack_lo = w.stacks->stacks[i];
    }
    w.warps.resize((k.nthreads + 31) / 32);
    for (size_t i = 0; i < w.warps.size(); ++i)
        w.warps[i].lanes = std::min(32u, k.nthreads - unsigned(i) * 32);
    Worker* saved = tl_worker;
    if (saved) fail("kernel %s launched from inside a kernel", k.name);
    tl_worker = &w;
    for (;;) {
        const unsigned b = next.fetch_add(1, std::memory_order_relaxed);
        if (b >= nblocks) break;
        run_block(w, b);
    }
    tl_worker = nullptr;
    give_stacks(w.stacks);
}

inline void launch_impl(const char* name, smelt_dim3 grid, smelt_dim3 block, unsigned smem_bytes,
                        void (*body)(void*), void* ctx) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 ||
        block.z == 0)
        fail("kernel %s: launch with a zero dimension: grid (%u,%u,%u), block (%u,%u,%u)", name,
             grid.x, grid.y, grid.z, block.x, block.y, block.z);
    const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
    if (nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
        fail("kernel %s: block (%u,%u,%u) exceeds CUDA's limits (1024 threads, z <= 64)", name,
             block.x, block.y, block.z);
    if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
        fail("kernel %s: grid (%u,%u,%u) exceeds CUDA's limits", name, grid.x, grid.y, grid.z);
    if (smem_bytes > SMELT_EMU_MAX_DYNAMIC_SMEM)
        fail("kernel %s: %u bytes of dynamic shared memory requested, at most %u", name,
             smem_bytes, SMELT_EMU_MAX_DYNAMIC_SMEM);
    const uint64_t nblocks64 = uint64_t(grid.x) * grid.y * grid.z;
    if (nblocks64 > 0xffffffffu) fail("kernel %s: more than 2^32 blocks", name);
    const unsigned nblocks = unsigned(nblocks64);

    Kernel k;
    k.name = name;
    k.body = body;
    k.ctx = ctx;
    k.grid = dim3(grid.x, grid.y, grid.z);
    k.block = dim3(block.x, block.y, block.z);
    k.smem_bytes = smem_bytes;
    k.nthreads = unsigned(nthreads);

    std::atomic<unsigned> next{0};
    const unsigned nworkers = std::min(worker_count(), nblocks);
    try {
        std::vector<std::thread> helpers;
        for (unsigned i = 1; i < nworkers; ++i)
            helpers.emplace_back([&k, &next, nblocks] { work(k, next, nblocks); });
        work(k, next, nblocks);
        for (std::thread& t : helpers) t.join();
    } catch (const std::exception& e) {
        fail("kernel %s: launch failed: %s", name, e.what());
    }
}

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

inline uint3 thread_idx() { return worker().current->tid; }
inline uint3 block_idx() { return worker().block_idx; }
inline dim3 block_dim() { return worker().kernel->block; }
inline dim3 grid_dim() { return worker().kernel->grid; }

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

// Legacy typed launcher `smelt_emu_<name>(grid, block, smem, args...)` for the tests not yet
// moved to tests/kernels (removed with the last of them).
#define SMELT_EMU_UNPAREN(...) __VA_ARGS__
#define SMELT_EMU_EXPORT(name, params, args)                                                     \
    extern "C" void smelt_emu_##name(smelt_dim3 smelt_emu_grid_, smelt_dim3 smelt_emu_block_,   \
                                     unsigned int smelt_emu_smem_, SMELT_EMU_UNPAREN params) {  \
        ::smelt_emu::launch(#name, smelt_emu_grid_, smelt_emu_block_, smelt_emu_smem_,          \
                            [&]() { name args; });                                              \
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
    return smelt_emu::block_barrier(pred != 0) == int(smelt_emu::worker().kernel->nthreads);
}
inline int __syncthreads_or(int pred) { return smelt_emu::block_barrier(pred != 0) != 0; }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    unsigned lane;
    smelt_emu::warp_rendezvous(smelt_emu::WarpOp::Sync, mask, 0, &lane);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return smelt_emu::ballot(smelt_emu::WarpOp::Ballot, mask, pred);
}
inline int __any_sync(unsigned mask, int pred) {
    return smelt_emu::ballot(smelt_emu::WarpOp::Any, mask, pred) != 0;
}
inline int __all_sync(unsigned mask, int pred) {
    smelt_emu::Worker& w = smelt_emu::worker();
    const unsigned lanes = w.warps[w.current->linear / 32].lanes;
    const unsigned all = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    return smelt_emu::ballot(smelt_emu::WarpOp::All, mask, pred) == all;
}

// Shuffles for the types CUDA provides them for.
#define SMELT_EMU_SHUFFLES(T)                                                                 \
    inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {                \
        return smelt_emu::shuffle(smelt_emu::WarpOp::Shfl, mask, var, src_lane, width);       \
    }                                                                                         \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {           \
        return smelt_emu::shuffle(smelt_emu::WarpOp::ShflUp, mask, var, int(delta), width);   \
    }                                                                                         \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {         \
        return smelt_emu::shuffle(smelt_emu::WarpOp::ShflDown, mask, var, int(delta), width); \
    }                                                                                         \
    inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {           \
        return smelt_emu::shuffle(smelt_emu::WarpOp::ShflXor, mask, var, lane_mask, width);   \
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
// Atomics (device-wide, relaxed, as CUDA's)
// ---------------------------------------------------------------------------------------------

inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <typename F, typename U>
inline F smelt_emu_atomic_float_add(F* p, F v) {
    static_assert(sizeof(F) == sizeof(U), "float/int sizes");
    U* q = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;) {
        F f;
        std::memcpy(&f, &old, sizeof f);
        f += v;
        U next;
        std::memcpy(&next, &f, sizeof f);
        if (__atomic_compare_exchange_n(q, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            std::memcpy(&f, &old, sizeof f);
            return f;
        }
    }
}
inline float atomicAdd(float* p, float v) {
    return smelt_emu_atomic_float_add<float, uint32_t>(p, v);
}
inline double atomicAdd(double* p, double v) {
    return smelt_emu_atomic_float_add<double, uint64_t>(p, v);
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned* p, unsigned v) {
    return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
template <typename T, typename Op>
inline T smelt_emu_atomic_rmw(T* p, Op op) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, op(old), true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
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
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) {
    return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
inline float atomicExch(float* p, float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    b = __atomic_exchange_n(reinterpret_cast<uint32_t*>(p), b, __ATOMIC_RELAXED);
    std::memcpy(&v, &b, 4);
    return v;
}
inline int atomicCAS(int* p, int compare, int v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare,
                                    unsigned long long v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}

// ---------------------------------------------------------------------------------------------
// Math (CUDA's device math functions missing from the host's libm, and the fast intrinsics,
// here computed exactly)
// ---------------------------------------------------------------------------------------------

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __log2f(float x) { return std::log2(x); }
// Correctly rounded, never contracted into an FMA (nvcc: the same; used to pin rounding).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
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
