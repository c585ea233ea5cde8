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

#include "bind.h"
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
    float *head;       /* [N, p·p·Co]                                                  */
    float *scores;     /* [N, E]                                                       */
    int32_t *selected; /* [E, M]   tokens each expert took                             */
    float *gates;      /* [E, M]                                                       */
    float *t_hidden;   /* [n, D]                                                       */
    float *cond;       /* [n, D]   c                                                   */
    float *cond_act;   /* [n, D]   SiLU(c)                                             */
    float *modulation; /* [n, 9D]                                                      */
} ec_buffers;

static moire_status take_buffers(ec_buffers *b, moire_arena *arena,
                                 const moire_model_config *c, int n, int T, int P, int M)
{
    const size_t N = (size_t)n * T, D = (size_t)c->hidden_size, E = (size_t)c->num_experts;
    const size_t p2 = (size_t)c->patch_size * c->patch_size;
    moire_status s = MOIRE_OK;
    b->tokens = dit_take(arena, N * D, sizeof(float), &s);
    b->normed = dit_take(arena, N * D, sizeof(float), &s);
    b->qkv = dit_take(arena, N * 3 * D, sizeof(float), &s);
    b->attn = dit_take(arena, N * D, sizeof(float), &s);
    b->branch = dit_take(arena, N * D, sizeof(float), &s);
    b->kv = dit_take(arena, (size_t)P * c->text_max_tokens * 2 * D, sizeof(float), &s);
    b->head = dit_take(arena, N * c->out_channels * p2, sizeof(float), &s);
    b->scores = dit_take(arena, N * E, sizeof(float), &s);
    b->selected = dit_take(arena, E * M + 1, sizeof(int32_t), &s);
    b->gates = dit_take(arena, E * M + 1, sizeof(float), &s);
    b->t_hidden = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->cond = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->cond_act = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->modulation = dit_take(arena, (size_t)n * 9 * D, sizeof(float), &s);
    if (s != MOIRE_OK)
        error_prefix("an EC-DiT forward pass over %d image(s) of %d tokens (about %.0f "
                     "MB)", n, T, (double)N * D * 8 * 4 / 1e6);
    return s;
}

/* The selection as debug tensors (ec_tokens [E, M] as floats, ec_gates [E, M] and
 * expert_count [N], the experts that took each token) and for the routing map: both need it
 * on the host, so only then is it downloaded. */
static moire_status report_selection(moire_ctx *ctx, int layer, const int32_t *selected_dev,
                                     const float *gates_dev, int E, int M, int64_t N, int T)
{
    if (!ctx->debug_fn && !ctx->routing)
        return MOIRE_OK;
    moire_status status;
    int32_t *selected = dit_download_copy(&ctx->ops, selected_dev,
                                          (size_t)E * M * sizeof(int32_t), &status);
    if (!selected)
        return status;
    if (ctx->debug_fn) {
        float *as_float = malloc_array((size_t)E * M + 1, sizeof(float));
        float *count = calloc_array((size_t)N, sizeof(float));
        if (as_float && count) {
            for (int64_t i = 0; i < (int64_t)E * M; i++) {
                as_float[i] = (float)selected[i];
                count[selected[i]] += 1.0f;
            }
            int64_t shape_em[3] = {E, M, 0}, shape_n[3] = {N, 0, 0};
            ctx->debug_fn("ec_tokens", layer, as_float, 2, shape_em, ctx->debug_user_data);
            dit_emit(ctx, "ec_gates", layer, gates_dev, 2, E, M, 0);
            ctx->debug_fn("expert_count", layer, count, 1, shape_n, ctx->debug_user_data);
        }
        free(as_float), free(count);
    }
    if (ctx->routing)
        routing_record_expert_choice(ctx->routing, layer, T, selected, E, M);
    free(selected);
    return MOIRE_OK;
}

/* The forward, on host arrays (device_positions NULL) or on backend arrays (x, t, out and
 * device_positions in the backend: nothing crosses to the host). */
