/* moe_mma.cu — the routed-expert GEMMs of moe.cu on tensor cores (bf16 weights).
 *
 * Same job and same dispatch as mk_moe_gate_up / mk_moe_down in moe.cu (offsets from
 * mk_moe_route, the sorted-token gather fused into the A load, a grid sized for the worst
 * case whose surplus blocks exit at once), with the inner product on mma.sync m16n8k16
 * bf16 → fp32 through the helpers of mma.cuh (inline PTX on sm_80+, a shuffle version from
 * the PTX ISA's fragment layouts under the CUDA emulator).
 *
 * Tiles. A block computes 128 rows (sorted (token, expert) pairs of one expert) × 128 output
 * columns; for gate‖up the 128 columns are taken from both halves (128 gate rows and the
 * same 128 up rows of W), so SiLU(g)·u is formed in registers in the epilogue. At the XL CFG
 * batch (2 × 256 tokens, top-2, 8 experts: ≈ 128 pairs per expert) one M-tile covers an
 * expert, so each weight byte is read from HBM once per step (a skewed expert with more
 * than 128 rows re-reads its tile, from L2). The A rows are read once per 128-column N-tile
 * (they were read once per 64 columns: for gate‖up at XL that was as many bytes as the
 * weights again; docs/PERFORMANCE.md). The M-tiles are 128 rows while mk_moe_route's
 * tile_offsets count 64-row tiles: each warp finds the block's (expert, 128-row tile) from
 * offsets with a scan of its own (no shared memory, no barrier); the grid is bounded by
 * ⌊(max_tiles + E) / 2⌋ (Σ⌈c/128⌉ ≤ Σ(⌈c/64⌉ + 1)/2).
 *
 * 8 warps as 4 (M) × 2 (N), each 32 rows × 64 columns (× 2 for gate and up): per 16-deep
 * k step a warp issues 2 ldmatrix.x4 for A, 4 (8 with up) for B and 16 (32) mma. The
 * accumulators are 64 (128 with up) fp32 registers a thread.
 *
 * Shared memory: two stages of A (128 × 32 bf16, 8 KB each) and W (128 or 256 × 32 bf16,
 * 8 or 16 KB each): 48 KB for gate‖up, exactly the static limit, which is why the tile
 * lookup and the row indices live in registers (shuffles) rather than in shared memory.
 *
 * Pipeline, K in steps of 32, two shared-memory stages: the weights go global → shared by
 * cp.async (16-byte chunks, zero-filled past N and K); the activations are fp32 (the
 * engine's), loaded into registers one step ahead, converted to bf16 (RNE) and stored after
 * the current step's mma, so both loads overlap the tensor-core work.
 *
 * Shared layout: rows of 32 bf16 (64 bytes, four 16-byte chunks), chunk c of row r stored
 * at chunk c ^ ((r >> 1) & 3). The eight rows an ldmatrix phase reads (same logical chunk,
 * rows 8i..8i+7) then land in eight different 16-byte bank groups, and so do the eight
 * 16-byte stores of a quarter-warp (rows r, r+1 × chunks 0..3): no bank conflicts, no
 * padding.
 *
 * Shapes: D and F multiples of 8 (16-byte rows for cp.async and the float4 A loads; tails
 * of N and K inside a tile are masked, so F need not be a multiple of 128 nor K of 32);
 * mk_moe_mma_supported says so. The result differs from the SIMT kernel only by the bf16
 * rounding of the activations (the weights are bf16 in both) and the summation order.
 */
#include "kernels.h"
#include "launch.h"
#include "mma.cuh"

#include <cuda_runtime.h>

#define MMA_BM 128     /* rows (sorted pairs) per block                        */
#define MMA_BN 128     /* output columns per block (gate‖up: 128 of each half) */
#define MMA_BK 32      /* k per pipeline stage                                 */
#define MMA_THREADS 256
#define MMA_WARP_M 32 /* each warp: 32 rows × 64 columns                        */
#define MMA_WARP_N 64
#define MMA_WARP_NJ (MMA_WARP_N / 8) /* n8 mma tiles per warp                        */

/* bf16 element offset of (row, 8-element chunk) in a [rows][32] stage, swizzled (above). */
static __device__ __forceinline__ int stage_offset(int row, int chunk)
{
    return row * MMA_BK + ((chunk ^ ((row >> 1) & 3)) << 3);
}

/* Which rows this block owns: expert *e, rows [*row0, *row_end) of the sorted order (at most
 * MMA_BM); false when the block is past the last tile. Every warp computes it on its own
 * (the same answer, from the same offsets), so no shared memory and no barrier are needed;
 * the result is uniform over the block, so a false return exits every thread. */
