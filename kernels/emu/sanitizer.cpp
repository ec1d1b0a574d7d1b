// sanitizer.cpp: the emulation's sanitizer (racecheck, initcheck, memcheck, late cp.async), as
// described at the top of cuda_emu.h. Compiled WITHOUT instrumentation; the kernels' unit is
// compiled with g++'s -fsanitize=kernel-address in "callbacks only" mode, so every load and
// store a kernel makes calls one of the __asan_{load,store}*_noabort functions defined here.
// No ASan runtime is linked: these callbacks are the whole sanitizer.

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "sanitizer.h"

// Dynamic shared memory (runtime.cpp).
extern thread_local float smem[];

namespace smelt_emu {
namespace san {
namespace {

enum class Mode { Off, Record, Abort };

Mode mode() {
    static const Mode m = [] {
        const char* s = std::getenv("SMELT_EMU_SANITIZE");
        if (s && std::strcmp(s, "0") == 0) return Mode::Off;
        if (s && std::strcmp(s, "abort") == 0) return Mode::Abort;
        return Mode::Record;
    }();
    return m;
}

// Reports kept per launch (all are counted).
constexpr size_t kKeptReports = 8;
constexpr uint16_t kNoThread = 0xffff;
constexpr uint8_t kManyWarps = 0xff;
constexpr uint8_t kPending = 1;
// A bulk tensor copy wrote the byte (writer: its mbarrier's pseudo-thread), with the swizzle
// mode in bits 2..3 (CUtensorMapSwizzle numbering).
constexpr uint8_t kBulk = 2;
constexpr unsigned kSwizzleShift = 2;

// ---- global memory: the EmuRuntime allocations -------------------------------------------------

// One allocation, with `guard` bytes on each side that belong to it (an access there is out of
// bounds of this allocation) and one bit per byte saying whether it was ever written.
struct Allocation {
    uintptr_t base;
    size_t bytes;
    size_t guard;
    std::unique_ptr<std::atomic<uint64_t>[]> written;  // null: every byte written (zeroed)
    uintptr_t lo() const { return base - guard; }
    uintptr_t span() const { return bytes + 2 * guard; }
};
using Registry = std::vector<std::shared_ptr<Allocation>>;  // sorted by base

std::mutex& registry_mutex() {
    static std::mutex m;
    return m;
}
// Replaced (never modified) when an allocation comes or goes, so a launch keeps the snapshot it
// started with while other threads allocate.
std::shared_ptr<const Registry>& registry() {
    static std::shared_ptr<const Registry> r = std::make_shared<const Registry>();
    return r;
}

const Allocation* find(const Registry& r, uintptr_t a) {
    auto it = std::upper_bound(r.begin(), r.end(), a, [](uintptr_t x, const auto& al) {
        return x < al->lo();
    });
    if (it == r.begin()) return nullptr;
    const Allocation* al = (--it)->get();
    return a - al->lo() < al->span() ? al : nullptr;
}

// The first byte of [first, first + n) the written map says was never written, or -1.
int64_t first_unwritten(const Allocation& al, size_t first, size_t n) {
    for (size_t i = first; i < first + n;) {
        const size_t word = i / 64, bit = i % 64, take = std::min<size_t>(64 - bit, first + n - i);
        const uint64_t mask = (take == 64 ? ~uint64_t(0) : ((uint64_t(1) << take) - 1)) << bit;
        const uint64_t have = al.written[word].load(std::memory_order_relaxed);
        if ((have & mask) != mask) return int64_t(word * 64 + __builtin_ctzll(~have & mask));
        i += take;
    }
    return -1;
}

void mark_written(const Allocation& al, size_t first, size_t n) {
    for (size_t i = first; i < first + n;) {
        const size_t word = i / 64, bit = i % 64, take = std::min<size_t>(64 - bit, first + n - i);
        const uint64_t mask = (take == 64 ? ~uint64_t(0) : ((uint64_t(1) << take) - 1)) << bit;
        std::atomic<uint64_t>& w = al.written[word];
        if ((w.load(std::memory_order_relaxed) & mask) != mask)
            w.fetch_or(mask, std::memory_order_relaxed);
        i += take;
    }
}

// ---- shared memory: shadow state per byte --------------------------------------------------------

// Times are values of the worker's clock, which ticks at every block start, __syncthreads and
// __syncwarp. An access at time t by thread A is ordered before the current access by thread B
// iff A == B, or a block barrier completed after t, or A and B share a warp and that warp's
// __syncwarp completed after t.
struct ShadowByte {
    uint32_t write_time;   // of the last write; < block_start: not written by this block
    uint32_t read_time;    // of the latest read since the last write
    uint16_t writer;       // linear thread id of the last write (or of a pending cp.async)
    uint16_t reader;       // the latest reader
    uint16_t reader2;      // another reader not ordered before `reader`'s read, or kNoThread
    uint8_t reader_warp;   // the warp of every reader not ordered before the latest, or kManyWarps
    uint8_t flags;         // kPending: a cp.async into this byte has not landed
};
static_assert(sizeof(ShadowByte) == 16, "shadow entry size");

// The shadow of one worker's static TLS block (which holds every __shared__ variable and the
// dynamic `smem` buffer), reused across launches: its clock only grows, so entries left by
// earlier blocks are older than any block start.
struct Shadow {
    ShadowByte* bytes = nullptr;
    size_t size = 0;
    uint32_t clock = 0;
};

std::mutex& shadow_pool_mutex() {
    static std::mutex m;
    return m;
}
std::vector<Shadow*>& shadow_pool() {
    static std::vector<Shadow*> p;
    return p;
}

Shadow* take_shadow(size_t size) {
    Shadow* s = nullptr;
    {
        std::lock_guard<std::mutex> lock(shadow_pool_mutex());
        if (!shadow_pool().empty()) {
            s = shadow_pool().back();
            shadow_pool().pop_back();
        }
    }
    if (!s) s = new Shadow();
    if (s->size != size) {
        if (s->bytes) munmap(s->bytes, s->size * sizeof(ShadowByte));
        void* p = mmap(nullptr, size * sizeof(ShadowByte), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail("mmap of %zu bytes of sanitizer shadow failed", size * 16);
        s->bytes = static_cast<ShadowByte*>(p);
        s->size = size;
        s->clock = 0;
    }
    return s;
}

void give_shadow(Shadow* s) {
    std::lock_guard<std::mutex> lock(shadow_pool_mutex());
    shadow_pool().push_back(s);
}

// This thread's static TLS block: the module whose TLS holds `smem` (the executable).
struct TlsBlock {
    uintptr_t lo = 0;
    size_t bytes = 0;
};
TlsBlock tls_block() {
    TlsBlock found;
    struct Query {
        uintptr_t probe;
        TlsBlock* out;
    } q{reinterpret_cast<uintptr_t>(&smem[0]), &found};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) -> int {
            Query& q = *static_cast<Query*>(data);
            if (!info->dlpi_tls_data) return 0;
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const ElfW(Phdr)& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_TLS) continue;
                const uintptr_t lo = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
                if (q.probe - lo < ph.p_memsz) {
                    *q.out = TlsBlock{lo, size_t(ph.p_memsz)};
                    return 1;
                }
            }
            return 0;
        },
        &q);
    if (!found.bytes) fail("sanitizer: cannot find the TLS block holding shared memory");
    return found;
}

}  // namespace

