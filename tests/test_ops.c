/* test_ops.c — each CPU op against a naive double-precision loop on fresh random inputs
 * (never zeros), including this model family's awkward shapes: hidden 1152 and 1408,
 * head_dim 72 and 88, experts that receive 0, 1, an odd number of, or all tokens.
 * The same cases are what the CUDA backend's tests run against the CPU op. */
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
    ops.linear(&ops, y, x, w, b, M, K, N);
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
    ops.layernorm_modulate(&ops, y, x, shift, scale, T, D, 1e-6f);
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
    ops.gate_residual(&ops, x, y, g, T, D);
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
    ops.attention(&ops, out, qkv, T, H, hd, qk_norm ? qw : NULL, qb, qk_norm ? kw : NULL, kb,
                  1e-6f);
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
    ops.router_topk(&ops, logits, ids, tw, h, w, T, D, E, k);
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
    ops.moe_experts(&ops, y, h, T, D, &block, E, k, ids, tw);
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

int main(void)
{
    moire_ops_cpu_init(&ops, 2);
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
    return test_finish("ops");
}
