/* bind.c — uploads a model's weights to the context's backend once (bind.h) and keeps the
 * bindings of the last few models, keyed by serial number. On the CPU a binding is a set of
 * pointers into the model (nothing is copied); on CUDA it is the model on the device.
 */
#include "bind.h"

#include "context.h"
#include "ecdit.h"
#include "internal.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ---- binder ------------------------------------------------------------------------- */

static void remember(binder *b, moire_tensor *t)
{
    if (b->made_count == b->made_cap) {
        const size_t cap = b->made_cap ? 2 * b->made_cap : 64;
        moire_tensor **grown = realloc(b->made, cap * sizeof *grown);
        if (!grown) {
            b->ops->weight_free(b->ops, t);
            b->status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding weights");
            return;
        }
        b->made = grown;
        b->made_cap = cap;
    }
    b->made[b->made_count++] = t;
}

void binder_stack(binder *b, moire_tensor *out, const float *const *parts, int count,
                  int64_t rows, int64_t cols, moire_weight_use use)
{
    memset(out, 0, sizeof *out);
    if (b->status != MOIRE_OK || count < 1 || !parts[0])
        return;
    b->status = b->ops->weight_upload(b->ops, out, parts, count, rows, cols, use);
    if (b->status == MOIRE_OK)
        remember(b, out);
}

void binder_tensor(binder *b, moire_tensor *out, const float *host, int64_t rows, int64_t cols,
                   moire_weight_use use)
{
    binder_stack(b, out, &host, 1, rows, cols, use);
}

void binder_swiglu(binder *b, moire_swiglu *out, const struct dit_swiglu_weights *experts,
                   int count, int D)
{
    memset(out, 0, sizeof *out);
    if (b->status != MOIRE_OK || count < 1 || !experts || experts[0].hidden <= 0)
        return;
    const int F = experts[0].hidden;
    for (int e = 1; e < count; e++)
        if (experts[e].hidden != F) {
            b->status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                                   "experts of different widths (%d and %d) are not supported",
                                   F, experts[e].hidden);
            return;
        }
    const float **parts = malloc_array((size_t)2 * count, sizeof *parts);
    if (!parts) {
        b->status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding weights");
        return;
    }
    for (int e = 0; e < count; e++) {
        parts[2 * e] = experts[e].gate_proj_weight;
        parts[2 * e + 1] = experts[e].up_proj_weight;
    }
    binder_stack(b, &out->gate_up, parts, 2 * count, F, D, MOIRE_WEIGHT_GEMM);
    for (int e = 0; e < count; e++)
        parts[e] = experts[e].down_proj_weight;
    binder_stack(b, &out->down, parts, count, D, F, MOIRE_WEIGHT_GEMM);
    free(parts);
    if (b->status == MOIRE_OK) {
        out->experts = count;
        out->hidden = F;
    }
}

void binder_release(binder *b)
{
    for (size_t i = b->made_count; i-- > 0;)
        b->ops->weight_free(b->ops, b->made[i]);
    free(b->made);
    b->made = NULL;
    b->made_count = b->made_cap = 0;
}

/* ---- the two model families ------------------------------------------------------------ */

static void bind_attention(binder *b, bound_attention *out, const dit_attention_weights *w,
                           int D, int hd)
{
    binder_tensor(b, &out->qkv_weight, w->qkv_weight, 3 * D, D, MOIRE_WEIGHT_GEMM);
    binder_tensor(b, &out->qkv_bias, w->qkv_bias, 1, 3 * D, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->q_norm_weight, w->q_norm_weight, 1, hd, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->q_norm_bias, w->q_norm_bias, 1, hd, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->k_norm_weight, w->k_norm_weight, 1, hd, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->k_norm_bias, w->k_norm_bias, 1, hd, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->proj_weight, w->proj_weight, D, D, MOIRE_WEIGHT_GEMM);
    binder_tensor(b, &out->proj_bias, w->proj_bias, 1, D, MOIRE_WEIGHT_EXACT);
}

