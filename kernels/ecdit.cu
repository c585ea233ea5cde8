/* ecdit.cu — the device kernels of EC-DiT (docs/ECDIT.md) and its text encoder: the
 * expert-choice router, the expert-choice MoE, LayerNorm with affine, exact-erf GELU, row
 * gather and the masked mean over prompt tokens (cross-attention is in attention.cu).
 * Semantics are those of the CPU reference (engine/ops_cpu.c, engine/text_encoder.c);
 * tests/gpu/test_cuda_kernels.c checks each against a plain C copy of it.
 *
 * Expert choice on the device, without host synchronisation:
 *  1. ec_scores_kernel: scores = softmax(h·wᵀ) per token. Each (token, expert) logit is one
 *     thread's sequential double sum in d order, like the CPU (a float·float product is
 *     exact in double, so FMA or not makes no difference): the logits are the CPU's bits,
 *     and identical tokens get identical scores wherever they sit, which the tie rule needs.
 *     h and w stream through shared memory in chunks of 32 columns, 16 tokens per block.
 *  2. ec_select_kernel: one block per (image, group, expert) sorts the group's column of
 *     scores in shared memory (bitonic, 64-bit keys: descending score, then ascending token
 *     — a total order, so no tie can come out differently) and keeps the top C. Larger
 *     groups: ec_select_large_kernel (radix selection of the C-th key, then the same sort of
 *     the C keys) when C ≤ MK_EC_SORT_MAX, else ec_rank_kernel (rank = number of keys
 *     before a key, O(S²) but exact).
 *  3. mk_moe_expert_choice: every expert has exactly M rows, so moe.cu's grouped GEMMs run
 *     with offsets e·M built on the device; the combine reads an inverse map slot_of[e, N]
 *     (−1 where e did not take t) and sums experts in id order: no atomics, the same bits
 *     every run.
 */
#include "kernels.h"
#include "launch.h"
#include "reduce.cuh"

#include <cuda_runtime.h>
#include <math.h>

/* ---- expert-choice router: scores ------------------------------------------------------ */

#define EC_TOKENS 16   /* tokens per block                                */
#define EC_CHUNK 32    /* columns of h and w per shared-memory chunk      */
#define EC_THREADS 256
#define EC_PAIRS_PER_THREAD (EC_TOKENS * MK_MOE_MAX_EXPERTS / EC_THREADS)
/* Shared memory: h chunk [EC_TOKENS][EC_CHUNK] + w chunk [E][EC_CHUNK + 1] (padded: thread e
 * reads row e, so consecutive experts hit consecutive banks), later reused for the logits
 * [EC_TOKENS][E] in double. */
#define EC_SMEM_FLOATS (EC_TOKENS * EC_CHUNK + MK_MOE_MAX_EXPERTS * (EC_CHUNK + 1))

