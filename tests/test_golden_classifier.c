/* test_golden_classifier.c — the image classifier (engine/classifier.c) against the PyTorch
 * reference files written by tools/golden/make_golden_classifier.py
 * (tests/golden/classifier_tiny*.safetensors).
 *
 *  - features and logits of six RGBA test images: relative error ≤ 1e-4 (fp32 both sides,
 *    different summation order); a batch gives the same bits as the images one at a time;
 *  - the RGB path: a 3-channel image = the RGBA one with alpha 255 (PyTorch reference, and
 *    bit-identical to the C result for that RGBA image);
 *  - moire_classifier_fid against classifier_ref.frechet_distance: on the reference features
 *    (identical inputs: 1e-9) and on the engine's own features (1e-4);
 *  - F16 and BF16 copies of the file load and agree within their rounding;
 *  - find_class (case, surrounding spaces, no partial matches) and the accessors;
 *  - bad inputs (image size, channels, too few images for FID) and hostile files written
 *    with the engine's st_writer: missing, misshapen, extra and non-finite tensors, wrong
 *    dtype, broken metadata, a truncated file — each a clean error naming the problem;
 *  - the noise-level classifier (tests/golden/level_tiny*.safetensors): σ̂ of six VE states
 *    against classifier_ref.estimate_sigma (relative error ≤ 1e-4, scale-equivariant), the
 *    image-classifier calls refused and vice versa, and its own hostile metadata.
 */
#include "internal.h"
#include "safetensors.h"
#include "test_util.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE 1e-4
#define IMAGES 6
#define SIDE 16
#define D 24
#define K 5

static const char *const class_names[K] = {"red apple", "green tree", "blue car", "black cat",
                                           "yellow sun"};

static float *ref_tensor(const st_file *ref, const char *name, int64_t want_numel)
{
    int64_t numel = 0;
    float *data = test_ref_tensor(ref, name, &numel);
    if (!data || numel != want_numel) {
        fprintf(stderr, "reference tensor %s is missing or has %lld values (want %lld)\n", name,
                (long long)numel, (long long)want_numel);
        exit(1);
    }
    return data;
}

static double golden_number(const st_file *ref, const char *key)
{
    JsonParser *parser = json_parser_new();
    const char *json = st_metadata_get(ref, "moire.golden");
    double value = NAN;
    if (json && json_parser_load_from_data(parser, json, -1, NULL)) {
        JsonObject *golden = json_node_get_object(json_parser_get_root(parser));
        if (json_object_has_member(golden, key))
            value = g_ascii_strtod(json_object_get_string_member(golden, key), NULL);
    }
    g_object_unref(parser);
    return value;
}

static moire_classifier *load(const char *path)
{
    moire_classifier *c = NULL;
    const moire_status status = moire_classifier_load(path, &c);
    CHECK(status == MOIRE_OK, "loading %s: %s", path, moire_last_error());
    return c;
}

/* The test images from the reference file: U8 [IMAGES, SIDE, SIDE, 4]. */
static moire_image **reference_images(const st_file *ref)
{
    const st_tensor *t = st_find(ref, "images");
    if (!t || t->dtype != ST_U8 || t->numel != IMAGES * SIDE * SIDE * 4) {
        fprintf(stderr, "reference tensor images (U8 [6, 16, 16, 4]) is missing\n");
        exit(1);
    }
    moire_image **images = calloc(IMAGES, sizeof *images);
    for (int i = 0; i < IMAGES; i++) {
        images[i] = moire_image_new(SIDE, SIDE, 4);
        memcpy(images[i]->pixels, (const uint8_t *)t->data + (size_t)i * SIDE * SIDE * 4,
               SIDE * SIDE * 4);
    }
    return images;
}

