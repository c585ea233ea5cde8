/* test_ops.c — each CPU op against a naive double-precision loop on fresh random inputs
 * (never zeros), including this model family's awkward shapes: hidden 1152 and 1408,
 * head_dim 72 and 88, experts that receive 0, 1, an odd number of, or all tokens; and the
 * text-encoder, data-movement and image ops of the SD-VAE.
 * The same cases are what the CUDA backend's tests run against the CPU op. */
#include "model.h"
#include "ops.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static moire_ops ops;

static float *rnd(size_t n, uint64_t seed, float scale)
{
    float *x = malloc(n * sizeof(float));
    test_fill_random(x, (int64_t)n, seed, -scale, scale);
    return x;
}

/* A weight as the op table takes it (on the CPU: the host array itself). */
static moire_tensor wt(const float *host, int64_t rows, int64_t cols)
{
    moire_tensor t;
    CHECK(ops.weight_upload(&ops, &t, &host, 1, rows, cols, MOIRE_WEIGHT_GEMM) == MOIRE_OK,
          "weight_upload: %s", moire_last_error());
    return t;
}

/* E host experts as the stacked moire_swiglu the ops take (absent when E or width is 0). */
static moire_swiglu stack(const dit_swiglu_weights *experts, int E, int D)
{
    moire_swiglu s = {0};
    if (E < 1 || experts[0].hidden < 1)
        return s;
    const int F = experts[0].hidden;
    const float *gu[128], *down[64];
    for (int e = 0; e < E; e++) {
        gu[2 * e] = experts[e].gate_proj_weight;
        gu[2 * e + 1] = experts[e].up_proj_weight;
        down[e] = experts[e].down_proj_weight;
    }
    ops.weight_upload(&ops, &s.gate_up, gu, 2 * E, F, D, MOIRE_WEIGHT_GEMM);
    ops.weight_upload(&ops, &s.down, down, E, D, F, MOIRE_WEIGHT_GEMM);
    s.experts = E;
    s.hidden = F;
    return s;
}

static void stack_free(moire_swiglu *s)
{
    ops.weight_free(&ops, &s->gate_up);
    ops.weight_free(&ops, &s->down);
}

static void naive_linear(float *y, const float *x, const float *w, const float *b, int M, int K,
                         int N)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = b ? b[n] : 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
            y[(size_t)m * N + n] = (float)acc;
        }
}

static void test_linear(int M, int K, int N)
{
    float *x = rnd((size_t)M * K, 1, 1), *w = rnd((size_t)N * K, 2, 0.1f), *b = rnd(N, 3, 1);
    float *y = malloc((size_t)M * N * 4), *want = malloc((size_t)M * N * 4);
    moire_tensor W = wt(w, N, K), B = wt(b, 1, N);
    ops.linear(&ops, y, x, &W, &B, M, K, N);
    naive_linear(want, x, w, b, M, K, N);
    char name[64];
    snprintf(name, sizeof name, "linear %dx%dx%d", M, K, N);
    test_check_tensor(name, y, want, (int64_t)M * N, TOL);
    free(x), free(w), free(b), free(y), free(want);
}

static void naive_ln(double *out, const float *x, int D, double eps)
{
    double mean = 0, var = 0;
    for (int d = 0; d < D; d++)
        mean += x[d];
    mean /= D;
    for (int d = 0; d < D; d++)
        var += (x[d] - mean) * (x[d] - mean);
    var /= D;
    for (int d = 0; d < D; d++)
        out[d] = (x[d] - mean) / sqrt(var + eps);
}

static void test_layernorm_modulate(int T, int D)
{
    float *x = rnd((size_t)T * D, 4, 3), *shift = rnd(D, 5, 1), *scale = rnd(D, 6, 1);
    float *y = malloc((size_t)T * D * 4), *want = malloc((size_t)T * D * 4);
    double *row = malloc(D * sizeof(double));
    for (int i = 0; i < T * D; i++)
        x[i] += 5.0f; /* a mean offset, as real activations have */
    ops.layernorm_modulate(&ops, y, x, shift, scale, 0, 1, T, D, 1e-6f);
    for (int t = 0; t < T; t++) {
        naive_ln(row, x + (size_t)t * D, D, 1e-6);
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = (float)(row[d] * (1.0 + scale[d]) + shift[d]);
    }
    char name[64];
    snprintf(name, sizeof name, "layernorm_modulate T=%d D=%d", T, D);
    test_check_tensor(name, y, want, (int64_t)T * D, TOL);
    free(x), free(shift), free(scale), free(y), free(want), free(row);
}

