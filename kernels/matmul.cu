#include "common.cuh"
#include "matmul_epilogue.cuh"
#include "tensor_core.cuh"

// matmul.cu: out (m,n) f32 = op(a) (m,k) · op(b) (k,n) (+ bias (n)), bf16 inputs, f32
// accumulation on tensor cores (mma.sync m16n8k16 + ldmatrix + cp.async), with an optional
// GELU epilogue: gelu_out (m,n) = gelu(out) when gelu_out is not null (the MLP's fc layer writes
// its pre-activation, which the backward needs, and its activation in one pass).
// matmul_bf16_to_bf16 is the same kernel (one templated body) with bf16 outputs: the f32 sum
// (+ bias) rounded once to bf16, and the GELU of the unrounded f32 sum rounded to bf16.
//
// op(a) = a (m,k) row-major, or with trans_a a^T where a is stored (k,m) row-major;
// op(b) = b (k,n) row-major (Conv1D weight), or with trans_b b^T where b is stored (n,k)
// (tied LM head, backward).
//
// Tiling: a block of 128 threads (4 warps, 2x2) computes a 64x64 tile of out; each warp 32x32
// (2 m16 x 4 n8 mma tiles, 32 f32 accumulators per lane), k in steps of 32 (two k16 mma steps).
// Shared memory: MATMUL_STAGES = 3 stages of (A tile, B tile), filled by cp.async 3-stage
// pipeline (two tiles in flight while one is consumed; one __syncthreads per k tile).
// Each operand tile is stored either "k-contiguous" [rows][k] (a, and b^T: the layout in
// global memory), read by ldmatrix, or "k-outer" [k][rows] (a^T, b), read by ldmatrix.trans:
// every transpose combination copies global rows straight into shared rows, and the fragment
// loads do the transposing. Rows are padded (80 / 144 bytes) so ldmatrix's 8 row reads hit
// distinct banks.
//
// Edges: 16-byte cp.async chunks need a 16-byte aligned source, so they are used when the
// operand's base is 16-byte aligned, its leading dimension a multiple of 8 elements, and the
// whole chunk lies inside the matrix; every other chunk (tile edges, odd k or ld) is loaded
// element by element with zero fill. Zero-filled rows/cols contribute nothing; the epilogue
// writes only in-bounds elements.

static constexpr int MATMUL_BM = 64;
static constexpr int MATMUL_BN = 64;
static constexpr int MATMUL_BK = 32;
static constexpr int MATMUL_STAGES = 3;
static constexpr int MATMUL_THREADS = 128;
// Row stride (elements) of a k-contiguous tile [64][32] and of a k-outer tile [32][64].
static constexpr int MATMUL_KPAD = MATMUL_BK + 8;
static constexpr int MATMUL_RPAD = MATMUL_BM + 8;
// Elements of one operand tile in one stage (the larger of the two layouts).
static constexpr int MATMUL_TILE = MATMUL_BM * MATMUL_KPAD;
static_assert(MATMUL_TILE >= MATMUL_BK * MATMUL_RPAD, "tile buffer too small");
static_assert(MATMUL_BM == MATMUL_BN, "both operands share the tile code");
// Dynamic shared memory of one block (bytes): 30 KiB.
static constexpr int MATMUL_SMEM_BYTES = MATMUL_STAGES * 2 * MATMUL_TILE * 2;

