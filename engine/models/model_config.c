/* model_config.c — a model's config (moire_model_config, shared by both families): the
 * DiT-MoE defaults, "moire.config" JSON in and out, validation (with the checks both
 * families share, model_config_check_common) and inference from the released checkpoints'
 * key names and shapes. Format: docs/MODEL_FORMAT.md. */
#include "model.h"

#include "json_guard.h"
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
 * Config: defaults, JSON in and out, validation
 * ---------------------------------------------------------------------------------------- */

/* What every released DiT-MoE checkpoint shares; geometry is left 0 for the file to give. */
static void config_set_family_defaults(moire_model_config *config)
{
    memset(config, 0, sizeof *config);
    snprintf(config->family, sizeof config->family, "dit-moe");
    config->top_k = 2;
    config->attention_layout = MOIRE_ATTENTION_QKV;
    config->objective = MOIRE_OBJECTIVE_DDPM_EPS;
    config->num_train_timesteps = 1000;
    config->beta_start = 1e-4f;
    config->beta_end = 0.02f;
    config->space = MOIRE_SPACE_LATENT;
    config->layernorm_eps = 1e-6f;
}

typedef enum config_field_kind {
    FIELD_INT,
    FIELD_FLOAT,
    FIELD_BOOL,
    FIELD_FAMILY,
    FIELD_LAYOUT,
    FIELD_OBJECTIVE,
    FIELD_SPACE,
} config_field_kind;

/* The JSON keys of "moire.config", in the order dit_config_to_json writes them. The Python
 * exporter writes the same keys; keep the two in step (docs/MODEL_FORMAT.md). */
static const struct config_field {
    const char *key;
    config_field_kind kind;
    size_t offset;
    bool required; /* geometry: no family default can stand in for it */
} config_fields[] = {
#define FIELD(name, kind, required) {#name, kind, offsetof(moire_model_config, name), required}
    FIELD(family, FIELD_FAMILY, false),
    FIELD(depth, FIELD_INT, true),
    FIELD(hidden_size, FIELD_INT, true),
    FIELD(num_heads, FIELD_INT, true),
    FIELD(patch_size, FIELD_INT, true),
    FIELD(in_channels, FIELD_INT, true),
    FIELD(out_channels, FIELD_INT, true),
    FIELD(num_experts, FIELD_INT, true),
    FIELD(top_k, FIELD_INT, false),
    FIELD(expert_hidden, FIELD_INT, true),
    FIELD(shared_expert_hidden, FIELD_INT, false),
    FIELD(attention_layout, FIELD_LAYOUT, false),
    FIELD(num_classes, FIELD_INT, false),
    FIELD(learn_sigma, FIELD_BOOL, false),
    FIELD(input_size, FIELD_INT, true),
    FIELD(objective, FIELD_OBJECTIVE, false),
    FIELD(num_train_timesteps, FIELD_INT, false),
    FIELD(beta_start, FIELD_FLOAT, false),
    FIELD(beta_end, FIELD_FLOAT, false),
    FIELD(space, FIELD_SPACE, false),
    FIELD(layernorm_eps, FIELD_FLOAT, false),
#undef FIELD
};
#define CONFIG_FIELD_COUNT ((int)(sizeof config_fields / sizeof config_fields[0]))

static const char *const layout_names[] = {[MOIRE_ATTENTION_QKV] = "qkv",
                                           [MOIRE_ATTENTION_QK_NORM] = "qk_norm"};
static const char *const objective_names[] = {[MOIRE_OBJECTIVE_DDPM_EPS] = "ddpm_eps",
                                              [MOIRE_OBJECTIVE_RECTIFIED_FLOW] = "rectified_flow"};
static const char *const space_names[] = {[MOIRE_SPACE_LATENT] = "latent",
                                          [MOIRE_SPACE_PIXEL] = "pixel"};

static bool json_value_is(JsonNode *node, GType type)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

/* Looks `text` up in `names` (count entries); -1 if absent. */
static int enum_from_name(const char *const *names, int count, const char *text)
{
    for (int i = 0; i < count; i++)
        if (strcmp(names[i], text) == 0)
            return i;
    return -1;
}

/* names[value] for the two-valued enums above; "?" for a value out of range. */
static const char *enum_name(const char *const *names, int value)
{
    return value == 0 || value == 1 ? names[value] : "?";
}

