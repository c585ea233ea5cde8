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
#include "context.h"
#include "internal.h"
#include "model.h"
#include "routing_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scratch buffers of one forward call. Shapes: n images, T tokens each, N = n·T rows. */
typedef struct forward_buffers {
    float *tokens;     /* [N, D]   the residual stream                         */
    float *normed;     /* [N, D]   LN·modulate output                          */
    float *qkv;        /* [N, 3D]                                              */
    float *attn;       /* [N, D]   attention before the output projection      */
    float *branch;     /* [N, D]   attention or MoE branch output              */
    float *patches;    /* [N, C·p·p]                                           */
    float *head;       /* [N, p·p·Co]                                          */
    float *logits;     /* [N, E]                                               */
    float *top_w;      /* [N, k]                                               */
    int32_t *top_ids;  /* [N, k]                                               */
    float *t_freq;     /* [n, 256]                                             */
    float *t_hidden;   /* [n, D]                                               */
    float *cond;       /* [n, D]   c = t_emb + y_emb                            */
    float *cond_act;   /* [n, D]   SiLU(c)                                     */
    float *modulation; /* [n, 6D]  per-block adaLN output                       */
    float *pos;        /* [T, D]   positions for this grid                     */
} forward_buffers;

static void free_buffers(forward_buffers *b)
{
    free(b->tokens), free(b->normed), free(b->qkv), free(b->attn), free(b->branch);
    free(b->patches), free(b->head), free(b->logits), free(b->top_w), free(b->top_ids);
    free(b->t_freq), free(b->t_hidden), free(b->cond), free(b->cond_act);
    free(b->modulation), free(b->pos);
}

