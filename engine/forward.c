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
#include <stdint.h>
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
    float *ones;       /* [D]      1.0 (device backends: plain adds via gate_residual) */
    const moire_ops *ops; /* where the buffers live (host memory for the CPU backend) */
} forward_buffers;

/* Buffers live where the backend computes: host memory for the CPU reference, device memory
 * (ops->mem_alloc) for CUDA. The host-side glue (patchify, positions, timestep frequencies,
 * unpatchify) works on host arrays that are uploaded or downloaded around it; on the CPU
 * backend those arrays are the buffers themselves, so the CPU path is unchanged. */
static void *buffer_alloc(const moire_ops *ops, size_t count, size_t size)
{
    if (moire_ops_on_host(ops))
        return moire_malloc_array(count, size);
    if (count && size > SIZE_MAX / count)
        return NULL;
    return ops->mem_alloc(ops, count * size);
}

static void buffer_free(const moire_ops *ops, void *ptr)
{
    if (!ptr)
        return;
    if (moire_ops_on_host(ops))
        free(ptr);
    else
        ops->mem_free(ops, ptr);
}

static void free_buffers(forward_buffers *b)
{
    const moire_ops *ops = b->ops;
    if (!ops)
        return;
    buffer_free(ops, b->tokens), buffer_free(ops, b->normed), buffer_free(ops, b->qkv);
    buffer_free(ops, b->attn), buffer_free(ops, b->branch), buffer_free(ops, b->patches);
    buffer_free(ops, b->head), buffer_free(ops, b->logits), buffer_free(ops, b->top_w);
    buffer_free(ops, b->top_ids), buffer_free(ops, b->t_freq), buffer_free(ops, b->t_hidden);
    buffer_free(ops, b->cond), buffer_free(ops, b->cond_act), buffer_free(ops, b->modulation);
    buffer_free(ops, b->pos), buffer_free(ops, b->ones);
    b->ops = NULL;
}

static moire_status alloc_buffers(forward_buffers *b, const moire_ops *ops,
                                  const moire_model_config *cfg, int n, int T)
{
    const size_t N = (size_t)n * T, D = (size_t)cfg->hidden_size;
    const size_t p2 = (size_t)cfg->patch_size * cfg->patch_size;
    const bool host = moire_ops_on_host(ops);
    memset(b, 0, sizeof *b);
    b->ops = ops;
    b->tokens = buffer_alloc(ops, N * D, sizeof(float));
    b->normed = buffer_alloc(ops, N * D, sizeof(float));
    b->qkv = buffer_alloc(ops, N * 3 * D, sizeof(float));
    b->attn = buffer_alloc(ops, N * D, sizeof(float));
    b->branch = buffer_alloc(ops, N * D, sizeof(float));
    b->patches = buffer_alloc(ops, N * cfg->in_channels * p2, sizeof(float));
    b->head = buffer_alloc(ops, N * cfg->out_channels * p2, sizeof(float));
    b->logits = buffer_alloc(ops, N * cfg->num_experts, sizeof(float));
    b->top_w = buffer_alloc(ops, N * cfg->top_k, sizeof(float));
    b->top_ids = buffer_alloc(ops, N * cfg->top_k, sizeof(int32_t));
    b->t_freq = buffer_alloc(ops, (size_t)n * DIT_TIMESTEP_FREQ_DIM, sizeof(float));
    b->t_hidden = buffer_alloc(ops, (size_t)n * D, sizeof(float));
    b->cond = buffer_alloc(ops, (size_t)n * D, sizeof(float));
    b->cond_act = buffer_alloc(ops, (size_t)n * D, sizeof(float));
    b->modulation = buffer_alloc(ops, (size_t)n * 6 * D, sizeof(float));
    b->pos = buffer_alloc(ops, (size_t)T * D, sizeof(float));
    if (!host)
        b->ones = buffer_alloc(ops, D, sizeof(float));
    if (!b->tokens || !b->normed || !b->qkv || !b->attn || !b->branch || !b->patches ||
        !b->head || !b->logits || !b->top_w || !b->top_ids || !b->t_freq || !b->t_hidden ||
        !b->cond || !b->cond_act || !b->modulation || !b->pos || (!host && !b->ones)) {
        free_buffers(b);
        if (!host) /* keep the backend's message (it says how much was free) */
            return MOIRE_ERROR_OUT_OF_MEMORY;
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "a forward pass over %d image(s) of %d tokens needs about %.0f MB; "
                          "use a smaller size or batch",
                          n, T, (double)N * D * 8 * 4 / 1e6);
    }
    return MOIRE_OK;
}

