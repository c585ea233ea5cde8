/* mma.cuh — the tensor-core building blocks of the kernels, each a small device function with
 * two implementations:
 *
 *   - inline PTX under nvcc for sm_80 and newer (runs on A100/H100): mma.sync m16n8k16 bf16
 *     with fp32 accumulation, ldmatrix (x4, and x4.trans), cp.async (16 bytes, zero-fill,
 *     commit/wait group);
 *   - a portable version everywhere else — under the project's CUDA emulator
 *     (MOIRE_CUDA_EMU, tests/cuda-emu/) and for older device targets — written from the PTX
 *     ISA's documented fragment layouts and built only from warp shuffles (__shfl_sync), so
 *     it runs in the emulator's 32-lane rendezvous and would give the same answer on a GPU.
 *
 * The emulator therefore checks the real kernels' data movement: a kernel that hands the
 * wrong lane's row address to ldmatrix, or a B tile in the wrong orientation, computes wrong
 * numbers here too. The layouts (NVIDIA, "Parallel Thread Execution ISA"; section numbers of
 * the 8.x/9.0 manual, they move between versions, the titles do not):
 *
 *   §9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type", .bf16
 *   (groupID = lane >> 2, threadID_in_group = lane % 4; two bf16 per .b32 register, the
 *   lower-numbered element in the low half):
 *     A (16×16, row-major), a0..a7 in 4 registers:
 *       row = groupID for a0,a1,a4,a5; groupID + 8 for a2,a3,a6,a7
 *       col = threadID_in_group·2 + (i & 1), + 8 for a4..a7
 *     B (16×8, "col": element (k, n)), b0..b3 in 2 registers:
 *       row k = threadID_in_group·2 + (i & 1), + 8 for b2,b3;  col n = groupID
 *     C/D (16×8 fp32), c0..c3:
 *       row = groupID for c0,c1; groupID + 8 for c2,c3;  col = threadID_in_group·2 + (i & 1)
 *
 *   §9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix", .m8n8 .b16: matrix j of .x4
 *   takes its 8 row addresses from lanes 8j..8j+7 (lane 8j+r: row r, 16 bytes, 16-byte
 *   aligned); destination register j of lane l holds row l/4, elements 2·(l%4) and
 *   2·(l%4)+1 of matrix j (Figure 104); with .trans the matrix is read column-major: the
 *   register holds elements (2·(l%4), l/4) and (2·(l%4)+1, l/4) of the stored matrix.
 *
 *   "Data Movement and Conversion Instructions: cp.async": cp.async.cg.shared.global [dst], [src], 16, src_size copies
 *   src_size bytes and zero-fills the rest of the 16; cp.async.commit_group closes a group,
 *   cp.async.wait_group N waits until at most N groups are pending. The portable version
 *   copies at once (commit and wait are then nothing to do); visibility to the other
 *   threads comes from the __syncthreads the kernel needs on the device anyway.
 *
 * mma_accum_to_a_bf16 (fp32 accumulators → the bf16 A fragment of the next mma, as flash
 * attention feeds P into P·V) needs no second version: the two layouts coincide lane by lane.
 *
 * All of mma_*, ldmatrix_* must be called by the 32 lanes of a warp together (.aligned), as
 * on the device. The unit test is mk_mma_fragment_test (moe_mma.cu), run by
 * tests/gpu/test_cuda_kernels.c against a plain matrix product.
 */
#ifndef MOIRE_KERNELS_MMA_CUH
#define MOIRE_KERNELS_MMA_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#if !defined(MOIRE_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MMA_PTX 1 /* the tensor-core instructions themselves */
#else
#define MMA_PTX 0 /* the shuffle implementation (emulator, older targets, host pass) */
#endif

#define MMA_FULL_MASK 0xffffffffu