// ---- launches and workers --------------------------------------------------------------------

struct Launch {
    char kernel[64];
    dim3 block;
    unsigned smem_bytes;
    std::shared_ptr<const Registry> allocations;
    uintptr_t global_lo = 0, global_span = 0;  // every allocation lies in [lo, lo + span)
    std::mutex mutex;
    std::vector<smelt_emu_report> kept;
    std::atomic<uint64_t> total{0};
};

namespace {

// One worker OS thread's view while it runs blocks of a launch.
struct Tracker {
    Launch* launch;
    uintptr_t tls_lo;
    size_t tls_bytes;
    uintptr_t smem_lo;
    unsigned smem_bytes;
    uintptr_t stacks_lo;
    size_t stacks_bytes;
    Shadow* shadow;
    const Allocation* cached = nullptr;  // the allocation of the last global access
    uint32_t clock;
    uint32_t block_start;
    uint32_t last_barrier;
    uint32_t warp_sync[32];
    unsigned thread;  // linear id of the running fiber
    uint3 block_idx;
    unsigned nthreads;  // threads per block
    // Happens-before through mbarriers, set up by the block's first mbarrier.init: vc[a*dim+b]
    // = every access of thread b (or pseudo-thread) at a time below it is ordered before thread
    // a's accesses from now on. Threads are 0..nthreads-1; pseudo-thread nthreads+i is the bulk
    // copies completing on mbarrier i.
    unsigned vc_dim = 0;  // 0: no mbarrier in this block
    std::vector<uint32_t> vc;
    std::vector<uint32_t> phase_vc;  // per mbarrier: released into its current phase
    std::vector<uint32_t> done_vc;   // per mbarrier: its last completed phase's
    std::vector<uint32_t> fence_time;  // per thread: the time of its last fence.proxy.async
};

__attribute__((tls_model("initial-exec"))) thread_local Tracker* tl_tracker = nullptr;

// The last launch's reports of the thread that launched it (so tests running in parallel do
// not see each other's).
struct LastLaunch {
    std::vector<smelt_emu_report> kept;
    uint64_t total = 0;
};
thread_local LastLaunch tl_last;

smelt_dim3 thread_coords(const Launch& l, unsigned linear) {
    return smelt_dim3{linear % l.block.x, linear / l.block.x % l.block.y,
                      linear / (l.block.x * l.block.y)};
}

// A thread, or not: an mbarrier's bulk copies (pseudo-threads, no coordinates in reports), or
// kNoThread.
bool is_thread(const Tracker& t, unsigned id) { return id < t.nthreads; }

// `kind` for an access that meets `writer`'s bytes too early when the writer is a thread; when
// it is a bulk copy, the copy was not waited for.
uint32_t too_early(const Tracker& t, unsigned writer, uint32_t kind) {
    return is_thread(t, writer) ? kind : SMELT_EMU_BULK_UNWAITED;
}

struct Finding {
    uint32_t kind = 0;
    unsigned other = kNoThread;
};

void report(Tracker& t, const Finding& f, uint32_t access, uint32_t space, uintptr_t address,
            size_t size, int64_t offset, uint64_t region_bytes) {
    Launch& l = *t.launch;
    if (l.total.fetch_add(1, std::memory_order_relaxed) >= kKeptReports) return;
    smelt_emu_report r{};
    r.kind = f.kind;
    r.access = access;
    r.space = space;
    r.size = uint32_t(size);
    std::memcpy(r.kernel, l.kernel, sizeof r.kernel);
    r.block = smelt_dim3{t.block_idx.x, t.block_idx.y, t.block_idx.z};
    r.thread = thread_coords(l, t.thread);
    r.has_other = is_thread(t, f.other);
    if (r.has_other) r.other = thread_coords(l, f.other);
    r.address = address;
    r.offset = offset;
    r.region_bytes = region_bytes;
    std::lock_guard<std::mutex> lock(l.mutex);
    l.kept.push_back(r);
}

uint32_t vc_at(const Tracker& t, unsigned a, unsigned b) { return t.vc[size_t(a) * t.vc_dim + b]; }

bool ordered(const Tracker& t, unsigned other, uint32_t time) {
    const unsigned me = t.thread;
    return other == me || time < t.last_barrier ||
           (other / 32 == me / 32 && is_thread(t, other) && time < t.warp_sync[me / 32]) ||
           (t.vc_dim && time < vc_at(t, me, other));
}


// Every read recorded in `s` since its last write is ordered before the current thread's access.
bool reads_ordered(const Tracker& t, const ShadowByte& s) {
    const unsigned me = t.thread;
    if (s.read_time < t.block_start) return true;
    if (s.reader == me && s.reader2 == kNoThread) return true;
    if (s.read_time < t.last_barrier) return true;
    // One reader not ordered otherwise, ordered through mbarriers.
    if (t.vc_dim && s.reader2 == kNoThread && s.read_time < vc_at(t, me, s.reader)) return true;
    return s.reader_warp == me / 32 && s.read_time < t.warp_sync[me / 32];
}

Finding read_byte(const Tracker& t, ShadowByte& s) {
    Finding f;
    const unsigned me = t.thread;
    // Read again by the latest reader with no synchronisation since: nothing can have changed
    // (a write, or a cp.async issue, would have cleared the reads).
    if (s.read_time == t.clock && s.reader == me) return f;
    // Read by threads of several warps since the last sync, of a byte written before the last
    // barrier (ordered for everyone): one more reader changes nothing that matters (a later
    // write still sees two readers and several warps).
    if (s.read_time == t.clock && s.reader2 != kNoThread && s.reader_warp == kManyWarps &&
        s.write_time < t.last_barrier && s.write_time >= t.block_start && !s.flags)
        return f;
    if (s.flags & kPending)
        f = Finding{too_early(t, s.writer, SMELT_EMU_CP_ASYNC_PENDING), s.writer};
    else if (s.write_time < t.block_start)
        f = Finding{SMELT_EMU_UNINITIALIZED, kNoThread};
    else if (!ordered(t, s.writer, s.write_time))
        f = Finding{too_early(t, s.writer, SMELT_EMU_RACE_RAW), s.writer};
    if (reads_ordered(t, s)) {
        s.reader = uint16_t(me);
        s.reader2 = kNoThread;
        s.reader_warp = uint8_t(me / 32);
    } else {
        if (s.reader != me) {
            s.reader2 = s.reader;
            s.reader = uint16_t(me);
        }
        if (s.reader_warp != me / 32) s.reader_warp = kManyWarps;
    }
    s.read_time = t.clock;
    return f;
}

// The checks of a write (a store, or a cp.async's issue), without recording it.
Finding check_write(const Tracker& t, const ShadowByte& s) {
    const unsigned me = t.thread;
    if (s.flags & kPending)
        return Finding{too_early(t, s.writer, SMELT_EMU_CP_ASYNC_PENDING), s.writer};
    if (s.write_time >= t.block_start && !ordered(t, s.writer, s.write_time))
        return Finding{too_early(t, s.writer, SMELT_EMU_RACE_WAW), s.writer};
    if (!reads_ordered(t, s))
        return Finding{SMELT_EMU_RACE_WAR, s.reader != me ? s.reader : s.reader2};
    return Finding{};
}

// The byte as `writer` left it at `time`, with no reads since.
void set_written(ShadowByte& s, unsigned writer, uint32_t time) {
    s.write_time = time;
    s.writer = uint16_t(writer);
    s.read_time = 0;
    s.reader = s.reader2 = kNoThread;
}

void record_write(const Tracker& t, ShadowByte& s) {
    s.flags &= kPending;
    set_written(s, t.thread, t.clock);
}

uint32_t shared_space(const Tracker& t, uintptr_t a) {
    return a - t.smem_lo < SMELT_EMU_MAX_DYNAMIC_SMEM ? SMELT_EMU_DYNAMIC_SHARED
                                                      : SMELT_EMU_STATIC_SHARED;
}

// Offset reported for a shared address: in dynamic shared memory, or in the TLS block.
int64_t shared_offset(const Tracker& t, uintptr_t a) {
    return shared_space(t, a) == SMELT_EMU_DYNAMIC_SHARED ? int64_t(a - t.smem_lo)
                                                          : int64_t(a - t.tls_lo);
}

// Checks an access to shared memory; false (and a report) if it leaves the launch's dynamic
// shared memory, in which case it is not tracked.
bool shared_bounds(Tracker& t, uintptr_t a, size_t n, uint32_t access) {
    if (shared_space(t, a) != SMELT_EMU_DYNAMIC_SHARED) return true;
    const uintptr_t end = t.smem_lo + t.smem_bytes;
    if (a + n <= end) return true;
    const uintptr_t bad = std::max(a, end);
    report(t, Finding{SMELT_EMU_OUT_OF_BOUNDS}, access, SMELT_EMU_DYNAMIC_SHARED, bad, n,
           int64_t(bad - t.smem_lo), t.smem_bytes);
    return false;
}

void shared_access(Tracker& t, uintptr_t a, size_t n, uint32_t access) {
    n = std::min(n, t.tls_bytes - (a - t.tls_lo));
    if (!shared_bounds(t, a, n, access)) return;
    ShadowByte* s = t.shadow->bytes + (a - t.tls_lo);
    Finding first;
    size_t at = 0;
    ShadowByte before{}, after{};  // the last byte worked out: its state before and after
    for (size_t i = 0; i < n; ++i) {
        // The bytes of an access usually share their state: work it out once.
        if (i > 0 && std::memcmp(&s[i], &before, sizeof before) == 0) {
            s[i] = after;
            continue;
        }
        before = s[i];
        Finding f;
        if (access == SMELT_EMU_READ) {
            f = read_byte(t, s[i]);
        } else if (access == SMELT_EMU_WRITE) {
            f = check_write(t, s[i]);
            record_write(t, s[i]);
        } else {  // atomic: initialised, then a write; never a race
            if (s[i].flags & kPending)
                f = Finding{SMELT_EMU_CP_ASYNC_PENDING, s[i].writer};
            else if (s[i].write_time < t.block_start)
                f = Finding{SMELT_EMU_UNINITIALIZED};
            record_write(t, s[i]);
        }
        after = s[i];
        if (f.kind && !first.kind) {
            first = f;
            at = i;
        }
    }
    if (first.kind)
        report(t, first, access, shared_space(t, a), a + at, n, shared_offset(t, a + at),
               shared_space(t, a) == SMELT_EMU_DYNAMIC_SHARED ? t.smem_bytes : 0);
}

void global_access(Tracker& t, uintptr_t a, size_t n, uint32_t access) {
    const Allocation* al = t.cached;
    if (!al || a - al->lo() >= al->span()) {
        al = find(*t.launch->allocations, a);
        if (!al) return;
        t.cached = al;
    }
    const uintptr_t end = al->base + al->bytes;
    if (a < al->base || a + n > end) {
        const uintptr_t bad = a < al->base ? a : std::max(a, end);
        report(t, Finding{SMELT_EMU_OUT_OF_BOUNDS}, access, SMELT_EMU_GLOBAL, bad, n,
               int64_t(bad) - int64_t(al->base), al->bytes);
        return;
    }
    if (!al->written) return;
    const size_t off = a - al->base;
    if (access != SMELT_EMU_WRITE) {
        const int64_t missing = first_unwritten(*al, off, n);
        if (missing >= 0)
            report(t, Finding{SMELT_EMU_UNINITIALIZED}, access, SMELT_EMU_GLOBAL,
                   al->base + uint64_t(missing), n, missing, al->bytes);
    }
    if (access != SMELT_EMU_READ) mark_written(*al, off, n);
}

// Every access a kernel makes comes here.
inline void check(uintptr_t a, size_t n, uint32_t access) {
    Tracker* t = tl_tracker;
    if (!t) return;  // not on a worker of a sanitized launch
    if (a - t->tls_lo < t->tls_bytes) return shared_access(*t, a, n, access);
    if (a - t->stacks_lo < t->stacks_bytes) return;  // the fibers' own stacks
    if (a - t->launch->global_lo < t->launch->global_span) global_access(*t, a, n, access);
}

const char* describe_kind(uint32_t kind) {
    switch (kind) {
    case SMELT_EMU_RACE_RAW: return "data race (read after write)";
    case SMELT_EMU_RACE_WAW: return "data race (write after write)";
    case SMELT_EMU_RACE_WAR: return "data race (write after read)";
    case SMELT_EMU_UNINITIALIZED: return "uninitialized read";
    case SMELT_EMU_OUT_OF_BOUNDS: return "out of bounds";
    case SMELT_EMU_CP_ASYNC_PENDING: return "cp.async not yet complete";
    case SMELT_EMU_CP_ASYNC_INVALID: return "invalid cp.async";
    case SMELT_EMU_BULK_UNWAITED:
        return "bulk tensor copy not waited for (no wait on its mbarrier phase, or the wrong "
               "parity)";
    case SMELT_EMU_PROXY_FENCE:
        return "wgmma reads bytes written by threads without fence.proxy.async";
    case SMELT_EMU_SWIZZLE_MISMATCH:
        return "wgmma reads with another swizzle than the bulk copy wrote with";
    case SMELT_EMU_WGMMA_OPERAND_CHANGED:
        return "shared-memory operand of an in-flight wgmma changed before its wgmma.wait_group";
    default: return "unknown finding";
    }
}

const char* describe_access(uint32_t access) {
    switch (access) {
    case SMELT_EMU_READ: return "read";
    case SMELT_EMU_WRITE: return "write";
    case SMELT_EMU_ATOMIC: return "atomic";
    case SMELT_EMU_BULK_COPY: return "bulk copy";
    case SMELT_EMU_WGMMA: return "wgmma";
    default: return "cp.async";
    }
}

}  // namespace

