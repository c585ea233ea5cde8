/* model.c — loading a DiT-MoE checkpoint (.safetensors) into a moire_model: the config
 * (from "moire.config" metadata or inferred from key names and shapes), the binding of every
 * checkpoint key to its dit_weights field, class names and class-prompt resolution.
 *
 * The file format is documented in docs/MODEL_FORMAT.md. Every weight is checked for
 * presence, shape, dtype and finiteness at load, so the forward pass can trust the model.
 * F32 weights that are 4-byte aligned in the mapping are used in place (zero copy); F16,
 * BF16 and misaligned F32 ones are converted once into a single owned fp32 arena.
 */
#include "model.h"

#include "class_names.h"
#include "ecdit.h"
#include "internal.h"
#include "json_guard.h"
#include "pt_reader.h"
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

#define METADATA_CONFIG_KEY "moire.config"
#define METADATA_CLASS_NAMES_KEY "moire.class_names"
#define METADATA_DEFAULTS_KEY "moire.defaults"

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
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be an integer; fix the metadata", key);
        int64_t value = json_node_get_int(node);
        if (value < INT_MIN || value > INT_MAX)
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" = %lld is out of range; fix the metadata",
                              key, (long long)value);
        *(int *)slot = (int)value;
        return MOIRE_OK;
    }
    case FIELD_FLOAT:
        if (!json_value_is(node, G_TYPE_DOUBLE) && !json_value_is(node, G_TYPE_INT64))
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be a number; fix the metadata", key);
        *(float *)slot = (float)json_node_get_double(node);
        return MOIRE_OK;
    case FIELD_BOOL:
        if (!json_value_is(node, G_TYPE_BOOLEAN))
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "moire.config: \"%s\" must be true or false; fix the metadata",
                              key);
        *(bool *)slot = json_node_get_boolean(node);
        return MOIRE_OK;
    default:
        break;
    }

    /* the remaining kinds are strings */
    if (!json_value_is(node, G_TYPE_STRING))
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "moire.config: \"%s\" must be a string; fix the metadata", key);
    const char *text = json_node_get_string(node);
    if (field->kind == FIELD_FAMILY) {
        if (strlen(text) >= MOIRE_FAMILY_MAX)
            return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                              "moire.config: family \"%.40s…\" is not supported (supported: "
                              "dit-moe)", text);
        snprintf(config->family, sizeof config->family, "%s", text);
        return MOIRE_OK;
    }
    const char *const *names = field->kind == FIELD_LAYOUT ? layout_names
                             : field->kind == FIELD_OBJECTIVE ? objective_names : space_names;
    int value = enum_from_name(names, 2, text);
    if (value < 0)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
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
    if (moire_json_load(parser, "moire.config", json, -1) != MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = moire_fail(MOIRE_ERROR_FORMAT, "%s; fix or remove the metadata",
                            why ? why : "moire.config is not valid JSON");
        free(why);
        g_object_unref(parser);
        return status;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return moire_fail(MOIRE_ERROR_FORMAT,
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
    return moire_fail(MOIRE_ERROR_FORMAT,
                      "model config: %s = %d is out of range (%d..%d); fix moire.config", field,
                      value, low, high);
}

static moire_status check_family(const moire_model_config *config)
{
    if (strcmp(config->family, "dit-moe") == 0 || strcmp(config->family, "ec-dit") == 0)
        return MOIRE_OK;
    return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                      "model config: family \"%s\" is not supported (supported: dit-moe, "
                      "ec-dit)", config->family);
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
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "model config: num_heads = %d does not divide hidden_size = %d; fix "
                          "moire.config", c->num_heads, c->hidden_size);
    if (c->input_size % c->patch_size != 0)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "model config: input_size = %d is not a multiple of patch_size = %d; "
                          "fix moire.config", c->input_size, c->patch_size);
    if (c->learn_sigma && c->out_channels != 2 * c->in_channels)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "model config: learn_sigma is true but out_channels = %d is not twice "
                          "in_channels = %d; fix moire.config", c->out_channels, c->in_channels);
    if ((unsigned)c->attention_layout > MOIRE_ATTENTION_QK_NORM ||
        (unsigned)c->objective > MOIRE_OBJECTIVE_RECTIFIED_FLOW ||
        (unsigned)c->space > MOIRE_SPACE_PIXEL)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "model config: attention_layout, objective or space has an unknown "
                          "value");
    /* written as negations so that NaN fails too */
    if (!(c->beta_start > 0.0f && c->beta_start < c->beta_end && c->beta_end < 1.0f))
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "model config: beta_start = %g and beta_end = %g must satisfy "
                          "0 < beta_start < beta_end < 1; fix moire.config",
                          (double)c->beta_start, (double)c->beta_end);
    if (!(c->layernorm_eps > 0.0f) || !isfinite(c->layernorm_eps))
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "model config: layernorm_eps = %g must be positive; fix moire.config",
                          (double)c->layernorm_eps);
    return MOIRE_OK;
}

