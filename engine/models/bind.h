/* bind.h — a model's weights in a backend: the device-side mirror of the host weight structs
 * (model.h, ecdit.h), made once per (context, model) by uploading every tensor through
 * ops->weight_upload, and the context's small cache of such bindings.
 *
 * The cache is keyed by the model's serial number (moire_model.serial, never reused in a
 * process), not by its address: a model freed and another loaded at the same address gets a
 * binding of its own, never the stale device copies of the first.
 */
#ifndef MOIRE_BIND_H
#define MOIRE_BIND_H

#include "ops.h"

#include <stdint.h>

typedef struct moire_model moire_model;

typedef struct bound_attention {
    moire_tensor qkv_weight, qkv_bias;       /* [3D, D], [3D]                              */
    moire_tensor q_norm_weight, q_norm_bias; /* [hd] (qk-norm layout; absent otherwise)    */
    moire_tensor k_norm_weight, k_norm_bias; /* [hd]                                       */
    moire_tensor proj_weight, proj_bias;     /* [D, D], [D]                                */
} bound_attention;

typedef struct dit_bound_block {
    moire_tensor adaLN_modulation_weight, adaLN_modulation_bias; /* [6D, D], [6D]          */
    bound_attention attn;
    moire_tensor moe_gate_weight;  /* [E, D]                                               */
    moire_swiglu experts;          /* E experts of width F                                 */
    moire_swiglu shared_experts;   /* 1 expert of width S, or absent                       */
} dit_bound_block;

typedef struct ecdit_bound_block {
    moire_tensor adaLN_modulation_weight, adaLN_modulation_bias; /* [9D, D], [9D]          */
    bound_attention attn;
    moire_tensor cross_q_weight, cross_q_bias;       /* [D, D], [D]                        */
    moire_tensor cross_kv_weight, cross_kv_bias;     /* [2D, Dt], [2D]                     */
    moire_tensor cross_proj_weight, cross_proj_bias; /* [D, D], [D]                        */
    bool is_moe;
    moire_tensor moe_gate_weight;  /* [E, D] (MoE blocks)                                  */
    moire_swiglu experts;          /* MoE blocks                                           */
    moire_swiglu shared_experts;
    moire_swiglu mlp;              /* dense blocks                                         */
} ecdit_bound_block;

typedef struct ecdit_bound_text_layer {
    moire_tensor norm1_weight, norm1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias;
    moire_tensor norm2_weight, norm2_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias;
} ecdit_bound_text_layer;

/* Both families: the shared trunk, and the blocks of the model's family. */
typedef struct model_bound {
    moire_tensor x_embedder_proj_weight, x_embedder_proj_bias; /* [D, C·p·p], [D]          */
    moire_tensor t_embedder_mlp0_weight, t_embedder_mlp0_bias; /* [D, 256], [D]            */
    moire_tensor t_embedder_mlp2_weight, t_embedder_mlp2_bias; /* [D, D], [D]              */
    moire_tensor y_embedder_table;                             /* [K+1, D] (DiT-MoE)        */
    moire_tensor final_adaLN_modulation_weight, final_adaLN_modulation_bias; /* [2D, D]    */
    moire_tensor final_linear_weight, final_linear_bias;       /* [p·p·Co, D]               */
    dit_bound_block *blocks;        /* DiT-MoE: [depth]                                    */
    ecdit_bound_block *ec_blocks;   /* EC-DiT: [depth]                                     */
    /* EC-DiT's text encoder */
    moire_tensor token_embedding, position_embedding;          /* [V, Dt], [L, Dt]          */
    ecdit_bound_text_layer *text_layers;                       /* [text_layers]             */
    moire_tensor final_norm_weight, final_norm_bias;           /* [Dt]                      */
    moire_tensor pooled_proj_weight, pooled_proj_bias;         /* [D, Dt], [D]              */
} model_bound;

/* ---- building a binding (also used by vae.c) ---- */

/* Collects every tensor it uploads, so freeing a binding is one loop whatever its shape. */
typedef struct binder {
    const moire_ops *ops;
    moire_status status;   /* the first failure; later calls do nothing                  */
    moire_tensor **made;   /* tensors uploaded                                           */
    size_t made_count, made_cap;
} binder;

void binder_tensor(binder *b, moire_tensor *out, const float *host, int64_t rows, int64_t cols,
                 moire_weight_use use);
/* A stack of `count` parts of [rows, cols]. */
void binder_stack(binder *b, moire_tensor *out, const float *const *parts, int count,
                int64_t rows, int64_t cols, moire_weight_use use);
struct dit_swiglu_weights;
/* `count` SwiGLU experts of width experts[0].hidden over D (all must be that wide). */
void binder_swiglu(binder *b, moire_swiglu *out, const struct dit_swiglu_weights *experts,
                 int count, int D);
/* Frees every tensor the binder made (and its list). */
void binder_release(binder *b);

/* ---- the context's cache ---- */

typedef enum binding_kind { BINDING_MODEL = 0, BINDING_VAE = 1 } binding_kind;

typedef struct bind_slot {
    binding_kind kind;
    uint64_t serial;     /* 0 = empty slot                                               */
    void *bound;         /* model_bound, or vae.c's own struct                           */
    void (*free_bound)(void *bound);
    uint64_t last_used;  /* the context's clock at the last lookup (LRU eviction)       */
    binder tensors;
} bind_slot;

#define BINDING_SLOTS 4

/* The model's binding in this context, made on first use (weights uploaded once). Evicts the
 * least recently bound slot when all are taken. */
moire_status bind_model(moire_ctx *ctx, const moire_model *model, const model_bound **out);
/* For other bindable objects (the VAE): find the slot of (kind, serial), or NULL. */
bind_slot *binding_find(moire_ctx *ctx, binding_kind kind, uint64_t serial);
/* A fresh slot for (kind, serial): evicts as needed; the caller fills `bound`, `free_bound`
 * and binds through `tensors` (binder with ops set). */
bind_slot *binding_claim(moire_ctx *ctx, binding_kind kind, uint64_t serial);
void binding_drop(moire_ctx *ctx, bind_slot *slot);
void bindings_free_all(moire_ctx *ctx);

#endif /* MOIRE_BIND_H */