// ---- the runtime's interface (sanitizer.h) -----------------------------------------------------

bool enabled() { return mode() != Mode::Off; }

Launch* begin_launch(const char* kernel, dim3 block, unsigned smem_bytes) {
    if (!enabled()) return nullptr;
    Launch* l = new Launch();
    std::snprintf(l->kernel, sizeof l->kernel, "%s", kernel);
    l->block = block;
    l->smem_bytes = smem_bytes;
    {
        std::lock_guard<std::mutex> lock(registry_mutex());
        l->allocations = registry();
    }
    const Registry& r = *l->allocations;
    if (!r.empty()) {
        l->global_lo = r.front()->lo();
        uintptr_t hi = 0;
        for (const auto& al : r) hi = std::max(hi, al->lo() + al->span());
        l->global_span = hi - l->global_lo;
    }
    return l;
}

void end_launch(Launch* l) {
    if (!l) return;
    const uint64_t total = l->total.load();
    if (total && mode() == Mode::Abort) {
        for (const smelt_emu_report& r : l->kept) {
            char line[512];
            smelt_emu_sanitizer_describe(&r, line, sizeof line);
            std::fprintf(stderr, "smelt CUDA emulation: %s\n", line);
        }
        fail("kernel %s: %" PRIu64 " sanitizer reports (SMELT_EMU_SANITIZE=abort)", l->kernel,
             total);
    }
    tl_last.kept = std::move(l->kept);
    tl_last.total = total;
    delete l;
}