/* A host array of `count` floats to build data in: the buffer itself on the CPU backend,
 * else a temporary that stage_upload() copies into the buffer and frees. */
static float *stage_begin(const moire_ops *ops, float *buffer, size_t count)
{
    return moire_ops_on_host(ops) ? buffer : moire_malloc_array(count, sizeof(float));
}

static moire_status stage_upload(const moire_ops *ops, float *buffer, float *staged,
                                 size_t count)
{
    if (moire_ops_on_host(ops))
        return MOIRE_OK;
    moire_status status = ops->upload(ops, buffer, staged, count * sizeof(float));
    free(staged);
    return status;
}

/* The reverse: a host view of `count` elements of a backend buffer (the buffer itself on the
 * CPU backend, else a downloaded copy); release with view_end(). NULL + status on failure. */
static const void *view_begin(const moire_ops *ops, const void *buffer, size_t count,
                              size_t size, moire_status *status)
{
    *status = MOIRE_OK;
    if (moire_ops_on_host(ops))
        return buffer;
    void *host = moire_malloc_array(count, size);
    if (!host) {
        *status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory copying a result back");
        return NULL;
    }
    *status = ops->download(ops, host, buffer, count * size);
    if (*status != MOIRE_OK) {
        free(host);
        return NULL;
    }
    return host;
}

static void view_end(const moire_ops *ops, const void *view)
{
    if (!moire_ops_on_host(ops))
        free((void *)view);
}

/* Hands a backend tensor to the debug callback (a host copy on device backends). */
static void emit(const moire_ctx *ctx, const char *name, int layer, const float *data, int ndim,
                 int64_t d0, int64_t d1, int64_t d2)
{
    if (!ctx->debug_fn)
        return;
    int64_t shape[3] = {d0, d1, d2};
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    moire_status status;
    const float *view = view_begin(&ctx->ops, data, (size_t)numel, sizeof(float), &status);
    if (!view)
        return;
    ctx->debug_fn(name, layer, view, ndim, shape, ctx->debug_user_data);
    view_end(&ctx->ops, view);
}