// Loads the 64 x 32 (rows x k) tile at (r0, k0) of one operand into shared memory `s`.
// KMAJOR: element (r, kk) is g[r * ld + kk] and s is [64][KPAD]; otherwise g[kk * ld + r] and
// s is [32][RPAD]. `rows`, `k`: the operand's extents; `vec`: 16-byte chunks allowed.
template <bool KMAJOR>
static __device__ __forceinline__ void matmul_load_tile(__nv_bfloat16* s,
                                                        const __nv_bfloat16* __restrict__ g,
                                                        int ld, int rows, int k, int r0, int k0,
                                                        bool vec, int tid) {
    const __nv_bfloat16 zero = __ushort_as_bfloat16(0);
    // 64 * 32 elements = 256 chunks of 8; two per thread.
    SMELT_UNROLL
    for (int it = 0; it < 2; ++it) {
        const int c = tid + it * MATMUL_THREADS;
        if (KMAJOR) {
            const int r = c >> 2, kc = (c & 3) * 8;
            __nv_bfloat16* dst = s + r * MATMUL_KPAD + kc;
            const int gr = r0 + r, gk = k0 + kc;
            const __nv_bfloat16* src = g + (static_cast<size_t>(gr) * ld + gk);
            if (vec && gr < rows && gk + 8 <= k) {
                cp_async_16(dst, src);
            } else {
                SMELT_UNROLL
                for (int e = 0; e < 8; ++e) dst[e] = (gr < rows && gk + e < k) ? src[e] : zero;
            }
        } else {
            const int kr = c >> 3, rc = (c & 7) * 8;
            __nv_bfloat16* dst = s + kr * MATMUL_RPAD + rc;
            const int gk = k0 + kr, gr = r0 + rc;
            const __nv_bfloat16* src = g + (static_cast<size_t>(gk) * ld + gr);
            if (vec && gk < k && gr + 8 <= rows) {
                cp_async_16(dst, src);
            } else {
                SMELT_UNROLL
                for (int e = 0; e < 8; ++e) dst[e] = (gk < k && gr + e < rows) ? src[e] : zero;
            }
        }
    }
}

// One stage (k = 32) of the warp's 32x32 tile: acc[mi][ni] += A(m16 tile mi) · B(n8 tile ni).
template <bool A_KMAJOR, bool B_KMAJOR>
static __device__ __forceinline__ void matmul_compute_stage(const __nv_bfloat16* sa,
                                                            const __nv_bfloat16* sb,
                                                            float acc[2][4][4], int wm, int wn,
                                                            int lane) {
    // ldmatrix: lane gives row j of matrix i.
    const int i = lane >> 3, j = lane & 7;
    SMELT_UNROLL
    for (int ks = 0; ks < MATMUL_BK; ks += 16) {
        unsigned af[2][4], bfr[4][2];
        SMELT_UNROLL
        for (int mi = 0; mi < 2; ++mi) {
            // Matrix i of the A fragment: rows (i&1)*8.., k (i>>1)*8.. (a[0..3] order).
            const int mb = wm * 32 + mi * 16 + (i & 1) * 8, kb = ks + (i >> 1) * 8;
            if (A_KMAJOR)
                ldmatrix_x4(af[mi], sa + (mb + j) * MATMUL_KPAD + kb);
            else
                ldmatrix_x4_trans(af[mi], sa + (kb + j) * MATMUL_RPAD + mb);
        }
        SMELT_UNROLL
        for (int p = 0; p < 2; ++p) {
            // Matrix i: n (i>>1)*8.. (n8 tile 2p or 2p+1), k (i&1)*8.. (b[0] or b[1]).
            const int nb = wn * 32 + p * 16 + (i >> 1) * 8, kb = ks + (i & 1) * 8;
            unsigned r[4];
            if (B_KMAJOR)
                ldmatrix_x4(r, sb + (nb + j) * MATMUL_KPAD + kb);
            else
                ldmatrix_x4_trans(r, sb + (kb + j) * MATMUL_RPAD + nb);
            bfr[2 * p][0] = r[0];
            bfr[2 * p][1] = r[1];
            bfr[2 * p + 1][0] = r[2];
            bfr[2 * p + 1][1] = r[3];
        }
        SMELT_UNROLL
        for (int mi = 0; mi < 2; ++mi) {
            SMELT_UNROLL
            for (int ni = 0; ni < 4; ++ni)
                mma_m16n8k16_bf16(acc[mi][ni], af[mi], bfr[ni], acc[mi][ni]);
        }
    }
}

