#include "common.cuh"

// matmul_f32.cu: out (m,n) f32 = op(a) (m,k) · op(b) (k,n) (+ bias (n)), all f32, on the CUDA
// cores (SIMT, fmaf), for the device backend's f32 parity mode; optional GELU epilogue
// gelu_out (m,n) = gelu(out). The semantics of matmul_bf16 (matmul.cu) exactly:
//
// op(a) = a (m,k) row-major, or with trans_a a^T where a is stored (k,m) row-major;
// op(b) = b (k,n) row-major (Conv1D weight), or with trans_b b^T where b is stored (n,k)
// (tied LM head, backward).
//
// Tiling: a block of 256 threads (16 x 16) computes a 64x64 tile of out, each thread a 4x4
// sub-tile: rows ty*4..ty*4+3, cols tx*4..tx*4+3 (tx = tid % 16, ty = tid / 16), 16 f32
// accumulators, k in steps of MATMUL_F32_BK = 16, summed in order with fmaf.
// Shared memory (dynamic, MATMUL_F32_SMEM_BYTES = 8704): one A tile and one B tile, both stored
// "k-outer" [16][64 + 4] (k rows, m or n contiguous; the pad keeps rows 16-byte aligned), so
// the inner loop reads 4 consecutive rows of op(a) and 4 consecutive columns of op(b) as one
// float4 each. Every transpose combination is a choice of the global->shared mapping: an
// operand stored k-contiguous (a, b^T) is read with consecutive threads along k and transposed
// on the store; one stored k-outer (a^T, b) is copied row to row.
// Pipeline: the next k tile is loaded from global memory into registers (4 + 4 floats per
// thread) while the current one is computed from shared memory, then stored between two
// barriers (one shared buffer).
//
// Edges: elements outside op(a)/op(b) load as zero and contribute nothing; the epilogue writes
// only in-bounds elements, 4 columns as one float4 when n % 4 == 0 and out (and gelu_out, if
// any) are 16-byte aligned. k = 0 gives out = bias (or 0).

static constexpr int MATMUL_F32_BM = 64;
static constexpr int MATMUL_F32_BN = 64;
static constexpr int MATMUL_F32_BK = 16;
static constexpr int MATMUL_F32_THREADS = 256;
// Row stride (floats) of a shared tile [BK][64]: 16-byte aligned rows.
static constexpr int MATMUL_F32_LD = MATMUL_F32_BM + 4;
static constexpr int MATMUL_F32_TILE = MATMUL_F32_BK * MATMUL_F32_LD;
// Dynamic shared memory of one block (bytes): A and B tiles, 8704.
static constexpr int MATMUL_F32_SMEM_BYTES = 2 * MATMUL_F32_TILE * 4;
static_assert(MATMUL_F32_BM == MATMUL_F32_BN, "both operands share the tile code");
static_assert(MATMUL_F32_BM * MATMUL_F32_BK == 4 * MATMUL_F32_THREADS, "4 loads per thread");
static_assert((MATMUL_F32_BM / 4) * (MATMUL_F32_BN / 4) == MATMUL_F32_THREADS, "4x4 per thread");

// GPT-2's tanh GELU, x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the formula and
// constants of smelt_gelu in elementwise.cu and matmul_gelu in matmul.cu (its twins; keep them
// identical). A copy because each kernel file stands alone (see matmul.cu).
static __device__ __forceinline__ float matmul_f32_gelu(float x) {
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x * (1.0f / (1.0f + expf(-(u + u))));
}

// Element (kk, r) of a thread's i-th load (i < 4) of a 16 (k) x 64 (rows) operand tile.
// KMAJOR (stored g[r * ld + kk]): consecutive threads along k, 16 per row (64-byte runs);
// otherwise (g[kk * ld + r]): consecutive threads along the row, 64 per k (256-byte runs).
template <bool KMAJOR>
static __device__ __forceinline__ void matmul_f32_slot(int tid, int i, int& kk, int& r) {
    if (KMAJOR) {
        kk = tid % MATMUL_F32_BK;
        r = tid / MATMUL_F32_BK + i * (MATMUL_F32_THREADS / MATMUL_F32_BK);
    } else {
        r = tid % MATMUL_F32_BM;
        kk = tid / MATMUL_F32_BM + i * (MATMUL_F32_THREADS / MATMUL_F32_BM);
    }
}

// Reads this thread's 4 elements of the tile at (r0, k0) of one operand (`rows` x `k`, leading
// dimension ld) into v, zero outside the operand.
template <bool KMAJOR>
static __device__ __forceinline__ void matmul_f32_load(float v[4], const float* __restrict__ g,
                                                       int ld, int rows, int k, int r0, int k0,
                                                       int tid) {
    SMELT_UNROLL
    for (int i = 0; i < 4; ++i) {
        int kk, r;
        matmul_f32_slot<KMAJOR>(tid, i, kk, r);
        const int gr = r0 + r, gk = k0 + kk;
        const size_t at = KMAJOR ? static_cast<size_t>(gr) * ld + gk
                                 : static_cast<size_t>(gk) * ld + gr;
        v[i] = (gr < rows && gk < k) ? g[at] : 0.0f;
    }
}

// Writes v (from matmul_f32_load) into the k-outer shared tile s [BK][LD].
template <bool KMAJOR>
static __device__ __forceinline__ void matmul_f32_store(float* s, const float v[4], int tid) {
    SMELT_UNROLL
    for (int i = 0; i < 4; ++i) {
        int kk, r;
        matmul_f32_slot<KMAJOR>(tid, i, kk, r);
        s[kk * MATMUL_F32_LD + r] = v[i];
    }
}

