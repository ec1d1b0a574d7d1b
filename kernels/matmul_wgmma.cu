#include "common.cuh"
#include "hopper.cuh"
#include "matmul_epilogue.cuh"

// matmul_wgmma.cu: out (m,n) = op(a) · op(b) (+ bias (n)) with matmul.cu's conventions (a (m,k)
// row-major, or (k,m) with trans_a; b (k,n) row-major, or (n,k) with trans_b), bf16 operands,
// f32 accumulation on Hopper's warpgroup tensor cores, the GELU epilogue of matmul.cu (gelu_out
// = gelu(out) when not null) and f32 or bf16 outputs (matmul_wgmma_bf16 /
// matmul_wgmma_bf16_to_bf16). The products training runs: x · W (forward, W stored (in, out)
// as GPT-2's Conv1D: b plain), dout · Wᵀ (input gradient: trans_b), xᵀ · dout (weight
// gradient: trans_a), and the tied LM head's x · wteᵀ, dlogits · wte, dlogitsᵀ · x.
//
// Structure (sm_90a; the emulation runs the same code):
// * Persistent grid: gridDim.x blocks (one per SM) walk the 128x128 output tiles, tile i,
//   i + gridDim.x, ..., in a grouped order: WGMMA_GROUP_M tile rows at a time, column by column,
//   so the blocks running at once share a few panels of a and b in L2.
// * 384 threads = 3 warpgroups. Warpgroup 0 is the producer: it gives up registers
//   (setmaxnreg 40) and one thread issues the bulk tensor copies (TMA) of each k tile of a
//   (128 rows x 64 k) and b (128 x 64) into a ring of WGMMA_STAGES stages. Warpgroups 1 and 2
//   are the consumers (setmaxnreg 232): each computes 64 rows x 128 columns of the tile with
//   wgmma m64n128k16 (4 per k tile), 64 f32 accumulators per thread.
// * The ring: stage s has a `full` mbarrier (1 arrival: the producer's arrive.expect_tx, then
//   the copies' 32 KiB of transactions) and an `empty` one (2 arrivals: one thread of each
//   consumer once its wgmmas that read the stage are done). Phases alternate parity each time
//   the ring wraps; the producer waits `empty` with the opposite parity, so its first pass
//   through the ring does not wait.
// * Consumers keep one batch of wgmmas in flight: after issuing k tile kt they wait until at
//   most one group is pending (kt-1 done) and release kt-1's stage.
// * Shared memory: each stage's tile of an operand is 16 KiB with the 128-byte swizzle (TMA
//   writes it; the wgmma descriptors read it), starting at a multiple of 1024 of the shared
//   address. An operand stored k-contiguous (a plain, b with trans_b: "K-major") is one box of
//   128 rows x 64 k: rows of 128 bytes, a k16 step moves the descriptor's start by 32 bytes. An
//   operand stored mn-contiguous (a with trans_a, b plain: "MN-major") is two boxes of 64 k rows
//   x 64 mn (8 KiB each, one per 64-wide half of the tile): a k16 step moves the start by 16 rows
//   (2 KiB), the leading byte offset (8 KiB) goes from one half to the other, and the wgmma's
//   transpose flag says the layout.
// * Edges: TMA fills rows and columns past the operands with zeros, which add nothing; the
//   epilogue stores only in-bounds elements. Requirements (the host checks them, else it uses
//   matmul.cu): each operand's stored rows a multiple of 8 elements and a, b 16-byte aligned
//   (TMA's 16-byte strides and addresses).
// * Epilogue: straight from the accumulators to global memory (bias, GELU, pair stores), while
//   the producer already loads the next tile's stages.
// * Split-K (for products with few output tiles and a long k: the weight gradients, k = B·T):
//   with `splits` > 1 the work units are (tile, split) pairs, split s taking k tiles
//   [s·kt/splits, (s+1)·kt/splits); each writes its f32 partial sums, no epilogue, to
//   `partials` + s·m·n, and matmul_splitk_reduce then adds the splits in order (deterministic),
//   with the bias and GELU epilogue and the output type.

