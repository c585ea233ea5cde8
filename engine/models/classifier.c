/* classifier.c — the image classifier of `moire eval` (moire.h, "Image classifier and FID"):
 * loading and checking its .safetensors file, the CPU forward pass and the FID against the
 * file's reference statistics; and the same network as a noise-level classifier, the level
 * estimate of the dmcmc sampler (task "noise-level", moire_classifier_estimate_sigma).
 *
 * The network (tools/golden/classifier_ref.py is the spec), for one image:
 *
 *     x [C, S, S]                      pixels v / 127.5 − 1, channel-first
 *     stage k = 1..stages:             conv3×3 (padding 1, bias) → ReLU → 2×2 average pool
 *                                      [w_k, S / 2^k, S / 2^k]
 *     flatten (channel, row, column)   [w_last · side²],  side = S / 2^stages
 *     fc1 + ReLU = features            [D]
 *     fc2        = logits              [K]
 *
 * Straight loops in fp32: about 11 M multiply-adds per 32×32 image, so a batch of a few
 * hundred images takes a second; OpenMP splits the images, each thread with its own scratch.
 * Weights of any float dtype are converted once into one fp32 arena; the FID statistics are
 * kept in double, as fid.c computes in double.
 */
#include "fid.h"
#include "internal.h"
#include "json_guard.h"
#include "safetensors.h"
#include "weight_binding.h"

#include <ctype.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CLASSIFIER_METADATA_KEY "moire.classifier"
#define CLASSIFIER_MAX_STAGES   8
#define CLASSIFIER_MAX_SIZE     4096   /* input side, pixels                               */
#define CLASSIFIER_MAX_WIDTH    65536  /* channels of a stage, feature_dim                 */
#define CLASSIFIER_MAX_CLASSES  1000000
#define CLASSIFIER_MAX_LEVELS   4096
/* Where to get a valid file, for the messages. */
#define CLASSIFIER_FIX "re-export it with tools/train/train_classifier.py (image classifiers) " \
                       "or tools/train/train_level_classifier.py (noise levels)"

struct moire_classifier {
    char *path;                 /* for messages                                           */
    int input_size;             /* S                                                      */
    int in_channels;            /* C: 3 (RGB) or 4 (RGBA)                                 */
    int stages;
    int widths[CLASSIFIER_MAX_STAGES]; /* w_k: output channels of stage k                */
    int side;                   /* S / 2^stages                                           */
    int flat_dim;               /* w_last · side²: fc1's input                            */
    int feature_dim;            /* D                                                      */
    int class_count;            /* K: classes, or level bins                              */
    char **class_names;         /* [K] the prompt of each class; NULL for noise levels    */
    bool noise_level;           /* task "noise-level": the logits are over level bins     */
    double *levels;             /* [K] noise level: bin centres of u = ln(σ / rms(y))     */
    const float *conv_weight[CLASSIFIER_MAX_STAGES]; /* [w_k, w_{k−1}, 3, 3] (w_0 = C)    */
    const float *conv_bias[CLASSIFIER_MAX_STAGES];   /* [w_k]                              */
    const float *fc1_weight;    /* [D, flat_dim]                                          */
    const float *fc1_bias;      /* [D]                                                    */
    const float *fc2_weight;    /* [K, D]                                                 */
    const float *fc2_bias;      /* [K]                                                    */
    double *fid_mu;             /* [D]     reference mean; NULL for noise levels          */
    double *fid_sigma;          /* [D, D]  reference covariance (unbiased); NULL likewise */
    float *arena;               /* every weight above, converted to fp32                  */
    size_t scratch_floats;      /* one image's activations, for the per-thread scratch    */
};

/* ------------------------------------------------------------------------------------------
 * Metadata
 * ---------------------------------------------------------------------------------------- */

/* What the metadata declares; the tensors are checked against it. */
typedef struct classifier_meta {
    int input_size, in_channels, feature_dim;
    int width_count;
    int widths[CLASSIFIER_MAX_STAGES];
    int class_count;
    char **class_names; /* [class_count], owned until moved into the classifier */
    bool noise_level;   /* "task": "noise-level"                                 */
    double *levels;     /* [class_count] for noise levels, owned likewise         */
} classifier_meta;

static void free_names(char **names, int count)
{
    if (!names)
        return;
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

/* An integer member in [low, high]. */
static moire_status meta_int(const char *path, JsonObject *object, const char *key, int low,
                             int high, int *out)
{
    JsonNode *node = json_object_get_member(object, key);
    if (!node)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\" has no \"%s\"; " CLASSIFIER_FIX, path,
                          CLASSIFIER_METADATA_KEY, key);
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"%s\" is not a whole number; " CLASSIFIER_FIX,
                          path, CLASSIFIER_METADATA_KEY, key);
    const gint64 value = json_node_get_int(node);
    if (value < low || value > high)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"%s\" is %lld, outside %d..%d; " CLASSIFIER_FIX,
                          path, CLASSIFIER_METADATA_KEY, key, (long long)value, low, high);
    *out = (int)value;
    return MOIRE_OK;
}