static void test_gate_residual(int T, int D)
{
    float *x = rnd((size_t)T * D, 7, 1), *y = rnd((size_t)T * D, 8, 1), *g = rnd(D, 9, 1);
    float *want = malloc((size_t)T * D * 4);
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = x[(size_t)t * D + d] + g[d] * y[(size_t)t * D + d];
    ops.gate_residual(&ops, x, y, (int64_t)T * D, g, 0, 1, T, D);
    test_check_tensor("gate_residual", x, want, (int64_t)T * D, TOL);
    free(x), free(y), free(g), free(want);
}

static void test_attention(int T, int H, int hd, bool qk_norm)
{
    const int D = H * hd;
    float *qkv = rnd((size_t)T * 3 * D, 10, 2);
    float *qw = rnd(hd, 11, 0.5f), *qb = rnd(hd, 12, 0.2f), *kw = rnd(hd, 13, 0.5f),
          *kb = rnd(hd, 14, 0.2f);
    for (int d = 0; d < hd; d++)
        qw[d] += 1.0f, kw[d] += 1.0f;
    float *out = malloc((size_t)T * D * 4), *want = malloc((size_t)T * D * 4);
    moire_tensor QW = wt(qw, 1, hd), QB = wt(qb, 1, hd), KW = wt(kw, 1, hd), KB = wt(kb, 1, hd);
    ops.attention(&ops, out, qkv, 1, T, H, hd, qk_norm ? &QW : NULL, &QB, qk_norm ? &KW : NULL,
                  &KB, 1e-6f);
    double *q = malloc((size_t)T * hd * 8), *k = malloc((size_t)T * hd * 8), *p = malloc(T * 8);
    for (int h = 0; h < H; h++) {
        for (int t = 0; t < T; t++) {
            const float *row = qkv + (size_t)t * 3 * D;
            if (qk_norm) {
                naive_ln(q + (size_t)t * hd, row + h * hd, hd, 1e-6);
                naive_ln(k + (size_t)t * hd, row + D + h * hd, hd, 1e-6);
                for (int d = 0; d < hd; d++) {
                    q[(size_t)t * hd + d] = q[(size_t)t * hd + d] * qw[d] + qb[d];
                    k[(size_t)t * hd + d] = k[(size_t)t * hd + d] * kw[d] + kb[d];
                }
            } else {
                for (int d = 0; d < hd; d++) {
                    q[(size_t)t * hd + d] = row[h * hd + d];
                    k[(size_t)t * hd + d] = row[D + h * hd + d];
                }
            }
        }
        for (int i = 0; i < T; i++) {
            double max = -1e300, sum = 0;
            for (int j = 0; j < T; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += q[(size_t)i * hd + d] * k[(size_t)j * hd + d];
                p[j] = s / sqrt((double)hd);
                max = fmax(max, p[j]);
            }
            for (int j = 0; j < T; j++)
                sum += (p[j] = exp(p[j] - max));
            for (int d = 0; d < hd; d++) {
                double acc = 0;
                for (int j = 0; j < T; j++)
                    acc += p[j] / sum * qkv[(size_t)j * 3 * D + 2 * D + h * hd + d];
                want[(size_t)i * D + h * hd + d] = (float)acc;
            }
        }
    }
    char name[64];
    snprintf(name, sizeof name, "attention T=%d H=%d hd=%d%s", T, H, hd, qk_norm ? " qk-norm" : "");
    test_check_tensor(name, out, want, (int64_t)T * D, TOL);
    free(qkv), free(qw), free(qb), free(kw), free(kb), free(out), free(want), free(q), free(k),
        free(p);
}