/* ------------------------------------------------------------------------------------------
 * Config inference from the released checkpoints' keys and shapes
 * ---------------------------------------------------------------------------------------- */

static moire_status require_tensor(const st_file *file, const char *name, int ndim,
                                   const st_tensor **out)
{
    const st_tensor *tensor = st_find(file, name);
    if (!tensor)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "tensor '%s' is missing; the file is not a complete DiT-MoE "
                          "checkpoint", name);
    if (tensor->ndim != ndim)
        return moire_fail(MOIRE_ERROR_FORMAT,
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
static int parse_block_index(const char *name, const char **rest)
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
        int index = parse_block_index(st_tensor_at(file, i)->name, NULL);
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "tensor 'blocks.0.attn.q_norm.weight' has %lld entries, which do "
                              "not divide hidden_size %d into heads; the file is not a DiT-MoE "
                              "checkpoint", (long long)head_dim, hidden);
        config->num_heads = (int)(hidden / head_dim);
    } else {
        /* The qkv layout carries no per-head tensor: the head count is not in the weights.
           Every DiT (and DiT-MoE S/B) uses head_dim 64, so assume it; files with other
           geometry must carry moire.config metadata. */
        if (hidden % 64 != 0)
            return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "tensor 'pos_embed' has %lld tokens, not a square grid; the file "
                              "is not a DiT-MoE checkpoint", (long long)tokens);
        config->input_size = (int)(side * patch);
    } else {
        config->input_size = 32;
    }
    return MOIRE_OK;
}

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
    return moire_fail(MOIRE_ERROR_FORMAT,
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
    int block = parse_block_index(name, &rest);
    if (block < 0)
        return MOIRE_OK;
    if (block >= c->depth)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' belongs to block %d but the model config has depth "
                          "%d; fix depth in moire.config", model->path, name, block, c->depth);
    if (strncmp(rest, "moe.experts.", 12) == 0) {
        int expert = atoi(rest + 12);
        if (expert >= c->num_experts)
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "%s: tensor '%s' belongs to expert %d but the model config has "
                              "num_experts %d; fix num_experts in moire.config", model->path,
                              name, expert, c->num_experts);
    }
    if (strncmp(rest, "moe.shared_experts.", 19) == 0 && c->shared_expert_hidden == 0)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' is a shared expert but the model config has "
                          "shared_expert_hidden 0; fix moire.config", model->path, name);
    return MOIRE_OK;
}