void begin_worker(Launch* launch, unsigned nthreads, const void* stacks_lo, size_t stacks_bytes) {
    if (nthreads > kNoThread) fail("sanitizer: %u threads per block", nthreads);
    const TlsBlock tls = tls_block();
    Tracker* t = new Tracker();
    t->launch = launch;
    t->tls_lo = tls.lo;
    t->tls_bytes = tls.bytes;
    t->smem_lo = reinterpret_cast<uintptr_t>(&smem[0]);
    t->smem_bytes = launch->smem_bytes;
    t->stacks_lo = reinterpret_cast<uintptr_t>(stacks_lo);
    t->stacks_bytes = stacks_bytes;
    t->nthreads = nthreads;
    t->fence_time.assign(nthreads, 0);
    t->shadow = take_shadow(tls.bytes);
    t->clock = t->shadow->clock;
    tl_tracker = t;
}

void end_worker() {
    Tracker* t = tl_tracker;
    tl_tracker = nullptr;
    t->shadow->clock = t->clock;
    give_shadow(t->shadow);
    delete t;
}

void begin_block(uint3 block_idx) {
    Tracker& t = *tl_tracker;
    if (t.clock > 0xfff00000u) {  // wrap: forget everything (a shadow entry of time 0 is "never")
        std::memset(t.shadow->bytes, 0, t.shadow->size * sizeof(ShadowByte));
        t.clock = 0;
    }
    t.block_start = t.last_barrier = ++t.clock;
    std::fill(std::begin(t.warp_sync), std::end(t.warp_sync), 0u);
    t.vc_dim = 0;  // until the block's first mbarrier.init
    std::fill(t.fence_time.begin(), t.fence_time.end(), 0u);
    t.block_idx = block_idx;
}

