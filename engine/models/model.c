/* model.c — loading a model file (.safetensors or a PyTorch .pt) into a moire_model: the
 * config (model_config.c), the weights (model_weights.c for DiT-MoE, ecdit_model.c for
 * EC-DiT), class names, sampling defaults, the noise-level classifier companion, and the
 * public accessors. Class prompts are class_prompts.c.
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

static bool json_value_is(JsonNode *node, GType type)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

/* ------------------------------------------------------------------------------------------
 * Metadata: config, class names, sampling defaults
 * ---------------------------------------------------------------------------------------- */

static moire_status load_config(moire_model *model)
{
    const char *json = st_metadata_get(model->file, METADATA_CONFIG_KEY);
    moire_status status;
    if (json) {
        status = dit_config_read(&model->config, json);
        if (status == MOIRE_OK && strcmp(model->config.family, "ec-dit") == 0) {
            model->family = MOIRE_FAMILY_EC_DIT;
            status = ecdit_config_from_json(&model->config, json);
        }
        if (status == MOIRE_OK)
            status = dit_config_check_required(&model->config);
        if (status != MOIRE_OK) {
            error_prefix("%s", model->path);
            return status;
        }
    } else {
        status = dit_config_infer(&model->config, model->file);
        if (status != MOIRE_OK) {
            error_prefix("%s", model->path);
            return status;
        }
    }
    status = model->family == MOIRE_FAMILY_EC_DIT ? ecdit_config_validate(&model->config)
                                                  : dit_config_validate(&model->config);
    if (status != MOIRE_OK)
        error_prefix("%s", model->path);
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
    if (json_guard_load(parser, model->path, json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_ARRAY(root))
            array = json_node_get_array(root);
    }
    if (!array) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" is not a JSON array of strings; fix or remove "
                            "it", model->path, METADATA_CLASS_NAMES_KEY);
        goto done;
    }
    if ((int)json_array_get_length(array) != expected) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" has %u names but the model has %d classes; "
                            "fix the metadata", model->path, METADATA_CLASS_NAMES_KEY,
                            json_array_get_length(array), expected);
        goto done;
    }
    model->class_names = calloc_array((size_t)expected, sizeof(char *));
    if (!model->class_names) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
        goto done;
    }
    for (int i = 0; i < expected; i++) {
        JsonNode *node = json_array_get_element(array, (guint)i);
        if (!json_value_is(node, G_TYPE_STRING) || !*json_node_get_string(node)) {
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: metadata \"%s\": entry %d is not a non-empty string; fix "
                                "the metadata", model->path, METADATA_CLASS_NAMES_KEY, i);
            goto done;
        }
        model->class_names[i] = strdup(json_node_get_string(node));
        if (!model->class_names[i]) {
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", model->path);
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
    if (json_guard_load(parser, model->path, json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_OBJECT(root))
            object = json_node_get_object(root);
    }
    if (!object) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"%s\" is not a JSON object; fix or remove it",
                            model->path, METADATA_DEFAULTS_KEY);
        goto done;
    }
    JsonNode *sampler = json_object_get_member(object, "sampler");
    JsonNode *steps = json_object_get_member(object, "steps");
    JsonNode *cfg = json_object_get_member(object, "cfg");
    if (sampler) {
        if (!json_value_is(sampler, G_TYPE_STRING)) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"sampler\" must be "
                                "a string; fix the metadata", model->path, METADATA_DEFAULTS_KEY);
            goto done;
        }
        status = moire_sampler_from_name(json_node_get_string(sampler), &model->default_sampler);
        if (status != MOIRE_OK) {
            error_prefix("%s: metadata \"%s\"", model->path, METADATA_DEFAULTS_KEY);
            status = MOIRE_ERROR_FORMAT;
            goto done;
        }
    }
    if (steps) {
        int64_t value = json_value_is(steps, G_TYPE_INT64) ? json_node_get_int(steps) : -1;
        if (value < 1 || value > 10000) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"steps\" must be an "
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
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: metadata \"%s\": \"cfg\" must be a "
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

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* MODEL-levels.safetensors beside MODEL.safetensors: the dmcmc sampler's noise-level
 * classifier. Absent is fine (DMCMC then estimates levels from the model itself); present but
 * unusable is an error, so that a damaged file is not silently ignored. */
static moire_status load_level_classifier(moire_model *model)
{
    const char *path = model->path;
    if (!has_suffix(path, ".safetensors"))
        return MOIRE_OK; /* .pt checkpoints ship none */
    char *companion = moire_model_companion_path(path, MOIRE_LEVELS_SUFFIX);
    if (!companion)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (!g_file_test(companion, G_FILE_TEST_EXISTS)) {
        free(companion);
        return MOIRE_OK;
    }
    moire_classifier *classifier = NULL;
    moire_status status = moire_classifier_load(companion, &classifier);
    if (status != MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = error_fail(status,
                            "the noise-level classifier beside the model does not load: %s. "
                            "Re-export it with tools/train/train_level_classifier.py, or remove "
                            "it (the dmcmc sampler then estimates levels from the model)",
                            why ? why : "out of memory");
        free(why);
    } else if (!moire_classifier_is_noise_level(classifier)) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s is named as the model's noise-level classifier but is an image "
                            "classifier; rename it (image classifiers are MODEL-features"
                            ".safetensors)", companion);
    } else if (moire_classifier_in_channels(classifier) != model->config.in_channels ||
               moire_classifier_input_size(classifier) != model->config.input_size) {
        status = error_fail(MOIRE_ERROR_FORMAT,
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
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_model_load: out_model is NULL");
    *out_model = NULL;
    if (!path || !*path)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_model_load: no path given; pass a .safetensors file");
    moire_model *model = calloc(1, sizeof *model);
    if (!model)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    model->serial = model_next_serial();
    /* by content: a zip is a torch.save checkpoint (pt_reader.h), else safetensors */
    moire_status status = model_file_open(path, &model->file);
    if (status == MOIRE_OK) {
        const char *slash = strrchr(path, '/');
        model->path = strdup(path);
        model->name = strdup(slash ? slash + 1 : path);
        if (!model->path || !model->name)
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    if (status == MOIRE_OK)
        status = load_config(model);
    if (status == MOIRE_OK)
        status = load_class_names(model);
    if (status == MOIRE_OK)
        status = load_defaults(model);
    if (status == MOIRE_OK)
        status = model->family == MOIRE_FAMILY_EC_DIT ? ecdit_model_bind(model)
                                                      : dit_model_bind(model);
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

