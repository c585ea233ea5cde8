/* moe.cu — the routed experts without host synchronisation.
 *
 * The PyTorch reference sizes its per-expert GEMMs on the host (`bincount().cpu()` every
 * layer), which stalls the GPU and makes a step impossible to capture as a CUDA graph. Here
 * every size stays on the device:
 *   1. mk_moe_route (one block): histogram of the T·k (token, expert) pairs, exclusive scan
 *      → offsets[E+1] and per-expert M-tile counts → tile_offsets[E+1], then a stable
 *      placement of the pairs grouped by expert (token order inside an expert, like the CPU):
 *      sorted_token, sorted_weight, and slot_of_pair for the combine;
 *   2. mk_moe_gate_up: grouped GEMM over all experts at once, grid sized for the worst case
 *      (⌈P/64⌉ + E M-tiles); each block finds its expert by binary search in tile_offsets
 *      and exits when past the end. A rows are read through sorted_token (no gathered
 *      copy); gate and up are accumulated together and SiLU(g)·u is the epilogue;
 *   3. mk_moe_down: the same grouping for the down projection, one output row per pair;
 *   4. mk_moe_combine: y = shared + Σ_j w_j · row(slot_j), j in order — no atomics, so a
 *      run is bit-reproducible.
 * The GEMM tiles are plain fp32 FMA (64×64×16, 4×4 per thread); weights fp32 or bf16
 * (widened on load). This is the correctness baseline: the tensor-core version (wgmma or
 * mma.sync on bf16 tiles, weight tile loaded once per block for all its rows) replaces the
 * inner loop without touching the dispatch (docs/CUDA.md).
 */
#include "kernels.h"
#include "launch.h"

#include <cuda_runtime.h>

#define FULL_MASK 0xffffffffu
#define ROUTE_THREADS 1024
#define ROUTE_WARPS (ROUTE_THREADS / 32)