static moire_status meta_array(const char *path, JsonObject *object, const char *key,
                               JsonArray **out)
{
    JsonNode *node = json_object_get_member(object, key);
    if (!node || !JSON_NODE_HOLDS_ARRAY(node))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"%s\" is missing or not a list; " CLASSIFIER_FIX,
                          path, CLASSIFIER_METADATA_KEY, key);
    *out = json_node_get_array(node);
    return MOIRE_OK;
}

/* A noise-level classifier's "levels": the bin centres of u = ln(σ / rms(y)), finite. */
static moire_status parse_levels(const char *path, JsonArray *levels, classifier_meta *meta)
{
    const guint count = json_array_get_length(levels);
    if (count < 2 || count > CLASSIFIER_MAX_LEVELS)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"levels\" lists %u bins; a noise-level "
                          "classifier needs 2..%d", path, CLASSIFIER_METADATA_KEY, count,
                          CLASSIFIER_MAX_LEVELS);
    meta->levels = malloc_array(count, sizeof(double));
    if (!meta->levels)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    meta->class_count = (int)count;
    for (guint i = 0; i < count; i++) {
        JsonNode *node = json_array_get_element(levels, i);
        const GType type = JSON_NODE_HOLDS_VALUE(node) ? json_node_get_value_type(node)
                                                       : G_TYPE_INVALID;
        const double value = type == G_TYPE_DOUBLE || type == G_TYPE_INT64
                                 ? json_node_get_double(node)
                                 : NAN;
        /* u = ln(σ/rms) is ≤ 0 in theory; a little above is harmless, far above is not a
           level file. */
        if (!isfinite(value) || value < -50.0 || value > 5.0)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: metadata \"%s\": levels[%u] is not a number in [-50, 5] "
                              "(a bin centre of ln(sigma / rms)); re-export it with "
                              "tools/train/train_level_classifier.py", path,
                              CLASSIFIER_METADATA_KEY, i);
        meta->levels[i] = value;
    }
    return MOIRE_OK;
}

static moire_status parse_meta_object(const char *path, JsonObject *object, classifier_meta *meta)
{
    moire_status status;
    if ((status = meta_int(path, object, "input_size", 1, CLASSIFIER_MAX_SIZE,
                           &meta->input_size)) != MOIRE_OK ||
        (status = meta_int(path, object, "in_channels", 3, 4, &meta->in_channels)) != MOIRE_OK ||
        (status = meta_int(path, object, "feature_dim", 1, CLASSIFIER_MAX_WIDTH,
                           &meta->feature_dim)) != MOIRE_OK)
        return status;

    /* "task": "prompt" (the default: an image classifier) or "noise-level". */
    JsonNode *task = json_object_get_member(object, "task");
    if (task) {
        const char *name = JSON_NODE_HOLDS_VALUE(task) &&
                                   json_node_get_value_type(task) == G_TYPE_STRING
                               ? json_node_get_string(task)
                               : NULL;
        if (!name || (strcmp(name, "prompt") != 0 && strcmp(name, "noise-level") != 0))
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: metadata \"%s\": \"task\" must be \"prompt\" or "
                              "\"noise-level\"; " CLASSIFIER_FIX, path, CLASSIFIER_METADATA_KEY);
        meta->noise_level = strcmp(name, "noise-level") == 0;
    }

    JsonArray *widths, *classes;
    if ((status = meta_array(path, object, "widths", &widths)) != MOIRE_OK ||
        (status = meta_array(path, object, meta->noise_level ? "levels" : "classes",
                             &classes)) != MOIRE_OK)
        return status;
    const guint width_count = json_array_get_length(widths);
    if (width_count < 1 || width_count > CLASSIFIER_MAX_STAGES)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"widths\" lists %u stages; 1..%d are supported",
                          path, CLASSIFIER_METADATA_KEY, width_count, CLASSIFIER_MAX_STAGES);
    meta->width_count = (int)width_count;
    for (guint k = 0; k < width_count; k++) {
        JsonNode *node = json_array_get_element(widths, k);
        const bool is_int = JSON_NODE_HOLDS_VALUE(node) &&
                            json_node_get_value_type(node) == G_TYPE_INT64;
        const gint64 value = is_int ? json_node_get_int(node) : 0;
        if (!is_int || value < 1 || value > CLASSIFIER_MAX_WIDTH)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: metadata \"%s\": widths[%u] is not a channel count in 1..%d; "
                              CLASSIFIER_FIX, path, CLASSIFIER_METADATA_KEY, k,
                              CLASSIFIER_MAX_WIDTH);
        meta->widths[k] = (int)value;
    }

    const guint class_count = json_array_get_length(classes);
    if (meta->noise_level)
        return parse_levels(path, classes, meta);
    if (class_count < 1 || class_count > CLASSIFIER_MAX_CLASSES)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"%s\": \"classes\" lists %u names; a classifier needs "
                          "1..%d", path, CLASSIFIER_METADATA_KEY, class_count,
                          CLASSIFIER_MAX_CLASSES);
    meta->class_names = calloc_array(class_count, sizeof(char *));
    if (!meta->class_names)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %u class names",
                          path, class_count);
    meta->class_count = (int)class_count;
    for (guint i = 0; i < class_count; i++) {
        JsonNode *node = json_array_get_element(classes, i);
        const char *name = JSON_NODE_HOLDS_VALUE(node) &&
                                   json_node_get_value_type(node) == G_TYPE_STRING
                               ? json_node_get_string(node)
                               : NULL;
        if (!name || !name[0])
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: metadata \"%s\": classes[%u] is not a non-empty string (the "
                              "class's prompt); " CLASSIFIER_FIX, path, CLASSIFIER_METADATA_KEY,
                              i);
        meta->class_names[i] = strdup(name);
        if (!meta->class_names[i])
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    return MOIRE_OK;
}