static void test_router(int T, int D, int E, int k)
{
    float *h = rnd((size_t)T * D, 15, 1), *w = rnd((size_t)E * D, 16, 0.3f);
    float *logits = malloc((size_t)T * E * 4), *tw = malloc((size_t)T * k * 4);
    int32_t *ids = malloc((size_t)T * k * 4);
    moire_tensor W = wt(w, E, D);
    ops.router_topk(&ops, logits, ids, tw, h, &W, T, D, E, k);
    float *want = malloc((size_t)T * E * 4);
    naive_linear(want, h, w, NULL, T, D, E);
    test_check_tensor("router logits", logits, want, (int64_t)T * E, TOL);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        double sum = 0, probs[64];
        for (int e = 0; e < E; e++)
            sum += probs[e] = exp((double)want[(size_t)t * E + e]);
        for (int j = 0; j < k; j++) {
            int id = ids[(size_t)t * k + j];
            /* the j-th pick must be ≥ every expert not picked, and its weight its prob */
            for (int e = 0; e < E; e++) {
                bool picked = false;
                for (int jj = 0; jj <= j; jj++)
                    picked |= ids[(size_t)t * k + jj] == e;
                if (!picked && probs[e] > probs[id] * (1 + 1e-6))
                    bad++;
            }
            if (fabs(tw[(size_t)t * k + j] - probs[id] / sum) > 1e-6)
                bad++;
        }
    }
    CHECK(bad == 0, "router top-%d: %d wrong picks or weights", k, bad);
    free(h), free(w), free(logits), free(tw), free(ids), free(want);
}

static void naive_swiglu(double *out, const float *x, const dit_swiglu_weights *m, int D)
{
    double *a = malloc(m->hidden * sizeof(double));
    for (int f = 0; f < m->hidden; f++) {
        double g = 0, u = 0;
        for (int d = 0; d < D; d++) {
            g += (double)x[d] * m->gate_proj_weight[(size_t)f * D + d];
            u += (double)x[d] * m->up_proj_weight[(size_t)f * D + d];
        }
        a[f] = g / (1 + exp(-g)) * u;
    }
    for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int f = 0; f < m->hidden; f++)
            acc += a[f] * m->down_proj_weight[(size_t)d * m->hidden + f];
        out[d] = acc;
    }
    free(a);
}

/* Expert loads: expert 0 gets no token, expert 1 exactly one, expert 2 every token,
 * the rest an odd spread. */
static void test_moe(int T, int D, int F, int S, int E)
{
    const int k = 2;
    dit_swiglu_weights *experts = calloc(E, sizeof *experts);
    float *to_free[64];
    int nf = 0;
    for (int e = 0; e < E; e++) {
        experts[e].gate_proj_weight = to_free[nf++] = rnd((size_t)F * D, 100 + e, 0.2f);
        experts[e].up_proj_weight = to_free[nf++] = rnd((size_t)F * D, 200 + e, 0.2f);
        experts[e].down_proj_weight = to_free[nf++] = rnd((size_t)D * F, 300 + e, 0.1f);
        experts[e].hidden = F;
    }
    dit_block_weights block = {.experts = experts};
    block.shared_experts.gate_proj_weight = to_free[nf++] = rnd((size_t)S * D, 400, 0.2f);
    block.shared_experts.up_proj_weight = to_free[nf++] = rnd((size_t)S * D, 401, 0.2f);
    block.shared_experts.down_proj_weight = to_free[nf++] = rnd((size_t)D * S, 402, 0.1f);
    block.shared_experts.hidden = S;

    float *h = rnd((size_t)T * D, 17, 1), *tw = rnd((size_t)T * k, 18, 0.5f);
    int32_t *ids = malloc((size_t)T * k * 4);
    for (int t = 0; t < T; t++) {
        ids[t * k] = 2;
        ids[t * k + 1] = t == 0 ? 1 : 3 + (t * 7) % (E - 3);
        tw[t * k] += 0.5f;
    }
    float *y = malloc((size_t)T * D * 4), *want = malloc((size_t)T * D * 4);
    double *tmp = malloc(D * sizeof(double)), *acc = malloc(D * sizeof(double));
    moire_swiglu routed = stack(experts, E, D), shared = stack(&block.shared_experts, 1, D);
    ops.moe_experts(&ops, y, h, T, D, &routed, &shared, k, ids, tw);
    stack_free(&routed), stack_free(&shared);
    for (int t = 0; t < T; t++) {
        naive_swiglu(acc, h + (size_t)t * D, &block.shared_experts, D);
        for (int j = 0; j < k; j++) {
            naive_swiglu(tmp, h + (size_t)t * D, &experts[ids[t * k + j]], D);
            for (int d = 0; d < D; d++)
                acc[d] += tw[t * k + j] * tmp[d];
        }
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = (float)acc[d];
    }
    char name[64];
    snprintf(name, sizeof name, "moe T=%d D=%d F=%d E=%d (loads 0,1,all,odd)", T, D, F, E);
    test_check_tensor(name, y, want, (int64_t)T * D, TOL);
    for (int i = 0; i < nf; i++)
        free(to_free[i]);
    free(experts), free(h), free(tw), free(ids), free(y), free(want), free(tmp), free(acc);
}