void set_thread(unsigned linear) { tl_tracker->thread = linear; }

void block_barrier_done() {
    Tracker& t = *tl_tracker;
    t.last_barrier = ++t.clock;
}

void warp_sync_done(unsigned warp) {
    Tracker& t = *tl_tracker;
    t.warp_sync[warp] = ++t.clock;
}

namespace {

// Reports a finding about `bytes` bytes at shared address `a` for the running thread.
void report_shared(Tracker& t, const Finding& f, uint32_t access, uintptr_t a, size_t bytes) {
    report(t, f, access, shared_space(t, a), a, bytes, shared_offset(t, a),
           shared_space(t, a) == SMELT_EMU_DYNAMIC_SHARED ? t.smem_bytes : 0);
}

// The issue of an asynchronous write of 16 bytes at `dst` (a cp.async, or a chunk of a bulk
// copy, whose writer is its mbarrier's pseudo-thread): checked as a write ordered after what
// came before (WAW, WAR), then pending until it lands.
void issue_async_write(Tracker& t, uintptr_t dst, unsigned writer, uint32_t access) {
    if (!shared_bounds(t, dst, 16, access)) return;
    ShadowByte* s = t.shadow->bytes + (dst - t.tls_lo);
    Finding first;
    size_t at = 0;
    for (size_t i = 0; i < 16; ++i) {
        const Finding f = check_write(t, s[i]);
        if (f.kind && !first.kind) {
            first = f;
            at = i;
        }
        s[i].flags = kPending;
        s[i].writer = uint16_t(writer);
        s[i].read_time = 0;
        s[i].reader = s[i].reader2 = kNoThread;
    }
    if (first.kind) report_shared(t, first, access, dst + at, 16);
}

// The landing of an asynchronous write: 16 bytes at `dst` written by `writer` now, `flags` the
// bytes' marks (kBulk and the swizzle for a bulk copy).
void land_async_write(Tracker& t, uintptr_t dst, unsigned writer, uint8_t flags) {
    if (dst - t.tls_lo >= t.tls_bytes || t.tls_bytes - (dst - t.tls_lo) < 16) return;
    ShadowByte* s = t.shadow->bytes + (dst - t.tls_lo);
    for (size_t i = 0; i < 16; ++i) {
        s[i].flags = flags;
        set_written(s[i], writer, t.clock);
    }
}

}  // namespace