static moire_status parse_meta(const char *path, const st_file *file, classifier_meta *meta)
{
    const char *json = st_metadata_get(file, CLASSIFIER_METADATA_KEY);
    if (!json)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s has no \"%s\" metadata: it is not a Moiré image classifier (those "
                          "are written by tools/train/train_classifier.py)",
                          path, CLASSIFIER_METADATA_KEY);
    JsonParser *parser = json_parser_new();
    moire_status status;
    if (json_guard_load(parser, "metadata \"" CLASSIFIER_METADATA_KEY "\"", json, -1) !=
        MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = error_fail(MOIRE_ERROR_FORMAT, "%s: %s; " CLASSIFIER_FIX, path,
                            why ? why : "bad metadata");
        free(why);
    } else {
        JsonNode *root = json_parser_get_root(parser);
        status = root && JSON_NODE_HOLDS_OBJECT(root)
                     ? parse_meta_object(path, json_node_get_object(root), meta)
                     : error_fail(MOIRE_ERROR_FORMAT,
                                  "%s: metadata \"%s\" is not a JSON object; " CLASSIFIER_FIX,
                                  path, CLASSIFIER_METADATA_KEY);
    }
    g_object_unref(parser);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Tensors
 * ---------------------------------------------------------------------------------------- */

/* The tensor `name`: present, a float dtype, exactly `shape`. `why` says where the expected
 * shape comes from, for the message. */
static moire_status find_tensor(const char *path, const st_file *file, const char *name,
                                int ndim, const int64_t *shape, const char *why,
                                const st_tensor **out)
{
    const st_tensor *t = st_find(file, name);
    char want[128], have[128];
    weight_format_shape(want, sizeof want, ndim, shape);
    if (!t)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor %s %s is missing (%s); " CLASSIFIER_FIX, path, name, want,
                          why);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s: tensor %s is %s; classifier tensors must be F32, F16 or BF16",
                          path, name, st_dtype_name(t->dtype));
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        weight_format_shape(have, sizeof have, t->ndim, t->shape);
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor %s has shape %s but %s needs %s; " CLASSIFIER_FIX, path,
                          name, have, why, want);
    }
    *out = t;
    return MOIRE_OK;
}

/* Counts the convK.weight tensors and checks they are conv1 … convN with no gap. */
static moire_status count_conv_stages(const char *path, const st_file *file, int *out_stages)
{
    int count = 0, highest = 0;
    for (int i = 0; i < st_tensor_count(file); i++) {
        const char *name = st_tensor_at(file, i)->name;
        int index = 0, consumed = 0;
        if (sscanf(name, "conv%d.weight%n", &index, &consumed) == 1 && name[consumed] == '\0' &&
            strncmp(name, "conv", 4) == 0 && isdigit((unsigned char)name[4])) {
            count++;
            if (index > highest)
                highest = index;
            if (index < 1)
                highest = CLASSIFIER_MAX_STAGES + 1;
        }
    }
    if (count == 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s has no conv1.weight: not a classifier file; " CLASSIFIER_FIX, path);
    if (highest != count || count > CLASSIFIER_MAX_STAGES)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the convolution stages must be conv1 … convN (N <= %d), found %d "
                          "convK.weight tensors up to conv%d; " CLASSIFIER_FIX, path,
                          CLASSIFIER_MAX_STAGES, count, highest);
    *out_stages = count;
    return MOIRE_OK;
}

