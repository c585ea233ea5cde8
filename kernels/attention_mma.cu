/* attention_mma.cu — attention on tensor cores, flash-style (the bf16 path of ops.h
 * `attention` and `cross_attention` for head sizes up to 128; attention.cu keeps the fp32
 * SIMT kernels for --precision fp32 and for wider heads).
 *
 * Two launches per call, whatever the number of images:
 *
 *  1. attention_pack_kernel: q, k and v (fp32, strided, as the qkv GEMM or the caller left
 *     them) → bf16 head-major copies [n, H, rows, HP] in a workspace, HP = hd rounded up to
 *     16 (the mma k step) with the columns hd..HP−1 written as zeros. q and k are LayerNormed
 *     per head here (the qk-norm layout), so each token's norm is computed exactly once,
 *     instead of once per query block as the SIMT kernel does for k. Statistics in fp32,
 *     the normalised value rounded to bf16 (RNE). One warp per (token, head) row.
 *
 *  2. flash_attention_kernel<HP>: a block = 64 query rows of one head of one image (4 warps
 *     × 16 rows); the grid covers every image of the batch (blockIdx.z), so the CFG pair is
 *     one launch. Keys stream through shared memory 64 at a time:
 *       S = Q·Kᵀ        mma.sync m16n8k16 bf16, fp32 accumulators (16 × 64 per warp)
 *       online softmax  fp32: m' = max(m, rowmax S), p = 2^(S·c − m'), l = l·2^(m−m') + Σp,
 *                       c = log2(e)/√hd (the scale applied to the fp32 scores)
 *       O = O·2^(m−m') + P·V   P rounded to bf16 straight from the S accumulators
 *                       (mma_accum_to_a_bf16: the C layout of two n-tiles is the A layout
 *                       of one k-step), V through ldmatrix.trans
 *     then out = O / l (fp32). No Tq×Tk matrix exists anywhere: the scores of a 16×64 tile
 *     live in one warp's registers.
 *
 * Pipeline: one shared buffer for K and one for V, each 64 × (HP + 8) bf16. K_{j+1} is
 * loaded (cp.async) while the softmax and P·V of tile j run, V_{j+1} while S of tile j+1
 * runs. The Q tile goes through the V buffer once, before V_0, and stays in registers.
 *
 * Shared layout: rows of HP + 8 bf16. HP/8 + 1 sixteen-byte units per row is odd (HP is a
 * multiple of 16), so the 8 rows an ldmatrix phase reads fall in 8 different 16-byte bank
 * groups: no bank conflicts (worked out, not measured). Keys past Tk and query rows past Tq
 * are zero-filled by cp.async; such keys get score −∞ and such rows are not written.
 *
 * Register budget per thread (HP 128): Q fragments 32, S 32, O 64, plus addresses;
 * ptxas numbers for sm_90 are in docs/CUDA.md.
 */
#include "kernels.h"
#include "launch.h"
#include "mma.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#define FA_BQ 64 /* query rows per block: 4 warps × 16 */
#define FA_BK 64 /* keys per shared tile                */
#define FA_THREADS 128
#define FA_MAX_HD 128
#define FA_FULL_MASK 0xffffffffu

static int fa_padded(int hd)
{
    return (hd + 15) & ~15;
}

/* ---- 1. pack: fp32 strided → bf16 [n, H, rows, HP], q/k LayerNormed --------------------- */

/* Row t, head h of image z is src + z·batch + t·ld + h·hd (hd floats); it goes to
 * dst + ((z·H + h)·rows + t)·HP. norm_w NULL: copied as is. */
struct fa_pack_job {
    const float *src;
    int64_t ld, batch;
    const float *norm_w, *norm_b;
    uint16_t *dst;
    int rows;
};

struct fa_pack_args {
    fa_pack_job job[3]; /* blockIdx.y picks one */
    int H, hd, HP;
    float eps;
};

#define FA_PACK_WARPS 4

static __device__ __forceinline__ float fa_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FA_FULL_MASK, v, o);
    return v;
}

