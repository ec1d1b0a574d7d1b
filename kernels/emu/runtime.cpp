// runtime.cpp: the emulation's runtime: fibers, the block scheduler, barriers, warp rendezvous,
// cp.async groups and launches (the model is described at the top of cuda_emu.h). Compiled
// WITHOUT the sanitizer's instrumentation; it tells the sanitizer (sanitizer.cpp) which thread
// runs and when threads synchronise.

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "runtime.h"
#include "sanitizer.h"

#if !defined(__x86_64__) && !defined(SMELT_EMU_UCONTEXT)
#define SMELT_EMU_UCONTEXT 1
#endif
#if defined(SMELT_EMU_UCONTEXT)
#include <ucontext.h>
#endif

// Dynamic shared memory: one buffer per worker OS thread, in its static TLS block (where the
// sanitizer looks for shared memory). Kernels reach it through dynamic_smem().
alignas(16) thread_local float smem[SMELT_EMU_MAX_DYNAMIC_SMEM / sizeof(float)];

// ---- context switching -----------------------------------------------------------------------

#if defined(SMELT_EMU_UCONTEXT)
struct Context {
    ucontext_t uc;
};
#else
// x86-64 System V: save the callee-saved registers on the current stack, store its stack
// pointer in *save, load `next` as the stack pointer, pop that context's registers, return
// into it. A fresh fiber's stack is prepared by prepare() to "return" into fiber_main. MXCSR
// and the x87 control word are not switched: every context of a worker runs with the same
// (work() sets them once), and loading them at each switch cost a pipeline stall per switch.
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
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
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