/* The embedders and the final layer: the same keys in both families. */
#define BIND_TRUNK(b, out, W, cfg)                                                         \
    do {                                                                                   \
        const int D_ = (cfg)->hidden_size, p_ = (cfg)->patch_size;                         \
        binder_tensor(b, &(out)->x_embedder_proj_weight, (W)->x_embedder_proj_weight, D_,   \
                      (int64_t)(cfg)->in_channels * p_ * p_, MOIRE_WEIGHT_GEMM);           \
        binder_tensor(b, &(out)->x_embedder_proj_bias, (W)->x_embedder_proj_bias, 1, D_,    \
                      MOIRE_WEIGHT_EXACT);                                                 \
        binder_tensor(b, &(out)->t_embedder_mlp0_weight, (W)->t_embedder_mlp0_weight, D_,   \
                      DIT_TIMESTEP_FREQ_DIM, MOIRE_WEIGHT_GEMM);                           \
        binder_tensor(b, &(out)->t_embedder_mlp0_bias, (W)->t_embedder_mlp0_bias, 1, D_,    \
                      MOIRE_WEIGHT_EXACT);                                                 \
        binder_tensor(b, &(out)->t_embedder_mlp2_weight, (W)->t_embedder_mlp2_weight, D_,   \
                      D_, MOIRE_WEIGHT_GEMM);                                              \
        binder_tensor(b, &(out)->t_embedder_mlp2_bias, (W)->t_embedder_mlp2_bias, 1, D_,    \
                      MOIRE_WEIGHT_EXACT);                                                 \
        binder_tensor(b, &(out)->final_adaLN_modulation_weight,                             \
                      (W)->final_adaLN_modulation_weight, 2 * D_, D_, MOIRE_WEIGHT_GEMM);  \
        binder_tensor(b, &(out)->final_adaLN_modulation_bias,                               \
                      (W)->final_adaLN_modulation_bias, 1, 2 * D_, MOIRE_WEIGHT_EXACT);    \
        binder_tensor(b, &(out)->final_linear_weight, (W)->final_linear_weight,             \
                      (int64_t)p_ * p_ * (cfg)->out_channels, D_, MOIRE_WEIGHT_GEMM);      \
        binder_tensor(b, &(out)->final_linear_bias, (W)->final_linear_bias, 1,              \
                      (int64_t)p_ * p_ * (cfg)->out_channels, MOIRE_WEIGHT_EXACT);         \
    } while (0)

static void bind_dit(binder *b, model_bound *out, const moire_model *model)
{
    const moire_model_config *c = &model->config;
    const dit_weights *W = &model->weights;
    const int D = c->hidden_size, hd = D / c->num_heads;
    BIND_TRUNK(b, out, W, c);
    binder_tensor(b, &out->y_embedder_table, W->y_embedder_table, c->num_classes + 1, D,
                  MOIRE_WEIGHT_EXACT);
    for (int i = 0; i < c->depth && b->status == MOIRE_OK; i++) {
        const dit_block_weights *B = &W->blocks[i];
        dit_bound_block *o = &out->blocks[i];
        binder_tensor(b, &o->adaLN_modulation_weight, B->adaLN_modulation_weight, 6 * D, D,
                      MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->adaLN_modulation_bias, B->adaLN_modulation_bias, 1, 6 * D,
                      MOIRE_WEIGHT_EXACT);
        bind_attention(b, &o->attn, &B->attn, D, hd);
        /* The router stays fp32 everywhere: a narrowed router flips routing decisions. */
        binder_tensor(b, &o->moe_gate_weight, B->moe_gate_weight, c->num_experts, D,
                      MOIRE_WEIGHT_EXACT);
        binder_swiglu(b, &o->experts, B->experts, c->num_experts, D);
        if (B->shared_experts.hidden > 0)
            binder_swiglu(b, &o->shared_experts, &B->shared_experts, 1, D);
    }
}

static void bind_ecdit(binder *b, model_bound *out, const moire_model *model)
{
    const moire_model_config *c = &model->config;
    const ecdit_weights *W = &model->ecdit->weights;
    const int D = c->hidden_size, hd = D / c->num_heads, Dt = c->text_hidden;
    const int Ft = c->text_mlp_hidden;
    BIND_TRUNK(b, out, W, c);
    for (int i = 0; i < c->depth && b->status == MOIRE_OK; i++) {
        const ecdit_block_weights *B = &W->blocks[i];
        ecdit_bound_block *o = &out->ec_blocks[i];
        binder_tensor(b, &o->adaLN_modulation_weight, B->adaLN_modulation_weight, 9 * D, D,
                      MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->adaLN_modulation_bias, B->adaLN_modulation_bias, 1, 9 * D,
                      MOIRE_WEIGHT_EXACT);
        bind_attention(b, &o->attn, &B->attn, D, hd);
        binder_tensor(b, &o->cross_q_weight, B->cross_q_weight, D, D, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->cross_q_bias, B->cross_q_bias, 1, D, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->cross_kv_weight, B->cross_kv_weight, 2 * D, Dt, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->cross_kv_bias, B->cross_kv_bias, 1, 2 * D, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->cross_proj_weight, B->cross_proj_weight, D, D, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->cross_proj_bias, B->cross_proj_bias, 1, D, MOIRE_WEIGHT_EXACT);
        o->is_moe = B->is_moe;
        if (B->is_moe) {
            binder_tensor(b, &o->moe_gate_weight, B->moe_gate_weight, c->num_experts, D,
                          MOIRE_WEIGHT_EXACT);
            binder_swiglu(b, &o->experts, B->experts, c->num_experts, D);
            if (B->shared_experts.hidden > 0)
                binder_swiglu(b, &o->shared_experts, &B->shared_experts, 1, D);
        } else {
            binder_swiglu(b, &o->mlp, &B->mlp, 1, D);
        }
    }
    const ecdit_text_weights *T = &W->text;
    binder_tensor(b, &out->token_embedding, T->token_embedding, model->ecdit->vocab.size, Dt,
                  MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->position_embedding, T->position_embedding, c->text_max_tokens, Dt,
                  MOIRE_WEIGHT_EXACT);
    for (int i = 0; i < c->text_layers && b->status == MOIRE_OK; i++) {
        const ecdit_text_layer_weights *l = &T->layers[i];
        ecdit_bound_text_layer *o = &out->text_layers[i];
        binder_tensor(b, &o->norm1_weight, l->norm1_weight, 1, Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->norm1_bias, l->norm1_bias, 1, Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->qkv_weight, l->qkv_weight, 3 * Dt, Dt, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->qkv_bias, l->qkv_bias, 1, 3 * Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->proj_weight, l->proj_weight, Dt, Dt, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->proj_bias, l->proj_bias, 1, Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->norm2_weight, l->norm2_weight, 1, Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->norm2_bias, l->norm2_bias, 1, Dt, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->fc1_weight, l->fc1_weight, Ft, Dt, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->fc1_bias, l->fc1_bias, 1, Ft, MOIRE_WEIGHT_EXACT);
        binder_tensor(b, &o->fc2_weight, l->fc2_weight, Dt, Ft, MOIRE_WEIGHT_GEMM);
        binder_tensor(b, &o->fc2_bias, l->fc2_bias, 1, Dt, MOIRE_WEIGHT_EXACT);
    }
    binder_tensor(b, &out->final_norm_weight, T->final_norm_weight, 1, Dt, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->final_norm_bias, T->final_norm_bias, 1, Dt, MOIRE_WEIGHT_EXACT);
    binder_tensor(b, &out->pooled_proj_weight, T->pooled_proj_weight, D, Dt, MOIRE_WEIGHT_GEMM);
    binder_tensor(b, &out->pooled_proj_bias, T->pooled_proj_bias, 1, D, MOIRE_WEIGHT_EXACT);
}