static long long first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return (long long)i;
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------------------------- */

void moire_classifier_free(moire_classifier *c)
{
    if (!c)
        return;
    free_names(c->class_names, c->class_count);
    free(c->fid_mu);
    free(c->fid_sigma);
    free(c->levels);
    free(c->arena);
    free(c->path);
    free(c);
}

/* Every tensor the network reads, in arena order. */
typedef struct weight_slot {
    char name[32];
    int ndim;
    int64_t shape[4];
    char why[160];
    const float **field;
    const st_tensor *tensor;
} weight_slot;

moire_status moire_classifier_load(const char *path, moire_classifier **out_classifier)
{
    if (!path || !out_classifier)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_classifier_load: path and out_classifier are required");
    *out_classifier = NULL;
    st_file *file = NULL;
    moire_status status = st_open(path, &file);
    if (status != MOIRE_OK)
        return status;
    classifier_meta meta = {0};
    moire_classifier *c = calloc(1, sizeof *c);
    weight_slot *slots = NULL;
    if (!c || !(c->path = strdup(path))) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }
    if ((status = parse_meta(path, file, &meta)) != MOIRE_OK ||
        (status = count_conv_stages(path, file, &c->stages)) != MOIRE_OK)
        goto done;
    if (c->stages != meta.width_count) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: the file has %d convolution stages (conv1..conv%d.weight) but "
                            "metadata \"%s\" lists %d widths; " CLASSIFIER_FIX, path, c->stages,
                            c->stages, CLASSIFIER_METADATA_KEY, meta.width_count);
        goto done;
    }
    if (meta.input_size % (1 << c->stages) != 0) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: input_size %d is not divisible by 2^%d (one 2×2 pooling per "
                            "stage); " CLASSIFIER_FIX, path, meta.input_size, c->stages);
        goto done;
    }
    c->input_size = meta.input_size;
    c->in_channels = meta.in_channels;
    c->feature_dim = meta.feature_dim;
    memcpy(c->widths, meta.widths, sizeof c->widths);
    c->side = meta.input_size >> c->stages;
    const int64_t flat = (int64_t)c->widths[c->stages - 1] * c->side * c->side;
    if (flat > INT32_MAX / 4) {
        status = error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: fc1 takes %lld inputs; too large",
                            path, (long long)flat);
        goto done;
    }
    c->flat_dim = (int)flat;

    /* 1. Every tensor: present, float, the shape the metadata implies. */
    const int slot_count = 2 * c->stages + 4;
    slots = calloc((size_t)slot_count, sizeof *slots);
    if (!slots) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }
    const int D = c->feature_dim, K = meta.class_count;
    for (int k = 0; k < c->stages; k++) {
        const int in = k == 0 ? c->in_channels : c->widths[k - 1], out = c->widths[k];
        weight_slot *w = &slots[2 * k], *b = &slots[2 * k + 1];
        *w = (weight_slot){.ndim = 4, .shape = {out, in, 3, 3}, .field = &c->conv_weight[k]};
        snprintf(w->name, sizeof w->name, "conv%d.weight", k + 1);
        snprintf(w->why, sizeof w->why, "a 3x3 convolution from %d %s to widths[%d] = %d", in,
                 k == 0 ? "input channels (in_channels)" : "channels", k, out);
        *b = (weight_slot){.ndim = 1, .shape = {out}, .field = &c->conv_bias[k]};
        snprintf(b->name, sizeof b->name, "conv%d.bias", k + 1);
        snprintf(b->why, sizeof b->why, "widths[%d] = %d", k, out);
    }
    weight_slot *fc = &slots[2 * c->stages];
    fc[0] = (weight_slot){.name = "fc1.weight", .ndim = 2, .shape = {D, c->flat_dim},
                          .field = &c->fc1_weight};
    snprintf(fc[0].why, sizeof fc[0].why,
             "feature_dim %d × (widths[-1] %d · (input_size %d / 2^%d)²)", D,
             c->widths[c->stages - 1], c->input_size, c->stages);
    fc[1] = (weight_slot){.name = "fc1.bias", .ndim = 1, .shape = {D}, .field = &c->fc1_bias};
    snprintf(fc[1].why, sizeof fc[1].why, "feature_dim %d", D);
    const char *outputs = meta.noise_level ? "level bins (metadata \"levels\")"
                                           : "classes (metadata \"classes\")";
    fc[2] = (weight_slot){.name = "fc2.weight", .ndim = 2, .shape = {K, D},
                          .field = &c->fc2_weight};
    snprintf(fc[2].why, sizeof fc[2].why, "%d %s × feature_dim %d", K, outputs, D);
    fc[3] = (weight_slot){.name = "fc2.bias", .ndim = 1, .shape = {K}, .field = &c->fc2_bias};
    snprintf(fc[3].why, sizeof fc[3].why, "%d %s", K, outputs);
    size_t arena_floats = 0;
    for (int i = 0; i < slot_count; i++) {
        status = find_tensor(path, file, slots[i].name, slots[i].ndim, slots[i].shape,
                             slots[i].why, &slots[i].tensor);
        if (status != MOIRE_OK)
            goto done;
        arena_floats += (size_t)slots[i].tensor->numel;
    }
    /* The FID statistics: image classifiers only (a noise-level file has none). */
    const st_tensor *mu = NULL, *sigma = NULL;
    const bool fid = !meta.noise_level;
    char why[96];
    snprintf(why, sizeof why, "the FID reference mean over feature_dim %d", D);
    if (fid && (status = find_tensor(path, file, "fid.mu", 1, (const int64_t[]){D}, why,
                                     &mu)) != MOIRE_OK)
        goto done;
    snprintf(why, sizeof why, "the FID reference covariance, feature_dim %d squared", D);
    if (fid && (status = find_tensor(path, file, "fid.sigma", 2, (const int64_t[]){D, D}, why,
                                     &sigma)) != MOIRE_OK)
        goto done;

    /* 2. One fp32 arena for the weights, the statistics in double; all finite. */
    const size_t stat_count = fid ? (size_t)D * (size_t)D : 1;
    c->arena = malloc_array(arena_floats, sizeof(float));
    c->fid_mu = fid ? malloc_array((size_t)D, sizeof(double)) : NULL;
    c->fid_sigma = fid ? malloc_array(stat_count, sizeof(double)) : NULL;
    float *stats = malloc_array(stat_count, sizeof(float));
    if (!c->arena || (fid && (!c->fid_mu || !c->fid_sigma)) || !stats) {
        free(stats);
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for the weights",
                            path);
        goto done;
    }
    size_t offset = 0;
    for (int i = 0; i < slot_count; i++) {
        const st_tensor *t = slots[i].tensor;
        float *dst = c->arena + offset;
        st_convert_to_f32(dst, t->data, t->dtype, t->numel);
        const long long bad = first_nonfinite(dst, (size_t)t->numel);
        if (bad >= 0) {
            free(stats);
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: tensor %s holds a non-finite value (element %lld); the "
                                "training diverged or the file is damaged", path, t->name, bad);
            goto done;
        }
        *slots[i].field = dst;
        offset += (size_t)t->numel;
    }
    const st_tensor *fid_tensors[2] = {mu, sigma};
    double *fid_targets[2] = {c->fid_mu, c->fid_sigma};
    for (int i = 0; fid && i < 2; i++) {
        const st_tensor *t = fid_tensors[i];
        st_convert_to_f32(stats, t->data, t->dtype, t->numel);
        const long long bad = first_nonfinite(stats, (size_t)t->numel);
        if (bad >= 0) {
            free(stats);
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: tensor %s holds a non-finite value (element %lld); "
                                "recompute the reference statistics", path, t->name, bad);
            goto done;
        }
        for (int64_t j = 0; j < t->numel; j++)
            fid_targets[i][j] = (double)stats[j];
    }
    free(stats);

    /* 3. Scratch per image: the padded input of a stage, its conv output, the pooled output. */
    size_t largest = 0;
    int size = c->input_size, channels = c->in_channels;
    for (int k = 0; k < c->stages; k++) {
        const size_t stage = (size_t)channels * (size_t)(size + 2) * (size_t)(size + 2) +
                             (size_t)c->widths[k] * (size_t)size * (size_t)size +
                             (size_t)c->widths[k] * (size_t)(size / 2) * (size_t)(size / 2);
        if (stage > largest)
            largest = stage;
        channels = c->widths[k];
        size /= 2;
    }
    c->scratch_floats = largest + (size_t)c->flat_dim + (size_t)D;
    c->class_count = meta.class_count;
    c->class_names = meta.class_names;
    c->noise_level = meta.noise_level;
    c->levels = meta.levels;
    meta.class_names = NULL;
    meta.levels = NULL;