static __global__ void __launch_bounds__(ROUTE_THREADS)
moe_route_kernel(int32_t *offsets, int32_t *tile_offsets, int32_t *sorted_token,
                 float *sorted_weight, int32_t *slot_of_pair, const int32_t *top_ids,
                 const float *top_weights, int P, int k, int E)
{
    __shared__ int count[MK_MOE_MAX_EXPERTS];
    __shared__ int base[MK_MOE_MAX_EXPERTS];
    __shared__ int running[MK_MOE_MAX_EXPERTS];
    __shared__ int warp_count[ROUTE_WARPS][MK_MOE_MAX_EXPERTS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    for (int e = tid; e < E; e += ROUTE_THREADS)
        count[e] = 0, running[e] = 0;
    __syncthreads();
    for (int p = tid; p < P; p += ROUTE_THREADS) {
        const int e = top_ids[p];
        if (e >= 0 && e < E)
            atomicAdd(&count[e], 1);
    }
    __syncthreads();
    if (tid == 0) {
        int rows = 0, tiles = 0;
        for (int e = 0; e < E; e++) {
            base[e] = rows;
            offsets[e] = rows;
            tile_offsets[e] = tiles;
            rows += count[e];
            tiles += (count[e] + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M;
        }
        offsets[E] = rows;
        tile_offsets[E] = tiles;
    }
    __syncthreads();

    /* Stable placement, ROUTE_THREADS pairs at a time: the rank of a pair among the earlier
     * pairs of its expert = (pairs of earlier chunks) + (earlier warps of this chunk) +
     * (earlier lanes of its warp, from __match_any_sync). */
    for (int chunk = 0; chunk < P; chunk += ROUTE_THREADS) {
        const int p = chunk + tid;
        int e = p < P ? top_ids[p] : -1;
        if (e >= E)
            e = -1;
        for (int x = lane; x < E; x += 32)
            warp_count[warp][x] = 0;
        __syncwarp();
        const unsigned same = __match_any_sync(FULL_MASK, e);
        const int rank = __popc(same & ((1u << lane) - 1u));
        if (e >= 0 && rank == 0)
            warp_count[warp][e] = __popc(same);
        __syncthreads();
        for (int x = tid; x < E; x += ROUTE_THREADS) {
            int acc = running[x];
            for (int w = 0; w < ROUTE_WARPS; w++) {
                const int c = warp_count[w][x];
                warp_count[w][x] = acc;
                acc += c;
            }
            running[x] = acc;
        }
        __syncthreads();
        if (e >= 0) {
            const int pos = base[e] + warp_count[warp][e] + rank;
            sorted_token[pos] = p / k;
            sorted_weight[pos] = top_weights[p];
            slot_of_pair[p] = pos;
        }
        __syncthreads();
    }
}

extern "C" cudaError_t mk_moe_route(int32_t *offsets, int32_t *tile_offsets,
                                    int32_t *sorted_token, float *sorted_weight,
                                    int32_t *slot_of_pair, const int32_t *top_ids,
                                    const float *top_weights, int T, int k, int E,
                                    cudaStream_t stream)
{
    if (E <= 0 || E > MK_MOE_MAX_EXPERTS || k <= 0)
        return cudaErrorInvalidValue;
    MK_LAUNCH(1, ROUTE_THREADS, 0, stream, moe_route_kernel)(offsets, tile_offsets, sorted_token,
                                                      sorted_weight, slot_of_pair, top_ids,
                                                      top_weights, T * k, k, E);
    return cudaGetLastError();
}

/* ---- grouped GEMM --------------------------------------------------------------------- */

#define BM MK_MOE_TILE_M
#define BN 64
#define BK 16
#define GEMM_THREADS 256

static __device__ __forceinline__ float load_weight(const float *w, size_t i)
{
    return w[i];
}

static __device__ __forceinline__ float load_weight(const uint16_t *w, size_t i)
{
    return __uint_as_float((uint32_t)w[i] << 16);
}

/* Which rows this block owns: expert e, rows [row0, row_end) of the sorted order (at most
 * BM of them). False when the block is past the last tile. */
static __device__ bool find_tile(const int32_t *offsets, const int32_t *tile_offsets,
                                 int dense_rows, int E, int tile, int *e_out, int *row0,
                                 int *row_end)
{
    if (!offsets) {
        if (tile * BM >= dense_rows)
            return false;
        *e_out = 0;
        *row0 = tile * BM;
        *row_end = min(dense_rows, (tile + 1) * BM);
        return true;
    }
    if (tile >= tile_offsets[E])
        return false;
    int lo = 0, hi = E - 1; /* last e with tile_offsets[e] ≤ tile */
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (tile_offsets[mid] <= tile)
            lo = mid;
        else
            hi = mid - 1;
    }
    const int e = lo;
    *e_out = e;
    *row0 = offsets[e] + (tile - tile_offsets[e]) * BM;
    *row_end = min(offsets[e + 1], *row0 + BM);
    return true;
}

/* out rows r in [row0, row_end): acc[r, n] = Σ_k A[src(r), k] · W[e, n, k] (+ the up half
 * when DUAL: W[e, F + n, k]). A is [*, K] fp32; W[e] is [(DUAL ? 2 : 1)·N, K]. */
template <typename WT, bool DUAL>
static __global__ void __launch_bounds__(GEMM_THREADS)
grouped_gemm_kernel(float *out, const float *A, const WT *W, const int32_t *offsets,
                    const int32_t *tile_offsets, const int32_t *sorted_token, int dense_rows,
                    int E, int K, int N)
{
    __shared__ float As[BK][BM];
    __shared__ float Bs[BK][BN];
    __shared__ float Us[DUAL ? BK : 1][DUAL ? BN : 1];
    __shared__ int src_row[BM];
    int e, row0, row_end;
    if (!find_tile(offsets, tile_offsets, dense_rows, E, blockIdx.y, &e, &row0, &row_end))
        return;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n0 = blockIdx.x * BN;
    const int rows = row_end - row0;
    const WT *We = W + (size_t)e * (DUAL ? 2 : 1) * N * K;
    if (tid < BM)
        src_row[tid] = tid < rows ? (sorted_token ? sorted_token[row0 + tid] : row0 + tid) : -1;
    __syncthreads();

    float acc[4][4] = {};
    float acc_up[DUAL ? 4 : 1][DUAL ? 4 : 1] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int idx = tid; idx < BM * BK; idx += GEMM_THREADS) {
            const int r = idx / BK, kk = idx % BK;
            const int src = src_row[r];
            As[kk][r] = src >= 0 && k0 + kk < K ? A[(size_t)src * K + k0 + kk] : 0.0f;
        }
        for (int idx = tid; idx < BN * BK; idx += GEMM_THREADS) {
            const int c = idx / BK, kk = idx % BK;
            const bool ok = n0 + c < N && k0 + kk < K;
            Bs[kk][c] = ok ? load_weight(We, (size_t)(n0 + c) * K + k0 + kk) : 0.0f;
            if (DUAL)
                Us[kk][c] = ok ? load_weight(We, (size_t)(N + n0 + c) * K + k0 + kk) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float a[4], b[4], u[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                a[i] = As[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                b[j] = Bs[kk][tx * 4 + j];
                u[j] = DUAL ? Us[kk][tx * 4 + j] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[i][j] += a[i] * b[j];
                    if (DUAL)
                        acc_up[DUAL ? i : 0][DUAL ? j : 0] += a[i] * u[j];
                }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = ty * 4 + i;
        if (r >= rows)
            continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx * 4 + j;
            if (n >= N)
                continue;
            float v = acc[i][j];
            if (DUAL) {
                const float g = v;
                v = g / (1.0f + expf(-g)) * acc_up[DUAL ? i : 0][DUAL ? j : 0];
            }
            out[(size_t)(row0 + r) * N + n] = v;
        }
    }
}