/* ---- EC-DiT ops ---- */

/* Cross-attention with strided q and kv and only the first Tk keys attended to: a padded
 * key row (beyond Tk) is filled with huge values, so any leak shows. */
static void test_cross_attention(int Tq, int Tk, int L, int H, int hd)
{
    const int D = H * hd;
    float *q = rnd((size_t)Tq * 3 * D, 41, 1), *kv = rnd((size_t)L * 2 * D, 42, 1);
    for (int t = Tk; t < L; t++)
        for (int d = 0; d < 2 * D; d++)
            kv[(size_t)t * 2 * D + d] = 1e3f;
    float *out = malloc((size_t)Tq * D * 4), *want = malloc((size_t)Tq * D * 4);
    double *s = malloc((size_t)Tk * sizeof(double));
    ops.cross_attention(&ops, out, q, 3 * D, kv, kv + D, 2 * D, Tq, Tk, H, hd);
    for (int t = 0; t < Tq; t++)
        for (int h = 0; h < H; h++) {
            double max = -1e300, sum = 0;
            for (int j = 0; j < Tk; j++) {
                double acc = 0;
                for (int d = 0; d < hd; d++)
                    acc += (double)q[(size_t)t * 3 * D + h * hd + d] *
                           kv[(size_t)j * 2 * D + h * hd + d];
                s[j] = acc / sqrt((double)hd);
                max = s[j] > max ? s[j] : max;
            }
            for (int j = 0; j < Tk; j++)
                sum += s[j] = exp(s[j] - max);
            for (int d = 0; d < hd; d++) {
                double acc = 0;
                for (int j = 0; j < Tk; j++)
                    acc += s[j] / sum * kv[(size_t)j * 2 * D + D + h * hd + d];
                want[(size_t)t * D + h * hd + d] = (float)acc;
            }
        }
    char name[80];
    snprintf(name, sizeof name, "cross_attention Tq=%d Tk=%d of %d H=%d hd=%d", Tq, Tk, L, H, hd);
    test_check_tensor(name, out, want, (int64_t)Tq * D, TOL);
    free(q), free(kv), free(out), free(want), free(s);
}

/* Expert choice against a naive selection: for each group and expert, C passes that each
 * take the best remaining token (lowest index on equal scores). Rows 1 and 2 are duplicated
 * further on so exact ties occur; capacity factors give C = 1, a fraction, and C > S
 * (clamped). */