static __device__ bool find_mma_tile(const int32_t *offsets, int dense_rows, int E, int tile,
                                     int *e, int *row0, int *row_end)
{
    const int lane = threadIdx.x & 31;
    if (!offsets) {
        *e = 0;
        *row0 = tile * MMA_BM;
        *row_end = min(dense_rows, (tile + 1) * MMA_BM);
        return *row0 < dense_rows;
    }
    int carry = 0; /* 128-row tiles of the experts before this chunk of 32 */
    for (int base = 0; base < E; base += 32) {
        const int x = base + lane;
        const int first = x < E ? offsets[x] : 0;
        const int count = x < E ? offsets[x + 1] - first : 0;
        const int n = (count + MMA_BM - 1) / MMA_BM;
        int incl = n; /* inclusive scan of n over the lanes */
        for (int d = 1; d < 32; d <<= 1) {
            const int v = __shfl_up_sync(MMA_FULL_MASK, incl, d);
            if (lane >= d)
                incl += v;
        }
        const int excl = carry + incl - n;
        const bool hit = x < E && tile >= excl && tile < carry + incl;
        const unsigned who = __ballot_sync(MMA_FULL_MASK, hit);
        if (who) { /* exactly one lane holds the tile: broadcast its expert and rows */
            const int src = __ffs(who) - 1;
            const int r0 = first + (tile - excl) * MMA_BM;
            *e = __shfl_sync(MMA_FULL_MASK, x, src);
            *row0 = __shfl_sync(MMA_FULL_MASK, r0, src);
            *row_end = __shfl_sync(MMA_FULL_MASK, min(first + count, r0 + MMA_BM), src);
            return true;
        }
        carry += __shfl_sync(MMA_FULL_MASK, incl, 31);
    }
    return false;
}

/* out[r, n] for the block's rows r and columns n0 ≤ n < n0 + MMA_BN:
 *   DUAL:  SiLU(A[src(r)] · W[e, n]) · (A[src(r)] · W[e, N + n])   (W[e] is [2N, K])
 *   else:  A[src(r)] · W[e, n]                                       (W[e] is [N, K])
 * A is [*, K], fp32 (rounded to bf16 on the way to shared memory) or, A_BF16, bf16 (copied
 * by cp.async like W); out fp32 or, OUT_BF16, bf16 (RNE). W bf16; src(r) = sorted_token[r]
 * (or r). K and N multiples of 8. */
