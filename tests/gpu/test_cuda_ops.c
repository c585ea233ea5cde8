/* test_cuda_ops.c — every op of the CUDA backend's table against the CPU reference op
 * (ops_cpu_init) on fresh random inputs (never zeros): the cases of tests/test_ops.c
 * plus production shapes — hidden 1152 and 1408, head_dim 64/72/88/128 and 18, up to 4096
 * tokens, experts receiving 0, 1, an odd number of and all tokens, more than 1024
 * (token, expert) pairs (the multi-chunk dispatch), expert choice with ties and with a
 * capacity larger than its group — and the image ops of the SD-VAE.
 * Both storage modes: fp32 (relative error ≤ 1e-4) and bf16 GEMM weights (≤ 1e-2); in bf16
 * mode attention also runs on the tensor-core kernel (attention_mma.cu).
 * Exits 77 (skip) when no CUDA device is visible; under the emulator there always is one. */
#include "model.h"
#include "ops.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static moire_ops cpu, gpu_f32, gpu_bf16;
static moire_arena arena_cpu, arena_f32, arena_bf16;

static float *rnd(size_t n, uint64_t seed, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    test_fill_random(x, (int64_t)n, seed, -scale, scale);
    return x;
}

/* A device copy of a host array (activations). */
static void *dev(const moire_ops *g, const void *host, size_t bytes)
{
    void *d = g->mem_alloc(g, bytes);
    CHECK(d != NULL, "mem_alloc %zu: %s", bytes, moire_last_error());
    if (d && host)
        CHECK(g->upload(g, d, host, bytes) == MOIRE_OK, "upload: %s", moire_last_error());
    return d;
}

static void *back(const moire_ops *g, const void *d, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 1);
    CHECK(g->download(g, h, d, bytes) == MOIRE_OK, "download: %s", moire_last_error());
    return h;
}

static moire_tensor wt(const moire_ops *o, const float *host, int64_t rows, int64_t cols,
                       moire_weight_use use)
{
    moire_tensor t;
    CHECK(o->weight_upload(o, &t, &host, 1, rows, cols, use) == MOIRE_OK, "weight_upload: %s",
          moire_last_error());
    return t;
}

/* E experts [F, D] gate/up and [D, F] down as the stack the ops take (absent when E = 0). */
typedef struct experts_host {
    float **gate, **up, **down;
    int E, F, D;
} experts_host;

static experts_host experts_make(int E, int F, int D, uint64_t seed)
{
    experts_host x = {calloc(E + 1, sizeof(float *)), calloc(E + 1, sizeof(float *)),
                      calloc(E + 1, sizeof(float *)), E, F, D};
    for (int e = 0; e < E; e++) {
        x.gate[e] = rnd((size_t)F * D, seed + 3 * e, 0.2f);
        x.up[e] = rnd((size_t)F * D, seed + 3 * e + 1, 0.2f);
        x.down[e] = rnd((size_t)D * F, seed + 3 * e + 2, 0.1f);
    }
    return x;
}

static void experts_free(experts_host *x)
{
    for (int e = 0; e < x->E; e++)
        free(x->gate[e]), free(x->up[e]), free(x->down[e]);
    free(x->gate), free(x->up), free(x->down);
}

static moire_swiglu stack(const moire_ops *o, const experts_host *x)
{
    moire_swiglu s = {0};
    if (x->E < 1 || x->F < 1)
        return s;
    const float **gu = malloc(2 * x->E * sizeof *gu);
    for (int e = 0; e < x->E; e++)
        gu[2 * e] = x->gate[e], gu[2 * e + 1] = x->up[e];
    CHECK(o->weight_upload(o, &s.gate_up, gu, 2 * x->E, x->F, x->D, MOIRE_WEIGHT_GEMM) ==
              MOIRE_OK, "experts: %s", moire_last_error());
    CHECK(o->weight_upload(o, &s.down, (const float *const *)x->down, x->E, x->D, x->F,
                           MOIRE_WEIGHT_GEMM) == MOIRE_OK, "experts: %s", moire_last_error());
    free(gu);
    s.experts = x->E, s.hidden = x->F;
    return s;
}

static void unstack(const moire_ops *o, moire_swiglu *s)
{
    o->weight_free(o, &s->gate_up), o->weight_free(o, &s->down);
}

static const char *mode(const moire_ops *g)
{
    return g == &gpu_bf16 ? "bf16" : "fp32";
}

static double tol(const moire_ops *g)
{
    return g == &gpu_bf16 ? 1e-2 : 1e-4;
}

/* ---- transformer ops ------------------------------------------------------------------ */

static void test_linear(const moire_ops *g, int M, int K, int N, bool bias)
{
    float *x = rnd((size_t)M * K, 1, 1), *w = rnd((size_t)N * K, 2, 0.1f), *b = rnd(N, 3, 1);
    moire_tensor cw = wt(&cpu, w, N, K, MOIRE_WEIGHT_GEMM), cb = wt(&cpu, b, 1, N, 0);
    moire_tensor gw = wt(g, w, N, K, MOIRE_WEIGHT_GEMM), gb = wt(g, b, 1, N, 0);
    float *want = malloc((size_t)M * N * 4);
    cpu.linear(&cpu, want, x, &cw, bias ? &cb : NULL, M, K, N);
    float *dx = dev(g, x, (size_t)M * K * 4), *dy = dev(g, NULL, (size_t)M * N * 4);
    moire_status st = g->linear(g, dy, dx, &gw, bias ? &gb : NULL, M, K, N);
    CHECK(st == MOIRE_OK, "linear: %s", moire_last_error());
    float *got = back(g, dy, (size_t)M * N * 4);
    char name[96];
    snprintf(name, sizeof name, "%s linear %dx%dx%d%s", mode(g), M, K, N, bias ? " +bias" : "");
    test_check_tensor(name, got, want, (int64_t)M * N, tol(g));
    g->mem_free(g, dx), g->mem_free(g, dy), g->weight_free(g, &gw), g->weight_free(g, &gb);
    free(x), free(w), free(b), free(want), free(got);
}

