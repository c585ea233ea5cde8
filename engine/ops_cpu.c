/* ops_cpu.c — the CPU reference implementation of the ops interface (ops.h), fp32.
 *
 * This backend is the spec every other backend is judged against, so clarity wins over
 * speed where they conflict: reductions (LayerNorm statistics, softmax sums) accumulate in
 * double, and the MoE is computed expert by expert in a fixed order.
 *
 * Threads: one runtime only. OpenMP splits each GEMM into row (or column) blocks and OpenBLAS
 * runs single-threaded inside each block (context.c sets it to 1 thread). Letting OpenBLAS's
 * own pthread pool run next to OpenMP teams made both spin against each other: on 2 cores a
 * tiny forward took 800 ms instead of 2 ms.
 */
#include "internal.h"
#include "ops.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a loop runs on the calling thread: a parallel region costs
 * microseconds even when idle threads are ready, far more when they have to be woken. */
#define PARALLEL_MIN_WORK 32768

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* C[M,N] = alpha · A[M,K] · op(B), op(B) = Bᵀ for B [N,K] (b_transposed) or B for B [K,N].
 * Split across the op table's threads by rows of C, or by columns when M is too small to
 * split. Each element's K-reduction is done by one single-threaded sgemm, so for a given
 * thread count results are deterministic. */
static void gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    const CBLAS_TRANSPOSE tb = b_transposed ? CblasTrans : CblasNoTrans;
    const int threads = ops->n_threads;
    if (threads <= 1 || 2.0 * M * N * K < 4e6) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C,
                    ldc);
        return;
    }
    if (M >= 8 * threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int m0 = (int)((int64_t)M * part / threads);
            const int m1 = (int)((int64_t)M * (part + 1) / threads);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m1 - m0, N, K, alpha,
                        A + (size_t)m0 * lda, lda, B, ldb, 0.0f, C + (size_t)m0 * ldc, ldc);
        }
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int n0 = (int)((int64_t)N * part / threads);
            const int n1 = (int)((int64_t)N * (part + 1) / threads);
            const float *b_part = b_transposed ? B + (size_t)n0 * ldb : B + n0;
            if (n1 > n0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, n1 - n0, K, alpha, A, lda,
                            b_part, ldb, 0.0f, C + n0, ldc);
        }
    }
}

void moire_cpu_gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    gemm(ops, b_transposed, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

/* y[M,N] = x[M,K] · w[N,K]ᵀ + b[N] */
static moire_status cpu_linear(const moire_ops *ops, float *y, const float *x, const float *w,
                               const float *b, int M, int K, int N)
{
    if (M <= 0 || N <= 0)
        return MOIRE_OK;
    gemm(ops, true, M, N, K, 1.0f, x, K, w, K, y, N);
    if (b) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * N > PARALLEL_MIN_WORK)
        for (int m = 0; m < M; m++) {
            float *row = y + (size_t)m * N;
            for (int n = 0; n < N; n++)
                row[n] += b[n];
        }
    }
    return MOIRE_OK;
}

/* One row: (x − mean) / sqrt(var + eps), statistics in double. */
static void layernorm_row(float *y, const float *x, int D, float eps)
{
    double sum = 0.0;
    for (int d = 0; d < D; d++)
        sum += x[d];
    double mean = sum / D;
    double sq = 0.0;
    for (int d = 0; d < D; d++) {
        double c = x[d] - mean;
        sq += c * c;
    }
    double inv = 1.0 / sqrt(sq / D + (double)eps);
    for (int d = 0; d < D; d++)
        y[d] = (float)((x[d] - mean) * inv);
}

/* y[T,D] = LN(x) · (1 + scale) + shift */
static moire_status cpu_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                           const float *shift, const float *scale, int T,
                                           int D, float eps)
{
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * D > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        float *out = y + (size_t)t * D;
        layernorm_row(out, x + (size_t)t * D, D, eps);
        for (int d = 0; d < D; d++)
            out[d] = out[d] * (1.0f + scale[d]) + shift[d];
    }
    return MOIRE_OK;
}

