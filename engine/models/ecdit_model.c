/* ecdit_model.c — EC-DiT model files: the family's keys of "moire.config", their validation,
 * and the binding of every checkpoint key to its ecdit_weights field (docs/ECDIT.md has the
 * table). The checks of presence, shape, dtype and finiteness, the zero-copy rule for aligned
 * F32 and the one fp32 arena for F16/BF16 are weight_binding.c's, shared with DiT-MoE
 * (model.c); this file adds the rejection of tensors that name a block, expert or text layer
 * the config does not have.
 */
#include "ecdit.h"
#include "internal.h"
#include "json_guard.h"
#include "weight_binding.h"

#include <ctype.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METADATA_VOCAB_KEY "moire.vocab"

/* ---- config ------------------------------------------------------------------------------ */

typedef struct ec_field {
    const char *key;
    bool is_float;
    size_t offset;
} ec_field;

#define EC_INT(name) {#name, false, offsetof(moire_model_config, name)}
static const ec_field ec_fields[] = {
    EC_INT(moe_every),       {"capacity_factor", true, offsetof(moire_model_config, capacity_factor)},
    EC_INT(routing_group_tokens), EC_INT(dense_hidden),  EC_INT(text_vocab_size),
    EC_INT(text_layers),     EC_INT(text_hidden),        EC_INT(text_heads),
    EC_INT(text_mlp_hidden), EC_INT(text_max_tokens),
};
#undef EC_INT

moire_status ecdit_config_from_json(moire_model_config *config, const char *json)
{
    JsonParser *parser = json_parser_new();
    moire_status status = MOIRE_OK;
    JsonObject *object = NULL;
    if (json_guard_load(parser, "moire.config", json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_OBJECT(root))
            object = json_node_get_object(root);
    }
    if (!object) {
        g_object_unref(parser);
        return error_fail(MOIRE_ERROR_FORMAT, "moire.config is not a JSON object");
    }
    /* family defaults for keys the file leaves out (model.c parsed the shared keys over the
       DiT-MoE defaults) */
    if (!json_object_has_member(object, "objective"))
        config->objective = MOIRE_OBJECTIVE_RECTIFIED_FLOW;
    if (!json_object_has_member(object, "space"))
        config->space = MOIRE_SPACE_PIXEL;
    config->moe_every = 2;
    config->capacity_factor = 2.0f;
    config->routing_group_tokens = 0;
    for (size_t i = 0; i < sizeof ec_fields / sizeof ec_fields[0] && status == MOIRE_OK; i++) {
        const ec_field *field = &ec_fields[i];
        JsonNode *node = json_object_get_member(object, field->key);
        if (!node)
            continue;
        GType type = JSON_NODE_HOLDS_VALUE(node) ? json_node_get_value_type(node) : G_TYPE_NONE;
        void *slot = (char *)config + field->offset;
        if (field->is_float && (type == G_TYPE_DOUBLE || type == G_TYPE_INT64)) {
            *(float *)slot = (float)json_node_get_double(node);
        } else if (!field->is_float && type == G_TYPE_INT64) {
            int64_t value = json_node_get_int(node);
            if (value < INT_MIN || value > INT_MAX)
                status = error_fail(MOIRE_ERROR_FORMAT,
                                    "moire.config: \"%s\" = %lld is out of range; fix the "
                                    "metadata", field->key, (long long)value);
            else
                *(int *)slot = (int)value;
        } else {
            status = error_fail(MOIRE_ERROR_FORMAT, "moire.config: \"%s\" must be %s; fix the "
                                "metadata", field->key, field->is_float ? "a number" : "an integer");
        }
    }
    g_object_unref(parser);
    return status;
}

static moire_status range(const char *field, int value, int low, int high)
{
    if (value >= low && value <= high)
        return MOIRE_OK;
    return error_fail(MOIRE_ERROR_FORMAT,
                      "model config: %s = %d is out of range (%d..%d); fix moire.config", field,
                      value, low, high);
}

