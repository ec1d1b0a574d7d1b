// runtime.h: what the kernels' translation unit (cuda_emu.h + kernels/*.cu, compiled with the
// sanitizer's instrumentation) calls in the emulation's runtime (runtime.cpp, sanitizer.cpp,
// compiled without it). Everything here is an out-of-line call, so no access the runtime makes
// to its own data (fibers, warps, shadow memory) is ever seen by the sanitizer's callbacks.
#pragma once

#include <cstddef>
#include <cstdint>

// The launch geometry as Rust passes it (`#[repr(C)] struct Dim3 { x: u32, y: u32, z: u32 }`).
struct smelt_dim3 {
    unsigned int x, y, z;
};

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
};

// The largest dynamic shared memory a launch may request (Hopper's per-block opt-in maximum).
#define SMELT_EMU_MAX_DYNAMIC_SMEM (227u * 1024u)
// The most mbarriers one block may initialise.
#define SMELT_EMU_MAX_MBARRIERS 32u

namespace smelt_emu {

// The shared-window address of smem[0]. Not a multiple of 1024 (nor of 128), as on a GPU
// nothing guarantees it is: kernels align their swizzled tiles themselves.
constexpr unsigned kSharedWindowBase = 16;

// Prints "smelt CUDA emulation: <message>" and aborts the process.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// What a lane waits for at a warp rendezvous; all lanes of a warp must agree.
enum class WarpOp : unsigned char { None, Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, Sync };

// The calling thread's built-in variables (fails outside a kernel launch).
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
unsigned block_threads();  // blockDim.x * blockDim.y * blockDim.z
unsigned warp_lanes();     // lanes present in the calling thread's warp (32, or fewer)

// __syncthreads and its reductions: waits for the whole block; returns the sum of the
// contributions of all threads.
int block_barrier(int contribution);
// __syncwarp.
void warp_sync(unsigned mask);
// A shuffle of the low bytes of `bits`: the source lane's value, the caller's own (source out
// of its segment), or all bits set (an absent lane of a partial warp).
uint64_t shuffle(WarpOp op, unsigned mask, uint64_t bits, int arg, int width);
// __ballot_sync / __any_sync / __all_sync: the bit mask of the lanes whose `pred` is non-zero.
unsigned ballot(WarpOp op, unsigned mask, int pred);

// cp.async (tensor_core.cuh): the copy lands when a wait covers its group (PTX semantics,
// commit groups per thread); until then the destination is poisoned and marked pending.
void cp_async_16(void* shared_dst, const void* global_src);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);

// ---- Hopper (hopper.cuh; the model is described at the top of cuda_emu.h, "Hopper") --------
// The shared-window address of a byte of dynamic shared memory (cvta.to.shared): its offset
// in `smem` plus kSharedWindowBase. Fails for any other address.
unsigned shared_window_address(const void* p);
// mbarrier.init: `expected` arrivals complete a phase.
void mbar_init(void* bar, unsigned expected);
// fence.mbarrier_init + fence.proxy.async: the calling thread's mbarrier.inits so far become
// visible to bulk copies (which fail on a barrier whose init is not).
void mbar_fence_init();
// mbarrier.arrive, after adding `tx_bytes` to the phase's expected transaction bytes
// (mbarrier.arrive.expect_tx when tx_bytes > 0).
void mbar_arrive(void* bar, unsigned tx_bytes);
// mbarrier.try_wait.parity: whether the phase of parity `parity` before the current one has
// completed. Lands the barrier's bulk copies first; yields to the other threads when false.
bool mbar_try_wait(void* bar, unsigned parity);
// cp.async.bulk.tensor.{1..5}d ... mbarrier::complete_tx::bytes: the box at `coords` of the
// tensor map (the emulation's encoding, src/backend/device/emu.rs) into `dst`, completing on
// `bar`.
void bulk_tensor_load(void* dst, const void* tensor_map, const int* coords, int rank, void* bar);
// fence.proxy.async: this thread's shared-memory writes so far become visible to wgmma.
void fence_proxy_async();
// wgmma.fence / commit_group / wait_group and one wgmma.mma_async m64nNk16 f32 += bf16 * bf16
// with both operands in shared memory (descriptors). All 128 threads of the warpgroup call
// each (warpgroup rendezvous); `d` is the calling thread's N/2 accumulators.
void wgmma_fence();
void wgmma_mma(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d, int trans_a,
               int trans_b);
void wgmma_commit();
void wgmma_wait(int pending_groups_allowed);
// setmaxnreg.{inc,dec}: checks the count (24..256, a multiple of 8) and the warpgroup.
void setmaxnreg(unsigned regs);

// An atomic read-modify-write of `bytes` at `p` by the calling thread: checked like any access
// (bounds, initialised) but never a race, and a write afterwards.
void atomic_access(const void* p, size_t bytes);

// The calling worker's dynamic shared memory (`smem`, 16-byte aligned,
// SMELT_EMU_MAX_DYNAMIC_SMEM bytes). Out of line on purpose: kernels reach it through this
// pointer, whose accesses the sanitizer's instrumentation sees (build/shared_decls.rs).
// The same all through a kernel's run on one worker (fibers never change OS thread): const.
void* dynamic_smem() __attribute__((const));

// Runs body(ctx) as every thread of every block of the grid, to completion.
void launch_impl(const char* name, smelt_dim3 grid, smelt_dim3 block, unsigned smem_bytes,
                 void (*body)(void*), void* ctx);

}  // namespace smelt_emu