void cp_async_issue(void* shared_dst, const void* global_src) {
    Tracker& t = *tl_tracker;
    const uintptr_t dst = reinterpret_cast<uintptr_t>(shared_dst);
    const uintptr_t src = reinterpret_cast<uintptr_t>(global_src);
    check(src, 16, SMELT_EMU_READ);  // the source is read at the issue
    const bool in_shared = dst - t.tls_lo < t.tls_bytes && t.tls_bytes - (dst - t.tls_lo) >= 16;
    if (!in_shared || (dst | src) % 16 != 0) {
        report(t, Finding{SMELT_EMU_CP_ASYNC_INVALID}, SMELT_EMU_CP_ASYNC,
               in_shared ? shared_space(t, dst) : SMELT_EMU_OTHER, dst, 16,
               in_shared ? shared_offset(t, dst) : 0, 0);
        if (!in_shared) return;
    }
    issue_async_write(t, dst, t.thread, SMELT_EMU_CP_ASYNC);
}

void cp_async_land(void* shared_dst) {
    Tracker& t = *tl_tracker;
    land_async_write(t, reinterpret_cast<uintptr_t>(shared_dst), t.thread, 0);
}

void atomic_access(const void* p, size_t bytes) {
    check(reinterpret_cast<uintptr_t>(p), bytes, SMELT_EMU_ATOMIC);
}

// ---- Hopper: mbarrier happens-before, bulk copies, proxy fences, wgmma operands ----------------

namespace {

uint32_t* vc_row(std::vector<uint32_t>& v, const Tracker& t, unsigned row) {
    return v.data() + size_t(row) * t.vc_dim;
}

void join(uint32_t* into, const uint32_t* from, unsigned n) {
    for (unsigned i = 0; i < n; ++i) into[i] = std::max(into[i], from[i]);
}

}  // namespace

void mbar_init(unsigned i) {
    Tracker& t = *tl_tracker;
    if (t.vc_dim == 0) {
        t.vc_dim = t.nthreads + SMELT_EMU_MAX_MBARRIERS;
        t.vc.assign(size_t(t.vc_dim) * t.vc_dim, 0);
        t.phase_vc.assign(size_t(SMELT_EMU_MAX_MBARRIERS) * t.vc_dim, 0);
        t.done_vc.assign(size_t(SMELT_EMU_MAX_MBARRIERS) * t.vc_dim, 0);
    }
    std::fill_n(vc_row(t.phase_vc, t, i), t.vc_dim, 0u);
    std::fill_n(vc_row(t.done_vc, t, i), t.vc_dim, 0u);
}

void mbar_arrive(unsigned i) {
    Tracker& t = *tl_tracker;
    uint32_t* phase = vc_row(t.phase_vc, t, i);
    join(phase, vc_row(t.vc, t, t.thread), t.vc_dim);
    // Accesses so far (times <= clock) are released; those after the arrive are not.
    phase[t.thread] = std::max(phase[t.thread], ++t.clock);
}

void mbar_complete(unsigned i) {
    Tracker& t = *tl_tracker;
    std::copy_n(vc_row(t.phase_vc, t, i), t.vc_dim, vc_row(t.done_vc, t, i));
    std::fill_n(vc_row(t.phase_vc, t, i), t.vc_dim, 0u);
}

void mbar_acquire(unsigned i) {
    Tracker& t = *tl_tracker;
    join(vc_row(t.vc, t, t.thread), vc_row(t.done_vc, t, i), t.vc_dim);
}

void bulk_read(const void* global_src, size_t bytes) {
    check(reinterpret_cast<uintptr_t>(global_src), bytes, SMELT_EMU_READ);
}