static moire_status bind_weights(moire_model *model)
{
    const moire_model_config *c = &model->config;
    dit_weights *weights = &model->weights;

    weights->blocks = moire_calloc_array((size_t)c->depth, sizeof(dit_block_weights));
    if (!weights->blocks)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
    for (int b = 0; b < c->depth; b++) {
        dit_block_weights *block = &weights->blocks[b];
        block->experts = moire_calloc_array((size_t)c->num_experts, sizeof(dit_swiglu_weights));
        if (!block->experts)
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
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

/* ------------------------------------------------------------------------------------------
 * Metadata: config, class names, sampling defaults
 * ---------------------------------------------------------------------------------------- */

static moire_status load_config(moire_model *model)
{
    const char *json = st_metadata_get(model->file, METADATA_CONFIG_KEY);
    moire_status status;
    if (json) {
        config_set_family_defaults(&model->config);
        status = dit_config_from_json(&model->config, json);
        if (status != MOIRE_OK) {
            moire_error_prefix("%s", model->path);
            return status;
        }
        /* a family we do not know may use other keys: say so before naming missing ones */
        if ((status = check_family(&model->config)) != MOIRE_OK) {
            moire_error_prefix("%s", model->path);
            return status;
        }
        if (strcmp(model->config.family, "ec-dit") == 0) {
            model->family = MOIRE_FAMILY_EC_DIT;
            if ((status = ecdit_config_from_json(&model->config, json)) != MOIRE_OK) {
                moire_error_prefix("%s", model->path);
                return status;
            }
        }
        /* geometry has no default: name the first missing key rather than fail later */
        for (int i = 0; i < CONFIG_FIELD_COUNT; i++) {
            const struct config_field *field = &config_fields[i];
            if (field->required && *(const int *)((const char *)&model->config + field->offset) == 0)
                return moire_fail(MOIRE_ERROR_FORMAT,
                                  "%s: moire.config has no \"%s\" (or it is 0); add it "
                                  "(docs/MODEL_FORMAT.md)", model->path, field->key);
        }
    } else {
        status = dit_config_infer(&model->config, model->file);
        if (status != MOIRE_OK) {
            moire_error_prefix("%s", model->path);
            return status;
        }
    }
    status = model->family == MOIRE_FAMILY_EC_DIT ? ecdit_config_validate(&model->config)
                                                  : dit_config_validate(&model->config);
    if (status != MOIRE_OK)
        moire_error_prefix("%s", model->path);
    return status;
}

static moire_status load_class_names(moire_model *model)
{
    const char *json = st_metadata_get(model->file, METADATA_CLASS_NAMES_KEY);
    if (!json) {
        /* an ImageNet model without names of its own: data/imagenet_classes.txt if found
           (class_names.h); numbers work either way */
        if (model->config.num_classes == CLASS_NAMES_IMAGENET_COUNT)
            model->class_names = class_names_load_imagenet(CLASS_NAMES_IMAGENET_COUNT);
        return MOIRE_OK;
    }
    int expected = model->config.num_classes;
    JsonParser *parser = json_parser_new();
    moire_status status = MOIRE_OK;
    JsonArray *array = NULL;
    if (moire_json_load(parser, model->path, json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_ARRAY(root))
            array = json_node_get_array(root);
    }
    if (!array) {
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" is not a JSON array of strings; fix or remove "
                            "it", model->path, METADATA_CLASS_NAMES_KEY);
        goto done;
    }
    if ((int)json_array_get_length(array) != expected) {
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" has %u names but the model has %d classes; "
                            "fix the metadata", model->path, METADATA_CLASS_NAMES_KEY,
                            json_array_get_length(array), expected);
        goto done;
    }
    model->class_names = moire_calloc_array((size_t)expected, sizeof(char *));
    if (!model->class_names) {
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
        goto done;
    }
    for (int i = 0; i < expected; i++) {
        JsonNode *node = json_array_get_element(array, (guint)i);
        if (!json_value_is(node, G_TYPE_STRING) || !*json_node_get_string(node)) {
            status = moire_fail(MOIRE_ERROR_FORMAT,
                                "%s: metadata \"%s\": entry %d is not a non-empty string; fix "
                                "the metadata", model->path, METADATA_CLASS_NAMES_KEY, i);
            goto done;
        }
        model->class_names[i] = strdup(json_node_get_string(node));
        if (!model->class_names[i]) {
            status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
            goto done;
        }
    }
done:
    g_object_unref(parser);
    return status;
}