static moire_status alloc_buffers(forward_buffers *b, const moire_model_config *cfg, int n,
                                  int T)
{
    const size_t N = (size_t)n * T, D = (size_t)cfg->hidden_size;
    const size_t p2 = (size_t)cfg->patch_size * cfg->patch_size;
    memset(b, 0, sizeof *b);
    b->tokens = moire_malloc_array(N * D, sizeof(float));
    b->normed = moire_malloc_array(N * D, sizeof(float));
    b->qkv = moire_malloc_array(N * 3 * D, sizeof(float));
    b->attn = moire_malloc_array(N * D, sizeof(float));
    b->branch = moire_malloc_array(N * D, sizeof(float));
    b->patches = moire_malloc_array(N * cfg->in_channels * p2, sizeof(float));
    b->head = moire_malloc_array(N * cfg->out_channels * p2, sizeof(float));
    b->logits = moire_malloc_array(N * cfg->num_experts, sizeof(float));
    b->top_w = moire_malloc_array(N * cfg->top_k, sizeof(float));
    b->top_ids = moire_malloc_array(N * cfg->top_k, sizeof(int32_t));
    b->t_freq = moire_malloc_array((size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float));
    b->t_hidden = moire_malloc_array((size_t)n * D, sizeof(float));
    b->cond = moire_malloc_array((size_t)n * D, sizeof(float));
    b->cond_act = moire_malloc_array((size_t)n * D, sizeof(float));
    b->modulation = moire_malloc_array((size_t)n * 6 * D, sizeof(float));
    b->pos = moire_malloc_array((size_t)T * D, sizeof(float));
    if (!b->tokens || !b->normed || !b->qkv || !b->attn || !b->branch || !b->patches ||
        !b->head || !b->logits || !b->top_w || !b->top_ids || !b->t_freq || !b->t_hidden ||
        !b->cond || !b->cond_act || !b->modulation || !b->pos) {
        free_buffers(b);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "a forward pass over %d image(s) of %d tokens needs about %.0f MB; "
                          "use a smaller size or batch",
                          n, T, (double)N * D * 8 * 4 / 1e6);
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

static void emit_ids(const moire_ctx *ctx, const char *name, int layer, const int32_t *ids,
                     int64_t rows, int64_t k)
{
    if (!ctx->debug_fn)
        return;
    float *as_float = moire_malloc_array((size_t)(rows * k), sizeof(float));
    if (!as_float)
        return;
    for (int64_t i = 0; i < rows * k; i++)
        as_float[i] = (float)ids[i];
    emit(ctx, name, layer, as_float, 2, rows, k, 0);
    free(as_float);
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

moire_status dit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                         const float *x, const float *t, const int32_t *class_ids, float *out)
{
    const moire_model_config *cfg = &model->config;
    const dit_weights *W = &model->weights;
    const moire_ops *ops = &ctx->ops;
    const int D = cfg->hidden_size, C = cfg->in_channels, Co = cfg->out_channels;
    const int p = cfg->patch_size, gh = h / p, gw = w / p, T = gh * gw, N = n * T;
    const int H = cfg->num_heads, hd = D / H, E = cfg->num_experts, k = cfg->top_k;
    const int patch_dim = C * p * p;
    const float eps = cfg->layernorm_eps;

    forward_buffers buf;
    moire_status status = alloc_buffers(&buf, cfg, n, T);
    if (status != MOIRE_OK)
        return status;

    /* Patch embedding: a stride-p convolution is a linear map of each flattened patch. */
    dit_patchify(buf.patches, x, n, C, h, w, p);
    TRY(ops->linear(ops, buf.tokens, buf.patches, W->x_embedder_proj_weight,
                    W->x_embedder_proj_bias, N, patch_dim, D));
    dit_positions(buf.pos, W->pos_embed, cfg->input_size / p, gh, gw, D);
    dit_add_positions(buf.tokens, buf.pos, n, T, D);
    emit(ctx, "x_embed", -1, buf.tokens, 3, n, T, D);

    /* Conditioning: c = MLP(freq(t)) + class_table[y]. */
    dit_timestep_frequencies(buf.t_freq, t, n);
    emit(ctx, "t_freq", -1, buf.t_freq, 2, n, DIT_TIMESTEP_FREQ_DIM, 0);
    TRY(ops->linear(ops, buf.t_hidden, buf.t_freq, W->t_embedder_mlp0_weight,
                    W->t_embedder_mlp0_bias, n, DIT_TIMESTEP_FREQ_DIM, D));
    for (size_t i = 0; i < (size_t)n * D; i++)
        buf.t_hidden[i] = silu(buf.t_hidden[i]);
    TRY(ops->linear(ops, buf.cond, buf.t_hidden, W->t_embedder_mlp2_weight,
                    W->t_embedder_mlp2_bias, n, D, D));
    emit(ctx, "t_emb", -1, buf.cond, 2, n, D, 0);
    for (int i = 0; i < n; i++) {
        const float *y_row = W->y_embedder_table + (size_t)class_ids[i] * D;
        for (int d = 0; d < D; d++)
            buf.cond[(size_t)i * D + d] += y_row[d];
    }
    emit(ctx, "c", -1, buf.cond, 2, n, D, 0);
    for (size_t i = 0; i < (size_t)n * D; i++)
        buf.cond_act[i] = silu(buf.cond[i]);

    for (int layer = 0; layer < cfg->depth; layer++) {
        if (atomic_load(&ctx->cancel_requested)) {
            free_buffers(&buf);
            return moire_fail(MOIRE_ERROR_CANCELLED, "cancelled");
        }
        const dit_block_weights *B = &W->blocks[layer];
        /* modulation[n, 6D] = shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
        TRY(ops->linear(ops, buf.modulation, buf.cond_act, B->adaLN_modulation_weight,
                        B->adaLN_modulation_bias, n, D, 6 * D));
        emit(ctx, "adaLN", layer, buf.modulation, 2, n, 6 * D, 0);

        /* Attention branch. */
        for (int i = 0; i < n; i++) {
            const float *mod = buf.modulation + (size_t)i * 6 * D;
            const size_t off = (size_t)i * T * D;
            TRY(ops->layernorm_modulate(ops, buf.normed + off, buf.tokens + off, mod,
                                        mod + D, T, D, eps));
        }
        TRY(ops->linear(ops, buf.qkv, buf.normed, B->attn.qkv_weight, B->attn.qkv_bias, N, D,
                        3 * D));
        for (int i = 0; i < n; i++)
            TRY(ops->attention(ops, buf.attn + (size_t)i * T * D,
                               buf.qkv + (size_t)i * T * 3 * D, T, H, hd,
                               B->attn.q_norm_weight, B->attn.q_norm_bias,
                               B->attn.k_norm_weight, B->attn.k_norm_bias, eps));
        TRY(ops->linear(ops, buf.branch, buf.attn, B->attn.proj_weight, B->attn.proj_bias, N, D,
                        D));
        emit(ctx, "attn_out", layer, buf.branch, 3, n, T, D);
        for (int i = 0; i < n; i++) {
            const float *mod = buf.modulation + (size_t)i * 6 * D;
            const size_t off = (size_t)i * T * D;
            TRY(ops->gate_residual(ops, buf.tokens + off, buf.branch + off, mod + 2 * D, T, D));
        }

        /* MoE branch: routing is per token, so all n·T tokens go through at once. */
        for (int i = 0; i < n; i++) {
            const float *mod = buf.modulation + (size_t)i * 6 * D;
            const size_t off = (size_t)i * T * D;
            TRY(ops->layernorm_modulate(ops, buf.normed + off, buf.tokens + off, mod + 3 * D,
                                        mod + 4 * D, T, D, eps));
        }
        TRY(ops->router_topk(ops, buf.logits, buf.top_ids, buf.top_w, buf.normed,
                             B->moe_gate_weight, N, D, E, k));
        emit(ctx, "router_logits", layer, buf.logits, 2, N, E, 0);
        emit_ids(ctx, "topk_ids", layer, buf.top_ids, N, k);
        emit(ctx, "topk_weights", layer, buf.top_w, 2, N, k, 0);
        if (ctx->routing)
            routing_record_topk(ctx->routing, layer, T, buf.top_ids, k);
        TRY(ops->moe_experts(ops, buf.branch, buf.normed, N, D, B, E, k, buf.top_ids,
                             buf.top_w));
        emit(ctx, "moe_out", layer, buf.branch, 3, n, T, D);
        for (int i = 0; i < n; i++) {
            const float *mod = buf.modulation + (size_t)i * 6 * D;
            const size_t off = (size_t)i * T * D;
            TRY(ops->gate_residual(ops, buf.tokens + off, buf.branch + off, mod + 5 * D, T, D));
        }
        emit(ctx, "block_out", layer, buf.tokens, 3, n, T, D);
    }

    /* Final layer: modulation[n, 2D] = shift, scale (shift first). */
    TRY(ops->linear(ops, buf.modulation, buf.cond_act, W->final_adaLN_modulation_weight,
                    W->final_adaLN_modulation_bias, n, D, 2 * D));
    for (int i = 0; i < n; i++) {
        const float *mod = buf.modulation + (size_t)i * 2 * D;
        const size_t off = (size_t)i * T * D;
        TRY(ops->layernorm_modulate(ops, buf.normed + off, buf.tokens + off, mod, mod + D, T, D,
                                    eps));
    }
    const int head_dim = p * p * Co;
    TRY(ops->linear(ops, buf.head, buf.normed, W->final_linear_weight, W->final_linear_bias, N,
                    D, head_dim));
    emit(ctx, "final_out", -1, buf.head, 3, n, T, head_dim);

    dit_unpatchify(out, buf.head, n, Co, h, w, p);
    if (ctx->debug_fn) {
        int64_t shape[4] = {n, Co, h, w};
        ctx->debug_fn("output", -1, out, 4, shape, ctx->debug_user_data);
    }
    free_buffers(&buf);
    return MOIRE_OK;
}
