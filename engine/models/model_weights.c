/* model_weights.c — binding a DiT-MoE checkpoint's keys to its dit_weights fields: one table
 * from key to field and shape, checked by weight_binding.h (present, float, shape, finite),
 * and model_bind_weight_list, the step both families end their binding with. */
#include "model.h"

#include "weight_binding.h"
#include "internal.h"

#include <ctype.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Weight binding: one table from checkpoint keys to dit_weights fields and shapes
 * ---------------------------------------------------------------------------------------- */

/* Symbolic dimensions, resolved against the config (legend in model.h). */
typedef enum weight_dim {
    DIM_ONE,
    DIM_D,
    DIM_2D,
    DIM_3D,
    DIM_6D,
    DIM_HEAD,       /* hd = D / H                                 */
    DIM_IN,         /* C                                          */
    DIM_PATCH,      /* p                                          */
    DIM_EXPERTS,    /* E                                          */
    DIM_WIDTH,      /* SwiGLU width: F (routed) or S (shared)     */
    DIM_FREQ,       /* DIT_TIMESTEP_FREQ_DIM                      */
    DIM_CLASSES,    /* K + 1 (the null class row)                 */
    DIM_PATCH_OUT,  /* p · p · Co                                 */
    DIM_TOKENS,     /* T = (input_size / p)²                      */
} weight_dim;

typedef enum weight_scope {
    SCOPE_MODEL,  /* "<key>"                                   → dit_weights         */
    SCOPE_BLOCK,  /* "blocks.{i}.<key>"                        → dit_block_weights   */
    SCOPE_SWIGLU, /* "blocks.{i}.moe.experts.{e}.<key>" and
                     "blocks.{i}.moe.shared_experts.<key>"     → dit_swiglu_weights  */
} weight_scope;

typedef enum weight_layout {
    LAYOUT_ANY,
    LAYOUT_QKV,     /* only for MOIRE_ATTENTION_QKV     */
    LAYOUT_QK_NORM, /* only for MOIRE_ATTENTION_QK_NORM */
} weight_layout;

typedef struct weight_spec {
    weight_scope scope;
    weight_layout layout;
    const char *key;    /* relative to the scope's prefix                            */
    size_t offset;      /* of the const float * field within the scope's struct      */
    bool optional;
    int ndim;
    weight_dim dims[4];
} weight_spec;

#define MODEL_FIELD(field) offsetof(dit_weights, field)
#define BLOCK_FIELD(field) offsetof(dit_block_weights, field)
#define SWIGLU_FIELD(field) offsetof(dit_swiglu_weights, field)