/* n images with their own shift/scale rows (stride 6D, as forward.c's modulation). */
static void test_layernorm_modulate(const moire_ops *g, int n, int T, int D, bool in_place)
{
    const int64_t stride = 6 * (int64_t)D;
    float *x = rnd((size_t)n * T * D, 4, 3), *mod = rnd((size_t)n * stride, 5, 1);
    for (int64_t i = 0; i < (int64_t)n * T * D; i++)
        x[i] += 5.0f;
    float *want = malloc((size_t)n * T * D * 4);
    cpu.layernorm_modulate(&cpu, want, x, mod + D, mod + 2 * D, stride, n, T, D, 1e-6f);
    float *dx = dev(g, x, (size_t)n * T * D * 4), *dm = dev(g, mod, (size_t)n * stride * 4);
    float *dy = in_place ? dx : dev(g, NULL, (size_t)n * T * D * 4);
    CHECK(g->layernorm_modulate(g, dy, dx, dm + D, dm + 2 * D, stride, n, T, D, 1e-6f) ==
              MOIRE_OK, "ln: %s", moire_last_error());
    float *got = back(g, dy, (size_t)n * T * D * 4);
    char name[96];
    snprintf(name, sizeof name, "%s layernorm_modulate n=%d T=%d D=%d%s", mode(g), n, T, D,
             in_place ? " in place" : "");
    test_check_tensor(name, got, want, (int64_t)n * T * D, 1e-4);
    g->mem_free(g, dx), g->mem_free(g, dm);
    if (!in_place)
        g->mem_free(g, dy);
    free(x), free(mod), free(want), free(got);
}

static void test_layernorm_affine(const moire_ops *g, int T, int D)
{
    float *x = rnd((size_t)T * D, 21, 2), *w = rnd(D, 22, 1), *b = rnd(D, 23, 1);
    moire_tensor cw = wt(&cpu, w, 1, D, 0), cb = wt(&cpu, b, 1, D, 0);
    moire_tensor gw = wt(g, w, 1, D, 0), gb = wt(g, b, 1, D, 0);
    float *want = malloc((size_t)T * D * 4);
    cpu.layernorm_affine(&cpu, want, x, &cw, &cb, T, D, 1e-5f);
    float *dx = dev(g, x, (size_t)T * D * 4);
    CHECK(g->layernorm_affine(g, dx, dx, &gw, &gb, T, D, 1e-5f) == MOIRE_OK, "ln affine: %s",
          moire_last_error());
    float *got = back(g, dx, (size_t)T * D * 4);
    char name[96];
    snprintf(name, sizeof name, "%s layernorm_affine T=%d D=%d (in place)", mode(g), T, D);
    test_check_tensor(name, got, want, (int64_t)T * D, 1e-4);
    g->mem_free(g, dx), g->weight_free(g, &gw), g->weight_free(g, &gb);
    free(x), free(w), free(b), free(want), free(got);
}

/* Gated, plain (gate NULL) and broadcast (y_stride 0) residual adds over n images. */
static void test_gate_residual(const moire_ops *g, int n, int T, int D)
{
    const size_t N = (size_t)n * T * D;
    float *x = rnd(N, 7, 1), *y = rnd(N, 8, 1), *gate = rnd((size_t)n * 2 * D, 9, 1);
    float *want = malloc(N * 4);
    float *dx = dev(g, x, N * 4), *dy = dev(g, y, N * 4), *dg = dev(g, gate, (size_t)n * 2 * D * 4);
    struct {
        int64_t y_stride;
        bool gated;
        const char *what;
    } cases[] = {{(int64_t)T * D, true, "gated"}, {(int64_t)T * D, false, "plain"},
                 {0, false, "broadcast"}};
    for (int c = 0; c < 3; c++) {
        memcpy(want, x, N * 4);
        g->upload(g, dx, x, N * 4);
        cpu.gate_residual(&cpu, want, y, cases[c].y_stride, cases[c].gated ? gate + D : NULL,
                          2 * D, n, T, D);
        CHECK(g->gate_residual(g, dx, dy, cases[c].y_stride, cases[c].gated ? dg + D : NULL,
                               2 * D, n, T, D) == MOIRE_OK, "gate: %s", moire_last_error());
        float *got = back(g, dx, N * 4);
        char name[96];
        snprintf(name, sizeof name, "%s gate_residual %s n=%d T=%d D=%d", mode(g),
                 cases[c].what, n, T, D);
        test_check_tensor(name, got, want, (int64_t)N, 1e-6);
        free(got);
    }
    g->mem_free(g, dx), g->mem_free(g, dy), g->mem_free(g, dg);
    free(x), free(y), free(gate), free(want);
}