template <bool DUAL, bool A_BF16, bool OUT_BF16>
static __global__ void __launch_bounds__(MMA_THREADS)
moe_mma_kernel(void *out_, const void *A_, const uint16_t *W, const int32_t *offsets,
               const int32_t *sorted_token, int dense_rows, int E, int K, int N)
{
    const float *A = (const float *)A_;
    const uint16_t *A16 = (const uint16_t *)A_;
    constexpr int B_ROWS = DUAL ? 2 * MMA_BN : MMA_BN;
    __shared__ __align__(16) uint16_t As[2][MMA_BM * MMA_BK];
    __shared__ __align__(16) uint16_t Bs[2][B_ROWS * MMA_BK];

    int e, row0, row_end;
    if (!find_mma_tile(offsets, dense_rows, E, blockIdx.y, &e, &row0, &row_end))
        return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp & 3, warp_n = warp >> 2;
    const int n0 = blockIdx.x * MMA_BN;
    const int rows = row_end - row0;
    const uint16_t *We = W + (size_t)e * (DUAL ? 2 : 1) * N * K;

    /* This thread's A chunks: rows a_row and a_row + 64, 8 floats at chunk a_chunk. The
     * four threads of a row are adjacent lanes: the first reads the row's source index
     * (sorted_token, once per row per block) and hands it to the other three. */
    const int a_row = tid >> 2, a_chunk = tid & 3;
    int a_src[2];
    for (int h = 0; h < 2; h++) {
        const int r = a_row + 64 * h;
        int src = -1;
        if (a_chunk == 0 && r < rows)
            src = sorted_token ? sorted_token[row0 + r] : row0 + r;
        a_src[h] = __shfl_sync(MMA_FULL_MASK, src, lane & ~3);
    }
    float4 a_regs[2][2];

    auto load_a = [&](int k0) { /* global fp32 → registers */
        const int k = k0 + a_chunk * 8;
        for (int h = 0; h < (A_BF16 ? 0 : 2); h++) { /* bf16 A: cp.async in load_b */
            if (a_src[h] >= 0 && k < K) {
                const float4 *p = (const float4 *)(A + (size_t)a_src[h] * K + k);
                a_regs[h][0] = p[0];
                a_regs[h][1] = p[1];
            } else {
                a_regs[h][0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                a_regs[h][1] = a_regs[h][0];
            }
        }
    };
    auto store_a = [&](int stage) { /* registers → bf16 shared */
        for (int h = 0; h < (A_BF16 ? 0 : 2); h++) {
            const float4 x = a_regs[h][0], y = a_regs[h][1];
            uint4 v;
            v.x = mma_pack_bf16(x.x, x.y);
            v.y = mma_pack_bf16(x.z, x.w);
            v.z = mma_pack_bf16(y.x, y.y);
            v.w = mma_pack_bf16(y.z, y.w);
            st_shared_16(&As[stage][stage_offset(a_row + 64 * h, a_chunk)], v);
        }
    };
    auto load_b = [&](int stage, int k0) { /* cp.async, zero-filled past N and K */
        if constexpr (A_BF16) /* the gathered bf16 A rows too, zero-filled past the rows and K */
            for (int h = 0; h < 2; h++) {
                const int k = k0 + a_chunk * 8;
                const bool ok = a_src[h] >= 0 && k < K;
                cp_async_16(&As[stage][stage_offset(a_row + 64 * h, a_chunk)],
                            ok ? (const void *)(A16 + (size_t)a_src[h] * K + k) : A_, ok);
            }
        for (int idx = tid; idx < B_ROWS * 4; idx += MMA_THREADS) {
            const int r = idx >> 2, chunk = idx & 3;
            const int n = n0 + (r % MMA_BN);
            const int w_row = DUAL && r >= MMA_BN ? N + n : n;
            const int k = k0 + chunk * 8;
            const bool ok = n < N && k < K;
            cp_async_16(&Bs[stage][stage_offset(r, chunk)],
                        ok ? (const void *)(We + (size_t)w_row * K + k) : (const void *)We, ok);
        }
        cp_async_commit();
    };

    float acc[2][MMA_WARP_NJ][4] = {};                          /* [m16][n8][c0..c3] */
    float acc_up[DUAL ? 2 : 1][DUAL ? MMA_WARP_NJ : 1][4] = {}; /* the up half (DUAL) */

    const int k_steps = (K + MMA_BK - 1) / MMA_BK;
    load_b(0, 0);
    load_a(0);
    store_a(0);
    for (int step = 0; step < k_steps; step++) {
        const int stage = step & 1;
        const bool more = step + 1 < k_steps;
        if (more) { /* next stage: its previous readers finished before the last barrier */
            load_b(stage ^ 1, (step + 1) * MMA_BK);
            load_a((step + 1) * MMA_BK);
            cp_async_wait<1>(); /* this step's weights have landed (the next may be in flight) */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        const uint16_t *as = As[stage], *bs = Bs[stage];
#pragma unroll
        for (int ks = 0; ks < MMA_BK / 16; ks++) {
            uint32_t a_frag[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                /* lanes 0-15: rows 0-15 at k 0-7; lanes 16-31: the same rows at k 8-15 */
                const int r = warp_m * MMA_WARP_M + mi * 16 + (lane & 15);
                ldmatrix_x4(a_frag[mi], &as[stage_offset(r, ks * 2 + (lane >> 4))]);
            }
#pragma unroll
            for (int half = 0; half < (DUAL ? 2 : 1); half++) {
                uint32_t b_frag[MMA_WARP_NJ][2];
#pragma unroll
                for (int q = 0; q < MMA_WARP_NJ / 2; q++) {
                    /* matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) */
                    const int r = half * MMA_BN + warp_n * MMA_WARP_N + q * 16 +
                                  ((lane >> 4) << 3) + (lane & 7);
                    uint32_t m[4];
                    ldmatrix_x4(m, &bs[stage_offset(r, ks * 2 + ((lane >> 3) & 1))]);
                    b_frag[2 * q][0] = m[0], b_frag[2 * q][1] = m[1];
                    b_frag[2 * q + 1][0] = m[2], b_frag[2 * q + 1][1] = m[3];
                }
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int nj = 0; nj < MMA_WARP_NJ; nj++) {
                        if (half == 0)
                            mma_bf16_16816(acc[mi][nj], a_frag[mi], b_frag[nj]);
                        else
                            mma_bf16_16816(acc_up[DUAL ? mi : 0][DUAL ? nj : 0], a_frag[mi],
                                           b_frag[nj]);
                    }
            }
        }
        if (more)
            store_a(stage ^ 1); /* read by nobody since the barrier before the last step */
        __syncthreads();
    }

    /* epilogue: c0,c1 at (group, 2·tig + {0,1}), c2,c3 at (group + 8, …) of each 16×8 tile */
    const int group = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int nj = 0; nj < MMA_WARP_NJ; nj++) {
            const int n = n0 + warp_n * MMA_WARP_N + nj * 8 + 2 * tig;
            if (n >= N)
                continue;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = warp_m * MMA_WARP_M + mi * 16 + group + 8 * h;
                if (r >= rows)
                    continue;
                float v0 = acc[mi][nj][2 * h], v1 = acc[mi][nj][2 * h + 1];
                if (DUAL) {
                    const float *u = acc_up[DUAL ? mi : 0][DUAL ? nj : 0];
                    v0 = v0 / (1.0f + expf(-v0)) * u[2 * h];
                    v1 = v1 / (1.0f + expf(-v1)) * u[2 * h + 1];
                }
                const size_t at = (size_t)(row0 + r) * N + n;
                if constexpr (OUT_BF16)
                    *(uint32_t *)((uint16_t *)out_ + at) = mma_pack_bf16(v0, v1);
                else
                    *(float2 *)((float *)out_ + at) = make_float2(v0, v1);
            }
        }
}

