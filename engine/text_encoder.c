/* text_encoder.c — EC-DiT's text encoder (docs/ECDIT.md): prompt → token ids → token and
 * learned position embeddings → L pre-LN transformer layers (self-attention whose keys stop
 * at the prompt's [EOS], so padding is masked; exact-erf GELU MLP) → final LayerNorm. The
 * tokens feed every block's cross-attention; their mean over the real tokens, projected to D,
 * is added to the timestep embedding.
 *
 * It runs once per prompt per generate call (the text does not change between steps), so
 * it is host code around the backend's linear and attention ops. Padded positions are
 * computed like the others (their outputs are never attended to or pooled).
 */
#include "ecdit.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[T,D] = LN(x) · w + b, statistics in double (as ops_cpu.c's LayerNorm). */
static void layernorm_affine(float *y, const float *x, const float *w, const float *b, int T,
                             int D, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *row = x + (size_t)t * D;
        float *out = y + (size_t)t * D;
        double sum = 0.0, sq = 0.0;
        for (int d = 0; d < D; d++)
            sum += row[d];
        double mean = sum / D;
        for (int d = 0; d < D; d++)
            sq += (row[d] - mean) * (row[d] - mean);
        double inv = 1.0 / sqrt(sq / D + (double)eps);
        for (int d = 0; d < D; d++)
            out[d] = (float)((row[d] - mean) * inv) * w[d] + b[d];
    }
}

static void emit(const moire_ctx *ctx, const char *name, const float *data, int ndim,
                 int64_t d0, int64_t d1, int64_t d2)
{
    if (!ctx->debug_fn)
        return;
    int64_t shape[3] = {d0, d1, d2};
    ctx->debug_fn(name, -1, data, ndim, shape, ctx->debug_user_data);
}

void ecdit_text_cond_free(ecdit_text_cond *cond)
{
    if (!cond)
        return;
    free(cond->ids), free(cond->lengths), free(cond->tokens), free(cond->pooled);
    memset(cond, 0, sizeof *cond);
}