/* silu, gelu, relu, scale, add: y = f(x), elementwise, on a length that is not a multiple
 * of any block size. */
static void test_elementwise(const moire_ops *g, int64_t count)
{
    float *x = rnd((size_t)count, 31, 4), *z = rnd((size_t)count, 32, 2);
    float *want = malloc((size_t)count * 4);
    float *dx = dev(g, x, (size_t)count * 4), *dz = dev(g, z, (size_t)count * 4);
    float *dy = dev(g, NULL, (size_t)count * 4);
    const char *names[5] = {"silu", "gelu", "relu", "scale", "add"};
    for (int op = 0; op < 5; op++) {
        moire_status st;
        switch (op) {
        case 0:
            cpu.silu(&cpu, want, x, count);
            st = g->silu(g, dy, dx, count);
            break;
        case 1:
            cpu.gelu(&cpu, want, x, count);
            st = g->gelu(g, dy, dx, count);
            break;
        case 2:
            cpu.relu(&cpu, want, x, count);
            st = g->relu(g, dy, dx, count);
            break;
        case 3:
            cpu.scale(&cpu, want, x, -0.18215f, count);
            st = g->scale(g, dy, dx, -0.18215f, count);
            break;
        default:
            cpu.add(&cpu, want, x, z, count);
            st = g->add(g, dy, dx, dz, count);
            break;
        }
        CHECK(st == MOIRE_OK, "%s: %s", names[op], moire_last_error());
        float *got = back(g, dy, (size_t)count * 4);
        char name[64];
        snprintf(name, sizeof name, "%s %s %lld", mode(g), names[op], (long long)count);
        test_check_tensor(name, got, want, count, 1e-6);
        free(got);
    }
    g->mem_free(g, dx), g->mem_free(g, dz), g->mem_free(g, dy);
    free(x), free(z), free(want);
}

static void test_attention(const moire_ops *g, int n, int T, int H, int hd, bool qk_norm)
{
    const int D = H * hd;
    const size_t numel = (size_t)n * T * D;
    float *qkv = rnd(3 * numel, 10, 2);
    float *qw = rnd(hd, 11, 0.5f), *qb = rnd(hd, 12, 0.2f), *kw = rnd(hd, 13, 0.5f),
          *kb = rnd(hd, 14, 0.2f);
    for (int d = 0; d < hd; d++)
        qw[d] += 1.0f, kw[d] += 1.0f;
    moire_tensor c[4] = {wt(&cpu, qw, 1, hd, 0), wt(&cpu, qb, 1, hd, 0), wt(&cpu, kw, 1, hd, 0),
                         wt(&cpu, kb, 1, hd, 0)};
    moire_tensor d[4] = {wt(g, qw, 1, hd, 0), wt(g, qb, 1, hd, 0), wt(g, kw, 1, hd, 0),
                         wt(g, kb, 1, hd, 0)};
    float *want = malloc(numel * 4);
    cpu.attention(&cpu, want, qkv, n, T, H, hd, qk_norm ? &c[0] : NULL, &c[1], &c[2], &c[3],
                  1e-6f);
    float *dq = dev(g, qkv, 3 * numel * 4), *dout = dev(g, NULL, numel * 4);
    moire_status st = g->attention(g, dout, dq, n, T, H, hd, qk_norm ? &d[0] : NULL, &d[1],
                                   &d[2], &d[3], 1e-6f);
    CHECK(st == MOIRE_OK, "attention: %s", moire_last_error());
    float *got = back(g, dout, numel * 4);
    char name[96];
    snprintf(name, sizeof name, "%s attention n=%d T=%d H=%d hd=%d%s", mode(g), n, T, H, hd,
             qk_norm ? " qk-norm" : "");
    test_check_tensor(name, got, want, (int64_t)numel, tol(g));
    g->mem_free(g, dq), g->mem_free(g, dout);
    for (int i = 0; i < 4; i++)
        g->weight_free(g, &d[i]);
    free(qkv), free(qw), free(qb), free(kw), free(kb), free(want), free(got);
}

/* Strided q and kv, only the first Tk of L keys attended to: padded key rows hold huge
 * values, so a leak shows. hd 512 is the VAE's single-head attention. */
static void test_cross_attention(const moire_ops *g, int Tq, int Tk, int L, int H, int hd)
{
    const int D = H * hd;
    float *q = rnd((size_t)Tq * 3 * D, 41, 1), *kv = rnd((size_t)L * 2 * D, 42, 1);
    for (int t = Tk; t < L; t++)
        for (int d = 0; d < 2 * D; d++)
            kv[(size_t)t * 2 * D + d] = 1e3f;
    float *want = malloc((size_t)Tq * D * 4);
    cpu.cross_attention(&cpu, want, q, 3 * D, kv, kv + D, 2 * D, Tq, Tk, H, hd);
    float *dq = dev(g, q, (size_t)Tq * 3 * D * 4), *dkv = dev(g, kv, (size_t)L * 2 * D * 4);
    float *dout = dev(g, NULL, (size_t)Tq * D * 4);
    CHECK(g->cross_attention(g, dout, dq, 3 * D, dkv, dkv + D, 2 * D, Tq, Tk, H, hd) ==
              MOIRE_OK, "cross: %s", moire_last_error());
    float *got = back(g, dout, (size_t)Tq * D * 4);
    char name[96];
    snprintf(name, sizeof name, "%s cross_attention Tq=%d Tk=%d of %d H=%d hd=%d", mode(g), Tq,
             Tk, L, H, hd);
    test_check_tensor(name, got, want, (int64_t)Tq * D, tol(g));
    g->mem_free(g, dq), g->mem_free(g, dkv), g->mem_free(g, dout);
    free(q), free(kv), free(want), free(got);
}