static const weight_spec weight_table[] = {
    {SCOPE_MODEL, LAYOUT_ANY, "pos_embed", MODEL_FIELD(pos_embed), true, 3,
     {DIM_ONE, DIM_TOKENS, DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "x_embedder.proj.weight", MODEL_FIELD(x_embedder_proj_weight),
     false, 4, {DIM_D, DIM_IN, DIM_PATCH, DIM_PATCH}},
    {SCOPE_MODEL, LAYOUT_ANY, "x_embedder.proj.bias", MODEL_FIELD(x_embedder_proj_bias), false,
     1, {DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "t_embedder.mlp.0.weight", MODEL_FIELD(t_embedder_mlp0_weight),
     false, 2, {DIM_D, DIM_FREQ}},
    {SCOPE_MODEL, LAYOUT_ANY, "t_embedder.mlp.0.bias", MODEL_FIELD(t_embedder_mlp0_bias), false,
     1, {DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "t_embedder.mlp.2.weight", MODEL_FIELD(t_embedder_mlp2_weight),
     false, 2, {DIM_D, DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "t_embedder.mlp.2.bias", MODEL_FIELD(t_embedder_mlp2_bias), false,
     1, {DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "y_embedder.embedding_table.weight",
     MODEL_FIELD(y_embedder_table), false, 2, {DIM_CLASSES, DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "final_layer.adaLN_modulation.1.weight",
     MODEL_FIELD(final_adaLN_modulation_weight), false, 2, {DIM_2D, DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "final_layer.adaLN_modulation.1.bias",
     MODEL_FIELD(final_adaLN_modulation_bias), false, 1, {DIM_2D}},
    {SCOPE_MODEL, LAYOUT_ANY, "final_layer.linear.weight", MODEL_FIELD(final_linear_weight),
     false, 2, {DIM_PATCH_OUT, DIM_D}},
    {SCOPE_MODEL, LAYOUT_ANY, "final_layer.linear.bias", MODEL_FIELD(final_linear_bias), false,
     1, {DIM_PATCH_OUT}},

    {SCOPE_BLOCK, LAYOUT_ANY, "adaLN_modulation.1.weight", BLOCK_FIELD(adaLN_modulation_weight),
     false, 2, {DIM_6D, DIM_D}},
    {SCOPE_BLOCK, LAYOUT_ANY, "adaLN_modulation.1.bias", BLOCK_FIELD(adaLN_modulation_bias),
     false, 1, {DIM_6D}},
    /* timm attention (S/B) */
    {SCOPE_BLOCK, LAYOUT_QKV, "attn.qkv.weight", BLOCK_FIELD(attn.qkv_weight), false, 2,
     {DIM_3D, DIM_D}},
    {SCOPE_BLOCK, LAYOUT_QKV, "attn.qkv.bias", BLOCK_FIELD(attn.qkv_bias), false, 1, {DIM_3D}},
    {SCOPE_BLOCK, LAYOUT_QKV, "attn.proj.weight", BLOCK_FIELD(attn.proj_weight), false, 2,
     {DIM_D, DIM_D}},
    {SCOPE_BLOCK, LAYOUT_QKV, "attn.proj.bias", BLOCK_FIELD(attn.proj_bias), false, 1, {DIM_D}},
    /* flash attention with per-head qk LayerNorm (XL/G) */
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.Wqkv.weight", BLOCK_FIELD(attn.qkv_weight), false, 2,
     {DIM_3D, DIM_D}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.Wqkv.bias", BLOCK_FIELD(attn.qkv_bias), false, 1,
     {DIM_3D}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.q_norm.weight", BLOCK_FIELD(attn.q_norm_weight), false,
     1, {DIM_HEAD}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.q_norm.bias", BLOCK_FIELD(attn.q_norm_bias), false, 1,
     {DIM_HEAD}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.k_norm.weight", BLOCK_FIELD(attn.k_norm_weight), false,
     1, {DIM_HEAD}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.k_norm.bias", BLOCK_FIELD(attn.k_norm_bias), false, 1,
     {DIM_HEAD}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.out_proj.weight", BLOCK_FIELD(attn.proj_weight), false,
     2, {DIM_D, DIM_D}},
    {SCOPE_BLOCK, LAYOUT_QK_NORM, "attn.out_proj.bias", BLOCK_FIELD(attn.proj_bias), false, 1,
     {DIM_D}},
    {SCOPE_BLOCK, LAYOUT_ANY, "moe.gate.weight", BLOCK_FIELD(moe_gate_weight), false, 2,
     {DIM_EXPERTS, DIM_D}},

    {SCOPE_SWIGLU, LAYOUT_ANY, "gate_proj.weight", SWIGLU_FIELD(gate_proj_weight), false, 2,
     {DIM_WIDTH, DIM_D}},
    {SCOPE_SWIGLU, LAYOUT_ANY, "up_proj.weight", SWIGLU_FIELD(up_proj_weight), false, 2,
     {DIM_WIDTH, DIM_D}},
    {SCOPE_SWIGLU, LAYOUT_ANY, "down_proj.weight", SWIGLU_FIELD(down_proj_weight), false, 2,
     {DIM_D, DIM_WIDTH}},
};
#define WEIGHT_SPEC_COUNT ((int)(sizeof weight_table / sizeof weight_table[0]))

static int64_t resolve_dim(weight_dim dim, const moire_model_config *c, int width)
{
    int64_t hidden = c->hidden_size, patch = c->patch_size;
    switch (dim) {
    case DIM_ONE:       return 1;
    case DIM_D:         return hidden;
    case DIM_2D:        return 2 * hidden;
    case DIM_3D:        return 3 * hidden;
    case DIM_6D:        return 6 * hidden;
    case DIM_HEAD:      return hidden / c->num_heads;
    case DIM_IN:        return c->in_channels;
    case DIM_PATCH:     return patch;
    case DIM_EXPERTS:   return c->num_experts;
    case DIM_WIDTH:     return width;
    case DIM_FREQ:      return DIT_TIMESTEP_FREQ_DIM;
    case DIM_CLASSES:   return (int64_t)c->num_classes + 1;
    case DIM_PATCH_OUT: return patch * patch * c->out_channels;
    case DIM_TOKENS:    return ((int64_t)c->input_size / patch) * (c->input_size / patch);
    }
    return -1;
}

/* One table row made concrete for a scope (the model, a block, an expert): "<prefix><key>". */
static void add_binding(weight_list *list, const weight_spec *spec, void *scope_base,
                        const moire_model_config *config, int width, const char *prefix)
{
    int64_t shape[4] = {0};
    for (int d = 0; d < spec->ndim; d++)
        shape[d] = resolve_dim(spec->dims[d], config, width);
    weight_binding *binding =
        weight_list_add(list, (const float **)((char *)scope_base + spec->offset), spec->ndim,
                        shape[0], shape[1], shape[2], shape[3], "%s%s", prefix, spec->key);
    if (binding) /* pos_embed: an optional fixed table, recomputed when absent */
        binding->optional = binding->is_buffer = spec->optional;
}

static bool spec_applies(const weight_spec *spec, moire_attention_layout layout)
{
    return spec->layout == LAYOUT_ANY ||
           (spec->layout == LAYOUT_QKV) == (layout == MOIRE_ATTENTION_QKV);
}

/* Instantiates the table for this config. The block and expert arrays must already exist
 * (their addresses are the destinations). */
static void collect_bindings(moire_model *model, weight_list *list)
{
    const moire_model_config *c = &model->config;
    dit_weights *weights = &model->weights;
    char prefix[64];
    for (int s = 0; s < WEIGHT_SPEC_COUNT; s++) {
        const weight_spec *spec = &weight_table[s];
        if (!spec_applies(spec, c->attention_layout))
            continue;
        if (spec->scope == SCOPE_MODEL) {
            add_binding(list, spec, weights, c, 0, "");
            continue;
        }
        for (int b = 0; b < c->depth; b++) {
            dit_block_weights *block = &weights->blocks[b];
            if (spec->scope == SCOPE_BLOCK) {
                snprintf(prefix, sizeof prefix, "blocks.%d.", b);
                add_binding(list, spec, block, c, 0, prefix);
                continue;
            }
            for (int e = 0; e < c->num_experts; e++) {
                snprintf(prefix, sizeof prefix, "blocks.%d.moe.experts.%d.", b, e);
                add_binding(list, spec, &block->experts[e], c, c->expert_hidden, prefix);
            }
            if (c->shared_expert_hidden > 0) {
                snprintf(prefix, sizeof prefix, "blocks.%d.moe.shared_experts.", b);
                add_binding(list, spec, &block->shared_experts, c, c->shared_expert_hidden,
                            prefix);
            }
        }
    }
}

/* A missing attention tensor usually means metadata naming the other attention layout. */
static moire_status explain_missing_tensor(const weight_binding *binding, const st_file *file,
                                           const char *path, void *user_data)
{
    const moire_model *model = user_data;
    if (!strstr(binding->key, ".attn."))
        return MOIRE_OK;
    bool qkv = model->config.attention_layout == MOIRE_ATTENTION_QKV;
    const char *other = qkv ? "blocks.0.attn.Wqkv.weight" : "blocks.0.attn.qkv.weight";
    if (!st_find(file, other))
        return MOIRE_OK;
    return error_fail(MOIRE_ERROR_FORMAT,
                      "%s: tensor '%s' is missing: the config says attention_layout \"%s\" but "
                      "the file has '%s' (layout \"%s\"); fix attention_layout in moire.config",
                      path, binding->key, qkv ? "qkv" : "qk_norm", other,
                      qkv ? "qk_norm" : "qkv");
}

/* Tensors whose name says they belong to the model but that the config leaves unbound:
 * a block past `depth`, an expert past `num_experts`, a shared expert when its width is 0.
 * They mean the metadata disagrees with the weights, which would silently drop layers. */
static moire_status check_unbound_tensor(const char *name, void *user_data)
{
    const moire_model *model = user_data;
    const moire_model_config *c = &model->config;
    const char *rest = NULL;
    int block = model_block_index(name, &rest);
    if (block < 0)
        return MOIRE_OK;
    if (block >= c->depth)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' belongs to block %d but the model config has depth "
                          "%d; fix depth in moire.config", model->path, name, block, c->depth);
    if (strncmp(rest, "moe.experts.", 12) == 0) {
        int expert = atoi(rest + 12);
        if (expert >= c->num_experts)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: tensor '%s' belongs to expert %d but the model config has "
                              "num_experts %d; fix num_experts in moire.config", model->path,
                              name, expert, c->num_experts);
    }
    if (strncmp(rest, "moe.shared_experts.", 19) == 0 && c->shared_expert_hidden == 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' is a shared expert but the model config has "
                          "shared_expert_hidden 0; fix moire.config", model->path, name);
    return MOIRE_OK;
}

moire_status dit_model_bind(moire_model *model)
{
    const moire_model_config *c = &model->config;
    dit_weights *weights = &model->weights;

    weights->blocks = calloc_array((size_t)c->depth, sizeof(dit_block_weights));
    if (!weights->blocks)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
    for (int b = 0; b < c->depth; b++) {
        dit_block_weights *block = &weights->blocks[b];
        block->experts = calloc_array((size_t)c->num_experts, sizeof(dit_swiglu_weights));
        if (!block->experts)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
        for (int e = 0; e < c->num_experts; e++)
            block->experts[e].hidden = c->expert_hidden;
        block->shared_experts.hidden = c->shared_expert_hidden;
    }

    weight_list list = {0};
    collect_bindings(model, &list);
    const weight_file_kind kind = {
        .name = "DiT-MoE checkpoint",
        .missing_fix = "(or its moire.config does not match its tensors)",
        .shape_source = "the model config",
        .shape_fix = "the moire.config metadata does not match the weights, or the file is not "
                     "a DiT-MoE checkpoint",
        .corrupt_fix = "the checkpoint is corrupt or diverged: use another one",
        .explain_missing = explain_missing_tensor,
        .check_unbound = check_unbound_tensor,
        .user_data = model,
    };
    moire_status status = model_bind_weight_list(model, &list, &kind);
    weight_list_free(&list);
    return status;
}

moire_status model_bind_weight_list(moire_model *model, weight_list *list,
                                    const weight_file_kind *kind)
{
    weight_bind_result bound;
    moire_status status = weight_list_bind(list, model->file, model->path, kind, &bound);
    if (status != MOIRE_OK)
        return status;
    model->arena = bound.arena;
    model->arena_floats = bound.arena_floats;
    model->parameter_count = bound.parameter_count;
    model->unused_tensor_count = st_tensor_count(model->file) - bound.bound;
    snprintf(model->dtype_name, sizeof model->dtype_name, "%s", bound.dtype_name);
    return MOIRE_OK;
}