moire_status ecdit_text_encode(moire_ctx *ctx, const moire_model *model, int prompts,
                               const char *const *texts, ecdit_text_cond *out)
{
    const moire_model_config *c = &model->config;
    const ecdit_text_weights *W = &model->ecdit->weights.text;
    const moire_ops *ops = &ctx->ops;
    const int L = c->text_max_tokens, Dt = c->text_hidden, Ft = c->text_mlp_hidden;
    const int H = c->text_heads, D = c->hidden_size;
    const size_t rows = (size_t)prompts * L;
    memset(out, 0, sizeof *out);
    out->prompts = prompts;
    out->max_tokens = L;
    out->ids = moire_malloc_array(rows, sizeof(int32_t));
    out->lengths = moire_malloc_array((size_t)prompts, sizeof(int));
    out->tokens = moire_malloc_array(rows * Dt, sizeof(float));
    out->pooled = moire_malloc_array((size_t)prompts * D, sizeof(float));
    float *normed = moire_malloc_array(rows * Dt, sizeof(float));
    float *qkv = moire_malloc_array(rows * 3 * Dt, sizeof(float));
    float *attn = moire_malloc_array(rows * Dt, sizeof(float));
    float *hidden = moire_malloc_array(rows * (Ft > Dt ? Ft : Dt), sizeof(float));
    float *mean = moire_malloc_array((size_t)prompts * Dt, sizeof(float));
    moire_status status = MOIRE_OK;
    if (!out->ids || !out->lengths || !out->tokens || !out->pooled || !normed || !qkv ||
        !attn || !hidden || !mean) {
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory encoding %d prompts",
                            prompts);
        goto done;
    }

    /* 1. tokens, embeddings */
    for (int i = 0; i < prompts; i++) {
        ecdit_token_info info;
        ecdit_tokenize(&model->ecdit->vocab, texts[i], L, out->ids + (size_t)i * L, &info);
        out->lengths[i] = info.length;
        out->unknown_words += info.unknown_words;
        out->dropped_words += info.dropped_words;
        for (int j = 0; j < L; j++) {
            const float *tok = W->token_embedding + (size_t)out->ids[(size_t)i * L + j] * Dt;
            const float *pos = W->position_embedding + (size_t)j * Dt;
            float *dst = out->tokens + ((size_t)i * L + j) * Dt;
            for (int d = 0; d < Dt; d++)
                dst[d] = tok[d] + pos[d];
        }
    }
    if (ctx->debug_fn) {
        for (size_t j = 0; j < rows; j++)
            normed[j] = (float)out->ids[j];
        emit(ctx, "text_ids", normed, 2, prompts, L, 0);
    }

    /* 2. layers: x += Attn(LN1(x)) over the real tokens; x += MLP(LN2(x)) */
    float *x = out->tokens;
    for (int layer = 0; layer < c->text_layers && status == MOIRE_OK; layer++) {
        const ecdit_text_layer_weights *l = &W->layers[layer];
        layernorm_affine(normed, x, l->norm1_weight, l->norm1_bias, (int)rows, Dt,
                         c->layernorm_eps);
        status = ops->linear(ops, qkv, normed, l->qkv_weight, l->qkv_bias, (int)rows, Dt, 3 * Dt);
        for (int i = 0; i < prompts && status == MOIRE_OK; i++) {
            const float *q = qkv + (size_t)i * L * 3 * Dt;
            status = ops->cross_attention(ops, attn + (size_t)i * L * Dt, q, 3 * Dt, q + Dt,
                                          q + 2 * Dt, 3 * Dt, L, out->lengths[i], H, Dt / H);
        }
        if (status == MOIRE_OK)
            status = ops->linear(ops, normed, attn, l->proj_weight, l->proj_bias, (int)rows, Dt,
                                 Dt);
        if (status != MOIRE_OK)
            break;
        for (size_t j = 0; j < rows * Dt; j++)
            x[j] += normed[j];
        layernorm_affine(normed, x, l->norm2_weight, l->norm2_bias, (int)rows, Dt,
                         c->layernorm_eps);
        status = ops->linear(ops, hidden, normed, l->fc1_weight, l->fc1_bias, (int)rows, Dt, Ft);
        if (status != MOIRE_OK)
            break;
        for (size_t j = 0; j < rows * Ft; j++)
            hidden[j] = (float)(0.5 * hidden[j] * (1.0 + erf(hidden[j] / sqrt(2.0))));
        status = ops->linear(ops, normed, hidden, l->fc2_weight, l->fc2_bias, (int)rows, Ft, Dt);
        for (size_t j = 0; j < rows * Dt && status == MOIRE_OK; j++)
            x[j] += normed[j];
    }
    if (status != MOIRE_OK)
        goto done;

    /* 3. final LayerNorm, pooled = mean over the real tokens → D */
    layernorm_affine(x, x, W->final_norm_weight, W->final_norm_bias, (int)rows, Dt,
                     c->layernorm_eps);
    emit(ctx, "text_out", x, 3, prompts, L, Dt);
    for (int i = 0; i < prompts; i++)
        for (int d = 0; d < Dt; d++) {
            double sum = 0.0;
            for (int j = 0; j < out->lengths[i]; j++)
                sum += x[((size_t)i * L + j) * Dt + d];
            mean[(size_t)i * Dt + d] = (float)(sum / out->lengths[i]);
        }
    status = ops->linear(ops, out->pooled, mean, W->pooled_proj_weight, W->pooled_proj_bias,
                         prompts, Dt, D);
    if (status == MOIRE_OK)
        emit(ctx, "text_pooled", out->pooled, 2, prompts, D, 0);
done:
    free(normed), free(qkv), free(attn), free(hidden), free(mean);
    if (status != MOIRE_OK)
        ecdit_text_cond_free(out);
    return status;
}