static __global__ void __launch_bounds__(EC_THREADS)
ec_scores_kernel(float *scores, const float *h, const float *w, int64_t N, int D, int E)
{
    __shared__ double smem[(EC_SMEM_FLOATS + 1) / 2];
    float *hs = (float *)smem;                      /* [EC_TOKENS][EC_CHUNK]   */
    float *ws = hs + EC_TOKENS * EC_CHUNK;          /* [E][EC_CHUNK + 1]       */
    double *logits = smem;                          /* [EC_TOKENS][E], after   */
    const int tid = threadIdx.x;
    const int64_t t0 = (int64_t)blockIdx.x * EC_TOKENS;
    const int pairs = EC_TOKENS * E;

    double acc[EC_PAIRS_PER_THREAD];
#pragma unroll
    for (int j = 0; j < EC_PAIRS_PER_THREAD; j++)
        acc[j] = 0.0;

    for (int d0 = 0; d0 < D; d0 += EC_CHUNK) {
        const int len = D - d0 < EC_CHUNK ? D - d0 : EC_CHUNK;
        __syncthreads(); /* the previous chunk is consumed */
        for (int i = tid; i < EC_TOKENS * EC_CHUNK; i += EC_THREADS) {
            const int t = i / EC_CHUNK, c = i % EC_CHUNK;
            const int64_t token = t0 + t;
            hs[i] = token < N && c < len ? h[token * D + d0 + c] : 0.0f;
        }
        for (int i = tid; i < E * EC_CHUNK; i += EC_THREADS) {
            const int e = i / EC_CHUNK, c = i % EC_CHUNK;
            ws[e * (EC_CHUNK + 1) + c] = c < len ? w[(int64_t)e * D + d0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < EC_PAIRS_PER_THREAD; j++) {
            const int p = tid + j * EC_THREADS;
            if (p < pairs) {
                const float *hr = hs + (p / E) * EC_CHUNK;
                const float *wr = ws + (p % E) * (EC_CHUNK + 1);
                double a = acc[j];
                for (int c = 0; c < len; c++)
                    a += (double)hr[c] * (double)wr[c];
                acc[j] = a;
            }
        }
    }
    __syncthreads(); /* hs and ws are done: the logits take their place */
#pragma unroll
    for (int j = 0; j < EC_PAIRS_PER_THREAD; j++) {
        const int p = tid + j * EC_THREADS;
        if (p < pairs)
            logits[p] = acc[j];
    }
    __syncthreads();

    /* Softmax per token, one warp per token: max (order-free), e^(l − max) in parallel, then
     * lane 0 sums in expert order, as the CPU does. */
    const int lane = tid & 31, warp = tid >> 5;
    for (int t = warp; t < EC_TOKENS; t += EC_THREADS / 32) {
        const int64_t token = t0 + t;
        if (token >= N)
            break;
        double *row = logits + t * E;
        double max = -1.7976931348623157e308;
        for (int e = lane; e < E; e += 32)
            max = row[e] > max ? row[e] : max;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const double other = __shfl_xor_sync(MK_FULL_MASK, max, o);
            max = other > max ? other : max;
        }
        for (int e = lane; e < E; e += 32)
            row[e] = exp(row[e] - max);
        __syncwarp();
        double sum = 0.0;
        if (lane == 0)
            for (int e = 0; e < E; e++)
                sum += row[e];
        sum = __shfl_sync(MK_FULL_MASK, sum, 0);
        for (int e = lane; e < E; e += 32)
            scores[token * E + e] = (float)(row[e] / sum);
    }
}

/* ---- expert-choice router: selection --------------------------------------------------- */

/* A 64-bit key whose ascending order is: score descending, then token ascending. Scores are
 * probabilities (≥ 0); −0 is folded into +0 so that equal scores compare equal, as in C. */
static __device__ __forceinline__ unsigned long long ec_key(float score, int index)
{
    if (score == 0.0f)
        score = 0.0f;
    unsigned u = __float_as_uint(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending float order as unsigned */
    return ((unsigned long long)(~u) << 32) | (unsigned)index;
}

/* What one (image, group, expert) block needs to know about its group. */
struct ec_group {
    int64_t first;   /* global row of the group's first token          */
    int S;           /* tokens in the group                            */
    int C;           /* tokens the expert takes                        */
    int64_t out;     /* column of the group's first slot in tokens[e]  */
};

static __device__ ec_group ec_group_of(int block, int T, int G, int groups_per_image,
                                       int slots, int C_full, int C_last)
{
    const int image = block / groups_per_image, j = block % groups_per_image;
    const int start = j * G;
    ec_group g;
    g.first = (int64_t)image * T + start;
    g.S = T - start < G ? T - start : G;
    g.C = j == groups_per_image - 1 ? C_last : C_full;
    g.out = (int64_t)image * slots + (int64_t)j * C_full;
    return g;
}

/* Sorts keys[P] (P a power of two) ascending in shared memory, with the whole block; ends
 * with a barrier. */
static __device__ void ec_bitonic_sort(unsigned long long *keys, int P)
{
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < P; i += blockDim.x) {
                const int partner = i ^ j;
                if (partner > i) {
                    const unsigned long long a = keys[i], b = keys[partner];
                    const bool ascending = (i & k) == 0;
                    if ((a > b) == ascending) {
                        keys[i] = b;
                        keys[partner] = a;
                    }
                }
            }
            __syncthreads();
        }
}