// The whole kernel for one transpose combination; OutT (float or __nv_bfloat16) is the type of
// out and gelu_out, which only the epilogue's stores depend on.
template <typename OutT, bool A_KMAJOR, bool B_KMAJOR>
static __device__ __forceinline__ void matmul_bf16_body(__nv_bfloat16* smem_bf16,
                                                        OutT* __restrict__ out,
                                                        OutT* __restrict__ gelu_out,
                                                        const __nv_bfloat16* __restrict__ a,
                                                        const __nv_bfloat16* __restrict__ b,
                                                        const float* __restrict__ bias, int m,
                                                        int k, int n) {
    __nv_bfloat16* sm = smem_bf16;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int m0 = blockIdx.y * MATMUL_BM, n0 = blockIdx.x * MATMUL_BN;
    const int lda = A_KMAJOR ? k : m, ldb = B_KMAJOR ? k : n;
    const bool va = lda % 8 == 0 && (reinterpret_cast<unsigned long long>(a) & 15) == 0;
    const bool vb = ldb % 8 == 0 && (reinterpret_cast<unsigned long long>(b) & 15) == 0;

    float acc[2][4][4];
    SMELT_UNROLL
    for (int mi = 0; mi < 2; ++mi)
        SMELT_UNROLL
        for (int ni = 0; ni < 4; ++ni)
            SMELT_UNROLL
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

    const int ktiles = (k + MATMUL_BK - 1) / MATMUL_BK;
    SMELT_UNROLL
    for (int s = 0; s < MATMUL_STAGES - 1; ++s) {
        if (s < ktiles) {
            __nv_bfloat16* st = sm + s * 2 * MATMUL_TILE;
            matmul_load_tile<A_KMAJOR>(st, a, lda, m, k, m0, s * MATMUL_BK, va, tid);
            matmul_load_tile<B_KMAJOR>(st + MATMUL_TILE, b, ldb, n, k, n0, s * MATMUL_BK, vb,
                                       tid);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        // Tile kt has landed (at most STAGES-2 younger groups pending); the barrier makes it
        // visible to all and guarantees everyone finished computing on tile kt-1, whose stage
        // the prefetch below overwrites.
        cp_async_wait<MATMUL_STAGES - 2>();
        __syncthreads();
        const int nt = kt + MATMUL_STAGES - 1;
        if (nt < ktiles) {
            __nv_bfloat16* st = sm + (nt % MATMUL_STAGES) * 2 * MATMUL_TILE;
            matmul_load_tile<A_KMAJOR>(st, a, lda, m, k, m0, nt * MATMUL_BK, va, tid);
            matmul_load_tile<B_KMAJOR>(st + MATMUL_TILE, b, ldb, n, k, n0, nt * MATMUL_BK, vb,
                                       tid);
        }
        cp_async_commit();
        const __nv_bfloat16* st = sm + (kt % MATMUL_STAGES) * 2 * MATMUL_TILE;
        matmul_compute_stage<A_KMAJOR, B_KMAJOR>(st, st + MATMUL_TILE, acc, wm, wn, lane);
    }
    cp_async_wait<0>();

    // c[0], c[1]: row g, cols 2t, 2t+1; c[2], c[3]: row g+8 (matmul_epilogue.cuh).
    const int g = lane >> 2, t = lane & 3;
    const bool pairs = matmul_pairs_aligned(out, gelu_out, n);
    SMELT_UNROLL
    for (int mi = 0; mi < 2; ++mi)
        SMELT_UNROLL
        for (int ni = 0; ni < 4; ++ni) {
            const int row = m0 + wm * 32 + mi * 16 + g;
            const int col = n0 + wn * 32 + ni * 8 + 2 * t;
            SMELT_UNROLL
            for (int h = 0; h < 2; ++h)
                matmul_store_pair(out, gelu_out, bias, m, n, row + 8 * h, col,
                                  acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], pairs);
        }
}

// Both kernels: the body for the transpose combination (trans_a, trans_b).
template <typename OutT>
static __device__ __forceinline__ void matmul_bf16_dispatch(
    __nv_bfloat16* s, OutT* __restrict__ out, OutT* __restrict__ gelu_out,
    const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b,
    const float* __restrict__ bias, int m, int k, int n, int trans_a, int trans_b) {
    if (!trans_a) {
        if (trans_b)
            matmul_bf16_body<OutT, true, true>(s, out, gelu_out, a, b, bias, m, k, n);
        else
            matmul_bf16_body<OutT, true, false>(s, out, gelu_out, a, b, bias, m, k, n);
    } else {
        if (trans_b)
            matmul_bf16_body<OutT, false, true>(s, out, gelu_out, a, b, bias, m, k, n);
        else
            matmul_bf16_body<OutT, false, false>(s, out, gelu_out, a, b, bias, m, k, n);
    }
}