static constexpr int WGMMA_BM = 128;
static constexpr int WGMMA_BN = 128;
static constexpr int WGMMA_BK = 64;  // 128 bytes of bf16: one swizzle span per row
static constexpr int WGMMA_STAGES = 4;
static constexpr int WGMMA_THREADS = 384;
static constexpr int WGMMA_GROUP_M = 8;
static constexpr int WGMMA_TILE_BYTES = WGMMA_BM * WGMMA_BK * 2;  // 16 KiB (a and b alike)
static_assert(WGMMA_BM == WGMMA_BN, "a and b tiles share the tensor map box");
// Dynamic shared memory: 1 KiB to align the ring, the ring, and 2 mbarriers per stage.
static constexpr int WGMMA_SMEM_BYTES =
    1024 + WGMMA_STAGES * 2 * WGMMA_TILE_BYTES + WGMMA_STAGES * 2 * 8;

// The (tile row, tile column) of tile `tile` in the grouped order.
static __device__ __forceinline__ void wgmma_tile_coords(int tile, int tiles_m, int tiles_n,
                                                         int* tm, int* tn) {
    const int group_tiles = WGMMA_GROUP_M * tiles_n;
    const int first_m = tile / group_tiles * WGMMA_GROUP_M;
    const int rows = min(tiles_m - first_m, WGMMA_GROUP_M);
    const int in_group = tile % group_tiles;
    *tm = first_m + in_group % rows;
    *tn = in_group / rows;
}

// Loads k tile `kt` of an operand's 128-wide tile `t` (rows or columns) into `tile`: one box
// (K-major) or two (MN-major), completing on `bar`.
template <bool MN_MAJOR>
static __device__ __forceinline__ void wgmma_load_tile(unsigned char* tile, const TensorMap* map,
                                                       int t, int kt, unsigned long long* bar) {
    if (!MN_MAJOR) {
        tma_load_2d(tile, map, kt * WGMMA_BK, t * WGMMA_BM, bar);
    } else {
        tma_load_2d(tile, map, t * WGMMA_BM, kt * WGMMA_BK, bar);
        tma_load_2d(tile + WGMMA_TILE_BYTES / 2, map, t * WGMMA_BM + 64, kt * WGMMA_BK, bar);
    }
}

// The descriptor of k16 step `kk` of a stage's operand tile, from row (or column) `first`
// (a multiple of 64) on.
template <bool MN_MAJOR>
static __device__ __forceinline__ unsigned long long wgmma_tile_desc(const unsigned char* tile,
                                                                     int first, int kk) {
    if (!MN_MAJOR)
        return wgmma_desc(tile + first * 128 + 32 * kk, 16, 1024, WGMMA_SWIZZLE_128B);
    return wgmma_desc(tile + (first / 64) * (WGMMA_TILE_BYTES / 2) + 2048 * kk,
                      WGMMA_TILE_BYTES / 2, 1024, WGMMA_SWIZZLE_128B);
}

// The k tiles [*begin, *end) of split `split` of `splits`.
static __device__ __forceinline__ void wgmma_split_range(int ktiles, int split, int splits,
                                                         int* begin, int* end) {
    *begin = static_cast<int>(static_cast<long long>(ktiles) * split / splits);
    *end = static_cast<int>(static_cast<long long>(ktiles) * (split + 1) / splits);
}