static __global__ void __launch_bounds__(1024)
ec_select_kernel(int32_t *tokens, float *gates, const float *scores, int T, int G,
                 int groups_per_image, int slots, int C_full, int C_last, int64_t M, int E)
{
    __shared__ unsigned long long keys[MK_EC_SORT_MAX];
    const ec_group g = ec_group_of(blockIdx.x, T, G, groups_per_image, slots, C_full, C_last);
    const int e = blockIdx.y, tid = threadIdx.x;
    int P = 1;
    while (P < g.S)
        P <<= 1;
    for (int i = tid; i < P; i += blockDim.x)
        keys[i] = i < g.S ? ec_key(scores[(g.first + i) * E + e], i) : ~0ull;
    __syncthreads();
    ec_bitonic_sort(keys, P);
    for (int c = tid; c < g.C; c += blockDim.x) {
        const int index = (int)(keys[c] & 0xffffffffu);
        const int64_t token = g.first + index;
        tokens[(int64_t)e * M + g.out + c] = (int32_t)token;
        gates[(int64_t)e * M + g.out + c] = scores[token * E + e];
    }
}

/* Groups above MK_EC_SORT_MAX tokens whose capacity C is at most MK_EC_SORT_MAX (the usual
 * case: C ≈ S·f/E): radix selection of the C-th smallest key, 8 bits at a time over the 64
 * (keys are distinct, so after 8 passes the prefix is that key), then the C keys up to it
 * are gathered into shared memory and sorted. The histograms count with shared integer
 * atomics (exact); the gathering order depends on timing, but the sort that follows does
 * not, so the output is deterministic. */
static __global__ void __launch_bounds__(1024)
ec_select_large_kernel(int32_t *tokens, float *gates, const float *scores, int T, int G,
                       int groups_per_image, int slots, int C_full, int C_last, int64_t M,
                       int E)
{
    __shared__ unsigned long long keys[MK_EC_SORT_MAX];
    __shared__ int histogram[256];
    __shared__ unsigned long long prefix_shared, mask_shared;
    __shared__ int want_shared, gathered;
    const ec_group g = ec_group_of(blockIdx.x, T, G, groups_per_image, slots, C_full, C_last);
    const int e = blockIdx.y, tid = threadIdx.x;
    if (g.C <= 0)
        return;
    if (tid == 0) {
        prefix_shared = 0;
        mask_shared = 0;
        want_shared = g.C - 1; /* 0-based rank of the last key taken */
        gathered = 0;
    }
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += blockDim.x)
            histogram[b] = 0;
        __syncthreads(); /* also publishes the previous pass's prefix */
        const unsigned long long prefix = prefix_shared, mask = mask_shared;
        for (int i = tid; i < g.S; i += blockDim.x) {
            const unsigned long long key = ec_key(scores[(g.first + i) * E + e], i);
            if ((key & mask) == prefix)
                atomicAdd(&histogram[(int)((key >> shift) & 255u)], 1);
        }
        __syncthreads();
        if (tid == 0) {
            int want = want_shared, digit = 0;
            while (want >= histogram[digit]) /* the digit bucket holding rank `want` */
                want -= histogram[digit++];
            want_shared = want;
            prefix_shared = prefix | ((unsigned long long)digit << shift);
            mask_shared = mask | (255ull << shift);
        }
        __syncthreads(); /* thread 0 is done reading the histogram before it is cleared */
    }
    const unsigned long long last = prefix_shared; /* the C-th smallest key */
    for (int i = tid; i < g.S; i += blockDim.x) {
        const unsigned long long key = ec_key(scores[(g.first + i) * E + e], i);
        if (key <= last)
            keys[atomicAdd(&gathered, 1)] = key;
    }
    int P = 1;
    while (P < g.C)
        P <<= 1;
    __syncthreads();
    for (int i = g.C + tid; i < P; i += blockDim.x)
        keys[i] = ~0ull;
    __syncthreads();
    ec_bitonic_sort(keys, P);
    for (int c = tid; c < g.C; c += blockDim.x) {
        const int index = (int)(keys[c] & 0xffffffffu);
        const int64_t token = g.first + index;
        tokens[(int64_t)e * M + g.out + c] = (int32_t)token;
        gates[(int64_t)e * M + g.out + c] = scores[token * E + e];
    }
}