static void test_router(const moire_ops *g, int T, int D, int E, int k)
{
    float *h = rnd((size_t)T * D, 15, 1), *w = rnd((size_t)E * D, 16, 0.3f);
    moire_tensor cw = wt(&cpu, w, E, D, 0), gw = wt(g, w, E, D, 0);
    float *logits = malloc((size_t)T * E * 4), *tw = malloc((size_t)T * k * 4);
    int32_t *ids = malloc((size_t)T * k * 4);
    cpu.router_topk(&cpu, logits, ids, tw, h, &cw, T, D, E, k);
    float *dh = dev(g, h, (size_t)T * D * 4), *dl = dev(g, NULL, (size_t)T * E * 4);
    float *dtw = dev(g, NULL, (size_t)T * k * 4);
    int32_t *dids = dev(g, NULL, (size_t)T * k * 4);
    CHECK(g->router_topk(g, dl, dids, dtw, dh, &gw, T, D, E, k) == MOIRE_OK, "router: %s",
          moire_last_error());
    float *gl = back(g, dl, (size_t)T * E * 4), *gtw = back(g, dtw, (size_t)T * k * 4);
    int32_t *gids = back(g, dids, (size_t)T * k * 4);
    char name[96];
    snprintf(name, sizeof name, "%s router logits T=%d D=%d E=%d", mode(g), T, D, E);
    test_check_tensor(name, gl, logits, (int64_t)T * E, 1e-4);
    /* ids must agree except on near-ties (probabilities within 1e-5 of each other) */
    int differ = 0, bad = 0;
    for (int i = 0; i < T * k; i++)
        if (gids[i] != ids[i]) {
            differ++;
            bad += fabsf(gtw[i] - tw[i]) > 1e-5f * fabsf(tw[i]) + 1e-7f;
        }
    CHECK(bad == 0, "%s router top-%d: %d ids differ beyond near-ties", mode(g), k, bad);
    snprintf(name, sizeof name, "%s router weights top-%d (%d tie flips)", mode(g), k, differ);
    test_check_tensor(name, gtw, tw, (int64_t)T * k, 1e-5);
    g->mem_free(g, dh), g->mem_free(g, dl), g->mem_free(g, dtw), g->mem_free(g, dids);
    g->weight_free(g, &gw);
    free(h), free(w), free(logits), free(tw), free(ids), free(gl), free(gtw), free(gids);
}

/* Token choice. Loads: expert 0 none, expert 1 one token, expert 2 every token, the rest an
 * odd spread; `skew` puts every token's second pick on expert 3 too. T·2 > 1024 pairs takes
 * the dispatch's multi-chunk path. */
static void test_moe(const moire_ops *g, int T, int D, int F, int S, int E, bool skew)
{
    const int k = 2;
    experts_host routed = experts_make(E, F, D, 100), shared = experts_make(S ? 1 : 0, S, D, 400);
    moire_swiglu cr = stack(&cpu, &routed), cs = stack(&cpu, &shared);
    moire_swiglu gr = stack(g, &routed), gs = stack(g, &shared);
    float *h = rnd((size_t)T * D, 17, 1), *tw = rnd((size_t)T * k, 18, 0.5f);
    int32_t *ids = malloc((size_t)T * k * 4);
    for (int t = 0; t < T; t++) {
        ids[t * k] = 2;
        ids[t * k + 1] = skew ? 3 : t == 0 ? 1 : 3 + (t * 7) % (E - 3);
        tw[t * k] += 0.5f;
    }
    float *want = malloc((size_t)T * D * 4);
    cpu.moe_experts(&cpu, want, h, T, D, &cr, &cs, k, ids, tw);
    float *dh = dev(g, h, (size_t)T * D * 4), *dtw = dev(g, tw, (size_t)T * k * 4);
    int32_t *dids = dev(g, ids, (size_t)T * k * 4);
    float *dy = dev(g, NULL, (size_t)T * D * 4);
    CHECK(g->moe_experts(g, dy, dh, T, D, &gr, &gs, k, dids, dtw) == MOIRE_OK, "moe: %s",
          moire_last_error());
    float *got = back(g, dy, (size_t)T * D * 4);
    char name[128];
    snprintf(name, sizeof name, "%s moe T=%d D=%d F=%d S=%d E=%d, %d pairs (%s)", mode(g), T, D,
             F, S, E, T * k, skew ? "all on 2 and 3" : "loads 0,1,all,odd");
    test_check_tensor(name, got, want, (int64_t)T * D, tol(g));
    g->mem_free(g, dh), g->mem_free(g, dtw), g->mem_free(g, dids), g->mem_free(g, dy);
    unstack(&cpu, &cr), unstack(&cpu, &cs), unstack(g, &gr), unstack(g, &gs);
    experts_free(&routed), experts_free(&shared);
    free(h), free(tw), free(ids), free(want), free(got);
}