moire_status ecdit_config_validate(const moire_model_config *c)
{
    moire_status status;
    if ((status = range("depth", c->depth, 1, 512)) ||
        (status = range("hidden_size", c->hidden_size, 1, 65536)) ||
        (status = range("num_heads", c->num_heads, 1, c->hidden_size)) ||
        (status = range("patch_size", c->patch_size, 1, 16)) ||
        (status = range("in_channels", c->in_channels, 1, 64)) ||
        (status = range("out_channels", c->out_channels, c->in_channels, 64)) ||
        (status = range("num_experts", c->num_experts, 1, 1024)) ||
        (status = range("expert_hidden", c->expert_hidden, 1, 1 << 20)) ||
        (status = range("shared_expert_hidden", c->shared_expert_hidden, 0, 1 << 20)) ||
        (status = range("input_size", c->input_size, c->patch_size, 16384)) ||
        (status = range("num_train_timesteps", c->num_train_timesteps, 2, 1000000)) ||
        (status = range("moe_every", c->moe_every, 0, 512)) ||
        (status = range("routing_group_tokens", c->routing_group_tokens, 0, 1 << 24)) ||
        (status = range("dense_hidden", c->dense_hidden, c->moe_every == 1 ? 0 : 1, 1 << 20)) ||
        (status = range("text_vocab_size", c->text_vocab_size, 5, 1 << 22)) ||
        (status = range("text_layers", c->text_layers, 0, 256)) ||
        (status = range("text_hidden", c->text_hidden, 1, 65536)) ||
        (status = range("text_heads", c->text_heads, 1, c->text_hidden)) ||
        (status = range("text_mlp_hidden", c->text_mlp_hidden, 1, 1 << 20)) ||
        (status = range("text_max_tokens", c->text_max_tokens, 2, 4096)))
        return status;
    if (c->hidden_size % c->num_heads || c->text_hidden % c->text_heads)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: num_heads = %d must divide hidden_size = %d and "
                          "text_heads = %d must divide text_hidden = %d; fix moire.config",
                          c->num_heads, c->hidden_size, c->text_heads, c->text_hidden);
    if (c->input_size % c->patch_size)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: input_size = %d is not a multiple of patch_size = %d; "
                          "fix moire.config", c->input_size, c->patch_size);
    if (c->learn_sigma ? c->out_channels != 2 * c->in_channels
                       : c->out_channels != c->in_channels)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: out_channels = %d must be %s in_channels = %d; fix "
                          "moire.config", c->out_channels, c->learn_sigma ? "twice" : "equal to",
                          c->in_channels);
    if (!(c->capacity_factor > 0.0f && c->capacity_factor <= 1024.0f))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: capacity_factor = %g must be in (0, 1024]; 2 is the "
                          "paper's value; fix moire.config", (double)c->capacity_factor);
    return model_config_check_common(c);
}

bool ecdit_block_is_moe(const moire_model_config *config, int block)
{
    return config->moe_every > 0 && block % config->moe_every == config->moe_every - 1;
}

/* ---- weight binding ---------------------------------------------------------------------- */

#define W(field, ...) weight_list_add(list, &(field), __VA_ARGS__)

static void bind_swiglu(weight_list *list, dit_swiglu_weights *mlp, int64_t D,
                        const char *prefix)
{
    const int64_t F = mlp->hidden;
    W(mlp->gate_proj_weight, 2, F, D, 0, 0, "%sgate_proj.weight", prefix);
    W(mlp->up_proj_weight, 2, F, D, 0, 0, "%sup_proj.weight", prefix);
    W(mlp->down_proj_weight, 2, D, F, 0, 0, "%sdown_proj.weight", prefix);
}