static moire_status forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                            const float *x, const float *t, const ecdit_text_cond *text,
                            const int *prompt_of, const float *device_positions, float *out)
{
    const moire_model_config *cfg = &model->config;
    const moire_ops *ops = &ctx->ops;
    const int D = cfg->hidden_size, p = cfg->patch_size, T = (h / p) * (w / p), N = n * T;
    const int H = cfg->num_heads, hd = D / H, E = cfg->num_experts;
    const int L = text->max_tokens, Dt = cfg->text_hidden, P = text->prompts;
    const int M = n * moire_ec_slots_per_image(T, cfg->routing_group_tokens, E,
                                               cfg->capacity_factor);
    const int64_t mod = 9 * (int64_t)D; /* one image's modulation row */
    const float eps = cfg->layernorm_eps;
    if (text->ops != ops)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "the text conditioning was encoded by another context's backend");

    const model_bound *mb;
    moire_status status = bind_model(ctx, model, &mb);
    if (status != MOIRE_OK)
        return status;
    status = arena_begin(&ctx->arena);
    if (status != MOIRE_OK)
        return status;
    ec_buffers buf;
    status = take_buffers(&buf, &ctx->arena, cfg, n, T, P, M);
    /* Patch embedding, positions and the timestep MLP, as DiT-MoE (dit_common.c). */
    if (status == MOIRE_OK)
        status = dit_embed(ops, cfg, mb, model->ecdit->weights.pos_embed, n, h, w, x, t,
                           device_positions, buf.tokens, buf.cond, buf.t_hidden, ctx);
    /* c = t_emb + pooled text of the image's prompt */
    for (int i = 0; i < n && status == MOIRE_OK; i++)
        status = ops->gate_residual(ops, buf.cond + (size_t)i * D,
                                    text->pooled + (size_t)prompt_of[i] * D, 0, NULL, 0, 1, 1,
                                    D);
    if (status == MOIRE_OK) {
        dit_emit(ctx, "c", -1, buf.cond, 2, n, D, 0);
        status = ops->silu(ops, buf.cond_act, buf.cond, (int64_t)n * D);
    }