static void test_expert_choice(int n, int T, int group, int D, int E, float fc)
{
    const int64_t N = (int64_t)n * T;
    float *h = rnd((size_t)N * D, 51, 1), *w = rnd((size_t)E * D, 52, 0.5f);
    for (int64_t t = 3; t < N; t += 3)
        memcpy(h + t * D, h + (t % 2 ? 1 : 2) * (int64_t)D, D * sizeof(float));
    const int slots = moire_ec_slots_per_image(T, group, E, fc);
    const int64_t M = (int64_t)n * slots;
    float *scores = malloc((size_t)N * E * 4), *gates = malloc((size_t)(E * M + 1) * 4);
    int32_t *tokens = malloc((size_t)(E * M + 1) * 4);
    moire_tensor W = wt(w, E, D);
    ops.router_expert_choice(&ops, scores, tokens, gates, h, &W, n, T, group, D, E, fc);
    int bad_scores = 0, bad_picks = 0, zero = 0;
    double *probs = malloc((size_t)N * E * sizeof(double));
    for (int64_t t = 0; t < N; t++) {
        double sum = 0;
        for (int e = 0; e < E; e++) {
            double acc = 0;
            for (int d = 0; d < D; d++)
                acc += (double)h[t * D + d] * w[(size_t)e * D + d];
            sum += probs[t * E + e] = exp(acc);
        }
        for (int e = 0; e < E; e++) {
            probs[t * E + e] /= sum;
            bad_scores += fabs(scores[t * E + e] - probs[t * E + e]) > 1e-6;
        }
    }
    const int G = moire_ec_group_size(T, group);
    char *taken = malloc((size_t)N);
    for (int e = 0; e < E; e++) {
        int64_t slot = 0;
        for (int i = 0; i < n; i++)
            for (int start = 0; start < T; start += G) {
                const int S = T - start < G ? T - start : G, C = moire_ec_capacity(S, E, fc);
                const int64_t first = (int64_t)i * T + start;
                memset(taken, 0, (size_t)N);
                for (int c = 0; c < C; c++, slot++) {
                    int64_t best = -1;
                    for (int64_t t = first; t < first + S; t++)
                        if (!taken[t] && (best < 0 || scores[t * E + e] > scores[best * E + e]))
                            best = t;
                    taken[best] = 1;
                    bad_picks += tokens[e * M + slot] != best ||
                                 gates[e * M + slot] != scores[best * E + e];
                }
            }
        bad_picks += slot != M;
    }
    int *count = calloc((size_t)N, sizeof(int));
    for (int64_t j = 0; j < E * M; j++)
        count[tokens[j]]++;
    for (int64_t t = 0; t < N; t++)
        zero += count[t] == 0;
    char name[96];
    snprintf(name, sizeof name, "expert choice n=%d T=%d group=%d E=%d fc=%g: M=%lld, %d unchosen",
             n, T, group, E, (double)fc, (long long)M, zero);
    CHECK(bad_scores == 0 && bad_picks == 0, "%s: %d bad scores, %d bad picks", name, bad_scores,
          bad_picks);
    printf("%s %s\n", bad_scores || bad_picks ? "NOT OK" : "OK    ", name);
    free(h), free(w), free(scores), free(gates), free(tokens), free(probs), free(taken);
    free(count);
}

/* The expert-choice combine: M rows per expert, some tokens taken by several experts, some
 * by none; with and without a shared expert. */
static void test_moe_expert_choice(int N, int D, int F, int S, int E, int M)
{
    dit_swiglu_weights *experts = calloc(E, sizeof *experts);
    float *to_free[64];
    int nf = 0;
    for (int e = 0; e < E; e++) {
        experts[e].gate_proj_weight = to_free[nf++] = rnd((size_t)F * D, 500 + e, 0.2f);
        experts[e].up_proj_weight = to_free[nf++] = rnd((size_t)F * D, 600 + e, 0.2f);
        experts[e].down_proj_weight = to_free[nf++] = rnd((size_t)D * F, 700 + e, 0.1f);
        experts[e].hidden = F;
    }
    dit_swiglu_weights shared = {.hidden = S};
    if (S) {
        shared.gate_proj_weight = to_free[nf++] = rnd((size_t)S * D, 800, 0.2f);
        shared.up_proj_weight = to_free[nf++] = rnd((size_t)S * D, 801, 0.2f);
        shared.down_proj_weight = to_free[nf++] = rnd((size_t)D * S, 802, 0.1f);
    }
    float *h = rnd((size_t)N * D, 61, 1), *gates = rnd((size_t)E * M, 62, 0.5f);
    int32_t *tokens = malloc((size_t)E * M * 4);
    for (int e = 0; e < E; e++)
        for (int j = 0; j < M; j++) /* distinct per expert; token N−1 never taken */
            tokens[e * M + j] = (int32_t)((j * 5 + e) % (N - 1));
    float *y = malloc((size_t)N * D * 4), *want = calloc((size_t)N * D, 4);
    double *tmp = malloc(D * sizeof(double));
    moire_swiglu routed = stack(experts, E, D), shared_stack = stack(&shared, S ? 1 : 0, D);
    ops.moe_expert_choice(&ops, y, h, N, D, &routed, &shared_stack, M, tokens, gates);
    stack_free(&routed), stack_free(&shared_stack);
    double *acc = calloc((size_t)N * D, sizeof(double));
    for (int e = 0; e < E; e++)
        for (int j = 0; j < M; j++) {
            naive_swiglu(tmp, h + (size_t)tokens[e * M + j] * D, &experts[e], D);
            for (int d = 0; d < D; d++)
                acc[(size_t)tokens[e * M + j] * D + d] += gates[e * M + j] * tmp[d];
        }
    for (int t = 0; t < N; t++) {
        if (S)
            naive_swiglu(tmp, h + (size_t)t * D, &shared, D);
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = (float)(acc[(size_t)t * D + d] + (S ? tmp[d] : 0.0));
    }
    char name[80];
    snprintf(name, sizeof name, "moe expert choice N=%d D=%d E=%d M=%d shared=%d", N, D, E, M, S);
    test_check_tensor(name, y, want, (int64_t)N * D, TOL);
    for (int i = 0; i < nf; i++)
        free(to_free[i]);
    free(experts), free(h), free(gates), free(tokens), free(y), free(want), free(tmp), free(acc);
}