void bulk_issue(void* shared_dst, unsigned bar) {
    Tracker& t = *tl_tracker;
    issue_async_write(t, reinterpret_cast<uintptr_t>(shared_dst), t.nthreads + bar,
                      SMELT_EMU_BULK_COPY);
}

void bulk_land_begin() { ++tl_tracker->clock; }

void bulk_land(void* shared_dst, unsigned bar, unsigned swizzle) {
    Tracker& t = *tl_tracker;
    land_async_write(t, reinterpret_cast<uintptr_t>(shared_dst), t.nthreads + bar,
                     uint8_t(kBulk | (swizzle << kSwizzleShift)));
}

void bulk_land_end(unsigned bar) {
    Tracker& t = *tl_tracker;
    // The landing (time = clock) is released into the mbarrier's current phase.
    uint32_t* phase = vc_row(t.phase_vc, t, bar);
    phase[t.nthreads + bar] = std::max(phase[t.nthreads + bar], t.clock + 1);
    ++t.clock;
}

void bulk_discard(void* shared_dst) {
    Tracker& t = *tl_tracker;
    const uintptr_t dst = reinterpret_cast<uintptr_t>(shared_dst);
    if (dst - t.tls_lo >= t.tls_bytes) return;
    ShadowByte* s = t.shadow->bytes + (dst - t.tls_lo);
    for (size_t i = 0; i < 16; ++i) s[i] = ShadowByte{};
}

void fence_proxy_async() {
    Tracker& t = *tl_tracker;
    t.fence_time[t.thread] = ++t.clock;
}

void wgmma_read(const void* const* chunks, size_t count, unsigned swizzle, unsigned first_thread) {
    Tracker& t = *tl_tracker;
    // What every thread of the warpgroup has acquired: the element-wise minimum of their clocks.
    std::vector<uint32_t> meet;
    if (t.vc_dim) {
        meet.assign(vc_row(t.vc, t, first_thread), vc_row(t.vc, t, first_thread) + t.vc_dim);
        for (unsigned j = first_thread + 1; j < first_thread + 128; ++j) {
            const uint32_t* row = vc_row(t.vc, t, j);
            for (unsigned o = 0; o < t.vc_dim; ++o) meet[o] = std::min(meet[o], row[o]);
        }
    }
    auto seen = [&](unsigned who, uint32_t time) {
        return time < t.last_barrier || (t.vc_dim && time < meet[who]);
    };
    for (size_t c = 0; c < count; ++c) {
        const uintptr_t a = reinterpret_cast<uintptr_t>(chunks[c]);
        if (!shared_bounds(t, a, 16, SMELT_EMU_WGMMA)) return;
        const ShadowByte* s = t.shadow->bytes + (a - t.tls_lo);
        for (size_t i = 0; i < 16; ++i) {
            Finding f;
            const unsigned writer = s[i].writer;
            if (s[i].flags & kPending)
                f = Finding{too_early(t, writer, SMELT_EMU_CP_ASYNC_PENDING), writer};
            else if (s[i].write_time < t.block_start)
                f = Finding{SMELT_EMU_UNINITIALIZED};
            else if (!seen(writer, s[i].write_time))
                f = Finding{too_early(t, writer, SMELT_EMU_RACE_RAW), writer};
            else if (!is_thread(t, writer)) {  // a bulk copy's bytes
                if ((s[i].flags >> kSwizzleShift) != swizzle)
                    f = Finding{SMELT_EMU_SWIZZLE_MISMATCH};
            } else {
                const uint32_t fenced = t.fence_time[writer];
                if (!(fenced > s[i].write_time && seen(writer, fenced)))
                    f = Finding{SMELT_EMU_PROXY_FENCE, writer};
            }
            if (f.kind) {
                report_shared(t, f, SMELT_EMU_WGMMA, a + i, 16 - i);
                return;  // one finding per operand is enough
            }
        }
    }
}

void wgmma_operand_changed(const void* chunk) {
    Tracker& t = *tl_tracker;
    report_shared(t, Finding{SMELT_EMU_WGMMA_OPERAND_CHANGED}, SMELT_EMU_WGMMA,
                  reinterpret_cast<uintptr_t>(chunk), 16);
}

}  // namespace san
}  // namespace smelt_emu

// ---- the instrumentation's callbacks (g++ -fsanitize=kernel-address, calls only) ----------------

using smelt_emu::san::check;
#define SMELT_EMU_CALLBACKS(n)                                                                \
    extern "C" __attribute__((visibility("hidden"))) void __asan_load##n##_noabort(          \
        uintptr_t a) {                                                                        \
        check(a, n, SMELT_EMU_READ);                                                          \
    }                                                                                         \
    extern "C" __attribute__((visibility("hidden"))) void __asan_store##n##_noabort(         \
        uintptr_t a) {                                                                        \
        check(a, n, SMELT_EMU_WRITE);                                                         \
    }
SMELT_EMU_CALLBACKS(1)
SMELT_EMU_CALLBACKS(2)
SMELT_EMU_CALLBACKS(4)
SMELT_EMU_CALLBACKS(8)
SMELT_EMU_CALLBACKS(16)
#undef SMELT_EMU_CALLBACKS
extern "C" __attribute__((visibility("hidden"))) void __asan_loadN_noabort(uintptr_t a,
                                                                            size_t n) {
    check(a, n, SMELT_EMU_READ);
}
extern "C" __attribute__((visibility("hidden"))) void __asan_storeN_noabort(uintptr_t a,
                                                                             size_t n) {
    check(a, n, SMELT_EMU_WRITE);
}

