/* text_encoder.c — EC-DiT's text encoder (docs/ECDIT.md): prompt → token ids → token and
 * learned position embeddings → L pre-LN transformer layers (self-attention whose keys stop
 * at the prompt's [EOS], so padding is masked; exact-erf GELU MLP) → final LayerNorm. The
 * tokens feed every block's cross-attention; their mean over the real tokens, projected to D,
 * is added to the timestep embedding.
 *
 * It runs once per prompt per generate call (the text does not change between steps), on
 * the context's backend like the forward pass; its output stays there. Padded positions are
 * computed like the others (their outputs are never attended to or pooled).
 */
#include "ecdit.h"

#include "bind.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ecdit_text_cond_free(ecdit_text_cond *cond)
{
    if (!cond)
        return;
    free(cond->ids), free(cond->lengths);
    if (cond->ops) {
        cond->ops->mem_free(cond->ops, cond->tokens);
        cond->ops->mem_free(cond->ops, cond->pooled);
    }
    memset(cond, 0, sizeof *cond);
}

moire_status ecdit_text_encode(moire_ctx *ctx, const moire_model *model, int prompts,
                               const char *const *texts, ecdit_text_cond *out)
{
    const moire_model_config *c = &model->config;
    const moire_ops *ops = &ctx->ops;
    const int L = c->text_max_tokens, Dt = c->text_hidden, Ft = c->text_mlp_hidden;
    const int H = c->text_heads, D = c->hidden_size;
    const int rows = prompts * L;
    memset(out, 0, sizeof *out);
    const model_bound *mb;
    moire_status status = bind_model(ctx, model, &mb);
    if (status != MOIRE_OK)
        return status;
    out->ops = ops;
    out->prompts = prompts;
    out->max_tokens = L;
    out->ids = malloc_array((size_t)rows, sizeof(int32_t));
    out->lengths = malloc_array((size_t)prompts, sizeof(int));
    int32_t *lengths32 = malloc_array((size_t)prompts, sizeof(int32_t));
    /* The result outlives this pass (every step of the generation reads it): backend memory
     * of its own, not the arena. */
    out->tokens = ops->mem_alloc(ops, (size_t)rows * Dt * sizeof(float));
    out->pooled = ops->mem_alloc(ops, (size_t)prompts * D * sizeof(float));
    if (!out->ids || !out->lengths || !lengths32 || !out->tokens || !out->pooled) {
        free(lengths32);
        ecdit_text_cond_free(out);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory encoding %d prompts",
                          prompts);
    }

    /* 1. tokens (host), then embeddings on the backend: token row + position row */
    for (int i = 0; i < prompts; i++) {
        ecdit_token_info info;
        ecdit_tokenize(&model->ecdit->vocab, texts[i], L, out->ids + (size_t)i * L, &info);
        out->lengths[i] = info.length;
        lengths32[i] = info.length;
        out->unknown_words += info.unknown_words;
        out->dropped_words += info.dropped_words;
    }
    status = arena_begin(&ctx->arena);
    if (status != MOIRE_OK) {
        free(lengths32);
        ecdit_text_cond_free(out);
        return status;
    }
    moire_arena *arena = &ctx->arena;
    float *normed = dit_take(arena, (size_t)rows * Dt, sizeof(float), &status);
    float *qkv = dit_take(arena, (size_t)rows * 3 * Dt, sizeof(float), &status);
    float *attn = dit_take(arena, (size_t)rows * Dt, sizeof(float), &status);
    float *hidden = dit_take(arena, (size_t)rows * (Ft > Dt ? Ft : Dt), sizeof(float), &status);
    float *mean = dit_take(arena, (size_t)prompts * Dt, sizeof(float), &status);
    int32_t *ids_dev = dit_take(arena, (size_t)rows, sizeof(int32_t), &status);
    int32_t *len_dev = dit_take(arena, (size_t)prompts, sizeof(int32_t), &status);
    dit_upload(ops, ids_dev, out->ids, (size_t)rows * sizeof(int32_t), &status);
    dit_upload(ops, len_dev, lengths32, (size_t)prompts * sizeof(int32_t), &status);
    free(lengths32);
    float *x = out->tokens;
    if (status == MOIRE_OK)
        status = ops->gather_rows(ops, x, &mb->token_embedding, ids_dev, rows, Dt);
    if (status == MOIRE_OK) /* position j's row to token j of every prompt: [L, Dt] broadcast */
        status = ops->gate_residual(ops, x, mb->position_embedding.data, 0, NULL, 0, prompts,
                                    L, Dt);
    if (status == MOIRE_OK && ctx->debug_fn)
        dit_emit_ids(ctx, "text_ids", -1, ids_dev, 2, prompts, L);

    /* 2. layers: x += Attn(LN1(x)) over the real tokens; x += MLP(LN2(x)) */
    const float eps = c->layernorm_eps;
    for (int layer = 0; layer < c->text_layers && status == MOIRE_OK; layer++) {
        const ecdit_bound_text_layer *l = &mb->text_layers[layer];
        status = ops->layernorm_affine(ops, normed, x, &l->norm1_weight, &l->norm1_bias, rows,
                                       Dt, eps);
        if (status == MOIRE_OK)
            status = ops->linear(ops, qkv, normed, &l->qkv_weight, &l->qkv_bias, rows, Dt,
                                 3 * Dt);
        for (int i = 0; i < prompts && status == MOIRE_OK; i++) {
            const float *q = qkv + (size_t)i * L * 3 * Dt;
            status = ops->cross_attention(ops, attn + (size_t)i * L * Dt, q, 3 * Dt, q + Dt,
                                          q + 2 * Dt, 3 * Dt, L, out->lengths[i], H, Dt / H);
        }
        if (status == MOIRE_OK)
            status = ops->linear(ops, normed, attn, &l->proj_weight, &l->proj_bias, rows, Dt,
                                 Dt);
        if (status == MOIRE_OK)
            status = ops->add(ops, x, x, normed, (int64_t)rows * Dt);
        if (status == MOIRE_OK)
            status = ops->layernorm_affine(ops, normed, x, &l->norm2_weight, &l->norm2_bias,
                                           rows, Dt, eps);
        if (status == MOIRE_OK)
            status = ops->linear(ops, hidden, normed, &l->fc1_weight, &l->fc1_bias, rows, Dt, Ft);
        if (status == MOIRE_OK)
            status = ops->gelu(ops, hidden, hidden, (int64_t)rows * Ft);
        if (status == MOIRE_OK)
            status = ops->linear(ops, normed, hidden, &l->fc2_weight, &l->fc2_bias, rows, Ft, Dt);
        if (status == MOIRE_OK)
            status = ops->add(ops, x, x, normed, (int64_t)rows * Dt);
    }

    /* 3. final LayerNorm, pooled = mean over the real tokens → D */
    if (status == MOIRE_OK)
        status = ops->layernorm_affine(ops, x, x, &mb->final_norm_weight, &mb->final_norm_bias,
                                       rows, Dt, eps);
    if (status == MOIRE_OK) {
        dit_emit(ctx, "text_out", -1, x, 3, prompts, L, Dt);
        status = ops->masked_mean_rows(ops, mean, x, len_dev, prompts, L, Dt);
    }
    if (status == MOIRE_OK)
        status = ops->linear(ops, out->pooled, mean, &mb->pooled_proj_weight,
                             &mb->pooled_proj_bias, prompts, Dt, D);
    if (status == MOIRE_OK)
        dit_emit(ctx, "text_pooled", -1, out->pooled, 2, prompts, D, 0);
    arena_end(arena);
    if (status != MOIRE_OK)
        ecdit_text_cond_free(out);
    return status;
}