template <bool A_KMAJOR, bool B_KMAJOR>
static __device__ __forceinline__ void matmul_f32_body(float* sm, float* __restrict__ out,
                                                       float* __restrict__ gelu_out,
                                                       const float* __restrict__ a,
                                                       const float* __restrict__ b,
                                                       const float* __restrict__ bias, int m,
                                                       int k, int n) {
    float* sa = sm;
    float* sb = sm + MATMUL_F32_TILE;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * MATMUL_F32_BM, n0 = blockIdx.x * MATMUL_F32_BN;
    const int lda = A_KMAJOR ? k : m, ldb = B_KMAJOR ? k : n;

    float acc[4][4];
    SMELT_UNROLL
    for (int i = 0; i < 4; ++i)
        SMELT_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    const int ktiles = (k + MATMUL_F32_BK - 1) / MATMUL_F32_BK;
    float ra[4], rb[4];
    if (ktiles > 0) {
        matmul_f32_load<A_KMAJOR>(ra, a, lda, m, k, m0, 0, tid);
        matmul_f32_load<B_KMAJOR>(rb, b, ldb, n, k, n0, 0, tid);
        matmul_f32_store<A_KMAJOR>(sa, ra, tid);
        matmul_f32_store<B_KMAJOR>(sb, rb, tid);
    }
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
        // Uniform over the block: every thread takes the same branches and barriers.
        const bool more = kt + 1 < ktiles;
        if (more) {
            const int k0 = (kt + 1) * MATMUL_F32_BK;
            matmul_f32_load<A_KMAJOR>(ra, a, lda, m, k, m0, k0, tid);
            matmul_f32_load<B_KMAJOR>(rb, b, ldb, n, k, n0, k0, tid);
        }
        SMELT_UNROLL
        for (int kk = 0; kk < MATMUL_F32_BK; ++kk) {
            const float4 av = *reinterpret_cast<const float4*>(sa + kk * MATMUL_F32_LD + ty * 4);
            const float4 bv = *reinterpret_cast<const float4*>(sb + kk * MATMUL_F32_LD + tx * 4);
            const float ar[4] = {av.x, av.y, av.z, av.w};
            const float br[4] = {bv.x, bv.y, bv.z, bv.w};
            SMELT_UNROLL
            for (int i = 0; i < 4; ++i)
                SMELT_UNROLL
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
        }
        // Everyone is done reading the tile before it is overwritten, and the new tile is
        // complete before anyone reads it.
        __syncthreads();
        if (more) {
            matmul_f32_store<A_KMAJOR>(sa, ra, tid);
            matmul_f32_store<B_KMAJOR>(sb, rb, tid);
        }
        __syncthreads();
    }

    const bool gelu = gelu_out != nullptr;
    const bool vec = n % 4 == 0 && (reinterpret_cast<unsigned long long>(out) & 15) == 0 &&
                     (reinterpret_cast<unsigned long long>(gelu_out) & 15) == 0;
    const int col = n0 + tx * 4;
    float bias_v[4];
    SMELT_UNROLL
    for (int j = 0; j < 4; ++j)
        bias_v[j] = (bias != nullptr && col + j < n) ? bias[col + j] : 0.0f;
    SMELT_UNROLL
    for (int i = 0; i < 4; ++i) {
        const int row = m0 + ty * 4 + i;
        if (row >= m) continue;
        const size_t at = static_cast<size_t>(row) * n + col;
        float v[4];
        SMELT_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = acc[i][j] + bias_v[j];
        if (vec && col + 3 < n) {
            *reinterpret_cast<float4*>(out + at) = make_float4(v[0], v[1], v[2], v[3]);
            if (gelu)
                *reinterpret_cast<float4*>(gelu_out + at) =
                    make_float4(matmul_f32_gelu(v[0]), matmul_f32_gelu(v[1]),
                                matmul_f32_gelu(v[2]), matmul_f32_gelu(v[3]));
        } else {
            SMELT_UNROLL
            for (int j = 0; j < 4; ++j) {
                if (col + j >= n) continue;
                out[at + j] = v[j];
                if (gelu) gelu_out[at + j] = matmul_f32_gelu(v[j]);
            }
        }
    }
}

// out (m,n) = op(a) · op(b) (+ bias), and gelu_out (m,n) = gelu(out) unless gelu_out is null.
// bias may be null. Launch: grid (ceil(n/64), ceil(m/64)), block 256, MATMUL_F32_SMEM_BYTES
// (8704) of dynamic shared memory. out and gelu_out overlap neither each other nor a, b, bias.
extern "C" __global__ void __launch_bounds__(MATMUL_F32_THREADS)
    matmul_f32(float* __restrict__ out, float* __restrict__ gelu_out,
               const float* __restrict__ a, const float* __restrict__ b,
               const float* __restrict__ bias, int m, int k, int n, int trans_a, int trans_b) {
    if (!trans_a) {
        if (trans_b)
            matmul_f32_body<true, true>(smem, out, gelu_out, a, b, bias, m, k, n);
        else
            matmul_f32_body<true, false>(smem, out, gelu_out, a, b, bias, m, k, n);
    } else {
        if (trans_b)
            matmul_f32_body<false, true>(smem, out, gelu_out, a, b, bias, m, k, n);
        else
            matmul_f32_body<false, false>(smem, out, gelu_out, a, b, bias, m, k, n);
    }
}