done:
    free(slots);
    free_names(meta.class_names, meta.class_count);
    free(meta.levels);
    st_close(file); /* every weight was copied into the arena */
    if (status != MOIRE_OK) {
        moire_classifier_free(c);
        return status;
    }
    *out_classifier = c;
    return MOIRE_OK;
}

/* ------------------------------------------------------------------------------------------
 * Accessors
 * ---------------------------------------------------------------------------------------- */

int moire_classifier_input_size(const moire_classifier *c) { return c ? c->input_size : 0; }
int moire_classifier_in_channels(const moire_classifier *c) { return c ? c->in_channels : 0; }
int moire_classifier_feature_dim(const moire_classifier *c) { return c ? c->feature_dim : 0; }
int moire_classifier_num_classes(const moire_classifier *c) { return c ? c->class_count : 0; }

bool moire_classifier_is_noise_level(const moire_classifier *c)
{
    return c && c->noise_level;
}

const char *moire_classifier_class_name(const moire_classifier *c, int index)
{
    if (!c || !c->class_names || index < 0 || index >= c->class_count)
        return NULL;
    return c->class_names[index];
}

/* text without its leading and trailing white space: *start, *length. */
static void trim(const char *text, const char **start, size_t *length)
{
    while (isspace((unsigned char)*text))
        text++;
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    *start = text;
    *length = n;
}

