/* dit_common.c — see dit_common.h. */
#include "dit_common.h"

#include "bind.h"
#include "context.h"
#include "internal.h"
#include "ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void dit_positions(float *pos, const float *stored, int trained_grid, int gh, int gw, int D)
{
    if (stored && gh == trained_grid && gw == trained_grid) {
        memcpy(pos, stored, (size_t)gh * gw * D * sizeof(float));
        return;
    }
    const int quarter = D / 4;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *row = pos + ((size_t)r * gw + c) * D;
            for (int i = 0; i < quarter; i++) {
                double omega = 1.0 / pow(10000.0, (double)i / quarter);
                row[i] = (float)sin(c * omega);
                row[quarter + i] = (float)cos(c * omega);
                row[2 * quarter + i] = (float)sin(r * omega);
                row[3 * quarter + i] = (float)cos(r * omega);
            }
        }
}

void dit_add_positions(float *tokens, const float *pos, int n, int T, int D)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < T; j++) {
            float *tok = tokens + ((size_t)i * T + j) * D;
            const float *pe = pos + (size_t)j * D;
            for (int d = 0; d < D; d++)
                tok[d] += pe[d];
        }
}

void *dit_take(moire_arena *arena, size_t count, size_t size, moire_status *status)
{
    if (*status != MOIRE_OK)
        return NULL;
    if (count && size > SIZE_MAX / count) {
        *status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "a buffer of %zu × %zu bytes is too "
                             "large; use a smaller size or batch", count, size);
        return NULL;
    }
    void *p = arena_take(arena, count * size);
    if (!p)
        *status = MOIRE_ERROR_OUT_OF_MEMORY; /* the backend said how much */
    return p;
}

void dit_upload(const moire_ops *ops, void *dst, const void *src, size_t bytes,
                moire_status *status)
{
    if (*status == MOIRE_OK && bytes)
        *status = ops->upload(ops, dst, src, bytes);
}

void *dit_download_copy(const moire_ops *ops, const void *src, size_t bytes,
                        moire_status *status)
{
    void *host = malloc(bytes ? bytes : 1);
    if (!host) {
        *status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory copying a result back");
        return NULL;
    }
    *status = ops->download(ops, host, src, bytes);
    if (*status != MOIRE_OK) {
        free(host);
        return NULL;
    }
    return host;
}

void dit_emit(const moire_ctx *ctx, const char *name, int layer, const float *data, int ndim,
              int64_t d0, int64_t d1, int64_t d2)
{
    if (!ctx->debug_fn)
        return;
    int64_t shape[3] = {d0, d1, d2};
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    moire_status status;
    float *view = dit_download_copy(&ctx->ops, data, (size_t)numel * sizeof(float), &status);
    if (!view)
        return;
    ctx->debug_fn(name, layer, view, ndim, shape, ctx->debug_user_data);
    free(view);
}

void dit_emit_ids(const moire_ctx *ctx, const char *name, int layer, const int32_t *ids,
                  int ndim, int64_t d0, int64_t d1)
{
    if (!ctx->debug_fn)
        return;
    const int64_t numel = ndim == 1 ? d0 : d0 * d1;
    moire_status status;
    int32_t *view = dit_download_copy(&ctx->ops, ids, (size_t)numel * sizeof(int32_t), &status);
    float *as_float = view ? malloc_array((size_t)numel + 1, sizeof(float)) : NULL;
    if (as_float) {
        for (int64_t i = 0; i < numel; i++)
            as_float[i] = (float)view[i];
        int64_t shape[3] = {d0, ndim == 1 ? 0 : d1, 0};
        ctx->debug_fn(name, layer, as_float, ndim, shape, ctx->debug_user_data);
    }
    free(as_float), free(view);
}

/* dit_embed on backend arrays: patches and timestep features made by the backend, the
 * positions already there, nothing uploaded (a sampling step recorded as a graph). */
