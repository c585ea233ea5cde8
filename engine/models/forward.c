/* forward.c — the DiT-MoE forward pass (shared/reference/ditmoe.md §1.2, §2) as a straight
 * sequence of calls into the backend's ops table:
 *
 *   patch embed + 2-D sin-cos positions → timestep + class embedding → c
 *   depth × [ adaLN(c) → LN·modulate → attention → gate·residual
 *             → LN·modulate → router top-k → routed + shared SwiGLU experts → gate·residual ]
 *   final adaLN → LN·modulate → linear → unpatchify
 *
 * Host-side glue (embedding tables, patchify, unpatchify) stays here in plain C; everything
 * heavy goes through ops. Named intermediates are handed to the context's debug callback;
 * the names are listed in docs/ENGINE.md and match tools/golden/dit_ref.py.
 */
#include "bind.h"
#include "context.h"
#include "internal.h"
#include "model.h"
#include "routing_map.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* Buffers of one forward, all from the context's arena. Shapes: n images, T tokens each,
 * N = n·T rows. */
typedef struct forward_buffers {
    float *tokens;     /* [N, D]   the residual stream                         */
    float *normed;     /* [N, D]   LN·modulate output                          */
    float *qkv;        /* [N, 3D]                                              */
    float *attn;       /* [N, D]   attention before the output projection      */
    float *branch;     /* [N, D]   attention or MoE branch output              */
    float *head;       /* [N, p·p·Co]                                          */
    float *logits;     /* [N, E]                                               */
    float *top_w;      /* [N, k]                                               */
    int32_t *top_ids;  /* [N, k]                                               */
    float *t_hidden;   /* [n, D]                                               */
    float *cond;       /* [n, D]   c = t_emb + y_emb                            */
    float *cond_act;   /* [n, D]   SiLU(c)                                     */
    float *modulation; /* [n, 6D]  per-block adaLN output                       */
    int32_t *class_ids;/* [n]                                                  */
} forward_buffers;

static moire_status take_buffers(forward_buffers *b, moire_arena *arena,
                                 const moire_model_config *cfg, int n, int T)
{
    const size_t N = (size_t)n * T, D = (size_t)cfg->hidden_size;
    const size_t p2 = (size_t)cfg->patch_size * cfg->patch_size;
    moire_status s = MOIRE_OK;
    b->tokens = dit_take(arena, N * D, sizeof(float), &s);
    b->normed = dit_take(arena, N * D, sizeof(float), &s);
    b->qkv = dit_take(arena, N * 3 * D, sizeof(float), &s);
    b->attn = dit_take(arena, N * D, sizeof(float), &s);
    b->branch = dit_take(arena, N * D, sizeof(float), &s);
    b->head = dit_take(arena, N * cfg->out_channels * p2, sizeof(float), &s);
    b->logits = dit_take(arena, N * cfg->num_experts, sizeof(float), &s);
    b->top_w = dit_take(arena, N * cfg->top_k, sizeof(float), &s);
    b->top_ids = dit_take(arena, N * cfg->top_k, sizeof(int32_t), &s);
    b->t_hidden = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->cond = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->cond_act = dit_take(arena, (size_t)n * D, sizeof(float), &s);
    b->modulation = dit_take(arena, (size_t)n * 6 * D, sizeof(float), &s);
    b->class_ids = dit_take(arena, (size_t)n, sizeof(int32_t), &s);
    if (s != MOIRE_OK)
        error_prefix("a forward pass over %d image(s) of %d tokens (about %.0f MB)", n, T,
                     (double)N * D * 8 * 4 / 1e6);
    return s;
}