static moire_status parse_config_field(moire_model_config *config,
                                       const struct config_field *field, JsonNode *node)
{
    void *slot = (char *)config + field->offset;
    const char *key = field->key;
    switch (field->kind) {
    case FIELD_INT: {
        if (!json_value_is(node, G_TYPE_INT64))
            return error_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be an integer; fix the metadata", key);
        int64_t value = json_node_get_int(node);
        if (value < INT_MIN || value > INT_MAX)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" = %lld is out of range; fix the metadata",
                              key, (long long)value);
        *(int *)slot = (int)value;
        return MOIRE_OK;
    }
    case FIELD_FLOAT:
        if (!json_value_is(node, G_TYPE_DOUBLE) && !json_value_is(node, G_TYPE_INT64))
            return error_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be a number; fix the metadata", key);
        *(float *)slot = (float)json_node_get_double(node);
        return MOIRE_OK;
    case FIELD_BOOL:
        if (!json_value_is(node, G_TYPE_BOOLEAN))
            return error_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be true or false; fix the metadata",
                              key);
        *(bool *)slot = json_node_get_boolean(node);
        return MOIRE_OK;
    default:
        break;
    }

    /* the remaining kinds are strings */
    if (!json_value_is(node, G_TYPE_STRING))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "moire.config: \"%s\" must be a string; fix the metadata", key);
    const char *text = json_node_get_string(node);
    if (field->kind == FIELD_FAMILY) {
        if (strlen(text) >= MOIRE_FAMILY_MAX)
            return error_fail(MOIRE_ERROR_UNSUPPORTED,
                              "moire.config: family \"%.40s…\" is not supported (supported: "
                              "dit-moe)", text);
        snprintf(config->family, sizeof config->family, "%s", text);
        return MOIRE_OK;
    }
    const char *const *names = field->kind == FIELD_LAYOUT ? layout_names
                             : field->kind == FIELD_OBJECTIVE ? objective_names : space_names;
    int value = enum_from_name(names, 2, text);
    if (value < 0)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "moire.config: %s \"%s\" is not supported (use \"%s\" or \"%s\")",
                          key, text, names[0], names[1]);
    if (field->kind == FIELD_LAYOUT)
        config->attention_layout = (moire_attention_layout)value;
    else if (field->kind == FIELD_OBJECTIVE)
        config->objective = (moire_objective)value;
    else
        config->space = (moire_space)value;
    return MOIRE_OK;
}

moire_status dit_config_from_json(moire_model_config *config, const char *json)
{
    JsonParser *parser = json_parser_new();
    moire_status status = MOIRE_OK;
    if (json_guard_load(parser, "moire.config", json, -1) != MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = error_fail(MOIRE_ERROR_FORMAT, "%s; fix or remove the metadata",
                            why ? why : "moire.config is not valid JSON");
        free(why);
        g_object_unref(parser);
        return status;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return error_fail(MOIRE_ERROR_FORMAT,
                          "moire.config is not a JSON object; fix or remove the metadata");
    }
    JsonObject *object = json_node_get_object(root);
    for (int i = 0; i < CONFIG_FIELD_COUNT && status == MOIRE_OK; i++) {
        JsonNode *node = json_object_get_member(object, config_fields[i].key);
        if (node)
            status = parse_config_field(config, &config_fields[i], node);
    }
    g_object_unref(parser);
    return status;
}

/* The shortest decimal that reads back as the same float, in the C locale (a GTK app may
 * run with a decimal comma), so 1e-4f prints as "0.0001" rather than "9.99999975e-05". */
static void format_float(char *buffer, size_t size, float value)
{
    if (!isfinite(value)) {
        snprintf(buffer, size, "null");
        return;
    }
    for (int precision = 6; precision <= 9; precision++) {
        char format[8];
        snprintf(format, sizeof format, "%%.%dg", precision);
        g_ascii_formatd(buffer, (gint)size, format, (double)value);
        if ((float)g_ascii_strtod(buffer, NULL) == value)
            return;
    }
}