/* Expert choice: the router (rows duplicated so exact ties occur; capacity factors giving
 * C = 1, a fraction of the group, and C > group size, clamped), then the MoE on its choice
 * against the CPU MoE on the same choice. */
static void test_expert_choice(const moire_ops *g, int n, int T, int group, int D, int E,
                               float fc, int F, int S)
{
    const int64_t N = (int64_t)n * T;
    float *h = rnd((size_t)N * D, 51, 1), *w = rnd((size_t)E * D, 52, 0.5f);
    for (int64_t t = 3; t < N; t += 3)
        memcpy(h + t * D, h + (t % 2 ? 1 : 2) * (int64_t)D, D * sizeof(float));
    const int64_t M = (int64_t)n * moire_ec_slots_per_image(T, group, E, fc);
    moire_tensor cw = wt(&cpu, w, E, D, 0), gw = wt(g, w, E, D, 0);
    float *scores = malloc((size_t)N * E * 4), *gates = malloc((size_t)(E * M + 1) * 4);
    int32_t *tokens = malloc((size_t)(E * M + 1) * 4);
    cpu.router_expert_choice(&cpu, scores, tokens, gates, h, &cw, n, T, group, D, E, fc);
    float *dh = dev(g, h, (size_t)N * D * 4), *ds = dev(g, NULL, (size_t)N * E * 4);
    float *dgates = dev(g, NULL, (size_t)(E * M + 1) * 4);
    int32_t *dtok = dev(g, NULL, (size_t)(E * M + 1) * 4);
    CHECK(g->router_expert_choice(g, ds, dtok, dgates, dh, &gw, n, T, group, D, E, fc) ==
              MOIRE_OK, "expert choice: %s", moire_last_error());
    float *gs = back(g, ds, (size_t)N * E * 4), *gg = back(g, dgates, (size_t)E * M * 4);
    int32_t *gt = back(g, dtok, (size_t)E * M * 4);
    char name[128];
    snprintf(name, sizeof name, "%s expert choice n=%d T=%d group=%d E=%d fc=%g M=%lld", mode(g),
             n, T, group, E, (double)fc, (long long)M);
    test_check_tensor(name, gs, scores, N * E, 1e-6);
    int wrong = 0;
    for (int64_t i = 0; i < E * M; i++)
        wrong += gt[i] != tokens[i];
    CHECK(wrong == 0, "%s: %d of %lld token picks differ from the CPU's", name, wrong,
          (long long)(E * M));
    printf("%s %s: picks (ties to the lower token)\n", wrong ? "NOT OK" : "OK    ", name);

    /* the MoE on the CPU's choice (uploaded), so both run the same selection */
    experts_host routed = experts_make(E, F, D, 500), shared = experts_make(S ? 1 : 0, S, D, 800);
    moire_swiglu cr = stack(&cpu, &routed), csh = stack(&cpu, &shared);
    moire_swiglu gr = stack(g, &routed), gsh = stack(g, &shared);
    float *want = malloc((size_t)N * D * 4);
    cpu.moe_expert_choice(&cpu, want, h, (int)N, D, &cr, &csh, (int)M, tokens, gates);
    g->upload(g, dtok, tokens, (size_t)E * M * 4);
    g->upload(g, dgates, gates, (size_t)E * M * 4);
    float *dy = dev(g, NULL, (size_t)N * D * 4);
    CHECK(g->moe_expert_choice(g, dy, dh, (int)N, D, &gr, &gsh, (int)M, dtok, dgates) ==
              MOIRE_OK, "moe expert choice: %s", moire_last_error());
    float *got = back(g, dy, (size_t)N * D * 4);
    snprintf(name, sizeof name, "%s moe expert choice N=%lld D=%d F=%d S=%d E=%d M=%lld",
             mode(g), (long long)N, D, F, S, E, (long long)M);
    test_check_tensor(name, got, want, N * D, tol(g));
    g->mem_free(g, dh), g->mem_free(g, ds), g->mem_free(g, dgates), g->mem_free(g, dtok);
    g->mem_free(g, dy), g->weight_free(g, &gw);
    unstack(&cpu, &cr), unstack(&cpu, &csh), unstack(g, &gr), unstack(g, &gsh);
    experts_free(&routed), experts_free(&shared);
    free(h), free(w), free(scores), free(gates), free(tokens), free(gs), free(gg), free(gt);
    free(want), free(got);
}

static void test_swiglu(const moire_ops *g, int T, int D, int F)
{
    experts_host mlp = experts_make(1, F, D, 70);
    moire_swiglu c = stack(&cpu, &mlp), d = stack(g, &mlp);
    float *x = rnd((size_t)T * D, 74, 1), *want = malloc((size_t)T * D * 4);
    cpu.swiglu(&cpu, want, x, T, D, &c);
    float *dx = dev(g, x, (size_t)T * D * 4), *dy = dev(g, NULL, (size_t)T * D * 4);
    CHECK(g->swiglu(g, dy, dx, T, D, &d) == MOIRE_OK, "swiglu: %s", moire_last_error());
    float *got = back(g, dy, (size_t)T * D * 4);
    char name[64];
    snprintf(name, sizeof name, "%s swiglu T=%d D=%d F=%d", mode(g), T, D, F);
    test_check_tensor(name, got, want, (int64_t)T * D, tol(g));
    g->mem_free(g, dx), g->mem_free(g, dy), unstack(&cpu, &c), unstack(g, &d);
    experts_free(&mlp), free(x), free(want), free(got);
}