template <typename OutT, bool A_MN, bool B_MN>
static __device__ __forceinline__ void matmul_wgmma_body(
    OutT* __restrict__ out, OutT* __restrict__ gelu_out, const float* __restrict__ bias, int m,
    int n, int k, int splits, float* __restrict__ partials, const TensorMap* map_a,
    const TensorMap* map_b) {
#if defined(SMELT_HOPPER)
    unsigned char* ring = align_shared(smem, 1024);
    unsigned char* tiles_a = ring;
    unsigned char* tiles_b = ring + WGMMA_STAGES * WGMMA_TILE_BYTES;
    unsigned long long* full =
        reinterpret_cast<unsigned long long*>(ring + 2 * WGMMA_STAGES * WGMMA_TILE_BYTES);
    unsigned long long* empty = full + WGMMA_STAGES;
    const int tid = threadIdx.x;
    if (tid == 0) {
        for (int s = 0; s < WGMMA_STAGES; ++s) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 2);
        }
        mbar_fence_init();
    }
    __syncthreads();

    const int tiles_m = (m + WGMMA_BM - 1) / WGMMA_BM;
    const int tiles_n = (n + WGMMA_BN - 1) / WGMMA_BN;
    const int units = tiles_m * tiles_n * splits;
    const int ktiles = (k + WGMMA_BK - 1) / WGMMA_BK;
    const int warpgroup = tid / 128;

    if (warpgroup == 0) {
        setmaxnreg_dec<40>();
        if (tid != 0) return;
        int stage = 0;
        unsigned phase = 0;
        for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
            int tm, tn, kt_begin, kt_end;
            wgmma_tile_coords(unit / splits, tiles_m, tiles_n, &tm, &tn);
            wgmma_split_range(ktiles, unit % splits, splits, &kt_begin, &kt_end);
            for (int kt = kt_begin; kt < kt_end; ++kt) {
                mbar_wait(&empty[stage], phase ^ 1);
                mbar_arrive_expect_tx(&full[stage], 2 * WGMMA_TILE_BYTES);
                wgmma_load_tile<A_MN>(tiles_a + stage * WGMMA_TILE_BYTES, map_a, tm, kt,
                                      &full[stage]);
                wgmma_load_tile<B_MN>(tiles_b + stage * WGMMA_TILE_BYTES, map_b, tn, kt,
                                      &full[stage]);
                if (++stage == WGMMA_STAGES) {
                    stage = 0;
                    phase ^= 1;
                }
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int consumer = warpgroup - 1;           // rows 64 * consumer .. of the tile
    const int lane_in_group = tid % 128;
    const bool releases = lane_in_group == 0;     // arrives on `empty` for the warpgroup
    const int warp = lane_in_group / 32, g = (tid % 32) / 4, q = tid % 4;
    const bool pairs = matmul_pairs_aligned(out, gelu_out, n);
    float acc[64];
    int stage = 0;
    unsigned phase = 0;
    const bool partial_pairs = n % 2 == 0;  // partials are 256-byte aligned
    for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
        int tm, tn, kt_begin, kt_end;
        wgmma_tile_coords(unit / splits, tiles_m, tiles_n, &tm, &tn);
        wgmma_split_range(ktiles, unit % splits, splits, &kt_begin, &kt_end);
        int previous = -1;
        for (int kt = kt_begin; kt < kt_end; ++kt) {
            mbar_wait(&full[stage], phase);
            const unsigned char* a = tiles_a + stage * WGMMA_TILE_BYTES;
            const unsigned char* b = tiles_b + stage * WGMMA_TILE_BYTES;
            wgmma_fence();
            SMELT_UNROLL
            for (int kk = 0; kk < WGMMA_BK / 16; ++kk)
                wgmma_m64n128k16<A_MN, B_MN>(acc, wgmma_tile_desc<A_MN>(a, consumer * 64, kk),
                                             wgmma_tile_desc<B_MN>(b, 0, kk),
                                             kt > kt_begin || kk > 0);
            wgmma_commit();
            wgmma_wait<1>();  // k tile kt-1's wgmmas are done: its stage can be refilled
            if (previous >= 0 && releases) mbar_arrive(&empty[previous]);
            previous = stage;
            if (++stage == WGMMA_STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
        wgmma_wait<0>();
        if (previous >= 0 && releases) mbar_arrive(&empty[previous]);

        // acc[i]: row 16 warp + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2q + (i & 1).
        const int row0 = tm * WGMMA_BM + consumer * 64 + warp * 16 + g;
        const int col0 = tn * WGMMA_BN + 2 * q;
        float* partial = partials + static_cast<size_t>(unit % splits) * m * n;
        SMELT_UNROLL
        for (int j = 0; j < 16; ++j)
            SMELT_UNROLL
            for (int h = 0; h < 2; ++h) {
                const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
                const int row = row0 + 8 * h, col = col0 + 8 * j;
                if (splits == 1)
                    matmul_store_pair(out, gelu_out, bias, m, n, row, col, v0, v1, pairs);
                else
                    matmul_store_pair(partial, static_cast<float*>(nullptr), nullptr, m, n, row,
                                      col, v0, v1, partial_pairs);
            }
    }
#endif
}

// Both kernels: the body for the operands' layouts. b plain is MN-major, b with trans_b K-major.
template <typename OutT>
static __device__ __forceinline__ void matmul_wgmma_dispatch(
    OutT* __restrict__ out, OutT* __restrict__ gelu_out, const float* __restrict__ bias, int m,
    int n, int k, int trans_a, int trans_b, int splits, float* __restrict__ partials,
    const TensorMap* map_a, const TensorMap* map_b) {
    if (!trans_a) {
        if (trans_b)
            matmul_wgmma_body<OutT, false, false>(out, gelu_out, bias, m, n, k, splits,
                                                  partials, map_a, map_b);
        else
            matmul_wgmma_body<OutT, false, true>(out, gelu_out, bias, m, n, k, splits,
                                                  partials, map_a, map_b);
    } else {
        if (trans_b)
            matmul_wgmma_body<OutT, true, false>(out, gelu_out, bias, m, n, k, splits,
                                                  partials, map_a, map_b);
        else
            matmul_wgmma_body<OutT, true, true>(out, gelu_out, bias, m, n, k, splits,
                                                  partials, map_a, map_b);
    }
}

extern "C" __global__ void __launch_bounds__(WGMMA_THREADS, 1)
    matmul_wgmma_bf16(float* __restrict__ out, float* __restrict__ gelu_out,
                      const float* __restrict__ bias, int m, int n, int k, int trans_a,
                      int trans_b, int splits, float* __restrict__ partials,
                      const __grid_constant__ TensorMap map_a,
                      const __grid_constant__ TensorMap map_b) {
    matmul_wgmma_dispatch(out, gelu_out, bias, m, n, k, trans_a, trans_b, splits, partials,
                          &map_a, &map_b);
}

extern "C" __global__ void __launch_bounds__(WGMMA_THREADS, 1)
    matmul_wgmma_bf16_to_bf16(__nv_bfloat16* __restrict__ out,
                              __nv_bfloat16* __restrict__ gelu_out,
                              const float* __restrict__ bias, int m, int n, int k, int trans_a,
                              int trans_b, int splits, float* __restrict__ partials,
                              const __grid_constant__ TensorMap map_a,
                              const __grid_constant__ TensorMap map_b) {
    matmul_wgmma_dispatch(out, gelu_out, bias, m, n, k, trans_a, trans_b, splits, partials,
                          &map_a, &map_b);
}

// Split-K's second pass: out = the sum of the `splits` partial products (m, n) in `partials`, in
// split order, + bias, and gelu_out = gelu(out) unless null (matmul_wgmma_bf16's epilogue).
// One thread per pair of columns (launch: 256 threads, ceil(m * ceil(n/2) / 256) blocks).
template <typename OutT>
static __device__ __forceinline__ void matmul_splitk_reduce_body(
    OutT* __restrict__ out, OutT* __restrict__ gelu_out, const float* __restrict__ partials,
    const float* __restrict__ bias, int m, int n, int splits) {
    const long long pairs_per_row = (n + 1) / 2;
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= m * pairs_per_row) return;
    const int row = static_cast<int>(i / pairs_per_row);
    const int col = static_cast<int>(i % pairs_per_row) * 2;
    const size_t at = static_cast<size_t>(row) * n + col, mn = static_cast<size_t>(m) * n;
    float v0 = 0.0f, v1 = 0.0f;
    for (int s = 0; s < splits; ++s) {
        v0 += partials[s * mn + at];
        if (col + 1 < n) v1 += partials[s * mn + at + 1];
    }
    matmul_store_pair(out, gelu_out, bias, m, n, row, col, v0, v1,
                      matmul_pairs_aligned(out, gelu_out, n));
}

extern "C" __global__ void matmul_splitk_reduce(float* __restrict__ out,
                                                float* __restrict__ gelu_out,
                                                const float* __restrict__ partials,
                                                const float* __restrict__ bias, int m, int n,
                                                int splits) {
    matmul_splitk_reduce_body(out, gelu_out, partials, bias, m, n, splits);
}

extern "C" __global__ void matmul_splitk_reduce_to_bf16(__nv_bfloat16* __restrict__ out,
                                                        __nv_bfloat16* __restrict__ gelu_out,
                                                        const float* __restrict__ partials,
                                                        const float* __restrict__ bias, int m,
                                                        int n, int splits) {
    matmul_splitk_reduce_body(out, gelu_out, partials, bias, m, n, splits);
}