static moire_status load_defaults(moire_model *model)
{
    /* the official settings of each family (docs/SAMPLERS.md) */
    if (model->config.objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW) {
        model->default_sampler = MOIRE_SAMPLER_RF_EULER;
        model->default_steps = 50;
        model->default_cfg = 7.0f;
    } else {
        model->default_sampler = MOIRE_SAMPLER_DDPM;
        model->default_steps = 250;
        model->default_cfg = 4.0f;
    }
    const char *json = st_metadata_get(model->file, METADATA_DEFAULTS_KEY);
    if (!json)
        return MOIRE_OK;

    JsonParser *parser = json_parser_new();
    moire_status status = MOIRE_OK;
    JsonObject *object = NULL;
    if (moire_json_load(parser, model->path, json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_OBJECT(root))
            object = json_node_get_object(root);
    }
    if (!object) {
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" is not a JSON object; fix or remove it",
                            model->path, METADATA_DEFAULTS_KEY);
        goto done;
    }
    JsonNode *sampler = json_object_get_member(object, "sampler");
    JsonNode *steps = json_object_get_member(object, "steps");
    JsonNode *cfg = json_object_get_member(object, "cfg");
    if (sampler) {
        if (!json_value_is(sampler, G_TYPE_STRING)) {
            status = moire_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"sampler\" must be "
                                "a string; fix the metadata", model->path, METADATA_DEFAULTS_KEY);
            goto done;
        }
        status = moire_sampler_from_name(json_node_get_string(sampler), &model->default_sampler);
        if (status != MOIRE_OK) {
            moire_error_prefix("%s: metadata \"%s\"", model->path, METADATA_DEFAULTS_KEY);
            status = MOIRE_ERROR_FORMAT;
            goto done;
        }
    }
    if (steps) {
        int64_t value = json_value_is(steps, G_TYPE_INT64) ? json_node_get_int(steps) : -1;
        if (value < 1 || value > 10000) {
            status = moire_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"steps\" must be an "
                                "integer in 1..10000; fix the metadata", model->path,
                                METADATA_DEFAULTS_KEY);
            goto done;
        }
        model->default_steps = (int)value;
    }
    if (cfg) {
        double value = json_value_is(cfg, G_TYPE_DOUBLE) || json_value_is(cfg, G_TYPE_INT64)
                           ? json_node_get_double(cfg) : -1.0;
        if (!(value >= 0.0 && value <= 100.0)) {
            status = moire_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"cfg\" must be a "
                                "number in 0..100; fix the metadata", model->path,
                                METADATA_DEFAULTS_KEY);
            goto done;
        }
        model->default_cfg = (float)value;
    }
done:
    g_object_unref(parser);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ---------------------------------------------------------------------------------------- */

#define LEVEL_CLASSIFIER_SUFFIX "-levels.safetensors"

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

bool moire_is_model_file_name(const char *name)
{
    return name && has_suffix(name, ".safetensors") && strlen(name) > strlen(".safetensors") &&
           !has_suffix(name, "-features.safetensors") && !has_suffix(name, ".ref.safetensors") &&
           !has_suffix(name, ".snapshot.safetensors") &&
           !has_suffix(name, LEVEL_CLASSIFIER_SUFFIX);
}

/* MODEL-levels.safetensors beside MODEL.safetensors: the dmcmc sampler's noise-level
 * classifier. Absent is fine (DMCMC then estimates levels from the model itself); present but
 * unusable is an error, so that a damaged file is not silently ignored. */
