// sanitizer.h: the sanitizer's side of the emulation (sanitizer.cpp), as the runtime
// (runtime.cpp) drives it, and the report layout Rust reads (src/backend/device/sanitizer.rs).
// What it checks, and how, is described at the top of cuda_emu.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime.h"

// One finding, as `#[repr(C)] struct Report` in src/backend/device/sanitizer.rs reads it.
struct smelt_emu_report {
    uint32_t kind;    // SMELT_EMU_RACE_RAW ... below
    uint32_t access;  // SMELT_EMU_READ ... below: what the reported thread did
    uint32_t space;   // SMELT_EMU_GLOBAL ... below: where the address lies
    uint32_t size;    // bytes of the access
    char kernel[64];  // the kernel's name (truncated, NUL-terminated)
    smelt_dim3 block;
    smelt_dim3 thread;
    smelt_dim3 other;      // the other thread of a race or of a pending cp.async
    uint32_t has_other;    // whether `other` is meaningful
    uint32_t reserved;
    uint64_t address;      // the first byte found wrong (not the access's start)
    int64_t offset;        // from the allocation's first byte, or in shared memory
    uint64_t region_bytes; // the allocation's size, or the launch's dynamic shared memory
};

enum : uint32_t {
    SMELT_EMU_RACE_RAW = 1,          // read of a byte another thread wrote, no barrier between
    SMELT_EMU_RACE_WAW = 2,          // write of a byte another thread wrote, no barrier between
    SMELT_EMU_RACE_WAR = 3,          // write of a byte another thread read, no barrier between
    SMELT_EMU_UNINITIALIZED = 4,     // read of a byte never written (this block / this buffer)
    SMELT_EMU_OUT_OF_BOUNDS = 5,     // access leaving its allocation or the dynamic smem size
    SMELT_EMU_CP_ASYNC_PENDING = 6,  // access to a cp.async destination before its wait
    SMELT_EMU_CP_ASYNC_INVALID = 7,  // cp.async to non-shared memory, or misaligned
    SMELT_EMU_BULK_UNWAITED = 8,     // access to a bulk copy's destination not ordered after
                                     // the wait on its mbarrier phase (wrong parity, no wait)
    SMELT_EMU_PROXY_FENCE = 9,       // wgmma read bytes threads wrote, no fence.proxy.async
    SMELT_EMU_SWIZZLE_MISMATCH = 10, // wgmma read bytes a bulk copy wrote with another swizzle
    SMELT_EMU_WGMMA_OPERAND_CHANGED = 11,  // an in-flight wgmma's operand changed before its wait
};
enum : uint32_t {
    SMELT_EMU_READ = 1,
    SMELT_EMU_WRITE = 2,
    SMELT_EMU_ATOMIC = 3,
    SMELT_EMU_CP_ASYNC = 4,
    SMELT_EMU_BULK_COPY = 5,  // a bulk tensor copy (its issue or its landing)
    SMELT_EMU_WGMMA = 6,      // a wgmma's read of its shared-memory operands
};
enum : uint32_t {
    SMELT_EMU_GLOBAL = 1,         // an EmuRuntime allocation (or its guard gap)
    SMELT_EMU_DYNAMIC_SHARED = 2, // `extern __shared__ float smem[]`
    SMELT_EMU_STATIC_SHARED = 3,  // a static __shared__ variable
    SMELT_EMU_OTHER = 4,          // anything else (a cp.async destination outside shared memory)
};

// The interface to Rust (src/backend/device/sanitizer.rs); sanitizer.cpp documents each.
extern "C" {
int smelt_emu_sanitizer_enabled();
void smelt_emu_sanitizer_register(const void* base, size_t bytes, size_t guard, int written);
void smelt_emu_sanitizer_unregister(const void* base);
void smelt_emu_sanitizer_mark_written(const void* addr, size_t bytes);
uint64_t smelt_emu_sanitizer_take_reports(smelt_emu_report* out, size_t capacity, size_t* kept);
size_t smelt_emu_sanitizer_describe(const smelt_emu_report* r, char* buf, size_t capacity);
}

namespace smelt_emu {
namespace san {

struct Launch;

// SMELT_EMU_SANITIZE: "0" off, "abort" prints a launch's reports and aborts, else on (default).
bool enabled();

// A launch's reports and its view of the allocations (a snapshot taken now). Null when the
// sanitizer is off. end_launch makes its reports the calling thread's "last launch" reports.
Launch* begin_launch(const char* kernel, dim3 block, unsigned smem_bytes);
void end_launch(Launch* launch);

// One worker OS thread running blocks of `launch`; `stacks` is its fibers' stack memory
// (accesses there are never checked).
void begin_worker(Launch* launch, unsigned nthreads, const void* stacks_lo, size_t stacks_bytes);
void end_worker();
void begin_block(uint3 block_idx);
// The fiber now running (linear thread id in the block).
void set_thread(unsigned linear);
// Synchronisation that orders shared-memory accesses.
void block_barrier_done();
void warp_sync_done(unsigned warp);

// cp.async: the issue (the source is read now; the destination becomes pending) and the landing
// (the destination is written by the calling thread, now).
void cp_async_issue(void* shared_dst, const void* global_src);
void cp_async_land(void* shared_dst);
void atomic_access(const void* p, size_t bytes);

// Hopper. mbarrier i of the block (i < SMELT_EMU_MAX_MBARRIERS): happens-before through its
// phases (vector clocks: an arrive releases what the thread has seen into the phase, a wait that
// sees the phase complete acquires it). Bulk copies are writes by a pseudo-thread per mbarrier.
void mbar_init(unsigned i);
void mbar_arrive(unsigned i);
void mbar_complete(unsigned i);
void mbar_acquire(unsigned i);
void bulk_read(const void* global_src, size_t bytes);           // a source element, at the issue
void bulk_issue(void* shared_dst, unsigned bar);  // 16 destination bytes
void bulk_land_begin();
void bulk_land(void* shared_dst, unsigned bar, unsigned swizzle);   // 16 bytes land
void bulk_land_end(unsigned bar);
void bulk_discard(void* shared_dst);  // 16 bytes of a copy that never landed (block end)
void fence_proxy_async();
// A wgmma's operand chunks (16 bytes each), read for warpgroup [first_thread, +128) with the
// swizzle the descriptor names (CUtensorMapSwizzle numbering).
void wgmma_read(const void* const* chunks, size_t count, unsigned swizzle, unsigned first_thread);
void wgmma_operand_changed(const void* chunk);

}  // namespace san
}  // namespace smelt_emu