template <bool DUAL, bool A_BF16, bool OUT_BF16>
static cudaError_t launch_mma(void *out, const void *A, const void *W,
                              const int32_t *offsets, const int32_t *sorted_token,
                              int dense_rows, int E, int K, int N, int max_tiles,
                              cudaStream_t stream)
{
    if (!mk_moe_mma_supported(K, N) || E <= 0)
        return cudaErrorInvalidValue;
    int grid_y;
    if (!offsets) {
        if (E != 1)
            return cudaErrorInvalidValue;
        grid_y = (dense_rows + MMA_BM - 1) / MMA_BM;
    } else {
        /* max_tiles counts 64-row tiles; 128-row tiles are at most ⌊(max_tiles + E)/2⌋ */
        grid_y = max_tiles < (max_tiles + E) / 2 ? max_tiles : (max_tiles + E) / 2;
    }
    if (grid_y <= 0)
        return cudaSuccess;
    const dim3 grid((unsigned)((N + MMA_BN - 1) / MMA_BN), (unsigned)grid_y);
    MK_LAUNCH(grid, MMA_THREADS, 0, stream, moe_mma_kernel<DUAL, A_BF16, OUT_BF16>)(
        out, A, (const uint16_t *)W, offsets, sorted_token, dense_rows, E, K, N);
    return cudaGetLastError();
}

extern "C" int mk_moe_mma_supported(int D, int F)
{
    return D > 0 && F > 0 && D % 8 == 0 && F % 8 == 0;
}

extern "C" cudaError_t mk_moe_gate_up_mma(float *act, const float *h, const void *w_gate_up,
                                          const int32_t *offsets, const int32_t *tile_offsets,
                                          const int32_t *sorted_token, int dense_rows, int E,
                                          int D, int F, int max_tiles, cudaStream_t stream)
{
    (void)tile_offsets; /* 64-row tiles; the 128-row tiles come from offsets */
    return launch_mma<true, false, false>(act, h, w_gate_up, offsets, sorted_token, dense_rows,
                                          E, D, F, max_tiles, stream);
}

extern "C" cudaError_t mk_moe_gate_up_mma_bf16(uint16_t *act, const float *h,
                                               const void *w_gate_up, const int32_t *offsets,
                                               const int32_t *tile_offsets,
                                               const int32_t *sorted_token, int dense_rows,
                                               int E, int D, int F, int max_tiles,
                                               cudaStream_t stream)
{
    (void)tile_offsets;
    return launch_mma<true, false, true>(act, h, w_gate_up, offsets, sorted_token, dense_rows,
                                         E, D, F, max_tiles, stream);
}

extern "C" cudaError_t mk_moe_down_mma(float *out, const float *act, const void *w_down,
                                       const int32_t *offsets, const int32_t *tile_offsets,
                                       int dense_rows, int E, int D, int F, int max_tiles,
                                       cudaStream_t stream)
{
    (void)tile_offsets;
    return launch_mma<false, false, false>(out, act, w_down, offsets, NULL, dense_rows, E, F, D,
                                           max_tiles, stream);
}

