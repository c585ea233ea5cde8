/* ecdit.c — the EC-DiT forward pass (docs/ECDIT.md) as a straight sequence of op calls:
 *
 *   patch embed + 2-D sin-cos positions → c = t_emb + pooled text (per image's prompt)
 *   depth × [ adaLN(c) → 9 chunks
 *             → LN·modulate → self-attention → gate·residual
 *             → LN·modulate → cross-attention to the prompt's tokens → gate·residual
 *             → LN·modulate → FFN → gate·residual ]
 *       FFN: dense SwiGLU, or (every moe_every-th block) the expert-choice MoE:
 *            router scores → each expert takes its top-C tokens per routing group
 *            → SwiGLU experts on exactly C tokens each → weighted scatter-add (+ shared)
 *   final adaLN → LN·modulate → linear → unpatchify
 *
 * Named intermediates go to the context's debug callback (names in docs/ECDIT.md, matching
 * tools/golden/ecdit_ref.py). MoE layers report their selection to the routing recorder
 * when generate.c has set one.
 */
#include "ecdit.h"

#include "internal.h"
#include "routing_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ec_buffers {
    float *tokens;     /* [N, D]   the residual stream                                 */
    float *normed;     /* [N, D]                                                       */
    float *qkv;        /* [N, 3D]                                                      */
    float *attn;       /* [N, D]   attention before its output projection               */
    float *branch;     /* [N, D]   a branch's output                                   */
    float *kv;         /* [P, L, 2D] cross-attention keys and values of each prompt      */
    float *patches;    /* [N, C·p·p]                                                   */
    float *head;       /* [N, p·p·Co]                                                  */
    float *scores;     /* [N, E]                                                       */
    int32_t *selected; /* [E, M]   tokens each expert took                             */
    float *gates;      /* [E, M]                                                       */
    float *t_freq;     /* [n, 256]                                                     */
    float *t_hidden;   /* [n, D]                                                       */
    float *cond;       /* [n, D]   c                                                   */
    float *cond_act;   /* [n, D]   SiLU(c)                                             */
    float *modulation; /* [n, 9D]                                                      */
    float *pos;        /* [T, D]                                                       */
} ec_buffers;

static void free_buffers(ec_buffers *b)
{
    free(b->tokens), free(b->normed), free(b->qkv), free(b->attn), free(b->branch);
    free(b->kv), free(b->patches), free(b->head), free(b->scores), free(b->selected);
    free(b->gates), free(b->t_freq), free(b->t_hidden), free(b->cond), free(b->cond_act);
    free(b->modulation), free(b->pos);
}

static moire_status alloc_buffers(ec_buffers *b, const moire_model_config *c, int n, int T,
                                  int P, int M)
{
    const size_t N = (size_t)n * T, D = (size_t)c->hidden_size, E = (size_t)c->num_experts;
    const size_t p2 = (size_t)c->patch_size * c->patch_size;
    memset(b, 0, sizeof *b);
    b->tokens = moire_malloc_array(N * D, sizeof(float));
    b->normed = moire_malloc_array(N * D, sizeof(float));
    b->qkv = moire_malloc_array(N * 3 * D, sizeof(float));
    b->attn = moire_malloc_array(N * D, sizeof(float));
    b->branch = moire_malloc_array(N * D, sizeof(float));
    b->kv = moire_malloc_array((size_t)P * c->text_max_tokens * 2 * D, sizeof(float));
    b->patches = moire_malloc_array(N * c->in_channels * p2, sizeof(float));
    b->head = moire_malloc_array(N * c->out_channels * p2, sizeof(float));
    b->scores = moire_malloc_array(N * E, sizeof(float));
    b->selected = moire_malloc_array(E * M + 1, sizeof(int32_t));
    b->gates = moire_malloc_array(E * M + 1, sizeof(float));
    b->t_freq = moire_malloc_array((size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float));
    b->t_hidden = moire_malloc_array((size_t)n * D, sizeof(float));
    b->cond = moire_malloc_array((size_t)n * D, sizeof(float));
    b->cond_act = moire_malloc_array((size_t)n * D, sizeof(float));
    b->modulation = moire_malloc_array((size_t)n * 9 * D, sizeof(float));
    b->pos = moire_malloc_array((size_t)T * D, sizeof(float));
    if (!b->tokens || !b->normed || !b->qkv || !b->attn || !b->branch || !b->kv ||
        !b->patches || !b->head || !b->scores || !b->selected || !b->gates || !b->t_freq ||
        !b->t_hidden || !b->cond || !b->cond_act || !b->modulation || !b->pos) {
        free_buffers(b);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "an EC-DiT forward pass over %d image(s) of %d tokens needs about "
                          "%.0f MB; use a smaller size or batch", n, T, (double)N * D * 8 * 4 / 1e6);
    }
    return MOIRE_OK;
}

static void emit(const moire_ctx *ctx, const char *name, int layer, const float *data, int ndim,
                 int64_t d0, int64_t d1, int64_t d2)
{
    if (!ctx->debug_fn)
        return;
    int64_t shape[3] = {d0, d1, d2};
    ctx->debug_fn(name, layer, data, ndim, shape, ctx->debug_user_data);
}