// out (m,n) = op(a) · op(b) (+ bias), and gelu_out (m,n) = gelu(out) unless gelu_out is null.
// bias may be null. Launch: grid (ceil(n/64), ceil(m/64)), block 128, MATMUL_SMEM_BYTES (30720)
// of dynamic shared memory. out and gelu_out overlap neither each other nor a, b, bias.
extern "C" __global__ void __launch_bounds__(MATMUL_THREADS, 4)
    matmul_bf16(float* __restrict__ out, float* __restrict__ gelu_out,
                const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b,
                const float* __restrict__ bias, int m, int k, int n, int trans_a, int trans_b) {
    __nv_bfloat16* s = reinterpret_cast<__nv_bfloat16*>(smem);
    matmul_bf16_dispatch<float>(s, out, gelu_out, a, b, bias, m, k, n, trans_a, trans_b);
}

// matmul_bf16 with bf16 outputs: v = op(a) · op(b) (+ bias) in f32, out = bf16(v), and
// gelu_out = bf16(gelu(v)) (of the unrounded v) unless gelu_out is null. Same launch geometry
// (matmul_bf16_launch), shared memory and aliasing rules as matmul_bf16.
extern "C" __global__ void __launch_bounds__(MATMUL_THREADS, 4)
    matmul_bf16_to_bf16(__nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ gelu_out,
                        const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b,
                        const float* __restrict__ bias, int m, int k, int n, int trans_a,
                        int trans_b) {
    __nv_bfloat16* s = reinterpret_cast<__nv_bfloat16*>(smem);
    matmul_bf16_dispatch<__nv_bfloat16>(s, out, gelu_out, a, b, bias, m, k, n, trans_a, trans_b);
}

// Test of the fragment layouts alone, one warp: d (16x8) = a (16x16) · b (16x8) + c (16x8),
// all row-major. Each lane builds its fragments from global memory by the PTX ISA layout (see
// tensor_core.cuh) and writes its D fragment back by the same layout.
extern "C" __global__ void __launch_bounds__(32)
    mma_bf16_selftest(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    auto bits = [](__nv_bfloat16 h) { return static_cast<unsigned>(__bfloat16_as_ushort(h)); };
    unsigned af[4], bf[2];
    float cf[4], df[4];
    SMELT_UNROLL
    for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
        af[r] = bits(a[row * 16 + col]) | (bits(a[row * 16 + col + 1]) << 16);
    }
    SMELT_UNROLL
    for (int r = 0; r < 2; ++r) {
        const int kk = 2 * t + 8 * r;
        bf[r] = bits(b[kk * 8 + g]) | (bits(b[(kk + 1) * 8 + g]) << 16);
    }
    SMELT_UNROLL
    for (int e = 0; e < 4; ++e) cf[e] = c[(g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)];
    mma_m16n8k16_bf16(df, af, bf, cf);
    SMELT_UNROLL
    for (int e = 0; e < 4; ++e) d[(g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)] = df[e];
}

// Test of ldmatrix alone, one warp: src is a 16x16 bf16 matrix (row-major), copied to shared
// memory; lane L gives the row address of matrix i = L/8 (rows (i&1)*8 + L%8, cols (i>>1)*8),
// and writes its registers: out[L*8 + i] from ldmatrix_x4, out[L*8 + 4 + i] from .trans.
extern "C" __global__ void __launch_bounds__(32)
    ldmatrix_selftest(unsigned* out, const __nv_bfloat16* src) {
    __nv_bfloat16* s = reinterpret_cast<__nv_bfloat16*>(smem);
    const int lane = threadIdx.x & 31;
    for (int e = lane; e < 256; e += 32) s[e] = src[e];
    __syncthreads();
    const int i = lane >> 3;
    const __nv_bfloat16* row = s + ((i & 1) * 8 + (lane & 7)) * 16 + (i >> 1) * 8;
    unsigned r[4], rt[4];
    ldmatrix_x4(r, row);
    ldmatrix_x4_trans(rt, row);
    SMELT_UNROLL
    for (int q = 0; q < 4; ++q) {
        out[lane * 8 + q] = r[q];
        out[lane * 8 + 4 + q] = rt[q];
    }
}