static void test_accessors(const moire_classifier *c)
{
    CHECK(moire_classifier_input_size(c) == SIDE, "input size %d",
          moire_classifier_input_size(c));
    CHECK(moire_classifier_in_channels(c) == 4, "in channels %d", moire_classifier_in_channels(c));
    CHECK(moire_classifier_feature_dim(c) == D, "feature dim %d", moire_classifier_feature_dim(c));
    CHECK(moire_classifier_num_classes(c) == K, "classes %d", moire_classifier_num_classes(c));
    for (int i = 0; i < K; i++) {
        const char *name = moire_classifier_class_name(c, i);
        CHECK(name && strcmp(name, class_names[i]) == 0, "class %d is '%s'", i,
              name ? name : "(null)");
        CHECK(moire_classifier_find_class(c, class_names[i]) == i, "find_class('%s')",
              class_names[i]);
    }
    CHECK(moire_classifier_class_name(c, -1) == NULL && moire_classifier_class_name(c, K) == NULL,
          "class names out of range are NULL");
    CHECK(moire_classifier_find_class(c, "RED Apple") == 0, "find_class ignores case");
    CHECK(moire_classifier_find_class(c, "  Blue car \n") == 2,
          "find_class ignores surrounding spaces");
    CHECK(moire_classifier_find_class(c, "red") == -1, "no partial matches");
    CHECK(moire_classifier_find_class(c, "red  apple") == -1, "inner spaces count");
    CHECK(moire_classifier_find_class(c, "") == -1 && moire_classifier_find_class(c, "   ") == -1,
          "empty prompts match nothing");
    CHECK(moire_classifier_find_class(c, NULL) == -1, "NULL matches nothing");
}

static void test_forward(const moire_classifier *c, const st_file *ref, moire_image **images)
{
    float *want_features = ref_tensor(ref, "features", IMAGES * D);
    float *want_logits = ref_tensor(ref, "logits", IMAGES * K);
    float features[IMAGES * D], logits[IMAGES * K];
    const moire_image *const *batch = (const moire_image *const *)images;
    moire_status status = moire_classifier_run(c, batch, IMAGES, features, logits);
    CHECK(status == MOIRE_OK, "run: %s", moire_last_error());
    test_check_tensor("features [6, 24]", features, want_features, IMAGES * D, TOLERANCE);
    test_check_tensor("logits [6, 5]", logits, want_logits, IMAGES * K, TOLERANCE);

    /* Each image alone, and with only one of the outputs asked for: the same bits. */
    bool same = true;
    for (int i = 0; i < IMAGES; i++) {
        float one_features[D], one_logits[K];
        status = moire_classifier_run(c, batch + i, 1, one_features, NULL);
        status = status == MOIRE_OK ? moire_classifier_run(c, batch + i, 1, NULL, one_logits)
                                    : status;
        CHECK(status == MOIRE_OK, "image %d alone: %s", i, moire_last_error());
        same = same && memcmp(one_features, features + i * D, sizeof one_features) == 0 &&
               memcmp(one_logits, logits + i * K, sizeof one_logits) == 0;
    }
    CHECK(same, "images one at a time must give the batch's results bit for bit");
    printf("%s batch = images one at a time, bit for bit\n", same ? "OK    " : "NOT OK");

    /* The FID on identical inputs (the reference features) and on the engine's features. */
    const double want_fid = golden_number(ref, "fid_classifier");
    double fid = NAN;
    status = moire_classifier_fid(c, want_features, IMAGES, &fid);
    CHECK(status == MOIRE_OK, "fid: %s", moire_last_error());
    double rel = fabs(fid - want_fid) / fabs(want_fid);
    CHECK(rel <= 1e-9, "FID of the reference features %.12f, want %.12f", fid, want_fid);
    printf("%s FID of the reference features %.9f (want %.9f, rel %.1e)\n",
           rel <= 1e-9 ? "OK    " : "NOT OK", fid, want_fid, rel);
    status = moire_classifier_fid(c, features, IMAGES, &fid);
    rel = fabs(fid - want_fid) / fabs(want_fid);
    CHECK(status == MOIRE_OK && rel <= TOLERANCE, "FID of the engine's features %.9f, want %.9f",
          fid, want_fid);
    printf("%s FID of the engine's features %.9f (rel %.1e)\n",
           rel <= TOLERANCE ? "OK    " : "NOT OK", fid, rel);
    status = moire_classifier_fid(c, features, 1, &fid);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT && strstr(moire_last_error(), "at least 2"),
          "FID of one image: %s", moire_last_error());

    /* RGB: image 0 without alpha = image 0 with alpha 255. */
    float *rgb_features = ref_tensor(ref, "rgb.features", D);
    float *rgb_logits = ref_tensor(ref, "rgb.logits", K);
    moire_image *rgb = moire_image_new(SIDE, SIDE, 3), *opaque = moire_image_new(SIDE, SIDE, 4);
    for (int p = 0; p < SIDE * SIDE; p++) {
        memcpy(rgb->pixels + p * 3, images[0]->pixels + p * 4, 3);
        memcpy(opaque->pixels + p * 4, images[0]->pixels + p * 4, 3);
        opaque->pixels[p * 4 + 3] = 255;
    }
    float got_features[D], got_logits[K], opaque_features[D], opaque_logits[K];
    status = moire_classifier_run(c, (const moire_image *const *)&rgb, 1, got_features, got_logits);
    CHECK(status == MOIRE_OK, "RGB run: %s", moire_last_error());
    test_check_tensor("RGB image: features", got_features, rgb_features, D, TOLERANCE);
    test_check_tensor("RGB image: logits", got_logits, rgb_logits, K, TOLERANCE);
    moire_classifier_run(c, (const moire_image *const *)&opaque, 1, opaque_features, opaque_logits);
    CHECK(memcmp(got_features, opaque_features, sizeof got_features) == 0 &&
          memcmp(got_logits, opaque_logits, sizeof got_logits) == 0,
          "an RGB image must give exactly what the RGBA image with alpha 255 gives");

    /* Inputs the classifier refuses, with the reason. */
    moire_image *small = moire_image_new(8, 8, 4), *gray = moire_image_new(SIDE, SIDE, 1);
    status = moire_classifier_run(c, (const moire_image *const *)&small, 1, got_features, NULL);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT && strstr(moire_last_error(), "8x8") &&
              strstr(moire_last_error(), "resize"),
          "8x8 image: %s", moire_last_error());
    status = moire_classifier_run(c, (const moire_image *const *)&gray, 1, got_features, NULL);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT && strstr(moire_last_error(), "1 channel"),
          "gray image: %s", moire_last_error());
    moire_image_free(small), moire_image_free(gray), moire_image_free(rgb);
    moire_image_free(opaque);
    free(want_features), free(want_logits), free(rgb_features), free(rgb_logits);
}