/* gather_rows (the class and token embeddings) and masked_mean_rows (the pooled prompt). */
static void test_gather_mean(const moire_ops *g, int P, int L, int D, int V)
{
    float *table = rnd((size_t)V * D, 91, 1), *x = rnd((size_t)P * L * D, 92, 1);
    int32_t *ids = malloc((size_t)P * L * 4), *len = malloc((size_t)P * 4);
    for (int i = 0; i < P * L; i++)
        ids[i] = (i * 37 + 5) % V;
    for (int p = 0; p < P; p++)
        len[p] = 1 + (p * 5) % L; /* 1 .. L real tokens */
    len[P - 1] = L;
    moire_tensor ct = wt(&cpu, table, V, D, 0), gt = wt(g, table, V, D, 0);
    float *want = malloc((size_t)P * L * D * 4);
    cpu.gather_rows(&cpu, want, &ct, ids, P * L, D);
    int32_t *dids = dev(g, ids, (size_t)P * L * 4), *dlen = dev(g, len, (size_t)P * 4);
    float *dy = dev(g, NULL, (size_t)P * L * D * 4), *dx = dev(g, x, (size_t)P * L * D * 4);
    CHECK(g->gather_rows(g, dy, &gt, dids, P * L, D) == MOIRE_OK, "gather: %s",
          moire_last_error());
    float *got = back(g, dy, (size_t)P * L * D * 4);
    char name[80];
    snprintf(name, sizeof name, "%s gather_rows %d of %d rows, D=%d", mode(g), P * L, V, D);
    test_check_tensor(name, got, want, (int64_t)P * L * D, 0.0);
    free(got);
    cpu.masked_mean_rows(&cpu, want, x, len, P, L, D);
    CHECK(g->masked_mean_rows(g, dy, dx, dlen, P, L, D) == MOIRE_OK, "mean: %s",
          moire_last_error());
    got = back(g, dy, (size_t)P * D * 4);
    snprintf(name, sizeof name, "%s masked_mean_rows P=%d L=%d D=%d", mode(g), P, L, D);
    test_check_tensor(name, got, want, (int64_t)P * D, 1e-6);
    g->mem_free(g, dids), g->mem_free(g, dlen), g->mem_free(g, dy), g->mem_free(g, dx);
    g->weight_free(g, &gt);
    free(table), free(x), free(ids), free(len), free(want), free(got);
}

/* ---- image ops ------------------------------------------------------------------------- */

static void test_conv2d(const moire_ops *g, int ci, int H, int W, int co, int k, int stride,
                        int pad_lo, int pad_hi)
{
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1, Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    float *x = rnd((size_t)ci * H * W, 101, 1), *w = rnd((size_t)co * ci * k * k, 102, 0.2f);
    float *b = rnd(co, 103, 1);
    moire_tensor cw = wt(&cpu, w, co, (int64_t)ci * k * k, MOIRE_WEIGHT_GEMM), cb = wt(&cpu, b, 1, co, 0);
    moire_tensor gw = wt(g, w, co, (int64_t)ci * k * k, MOIRE_WEIGHT_GEMM), gb = wt(g, b, 1, co, 0);
    float *want = malloc((size_t)co * Ho * Wo * 4);
    cpu.conv2d(&cpu, want, x, &cw, &cb, ci, H, W, co, k, stride, pad_lo, pad_hi);
    float *dx = dev(g, x, (size_t)ci * H * W * 4), *dy = dev(g, NULL, (size_t)co * Ho * Wo * 4);
    CHECK(g->conv2d(g, dy, dx, &gw, &gb, ci, H, W, co, k, stride, pad_lo, pad_hi) == MOIRE_OK,
          "conv2d: %s", moire_last_error());
    float *got = back(g, dy, (size_t)co * Ho * Wo * 4);
    char name[112];
    snprintf(name, sizeof name, "%s conv2d %d→%d %dx%d k=%d s=%d pad %d/%d", mode(g), ci, co, W,
             H, k, stride, pad_lo, pad_hi);
    test_check_tensor(name, got, want, (int64_t)co * Ho * Wo, tol(g));
    g->mem_free(g, dx), g->mem_free(g, dy), g->weight_free(g, &gw), g->weight_free(g, &gb);
    free(x), free(w), free(b), free(want), free(got);
}