/* ---- the rest of the table: text encoder, data movement, image ops ---- */

static void test_layernorm_affine_gelu(int T, int D)
{
    float *x = rnd((size_t)T * D, 131, 2), *w = rnd(D, 132, 1), *b = rnd(D, 133, 1);
    float *y = malloc((size_t)T * D * 4), *want = malloc((size_t)T * D * 4);
    double *row = malloc(D * sizeof(double));
    moire_tensor W = wt(w, 1, D), B = wt(b, 1, D);
    ops.layernorm_affine(&ops, y, x, &W, &B, T, D, 1e-5f);
    for (int t = 0; t < T; t++) {
        naive_ln(row, x + (size_t)t * D, D, 1e-5);
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = (float)(row[d] * w[d] + b[d]);
    }
    test_check_tensor("layernorm_affine", y, want, (int64_t)T * D, TOL);
    ops.gelu(&ops, y, x, (int64_t)T * D);
    for (int i = 0; i < T * D; i++)
        want[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
    test_check_tensor("gelu (erf)", y, want, (int64_t)T * D, TOL);
    free(x), free(w), free(b), free(y), free(want), free(row);
}

/* Three images, each with its own modulation row (stride 6D), and the broadcast add. */
static void test_batched_rows(int n, int T, int D)
{
    const int64_t stride = 6 * (int64_t)D, N = (int64_t)n * T * D;
    float *x = rnd((size_t)N, 141, 2), *mod = rnd((size_t)(n * stride), 142, 1);
    float *y = malloc((size_t)N * 4), *want = malloc((size_t)N * 4);
    double *row = malloc(D * sizeof(double));
    ops.layernorm_modulate(&ops, y, x, mod + 3 * D, mod + 4 * D, stride, n, T, D, 1e-6f);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++) {
            const size_t r = (size_t)i * T + t;
            naive_ln(row, x + r * D, D, 1e-6);
            for (int d = 0; d < D; d++)
                want[r * D + d] = (float)(row[d] * (1.0 + mod[i * stride + 4 * D + d]) +
                                          mod[i * stride + 3 * D + d]);
        }
    test_check_tensor("layernorm_modulate, 3 images", y, want, N, TOL);
    float *pos = rnd((size_t)T * D, 143, 1);
    memcpy(want, x, (size_t)N * 4);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < T * D; j++)
            want[(size_t)i * T * D + j] += pos[j];
    ops.gate_residual(&ops, x, pos, 0, NULL, 0, n, T, D);
    test_check_tensor("gate_residual broadcast, no gate", x, want, N, 0.0);
    free(x), free(mod), free(y), free(want), free(row), free(pos);
}