char *dit_config_to_json(const moire_model_config *config)
{
    GString *json = g_string_new("{");
    for (int i = 0; i < CONFIG_FIELD_COUNT; i++) {
        const struct config_field *field = &config_fields[i];
        const void *slot = (const char *)config + field->offset;
        g_string_append_printf(json, "%s\"%s\": ", i ? ", " : "", field->key);
        char number[32];
        switch (field->kind) {
        case FIELD_INT:
            g_string_append_printf(json, "%d", *(const int *)slot);
            break;
        case FIELD_FLOAT:
            format_float(number, sizeof number, *(const float *)slot);
            g_string_append(json, number);
            break;
        case FIELD_BOOL:
            g_string_append(json, *(const bool *)slot ? "true" : "false");
            break;
        case FIELD_FAMILY: {
            /* json_to_string quotes and escapes whatever the family string holds */
            JsonNode *node = json_node_init_string(json_node_alloc(), config->family);
            char *quoted = json_to_string(node, FALSE);
            g_string_append(json, quoted);
            g_free(quoted);
            json_node_unref(node);
            break;
        }
        case FIELD_LAYOUT:
            g_string_append_printf(json, "\"%s\"", enum_name(layout_names,
                                                             (int)config->attention_layout));
            break;
        case FIELD_OBJECTIVE:
            g_string_append_printf(json, "\"%s\"", enum_name(objective_names,
                                                             (int)config->objective));
            break;
        case FIELD_SPACE:
            g_string_append_printf(json, "\"%s\"", enum_name(space_names, (int)config->space));
            break;
        }
    }
    g_string_append_c(json, '}');
    /* hand back malloc()ed memory, as the header promises free() */
    char *result = strdup(json->str);
    g_string_free(json, TRUE);
    return result;
}

static moire_status check_range(const char *field, int value, int low, int high)
{
    if (value >= low && value <= high)
        return MOIRE_OK;
    return error_fail(MOIRE_ERROR_FORMAT,
                      "model config: %s = %d is out of range (%d..%d); fix moire.config", field,
                      value, low, high);
}

static moire_status check_family(const moire_model_config *config)
{
    if (strcmp(config->family, "dit-moe") == 0 || strcmp(config->family, "ec-dit") == 0)
        return MOIRE_OK;
    return error_fail(MOIRE_ERROR_UNSUPPORTED,
                      "model config: family \"%s\" is not supported (supported: dit-moe, "
                      "ec-dit)", config->family);
}

moire_status dit_config_read(moire_model_config *config, const char *json)
{
    config_set_family_defaults(config);
    moire_status status = dit_config_from_json(config, json);
    if (status != MOIRE_OK)
        return status;
    /* a family we do not know may use other keys: say so before naming missing ones */
    return check_family(config);
}

moire_status dit_config_check_required(const moire_model_config *config)
{
    /* geometry has no default: name the first missing key rather than fail later */
    for (int i = 0; i < CONFIG_FIELD_COUNT; i++) {
        const struct config_field *field = &config_fields[i];
        if (field->required && *(const int *)((const char *)config + field->offset) == 0)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "moire.config has no \"%s\" (or it is 0); add it "
                              "(docs/MODEL_FORMAT.md)", field->key);
    }
    return MOIRE_OK;
}

/* The checks both families' validation ends with (ecdit_config_validate too): enum values,
 * the noise schedule's betas, LayerNorm's epsilon. */
moire_status model_config_check_common(const moire_model_config *c)
{
    if ((unsigned)c->attention_layout > MOIRE_ATTENTION_QK_NORM ||
        (unsigned)c->objective > MOIRE_OBJECTIVE_RECTIFIED_FLOW ||
        (unsigned)c->space > MOIRE_SPACE_PIXEL)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "model config: attention_layout, objective or space has an unknown "
                          "value");
    /* written as negations so that NaN fails too */
    if (!(c->beta_start > 0.0f && c->beta_start < c->beta_end && c->beta_end < 1.0f))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: beta_start = %g and beta_end = %g must satisfy "
                          "0 < beta_start < beta_end < 1; fix moire.config",
                          (double)c->beta_start, (double)c->beta_end);
    if (!(c->layernorm_eps > 0.0f) || !isfinite(c->layernorm_eps))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: layernorm_eps = %g must be positive; fix moire.config",
                          (double)c->layernorm_eps);
    return MOIRE_OK;
}