/* ---- variants of the classifier file, written with the engine's safetensors writer ------ */

typedef struct variant {
    const char *drop;          /* leave this tensor out                                    */
    const char *resize;        /* give this one `rows` rows (zero-filled when growing)     */
    int rows;
    const char *poison;        /* put a NaN into this one                                  */
    const char *duplicate_as;  /* also write conv3.weight under this name                  */
    const char *as_int;        /* store this one as I32                                    */
    st_dtype dtype;            /* storage of every float tensor                            */
    const char *metadata;      /* moire.classifier text; NULL = the original, "" = none    */
} variant;

static bool write_variant(const st_file *src, const char *path, const variant *v)
{
    st_writer *writer = st_writer_new();
    const int count = st_tensor_count(src);
    void **buffers = calloc((size_t)count + 1, sizeof *buffers);
    bool ok = true;
    for (int i = 0; i < count && ok; i++) {
        const st_tensor *t = st_tensor_at(src, i);
        if (v->drop && strcmp(t->name, v->drop) == 0)
            continue;
        int64_t shape[ST_MAX_DIMS], numel = t->numel;
        memcpy(shape, t->shape, sizeof shape);
        if (v->resize && strcmp(t->name, v->resize) == 0) {
            shape[0] = v->rows;
            numel = t->numel / t->shape[0] * v->rows;
        }
        float *data = calloc((size_t)(numel > t->numel ? numel : t->numel), sizeof(float));
        buffers[i] = data;
        st_convert_to_f32(data, t->data, t->dtype, t->numel);
        if (v->poison && strcmp(t->name, v->poison) == 0)
            data[3] = NAN;
        if (v->as_int && strcmp(t->name, v->as_int) == 0) {
            int32_t *ints = calloc((size_t)numel, sizeof(int32_t));
            free(data);
            buffers[i] = ints;
            ok = st_writer_add_raw(writer, t->name, ST_I32, t->ndim, shape, ints) == MOIRE_OK;
            continue;
        }
        const st_dtype stored = strncmp(t->name, "fid.", 4) == 0 ? ST_F32 : v->dtype;
        ok = st_writer_add_f32(writer, t->name, stored, t->ndim, shape, data) == MOIRE_OK;
        if (ok && v->duplicate_as && strcmp(t->name, "conv3.weight") == 0)
            ok = st_writer_add_f32(writer, v->duplicate_as, ST_F32, t->ndim, shape, data) ==
                 MOIRE_OK;
    }
    const char *metadata = v->metadata ? v->metadata : st_metadata_get(src, "moire.classifier");
    if (metadata[0])
        st_writer_set_metadata(writer, "moire.classifier", metadata);
    ok = ok && st_writer_save(writer, path) == MOIRE_OK;
    CHECK(ok, "writing %s: %s", path, moire_last_error());
    st_writer_free(writer);
    for (int i = 0; i < count; i++)
        free(buffers[i]);
    free(buffers);
    return ok;
}