/* Two floats → one .b32 of two bf16 (round to nearest even; `lo` in the low half). */
static __device__ __forceinline__ uint32_t mma_pack_bf16(float lo, float hi)
{
    uint32_t a = __float_as_uint(lo), b = __float_as_uint(hi);
    /* NaN stays a quiet NaN (the hardware cvt does the same); otherwise RNE */
    a = (a & 0x7fffffffu) > 0x7f800000u ? (a | 0x00400000u) : a + 0x7fffu + ((a >> 16) & 1u);
    b = (b & 0x7fffffffu) > 0x7f800000u ? (b | 0x00400000u) : b + 0x7fffu + ((b >> 16) & 1u);
    return (a >> 16) | (b & 0xffff0000u);
}

#if !MMA_PTX
static __device__ __forceinline__ float mma_bf16_lo(uint32_t r) { return __uint_as_float(r << 16); }
static __device__ __forceinline__ float mma_bf16_hi(uint32_t r)
{
    return __uint_as_float(r & 0xffff0000u);
}
static __device__ __forceinline__ unsigned mma_lane_id()
{
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u;
}
#endif

/* d[0..3] += A(16×16) · B(16×8), the fragments as in the file comment. */
static __device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4],
                                                      const uint32_t b[2])
{
#if MMA_PTX
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    const unsigned lane = mma_lane_id(), group = lane >> 2, tig = lane & 3;
    /* Rows `group` and `group + 8` of A: lanes 4·group + p hold columns 2p, 2p+1 (a0a1 /
     * a2a3) and 2p+8, 2p+9 (a4a5 / a6a7). */
    float a_lo[16], a_hi[16]; /* A[group][k], A[group + 8][k] */
    for (int p = 0; p < 4; p++) {
        const int src = (int)(4 * group) + p;
        const uint32_t r0 = __shfl_sync(MMA_FULL_MASK, a[0], src);
        const uint32_t r1 = __shfl_sync(MMA_FULL_MASK, a[1], src);
        const uint32_t r2 = __shfl_sync(MMA_FULL_MASK, a[2], src);
        const uint32_t r3 = __shfl_sync(MMA_FULL_MASK, a[3], src);
        a_lo[2 * p] = mma_bf16_lo(r0), a_lo[2 * p + 1] = mma_bf16_hi(r0);
        a_hi[2 * p] = mma_bf16_lo(r1), a_hi[2 * p + 1] = mma_bf16_hi(r1);
        a_lo[2 * p + 8] = mma_bf16_lo(r2), a_lo[2 * p + 9] = mma_bf16_hi(r2);
        a_hi[2 * p + 8] = mma_bf16_lo(r3), a_hi[2 * p + 9] = mma_bf16_hi(r3);
    }
    /* Columns n = 2·tig and 2·tig + 1 of B: lanes 4n + p hold rows k = 2p, 2p+1 (b0b1) and
     * 2p+8, 2p+9 (b2b3). */
    float bcol[2][16];
    for (int j = 0; j < 2; j++)
        for (int p = 0; p < 4; p++) {
            const int src = (int)(4 * (2 * tig + j)) + p;
            const uint32_t r0 = __shfl_sync(MMA_FULL_MASK, b[0], src);
            const uint32_t r1 = __shfl_sync(MMA_FULL_MASK, b[1], src);
            bcol[j][2 * p] = mma_bf16_lo(r0), bcol[j][2 * p + 1] = mma_bf16_hi(r0);
            bcol[j][2 * p + 8] = mma_bf16_lo(r1), bcol[j][2 * p + 9] = mma_bf16_hi(r1);
        }
    /* c0, c1: row group, cols 2·tig, 2·tig+1; c2, c3: row group + 8. fp32 accumulation
     * (the products of two bf16 are exact in fp32). */
    for (int i = 0; i < 4; i++) {
        const float *arow = i < 2 ? a_lo : a_hi;
        const float *bc = bcol[i & 1];
        float s = d[i];
        for (int k = 0; k < 16; k++)
            s += arow[k] * bc[k];
        d[i] = s;
    }
#endif
}