moire_status dit_config_validate(const moire_model_config *config)
{
    const moire_model_config *c = config;
    moire_status status = check_family(c);
    if (status != MOIRE_OK)
        return status;
    if ((status = check_range("depth", c->depth, 1, 512)) ||
        (status = check_range("hidden_size", c->hidden_size, 1, 65536)) ||
        (status = check_range("num_heads", c->num_heads, 1, c->hidden_size)) ||
        (status = check_range("patch_size", c->patch_size, 1, 16)) ||
        (status = check_range("in_channels", c->in_channels, 1, 64)) ||
        (status = check_range("out_channels", c->out_channels, c->in_channels, 64)) ||
        (status = check_range("num_experts", c->num_experts, 1, 1024)) ||
        (status = check_range("top_k", c->top_k, 1, c->num_experts)) ||
        (status = check_range("expert_hidden", c->expert_hidden, 1, 1 << 20)) ||
        (status = check_range("shared_expert_hidden", c->shared_expert_hidden, 0, 1 << 20)) ||
        (status = check_range("num_classes", c->num_classes, 0, 1000000)) ||
        (status = check_range("input_size", c->input_size, c->patch_size, 16384)) ||
        (status = check_range("num_train_timesteps", c->num_train_timesteps, 2, 1000000)))
        return status;
    if (c->hidden_size % c->num_heads != 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: num_heads = %d does not divide hidden_size = %d; fix "
                          "moire.config", c->num_heads, c->hidden_size);
    if (c->input_size % c->patch_size != 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: input_size = %d is not a multiple of patch_size = %d; "
                          "fix moire.config", c->input_size, c->patch_size);
    if (c->learn_sigma && c->out_channels != 2 * c->in_channels)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "model config: learn_sigma is true but out_channels = %d is not twice "
                          "in_channels = %d; fix moire.config", c->out_channels, c->in_channels);
    return model_config_check_common(c);
}

/* ------------------------------------------------------------------------------------------
 * Config inference from the released checkpoints' keys and shapes
 * ---------------------------------------------------------------------------------------- */

static moire_status require_tensor(const st_file *file, const char *name, int ndim,
                                   const st_tensor **out)
{
    const st_tensor *tensor = st_find(file, name);
    if (!tensor)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "tensor '%s' is missing; the file is not a complete DiT-MoE "
                          "checkpoint", name);
    if (tensor->ndim != ndim)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "tensor '%s' has %d dimensions, expected %d; the file is not a DiT-MoE "
                          "checkpoint", name, tensor->ndim, ndim);
    *out = tensor;
    return MOIRE_OK;
}

static bool dim_fits_int(int64_t value)
{
    return value >= 0 && value <= INT_MAX;
}

/* Parses "blocks.{i}." at the start of `name`; returns i, or -1 when it does not match.
 * When `rest` is given it receives the text after the prefix. */
int model_block_index(const char *name, const char **rest)
{
    if (strncmp(name, "blocks.", 7) != 0 || !isdigit((unsigned char)name[7]))
        return -1;
    long index = 0;
    const char *c = name + 7;
    for (; isdigit((unsigned char)*c); c++) {
        index = index * 10 + (*c - '0');
        if (index > INT_MAX / 10)
            return -1;
    }
    if (*c != '.')
        return -1;
    if (rest)
        *rest = c + 1;
    return (int)index;
}

/* depth = number of consecutive block indices 0, 1, 2, … present in the file. */
static int count_consecutive_blocks(const st_file *file)
{
    int count = st_tensor_count(file);
    bool *present = calloc((size_t)count + 1, sizeof(bool));
    if (!present)
        return 0;
    for (int i = 0; i < count; i++) {
        int index = model_block_index(st_tensor_at(file, i)->name, NULL);
        if (index >= 0 && index < count)
            present[index] = true;
    }
    int depth = 0;
    while (depth < count && present[depth])
        depth++;
    free(present);
    return depth;
}