namespace smelt_emu {

void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("smelt CUDA emulation: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::fflush(stderr);
    std::abort();
}

namespace {

// MXCSR's flush-to-zero (outputs) and denormals-are-zero (inputs) bits: kernels run with them,
// as nvcc's --use_fast_math (-ftz=true) compiles f32 arithmetic.
constexpr uint32_t kMxcsrFtzDaz = 0x8040;

void fiber_main();

enum class State : unsigned char { Runnable, AtBarrier, AtWarp, Done };

const char* warp_op_name(WarpOp op) {
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

// A cp.async in flight: lands in `dst` when a wait covers `group`.
struct PendingCopy {
    void* dst;
    unsigned group;
    unsigned char data[16];
};

struct Fiber {
    Context ctx;
    uint3 tid;
    unsigned linear;
    State state;
    char* stack_lo;  // usable stack [stack_lo, stack_lo + stack_bytes())
    std::vector<PendingCopy> copies;
    unsigned committed;  // cp.async groups committed so far (the open group's number)
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
    san::Launch* sanitizer;  // null when the sanitizer is off
};

size_t stack_bytes() {
    static const size_t bytes = [] {
        size_t kib = 64;
        if (const char* s = std::getenv("SMELT_EMU_STACK_KIB")) {
            long v = std::strtol(s, nullptr, 10);
            if (v >= 16) kib = size_t(v);
        }
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        return (kib * 1024 + page - 1) / page * page;
    }();
    return bytes;
}

unsigned worker_count() {
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

// Fiber stacks of one worker: one mmap'd region (so the sanitizer ignores accesses to it with
// one comparison), each stack with a PROT_NONE guard page at its low end. Sets are kept in a
// process-wide pool and reused by later launches (on any OS thread).
struct StackSet {
    char* region = nullptr;
    size_t region_bytes = 0;
    unsigned count = 0;

    static size_t slot_bytes() { return stack_bytes() + size_t(sysconf(_SC_PAGESIZE)); }
    void grow(unsigned n) {
        if (n <= count) return;
        n = std::max(n, std::min(1024u, 2 * count));
        if (region) munmap(region, region_bytes);
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        region_bytes = slot_bytes() * n;
        void* p = mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail("mmap of %zu bytes of fiber stacks failed", region_bytes);
        region = static_cast<char*>(p);
        for (unsigned i = 0; i < n; ++i)  // stack overflow -> SIGSEGV, not silent corruption
            mprotect(region + i * slot_bytes(), page, PROT_NONE);
        count = n;
    }
    char* stack(unsigned i) const { return region + i * slot_bytes() + sysconf(_SC_PAGESIZE); }
};

std::mutex& pool_mutex() {
    static std::mutex m;
    return m;
}
std::vector<StackSet*>& pool() {
    static std::vector<StackSet*> p;
    return p;
}
StackSet* take_stacks() {
    std::lock_guard<std::mutex> lock(pool_mutex());
    if (pool().empty()) return new StackSet();
    StackSet* s = pool().back();
    pool().pop_back();
    return s;
}
void give_stacks(StackSet* s) {
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
    bool sanitize = false;
};

__attribute__((tls_model("initial-exec"))) thread_local Worker* tl_worker = nullptr;

Worker& worker() {
    Worker* w = tl_worker;
    if (!w) fail("a CUDA device function was called outside an emulated kernel launch");
    return *w;
}

void prepare(Fiber& f) {
    char* top = f.stack_lo + stack_bytes();
    top = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
#if defined(SMELT_EMU_UCONTEXT)
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack_lo;
    f.ctx.uc.uc_stack.ss_size = size_t(top - f.stack_lo);
    f.ctx.uc.uc_link = nullptr;
#if defined(__x86_64__)
    f.ctx.uc.uc_mcontext.fpregs->mxcsr |= kMxcsrFtzDaz;
#endif
    makecontext(&f.ctx.uc, fiber_main, 0);
#else
    // From the top: a zero fake return address for fiber_main (so that its entry sees
    // rsp % 16 == 8 as after a call), fiber_main as smelt_emu_switch's return address, and
    // six zeroed callee-saved registers.
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);
    for (int i = 0; i < 6; ++i) *--sp = 0;
    f.ctx.sp = sp;
#endif
    f.copies.clear();
    f.committed = 0;
}

void switch_to_fiber(Worker& w, Fiber& f) {
    w.current = &f;
    if (w.sanitize) san::set_thread(f.linear);
#if defined(SMELT_EMU_UCONTEXT)
    swapcontext(&w.scheduler.uc, &f.ctx.uc);
#else
    smelt_emu_switch(&w.scheduler.sp, f.ctx.sp);
#endif
    w.current = nullptr;
}

// Called on a fiber: hand control back to the scheduler until it resumes this fiber.
void yield(Worker& w, Fiber& f) {
#if defined(SMELT_EMU_UCONTEXT)
    swapcontext(&f.ctx.uc, &w.scheduler.uc);
#else
    smelt_emu_switch(&f.ctx.sp, w.scheduler.sp);
#endif
}

// Lands the calling fiber's copies of groups < `group_limit` (all: UINT_MAX), in issue order.
void land_copies(Worker& w, Fiber& f, unsigned group_limit) {
    size_t kept = 0;
    for (size_t i = 0; i < f.copies.size(); ++i) {
        PendingCopy& c = f.copies[i];
        if (c.group < group_limit) {
            std::memcpy(c.dst, c.data, 16);
            if (w.sanitize) san::cp_async_land(c.dst);
        } else {
            f.copies[kept++] = c;
        }
    }
    f.copies.resize(kept);
}

void fiber_main() {
    Worker& w = *tl_worker;
    w.kernel->body(w.kernel->ctx);
    Fiber& f = *w.current;
    land_copies(w, f, ~0u);  // copies still in flight land as the thread exits
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

// ---- warp rendezvous -----------------------------------------------------------------------

// Deposits `value` for this lane, waits for every lane of the warp, returns the lane's index
// in its warp; the deposits are then in warp.snapshot until the warp's next rendezvous.
Warp& warp_rendezvous(WarpOp op, unsigned mask, uint64_t value, unsigned* lane_out) {
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
        if (op == WarpOp::Sync && w.sanitize) san::warp_sync_done(f.linear / 32);
        return warp;
    }
    f.state = State::AtWarp;
    yield(w, f);
    return warp;
}

void check_width(WarpOp op, int width) {
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
        fail("kernel %s: %s with width %d (must be a power of two <= 32)", worker().kernel->name,
             warp_op_name(op), width);
}

// ---- launches ------------------------------------------------------------------------------

// Runs one block on this worker: all its threads as fibers until every one has returned.
void run_block(Worker& w, unsigned linear_block) {
    const Kernel& k = *w.kernel;
    w.block_linear = linear_block;
    w.block_idx = uint3{linear_block % k.grid.x, linear_block / k.grid.x % k.grid.y,
                        linear_block / (k.grid.x * k.grid.y)};
    if (w.sanitize) san::begin_block(w.block_idx);
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
void work(const Kernel& k, std::atomic<unsigned>& next, unsigned nblocks) {
    Worker w;
    w.kernel = &k;
    w.sanitize = k.sanitizer != nullptr;
    w.stacks = take_stacks();
    w.stacks->grow(k.nthreads);
    w.fibers.resize(k.nthreads);
    for (unsigned i = 0; i < k.nthreads; ++i) {
        Fiber& f = w.fibers[i];
        f.linear = i;
        f.tid = uint3{i % k.block.x, i / k.block.x % k.block.y, i / (k.block.x * k.block.y)};
        f.stack_lo = w.stacks->stack(i);
    }
    w.warps.resize((k.nthreads + 31) / 32);
    for (size_t i = 0; i < w.warps.size(); ++i)
        w.warps[i].lanes = std::min(32u, k.nthreads - unsigned(i) * 32);
    if (tl_worker) fail("kernel %s launched from inside a kernel", k.name);
    tl_worker = &w;
#if defined(__x86_64__)
    // Flush-to-zero for the whole worker (its fibers share the scheduler's MXCSR, see
    // smelt_emu_switch; with ucontext each fiber's own is set in prepare()).
    uint32_t saved_mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(saved_mxcsr));
    const uint32_t kernel_mxcsr = saved_mxcsr | kMxcsrFtzDaz;
    __asm__ volatile("ldmxcsr %0" : : "m"(kernel_mxcsr));
#endif
    if (w.sanitize)
        san::begin_worker(k.sanitizer, k.nthreads, w.stacks->region, w.stacks->region_bytes);
    for (;;) {
        const unsigned b = next.fetch_add(1, std::memory_order_relaxed);
        if (b >= nblocks) break;
        run_block(w, b);
    }
    if (w.sanitize) san::end_worker();
#if defined(__x86_64__)
    __asm__ volatile("ldmxcsr %0" : : "m"(saved_mxcsr));
#endif
    tl_worker = nullptr;
    give_stacks(w.stacks);
}

}  // namespace

// ---- the interface of runtime.h --------------------------------------------------------------

uint3 thread_idx() { return worker().current->tid; }
uint3 block_idx() { return worker().block_idx; }
dim3 block_dim() { return worker().kernel->block; }
dim3 grid_dim() { return worker().kernel->grid; }
unsigned block_threads() { return worker().kernel->nthreads; }
unsigned warp_lanes() {
    Worker& w = worker();
    return w.warps[w.current->linear / 32].lanes;
}

int block_barrier(int contribution) {
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
        if (w.sanitize) san::block_barrier_done();
        return w.barrier_result;
    }
    f.state = State::AtBarrier;
    yield(w, f);
    // barrier_result cannot change before this fiber arrives at the next barrier.
    return w.barrier_result;
}

void warp_sync(unsigned mask) {
    unsigned lane;
    warp_rendezvous(WarpOp::Sync, mask, 0, &lane);
}

uint64_t shuffle(WarpOp op, unsigned mask, uint64_t bits, int arg, int width) {
    check_width(op, width);
    unsigned lane;
    Warp& warp = warp_rendezvous(op, mask, bits, &lane);
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
    if (src < 0 || (op == WarpOp::ShflUp && arg < 0)) return bits;
    if (unsigned(src) >= warp.lanes) return ~uint64_t(0);  // absent lane: poison
    return warp.snapshot[src];
}

unsigned ballot(WarpOp op, unsigned mask, int pred) {
    unsigned lane;
    Warp& warp = warp_rendezvous(op, mask, pred != 0, &lane);
    unsigned bits = 0;
    for (unsigned i = 0; i < warp.lanes; ++i)
        if (warp.snapshot[i]) bits |= 1u << i;
    return bits;
}

void cp_async_16(void* shared_dst, const void* global_src) {
    Worker& w = worker();
    Fiber& f = *w.current;
    if (w.sanitize) san::cp_async_issue(shared_dst, global_src);
    PendingCopy c;
    c.dst = shared_dst;
    c.group = f.committed;
    std::memcpy(c.data, global_src, 16);
    std::memset(shared_dst, 0xff, 16);  // poisoned until the copy lands
    f.copies.push_back(c);
}

void cp_async_commit() { ++worker().current->committed; }

void cp_async_wait(int pending_groups_allowed) {
    Worker& w = worker();
    Fiber& f = *w.current;
    // wait_group N: every committed group but the N most recent has landed.
    const unsigned n = unsigned(std::max(0, pending_groups_allowed));
    if (f.committed > n) land_copies(w, f, f.committed - n);
}

void* dynamic_smem() { return smem; }

void atomic_access(const void* p, size_t bytes) {
    if (worker().sanitize) san::atomic_access(p, bytes);
}

void launch_impl(const char* name, smelt_dim3 grid, smelt_dim3 block, unsigned smem_bytes,
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
    k.sanitizer = san::begin_launch(name, k.block, smem_bytes);

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
    san::end_launch(k.sanitizer);
}

}  // namespace smelt_emu