/* x[T,D] += gate[D] ⊙ y[T,D] */
static moire_status cpu_gate_residual(const moire_ops *ops, float *x, const float *y,
                                      const float *gate, int T, int D)
{
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * D > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        float *xr = x + (size_t)t * D;
        const float *yr = y + (size_t)t * D;
        for (int d = 0; d < D; d++)
            xr[d] += gate[d] * yr[d];
    }
    return MOIRE_OK;
}

/* Per head: gather q, k, v into contiguous [T, hd] (LayerNormed for the qk-norm layout),
 * S = q·kᵀ/√hd as one GEMM, row softmax, o = S·v as another GEMM. The [T, T] score matrix is
 * materialised here, one head at a time: fine for a reference (4096 tokens → 64 MB). */
static moire_status cpu_attention(const moire_ops *ops, float *out, const float *qkv, int T,
                                  int H, int hd, const float *q_norm_w, const float *q_norm_b,
                                  const float *k_norm_w, const float *k_norm_b, float eps)
{
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *k = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *v = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *o = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *scores = moire_malloc_array((size_t)T * T, sizeof(float));
    if (!q || !k || !v || !o || !scores) {
        free(q), free(k), free(v), free(o), free(scores);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "attention over %d tokens needs %.1f MB of scratch memory", T,
                          ((double)T * T + 4.0 * T * hd) * 4 / 1e6);
    }
    for (int h = 0; h < H; h++) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * hd > PARALLEL_MIN_WORK)
        for (int t = 0; t < T; t++) {
            const float *row = qkv + (size_t)t * 3 * D;
            float *qt = q + (size_t)t * hd, *kt = k + (size_t)t * hd, *vt = v + (size_t)t * hd;
            memcpy(qt, row + h * hd, hd * sizeof(float));
            memcpy(kt, row + D + h * hd, hd * sizeof(float));
            memcpy(vt, row + 2 * D + h * hd, hd * sizeof(float));
            if (q_norm_w) {
                layernorm_row(qt, qt, hd, eps);
                layernorm_row(kt, kt, hd, eps);
                for (int d = 0; d < hd; d++) {
                    qt[d] = qt[d] * q_norm_w[d] + q_norm_b[d];
                    kt[d] = kt[d] * k_norm_w[d] + k_norm_b[d];
                }
            }
        }
        gemm(ops, true, T, T, hd, scale, q, hd, k, hd, scores, T);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * T > PARALLEL_MIN_WORK)
        for (int t = 0; t < T; t++) {
            float *row = scores + (size_t)t * T;
            float max = -FLT_MAX;
            for (int j = 0; j < T; j++)
                max = fmaxf(max, row[j]);
            double sum = 0.0;
            for (int j = 0; j < T; j++) {
                row[j] = expf(row[j] - max);
                sum += row[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < T; j++)
                row[j] *= inv;
        }
        gemm(ops, false, T, hd, T, 1.0f, scores, T, v, hd, o, hd);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * hd > PARALLEL_MIN_WORK)
        for (int t = 0; t < T; t++)
            memcpy(out + (size_t)t * D + h * hd, o + (size_t)t * hd, hd * sizeof(float));
    }
    free(q), free(k), free(v), free(o), free(scores);
    return MOIRE_OK;
}

/* logits = h·wᵀ, softmax over E, top-k by repeated selection (descending; on equal
 * probabilities the lower expert id wins, which is what a stable sort gives). */
static moire_status cpu_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                    float *top_weights, const float *h, const float *w, int T,
                                    int D, int E, int k)
{
    gemm(ops, true, T, E, D, 1.0f, h, D, w, D, logits, E);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * E > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * E;
        float probs[1024];
        float max = -FLT_MAX;
        for (int e = 0; e < E; e++)
            max = fmaxf(max, row[e]);
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            probs[e] = expf(row[e] - max);
            sum += probs[e];
        }
        for (int e = 0; e < E; e++)
            probs[e] = (float)(probs[e] / sum);
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                if (probs[e] < 0.0f)
                    continue; /* already taken */
                if (best < 0 || probs[e] > probs[best])
                    best = e;
            }
            top_ids[(size_t)t * k + j] = best;
            top_weights[(size_t)t * k + j] = probs[best];
            probs[best] = -1.0f;
        }
    }
    return MOIRE_OK;
}

