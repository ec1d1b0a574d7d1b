// tensor_core.cuh: warp-level tensor-core instructions (mma.sync, ldmatrix) and cp.async, each
// with two implementations: inline PTX under nvcc, and under SMELT_EMULATE a CPU emulation that
// follows the PTX ISA's fragment layouts exactly, built from warp shuffles, so a kernel whose
// fragment indexing is wrong fails in `cargo test` as well as on the GPU.
//
// Layouts: PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" (.bf16 A/B,
// .f32 C/D) and "Warp-level matrix load instruction: ldmatrix" (written from the ISA text, and
// consistent with CUTLASS/CuTe's SM80_16x8x16_F32BF16BF16F32_TN atom layouts). With
// groupID = lane >> 2 and tid = lane % 4 (threadID_in_group):
//   A (16x16, .row), four .b32 registers of two bf16 each (lower half = lower column):
//     a[0] = (row groupID,   cols 2*tid + {0,1})      a[1] = (row groupID+8, cols 2*tid + {0,1})
//     a[2] = (row groupID,   cols 2*tid + 8 + {0,1})  a[3] = (row groupID+8, cols 2*tid + 8 + {0,1})
//   B (16x8, .col), two .b32 registers (lower half = lower row k):
//     b[0] = (rows 2*tid + {0,1},     col groupID)    b[1] = (rows 2*tid + 8 + {0,1}, col groupID)
//   C, D (16x8, f32): c[0], c[1] = (row groupID, cols 2*tid + {0,1});
//                     c[2], c[3] = (row groupID+8, cols 2*tid + {0,1}).
//   ldmatrix .m8n8.x4 .b16: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i (each
//     16 contiguous, 16-byte aligned bytes of shared memory); every lane receives in r[i] the
//     two elements (row lane/4, cols 2*(lane%4) + {0,1}) of matrix i. With .trans, it receives
//     the transposed matrix's: (rows 2*(lane%4) + {0,1}, col lane/4) of the stored matrix.
// All 32 lanes of the warp must call each of these (they are .sync.aligned; in emulation they
// are warp rendezvous).
//
// cp.async: cp_async_16 copies 16 bytes (both addresses 16-byte aligned) global -> shared,
// asynchronously; cp_async_commit() closes the calling thread's group of copies,
// cp_async_wait<N>() waits until at most N of its groups are pending. The emulation completes
// copies late, as the GPU may (emu/cuda_emu.h, "cp.async"): the destination holds 0xff and is
// marked pending until a wait of the issuing thread covers the copy, and the sanitizer reports
// any access to it before then; the landing is a write by the waiting thread, so other threads
// read it only after a __syncthreads() (racecheck). ldmatrix reads shared memory at the call.

#pragma once

#if defined(SMELT_EMULATE)

// Two bf16 bit patterns packed as PTX packs them: lo in bits 0..15, hi in bits 16..31.
static inline float tc_emu_bf16_lo(unsigned r) { return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(r & 0xffffu))); }
static inline float tc_emu_bf16_hi(unsigned r) { return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(r >> 16))); }

static inline unsigned tc_emu_load_b16(const void* p) {
    unsigned short v;
    std::memcpy(&v, p, 2);
    return v;
}

static inline unsigned tc_emu_lane() { return block_thread_rank() % 32; }

// D = A * B + C, m16n8k16, bf16 inputs, f32 accumulation (d may alias c).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4],
                                                  const unsigned b[2], const float c[4]) {
    const unsigned lane = tc_emu_lane();
    const int g = lane >> 2, t = lane & 3;
    // Rows g and g+8 of A: element (row, col) lives in lane (row%8)*4 + (col%8)/2, register
    // (row >= 8) + 2*(col >= 8), half col%2. Every lane shuffles the same register in turn.
    float arow[2][16];
    for (int reg = 0; reg < 4; ++reg)
        for (int src_t = 0; src_t < 4; ++src_t) {
            const unsigned v = __shfl_sync(0xffffffffu, a[reg], g * 4 + src_t);
            const int half_row = reg & 1, col = (reg >> 1) * 8 + src_t * 2;
            arow[half_row][col] = tc_emu_bf16_lo(v);
            arow[half_row][col + 1] = tc_emu_bf16_hi(v);
        }
    // Columns 2t and 2t+1 of B: element (k, col) lives in lane col*4 + (k%8)/2, register k >= 8,
    // half k%2.
    float bcol[2][16];
    for (int reg = 0; reg < 2; ++reg)
        for (int j = 0; j < 2; ++j)
            for (int src_t = 0; src_t < 4; ++src_t) {
                const unsigned v = __shfl_sync(0xffffffffu, b[reg], (2 * t + j) * 4 + src_t);
                const int k = reg * 8 + src_t * 2;
                bcol[j][k] = tc_emu_bf16_lo(v);
                bcol[j][k + 1] = tc_emu_bf16_hi(v);
            }
    float r[4];
    for (int i = 0; i < 4; ++i) {
        // c[i]: row g + 8*(i >= 2), col 2t + i%2. Products of bf16 are exact in f32.
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += arow[i >> 1][k] * bcol[i & 1][k];
        r[i] = acc;
    }
    for (int i = 0; i < 4; ++i) d[i] = r[i];
}

// Four 8x8 b16 matrices from shared memory; row_addr: this lane's row (see the top).
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row_addr) {
    const unsigned lane = tc_emu_lane();
    const unsigned long long mine = reinterpret_cast<unsigned long long>(row_addr);
    for (int i = 0; i < 4; ++i) {
        const unsigned long long row =
            __shfl_sync(0xffffffffu, mine, static_cast<int>(8 * i + lane / 4));
        const unsigned char* p = reinterpret_cast<const unsigned char*>(row) + 4 * (lane % 4);
        r[i] = tc_emu_load_b16(p) | (tc_emu_load_b16(p + 2) << 16);
    }
}

// As ldmatrix_x4, each matrix transposed (.trans).
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row_addr) {
    const unsigned lane = tc_emu_lane();
    const unsigned long long mine = reinterpret_cast<unsigned long long>(row_addr);
    for (int i = 0; i < 4; ++i) {
        unsigned v[2];
        for (int j = 0; j < 2; ++j) {
            const unsigned long long row =
                __shfl_sync(0xffffffffu, mine, static_cast<int>(8 * i + 2 * (lane % 4) + j));
            v[j] = tc_emu_load_b16(reinterpret_cast<const unsigned char*>(row) + 2 * (lane / 4));
        }
        r[i] = v[0] | (v[1] << 16);
    }
}

__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
    smelt_emu::cp_async_16(smem_dst, gmem_src);
}
__device__ __forceinline__ void cp_async_commit() { smelt_emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    smelt_emu::cp_async_wait(N);
}

#else  // nvcc

static __device__ __forceinline__ unsigned tc_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4],
                                                  const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row_addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tc_smem_addr(row_addr)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row_addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tc_smem_addr(row_addr)));
}

__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(tc_smem_addr(smem_dst)),
                 "l"(gmem_src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#endif
