/* ops_cpu_ecdit.c — the CPU backend's EC-DiT ops (ops.h): text cross-attention, the
 * expert-choice router and MoE, and the dense SwiGLU. Part of the reference backend
 * (ops_cpu.c's rules hold: reductions in double, experts in a fixed order).
 */
#include "dit_layout.h"
#include "internal.h"
#include "ops.h"
#include "ops_cpu_parts.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- EC-DiT ops ------------------------------------------------------------------------ */

/* Attention of Tq query rows over the first Tk key rows, one head at a time, like
 * cpu_attention but with separate (strided) q, k and v and no qk-norm. The scores are formed
 * CROSS_ROWS query rows at a time, so the VAE's attention over 16384 positions needs 64 MB,
 * not 1 GB. */
#define CROSS_ROWS 1024
moire_status ops_cpu_cross_attention(const moire_ops *ops, float *out, const float *q,
                                     int ldq, const float *k, const float *v, int ldkv,
                                     int Tq, int Tk, int H, int hd)
{
    COUNT_CALL();
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    if (Tq <= 0)
        return MOIRE_OK;
    if (Tk <= 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "attention over no keys");
    const int rows_max = Tq < CROSS_ROWS ? Tq : CROSS_ROWS;
    float *qh = malloc_array((size_t)rows_max * hd, sizeof(float));
    float *kh = malloc_array((size_t)Tk * hd, sizeof(float));
    float *vh = malloc_array((size_t)Tk * hd, sizeof(float));
    float *oh = malloc_array((size_t)rows_max * hd, sizeof(float));
    float *scores = malloc_array((size_t)rows_max * Tk, sizeof(float));
    if (!qh || !kh || !vh || !oh || !scores) {
        free(qh), free(kh), free(vh), free(oh), free(scores);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "attention of %d over %d tokens needs %.1f MB of scratch memory; use "
                          "a smaller size",
                          Tq, Tk, ((double)rows_max * Tk + 2.0 * (rows_max + Tk) * hd) * 4 / 1e6);
    }
    for (int h = 0; h < H; h++) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)Tk * hd > PARALLEL_MIN_WORK)
        for (int t = 0; t < Tk; t++) {
            memcpy(kh + (size_t)t * hd, k + (size_t)t * ldkv + h * hd, hd * sizeof(float));
            memcpy(vh + (size_t)t * hd, v + (size_t)t * ldkv + h * hd, hd * sizeof(float));
        }
        for (int t0 = 0; t0 < Tq; t0 += rows_max) {
            const int rows = Tq - t0 < rows_max ? Tq - t0 : rows_max;
            for (int t = 0; t < rows; t++)
                memcpy(qh + (size_t)t * hd, q + (size_t)(t0 + t) * ldq + h * hd,
                       hd * sizeof(float));
            ops_cpu_gemm(ops, true, rows, Tk, hd, scale, qh, hd, kh, hd, scores, Tk);
            ops_cpu_softmax_rows(ops, scores, rows, Tk);
            ops_cpu_gemm(ops, false, rows, hd, Tk, 1.0f, scores, Tk, vh, hd, oh, hd);
            for (int t = 0; t < rows; t++)
                memcpy(out + (size_t)(t0 + t) * D + h * hd, oh + (size_t)t * hd,
                       hd * sizeof(float));
        }
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
moire_status ops_cpu_router_expert_choice(const moire_ops *ops, float *scores,
                                          int32_t *tokens, float *gates, const float *h,
                                          const moire_tensor *wt, int n, int T, int group,
                                          int D, int E, float capacity_factor)
{
    COUNT_CALL();
    if (E < 1 || E > 1024)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "expert choice: %d experts (up to 1024)",
                          E);
    const float *w = ops_cpu_host_of(wt);
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
        ec_candidate *cand = malloc_array((size_t)S, sizeof *cand);
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
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory selecting expert tokens");
    return MOIRE_OK;
}

/* Expert by expert in id order (a fixed summation order): gather the expert's M tokens, one
 * dense SwiGLU on them, weighted scatter-add back. Every expert has exactly M rows, the
 * static shape that makes expert choice friendly to batched GEMMs. */
moire_status ops_cpu_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                       int N, int D, const moire_swiglu *experts,
                                       const moire_swiglu *shared, int M,
                                       const int32_t *tokens, const float *gates)
{
    COUNT_CALL();
    const int E = experts->experts;
    const int max_hidden = ops_cpu_widest(experts, shared);
    const size_t rows = (size_t)(M > N ? M : N);
    float *gathered = malloc_array((size_t)M * D + 1, sizeof(float));
    float *expert_out = malloc_array(rows * D + 1, sizeof(float));
    float *scratch = malloc_array(2 * rows * (size_t)max_hidden + 1, sizeof(float));
    if (!gathered || !expert_out || !scratch) {
        free(gathered), free(expert_out), free(scratch);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
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
        ops_cpu_swiglu_rows(ops, expert_out, gathered, M, D, experts, e, scratch);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < M; i++) {
            float *dst = y + (size_t)tok[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += gate[i] * src[d];
        }
    }
    if (swiglu_present(shared)) {
        ops_cpu_swiglu_rows(ops, expert_out, h, N, D, shared, 0, scratch);
        const int64_t count = (int64_t)N * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

moire_status ops_cpu_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                            const moire_swiglu *mlp)
{
    COUNT_CALL();
    float *scratch = malloc_array(2 * (size_t)T * mlp->hidden + 1, sizeof(float));
    if (!scratch)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "an MLP over %d tokens needs %.1f MB of scratch memory", T,
                          2.0 * T * mlp->hidden * 4 / 1e6);
    ops_cpu_swiglu_rows(ops, y, h, T, D, mlp, 0, scratch);
    free(scratch);
    return MOIRE_OK;
}