/* One SwiGLU MLP on m gathered rows: out[m,D] = down(SiLU(gate(x)) ⊙ up(x)).
 * scratch holds 2·m·F floats. */
static void swiglu_rows(const moire_ops *ops, float *out, const float *x, int m, int D,
                        const dit_swiglu_weights *mlp, float *scratch)
{
    const int F = mlp->hidden;
    float *gate = scratch, *up = scratch + (size_t)m * F;
    gemm(ops, true, m, F, D, 1.0f, x, D, mlp->gate_proj_weight, D, gate, F);
    gemm(ops, true, m, F, D, 1.0f, x, D, mlp->up_proj_weight, D, up, F);
    const int64_t count = (int64_t)m * F;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        gate[i] = silu(gate[i]) * up[i];
    gemm(ops, true, m, D, F, 1.0f, gate, F, mlp->down_proj_weight, F, out, D);
}

/* Routed experts then the shared one. Tokens are grouped per expert (in token order), each
 * expert runs as dense GEMMs on its gathered rows, and its weighted output is added back.
 * Experts are visited in id order so the summation order is fixed. */
static moire_status cpu_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                    int D, const dit_block_weights *block, int E, int k,
                                    const int32_t *top_ids, const float *top_weights)
{
    int max_hidden = block->shared_experts.hidden;
    for (int e = 0; e < E; e++)
        if (block->experts[e].hidden > max_hidden)
            max_hidden = block->experts[e].hidden;
    const size_t rows = (size_t)T;
    int32_t *token_of = moire_malloc_array(rows, sizeof(int32_t));
    float *weight_of = moire_malloc_array(rows, sizeof(float));
    float *gathered = moire_malloc_array(rows * D, sizeof(float));
    float *expert_out = moire_malloc_array(rows * D, sizeof(float));
    float *scratch = moire_malloc_array(2 * rows * (size_t)max_hidden, sizeof(float));
    if (!token_of || !weight_of || !gathered || !expert_out || !scratch) {
        free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "MoE over %d tokens needs %.1f MB of scratch memory", T,
                          (2.0 * T * D + 2.0 * T * max_hidden) * 4 / 1e6);
    }
    memset(y, 0, rows * D * sizeof(float));
    for (int e = 0; e < E; e++) {
        int m = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (top_ids[(size_t)t * k + j] == e) {
                    token_of[m] = t;
                    weight_of[m] = top_weights[(size_t)t * k + j];
                    m++;
                }
        if (m == 0)
            continue;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)m * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < m; i++)
            memcpy(gathered + (size_t)i * D, h + (size_t)token_of[i] * D, D * sizeof(float));
        swiglu_rows(ops, expert_out, gathered, m, D, &block->experts[e], scratch);
        /* A token appears at most once per expert, so rows never collide. */
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)m * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < m; i++) {
            float *dst = y + (size_t)token_of[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += weight_of[i] * src[d];
        }
    }
    if (block->shared_experts.hidden > 0) {
        swiglu_rows(ops, expert_out, h, T, D, &block->shared_experts, scratch);
        const int64_t count = (int64_t)T * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

/* ---- EC-DiT ops ------------------------------------------------------------------------ */

/* Attention of Tq query rows over the first Tk key rows, one head at a time, like
 * cpu_attention but with separate (strided) q, k and v and no qk-norm. */
static moire_status cpu_cross_attention(const moire_ops *ops, float *out, const float *q,
                                        int ldq, const float *k, const float *v, int ldkv,
                                        int Tq, int Tk, int H, int hd)
{
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    if (Tq <= 0)
        return MOIRE_OK;
    if (Tk <= 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "attention over no keys");
    float *qh = moire_malloc_array((size_t)Tq * hd, sizeof(float));
    float *kh = moire_malloc_array((size_t)Tk * hd, sizeof(float));
    float *vh = moire_malloc_array((size_t)Tk * hd, sizeof(float));
    float *oh = moire_malloc_array((size_t)Tq * hd, sizeof(float));
    float *scores = moire_malloc_array((size_t)Tq * Tk, sizeof(float));
    if (!qh || !kh || !vh || !oh || !scores) {
        free(qh), free(kh), free(vh), free(oh), free(scores);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "attention of %d over %d tokens needs %.1f MB of scratch memory", Tq,
                          Tk, ((double)Tq * Tk + 2.0 * (Tq + Tk) * hd) * 4 / 1e6);
    }
    for (int h = 0; h < H; h++) {
        for (int t = 0; t < Tq; t++)
            memcpy(qh + (size_t)t * hd, q + (size_t)t * ldq + h * hd, hd * sizeof(float));
        for (int t = 0; t < Tk; t++) {
            memcpy(kh + (size_t)t * hd, k + (size_t)t * ldkv + h * hd, hd * sizeof(float));
            memcpy(vh + (size_t)t * hd, v + (size_t)t * ldkv + h * hd, hd * sizeof(float));
        }
        gemm(ops, true, Tq, Tk, hd, scale, qh, hd, kh, hd, scores, Tk);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)Tq * Tk > PARALLEL_MIN_WORK)
        for (int t = 0; t < Tq; t++) {
            float *row = scores + (size_t)t * Tk;
            float max = -FLT_MAX;
            for (int j = 0; j < Tk; j++)
                max = fmaxf(max, row[j]);
            double sum = 0.0;
            for (int j = 0; j < Tk; j++) {
                row[j] = expf(row[j] - max);
                sum += row[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < Tk; j++)
                row[j] *= inv;
        }
        gemm(ops, false, Tq, hd, Tk, 1.0f, scores, Tk, vh, hd, oh, hd);
        for (int t = 0; t < Tq; t++)
            memcpy(out + (size_t)t * D + h * hd, oh + (size_t)t * hd, hd * sizeof(float));
    }
    free(qh), free(kh), free(vh), free(oh), free(scores);
    return MOIRE_OK;
}