// Called before a noreturn call (a kernel's __trap or assert failure): nothing to unwind here.
extern "C" __attribute__((visibility("hidden"))) void __asan_handle_no_return() {}

// ---- the interface to Rust (src/backend/device/sanitizer.rs) ------------------------------------

using namespace smelt_emu::san;

extern "C" int smelt_emu_sanitizer_enabled() { return enabled() ? 1 : 0; }

// An EmuRuntime allocation: `bytes` at `base`, owning `guard` bytes on each side; its bytes count
// as written from the start when `written` (zeroed memory) or once uploaded or stored.
extern "C" void smelt_emu_sanitizer_register(const void* base, size_t bytes, size_t guard,
                                             int written) {
    if (!enabled()) return;
    auto al = std::make_shared<Allocation>();
    al->base = reinterpret_cast<uintptr_t>(base);
    al->bytes = bytes;
    al->guard = guard;
    if (!written) {
        const size_t words = (bytes + 63) / 64;
        al->written.reset(new std::atomic<uint64_t>[words]);
        for (size_t i = 0; i < words; ++i) al->written[i].store(0, std::memory_order_relaxed);
    }
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto next = std::make_shared<Registry>(*registry());
    auto at = std::upper_bound(next->begin(), next->end(), al->base,
                               [](uintptr_t x, const auto& a) { return x < a->base; });
    next->insert(at, std::move(al));
    registry() = std::move(next);
}

extern "C" void smelt_emu_sanitizer_unregister(const void* base) {
    if (!enabled()) return;
    const uintptr_t b = reinterpret_cast<uintptr_t>(base);
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto next = std::make_shared<Registry>(*registry());
    next->erase(std::remove_if(next->begin(), next->end(),
                               [b](const auto& a) { return a->base == b; }),
                next->end());
    registry() = std::move(next);
}

// Host writes (uploads): `bytes` at `addr`, inside one registered allocation.
extern "C" void smelt_emu_sanitizer_mark_written(const void* addr, size_t bytes) {
    if (!enabled() || bytes == 0) return;
    std::shared_ptr<const Registry> r;
    {
        std::lock_guard<std::mutex> lock(registry_mutex());
        r = registry();
    }
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    const Allocation* al = find(*r, a);
    if (!al || a < al->base || a + bytes > al->base + al->bytes || !al->written) return;
    mark_written(*al, a - al->base, bytes);
}

// The reports of the last launch this thread made: copies up to `capacity` of the kept ones
// into `out`, sets `*kept` to how many, returns how many there were in all; then forgets them.
extern "C" uint64_t smelt_emu_sanitizer_take_reports(smelt_emu_report* out, size_t capacity,
                                                     size_t* kept) {
    const size_t n = std::min(capacity, tl_last.kept.size());
    std::copy(tl_last.kept.begin(), tl_last.kept.begin() + n, out);
    *kept = n;
    const uint64_t total = tl_last.total;
    tl_last.kept.clear();
    tl_last.total = 0;
    return total;
}

// One line describing a report, NUL-terminated in `buf`; returns its length.
extern "C" size_t smelt_emu_sanitizer_describe(const smelt_emu_report* r, char* buf,
                                               size_t capacity) {
    char where[160];
    switch (r->space) {
    case SMELT_EMU_GLOBAL:
        std::snprintf(where, sizeof where, "offset %" PRId64 " of a %" PRIu64 "-byte buffer",
                      r->offset, r->region_bytes);
        break;
    case SMELT_EMU_DYNAMIC_SHARED:
        std::snprintf(where, sizeof where,
                      "offset %" PRId64 " of dynamic shared memory (%" PRIu64 " bytes launched)",
                      r->offset, r->region_bytes);
        break;
    case SMELT_EMU_STATIC_SHARED:
        std::snprintf(where, sizeof where, "static __shared__ memory");
        break;
    default: std::snprintf(where, sizeof where, "memory that is not shared memory");
    }
    char other[96] = "";
    if (r->has_other) {
        const char* what = r->kind == SMELT_EMU_RACE_WAR              ? "read by"
                           : r->kind == SMELT_EMU_CP_ASYNC_PENDING ? "cp.async issued by"
                                                                   : "written by";
        std::snprintf(other, sizeof other, "; %s thread (%u,%u,%u)", what, r->other.x,
                      r->other.y, r->other.z);
    }
    const int len = std::snprintf(
        buf, capacity,
        "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s: %s of %u bytes, byte 0x%" PRIx64
        " at %s%s",
        r->kernel, r->block.x, r->block.y, r->block.z, r->thread.x, r->thread.y, r->thread.z,
        describe_kind(r->kind), describe_access(r->access), r->size, r->address, where, other);
    return len < 0 ? 0 : std::min(size_t(len), capacity ? capacity - 1 : 0);
}