/* Lane owns the column pairs d = 2·lane + 64·i (i = 0, 1): HP ≤ 128. */
static __global__ void __launch_bounds__(32 * FA_PACK_WARPS)
attention_pack_kernel(fa_pack_args a)
{
    const fa_pack_job job = a.job[blockIdx.y];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row = (int64_t)blockIdx.x * FA_PACK_WARPS + warp; /* (token, head) */
    const int t = (int)(row / a.H), h = (int)(row % a.H);
    if (t >= job.rows)
        return; /* the whole warp: no shuffle below is left half-done */
    const int hd = a.hd, HP = a.HP;
    const int64_t image = blockIdx.z;
    const float *src = job.src + image * job.batch + (int64_t)t * job.ld + (int64_t)h * hd;
    float v[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int d = 2 * lane + 64 * i + e;
            v[i][e] = d < hd ? src[d] : 0.0f;
        }
    if (job.norm_w) {
        const float mean = fa_warp_sum(v[0][0] + v[0][1] + v[1][0] + v[1][1]) / hd;
        float sq = 0.0f;
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int d = 2 * lane + 64 * i + e;
                const float c = d < hd ? v[i][e] - mean : 0.0f;
                sq += c * c;
            }
        const float inv = 1.0f / sqrtf(fa_warp_sum(sq) / hd + a.eps);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int d = 2 * lane + 64 * i + e;
                v[i][e] = d < hd ? ((v[i][e] - mean) * inv) * job.norm_w[d] + job.norm_b[d]
                                 : 0.0f;
            }
    }
    uint16_t *dst = job.dst + (((int64_t)image * a.H + h) * job.rows + t) * HP;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int d = 2 * lane + 64 * i;
        if (d < HP) /* zeros past hd: the padded k columns of the mma */
            *(uint32_t *)(dst + d) = mma_pack_bf16(v[i][0], v[i][1]);
    }
}

/* ---- 2. the flash kernel ----------------------------------------------------------------- */

/* q [n, H, Tq, HP], k and v [n, H, Tk, HP] bf16 (from the pack); head h of image z writes
 * out + z·o_batch + t·ldo + h·hd, hd fp32 columns. */
struct fa_args {
    float *out;
    int64_t ldo, o_batch;
    const uint16_t *q, *k, *v;
    int Tq, Tk, H, hd;
    float score_scale; /* log2(e)/√hd: scores in base 2 for exp2f */
};

template <int HP>
static __global__ void __launch_bounds__(FA_THREADS) flash_attention_kernel(fa_args a)
{
    constexpr int LD = HP + 8;    /* shared row, bf16: +16 bytes against bank conflicts */
    constexpr int KSTEPS = HP / 16; /* mma k steps over the head                     */
    constexpr int DTILES = HP / 8;  /* 8-column output tiles                          */
    constexpr int CHUNKS = HP / 8;  /* 16-byte chunks per row                          */
    constexpr int NTILES = FA_BK / 8; /* 8-key score tiles per warp                   */
    __shared__ __align__(16) uint16_t ks[FA_BK * LD];
    __shared__ __align__(16) uint16_t vs[FA_BK * LD]; /* the Q tile first, then V */

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int group = lane >> 2, tig = lane & 3;
    const int Tq = a.Tq, Tk = a.Tk;
    const int q0 = blockIdx.x * FA_BQ;
    const int64_t head_index = (int64_t)blockIdx.z * a.H + blockIdx.y;
    const uint16_t *qg = a.q + head_index * Tq * HP;
    const uint16_t *kg = a.k + head_index * Tk * HP;
    const uint16_t *vg = a.v + head_index * Tk * HP;

    /* rows [row0, row0 + 64) of a [rows, HP] head → dst, zero past `rows` */
    auto load_tile = [&](uint16_t *dst, const uint16_t *src, int row0, int rows) {
        for (int idx = tid; idx < FA_BK * CHUNKS; idx += FA_THREADS) {
            const int r = idx / CHUNKS, c = idx % CHUNKS;
            const bool ok = row0 + r < rows;
            cp_async_16(&dst[r * LD + c * 8],
                        ok ? (const void *)(src + (int64_t)(row0 + r) * HP + c * 8)
                           : (const void *)src,
                        ok);
        }
    };

    load_tile(vs, qg, q0, Tq);
    load_tile(ks, kg, 0, Tk);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    /* This warp's 16 query rows as A fragments: lanes 0-15 rows 0-15 at k, 16-31 at k + 8. */
    uint32_t qf[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++)
        ldmatrix_x4(qf[kk], &vs[(warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8]);
    __syncthreads(); /* Q is out of vs before V_0 lands there */
    load_tile(vs, vg, 0, Tk);
    cp_async_commit();

    float o[DTILES][4]; /* rows group (0, 1) and group + 8 (2, 3) */
#pragma unroll
    for (int dt = 0; dt < DTILES; dt++)
        o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}; /* running max (base-2 units) of rows group, +8 */
    float l[2] = {0.0f, 0.0f};           /* this lane's part of the running sum          */

    const int tiles = (Tk + FA_BK - 1) / FA_BK;
    for (int tile = 0; tile < tiles; tile++) {
        const int k0 = tile * FA_BK;
        cp_async_wait<1>(); /* K_tile has landed; V_tile may be in flight */
        __syncthreads();

        float s[NTILES][4];
#pragma unroll
        for (int nt = 0; nt < NTILES; nt++)
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++)
#pragma unroll
            for (int np = 0; np < NTILES / 2; np++) {
                /* K rows are Bᵀ ([n = key][k = d]): matrices (keys 0-7, d 0-7), (0-7, 8-15),
                 * (8-15, 0-7), (8-15, 8-15) of this 16-key pair */
                uint32_t b[4];
                ldmatrix_x4(b, &ks[(np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LD + kk * 16 +
                                   ((lane >> 3) & 1) * 8]);
                mma_bf16_16816(s[2 * np], qf[kk], &b[0]);
                mma_bf16_16816(s[2 * np + 1], qf[kk], &b[2]);
            }
        __syncthreads(); /* every warp is done with K_tile */
        if (tile + 1 < tiles)
            load_tile(ks, kg, k0 + FA_BK, Tk);
        cp_async_commit(); /* empty on the last tile: the group count stays regular */

        /* online softmax, fp32; c0,c1 belong to row group, c2,c3 to row group + 8 */
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < NTILES; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int key = k0 + nt * 8 + 2 * tig + (i & 1);
                const float x = key < Tk ? s[nt][i] * a.score_scale : -INFINITY;
                s[nt][i] = x;
                mx[i >> 1] = fmaxf(mx[i >> 1], x);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            /* the 4 lanes of a group hold one row */
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FA_FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FA_FULL_MASK, mx[r], 2));
            alpha[r] = exp2f(m[r] - mx[r]); /* 0 on the first tile (m = −∞, mx finite) */
            m[r] = mx[r];
        }
        float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int nt = 0; nt < NTILES; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = exp2f(s[nt][i] - m[i >> 1]); /* masked keys: 2^−∞ = 0 */
                s[nt][i] = p;
                row_sum[i >> 1] += p;
            }