typedef struct ec_candidate {
    float score;
    int32_t token;
} ec_candidate;

/* Descending score, then ascending token: the documented tie rule, and a total order, so
 * qsort's instability cannot show. */
static int compare_candidates(const void *a, const void *b)
{
    const ec_candidate *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* 1. scores per token (double dot products and softmax, parallel over tokens);
 * 2. per (group, expert) pair: sort the group's tokens by the expert's score, keep the top C.
 *    This is the synchronisation point of expert choice: a whole group's scores are needed
 *    before any expert can start. */
static moire_status cpu_router_expert_choice(const moire_ops *ops, float *scores,
                                             int32_t *tokens, float *gates, const float *h,
                                             const float *w, int n, int T, int group, int D,
                                             int E, float capacity_factor)
{
    const int64_t N = (int64_t)n * T;
#pragma omp parallel for num_threads(ops->n_threads) if (N * E * D > PARALLEL_MIN_WORK)
    for (int64_t t = 0; t < N; t++) {
        const float *row = h + t * D;
        double logits[1024];
        double max = -DBL_MAX;
        for (int e = 0; e < E; e++) {
            const float *we = w + (size_t)e * D;
            double acc = 0.0;
            for (int d = 0; d < D; d++)
                acc += (double)row[d] * we[d];
            logits[e] = acc;
            max = acc > max ? acc : max;
        }
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            logits[e] = exp(logits[e] - max);
            sum += logits[e];
        }
        for (int e = 0; e < E; e++)
            scores[t * E + e] = (float)(logits[e] / sum);
    }

    const int G = moire_ec_group_size(T, group);
    const int groups_per_image = (T + G - 1) / G;
    const int slots = moire_ec_slots_per_image(T, group, E, capacity_factor);
    const int64_t M = (int64_t)n * slots;
    const int64_t pairs = (int64_t)n * groups_per_image * E;
    int failed = 0;
#pragma omp parallel for num_threads(ops->n_threads) schedule(dynamic, 1) \
    if (N * E > PARALLEL_MIN_WORK / 8)
    for (int64_t pair = 0; pair < pairs; pair++) {
        const int e = (int)(pair % E);
        const int64_t g = pair / E;
        const int image = (int)(g / groups_per_image), j = (int)(g % groups_per_image);
        const int start = j * G, S = T - start < G ? T - start : G;
        const int C = moire_ec_capacity(S, E, capacity_factor);
        int offset = image * slots; /* slots of the earlier groups of this image */
        for (int jj = 0; jj < j; jj++)
            offset += moire_ec_capacity(G, E, capacity_factor);
        ec_candidate *cand = moire_malloc_array((size_t)S, sizeof *cand);
        if (!cand) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const int64_t first = (int64_t)image * T + start;
        for (int s = 0; s < S; s++) {
            cand[s].score = scores[(first + s) * E + e];
            cand[s].token = (int32_t)(first + s);
        }
        qsort(cand, (size_t)S, sizeof *cand, compare_candidates);
        for (int c = 0; c < C; c++) {
            tokens[e * M + offset + c] = cand[c].token;
            gates[e * M + offset + c] = cand[c].score;
        }
        free(cand);
    }
    if (failed)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory selecting expert tokens");
    return MOIRE_OK;
}