/* The selection as debug tensors: ec_tokens [E, M] (as floats), ec_gates [E, M] and
 * expert_count [N] (experts that took each token). */
static void emit_selection(const moire_ctx *ctx, int layer, const int32_t *selected,
                           const float *gates, int E, int M, int64_t N)
{
    if (!ctx->debug_fn)
        return;
    float *as_float = moire_malloc_array((size_t)E * M + 1, sizeof(float));
    float *count = moire_calloc_array((size_t)N, sizeof(float));
    if (as_float && count) {
        for (int64_t i = 0; i < (int64_t)E * M; i++) {
            as_float[i] = (float)selected[i];
            count[selected[i]] += 1.0f;
        }
        emit(ctx, "ec_tokens", layer, as_float, 2, E, M, 0);
        emit(ctx, "ec_gates", layer, gates, 2, E, M, 0);
        emit(ctx, "expert_count", layer, count, 1, N, 0, 0);
    }
    free(as_float), free(count);
}

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

#define TRY(call)                                                                          \
    do {                                                                                   \
        moire_status status_ = (call);                                                     \
        if (status_ != MOIRE_OK) {                                                         \
            free_buffers(&buf);                                                            \
            return status_;                                                                \
        }                                                                                  \
    } while (0)

/* x += gate ⊙ branch per image, gate = chunk `chunk` of the image's 9D modulation. */
static moire_status gated_residual(const moire_ops *ops, ec_buffers *buf, int n, int T, int D,
                                   int chunk)
{
    for (int i = 0; i < n; i++) {
        const size_t off = (size_t)i * T * D;
        moire_status status = ops->gate_residual(ops, buf->tokens + off, buf->branch + off,
                                                 buf->modulation + (size_t)i * 9 * D + chunk * D,
                                                 T, D);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}

/* normed = LN(x)·(1 + scale) + shift per image, shift = chunk `chunk`, scale the next one. */
static moire_status modulated_norm(const moire_ops *ops, ec_buffers *buf, int n, int T, int D,
                                   int chunk, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *mod = buf->modulation + (size_t)i * 9 * D + chunk * D;
        const size_t off = (size_t)i * T * D;
        moire_status status = ops->layernorm_modulate(ops, buf->normed + off, buf->tokens + off,
                                                      mod, mod + D, T, D, eps);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}

moire_status ecdit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const ecdit_text_cond *text,
                           const int *prompt_of, float *out)
{
    const moire_model_config *cfg = &model->config;
    const ecdit_weights *W = &model->ecdit->weights;
    const moire_ops *ops = &ctx->ops;
    const int D = cfg->hidden_size, C = cfg->in_channels, Co = cfg->out_channels;
    const int p = cfg->patch_size, gh = h / p, gw = w / p, T = gh * gw, N = n * T;
    const int H = cfg->num_heads, hd = D / H, E = cfg->num_experts;
    const int L = text->max_tokens, Dt = cfg->text_hidden, P = text->prompts;
    const int patch_dim = C * p * p;
    const int M = n * moire_ec_slots_per_image(T, cfg->routing_group_tokens, E,
                                               cfg->capacity_factor);
    const float eps = cfg->layernorm_eps;

    ec_buffers buf;
    moire_status status = alloc_buffers(&buf, cfg, n, T, P, M);
    if (status != MOIRE_OK)
        return status;

    /* Patch embedding and positions, as DiT-MoE (dit_common.c). */
    dit_patchify(buf.patches, x, n, C, h, w, p);
    TRY(ops->linear(ops, buf.tokens, buf.patches, W->x_embedder_proj_weight,
                    W->x_embedder_proj_bias, N, patch_dim, D));
    dit_positions(buf.pos, W->pos_embed, cfg->input_size / p, gh, gw, D);
    dit_add_positions(buf.tokens, buf.pos, n, T, D);
    emit(ctx, "x_embed", -1, buf.tokens, 3, n, T, D);

    /* Conditioning: c = MLP(freq(t)) + pooled text of the image's prompt. */
    dit_timestep_frequencies(buf.t_freq, t, n);
    TRY(ops->linear(ops, buf.t_hidden, buf.t_freq, W->t_embedder_mlp0_weight,
                    W->t_embedder_mlp0_bias, n, DIT_TIMESTEP_FREQ_DIM, D));
    for (size_t i = 0; i < (size_t)n * D; i++)
        buf.t_hidden[i] = silu(buf.t_hidden[i]);
    TRY(ops->linear(ops, buf.cond, buf.t_hidden, W->t_embedder_mlp2_weight,
                    W->t_embedder_mlp2_bias, n, D, D));
    emit(ctx, "t_emb", -1, buf.cond, 2, n, D, 0);
    for (int i = 0; i < n; i++)
        for (int d = 0; d < D; d++)
            buf.cond[(size_t)i * D + d] += text->pooled[(size_t)prompt_of[i] * D + d];
    emit(ctx, "c", -1, buf.cond, 2, n, D, 0);
    for (size_t i = 0; i < (size_t)n * D; i++)
        buf.cond_act[i] = silu(buf.cond[i]);

    for (int layer = 0; layer < cfg->depth; layer++) {
        if (atomic_load(&ctx->cancel_requested)) {
            free_buffers(&buf);
            return moire_fail(MOIRE_ERROR_CANCELLED, "cancelled");
        }
        const ecdit_block_weights *B = &W->blocks[layer];
        /* modulation[n, 9D]: shift, scale, gate of self-attention, cross-attention, FFN */
        TRY(ops->linear(ops, buf.modulation, buf.cond_act, B->adaLN_modulation_weight,
                        B->adaLN_modulation_bias, n, D, 9 * D));
        emit(ctx, "adaLN", layer, buf.modulation, 2, n, 9 * D, 0);

        /* Self-attention. */
        TRY(modulated_norm(ops, &buf, n, T, D, 0, eps));
        TRY(ops->linear(ops, buf.qkv, buf.normed, B->attn.qkv_weight, B->attn.qkv_bias, N, D,
                        3 * D));
        for (int i = 0; i < n; i++)
            TRY(ops->attention(ops, buf.attn + (size_t)i * T * D,
                               buf.qkv + (size_t)i * T * 3 * D, T, H, hd,
                               B->attn.q_norm_weight, B->attn.q_norm_bias,
                               B->attn.k_norm_weight, B->attn.k_norm_bias, eps));
        TRY(ops->linear(ops, buf.branch, buf.attn, B->attn.proj_weight, B->attn.proj_bias, N,
                        D, D));
        emit(ctx, "attn_out", layer, buf.branch, 3, n, T, D);
        TRY(gated_residual(ops, &buf, n, T, D, 2));

        /* Cross-attention: keys and values once per prompt, queries per image; only the
           prompt's real tokens are attended to. */
        TRY(modulated_norm(ops, &buf, n, T, D, 3, eps));
        TRY(ops->linear(ops, buf.qkv, buf.normed, B->cross_q_weight, B->cross_q_bias, N, D, D));
        TRY(ops->linear(ops, buf.kv, text->tokens, B->cross_kv_weight, B->cross_kv_bias, P * L,
                        Dt, 2 * D));
        for (int i = 0; i < n; i++) {
            const float *kv = buf.kv + (size_t)prompt_of[i] * L * 2 * D;
            TRY(ops->cross_attention(ops, buf.attn + (size_t)i * T * D,
                                     buf.qkv + (size_t)i * T * D, D, kv, kv + D, 2 * D, T,
                                     text->lengths[prompt_of[i]], H, hd));
        }
        TRY(ops->linear(ops, buf.branch, buf.attn, B->cross_proj_weight, B->cross_proj_bias, N,
                        D, D));
        emit(ctx, "cross_out", layer, buf.branch, 3, n, T, D);
        TRY(gated_residual(ops, &buf, n, T, D, 5));

        /* FFN: dense, or expert choice over the routing groups of each image. */
        TRY(modulated_norm(ops, &buf, n, T, D, 6, eps));
        if (B->is_moe) {
            TRY(ops->router_expert_choice(ops, buf.scores, buf.selected, buf.gates, buf.normed,
                                          B->moe_gate_weight, n, T, cfg->routing_group_tokens,
                                          D, E, cfg->capacity_factor));
            emit(ctx, "router_scores", layer, buf.scores, 2, N, E, 0);
            emit_selection(ctx, layer, buf.selected, buf.gates, E, M, N);
            if (ctx->routing)
                routing_record_expert_choice(ctx->routing, layer, T, buf.selected, E, M);
            TRY(ops->moe_expert_choice(ops, buf.branch, buf.normed, N, D, B->experts,
                                       &B->shared_experts, E, M, buf.selected, buf.gates));
        } else {
            TRY(ops->swiglu(ops, buf.branch, buf.normed, N, D, &B->mlp));
        }
        emit(ctx, "ffn_out", layer, buf.branch, 3, n, T, D);
        TRY(gated_residual(ops, &buf, n, T, D, 8));
        emit(ctx, "block_out", layer, buf.tokens, 3, n, T, D);
    }

    const int head_dim = p * p * Co;
    TRY(dit_final_layer(ops, buf.head, buf.normed, buf.modulation, buf.tokens, buf.cond_act,
                        W->final_adaLN_modulation_weight, W->final_adaLN_modulation_bias,
                        W->final_linear_weight, W->final_linear_bias, n, T, D, head_dim, eps));
    emit(ctx, "final_out", -1, buf.head, 3, n, T, head_dim);

    dit_unpatchify(out, buf.head, n, Co, h, w, p);
    if (ctx->debug_fn) {
        int64_t shape[4] = {n, Co, h, w};
        ctx->debug_fn("output", -1, out, 4, shape, ctx->debug_user_data);
    }
    free_buffers(&buf);
    return MOIRE_OK;
}