static void test_group_norm(const moire_ops *g, int C, int H, int W, int G, bool with_silu)
{
    const int64_t HW = (int64_t)H * W;
    float *x = rnd((size_t)C * HW, 111, 3), *w = rnd(C, 112, 1), *b = rnd(C, 113, 1);
    for (int64_t i = 0; i < C * HW; i++)
        x[i] += 2.0f; /* a mean offset */
    moire_tensor cw = wt(&cpu, w, 1, C, 0), cb = wt(&cpu, b, 1, C, 0);
    moire_tensor gw = wt(g, w, 1, C, 0), gb = wt(g, b, 1, C, 0);
    float *stats = malloc((size_t)G * 2 * 4), *want = malloc((size_t)C * HW * 4);
    cpu.group_norm_stats(&cpu, stats, x, C, HW, G, 1e-6f);
    cpu.group_norm_apply(&cpu, want, x, stats, &cw, &cb, C, HW, G, with_silu);
    float *dx = dev(g, x, (size_t)C * HW * 4), *dst = dev(g, NULL, (size_t)G * 2 * 4);
    CHECK(g->group_norm_stats(g, dst, dx, C, HW, G, 1e-6f) == MOIRE_OK, "gn: %s",
          moire_last_error());
    float *got_stats = back(g, dst, (size_t)G * 2 * 4);
    CHECK(g->group_norm_apply(g, dx, dx, dst, &gw, &gb, C, HW, G, with_silu) == MOIRE_OK,
          "gn: %s", moire_last_error());
    float *got = back(g, dx, (size_t)C * HW * 4);
    char name[96];
    snprintf(name, sizeof name, "%s group_norm stats C=%d %dx%d G=%d", mode(g), C, W, H, G);
    test_check_tensor(name, got_stats, stats, 2 * G, 1e-5);
    snprintf(name, sizeof name, "%s group_norm apply%s (in place)", mode(g),
             with_silu ? " + SiLU" : "");
    test_check_tensor(name, got, want, (int64_t)C * HW, 1e-5);
    g->mem_free(g, dx), g->mem_free(g, dst), g->weight_free(g, &gw), g->weight_free(g, &gb);
    free(x), free(w), free(b), free(stats), free(want), free(got_stats), free(got);
}

/* upsample ×2, 2×2 average pool, transpose, and a tile crop with copy_2d. */
static void test_image_moves(const moire_ops *g, int C, int H, int W)
{
    const size_t n = (size_t)C * H * W;
    float *x = rnd(n, 121, 1), *want = malloc(4 * n * 4);
    float *dx = dev(g, x, n * 4), *dy = dev(g, NULL, 4 * n * 4);
    char name[96];
    float *got;

    cpu.upsample_nearest2x(&cpu, want, x, C, H, W);
    CHECK(g->upsample_nearest2x(g, dy, dx, C, H, W) == MOIRE_OK, "up: %s", moire_last_error());
    got = back(g, dy, 4 * n * 4);
    snprintf(name, sizeof name, "%s upsample_nearest2x C=%d %dx%d", mode(g), C, W, H);
    test_check_tensor(name, got, want, (int64_t)(4 * n), 0.0);
    free(got);

    cpu.avgpool2(&cpu, want, x, C, H, W);
    CHECK(g->avgpool2(g, dy, dx, C, H, W) == MOIRE_OK, "pool: %s", moire_last_error());
    got = back(g, dy, n);
    snprintf(name, sizeof name, "%s avgpool2 C=%d %dx%d", mode(g), C, W, H);
    test_check_tensor(name, got, want, (int64_t)(n / 4), 1e-6);
    free(got);

    cpu.transpose(&cpu, want, x, C, H * W);
    CHECK(g->transpose(g, dy, dx, C, H * W) == MOIRE_OK, "transpose: %s", moire_last_error());
    got = back(g, dy, n * 4);
    snprintf(name, sizeof name, "%s transpose %dx%d", mode(g), C, H * W);
    test_check_tensor(name, got, want, (int64_t)n, 0.0);
    free(got);

    const int rows = H / 2, cols = W / 2 + 1; /* a tile crop out of the middle of plane 0 */
    cpu.copy_2d(&cpu, want, cols, x + (size_t)(H / 4) * W + W / 4, W, rows, cols);
    CHECK(g->copy_2d(g, dy, cols, dx + (size_t)(H / 4) * W + W / 4, W, rows, cols) == MOIRE_OK,
          "copy_2d: %s", moire_last_error());
    got = back(g, dy, (size_t)rows * cols * 4);
    snprintf(name, sizeof name, "%s copy_2d %dx%d crop", mode(g), cols, rows);
    test_check_tensor(name, got, want, (int64_t)rows * cols, 0.0);
    free(got);
    g->mem_free(g, dx), g->mem_free(g, dy);
    free(x), free(want);
}

/* ---- the arena --------------------------------------------------------------------------- */

/* A second pass of the same size allocates nothing: the overflow count stays put. */
static void test_arena(const moire_ops *g)
{
    moire_arena *a = g->arena;
    for (int pass = 0; pass < 3; pass++) {
        const uint64_t before = a->overflows;
        CHECK(arena_begin(a) == MOIRE_OK, "arena begin: %s", moire_last_error());
        void *p = arena_take(a, 3 << 20);
        const size_t mark = arena_mark(a);
        void *q = arena_take(a, 5 << 20);
        arena_release(a, mark);
        void *r = arena_take(a, 1 << 20);
        CHECK(p && q && r, "arena take: %s", moire_last_error());
        if (pass > 0) /* the first pass has no block yet: everything is an overflow */
            CHECK(r == q, "a released block is handed out again (LIFO)");
        arena_end(a);
        if (pass > 0)
            CHECK(a->overflows == before, "pass %d of the same size allocated (%llu overflows)",
                  pass, (unsigned long long)(a->overflows - before));
    }
}