/* Expert by expert in id order (a fixed summation order): gather the expert's M tokens, one
 * dense SwiGLU on them, weighted scatter-add back. Every expert has exactly M rows, the
 * static shape that makes expert choice friendly to batched GEMMs. */
static moire_status cpu_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                          int N, int D, const dit_swiglu_weights *experts,
                                          const dit_swiglu_weights *shared, int E, int M,
                                          const int32_t *tokens, const float *gates)
{
    const int shared_hidden = shared ? shared->hidden : 0;
    int max_hidden = shared_hidden;
    for (int e = 0; e < E; e++)
        max_hidden = experts[e].hidden > max_hidden ? experts[e].hidden : max_hidden;
    const size_t rows = (size_t)(M > N ? M : N);
    float *gathered = moire_malloc_array((size_t)M * D, sizeof(float));
    float *expert_out = moire_malloc_array(rows * D, sizeof(float));
    float *scratch = moire_malloc_array(2 * rows * (size_t)max_hidden, sizeof(float));
    if ((M > 0 && !gathered) || !expert_out || !scratch) {
        free(gathered), free(expert_out), free(scratch);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "expert-choice MoE over %d tokens needs %.1f MB of scratch memory", N,
                          ((double)M * D + rows * D + 2.0 * rows * max_hidden) * 4 / 1e6);
    }
    memset(y, 0, (size_t)N * D * sizeof(float));
    for (int e = 0; e < E && M > 0; e++) {
        const int32_t *tok = tokens + (size_t)e * M;
        const float *gate = gates + (size_t)e * M;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < M; i++)
            memcpy(gathered + (size_t)i * D, h + (size_t)tok[i] * D, D * sizeof(float));
        swiglu_rows(ops, expert_out, gathered, M, D, &experts[e], scratch);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < M; i++) {
            float *dst = y + (size_t)tok[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += gate[i] * src[d];
        }
    }
    if (shared_hidden > 0) {
        swiglu_rows(ops, expert_out, h, N, D, shared, scratch);
        const int64_t count = (int64_t)N * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

static moire_status cpu_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                               const dit_swiglu_weights *mlp)
{
    float *scratch = moire_malloc_array(2 * (size_t)T * mlp->hidden, sizeof(float));
    if (!scratch)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "an MLP over %d tokens needs %.1f MB of scratch memory", T,
                          2.0 * T * mlp->hidden * 4 / 1e6);
    swiglu_rows(ops, y, h, T, D, mlp, scratch);
    free(scratch);
    return MOIRE_OK;
}

static int default_thread_count(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

/* Fills `ops` with the CPU backend; the table is owned by the caller (one per context). */
void moire_ops_cpu_init(moire_ops *ops, int n_threads)
{
    static const moire_ops prototype = {
        .name = "cpu",
        .linear = cpu_linear,
        .layernorm_modulate = cpu_layernorm_modulate,
        .gate_residual = cpu_gate_residual,
        .attention = cpu_attention,
        .router_topk = cpu_router_topk,
        .moe_experts = cpu_moe_experts,
        .cross_attention = cpu_cross_attention,
        .router_expert_choice = cpu_router_expert_choice,
        .moe_expert_choice = cpu_moe_expert_choice,
        .swiglu = cpu_swiglu,
    };
    *ops = prototype;
    ops->n_threads = n_threads > 0 ? n_threads : default_thread_count();
}
