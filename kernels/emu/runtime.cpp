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
#include <limits>
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

enum class State : unsigned char { Runnable, AtBarrier, AtWarp, AtWarpgroup, Done };

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
    bool spinning;       // yielded from an mbarrier try_wait that failed
};

struct Warp {
    unsigned lanes;      // lanes present (32, or fewer in a partial last warp)
    unsigned arrived;    // lanes waiting at the current rendezvous
    WarpOp op;           // the intrinsic of the current rendezvous
    unsigned mask;       // its mask
    uint64_t deposit[32];
    uint64_t snapshot[32];  // the deposits of the last completed rendezvous
};

// ---- Hopper state of a block (see "Hopper" at the top of cuda_emu.h) ----

// At most this many mbarriers per block (the sanitizer gives each a pseudo-thread).
constexpr unsigned kMaxMbarriers = SMELT_EMU_MAX_MBARRIERS;

struct MBarrier {
    unsigned addr;       // shared-window address of its 8 bytes
    unsigned expected;   // arrivals per phase
    unsigned pending;    // arrivals still missing in the current phase
    int64_t tx;          // transaction bytes expected minus landed, current phase
    unsigned completed;  // phases completed
    unsigned initialiser;  // the thread that initialised it
    bool fenced;         // its init made visible to the async proxy (mbar_fence_init)
};

// A bulk tensor copy in flight: its data, read from global memory at the issue, lands in its
// 16-byte chunks of shared memory when a thread waits on its mbarrier.
struct BulkCopy {
    unsigned bar;                     // index in Worker::mbarriers
    unsigned bytes;                   // the box's bytes (complete_tx)
    unsigned swizzle;                 // CUtensorMapSwizzle: 0 none, 1 32B, 2 64B, 3 128B
    std::vector<unsigned> chunks;     // shared-window address of each 16-byte chunk
    std::vector<unsigned char> data;  // 16 bytes per chunk
};

// One wgmma.mma_async in flight: every thread's accumulators as they will be after it, and the
// shared-memory operand bytes it read at the issue (compared again at the wait).
struct WgmmaOp {
    unsigned group;
    unsigned n;              // accumulators per thread
    float* d[128];           // each thread's accumulator array
    std::vector<float> result;             // 128 * n
    std::vector<const void*> chunks;       // operand chunks (16 bytes each in smem), A then B
    std::vector<unsigned char> snapshot;   // their bytes at the issue
};

enum class WgOp : unsigned char { None, Fence, Mma, Commit, Wait, SetMaxNReg };