static moire_status embed_on_backend(const moire_ops *ops, const moire_model_config *cfg,
                                     const model_bound *mb, int n, int h, int w,
                                     const float *x, const float *t, const float *positions,
                                     float *tokens, float *cond, float *t_hidden,
                                     moire_ctx *debug_ctx)
{
    const int D = cfg->hidden_size, C = cfg->in_channels, p = cfg->patch_size;
    const int T = (h / p) * (w / p), N = n * T, patch_dim = C * p * p;
    moire_arena *arena = ops->arena;
    const size_t mark = arena_mark(arena);
    moire_status status = MOIRE_OK;
    float *patches = dit_take(arena, (size_t)N * patch_dim, sizeof(float), &status);
    float *freq = dit_take(arena, (size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float), &status);
    if (status == MOIRE_OK)
        status = ops->patchify(ops, patches, x, n, C, h, w, p, false);
    if (status == MOIRE_OK)
        status = ops->timestep_frequencies(ops, freq, t, n);
    if (status == MOIRE_OK)
        status = ops->linear(ops, tokens, patches, &mb->x_embedder_proj_weight,
                             &mb->x_embedder_proj_bias, N, patch_dim, D);
    if (status == MOIRE_OK)
        status = ops->gate_residual(ops, tokens, positions, 0, NULL, 0, n, T, D);
    if (status == MOIRE_OK && debug_ctx) {
        dit_emit(debug_ctx, "x_embed", -1, tokens, 3, n, T, D);
        dit_emit(debug_ctx, "t_freq", -1, freq, 2, n, DIT_TIMESTEP_FREQ_DIM, 0);
    }
    if (status == MOIRE_OK)
        status = ops->linear(ops, t_hidden, freq, &mb->t_embedder_mlp0_weight,
                             &mb->t_embedder_mlp0_bias, n, DIT_TIMESTEP_FREQ_DIM, D);
    if (status == MOIRE_OK)
        status = ops->silu(ops, t_hidden, t_hidden, (int64_t)n * D);
    if (status == MOIRE_OK)
        status = ops->linear(ops, cond, t_hidden, &mb->t_embedder_mlp2_weight,
                             &mb->t_embedder_mlp2_bias, n, D, D);
    if (status == MOIRE_OK && debug_ctx)
        dit_emit(debug_ctx, "t_emb", -1, cond, 2, n, D, 0);
    arena_release(arena, mark);
    return status;
}

float *dit_positions_on_backend(const moire_ops *ops, const moire_model_config *cfg,
                                const float *pos_embed_host, int h, int w)
{
    const int D = cfg->hidden_size, p = cfg->patch_size, gh = h / p, gw = w / p;
    float *host = malloc_array((size_t)gh * gw * D, sizeof(float));
    if (!host) {
        error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the position table");
        return NULL;
    }
    dit_positions(host, pos_embed_host, cfg->input_size / p, gh, gw, D);
    float *dev = ops->mem_alloc(ops, (size_t)gh * gw * D * sizeof(float));
    if (dev && ops->upload(ops, dev, host, (size_t)gh * gw * D * sizeof(float)) != MOIRE_OK) {
        ops->mem_free(ops, dev);
        dev = NULL;
    }
    free(host);
    return dev;
}