/* Groups above MK_EC_SORT_MAX tokens with C above it too (capacity factors near E): each
 * key's rank among the group's (keys are distinct) counted against chunks of MK_EC_SORT_MAX
 * keys staged in shared memory. O(S²), exact. */
static __global__ void __launch_bounds__(1024)
ec_rank_kernel(int32_t *tokens, float *gates, const float *scores, int T, int G,
               int groups_per_image, int slots, int C_full, int C_last, int64_t M, int E)
{
    __shared__ unsigned long long keys[MK_EC_SORT_MAX];
    const ec_group g = ec_group_of(blockIdx.x, T, G, groups_per_image, slots, C_full, C_last);
    const int e = blockIdx.y, tid = threadIdx.x;
    for (int base = 0; base < g.S; base += blockDim.x) {
        const int i = base + tid;
        const bool mine = i < g.S;
        const unsigned long long key = mine ? ec_key(scores[(g.first + i) * E + e], i) : 0;
        int rank = 0;
        for (int c0 = 0; c0 < g.S; c0 += MK_EC_SORT_MAX) {
            const int len = g.S - c0 < MK_EC_SORT_MAX ? g.S - c0 : MK_EC_SORT_MAX;
            __syncthreads();
            for (int x = tid; x < len; x += blockDim.x)
                keys[x] = ec_key(scores[(g.first + c0 + x) * E + e], c0 + x);
            __syncthreads();
            for (int x = 0; x < len; x++)
                rank += keys[x] < key;
        }
        if (mine && rank < g.C) {
            tokens[(int64_t)e * M + g.out + rank] = (int32_t)(g.first + i);
            gates[(int64_t)e * M + g.out + rank] = scores[(g.first + i) * E + e];
        }
    }
}

/* moire_ec_capacity (engine/ops.h), the same double arithmetic. */
static int ec_capacity(int S, int E, float capacity_factor)
{
    const double c = ceil((double)S * (double)capacity_factor / E);
    return c >= S ? S : (int)c;
}