int moire_classifier_find_class(const moire_classifier *c, const char *prompt)
{
    if (!c || !c->class_names || !prompt)
        return -1;
    const char *want;
    size_t want_length;
    trim(prompt, &want, &want_length);
    for (int i = 0; i < c->class_count; i++) {
        const char *name;
        size_t name_length;
        trim(c->class_names[i], &name, &name_length);
        if (name_length == want_length && strncasecmp(name, want, want_length) == 0)
            return i;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * Forward pass
 * ---------------------------------------------------------------------------------------- */

/* out [co, s, s] = ReLU(conv3×3(in) + bias), in given zero-padded: padded [ci, s+2, s+2]. */
static void conv3x3_relu(const float *padded, int ci, int s, const float *weight,
                         const float *bias, int co, float *out)
{
    const size_t plane = (size_t)s * (size_t)s, padded_side = (size_t)s + 2;
    const size_t padded_plane = padded_side * padded_side;
    for (int o = 0; o < co; o++) {
        float *dst = out + (size_t)o * plane;
        for (size_t j = 0; j < plane; j++)
            dst[j] = bias[o];
        for (int i = 0; i < ci; i++) {
            const float *src = padded + (size_t)i * padded_plane;
            const float *w = weight + ((size_t)o * (size_t)ci + (size_t)i) * 9; /* [3, 3] */
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                    const float wk = w[ky * 3 + kx];
                    for (int y = 0; y < s; y++) {
                        const float *row = src + (size_t)(y + ky) * padded_side + (size_t)kx;
                        float *dst_row = dst + (size_t)y * (size_t)s;
                        for (int x = 0; x < s; x++)
                            dst_row[x] += wk * row[x];
                    }
                }
        }
        for (size_t j = 0; j < plane; j++)
            dst[j] = dst[j] > 0.0f ? dst[j] : 0.0f;
    }
}

/* out [c, s/2, s/2] = 2×2 average of in [c, s, s]. */
static void avgpool2(const float *in, int channels, int s, float *out)
{
    const int h = s / 2;
    for (int ch = 0; ch < channels; ch++) {
        const float *src = in + (size_t)ch * (size_t)s * (size_t)s;
        float *dst = out + (size_t)ch * (size_t)h * (size_t)h;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < h; x++) {
                const float *p = src + (size_t)(2 * y) * (size_t)s + (size_t)(2 * x);
                dst[(size_t)y * (size_t)h + (size_t)x] =
                    0.25f * ((p[0] + p[1]) + (p[s] + p[s + 1]));
            }
    }
}

/* out [rows] = W [rows, cols] · x [cols] + b, optionally ReLU. */
static void linear(const float *weight, const float *bias, const float *x, int rows, int cols,
                   bool relu, float *out)
{
    for (int r = 0; r < rows; r++) {
        const float *w = weight + (size_t)r * (size_t)cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++)
            sum += w[j] * x[j];
        sum += bias[r];
        out[r] = relu && sum < 0.0f ? 0.0f : sum;
    }
}

/* The network's input, zero-padded by one pixel, at the start of the scratch:
 * [C, S+2, S+2] = v / 127.5 − 1 for an 8-bit image. */