moire_status dit_embed(const moire_ops *ops, const moire_model_config *cfg,
                       const model_bound *mb, const float *pos_embed_host, int n, int h, int w,
                       const float *x, const float *t, const float *device_positions,
                       float *tokens, float *cond, float *t_hidden, moire_ctx *debug_ctx)
{
    if (device_positions)
        return embed_on_backend(ops, cfg, mb, n, h, w, x, t, device_positions, tokens, cond,
                                t_hidden, debug_ctx);
    const int D = cfg->hidden_size, C = cfg->in_channels, p = cfg->patch_size;
    const int gh = h / p, gw = w / p, T = gh * gw, N = n * T, patch_dim = C * p * p;
    moire_arena *arena = ops->arena;
    const size_t mark = arena_mark(arena);
    moire_status status = MOIRE_OK;
    /* Host-side glue, built in host memory and uploaded (no host copy on the CPU). */
    float *patches_host = malloc_array((size_t)N * patch_dim, sizeof(float));
    float *pos_host = malloc_array((size_t)T * D, sizeof(float));
    float *freq_host = malloc_array((size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float));
    if (!patches_host || !pos_host || !freq_host)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory preparing the input");
    float *patches = dit_take(arena, (size_t)N * patch_dim, sizeof(float), &status);
    float *pos = dit_take(arena, (size_t)T * D, sizeof(float), &status);
    float *freq = dit_take(arena, (size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float), &status);
    if (status == MOIRE_OK) {
        dit_patchify(patches_host, x, n, C, h, w, p);
        dit_positions(pos_host, pos_embed_host, cfg->input_size / p, gh, gw, D);
        dit_timestep_frequencies(freq_host, t, n);
    }
    dit_upload(ops, patches, patches_host, (size_t)N * patch_dim * sizeof(float), &status);
    dit_upload(ops, pos, pos_host, (size_t)T * D * sizeof(float), &status);
    dit_upload(ops, freq, freq_host, (size_t)n * DIT_TIMESTEP_FREQ_DIM * sizeof(float),
               &status);
    free(patches_host), free(pos_host), free(freq_host);

    /* Patch embedding: a stride-p convolution is a linear map of each flattened patch. */
    if (status == MOIRE_OK)
        status = ops->linear(ops, tokens, patches, &mb->x_embedder_proj_weight,
                             &mb->x_embedder_proj_bias, N, patch_dim, D);
    if (status == MOIRE_OK) /* the same positions for every image */
        status = ops->gate_residual(ops, tokens, pos, 0, NULL, 0, n, T, D);
    if (status == MOIRE_OK && debug_ctx) {
        dit_emit(debug_ctx, "x_embed", -1, tokens, 3, n, T, D);
        dit_emit(debug_ctx, "t_freq", -1, freq, 2, n, DIT_TIMESTEP_FREQ_DIM, 0);
    }
    /* c = MLP(freq(t)): Linear → SiLU → Linear. */
    if (status == MOIRE_OK)
        status = ops->linear(ops, t_hidden, freq, &mb->t_embedder_mlp0_weight,
                             &mb->t_embedder_mlp0_bias, n, DIT_TIMESTEP_FREQ_DIM, D);
    if (status == MOIRE_OK)
        status = ops->silu(ops, t_hidden, t_hidden, (int64_t)n * D);
    if (status == MOIRE_OK)
        status = ops->linear(ops, cond, t_hidden, &mb->t_embedder_mlp2_weight,
                             &mb->t_embedder_mlp2_bias, n, D, D);
    if (status == MOIRE_OK && debug_ctx)
        dit_emit(debug_ctx, "t_emb", -1, cond, 2, n, D, 0);
    arena_release(arena, mark);
    return status;
}

moire_status dit_final_layer(const moire_ops *ops, float *head, float *normed, float *modulation,
                             const float *tokens, const float *cond_act,
                             const moire_tensor *adaLN_weight, const moire_tensor *adaLN_bias,
                             const moire_tensor *linear_weight, const moire_tensor *linear_bias,
                             int n, int T, int D, int head_dim, float eps)
{
    moire_status status = ops->linear(ops, modulation, cond_act, adaLN_weight, adaLN_bias, n, D,
                                      2 * D);
    if (status == MOIRE_OK) /* per image: shift = modulation[i, :D], scale = [D, 2D) */
        status = ops->layernorm_modulate(ops, normed, tokens, modulation, modulation + D,
                                         2 * (int64_t)D, n, T, D, eps);
    if (status == MOIRE_OK)
        status = ops->linear(ops, head, normed, linear_weight, linear_bias, n * T, D, head_dim);
    return status;
}

moire_status dit_output(moire_ctx *ctx, const float *head, int n, int Co, int h, int w, int p,
                        float *out, bool out_on_backend)
{
    if (out_on_backend)
        return ctx->ops.patchify(&ctx->ops, out, head, n, Co, h, w, p, true);
    const int T = (h / p) * (w / p), head_dim = p * p * Co;
    moire_status status;
    float *host = dit_download_copy(&ctx->ops, head, (size_t)n * T * head_dim * sizeof(float),
                                    &status);
    if (!host)
        return status;
    dit_unpatchify(out, host, n, Co, h, w, p);
    free(host);
    if (ctx->debug_fn) {
        int64_t shape[4] = {n, Co, h, w};
        ctx->debug_fn("output", -1, out, 4, shape, ctx->debug_user_data);
    }
    return MOIRE_OK;
}