extern "C" cudaError_t mk_router_expert_choice(float *scores, int32_t *tokens, float *gates,
                                               const float *h, const float *w, int n, int T,
                                               int group, int D, int E, float capacity_factor,
                                               cudaStream_t stream)
{
    const int64_t N = (int64_t)n * T;
    if (N <= 0 || E <= 0)
        return cudaSuccess;
    if (E > MK_MOE_MAX_EXPERTS || D <= 0)
        return cudaErrorInvalidValue;
    const int64_t score_blocks = (N + EC_TOKENS - 1) / EC_TOKENS;
    if (score_blocks > 0x7fffffff)
        return cudaErrorInvalidValue;
    MK_LAUNCH((unsigned)score_blocks, EC_THREADS, 0, stream, ec_scores_kernel)(scores, h, w, N,
                                                                              D, E);

    const int G = group <= 0 || group >= T ? T : group;
    const int groups_per_image = (T + G - 1) / G;
    const int last = T - (groups_per_image - 1) * G;
    const int C_full = ec_capacity(G, E, capacity_factor);
    const int C_last = ec_capacity(last, E, capacity_factor);
    const int slots = (groups_per_image - 1) * C_full + C_last;
    const int64_t M = (int64_t)n * slots;
    const int64_t blocks = (int64_t)n * groups_per_image;
    if (blocks > 0x7fffffff || M * E > 0x7fffffff)
        return cudaErrorInvalidValue;
    if (M == 0)
        return cudaGetLastError();
    const dim3 grid((unsigned)blocks, (unsigned)E);
    if (G <= MK_EC_SORT_MAX) {
        int P = 1;
        while (P < G)
            P <<= 1;
        const int threads = P / 2 < 32 ? 32 : P / 2 > 1024 ? 1024 : P / 2;
        MK_LAUNCH(grid, threads, 0, stream, ec_select_kernel)(tokens, gates, scores, T, G,
                                                              groups_per_image, slots, C_full,
                                                              C_last, M, E);
    } else if (C_full <= MK_EC_SORT_MAX && C_last <= MK_EC_SORT_MAX) {
        MK_LAUNCH(grid, 1024, 0, stream, ec_select_large_kernel)(tokens, gates, scores, T, G,
                                                                 groups_per_image, slots,
                                                                 C_full, C_last, M, E);
    } else {
        MK_LAUNCH(grid, 1024, 0, stream, ec_rank_kernel)(tokens, gates, scores, T, G,
                                                         groups_per_image, slots, C_full,
                                                         C_last, M, E);
    }
    return cudaGetLastError();
}

/* ---- expert-choice MoE ----------------------------------------------------------------- */

/* The workspace, carved in this order (256-byte aligned pieces):
 *   offsets[E+1], tile_offsets[E+1]   int32  grouped-GEMM dispatch (expert e: rows e·M…)
 *   slot_of[E, N]                     int32  slot of token t in expert e's rows, or −1
 *   act[max(E·M·F, N·S)]              fp32   SwiGLU activations (routed, then shared)
 *   rows[E·M, D]                      fp32   expert outputs
 *   shared_out[N, D]                  fp32   shared expert output (S > 0) */
struct ec_workspace {
    int32_t *offsets, *tile_offsets, *slot_of;
    float *act, *rows, *shared_out;
    size_t bytes;
};

static size_t ec_align(size_t bytes)
{
    return (bytes + 255) & ~(size_t)255;
}

static ec_workspace ec_carve(char *base, int N, int D, int F, int S, int E, int M)
{
    ec_workspace ws;
    size_t at = 0;
    const size_t act_routed = (size_t)E * M * F, act_shared = S > 0 ? (size_t)N * S : 0;
    ws.offsets = (int32_t *)(base + at), at += ec_align((size_t)(E + 1) * sizeof(int32_t));
    ws.tile_offsets = (int32_t *)(base + at), at += ec_align((size_t)(E + 1) * sizeof(int32_t));
    ws.slot_of = (int32_t *)(base + at), at += ec_align((size_t)E * N * sizeof(int32_t));
    ws.act = (float *)(base + at);
    at += ec_align((act_routed > act_shared ? act_routed : act_shared) * sizeof(float));
    ws.rows = (float *)(base + at), at += ec_align((size_t)E * M * D * sizeof(float));
    ws.shared_out = (float *)(base + at);
    at += ec_align(S > 0 ? (size_t)N * D * sizeof(float) : 0);
    ws.bytes = at;
    return ws;
}

extern "C" size_t mk_moe_expert_choice_workspace(int N, int D, int F, int S, int E, int M)
{
    if (N <= 0 || D <= 0 || E < 0 || M < 0)
        return 0;
    return ec_carve(NULL, N, D, F, S, E, M).bytes;
}