static void run_cases(const moire_ops *g)
{
    test_linear(g, 37, 96, 288, true);
    test_linear(g, 5, 1152, 64, true);
    test_linear(g, 1, 1408, 33, false);
    test_linear(g, 512, 1152, 3456, true);
    test_linear(g, 2, 256, 1152, true);
    test_moe(g, 23, 96, 64, 48, 8, false);
    test_moe(g, 3, 72, 40, 16, 5, false);
    test_moe(g, 300, 1152, 64, 32, 8, false);  /* XL width */
    test_moe(g, 257, 1408, 48, 0, 16, false);  /* G width, 16 experts, no shared */
    test_moe(g, 600, 96, 32, 16, 8, false);    /* 1200 pairs: multi-chunk dispatch */
    test_moe(g, 130, 64, 96, 32, 8, true);
    test_expert_choice(g, 2, 64, 0, 72, 4, 2.0f, 40, 24);   /* C = 32, ties         */
    test_expert_choice(g, 3, 16, 6, 24, 4, 1.5f, 16, 0);    /* groups 6, 6, 4       */
    test_expert_choice(g, 1, 10, 0, 16, 4, 5.0f, 16, 8);    /* C > S: every token   */
    test_expert_choice(g, 2, 9, 0, 16, 8, 0.1f, 8, 8);      /* C = 1                */
    test_expert_choice(g, 2, 600, 0, 64, 4, 2.0f, 32, 16);  /* 2400 token slots     */
    test_swiglu(g, 37, 96, 80);
    test_conv2d(g, 5, 9, 7, 6, 3, 1, 1, 1);
    test_conv2d(g, 8, 16, 12, 4, 3, 2, 0, 1); /* the encoder's downsampler */
    test_conv2d(g, 16, 6, 5, 9, 1, 1, 0, 0);  /* 1×1: the GEMM on the input itself */
    if (g == &gpu_bf16) {
        /* attention in bf16 mode: tensor cores for hd ≤ 128 (attention_mma.cu; hd 72 and 88
         * padded to 80 and 96), token counts off the 64-row tile, qk-norm, a key mask; the
         * VAE's hd 512 stays on the fp32 kernel */
        test_attention(g, 2, 17, 3, 64, false);
        test_attention(g, 2, 63, 2, 72, true);
        test_attention(g, 1, 257, 2, 88, true);
        test_attention(g, 1, 1, 2, 128, false);
        test_cross_attention(g, 33, 77, 77, 2, 72);
        test_cross_attention(g, 7, 1, 77, 3, 18);
        test_cross_attention(g, 40, 40, 40, 1, 512);
        return; /* the rest keeps activations and non-GEMM weights in fp32 in both modes */
    }
    test_layernorm_modulate(g, 1, 9, 1152, false);
    test_layernorm_modulate(g, 3, 17, 1408, true);
    test_layernorm_modulate(g, 2, 17, 72, false);
    test_layernorm_modulate(g, 2, 256, 1152, true);
    test_layernorm_affine(g, 33, 384);
    test_layernorm_affine(g, 5, 72);
    test_gate_residual(g, 3, 13, 1152);
    test_elementwise(g, 100003);
    test_attention(g, 1, 64, 4, 72, false);
    test_attention(g, 2, 48, 2, 88, true);
    test_attention(g, 3, 33, 3, 18, true);
    test_attention(g, 1, 1, 2, 64, false);
    test_attention(g, 2, 256, 16, 72, true);
    test_attention(g, 1, 300, 2, 128, false);
    test_attention(g, 1, 1024, 2, 88, true);
    test_attention(g, 1, 4096, 1, 72, true);
    test_cross_attention(g, 64, 5, 8, 4, 16);
    test_cross_attention(g, 7, 1, 77, 3, 18);
    test_cross_attention(g, 33, 77, 77, 2, 72);
    test_cross_attention(g, 40, 40, 40, 1, 512); /* the VAE's single head */
    test_router(g, 50, 96, 8, 2);
    test_router(g, 31, 72, 16, 2);
    test_router(g, 7, 64, 4, 1);
    test_router(g, 512, 1152, 8, 2);
    test_gather_mean(g, 3, 16, 64, 50);
    test_group_norm(g, 64, 9, 7, 32, true);
    test_group_norm(g, 32, 16, 16, 8, false);
    test_image_moves(g, 6, 10, 14);
    test_arena(g);
}

int main(void)
{
    ops_cpu_init(&cpu, 2);
    arena_init(&arena_cpu, &cpu);
    cpu.arena = &arena_cpu;
    if (ops_cuda_init(&gpu_f32, 2, false) != MOIRE_OK) {
        printf("SKIP: no CUDA device (%s)\n", moire_last_error());
        return 77;
    }
    if (ops_cuda_init(&gpu_bf16, 2, true) != MOIRE_OK) {
        fprintf(stderr, "second CUDA table: %s\n", moire_last_error());
        return 1;
    }
    arena_init(&arena_f32, &gpu_f32);
    gpu_f32.arena = &arena_f32;
    arena_init(&arena_bf16, &gpu_bf16);
    gpu_bf16.arena = &arena_bf16;
    moire_ops_stats stats;
    if (ops_cuda_stats(&gpu_f32, &stats, false) == MOIRE_OK)
        printf("device: %s, %.1f GB\n", stats.device_name, stats.memory_total_bytes / 1e9);
    run_cases(&gpu_f32);
    run_cases(&gpu_bf16);
    arena_destroy(&arena_f32), arena_destroy(&arena_bf16);
    arena_destroy(&arena_cpu);
    gpu_f32.destroy(&gpu_f32);
    gpu_bf16.destroy(&gpu_bf16);
    return test_finish("cuda_ops");
}