#pragma unroll
        for (int r = 0; r < 2; r++)
            l[r] = l[r] * alpha[r] + row_sum[r];
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++) {
            o[dt][0] *= alpha[0], o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1], o[dt][3] *= alpha[1];
        }

        cp_async_wait<1>(); /* V_tile has landed; K_{tile+1} may be in flight */
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
            uint32_t pa[4];
            mma_accum_to_a_bf16(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < DTILES / 2; dp++) {
                /* V rows are B ([k = key][n = d]), read transposed: matrices (keys 0-7, d 0-7),
                 * (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) */
                uint32_t b[4];
                ldmatrix_x4_trans(b, &vs[(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD +
                                         dp * 16 + (lane >> 4) * 8]);
                mma_bf16_16816(o[2 * dp], pa, &b[0]);
                mma_bf16_16816(o[2 * dp + 1], pa, &b[2]);
            }
        }
        __syncthreads(); /* every warp is done with V_tile */
        if (tile + 1 < tiles)
            load_tile(vs, vg, k0 + FA_BK, Tk);
        cp_async_commit();
    }
    cp_async_wait<0>(); /* nothing is in flight when the block exits */

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(FA_FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FA_FULL_MASK, l[r], 2);
    }
    float *obase = a.out + (int64_t)blockIdx.z * a.o_batch + (int64_t)blockIdx.y * a.hd;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + group + 8 * r;
        if (row >= Tq)
            continue;
        const float inv = 1.0f / l[r];
        float *orow = obase + (int64_t)row * a.ldo;
#pragma unroll
        for (int dt = 0; dt < DTILES; dt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int d = dt * 8 + 2 * tig + e;
                if (d < a.hd)
                    orow[d] = o[dt][2 * r + e] * inv;
            }
    }
}

/* ---- launchers ----------------------------------------------------------------------- */

extern "C" int mk_attention_mma_supported(int hd)
{
    return hd >= 1 && hd <= FA_MAX_HD;
}