/* offsets[e] = e·M, tile_offsets[e] = e·⌈M/TILE⌉, e ≤ E; slot_of = −1 everywhere. */
static __global__ void ec_dispatch_init_kernel(int32_t *offsets, int32_t *tile_offsets,
                                               int32_t *slot_of, int E, int M, int64_t slot_count)
{
    const int tiles = (M + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M;
    MK_GRID_STRIDE(i, slot_count) slot_of[i] = -1;
    const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (first <= E) {
        offsets[first] = (int32_t)(first * M);
        tile_offsets[first] = (int32_t)(first * tiles);
    }
}

/* slot_of[e, tokens[e, j]] = e·M + j (a token appears at most once per expert, so every
 * write has its own address). Out-of-range tokens are ignored. */
static __global__ void ec_slot_map_kernel(int32_t *slot_of, const int32_t *tokens, int N, int M,
                                          int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const int64_t e = i / M;
        const int32_t t = tokens[i];
        if (t >= 0 && t < N)
            slot_of[e * N + t] = (int32_t)i;
    }
}

/* One block per token: y[t] = Σ_e (in id order) gates[s]·rows[s] over the experts that took t
 * (s = slot_of[e, t]), then + shared[t] — the CPU's order (experts first, shared last), each
 * product rounded before its sum. */
static __global__ void __launch_bounds__(256)
ec_combine_kernel(float *y, const float *rows, const float *shared_out, const int32_t *slot_of,
                  const float *gates, int N, int D, int E)
{
    __shared__ int32_t slot_all[MK_MOE_MAX_EXPERTS];
    __shared__ int32_t slot[MK_MOE_MAX_EXPERTS];
    __shared__ float gate[MK_MOE_MAX_EXPERTS];
    __shared__ int taken;
    const int64_t t = blockIdx.x;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        slot_all[e] = slot_of[(int64_t)e * N + t];
    __syncthreads();
    if (threadIdx.x == 0) { /* compact, keeping expert order */
        int count = 0;
        for (int e = 0; e < E; e++)
            if (slot_all[e] >= 0)
                slot[count++] = slot_all[e];
        taken = count;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < taken; i += blockDim.x)
        gate[i] = gates[slot[i]];
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
        for (int i = 0; i < taken; i++)
            v = __fadd_rn(v, __fmul_rn(gate[i], rows[(int64_t)slot[i] * D + d]));
        if (shared_out)
            v = __fadd_rn(v, shared_out[t * D + d]);
        y[t * D + d] = v;
    }
}