static void test_gather_mean_transpose(void)
{
    enum { V = 11, D = 6, P = 2, L = 5 };
    float *table = rnd(V * D, 151, 1), x[P * L * D], y[P * L * D], want[P * L * D];
    int32_t ids[P * L], len[P] = {3, 5};
    for (int i = 0; i < P * L; i++)
        ids[i] = (i * 7) % V;
    moire_tensor T = wt(table, V, D);
    ops.gather_rows(&ops, y, &T, ids, P * L, D);
    for (int i = 0; i < P * L; i++)
        memcpy(want + i * D, table + ids[i] * D, D * 4);
    test_check_tensor("gather_rows", y, want, P * L * D, 0.0);
    int32_t bad = V;
    CHECK(ops.gather_rows(&ops, y, &T, &bad, 1, D) != MOIRE_OK, "gather_rows past the table");
    test_fill_random(x, P * L * D, 152, -1, 1);
    ops.masked_mean_rows(&ops, y, x, len, P, L, D);
    for (int p = 0; p < P; p++)
        for (int d = 0; d < D; d++) {
            double sum = 0;
            for (int j = 0; j < len[p]; j++)
                sum += x[(p * L + j) * D + d];
            want[p * D + d] = (float)(sum / len[p]);
        }
    test_check_tensor("masked_mean_rows", y, want, P * D, TOL);
    ops.transpose(&ops, y, x, 7, 8);
    for (int r = 0; r < 7; r++)
        for (int c = 0; c < 8; c++)
            want[c * 7 + r] = x[r * 8 + c];
    test_check_tensor("transpose 7x8", y, want, 56, 0.0);
    ops.copy_2d(&ops, y, 3, x + 9, 8, 4, 3);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++)
            want[r * 3 + c] = x[9 + r * 8 + c];
    test_check_tensor("copy_2d crop", y, want, 12, 0.0);
    free(table);
}

/* conv2d against the definition, all three kinds the VAE uses. */
static void test_conv2d(int ci, int H, int W, int co, int k, int stride, int lo, int hi)
{
    const int Ho = (H + lo + hi - k) / stride + 1, Wo = (W + lo + hi - k) / stride + 1;
    float *x = rnd((size_t)ci * H * W, 161, 1), *w = rnd((size_t)co * ci * k * k, 162, 0.3f);
    float *b = rnd(co, 163, 1), *y = malloc((size_t)co * Ho * Wo * 4);
    float *want = malloc((size_t)co * Ho * Wo * 4);
    moire_tensor Wt = wt(w, co, (int64_t)ci * k * k), Bt = wt(b, 1, co);
    ops.conv2d(&ops, y, x, &Wt, &Bt, ci, H, W, co, k, stride, lo, hi);
    for (int o = 0; o < co; o++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double acc = b[o];
                for (int c = 0; c < ci; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const int iy = oy * stride - lo + ky, ix = ox * stride - lo + kx;
                            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                acc += (double)x[((size_t)c * H + iy) * W + ix] *
                                       w[(((size_t)o * ci + c) * k + ky) * k + kx];
                        }
                want[((size_t)o * Ho + oy) * Wo + ox] = (float)acc;
            }
    char name[80];
    snprintf(name, sizeof name, "conv2d %d→%d %dx%d k=%d s=%d pad %d/%d", ci, co, W, H, k,
             stride, lo, hi);
    test_check_tensor(name, y, want, (int64_t)co * Ho * Wo, TOL);
    free(x), free(w), free(b), free(y), free(want);
}

static void test_group_norm_pool(int C, int H, int W, int G)
{
    const int64_t HW = (int64_t)H * W;
    float *x = rnd((size_t)(C * HW), 171, 3), *w = rnd(C, 172, 1), *b = rnd(C, 173, 1);
    float *y = malloc((size_t)(C * HW) * 4 * 4), *want = malloc((size_t)(C * HW) * 4 * 4);
    float *stats = malloc((size_t)G * 2 * 4);
    moire_tensor Wt = wt(w, 1, C), Bt = wt(b, 1, C);
    ops.group_norm_stats(&ops, stats, x, C, HW, G, 1e-6f);
    ops.group_norm_apply(&ops, y, x, stats, &Wt, &Bt, C, HW, G, true);
    const int per = C / G;
    for (int g = 0; g < G; g++) {
        double mean = 0, var = 0;
        const int64_t count = per * HW;
        for (int64_t i = 0; i < count; i++)
            mean += x[g * count + i];
        mean /= count;
        for (int64_t i = 0; i < count; i++)
            var += (x[g * count + i] - mean) * (x[g * count + i] - mean);
        var /= count;
        for (int c = g * per; c < (g + 1) * per; c++)
            for (int64_t i = 0; i < HW; i++) {
                const double v = (x[c * HW + i] - mean) / sqrt(var + 1e-6) * w[c] + b[c];
                want[c * HW + i] = (float)(v / (1 + exp(-v)));
            }
    }
    test_check_tensor("group_norm + SiLU", y, want, C * HW, TOL);
    ops.upsample_nearest2x(&ops, y, x, C, H, W);
    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < 2 * H; yy++)
            for (int xx = 0; xx < 2 * W; xx++)
                want[((size_t)c * 2 * H + yy) * 2 * W + xx] = x[((size_t)c * H + yy / 2) * W + xx / 2];
    test_check_tensor("upsample_nearest2x", y, want, 4 * C * HW, 0.0);
    ops.avgpool2(&ops, y, x, C, H, W);
    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < H / 2; yy++)
            for (int xx = 0; xx < W / 2; xx++) {
                const float *p = x + ((size_t)c * H + 2 * yy) * W + 2 * xx;
                want[((size_t)c * (H / 2) + yy) * (W / 2) + xx] =
                    (float)(((double)p[0] + p[1] + p[W] + p[W + 1]) / 4);
            }
    test_check_tensor("avgpool2", y, want, C * HW / 4, TOL);
    free(x), free(w), free(b), free(y), free(want), free(stats);
}