static moire_status load_level_classifier(moire_model *model)
{
    const char *path = model->path;
    if (!has_suffix(path, ".safetensors"))
        return MOIRE_OK; /* .pt checkpoints ship none */
    const size_t stem = strlen(path) - strlen(".safetensors");
    char *companion = malloc(stem + strlen(LEVEL_CLASSIFIER_SUFFIX) + 1);
    if (!companion)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    memcpy(companion, path, stem);
    strcpy(companion + stem, LEVEL_CLASSIFIER_SUFFIX);
    if (!g_file_test(companion, G_FILE_TEST_EXISTS)) {
        free(companion);
        return MOIRE_OK;
    }
    moire_classifier *classifier = NULL;
    moire_status status = moire_classifier_load(companion, &classifier);
    if (status != MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = moire_fail(status,
                            "the noise-level classifier beside the model does not load: %s. "
                            "Re-export it with tools/train/train_level_classifier.py, or remove "
                            "it (the dmcmc sampler then estimates levels from the model)",
                            why ? why : "out of memory");
        free(why);
    } else if (!moire_classifier_is_noise_level(classifier)) {
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s is named as the model's noise-level classifier but is an image "
                            "classifier; rename it (image classifiers are MODEL-features"
                            ".safetensors)", companion);
    } else if (moire_classifier_in_channels(classifier) != model->config.in_channels ||
               moire_classifier_input_size(classifier) != model->config.input_size) {
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s takes %d×%d states of %d channels but the model %s works on "
                            "%d×%d of %d; it belongs to another model: remove it or train one "
                            "for this model (tools/train/train_level_classifier.py)", companion,
                            moire_classifier_input_size(classifier),
                            moire_classifier_input_size(classifier),
                            moire_classifier_in_channels(classifier), model->name,
                            model->config.input_size, model->config.input_size,
                            model->config.in_channels);
    }
    free(companion);
    if (status != MOIRE_OK) {
        moire_classifier_free(classifier);
        return status;
    }
    model->level_classifier = classifier;
    return MOIRE_OK;
}

const moire_classifier *moire_model_level_classifier(const moire_model *model)
{
    return model ? model->level_classifier : NULL;
}