/* Every weight this config needs, with its expected shape. */
static void collect_bindings(const moire_model_config *c, ecdit_weights *w, weight_list *list)
{
    const int64_t D = c->hidden_size, Dt = c->text_hidden, p = c->patch_size;
    const int64_t hd = D / c->num_heads, T = (int64_t)(c->input_size / p) * (c->input_size / p);
    weight_binding *pos_embed = W(w->pos_embed, 3, 1, T, D, 0, "pos_embed");
    if (pos_embed) /* a fixed table, recomputed when absent */
        pos_embed->optional = pos_embed->is_buffer = true;
    W(w->x_embedder_proj_weight, 4, D, c->in_channels, p, p, "x_embedder.proj.weight");
    W(w->x_embedder_proj_bias, 1, D, 0, 0, 0, "x_embedder.proj.bias");
    W(w->t_embedder_mlp0_weight, 2, D, DIT_TIMESTEP_FREQ_DIM, 0, 0, "t_embedder.mlp.0.weight");
    W(w->t_embedder_mlp0_bias, 1, D, 0, 0, 0, "t_embedder.mlp.0.bias");
    W(w->t_embedder_mlp2_weight, 2, D, D, 0, 0, "t_embedder.mlp.2.weight");
    W(w->t_embedder_mlp2_bias, 1, D, 0, 0, 0, "t_embedder.mlp.2.bias");

    ecdit_text_weights *tw = &w->text;
    W(tw->token_embedding, 2, c->text_vocab_size, Dt, 0, 0, "text_encoder.token_embedding.weight");
    W(tw->position_embedding, 2, c->text_max_tokens, Dt, 0, 0,
      "text_encoder.position_embedding.weight");
    for (int j = 0; j < c->text_layers; j++) {
        ecdit_text_layer_weights *l = &tw->layers[j];
        const int64_t Ft = c->text_mlp_hidden;
        W(l->norm1_weight, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.norm1.weight", j);
        W(l->norm1_bias, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.norm1.bias", j);
        W(l->qkv_weight, 2, 3 * Dt, Dt, 0, 0, "text_encoder.layers.%d.attn.qkv.weight", j);
        W(l->qkv_bias, 1, 3 * Dt, 0, 0, 0, "text_encoder.layers.%d.attn.qkv.bias", j);
        W(l->proj_weight, 2, Dt, Dt, 0, 0, "text_encoder.layers.%d.attn.proj.weight", j);
        W(l->proj_bias, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.attn.proj.bias", j);
        W(l->norm2_weight, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.norm2.weight", j);
        W(l->norm2_bias, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.norm2.bias", j);
        W(l->fc1_weight, 2, Ft, Dt, 0, 0, "text_encoder.layers.%d.mlp.fc1.weight", j);
        W(l->fc1_bias, 1, Ft, 0, 0, 0, "text_encoder.layers.%d.mlp.fc1.bias", j);
        W(l->fc2_weight, 2, Dt, Ft, 0, 0, "text_encoder.layers.%d.mlp.fc2.weight", j);
        W(l->fc2_bias, 1, Dt, 0, 0, 0, "text_encoder.layers.%d.mlp.fc2.bias", j);
    }
    W(tw->final_norm_weight, 1, Dt, 0, 0, 0, "text_encoder.final_norm.weight");
    W(tw->final_norm_bias, 1, Dt, 0, 0, 0, "text_encoder.final_norm.bias");
    W(tw->pooled_proj_weight, 2, D, Dt, 0, 0, "text_encoder.pooled_proj.weight");
    W(tw->pooled_proj_bias, 1, D, 0, 0, 0, "text_encoder.pooled_proj.bias");

    for (int i = 0; i < c->depth; i++) {
        ecdit_block_weights *k = &w->blocks[i];
        char prefix[64];
        W(k->adaLN_modulation_weight, 2, 9 * D, D, 0, 0, "blocks.%d.adaLN_modulation.1.weight", i);
        W(k->adaLN_modulation_bias, 1, 9 * D, 0, 0, 0, "blocks.%d.adaLN_modulation.1.bias", i);
        W(k->attn.qkv_weight, 2, 3 * D, D, 0, 0, "blocks.%d.attn.qkv.weight", i);
        W(k->attn.qkv_bias, 1, 3 * D, 0, 0, 0, "blocks.%d.attn.qkv.bias", i);
        W(k->attn.proj_weight, 2, D, D, 0, 0, "blocks.%d.attn.proj.weight", i);
        W(k->attn.proj_bias, 1, D, 0, 0, 0, "blocks.%d.attn.proj.bias", i);
        if (c->attention_layout == MOIRE_ATTENTION_QK_NORM) {
            W(k->attn.q_norm_weight, 1, hd, 0, 0, 0, "blocks.%d.attn.q_norm.weight", i);
            W(k->attn.q_norm_bias, 1, hd, 0, 0, 0, "blocks.%d.attn.q_norm.bias", i);
            W(k->attn.k_norm_weight, 1, hd, 0, 0, 0, "blocks.%d.attn.k_norm.weight", i);
            W(k->attn.k_norm_bias, 1, hd, 0, 0, 0, "blocks.%d.attn.k_norm.bias", i);
        }
        W(k->cross_q_weight, 2, D, D, 0, 0, "blocks.%d.cross_attn.q.weight", i);
        W(k->cross_q_bias, 1, D, 0, 0, 0, "blocks.%d.cross_attn.q.bias", i);
        W(k->cross_kv_weight, 2, 2 * D, Dt, 0, 0, "blocks.%d.cross_attn.kv.weight", i);
        W(k->cross_kv_bias, 1, 2 * D, 0, 0, 0, "blocks.%d.cross_attn.kv.bias", i);
        W(k->cross_proj_weight, 2, D, D, 0, 0, "blocks.%d.cross_attn.proj.weight", i);
        W(k->cross_proj_bias, 1, D, 0, 0, 0, "blocks.%d.cross_attn.proj.bias", i);
        if (k->is_moe) {
            W(k->moe_gate_weight, 2, c->num_experts, D, 0, 0, "blocks.%d.moe.gate.weight", i);
            for (int e = 0; e < c->num_experts; e++) {
                snprintf(prefix, sizeof prefix, "blocks.%d.moe.experts.%d.", i, e);
                bind_swiglu(list, &k->experts[e], D, prefix);
            }
            if (c->shared_expert_hidden > 0) {
                snprintf(prefix, sizeof prefix, "blocks.%d.moe.shared_experts.", i);
                bind_swiglu(list, &k->shared_experts, D, prefix);
            }
        } else {
            snprintf(prefix, sizeof prefix, "blocks.%d.mlp.", i);
            bind_swiglu(list, &k->mlp, D, prefix);
        }
    }
    W(w->final_adaLN_modulation_weight, 2, 2 * D, D, 0, 0, "final_layer.adaLN_modulation.1.weight");
    W(w->final_adaLN_modulation_bias, 1, 2 * D, 0, 0, 0, "final_layer.adaLN_modulation.1.bias");
    W(w->final_linear_weight, 2, p * p * c->out_channels, D, 0, 0, "final_layer.linear.weight");
    W(w->final_linear_bias, 1, p * p * c->out_channels, 0, 0, 0, "final_layer.linear.bias");
}
#undef W

/* "blocks.{i}." → i, else -1; *rest = the text after it. */
static int block_index(const char *name, const char **rest)
{
    if (strncmp(name, "blocks.", 7) != 0 || !isdigit((unsigned char)name[7]))
        return -1;
    char *end;
    long index = strtol(name + 7, &end, 10);
    if (*end != '.' || index > INT_MAX)
        return -1;
    *rest = end + 1;
    return (int)index;
}

/* Tensors that name a part the config does not have (a block past depth, an expert past E,
 * a text layer past text_layers, a shared expert with width 0, experts in a dense block):
 * the metadata disagrees with the weights and part of the model would be silently dropped. */
static moire_status check_unbound(const char *name, void *user_data)
{
    const moire_model *model = user_data;
    const moire_model_config *c = &model->config;
    const char *rest;
    int block = block_index(name, &rest);
    if (strncmp(name, "text_encoder.layers.", 20) == 0 && atoi(name + 20) >= c->text_layers)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' belongs to text layer %d but the model config has "
                          "text_layers %d; fix moire.config", model->path, name, atoi(name + 20),
                          c->text_layers);
    if (block < 0)
        return MOIRE_OK;
    if (block >= c->depth)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' belongs to block %d but the model config has depth "
                          "%d; fix depth in moire.config", model->path, name, block, c->depth);
    bool moe = ecdit_block_is_moe(c, block);
    if ((strncmp(rest, "moe.", 4) == 0 && !moe) || (strncmp(rest, "mlp.", 4) == 0 && moe))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' says block %d is %s, but moe_every = %d makes it "
                          "%s; fix moe_every in moire.config", model->path, name, block,
                          moe ? "dense" : "MoE", c->moe_every, moe ? "MoE" : "dense");
    if (strncmp(rest, "moe.experts.", 12) == 0 && atoi(rest + 12) >= c->num_experts)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' belongs to expert %d but the model config has "
                          "num_experts %d; fix moire.config", model->path, name, atoi(rest + 12),
                          c->num_experts);
    if (strncmp(rest, "moe.shared_experts.", 19) == 0 && c->shared_expert_hidden == 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' is a shared expert but the model config has "
                          "shared_expert_hidden 0; fix moire.config", model->path, name);
    return MOIRE_OK;
}

static moire_status allocate_structure(moire_model *model, struct ecdit_model *ec)
{
    const moire_model_config *c = &model->config;
    ecdit_weights *w = &ec->weights;
    w->blocks = calloc_array((size_t)c->depth, sizeof *w->blocks);
    w->text.layers = calloc_array((size_t)c->text_layers + 1, sizeof *w->text.layers);
    if (!w->blocks || !w->text.layers)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
    for (int i = 0; i < c->depth; i++) {
        ecdit_block_weights *block = &w->blocks[i];
        block->is_moe = ecdit_block_is_moe(c, i);
        block->mlp.hidden = c->dense_hidden;
        if (!block->is_moe)
            continue;
        block->experts = calloc_array((size_t)c->num_experts, sizeof *block->experts);
        if (!block->experts)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
        for (int e = 0; e < c->num_experts; e++)
            block->experts[e].hidden = c->expert_hidden;
        block->shared_experts.hidden = c->shared_expert_hidden;
    }
    return MOIRE_OK;
}

moire_status ecdit_model_bind(moire_model *model)
{
    struct ecdit_model *ec = calloc(1, sizeof *ec);
    if (!ec)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
    model->ecdit = ec;
    moire_status status = allocate_structure(model, ec);
    if (status != MOIRE_OK)
        return status;
    status = ecdit_vocab_load(&ec->vocab, st_metadata_get(model->file, METADATA_VOCAB_KEY),
                              model->config.text_vocab_size, model->path);
    if (status != MOIRE_OK)
        return status;

    weight_list list = {0};
    collect_bindings(&model->config, &ec->weights, &list);
    const weight_file_kind kind = {
        .name = "EC-DiT model",
        .missing_fix = "(or its moire.config does not match its tensors)",
        .shape_source = "the model config",
        .shape_fix = "the moire.config metadata does not match the weights",
        .corrupt_fix = "the model is corrupt or diverged: use another one",
        .check_unbound = check_unbound,
        .user_data = model,
    };
    status = model_bind_weight_list(model, &list, &kind);
    weight_list_free(&list);
    return status;
}

void ecdit_model_free(struct ecdit_model *ec, int depth)
{
    if (!ec)
        return;
    if (ec->weights.blocks)
        for (int i = 0; i < depth; i++)
            free(ec->weights.blocks[i].experts);
    free(ec->weights.blocks);
    free(ec->weights.text.layers);
    ecdit_vocab_free(&ec->vocab);
    free(ec);
}