extern "C" cudaError_t mk_moe_expert_choice(float *y, const float *h, int N, int D,
                                            const void *w_gate_up, const void *w_down, int F,
                                            const void *s_gate_up, const void *s_down, int S,
                                            int bf16, int E, int M, const int32_t *tokens,
                                            const float *gates, void *workspace,
                                            cudaStream_t stream)
{
    if (N <= 0 || D <= 0)
        return cudaSuccess;
    if (E < 0 || E > MK_MOE_MAX_EXPERTS || M < 0 || (M > 0 && E > 0 && F <= 0) || !workspace)
        return cudaErrorInvalidValue;
    const bool routed = E > 0 && M > 0;
    const int tiles_per_expert = (M + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M;
    if ((int64_t)E * tiles_per_expert > 65535 || (int64_t)E * M > 0x7fffffff)
        return cudaErrorInvalidValue;
    const ec_workspace ws = ec_carve((char *)workspace, N, D, F, S, E, M);
    cudaError_t err = cudaSuccess;
    if (routed) {
        const int64_t slot_count = (int64_t)E * N;
        MK_LAUNCH(mk_grid_for(slot_count > E + 1 ? slot_count : E + 1, 256), 256, 0, stream,
                  ec_dispatch_init_kernel)(ws.offsets, ws.tile_offsets, ws.slot_of, E, M,
                                           slot_count);
        MK_LAUNCH(mk_grid_for((int64_t)E * M, 256), 256, 0, stream, ec_slot_map_kernel)(
            ws.slot_of, tokens, N, M, (int64_t)E * M);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return err;
        err = mk_moe_gate_up(ws.act, h, w_gate_up, bf16, ws.offsets, ws.tile_offsets, tokens, 0,
                             E, D, F, E * tiles_per_expert, stream);
        if (err == cudaSuccess)
            err = mk_moe_down(ws.rows, ws.act, w_down, bf16, ws.offsets, ws.tile_offsets, 0, E,
                              D, F, E * tiles_per_expert, stream);
        if (err != cudaSuccess)
            return err;
    }
    if (S > 0) {
        /* dense mode: the shared expert over all N rows (act is free again: same stream) */
        err = mk_moe_gate_up(ws.act, h, s_gate_up, bf16, NULL, NULL, NULL, N, 1, D, S, 0,
                             stream);
        if (err == cudaSuccess)
            err = mk_moe_down(ws.shared_out, ws.act, s_down, bf16, NULL, NULL, N, 1, D, S, 0,
                              stream);
        if (err != cudaSuccess)
            return err;
    }
    MK_LAUNCH((unsigned)N, 256, 0, stream, ec_combine_kernel)(y, ws.rows,
                                                              S > 0 ? ws.shared_out : NULL,
                                                              ws.slot_of, gates, N, D,
                                                              routed ? E : 0);
    return cudaGetLastError();
}

/* ---- text encoder ---------------------------------------------------------------------- */

/* One block per row; each thread reads, reduces and writes its own elements, so y may be x. */
static __global__ void layernorm_affine_kernel(float *y, const float *x, const float *w,
                                               const float *b, int D, float eps)
{
    __shared__ float scratch[33];
    const int64_t row = blockIdx.x;
    const float *xr = x + row * D;
    float *yr = y + row * D;
    float mean, inv;
    mk_row_stats(xr, D, eps, scratch, &mean, &inv);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        yr[d] = ((xr[d] - mean) * inv) * w[d] + b[d];
}

extern "C" cudaError_t mk_layernorm_affine(float *y, const float *x, const float *w,
                                           const float *b, int T, int D, float eps,
                                           cudaStream_t stream)
{
    if (T <= 0 || D <= 0)
        return cudaSuccess;
    const int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
    MK_LAUNCH((unsigned)T, threads, 0, stream, layernorm_affine_kernel)(y, x, w, b, D, eps);
    return cudaGetLastError();
}

static __global__ void gelu_erf_kernel(float *y, const float *x, int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const double v = x[i];
        y[i] = (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
    }
}

extern "C" cudaError_t mk_gelu_erf(float *y, const float *x, int64_t count, cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, gelu_erf_kernel)(y, x, count);
    return cudaGetLastError();
}

static __global__ void gather_rows_kernel(float *y, const float *table, const int32_t *ids,
                                          int D, int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const int64_t r = i / D;
        y[i] = table[(int64_t)ids[r] * D + (i - r * D)];
    }
}

extern "C" cudaError_t mk_gather_rows(float *y, const float *table, const int32_t *ids, int rows,
                                      int D, cudaStream_t stream)
{
    const int64_t count = (int64_t)rows * D;
    if (rows <= 0 || D <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, gather_rows_kernel)(y, table, ids, D,
                                                                          count);
    return cudaGetLastError();
}

/* One thread per (p, d): consecutive threads read consecutive d of the same token row. */
static __global__ void masked_mean_kernel(float *out, const float *x, const int32_t *lengths,
                                          int L, int D, int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const int64_t p = i / D;
        const int d = (int)(i - p * D);
        int len = lengths[p];
        len = len > L ? L : len;
        double sum = 0.0;
        for (int j = 0; j < len; j++)
            sum += x[(p * L + j) * D + d];
        out[i] = len > 0 ? (float)(sum / len) : 0.0f;
    }
}

extern "C" cudaError_t mk_masked_mean_rows(float *out, const float *x, const int32_t *lengths,
                                           int P, int L, int D, cudaStream_t stream)
{
    const int64_t count = (int64_t)P * D;
    if (P <= 0 || D <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, masked_mean_kernel)(out, x, lengths, L, D,
                                                                          count);
    return cudaGetLastError();
}