extern "C" cudaError_t mk_moe_down_mma_bf16(float *out, const uint16_t *act, const void *w_down,
                                            const int32_t *offsets, const int32_t *tile_offsets,
                                            int dense_rows, int E, int D, int F, int max_tiles,
                                            cudaStream_t stream)
{
    (void)tile_offsets;
    return launch_mma<false, true, false>(out, act, w_down, offsets, NULL, dense_rows, E, F, D,
                                          max_tiles, stream);
}

/* ---- the fragment test: one warp, one 16×16×16 product, four ways -------------------- */

/* d[16×16] = a[16×16] · b + c, b given as bt[n][k] (= W, "col") and as b[k][n]:
 *   mode 0: fragments read straight from global memory with the PTX ISA's formulas (tests
 *           mma alone); 1: ldmatrix.x4 of a and of bt; 2: ldmatrix.x4 of a, ldmatrix.x4.trans
 *           of b (row-major k×n); 3: as 2, then the product (fp32 accumulators, c not
 *           added) becomes the A fragment of a second product with b (mma_accum_to_a_bf16):
 *           d = bf16(a·B)·B + c. Both 8-column halves of d: two mma per mode (four in 3). */
static __global__ void mma_fragment_test_kernel(float *d, const uint16_t *a, const uint16_t *bt,
                                                const uint16_t *b, const float *c, int mode)
{
    __shared__ __align__(16) uint16_t a_s[16 * 16], bt_s[16 * 16], b_s[16 * 16];
    const int lane = threadIdx.x, group = lane >> 2, tig = lane & 3;
    for (int i = lane; i < 256; i += 32)
        a_s[i] = a[i], bt_s[i] = bt[i], b_s[i] = b[i];
    __syncwarp();

    uint32_t af[4], bf[2][2];
    if (mode == 0) {
        for (int i = 0; i < 8; i += 2) { /* a_i, a_{i+1} share a register */
            const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
            const int col = tig * 2 + (i >= 4 ? 8 : 0);
            af[i / 2] = (uint32_t)a_s[row * 16 + col] | ((uint32_t)a_s[row * 16 + col + 1] << 16);
        }
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 4; i += 2) {
                const int k = tig * 2 + (i >= 2 ? 8 : 0), n = h * 8 + group;
                bf[h][i / 2] = (uint32_t)b_s[k * 16 + n] | ((uint32_t)b_s[(k + 1) * 16 + n] << 16);
            }
    } else {
        /* A: lanes 0-15 → rows 0-15 at k 0, lanes 16-31 → rows 0-15 at k 8 */
        ldmatrix_x4(af, &a_s[(lane & 15) * 16 + (lane >> 4) * 8]);
        uint32_t m[4];
        if (mode == 1) { /* bt rows n: (n0-7,k0-7) (n0-7,k8-15) (n8-15,k0-7) (n8-15,k8-15) */
            ldmatrix_x4(m, &bt_s[(((lane >> 4) << 3) + (lane & 7)) * 16 + ((lane >> 3) & 1) * 8]);
        } else { /* b rows k: (k0-7,n0-7) (k8-15,n0-7) (k0-7,n8-15) (k8-15,n8-15), transposed
                  * (modes 2 and 3) */
            ldmatrix_x4_trans(m, &b_s[(((lane >> 3) & 1) * 8 + (lane & 7)) * 16 + (lane >> 4) * 8]);
        }
        bf[0][0] = m[0], bf[0][1] = m[1], bf[1][0] = m[2], bf[1][1] = m[3];
    }
    if (mode == 3) { /* first a·B in fp32, then that 16×16 as the next A fragment */
        float first[2][4] = {};
        mma_bf16_16816(first[0], af, bf[0]);
        mma_bf16_16816(first[1], af, bf[1]);
        mma_accum_to_a_bf16(af, first[0], first[1]);
    }
    for (int h = 0; h < 2; h++) {
        float acc[4];
        for (int i = 0; i < 4; i++)
            acc[i] = c[(group + (i >= 2 ? 8 : 0)) * 16 + h * 8 + tig * 2 + (i & 1)];
        mma_bf16_16816(acc, af, bf[h]);
        for (int i = 0; i < 4; i++)
            d[(group + (i >= 2 ? 8 : 0)) * 16 + h * 8 + tig * 2 + (i & 1)] = acc[i];
    }
}

extern "C" cudaError_t mk_mma_fragment_test(float *d, const uint16_t *a, const uint16_t *bt,
                                            const uint16_t *b, const float *c, int mode,
                                            cudaStream_t stream)
{
    if (mode < 0 || mode > 3)
        return cudaErrorInvalidValue;
    MK_LAUNCH(1, 32, 0, stream, mma_fragment_test_kernel)(d, a, bt, b, c, mode);
    return cudaGetLastError();
}