int main(void)
{
    ops_cpu_init(&ops, 2);
    test_linear(37, 96, 288);
    test_linear(5, 1152, 64);
    test_linear(1, 1408, 33);
    test_layernorm_modulate(9, 1152);
    test_layernorm_modulate(3, 1408);
    test_layernorm_modulate(17, 72);
    test_gate_residual(13, 1152);
    test_attention(64, 4, 72, false);
    test_attention(48, 2, 88, true);
    test_attention(33, 3, 18, true);
    test_attention(1, 2, 64, false);
    test_router(50, 96, 8, 2);
    test_router(31, 72, 16, 2);
    test_router(7, 64, 4, 1);
    test_moe(23, 96, 64, 48, 8);
    test_moe(1 + 2, 72, 40, 0 + 16, 5);
    test_cross_attention(64, 5, 8, 4, 16);
    test_cross_attention(7, 1, 77, 3, 18);
    test_cross_attention(33, 77, 77, 2, 72);
    test_expert_choice(2, 64, 0, 72, 4, 2.0f);   /* C = 32                          */
    test_expert_choice(1, 17, 0, 40, 3, 1.0f);   /* C = 6, odd sizes                */
    test_expert_choice(3, 16, 6, 24, 4, 1.5f);   /* groups 6, 6, 4                  */
    test_expert_choice(1, 10, 0, 16, 4, 5.0f);   /* C > S: clamped, every token     */
    test_expert_choice(2, 9, 0, 16, 8, 0.1f);    /* C = 1                           */
    test_expert_choice(1, 1, 0, 8, 1, 2.0f);     /* one token, one expert           */
    test_moe_expert_choice(23, 96, 64, 48, 4, 11);
    test_moe_expert_choice(9, 72, 40, 0, 3, 1);
    {
        float x[2 * 8], y[2 * 8], want[2 * 8];
        dit_swiglu_weights mlp = {.hidden = 5};
        double tmp[8];
        mlp.gate_proj_weight = rnd(40, 71, 0.3f);
        mlp.up_proj_weight = rnd(40, 72, 0.3f);
        mlp.down_proj_weight = rnd(40, 73, 0.3f);
        test_fill_random(x, 16, 74, -1, 1);
        moire_swiglu dense = stack(&mlp, 1, 8);
        ops.swiglu(&ops, y, x, 2, 8, &dense);
        stack_free(&dense);
        for (int t = 0; t < 2; t++) {
            naive_swiglu(tmp, x + t * 8, &mlp, 8);
            for (int d = 0; d < 8; d++)
                want[t * 8 + d] = (float)tmp[d];
        }
        test_check_tensor("swiglu T=2 D=8 F=5", y, want, 16, TOL);
        free((void *)mlp.gate_proj_weight), free((void *)mlp.up_proj_weight);
        free((void *)mlp.down_proj_weight);
    }
    test_layernorm_affine_gelu(9, 72);
    test_batched_rows(3, 5, 40);
    test_gather_mean_transpose();
    test_conv2d(3, 7, 6, 4, 3, 1, 1, 1);
    test_conv2d(4, 8, 6, 5, 3, 2, 0, 1);
    test_conv2d(6, 5, 4, 3, 1, 1, 0, 0);
    test_group_norm_pool(8, 6, 4, 4);
    return test_finish("ops");
}
