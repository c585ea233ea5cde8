/* bench.c — random-weight models of the released geometries for `moire bench`, and the
 * backend figures printed next to the timings (bench.h, docs/PERFORMANCE.md). */
#include "context.h"
#include "internal.h"
#include "model.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

/* shared/reference/ditmoe.md, geometry table; "tiny" is for tests of the command itself. */
static const moire_bench_geometry geometries[] = {
    {"S/2", 12, 384, 6, 8, 2, false},     {"B/2", 12, 768, 12, 8, 2, false},
    {"XL/2", 28, 1152, 16, 8, 2, true},   {"G/2", 40, 1408, 16, 16, 2, true},
    {"tiny", 2, 64, 2, 4, 2, true},
};
static const moire_bench_geometry *const geometry_list[] = {
    &geometries[0], &geometries[1], &geometries[2], &geometries[3], &geometries[4], NULL,
};

const moire_bench_geometry *const *moire_bench_geometries(void)
{
    return geometry_list;
}

const moire_bench_geometry *moire_bench_geometry_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof geometries / sizeof *geometries; i++) {
        const char *g = geometries[i].name;
        size_t base = strcspn(g, "/"); /* "XL" of "XL/2" */
        if (strcasecmp(name, g) == 0 || (strlen(name) == base && strncasecmp(name, g, base) == 0) ||
            (strncasecmp(name, g, strlen(g)) == 0 && name[strlen(g)] == '-'))
            return &geometries[i];
    }
    return NULL;
}