moire_status moire_model_load(const char *path, moire_model **out_model)
{
    if (!out_model)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_model_load: out_model is NULL");
    *out_model = NULL;
    if (!path || !*path)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_model_load: no path given; pass a .safetensors file");
    moire_model *model = calloc(1, sizeof *model);
    if (!model)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    model->serial = moire_next_serial();
    /* by content: a zip is a torch.save checkpoint (pt_reader.h), else safetensors */
    moire_status status = model_file_open(path, &model->file);
    if (status == MOIRE_OK) {
        const char *slash = strrchr(path, '/');
        model->path = strdup(path);
        model->name = strdup(slash ? slash + 1 : path);
        if (!model->path || !model->name)
            status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    if (status == MOIRE_OK)
        status = load_config(model);
    if (status == MOIRE_OK)
        status = load_class_names(model);
    if (status == MOIRE_OK)
        status = load_defaults(model);
    if (status == MOIRE_OK)
        status = model->family == MOIRE_FAMILY_EC_DIT ? ecdit_model_bind(model)
                                                      : bind_weights(model);
    if (status == MOIRE_OK)
        status = load_level_classifier(model);
    if (status != MOIRE_OK) {
        moire_model_free(model);
        return status;
    }
    *out_model = model;
    return MOIRE_OK;
}

void moire_model_free(moire_model *model)
{
    if (!model)
        return;
    if (model->weights.blocks) {
        for (int b = 0; b < model->config.depth; b++)
            free(model->weights.blocks[b].experts);
        free(model->weights.blocks);
    }
    if (model->class_names) {
        for (int i = 0; i < model->config.num_classes; i++)
            free(model->class_names[i]);
        free(model->class_names);
    }
    ecdit_model_free(model->ecdit, model->config.depth);
    moire_classifier_free(model->level_classifier);
    free(model->arena);
    st_close(model->file);
    free(model->path);
    free(model->name);
    free(model);
}

const moire_model_config *moire_model_get_config(const moire_model *model)
{
    return &model->config;
}

int64_t moire_model_parameter_count(const moire_model *model)
{
    return model->parameter_count;
}

const char *moire_model_dtype_name(const moire_model *model)
{
    return model->dtype_name;
}

const char *moire_model_name(const moire_model *model)
{
    return model->name;
}

const char *moire_model_class_name(const moire_model *model, int class_id)
{
    if (!model->class_names || class_id < 0 || class_id >= model->config.num_classes)
        return NULL;
    return model->class_names[class_id];
}

void moire_model_get_defaults(const moire_model *model, moire_sampler *sampler, int *steps,
                              float *cfg_scale)
{
    if (sampler)
        *sampler = model->default_sampler;
    if (steps)
        *steps = model->default_steps;
    if (cfg_scale)
        *cfg_scale = model->default_cfg;
}

/* ------------------------------------------------------------------------------------------
 * Class prompts: number, exact name or synonym, or the closest name
 * ---------------------------------------------------------------------------------------- */

/* A piece of text that is not NUL-terminated (a synonym inside a class name). */
typedef struct text_span {
    const char *start;
    size_t length;
} text_span;

static text_span trim_span(const char *start, size_t length)
{
    while (length > 0 && isspace((unsigned char)*start)) {
        start++;
        length--;
    }
    while (length > 0 && isspace((unsigned char)start[length - 1]))
        length--;
    return (text_span){start, length};
}

/* Steps through the comma-separated synonyms of a class name ("tench, Tinca tinca"). */
static bool next_synonym(const char **cursor, text_span *synonym)
{
    while (**cursor) {
        const char *start = *cursor;
        const char *comma = strchr(start, ',');
        size_t length = comma ? (size_t)(comma - start) : strlen(start);
        *cursor = comma ? comma + 1 : start + length;
        *synonym = trim_span(start, length);
        if (synonym->length > 0)
            return true;
    }
    return false;
}

static bool span_equal_nocase(text_span a, text_span b)
{
    return a.length == b.length && strncasecmp(a.start, b.start, a.length) == 0;
}

/* Spans longer than this are compared by their first bytes only: class names are short. */
#define RESOLVE_MAX_LENGTH 128

/* Case-insensitive Levenshtein distance (insert, delete, substitute: cost 1 each). */
static size_t edit_distance(text_span a, text_span b)
{
    size_t n = a.length < RESOLVE_MAX_LENGTH ? a.length : RESOLVE_MAX_LENGTH;
    size_t m = b.length < RESOLVE_MAX_LENGTH ? b.length : RESOLVE_MAX_LENGTH;
    size_t previous[RESOLVE_MAX_LENGTH + 1], current[RESOLVE_MAX_LENGTH + 1];
    for (size_t j = 0; j <= m; j++)
        previous[j] = j;
    for (size_t i = 1; i <= n; i++) {
        current[0] = i;
        for (size_t j = 1; j <= m; j++) {
            bool same = tolower((unsigned char)a.start[i - 1]) ==
                        tolower((unsigned char)b.start[j - 1]);
            size_t best = previous[j - 1] + (same ? 0 : 1);
            if (previous[j] + 1 < best)
                best = previous[j] + 1;
            if (current[j - 1] + 1 < best)
                best = current[j - 1] + 1;
            current[j] = best;
        }
        memcpy(previous, current, (m + 1) * sizeof(size_t));
    }
    return previous[m];
}

/* True when `prompt` occurs in `synonym` as whole words ("retriever" in "golden retriever",
 * but not "gold" in "goldfish"). */
static bool contains_whole_words(text_span synonym, text_span prompt)
{
    if (prompt.length == 0 || prompt.length > synonym.length)
        return false;
    for (size_t at = 0; at + prompt.length <= synonym.length; at++) {
        if (strncasecmp(synonym.start + at, prompt.start, prompt.length) != 0)
            continue;
        bool starts_word = at == 0 || !isalnum((unsigned char)synonym.start[at - 1]);
        size_t end = at + prompt.length;
        bool ends_word = end == synonym.length || !isalnum((unsigned char)synonym.start[end]);
        if (starts_word && ends_word)
            return true;
    }
    return false;
}

static double max_length(size_t a, size_t b)
{
    return (double)(a > b ? a : b);
}

/* How far `prompt` is from `synonym`, 0 = identical, ~1 = unrelated; only ranks the
 * suggestions of a failed lookup. A whole-word hit ranks first, then the whole synonym's
 * normalised edit distance, then (with a small penalty) the nearest single word, so
 * "retrevr" still suggests the retrievers. */
static double suggestion_score(text_span synonym, text_span prompt)
{
    if (contains_whole_words(synonym, prompt))
        return 0.05;
    double best = (double)edit_distance(prompt, synonym) /
                  max_length(prompt.length, synonym.length);
    const char *word = synonym.start, *end = synonym.start + synonym.length;
    while (word < end) {
        const char *word_end = word;
        while (word_end < end && !isspace((unsigned char)*word_end))
            word_end++;
        text_span single = {word, (size_t)(word_end - word)};
        if (single.length > 0 && single.length < synonym.length) {
            double score = 0.15 + (double)edit_distance(prompt, single) /
                                      max_length(prompt.length, single.length);
            if (score < best)
                best = score;
        }
        word = word_end + 1;
    }
    return best;
}

typedef struct class_suggestion {
    int class_id;
    double score;
    text_span synonym; /* the best-matching synonym, shown to the user */
} class_suggestion;

static int compare_suggestions(const void *a, const void *b)
{
    const class_suggestion *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return x->class_id - y->class_id;
}

/* Fails with INVALID_ARGUMENT: `lead` ("no class matches \"x\"") then up to five classes,
 * either those of `only` (count entries) or, when only is NULL, the nearest overall. */
static moire_status fail_with_suggestions(const moire_model *model, text_span prompt,
                                          const char *lead, const int *only, int only_count)
{
    int classes = model->config.num_classes;
    class_suggestion *ranked = moire_malloc_array((size_t)classes, sizeof *ranked);
    if (!ranked)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory resolving a class");
    int count = 0;
    for (int k = 0; k < classes; k++) {
        if (only) {
            bool listed = false;
            for (int i = 0; i < only_count && !listed; i++)
                listed = only[i] == k;
            if (!listed)
                continue;
        }
        class_suggestion suggestion = {k, 2.0, {model->class_names[k], 0}};
        const char *cursor = model->class_names[k];
        text_span synonym;
        while (next_synonym(&cursor, &synonym)) {
            double score = suggestion_score(synonym, prompt);
            if (score < suggestion.score) {
                suggestion.score = score;
                suggestion.synonym = synonym;
            }
        }
        ranked[count++] = suggestion;
    }
    qsort(ranked, (size_t)count, sizeof *ranked, compare_suggestions);
    char list[1024] = "";
    size_t used = 0;
    for (int i = 0; i < count && i < 5 && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%.*s (%d)", i ? ", " : "",
                                 (int)ranked[i].synonym.length, ranked[i].synonym.start,
                                 ranked[i].class_id);
    free(ranked);
    return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "%s; did you mean: %s%s", lead, list,
                      count > 5 ? ", …" : "");
}