/* The classifier's metadata with `from` replaced by `to` (static buffer). */
static const char *edited_metadata(const st_file *src, const char *from, const char *to)
{
    static char buffer[4096];
    const char *meta = st_metadata_get(src, "moire.classifier");
    const char *at = strstr(meta, from);
    if (!at) {
        fprintf(stderr, "metadata lacks '%s': %s\n", from, meta);
        exit(1);
    }
    snprintf(buffer, sizeof buffer, "%.*s%s%s", (int)(at - meta), meta, to, at + strlen(from));
    return buffer;
}

static void expect_load_error(const st_file *src, const char *file, const variant *v,
                              moire_status want, const char *needle, const char *needle2)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), file);
    if (!write_variant(src, path, v))
        return;
    moire_classifier *c = NULL;
    const moire_status status = moire_classifier_load(path, &c);
    const char *message = moire_last_error();
    const bool ok = status == want && !c && strstr(message, needle) &&
                    (!needle2 || strstr(message, needle2)) && strstr(message, file);
    CHECK(ok, "%s: status %s, message: %s", file, moire_status_to_string(status), message);
    printf("%s %-28s %s\n", ok ? "OK    " : "NOT OK", file, message);
    moire_classifier_free(c);
}

static void test_hostile_files(const char *path, const moire_classifier *good,
                               moire_image **images)
{
    st_file *src = NULL;
    if (st_open(path, &src) != MOIRE_OK) {
        CHECK(false, "%s: %s", path, moire_last_error());
        return;
    }
    const moire_status FORMAT = MOIRE_ERROR_FORMAT;
    expect_load_error(src, "fc1_rows.safetensors", &(variant){.resize = "fc1.weight", .rows = 12},
                      FORMAT, "fc1.weight has shape [12, 64]", "[24, 64]");
    expect_load_error(src, "fc2_rows.safetensors", &(variant){.resize = "fc2.weight", .rows = 6},
                      FORMAT, "fc2.weight", "5 classes");
    expect_load_error(src, "conv2_rows.safetensors",
                      &(variant){.resize = "conv2.weight", .rows = 11}, FORMAT, "conv2.weight",
                      "[12, 8, 3, 3]");
    expect_load_error(src, "bias.safetensors", &(variant){.resize = "conv3.bias", .rows = 15},
                      FORMAT, "conv3.bias", "widths[2] = 16");
    expect_load_error(src, "no_conv2.safetensors", &(variant){.drop = "conv2.weight"}, FORMAT,
                      "conv1 … convN", NULL);
    expect_load_error(src, "no_fc1_bias.safetensors", &(variant){.drop = "fc1.bias"}, FORMAT,
                      "fc1.bias [24] is missing", NULL);
    expect_load_error(src, "conv4.safetensors", &(variant){.duplicate_as = "conv4.weight"},
                      FORMAT, "4 convolution stages", "3 widths");
    expect_load_error(src, "no_sigma.safetensors", &(variant){.drop = "fid.sigma"}, FORMAT,
                      "fid.sigma [24, 24] is missing", NULL);
    expect_load_error(src, "mu_23.safetensors", &(variant){.resize = "fid.mu", .rows = 23},
                      FORMAT, "fid.mu has shape [23]", NULL);
    expect_load_error(src, "nan.safetensors", &(variant){.poison = "conv1.weight"}, FORMAT,
                      "conv1.weight holds a non-finite value", NULL);
    expect_load_error(src, "nan_sigma.safetensors", &(variant){.poison = "fid.sigma"}, FORMAT,
                      "fid.sigma holds a non-finite value", NULL);
    expect_load_error(src, "int.safetensors", &(variant){.as_int = "fc2.bias"},
                      MOIRE_ERROR_UNSUPPORTED, "fc2.bias is I32", NULL);
    expect_load_error(src, "no_meta.safetensors", &(variant){.metadata = ""}, FORMAT,
                      "no \"moire.classifier\" metadata", NULL);
    expect_load_error(src, "bad_json.safetensors", &(variant){.metadata = "{\"input_size\": "},
                      FORMAT, "not valid JSON", NULL);
    expect_load_error(src, "size_20.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"input_size\": 16",
                                                             "\"input_size\": 20")},
                      FORMAT, "input_size 20 is not divisible by 2^3", NULL);
    expect_load_error(src, "size_32.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"input_size\": 16",
                                                             "\"input_size\": 32")},
                      FORMAT, "fc1.weight has shape [24, 64]", "[24, 256]");
    expect_load_error(src, "channels.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"in_channels\": 4",
                                                             "\"in_channels\": 3")},
                      FORMAT, "conv1.weight has shape [8, 4, 3, 3]", "in_channels");
    expect_load_error(src, "class_type.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"red apple\"", "7")},
                      FORMAT, "classes[0] is not a non-empty string", NULL);
    expect_load_error(src, "no_widths.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"widths\"", "\"w\"")},
                      FORMAT, "\"widths\" is missing", NULL);

    /* A truncated copy: the safetensors reader refuses it. */
    char truncated[1024];
    snprintf(truncated, sizeof truncated, "%s/truncated.safetensors", test_tmp_dir());
    FILE *in = fopen(path, "rb"), *out = fopen(truncated, "wb");
    char bytes[65536];
    const size_t n = in ? fread(bytes, 1, sizeof bytes, in) : 0;
    if (out)
        fwrite(bytes, 1, n > 1000 ? n - 1000 : n / 2, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    moire_classifier *c = NULL;
    moire_status status = moire_classifier_load(truncated, &c);
    CHECK(status != MOIRE_OK && !c && strstr(moire_last_error(), "truncated"),
          "truncated file: %s", moire_last_error());
    printf("%s %-28s %s\n", status != MOIRE_OK ? "OK    " : "NOT OK", "truncated.safetensors",
           moire_last_error());
    status = moire_classifier_load("/nonexistent/classifier.safetensors", &c);
    CHECK(status == MOIRE_ERROR_IO && !c, "missing file: %s", moire_last_error());

    /* F16 and BF16 copies: load, and agree with the F32 file within their rounding. */
    const st_dtype dtypes[2] = {ST_F16, ST_BF16};
    const double tolerance[2] = {5e-3, 3e-2};
    float want[IMAGES * D], got[IMAGES * D];
    moire_classifier_run(good, (const moire_image *const *)images, IMAGES, want, NULL);
    for (int i = 0; i < 2; i++) {
        char copy[1024], label[64];
        snprintf(copy, sizeof copy, "%s/%s.safetensors", test_tmp_dir(), st_dtype_name(dtypes[i]));
        if (!write_variant(src, copy, &(variant){.dtype = dtypes[i]}))
            continue;
        moire_classifier *half = load(copy);
        if (!half)
            continue;
        status = moire_classifier_run(half, (const moire_image *const *)images, IMAGES, got, NULL);
        CHECK(status == MOIRE_OK, "%s run: %s", copy, moire_last_error());
        snprintf(label, sizeof label, "%s weights vs F32: features", st_dtype_name(dtypes[i]));
        test_check_tensor(label, got, want, IMAGES * D, tolerance[i]);
        moire_classifier_free(half);
    }
    st_close(src);
}