static void load_image_input(const moire_classifier *c, const moire_image *image, float *scratch)
{
    const int S = c->input_size, C = c->in_channels;
    const size_t padded_plane = (size_t)(S + 2) * (size_t)(S + 2);
    memset(scratch, 0, (size_t)C * padded_plane * sizeof(float));
    const size_t pixels = (size_t)S * (size_t)S;
    for (int ch = 0; ch < C; ch++) {
        float *plane = scratch + (size_t)ch * padded_plane;
        for (size_t j = 0; j < pixels; j++) {
            const size_t y = j / (size_t)S, x = j % (size_t)S;
            /* RGB images have no alpha: opaque. */
            const float v = ch < image->channels
                                ? (float)image->pixels[j * (size_t)image->channels + (size_t)ch]
                                : 255.0f;
            plane[(y + 1) * (size_t)(S + 2) + x + 1] = v / 127.5f - 1.0f;
        }
    }
}

/* The noise-level input: state [C, S, S] / rms(state), padded likewise. Returns rms(state). */
static double load_level_input(const moire_classifier *c, const float *state, float *scratch)
{
    const int S = c->input_size, C = c->in_channels;
    const size_t count = (size_t)C * (size_t)S * (size_t)S;
    double sum = 0.0;
    for (size_t j = 0; j < count; j++)
        sum += (double)state[j] * (double)state[j];
    const double rms = fmax(sqrt(sum / (double)count), 1e-12);
    const float scale = (float)(1.0 / rms);
    const size_t padded_plane = (size_t)(S + 2) * (size_t)(S + 2);
    memset(scratch, 0, (size_t)C * padded_plane * sizeof(float));
    for (int ch = 0; ch < C; ch++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                scratch[(size_t)ch * padded_plane + (size_t)(y + 1) * (size_t)(S + 2) +
                        (size_t)x + 1] = state[((size_t)ch * S + y) * S + x] * scale;
    return rms;
}

/* One input (already in the scratch, padded) through the network; the scratch holds
 * c->scratch_floats. */
static void forward(const moire_classifier *c, float *scratch, float *features, float *logits)
{
    float *padded = scratch;
    int s = c->input_size, channels = c->in_channels;
    float *pooled = NULL;
    for (int k = 0; k < c->stages; k++) {
        const int out_channels = c->widths[k];
        const size_t in_floats = (size_t)channels * (size_t)(s + 2) * (size_t)(s + 2);
        float *conv = padded + in_floats;                                  /* [w_k, s, s]     */
        pooled = conv + (size_t)out_channels * (size_t)s * (size_t)s;      /* [w_k, s/2, s/2] */
        conv3x3_relu(padded, channels, s, c->conv_weight[k], c->conv_bias[k], out_channels,
                     conv);
        avgpool2(conv, out_channels, s, pooled);
        s /= 2;
        channels = out_channels;
        if (k + 1 < c->stages) {
            /* The next stage's padded input, at the start of the scratch again (the pooled
               output lies after the conv output, so the copy never overlaps). */
            const size_t side = (size_t)s + 2;
            memset(padded, 0, (size_t)channels * side * side * sizeof(float));
            for (int ch = 0; ch < channels; ch++)
                for (int y = 0; y < s; y++)
                    memcpy(padded + (size_t)ch * side * side + (size_t)(y + 1) * side + 1,
                           pooled + ((size_t)ch * (size_t)s + (size_t)y) * (size_t)s,
                           (size_t)s * sizeof(float));
        }
    }
    /* pooled is [w_last, side, side]: already the (channel, row, column) flattening. */
    float *feature = scratch + (c->scratch_floats - (size_t)c->feature_dim);
    linear(c->fc1_weight, c->fc1_bias, pooled, c->feature_dim, c->flat_dim, true, feature);
    if (features)
        memcpy(features, feature, (size_t)c->feature_dim * sizeof(float));
    if (logits)
        linear(c->fc2_weight, c->fc2_bias, feature, c->class_count, c->feature_dim, false,
               logits);
}

/* One item of a batch, given a scratch of the size run_items asked for. */
typedef void (*classifier_item_fn)(const moire_classifier *c, int index, float *scratch,
                                   void *context);

/* item(c, i, scratch, context) for i in 0..count−1, split over the OpenMP threads, each with
 * its own scratch of c->scratch_floats + extra_floats floats. False when a thread's scratch
 * could not be allocated (its items are then skipped). */
static bool run_items(const moire_classifier *c, int count, size_t extra_floats,
                      classifier_item_fn item, void *context)
{
    bool out_of_memory = false;
#ifdef _OPENMP
#pragma omp parallel if (count > 1)
#endif
    {
        float *scratch = malloc_array(c->scratch_floats + extra_floats, sizeof(float));
        if (!scratch) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            out_of_memory = true;
        }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int i = 0; i < count; i++)
            if (scratch)
                item(c, i, scratch, context);
        free(scratch);
    }
    return !out_of_memory;
}