#define TRY(call)                                                                          \
    do {                                                                                   \
        if (status == MOIRE_OK)                                                            \
            status = (call);                                                               \
    } while (0)

    for (int layer = 0; layer < cfg->depth && status == MOIRE_OK; layer++) {
        if (atomic_load(&ctx->cancel_requested)) {
            status = error_fail(MOIRE_ERROR_CANCELLED, "cancelled");
            break;
        }
        const ecdit_bound_block *B = &mb->ec_blocks[layer];
        /* modulation[n, 9D]: shift, scale, gate of self-attention, cross-attention, FFN */
        TRY(ops->linear(ops, buf.modulation, buf.cond_act, &B->adaLN_modulation_weight,
                        &B->adaLN_modulation_bias, n, D, 9 * D));
        if (status == MOIRE_OK)
            dit_emit(ctx, "adaLN", layer, buf.modulation, 2, n, 9 * D, 0);

        /* Self-attention. */
        TRY(ops->layernorm_modulate(ops, buf.normed, buf.tokens, buf.modulation,
                                    buf.modulation + D, mod, n, T, D, eps));
        TRY(ops->linear(ops, buf.qkv, buf.normed, &B->attn.qkv_weight, &B->attn.qkv_bias, N, D,
                        3 * D));
        TRY(ops->attention(ops, buf.attn, buf.qkv, n, T, H, hd, &B->attn.q_norm_weight,
                           &B->attn.q_norm_bias, &B->attn.k_norm_weight, &B->attn.k_norm_bias,
                           eps));
        TRY(ops->linear(ops, buf.branch, buf.attn, &B->attn.proj_weight, &B->attn.proj_bias, N,
                        D, D));
        if (status == MOIRE_OK)
            dit_emit(ctx, "attn_out", layer, buf.branch, 3, n, T, D);
        TRY(ops->gate_residual(ops, buf.tokens, buf.branch, (int64_t)T * D,
                               buf.modulation + 2 * D, mod, n, T, D));

        /* Cross-attention: keys and values once per prompt, queries per image; only the
           prompt's real tokens are attended to. */
        TRY(ops->layernorm_modulate(ops, buf.normed, buf.tokens, buf.modulation + 3 * D,
                                    buf.modulation + 4 * D, mod, n, T, D, eps));
        TRY(ops->linear(ops, buf.qkv, buf.normed, &B->cross_q_weight, &B->cross_q_bias, N, D,
                        D));
        TRY(ops->linear(ops, buf.kv, text->tokens, &B->cross_kv_weight, &B->cross_kv_bias,
                        P * L, Dt, 2 * D));
        for (int i = 0; i < n && status == MOIRE_OK; i++) {
            const float *kv = buf.kv + (size_t)prompt_of[i] * L * 2 * D;
            status = ops->cross_attention(ops, buf.attn + (size_t)i * T * D,
                                          buf.qkv + (size_t)i * T * D, D, kv, kv + D, 2 * D, T,
                                          text->lengths[prompt_of[i]], H, hd);
        }
        TRY(ops->linear(ops, buf.branch, buf.attn, &B->cross_proj_weight, &B->cross_proj_bias,
                        N, D, D));
        if (status == MOIRE_OK)
            dit_emit(ctx, "cross_out", layer, buf.branch, 3, n, T, D);
        TRY(ops->gate_residual(ops, buf.tokens, buf.branch, (int64_t)T * D,
                               buf.modulation + 5 * D, mod, n, T, D));

        /* FFN: dense, or expert choice over the routing groups of each image. */
        TRY(ops->layernorm_modulate(ops, buf.normed, buf.tokens, buf.modulation + 6 * D,
                                    buf.modulation + 7 * D, mod, n, T, D, eps));
        if (B->is_moe) {
            TRY(ops->router_expert_choice(ops, buf.scores, buf.selected, buf.gates, buf.normed,
                                          &B->moe_gate_weight, n, T, cfg->routing_group_tokens,
                                          D, E, cfg->capacity_factor));
            if (status == MOIRE_OK) {
                dit_emit(ctx, "router_scores", layer, buf.scores, 2, N, E, 0);
                status = report_selection(ctx, layer, buf.selected, buf.gates, E, M, N, T);
            }
            TRY(ops->moe_expert_choice(ops, buf.branch, buf.normed, N, D, &B->experts,
                                       &B->shared_experts, M, buf.selected, buf.gates));
        } else {
            TRY(ops->swiglu(ops, buf.branch, buf.normed, N, D, &B->mlp));
        }
        if (status == MOIRE_OK)
            dit_emit(ctx, "ffn_out", layer, buf.branch, 3, n, T, D);
        TRY(ops->gate_residual(ops, buf.tokens, buf.branch, (int64_t)T * D,
                               buf.modulation + 8 * D, mod, n, T, D));
        if (status == MOIRE_OK)
            dit_emit(ctx, "block_out", layer, buf.tokens, 3, n, T, D);
    }

    const int head_dim = p * p * cfg->out_channels;
    TRY(dit_final_layer(ops, buf.head, buf.normed, buf.modulation, buf.tokens, buf.cond_act,
                        &mb->final_adaLN_modulation_weight, &mb->final_adaLN_modulation_bias,
                        &mb->final_linear_weight, &mb->final_linear_bias, n, T, D, head_dim,
                        eps));
    if (status == MOIRE_OK) {
        dit_emit(ctx, "final_out", -1, buf.head, 3, n, T, head_dim);
        status = dit_output(ctx, buf.head, n, cfg->out_channels, h, w, p, out,
                            device_positions != NULL);
    }
#undef TRY
    arena_end(&ctx->arena);
    return status;
}

moire_status ecdit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const ecdit_text_cond *text,
                           const int *prompt_of, float *out)
{
    return forward(ctx, model, n, h, w, x, t, text, prompt_of, NULL, out);
}

moire_status ecdit_forward_on_backend(moire_ctx *ctx, const moire_model *model, int n, int h,
                                      int w, const float *x, const float *t,
                                      const ecdit_text_cond *text, const int *prompt_of,
                                      const float *positions, float *out)
{
    if (!positions)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "ecdit_forward_on_backend: no position table (dit_positions_on_backend)");
    return forward(ctx, model, n, h, w, x, t, text, prompt_of, positions, out);
}