/* ---- the noise-level classifier ---------------------------------------------------------- */

#define LEVEL_STATES 6
#define LEVEL_BINS 10

static void test_level_classifier(const moire_classifier *image_classifier)
{
    const char *path = test_data_path("golden/level_tiny.safetensors");
    char level_path[4096];
    snprintf(level_path, sizeof level_path, "%s", path);
    st_file *ref = NULL, *src = NULL;
    if (st_open(test_data_path("golden/level_tiny.ref.safetensors"), &ref) != MOIRE_OK ||
        st_open(level_path, &src) != MOIRE_OK) {
        CHECK(false, "level_tiny: %s", moire_last_error());
        st_close(ref);
        return;
    }
    moire_classifier *c = load(level_path);
    if (!c) {
        st_close(ref), st_close(src);
        return;
    }
    CHECK(moire_classifier_is_noise_level(c) && !moire_classifier_is_noise_level(image_classifier),
          "is_noise_level");
    CHECK(moire_classifier_num_classes(c) == LEVEL_BINS, "bins: %d",
          moire_classifier_num_classes(c));
    CHECK(moire_classifier_class_name(c, 0) == NULL && moire_classifier_find_class(c, "red") < 0,
          "a level classifier has no class names");

    /* σ̂ against the reference, then the same states scaled: σ̂ scales with them. */
    const int64_t state_floats = 4 * SIDE * SIDE;
    float *states = ref_tensor(ref, "states", LEVEL_STATES * state_floats);
    double got[LEVEL_STATES], want[LEVEL_STATES];
    moire_status status = moire_classifier_estimate_sigma(c, states, LEVEL_STATES, got);
    CHECK(status == MOIRE_OK, "estimate_sigma: %s", moire_last_error());
    JsonParser *parser = json_parser_new();
    const char *json = st_metadata_get(ref, "moire.golden");
    bool parsed = json && json_parser_load_from_data(parser, json, -1, NULL);
    JsonArray *sigma = parsed ? json_object_get_array_member(
                                    json_node_get_object(json_parser_get_root(parser)), "sigma")
                              : NULL;
    CHECK(sigma && json_array_get_length(sigma) == LEVEL_STATES, "reference sigma list");
    double worst = 0.0;
    for (int i = 0; sigma && i < LEVEL_STATES; i++) {
        want[i] = g_ascii_strtod(json_array_get_string_element(sigma, (guint)i), NULL);
        worst = fmax(worst, fabs(got[i] - want[i]) / want[i]);
    }
    g_object_unref(parser);
    CHECK(worst <= TOLERANCE, "σ̂ vs PyTorch: worst relative error %.3g", worst);
    printf("%s level classifier σ̂ vs PyTorch   worst relative error %.3g\n",
           worst <= TOLERANCE ? "OK    " : "NOT OK", worst);
    for (int64_t j = 0; j < state_floats; j++)
        states[j] *= 8.0f; /* a power of two: the scaled input is bit-identical */
    double scaled;
    status = moire_classifier_estimate_sigma(c, states, 1, &scaled);
    CHECK(status == MOIRE_OK && fabs(scaled / (8.0 * got[0]) - 1.0) < 1e-12,
          "σ̂ of 8·y = 8·σ̂(y): %.9g vs %.9g", scaled, 8.0 * got[0]);
    free(states);

    /* Each kind refuses the other kind's calls, naming the file to use. */
    moire_image *images[1] = {NULL};
    float feature[D];
    status = moire_classifier_run(c, (const moire_image *const *)images, 0, feature, NULL);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "noise-level classifier"),
          "run on a level classifier: %s", moire_last_error());
    double fid;
    status = moire_classifier_fid(c, feature, 1, &fid);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT && strstr(moire_last_error(), "FID"),
          "fid on a level classifier: %s", moire_last_error());
    status = moire_classifier_estimate_sigma(image_classifier, feature, 1, &fid);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "-levels.safetensors"),
          "estimate on an image classifier: %s", moire_last_error());

    /* Hostile level files. */
    const moire_status FORMAT = MOIRE_ERROR_FORMAT;
    expect_load_error(src, "level_fc2.safetensors", &(variant){.resize = "fc2.weight", .rows = 9},
                      FORMAT, "fc2.weight", "10 level bins");
    expect_load_error(src, "level_task.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"noise-level\"",
                                                             "\"noise\"")},
                      FORMAT, "\"task\" must be", NULL);
    expect_load_error(src, "level_nan.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"levels\": [",
                                                             "\"levels\": [\"x\", ")},
                      FORMAT, "levels[0] is not a number", NULL);
    expect_load_error(src, "level_far.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"levels\": [",
                                                             "\"levels\": [90, ")},
                      FORMAT, "levels[0] is not a number", NULL);
    expect_load_error(src, "level_none.safetensors",
                      &(variant){.metadata = edited_metadata(src, "\"levels\"", "\"bins\"")},
                      FORMAT, "\"levels\" is missing", NULL);
    moire_classifier_free(c);
    st_close(ref);
    st_close(src);
}

int main(void)
{
    const char *path = test_data_path("golden/classifier_tiny.safetensors");
    char classifier_path[4096];
    snprintf(classifier_path, sizeof classifier_path, "%s", path);
    st_file *ref = NULL;
    if (st_open(test_data_path("golden/classifier_tiny.ref.safetensors"), &ref) != MOIRE_OK) {
        fprintf(stderr, "%s\n", moire_last_error());
        return 1;
    }
    moire_classifier *c = load(classifier_path);
    if (!c)
        return test_finish("golden_classifier");
    moire_image **images = reference_images(ref);
    test_accessors(c);
    test_forward(c, ref, images);
    test_hostile_files(classifier_path, c, images);
    test_level_classifier(c);
    moire_images_free(images, IMAGES);
    moire_classifier_free(c);
    st_close(ref);
    return test_finish("golden_classifier");
}