struct Warpgroup {
    unsigned arrived = 0;
    WgOp op = WgOp::None;
    float* d[128];
    uint64_t desc_a = 0, desc_b = 0;
    int n = 0, scale_d = 0, trans_a = 0, trans_b = 0, arg = 0;
    unsigned committed = 0;  // wgmma groups committed
    bool fenced = false;     // a wgmma.fence since the last wait
    std::vector<WgmmaOp> pending;
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
    uint64_t events = 0;            // synchronisation progress (deadlock detection)
    std::vector<MBarrier> mbarriers;
    std::vector<BulkCopy> bulk_copies;
    std::vector<Warpgroup> warpgroups;
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
    f.spinning = false;
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
    ++w.events;
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
        ++w.events;
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

// The byte of dynamic shared memory at shared-window address `addr` (unchecked; see
// window_pointer).
unsigned char* window_byte(unsigned addr) {
    return reinterpret_cast<unsigned char*>(smem) + (addr - kSharedWindowBase);
}

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
    w.mbarriers.clear();  // (bulk copies are cleared at the end of every block)
    for (Warpgroup& g : w.warpgroups) g = Warpgroup();
    const bool reverse = linear_block % 2 == 1;
    const unsigned n = k.nthreads;
    while (w.remaining > 0) {
        bool progressed = false;
        const uint64_t events = w.events;
        for (unsigned i = 0; i < n; ++i) {
            Fiber& f = w.fibers[reverse ? n - 1 - i : i];
            if (f.state != State::Runnable) continue;
            switch_to_fiber(w, f);
            // A thread that only failed an mbarrier try_wait made no progress.
            if (f.state != State::Runnable || !f.spinning) progressed = true;
        }
        if (progressed || w.events != events || w.remaining == 0) continue;
        unsigned spinning = 0;
        for (const Fiber& f : w.fibers) spinning += f.state == State::Runnable && f.spinning;
        if (spinning)
            std::fprintf(stderr,
                         "smelt CUDA emulation: kernel %s, block (%u,%u,%u): %u threads wait on "
                         "mbarrier phases that no thread or bulk copy can complete.\n",
                         k.name, w.block_idx.x, w.block_idx.y, w.block_idx.z, spinning);
        // Nobody can run and not everyone has returned: a deadlock. Explain it.
        unsigned at_barrier = 0, at_warp = 0, done = 0;
        int first_done = -1;
        for (const Fiber& f : w.fibers) {
            if (f.state == State::AtBarrier) ++at_barrier;
            if (f.state == State::AtWarp || f.state == State::AtWarpgroup) ++at_warp;
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
    // Bulk copies nobody waited for never land; their destinations stop being pending.
    if (w.sanitize)
        for (const BulkCopy& copy : w.bulk_copies)
            for (unsigned addr : copy.chunks) san::bulk_discard(window_byte(addr));
    w.bulk_copies.clear();
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
    w.warpgroups.resize((k.nthreads + 127) / 128);
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
        ++w.events;
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

// ---- Hopper: shared window, mbarriers, bulk tensor copies, wgmma --------------------------

namespace {

// window_byte(addr), after checking that `bytes` bytes there lie in the launch's dynamic shared
// memory.
unsigned char* window_pointer(const Worker& w, unsigned addr, unsigned bytes, const char* what) {
    if (addr < kSharedWindowBase ||
        addr - kSharedWindowBase + uint64_t(bytes) > w.kernel->smem_bytes)
        fail("kernel %s: %s at shared address 0x%x (%u bytes) is outside the launch's %u bytes "
             "of dynamic shared memory (window 0x%x..)",
             w.kernel->name, what, addr, bytes, w.kernel->smem_bytes, kSharedWindowBase);
    return window_byte(addr);
}

// The swizzle (CUtensorMapSwizzle numbering) of a wgmma matrix descriptor's layout type
// (bits 62..63: 0 none, 1 128-byte, 2 64-byte, 3 32-byte).
unsigned descriptor_swizzle(uint64_t desc) {
    const unsigned layout = unsigned(desc >> 62);
    return layout == 0 ? 0 : 4 - layout;
}

// The 16-byte chunk a swizzle mode moves the byte at shared-window address `a` to: bits 4..
// of the address XORed with bits 7.. (CUtensorMapSwizzle 1: one bit, 32-byte span; 2: two,
// 64 bytes; 3: three, 128 bytes), as TMA and wgmma both apply it to addresses.
unsigned swizzle_address(unsigned a, unsigned mode) {
    if (mode == 0) return a;
    return a ^ (((a >> 7) & ((1u << mode) - 1)) << 4);
}

unsigned mbar_index(Worker& w, void* bar, const char* what) {
    const unsigned addr = shared_window_address(bar);
    for (unsigned i = 0; i < w.mbarriers.size(); ++i)
        if (w.mbarriers[i].addr == addr) return i;
    fail("kernel %s, block %u, thread %u: %s on shared address 0x%x, which no mbarrier.init of "
         "this block initialised",
         w.kernel->name, w.block_linear, w.current->linear, what, addr);
}

void mbar_maybe_complete(Worker& w, unsigned i) {
    MBarrier& m = w.mbarriers[i];
    if (m.pending != 0 || m.tx != 0) return;
    ++m.completed;
    m.pending = m.expected;
    if (w.sanitize) san::mbar_complete(i);
    ++w.events;
}

// Lands every bulk copy in flight on mbarrier `i` (the "copy engine" works when a thread waits).
void land_bulk_copies(Worker& w, unsigned i) {
    size_t kept = 0;
    bool landed = false;
    for (size_t c = 0; c < w.bulk_copies.size(); ++c) {
        BulkCopy& copy = w.bulk_copies[c];
        if (copy.bar != i) {
            if (kept != c) w.bulk_copies[kept] = std::move(copy);
            ++kept;
            continue;
        }
        if (!landed && w.sanitize) san::bulk_land_begin();
        landed = true;
        for (size_t k = 0; k < copy.chunks.size(); ++k) {
            void* dst = window_pointer(w, copy.chunks[k], 16, "bulk copy destination");
            std::memcpy(dst, &copy.data[16 * k], 16);
            if (w.sanitize) san::bulk_land(dst, i, copy.swizzle);
        }
        w.mbarriers[i].tx -= copy.bytes;
    }
    w.bulk_copies.resize(kept);
    if (landed) {
        if (w.sanitize) san::bulk_land_end(i);
        ++w.events;
        mbar_maybe_complete(w, i);
    }
}

// The emulation's tensor map (src/backend/device/emu.rs writes it; 128 bytes like CUtensorMap).
struct EmuTensorMap {
    uint32_t magic;  // kTensorMapMagic
    uint32_t rank;   // 1..5
    uint64_t global;
    uint64_t dims[5];     // elements, innermost first
    uint64_t strides[4];  // bytes between consecutive indices of dims 1..rank-1
    uint32_t box[5];      // elements
    uint32_t elem_bytes;
    uint32_t swizzle;     // CUtensorMapSwizzle
};
static_assert(sizeof(EmuTensorMap) <= 128, "tensor map size");
constexpr uint32_t kTensorMapMagic = 0x50414d54;  // "TMAP"

// Rendezvous of the calling thread's warpgroup (128 consecutive threads) at `op`: every thread
// deposits with `deposit`, the last to arrive runs `act` for all; returns after it.
template <typename Deposit, typename Act>
void warpgroup_rendezvous(WgOp op, const char* name, Deposit deposit, Act act) {
    Worker& w = worker();
    Fiber& f = *w.current;
    if (w.kernel->nthreads % 128 != 0)
        fail("kernel %s: %s in a block of %u threads (warpgroups need a multiple of 128)",
             w.kernel->name, name, w.kernel->nthreads);
    Warpgroup& g = w.warpgroups[f.linear / 128];
    if (g.arrived == 0) {
        g.op = op;
    } else if (g.op != op) {
        fail("kernel %s, block %u, warpgroup %u: thread %u called %s while other threads of the "
             "warpgroup wait in another wgmma/setmaxnreg instruction: divergent warpgroup",
             w.kernel->name, w.block_linear, f.linear / 128, f.linear, name);
    }
    deposit(g, f.linear % 128, g.arrived == 0);
    if (++g.arrived == 128) {
        act(g, f.linear / 128 * 128);
        g.arrived = 0;
        g.op = WgOp::None;
        for (unsigned i = 0; i < 128; ++i) {
            Fiber& h = w.fibers[f.linear / 128 * 128 + i];
            if (h.state == State::AtWarpgroup) h.state = State::Runnable;
        }
        ++w.events;
        return;
    }
    f.state = State::AtWarpgroup;
    yield(w, f);
}

// Element (mn, k) of a bf16 operand of wgmma (mn < 64 for A or N for B, k < 16): its
// shared-window address under the descriptor, in the canonical layouts of the PTX ISA
// ("Matrix Descriptor", "Shared Memory Matrix Layout"; CUTLASS's make_gmma_desc spells the same
// ones). Units: 16-byte chunks of 8 elements; W = the swizzle span in chunks (8, 4, 2 for
// 128/64/32 bytes), the swizzle applied to the final address.
// * K-major (8 consecutive k in a chunk): no swizzle: 8x8 core matrices of 128 contiguous
//   bytes, rows 16 bytes apart, `sbo` apart along M/N, `lbo` apart along K; swizzled: rows
//   16W bytes apart in groups of 8 that are `sbo` apart, the two k chunks adjacent (`lbo`
//   unused: the instruction's 32 bytes of K lie within one span).
// * MN-major (`trans`: 8 consecutive mn in a chunk): no swizzle: chunks of mn `sbo` apart, k
//   rows 16 bytes apart in groups of 8 that are `lbo` apart; swizzled: W chunks of mn
//   contiguous, then `lbo` apart; k rows 16W bytes apart in groups of 8 that are `sbo` apart.
unsigned operand_address(uint64_t desc, unsigned mn, unsigned k, bool trans) {
    const unsigned start = unsigned(desc & 0x3fff) << 4;
    const unsigned lbo = unsigned((desc >> 16) & 0x3fff) << 4;
    const unsigned sbo = unsigned((desc >> 32) & 0x3fff) << 4;
    const unsigned mode = descriptor_swizzle(desc);
    if (mode == 0) {
        if (!trans) return start + (mn / 8) * sbo + (k / 8) * lbo + (mn % 8) * 16 + (k % 8) * 2;
        return start + (mn / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (mn % 8) * 2;
    }
    const unsigned span = 16u << mode;  // bytes
    const unsigned w = 1u << mode;      // chunks
    if (!trans)
        return swizzle_address(start + (mn / 8) * sbo + (mn % 8) * span + k * 2, mode);
    const unsigned chunk = mn / 8;
    return swizzle_address(start + (chunk / w) * lbo + (chunk % w) * 16 + (mn % 8) * 2 +
                               (k / 8) * sbo + (k % 8) * span,
                           mode);
}

void check_descriptor(const Worker& w, uint64_t desc, const char* which) {
    if ((desc >> 49) & 7)
        fail("kernel %s: wgmma %s descriptor with a matrix base offset (%u): not emulated; "
             "align the operand to its swizzle pattern instead",
             w.kernel->name, which, unsigned((desc >> 49) & 7));
}

// Reads the 16-byte chunks of an operand (rows x 16 bf16, K-major or MN-major with `trans`)
// into `op`'s snapshot, and the operand as floats, out[row * 16 + k].
void read_operand(Worker& w, WgmmaOp& op, uint64_t desc, unsigned rows, bool trans,
                  std::vector<float>& out) {
    out.assign(size_t(rows) * 16, 0.0f);
    // A chunk holds 8 consecutive k of one row (K-major) or 8 consecutive rows of one k.
    const unsigned chunks = rows * 2;
    for (unsigned c = 0; c < chunks; ++c) {
        const unsigned row0 = trans ? (c % (rows / 8)) * 8 : c / 2;
        const unsigned k0 = trans ? c / (rows / 8) : (c % 2) * 8;
        const unsigned char* p =
            window_pointer(w, operand_address(desc, row0, k0, trans), 16, "wgmma operand");
        op.chunks.push_back(p);
        op.snapshot.insert(op.snapshot.end(), p, p + 16);
        for (unsigned e = 0; e < 8; ++e) {
            uint16_t bits;
            std::memcpy(&bits, p + 2 * e, 2);
            const uint32_t f32 = uint32_t(bits) << 16;
            const unsigned row = trans ? row0 + e : row0, k = trans ? k0 : k0 + e;
            std::memcpy(&out[size_t(row) * 16 + k], &f32, 4);
        }
    }
}

// Lands the warpgroup's wgmma ops of groups < `group_limit`: accumulators written, operands
// compared with their bytes at the issue.
void land_wgmma(Worker& w, Warpgroup& g, unsigned group_limit) {
    size_t kept = 0;
    for (size_t i = 0; i < g.pending.size(); ++i) {
        WgmmaOp& op = g.pending[i];
        if (op.group >= group_limit) {
            if (kept != i) g.pending[kept] = std::move(op);
            ++kept;
            continue;
        }
        for (unsigned t = 0; t < 128; ++t)
            std::memcpy(op.d[t], &op.result[size_t(t) * op.n], sizeof(float) * op.n);
        if (w.sanitize)
            for (size_t c = 0; c < op.chunks.size(); ++c)
                if (std::memcmp(op.chunks[c], &op.snapshot[16 * c], 16) != 0) {
                    san::wgmma_operand_changed(op.chunks[c]);
                    break;
                }
    }
    g.pending.resize(kept);
}

}  // namespace

unsigned shared_window_address(const void* p) {
    const Worker& w = worker();
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(smem);
    if (off >= SMELT_EMU_MAX_DYNAMIC_SMEM)
        fail("kernel %s: the shared-window address of %p was asked; the emulation maps only "
             "dynamic shared memory (smem) into the window",
             w.kernel->name, p);
    return unsigned(off) + kSharedWindowBase;
}

void mbar_init(void* bar, unsigned expected) {
    Worker& w = worker();
    const unsigned addr = shared_window_address(bar);
    window_pointer(w, addr, 8, "mbarrier");
    if (addr % 8)
        fail("kernel %s: mbarrier at shared address 0x%x is not 8-byte aligned", w.kernel->name,
             addr);
    if (expected == 0 || expected >= (1u << 20))
        fail("kernel %s: mbarrier.init with count %u (1 .. 2^20-1)", w.kernel->name, expected);
    unsigned i = 0;
    while (i < w.mbarriers.size() && w.mbarriers[i].addr != addr) ++i;
    if (i == w.mbarriers.size()) {
        if (i == kMaxMbarriers)
            fail("kernel %s: more than %u mbarriers in a block", w.kernel->name, kMaxMbarriers);
        w.mbarriers.push_back(MBarrier{});
    }
    w.mbarriers[i] = MBarrier{addr, expected, expected, 0, 0, w.current->linear, false};
    if (w.sanitize) san::mbar_init(i);
    ++w.events;
}

void mbar_fence_init() {
    Worker& w = worker();
    for (MBarrier& m : w.mbarriers)
        if (m.initialiser == w.current->linear) m.fenced = true;
    fence_proxy_async();
}

void mbar_arrive(void* bar, unsigned tx_bytes) {
    Worker& w = worker();
    const unsigned i = mbar_index(w, bar, "mbarrier.arrive");
    MBarrier& m = w.mbarriers[i];
    m.tx += tx_bytes;
    if (w.sanitize) san::mbar_arrive(i);
    --m.pending;
    ++w.events;
    mbar_maybe_complete(w, i);
}

bool mbar_try_wait(void* bar, unsigned parity) {
    Worker& w = worker();
    Fiber& f = *w.current;
    const unsigned i = mbar_index(w, bar, "mbarrier.try_wait");
    // True when the phase before the current one has this parity (phase -1, before the first,
    // counts as complete with parity 1).
    auto done = [&] { return (w.mbarriers[i].completed & 1u) != (parity & 1u); };
    if (!done()) land_bulk_copies(w, i);
    if (done()) {
        if (w.sanitize && w.mbarriers[i].completed > 0) san::mbar_acquire(i);
        f.spinning = false;
        return true;
    }
    f.spinning = true;
    yield(w, f);
    return false;
}

void bulk_tensor_load(void* dst, const void* tensor_map, const int* coords, int rank, void* bar) {
    Worker& w = worker();
    EmuTensorMap tm;
    std::memcpy(&tm, tensor_map, sizeof tm);
    if (tm.magic != kTensorMapMagic)
        fail("kernel %s: cp.async.bulk.tensor with a tensor map the emulation did not encode",
             w.kernel->name);
    if (int(tm.rank) != rank)
        fail("kernel %s: a %dd bulk tensor copy with a rank-%u tensor map", w.kernel->name, rank,
             tm.rank);
    BulkCopy copy;
    copy.bar = mbar_index(w, bar, "cp.async.bulk.tensor's mbarrier");
    if (!w.mbarriers[copy.bar].fenced)
        fail("kernel %s, block %u: a bulk tensor copy completes on the mbarrier at shared address "
             "0x%x, whose mbarrier.init no fence.mbarrier_init / fence.proxy.async made visible "
             "to the async proxy (call mbar_fence_init() after initialising)",
             w.kernel->name, w.block_linear, w.mbarriers[copy.bar].addr);
    copy.swizzle = tm.swizzle;
    const unsigned base = shared_window_address(dst);
    if (base % (tm.swizzle ? 1024u : 128u) != 0)
        fail("kernel %s: bulk tensor copy to shared address 0x%x: the destination must be "
             "%u-byte aligned%s",
             w.kernel->name, base, tm.swizzle ? 1024u : 128u,
             tm.swizzle ? " (a swizzled box starts its swizzle pattern at a 1024-byte boundary)"
                        : "");
    const unsigned inner_bytes = tm.box[0] * tm.elem_bytes;
    size_t rows = 1;
    for (unsigned d = 1; d < tm.rank; ++d) rows *= tm.box[d];
    copy.bytes = unsigned(rows * inner_bytes);
    copy.data.resize(copy.bytes);
    unsigned char* out = copy.data.data();
    for (size_t r = 0; r < rows; ++r) {
        // The box row's coordinates in dims 1.., and whether it lies inside the tensor.
        size_t rest = r;
        bool inside = true;
        uint64_t offset = 0;
        for (unsigned d = 1; d < tm.rank; ++d) {
            const int64_t c = int64_t(coords[d]) + int64_t(rest % tm.box[d]);
            rest /= tm.box[d];
            if (c < 0 || uint64_t(c) >= tm.dims[d]) inside = false;
            else offset += uint64_t(c) * tm.strides[d - 1];
        }
        for (unsigned e = 0; e < tm.box[0]; ++e) {
            const int64_t c = int64_t(coords[0]) + e;
            unsigned char* o = out + r * inner_bytes + size_t(e) * tm.elem_bytes;
            if (!inside || c < 0 || uint64_t(c) >= tm.dims[0]) {
                std::memset(o, 0, tm.elem_bytes);  // out of bounds: filled with zeros
                continue;
            }
            const void* src =
                reinterpret_cast<const void*>(tm.global + offset + uint64_t(c) * tm.elem_bytes);
            if (w.sanitize) san::bulk_read(src, tm.elem_bytes);
            std::memcpy(o, src, tm.elem_bytes);
        }
    }
    for (unsigned k = 0; k < copy.bytes / 16; ++k) {
        const unsigned addr = swizzle_address(base + 16 * k, tm.swizzle);
        void* p = window_pointer(w, addr, 16, "bulk copy destination");
        copy.chunks.push_back(addr);
        if (w.sanitize) san::bulk_issue(p, copy.bar);
        std::memset(p, 0xff, 16);  // poisoned until it lands
    }
    w.bulk_copies.push_back(std::move(copy));
}

void fence_proxy_async() {
    if (worker().sanitize) san::fence_proxy_async();
}

void wgmma_fence() {
    warpgroup_rendezvous(
        WgOp::Fence, "wgmma.fence", [](Warpgroup&, unsigned, bool) {},
        [](Warpgroup& g, unsigned) { g.fenced = true; });
}

void wgmma_mma(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d, int trans_a,
               int trans_b) {
    Worker& w = worker();
    warpgroup_rendezvous(
        WgOp::Mma, "wgmma.mma_async",
        [&](Warpgroup& g, unsigned lane, bool first) {
            if (first) {
                g.n = n;
                g.desc_a = desc_a;
                g.desc_b = desc_b;
                g.scale_d = scale_d;
                g.trans_a = trans_a;
                g.trans_b = trans_b;
            } else if (g.n != n || g.desc_a != desc_a || g.desc_b != desc_b ||
                       g.scale_d != scale_d || g.trans_a != trans_a || g.trans_b != trans_b) {
                fail("kernel %s: the threads of a warpgroup gave wgmma.mma_async different "
                     "shapes, descriptors or scale-d (they must be uniform)",
                     w.kernel->name);
            }
            g.d[lane] = d;
        },
        [&](Warpgroup& g, unsigned first_thread) {
            if (!g.fenced)
                fail("kernel %s, block %u: wgmma.mma_async without a wgmma.fence since the "
                     "warpgroup's last wgmma.wait_group (the emulation requires the fence before "
                     "the first wgmma of each batch)",
                     w.kernel->name, w.block_linear);
            if (g.n < 8 || g.n > 256 || g.n % 8)
                fail("kernel %s: wgmma m64n%dk16: N must be a multiple of 8 in 8..256",
                     w.kernel->name, g.n);
            check_descriptor(w, g.desc_a, "A");
            check_descriptor(w, g.desc_b, "B");
            WgmmaOp op;
            op.group = g.committed;
            op.n = unsigned(g.n) / 2;
            std::vector<float> a, b;
            read_operand(w, op, g.desc_a, 64, g.trans_a != 0, a);
            read_operand(w, op, g.desc_b, unsigned(g.n), g.trans_b != 0, b);
            if (w.sanitize) {  // A's 128 chunks, then B's
                san::wgmma_read(op.chunks.data(), 128, descriptor_swizzle(g.desc_a), first_thread);
                san::wgmma_read(op.chunks.data() + 128, op.chunks.size() - 128,
                                descriptor_swizzle(g.desc_b), first_thread);
            }
            op.result.resize(size_t(128) * op.n);
            for (unsigned t = 0; t < 128; ++t) {
                op.d[t] = g.d[t];
                // The accumulators this op adds to: the latest in-flight op's on the same
                // registers, or the registers themselves.
                const float* base = g.d[t];
                for (const WgmmaOp& prev : g.pending)
                    if (prev.d[t] == g.d[t]) base = &prev.result[size_t(t) * prev.n];
                const unsigned warp = t / 32, lane = t % 32, grp = lane / 4, tid = lane % 4;
                for (unsigned i = 0; i < op.n; ++i) {
                    const unsigned row = warp * 16 + grp + 8 * ((i >> 1) & 1);
                    const unsigned col = (i >> 2) * 8 + 2 * tid + (i & 1);
                    float acc = g.scale_d ? base[i] : 0.0f;
                    for (unsigned k = 0; k < 16; ++k) acc += a[row * 16 + k] * b[col * 16 + k];
                    op.result[size_t(t) * op.n + i] = acc;
                }
            }
            // The registers are undefined until the wait: poison them.
            for (unsigned t = 0; t < 128; ++t)
                for (unsigned i = 0; i < op.n; ++i)
                    g.d[t][i] = std::numeric_limits<float>::quiet_NaN();
            g.pending.push_back(std::move(op));
        });
}

void wgmma_commit() {
    warpgroup_rendezvous(
        WgOp::Commit, "wgmma.commit_group", [](Warpgroup&, unsigned, bool) {},
        [](Warpgroup& g, unsigned) { ++g.committed; });
}

void wgmma_wait(int pending_groups_allowed) {
    Worker& w = worker();
    warpgroup_rendezvous(
        WgOp::Wait, "wgmma.wait_group", [](Warpgroup&, unsigned, bool) {},
        [&](Warpgroup& g, unsigned) {
            const unsigned n = unsigned(std::max(0, pending_groups_allowed));
            if (g.committed > n) land_wgmma(w, g, g.committed - n);
            g.fenced = false;
        });
}

void setmaxnreg(unsigned regs) {
    Worker& w = worker();
    if (regs < 24 || regs > 256 || regs % 8)
        fail("kernel %s: setmaxnreg %u (24..256, a multiple of 8)", w.kernel->name, regs);
    warpgroup_rendezvous(
        WgOp::SetMaxNReg, "setmaxnreg",
        [&](Warpgroup& g, unsigned, bool first) {
            if (first) g.arg = int(regs);
            else if (g.arg != int(regs))
                fail("kernel %s: setmaxnreg with different counts in one warpgroup",
                     w.kernel->name);
        },
        [](Warpgroup&, unsigned) {});
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