typedef struct classify_batch {
    const moire_image *const *images;
    float *features; /* [count, D] or NULL */
    float *logits;   /* [count, K] or NULL */
} classify_batch;

static void classify_item(const moire_classifier *c, int i, float *scratch, void *context)
{
    const classify_batch *b = context;
    load_image_input(c, b->images[i], scratch);
    forward(c, scratch, b->features ? b->features + (size_t)i * (size_t)c->feature_dim : NULL,
            b->logits ? b->logits + (size_t)i * (size_t)c->class_count : NULL);
}

moire_status moire_classifier_run(const moire_classifier *c, const moire_image *const *images,
                                  int count, float *features, float *logits)
{
    if (!c || (count > 0 && !images) || count < 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_classifier_run: a classifier and %d images are required",
                          count);
    if (c->noise_level)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "%s is a noise-level classifier (the dmcmc sampler's), not an image "
                          "classifier: use MODEL-features.safetensors (tools/train/"
                          "train_classifier.py) to measure images", c->path);
    /* Everything that can fail is checked before the threads start. */
    for (int i = 0; i < count; i++) {
        const moire_image *image = images[i];
        if (!image || !image->pixels)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "moire_classifier_run: image %d is NULL", i);
        if (image->width != c->input_size || image->height != c->input_size)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "image %d is %dx%d but the classifier %s takes %dx%d images; "
                              "resize them first", i, image->width, image->height, c->path,
                              c->input_size, c->input_size);
        if (image->channels != 3 && image->channels != 4)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "image %d has %d channel(s); the classifier takes RGB or RGBA "
                              "images", i, image->channels);
    }
    if (count == 0)
        return MOIRE_OK;
    classify_batch batch = {.images = images, .features = features, .logits = logits};
    if (!run_items(c, count, 0, classify_item, &batch))
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "out of memory for the classifier's activations (%zu bytes a thread)",
                          c->scratch_floats * sizeof(float));
    return MOIRE_OK;
}

moire_status moire_classifier_fid(const moire_classifier *c, const float *features, int count,
                                  double *out_fid)
{
    if (!c || !features || !out_fid)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_classifier_fid: classifier, features and out_fid are required");
    if (!c->fid_mu)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "%s is a noise-level classifier and has no FID statistics; use "
                          "MODEL-features.safetensors", c->path);
    const size_t D = (size_t)c->feature_dim;
    double *mean = malloc_array(D, sizeof(double));
    double *covariance = malloc_array(D * D, sizeof(double));
    moire_status status = mean && covariance
                              ? fid_statistics(features, count, c->feature_dim, mean, covariance)
                              : error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                                           "out of memory for the FID statistics");
    if (status == MOIRE_OK)
        status = fid_frechet_distance(mean, covariance, c->fid_mu, c->fid_sigma, c->feature_dim,
                                      out_fid);
    free(mean);
    free(covariance);
    return status;
}

typedef struct level_batch {
    const float *states;  /* [count, C, S, S] */
    double *sigma;        /* [count]          */
} level_batch;

/* σ̂ = rms · exp(E[u]) with the softmax posterior over the bin centres; the logits go after
 * the network's own scratch. */
static void level_item(const moire_classifier *c, int i, float *scratch, void *context)
{
    const level_batch *b = context;
    const int K = c->class_count;
    const size_t state_floats = (size_t)c->in_channels * (size_t)c->input_size *
                                (size_t)c->input_size;
    float *logits = scratch + c->scratch_floats;
    const double rms = load_level_input(c, b->states + (size_t)i * state_floats, scratch);
    forward(c, scratch, NULL, logits);
    double top = logits[0];
    for (int k = 1; k < K; k++)
        top = fmax(top, (double)logits[k]);
    double total = 0.0, mean_u = 0.0;
    for (int k = 0; k < K; k++) {
        const double p = exp((double)logits[k] - top);
        total += p;
        mean_u += p * c->levels[k];
    }
    b->sigma[i] = rms * exp(mean_u / total);
}

moire_status moire_classifier_estimate_sigma(const moire_classifier *c, const float *states,
                                             int count, double *out_sigma)
{
    if (!c || count < 0 || (count > 0 && (!states || !out_sigma)))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_classifier_estimate_sigma: a classifier, %d states and the "
                          "output are required", count);
    if (!c->noise_level)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "%s is an image classifier, not a noise-level one: use "
                          "MODEL-levels.safetensors (tools/train/train_level_classifier.py)",
                          c->path);
    level_batch batch = {.states = states, .sigma = out_sigma};
    if (!run_items(c, count, (size_t)c->class_count, level_item, &batch))
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "out of memory for the noise-level classifier's activations");
    return MOIRE_OK;
}