/* The fp32 accumulators of two adjacent 16×8 tiles (c_lo: columns 0-7, c_hi: 8-15 of a 16×16
 * block) → the bf16 A fragment of that block for the next mma (round to nearest even). The
 * C layout puts (row group, cols 2·tig, 2·tig+1) in c0,c1 and row group + 8 in c2,c3; the A
 * layout wants exactly those pairs in a0a1 / a2a3 (columns 0-7) and a4a5 / a6a7 (8-15), so
 * no lane exchanges anything: the same code is right on the device and in the emulator.
 * This is how attention feeds P = softmax(S) into P·V without shared memory. */
static __device__ __forceinline__ void mma_accum_to_a_bf16(uint32_t a[4], const float c_lo[4],
                                                           const float c_hi[4])
{
    a[0] = mma_pack_bf16(c_lo[0], c_lo[1]);
    a[1] = mma_pack_bf16(c_lo[2], c_lo[3]);
    a[2] = mma_pack_bf16(c_hi[0], c_hi[1]);
    a[3] = mma_pack_bf16(c_hi[2], c_hi[3]);
}

/* Four 8×8 bf16 matrices from shared memory: lane l passes the address of row l % 8 of
 * matrix l / 8 (16-byte aligned); r[j] = this lane's fragment of matrix j. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row_address)
{
#if MMA_PTX
    const unsigned s = (unsigned)__cvta_generic_to_shared(row_address);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#else
    const unsigned lane = mma_lane_id();
    for (int j = 0; j < 4; j++) {
        /* row lane/4 of matrix j, whose address lane 8j + lane/4 holds */
        const char *row = (const char *)__shfl_sync(
            MMA_FULL_MASK, (unsigned long long)row_address, (int)(8 * j + (lane >> 2)));
        uint32_t v;
        memcpy(&v, row + 4 * (lane & 3), 4);
        r[j] = v;
    }
#endif
}

/* The same, each matrix transposed (.trans): r[j] holds elements (2·(l%4), l/4) and
 * (2·(l%4)+1, l/4) of stored matrix j. Turns a row-major [k][n] tile into B fragments. */
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *row_address)
{
#if MMA_PTX
    const unsigned s = (unsigned)__cvta_generic_to_shared(row_address);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#else
    const unsigned lane = mma_lane_id();
    for (int j = 0; j < 4; j++) {
        uint16_t h[2];
        for (int e = 0; e < 2; e++) {
            const char *row = (const char *)__shfl_sync(
                MMA_FULL_MASK, (unsigned long long)row_address, (int)(8 * j + 2 * (lane & 3) + e));
            memcpy(&h[e], row + 2 * (lane >> 2), 2);
        }
        r[j] = (uint32_t)h[0] | ((uint32_t)h[1] << 16);
    }
#endif
}

/* 16 bytes global → shared, asynchronously; when !valid, the 16 bytes are zeroed and `src`
 * is not read (it must still be a valid address on the device: pass the tensor's base).
 * Both addresses 16-byte aligned. */
static __device__ __forceinline__ void cp_async_16(void *shared_dst, const void *src, bool valid)
{
#if MMA_PTX
    const unsigned s = (unsigned)__cvta_generic_to_shared(shared_dst);
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(src_bytes));
#else
    if (valid)
        memcpy(shared_dst, src, 16);
    else
        memset(shared_dst, 0, 16);
#endif
}

/* 16 bytes (a uint4) into shared memory at a 16-byte aligned address. */
static __device__ __forceinline__ void st_shared_16(void *dst, uint4 v)
{
#if defined(MOIRE_CUDA_EMU)
    memcpy(dst, &v, 16); /* the bytes of a uint16_t array: no type punning for g++ */
#else
    *(uint4 *)dst = v;
#endif
}

/* Closes the group of the cp_async_16 issued since the last commit. */
static __device__ __forceinline__ void cp_async_commit()
{
#if MMA_PTX
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Waits until at most `pending` of this thread's committed groups are still in flight
 * (other threads see the data after the __syncthreads that must follow). */
template <int pending> static __device__ __forceinline__ void cp_async_wait()
{
#if MMA_PTX
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

#endif /* MOIRE_KERNELS_MMA_CUH */