/* The blocks and the final layer, on buffers already holding the embedded tokens and c. */
static moire_status run_blocks(moire_ctx *ctx, const moire_model *model, const model_bound *mb,
                               forward_buffers *buf, int n, int T)
{
    const moire_model_config *cfg = &model->config;
    const moire_ops *ops = &ctx->ops;
    const int D = cfg->hidden_size, H = cfg->num_heads, hd = D / H, k = cfg->top_k;
    const int N = n * T;
    const int64_t mod = 6 * (int64_t)D; /* one image's modulation row */
    const float eps = cfg->layernorm_eps;
#define TRY(call)                                                                          \
    do {                                                                                   \
        moire_status status_ = (call);                                                     \
        if (status_ != MOIRE_OK)                                                           \
            return status_;                                                                \
    } while (0)

    for (int layer = 0; layer < cfg->depth; layer++) {
        if (atomic_load(&ctx->cancel_requested))
            return error_fail(MOIRE_ERROR_CANCELLED, "cancelled");
        const dit_bound_block *B = &mb->blocks[layer];
        /* modulation[n, 6D] = shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
        TRY(ops->linear(ops, buf->modulation, buf->cond_act, &B->adaLN_modulation_weight,
                        &B->adaLN_modulation_bias, n, D, 6 * D));
        dit_emit(ctx, "adaLN", layer, buf->modulation, 2, n, 6 * D, 0);

        /* Attention branch. */
        TRY(ops->layernorm_modulate(ops, buf->normed, buf->tokens, buf->modulation,
                                    buf->modulation + D, mod, n, T, D, eps));
        TRY(ops->linear(ops, buf->qkv, buf->normed, &B->attn.qkv_weight, &B->attn.qkv_bias, N,
                        D, 3 * D));
        TRY(ops->attention(ops, buf->attn, buf->qkv, n, T, H, hd, &B->attn.q_norm_weight,
                           &B->attn.q_norm_bias, &B->attn.k_norm_weight, &B->attn.k_norm_bias,
                           eps));
        TRY(ops->linear(ops, buf->branch, buf->attn, &B->attn.proj_weight, &B->attn.proj_bias,
                        N, D, D));
        dit_emit(ctx, "attn_out", layer, buf->branch, 3, n, T, D);
        TRY(ops->gate_residual(ops, buf->tokens, buf->branch, (int64_t)T * D,
                               buf->modulation + 2 * D, mod, n, T, D));

        /* MoE branch: routing is per token, so all n·T tokens go through at once. */
        TRY(ops->layernorm_modulate(ops, buf->normed, buf->tokens, buf->modulation + 3 * D,
                                    buf->modulation + 4 * D, mod, n, T, D, eps));
        TRY(ops->router_topk(ops, buf->logits, buf->top_ids, buf->top_w, buf->normed,
                             &B->moe_gate_weight, N, D, cfg->num_experts, k));
        dit_emit(ctx, "router_logits", layer, buf->logits, 2, N, cfg->num_experts, 0);
        dit_emit_ids(ctx, "topk_ids", layer, buf->top_ids, 2, N, k);
        dit_emit(ctx, "topk_weights", layer, buf->top_w, 2, N, k, 0);
        if (ctx->routing) { /* the routing map needs the choices on the host (a download) */
            moire_status status;
            int32_t *ids = dit_download_copy(ops, buf->top_ids, (size_t)N * k * sizeof(int32_t),
                                             &status);
            if (!ids)
                return status;
            routing_record_topk(ctx->routing, layer, T, ids, k);
            free(ids);
        }
        TRY(ops->moe_experts(ops, buf->branch, buf->normed, N, D, &B->experts,
                             &B->shared_experts, k, buf->top_ids, buf->top_w));
        dit_emit(ctx, "moe_out", layer, buf->branch, 3, n, T, D);
        TRY(ops->gate_residual(ops, buf->tokens, buf->branch, (int64_t)T * D,
                               buf->modulation + 5 * D, mod, n, T, D));
        dit_emit(ctx, "block_out", layer, buf->tokens, 3, n, T, D);
    }

    const int head_dim = cfg->patch_size * cfg->patch_size * cfg->out_channels;
    TRY(dit_final_layer(ops, buf->head, buf->normed, buf->modulation, buf->tokens,
                        buf->cond_act, &mb->final_adaLN_modulation_weight,
                        &mb->final_adaLN_modulation_bias, &mb->final_linear_weight,
                        &mb->final_linear_bias, n, T, D, head_dim, eps));
    dit_emit(ctx, "final_out", -1, buf->head, 3, n, T, head_dim);
#undef TRY
    return MOIRE_OK;
}

/* The forward, on host arrays (device_positions NULL) or on backend arrays (x, t,
 * class_ids, out and device_positions all in the backend: nothing crosses to the host). */
static moire_status forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                            const float *x, const float *t, const int32_t *class_ids,
                            const float *device_positions, float *out)
{
    const moire_model_config *cfg = &model->config;
    const moire_ops *ops = &ctx->ops;
    const int D = cfg->hidden_size, p = cfg->patch_size, T = (h / p) * (w / p);

    /* Weights are uploaded once per (context, model); later calls find them. */
    const model_bound *mb;
    moire_status status = bind_model(ctx, model, &mb);
    if (status != MOIRE_OK)
        return status;
    status = arena_begin(&ctx->arena);
    if (status != MOIRE_OK)
        return status;
    forward_buffers buf;
    status = take_buffers(&buf, &ctx->arena, cfg, n, T);
    if (status == MOIRE_OK)
        status = dit_embed(ops, cfg, mb, model->weights.pos_embed, n, h, w, x, t,
                           device_positions, buf.tokens, buf.cond, buf.t_hidden, ctx);
    /* c = t_emb + class_table[y]: the class rows are gathered on the backend. */
    const int32_t *ids = class_ids;
    if (!device_positions) {
        dit_upload(ops, buf.class_ids, class_ids, (size_t)n * sizeof(int32_t), &status);
        ids = buf.class_ids;
    }
    if (status == MOIRE_OK)
        status = ops->gather_rows(ops, buf.t_hidden, &mb->y_embedder_table, ids, n, D);
    if (status == MOIRE_OK)
        status = ops->gate_residual(ops, buf.cond, buf.t_hidden, D, NULL, 0, n, 1, D);
    if (status == MOIRE_OK) {
        dit_emit(ctx, "c", -1, buf.cond, 2, n, D, 0);
        status = ops->silu(ops, buf.cond_act, buf.cond, (int64_t)n * D);
    }
    if (status == MOIRE_OK)
        status = run_blocks(ctx, model, mb, &buf, n, T);
    if (status == MOIRE_OK)
        status = dit_output(ctx, buf.head, n, cfg->out_channels, h, w, p, out,
                            device_positions != NULL);
    arena_end(&ctx->arena);
    return status;
}

moire_status dit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                         const float *x, const float *t, const int32_t *class_ids, float *out)
{
    return forward(ctx, model, n, h, w, x, t, class_ids, NULL, out);
}

moire_status dit_forward_on_backend(moire_ctx *ctx, const moire_model *model, int n, int h,
                                    int w, const float *x, const float *t,
                                    const int32_t *class_ids, const float *positions,
                                    float *out)
{
    if (!positions)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "dit_forward_on_backend: no position table (dit_positions_on_backend)");
    return forward(ctx, model, n, h, w, x, t, class_ids, positions, out);
}