static void emit_ids(const moire_ctx *ctx, const char *name, int layer, const int32_t *ids,
                     int64_t rows, int64_t k)
{
    if (!ctx->debug_fn)
        return;
    moire_status status;
    const int32_t *view = view_begin(&ctx->ops, ids, (size_t)(rows * k), sizeof(int32_t),
                                     &status);
    if (!view)
        return;
    float *as_float = moire_malloc_array((size_t)(rows * k), sizeof(float));
    if (as_float) {
        for (int64_t i = 0; i < rows * k; i++)
            as_float[i] = (float)view[i];
        int64_t shape[3] = {rows, k, 0};
        ctx->debug_fn(name, layer, as_float, 2, shape, ctx->debug_user_data);
        free(as_float);
    }
    view_end(&ctx->ops, view);
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

    /* A device backend keeps its copies of this model's weights from call to call. */
    const bool host = moire_ops_on_host(ops);
    if (ops->bind_model) {
        moire_status bound = ops->bind_model(ops, model);
        if (bound != MOIRE_OK)
            return bound;
    }
    forward_buffers buf;
    moire_status status = alloc_buffers(&buf, ops, cfg, n, T);
    if (status != MOIRE_OK)
        return status;
    float *staged;
#define STAGE(buffer, count)                                                               \
    do {                                                                                   \
        staged = stage_begin(ops, (buffer), (count));                                      \
        if (!staged) {                                                                     \
            free_buffers(&buf);                                                            \
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory staging an input"); \
        }                                                                                  \
    } while (0)
    if (!host) {
        STAGE(buf.ones, (size_t)D);
        for (int d = 0; d < D; d++)
            staged[d] = 1.0f;
        TRY(stage_upload(ops, buf.ones, staged, (size_t)D));
    }

    /* Patch embedding: a stride-p convolution is a linear map of each flattened patch. */
    STAGE(buf.patches, (size_t)N * patch_dim);
    dit_patchify(staged, x, n, C, h, w, p);
    TRY(stage_upload(ops, buf.patches, staged, (size_t)N * patch_dim));
    TRY(ops->linear(ops, buf.tokens, buf.patches, W->x_embedder_proj_weight,
                    W->x_embedder_proj_bias, N, patch_dim, D));
    STAGE(buf.pos, (size_t)T * D);
    dit_positions(staged, W->pos_embed, cfg->input_size / p, gh, gw, D);
    TRY(stage_upload(ops, buf.pos, staged, (size_t)T * D));
    if (host)
        dit_add_positions(buf.tokens, buf.pos, n, T, D);
    else /* x + 1·pos is exactly x + pos */
        for (int i = 0; i < n; i++)
            TRY(ops->gate_residual(ops, buf.tokens + (size_t)i * T * D, buf.pos, buf.ones, T,
                                   D));
    emit(ctx, "x_embed", -1, buf.tokens, 3, n, T, D);

    /* Conditioning: c = MLP(freq(t)) + class_table[y]. */
    STAGE(buf.t_freq, (size_t)n * DIT_TIMESTEP_FREQ_DIM);
    dit_timestep_frequencies(staged, t, n);
    TRY(stage_upload(ops, buf.t_freq, staged, (size_t)n * DIT_TIMESTEP_FREQ_DIM));
    emit(ctx, "t_freq", -1, buf.t_freq, 2, n, DIT_TIMESTEP_FREQ_DIM, 0);
    TRY(ops->linear(ops, buf.t_hidden, buf.t_freq, W->t_embedder_mlp0_weight,
                    W->t_embedder_mlp0_bias, n, DIT_TIMESTEP_FREQ_DIM, D));
    if (host)
        for (size_t i = 0; i < (size_t)n * D; i++)
            buf.t_hidden[i] = silu(buf.t_hidden[i]);
    else
        TRY(ops->silu(ops, buf.t_hidden, buf.t_hidden, (int64_t)n * D));
    TRY(ops->linear(ops, buf.cond, buf.t_hidden, W->t_embedder_mlp2_weight,
                    W->t_embedder_mlp2_bias, n, D, D));
    emit(ctx, "t_emb", -1, buf.cond, 2, n, D, 0);
    if (host) {
        for (int i = 0; i < n; i++) {
            const float *y_row = W->y_embedder_table + (size_t)class_ids[i] * D;
            for (int d = 0; d < D; d++)
                buf.cond[(size_t)i * D + d] += y_row[d];
        }
    } else {
        /* The class rows, gathered on the host, go through t_hidden (free by now). */
        STAGE(buf.t_hidden, (size_t)n * D);
        for (int i = 0; i < n; i++)
            memcpy(staged + (size_t)i * D, W->y_embedder_table + (size_t)class_ids[i] * D,
                   (size_t)D * sizeof(float));
        TRY(stage_upload(ops, buf.t_hidden, staged, (size_t)n * D));
        TRY(ops->gate_residual(ops, buf.cond, buf.t_hidden, buf.ones, n, D));
    }
    emit(ctx, "c", -1, buf.cond, 2, n, D, 0);
    if (host)
        for (size_t i = 0; i < (size_t)n * D; i++)
            buf.cond_act[i] = silu(buf.cond[i]);
    else
        TRY(ops->silu(ops, buf.cond_act, buf.cond, (int64_t)n * D));

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
        if (ctx->routing) {
            const int32_t *ids = view_begin(ops, buf.top_ids, (size_t)N * k, sizeof(int32_t),
                                            &status);
            if (!ids) {
                free_buffers(&buf);
                return status;
            }
            routing_record_topk(ctx->routing, layer, T, ids, k);
            view_end(ops, ids);
        }
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

    const int head_dim = p * p * Co;
    TRY(dit_final_layer(ops, buf.head, buf.normed, buf.modulation, buf.tokens, buf.cond_act,
                        W->final_adaLN_modulation_weight, W->final_adaLN_modulation_bias,
                        W->final_linear_weight, W->final_linear_bias, n, T, D, head_dim, eps));
    emit(ctx, "final_out", -1, buf.head, 3, n, T, head_dim);

    const float *head = view_begin(ops, buf.head, (size_t)N * head_dim, sizeof(float), &status);
    if (!head) {
        free_buffers(&buf);
        return status;
    }
    dit_unpatchify(out, head, n, Co, h, w, p);
    view_end(ops, head);
#undef STAGE
    if (ctx->debug_fn) {
        int64_t shape[4] = {n, Co, h, w};
        ctx->debug_fn("output", -1, out, 4, shape, ctx->debug_user_data);
    }
    free_buffers(&buf);
    return MOIRE_OK;
}