template <bool DUAL>
static cudaError_t launch_grouped(float *out, const float *A, const void *W, int bf16,
                                  const int32_t *offsets, const int32_t *tile_offsets,
                                  const int32_t *sorted_token, int dense_rows, int E, int K,
                                  int N, int max_tiles, cudaStream_t stream)
{
    if (!offsets) {
        if (E != 1)
            return cudaErrorInvalidValue;
        max_tiles = (dense_rows + BM - 1) / BM;
    }
    if (max_tiles <= 0 || N <= 0)
        return cudaSuccess;
    const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)max_tiles);
    if (bf16)
        MK_LAUNCH(grid, GEMM_THREADS, 0, stream, grouped_gemm_kernel<uint16_t, DUAL>)(
            out, A, (const uint16_t *)W, offsets, tile_offsets, sorted_token, dense_rows, E, K,
            N);
    else
        MK_LAUNCH(grid, GEMM_THREADS, 0, stream, grouped_gemm_kernel<float, DUAL>)(
            out, A, (const float *)W, offsets, tile_offsets, sorted_token, dense_rows, E, K, N);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_moe_gate_up(float *act, const float *h, const void *w_gate_up,
                                      int bf16, const int32_t *offsets,
                                      const int32_t *tile_offsets, const int32_t *sorted_token,
                                      int dense_rows, int E, int D, int F, int max_tiles,
                                      cudaStream_t stream)
{
    return launch_grouped<true>(act, h, w_gate_up, bf16, offsets, tile_offsets, sorted_token,
                                dense_rows, E, D, F, max_tiles, stream);
}

extern "C" cudaError_t mk_moe_down(float *out, const float *act, const void *w_down, int bf16,
                                   const int32_t *offsets, const int32_t *tile_offsets,
                                   int dense_rows, int E, int D, int F, int max_tiles,
                                   cudaStream_t stream)
{
    return launch_grouped<false>(out, act, w_down, bf16, offsets, tile_offsets, NULL,
                                 dense_rows, E, F, D, max_tiles, stream);
}

/* ---- combine -------------------------------------------------------------------------- */

static __global__ void moe_combine_kernel(float *y, const float *base, const float *rows,
                                          const int32_t *slot_of_pair,
                                          const float *top_weights, int64_t count, int D, int k)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / D;
        const int d = (int)(i % D);
        float v = base ? base[i] : 0.0f;
        for (int j = 0; j < k; j++) {
            const int64_t pair = t * k + j;
            v += top_weights[pair] * rows[(size_t)slot_of_pair[pair] * D + d];
        }
        y[i] = v;
    }
}

extern "C" cudaError_t mk_moe_combine(float *y, const float *base, const float *rows,
                                      const int32_t *slot_of_pair, const float *top_weights,
                                      int T, int D, int k, cudaStream_t stream)
{
    const int64_t count = (int64_t)T * D;
    if (count <= 0)
        return cudaSuccess;
    int64_t blocks = (count + 255) / 256;
    if (blocks > 65535 * 8)
        blocks = 65535 * 8;
    MK_LAUNCH((unsigned)blocks, 256, 0, stream, moe_combine_kernel)(y, base, rows, slot_of_pair,
                                                             top_weights, count, D, k);
    return cudaGetLastError();
}