/* "207" → 207 when the prompt is an integer (sign allowed so "-1" reports the range). */
static bool parse_class_number(text_span prompt, long long *out)
{
    size_t i = prompt.start[0] == '-' || prompt.start[0] == '+' ? 1 : 0;
    if (i == prompt.length)
        return false;
    for (size_t j = i; j < prompt.length; j++)
        if (!isdigit((unsigned char)prompt.start[j]))
            return false;
    char digits[32];
    if (prompt.length >= sizeof digits) {
        *out = LLONG_MAX; /* absurdly long number: out of range either way */
        return true;
    }
    memcpy(digits, prompt.start, prompt.length);
    digits[prompt.length] = '\0';
    *out = strtoll(digits, NULL, 10);
    return true;
}

moire_status moire_model_resolve_class(const moire_model *model, const char *prompt_text,
                                       int *out_class_id)
{
    int classes = model->config.num_classes;
    text_span prompt = trim_span(prompt_text ? prompt_text : "",
                                 prompt_text ? strlen(prompt_text) : 0);
    if (prompt.length == 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "empty class prompt; give a class name or a number 0..%d",
                          classes - 1);
    if (classes == 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is unconditional (0 classes); it takes no class prompt",
                          model->name);

    long long number;
    if (parse_class_number(prompt, &number)) {
        if (number < 0 || number >= classes)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "class %.*s is out of range: model %s has classes 0..%d",
                              (int)prompt.length, prompt.start, model->name, classes - 1);
        *out_class_id = (int)number;
        return MOIRE_OK;
    }
    if (!model->class_names) {
        char where[512] = "";
        if (classes == CLASS_NAMES_IMAGENET_COUNT)
            class_names_describe_search(where, sizeof where);
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s ships no class names, so \"%.*s\" cannot be looked up; use "
                          "a class number 0..%d (--class N)%s%s", model->name,
                          (int)prompt.length, prompt.start, classes - 1, where[0] ? "; " : "",
                          where);
    }

    /* 1. exact name or synonym, case-insensitive */
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        if (span_equal_nocase(trim_span(cursor, strlen(cursor)), prompt)) {
            *out_class_id = k;
            return MOIRE_OK;
        }
        while (next_synonym(&cursor, &synonym)) {
            if (span_equal_nocase(synonym, prompt)) {
                *out_class_id = k;
                return MOIRE_OK;
            }
        }
    }

    /* 2. whole words of a synonym ("retriever"): accepted only when one class has them */
    int *matches = moire_malloc_array((size_t)classes, sizeof(int));
    if (!matches)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory resolving a class");
    int match_count = 0;
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        while (next_synonym(&cursor, &synonym)) {
            if (contains_whole_words(synonym, prompt)) {
                matches[match_count++] = k;
                break;
            }
        }
    }
    char lead[320];
    if (match_count == 1) {
        *out_class_id = matches[0];
        free(matches);
        return MOIRE_OK;
    }
    if (match_count > 1) {
        snprintf(lead, sizeof lead, "class prompt \"%.*s\" is ambiguous: %d classes match",
                 (int)prompt.length, prompt.start, match_count);
        moire_status status = fail_with_suggestions(model, prompt, lead, matches, match_count);
        free(matches);
        return status;
    }

    /* 3. a typo: the nearest whole synonym within a third of the prompt's length, accepted
          when no other class is as near */
    size_t best_distance = SIZE_MAX;
    int best_count = 0;
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        size_t class_distance = SIZE_MAX;
        while (next_synonym(&cursor, &synonym)) {
            size_t distance = edit_distance(prompt, synonym);
            if (distance < class_distance)
                class_distance = distance;
        }
        if (class_distance < best_distance) {
            best_distance = class_distance;
            best_count = 0;
        }
        if (class_distance == best_distance)
            matches[best_count++] = k;
    }
    if (best_distance * 3 <= prompt.length && best_count == 1) {
        *out_class_id = matches[0];
        free(matches);
        return MOIRE_OK;
    }
    free(matches);
    snprintf(lead, sizeof lead, "no class matches \"%.*s\"", (int)prompt.length, prompt.start);
    return fail_with_suggestions(model, prompt, lead, NULL, 0);
}