static void free_model_bound(void *p)
{
    model_bound *mb = p;
    if (!mb)
        return;
    free(mb->blocks), free(mb->ec_blocks), free(mb->text_layers);
    free(mb);
}

/* ---- the cache ------------------------------------------------------------------------ */

bind_slot *binding_find(moire_ctx *ctx, binding_kind kind, uint64_t serial)
{
    for (int i = 0; i < BINDING_SLOTS; i++) {
        bind_slot *s = &ctx->bindings[i];
        if (s->serial && s->serial == serial && s->kind == kind) {
            s->last_used = ++ctx->bind_clock;
            return s;
        }
    }
    return NULL;
}

void binding_drop(moire_ctx *ctx, bind_slot *slot)
{
    (void)ctx;
    if (!slot->serial)
        return;
    binder_release(&slot->tensors);
    if (slot->free_bound)
        slot->free_bound(slot->bound);
    memset(slot, 0, sizeof *slot);
}

bind_slot *binding_claim(moire_ctx *ctx, binding_kind kind, uint64_t serial)
{
    bind_slot *victim = &ctx->bindings[0];
    for (int i = 0; i < BINDING_SLOTS; i++) {
        bind_slot *s = &ctx->bindings[i];
        if (!s->serial) {
            victim = s;
            break;
        }
        if (s->last_used < victim->last_used)
            victim = s;
    }
    binding_drop(ctx, victim);
    victim->kind = kind;
    victim->serial = serial;
    victim->last_used = ++ctx->bind_clock;
    victim->tensors = (binder){.ops = &ctx->ops, .status = MOIRE_OK};
    return victim;
}

void bindings_free_all(moire_ctx *ctx)
{
    for (int i = 0; i < BINDING_SLOTS; i++)
        binding_drop(ctx, &ctx->bindings[i]);
}

moire_status bind_model(moire_ctx *ctx, const moire_model *model, const model_bound **out)
{
    *out = NULL;
    if (!model->serial)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s has no serial number (not made by moire_model_load)",
                          model->name ? model->name : "?");
    bind_slot *slot = binding_find(ctx, BINDING_MODEL, model->serial);
    if (slot) {
        *out = slot->bound;
        return MOIRE_OK;
    }
    const moire_model_config *c = &model->config;
    model_bound *mb = calloc(1, sizeof *mb);
    const bool ec = model->family == MOIRE_FAMILY_EC_DIT;
    if (mb) {
        if (ec) {
            mb->ec_blocks = calloc_array((size_t)c->depth, sizeof *mb->ec_blocks);
            mb->text_layers = calloc_array((size_t)c->text_layers + 1,
                                           sizeof *mb->text_layers);
        } else {
            mb->blocks = calloc_array((size_t)c->depth, sizeof *mb->blocks);
        }
    }
    if (!mb || (ec ? !mb->ec_blocks || !mb->text_layers : !mb->blocks)) {
        free_model_bound(mb);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding %s", model->name);
    }
    slot = binding_claim(ctx, BINDING_MODEL, model->serial);
    slot->bound = mb;
    slot->free_bound = free_model_bound;
    if (ec)
        bind_ecdit(&slot->tensors, mb, model);
    else
        bind_dit(&slot->tensors, mb, model);
    const moire_status status = slot->tensors.status;
    if (status != MOIRE_OK) {
        error_prefix("%s on the %s backend", model->name, ctx->ops.name);
        binding_drop(ctx, slot);
        return status;
    }
    *out = mb;
    return MOIRE_OK;
}