moire_status dit_config_infer(moire_model_config *config, const st_file *file)
{
    config_set_family_defaults(config);
    moire_status status;
    const st_tensor *tensor;

    if (st_find(file, "blocks.0.attn.Wqkv.weight"))
        config->attention_layout = MOIRE_ATTENTION_QK_NORM;
    else if (st_find(file, "blocks.0.attn.qkv.weight"))
        config->attention_layout = MOIRE_ATTENTION_QKV;
    else
        return error_fail(MOIRE_ERROR_FORMAT,
                          "the file has neither 'blocks.0.attn.qkv.weight' nor "
                          "'blocks.0.attn.Wqkv.weight' and no moire.config metadata; it is not "
                          "a DiT-MoE checkpoint");
    /* the official families: qk_norm (XL/G) trained with rectified flow, qkv (S/B) DDPM */
    config->objective = config->attention_layout == MOIRE_ATTENTION_QK_NORM
                            ? MOIRE_OBJECTIVE_RECTIFIED_FLOW : MOIRE_OBJECTIVE_DDPM_EPS;

    /* x_embedder.proj.weight [D, C, p, p] */
    if ((status = require_tensor(file, "x_embedder.proj.weight", 4, &tensor)))
        return status;
    if (tensor->shape[2] != tensor->shape[3] || !dim_fits_int(tensor->shape[0]) ||
        !dim_fits_int(tensor->shape[1]) || !dim_fits_int(tensor->shape[2]))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "tensor 'x_embedder.proj.weight' has shape [%lld, %lld, %lld, %lld], "
                          "not [D, C, p, p]; the file is not a DiT-MoE checkpoint",
                          (long long)tensor->shape[0], (long long)tensor->shape[1],
                          (long long)tensor->shape[2], (long long)tensor->shape[3]);
    config->hidden_size = (int)tensor->shape[0];
    config->in_channels = (int)tensor->shape[1];
    config->patch_size = (int)tensor->shape[2];
    int hidden = config->hidden_size, patch = config->patch_size;

    config->depth = count_consecutive_blocks(file);

    /* blocks.0.moe.gate.weight [E, D] */
    if ((status = require_tensor(file, "blocks.0.moe.gate.weight", 2, &tensor)))
        return status;
    config->num_experts = dim_fits_int(tensor->shape[0]) ? (int)tensor->shape[0] : 0;

    /* blocks.0.moe.experts.0.gate_proj.weight [F, D] */
    if ((status = require_tensor(file, "blocks.0.moe.experts.0.gate_proj.weight", 2, &tensor)))
        return status;
    config->expert_hidden = dim_fits_int(tensor->shape[0]) ? (int)tensor->shape[0] : 0;

    /* blocks.0.moe.shared_experts.gate_proj.weight [S, D], absent = no shared expert */
    tensor = st_find(file, "blocks.0.moe.shared_experts.gate_proj.weight");
    config->shared_expert_hidden =
        tensor && tensor->ndim == 2 && dim_fits_int(tensor->shape[0]) ? (int)tensor->shape[0] : 0;

    if (config->attention_layout == MOIRE_ATTENTION_QK_NORM) {
        /* per-head LayerNorm weight [hd] gives the head count exactly */
        if ((status = require_tensor(file, "blocks.0.attn.q_norm.weight", 1, &tensor)))
            return status;
        int64_t head_dim = tensor->shape[0];
        if (head_dim <= 0 || hidden % head_dim != 0)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "tensor 'blocks.0.attn.q_norm.weight' has %lld entries, which do "
                              "not divide hidden_size %d into heads; the file is not a DiT-MoE "
                              "checkpoint", (long long)head_dim, hidden);
        config->num_heads = (int)(hidden / head_dim);
    } else {
        /* The qkv layout carries no per-head tensor: the head count is not in the weights.
           Every DiT (and DiT-MoE S/B) uses head_dim 64, so assume it; files with other
           geometry must carry moire.config metadata. */
        if (hidden % 64 != 0)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "cannot infer the number of attention heads: hidden_size %d is "
                              "not a multiple of the DiT head_dim 64; add moire.config metadata "
                              "(docs/MODEL_FORMAT.md) with num_heads", hidden);
        config->num_heads = hidden / 64;
    }

    /* y_embedder.embedding_table.weight [K+1, D]: the last row is the CFG null class */
    if ((status = require_tensor(file, "y_embedder.embedding_table.weight", 2, &tensor)))
        return status;
    config->num_classes = dim_fits_int(tensor->shape[0]) ? (int)tensor->shape[0] - 1 : -1;

    /* final_layer.linear.weight [p·p·Co, D] */
    if ((status = require_tensor(file, "final_layer.linear.weight", 2, &tensor)))
        return status;
    int64_t patch_area = (int64_t)patch * patch;
    if (patch_area == 0 || tensor->shape[0] % patch_area != 0 ||
        !dim_fits_int(tensor->shape[0] / patch_area))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "tensor 'final_layer.linear.weight' has %lld rows, not a multiple of "
                          "patch² = %lld; the file is not a DiT-MoE checkpoint",
                          (long long)tensor->shape[0], (long long)patch_area);
    config->out_channels = (int)(tensor->shape[0] / patch_area);
    config->learn_sigma = config->out_channels == 2 * config->in_channels;

    /* pos_embed [1, T, D] with T = (input_size / p)²; absent = the released 256 px size */
    tensor = st_find(file, "pos_embed");
    if (tensor && tensor->ndim == 3) {
        int64_t tokens = tensor->shape[1];
        int64_t side = (int64_t)llround(sqrt((double)tokens));
        if (side * side != tokens || side * patch > INT_MAX)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "tensor 'pos_embed' has %lld tokens, not a square grid; the file "
                              "is not a DiT-MoE checkpoint", (long long)tokens);
        config->input_size = (int)(side * patch);
    } else {
        config->input_size = 32;
    }
    return MOIRE_OK;
}