extern "C" size_t mk_attention_mma_workspace(int n, int Tq, int Tk, int H, int hd)
{
    if (n <= 0 || Tq <= 0 || Tk <= 0 || H <= 0 || !mk_attention_mma_supported(hd))
        return 0;
    return ((size_t)Tq + 2 * (size_t)Tk) * (size_t)n * H * fa_padded(hd) * sizeof(uint16_t);
}

/* Pack (q with norm q_w/q_b, k with k_w/k_b, v), then the flash kernel. */
static cudaError_t fa_run(float *out, int64_t ldo, int64_t o_batch, const float *q, int64_t ldq,
                          int64_t q_batch, const float *k, const float *v, int64_t ldkv,
                          int64_t kv_batch, int n, int Tq, int Tk, int H, int hd,
                          const float *q_w, const float *q_b, const float *k_w,
                          const float *k_b, float eps, void *workspace, cudaStream_t stream)
{
    if (n <= 0 || Tq <= 0)
        return cudaSuccess;
    if (!mk_attention_mma_supported(hd) || H <= 0 || H > 65535 || n > 65535 || Tk <= 0 ||
        !workspace)
        return cudaErrorInvalidValue;
    const int HP = fa_padded(hd);
    uint16_t *qp = (uint16_t *)workspace;
    uint16_t *kp = qp + (size_t)n * H * Tq * HP;
    uint16_t *vp = kp + (size_t)n * H * Tk * HP;

    fa_pack_args p = {};
    p.job[0] = {q, ldq, q_batch, q_w, q_b, qp, Tq};
    p.job[1] = {k, ldkv, kv_batch, k_w, k_b, kp, Tk};
    p.job[2] = {v, ldkv, kv_batch, NULL, NULL, vp, Tk};
    p.H = H, p.hd = hd, p.HP = HP, p.eps = eps;
    const int64_t pack_rows = (int64_t)(Tq > Tk ? Tq : Tk) * H;
    const dim3 pack_grid((unsigned)((pack_rows + FA_PACK_WARPS - 1) / FA_PACK_WARPS), 3,
                         (unsigned)n);
    MK_LAUNCH(pack_grid, 32 * FA_PACK_WARPS, 0, stream, attention_pack_kernel)(p);

    fa_args a = {};
    a.out = out, a.ldo = ldo, a.o_batch = o_batch;
    a.q = qp, a.k = kp, a.v = vp;
    a.Tq = Tq, a.Tk = Tk, a.H = H, a.hd = hd;
    a.score_scale = 1.4426950408889634f / sqrtf((float)hd);
    const dim3 grid((unsigned)((Tq + FA_BQ - 1) / FA_BQ), (unsigned)H, (unsigned)n);
    switch (HP / 16) {
    case 1:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<16>)(a);
        break;
    case 2:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<32>)(a);
        break;
    case 3:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<48>)(a);
        break;
    case 4:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<64>)(a);
        break;
    case 5:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<80>)(a);
        break;
    case 6:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<96>)(a);
        break;
    case 7:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<112>)(a);
        break;
    default:
        MK_LAUNCH(grid, FA_THREADS, 0, stream, flash_attention_kernel<128>)(a);
        break;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t mk_attention_n_mma(float *out, const float *qkv, int n, int T, int H,
                                          int hd, const float *q_norm_w, const float *q_norm_b,
                                          const float *k_norm_w, const float *k_norm_b,
                                          float eps, void *workspace, cudaStream_t stream)
{
    const int64_t D = (int64_t)H * hd;
    const bool normed = q_norm_w != NULL; /* both norms or neither (ops.h) */
    return fa_run(out, D, (int64_t)T * D, qkv, 3 * D, (int64_t)T * 3 * D, qkv + D, qkv + 2 * D,
                  3 * D, (int64_t)T * 3 * D, n, T, T, H, hd, q_norm_w, normed ? q_norm_b : NULL,
                  normed ? k_norm_w : NULL, normed ? k_norm_b : NULL, eps, workspace, stream);
}

extern "C" cudaError_t mk_cross_attention_mma(float *out, const float *q, int ldq,
                                              const float *k, const float *v, int ldkv, int Tq,
                                              int Tk, int H, int hd, void *workspace,
                                              cudaStream_t stream)
{
    return fa_run(out, (int64_t)H * hd, 0, q, ldq, 0, k, v, ldkv, 0, 1, Tq, Tk, H, hd, NULL,
                  NULL, NULL, NULL, 0.0f, workspace, stream);
}