moire_status moire_bench_model_new(const moire_bench_geometry *g, int resolution,
                                   moire_model **out_model)
{
    *out_model = NULL;
    if (resolution < 16 || resolution % 16)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "bench resolution %d: use a multiple of 16 (256, 512, …)", resolution);
    moire_model *m = calloc(1, sizeof *m);
    if (!m)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    m->serial = model_next_serial();
    moire_model_config *c = &m->config;
    const int D = g->hidden;
    snprintf(c->family, sizeof c->family, "dit-moe");
    c->depth = g->depth, c->hidden_size = D, c->num_heads = g->heads, c->patch_size = 2;
    c->in_channels = 4, c->out_channels = g->rectified_flow ? 4 : 8;
    c->learn_sigma = !g->rectified_flow;
    c->num_experts = g->experts, c->top_k = g->top_k;
    c->expert_hidden = 4 * D, c->shared_expert_hidden = 2 * D;
    c->attention_layout = g->rectified_flow ? MOIRE_ATTENTION_QK_NORM : MOIRE_ATTENTION_QKV;
    c->num_classes = 1000;
    c->input_size = resolution / 8;
    c->objective = g->rectified_flow ? MOIRE_OBJECTIVE_RECTIFIED_FLOW : MOIRE_OBJECTIVE_DDPM_EPS;
    c->num_train_timesteps = 1000, c->beta_start = 1e-4f, c->beta_end = 0.02f;
    c->space = MOIRE_SPACE_LATENT;
    c->layernorm_eps = 1e-6f;
    m->family = MOIRE_FAMILY_DIT_MOE;
    m->default_steps = g->rectified_flow ? 50 : 250;
    m->default_cfg = g->rectified_flow ? 7.0f : 4.0f;
    m->default_sampler = g->rectified_flow ? MOIRE_SAMPLER_RF_EULER : MOIRE_SAMPLER_DDPM;
    snprintf(m->dtype_name, sizeof m->dtype_name, "F32");
    char name[64];
    snprintf(name, sizeof name, "random %s-%dE%dA", g->name, g->experts, g->top_k);
    m->name = strdup(name);
    /* The pool: twice the largest tensor (G: adaLN 6·1408² ≈ 11.9 M floats), so every window
       fits; a tiny geometry (the CUDA self-check's) gets a tiny pool. */
    size_t largest = (size_t)6 * D * D;
    if ((size_t)(c->num_classes + 1) * D > largest)
        largest = (size_t)(c->num_classes + 1) * D;
    if ((size_t)4 * D * D > largest)
        largest = (size_t)4 * D * D;
    const size_t pool_floats = 2 * largest + ((size_t)7919 * 64);
    m->arena = malloc(pool_floats * sizeof(float));
    m->arena_floats = pool_floats;
    m->weights.blocks = calloc((size_t)g->depth, sizeof *m->weights.blocks);
    if (!m->name || !m->arena || !m->weights.blocks) {
        moire_model_free(m);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory building a bench model");
    }
    /* Uniform ±1/√D from a 64-bit LCG: reproducible and fast. */
    uint64_t state = 0x9E3779B97F4A7C15ull;
    const float a = 1.0f / sqrtf((float)D);
    for (size_t i = 0; i < pool_floats; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        m->arena[i] = a * ((float)(state >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
    }
    size_t cursor = 0;
    int64_t params = 0;
#define W(count)                                                                           \
    (params += (int64_t)(count), cursor = (cursor + 7919 * 64) % (pool_floats - (count)),  \
     (const float *)(m->arena + cursor))
    const int hd = D / g->heads, F = 4 * D, S = 2 * D, p2c = 4 * 4;
    dit_weights *w = &m->weights;
    w->x_embedder_proj_weight = W((size_t)D * p2c);
    w->x_embedder_proj_bias = W(D);
    w->t_embedder_mlp0_weight = W((size_t)D * 256);
    w->t_embedder_mlp0_bias = W(D);
    w->t_embedder_mlp2_weight = W((size_t)D * D);
    w->t_embedder_mlp2_bias = W(D);
    w->y_embedder_table = W((size_t)(c->num_classes + 1) * D);
    for (int b = 0; b < g->depth; b++) {
        dit_block_weights *B = &w->blocks[b];
        B->adaLN_modulation_weight = W((size_t)6 * D * D);
        B->adaLN_modulation_bias = W((size_t)6 * D);
        B->attn.qkv_weight = W((size_t)3 * D * D);
        B->attn.qkv_bias = W((size_t)3 * D);
        if (g->rectified_flow) {
            B->attn.q_norm_weight = W(hd), B->attn.q_norm_bias = W(hd);
            B->attn.k_norm_weight = W(hd), B->attn.k_norm_bias = W(hd);
        }
        B->attn.proj_weight = W((size_t)D * D);
        B->attn.proj_bias = W(D);
        B->moe_gate_weight = W((size_t)g->experts * D);
        B->experts = calloc((size_t)g->experts, sizeof *B->experts);
        if (!B->experts) {
            moire_model_free(m);
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory building a bench model");
        }
        for (int e = 0; e < g->experts; e++) {
            B->experts[e].gate_proj_weight = W((size_t)F * D);
            B->experts[e].up_proj_weight = W((size_t)F * D);
            B->experts[e].down_proj_weight = W((size_t)D * F);
            B->experts[e].hidden = F;
        }
        B->shared_experts.gate_proj_weight = W((size_t)S * D);
        B->shared_experts.up_proj_weight = W((size_t)S * D);
        B->shared_experts.down_proj_weight = W((size_t)D * S);
        B->shared_experts.hidden = S;
    }
    w->final_adaLN_modulation_weight = W((size_t)2 * D * D);
    w->final_adaLN_modulation_bias = W((size_t)2 * D);
    w->final_linear_weight = W((size_t)p2c / 4 * c->out_channels * D);
    w->final_linear_bias = W((size_t)p2c / 4 * c->out_channels);
#undef W
    m->parameter_count = params;
    *out_model = m;
    return MOIRE_OK;
}

moire_status moire_bench_stats_get(const moire_ctx *ctx, moire_bench_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    stats->weight_bytes_per_parameter = 4;
#ifdef MOIRE_HAVE_CUDA
    if (strcmp(ctx->ops.name, "cuda") == 0) {
        moire_ops_stats s;
        moire_status status = ops_cuda_stats(&ctx->ops, &s, true);
        if (status != MOIRE_OK)
            return status;
        snprintf(stats->device_name, sizeof stats->device_name, "%s", s.device_name);
        stats->memory_total_bytes = s.memory_total_bytes;
        stats->memory_peak_bytes = s.memory_peak_bytes;
        stats->copy_bytes_per_s = s.copy_bytes_per_s;
        const char *precision = getenv("MOIRE_CUDA_PRECISION");
        if (precision && strcmp(precision, "bf16") == 0)
            stats->weight_bytes_per_parameter = 2;
        return MOIRE_OK;
    }
#endif
    snprintf(stats->device_name, sizeof stats->device_name, "CPU, %d threads",
             ctx->ops.n_threads);
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0)
        stats->memory_peak_bytes = (double)usage.ru_maxrss * 1024.0;
    static double cpu_copy = 0.0; /* memcpy of 256 MB, best of 3 */
    if (cpu_copy == 0.0) {
        const size_t bytes = (size_t)256 << 20;
        char *a = malloc(bytes), *b = malloc(bytes);
        if (a && b) {
            memset(a, 1, bytes), memset(b, 2, bytes);
            double best = 1e30;
            for (int i = 0; i < 3; i++) {
                double t0 = clock_now_seconds();
                memcpy(b, a, bytes);
                double dt = clock_now_seconds() - t0;
                best = dt < best ? dt : best;
            }
            cpu_copy = 2.0 * bytes / best;
        }
        free(a), free(b);
    }
    stats->copy_bytes_per_s = cpu_copy;
    return MOIRE_OK;
}
